//! Stamping events on their channel and fanning them out to connections
//! and sinks, under the channel's lock so that order is kept.

use super::*;

impl Table {
    /// Stamps each event on its channel and queues it for every recipient.
    /// A log that cannot append stops the publish there: the events before
    /// it stay accepted and are named in the error.
    pub(in crate::router) fn stamp_and_route(
        &self,
        prepared: Vec<Prepared>,
        metrics: &Metrics,
        coverage: &Coverage,
    ) -> Result<Vec<Stamp>, PublishError> {
        let timestamp = protocol::timestamp(Utc::now());
        let window = Duration::from_secs(self.snap.config.server.idempotency_window_s);
        let mut accepted = Vec::with_capacity(prepared.len());
        for p in prepared {
            match self.stamp_one(p, &timestamp, window, metrics, coverage) {
                Ok(stamp) => accepted.push(stamp),
                Err(error) => return Err(PublishError::Unavailable { accepted, error }),
            }
        }
        Ok(accepted)
    }

    /// Appends one event to its channel's log, which hands it to the
    /// fan-out in sequence order (see `log`).
    fn stamp_one(
        &self,
        p: Prepared,
        timestamp: &str,
        window: Duration,
        metrics: &Metrics,
        coverage: &Coverage,
    ) -> Result<Stamp, LogError> {
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
        let appended = channel.log.append(appending, &mut |stored| {
            let event = Arc::new(Event {
                text: stored.frame.clone(),
                channel: t.channel.clone(),
                sequence: stored.sequence,
                policy: settings.slow_consumer,
                epoch: channel.log.epoch(),
                accepted: stored.at,
                delivered: channel.delivered(metrics).clone(),
            });
            self.fan_out(&t.name, &event, p.emitter.as_deref(), metrics);
        })?;
        if let Appended::New(_) = appended {
            let label = TypeLabel {
                r#type: t.name.to_string(),
            };
            metrics.accepted.get_or_create(&label).inc();
            let queued = self.recipients.get(&t.name).map_or(0, |r| r.len() as u64);
            coverage.produced(&t.name, queued);
        }
        Ok(Stamp {
            channel: t.channel.clone(),
            sequence: appended.sequence(),
        })
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
