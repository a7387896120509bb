//! The seam between routing and where a channel's order and history live.
//!
//! A [`ChannelLog`] decides each event's sequence on its channel, keeps the
//! channel's history for recovery, and hands every appended event to the
//! fan-out in sequence order. [`MemoryLogs`] keeps them in this process
//! (`[cluster] engine = "memory"`); a cluster engine is another
//! [`LogStore`] beside it, whose logs agree on one order through a shared
//! store. The router does not know which one it has.
//!
//! What every implementation promises (the router, recovery and the
//! integration tests rely on each point):
//! - **Order.** Sequences of a channel start at 1 and grow by one per event
//!   appended under an epoch; `hand_over` is called with each appended event
//!   in sequence order, and no other append of the same channel runs until
//!   it returns, so every recipient queues a channel's events in order.
//! - **Atomicity.** An append either does all of it — checks the
//!   idempotency key, takes the next sequence, keeps the event in history,
//!   hands it over — or none of it. An event whose key was already appended
//!   within the window is not appended again: the answer is the first
//!   event's sequence, [`Appended::Repeated`], and nothing is handed over.
//! - **Epochs.** A channel's epoch names one unbroken history. When the log
//!   loses its state it starts a new epoch (and sequences start again), so
//!   a position from the old epoch is never answered from the new one.
//! - **Failure.** An append that cannot be made returns
//!   [`LogError::Unavailable`] having kept and handed over nothing; events
//!   appended before it (earlier in the same publish) stay appended. The
//!   router stops the publish there and reports which were accepted
//!   ([`super::PublishError::Unavailable`]). The in-memory log never fails.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ChannelConfig;
use crate::text::Text;

use super::channel::{Channel, Recoverable, Stored};

/// One event to append.
pub struct Appending<'a> {
    /// Its canonical type name, remembered in history for recovery.
    pub type_name: &'a Arc<str>,
    /// Its `idempotency_key`, if it has one.
    pub idempotency_key: Option<&'a str>,
    /// How long a key is remembered (`server.idempotency_window_s`).
    pub idempotency_window: Duration,
    /// Renders the envelope once the sequence is known.
    pub render: &'a dyn Fn(u64) -> Text,
    /// The channel's settings in force: its history bounds.
    pub settings: &'a ChannelConfig,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended with this sequence, and handed over.
    New(u64),
    /// Its idempotency key was appended before, with this sequence.
    Repeated(u64),
}

impl Appended {
    /// The event's sequence, new or first.
    pub fn sequence(self) -> u64 {
        match self {
            Appended::New(sequence) | Appended::Repeated(sequence) => sequence,
        }
    }
}

/// Why an append could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The store that orders this channel cannot be reached.
    #[error("channel `{channel}` cannot be appended to: {reason}")]
    Unavailable {
        /// The channel.
        channel: String,
        /// What the store answered, for operators.
        reason: String,
    },
}

/// One channel's order and history. See the module documentation for what
/// an implementation promises.
pub trait ChannelLog: Send + Sync + fmt::Debug {
    /// The channel's name.
    fn name(&self) -> &Arc<str>;
    /// The current epoch.
    fn epoch(&self) -> Arc<str>;
    /// The last sequence appended under the current epoch (0 if none).
    fn sequence(&self) -> u64;
    /// The oldest sequence still kept, or remembered as evicted.
    fn oldest_kept(&self) -> u64;
    /// What history can say about the events after `after`: those kept
    /// (none older than `ttl`) and the types of those lost.
    fn recoverable(&self, after: u64, ttl: Option<Duration>) -> Recoverable;
    /// Appends one event and hands it to `hand_over` in order (see the
    /// module documentation).
    fn append(
        &self,
        event: Appending<'_>,
        hand_over: &mut dyn FnMut(&Stored),
    ) -> Result<Appended, LogError>;
}

/// Opens the log of each channel: one store per router.
pub trait LogStore: Send + Sync + fmt::Debug {
    /// The log of `channel`, new or (for a shared store) as others left it.
    fn open(&self, channel: &str) -> Arc<dyn ChannelLog>;
}

/// Logs kept in this process: a fresh epoch per channel, history in memory.
#[derive(Debug, Default)]
pub struct MemoryLogs;

impl LogStore for MemoryLogs {
    fn open(&self, channel: &str) -> Arc<dyn ChannelLog> {
        Arc::new(Channel::new(channel))
    }
}
