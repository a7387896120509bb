//! A socket for the writers' unit tests: it takes a few bytes at a time
//! and then is full, as a real socket does under a slow client.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A socket that takes at most `chunk` bytes a write, and is full
/// once it has taken `room`.
pub(crate) struct Trickle {
    /// What it has taken.
    pub out: Vec<u8>,
    chunk: usize,
    /// How many writes took something.
    pub writes: usize,
    /// How much more it takes before it is full.
    pub room: usize,
}

impl Trickle {
    /// Takes `chunk` bytes a write, `room` in all.
    pub(crate) fn new(chunk: usize, room: usize) -> Trickle {
        Trickle {
            out: Vec::new(),
            chunk,
            writes: 0,
            room,
        }
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.room);
        if n == 0 && !buf.is_empty() {
            return Poll::Pending;
        }
        self.writes += 1;
        self.room -= n;
        self.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
