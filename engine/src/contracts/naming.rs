//! Identifiers for event types in generated code. Type names contain dots,
//! which neither TypeScript identifiers nor AsyncAPI component keys allow, so
//! each type gets the PascalCase of its name (`alert.created` →
//! `AlertCreated`); the rare collision (`a_b.c` and `a.b_c`) is settled by
//! name order, so the same registry always gets the same identifiers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::registry::Registry;

/// Identifiers the generated code declares itself; an event type never
/// takes one of them.
pub(super) const RESERVED: [&str; 25] = [
    "EventMap",
    "EventName",
    "Envelope",
    "AnyEnvelope",
    "EndpointEvents",
    "ChannelEvents",
    "Endpoint",
    "Channel",
    "Position",
    "Positions",
    "RequestId",
    "SubscribeWarning",
    "Recovery",
    "ErrorCode",
    "ConnectionEstablished",
    "ConnectionChannels",
    "ConnectionLagged",
    "ConnectionClosed",
    "Subscribed",
    "Unsubscribed",
    "ErrorMessage",
    "Pong",
    "Refreshed",
    "ControlMessage",
    "ServerMessage",
];

/// Client message identifiers, reserved like [`RESERVED`].
pub(super) const RESERVED_CLIENT: [&str; 5] = [
    "Subscribe",
    "Unsubscribe",
    "Ping",
    "Refresh",
    "ClientMessage",
];

/// `alert.created` → `AlertCreated`: each `.`- or `_`-separated part
/// capitalised.
pub(super) fn pascal_case(name: &str) -> String {
    name.split(['.', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The identifier of every routable type, by canonical name.
pub(super) fn identifiers(registry: &Registry) -> BTreeMap<Arc<str>, String> {
    let mut taken: HashSet<String> = RESERVED
        .iter()
        .chain(RESERVED_CLIENT.iter())
        .map(|s| (*s).to_owned())
        .collect();
    let mut out = BTreeMap::new();
    // `routable` is in name order, which makes the suffixes deterministic.
    for t in registry.routable() {
        let base = pascal_case(&t.name);
        let mut candidate = base.clone();
        let mut n = 2;
        while taken.contains(&candidate) {
            candidate = format!("{base}{n}");
            n += 1;
        }
        taken.insert(candidate.clone());
        out.insert(t.name.clone(), candidate);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::fixture;

    #[test]
    fn names_become_pascal_case() {
        assert_eq!(pascal_case("alert.created"), "AlertCreated");
        assert_eq!(
            pascal_case("worker.health_check_failed"),
            "WorkerHealthCheckFailed"
        );
        assert_eq!(pascal_case("scene_change.detected"), "SceneChangeDetected");
        assert_eq!(pascal_case("gpu.stats_updated2"), "GpuStatsUpdated2");
    }

    #[test]
    fn collisions_are_settled_by_name_order() {
        let toml = r#"
[[channels]]
name = "c"
[[event_types]]
name = "a_b.c"
channel = "c"
[event_types.payload]
[[event_types]]
name = "a.b_c"
channel = "c"
[event_types.payload]
[[event_types]]
name = "event.map"
channel = "c"
[event_types.payload]
"#;
        let (_, registry) = fixture::load(toml);
        let ids = identifiers(&registry);
        assert_eq!(ids["a.b_c"], "ABC");
        assert_eq!(ids["a_b.c"], "ABC2");
        assert_eq!(
            ids["event.map"], "EventMap2",
            "generated names are never taken"
        );
    }

    #[test]
    fn protocol_message_names_are_never_taken() {
        // `connection_` is not the reserved `connection` domain, so this is
        // a valid type whose PascalCase is the SSE close message's.
        let toml = r#"
[[channels]]
name = "c"
[[event_types]]
name = "connection_.closed"
channel = "c"
[event_types.payload]
"#;
        let (_, registry) = fixture::load(toml);
        assert_eq!(
            identifiers(&registry)["connection_.closed"],
            "ConnectionClosed2"
        );
    }
}
