//! The shared [`Counters`], and emitting with counting.

use serde::Serialize;
use switchyard_plugin_api::{bump, counters, EmitError, Emitter, LogLevel};

counters! {
    /// What happened so far, shared by all of an instance's threads.
    pub(crate) struct Counters;
    /// The counters of a running instance at one moment (see
    /// [`Service::counters`](crate::Service::counters)).
    pub struct CounterSnapshot {
        /// HTTP requests answered (any status).
        requests,
        /// Alerts accepted and emitted as `infrastructure.alert`.
        alerts,
        /// Requests refused with 400 (bad JSON or shape), 405, 411 or 431.
        bad_requests,
        /// Requests refused with 401 (missing or wrong bearer token).
        unauthorized,
        /// Requests refused with 413 (body over `max_body_bytes`).
        too_large,
        /// Requests for another path (404).
        not_found,
        /// Connections refused over `max_connections` (503), or timed out / broken before a request.
        refused_connections,
        /// Scrapes that read a page.
        scrapes,
        /// Scrapes whose page matched no selector (nothing emitted).
        scrapes_empty,
        /// Scrapes that failed (connection, status, timeout, size): logged, nothing emitted.
        scrape_failures,
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
            // A payload too large for one event is too large for a log line.
            let shown = if e == EmitError::TooLarge {
                format!("{} bytes", json.len())
            } else {
                json
            };
            emitter.log(
                LogLevel::Error,
                &format!("prometheus: the router refused {event_type}: {e}; payload {shown}"),
            );
            Err(e)
        }
    }
}
