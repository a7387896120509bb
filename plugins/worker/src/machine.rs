//! The health state machine of one worker: pure, driven by check results
//! and an injected clock, so every transition is unit-tested without
//! sleeping or sockets.
//!
//! ```text
//!            healthy: started                 failure < threshold: health_check_failed
//!  Pending ───────────────────▶ Running ◀──┐  (state running)
//!     │                           │        │
//!     │ failures reach threshold  │ failures reach threshold:
//!     │ (health_check_failed,     │ health_check_failed, error, stopped
//!     │  error, stopped)          ▼        │
//!     └──────────────────────▶  Down ──────┘ healthy: recovered (started if never up)
//!                                 │ ▲
//!     restart_command due:        ▼ │ failure: nothing (restarting again once due)
//!     restarting             Restarting
//! ```

use std::time::{Duration, Instant};

use serde::Serialize;

/// The `state` of a worker event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Down: failures reached the threshold (and no restart is under way).
    Stopped,
    /// Not yet healthy: before the first healthy check, or after a restart.
    Starting,
    /// Healthy, or failing below the threshold.
    Running,
    /// Being shut down. Part of the payload contract; this plugin does not
    /// emit it (it watches workers, it does not stop them).
    Stopping,
    /// The check that reached the threshold failed.
    Error,
}

impl State {
    /// Every state, in the order of [`State::NAMES`].
    pub const ALL: [State; 5] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Error,
    ];
    /// The wire names (the schema's `enum`).
    pub const NAMES: [&'static str; 5] = ["stopped", "starting", "running", "stopping", "error"];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Error => "error",
        }
    }
}

/// Which `worker.*` event to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `worker.started`: the first healthy check.
    Started,
    /// `worker.stopped`: failures reached the threshold.
    Stopped,
    /// `worker.health_check_failed`: a check failed while the worker was up.
    HealthCheckFailed,
    /// `worker.restarting`: `restart_command` is being run.
    Restarting,
    /// `worker.recovered`: healthy again after being down.
    Recovered,
    /// `worker.error`: failures reached the threshold (just before `worker.stopped`).
    Error,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Started,
        EventKind::Stopped,
        EventKind::HealthCheckFailed,
        EventKind::Restarting,
        EventKind::Recovered,
        EventKind::Error,
    ];

    /// The event type name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Started => "worker.started",
            EventKind::Stopped => "worker.stopped",
            EventKind::HealthCheckFailed => "worker.health_check_failed",
            EventKind::Restarting => "worker.restarting",
            EventKind::Recovered => "worker.recovered",
            EventKind::Error => "worker.error",
        }
    }

    /// What the event means (the type's description).
    pub fn description(self) -> &'static str {
        match self {
            EventKind::Started => "A worker passed its first health check",
            EventKind::Stopped => {
                "A worker is considered down: its failed health checks reached failure_threshold"
            }
            EventKind::HealthCheckFailed => {
                "A worker's health check failed (up to and including the one reaching failure_threshold)"
            }
            EventKind::Restarting => "A down worker's restart_command is being run",
            EventKind::Recovered => "A worker that was down passed a health check again",
            EventKind::Error => {
                "A worker's failed health checks reached failure_threshold (followed by worker.stopped)"
            }
        }
    }
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Healthy,
    /// The check failed, with why.
    Failed(String),
}

/// One event to emit; the engine adds name, type and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// Which event.
    pub kind: EventKind,
    /// The payload's `state`.
    pub state: State,
    /// The payload's `error`: why the check failed, `None` when healthy.
    pub error: Option<String>,
    /// The payload's `consecutive_failures`.
    pub consecutive_failures: u32,
}

/// What one check result leads to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Events to emit, in order.
    pub events: Vec<Emitted>,
    /// Whether to run the worker's `restart_command` now (after the events).
    pub restart: bool,
}

/// Where the worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No healthy check yet, fewer failures than the threshold.
    Pending,
    /// Healthy, or failing below the threshold.
    Running,
    /// Failures reached the threshold.
    Down,
    /// Down, and `restart_command` was run.
    Restarting,
}

/// The state machine of one worker.
#[derive(Clone, Debug)]
pub struct Machine {
    threshold: u32,
    restart_backoff: Option<Duration>,
    phase: Phase,
    failures: u32,
    ever_up: bool,
    last_restart: Option<Instant>,
}

impl Machine {
    /// A worker not yet checked. `restart_backoff` is `None` when the worker
    /// has no `restart_command`; `threshold` is at least 1.
    pub fn new(threshold: u32, restart_backoff: Option<Duration>) -> Machine {
        Machine {
            threshold: threshold.max(1),
            restart_backoff,
            phase: Phase::Pending,
            failures: 0,
            ever_up: false,
            last_restart: None,
        }
    }

    /// The state a payload would carry now.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Pending | Phase::Restarting => State::Starting,
            Phase::Running => State::Running,
            Phase::Down => State::Stopped,
        }
    }

    /// Failed checks in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Feeds one check result that ended at `now`. `restart_busy` says that
    /// the previous `restart_command` has not exited yet, so no new one is
    /// started (it is retried at a later failed check).
    pub fn on_check(&mut self, now: Instant, outcome: Outcome, restart_busy: bool) -> Step {
        let mut step = Step::default();
        match outcome {
            Outcome::Healthy => {
                self.failures = 0;
                if self.phase != Phase::Running {
                    let kind = if self.ever_up {
                        EventKind::Recovered
                    } else {
                        EventKind::Started
                    };
                    self.ever_up = true;
                    self.phase = Phase::Running;
                    step.push(kind, State::Running, None, 0);
                }
            }
            Outcome::Failed(error) => {
                self.failures = self.failures.saturating_add(1);
                let n = self.failures;
                match self.phase {
                    Phase::Pending | Phase::Running => {
                        step.push(
                            EventKind::HealthCheckFailed,
                            self.state(),
                            Some(error.clone()),
                            n,
                        );
                        if n >= self.threshold {
                            self.phase = Phase::Down;
                            step.push(EventKind::Error, State::Error, Some(error.clone()), n);
                            step.push(EventKind::Stopped, State::Stopped, Some(error.clone()), n);
                            self.maybe_restart(now, restart_busy, error, &mut step);
                        }
                    }
                    Phase::Down | Phase::Restarting => {
                        self.maybe_restart(now, restart_busy, error, &mut step);
                    }
                }
            }
        }
        step
    }

    fn maybe_restart(&mut self, now: Instant, busy: bool, error: String, step: &mut Step) {
        let Some(backoff) = self.restart_backoff else {
            return;
        };
        let due = self
            .last_restart
            .is_none_or(|last| now.saturating_duration_since(last) >= backoff);
        if !due || busy {
            return;
        }
        self.last_restart = Some(now);
        self.phase = Phase::Restarting;
        step.push(
            EventKind::Restarting,
            State::Starting,
            Some(error),
            self.failures,
        );
        step.restart = true;
    }
}

impl Step {
    fn push(&mut self, kind: EventKind, state: State, error: Option<String>, failures: u32) {
        self.events.push(Emitted {
            kind,
            state,
            error,
            consecutive_failures: failures,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Duration = Duration::from_secs(30);

    fn fail(why: &str) -> Outcome {
        Outcome::Failed(why.to_owned())
    }

    /// The step's events as (type, state, failures).
    fn seen(step: &Step) -> Vec<(&'static str, &'static str, u32)> {
        step.events
            .iter()
            .map(|e| (e.kind.name(), e.state.name(), e.consecutive_failures))
            .collect()
    }

    #[test]
    fn first_healthy_check_starts_and_steady_health_is_silent() {
        let t = Instant::now();
        let mut m = Machine::new(3, None);
        assert_eq!(m.state(), State::Starting);
        let step = m.on_check(t, Outcome::Healthy, false);
        assert_eq!(seen(&step), [("worker.started", "running", 0)]);
        assert_eq!(step.events[0].error, None);
        assert!(!step.restart);
        assert_eq!(m.state(), State::Running);
        for _ in 0..5 {
            assert_eq!(m.on_check(t, Outcome::Healthy, false), Step::default());
        }
    }

    #[test]
    fn failures_count_up_to_the_threshold_then_error_and_stopped() {
        let t = Instant::now();
        let mut m = Machine::new(3, None);
        m.on_check(t, Outcome::Healthy, false);
        let step = m.on_check(t, fail("HTTP 503"), false);
        assert_eq!(seen(&step), [("worker.health_check_failed", "running", 1)]);
        assert_eq!(step.events[0].error.as_deref(), Some("HTTP 503"));
        let step = m.on_check(t, fail("HTTP 503"), false);
        assert_eq!(seen(&step), [("worker.health_check_failed", "running", 2)]);
        assert_eq!(m.state(), State::Running);
        let step = m.on_check(t, fail("timed out"), false);
        assert_eq!(
            seen(&step),
            [
                ("worker.health_check_failed", "running", 3),
                ("worker.error", "error", 3),
                ("worker.stopped", "stopped", 3),
            ]
        );
        assert!(step
            .events
            .iter()
            .all(|e| e.error.as_deref() == Some("timed out")));
        assert!(!step.restart, "no restart_command");
        assert_eq!(m.state(), State::Stopped);
        // Further failures emit nothing, but are still counted.
        for n in 4..10 {
            assert_eq!(m.on_check(t, fail("x"), false), Step::default());
            assert_eq!(m.consecutive_failures(), n);
        }
    }

    #[test]
    fn a_healthy_check_below_the_threshold_resets_the_count_silently() {
        let t = Instant::now();
        let mut m = Machine::new(2, None);
        m.on_check(t, Outcome::Healthy, false);
        m.on_check(t, fail("x"), false);
        assert_eq!(m.on_check(t, Outcome::Healthy, false), Step::default());
        assert_eq!(m.consecutive_failures(), 0);
        let step = m.on_check(t, fail("x"), false);
        assert_eq!(seen(&step), [("worker.health_check_failed", "running", 1)]);
    }

    #[test]
    fn threshold_one_goes_down_on_the_first_failure() {
        let t = Instant::now();
        let mut m = Machine::new(1, None);
        m.on_check(t, Outcome::Healthy, false);
        let step = m.on_check(t, fail("refused"), false);
        assert_eq!(
            seen(&step),
            [
                ("worker.health_check_failed", "running", 1),
                ("worker.error", "error", 1),
                ("worker.stopped", "stopped", 1),
            ]
        );
    }

    #[test]
    fn healthy_after_being_down_recovers() {
        let t = Instant::now();
        let mut m = Machine::new(2, None);
        m.on_check(t, Outcome::Healthy, false);
        m.on_check(t, fail("x"), false);
        m.on_check(t, fail("x"), false);
        m.on_check(t, fail("x"), false);
        let step = m.on_check(t, Outcome::Healthy, false);
        assert_eq!(seen(&step), [("worker.recovered", "running", 0)]);
        assert_eq!(step.events[0].error, None);
        assert_eq!(m.state(), State::Running);
        // And the cycle repeats.
        let step = m.on_check(t, fail("y"), false);
        assert_eq!(seen(&step), [("worker.health_check_failed", "running", 1)]);
    }

    #[test]
    fn a_worker_that_was_never_up_is_starting_then_down_then_started() {
        let t = Instant::now();
        let mut m = Machine::new(2, None);
        let step = m.on_check(t, fail("refused"), false);
        assert_eq!(seen(&step), [("worker.health_check_failed", "starting", 1)]);
        let step = m.on_check(t, fail("refused"), false);
        assert_eq!(
            seen(&step),
            [
                ("worker.health_check_failed", "starting", 2),
                ("worker.error", "error", 2),
                ("worker.stopped", "stopped", 2),
            ]
        );
        // Its first healthy check ever is `started`, not `recovered`.
        let step = m.on_check(t, Outcome::Healthy, false);
        assert_eq!(seen(&step), [("worker.started", "running", 0)]);
    }

    #[test]
    fn restart_command_runs_after_stopped_at_most_once_per_backoff() {
        let t0 = Instant::now();
        let mut m = Machine::new(2, Some(BACKOFF));
        m.on_check(t0, Outcome::Healthy, false);
        m.on_check(t0, fail("x"), false);
        let step = m.on_check(t0, fail("x"), false);
        assert_eq!(
            seen(&step),
            [
                ("worker.health_check_failed", "running", 2),
                ("worker.error", "error", 2),
                ("worker.stopped", "stopped", 2),
                ("worker.restarting", "starting", 2),
            ]
        );
        assert_eq!(step.events[3].error.as_deref(), Some("x"));
        assert!(step.restart);
        assert_eq!(m.state(), State::Starting);
        // Still failing within the backoff: nothing.
        let step = m.on_check(t0 + Duration::from_secs(29), fail("x"), false);
        assert_eq!(step, Step::default());
        // Once the backoff has passed: restart again.
        let t1 = t0 + BACKOFF;
        let step = m.on_check(t1, fail("x"), false);
        assert_eq!(seen(&step), [("worker.restarting", "starting", 4)]);
        assert!(step.restart);
        // Up again: recovered; down again soon after: no restart within the
        // backoff of the last one, but one once it has passed.
        let step = m.on_check(t1 + Duration::from_secs(1), Outcome::Healthy, false);
        assert_eq!(seen(&step), [("worker.recovered", "running", 0)]);
        m.on_check(t1 + Duration::from_secs(2), fail("x"), false);
        let step = m.on_check(t1 + Duration::from_secs(3), fail("x"), false);
        assert_eq!(
            seen(&step),
            [
                ("worker.health_check_failed", "running", 2),
                ("worker.error", "error", 2),
                ("worker.stopped", "stopped", 2),
            ]
        );
        assert!(!step.restart);
        assert_eq!(m.state(), State::Stopped);
        let step = m.on_check(t1 + BACKOFF, fail("x"), false);
        assert_eq!(seen(&step), [("worker.restarting", "starting", 3)]);
        assert!(step.restart);
    }

    #[test]
    fn no_restart_while_the_previous_command_still_runs() {
        let t0 = Instant::now();
        let mut m = Machine::new(1, Some(Duration::ZERO));
        m.on_check(t0, Outcome::Healthy, false);
        let step = m.on_check(t0, fail("x"), true);
        assert_eq!(step.events.len(), 3, "{step:?}");
        assert!(!step.restart);
        assert_eq!(m.state(), State::Stopped);
        let step = m.on_check(t0, fail("x"), false);
        assert_eq!(seen(&step), [("worker.restarting", "starting", 2)]);
        assert!(step.restart);
        // A zero backoff allows one at every failed check.
        let step = m.on_check(t0, fail("x"), false);
        assert!(step.restart);
    }

    #[test]
    fn names_match_the_wire() {
        for (state, name) in State::ALL.iter().zip(State::NAMES) {
            assert_eq!(state.name(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
        }
    }
}
