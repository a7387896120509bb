//! One open event stream in the router: its connection, a `: ping` due
//! every heartbeat interval (on the router's one clock, as a WebSocket's
//! Pings) and the token's expiry. Dropping the stream takes the
//! connection out of the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inline;
use crate::app::App;
use crate::connection::ConnRef;
use crate::server::admission;

/// An open event stream, admitted into the router.
pub struct Stream {
    app: Arc<App>,
    conn: ConnRef,
    /// Whole seconds, as configured: kept small, since every stream holds
    /// one.
    heartbeat_s: u32,
    /// Seconds a token may outlive its expiry (`auth.jwt.leeway_s`).
    leeway_s: u32,
    /// When the last ping was written (the stream's start before the
    /// first); the next is due an interval later.
    pinged: Instant,
}

impl Stream {
    /// The stream of `conn`, pinging every `heartbeat`.
    pub fn new(app: Arc<App>, conn: ConnRef, heartbeat: Duration, leeway_s: u64) -> Stream {
        Stream {
            app,
            conn,
            heartbeat_s: u32::try_from(heartbeat.as_secs()).unwrap_or(u32::MAX),
            leeway_s: u32::try_from(leeway_s).unwrap_or(u32::MAX),
            pinged: Instant::now(),
        }
    }

    /// The router's connection behind the stream.
    pub fn conn(&self) -> &ConnRef {
        &self.conn
    }

    /// The router, whose clock wakes the stream.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// When the next ping is due.
    pub fn next_ping(&self) -> Instant {
        self.pinged + Duration::from_secs(self.heartbeat_s.into())
    }

    /// Whether a ping is due at `now` (the next is then an interval on).
    /// Its token is looked at with it: a stream cannot be refreshed, so
    /// once the token has run out (with leeway) the stream ends as a
    /// WebSocket would, 4001.
    pub fn ping_due(&mut self, now: Instant) -> bool {
        if now < self.next_ping() {
            return false;
        }
        self.pinged = now;
        if self.expired() {
            self.conn.close(4001, "token expired");
        }
        true
    }

    fn expired(&self) -> bool {
        let now = chrono::Utc::now().timestamp();
        self.conn
            .expires_at()
            .is_some_and(|exp| now >= exp.saturating_add(self.leeway_s.into()))
    }
}

impl Drop for Stream {
    /// Also stops inline writes: a stream's task drops its stream before
    /// its socket.
    fn drop(&mut self) {
        inline::forget(&self.conn);
        admission::leave(&self.app, &self.conn);
    }
}
