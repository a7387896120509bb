//! Bounds the request line plus headers of every HTTP request at
//! `server.max_header_bytes` (docs/configuration.md).
//!
//! hyper buffers a request head until it is complete, up to ~400 KB by
//! default, and answers its own 431 with an empty body only past that. So
//! the socket is wrapped in [`Limited`], which counts the bytes of each head
//! as they are read: past the bound it hands hyper nothing more, writes a
//! JSON `431 header_too_large` itself, and closes the connection.
//!
//! A head starts where the previous response was produced, and ends at its
//! blank line; the service tells the wrapper when a request was handed to it
//! and when its response is ready ([`Gate`]), so body bytes are never
//! counted. Bytes hyper reads ahead while a request is served (pipelining)
//! escape the count; hyper's own buffer limit, set above this bound, is the
//! backstop for them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::reply;

/// How long a refused connection is drained before it is closed: closing a
/// socket with unread input resets it, and the client may then never read
/// the 431.
const LINGER: Duration = Duration::from_secs(2);

/// Most bytes drained from a refused connection.
const LINGER_BYTES: usize = 256 * 1024;

/// Bytes of each header line kept to recognise `Upgrade: websocket`.
const LINE_PREFIX: usize = 32;

/// Where the connection is, as the service reports it.
const READING_HEAD: u8 = 0;
const SERVING: u8 = 1;
const UPGRADED: u8 = 2;

/// What the refused request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A plain HTTP request.
    Request,
    /// A WebSocket upgrade (it had `Upgrade: websocket`).
    Upgrade,
}

/// Shared between a connection's [`Limited`] IO and its service.
#[derive(Debug, Default)]
pub struct Gate {
    state: AtomicU8,
    /// Bumped for every response: a new head may start.
    heads: AtomicU32,
    /// 0: nothing refused; otherwise 1 + [`Refused`] as a number.
    refused: AtomicU8,
}

impl Gate {
    /// hyper has parsed a head and handed the request to the service.
    pub fn request_started(&self) {
        self.state.store(SERVING, Ordering::Release);
    }

    /// The service answered; `upgraded` for a 101, after which the bytes
    /// are WebSocket frames and nothing is counted any more.
    pub fn response_ready(&self, upgraded: bool) {
        self.heads.fetch_add(1, Ordering::AcqRel);
        let state = if upgraded { UPGRADED } else { READING_HEAD };
        self.state.store(state, Ordering::Release);
    }

    /// Whether a head was refused, and what it was.
    pub fn refused(&self) -> Option<Refused> {
        match self.refused.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Refused::Request),
            _ => Some(Refused::Upgrade),
        }
    }

    fn refuse(&self, what: Refused) {
        let code = match what {
            Refused::Request => 1,
            Refused::Upgrade => 2,
        };
        self.refused.store(code, Ordering::Release);
    }
}

/// The count of one request head.
#[derive(Debug, Default)]
struct HeadScan {
    bytes: usize,
    /// Non-empty lines so far: a blank line ends the head only after the
    /// request line (hyper skips blank lines before it).
    lines: usize,
    line_len: usize,
    prefix: [u8; LINE_PREFIX],
    done: bool,
    upgrade: bool,
}

impl HeadScan {
    /// Counts `data`; `true` once the head is over `max` bytes.
    fn feed(&mut self, data: &[u8], max: usize) -> bool {
        for &b in data {
            if self.done {
                return false;
            }
            self.bytes += 1;
            if self.bytes > max {
                return true;
            }
            match b {
                b'\n' => self.end_line(),
                b'\r' => {}
                _ => {
                    if let Some(slot) = self.prefix.get_mut(self.line_len) {
                        *slot = b.to_ascii_lowercase();
                    }
                    self.line_len += 1;
                }
            }
        }
        false
    }

    fn end_line(&mut self) {
        if self.line_len == 0 {
            self.done = self.lines > 0;
            return;
        }
        let line = &self.prefix[..self.line_len.min(LINE_PREFIX)];
        if line.starts_with(b"upgrade:") && line.windows(9).any(|w| w == b"websocket") {
            self.upgrade = true;
        }
        self.lines += 1;
        self.line_len = 0;
    }
}

/// The 431 being written, then the client's input drained.
struct Refusal {
    response: Vec<u8>,
    written: usize,
    shut: bool,
    drained: usize,
    linger: Pin<Box<Sleep>>,
}

impl Refusal {
    fn new(max: usize) -> Refusal {
        let body = reply::error_body(
            "header_too_large",
            &format!("the request line and headers are over server.max_header_bytes ({max} bytes)"),
            serde_json::json!({ "max_header_bytes": max }),
        )
        .to_string();
        let response = format!(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Refusal {
            response: response.into_bytes(),
            written: 0,
            shut: false,
            drained: 0,
            linger: Box::pin(tokio::time::sleep(LINGER)),
        }
    }
}

/// A connection's IO with its request heads bounded.
pub struct Limited<I> {
    inner: I,
    gate: Arc<Gate>,
    max: usize,
    heads: u32,
    /// Dropped once the connection is upgraded, so a WebSocket connection
    /// carries none of it.
    scan: Option<Box<HeadScan>>,
    refusal: Option<Box<Refusal>>,
}

/// Wraps `inner`, bounding heads at `max` bytes; the [`Gate`] goes to the
/// connection's service.
pub fn limit<I>(inner: I, max: usize) -> (Limited<I>, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let io = Limited {
        inner,
        gate: gate.clone(),
        max,
        heads: 0,
        scan: Some(Box::default()),
        refusal: None,
    };
    (io, gate)
}

impl<I: AsyncRead + AsyncWrite + Unpin> Limited<I> {
    /// Counts freshly read `data` if a head is being read; `true` when it
    /// went over the bound.
    fn over(&mut self, data: &[u8]) -> bool {
        match self.gate.state.load(Ordering::Acquire) {
            READING_HEAD => {}
            UPGRADED => {
                self.scan = None;
                return false;
            }
            _ => return false,
        }
        let heads = self.gate.heads.load(Ordering::Acquire);
        let scan = self.scan.get_or_insert_with(Box::default);
        if heads != self.heads {
            self.heads = heads;
            **scan = HeadScan::default();
        }
        if !scan.feed(data, self.max) {
            return false;
        }
        let what = if scan.upgrade {
            Refused::Upgrade
        } else {
            Refused::Request
        };
        self.gate.refuse(what);
        self.refusal = Some(Box::new(Refusal::new(self.max)));
        true
    }

    /// Writes the 431, half-closes, drains the client's input for a
    /// while, then reports end of input, which ends hyper's connection.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(r) = self.refusal.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut inner = Pin::new(&mut self.inner);
        while r.written < r.response.len() {
            let n = ready!(inner.as_mut().poll_write(cx, &r.response[r.written..]))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            r.written += n;
        }
        if !r.shut {
            ready!(inner.as_mut().poll_flush(cx))?;
            ready!(inner.as_mut().poll_shutdown(cx))?;
            r.shut = true;
        }
        let mut scratch = [0u8; 4096];
        while r.drained < LINGER_BYTES && r.linger.as_mut().poll(cx).is_pending() {
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(inner.as_mut().poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                break;
            }
            r.drained += buf.filled().len();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refuse(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.over(&buf.filled()[before..]) {
            // hyper never sees the bytes that crossed the bound.
            buf.set_filled(before);
            return this.poll_refuse(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.as_ref().is_some_and(|r| r.shut) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_counted_up_to_its_blank_line() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut scan = HeadScan::default();
        assert!(!scan.feed(head, head.len()));
        assert!(scan.done);
        // Bytes after the head (a body) are not counted.
        assert!(!scan.feed(&[b'x'; 100], head.len()));
        let mut scan = HeadScan::default();
        assert!(scan.feed(head, head.len() - 1));
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_head() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"\r\n\r\nGET / HTTP/1.1\r\n", 1000));
        assert!(!scan.done);
        assert!(scan.feed(&[b'a'; 1000], 1000));
    }

    #[test]
    fn an_upgrade_is_recognised_across_reads() {
        let mut scan = HeadScan::default();
        for part in [
            &b"GET /ws HTTP/1.1\r\nUpgr"[..],
            b"ade:  WebSocket\r",
            b"\nX: y\r\n",
        ] {
            assert!(!scan.feed(part, 1000));
        }
        assert!(scan.upgrade);
        let mut plain = HeadScan::default();
        assert!(!plain.feed(b"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n", 1000));
        assert!(!plain.upgrade);
    }
}
