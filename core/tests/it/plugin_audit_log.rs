//! The `audit-log` plugin through the real router: its cdylib loaded through
//! the ABI, fed by `[[routes]]`, writing the delivered envelopes to rotating
//! JSON-lines files (docs/configuration.md, "audit-log" and "`[[routes]]`");
//! a route change on reload changes what it receives.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{plugin, start, Client, Router, BASE};

fn config(library: &str, path: &Path, max_bytes: u64, keep: u32, events: &[&str]) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"{BASE}
[[plugins]]
name = "audit"
library = "{library}"
[plugins.config]
path = "{path}"
max_bytes = {max_bytes}
keep = {keep}
fsync = "always"

[[routes]]
sink = "audit"
events = [{events}]
"#,
        path = path.display(),
        events = events.join(", ")
    )
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the live file's last line contains `needle`.
async fn wait_for_line(path: &Path, needle: &str) {
    let deadline = Instant::now() + support::WAIT;
    loop {
        if lines(path).last().is_some_and(|l| l.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never reached {}: {:?}",
            path.display(),
            lines(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connected(router: &Router) -> Client {
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    client
}

fn alert(i: usize) -> Value {
    let severity = ["low", "medium", "high", "critical"][i % 4];
    json!({"type": "alert.created", "payload": {"id": format!("a-{i:03}"), "severity": severity}})
}

fn job(i: usize) -> Value {
    json!({"type": "job.progress", "payload": {"job_id": format!("j-{i:03}"), "percent": i}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_events_are_appended_and_rotated_keeping_keep_files() {
    let library = plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: the plugin creates it.
    let path = logs.path().join("var/audit/audit.log");
    const MAX_BYTES: u64 = 1500;
    let router = start(&config(&library, &path, MAX_BYTES, 2, &["alert.*"])).await;
    let mut client = connected(&router).await;

    // 60 alerts (routed) interleaved with 60 jobs (not routed), in arrays.
    const N: usize = 60;
    for chunk in 0..6 {
        let batch: Vec<Value> = (chunk * 10..chunk * 10 + 10)
            .flat_map(|i| [alert(i), job(i)])
            .collect();
        let (status, body) = router.publish(&Value::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
    }
    // The envelopes as every subscriber got them: the same bytes the sink got.
    let mut sent = Vec::new();
    while sent.len() < N {
        let text = client.recv_text().await;
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "alert.created" {
            sent.push(text);
        }
    }
    wait_for_line(&path, &format!("a-{:03}", N - 1)).await;

    // The live file and exactly `keep` rotated files.
    let folder = path.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);

    // Oldest first: .2, .1, then the live file.
    let files = [rotated(&path, 2), rotated(&path, 1), path.clone()];
    let mut all = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= MAX_BYTES, "{} has {size} bytes", file.display());
        let these = lines(file);
        assert!(!these.is_empty(), "{} is empty", file.display());
        if i + 1 < files.len() {
            // A rotated file was closed because the next line did not fit.
            let next = lines(&files[i + 1])[0].len() as u64 + 1;
            assert!(size + next > MAX_BYTES, "{} rotated early", file.display());
        }
        all.extend(these);
    }
    for line in &all {
        let v: Value = serde_json::from_str(line).expect("every line is JSON");
        assert_eq!(v["type"], "alert.created", "only routed events: {line}");
        assert_eq!(v["channel"], "alerts", "{line}");
        assert!(
            v["sequence"].is_u64() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    // In order, byte for byte, the newest events: what rotated away beyond
    // `keep` is the oldest.
    assert!(
        all.len() < N,
        "several rotations dropped the oldest files: {}",
        all.len()
    );
    assert_eq!(
        all[..],
        sent[N - all.len()..],
        "the suffix of what was routed"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_on_reload_changes_what_is_logged() {
    let library = plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let router = start(&config(&library, &path, 1 << 20, 5, &["alert.*"])).await;

    let publish = |events: Vec<Value>| {
        let router = &router;
        async move {
            let (status, body) = router.publish(&Value::Array(events)).await;
            assert_eq!(status, 202, "{body}");
        }
    };
    publish(vec![alert(1), job(1)]).await;
    wait_for_line(&path, "a-001").await;

    router.write_config(&config(&library, &path, 1 << 20, 5, &["job.*"]));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "reload: {body}");

    publish(vec![alert(2), job(2)]).await;
    publish(vec![alert(3), job(3)]).await;
    wait_for_line(&path, "j-003").await;
    let seen: Vec<(String, String)> = lines(&path)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let id = v["payload"]["id"]
                .as_str()
                .or(v["payload"]["job_id"].as_str())
                .unwrap()
                .to_owned();
            (v["type"].as_str().unwrap().to_owned(), id)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("alert.created", "a-001"),
        ("job.progress", "j-002"),
        ("job.progress", "j-003"),
    ]
    .iter()
    .map(|(t, i)| ((*t).to_owned(), (*i).to_owned()))
    .collect();
    assert_eq!(seen, want);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_refused_naming_it() {
    let library = plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let text = config(&library, &path, 1000, 2, &["alert.*"]).replace("keep = 2", "kept = 2");
    let refused = support::try_start(&text)
        .await
        .err()
        .expect("an unknown plugin key refuses the config");
    let problems = format!("{:?}", refused.problems());
    assert!(problems.contains("kept"), "{problems}");
    assert!(!path.exists(), "create touched no file");
}

/// A relative `path` in the plugin's table is relative to the config
/// file's folder (docs/configuration.md, "The plugins' keys"), not to the
/// router's working directory: the router hands the folder to the plugin
/// (ABI 1.1, `Host::resolve`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_path_is_relative_to_the_config_folder() {
    let library = plugin("switchyard_audit_log");
    let relative = Path::new("relative-audit/audit.log");
    let router = start(&config(&library, relative, 1 << 20, 2, &["alert.*"])).await;
    let path = router.dir.path().join(relative);
    let (status, body) = router.publish(&Value::Array(vec![alert(7)])).await;
    assert_eq!(status, 202, "{body}");
    wait_for_line(&path, "a-007").await;
    assert!(
        !std::env::current_dir().unwrap().join(relative).exists(),
        "nothing written under the working directory"
    );
    router.shutdown().await;
}

/// Gives sinks that go away a generous drain bound, for a loaded CI machine.
fn with_long_drain(config: &str) -> String {
    config.replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_timeout_s = 120",
        1,
    )
}

/// Publishes `n` alerts over HTTP in arrays of 500; returns how many were
/// accepted.
async fn burst(router: &Router, n: usize) -> usize {
    let mut accepted = 0;
    for first in (0..n).step_by(500) {
        let events: Vec<Value> = (first..(first + 500).min(n)).map(alert).collect();
        let (status, body) = router.publish(&Value::Array(events)).await;
        assert_eq!(status, 202, "{body}");
        accepted += body["accepted"].as_u64().unwrap() as usize;
    }
    accepted
}

/// The alert ids in the live file, each once, failing on a duplicate.
fn logged_ids(path: &Path) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for line in lines(path) {
        let v: Value = serde_json::from_str(&line).unwrap();
        let id = v["payload"]["id"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "{id} was written twice");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_the_entry_hands_its_queue_to_the_new_instance() {
    let library = plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let before = with_long_drain(&config(&library, &path, 1 << 30, 5, &["alert.*"]));
    let router = start(&before).await;

    // One fsync per line: most of the burst is still queued at the reload.
    let accepted = burst(&router, 2000).await;
    router.write_config(&before.replace("keep = 5", "keep = 4"));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "reload: {body}");

    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(&path).len() < accepted {
        assert!(
            Instant::now() < deadline,
            "{} of {accepted} accepted events written",
            lines(&path).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logged_ids(&path).len(), accepted);
    let metrics = router.app.router.metrics().encode();
    assert!(!metrics.contains("reason=\"sink_shutdown\""), "{metrics}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removing_the_sink_drains_its_queue_into_it_first() {
    let library = plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.log");
    let router = start(&with_long_drain(&config(
        &library,
        &path,
        1 << 30,
        5,
        &["alert.*"],
    )))
    .await;

    let accepted = burst(&router, 2000).await;
    router.write_config(&with_long_drain(BASE));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "reload: {body}");
    // The reload returned after the outgoing sink was drained and stopped.
    assert_eq!(logged_ids(&path).len(), accepted);
    router.shutdown().await;
}
