//! Stamping events on their channel (memory engine) or taking them back
//! stamped (cluster engine), and fanning them out to connections and sinks,
//! under the channel's lock so that order is kept.

use super::*;
use crate::connection::inline;

impl Table {
    /// Stamps each event on its channel and queues it for every recipient.
    pub(in crate::router) fn stamp_and_route(
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

    /// The events of a publish as a cluster engine stamps them: each
    /// envelope rendered around the place of its sequence.
    pub(in crate::router) fn batch(&self, prepared: &[Prepared]) -> Batch {
        let timestamp = protocol::timestamp(Utc::now());
        let channels = self.snap.registry.channels();
        let events = prepared
            .iter()
            .map(|p| {
                let t = &p.event_type;
                let (head, tail) = envelope::render_around_sequence(p, &timestamp);
                Sequencing {
                    channel: t.channel.clone(),
                    type_name: t.name.clone(),
                    head,
                    tail,
                    idempotency_key: p.idempotency_key.clone(),
                    emitter: p.emitter.clone(),
                    history: channels[&t.channel].history,
                }
            })
            .collect();
        Batch {
            events,
            idempotency_window: Duration::from_secs(self.snap.config.server.idempotency_window_s),
        }
    }

    /// Appends one event to its channel, which hands it to the fan-out in
    /// sequence order.
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
        let render = |sequence| Text::from(envelope::render(&p, timestamp, sequence));
        let appending = Appending {
            type_name: &t.name,
            idempotency_key: p.idempotency_key.as_deref(),
            idempotency_window: window,
            render: &render,
            settings,
        };
        let appended = channel.log.append(appending, &mut |stored, epoch| {
            let event = routed_event(channel, stored, epoch, settings, metrics);
            self.fan_out(&t.name, &event, Some(p.emitter.as_deref()), metrics);
        });
        if let Appended::New(_) = appended {
            metrics.accept(&t.name);
            let queued = self.recipients.get(&t.name).map_or(0, |r| r.len() as u64);
            coverage.produced(&t.name, queued);
        }
        Stamp {
            channel: t.channel.clone(),
            sequence: appended.sequence(),
            epoch: channel.log.epoch(),
        }
    }

    /// Delivers an event stamped by the cluster engine if it is its
    /// channel's next one (see [`Received`]); `Err` when it starts an epoch
    /// its channel has not had, to [reset](Self::reset) first.
    pub(in crate::router) fn receive(
        &self,
        event: &Sequenced,
        metrics: &Metrics,
        coverage: &Coverage,
    ) -> Result<Received, NewEpoch> {
        let (Some(channel), Some(settings)) = (
            self.channels.get(event.channel.as_str()),
            self.snap.registry.channels().get(event.channel.as_str()),
        ) else {
            return Ok(Received::UnknownChannel);
        };
        // A type this node does not know (yet: a reload not rolled out
        // here) still takes its place in the channel's order, or the
        // sequence would stall and the next event look like a gap.
        let t = self.snap.registry.resolve(&event.type_name);
        channel.log.accept(event, settings, &mut |stored, epoch| {
            let Some(t) = t else {
                return;
            };
            let routed = routed_event(channel, stored, epoch, settings, metrics);
            let sinks = event.to_sinks.then_some(event.emitter.as_deref());
            self.fan_out(&t.name, &routed, sinks, metrics);
            let queued = self.recipients.get(&t.name).map_or(0, |r| r.len() as u64);
            coverage.delivered(&t.name, queued);
        })
    }

    /// Starts a new epoch of `channel` (the cluster store lost its state):
    /// every connection that receives it is told its new position, and
    /// what was sent under the old epoch is forgotten. Says whether it did
    /// (not for an unknown channel, nor for an epoch it has had).
    pub(in crate::router) fn reset(&mut self, channel: &str, epoch: &str) -> bool {
        let Some(ch) = self.channels.get(channel) else {
            return false;
        };
        if !ch.log.is_new_epoch(epoch) {
            return false;
        }
        ch.log.reset(epoch);
        let name = ch.log.name.clone();
        let positions: Positions = [(name.clone(), (ch.log.epoch(), 0))].into_iter().collect();
        let announced = Self::channels_announced(&positions);
        for entry in self.conns.values_mut() {
            if !entry.channels.contains(channel) {
                continue;
            }
            entry.sent.forget(channel);
            entry.sent.open(&name, 0, &entry.subs);
            entry.conn.outbox.forget_channel(channel);
            entry.conn.outbox.push_control(announced.clone());
        }
        true
    }

    /// Declares events of `channel` lost up to `until`: every connection
    /// that receives the channel is told with `connection.lagged`. Says
    /// in which epoch, how many events that was, and to how many
    /// connections (`None`: nothing was behind `until`).
    pub(in crate::router) fn lose(
        &self,
        channel: &str,
        until: u64,
    ) -> Option<(Arc<str>, u64, usize)> {
        let ch = self.channels.get(channel)?;
        let after = ch.log.sequence();
        if until <= after {
            return None;
        }
        ch.log.lose(until);
        let epoch = ch.log.epoch();
        let mut told = 0;
        for entry in self.conns.values() {
            if entry.channels.contains(channel) {
                entry.conn.outbox.lost(&ch.log.name, &epoch, after, until);
                told += 1;
            }
        }
        Some((epoch, until - after, told))
    }

    /// Queues a stamped event for every connection that takes its type
    /// (deferring those a thread serves inline to its mailbox, see
    /// [`crate::connection::inline`], and waking the others), and, when
    /// `sinks` is given (with the emitting instance, if any), for every
    /// sink that does (a sink never gets what its own instance emitted).
    fn fan_out(
        &self,
        type_name: &Arc<str>,
        event: &Arc<Event>,
        sinks: Option<Option<&str>>,
        metrics: &Metrics,
    ) {
        if let Some(recipients) = self.recipients.get(type_name) {
            for conn in recipients.values() {
                conn.outbox.push_event(event);
                if !inline::defer(conn) {
                    conn.outbox.wake();
                }
            }
        }
        let Some(emitter) = sinks else {
            return;
        };
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
}

/// A kept event as every recipient's queue holds it.
fn routed_event(
    channel: &Routed,
    stored: &Stored,
    epoch: &Arc<str>,
    settings: &crate::config::ChannelConfig,
    metrics: &Metrics,
) -> Arc<Event> {
    Arc::new(Event {
        text: stored.frame.clone(),
        channel: channel.log.name.clone(),
        sequence: stored.sequence,
        policy: settings.slow_consumer,
        epoch: epoch.clone(),
        accepted: stored.at,
        delivered: channel.delivered(metrics).clone(),
    })
}
