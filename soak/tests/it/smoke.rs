//! A tiny soak: a real router binary on a free port, 10 healthy clients in a
//! reconnect storm, 2 stalled clients, 200 events/s and a reload every second
//! for about 5 seconds. Nothing may be lost or duplicated, and the router
//! must have applied the reloads, not only been asked to.

use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_soak::{run, Options, ReloadVia};

use crate::support::{free_port, router_binary, wait_healthy, Guard, CONFIG};

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
    let _router = Guard(child);
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
