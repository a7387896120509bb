//! Hot reload (docs/configuration.md, "Hot reload"; docs/protocol.md,
//! "Recovery with `since`" for epochs, "`connection.channels`" and "Close
//! codes") against a real router over loopback.

use crate::support;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{alert, mkfifo, start, with_incidents, Router, BASE};
use switchyard::app::Options;
use switchyard::plugin_host::PluginHost;
use switchyard::{reload, runtime};

// ---------------------------------------------------------------- helpers

/// BASE without the `jobs` channel, its endpoint entry and its type.
fn without_jobs() -> String {
    let config = BASE.replace(
        r#"channels = ["alerts", "jobs"]"#,
        r#"channels = ["alerts"]"#,
    );
    let config = config.replace("[[channels]]\nname = \"jobs\"\n", "");
    let cut = config
        .find("[[event_types]]\nname = \"job.progress\"")
        .expect("BASE declares job.progress");
    let config = config[..cut].to_owned();
    assert!(!config.contains("jobs"), "{config}");
    config
}

/// Writes the config the way careful editors do: a temporary file in the
/// same folder, then a rename over `config.toml` (the watcher never sees a
/// half-written file).
fn write_atomically(router: &Router, config: &str) {
    let tmp = router.dir.path().join(".config.toml.tmp");
    let mut file = std::fs::File::create(&tmp).unwrap();
    file.write_all(config.as_bytes()).unwrap();
    file.sync_all().unwrap();
    drop(file);
    std::fs::rename(&tmp, router.config_path()).unwrap();
}

/// Writes `config`, lets the file watcher try it, then asks for a reload;
/// asserts it was applied as exactly the next `config_version`. (Waiting
/// for the watcher first keeps its reload, 250 ms after the write, from
/// landing between the two and making the version unpredictable.)
async fn apply(router: &Router, config: &str) -> Value {
    router
        .settle_after(|| write_atomically(router, config))
        .await;
    let before = router.config_version().await;
    let body = reload_applied(router).await;
    assert_eq!(body["config_version"], before + 1, "{body}");
    body
}

/// `POST /api/admin/reload`; asserts it was applied and returns the reply.
async fn reload_applied(router: &Router) -> Value {
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "reload refused: {body}");
    assert_eq!(body["applied"], true, "{body}");
    body
}

/// Polls `/health` until `config_version` differs from `from` (≤ 10 s).
async fn wait_for_version_change(router: &Router, from: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = router.config_version().await;
        if now != from {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the file change was not picked up within 10 s (config_version still {from})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn epoch_of(channels: &Value, name: &str) -> String {
    channels[name]["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch for {name} in {channels}"))
        .to_owned()
}

fn job(id: &str) -> Value {
    json!({"type": "job.progress", "payload": {"job_id": id}})
}

/// Publishes one event; asserts 202 and returns its (channel, sequence).
async fn publish_one(router: &Router, event: &Value) -> (String, u64) {
    let (status, body) = router.publish(event).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let stamp = &body["sequences"][0];
    (
        stamp["channel"].as_str().unwrap().to_owned(),
        stamp["sequence"].as_u64().unwrap(),
    )
}

/// The problems of a 422 `invalid_config` reply.
fn refused_problems(status: u16, body: &Value) -> Vec<Value> {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let errors = body["error"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is a list: {body}"))
        .clone();
    for e in &errors {
        for field in ["key", "value", "problem"] {
            assert!(e.get(field).is_some(), "problem without {field}: {e}");
        }
        assert!(e["problem"].as_str().is_some_and(|p| !p.is_empty()), "{e}");
    }
    errors
}

/// Captures every log line of this test binary (installed once).
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init()
            .expect("install the log capture");
        logs
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_channel_endpoint_channel_and_type_live() {
    let router = start(BASE).await;
    let mut all = router.ws("/ws/events").await;
    let hello = all.established().await;
    assert!(hello["payload"]["channels"].get("incidents").is_none());
    // Subscribed before the type exists: held with a warning.
    let mut picky = router.ws("/ws/events?events=incident.*").await;
    picky.established().await;
    let subscribed = picky.recv().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["events"], json!(["incident.*"]));

    let config = with_incidents();
    let body = apply(&router, &config).await;
    let object = body.as_object().unwrap();
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "config_version",
            "applied",
            "restart_required",
            "warnings",
            "impact"
        ]),
        "{body}"
    );
    assert_eq!(body["applied"], true, "{body}");
    assert_eq!(body["restart_required"], json!([]), "{body}");
    assert!(
        body["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().all(Value::is_string)),
        "{body}"
    );

    // Both connections now receive `incidents`: each is told first,
    // whatever its patterns (docs/protocol.md, "`connection.channels`").
    let mut epochs = Vec::new();
    for client in [&mut all, &mut picky] {
        let msg = client.recv().await;
        assert_eq!(msg["type"], "connection.channels", "{msg}");
        let channels = msg["payload"]["channels"].as_object().unwrap();
        assert_eq!(
            channels.keys().collect::<Vec<_>>(),
            ["incidents"],
            "only the gained channel: {msg}"
        );
        assert_eq!(msg["payload"]["channels"]["incidents"]["sequence"], 0);
        let epoch = epoch_of(&msg["payload"]["channels"], "incidents");
        assert!(
            (1..=32).contains(&epoch.len())
                && epoch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "epoch {epoch:?}"
        );
        epochs.push(epoch);
    }
    assert_eq!(epochs[0], epochs[1]);

    let (channel, sequence) = publish_one(
        &router,
        &json!({"type": "incident.opened", "payload": {"id": "i1"}}),
    )
    .await;
    assert_eq!((channel.as_str(), sequence), ("incidents", 1));
    for client in [&mut all, &mut picky] {
        let ev = client.recv().await;
        assert_eq!(ev["type"], "incident.opened", "{ev}");
        assert_eq!(ev["channel"], "incidents");
        assert_eq!(ev["sequence"], 1);
        assert_eq!(ev["payload"]["id"], "i1");
    }

    // A new connection sees the channel in connection.established.
    let mut late = router.ws("/ws/events").await;
    let hello = late.established().await;
    assert_eq!(
        hello["payload"]["channels"]["incidents"],
        json!({"epoch": epochs[0], "sequence": 1})
    );
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert!(
        caps["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("incidents")),
        "{caps}"
    );
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"],
        "incidents"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_with_every_problem_and_old_keeps_serving() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    assert_eq!(
        publish_one(&router, &alert("a1")).await,
        ("alerts".into(), 1)
    );
    assert_eq!(client.recv().await["sequence"], 1);

    // Two problems: a bad enum value and an unknown key.
    let bad = BASE
        .replace(
            "name = \"alerts\"\nhistory = 100\n",
            "name = \"alerts\"\nhistory = 100\nslow_consumer = \"sometimes\"\n",
        )
        .replace(
            "[[channels]]\nname = \"jobs\"\n",
            "[[channels]]\nname = \"jobs\"\nhistroy = 5\n",
        );
    assert_ne!(bad, BASE);
    write_atomically(&router, &bad);
    let (status, body) = router.reload().await;
    let errors = refused_problems(status, &body);
    assert_eq!(errors.len(), 2, "exactly the two problems: {body}");
    let enum_problem = errors
        .iter()
        .find(|e| e["key"] == "channels[0].slow_consumer")
        .unwrap_or_else(|| panic!("the bad enum value is named: {body}"));
    assert_eq!(enum_problem["value"], "sometimes", "{body}");
    let problem = enum_problem["problem"].as_str().unwrap();
    assert!(
        problem.contains("drop_oldest") && problem.contains("disconnect"),
        "names the allowed values: {problem}"
    );
    let unknown = errors
        .iter()
        .find(|e| e["key"] == "channels[1].histroy")
        .unwrap_or_else(|| panic!("the unknown key is named: {body}"));
    assert_eq!(unknown["value"], 5, "{body}");
    assert!(
        unknown["problem"].as_str().unwrap().contains("unknown"),
        "{unknown}"
    );

    // The old configuration keeps serving.
    assert_eq!(router.config_version().await, 1);
    assert_eq!(
        publish_one(&router, &alert("a2")).await,
        ("alerts".into(), 2)
    );
    let ev = client.recv().await;
    assert_eq!(ev["type"], "alert.created", "{ev}");
    assert_eq!(ev["sequence"], 2);
    assert_eq!(ev["payload"]["id"], "a2");
    let (status, admin) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{admin}");
    assert_eq!(admin["config_version"], 1, "{admin}");
    assert_eq!(admin["last_reload"]["result"], "refused", "{admin}");
    let shown: BTreeSet<&str> = admin["last_reload"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert!(
        shown.contains("channels[0].slow_consumer") && shown.contains("channels[1].histroy"),
        "{admin}"
    );
    // Fixing the file applies it (as the next version: `apply` checks).
    apply(&router, BASE).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_applied_reloads_are_counted_in_metrics() {
    let router = start(BASE).await;
    write_atomically(&router, "[server\n");
    let (status, body) = router.reload().await;
    refused_problems(status, &body);
    apply(&router, BASE).await;
    let metrics = router.metrics().await;
    for result in ["refused", "applied"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switchyard_config_reloads_total{")
                    && l.contains(&format!("result=\"{result}\""))
                    && !l.trim_end().ends_with(" 0")),
            "{result} reload counted:\n{metrics}"
        );
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_syntax_error_is_refused_with_line_and_column() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;

    let bad = format!("{BASE}\n[[channels]]\nname = = \"broken\"\n");
    let line = bad.lines().count();
    assert!(bad.lines().last().unwrap().starts_with("name = ="));
    write_atomically(&router, &bad);
    let (status, body) = router.reload().await;
    let errors = refused_problems(status, &body);
    assert_eq!(errors.len(), 1, "{body}");
    let e = &errors[0];
    assert_eq!(e["key"], Value::Null, "{body}");
    assert_eq!(e["line"], line, "{body}");
    assert_eq!(e["column"], 8, "the second '=' is at column 8: {body}");

    assert_eq!(router.config_version().await, 1);
    assert_eq!(publish_one(&router, &job("j1")).await, ("jobs".into(), 1));
    let ev = client.recv().await;
    assert_eq!(ev["type"], "job.progress", "{ev}");
    assert_eq!(ev["sequence"], 1);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watcher_picks_up_a_plain_write() {
    let router = start(BASE).await;
    assert_eq!(router.config_version().await, 1);
    router.write_config(&with_incidents());
    let version = wait_for_version_change(&router, 1).await;
    assert!(version >= 2, "{version}");
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"], "incidents",
        "{caps}"
    );
    let (_, admin) = router.get("/api/admin/config").await;
    assert_eq!(admin["last_reload"]["result"], "applied", "{admin}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watcher_picks_up_a_rename_over_the_file() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    assert_eq!(router.config_version().await, 1);
    let tmp = router.dir.path().join("config.toml.new");
    std::fs::write(&tmp, with_incidents()).unwrap();
    std::fs::rename(&tmp, router.config_path()).unwrap();
    let version = wait_for_version_change(&router, 1).await;
    assert!(version >= 2, "{version}");
    let msg = client.recv().await;
    assert_eq!(msg["type"], "connection.channels", "{msg}");
    assert_eq!(msg["payload"]["channels"]["incidents"]["sequence"], 0);
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"], "incidents",
        "{caps}"
    );
    router.shutdown().await;
}

/// Writes `config` into a new Kubernetes-style data folder `..<stamp>` of
/// `dir`, then points `..data` at it with an atomic rename of a fresh
/// symlink over it, as the kubelet updates a mounted ConfigMap.
fn configmap_update(dir: &std::path::Path, stamp: &str, config: &str) {
    let data = dir.join(format!("..{stamp}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("config.toml"), config).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up() {
    // config.toml -> ..data/config.toml, ..data -> ..2026_12_06_first.
    let dir = tempfile::tempdir().unwrap();
    configmap_update(dir.path(), "2026_12_06_first", BASE);
    std::os::unix::fs::symlink("..data/config.toml", dir.path().join("config.toml")).unwrap();
    let router = support::try_start_in(dir, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("router did not start: {:?}", e.problems()));
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    let before = router.config_version().await;

    // Only ..data changes: config.toml itself is never written.
    configmap_update(router.dir.path(), "2026_12_06_second", &with_incidents());
    wait_for_version_change(&router, before).await;
    let msg = client.recv().await;
    assert_eq!(msg["type"], "connection.channels", "{msg}");
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"], "incidents",
        "{caps}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_during_continuous_publishing_lose_nothing() {
    // A queue large enough that a reader on loopback never lags, and no
    // rate limit that a fast publisher (a release build) could meet.
    let base = BASE.replace(
        "[auth]",
        "send_queue = 100000\n\
         publish_rate_limit = { requests_per_s = 1000000, burst = 1000000 }\n\n[auth]",
    );
    let other = format!(
        "{}\n[[channels]]\nname = \"spare\"\ndescription = \"unrelated\"\n",
        base.replace(
            "description = \"New alert\"",
            "description = \"New alert (v2)\""
        )
    );
    assert_ne!(base, other);
    let router = start(&base).await;
    let mut client = router.ws("/ws/events?events=alert.created").await;
    client.established().await;
    assert_eq!(client.recv().await["type"], "subscribed");

    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let msg = client.recv().await;
            let last = msg["payload"]["id"] == "last";
            got.push(msg);
            if last {
                return got;
            }
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let url = router.url("/api/events");
    let publisher = {
        let (stop, accepted) = (stop.clone(), accepted.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut sequences = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let response = http
                    .post(&url)
                    .json(&alert(&format!("e{i}")))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 202, "publish {i} during reloads: {body}");
                accepted.fetch_add(1, Ordering::Relaxed);
                sequences.push(body["sequences"][0]["sequence"].as_u64().unwrap());
            }
            sequences
        })
    };

    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = accepted.load(Ordering::Relaxed);
    let mut versions = Vec::new();
    for n in 0..20 {
        let config = if n % 2 == 0 { &other } else { &base };
        // Not `apply`: no waiting for the watcher, so the reloads come as
        // fast as the admin route answers (versions may skip the watcher's).
        write_atomically(&router, config);
        let body = reload_applied(&router).await;
        versions.push(body["config_version"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let during = accepted.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let sequences = publisher.await.unwrap();
    let (_, last_seq) = publish_one(&router, &alert("last")).await;
    let received = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader got the last event")
        .unwrap();

    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions rise: {versions:?}"
    );
    let n = accepted.load(Ordering::Relaxed) + 1;
    assert!(
        during >= 20,
        "the publisher kept publishing while the reloads ran: {during} events"
    );
    assert_eq!(last_seq, n, "202 count and sequences agree");
    let expected: Vec<u64> = (1..n).collect();
    assert_eq!(sequences, expected, "each 202 got the next sequence");
    for msg in &received {
        assert_eq!(msg["type"], "alert.created", "only events arrive: {msg}");
        assert_eq!(msg["channel"], "alerts", "{msg}");
    }
    let got: Vec<u64> = received
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    let all: Vec<u64> = (1..=n).collect();
    assert_eq!(
        got.len() as u64,
        n,
        "every event exactly once (received {}, accepted {n})",
        got.len()
    );
    assert_eq!(got, all, "sequences 1..N, no gap, no duplicate");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_subscriptions_survive_a_reload() {
    let router = start(BASE).await;
    let mut alerts = router.ws("/ws/events").await;
    let alerts_id = alerts.established().await["payload"]["connection_id"].clone();
    alerts
        .send(&json!({"action": "subscribe", "events": ["alert.*"], "id": 1}))
        .await;
    assert_eq!(alerts.recv().await["type"], "subscribed");
    let mut jobs = router.ws("/ws/events?events=job_progress").await;
    let jobs_id = jobs.established().await["payload"]["connection_id"].clone();
    assert_eq!(jobs.recv().await["events"], json!(["job.progress"]));
    let mut everything = router.ws("/ws/events").await;
    let everything_id = everything.established().await["payload"]["connection_id"].clone();

    // A reload that changes something unrelated to these connections.
    let changed = BASE.replace(
        "description = \"Job progress\"",
        "description = \"Progress\"",
    );
    apply(&router, &changed).await;

    publish_one(&router, &job("j1")).await;
    publish_one(&router, &alert("a1")).await;
    let ev = alerts.recv().await;
    assert_eq!(
        (ev["type"].as_str(), ev["sequence"].as_u64()),
        (Some("alert.created"), Some(1)),
        "{ev}"
    );
    let ev = jobs.recv().await;
    assert_eq!(
        (ev["type"].as_str(), ev["sequence"].as_u64()),
        (Some("job.progress"), Some(1)),
        "{ev}"
    );
    let first = everything.recv().await;
    let second = everything.recv().await;
    assert_eq!(first["type"], "job.progress", "{first}");
    assert_eq!(second["type"], "alert.created", "{second}");
    alerts.expect_silence(Duration::from_millis(200)).await;
    jobs.expect_silence(Duration::from_millis(50)).await;

    let (status, list) = router.get("/api/websocket/connections").await;
    assert_eq!(status, 200, "{list}");
    let conns = list["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 3, "{list}");
    let find = |id: &Value| {
        conns
            .iter()
            .find(|c| c["id"] == *id)
            .unwrap_or_else(|| panic!("connection {id} listed: {list}"))
    };
    assert_eq!(find(&alerts_id)["patterns"], json!(["alert.*"]));
    assert_eq!(find(&jobs_id)["patterns"], json!(["job.progress"]));
    assert_eq!(find(&everything_id)["patterns"], Value::Null);
    for c in conns {
        assert_eq!(c["endpoint"], "/ws/events", "{c}");
    }
    // Still the same connections: they keep answering.
    alerts.send(&json!({"action": "ping"})).await;
    assert_eq!(alerts.recv().await["type"], "pong");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_endpoint_closes_its_connections_with_1001() {
    let two = format!("{BASE}\n[[endpoints]]\npath = \"/ws/jobs\"\nchannels = [\"jobs\"]\n");
    let router = start(&two).await;
    let mut gone = router.ws("/ws/jobs").await;
    gone.established().await;
    let mut gone_too = router.ws("/ws/jobs?events=job.*").await;
    gone_too.established().await;
    let mut stays = router.ws("/ws/events").await;
    stays.established().await;

    apply(&router, BASE).await;
    for c in [&mut gone, &mut gone_too] {
        let (code, reason) = c.close_frame().await;
        assert_eq!(
            (code, reason.as_str()),
            (1001, "endpoint removed by a configuration reload")
        );
    }

    publish_one(&router, &job("j1")).await;
    let ev = stays.recv().await;
    assert_eq!(ev["type"], "job.progress", "{ev}");
    assert_eq!(ev["sequence"], 1);
    let (_, list) = router.get("/api/websocket/connections").await;
    let endpoints: Vec<&Value> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["endpoint"])
        .collect();
    assert_eq!(endpoints, [&json!("/ws/events")], "{list}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_channel_keeps_epoch_sequence_and_history() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    let hello = client.established().await;
    let epoch = epoch_of(&hello["payload"]["channels"], "alerts");
    for i in 1..=3 {
        assert_eq!(
            publish_one(&router, &alert(&format!("a{i}"))).await,
            ("alerts".into(), i)
        );
        assert_eq!(client.recv().await["sequence"], i);
    }

    // Change the channel's own settings and its type's description.
    let changed = BASE.replace("history = 100", "history = 50").replace(
        "description = \"New alert\"",
        "description = \"Alert raised\"",
    );
    apply(&router, &changed).await;

    assert_eq!(
        publish_one(&router, &alert("a4")).await,
        ("alerts".into(), 4)
    );
    let ev = client.recv().await;
    assert_eq!(ev["type"], "alert.created", "no connection.channels: {ev}");
    assert_eq!(ev["sequence"], 4);

    let mut late = router
        .ws(&format!("/ws/events?events=alert.*&since=alerts:{epoch}:1"))
        .await;
    let hello = late.established().await;
    assert_eq!(
        hello["payload"]["channels"]["alerts"],
        json!({"epoch": epoch, "sequence": 4}),
        "same epoch, sequence continues"
    );
    let mut replayed = Vec::new();
    let reply = loop {
        let msg = late.recv().await;
        if msg["type"] == "subscribed" {
            break msg;
        }
        replayed.push(msg["sequence"].as_u64().unwrap());
    };
    assert_eq!(
        reply["recovery"]["alerts"],
        json!({"recovered": true, "replayed": 3}),
        "history survives: {reply}"
    );
    assert_eq!(replayed, [2, 3, 4]);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_then_readded_channel_gets_a_new_epoch() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    let hello = client.established().await;
    let old_epoch = epoch_of(&hello["payload"]["channels"], "jobs");
    for i in 1..=2 {
        assert_eq!(
            publish_one(&router, &job(&format!("j{i}"))).await,
            ("jobs".into(), i)
        );
        assert_eq!(client.recv().await["sequence"], i);
    }

    apply(&router, &without_jobs()).await;
    let (status, refused) = router.publish(&job("j3")).await;
    assert_eq!(status, 404, "job.progress is gone: {refused}");
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert!(
        !caps["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("jobs")),
        "{caps}"
    );

    apply(&router, BASE).await;
    let msg = client.recv().await;
    assert_eq!(msg["type"], "connection.channels", "{msg}");
    let channels = &msg["payload"]["channels"];
    assert_eq!(
        channels.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["jobs"],
        "{msg}"
    );
    assert_eq!(channels["jobs"]["sequence"], 0, "{msg}");
    let new_epoch = epoch_of(channels, "jobs");
    assert_ne!(new_epoch, old_epoch, "a re-added channel gets a new epoch");

    assert_eq!(publish_one(&router, &job("j4")).await, ("jobs".into(), 1));
    let ev = client.recv().await;
    assert_eq!(ev["type"], "job.progress", "{ev}");
    assert_eq!(ev["sequence"], 1, "the sequence restarts at 1");

    // Its history was emptied: the old epoch cannot be recovered.
    let mut late = router
        .ws(&format!("/ws/events?events=job.*&since=jobs:{old_epoch}:1"))
        .await;
    let hello = late.established().await;
    assert_eq!(
        hello["payload"]["channels"]["jobs"],
        json!({"epoch": new_epoch, "sequence": 1})
    );
    let reply = late.recv().await;
    assert_eq!(reply["type"], "subscribed", "nothing replayed: {reply}");
    assert_eq!(
        reply["recovery"]["jobs"],
        json!({"recovered": false, "reason": "epoch_changed"})
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_type_stamps_new_events_on_the_new_channel() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    let hello = client.established().await;
    let jobs_epoch = epoch_of(&hello["payload"]["channels"], "jobs");
    assert_eq!(
        publish_one(&router, &alert("a1")).await,
        ("alerts".into(), 1)
    );
    assert_eq!(publish_one(&router, &job("j1")).await, ("jobs".into(), 1));
    assert_eq!(client.recv().await["channel"], "alerts");
    assert_eq!(client.recv().await["channel"], "jobs");

    let moved = BASE.replace(
        "name = \"job.progress\"\nchannel = \"jobs\"",
        "name = \"job.progress\"\nchannel = \"alerts\"",
    );
    assert_ne!(moved, BASE);
    apply(&router, &moved).await;

    assert_eq!(publish_one(&router, &job("j2")).await, ("alerts".into(), 2));
    let ev = client.recv().await;
    assert_eq!(ev["type"], "job.progress", "{ev}");
    assert_eq!(ev["channel"], "alerts");
    assert_eq!(ev["sequence"], 2);
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(caps["event_registry"]["job.progress"]["channel"], "alerts");

    // Its past event stays in the old channel's history.
    let mut late = router
        .ws(&format!("/ws/events?events=*&since=jobs:{jobs_epoch}:0"))
        .await;
    let hello = late.established().await;
    assert_eq!(
        hello["payload"]["channels"]["jobs"],
        json!({"epoch": jobs_epoch, "sequence": 1})
    );
    let replayed = late.recv().await;
    assert_eq!(replayed["type"], "job.progress", "{replayed}");
    assert_eq!(replayed["channel"], "jobs");
    assert_eq!(replayed["sequence"], 1);
    assert_eq!(replayed["payload"]["job_id"], "j1");
    let reply = late.recv().await;
    assert_eq!(
        reply["recovery"]["jobs"],
        json!({"recovered": true, "replayed": 1}),
        "{reply}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_edit_is_ignored_when_fixed_by_the_listen_flag() {
    let logs = captured_logs();
    let router = start(BASE).await;
    let addr = router.addr;
    let edited = with_incidents().replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    assert!(edited.contains("127.0.0.1:1"));
    let body = apply(&router, &edited).await;
    assert_eq!(
        body["restart_required"],
        json!([]),
        "--listen fixes server.listen: nothing to restart for: {body}"
    );
    // The rest of the edit applied, and the router still serves where it was.
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"],
        "incidents"
    );
    assert_eq!(router.addr, addr);
    assert_eq!(router.config_version().await, body["config_version"]);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.lines()
            .any(|l| l.contains("server.listen") && l.contains("--listen")),
        "a log line says the server.listen edit is ignored because of --listen; logs:\n{text}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_edit_without_the_flag_requires_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, BASE).unwrap();
    let options = Options {
        config_path: path.clone(),
        listen: None,
    };
    let plugins = PluginHost::default();
    let prepared = tokio::task::block_in_place(|| reload::prepare(&options, &plugins))
        .unwrap_or_else(|e| panic!("{:?}", e.problems()));
    let app = reload::start(options, plugins, prepared).await.unwrap();
    let running = runtime::bind(app).await.unwrap();
    let url = |p: &str| format!("http://{}{p}", running.addr);

    let tmp = dir.path().join("config.toml.tmp");
    std::fs::write(
        &tmp,
        with_incidents().replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let response = reqwest::Client::new()
        .post(url("/api/admin/reload"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    // The watcher may have applied the rename first: at least version 2.
    assert!(body["config_version"].as_u64() >= Some(2), "{body}");
    assert_eq!(body["applied"], true, "{body}");
    assert_eq!(body["restart_required"], json!(["server.listen"]), "{body}");
    // The rest still applies, on the socket already bound.
    let caps: Value = reqwest::get(url("/api/websocket/capabilities"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        caps["event_registry"]["incident.opened"]["channel"],
        "incidents"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_run_one_at_a_time() {
    let router = start(BASE).await;
    let url = router.url("/api/admin/reload");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(url)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["applied"], true, "{body}");
        versions.push(body["config_version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, [2, 3, 4, 5, 6], "distinct, consecutive");
    assert_eq!(router.config_version().await, 6);
    router.shutdown().await;
}

/// BASE with the watcher's debounce set to `ms`.
fn with_debounce(config: &str, ms: u64) -> String {
    format!("[reload]\ndebounce_ms = {ms}\n{config}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reads_only_once_the_file_is_quiet() {
    let router = start(&with_debounce(BASE, 1500)).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    let full = with_debounce(&with_incidents(), 1500);
    let cut = full
        .find("[[endpoints]]")
        .expect("the config has endpoints");
    // Written in steps as `>` then a slow copy would: emptied, cut at a line
    // boundary before the endpoints, completed; each step well inside the
    // debounce.
    for text in ["", &full[..cut], &full] {
        let mut file = std::fs::File::create(router.config_path()).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        drop(file);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(wait_for_version_change(&router, 1).await, 2);
    let msg = client.recv().await;
    assert_eq!(msg["type"], "connection.channels", "{msg}");
    assert!(msg["payload"]["channels"]["incidents"].is_object(), "{msg}");
    let (_, admin) = router.get("/api/admin/config").await;
    assert_eq!(admin["last_reload"]["result"], "applied", "{admin}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_change_closing_every_connection_waits_for_an_operator() {
    let logs = captured_logs();
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    let moved = BASE.replace("path = \"/ws/events\"", "path = \"/ws/moved\"");
    write_atomically(&router, &moved);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, admin) = router.get("/api/admin/config").await;
        if admin["last_reload"]["result"] == "refused" {
            let errors = admin["last_reload"]["errors"].to_string();
            assert!(
                errors.contains("would close all 1 open connection"),
                "{admin}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {admin}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("WARN") && logged.contains("would close all 1 open connection"),
        "{logged}"
    );
    assert_eq!(router.config_version().await, 1);
    client.send(&json!({"action": "ping", "id": "still"})).await;
    assert_eq!(client.recv_type("pong").await["id"], "still");

    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "the admin route applies it: {body}");
    assert_eq!(
        client.close_frame().await,
        (
            1001,
            "endpoint removed by a configuration reload".to_owned()
        )
    );
    router.shutdown().await;
}

/// Replaces the router's config file with what `make` puts at the path.
fn replace_config(router: &Router, make: impl FnOnce(&std::path::Path)) {
    let path = router.config_path();
    std::fs::remove_file(&path).unwrap();
    make(&path);
}

fn symlink_to(target: &'static str) -> impl FnOnce(&std::path::Path) {
    move |path| std::os::unix::fs::symlink(target, path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_refuse_empty_special_and_endless_files_at_once() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    let fifo_library = router.dir.path().join("libfifo.so");
    mkfifo(&fifo_library);
    let with_fifo_plugin = format!(
        "{BASE}\n[[plugins]]\nname = \"fifo\"\nlibrary = {:?}\n",
        fifo_library.display().to_string()
    );
    type Make = Box<dyn FnOnce(&std::path::Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "an empty file",
            Box::new(|p| std::fs::write(p, "").unwrap()),
            "is empty",
        ),
        (
            "/dev/null",
            Box::new(symlink_to("/dev/null")),
            "not a regular file",
        ),
        (
            "/dev/zero",
            Box::new(symlink_to("/dev/zero")),
            "not a regular file",
        ),
        (
            "a FIFO",
            Box::new(mkfifo),
            "named pipe (FIFO), not a regular file",
        ),
        (
            "a FIFO as a plugin library",
            Box::new(move |p| std::fs::write(p, with_fifo_plugin).unwrap()),
            "named pipe (FIFO), not a regular file",
        ),
    ];
    for (what, make, why) in cases {
        replace_config(&router, make);
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), router.reload())
            .await
            .unwrap_or_else(|_| panic!("the reload of {what} hung"));
        let problems = refused_problems(status, &body);
        assert!(
            problems
                .iter()
                .any(|p| p["problem"].as_str().unwrap().contains(why)),
            "{what}: {body}"
        );
        assert_eq!(router.config_version().await, 1, "{what}");
    }
    // Nothing is stuck: the watcher's own reloads of those files ended too.
    replace_config(&router, |p| std::fs::write(p, with_incidents()).unwrap());
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), router.reload())
        .await
        .expect("a reload after the refused ones");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        client.recv_type("connection.channels").await["type"],
        "connection.channels"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_over_16_mib_is_refused() {
    let router = start(BASE).await;
    let mut big = BASE.to_owned();
    big.push_str(&format!("# {}\n", "x".repeat(16 * 1024 * 1024)));
    write_atomically(&router, &big);
    let (status, body) = router.reload().await;
    let problems = refused_problems(status, &body);
    assert!(
        problems[0]["problem"]
            .as_str()
            .unwrap()
            .contains("larger than 16 MiB"),
        "{body}"
    );
    router.shutdown().await;
}
