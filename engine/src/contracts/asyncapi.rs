//! The AsyncAPI 3.0 document of a configuration (docs/clients.md,
//! "Contracts"): one channel per endpoint, a message per event type it
//! carries and per protocol message, operations to receive them and to send
//! the client messages, every payload's JSON Schema under `components`.

use serde_json::{json, Map, Value};

use super::control::{self, Message};
use super::naming::identifiers;
use super::{describe, endpoint_types};
use crate::config::{Config, EndpointConfig};
use crate::registry::{EventType, Registry};

/// The AsyncAPI version written.
const ASYNCAPI_VERSION: &str = "3.0.0";
/// The key of the one server: this router.
const SERVER: &str = "router";

/// Where clients reach the router.
#[derive(Clone, Debug)]
pub struct Server<'a> {
    /// `host[:port]` as clients use it (the request's `Host`, or
    /// `server.listen`).
    pub host: &'a str,
    /// The configuration's version, written as `info.version`.
    pub config_version: u64,
}

/// The document of `config` and its `registry`.
pub fn document(config: &Config, registry: &Registry, server: &Server<'_>) -> Value {
    let ids = identifiers(registry);
    let event_messages: Vec<(String, &EventType)> = registry
        .routable()
        .map(|t| (ids[&t.name].clone(), &**t))
        .collect();
    let channel_ids = channel_ids(config);
    let mut channels = Map::new();
    let mut operations = Map::new();
    for (endpoint, key) in config.endpoints.iter().zip(&channel_ids) {
        let carried: Vec<String> = endpoint_types(registry, endpoint)
            .iter()
            .map(|t| ids[&t.name].clone())
            .collect();
        channels.insert(key.clone(), channel(endpoint, &carried));
        operations.extend(endpoint_operations(key, &carried));
    }
    let mut schemas = Map::new();
    let mut messages = Map::new();
    for (id, t) in &event_messages {
        let mut schema = t.schema.to_json_schema();
        // Components are AsyncAPI schemas (a JSON Schema draft 7 superset);
        // a 2020-12 dialect marker would contradict that.
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
        }
        hide_ref_property(&mut schema);
        schemas.insert(id.clone(), schema);
        messages.insert(id.clone(), event_message(id, t));
    }
    for m in control::server_messages()
        .into_iter()
        .chain(control::client_messages())
    {
        messages.insert(m.id.to_owned(), protocol_message(&m));
    }
    let protocol = if config.server.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Switchyard",
            "version": server.config_version.to_string(),
            "description": "The event types, endpoints and protocol messages of the configuration in force on this router; `info.version` is its config_version, which every applied reload increments.",
        },
        "defaultContentType": "application/json",
        "servers": {
            SERVER: {
                "host": server.host,
                "protocol": protocol,
                "description": "This router's WebSocket endpoints",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}

/// A key per endpoint: its path in `[A-Za-z0-9_-]`, made unique in file
/// order (`/ws/events` → `ws_events`).
fn channel_ids(config: &Config) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    config
        .endpoints
        .iter()
        .map(|ep| {
            let base: String = ep
                .path
                .trim_matches('/')
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let base = if base.is_empty() {
                "root".to_owned()
            } else {
                base
            };
            let mut key = base.clone();
            let mut n = 2;
            while !taken.insert(key.clone()) {
                key = format!("{base}_{n}");
                n += 1;
            }
            key
        })
        .collect()
}

/// Moves a payload field named `$ref` from `properties` to an anchored
/// `patternProperties`. To JSON Schema it is a property like any other, but
/// AsyncAPI tools resolve every `$ref` key as a reference (the official
/// parser fails on the whole document); the pattern declares the same field
/// without that key, and `required` still names it.
fn hide_ref_property(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let field = obj
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .and_then(|properties| properties.remove("$ref"));
    if let Some(field) = field {
        obj.insert("patternProperties".into(), json!({ "^\\$ref$": field }));
    }
}

fn message_ref(id: &str) -> Value {
    json!({"$ref": format!("#/components/messages/{id}")})
}

fn channel(endpoint: &EndpointConfig, carried: &[String]) -> Value {
    let mut messages = Map::new();
    let protocol_ids = control::server_messages()
        .into_iter()
        .chain(control::client_messages())
        .map(|m| m.id.to_owned());
    for id in carried.iter().cloned().chain(protocol_ids) {
        messages.insert(id.clone(), message_ref(&id));
    }
    let mut description = format!("Channels: {}.", endpoint.channels.join(", "));
    if !endpoint.description.is_empty() {
        description = format!("{}\n\n{description}", endpoint.description);
    }
    if endpoint.require_auth {
        description.push_str(" Connections must authenticate.");
    }
    json!({
        "address": endpoint.path,
        "description": description,
        "servers": [{"$ref": format!("#/servers/{SERVER}")}],
        "messages": messages,
    })
}

/// The endpoint's operations: receive everything the router sends, and
/// one `send` per client message.
fn endpoint_operations(key: &str, carried: &[String]) -> Map<String, Value> {
    let in_channel = |id: &str| json!({"$ref": format!("#/channels/{key}/messages/{id}")});
    let channel = json!({"$ref": format!("#/channels/{key}")});
    let received: Vec<Value> = carried
        .iter()
        .map(String::as_str)
        .chain(control::server_messages().iter().map(|m| m.id))
        .map(in_channel)
        .collect();
    let mut out = Map::new();
    out.insert(
        format!("{key}_receive"),
        json!({
            "action": "receive",
            "channel": channel,
            "summary": "Events of the endpoint's channels, and the router's replies and control messages",
            "messages": received,
        }),
    );
    for m in control::client_messages() {
        out.insert(
            format!("{key}_{}", m.wire),
            json!({
                "action": "send",
                "channel": channel,
                "summary": m.summary,
                "messages": [in_channel(m.id)],
            }),
        );
    }
    out
}

/// An event type's message: the envelope around its payload schema.
fn event_message(id: &str, t: &EventType) -> Value {
    let envelope = json!({
        "type": "object",
        "required": ["type", "payload", "timestamp", "channel", "sequence"],
        "properties": {
            "type": {"const": &*t.name},
            "payload": {"$ref": format!("#/components/schemas/{id}")},
            "timestamp": {"type": "string", "format": "date-time"},
            "channel": {"const": &*t.channel},
            "sequence": {"type": "integer", "minimum": 1},
            "correlation_id": {"type": "string"},
        },
    });
    let mut message = json!({
        "name": &*t.name,
        "title": &*t.name,
        "description": describe(t),
        "payload": envelope,
    });
    if !t.description.is_empty() {
        message["summary"] = json!(t.description);
    }
    if t.deprecated.is_some() {
        message["deprecated"] = json!(true);
    }
    message
}

fn protocol_message(m: &Message) -> Value {
    json!({
        "name": m.wire,
        "title": m.wire,
        "summary": m.summary,
        "payload": m.schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::fixture;

    fn doc() -> Value {
        let (config, registry) = fixture::base();
        document(
            &config,
            &registry,
            &Server {
                host: "localhost:8080",
                config_version: 7,
            },
        )
    }

    #[test]
    fn info_and_servers_describe_this_router() {
        let d = doc();
        assert_eq!(d["asyncapi"], "3.0.0");
        assert_eq!(d["info"]["version"], "7");
        assert_eq!(d["servers"]["router"]["host"], "localhost:8080");
        assert_eq!(d["servers"]["router"]["protocol"], "ws");
    }

    #[test]
    fn one_channel_per_endpoint_with_its_types_and_the_protocol() {
        let d = doc();
        let events = &d["channels"]["ws_events"];
        assert_eq!(events["address"], "/ws/events");
        let messages = events["messages"].as_object().unwrap();
        for id in [
            "AlertCreated",
            "AlertResolved",
            "JobProgress",
            "ConnectionLagged",
            "Subscribe",
        ] {
            assert!(messages.contains_key(id), "{id}");
        }
        let jobs = d["channels"]["ws_jobs"]["messages"].as_object().unwrap();
        assert!(!jobs.contains_key("AlertCreated"));
        assert_eq!(jobs.len(), 1 + 9 + 4);
    }

    #[test]
    fn operations_receive_events_and_send_client_messages() {
        let d = doc();
        let ops = d["operations"].as_object().unwrap();
        assert_eq!(ops["ws_jobs_receive"]["action"], "receive");
        assert_eq!(
            ops["ws_jobs_receive"]["messages"].as_array().unwrap().len(),
            1 + 9
        );
        for action in ["subscribe", "unsubscribe", "ping", "refresh"] {
            let op = &ops[&format!("ws_events_{action}")];
            assert_eq!(op["action"], "send", "{action}");
            assert_eq!(op["channel"]["$ref"], "#/channels/ws_events");
        }
        assert_eq!(
            ops["ws_events_ping"]["messages"][0]["$ref"],
            "#/channels/ws_events/messages/Ping"
        );
    }

    #[test]
    fn messages_wrap_payload_schemas_in_the_envelope() {
        let d = doc();
        let schema = &d["components"]["schemas"]["AlertCreated"];
        assert_eq!(schema["required"], json!(["id", "severity"]));
        assert!(schema.get("$schema").is_none());
        let message = &d["components"]["messages"]["AlertCreated"];
        assert_eq!(message["name"], "alert.created");
        assert_eq!(
            message["payload"]["properties"]["type"]["const"],
            "alert.created"
        );
        assert_eq!(
            message["payload"]["properties"]["payload"]["$ref"],
            "#/components/schemas/AlertCreated"
        );
    }

    #[test]
    fn aliases_and_deprecations_are_described() {
        let d = doc();
        let resolved = &d["components"]["messages"]["AlertResolved"];
        assert_eq!(resolved["deprecated"], true);
        assert!(resolved["description"]
            .as_str()
            .unwrap()
            .contains("use alert.updated"));
        let job = &d["components"]["messages"]["JobProgress"];
        assert!(job.get("deprecated").is_none());
        assert!(job["description"]
            .as_str()
            .unwrap()
            .contains("job_progress"));
    }

    #[test]
    fn a_tls_listener_is_served_as_wss() {
        let toml = format!(
            "[server]\ntls = {{ cert_file = \"cert.pem\", key_file = \"key.pem\" }}\n{}",
            fixture::TOML
        );
        let (config, registry) = fixture::load(&toml);
        let server = Server {
            host: "events.example:443",
            config_version: 1,
        };
        let d = document(&config, &registry, &server);
        assert_eq!(d["servers"]["router"]["protocol"], "wss");
    }

    #[test]
    fn a_field_named_ref_is_not_read_as_a_reference() {
        let toml = format!(
            "{}[[event_types]]\nname = \"doc.linked\"\nchannel = \"jobs\"\n\
             [event_types.payload]\n\"$ref\" = {{ type = \"string\", required = true }}\n",
            fixture::TOML
        );
        let (config, registry) = fixture::load(&toml);
        let server = Server {
            host: "localhost:8080",
            config_version: 1,
        };
        let d = document(&config, &registry, &server);
        // AsyncAPI tools resolve every `$ref` key; one whose value is not a
        // reference makes the official parser fail on the whole document.
        fn refs_are_references(v: &Value) -> bool {
            match v {
                Value::Object(o) => o
                    .iter()
                    .all(|(k, v)| (k != "$ref" || v.is_string()) && refs_are_references(v)),
                Value::Array(a) => a.iter().all(refs_are_references),
                _ => true,
            }
        }
        assert!(
            refs_are_references(&d),
            "{:#}",
            d["components"]["schemas"]["DocLinked"]
        );
        let schema = &d["components"]["schemas"]["DocLinked"];
        assert_eq!(schema["required"], json!(["$ref"]));
        assert_eq!(schema["patternProperties"]["^\\$ref$"]["type"], "string");
    }

    #[test]
    fn endpoint_paths_become_unique_keys() {
        let toml = fixture::TOML.replace("path = \"/ws/jobs\"", "path = \"/ws.events\"");
        let (config, _) = fixture::load(&toml);
        assert_eq!(channel_ids(&config), ["ws_events", "ws_events_2"]);
    }
}
