//! The loop every connection task, WebSocket or event stream, runs each
//! time it is polled: the router's clock first, then rounds of writing and
//! reading, then a new alarm when one is needed, for at most
//! [`STEPS_PER_POLL`] rounds.

use std::task::{Context, Poll};
use std::time::Instant;

use crate::connection::{Clock, ConnRef};

/// Rounds taken before yielding to other tasks, so that one busy client
/// cannot hold a worker thread.
const STEPS_PER_POLL: usize = 32;

/// A connection task's state, as [`poll`] drives it.
pub(super) trait Steps {
    /// How serving the connection ends.
    type End;

    /// The connection whose alarm the task keeps.
    fn conn(&self) -> &ConnRef;

    /// The router's clock, which rings the alarm.
    fn clock(&self) -> &Clock;

    /// The alarm rang (a timer may be due): `Some` ends the task.
    fn on_alarm(&mut self) -> Option<Self::End>;

    /// One round of writing and reading: `Ready(None)` when something
    /// happened (go round again), `Pending` when everything waits. The
    /// task is registered with its outbox already: a step takes what is
    /// there without registering again.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::End>>;

    /// Whether a new alarm must be asked for (a deadline appeared), and
    /// forgets it.
    fn take_rearm(&mut self) -> bool;

    /// When the alarm should ring next.
    fn next_wake(&self, now: Instant) -> Instant;
}

/// Polls a connection task: `Ready` once it ends.
pub(super) fn poll<T: Steps>(task: &mut T, cx: &mut Context<'_>) -> Poll<T::End> {
    // Once, before anything is looked at: whatever arrives later wakes the
    // task for another poll (`Outbox::register`).
    task.conn().outbox.register(cx);
    for _ in 0..STEPS_PER_POLL {
        let rang = task.conn().outbox.take_alarm();
        if rang {
            if let Some(end) = task.on_alarm() {
                return Poll::Ready(end);
            }
        }
        let stepped = task.step(cx);
        if let Poll::Ready(Some(end)) = stepped {
            return Poll::Ready(end);
        }
        // Taken whether or not the alarm rang, so that it is asked for once.
        let rearm = task.take_rearm();
        if rang || rearm {
            let wake = task.next_wake(Instant::now());
            task.clock().wake_at(task.conn(), wake);
        }
        if stepped.is_pending() {
            return Poll::Pending;
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
