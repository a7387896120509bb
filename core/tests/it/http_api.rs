//! The HTTP API (docs/protocol.md, "Publishing over HTTP"; docs/operations.md,
//! "Health probes" and "Admin routes") against a real router over loopback:
//! health, capabilities, publishing and its refusals, API keys, the
//! loopback-only rule, `Origin`, the admin config record and the
//! connections list.

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use support::{alert, config, start, Router, BASE};

/// Sends a request; returns status and JSON body (null if not JSON).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs JSON to `path` with extra headers.
async fn post_with(
    router: &Router,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(router.url(path)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// POSTs raw bytes to `path` with the given `Content-Type` (or none).
async fn post_raw(
    router: &Router,
    path: &str,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(router.url(path)).body(body);
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    send(request).await
}

/// GETs `path` with extra headers.
async fn get_with(router: &Router, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(router.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn seq(channel: &str, sequence: u64) -> Value {
    json!({"channel": channel, "sequence": sequence})
}

/// A publish reply with the `epoch` of each stamp taken out, once checked
/// to be an epoch (1–32 of `[A-Za-z0-9_-]`): what is left is compared whole.
fn without_epochs(body: &Value) -> Value {
    let mut body = body.clone();
    for stamp in body["sequences"].as_array_mut().into_iter().flatten() {
        let epoch = stamp
            .as_object_mut()
            .and_then(|s| s.remove("epoch"))
            .unwrap_or_else(|| panic!("a stamp carries its epoch: {stamp}"));
        let epoch = epoch.as_str().unwrap_or_default();
        assert!(
            (1..=32).contains(&epoch.len())
                && epoch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{epoch:?}"
        );
    }
    body
}

/// The `fields` of a 422, sorted by index then field.
fn sorted_fields(body: &Value) -> Vec<Value> {
    let mut fields = body["error"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {body}"))
        .clone();
    fields.sort_by_key(|f| (f["index"].as_u64(), f["field"].as_str().map(str::to_owned)));
    fields
}

fn field(index: u64, name: &str, problem: &str, expected: Value) -> Value {
    json!({"index": index, "field": name, "problem": problem, "expected": expected})
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn sorted_strings(v: &Value) -> Vec<String> {
    let mut list: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    list.sort();
    list
}

// ---------------------------------------------------------------- health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_ok_and_live_answers() {
    let router = start(BASE).await;
    let (status, body) = router.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64(), "{body}");
    assert!(body["config_version"].is_u64(), "an integer: {body}");
    assert_eq!(body["config_version"], 1);
    assert_eq!(body["plugins"], json!({}));
    assert_eq!(
        body["cluster"],
        json!({"engine": "memory", "connected": true})
    );

    let response = reqwest::get(router.url("/health/live")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    router.shutdown().await;
}

// ---------------------------------------------------------- capabilities

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_describe_endpoints_types_and_channels() {
    let router = start(BASE).await;
    let (status, body) = router.get("/api/websocket/capabilities").await;
    assert_eq!(status, 200, "{body}");

    let endpoints = body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{body}");
    let ep = &endpoints[0];
    assert_eq!(ep["path"], "/ws/events");
    assert!(ep.get("description").is_some(), "{ep}");
    assert_eq!(sorted_strings(&ep["channels"]), ["alerts", "jobs"]);
    assert_eq!(
        sorted_strings(&ep["events"]),
        ["alert.created", "alert.resolved", "job.progress"]
    );
    assert!(ep["authentication"].is_object(), "{ep}");

    let registry = body["event_registry"].as_object().unwrap();
    let created = &registry["alert.created"];
    assert_eq!(created["description"], "New alert");
    assert_eq!(created["channel"], "alerts");
    assert_eq!(created["producer"], "config");
    assert_eq!(created["aliases"], json!([]));
    assert_eq!(created["deprecated"], Value::Null);
    let fields = created["payload_fields"].as_object().unwrap();
    let names: Vec<&String> = fields.keys().collect();
    assert_eq!(names, ["count", "id", "severity"]);
    assert_eq!(fields["id"]["type"], "string");
    assert_eq!(fields["id"]["required"], true);
    assert_eq!(fields["count"]["type"], "integer");
    assert_eq!(fields["count"]["required"], false);
    assert_eq!(
        fields["severity"]["enum"],
        json!(["low", "medium", "high", "critical"])
    );

    let schema = &created["payload_schema"];
    assert_eq!(schema["type"], "object", "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert_eq!(sorted_strings(&schema["required"]), ["id", "severity"]);
    let props = schema["properties"].as_object().unwrap();
    let prop_names: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        prop_names,
        BTreeSet::from(["count", "id", "severity"]),
        "{schema}"
    );
    assert_eq!(props["id"]["type"], "string");

    let progress = &registry["job.progress"];
    assert_eq!(progress["channel"], "jobs");
    assert_eq!(progress["aliases"], json!(["job_progress"]));
    assert_eq!(progress["producer"], "config");
    let resolved = &registry["alert.resolved"];
    assert_eq!(
        resolved["deprecated"],
        "use alert.updated with status resolved"
    );

    for control in [
        "connection.established",
        "connection.channels",
        "connection.lagged",
    ] {
        let entry = &registry[control];
        assert_eq!(entry["channel"], "connection", "{control}: {entry}");
        assert!(entry["description"].is_string(), "{control}: {entry}");
    }

    assert_eq!(sorted_strings(&body["channels"]), ["alerts", "jobs"]);
    router.shutdown().await;
}

// ------------------------------------------------------------ publishing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_one_and_arrays_stamped_in_order() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events").await;
    let hello = c.recv().await;
    assert_eq!(hello["type"], "connection.established");

    let (status, body) = router.publish(&alert("a1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["sequences"][0]["epoch"], hello["payload"]["channels"]["alerts"]["epoch"],
        "a stamp is a position to recover from"
    );
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 1, "sequences": [seq("alerts", 1)]})
    );

    let batch = json!([
        alert("a2"),
        alert("a3"),
        {"type": "job_progress", "payload": {"job_id": "j1", "percent": 10}},
        alert("a4"),
    ]);
    let (status, body) = router.publish(&batch).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 4, "sequences": [
            seq("alerts", 2), seq("alerts", 3), seq("jobs", 1), seq("alerts", 4)
        ]})
    );

    let (status, body) = router.publish(&json!([alert("a5"), alert("a6")])).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 2, "sequences": [seq("alerts", 5), seq("alerts", 6)]})
    );

    let mut alerts = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..7 {
        let ev = c.recv().await;
        match ev["channel"].as_str() {
            Some("alerts") => alerts.push((
                ev["sequence"].as_u64().unwrap(),
                ev["payload"]["id"].as_str().unwrap().to_owned(),
            )),
            Some("jobs") => jobs.push(ev),
            _ => panic!("unexpected {ev}"),
        }
    }
    let want: Vec<(u64, String)> = (1..=6).map(|i| (i, format!("a{i}"))).collect();
    assert_eq!(alerts, want, "alerts arrive in array order");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["type"], "job.progress");
    assert_eq!(jobs[0]["sequence"], 1);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_without_json_content_type_is_415() {
    let router = start(BASE).await;
    let body = alert("a").to_string();
    let (status, reply) = post_raw(&router, "/api/events", body.clone(), None).await;
    assert_error(status, &reply, 415, "unsupported_media_type");
    let (status, reply) = post_raw(&router, "/api/events", body.clone(), Some("text/plain")).await;
    assert_error(status, &reply, 415, "unsupported_media_type");
    let (status, reply) = post_raw(
        &router,
        "/api/events",
        body,
        Some("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        without_epochs(&reply)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_bad_json_is_400_with_position() {
    let router = start(BASE).await;
    let body = "{\"type\":\"alert.created\",\n  \"payload\": }";
    let (status, reply) = post_raw(&router, "/api/events", body, Some("application/json")).await;
    assert_error(status, &reply, 400, "invalid_json");
    assert_eq!(reply["error"]["line"], 2, "{reply}");
    assert_eq!(reply["error"]["column"], 14, "{reply}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_json_deeper_than_max_json_depth_is_400() {
    let router = start(&config("max_json_depth = 3", "mode = \"none\"")).await;
    // Depth 3 is allowed: the object `count` is the wrong type, not too deep.
    let ok_depth =
        r#"{"type":"alert.created","payload":{"id":"a","severity":"low","count":{"x":1}}}"#;
    let (status, reply) =
        post_raw(&router, "/api/events", ok_depth, Some("application/json")).await;
    assert_error(status, &reply, 422, "invalid_payload");

    let first = "{\"type\":\"alert.created\",";
    let second = "\"payload\":{\"id\":\"a\",\"severity\":\"low\",\"count\":{\"x\":[1]}}}";
    let body = format!("{first}\n{second}");
    let (status, reply) = post_raw(&router, "/api/events", body, Some("application/json")).await;
    assert_error(status, &reply, 400, "invalid_json");
    assert_eq!(reply["error"]["line"], 2, "{reply}");
    let column = second.find('[').unwrap() + 1;
    assert_eq!(reply["error"]["column"], column, "{reply}");

    let (status, body) = router.publish(&alert("ok")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_unknown_type_is_404_with_did_you_mean() {
    let router = start(BASE).await;
    let (status, body) = router
        .publish(&json!({"type": "alert.creatd", "payload": {"id": "a", "severity": "low"}}))
        .await;
    assert_error(status, &body, 404, "unknown_event_type");
    assert_eq!(body["error"]["did_you_mean"], "alert.created", "{body}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_control_types_is_403_forbidden() {
    let router = start(BASE).await;
    for name in ["connection.established", "connection.foo"] {
        let (status, body) = router.publish(&json!({"type": name, "payload": {}})).await;
        assert_error(status, &body, 403, "forbidden");
    }
    // Also inside an array: nothing is published.
    let (status, body) = router
        .publish(&json!([alert("a"), {"type": "connection.lagged", "payload": {}}]))
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = router.publish(&alert("b")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_invalid_payload_lists_every_field() {
    let router = start(BASE).await;
    let (status, body) = router
        .publish(&json!({"type": "alert.created", "payload": {
            "severity": "urgent", "count": "three", "extra": 1
        }}))
        .await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![
            field(0, "count", "wrong_type", json!("integer")),
            field(0, "extra", "unknown", Value::Null),
            field(0, "id", "missing", json!("string")),
            field(
                0,
                "severity",
                "not_in_enum",
                json!(["low", "medium", "high", "critical"])
            ),
        ]
    );

    // A required field given as null is missing.
    let (status, body) = router
        .publish(&json!({"type": "alert.created", "payload": {"id": null, "severity": "low"}}))
        .await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![field(0, "id", "missing", json!("string"))]
    );

    // An optional field may be null.
    let (status, body) = router
        .publish(&json!({"type": "alert.created", "payload": {"id": "a", "severity": "low", "count": null}}))
        .await;
    assert_eq!(status, 202, "{body}");

    // 3.0 is an integer; 3.5 is not.
    let (status, body) = post_raw(
        &router,
        "/api/events",
        r#"{"type":"alert.created","payload":{"id":"a","severity":"low","count":3.0}}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 2)])
    );
    let (status, body) = router
        .publish(&json!({"type": "alert.created", "payload": {"id": "a", "severity": "low", "count": 3.5}}))
        .await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![field(0, "count", "wrong_type", json!("integer"))]
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_array_is_all_or_nothing() {
    let router = start(BASE).await;
    let (status, body) = router
        .publish(&json!([
            alert("a1"),
            {"type": "alert.created", "payload": {"id": "a2"}},
            alert("a3"),
        ]))
        .await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![field(1, "severity", "missing", json!("string"))]
    );
    let (status, body) = router.publish(&alert("a4")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)]),
        "nothing of the refused array was published"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_array_with_unknown_type_and_other_problem_is_422() {
    let router = start(BASE).await;
    let (status, body) = router
        .publish(&json!([
            {"type": "alert.creatd", "payload": {"id": "a", "severity": "low"}},
            {"type": "alert.created", "payload": {"id": "b"}},
            {"type": "zzzz.qqqq", "payload": {}},
        ]))
        .await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![
            field(0, "type", "unknown_type", json!("alert.created")),
            field(1, "severity", "missing", json!("string")),
            field(2, "type", "unknown_type", Value::Null),
        ]
    );
    let (status, body) = router.publish(&alert("c")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_too_large_body_and_event_are_413() {
    let router = start(&config(
        "max_publish_bytes = 4096\nmax_event_bytes = 512",
        "mode = \"none\"",
    ))
    .await;
    // The body is over max_publish_bytes.
    let (status, body) = router.publish(&alert(&"x".repeat(5000))).await;
    assert_error(status, &body, 413, "too_large");
    // The body fits, one event's envelope does not.
    let (status, body) = router
        .publish(&json!([alert("small"), alert(&"y".repeat(1000))]))
        .await;
    assert_error(status, &body, 413, "too_large");
    let (status, body) = router.publish(&alert("ok")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_deduplicates() {
    let router = start(BASE).await;
    let mut c = router.ws("/ws/events").await;
    assert_eq!(c.recv().await["type"], "connection.established");

    let keyed = |id: &str, key: &str| json!({"type": "alert.created", "payload": {"id": id, "severity": "low"}, "idempotency_key": key});
    let (status, body) = router.publish(&keyed("a1", "k1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 1, "sequences": [seq("alerts", 1)]})
    );
    // Again, even with another payload: the first sequence, not published.
    let (status, body) = router.publish(&keyed("a1-again", "k1")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 1, "sequences": [seq("alerts", 1)]})
    );
    let (status, body) = router.publish(&alert("a2")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 2)])
    );

    let ev = c.recv().await;
    assert_eq!(
        (ev["sequence"].clone(), ev["payload"]["id"].clone()),
        (json!(1), json!("a1"))
    );
    let ev = c.recv().await;
    assert_eq!(
        (ev["sequence"].clone(), ev["payload"]["id"].clone()),
        (json!(2), json!("a2")),
        "the duplicate was not delivered"
    );

    // The same key twice in one array.
    let (status, body) = router
        .publish(&json!([keyed("b1", "k2"), keyed("b2", "k2")]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body),
        json!({"accepted": 2, "sequences": [seq("alerts", 3), seq("alerts", 3)]})
    );
    let (status, body) = router.publish(&alert("a4")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 4)])
    );
    let ev = c.recv().await;
    assert_eq!(
        (ev["sequence"].clone(), ev["payload"]["id"].clone()),
        (json!(3), json!("b1"))
    );
    let ev = c.recv().await;
    assert_eq!(
        (ev["sequence"].clone(), ev["payload"]["id"].clone()),
        (json!(4), json!("a4"))
    );
    c.expect_silence(Duration::from_millis(200)).await;

    // A key over 128 bytes.
    let (status, body) = router.publish(&keyed("c", &"k".repeat(129))).await;
    assert_error(status, &body, 422, "invalid_payload");
    assert_eq!(
        sorted_fields(&body),
        vec![field(0, "idempotency_key", "wrong_type", json!("string"))]
    );
    // Exactly 128 bytes is fine.
    let (status, body) = router.publish(&keyed("d", &"k".repeat(128))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 5)])
    );
    router.shutdown().await;
}

// --------------------------------------------------------------- API keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_keys_from_variable() {
    std::env::set_var(
        "SY_TEST_KEYS_publish_keys_from_variable",
        "ci:secret1,secret2",
    );
    let router = start(&config(
        "",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_publish_keys_from_variable\"",
    ))
    .await;
    let (status, body) = router.publish(&alert("a")).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("Authorization", &bearer("nope"))],
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    for (i, key) in ["secret1", "secret2"].into_iter().enumerate() {
        let (status, body) = post_with(
            &router,
            "/api/events",
            &alert("a"),
            &[("Authorization", &bearer(key))],
        )
        .await;
        assert_eq!(status, 202, "{key}: {body}");
        assert_eq!(
            without_epochs(&body)["sequences"],
            json!([seq("alerts", i as u64 + 1)])
        );
    }
    // With keys configured, the loopback rule does not apply: a key is enough.
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[
            ("Authorization", &bearer("secret1")),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 3)])
    );
    // The entry's name is not the key.
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("Authorization", &bearer("ci"))],
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_separate_from_publish_keys() {
    std::env::set_var("SY_TEST_KEYS_admin_keys_separate", "pub:p1");
    std::env::set_var("SY_TEST_ADMIN_admin_keys_separate", "ops:a1");
    let router = start(&config(
        "",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_admin_keys_separate\"\nadmin_keys_env = \"SY_TEST_ADMIN_admin_keys_separate\"",
    ))
    .await;
    let (status, body) = router.get("/api/admin/config").await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = get_with(
        &router,
        "/api/admin/config",
        &[("Authorization", &bearer("p1"))],
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = get_with(
        &router,
        "/api/websocket/connections",
        &[("Authorization", &bearer("p1"))],
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = post_with(
        &router,
        "/api/admin/reload",
        &json!({}),
        &[("Authorization", &bearer("p1"))],
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");

    let (status, body) = get_with(
        &router,
        "/api/admin/config",
        &[("Authorization", &bearer("a1"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 1);
    let (status, body) = get_with(
        &router,
        "/api/websocket/connections",
        &[("Authorization", &bearer("a1"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for key in ["p1", "a1"] {
        let (status, body) = post_with(
            &router,
            "/api/events",
            &alert("a"),
            &[("Authorization", &bearer(key))],
        )
        .await;
        assert_eq!(status, 202, "{key} publishes: {body}");
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_file_is_relative_and_reread_on_reload() {
    std::env::set_var("SY_TEST_KEYS_api_keys_file", "env:fromenv");
    std::env::set_var("SY_TEST_ADMIN_api_keys_file", "ops:adm1");
    let auth = "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_api_keys_file\"\nadmin_keys_env = \"SY_TEST_ADMIN_api_keys_file\"";
    let router = start(&config("", auth)).await;
    let publish = |key: &'static str| {
        let router = &router;
        async move {
            post_with(
                router,
                "/api/events",
                &alert("a"),
                &[("Authorization", &bearer(key))],
            )
            .await
        }
    };
    let (status, body) = publish("fromenv").await;
    assert_eq!(status, 202, "{body}");

    // Switch to a key file, relative to the config's folder.
    std::fs::write(router.dir.path().join("keys.txt"), "ci:filekey1\n").unwrap();
    router.write_config(&config(
        "",
        &format!("{auth}\napi_keys_file = \"keys.txt\""),
    ));
    let (status, body) = post_with(
        &router,
        "/api/admin/reload",
        &json!({}),
        &[("Authorization", &bearer("adm1"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    let (status, body) = publish("filekey1").await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = publish("fromenv").await;
    assert_error(status, &body, 401, "unauthorized");

    // Change the file: re-read on the next reload.
    std::fs::write(router.dir.path().join("keys.txt"), "ci:filekey2\n").unwrap();
    let (status, body) = post_with(
        &router,
        "/api/admin/reload",
        &json!({}),
        &[("Authorization", &bearer("adm1"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = publish("filekey2").await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = publish("filekey1").await;
    assert_error(status, &body, 401, "unauthorized");
    router.shutdown().await;
}

// ------------------------------------------------------ loopback-only rule

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_is_answered() {
    let router = start(&config(
        "",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_never_set_loopback_only\"",
    ))
    .await;
    let (status, body) = router.publish(&alert("a")).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{body}");

    let forwarded = [("X-Forwarded-For", "203.0.113.9")];
    let (status, body) = post_with(&router, "/api/events", &alert("a"), &forwarded).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = get_with(&router, "/api/admin/config", &forwarded).await;
    assert_error(status, &body, 403, "forbidden");
    // A forwarded header naming loopback is not trusted either.
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("X-Forwarded-For", "127.0.0.1")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("Forwarded", "for=203.0.113.9")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_forwarding_loopback_is_loopback() {
    let router = start(&config(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_never_set_trusted_proxy\"",
    ))
    .await;
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("X-Forwarded-For", "127.0.0.1")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = get_with(
        &router,
        "/api/admin/config",
        &[("X-Forwarded-For", "127.0.0.1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Through the trusted proxy, a remote client is remote.
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    router.shutdown().await;
}

/// A forwarded entry that is not an IP address makes the client unknown,
/// never loopback; `ip:port` and `[v6]:port` are read as their address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_entries_never_open_admin_routes() {
    let router = start(&config(
        "trusted_proxies = [\"127.0.0.1\"]",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_never_set_spoofed_xff\"",
    ))
    .await;
    for entry in [
        "unknown",
        "_hidden",
        "not-an-ip",
        "2130706433",
        "",
        "127.0.0.1, unknown",
    ] {
        let (status, body) =
            get_with(&router, "/api/admin/config", &[("X-Forwarded-For", entry)]).await;
        assert_error(status, &body, 403, "forbidden");
    }
    for forwarded in [
        "for=unknown",
        "for=_hidden",
        "for=\"not-an-ip\"",
        "proto=https",
    ] {
        let (status, body) =
            get_with(&router, "/api/admin/config", &[("Forwarded", forwarded)]).await;
        assert_error(status, &body, 403, "forbidden");
    }
    for entry in ["127.0.0.1:51000", "[::1]:51000", "[::1]"] {
        let (status, body) =
            get_with(&router, "/api/admin/config", &[("X-Forwarded-For", entry)]).await;
        assert_eq!(status, 200, "{entry}: {body}");
    }
    let (status, body) = get_with(
        &router,
        "/api/admin/config",
        &[("Forwarded", "for=\"[::1]:4711\"")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_with(
        &router,
        "/api/admin/config",
        &[("X-Forwarded-For", "203.0.113.9:4711")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_none_admin_routes_answer_only_loopback() {
    let router = start(BASE).await;
    let (status, body) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = router.get("/api/websocket/connections").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");

    let forwarded = [("X-Forwarded-For", "203.0.113.9")];
    let (status, body) = get_with(&router, "/api/admin/config", &forwarded).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = get_with(&router, "/api/websocket/connections", &forwarded).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = post_with(&router, "/api/admin/reload", &json!({}), &forwarded).await;
    assert_error(status, &body, 403, "forbidden");
    // Publishing needs no key in mode none, from anywhere.
    let (status, body) = post_with(&router, "/api/events", &alert("a"), &forwarded).await;
    assert_eq!(status, 202, "{body}");
    router.shutdown().await;
}

/// On a dual-stack listener (`listen = "[::]:PORT"`, the documented IPv6
/// form) an IPv4 client's peer address is IPv4-mapped
/// (`::ffff:127.0.0.1`): it is still a loopback client, and still the
/// `127.0.0.1/32` of `trusted_proxies`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_of_a_dual_stack_listener_keep_their_ipv4_address() {
    let router = support::try_start_on(
        &config(
            "trusted_proxies = [\"127.0.0.1/32\"]",
            "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_never_set_dual_stack\"",
        ),
        "[::]:0".parse().unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("router did not start: {:?}", e.problems()));
    let v4 = format!("http://127.0.0.1:{}", router.addr.port());
    let client = reqwest::Client::new();
    let (status, body) = send(client.get(format!("{v4}/api/admin/config"))).await;
    assert_eq!(status, 200, "a client on this host over IPv4: {body}");
    // Through the trusted proxy (127.0.0.1), the forwarded client counts.
    let (status, body) = send(
        client
            .post(format!("{v4}/api/events"))
            .header("X-Forwarded-For", "127.0.0.1")
            .json(&alert("a")),
    )
    .await;
    assert_eq!(status, 202, "forwarded by a trusted proxy: {body}");
    router.shutdown().await;
}

/// A disconnect body that is not JSON is `400 invalid_json` with the
/// `line` and `column` of the fault, as every HTTP `invalid_json` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_bad_json_is_400_with_position() {
    let router = start(BASE).await;
    let (status, body) = post_raw(
        &router,
        "/api/admin/disconnect",
        "{\n  \"user\": ",
        Some("application/json"),
    )
    .await;
    assert_error(status, &body, 400, "invalid_json");
    assert_eq!(body["error"]["line"], 2, "{body}");
    assert!(body["error"]["column"].is_u64(), "{body}");
    router.shutdown().await;
}

/// The `Authorization` scheme is case-insensitive (RFC 9110 §11.1), as it
/// is for client tokens: `bearer <key>` is the key, not a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_scheme_is_case_insensitive() {
    std::env::set_var("SY_TEST_KEYS_scheme_case", "ci:s3cret");
    let router = start(&config(
        "",
        "mode = \"optional\"\napi_keys_env = \"SY_TEST_KEYS_scheme_case\"",
    ))
    .await;
    for header in ["bearer s3cret", "BEARER s3cret", "Bearer\ts3cret"] {
        let (status, body) = post_with(
            &router,
            "/api/events",
            &alert("a"),
            &[("Authorization", header)],
        )
        .await;
        assert_eq!(status, 202, "{header:?}: {body}");
    }
    router.shutdown().await;
}

// ----------------------------------------------------------------- Origin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_same_origin_only_by_default() {
    let router = start(BASE).await;
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden_origin");
    let (status, body) = post_with(
        &router,
        "/api/admin/reload",
        &json!({}),
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_error(status, &body, 403, "forbidden_origin");

    let same = format!("http://{}", router.addr);
    let (status, body) = post_with(&router, "/api/events", &alert("a"), &[("Origin", &same)]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        without_epochs(&body)["sequences"],
        json!([seq("alerts", 1)])
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_star_allows_any() {
    let router = start(&config("", "mode = \"none\"\nallowed_origins = [\"*\"]")).await;
    let (status, body) = post_with(
        &router,
        "/api/events",
        &alert("a"),
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    router.shutdown().await;
}

// ------------------------------------------------------------ admin config

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_config_records_reloads() {
    let router = start(BASE).await;
    let (status, body) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 1);
    assert!(body["config_version"].is_u64());
    assert!(body["loaded_at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(
        body["source"].as_str().unwrap().ends_with("config.toml"),
        "{body}"
    );
    assert_eq!(body["last_reload"], Value::Null);

    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    assert_eq!(body["applied"], true);
    assert_eq!(body["restart_required"], json!([]));
    assert!(body["warnings"].is_array(), "{body}");

    let (status, body) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    let last = &body["last_reload"];
    assert!(last["at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(last["result"], "applied");
    assert_eq!(last["errors"], json!([]));

    let bad = BASE.replace(
        "history = 100\n",
        "history = 100\nslow_consumer = \"sometimes\"\n",
    );
    assert_ne!(bad, BASE);
    router.write_config(&bad);
    let (status, body) = router.reload().await;
    assert_error(status, &body, 422, "invalid_config");
    let errors = body["error"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["key"], "channels[0].slow_consumer");
    assert_eq!(errors[0]["value"], "sometimes");
    assert!(errors[0]["problem"].is_string(), "{body}");

    let (status, body) = router.get("/api/admin/config").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2, "the old config keeps serving");
    let last = &body["last_reload"];
    assert!(last["at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(last["result"], "refused");
    let errors = last["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["key"], "channels[0].slow_consumer");
    assert_eq!(errors[0]["value"], "sometimes");
    assert!(errors[0]["problem"].is_string(), "{body}");
    router.shutdown().await;
}

// -------------------------------------------------------- connections list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_list_filter_and_paging() {
    let cfg = format!("{BASE}\n[[endpoints]]\npath = \"/ws/jobs\"\nchannels = [\"jobs\"]\n");
    let router = start(&cfg).await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for path in ["/ws/events", "/ws/events", "/ws/jobs"] {
        let mut c = router.ws(path).await;
        let hello = c.recv().await;
        assert_eq!(hello["type"], "connection.established");
        ids.push(
            hello["payload"]["connection_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        clients.push(c);
    }

    let (status, body) = router.get("/api/websocket/connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next"], Value::Null);
    let list = body["connections"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{body}");
    let by_id: HashMap<&str, &Value> = list
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    for (id, endpoint) in ids.iter().zip(["/ws/events", "/ws/events", "/ws/jobs"]) {
        let c = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} not listed: {body}"));
        assert_eq!(c["endpoint"], endpoint);
        assert_eq!(c["user"], Value::Null);
        assert_eq!(c["ip"], "127.0.0.1");
        assert_eq!(c["patterns"], Value::Null, "not subscribed yet");
        assert!(c["queue_depth"].is_u64(), "{c}");
        assert!(c["dropped"].is_u64(), "{c}");
        assert_eq!(c["dropped"], 0);
        assert!(c["connected_at"].as_str().unwrap().ends_with('Z'), "{c}");
    }

    clients[0]
        .send(&json!({"action": "subscribe", "events": ["alert.*", "job_progress"]}))
        .await;
    assert_eq!(
        clients[0].recv_type("subscribed").await["type"],
        "subscribed"
    );
    clients[1]
        .send(&json!({"action": "subscribe", "events": []}))
        .await;
    assert_eq!(
        clients[1].recv_type("subscribed").await["type"],
        "subscribed"
    );
    let (_, body) = router.get("/api/websocket/connections").await;
    let list = body["connections"].as_array().unwrap();
    let patterns: HashMap<&str, &Value> = list
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), &c["patterns"]))
        .collect();
    assert_eq!(
        sorted_strings(patterns[ids[0].as_str()]),
        ["alert.*", "job.progress"]
    );
    assert_eq!(*patterns[ids[1].as_str()], json!([]));
    assert_eq!(*patterns[ids[2].as_str()], Value::Null);

    let (status, body) = router
        .get("/api/websocket/connections?endpoint=%2Fws%2Fjobs")
        .await;
    assert_eq!(status, 200, "{body}");
    let list = body["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["id"], ids[2].as_str());
    assert_eq!(list[0]["endpoint"], "/ws/jobs");
    assert_eq!(body["next"], Value::Null);

    // Paging one at a time visits every connection exactly once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let path = match &after {
            None => "/api/websocket/connections?limit=1".to_owned(),
            Some(a) => format!("/api/websocket/connections?limit=1&after={a}"),
        };
        let (status, body) = router.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let list = body["connections"].as_array().unwrap();
        assert!(list.len() <= 1, "{body}");
        seen.extend(list.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "each connection once: {seen:?}");
    let seen_set: BTreeSet<&String> = seen.iter().collect();
    let ids_set: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(seen_set, ids_set);
    router.shutdown().await;
}

// ------------------------------------------------------------------ misc

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let router = start(BASE).await;
    let (status, body) = router.get("/api/nothing/here").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = router.get("/api/events").await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let (status, body) = send(reqwest::Client::new().delete(router.url("/health"))).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = router.post("/api/admin/config", &json!({})).await;
    assert_eq!(status, 405, "{body}");
    router.shutdown().await;
}

/// A body that does not arrive within `server.handshake_timeout_s` is
/// answered 408 `request_timeout` (docs/configuration.md, `[server]`:
/// request bodies are within the handshake timeout too), on the publish and
/// the admin routes, and the router goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_at_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = BASE.replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nhandshake_timeout_s = 1",
        1,
    );
    let router = start(&config).await;
    for path in ["/api/events", "/api/admin/disconnect"] {
        let mut tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut answer))
            .await
            .expect("answered and closed, not left hanging")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("\"request_timeout\""), "{path}: {answer}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{path}");
    }
    let (status, body) = router
        .publish(&json!({"type": "job.progress", "payload": {"job_id": "j"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    router.shutdown().await;
}

// ------------------------------------------------------- request bounds

/// Writes `request` on a fresh TCP connection and reads until the server
/// closes it (within [`support::WAIT`]).
async fn raw_exchange(router: &Router, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    // The server may refuse before it has read everything: a failed write
    // is fine, the answer is what counts.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed, not left hanging")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `lines` header lines of 64 bytes each.
fn padding(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("X-Pad-{i:04}: {}\r\n", "a".repeat(50)))
        .collect()
}

/// The JSON body of a raw HTTP answer.
fn raw_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Polls `/metrics` until `line` appears.
async fn wait_for_metric(router: &Router, line: &str) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let text = router.metrics().await;
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} never appeared in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request line plus headers over `server.max_header_bytes` is answered
/// 431 `header_too_large` (JSON) and the connection closed, without
/// waiting for the head to end; upgrades and event streams so refused are
/// counted. The bound
/// is per request: bodies and earlier requests on the connection do not
/// count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_max_header_bytes_is_431_and_closed() {
    let router = start(&config(
        "max_header_bytes = 4096\nhandshake_timeout_s = 60",
        "mode = \"none\"",
    ))
    .await;
    // ~13 KB of headers that never end.
    let never_ending = format!("GET /health HTTP/1.1\r\nHost: x\r\n{}", padding(200));
    let started = std::time::Instant::now();
    let answer = raw_exchange(&router, never_ending.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not the handshake timeout"
    );
    let body = raw_body(&answer);
    assert_eq!(body["error"]["code"], "header_too_large", "{answer}");
    assert_eq!(body["error"]["max_header_bytes"], 4096, "{answer}");

    // Under the bound: served, twice on one connection (8 KB of heads in all).
    let fits = format!("GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n", padding(50));
    let last = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
        padding(50)
    );
    let answer = raw_exchange(&router, format!("{fits}{last}").as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");

    // A body larger than the bound is not a header.
    let payload =
        json!({"type": "job.progress", "payload": {"job_id": "x".repeat(10_000)}}).to_string();
    let publish = format!(
        "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    let answer = raw_exchange(&router, publish.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
    // … nor on a kept-alive connection, where the next head counts alone.
    let keep_alive = publish.replacen("Connection: close\r\n", "", 1);
    let answer = raw_exchange(&router, format!("{keep_alive}{last}").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
    assert!(answer.contains("HTTP/1.1 200 OK"), "{answer}");

    // An upgrade or an event stream with too much header is refused the
    // same way, and counted.
    let upgrade =
        "GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let stream = "GET /ws/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n";
    for (counted, head) in [(1, upgrade), (2, stream)] {
        let answer = raw_exchange(&router, format!("{head}{}", padding(200)).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let line =
            format!("switchyard_upgrades_refused_total{{reason=\"header_too_large\"}} {counted}");
        wait_for_metric(&router, &line).await;
    }
    let (status, body) = router.get("/health").await;
    assert_eq!(status, 200, "{body}");
    router.shutdown().await;
}

/// A `Content-Length` over `server.max_publish_bytes` is refused 413 at
/// once, before any of the body is read (not after the body timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_max_publish_bytes_is_413_at_once() {
    let router = start(&config(
        "max_publish_bytes = 1000\nmax_header_bytes = 4096\nhandshake_timeout_s = 60",
        "mode = \"none\"",
    ))
    .await;
    let head = "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{\"type\":";
    let started = std::time::Instant::now();
    let answer = raw_exchange(&router, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert_eq!(raw_body(&answer)["error"]["code"], "too_large", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not the body timeout"
    );
    // Sent anyway, a refused body is not taken for the next request's head.
    let sent = format!(
        "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(20_000)
    );
    let answer = raw_exchange(&router, sent.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(!answer.contains("431"), "{answer}");
    router.shutdown().await;
}

// ------------------------------------------------------------------- CORS

/// A header of a response, as text.
fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// `response` answers `origin` as CORS wants: that origin allowed, and
/// `Vary: Origin` sent once.
fn assert_answers(response: &reqwest::Response, origin: &str) {
    assert_eq!(
        header_of(response, "access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let varies: Vec<&str> = response
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(varies, ["Origin"]);
}

/// Browsers get CORS answers from the origins `auth.allowed_origins` lists
/// (compared case-insensitively in scheme and host), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    let router = start(&config(
        "",
        "mode = \"none\"\nallowed_origins = [\"https://Dash.Example.com\"]",
    ))
    .await;
    let client = reqwest::Client::new();
    let dash = "https://dash.example.com";
    let preflight = client
        .request(reqwest::Method::OPTIONS, router.url("/api/events"))
        .header("Origin", dash)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_answers(&preflight, dash);
    let methods = header_of(&preflight, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = header_of(&preflight, "access-control-allow-headers").unwrap();
    for wanted in ["Authorization", "Content-Type", "Last-Event-ID"] {
        assert!(headers.contains(wanted), "{headers}");
    }
    // An endpoint's path is preflighted too: a `fetch` event stream that
    // sends `Authorization` asks first.
    let preflight = client
        .request(reqwest::Method::OPTIONS, router.url("/ws/events"))
        .header("Origin", dash)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_answers(&preflight, dash);
    assert_eq!(
        header_of(&preflight, "access-control-allow-methods").as_deref(),
        Some("GET, HEAD, OPTIONS")
    );

    let shouting = "HTTPS://DASH.example.COM";
    let response = client
        .post(router.url("/api/events"))
        .header("Origin", shouting)
        .json(&alert("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_answers(&response, shouting);
    let health = client
        .get(router.url("/health"))
        .header("Origin", dash)
        .send()
        .await
        .unwrap();
    assert_answers(&health, dash);

    // A foreign origin gets no CORS header; its preflight and POST are 403.
    let evil = "https://evil.example";
    let health = client
        .get(router.url("/health"))
        .header("Origin", evil)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(header_of(&health, "access-control-allow-origin"), None);
    let (status, body) = send(
        client
            .request(reqwest::Method::OPTIONS, router.url("/api/events"))
            .header("Origin", evil),
    )
    .await;
    assert_error(status, &body, 403, "forbidden_origin");
    let (status, body) = post_with(&router, "/api/events", &alert("a"), &[("Origin", evil)]).await;
    assert_error(status, &body, 403, "forbidden_origin");
    let metrics = router.metrics().await;
    assert!(
        metrics.contains("switchyard_events_refused_total{reason=\"forbidden_origin\"} 1"),
        "{metrics}"
    );
    router.shutdown().await;

    // allowed_origins = [] (same origin only): no CORS header at all.
    let router = start(BASE).await;
    let same = format!("http://{}", router.addr);
    let response = client
        .get(router.url("/health"))
        .header("Origin", &same)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header_of(&response, "access-control-allow-origin"), None);
    let preflight = client
        .request(reqwest::Method::OPTIONS, router.url("/api/events"))
        .header("Origin", &same)
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header_of(&preflight, "access-control-allow-origin"), None);
    assert_eq!(
        header_of(&preflight, "allow").as_deref(),
        Some("POST, OPTIONS")
    );
    router.shutdown().await;
}

/// A known route or endpoint path with a wrong method is 405 with `Allow`
/// (and a JSON body); `HEAD` is answered on every GET route, without a body.
/// RFC 6455 upgrades a `GET` only: a `POST` carrying the upgrade headers
/// is a wrong method on an endpoint path, as without them (it was
/// upgraded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_asked_with_another_method_than_get_is_405() {
    let router = start(BASE).await;
    let response = reqwest::Client::new()
        .post(router.url("/ws/events"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        header_of(&response, "allow").as_deref(),
        Some("GET, HEAD, OPTIONS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow_and_head_is_answered() {
    let router = start(BASE).await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/events", "POST, OPTIONS"),
        (reqwest::Method::DELETE, "/health", "GET, HEAD, OPTIONS"),
        (
            reqwest::Method::PUT,
            "/api/admin/config",
            "GET, HEAD, OPTIONS",
        ),
        // A configured endpoint's path: not "nothing at /ws/events".
        (reqwest::Method::POST, "/ws/events", "GET, HEAD, OPTIONS"),
    ] {
        let response = client
            .request(method.clone(), router.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            header_of(&response, "allow").as_deref(),
            Some(allow),
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }
    for path in [
        "/health",
        "/health/live",
        "/metrics",
        "/api/websocket/capabilities",
        "/api/admin/config",
    ] {
        let response = client.head(router.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(
            header_of(&response, "content-type").is_some(),
            "HEAD {path}"
        );
        assert!(response.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    router.shutdown().await;
}

/// Past `server.max_pending_handshakes`, a new TCP connection is closed at
/// once, without a response, and counted as `too_many_pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_pending_handshakes_are_closed_and_counted() {
    use tokio::io::AsyncReadExt;
    let router = start(&config("max_pending_handshakes = 1", "mode = \"none\"")).await;
    // An idle connection holds the one pending slot (for the handshake timeout).
    let _idle = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let metrics = || router.app.router.metrics().encode();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let mut tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "closed at once, not left open");
        if metrics().contains("switchyard_upgrades_refused_total{reason=\"too_many_pending\"}") {
            assert!(
                answer.is_empty(),
                "no response: {}",
                String::from_utf8_lossy(&answer)
            );
            break;
        }
        // The idle connection may not have been accepted yet.
        assert!(tokio::time::Instant::now() < deadline, "{}", metrics());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `503 overloaded` over HTTP: a publisher that cannot get the routing table
/// within `server.publish_wait_ms` is told to retry, and it is counted.
/// With the wait at 0, the subscribe bursts of a few clients (each holds the
/// table's write lock for a moment) are enough to be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_cannot_get_the_routing_table_in_time_gets_503_overloaded() {
    let router = start(&support::with_server(
        "publish_wait_ms = 0\nclient_rate_limit = { messages_per_s = 100000, burst = 100000 }",
    ))
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut churners = Vec::new();
    for _ in 0..6 {
        let mut c = router.ws("/ws/events").await;
        let stop = stop.clone();
        churners.push(tokio::spawn(async move {
            let patterns: Vec<String> = (0..128).map(|i| format!("nothing{i}.p{i}")).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(&json!({"action": "subscribe", "events": patterns}))
                    .await;
                c.recv_type("subscribed").await;
                c.send(&json!({"action": "unsubscribe"})).await;
                c.recv_type("unsubscribed").await;
            }
        }));
    }
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (retry_after, body) = loop {
        let response = client
            .post(router.url("/api/events"))
            .json(&alert("busy"))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            let retry = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .to_owned();
            break (retry, response.json::<Value>().await.unwrap());
        }
        assert_eq!(response.status(), 202);
        assert!(
            std::time::Instant::now() < deadline,
            "no publish ever waited for the table"
        );
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churners {
        c.await.unwrap();
    }
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(retry_after, "1");
    let metrics = router.metrics().await;
    assert!(
        metrics.contains("switchyard_events_refused_total{reason=\"overloaded\"}"),
        "{metrics}"
    );
    router.shutdown().await;
}
