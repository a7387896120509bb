//! One managed instance's life: start, stop (bounded), fail, and restart
//! with exponential backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::inbound::HostContext;
use super::instance::Instance;
use super::loader::Library;
use super::sink::{Delivery, SinkQueue};
use crate::config::PluginConfig;
use crate::router::Router;

/// First restart delay; doubled after each restart, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before failing starts its backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(300);

/// An instance's state as `/health` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started and working.
    Running,
    /// Failed (panic, `start` error, a dead thread); restarted with backoff.
    Failed,
    /// Stopped or not started.
    Stopped,
}

/// What `/health` shows for one instance.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Its state.
    pub state: State,
    /// How often it was restarted.
    pub restarts: u32,
    /// Restarts since it last ran well for `HEALTHY_AFTER`; sets the backoff.
    #[serde(skip)]
    pub failures_in_a_row: u32,
    /// When it was last started.
    #[serde(skip)]
    pub started_at: Option<Instant>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When a failed instance is due for its next restart.
    #[serde(skip)]
    pub next_restart: Option<Instant>,
}

impl Status {
    fn fresh() -> Status {
        Status {
            state: State::Stopped,
            restarts: 0,
            failures_in_a_row: 0,
            started_at: None,
            last_error: None,
            next_restart: None,
        }
    }

    /// Marks the instance failed and schedules its restart.
    pub fn fail(&mut self, message: String) {
        if self
            .started_at
            .is_some_and(|at| at.elapsed() >= HEALTHY_AFTER)
        {
            self.failures_in_a_row = 0;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.failures_in_a_row.min(6))
            .min(MAX_BACKOFF);
        self.failures_in_a_row += 1;
        self.state = State::Failed;
        self.last_error = Some(message);
        self.next_restart = Some(Instant::now() + backoff);
    }

    /// Whether a restart is due now.
    pub fn restart_due(&self, now: Instant) -> bool {
        self.state == State::Failed && self.next_restart.is_some_and(|at| at <= now)
    }
}

/// What becomes of a sink's queue when its instance stops.
pub(super) enum Ending {
    /// The queue is kept for the next instance: a restart after a failure,
    /// or a reload that changed the entry.
    HandOver,
    /// The sink goes away (shutdown, or removed by a reload): its queue is
    /// closed and drained into it until `deadline`; what is left is dropped
    /// and counted as `sink_shutdown`.
    Drain {
        /// The latest moment to stop draining.
        deadline: Instant,
        /// Where the drops are counted.
        router: Arc<Router>,
    },
}

/// An instance shared between its delivery thread and its lifecycle calls;
/// the mutex keeps the ABI's rule that no two calls overlap.
type SharedInstance = Arc<Mutex<Option<Instance>>>;

/// A running (or failed) instance the host manages.
pub(super) struct Managed {
    pub(super) config: PluginConfig,
    pub(super) library: Arc<Library>,
    pub(super) types: Vec<switchyard_plugin_api::EventTypeDecl>,
    pub(super) sink: Option<Arc<SinkQueue>>,
    pub(super) status: Arc<Mutex<Status>>,
    instance: SharedInstance,
    context: Option<&'static HostContext>,
    delivery: Option<Delivery>,
}

impl Managed {
    /// A created, not yet started, instance.
    pub(super) fn new(
        config: PluginConfig,
        instance: Instance,
        sink: Option<Arc<SinkQueue>>,
    ) -> Managed {
        Managed {
            library: instance.library.clone(),
            types: instance.types.clone(),
            config,
            sink,
            status: Arc::new(Mutex::new(Status::fresh())),
            instance: Arc::new(Mutex::new(Some(instance))),
            context: None,
            delivery: None,
        }
    }

    /// Calls `start` with fresh host callbacks, then serves its sink queue.
    pub(super) fn start(&mut self, router: &Arc<Router>) {
        let name = self.config.name.clone();
        let status = self.status.clone();
        let on_failure = Box::new(move |message: String| {
            tracing::error!(plugin = %name, "plugin failed: {message}");
            status.lock().fail(message);
        });
        let (context, vtable) = HostContext::leak(
            &self.config.name,
            self.library.abi_minor,
            router,
            on_failure,
        );
        self.context = Some(context);
        // Running first: a plugin thread may fail before `start` returns.
        {
            let mut status = self.status.lock();
            status.state = State::Running;
            status.started_at = Some(Instant::now());
        }
        let result = match self.instance.lock().as_mut() {
            Some(instance) => instance.start(vtable),
            None => return,
        };
        match result {
            Ok(()) => {
                tracing::info!(plugin = %self.config.name, library = %self.library.path.display(), "plugin started");
                self.delivery = self.serve_sink();
            }
            Err(e) => {
                tracing::error!(plugin = %self.config.name, "plugin failed to start: {e}");
                self.status.lock().fail(e);
            }
        }
    }

    fn serve_sink(&self) -> Option<Delivery> {
        let sink = self.sink.as_ref()?;
        let (name, status) = (self.config.name.clone(), self.status.clone());
        let on_error = move |e: String| {
            tracing::error!(plugin = %name, "sink failed to take an event: {e}");
            status.lock().fail(e);
        };
        sink.serve(self.instance.clone(), on_error)
            .map_err(|e| tracing::error!(plugin = %self.config.name, "cannot start the sink's delivery thread: {e}"))
            .ok()
    }

    /// Ends delivery (draining the sink's queue first when it goes away),
    /// then calls `stop` on a thread of its own, waiting at most
    /// `stop_timeout_s`; an instance that does not return in time is
    /// abandoned, never destroyed.
    pub(super) fn stop(&mut self, ending: Ending) {
        let delivery = self.delivery.take();
        if let Ending::Drain { deadline, .. } = &ending {
            if let Some(sink) = &self.sink {
                sink.close();
            }
            if let Some(delivery) = &delivery {
                delivery.drain_until(*deadline);
            }
        }
        self.call_stop(delivery);
        if let Ending::Drain { router, .. } = ending {
            self.count_undelivered(&router);
        }
        let mut status = self.status.lock();
        if status.state == State::Running {
            status.state = State::Stopped;
        }
    }

    /// Drops what a sink that went away still had queued, counting and
    /// logging it.
    fn count_undelivered(&self, router: &Router) {
        let Some(sink) = &self.sink else { return };
        let dropped = sink.discard();
        if dropped > 0 {
            router.metrics().drop_events("sink_shutdown", dropped);
            tracing::warn!(
                plugin = %self.config.name,
                dropped,
                "sink stopped with {dropped} queued event(s) not delivered; they are dropped \
                 (switchyard_dropped_total{{reason=\"sink_shutdown\"}})"
            );
        }
    }

    /// Halts delivery and calls `stop` on a thread of its own, waiting at
    /// most `stop_timeout_s`; an instance that does not return in time is
    /// abandoned, never destroyed.
    fn call_stop(&mut self, delivery: Option<Delivery>) {
        let name = self.config.name.clone();
        let context = self.context.take();
        let instance = std::mem::replace(&mut self.instance, Arc::new(Mutex::new(None)));
        let abandoned = Arc::new(AtomicBool::new(false));
        let gave_up = abandoned.clone();
        let (done, returned) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("stop-{name}"))
            .spawn(move || {
                if let Some(delivery) = delivery {
                    delivery.halt();
                }
                let mut guard = instance.lock();
                let result = guard.as_mut().map(Instance::stop);
                if let Some(ctx) = context {
                    ctx.mark_stopped();
                }
                match guard.take() {
                    // Abandoned: the host gave up waiting, so it must not be destroyed.
                    Some(late) if gave_up.load(Ordering::SeqCst) => std::mem::forget(late),
                    other => drop(other),
                }
                let _ = done.send(result);
            });
        if spawned.is_err() {
            tracing::error!(plugin = %name, "cannot spawn a thread to stop the plugin; abandoning it");
            return;
        }
        match returned.recv_timeout(Duration::from_secs(self.config.stop_timeout_s)) {
            Ok(result) => {
                if let Some(Err(e)) = result {
                    tracing::warn!(plugin = %name, "plugin stop: {e}");
                }
                tracing::info!(plugin = %name, "plugin stopped");
            }
            Err(_) => {
                abandoned.store(true, Ordering::SeqCst);
                if let Some(ctx) = context {
                    ctx.mark_stopped();
                }
                tracing::error!(plugin = %name, timeout_s = self.config.stop_timeout_s, "plugin did not stop in time; abandoned");
            }
        }
    }

    /// Replaces a failed instance with a new one from the same library and
    /// config, and starts it. Its sink queue carries over.
    pub(super) fn restart(&mut self, router: &Arc<Router>) {
        self.stop(Ending::HandOver);
        let restarts = {
            let mut status = self.status.lock();
            status.restarts += 1;
            status.restarts
        };
        tracing::info!(plugin = %self.config.name, restarts, "restarting failed plugin");
        match Instance::create(&self.library, &self.config.name, &self.config.config) {
            Ok(instance) => {
                self.instance = Arc::new(Mutex::new(Some(instance)));
                self.start(router);
            }
            Err(e) => self.status.lock().fail(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_starts_afresh_after_a_healthy_run() {
        let mut status = Status::fresh();
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                status.fail("boom".into());
                (status.next_restart.unwrap() - Instant::now())
                    .as_secs_f64()
                    .round() as u64
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        status.started_at = Instant::now().checked_sub(HEALTHY_AFTER);
        status.fail("boom".into());
        let delay = (status.next_restart.unwrap() - Instant::now())
            .as_secs_f64()
            .round() as u64;
        assert_eq!(delay, 1, "a long healthy run resets the backoff");
    }
}
