//! The Redis cluster engine, end to end: real `redis-server` processes on
//! free ports (killed and restarted at will), real router binaries as
//! nodes, real WebSocket and HTTP clients (docs/cluster.md).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{self, ChildGuard, Client, Remote, WAIT};

/// A `redis-server` of this test's own, keeping nothing on disk.
struct Redis {
    port: u16,
    process: Option<ChildGuard>,
    /// Where it keeps its append-only file, when it keeps one.
    persisted_in: Option<PathBuf>,
}

impl Redis {
    fn start() -> Redis {
        let mut redis = Redis {
            port: support::free_port(),
            process: None,
            persisted_in: None,
        };
        redis.restart();
        redis
    }

    /// A Redis that writes every command to an append-only file in `dir`
    /// (fsync always), so that a restart keeps everything: only its
    /// `run_id` changes.
    fn persisted_in(dir: &std::path::Path) -> Redis {
        let mut redis = Redis {
            port: support::free_port(),
            process: None,
            persisted_in: Some(dir.to_owned()),
        };
        redis.restart();
        redis
    }

    /// Starts it (again) on its port: empty, or from its append-only file.
    fn restart(&mut self) {
        let persistence = match &self.persisted_in {
            Some(dir) => vec![
                "--appendonly".to_owned(),
                "yes".to_owned(),
                "--appendfsync".to_owned(),
                "always".to_owned(),
                "--dir".to_owned(),
                dir.display().to_string(),
            ],
            None => vec!["--appendonly".to_owned(), "no".to_owned()],
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(&persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/test installs it)");
        self.process = Some(ChildGuard(child));
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL: everything it held is gone.
    fn kill(&mut self) {
        self.process = None;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

/// The test config on `redis`, with quick heartbeats, and `extra` added.
fn cluster_config(redis: &Redis, extra: &str) -> String {
    with_cluster(support::BASE, redis, extra)
}

/// `base` on `redis`, with quick heartbeats, and `extra` added.
fn with_cluster(base: &str, redis: &Redis, extra: &str) -> String {
    format!(
        "{base}{extra}\n[cluster]\nengine = \"redis\"\nredis_url = \"{}\"\n\
         heartbeat_interval_ms = 100\nunhealthy_after_ms = 1000\n",
        redis.url()
    )
}

/// A router binary serving as one node.
struct Node {
    remote: Remote,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Node {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl Node {
    /// Starts a node on `config` and waits until it reports `ok`.
    async fn start(config: &str) -> Node {
        let node = Node::spawn(config);
        node.wait_for_status("ok").await;
        node
    }

    fn spawn(config: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let port = support::free_port();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        Node {
            remote: Remote {
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
            },
            _process: support::serve(&path, port, log),
            _dir: dir,
        }
    }

    /// What the node has logged so far (its stderr).
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits (2 s at most) until a line of its log is `wanted`; `what`
    /// names it when none comes.
    async fn wait_for_log(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let log = self.log();
            if log.lines().any(&wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing in the log about {what}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/health` says `status`; returns the body.
    async fn wait_for_status(&self, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // A node that never answers (it exited at start-up) fails here
            // too, rather than hanging the run.
            let body = match reqwest::get(self.url("/health")).await {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(e) => json!(format!("no answer: {e}")),
            };
            if body["status"] == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/health never said {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A receive-all client on `/ws/events` of `node`, past its greeting.
async fn listener(node: &Remote, query: &str) -> (Client, Value) {
    let mut client = node.ws(&format!("/ws/events{query}")).await;
    let hello = client.established().await;
    (client, hello)
}

/// The sequences of the next `n` `alert.created` events `client` gets, in
/// the order it got them (other messages skipped).
async fn alert_sequences(client: &mut Client, n: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let msg = client.recv().await;
        if msg["type"] == "alert.created" {
            got.push(msg["sequence"].as_u64().unwrap());
        }
    }
    got
}

fn since(epoch: &Value, sequence: u64) -> String {
    format!("?since=alerts:{}:{sequence}", epoch.as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_once_in_order_with_publishers_on_two() {
    let redis = Redis::start();
    let config = cluster_config(&redis, "");
    let nodes = [
        Node::start(&config).await,
        Node::start(&config).await,
        Node::start(&config).await,
    ];
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(listener(node, "").await.0);
    }
    const EACH: usize = 150;
    let publish_from = |node: &Remote, name: &'static str| {
        let remote = Remote { addr: node.addr };
        async move {
            let mut sequences = Vec::new();
            for i in 0..EACH {
                let (code, body) = remote.publish(&support::alert(&format!("{name}{i}"))).await;
                assert_eq!(code, 202, "{body}");
                sequences.push(body["sequences"][0]["sequence"].as_u64().unwrap());
            }
            sequences
        }
    };
    let (from_a, from_b) = tokio::join!(publish_from(&nodes[0], "a"), publish_from(&nodes[1], "b"));
    let stamped: BTreeSet<u64> = from_a.iter().chain(&from_b).copied().collect();
    let all: Vec<u64> = (1..=2 * EACH as u64).collect();
    assert_eq!(
        stamped.into_iter().collect::<Vec<_>>(),
        all,
        "one sequence per channel, cluster-wide"
    );
    for client in &mut clients {
        assert_eq!(
            alert_sequences(client, 2 * EACH).await,
            all,
            "once, in order"
        );
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_after_its_node_is_killed() {
    let redis = Redis::start();
    let config = cluster_config(&redis, "");
    let doomed = Node::start(&config).await;
    let survivor = Node::start(&config).await;
    let (mut client, hello) = listener(&doomed, "").await;
    let epoch = hello["payload"]["channels"]["alerts"]["epoch"].clone();
    for i in 0..3 {
        survivor
            .publish_ok(&support::alert(&format!("seen{i}")))
            .await;
    }
    assert_eq!(alert_sequences(&mut client, 3).await, [1, 2, 3]);
    drop(doomed); // SIGKILL
    for i in 0..4 {
        survivor
            .publish_ok(&support::alert(&format!("missed{i}")))
            .await;
    }
    let third = Node::start(&config).await;
    let (mut client, _) = listener(&third, &since(&epoch, 3)).await;
    let replayed = alert_sequences(&mut client, 4).await;
    assert_eq!(
        replayed,
        [4, 5, 6, 7],
        "recovered from history on a fresh node"
    );
    let reply = client.recv_type("subscribed").await;
    assert_eq!(reply["recovery"]["alerts"]["recovered"], true, "{reply}");
    survivor.publish_ok(&support::alert("live")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_is_loud_and_its_return_announces_the_new_epoch() {
    let mut redis = Redis::start();
    let config = cluster_config(&redis, "");
    let node = Node::start(&config).await;
    let (mut client, hello) = listener(&node, "").await;
    let old_epoch = hello["payload"]["channels"]["alerts"]["epoch"].clone();
    node.publish_ok(&support::alert("before")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);

    redis.kill();
    let health = node.wait_for_status("unhealthy").await;
    let reason = health["cluster"]["reason"].as_str().unwrap();
    assert!(reason.contains("Redis"), "{health}");
    let (code, body) = node.publish(&support::alert("refused")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "cluster_unavailable", "{body}");
    let (code, listed) = node.get("/api/websocket/connections").await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed["connections"].as_array().unwrap().len(), 1);
    assert!(
        listed["cluster_unreachable"]
            .as_str()
            .is_some_and(|r| r.contains("Redis")),
        "an answer without the other nodes says so: {listed}"
    );

    // Long enough for the shared connection to give up reconnecting by
    // itself (two retries), as in any outage of more than a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let back = chrono::Utc::now();
    node.wait_for_status("ok").await;
    // Back in the cluster at its first attempt once Redis answers: the
    // shared connection Redis dropped is not taken for a new failure (it
    // was, and cost a round of backoff). An attempt refused just before
    // Redis listened may log a moment after `back`: 50 ms of grace.
    let grace = chrono::Duration::milliseconds(50);
    for line in node
        .log()
        .lines()
        .filter(|l| l.contains("out of the cluster"))
    {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        let at = chrono::DateTime::parse_from_rfc3339(stamp)
            .unwrap_or_else(|e| panic!("no time stamp ({e}): {line}"));
        assert!(
            at < back + grace,
            "out of the cluster once Redis was back: {line}"
        );
    }
    let announced = client.recv_type("connection.channels").await;
    let new_epoch = &announced["payload"]["channels"]["alerts"]["epoch"];
    assert_ne!(*new_epoch, old_epoch, "Redis lost the channel: a new epoch");
    assert_eq!(announced["payload"]["channels"]["alerts"]["sequence"], 0);
    node.publish_ok(&support::alert("after")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    let (_, hello) = listener(&node, &since(&old_epoch, 1)).await;
    assert_eq!(hello["payload"]["channels"]["alerts"]["epoch"], *new_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_starts_a_new_epoch_that_every_node_announces() {
    let redis = Redis::start();
    let config = cluster_config(&redis, "");
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (mut on_b, hello) = listener(&b, "").await;
    let old_epoch = hello["payload"]["channels"]["alerts"]["epoch"].clone();
    a.publish_ok(&support::alert("one")).await;
    a.publish_ok(&support::alert("two")).await;
    assert_eq!(alert_sequences(&mut on_b, 2).await, [1, 2]);

    redis.command(&["FLUSHALL"]).await;
    let announced = on_b.recv_type("connection.channels").await;
    assert_ne!(
        announced["payload"]["channels"]["alerts"]["epoch"],
        old_epoch
    );
    a.publish_ok(&support::alert("three")).await;
    assert_eq!(alert_sequences(&mut on_b, 1).await, [1]);

    let mut late = a.ws("/ws/events").await;
    late.established().await;
    let reply = late
        .request(json!({"action": "subscribe", "events": ["alert.*"],
            "since": {"alerts": {"epoch": old_epoch, "sequence": 1}}}))
        .await;
    assert_eq!(
        reply["recovery"]["alerts"],
        json!({"recovered": false, "reason": "epoch_changed"}),
        "never a replay of events sent under another position: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_holds_across_nodes() {
    let redis = Redis::start();
    let config = cluster_config(&redis, "");
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (mut client, _) = listener(&a, "").await;
    let mut event = support::alert("once");
    event["idempotency_key"] = json!("order-17");
    let (_, first) = a.publish(&event).await;
    let (code, again) = b.publish(&event).await;
    assert_eq!(code, 202, "{again}");
    assert_eq!(first["sequences"], again["sequences"], "the first sequence");
    b.publish_ok(&support::alert("next")).await;
    assert_eq!(
        alert_sequences(&mut client, 2).await,
        [1, 2],
        "delivered once"
    );
}

/// Stamps an event in Redis as a node would, without publishing it: what
/// a node sees when pub/sub loses the message.
async fn stamp_unpublished(redis: &Redis, sequence: u64, history: u64) {
    let meta = "switchyard:ch:{alerts}:meta";
    let epoch = match redis.command(&["HGET", meta, "epoch"]).await {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("no epoch: {other:?}"),
    };
    redis.command(&["HINCRBY", meta, "seq", "1"]).await;
    let frame = format!(
        "{{\"type\":\"alert.created\",\"payload\":{{\"id\":\"lost\",\"severity\":\"low\"}},\
         \"timestamp\":\"2026-12-06T00:00:00.000Z\",\"channel\":\"alerts\",\"sequence\":{sequence}}}"
    );
    let id = format!("{sequence}-1");
    let history = history.to_string();
    redis
        .command(&[
            "XADD",
            "switchyard:ch:{alerts}:stream",
            "MAXLEN",
            &history,
            &id,
            "f",
            &frame,
            "t",
            "alert.created",
            "a",
            "0",
            "e",
            "",
            "n",
            "elsewhere",
            "p",
            &epoch,
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pub_sub_lost_are_filled_from_history_even_the_last_one() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    stamp_unpublished(&redis, 2, 100).await;
    node.publish_ok(&support::alert("third")).await;
    assert_eq!(alert_sequences(&mut client, 3).await, [1, 2, 3]);
    stamp_unpublished(&redis, 4, 100).await;
    assert_eq!(
        alert_sequences(&mut client, 1).await,
        [4],
        "the periodic check finds a lost last event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_history_cannot_fill_is_announced_as_lagged() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    // Two events pub/sub lost, the older of them already out of a history
    // of one: it cannot be filled.
    stamp_unpublished(&redis, 2, 1).await;
    stamp_unpublished(&redis, 3, 1).await;
    let lagged = client.recv_type("connection.lagged").await;
    assert_eq!(lagged["payload"]["dropped"], 1, "{lagged}");
    assert_eq!(lagged["payload"]["channels"]["alerts"]["sequence"], 1);
    assert_eq!(alert_sequences(&mut client, 1).await, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_writes_loses_nothing_accepted() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let (code, body) = node.publish(&support::alert("refused")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "cluster_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("OOM"), "the store's own words: {message}");
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).await;
    node.publish_ok(&support::alert("second")).await;
    assert_eq!(
        alert_sequences(&mut client, 2).await,
        [1, 2],
        "no gap, no ghost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_registry_differs_is_degraded() {
    let redis = Redis::start();
    let a = Node::start(&cluster_config(&redis, "")).await;
    let extra = "\n[[event_types]]\nname = \"alert.escalated\"\nchannel = \"alerts\"\n\
                 [event_types.payload]\nid = { type = \"string\" }\n";
    let b = Node::spawn(&cluster_config(&redis, extra));
    let health = b.wait_for_status("degraded").await;
    let differs = &health["cluster"]["registry_differs_from"];
    assert!(differs.as_array().is_some_and(|d| d.len() == 1), "{health}");
    let health = a.wait_for_status("degraded").await;
    assert_eq!(
        health["cluster"]["nodes"].as_array().unwrap().len(),
        2,
        "{health}"
    );
}

#[test]
fn an_unreachable_redis_stops_the_start_with_one_clear_error() {
    let port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let config = format!(
        "{}\n[cluster]\nengine = \"redis\"\nredis_url = \"redis://127.0.0.1:{port}\"\n",
        support::BASE
    );
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not started"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// A JWT for `user`, signed with `secret` (HS256), valid for ten minutes.
fn token(secret: &str, user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The first text message, or `None` when the server closes first.
async fn first_text(client: &mut Client) -> Option<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(WAIT, client.socket.next())
            .await
            .expect("a message or a close")?;
        match message.ok()? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_limit_counts_every_node_and_a_dead_nodes_lease_lapses() {
    let redis = Redis::start();
    std::env::set_var("SY_TEST_CLUSTER_JWT", "cluster-secret");
    let auth = "mode = \"required\"\nmax_connections_per_user = 2\non_user_limit = \"refuse\"\n\
                [auth.jwt]\nsecret_env = \"SY_TEST_CLUSTER_JWT\"";
    let config = with_cluster(&support::config("", auth), &redis, "");
    let (a, b, c) = (
        Node::start(&config).await,
        Node::start(&config).await,
        Node::start(&config).await,
    );
    let alice = format!("?token={}", token("cluster-secret", "alice"));
    let (_on_a, _) = listener(&a, &alice).await;
    let (_on_b, _) = listener(&b, &alice).await;
    let mut third = c.ws(&format!("/ws/events{alice}")).await;
    let (code, reason) = third.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "too many connections for this user"),
        "two on other nodes count"
    );
    let bob = format!("?token={}", token("cluster-secret", "bob"));
    listener(&c, &bob).await;

    drop(a); // SIGKILL: its connection's lease lapses within 3 heartbeats
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = c.ws(&format!("/ws/events{alice}")).await;
        if first_text(&mut again).await.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_disconnects_and_coverage_span_the_nodes() {
    let redis = Redis::start();
    let config = cluster_config(&redis, "");
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let mut on_b = b.ws("/ws/events").await;
    let hello = on_b.established().await;
    let id = hello["payload"]["connection_id"].clone();
    let reply = on_b
        .request(json!({"action": "subscribe", "events": ["alert.*"]}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    a.publish_ok(&support::alert("seen-on-b")).await;
    assert_eq!(alert_sequences(&mut on_b, 1).await, [1]);

    let (_, b_health) = b.get("/health").await;
    let (code, listed) = a.get("/api/websocket/connections").await;
    assert_eq!(code, 200, "{listed}");
    let entry = &listed["connections"][0];
    assert_eq!(entry["id"], id, "{listed}");
    assert_eq!(entry["node"], b_health["cluster"]["node"], "{listed}");

    let (_, coverage) = a.get("/api/websocket/coverage").await;
    let line = &coverage["types"]["alert.created"];
    assert_eq!(
        (&line["produced"], &line["subscribers"], &line["delivered"]),
        (&json!(1), &json!(1), &json!(1)),
        "produced on a, consumed on b: {coverage}"
    );
    assert!(
        !coverage["produced_without_subscribers"]
            .as_array()
            .unwrap()
            .contains(&json!("alert.created")),
        "{coverage}"
    );

    let (code, closed) = a
        .post("/api/admin/disconnect", &json!({"connection_id": id}))
        .await;
    assert_eq!((code, &closed["closed"]), (200, &json!(1)), "{closed}");
    let (code, reason) = on_b.close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "disconnected by operator"));
}

/// The test config on `redis` for node `node_id`, with an audit-log sink
/// writing every `alert.*` event to `log`.
fn with_audit_sink(redis: &Redis, node_id: &str, log: &std::path::Path) -> String {
    let sink = format!(
        "\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\n[plugins.config]\npath = \"{}\"\n\
         fsync = \"always\"\n\n[[routes]]\nsink = \"audit\"\nevents = [\"alert.*\"]\n",
        support::plugin("switchyard_audit_log"),
        log.display()
    );
    cluster_config(redis, &sink).replace(
        "[cluster]\n",
        &format!("[cluster]\nnode_id = \"{node_id}\"\n"),
    )
}

/// The `payload.id`s an audit log holds, in order.
fn audited(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["payload"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Waits until `log` holds `ids`, and checks it holds nothing else.
async fn wait_for_audit(log: &std::path::Path, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while audited(log).len() < ids.len() {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", audited(log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(audited(log), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_reaches_the_sinks_of_the_process_that_accepted_it_once() {
    let redis = Redis::start();
    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let a = Node::start(&with_audit_sink(&redis, "a", &log_a)).await;
    let b = Node::start(&with_audit_sink(&redis, "b", &log_b)).await;
    for id in ["a1", "a2"] {
        a.publish_ok(&support::alert(id)).await;
    }
    b.publish_ok(&support::alert("b1")).await;
    wait_for_audit(&log_a, &["a1", "a2"]).await;
    wait_for_audit(&log_b, &["b1"]).await;

    drop(a); // SIGKILL; the same node id comes back on the same history
    let a = Node::start(&with_audit_sink(&redis, "a", &log_a)).await;
    a.publish_ok(&support::alert("a3")).await;
    b.publish_ok(&support::alert("b2")).await;
    wait_for_audit(&log_a, &["a1", "a2", "a3"]).await;
    wait_for_audit(&log_b, &["b1", "b2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_with_its_data_still_starts_new_epochs() {
    // The failure this guards against: a restart or failover that kept the
    // sequence but maybe not the last events would reuse positions. A new
    // Redis `run_id` means the channel's continuity cannot be verified.
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::persisted_in(dir.path());
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, hello) = listener(&node, "").await;
    let old_epoch = hello["payload"]["channels"]["alerts"]["epoch"].clone();
    node.publish_ok(&support::alert("one")).await;
    node.publish_ok(&support::alert("two")).await;
    assert_eq!(alert_sequences(&mut client, 2).await, [1, 2]);

    redis.kill();
    node.wait_for_status("unhealthy").await;
    redis.restart();
    let seq = redis
        .command(&["HGET", "switchyard:ch:{alerts}:meta", "seq"])
        .await;
    assert_eq!(
        seq,
        redis::Value::BulkString(b"2".to_vec()),
        "the data survived"
    );
    node.wait_for_status("ok").await;
    let announced = client.recv_type("connection.channels").await;
    assert_ne!(
        announced["payload"]["channels"]["alerts"]["epoch"],
        old_epoch
    );
    node.publish_ok(&support::alert("three")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_makes_the_node_unhealthy_until_it_answers() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (code, metrics) = (
        200,
        reqwest::get(node.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let (_, health) = node.get("/health").await;
    let name = health["cluster"]["node"].as_str().unwrap().to_owned();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "switchyard_cluster_connected{{node=\"{name}\"}} 1"
        )),
        "{metrics}"
    );
    // Connected, but nothing comes back: the heartbeat says so.
    redis.command(&["CLIENT", "PAUSE", "2500", "ALL"]).await;
    let health = node.wait_for_status("unhealthy").await;
    assert!(
        health["cluster"]["reason"]
            .as_str()
            .unwrap()
            .contains("heartbeat"),
        "{health}"
    );
    node.wait_for_status("ok").await;
    node.publish_ok(&support::alert("after the pause")).await;
}

/// At shutdown every event a node stamped in Redis is written by its sink
/// or counted and logged as `sink_shutdown`. Only what comes back through
/// the feed is offered to the sinks, and the process used to stop before
/// the last of it came back: the last ticks of an instance emitting every
/// millisecond (testkit is a producer and a sink, so it stops with the
/// sinks) were lost without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_every_event_stamped_is_written_by_the_sink_or_counted() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ticks.log");
    let plugins = format!(
        "\n[[channels]]\nname = \"testkit\"\nhistory = 100000\n\
         \n[[plugins]]\nname = \"ticker\"\nlibrary = \"{}\"\n[plugins.config]\nemit_every_ms = 1\n\
         \n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\n[plugins.config]\npath = \"{}\"\nfsync = \"never\"\n\
         \n[[routes]]\nsink = \"audit\"\nevents = [\"testkit.tick\"]\n",
        support::plugin("switchyard_testkit"),
        support::plugin("switchyard_audit_log"),
        log.display()
    );
    let mut node = Node::start(&cluster_config(&redis, &plugins)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = node._process.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let (status, node_log) = tokio::task::spawn_blocking(move || {
        let status = node._process.0.wait().unwrap();
        (status, node.log())
    })
    .await
    .unwrap();
    assert!(status.success(), "exit {status}: {node_log}");
    let stamped = match redis
        .command(&["XLEN", "switchyard:ch:{testkit}:stream"])
        .await
    {
        redis::Value::Int(n) => n as usize,
        other => panic!("XLEN answered {other:?}"),
    };
    let written = std::fs::read_to_string(&log).unwrap().lines().count();
    let dropped: usize = node_log
        .lines()
        .find(|l| l.contains("routed to sinks were not delivered"))
        .and_then(|l| {
            l.split("shutdown: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(stamped > 100, "only {stamped} ticks stamped");
    assert_eq!(
        written + dropped,
        stamped,
        "{written} written and {dropped} counted, of {stamped} stamped: {node_log}"
    );
}

/// A pub/sub message of an epoch Redis has already left (stamped before a
/// `FLUSHALL` or an eviction, and read by this node only after its
/// position check saw the next epoch) does not take the channel back to
/// that epoch: the node kept following Redis's epoch, and every later
/// event was skipped as stale, without a word, for as long as it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_message_of_an_epoch_redis_left_does_not_take_the_channel_back() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    redis.command(&["FLUSHALL"]).await;
    let announced = client.recv_type("connection.channels").await;
    let current = announced["payload"]["channels"]["alerts"]["epoch"].clone();

    let late = "alerts\nLateEpochFromBefore\n1\nalert.created\n\nelsewhere/xxxxxxxx\n0\n\
        {\"type\":\"alert.created\",\"payload\":{\"id\":\"late\",\"severity\":\"low\"},\
        \"timestamp\":\"2026-12-06T00:00:00.000Z\",\"channel\":\"alerts\",\"sequence\":1}";
    redis.command(&["PUBLISH", "switchyard:events", late]).await;
    node.publish_ok(&support::alert("after")).await;
    loop {
        let msg = client.recv().await;
        assert_ne!(
            msg["payload"]["id"], "late",
            "an event of a dead epoch: {msg}"
        );
        if msg["type"] == "connection.channels" && msg["payload"]["channels"]["alerts"].is_object()
        {
            assert_eq!(
                msg["payload"]["channels"]["alerts"]["epoch"], current,
                "the channel went back to an epoch Redis had left: {msg}"
            );
        }
        if msg["type"] == "alert.created" {
            assert_eq!(msg["payload"]["id"], "after");
            assert_eq!(msg["sequence"], 1);
            break;
        }
    }
}

/// A gap history cannot fill is not only announced to clients: operators
/// are told (docs/cluster.md says to raise the channel's `history` "if it
/// happens"), with the channel and how many events were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_history_cannot_fill_is_logged_for_operators() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    stamp_unpublished(&redis, 2, 1).await;
    stamp_unpublished(&redis, 3, 1).await;
    client.recv_type("connection.lagged").await;
    node.wait_for_log("the lost event", |l| {
        l.contains("lost") && l.contains("alerts") && l.contains("history")
    })
    .await;
}

/// Events a node accepted that pub/sub lost on their way back, and that
/// the channel's history no longer holds when the node fills its gap,
/// never reach that node's sinks: they used to be lost without a word
/// (clients got `connection.lagged`; the sinks, nothing). The node now
/// counts them and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_node_accepted_that_the_cluster_lost_are_its_sinks_counted_loss() {
    let redis = Redis::start();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.log");
    let config = with_audit_sink(&redis, "a", &audit).replace("history = 100", "history = 1");
    let node = Node::start(&config).await;
    node.publish_ok(&support::alert("first")).await;
    wait_for_audit(&audit, &["first"]).await;
    // Redis cuts a subscriber whose pending output passes the limit, which
    // only a message over its 16 KB reply buffer does (heartbeats do not):
    // the batch's first event cuts the node's pub/sub connection, and the
    // three never come back that way. A history of one keeps the last.
    redis
        .command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1 1 0",
        ])
        .await;
    let big = "x".repeat(20_000);
    let batch = json!([
        support::alert(&big),
        support::alert("lost"),
        support::alert("kept")
    ]);
    node.publish_ok(&batch).await;
    redis
        .command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 32mb 8mb 60",
        ])
        .await;
    wait_for_audit(&audit, &["first", "kept"]).await;
    let series = r#"switchyard_dropped_total{node="a",reason="cluster_lost"}"#;
    assert_eq!(node.metric(series).await, 2.0, "{}", node.metrics().await);
    node.wait_for_log("the sinks' loss", |l| {
        l.contains("ERROR") && l.contains("2 of them were accepted by this node")
    })
    .await;
}

/// Redis's sequence of a channel going back under the same epoch and the
/// same server (a backup of its keys restored into the running Redis):
/// its state cannot be trusted, so a new epoch is started and announced.
/// Before, every node kept its later position and skipped each newly
/// stamped event as a repeat, without a word, until Redis's sequence
/// passed it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_that_went_back_in_redis_starts_a_new_epoch() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, hello) = listener(&node, "").await;
    let epoch = hello["payload"]["channels"]["alerts"]["epoch"].clone();
    node.publish_ok(&support::alert("one")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    let keys = [
        "switchyard:ch:{alerts}:meta",
        "switchyard:ch:{alerts}:stream",
    ];
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut backup = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        backup.push((key, dump));
    }
    for id in ["two", "three"] {
        node.publish_ok(&support::alert(id)).await;
    }
    assert_eq!(alert_sequences(&mut client, 2).await, [2, 3]);
    for (key, dump) in &backup {
        let _: () = redis::cmd("RESTORE")
            .arg(*key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    node.publish_ok(&support::alert("after")).await;
    let told = loop {
        let msg = client.recv().await;
        if msg["type"] == "alert.created" || msg["payload"]["channels"]["alerts"].is_object() {
            break msg;
        }
    };
    assert_eq!(told["type"], "connection.channels", "{told}");
    assert_ne!(told["payload"]["channels"]["alerts"]["epoch"], epoch);
    node.publish_ok(&support::alert("next")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
}

/// A burst longer than the channel's history (one publish of 900 events on
/// a channel keeping 100) is all delivered: pub/sub brings every event, and
/// the periodic position check, which can run while the node is still
/// reading them, does not declare lost what is merely not read yet. It did:
/// the clients got `connection.lagged` for events that were on their way,
/// which were then skipped as already past, and the sinks of the node that
/// accepted them never got them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_longer_than_history_is_not_declared_lost_while_on_its_way() {
    let redis = Redis::start();
    let config = format!(
        "{}\n[cluster]\nengine = \"redis\"\nredis_url = \"{}\"\n\
         heartbeat_interval_ms = 50\nunhealthy_after_ms = 1000\n",
        support::BASE,
        redis.url()
    );
    let node = Node::start(&config).await;
    let (mut client, _) = listener(&node, "").await;
    let burst: Vec<Value> = (0..900).map(|i| support::alert(&format!("b{i}"))).collect();
    let (code, body) = node.publish(&Value::Array(burst)).await;
    assert_eq!(code, 202, "{body}");
    let mut last = 0;
    while last < 900 {
        let msg = client.recv().await;
        match msg["type"].as_str().unwrap() {
            "alert.created" => {
                let sequence = msg["sequence"].as_u64().unwrap();
                assert_eq!(sequence, last + 1, "{msg}");
                last = sequence;
            }
            "connection.lagged" => panic!("nothing was lost: {msg}"),
            _ => {}
        }
    }
}

/// A publish answered `503 cluster_unavailable` because Redis answered
/// too late (paused here) is not stamped afterwards, when Redis gets to
/// it: the append script refuses what reaches it past its deadline, so
/// "nothing was stamped" holds and a producer's retry is not a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_while_redis_is_slow_is_not_delivered_later() {
    let redis = Redis::start();
    let node = Node::start(&cluster_config(&redis, "")).await;
    let (mut client, _) = listener(&node, "").await;
    node.publish_ok(&support::alert("first")).await;
    assert_eq!(alert_sequences(&mut client, 1).await, [1]);
    redis.command(&["CLIENT", "PAUSE", "2000", "WRITE"]).await;
    let (code, body) = node.publish(&support::alert("refused")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["accepted"], 0, "{body}");
    node.wait_for_status("ok").await;
    node.publish_ok(&support::alert("second")).await;
    let next = loop {
        let msg = client.recv().await;
        if msg["type"] == "alert.created" {
            break msg;
        }
    };
    assert_eq!(
        next["payload"]["id"], "second",
        "the refused publish was delivered after all: {next}"
    );
    assert_eq!(next["sequence"], 2, "{next}");
}
