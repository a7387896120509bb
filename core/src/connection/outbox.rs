//! A connection's bounded outbound queue.
//!
//! The router pushes frames here without ever waiting; the transport's
//! connection task takes everything queued at once and writes it with one
//! system call. The
//! bound is in events and in bytes. When an event does not fit, queued events
//! of `drop_oldest` channels are dropped, oldest first, until it fits; the
//! drops are then reported by one `connection.lagged` message written before
//! anything else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::future::poll_fn;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::SlowConsumer;
use crate::protocol::Positions;

/// One frame to write.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A reply, control message or replayed event: never dropped.
    Control(Utf8Bytes),
    /// A routed event. One `Arc` is shared by every recipient, so queueing
    /// it for one more connection costs one reference count.
    Event(Arc<Event>),
}

/// A routed event as every recipient's queue holds it.
#[derive(Debug)]
pub struct Event {
    /// The envelope's JSON text, serialized once.
    pub text: Utf8Bytes,
    /// The event's channel.
    pub channel: Arc<str>,
    /// Its sequence there.
    pub sequence: u64,
    /// Its channel's policy.
    pub policy: SlowConsumer,
    /// The channel's epoch, for `connection.lagged`.
    pub epoch: Arc<str>,
    /// When the router accepted it, for the delivery latency metric.
    pub accepted: std::time::Instant,
    /// The channel's `switchyard_deliveries_total` counter, resolved once
    /// per channel so that counting a delivery costs one atomic add.
    pub delivered: Counter,
}

impl Frame {
    /// A reply or control message: never dropped.
    pub fn control(text: impl Into<Utf8Bytes>) -> Frame {
        Frame::Control(text.into())
    }

    /// The JSON text to send.
    pub fn text(&self) -> &Utf8Bytes {
        match self {
            Frame::Control(text) => text,
            Frame::Event(event) => &event.text,
        }
    }

    /// The routed event, if this frame is one.
    pub fn event(&self) -> Option<&Arc<Event>> {
        match self {
            Frame::Control(_) => None,
            Frame::Event(event) => Some(event),
        }
    }
}

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
}

/// The bounds of one queue.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// At most this many events queued.
    pub events: usize,
    /// At most this many bytes of events queued.
    pub bytes: usize,
}

/// What a writer takes in one go.
#[derive(Debug, Default)]
pub struct Batch {
    /// Frames to write, in order.
    pub frames: Vec<Frame>,
    /// A close to send after them, if the connection is closing.
    pub close: Option<Close>,
    /// Whether to send a WebSocket Ping (keep-alive).
    pub ping: bool,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Frame>,
    event_count: usize,
    event_bytes: usize,
    /// Dropped since the last `connection.lagged`: count and per-channel positions.
    lag: Option<(u64, Positions)>,
    dropped_total: u64,
    /// Sequences dropped per channel, for recovery's "not already sent".
    drops: HashMap<Arc<str>, DropRecord>,
    close: Option<Close>,
    ping: bool,
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
    limits: Limits,
    inner: Mutex<Inner>,
    /// The transport task to wake when something is queued.
    ready: AtomicWaker,
    /// Set by the transport's read-side waker: the socket may have
    /// something to read. Kept here, beside the task's waker, so that a
    /// connection needs no allocation of its own for it.
    readable: AtomicBool,
}

impl Pushed {
    /// How many events this push cost the connection.
    pub fn dropped(&self) -> u64 {
        match self {
            Pushed::Queued(n) => *n,
            Pushed::Dropped | Pushed::Disconnected => 1,
            Pushed::Closed => 0,
        }
    }
}

impl Outbox {
    /// An empty queue with these bounds.
    pub fn new(limits: Limits) -> Outbox {
        Outbox {
            limits,
            inner: Mutex::new(Inner::default()),
            ready: AtomicWaker::new(),
            readable: AtomicBool::new(true),
        }
    }

    /// Queues a reply or control message (never dropped).
    pub fn push_control(&self, frame: Frame) {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return;
        }
        inner.queue.push_back(frame);
        drop(inner);
        self.ready.wake();
    }

    /// Offers an event, applying the slow-consumer rules. Never waits.
    pub fn push_event(&self, event: &Arc<Event>) -> Pushed {
        let mut inner = self.inner.lock();
        if inner.close.is_some() {
            return Pushed::Closed;
        }
        let size = event.text.len();
        let mut made_room = 0;
        while inner.event_count + 1 > self.limits.events
            || inner.event_bytes + size > self.limits.bytes
        {
            if drop_oldest(&mut inner) {
                made_room += 1;
                continue;
            }
            inner.dropped_total += 1;
            let pushed = if event.policy == SlowConsumer::Disconnect {
                inner.close = Some(Close {
                    code: 4008,
                    reason: "too slow".into(),
                    flush: false,
                });
                Pushed::Disconnected
            } else {
                record_lag(&mut inner, event);
                Pushed::Dropped
            };
            drop(inner);
            self.ready.wake();
            return pushed;
        }
        inner.event_count += 1;
        inner.event_bytes += size;
        inner.queue.push_back(Frame::Event(event.clone()));
        drop(inner);
        self.ready.wake();
        Pushed::Queued(made_room)
    }

    /// Asks the writer to close the connection.
    pub fn close(&self, close: Close) {
        let mut inner = self.inner.lock();
        if inner.close.is_none() {
            inner.close = Some(close);
        }
        drop(inner);
        self.ready.wake();
    }

    /// Asks the writer to send a keep-alive Ping.
    pub fn request_ping(&self) {
        self.inner.lock().ping = true;
        self.ready.wake();
    }

    /// Events queued now, and events dropped so far.
    pub fn depth(&self) -> (usize, u64) {
        let inner = self.inner.lock();
        (inner.queue.len(), inner.dropped_total)
    }

    /// The sequences of `channel` above `after` that were dropped, or `None`
    /// when the record no longer reaches back that far.
    pub fn dropped_after(&self, channel: &str, after: u64) -> Option<HashSet<u64>> {
        let inner = self.inner.lock();
        let Some(record) = inner.drops.get(channel) else {
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

    /// Forgets drops that recovery has since replayed.
    pub fn forget_drops(&self, channel: &str, replayed: &HashSet<u64>) {
        if let Some(record) = self.inner.lock().drops.get_mut(channel) {
            record.sequences.retain(|s| !replayed.contains(s));
        }
    }

    /// Marks the socket readable and wakes the transport task: what the
    /// read side's waker does.
    pub fn wake_readable(&self) {
        self.readable.store(true, Ordering::Release);
        self.ready.wake();
    }

    /// Whether the socket may be readable since the last call; registers
    /// the task in `cx` to be woken when it becomes so.
    pub fn take_readable(&self, cx: &Context<'_>) -> bool {
        self.ready.register(cx.waker());
        self.readable.swap(false, Ordering::Acquire)
    }

    /// Marks the socket readable again (more may be buffered).
    pub fn keep_readable(&self) {
        self.readable.store(true, Ordering::Release);
    }

    /// Waits until there is something to write, then takes all of it.
    pub async fn next_batch(&self) -> Batch {
        poll_fn(|cx| self.poll_batch(cx)).await
    }

    /// Takes everything queued, or registers the task in `cx` to be woken
    /// when something is. Only one task (the connection's) may poll.
    pub fn poll_batch(&self, cx: &mut Context<'_>) -> Poll<Batch> {
        if let Some(batch) = self.take() {
            return Poll::Ready(batch);
        }
        self.ready.register(cx.waker());
        match self.take() {
            Some(batch) => Poll::Ready(batch),
            None => Poll::Pending,
        }
    }

    /// Moves the queue out whole (its buffer becomes the batch), so an idle
    /// connection holds no queue capacity.
    fn take(&self) -> Option<Batch> {
        let mut inner = self.inner.lock();
        if inner.queue.is_empty() && inner.close.is_none() && inner.lag.is_none() && !inner.ping {
            return None;
        }
        let close = inner.close.clone();
        let mut queue = std::mem::take(&mut inner.queue);
        if close.as_ref().is_some_and(|c| !c.flush) {
            queue = VecDeque::new();
        }
        if let Some((dropped, channels)) = inner.lag.take() {
            queue.push_front(Frame::control(crate::protocol::lagged(dropped, &channels)));
        }
        inner.event_count = 0;
        inner.event_bytes = 0;
        let ping = std::mem::take(&mut inner.ping);
        Some(Batch {
            frames: Vec::from(queue),
            close,
            ping,
        })
    }
}

/// Drops the oldest queued event of a `drop_oldest` channel; false if none.
fn drop_oldest(inner: &mut Inner) -> bool {
    let Some(pos) = inner.queue.iter().position(|f| {
        f.event()
            .is_some_and(|e| e.policy == SlowConsumer::DropOldest)
    }) else {
        return false;
    };
    let Some(Frame::Event(event)) = inner.queue.remove(pos) else {
        unreachable!("found by its event metadata");
    };
    inner.event_count -= 1;
    inner.event_bytes -= event.text.len();
    inner.dropped_total += 1;
    record_lag(inner, &event);
    true
}

/// Notes a dropped event for the next `connection.lagged`: the position to
/// recover from is just before the channel's first dropped event.
fn record_lag(inner: &mut Inner, meta: &Event) {
    let record = inner.drops.entry(meta.channel.clone()).or_default();
    record.sequences.push_back(meta.sequence);
    if record.sequences.len() > MAX_DROP_RECORD {
        record.floor = record.sequences.pop_front().unwrap_or_default();
    }
    let (count, channels) = inner.lag.get_or_insert_with(Default::default);
    *count += 1;
    channels
        .entry(meta.channel.clone())
        .or_insert((meta.epoch.clone(), meta.sequence - 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, policy: SlowConsumer) -> Arc<Event> {
        Arc::new(Event {
            text: Utf8Bytes::from(format!("{{\"sequence\":{seq}}}")),
            channel: "alerts".into(),
            sequence: seq,
            policy,
            epoch: "E".into(),
            accepted: std::time::Instant::now(),
            delivered: Counter::default(),
        })
    }

    #[test]
    fn readable_is_taken_once_until_the_read_waker_marks_it_again() {
        let q = Outbox::new(Limits {
            events: 1,
            bytes: 1,
        });
        let cx = Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(q.take_readable(&cx), "a new socket is read once");
        assert!(!q.take_readable(&cx), "then skipped until woken");
        q.wake_readable();
        assert!(q.take_readable(&cx));
        q.keep_readable();
        assert!(q.take_readable(&cx), "kept after a message");
    }

    fn texts(batch: &Batch) -> Vec<String> {
        batch.frames.iter().map(|f| f.text().to_string()).collect()
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_one_batch() {
        let q = Outbox::new(Limits {
            events: 10,
            bytes: 1 << 20,
        });
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
        let q = Outbox::new(Limits {
            events: 2,
            bytes: 1 << 20,
        });
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
        let q = Outbox::new(Limits {
            events: 1,
            bytes: 1 << 20,
        });
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
        let q = Outbox::new(Limits {
            events: 100,
            bytes: 20,
        });
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
}
