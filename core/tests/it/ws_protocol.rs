//! The WebSocket protocol against a real router over loopback.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::{alert, assert_error, job, start, with_server, Client, Router, BASE};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

/// BASE plus a `system` channel carried only by a second endpoint `/ws/system`.
fn two_endpoints() -> String {
    format!(
        r#"{BASE}
[[channels]]
name = "system"
history = 100

[[endpoints]]
path = "/ws/system"
channels = ["system"]

[[event_types]]
name = "system.status"
channel = "system"
description = "System status"
[event_types.payload]
state = {{ type = "string", required = true }}
"#
    )
}

fn resolved(id: &str) -> Value {
    json!({"type": "alert.resolved", "payload": {"id": id}})
}

fn status(state: &str) -> Value {
    json!({"type": "system.status", "payload": {"state": state}})
}

/// Connects and returns the client with its `connection.established`.
async fn connect(router: &Router, path: &str) -> (Client, Value) {
    let mut c = router.ws(path).await;
    let hello = c.established().await;
    (c, hello)
}

/// The epoch of `channel` as announced in `hello`.
fn epoch(hello: &Value, channel: &str) -> String {
    hello["payload"]["channels"][channel]["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch for {channel} in {hello}"))
        .to_owned()
}

/// A JSON array of strings, sorted, for order-free comparison.
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().expect("strings").to_owned())
        .collect();
    out.sort();
    out
}

fn strings(items: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}

/// Reads messages up to and including `subscribed`; returns the messages
/// before it and the reply.
async fn until_subscribed(c: &mut Client) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let msg = c.recv().await;
        if msg["type"] == "subscribed" {
            return (before, msg);
        }
        before.push(msg);
    }
}

/// The ping round trip: proves the connection is open and working.
async fn assert_alive(c: &mut Client, id: Value) {
    let pong = c.request(json!({"action": "ping", "id": id.clone()})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], id, "{pong}");
    assert!(
        pong["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{pong}"
    );
}

fn assert_event(ev: &Value, ty: &str, channel: &str, sequence: u64) {
    assert_eq!(ev["type"], ty, "{ev}");
    assert_eq!(ev["channel"], channel, "{ev}");
    assert_eq!(ev["sequence"], sequence, "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_then_receive_all_until_first_subscribe() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events").await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["payload"]["endpoint"], "/ws/events");
    assert_eq!(hello["payload"]["protocol_version"], 1);
    assert_eq!(hello["payload"]["channels"]["alerts"]["sequence"], 0);
    assert!(!hello["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .is_empty());

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

// ---------------------------------------------------------------------------
// connection.established
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_carries_identity_and_channel_positions() {
    let router = start(&with_server("heartbeat_interval_s = 7")).await;
    for i in 0..3 {
        router.publish_ok(&alert(&format!("a{i}"))).await;
    }
    router.publish_ok(&job("j0")).await;

    let (mut c, hello) = connect(&router, "/ws/events").await;
    let p = &hello["payload"];
    let id = p["connection_id"].as_str().expect("connection_id string");
    assert!(!id.is_empty(), "{hello}");
    assert_eq!(p["endpoint"], "/ws/events");
    assert_eq!(p["protocol_version"], 1);
    assert_eq!(p["heartbeat_interval_s"], 7, "from the config: {hello}");
    assert!(p["user"].is_null(), "anonymous: {hello}");
    assert!(p["expires_at"].is_null(), "anonymous: {hello}");
    assert!(p.get("user").is_some() && p.get("expires_at").is_some());
    assert!(
        hello["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{hello}"
    );

    let channels = p["channels"].as_object().expect("channels object");
    let mut names: Vec<&String> = channels.keys().collect();
    names.sort();
    assert_eq!(names, ["alerts", "jobs"], "{hello}");
    assert_eq!(channels["alerts"]["sequence"], 3, "last assigned: {hello}");
    assert_eq!(channels["jobs"]["sequence"], 1, "last assigned: {hello}");
    for name in ["alerts", "jobs"] {
        let e = epoch(&hello, name);
        assert!(
            (1..=32).contains(&e.len())
                && e.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'),
            "epoch {e:?} is 1-32 chars of [A-Za-z0-9_-]"
        );
    }

    // The next event continues the announced position.
    router.publish_ok(&alert("a3")).await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 4);

    // Another connection gets another id, and the same epochs.
    let (_c2, hello2) = connect(&router, "/ws/events").await;
    assert_ne!(hello2["payload"]["connection_id"], p["connection_id"]);
    assert_eq!(epoch(&hello2, "alerts"), epoch(&hello, "alerts"));
    assert_eq!(hello2["payload"]["channels"]["alerts"]["sequence"], 4);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_lists_only_the_endpoints_channels() {
    let router = start(&two_endpoints()).await;
    router.publish_ok(&status("ok")).await;
    let (_c, hello) = connect(&router, "/ws/system").await;
    assert_eq!(hello["payload"]["endpoint"], "/ws/system");
    let channels = hello["payload"]["channels"].as_object().unwrap();
    assert_eq!(channels.keys().collect::<Vec<_>>(), ["system"], "{hello}");
    assert_eq!(channels["system"]["sequence"], 1);

    let (_e, hello) = connect(&router, "/ws/events").await;
    let channels = hello["payload"]["channels"].as_object().unwrap();
    assert!(!channels.contains_key("system"), "{hello}");
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// ?events= at connect
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_events_are_held_and_answered_by_subscribed() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events?events=alert.*,job_progress").await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["action"], "subscribed", "{reply}");
    assert_eq!(
        sorted(&reply["events"]),
        strings(&["alert.*", "job.progress"]),
        "aliases are held as the canonical name: {reply}"
    );
    assert_eq!(reply["warnings"], json!([]), "{reply}");
    assert!(
        reply.get("recovery").is_none(),
        "recovery only with since: {reply}"
    );

    router.publish_ok(&job("j1")).await;
    let ev = c.recv().await;
    assert_event(&ev, "job.progress", "jobs", 1);
    router.publish_ok(&alert("a1")).await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 1);
    assert_eq!(ev["payload"], json!({"id": "a1", "severity": "low"}));

    // Only the held patterns: a pattern-restricted connection.
    let (mut d, _) = connect(&router, "/ws/events?events=job.progress").await;
    let reply = d.recv().await;
    assert_eq!(reply["events"], json!(["job.progress"]));
    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j2")).await;
    let ev = d.recv().await;
    assert_event(&ev, "job.progress", "jobs", 2);
    d.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_subscribed_comes_before_any_live_event() {
    let router = start(BASE).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let url = router.url("/api/events");
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = http.post(&url).json(&alert(&format!("p{n}"))).send().await;
                assert_eq!(r.unwrap().status().as_u16(), 202);
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        let (mut c, hello) = connect(&router, "/ws/events?events=alert.*").await;
        let start_seq = hello["payload"]["channels"]["alerts"]["sequence"]
            .as_u64()
            .unwrap();
        let reply = c.recv().await;
        assert_eq!(
            reply["type"], "subscribed",
            "subscribed is the first message after established: {reply}"
        );
        assert_eq!(reply["events"], json!(["alert.*"]));
        for k in 1..=3 {
            let ev = c.recv().await;
            assert_event(&ev, "alert.created", "alerts", start_seq + k);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.await.unwrap();
    assert!(sent > 0);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_malformed_patterns_get_one_error_before_subscribed() {
    let router = start(BASE).await;
    let (mut c, _) = connect(
        &router,
        "/ws/events?events=*.created,alert.*,alert*,a.b.*,ALERT.created",
    )
    .await;
    let (before, reply) = until_subscribed(&mut c).await;
    assert_eq!(
        before.len(),
        1,
        "one error names every malformed pattern: {before:?}"
    );
    assert_error(&before[0], "invalid_pattern");
    assert_eq!(
        before[0]["payload"]["patterns"],
        json!(["*.created", "alert*", "a.b.*", "ALERT.created"])
    );
    assert_eq!(before[0]["payload"]["refused"], 4);
    assert_eq!(reply["events"], json!(["alert.*"]), "{reply}");

    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 1);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_empty_events_subscribes_to_none() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events?events=").await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["events"], json!([]), "{reply}");
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&resolved("a1")).await;
    c.expect_silence(QUIET).await;
    assert_alive(&mut c, json!("still-open")).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_patterns_beyond_max_patterns_get_too_many_patterns() {
    let router = start(&with_server("max_patterns = 2")).await;
    // The malformed one is not counted towards the bound.
    let (mut c, _) = connect(
        &router,
        "/ws/events?events=*.x,alert.created,job.progress,alert.resolved,alert.*",
    )
    .await;
    let (before, reply) = until_subscribed(&mut c).await;
    let mut codes: Vec<&str> = before
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "error", "{m}");
            m["payload"]["code"].as_str().unwrap()
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        ["invalid_pattern", "too_many_patterns"],
        "one invalid_pattern, one too_many_patterns: {before:?}"
    );
    assert_eq!(
        sorted(&reply["events"]),
        strings(&["alert.created", "job.progress"]),
        "{reply}"
    );

    // Over the bound later too: the error, and nothing more held.
    let err = c
        .request(json!({"action": "subscribe", "events": ["alert.*"], "id": 9}))
        .await;
    assert_error(&err, "too_many_patterns");
    assert_eq!(err["id"], 9);
    let reply = c.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["id"], 9);
    assert_eq!(
        sorted(&reply["events"]),
        strings(&["alert.created", "job.progress"])
    );

    router.publish_ok(&resolved("r1")).await;
    router.publish_ok(&alert("a1")).await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 2);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// subscribe / unsubscribe replies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_replies_list_what_is_held() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    let r = c
        .request(json!({"action": "subscribe", "events": ["alert.created"]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["action"], "subscribed", "{r}");
    assert_eq!(r["events"], json!(["alert.created"]));
    assert_eq!(r["warnings"], json!([]));
    assert!(r.get("id").is_none(), "no id asked, none echoed: {r}");

    let r = c
        .request(json!({"action": "subscribe", "events": ["job.progress", "alert.*"]}))
        .await;
    assert_eq!(
        sorted(&r["events"]),
        strings(&["alert.*", "alert.created", "job.progress"]),
        "all patterns now held: {r}"
    );

    let r = c
        .request(json!({"action": "unsubscribe", "events": ["alert.created"]}))
        .await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["action"], "unsubscribed", "{r}");
    assert_eq!(
        sorted(&r["events"]),
        strings(&["alert.*", "job.progress"]),
        "patterns still held: {r}"
    );

    let r = c.request(json!({"action": "unsubscribe"})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["events"], json!([]), "{r}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_subscribe_and_unsubscribe_forms() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(
            json!({"type": "subscribe", "event_types": ["alert.*", "job_progress"], "id": "L1"}),
        )
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["action"], "subscribed", "{r}");
    assert_eq!(r["id"], "L1");
    assert_eq!(sorted(&r["events"]), strings(&["alert.*", "job.progress"]));
    assert_eq!(r["warnings"], json!([]));

    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);

    let r = c
        .request(json!({"type": "unsubscribe", "event_types": ["alert.*"], "id": "L2"}))
        .await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["action"], "unsubscribed", "{r}");
    assert_eq!(r["id"], "L2");
    assert_eq!(r["events"], json!(["job.progress"]));

    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j1")).await;
    assert_event(&c.recv().await, "job.progress", "jobs", 1);
    c.expect_silence(QUIET).await;

    // The legacy ping form.
    let pong = c.request(json!({"type": "ping", "id": 3})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], 3);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_echoed_on_replies_and_on_errors() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    let r = c
        .request(json!({"action": "subscribe", "events": ["alert.*"], "id": "sub-1"}))
        .await;
    assert_eq!(r["type"], "subscribed");
    assert_eq!(r["id"], "sub-1", "string id: {r}");

    let r = c
        .request(json!({"action": "unsubscribe", "events": ["alert.*"], "id": 12345}))
        .await;
    assert_eq!(r["type"], "unsubscribed");
    assert_eq!(r["id"], 12345, "integer id: {r}");

    assert_alive(&mut c, json!(0)).await;
    assert_alive(&mut c, json!("p")).await;

    // Errors caused by a message echo its id.
    let e = c.request(json!({"action": "dance", "id": "d-1"})).await;
    assert_error(&e, "unknown_action");
    assert_eq!(e["id"], "d-1", "{e}");

    let e = c
        .request(json!({"action": "subscribe", "events": ["*.created", "job.progress"], "id": 42}))
        .await;
    assert_error(&e, "invalid_pattern");
    assert_eq!(e["id"], 42, "{e}");
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["id"], 42, "{r}");
    assert_eq!(r["events"], json!(["job.progress"]));

    // Without an id, none is echoed.
    let pong = c.request(json!({"action": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert!(pong.get("id").is_none(), "{pong}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_action_and_type_is_read_by_action() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    let r = c
        .request(json!({"action": "ping", "type": "subscribe", "events": ["alert.*"], "id": 1}))
        .await;
    assert_eq!(r["type"], "pong", "read by action: {r}");
    assert_eq!(r["id"], 1);

    let r = c
        .request(
            json!({"action": "subscribe", "type": "ping", "events": ["job.progress"], "id": 2}),
        )
        .await;
    assert_eq!(r["type"], "subscribed", "read by action: {r}");
    assert_eq!(r["id"], 2);
    assert_eq!(
        r["events"],
        json!(["job.progress"]),
        "the ping before held nothing: {r}"
    );

    let r = c
        .request(json!({"action": "unsubscribe", "type": "subscribe", "events": ["job.progress"]}))
        .await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["events"], json!([]));
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// warnings and aliases
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_well_formed_names_are_held_with_a_suggestion() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    let r = c
        .request(json!({"action": "subscribe", "events": ["alret.*"]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["events"], json!(["alret.*"]), "held: {r}");
    assert_eq!(
        r["warnings"],
        json!([{"pattern": "alret.*", "message": "matches no registered event type", "did_you_mean": "alert.*"}]),
        "{r}"
    );

    let r = c
        .request(json!({"action": "subscribe", "events": ["alert.craeted"]}))
        .await;
    assert_eq!(sorted(&r["events"]), strings(&["alert.craeted", "alret.*"]));
    let w = r["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{r}");
    assert_eq!(w[0]["pattern"], "alert.craeted");
    assert_eq!(w[0]["did_you_mean"], "alert.created", "{r}");

    // The three-segment alias form is well formed: held with a warning.
    let r = c
        .request(json!({"action": "subscribe", "events": ["a.b.c"]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert!(
        sorted(&r["events"]).contains(&"a.b.c".to_owned()),
        "held: {r}"
    );
    let w = r["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{r}");
    assert_eq!(w[0]["pattern"], "a.b.c");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_type_warning_names_the_replacement() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(json!({"action": "subscribe", "events": ["alert.resolved"]}))
        .await;
    assert_eq!(r["events"], json!(["alert.resolved"]), "held: {r}");
    let w = r["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{r}");
    assert_eq!(w[0]["pattern"], "alert.resolved");
    let message = w[0]["message"].as_str().unwrap();
    assert!(
        message.contains("alert.updated"),
        "names the replacement: {message}"
    );

    router.publish_ok(&resolved("r1")).await;
    assert_event(&c.recv().await, "alert.resolved", "alerts", 1);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_of_another_endpoint_warn_with_that_endpoint() {
    let router = start(&two_endpoints()).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(json!({"action": "subscribe", "events": ["system.status", "system.*", "alert.*"]}))
        .await;
    assert_eq!(
        sorted(&r["events"]),
        strings(&["alert.*", "system.*", "system.status"]),
        "held all the same: {r}"
    );
    let w = r["warnings"].as_array().unwrap();
    let mut patterns: Vec<&str> = w.iter().map(|x| x["pattern"].as_str().unwrap()).collect();
    patterns.sort();
    assert_eq!(patterns, ["system.*", "system.status"], "{r}");
    for x in w {
        assert!(
            x["message"].as_str().unwrap().contains("/ws/system"),
            "names the endpoint that carries them: {x}"
        );
    }

    // And those events never arrive here.
    router.publish_ok(&status("ok")).await;
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_message_patterns_are_not_held() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c.request(json!({"action": "subscribe", "events": ["connection.*", "alert.*", "connection.lagged"]}),
    )
    .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["events"], json!(["alert.*"]), "not held: {r}");
    let w = r["warnings"].as_array().unwrap();
    let mut patterns: Vec<&str> = w.iter().map(|x| x["pattern"].as_str().unwrap()).collect();
    patterns.sort();
    assert_eq!(patterns, ["connection.*", "connection.lagged"], "{r}");
    for x in w {
        assert!(x["message"].as_str().is_some_and(|m| !m.is_empty()), "{x}");
    }

    // Only connection.* asked: nothing held, and receive-all is over.
    let (mut d, _) = connect(&router, "/ws/events").await;
    let r = d
        .request(json!({"action": "subscribe", "events": ["connection.*"]}))
        .await;
    assert_eq!(r["events"], json!([]), "{r}");
    assert_eq!(r["warnings"].as_array().unwrap().len(), 1, "{r}");
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    d.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_held_as_the_canonical_name() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(json!({"action": "subscribe", "events": ["job_progress"]}))
        .await;
    assert_eq!(r["events"], json!(["job.progress"]), "{r}");
    assert_eq!(r["warnings"], json!([]), "a registered alias: {r}");

    let r = c
        .request(json!({"action": "subscribe", "events": ["job.progress"]}))
        .await;
    assert_eq!(
        r["events"],
        json!(["job.progress"]),
        "the same pattern: {r}"
    );

    router.publish_ok(&job("j1")).await;
    let ev = c.recv().await;
    assert_event(&ev, "job.progress", "jobs", 1);
    router
        .publish_ok(&json!({"type": "job_progress", "payload": {"job_id": "j2"}}))
        .await;
    let ev = c.recv().await;
    assert_event(&ev, "job.progress", "jobs", 2);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// invalid patterns
// ---------------------------------------------------------------------------

/// One message's malformed patterns cost one reply of bounded size, however
/// many there are (docs/protocol.md, "Client messages and replies").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_patterns_get_one_short_error() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let empties = vec![""; 16_000];
    c.send(&json!({"action": "subscribe", "events": empties, "id": 7}))
        .await;
    let e = c.recv().await;
    assert_error(&e, "invalid_pattern");
    assert_eq!(e["id"], 7);
    assert_eq!(e["payload"]["refused"], 16_000);
    assert_eq!(e["payload"]["patterns"].as_array().unwrap().len(), 16);
    assert!(e.to_string().len() < 4096, "short: {e}");
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "then the reply: {r}");
    assert_eq!(r["events"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_patterns_are_refused_and_not_held() {
    let router = start(&with_server("max_pattern_bytes = 20")).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let long = "abcdefghij.klmnopqrst"; // 21 bytes, otherwise well formed
    let at_limit = "abcdefghi.klmnopqrst"; // 20 bytes
    assert_eq!((long.len(), at_limit.len()), (21, 20));
    let bad = ["*.created", "alert*", "a.b.*", "", "Alert.created", long];
    let mut events: Vec<&str> = bad.to_vec();
    events.push("alert.*");
    c.send(&json!({"action": "subscribe", "events": events, "id": "bad"}))
        .await;
    let e = c.recv().await;
    assert_error(&e, "invalid_pattern");
    assert_eq!(e["id"], "bad", "{e}");
    assert_eq!(e["payload"]["patterns"], json!(bad), "{e}");
    let message = e["payload"]["message"].as_str().unwrap();
    assert!(message.starts_with("6 patterns refused: "), "{message}");
    assert!(
        message.contains("at most 20 bytes"),
        "each says why: {message}"
    );
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["id"], "bad");
    assert_eq!(r["events"], json!(["alert.*"]), "none of them held: {r}");

    // Each alone, one by one.
    for p in bad {
        let e = c
            .request(json!({"action": "subscribe", "events": [p]}))
            .await;
        assert_error(&e, "invalid_pattern");
        let r = c.recv().await;
        assert_eq!(r["events"], json!(["alert.*"]), "{p:?} not held: {r}");
    }

    // At the byte limit it is fine (held, with a warning: unregistered).
    let r = c
        .request(json!({"action": "subscribe", "events": [at_limit]}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(sorted(&r["events"]), strings(&["alert.*", at_limit]));
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// delivery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_delivered_once_however_many_patterns_match() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(json!({"action": "subscribe", "events": ["alert.*", "alert.created", "*"]}))
        .await;
    assert_eq!(
        sorted(&r["events"]),
        strings(&["*", "alert.*", "alert.created"])
    );
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&alert("a2")).await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 1);
    assert_eq!(ev["payload"]["id"], "a1");
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 2);
    assert_eq!(ev["payload"]["id"], "a2");
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_are_removed_by_exact_text() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    c.request(json!({"action": "subscribe", "events": ["alert.*", "alert.created"]}))
        .await;
    let r = c
        .request(json!({"action": "unsubscribe", "events": ["alert.created"]}))
        .await;
    assert_eq!(r["events"], json!(["alert.*"]), "{r}");
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);

    // A pattern not held by that text: nothing changes.
    let r = c
        .request(json!({"action": "unsubscribe", "events": ["alert.created", "*"]}))
        .await;
    assert_eq!(r["events"], json!(["alert.*"]), "{r}");
    router.publish_ok(&alert("a2")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 2);

    let r = c
        .request(json!({"action": "unsubscribe", "events": ["alert.*"]}))
        .await;
    assert_eq!(r["events"], json!([]), "{r}");
    router.publish_ok(&alert("a3")).await;
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_without_events_leaves_only_control_messages() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    c.request(json!({"action": "subscribe", "events": ["*", "job.progress"]}))
        .await;
    let r = c.request(json!({"action": "unsubscribe", "id": "u"})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["id"], "u");
    assert_eq!(r["events"], json!([]));
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    c.expect_silence(QUIET).await;
    assert_alive(&mut c, json!("x")).await;

    // From receive-all too: an empty set, nothing but control messages.
    let (mut d, _) = connect(&router, "/ws/events").await;
    let r = d.request(json!({"action": "unsubscribe"})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["events"], json!([]), "{r}");
    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j2")).await;
    d.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_resolves_aliases() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let r = c
        .request(json!({"action": "subscribe", "events": ["job.progress", "alert.*"]}))
        .await;
    assert_eq!(sorted(&r["events"]), strings(&["alert.*", "job.progress"]));
    let r = c
        .request(json!({"action": "unsubscribe", "events": ["job_progress"]}))
        .await;
    assert_eq!(r["events"], json!(["alert.*"]), "job.progress removed: {r}");
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_subscribe_even_empty_ends_receive_all() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    router.publish_ok(&job("j1")).await;
    assert_event(&c.recv().await, "job.progress", "jobs", 1);

    let r = c
        .request(json!({"action": "subscribe", "events": []}))
        .await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["events"], json!([]), "{r}");
    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j2")).await;
    c.expect_silence(QUIET).await;

    // A subscribe without `events` at all is the same empty subscribe.
    let (mut d, _) = connect(&router, "/ws/events").await;
    let r = d.request(json!({"action": "subscribe"})).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["events"], json!([]), "{r}");
    router.publish_ok(&alert("a3")).await;
    d.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_are_per_channel_without_gaps() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&resolved("a1")).await;
    router.publish_ok(&job("j2")).await;
    router.publish_ok(&alert("a3")).await;

    let mut alerts = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..5 {
        let ev = c.recv().await;
        match ev["channel"].as_str() {
            Some("alerts") => alerts.push((
                ev["sequence"].as_u64().unwrap(),
                ev["type"].as_str().unwrap().to_owned(),
                ev["payload"]["id"].as_str().unwrap().to_owned(),
            )),
            Some("jobs") => jobs.push((
                ev["sequence"].as_u64().unwrap(),
                ev["payload"]["job_id"].as_str().unwrap().to_owned(),
            )),
            _ => panic!("unexpected {ev}"),
        }
        assert!(ev.get("correlation_id").is_none(), "none given: {ev}");
    }
    assert_eq!(
        alerts,
        [
            (1, "alert.created".to_owned(), "a1".to_owned()),
            (2, "alert.resolved".to_owned(), "a1".to_owned()),
            (3, "alert.created".to_owned(), "a3".to_owned()),
        ]
    );
    assert_eq!(jobs, [(1, "j1".to_owned()), (2, "j2".to_owned())]);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_endpoint_does_not_carry_are_never_delivered() {
    let router = start(&two_endpoints()).await;
    let (mut all, _) = connect(&router, "/ws/events").await;
    let (mut star, _) = connect(&router, "/ws/events?events=*").await;
    assert_eq!(star.recv().await["type"], "subscribed");
    let (mut named, _) = connect(&router, "/ws/events?events=system.status").await;
    assert_eq!(named.recv().await["type"], "subscribed");
    let (mut sys, _) = connect(&router, "/ws/system").await;

    router.publish_ok(&status("degraded")).await;
    let ev = sys.recv().await;
    assert_event(&ev, "system.status", "system", 1);
    assert_eq!(ev["payload"], json!({"state": "degraded"}));

    router.publish_ok(&alert("a1")).await;
    assert_event(&all.recv().await, "alert.created", "alerts", 1);
    assert_event(&star.recv().await, "alert.created", "alerts", 1);
    all.expect_silence(QUIET).await;
    star.expect_silence(Duration::from_millis(100)).await;
    named.expect_silence(Duration::from_millis(100)).await;
    sys.expect_silence(Duration::from_millis(100)).await;
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// one-off errors and limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_off_errors_keep_the_connection_open() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events?events=alert.*").await;
    assert_eq!(c.recv().await["type"], "subscribed");

    c.send_text("this is not json").await;
    assert_error(&c.recv().await, "invalid_json");
    c.send_text("{\"action\": \"ping\"").await;
    assert_error(&c.recv().await, "invalid_json");
    c.send_text("[\"ping\"]").await;
    assert_error(&c.recv().await, "invalid_json");
    c.send_text("42").await;
    assert_error(&c.recv().await, "invalid_json");
    c.send_text("\"ping\"").await;
    assert_error(&c.recv().await, "invalid_json");
    c.socket
        .send(Message::Binary(br#"{"action":"ping"}"#.to_vec().into()))
        .await
        .unwrap();
    assert_error(&c.recv().await, "invalid_json");

    let e = c.request(json!({"action": "dance", "id": 5})).await;
    assert_error(&e, "unknown_action");
    assert_eq!(e["id"], 5);
    let e = c.request(json!({"type": "refreshh", "id": "t"})).await;
    assert_error(&e, "unknown_action");
    assert_eq!(e["id"], "t");

    assert_alive(&mut c, json!("after-errors")).await;
    // The subscription is untouched and delivery goes on.
    router.publish_ok(&alert("a1")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_closes_with_1009() {
    let router = start(&with_server("max_message_bytes = 1024")).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    // Under the limit: fine.
    let small = json!({"action": "ping", "id": "ok", "pad": "x".repeat(900)});
    assert!(small.to_string().len() < 1024);
    let pong = c.request(small).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], "ok");

    let big = json!({"action": "ping", "id": "big", "pad": "x".repeat(2000)});
    c.send(&big).await;
    let (code, reason) = c.close_frame().await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));

    // Other connections are unaffected.
    let (mut d, _) = connect(&router, "/ws/events").await;
    assert_alive(&mut d, json!(1)).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_gets_404_unknown_endpoint() {
    let router = start(&two_endpoints()).await;

    let refused = |path: &'static str| {
        let url = format!("ws://{}{path}", router.addr);
        async move {
            match tokio_tungstenite::connect_async(url).await {
                Ok(_) => panic!("{path} was upgraded"),
                Err(WsError::Http(response)) => {
                    let status = response.status().as_u16();
                    let body = response.body().clone().expect("a body");
                    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body))
                    });
                    (status, body)
                }
                Err(e) => panic!("{path}: expected an HTTP refusal, got {e}"),
            }
        }
    };

    let (status, body) = refused("/ws/event").await;
    assert_eq!(status, 404, "{body}");
    let err = &body["error"];
    assert_eq!(err["code"], "unknown_endpoint", "{body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        sorted(&err["endpoints"]),
        strings(&["/ws/events", "/ws/system"]),
        "{body}"
    );
    assert_eq!(err["did_you_mean"], "/ws/events", "{body}");

    let (status, body) = refused("/ws/evnets?events=alert.*").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["did_you_mean"], "/ws/events", "{body}");

    let (status, body) = refused("/completely/elsewhere/entirely").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_endpoint");
    assert!(
        body["error"].get("did_you_mean").is_none(),
        "only when close: {body}"
    );
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// recovery
// ---------------------------------------------------------------------------

/// Publishes `n` alerts (`a1`..) and returns the alerts epoch.
async fn publish_alerts(router: &Router, n: usize) -> String {
    for i in 1..=n {
        router.publish_ok(&alert(&format!("a{i}"))).await;
    }
    let (_c, hello) = connect(router, "/ws/events?events=").await;
    assert_eq!(hello["payload"]["channels"]["alerts"]["sequence"], n as u64);
    epoch(&hello, "alerts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_in_the_url_replays_missed_events() {
    let router = start(BASE).await;
    let e = publish_alerts(&router, 5).await;

    let (mut c, hello) = connect(&router, &format!("/ws/events?since=alerts:{e}:2")).await;
    assert_eq!(hello["payload"]["channels"]["alerts"]["sequence"], 5);
    for seq in 3..=5u64 {
        let ev = c.recv().await;
        assert_event(&ev, "alert.created", "alerts", seq);
        assert_eq!(ev["payload"]["id"], format!("a{seq}"));
        assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert!(r["events"].is_null(), "receive-all goes on: {r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 3}}),
        "{r}"
    );

    // Still receive-all, live continues after the replay.
    router.publish_ok(&job("j1")).await;
    assert_event(&c.recv().await, "job.progress", "jobs", 1);
    router.publish_ok(&alert("a6")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 6);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_with_events_replays_only_matching_events() {
    let router = start(BASE).await;
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&resolved("a1")).await;
    router.publish_ok(&alert("a3")).await;
    router.publish_ok(&resolved("a3")).await;
    let (_p, hello) = connect(&router, "/ws/events?events=").await;
    let e = epoch(&hello, "alerts");

    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?events=alert.created&since=alerts:{e}:0"),
    )
    .await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 1);
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 3);
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["events"], json!(["alert.created"]));
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_with_a_wrong_epoch_is_epoch_changed() {
    let router = start(BASE).await;
    let e = publish_alerts(&router, 5).await;
    let wrong = if e == "wrongepoch" {
        "otherepoch"
    } else {
        "wrongepoch"
    };
    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?events=alert.*&since=alerts:{wrong}:2"),
    )
    .await;
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "nothing replayed: {r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "epoch_changed"}}),
        "{r}"
    );
    router.publish_ok(&alert("a6")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 6);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_above_the_current_sequence_is_invalid_position() {
    let router = start(BASE).await;
    let e = publish_alerts(&router, 5).await;
    let (mut c, _) = connect(&router, &format!("/ws/events?since=alerts:{e}:9")).await;
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "nothing replayed: {r}");
    assert!(r["events"].is_null(), "{r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "invalid_position"}}),
        "{r}"
    );

    // At the current sequence: recovered, nothing to replay.
    let (mut d, _) = connect(&router, &format!("/ws/events?since=alerts:{e}:5")).await;
    let r = d.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 0}}),
        "{r}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_for_a_channel_the_endpoint_does_not_carry_is_unknown_channel() {
    let router = start(&two_endpoints()).await;
    router.publish_ok(&status("ok")).await;
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&alert("a2")).await;
    let (_s, shello) = connect(&router, "/ws/system").await;
    let se = epoch(&shello, "system");
    let (_p, hello) = connect(&router, "/ws/events?events=").await;
    let ae = epoch(&hello, "alerts");

    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?events=*&since=system:{se}:0,alerts:{ae}:1,nowhere:abc:0"),
    )
    .await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.created", "alerts", 2);
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        r["recovery"],
        json!({
            "system": {"recovered": false, "reason": "unknown_channel"},
            "nowhere": {"recovered": false, "reason": "unknown_channel"},
            "alerts": {"recovered": true, "replayed": 1},
        }),
        "{r}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_since_replays_then_replies() {
    let router = start(&two_endpoints()).await;
    let e = publish_alerts(&router, 5).await;
    let (mut c, _) = connect(&router, "/ws/events").await;

    c.send(&json!({
        "action": "subscribe",
        "events": ["alert.*"],
        "since": {"alerts": {"epoch": e, "sequence": 3}},
        "id": "rec",
    }))
    .await;
    for seq in 4..=5u64 {
        let ev = c.recv().await;
        assert_event(&ev, "alert.created", "alerts", seq);
        assert_eq!(ev["payload"]["id"], format!("a{seq}"));
    }
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(r["action"], "subscribed");
    assert_eq!(r["id"], "rec");
    assert_eq!(r["events"], json!(["alert.*"]));
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );

    // The failures, in the subscribe form.
    let r = c
        .request(json!({
            "action": "subscribe",
            "events": [],
            "since": {
                "alerts": {"epoch": "not-the-epoch", "sequence": 1},
                "system": {"epoch": "x", "sequence": 0},
            },
        }))
        .await;
    assert_eq!(r["type"], "subscribed", "nothing replayed: {r}");
    assert_eq!(
        r["recovery"],
        json!({
            "alerts": {"recovered": false, "reason": "epoch_changed"},
            "system": {"recovered": false, "reason": "unknown_channel"},
        }),
        "{r}"
    );
    let r = c
        .request(json!({"action": "subscribe", "since": {"alerts": {"epoch": e, "sequence": 6}}}))
        .await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "invalid_position"}}),
        "{r}"
    );

    router.publish_ok(&alert("a6")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 6);
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// finer points
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_are_percent_decoded() {
    let router = start(BASE).await;
    let e = publish_alerts(&router, 3).await;
    // As URLSearchParams writes them: `,` and `:` encoded.
    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?events=alert.%2A%2Cjob_progress&since=alerts%3A{e}%3A1"),
    )
    .await;
    for seq in 2..=3u64 {
        assert_event(&c.recv().await, "alert.created", "alerts", seq);
    }
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(sorted(&r["events"]), strings(&["alert.*", "job.progress"]));
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_warnings_arrive_in_the_connect_time_subscribed() {
    let router = start(BASE).await;
    let (mut c, _) = connect(
        &router,
        "/ws/events?events=alret.*,alert.resolved,connection.*",
    )
    .await;
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        sorted(&r["events"]),
        strings(&["alert.resolved", "alret.*"]),
        "{r}"
    );
    let w = r["warnings"].as_array().unwrap();
    let mut patterns: Vec<&str> = w.iter().map(|x| x["pattern"].as_str().unwrap()).collect();
    patterns.sort();
    assert_eq!(
        patterns,
        ["alert.resolved", "alret.*", "connection.*"],
        "{r}"
    );
    let typo = w.iter().find(|x| x["pattern"] == "alret.*").unwrap();
    assert_eq!(typo["did_you_mean"], "alert.*", "{r}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_messages_are_answered_in_order() {
    let router = start(BASE).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let mut expected = Vec::new();
    for i in 0..30i64 {
        let (msg, reply) = match i % 3 {
            0 => (
                json!({"action": "subscribe", "events": [format!("d{i}.*")], "id": i}),
                "subscribed",
            ),
            1 => (
                json!({"action": "unsubscribe", "events": [format!("d{}.*", i - 1)], "id": i}),
                "unsubscribed",
            ),
            _ => (json!({"action": "ping", "id": i}), "pong"),
        };
        c.send(&msg).await;
        expected.push((i, reply));
    }
    for (i, reply) in expected {
        let r = c.recv().await;
        assert_eq!(r["id"], i, "replies in order: {r}");
        assert_eq!(r["type"], reply, "{r}");
        if reply == "unsubscribed" {
            assert_eq!(r["events"], json!([]), "{r}");
        }
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_deep_messages_are_invalid_json_and_the_connection_stays() {
    let router = start(&with_server("max_json_depth = 8")).await;
    let (mut c, _) = connect(&router, "/ws/events").await;
    let deep = format!(
        "{{\"action\":\"ping\",\"id\":\"deep\",\"x\":{}{}}}",
        "[".repeat(20),
        "]".repeat(20)
    );
    c.send_text(&deep).await;
    assert_error(&c.recv().await, "invalid_json");
    // Within the depth: fine.
    let shallow = format!(
        "{{\"action\":\"ping\",\"id\":\"shallow\",\"x\":{}{}}}",
        "[".repeat(5),
        "]".repeat(5)
    );
    c.send_text(&shallow).await;
    let pong = c.recv().await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], "shallow");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_replays_what_was_already_sent() {
    let router = start(BASE).await;
    let (mut c, hello) = connect(&router, "/ws/events?events=alert.created").await;
    assert_eq!(c.recv().await["type"], "subscribed");
    let e = epoch(&hello, "alerts");
    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&resolved("a1")).await;
    router.publish_ok(&alert("a3")).await;
    router.publish_ok(&resolved("a3")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 1);
    assert_event(&c.recv().await, "alert.created", "alerts", 3);

    // Widening to alert.* from 0: only the events not sent yet.
    c.send(&json!({
        "action": "subscribe",
        "events": ["alert.*"],
        "since": {"alerts": {"epoch": e, "sequence": 0}},
    }))
    .await;
    let ev = c.recv().await;
    assert_event(&ev, "alert.resolved", "alerts", 2);
    let ev = c.recv().await;
    assert_event(&ev, "alert.resolved", "alerts", 4);
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );

    // Again: everything was sent now.
    let r = c
        .request(json!({"action": "subscribe", "since": {"alerts": {"epoch": e, "sequence": 0}}}))
        .await;
    assert_eq!(r["type"], "subscribed", "no duplicate: {r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 0}}),
        "{r}"
    );
    router.publish_ok(&alert("a5")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 5);
    c.expect_silence(QUIET).await;
    router.shutdown().await;
}

/// BASE with the alerts history cut to `n` events.
fn short_history(n: usize) -> String {
    let key = "name = \"alerts\"\nhistory = 100";
    assert!(BASE.contains(key));
    BASE.replacen(key, &format!("name = \"alerts\"\nhistory = {n}"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_before_the_kept_history_is_too_old() {
    let router = start(&short_history(2)).await;
    let e = publish_alerts(&router, 5).await;

    let (mut c, _) = connect(&router, &format!("/ws/events?since=alerts:{e}:1")).await;
    let r = c.recv().await;
    assert_eq!(r["type"], "subscribed", "never partial: {r}");
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "too_old"}}),
        "{r}"
    );
    router.publish_ok(&alert("a6")).await;
    assert_event(&c.recv().await, "alert.created", "alerts", 6);

    // From within the kept history: recovered.
    let (mut d, _) = connect(&router, &format!("/ws/events?since=alerts:{e}:4")).await;
    assert_event(&d.recv().await, "alert.created", "alerts", 5);
    assert_event(&d.recv().await, "alert.created", "alerts", 6);
    let r = d.recv().await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_max_bytes_keeps_only_the_newest_envelopes_that_fit() {
    const MAX_BYTES: usize = 1000;
    let key = "name = \"alerts\"\nhistory = 100";
    let config = BASE.replacen(key, &format!("{key}\nhistory_max_bytes = {MAX_BYTES}"), 1);
    let router = start(&config).await;
    let (mut live, hello) = connect(&router, "/ws/events").await;
    let e = epoch(&hello, "alerts");
    let mut sizes = Vec::new();
    for i in 1..=10 {
        router.publish_ok(&alert(&format!("a{i}"))).await;
        sizes.push(live.recv_text().await.len());
    }
    // Far below `history` (100): the byte bound decides what is kept, the
    // newest envelopes whose sizes add up to at most MAX_BYTES.
    let mut total = 0;
    let kept = sizes
        .iter()
        .rev()
        .take_while(|size| {
            total += **size;
            total <= MAX_BYTES
        })
        .count() as u64;
    assert!((1..10).contains(&kept), "envelopes of {sizes:?} bytes");
    let oldest = 10 - kept + 1;

    let (mut d, _) = connect(
        &router,
        &format!("/ws/events?since=alerts:{e}:{}", oldest - 1),
    )
    .await;
    for sequence in oldest..=10 {
        assert_event(&d.recv().await, "alert.created", "alerts", sequence);
    }
    let r = d.recv().await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": kept}}),
        "{r}"
    );

    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?since=alerts:{e}:{}", oldest - 2),
    )
    .await;
    let r = c.recv().await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "too_old"}}),
        "event {} is gone: {r}",
        oldest - 1
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_only_when_a_matching_event_is_gone() {
    let router = start(&short_history(2)).await;
    // 1..3 are alert.resolved (gone from history), 4..5 alert.created.
    for i in 1..=3 {
        router.publish_ok(&resolved(&format!("r{i}"))).await;
    }
    router.publish_ok(&alert("a4")).await;
    router.publish_ok(&alert("a5")).await;
    let (_p, hello) = connect(&router, "/ws/events?events=").await;
    let e = epoch(&hello, "alerts");

    // Nothing lost matches alert.created: recovered, 4 and 5 replayed.
    let (mut c, _) = connect(
        &router,
        &format!("/ws/events?events=alert.created&since=alerts:{e}:0"),
    )
    .await;
    let first = c.recv().await;
    assert_event(&first, "alert.created", "alerts", 4);
    assert_event(&c.recv().await, "alert.created", "alerts", 5);
    let r = c.recv().await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": true, "replayed": 2}}),
        "{r}"
    );

    // alert.* does match what was lost.
    let (mut d, _) = connect(
        &router,
        &format!("/ws/events?events=alert.*&since=alerts:{e}:0"),
    )
    .await;
    let r = d.recv().await;
    assert_eq!(
        r["recovery"],
        json!({"alerts": {"recovered": false, "reason": "too_old"}}),
        "{r}"
    );
    router.shutdown().await;
}

/// The client's own Pings are answered (by tungstenite) between the
/// router's event frames, never inside one: every event arrives whole and
/// in order, every Ping gets its Pong, and a client Close is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_interleave_cleanly_with_events_and_close_is_answered() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events?events=alert.*").await;
    c.recv_type("subscribed").await;
    let pad = "p".repeat(3000);
    let publisher = {
        let url = router.url("/api/events");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for batch in 0..20u64 {
                let events: Vec<Value> = (0..50)
                    .map(|i| {
                        let id = format!("{}-{pad}", batch * 50 + i);
                        json!({"type": "alert.created", "payload": {"id": id, "severity": "low"}})
                    })
                    .collect();
                let status = http.post(&url).json(&events).send().await.unwrap().status();
                assert_eq!(status, 202);
            }
        })
    };
    let mut pongs = Vec::new();
    let mut next_sequence = 1u64;
    let mut pinged = 0u8;
    while next_sequence <= 1000 {
        if pinged < 50 && next_sequence > u64::from(pinged) * 15 {
            c.socket
                .send(Message::Ping(vec![pinged].into()))
                .await
                .unwrap();
            pinged += 1;
        }
        let msg = tokio::time::timeout(support::WAIT, futures_util::StreamExt::next(&mut c.socket))
            .await
            .expect("events keep coming")
            .expect("the connection stays open")
            .expect("every frame is well formed");
        match msg {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).expect("whole JSON events");
                assert_eq!(event["sequence"], next_sequence, "in order, none lost");
                next_sequence += 1;
            }
            Message::Pong(payload) => pongs.push(payload[0]),
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    while pongs.len() < usize::from(pinged) {
        match tokio::time::timeout(support::WAIT, futures_util::StreamExt::next(&mut c.socket))
            .await
            .expect("the remaining pongs arrive")
        {
            Some(Ok(Message::Pong(payload))) => pongs.push(payload[0]),
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    assert_eq!(
        pongs,
        (0..pinged).collect::<Vec<u8>>(),
        "one pong per ping, in order"
    );

    c.socket.close(None).await.unwrap();
    let answered = tokio::time::timeout(support::WAIT, async {
        loop {
            match futures_util::StreamExt::next(&mut c.socket).await {
                Some(Ok(Message::Close(_))) | None => return true,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("close handshake failed: {e}"),
            }
        }
    })
    .await;
    assert_eq!(answered, Ok(true), "the router answers the close");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_put_type_first() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events").await;
    let mut texts = vec![c.recv_text().await];
    for msg in [
        json!({"action": "subscribe", "events": ["alert.*"], "id": 1}),
        json!({"action": "unsubscribe", "events": ["alert.*"], "id": 2}),
        json!({"action": "ping", "id": 3}),
        json!({"action": "no_such_action", "id": 4}),
    ] {
        c.send(&msg).await;
        texts.push(c.recv_text().await);
    }
    let grown = BASE.replace(
        r#"channels = ["alerts", "jobs"]"#,
        r#"channels = ["alerts", "jobs", "extra"]"#,
    ) + "\n[[channels]]\nname = \"extra\"\n";
    router.write_config(&grown);
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    texts.push(c.recv_text().await);
    let types = [
        "connection.established",
        "subscribed",
        "unsubscribed",
        "pong",
        "error",
        "connection.channels",
    ];
    for (text, ty) in texts.iter().zip(types) {
        assert!(
            text.starts_with(&format!("{{\"type\":\"{ty}\",")),
            "{ty} does not start with its type: {text}"
        );
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed["type"], ty, "{text}");
    }
    router.shutdown().await;
}

// ------------------------------------------------------ refused upgrades

/// Upgrades `path` with extra headers; the HTTP status of the answer.
async fn upgrade_status(router: &Router, path: &str, headers: &[(&str, &str)]) -> u16 {
    match router.try_ws(path, headers).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// The `/metrics` sample of `switchyard_upgrades_refused_total` for `reason`.
async fn upgrades_refused(router: &Router, reason: &str) -> u64 {
    let text = router.metrics().await;
    let prefix = format!("switchyard_upgrades_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Upgrades refused before a socket is opened are counted by reason, and
/// Origins are compared case-insensitively in scheme and host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_are_counted_by_reason() {
    let config = with_server("max_connections = 1").replacen(
        "[auth]\nmode = \"none\"\n",
        "[auth]\nmode = \"none\"\nallowed_origins = [\"https://Dash.Example.com\"]\n",
        1,
    );
    let router = start(&config).await;
    assert_eq!(upgrade_status(&router, "/ws/nowhere", &[]).await, 404);
    assert_eq!(upgrades_refused(&router, "unknown_endpoint").await, 1);

    let evil = [("origin", "https://evil.example")];
    assert_eq!(upgrade_status(&router, "/ws/events", &evil).await, 403);
    assert_eq!(upgrade_status(&router, "/ws/events", &evil).await, 403);
    assert_eq!(upgrades_refused(&router, "forbidden_origin").await, 2);

    let (_held, _) = connect(&router, "/ws/events").await;
    let shouting = [("origin", "HTTPS://DASH.example.COM")];
    assert_eq!(upgrade_status(&router, "/ws/events", &shouting).await, 503);
    assert_eq!(upgrades_refused(&router, "too_many_connections").await, 1);
    assert_eq!(upgrades_refused(&router, "forbidden_origin").await, 2);

    // While shutting down even /metrics answers 503: read the counters directly.
    router.app.shutting_down.store(true, Ordering::SeqCst);
    assert_eq!(upgrade_status(&router, "/ws/events", &[]).await, 503);
    let text = router.app.router.metrics().encode();
    assert!(
        text.contains("switchyard_upgrades_refused_total{reason=\"shutting_down\"} 1"),
        "{text}"
    );
}

/// A masked client frame, written past tungstenite so that it can break the
/// protocol on purpose.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first_byte];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Protocol violations are answered with a close frame (RFC 6455 §7.1.7):
/// 1007 for text that is not UTF-8, 1002 otherwise (docs/protocol.md,
/// "Close codes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_1002_and_invalid_utf8_with_1007() {
    use tokio::io::AsyncWriteExt;
    let router = start(BASE).await;
    let cases: [(&str, Vec<u8>, (u16, &str)); 3] = [
        (
            "invalid UTF-8",
            client_frame(0x81, &[b'{', 0xff, 0xfe, b'}']),
            (1007, "invalid UTF-8 in a text message"),
        ),
        (
            "a reserved bit",
            client_frame(0xC1, b"{}"),
            (1002, "protocol error"),
        ),
        (
            "an unknown opcode",
            client_frame(0x83, b"{}"),
            (1002, "protocol error"),
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut c = router.ws("/ws/events").await;
        c.recv_type("connection.established").await;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.socket.get_mut() else {
            panic!("plain TCP expected");
        };
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(
            c.close_frame().await,
            (expected.0, expected.1.to_owned()),
            "{what}"
        );
    }
    router.shutdown().await;
}

/// A client may send its first message right behind its upgrade request,
/// in the same packet: those bytes are WebSocket frames, not the next
/// request head, and are not counted against `server.max_header_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_with_the_upgrade_request_is_not_a_request_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let router = start(&with_server("max_header_bytes = 4096")).await;
    let mut tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let head =
        "GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    // A ping of ~5 KB (more than the head bound, less than a message's).
    let ping = json!({"action": "ping", "id": "early", "pad": "x".repeat(5000)}).to_string();
    let mut packet = head.as_bytes().to_vec();
    packet.extend(client_frame(0x81, ping.as_bytes()));
    tcp.write_all(&packet).await.unwrap();
    // The response head, byte by byte so that no frame byte is consumed.
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(support::WAIT, tcp.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        if read == 0 {
            break;
        }
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        Role::Client,
        None,
    )
    .await;
    let mut client = Client { socket };
    let pong = client.recv_type("pong").await;
    assert_eq!(pong["id"], "early", "{pong}");
    router.shutdown().await;
}

/// Only a whole frame shows a client alive: one that trickles a frame in a
/// byte at a time and never finishes it, answering no Ping meanwhile, is
/// closed as silent (4000) like any other (docs/protocol.md, "Keep-alive").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_trickled_and_never_finished_does_not_keep_a_connection_alive() {
    use tokio::io::AsyncWriteExt;
    let router = start(&with_server("heartbeat_interval_s = 1")).await;
    let mut c = router.ws("/ws/events").await;
    c.recv_type("connection.established").await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.socket.get_mut() else {
        panic!("plain TCP expected");
    };
    // A text frame announcing 1,000 bytes, then a byte every 400 ms for 6 s.
    let frame = client_frame(0x81, &[b' '; 1000]);
    for byte in &frame[..15] {
        if tcp.write_all(&[*byte]).await.is_err() {
            break; // closed meanwhile
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        c.close_frame().await,
        (4000, "heartbeat timeout".to_owned())
    );
    router.shutdown().await;
}
