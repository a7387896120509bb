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
}
