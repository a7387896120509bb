//! The event-stream transport's inline writer: what the mailbox drainer
//! of the thread that serves a stream calls to render and write the
//! stream's queued events without waking its task (the engine's
//! [`inline`] explains when).
//!
//! A stream's [`Output`] (its cursor and unwritten bytes) is shared with
//! the drainer through this thread's table of the streams it serves:
//! whatever the socket does not take at once stays there, and the task,
//! woken, writes it on. The table is the thread's, not the connection's,
//! so that a WebSocket connection, which needs none, pays nothing for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use foldhash::fast::FixedState;
use parking_lot::Mutex;

use super::output::Output;
use crate::connection::{inline, ConnId, Connection};
use crate::metrics::Metrics;
use crate::server::unwaited::Unwaited;

/// A stream's output, as its task and the drainer share it. Both run on
/// the stream's thread, one at a time: the lock is never waited for.
pub type Shared = Arc<Mutex<Output>>;

/// The most scratch space kept after a batch: a steady stream's batch is
/// a few hundred bytes, a backlog's may be megabytes.
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// The streams this thread serves inline. Looked up once per
    /// delivery to every connection the drainer writes: hashed with
    /// foldhash, not SipHash, which cost 1 % of the router's CPU.
    static STREAMS: RefCell<HashMap<ConnId, Shared, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
    /// The buffer the drainer renders streams' batches in, kept between
    /// them.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Lets this thread's drainer write `conn`'s events to `socket` through
/// `output`; the caller promises what [`inline::serve`] asks, and calls
/// [`forget`] before the socket closes.
pub fn serve(conn: &Connection, output: &Shared, socket: i32) {
    STREAMS.with_borrow_mut(|streams| streams.insert(conn.id, output.clone()));
    inline::serve(&conn.outbox, socket);
}

/// No more inline writes of `conn`: its stream is ending.
pub fn forget(conn: &Connection) {
    conn.outbox.stop_inline();
    STREAMS.with_borrow_mut(|streams| streams.remove(&conn.id));
}

/// Renders and writes what `conn`'s outbox holds, counting its deliveries
/// in `metrics`, if `conn` is a stream served on this thread and nothing
/// of its own is under way, and wakes its task for anything left: whether
/// `conn` is such a stream.
pub(in crate::server) fn write(conn: &Connection, metrics: &Metrics) -> bool {
    // Taken out of the table, so that nothing the write or the wake sets
    // off (a task dropped as its runtime shuts down, say) finds it borrowed.
    let Some(output) = STREAMS.with_borrow(|streams| streams.get(&conn.id).cloned()) else {
        return false;
    };
    let written = write_now(conn, &mut output.lock(), metrics);
    if !written {
        conn.outbox.wake();
    }
    true
}

/// Whether everything queued was written here.
fn write_now(conn: &Connection, output: &mut Output, metrics: &Metrics) -> bool {
    if !output.takes_more() {
        return false;
    }
    let Some((socket, batch)) = conn.outbox.take_inline() else {
        return false;
    };
    SCRATCH.with_borrow_mut(|scratch| {
        let socket = &mut Unwaited(socket);
        let wrote = output.write_now(&conn.outbox, batch, metrics, scratch, socket);
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        // The socket full (or failed: the task finds out itself).
        matches!(wrote, Poll::Ready(Ok(())))
    })
}
