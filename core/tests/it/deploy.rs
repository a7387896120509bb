//! The operator files under `deploy/` (SPEC §11): the Prometheus alert
//! rules pass `promtool check rules` (Debian's `prometheus` package), the
//! Grafana dashboard is JSON with panels, every metric either of them
//! names is one the router serves, the systemd unit passes
//! `systemd-analyze verify` and carries its hardening, and the Dockerfile
//! (not built here: no container engine) names its stages, runs as a
//! non-root user and copies only what the build produces.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{alert, plugin, start, BASE};
use switchyard_engine::metrics::{ChannelLabel, EndpointLabel, Metrics, PluginLabel, TypeLabel};

const PROMTOOL: &str = "/usr/bin/promtool";
const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// Every `switchyard_*` metric name in `expr`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

/// The labels of every `by (...)` clause in `expr`.
fn by_labels(expr: &str, into: &mut BTreeSet<String>) {
    for part in expr.split("by (").skip(1) {
        let list = part.split(')').next().unwrap_or_default();
        into.extend(list.split(',').map(|l| l.trim().to_owned()));
    }
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/switchyard.json"))
        .expect("deploy/grafana/switchyard.json is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("target expr").to_owned())
        .collect()
}

/// The `expr:` values of the alert rules.
fn alert_exprs() -> Vec<String> {
    read("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    // No skip: a missing tool must fail the test, not pass it (scripts/test
    // installs it).
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install Debian's prometheus package, which provides \
         promtool (scripts/test does so when run as root)"
    );
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/alerts.yml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = read("deploy/prometheus/alerts.yml");
    let alerts = rules.matches("- alert: ").count();
    assert!(alerts >= 5, "{alerts} alerts");
    assert_eq!(
        rules.matches(" summary: ").count(),
        alerts,
        "a summary each"
    );
    assert_eq!(
        rules.matches(" description: ").count(),
        alerts,
        "a description each"
    );
    let exprs = alert_exprs().join("\n");
    for wanted in [
        "switchyard_plugin_up == 0",
        "rate(switchyard_dropped_total[5m])",
        "switchyard_cluster_connected == 0",
        "reason=\"cluster_unavailable\"",
        "increase(switchyard_dropped_total{reason=\"cluster_lost\"}[10m]) > 0",
        "increase(switchyard_config_reloads_total{result=\"refused\"}[10m]) > 0",
        "up{",
    ] {
        assert!(exprs.contains(wanted), "no rule on {wanted}:\n{exprs}");
    }
}

#[test]
fn the_dashboard_is_json_with_a_panel_over_each_metric() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/switchyard.json")).expect("JSON");
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 9, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "{panel}");
        assert!(panel["title"].is_string(), "{panel}");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        assert!(
            !panel["targets"].as_array().expect("targets").is_empty(),
            "{panel}"
        );
    }
    let exprs = dashboard_exprs().join("\n");
    for wanted in [
        "by (endpoint) (switchyard_connections",
        "by (type) (rate(switchyard_events_accepted_total",
        "by (reason) (rate(switchyard_events_refused_total",
        "by (channel) (rate(switchyard_deliveries_total",
        "by (reason) (rate(switchyard_dropped_total",
        "histogram_quantile(0.5, sum by (le) (rate(switchyard_delivery_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(switchyard_delivery_latency_seconds_bucket",
        "by (result) (increase(switchyard_config_reloads_total",
        "by (plugin) (switchyard_plugin_up",
        "by (plugin) (switchyard_plugin_restarts",
        "by (node) (switchyard_cluster_connected",
    ] {
        assert!(exprs.contains(wanted), "no panel on {wanted}:\n{exprs}");
    }
}

/// The sample names of an OpenMetrics text (`name{labels} value` lines).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Every metric the dashboard and the alert rules name is one the router
/// serves. A real router (with a plugin, so that the plugin families have
/// samples) is made to accept, refuse, deliver, refuse an upgrade and
/// reload, and its `/metrics` is read. Two families cannot get a sample
/// here cheaply, and a family with no sample is not printed:
/// `switchyard_dropped_total` (needs a stalled client or a full sink; the
/// slow_consumers tests do that) and `switchyard_cluster_connected` (the
/// redis engine only). Those two, and only those, are checked against the
/// registry the router encodes (`Metrics::for_node` of the engine, a node's
/// registry, with one sample in every family), with the same encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_served() {
    let mut used = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for expr in dashboard_exprs().iter().chain(alert_exprs().iter()) {
        metric_names(expr, &mut used);
        by_labels(expr, &mut labels);
    }
    assert!(used.len() >= 10, "{used:?}");

    // The labels the metrics carry (docs/operations.md#metrics), plus `le`
    // of the histogram and the `instance` Prometheus adds.
    let known: BTreeSet<String> = [
        "endpoint", "type", "reason", "channel", "result", "plugin", "node", "le", "instance",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let unknown: Vec<_> = labels.difference(&known).collect();
    assert!(unknown.is_empty(), "unknown labels {unknown:?}");

    let config = format!(
        "{BASE}\n[[plugins]]\nname = \"kit\"\nlibrary = \"{}\"\n[plugins.config]\n",
        plugin("switchyard_testkit")
    );
    let router = start(&config).await;
    let mut client = router.ws("/ws/events").await;
    client.established().await;
    router.publish_ok(&alert("a1")).await;
    client.recv_type("alert.created").await;
    let (status, _) = router
        .publish(&serde_json::json!({"type": "no.such", "payload": {}}))
        .await;
    assert!((400..500).contains(&status), "{status}");
    assert!(router.try_ws("/ws/nowhere", &[]).await.is_err());
    let (status, _) = router.reload().await;
    assert_eq!(status, 200);
    router.write_config("this is not toml [[[");
    let (status, _) = router.reload().await;
    assert_ne!(status, 200);
    let served = sample_names(&router.metrics().await);

    let node = Metrics::for_node(Some("node-a"));
    node.accepted
        .get_or_create(&TypeLabel {
            r#type: "alert.created".into(),
        })
        .inc();
    node.refuse("cluster_unavailable");
    node.refuse_upgrade("shutting_down");
    node.drop_events("slow_consumer", 1);
    node.reload(false);
    node.latency.observe(std::time::Duration::from_millis(1));
    node.deliveries
        .get_or_create(&ChannelLabel {
            channel: "alerts".into(),
        })
        .inc();
    node.connections
        .get_or_create(&EndpointLabel {
            endpoint: "/ws/events".into(),
        })
        .set(1);
    let kit = PluginLabel {
        plugin: "kit".into(),
    };
    node.plugin_up.get_or_create(&kit).set(1);
    node.plugin_restarts.get_or_create(&kit).set(0);
    let registered = sample_names(&node.encode());

    let mut only_registered = BTreeSet::new();
    for name in &used {
        if served.contains(name) {
            continue;
        }
        assert!(
            registered.contains(name),
            "{name} is neither served by the router ({served:?}) nor registered ({registered:?})"
        );
        only_registered.insert(name.as_str());
    }
    let expected: BTreeSet<&str> = ["switchyard_cluster_connected", "switchyard_dropped_total"]
        .into_iter()
        .collect();
    assert!(
        only_registered.is_subset(&expected),
        "{only_registered:?} should have been served: {served:?}"
    );
    router.shutdown().await;
}

/// The unit, with `ExecStart` pointed at the binary cargo built (verify
/// checks that the command exists).
#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/switchyard.service");
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in unit.lines() {
        if let Some((key, value)) = line.split_once('=') {
            if !line.starts_with('#') {
                keys.entry(key.trim()).or_default().push(value.trim());
            }
        }
    }
    let one = |key: &str| -> &str {
        keys.get(key)
            .and_then(|v| v.last().copied())
            .unwrap_or_else(|| panic!("{key}= missing"))
    };
    assert!(one("DynamicUser") == "yes" || one("User") == "switchyard");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert!(one("ReadOnlyPaths").contains("/etc/switchyard"));
    assert!(one("ReadOnlyPaths").contains("/usr/lib/switchyard/plugins"));
    assert_eq!(one("ReadWritePaths"), "/var/lib/switchyard");
    assert_eq!(one("CapabilityBoundingSet"), "");
    let families: BTreeSet<&str> = one("RestrictAddressFamilies").split(' ').collect();
    assert_eq!(
        families,
        ["AF_INET", "AF_INET6", "AF_UNIX"].into_iter().collect()
    );
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE number");
    assert!(
        nofile > 100_000,
        "LimitNOFILE {nofile} under max_connections"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    let stop: u64 = one("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec seconds");
    // Two drains of server.shutdown_timeout_s (10 s by default) and the
    // producers' then the sinks' stop_timeout_s (5 s) at most.
    assert!(stop > 2 * 10 + 2 * 5, "TimeoutStopSec {stop}");
    assert!(one("ExecStart").contains("--config /etc/switchyard/config.toml"));

    // No skip: systemd-analyze is part of Debian's systemd package.
    assert!(
        Path::new(SYSTEMD_ANALYZE).exists(),
        "{SYSTEMD_ANALYZE} is missing: install Debian's systemd package"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
    // Unknown keys and bad values are only warned about: none for this unit.
    let about_it: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("switchyard.service"))
        .collect();
    assert!(about_it.is_empty(), "systemd-analyze verify:\n{stderr}");
}

/// The Dockerfile is not built here (no container engine): its stages, its
/// user and what it copies are checked against the workspace.
#[test]
fn the_dockerfile_builds_the_workspace_packages_and_runs_unprivileged() {
    let file = read("deploy/Dockerfile");
    let lines: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            "FROM rust:1-bookworm AS build",
            "FROM debian:bookworm-slim AS runtime"
        ]
    );
    let user = lines
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    assert!(!["root", "0", "0:0"].contains(&user), "USER {user}");
    assert!(file.contains("groupadd --system switchyard"));
    assert!(lines.contains(&"EXPOSE 8080 9101 9102"));
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(file.contains("HEALTHCHECK") && file.contains("http://127.0.0.1:8080/health/live"));
    assert!(file.contains("SWITCHYARD__SERVER__LISTEN=0.0.0.0:8080"));

    // The packages it builds are workspace members, and the plugin
    // libraries it copies are theirs: every plugin package but the testkit,
    // which is what the shipped config.toml loads.
    let mut lib_of = BTreeMap::new();
    for dir in std::fs::read_dir(repo().join("plugins")).unwrap() {
        let manifest = std::fs::read_to_string(dir.unwrap().path().join("Cargo.toml")).unwrap();
        let value = |section: &str| {
            let at = manifest.find(section).unwrap() + section.len();
            let name = manifest[at..].split("name = \"").nth(1).unwrap();
            name.split('"').next().unwrap().to_owned()
        };
        lib_of.insert(value("[package]"), value("[lib]"));
    }
    let code = lines.join("\n");
    let built: BTreeSet<&str> = code
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let mut expected: BTreeSet<&str> = lib_of
        .keys()
        .map(String::as_str)
        .filter(|p| *p != "switchyard-testkit-plugin")
        .collect();
    expected.insert("switchyard");
    assert_eq!(built, expected);

    let copied: BTreeSet<String> = code
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("/src/target/release/"))
        .map(str::to_owned)
        .collect();
    let mut wanted: BTreeSet<String> = built
        .iter()
        .filter_map(|p| lib_of.get(*p))
        .map(|lib| format!("lib{lib}.so"))
        .collect();
    wanted.insert("switchyard".into()); // core's [[bin]]
    assert_eq!(copied, wanted);
    let config = read("config.toml");
    for lib in lib_of.values() {
        if config.contains(&format!("library = \"{lib}\"")) {
            assert!(copied.contains(&format!("lib{lib}.so")), "{lib} not copied");
        }
    }

    // What the sed in the build stage rewrites is in the shipped config.
    for line in [
        "plugin_dir = \"target/release\"",
        "path = \"var/audit/audit.log\"",
        "listen = \"127.0.0.1:9101\"",
        "listen = \"127.0.0.1:9102\"",
    ] {
        assert!(
            config.lines().any(|l| l.starts_with(line)),
            "config.toml has no line {line}"
        );
        assert!(file.contains(&format!("s#^{line}#")), "no sed of {line}");
    }
    // Every COPY from the build context names files of the repository.
    for line in &lines {
        if let Some(args) = line.strip_prefix("COPY ") {
            if !args.starts_with("--from=") {
                let sources: Vec<&str> = args.split_whitespace().collect();
                for source in &sources[..sources.len() - 1] {
                    assert!(repo().join(source).exists(), "COPY {source}");
                }
            }
        }
    }
    assert!(repo().join("deploy/Dockerfile.dockerignore").exists());
}

/// The config.toml the image ships is the repository's with the
/// Dockerfile's own `sed -e 's#^FROM#TO#'` rewrites applied; `switchyard
/// check` accepts it and loads every plugin it names (here from the debug
/// plugin libraries instead of /usr/lib/switchyard/plugins, and the audit
/// log in a scratch folder instead of /var/lib/switchyard), with the
/// image's `SWITCHYARD__SERVER__LISTEN`.
#[test]
fn the_image_config_passes_switchyard_check() {
    let file = read("deploy/Dockerfile");
    let rewrites: Vec<(String, String)> = file
        .split("-e 's#")
        .skip(1)
        .map(|rest| {
            let mut parts = rest.split('#');
            let from = parts.next().unwrap().strip_prefix('^').expect("anchored");
            (from.to_owned(), parts.next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(rewrites.len(), 4, "{rewrites:?}");
    let rewrite = |text: &str, rewrites: &[(String, String)]| -> String {
        let mut out = String::new();
        for line in text.lines() {
            let line = rewrites
                .iter()
                .find_map(|(from, to)| line.strip_prefix(from.as_str()).map(|r| format!("{to}{r}")))
                .unwrap_or_else(|| line.to_owned());
            out.push_str(&line);
            out.push('\n');
        }
        out
    };
    let image = rewrite(&read("config.toml"), &rewrites);
    assert!(image.contains("\nplugin_dir = \"/usr/lib/switchyard/plugins\""));

    let dir = tempfile::tempdir().unwrap();
    let plugins = Path::new(&plugin("switchyard_detection"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let local = rewrite(
        &image,
        &[
            (
                "plugin_dir = \"/usr/lib/switchyard/plugins\"".into(),
                format!("plugin_dir = \"{plugins}\""),
            ),
            (
                "path = \"/var/lib/switchyard/audit/audit.log\"".into(),
                format!("path = \"{}/audit/audit.log\"", dir.path().display()),
            ),
        ],
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("SWITCHYARD__SERVER__LISTEN", "0.0.0.0:8080")
        .output()
        .expect("run switchyard check");
    assert!(
        out.status.success(),
        "switchyard check refused the image's config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
