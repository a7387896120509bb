//! The worker threads: one per configured worker, each running its checks
//! on schedule, feeding the [`Machine`], emitting its events and running
//! its `restart_command`; plus the shared counters.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use switchyard_plugin_api::{bump, counters, emit_counted, timestamp, Emitter, LogLevel};

use crate::config::WorkerConfig;
use crate::events::WorkerPayload;
use crate::machine::{Emitted, EventKind, Machine, Outcome};
use crate::probe;

/// How long past `timeout_ms` the worker waits for a check thread (which
/// bounds its own sockets by `timeout_ms`) before counting the check as
/// timed out anyway (e.g. a hung name lookup).
const CHECK_GRACE: Duration = Duration::from_millis(250);

counters! {
    /// What happened so far, shared by all of an instance's threads.
    pub(crate) struct Counters;
    /// The counters of a running instance at one moment (see
    /// [`Service::counters`](crate::Service::counters)).
    pub struct CounterSnapshot {
        /// Health checks completed, over all workers.
        checks,
        /// Health checks that failed.
        failed_checks,
        /// Times a `restart_command` was started.
        restarts,
    }
}

/// A message to a worker thread.
pub(crate) enum Msg {
    /// Exit now.
    Stop,
    /// Check number `seq` ended.
    Checked {
        /// Which check (results of abandoned checks are ignored).
        seq: u64,
        /// Its result.
        outcome: Outcome,
    },
}

/// The router stopped taking events: the worker thread must exit.
struct Stopped;

/// One worker's thread: run by [`WorkerLoop::run`].
pub(crate) struct WorkerLoop<E> {
    emitter: E,
    worker: WorkerConfig,
    machine: Machine,
    counters: Arc<Counters>,
    /// For check threads to report back.
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Set while the worker's `restart_command` runs.
    restart_busy: Arc<AtomicBool>,
}

impl<E: Emitter> WorkerLoop<E> {
    /// A loop for `worker`, fed by `rx` (whose sender is `tx`).
    pub(crate) fn new(
        emitter: E,
        worker: WorkerConfig,
        counters: Arc<Counters>,
        tx: Sender<Msg>,
        rx: Receiver<Msg>,
    ) -> Self {
        let backoff = worker
            .restart_command
            .as_ref()
            .map(|_| worker.restart_backoff);
        WorkerLoop {
            machine: Machine::new(worker.failure_threshold, backoff),
            emitter,
            worker,
            counters,
            tx,
            rx,
            restart_busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Checks at once, then every `interval_ms` (from the start of one check
    /// to the start of the next, never two at once), until [`Msg::Stop`] or
    /// the router refuses events.
    pub(crate) fn run(mut self) {
        let mut next = Instant::now();
        let mut seq = 0u64;
        loop {
            if self.wait_until(next).is_err() {
                return;
            }
            let started = Instant::now();
            seq += 1;
            let outcome = match self.check(seq, started) {
                Ok(outcome) => outcome,
                Err(Stopped) => return,
            };
            if self.on_outcome(outcome).is_err() {
                self.emitter.log(
                    LogLevel::Info,
                    &format!(
                        "worker: the router stopped this instance; no more checks of {}",
                        self.worker.name
                    ),
                );
                return;
            }
            next = (started + self.worker.interval).max(Instant::now());
        }
    }

    /// Sleeps until `at`; `Err` when told to stop.
    fn wait_until(&self, at: Instant) -> Result<(), Stopped> {
        loop {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.rx.recv_timeout(left) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return Err(Stopped),
                Ok(Msg::Checked { .. }) => {} // a late result of an abandoned check
                Err(RecvTimeoutError::Timeout) => return Ok(()),
            }
        }
    }

    /// Runs check `seq` on its own thread and waits for it (or for stop).
    fn check(&self, seq: u64, started: Instant) -> Result<Outcome, Stopped> {
        let (check, timeout, tx) = (
            self.worker.check.clone(),
            self.worker.timeout,
            self.tx.clone(),
        );
        let spawned = self.emitter.spawn("worker-check", move || {
            let outcome = probe::run(&check, timeout);
            let _ = tx.send(Msg::Checked { seq, outcome });
        });
        if let Err(e) = spawned {
            return Ok(Outcome::Failed(format!("cannot start a check thread: {e}")));
        }
        let limit = started + timeout + CHECK_GRACE;
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return Err(Stopped),
                Ok(Msg::Checked { seq: s, outcome }) if s == seq => return Ok(outcome),
                Ok(Msg::Checked { .. }) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Ok(Outcome::Failed(format!(
                        "timed out after {} ms",
                        timeout.as_millis()
                    )))
                }
            }
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) -> Result<(), Stopped> {
        bump(&self.counters.checks);
        if matches!(outcome, Outcome::Failed(_)) {
            bump(&self.counters.failed_checks);
        }
        let busy = self.restart_busy.load(Ordering::SeqCst);
        let step = self.machine.on_check(Instant::now(), outcome, busy);
        for event in &step.events {
            self.log_event(event);
            self.emit(event)?;
        }
        if step.restart {
            self.restart();
        }
        Ok(())
    }

    fn log_event(&self, e: &Emitted) {
        let w = &self.worker;
        let error = e.error.as_deref().unwrap_or("");
        let (level, text) = match e.kind {
            EventKind::Started => (LogLevel::Info, format!("is up ({})", w.check)),
            EventKind::Recovered => (LogLevel::Info, format!("recovered ({})", w.check)),
            EventKind::HealthCheckFailed => (
                LogLevel::Warn,
                format!(
                    "health check failed ({} of {}): {error}",
                    e.consecutive_failures, w.failure_threshold
                ),
            ),
            EventKind::Error => (
                LogLevel::Error,
                format!(
                    "down after {} failed checks ({}): {error}",
                    e.consecutive_failures, w.check
                ),
            ),
            EventKind::Stopped => return,
            EventKind::Restarting => (
                LogLevel::Warn,
                format!(
                    "running its restart_command ({})",
                    w.restart_command
                        .as_ref()
                        .map_or("", |argv| argv[0].as_str())
                ),
            ),
        };
        self.emitter.log(
            level,
            &format!("worker {} ({}): {text}", w.name, w.worker_type.name()),
        );
    }

    fn emit(&self, e: &Emitted) -> Result<(), Stopped> {
        let payload = WorkerPayload {
            worker_name: self.worker.name.clone(),
            worker_type: self.worker.worker_type,
            state: e.state,
            timestamp: timestamp(Utc::now()),
            error: e.error.clone(),
            consecutive_failures: e.consecutive_failures,
        };
        emit_counted(
            &self.emitter,
            &self.counters.emit,
            "worker",
            e.kind.name(),
            &format!(" of {}", self.worker.name),
            &payload,
        )
        .map_err(|_| Stopped)
    }

    /// Starts the worker's `restart_command` (no shell, no stdin, output
    /// discarded) and returns at once; a reaper thread logs its exit.
    fn restart(&self) {
        let Some(argv) = self.worker.restart_command.clone() else {
            return;
        };
        let name = self.worker.name.clone();
        let program = argv[0].clone();
        bump(&self.counters.restarts);
        let started = Instant::now();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                self.emitter.log(
                    LogLevel::Error,
                    &format!("worker {name}: cannot run restart_command {program:?}: {e}"),
                );
                return;
            }
        };
        self.restart_busy.store(true, Ordering::SeqCst);
        let (busy, emitter) = (Arc::clone(&self.restart_busy), self.emitter.clone());
        let reaper = self.emitter.spawn("worker-restart", move || {
            let status = child.wait();
            busy.store(false, Ordering::SeqCst);
            let took = started.elapsed().as_millis();
            let (level, text) = match status {
                Ok(s) if s.success() => (LogLevel::Info, format!("exited with {s}")),
                Ok(s) => (LogLevel::Warn, format!("failed: {s}")),
                Err(e) => (LogLevel::Warn, format!("could not be waited for: {e}")),
            };
            emitter.log(
                level,
                &format!("worker {name}: restart_command {program:?} {text} after {took} ms"),
            );
        });
        if let Err(e) = reaper {
            // The child runs on unwatched; do not hold further restarts back.
            self.restart_busy.store(false, Ordering::SeqCst);
            self.emitter.log(
                LogLevel::Warn,
                &format!("worker: cannot watch a restart_command: {e}"),
            );
        }
    }
}
