//! The protocol's own messages as JSON Schemas, for the AsyncAPI document:
//! what the router sends besides events (docs/protocol.md, "Control
//! messages" and "Client messages and replies") and what a client sends.
//! The shapes are those `crate::protocol` builds and
//! `switchyard::client_message` reads.

use serde_json::{json, Value};

/// One protocol message.
pub(super) struct Message {
    /// Its identifier in generated code and AsyncAPI keys.
    pub id: &'static str,
    /// Its `type` (server messages) or `action` (client messages).
    pub wire: &'static str,
    /// One line on what it is for.
    pub summary: &'static str,
    /// The JSON Schema of the whole frame.
    pub schema: Value,
}

/// The error codes an `error` message carries.
pub(super) const ERROR_CODES: [&str; 6] = [
    "invalid_json",
    "unknown_action",
    "invalid_pattern",
    "too_many_patterns",
    "invalid_token",
    "rate_limited",
];

/// Recovery outcomes of a channel that could not be recovered.
pub(super) const RECOVERY_FAILURES: [&str; 4] = [
    "epoch_changed",
    "too_old",
    "invalid_position",
    "unknown_channel",
];

fn positions() -> Value {
    json!({
        "type": "object",
        "description": "Channel positions: recovering with these as `since` misses nothing",
        "additionalProperties": {
            "type": "object",
            "required": ["epoch", "sequence"],
            "properties": {
                "epoch": {"type": "string"},
                "sequence": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": false,
        },
    })
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn request_id() -> Value {
    json!({"type": ["string", "integer"], "description": "Echoes the request's `id`"})
}

/// A frame of `properties`, all required but `optional`.
fn frame(properties: Value, optional: &[&str]) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|p| {
            p.keys()
                .filter(|k| !optional.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    json!({"type": "object", "required": required, "properties": properties})
}

/// A control message: `{"type", "payload", "timestamp"}`.
fn control(wire: &str, payload: Value) -> Value {
    frame(
        json!({"type": {"const": wire}, "payload": payload, "timestamp": timestamp()}),
        &[],
    )
}

fn established() -> Value {
    control(
        "connection.established",
        frame(
            json!({
                "connection_id": {"type": "string"},
                "endpoint": {"type": "string"},
                "protocol_version": {"type": "integer"},
                "heartbeat_interval_s": {"type": "integer"},
                "user": {"type": ["string", "null"]},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "channels": positions(),
            }),
            &[],
        ),
    )
}

fn subscribed() -> Value {
    let recovery = json!({
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["recovered"],
            "properties": {
                "recovered": {"type": "boolean"},
                "replayed": {"type": "integer", "minimum": 0},
                "reason": {"enum": RECOVERY_FAILURES},
            },
        },
    });
    let warning = frame(
        json!({
            "pattern": {"type": "string"},
            "message": {"type": "string"},
            "did_you_mean": {"type": "string"},
        }),
        &["did_you_mean"],
    );
    frame(
        json!({
            "type": {"const": "subscribed"},
            "action": {"const": "subscribed"},
            "events": {"type": ["array", "null"], "items": {"type": "string"}},
            "warnings": {"type": "array", "items": warning},
            "recovery": recovery,
            "id": request_id(),
        }),
        &["recovery", "id"],
    )
}

fn error() -> Value {
    frame(
        json!({
            "type": {"const": "error"},
            "payload": frame(
                json!({
                    "code": {"enum": ERROR_CODES},
                    "message": {"type": "string"},
                    "patterns": {"type": "array", "items": {"type": "string"}},
                    "refused": {"type": "integer"},
                }),
                &["patterns", "refused"],
            ),
            "id": request_id(),
        }),
        &["id"],
    )
}

/// Every message the router sends besides events.
pub(super) fn server_messages() -> Vec<Message> {
    let reply = |wire: &'static str, extra: Value| {
        let mut properties = json!({"type": {"const": wire}, "id": request_id()});
        if let (Some(p), Value::Object(extra)) = (properties.as_object_mut(), extra) {
            p.extend(extra);
        }
        frame(properties, &["id"])
    };
    vec![
        Message {
            id: "ConnectionEstablished",
            wire: "connection.established",
            summary: "Sent once when a connection opens: its id, endpoint and channel positions",
            schema: established(),
        },
        Message {
            id: "ConnectionChannels",
            wire: "connection.channels",
            summary: "Sent when a connection starts receiving a channel, or a channel's epoch changes",
            schema: control("connection.channels", frame(json!({"channels": positions()}), &[])),
        },
        Message {
            id: "ConnectionLagged",
            wire: "connection.lagged",
            summary: "Sent after events were dropped from a slow connection's queue, with recovery positions",
            schema: control(
                "connection.lagged",
                frame(
                    json!({"dropped": {"type": "integer", "minimum": 1}, "channels": positions()}),
                    &[],
                ),
            ),
        },
        Message {
            id: "ConnectionClosed",
            wire: "connection.closed",
            summary: "The last message of a Server-Sent Events stream: the close code and reason a WebSocket would get",
            schema: control(
                "connection.closed",
                frame(
                    json!({"code": {"type": "integer"}, "reason": {"type": "string"}}),
                    &[],
                ),
            ),
        },
        Message {
            id: "Subscribed",
            wire: "subscribed",
            summary: "Reply to subscribe: every pattern now held (null: receives all), warnings, recovery",
            schema: subscribed(),
        },
        Message {
            id: "Unsubscribed",
            wire: "unsubscribed",
            summary: "Reply to unsubscribe: the patterns still held",
            schema: reply(
                "unsubscribed",
                json!({
                    "action": {"const": "unsubscribed"},
                    "events": {"type": ["array", "null"], "items": {"type": "string"}},
                }),
            ),
        },
        Message {
            id: "ErrorMessage",
            wire: "error",
            summary: "A one-off client mistake; the connection stays open",
            schema: error(),
        },
        Message {
            id: "Pong",
            wire: "pong",
            summary: "Reply to ping",
            schema: reply("pong", json!({"timestamp": timestamp()})),
        },
        Message {
            id: "Refreshed",
            wire: "refreshed",
            summary: "Reply to refresh: when the new token expires",
            schema: reply(
                "refreshed",
                json!({"action": {"const": "refreshed"}, "expires_at": timestamp()}),
            ),
        },
    ]
}

/// A client message of `properties` besides `action` and `id`.
fn request(action: &str, properties: Value, optional: &[&str]) -> Value {
    let mut all = json!({"action": {"const": action}, "id": request_id()});
    if let (Some(p), Value::Object(extra)) = (all.as_object_mut(), properties) {
        p.extend(extra);
    }
    let mut optional = optional.to_vec();
    optional.push("id");
    frame(all, &optional)
}

/// Every message a client may send.
pub(super) fn client_messages() -> Vec<Message> {
    let patterns = json!({"type": "array", "items": {"type": "string"}});
    vec![
        Message {
            id: "Subscribe",
            wire: "subscribe",
            summary: "Add patterns (`*`, `domain.*`, names, aliases), optionally recovering from positions",
            schema: request(
                "subscribe",
                json!({"events": patterns, "since": positions()}),
                &["since"],
            ),
        },
        Message {
            id: "Unsubscribe",
            wire: "unsubscribe",
            summary: "Remove patterns by exact text; without `events`, all of them",
            schema: request("unsubscribe", json!({"events": patterns}), &["events"]),
        },
        Message {
            id: "Ping",
            wire: "ping",
            summary: "Application-level ping, answered by pong",
            schema: request("ping", json!({}), &[]),
        },
        Message {
            id: "Refresh",
            wire: "refresh",
            summary: "Replace the connection's token before it expires",
            schema: request("refresh", json!({"token": {"type": "string"}}), &[]),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_names_its_wire_value() {
        for m in server_messages() {
            assert_eq!(m.schema["properties"]["type"]["const"], m.wire, "{}", m.id);
        }
        for m in client_messages() {
            assert_eq!(
                m.schema["properties"]["action"]["const"], m.wire,
                "{}",
                m.id
            );
            assert!(!m.schema["required"]
                .as_array()
                .unwrap()
                .contains(&json!("id")));
        }
    }

    /// The frames `crate::protocol` really builds, each checked against the
    /// schema published for its `type`: the schemas are written by hand,
    /// so this is what keeps them and the wire in step.
    #[test]
    fn real_frames_match_their_schemas() {
        use std::sync::Arc;

        use crate::protocol::{self, Established, Positions, Warning};

        let positions: Positions = [(Arc::from("alerts"), (Arc::from("E1"), 42))].into();
        let id = Some(json!("req-1"));
        let warning = Warning {
            pattern: "alert.craeted".into(),
            message: "matches no event type".into(),
            did_you_mean: Some("alert.created".into()),
        };
        let recovery = json!({"alerts": {"recovered": true, "replayed": 3},
                              "jobs": {"recovered": false, "reason": "epoch_changed"}});
        let frames = [
            protocol::established(&Established {
                connection_id: "c-1",
                endpoint: "/ws/events",
                heartbeat_interval_s: 30,
                user: Some("ops"),
                expires_at: Some(protocol::unix_timestamp(2_000_000_000)),
                channels: &positions,
            }),
            protocol::established(&Established {
                connection_id: "c-2",
                endpoint: "/ws/events",
                heartbeat_interval_s: 30,
                user: None,
                expires_at: None,
                channels: &Positions::new(),
            }),
            protocol::channels(&positions),
            protocol::lagged(7, &positions),
            protocol::closed(4008, "too slow"),
            protocol::subscribed(Some(&["alert.*".into()]), &[warning], Some(recovery), &id),
            protocol::subscribed(None, &[], None, &None),
            protocol::unsubscribed(Some(&[]), &id),
            protocol::refreshed(&protocol::unix_timestamp(2_000_000_000), &id),
            protocol::pong(&Some(json!(5))),
            protocol::error("invalid_json", "not JSON", &None),
            protocol::invalid_patterns(1, &[("a..b".into(), "empty segment".into())], &id),
        ];
        let messages = server_messages();
        for text in frames {
            let frame: Value = serde_json::from_str(&text).unwrap();
            let wire = frame["type"].as_str().unwrap();
            let message = messages
                .iter()
                .find(|m| m.wire == wire)
                .unwrap_or_else(|| panic!("no schema for {wire}"));
            let validator = jsonschema::validator_for(&message.schema).unwrap();
            let problems: Vec<String> = validator
                .iter_errors(&frame)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(problems.is_empty(), "{wire}: {problems:?}\n{text}");
        }
    }

    #[test]
    fn optional_properties_are_not_required() {
        let subscribed = subscribed();
        assert_eq!(
            subscribed["required"],
            json!(["action", "events", "type", "warnings"])
        );
        let unsubscribe = &client_messages()[1].schema;
        assert_eq!(unsubscribe["required"], json!(["action"]));
    }
}
