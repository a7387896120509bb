//! The event registry: every type the router accepts, with its channel,
//! payload schema, producer and aliases.
//!
//! Types come from two places — the event types each plugin instance
//! declares, and `[[event_types]]` in the config — and are merged here, where
//! every conflict becomes a config [`Problem`] naming both sides.

pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_plugin_api::{EventTypeDecl, Field};

use crate::config::{ChannelConfig, Config, Problem};
use crate::names::{self, Pattern};
use schema::PayloadSchema;

/// The channel of the router-made control messages.
pub const CONTROL_CHANNEL: &str = "connection";
/// The router-made control messages: listed, never publishable or subscribable.
pub const CONTROL_TYPES: [(&str, &str); 4] = [
    (
        "connection.established",
        "Sent once when a connection opens: its id, endpoint and channel positions",
    ),
    (
        "connection.channels",
        "Sent when a connection starts receiving a channel, or a channel's epoch changes",
    ),
    (
        "connection.lagged",
        "Sent after events were dropped from a slow connection's queue, with recovery positions",
    ),
    (
        "connection.closed",
        "The last message of a Server-Sent Events stream: the close code and reason a WebSocket would get",
    ),
];

/// Who declared a type.
pub const CONFIG_PRODUCER: &str = "config";

/// One registered event type.
#[derive(Debug)]
pub struct EventType {
    /// Canonical name, `{domain}.{action}`.
    pub name: Arc<str>,
    /// The channel its events are stamped on.
    pub channel: Arc<str>,
    /// What the event means.
    pub description: String,
    /// The compiled payload validator.
    pub schema: PayloadSchema,
    /// The plugin instance that declared it, or `config`.
    pub producer: String,
    /// Legacy names that resolve to this type.
    pub aliases: Vec<String>,
    /// When set, the type is deprecated and this text names its replacement.
    pub deprecated: Option<String>,
}

impl EventType {
    /// Whether `pattern` selects this type. An exact pattern may name an
    /// alias: one held before a reload registered it still matches after.
    pub fn matched_by(&self, pattern: &Pattern) -> bool {
        match pattern {
            Pattern::Exact(n) => *n == *self.name || self.aliases.iter().any(|a| a == n),
            p => p.matches(&self.name),
        }
    }

    /// Whether this is a router-made control message.
    pub fn is_control(&self) -> bool {
        &*self.channel == CONTROL_CHANNEL
    }
}

/// One instance's declared types, as read from its plugin.
#[derive(Clone, Debug)]
pub struct InstanceTypes {
    /// The `[[plugins]]` index, for error keys.
    pub index: usize,
    /// The instance name (`[[plugins]].name`).
    pub instance: String,
    /// What it declares.
    pub types: Vec<EventTypeDecl>,
}

/// The merged registry of one configuration.
#[derive(Debug, Default)]
pub struct Registry {
    types: BTreeMap<Arc<str>, Arc<EventType>>,
    aliases: HashMap<String, Arc<EventType>>,
    channels: BTreeMap<Arc<str>, ChannelConfig>,
}

/// A registry and the warnings found while building it.
#[derive(Debug)]
pub struct Built {
    /// The registry.
    pub registry: Registry,
    /// Things worth an operator's attention that do not stop the config.
    pub warnings: Vec<String>,
}

fn problem(key: String, value: Option<Value>, why: String) -> Problem {
    Problem {
        key: Some(key),
        value,
        problem: why,
        line: None,
        column: None,
    }
}

impl Registry {
    /// Merges the config's types with the plugins' declarations.
    pub fn build(config: &Config, plugins: &[InstanceTypes]) -> Result<Built, Vec<Problem>> {
        Builder::new(config).build(plugins)
    }

    /// A type by canonical name or alias.
    pub fn resolve(&self, name_or_alias: &str) -> Option<&Arc<EventType>> {
        self.types
            .get(name_or_alias)
            .or_else(|| self.aliases.get(name_or_alias))
    }

    /// Every type, control messages included, by name.
    pub fn types(&self) -> impl Iterator<Item = &Arc<EventType>> {
        self.types.values()
    }

    /// The routable types (control messages excluded).
    pub fn routable(&self) -> impl Iterator<Item = &Arc<EventType>> {
        self.types.values().filter(|t| !t.is_control())
    }

    /// Every routable channel with its settings (declared or implicit).
    pub fn channels(&self) -> &BTreeMap<Arc<str>, ChannelConfig> {
        &self.channels
    }

    /// Every name and alias, for suggestions.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.types
            .keys()
            .map(|k| &**k)
            .chain(self.aliases.keys().map(String::as_str))
    }

    /// The closest registered name to `input`, if one is close.
    pub fn did_you_mean(&self, input: &str) -> Option<String> {
        names::did_you_mean(input, self.routable().map(|t| &*t.name)).map(str::to_owned)
    }

    /// The capabilities entry of one type.
    pub fn describe(&self, t: &EventType) -> Value {
        let fields: BTreeMap<&String, Value> = t
            .schema
            .fields()
            .iter()
            .map(|(name, f)| (name, field_summary(f)))
            .collect();
        json!({
            "description": t.description,
            "channel": &*t.channel,
            "payload_fields": fields,
            "payload_schema": t.schema.to_json_schema(),
            "producer": t.producer,
            "aliases": t.aliases,
            "deprecated": t.deprecated,
        })
    }
}

fn field_summary(f: &Field) -> Value {
    json!({
        "type": f.field_type,
        "required": f.required,
        "enum": f.allowed,
        "description": f.description,
    })
}

/// A type on its way into the registry, remembering where it came from.
struct Pending {
    decl: EventTypeDecl,
    producer: String,
    key: String,
}

struct Builder<'a> {
    config: &'a Config,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    pending: BTreeMap<String, Pending>,
}

impl<'a> Builder<'a> {
    fn new(config: &'a Config) -> Self {
        Builder {
            config,
            problems: Vec::new(),
            warnings: Vec::new(),
            pending: BTreeMap::new(),
        }
    }

    fn build(mut self, plugins: &[InstanceTypes]) -> Result<Built, Vec<Problem>> {
        for instance in plugins {
            for (j, decl) in instance.types.iter().enumerate() {
                let key = format!("plugins[{}].event_types[{j}]", instance.index);
                self.add_plugin_type(decl, &instance.instance, key);
            }
        }
        self.apply_config_types();
        let registry = self.assemble();
        self.check_endpoints(&registry);
        if self.problems.is_empty() {
            Ok(Built {
                registry,
                warnings: self.warnings,
            })
        } else {
            Err(self.problems)
        }
    }

    fn add_plugin_type(&mut self, decl: &EventTypeDecl, instance: &str, key: String) {
        if !self.check_decl(decl, &key) {
            return;
        }
        if let Some(existing) = self.pending.get(&decl.name) {
            self.problems.push(problem(
                format!("{key}.name"),
                Some(json!(decl.name)),
                format!(
                    "event type `{}` is declared twice: by `{instance}` and by `{}` ({})",
                    decl.name, existing.producer, existing.key
                ),
            ));
            return;
        }
        self.pending.insert(
            decl.name.clone(),
            Pending {
                decl: decl.clone(),
                producer: instance.to_owned(),
                key,
            },
        );
    }

    /// Grammar and schema checks shared by plugin and config declarations.
    fn check_decl(&mut self, decl: &EventTypeDecl, key: &str) -> bool {
        let mut ok = true;
        if !names::is_type_name(&decl.name) {
            self.problems.push(problem(
                format!("{key}.name"),
                Some(json!(decl.name)),
                "an event type name is `domain.action`: two segments of a-z, 0-9 and _, each starting with a letter, at most 64 bytes".into(),
            ));
            ok = false;
        } else if names::domain_of(&decl.name) == CONTROL_CHANNEL {
            self.problems.push(problem(
                format!("{key}.name"),
                Some(json!(decl.name)),
                "the `connection` domain is reserved for the router's control messages".into(),
            ));
            ok = false;
        }
        if let Some(channel) = &decl.channel {
            if channel == CONTROL_CHANNEL || !names::is_channel_name(channel) {
                self.problems.push(problem(
                    format!("{key}.channel"),
                    Some(json!(channel)),
                    "not a usable channel name (a-z, 0-9, _ and -, starting with a letter; `connection` is reserved)".into(),
                ));
                ok = false;
            }
        }
        if let Some(payload) = &decl.payload {
            for why in switchyard_plugin_api::payload::check_declaration(payload) {
                self.problems
                    .push(problem(format!("{key}.payload"), None, why));
                ok = false;
            }
        }
        ok
    }

    fn apply_config_types(&mut self) {
        let declared = self.config.event_types.clone();
        for (i, decl) in declared.iter().enumerate() {
            let key = format!("event_types[{i}]");
            if decl.payload.is_some() {
                if !self.check_decl(decl, &key) {
                    continue;
                }
                if let Some(existing) = self.pending.get(&decl.name) {
                    self.problems.push(problem(
                        format!("{key}.name"),
                        Some(json!(decl.name)),
                        format!(
                            "event type `{}` is declared twice: with a payload here and by `{}` ({}); drop `payload` here to override only its channel, description, aliases or deprecation",
                            decl.name, existing.producer, existing.key
                        ),
                    ));
                    continue;
                }
                self.pending.insert(
                    decl.name.clone(),
                    Pending {
                        decl: decl.clone(),
                        producer: CONFIG_PRODUCER.into(),
                        key,
                    },
                );
            } else if let Some(target) = self.pending.get_mut(&decl.name) {
                override_decl(&mut target.decl, decl);
            } else {
                self.warnings.push(format!(
                    "{key}: `{}` has no `payload` and no enabled plugin declares it, so it registers nothing",
                    decl.name
                ));
            }
        }
    }

    fn assemble(&mut self) -> Registry {
        let mut registry = Registry::default();
        for ch in &self.config.channels {
            registry
                .channels
                .insert(ch.name.as_str().into(), ch.clone());
        }
        let pending = std::mem::take(&mut self.pending);
        for (name, p) in pending {
            let Some(channel) = p.decl.channel.clone() else {
                self.problems.push(problem(
                    format!("{}.channel", p.key),
                    None,
                    format!("event type `{name}` needs a channel"),
                ));
                continue;
            };
            if !registry.channels.contains_key(channel.as_str()) {
                self.warnings.push(format!(
                    "channel `{channel}` (named by event type `{name}`) is not declared under [[channels]]; it was created with the default settings"
                ));
                registry.channels.insert(
                    channel.as_str().into(),
                    ChannelConfig::with_defaults(&channel),
                );
            }
            let t = Arc::new(EventType {
                name: name.as_str().into(),
                channel: channel.as_str().into(),
                description: p.decl.description.clone(),
                schema: PayloadSchema::new(
                    p.decl.payload.clone().unwrap_or_default(),
                    p.decl.additional_fields,
                ),
                producer: p.producer.clone(),
                aliases: p.decl.aliases.clone(),
                deprecated: p.decl.deprecated.clone(),
            });
            self.register_aliases(&registry, &t, &p.key);
            for alias in &t.aliases {
                registry.aliases.insert(alias.clone(), t.clone());
            }
            registry.types.insert(t.name.clone(), t);
        }
        for (name, description) in CONTROL_TYPES {
            registry.types.insert(
                name.into(),
                Arc::new(EventType {
                    name: name.into(),
                    channel: CONTROL_CHANNEL.into(),
                    description: description.into(),
                    schema: PayloadSchema::new(BTreeMap::new(), true),
                    producer: "router".into(),
                    aliases: Vec::new(),
                    deprecated: None,
                }),
            );
        }
        self.check_alias_vs_names(&registry);
        registry
    }

    fn register_aliases(&mut self, registry: &Registry, t: &EventType, key: &str) {
        for alias in &t.aliases {
            if !names::is_alias(alias) {
                self.problems.push(problem(
                    format!("{key}.aliases"),
                    Some(json!(alias)),
                    "an alias is a-z, 0-9, _ and . (at most 64 bytes) and not of the `domain.action` form".into(),
                ));
            } else if let Some(other) = registry.aliases.get(alias) {
                self.problems.push(problem(
                    format!("{key}.aliases"),
                    Some(json!(alias)),
                    format!(
                        "alias `{alias}` of `{}` is already an alias of `{}`",
                        t.name, other.name
                    ),
                ));
            }
        }
    }

    fn check_alias_vs_names(&mut self, registry: &Registry) {
        for (alias, t) in &registry.aliases {
            if registry.types.contains_key(alias.as_str()) {
                self.problems.push(problem(
                    "event_types".into(),
                    Some(json!(alias)),
                    format!(
                        "alias `{alias}` of `{}` is the name of another event type",
                        t.name
                    ),
                ));
            }
        }
    }

    fn check_endpoints(&mut self, registry: &Registry) {
        let mut carried = std::collections::HashSet::new();
        for (i, ep) in self.config.endpoints.iter().enumerate() {
            for (j, ch) in ep.channels.iter().enumerate() {
                carried.insert(ch.as_str());
                if !registry.channels.contains_key(ch.as_str()) {
                    let known: Vec<&str> = registry.channels.keys().map(|c| &**c).collect();
                    let hint = names::did_you_mean(ch, known.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.problems.push(problem(
                        format!("endpoints[{i}].channels[{j}]"),
                        Some(json!(ch)),
                        format!("no channel `{ch}` is declared or created by an event type{hint}"),
                    ));
                }
            }
        }
        for t in registry.routable() {
            if !carried.contains(&*t.channel) {
                self.warnings.push(format!(
                    "event type `{}` is on channel `{}`, which no endpoint carries: its events reach only sinks",
                    t.name, t.channel
                ));
            }
        }
    }
}

/// A config entry without `payload` overrides what an operator may change.
fn override_decl(target: &mut EventTypeDecl, by: &EventTypeDecl) {
    if by.channel.is_some() {
        target.channel = by.channel.clone();
    }
    if !by.description.is_empty() {
        target.description = by.description.clone();
    }
    if !by.aliases.is_empty() {
        target.aliases = by.aliases.clone();
    }
    if by.deprecated.is_some() {
        target.deprecated = by.deprecated.clone();
    }
}
