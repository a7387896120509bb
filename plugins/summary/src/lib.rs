//! `summary`: a Switchyard sink and producer plugin (library stem
//! `switchyard_summary`, role both) that counts the events routed to it and,
//! at the end of each period, emits what it counted as `summary.hourly` and
//! `summary.daily`.
//!
//! # Configuration (`[plugins.config]`)
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `hourly_period_s` | `3600` | Length of a `summary.hourly` period in seconds (1 … ten years). |
//! | `daily_period_s` | `86400` | Length of a `summary.daily` period in seconds (1 … ten years). |
//! | `max_keys` | `256` | Most distinct keys in each of `by_type`, `by_camera`, `by_severity` per period; further keys are counted under `"_other"` (keeps a summary well under `server.max_event_bytes`). |
//!
//! An unknown key or a bad value is refused by `create` with a message
//! naming the key. What it counts is chosen by `[[routes]]`:
//!
//! ```toml
//! [[plugins]]
//! name = "summary"
//! library = "switchyard_summary"
//! [plugins.config]
//! hourly_period_s = 3600
//! daily_period_s = 86400
//!
//! [[routes]]
//! sink = "summary"
//! events = ["alert.*", "camera.*", "detection.new", "scene_change.*", "event.*"]
//! ```
//!
//! # Periods
//!
//! Periods are aligned to whole multiples of the period since the Unix epoch
//! (UTC): with the defaults, hours `HH:00:00`–`HH+1:00:00` and days from
//! midnight UTC. A (re)start begins counting in the middle of a period: that
//! first period of each kind is marked `partial: true` (unless the start
//! falls exactly on its boundary); every later one is `partial: false`.
//! `period_start` / `period_end` are always the aligned boundaries.
//!
//! An event counts in the period that holds its envelope `timestamp` (the
//! time the router accepted it) while that period is still open; a period is
//! emitted 250 ms after it ends, so events accepted just before a boundary
//! and delivered just after it still count in their own period. An event
//! arriving later than that (a long sink backlog) counts in the oldest open
//! period. Periods in which nothing was counted are emitted too (total 0). If
//! the clock jumps forward (or the machine slept), at most 24 periods of a
//! kind are emitted at once; older empty ones are skipped.
//!
//! Emission happens on the plugin's own thread, which sleeps until the next
//! boundary (waking at least every 100 ms to check for stop). `summary.*`
//! events are never counted (the router never delivers an instance's own
//! emits; others' are ignored too, defensively). An emit refused with
//! backpressure is retried every 100 ms for about 5 s, then dropped and
//! logged.
//!
//! **On stop** a period that has ended is still emitted (before `stop`
//! returns), but the period in progress is not: a half period is never
//! reported as if it were whole, and its counts are discarded. The next
//! start begins a new period marked `partial: true`, so consumers can tell
//! that the counts around a restart are incomplete.
//!
//! # Events
//!
//! Channel `summaries`: `summary.hourly` and `summary.daily`, with every
//! field always present:
//! - `period_start`, `period_end` — RFC 3339 UTC with milliseconds
//!   (`2026-11-23T06:00:00.000Z`); the end is exclusive;
//! - `total` — events counted in the period;
//! - `by_type` — object, event type → count;
//! - `by_camera` — object, `payload.camera_id` → count (events with a
//!   string or number `camera_id`);
//! - `by_severity` — object, `payload.severity` → count (events with a
//!   string or number `severity`);
//! - `partial` — true when counting began after `period_start`.
//!
//! A delivered event that is not a JSON envelope is refused by `deliver`
//! (the router logs and counts it).

mod config;
mod tally;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
/// The seam the service runs on, shared by all plugins (re-exported from the SDK).
pub use switchyard_plugin_api::Emitter;
use switchyard_plugin_api::{
    export_plugin, join_until, spawn_thread, EmitError, EventTypeDecl, Field, Host, LogLevel,
    Plugin, PluginError, PluginInfo, Role, Running,
};

pub use config::{Config, MAX_KEYS_LIMIT, MAX_PERIOD_S};
pub use tally::{period_start, rfc3339, Counts, Kind, Observation, Summary, Tally};

/// The hourly summary's event type.
pub const SUMMARY_HOURLY: &str = "summary.hourly";
/// The daily summary's event type.
pub const SUMMARY_DAILY: &str = "summary.daily";
/// The channel both summaries are emitted on.
pub const CHANNEL: &str = "summaries";
/// The key under which a breakdown counts keys beyond `max_keys`.
pub const OTHER_KEY: &str = "_other";

/// How long after its end a period is emitted (late deliveries settle).
pub const SETTLE_MS: i64 = 250;
/// The longest the emitting thread sleeps before looking at its stop flag.
const TICK: Duration = Duration::from_millis(100);
/// Attempts (one per tick) at an emit refused with backpressure.
const MAX_ATTEMPTS: u32 = 50;
/// How long `stop` waits for the thread.
const JOIN: Duration = Duration::from_millis(1500);

/// The event types this plugin emits, with their schemas.
pub fn declarations() -> Vec<EventTypeDecl> {
    [
        (
            SUMMARY_HOURLY,
            "Event counts of the past hour (hourly_period_s)",
        ),
        (
            SUMMARY_DAILY,
            "Event counts of the past day (daily_period_s)",
        ),
    ]
    .into_iter()
    .map(|(name, description)| {
        EventTypeDecl::new(name, CHANNEL, description)
            .field(
                "period_start",
                Field::string()
                    .required()
                    .describe("Start of the period, RFC 3339 UTC (aligned to the period)"),
            )
            .field(
                "period_end",
                Field::string()
                    .required()
                    .describe("End of the period (exclusive), RFC 3339 UTC"),
            )
            .field(
                "total",
                Field::integer()
                    .required()
                    .describe("Events counted in the period"),
            )
            .field(
                "by_type",
                Field::object().required().describe("Event type → count"),
            )
            .field(
                "by_camera",
                Field::object()
                    .required()
                    .describe("payload.camera_id → count, for events that carry one"),
            )
            .field(
                "by_severity",
                Field::object()
                    .required()
                    .describe("payload.severity → count, for events that carry one"),
            )
            .field(
                "partial",
                Field::boolean()
                    .required()
                    .describe("true when counting began after period_start (a (re)start)"),
            )
    })
    .collect()
}

/// The plugin before it starts: a validated [`Config`]. Starting it gives
/// the running [`Service`].
pub struct SummaryPlugin {
    config: Config,
}

impl Plugin for SummaryPlugin {
    type Running = Service<Host>;

    fn info() -> PluginInfo {
        declarations().into_iter().fold(
            PluginInfo::new("summary", env!("CARGO_PKG_VERSION"), Role::Both),
            PluginInfo::event_type,
        )
    }

    fn create(config: Value) -> Result<Self, PluginError> {
        let config = Config::from_value(config).map_err(PluginError::Config)?;
        Ok(SummaryPlugin { config })
    }

    fn start(self, host: Host) -> Result<Service<Host>, PluginError> {
        Service::start(&self.config, host, system_clock())
    }
}

impl Running for Service<Host> {
    fn deliver(&mut self, event: &str) -> Result<(), PluginError> {
        Service::deliver(self, event)
    }

    fn stop(self) {
        Service::stop(self);
    }
}

export_plugin!(SummaryPlugin);

/// The current time in milliseconds since the Unix epoch; injected so that
/// tests can drive periods without waiting for them.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// A summary waiting to be emitted.
#[derive(Debug)]
struct Pending {
    summary: Summary,
    attempts: u32,
}

#[derive(Debug)]
struct State {
    tally: Tally,
    /// Finished periods not emitted yet, oldest first.
    outbox: VecDeque<Pending>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    emitted: AtomicU64,
    dropped: AtomicU64,
    bad_events: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts stay usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running instance: the counts and the thread that emits them. The
/// [`SummaryPlugin`] runs one on the router's [`Host`]; tests may run one on
/// a fake [`Emitter`] and [`Clock`].
pub struct Service<E: Emitter> {
    emitter: E,
    clock: Clock,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl<E: Emitter> Service<E> {
    /// Starts counting now and starts the emitting thread; returns promptly.
    pub fn start(config: &Config, emitter: E, clock: Clock) -> Result<Service<E>, PluginError> {
        let now = clock();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tally: Tally::new(config, now, SETTLE_MS),
                outbox: VecDeque::new(),
            }),
            stop: AtomicBool::new(false),
            emitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bad_events: AtomicU64::new(0),
        });
        let thread = {
            let (shared, emitter2, clock) = (Arc::clone(&shared), emitter.clone(), clock.clone());
            spawn_thread(&emitter, "summary-emit", move || {
                run(&shared, &emitter2, &clock)
            })?
        };
        emitter.log(
            LogLevel::Info,
            &format!(
                "summary: counting routed events; summaries every {} s and {} s",
                config.hourly_period_s, config.daily_period_s
            ),
        );
        Ok(Service {
            emitter,
            clock,
            shared,
            thread: Some(thread),
        })
    }

    /// Counts one delivered envelope.
    pub fn deliver(&self, event: &str) -> Result<(), PluginError> {
        let obs = match observe(event) {
            Ok(obs) => obs,
            Err(e) => {
                self.shared.bad_events.fetch_add(1, Ordering::Relaxed);
                return Err(PluginError::Deliver(e));
            }
        };
        let now = (self.clock)();
        self.shared.lock().tally.record(&obs, now);
        Ok(())
    }

    /// Summaries emitted so far.
    pub fn emitted(&self) -> u64 {
        self.shared.emitted.load(Ordering::Relaxed)
    }

    /// Stops the thread, then emits the periods that have ended (but not
    /// the one in progress) before returning. Bounded: about 2.5 s at most.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if !join_until(thread, Instant::now() + JOIN) {
                self.emitter.log(
                    LogLevel::Warn,
                    "summary: the emitting thread did not stop in time; left behind",
                );
            }
        }
        let now = (self.clock)();
        let mut ended: VecDeque<Pending> = {
            let mut state = self.shared.lock();
            let ended = state.tally.take_ended(now);
            let mut all = std::mem::take(&mut state.outbox);
            all.extend(ended.into_iter().map(|summary| Pending {
                summary,
                attempts: 0,
            }));
            all
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Some(mut pending) = ended.pop_front() {
            match send(&self.shared, &self.emitter, &mut pending) {
                Sent::Retry if Instant::now() < deadline => {
                    ended.push_front(pending);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Sent::Retry => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Sent::Done => {}
                Sent::Stopped => break,
            }
        }
        let ignored = self.shared.lock().tally.ignored();
        self.emitter.log(
            LogLevel::Info,
            &format!(
                "summary: stopped; {} summaries emitted, {} dropped, {} undecodable events, \
                 {ignored} summary.* events ignored; the period in progress was not emitted",
                self.shared.emitted.load(Ordering::Relaxed),
                self.shared.dropped.load(Ordering::Relaxed),
                self.shared.bad_events.load(Ordering::Relaxed),
            ),
        );
    }
}

impl<E: Emitter> Drop for Service<E> {
    /// Dropped without [`Service::stop`]: the thread ends at its next tick.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// The fields of an envelope that the counts need; the rest is skipped.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    payload: Option<PayloadFields>,
}

#[derive(Deserialize)]
struct PayloadFields {
    #[serde(default)]
    camera_id: Option<Value>,
    #[serde(default)]
    severity: Option<Value>,
}

/// Reads what counts from one envelope.
pub fn observe(event: &str) -> Result<Observation, String> {
    let envelope: Envelope =
        serde_json::from_str(event).map_err(|e| format!("summary: not an event envelope ({e})"))?;
    let label = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (camera_id, severity) = match envelope.payload {
        Some(p) => (label(p.camera_id), label(p.severity)),
        None => (None, None),
    };
    let at_ms = envelope
        .timestamp
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    Ok(Observation {
        event_type: envelope.event_type,
        camera_id,
        severity,
        at_ms,
    })
}

enum Sent {
    Done,
    Retry,
    Stopped,
}

fn send<E: Emitter>(shared: &Shared, emitter: &E, pending: &mut Pending) -> Sent {
    let summary = &pending.summary;
    let payload = summary.payload().to_string();
    let kind = summary.kind.event_type();
    match emitter.emit_json(kind, &payload) {
        Ok(()) => {
            shared.emitted.fetch_add(1, Ordering::Relaxed);
            emitter.log(
                LogLevel::Debug,
                &format!(
                    "summary: emitted {kind} for {} (total {})",
                    rfc3339(summary.start_ms),
                    summary.counts.total
                ),
            );
            Sent::Done
        }
        Err(EmitError::Backpressure) => {
            pending.attempts += 1;
            if pending.attempts < MAX_ATTEMPTS {
                return Sent::Retry;
            }
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            emitter.log(
                LogLevel::Warn,
                &format!(
                    "summary: dropped {kind} for {}: the router refused it with backpressure {} times",
                    rfc3339(summary.start_ms),
                    pending.attempts
                ),
            );
            Sent::Done
        }
        Err(EmitError::Stopped) => Sent::Stopped,
        Err(e) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            emitter.log(
                LogLevel::Error,
                &format!(
                    "summary: the router refused {kind} for {} ({e}; {} bytes)",
                    rfc3339(summary.start_ms),
                    payload.len()
                ),
            );
            Sent::Done
        }
    }
}

/// The emitting thread: at each boundary (plus [`SETTLE_MS`]) moves the
/// finished periods to the outbox and emits them, oldest first.
fn run<E: Emitter>(shared: &Shared, emitter: &E, clock: &Clock) {
    while !shared.stop.load(Ordering::SeqCst) {
        let now = clock();
        let (front, next_due) = {
            let mut state = shared.lock();
            let due = state.tally.take_due(now);
            state.outbox.extend(due.into_iter().map(|summary| Pending {
                summary,
                attempts: 0,
            }));
            (state.outbox.pop_front(), state.tally.next_due())
        };
        if let Some(mut pending) = front {
            match send(shared, emitter, &mut pending) {
                Sent::Done => continue,
                Sent::Retry => shared.lock().outbox.push_front(pending),
                Sent::Stopped => {
                    shared.lock().outbox.push_front(pending);
                    return;
                }
            }
            std::thread::sleep(TICK);
            continue;
        }
        let wait = u64::try_from(next_due.saturating_sub(now)).unwrap_or(0);
        std::thread::sleep(TICK.min(Duration::from_millis(wait.max(1))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    #[test]
    fn info_declares_both_summaries_with_full_schemas() {
        let info = SummaryPlugin::info();
        assert_eq!(info.name, "summary");
        assert_eq!(info.role, Role::Both);
        let names: Vec<&str> = info.event_types.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, [SUMMARY_HOURLY, SUMMARY_DAILY]);
        for decl in &info.event_types {
            assert_eq!(decl.channel.as_deref(), Some(CHANNEL));
            let payload = decl.payload.as_ref().unwrap();
            let fields: Vec<&str> = payload.keys().map(String::as_str).collect();
            assert_eq!(
                fields,
                [
                    "by_camera",
                    "by_severity",
                    "by_type",
                    "partial",
                    "period_end",
                    "period_start",
                    "total"
                ]
            );
            assert!(payload.values().all(|f| f.required));
            assert!(!decl.additional_fields);
        }
    }

    #[test]
    fn create_validates_without_side_effects() {
        let err = SummaryPlugin::create(serde_json::json!({"bogus": 1}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("`bogus`"), "{err}");
        // Only a started plugin (a `Service`) receives events: the types say so.
        assert!(SummaryPlugin::create(serde_json::json!({"hourly_period_s": 2})).is_ok());
    }

    #[test]
    fn observe_reads_type_timestamp_camera_and_severity() {
        let o = observe(
            r#"{"type":"alert.created","payload":{"id":"a","severity":"high","camera_id":"front","x":{"y":1}},"timestamp":"2026-11-23T06:00:00.123Z","channel":"alerts","sequence":4}"#,
        )
        .unwrap();
        assert_eq!(o.event_type, "alert.created");
        assert_eq!(o.camera_id.as_deref(), Some("front"));
        assert_eq!(o.severity.as_deref(), Some("high"));
        assert_eq!(o.at_ms, Some(1_795_413_600_123));
        let o = observe(r#"{"type":"a.b","payload":{"camera_id":7,"severity":null}}"#).unwrap();
        assert_eq!(o.camera_id.as_deref(), Some("7"));
        assert_eq!((o.severity, o.at_ms), (None, None));
        assert!(observe("not json").is_err());
        assert!(observe(r#"{"payload":{}}"#).is_err(), "no type");
    }

    #[derive(Clone, Default)]
    struct Fake {
        emitted: Arc<Mutex<Vec<(String, Value)>>>,
        refuse: Arc<AtomicU64>,
    }

    impl Emitter for Fake {
        fn emit_json(&self, event_type: &str, payload_json: &str) -> Result<(), EmitError> {
            if self.refuse.load(Ordering::SeqCst) > 0 {
                self.refuse.fetch_sub(1, Ordering::SeqCst);
                return Err(EmitError::Backpressure);
            }
            let payload: Value = serde_json::from_str(payload_json).unwrap();
            // The router's own payload rules, as it would apply them.
            let decl = declarations().into_iter().find(|d| d.name == event_type);
            let problems = decl.expect("a declared type").check_payload(&payload);
            assert!(
                problems.is_empty(),
                "{event_type}: {problems:?} in {payload}"
            );
            self.emitted
                .lock()
                .unwrap()
                .push((event_type.to_owned(), payload));
            Ok(())
        }
        fn log(&self, _level: LogLevel, _message: &str) {}
    }

    impl Fake {
        fn wait_for(&self, n: usize) -> Vec<(String, Value)> {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let got = self.emitted.lock().unwrap().clone();
                if got.len() >= n || Instant::now() > deadline {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    const T0: i64 = 1_795_413_600_000;

    fn fake_clock(start: i64) -> (Arc<AtomicI64>, Clock) {
        let now = Arc::new(AtomicI64::new(start));
        let read = Arc::clone(&now);
        (now, Arc::new(move || read.load(Ordering::SeqCst)))
    }

    fn envelope(t: &str, severity: &str, at: i64) -> String {
        serde_json::json!({
            "type": t, "payload": {"id": "x", "severity": severity},
            "timestamp": rfc3339(at), "channel": "alerts", "sequence": 1
        })
        .to_string()
    }

    #[test]
    fn the_thread_emits_at_boundaries_with_an_injected_clock() {
        let (now, clock) = fake_clock(T0 + 700);
        let fake = Fake::default();
        let config = Config {
            hourly_period_s: 2,
            daily_period_s: 4,
            max_keys: 16,
        };
        let service = Service::start(&config, fake.clone(), clock).unwrap();
        service
            .deliver(&envelope("alert.created", "high", T0 + 800))
            .unwrap();
        service
            .deliver(&envelope("alert.created", "low", T0 + 900))
            .unwrap();
        now.store(T0 + 2_000 + SETTLE_MS, Ordering::SeqCst);
        let got = fake.wait_for(1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, SUMMARY_HOURLY);
        let p = &got[0].1;
        assert_eq!(p["total"], 2);
        assert_eq!(p["partial"], true);
        assert_eq!(p["by_type"], serde_json::json!({"alert.created": 2}));
        assert_eq!(p["by_severity"], serde_json::json!({"high": 1, "low": 1}));
        assert_eq!(p["by_camera"], serde_json::json!({}));
        assert_eq!(p["period_start"], rfc3339(T0));
        assert_eq!(p["period_end"], rfc3339(T0 + 2_000));

        service
            .deliver(&envelope("alert.created", "low", T0 + 2_500))
            .unwrap();
        // Backpressure twice: retried, not lost.
        fake.refuse.store(2, Ordering::SeqCst);
        now.store(T0 + 4_000 + SETTLE_MS, Ordering::SeqCst);
        let got = fake.wait_for(3);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[1].0, SUMMARY_HOURLY);
        assert_eq!(got[1].1["partial"], false);
        assert_eq!(got[1].1["total"], 1);
        assert_eq!(got[2].0, SUMMARY_DAILY);
        assert_eq!(got[2].1["partial"], true);
        assert_eq!(got[2].1["total"], 3);

        // Stop mid-period: the half period is not emitted.
        service
            .deliver(&envelope("alert.created", "low", T0 + 4_500))
            .unwrap();
        now.store(T0 + 5_000, Ordering::SeqCst);
        let started = Instant::now();
        service.stop();
        assert!(started.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(fake.emitted.lock().unwrap().len(), 3);
    }

    #[test]
    fn stop_emits_a_period_that_ended_but_had_not_settled() {
        let (now, clock) = fake_clock(T0 + 700);
        let fake = Fake::default();
        let config = Config {
            hourly_period_s: 2,
            daily_period_s: 3600,
            max_keys: 16,
        };
        let service = Service::start(&config, fake.clone(), clock).unwrap();
        service
            .deliver(&envelope("alert.created", "high", T0 + 800))
            .unwrap();
        now.store(T0 + 2_010, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        assert!(fake.emitted.lock().unwrap().is_empty(), "still settling");
        service.stop();
        let got = fake.emitted.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1["total"], 1);
    }

    #[test]
    fn bad_envelopes_are_refused_and_summaries_ignored() {
        let (_now, clock) = fake_clock(T0);
        let fake = Fake::default();
        let service = Service::start(&Config::default(), fake, clock).unwrap();
        assert!(service.deliver("[1,2").is_err());
        service
            .deliver(&envelope(SUMMARY_HOURLY, "low", T0))
            .unwrap();
        assert_eq!(service.shared.lock().tally.ignored(), 1);
        assert_eq!(service.shared.bad_events.load(Ordering::Relaxed), 1);
        service.stop();
    }
}
