//! A tiny soak: a real router binary on a free port, 10 healthy clients in a
//! reconnect storm, 2 stalled clients, 200 events/s and a reload every second
//! for about 5 seconds. Nothing may be lost or duplicated, and the router
//! must have applied the reloads, not only been asked to.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_soak::{run, Options, ReloadVia};

const CONFIG: &str = r#"
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

/// The router as a child process, killed when dropped.
struct Router(Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the `switchyard` binary (`cargo test` of this package does not)
/// and returns its path, read from cargo's JSON messages.
fn router_binary() -> PathBuf {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn wait_healthy(url: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_and_duplicates_nothing() {
    let binary = tokio::task::spawn_blocking(router_binary).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port();
    let child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start the router");
    let pid = child.id();
    let _router = Router(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url).await;

    let mut options = Options::new(&url);
    options.duration = Duration::from_secs(5);
    options.clients = 10;
    options.stalled = 2;
    options.rate = 200;
    options.reconnect_every = Duration::from_secs(1);
    options.reload_every = Duration::from_secs(1);
    options.reload_via = ReloadVia::File;
    options.config = Some(config.clone());
    options.server_pid = Some(pid);
    options.progress_every = Duration::ZERO;
    options.seed = 7;
    let report = run(options).await.expect("the soak runs");
    println!("{}", report.render());

    assert_eq!(report.lost, 0, "lost events:\n{}", report.render());
    assert_eq!(report.duplicated, 0, "duplicates:\n{}", report.render());
    assert_eq!(report.out_of_order, 0, "{}", report.render());
    assert!(report.ok, "{}", report.render());
    assert!(report.published > 500, "{}", report.render());
    assert!(report.reconnects > 0, "{}", report.render());
    // Requested is not enough: the router must have applied them (read from
    // its `switchyard_config_reloads_total`). Rewrites closer together than
    // the watcher's debounce may be applied as one, hence not `== triggered`.
    assert!(report.reloads.triggered >= 3, "{}", report.render());
    assert_eq!(report.reloads.failed, 0, "{}", report.render());
    assert_eq!(report.reloads.refused, 0, "{}", report.render());
    assert!(report.reloads.applied >= 3, "{}", report.render());
    assert!(report.rss.is_some_and(|r| r.peak_kib > 0));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        CONFIG,
        "the config file is restored"
    );
}
