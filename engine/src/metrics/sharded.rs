//! A latency histogram that many threads observe at once without a lock.
//!
//! Every delivery records its latency, and deliveries are written by every
//! lane at the same time (ARCHITECTURE.md, "Fan-out over cores"). One
//! histogram behind one mutex, as prometheus-client's is, would make every
//! lane take the same lock, and move the same cache line between cores,
//! once per delivery. Here each thread records into one of a few shards,
//! each on its own cache lines, with two atomic additions, and a scrape
//! adds the shards up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards: enough that threads seldom share one, few enough that a scrape
/// stays cheap.
const SHARDS: usize = 16;
/// Most buckets a histogram has, `+Inf` included: kept inside each shard,
/// so that a shard is one block of memory no other shard's writes touch.
const MAX_BUCKETS: usize = 16;

/// Observations of one thread (or a few): the sum in nanoseconds and the
/// count per bucket (not cumulative; the last used one is `+Inf`). Atomics
/// rather than a lock, and integers rather than `f64` seconds, because a
/// delivery observes once: two uncontended additions are the whole cost.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    sum_ns: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

/// A Prometheus histogram of durations, with fixed buckets, observed
/// without a shared lock. Clones share their observations (as
/// prometheus-client's do).
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    /// Upper bounds in seconds, ascending, then `+Inf`: what a scrape shows.
    bounds: Arc<[f64]>,
    /// The same bounds in nanoseconds: what an observation is compared with.
    bounds_ns: Arc<[u64]>,
    shards: Arc<[Shard]>,
}

impl ShardedHistogram {
    /// A histogram with these upper bounds in seconds (ascending; at most
    /// 15 of them); `+Inf` is added.
    ///
    /// # Panics
    /// With more than 15 bounds: they are the code's, not the user's.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds: Arc<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        assert!(
            bounds.len() <= MAX_BUCKETS,
            "a sharded histogram has at most {} bounds",
            MAX_BUCKETS - 1
        );
        let bounds_ns = bounds
            .iter()
            .map(|seconds| Duration::try_from_secs_f64(*seconds).map_or(u64::MAX, nanos))
            .collect();
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        ShardedHistogram {
            bounds,
            bounds_ns,
            shards,
        }
    }

    /// Records one duration in the calling thread's shard.
    pub fn observe(&self, elapsed: Duration) {
        let ns = nanos(elapsed);
        // Latencies sit in the first few buckets, where a scan from the
        // start is quicker than a binary search; the last bound is
        // `u64::MAX`, so one is always found.
        let bucket = self
            .bounds_ns
            .iter()
            .position(|bound| ns <= *bound)
            .unwrap_or(self.bounds_ns.len() - 1);
        let shard = &self.shards[this_threads_shard()];
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Every shard added up: sum in seconds, count and `(upper bound,
    /// count)` per bucket. The count is the buckets' total, so the two
    /// always agree; the sum may miss an observation made meanwhile.
    fn total(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        let mut sum_ns = 0u64;
        for shard in self.shards.iter() {
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Ordering::Relaxed));
            for (total, n) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += n.load(Ordering::Relaxed);
            }
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum_ns as f64 / 1e9, count, buckets)
    }
}

/// A duration in whole nanoseconds (584 years fit).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The shard of the calling thread: threads take them in turn as they
/// first observe, so a runtime's few workers each get their own.
fn this_threads_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.total();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    /// The Prometheus text of one metric called `latency`.
    fn text(metric: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static) -> String {
        let mut registry = Registry::default();
        registry.register("latency", "Latency", metric);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    /// Scraped, it reads exactly as prometheus-client's own histogram fed
    /// the same values in seconds, whichever threads observed them. Powers
    /// of two that are whole nanoseconds, so that both sums are exact; some
    /// exactly on a bound.
    #[test]
    fn observations_from_many_threads_read_as_one_histogram() {
        let bounds = [0.001953125, 0.0078125, 0.0625, 1.0];
        let values = [0.001953125, 0.00390625, 0.0078125, 0.03125, 0.5, 1.0, 2.0]
            .map(Duration::from_secs_f64);
        let sharded = ShardedHistogram::new(bounds);
        let reference = Histogram::new(bounds);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let sharded = sharded.clone();
                scope.spawn(move || values.iter().for_each(|v| sharded.observe(*v)));
            }
        });
        for _ in 0..8 {
            values
                .iter()
                .for_each(|v| reference.observe(v.as_secs_f64()));
        }
        assert_eq!(text(sharded.clone()), text(reference));
        let (sum, count, buckets) = sharded.total();
        assert_eq!((sum, count), (8.0 * 3.544921875, 56));
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, 8)),
            "2.0 is above every bound"
        );
    }

    #[test]
    fn a_duration_beyond_every_bound_or_on_one_lands_where_prometheus_puts_it() {
        let histogram = ShardedHistogram::new([0.0001, 0.25]);
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_nanos(100_001));
        histogram.observe(Duration::MAX);
        let (_, count, buckets) = histogram.total();
        assert_eq!(count, 3);
        assert_eq!(buckets, [(0.0001, 1), (0.25, 1), (f64::INFINITY, 1)]);
    }
}
