//! Log lines that an outsider can trigger at will (a refused `Origin`) are
//! written at most once per window per key, with a bounded memory of keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most keys remembered; past it, new keys are not logged until old ones
/// expire, so a flood of distinct keys cannot flood the log either.
const MAX_KEYS: usize = 1024;

/// "At most once per `window` per key".
#[derive(Debug)]
pub struct OncePer {
    window: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl OncePer {
    /// A limiter letting each key through once per `window`.
    pub fn new(window: Duration) -> OncePer {
        OncePer {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may be logged now (and, if so, records that it was).
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        let mut last = self.last.lock();
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < self.window {
                return false;
            }
        } else if last.len() >= MAX_KEYS {
            last.retain(|_, at| now.duration_since(*at) < self.window);
            if last.len() >= MAX_KEYS {
                return false;
            }
        }
        last.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window_per_key() {
        let log = OncePer::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(log.allow_at("a", t));
        assert!(!log.allow_at("a", t + Duration::from_secs(59)));
        assert!(log.allow_at("b", t + Duration::from_secs(1)));
        assert!(log.allow_at("a", t + Duration::from_secs(61)));
    }

    #[test]
    fn the_memory_of_keys_is_bounded() {
        let log = OncePer::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(log.allow_at(&i.to_string(), t));
        }
        assert!(!log.allow_at("one more", t));
        assert!(log.allow_at("one more", t + Duration::from_secs(61)));
        assert_eq!(log.last.lock().len(), 1);
    }
}
