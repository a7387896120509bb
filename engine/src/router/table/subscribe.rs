//! Changing what a connection receives: subscribe, unsubscribe and
//! recovery, each with the routing index updated in the same step.

use super::*;

impl Table {
    /// `since` without `events`: recovery under receive-all.
    pub(super) fn recover_only(
        &mut self,
        conn: &ConnRef,
        since: Option<&BTreeMap<String, Position>>,
    ) {
        let recovery = since.map(|s| self.recover(conn.id, s));
        conn.outbox
            .push_control(Frame::control(protocol::subscribed(
                None,
                &[],
                recovery,
                &None,
            )));
    }

    pub(in crate::router) fn subscribe(
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
        let subs = self.subscription_sets.share(subs);
        for name in entry.channels.iter() {
            let (seq, oldest) = self
                .channels
                .get(name)
                .map_or((0, 0), |ch| (ch.log.sequence(), ch.log.oldest_kept()));
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
        // history's). The record replays an event at most once to a
        // connection, and a new replay is refused only while more than the
        // channel's history of earlier ones is unwritten: a client that asks
        // again at once (a second `connection.lagged` read before the first
        // replay) is answered, and one that never reads holds at most twice
        // a history. Only earlier recoveries count: this one's replays of
        // other channels (a `Last-Event-ID` names every channel) must not
        // make a channel whose history holds all it missed `too_old`.
        let unwritten = entry.conn.outbox.replaying();
        for (name, pos) in since {
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
            if unwritten > settings.history {
                out.insert(
                    name.clone(),
                    json!({"recovered": false, "reason": "too_old"}),
                );
                continue;
            }
            if self.mirrored && *ch.log.epoch() == pos.epoch && pos.sequence > ch.log.sequence() {
                // Another node delivered up to there before this node's
                // copy of the channel got there: nothing to replay, and
                // what arrives up to it is not sent again.
                let epoch = ch.log.epoch();
                entry
                    .conn
                    .outbox
                    .skip_through(ch.log.name(), &epoch, pos.sequence);
                out.insert(name.clone(), json!({"recovered": true, "replayed": 0}));
                continue;
            }
            let planned = recovery::plan(
                &ch.log,
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
                        .covered(ch.log.name(), pos.sequence, ch.log.sequence(), &entry.subs);
                }
                Err(reason) => {
                    out.insert(name.clone(), json!({"recovered": false, "reason": reason}));
                }
            }
        }
        Value::Object(out)
    }

    pub(in crate::router) fn unsubscribe(
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
}
