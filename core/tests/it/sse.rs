//! Server-Sent Events on the endpoint paths, against a real router over
//! loopback (docs/clients.md, "Server-Sent Events"): the same messages,
//! admission, limits and recovery as a WebSocket, with `Last-Event-ID`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{self, alert, job, read_chunk, read_head, start, Remote, WAIT};

/// A raw event-stream reader: HTTP/1.0, so the body is the stream itself
/// until the router closes it.
struct Sse {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

/// One stream message: its `id:` and its JSON.
#[derive(Debug)]
struct Message {
    id: Option<String>,
    data: Value,
}

impl Sse {
    async fn open(remote: &Remote, path_and_query: &str, headers: &[(&str, &str)]) -> Sse {
        let stream = TcpStream::connect(remote.addr).await.unwrap();
        let mut request = format!(
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            remote.addr
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut reader = BufReader::new(stream);
        let (status, headers) = ask(&mut reader, &request).await;
        Sse {
            status,
            headers,
            reader,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next raw block (up to a blank line); `None` once the stream ended.
    async fn block(&mut self) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
                .await
                .expect("timed out waiting for the stream")
                .unwrap();
            if read == 0 {
                return (!lines.is_empty()).then_some(lines);
            }
            let line = line.trim_end_matches('\n').to_owned();
            if line.is_empty() {
                if lines.is_empty() {
                    continue;
                }
                return Some(lines);
            }
            lines.push(line);
        }
    }

    /// The next message, comments (`: ping`) skipped; `None` at the end.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let block = self.block().await?;
            let id = block
                .iter()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_owned);
            let Some(data) = block.iter().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            return Some(Message {
                id,
                data: serde_json::from_str(data).unwrap(),
            });
        }
    }

    /// Skips messages until one of `type`.
    async fn next_type(&mut self, wanted: &str) -> Message {
        loop {
            let message = self.next().await.expect("the stream ended");
            if message.data["type"] == wanted {
                return message;
            }
        }
    }
}

/// An `Authorization` value with an HS256 token for user `ann`.
fn bearer(secret: &[u8], exp: i64) -> String {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ann", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_of_an_endpoint_is_426_naming_both_ways() {
    let router = start(support::BASE).await;
    let response = reqwest::get(router.url("/ws/events")).await.unwrap();
    assert_eq!(response.status().as_u16(), 426);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("WebSocket") && message.contains("text/event-stream"));
}

/// A stream asked of a path that is no endpoint is refused as an upgrade
/// there would be: 404 `unknown_endpoint` naming the nearest endpoint,
/// counted, and noted in coverage (it used to be the API's plain 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_asked_of_no_endpoint_is_refused_counted_and_noted_like_an_upgrade() {
    let router = start(support::BASE).await;
    let mut refused = Sse::open(&router, "/ws/event", &[]).await;
    assert_eq!(refused.status, 404);
    let mut body = String::new();
    refused.reader.read_to_string(&mut body).await.unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unknown_endpoint", "{body}");
    assert_eq!(body["error"]["did_you_mean"], "/ws/events", "{body}");
    let metrics = router.metrics().await;
    assert!(
        metrics.contains("switchyard_upgrades_refused_total{reason=\"unknown_endpoint\"} 1"),
        "{metrics}"
    );
    let (_, coverage) = router.get("/api/websocket/coverage").await;
    assert_eq!(
        coverage["unknown_endpoints_requested"],
        json!([{"path": "/ws/event", "requests": 1}]),
        "{coverage}"
    );
    // A route of the API asked with the same `Accept` is served as ever.
    let mut health = Sse::open(&router, "/health", &[]).await;
    assert_eq!(health.status, 200);
    let mut body = String::new();
    health.reader.read_to_string(&mut body).await.unwrap();
    assert!(body.contains("\"status\":\"ok\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_what_a_websocket_would_with_cursors_and_pings() {
    let config = support::with_server("heartbeat_interval_s = 1");
    let router = start(&config).await;
    let mut sse = Sse::open(&router, "/ws/events?events=alert.*", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let hello = sse.next().await.unwrap();
    assert_eq!(hello.data["type"], "connection.established");
    let epoch = hello.data["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let jobs_epoch = hello.data["payload"]["channels"]["jobs"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        hello.id.as_deref(),
        Some(format!("alerts:{epoch}:0,jobs:{jobs_epoch}:0").as_str())
    );
    assert_eq!(sse.next().await.unwrap().data["type"], "subscribed");
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a2")).await;
    let first = sse.next().await.unwrap();
    assert_eq!(first.data["payload"]["id"], "a1");
    let second = sse.next().await.unwrap();
    assert_eq!(second.data["payload"]["id"], "a2", "only the patterns held");
    assert_eq!(
        second.id.as_deref(),
        Some(format!("alerts:{epoch}:2,jobs:{jobs_epoch}:0").as_str())
    );
    let block = sse.block().await.unwrap();
    assert_eq!(block, [": ping"], "a comment every heartbeat interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_recovers_every_channel_and_since_wins_over_it() {
    let router = start(support::BASE).await;
    let mut sse = Sse::open(&router, "/ws/events", &[]).await;
    sse.next_type("connection.established").await;
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    let cursor = sse.next().await.unwrap();
    let cursor = sse.next().await.unwrap().id.unwrap_or(cursor.id.unwrap());
    drop(sse);
    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j2")).await;
    router.publish_ok(&alert("a3")).await;

    let mut again = Sse::open(&router, "/ws/events", &[("Last-Event-ID", &cursor)]).await;
    again.next_type("connection.established").await;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let message = again.next().await.unwrap();
        if let Some(id) = message.data["payload"]["id"]
            .as_str()
            .or(message.data["payload"]["job_id"].as_str())
        {
            replayed.push(id.to_owned());
        }
    }
    replayed.sort();
    assert_eq!(replayed, ["a2", "a3", "j2"], "every channel recovered");
    let reply = again.next_type("subscribed").await;
    assert_eq!(
        reply.data["recovery"]["alerts"]["recovered"], true,
        "{:?}",
        reply
    );
    assert_eq!(reply.data["recovery"]["jobs"]["recovered"], true);

    let epoch = cursor.split(':').nth(1).unwrap();
    let since = format!("/ws/events?since=alerts:{epoch}:2");
    let mut chosen = Sse::open(&router, &since, &[("Last-Event-ID", &cursor)]).await;
    chosen.next_type("connection.established").await;
    assert_eq!(chosen.next().await.unwrap().data["payload"]["id"], "a3");
    let reply = chosen.next_type("subscribed").await;
    assert!(reply.data["recovery"].get("jobs").is_none(), "{:?}", reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_gained_by_a_reload_joins_the_cursor_and_moves_with_its_events() {
    let router = start(support::BASE).await;
    let mut sse = Sse::open(&router, "/ws/events", &[]).await;
    let hello = sse.next_type("connection.established").await;
    let before = hello.id.unwrap();
    router
        .settle_after(|| router.write_config(&support::with_incidents()))
        .await;
    let gained = sse.next_type("connection.channels").await;
    let epoch = gained.data["payload"]["channels"]["incidents"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // Channels in the order of their names: alerts, incidents, jobs.
    let at = |sequence: u64| {
        let (alerts, jobs) = before.split_once(',').unwrap();
        format!("{alerts},incidents:{epoch}:{sequence},{jobs}")
    };
    assert_eq!(gained.id.as_deref(), Some(at(0).as_str()));
    router
        .publish_ok(&json!({"type": "incident.opened", "payload": {"id": "i1"}}))
        .await;
    let incident = sse.next_type("incident.opened").await;
    assert_eq!(incident.id.as_deref(), Some(at(1).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_connection_closed_where_a_websocket_would_close() {
    let router = start(support::BASE).await;
    let mut sse = Sse::open(&router, "/ws/events", &[]).await;
    let hello = sse.next().await.unwrap();
    let id = hello.data["payload"]["connection_id"].clone();
    let (code, body) = router
        .post("/api/admin/disconnect", &json!({"connection_id": id}))
        .await;
    assert_eq!((code, &body["closed"]), (200, &json!(1)), "{body}");
    let last = sse.next_type("connection.closed").await;
    assert_eq!(
        last.data["payload"],
        json!({"code": 1008, "reason": "disconnected by operator"})
    );
    assert!(sse.next().await.is_none(), "the stream ends after it");
    let deadline = tokio::time::Instant::now() + WAIT;
    while router.app.router.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the router forgot it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_admitted_refused_and_forgotten_like_websockets() {
    let config = support::config(
        "max_connections = 1",
        "mode = \"required\"\n[auth.jwt]\nsecret_env = \"SY_TEST_SSE_JWT\"",
    );
    std::env::set_var("SY_TEST_SSE_JWT", "sse-secret");
    let router = start(&config).await;
    let mut refused = Sse::open(&router, "/ws/events", &[]).await;
    assert_eq!(refused.status, 200);
    let last = refused.next().await.unwrap();
    assert_eq!(last.data["type"], "connection.closed");
    assert_eq!(last.data["payload"]["code"], 1008);
    assert!(
        last.data["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("authentication required"),
        "{:?}",
        last
    );
    assert!(refused.next().await.is_none());

    let bearer = bearer(b"sse-secret", chrono::Utc::now().timestamp() + 600);
    let mut ann = Sse::open(&router, "/ws/events", &[("Authorization", &bearer)]).await;
    let hello = ann.next().await.unwrap();
    assert_eq!(hello.data["payload"]["user"], "ann", "{:?}", hello);
    let full = Sse::open(&router, "/ws/events", &[("Authorization", &bearer)]).await;
    assert_eq!(full.status, 503, "server.max_connections counts streams");
    drop(ann);
    let deadline = tokio::time::Instant::now() + WAIT;
    while router.app.router.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream is forgotten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stream whose token runs out ends with 4001 then, as a WebSocket
/// does, not at its next ping (30 s on): its clock wakes it for the token
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_4001_when_its_token_runs_out_not_at_its_next_ping() {
    let config = support::config(
        "heartbeat_interval_s = 30",
        "mode = \"required\"\n[auth.jwt]\nsecret_env = \"SY_TEST_SSE_EXPIRY\"\nleeway_s = 0",
    );
    std::env::set_var("SY_TEST_SSE_EXPIRY", "sse-expiry-secret");
    let router = start(&config).await;
    // A few seconds of validity, so that a slow start still sees it valid.
    let exp = chrono::Utc::now().timestamp() + 3;
    let bearer = bearer(b"sse-expiry-secret", exp);
    let mut ann = Sse::open(&router, "/ws/events", &[("Authorization", &bearer)]).await;
    assert_eq!(ann.next().await.unwrap().data["payload"]["user"], "ann");
    // Each read waits at most WAIT (10 s): a third of the next ping.
    let closed = ann.next_type("connection.closed").await;
    assert_eq!(closed.data["payload"]["code"], 4001, "{:?}", closed);
    assert_eq!(closed.data["payload"]["reason"], "token expired");
    assert!(chrono::Utc::now().timestamp() >= exp, "closed before exp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_checked_and_allowed_ones_get_cors_headers() {
    let config = support::config(
        "",
        "mode = \"none\"\nallowed_origins = [\"https://app.example\"]",
    );
    let router = start(&config).await;
    let allowed = Sse::open(&router, "/ws/events", &[("Origin", "https://app.example")]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let own = format!("http://{}", router.addr);
    let same = Sse::open(&router, "/ws/events", &[("Origin", &own)]).await;
    assert_eq!(
        same.status, 200,
        "the router's own origin (its /console) is always admitted"
    );
    let refused = Sse::open(&router, "/ws/events", &[("Origin", "https://evil.example")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        router
            .metric("switchyard_upgrades_refused_total{reason=\"forbidden_origin\"}")
            .await,
        1.0
    );
}

/// Sends `request` on the connection and reads the response's head.
async fn ask(reader: &mut BufReader<TcpStream>, request: &str) -> (u16, Vec<(String, String)>) {
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    read_head(reader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_1_1_a_stream_follows_keep_alive_requests_and_a_head_and_is_chunked() {
    let router = start(support::BASE).await;
    let mut reader = BufReader::new(TcpStream::connect(router.addr).await.unwrap());
    let host = router.addr;
    for _ in 0..2 {
        let request = format!("GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (status, headers) = ask(&mut reader, &request).await;
        assert_eq!(status, 200);
        let length = headers.iter().find(|(n, _)| n == "content-length").unwrap();
        let mut body = vec![0; length.1.parse().unwrap()];
        reader.read_exact(&mut body).await.unwrap();
    }
    // A HEAD is answered by hyper: the stream's headers, no body.
    let request =
        format!("HEAD /ws/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    let (status, headers) = ask(&mut reader, &request).await;
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-type".into(), "text/event-stream".into())),
        "{headers:?}"
    );
    let request =
        format!("GET /ws/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    let (status, headers) = ask(&mut reader, &request).await;
    assert_eq!(status, 200);
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache, no-transform"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
    ] {
        assert!(
            headers.iter().any(|(n, v)| n == name && v == value),
            "{name}: {value} in {headers:?}"
        );
    }
    assert!(headers.iter().any(|(n, _)| n == "date"), "{headers:?}");
    let hello = read_chunk(&mut reader).await.unwrap();
    let data = hello
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let hello: Value = serde_json::from_str(data).unwrap();
    assert_eq!(hello["type"], "connection.established");
    let id = hello["payload"]["connection_id"].clone();
    let (code, body) = router
        .post("/api/admin/disconnect", &json!({"connection_id": id}))
        .await;
    assert_eq!(code, 200, "{body}");
    let mut last = String::new();
    while let Some(chunk) = read_chunk(&mut reader).await {
        last = chunk;
    }
    assert!(last.contains("\"connection.closed\""), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_do_not_hold_pending_handshake_slots() {
    let router = start(&support::with_server("max_pending_handshakes = 2")).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut sse = Sse::open(&router, "/ws/events", &[]).await;
        assert_eq!(sse.status, 200);
        assert_eq!(
            sse.next().await.unwrap().data["type"],
            "connection.established"
        );
        streams.push(sse);
    }
    let response = reqwest::get(router.url("/health/live")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_pipelined_behind_responses_the_client_has_not_read_comes_after_them() {
    // The socket is taken from hyper as soon as the stream is admitted,
    // which hyper must not do while it holds responses it could not write
    // yet: here, responses stuck behind a client that reads nothing until
    // all its requests are sent.
    let router = start(&support::with_server("socket_send_buffer = 4096")).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(router.addr).await.unwrap();
    let host = router.addr;
    const ASSETS: usize = 40;
    let mut requests = String::new();
    for _ in 0..ASSETS {
        requests.push_str(&format!(
            "GET /console/console.js HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ));
    }
    requests.push_str(&format!(
        "GET /ws/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    ));
    stream.write_all(requests.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        router.app.router.connection_count(),
        0,
        "the stream's request is not served while responses before it wait"
    );
    let mut reader = BufReader::new(stream);
    let mut first: Option<Vec<u8>> = None;
    for _ in 0..ASSETS {
        let (status, headers) = read_head(&mut reader).await;
        assert_eq!(status, 200);
        let length = headers.iter().find(|(n, _)| n == "content-length").unwrap();
        let mut body = vec![0; length.1.parse().unwrap()];
        reader.read_exact(&mut body).await.unwrap();
        assert_eq!(first.get_or_insert_with(|| body.clone()), &body);
    }
    let (status, headers) = read_head(&mut reader).await;
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-type".into(), "text/event-stream".into())),
        "{headers:?}"
    );
    let hello = read_chunk(&mut reader).await.unwrap();
    assert!(hello.contains("\"connection.established\""), "{hello}");
}

/// `Last-Event-ID` names every channel of the stream, so one reconnect
/// recovers them all at once: what one channel replays must not make
/// another, whose history holds everything it missed, answer `too_old`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channels_replay_does_not_make_another_too_old() {
    let config = support::BASE.replace("name = \"jobs\"\n", "name = \"jobs\"\nhistory = 10\n");
    assert_ne!(config, support::BASE);
    let router = start(&config).await;
    let cursor = cursor_of_a_new_stream(&router).await;
    for n in 0..20 {
        router.publish_ok(&alert(&format!("a{n}"))).await;
    }
    router.publish_ok(&job("j1")).await;
    assert_eq!(
        recovery_from(&router, "/ws/events", &cursor).await,
        json!({"alerts": {"recovered": true, "replayed": 20},
               "jobs": {"recovered": true, "replayed": 1}})
    );
}

/// The cursor a stream opened now starts at; the stream is closed again.
async fn cursor_of_a_new_stream(router: &support::Router) -> String {
    let mut sse = Sse::open(router, "/ws/events", &[]).await;
    sse.next_type("connection.established").await.id.unwrap()
}

/// The `recovery` answered to a stream opened on `path` with
/// `Last-Event-ID: cursor`.
async fn recovery_from(router: &support::Router, path: &str, cursor: &str) -> Value {
    let mut stream = Sse::open(router, path, &[("Last-Event-ID", cursor)]).await;
    stream.next_type("subscribed").await.data["recovery"].clone()
}

/// A channel that could not be recovered was announced to the client as a
/// gap, and the stream goes on from the channel's announced position: the
/// cursor moves there, so that a reconnect with `Last-Event-ID` does not
/// report the same gap again (nothing was missed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_not_recovered_moves_the_cursor_to_its_announced_position() {
    let router = start(support::BASE).await;
    let events: Vec<Value> = (0..105).map(|n| alert(&format!("a{n}"))).collect();
    let (status, body) = router.publish(&Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    let hello = Sse::open(&router, "/ws/events", &[])
        .await
        .next_type("connection.established")
        .await;
    let epoch = hello.data["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for since in [format!("alerts:{epoch}:1"), format!("alerts:{epoch}:500")] {
        let mut sse = Sse::open(&router, &format!("/ws/events?since={since}"), &[]).await;
        let reply = sse.next_type("subscribed").await;
        assert_eq!(
            reply.data["recovery"]["alerts"]["recovered"], false,
            "{reply:?}"
        );
        let cursor = reply.id.unwrap();
        assert!(
            cursor.starts_with(&format!("alerts:{epoch}:105,")),
            "{cursor}"
        );
        drop(sse);
        assert_eq!(
            recovery_from(&router, "/ws/events", &cursor).await["alerts"],
            json!({"recovered": true, "replayed": 0})
        );
    }
}

/// A `HEAD` of a stream is answered with the stream's headers and opens
/// nothing: it does not enter the router, so it cannot replace the user's
/// open stream (`on_user_limit = "evict_oldest"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_a_stream_opens_no_connection() {
    let config = support::config(
        "",
        "mode = \"required\"\nmax_connections_per_user = 1\non_user_limit = \"evict_oldest\"\n\
         [auth.jwt]\nsecret_env = \"SY_TEST_SSE_HEAD\"",
    );
    std::env::set_var("SY_TEST_SSE_HEAD", "sse-head-secret");
    let router = start(&config).await;
    let bearer = bearer(b"sse-head-secret", chrono::Utc::now().timestamp() + 600);
    let mut ann = Sse::open(&router, "/ws/events", &[("Authorization", &bearer)]).await;
    assert_eq!(ann.next().await.unwrap().data["payload"]["user"], "ann");

    let mut reader = BufReader::new(TcpStream::connect(router.addr).await.unwrap());
    let request = format!(
        "HEAD /ws/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\
         Authorization: {bearer}\r\n\r\n",
        router.addr
    );
    let (status, _) = ask(&mut reader, &request).await;
    assert_eq!(status, 200);
    router.publish_ok(&alert("a1")).await;
    let next = ann.next().await.unwrap();
    assert_eq!(next.data["type"], "alert.created", "{next:?}");
}

/// An empty `since=` (a page that builds `?since=` + a position it does not
/// have) asks for nothing: the stream still recovers from `Last-Event-ID`,
/// as `EventSource` sends it on reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_since_leaves_last_event_id_to_recover_from() {
    let router = start(support::BASE).await;
    let cursor = cursor_of_a_new_stream(&router).await;
    router.publish_ok(&alert("missed")).await;
    assert_eq!(
        recovery_from(&router, "/ws/events?since=", &cursor).await["alerts"],
        json!({"recovered": true, "replayed": 1})
    );
}

/// A `since` whose names hold a control character (a decoded CR or LF,
/// which would end the stream's `id:` line early) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_with_a_line_break_is_refused() {
    let router = start(support::BASE).await;
    let response = reqwest::Client::new()
        .get(router.url("/ws/events?since=alerts%0D%0Adata%3Dforged:E:1"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
}
