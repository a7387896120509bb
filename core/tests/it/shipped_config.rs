//! The shipped `config.toml` passes `switchyard check` with every plugin
//! loaded, and serves with all five plugins running (built here, so the
//! debug artifacts stand in for target/release).

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn the_shipped_config_checks_clean_with_every_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let (local, _) = shipped_on_free_ports(support::free_port());
    std::fs::write(&config, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        // As deployed: with the credentials the file names, so that `check`
        // has no missing credential to warn about.
        .env("SWITCHYARD_JWT_SECRET", "a-secret-for-the-shipped-config")
        .env("SWITCHYARD_API_KEYS", "ci:a-key-for-the-shipped-config")
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
/// Returns the text and the (detection, prometheus) listener ports.
fn shipped_on_free_ports(router_port: u16) -> (String, [u16; 2]) {
    let plugin_dir = Path::new(&support::plugin("switchyard_detection"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let mut config = shipped();
    let listeners = [support::free_port(), support::free_port()];
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
            format!("127.0.0.1:{}", listeners[0]),
        ),
        (
            "127.0.0.1:9102".to_owned(),
            format!("127.0.0.1:{}", listeners[1]),
        ),
    ];
    for (from, to) in replacements {
        assert!(
            config.contains(&from),
            "the shipped config.toml has no {from}"
        );
        config = config.replace(&from, &to);
    }
    (config, listeners)
}

/// The shipped file's text.
fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")).unwrap()
}

/// The comment block at the top of the shipped file.
fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every value of the shipped file that depends on where it runs: the
/// router's address, the plugins' listeners, checks and files.
fn placed_values(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let loaded = switchyard::config::load_with_env(&path, Vec::new()).expect("shipped loads");
    let config = loaded.config;
    let mut values = vec![
        "target/release".to_owned(),
        config.server.listen.to_string(),
    ];
    for plugin in &config.plugins {
        let c = &plugin.config;
        values.extend(c["listen"].as_str().map(str::to_owned));
        values.extend(c["path"].as_str().map(str::to_owned));
        for worker in c["workers"].as_array().into_iter().flatten() {
            values.extend(worker["check"].as_str().map(str::to_owned));
        }
    }
    values
}

#[test]
fn the_top_of_the_shipped_config_names_every_value_that_depends_on_the_machine() {
    let text = shipped();
    let top = header(&text);
    let values = placed_values(&text);
    assert!(values.len() >= 6, "{values:?}");
    for value in &values {
        assert!(
            top.contains(value.as_str()),
            "{value} is not named at the top of config.toml:\n{top}"
        );
        let marked = text
            .lines()
            .skip_while(|l| l.starts_with('#') || l.trim().is_empty())
            .filter(|l| l.contains(value.as_str()))
            .count();
        assert!(marked >= 1, "{value} is not set below the top block");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for value in [
        "plugin_dir",
        "127.0.0.1:8080",
        "/health",
        "127.0.0.1:9101",
        "127.0.0.1:9102",
    ] {
        let section = readme
            .split("**Copying `config.toml`**")
            .nth(1)
            .expect("README says what to change in a copy");
        assert!(
            section.contains(value),
            "README's copy section misses {value}"
        );
    }
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_with_the_listed_values_changed_runs_every_plugin() {
    let router = support::free_port();
    // What the top of the file and the README say to change, nothing else.
    let (copy, [detection, prometheus]) = shipped_on_free_ports(router);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, copy).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("SWITCHYARD_JWT_SECRET", "a-secret-for-the-copied-config")
        .env("SWITCHYARD_API_KEYS", "ci:a-key-for-the-copied-config")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _router = support::ChildGuard(child);
    let base = format!("http://127.0.0.1:{router}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (health, worker_started) = loop {
        let health = get_json(&format!("{base}/health")).await;
        let coverage = get_json(&format!("{base}/api/websocket/coverage")).await;
        let started = coverage
            .as_ref()
            .and_then(|c| c["types"]["worker.started"]["produced"].as_u64())
            .unwrap_or(0);
        let running = health.as_ref().is_some_and(|h| {
            h["plugins"]
                .as_object()
                .is_some_and(|p| p.len() == 5 && p.values().all(|s| s["state"] == "running"))
        });
        if running && started > 0 {
            break (health, coverage);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every plugin ran, or the worker never saw the router healthy:\n{health:?}\n{coverage:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(health.unwrap()["status"], "ok");
    let failed = worker_started.unwrap()["types"]["worker.health_check_failed"]["produced"].clone();
    assert_eq!(failed, 0, "the worker's router check failed");
    for port in [detection, prometheus] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("nothing listens on the copy's port {port}: {e}"));
    }
    let audit = dir.path().join("var/audit/audit.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !audit.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {}",
            audit.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_serves_with_all_five_plugins_running() {
    let port = support::free_port();
    let router = support::try_start_on(
        &shipped_on_free_ports(port).0,
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
