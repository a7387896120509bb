//! A tiny cluster soak: its own `redis-server`, two redis-engine router nodes
//! on it, 10 healthy clients reconnecting to random nodes, 1 stalled client
//! per node, 200 events/s to random nodes and HTTP reloads of both nodes for
//! about 6 seconds; Redis is killed (SIGKILL) at 2.5 s and restarted, empty,
//! 1 s later: a new epoch. Nothing may be lost or duplicated; what the epoch
//! change took is announced (`epoch_gap_events`), not lost.

use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_soak::{run, Options, ReloadVia};

use crate::support::{free_port, router_binary, start_redis, wait_healthy, Guard, CONFIG};

/// The smoke test's config on the Redis at `redis_port`, with quick heartbeats.
fn config(redis_port: u16) -> String {
    format!(
        "{CONFIG}\n[cluster]\nengine = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n\
         heartbeat_interval_ms = 200\nunhealthy_after_ms = 1000\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_cluster_soak_through_a_redis_restart_loses_nothing() {
    // No skip: a missing redis-server must fail the test, not pass it
    // (scripts/test installs it).
    assert!(
        Command::new("redis-server").arg("--version").output().is_ok(),
        "redis-server is missing: install Debian's redis-server (scripts/test does so when run as root)"
    );
    let binary = tokio::task::spawn_blocking(router_binary).await.unwrap();
    let redis_port = free_port();
    let redis = start_redis(redis_port);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config(redis_port)).unwrap();
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a node");
        nodes.push(Guard(child));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    for url in &urls {
        wait_healthy(url).await;
    }

    // Redis is killed mid-run and restarted, empty, a second later.
    let chaos = tokio::spawn(async move {
        let mut redis = redis;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(redis);
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis = tokio::task::spawn_blocking(move || start_redis(redis_port))
            .await
            .unwrap();
        redis
    });

    let mut options = Options::cluster(urls.clone());
    options.duration = Duration::from_secs(6);
    options.clients = 10;
    options.stalled = 2;
    options.rate = 200;
    options.reconnect_every = Duration::from_secs(1);
    options.reload_every = Duration::from_secs(1);
    options.reload_via = ReloadVia::Http;
    options.progress_every = Duration::ZERO;
    options.seed = 11;
    let report = run(options).await.expect("the soak runs");
    let redis = chaos.await.unwrap();
    drop(nodes);
    drop(redis);
    println!("{}", report.render());

    assert_eq!(report.nodes, 2);
    assert_eq!(report.lost, 0, "lost events:\n{}", report.render());
    assert_eq!(report.duplicated, 0, "duplicates:\n{}", report.render());
    assert_eq!(report.out_of_order, 0, "{}", report.render());
    assert!(report.ok, "{}", report.render());
    assert!(report.reconnects > 0, "{}", report.render());
    assert!(report.epoch_changes > 0, "{}", report.render());
    assert_eq!(
        report.publish.epochs.len(),
        2,
        "events were accepted in two epochs:\n{}",
        report.render()
    );
    assert!(report.reloads.triggered >= 3, "{}", report.render());
    assert_eq!(report.reloads.failed, 0, "{}", report.render());
}
