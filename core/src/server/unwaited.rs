//! A socket written to by a mailbox drainer (see
//! [`inline`](crate::connection::inline)): without waiting, without the
//! runtime, and by its descriptor alone, so that neither transport's
//! inline writer needs the connection task's socket.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{send, sendmsg, MsgFlags};
use tokio::io::AsyncWrite;

/// `Pending` means the socket is full, and nothing is registered to say
/// when it is not: the connection's task, woken, waits for that itself.
/// The descriptor stays open while the outbox offers it (see
/// [`inline::serve`](crate::connection::inline::serve)).
pub(super) struct Unwaited(pub RawFd);

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
