//! `switchyard-soak`: runs reconnect storms, stalled clients and config
//! reloads against a running Switchyard router for a given time, then checks
//! that every healthy client saw every accepted event exactly once.
//!
//! The binary (`switchyard-soak`) is a thin command line over [`run`]; the
//! smoke test drives [`run`] in-process. See `docs/soak.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::watch;

mod client;
mod probe;
mod publisher;
mod stalled;

/// How configuration reloads are triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadVia {
    /// Rewrite the config file (atomically, by rename) toggling a comment line.
    File,
    /// `POST /api/admin/reload`.
    Http,
}

/// Everything a soak run needs; also the command line of the binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "switchyard-soak",
    version,
    about = "Reconnect storms, stalled clients and reloads against a running Switchyard router; \
             reports lost, duplicated and peak RSS"
)]
pub struct Options {
    /// The router's base HTTP URL (WebSocket URLs are derived from it).
    /// Several nodes of a cluster: repeat `--url` or separate with commas;
    /// every (re)connect and every batch then goes to a random node.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ',',
        num_args = 1
    )]
    pub url: Vec<String>,
    /// The WebSocket endpoint the clients connect to.
    #[arg(long, default_value = "/ws/events")]
    pub endpoint: String,
    /// How long events are published (e.g. `60s`, `5m`, `500ms`); a drain follows.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Healthy WebSocket clients (each keeps an exact record of what it saw).
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Stalled clients: connect, subscribe, never read.
    #[arg(long, default_value_t = 20)]
    pub stalled: usize,
    /// Events published per second (through `POST /api/events`, in batches).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// How often a batch is posted.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub batch_interval: Duration,
    /// Largest batch (events per request) when catching up.
    #[arg(long, default_value_t = 500)]
    pub max_batch: usize,
    /// The event type to publish.
    #[arg(long = "type", default_value = "alert.created")]
    pub event_type: String,
    /// Payload JSON. In every string value, the placeholder n in curly
    /// braces is replaced by the event's number, so that each event carries
    /// its own id. Default: `id` "soak-" followed by that placeholder, and
    /// `severity` "low" (an `alert.created` payload).
    #[arg(long)]
    pub payload: Option<String>,
    /// Comma-separated patterns the clients subscribe to (default: the type).
    #[arg(long)]
    pub events: Option<String>,
    /// Mean time a healthy client stays connected before it drops the
    /// connection and reconnects with `since` (uniform in [0, 2×mean]); `0` = no storm.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub reconnect_every: Duration,
    /// How often a reload is triggered; `0` = never.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reload_every: Duration,
    /// How reloads are triggered.
    #[arg(long, value_enum, default_value = "file")]
    pub reload_via: ReloadVia,
    /// The router's config file (needed for `--reload-via file`); it is
    /// restored byte for byte at the end.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The router's process id: its VmRSS / VmHWM are sampled from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Admin key (`Authorization: Bearer`), for reloads over HTTP and the
    /// connections list; not needed from loopback when no admin key is configured.
    #[arg(long, env = "SWITCHYARD_SOAK_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Publish key (`Authorization: Bearer`), when the router has publish keys.
    #[arg(long, env = "SWITCHYARD_SOAK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed of the random schedule (disconnect times, reconnect delays, close styles).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest wait, after publishing stops, for healthy clients to catch up.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Receive buffer (SO_RCVBUF) of stalled clients' sockets, so their
    /// router-side queues fill quickly.
    #[arg(long, default_value_t = 4096)]
    pub stalled_rcvbuf: u32,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print a progress line on stderr this often; `0` = never.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub progress_every: Duration,
}

impl Options {
    /// The defaults of the command line, against `url`.
    pub fn new(url: impl Into<String>) -> Options {
        let mut options = <Options as clap::Parser>::parse_from(["switchyard-soak"]);
        options.url = vec![url.into()];
        options
    }

    /// Several nodes: the defaults of the command line, against `urls`.
    pub fn cluster<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Options {
        let mut options = <Options as clap::Parser>::parse_from(["switchyard-soak"]);
        options.url = urls.into_iter().map(Into::into).collect();
        options
    }

    fn patterns(&self) -> Vec<String> {
        match &self.events {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            None => vec![self.event_type.clone()],
        }
    }
}

/// Parses `250ms`, `1s`, `1.5s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 1s, 5m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Figures about the publisher.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    /// Events accepted (202) by the router.
    pub accepted: u64,
    /// `POST /api/events` requests that were answered 202.
    pub requests: u64,
    /// Requests retried (429, 503 or a transport error; same idempotency keys).
    pub retries: u64,
    /// Achieved rate, accepted events per second of publishing.
    pub rate_per_s: f64,
    /// The channel the published type is stamped on.
    pub channel: String,
    /// Last accepted sequence on that channel (in `last_epoch`).
    pub last_sequence: u64,
    /// The epoch of the last accepted event (`None` when the router's 202
    /// replies carry no epoch).
    pub last_epoch: Option<String>,
    /// Epochs the accepted events were stamped in, in order, with how many each.
    pub epochs: Vec<(Option<String>, u64)>,
    /// Requests that failed on one node (transport error or 503) and were
    /// sent again, same idempotency keys, to another.
    pub failovers: u64,
}

/// Figures about reloads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    /// How reloads were triggered.
    pub via: Option<ReloadVia>,
    /// Reloads the tool triggered (file rewrites or HTTP calls).
    pub triggered: u64,
    /// HTTP reloads that did not answer 200 / file rewrites that failed.
    pub failed: u64,
    /// HTTP reloads a node could not be reached for (a node down: expected
    /// while nodes are killed, not a failure).
    pub unreachable: u64,
    /// `switchyard_config_reloads_total{result="applied"}` during the run.
    pub applied: u64,
    /// `switchyard_config_reloads_total{result="refused"}` during the run.
    pub refused: u64,
}

/// Figures about the stalled clients.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StalledReport {
    /// Stalled clients asked for.
    pub clients: usize,
    /// Those whose upgrade succeeded.
    pub connected: usize,
    /// Those the router closed (a close frame found when finally read, or a
    /// failed write of their keep-alive ping).
    pub closed: usize,
    /// Close codes found in the frames the router left for them.
    pub close_codes: BTreeMap<u16, u64>,
    /// `connection.lagged` messages found in those frames.
    pub lagged_seen: u64,
    /// Events the router dropped for them (`dropped` in
    /// `/api/websocket/connections`, last sample of each).
    pub dropped: u64,
    /// How many of them had `dropped` > 0.
    pub with_drops: usize,
    /// Deepest `queue_depth` sampled.
    pub max_queue_depth: u64,
    /// Whether the connections list could be read (admin route).
    pub connections_api: bool,
}

/// Delivery latency seen by healthy clients (envelope `timestamp` → received).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyReport {
    /// Live events measured.
    pub samples: u64,
    /// Median, milliseconds.
    pub p50_ms: u64,
    /// 99th percentile, milliseconds.
    pub p99_ms: u64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: u64,
    /// Largest, milliseconds.
    pub max_ms: u64,
}

/// The router's memory, from /proc/PID/status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RssReport {
    /// The process sampled.
    pub pid: u32,
    /// VmRSS at the start, KiB.
    pub start_kib: u64,
    /// Highest VmRSS sampled (every 200 ms), KiB.
    pub peak_kib: u64,
    /// VmRSS at the end, KiB.
    pub end_kib: u64,
    /// VmHWM (the kernel's peak RSS of the process) at the end, KiB.
    pub hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
}

/// The outcome of a soak run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `true` when nothing was lost, duplicated or out of order, and no
    /// connection of the run was left behind in the router.
    pub ok: bool,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// Seconds spent draining after publishing stopped.
    pub drain_s: f64,
    /// Whether every healthy client caught up before `--drain-timeout`.
    pub drained: bool,
    /// The seed used.
    pub seed: u64,
    /// Healthy clients.
    pub clients: usize,
    /// Patterns the clients held.
    pub patterns: Vec<String>,
    /// Publisher figures.
    pub publish: PublishReport,
    /// Shorthand for `publish.accepted`.
    pub published: u64,
    /// Sum over healthy clients of the accepted events each had to receive
    /// (accepted after its first connection).
    pub expected: u64,
    /// Events received by healthy clients (live and replayed, duplicates included).
    pub delivered: u64,
    /// Of those, replayed by recovery (`since`).
    pub replayed: u64,
    /// Expected events a healthy client never received, outside unrecoverable gaps.
    pub lost: u64,
    /// Events a healthy client received more than once (across reconnects).
    pub duplicated: u64,
    /// Connections of this run (healthy and stalled) that the router still
    /// listed 5 s after every client had closed; `None` when
    /// `/api/websocket/connections` could not be read.
    pub leaked_connections: Option<u64>,
    /// Events received below the channel position already reached, outside recovery.
    pub out_of_order: u64,
    /// Recoveries answered `recovered:false, reason:"too_old"`.
    pub unrecoverable_gaps: u64,
    /// Expected events missing inside those gaps (not counted as lost).
    pub unrecoverable_events: u64,
    /// Recoveries answered `recovered:false`, by reason (but `epoch_changed`).
    pub recovery_failures: BTreeMap<String, u64>,
    /// Recoveries answered `recovered:true`.
    pub recoveries: u64,
    /// Reconnections of healthy clients (connections after the first).
    pub reconnects: u64,
    /// Failed connection attempts of healthy clients (a node down is
    /// expected in a cluster run: counted, not a failure).
    pub connect_errors: u64,
    /// Close codes the router sent healthy clients.
    pub server_closes: BTreeMap<u16, u64>,
    /// `connection.lagged` messages received by healthy clients.
    pub healthy_lagged: u64,
    /// Events those messages said were dropped.
    pub healthy_dropped: u64,
    /// Epoch changes of the published channel seen by healthy clients
    /// (`connection.channels` or `connection.established` with a new epoch).
    pub epoch_changes: u64,
    /// Expected events a healthy client never received because an epoch
    /// change announced them gone: the rest of the epoch it left, the part
    /// of the new epoch before it entered, and epochs it skipped entirely.
    /// Announced, not lost.
    pub epoch_gap_events: u64,
    /// Recoveries answered `recovered:false, reason:"epoch_changed"`
    /// (expected after a Redis restart; not in `recovery_failures`).
    pub epoch_changed_recoveries: u64,
    /// Nodes the run was given (`--url`).
    pub nodes: usize,
    /// `error` messages received by healthy clients, by code.
    pub client_errors: BTreeMap<String, u64>,
    /// Reload figures.
    pub reloads: ReloadReport,
    /// Stalled-client figures.
    pub stalled: StalledReport,
    /// `switchyard_dropped_total{reason="slow_consumer"}` during the run
    /// (all connections).
    pub router_dropped_slow_consumer: u64,
    /// Delivery latency of live events to healthy clients.
    pub latency: LatencyReport,
    /// The router's memory, when `--server-pid` was given.
    pub rss: Option<RssReport>,
    /// Problems met along the way (at most 20).
    pub notes: Vec<String>,
}

/// Phases every task watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Clients connect; nothing is published yet.
    Warmup,
    /// Publishing, storms and reloads.
    Run,
    /// Publishing stopped; clients catch up to `last` on the published channel.
    Drain {
        /// Last accepted sequence.
        last: u64,
    },
    /// Everything stops.
    Stop,
}

/// Counters shared by every task while the run goes on.
#[derive(Default)]
pub(crate) struct Live {
    pub delivered: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub connected_once: AtomicU64,
    pub lagged: AtomicU64,
    pub epoch_changes: AtomicU64,
    pub accepted: AtomicU64,
    pub reloads: AtomicU64,
    pub rss_kib: AtomicU64,
    pub latency: Latency,
    pub notes: Notes,
}

/// A millisecond histogram of delivery latency, filled from every client.
pub(crate) struct Latency {
    buckets: Vec<AtomicU64>,
}

const LATENCY_BUCKETS: usize = 60_001;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Latency {
    pub fn record(&self, ms: i64) {
        let i = ms.clamp(0, LATENCY_BUCKETS as i64 - 1) as usize;
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> LatencyReport {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let samples: u64 = counts.iter().sum();
        let quantile = |q: f64| -> u64 {
            let rank = ((samples as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return ms as u64;
                }
            }
            0
        };
        LatencyReport {
            samples,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: counts.iter().rposition(|c| *c > 0).unwrap_or(0) as u64,
        }
    }
}

/// A small bounded list of notes: at most 20 are kept, the rest counted.
#[derive(Default)]
pub(crate) struct Notes {
    inner: std::sync::Mutex<(Vec<String>, u64)>,
}

impl Notes {
    pub fn push(&self, note: impl Into<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0.len() < 20 {
            inner.0.push(note.into());
        } else {
            inner.1 += 1;
        }
    }

    fn take(&self) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut notes = std::mem::take(&mut inner.0);
        if inner.1 > 0 {
            notes.push(format!("… and {} more", inner.1));
        }
        notes
    }
}

/// What the tasks share.
pub(crate) struct Shared {
    pub options: Options,
    pub patterns: Vec<String>,
    /// The channel the published type is stamped on.
    pub channel: String,
    /// Every node's base URL (one for a single router).
    pub bases: Vec<reqwest::Url>,
    /// The epoch of the last accepted event, set before `Phase::Drain` with
    /// its sequence (`None`: the replies carry no epoch).
    pub last_epoch: std::sync::OnceLock<Option<String>>,
    pub http: reqwest::Client,
    pub phase: watch::Receiver<Phase>,
    pub live: Live,
}

impl Shared {
    /// A random node's index.
    pub(crate) fn random_node(&self, rng: &mut impl rand::Rng) -> usize {
        rng.random_range(0..self.bases.len())
    }

    /// A random node other than `not`, when there is another.
    pub(crate) fn other_node(&self, not: usize, rng: &mut impl rand::Rng) -> usize {
        let n = self.bases.len();
        if n < 2 {
            return 0;
        }
        (not + rng.random_range(1..n)) % n
    }
}

/// Runs a soak against the router at `options.url` and returns the report.
///
/// Errors are setup failures (router unreachable, type unknown, patterns that
/// do not match the type, config file unreadable); findings go in the report.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let mut bases = Vec::new();
    for url in options
        .url
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        let base = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
        if !matches!(base.scheme(), "http") {
            bail!("--url must be http://HOST:PORT (wss/https is not supported by this tool)");
        }
        bases.push(base);
    }
    if bases.is_empty() {
        bail!("--url is empty");
    }
    if options.rate == 0 {
        bail!("--rate must be above 0");
    }
    if options.reload_via == ReloadVia::File
        && !options.reload_every.is_zero()
        && options.config.is_none()
    {
        bail!(
            "--reload-via file needs --config PATH (or use --reload-via http, or --reload-every 0)"
        );
    }
    let patterns = options.patterns();
    for p in &patterns {
        if !client::pattern_matches(p, &options.event_type) {
            bail!(
                "pattern `{p}` does not match `{}`: every --events pattern must match the published type",
                options.event_type
            );
        }
    }
    publisher::payload_template(&options)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let channel = probe::channel_of(&http, &bases, &options.event_type, &options.endpoint).await?;

    let before = probe::Metrics::fetch_all(&http, &bases).await;
    let (phase_tx, phase) = watch::channel(Phase::Warmup);
    let shared = Arc::new(Shared {
        options: options.clone(),
        patterns: patterns.clone(),
        channel: channel.clone(),
        bases,
        last_epoch: std::sync::OnceLock::new(),
        http,
        phase,
        live: Live::default(),
    });

    let rss = options
        .server_pid
        .map(|pid| tokio::spawn(probe::sample_rss(shared.clone(), pid)));
    let stalled: Vec<_> = (0..options.stalled)
        .map(|i| tokio::spawn(stalled::run(shared.clone(), i)))
        .collect();
    let clients: Vec<_> = (0..options.clients)
        .map(|i| tokio::spawn(client::run(shared.clone(), i)))
        .collect();
    let watcher = tokio::spawn(probe::watch_connections(shared.clone()));

    // Warm-up: every healthy client connected once (or 15 s passed).
    let warm = Instant::now();
    while (shared.live.connected_once.load(Ordering::Relaxed) as usize) < options.clients
        && warm.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if (shared.live.connected_once.load(Ordering::Relaxed) as usize) < options.clients {
        shared.live.notes.push(format!(
            "only {} of {} clients connected within 15 s",
            shared.live.connected_once.load(Ordering::Relaxed),
            options.clients
        ));
    }

    phase_tx.send_replace(Phase::Run);
    let started = Instant::now();
    let publisher = tokio::spawn(publisher::run(shared.clone()));
    let reloader = tokio::spawn(probe::reload_loop(shared.clone()));
    let progress = tokio::spawn(progress(shared.clone(), started));

    tokio::time::sleep(options.duration).await;
    // Stop publishing; wait for the in-flight request.
    phase_tx.send_replace(Phase::Drain { last: 0 });
    let publish = publisher.await.context("publisher task")??;
    let duration_s = started.elapsed().as_secs_f64();
    let reloads = reloader.await.context("reload task")?;
    let _ = shared.last_epoch.set(publish.report.last_epoch.clone());
    phase_tx.send_replace(Phase::Drain {
        last: publish.report.last_sequence,
    });

    let drain_started = Instant::now();
    let mut drained = true;
    let mut records = Vec::with_capacity(clients.len());
    let deadline = tokio::time::Instant::now() + options.drain_timeout;
    let mut pending = clients;
    // Clients end by themselves once caught up; after the deadline, stop them.
    loop {
        if pending.iter().all(|h| h.is_finished()) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            drained = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phase_tx.send_replace(Phase::Stop);
    for h in pending.drain(..) {
        records.push(h.await.context("client task")?);
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    progress.abort();
    let mut stalled_report = StalledReport {
        clients: options.stalled,
        ..StalledReport::default()
    };
    let seen = watcher.await.context("connections watcher")?;
    let mut stalled_ids = Vec::new();
    for h in stalled {
        let s = h.await.context("stalled task")?;
        stalled::merge(&mut stalled_report, &s, &seen);
        stalled_ids.extend(s.connection_id);
    }
    stalled_report.connections_api = seen.ok;
    let rss = match rss {
        Some(h) => Some(h.await.context("rss sampler")?),
        None => None,
    };
    let ids: std::collections::HashSet<String> = records
        .iter()
        .flat_map(|r| r.ids.iter().cloned())
        .chain(stalled_ids)
        .collect();
    let leaked_connections = probe::leftover(&shared, &ids).await;
    let after = probe::Metrics::fetch_all(&shared.http, &shared.bases).await;

    let accepted = publisher::accepted(&publish);
    let mut report = Report {
        duration_s,
        drain_s,
        drained,
        seed: options.seed,
        clients: options.clients,
        nodes: shared.bases.len(),
        patterns,
        published: publish.report.accepted,
        publish: publish.report.clone(),
        reloads: ReloadReport {
            applied: after.reloads_applied.saturating_sub(before.reloads_applied),
            refused: after.reloads_refused.saturating_sub(before.reloads_refused),
            ..reloads
        },
        stalled: stalled_report,
        router_dropped_slow_consumer: after
            .dropped_slow_consumer
            .saturating_sub(before.dropped_slow_consumer),
        latency: shared.live.latency.report(),
        leaked_connections,
        rss,
        ..Report::default()
    };
    for record in &records {
        record.tally(&accepted, &mut report);
    }
    if publish.report.epochs.iter().any(|(e, _)| e.is_none()) {
        report.notes.push(
            "the router's 202 replies carry no epoch: accepted events are counted in each \
             client's first epoch (exact only while the epoch does not change)"
                .into(),
        );
    }
    report.reconnects = shared.live.reconnects.load(Ordering::Relaxed);
    report.notes = shared.live.notes.take();
    report.ok = report.lost == 0
        && report.duplicated == 0
        && report.out_of_order == 0
        && report.leaked_connections.unwrap_or(0) == 0;
    Ok(report)
}

async fn progress(shared: Arc<Shared>, started: Instant) {
    let every = shared.options.progress_every;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        let live = &shared.live;
        eprintln!(
            "[{:>5.1}s] accepted={} delivered={} reconnects={} connect_errors={} lagged={} epoch_changes={} reloads={} rss={} KiB",
            started.elapsed().as_secs_f64(),
            live.accepted.load(Ordering::Relaxed),
            live.delivered.load(Ordering::Relaxed),
            live.reconnects.load(Ordering::Relaxed),
            live.connect_errors.load(Ordering::Relaxed),
            live.lagged.load(Ordering::Relaxed),
            live.epoch_changes.load(Ordering::Relaxed),
            live.reloads.load(Ordering::Relaxed),
            live.rss_kib.load(Ordering::Relaxed),
        );
    }
}

impl Report {
    /// A human-readable summary, one figure per line.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let verdict = if self.ok { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "switchyard-soak: {verdict}");
        let _ = writeln!(
            out,
            "  duration            {:.1} s publishing + {:.1} s drain (drained: {}), seed {}",
            self.duration_s, self.drain_s, self.drained, self.seed
        );
        let _ = writeln!(
            out,
            "  published           {} events on `{}` in {} requests ({:.0}/s, {} retries, {} to another node)",
            self.published,
            self.publish.channel,
            self.publish.requests,
            self.publish.rate_per_s,
            self.publish.retries,
            self.publish.failovers
        );
        let _ = writeln!(
            out,
            "  epochs              {} changes seen by clients, {} events announced gone by them \
             (not lost), {} epoch_changed recoveries; accepted per epoch {:?}",
            self.epoch_changes,
            self.epoch_gap_events,
            self.epoch_changed_recoveries,
            self.publish
                .epochs
                .iter()
                .map(|(e, n)| format!("{}={n}", e.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
        );
        let _ = writeln!(
            out,
            "  healthy clients     {} holding {:?}, over {} node(s)",
            self.clients, self.patterns, self.nodes
        );
        let _ = writeln!(
            out,
            "  expected            {} (sum over clients)",
            self.expected
        );
        let _ = writeln!(
            out,
            "  delivered           {} ({} replayed by recovery)",
            self.delivered, self.replayed
        );
        let _ = writeln!(out, "  lost                {}", self.lost);
        let _ = writeln!(out, "  duplicated          {}", self.duplicated);
        let _ = writeln!(out, "  out_of_order        {}", self.out_of_order);
        match self.leaked_connections {
            Some(n) => {
                let _ = writeln!(
                    out,
                    "  leaked_connections  {n} (still listed by the router after every client closed)"
                );
            }
            None => {
                let _ = writeln!(out, "  leaked_connections  not checked (no admin access)");
            }
        }
        let _ = writeln!(
            out,
            "  unrecoverable_gaps  {} ({} events; reported, not lost)",
            self.unrecoverable_gaps, self.unrecoverable_events
        );
        let _ = writeln!(
            out,
            "  recoveries          {} recovered, failures {:?}",
            self.recoveries, self.recovery_failures
        );
        let _ = writeln!(
            out,
            "  reconnects          {} (connect errors {}, router closes {:?})",
            self.reconnects, self.connect_errors, self.server_closes
        );
        let _ = writeln!(
            out,
            "  healthy lagged      {} messages, {} events dropped then recovered or gapped",
            self.healthy_lagged, self.healthy_dropped
        );
        let _ = writeln!(
            out,
            "  reloads             {} triggered via {:?} ({} failed, {} node unreachable); router applied {}, refused {}",
            self.reloads.triggered,
            self.reloads.via,
            self.reloads.failed,
            self.reloads.unreachable,
            self.reloads.applied,
            self.reloads.refused
        );
        let s = &self.stalled;
        let _ = writeln!(
            out,
            "  stalled clients     {} ({} connected): {} with drops, {} events dropped, max queue {}, \
             {} closed {:?}, {} lagged seen",
            s.clients,
            s.connected,
            s.with_drops,
            s.dropped,
            s.max_queue_depth,
            s.closed,
            s.close_codes,
            s.lagged_seen
        );
        let _ = writeln!(
            out,
            "  router dropped      {} (switchyard_dropped_total{{reason=\"slow_consumer\"}})",
            self.router_dropped_slow_consumer
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency (live)      p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} samples)",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
        );
        match &self.rss {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  router RSS          start {} KiB, peak {} KiB (VmHWM {} KiB), end {} KiB",
                    r.start_kib, r.peak_kib, r.hwm_kib, r.end_kib
                );
            }
            None => {
                let _ = writeln!(out, "  router RSS          not sampled (no --server-pid)");
            }
        }
        if !self.client_errors.is_empty() {
            let _ = writeln!(out, "  client errors       {:?}", self.client_errors);
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}
