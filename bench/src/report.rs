//! Markdown rendering of JSON reports.

use serde_json::Value;

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn ms(v: &Value) -> Option<f64> {
    num(v).map(|us| us / 1000.0)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// One row per report, then (with two or more) each report's ratios to the first.
pub fn comparison_table(reports: &[Value]) -> String {
    let mut out = String::new();
    out.push_str(
        "| server | N | M | deliveries | deliveries/s | server CPU µs/delivery | KiB/idle conn | \
         p50 ms | p99 ms | p999 ms | p99 ms (accept ts) | lost | dup |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in reports {
        let lat = &r["latency_us"]["send_to_receipt"];
        let acc = &r["latency_us"]["accept_to_receipt"];
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["server"].as_str().unwrap_or("?"),
            r["connected"],
            r["events"],
            r["deliveries"],
            fmt_opt(num(&r["deliveries_per_s"]), 0),
            fmt_opt(num(&r["server_cpu_us_per_delivery"]), 2),
            fmt_opt(num(&r["rss_per_idle_connection_kib"]), 1),
            fmt_opt(ms(&lat["p50"]), 2),
            fmt_opt(ms(&lat["p99"]), 2),
            fmt_opt(ms(&lat["p999"]), 2),
            fmt_opt(ms(&acc["p99"]), 1),
            r["lost"],
            r["duplicated"],
        ));
    }
    if reports.len() > 1 {
        let base = &reports[0];
        let name = base["server"].as_str().unwrap_or("first");
        out.push_str(&format!(
            "\nRatios of {name} to each peer (throughput: {name} ÷ peer, higher is better for \
             {name}; CPU, memory and p99: peer ÷ {name}, higher is better for {name}):\n\n"
        ));
        out.push_str(
            "| peer | deliveries/s | server CPU per delivery | KiB per idle connection | p99 |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: |\n");
        for r in &reports[1..] {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r["server"].as_str().unwrap_or("?"),
                ratio(num(&base["deliveries_per_s"]), num(&r["deliveries_per_s"])),
                ratio(
                    num(&r["server_cpu_us_per_delivery"]),
                    num(&base["server_cpu_us_per_delivery"])
                ),
                ratio(
                    num(&r["rss_per_idle_connection_kib"]),
                    num(&base["rss_per_idle_connection_kib"])
                ),
                ratio(
                    num(&r["latency_us"]["send_to_receipt"]["p99"]),
                    num(&base["latency_us"]["send_to_receipt"]["p99"])
                ),
            ));
        }
    }
    out
}

/// How `one_table` names a server of `scripts/compare` in its rows.
fn display_name(server: &str) -> String {
    match server {
        "switchyard" => "Switchyard, WebSocket".into(),
        "switchyard-sse" => "Switchyard, SSE".into(),
        "cluster" => "Switchyard, 3 nodes on Redis".into(),
        "fastapi" => "FastAPI / uvicorn".into(),
        "node" => "Node `ws`".into(),
        "uws" => "uWebSockets.js, native pub/sub".into(),
        other => other.into(),
    }
}

/// The runs of one server that `one_table` puts in a row (any may be missing).
#[derive(Default)]
pub struct ServerRuns {
    /// `scripts/compare`'s name of the server (`switchyard`, `uws`, …).
    pub server: String,
    /// N 1,000 × M 1,000 as fast as accepted.
    pub burst: Option<Value>,
    /// N 1,000 × 50 events/s, one event per request.
    pub steady: Option<Value>,
    /// `--idle-only` at N 1,000.
    pub idle_1k: Option<Value>,
    /// `--idle-only` at N 10,000.
    pub idle_10k: Option<Value>,
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The table of issue 14: for each server, CPU µs per delivery in a burst and
/// at a steady rate (and the kernel's part of the steady figure), the steady
/// p50/p99 (send → receipt by the generator), the steady p99 to the frame's
/// arrival at the subscriber's socket (the server's latency without the
/// generator's backlog; `stamped`), KiB per idle connection at 1,000 and
/// 10,000, each beside the kernel's one-core fan-out floor (`floors`:
/// `switchyard-bench floor` reports at the same N, taken in the same run;
/// ratios use their mean) and, for steady CPU, beside the server named
/// `reference` (uWebSockets.js). A p99 is divided by the floor's p99 of
/// its sends' returns (`delivery_ms`), the same percentile of the same
/// kind of latency.
pub fn one_table(floors: &[Value], runs: &[ServerRuns], reference: &str) -> String {
    let floor_frame_us = mean(
        &floors
            .iter()
            .filter_map(|f| num(&f["per_frame_us"]["cpu"]))
            .collect::<Vec<_>>(),
    );
    let floor_p99_ms = mean(
        &floors
            .iter()
            .filter_map(|f| num(&f["delivery_ms"]["p99"]))
            .collect::<Vec<_>>(),
    );
    let cpu = |r: &Option<Value>| {
        r.as_ref()
            .and_then(|r| num(&r["server_cpu_us_per_delivery"]))
    };
    let lat =
        |r: &Option<Value>, to: &str, q: &str| r.as_ref().and_then(|r| ms(&r["latency_us"][to][q]));
    let kib = |r: &Option<Value>| {
        r.as_ref()
            .and_then(|r| num(&r["rss_per_idle_connection_kib"]))
    };
    let reference_cpu = runs
        .iter()
        .find(|r| r.server == reference)
        .and_then(|r| cpu(&r.steady));
    let plain_ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    };

    let mut out = String::new();
    out.push_str(
        "| server | burst CPU µs/delivery | steady CPU µs/delivery | of it in the kernel | \
         steady CPU ÷ floor | steady CPU ÷ uWS | steady p50 ms | steady p99 ms | p99 ÷ floor | \
         steady p99 ms, at arrival | ÷ floor | \
         KiB/idle conn, N 1,000 | KiB/idle conn, N 10,000 | lost / dup | other CPU s (max) |\n",
    );
    out.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n",
    );
    let list = |f: &dyn Fn(&Value) -> Option<f64>, digits: usize| {
        let v: Vec<String> = floors.iter().map(|r| fmt_opt(f(r), digits)).collect();
        if v.is_empty() {
            "–".to_string()
        } else {
            v.join(" / ")
        }
    };
    let frame = list(&|f| num(&f["per_frame_us"]["cpu"]), 2);
    out.push_str(&format!(
        "| **floor**: one `send()` per frame to each of N {} (µs per frame; ms to each send's return) \
         | {frame} | {frame} | – | 1.00× | {} | {} | {p99} | 1.00× | {p99} | 1.00× | – | – | – | {} |\n",
        floors
            .first()
            .map_or("?".into(), |f| f["connections"].to_string()),
        plain_ratio(floor_frame_us, reference_cpu),
        list(&|f| num(&f["delivery_ms"]["p50"]), 2),
        list(&|f| num(&f["other_cpu_s"]), 2),
        p99 = list(&|f| num(&f["delivery_ms"]["p99"]), 2),
    ));
    for r in runs {
        let all = [&r.burst, &r.steady, &r.idle_1k, &r.idle_10k];
        let measured = [&r.burst, &r.steady];
        let sum = |key: &str| -> String {
            let v: Vec<u64> = measured
                .iter()
                .filter_map(|x| x.as_ref().and_then(|x| x[key].as_u64()))
                .collect();
            if v.is_empty() {
                "–".into()
            } else {
                v.iter().sum::<u64>().to_string()
            }
        };
        let other = all
            .iter()
            .filter_map(|x| x.as_ref().and_then(|x| num(&x["other_cpu_s"])))
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
            display_name(&r.server),
            fmt_opt(cpu(&r.burst), 2),
            fmt_opt(cpu(&r.steady), 2),
            fmt_opt(
                r.steady
                    .as_ref()
                    .and_then(|r| num(&r["server_system_us_per_delivery"])),
                2
            ),
            plain_ratio(cpu(&r.steady), floor_frame_us),
            plain_ratio(cpu(&r.steady), reference_cpu),
            fmt_opt(lat(&r.steady, "send_to_receipt", "p50"), 2),
            fmt_opt(lat(&r.steady, "send_to_receipt", "p99"), 2),
            plain_ratio(lat(&r.steady, "send_to_receipt", "p99"), floor_p99_ms),
            fmt_opt(lat(&r.steady, "send_to_arrival", "p99"), 2),
            plain_ratio(lat(&r.steady, "send_to_arrival", "p99"), floor_p99_ms),
            fmt_opt(kib(&r.idle_1k), 2),
            fmt_opt(kib(&r.idle_10k), 2),
            sum("lost"),
            sum("duplicated"),
            fmt_opt(other, 1),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_to_the_first() {
        let a = json!({"server":"a","deliveries_per_s":200.0,"server_cpu_us_per_delivery":1.0,
            "rss_per_idle_connection_kib":4.0,"latency_us":{"send_to_receipt":{"p99":1000}}});
        let b = json!({"server":"b","deliveries_per_s":100.0,"server_cpu_us_per_delivery":3.0,
            "rss_per_idle_connection_kib":12.0,"latency_us":{"send_to_receipt":{"p99":2000}}});
        let t = comparison_table(&[a, b]);
        assert!(t.contains("| b | 2.00× | 3.00× | 3.00× | 2.00× |"), "{t}");
    }

    #[test]
    fn one_table_quotes_the_floor_and_the_reference() {
        let floor = json!({"connections":1000,"per_frame_us":{"cpu":4.0},
            "delivery_ms":{"p50":2.5,"p99":5.0,"max":6.0},"other_cpu_s":0.1});
        let run = |cpu: f64, p99_us: u64| {
            json!({"server_cpu_us_per_delivery":cpu,"server_system_us_per_delivery":cpu * 0.75,"lost":0,"duplicated":0,"other_cpu_s":0.5,
                "latency_us":{"send_to_receipt":{"p50":1000,"p99":p99_us},
                    "send_to_arrival":{"p99":p99_us / 2}}})
        };
        let runs = [
            ServerRuns {
                server: "switchyard".into(),
                burst: Some(run(0.5, 1)),
                steady: Some(run(6.0, 5500)),
                idle_1k: Some(json!({"rss_per_idle_connection_kib":1.25})),
                idle_10k: None,
            },
            ServerRuns {
                server: "uws".into(),
                steady: Some(run(8.0, 10_000)),
                ..Default::default()
            },
        ];
        let t = one_table(&[floor], &runs, "uws");
        assert!(
            t.contains("| **floor**: one `send()` per frame to each of N 1000 (µs per frame; ms to each send's return) | 4.00 | 4.00 | – | 1.00× | 0.50× | 2.50 | 5.00 | 1.00× | 5.00 | 1.00× |"),
            "{t}"
        );
        assert!(
            t.contains("| Switchyard, WebSocket | 0.50 | 6.00 | 4.50 | 1.50× | 0.75× | 1.00 | 5.50 | 1.10× | 2.75 | 0.55× | 1.25 | – | 0 / 0 | 0.5 |"),
            "{t}"
        );
        assert!(
            t.contains("| uWebSockets.js, native pub/sub | – | 8.00 | 6.00 | 2.00× | 1.00× | 1.00 | 10.00 | 2.00× | 5.00 | 1.00× | – | – | 0 / 0 | 0.5 |"),
            "{t}"
        );
    }
}
