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
//! A fan-out within a [`Scope`] then *defers* each such connection instead
//! of waking it. When the scope closes (after the routing table and the
//! channel are unlocked, so that no lock is held across a system call, and
//! after a whole publish, so that its events go out in one write per
//! connection) each deferred connection of the scope's own thread is handed
//! to the transport's [`Write`]: it writes what the queue holds unless the
//! task is in the middle of a write, and wakes the task for whatever it
//! could not write. Order holds because only this thread polls the
//! connection's task, and it is not polling it while the scope closes.
//!
//! Connections of another thread that has a [`Mailbox`] (a lane) are left
//! there, all of one publish at once, and that thread's drainer writes them
//! the same way: one wake per lane and publish instead of one per
//! connection. Every other connection is woken as before.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock};

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
    /// Connections of this thread deferred by the open scope; the buffer
    /// is kept between scopes.
    static DEFERRED: RefCell<Vec<ConnRef>> = const { RefCell::new(Vec::new()) };
    /// Connections of other threads deferred by the open scope, with the
    /// thread that serves each.
    static ELSEWHERE: RefCell<Vec<(u32, ConnRef)>> = const { RefCell::new(Vec::new()) };
}

/// The mailboxes of the threads that have one.
static MAILBOXES: RwLock<Vec<Arc<Mailbox>>> = RwLock::new(Vec::new());

/// This thread's number: never 0, never shared with another thread.
pub fn this_thread() -> u32 {
    THIS_THREAD.with(|n| *n)
}

/// A fan-out's scope on this thread: deliveries deferred within it are
/// written (or woken) when it is dropped. A scope opened inside another
/// does nothing; the outer one writes.
#[must_use = "deliveries are written when the scope is dropped"]
pub struct Scope<'a> {
    /// `None` when this scope is nested; else the transport's writer, if
    /// one is registered, and the router's metrics it counts deliveries in.
    outer: Option<Option<Writer<'a>>>,
}

impl<'a> Scope<'a> {
    /// Opens a scope on this thread; without a `write`, deferred
    /// connections are only woken.
    pub fn open(write: Option<Write>, metrics: &'a Metrics) -> Scope<'a> {
        let outer = !OPEN.replace(true);
        Scope {
            outer: outer.then_some(write.map(|write| (write, metrics))),
        }
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        let Some(writer) = self.outer else {
            return;
        };
        OPEN.set(false);
        let mut elsewhere = ELSEWHERE.take();
        post(&mut elsewhere);
        ELSEWHERE.set(elsewhere);
        let mut deferred = DEFERRED.take();
        write_all(&mut deferred, writer);
        DEFERRED.set(deferred);
    }
}

/// A writer and the metrics it counts deliveries in.
type Writer<'a> = (Write, &'a Metrics);

/// Writes (or, without a writer, wakes) each of `conns`, emptying it.
fn write_all(conns: &mut Vec<ConnRef>, writer: Option<Writer<'_>>) {
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

/// Leaves other threads' connections in their mailboxes, each thread's
/// at once; a thread without one has its connections woken.
fn post(elsewhere: &mut Vec<(u32, ConnRef)>) {
    if elsewhere.is_empty() {
        return;
    }
    elsewhere.sort_by_key(|(thread, _)| *thread);
    let mailboxes = MAILBOXES.read();
    for group in elsewhere.chunk_by(|a, b| a.0 == b.0) {
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
    elsewhere.clear();
}

/// Defers `conn` to the scope open on this thread, if one is and some
/// thread serves `conn` inline: whether it was (or already had been).
pub(crate) fn defer(conn: &ConnRef) -> bool {
    let thread = conn.outbox.inline_thread();
    if !OPEN.get() || thread == 0 {
        return false;
    }
    if !conn.outbox.mark_deferred() {
        return true;
    }
    if thread == this_thread() {
        DEFERRED.with_borrow_mut(|deferred| deferred.push(conn.clone()));
    } else {
        ELSEWHERE.with_borrow_mut(|elsewhere| elsewhere.push((thread, conn.clone())));
    }
    true
}

/// Where other threads leave the connections of one thread that serves
/// connections inline (a lane), for that thread's drainer to write.
#[derive(Debug)]
pub struct Mailbox {
    thread: u32,
    deferred: Mutex<Vec<ConnRef>>,
    drainer: AtomicWaker,
}

impl Mailbox {
    /// Opens this thread's mailbox: from now on, fan-outs on other threads
    /// leave this thread's connections here, until [`close`](Mailbox::close).
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
