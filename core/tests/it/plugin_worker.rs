//! The `worker` plugin through the real router: the real cdylib loaded
//! through the ABI, health-checking real local servers (HTTP and TCP) on
//! 127.0.0.1, its `worker.*` events reaching a real WebSocket client.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{plugin, start, try_start, Client, Router, BASE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// BASE plus channel `workers` on endpoint `/ws/workers` and one worker
/// plugin instance named `health` whose `[plugins.config]` is `config`.
fn worker_config(config: &str) -> String {
    format!(
        "{BASE}
[[channels]]
name = \"workers\"
history = 1000

[[endpoints]]
path = \"/ws/workers\"
channels = [\"workers\"]

[[plugins]]
name = \"health\"
library = \"{}\"
stop_timeout_s = 30
[plugins.config]
{config}
",
        plugin("switchyard_worker")
    )
}

/// A tiny HTTP server on `127.0.0.1:port` (0 = any) answering every
/// request with `200 OK`; aborting the task closes the listener.
async fn http_server(port: u16) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, task)
}

/// Stops a server started by [`http_server`] or [`tcp_server`]: once this
/// returns, its listener is closed and connecting is refused.
async fn stop_server(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

/// A TCP listener on `127.0.0.1:port` (0 = any) that accepts and closes.
async fn tcp_server(port: u16) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    (port, task)
}

/// A client on `/ws/workers` that first replays the channel from its start
/// (`since=workers:<epoch>:0`), so it sees every worker event, even those
/// emitted before it connected.
async fn replaying_client(router: &Router) -> Client {
    let mut first = router.ws("/ws/workers").await;
    let hello = first.established().await;
    let epoch = hello["payload"]["channels"]["workers"]["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch for workers in {hello}"))
        .to_owned();
    let mut c = router
        .ws(&format!("/ws/workers?since=workers:{epoch}:0"))
        .await;
    c.established().await;
    c
}

/// The next `worker.*` event about worker `name` (other messages skipped),
/// with its envelope and payload checked.
async fn next_event(c: &mut Client, name: &str) -> Value {
    loop {
        let msg = c.recv().await;
        let ty = msg["type"].as_str().unwrap_or_default();
        if !ty.starts_with("worker.") || msg["payload"]["worker_name"] != name {
            continue;
        }
        assert_eq!(msg["channel"], "workers", "{msg}");
        assert!(msg["sequence"].is_u64(), "{msg}");
        let p = &msg["payload"];
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "consecutive_failures",
                "error",
                "state",
                "timestamp",
                "worker_name",
                "worker_type"
            ],
            "{msg}"
        );
        assert!(is_ms_timestamp(&p["timestamp"]), "{msg}");
        return msg;
    }
}

/// Asserts `ev` is `ty` with `state` and `consecutive_failures` = `failures`.
fn assert_worker_event(ev: &Value, ty: &str, state: &str, failures: u64) {
    assert_eq!(ev["type"], ty, "{ev}");
    assert_eq!(ev["payload"]["state"], state, "{ev}");
    assert_eq!(ev["payload"]["consecutive_failures"], failures, "{ev}");
    if failures == 0 {
        assert!(ev["payload"]["error"].is_null(), "{ev}");
    } else {
        let error = ev["payload"]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "a failure says why: {ev}");
    }
}

/// RFC 3339 UTC with milliseconds and `Z`, e.g. `2026-11-23T06:00:00.123Z`.
fn is_ms_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

async fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared: restart_command did not run",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_started_failed_error_stopped_recovered() {
    let (port, server) = http_server(0).await;
    let router = start(&worker_config(&format!(
        "workers = [{{ name = \"api\", type = \"analysis\", \
         check = \"http://127.0.0.1:{port}/health\", interval_ms = 100, timeout_ms = 500, \
         failure_threshold = 2 }}]"
    )))
    .await;
    let mut c = replaying_client(&router).await;

    let started = next_event(&mut c, "api").await;
    assert_worker_event(&started, "worker.started", "running", 0);
    assert_eq!(started["payload"]["worker_type"], "analysis");
    assert_eq!(started["sequence"], 1, "the first event of the channel");

    stop_server(server).await;
    let ev = next_event(&mut c, "api").await;
    assert_worker_event(&ev, "worker.health_check_failed", "running", 1);
    let ev = next_event(&mut c, "api").await;
    assert_worker_event(&ev, "worker.health_check_failed", "running", 2);
    let error = next_event(&mut c, "api").await;
    assert_worker_event(&error, "worker.error", "error", 2);
    let stopped = next_event(&mut c, "api").await;
    assert_worker_event(&stopped, "worker.stopped", "stopped", 2);
    let why = stopped["payload"]["error"].as_str().unwrap();
    assert!(why.contains(&port.to_string()), "names the target: {why}");

    // Down: further failures emit nothing.
    c.expect_silence(Duration::from_millis(500)).await;

    let (_, server) = http_server(port).await;
    let recovered = next_event(&mut c, "api").await;
    assert_worker_event(&recovered, "worker.recovered", "running", 0);
    assert_eq!(recovered["payload"]["worker_type"], "analysis");
    // Sequences on the channel are gapless: 1 started, 2-5 down, 6 recovered.
    assert_eq!(recovered["sequence"], 6, "{recovered}");

    // The plugin declared its types (no [[event_types]] in the config).
    let (status, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(status, 200, "{caps}");
    for ty in [
        "worker.started",
        "worker.stopped",
        "worker.health_check_failed",
        "worker.restarting",
        "worker.recovered",
        "worker.error",
    ] {
        let entry = &caps["event_registry"][ty];
        assert_eq!(entry["channel"], "workers", "{ty}: {entry}");
        assert_eq!(entry["producer"], "health", "{ty}: {entry}");
    }
    let (_, health) = router.get("/health").await;
    assert_eq!(health["plugins"]["health"]["state"], "running", "{health}");

    // The plugin's stop returns on its own: well within stop_timeout_s (30),
    // so the instance was not abandoned.
    let t = Instant::now();
    router.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    stop_server(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_with_restart_command() {
    let (port, server) = tcp_server(0).await;
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("restarted");
    let router = start(&worker_config(&format!(
        "workers = [{{ name = \"cache\", type = \"timeout\", check = \"tcp://127.0.0.1:{port}\", \
         interval_ms = 100, timeout_ms = 500, failure_threshold = 1, \
         restart_command = [\"touch\", \"{}\"], restart_backoff_s = 60 }}]",
        marker.display()
    )))
    .await;
    let mut c = replaying_client(&router).await;

    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.started", "running", 0);
    assert_eq!(ev["payload"]["worker_type"], "timeout");
    assert!(!marker.exists());

    stop_server(server).await;
    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.health_check_failed", "running", 1);
    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.error", "error", 1);
    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.stopped", "stopped", 1);
    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.restarting", "starting", 1);
    wait_for_file(&marker).await;

    // Still down, within restart_backoff_s: no second restart, no event.
    c.expect_silence(Duration::from_millis(600)).await;

    let (_, server) = tcp_server(port).await;
    let ev = next_event(&mut c, "cache").await;
    assert_worker_event(&ev, "worker.recovered", "running", 0);
    router.shutdown().await;
    stop_server(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_are_checked_independently() {
    let (http_port, http) = http_server(0).await;
    let (tcp_port, tcp) = tcp_server(0).await;
    let router = start(&worker_config(&format!(
        "workers = [
  {{ name = \"web\", type = \"metrics\", check = \"http://127.0.0.1:{http_port}/\", interval_ms = 100, failure_threshold = 1 }},
  {{ name = \"db\", type = \"detection\", check = \"tcp://127.0.0.1:{tcp_port}\", interval_ms = 100, failure_threshold = 1 }},
]"
    )))
    .await;
    let mut c = replaying_client(&router).await;
    let mut started = Vec::new();
    while started.len() < 2 {
        let msg = c.recv().await;
        if msg["type"] == "worker.started" {
            started.push(msg["payload"]["worker_name"].as_str().unwrap().to_owned());
        }
    }
    started.sort();
    assert_eq!(started, ["db", "web"]);

    // Only the TCP target goes away: only `db` goes down.
    stop_server(tcp).await;
    let ev = next_event(&mut c, "db").await;
    assert_worker_event(&ev, "worker.health_check_failed", "running", 1);
    assert_eq!(ev["payload"]["worker_type"], "detection");
    let ev = next_event(&mut c, "db").await;
    assert_worker_event(&ev, "worker.error", "error", 1);
    let ev = next_event(&mut c, "db").await;
    assert_worker_event(&ev, "worker.stopped", "stopped", 1);
    c.expect_silence(Duration::from_millis(400)).await;
    router.shutdown().await;
    stop_server(http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_worker_config_refuses_start_naming_the_key() {
    for (config, key) in [
        (
            "workers = [{ name = \"a\", type = \"gpu\", check = \"tcp://127.0.0.1:1\" }]",
            "workers[0].type",
        ),
        (
            "workers = [{ name = \"a\", type = \"metrics\", check = \"tcp://127.0.0.1:1\", failure_threshold = 0 }]",
            "workers[0].failure_threshold",
        ),
        (
            "workers = [{ name = \"a\", type = \"metrics\", check = \"tcp://127.0.0.1:1\", intervl_ms = 5 }]",
            "workers[0].intervl_ms",
        ),
    ] {
        let problems = match try_start(&worker_config(config)).await {
            Ok(_) => panic!("started with {config}"),
            Err(e) => e.problems(),
        };
        let problem = problems
            .iter()
            .find(|p| p.key.as_deref() == Some("plugins[0].config"))
            .unwrap_or_else(|| panic!("no problem keyed plugins[0].config: {problems:#?}"));
        assert!(problem.problem.contains(key), "{config}: {}", problem.problem);
    }
}
