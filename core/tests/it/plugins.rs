//! Plugins against a real router over loopback: real cdylibs (the detection
//! plugin, the test plugin, C fixtures) loaded through the ABI, their events
//! reaching real WebSocket clients and sinks, their failures contained.

use crate::support;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{c_library, free_port, plugin, start, try_start, Client, Router, BASE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn testkit() -> String {
    plugin("switchyard_testkit")
}

fn detection() -> String {
    plugin("switchyard_detection")
}

/// One `[[plugins]]` table: `table` holds extra keys of the table itself
/// (such as `stop_timeout_s`), `config` the `[plugins.config]` contents.
fn plugin_block(name: &str, library: &str, table: &str, config: &str) -> String {
    format!(
        "\n[[plugins]]\nname = \"{name}\"\nlibrary = \"{library}\"\n{table}\n[plugins.config]\n{config}\n"
    )
}

/// An extra endpoint with its own channels (BASE's `/ws/events` carries
/// only `alerts` and `jobs`).
fn endpoint(path: &str, channels: &[&str]) -> String {
    let list: Vec<String> = channels.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "\n[[endpoints]]\npath = \"{path}\"\nchannels = [{}]\n",
        list.join(", ")
    )
}

fn channel(name: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\n")
}

fn route(sink: &str, events: &[&str]) -> String {
    let list: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "\n[[routes]]\nsink = \"{sink}\"\nevents = [{}]\n",
        list.join(", ")
    )
}

/// BASE followed by `parts`. The `[[plugins]]` tables come last, so that
/// a later table cannot land inside a `[plugins.config]`.
fn config(parts: &[&str]) -> String {
    let mut out = BASE.to_owned();
    for p in parts {
        out.push_str(p);
    }
    out
}

/// A connected client past its `connection.established`.
async fn client(router: &Router, path: &str) -> (Client, Value) {
    let mut c = router.ws(path).await;
    let hello = c.established().await;
    (c, hello)
}

/// The next message of any type other than `batch.progress` (which is
/// checked for its fields and skipped: how many arrive depends on timing).
async fn recv_no_progress(c: &mut Client) -> Value {
    loop {
        let msg = c.recv().await;
        if msg["type"] == "batch.progress" {
            assert_eq!(msg["channel"], "detections", "{msg}");
            let p = &msg["payload"];
            assert!(p["batch_id"].is_string(), "{msg}");
            assert!(p["camera_id"].is_string(), "{msg}");
            assert!(p["detection_count"].is_u64(), "{msg}");
            assert!(is_ms_timestamp(&p["last_detection_at"]), "{msg}");
            continue;
        }
        return msg;
    }
}

/// RFC 3339 UTC with milliseconds and `Z`, e.g. `2026-11-23T06:00:00.123Z`.
fn is_ms_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

/// Polls `/health` until instance `name` is in `state`; returns the body.
async fn health_with_plugin_state(router: &Router, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = router.get("/health").await;
        if body["plugins"][name]["state"] == state {
            assert_eq!(status, 200, "{body}");
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "plugin {name} never reached state {state}: last /health {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a sink's record file until it has at least `n` lines.
async fn recorded(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("the sink got JSON"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, expected {n}: {text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alert(id: &str) -> Value {
    json!({"type": "alert.created", "payload": {"id": id, "severity": "high"}})
}

/// The problems of a refused start, with the one keyed `key`.
fn problem_keyed(problems: &[switchyard::config::Problem], key: &str) -> String {
    problems
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no problem keyed {key}: {problems:#?}"))
        .problem
        .clone()
}

fn refused(
    result: Result<Router, switchyard::reload::ReloadError>,
) -> Vec<switchyard::config::Problem> {
    match result {
        Ok(_) => panic!("the router started, but the config should have been refused"),
        Err(e) => e.problems(),
    }
}

async fn send_line(tcp: &mut TcpStream, line: &str) {
    tcp.write_all(line.as_bytes()).await.unwrap();
    tcp.write_all(b"\n").await.unwrap();
    tcp.flush().await.unwrap();
}

fn detection_line(camera: &str, label: &str) -> String {
    json!({"camera_id": camera, "label": label, "confidence": 0.93,
        "bbox": {"x": 10, "y": 20, "width": 100, "height": 200},
        "detected_at": "2026-11-23T06:00:00Z", "frame_id": "f-1"})
    .to_string()
}

/// A config with the detection plugin listening on `port` and an endpoint
/// `/ws/det` carrying its channels.
fn detection_config(port: u16, extra_plugin_config: &str) -> String {
    config(&[
        &endpoint("/ws/det", &["detections", "scene_changes"]),
        &plugin_block(
            "detection",
            &detection(),
            "",
            &format!(
                "listen = \"127.0.0.1:{port}\"\nbatch_idle_s = 0.5\nbatch_window_s = 60\nprogress_interval_ms = 200\n{extra_plugin_config}"
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------
// prometheus: refusals are 4xx
// ---------------------------------------------------------------------------

/// A router with one prometheus instance listening on `port`; `server`
/// holds extra `[server]` keys.
async fn prometheus_router(port: u16, server: &str) -> Router {
    let cfg = config(&[&plugin_block(
        "prometheus",
        &plugin("switchyard_prometheus"),
        "",
        &format!("listen = \"127.0.0.1:{port}\""),
    )])
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{server}"),
        1,
    );
    start(&cfg).await
}

/// POSTs a postable-alerts array to the plugin, once its listener is up.
async fn post_alerts(port: u16, alerts: &Value) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/v2/alerts"))
            .json(alerts)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                return (status, response.json().await.unwrap_or(Value::Null));
            }
            Err(e) => assert!(Instant::now() < deadline, "the listener never came up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn firing(name: &str, summary: &str) -> Value {
    json!({"labels": {"alertname": name, "severity": "critical"},
           "annotations": {"summary": summary}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_router_refuses_as_too_large_gets_413_and_the_rest_are_taken() {
    let port = free_port();
    let router = prometheus_router(port, "").await;
    // Well within max_body_bytes (1 MiB), but over max_event_bytes (64 KiB).
    let big = firing("Huge", &"x".repeat(100_000));
    let (status, body) = post_alerts(port, &json!([big, firing("Small", "fine")])).await;
    assert_eq!(status, 413, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("alert 0") && message.contains("max_event_bytes"),
        "{body}"
    );
    assert!(message.contains("the other 1 were taken"), "{body}");
    let (status, body) = post_alerts(port, &json!([firing("Small", "fine")])).await;
    assert_eq!(status, 200, "{body}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_router_refuses_as_invalid_gets_422() {
    let port = free_port();
    // Depth 1: the alert's `labels` object is one level too deep.
    let router = prometheus_router(port, "max_json_depth = 1").await;
    let (status, body) = post_alerts(port, &json!([firing("Deep", "labels")])).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("invalid payload"), "{body}");
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// detection
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_batch_over_max_event_bytes_arrives_in_parts_not_lost() {
    let port = free_port();
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("batches.jsonl");
    let router = start(&config(&[
        &plugin_block(
            "detection",
            &detection(),
            "",
            &format!("listen = \"127.0.0.1:{port}\"\nbatch_idle_s = 0.5\nbatch_window_s = 120"),
        ),
        &plugin_block(
            "recorder",
            &testkit(),
            "",
            &format!("record_to = {record:?}"),
        ),
        &route("recorder", &["detection.batch"]),
    ]))
    .await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let line = detection_line("front_door", "person");
    let lines: String = (0..5000).map(|_| format!("{line}\n")).collect();
    tcp.write_all(lines.as_bytes()).await.unwrap();
    tcp.flush().await.unwrap();

    // 5,000 ids are ~215 KB: over the default max_event_bytes (65536).
    let first = recorded(&record, 1).await;
    let parts = first[0]["payload"]["parts"]
        .as_u64()
        .unwrap_or_else(|| panic!("sent in parts: {}", first[0]));
    assert!(parts > 1);
    let all = recorded(&record, parts as usize).await;
    let mut ids = std::collections::BTreeSet::new();
    for (n, event) in all.iter().enumerate() {
        let p = &event["payload"];
        assert_eq!(event["type"], "detection.batch");
        assert_eq!(p["part"], n as u64 + 1, "{p}");
        assert_eq!(p["parts"], parts);
        assert_eq!(p["batch_id"], all[0]["payload"]["batch_id"]);
        assert_eq!(p["detection_count"], 5000);
        assert!(event.to_string().len() <= 65536);
        for id in p["detection_ids"].as_array().unwrap() {
            assert!(ids.insert(id.as_str().unwrap().to_owned()), "{id} twice");
        }
    }
    assert_eq!(ids.len(), 5000, "every detection is in one part");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_over_tcp_emits_batches_and_scene_changes() {
    let port = free_port();
    let router = start(&detection_config(port, "")).await;
    let (mut c, hello) = client(&router, "/ws/det").await;
    assert_eq!(hello["payload"]["channels"]["detections"]["sequence"], 0);
    assert_eq!(hello["payload"]["channels"]["scene_changes"]["sequence"], 0);

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_line(&mut tcp, &detection_line("front_door", "person")).await;

    let opened = c.recv().await;
    assert_eq!(opened["type"], "batch.opened", "{opened}");
    assert_eq!(opened["channel"], "detections");
    assert_eq!(opened["sequence"], 1);
    assert!(is_ms_timestamp(&opened["timestamp"]), "{opened}");
    assert!(opened.get("correlation_id").is_none(), "{opened}");
    let p = &opened["payload"];
    assert_eq!(keys(p), sorted(&["batch_id", "camera_id", "started_at"]));
    assert_eq!(p["camera_id"], "front_door");
    let batch_id = p["batch_id"].as_str().expect("batch_id is a string");
    assert!(!batch_id.is_empty());
    assert!(is_ms_timestamp(&p["started_at"]), "{opened}");

    let new = c.recv().await;
    assert_eq!(new["type"], "detection.new", "{new}");
    assert_eq!(new["channel"], "detections");
    assert_eq!(new["sequence"], 2);
    let d = &new["payload"];
    assert_eq!(
        keys(d),
        sorted(&[
            "detection_id",
            "camera_id",
            "label",
            "confidence",
            "bbox",
            "detected_at",
            "batch_id"
        ])
    );
    let detection_id = d["detection_id"].as_str().expect("detection_id string");
    assert!(!detection_id.is_empty());
    assert_eq!(d["camera_id"], "front_door");
    assert_eq!(d["label"], "person");
    assert_eq!(d["confidence"].as_f64(), Some(0.93));
    assert_eq!(keys(&d["bbox"]), sorted(&["x", "y", "width", "height"]));
    assert_eq!(d["bbox"]["x"].as_f64(), Some(10.0));
    assert_eq!(d["bbox"]["y"].as_f64(), Some(20.0));
    assert_eq!(d["bbox"]["width"].as_f64(), Some(100.0));
    assert_eq!(d["bbox"]["height"].as_f64(), Some(200.0));
    assert_eq!(d["detected_at"], "2026-11-23T06:00:00.000Z");
    assert_eq!(d["batch_id"], batch_id);

    // Idle for batch_idle_s (0.5 s): the batch closes.
    let batch = recv_no_progress(&mut c).await;
    assert_eq!(batch["type"], "detection.batch", "{batch}");
    assert_eq!(batch["channel"], "detections");
    let b = &batch["payload"];
    assert_eq!(
        keys(b),
        sorted(&[
            "batch_id",
            "camera_id",
            "detection_ids",
            "detection_count",
            "labels",
            "started_at",
            "closed_at"
        ])
    );
    assert_eq!(b["batch_id"], batch_id);
    assert_eq!(b["camera_id"], "front_door");
    assert_eq!(b["detection_ids"], json!([detection_id]));
    assert_eq!(b["detection_count"], 1);
    assert_eq!(b["labels"], json!(["person"]));
    assert_eq!(b["started_at"], opened["payload"]["started_at"]);
    assert!(is_ms_timestamp(&b["closed_at"]), "{batch}");

    let closed = c.recv().await;
    assert_eq!(
        closed["type"], "batch.closed",
        "right after detection.batch: {closed}"
    );
    assert_eq!(closed["channel"], "detections");
    assert_eq!(
        closed["sequence"].as_u64(),
        batch["sequence"].as_u64().map(|s| s + 1)
    );
    let cl = &closed["payload"];
    assert_eq!(
        keys(cl),
        sorted(&["batch_id", "camera_id", "detection_count", "reason"])
    );
    assert_eq!(cl["batch_id"], batch_id);
    assert_eq!(cl["camera_id"], "front_door");
    assert_eq!(cl["detection_count"], 1);
    assert_eq!(cl["reason"], "idle");

    // A scene change.
    send_line(
        &mut tcp,
        r#"{"kind":"scene_change","camera_id":"front_door","change_type":"view_blocked","similarity_score":0.31}"#,
    )
    .await;
    let scene = c.recv().await;
    assert_eq!(scene["type"], "scene_change.detected", "{scene}");
    assert_eq!(scene["channel"], "scene_changes");
    assert_eq!(scene["sequence"], 1);
    let s = &scene["payload"];
    assert_eq!(
        keys(s),
        sorted(&[
            "camera_id",
            "change_type",
            "similarity_score",
            "detected_at"
        ])
    );
    assert_eq!(s["camera_id"], "front_door");
    assert_eq!(s["change_type"], "view_blocked");
    assert_eq!(s["similarity_score"].as_f64(), Some(0.31));
    assert!(is_ms_timestamp(&s["detected_at"]), "{scene}");

    c.expect_silence(Duration::from_millis(300)).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_skips_bad_and_overlong_lines_and_keeps_the_connection() {
    let port = free_port();
    let router = start(&detection_config(port, "max_line_bytes = 512")).await;
    let (mut c, _) = client(&router, "/ws/det").await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();

    // Not JSON, then JSON that is not a record, then a good line.
    send_line(&mut tcp, "this is not json {").await;
    send_line(&mut tcp, r#"{"camera_id":"yard"}"#).await;
    send_line(&mut tcp, &detection_line("yard", "car")).await;
    let opened = c.recv().await;
    assert_eq!(opened["type"], "batch.opened", "{opened}");
    assert_eq!(opened["payload"]["camera_id"], "yard");
    assert_eq!(opened["sequence"], 1, "bad lines emitted nothing");
    let new = c.recv().await;
    assert_eq!(new["type"], "detection.new", "{new}");
    assert_eq!(new["payload"]["camera_id"], "yard");
    assert_eq!(new["payload"]["label"], "car");

    // A valid record longer than max_line_bytes, then a good line, on the
    // same connection.
    let long = json!({"camera_id": "huge", "label": "person", "confidence": 0.5,
        "bbox": {"x": 1, "y": 2, "width": 3, "height": 4}, "frame_id": "x".repeat(2000)})
    .to_string();
    assert!(long.len() > 512);
    send_line(&mut tcp, &long).await;
    send_line(&mut tcp, &detection_line("gate", "dog")).await;
    loop {
        let msg = recv_no_progress(&mut c).await;
        assert_ne!(
            msg["payload"]["camera_id"], "huge",
            "the over-long line was not skipped: {msg}"
        );
        if msg["type"] == "detection.new" {
            assert_eq!(msg["payload"]["camera_id"], "gate", "{msg}");
            assert_eq!(msg["payload"]["label"], "dog");
            break;
        }
        // Only yard's batch closing or gate's batch opening may come first.
        let t = msg["type"].as_str().unwrap_or_default();
        assert!(
            ["batch.opened", "detection.batch", "batch.closed"].contains(&t),
            "{msg}"
        );
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_reload_removing_it_closes_open_batches_before_the_reply() {
    let port = free_port();
    // The channels are declared, so they outlive the plugin's types.
    let channels = format!("{}{}", channel("detections"), channel("scene_changes"));
    let ep = endpoint("/ws/det", &["detections", "scene_changes"]);
    let with_plugin = config(&[
        &channels,
        &ep,
        &plugin_block(
            "detection",
            &detection(),
            "",
            &format!("listen = \"127.0.0.1:{port}\"\nbatch_idle_s = 60\nbatch_window_s = 120\nprogress_interval_ms = 60000"),
        ),
    ]);
    let router = start(&with_plugin).await;
    let (mut c, _) = client(&router, "/ws/det").await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_line(&mut tcp, &detection_line("lobby", "person")).await;
    let opened = c.recv().await;
    assert_eq!(opened["type"], "batch.opened", "{opened}");
    let batch_id = opened["payload"]["batch_id"].clone();
    let new = recv_no_progress(&mut c).await;
    assert_eq!(new["type"], "detection.new", "{new}");

    router.write_config(&config(&[&channels, &ep]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    // Whoever connects after the reply sees the final events counted
    // already: they were accepted before it.
    let (_, late_hello) = client(&router, "/ws/det").await;
    let late_sequence = late_hello["payload"]["channels"]["detections"]["sequence"].clone();

    let batch = recv_no_progress(&mut c).await;
    assert_eq!(batch["type"], "detection.batch", "{batch}");
    assert_eq!(batch["payload"]["batch_id"], batch_id);
    assert_eq!(batch["payload"]["detection_count"], 1);
    assert_eq!(
        batch["payload"]["detection_ids"],
        json!([new["payload"]["detection_id"]])
    );
    let closed = c.recv().await;
    assert_eq!(closed["type"], "batch.closed", "{closed}");
    assert_eq!(closed["payload"]["batch_id"], batch_id);
    assert_eq!(closed["payload"]["reason"], "stopped");
    assert_eq!(closed["payload"]["detection_count"], 1);
    assert_eq!(
        late_sequence, closed["sequence"],
        "the stopped batch's events were accepted before the reload reply"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_list_detection_types_with_their_producer() {
    let router = start(&detection_config(free_port(), "")).await;
    let (status, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(status, 200, "{caps}");
    let registry = &caps["event_registry"];
    for (name, channel) in [
        ("detection.new", "detections"),
        ("detection.batch", "detections"),
        ("batch.opened", "detections"),
        ("batch.progress", "detections"),
        ("batch.closed", "detections"),
        ("scene_change.detected", "scene_changes"),
    ] {
        let t = &registry[name];
        assert_eq!(t["producer"], "detection", "{name}: {t}");
        assert_eq!(t["channel"], channel, "{name}: {t}");
    }
    assert_eq!(
        registry["batch.closed"]["payload_fields"]["reason"]["enum"],
        json!(["window", "idle", "stopped"])
    );
    assert_eq!(
        registry["scene_change.detected"]["payload_fields"]["change_type"]["enum"],
        json!(["view_blocked", "angle_changed", "view_tampered", "unknown"])
    );
    let channels = caps["channels"].as_array().unwrap();
    assert!(channels.contains(&json!("detections")), "{caps}");
    assert!(channels.contains(&json!("scene_changes")), "{caps}");
    let det = caps["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/ws/det")
        .expect("endpoint /ws/det listed");
    assert!(det["events"]
        .as_array()
        .unwrap()
        .contains(&json!("detection.new")));
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// testkit: emitting
// ---------------------------------------------------------------------------

/// A router with a `testkit` channel on `/ws/tk` and no plugin, a client on
/// it, then a reload that adds `plugin` (so nothing it emits at start is
/// missed).
async fn add_testkit_live(plugin_config: &str) -> (Router, Client) {
    let head = format!("{}{}", channel("testkit"), endpoint("/ws/tk", &["testkit"]));
    let router = start(&config(&[&head])).await;
    let (c, _) = client(&router, "/ws/tk").await;
    router.write_config(&config(&[
        &head,
        &plugin_block("tk", &testkit(), "", plugin_config),
    ]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    (router, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testkit_emits_on_start_in_sequence() {
    let (router, mut c) = add_testkit_live("emit_on_start = 5").await;
    for n in 1..=5 {
        let tick = c.recv().await;
        assert_eq!(tick["type"], "testkit.tick", "{tick}");
        assert_eq!(tick["channel"], "testkit");
        assert_eq!(tick["sequence"], n);
        assert_eq!(tick["payload"], json!({"n": n, "instance": "testkit"}));
        assert!(is_ms_timestamp(&tick["timestamp"]), "{tick}");
    }
    c.expect_silence(Duration::from_millis(300)).await;
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(caps["event_registry"]["testkit.tick"]["producer"], "tk");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_may_not_emit_undeclared_types() {
    let head = format!("{}{}", channel("testkit"), endpoint("/ws/tk", &["testkit"]));
    let router = start(&config(&[&head])).await;
    let (mut tk, _) = client(&router, "/ws/tk").await;
    let (mut ev, _) = client(&router, "/ws/events").await;
    router.write_config(&config(&[
        &head,
        &plugin_block("tk", &testkit(), "", "probe_undeclared = true"),
    ]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let msg = tk.recv().await;
    assert_eq!(msg["type"], "testkit.status", "{msg}");
    assert_eq!(msg["sequence"], 1);
    assert_eq!(
        msg["payload"],
        json!({"attempt": "alert.created", "status": "unknown_type"}),
        "alert.created is registered (by config) but not declared by the plugin"
    );
    ev.expect_silence(Duration::from_millis(300)).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_declaring_the_same_types_are_refused_naming_both() {
    let cfg = config(&[
        &plugin_block("tk_a", &testkit(), "", "channel = \"chan_a\""),
        &plugin_block("tk_b", &testkit(), "", "channel = \"chan_b\""),
    ]);
    let problems = refused(try_start(&cfg).await);
    let twice: Vec<_> = problems
        .iter()
        .filter(|p| p.problem.contains("declared twice"))
        .collect();
    assert!(!twice.is_empty(), "{problems:#?}");
    for p in &twice {
        assert!(
            p.problem.contains("tk_a") && p.problem.contains("tk_b"),
            "names both instances: {p:?}"
        );
        assert!(
            p.key.as_deref().unwrap_or_default().starts_with("plugins["),
            "{p:?}"
        );
    }
    let named: Vec<&str> = twice
        .iter()
        .filter_map(|p| p.value.as_ref()?.as_str())
        .collect();
    assert!(
        named.contains(&"testkit.tick") || twice.iter().any(|p| p.problem.contains("testkit.tick")),
        "{twice:#?}"
    );
}

// ---------------------------------------------------------------------------
// testkit: panics and failures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_create_refuses_start() {
    let cfg = config(&[&plugin_block("tk", &testkit(), "", "panic_in = \"create\"")]);
    let problems = refused(try_start(&cfg).await);
    let why = problem_keyed(&problems, "plugins[0].config");
    assert!(why.contains("panic"), "mentions the panic: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_create_refuses_reload_and_old_config_keeps_serving() {
    let router = start(BASE).await;
    let (mut c, _) = client(&router, "/ws/events").await;
    let (_, before) = router.get("/health").await;

    router.write_config(&config(&[&plugin_block(
        "tk",
        &testkit(),
        "",
        "panic_in = \"create\"",
    )]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config", "{body}");
    let errors = body["error"]["errors"].as_array().expect("errors listed");
    let e = errors
        .iter()
        .find(|e| e["key"] == "plugins[0].config")
        .unwrap_or_else(|| panic!("no error keyed plugins[0].config: {body}"));
    let problem = e["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("panic"), "{e}");
    // The instance is named in the problem, not shown as the config's value.
    assert!(problem.contains("`tk`"), "{e}");
    assert_eq!(e["value"], Value::Null, "{e}");

    let (_, after) = router.get("/health").await;
    assert_eq!(after["config_version"], before["config_version"]);
    assert_eq!(after["status"], "ok", "{after}");
    let (status, body) = router.publish(&alert("a1")).await;
    assert_eq!(status, 202, "{body}");
    let ev = c.recv().await;
    assert_eq!(ev["type"], "alert.created");
    assert_eq!(ev["payload"]["id"], "a1");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_start_marks_the_plugin_failed_and_the_router_degraded() {
    let cfg = config(&[&plugin_block("tk", &testkit(), "", "panic_in = \"start\"")]);
    let router = start(&cfg).await;
    let health = health_with_plugin_state(&router, "tk", "failed").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let last_error = health["plugins"]["tk"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("last_error set: {health}"));
    assert!(last_error.contains("panic"), "{last_error}");
    assert!(health["plugins"]["tk"]["restarts"].is_u64(), "{health}");
    // The router carries on.
    let (mut c, _) = client(&router, "/ws/events").await;
    let (status, body) = router.publish(&alert("a1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(c.recv().await["payload"]["id"], "a1");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panic_is_a_json_log_line_not_the_default_hook_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = plugin_block(
        "tk",
        &testkit(),
        "",
        "panic_in = \"emit\"\nemit_on_start = 1",
    );
    let cfg = config(&[&plugin]).replace("level = \"warn\"", "level = \"warn\"\nformat = \"json\"");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, cfg).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let port = free_port();
    let _router = support::serve(
        &config_path,
        port,
        std::fs::File::create(&stderr_path).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let panic_line = loop {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let found = stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| {
                line["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("told to panic while emitting"))
            });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON log line of the plugin's panic; stderr:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(panic_line["level"], "ERROR", "{panic_line}");
    assert_eq!(panic_line["fields"]["plugin"], "tk", "{panic_line}");
    let message = panic_line["fields"]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked at") && message.contains("testkit/src/lib.rs:"),
        "names where it panicked: {message}"
    );
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "every stderr line is a JSON log line, not the default panic hook's: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_is_reported_and_retried_with_backoff() {
    let cfg = config(&[&plugin_block(
        "tk",
        &testkit(),
        "",
        "fail_start = \"no luck\"",
    )]);
    let router = start(&cfg).await;
    let health = health_with_plugin_state(&router, "tk", "failed").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["plugins"]["tk"]["last_error"], "no luck", "{health}");
    // A failed instance is restarted with exponential backoff
    // (docs/operations.md, "Plugin supervision").
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = router.get("/health").await;
        if health["plugins"]["tk"]["restarts"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(health["plugins"]["tk"]["state"], "failed", "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never restarted within 15 s: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_on_a_plugin_thread_marks_it_failed_and_the_router_carries_on() {
    let cfg = config(&[&plugin_block(
        "tk",
        &testkit(),
        "",
        "emit_on_start = 3\npanic_in = \"emit\"",
    )]);
    let router = start(&cfg).await;
    let health = health_with_plugin_state(&router, "tk", "failed").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let last_error = health["plugins"]["tk"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("last_error set: {health}"));
    assert!(last_error.contains("panic"), "{last_error}");

    let (mut c, _) = client(&router, "/ws/events").await;
    for id in ["a1", "a2"] {
        let (status, body) = router.publish(&alert(id)).await;
        assert_eq!(status, 202, "{body}");
        let ev = c.recv().await;
        assert_eq!(ev["type"], "alert.created");
        assert_eq!(ev["payload"]["id"], id);
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_deliver_fails_the_sink_only() {
    let cfg = config(&[
        &plugin_block("sink", &testkit(), "", "panic_in = \"deliver\""),
        &route("sink", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    let (mut c, _) = client(&router, "/ws/events").await;
    for id in ["a1", "a2", "a3"] {
        let (status, body) = router.publish(&alert(id)).await;
        assert_eq!(status, 202, "{body}");
        let ev = c.recv().await;
        assert_eq!(ev["type"], "alert.created");
        assert_eq!(ev["payload"]["id"], id);
    }
    let health = health_with_plugin_state(&router, "sink", "failed").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let last_error = health["plugins"]["sink"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("last_error set: {health}"));
    assert!(last_error.contains("panic"), "{last_error}");
    // Still serving after the sink failed.
    let (status, body) = router.publish(&alert("a4")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(c.recv().await["payload"]["id"], "a4");
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// Sinks
// ---------------------------------------------------------------------------

/// A counter's value in the router's metrics (0 when absent).
fn counter(router: &switchyard::router::Router, series: &str) -> u64 {
    router
        .metrics()
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sink_cannot_take_within_the_shutdown_bound_is_counted_as_sink_shutdown() {
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("sink.jsonl");
    let cfg = config(&[
        &plugin_block(
            "slow",
            &testkit(),
            "",
            &format!("record_to = {record:?}\ndeliver_delay_ms = 20"),
        ),
        &route("slow", &["alert.*"]),
    ])
    .replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_timeout_s = 0",
        1,
    );
    let router = start(&cfg).await;
    let events: Vec<Value> = (0..300).map(|i| alert(&format!("a{i}"))).collect();
    let (status, body) = router.publish(&Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    let app = router.app.clone();
    router.shutdown().await;
    let written = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .count() as u64;
    let dropped = counter(
        &app.router,
        "switchyard_dropped_total{reason=\"sink_shutdown\"}",
    );
    assert!(dropped > 0, "20 ms per event cannot drain 300 in no time");
    assert_eq!(
        written + dropped,
        300,
        "{written} written, {dropped} dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sink_takes_over_the_queue_even_from_a_predecessor_abandoned_mid_deliver() {
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("sink.jsonl");
    let sink = |delay_ms: u64| {
        config(&[
            &plugin_block(
                "slow",
                &testkit(),
                "stop_timeout_s = 1",
                &format!("record_to = {record:?}\ndeliver_delay_ms = {delay_ms}"),
            ),
            &route("slow", &["alert.*"]),
        ])
    };
    let router = start(&sink(3000)).await;
    let events: Vec<Value> = (0..5).map(|i| alert(&format!("a{i}"))).collect();
    let (status, body) = router.publish(&Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    // The old instance is inside its first 3 s `deliver` when the reload
    // stops it, so it is abandoned after 1 s; the new one waits for it to
    // hand the queue back, then delivers the rest.
    router.write_config(&sink(0));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let lines = recorded(&record, 5).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|e| e["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a0", "a1", "a2", "a3", "a4"], "each once, in order");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_receives_exactly_its_routed_events_in_order_as_envelopes() {
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("sink.jsonl");
    let cfg = config(&[
        &plugin_block(
            "recorder",
            &testkit(),
            "",
            &format!("record_to = \"{}\"", record.display()),
        ),
        &route("recorder", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    let (mut c, _) = client(&router, "/ws/events").await;
    let batch = json!([
        alert("a1"),
        {"type": "job.progress", "payload": {"job_id": "j1", "percent": 10}},
        alert("a2"),
        {"type": "alert.resolved", "payload": {"id": "a1"}, "correlation_id": "req-9"},
        {"type": "job_progress", "payload": {"job_id": "j1", "percent": 20}},
    ]);
    let (status, body) = router.publish(&batch).await;
    assert_eq!(status, 202, "{body}");
    let mut alerts = Vec::new();
    for _ in 0..5 {
        let ev = c.recv().await;
        if ev["channel"] == "alerts" {
            alerts.push(ev);
        }
    }
    assert_eq!(alerts.len(), 3);
    let lines = recorded(&record, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines_later = recorded(&record, 3).await;
    assert_eq!(
        lines_later.len(),
        3,
        "only the alerts reach the sink: {lines_later:#?}"
    );
    assert_eq!(
        lines, alerts,
        "the sink gets the client envelopes, in order"
    );
    assert_eq!(lines[0]["payload"]["id"], "a1");
    assert_eq!(lines[1]["payload"]["id"], "a2");
    assert_eq!(lines[2]["type"], "alert.resolved");
    assert_eq!(lines[2]["correlation_id"], "req-9");
    assert_eq!(lines[0]["sequence"], 1);
    assert_eq!(lines[2]["sequence"], 3);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_never_receives_its_own_events() {
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("self.jsonl");
    let cfg = config(&[
        &channel("testkit"),
        &endpoint("/ws/tk", &["testkit"]),
        &plugin_block(
            "both",
            &testkit(),
            "",
            &format!("emit_on_start = 3\nrecord_to = \"{}\"", record.display()),
        ),
        &route("both", &["testkit.*", "alert.*"]),
    ]);
    let router = start(&cfg).await;
    // Wait until its three ticks were accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, hello) = client(&router, "/ws/tk").await;
        if hello["payload"]["channels"]["testkit"]["sequence"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "ticks never accepted: {hello}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = router.publish(&alert("after-ticks")).await;
    assert_eq!(status, 202, "{body}");
    let lines = recorded(&record, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = {
        let later = recorded(&record, 1).await;
        assert!(later.len() >= lines.len());
        later
    };
    assert_eq!(lines.len(), 1, "only the alert: {lines:#?}");
    assert_eq!(lines[0]["type"], "alert.created");
    assert_eq!(lines[0]["payload"]["id"], "after-ticks");
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_stop_does_not_block_a_reload() {
    let cfg = config(&[&plugin_block(
        "slow",
        &testkit(),
        "stop_timeout_s = 1",
        "stop_delay_ms = 60000",
    )]);
    let router = start(&cfg).await;
    health_with_plugin_state(&router, "slow", "running").await;
    router.write_config(BASE);
    // Far above stop_timeout_s plus scheduling delays, far below the 60 s
    // the stop hangs for.
    let began = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), router.reload())
        .await
        .expect("the reload answered");
    let took = began.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_secs(20),
        "stop_timeout_s = 1, yet the reload took {took:?}"
    );
    let (status, body) = router.publish(&alert("a1")).await;
    assert_eq!(status, 202, "{body}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abi_major_mismatch_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_library("abi_v2.c", dir.path());
    let cfg = config(&[&plugin_block("future", &lib.display().to_string(), "", "")]);
    let problems = refused(try_start(&cfg).await);
    let why = problem_keyed(&problems, "plugins[0].library");
    let text = why.replace(&lib.display().to_string(), "<lib>");
    assert!(text.contains("ABI"), "{why}");
    assert!(text.contains('2'), "names the plugin's version 2: {why}");
    assert!(text.contains('1'), "names the router's version 1: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_is_not_a_plugin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_library("not_a_plugin.c", dir.path());
    let cfg = config(&[&plugin_block("nope", &lib.display().to_string(), "", "")]);
    let problems = refused(try_start(&cfg).await);
    let why = problem_keyed(&problems, "plugins[0].library");
    assert!(why.contains("not a Switchyard plugin"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_library_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libnothing_here.so");
    let cfg = config(&[&plugin_block(
        "ghost",
        &missing.display().to_string(),
        "",
        "",
    )]);
    let problems = refused(try_start(&cfg).await);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key.as_deref(), Some("plugins[0].library"));
    assert!(
        problems[0].problem.contains(&missing.display().to_string()),
        "names the path: {:?}",
        problems[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_library_quotes_it_with_the_path_tried_and_a_close_name() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    std::fs::copy(testkit(), plugin_dir.join("libswitchyard_testkit.so")).unwrap();
    let cfg = format!(
        "plugin_dir = \"{}\"\n{}",
        plugin_dir.display(),
        config(&[&plugin_block("kit", "switchyard_testkt", "", "")])
    );
    let problems = refused(try_start(&cfg).await);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = &problems[0];
    assert_eq!(problem.key.as_deref(), Some("plugins[0].library"));
    assert_eq!(
        problem.value,
        Some(json!("switchyard_testkt")),
        "{problem:?}"
    );
    let tried = plugin_dir.join("libswitchyard_testkt.so");
    for quoted in [
        "`switchyard_testkt`".to_owned(),
        tried.display().to_string(),
        "did you mean `switchyard_testkit`?".to_owned(),
    ] {
        assert!(
            problem.problem.contains(&quoted),
            "quotes {quoted}: {problem:?}"
        );
    }

    // A path is suggested as a path, with the close file name.
    let written = format!("{}/libswitchyard_testkits.so", plugin_dir.display());
    let cfg = config(&[&plugin_block("kit", &written, "", "")]);
    let why = problem_keyed(&refused(try_start(&cfg).await), "plugins[0].library");
    let close = format!(
        "did you mean `{}/libswitchyard_testkit.so`?",
        plugin_dir.display()
    );
    assert!(why.contains(&close), "{why}");

    // Nothing close: no suggestion.
    let cfg = format!(
        "plugin_dir = \"{}\"\n{}",
        plugin_dir.display(),
        config(&[&plugin_block("kit", "something_else_entirely", "", "")])
    );
    let why = problem_keyed(&refused(try_start(&cfg).await), "plugins[0].library");
    assert!(why.contains("`something_else_entirely`"), "{why}");
    assert!(!why.contains("did you mean"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_plugin_with_a_newer_minor_version_loads_and_emits() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_library("hello.c", dir.path());
    let head = format!(
        "{}{}",
        channel("greetings"),
        endpoint("/ws/hello", &["greetings"])
    );
    let router = start(&config(&[&head])).await;
    let (mut c, _) = client(&router, "/ws/hello").await;
    router.write_config(&config(&[
        &head,
        &plugin_block("hello", &lib.display().to_string(), "", ""),
    ]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let ev = c.recv().await;
    assert_eq!(ev["type"], "hello.greeted", "{ev}");
    assert_eq!(ev["channel"], "greetings");
    assert_eq!(ev["sequence"], 1);
    assert_eq!(ev["payload"], json!({"text": "hi from C"}));
    assert!(
        ev.get("correlation_id").is_none(),
        "an empty correlation id is none: {ev}"
    );
    let health = health_with_plugin_state(&router, "hello", "running").await;
    assert_eq!(health["status"], "ok", "{health}");
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(caps["event_registry"]["hello.greeted"]["producer"], "hello");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_library_is_loaded_anew_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("librebuilt.so");
    std::fs::copy(testkit(), &lib).unwrap();
    let lib_text = lib.display().to_string();
    let router = start(&config(&[&plugin_block(
        "p",
        &lib_text,
        "",
        "emit_on_start = 1",
    )]))
    .await;
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(caps["event_registry"]["testkit.tick"]["producer"], "p");
    health_with_plugin_state(&router, "p", "running").await;

    // "Rebuild": a new file at the same path (as a linker writes it).
    let fresh = dir.path().join("librebuilt.so.new");
    std::fs::copy(detection(), &fresh).unwrap();
    std::fs::rename(&fresh, &lib).unwrap();
    let port = free_port();
    router.write_config(&config(&[&plugin_block(
        "p",
        &lib_text,
        "",
        &format!("listen = \"127.0.0.1:{port}\""),
    )]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    let registry = &caps["event_registry"];
    assert_eq!(registry["detection.new"]["producer"], "p", "{caps}");
    assert_eq!(registry["batch.closed"]["producer"], "p");
    assert!(registry.get("testkit.tick").is_none(), "{caps}");
    let health = health_with_plugin_state(&router, "p", "running").await;
    assert_eq!(health["status"], "ok", "{health}");
    // It is the detection plugin that runs: its listener answers.
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the new library's listener is up");
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// switchyard check
// ---------------------------------------------------------------------------

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run_check(config_text: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text).unwrap();
    let began = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchyard check");
    let deadline = began + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = began.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        },
        dir,
    )
}

#[test]
fn check_loads_plugins_without_starting_them() {
    // Were `start` called, `stop` would have to run too, and it sleeps 20 s.
    let cfg = config(&[&plugin_block(
        "tk",
        &testkit(),
        "stop_timeout_s = 30",
        "emit_on_start = 3\nstop_delay_ms = 20000",
    )]);
    let (out, _dir) = run_check(&cfg);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.took < Duration::from_secs(10),
        "check took {:?}: was the plugin started?",
        out.took
    );
    assert!(out.stdout.contains("valid"), "{}", out.stdout);
    let registry_line = out
        .stdout
        .lines()
        .find(|l| l.contains("testkit.tick"))
        .unwrap_or_else(|| panic!("the registry lists testkit.tick:\n{}", out.stdout));
    assert!(registry_line.contains("tk"), "{registry_line}");
    assert!(out.stdout.contains("testkit.status"), "{}", out.stdout);
    assert!(out.stdout.contains("alert.created"), "{}", out.stdout);
}

#[test]
fn check_prints_every_problem_with_its_key_and_fails() {
    let bad = BASE
        .replace(
            "name = \"jobs\"\n",
            "name = \"jobs\"\nslow_consumer = \"sometimes\"\n",
        )
        .replace(
            "channels = [\"alerts\", \"jobs\"]",
            "channels = [\"alerts\", \"jobs\", \"nowhere\"]",
        );
    assert_ne!(bad, BASE);
    let (out, _dir) = run_check(&bad);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.code.is_some(), "check did not exit by itself");
    let all = format!("{}{}", out.stdout, out.stderr);
    for key in ["channels[1].slow_consumer", "endpoints[0].channels[2]"] {
        assert!(all.contains(key), "{key} printed:\n{all}");
    }
    assert!(all.contains("sometimes"), "{all}");
    assert!(all.contains("nowhere"), "{all}");
}

#[test]
fn check_reports_a_plugin_that_cannot_load_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libmissing.so");
    let cfg = config(&[&plugin_block(
        "ghost",
        &missing.display().to_string(),
        "",
        "",
    )]);
    let (out, _dir) = run_check(&cfg);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.code.is_some(), "check did not exit by itself");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("plugins[0].library"), "{all}");
    assert!(all.contains(&missing.display().to_string()), "{all}");
}

/// One warning of docs/configuration.md ("Warnings"): the config that
/// causes it, and the text `switchyard check` must print for it.
struct WarningCase {
    what: &'static str,
    config: String,
    printed: &'static str,
}

fn warning_cases() -> Vec<WarningCase> {
    let on_a_new_channel = |channel: &str| {
        format!(
            "\n[[event_types]]\nname = \"incident.opened\"\nchannel = \"{channel}\"\n\
             description = \"Incident\"\n[event_types.payload]\nid = {{ type = \"string\" }}\n"
        )
    };
    vec![
        WarningCase {
            what: "a channel named by a type but not declared",
            config: config(&[&on_a_new_channel("incidents")]),
            printed: "channel `incidents` (named by event type `incident.opened`) is not declared \
                      under [[channels]]; it was created with the default settings",
        },
        WarningCase {
            what: "a type whose channel no endpoint carries",
            config: config(&[&channel("incidents"), &on_a_new_channel("incidents")]),
            printed: "event type `incident.opened` is on channel `incidents`, which no endpoint \
                      carries: its events reach only sinks",
        },
        WarningCase {
            what: "an event type without payload that no enabled plugin declares",
            config: config(&["\n[[event_types]]\nname = \"ghost.appeared\"\n"]),
            printed: "`ghost.appeared` has no `payload` and no enabled plugin declares it, so it \
                      registers nothing",
        },
        WarningCase {
            what: "require_auth on a channel with auth.mode = none",
            config: BASE.replace(
                "name = \"jobs\"\n",
                "name = \"jobs\"\nrequire_auth = true\n",
            ),
            printed: "(jobs): require_auth has no effect while auth.mode = \"none\"",
        },
        WarningCase {
            what: "require_auth on an endpoint with auth.mode = none",
            config: BASE.replace(
                "path = \"/ws/events\"\n",
                "path = \"/ws/events\"\nrequire_auth = true\n",
            ),
            printed: "(/ws/events): require_auth has no effect while auth.mode = \"none\"",
        },
        WarningCase {
            what: "a route to a disabled sink",
            config: config(&[
                &route("tk", &["alert.*"]),
                &plugin_block("tk", &testkit(), "enabled = false", ""),
            ]),
            printed: "sink tk is disabled, so these events go nowhere",
        },
        WarningCase {
            what: "send_queue_bytes below max_event_bytes",
            config: BASE.replace(
                "[server]\n",
                "[server]\nsend_queue_bytes = 4096\nmax_event_bytes = 8192\n",
            ),
            printed: "server.send_queue_bytes (4096) is below server.max_event_bytes (8192): an \
                      event larger than the queue can never be delivered",
        },
        WarningCase {
            what: "redis_url with engine = memory",
            config: format!(
                "{BASE}\n[cluster]\nengine = \"memory\"\nredis_url = \"redis://127.0.0.1:6379\"\n"
            ),
            printed: "cluster.redis_url is ignored while cluster.engine = \"memory\"",
        },
        WarningCase {
            what: "a non-loopback listen with auth on and no TLS",
            config: BASE
                .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"")
                .replace("mode = \"none\"", "mode = \"optional\""),
            printed: "server.listen = \"0.0.0.0:0\" is not loopback and auth is on without \
                      server.tls",
        },
        WarningCase {
            what: "max_connections + 256 over the open-file limit",
            config: BASE.replace("[server]\n", "[server]\nmax_connections = 100000000\n"),
            printed: "server.max_connections (100000000) plus 256 of headroom exceeds the \
                      open-file limit",
        },
    ]
}

#[test]
fn check_prints_every_config_warning_and_passes() {
    // The control: BASE, within this machine's open-file limit, warns of
    // nothing.
    let quiet = BASE.replace("[server]\n", "[server]\nmax_connections = 1000\n");
    let (out, _dir) = run_check(&quiet);
    assert!(out.stdout.contains("warnings: none"), "{}", out.stdout);
    for case in warning_cases() {
        let (out, _dir) = run_check(&case.config);
        let all = format!("{}\n{}", out.stdout, out.stderr);
        assert_eq!(
            out.code,
            Some(0),
            "{}: a warning does not fail check:\n{all}",
            case.what
        );
        let warnings = out
            .stdout
            .split_once("\nwarnings:")
            .map(|(_, w)| w)
            .unwrap_or_else(|| panic!("{}: no warnings section:\n{all}", case.what));
        assert!(
            warnings.contains(case.printed),
            "{}: expected a warning containing {:?}:\n{all}",
            case.what,
            case.printed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panicked_is_restarted_and_its_events_flow_again() {
    let marker = tempfile::tempdir().unwrap();
    let once = marker.path().join("panicked");
    let (router, mut c) = add_testkit_live(&format!(
        "emit_on_start = 3\npanic_in = \"emit\"\npanic_once_file = {:?}",
        once.display().to_string()
    ))
    .await;
    // The first instance panics before emitting; the restarted one emits.
    for n in 1..=3 {
        let tick = c.recv().await;
        assert_eq!(tick["type"], "testkit.tick", "{tick}");
        assert_eq!(tick["payload"]["n"], n);
    }
    let health = health_with_plugin_state(&router, "tk", "running").await;
    assert_eq!(health["plugins"]["tk"]["restarts"], 1, "{health}");
    assert!(once.exists());
    let metrics = router.metrics().await;
    assert!(
        metrics.contains("switchyard_plugin_restarts{plugin=\"tk\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_plugin_up{plugin=\"tk\"} 1"),
        "{metrics}"
    );
    router.shutdown().await;
}

/// A sink instance's queue bound, in events (docs/plugins.md).
const SINK_QUEUE: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_keeps_its_queue_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    // The first deliver panics; the restart (1 s of backoff) then stops the
    // failed instance for 2 s, during which delivery is halted and what is
    // published waits in the queue for the new instance.
    let sink_config = format!(
        "record_to = {:?}\npanic_in = \"deliver\"\npanic_once_file = {:?}\nstop_delay_ms = 2000",
        record.display().to_string(),
        dir.path().join("panicked").display().to_string()
    );
    let cfg = config(&[
        &plugin_block("tk", &testkit(), "stop_timeout_s = 30", &sink_config),
        &route("tk", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    router.publish(&alert("q0")).await;
    health_with_plugin_state(&router, "tk", "failed").await;

    // Publish steadily until the restarted instance runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut published = vec!["q0".to_owned()];
    loop {
        let id = format!("q{}", published.len());
        let (status, body) = router.publish(&alert(&id)).await;
        assert_eq!(status, 202, "{body}");
        published.push(id);
        let (_, health) = router.get("/health").await;
        let tk = &health["plugins"]["tk"];
        if tk["state"] == "running" && tk["restarts"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "tk was not restarted: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = recorded(&record, published.len()).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids, published,
        "every event published around the restart reaches the sink, once, in order, \
         the one the failed instance panicked on first"
    );
    router.shutdown().await;
}

/// Reads `fifo` on a thread of its own, counting lines, until
/// [`FifoReader::finish`]. It opens the FIFO read-write, so it never sees an
/// end of file between two writers (each `deliver` of the testkit opens,
/// writes and closes it) and no writer ever waits for it.
struct FifoReader {
    fifo: std::path::PathBuf,
    done: Arc<AtomicBool>,
    lines: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl FifoReader {
    fn start(fifo: &Path) -> FifoReader {
        let done = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicUsize::new(0));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(fifo)
            .unwrap();
        let (stop, count) = (done.clone(), lines.clone());
        let thread = std::thread::spawn(move || {
            for line in std::io::BufReader::new(file).lines() {
                if line.unwrap().is_empty() && stop.load(Ordering::SeqCst) {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        FifoReader {
            fifo: fifo.to_owned(),
            done,
            lines,
            thread,
        }
    }

    /// Waits (up to 20 s) until `n` lines were read.
    async fn wait_for_lines(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.lines.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "read {} lines, expected {n}",
                self.lines.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops reading (an empty line wakes the reader); returns the lines
    /// read.
    fn finish(self) -> usize {
        self.done.store(true, Ordering::SeqCst);
        let mut wake = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.fifo)
            .unwrap();
        wake.write_all(b"\n").unwrap();
        self.thread.join().unwrap();
        self.lines.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_overflows_a_sink_queue_is_counted_as_sink_overflow() {
    // The sink records to a FIFO nobody reads yet: its first deliver blocks
    // in open(), so nothing serves the queue.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("record.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let sink_config = format!("record_to = {:?}", fifo.display().to_string());
    let cfg = config(&[
        &plugin_block("tk", &testkit(), "", &sink_config),
        &route("tk", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    let (batches, per_batch) = (5, 1000);
    for b in 0..batches {
        let events: Vec<Value> = (0..per_batch)
            .map(|i| alert(&format!("o{b}-{i}")))
            .collect();
        let (status, body) = router.publish(&Value::Array(events)).await;
        assert_eq!(status, 202, "{body}");
    }
    let published = batches * per_batch;
    let overflow = router
        .metric(r#"switchyard_dropped_total{reason="sink_overflow"}"#)
        .await as usize;
    // The queue keeps SINK_QUEUE events; the blocked deliver holds one more
    // if its thread took the first event before the queue filled.
    let kept = published - overflow;
    assert!(
        kept == SINK_QUEUE || kept == SINK_QUEUE + 1,
        "{published} offered, {overflow} counted as sink_overflow, so {kept} kept \
         by a queue of {SINK_QUEUE}"
    );
    // What was kept is delivered once the FIFO is read, and nothing more.
    let reader = FifoReader::start(&fifo);
    reader.wait_for_lines(kept).await;
    router.shutdown().await;
    assert_eq!(reader.finish(), kept, "the kept events reach the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_panicked_is_restarted_and_keeps_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let once = dir.path().join("panicked");
    let sink_config = format!(
        "record_to = {:?}\npanic_in = \"deliver\"\npanic_once_file = {:?}",
        record.display().to_string(),
        once.display().to_string()
    );
    let cfg = config(&[
        &plugin_block("tk", &testkit(), "", &sink_config),
        &route("tk", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    router.publish(&alert("a0")).await;
    health_with_plugin_state(&router, "tk", "failed").await;
    health_with_plugin_state(&router, "tk", "running").await;
    for id in ["a1", "a2"] {
        let (status, body) = router.publish(&alert(id)).await;
        assert_eq!(status, 202, "{body}");
    }
    let lines = recorded(&record, 3).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["a0", "a1", "a2"],
        "the restarted sink is offered the event the failed one panicked on, then what follows"
    );
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// Failures that must not go unseen, events that must not be lost
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sink_keeps_the_event_it_failed_on_and_what_follows_for_its_restart() {
    // The sink cannot write (its folder is missing): its first deliver
    // fails, which marks it failed. That event, and what is routed to it
    // while it waits for its restart, must be kept for the restarted
    // instance (the folder exists by then), not fed to the failed one and
    // lost.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("not-yet");
    let record = folder.join("record.jsonl");
    let sink_config = format!("record_to = {:?}", record.display().to_string());
    let cfg = config(&[
        &plugin_block("tk", &testkit(), "", &sink_config),
        &route("tk", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    let (status, body) = router.publish(&alert("a0")).await;
    assert_eq!(status, 202, "{body}");
    health_with_plugin_state(&router, "tk", "failed").await;
    let published = ["a0", "a1", "a2", "a3", "a4", "a5"];
    for id in &published[1..] {
        let (status, body) = router.publish(&alert(id)).await;
        assert_eq!(status, 202, "{body}");
    }
    std::fs::create_dir(&folder).unwrap();
    let lines = recorded(&record, published.len()).await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["payload"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids, published,
        "the restarted sink gets the event the failed one could not take, then what followed, \
         once, in order"
    );
    let health = health_with_plugin_state(&router, "tk", "running").await;
    assert_eq!(health["plugins"]["tk"]["restarts"], 1, "{health}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_abandoned_mid_deliver_that_fails_later_does_not_fail_its_successor() {
    // The first instance fails while stuck in `deliver`; its restart gives
    // up waiting for it (stop_timeout_s = 1) and starts a second one. When
    // the stuck call finally fails, that failure is the abandoned
    // instance's: it used to mark the running successor failed too, which
    // cost it a needless restart.
    let dir = tempfile::tempdir().unwrap();
    let lib = c_library("stuck_sink.c", dir.path());
    let record = dir.path().join("record.jsonl");
    let cfg = config(&[
        &plugin_block(
            "stuck",
            &lib.display().to_string(),
            "stop_timeout_s = 1",
            &format!("path = {:?}", record.display().to_string()),
        ),
        &route("stuck", &["alert.*"]),
    ]);
    let router = start(&cfg).await;
    let (status, body) = router.publish(&alert("a0")).await;
    assert_eq!(status, 202, "{body}");
    let lines = recorded(&record, 1).await;
    assert_eq!(lines[0]["payload"]["id"], "a0", "the successor got it");
    // A failure of the successor would be restarted after 2 s of backoff.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let health = health_with_plugin_state(&router, "stuck", "running").await;
    assert_eq!(health["plugins"]["stuck"]["restarts"], 1, "{health}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_refused_once_loads_when_rebuilt_at_the_same_path() {
    // An operator points a reload at a plugin built for another ABI; the
    // reload is refused. They rebuild it in place: the next reload must
    // load the new file, not the refused one still mapped at that path.
    let dir = tempfile::tempdir().unwrap();
    let old_abi = c_library("abi_v2.c", dir.path());
    let lib = dir.path().join("libinplace.so");
    std::fs::copy(&old_abi, &lib).unwrap();
    let lib_text = lib.display().to_string();
    let router = start(&config(&[])).await;
    router.write_config(&config(&[&plugin_block(
        "p",
        &lib_text,
        "",
        "emit_on_start = 1",
    )]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("ABI"), "{body}");

    // "Rebuild": a new file at the same path (as a linker writes it).
    let fresh = dir.path().join("libinplace.so.new");
    std::fs::copy(testkit(), &fresh).unwrap();
    std::fs::rename(&fresh, &lib).unwrap();
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "the rebuilt library loads: {body}");
    health_with_plugin_state(&router, "p", "running").await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_that_is_not_json_is_refused_counted_and_logged() {
    let (router, mut c) = add_testkit_live("emit_json_on_start = \"{not json\"").await;
    let msg = c.recv().await;
    assert_eq!(msg["type"], "testkit.status", "{msg}");
    assert_eq!(
        msg["payload"],
        json!({"attempt": "emit_json", "status": "invalid_payload"})
    );
    let refused = router
        .metric(r#"switchyard_events_refused_total{reason="invalid_json"}"#)
        .await;
    assert_eq!(
        refused, 1.0,
        "a refused emit is counted like a refused publish"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removing_a_producer_and_its_sink_delivers_the_producers_final_events() {
    // Detection closes its open batches inside `stop`; those final events
    // are accepted under the old configuration, whose route sends them to
    // the audit sink that this same reload removes. As at shutdown, the
    // sink must get them, not drop them as `sink_shutdown`.
    let port = free_port();
    let files = tempfile::tempdir().unwrap();
    let audit = files.path().join("audit.log");
    let channels = format!("{}{}", channel("detections"), channel("scene_changes"));
    let sink = format!(
        "\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\n[plugins.config]\npath = \"{}\"\n",
        plugin("switchyard_audit_log"),
        audit.display()
    );
    let cfg = config(&[
        &channels,
        &plugin_block(
            "detection",
            &detection(),
            "",
            &format!("listen = \"127.0.0.1:{port}\"\nbatch_idle_s = 60\nbatch_window_s = 120\nprogress_interval_ms = 60000"),
        ),
        &sink,
        &route("audit", &["detection.*", "batch.*"]),
    ]);
    let router = start(&cfg).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_line(&mut tcp, &detection_line("lobby", "person")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains("detection.new")
    {
        assert!(
            Instant::now() < deadline,
            "the detection never reached the sink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.write_config(&config(&[&channels]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let dropped = router
        .metric(r#"switchyard_dropped_total{reason="sink_shutdown"}"#)
        .await;
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let types: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["type"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        (types.as_slice(), dropped),
        (
            &[
                "batch.opened",
                "detection.new",
                "detection.batch",
                "batch.closed"
            ]
            .map(String::from)[..],
            0.0
        ),
        "the producer's final events reach the sink it fed: {text}"
    );
    router.shutdown().await;
}

/// `/health` answers while a reload creates a slow instance: the host does
/// not hold its table of instances across `create`, so an orchestrator's
/// probe does not take the router for dead during a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_a_reload_creates_a_slow_instance() {
    let router = start(&config(&[])).await;
    router.write_config(&config(&[&plugin_block(
        "slow",
        &testkit(),
        "",
        "create_delay_ms = 3000",
    )]));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        let (status, body) = router.get("/health").await;
        (status, body, asked.elapsed())
    };
    let ((reloaded, reply), (status, body, took)) = tokio::join!(router.reload(), probe);
    assert_eq!(reloaded, 200, "{reply}");
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_millis(1500),
        "/health took {took:?} while the reload's create ran"
    );
    router.shutdown().await;
}
