//! A client connection as the router sees it: who it is, where it came in,
//! and its outbound queue. Subscriptions are not here: the router's table owns
//! them, so that the routing index changes in the same step.

pub mod clock;
pub mod frame;
pub mod inline;
pub mod outbox;

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use clock::Clock;
pub use frame::{Announcement, ChannelPosition, Event, Frame};
pub use outbox::{Close, Outbox};

/// The router's internal connection number.
pub type ConnId = u64;

/// One WebSocket (or other transport) client.
///
/// Every idle connection holds one, so its fields are the compact forms
/// (a `Box<str>`, not a `String` with room to grow): at 240 bytes or less,
/// it and its reference counts fit one 256-byte allocation
/// (BENCHMARKS.md, "An idle connection in 1,116 bytes of heap").
#[derive(Debug)]
pub struct Connection {
    /// Internal number.
    pub id: ConnId,
    /// The id shown to the client and operators.
    pub public_id: Box<str>,
    /// The endpoint path it connected to.
    pub endpoint: Arc<str>,
    /// The authenticated user (`sub`), if any.
    pub user: Option<Box<str>>,
    /// The client address.
    pub ip: IpAddr,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
    /// Its outbound queue.
    pub outbox: Outbox,
    /// The channels its token allows (`None` = all).
    pub channel_claim: Option<Box<[String]>>,
    /// When its token expires, Unix seconds (0 = no token).
    expires_at: AtomicI64,
}

impl Connection {
    /// A connection with an empty outbox.
    pub fn new(
        id: ConnId,
        public_id: String,
        endpoint: &str,
        identity: Identity,
        outbox: Outbox,
    ) -> Connection {
        Connection {
            id,
            public_id: public_id.into_boxed_str(),
            endpoint: endpoint.into(),
            user: identity.user.map(String::into_boxed_str),
            ip: identity.ip,
            connected_at: Utc::now(),
            outbox,
            channel_claim: identity.channel_claim.map(Vec::into_boxed_slice),
            expires_at: AtomicI64::new(identity.expires_at.unwrap_or(0)),
        }
    }

    /// When its token expires (Unix seconds), if it has one.
    pub fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// Moves the expiry after a successful `refresh`.
    pub fn refreshed(&self, expires_at: i64) {
        self.expires_at.store(expires_at, Ordering::Relaxed);
    }

    /// Whether the connection may receive `channel` under its token.
    pub fn claim_allows(&self, channel: &str) -> bool {
        self.channel_claim
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == channel))
    }
    /// Asks the transport to close this connection.
    pub fn close(&self, code: u16, reason: &str) {
        self.outbox.close(Close {
            code,
            reason: reason.to_owned(),
            flush: true,
        });
    }
}

/// A connection is its transport's read-side waker: waking it marks the
/// socket readable and wakes the connection's task (see
/// [`Outbox::wake_readable`]), so that the task reads only when there may
/// be something to read.
impl std::task::Wake for Connection {
    fn wake(self: Arc<Self>) {
        self.outbox.wake_readable();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.outbox.wake_readable();
    }
}

/// Who a connection is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The user (`sub`), if authenticated.
    pub user: Option<String>,
    /// The client address.
    pub ip: IpAddr,
    /// Token expiry, Unix seconds.
    pub expires_at: Option<i64>,
    /// The token's `channels` claim (`None` = all).
    pub channel_claim: Option<Vec<String>>,
}

/// A shared connection handle.
pub type ConnRef = Arc<Connection>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one: with its two reference counts it
    /// must fit one 256-byte allocation (BENCHMARKS.md, "An idle
    /// connection in 1,116 bytes of heap").
    #[test]
    fn a_connection_and_its_counts_fit_256_bytes() {
        let size = std::mem::size_of::<Connection>();
        assert!(size + 16 <= 256, "Connection {size} B");
    }
}
