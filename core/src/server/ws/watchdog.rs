//! A connection's clocks: when to ping, when a silent client is dead (4000)
//! and when its token has expired (4001). Pure arithmetic on instants, so the
//! rules are tested without sockets or sleeping.

use std::time::{Duration, Instant};

use switchyard_engine::moment::Moment;

use crate::server::expiry;

/// What is due when the timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a keep-alive Ping.
    Ping,
    /// Nothing heard for two intervals: close with 4000.
    Silent,
    /// The token expired (plus leeway) without a refresh: close with 4001.
    Expired,
}

/// The heartbeat and expiry clocks of one connection.
///
/// A client is silent when nothing came from it for two intervals *and* it
/// left the last Ping unanswered for a whole interval. The second half
/// matters because the router's clock may send a Ping up to ~1.25 s late
/// (whole seconds, `engine::connection::clock`): a client that answered
/// every Ping it was sent is never called silent for a Ping that went out
/// late.
#[derive(Debug)]
pub(super) struct Watchdog {
    /// Whole seconds, as configured, and [`Moment`]s rather than instants:
    /// kept small, since every connection holds one (BENCHMARKS.md, "Idle
    /// connections").
    heartbeat_s: u32,
    leeway_s: u32,
    last_heard: Moment,
    /// When the last Ping was sent (the connection's start before the
    /// first); the next is due an interval later.
    pinged: Moment,
}

impl Watchdog {
    /// Clocks starting at `now`.
    pub fn new(heartbeat: Duration, leeway_s: u64, now: Instant) -> Watchdog {
        Watchdog {
            heartbeat_s: u32::try_from(heartbeat.as_secs()).unwrap_or(u32::MAX),
            leeway_s: u32::try_from(leeway_s).unwrap_or(u32::MAX),
            last_heard: now.into(),
            pinged: now.into(),
        }
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_s.into())
    }

    /// When the next Ping is due.
    fn next_ping(&self) -> Instant {
        Instant::from(self.pinged) + self.heartbeat()
    }

    /// Any frame from the client counts as a sign of life.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now.into();
    }

    /// When the client counts as silent, if a Ping is waiting for its answer.
    fn silent_at(&self) -> Option<Instant> {
        (self.pinged > self.last_heard).then(|| {
            let (pinged, last_heard) = (Instant::from(self.pinged), Instant::from(self.last_heard));
            (pinged + self.heartbeat()).max(last_heard + self.heartbeat() * 2)
        })
    }

    /// When something may next be due. `expires_at` is the token's expiry
    /// (Unix seconds) and `unix_now_ms` the wall clock matching `now`.
    pub fn next_due(&self, now: Instant, expires_at: Option<i64>, unix_now_ms: i64) -> Instant {
        let expiry = expires_at.map(|exp| expiry::runs_out(now, unix_now_ms, exp, self.leeway_s));
        [Some(self.next_ping()), self.silent_at(), expiry]
            .into_iter()
            .flatten()
            .min()
            .expect("the next ping is always there")
    }

    /// What is due at `now`; a due ping moves the next one an interval on.
    pub fn check(&mut self, now: Instant, expires_at: Option<i64>, unix_now_ms: i64) -> Due {
        if self.silent_at().is_some_and(|at| now >= at) {
            return Due::Silent;
        }
        if expires_at.is_some_and(|exp| expiry::has_run_out(unix_now_ms, exp, self.leeway_s)) {
            return Due::Expired;
        }
        if now >= self.next_ping() {
            self.pinged = now.into();
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(10);

    #[test]
    fn pings_every_interval_while_the_client_answers() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(BEAT, 0, t0);
        assert_eq!(dog.next_due(t0, None, 0), t0 + BEAT);
        assert_eq!(dog.check(t0 + BEAT, None, 0), Due::Ping);
        dog.heard(t0 + BEAT + Duration::from_secs(1));
        assert_eq!(dog.check(t0 + BEAT * 2, None, 0), Due::Ping);
        assert_eq!(dog.check(t0 + BEAT * 2, None, 0), Due::Nothing);
    }

    #[test]
    fn two_silent_intervals_end_the_connection() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(BEAT, 0, t0);
        assert_eq!(dog.check(t0 + BEAT, None, 0), Due::Ping);
        assert_eq!(dog.next_due(t0 + BEAT, None, 0), t0 + BEAT * 2);
        assert_eq!(dog.check(t0 + BEAT * 2, None, 0), Due::Silent);
    }

    #[test]
    fn a_client_that_answered_is_not_silent_when_a_ping_goes_out_late() {
        let t0 = Instant::now();
        let beat = Duration::from_secs(1);
        let mut dog = Watchdog::new(beat, 0, t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(dog.check(ms(1_200), None, 0), Due::Ping);
        dog.heard(ms(1_210)); // the Pong
                              // The next Ping was due at 2.2 s; the clock rings at 3.3 s, past
                              // two intervals since the Pong: the Ping goes out, no close.
        assert_eq!(dog.check(ms(3_300), None, 0), Due::Ping);
        // Unanswered, it closes the connection an interval later.
        assert_eq!(dog.next_due(ms(3_300), None, 0), ms(4_300));
        assert_eq!(dog.check(ms(4_299), None, 0), Due::Nothing);
        assert_eq!(dog.check(ms(4_300), None, 0), Due::Silent);
    }

    #[test]
    fn expiry_counts_the_leeway() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(BEAT, 2, t0);
        assert_eq!(
            dog.next_due(t0, Some(1_003), 1_000_000),
            t0 + Duration::from_secs(5)
        );
        assert_eq!(dog.check(t0, Some(1_003), 1_004_999), Due::Nothing);
        assert_eq!(dog.check(t0, Some(1_003), 1_005_000), Due::Expired);
    }
}
