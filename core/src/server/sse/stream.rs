//! One open event stream in the router: its connection, a `: ping` due
//! every heartbeat interval (on the router's one clock, as a WebSocket's
//! Pings) and the token's expiry; and the `id:` + `data:` message that
//! every event becomes (rendered by [`Output`](super::output::Output)).
//! Dropping the stream takes the connection out of the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inline;
use crate::app::App;
use crate::connection::ConnRef;
use crate::server::admission;

/// The keep-alive comment.
pub const PING: &[u8] = b": ping\n\n";

/// Appends one `id:` + `data:` message. `write_id` appends the id (the
/// stream's cursor, written in place); when it appends nothing the message
/// has no `id:` line.
pub fn message(out: &mut Vec<u8>, write_id: impl FnOnce(&mut Vec<u8>), json: &str) {
    out.reserve(json.len() + 64);
    let start = out.len();
    out.extend_from_slice(b"id: ");
    let id_at = out.len();
    write_id(out);
    if out.len() == id_at {
        out.truncate(start);
    } else {
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_its_cursor_then_its_json() {
        let mut out = Vec::new();
        message(
            &mut out,
            |o| o.extend_from_slice(b"alerts:E:4"),
            "{\"a\":1}",
        );
        assert_eq!(out, b"id: alerts:E:4\ndata: {\"a\":1}\n\n");
        out.clear();
        message(&mut out, |_| {}, "{}");
        assert_eq!(out, b"data: {}\n\n");
    }
}
