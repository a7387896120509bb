//! The seam between routing and where a channel's sequence is decided.
//!
//! With `[cluster] engine = "memory"` this process decides: each event is
//! stamped on its channel (`router::channel`) and fanned out in the same
//! step. A cluster engine is a [`Sequencer`] instead: the router hands it
//! the validated events of a publish, it stamps them in a store shared by
//! every node (one sequence per channel, cluster-wide), and it settles the
//! publish with the sequences it got. The stamped events come back to every
//! node — in any order, perhaps twice, perhaps not at all — through
//! [`super::Router::receive`], where each channel's continuity check
//! delivers each event once and in sequence order, or says what is missing
//! so the engine can fetch it (docs/cluster.md, "What is guaranteed").
//!
//! The router does not know which store it has; the engine does not know
//! routing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::text::Text;

/// One validated event for a [`Sequencer`] to stamp.
#[derive(Clone, Debug)]
pub struct Sequencing {
    /// Its channel.
    pub channel: Arc<str>,
    /// Its canonical type name.
    pub type_name: Arc<str>,
    /// The envelope's text before the sequence number...
    pub head: String,
    /// ...and after it: the envelope is `head + sequence + tail`.
    pub tail: String,
    /// Its `idempotency_key`, if it has one.
    pub idempotency_key: Option<String>,
    /// The plugin instance that emitted it, if one did.
    pub emitter: Option<String>,
    /// The channel's `history`: how many events its store keeps.
    pub history: usize,
}

/// The events of one publish, to stamp in order, all or none.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The events, in the publisher's order.
    pub events: Vec<Sequencing>,
    /// How long an idempotency key is remembered (`server.idempotency_window_s`).
    pub idempotency_window: Duration,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended with this sequence.
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

/// Why a batch could not be stamped: nothing of it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The store that orders this channel cannot be reached.
    #[error("channel `{channel}` cannot be appended to: {reason}")]
    Unavailable {
        /// The (first) channel of the batch.
        channel: String,
        /// What the store answered, for operators.
        reason: String,
    },
}

/// Where the store put one event of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// New or repeated, with its sequence.
    pub appended: Appended,
    /// The channel's epoch it was stamped under.
    pub epoch: Arc<str>,
}

/// How a [`Sequencer`] settles a batch: where each event went, in the
/// batch's order, or why none was placed. Called once, from any thread.
pub type Settle = Box<dyn FnOnce(Result<Vec<Placed>, LogError>) + Send>;

/// Stamps events in a store shared by several routers (a cluster engine).
pub trait Sequencer: Send + Sync + fmt::Debug {
    /// This node's name in the cluster: the `node` label of its metrics.
    fn node(&self) -> &str;

    /// Stamps `batch` and calls `settle` with the outcome. Must not wait:
    /// it runs on the publisher's thread.
    fn sequence(&self, batch: Batch, settle: Settle);
}

/// An event stamped by a [`Sequencer`], as it comes back to a node.
#[derive(Clone, Debug)]
pub struct Sequenced {
    /// Its channel.
    pub channel: String,
    /// The channel's epoch it was stamped under.
    pub epoch: String,
    /// Its sequence there.
    pub sequence: u64,
    /// Its canonical type name.
    pub type_name: String,
    /// The envelope.
    pub frame: Text,
    /// How long ago it was accepted, for the history's age limit.
    pub age: Duration,
    /// Whether this node's sinks take it: only the node that accepted an
    /// event offers it to sinks, so each sink configuration gets it once
    /// cluster-wide; replays of old history never do.
    pub to_sinks: bool,
    /// The plugin instance that emitted it, whose own sink skips it.
    pub emitter: Option<String>,
}

/// What [`super::Router::lose`] declared lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// How many of the channel's events.
    pub events: u64,
    /// How many connections were told (`connection.lagged`).
    pub connections: usize,
    /// How many of them this node had accepted: its sinks never get those
    /// (counted as `switchyard_dropped_total{reason="cluster_lost"}`).
    pub sinks: usize,
}

/// What became of an event handed to [`super::Router::receive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// It was the channel's next event: delivered and kept.
    Delivered,
    /// Already delivered (a repeat, or from an older epoch): skipped.
    Stale,
    /// Events after `after` and before it are missing: deliver those first
    /// (or declare them lost), then hand it in again.
    Missing {
        /// The channel's last delivered sequence.
        after: u64,
    },
    /// No such channel here (a node with another registry): not delivered.
    UnknownChannel,
}
