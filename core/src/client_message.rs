//! What clients send: one text frame read into a [`Request`], or the
//! [`Refusal`] to answer it with. Pure functions, no I/O; the replies
//! themselves are built by `protocol` (docs/protocol.md, "Client messages
//! and replies").

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::json_depth;
use crate::protocol::Position;

/// Longest request `id` echoed back, in bytes.
const MAX_ID_BYTES: usize = 64;

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

/// The URL form of `since` for positions (`channel`, `epoch`, `sequence`):
/// what [`parse_since_param`] reads back.
pub fn since_text<'a>(positions: impl IntoIterator<Item = (&'a str, &'a str, u64)>) -> String {
    let mut out = Vec::new();
    write_since(&mut out, positions);
    String::from_utf8(out).expect("names, epochs and digits are UTF-8")
}

/// Appends the URL form of `since` to `out`, allocating nothing else: an
/// event stream writes it as the `id:` of every message it sends.
pub fn write_since<'a>(
    out: &mut Vec<u8>,
    positions: impl IntoIterator<Item = (&'a str, &'a str, u64)>,
) {
    for (i, (channel, epoch, sequence)) in positions.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(channel.as_bytes());
        out.push(b':');
        out.extend_from_slice(epoch.as_bytes());
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
    }
}

/// Parses the URL form of `since`: `alerts:EPOCH:41,cameras:EPOCH:7`.
/// Names are written back to the client (an event stream's `id:`), so a
/// control character in one (a decoded CR or LF) is refused.
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
                (Some(ch), Some(epoch), Some(Ok(sequence)))
                    if !ch.is_empty() && !item.contains(char::is_control) =>
                {
                    Ok((
                        ch.to_owned(),
                        Position {
                            epoch: epoch.to_owned(),
                            sequence,
                        },
                    ))
                }
                _ => Err(format!(
                    "`since` entry `{}` is not channel:epoch:sequence",
                    item.escape_debug()
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert!(parse_since_param("alerts\r\nid: forged:E1:1").is_err());
        assert!(parse_since_param("alerts:E\n1:1").is_err());
        assert!(parse_since_param("").unwrap().is_empty());
    }
}
