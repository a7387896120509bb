//! The messages the router sends, built in one place: replies, errors,
//! control messages, and the positions and timestamps they carry. Pure
//! functions, no I/O. What clients send is read by the transport
//! (`switchyard::client_message`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The protocol version announced in `connection.established`.
pub const PROTOCOL_VERSION: u32 = 1;

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

/// `connection.closed`: how a Server-Sent Events stream ends where a
/// WebSocket would be closed with `code`.
pub fn closed(code: u16, reason: &str) -> String {
    text(json!({
        "type": "connection.closed",
        "payload": {"code": code, "reason": reason},
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
