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

/// Waits (generously) for the router to exit and returns its status.
async fn exited(router: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = router.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the router did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_audit_log_queue_so_every_accepted_event_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\n[plugins.config]\npath = \"{}\"\nfsync = \"always\"\n\n[[routes]]\nsink = \"audit\"\nevents = [\"alert.*\"]\n",
            support::BASE,
            support::plugin("switchyard_audit_log"),
            audit.display()
        ),
    )
    .unwrap();
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

    // A burst the sink cannot keep up with (one fsync per line).
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for batch in 0..4 {
        let events: Vec<serde_json::Value> = (0..500)
            .map(|i| {
                serde_json::json!({"type": "alert.created",
                    "payload": {"id": format!("a{batch}-{i}"), "severity": "low"}})
            })
            .collect();
        let response = client
            .post(format!("http://127.0.0.1:{port}/api/events"))
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, 2000);
    signal(&router.0, "TERM");
    let status = exited(&mut router).await;
    assert!(status.success(), "exit status {status}");
    let written = std::fs::read_to_string(&audit).unwrap_or_default();
    assert_eq!(
        written.lines().count() as u64,
        accepted,
        "every accepted event is in the audit log after SIGTERM"
    );
}
