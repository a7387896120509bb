//! A WebSocket connection's socket, taken back from hyper once the upgrade
//! is done, and read through its worker thread's buffer.
//!
//! hyper hands an upgrade over as a boxed, type-erased stream behind the
//! wrapper that bounded request heads; unwrapping it to the TCP (or TLS)
//! stream drops both. Reads go into one buffer per worker thread, so that
//! an idle connection holds none ([`super::frames`] keeps only unfinished
//! frames).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::server::head_limit::Limited;

/// Bytes read at once: far above a client message's usual size, so that a
/// burst of them takes few reads; one such buffer per worker thread.
const SHARED_READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// The worker thread's read buffer: connection tasks on one thread never
    /// read at the same time.
    static SHARED: RefCell<Box<[u8]>> = RefCell::new(vec![0; SHARED_READ_BYTES].into_boxed_slice());
}

/// The stream under a WebSocket connection: plain TCP, or TLS served by
/// the router itself (`[server.tls]`).
pub(super) type Socket = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Takes the stream out of hyper's upgraded connection, with the bytes
/// hyper had already read past the handshake (a client may send its first
/// frame at once). `Err` gives back a stream of a kind the router does not
/// make.
pub(super) fn from_upgraded(upgraded: Upgraded) -> Result<(Socket, Bytes), Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<Limited<TcpStream>>>() {
        Ok(parts) => {
            let stream = parts.io.into_inner().into_inner();
            return Ok((Either::Left(stream), parts.read_buf));
        }
        Err(upgraded) => upgraded,
    };
    let parts = upgraded.downcast::<TokioIo<Limited<TlsStream<TcpStream>>>>()?;
    let stream = parts.io.into_inner().into_inner();
    Ok((Either::Right(Box::new(stream)), parts.read_buf))
}

/// Registers a plain TCP stream with the runtime of the task calling this
/// (the connection's lane, see [`crate::server::lanes`]), so that its
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
