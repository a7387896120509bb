//! Helpers shared by the integration tests of `switchyard-bench`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository root: scripts and `bench/router.toml` are named from there.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the repository")
        .to_path_buf()
}

/// Builds the router binary (`cargo test` of this package does not) and
/// returns its path, read from cargo's JSON messages.
pub fn router_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "switchyard",
            "--bin",
            "switchyard",
            "--message-format=json",
        ])
        .current_dir(repo_root())
        .output()
        .expect("run cargo build for the router");
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    // With JSON messages the compiler's errors are on stdout, not stderr.
    let errors: String = messages
        .iter()
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
        .filter_map(|m| m["message"]["rendered"].as_str())
        .collect();
    assert!(
        out.status.success(),
        "building the router failed:\n{errors}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    messages
        .into_iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "switchyard")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no switchyard executable")
}

/// The first of `count` consecutive loopback ports that are free right now,
/// for programs that take a base port rather than binding port 0.
///
/// The search starts at a point derived from the process id, so test
/// binaries running at the same time probe different ports, and stays below
/// the kernel's ephemeral range (32768 and up by default), where outgoing
/// connections would otherwise take ports between the probe and the bind.
pub fn free_port_run(count: u16) -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for step in 0..SPAN / 4 {
        let base = (LOW + (start + step * 4) % (SPAN - u32::from(count))) as u16;
        let held: Vec<_> = (0..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!(
        "no {count} consecutive free loopback ports between {LOW} and {}",
        LOW + SPAN
    );
}

/// Runs `switchyard-bench` with `args` and returns the JSON report it
/// prints, failing with its stderr when it fails.
pub fn generator(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(args)
        .output()
        .expect("run switchyard-bench");
    assert!(
        out.status.success(),
        "switchyard-bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("switchyard-bench prints its JSON report")
}
