//! Writes a connection's queued frames straight to its socket.
//!
//! Server frames are not masked, so a frame is a 2–10 byte header followed
//! by the payload as is: every recipient of an event shares its bytes, and
//! only the header is made per connection. A batch goes out in one vectored
//! write (more only when the socket takes part of it), with no copy into a
//! per-connection buffer and no buffer kept between batches. A small batch
//! (a steady stream's one event) is copied into a buffer on the stack
//! instead and sent with one plain `send()`, which the kernel takes for
//! less than a `writev` of two slices (BENCHMARKS.md, "One registration
//! per poll").

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use arrayvec::ArrayVec;
use tokio::io::AsyncWrite;

use crate::connection::outbox::{Batch, Written};
use crate::connection::Frame;
use crate::metrics::Metrics;
use crate::server::delivered;

/// Frames handed to one `writev`: far below `IOV_MAX` (1024), and enough
/// that a burst needs few system calls.
const FRAMES_PER_WRITE: usize = 64;
/// Writes of at most this many bytes are copied into one buffer on the
/// stack and sent as one, rather than as slices.
const COPY_BELOW: usize = 512;
/// The longest header: opcode byte, length marker, 64-bit length.
const MAX_HEADER: usize = 10;
/// Close reasons are cut to fit a control frame (125 bytes with the code).
const MAX_CLOSE_REASON: usize = 123;

const OP_TEXT: u8 = 0x81;
const OP_CLOSE: u8 = 0x88;
const OP_PING: u8 = 0x89;
const OP_PONG: u8 = 0x8A;
/// Bytes of Pongs waiting to be written past which a Ping goes unanswered:
/// a client that pings faster than it reads may not grow the router's
/// memory (RFC 6455 §5.5.3 allows answering only the latest Ping).
const MAX_PENDING_PONGS: usize = 1024;

/// What a finished batch asked for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything is written; the connection goes on.
    Batch,
    /// The close frame is written; the connection is over.
    Closed,
}

/// The batch being written, and how far it got.
#[derive(Debug, Default)]
pub(super) struct Writer {
    frames: Vec<Frame>,
    /// Ping and close frames, written after the frames.
    trailer: Vec<u8>,
    /// The first frame not completely written (`frames.len()`: the trailer).
    next: usize,
    /// Bytes of that frame (header included), or of the trailer, written.
    offset: usize,
    closing: bool,
}

impl Writer {
    /// Whether nothing is left to write.
    pub fn is_idle(&self) -> bool {
        self.next >= self.frames.len() && self.offset >= self.trailer.len()
    }

    /// Whether the last batch taken ends the connection.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Answers a client's Ping after what is being written (unless the
    /// connection is closing, or too many answers wait already).
    pub fn pong(&mut self, payload: &[u8]) {
        if self.closing || self.trailer.len() + 2 + payload.len() > MAX_PENDING_PONGS {
            return;
        }
        // Control payloads are at most 125 bytes (checked by the decoder).
        self.trailer
            .extend_from_slice(&[OP_PONG, payload.len() as u8]);
        self.trailer.extend_from_slice(payload);
    }

    /// Takes a batch to write; the previous one must be finished.
    pub fn load(&mut self, batch: Batch) {
        debug_assert!(self.is_idle());
        self.frames = batch.frames;
        self.trailer = Vec::new();
        self.next = 0;
        self.offset = batch.offset;
        if batch.ping {
            self.trailer.extend_from_slice(&[OP_PING, 0]);
        }
        if let Some(close) = batch.close {
            self.trailer
                .extend_from_slice(&close_frame(close.code, &close.reason));
            self.closing = true;
        }
    }

    /// What is left of an unfinished batch without a trailer (an inline
    /// write's): the frames not completely written, and the bytes of the
    /// first that are, for the connection's task to go on from.
    pub fn unload(&mut self) -> (Vec<Frame>, usize) {
        debug_assert!(self.trailer.is_empty(), "inline batches have no trailer");
        let mut frames = std::mem::take(&mut self.frames);
        frames.drain(..self.next.min(frames.len()));
        let offset = std::mem::take(&mut self.offset);
        self.next = 0;
        (frames, offset)
    }

    /// The buffer of a batch written to the end, its frames still in it,
    /// to give back to the outbox
    /// ([`Outbox::finish`](crate::connection::outbox::Outbox::finish)).
    pub fn take_frames(&mut self) -> Vec<Frame> {
        self.next = 0;
        std::mem::take(&mut self.frames)
    }

    /// Writes until the batch is done or the socket is full. Each event
    /// fully written is counted in `metrics` as delivered, and each frame
    /// fully written is added to `written`, whatever the outcome, so that
    /// the outbox can release it from its bounds.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
        metrics: &Metrics,
        written: &mut Written,
    ) -> Poll<io::Result<Flushed>> {
        let mut now = None;
        while !self.is_idle() {
            let n = match self.poll_write_once(cx, &mut *io) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.advance(n, |frame| {
                delivered::count(frame, metrics, &mut now);
                written.add(frame);
            });
        }
        // The frames stay, all behind `next`, for `take_frames` to give
        // back: the outbox keeps a buffer that carried events.
        self.trailer = Vec::new();
        self.offset = 0;
        Poll::Ready(Ok(if self.closing {
            Flushed::Closed
        } else {
            Flushed::Batch
        }))
    }

    /// Writes what is left with one system call: one `send()` of a copy
    /// when it is small, else one `writev` of its slices.
    fn poll_write_once<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<usize>> {
        let mut small = Copy {
            buf: ArrayVec::new(),
            skip: self.offset,
        };
        if self.copy_small(&mut small) {
            return Pin::new(io).poll_write(cx, &small.buf);
        }
        let mut headers = [[0u8; MAX_HEADER]; FRAMES_PER_WRITE];
        let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE + 1];
        let used = self.slices(&mut headers, &mut slices);
        Pin::new(io).poll_write_vectored(cx, &slices[..used])
    }

    /// Copies what is left (frames, then the trailer) into `copy`, a
    /// buffer on the stack, if it fits, as a steady stream's one event
    /// does: whether it did. Laid out straight, without the slices a large
    /// batch needs, in an `ArrayVec`, which, unlike an array, is not zeroed
    /// first (that cost about as much as the copy).
    fn copy_small(&self, copy: &mut Copy) -> bool {
        let mut header = [0u8; MAX_HEADER];
        for frame in self.frames.get(self.next..).unwrap_or_default() {
            let text = frame.text().as_bytes();
            let header_len = encode_header(&mut header, OP_TEXT, text.len());
            if !(copy.append(&header[..header_len]) && copy.append(text)) {
                return false;
            }
        }
        copy.append(&self.trailer)
    }

    /// Lays out what is left (up to [`FRAMES_PER_WRITE`] frames, then the
    /// trailer) as slices; returns how many slices are used.
    fn slices<'a>(
        &'a self,
        headers: &'a mut [[u8; MAX_HEADER]; FRAMES_PER_WRITE],
        slices: &mut [IoSlice<'a>],
    ) -> usize {
        let pending = self.frames.get(self.next..).unwrap_or_default();
        let mut header_lens = [0; FRAMES_PER_WRITE];
        for ((frame, header), len) in pending.iter().zip(headers.iter_mut()).zip(&mut header_lens) {
            *len = encode_header(header, OP_TEXT, frame.text().len());
        }
        let mut used = 0;
        let mut skip = self.offset;
        for ((frame, header), len) in pending.iter().zip(headers.iter()).zip(header_lens) {
            let header_skip = skip.min(len);
            if header_skip < len {
                slices[used] = IoSlice::new(&header[header_skip..len]);
                used += 1;
            }
            slices[used] = IoSlice::new(&frame.text().as_bytes()[skip - header_skip..]);
            used += 1;
            skip = 0;
        }
        if pending.len() <= FRAMES_PER_WRITE && !self.trailer.is_empty() {
            let from = if pending.is_empty() { self.offset } else { 0 };
            slices[used] = IoSlice::new(&self.trailer[from..]);
            used += 1;
        }
        used
    }

    /// Moves past `n` written bytes, calling `done` for each finished frame.
    fn advance(&mut self, mut n: usize, mut done: impl FnMut(&Frame)) {
        while n > 0 {
            let Some(frame) = self.frames.get(self.next) else {
                self.offset += n;
                return;
            };
            let len = frame.text().len();
            let left = header_len(len) + len - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            done(frame);
            self.next += 1;
            self.offset = 0;
        }
    }
}

/// A small write being laid out in a buffer on the stack.
struct Copy {
    buf: ArrayVec<u8, COPY_BELOW>,
    /// Bytes still to leave out: those written already.
    skip: usize,
}

impl Copy {
    /// Appends `part`, less what is still to be left out; `false` if it
    /// does not fit.
    fn append(&mut self, part: &[u8]) -> bool {
        let skipped = self.skip.min(part.len());
        self.skip -= skipped;
        self.buf.try_extend_from_slice(&part[skipped..]).is_ok()
    }
}

/// The header length for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes an unmasked, final frame header into `out`; returns its length.
fn encode_header(out: &mut [u8; MAX_HEADER], opcode: u8, len: usize) -> usize {
    out[0] = opcode;
    match header_len(len) {
        2 => out[1] = len as u8,
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
    header_len(len)
}

/// A close reason cut at a character boundary to fit a control frame with
/// its code (every close the server sends goes through this).
pub(super) fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// A complete close frame: code, then the reason cut to fit.
pub(super) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = close_reason(reason).as_bytes();
    let mut frame = vec![OP_CLOSE, (2 + reason.len()) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Close;
    use crate::server::trickle::Trickle;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    /// Parses `bytes` back into (opcode, payload) pairs with tungstenite.
    fn parse(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut cursor = io::Cursor::new(bytes);
        let mut frames = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            let start = cursor.position() as usize;
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && header.mask.is_none());
            let at = cursor.position() as usize;
            let payload = bytes[at..at + len as usize].to_vec();
            cursor.set_position((at + len as usize) as u64);
            frames.push((bytes[start] & 0x0F, payload));
        }
        frames
    }

    /// Writes `batch` whole: the bytes, the outcome and how many writes.
    fn write_all(batch: Batch, chunk: usize) -> (Vec<u8>, Flushed, usize) {
        let mut writer = Writer::default();
        writer.load(batch);
        let mut socket = Trickle::new(chunk, usize::MAX);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let metrics = Metrics::new();
        match writer.poll_write(&mut cx, &mut socket, &metrics, &mut Written::default()) {
            Poll::Ready(Ok(flushed)) => {
                assert!(writer.is_idle());
                (socket.out, flushed, socket.writes)
            }
            other => panic!("{other:?}"),
        }
    }

    fn batch(sizes: &[usize], ping: bool, close: Option<Close>) -> Batch {
        Batch {
            frames: sizes
                .iter()
                .map(|n| Frame::control("x".repeat(*n)))
                .collect(),
            close,
            ping,
            ..Batch::default()
        }
    }

    /// A batch written to the end gives back its buffer with its frames
    /// in it, so the outbox can tell a buffer that carried events.
    #[test]
    fn a_written_batch_gives_back_its_frames() {
        let mut writer = Writer::default();
        writer.load(batch(&[3, 4], false, None));
        let mut socket = Trickle::new(usize::MAX, usize::MAX);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let wrote = writer.poll_write(
            &mut cx,
            &mut socket,
            &Metrics::new(),
            &mut Written::default(),
        );
        assert!(matches!(wrote, Poll::Ready(Ok(Flushed::Batch))));
        assert!(writer.is_idle());
        assert_eq!(writer.take_frames().len(), 2);
        assert!(writer.is_idle(), "and is empty after");
    }

    /// What an inline write leaves when the socket fills is unloaded, and
    /// a later batch from that offset writes exactly the rest, wherever the
    /// socket filled: in a header, in a payload, between frames.
    #[test]
    fn an_unfinished_batch_goes_on_from_its_offset_wherever_it_stopped() {
        let sizes = [1, 125, 126, 300];
        let whole: usize = sizes.iter().map(|n| header_len(*n) + n).sum();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let metrics = Metrics::new();
        for room in [1, 2, 3, 5, 130, 131, 134, 200, whole - 1] {
            let mut writer = Writer::default();
            writer.load(batch(&sizes, false, None));
            let mut socket = Trickle::new(usize::MAX, room);
            let mut written = Written::default();
            let wrote = writer.poll_write(&mut cx, &mut socket, &metrics, &mut written);
            assert!(wrote.is_pending(), "room {room}");
            let (frames, offset) = writer.unload();
            assert_eq!(written.frames + frames.len(), sizes.len(), "room {room}");
            let rest = Batch {
                frames,
                offset,
                ..Batch::default()
            };
            let (bytes, flushed, _) = write_all(rest, 7);
            assert_eq!(flushed, Flushed::Batch);
            let lens: Vec<usize> = parse(&[socket.out, bytes].concat())
                .iter()
                .map(|(_, p)| p.len())
                .collect();
            assert_eq!(lens, sizes, "room {room}");
        }
    }

    #[test]
    fn frames_of_every_header_size_survive_any_split() {
        let sizes = [0, 1, 125, 126, 65_535, 65_536, 70_000];
        for chunk in [1, 3, 7, 100, 1 << 20] {
            let (bytes, flushed, _) = write_all(batch(&sizes, true, None), chunk);
            assert_eq!(flushed, Flushed::Batch);
            let frames = parse(&bytes);
            let lens: Vec<usize> = frames.iter().map(|(_, p)| p.len()).collect();
            assert_eq!(lens, [&sizes[..], &[0]].concat(), "chunk {chunk}");
            assert!(frames[..sizes.len()].iter().all(|(op, _)| *op == 1));
            assert_eq!(frames.last().unwrap().0, 9, "ping last");
        }
    }

    #[test]
    fn more_frames_than_one_write_takes() {
        let sizes = vec![10; FRAMES_PER_WRITE * 3 + 5];
        let (bytes, _, _) = write_all(batch(&sizes, false, None), 1 << 20);
        assert_eq!(parse(&bytes).len(), sizes.len());
    }

    /// The steady case: a few small frames (and a Ping) leave in one plain
    /// write, not one per slice (the test socket writes one slice of a
    /// vectored write at a time, as a socket may).
    #[test]
    fn a_small_batch_is_one_plain_write() {
        let (bytes, _, writes) = write_all(batch(&[100, 200, 0], true, None), 1 << 20);
        assert_eq!(writes, 1);
        let lens: Vec<usize> = parse(&bytes).iter().map(|(_, p)| p.len()).collect();
        assert_eq!(lens, [100, 200, 0, 0]);
        let (_, _, writes) = write_all(batch(&[COPY_BELOW], false, None), 1 << 20);
        assert_eq!(
            writes, 2,
            "header and payload as slices once over the limit"
        );
    }

    #[test]
    fn close_frame_carries_code_and_a_cut_reason() {
        let close = Close {
            code: 4008,
            reason: "é".repeat(100),
            flush: true,
        };
        let (bytes, flushed, _) = write_all(batch(&[5], false, Some(close)), 2);
        assert_eq!(flushed, Flushed::Closed);
        let frames = parse(&bytes);
        let (op, payload) = &frames[1];
        assert_eq!(*op, 8);
        assert!(payload.len() <= 125);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4008);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
