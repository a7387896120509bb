//! The SDK's export macro refuses to compile with `panic = "abort"`
//! (docs/plugins.md, "2. Build it").
//!
//! Builds a throwaway plugin crate (its own workspace, in a temp dir) that
//! uses `export_plugin!`, first with `panic = "abort"` — the build must fail
//! with the macro's message — then with `panic = "unwind"`, which must build.
//! Both builds share one target dir.

use std::path::Path;
use std::process::{Command, Output};

/// The message of the macro's `compile_error!` (see `src/export.rs`).
const REFUSAL: &str = r#"Switchyard plugins must be built with panic = "unwind""#;

const LIB_RS: &str = r#"use switchyard_plugin_api::serde_json::Value;
use switchyard_plugin_api::{export_plugin, Host, Plugin, PluginError, PluginInfo, Role, Running};

pub struct Idle;

impl Plugin for Idle {
    type Running = Idle;
    fn info() -> PluginInfo {
        PluginInfo::new("idle", "0.0.0", Role::Producer)
    }
    fn create(_config: Value) -> Result<Self, PluginError> {
        Ok(Idle)
    }
    fn start(self, _host: Host) -> Result<Idle, PluginError> {
        Ok(self)
    }
}

impl Running for Idle {
    fn stop(self) {}
}

export_plugin!(Idle);
"#;

fn manifest(api: &Path, panic: &str) -> String {
    format!(
        r#"[package]
name = "panic-strategy-probe"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-plugin-api = {{ path = {api:?} }}

[profile.dev]
panic = "{panic}"

# Not part of any enclosing workspace.
[workspace]
"#
    )
}

fn cargo() -> Command {
    Command::new(env!("CARGO"))
}

/// `cargo build` of the probe crate, offline when that resolves.
fn build(krate: &Path, target: &Path, offline: bool) -> Output {
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        // Plain, uncoloured diagnostics to search.
        .env("CARGO_TERM_COLOR", "never");
    if offline {
        cmd.arg("--offline");
    }
    cmd.output().expect("run cargo build")
}

#[test]
fn export_plugin_refuses_panic_abort_and_builds_with_unwind() {
    let api = Path::new(env!("CARGO_MANIFEST_DIR"));
    let krate = tempfile::tempdir().expect("temp dir for the probe crate");
    let target = tempfile::tempdir().expect("temp dir for its target");
    std::fs::create_dir(krate.path().join("src")).unwrap();
    std::fs::write(krate.path().join("src/lib.rs"), LIB_RS).unwrap();
    std::fs::write(krate.path().join("Cargo.toml"), manifest(api, "abort")).unwrap();
    // The workspace's lock file pins serde and serde_json to versions that
    // are already in the local registry; cargo drops the entries it does not need.
    if let Ok(lock) = std::fs::read(api.join("../Cargo.lock")) {
        std::fs::write(krate.path().join("Cargo.lock"), lock).unwrap();
    }
    // Use --offline only if the dependencies resolve without the network.
    let offline = cargo()
        .args([
            "metadata",
            "--offline",
            "--format-version=1",
            "--manifest-path",
        ])
        .arg(krate.path().join("Cargo.toml"))
        .output()
        .is_ok_and(|o| o.status.success());

    let aborting = build(krate.path(), target.path(), offline);
    let stderr = String::from_utf8_lossy(&aborting.stderr);
    assert!(
        !aborting.status.success(),
        "a plugin built with panic = \"abort\" compiled; it must not:\n{stderr}"
    );
    assert!(
        stderr.contains(REFUSAL),
        "the build failed, but not with the export macro's message:\n{stderr}"
    );

    std::fs::write(krate.path().join("Cargo.toml"), manifest(api, "unwind")).unwrap();
    let unwinding = build(krate.path(), target.path(), offline);
    assert!(
        unwinding.status.success(),
        "the same plugin with panic = \"unwind\" must build:\n{}",
        String::from_utf8_lossy(&unwinding.stderr)
    );
}
