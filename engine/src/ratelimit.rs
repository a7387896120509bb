//! A token bucket whose rate and burst are passed at each check, so that a
//! reload changes limits at once without rebuilding any limiter.

use std::time::Instant;

use crate::moment::Moment;

/// One bucket: tokens refill at `rate` per second up to `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    /// A [`Moment`]: every connection holds a bucket.
    last: Moment,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            last: Moment::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: u32) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last.into()).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(f64::from(burst));
        self.last = now.into();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (nothing to remember).
    pub fn is_full(&self, rate: f64, burst: u32) -> bool {
        self.tokens + Instant::from(self.last).elapsed().as_secs_f64() * rate >= f64::from(burst)
    }

    /// Seconds until the next token, rounded up (for `Retry-After`).
    pub fn wait_s(&self, rate: f64) -> u64 {
        if rate <= 0.0 {
            return 1;
        }
        ((1.0 - self.tokens).max(0.0) / rate).ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::full(3);
        assert!((0..3).all(|_| b.take(1.0, 3)));
        assert!(!b.take(1.0, 3), "the burst is spent");
        assert_eq!(b.wait_s(1.0), 1);
        let mut fast = TokenBucket::full(1);
        assert!(fast.take(1000.0, 1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(fast.take(1000.0, 1), "refilled at 1000/s");
    }
}
