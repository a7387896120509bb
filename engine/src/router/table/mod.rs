//! The routing table: the one owner of subscription sets and of the index
//! derived from them (type → recipients), changed together under the
//! router's write lock. Its work is in four parts: [`connect`] (opening and
//! closing connections), [`subscribe`] (what a connection receives, and
//! recovery), [`route`] (stamping and fan-out) and [`reload`] (applying a
//! new configuration).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use super::census::Census;
use super::channel::{Appending, Channel, NewEpoch, Stored};
use super::coverage::{Coverage, Live};
use super::envelope::{self, Prepared};
use super::log::{Appended, Batch, Received, Sequenced, Sequencing};
use super::recovery::{self, SentRecord};
use super::{Applied, ConnectError, ConnectRequest, Offered, Sink, Snapshot, Stamp};
use crate::config::{AuthMode, OnUserLimit};
use crate::connection::outbox::Limits;
use crate::connection::{ConnId, ConnRef, Connection, Event, Frame, Identity, Outbox};
use crate::metrics::{ChannelLabel, Metrics};
use crate::names::Pattern;
use crate::protocol::{self, Position, Positions};
use crate::subscriptions::{PatternLimits, Scope, SubscriptionSet};
use crate::text::Text;
use prometheus_client::metrics::counter::Counter;

/// What a connection may receive.
enum Access {
    /// Its endpoint no longer exists.
    Gone,
    /// It may no longer use its endpoint (anonymous on a `require_auth` one).
    Withdrawn,
    /// These channels.
    Channels(ChannelSet),
}

/// Channels a connection may receive.
type ChannelSet = BTreeSet<Arc<str>>;

/// A connection and what it receives.
struct Entry {
    conn: ConnRef,
    subs: Arc<SubscriptionSet>,
    /// Channels it may receive (its endpoint's, for now), shared with every
    /// connection that may receive the same.
    channels: Arc<ChannelSet>,
    /// What it was sent, for recovery.
    sent: SentRecord,
}

/// A channel as the table routes it: its state, and its
/// `switchyard_deliveries_total` child, looked up once.
struct Routed {
    log: Arc<Channel>,
    delivered: OnceLock<Counter>,
}

impl Routed {
    fn new(name: &str) -> Routed {
        Routed {
            log: Arc::new(Channel::new(name)),
            delivered: OnceLock::new(),
        }
    }

    /// The channel's delivery counter: a label lookup the first time, a
    /// shared handle after that.
    fn delivered(&self, metrics: &Metrics) -> &Counter {
        self.delivered.get_or_init(|| {
            let label = ChannelLabel {
                channel: self.log.name().to_string(),
            };
            metrics.deliveries.get_or_create(&label).clone()
        })
    }
}

pub(super) struct Table {
    pub(super) snap: Arc<Snapshot>,
    channels: HashMap<Arc<str>, Routed>,
    conns: HashMap<ConnId, Entry>,
    /// Connections by user and anonymous address, for the limits.
    census: Census,
    /// Type name → connections that receive it.
    recipients: HashMap<Arc<str>, HashMap<ConnId, ConnRef>>,
    /// Type name → sinks whose routes match it (each sink once).
    routes: HashMap<Arc<str>, Vec<Arc<dyn Sink>>>,
    /// Channels are copies of a cluster's shared log: a client may know
    /// positions this node's copy has not reached yet.
    mirrored: bool,
    /// The distinct channel sets connections hold.
    channel_sets: shared::Shared<ChannelSet>,
    /// The distinct subscription sets connections hold.
    subscription_sets: shared::Shared<SubscriptionSet>,
}

/// What a connection may receive under `snap`: its endpoint's channels,
/// less `require_auth` ones when anonymous and those outside its token's
/// `channels` claim.
fn access_under(
    snap: &Snapshot,
    endpoint: &str,
    user: Option<&str>,
    claim: Option<&[String]>,
) -> Access {
    let Some(ep) = snap.endpoint(endpoint) else {
        return Access::Gone;
    };
    let anonymous = user.is_none();
    if anonymous && (ep.require_auth || snap.config.auth.mode == AuthMode::Required) {
        return Access::Withdrawn;
    }
    let settings = snap.registry.channels();
    let declared: Vec<&Arc<str>> = ep
        .channels
        .iter()
        .filter_map(|c| settings.get_key_value(c.as_str()).map(|(k, _)| k))
        .collect();
    let protected = |c: &Arc<str>| anonymous && settings.get(c).is_some_and(|s| s.require_auth);
    if !declared.is_empty() && declared.iter().all(|c| protected(c)) {
        return Access::Withdrawn;
    }
    let claimed = |c: &Arc<str>| claim.is_none_or(|names| names.iter().any(|n| **n == **c));
    Access::Channels(
        declared
            .into_iter()
            .filter(|c| !protected(c) && claimed(c))
            .cloned()
            .collect(),
    )
}

/// Matches every route against every type, once per configuration.
fn sink_routes(snap: &Snapshot) -> HashMap<Arc<str>, Vec<Arc<dyn Sink>>> {
    let max = snap.config.server.max_pattern_bytes;
    let mut routes: HashMap<Arc<str>, Vec<Arc<dyn Sink>>> = HashMap::new();
    for route in &snap.config.routes {
        let Some(sink) = snap.sinks.get(&route.sink) else {
            continue;
        };
        let patterns: Vec<Pattern> = route
            .events
            .iter()
            .filter_map(|p| Pattern::parse(p, max).ok())
            .collect();
        for t in snap.registry.routable() {
            if !patterns.iter().any(|p| t.matched_by(p)) {
                continue;
            }
            let sinks = routes.entry(t.name.clone()).or_default();
            if !sinks.iter().any(|s| s.name() == sink.name()) {
                sinks.push(sink.clone());
            }
        }
    }
    routes
}

mod connect;
pub(super) mod impact;
mod reload;
mod route;
mod shared;
mod subscribe;

impl Table {
    pub(super) fn new(snap: Arc<Snapshot>, mirrored: bool) -> Table {
        let channels = snap
            .registry
            .channels()
            .keys()
            .map(|name| (name.clone(), Routed::new(name)))
            .collect();
        Table {
            routes: sink_routes(&snap),
            snap,
            channels,
            conns: HashMap::new(),
            census: Census::default(),
            recipients: HashMap::new(),
            mirrored,
            channel_sets: shared::Shared::default(),
            subscription_sets: shared::Shared::default(),
        }
    }

    /// What a connection may receive under the configuration in force.
    fn access(&self, endpoint: &str, user: Option<&str>, claim: Option<&[String]>) -> Access {
        access_under(&self.snap, endpoint, user, claim)
    }

    fn positions_of<'a>(&self, channels: impl IntoIterator<Item = &'a Arc<str>>) -> Positions {
        channels
            .into_iter()
            .filter_map(|name| {
                let ch = self.channels.get(name)?;
                Some((name.clone(), (ch.log.epoch(), ch.log.sequence())))
            })
            .collect()
    }

    /// `connection.channels` announcing `positions`, its text and its
    /// positions made from the same map.
    fn channels_announced(positions: &Positions) -> Frame {
        Frame::announce(protocol::channels(positions), positions, false)
    }

    /// Recomputes which types one connection receives.
    fn reindex(&mut self, id: ConnId) {
        let Some(entry) = self.conns.get(&id) else {
            return;
        };
        for t in self.snap.registry.routable() {
            let wanted = entry.channels.contains(&t.channel) && entry.subs.wants(t);
            let recipients = self.recipients.entry(t.name.clone()).or_default();
            if wanted {
                recipients.insert(id, entry.conn.clone());
            } else {
                recipients.remove(&id);
            }
        }
    }

    pub(super) fn connections(&self) -> Vec<(ConnRef, Option<Vec<String>>)> {
        self.conns
            .values()
            .map(|e| (e.conn.clone(), e.subs.texts()))
            .collect()
    }

    /// Subscriber counts and dead patterns, for the gap report.
    pub(super) fn live_coverage(&self) -> Live {
        let registry = &self.snap.registry;
        let subscribers = registry
            .routable()
            .map(|t| {
                (
                    t.name.to_string(),
                    self.recipients.get(&t.name).map_or(0, HashMap::len),
                )
            })
            .collect();
        let mut dead_patterns: HashMap<String, usize> = HashMap::new();
        for entry in self.conns.values() {
            for held in entry.subs.held() {
                if !registry.routable().any(|t| held.matches(t)) {
                    *dead_patterns.entry(held.text.clone()).or_default() += 1;
                }
            }
        }
        Live {
            subscribers,
            dead_patterns,
        }
    }

    pub(super) fn census(&self) -> super::census::Counts {
        self.census.counts()
    }

    pub(super) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(super) fn is_new_epoch(&self, channel: &str, epoch: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|ch| ch.log.is_new_epoch(epoch))
    }

    pub(super) fn positions(&self) -> BTreeMap<String, (String, u64)> {
        self.channels
            .iter()
            .map(|(name, ch)| {
                (
                    name.to_string(),
                    (ch.log.epoch().to_string(), ch.log.sequence()),
                )
            })
            .collect()
    }
}
