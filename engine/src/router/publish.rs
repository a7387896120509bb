//! The door every event passes: shape, registry, schema and size checks,
//! all or nothing for a batch.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::envelope::{self, Prepared};
use super::Snapshot;
use crate::names;
use crate::registry::schema::Problem;
use crate::registry::CONTROL_CHANNEL;

/// Longest `idempotency_key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// One event offered to the router.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Type name or alias.
    pub type_name: String,
    /// The payload (a JSON object).
    pub payload: Value,
    /// Correlation id to carry through, if any.
    pub correlation_id: Option<String>,
    /// Deduplication key, if any.
    pub idempotency_key: Option<String>,
}

/// Who offers events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `POST /api/events`: any registered type.
    Http,
    /// A plugin instance: only the types it declared.
    Plugin(String),
}

/// Where a published event was stamped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stamp {
    /// Its channel.
    pub channel: Arc<str>,
    /// Its sequence there.
    pub sequence: u64,
    /// The channel's epoch it was stamped under: with the sequence, a
    /// position a publisher can recover from.
    pub epoch: Arc<str>,
}

/// One problem with one event of a batch, as the 422 body lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldReport {
    /// Position in the array (0 for a single event).
    pub index: usize,
    /// The payload field (or `type`, `idempotency_key`).
    pub field: String,
    /// `missing`, `wrong_type`, `not_in_enum`, `unknown` or `unknown_type`.
    pub problem: &'static str,
    /// Allowed values, expected type, or a suggestion.
    pub expected: Value,
}

/// Why events were refused. Nothing of the batch was published, except
/// with [`PublishError::Unavailable`], which names what was.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An event is not an object with a string `type` and object `payload`.
    #[error("event {index}: {message}")]
    Malformed {
        /// Position in the array.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A type that is not registered (or not declared by this plugin).
    #[error("unknown event type `{name}`")]
    UnknownType {
        /// The name as given.
        name: String,
        /// A close registered name.
        did_you_mean: Option<String>,
    },
    /// A control message type: never publishable.
    #[error("`{name}` is a control message and cannot be published")]
    Forbidden {
        /// The name as given.
        name: String,
    },
    /// Payloads that break their schemas (and unknown types, in a batch).
    #[error("{} invalid field(s)", .fields.len())]
    Invalid {
        /// Every problem found.
        fields: Vec<FieldReport>,
    },
    /// The routing table stayed locked (a reload or a burst of subscribes)
    /// for longer than a publisher may wait: retry shortly.
    #[error("the router is busy and cannot take events right now; retry shortly")]
    Overloaded,
    /// A channel's log could not append an event (its store is out of
    /// reach): the events before it were accepted, this one and those after
    /// it were not.
    #[error("{error}; {} event(s) of this publish were accepted before it", accepted.len())]
    Unavailable {
        /// The events accepted before the failure, in order.
        accepted: Vec<Stamp>,
        /// What the log answered.
        error: super::log::LogError,
    },
    /// An envelope over `server.max_event_bytes`.
    #[error("event {index} would be {size} bytes; the limit is {max}")]
    TooLarge {
        /// Position in the array.
        index: usize,
        /// Its size (an upper bound).
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl PublishError {
    /// The refused-events metric reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Malformed { .. } => "invalid_json",
            PublishError::UnknownType { .. } => "unknown_type",
            PublishError::Forbidden { .. } => "forbidden",
            PublishError::Invalid { .. } => "invalid_payload",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::Overloaded => "overloaded",
            PublishError::Unavailable { .. } => "cluster_unavailable",
        }
    }
}

impl Incoming {
    /// Reads one event object of a `POST /api/events` body.
    pub fn from_json(value: Value, index: usize) -> Result<Incoming, PublishError> {
        let malformed = |message: &str| PublishError::Malformed {
            index,
            message: message.to_owned(),
        };
        let Value::Object(mut obj) = value else {
            return Err(malformed("an event must be a JSON object"));
        };
        let type_name = match obj.remove("type") {
            Some(Value::String(t)) => t,
            _ => return Err(malformed("an event needs a string `type`")),
        };
        let payload = obj.remove("payload").unwrap_or_else(|| json!({}));
        let correlation_id = match obj.remove("correlation_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(malformed("`correlation_id` must be a string")),
        };
        let idempotency_key = match obj.remove("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(malformed("`idempotency_key` must be a string")),
        };
        if let Some(extra) = obj.keys().next() {
            return Err(malformed(&format!(
                "unknown key `{extra}`: an event has type, payload, correlation_id and idempotency_key"
            )));
        }
        Ok(Incoming {
            type_name,
            payload,
            correlation_id,
            idempotency_key,
        })
    }
}

fn problem_name(p: Problem) -> &'static str {
    match p {
        Problem::Missing => "missing",
        Problem::WrongType => "wrong_type",
        Problem::NotInEnum => "not_in_enum",
        Problem::Unknown => "unknown",
    }
}

/// Checks every event against the snapshot; stamps nothing.
pub(super) fn prepare(
    snap: &Snapshot,
    events: Vec<Incoming>,
    origin: &Origin,
) -> Result<Vec<Prepared>, PublishError> {
    let mut fields = Vec::new();
    let mut unknown: Option<PublishError> = None;
    let mut prepared = Vec::with_capacity(events.len());
    for (index, ev) in events.into_iter().enumerate() {
        if names::domain_of(&ev.type_name) == CONTROL_CHANNEL {
            return Err(PublishError::Forbidden { name: ev.type_name });
        }
        let Some(t) = snap
            .registry
            .resolve(&ev.type_name)
            .filter(|t| match origin {
                Origin::Http => !t.is_control(),
                Origin::Plugin(instance) => t.producer == *instance,
            })
        else {
            let did_you_mean = snap.registry.did_you_mean(&ev.type_name);
            fields.push(FieldReport {
                index,
                field: "type".into(),
                problem: "unknown_type",
                expected: json!(did_you_mean),
            });
            unknown.get_or_insert(PublishError::UnknownType {
                name: ev.type_name,
                did_you_mean,
            });
            continue;
        };
        for p in t.schema.validate(&ev.payload) {
            fields.push(FieldReport {
                index,
                field: p.field,
                problem: problem_name(p.problem),
                expected: p.expected,
            });
        }
        if ev
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY_BYTES)
        {
            fields.push(FieldReport {
                index,
                field: "idempotency_key".into(),
                problem: "wrong_type",
                expected: json!("string"),
            });
        }
        prepared.push(Prepared {
            event_type: t.clone(),
            payload_json: ev.payload.to_string(),
            correlation_id: ev.correlation_id,
            idempotency_key: ev.idempotency_key,
            emitter: match origin {
                Origin::Http => None,
                Origin::Plugin(instance) => Some(instance.clone()),
            },
        });
    }
    let unknown_only = fields.iter().all(|f| f.problem == "unknown_type");
    match unknown {
        Some(err) if unknown_only => return Err(err),
        _ if !fields.is_empty() => return Err(PublishError::Invalid { fields }),
        _ => {}
    }
    let max = snap.config.server.max_event_bytes;
    for (index, p) in prepared.iter().enumerate() {
        let size = envelope::max_len(p);
        if size > max {
            return Err(PublishError::TooLarge { index, size, max });
        }
    }
    Ok(prepared)
}
