//! Redis's clock as this node reads it: how far it is from the node's own
//! (measured every heartbeat), so that a publish can carry a deadline in
//! Redis's time. The append script refuses a publish that reaches it past
//! its deadline, half the node's response timeout after it was sent: a
//! publish the node has given up on (answered `503`, "nothing stamped") is
//! then never stamped later by a slow Redis (docs/cluster.md, "What each
//! failure looks like").

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;

/// Redis's clock less this node's, and how long a publish may take to
/// reach the script.
#[derive(Debug)]
pub struct RedisClock {
    offset_ms: AtomicI64,
    budget_ms: i64,
}

impl RedisClock {
    /// A clock taken to agree with this node's until [`RedisClock::measure`],
    /// for a node that gives up on Redis's answers after `response_timeout`.
    pub fn new(response_timeout: Duration) -> RedisClock {
        let half = response_timeout.as_millis() / 2;
        RedisClock {
            offset_ms: AtomicI64::new(0),
            budget_ms: i64::try_from(half).unwrap_or(i64::MAX),
        }
    }

    /// Reads Redis's `TIME` and notes how far it is from this node's clock
    /// (taken halfway through the round trip).
    pub async fn measure(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let before = now_ms();
        let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let after = now_ms();
        let theirs = seconds * 1000 + micros / 1000;
        self.offset_ms
            .store(theirs - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// The deadline, in Redis's milliseconds, of a publish sent now.
    pub fn deadline_ms(&self) -> i64 {
        now_ms() + self.offset_ms.load(Ordering::Relaxed) + self.budget_ms
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_may_take_half_the_response_timeout() {
        let clock = RedisClock::new(Duration::from_secs(3));
        clock.offset_ms.store(-250, Ordering::Relaxed);
        let deadline = clock.deadline_ms() - now_ms();
        assert!((1248..=1250).contains(&deadline), "{deadline}");
    }
}
