//! Fan-out over cores: WebSocket connections and event streams are spread
//! over lanes, each a runtime of its own with one worker thread, so that
//! the recipients of an event are written by every lane at once, each lane
//! writing only its own connections (ARCHITECTURE.md, "Fan-out over
//! cores"; measured in BENCHMARKS.md, "Fan-out over cores").
//!
//! On one shared multi-threaded runtime the writes of a fan-out are spread
//! only by work stealing: the publisher's worker queues every woken
//! connection and the others take what they can. With lanes, a woken
//! connection goes straight to the queue of its lane's thread, a
//! connection's task, socket and read buffer stay on one thread, and the
//! share of a fan-out each thread writes is fixed (round-robin at
//! admission). One worker per lane, not a current-thread runtime, because
//! a current-thread runtime wakes its thread with a system call for every
//! task woken from outside, and a fan-out wakes thousands.
//!
//! An idle WebSocket connection or event stream is not woken at all: a
//! publish leaves each lane's share of its recipients in the lane's
//! mailbox, with one wake, and the lane's drainer writes them
//! ([`crate::connection::inline`]).

use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

use crate::connection::inline::Mailbox;
use crate::router::Router;

/// The environment variable that sets the number of lanes (0: none).
pub const LANES_VAR: &str = "SWITCHYARD_LANES";

/// How many lanes to start: `setting` (the value of [`LANES_VAR`]), else
/// one per worker when there are several.
fn lane_count(setting: Option<&str>, workers: usize) -> io::Result<usize> {
    match setting.map(str::trim) {
        None | Some("") => Ok(if workers > 1 { workers } else { 0 }),
        Some(value) => value.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{LANES_VAR}={value:?} is not a number of lanes (0 for none)"),
            )
        }),
    }
}

/// The lanes of one server, or none (connections then run on the runtime
/// that accepted them).
#[derive(Debug, Default)]
pub struct Lanes {
    runtimes: Vec<Runtime>,
    /// The lane the next connection goes to.
    next: AtomicUsize,
}

impl Lanes {
    /// As many lanes as `SWITCHYARD_LANES` says, else one per worker
    /// thread of the current runtime (its size is set by
    /// `TOKIO_WORKER_THREADS`, else the CPUs this process may use), and
    /// none with one worker, where a lane would only add a thread switch to
    /// every fan-out.
    pub fn configured() -> io::Result<Lanes> {
        let workers = Handle::current().metrics().num_workers();
        let setting = std::env::var(LANES_VAR).ok();
        Lanes::start(lane_count(setting.as_deref(), workers)?)
    }

    /// Starts `count` lanes (0: none).
    pub fn start(count: usize) -> io::Result<Lanes> {
        let runtimes = (0..count)
            .map(|lane| {
                Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("switchyard-lane-{lane}"))
                    .enable_all()
                    .build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Lanes {
            runtimes,
            next: AtomicUsize::new(0),
        })
    }

    /// How many lanes there are.
    pub fn count(&self) -> usize {
        self.runtimes.len()
    }

    /// Starts each lane's mailbox drainer, or, without lanes, the current
    /// runtime's if it has one worker: fan-outs (an HTTP publish, a
    /// plugin, the cluster feed) leave the idle connections a thread serves
    /// in its mailbox, and the drainer writes them on that thread with
    /// `router`'s inline writer (see [`crate::connection::inline`]).
    pub fn drain_mailboxes(&self, router: &Arc<Router>) {
        if self.runtimes.is_empty() && polled_here_alone() {
            tokio::spawn(drain_mailbox(router.clone()));
        }
        for runtime in &self.runtimes {
            runtime.spawn(drain_mailbox(router.clone()));
        }
    }

    /// Runs a connection's task on the next lane, or on the current
    /// runtime when there are no lanes. Whatever the task registers with
    /// the runtime (its socket, first of all) must be registered by the
    /// task itself, on its lane.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.runtimes.is_empty() {
            tokio::spawn(task);
            return;
        }
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        self.runtimes[lane].spawn(task);
    }
}

/// A thread's mailbox drainer (a lane's, or a one-worker runtime's),
/// until its runtime stops.
async fn drain_mailbox(router: Arc<Router>) {
    let mailbox = Mailbox::open();
    let _closed = Closed(mailbox.clone());
    poll_fn(|cx| mailbox.poll_write(cx, router.inline_writer(), router.metrics())).await
}

/// Closes a mailbox however its drainer ends (its runtime dropping it, at
/// the latest).
struct Closed(Arc<Mailbox>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Whether a task spawned from here is polled by this thread alone: on a
/// lane, or on a runtime of one worker. Only then may this thread's
/// mailbox drainer write its connections (see [`crate::connection::inline`]).
pub(super) fn polled_here_alone() -> bool {
    let runtime = Handle::current();
    runtime.runtime_flavor() == RuntimeFlavor::MultiThread && runtime.metrics().num_workers() == 1
}

impl Drop for Lanes {
    /// Stops the lanes without waiting for them: this runs inside the
    /// server's runtime, where blocking is not allowed. Their connection
    /// tasks are dropped, which takes each connection out of the router.
    fn drop(&mut self) {
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_spread_over_the_lanes_threads() {
        let lanes = Lanes::start(lane_count(None, 2).unwrap()).unwrap();
        assert_eq!(lanes.count(), 2, "one lane per worker");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let tx = tx.clone();
            lanes.spawn(async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                tx.send(name).unwrap();
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "switchyard-lane-0",
                "switchyard-lane-0",
                "switchyard-lane-1",
                "switchyard-lane-1"
            ]
        );
    }

    #[test]
    fn the_count_follows_the_workers_unless_set() {
        assert_eq!(lane_count(None, 1).unwrap(), 0, "no lane for one worker");
        assert_eq!(lane_count(None, 4).unwrap(), 4);
        assert_eq!(lane_count(Some(" 3 "), 1).unwrap(), 3);
        assert_eq!(lane_count(Some("0"), 8).unwrap(), 0);
        let refused = lane_count(Some("two"), 2).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "SWITCHYARD_LANES=\"two\" is not a number of lanes (0 for none)"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_lanes_connections_run_on_the_current_runtime() {
        let lanes = Lanes::start(0).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        lanes.spawn(async move {
            let _ = tx.send(std::thread::current().id());
        });
        assert_eq!(rx.await.unwrap(), std::thread::current().id());
    }
}
