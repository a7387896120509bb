//! Feeding a sink instance: a bounded queue served by one thread per
//! instance, so a slow or stuck sink never slows the router or other sinks.
//! What does not fit is dropped and counted (`sink_overflow`).
//!
//! The queue outlives the thread that serves it: when a failed instance is
//! restarted, delivery is halted, the queue keeps filling (up to its bound),
//! and the new instance's thread takes over where the old one stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::instance::Instance;
use crate::router::Sink;

/// Events queued per sink before overflow.
pub const SINK_QUEUE: usize = 4096;
/// How often the delivery thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(50);

/// The router's side of a sink: offer events without waiting.
#[derive(Debug)]
pub struct SinkQueue {
    name: String,
    tx: SyncSender<Utf8Bytes>,
    rx: Mutex<Option<Receiver<Utf8Bytes>>>,
    closed: AtomicBool,
    overflow: AtomicU64,
}

/// A running delivery thread; [`Delivery::halt`] ends it and hands the
/// queue's receiving end back for the next one.
#[derive(Debug)]
pub struct Delivery {
    queue: Arc<SinkQueue>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Receiver<Utf8Bytes>>,
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
        })
    }

    /// Events dropped because the queue was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Starts a delivery thread for `instance`. `on_error` hears about a
    /// failed `deliver` (a panic included); the thread carries on.
    pub fn serve(
        self: &Arc<Self>,
        instance: Arc<Mutex<Option<Instance>>>,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Delivery> {
        let rx = self.rx.lock().take().ok_or_else(|| {
            std::io::Error::other(format!("sink `{}` is already being served", self.name))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let halted = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{}", self.name))
            .spawn(move || {
                while !halted.load(Ordering::SeqCst) {
                    let event = match rx.recv_timeout(POLL) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let result = match instance.lock().as_mut() {
                        Some(instance) => instance.deliver(&event),
                        None => break,
                    };
                    if let Err(e) = result {
                        on_error(e);
                    }
                }
                rx
            })?;
        Ok(Delivery {
            queue: self.clone(),
            stop,
            thread,
        })
    }

    /// Stops taking events for good (the instance is going away).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Delivery {
    /// Ends the thread after its current event and keeps what is queued.
    pub fn halt(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(rx) = self.thread.join() {
            *self.queue.rx.lock() = Some(rx);
        }
    }
}

impl Sink for SinkQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn offer(&self, event: &Utf8Bytes) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return true;
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => true,
            Err(TrySendError::Full(_)) => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}
