//! The event types this plugin emits: their declarations (the schemas the
//! router validates against) and the one payload shape they share.

use serde::Serialize;
use switchyard_plugin_api::{EventTypeDecl, Field};

use crate::config::WorkerType;
use crate::machine::{EventKind, State};

/// The channel of every `worker.*` event.
pub(crate) const WORKERS: &str = "workers";

/// The payload of every `worker.*` event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct WorkerPayload {
    pub worker_name: String,
    pub worker_type: WorkerType,
    pub state: State,
    pub timestamp: String,
    pub error: Option<String>,
    pub consecutive_failures: u32,
}

/// The declarations of every event type this plugin emits, in
/// [`EventKind::ALL`] order.
pub(crate) fn declarations() -> Vec<EventTypeDecl> {
    EventKind::ALL
        .iter()
        .map(|kind| {
            EventTypeDecl::new(kind.name(), WORKERS, kind.description())
                .field(
                    "worker_name",
                    Field::string()
                        .required()
                        .describe("The worker's `name` in the plugin config"),
                )
                .field(
                    "worker_type",
                    Field::string()
                        .required()
                        .one_of(&WorkerType::NAMES)
                        .describe("The worker's `type` in the plugin config"),
                )
                .field(
                    "state",
                    Field::string()
                        .required()
                        .one_of(&State::NAMES)
                        .describe("The worker's state after this event"),
                )
                .field(
                    "timestamp",
                    Field::string()
                        .required()
                        .describe("When the health check behind this event ended (RFC 3339, UTC)"),
                )
                .field(
                    "error",
                    Field::string()
                        .describe("Why the latest health check failed; null when it succeeded"),
                )
                .field(
                    "consecutive_failures",
                    Field::integer().required().describe(
                        "Failed health checks in a row, this one included (0 when healthy)",
                    ),
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use switchyard_plugin_api::timestamp;

    /// Checks `payload` against `decl` with the router's own rules
    /// ([`EventTypeDecl::check_payload`]), and that every field is described.
    fn check(decl: &EventTypeDecl, payload: &impl Serialize) {
        let value = serde_json::to_value(payload).unwrap();
        let problems = decl.check_payload(&value);
        assert!(
            problems.is_empty(),
            "{}: {problems:?} in {value}",
            decl.name
        );
        for (name, field) in decl.payload.as_ref().unwrap() {
            assert!(field.description.is_some(), "{}.{name}", decl.name);
        }
    }

    #[test]
    fn payloads_match_their_declarations() {
        let decls = declarations();
        let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "worker.started",
                "worker.stopped",
                "worker.health_check_failed",
                "worker.restarting",
                "worker.recovered",
                "worker.error"
            ]
        );
        for decl in &decls {
            assert_eq!(decl.channel.as_deref(), Some(WORKERS));
            assert!(!decl.description.is_empty());
            for worker_type in WorkerType::ALL {
                for state in State::ALL {
                    for error in [None, Some("HTTP 503".to_owned())] {
                        check(
                            decl,
                            &WorkerPayload {
                                worker_name: "w".into(),
                                worker_type,
                                state,
                                timestamp: timestamp(Utc::now()),
                                error,
                                consecutive_failures: 2,
                            },
                        );
                    }
                }
            }
        }
    }
}
