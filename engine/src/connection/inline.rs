//! Inline delivery: an event written to an idle connection's socket by
//! the thread that serves the connection, without waking the connection's
//! task.
//!
//! At a steady rate nearly every delivery is one event to one idle
//! connection, and waking its task to write it costs a trip through the
//! runtime's scheduler and a second look at the queue for every recipient:
//! more user-space time than the rest of the delivery (BENCHMARKS.md,
//! "Inline delivery"). A transport that can write a connection's frames
//! without its task registers the connection with [`serve`], from the
//! thread that alone polls its task (a lane, or a runtime of one worker),
//! and opens a [`Mailbox`] on that thread, drained by a task of its own.
//!
//! A fan-out within a [`Scope`] then *defers* each such connection instead
//! of waking it. When the scope closes (after the routing table and the
//! channel are unlocked, and after a whole publish, so that its events go
//! out in one write per connection) the deferred connections are left in
//! their threads' mailboxes, each thread's at once with one wake. The
//! drainer hands each to the transport's [`Write`]: it writes what the
//! queue holds unless the task is in the middle of a write, and wakes the
//! task for whatever it could not write. Order holds because only that
//! thread polls the connection's task, and it is not polling it while the
//! drainer runs. The publisher itself writes nothing, so an HTTP publish is
//! answered before its events are written, as before; the drainer runs
//! right after, and takes every publish since its last run at once. A
//! connection whose thread has no mailbox is woken as before.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock};

use super::{ConnRef, Connection, Outbox};
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
    /// Connections deferred by the open scope, with the thread that
    /// serves each; the buffer is kept between scopes.
    static DEFERRED: RefCell<Vec<(u32, ConnRef)>> = const { RefCell::new(Vec::new()) };
}

/// The mailboxes of the threads that have one.
static MAILBOXES: RwLock<Vec<Arc<Mailbox>>> = RwLock::new(Vec::new());

/// This thread's number: never 0, never shared with another thread.
pub fn this_thread() -> u32 {
    THIS_THREAD.with(|n| *n)
}

/// Lets this thread's mailbox drainer write the frames queued in
/// `outbox` to `socket`, without waking the connection's task. The caller
/// promises that only this thread polls the connection's task, and calls
/// [`Outbox::stop_inline`] before it closes the socket.
pub fn serve(outbox: &Outbox, socket: i32) {
    outbox.serve_inline(this_thread(), socket);
}

/// A fan-out's scope on this thread: connections deferred within it are
/// left in their mailboxes (or woken) when it is dropped. A scope opened
/// inside another does nothing; the outer one hands them over.
#[must_use = "deferred connections are handed over when the scope is dropped"]
pub struct Scope {
    outer: bool,
}

impl Scope {
    /// Opens a scope on this thread.
    pub fn open() -> Scope {
        Scope {
            outer: !OPEN.replace(true),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        OPEN.set(false);
        let mut deferred = DEFERRED.take();
        hand_over(&mut deferred);
        DEFERRED.set(deferred);
    }
}

/// Leaves each thread's deferred connections in its mailbox, all at once;
/// a thread without one has its connections woken.
fn hand_over(deferred: &mut Vec<(u32, ConnRef)>) {
    if deferred.is_empty() {
        return;
    }
    deferred.sort_by_key(|(thread, _)| *thread);
    let mailboxes = MAILBOXES.read();
    for group in deferred.chunk_by(|a, b| a.0 == b.0) {
        let conns = group.iter().map(|(_, conn)| conn.clone());
        match mailboxes.iter().find(|m| m.thread == group[0].0) {
            Some(mailbox) => mailbox.post(conns),
            None => conns.for_each(|conn| {
                conn.outbox.undefer();
                conn.outbox.wake();
            }),
        }
    }
    drop(mailboxes);
    deferred.clear();
}

/// Writes (or, without a writer, wakes) each of `conns`, emptying it.
fn write_all(conns: &mut Vec<ConnRef>, writer: Option<(Write, &Metrics)>) {
    // All first, so that a writer that panics leaves none marked deferred
    // with nothing left to write it.
    conns.iter().for_each(|conn| conn.outbox.undefer());
    for conn in conns.drain(..) {
        match writer {
            Some((write, metrics)) => write(&conn, metrics),
            None => conn.outbox.wake(),
        }
    }
}

/// Defers `conn` to the scope open on this thread, if one is and some
/// thread serves `conn` inline: whether it was (or already had been).
pub(crate) fn defer(conn: &ConnRef) -> bool {
    let thread = conn.outbox.inline_thread();
    if !OPEN.get() || thread == 0 {
        return false;
    }
    if conn.outbox.mark_deferred() {
        DEFERRED.with_borrow_mut(|deferred| deferred.push((thread, conn.clone())));
    }
    true
}

/// Where fan-outs leave the connections of one thread that serves
/// connections inline (a lane, or a runtime of one worker), for that
/// thread's drainer to write.
#[derive(Debug)]
pub struct Mailbox {
    thread: u32,
    deferred: Mutex<Vec<ConnRef>>,
    drainer: AtomicWaker,
}

impl Mailbox {
    /// Opens this thread's mailbox: from now on, fan-outs leave this
    /// thread's connections here, until [`close`](Mailbox::close). A thread
    /// serves one router: were a second mailbox opened on it, the first
    /// would take every connection of the thread, and its drainer would
    /// count their latency in its own router's metrics.
    pub fn open() -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox {
            thread: this_thread(),
            deferred: Mutex::new(Vec::new()),
            drainer: AtomicWaker::new(),
        });
        MAILBOXES.write().push(mailbox.clone());
        mailbox
    }

    /// Closes the mailbox; what is still in it is woken.
    pub fn close(self: &Arc<Self>) {
        MAILBOXES.write().retain(|m| !Arc::ptr_eq(m, self));
        let mut left = std::mem::take(&mut *self.deferred.lock());
        write_all(&mut left, None);
    }

    fn post(&self, conns: impl Iterator<Item = ConnRef>) {
        self.deferred.lock().extend(conns);
        self.drainer.wake();
    }

    /// Writes what has been left here with `write`, counting deliveries
    /// in `metrics` (without a writer, wakes it); `Pending` always: it
    /// waits for more. Only on the mailbox's own thread, by the one task
    /// that drains it.
    pub fn poll_write(
        &self,
        cx: &Context<'_>,
        write: Option<Write>,
        metrics: &Metrics,
    ) -> Poll<()> {
        debug_assert_eq!(self.thread, this_thread(), "drained on its own thread");
        self.drainer.register(cx.waker());
        let mut conns = std::mem::take(&mut *self.deferred.lock());
        write_all(&mut conns, write.map(|write| (write, metrics)));
        Poll::Pending
    }
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
    fn a_nested_scope_leaves_the_handing_over_to_the_outer_one() {
        let outer = Scope::open();
        {
            let inner = Scope::open();
            assert!(!inner.outer);
        }
        assert!(OPEN.get(), "still open after the nested scope");
        drop(outer);
        assert!(!OPEN.get());
    }
}
