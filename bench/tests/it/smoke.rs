//! Tiny-size run of the load generator against a real router: N = 20
//! subscribers, M = 50 events. Checks that nothing is lost or duplicated and
//! that the report has every field. Speed is never asserted.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{generator, repo_root, router_binary};

/// The router process; killed when dropped.
struct Router {
    child: Child,
    addr: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the router on bench/router.toml with a free port and waits for it
/// to listen (the JSON log line gives the bound address).
fn start_router() -> Router {
    let mut child = Command::new(router_binary())
        .args(["--config", "bench/router.toml", "--listen", "127.0.0.1:0"])
        .current_dir(repo_root())
        .env("RUST_LOG", "info")
        .env("SWITCHYARD__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the router");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(addr) = v["fields"]["addr"].as_str() {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the router logged its listen address");
    Router { child, addr }
}

fn field<'a>(report: &'a Value, path: &str) -> &'a Value {
    let mut v = report;
    for key in path.split('.') {
        assert!(v.get(key).is_some(), "report lacks `{path}`:\n{report:#}");
        v = &v[key];
    }
    v
}

#[test]
fn tiny_run_loses_and_duplicates_nothing() {
    let router = start_router();
    let dir = tempfile::tempdir().expect("temp dir");
    let pid = router.child.id().to_string();
    let url = format!("http://{}", router.addr);
    let json_path = dir.path().join("report.json");
    let report = generator(&[
        "run",
        "--url",
        &url,
        "-n",
        "20",
        "-m",
        "50",
        "--batch",
        "10",
        "--server-pid",
        &pid,
        "--settle-ms",
        "200",
        "--json",
        json_path.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicated"], 0, "{report:#}");
    assert_eq!(report["connected"], 20, "{report:#}");
    assert_eq!(report["deliveries"], 1000, "{report:#}");
    assert_eq!(report["expected_deliveries"], 1000, "{report:#}");
    assert_eq!(report["publish"]["accepted"], 50, "{report:#}");
    assert_eq!(report["publish"]["errors"], 0, "{report:#}");
    for path in [
        "server",
        "connections",
        "connected",
        "connect_errors",
        "events",
        "batch",
        "publishers",
        "rate",
        "frame_bytes",
        "publish.requests",
        "publish.accepted",
        "publish.events_per_s",
        "reloads.ok",
        "expected_deliveries",
        "deliveries",
        "lost",
        "duplicated",
        "lagged_dropped",
        "duration_s",
        "deliveries_per_s",
        "latency_us.send_to_receipt.p50",
        "latency_us.send_to_receipt.p99",
        "latency_us.send_to_receipt.p999",
        "latency_us.accept_to_receipt.p50",
        "latency_us.accept_to_receipt.p99",
        "latency_us.accept_to_receipt.p999",
        "server_pid",
        "server_cpu_s",
        "server_cpu_us_per_delivery",
        "server_rss_kib.before",
        "server_rss_kib.idle",
        "server_rss_kib.after_load",
        "rss_per_idle_connection_kib",
        "generator_cpu_s",
        "other_cpu_s",
    ] {
        field(&report, path);
    }
    // Figures read from /proc are numbers, not nulls, when --server-pid is given.
    assert!(report["server_cpu_s"].is_number(), "{report:#}");
    assert!(
        report["rss_per_idle_connection_kib"].is_number(),
        "{report:#}"
    );
    assert!(
        report["latency_us"]["send_to_receipt"]["p99"].is_u64(),
        "{report:#}"
    );
    // The file holds the same report.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("report file"))
            .expect("report file is JSON");
    assert_eq!(written["deliveries"], report["deliveries"]);

    // A pattern mix, with a reload during the run: each connection expects
    // only what its patterns match.
    let mixed = generator(&[
        "run",
        "--url",
        &url,
        "-n",
        "20",
        "-m",
        "60",
        "--batch",
        "7",
        "--rate",
        "600",
        "--types",
        "bench.tick,bench.tock,other.tick",
        "--patterns",
        "bench.*;ALL;bench.tock;other.*;*",
        "--reload-every-ms",
        "40",
        "--server-pid",
        &pid,
        "--settle-ms",
        "100",
    ]);
    // Per 5 connections: 40 + 60 + 20 + 20 + 60 = 200 deliveries; × 4.
    assert_eq!(mixed["expected_deliveries"], 800, "{mixed:#}");
    assert_eq!(mixed["deliveries"], 800, "{mixed:#}");
    assert_eq!(mixed["lost"], 0, "{mixed:#}");
    assert_eq!(mixed["duplicated"], 0, "{mixed:#}");
    assert!(
        mixed["reloads"]["ok"].as_u64().unwrap_or(0) >= 1,
        "{mixed:#}"
    );
    assert_eq!(mixed["reloads"]["failed"], 0, "{mixed:#}");

    // The comparison table renders both reports.
    let mixed_path = dir.path().join("mixed.json");
    std::fs::write(&mixed_path, mixed.to_string()).expect("write report");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .arg("table")
        .arg(&json_path)
        .arg(&mixed_path)
        .output()
        .expect("run switchyard-bench table");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| switchyard | 20 | 50 | 1000 |"), "{table}");
    assert!(table.contains("Ratios of switchyard"), "{table}");
}
