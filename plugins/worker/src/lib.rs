//! `worker`: a Switchyard producer plugin (library stem `switchyard_worker`)
//! that health-checks workers over HTTP or TCP and emits their state changes
//! as `worker.*` events on channel `workers`.
//!
//! # Configuration (`[plugins.config]`)
//!
//! One key, `workers`: a list of tables, one per worker.
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `name` | required | The worker's name (unique within the instance; 1–128 bytes); the events' `worker_name`. |
//! | `type` | required | `detection`, `analysis`, `timeout` or `metrics`; the events' `worker_type`. |
//! | `check` | required | `http://host[:port][/path][?query]`: healthy when a `GET` answers 2xx (redirects are not followed; `https://` is not supported); or `tcp://host:port`: healthy when a TCP connection is accepted. |
//! | `interval_ms` | `5000` | From the start of one check to the start of the next (10 ms to a day). The first check runs at start; checks of one worker never overlap. |
//! | `timeout_ms` | `2000` | A check (name lookup, connect, request, status line) that takes longer fails with `timed out after N ms` (1 ms to 5 min). |
//! | `failure_threshold` | `3` | Failed checks in a row that make the worker down (≥ 1). |
//! | `restart_command` | none | The program and its arguments, e.g. `["systemctl", "restart", "analysis"]`, run without a shell after the worker goes down. Not a shell line: use `["sh", "-c", "…"]` for one. |
//! | `restart_backoff_s` | `30` | At most one run of `restart_command` per this many seconds (fractions allowed; 0 = at every failed check while down). |
//!
//! ```toml
//! [[plugins]]
//! name = "workers"
//! library = "switchyard_worker"
//! [plugins.config]
//! workers = [
//!   { name = "router", type = "metrics", check = "http://127.0.0.1:8080/health" },
//! ]
//!
//! # or, one table per worker (each inline table above must stay on one line):
//! [[plugins.config.workers]]
//! name = "redis"
//! type = "timeout"
//! check = "tcp://127.0.0.1:6379"
//! interval_ms = 10000
//! failure_threshold = 2
//! restart_command = ["systemctl", "restart", "redis"]
//! ```
//!
//! An unknown key (`workers[0].intervl_ms`), a bad value, a duplicate name
//! or an empty `workers` is refused by `create` with a message naming the
//! key. `create` resolves no names and opens nothing.
//!
//! # Events
//!
//! Channel `workers`, one payload for all six types:
//!
//! | field | type | meaning |
//! |-------|------|---------|
//! | `worker_name` | string | The worker's `name`. |
//! | `worker_type` | string enum | `detection`, `analysis`, `timeout`, `metrics`. |
//! | `state` | string enum | The state after the event: `stopped`, `starting`, `running`, `stopping`, `error`. |
//! | `timestamp` | string | When the check behind the event ended (RFC 3339 UTC, milliseconds). |
//! | `error` | string or null | Why the latest check failed (`HTTP 503 Service Unavailable`, `connect to 127.0.0.1:9000: Connection refused (os error 111)`, `timed out after 2000 ms`); null on `started` / `recovered`. |
//! | `consecutive_failures` | integer | Failed checks in a row, the latest included; 0 on `started` / `recovered`. |
//!
//! - `worker.started` (`running`): the worker's first healthy check since
//!   the instance started.
//! - `worker.health_check_failed` (`running`, or `starting` before the first
//!   healthy check): each failed check while the worker is up, up to and
//!   including the one that reaches `failure_threshold`.
//! - `worker.error` (`error`) then `worker.stopped` (`stopped`): right after
//!   the check that reached the threshold. Further failed checks emit
//!   nothing.
//! - `worker.restarting` (`starting`): right after `worker.stopped` when the
//!   worker has a `restart_command`, which then runs; while the worker stays
//!   down, again at the first failed check after each `restart_backoff_s`
//!   (never while the previous run has not exited).
//! - `worker.recovered` (`running`): a healthy check after the worker went
//!   down (`worker.started` instead if it had never been up).
//!
//! A healthy check below the threshold just resets the count. `stopping` is
//! part of the payload contract but never emitted: stopping the plugin stops
//! the checks, not the workers, so it emits nothing.
//!
//! # Running
//!
//! One thread per worker; each check runs on a short-lived thread of its
//! own, so a check stuck in a name lookup cannot delay the schedule or
//! `stop`, which returns within milliseconds (an abandoned check ends by
//! itself within `timeout_ms`). `restart_command` is started with
//! `std::process::Command` (no shell, stdin/stdout/stderr to `/dev/null`,
//! the router's environment and working folder; a relative program is looked
//! up on `PATH`); a reaper thread logs its exit status, so no worker ever
//! waits for it, and a stopped plugin leaves it running. Events refused for
//! backpressure are dropped and counted; transitions and restarts are logged
//! through the router.

mod config;
mod engine;
mod events;
mod machine;
mod probe;

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_plugin_api::{
    export_plugin, join_until, Host, LogLevel, Plugin, PluginError, PluginInfo, Role, Running,
};

pub use config::{
    Check, Config, WorkerConfig, WorkerType, DEFAULT_FAILURE_THRESHOLD, DEFAULT_INTERVAL_MS,
    DEFAULT_RESTART_BACKOFF_S, DEFAULT_TIMEOUT_MS,
};
pub use engine::CounterSnapshot;
pub use machine::{EventKind, Machine, Outcome, State, Step};
/// The seam the service runs on, shared by all plugins (re-exported from the SDK).
pub use switchyard_plugin_api::Emitter;

use engine::{Counters, Msg, WorkerLoop};

/// How long `stop` waits for the worker threads. They only ever wait on
/// their channel or call the non-blocking `emit`, so they exit at once.
const JOIN: Duration = Duration::from_millis(1500);

/// The plugin before it starts: a validated [`Config`]. Starting it
/// gives the running [`Service`].
pub struct Worker {
    config: Config,
}

impl Plugin for Worker {
    type Running = Service<Host>;

    fn info() -> PluginInfo {
        events::declarations().into_iter().fold(
            PluginInfo::new("worker", env!("CARGO_PKG_VERSION"), Role::Producer),
            PluginInfo::event_type,
        )
    }

    fn create(config: serde_json::Value) -> Result<Self, PluginError> {
        let config = Config::from_value(config).map_err(PluginError::Config)?;
        Ok(Worker { config })
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

export_plugin!(Worker);

/// A running instance: one thread per worker and the means to stop them.
/// [`Worker`] runs one on the router's [`Host`]; tests may run one on a fake
/// [`Emitter`].
pub struct Service<E: Emitter> {
    emitter: E,
    stops: Vec<Sender<Msg>>,
    threads: Vec<(String, JoinHandle<()>)>,
    counters: Arc<Counters>,
}

impl<E: Emitter> Service<E> {
    /// Starts one thread per worker, each checking at once; returns promptly.
    pub fn start(config: &Config, emitter: E) -> Result<Service<E>, PluginError> {
        let mut service = Service {
            emitter: emitter.clone(),
            stops: Vec::new(),
            threads: Vec::new(),
            counters: Arc::new(Counters::default()),
        };
        for worker in &config.workers {
            let (tx, rx) = channel();
            let name = worker.name.clone();
            let worker_loop = WorkerLoop::new(
                emitter.clone(),
                worker.clone(),
                Arc::clone(&service.counters),
                tx.clone(),
                rx,
            );
            let handle = emitter
                .spawn("worker", move || worker_loop.run())
                .map_err(|source| PluginError::Spawn {
                    name: format!("of worker {name}"),
                    source,
                })?;
            service.stops.push(tx);
            service.threads.push((name, handle));
        }
        emitter.log(
            LogLevel::Info,
            &format!(
                "worker: checking {} worker(s): {}",
                config.workers.len(),
                config
                    .workers
                    .iter()
                    .map(|w| format!("{} ({})", w.name, w.check))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        Ok(service)
    }

    /// The counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Stops every worker thread and waits for them (bounded: about 1.5 s,
    /// though they exit at once even mid-check). Emits nothing.
    pub fn stop(mut self) {
        self.signal_stop();
        let deadline = Instant::now() + JOIN;
        for (name, handle) in std::mem::take(&mut self.threads) {
            if !join_until(handle, deadline) {
                self.emitter.log(
                    LogLevel::Warn,
                    &format!("worker: the thread of {name} did not stop in time; left behind"),
                );
            }
        }
        self.emitter.log(
            LogLevel::Info,
            &format!("worker: stopped; {}", self.counters.snapshot()),
        );
    }

    fn signal_stop(&self) {
        for tx in &self.stops {
            let _ = tx.send(Msg::Stop);
        }
    }
}

impl<E: Emitter> Drop for Service<E> {
    /// Dropped without [`Service::stop`] (e.g. a failed start): tell every
    /// thread to finish, without waiting.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_declares_the_six_worker_types() {
        let info = Worker::info();
        assert_eq!(info.name, "worker");
        assert_eq!(info.role, Role::Producer);
        let names: Vec<&str> = info.event_types.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "worker.started",
                "worker.stopped",
                "worker.health_check_failed",
                "worker.restarting",
                "worker.recovered",
                "worker.error"
            ]
        );
    }

    #[test]
    fn create_validates_without_side_effects() {
        let err = Worker::create(serde_json::json!({"bogus": 1}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("`bogus`"), "{err}");
        // A host name that cannot resolve: create must not look it up.
        let ok = Worker::create(serde_json::json!({"workers": [
            {"name": "w", "type": "metrics", "check": "http://no-such-host.invalid/health"}
        ]}))
        .unwrap();
        assert_eq!(ok.config.workers.len(), 1);
    }
}
