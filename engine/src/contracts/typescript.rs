//! TypeScript declarations of a configuration (docs/clients.md,
//! "Contracts"): an interface per payload, `EventMap` from every type name
//! to its payload, the envelope, the protocol's own messages, and the type
//! names per endpoint and per channel. The text compiles with
//! `tsc --strict` (checked by `core/tests/it/contracts.rs`).

use std::fmt::Write as _;

use serde_json::Value;
use switchyard_plugin_api::{Field, FieldType};

use super::control::{ERROR_CODES, RECOVERY_FAILURES};
use super::naming::identifiers;
use super::{channel_types, describe, endpoint_types};
use crate::config::Config;
use crate::registry::{EventType, Registry};

/// The envelope and the protocol's messages: fixed by the protocol, not
/// the configuration (the shapes `crate::protocol` builds).
const PROTOCOL: &str = r#"/** Every routable event type's name. */
export type EventName = keyof EventMap;

/** An event as delivered: one JSON text frame. */
export interface Envelope<K extends keyof EventMap> {
  type: K;
  payload: EventMap[K];
  /** RFC 3339 UTC with milliseconds, set when the router accepted it. */
  timestamp: string;
  channel: string;
  /** Per channel and epoch: 1, 2, 3, … with no gap. */
  sequence: number;
  correlation_id?: string;
}

/** Any event, discriminated by `type`. */
export type AnyEnvelope = { [K in EventName]: Envelope<K> }[EventName];

/** Where a client is in a channel, or where to recover from. */
export interface Position {
  epoch: string;
  sequence: number;
}

/** Positions by channel. */
export type Positions = { [channel: string]: Position };

/** A request's `id`, echoed by its reply. */
export type RequestId = string | number;

/** Sent once when a connection opens. */
export interface ConnectionEstablished {
  type: "connection.established";
  payload: {
    connection_id: string;
    endpoint: string;
    protocol_version: number;
    heartbeat_interval_s: number;
    user: string | null;
    expires_at: string | null;
    channels: Positions;
  };
  timestamp: string;
}

/** Sent when a connection starts receiving a channel, or a channel's epoch changes. */
export interface ConnectionChannels {
  type: "connection.channels";
  payload: { channels: Positions };
  timestamp: string;
}

/** Sent after events were dropped; `since` = these positions recovers them. */
export interface ConnectionLagged {
  type: "connection.lagged";
  payload: { dropped: number; channels: Positions };
  timestamp: string;
}

/** The last message of a Server-Sent Events stream: the close a WebSocket would get. */
export interface ConnectionClosed {
  type: "connection.closed";
  payload: { code: number; reason: string };
  timestamp: string;
}

/** A router-made control message. */
export type ControlMessage =
  | ConnectionEstablished
  | ConnectionChannels
  | ConnectionLagged
  | ConnectionClosed;

/** A warning about one subscribed pattern. */
export interface SubscribeWarning {
  pattern: string;
  message: string;
  did_you_mean?: string;
}

/** How one channel named in `since` was recovered. */
export type Recovery =
  | { recovered: true; replayed: number }
  | { recovered: false; reason: RECOVERY_FAILURES };

/** Reply to subscribe: every pattern held (`null`: receives all). */
export interface Subscribed {
  type: "subscribed";
  action: "subscribed";
  events: string[] | null;
  warnings: SubscribeWarning[];
  recovery?: { [channel: string]: Recovery };
  id?: RequestId;
}

/** Reply to unsubscribe: the patterns still held. */
export interface Unsubscribed {
  type: "unsubscribed";
  action: "unsubscribed";
  events: string[] | null;
  id?: RequestId;
}

/** Reply to ping. */
export interface Pong {
  type: "pong";
  timestamp: string;
  id?: RequestId;
}

/** Reply to refresh. */
export interface Refreshed {
  type: "refreshed";
  action: "refreshed";
  expires_at: string;
  id?: RequestId;
}

/** What an `error` message reports. */
export type ErrorCode = ERROR_CODES;

/** A one-off client mistake; the connection stays open. */
export interface ErrorMessage {
  type: "error";
  payload: { code: ErrorCode; message: string; patterns?: string[]; refused?: number };
  id?: RequestId;
}

/** Everything the router sends on a connection. */
export type ServerMessage =
  | AnyEnvelope
  | ControlMessage
  | Subscribed
  | Unsubscribed
  | Pong
  | Refreshed
  | ErrorMessage;

/** Add patterns (`*`, `domain.*`, names, aliases), optionally recovering. */
export interface Subscribe {
  action: "subscribe";
  events: string[];
  since?: Positions;
  id?: RequestId;
}

/** Remove patterns by exact text; without `events`, all of them. */
export interface Unsubscribe {
  action: "unsubscribe";
  events?: string[];
  id?: RequestId;
}

/** Application-level ping. */
export interface Ping {
  action: "ping";
  id?: RequestId;
}

/** Replace the connection's token. */
export interface Refresh {
  action: "refresh";
  token: string;
  id?: RequestId;
}

/** Everything a client may send. */
export type ClientMessage = Subscribe | Unsubscribe | Ping | Refresh;
"#;

/// The declarations of `config` and its `registry`.
pub fn declarations(config: &Config, registry: &Registry) -> String {
    let ids = identifiers(registry);
    let mut out = String::from(
        "// Generated by Switchyard from its event registry; do not edit.\n\
         // Regenerate with `switchyard codegen typescript` or GET /api/websocket/types.ts.\n\n",
    );
    for t in registry.routable() {
        payload_interface(&mut out, &ids[&t.name], t);
    }
    out.push_str(
        "/** Every routable event type's payload, by name. */\nexport interface EventMap {\n",
    );
    for t in registry.routable() {
        let _ = writeln!(out, "  {}: {};", quote(&t.name), ids[&t.name]);
    }
    out.push_str("}\n\n");
    out.push_str(
        &PROTOCOL
            .replace(
                "RECOVERY_FAILURES",
                &union(RECOVERY_FAILURES.iter().copied()),
            )
            .replace("ERROR_CODES", &union(ERROR_CODES.iter().copied())),
    );
    out.push_str(
        "\n/** The event names each endpoint carries. */\nexport type EndpointEvents = {\n",
    );
    for ep in &config.endpoints {
        let names = endpoint_types(registry, ep).into_iter().map(|t| &*t.name);
        let _ = writeln!(out, "  {}: {};", quote(&ep.path), union(names));
    }
    out.push_str("};\n\n/** The event names of each channel. */\nexport type ChannelEvents = {\n");
    for channel in registry.channels().keys() {
        let names = channel_types(registry, channel)
            .into_iter()
            .map(|t| &*t.name);
        let _ = writeln!(out, "  {}: {};", quote(channel), union(names));
    }
    out.push_str(
        "};\n\n/** Every endpoint path. */\nexport type Endpoint = keyof EndpointEvents;\n",
    );
    out.push_str("\n/** Every channel. */\nexport type Channel = keyof ChannelEvents;\n");
    out
}

/// A string literal: JSON's quoting is TypeScript's.
fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// A union of string literals; `never` when empty.
fn union<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let literals: Vec<String> = names.map(quote).collect();
    if literals.is_empty() {
        "never".into()
    } else {
        literals.join(" | ")
    }
}

/// A `/** … */` comment; `*/` inside would end it early.
fn doc_comment(out: &mut String, indent: &str, text: &str) {
    let _ = writeln!(out, "{indent}/**");
    for line in text.replace("*/", "*\\/").lines() {
        let _ = writeln!(
            out,
            "{indent} *{}{line}",
            if line.is_empty() { "" } else { " " }
        );
    }
    let _ = writeln!(out, "{indent} */");
}

fn payload_interface(out: &mut String, id: &str, t: &EventType) {
    let mut doc = format!("`{}`: {}", t.name, describe(t));
    if let Some(replacement) = &t.deprecated {
        let _ = write!(doc, "\n@deprecated {replacement}");
    }
    doc_comment(out, "", &doc);
    let _ = writeln!(out, "export interface {id} {{");
    for (name, field) in t.schema.fields() {
        if let Some(description) = &field.description {
            doc_comment(out, "  ", description);
        }
        let key = if is_identifier(name) {
            name.clone()
        } else {
            quote(name)
        };
        if field.required {
            let _ = writeln!(out, "  {key}: {};", field_type(field));
        } else {
            let _ = writeln!(out, "  {key}?: {} | null;", field_type(field));
        }
    }
    if t.schema.additional_fields() {
        out.push_str(
            "  /** Fields beyond those declared are accepted. */\n  [field: string]: unknown;\n",
        );
    }
    out.push_str("}\n\n");
}

/// Whether `name` may be written as a property name unquoted.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A field's TypeScript type: its enum as a union of literals, or its JSON
/// type (objects and arrays have no declared contents).
fn field_type(field: &Field) -> String {
    if let Some(allowed) = &field.allowed {
        let literals: Vec<String> = allowed
            .iter()
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .collect();
        if !literals.is_empty() {
            return literals.join(" | ");
        }
    }
    match field.field_type {
        FieldType::String => "string",
        FieldType::Integer | FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::Object => "{ [key: string]: unknown }",
        FieldType::Array => "unknown[]",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::fixture;

    fn text() -> String {
        let (config, registry) = fixture::base();
        declarations(&config, &registry)
    }

    #[test]
    fn payloads_become_interfaces() {
        let ts = text();
        assert!(ts.contains(
            "export interface AlertCreated {\n  count?: number | null;\n  /**\n   * Alert id\n   */\n  id: string;\n  severity: \"low\" | \"high\";\n  tags?: unknown[] | null;\n}\n"
        ), "{ts}");
        assert!(
            ts.contains("  \"job-id\": string;\n  meta?: { [key: string]: unknown } | null;\n"),
            "{ts}"
        );
    }

    #[test]
    fn open_schemas_get_an_index_signature_and_deprecations_a_tag() {
        let ts = text();
        let resolved = ts.split("export interface AlertResolved {").nth(1).unwrap();
        let resolved = resolved.split("}\n").next().unwrap();
        assert!(resolved.contains("[field: string]: unknown;"), "{resolved}");
        assert!(
            ts.contains(" * @deprecated use alert.updated\n */\nexport interface AlertResolved"),
            "{ts}"
        );
    }

    #[test]
    fn maps_list_every_type_endpoint_and_channel() {
        let ts = text();
        assert!(ts.contains(
            "export interface EventMap {\n  \"alert.created\": AlertCreated;\n  \"alert.resolved\": AlertResolved;\n  \"job.progress\": JobProgress;\n}"
        ), "{ts}");
        assert!(ts.contains("  \"/ws/jobs\": \"job.progress\";\n"), "{ts}");
        assert!(
            ts.contains("  \"alerts\": \"alert.created\" | \"alert.resolved\";\n"),
            "{ts}"
        );
        assert!(
            ts.contains("export type ErrorCode = \"invalid_json\" | "),
            "{ts}"
        );
        assert!(!ts.contains("RECOVERY_FAILURES"), "{ts}");
    }

    #[test]
    fn enums_of_numbers_stay_numbers_and_empty_unions_are_never() {
        let mut level = Field::integer();
        level.allowed = Some(vec![
            serde_json::json!(1),
            serde_json::json!(2),
            Value::Null,
        ]);
        assert_eq!(field_type(&level), "1 | 2");
        assert_eq!(union(std::iter::empty()), "never");
    }

    #[test]
    fn every_identifier_the_protocol_declares_is_reserved() {
        use crate::contracts::naming::{RESERVED, RESERVED_CLIENT};
        let text = text();
        let declared = text.lines().filter_map(|line| {
            let rest = line
                .strip_prefix("export interface ")
                .or_else(|| line.strip_prefix("export type "))?;
            rest.split([' ', '<']).next()
        });
        let generated = ["AlertCreated", "AlertResolved", "JobProgress"];
        for id in declared.filter(|id| !generated.contains(id)) {
            assert!(
                RESERVED.contains(&id) || RESERVED_CLIENT.contains(&id),
                "`{id}` is declared but an event type may take it"
            );
        }
    }

    #[test]
    fn comments_cannot_be_closed_early() {
        let mut out = String::new();
        doc_comment(&mut out, "", "a */ b");
        assert_eq!(out, "/**\n * a *\\/ b\n */\n");
    }
}
