//! Feeding a sink instance: a bounded queue served by one thread per
//! instance, so a slow or stuck sink never slows the router or other sinks.
//! What does not fit is dropped and counted (`sink_overflow`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
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
    rx: Mutex<Option<mpsc::Receiver<Utf8Bytes>>>,
    closed: AtomicBool,
    overflow: AtomicU64,
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

    /// Starts the delivery thread. `on_error` hears about a failed `deliver`
    /// (a panic included); the thread carries on with the next event.
    pub fn serve(
        self: &Arc<Self>,
        instance: Arc<Mutex<Option<Instance>>>,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let rx = self.rx.lock().take().expect("a sink queue is served once");
        let queue = self.clone();
        std::thread::Builder::new()
            .name(format!("sink-{}", self.name))
            .spawn(move || loop {
                if queue.closed.load(Ordering::SeqCst) {
                    return;
                }
                let event = match rx.recv_timeout(POLL) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let mut guard = instance.lock();
                let Some(instance) = guard.as_mut() else {
                    return;
                };
                if let Err(e) = instance.deliver(&event) {
                    drop(guard);
                    on_error(e);
                }
            })
    }

    /// Stops taking events; the delivery thread ends after its current one.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Sink for SinkQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn offer(&self, event: &Utf8Bytes) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
