//! `switchyard-bench abuse …`: what misbehaving clients cost a server, as
//! memory and as latency for everyone else (BENCHMARKS.md, "Misbehaving
//! clients", has the figures).
//!
//! - `replies`: clients that never read but keep sending subscribes whose
//!   replies are large (16,000 malformed patterns each, under the client
//!   rate limit); the server's RSS is sampled while they run and again
//!   after they are gone (is the memory given back?).
//! - `stalled`: clients that stop reading while events stream to them; the
//!   kernel's TCP memory (`/proc/net/sockstat`, which RSS does not show) is
//!   read before and while they are stalled.
//! - `churn`: a publisher's round-trip latency alone, then beside clients
//!   that subscribe and unsubscribe many unregistered patterns in a loop.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

use crate::proc_stats;

/// Which abuse to measure.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Scenario {
    /// Clients that never read their (large) replies.
    Replies,
    /// Clients that stop reading while events stream to them.
    Stalled,
    /// Subscription churn beside a publisher.
    Churn,
}

/// Arguments of `abuse`.
#[derive(Args, Clone, Debug)]
pub struct AbuseArgs {
    /// What to measure.
    scenario: Scenario,
    /// Base URL of the router (HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    url: String,
    /// The router's process id, for its RSS.
    #[arg(long)]
    pid: u32,
    /// Misbehaving clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// How long the abuse lasts, in seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Event type published (`stalled`, `churn`).
    #[arg(long, default_value = "bench.tick")]
    event_type: String,
}

type Ws = WebSocketStream<TcpStream>;

/// Runs one scenario and prints its figures as JSON.
pub async fn run(args: AbuseArgs) -> Result<()> {
    let report = match args.scenario {
        Scenario::Replies => replies(&args).await?,
        Scenario::Stalled => stalled(&args).await?,
        Scenario::Churn => churn(&args).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A WebSocket client whose receive buffer is tiny, so that not reading
/// pushes back on the server at once.
async fn connect_stalled(url: &str, query: &str) -> Result<Ws> {
    let addr = url.trim_start_matches("http://");
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr.parse()?).await?;
    let (ws, _) = client_async(format!("ws://{addr}/ws/events{query}"), stream).await?;
    Ok(ws)
}

fn rss(pid: u32) -> u64 {
    proc_stats::rss_kib(pid).unwrap_or(0)
}

async fn replies(args: &AbuseArgs) -> Result<Value> {
    let before = rss(args.pid);
    // 16,000 empty patterns in one 48 KB message: each is malformed, and
    // each once cost an error reply of its own.
    let subscribe = json!({"action": "subscribe", "events": vec![""; 16_000]}).to_string();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let mut ws = connect_stalled(&args.url, "").await?;
        let subscribe = subscribe.clone();
        tasks.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let send = ws.send(Message::text(subscribe.clone()));
                match tokio::time::timeout(Duration::from_secs(1), send).await {
                    Ok(Ok(())) => sent += 1,
                    Ok(Err(_)) => return (sent, true),
                    Err(_) => {} // the server stopped reading: keep trying
                }
                // 40 messages a second: under the default client rate limit.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (sent, false)
        });
    }
    let mut peak = before;
    while !tasks.is_empty() {
        peak = peak.max(rss(args.pid));
        if let Ok(Some(done)) =
            tokio::time::timeout(Duration::from_millis(100), tasks.join_next()).await
        {
            done?;
        }
    }
    let during = peak;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let open = open_connections(&args.url).await?;
    Ok(json!({
        "scenario": "replies",
        "clients": args.clients,
        "seconds": args.seconds,
        "rss_kib_before": before,
        "rss_kib_peak": during,
        "rss_kib_6s_after": rss(args.pid),
        "connections_open_after": open,
    }))
}

async fn open_connections(url: &str) -> Result<usize> {
    let list: Value = reqwest::get(format!("{url}/api/websocket/connections"))
        .await?
        .json()
        .await?;
    Ok(list["connections"].as_array().map_or(0, Vec::len))
}

/// TCP memory of the whole machine, in KiB (`/proc/net/sockstat` counts pages).
fn tcp_mem_kib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat")?;
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .context("no TCP mem in /proc/net/sockstat")?;
    Ok(pages * 4)
}

async fn publish(http: &reqwest::Client, url: &str, events: &[Value]) -> Result<()> {
    let status = http
        .post(format!("{url}/api/events"))
        .json(events)
        .send()
        .await?
        .status();
    anyhow::ensure!(status.as_u16() == 202, "publish answered {status}");
    Ok(())
}

async fn stalled(args: &AbuseArgs) -> Result<Value> {
    let kernel_before = tcp_mem_kib()?;
    let rss_before = rss(args.pid);
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(connect_stalled(&args.url, "").await?);
    }
    let http = reqwest::Client::new();
    let pad = "x".repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut published = 0u64;
    while Instant::now() < deadline {
        let batch: Vec<Value> = (0..10)
            .map(|n| json!({"type": args.event_type, "payload": {"seq": n, "sent_ns": 0, "pad": pad}}))
            .collect();
        publish(&http, &args.url, &batch).await?;
        published += 10;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kernel_stalled = tcp_mem_kib()?;
    let report = json!({
        "scenario": "stalled",
        "clients": args.clients,
        "events_of_1kb_published": published,
        "kernel_tcp_kib_before": kernel_before,
        "kernel_tcp_kib_stalled": kernel_stalled,
        "kernel_tcp_kib_per_stalled_client": (kernel_stalled.saturating_sub(kernel_before)) / args.clients.max(1) as u64,
        "rss_kib_before": rss_before,
        "rss_kib_stalled": rss(args.pid),
        "connections_open": open_connections(&args.url).await?,
    });
    drop(clients);
    Ok(report)
}

/// Publish round trips for `seconds`, one at a time at about 100/s.
async fn publish_latency(args: &AbuseArgs) -> Result<Histogram<u64>> {
    let http = reqwest::Client::new();
    let mut hist = Histogram::<u64>::new(3)?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let event = [json!({"type": args.event_type, "payload": {"seq": 1, "sent_ns": 0}})];
    while Instant::now() < deadline {
        let start = Instant::now();
        publish(&http, &args.url, &event).await?;
        hist.record(start.elapsed().as_micros() as u64)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(hist)
}

fn quantiles(hist: &Histogram<u64>) -> Value {
    json!({
        "count": hist.len(),
        "p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// One client's churn: subscribe then unsubscribe 128 unregistered
/// patterns, 20 times a second each (40 messages/s, under the default
/// client rate limit of 50), reading the replies.
async fn churner(url: String, deadline: Instant) -> Result<u64> {
    let addr = url.trim_start_matches("http://");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/events")).await?;
    let patterns: Vec<String> = (0..128).map(|i| format!("nothing{i}.p{i}")).collect();
    let subscribe = json!({"action": "subscribe", "events": patterns}).to_string();
    let unsubscribe = json!({"action": "unsubscribe", "events": patterns}).to_string();
    let mut rounds = 0;
    while Instant::now() < deadline {
        let tick = Instant::now();
        for text in [&subscribe, &unsubscribe] {
            ws.send(Message::text(text.clone())).await?;
            while let Some(msg) = ws.next().await {
                if let Message::Text(t) = msg? {
                    if t.contains("subscribed") {
                        break;
                    }
                }
            }
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(tick.elapsed())).await;
    }
    Ok(rounds)
}

async fn churn(args: &AbuseArgs) -> Result<Value> {
    let quiet = publish_latency(args).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let churners: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(churner(args.url.clone(), deadline)))
        .collect();
    let busy = publish_latency(args).await?;
    let mut rounds = 0;
    for c in churners {
        rounds += c.await??;
    }
    Ok(json!({
        "scenario": "churn",
        "churning_clients": args.clients,
        "churn_rounds": rounds,
        "publish_without_churn": quantiles(&quiet),
        "publish_with_churn": quantiles(&busy),
        "p99_ratio": busy.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99).max(1) as f64,
    }))
}
