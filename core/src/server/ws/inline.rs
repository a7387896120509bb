//! The WebSocket transport's inline writer: what the mailbox drainer of
//! the thread that serves a connection calls to write the connection's
//! queued frames without waking its task (the engine's
//! [`inline`](crate::connection::inline) explains when).
//!
//! It writes with the task's own [`Writer`], to the socket's descriptor,
//! without waiting: whatever the socket does not take at once goes back to
//! the outbox, where the task, woken, goes on from the byte it stopped at.

use std::task::{Context, Poll, Waker};

use super::writer::Writer;
use crate::connection::outbox::Written;
use crate::connection::Connection;
use crate::metrics::Metrics;
use crate::server::unwaited::Unwaited;

/// Writes what `conn`'s outbox holds, if its task is not in the middle of
/// a write, and wakes the task for anything left: the router's
/// [`inline::Write`](crate::connection::inline::Write).
pub(crate) fn write(conn: &Connection, metrics: &Metrics) {
    let Some((socket, batch)) = conn.outbox.take_inline() else {
        conn.outbox.wake();
        return;
    };
    let mut writer = Writer::default();
    writer.load(batch);
    let mut written = Written::default();
    let mut cx = Context::from_waker(Waker::noop());
    let wrote = writer.poll_write(&mut cx, &mut Unwaited(socket), metrics, &mut written);
    if let Poll::Ready(Ok(_)) = wrote {
        conn.outbox.finish(written, writer.take_frames());
        return;
    }
    conn.outbox.release(written);
    // The socket is full (or failed: the task finds out itself).
    let (frames, offset) = writer.unload();
    conn.outbox.put_back(frames, offset);
    conn.outbox.wake();
}
