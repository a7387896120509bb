//! A delivery, counted: what both transports call when an event leaves
//! for its client, so that `switchyard_deliveries_total` and
//! `switchyard_delivery_latency_seconds` cover WebSockets and event
//! streams alike (docs/operations.md, "Metrics").

use std::time::Instant;

use crate::connection::Frame;
use crate::metrics::Metrics;

/// Counts `frame`, if it is a live event, as delivered, with its latency
/// from acceptance to `now` (read once, at the first event, for a whole
/// batch).
pub(super) fn count(frame: &Frame, metrics: &Metrics, now: &mut Option<Instant>) {
    if let Some(event) = frame.event() {
        let now = *now.get_or_insert_with(Instant::now);
        event.delivered.inc();
        metrics
            .latency
            .observe(now.saturating_duration_since(event.accepted));
    }
}
