//! A connection's bounded outbound queue.
//!
//! The router pushes frames here without ever waiting; the transport's
//! connection task takes everything queued at once and writes it with one
//! system call. The bound is in frames and in bytes, and every frame counts
//! against it — replies, errors, warnings and replayed events as well as live
//! events — so that no client, however it behaves, can make the router hold
//! more for it than `server.send_queue` / `server.send_queue_bytes`
//! (docs/protocol.md, "Slow consumers"). When a frame does not fit, queued
//! events of `drop_oldest` channels are dropped, oldest first, until it fits;
//! the drops are then reported by one `connection.lagged` message written
//! before anything else. A reply that still does not fit closes the
//! connection with 4008: replies are never dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;

use std::future::poll_fn;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

use super::frame::{Event, Frame};
use crate::config::SlowConsumer;
use crate::protocol::Positions;
use crate::text::Text;

/// The most frames a written batch's buffer may have room for to be kept
/// for the next ([`Outbox::finish`]): a steady stream's few, not a burst's.
const SPARE_FRAMES: usize = 8;

/// Why a connection is being closed by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The WebSocket close code.
    pub code: u16,
    /// The reason text.
    pub reason: String,
    /// Whether queued frames are written before the close frame.
    pub flush: bool,
}

/// The outcome of offering an event to a queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, after dropping this many older events to make room.
    Queued(u64),
    /// The event itself was dropped: the queue holds only `disconnect` events.
    Dropped,
    /// The connection is too slow for a `disconnect` channel: it is closing (4008).
    Disconnected,
    /// The connection is already closing; nothing was queued.
    Closed,
    /// The connection had this event already (from another node of a
    /// cluster, before it reconnected here): not queued again.
    Skipped,
}

/// The close that a connection too slow for what it is sent gets.
fn too_slow() -> Close {
    Close {
        code: 4008,
        reason: "too slow".into(),
        flush: false,
    }
}

/// The bounds of one queue.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// At most this many frames queued (`server.send_queue`).
    pub events: usize,
    /// At most this many bytes of frames queued (`server.send_queue_bytes`).
    pub bytes: usize,
}

/// [`Limits`] as the queue keeps them (see [`clamp`]).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    events: u32,
    bytes: u32,
}

/// Frames the writer has fully written, to [release](Outbox::release).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Counted frames (controls and events).
    pub frames: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Replayed frames.
    pub replays: usize,
}

impl Written {
    /// All of `frames`, written: what a transport releases after a batch.
    pub fn all(frames: &[Frame]) -> Written {
        let mut written = Written::default();
        frames.iter().for_each(|f| written.add(f));
        written
    }

    /// Adds one written frame.
    #[inline]
    pub fn add(&mut self, frame: &Frame) {
        match frame {
            Frame::Replay(_) => self.replays += 1,
            _ => {
                self.frames += 1;
                self.bytes += frame.text().len();
            }
        }
    }
}

/// What a writer takes in one go. Its frames still count against the
/// queue's bounds until the writer [releases](Outbox::release) them.
#[derive(Debug, Default)]
pub struct Batch {
    /// Frames to write, in order.
    pub frames: Vec<Frame>,
    /// A close to send after them, if the connection is closing.
    pub close: Option<Close>,
    /// Whether to send a WebSocket Ping (keep-alive).
    pub ping: bool,
    /// Bytes of the first frame already written (by an
    /// [inline write](super::inline) that the socket took only part of):
    /// the writer goes on from there.
    pub offset: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Frame>,
    /// Frames not yet written, of every kind, and their bytes: what the
    /// bounds apply to. A batch taken by the writer counts until the writer
    /// [releases](Outbox::release) it, so what a client has not read is
    /// bounded whether it sits here or in the writer. 32 bits, as the
    /// other counts here: every idle connection holds them, and a queue
    /// is bounded far below 4 GiB ([`clamp`]).
    count: u32,
    bytes: u32,
    /// Replayed frames not yet written.
    replaying: u32,
    /// Boxed: most connections never close while they have memory to spare.
    close: Option<Box<Close>>,
    /// Allocated once the connection first falls behind or is given floors:
    /// an idle connection holds none of it (BENCHMARKS.md, "Idle connections").
    behind: Option<Box<Behind>>,
    /// Bytes of the first queued frame already written by an inline write
    /// ([`Outbox::put_back`]): that frame is neither dropped nor preceded
    /// by anything else, or the client would see a frame cut in two.
    head_written: u32,
}

impl Inner {
    /// Counts a frame of `len` bytes against the bounds.
    fn hold(&mut self, len: usize) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(clamp(len));
    }

    /// Stops counting a frame of `len` bytes (dropped, not written).
    fn let_go(&mut self, len: usize) {
        self.count -= 1;
        self.bytes = self.bytes.saturating_sub(clamp(len));
    }

    /// Whether one more frame of `size` bytes is over `bounds`.
    fn over(&self, bounds: Bounds, size: usize) -> bool {
        self.count >= bounds.events || u64::from(self.bytes) + size as u64 > u64::from(bounds.bytes)
    }

    fn behind(&mut self) -> &mut Behind {
        self.behind.get_or_insert_with(Box::default)
    }

    /// Whether a close, a Ping or a `connection.lagged` is due: what only
    /// the transport's task writes.
    fn task_only_due(&self, ping: &AtomicBool) -> bool {
        let lagged = self.behind.as_ref().is_some_and(|b| b.lag.is_some());
        self.close.is_some() || ping.load(Ordering::Relaxed) || lagged
    }
}

/// What a connection that fell behind (or recovered on a cluster node
/// ahead of it) keeps.
#[derive(Debug, Default)]
struct Behind {
    /// Dropped since the last `connection.lagged`: count and per-channel positions.
    lag: Option<(u64, Positions)>,
    dropped_total: u64,
    /// Sequences dropped per channel, for recovery's "not already sent".
    drops: HashMap<Arc<str>, DropRecord>,
    /// Per channel, the epoch and sequence up to which the client already
    /// has every event (see [`Outbox::skip_through`]); usually none.
    floors: Option<Positions>,
}

/// How many dropped sequences are remembered per channel.
const MAX_DROP_RECORD: usize = 4096;

/// The dropped sequences of one channel.
#[derive(Debug, Default)]
struct DropRecord {
    sequences: VecDeque<u64>,
    /// Drops at or below this are no longer remembered.
    floor: u64,
}

/// The queue itself.
#[derive(Debug)]
pub struct Outbox {
    bounds: Bounds,
    /// `switchyard_dropped_total{reason="slow_consumer"}`, counted here so
    /// that drops made room for by any kind of frame are counted alike.
    dropped: Counter,
    inner: Mutex<Inner>,
    /// The transport task to wake when something is queued.
    ready: AtomicWaker,
    /// Set by the transport's read-side waker: the socket may have
    /// something to read. Kept here, beside the task's waker, so that a
    /// connection needs no allocation of its own for it.
    readable: AtomicBool,
    /// Set by the [`Clock`](super::Clock): one of the connection's timers
    /// may be due.
    alarm: AtomicBool,
    /// Set while the connection waits in an inline [`Scope`](super::inline::Scope).
    deferred: AtomicBool,
    /// Set while the transport's writer holds a batch it has not finished:
    /// nothing may be written inline then.
    writing: AtomicBool,
    /// A keep-alive Ping is due. Set and taken with `inner` locked, like
    /// the state inside it; kept out here only because beside the flags
    /// above it takes no room, where inside `Inner` it took 8 bytes, and
    /// a connection fits its 256-byte allocation by those (see
    /// [`Connection`](super::Connection)).
    ping: AtomicBool,
    /// The thread that writes this connection inline (0: none), see
    /// [`inline::serve`](super::inline::serve).
    inline_thread: AtomicU32,
    /// The socket descriptor the transport writes inline to (-1: none).
    /// Kept here, as a number the engine never uses itself, because it
    /// fits beside the flags above for nothing, where a shared handle to
    /// the socket would cost an allocation per connection.
    inline_socket: AtomicI32,
}

impl Outbox {
    /// An empty queue with these bounds, counting its drops in `dropped`.
    pub fn new(limits: Limits, dropped: Counter) -> Outbox {
        Outbox {
            bounds: Bounds {
                events: clamp(limits.events),
                bytes: clamp(limits.bytes),
            },
            dropped,
            inner: Mutex::new(Inner::default()),
            ready: AtomicWaker::new(),
            readable: AtomicBool::new(true),
            alarm: AtomicBool::new(false),
            deferred: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            ping: AtomicBool::new(false),
            inline_thread: AtomicU32::new(0),
            inline_socket: AtomicI32::new(-1),
        }
    }

    /// Queues a reply or control message. It is never dropped: when it does
    /// not fit even after `drop_oldest` events made room, the connection is
    /// closed with 4008 instead ([`Pushed::Disconnected`]).
    pub fn push_control(&self, frame: Frame) -> Pushed {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return Pushed::Closed;
        }
        let pushed = match self.make_room(&mut inner, frame.text().len()) {
            Some(made_room) => {
                self.enqueue(&mut inner, frame);
                Pushed::Queued(made_room)
            }
            None => {
                inner.close = Some(Box::new(too_slow()));
                Pushed::Disconnected
            }
        };
        drop(inner);
        self.ready.wake();
        pushed
    }

    /// Queues a recovery's replayed events, in order, outside the bounds.
    pub fn push_replay(&self, frames: impl IntoIterator<Item = Text>) {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return;
        }
        let before = inner.queue.len();
        inner.queue.extend(frames.into_iter().map(Frame::Replay));
        inner.replaying = inner
            .replaying
            .saturating_add(clamp(inner.queue.len() - before));
        drop(inner);
        self.ready.wake();
    }

    /// How many replayed events of earlier recoveries are not written yet
    /// (they are held outside the bounds, so recovery bounds them).
    pub fn replaying(&self) -> usize {
        self.inner.lock().replaying as usize
    }

    /// Offers an event, applying the slow-consumer rules. Never waits, and
    /// does not wake the transport's task: the fan-out defers the
    /// connection to an [inline write](super::inline) or calls
    /// [`wake`](Outbox::wake).
    pub fn push_event(&self, event: &Arc<Event>) -> Pushed {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return Pushed::Closed;
        }
        if below_floor(&mut inner, event) {
            return Pushed::Skipped;
        }
        let pushed = match self.make_room(&mut inner, event.text.len()) {
            Some(made_room) => {
                self.enqueue(&mut inner, Frame::Event(event.clone()));
                Pushed::Queued(made_room)
            }
            None if event.policy == SlowConsumer::Disconnect => {
                self.count_drop(&mut inner);
                inner.close = Some(Box::new(too_slow()));
                Pushed::Disconnected
            }
            None => {
                self.count_drop(&mut inner);
                record_lag(&mut inner, event);
                Pushed::Dropped
            }
        };
        drop(inner);
        pushed
    }

    /// Wakes the transport's task: something was queued for it.
    #[inline]
    pub fn wake(&self) {
        self.ready.wake();
    }

    /// Drops `drop_oldest` events, oldest first, until `size` more bytes and
    /// one more frame fit; how many it dropped, or `None` if they cannot fit.
    fn make_room(&self, inner: &mut Inner, size: usize) -> Option<u64> {
        let mut made_room = 0;
        while inner.over(self.bounds, size) {
            let event = drop_oldest(inner)?;
            inner.let_go(event.text.len());
            self.count_drop(inner);
            record_lag(inner, &event);
            made_room += 1;
        }
        Some(made_room)
    }

    fn enqueue(&self, inner: &mut Inner, frame: Frame) {
        inner.hold(frame.text().len());
        inner.queue.push_back(frame);
    }

    fn count_drop(&self, inner: &mut Inner) {
        inner.behind().dropped_total += 1;
        self.dropped.inc();
    }

    /// Asks the writer to close the connection.
    pub fn close(&self, close: Close) {
        let mut inner = self.inner.lock();
        if inner.close.is_none() {
            inner.close = Some(Box::new(close));
        }
        drop(inner);
        self.ready.wake();
    }

    /// Frees room for frames that the writer has written (see [`Batch`]).
    #[inline]
    pub fn release(&self, written: Written) {
        if written != Written::default() {
            release(&mut self.inner.lock(), written);
        }
    }

    /// A batch is written: frees room for its frames, as
    /// [`release`](Outbox::release) does, and takes back its buffer,
    /// `frames`, for the next frames to be queued in without an allocation
    /// (one per event, for a steady stream, was a tenth of a delivery's
    /// instructions). Only a small buffer that carried events is kept, and
    /// only until the connection is next quiet at a heartbeat
    /// ([`Outbox::shrink`]): a burst's buffer is not kept, nor a reply's (a
    /// new connection's `connection.established`), so an idle connection
    /// keeps none (BENCHMARKS.md, "Fewer instructions per delivery").
    pub fn finish(&self, written: Written, mut frames: Vec<Frame>) {
        let kept = (1..=SPARE_FRAMES).contains(&frames.capacity())
            && frames.iter().any(|frame| frame.event().is_some());
        frames.clear();
        let mut inner = self.inner.lock();
        release(&mut inner, written);
        if kept && inner.queue.capacity() == 0 {
            inner.queue = VecDeque::from(frames);
        }
    }

    /// Lets go of the queue's buffer if nothing is queued: the transports
    /// call it as a heartbeat goes out, so that a connection quiet then
    /// holds no queue.
    pub fn shrink(&self) {
        shrink(&mut self.inner.lock());
    }

    /// Whether a close has been asked for (the writer may not have taken it
    /// yet, e.g. while the socket is full).
    pub fn is_closing(&self) -> bool {
        self.inner.lock().close.is_some()
    }

    /// Asks the writer to send a keep-alive Ping: a heartbeat, at which the
    /// queue's spare buffer is let go of as well (see
    /// [`shrink`](Outbox::shrink)).
    pub fn request_ping(&self) {
        let mut inner = self.inner.lock();
        self.ping.store(true, Ordering::Relaxed);
        shrink(&mut inner);
        drop(inner);
        self.ready.wake();
    }

    /// Frames not yet written, and events dropped so far. Not yet written
    /// counts a batch the writer holds until it is written whole, as the
    /// bounds do: the queue alone reads low while a write is under way.
    pub fn depth(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        let dropped = inner.behind.as_ref().map_or(0, |b| b.dropped_total);
        ((inner.count + inner.replaying) as usize, dropped)
    }

    /// The sequences of `channel` above `after` that were dropped, or `None`
    /// when the record no longer reaches back that far.
    pub fn dropped_after(&self, channel: &str, after: u64) -> Option<HashSet<u64>> {
        let inner = self.inner.lock();
        let Some(record) = inner.behind.as_ref().and_then(|b| b.drops.get(channel)) else {
            return Some(HashSet::new());
        };
        (record.floor <= after).then(|| {
            record
                .sequences
                .iter()
                .copied()
                .filter(|s| *s > after)
                .collect()
        })
    }

    /// Reports events of `channel` in (after, until] that never reached this
    /// node (a cluster gap history could not fill) with the next
    /// `connection.lagged`, as if they had been dropped here.
    pub fn lost(&self, channel: &Arc<str>, epoch: &Arc<str>, after: u64, until: u64) {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return;
        }
        note_lag(&mut inner, channel, epoch, after, until - after);
        drop(inner);
        self.ready.wake();
    }

    /// The client already has every event of `channel` up to `sequence`
    /// under `epoch` (a cluster node it was connected to delivered them
    /// before this node's copy of the channel got there): those are not
    /// queued again when they arrive.
    pub fn skip_through(&self, channel: &Arc<str>, epoch: &Arc<str>, sequence: u64) {
        self.inner
            .lock()
            .behind()
            .floors
            .get_or_insert_with(Positions::new)
            .insert(channel.clone(), (epoch.clone(), sequence));
    }

    /// Forgets what was dropped of `channel` under an epoch it no longer has.
    pub fn forget_channel(&self, channel: &str) {
        let mut inner = self.inner.lock();
        let Some(behind) = inner.behind.as_mut() else {
            return;
        };
        behind.drops.remove(channel);
        if let Some(floors) = &mut behind.floors {
            floors.remove(channel);
        }
        if let Some((_, channels)) = &mut behind.lag {
            channels.remove(channel);
        }
    }

    /// Forgets drops that recovery has since replayed.
    pub fn forget_drops(&self, channel: &str, replayed: &HashSet<u64>) {
        let mut inner = self.inner.lock();
        if let Some(record) = inner.behind.as_mut().and_then(|b| b.drops.get_mut(channel)) {
            record.sequences.retain(|s| !replayed.contains(s));
        }
    }

    /// Marks the socket readable and wakes the transport task: what the
    /// read side's waker does.
    #[inline]
    pub fn wake_readable(&self) {
        self.raise(&self.readable);
    }

    /// Whether the socket may be readable since the last call. Only after
    /// [`register`](Outbox::register) in the same poll: a mark set later
    /// wakes the task again.
    #[inline]
    pub fn take_readable(&self) -> bool {
        self.readable.swap(false, Ordering::Acquire)
    }

    /// Marks a timer of the connection as possibly due and wakes the
    /// transport task: what the [`Clock`](super::Clock) does.
    pub fn wake_alarm(&self) {
        self.raise(&self.alarm);
    }

    /// Whether the clock rang for this connection since the last call. Only
    /// after [`register`](Outbox::register) in the same poll.
    #[inline]
    pub fn take_alarm(&self) -> bool {
        self.alarm.swap(false, Ordering::Acquire)
    }

    /// Makes the task in `cx` the one woken by whatever comes next: a
    /// frame queued, the clock, the socket. A connection task calls this
    /// once at the start of each poll and then looks at everything (with
    /// [`take_alarm`](Outbox::take_alarm), [`take_batch`](Outbox::take_batch),
    /// [`take_readable`](Outbox::take_readable)) without registering again:
    /// what arrives after the registration wakes it for another poll, so
    /// nothing is missed, and a delivery costs one registration instead of
    /// one per look (BENCHMARKS.md, "One registration per poll").
    #[inline]
    pub fn register(&self, cx: &Context<'_>) {
        self.ready.register(cx.waker());
    }

    /// Sets one of the transport's flags and wakes its task.
    #[inline]
    fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.ready.wake();
    }

    /// Marks the socket readable again (more may be buffered).
    #[inline]
    pub fn keep_readable(&self) {
        self.readable.store(true, Ordering::Release);
    }

    /// Waits until there is something to write, then takes all of it.
    pub async fn next_batch(&self) -> Batch {
        poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// Takes everything queued, or registers the task in `cx` to be woken
    /// when something is. Only one task (the connection's) may poll.
    #[inline]
    pub fn poll_batch(&self, cx: &mut Context<'_>) -> Poll<Batch> {
        if let Some(batch) = self.take_batch() {
            return Poll::Ready(batch);
        }
        self.register(cx);
        match self.take_batch() {
            Some(batch) => Poll::Ready(batch),
            None => Poll::Pending,
        }
    }

    /// Takes everything queued, if anything is (see
    /// [`register`](Outbox::register) for how a task waits). The queue
    /// moves out whole (its buffer becomes the batch, and may come back by
    /// [`finish`](Outbox::finish) until the next heartbeat), so an idle
    /// connection holds no queue capacity.
    pub fn take_batch(&self) -> Option<Batch> {
        let mut inner = self.inner.lock();
        if inner.queue.is_empty() && !inner.task_only_due(&self.ping) {
            return None;
        }
        let close = inner.close.as_deref().cloned();
        let offset = std::mem::take(&mut inner.head_written) as usize;
        // A frame partly written stays first, whatever else happens.
        let started = usize::from(offset > 0);
        let mut queue = std::mem::take(&mut inner.queue);
        if close.as_ref().is_some_and(|c| !c.flush) {
            queue.truncate(started);
        }
        if let Some((dropped, channels)) = inner.behind.as_mut().and_then(|b| b.lag.take()) {
            let lagged = Frame::control(crate::protocol::lagged(dropped, &channels));
            inner.hold(lagged.text().len());
            queue.insert(started, lagged);
        }
        let ping = self.ping.swap(false, Ordering::Relaxed);
        Some(Batch {
            frames: Vec::from(queue),
            close,
            ping,
            offset,
        })
    }

    /// Lets `thread`'s mailbox drainer write this connection's frames to
    /// `socket`: what [`inline::serve`](super::inline::serve) records.
    pub(super) fn serve_inline(&self, thread: u32, socket: i32) {
        self.inline_socket.store(socket, Ordering::Relaxed);
        self.inline_thread.store(thread, Ordering::Relaxed);
    }

    /// No more inline writes: the socket is about to close.
    pub fn stop_inline(&self) {
        self.inline_thread.store(0, Ordering::Relaxed);
        self.inline_socket.store(-1, Ordering::Relaxed);
    }

    /// The thread that writes this connection inline (0: none).
    pub(super) fn inline_thread(&self) -> u32 {
        self.inline_thread.load(Ordering::Relaxed)
    }

    /// Marks the connection deferred: whether it was not already.
    pub(super) fn mark_deferred(&self) -> bool {
        !self.deferred.swap(true, Ordering::Relaxed)
    }

    /// Ends a deferral, before the connection is written or woken.
    pub(super) fn undefer(&self) {
        self.deferred.store(false, Ordering::Relaxed);
    }

    /// Tells inline writes whether the transport's writer has a batch it
    /// has not finished (nothing may be written around it).
    #[inline]
    pub fn set_writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::Relaxed);
    }

    /// What an inline write may take: the socket and everything queued,
    /// unless the writer is mid-batch, a frame was left partly written,
    /// or a close, a Ping or a `connection.lagged` is due (those are the
    /// task's to write). Its frames count against the bounds until
    /// [released](Outbox::release), as a task's batch does.
    pub fn take_inline(&self) -> Option<(i32, Batch)> {
        let socket = self.inline_socket.load(Ordering::Relaxed);
        if socket < 0 || self.writing.load(Ordering::Relaxed) {
            return None;
        }
        let mut inner = self.inner.lock();
        if inner.queue.is_empty() || inner.task_only_due(&self.ping) || inner.head_written > 0 {
            return None;
        }
        let frames = Vec::from(std::mem::take(&mut inner.queue));
        Some((
            socket,
            Batch {
                frames,
                ..Batch::default()
            },
        ))
    }

    /// Gives back what an inline write left: `frames` go first again, the
    /// first with `offset` bytes written already.
    pub fn put_back(&self, frames: Vec<Frame>, offset: usize) {
        let mut inner = self.inner.lock();
        for frame in frames.into_iter().rev() {
            inner.queue.push_front(frame);
        }
        inner.head_written = clamp(offset);
    }
}

/// Frees room for `written` frames.
fn release(inner: &mut Inner, written: Written) {
    inner.count = inner.count.saturating_sub(clamp(written.frames));
    inner.bytes = inner.bytes.saturating_sub(clamp(written.bytes));
    inner.replaying = inner.replaying.saturating_sub(clamp(written.replays));
}

/// A count or size as the 32 bits the queue keeps it in; a larger one
/// (a configured bound of 4 GiB or more) is held as the largest.
fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Lets go of an empty queue's buffer.
fn shrink(inner: &mut Inner) {
    if inner.queue.is_empty() {
        inner.queue = VecDeque::new();
    }
}

/// Whether the client already has `event` (see [`Outbox::skip_through`]);
/// a floor the channel has passed is forgotten.
fn below_floor(inner: &mut Inner, event: &Event) -> bool {
    let Some(behind) = inner.behind.as_mut() else {
        return false;
    };
    let Some(floors) = &mut behind.floors else {
        return false;
    };
    let Some((epoch, through)) = floors.get(&event.channel) else {
        return false;
    };
    if *epoch == event.epoch && event.sequence <= *through {
        return true;
    }
    floors.remove(&event.channel);
    if floors.is_empty() {
        behind.floors = None;
    }
    false
}

/// Takes the oldest queued event of a `drop_oldest` channel out of the
/// queue; never a frame partly written already.
fn drop_oldest(inner: &mut Inner) -> Option<Arc<Event>> {
    let started = usize::from(inner.head_written > 0);
    let pos = started
        + inner.queue.iter().skip(started).position(|f| {
            f.event()
                .is_some_and(|e| e.policy == SlowConsumer::DropOldest)
        })?;
    match inner.queue.remove(pos) {
        Some(Frame::Event(event)) => Some(event),
        _ => unreachable!("found by its event metadata"),
    }
}

/// Notes a dropped event for the next `connection.lagged`: the position to
/// recover from is just before the channel's first dropped event.
fn record_lag(inner: &mut Inner, meta: &Event) {
    let record = inner
        .behind()
        .drops
        .entry(meta.channel.clone())
        .or_default();
    record.sequences.push_back(meta.sequence);
    if record.sequences.len() > MAX_DROP_RECORD {
        record.floor = record.sequences.pop_front().unwrap_or_default();
    }
    note_lag(inner, &meta.channel, &meta.epoch, meta.sequence - 1, 1);
}

/// Adds `missed` events to the next `connection.lagged`; the channel's
/// position there stays the one before its first missed event.
fn note_lag(inner: &mut Inner, channel: &Arc<str>, epoch: &Arc<str>, before: u64, missed: u64) {
    let (count, channels) = inner.behind().lag.get_or_insert_with(Default::default);
    *count += missed;
    channels
        .entry(channel.clone())
        .or_insert((epoch.clone(), before));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, policy: SlowConsumer) -> Arc<Event> {
        Arc::new(Event {
            text: Text::from(format!("{{\"sequence\":{seq}}}")),
            channel: "alerts".into(),
            sequence: seq,
            policy,
            epoch: "E".into(),
            accepted: std::time::Instant::now(),
            delivered: Counter::default(),
        })
    }

    #[test]
    fn events_a_client_already_has_are_skipped_until_the_channel_passes_them() {
        let q = Outbox::new(
            Limits {
                events: 10,
                bytes: 10_000,
            },
            Counter::default(),
        );
        q.skip_through(&"alerts".into(), &"E".into(), 2);
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::DropOldest)),
            Pushed::Skipped
        );
        assert_eq!(
            q.push_event(&event(2, SlowConsumer::DropOldest)),
            Pushed::Skipped
        );
        assert_eq!(
            q.push_event(&event(3, SlowConsumer::DropOldest)),
            Pushed::Queued(0)
        );
        assert!(
            q.inner
                .lock()
                .behind
                .as_ref()
                .is_none_or(|b| b.floors.is_none()),
            "passed floors are forgotten"
        );
        assert_eq!(
            q.push_event(&event(2, SlowConsumer::DropOldest)),
            Pushed::Queued(0)
        );
    }

    #[test]
    fn readable_is_taken_once_until_the_read_waker_marks_it_again() {
        let q = Outbox::new(
            Limits {
                events: 1,
                bytes: 1,
            },
            Counter::default(),
        );
        assert!(q.take_readable(), "a new socket is read once");
        assert!(!q.take_readable(), "then skipped until woken");
        q.wake_readable();
        assert!(q.take_readable());
        q.keep_readable();
        assert!(q.take_readable(), "kept after a message");
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task registers once per poll and then only looks: whatever comes
    /// after the registration (a frame, the clock, the socket) wakes it.
    #[test]
    fn one_registration_is_woken_by_whatever_comes_after_the_look() {
        let q = outbox(10, 10_000);
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let look = |q: &Outbox| {
            q.register(&Context::from_waker(&waker));
            (q.take_alarm(), q.take_batch().is_some(), q.take_readable())
        };
        assert_eq!(look(&q), (false, false, true), "a new socket is read once");
        q.push_control(Frame::control("reply"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(look(&q), (false, true, false));
        q.wake_alarm();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(look(&q), (true, false, false));
        q.wake_readable();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 3);
        assert_eq!(look(&q), (false, false, true));
    }

    fn outbox(events: usize, bytes: usize) -> Outbox {
        Outbox::new(Limits { events, bytes }, Counter::default())
    }

    fn texts(batch: &Batch) -> Vec<String> {
        batch.frames.iter().map(|f| f.text().to_string()).collect()
    }

    #[test]
    fn bounds_of_4_gib_or_more_are_held_as_the_largest() {
        let q = outbox(usize::MAX, usize::MAX);
        for sequence in 1..=3 {
            let pushed = q.push_event(&event(sequence, SlowConsumer::DropOldest));
            assert_eq!(pushed, Pushed::Queued(0));
        }
        assert_eq!(q.take_batch().map(|b| b.frames.len()), Some(3));
    }

    #[test]
    fn the_depth_counts_a_batch_until_it_is_written() {
        let q = outbox(100, 1 << 20);
        for seq in 1..=3 {
            q.push_event(&event(seq, SlowConsumer::DropOldest));
        }
        let batch = q.take_batch().expect("queued");
        assert_eq!(q.depth().0, 3, "taken, not written");
        q.push_event(&event(4, SlowConsumer::DropOldest));
        assert_eq!(q.depth().0, 4);
        q.release(Written::all(&batch.frames));
        assert_eq!(q.depth().0, 1);
    }

    #[test]
    fn a_small_batch_of_events_lends_its_buffer_until_a_heartbeat_finds_the_queue_empty() {
        let q = outbox(100, 1 << 20);
        let capacity = || q.inner.lock().queue.capacity();
        q.push_event(&event(1, SlowConsumer::DropOldest));
        let batch = q.take_batch().expect("queued");
        assert_eq!(capacity(), 0, "the buffer left with the batch");
        let lent = batch.frames.as_ptr();
        q.finish(Written::all(&batch.frames), batch.frames);
        assert!(capacity() > 0, "the buffer came back");
        assert_eq!(q.inner.lock().count, 0, "its frame left the bounds");

        q.push_event(&event(2, SlowConsumer::DropOldest));
        let batch = q.take_batch().expect("queued");
        assert_eq!(batch.frames.as_ptr(), lent, "queued without an allocation");
        assert_eq!(texts(&batch), ["{\"sequence\":2}"]);
        q.finish(Written::all(&batch.frames), batch.frames);
        q.request_ping();
        assert_eq!(capacity(), 0, "a heartbeat with nothing queued lets it go");

        for sequence in 3..40 {
            q.push_event(&event(sequence, SlowConsumer::DropOldest));
        }
        let burst = q.take_batch().expect("queued");
        q.finish(Written::all(&burst.frames), burst.frames);
        assert_eq!(capacity(), 0, "a burst's buffer is not kept");

        q.push_control(Frame::control("{\"type\":\"connection.established\"}"));
        let reply = q.take_batch().expect("queued");
        q.finish(Written::all(&reply.frames), reply.frames);
        assert_eq!(capacity(), 0, "a reply's buffer is not kept");
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_one_batch() {
        let q = outbox(10, 1 << 20);
        q.push_control(Frame::control("hello"));
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::DropOldest)),
            Pushed::Queued(0)
        );
        let batch = q.next_batch().await;
        assert_eq!(texts(&batch), vec!["hello", "{\"sequence\":1}"]);
        assert!(batch.close.is_none());
    }

    #[tokio::test]
    async fn drop_oldest_reports_lag_before_anything_else() {
        let q = outbox(2, 1 << 20);
        for seq in 1..=4 {
            let made_room = u64::from(seq > 2);
            assert_eq!(
                q.push_event(&event(seq, SlowConsumer::DropOldest)),
                Pushed::Queued(made_room)
            );
        }
        let batch = q.next_batch().await;
        let texts = texts(&batch);
        assert!(texts[0].contains("connection.lagged"), "{texts:?}");
        assert!(texts[0].contains(r#""dropped":2"#), "{texts:?}");
        assert!(texts[0].contains(r#""sequence":0"#), "{texts:?}");
        assert_eq!(&texts[1..], ["{\"sequence\":3}", "{\"sequence\":4}"]);
        assert_eq!(q.depth().1, 2);
    }

    #[tokio::test]
    async fn disconnect_policy_closes_with_4008() {
        let q = outbox(1, 1 << 20);
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::Disconnect)),
            Pushed::Queued(0)
        );
        assert_eq!(
            q.push_event(&event(2, SlowConsumer::Disconnect)),
            Pushed::Disconnected
        );
        let batch = q.next_batch().await;
        assert!(batch.frames.is_empty());
        assert_eq!(batch.close.unwrap().code, 4008);
        assert_eq!(
            q.push_event(&event(3, SlowConsumer::Disconnect)),
            Pushed::Closed
        );
    }

    #[tokio::test]
    async fn byte_bound_applies_too() {
        let q = outbox(100, 20);
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::DropOldest)),
            Pushed::Queued(0)
        );
        assert_eq!(
            q.push_event(&event(2, SlowConsumer::DropOldest)),
            Pushed::Queued(1)
        );
        assert_eq!(q.depth(), (1, 1));
    }

    #[tokio::test]
    async fn replies_count_against_the_bounds_and_close_4008_when_they_cannot_fit() {
        let q = outbox(3, 1 << 20);
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::DropOldest)),
            Pushed::Queued(0)
        );
        assert_eq!(q.push_control(Frame::control("a")), Pushed::Queued(0));
        assert_eq!(q.push_control(Frame::control("b")), Pushed::Queued(0));
        assert_eq!(
            q.push_control(Frame::control("c")),
            Pushed::Queued(1),
            "a drop_oldest event makes room for a reply"
        );
        assert_eq!(
            q.push_control(Frame::control("d")),
            Pushed::Disconnected,
            "replies are never dropped: the connection is closed instead"
        );
        assert_eq!(q.push_control(Frame::control("e")), Pushed::Closed);
        let batch = q.next_batch().await;
        assert_eq!(
            texts(&batch).len(),
            1,
            "nothing queued is written, only the drop is told"
        );
        assert!(texts(&batch)[0].contains("connection.lagged"));
        let close = batch.close.unwrap();
        assert_eq!((close.code, close.reason.as_str()), (4008, "too slow"));
    }

    #[tokio::test]
    async fn a_batch_counts_until_the_writer_releases_it() {
        let q = outbox(2, 1 << 20);
        q.push_control(Frame::control("a"));
        q.push_control(Frame::control("b"));
        let batch = q.next_batch().await;
        assert_eq!(batch.frames.len(), 2);
        assert_eq!(
            q.push_event(&event(1, SlowConsumer::DropOldest)),
            Pushed::Dropped,
            "the batch being written still fills the queue"
        );
        q.release(Written::all(&batch.frames));
        let lagged = q.next_batch().await;
        assert!(texts(&lagged)[0].contains("connection.lagged"));
        q.release(Written::all(&lagged.frames));
        assert_eq!(
            q.push_event(&event(2, SlowConsumer::DropOldest)),
            Pushed::Queued(0),
            "released room is usable again"
        );
    }

    /// An outbox served inline to socket 7, by thread 1.
    fn served(events: usize, bytes: usize) -> Outbox {
        let q = outbox(events, bytes);
        q.serve_inline(1, 7);
        q
    }

    #[test]
    fn an_inline_write_takes_what_is_queued_unless_the_task_must_write_first() {
        let q = outbox(10, 1 << 20);
        q.push_event(&event(1, SlowConsumer::DropOldest));
        assert!(q.take_inline().is_none(), "not served inline");
        q.serve_inline(1, 7);
        let (socket, batch) = q.take_inline().expect("idle and served");
        assert_eq!(
            (socket, texts(&batch)),
            (7, vec!["{\"sequence\":1}".into()])
        );
        assert!(q.take_inline().is_none(), "nothing queued");
        q.release(Written::all(&batch.frames));

        q.push_event(&event(2, SlowConsumer::DropOldest));
        q.set_writing(true);
        assert!(q.take_inline().is_none(), "the task is mid-batch");
        q.set_writing(false);
        q.request_ping();
        assert!(q.take_inline().is_none(), "a Ping is the task's to write");
        assert!(q.take_batch().is_some_and(|b| b.ping));
        q.stop_inline();
        q.push_event(&event(3, SlowConsumer::DropOldest));
        assert!(q.take_inline().is_none(), "the socket is closing");
    }

    #[test]
    fn what_an_inline_write_leaves_is_the_tasks_next_batch_from_where_it_stopped() {
        let q = served(10, 1 << 20);
        q.push_event(&event(1, SlowConsumer::DropOldest));
        q.push_event(&event(2, SlowConsumer::DropOldest));
        let (_, batch) = q.take_inline().unwrap();
        q.push_event(&event(3, SlowConsumer::DropOldest));
        q.put_back(batch.frames, 4);
        assert!(q.take_inline().is_none(), "a frame is partly written");
        let batch = q.take_batch().unwrap();
        assert_eq!(batch.offset, 4);
        assert_eq!(
            texts(&batch),
            ["{\"sequence\":1}", "{\"sequence\":2}", "{\"sequence\":3}"]
        );
        assert!(q.inner.lock().queue.is_empty(), "nothing left behind");
        assert_eq!(q.depth().0, 3, "all three still to write");
    }

    #[test]
    fn a_frame_partly_written_is_never_dropped_nor_preceded() {
        let q = served(2, 1 << 20);
        q.push_event(&event(1, SlowConsumer::DropOldest));
        let (_, batch) = q.take_inline().unwrap();
        q.put_back(batch.frames, 3);
        q.push_event(&event(2, SlowConsumer::DropOldest));
        assert_eq!(
            q.push_event(&event(3, SlowConsumer::DropOldest)),
            Pushed::Queued(1),
            "room is made by the next event, not the started one"
        );
        let batch = q.take_batch().unwrap();
        let texts = texts(&batch);
        assert_eq!(texts[0], "{\"sequence\":1}", "{texts:?}");
        assert!(texts[1].contains("connection.lagged"), "{texts:?}");
        assert_eq!(texts[2], "{\"sequence\":3}");
    }

    #[test]
    fn a_close_without_flush_still_finishes_a_frame_partly_written() {
        let q = served(10, 1 << 20);
        q.push_event(&event(1, SlowConsumer::DropOldest));
        q.push_event(&event(2, SlowConsumer::DropOldest));
        let (_, batch) = q.take_inline().unwrap();
        q.put_back(batch.frames, 3);
        q.close(Close {
            code: 1000,
            reason: String::new(),
            flush: false,
        });
        let batch = q.take_batch().unwrap();
        assert_eq!(
            (batch.offset, texts(&batch)),
            (3, vec!["{\"sequence\":1}".into()])
        );
        assert!(batch.close.is_some());
    }
}
