//! `detection`: a Switchyard producer plugin (library stem
//! `switchyard_detection`) that takes object detections from cameras, as
//! JSON lines over TCP and/or from a built-in simulator, emits each one, and
//! groups each camera's detections into batches.
//!
//! # Configuration (`[plugins.config]`)
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `listen` | `"127.0.0.1:9101"` | TCP JSON-lines input address (an IP and port; host names are not resolved). `""` or `false` turns TCP input off. |
//! | `max_line_bytes` | `65536` | Longest input line (newline excluded). A longer line is skipped up to its newline and counted; the connection stays open. |
//! | `max_connections` | `64` | Most TCP connections open at once. A new one past it is still accepted: the connection silent the longest (one that never sent a line first) is closed to make room, logged and counted. |
//! | `idle_timeout_s` | `60` | A TCP connection silent this long (fractions allowed) is closed, logged and counted. |
//! | `allow_from` | any peer | List of CIDRs (`"10.0.0.0/8"`, `"::1"`); a peer outside them is closed at once and counted. Must not be empty. |
//! | `simulate` | off | `{ cameras = N, rate_per_s = R }`: N cameras `cam-1` … `cam-N` emitting R detections per second in total (R may be fractional), with random labels, confidences and boxes, and rarely a scene change. |
//! | `batch_window_s` | `90` | A batch closes this many seconds after it opened (fractions allowed). |
//! | `batch_idle_s` | `30` | A batch closes after this many seconds without a detection. |
//! | `progress_interval_ms` | `1000` | At most one `batch.progress` per open batch per interval. |
//!
//! An unknown key, a bad value, or no input at all (`listen` off and no
//! `simulate`) is refused by `create` with a message naming the key.
//!
//! # Input lines
//!
//! ```json
//! {"camera_id":"front_door","label":"person","confidence":0.93,"bbox":{"x":10,"y":20,"width":100,"height":200},"detected_at":"2026-11-23T06:00:00Z","frame_id":"f-1"}
//! {"kind":"scene_change","camera_id":"front_door","change_type":"view_blocked","similarity_score":0.31}
//! ```
//!
//! `kind` is `"detection"` (the default) or `"scene_change"`. `detected_at`
//! (RFC 3339) is optional and defaults to the time of arrival. `confidence`
//! and `similarity_score` lie in 0..=1; `change_type` is one of
//! `view_blocked`, `angle_changed`, `view_tampered`, `unknown`. Other fields
//! (such as `frame_id`) are ignored. A line that is not such a record is
//! counted and logged as a warning; the connection carries on.
//!
//! # Events
//!
//! Channel `detections`:
//! - `detection.new` — `detection_id`, `camera_id`, `label`, `confidence`,
//!   `bbox` `{x, y, width, height}`, `detected_at`, `batch_id`;
//! - `batch.opened` — `batch_id`, `camera_id`, `started_at`: a camera's
//!   detection found no open batch (emitted before that `detection.new`);
//! - `batch.progress` — `batch_id`, `camera_id`, `detection_count`,
//!   `last_detection_at`: the batch grew since it was last reported; at most
//!   one per batch per `progress_interval_ms`;
//! - `detection.batch` — `batch_id`, `camera_id`, `detection_ids` (arrival
//!   order), `detection_count`, `labels` (distinct, sorted), `started_at`,
//!   `closed_at`: a batch closed. A batch the router refuses as too large
//!   (`server.max_event_bytes`) is sent as several, numbered `part` (from 1)
//!   of `parts`, each with its share of `detection_ids`; `detection_count`
//!   and `labels` stay the whole batch's;
//! - `batch.closed` — `batch_id`, `camera_id`, `detection_count`, `reason`
//!   (`window`: `batch_window_s` after it opened; `idle`: no detection for
//!   `batch_idle_s`; `stopped`: the plugin stopped), right after its
//!   `detection.batch`.
//!
//! Channel `scene_changes`: `scene_change.detected` — `camera_id`,
//! `change_type`, `similarity_score`, `detected_at`.
//!
//! Every field is always present, but `part` and `parts`. Timestamps are RFC 3339 UTC with
//! milliseconds. Batch timing follows arrival time, not `detected_at`;
//! `started_at`/`closed_at` are arrival/close times. On stop, open batches
//! are closed with reason `stopped` before `stop` returns.
//!
//! Events refused for backpressure are dropped and counted. Counters (bad,
//! oversized lines, refused connections, dropped events) are logged every
//! minute when they changed, and at stop.

mod batcher;
mod config;
mod engine;
mod events;
mod input;
mod simulate;
mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_plugin_api::{
    bind_polled, export_plugin, join_until, spawn_thread, Host, LogLevel, Plugin, PluginError,
    PluginInfo, Role, Running,
};

pub use config::{Cidr, Config, SimulateConfig, DEFAULT_LISTEN};
pub use engine::CounterSnapshot;
/// The seam the service runs on, shared by all plugins (re-exported from the SDK).
pub use switchyard_plugin_api::Emitter;

use batcher::{Batcher, Timing};
use engine::{Counters, Engine, Msg};

/// Records waiting for the engine; a full queue slows the inputs down
/// (TCP flow control) rather than growing.
const QUEUE: usize = 1024;
/// How long `stop` waits for the input threads, then for the engine.
const JOIN_INPUTS: Duration = Duration::from_millis(1500);
const JOIN_ENGINE: Duration = Duration::from_millis(1500);

/// The plugin before it starts: a validated [`Config`]. Starting it
/// gives the running [`Service`].
pub struct Detection {
    config: Config,
}

impl Plugin for Detection {
    type Running = Service<Host>;

    fn info() -> PluginInfo {
        events::declarations().into_iter().fold(
            PluginInfo::new("detection", env!("CARGO_PKG_VERSION"), Role::Producer),
            PluginInfo::event_type,
        )
    }

    fn create(config: serde_json::Value) -> Result<Self, PluginError> {
        let config = Config::from_value(config).map_err(PluginError::Config)?;
        Ok(Detection { config })
    }

    fn start(self, host: Host) -> Result<Service<Host>, PluginError> {
        Service::start(&self.config, host)
    }
}

impl Running for Service<Host> {
    fn stop(self) {
        Service::stop(self);
    }
}

export_plugin!(Detection);

/// A running instance: its threads (engine, TCP accept loop and
/// connections, simulator) and the means to stop them. [`Detection`] runs
/// one on the router's [`Host`]; tests may run one on a fake [`Emitter`].
pub struct Service<E: Emitter> {
    emitter: E,
    shutdown: Arc<AtomicBool>,
    tx: SyncSender<Msg>,
    inputs: Vec<JoinHandle<()>>,
    engine: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
}

impl<E: Emitter> Service<E> {
    /// Binds the listener and starts the threads; returns promptly.
    pub fn start(config: &Config, emitter: E) -> Result<Service<E>, PluginError> {
        let listener = config.listen.map(bind_polled).transpose()?;
        let (tx, rx) = sync_channel(QUEUE);
        let mut service = Service {
            emitter: emitter.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            tx,
            inputs: Vec::new(),
            engine: None,
            local_addr: listener.as_ref().map(|(_, local)| *local),
            counters: Arc::new(Counters::default()),
        };
        let engine = Engine::new(
            emitter.clone(),
            Batcher::new(Timing {
                window: config.batch_window,
                idle: config.batch_idle,
                progress_interval: config.progress_interval,
            }),
            Arc::clone(&service.counters),
            Arc::clone(&service.shutdown),
        );
        service.engine = Some(spawn_thread(&emitter, "detection-engine", move || {
            engine.run(rx)
        })?);
        if let Some((listener, local)) = listener {
            let limits = tcp::Limits {
                max_line_bytes: config.max_line_bytes,
                max_connections: config.max_connections,
                allow_from: config.allow_from.clone(),
                idle_timeout: config.idle_timeout,
            };
            let shared = Arc::new(tcp::Shared {
                emitter: emitter.clone(),
                tx: service.tx.clone(),
                counters: Arc::clone(&service.counters),
                shutdown: Arc::clone(&service.shutdown),
            });
            let accept = spawn_thread(&emitter, "detection-tcp", move || {
                tcp::serve(listener, limits, shared)
            })?;
            service.inputs.push(accept);
            emitter.log(
                LogLevel::Info,
                &format!("detection: listening for JSON lines on {local}"),
            );
        }
        if let Some(sim) = config.simulate.clone() {
            let (tx, shutdown) = (service.tx.clone(), Arc::clone(&service.shutdown));
            emitter.log(
                LogLevel::Info,
                &format!(
                    "detection: simulating {} cameras at {} detections/s",
                    sim.cameras, sim.rate_per_s
                ),
            );
            let thread = spawn_thread(&emitter, "detection-sim", move || {
                simulate::run(sim, tx, &shutdown)
            })?;
            service.inputs.push(thread);
        }
        Ok(service)
    }

    /// The address the TCP input is bound to (useful with port 0), if on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Stops the inputs, then the engine, which closes the open batches
    /// (reason `stopped`) and emits them before this returns. Bounded: it
    /// gives up on a thread that does not finish within about 3 s.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + JOIN_INPUTS;
        for handle in std::mem::take(&mut self.inputs) {
            if !join_until(handle, deadline) {
                self.emitter.log(
                    LogLevel::Warn,
                    "detection: an input thread did not stop in time; left behind",
                );
            }
        }
        let deadline = Instant::now() + JOIN_ENGINE;
        // The inputs are stopped, so the queue drains: Stop gets in.
        loop {
            match self.tx.try_send(Msg::Stop) {
                Err(TrySendError::Full(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break,
            }
        }
        if let Some(engine) = self.engine.take() {
            if !join_until(engine, deadline) {
                self.emitter.log(
                    LogLevel::Warn,
                    "detection: the engine did not stop in time; open batches may not be closed",
                );
            }
        }
    }
}

impl<E: Emitter> Drop for Service<E> {
    /// Dropped without [`Service::stop`] (e.g. a failed start): signal every
    /// thread to finish, without waiting.
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Msg::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_six_producer_types() {
        let info = Detection::info();
        assert_eq!(info.name, "detection");
        assert_eq!(info.role, Role::Producer);
        let names: Vec<&str> = info.event_types.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "detection.new",
                "detection.batch",
                "batch.opened",
                "batch.progress",
                "batch.closed",
                "scene_change.detected"
            ]
        );
    }

    #[test]
    fn create_validates_without_side_effects() {
        let err = Detection::create(serde_json::json!({"bogus": 1}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("`bogus`"), "{err}");
        // Port 1 would need privileges to bind: create must not try.
        let ok = Detection::create(serde_json::json!({"listen": "127.0.0.1:1"})).unwrap();
        assert_eq!(ok.config.listen, Some("127.0.0.1:1".parse().unwrap()));
    }
}
