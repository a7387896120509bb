//! `switchyard-bench floor` at a tiny size: N = 20 connection pairs, 3
//! rounds. Checks that the report has every field and that the figures hang
//! together (a round is received no sooner than it is written, a send
//! returns within its round). Speed is never asserted.

use crate::support;

use std::process::Command;

use serde_json::Value;

fn floor(args: &[&str]) -> Value {
    support::generator(&[&["floor"], args].concat())
}

fn number(report: &Value, path: &str) -> f64 {
    let mut v = report;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("`{path}` is not a number:\n{report:#}"))
}

/// What holds for every floor report, whatever the machine's speed.
fn check(r: &Value, n: u64, k: u64) {
    assert_eq!(r["kind"], "floor", "{r:#}");
    assert_eq!(r["connections"], n, "{r:#}");
    assert_eq!(r["rounds"], 3, "{r:#}");
    assert_eq!(r["per_send"], k, "{r:#}");
    assert_eq!(r["frame_bytes"], 162, "{r:#}");
    // 162 bytes of text take the 2-byte extended length: a 4-byte header.
    assert_eq!(r["wire_bytes"], 166, "{r:#}");
    assert_eq!(r["send_bytes"], 166 * k, "{r:#}");
    for what in ["fanout_ms", "delivered_ms"] {
        let (min, p50, max) = (
            number(r, &format!("{what}.min")),
            number(r, &format!("{what}.p50")),
            number(r, &format!("{what}.max")),
        );
        assert!(0.0 < min && min <= p50 && p50 <= max, "{what}:\n{r:#}");
    }
    // Each round is received whole only after it is written whole.
    assert!(
        number(r, "delivered_ms.min") >= number(r, "fanout_ms.min"),
        "{r:#}"
    );
    assert!(
        number(r, "delivered_ms.max") >= number(r, "fanout_ms.max"),
        "{r:#}"
    );
    // Each send returns within its round; through io_uring no send has a
    // time of its own.
    if r["submit"] == "send" {
        let (p50, p99, max) = (
            number(r, "delivery_ms.p50"),
            number(r, "delivery_ms.p99"),
            number(r, "delivery_ms.max"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r:#}");
        assert!(max <= number(r, "fanout_ms.max"), "{r:#}");
    } else {
        assert_eq!(r["delivery_ms"], Value::Null, "{r:#}");
    }
    let wall = number(r, "per_send_us.wall");
    assert!(wall > 0.0, "{r:#}");
    // Per send = the median round ÷ N. The round is reported in ms with
    // three decimals, so it carries up to 0.5 µs of rounding, ÷ N here.
    let from_round = number(r, "fanout_ms.p50") * 1000.0 / n as f64;
    let rounding = 0.5 / n as f64 + 0.002;
    assert!(
        (wall - from_round).abs() < 0.01 * from_round + rounding,
        "{r:#}"
    );
    // Per frame = per send ÷ K, each rounded to the ns.
    let per_frame = number(r, "per_frame_us.wall");
    assert!(
        (per_frame * k as f64 - wall).abs() < 0.01 * wall + 0.0005 * k as f64 + 0.001,
        "{r:#}"
    );
    for path in [
        "per_send_us.cpu",
        "per_frame_us.cpu",
        "writer_cpu_s.total",
        "writer_cpu_s.user",
        "writer_cpu_s.system",
        "writer_cpu_us_per_send",
        "reader_cpu_s",
        "reader_cpu_us_per_frame",
        "other_cpu_s",
    ] {
        assert!(number(r, path) >= 0.0, "{path}:\n{r:#}");
    }
}

#[test]
fn tiny_floor_reports_sane_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("floor.json");
    let report = floor(&[
        "-n",
        "20",
        "--rounds",
        "3",
        "--gap-ms",
        "2",
        "--json",
        path.to_str().expect("utf-8 path"),
    ]);
    check(&report, 20, 1);
    assert_eq!(report["submit"], "send", "{report:#}");
    assert_eq!(number(&report, "syscalls_per_round"), 20.0, "{report:#}");
    assert_eq!(report["uring_chunk"], Value::Null, "{report:#}");
    assert_eq!(report["writer_cpu"], Value::Null, "{report:#}");
    assert_eq!(report["writer_core"], Value::Null, "{report:#}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("report file"))
            .expect("report file is JSON");
    assert_eq!(written, report);
}

#[test]
fn tiny_floor_batches_and_pins() {
    let pinnable = Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    let mut args = vec![
        "-n",
        "20",
        "--rounds",
        "3",
        "--gap-ms",
        "2",
        "--per-send",
        "4",
    ];
    if pinnable {
        args.extend(["--cpu", "0", "--reader-cpu", "0"]);
    }
    let report = floor(&args);
    check(&report, 20, 4);
    if pinnable {
        assert_eq!(report["writer_cpu"], 0, "{report:#}");
        assert!(number(&report, "writer_core.busy_s") >= 0.0, "{report:#}");
    }
}

/// io_uring, when this machine allows it: one submission a round with a
/// queue of N, five with a queue of 4 (chunks of 4, 4, 4, 4, 4). Where
/// io_uring_setup is refused, the run must fail saying so and with the
/// sysctl's value, never fall back to plain writes.
#[test]
fn tiny_floor_through_io_uring() {
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
            .args(["floor", "-n", "20", "--rounds", "3", "--gap-ms", "2"])
            .args(["--submit", "io-uring"])
            .args(extra)
            .output()
            .expect("run switchyard-bench floor")
    };
    let out = run(&[]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("io_uring_setup") && err.contains("kernel.io_uring_disabled = "),
            "{err}"
        );
        return;
    }
    for (extra, chunk, syscalls) in [(&[][..], 20, 1.0), (&["--uring-entries", "4"][..], 4, 5.0)] {
        let out = if extra.is_empty() {
            out.clone()
        } else {
            run(extra)
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
        check(&r, 20, 1);
        assert_eq!(r["submit"], "io-uring", "{r:#}");
        assert_eq!(r["uring_chunk"], chunk, "{r:#}");
        assert_eq!(number(&r, "syscalls_per_round"), syscalls, "{r:#}");
        assert!(number(&r, "io_workers_cpu_s") >= 0.0, "{r:#}");
    }
}

#[test]
fn uring_entries_need_io_uring() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["floor", "-n", "20", "--uring-entries", "4"])
        .output()
        .expect("run switchyard-bench floor");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--submit io-uring"), "{err}");
}

#[test]
fn more_connections_than_files_or_ports_allow_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["floor", "-n", "100000000"])
        .output()
        .expect("run switchyard-bench floor");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open files") || err.contains("ports"), "{err}");
}
