//! The plugin author's guide (docs/plugins.md) is true: its example plugin,
//! examples/heartbeat-plugin, is the code the guide shows (byte for byte),
//! under 40 lines of safe Rust, and — built standalone with cargo and added
//! to the config of a running router — its events reach a WebSocket client
//! that was connected before the reload, with no restart.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{start, BASE};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ has a parent")
        .to_owned()
}

fn example() -> PathBuf {
    repo().join("examples/heartbeat-plugin")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The fenced block that follows the line `<!-- file: {name} -->` in the guide.
fn guide_block(guide: &str, name: &str) -> String {
    let marker = format!("<!-- file: {name} -->");
    let mut lines = guide.lines().skip_while(|l| l.trim() != marker).skip(1);
    let fence = lines
        .next()
        .unwrap_or_else(|| panic!("docs/plugins.md has no `{marker}` line"));
    assert!(
        fence.starts_with("```"),
        "`{marker}` must be followed by a code fence, not {fence:?}"
    );
    let mut block = String::new();
    for line in lines.by_ref() {
        if line == "```" {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("the code block after `{marker}` is not closed");
}

/// Where two texts first differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  guide: {x:?}\n  crate: {y:?}", i + 1);
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines; trailing newlines count)",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn the_guide_shows_the_example_crate_byte_for_byte() {
    let guide = read(&repo().join("docs/plugins.md"));
    for file in ["src/lib.rs", "Cargo.toml"] {
        let shown = guide_block(&guide, &format!("examples/heartbeat-plugin/{file}"));
        let real = read(&example().join(file));
        assert!(
            shown == real,
            "docs/plugins.md's {file} differs from examples/heartbeat-plugin/{file} at {}",
            first_difference(&shown, &real)
        );
    }
}

#[test]
fn the_example_is_under_40_lines_of_safe_rust() {
    let code = read(&example().join("src/lib.rs"));
    let lines = code
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert!(
        lines < 40,
        "{lines} lines of code (blank and comment lines aside)"
    );
    assert!(!code.contains("unsafe"), "the example must be safe Rust");
}

/// Builds the example as its own workspace, like a plugin written outside
/// this repository, and returns the path of its `.so`.
fn build_example() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = example().join("Cargo.toml");
    // Its own target dir under ours: the example's builds stay apart from
    // the workspace's, and later runs are incremental.
    let target = repo().join("target/plugin-guide");
    // The example carries a Cargo.lock; --offline only when it resolves.
    let offline = Command::new(&cargo)
        .args([
            "metadata",
            "--offline",
            "--format-version=1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--message-format=json", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target);
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd
        .output()
        .expect("run cargo build for the example plugin");
    assert!(
        out.status.success(),
        "building examples/heartbeat-plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&json!("cdylib")))
        })
        .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .expect("cargo reported no .so for the example plugin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_plugin_is_loaded_by_a_reload_and_its_beats_arrive() {
    let library = build_example();

    // A running router without the plugin, and a client connected to it.
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    let hello = client.established().await;
    assert!(
        hello["payload"]["channels"].get("heartbeat").is_none(),
        "{hello}"
    );
    let before = router.config_version().await;

    // The guide's edit: a `heartbeat` channel carried by the endpoint, and
    // the plugin. Saved while the router runs; its file watcher reloads.
    let with_plugin = format!(
        "{}\n[[channels]]\nname = \"heartbeat\"\n\n[[plugins]]\nname = \"heartbeat\"\nlibrary = \"{}\"\n[plugins.config]\ninterval_ms = 100\n",
        BASE.replace(
            r#"channels = ["alerts", "jobs"]"#,
            r#"channels = ["alerts", "jobs", "heartbeat"]"#,
        ),
        library.display()
    );
    router.write_config(&with_plugin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.config_version().await == before {
        assert!(
            Instant::now() < deadline,
            "the router did not reload within 10 s of the config file changing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The connection is told about the new channel, then the beats arrive.
    let announced = client.recv().await;
    assert_eq!(announced["type"], "connection.channels", "{announced}");
    assert_eq!(
        announced["payload"]["channels"]["heartbeat"]["sequence"], 0,
        "{announced}"
    );
    for n in 1..=3u64 {
        let beat = client.recv().await;
        assert_eq!(beat["type"], "heartbeat.beat", "{beat}");
        assert_eq!(beat["channel"], "heartbeat", "{beat}");
        assert_eq!(beat["payload"], json!({ "n": n }), "{beat}");
        assert_eq!(beat["sequence"], n, "{beat}");
    }

    // Discovery and health show it.
    let (status, caps) = router.get("/api/websocket/capabilities").await;
    assert_eq!(status, 200, "{caps}");
    let beat = &caps["event_registry"]["heartbeat.beat"];
    assert_eq!(beat["producer"], "heartbeat", "{caps}");
    assert_eq!(beat["channel"], "heartbeat", "{caps}");
    assert_eq!(beat["payload_fields"]["n"]["type"], "integer", "{caps}");
    let endpoint = caps["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["path"] == "/ws/events"))
        .unwrap_or_else(|| panic!("/ws/events listed: {caps}"));
    assert!(
        endpoint["events"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("heartbeat.beat"))),
        "{endpoint}"
    );
    let (_, health) = router.get("/health").await;
    assert_eq!(
        health["plugins"]["heartbeat"]["state"], "running",
        "{health}"
    );
    assert_eq!(health["status"], "ok", "{health}");

    // A config the plugin refuses is refused as a whole, with its key.
    router.write_config(&with_plugin.replace("interval_ms = 100", "interval_ms = 0"));
    let (status, body) = router.reload().await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    assert!(text.contains("plugins[0]"), "{body}");
    assert!(
        text.contains("interval_ms must be a positive integer"),
        "{body}"
    );
    let beat = client.recv_type("heartbeat.beat").await;
    assert!(
        beat["payload"]["n"].as_u64() > Some(3),
        "still beating: {beat}"
    );

    router.shutdown().await;
}

/// The one-line dependency the guide shows after `<!-- dependency: {form} -->`.
fn guide_dependency(guide: &str, form: &str) -> String {
    let marker = format!("<!-- dependency: {form} -->");
    let mut lines = guide
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != marker)
        .skip(1);
    assert_eq!(
        lines.next().map(|l| l.starts_with("```")),
        Some(true),
        "docs/plugins.md has no code block after `{marker}`"
    );
    let line = lines.next().expect("a dependency line").to_owned();
    assert_eq!(lines.next(), Some("```"), "one line in the `{form}` block");
    assert!(line.starts_with("switchyard-plugin-api = {"), "{line}");
    line
}

/// The example crate copied out of the repository, with its SDK dependency
/// replaced by `dependency`; returns the folder.
fn copy_outside(dependency: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::copy(example().join("src/lib.rs"), dir.path().join("src/lib.rs")).unwrap();
    std::fs::copy(example().join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let inside = "switchyard-plugin-api = { path = \"../../plugin-api\" }";
    let manifest = read(&example().join("Cargo.toml"));
    assert!(manifest.contains(inside), "{manifest}");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        manifest.replace(inside, dependency),
    )
    .unwrap();
    dir
}

/// Builds the crate at `dir` and returns its `.so`.
fn build_at(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--message-format=json"])
        .current_dir(dir)
        // Shared by the runs of this test, so later ones are incremental.
        .env(
            "CARGO_TARGET_DIR",
            repo().join("target/plugin-guide-outside"),
        )
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "building the example outside the repository failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.file_name().is_some_and(|n| n == "libheartbeat.so"))
        .expect("cargo reported no libheartbeat.so")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_builds_outside_the_repository_both_ways_the_guide_shows() {
    let guide = read(&repo().join("docs/plugins.md"));
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output()
        .expect("run git: the repository is a git checkout");
    assert!(commit.status.success(), "git rev-parse HEAD failed");
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_owned();
    let checkout = repo().display().to_string();
    let forms = [
        guide_dependency(&guide, "git")
            .replace(
                "https://git.example.com/switchyard.git",
                &format!("file://{checkout}"),
            )
            .replace("<commit>", &commit),
        guide_dependency(&guide, "path").replace("/home/you/src/switchyard", &checkout),
    ];
    for dependency in forms {
        let crate_dir = copy_outside(&dependency);
        let library = build_at(crate_dir.path());
        let config = format!(
            "{}\n[[channels]]\nname = \"heartbeat\"\n\n[[plugins]]\nname = \"heartbeat\"\nlibrary = \"{}\"\n[plugins.config]\ninterval_ms = 100\n",
            BASE.replace(
                r#"channels = ["alerts", "jobs"]"#,
                r#"channels = ["alerts", "jobs", "heartbeat"]"#,
            ),
            library.display()
        );
        let router = start(&config).await;
        let mut client = router.ws("/ws/events?events=heartbeat.*").await;
        let beat = client.recv_type("heartbeat.beat").await;
        assert_eq!(beat["channel"], "heartbeat", "{dependency}: {beat}");
        router.shutdown().await;
    }
}
