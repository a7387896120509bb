//! The routing table: the one owner of subscription sets and of the index
//! derived from them (type → recipients), changed together under the
//! router's write lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use super::census::Census;
use super::channel::{Channel, Stored};
use super::coverage::{Coverage, Live};
use super::envelope::{self, Prepared};
use super::recovery::{self, SentRecord};
use super::{Applied, ConnectError, ConnectRequest, Offered, Sink, Snapshot, Stamp};
use crate::config::{AuthMode, OnUserLimit};
use crate::connection::outbox::Limits;
use crate::connection::{ConnId, ConnRef, Connection, Event, Frame, Identity, Outbox};
use crate::metrics::{Metrics, TypeLabel};
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
    Channels(HashSet<Arc<str>>),
}

/// A connection and what it receives.
struct Entry {
    conn: ConnRef,
    subs: Arc<SubscriptionSet>,
    /// Channels it may receive (its endpoint's, for now).
    channels: HashSet<Arc<str>>,
    /// What it was sent, for recovery.
    sent: SentRecord,
}

pub(super) struct Table {
    pub(super) snap: Arc<Snapshot>,
    channels: HashMap<Arc<str>, Arc<Channel>>,
    conns: HashMap<ConnId, Entry>,
    /// Connections by user and anonymous address, for the limits.
    census: Census,
    /// Type name → connections that receive it.
    recipients: HashMap<Arc<str>, HashMap<ConnId, ConnRef>>,
    /// Type name → sinks whose routes match it (each sink once).
    routes: HashMap<Arc<str>, Vec<Arc<dyn Sink>>>,
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

impl Table {
    pub(super) fn new(snap: Arc<Snapshot>) -> Table {
        let channels = snap
            .registry
            .channels()
            .keys()
            .map(|name| (name.clone(), Arc::new(Channel::new(name))))
            .collect();
        Table {
            routes: sink_routes(&snap),
            snap,
            channels,
            conns: HashMap::new(),
            census: Census::default(),
            recipients: HashMap::new(),
        }
    }

    /// What a connection may receive under the configuration in force:
    /// its endpoint's channels, less `require_auth` ones when anonymous and
    /// those outside its token's `channels` claim.
    fn access(&self, endpoint: &str, user: Option<&str>, claim: Option<&[String]>) -> Access {
        let Some(ep) = self.snap.endpoint(endpoint) else {
            return Access::Gone;
        };
        let anonymous = user.is_none();
        if anonymous && (ep.require_auth || self.snap.config.auth.mode == AuthMode::Required) {
            return Access::Withdrawn;
        }
        let settings = self.snap.registry.channels();
        let declared: Vec<&Arc<str>> = ep
            .channels
            .iter()
            .filter_map(|c| self.channels.get_key_value(c.as_str()).map(|(k, _)| k))
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

    fn positions_of<'a>(&self, channels: impl IntoIterator<Item = &'a Arc<str>>) -> Positions {
        channels
            .into_iter()
            .filter_map(|name| {
                let ch = self.channels.get(name)?;
                Some((name.clone(), (ch.epoch.clone(), ch.sequence())))
            })
            .collect()
    }

    pub(super) fn connect(
        &mut self,
        id: ConnId,
        req: ConnectRequest,
        dropped: Counter,
    ) -> Result<ConnRef, ConnectError> {
        self.make_room(&req)?;
        let channels = match self.access(
            &req.endpoint,
            req.user.as_deref(),
            req.channel_claim.as_deref(),
        ) {
            Access::Channels(channels) => channels,
            Access::Gone => return Err(ConnectError::UnknownEndpoint(req.endpoint)),
            Access::Withdrawn => return Err(ConnectError::AuthRequired(req.endpoint)),
        };
        let server = &self.snap.config.server;
        let identity = Identity {
            user: req.user,
            ip: req.ip,
            expires_at: req.expires_at,
            channel_claim: req.channel_claim,
        };
        let limits = Limits {
            events: server.send_queue,
            bytes: server.send_queue_bytes,
        };
        let outbox = Outbox::new(limits, dropped);
        let public_id = format!("c-{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
        let conn = Arc::new(Connection::new(
            id,
            public_id,
            &req.endpoint,
            identity,
            outbox,
        ));
        let positions = self.positions_of(&channels);
        conn.outbox
            .push_control(Frame::control(protocol::established(
                &protocol::Established {
                    connection_id: &conn.public_id,
                    endpoint: &conn.endpoint,
                    heartbeat_interval_s: server.heartbeat_interval_s,
                    user: conn.user.as_deref(),
                    expires_at: conn.expires_at().map(protocol::unix_timestamp),
                    channels: &positions,
                },
            )));
        let subs = Arc::new(SubscriptionSet::default());
        let mut sent = SentRecord::default();
        for (name, (_, seq)) in &positions {
            sent.open(name, *seq, &subs);
        }
        self.census.add(&conn);
        self.conns.insert(
            id,
            Entry {
                conn: conn.clone(),
                subs,
                channels,
                sent,
            },
        );
        self.reindex(id);
        if req.events.is_some() || req.since.is_some() {
            match req.events {
                Some(events) => self.subscribe(&conn, &events, req.since.as_ref(), &None),
                None => self.recover_only(&conn, req.since.as_ref()),
            }
        }
        Ok(conn)
    }

    /// `since` without `events`: recovery under receive-all.
    fn recover_only(&mut self, conn: &ConnRef, since: Option<&BTreeMap<String, Position>>) {
        let recovery = since.map(|s| self.recover(conn.id, s));
        conn.outbox
            .push_control(Frame::control(protocol::subscribed(
                None,
                &[],
                recovery,
                &None,
            )));
    }

    pub(super) fn subscribe(
        &mut self,
        conn: &ConnRef,
        events: &[String],
        since: Option<&BTreeMap<String, Position>>,
        id: &Option<Value>,
    ) {
        let Some(entry) = self.conns.get(&conn.id) else {
            return;
        };
        let server = &self.snap.config.server;
        let limits = PatternLimits {
            max_patterns: server.max_patterns,
            max_pattern_bytes: server.max_pattern_bytes,
        };
        let channel_names: HashSet<&str> = entry.channels.iter().map(|c| &**c).collect();
        let endpoints: Vec<(&str, Vec<&str>)> = self
            .snap
            .config
            .endpoints
            .iter()
            .filter(|e| *e.path != *conn.endpoint)
            .map(|e| {
                (
                    e.path.as_str(),
                    e.channels.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let scope = Scope {
            registry: &self.snap.registry,
            channels: &channel_names,
            endpoints: &endpoints,
        };
        let mut subs = (*entry.subs).clone();
        let outcome = subs.subscribe(events, limits, &scope);
        if outcome.invalid.count > 0 {
            conn.outbox
                .push_control(Frame::control(protocol::invalid_patterns(
                    outcome.invalid.count,
                    &outcome.invalid.named,
                    id,
                )));
        }
        if let Some(message) = &outcome.too_many {
            conn.outbox.push_control(Frame::control(protocol::error(
                "too_many_patterns",
                message,
                id,
            )));
        }
        self.set_subs(conn.id, subs);
        let recovery = since.map(|s| self.recover(conn.id, s));
        let held = self.conns[&conn.id].subs.texts();
        conn.outbox
            .push_control(Frame::control(protocol::subscribed(
                held.as_deref(),
                &outcome.warnings,
                recovery,
                id,
            )));
    }

    /// Replaces a connection's subscription set: the record of what it is
    /// sent and the routing index change in the same step.
    fn set_subs(&mut self, id: ConnId, subs: SubscriptionSet) {
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        let subs = Arc::new(subs);
        for name in &entry.channels {
            let (seq, oldest) = self
                .channels
                .get(name)
                .map_or((0, 0), |ch| (ch.sequence(), ch.oldest_kept()));
            entry.sent.close(name, seq);
            entry.sent.prune(name, oldest);
            entry.sent.open(name, seq, &subs);
        }
        entry.subs = subs;
        self.reindex(id);
    }

    /// Answers recovery for each channel named in `since`, queuing replays.
    fn recover(&mut self, id: ConnId, since: &BTreeMap<String, Position>) -> Value {
        let Some(entry) = self.conns.get_mut(&id) else {
            return Value::Null;
        };
        let mut out = serde_json::Map::new();
        // A replay is held outside the send queue's bounds (its bytes are the
        // history's), so one not yet read blocks the next: a client cannot
        // stack replays up by asking again without reading.
        let replaying = entry.conn.outbox.is_replaying();
        for (name, pos) in since {
            if replaying {
                out.insert(
                    name.clone(),
                    json!({"recovered": false, "reason": "too_old"}),
                );
                continue;
            }
            let ch = self
                .channels
                .get(name.as_str())
                .filter(|_| entry.channels.contains(name.as_str()));
            let settings = self.snap.registry.channels().get(name.as_str());
            let (Some(ch), Some(settings)) = (ch, settings) else {
                out.insert(
                    name.clone(),
                    json!({"recovered": false, "reason": "unknown_channel"}),
                );
                continue;
            };
            let planned = recovery::plan(
                ch,
                settings,
                pos,
                &entry.subs,
                &entry.sent,
                &entry.conn,
                &self.snap.registry,
            );
            match planned {
                Ok(replay) => {
                    entry
                        .conn
                        .outbox
                        .forget_drops(name, &recovery::sequences(&replay));
                    out.insert(
                        name.clone(),
                        json!({"recovered": true, "replayed": replay.len()}),
                    );
                    entry
                        .conn
                        .outbox
                        .push_replay(replay.into_iter().map(|stored| stored.frame));
                    entry
                        .sent
                        .covered(&ch.name, pos.sequence, ch.sequence(), &entry.subs);
                }
                Err(reason) => {
                    out.insert(name.clone(), json!({"recovered": false, "reason": reason}));
                }
            }
        }
        Value::Object(out)
    }

    pub(super) fn unsubscribe(
        &mut self,
        conn: &ConnRef,
        events: Option<&[String]>,
        id: &Option<Value>,
    ) {
        let Some(entry) = self.conns.get(&conn.id) else {
            return;
        };
        let mut subs = (*entry.subs).clone();
        subs.unsubscribe(events, &self.snap.registry);
        let held = subs.texts();
        self.set_subs(conn.id, subs);
        conn.outbox
            .push_control(Frame::control(protocol::unsubscribed(held.as_deref(), id)));
    }

    pub(super) fn disconnect(&mut self, id: ConnId) {
        if let Some(entry) = self.conns.remove(&id) {
            self.census.remove(&entry.conn);
            for recipients in self.recipients.values_mut() {
                recipients.remove(&id);
            }
        }
    }

    /// Applies `max_anonymous_per_ip` and `max_connections_per_user`
    /// (refusing, or closing the user's oldest connections with "replaced").
    fn make_room(&mut self, req: &ConnectRequest) -> Result<(), ConnectError> {
        let auth = &self.snap.config.auth;
        if auth.mode == AuthMode::None {
            return Ok(());
        }
        let Some(user) = &req.user else {
            if self.census.anonymous_from(req.ip) >= auth.max_anonymous_per_ip {
                return Err(ConnectError::TooManyAnonymous);
            }
            return Ok(());
        };
        let held = self.census.of_user(user);
        let Some(excess) = (held.len() + 1)
            .checked_sub(auth.max_connections_per_user)
            .filter(|n| *n > 0)
        else {
            return Ok(());
        };
        if auth.on_user_limit == OnUserLimit::Refuse {
            return Err(ConnectError::TooManyForUser);
        }
        let oldest: Vec<ConnRef> = held.iter().take(excess).cloned().collect();
        for conn in oldest {
            self.disconnect(conn.id);
            conn.close(1008, "replaced");
        }
        Ok(())
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

    pub(super) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(super) fn positions(&self) -> BTreeMap<String, (String, u64)> {
        self.channels
            .iter()
            .map(|(name, ch)| (name.to_string(), (ch.epoch.to_string(), ch.sequence())))
            .collect()
    }

    /// Stamps each event on its channel and queues it for every recipient.
    pub(super) fn stamp_and_route(
        &self,
        prepared: Vec<Prepared>,
        metrics: &Metrics,
        coverage: &Coverage,
    ) -> Vec<Stamp> {
        let timestamp = protocol::timestamp(Utc::now());
        let window = Duration::from_secs(self.snap.config.server.idempotency_window_s);
        prepared
            .into_iter()
            .map(|p| self.stamp_one(p, &timestamp, window, metrics, coverage))
            .collect()
    }

    /// Stamps one event and fans it out, holding its channel's lock so that
    /// every recipient sees the channel in sequence order.
    fn stamp_one(
        &self,
        p: Prepared,
        timestamp: &str,
        window: Duration,
        metrics: &Metrics,
        coverage: &Coverage,
    ) -> Stamp {
        let t = p.event_type.clone();
        let channel = &self.channels[&t.channel];
        let settings = &self.snap.registry.channels()[&t.channel];
        let mut stamping = channel.lock();
        let repeated = p
            .idempotency_key
            .as_deref()
            .and_then(|k| stamping.idempotent(k, window));
        if let Some(sequence) = repeated {
            return Stamp {
                channel: t.channel.clone(),
                sequence,
            };
        }
        let sequence = stamping.next_sequence();
        let accepted = Instant::now();
        let text = Text::from(envelope::render(&p, timestamp, sequence));
        if let Some(key) = &p.idempotency_key {
            stamping.remember_key(key, sequence);
        }
        let stored = Stored {
            sequence,
            type_name: t.name.clone(),
            frame: text.clone(),
            at: accepted,
        };
        stamping.keep(stored, settings);
        let event = Arc::new(Event {
            text,
            channel: t.channel.clone(),
            sequence,
            policy: settings.slow_consumer,
            epoch: channel.epoch.clone(),
            accepted,
            delivered: channel.delivered(metrics).clone(),
        });
        self.fan_out(&t.name, &event, p.emitter.as_deref(), metrics);
        drop(stamping);
        let label = TypeLabel {
            r#type: t.name.to_string(),
        };
        metrics.accepted.get_or_create(&label).inc();
        let queued = self.recipients.get(&t.name).map_or(0, |r| r.len() as u64);
        coverage.produced(&t.name, queued);
        Stamp {
            channel: t.channel.clone(),
            sequence,
        }
    }

    /// Queues a stamped event for every connection and sink that takes its
    /// type (a sink never gets what its own instance emitted).
    fn fan_out(
        &self,
        type_name: &Arc<str>,
        event: &Arc<Event>,
        emitter: Option<&str>,
        metrics: &Metrics,
    ) {
        if let Some(recipients) = self.recipients.get(type_name) {
            for conn in recipients.values() {
                conn.outbox.push_event(event);
            }
        }
        for sink in self.routes.get(type_name).into_iter().flatten() {
            if emitter == Some(sink.name()) {
                continue;
            }
            match sink.offer(&event.text) {
                Offered::Queued => {}
                Offered::Full => metrics.drop_events("sink_overflow", 1),
                Offered::Closed => metrics.drop_events("sink_shutdown", 1),
            }
        }
    }

    /// Swaps in a new configuration and re-derives everything from it.
    pub(super) fn apply(&mut self, snap: Arc<Snapshot>) -> Applied {
        let mut channels = HashMap::new();
        for name in snap.registry.channels().keys() {
            let kept = self.channels.remove(name);
            channels.insert(
                name.clone(),
                kept.unwrap_or_else(|| Arc::new(Channel::new(name))),
            );
        }
        self.channels = channels;
        self.routes = sink_routes(&snap);
        self.snap = snap;
        self.recipients.clear();
        let mut applied = Applied::default();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let conn = self.conns[&id].conn.clone();
            let now = match self.access(
                &conn.endpoint,
                conn.user.as_deref(),
                conn.channel_claim.as_deref(),
            ) {
                Access::Channels(now) => now,
                gone_or_withdrawn => {
                    self.disconnect(id);
                    match gone_or_withdrawn {
                        Access::Gone => {
                            conn.close(1001, "endpoint removed by a configuration reload")
                        }
                        _ => conn.close(1008, "access withdrawn by a configuration reload"),
                    }
                    applied.closed += 1;
                    continue;
                }
            };
            let entry = self.conns.get_mut(&id).expect("listed above");
            let gained: Vec<Arc<str>> = now.difference(&entry.channels).cloned().collect();
            let lost: Vec<Arc<str>> = entry.channels.difference(&now).cloned().collect();
            entry.channels = now;
            for name in &lost {
                match self.channels.get(name) {
                    Some(ch) => entry.sent.close(name, ch.sequence()),
                    None => entry.sent.forget(name),
                }
            }
            let positions = self.positions_of(&gained);
            let entry = self.conns.get_mut(&id).expect("listed above");
            for (name, (_, seq)) in &positions {
                entry.sent.open(name, *seq, &entry.subs);
            }
            if !gained.is_empty() {
                entry
                    .conn
                    .outbox
                    .push_control(Frame::control(protocol::channels(&positions)));
            }
            self.reindex(id);
        }
        applied
    }
}
