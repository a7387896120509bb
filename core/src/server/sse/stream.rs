//! One open event stream in the router: its connection, a `: ping` due
//! every heartbeat interval (on the router's one clock, as a WebSocket's
//! Pings) and the token's expiry. Dropping the stream takes the
//! connection out of the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inline;
use crate::app::App;
use crate::connection::ConnRef;
use crate::server::{admission, expiry};

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
    pub fn ping_due(&mut self, now: Instant) -> bool {
        if now < self.next_ping() {
            return false;
        }
        self.pinged = now;
        true
    }

    /// When the stream's token runs out (with leeway), if it has one and
    /// the stream is not closing already.
    pub fn token_runs_out(&self, now: Instant) -> Option<Instant> {
        let exp = self
            .conn
            .expires_at()
            .filter(|_| !self.conn.outbox.is_closing())?;
        Some(expiry::runs_out(
            now,
            expiry::unix_now_ms(),
            exp,
            self.leeway_s,
        ))
    }

    /// Ends the stream as a WebSocket would, 4001, once its token has run
    /// out: a stream cannot be refreshed.
    pub fn close_if_expired(&self) {
        let unix_now_ms = expiry::unix_now_ms();
        let expired = self
            .conn
            .expires_at()
            .is_some_and(|exp| expiry::has_run_out(unix_now_ms, exp, self.leeway_s));
        if expired {
            self.conn.close(4001, "token expired");
        }
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
