//! Event type declarations: what a plugin tells the router it will emit.
//!
//! The JSON form of [`EventTypeDecl`] is the same shape as an
//! `[[event_types]]` entry of the router's `config.toml`, so one reader
//! serves both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JSON type of one payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A number without a fractional part (`3` and `3.0` both qualify).
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// One payload field of an event type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The field's JSON type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether the field must be present and non-null.
    #[serde(default)]
    pub required: bool,
    /// The closed set of allowed values, when there is one.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// What the field means, for the capabilities API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Field {
    fn of(field_type: FieldType) -> Field {
        Field {
            field_type,
            required: false,
            allowed: None,
            description: None,
        }
    }
    /// An optional string field.
    pub fn string() -> Field {
        Field::of(FieldType::String)
    }
    /// An optional integer field.
    pub fn integer() -> Field {
        Field::of(FieldType::Integer)
    }
    /// An optional number field.
    pub fn number() -> Field {
        Field::of(FieldType::Number)
    }
    /// An optional boolean field.
    pub fn boolean() -> Field {
        Field::of(FieldType::Boolean)
    }
    /// An optional object field.
    pub fn object() -> Field {
        Field::of(FieldType::Object)
    }
    /// An optional array field.
    pub fn array() -> Field {
        Field::of(FieldType::Array)
    }
    /// Makes the field required.
    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }
    /// Restricts the field to these string values.
    pub fn one_of(mut self, values: &[&str]) -> Field {
        self.allowed = Some(values.iter().map(|v| Value::from(*v)).collect());
        self
    }
    /// Describes the field.
    pub fn describe(mut self, text: &str) -> Field {
        self.description = Some(text.to_owned());
        self
    }
}

/// One event type: its name, default channel and payload schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventTypeDecl {
    /// Canonical name, `{domain}.{action}`.
    pub name: String,
    /// The channel its events are stamped on (the config may override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// What the event means.
    #[serde(default)]
    pub description: String,
    /// The payload fields by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<BTreeMap<String, Field>>,
    /// Legacy names accepted when publishing and subscribing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// When set, the type is deprecated; the text names its replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
    /// Whether payload fields outside the schema are accepted.
    #[serde(default)]
    pub additional_fields: bool,
}

impl EventTypeDecl {
    /// A type with no payload fields yet.
    pub fn new(name: &str, channel: &str, description: &str) -> EventTypeDecl {
        EventTypeDecl {
            name: name.to_owned(),
            channel: Some(channel.to_owned()),
            description: description.to_owned(),
            payload: Some(BTreeMap::new()),
            aliases: Vec::new(),
            deprecated: None,
            additional_fields: false,
        }
    }
    /// Adds a payload field.
    pub fn field(mut self, name: &str, field: Field) -> EventTypeDecl {
        self.payload
            .get_or_insert_with(BTreeMap::new)
            .insert(name.to_owned(), field);
        self
    }
    /// Adds a legacy alias.
    pub fn alias(mut self, alias: &str) -> EventTypeDecl {
        self.aliases.push(alias.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_round_trip_through_json() {
        let decl = EventTypeDecl::new("alert.created", "alerts", "New alert")
            .field("id", Field::string().required())
            .field("severity", Field::string().one_of(&["low", "high"]))
            .alias("alert_created");
        let json = serde_json::to_string(&decl).unwrap();
        assert!(json.contains(r#""enum":["low","high"]"#), "{json}");
        let back: EventTypeDecl = serde_json::from_str(&json).unwrap();
        assert_eq!(back, decl);
    }

    #[test]
    fn unknown_field_keys_are_refused() {
        let err = serde_json::from_str::<Field>(r#"{"type":"string","requird":true}"#).unwrap_err();
        assert!(err.to_string().contains("requird"), "{err}");
    }
}
