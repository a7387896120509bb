//! Benchmark: threads observing one latency histogram at once, as every
//! lane does once per delivery. prometheus-client's `Histogram` (one mutex)
//! against [`ShardedHistogram`] (a shard per thread), in a tight loop: the
//! worst case, which shows what the shared lock costs as threads are added.
//!
//! `cargo run --release -p switchyard-engine --example histogram_contention`
//! (BENCHMARKS.md, "One registration per poll").

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use switchyard_engine::metrics::ShardedHistogram;

/// The router's latency buckets (seconds).
const BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Observations per thread and run.
const OBSERVATIONS: usize = 5_000_000;

/// Wall-clock nanoseconds per observation when `threads` threads each make
/// [`OBSERVATIONS`] through `observe`.
fn ns_per_observation(threads: usize, observe: &(dyn Fn(Duration) + Sync)) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for i in 0..OBSERVATIONS {
                    observe(Duration::from_micros((i % 1000) as u64 * 10));
                }
            });
        }
    });
    started.elapsed().as_secs_f64() * 1e9 / (OBSERVATIONS * threads) as f64
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in 1..=cores.max(2) {
        for run in 1..=3 {
            let shared = Histogram::new(BOUNDS);
            let one_lock = ns_per_observation(threads, &|v| shared.observe(v.as_secs_f64()));
            let sharded = ShardedHistogram::new(BOUNDS);
            let shards = ns_per_observation(threads, &|v| sharded.observe(v));
            println!(
                "{threads} thread(s), run {run}: one mutex {one_lock:.1} ns per observation, \
                 sharded {shards:.1} ns (wall time ÷ all observations)"
            );
        }
    }
}
