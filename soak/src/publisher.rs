//! The publisher: `POST /api/events` in batches at `--rate`, recording every
//! accepted (channel, sequence) from the 202 replies.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{Options, Phase, PublishReport, Shared};

const DEFAULT_PAYLOAD: &str = r#"{"id":"soak-{n}","severity":"low"}"#;

/// What the publisher did.
pub(crate) struct Published {
    pub report: PublishReport,
    /// Accepted (epoch, sequence), in the order of the replies.
    sequences: Vec<(Option<String>, u64)>,
}

/// The accepted sequences of the published channel: per epoch, in the order
/// the epochs were first met, each list sorted. `None`: replies without epoch.
pub(crate) type Accepted = Vec<(Option<String>, Vec<u64>)>;

/// The accepted sequences of the published channel, grouped by epoch.
pub(crate) fn accepted(published: &Published) -> Accepted {
    let mut out: Accepted = Vec::new();
    for (epoch, seq) in &published.sequences {
        match out.iter_mut().find(|(e, _)| e == epoch) {
            Some((_, seqs)) => seqs.push(*seq),
            None => out.push((epoch.clone(), vec![*seq])),
        }
    }
    for (_, seqs) in &mut out {
        seqs.sort_unstable();
    }
    out
}

/// The payload template: `--payload` or the default, checked to be JSON.
pub(crate) fn payload_template(options: &Options) -> anyhow::Result<Value> {
    let text = options.payload.as_deref().unwrap_or(DEFAULT_PAYLOAD);
    serde_json::from_str(text).context("--payload is not JSON")
}

fn fill(template: &Value, n: u64) -> Value {
    match template {
        Value::String(s) if s.contains("{n}") => Value::String(s.replace("{n}", &n.to_string())),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, n)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, n))).collect())
        }
        other => other.clone(),
    }
}

/// Publishes until the phase leaves `Run`; the in-flight batch is finished.
pub(crate) async fn run(shared: Arc<Shared>) -> anyhow::Result<Published> {
    let options = &shared.options;
    let template = payload_template(options)?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        ^ u128::from(std::process::id());
    let mut report = PublishReport {
        channel: shared.channel.clone(),
        ..PublishReport::default()
    };
    let mut sequences = Vec::new();
    let mut n = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(options.batch_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if *shared.phase.borrow() != Phase::Run {
            break;
        }
        let due = (started.elapsed().as_secs_f64() * f64::from(options.rate)) as u64;
        let count = due.saturating_sub(n).min(options.max_batch.max(1) as u64);
        if count == 0 {
            continue;
        }
        let batch: Vec<Value> = (n..n + count)
            .map(|i| {
                json!({
                    "type": options.event_type,
                    "payload": fill(&template, i),
                    "idempotency_key": format!("soak-{nonce:x}-{i}"),
                })
            })
            .collect();
        let body = serde_json::to_vec(&batch)?;
        let reply = post(&shared, body, &mut report).await?;
        let seqs = reply["sequences"]
            .as_array()
            .context("202 without `sequences`")?;
        if seqs.len() as u64 != count {
            shared.live.notes.push(format!(
                "a batch of {count} was answered with {} sequences",
                seqs.len()
            ));
        }
        for s in seqs {
            let channel = s["channel"].as_str().unwrap_or_default();
            let seq = s["sequence"].as_u64().unwrap_or(0);
            let epoch = s["epoch"].as_str().map(str::to_owned);
            if channel != shared.channel {
                shared.live.notes.push(format!(
                    "an event was stamped on `{channel}`, not `{}`",
                    shared.channel
                ));
                continue;
            }
            // Batches are sequential: the last stamp of the last reply is
            // the newest position (a new epoch restarts at 1).
            report.last_sequence = seq;
            report.last_epoch = epoch.clone();
            match report.epochs.last_mut() {
                Some((e, n)) if *e == epoch => *n += 1,
                _ => report.epochs.push((epoch.clone(), 1)),
            }
            sequences.push((epoch, seq));
        }
        report.accepted += seqs.len() as u64;
        report.requests += 1;
        shared
            .live
            .accepted
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        n += count;
    }
    report.rate_per_s = report.accepted as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let mut sorted = sequences.clone();
    sorted.sort();
    let before = sorted.len();
    sorted.dedup();
    if sorted.len() != before {
        shared.live.notes.push(format!(
            "the router returned {} sequences twice for different events",
            before - sorted.len()
        ));
    }
    Ok(Published { report, sequences })
}

/// Posts one batch to a random node, retrying (same idempotency keys) on
/// 429, 503 and transport errors — after a 503 or a transport error on
/// another node, when there is one; any other answer ends the run.
async fn post(shared: &Shared, body: Vec<u8>, report: &mut PublishReport) -> anyhow::Result<Value> {
    let mut node = shared.random_node(&mut rand::rng());
    for _ in 0..300 {
        let url = shared.bases[node].join("/api/events")?;
        let mut request = shared
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(key) = &shared.options.api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                return resp.json().await.context("reading a 202 reply");
            }
            Ok(resp)
                if resp.status() == StatusCode::TOO_MANY_REQUESTS
                    || resp.status() == StatusCode::SERVICE_UNAVAILABLE =>
            {
                report.retries += 1;
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_millis(100), |s| {
                        Duration::from_secs(s).min(Duration::from_secs(2))
                    });
                if resp.status() == StatusCode::SERVICE_UNAVAILABLE && shared.bases.len() > 1 {
                    // Another node may be fine (this one lost Redis, or is
                    // starting): try it after a short pause.
                    node = shared.other_node(node, &mut rand::rng());
                    report.failovers += 1;
                    tokio::time::sleep(wait.min(Duration::from_millis(250))).await;
                } else {
                    tokio::time::sleep(wait).await;
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                bail!("POST /api/events answered {status}: {text}");
            }
            Err(e) => {
                report.retries += 1;
                if report.retries <= 3 {
                    shared
                        .live
                        .notes
                        .push(format!("publish retried after: {e}"));
                }
                if shared.bases.len() > 1 {
                    node = shared.other_node(node, &mut rand::rng());
                    report.failovers += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    bail!("POST /api/events kept failing (300 attempts)")
}
