//! A histogram that many threads observe at once without sharing a lock.
//!
//! Every delivery records its latency, and deliveries are written by every
//! lane at the same time (ARCHITECTURE.md, "Fan-out over cores"). One
//! histogram behind one mutex, as prometheus-client's is, would make every
//! lane take the same lock, and move the same cache line between cores,
//! once per delivery. Here each thread records into one of a few shards,
//! each on its own cache line, and a scrape adds the shards up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards: enough that threads seldom share one, few enough that a scrape
/// stays cheap.
const SHARDS: usize = 16;

/// Observations of one shard: sum, count and per-bucket counts (not
/// cumulative; the last bucket is `+Inf`).
#[derive(Debug, Default)]
struct Counts {
    sum: f64,
    count: u64,
    buckets: Vec<u64>,
}

/// One shard, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Counts>);

/// A Prometheus histogram with fixed buckets, observed without a shared
/// lock. Clones share their observations (as prometheus-client's do).
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    /// Upper bounds, ascending, then `+Inf`.
    bounds: Arc<[f64]>,
    shards: Arc<[Shard]>,
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (ascending); `+Inf` is added.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds: Arc<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let shards = (0..SHARDS)
            .map(|_| {
                Shard(Mutex::new(Counts {
                    buckets: vec![0; bounds.len()],
                    ..Counts::default()
                }))
            })
            .collect();
        ShardedHistogram { bounds, shards }
    }

    /// Records one value in the calling thread's shard.
    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len() - 1);
        let mut counts = self.shards[this_threads_shard()].0.lock();
        counts.sum += value;
        counts.count += 1;
        counts.buckets[bucket] += 1;
    }

    /// Every shard added up: sum, count and `(upper bound, count)` per bucket.
    fn total(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in self.shards.iter() {
            let counts = shard.0.lock();
            sum += counts.sum;
            count += counts.count;
            for (total, n) in buckets.iter_mut().zip(&counts.buckets) {
                total.1 += n;
            }
        }
        (sum, count, buckets)
    }
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
    /// the same values, whichever threads observed them. Powers of two, so
    /// that the sum is the same in any order; some exactly on a bound.
    #[test]
    fn observations_from_many_threads_read_as_one_histogram() {
        let bounds = [0.0009765625, 0.0078125, 0.0625, 1.0];
        let values = [
            0.00048828125,
            0.0009765625,
            0.0078125,
            0.03125,
            0.5,
            1.0,
            2.0,
        ];
        let sharded = ShardedHistogram::new(bounds);
        let reference = Histogram::new(bounds);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let sharded = sharded.clone();
                scope.spawn(move || values.iter().for_each(|v| sharded.observe(*v)));
            }
        });
        for _ in 0..8 {
            values.iter().for_each(|v| reference.observe(*v));
        }
        assert_eq!(text(sharded.clone()), text(reference));
        let (_, count, buckets) = sharded.total();
        assert_eq!(count, 56);
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, 8)),
            "2.0 is above every bound"
        );
    }
}
