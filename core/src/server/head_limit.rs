//! Bounds the request line plus headers of every HTTP request at
//! `server.max_header_bytes` (docs/configuration.md).
//!
//! hyper buffers a request head until it is complete, up to ~400 KB by
//! default, and answers its own 431 with an empty body only past that. So
//! the socket is wrapped in [`Limited`], which counts the bytes of each head
//! as they are read: past the bound it hands hyper nothing more, writes a
//! JSON `431 header_too_large` itself, and closes the connection.
//!
//! A head ends at its blank line; a `Content-Length` body after it is
//! skipped, and the next bytes are the next head (keep-alive, pipelining).
//! A body of unknown length (chunked) pauses the count until its response
//! is ready, which the service reports through the [`Gate`]; a 101 ends it
//! for good (the bytes are WebSocket frames), and so does an event stream
//! (no request can follow it). Bytes read while paused
//! escape the count: hyper's own buffer limit, set above this bound, is the
//! backstop for them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
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

/// Bytes of each header line kept to read `Upgrade`, `Content-Length` and
/// `Transfer-Encoding`.
const LINE_PREFIX: usize = 32;

/// What the refused request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A plain HTTP request.
    Request,
    /// A WebSocket upgrade (it had `Upgrade: websocket`).
    Upgrade,
    /// An event stream (its `Accept` named `text/event-stream` within the
    /// first bytes of the line that are read, as an `EventSource`'s does).
    Stream,
}

/// Shared between a connection's [`Limited`] IO and its service.
#[derive(Debug, Default)]
pub struct Gate {
    /// Set by the last response (a 101, an event stream): nothing is
    /// counted any more.
    no_more_heads: AtomicBool,
    /// Bumped for every response: a paused count may resume.
    responses: AtomicU32,
    /// 0: nothing refused; otherwise 1 + [`Refused`] as a number.
    refused: AtomicU8,
}

impl Gate {
    /// The service answered a request; `last` for a 101 or an event
    /// stream, after which no request head follows.
    pub fn response_ready(&self, last: bool) {
        if last {
            self.no_more_heads.store(true, Ordering::Release);
        }
        self.responses.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a head was refused, and what it was.
    pub fn refused(&self) -> Option<Refused> {
        match self.refused.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Refused::Request),
            2 => Some(Refused::Upgrade),
            _ => Some(Refused::Stream),
        }
    }

    fn refuse(&self, what: Refused) {
        let code = match what {
            Refused::Request => 1,
            Refused::Upgrade => 2,
            Refused::Stream => 3,
        };
        self.refused.store(code, Ordering::Release);
    }
}

/// What feeding bytes to a [`HeadScan`] found.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// The head goes on past these bytes.
    More,
    /// The head ended after this many of them.
    Done(usize),
    /// The head is over the bound.
    Over,
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
    upgrade: bool,
    stream: bool,
    content_length: Option<u64>,
    /// A `Transfer-Encoding`, or a `Content-Length` that could not be read:
    /// where the body ends is not known here.
    unknown_length: bool,
}

impl HeadScan {
    /// Counts `data` against `max` bytes.
    fn feed(&mut self, data: &[u8], max: usize) -> Fed {
        for (i, &b) in data.iter().enumerate() {
            self.bytes += 1;
            if self.bytes > max {
                return Fed::Over;
            }
            match b {
                b'\n' if self.line_len == 0 && self.lines > 0 => return Fed::Done(i + 1),
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
        Fed::More
    }

    fn end_line(&mut self) {
        if self.line_len == 0 {
            return;
        }
        let whole = self.line_len <= LINE_PREFIX;
        let line = &self.prefix[..self.line_len.min(LINE_PREFIX)];
        if let Some(value) = line.strip_prefix(b"upgrade:") {
            self.upgrade |= value.windows(9).any(|w| w == b"websocket");
        } else if let Some(value) = line.strip_prefix(b"accept:") {
            self.stream |= value.windows(17).any(|w| w == b"text/event-stream");
        } else if let Some(value) = line.strip_prefix(b"content-length:") {
            let length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match length {
                Some(n) if whole && self.content_length.is_none() => self.content_length = Some(n),
                _ => self.unknown_length = true,
            }
        } else if line.starts_with(b"transfer-encoding:") {
            self.unknown_length = true;
        }
        self.lines += 1;
        self.line_len = 0;
    }

    /// The length of the body after the head, when it is known.
    fn body(&self) -> Option<u64> {
        if self.unknown_length {
            None
        } else {
            Some(self.content_length.unwrap_or(0))
        }
    }
}

/// Where a connection's byte stream is.
#[derive(Debug)]
enum Phase {
    /// In a request head.
    Head(Box<HeadScan>),
    /// In a body of known length: this many bytes are left.
    Body(u64),
    /// In a body of unknown length, until the response after this many.
    Paused(u32),
    /// Upgraded: nothing is counted.
    Off,
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
        let response = reply::error_bytes(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            &format!("the request line and headers are over server.max_header_bytes ({max} bytes)"),
            serde_json::json!({ "max_header_bytes": max }),
        );
        Refusal {
            response,
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
    phase: Phase,
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
        phase: Phase::Head(Box::default()),
        refusal: None,
    };
    (io, gate)
}

impl<I> Limited<I> {
    /// The connection's own IO, once no more heads are read from it (after
    /// an upgrade): what is left of the wrapper is dropped.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Limited<I> {
    /// Counts freshly read `data`; `true` when a head went over the bound
    /// (the refusal is then under way).
    fn over(&mut self, mut data: &[u8]) -> bool {
        if self.gate.no_more_heads.load(Ordering::Acquire) {
            self.phase = Phase::Off;
        }
        loop {
            match &mut self.phase {
                Phase::Off => return false,
                Phase::Paused(responses) => {
                    if *responses == self.gate.responses.load(Ordering::Acquire) {
                        return false;
                    }
                    self.phase = Phase::Head(Box::default());
                }
                Phase::Body(left) => {
                    let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.phase = Phase::Head(Box::default());
                    }
                    if data.is_empty() {
                        return false;
                    }
                }
                Phase::Head(scan) => match scan.feed(data, self.max) {
                    Fed::More => return false,
                    Fed::Done(n) => {
                        data = &data[n..];
                        // After the head of an upgrade without a body come
                        // the new protocol's bytes (a client may send its
                        // first WebSocket frame at once), unless it is
                        // refused: they are not counted until its response
                        // says which.
                        self.phase = match scan.body() {
                            Some(0) if scan.upgrade => {
                                Phase::Paused(self.gate.responses.load(Ordering::Acquire))
                            }
                            Some(length) => Phase::Body(length),
                            None => Phase::Paused(self.gate.responses.load(Ordering::Acquire)),
                        };
                    }
                    Fed::Over => {
                        let what = match (scan.upgrade, scan.stream) {
                            (true, _) => Refused::Upgrade,
                            (false, true) => Refused::Stream,
                            (false, false) => Refused::Request,
                        };
                        self.gate.refuse(what);
                        self.refusal = Some(Box::new(Refusal::new(self.max)));
                        return true;
                    }
                },
            }
        }
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
        let mut with_body = head.to_vec();
        with_body.extend_from_slice(b"body");
        assert_eq!(scan.feed(&with_body, head.len()), Fed::Done(head.len()));
        assert_eq!(scan.body(), Some(0));
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(head, head.len() - 1), Fed::Over);
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_head() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"\r\n\r\nGET / HTTP/1.1\r\n", 1000), Fed::More);
        assert_eq!(scan.feed(&[b'a'; 1000], 1000), Fed::Over);
    }

    #[test]
    fn upgrade_and_body_length_are_read_across_reads() {
        let mut scan = HeadScan::default();
        for part in [
            &b"POST /ws HTTP/1.1\r\nUpgr"[..],
            b"ade:  WebSocket\r",
            b"\nContent-Length: 12",
            b"3\r\n",
        ] {
            assert_eq!(scan.feed(part, 1000), Fed::More);
        }
        assert!(scan.upgrade);
        assert_eq!(scan.feed(b"\r\n", 1000), Fed::Done(2));
        assert_eq!(scan.body(), Some(123));
        let mut plain = HeadScan::default();
        plain.feed(b"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n", 1000);
        assert!(!plain.upgrade);
    }

    #[test]
    fn an_event_stream_is_told_by_its_accept() {
        let mut scan = HeadScan::default();
        scan.feed(
            b"GET /ws/events HTTP/1.1\r\nAccept: Text/Event-Stream\r\n",
            1000,
        );
        assert!(scan.stream && !scan.upgrade);
        let mut plain = HeadScan::default();
        plain.feed(b"GET / HTTP/1.1\r\nAccept: text/html\r\n", 1000);
        assert!(!plain.stream);
    }

    #[test]
    fn a_body_of_unknown_length_is_not_skipped() {
        for header in [
            &b"Transfer-Encoding: chunked"[..],
            b"Content-Length: x",
            b"Content-Length: 99999999999999999999999999",
        ] {
            let mut scan = HeadScan::default();
            scan.feed(b"POST / HTTP/1.1\r\n", 1000);
            scan.feed(header, 1000);
            assert!(matches!(scan.feed(b"\r\n\r\n", 1000), Fed::Done(_)));
            assert_eq!(scan.body(), None, "{}", String::from_utf8_lossy(header));
        }
    }
}
