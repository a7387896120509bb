//! Connections' timers on one coarse clock, as uWebSockets sweeps its
//! sockets' timeouts: a keep-alive Ping every `heartbeat_interval_s`, the
//! 4000 and 4001 closes, a close's grace period. A timer per connection
//! (tokio's `Sleep`) cost 112 bytes of an idle connection's ~1.4 KiB; an
//! alarm here costs 16 (BENCHMARKS.md, "Idle connections").
//!
//! The transport asks to be woken at an instant ([`Clock::wake_at`]); a
//! task of the transport calls [`Clock::ring`] about once a second, which
//! marks the connections whose alarm is due and wakes their tasks
//! ([`Outbox::wake_alarm`](super::Outbox::wake_alarm)). Alarms are rounded
//! up to whole seconds from the clock's start; a stale one (the task has
//! since asked for another time) only wakes a task that then finds nothing
//! due. The clock holds only weak references: a closed connection's last
//! alarm keeps at most its allocation until it rings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Instant;

use super::{ConnRef, Connection};

/// Seconds the wheel spans: alarms further ahead wait for their lap.
const SLOTS: u64 = 64;

/// One connection's wish to be woken.
#[derive(Debug)]
struct Alarm {
    conn: Weak<Connection>,
    /// Whole seconds since the clock started.
    at: u64,
}

/// The clock all of a router's connections share.
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    /// Alarms by `at % SLOTS`.
    slots: Box<[Mutex<Vec<Alarm>>]>,
    /// The last second whose slot was rung.
    rung: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(Instant::now())
    }
}

impl Clock {
    /// A clock counting seconds from `started`.
    pub fn new(started: Instant) -> Clock {
        Clock {
            started,
            slots: (0..SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            rung: AtomicU64::new(0),
        }
    }

    /// Wakes `conn`'s task once `when` has passed (at the first ring after
    /// it: up to a second and a ring's interval late).
    pub fn wake_at(&self, conn: &ConnRef, when: Instant) {
        let at = self
            .second_after(when)
            .max(self.rung.load(Ordering::Acquire) + 1);
        self.slot(at).push(Alarm {
            conn: ConnRef::downgrade(conn),
            at,
        });
        // A ring may have passed this slot between reading `rung` and the
        // push: then the alarm is due already, and rings now.
        if self.rung.load(Ordering::Acquire) >= at {
            conn.outbox.wake_alarm();
        }
    }

    /// Wakes the connections whose alarms are due at `now`; the transport
    /// calls it about once a second.
    pub fn ring(&self, now: Instant) {
        let now_s = self.seconds(now);
        let rung = self.rung.load(Ordering::Acquire);
        // After a long pause every slot is looked at once.
        let from = (rung + 1).max(now_s.saturating_sub(SLOTS - 1));
        for second in from..=now_s {
            let due: Vec<Alarm> = {
                let mut slot = self.slot(second);
                let (due, later) = std::mem::take(&mut *slot)
                    .into_iter()
                    .partition(|a| a.at <= now_s);
                *slot = later;
                due
            };
            self.rung.store(second, Ordering::Release);
            for alarm in due {
                if let Some(conn) = alarm.conn.upgrade() {
                    conn.outbox.wake_alarm();
                }
            }
        }
    }

    fn slot(&self, second: u64) -> std::sync::MutexGuard<'_, Vec<Alarm>> {
        self.slots[(second % SLOTS) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn seconds(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_secs()
    }

    /// The first whole second at or after `t`.
    fn second_after(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.started);
        since.as_secs() + u64::from(since.subsec_nanos() > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::connection::outbox::Limits;
    use crate::connection::{Identity, Outbox};

    fn conn(id: u64) -> ConnRef {
        let outbox = Outbox::new(
            Limits {
                events: 10,
                bytes: 1000,
            },
            Default::default(),
        );
        let identity = Identity {
            user: None,
            ip: "127.0.0.1".parse().unwrap(),
            expires_at: None,
            channel_claim: None,
        };
        Arc::new(Connection::new(
            id,
            format!("c-{id}"),
            "/ws",
            identity,
            outbox,
        ))
    }

    /// Whether `c`'s alarm rang since the last look.
    fn rang(c: &ConnRef) -> bool {
        c.outbox.take_alarm()
    }

    #[test]
    fn an_alarm_rings_at_the_first_ring_after_its_second() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        let c = conn(1);
        rang(&c);
        clock.wake_at(&c, t0 + Duration::from_millis(2500));
        clock.ring(t0 + Duration::from_secs(2));
        assert!(!rang(&c), "not before its time");
        clock.ring(t0 + Duration::from_secs(3));
        assert!(rang(&c));
        clock.ring(t0 + Duration::from_secs(4));
        assert!(!rang(&c), "once");
    }

    #[test]
    fn alarms_beyond_a_lap_and_after_a_long_pause_ring_once_due() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        let far = conn(1);
        let soon = conn(2);
        rang(&far);
        rang(&soon);
        clock.wake_at(&far, t0 + Duration::from_secs(SLOTS + 10));
        clock.wake_at(&soon, t0 + Duration::from_secs(5));
        for s in 1..=20 {
            clock.ring(t0 + Duration::from_secs(s));
        }
        assert!(rang(&soon));
        assert!(!rang(&far), "a lap early");
        // No ring for a long while: the next one catches up.
        clock.ring(t0 + Duration::from_secs(3 * SLOTS));
        assert!(rang(&far));
    }

    #[test]
    fn an_alarm_for_a_past_time_rings_at_the_next_ring() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        clock.ring(t0 + Duration::from_secs(10));
        let c = conn(1);
        rang(&c);
        clock.wake_at(&c, t0 + Duration::from_secs(3));
        clock.ring(t0 + Duration::from_secs(11));
        assert!(rang(&c));
    }

    #[test]
    fn a_closed_connection_is_not_kept_alive_by_its_alarm() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        let c = conn(1);
        clock.wake_at(&c, t0 + Duration::from_secs(30));
        let weak = ConnRef::downgrade(&c);
        drop(c);
        assert!(weak.upgrade().is_none());
        clock.ring(t0 + Duration::from_secs(31)); // and ringing it is harmless
    }
}
