//! Equal per-connection values held once: thousands of connections on one
//! endpoint receive the same channels through the same patterns, and each
//! copy would be an allocation of its own (BENCHMARKS.md, "Idle
//! connections").

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// Below this many distinct values, none is forgotten.
const MIN_PURGE_AT: usize = 64;

/// Hands out one shared `Arc` per distinct value. Values no holder keeps
/// any more are forgotten whenever the number held has doubled, so what is
/// held stays within twice what is in use (plus [`MIN_PURGE_AT`]), whoever
/// holds clones.
#[derive(Debug)]
pub(super) struct Shared<T: Eq + Hash> {
    values: HashSet<Arc<T>>,
    purge_at: usize,
}

impl<T: Eq + Hash> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            values: HashSet::new(),
            purge_at: MIN_PURGE_AT,
        }
    }
}

impl<T: Eq + Hash> Shared<T> {
    /// The shared copy of `value`.
    pub(super) fn share(&mut self, value: T) -> Arc<T> {
        if let Some(held) = self.values.get(&value) {
            return held.clone();
        }
        if self.values.len() >= self.purge_at {
            self.values.retain(|held| Arc::strong_count(held) > 1);
            self.purge_at = (2 * self.values.len()).max(MIN_PURGE_AT);
        }
        let held = Arc::new(value);
        self.values.insert(held.clone());
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let mut shared = Shared::default();
        let a = shared.share(vec![1, 2]);
        let b = shared.share(vec![1, 2]);
        let c = shared.share(vec![3]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn values_nobody_holds_are_forgotten_as_new_ones_come() {
        let mut shared = Shared::default();
        let kept: Vec<_> = (0..10).map(|i| shared.share(i)).collect();
        for i in 10..10_000 {
            drop(shared.share(i));
        }
        assert!(
            shared.values.len() <= 2 * MIN_PURGE_AT,
            "{} held",
            shared.values.len()
        );
        assert!(
            kept.iter().all(|k| shared.values.contains(k)),
            "values in use are kept"
        );
    }
}
