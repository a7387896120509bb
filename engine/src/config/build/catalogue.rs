//! `[[channels]]`, `[[endpoints]]` and `[[event_types]]`: what can be
//! published and where it goes.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use switchyard_plugin_api::payload::check_declaration;
use switchyard_plugin_api::{EventTypeDecl, Field, FieldType};

use crate::config::model::*;
use crate::config::read::{Reader, Tab};
use crate::names::{is_alias, is_channel_name, is_type_name};

/// The channel, and type domain, that the router keeps for its control
/// messages.
const CONTROL: &str = "connection";

/// Paths the HTTP API answers; an endpoint there would never be reached.
const RESERVED_PATHS: [&str; 3] = ["/health", "/metrics", "/api"];

/// Checks one channel name (declared, or listed by an endpoint or a type).
fn check_channel_name(r: &mut Reader<'_>, key: &str, name: &str) -> bool {
    let why = if name == CONTROL {
        "is reserved for the router's control messages"
    } else if !is_channel_name(name) {
        "is not a valid channel name: a lower-case letter, then lower-case letters, \
         digits, _ or -, at most 64 bytes"
    } else {
        return true;
    };
    r.problem(key, Some(&Value::from(name)), why);
    false
}

pub(super) fn channels(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    auth: &AuthConfig,
    warnings: &mut Vec<String>,
) -> Vec<ChannelConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "channels") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        if !name.is_empty() && check_channel_name(r, &t.key("name"), &name) {
            unique(r, &mut first, &t.key("name"), &name, t.path(), "channel");
        }
        let description = r.string_or(&mut t, "description", "");
        let history = r.size(&mut t, "history", ChannelConfig::DEFAULT_HISTORY, 0);
        let history_ttl_s = r.uint(
            &mut t,
            "history_ttl_s",
            ChannelConfig::DEFAULT_HISTORY_TTL_S,
            0,
            u64::MAX,
        );
        let history_max_bytes = r.size(
            &mut t,
            "history_max_bytes",
            ChannelConfig::DEFAULT_HISTORY_MAX_BYTES,
            1,
        );
        let slow_consumer = r.choice(
            &mut t,
            "slow_consumer",
            SlowConsumer::DropOldest,
            &[
                ("drop_oldest", SlowConsumer::DropOldest),
                ("disconnect", SlowConsumer::Disconnect),
            ],
        );
        let require_auth = r.boolean(&mut t, "require_auth", false);
        if require_auth && auth.mode == AuthMode::None {
            warnings.push(format!(
                "{} ({name}): require_auth has no effect while auth.mode = \"none\"",
                t.path()
            ));
        }
        r.finish(t);
        out.push(ChannelConfig {
            name,
            description,
            history,
            history_ttl_s,
            history_max_bytes,
            slow_consumer,
            require_auth,
        });
    }
    out
}

/// Records `name` as first declared at `path`, or reports the repeat.
pub(super) fn unique(
    r: &mut Reader<'_>,
    first: &mut BTreeMap<String, String>,
    key: &str,
    name: &str,
    path: &str,
    what: &str,
) {
    match first.get(name) {
        Some(earlier) => {
            let text = format!("{what} {name} is declared twice; {earlier} declares it already");
            r.problem(key, Some(&Value::from(name)), text);
        }
        None => {
            first.insert(name.to_owned(), path.to_owned());
        }
    }
}

pub(super) fn endpoints(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    auth: &AuthConfig,
    warnings: &mut Vec<String>,
) -> Vec<EndpointConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "endpoints") {
        let path = r.required(&mut t, "path").unwrap_or_default();
        let key = t.key("path");
        if !path.is_empty() {
            if let Some(why) = bad_endpoint_path(&path) {
                r.problem(&key, Some(&Value::from(path.as_str())), why);
            } else {
                unique(r, &mut first, &key, &path, t.path(), "endpoint");
            }
        }
        let description = r.string_or(&mut t, "description", "");
        let listed = r.raw(&mut t, "channels");
        let mut channels: Vec<String> = Vec::new();
        for (entry_key, name) in r.strings(&mut t, "channels") {
            if !check_channel_name(r, &entry_key, &name) {
                continue;
            }
            if channels.contains(&name) {
                let text = "is listed twice in this endpoint";
                r.problem(&entry_key, Some(&Value::from(name.as_str())), text);
                continue;
            }
            channels.push(name);
        }
        match listed {
            None if t.is_table() => r.problem(
                &t.key("channels"),
                None,
                "is required: the channels it carries",
            ),
            Some(Value::Array(items)) if items.is_empty() => r.problem(
                &t.key("channels"),
                Some(&json!([])),
                "must list at least one channel",
            ),
            _ => {}
        }
        let require_auth = r.boolean(&mut t, "require_auth", false);
        if require_auth && auth.mode == AuthMode::None {
            warnings.push(format!(
                "{} ({path}): require_auth has no effect while auth.mode = \"none\"",
                t.path()
            ));
        }
        r.finish(t);
        out.push(EndpointConfig {
            path,
            description,
            channels,
            require_auth,
        });
    }
    out
}

/// Why `path` cannot be a WebSocket endpoint, if it cannot.
fn bad_endpoint_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must start with /, such as /ws/events".to_owned());
    }
    if path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Some("must be a plain URL path: no spaces, ? or #".to_owned());
    }
    RESERVED_PATHS
        .iter()
        .find(|reserved| {
            path == **reserved
                || path
                    .strip_prefix(**reserved)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|reserved| format!("is inside {reserved}, which the HTTP API answers"))
}

const FIELD_TYPES: [(&str, FieldType); 6] = [
    ("string", FieldType::String),
    ("integer", FieldType::Integer),
    ("number", FieldType::Number),
    ("boolean", FieldType::Boolean),
    ("object", FieldType::Object),
    ("array", FieldType::Array),
];

pub(super) fn event_types(r: &mut Reader<'_>, top: &mut Tab<'_>) -> Vec<EventTypeConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    // (key, alias, declaring type), checked once every entry is read so a
    // conflict with a later entry is found too.
    let mut aliases: Vec<(String, String, String)> = Vec::new();
    for mut t in r.tables(top, "event_types") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        let name_key = t.key("name");
        if !name.is_empty() {
            if name.split('.').next() == Some(CONTROL) {
                r.problem(
                    &name_key,
                    Some(&Value::from(name.as_str())),
                    "the connection domain is reserved for the router's control messages",
                );
            } else if !is_type_name(&name) {
                r.problem(
                    &name_key,
                    Some(&Value::from(name.as_str())),
                    "must be {domain}.{action}: two segments of a-z, 0-9 and _, each \
                     starting with a letter, at most 64 bytes (e.g. alert.created)",
                );
            } else {
                unique(r, &mut first, &name_key, &name, t.path(), "event type");
            }
        }
        let channel = r.string(&mut t, "channel");
        if let Some(channel) = &channel {
            check_channel_name(r, &t.key("channel"), channel);
        }
        let description = r.string_or(&mut t, "description", "");
        let payload = r
            .raw(&mut t, "payload")
            .map(|value| payload(r, t.key("payload"), value));
        if payload.is_some() && channel.is_none() {
            r.problem(
                &t.key("channel"),
                None,
                "is required for a type that declares a payload (only a type without \
                 payload may leave it to the plugin that declares it)",
            );
        }
        let alias_list: Vec<String> = r
            .strings(&mut t, "aliases")
            .into_iter()
            .filter_map(|(key, alias)| {
                if !is_alias(&alias) || alias.starts_with("connection.") {
                    let why = if is_type_name(&alias) {
                        "is in the type name form {domain}.{action}; an alias must not be"
                    } else {
                        "must be a-z, 0-9, _ and . only, at most 64 bytes, and not in \
                         the connection domain"
                    };
                    r.problem(&key, Some(&Value::from(alias.as_str())), why);
                    return None;
                }
                aliases.push((key, alias.clone(), name.clone()));
                Some(alias)
            })
            .collect();
        let deprecated = r.string(&mut t, "deprecated");
        if deprecated.as_deref() == Some("") {
            r.problem(
                &t.key("deprecated"),
                Some(&Value::from("")),
                "must name the replacement, or be left out",
            );
        }
        let additional_fields = r.boolean(&mut t, "additional_fields", false);
        r.finish(t);
        out.push(EventTypeDecl {
            name,
            channel,
            description,
            payload,
            aliases: alias_list,
            deprecated,
            additional_fields,
        });
    }
    // Type names cannot collide with aliases (is_alias excludes the type
    // name form), so only aliases among themselves can.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, alias, owner) in &aliases {
        match seen.get(alias.as_str()) {
            Some(other) => {
                let text = if other == owner {
                    "is listed twice".to_owned()
                } else {
                    format!("is already an alias of {other}")
                };
                r.problem(key, Some(&Value::from(alias.as_str())), text);
            }
            None => {
                seen.insert(alias, owner);
            }
        }
    }
    out
}

/// One type's `payload` table: field name → declaration.
fn payload(r: &mut Reader<'_>, path: String, value: &Value) -> BTreeMap<String, Field> {
    let Value::Object(fields) = value else {
        r.problem(
            &path,
            Some(value),
            "must be a table of fields, such as { id = { type = \"string\", required = true } }",
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, spec) in fields {
        let mut f = r.table_value(format!("{path}.{name}"), Some(spec));
        let declared_type = r.raw(&mut f, "type").is_some();
        let field_type = r.choice(&mut f, "type", FieldType::String, &FIELD_TYPES);
        if !declared_type && spec.is_object() {
            let names: Vec<&str> = FIELD_TYPES.iter().map(|(n, _)| *n).collect();
            let text = format!("is required: one of {}", names.join(", "));
            r.problem(&f.key("type"), None, text);
        }
        let required = r.boolean(&mut f, "required", false);
        let allowed = match r.raw(&mut f, "enum") {
            None => None,
            Some(Value::Array(values)) => Some(values.clone()),
            Some(other) => {
                r.problem(
                    &f.key("enum"),
                    Some(other),
                    "must be a list of allowed values",
                );
                None
            }
        };
        let description = r.string(&mut f, "description");
        r.finish(f);
        out.insert(
            name.clone(),
            Field {
                field_type,
                required,
                allowed,
                description,
            },
        );
    }
    for why in check_declaration(&out) {
        r.problem(&path, None, why);
    }
    out
}
