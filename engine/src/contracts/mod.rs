//! Contracts generated from the registry in force (docs/clients.md,
//! "Contracts"): an AsyncAPI 3.0 document ([`asyncapi`]) and TypeScript
//! declarations ([`typescript`]) of the same endpoints, channels, event
//! types and protocol messages.
//!
//! Both are pure functions of a configuration and its registry, so the HTTP
//! routes (which read the live snapshot on every request, and so follow each
//! reload) and `switchyard codegen` (which reads a file) produce the same
//! text for the same configuration. They are generated rather than written
//! by hand so that a client's contract can never drift from what the router
//! validates.

pub mod asyncapi;
mod control;
mod naming;
pub mod typescript;

use std::sync::Arc;

use crate::config::EndpointConfig;
use crate::registry::{EventType, Registry};

/// The routable types an endpoint carries, in name order.
fn endpoint_types<'r>(
    registry: &'r Registry,
    endpoint: &EndpointConfig,
) -> Vec<&'r Arc<EventType>> {
    registry
        .routable()
        .filter(|t| endpoint.channels.iter().any(|c| *c == *t.channel))
        .collect()
}

/// The routable types of a channel, in name order.
fn channel_types<'r>(registry: &'r Registry, channel: &str) -> Vec<&'r Arc<EventType>> {
    registry
        .routable()
        .filter(|t| &*t.channel == channel)
        .collect()
}

/// A type's description for humans, with what a client must know besides
/// its payload: the legacy names it also answers to, and its replacement.
fn describe(t: &EventType) -> String {
    let mut text = t.description.clone();
    let mut add = |line: String| {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&line);
    };
    if !t.aliases.is_empty() {
        add(format!(
            "Aliases (accepted when publishing and subscribing): {}.",
            t.aliases.join(", ")
        ));
    }
    if let Some(replacement) = &t.deprecated {
        add(format!("Deprecated: {replacement}."));
    }
    add(format!(
        "Channel `{}`; produced by `{}`.",
        t.channel, t.producer
    ));
    text
}

#[cfg(test)]
pub(crate) mod fixture {
    //! One configuration shared by the generators' tests: two channels, an
    //! alias, a deprecation, an enum and a type with open fields.

    use crate::config::Config;
    use crate::registry::Registry;

    /// The test configuration.
    pub const TOML: &str = r#"
[[channels]]
name = "alerts"
[[channels]]
name = "jobs"
[[endpoints]]
path = "/ws/events"
channels = ["alerts", "jobs"]
[[endpoints]]
path = "/ws/jobs"
channels = ["jobs"]
[[event_types]]
name = "alert.created"
channel = "alerts"
description = "New alert"
[event_types.payload]
id = { type = "string", required = true, description = "Alert id" }
severity = { type = "string", required = true, enum = ["low", "high"] }
count = { type = "integer" }
tags = { type = "array" }
[[event_types]]
name = "alert.resolved"
channel = "alerts"
description = "Alert resolved"
deprecated = "use alert.updated"
additional_fields = true
[event_types.payload]
id = { type = "string", required = true }
[[event_types]]
name = "job.progress"
channel = "jobs"
aliases = ["job_progress"]
[event_types.payload]
"job-id" = { type = "string", required = true }
meta = { type = "object" }
"#;

    /// The configuration and registry of `toml`.
    pub fn load(toml: &str) -> (Config, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let config = crate::config::load_with_env(&path, Vec::new())
            .unwrap()
            .config;
        let registry = Registry::build(&config, &[]).unwrap().registry;
        (config, registry)
    }

    /// [`TOML`] loaded.
    pub fn base() -> (Config, Registry) {
        load(TOML)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_carry_the_types_of_their_channels() {
        let (config, registry) = fixture::base();
        let names = |ep: &EndpointConfig| -> Vec<String> {
            endpoint_types(&registry, ep)
                .iter()
                .map(|t| t.name.to_string())
                .collect()
        };
        assert_eq!(
            names(&config.endpoints[0]),
            ["alert.created", "alert.resolved", "job.progress"]
        );
        assert_eq!(names(&config.endpoints[1]), ["job.progress"]);
        assert_eq!(channel_types(&registry, "jobs").len(), 1);
    }

    #[test]
    fn descriptions_name_aliases_and_replacements() {
        let (_, registry) = fixture::base();
        let job = describe(registry.resolve("job.progress").unwrap());
        assert!(
            job.starts_with("Aliases (accepted when publishing and subscribing): job_progress."),
            "{job}"
        );
        let resolved = describe(registry.resolve("alert.resolved").unwrap());
        assert!(
            resolved.contains("Deprecated: use alert.updated."),
            "{resolved}"
        );
        assert!(resolved.starts_with("Alert resolved\n\n"), "{resolved}");
    }
}
