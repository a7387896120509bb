//! The `summary` plugin through the real router: its cdylib loaded through
//! the ABI, fed by a `[[routes]]` sink route, its `summary.hourly` and
//! `summary.daily` reaching a real WebSocket client (docs/configuration.md,
//! "summary").

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{plugin, start, Client, BASE};

/// Hourly and daily periods of the test instance, in seconds.
const HOURLY_S: u64 = 2;
const DAILY_S: u64 = 4;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sleeps until `offset_ms` after the next multiple of `period_s` seconds
/// since the epoch.
async fn sleep_past_boundary(period_s: u64, offset_ms: i64) {
    let period = period_s as i64 * 1000;
    let now = now_ms();
    let target = (now / period + 1) * period + offset_ms;
    tokio::time::sleep(Duration::from_millis((target - now) as u64)).await;
}

fn ms(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a timestamp string"))
        .expect("RFC 3339")
        .timestamp_millis()
}

fn config(library: &str) -> String {
    format!(
        r#"{BASE}
[[channels]]
name = "summaries"

[[channels]]
name = "cameras"

[[endpoints]]
path = "/ws/summary"
channels = ["alerts", "cameras", "summaries"]

[[event_types]]
name = "camera.alarm"
channel = "cameras"
description = "A camera raised an alarm"
[event_types.payload]
camera_id = {{ type = "string", required = true }}
severity = {{ type = "string", enum = ["low", "medium", "high", "critical"] }}

[[plugins]]
name = "summary"
library = "{library}"
[plugins.config]
hourly_period_s = {HOURLY_S}
daily_period_s = {DAILY_S}

[[routes]]
sink = "summary"
events = ["alert.*", "camera.*", "summary.*"]
"#
    )
}

fn alert(id: &str, severity: &str) -> Value {
    json!({"type": "alert.created", "payload": {"id": id, "severity": severity}})
}

fn camera(camera_id: &str, severity: &str) -> Value {
    json!({"type": "camera.alarm", "payload": {"camera_id": camera_id, "severity": severity}})
}

/// What a summary over `events` (envelopes) in `[start, end)` must say.
fn expected(events: &[Value], start: i64, end: i64) -> Value {
    let mut by_type = BTreeMap::<String, u64>::new();
    let mut by_camera = BTreeMap::<String, u64>::new();
    let mut by_severity = BTreeMap::<String, u64>::new();
    let mut total = 0;
    for e in events {
        let at = ms(&e["timestamp"]);
        if at < start || at >= end {
            continue;
        }
        total += 1;
        *by_type
            .entry(e["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if let Some(c) = e["payload"]["camera_id"].as_str() {
            *by_camera.entry(c.to_owned()).or_default() += 1;
        }
        if let Some(s) = e["payload"]["severity"].as_str() {
            *by_severity.entry(s.to_owned()).or_default() += 1;
        }
    }
    json!({"total": total, "by_type": by_type, "by_camera": by_camera, "by_severity": by_severity})
}

fn counts_of(summary: &Value) -> Value {
    let p = &summary["payload"];
    json!({"total": p["total"], "by_type": p["by_type"], "by_camera": p["by_camera"],
           "by_severity": p["by_severity"]})
}

async fn publish_all(router: &support::Router, events: &[Value]) {
    let (status, body) = router.publish(&Value::Array(events.to_vec())).await;
    assert_eq!(status, 202, "publish: {body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_count_routed_events_per_aligned_period() {
    let library = plugin("switchyard_summary");
    // Start a little after a boundary, so that the first period is partial
    // (a start exactly on a boundary would not be).
    sleep_past_boundary(HOURLY_S, 300).await;
    let router = start(&config(&library)).await;
    let mut client: Client = router.ws("/ws/summary").await;
    client.established().await;

    // The first (partial) period: three alerts, two camera alarms, and a
    // job that no route sends to the summary.
    publish_all(
        &router,
        &[
            alert("a-1", "high"),
            alert("a-2", "low"),
            camera("front", "high"),
            alert("a-3", "high"),
            camera("back", "low"),
            json!({"type": "job.progress", "payload": {"job_id": "j-1", "percent": 5}}),
        ],
    )
    .await;
    // Right after the next boundary, so that the batch is not split.
    sleep_past_boundary(HOURLY_S, 100).await;
    publish_all(
        &router,
        &[
            alert("b-1", "critical"),
            alert("b-2", "medium"),
            camera("front", "medium"),
            alert("b-3", "medium"),
            alert("b-4", "low"),
        ],
    )
    .await;
    let published_until = now_ms();

    // Collect the routed events (as the client saw them: their timestamps
    // decide their period) and the summaries until both kinds cover them.
    let mut events = Vec::new();
    let mut hourly = Vec::new();
    let mut daily = Vec::new();
    let covered = |s: &Vec<Value>| {
        s.last()
            .is_some_and(|l: &Value| ms(&l["payload"]["period_end"]) > published_until)
    };
    while !(covered(&hourly) && covered(&daily)) {
        let msg = client.recv().await;
        match msg["type"].as_str().unwrap_or_default() {
            "summary.hourly" => hourly.push(msg),
            "summary.daily" => daily.push(msg),
            "alert.created" | "camera.alarm" => events.push(msg),
            other => panic!("unexpected {other}: {msg}"),
        }
    }
    assert_eq!(events.len(), 10, "every routed event reached the client");

    for (kind, list, period_s) in [("hourly", &hourly, HOURLY_S), ("daily", &daily, DAILY_S)] {
        let period = period_s as i64 * 1000;
        let mut counted = 0;
        for (i, s) in list.iter().enumerate() {
            let p = &s["payload"];
            assert_eq!(s["channel"], "summaries", "{s}");
            let (from, to) = (ms(&p["period_start"]), ms(&p["period_end"]));
            assert_eq!(from % period, 0, "{kind} aligned to the period: {s}");
            assert_eq!(to - from, period, "{kind} period length: {s}");
            if i > 0 {
                let before = ms(&list[i - 1]["payload"]["period_end"]);
                assert_eq!(from, before, "{kind} periods follow each other: {s}");
            }
            assert_eq!(
                p["partial"],
                i == 0,
                "{kind}: only the first is partial: {s}"
            );
            assert_eq!(counts_of(s), expected(&events, from, to), "{kind}: {s}");
            assert!(
                p["by_type"].get("summary.hourly").is_none(),
                "summaries are never counted: {s}"
            );
            counted += p["total"].as_u64().unwrap();
        }
        assert_eq!(counted, 10, "{kind} summaries counted every routed event");
    }
    // The second batch was published right after a boundary: its period
    // holds all five of its events, and nothing else.
    let b1 = events
        .iter()
        .find(|e| e["payload"]["id"] == "b-1")
        .expect("b-1 was routed");
    let at = ms(&b1["timestamp"]);
    let second = hourly
        .iter()
        .find(|s| ms(&s["payload"]["period_start"]) <= at && at < ms(&s["payload"]["period_end"]))
        .unwrap_or_else(|| panic!("no hourly summary with the second batch: {hourly:?}"));
    assert_eq!(second["payload"]["total"], 5, "{second}");
    assert_eq!(
        second["payload"]["by_severity"],
        json!({"critical": 1, "medium": 3, "low": 1}),
        "{second}"
    );
    assert_eq!(second["payload"]["by_camera"], json!({"front": 1}));
    assert_eq!(
        second["payload"]["by_type"],
        json!({"alert.created": 4, "camera.alarm": 1})
    );
    assert_eq!(second["payload"]["partial"], false);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_declares_its_types_and_refuses_unknown_keys() {
    let library = plugin("switchyard_summary");
    let router = start(&config(&library)).await;
    let (status, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(status, 200);
    for t in ["summary.hourly", "summary.daily"] {
        let entry = &caps["event_registry"][t];
        assert_eq!(entry["channel"], "summaries", "{t}: {entry}");
        assert_eq!(entry["producer"], "summary", "{t}: {entry}");
    }
    // A typo in the plugin's table refuses the reload, naming the key.
    router.write_config(&config(&library).replace("hourly_period_s", "hourly_period"));
    let (status, body) = router.reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("hourly_period"), "{body}");
    router.shutdown().await;
}
