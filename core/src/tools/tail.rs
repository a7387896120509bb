//! `switchyard tail`: prints the live events of one endpoint, recovering
//! across reconnects. It keeps the last position (epoch, sequence) of every
//! channel and reconnects with `since` (SPEC §3, "History and recovery"),
//! so a dropped connection loses nothing the router still holds; what it
//! cannot recover (a lag, a gap) is said on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client_message;
use crate::protocol::Position;

/// What to tail, and how to print it.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The router's base URL (`http://host:port`).
    pub url: String,
    /// The endpoint path (`/ws/events`).
    pub endpoint: String,
    /// Comma-separated patterns; `None` receives everything.
    pub events: Option<String>,
    /// Start from here: `channel:epoch:seq,…`.
    pub since: Option<String>,
    /// One JSON line per event, as received.
    pub json: bool,
    /// A client token.
    pub token: Option<String>,
}

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First wait after a dropped connection.
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// Why a `--since` cursor was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// An entry is not of the `channel:epoch:sequence` form.
    #[error("entry `{0}` is not channel:epoch:sequence")]
    Malformed(String),
    /// An entry has an empty epoch: without it, recovery cannot tell a
    /// channel that started again from one that went on.
    #[error("entry for `{0}` has no epoch: an entry is channel:epoch:sequence")]
    NoEpoch(String),
}

/// Parses the `channel:epoch:seq,…` cursor form (spaces around entries
/// allowed; every entry needs an epoch).
pub fn parse_since(text: &str) -> Result<BTreeMap<String, Position>, SinceError> {
    let mut positions = BTreeMap::new();
    // One entry at a time, so that the error is this tool's, naming the flag
    // once, and not the router's, which names its `since` parameter.
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = client_message::parse_since_param(entry)
            .map_err(|_| SinceError::Malformed(entry.to_owned()))?;
        positions.extend(parsed);
    }
    match positions.iter().find(|(_, p)| p.epoch.is_empty()) {
        Some((channel, _)) => Err(SinceError::NoEpoch(channel.clone())),
        None => Ok(positions),
    }
}

/// The cursor form of `positions`.
pub fn cursor(positions: &BTreeMap<String, Position>) -> String {
    client_message::since_text(
        positions
            .iter()
            .map(|(c, p)| (c.as_str(), p.epoch.as_str(), p.sequence)),
    )
}

/// Exit status when the command line is wrong.
const USAGE: u8 = 2;

/// Runs `tail` until Ctrl-C (exit 0); a bad `--since` or an empty
/// `--token` exits 2.
pub fn run(tail: Tail) -> ExitCode {
    if let Err(e) = super::refuse_empty("--token", "SWITCHYARD_TOKEN", tail.token.as_deref()) {
        note!("switchyard tail: {e}");
        return ExitCode::from(USAGE);
    }
    if let Err(e) = check_url(&tail.url) {
        note!("switchyard tail: --url: {e}");
        return ExitCode::from(USAGE);
    }
    let positions = match tail.since.as_deref().map(parse_since).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            note!("switchyard tail: --since: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            note!("switchyard tail: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            code = follow(&tail, positions) => code,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}

/// Refuses a router URL that no attempt could ever connect to (no scheme,
/// as in `127.0.0.1:8080`, or another one): retrying it would only repeat
/// an error that does not say what is wrong.
fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https" | "ws" | "wss") => Ok(()),
        _ => Err(format!(
            "`{url}` has no http:// or https://; give the router's URL, e.g. http://127.0.0.1:8080"
        )),
    }
}

/// The patterns of `--events`, without the spaces around them
/// (`alert.*, job.progress`): the router takes a space for part of a name.
fn patterns(events: &str) -> Vec<&str> {
    events
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The WebSocket URL of one attempt.
fn ws_url(tail: &Tail, positions: &BTreeMap<String, Position>) -> String {
    let base = if let Some(rest) = tail.url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = tail.url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        tail.url.clone()
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(events) = &tail.events {
        query.append_pair("events", &patterns(events).join(","));
    }
    if !positions.is_empty() {
        query.append_pair("since", &cursor(positions));
    }
    if let Some(token) = &tail.token {
        query.append_pair("token", token);
    }
    let query = query.finish();
    let endpoint = if tail.endpoint.starts_with('/') {
        tail.endpoint.clone()
    } else {
        format!("/{}", tail.endpoint)
    };
    if query.is_empty() {
        format!("{base}{endpoint}")
    } else {
        format!("{base}{endpoint}?{query}")
    }
}

/// Connects, prints, and reconnects with `since`, until the router
/// refuses the connection itself (a 1008 close before
/// `connection.established`: a missing or bad token), which exits 1.
async fn follow(tail: &Tail, mut positions: BTreeMap<String, Position>) -> ExitCode {
    let colour = crate::logging::colour(std::io::stdout().is_terminal());
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 0u32;
    let mut lags = Lags::default();
    loop {
        let url = ws_url(tail, &positions);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => {
                let reconnect = attempt > 0;
                attempt += 1;
                lags.connected(&positions);
                let outcome =
                    session(tail, socket, &mut positions, &mut lags, colour, reconnect).await;
                if outcome.established {
                    backoff = MIN_BACKOFF;
                } else if outcome.code == Some(1008) {
                    note!(
                        "switchyard tail: the router refused the connection ({})",
                        outcome.why
                    );
                    return ExitCode::FAILURE;
                }
                note!(
                    "switchyard tail: connection lost ({}); reconnecting",
                    outcome.why
                );
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if refused_for_good(response.status().as_u16()) =>
            {
                note!(
                    "switchyard tail: the router refused the connection to {}{} ({})",
                    tail.url,
                    tail.endpoint,
                    http_refusal(response.status().as_u16(), response.body().as_deref())
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                attempt += 1;
                note!(
                    "switchyard tail: cannot connect to {}{}: {}; retrying in {:.1}s",
                    tail.url,
                    tail.endpoint,
                    super::with_causes(&e),
                    backoff.as_secs_f64()
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether an HTTP status refusing the upgrade will be the same on every
/// attempt: a client error (an unknown endpoint, a foreign origin, a
/// malformed query), but not a request timeout or a rate limit. Server
/// errors (503 `too_many_connections`, `shutting_down`) pass.
fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// The router's reason for refusing an upgrade, from its JSON error body:
/// `HTTP 404 unknown_endpoint: no endpoint at /ws/x`, then the endpoint it
/// suggests and those it has.
fn http_refusal(status: u16, body: Option<&[u8]>) -> String {
    let body: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let error = &body["error"];
    let Some(code) = error["code"].as_str() else {
        return format!("HTTP {status}");
    };
    let mut text = format!(
        "HTTP {status} {code}: {}",
        error["message"].as_str().unwrap_or("")
    );
    if let Some(name) = error["did_you_mean"].as_str() {
        text.push_str(&format!("; did_you_mean: {name}"));
    }
    let endpoints: Vec<&str> = error["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !endpoints.is_empty() {
        text.push_str(&format!("; endpoints: {}", endpoints.join(", ")));
    }
    text
}

/// How one connection ended.
struct Outcome {
    established: bool,
    /// The close code, when the router sent one.
    code: Option<u16>,
    why: String,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads one connection until it ends.
async fn session(
    tail: &Tail,
    mut socket: Socket,
    positions: &mut BTreeMap<String, Position>,
    lags: &mut Lags,
    colour: bool,
    reconnect: bool,
) -> Outcome {
    let mut established = false;
    // What `connection.established` announced, for channels whose recovery fails.
    let mut announced: BTreeMap<String, Position> = BTreeMap::new();
    while let Some(frame) = socket.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text.to_string(),
            Ok(Message::Close(frame)) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let why = frame.map_or_else(
                    || "closed".to_owned(),
                    |f| format!("closed {} {}", u16::from(f.code), f.reason),
                );
                return Outcome {
                    established,
                    code,
                    why,
                };
            }
            Ok(_) => continue,
            Err(e) => {
                return Outcome {
                    established,
                    code: None,
                    why: e.to_string(),
                }
            }
        };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let kind = msg["type"].as_str().unwrap_or("");
        match kind {
            "connection.established" => {
                established = true;
                announced = channel_positions(&msg["payload"]["channels"]);
                for (channel, position) in &announced {
                    positions
                        .entry(channel.clone())
                        .or_insert_with(|| position.clone());
                }
                if reconnect {
                    note!(
                        "switchyard tail: reconnected to {}{}",
                        tail.url,
                        tail.endpoint
                    );
                }
            }
            "connection.channels" => {
                for (channel, position) in channel_positions(&msg["payload"]["channels"]) {
                    note!(
                        "switchyard tail: channel {channel} now at epoch {} sequence {}",
                        position.epoch,
                        position.sequence
                    );
                    lags.forget(&channel);
                    positions.insert(channel, position);
                }
            }
            "connection.lagged" => {
                let lagged = channel_positions(&msg["payload"]["channels"]);
                lags.lagged(positions, &lagged);
                note!(
                    "switchyard tail: lagged: the router dropped {} event(s) for this client ({}); recovering them",
                    msg["payload"]["dropped"],
                    cursor(&lagged)
                );
                let since: serde_json::Map<String, Value> = lagged
                    .iter()
                    .map(|(c, p)| (c.clone(), json!({"epoch": p.epoch, "sequence": p.sequence})))
                    .collect();
                let patterns: Vec<&str> = match &tail.events {
                    Some(events) => patterns(events),
                    None => vec!["*"],
                };
                let request = json!({"action": "subscribe", "events": patterns, "since": since});
                if let Err(e) = socket.send(Message::text(request.to_string())).await {
                    return Outcome {
                        established,
                        code: None,
                        why: e.to_string(),
                    };
                }
            }
            "subscribed" => {
                report_recovery(&msg["recovery"], positions, &announced);
                lags.answered(positions, &msg["recovery"]);
            }
            "error" => note!(
                "switchyard tail: error from the router: {} {}",
                msg["payload"]["code"].as_str().unwrap_or("?"),
                msg["payload"]["message"].as_str().unwrap_or("")
            ),
            "unsubscribed" | "pong" | "refreshed" => {}
            _ if kind.starts_with("connection.") => {}
            _ => {
                if let (Some(channel), Some(sequence)) =
                    (msg["channel"].as_str(), msg["sequence"].as_u64())
                {
                    if !lags.saw(positions, channel, sequence) {
                        continue;
                    }
                }
                let line = if tail.json {
                    text
                } else {
                    readable(&msg, colour)
                };
                super::write_or_end(std::io::stdout().lock(), format_args!("{line}"));
            }
        }
    }
    Outcome {
        established,
        code: None,
        why: "the connection ended".to_owned(),
    }
}

/// The recoveries asked for and not yet answered (with `since` when
/// connecting, or on a `connection.lagged`), and what was printed past a
/// channel's position meanwhile. Until they are answered, a position stays
/// where recovery starts, however far live events go: a connection lost
/// meanwhile then reconnects from there rather than past events never
/// received, and what the new connection sends again is not printed twice.
#[derive(Debug, Default)]
struct Lags {
    /// Per channel, recoveries asked for on this connection and not answered.
    pending: BTreeMap<String, usize>,
    /// Per channel, the sequences printed above its position.
    above: BTreeMap<String, BTreeSet<u64>>,
}

impl Lags {
    /// A new connection, which recovers every channel in `positions` (its
    /// URL's `since`); what the previous one awaited died with it.
    fn connected(&mut self, positions: &BTreeMap<String, Position>) {
        self.pending = positions.keys().map(|c| (c.clone(), 1)).collect();
    }

    /// A channel starts again (a new epoch): what was printed of it before
    /// says nothing of its new sequences.
    fn forget(&mut self, channel: &str) {
        self.above.remove(channel);
    }

    /// Holds each lagged channel's position at its lag point.
    fn lagged(
        &mut self,
        positions: &mut BTreeMap<String, Position>,
        lagged: &BTreeMap<String, Position>,
    ) {
        for (channel, at) in lagged {
            if let Some(p) = positions.get_mut(channel) {
                if p.epoch == at.epoch {
                    p.sequence = p.sequence.min(at.sequence);
                }
            }
            *self.pending.entry(channel.clone()).or_default() += 1;
        }
    }

    /// An event was received: whether it is new (to print). The channel's
    /// position follows it unless a recovery is awaited there.
    fn saw(
        &mut self,
        positions: &mut BTreeMap<String, Position>,
        channel: &str,
        sequence: u64,
    ) -> bool {
        let Some(p) = positions.get_mut(channel) else {
            return true;
        };
        if sequence <= p.sequence {
            return false;
        }
        if self.pending.contains_key(channel) {
            return self
                .above
                .entry(channel.to_owned())
                .or_default()
                .insert(sequence);
        }
        p.sequence = sequence;
        true
    }

    /// A `subscribed` reply: once every recovery of a channel is answered
    /// (replayed, or reported as a gap), its position passes everything
    /// printed.
    fn answered(&mut self, positions: &mut BTreeMap<String, Position>, recovery: &Value) {
        for channel in recovery.as_object().into_iter().flat_map(|r| r.keys()) {
            let Some(left) = self.pending.get_mut(channel) else {
                continue;
            };
            *left -= 1;
            if *left > 0 {
                continue;
            }
            self.pending.remove(channel);
            let printed = self.above.remove(channel).unwrap_or_default();
            if let (Some(p), Some(highest)) = (positions.get_mut(channel), printed.last()) {
                p.sequence = p.sequence.max(*highest);
            }
        }
    }
}

/// Says on stderr what `recovery` reports, and moves a channel that could
/// not be recovered up to the announced position (its next events are
/// live), or to it outright under a new epoch.
fn report_recovery(
    recovery: &Value,
    positions: &mut BTreeMap<String, Position>,
    announced: &BTreeMap<String, Position>,
) {
    let Some(recovery) = recovery.as_object() else {
        return;
    };
    for (channel, outcome) in recovery {
        if outcome["recovered"].as_bool() == Some(true) {
            let replayed = outcome["replayed"].as_u64().unwrap_or(0);
            if replayed > 0 {
                note!("switchyard tail: recovered {replayed} missed event(s) of {channel}");
            }
        } else {
            let reason = outcome["reason"].as_str().unwrap_or("unknown");
            let from = positions
                .get(channel)
                .map(|p| format!(" after {channel}:{}:{}", p.epoch, p.sequence))
                .unwrap_or_default();
            note!(
                "switchyard tail: GAP on {channel}: events{from} could not be recovered ({reason}) and may have been missed; live events follow"
            );
            match (positions.get_mut(channel), announced.get(channel)) {
                // Past the channel's last sequence (a cursor from another
                // router, a typo): its live events are numbered from the
                // announced position on, so staying up there would take
                // them all for events already printed.
                (Some(_), Some(p)) if reason == "invalid_position" => {
                    positions.insert(channel.clone(), p.clone());
                }
                // Same epoch: never back to the connection's start, which
                // would print again what came since.
                (Some(mine), Some(p)) if mine.epoch == p.epoch => {
                    mine.sequence = mine.sequence.max(p.sequence);
                }
                (_, Some(p)) => {
                    positions.insert(channel.clone(), p.clone());
                }
                (_, None) => {
                    positions.remove(channel);
                }
            }
        }
    }
}

/// `{"alerts":{"epoch","sequence"}}` as positions.
fn channel_positions(channels: &Value) -> BTreeMap<String, Position> {
    channels
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(channel, p)| {
            Some((
                channel.clone(),
                Position {
                    epoch: p["epoch"].as_str()?.to_owned(),
                    sequence: p["sequence"].as_u64()?,
                },
            ))
        })
        .collect()
}

/// One readable line: time, type, channel:sequence, compact payload,
/// and the correlation id when there is one.
pub fn readable(event: &Value, colour: bool) -> String {
    let time = event["timestamp"]
        .as_str()
        .and_then(|t| t.split_once('T'))
        .map_or("", |(_, t)| t.trim_end_matches('Z'));
    let kind = event["type"].as_str().unwrap_or("?");
    let place = format!(
        "{}:{}",
        event["channel"].as_str().unwrap_or("?"),
        event["sequence"]
    );
    let payload = event["payload"].to_string();
    let correlation = event["correlation_id"]
        .as_str()
        .map(|c| format!(" correlation_id={c}"))
        .unwrap_or_default();
    if colour {
        format!(
            "\x1b[2m{time}\x1b[0m \x1b[1;36m{kind}\x1b[0m \x1b[33m{place}\x1b[0m {payload}\x1b[2m{correlation}\x1b[0m"
        )
    } else {
        format!("{time} {kind} {place} {payload}{correlation}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_and_print_back() {
        let p = parse_since("alerts:k3Jf:41, jobs:x-1:0").unwrap();
        assert_eq!(p["alerts"].sequence, 41);
        assert_eq!(p["jobs"].epoch, "x-1");
        assert_eq!(cursor(&p), "alerts:k3Jf:41,jobs:x-1:0");
        assert_eq!(
            parse_since("alerts:41"),
            Err(SinceError::Malformed("alerts:41".into()))
        );
        assert_eq!(
            parse_since("alerts:e:1, bogus"),
            Err(SinceError::Malformed("bogus".into()))
        );
        assert!(parse_since("alerts:e:x").is_err());
        assert_eq!(
            parse_since("alerts::3"),
            Err(SinceError::NoEpoch("alerts".into()))
        );
    }

    /// A connection lost while a lag recovery is awaited must reconnect from
    /// before the dropped events, not from the last live event.
    #[test]
    fn a_position_waits_at_the_lag_point_until_its_recovery_is_answered() {
        let mut positions = parse_since("alerts:E:30").unwrap();
        let mut lags = Lags::default();
        assert!(lags.saw(&mut positions, "alerts", 40));
        assert_eq!(positions["alerts"].sequence, 40);
        lags.lagged(&mut positions, &parse_since("alerts:E:33").unwrap());
        lags.lagged(&mut positions, &parse_since("alerts:E:45").unwrap());
        assert_eq!(positions["alerts"].sequence, 33, "the earliest lag point");
        assert!(lags.saw(&mut positions, "alerts", 90));
        assert_eq!(
            positions["alerts"].sequence, 33,
            "live events do not move it"
        );
        let reply = json!({"alerts": {"recovered": true, "replayed": 12}});
        lags.answered(&mut positions, &reply);
        assert_eq!(
            positions["alerts"].sequence, 33,
            "one recovery still awaited"
        );

        // The connection is lost: the next one recovers from 33, and what
        // it sends again is not printed twice.
        lags.connected(&positions);
        assert!(lags.saw(&mut positions, "alerts", 34), "a replayed event");
        assert!(!lags.saw(&mut positions, "alerts", 90), "printed already");
        assert!(!lags.saw(&mut positions, "alerts", 34));
        lags.answered(&mut positions, &reply);
        assert_eq!(positions["alerts"].sequence, 90, "all answered");
        assert!(
            !lags.saw(&mut positions, "alerts", 35),
            "at or below the position"
        );
        assert!(lags.saw(&mut positions, "alerts", 91));
        assert_eq!(positions["alerts"].sequence, 91);
    }

    #[test]
    fn a_failed_recovery_moves_a_position_forward_only() {
        let announced = parse_since("alerts:E:20,jobs:F:3").unwrap();
        let mut positions = parse_since("alerts:E:33,jobs:old:9").unwrap();
        let failed = json!({
            "alerts": {"recovered": false, "reason": "too_old"},
            "jobs": {"recovered": false, "reason": "epoch_changed"}
        });
        report_recovery(&failed, &mut positions, &announced);
        assert_eq!(positions["alerts"].sequence, 33, "not back to the start");
        assert_eq!(cursor(&positions), "alerts:E:33,jobs:F:3");
    }

    /// A position past the channel's last sequence would hide every live
    /// event up to it: the announced position replaces it.
    #[test]
    fn an_invalid_position_falls_back_to_the_announced_one() {
        let announced = parse_since("alerts:E:1").unwrap();
        let mut positions = parse_since("alerts:E:50").unwrap();
        let failed = json!({"alerts": {"recovered": false, "reason": "invalid_position"}});
        report_recovery(&failed, &mut positions, &announced);
        assert_eq!(cursor(&positions), "alerts:E:1");
    }

    #[test]
    fn readable_lines_have_time_type_place_and_payload() {
        let event = json!({"type":"alert.created","payload":{"id":"a1"},
            "timestamp":"2026-11-23T06:00:00.123Z","channel":"alerts","sequence":42});
        assert_eq!(
            readable(&event, false),
            r#"06:00:00.123 alert.created alerts:42 {"id":"a1"}"#
        );
        assert!(readable(&event, true).contains("\x1b["));
    }
}
