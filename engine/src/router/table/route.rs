//! Stamping events on their channel and fanning them out to connections
//! and sinks, under the channel's lock so that order is kept.

use super::*;

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
}
