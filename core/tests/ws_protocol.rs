//! The WebSocket protocol against a real router over loopback.

mod support;

use serde_json::json;
use support::{start, BASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_then_receive_all_until_first_subscribe() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events").await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["payload"]["endpoint"], "/ws/events");
    assert_eq!(hello["payload"]["protocol_version"], 1);
    assert_eq!(hello["payload"]["channels"]["alerts"]["sequence"], 0);
    assert!(
        hello["payload"]["channels"]["alerts"]["epoch"]
            .as_str()
            .unwrap()
            .len()
            >= 1
    );

    let (status, body) = router
        .publish(&json!({"type": "job_progress", "payload": {"job_id": "j1", "percent": 50}, "correlation_id": "req-1"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let ev = c.recv().await;
    assert_eq!(
        ev["type"], "job.progress",
        "aliases resolve to the canonical name"
    );
    assert_eq!(ev["channel"], "jobs");
    assert_eq!(ev["sequence"], 1);
    assert_eq!(ev["correlation_id"], "req-1");
    assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'));

    c.send(&json!({"action": "subscribe", "events": ["alert.*"], "id": "s1"}))
        .await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["id"], "s1");
    assert_eq!(reply["events"], json!(["alert.*"]));
    router
        .publish(&json!({"type": "job.progress", "payload": {"job_id": "j2"}}))
        .await;
    router
        .publish(&json!({"type": "alert.created", "payload": {"id": "a", "severity": "low"}}))
        .await;
    let ev = c.recv().await;
    assert_eq!(
        ev["type"], "alert.created",
        "the job event is no longer delivered: {ev}"
    );
    router.shutdown().await;
}
