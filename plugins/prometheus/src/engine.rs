//! The shared [`Counters`], and emitting with counting.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use switchyard_plugin_api::{bump, EmitCounters, EmitError, Emitter, LogLevel};

/// What happened so far, shared by all of an instance's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) alerts: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) not_found: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) scrapes: AtomicU64,
    pub(crate) scrapes_empty: AtomicU64,
    pub(crate) scrape_failures: AtomicU64,
    /// Events not sent: dropped on backpressure, or refused (logged).
    pub(crate) emit: EmitCounters,
}

/// The counters of a running instance at one moment (see
/// [`Service::counters`](crate::Service::counters)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// HTTP requests answered (any status).
    pub requests: u64,
    /// Alerts accepted and emitted as `infrastructure.alert`.
    pub alerts: u64,
    /// Requests refused with 400 (bad JSON or shape), 405, 411 or 431.
    pub bad_requests: u64,
    /// Requests refused with 401 (missing or wrong bearer token).
    pub unauthorized: u64,
    /// Requests refused with 413 (body over `max_body_bytes`).
    pub too_large: u64,
    /// Requests for another path (404).
    pub not_found: u64,
    /// Connections refused over `max_connections` (503), or timed out / broken before a request.
    pub refused_connections: u64,
    /// Scrapes that read a page.
    pub scrapes: u64,
    /// Scrapes whose page matched no selector (nothing emitted).
    pub scrapes_empty: u64,
    /// Scrapes that failed (connection, status, timeout, size): logged, nothing emitted.
    pub scrape_failures: u64,
    /// Events dropped because the router signalled backpressure.
    pub dropped_backpressure: u64,
    /// Events the router refused for another reason (logged as errors).
    pub emit_errors: u64,
}

impl Counters {
    /// The current values.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: get(&self.requests),
            alerts: get(&self.alerts),
            bad_requests: get(&self.bad_requests),
            unauthorized: get(&self.unauthorized),
            too_large: get(&self.too_large),
            not_found: get(&self.not_found),
            refused_connections: get(&self.refused_connections),
            scrapes: get(&self.scrapes),
            scrapes_empty: get(&self.scrapes_empty),
            scrape_failures: get(&self.scrape_failures),
            dropped_backpressure: get(&self.emit.dropped_backpressure),
            emit_errors: get(&self.emit.emit_errors),
        }
    }
}

impl CounterSnapshot {
    /// A one-line summary for the log.
    pub(crate) fn summary(&self) -> String {
        format!(
            "requests={} alerts={} bad_requests={} unauthorized={} too_large={} not_found={} \
             refused_connections={} scrapes={} scrapes_empty={} scrape_failures={} \
             dropped_backpressure={} emit_errors={}",
            self.requests,
            self.alerts,
            self.bad_requests,
            self.unauthorized,
            self.too_large,
            self.not_found,
            self.refused_connections,
            self.scrapes,
            self.scrapes_empty,
            self.scrape_failures,
            self.dropped_backpressure,
            self.emit_errors
        )
    }
}

/// Emits one event, counting and logging a refusal. Returns the refusal.
pub(crate) fn emit<E: Emitter, T: Serialize + ?Sized>(
    emitter: &E,
    counters: &Counters,
    event_type: &str,
    payload: &T,
) -> Result<(), EmitError> {
    let json = serde_json::to_string(payload).map_err(|_| EmitError::InvalidPayload)?;
    match emitter.emit_json(event_type, &json) {
        Ok(()) => Ok(()),
        Err(EmitError::Backpressure) => {
            let n = bump(&counters.emit.dropped_backpressure);
            if n == 1 || n % 1000 == 0 {
                emitter.log(
                    LogLevel::Warn,
                    &format!("prometheus: router backpressure; {n} event(s) dropped so far"),
                );
            }
            Err(EmitError::Backpressure)
        }
        Err(EmitError::Stopped) => Err(EmitError::Stopped),
        Err(e) => {
            bump(&counters.emit.emit_errors);
            emitter.log(
                LogLevel::Error,
                &format!("prometheus: the router refused {event_type}: {e}; payload {json}"),
            );
            Err(e)
        }
    }
}
