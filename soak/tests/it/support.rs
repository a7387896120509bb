//! What the soak tests share: the router binary, free ports, child
//! processes killed when dropped, a Redis of their own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One channel, one endpoint, one type; no auth.
pub const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
send_queue = 64
max_connections = 1000

[auth]
mode = "none"

[log]
level = "warn"

[[channels]]
name = "alerts"
history = 10000
history_ttl_s = 0

[[endpoints]]
path = "/ws/events"
channels = ["alerts"]

[[event_types]]
name = "alert.created"
channel = "alerts"
description = "New alert"
[event_types.payload]
id = { type = "string", required = true }
severity = { type = "string", required = true, enum = ["low", "medium", "high", "critical"] }
"#;

/// A child process (a router, a Redis), killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the `switchyard` binary (`cargo test` of this package does not)
/// and returns its path, read from cargo's JSON messages.
pub fn router_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "switchyard", "--bin", "switchyard"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--message-format=json")
        .current_dir(&root)
        .output()
        .expect("run cargo build for the router");
    assert!(
        out.status.success(),
        "building the router failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "switchyard")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no `switchyard` executable")
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until the router at `url` answers `/health` with a success.
pub async fn wait_healthy(url: &str) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(resp) = client.get(format!("{url}/health")).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the router did not become healthy at {url}");
}

/// A `redis-server` of the test's own on `port`, keeping nothing on disk.
pub fn start_redis(port: u16) -> Guard {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Guard(child)
}
