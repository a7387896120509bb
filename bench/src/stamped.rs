//! A subscriber's plain TCP socket that notes when the kernel received what
//! is read from it (`SO_TIMESTAMPNS`), so that a delivery's latency can be
//! measured to its arrival at the subscriber, apart from how long the
//! generator took to get round to reading it.
//!
//! On loopback the kernel stamps a packet when the server's `send()` hands
//! it over, and a TCP read reports the stamp of the last packet it took:
//! a frame's arrival, or the arrival of the last of several frames read at
//! once (never earlier than the truth). The generator reads 1,000 frames
//! per event on one core at about twice the server's cost per frame, so
//! the time it reads a frame is the server's latency plus its own backlog;
//! the arrival time is the server's alone, which is what the kernel's
//! floor (`switchyard-bench floor`, whose reader does nothing else) is
//! compared with.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose reads remember the kernel's receive time.
pub struct Stamped {
    stream: TcpStream,
    /// Nanoseconds since the epoch (the realtime clock, as `sent_ns`) at
    /// which the last read's data arrived; 0 until a read carried a stamp.
    arrived_ns: u64,
}

impl Stamped {
    /// Turns on receive timestamps for `stream`.
    pub fn new(stream: TcpStream) -> io::Result<Stamped> {
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(Stamped {
            stream,
            arrived_ns: 0,
        })
    }

    /// When the data of the last read arrived (ns since the epoch), if the
    /// kernel said.
    pub fn arrived_ns(&self) -> Option<u64> {
        (self.arrived_ns > 0).then_some(self.arrived_ns)
    }

    /// One `recvmsg` into `buf`: the bytes read and the stamp they came with.
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(TimeSpec);
        let msg = recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let stamp = msg.cmsgs().map_err(io::Error::from)?.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => {
                Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
            }
            _ => None,
        });
        Ok((msg.bytes, stamp))
    }
}

impl AsyncRead for Stamped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match this
                .stream
                .try_io(Interest::READABLE, || this.receive(unfilled))
            {
                Ok((n, stamp)) => {
                    // Never an older read's stamp: none is better than wrong.
                    this.arrived_ns = stamp.unwrap_or(0);
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A read over loopback carries the time its bytes arrived: after the
    /// write, and well before a read made 50 ms later. The kernel turns
    /// stamping on a moment after the first socket asks (from a work
    /// queue), so the first packets may come unstamped: a few are sent.
    #[tokio::test]
    async fn a_read_carries_its_arrival_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut stamped = Stamped::new(client).unwrap();
        assert_eq!(stamped.arrived_ns(), None);

        for _ in 0..20 {
            let before = crate::now_ns();
            server.write_all(b"hello").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut buf = [0u8; 16];
            let n = stamped.read(&mut buf).await.unwrap();
            let read_at = crate::now_ns();
            assert_eq!(&buf[..n], b"hello");
            let Some(arrived) = stamped.arrived_ns() else {
                continue;
            };
            assert!(
                arrived >= before,
                "arrived {arrived} before the write {before}"
            );
            assert!(
                arrived + 40_000_000 <= read_at,
                "the stamp is the arrival (50 ms before the read), not the read"
            );
            return;
        }
        panic!("no read carried a receive timestamp");
    }
}
