//! Reading a connection's socket only when it may have something to read.
//!
//! A connection task is woken to write far more often than to read, and
//! walking tungstenite's read path only to learn that nothing arrived cost
//! more than writing the frame (callgrind, BENCHMARKS.md). The read side is
//! therefore polled with the connection itself as its waker
//! (`impl Wake for Connection`), which marks the socket readable before
//! waking the task, and is skipped while it is not.

use std::io;
use std::task::{Context, Poll, Waker};

use crate::connection::ConnRef;
use crate::server::socket::{self, Socket};

/// Reads `conn`'s socket into the worker thread's buffer
/// ([`socket::poll_read_shared`]) if it may be readable, with a context
/// whose waker marks it readable again and wakes the connection's task
/// (the one the poll calling this registered with the outbox). `Pending`
/// when it is not readable.
pub(super) fn poll_read(conn: &ConnRef, socket: &mut Socket) -> Poll<io::Result<usize>> {
    if !conn.outbox.take_readable() {
        return Poll::Pending;
    }
    let waker = Waker::from(conn.clone());
    let polled = socket::poll_read_shared(socket, &mut Context::from_waker(&waker));
    if polled.is_ready() {
        // More may already be buffered: look again next time.
        conn.outbox.keep_readable();
    }
    polled
}
