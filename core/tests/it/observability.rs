//! `/metrics` and the coverage report after a scripted scenario.

use crate::support;

use serde_json::json;
use support::{sample, start, BASE};

/// Upgrades on a path that is not an endpoint (refused with 404).
async fn knock(router: &support::Router, path: &str) {
    let url = format!("ws://{}{path}", router.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_reports_the_gaps() {
    let router = start(BASE).await;
    let mut alerts = router.ws("/ws/events?events=alert.*,alret.*").await;
    alerts.recv_type("subscribed").await;
    let mut typo = router.ws("/ws/events?events=alret.*").await;
    typo.recv_type("subscribed").await;
    knock(&router, "/ws/detections").await;
    knock(&router, "/ws/detections").await;
    knock(&router, "/ws/evnts").await;
    for id in ["a1", "a2"] {
        let (status, _) = router
            .publish(&json!({"type": "alert.created", "payload": {"id": id, "severity": "low"}}))
            .await;
        assert_eq!(status, 202);
    }
    router
        .publish(&json!({"type": "job.progress", "payload": {"job_id": "j"}}))
        .await;
    alerts.recv_type("alert.created").await;
    alerts.recv_type("alert.created").await;

    let (status, report) = router.get("/api/websocket/coverage").await;
    assert_eq!(status, 200);
    let created = &report["types"]["alert.created"];
    assert_eq!(created["produced"], 2);
    assert_eq!(created["subscribers"], 1);
    assert_eq!(created["delivered"], 2);
    assert!(created["last_produced_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(report["types"]["job.progress"]["subscribers"], 0);
    assert_eq!(
        report["produced_without_subscribers"],
        json!(["job.progress"])
    );
    assert_eq!(
        report["registered_never_produced"],
        json!(["alert.resolved"])
    );
    assert_eq!(
        report["patterns_matching_nothing"],
        json!([{"pattern": "alret.*", "connections": 2}])
    );
    assert_eq!(
        report["unknown_endpoints_requested"],
        json!([{"path": "/ws/detections", "requests": 2}, {"path": "/ws/evnts", "requests": 1}])
    );
    assert!(report.get("truncated").is_none());
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    client.recv_type("connection.established").await;
    router
        .publish(&json!({"type": "alert.created", "payload": {"id": "a", "severity": "low"}}))
        .await;
    router
        .publish(&json!({"type": "alert.created", "payload": {}}))
        .await;
    router
        .publish(&json!({"type": "nope.nothing", "payload": {}}))
        .await;
    client.recv_type("alert.created").await;
    // The watcher tries the broken file too: wait for it, so that the count
    // below is exact (its refusal and the admin route's).
    router
        .settle_after(|| router.write_config("not = [toml"))
        .await;
    let (status, _) = router.reload().await;
    assert_eq!(status, 422);

    let response = reqwest::get(router.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        r#"switchyard_events_accepted_total{type="alert.created"}"#,
        1.0,
    );
    expect(
        r#"switchyard_events_refused_total{reason="invalid_payload"}"#,
        1.0,
    );
    expect(
        r#"switchyard_events_refused_total{reason="unknown_type"}"#,
        1.0,
    );
    expect(r#"switchyard_deliveries_total{channel="alerts"}"#, 1.0);
    expect(r#"switchyard_connections{endpoint="/ws/events"}"#, 1.0);
    expect(r#"switchyard_config_reloads_total{result="refused"}"#, 2.0);
    expect("switchyard_delivery_latency_seconds_count", 1.0);
    router.shutdown().await;
}
