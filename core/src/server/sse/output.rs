//! What an event stream has rendered and not yet written, and the cursor
//! that renders it (each event an `id:` + `data:` message): the part of a
//! stream that its task and its thread's mailbox drainer share, so that the
//! drainer can render and write an idle stream's events without waking its
//! task ([`inline`](super::inline)), and the task goes on from the byte
//! where the drainer stopped.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use tokio::io::AsyncWrite;

use super::cursor::Cursor;
use crate::connection::outbox::{Batch, Written};
use crate::connection::Outbox;
use crate::metrics::Metrics;
use crate::protocol;
use crate::server::delivered;

/// The keep-alive comment.
const PING: &[u8] = b": ping\n\n";

/// Appends one `id:` + `data:` message. `write_id` appends the id (the
/// stream's cursor, written in place); when it appends nothing the message
/// has no `id:` line.
pub fn message(out: &mut Vec<u8>, write_id: impl FnOnce(&mut Vec<u8>), json: &str) {
    out.reserve(json.len() + 64);
    let start = out.len();
    out.extend_from_slice(b"id: ");
    let id_at = out.len();
    write_id(out);
    if out.len() == id_at {
        out.truncate(start);
    } else {
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Room kept before a chunk for its size line: eight hex digits (leading
/// zeros are allowed) and CRLF, filled in once the chunk is written.
const CHUNK_HEAD: usize = 10;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A stream's rendering and writing state.
#[derive(Debug)]
pub struct Output {
    cursor: Cursor,
    /// Bytes being written (nothing, between batches).
    out: Vec<u8>,
    /// How many of them are written.
    written: usize,
    /// HTTP/1.1: the body is chunked; HTTP/1.0: it ends at the close.
    chunked: bool,
    /// The last message (and chunk) is in `out`.
    ended: bool,
    /// The frames rendered in `out`: they count against the outbox's
    /// bounds until `out` is written, as a WebSocket's batch does.
    unreleased: Written,
}

impl Output {
    /// A stream that starts with `head` (the response head, written
    /// first) and renders its messages' ids from `cursor`.
    pub fn new(head: Vec<u8>, chunked: bool, cursor: Cursor) -> Output {
        Output {
            cursor,
            out: head,
            written: 0,
            chunked,
            ended: false,
            unreleased: Written::default(),
        }
    }

    /// Whether a batch may be loaded: nothing is under way, and the last
    /// message is not out yet.
    pub fn takes_more(&self) -> bool {
        self.out.is_empty() && !self.ended
    }

    /// Whether bytes are waiting to be written.
    pub fn has_bytes(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether the last message is loaded (it may not be written yet).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Renders a batch taken from `outbox` as one chunk of messages, under
    /// the cursor each moves, and, when it closes the stream, a last
    /// `connection.closed` message and the body's end; the batch leaves
    /// the outbox's bounds once it is written. Its events count as
    /// delivered in `metrics` here, as they become the stream's bytes,
    /// which are written at once.
    pub fn load(&mut self, outbox: &Outbox, batch: Batch, metrics: &Metrics) {
        let cursor = &mut self.cursor;
        let mut now = None;
        let ended = chunk(&mut self.out, self.chunked, |out| {
            for frame in &batch.frames {
                delivered::count(frame, metrics, &mut now);
                cursor.saw(frame);
                message(out, |out| cursor.write_id(out), frame.text());
            }
            let Some(close) = &batch.close else {
                return false;
            };
            let closed = protocol::closed(close.code, &close.reason);
            message(out, |out| cursor.write_id(out), &closed);
            true
        });
        // Only the buffer goes back now: what is rendered counts until written.
        for frame in &batch.frames {
            self.unreleased.add(frame);
        }
        outbox.finish(Written::default(), batch.frames);
        if ended {
            self.ended = true;
            if self.chunked {
                self.out.extend_from_slice(LAST_CHUNK);
            }
        }
    }

    /// Loads a keep-alive comment.
    pub fn ping(&mut self) {
        chunk(&mut self.out, self.chunked, |out| {
            out.extend_from_slice(PING);
            false
        });
    }

    /// Writes and flushes what is loaded, then lets its buffer go, so
    /// that an idle stream holds none, and its frames leave `outbox`'s
    /// bounds; on `Pending` the rest stays, for whoever writes next.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
        outbox: &Outbox,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_write_all(cx, io))?;
        outbox.release(std::mem::take(&mut self.unreleased));
        self.out = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Renders `batch` (taken from `outbox`) in `scratch`, a buffer the
    /// caller keeps between streams, and writes it to `io` without
    /// waiting: the stream keeps `scratch`'s allocation only for what the
    /// socket did not take, so that a batch written at once allocates
    /// nothing. Only when [`takes_more`](Output::takes_more).
    pub fn write_now<W: AsyncWrite + Unpin>(
        &mut self,
        outbox: &Outbox,
        batch: Batch,
        metrics: &Metrics,
        scratch: &mut Vec<u8>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        debug_assert!(self.takes_more(), "nothing else under way");
        std::mem::swap(&mut self.out, scratch);
        self.load(outbox, batch, metrics);
        let mut cx = Context::from_waker(Waker::noop());
        let wrote = self.poll_write_all(&mut cx, io);
        if let Poll::Ready(Ok(())) = wrote {
            outbox.release(std::mem::take(&mut self.unreleased));
            std::mem::swap(&mut self.out, scratch);
        }
        wrote
    }

    /// Writes and flushes what is loaded, and empties the buffer.
    fn poll_write_all<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(Pin::new(io).poll_flush(cx))?;
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Appends what `render` writes to `out` as one chunk of the body (as is,
/// for HTTP/1.0); passes on what it returns.
fn chunk(out: &mut Vec<u8>, chunked: bool, render: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
    let start = out.len();
    if chunked {
        out.resize(start + CHUNK_HEAD, 0);
    }
    let body = out.len();
    let returned = render(out);
    let len = out.len() - body;
    if len == 0 {
        // An empty chunk would end the body.
        out.truncate(start);
    } else if chunked {
        write_chunk_head(&mut out[start..body], len);
        out.extend_from_slice(b"\r\n");
    }
    returned
}

/// Fills a chunk's room with its size, as eight hex digits, and CRLF.
fn write_chunk_head(room: &mut [u8], len: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    assert!(
        len <= u32::MAX as usize,
        "a chunk is one batch, far below 4 GiB"
    );
    for (i, digit) in room[..8].iter_mut().enumerate() {
        *digit = DIGITS[(len >> (28 - 4 * i)) & 0xf];
    }
    room[8..].copy_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::outbox::{Close, Limits, Pushed};
    use crate::connection::Frame;
    use crate::server::trickle::Trickle;

    /// A stream that knows `jobs` (epoch `E`) from its start.
    fn cursor() -> Cursor {
        let position = crate::protocol::Position {
            epoch: "E".into(),
            sequence: 0,
        };
        Cursor::starting_at(Some(&[("jobs".to_owned(), position)].into_iter().collect()))
    }

    fn outbox() -> Outbox {
        let limits = Limits {
            events: 10,
            bytes: 10_000,
        };
        Outbox::new(limits, Default::default())
    }

    fn batch(sequences: &[u64], close: Option<Close>) -> Batch {
        let frames = sequences
            .iter()
            .map(|n| {
                Frame::Replay(
                    format!(r#"{{"type":"job.progress","channel":"jobs","sequence":{n}}}"#).into(),
                )
            })
            .collect();
        Batch {
            frames,
            close,
            ping: false,
            offset: 0,
        }
    }

    /// Writes everything loaded into a socket with room for all.
    fn written(output: &mut Output) -> String {
        let mut socket = Trickle::new(usize::MAX, usize::MAX);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(output
            .poll_write(&mut cx, &mut socket, &outbox())
            .is_ready());
        String::from_utf8(socket.out).unwrap()
    }

    #[test]
    fn a_message_is_its_cursor_then_its_json() {
        let mut out = Vec::new();
        message(
            &mut out,
            |o| o.extend_from_slice(b"alerts:E:4"),
            "{\"a\":1}",
        );
        assert_eq!(out, b"id: alerts:E:4\ndata: {\"a\":1}\n\n");
        out.clear();
        message(&mut out, |_| {}, "{}");
        assert_eq!(out, b"data: {}\n\n");
    }

    #[test]
    fn a_batch_is_one_chunk_of_messages_each_under_the_cursor_past_it() {
        let mut output = Output::new(b"HEAD\r\n\r\n".to_vec(), true, cursor());
        assert_eq!(written(&mut output), "HEAD\r\n\r\n");
        output.load(&outbox(), batch(&[1, 2], None), &Metrics::new());
        let one = "id: jobs:E:1\ndata: {\"type\":\"job.progress\",\"channel\":\"jobs\",\"sequence\":1}\n\n";
        let two = "id: jobs:E:2\ndata: {\"type\":\"job.progress\",\"channel\":\"jobs\",\"sequence\":2}\n\n";
        let body = format!("{one}{two}");
        assert_eq!(
            written(&mut output),
            format!("{:08x}\r\n{body}\r\n", body.len())
        );
        assert!(output.takes_more());
        output.ping();
        assert_eq!(written(&mut output), "00000008\r\n: ping\n\n\r\n");
    }

    #[test]
    fn a_chunk_head_is_eight_hex_digits() {
        let mut room = [0; CHUNK_HEAD];
        write_chunk_head(&mut room, 0xab_cdef);
        assert_eq!(&room, b"00abcdef\r\n");
        write_chunk_head(&mut room, 0xffff_ffff);
        assert_eq!(&room, b"ffffffff\r\n");
    }

    #[test]
    fn a_close_is_a_last_message_and_the_end_of_the_body() {
        let mut output = Output::new(Vec::new(), true, cursor());
        let close = Close {
            code: 4008,
            reason: "too slow".into(),
            flush: true,
        };
        output.load(&outbox(), batch(&[3], Some(close)), &Metrics::new());
        assert!(output.ended() && !output.takes_more());
        let text = written(&mut output);
        assert!(text.ends_with("\n\n\r\n0\r\n\r\n"), "{text}");
        assert!(
            text.contains("id: jobs:E:3\ndata: {\"type\":\"connection.closed\""),
            "{text}"
        );
    }

    #[test]
    fn over_http_1_0_messages_are_written_as_they_are() {
        let mut output = Output::new(Vec::new(), false, cursor());
        output.load(&outbox(), batch(&[], None), &Metrics::new());
        assert!(!output.has_bytes(), "an empty batch is nothing at all");
        output.ping();
        assert_eq!(written(&mut output), ": ping\n\n");
    }

    /// What a full socket did not take stays, and whoever writes next goes
    /// on from the byte it stopped at; no batch is taken meanwhile.
    #[test]
    fn a_partly_written_output_goes_on_from_the_byte_it_stopped_at() {
        let mut whole = Output::new(Vec::new(), true, cursor());
        whole.load(&outbox(), batch(&[1, 2, 3], None), &Metrics::new());
        let expected = written(&mut whole);

        let mut output = Output::new(Vec::new(), true, cursor());
        output.load(&outbox(), batch(&[1, 2, 3], None), &Metrics::new());
        let mut socket = Trickle::new(usize::MAX, 7);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(output
            .poll_write(&mut cx, &mut socket, &outbox())
            .is_pending());
        assert!(output.has_bytes() && !output.takes_more());
        socket.room = usize::MAX;
        assert!(output
            .poll_write(&mut cx, &mut socket, &outbox())
            .is_ready());
        assert_eq!(String::from_utf8(socket.out).unwrap(), expected);
        assert!(output.takes_more());
    }

    /// A batch written at once leaves the scratch buffer with the caller
    /// and the stream with none; one the socket did not take keeps it.
    #[test]
    fn a_drainer_renders_in_its_scratch_and_the_stream_keeps_only_what_is_left() {
        let (outbox, mut scratch) = (outbox(), Vec::with_capacity(4096));
        let metrics = Metrics::new();
        let mut output = Output::new(Vec::new(), true, cursor());
        let mut roomy = Trickle::new(usize::MAX, usize::MAX);
        let wrote = output.write_now(
            &outbox,
            batch(&[1], None),
            &metrics,
            &mut scratch,
            &mut roomy,
        );
        assert!(matches!(wrote, Poll::Ready(Ok(()))));
        assert_eq!(scratch.capacity(), 4096, "the scratch is given back");
        assert_eq!((output.out.capacity(), output.written), (0, 0));
        assert!(output.takes_more());

        let mut full = Trickle::new(usize::MAX, 5);
        let wrote = output.write_now(
            &outbox,
            batch(&[2], None),
            &metrics,
            &mut scratch,
            &mut full,
        );
        assert!(wrote.is_pending());
        assert!(output.has_bytes() && !output.takes_more());
        assert_eq!(scratch.capacity(), 0, "the stream keeps what is left");
        full.room = usize::MAX;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(output.poll_write(&mut cx, &mut full, &outbox).is_ready());
        let text = String::from_utf8(full.out).unwrap();
        assert!(text.ends_with("\"sequence\":2}\n\n\r\n"), "{text}");
        assert_eq!(
            roomy.out.len(),
            text.len(),
            "the same message but its number"
        );
    }

    /// A rendered batch counts against the queue's bounds until it is
    /// written, as a WebSocket's does: what the client has not read is
    /// bounded wherever it waits (docs/protocol.md, "Slow consumers").
    #[test]
    fn a_loaded_batch_leaves_the_outboxs_bounds_once_written() {
        let full = |write: bool| {
            let outbox = outbox();
            for n in 1..=10 {
                outbox.push_control(Frame::control(format!(r#"{{"n":{n}}}"#)));
            }
            let batch = outbox.take_batch().unwrap();
            let mut output = Output::new(Vec::new(), true, cursor());
            output.load(&outbox, batch, &Metrics::new());
            if write {
                let mut socket = Trickle::new(usize::MAX, usize::MAX);
                let mut cx = Context::from_waker(Waker::noop());
                assert!(output.poll_write(&mut cx, &mut socket, &outbox).is_ready());
            }
            outbox.push_control(Frame::control("{}"))
        };
        assert!(
            matches!(full(false), Pushed::Disconnected),
            "rendered, it counts"
        );
        assert!(
            matches!(full(true), Pushed::Queued(0)),
            "written, it does not"
        );
    }
}
