//! The shipped `config.toml` passes `switchyard check` with every plugin
//! loaded, and serves with all five plugins running (built here, so the
//! debug artifacts stand in for target/release).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn the_shipped_config_checks_clean_with_every_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let local = shipped_on_free_ports(support::free_port());
    std::fs::write(&config, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("warnings: none"), "{stdout}");
    for producer in ["detection", "worker", "prometheus", "summary", "config"] {
        assert!(
            stdout.contains(&format!("producer {producer}")),
            "{producer} types missing:\n{stdout}"
        );
    }
}

/// The shipped `config.toml` with the built plugins and free loopback ports
/// in place of its fixed ones (8080 for the router and the worker's health
/// check, 9101 for detection, 9102 for prometheus). Each replaced text must
/// be in the file, so an edit of the shipped file that moves them fails
/// here rather than testing something else.
fn shipped_on_free_ports(router_port: u16) -> String {
    let plugin_dir = Path::new(&support::plugin("switchyard_detection"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")).unwrap();
    let replacements = [
        (
            "plugin_dir = \"target/release\"".to_owned(),
            format!("plugin_dir = {plugin_dir:?}"),
        ),
        (
            "127.0.0.1:8080".to_owned(),
            format!("127.0.0.1:{router_port}"),
        ),
        (
            "127.0.0.1:9101".to_owned(),
            format!("127.0.0.1:{}", support::free_port()),
        ),
        (
            "127.0.0.1:9102".to_owned(),
            format!("127.0.0.1:{}", support::free_port()),
        ),
    ];
    for (from, to) in replacements {
        assert!(
            config.contains(&from),
            "the shipped config.toml has no {from}"
        );
        config = config.replace(&from, &to);
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_serves_with_all_five_plugins_running() {
    let port = support::free_port();
    let router = support::try_start_on(
        &shipped_on_free_ports(port),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("the shipped config did not start: {:?}", e.problems()));

    let plugins = ["detection", "worker", "prometheus", "summary", "audit-log"];
    let deadline = Instant::now() + support::WAIT;
    loop {
        let (status, health) = router.get("/health").await;
        let running = plugins
            .iter()
            .all(|p| health["plugins"][*p]["state"] == "running");
        if running {
            assert_eq!(status, 200, "{health}");
            assert_eq!(health["status"], "ok", "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every plugin is running: {status} {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Events flow: the detection simulator's, and one published over HTTP,
    // reach a client; the published alert also reaches the audit-log sink.
    let mut client = router.ws("/ws/events").await;
    client.recv_type("connection.established").await;
    let detection = client.recv_type("detection.new").await;
    assert_eq!(detection["channel"], "detections", "{detection}");
    let alert = json!({"type": "alert.created",
        "payload": {"id": "shipped-1", "severity": "high"}});
    let (status, body) = router.publish(&alert).await;
    assert_eq!(status, 202, "{body}");
    let delivered = client.recv_type("alert.created").await;
    assert_eq!(delivered["payload"]["id"], "shipped-1", "{delivered}");

    let audit = router.dir.path().join("var/audit/audit.log");
    let deadline = Instant::now() + support::WAIT;
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains("shipped-1")
    {
        assert!(
            Instant::now() < deadline,
            "the alert never reached {}",
            audit.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.shutdown().await;
}
