//! Inline delivery: an event written to an idle connection's socket by the
//! fan-out itself, when the fan-out runs on the one thread that serves that
//! connection, instead of waking the connection's task to write it.
//!
//! At a steady rate nearly every delivery is one event to one idle
//! connection, and waking its task to write it costs a trip through the
//! runtime's scheduler and a second look at the queue for every recipient:
//! more user-space time than the rest of the delivery (BENCHMARKS.md,
//! "Inline delivery"). A transport that can write a connection's frames
//! without its task registers the connection with
//! [`Outbox::serve_inline`](super::Outbox::serve_inline), from the thread
//! that alone polls its task (a lane, or a runtime of one worker).
//!
//! A fan-out within a [`Scope`] then *defers* each such connection of the
//! scope's own thread instead of waking it. When the scope closes (after the
//! routing table and the channel are unlocked, so that no lock is held
//! across a system call, and after a whole publish, so that its events go
//! out in one write per connection) each deferred connection is handed to
//! the transport's [`Write`]: it writes what the queue holds unless the
//! task is in the middle of a write, and wakes the task for whatever it
//! could not write. Order holds because only this thread polls the
//! connection's task, and it is not polling it while the scope closes.
//! Every other connection is woken as before.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{ConnRef, Connection};
use crate::metrics::Metrics;

/// The transport's inline writer: writes what `conn`'s outbox holds
/// (taken with [`Outbox::take_inline`](super::Outbox::take_inline)) and
/// wakes its task for whatever is left.
pub type Write = fn(&Connection, &Metrics);

/// Numbers threads, from 1, for [`this_thread`].
static THREADS: AtomicU32 = AtomicU32::new(1);

thread_local! {
    static THIS_THREAD: u32 = THREADS.fetch_add(1, Ordering::Relaxed);
    /// Whether a scope is open on this thread.
    static OPEN: Cell<bool> = const { Cell::new(false) };
    /// Connections deferred by the open scope; the buffer is kept between
    /// scopes.
    static DEFERRED: RefCell<Vec<ConnRef>> = const { RefCell::new(Vec::new()) };
}

/// This thread's number: never 0, never shared with another thread.
pub fn this_thread() -> u32 {
    THIS_THREAD.with(|n| *n)
}

/// A fan-out's scope on this thread: deliveries deferred within it are
/// written (or woken) when it is dropped. A scope opened inside another
/// does nothing; the outer one writes.
#[must_use = "deliveries are written when the scope is dropped"]
pub struct Scope<'a> {
    /// The transport's writer, if one is registered, and the router's
    /// metrics it counts deliveries in; `None` when this scope is nested.
    outer: Option<(Option<Write>, &'a Metrics)>,
}

impl<'a> Scope<'a> {
    /// Opens a scope on this thread; without a `write`, deferred
    /// connections are only woken.
    pub fn open(write: Option<Write>, metrics: &'a Metrics) -> Scope<'a> {
        let outer = !OPEN.replace(true);
        Scope {
            outer: outer.then_some((write, metrics)),
        }
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        let Some((write, metrics)) = self.outer else {
            return;
        };
        OPEN.set(false);
        let mut deferred = DEFERRED.take();
        // All first, so that a writer that panics leaves none marked
        // deferred with no scope left to write it.
        deferred.iter().for_each(|conn| conn.outbox.undefer());
        for conn in deferred.drain(..) {
            match write {
                Some(write) => write(&conn, metrics),
                None => conn.outbox.wake(),
            }
        }
        DEFERRED.set(deferred);
    }
}

/// Defers `conn` to the scope open on this thread, if one is and `conn` is
/// served inline by this thread: whether it was (or already had been).
pub(crate) fn defer(conn: &ConnRef) -> bool {
    if !OPEN.get() || !conn.outbox.is_served_inline_by(this_thread()) {
        return false;
    }
    if conn.outbox.mark_deferred() {
        DEFERRED.with_borrow_mut(|deferred| deferred.push(conn.clone()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_have_numbers_of_their_own() {
        let here = this_thread();
        assert_ne!(here, 0);
        assert_eq!(here, this_thread(), "stable on one thread");
        let there = std::thread::spawn(this_thread).join().unwrap();
        assert_ne!(there, here);
    }

    #[test]
    fn a_nested_scope_leaves_the_writing_to_the_outer_one() {
        let metrics = Metrics::default();
        let outer = Scope::open(None, &metrics);
        {
            let inner = Scope::open(None, &metrics);
            assert!(inner.outer.is_none());
        }
        assert!(OPEN.get(), "still open after the nested scope");
        drop(outer);
        assert!(!OPEN.get());
    }
}
