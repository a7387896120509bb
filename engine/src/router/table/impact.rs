//! What applying a configuration would do, said before it is done: the
//! reload preview (`POST /api/admin/reload?dry_run=true`), and the record
//! an applied reload answers with. Computed from the same access rules
//! [`super::reload`] applies, so the preview cannot disagree with the
//! reload.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::*;

/// The effect of a configuration on the router as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    /// Channels the new configuration adds.
    pub channels_added: Vec<String>,
    /// Channels it removes (their history goes with them).
    pub channels_removed: Vec<String>,
    /// Event types it adds.
    pub types_added: Vec<String>,
    /// Event types it removes.
    pub types_removed: Vec<String>,
    /// Event types stamped on another channel from now on.
    pub types_moved: Vec<Moved>,
    /// Endpoint paths it adds.
    pub endpoints_added: Vec<String>,
    /// Endpoint paths it removes.
    pub endpoints_removed: Vec<String>,
    /// Open connections it would close.
    pub connections_closed: Closed,
    /// Per channel, the open connections that would stop receiving it.
    pub connections_losing_channel: BTreeMap<String, usize>,
    /// Types of the new configuration that no endpoint carries: they
    /// would reach sinks only.
    pub types_reaching_no_endpoint: Vec<String>,
}

/// A type that changes channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Its channel now.
    pub from: String,
    /// Its channel after.
    pub to: String,
}

/// Connections a configuration would close, by close code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Closed {
    /// 1001: their endpoint is removed.
    pub endpoint_removed: usize,
    /// 1008: they may no longer use their endpoint.
    pub access_withdrawn: usize,
}

/// The names in `after` and not in `before`.
fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn added<'a>(
    before: impl IntoIterator<Item = &'a str>,
    after: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let before: BTreeSet<&str> = before.into_iter().collect();
    let after: BTreeSet<&str> = after.into_iter().collect();
    after.difference(&before).map(|s| (*s).to_owned()).collect()
}

impl Table {
    /// What applying `next` would do (see [`Impact`]).
    pub(in crate::router) fn impact(&self, next: &Snapshot) -> Impact {
        let (old, new) = (&self.snap.registry, &next.registry);
        let channels = |r: &'_ crate::registry::Registry| -> Vec<String> {
            r.channels().keys().map(|c| c.to_string()).collect()
        };
        let types = |r: &'_ crate::registry::Registry| -> BTreeMap<String, String> {
            r.routable()
                .map(|t| (t.name.to_string(), t.channel.to_string()))
                .collect()
        };
        let endpoints = |s: &'_ Snapshot| -> Vec<String> {
            s.config.endpoints.iter().map(|e| e.path.clone()).collect()
        };
        let (old_channels, new_channels) = (channels(old), channels(new));
        let (old_types, new_types) = (types(old), types(new));
        let (old_endpoints, new_endpoints) = (endpoints(&self.snap), endpoints(next));
        let carried: BTreeSet<&str> = next
            .config
            .endpoints
            .iter()
            .flat_map(|e| e.channels.iter().map(String::as_str))
            .collect();
        let mut impact = Impact {
            channels_added: added(names(&old_channels), names(&new_channels)),
            channels_removed: added(names(&new_channels), names(&old_channels)),
            types_added: added(
                old_types.keys().map(String::as_str),
                new_types.keys().map(String::as_str),
            ),
            types_removed: added(
                new_types.keys().map(String::as_str),
                old_types.keys().map(String::as_str),
            ),
            types_moved: old_types
                .iter()
                .filter_map(|(name, from)| {
                    let to = new_types.get(name).filter(|to| *to != from)?;
                    Some(Moved {
                        type_name: name.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    })
                })
                .collect(),
            endpoints_added: added(names(&old_endpoints), names(&new_endpoints)),
            endpoints_removed: added(names(&new_endpoints), names(&old_endpoints)),
            types_reaching_no_endpoint: new_types
                .iter()
                .filter(|(_, channel)| !carried.contains(channel.as_str()))
                .map(|(name, _)| name.clone())
                .collect(),
            ..Impact::default()
        };
        for entry in self.conns.values() {
            let conn = &entry.conn;
            let claim = conn.channel_claim.as_deref();
            match access_under(next, &conn.endpoint, conn.user.as_deref(), claim) {
                Access::Gone => impact.connections_closed.endpoint_removed += 1,
                Access::Withdrawn => impact.connections_closed.access_withdrawn += 1,
                Access::Channels(now) => {
                    for lost in entry.channels.difference(&now) {
                        *impact
                            .connections_losing_channel
                            .entry(lost.to_string())
                            .or_default() += 1;
                    }
                }
            }
        }
        impact
    }
}
