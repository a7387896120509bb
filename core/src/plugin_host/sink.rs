//! Feeding a sink instance: a bounded queue served by one thread per
//! instance, so a slow or stuck sink never slows the router or other sinks.
//! What does not fit is dropped and counted (`sink_overflow`).
//!
//! The queue outlives the thread that serves it: when an instance is
//! restarted (after a failure) or replaced by a reload that changed its
//! entry, delivery is halted, the queue keeps filling (up to its bound), and
//! the next instance's thread takes over where the old one stopped, with
//! the event the failed instance did not take (offered again first). When a
//! sink goes away for good (shutdown, or removed by a reload), its queue is
//! closed and drained into it first, within a bound; whatever is left is
//! dropped and counted (`sink_shutdown`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::instance::Instance;
use crate::router::{Offered, Sink};
use switchyard_engine::text::Text;

/// Events queued per sink before overflow.
pub const SINK_QUEUE: usize = 4096;
/// How often the delivery thread looks at its mode while idle.
const POLL: Duration = Duration::from_millis(50);
/// How often a drain looks whether the delivery thread is done.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Delivery thread modes: serve until told otherwise.
const RUN: u8 = 0;
/// Deliver what is queued, then end.
const DRAIN: u8 = 1;
/// End after the current event.
const HALT: u8 = 2;

/// The router's side of a sink: offer events without waiting.
#[derive(Debug)]
pub struct SinkQueue {
    name: String,
    tx: SyncSender<Text>,
    rx: Mutex<Option<Receiver<Text>>>,
    closed: AtomicBool,
    overflow: AtomicU64,
    /// Events queued and not yet taken by a delivery thread.
    pending: AtomicU64,
    /// The event an instance failed on (an `Err` or a panic): offered
    /// again, first, to the instance that follows. Counted in `pending`.
    failed: Mutex<Option<Text>>,
}

/// A running delivery thread; [`Delivery::halt`] ends it and hands the
/// queue's receiving end back for the next one.
#[derive(Debug)]
pub struct Delivery {
    queue: Arc<SinkQueue>,
    mode: Arc<AtomicU8>,
    thread: JoinHandle<Option<Receiver<Text>>>,
}

impl SinkQueue {
    /// A queue for instance `name`; nothing serves it until [`SinkQueue::serve`].
    pub fn new(name: &str) -> Arc<SinkQueue> {
        let (tx, rx) = mpsc::sync_channel(SINK_QUEUE);
        Arc::new(SinkQueue {
            name: name.to_owned(),
            tx,
            rx: Mutex::new(Some(rx)),
            closed: AtomicBool::new(false),
            overflow: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            failed: Mutex::new(None),
        })
    }

    /// Events dropped because the queue was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Events queued and not yet handed to the sink.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Starts a delivery thread for `instance`. `on_error` hears about a
    /// failed `deliver` (a panic included) unless the thread was halted
    /// meanwhile; the thread then ends, leaving that event and what is
    /// queued for the restarted instance (a failed instance would fail, and
    /// so lose, every event it was fed meanwhile).
    pub fn serve(
        self: &Arc<Self>,
        instance: Arc<Mutex<Option<Instance>>>,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Delivery> {
        let mode = Arc::new(AtomicU8::new(RUN));
        let (told, queue) = (mode.clone(), self.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sink-{}", self.name))
            .spawn(move || {
                let rx = queue.take_over(&told)?;
                while let Some(event) = queue.next(&rx, &told) {
                    let result = match instance.lock().as_mut() {
                        Some(instance) => instance.deliver(&event),
                        None => break,
                    };
                    if let Err(e) = result {
                        queue.keep_failed(event);
                        if told.load(Ordering::SeqCst) == HALT {
                            // Halted in the middle of this deliver (its
                            // instance abandoned, another serving now): the
                            // failure is not the running instance's.
                            tracing::warn!(plugin = %queue.name, "an abandoned sink instance failed the event it was stuck on: {e}; it is offered to the next instance");
                        } else {
                            on_error(e);
                        }
                        break;
                    }
                }
                Some(rx)
            })?;
        Ok(Delivery {
            queue: self.clone(),
            mode,
            thread,
        })
    }

    /// The queue's receiving end, once the previous delivery thread gave it
    /// back (at once, unless that one was abandoned in the middle of a
    /// `deliver` and has not returned yet); `None` when halted first.
    fn take_over(&self, mode: &AtomicU8) -> Option<Receiver<Text>> {
        loop {
            if let Some(rx) = self.rx.lock().take() {
                return Some(rx);
            }
            if mode.load(Ordering::SeqCst) != RUN {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Keeps `event`, which an instance failed on, for the next instance.
    fn keep_failed(&self, event: Text) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        *self.failed.lock() = Some(event);
    }

    /// The next event for the delivery thread, or `None` when it should
    /// end: halted, or draining and nothing is left.
    fn next(&self, rx: &Receiver<Text>, mode: &AtomicU8) -> Option<Text> {
        loop {
            let mode = mode.load(Ordering::SeqCst);
            if mode == HALT {
                return None;
            }
            let failed = self.failed.lock().take();
            let event = match failed {
                Some(event) => event,
                None if mode == DRAIN => match rx.try_recv() {
                    Ok(event) => event,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
                },
                None => match rx.recv_timeout(POLL) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return None,
                },
            };
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Some(event);
        }
    }

    /// Stops taking events for good (the instance is going away): later
    /// offers answer [`Offered::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Throws away what is still queued (the sink is gone) and says how
    /// many events that was.
    pub fn discard(&self) -> u64 {
        self.failed.lock().take();
        if let Some(rx) = self.rx.lock().as_ref() {
            while rx.try_recv().is_ok() {}
        }
        self.pending.swap(0, Ordering::SeqCst)
    }
}

impl Delivery {
    /// Delivers what is queued until the queue is empty or `deadline`
    /// passes, whichever is first; the thread then ends (join it with
    /// [`Delivery::halt`]).
    pub fn drain_until(&self, deadline: Instant) {
        self.mode.store(DRAIN, Ordering::SeqCst);
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(DRAIN_POLL);
        }
        self.mode.store(HALT, Ordering::SeqCst);
    }

    /// Ends the thread after its current event and keeps what is queued.
    pub fn halt(self) {
        self.mode.store(HALT, Ordering::SeqCst);
        if let Ok(Some(rx)) = self.thread.join() {
            *self.queue.rx.lock() = Some(rx);
        }
    }
}

impl Sink for SinkQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn offer(&self, event: &Text) -> Offered {
        if self.closed.load(Ordering::SeqCst) {
            return Offered::Closed;
        }
        // Counted before it is sent, so the delivery thread never sees the
        // count go below zero.
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(event.clone()) {
            Ok(()) => Offered::Queued,
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Offered::Closed
            }
            Err(TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.overflow.fetch_add(1, Ordering::Relaxed);
                Offered::Full
            }
        }
    }
}
