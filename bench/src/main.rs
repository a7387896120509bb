//! `switchyard-bench`: a load generator for Switchyard and for the servers it
//! is compared with (a FastAPI/uvicorn and a Node `ws` broadcast server, both
//! speaking the same envelope and the same `?events=` patterns).
//!
//! `switchyard-bench run …` opens N WebSocket subscribers, publishes M events
//! through `POST /api/events` (batched arrays, at a fixed rate or as fast as
//! the server takes them), and reports deliveries/s, latency, lost and
//! duplicated events, server CPU time per delivery and server RSS per idle
//! connection, as JSON and as a Markdown row.
//!
//! `switchyard-bench table a.json b.json …` prints the Markdown comparison of
//! several reports, with each figure's ratio to the first report.
//!
//! `switchyard-bench abuse replies|stalled|churn …` measures what
//! misbehaving clients cost the router (see `abuse`).
//!
//! `switchyard-bench floor …` measures the kernel's floor for a fan-out on
//! this machine: one thread writing a pre-built frame to N loopback sockets,
//! the least any server must do to broadcast one event to N subscribers.

mod abuse;
mod feed;
mod floor;
mod proc_stats;
mod report;
mod stamped;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use feed::{Feed, Transport};

#[derive(Parser)]
#[command(version, about = "Load generator for Switchyard and its peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run one benchmark against one server.
    Run(RunArgs),
    /// Print a Markdown comparison of JSON reports (ratios to the first one).
    Table {
        /// Reports written by `run --json`.
        files: Vec<PathBuf>,
    },
    /// Print the one table of `scripts/one-table` from the folder it wrote:
    /// every server's burst, steady and idle figures beside the floor.
    OneTable {
        /// The folder: `floor-*.json`, and `burst/`, `steady/`, `idle-1k/`,
        /// `idle-10k/` with `<server>.json` reports (missing ones print "–").
        dir: PathBuf,
        /// The servers, in row order (`scripts/compare`'s names), space-separated.
        #[arg(
            long,
            value_delimiter = ' ',
            default_value = "switchyard switchyard-sse cluster fastapi node uws"
        )]
        servers: Vec<String>,
        /// The server every steady CPU per delivery is divided by.
        #[arg(long, default_value = "uws")]
        reference: String,
    },
    /// Measure the kernel's floor for a fan-out: one thread writing a
    /// pre-built frame to each of N loopback sockets in turn.
    Floor(floor::FloorArgs),
    /// What misbehaving clients cost: memory (replies, stalled) and a
    /// publisher's latency (churn).
    Abuse(abuse::AbuseArgs),
    /// The receiving side of `floor`, started by it as a child process.
    #[command(hide = true)]
    FloorReader(floor::ReaderArgs),
}

/// What one benchmark run does.
#[derive(Args, Clone)]
struct RunArgs {
    /// Base URL of the server (HTTP; the WebSocket URL is derived from it).
    /// Several, comma-separated, for the nodes of a cluster: connections
    /// and publishers are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8090")]
    url: Vec<String>,
    /// WebSocket endpoint path.
    #[arg(long, default_value = "/ws/events")]
    path: String,
    /// How subscribers connect: WebSocket, or Server-Sent Events on the
    /// same endpoint.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "switchyard")]
    label: String,
    /// Subscriber connections (N).
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Events to publish (M).
    #[arg(short = 'm', long, default_value_t = 1000)]
    events: u64,
    /// Pattern sets, separated by `;`, given to connections round-robin; each
    /// set is a comma-separated `?events=` list. `ALL` = no `events`
    /// parameter (receive everything); an empty set subscribes to nothing.
    #[arg(long, default_value = "bench.*")]
    patterns: String,
    /// Event types published, round-robin, comma-separated.
    #[arg(long, default_value = "bench.tick")]
    types: String,
    /// Events per POST (a JSON array; 1 = a single object).
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent HTTP publishers (each keeps one request in flight).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Events per second (0 = as fast as the server accepts: closed loop).
    /// Bursts: `--rate 1000 --batch 1000` sends 1,000 events at once every second.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bytes of padding in each payload (the envelope is about 150 + pad bytes).
    #[arg(long, default_value_t = 8)]
    pad: usize,
    /// PID of the server, for CPU time (/proc/PID/stat) and RSS
    /// (/proc/PID/status); several, comma-separated, for a cluster's nodes
    /// (their CPU and RSS are added up).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Wait after every connection is subscribed before reading the idle RSS.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// After the last publish, give up waiting for deliveries after this long
    /// without progress.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout_s: f64,
    /// How long to wait for all connections to be subscribed.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout_s: f64,
    /// POST /api/admin/reload every this many ms while publishing (0 = never).
    #[arg(long, default_value_t = 0)]
    reload_every_ms: u64,
    /// Only measure idle connections: connect, read RSS, disconnect; publish nothing.
    #[arg(long)]
    idle_only: bool,
    /// Write the JSON report here (it is always printed to stdout too).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print the report as a Markdown table on stderr.
    #[arg(long)]
    markdown: bool,
    /// Bearer key for publish and admin routes, when the server wants one.
    #[arg(long, env = "BENCH_API_KEY")]
    api_key: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Table { files } => {
            let mut reports = Vec::new();
            for f in &files {
                let text =
                    std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
                reports.push(serde_json::from_str::<Value>(&text)?);
            }
            print!("{}", report::comparison_table(&reports));
            Ok(())
        }
        Command::OneTable {
            dir,
            servers,
            reference,
        } => {
            let read = |path: PathBuf| -> Result<Option<Value>> {
                if !path.exists() {
                    return Ok(None);
                }
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                let value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                Ok(Some(value))
            };
            let mut floor_files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("floor-") && n.ends_with(".json"))
                })
                .collect();
            floor_files.sort();
            let mut floors = Vec::new();
            for f in floor_files {
                floors.extend(read(f)?);
            }
            let mut runs = Vec::new();
            for server in servers.iter().filter(|s| !s.is_empty()) {
                let file = |kind: &str| read(dir.join(kind).join(format!("{server}.json")));
                runs.push(report::ServerRuns {
                    server: server.clone(),
                    burst: file("burst")?,
                    steady: file("steady")?,
                    idle_1k: file("idle-1k")?,
                    idle_10k: file("idle-10k")?,
                });
            }
            print!("{}", report::one_table(&floors, &runs, &reference));
            Ok(())
        }
        Command::Floor(args) => {
            let report = floor::floor(&args)?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = &args.json {
                std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
            }
            println!("{text}");
            if args.markdown {
                eprint!("{}", floor::markdown(&report));
            }
            Ok(())
        }
        Command::FloorReader(args) => floor::reader(&args),
        Command::Abuse(args) => tokio::runtime::Runtime::new()?.block_on(abuse::run(args)),
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(run(args.clone()))?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = &args.json {
                std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
            }
            println!("{text}");
            if args.markdown {
                eprint!(
                    "{}",
                    report::comparison_table(std::slice::from_ref(&report))
                );
            }
            Ok(())
        }
    }
}

/// `*`, `domain.*` or an exact name: the router's pattern semantics.
fn pattern_matches(pattern: &str, ty: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(domain) = pattern.strip_suffix(".*") {
        return ty.split_once('.').is_some_and(|(d, _)| d == domain);
    }
    pattern == ty
}

/// One connection's subscription: `None` = receive all.
fn parse_pattern_sets(spec: &str) -> Vec<Option<Vec<String>>> {
    spec.split(';')
        .map(|set| {
            let set = set.trim();
            if set == "ALL" {
                None
            } else {
                Some(
                    set.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
        })
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Counters shared by every connection task.
struct Shared {
    ready: AtomicUsize,
    connect_errors: AtomicUsize,
    distinct: AtomicU64,
    frame_bytes: AtomicU64,
    last_recv_ns: AtomicU64,
    /// Latency histograms (µs): send → receipt, accept timestamp → receipt,
    /// send → arrival at the subscriber's socket (see `stamped`).
    hist: Mutex<(Histogram<u64>, Histogram<u64>, Histogram<u64>)>,
}

/// What one connection saw.
#[derive(Default)]
struct ConnResult {
    connected: bool,
    distinct: u64,
    duplicated: u64,
    lagged_dropped: u64,
    errors: Vec<String>,
}

/// The fields of a server frame the generator reads.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    channel: Option<&'a str>,
    sequence: Option<u64>,
    #[serde(borrow)]
    timestamp: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    sent_ns: Option<u64>,
    #[serde(borrow)]
    pad: Option<&'a str>,
    dropped: Option<u64>,
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
fn timestamp_ms(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis())
}

struct ConnSpec {
    url: String,
    transport: Transport,
    run_tag: String,
    /// No `?events=`: Switchyard sends no `subscribed`, so
    /// `connection.established` means ready.
    ready_on_established: bool,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

async fn connection(spec: ConnSpec) -> ConnResult {
    let mut out = ConnResult::default();
    let opened = {
        let _permit = spec.permits.acquire().await;
        Feed::open(spec.url.as_str(), spec.transport).await
    };
    let mut feed = match opened {
        Ok(feed) => feed,
        Err(e) => {
            spec.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            out.errors.push(format!("connect: {e}"));
            return out;
        }
    };
    out.connected = true;
    let mut stop = spec.stop;
    let mut last_seq: Vec<(String, u64)> = Vec::new();
    // (send → receipt, accept → receipt, send → arrival if known) in µs.
    let mut lat: Vec<(u64, u64, Option<u64>)> = Vec::with_capacity(512);
    let mut subscribed = false;
    let flush = |lat: &mut Vec<(u64, u64, Option<u64>)>| {
        if lat.is_empty() {
            return;
        }
        let mut h = spec.shared.hist.lock().unwrap_or_else(|e| e.into_inner());
        for &(a, b, c) in lat.iter() {
            h.0.saturating_record(a);
            h.1.saturating_record(b);
            if let Some(c) = c {
                h.2.saturating_record(c);
            }
        }
        lat.clear();
    };
    loop {
        let msg = tokio::select! {
            m = feed.next_text() => m,
            _ = stop.changed() => break,
        };
        let text = match msg {
            Ok(Some(t)) => t,
            Ok(None) => {
                if !*stop.borrow() {
                    out.errors.push("closed by the server".into());
                }
                break;
            }
            Err(e) => {
                out.errors.push(format!("read: {e}"));
                break;
            }
        };
        let recv = now_ns();
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            out.errors.push("unparsable frame".into());
            continue;
        };
        match frame.ty {
            "subscribed" | "connection.established"
                if frame.ty == "subscribed" || spec.ready_on_established =>
            {
                if !subscribed {
                    subscribed = true;
                    spec.shared.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            "connection.lagged" => {
                out.lagged_dropped += frame.payload.and_then(|p| p.dropped).unwrap_or(0);
            }
            _ => {
                let (Some(channel), Some(seq), Some(payload)) =
                    (frame.channel, frame.sequence, frame.payload)
                else {
                    continue;
                };
                // Only this run's events count.
                if !payload.pad.is_some_and(|p| p.starts_with(&spec.run_tag)) {
                    continue;
                }
                let slot = match last_seq.iter_mut().position(|(c, _)| c == channel) {
                    Some(i) => &mut last_seq[i].1,
                    None => {
                        last_seq.push((channel.to_owned(), 0));
                        &mut last_seq.last_mut().expect("just pushed").1
                    }
                };
                if seq <= *slot {
                    out.duplicated += 1;
                    continue;
                }
                *slot = seq;
                out.distinct += 1;
                spec.shared.distinct.fetch_add(1, Ordering::Relaxed);
                spec.shared
                    .frame_bytes
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                spec.shared.last_recv_ns.fetch_max(recv, Ordering::Relaxed);
                let send_us = payload.sent_ns.map_or(0, |s| recv.saturating_sub(s) / 1000);
                let accept_us = frame.timestamp.and_then(timestamp_ms).map_or(0, |ms| {
                    (recv / 1000).saturating_sub((ms.max(0) as u64) * 1000)
                });
                let arrive_us = payload
                    .sent_ns
                    .zip(feed.arrived_ns())
                    .map(|(s, a)| (a.saturating_sub(s) / 1000).max(1));
                lat.push((send_us.max(1), accept_us.max(1), arrive_us));
                if lat.len() >= 512 {
                    flush(&mut lat);
                }
            }
        }
    }
    flush(&mut lat);
    feed.close().await;
    out
}

/// Publishing outcome.
#[derive(Default)]
struct PublishStats {
    requests: u64,
    accepted: u64,
    errors: u64,
    retries: u64,
    last_error: Option<String>,
    /// Event ranges of refused or failed requests: never published, so no
    /// subscriber expects them.
    failed: Vec<(u64, u64)>,
}

fn publish_body(types: &[String], from: u64, to: u64, sent_ns: u64, pad: &str) -> String {
    let mut body = String::with_capacity(((to - from) as usize) * (80 + pad.len()) + 2);
    let single = to - from == 1;
    if !single {
        body.push('[');
    }
    for i in from..to {
        if i > from {
            body.push(',');
        }
        let ty = &types[(i % types.len() as u64) as usize];
        body.push_str(&format!(
            r#"{{"type":"{ty}","payload":{{"seq":{i},"sent_ns":{sent_ns},"pad":"{pad}"}}}}"#
        ));
    }
    if !single {
        body.push(']');
    }
    body
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    k: usize,
    args: Arc<RunArgs>,
    types: Arc<Vec<String>>,
    pad: Arc<String>,
    client: reqwest::Client,
    start: tokio::time::Instant,
) -> PublishStats {
    let mut st = PublishStats::default();
    let batches = args.events.div_ceil(args.batch);
    let node = &args.url[k % args.url.len()];
    let url = format!("{}/api/events", node.trim_end_matches('/'));
    let mut j = k as u64;
    while j < batches {
        let from = j * args.batch;
        let to = (from + args.batch).min(args.events);
        if args.rate > 0.0 {
            let due = start + Duration::from_secs_f64(from as f64 / args.rate);
            tokio::time::sleep_until(due).await;
        }
        let mut attempt = 0;
        loop {
            let body = publish_body(&types, from, to, now_ns(), &pad);
            let mut req = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(key) = &args.api_key {
                req = req.bearer_auth(key);
            }
            st.requests += 1;
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    st.accepted += v["accepted"].as_u64().unwrap_or(0);
                    break;
                }
                Ok(resp) if (resp.status() == 503 || resp.status() == 429) && attempt < 1000 => {
                    attempt += 1;
                    st.retries += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(resp) => {
                    st.errors += 1;
                    st.failed.push((from, to));
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    st.last_error = Some(format!("{status}: {text}"));
                    break;
                }
                Err(e) => {
                    st.errors += 1;
                    st.failed.push((from, to));
                    st.last_error = Some(e.to_string());
                    break;
                }
            }
        }
        j += args.publishers as u64;
    }
    st
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "p50": null, "p99": null, "p999": null, "max": null, "mean": null});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

async fn run(args: RunArgs) -> Result<Value> {
    if args.batch == 0 || args.publishers == 0 {
        bail!("--batch and --publishers must be at least 1");
    }
    let args = Arc::new(args);
    let bases: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    let Some(base) = bases.first().cloned() else {
        bail!("--url is empty");
    };
    let ws_bases = bases
        .iter()
        .map(|base| {
            if let Some(rest) = base.strip_prefix("https://") {
                Ok(format!("wss://{rest}"))
            } else if let Some(rest) = base.strip_prefix("http://") {
                Ok(format!("ws://{rest}"))
            } else {
                bail!("--url must start with http:// or https://")
            }
        })
        .collect::<Result<Vec<String>>>()?;
    let sets = parse_pattern_sets(&args.patterns);
    let types: Vec<String> = args
        .types
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    if types.is_empty() {
        bail!("--types is empty");
    }
    let run_tag = format!("r{:08x}", (now_ns() >> 8) as u32);
    let pad = format!(
        "{run_tag}{}",
        "x".repeat(args.pad.saturating_sub(run_tag.len()))
    );

    // Deliveries each pattern set expects, given the failed publish ranges.
    let expected_by_set = |failed: &[(u64, u64)]| -> Vec<u64> {
        let mut per_type: HashMap<&str, u64> = HashMap::new();
        for i in 0..args.events {
            if failed.iter().any(|&(a, b)| (a..b).contains(&i)) {
                continue;
            }
            *per_type
                .entry(types[(i % types.len() as u64) as usize].as_str())
                .or_default() += 1;
        }
        sets.iter()
            .map(|set| {
                per_type
                    .iter()
                    .filter(|(ty, _)| match set {
                        None => true,
                        Some(ps) => ps.iter().any(|p| pattern_matches(p, ty)),
                    })
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect()
    };

    let pids = &args.server_pid;
    let rss_before = proc_stats::summed(pids, proc_stats::rss_kib);
    let kernel_before = proc_stats::socket_kernel_kib();

    // Connect and subscribe.
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        connect_errors: AtomicUsize::new(0),
        distinct: AtomicU64::new(0),
        frame_bytes: AtomicU64::new(0),
        last_recv_ns: AtomicU64::new(0),
        hist: Mutex::new((
            Histogram::new_with_bounds(1, 600_000_000, 3)?,
            Histogram::new_with_bounds(1, 600_000_000, 3)?,
            Histogram::new_with_bounds(1, 600_000_000, 3)?,
        )),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut conns = JoinSet::new();
    let connect_started = Instant::now();
    for c in 0..args.connections {
        let set = &sets[c % sets.len()];
        let ws_base = &ws_bases[c % ws_bases.len()];
        let url = match set {
            None => format!("{ws_base}{}", args.path),
            Some(ps) => format!("{ws_base}{}?events={}", args.path, ps.join(",")),
        };
        let spec = ConnSpec {
            url,
            transport: args.transport,
            run_tag: run_tag.clone(),
            ready_on_established: set.is_none(),
            permits: permits.clone(),
            shared: shared.clone(),
            stop: stop_rx.clone(),
        };
        conns.spawn(async move { (c, connection(spec).await) });
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout_s);
    loop {
        let ready = shared.ready.load(Ordering::Relaxed);
        let failed = shared.connect_errors.load(Ordering::Relaxed);
        if ready + failed >= args.connections {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "warning: only {ready} of {} connections subscribed in time",
                args.connections
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_idle = proc_stats::summed(pids, proc_stats::rss_kib);
    let kernel_idle = proc_stats::socket_kernel_kib();

    // Publish.
    let cpu0 = proc_stats::summed(pids, proc_stats::cpu_ticks);
    let system0 = proc_stats::summed(pids, proc_stats::system_ticks);
    let gen_cpu0 = proc_stats::self_cpu_ticks();
    let machine0 = proc_stats::machine_busy_ticks();
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let mut pub_stats = PublishStats::default();
    let mut reloads = (0u64, 0u64);
    let mut publish_s = 0.0;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.publishers * 2)
        .build()?;
    if !args.idle_only && args.events > 0 {
        let start = tokio::time::Instant::now();
        let types = Arc::new(types.clone());
        let pad = Arc::new(pad.clone());
        let mut pubs = JoinSet::new();
        for k in 0..args.publishers {
            pubs.spawn(publisher(
                k,
                args.clone(),
                types.clone(),
                pad.clone(),
                client.clone(),
                start,
            ));
        }
        let (reload_stop_tx, mut reload_stop_rx) = watch::channel(false);
        let reloader = (args.reload_every_ms > 0).then(|| {
            let client = client.clone();
            let url = format!("{base}/api/admin/reload");
            let every = Duration::from_millis(args.reload_every_ms);
            let key = args.api_key.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = reload_stop_rx.changed() => break,
                    }
                    let mut req = client.post(&url).header("content-type", "application/json");
                    if let Some(k) = &key {
                        req = req.bearer_auth(k);
                    }
                    match req.body("{}").send().await {
                        Ok(r) if r.status().is_success() => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        });
        while let Some(st) = pubs.join_next().await {
            let st = st?;
            pub_stats.requests += st.requests;
            pub_stats.accepted += st.accepted;
            pub_stats.errors += st.errors;
            pub_stats.retries += st.retries;
            if st.last_error.is_some() {
                pub_stats.last_error = st.last_error;
            }
            pub_stats.failed.extend(st.failed);
        }
        publish_s = t0.elapsed().as_secs_f64();

        // Drain: wait for every expected delivery, or for no progress.
        let per_set = expected_by_set(&pub_stats.failed);
        let expected: u64 = (0..args.connections).map(|c| per_set[c % sets.len()]).sum();
        let mut last = shared.distinct.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        while last < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = shared.distinct.load(Ordering::Relaxed);
            if now != last {
                last = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed().as_secs_f64() > args.drain_timeout_s {
                break;
            }
        }
        let _ = reload_stop_tx.send(true);
        if let Some(r) = reloader {
            reloads = r.await?;
        }
    }
    let cpu1 = proc_stats::summed(pids, proc_stats::cpu_ticks);
    let system1 = proc_stats::summed(pids, proc_stats::system_ticks);
    let gen_cpu1 = proc_stats::self_cpu_ticks();
    let machine1 = proc_stats::machine_busy_ticks();
    let last_recv = shared.last_recv_ns.load(Ordering::Relaxed);
    let rss_after = proc_stats::summed(pids, proc_stats::rss_kib);

    // Close and collect.
    let _ = stop_tx.send(true);
    let mut results: Vec<(usize, ConnResult)> = Vec::with_capacity(args.connections);
    while let Some(r) = conns.join_next().await {
        results.push(r?);
    }
    let mut deliveries = 0;
    let mut duplicated = 0;
    let mut lagged = 0;
    let per_set = expected_by_set(&pub_stats.failed);
    let mut expected = 0;
    let mut conn_errors: HashMap<String, u64> = HashMap::new();
    for (c, r) in &results {
        if r.connected {
            expected += per_set[*c % sets.len()];
        }
        deliveries += r.distinct;
        duplicated += r.duplicated;
        lagged += r.lagged_dropped;
        for e in &r.errors {
            *conn_errors.entry(e.clone()).or_default() += 1;
        }
    }
    if args.idle_only {
        expected = 0;
    }
    let lost = expected.saturating_sub(deliveries);
    let duration_s = if last_recv > t0_ns {
        (last_recv - t0_ns) as f64 / 1e9
    } else {
        0.0
    };
    let per_s = |n: u64, s: f64| if s > 0.0 { (n as f64 / s).round() } else { 0.0 };
    let seconds = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(a), Some(b)) => Some((b - a) as f64 / proc_stats::TICKS_PER_S),
        _ => None,
    };
    let per_delivery = |s: Option<f64>| {
        s.filter(|_| deliveries > 0)
            .map(|s| (s * 1e6 / deliveries as f64 * 1000.0).round() / 1000.0)
    };
    let server_cpu_s = seconds(cpu0, cpu1);
    let cpu_us_per_delivery = per_delivery(server_cpu_s);
    // The kernel's part, apart: what no change to a server's own code can
    // lower (BENCHMARKS.md, "One registration per poll").
    let system_us_per_delivery = per_delivery(seconds(system0, system1));
    let rss_per_idle = match (rss_before, rss_idle) {
        (Some(a), Some(b)) if ready > 0 => {
            Some(((b as f64 - a as f64) / ready as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    // Both ends of every connection live on this machine: half of what the
    // kernel's socket memory grew by is the server's.
    let kernel_per_idle = match (kernel_before, kernel_idle) {
        (Some(a), Some(b)) if ready > 0 => {
            Some(((b - a) / (2 * ready) as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let hist = shared.hist.lock().unwrap_or_else(|e| e.into_inner());
    let gen_cpu_s = seconds(gen_cpu0, gen_cpu1);
    // CPU used on the machine by anything but the server and the generator
    // during the measured window: other load skews every figure.
    let machine_cpu_s = seconds(machine0, machine1);
    let other_cpu_s = machine_cpu_s.map(|m| {
        let o = m - server_cpu_s.unwrap_or(0.0) - gen_cpu_s.unwrap_or(0.0);
        (o.max(0.0) * 100.0).round() / 100.0
    });
    let frame_bytes = shared
        .frame_bytes
        .load(Ordering::Relaxed)
        .checked_div(deliveries);
    let mut errors: Vec<(String, u64)> = conn_errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    errors.truncate(10);

    Ok(json!({
        "server": args.label,
        "url": args.url,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "endpoint": args.path,
        "connections": args.connections,
        "connected": ready,
        "connect_errors": shared.connect_errors.load(Ordering::Relaxed),
        "connect_s": (connect_s * 1000.0).round() / 1000.0,
        "patterns": args.patterns,
        "types": types,
        "events": if args.idle_only { 0 } else { args.events },
        "batch": args.batch,
        "publishers": args.publishers,
        "rate": args.rate,
        "frame_bytes": frame_bytes,
        "publish": {
            "requests": pub_stats.requests,
            "accepted": pub_stats.accepted,
            "errors": pub_stats.errors,
            "retries": pub_stats.retries,
            "last_error": pub_stats.last_error,
            "duration_s": (publish_s * 1000.0).round() / 1000.0,
            "events_per_s": per_s(pub_stats.accepted, publish_s),
        },
        "reloads": {"ok": reloads.0, "failed": reloads.1},
        "expected_deliveries": expected,
        "deliveries": deliveries,
        "lost": lost,
        "duplicated": duplicated,
        "lagged_dropped": lagged,
        "duration_s": (duration_s * 1000.0).round() / 1000.0,
        "deliveries_per_s": per_s(deliveries, duration_s),
        "latency_us": {
            "send_to_receipt": percentiles(&hist.0),
            "accept_to_receipt": percentiles(&hist.1),
            "send_to_arrival": percentiles(&hist.2),
        },
        "server_pid": pids,
        "server_cpu_s": server_cpu_s,
        "server_cpu_us_per_delivery": cpu_us_per_delivery,
        "server_system_us_per_delivery": system_us_per_delivery,
        "server_rss_kib": {"before": rss_before, "idle": rss_idle, "after_load": rss_after},
        "rss_per_idle_connection_kib": rss_per_idle,
        "kernel_kib_per_idle_connection": kernel_per_idle,
        "generator_cpu_s": gen_cpu_s,
        "machine_cpu_s": machine_cpu_s,
        "other_cpu_s": other_cpu_s,
        "connection_errors": errors.into_iter().map(|(e, n)| json!({"error": e, "count": n})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_router() {
        assert!(pattern_matches("*", "bench.tick"));
        assert!(pattern_matches("bench.*", "bench.tick"));
        assert!(!pattern_matches("bench.*", "benchx.tick"));
        assert!(!pattern_matches("other.*", "bench.tick"));
        assert!(pattern_matches("bench.tick", "bench.tick"));
        assert!(!pattern_matches("bench.tock", "bench.tick"));
    }

    #[test]
    fn pattern_sets_round_robin() {
        let sets = parse_pattern_sets("bench.*;ALL;;bench.tick,other.*");
        assert_eq!(sets.len(), 4);
        assert_eq!(sets[0], Some(vec!["bench.*".to_string()]));
        assert_eq!(sets[1], None);
        assert_eq!(sets[2], Some(vec![]));
        assert_eq!(sets[3].as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn bodies_are_json() {
        let types = vec!["bench.tick".to_string(), "bench.tock".to_string()];
        let v: Value = serde_json::from_str(&publish_body(&types, 0, 3, 5, "rx")).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[1]["type"], "bench.tock");
        assert_eq!(v[2]["payload"]["seq"], 2);
        let one: Value = serde_json::from_str(&publish_body(&types, 4, 5, 5, "rx")).unwrap();
        assert_eq!(one["payload"]["sent_ns"], 5);
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(timestamp_ms("1970-01-01T00:00:01.234Z"), Some(1234));
    }
}
