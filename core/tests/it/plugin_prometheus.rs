//! The `prometheus` plugin through the real router with the real cdylib:
//! alerts POSTed to its HTTP input (Alertmanager webhook JSON and
//! Prometheus' postable-alerts array), alerts delivered by a real
//! Alertmanager (Debian's `prometheus-alertmanager`), and scraping a
//! Prometheus text page into `queue.metrics`.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, plugin, start, ChildGuard, Client, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A router with channels `infrastructure` and `system` on `/ws/system`
/// and one prometheus instance with `plugin_config`. The plugin declares
/// both event types itself.
fn config(plugin_config: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
mode = "none"

[log]
level = "warn"

[[channels]]
name = "infrastructure"
history = 100

[[channels]]
name = "system"
history = 100

[[endpoints]]
path = "/ws/system"
channels = ["infrastructure", "system"]

[[plugins]]
name = "prometheus"
library = "{}"
[plugins.config]
{plugin_config}
"#,
        plugin("switchyard_prometheus")
    )
}

async fn client(router: &Router) -> Client {
    let mut c = router.ws("/ws/system").await;
    c.established().await;
    c
}

async fn post(url: &str, body: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST reaches the plugin");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Checks the envelope and the exact payload keys of an `infrastructure.alert`.
fn alert_payload(msg: &Value) -> &Value {
    assert_eq!(msg["type"], "infrastructure.alert", "{msg}");
    assert_eq!(msg["channel"], "infrastructure", "{msg}");
    let p = &msg["payload"];
    let mut keys: Vec<&str> = p
        .as_object()
        .expect("payload object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "alertname",
            "component",
            "ends_at",
            "fingerprint",
            "labels",
            "severity",
            "started_at",
            "status",
            "summary"
        ],
        "{msg}"
    );
    let fp = p["fingerprint"].as_str().expect("fingerprint string");
    assert!(
        fp.len() == 16 && fp.bytes().all(|b| b.is_ascii_hexdigit()),
        "{msg}"
    );
    p
}

// ---------------------------------------------------------------------------
// (a) POSTed webhook and postable alerts
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_webhook_and_postable_alerts_arrive_firing_then_resolved() {
    let port = free_port();
    let router = start(&config(&format!("listen = \"127.0.0.1:{port}\""))).await;
    let mut c = client(&router).await;
    let url = format!("http://127.0.0.1:{port}/api/v2/alerts");

    // An Alertmanager webhook notification (version 4) with one firing alert.
    let webhook = json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "switchyard",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "job": "api", "severity": "critical"},
        "commonAnnotations": {"summary": "p99 latency above 2s"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighLatency", "job": "api", "severity": "critical", "instance": "api-1:80"},
            "annotations": {"summary": "p99 latency above 2s", "description": "long"},
            "startsAt": "2026-11-23T06:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "1234567890abcdef"
        }]
    });
    let (status, body) = post(&url, webhook.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    let p = alert_payload(&msg);
    assert_eq!(p["alertname"], "HighLatency");
    assert_eq!(p["status"], "firing");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "api", "component falls back to job");
    assert_eq!(p["summary"], "p99 latency above 2s");
    assert_eq!(p["started_at"], "2026-11-23T06:00:00.123Z");
    assert_eq!(p["ends_at"], Value::Null);
    assert_eq!(
        p["fingerprint"], "1234567890abcdef",
        "the webhook's is kept"
    );
    assert_eq!(p["labels"]["instance"], "api-1:80");

    // The same alert resolved, in a webhook.
    let mut resolved = webhook.clone();
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    resolved["alerts"][0]["endsAt"] = json!("2026-11-23T06:10:00Z");
    let (status, body) = post(&url, resolved.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    let p = alert_payload(&msg);
    assert_eq!(p["status"], "resolved");
    assert_eq!(p["ends_at"], "2026-11-23T06:10:00.000Z");

    // Prometheus' postable-alerts array: firing (no endsAt), then resolved
    // (endsAt in the past); the fingerprint is computed from the labels.
    let labels = json!({"alertname": "DiskFull", "instance": "db-1:9100", "severity": "warning"});
    let firing = json!([{"labels": labels, "annotations": {"description": "disk 95% full"},
        "startsAt": "2026-11-23T07:00:00Z", "generatorURL": "http://prometheus:9090/graph"}]);
    let (status, body) = post(&url, firing.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    let p = alert_payload(&msg);
    assert_eq!(p["alertname"], "DiskFull");
    assert_eq!(p["status"], "firing");
    assert_eq!(
        p["component"], "db-1:9100",
        "component falls back to instance"
    );
    assert_eq!(
        p["summary"], "disk 95% full",
        "summary falls back to description"
    );
    assert_eq!(p["ends_at"], Value::Null);
    // Computed independently: FNV-1a 64 over the sorted labels, 0xff-separated
    // (the value a real Alertmanager 0.25 reports for this label set).
    let mut h: u64 = 0xcbf29ce484222325;
    for (k, v) in [
        ("alertname", "DiskFull"),
        ("instance", "db-1:9100"),
        ("severity", "warning"),
    ] {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    assert_eq!(p["fingerprint"], format!("{h:016x}"));
    let fingerprint = p["fingerprint"].clone();

    let past = json!([{"labels": labels, "startsAt": "2026-11-23T07:00:00Z",
        "endsAt": "2026-11-23T07:05:00Z"}]);
    let (status, body) = post(&url, past.to_string(), &[]).await;
    assert_eq!(status, 200, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    let p = alert_payload(&msg);
    assert_eq!(p["status"], "resolved");
    assert_eq!(p["ends_at"], "2026-11-23T07:05:00.000Z");
    assert_eq!(p["fingerprint"], fingerprint);

    // Refusals: bad JSON and bad shapes (400), other paths (404), GET (405).
    for bad in [
        "{nope",
        "42",
        r#"{"status":"firing"}"#,
        r#"[{"labels":{"a":1}}]"#,
    ] {
        let (status, body) = post(&url, bad.to_owned(), &[]).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    let (status, body) = post(
        &format!("http://127.0.0.1:{port}/api/v1/alerts"),
        "[]".into(),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    c.expect_silence(Duration::from_millis(300)).await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_body_bounds_are_enforced() {
    let port = free_port();
    let var = "SWITCHYARD_TEST_PROMETHEUS_TOKEN";
    std::env::set_var(var, "s3cret-token");
    let router = start(&config(&format!(
        "listen = \"127.0.0.1:{port}\"\nmax_body_bytes = 1024\ntoken_env = \"{var}\""
    )))
    .await;
    let mut c = client(&router).await;
    let url = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let one = json!([{"labels": {"alertname": "Tok"}}]).to_string();

    let (status, body) = post(&url, one.clone(), &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = post(&url, one.clone(), &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    let auth = ("Authorization", "Bearer s3cret-token");

    // Over max_body_bytes: refused from Content-Length, before reading.
    let big = json!([{"labels": {"alertname": "Big", "pad": "x".repeat(4096)}}]).to_string();
    let (status, body) = post(&url, big.clone(), &[auth]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large");
    // A much larger body too (the client sees the answer, not a reset).
    let huge = "x".repeat(3 * 1024 * 1024);
    let (status, _) = post(&url, huge, &[auth]).await;
    assert_eq!(status, 413);

    // Over the bound while reading a chunked body.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = "POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        tcp.write_all(format!("200\r\n{}\r\n", "y".repeat(512)).as_bytes())
            .await
            .unwrap();
    }
    let mut answer = String::new();
    tokio::time::timeout(support::WAIT, tcp.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A chunked body within the bound is taken.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = one.as_bytes();
    let request = format!(
        "POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        body.len(),
        one
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(support::WAIT, tcp.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let msg = c.recv_type("infrastructure.alert").await;
    assert_eq!(msg["payload"]["alertname"], "Tok");

    let (status, body) = post(&url, one, &[auth]).await;
    assert_eq!(status, 200, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    assert_eq!(msg["payload"]["alertname"], "Tok");
    c.expect_silence(Duration::from_millis(300)).await;
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// (b) A real Alertmanager delivering through its webhook receiver
// ---------------------------------------------------------------------------

fn start_alertmanager(dir: &Path, am_port: u16, plugin_port: u16) -> ChildGuard {
    let config = format!(
        r#"
global:
  resolve_timeout: 1m
route:
  receiver: switchyard
  group_by: ['alertname']
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: switchyard
    webhook_configs:
      - url: http://127.0.0.1:{plugin_port}/api/v2/alerts
        send_resolved: true
"#
    );
    let config_path = dir.join("alertmanager.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus-alertmanager");
    ChildGuard(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_delivers_firing_then_resolved() {
    // No skip: a missing tool must fail the test, not pass it (scripts/test
    // installs it).
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} is missing: install Debian's prometheus-alertmanager \
         (scripts/test does so when run as root)"
    );
    let plugin_port = free_port();
    let router = start(&config(&format!("listen = \"127.0.0.1:{plugin_port}\""))).await;
    let mut c = client(&router).await;

    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let _am = start_alertmanager(dir.path(), am_port, plugin_port);
    let am = format!("http://127.0.0.1:{am_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{am}/-/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not become ready; its log:\n{}",
            std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let labels = json!({"alertname": "QueueBacklog", "severity": "critical",
        "component": "ingest", "instance": "ingest-1:9100"});
    let starts = chrono::Utc::now() - chrono::Duration::seconds(30);
    let alert = json!([{"labels": labels,
        "annotations": {"summary": "ingest queue is backing up"},
        "startsAt": starts.to_rfc3339(), "generatorURL": "http://prometheus:9090/graph"}]);
    let r = http
        .post(format!("{am}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "Alertmanager refused: {r:?}");

    let msg = c.recv_type("infrastructure.alert").await;
    let p = alert_payload(&msg);
    assert_eq!(p["alertname"], "QueueBacklog");
    assert_eq!(p["status"], "firing", "{msg}");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "ingest");
    assert_eq!(p["summary"], "ingest queue is backing up");
    assert_eq!(p["ends_at"], Value::Null);
    assert_eq!(p["labels"], labels);
    // Alertmanager's own fingerprint for this alert (GET /api/v2/alerts) is
    // the one delivered, and the one the plugin computes for the same labels.
    let listed: Value = http
        .get(format!("{am}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["fingerprint"], p["fingerprint"], "{listed}");
    let fingerprint = p["fingerprint"].clone();

    // Resolve it: post again with endsAt in the past.
    let ends = chrono::Utc::now() - chrono::Duration::seconds(1);
    let resolved = json!([{"labels": labels,
        "annotations": {"summary": "ingest queue is backing up"},
        "startsAt": starts.to_rfc3339(), "endsAt": ends.to_rfc3339()}]);
    let r = http
        .post(format!("{am}/api/v2/alerts"))
        .json(&resolved)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "Alertmanager refused: {r:?}");
    let p = loop {
        let msg = c.recv_type("infrastructure.alert").await;
        // A repeat of the firing notification may come first; wait for the resolution.
        if msg["payload"]["status"] == "resolved" {
            break alert_payload(&msg).clone();
        }
    };
    assert_eq!(p["alertname"], "QueueBacklog");
    assert_eq!(p["fingerprint"], fingerprint);
    assert!(p["ends_at"].is_string(), "{p}");

    // The same labels POSTed directly as a postable alert get the same fingerprint.
    let (status, body) = post(
        &format!("http://127.0.0.1:{plugin_port}/api/v2/alerts"),
        json!([{"labels": labels}]).to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let msg = c.recv_type("infrastructure.alert").await;
    assert_eq!(msg["payload"]["fingerprint"], fingerprint);
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// (c) Scraping a Prometheus text page
// ---------------------------------------------------------------------------

const PAGE: &str = "# HELP queue_pending Items waiting.\n\
# TYPE queue_pending gauge\n\
queue_pending{queue=\"a\"} 3\n\
queue_pending{queue=\"b\"} 4\n\
# TYPE queue_processing gauge\n\
queue_processing{queue=\"a\"} 2\n\
queue_processing{queue=\"b\"} 0\n\
queue_wait_ms{queue=\"a\"} 125.5\n\
queue_wait_ms{queue=\"b\"} 80\n";

/// Serves `PAGE` to every request on a fresh port; returns the port.
async fn serve_page() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_emits_summed_queue_metrics() {
    let page_port = serve_page().await;
    let dead_port = free_port();
    let router = start(&config(&format!(
        r#"listen = ""
scrape = [
  {{ url = "http://127.0.0.1:{page_port}/metrics", interval_ms = 200, metrics = {{ pending = "queue_pending", processing = "queue_processing{{queue=\"a\"}}", pending_batches = "no_such_metric", avg_wait_time_ms = "queue_wait_ms{{queue=\"b\"}}" }} }},
  {{ url = "http://127.0.0.1:{dead_port}/metrics", interval_ms = 200, metrics = {{ pending = "queue_pending" }} }},
]"#
    )))
    .await;
    let mut c = client(&router).await;
    for _ in 0..2 {
        let msg = c.recv_type("queue.metrics").await;
        assert_eq!(msg["channel"], "system", "{msg}");
        assert_eq!(
            msg["payload"],
            json!({"pending": 7.0, "processing": 2.0, "avg_wait_time_ms": 80.0}),
            "summed; the unmatched field is left out: {msg}"
        );
    }
    // No alert input: nothing listens on the default port for this instance,
    // and its registry has only queue.metrics.
    let (_, caps) = router.get("/api/websocket/capabilities").await;
    let text = caps.to_string();
    assert!(text.contains("queue.metrics"), "{text}");
    assert!(!text.contains("infrastructure.alert"), "{text}");
    router.shutdown().await;
}
