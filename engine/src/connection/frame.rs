//! What a connection's queue holds: the frames the router hands a
//! transport to write, and the routed event that many queues share.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::config::SlowConsumer;
use crate::protocol::Positions;
use crate::text::Text;

/// One frame to write.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A reply or control message: never dropped, counted in the bounds.
    Control(Text),
    /// A replayed event (recovery): never dropped, and not counted in the
    /// bounds, because its bytes are the channel history's own and its
    /// number is bounded by that history; one recovery at a time is
    /// replayed (see [`Outbox::replaying`](super::Outbox::replaying)).
    Replay(Text),
    /// A routed event. One `Arc` is shared by every recipient, so queueing
    /// it for one more connection costs one reference count.
    Event(Arc<Event>),
    /// `connection.established` or `connection.channels`: a control
    /// message that also carries the positions it announces.
    Announce(Arc<Announcement>),
}

/// One channel's position: its name, its epoch and the last sequence.
pub type ChannelPosition = (Arc<str>, Arc<str>, u64);

/// Positions announced to a connection, beside the message's text, as the
/// router's own shared channel names and epochs: a transport that keeps
/// positions (an event stream's cursor) takes them from here without
/// parsing the text, and holds no copy of a name while the stream is idle.
#[derive(Debug)]
pub struct Announcement {
    /// The message's JSON text.
    pub text: Text,
    /// The channels' positions, in the order of their names: a slice, not
    /// the router's map, which would allocate a node of room for eleven on
    /// every connection just opened.
    pub positions: Box<[ChannelPosition]>,
    /// Whether it opens the connection (`connection.established`), where
    /// a position the client asked to recover from in the same epoch is
    /// left for the replay to move.
    pub opening: bool,
}

/// A routed event as every recipient's queue holds it.
#[derive(Debug)]
pub struct Event {
    /// The envelope's JSON text, serialized once.
    pub text: Text,
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
    pub fn control(text: impl Into<Text>) -> Frame {
        Frame::Control(text.into())
    }

    /// A control message announcing `positions` (see [`Announcement`]).
    pub fn announce(text: impl Into<Text>, positions: &Positions, opening: bool) -> Frame {
        let positions = positions
            .iter()
            .map(|(channel, (epoch, sequence))| (channel.clone(), epoch.clone(), *sequence))
            .collect();
        Frame::Announce(Arc::new(Announcement {
            text: text.into(),
            positions,
            opening,
        }))
    }

    /// The JSON text to send.
    #[inline]
    pub fn text(&self) -> &Text {
        match self {
            Frame::Control(text) | Frame::Replay(text) => text,
            Frame::Event(event) => &event.text,
            Frame::Announce(announced) => &announced.text,
        }
    }

    /// The routed event, if this frame is one.
    #[inline]
    pub fn event(&self) -> Option<&Arc<Event>> {
        match self {
            Frame::Event(event) => Some(event),
            _ => None,
        }
    }

    /// The positions announced, if this frame announces any.
    pub fn announcement(&self) -> Option<&Announcement> {
        match self {
            Frame::Announce(announced) => Some(announced),
            _ => None,
        }
    }
}
