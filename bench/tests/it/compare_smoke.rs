//! `scripts/compare --tiny` run for real: Switchyard, the FastAPI/uvicorn peer,
//! the Node `ws` peer and the uWebSockets.js peer (native pub/sub), N = 20
//! subscribers × M = 50 events each. Checks the four reports (nothing lost or
//! duplicated, every delivery made) and the table's ratio rows. Speed is
//! never asserted.
//!
//! The script installs the peers from PyPI and npm into `scratch/` on first
//! use (about a minute), so this needs python3 with venv, node and npm, and
//! the registries; later runs reuse `scratch/`.

use crate::support;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port_run, repo_root, router_binary};

const SERVERS: [&str; 4] = ["switchyard", "fastapi", "node", "uws"];

/// Installing the peers the first time takes about a minute on the
/// benchmark machine; past this the script is stuck (a hung install or
/// server), and the test says so rather than hanging the suite.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// Everything needed to tell why a run failed: the script's own output and
/// every server log it left.
fn diagnostics(dir: &Path) -> String {
    let mut text = String::new();
    for name in ["script.stdout", "script.stderr"]
        .into_iter()
        .map(String::from)
        .chain(SERVERS.iter().map(|s| format!("out/{s}.log")))
    {
        let content = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| format!("(not readable: {e})"));
        text.push_str(&format!("\n----- {name} -----\n{content}"));
    }
    text
}

/// Runs the script in its own process group, so that on a timeout the
/// servers it started go with it.
fn run_script(dir: &Path, base_port: u16) -> Option<ExitStatus> {
    let out = dir.join("out");
    let mut child = Command::new(repo_root().join("scripts/compare"))
        .arg("--tiny")
        .arg("--no-build")
        .arg("--out")
        .arg(&out)
        .env("ROUTER", router_binary())
        .env("BENCH", env!("CARGO_BIN_EXE_switchyard-bench"))
        .env("BASE_PORT", base_port.to_string())
        .env("BENCH_TIMEOUT_S", "120")
        .current_dir(repo_root())
        .stdout(File::create(dir.join("script.stdout")).expect("stdout file"))
        .stderr(File::create(dir.join("script.stderr")).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("start scripts/compare");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for scripts/compare") {
            return Some(status);
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn compare_tiny_runs_all_four_servers() {
    for tool in ["python3", "node", "npm"] {
        let found = Command::new(tool).arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "`{tool}` is needed to run the peers of scripts/compare"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let base_port = free_port_run(SERVERS.len() as u16);
    let status = run_script(dir.path(), base_port);
    let why = || diagnostics(dir.path());
    match status {
        None => panic!(
            "scripts/compare --tiny took more than {SCRIPT_DEADLINE:?}:{}",
            why()
        ),
        Some(s) => assert!(s.success(), "scripts/compare --tiny failed ({s}):{}", why()),
    }

    let out = dir.path().join("out");
    for server in SERVERS {
        let path = out.join(format!("{server}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}{}", path.display(), why()));
        let report: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()));
        let check = |key: &str, want: u64| {
            assert_eq!(
                report[key].as_u64(),
                Some(want),
                "{server}: `{key}` should be {want}:\n{report:#}{}",
                why()
            );
        };
        assert_eq!(report["server"], server, "{report:#}");
        check("connected", 20);
        check("events", 50);
        check("expected_deliveries", 1000);
        check("deliveries", 1000);
        check("lost", 0);
        check("duplicated", 0);
        assert_eq!(report["publish"]["errors"], 0, "{server}:\n{report:#}");
    }

    // The table: one row per server, then the ratio of Switchyard to each peer.
    let table = std::fs::read_to_string(out.join("table.md")).expect("table.md");
    let stdout = std::fs::read_to_string(dir.path().join("script.stdout")).expect("stdout");
    assert!(stdout.contains(&table), "the table is printed:\n{stdout}");
    for server in SERVERS {
        assert!(
            table.contains(&format!("| {server} | 20 | 50 | 1000 |")),
            "no row for {server}:\n{table}"
        );
    }
    let (_, ratios) = table
        .split_once("Ratios of switchyard")
        .unwrap_or_else(|| panic!("no ratio table:\n{table}"));
    for peer in ["fastapi", "node", "uws"] {
        let row = ratios
            .lines()
            .find(|l| l.starts_with(&format!("| {peer} |")))
            .unwrap_or_else(|| panic!("no ratio row for {peer}:\n{table}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        // peer, deliveries/s, CPU per delivery, KiB per idle connection, p99.
        assert_eq!(cells.len(), 5, "{row}");
        // A tiny run can use less CPU than one clock tick (10 ms), or no
        // measurable memory, so those two may be "–"; throughput and latency
        // are always measured.
        for (i, cell) in cells.iter().enumerate().skip(1) {
            let is_ratio = cell
                .strip_suffix('×')
                .is_some_and(|x| x.parse::<f64>().is_ok_and(|x| x > 0.0));
            let may_be_absent = i == 2 || i == 3;
            assert!(
                is_ratio || (may_be_absent && *cell == "–"),
                "bad ratio `{cell}` in {row}"
            );
        }
    }
}
