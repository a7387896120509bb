//! The real `switchyard` binary: SIGHUP reloads, SIGTERM shuts down
//! gracefully (clients closed with 1012, exit status 0).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// Kills the router if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

async fn config_version(port: u16) -> Option<u64> {
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["config_version"].as_u64()
}

async fn wait_for_version(port: u16, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while config_version(port).await != Some(version) {
        assert!(
            Instant::now() < deadline,
            "config_version never reached {version}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_closes_clients_with_1012() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, support::BASE).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut router = Running(child);
    wait_for_version(port, 1).await;

    signal(&router.0, "HUP");
    wait_for_version(port, 2).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/events"))
        .await
        .unwrap();
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "connection.established"
    );
    signal(&router.0, "TERM");
    let code = loop {
        match tokio::time::timeout(support::WAIT, ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1012);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = router.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the router did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}

/// Writes `text` to `config` and runs the binary on it, its stderr going to
/// a file beside it; returns once it serves (`config_version` 1).
async fn spawn_logging(config: &std::path::Path, text: &str) -> (Running, u16, std::path::PathBuf) {
    std::fs::write(config, text).unwrap();
    let log = config.with_file_name("stderr.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let router = Running(child);
    wait_for_version(port, 1).await;
    (router, port, log)
}

/// Reloads by `SIGHUP` log each warning once while it lasts: the unset JWT
/// secret and a config warning are not repeated by every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_warnings_are_logged_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let orphan = "\n[[channels]]\nname = \"orphans\"\n\n[[event_types]]\nname = \"orphan.seen\"\n\
                  channel = \"orphans\"\ndescription = \"carried by no endpoint\"\n\
                  [event_types.payload]\nid = { type = \"string\" }\n";
    let text = support::BASE.replacen(
        "[auth]\nmode = \"none\"\n",
        "[auth]\nmode = \"optional\"\n[auth.jwt]\nsecret_env = \"SY_TEST_never_set_reload_warnings\"\n",
        1,
    ) + orphan;
    let (router, port, log) = spawn_logging(&config, &text).await;
    for version in [2, 3] {
        signal(&router.0, "HUP");
        wait_for_version(port, version).await;
    }
    // A warning a reload brings is logged, once, however many reloads follow
    // (the watcher's and SIGHUP's alike).
    let strays = "\n[[channels]]\nname = \"strays\"\n\n[[event_types]]\nname = \"stray.seen\"\n\
                  channel = \"strays\"\ndescription = \"carried by no endpoint\"\n\
                  [event_types.payload]\nid = { type = \"string\" }\n";
    let text = std::fs::read_to_string(&config).unwrap() + strays;
    std::fs::write(&config, text).unwrap();
    signal(&router.0, "HUP");
    let applied = wait_for_version_above(port, 3).await;
    signal(&router.0, "HUP");
    wait_for_version_above(port, applied).await;
    drop(router);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr
            .matches("SY_TEST_never_set_reload_warnings is not set")
            .count(),
        1,
        "{stderr}"
    );
    let orphan_lines = stderr.lines().filter(|l| l.contains("orphans")).count();
    assert_eq!(orphan_lines, 1, "{stderr}");
    let stray_lines = stderr.lines().filter(|l| l.contains("strays")).count();
    assert_eq!(stray_lines, 1, "{stderr}");
}

/// Waits until `config_version` is above `version` (the watcher may add
/// reloads of its own); returns it.
async fn wait_for_version_above(port: u16, version: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(now) = config_version(port).await.filter(|v| *v > version) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "config_version never went above {version}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A refused `Origin` is logged at info, naming it and what is allowed, at
/// most once a minute per origin (compared case-insensitively).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_origins_are_logged_once_a_minute_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = support::BASE
        .replacen("level = \"warn\"", "level = \"info\"", 1)
        .replacen(
            "[auth]\nmode = \"none\"\n",
            "[auth]\nmode = \"none\"\nallowed_origins = [\"https://dash.example.com\"]\n",
            1,
        );
    let (router, port, log) = spawn_logging(&config, &text).await;
    let client = reqwest::Client::new();
    for origin in [
        "https://evil.example",
        "HTTPS://EVIL.example",
        "https://other.example",
    ] {
        let response = client
            .get(format!("http://127.0.0.1:{port}/ws/events"))
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{origin}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let stderr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("refused Origin https://other.example") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(router);
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused Origin"))
        .collect();
    assert_eq!(refused.len(), 2, "{stderr}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("https://dash.example.com")),
        "names what is allowed: {refused:?}"
    );
    assert!(refused[0].contains("https://evil.example"), "{refused:?}");
    assert!(refused[1].contains("https://other.example"), "{refused:?}");
}
