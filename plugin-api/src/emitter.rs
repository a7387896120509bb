//! The [`Emitter`] seam between a plugin's threads and the router, and small
//! helpers every plugin needs around it: counting ([`bump`]), log throttling
//! ([`worth_logging`], and both at once: [`bump_and_log`]), emitting with counting ([`emit_counted`]), starting
//! threads ([`spawn_thread`]) and bounded joins ([`join_until`]).
//!
//! A plugin writes its services against `E: Emitter`; the router's [`Host`]
//! implements it, and tests implement it with a fake that records events.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{EmitError, Host, LogLevel};
use crate::PluginError;

/// Where events and logs go: the router's [`Host`], or a fake in tests.
pub trait Emitter: Clone + Send + Sync + 'static {
    /// Emits one event whose payload is JSON text; never blocks.
    fn emit_json(&self, event_type: &str, payload_json: &str) -> Result<(), EmitError>;

    /// Writes a log line.
    fn log(&self, level: LogLevel, message: &str);

    /// Spawns a plugin thread (the [`Host`] reports a panic in it as a failure).
    ///
    /// The default spawns a plain named thread, which is what a fake wants.
    fn spawn<F>(&self, name: &str, body: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(body)
    }
}

impl Emitter for Host {
    fn emit_json(&self, event_type: &str, payload_json: &str) -> Result<(), EmitError> {
        Host::emit_json(self, event_type, payload_json, None)
    }

    fn log(&self, level: LogLevel, message: &str) {
        Host::log(self, level, message);
    }

    fn spawn<F>(&self, name: &str, body: F) -> io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        Host::spawn(self, name, body)
    }
}

/// Adds one to `counter` and returns the new value.
pub fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// Whether the `n`th occurrence of a noisy problem should be logged: the
/// first ten, then at powers of two, so a flood cannot flood the log.
pub fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
}

/// Counts one more occurrence of a noisy problem in `counter` and logs it
/// when [`worth_logging`] says so; `message` is given the new count (for a
/// "… ({n} so far)" suffix) and is only formatted when logged.
pub fn bump_and_log<E: Emitter>(
    emitter: &E,
    counter: &AtomicU64,
    level: LogLevel,
    message: impl FnOnce(u64) -> String,
) {
    let n = bump(counter);
    if worth_logging(n) {
        emitter.log(level, &message(n));
    }
}

/// The counters of events a plugin did not get to the router, kept by
/// [`emit_counted`] (a plugin embeds them in its own counters).
#[derive(Debug, Default)]
pub struct EmitCounters {
    /// Events dropped because the router signalled backpressure.
    pub dropped_backpressure: AtomicU64,
    /// Events the router refused for another reason, or that did not serialize.
    pub emit_errors: AtomicU64,
}

/// The router stopped taking events ([`EmitError::Stopped`]): the emitting
/// thread should exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterStopped;

/// Emits `payload` as `event_type`; an event the router does not take is
/// dropped, counted and logged (throttled by [`worth_logging`]), so the
/// only error is [`RouterStopped`].
///
/// `plugin` starts every log line; `detail` follows the event type in the
/// backpressure warning (such as `" of api"`, or `""`):
/// `"{plugin}: router backpressure, dropped {event_type}{detail} ({n} dropped so far)"`
/// and `"{plugin}: the router refused {event_type}: {why} ({n} refused so far)"`.
pub fn emit_counted<E: Emitter, T: Serialize + ?Sized>(
    emitter: &E,
    counters: &EmitCounters,
    plugin: &str,
    event_type: &str,
    detail: &str,
    payload: &T,
) -> Result<(), RouterStopped> {
    let json = match serde_json::to_string(payload) {
        Ok(json) => json,
        Err(e) => {
            bump_and_log(emitter, &counters.emit_errors, LogLevel::Error, |n| {
                format!("{plugin}: cannot serialize {event_type}: {e} ({n} refused so far)")
            });
            return Ok(());
        }
    };
    let result = emitter.emit_json(event_type, &json);
    count_emit(emitter, counters, plugin, event_type, detail, result)
}

/// Counts and logs what [`Emitter::emit_json`] answered, as
/// [`emit_counted`] does, for a plugin that looked at the answer first (to
/// split an event the router found too large, say).
pub fn count_emit<E: Emitter>(
    emitter: &E,
    counters: &EmitCounters,
    plugin: &str,
    event_type: &str,
    detail: &str,
    result: Result<(), EmitError>,
) -> Result<(), RouterStopped> {
    let refused = |why: &str| {
        bump_and_log(emitter, &counters.emit_errors, LogLevel::Error, |n| {
            format!("{plugin}: the router refused {event_type}: {why} ({n} refused so far)")
        });
    };
    match result {
        Ok(()) => Ok(()),
        Err(EmitError::Stopped) => Err(RouterStopped),
        Err(EmitError::Backpressure) => {
            bump_and_log(
                emitter,
                &counters.dropped_backpressure,
                LogLevel::Warn,
                |n| {
                    format!(
                    "{plugin}: router backpressure, dropped {event_type}{detail} ({n} dropped so far)"
                )
                },
            );
            Ok(())
        }
        Err(e) => {
            refused(&e.to_string());
            Ok(())
        }
    }
}

/// Starts a plugin thread through `emitter` ([`Emitter::spawn`]); the error
/// names the thread ([`PluginError::Spawn`]: `cannot start thread {name}:
/// {why}`), ready to be returned from `start`.
pub fn spawn_thread<E: Emitter>(
    emitter: &E,
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, PluginError> {
    emitter
        .spawn(name, body)
        .map_err(|source| PluginError::Spawn {
            name: name.to_owned(),
            source,
        })
}

/// Joins `handle` if it finishes by `deadline`; otherwise leaves it running
/// and returns false.
pub fn join_until(handle: JoinHandle<()>, deadline: Instant) -> bool {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A panic was already reported by the thread's wrapper.
    let _ = handle.join();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Fake {
        logs: Arc<Mutex<Vec<String>>>,
        answer: Arc<Mutex<Option<EmitError>>>,
    }

    impl Emitter for Fake {
        fn emit_json(&self, _event_type: &str, _payload_json: &str) -> Result<(), EmitError> {
            match self.answer.lock().unwrap().clone() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn log(&self, _level: LogLevel, message: &str) {
            self.logs.lock().unwrap().push(message.to_owned());
        }
    }

    #[test]
    fn the_default_spawn_runs_a_named_thread() {
        let fake = Fake::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = fake
            .spawn("seam-test", move || {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            })
            .unwrap();
        handle.join().unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("seam-test"));
        assert_eq!(fake.emit_json("a.b", "{}"), Ok(()));
        fake.log(LogLevel::Info, "hi");
        assert_eq!(*fake.logs.lock().unwrap(), ["hi"]);
    }

    #[test]
    fn spawn_thread_runs_the_body() {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = spawn_thread(&Fake::default(), "seam-spawn", move || {
            tx.send(()).unwrap();
        })
        .unwrap();
        handle.join().unwrap();
        assert_eq!(rx.recv(), Ok(()));
    }

    #[test]
    fn emit_counted_counts_and_logs_what_is_not_sent() {
        let fake = Fake::default();
        let counters = EmitCounters::default();
        let emit = |payload: &serde_json::Value| {
            emit_counted(&fake, &counters, "demo", "a.b", " of x", payload)
        };
        let payload = serde_json::json!({"n": 1});
        assert_eq!(emit(&payload), Ok(()));
        *fake.answer.lock().unwrap() = Some(EmitError::Backpressure);
        assert_eq!(emit(&payload), Ok(()));
        *fake.answer.lock().unwrap() = Some(EmitError::InvalidPayload);
        assert_eq!(emit(&payload), Ok(()));
        *fake.answer.lock().unwrap() = Some(EmitError::Stopped);
        assert_eq!(emit(&payload), Err(RouterStopped));
        assert_eq!(counters.dropped_backpressure.load(Ordering::Relaxed), 1);
        assert_eq!(counters.emit_errors.load(Ordering::Relaxed), 1);
        let logs = fake.logs.lock().unwrap().clone();
        assert_eq!(
            logs,
            [
                "demo: router backpressure, dropped a.b of x (1 dropped so far)".to_owned(),
                format!(
                    "demo: the router refused a.b: {} (1 refused so far)",
                    EmitError::InvalidPayload
                ),
            ]
        );
    }

    #[test]
    fn bump_and_log_logs_what_worth_logging_lets_through() {
        let fake = Fake::default();
        let counter = AtomicU64::new(0);
        for _ in 0..16 {
            bump_and_log(&fake, &counter, LogLevel::Warn, |n| format!("#{n}"));
        }
        assert_eq!(counter.load(Ordering::Relaxed), 16);
        let logs = fake.logs.lock().unwrap().clone();
        assert_eq!(
            logs,
            ["#1", "#2", "#3", "#4", "#5", "#6", "#7", "#8", "#9", "#10", "#16"]
        );
    }

    #[test]
    fn bump_counts_up() {
        let counter = AtomicU64::new(0);
        assert_eq!(bump(&counter), 1);
        assert_eq!(bump(&counter), 2);
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn logging_is_throttled_after_ten() {
        let logged: Vec<u64> = (1..=100).filter(|n| worth_logging(*n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64]);
    }

    #[test]
    fn join_until_gives_up_at_the_deadline() {
        let quick = std::thread::spawn(|| {});
        assert!(join_until(quick, Instant::now() + Duration::from_secs(5)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(!join_until(
            stuck,
            Instant::now() + Duration::from_millis(20)
        ));
        drop(tx);
    }
}
