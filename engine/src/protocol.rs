//! The WebSocket protocol's messages: parsing what clients send and building
//! what the server sends. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::json_depth;

/// The protocol version announced in `connection.established`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request `id` echoed back, in bytes.
const MAX_ID_BYTES: usize = 64;

/// RFC 3339 UTC with milliseconds and `Z`, as every timestamp is written.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 of a Unix time in seconds (token expiry).
pub fn unix_timestamp(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0).map_or_else(String::new, timestamp)
}

/// A channel position: where a client is, or where to recover from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Position {
    /// The channel's epoch.
    pub epoch: String,
    /// The last sequence seen.
    pub sequence: u64,
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// Add patterns (and optionally recover from positions).
    Subscribe {
        /// Patterns as written.
        events: Vec<String>,
        /// Positions to recover from, by channel.
        since: Option<BTreeMap<String, Position>>,
    },
    /// Remove patterns by exact text; `None` removes all.
    Unsubscribe {
        /// Patterns as written.
        events: Option<Vec<String>>,
    },
    /// Application-level ping.
    Ping,
    /// Replace the connection's token.
    Refresh {
        /// The new JWT.
        token: String,
    },
}

/// A parsed client message with its optional request id.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The `id` to echo in the reply.
    pub id: Option<Value>,
    /// The message.
    pub message: ClientMessage,
}

/// A client message that could not be handled: the `error` reply to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// `invalid_json` or `unknown_action`.
    pub code: &'static str,
    /// What was wrong, for a human.
    pub message: String,
    /// The request id, when one could be read.
    pub id: Option<Value>,
}

impl Refusal {
    fn invalid(message: impl Into<String>, id: Option<Value>) -> Refusal {
        Refusal {
            code: "invalid_json",
            message: message.into(),
            id,
        }
    }
}

/// Parses one client text frame.
pub fn parse(text: &str, max_depth: usize) -> Result<Request, Refusal> {
    json_depth::check_depth(text.as_bytes(), max_depth)
        .map_err(|e| Refusal::invalid(e.to_string(), None))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::invalid(format!("not valid JSON: {e}"), None))?;
    let Value::Object(obj) = value else {
        return Err(Refusal::invalid("a message must be a JSON object", None));
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(v.clone()),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Some(_) => {
            return Err(Refusal::invalid(
                "`id` must be a string of at most 64 bytes or an integer",
                None,
            ))
        }
    };
    let (verb, legacy) = match (obj.get("action"), obj.get("type")) {
        (Some(Value::String(a)), _) => (a.as_str(), false),
        (None, Some(Value::String(t))) => (t.as_str(), true),
        _ => {
            return Err(Refusal {
                code: "unknown_action",
                message: "a message needs an `action`: subscribe, unsubscribe, ping or refresh"
                    .into(),
                id,
            })
        }
    };
    let message = match verb {
        "subscribe" => ClientMessage::Subscribe {
            events: patterns(&obj, legacy, &id)?.unwrap_or_default(),
            since: since(&obj, &id)?,
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            events: patterns(&obj, legacy, &id)?,
        },
        "ping" => ClientMessage::Ping,
        "refresh" => match obj.get("token") {
            Some(Value::String(t)) => ClientMessage::Refresh { token: t.clone() },
            _ => return Err(Refusal::invalid("`refresh` needs a `token` string", id)),
        },
        other => {
            return Err(Refusal {
                code: "unknown_action",
                message: format!(
                    "unknown action `{other}`: expected subscribe, unsubscribe, ping or refresh"
                ),
                id,
            })
        }
    };
    Ok(Request { id, message })
}

/// Reads `events` (or the legacy `event_types`) as a list of strings.
fn patterns(
    obj: &Map<String, Value>,
    legacy: bool,
    id: &Option<Value>,
) -> Result<Option<Vec<String>>, Refusal> {
    let key = if legacy && obj.contains_key("event_types") {
        "event_types"
    } else {
        "events"
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                Refusal::invalid(format!("`{key}` must be an array of strings"), id.clone())
            }),
        Some(_) => Err(Refusal::invalid(
            format!("`{key}` must be an array of strings"),
            id.clone(),
        )),
    }
}

fn since(
    obj: &Map<String, Value>,
    id: &Option<Value>,
) -> Result<Option<BTreeMap<String, Position>>, Refusal> {
    match obj.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| {
            Refusal::invalid(
                "`since` must map channel names to {\"epoch\": string, \"sequence\": integer}",
                id.clone(),
            )
        }),
    }
}

/// The `id` of a message that is refused before it is handled, so that
/// the refusal can still echo it (`None` when there is no readable id).
pub fn request_id(text: &str) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    let id = serde_json::from_str::<IdOnly>(text).ok()?.id?;
    let valid = match &id {
        Value::String(s) => s.len() <= MAX_ID_BYTES,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    valid.then_some(id)
}

/// Parses the URL form of `since`: `alerts:EPOCH:41,cameras:EPOCH:7`.
pub fn parse_since_param(text: &str) -> Result<BTreeMap<String, Position>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.splitn(3, ':');
            match (
                parts.next(),
                parts.next(),
                parts.next().map(str::parse::<u64>),
            ) {
                (Some(ch), Some(epoch), Some(Ok(sequence))) if !ch.is_empty() => Ok((
                    ch.to_owned(),
                    Position {
                        epoch: epoch.to_owned(),
                        sequence,
                    },
                )),
                _ => Err(format!(
                    "`since` entry `{item}` is not channel:epoch:sequence"
                )),
            }
        })
        .collect()
}

/// A warning attached to a `subscribed` reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Warning {
    /// The pattern it is about.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
    /// A close registered name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did_you_mean: Option<String>,
}

fn with_id(mut msg: Value, id: &Option<Value>) -> String {
    if let (Some(id), Value::Object(obj)) = (id, &mut msg) {
        obj.insert("id".into(), id.clone());
    }
    text(msg)
}

/// A control message's text with `type` first, as events have it, so the
/// raw frame says what it is in its first bytes (serde_json alone sorts the
/// keys); the other keys follow in sorted order.
fn text(msg: Value) -> String {
    let Value::Object(mut fields) = msg else {
        return msg.to_string();
    };
    let mut out = String::from("{");
    let first = fields.remove("type").map(|t| ("type".to_owned(), t));
    for (i, (key, value)) in first.into_iter().chain(fields).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// Channel positions as the protocol shows them.
pub type Positions = BTreeMap<Arc<str>, (Arc<str>, u64)>;

fn positions_json(channels: &Positions) -> Value {
    channels
        .iter()
        .map(|(name, (epoch, seq))| {
            (
                name.to_string(),
                json!({"epoch": &**epoch, "sequence": seq}),
            )
        })
        .collect::<Map<_, _>>()
        .into()
}

/// What `connection.established` tells a new connection.
#[derive(Debug)]
pub struct Established<'a> {
    /// The connection's public id.
    pub connection_id: &'a str,
    /// Its endpoint.
    pub endpoint: &'a str,
    /// Server ping interval.
    pub heartbeat_interval_s: u64,
    /// The user, if authenticated.
    pub user: Option<&'a str>,
    /// When the token expires, if any.
    pub expires_at: Option<String>,
    /// Positions of every channel it may receive.
    pub channels: &'a Positions,
}

/// `connection.established`.
pub fn established(e: &Established<'_>) -> String {
    text(json!({
        "type": "connection.established",
        "payload": {
            "connection_id": e.connection_id,
            "endpoint": e.endpoint,
            "protocol_version": PROTOCOL_VERSION,
            "heartbeat_interval_s": e.heartbeat_interval_s,
            "user": e.user,
            "expires_at": e.expires_at,
            "channels": positions_json(e.channels),
        },
        "timestamp": timestamp(Utc::now()),
    }))
}

/// `connection.channels`: channels newly receivable, or whose epoch changed.
pub fn channels(channels: &Positions) -> String {
    text(json!({
        "type": "connection.channels",
        "payload": {"channels": positions_json(channels)},
        "timestamp": timestamp(Utc::now()),
    }))
}

/// `connection.lagged`: events were dropped; `since` = these positions recovers them.
pub fn lagged(dropped: u64, channels: &Positions) -> String {
    text(json!({
        "type": "connection.lagged",
        "payload": {"dropped": dropped, "channels": positions_json(channels)},
        "timestamp": timestamp(Utc::now()),
    }))
}

/// The `subscribed` reply.
pub fn subscribed(
    events: Option<&[String]>,
    warnings: &[Warning],
    recovery: Option<Value>,
    id: &Option<Value>,
) -> String {
    let mut msg = json!({
        "type": "subscribed",
        "action": "subscribed",
        "events": events,
        "warnings": warnings,
    });
    if let Some(recovery) = recovery {
        msg["recovery"] = recovery;
    }
    with_id(msg, id)
}

/// The `unsubscribed` reply.
pub fn unsubscribed(events: Option<&[String]>, id: &Option<Value>) -> String {
    with_id(
        json!({"type": "unsubscribed", "action": "unsubscribed", "events": events}),
        id,
    )
}

/// The `refreshed` reply.
pub fn refreshed(expires_at: &str, id: &Option<Value>) -> String {
    with_id(
        json!({"type": "refreshed", "action": "refreshed", "expires_at": expires_at}),
        id,
    )
}

/// The `pong` reply.
pub fn pong(id: &Option<Value>) -> String {
    with_id(
        json!({"type": "pong", "timestamp": timestamp(Utc::now())}),
        id,
    )
}

/// An `error` message; the connection stays open.
pub fn error(code: &str, message: &str, id: &Option<Value>) -> String {
    with_id(
        json!({"type": "error", "payload": {"code": code, "message": message}}),
        id,
    )
}

/// The one `invalid_pattern` error for every malformed pattern of a
/// message: `patterns` names the first few as written, `refused` counts
/// them all, and the message says why each named one was refused.
/// `named` holds (pattern, why) pairs; `count` may exceed its length.
pub fn invalid_patterns(count: usize, named: &[(String, String)], id: &Option<Value>) -> String {
    let whys: Vec<&str> = named.iter().map(|(_, why)| why.as_str()).collect();
    let mut message = match count {
        1 => whys.join(""),
        n => format!("{n} patterns refused: {}", whys.join("; ")),
    };
    if count > named.len() {
        message.push_str(&format!("; and {} more not named", count - named.len()));
    }
    let patterns: Vec<&str> = named.iter().map(|(p, _)| p.as_str()).collect();
    with_id(
        json!({"type": "error", "payload": {
            "code": "invalid_pattern",
            "message": message,
            "patterns": patterns,
            "refused": count,
        }}),
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Request {
        parse(text, 32).unwrap()
    }

    #[test]
    fn subscribe_forms() {
        let r = ok(r#"{"action":"subscribe","events":["alert.*"],"id":7}"#);
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(
            r.message,
            ClientMessage::Subscribe {
                events: vec!["alert.*".into()],
                since: None
            }
        );
        let legacy = ok(r#"{"type":"subscribe","event_types":["job_progress"]}"#);
        assert_eq!(
            legacy.message,
            ClientMessage::Subscribe {
                events: vec!["job_progress".into()],
                since: None
            }
        );
    }

    #[test]
    fn action_wins_over_type() {
        assert_eq!(
            ok(r#"{"action":"ping","type":"subscribe"}"#).message,
            ClientMessage::Ping
        );
        assert_eq!(ok(r#"{"type":"ping"}"#).message, ClientMessage::Ping);
    }

    #[test]
    fn unsubscribe_without_events_means_all() {
        assert_eq!(
            ok(r#"{"action":"unsubscribe"}"#).message,
            ClientMessage::Unsubscribe { events: None }
        );
    }

    #[test]
    fn since_in_a_subscribe() {
        let r = ok(
            r#"{"action":"subscribe","events":[],"since":{"alerts":{"epoch":"E","sequence":41}}}"#,
        );
        let ClientMessage::Subscribe {
            since: Some(since), ..
        } = r.message
        else {
            panic!("not a subscribe with since")
        };
        assert_eq!(since["alerts"].sequence, 41);
    }

    #[test]
    fn refusals_name_the_problem_and_keep_the_id() {
        assert_eq!(parse("not json", 32).unwrap_err().code, "invalid_json");
        assert_eq!(parse("[1]", 32).unwrap_err().code, "invalid_json");
        let e = parse(r#"{"action":"dance","id":"a"}"#, 32).unwrap_err();
        assert_eq!((e.code, e.id), ("unknown_action", Some(json!("a"))));
        assert_eq!(parse(r#"{"id":1}"#, 32).unwrap_err().code, "unknown_action");
        let e = parse(r#"{"action":"subscribe","events":"alert.*","id":2}"#, 32).unwrap_err();
        assert_eq!((e.code, e.id), ("invalid_json", Some(json!(2))));
        assert_eq!(
            parse(
                &format!("{{\"action\":\"ping\",\"id\":\"{}\"}}", "x".repeat(65)),
                32
            )
            .unwrap_err()
            .code,
            "invalid_json"
        );
        assert_eq!(
            parse(r#"{"action":"ping","x":[[[[1]]]]}"#, 3)
                .unwrap_err()
                .code,
            "invalid_json"
        );
    }

    #[test]
    fn ids_are_read_from_messages_refused_before_handling() {
        assert_eq!(
            request_id(r#"{"action":"ping","id":"r1"}"#),
            Some(json!("r1"))
        );
        assert_eq!(request_id(r#"{"id":7}"#), Some(json!(7)));
        assert_eq!(request_id(r#"{"id":[1]}"#), None);
        assert_eq!(request_id("not json"), None);
        assert_eq!(
            request_id(&format!("{{\"id\":\"{}\"}}", "x".repeat(65))),
            None
        );
    }

    #[test]
    fn since_param() {
        let since = parse_since_param("alerts:E1:41,cameras:E2:7").unwrap();
        assert_eq!(
            since["cameras"],
            Position {
                epoch: "E2".into(),
                sequence: 7
            }
        );
        assert!(parse_since_param("alerts:E1").is_err());
        assert!(parse_since_param("alerts:E1:x").is_err());
    }

    #[test]
    fn replies_echo_the_id() {
        let reply: Value = serde_json::from_str(&pong(&Some(json!("r1")))).unwrap();
        assert_eq!(reply["id"], "r1");
        assert_eq!(reply["type"], "pong");
        let reply: Value = serde_json::from_str(&error("invalid_pattern", "bad", &None)).unwrap();
        assert_eq!(reply["payload"]["code"], "invalid_pattern");
        assert!(reply.get("id").is_none());
    }
}
