//! The WebSocket transport's inline writer: what the mailbox drainer of
//! the thread that serves a connection calls to write the connection's
//! queued frames without waking its task (the engine's
//! [`inline`](crate::connection::inline) explains when).
//!
//! It writes with the task's own [`Writer`], to the socket's descriptor,
//! without waiting: whatever the socket does not take at once goes back to
//! the outbox, where the task, woken, goes on from the byte it stopped at.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use nix::errno::Errno;
use nix::sys::socket::{send, sendmsg, MsgFlags};
use tokio::io::AsyncWrite;

use super::writer::Writer;
use crate::connection::outbox::Written;
use crate::connection::Connection;
use crate::metrics::Metrics;

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
    conn.outbox.release(written);
    if let Poll::Ready(Ok(_)) = wrote {
        return;
    }
    // The socket is full (or failed: the task finds out itself).
    let (frames, offset) = writer.unload();
    conn.outbox.put_back(frames, offset);
    conn.outbox.wake();
}

/// A socket written to without waiting and without the runtime:
/// `Pending` means it is full, and nothing is registered to say when it
/// is not (the connection's task, woken, waits for that itself). The
/// descriptor stays open while the outbox offers it (see
/// [`inline::serve`](crate::connection::inline::serve)).
struct Unwaited(RawFd);

/// Never wait, and never raise SIGPIPE on a socket the client closed.
const FLAGS: MsgFlags = MsgFlags::MSG_DONTWAIT.union(MsgFlags::MSG_NOSIGNAL);

/// A send's outcome as a writer sees it.
fn sent(result: nix::Result<usize>) -> Poll<io::Result<usize>> {
    match result {
        Ok(n) => Poll::Ready(Ok(n)),
        Err(Errno::EAGAIN | Errno::EINTR) => Poll::Pending,
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

impl AsyncWrite for Unwaited {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        sent(send(self.0, buf, FLAGS))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        sent(sendmsg::<()>(self.0, bufs, &[], FLAGS, None))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
