//! A healthy client: subscribes, keeps an exact record of the sequences it
//! received on the published channel, drops its connection at random times
//! and reconnects with `since`, and recovers in-connection after
//! `connection.lagged`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::publisher::Accepted;
use crate::{Phase, Report, Shared};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Whether a subscription pattern (`*`, `domain.*`, exact) matches `name`.
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == name {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(domain) => name.split('.').next() == Some(domain),
        None => false,
    }
}

/// What one healthy client saw of one epoch of the channel.
pub(crate) struct EpochRecord {
    epoch: String,
    /// The position the client entered this epoch at: events at or below it
    /// were before its first connection (first epoch: not expected) or
    /// announced gone by the epoch change (a later epoch).
    entered: u64,
    /// This is the epoch of the client's first connection.
    first: bool,
    /// Receipts per sequence (index = sequence).
    counts: Vec<u8>,
    /// Unrecoverable ranges `(lo, hi]` (`too_old`).
    gaps: Vec<(u64, u64)>,
    /// The client left this epoch (an epoch change) at this position:
    /// whatever it had not received above it is announced gone.
    left_at: Option<u64>,
}

impl EpochRecord {
    fn count(&self, seq: u64) -> u8 {
        self.counts.get(seq as usize).copied().unwrap_or(0)
    }

    fn bump(&mut self, seq: u64) {
        let i = seq as usize;
        if i >= self.counts.len() {
            self.counts.resize((i + 1).max(self.counts.len() * 2), 0);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
    }
}

/// What one healthy client saw, over all its connections.
pub(crate) struct Record {
    index: usize,
    channel: String,
    /// The current epoch (the last of `epochs`).
    epoch: Option<String>,
    /// Every epoch this client was in, in order.
    epochs: Vec<EpochRecord>,
    /// Every event of the current epoch up to `pos` that matched was
    /// received (or lies in a recorded gap); the next `since`.
    pos: u64,
    /// Highest sequence received in the current epoch.
    max_seen: u64,
    delivered: u64,
    replayed: u64,
    out_of_order: u64,
    recoveries: u64,
    unrecoverable_gaps: u64,
    recovery_failures: BTreeMap<String, u64>,
    epoch_changed_recoveries: u64,
    lagged: u64,
    dropped: u64,
    connect_errors: u64,
    server_closes: BTreeMap<u16, u64>,
    epoch_changes: u64,
    errors: BTreeMap<String, u64>,
    /// The last few connection events, for the report of a failing client.
    log: Vec<String>,
    /// Every connection id the router gave this client.
    pub(crate) ids: Vec<String>,
}

impl Record {
    fn new(index: usize, channel: String) -> Record {
        Record {
            index,
            channel,
            epoch: None,
            epochs: Vec::new(),
            pos: 0,
            max_seen: 0,
            delivered: 0,
            replayed: 0,
            out_of_order: 0,
            recoveries: 0,
            unrecoverable_gaps: 0,
            recovery_failures: BTreeMap::new(),
            epoch_changed_recoveries: 0,
            lagged: 0,
            dropped: 0,
            connect_errors: 0,
            server_closes: BTreeMap::new(),
            epoch_changes: 0,
            errors: BTreeMap::new(),
            log: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn note(&mut self, text: String) {
        if self.log.len() >= 24 {
            self.log.remove(0);
        }
        self.log.push(text);
    }

    fn epoch_mut(&mut self, epoch: &str) -> Option<&mut EpochRecord> {
        self.epochs.iter_mut().rev().find(|e| e.epoch == epoch)
    }

    fn current(&mut self) -> Option<&mut EpochRecord> {
        self.epochs.last_mut()
    }

    fn count(&self, seq: u64) -> u8 {
        self.epochs.last().map_or(0, |e| e.count(seq))
    }

    fn bump(&mut self, seq: u64) {
        if let Some(e) = self.current() {
            e.bump(seq);
        }
    }

    /// The channel is at `seq` in `epoch` (from `connection.established` or
    /// `connection.channels`): the first position, or an epoch change.
    fn position(&mut self, epoch: String, seq: u64, conn: &mut Conn) -> bool {
        match self.epoch.clone() {
            None => {
                self.epochs.push(EpochRecord {
                    epoch: epoch.clone(),
                    entered: seq,
                    first: true,
                    counts: Vec::new(),
                    gaps: Vec::new(),
                    left_at: None,
                });
                self.epoch = Some(epoch);
                self.pos = seq;
                self.max_seen = seq;
                false
            }
            Some(old) if old != epoch => {
                self.epoch_changes += 1;
                self.note(format!("epoch changed {old}@{} -> {epoch}@{seq}", self.pos));
                // Whatever of the old epoch was not received is gone.
                let pos = self.pos;
                if let Some(e) = self.current() {
                    e.left_at = Some(e.left_at.map_or(pos, |l| l.min(pos)));
                }
                let max_seen = match self.epoch_mut(&epoch) {
                    // Back to an epoch already met (a node that had not yet
                    // seen the change): carry on from what was received.
                    Some(e) => {
                        let max = e.counts.iter().rposition(|c| *c > 0).unwrap_or(0) as u64;
                        e.left_at = None;
                        max
                    }
                    None => {
                        self.epochs.push(EpochRecord {
                            epoch: epoch.clone(),
                            entered: seq,
                            first: false,
                            counts: Vec::new(),
                            gaps: Vec::new(),
                            left_at: None,
                        });
                        seq
                    }
                };
                // Keep the matching record last: it is the current one.
                if let Some(i) = self.epochs.iter().rposition(|e| e.epoch == epoch) {
                    let e = self.epochs.remove(i);
                    self.epochs.push(e);
                }
                self.epoch = Some(epoch);
                self.pos = seq.max(max_seen);
                self.max_seen = self.pos;
                conn.window = None;
                conn.window_seen.clear();
                true
            }
            Some(_) => false,
        }
    }

    /// Adds this client's figures to the report.
    pub(crate) fn tally(&self, accepted: &Accepted, report: &mut Report) {
        let Some(first) = self.epochs.first() else {
            report
                .notes
                .push(format!("client {} never connected", self.index));
            return;
        };
        // Epochs met before the client's first one are not expected of it.
        let name = |e: &Option<String>| e.clone().unwrap_or_else(|| first.epoch.clone());
        let first_index = accepted
            .iter()
            .position(|(e, _)| self.epochs.iter().any(|r| r.epoch == name(e)))
            .unwrap_or(0);
        let mut lost = Vec::new();
        let mut expected = 0;
        let mut unrecoverable = 0;
        let mut epoch_gap = 0;
        for (epoch, seqs) in accepted.iter().skip(first_index) {
            let epoch = name(epoch);
            let Some(r) = self.epochs.iter().find(|r| r.epoch == epoch) else {
                // An epoch this client never entered: announced gone by an
                // epoch change it saw; without one, lost.
                expected += seqs.len() as u64;
                if self.epoch_changes > 0 {
                    epoch_gap += seqs.len() as u64;
                } else {
                    lost.extend(seqs.iter().map(|s| format!("{epoch}:{s}")));
                }
                continue;
            };
            for &s in seqs {
                if r.first && s <= r.entered {
                    continue;
                }
                expected += 1;
                if r.count(s) > 0 {
                    continue;
                }
                if s <= r.entered || r.left_at.is_some_and(|l| s > l) {
                    epoch_gap += 1;
                } else if r.gaps.iter().any(|&(lo, hi)| s > lo && s <= hi) {
                    unrecoverable += 1;
                } else {
                    lost.push(format!("{epoch}:{s}"));
                }
            }
        }
        let dups: Vec<(String, u64, u8)> = self
            .epochs
            .iter()
            .flat_map(|r| {
                r.counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 1)
                    .map(|(s, c)| (r.epoch.clone(), s as u64, *c))
            })
            .collect();
        let duplicated: u64 = dups.iter().map(|(_, _, c)| u64::from(*c) - 1).sum();
        report.expected += expected;
        report.lost += lost.len() as u64;
        report.duplicated += duplicated;
        report.unrecoverable_events += unrecoverable;
        report.epoch_gap_events += epoch_gap;
        report.delivered += self.delivered;
        report.replayed += self.replayed;
        report.out_of_order += self.out_of_order;
        report.recoveries += self.recoveries;
        report.unrecoverable_gaps += self.unrecoverable_gaps;
        report.epoch_changed_recoveries += self.epoch_changed_recoveries;
        report.healthy_lagged += self.lagged;
        report.healthy_dropped += self.dropped;
        report.connect_errors += self.connect_errors;
        report.epoch_changes += self.epoch_changes;
        for (k, v) in &self.recovery_failures {
            *report.recovery_failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &self.server_closes {
            *report.server_closes.entry(*k).or_default() += v;
        }
        for (k, v) in &self.errors {
            *report.client_errors.entry(k.clone()).or_default() += v;
        }
        if !lost.is_empty() || !dups.is_empty() || self.out_of_order > 0 {
            let n_lost = lost.len();
            let head = |v: Vec<String>| v.into_iter().take(12).collect::<Vec<_>>().join(",");
            report.notes.push(format!(
                "client {}: start {}:{} lost [{}]{} duplicated [{}] out_of_order {}; \
                 last connections: {}",
                self.index,
                first.epoch,
                first.entered,
                head(lost),
                if n_lost > 12 { "…" } else { "" },
                head(
                    dups.iter()
                        .map(|(e, s, c)| format!("{e}:{s}×{c}"))
                        .collect()
                ),
                self.out_of_order,
                self.log.join(" | ")
            ));
        }
    }
}

/// A message's head, read without building a tree (events are most messages).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(default)]
    sequence: Option<u64>,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
}

/// State of one connection.
#[derive(Default)]
struct Conn {
    /// `since` this connection was opened with, if any.
    url_since: Option<u64>,
    /// Position of the channel in `connection.established`.
    established: Option<u64>,
    /// The `subscribed` answering the URL's `events` has arrived.
    subscribed: bool,
    /// In-connection recoveries sent and not yet answered, by id → (epoch, since).
    pending: HashMap<String, (String, u64)>,
    /// Sequences in `(lo, hi]` already received on an earlier connection
    /// are legitimately sent again once (this connection asked from `lo`).
    window: Option<(u64, u64)>,
    window_seen: HashSet<u64>,
    recover_ids: u64,
}

enum End {
    /// The connection dropped (either side); reconnect.
    Dropped,
    /// Caught up during the drain, or told to stop.
    Done,
}

/// Runs one healthy client until the drain is complete or the run stops.
pub(crate) async fn run(shared: Arc<Shared>, index: usize) -> Record {
    let seed = shared
        .options
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rec = Record::new(index, shared.channel.clone());
    let mut first = true;
    let mut failures = 0u32;
    loop {
        let phase = *shared.phase.borrow();
        if phase == Phase::Stop {
            break;
        }
        // Every (re)connect goes to a random node.
        let node = shared.random_node(&mut rng);
        let url = ws_url(&shared, &rec, node);
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await;
        let ws = match connected {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                rec.connect_errors += 1;
                failures += 1;
                // A node down makes many: note the first few of the run only.
                if shared.live.connect_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                    shared.live.notes.push(format!(
                        "client {index}: connect to node {node} failed: {e}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50 * u64::from(failures.min(20)))).await;
                continue;
            }
            Err(_) => {
                rec.connect_errors += 1;
                shared.live.connect_errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                continue;
            }
        };
        failures = 0;
        if first {
            shared.live.connected_once.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.live.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match session(&shared, &mut rec, ws, &mut rng).await {
            End::Done => break,
            End::Dropped => {
                let delay = rng.random_range(0..100);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
    rec
}

fn ws_url(shared: &Shared, rec: &Record, node: usize) -> String {
    let base = &shared.bases[node];
    let host = base.host_str().unwrap_or("127.0.0.1");
    let port = base.port_or_known_default().unwrap_or(80);
    let mut url = format!(
        "ws://{host}:{port}{}?events={}",
        shared.options.endpoint,
        shared.patterns.join(",")
    );
    if let Some(epoch) = &rec.epoch {
        url.push_str(&format!("&since={}:{epoch}:{}", rec.channel, rec.pos));
    }
    url
}

async fn session(shared: &Shared, rec: &mut Record, mut ws: Ws, rng: &mut StdRng) -> End {
    let mut conn = Conn::default();
    if rec.epoch.is_some() {
        conn.url_since = Some(rec.pos);
        if rec.max_seen > rec.pos {
            conn.window = Some((rec.pos, rec.max_seen));
        }
    }
    let mean = shared.options.reconnect_every;
    let mut storm = (!mean.is_zero()).then(|| {
        let ms = rng.random_range(0..=2 * mean.as_millis() as u64).max(20);
        tokio::time::Instant::now() + Duration::from_millis(ms)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Err(e) = handle(shared, rec, &mut conn, &mut ws, text.as_str()).await {
                        rec.note(format!("send failed: {e}"));
                        return End::Dropped;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    *rec.server_closes.entry(code).or_default() += 1;
                    rec.note(format!("router closed {code}"));
                    return End::Dropped;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    rec.note(format!("read error: {e}"));
                    return End::Dropped;
                }
                None => {
                    rec.note("eof".into());
                    return End::Dropped;
                }
            },
            _ = sleep_until(storm) => {
                let phase = *shared.phase.borrow();
                if phase != Phase::Run {
                    storm = None;
                } else if !conn.subscribed || !conn.pending.is_empty() {
                    // Never leave in the middle of a recovery: try again shortly.
                    storm = Some(tokio::time::Instant::now() + Duration::from_millis(50));
                } else {
                    let clean = rng.random_bool(0.5);
                    rec.note(format!("drop at {} ({})", rec.pos, if clean { "close" } else { "abrupt" }));
                    if clean {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    }
                    drop(ws);
                    return End::Dropped;
                }
            }
            _ = tick.tick() => {
                let phase = *shared.phase.borrow();
                match phase {
                    Phase::Stop => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        return End::Done;
                    }
                    Phase::Drain { last } if last > 0 => {
                        storm = None;
                        let epoch_ok = match shared.last_epoch.get() {
                            Some(Some(last_epoch)) => rec.epoch.as_ref() == Some(last_epoch),
                            _ => true,
                        };
                        if conn.subscribed && conn.pending.is_empty() && epoch_ok && rec.pos >= last {
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                            return End::Done;
                        }
                    }
                    Phase::Drain { .. } => storm = None,
                    _ => {}
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn handle(
    shared: &Shared,
    rec: &mut Record,
    conn: &mut Conn,
    ws: &mut Ws,
    text: &str,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    if let Ok(head) = serde_json::from_str::<Head>(text) {
        if let (Some(channel), Some(seq)) = (head.channel, head.sequence) {
            if !head.kind.starts_with("connection.") {
                if channel == rec.channel {
                    event(shared, rec, conn, seq, head.timestamp);
                }
                return Ok(());
            }
        }
    }
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        *rec.errors.entry("unparsable_message".into()).or_default() += 1;
        return Ok(());
    };
    let kind = msg["type"].as_str().unwrap_or_default();
    let ch = rec.channel.clone();
    match kind {
        "connection.established" | "connection.channels" => {
            let Some(pos) = msg["payload"]["channels"].get(&ch) else {
                if kind == "connection.established" {
                    *rec.errors
                        .entry("channel_not_announced".into())
                        .or_default() += 1;
                }
                return Ok(());
            };
            let epoch = pos["epoch"].as_str().unwrap_or_default().to_owned();
            let seq = pos["sequence"].as_u64().unwrap_or(0);
            if kind == "connection.established" {
                conn.established = Some(seq);
                if let Some(id) = msg["payload"]["connection_id"].as_str() {
                    rec.ids.push(id.to_owned());
                }
            }
            if rec.position(epoch, seq, conn) {
                // An epoch change: announced, not a failure. The URL `since`
                // of this connection (old epoch) is answered `epoch_changed`.
                shared.live.epoch_changes.fetch_add(1, Ordering::Relaxed);
                if kind == "connection.established" {
                    conn.url_since = None;
                }
            }
            if kind == "connection.established" {
                rec.note(format!("connect since {:?} at {seq}", conn.url_since));
            }
        }
        "connection.lagged" => {
            rec.lagged += 1;
            shared.live.lagged.fetch_add(1, Ordering::Relaxed);
            rec.dropped += msg["payload"]["dropped"].as_u64().unwrap_or(0);
            let Some(pos) = msg["payload"]["channels"].get(&ch) else {
                return Ok(());
            };
            let since = pos["sequence"].as_u64().unwrap_or(0);
            let epoch = pos["epoch"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| rec.epoch.clone())
                .unwrap_or_default();
            if conn.pending.is_empty() && since != rec.pos {
                rec.note(format!("lagged at {since} while at {}", rec.pos));
            }
            if conn.pending.is_empty() {
                rec.pos = rec.pos.min(since);
            }
            conn.recover_ids += 1;
            let id = format!("recover-{}", conn.recover_ids);
            conn.pending.insert(id.clone(), (epoch.clone(), since));
            rec.note(format!("lagged: recover from {since}"));
            let request = json!({
                "action": "subscribe",
                "events": shared.patterns,
                "since": { ch: { "epoch": epoch, "sequence": since } },
                "id": id,
            });
            ws.send(Message::text(request.to_string())).await?;
        }
        "subscribed" => {
            let id = msg["id"].as_str().map(str::to_owned);
            let current = rec.epoch.clone().unwrap_or_default();
            let range = match id.as_deref().and_then(|id| conn.pending.remove(id)) {
                Some((epoch, since)) => {
                    let hi = if epoch == current {
                        rec.max_seen
                    } else {
                        u64::MAX
                    };
                    Some((epoch, since, hi))
                }
                None => {
                    if id.is_some() {
                        return Ok(());
                    }
                    conn.subscribed = true;
                    match conn.url_since {
                        Some(since) => Some((current, since, conn.established.unwrap_or(since))),
                        None if msg["recovery"].get(&ch).is_some() => {
                            // The URL's `since` was in an epoch left since.
                            Some((String::new(), 0, 0))
                        }
                        None => None,
                    }
                }
            };
            if let (Some((epoch, lo, hi)), Some(result)) = (range, msg["recovery"].get(&ch)) {
                if result["recovered"].as_bool() == Some(true) {
                    rec.recoveries += 1;
                    rec.replayed += result["replayed"].as_u64().unwrap_or(0);
                } else {
                    let reason = result["reason"].as_str().unwrap_or("unknown").to_owned();
                    rec.note(format!(
                        "recovery from {epoch}:{lo} refused: {reason} (gap to {hi})"
                    ));
                    if reason == "epoch_changed" {
                        // The change itself (connection.channels or
                        // connection.established) announces the gap; if it
                        // has not come yet, the rest of that epoch is gone.
                        rec.epoch_changed_recoveries += 1;
                        if let Some(e) = rec.epoch_mut(&epoch) {
                            e.left_at = Some(e.left_at.map_or(lo, |l| l.min(lo)));
                        }
                    } else {
                        if reason == "too_old" {
                            rec.unrecoverable_gaps += 1;
                        }
                        *rec.recovery_failures.entry(reason).or_default() += 1;
                        if let Some(e) = rec.epoch_mut(&epoch) {
                            e.gaps.push((lo, hi));
                        }
                    }
                }
            }
            if conn.pending.is_empty() && rec.max_seen > rec.pos {
                rec.pos = rec.max_seen;
            }
        }
        "error" => {
            let code = msg["payload"]["code"].as_str().unwrap_or("unknown");
            *rec.errors.entry(code.to_owned()).or_default() += 1;
        }
        _ => {}
    }
    Ok(())
}

fn event(shared: &Shared, rec: &mut Record, conn: &mut Conn, seq: u64, timestamp: Option<&str>) {
    rec.delivered += 1;
    shared.live.delivered.fetch_add(1, Ordering::Relaxed);
    let again = rec.count(seq) > 0
        && conn
            .window
            .is_some_and(|(lo, hi)| seq > lo && seq <= hi && conn.window_seen.insert(seq));
    if !again {
        rec.bump(seq);
    }
    if conn.pending.is_empty() {
        if seq <= rec.pos && !again {
            rec.out_of_order += 1;
            rec.note(format!("{seq} after {}", rec.pos));
        } else {
            rec.pos = rec.pos.max(seq);
        }
    }
    rec.max_seen = rec.max_seen.max(seq);
    if conn.subscribed && conn.pending.is_empty() {
        if let Some(ts) = timestamp.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            let ms = chrono::Utc::now().timestamp_millis() - ts.timestamp_millis();
            shared.live.latency.record(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(list: &[(&str, std::ops::RangeInclusive<u64>)]) -> Accepted {
        list.iter()
            .map(|(e, r)| (Some((*e).to_owned()), r.clone().collect()))
            .collect()
    }

    fn receive(rec: &mut Record, seqs: impl IntoIterator<Item = u64>) {
        for s in seqs {
            rec.bump(s);
            rec.pos = rec.pos.max(s);
        }
    }

    #[test]
    fn an_epoch_change_announces_the_rest_of_the_old_epoch() {
        let mut rec = Record::new(0, "alerts".into());
        let mut conn = Conn::default();
        assert!(!rec.position("E1".into(), 2, &mut conn));
        receive(&mut rec, 3..=5);
        // connection.channels: a new epoch, sequence 0.
        assert!(rec.position("E2".into(), 0, &mut conn));
        receive(&mut rec, 1..=3);
        let mut report = Report::default();
        rec.tally(&accepted(&[("E1", 1..=8), ("E2", 1..=3)]), &mut report);
        assert_eq!(report.expected, 9, "E1 3..=8 and E2 1..=3");
        assert_eq!(report.epoch_gap_events, 3, "E1 6..=8");
        assert_eq!((report.lost, report.duplicated), (0, 0));
        assert_eq!(report.epoch_changes, 1);
    }

    #[test]
    fn a_reconnection_into_a_new_epoch_announces_its_beginning() {
        let mut rec = Record::new(0, "alerts".into());
        let mut conn = Conn::default();
        rec.position("E1".into(), 0, &mut conn);
        receive(&mut rec, 1..=4);
        // connection.established in E2 at 2; E3 was never entered.
        rec.position("E2".into(), 2, &mut conn);
        receive(&mut rec, [3, 3, 5]);
        let mut report = Report::default();
        let all = accepted(&[("E0", 1..=9), ("E1", 1..=4), ("E2", 1..=5), ("E3", 1..=2)]);
        rec.tally(&all, &mut report);
        assert_eq!(report.expected, 4 + 5 + 2, "E0 came before the client");
        assert_eq!(report.epoch_gap_events, 2 + 2, "E2 1..=2 and all of E3");
        assert_eq!(report.lost, 1, "E2:4 is inside no announced gap");
        assert_eq!(report.duplicated, 1, "E2:3 twice");
    }

    #[test]
    fn an_epoch_never_announced_is_lost() {
        let mut rec = Record::new(0, "alerts".into());
        let mut conn = Conn::default();
        rec.position("E1".into(), 0, &mut conn);
        receive(&mut rec, 1..=3);
        let mut report = Report::default();
        rec.tally(&accepted(&[("E1", 1..=3), ("E2", 1..=2)]), &mut report);
        assert_eq!((report.lost, report.epoch_gap_events), (2, 0));
    }

    #[test]
    fn replies_without_epoch_count_in_the_first_epoch() {
        let mut rec = Record::new(0, "alerts".into());
        let mut conn = Conn::default();
        rec.position("E1".into(), 1, &mut conn);
        receive(&mut rec, 2..=4);
        let mut report = Report::default();
        rec.tally(&vec![(None, vec![1, 2, 3, 4])], &mut report);
        assert_eq!((report.expected, report.lost), (3, 0));
    }
}
