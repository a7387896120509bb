//! `prometheus`: a Switchyard producer plugin (library stem
//! `switchyard_prometheus`) that takes alerts from Alertmanager and
//! Prometheus over HTTP, and reads queue metrics from Prometheus exposition
//! pages.
//!
//! # Configuration (`[plugins.config]`)
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `listen` | `"127.0.0.1:9102"` | HTTP alert input address (an IP and port; host names are not resolved). `""` or `false` turns it off. |
//! | `max_body_bytes` | `1048576` | Largest request body. A larger `Content-Length` is answered 413 before the body is read; a chunked body is cut off with 413 when it passes the bound. Never buffered. |
//! | `max_connections` | `64` | Most HTTP connections at once; further ones get 503 (`Retry-After: 1`) and are counted. |
//! | `token_env` | none | Name of an environment variable holding a bearer token. When set, requests without `Authorization: Bearer <token>` get 401. `create` fails if the variable is unset or empty. The token is never logged. |
//! | `scrape` | `[]` | Scrape targets: `[{ url, interval_ms, timeout_ms, metrics = { pending, processing, pending_batches, avg_wait_time_ms } }]` (below). |
//!
//! Each `scrape` entry:
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `url` | required | An `http://` URL serving the Prometheus text exposition format (https is not supported). `user:password@` in it is sent as basic auth and redacted in logs. |
//! | `interval_ms` | `15000` | Time between the starts of two scrapes (≥ 10). The first scrape runs at start. |
//! | `timeout_ms` | `10000`, at most `interval_ms` | Longest one scrape may take. |
//! | `metrics` | required | A table mapping any of `pending`, `processing`, `pending_batches`, `avg_wait_time_ms` to a series selector. At least one. |
//!
//! A series selector is a metric name (`queue_pending`, `job:queue:sum`)
//! optionally followed by label matchers in braces:
//! `queue_pending{queue="a", shard!="2"}` (operators `=` and `!=`, values
//! in double quotes with `\\`, `\"`, `\n` escapes; a label a series lacks
//! counts as `""`, as in PromQL). All series matching a selector are summed.
//!
//! An unknown key (also inside `scrape` entries and `metrics`), a bad value,
//! or no input at all (`listen` off and no `scrape` entry) is refused by
//! `create` with a message naming the key.
//!
//! # Alert input: `POST /api/v2/alerts`
//!
//! Takes either body, told apart by shape:
//! - an **Alertmanager webhook** notification (version `"4"`): an object
//!   with `alerts`, `status`, `groupLabels`, `commonLabels`, … — point a
//!   receiver's `webhook_configs` `url` at `http://<listen>/api/v2/alerts`
//!   (with `send_resolved: true` to see resolutions). Each alert's own
//!   `status` is used (the notification's when it has none) and its
//!   `fingerprint` is kept (computed when absent);
//! - Prometheus' own **alert list**, the Alertmanager v2 postable-alerts
//!   array `[{labels, annotations, startsAt, endsAt, generatorURL}]` — so a
//!   Prometheus `alerting.alertmanagers` entry can point straight at the
//!   plugin. `status` is `resolved` once `endsAt` is in the past, else
//!   `firing`; `fingerprint` is computed as Alertmanager does.
//!
//! Answers (JSON, `Connection: close`): 200
//! `{"status":"success","accepted":N,"format":…}`; 400 `invalid_alerts`
//! (bad JSON or shape, with the path of the offending value — nothing of
//! such a body is emitted), 401 without the token when `token_env` is set,
//! 404 for any other path, 405 for another method, 411 without a
//! `Content-Length` or chunked body, 413 over `max_body_bytes`, 503 when the
//! router pushed back (Alertmanager retries; alerts before the refused one
//! were taken). Every read has a 10 s timeout and a request must complete
//! within 30 s of the connection being accepted.
//!
//! # Events
//!
//! `infrastructure.alert` (channel `infrastructure`), one per alert:
//!
//! | field | type | value |
//! |-------|------|-------|
//! | `alertname` | string, required | label `alertname` (`""` when absent) |
//! | `status` | `firing` \| `resolved`, required | see above |
//! | `severity` | string or null | label `severity` |
//! | `component` | string or null | label `component`, else `job`, else `instance` (the first that is set and not empty) |
//! | `summary` | string or null | annotation `summary`, else `description` |
//! | `started_at` | string, required | `startsAt`, RFC 3339 UTC with milliseconds (the time of arrival when unset) |
//! | `ends_at` | string or null | null while firing; when resolved, `endsAt` (the time of arrival when unset). Go's zero time `0001-01-01T00:00:00Z` means unset. |
//! | `fingerprint` | string, required | Alertmanager's: FNV-1a 64 over the labels sorted by name (name bytes, 0xff, value bytes, 0xff), 16 hex digits |
//! | `labels` | object, required | every label |
//!
//! `queue.metrics` (channel `system`), once per successful scrape: the
//! `pending`, `processing`, `pending_batches` and `avg_wait_time_ms` numbers
//! configured in `metrics`, each the sum of its matching series. A field
//! whose selector matched nothing (or whose sum is NaN or infinite) is left
//! out; when no field is left, nothing is emitted (logged once). A failed
//! scrape (connection, non-2xx status, timeout, a page over 16 MiB) is
//! logged and counted, and emits nothing. Malformed exposition lines are
//! skipped (logged once).
//!
//! An instance declares `infrastructure.alert` only when `listen` is on and
//! `queue.metrics` only when it has `scrape` entries, so two instances may
//! split the roles. Events refused for backpressure are dropped and
//! counted. Counters are logged every minute when they changed, and at stop.

mod alerts;
mod config;
mod engine;
mod events;
mod exposition;
mod http;
mod scrape;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_plugin_api::{
    bind_polled, export_plugin, join_until, spawn_thread, EventTypeDecl, Host, LogLevel, Plugin,
    PluginError, PluginInfo, Role, Running,
};

pub use alerts::{fingerprint, parse_body, InfrastructureAlert, Shape, Status};
pub use config::{Config, ScrapeConfig, DEFAULT_LISTEN, METRIC_FIELDS};
pub use engine::CounterSnapshot;
pub use events::{declarations, INFRASTRUCTURE_ALERT, QUEUE_METRICS};
pub use exposition::{parse_page, queue_metrics, Page, Selector, Series};
pub use http::ALERTS_PATH;
/// The seam the service runs on, shared by all plugins (re-exported from the SDK).
pub use switchyard_plugin_api::Emitter;

use engine::Counters;

/// How long `stop` waits for the threads.
const JOIN: Duration = Duration::from_millis(2000);
/// How often the counters are logged when they changed.
const STATS_EVERY: Duration = Duration::from_secs(60);
/// The granularity of interruptible sleeps.
const TICK: Duration = Duration::from_millis(50);

/// The plugin before it starts: a validated [`Config`]. Starting it
/// gives the running [`Service`].
pub struct Prometheus {
    config: Config,
}

impl Plugin for Prometheus {
    type Running = Service<Host>;

    fn info() -> PluginInfo {
        declarations().into_iter().fold(
            PluginInfo::new("prometheus", env!("CARGO_PKG_VERSION"), Role::Producer),
            PluginInfo::event_type,
        )
    }

    fn create(config: serde_json::Value) -> Result<Self, PluginError> {
        let config = Config::from_value(config).map_err(PluginError::Config)?;
        Ok(Prometheus { config })
    }

    fn event_types(&self) -> Option<Vec<EventTypeDecl>> {
        Some(instance_types(&self.config))
    }

    fn start(self, host: Host) -> Result<Service<Host>, PluginError> {
        Service::start(&self.config, host)
    }
}

impl Running for Service<Host> {
    fn stop(self) {
        Service::stop(self);
    }
}

export_plugin!(Prometheus);

/// The types an instance with `config` emits.
pub fn instance_types(config: &Config) -> Vec<EventTypeDecl> {
    let mut types = Vec::new();
    if config.listen.is_some() {
        types.push(events::infrastructure_alert());
    }
    if !config.scrape.is_empty() {
        types.push(events::queue_metrics());
    }
    types
}

/// A running instance: the HTTP accept loop, one thread per scrape target,
/// a stats thread, and the means to stop them. [`Prometheus`] runs one on
/// the router's [`Host`]; tests may run one on a fake [`Emitter`].
pub struct Service<E: Emitter> {
    emitter: E,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
}

impl<E: Emitter> Service<E> {
    /// Binds the listener and starts the threads; returns promptly.
    pub fn start(config: &Config, emitter: E) -> Result<Service<E>, PluginError> {
        let listener = config.listen.map(bind_polled).transpose()?;
        let mut service = Service {
            emitter: emitter.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            local_addr: listener.as_ref().map(|(_, local)| *local),
            counters: Arc::new(Counters::default()),
        };
        if let Some((listener, local)) = listener {
            let shared = Arc::new(http::Shared {
                emitter: emitter.clone(),
                counters: Arc::clone(&service.counters),
                shutdown: Arc::clone(&service.shutdown),
                limits: http::Limits {
                    max_body_bytes: config.max_body_bytes,
                    max_connections: config.max_connections,
                    token: config.token.clone(),
                },
            });
            let thread = spawn_thread(&emitter, "prometheus-http", move || {
                http::serve(listener, shared)
            })?;
            service.threads.push(thread);
            let auth = match &config.token_env {
                Some(var) => format!(" (bearer token from {var})"),
                None => String::new(),
            };
            emitter.log(
                LogLevel::Info,
                &format!("prometheus: accepting alerts on http://{local}{ALERTS_PATH}{auth}"),
            );
        }
        for target in &config.scrape {
            emitter.log(
                LogLevel::Info,
                &format!(
                    "prometheus: scraping {} every {} ms",
                    config::redact_url(&target.url),
                    target.interval.as_millis()
                ),
            );
            let (target, em, counters, shutdown) = (
                target.clone(),
                emitter.clone(),
                Arc::clone(&service.counters),
                Arc::clone(&service.shutdown),
            );
            let thread = spawn_thread(&emitter, "prometheus-scrape", move || {
                scrape::run(target, em, counters, shutdown)
            })?;
            service.threads.push(thread);
        }
        let (em, counters, shutdown) = (
            emitter.clone(),
            Arc::clone(&service.counters),
            Arc::clone(&service.shutdown),
        );
        let stats = spawn_thread(&emitter, "prometheus-stats", move || {
            let mut last = counters.snapshot();
            while sleep_until(Instant::now() + STATS_EVERY, &shutdown) {
                let now = counters.snapshot();
                if now != last {
                    em.log(LogLevel::Info, &format!("prometheus: {now}"));
                    last = now;
                }
            }
        })?;
        service.threads.push(stats);
        Ok(service)
    }

    /// The address the alert input is bound to (useful with port 0), if on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Stops the threads and closes the listener. Bounded: a thread that
    /// does not finish within about 2 s (a scrape stuck past its timeout)
    /// is left behind. Connection threads finish on their own (every read
    /// has a timeout); an alert they emit after this is refused `stopped`
    /// and answered 503.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + JOIN;
        for handle in std::mem::take(&mut self.threads) {
            if !join_until(handle, deadline) {
                self.emitter.log(
                    LogLevel::Warn,
                    "prometheus: a thread did not stop in time; left behind",
                );
            }
        }
        self.emitter.log(
            LogLevel::Info,
            &format!("prometheus: stopped; {}", self.counters.snapshot()),
        );
    }
}

impl<E: Emitter> Drop for Service<E> {
    /// Dropped without [`Service::stop`] (e.g. a failed start): signal every
    /// thread to finish, without waiting.
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

/// Sleeps until `until` in short steps; false as soon as `shutdown` is set.
pub(crate) fn sleep_until(until: Instant, shutdown: &AtomicBool) -> bool {
    loop {
        if shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(TICK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_declares_both_types_with_full_schemas() {
        let info = Prometheus::info();
        assert_eq!(info.name, "prometheus");
        assert_eq!(info.role, Role::Producer);
        let names: Vec<&str> = info.event_types.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["infrastructure.alert", "queue.metrics"]);
        let alert = &info.event_types[0];
        assert_eq!(alert.channel.as_deref(), Some("infrastructure"));
        let fields = alert.payload.as_ref().unwrap();
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "alertname",
                "component",
                "ends_at",
                "fingerprint",
                "labels",
                "severity",
                "started_at",
                "status",
                "summary"
            ]
        );
        assert_eq!(
            fields["status"].allowed,
            Some(vec![json!("firing"), json!("resolved")])
        );
        assert!(fields["status"].required && fields["fingerprint"].required);
        assert!(!fields["ends_at"].required && !fields["severity"].required);
        let metrics = &info.event_types[1];
        assert_eq!(metrics.channel.as_deref(), Some("system"));
        let fields = metrics.payload.as_ref().unwrap();
        assert_eq!(fields.len(), 4);
        for f in METRIC_FIELDS {
            assert_eq!(
                fields[f].field_type,
                switchyard_plugin_api::FieldType::Number
            );
            assert!(!fields[f].required);
        }
    }

    #[test]
    fn an_alert_payload_fits_its_schema() {
        let (_, alerts) = parse_body(
            br#"[{"labels":{"alertname":"A","severity":"low"},"endsAt":"2000-01-01T00:00:00Z"}]"#,
            chrono::Utc::now(),
        )
        .unwrap();
        let payload = serde_json::to_value(&alerts[0]).unwrap();
        let problems = events::infrastructure_alert().check_payload(&payload);
        assert!(problems.is_empty(), "{problems:?} in {payload}");
        assert_eq!(payload["status"], "resolved");
    }

    #[test]
    fn create_validates_without_side_effects_and_types_follow_inputs() {
        let err = Prometheus::create(json!({"bogus": 1})).err().unwrap();
        assert!(err.to_string().contains("`bogus`"), "{err}");
        let err = Prometheus::create(json!({"listen": ""})).err().unwrap();
        assert!(err.to_string().contains("no input"), "{err}");
        // Port 1 would need privileges to bind: create must not try.
        let p = Prometheus::create(json!({"listen": "127.0.0.1:1"})).unwrap();
        let names = |p: &Prometheus| -> Vec<String> {
            p.event_types()
                .unwrap()
                .into_iter()
                .map(|d| d.name)
                .collect()
        };
        assert_eq!(names(&p), ["infrastructure.alert"]);
        let scrape = json!([{"url": "http://127.0.0.1:1/m", "metrics": {"pending": "p"}}]);
        let p = Prometheus::create(json!({"listen": false, "scrape": scrape})).unwrap();
        assert_eq!(names(&p), ["queue.metrics"]);
        let p = Prometheus::create(json!({"scrape": scrape})).unwrap();
        assert_eq!(names(&p), ["infrastructure.alert", "queue.metrics"]);
    }
}
