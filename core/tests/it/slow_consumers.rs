//! Slow consumers: a stalled client never slows a healthy one; its queue is
//! bounded; `drop_oldest` reports `connection.lagged` with positions that
//! recover exactly what was dropped; `disconnect` closes with 4008, and an
//! event stream that stalled is let go as a WebSocket is.

use crate::support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
send_queue = 500
send_queue_bytes = 1048576

[auth]
mode = "none"

[log]
level = "warn"

[[channels]]
name = "alerts"
history = 10000
history_max_bytes = 67108864
slow_consumer = "drop_oldest"

[[channels]]
name = "jobs"
history = 10000
slow_consumer = "disconnect"

[[endpoints]]
path = "/ws/events"
channels = ["alerts", "jobs"]

[[event_types]]
name = "alert.created"
channel = "alerts"
[event_types.payload]
n = { type = "integer", required = true }
pad = { type = "string" }

[[event_types]]
name = "job.progress"
channel = "jobs"
[event_types.payload]
n = { type = "integer", required = true }
pad = { type = "string" }
"#;

/// Publishes `count` events of `type_name` in batches of 100.
async fn publish(router: &support::Remote, type_name: &str, count: u64) {
    let pad = "x".repeat(4000);
    for start in (1..=count).step_by(100) {
        let batch: Vec<Value> = (start..(start + 100).min(count + 1))
            .map(|n| json!({"type": type_name, "payload": {"n": n, "pad": pad}}))
            .collect();
        let (status, body) = router.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_never_slows_a_healthy_one_and_recovers_what_it_lost() {
    let router = support::start(CONFIG).await;
    stalled_and_healthy(&router).await;
    router.shutdown().await;
}

/// The same with one worker thread, where the fan-out writes to every idle
/// client itself: the stalled client's socket fills in the middle of an
/// inline write, whose rest its task finishes from the byte it stopped at,
/// and what it could not take is still dropped oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_of_a_router_writing_inline_gets_whole_frames_and_recovers() {
    let router = support::OneWorker::start(CONFIG).await;
    stalled_and_healthy(&router).await;
}

/// 5,000 events to a healthy client and a stalled one: the healthy one
/// gets all, the stalled one what fit, a `connection.lagged`, and the rest
/// by recovery.
async fn stalled_and_healthy(router: &support::Remote) {
    let mut healthy = router.ws("/ws/events").await;
    let hello = healthy.recv_type("connection.established").await;
    let epoch = hello["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut slow = router.stalled("/ws/events").await;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 5000 {
            let ev = healthy.recv_type("alert.created").await;
            seen.push(ev["sequence"].as_u64().unwrap());
        }
        seen
    });
    publish(router, "alert.created", 5000).await;
    let seen = reader.await.unwrap();
    assert_eq!(
        seen,
        (1..=5000).collect::<Vec<u64>>(),
        "the healthy client got everything, in order"
    );

    let (_, list) = router.get("/api/websocket/connections").await;
    let depths: Vec<u64> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["queue_depth"].as_u64().unwrap())
        .collect();
    assert!(
        depths.iter().all(|d| *d <= 500),
        "queues stay bounded: {depths:?}"
    );

    // The stalled client now reads: what was queued, with one
    // connection.lagged first telling it where to recover from.
    assert_eq!(slow.recv().await["type"], "connection.established");
    let mut received = Vec::new();
    let mut lagged = None;
    while received.last() != Some(&5000) {
        let msg = slow.recv().await;
        match msg["type"].as_str().unwrap() {
            "connection.lagged" => {
                assert!(lagged.is_none(), "drops are merged into one message");
                lagged = Some(msg);
            }
            "alert.created" => received.push(msg["sequence"].as_u64().unwrap()),
            other => panic!("unexpected {other}"),
        }
    }
    let lagged = lagged.expect("a connection.lagged");
    let dropped = lagged["payload"]["dropped"].as_u64().unwrap();
    let from = lagged["payload"]["channels"]["alerts"]["sequence"]
        .as_u64()
        .unwrap();
    assert_eq!(lagged["payload"]["channels"]["alerts"]["epoch"], epoch);
    assert!(dropped > 0);
    assert_eq!(
        received.len() as u64 + dropped,
        5000,
        "every event was either delivered or counted as dropped"
    );

    // Recover from the lagged position on a new connection: exactly the
    // events this client did not get.
    let mut again = router
        .ws(&format!("/ws/events?since=alerts:{epoch}:{from}"))
        .await;
    again.recv_type("connection.established").await;
    let mut replayed = Vec::new();
    loop {
        let msg = again.recv().await;
        if msg["type"] == "subscribed" {
            assert_eq!(msg["recovery"]["alerts"]["recovered"], true, "{msg}");
            break;
        }
        replayed.push(msg["sequence"].as_u64().unwrap());
    }
    let mut union: Vec<u64> = received.iter().copied().filter(|s| *s > from).collect();
    union.extend(&replayed);
    union.sort_unstable();
    union.dedup();
    assert_eq!(
        union,
        ((from + 1)..=5000).collect::<Vec<u64>>(),
        "no gap once recovered"
    );

    let metrics = router.metrics().await;
    assert!(
        metrics.contains(&format!(
            "switchyard_dropped_total{{reason=\"slow_consumer\"}} {dropped}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_on_a_disconnect_channel_is_closed_with_4008() {
    let router = support::start(CONFIG).await;
    let mut healthy = router.ws("/ws/events").await;
    healthy.recv_type("connection.established").await;
    let mut slow = router.stalled("/ws/events?events=job.*").await;
    let reader = tokio::spawn(async move {
        for n in 1..=2000u64 {
            assert_eq!(healthy.recv_type("job.progress").await["sequence"], n);
        }
        healthy
    });
    publish(&router, "job.progress", 2000).await;
    let _healthy = reader.await.unwrap();
    assert_eq!(slow.close_frame().await, (4008, "too slow".to_owned()));
    let (_, list) = router.get("/api/websocket/connections").await;
    assert_eq!(
        list["connections"].as_array().unwrap().len(),
        1,
        "only the healthy client is left"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stalled_clients_keep_memory_bounded() {
    let router = support::start(CONFIG).await;
    let mut stalled_clients = Vec::new();
    for _ in 0..200 {
        stalled_clients.push(router.stalled("/ws/events?events=alert.*").await);
    }
    let mut healthy = router.ws("/ws/events?events=alert.*").await;
    healthy.recv_type("subscribed").await;
    let reader = tokio::spawn(async move {
        for n in 1..=1000u64 {
            assert_eq!(healthy.recv_type("alert.created").await["sequence"], n);
        }
        healthy
    });
    publish(&router, "alert.created", 1000).await;
    let _healthy = reader.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, list) = router.get("/api/websocket/connections").await;
    let conns = list["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 201);
    for c in conns {
        assert!(c["queue_depth"].as_u64().unwrap() <= 500, "{c}");
    }
    let dropped: u64 = conns.iter().map(|c| c["dropped"].as_u64().unwrap()).sum();
    assert!(dropped > 0, "stalled clients had to drop");
    drop(stalled_clients);
    router.shutdown().await;
}

/// Replies count against the queue's bounds (docs/protocol.md, "Slow
/// consumers"). A client that never reads but keeps asking for large
/// replies is closed with 4008 and let go, instead of growing the router's
/// memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_is_closed_4008() {
    let config = CONFIG.replace(
        "send_queue_bytes = 1048576",
        "send_queue_bytes = 262144\nmax_event_bytes = 65536\n\
         client_rate_limit = { messages_per_s = 100000, burst = 100000 }",
    );
    let router = support::start(&config).await;
    let mut greedy = router.stalled("/ws/events").await;
    // Well-formed but unregistered patterns: each `subscribed` reply echoes
    // every held pattern and warns about each new one.
    let patterns: Vec<String> = (0..128).map(|i| format!("nothing.p{i}")).collect();
    let subscribe = json!({"action": "subscribe", "events": patterns}).to_string();
    let mut sent = 0;
    while sent < 20_000 {
        let send = greedy.socket.send(Message::text(subscribe.clone()));
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(Ok(())) => sent += 1,
            _ => break, // the router stopped reading: it is closing us
        }
    }
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (_, list) = router.get("/api/websocket/connections").await;
        let conns = list["connections"].as_array().unwrap();
        if conns.is_empty() {
            break;
        }
        for c in conns {
            assert!(c["queue_depth"].as_u64().unwrap() <= 500, "bounded: {c}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still open after {sent} messages: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent > 10, "the router read messages first ({sent})");
    router.shutdown().await;
}

/// A router on CONFIG with a 256 KiB queue per connection and a 16 KiB
/// kernel send buffer: a stalled client meets the policy after well under
/// the 2 MB of [`publish_two_megabytes`].
async fn start_with_small_buffers() -> support::Router {
    let config = CONFIG.replace(
        "send_queue_bytes = 1048576",
        "send_queue_bytes = 262144\nsocket_send_buffer = 16384",
    );
    support::start(&config).await
}

/// Publishes 2 MB of `job.progress` in 1 KB events over about two seconds.
async fn publish_two_megabytes(router: &support::Router) {
    let pad = "x".repeat(1000);
    for batch in 0..20u64 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"type": "job.progress", "payload": {"n": batch * 100 + i, "pad": pad}}))
            .collect();
        let (status, body) = router.publish(&Value::Array(events)).await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `server.socket_send_buffer` (docs/protocol.md, "Slow consumers") bounds
/// what the kernel holds for a client that stops reading, so the
/// slow-consumer policy meets it after about `send_queue_bytes` +
/// `socket_send_buffer` bytes — not after the megabytes that send-buffer
/// autotuning would otherwise absorb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_send_buffer_is_bounded_so_a_stalled_client_meets_the_policy() {
    let router = start_with_small_buffers().await;
    let mut slow = router.stalled("/ws/events?events=job.*").await;
    // 2 MB in 1 KB events over about two seconds: an autotuned send buffer
    // grows to take it all (the router's queue would never fill), a 16 KB
    // one cannot.
    publish_two_megabytes(&router).await;
    assert_eq!(slow.close_frame().await, (4008, "too slow".to_owned()));
    router.shutdown().await;
}

/// An event stream whose client stops reading meets the same policy, and
/// its socket is let go a grace period after the close even though the
/// last message can never be written (as for a WebSocket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_stream_is_disconnected_and_its_socket_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let router = start_with_small_buffers().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(router.addr).await.unwrap();
    let request = format!(
        "GET /ws/events?events=job.* HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        router.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while router.app.router.connection_count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stream opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 2 MB in 1 KB events over about two seconds: the first go out, then
    // the socket is full, then the queue.
    publish_two_megabytes(&router).await;
    // Nothing is read: the stream is closed (4008) behind bytes the
    // client never takes, and given up after the grace period.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while router.app.router.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled stream is let go"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut everything = Vec::new();
    tokio::time::timeout(support::WAIT, stream.read_to_end(&mut everything))
        .await
        .expect("its socket is closed")
        .unwrap();
    let everything = String::from_utf8_lossy(&everything);
    assert!(everything.contains("job.progress"), "{everything}");
    assert!(
        !everything.contains("connection.closed"),
        "the last message never got out"
    );
    router.shutdown().await;
}

/// Publishes two bursts of 200 `job.progress` events of about 1 KB (each
/// burst under the 256 KiB queue of [`start_with_small_buffers`], both well
/// over it and the 16 KiB send buffer), letting the transport take the
/// first before the second; the `slow_consumer` drops counted then.
async fn two_bursts(router: &support::Router) -> f64 {
    let pad = "x".repeat(1000);
    for burst in 0..2u64 {
        let events: Vec<Value> = (0..200)
            .map(|i| json!({"type": "job.progress", "payload": {"n": burst * 200 + i, "pad": pad}}))
            .collect();
        let (status, body) = router.publish(&Value::Array(events)).await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    router
        .metric("switchyard_dropped_total{reason=\"slow_consumer\"}")
        .await
}

/// What a stalled WebSocket client has not read counts against its queue's
/// bounds until it is written, so 440 KB for it meets the policy (4008 on
/// this `disconnect` channel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_meets_the_policy_within_its_bounds() {
    let router = start_with_small_buffers().await;
    let _slow = router.stalled("/ws/events?events=job.*").await;
    let dropped = two_bursts(&router).await;
    assert!(dropped >= 1.0, "the policy was met ({dropped} dropped)");
    router.shutdown().await;
}

/// An event stream's unwritten bytes count against the same bounds: a
/// batch rendered but not yet taken by the socket is still the client's
/// backlog, so a stalled stream meets the policy where a WebSocket does,
/// not after twice `send_queue_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_stream_meets_the_policy_within_its_bounds() {
    let router = start_with_small_buffers().await;
    let _slow = router
        .event_stream("/ws/events?events=job.*", Some(4096))
        .await;
    let dropped = two_bursts(&router).await;
    assert!(dropped >= 1.0, "the policy was met ({dropped} dropped)");
    router.shutdown().await;
}
