//! A client's socket: what hyper serves, and what a WebSocket (once its
//! upgrade is done) or an event stream (once its request is answered)
//! takes back from hyper, to be read through its worker thread's buffer.
//!
//! hyper hands an upgrade over as a boxed, type-erased stream behind the
//! wrapper that bounded request heads; unwrapping it to the [`Socket`]
//! drops both. Reads go into one buffer per worker thread, so that an idle
//! connection holds none (a WebSocket's decoder keeps only unfinished
//! frames; an event stream reads only to notice the client leaving).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::connection::ConnRef;
use crate::server::head_limit::Limited;

/// How long a closing connection may take to write what is left, and how
/// long the client then has to close too.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes read at once: far above a client message's usual size, so that a
/// burst of them takes few reads; one such buffer per worker thread.
const SHARED_READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// The worker thread's read buffer: connection tasks on one thread never
    /// read at the same time.
    static SHARED: RefCell<Box<[u8]>> = RefCell::new(vec![0; SHARED_READ_BYTES].into_boxed_slice());
}

/// The stream under a client connection: plain TCP, or TLS served by the
/// router itself (`[server.tls]`), boxed so that a plain connection does
/// not pay for the size of a TLS one.
pub(super) type Socket = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Takes the socket out of hyper's upgraded connection, with the bytes
/// hyper had already read past the handshake (a client may send its first
/// frame at once). `Err` gives back a stream of a kind the router does not
/// make.
pub(super) fn from_upgraded(upgraded: Upgraded) -> Result<(Socket, Bytes), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<Limited<Socket>>>()?;
    Ok((parts.io.into_inner().into_inner(), parts.read_buf))
}

/// Registers a plain TCP stream with the runtime of the task calling this
/// (a connection's lane, see [`super::lanes`]), so that its
/// readiness is seen by the thread that serves it rather than by the
/// runtime that accepted it. A TLS stream stays where it is: TLS
/// connections are not moved to lanes.
pub(super) fn adopt(socket: Socket) -> io::Result<Socket> {
    match socket {
        Either::Left(stream) => Ok(Either::Left(TcpStream::from_std(stream.into_std()?)?)),
        tls => Ok(tls),
    }
}

/// Reads into the worker thread's buffer; the number of bytes read (0: the
/// client closed), to be taken with [`with_read`] before anything else
/// reads on this thread.
pub(super) fn poll_read_shared(
    socket: &mut Socket,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    SHARED.with_borrow_mut(|buffer| {
        let mut buf = ReadBuf::new(buffer);
        ready!(Pin::new(socket).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    })
}

/// Runs `f` on the first `n` bytes of the worker thread's buffer: what the
/// last [`poll_read_shared`] on this thread read.
pub(super) fn with_read<T>(n: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    SHARED.with_borrow_mut(|buffer| f(&mut buffer[..n]))
}

/// After a connection's last bytes: half-closes, then reads until the
/// client closes too (or `conn`'s alarm finds `deadline` passed), so that
/// its unread bytes do not turn our FIN into a reset that could destroy the
/// last bytes before the client reads them.
pub(super) fn poll_linger(
    socket: &mut Socket,
    conn: &ConnRef,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    conn.outbox.register(cx);
    if conn.outbox.take_alarm() && deadline.is_none_or(|d| Instant::now() >= d) {
        return Poll::Ready(Ok(()));
    }
    ready!(Pin::new(&mut *socket).poll_shutdown(cx))?;
    let mut scrap = [0u8; 256];
    loop {
        let mut buf = ReadBuf::new(&mut scrap);
        ready!(Pin::new(&mut *socket).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(()));
        }
    }
}
