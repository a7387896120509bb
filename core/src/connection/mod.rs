//! A client connection as the router sees it: who it is, where it came in,
//! and its outbound queue. Subscriptions are not here: the router's table owns
//! them, so that the routing index changes in the same step.

pub mod outbox;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use outbox::{Close, Frame, Outbox};

/// The router's internal connection number.
pub type ConnId = u64;

/// One WebSocket (or other transport) client.
#[derive(Debug)]
pub struct Connection {
    /// Internal number.
    pub id: ConnId,
    /// The id shown to the client and operators.
    pub public_id: String,
    /// The endpoint path it connected to.
    pub endpoint: Arc<str>,
    /// The authenticated user (`sub`), if any.
    pub user: Option<String>,
    /// The client address.
    pub ip: IpAddr,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
    /// Its outbound queue.
    pub outbox: Outbox,
}

impl Connection {
    /// Asks the transport to close this connection.
    pub fn close(&self, code: u16, reason: &str) {
        self.outbox.close(Close {
            code,
            reason: reason.to_owned(),
            flush: true,
        });
    }
}

/// A shared connection handle.
pub type ConnRef = Arc<Connection>;
