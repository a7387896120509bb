//! The routing core without any socket: a router built from a real config,
//! connections opened directly, events published, and each connection's
//! outbox read back. This is what keeps the transport a thin layer.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};
use switchyard::config;
use switchyard::connection::outbox::Written;
use switchyard::connection::ConnRef;
use switchyard::registry::Registry;
use switchyard::router::{Incoming, Offered, Origin, Router, Sink, Snapshot};
use switchyard::text::Text;

const CONFIG: &str = r#"
[[channels]]
name = "alerts"

[[channels]]
name = "jobs"

[[endpoints]]
path = "/ws/events"
channels = ["alerts", "jobs"]

[[endpoints]]
path = "/ws/jobs"
channels = ["jobs"]

[[event_types]]
name = "alert.created"
channel = "alerts"
[event_types.payload]
id = { type = "string", required = true }

[[event_types]]
name = "job.progress"
channel = "jobs"
aliases = ["job_progress"]
[event_types.payload]
job_id = { type = "string", required = true }

[[plugins]]
name = "recorder"
library = "/nonexistent/recorder.so"
enabled = false

[[routes]]
sink = "recorder"
events = ["alert.*"]
"#;

/// A sink that remembers what it was offered.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn offer(&self, event: &Text) -> Offered {
        self.0.lock().push(event.to_string());
        Offered::Queued
    }
}

fn snapshot(toml: &str, version: u64, sinks: BTreeMap<String, Arc<dyn Sink>>) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let loaded = config::load_with_env(&path, Vec::new()).unwrap();
    let built = Registry::build(&loaded.config, &[]).unwrap();
    Snapshot {
        version,
        loaded_at: chrono::Utc::now(),
        config: Arc::new(loaded.config),
        registry: built.registry,
        warnings: built.warnings,
        sinks,
    }
}

fn connect(router: &Router, endpoint: &str, events: Option<&[&str]>) -> ConnRef {
    let events = events.map(|e| e.iter().map(|s| s.to_string()).collect());
    support::open_direct(router, endpoint, events, None)
}

/// Everything queued for a connection right now, as JSON.
async fn drain(conn: &ConnRef) -> Vec<Value> {
    let batch = conn.outbox.next_batch().await;
    // This test is the transport: what it took is written.
    conn.outbox.release(Written::all(&batch.frames));
    batch
        .frames
        .iter()
        .map(|f| serde_json::from_str(f.text()).unwrap())
        .collect()
}

fn alert(id: &str) -> Incoming {
    Incoming {
        type_name: "alert.created".into(),
        payload: json!({ "id": id }),
        correlation_id: None,
        idempotency_key: None,
    }
}

fn types(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn fan_out_follows_subscriptions_and_endpoints() {
    let router = Router::new(snapshot(CONFIG, 1, BTreeMap::new()));
    let all = connect(&router, "/ws/events", None);
    let alerts = connect(
        &router,
        "/ws/events",
        Some(&["alert.*", "alert.created", "*"]),
    );
    let jobs_only = connect(&router, "/ws/jobs", None);
    for c in [&all, &alerts, &jobs_only] {
        drain(c).await;
    }
    router
        .publish(vec![alert("a1")], &Origin::Http)
        .wait()
        .unwrap();
    let job = Incoming {
        type_name: "job_progress".into(),
        payload: json!({"job_id": "j"}),
        correlation_id: None,
        idempotency_key: None,
    };
    router.publish(vec![job], &Origin::Http).wait().unwrap();
    assert_eq!(types(&drain(&all).await), ["alert.created", "job.progress"]);
    let got = drain(&alerts).await;
    assert_eq!(
        types(&got),
        ["alert.created", "job.progress"],
        "`*` matches jobs too, each event once"
    );
    assert_eq!(
        types(&drain(&jobs_only).await),
        ["job.progress"],
        "alerts are not on /ws/jobs"
    );
}

#[tokio::test]
async fn a_subscribed_reply_means_the_next_event_is_routed_by_it() {
    let router = Router::new(snapshot(CONFIG, 1, BTreeMap::new()));
    let c = connect(&router, "/ws/events", Some(&[]));
    drain(&c).await;
    router.subscribe(&c, &["alert.created".into()], None, &Some(json!(1)));
    router
        .publish(vec![alert("a1")], &Origin::Http)
        .wait()
        .unwrap();
    let got = drain(&c).await;
    assert_eq!(types(&got), ["subscribed", "alert.created"]);
    assert_eq!(got[0]["id"], 1);
    router.unsubscribe(&c, None, &None);
    router
        .publish(vec![alert("a2")], &Origin::Http)
        .wait()
        .unwrap();
    assert_eq!(types(&drain(&c).await), ["unsubscribed"]);
}

#[tokio::test]
async fn reload_keeps_sequences_and_announces_new_channels() {
    let router = Router::new(snapshot(CONFIG, 1, BTreeMap::new()));
    let c = connect(&router, "/ws/jobs", None);
    drain(&c).await;
    router
        .publish(vec![alert("a1"), alert("a2")], &Origin::Http)
        .wait()
        .unwrap();
    let before = router.positions()["alerts"].clone();
    let wider = CONFIG.replace(r#"channels = ["jobs"]"#, r#"channels = ["jobs", "alerts"]"#);
    router.apply(snapshot(&wider, 2, BTreeMap::new()));
    assert_eq!(
        router.positions()["alerts"],
        before,
        "a kept channel keeps epoch and sequence"
    );
    let announced = drain(&c).await;
    assert_eq!(types(&announced), ["connection.channels"]);
    assert_eq!(announced[0]["payload"]["channels"]["alerts"]["sequence"], 2);
    let stamps = router
        .publish(vec![alert("a3")], &Origin::Http)
        .wait()
        .unwrap();
    assert_eq!(stamps[0].sequence, 3);
    assert_eq!(drain(&c).await[0]["sequence"], 3);
}

#[tokio::test]
async fn sinks_get_routed_events_but_never_their_own() {
    let recorder = Arc::new(Recorder::default());
    let sinks: BTreeMap<String, Arc<dyn Sink>> =
        [("recorder".to_owned(), recorder.clone() as Arc<dyn Sink>)].into();
    let router = Router::new(snapshot(CONFIG, 1, sinks));
    router
        .publish(vec![alert("from-http")], &Origin::Http)
        .wait()
        .unwrap();
    let job = Incoming {
        type_name: "job.progress".into(),
        payload: json!({"job_id": "j"}),
        correlation_id: None,
        idempotency_key: None,
    };
    router.publish(vec![job], &Origin::Http).wait().unwrap();
    let seen = recorder.0.lock().clone();
    assert_eq!(seen.len(), 1, "only alert.* is routed: {seen:?}");
    assert!(seen[0].contains("from-http"));
}

#[tokio::test]
async fn a_batch_is_refused_whole() {
    let router = Router::new(snapshot(CONFIG, 1, BTreeMap::new()));
    let bad = Incoming {
        type_name: "alert.created".into(),
        payload: json!({"id": 5}),
        correlation_id: None,
        idempotency_key: None,
    };
    assert!(router
        .publish(vec![alert("ok"), bad], &Origin::Http)
        .wait()
        .is_err());
    assert_eq!(
        router.positions()["alerts"].1,
        0,
        "nothing of the batch was stamped"
    );
}
