//! What a worker's `ServeInfer` calls did, per served model and shard: calls
//! answered, calls that failed, a latency histogram and the p50/p99 of the
//! most recent calls; sent to the scheduler in each heartbeat (for watchers:
//! the dashboard, `/metrics`).
//!
//! In: one record per `ServeInfer` call (the model, the shards it was for,
//! how long the worker took from reading the request to the answer, and
//! whether it answered). Out: per `(model, shard)` counters since the worker
//! started. Must not: block the call it measures (one short lock), grow
//! without bound (a shard is counted only when it is resident here, so the
//! keys are the resident shard models), or change an answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Calls the recent p50/p99 are taken over.
const RECENT: usize = 256;

/// One shard's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardCounts {
    /// `ServeInfer` calls that this shard answered.
    pub requests: u64,
    /// Calls for this shard that failed (a batch that does not read or
    /// predict).
    pub errors: u64,
    /// Count per bucket of [`LATENCY_BUCKETS`] (not cumulative), then above
    /// the last; answered calls only.
    pub buckets: Vec<u64>,
    pub sum_us: u64,
    /// Latencies (µs) of the last [`RECENT`] answered calls.
    recent: VecDeque<u64>,
}

impl Default for ShardCounts {
    fn default() -> ShardCounts {
        ShardCounts {
            requests: 0,
            errors: 0,
            buckets: vec![0; LATENCY_BUCKETS.len() + 1],
            sum_us: 0,
            recent: VecDeque::new(),
        }
    }
}

impl ShardCounts {
    fn answered(&mut self, us: u64) {
        self.requests += 1;
        self.sum_us += us;
        let secs = us as f64 / 1e6;
        let b = LATENCY_BUCKETS
            .iter()
            .position(|ub| secs <= *ub)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(n) = self.buckets.get_mut(b) {
            *n += 1;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
    }

    /// The `q` quantile (0..=1) of the recent latencies, in µs; 0 when none.
    pub fn recent_quantile(&self, q: f64) -> u64 {
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

/// The counters of one worker's serving.
#[derive(Default)]
pub struct ServingStats {
    by: Mutex<BTreeMap<(String, String), ShardCounts>>,
}

impl ServingStats {
    /// One call for `model`'s `shards` (those resident here that it asked
    /// for) took `took`; `ok`: it was answered.
    pub fn record(&self, model: &str, shards: &[String], took: Duration, ok: bool) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let mut g = self.by.lock().unwrap_or_else(|p| p.into_inner());
        for s in shards {
            let c = g.entry((model.to_string(), s.clone())).or_default();
            if ok {
                c.answered(us);
            } else {
                c.errors += 1;
            }
        }
    }

    /// The figures of `(model, shard)`; zeros when it was never asked.
    pub fn get(&self, model: &str, shard: &str) -> ShardCounts {
        self.by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(model.to_string(), shard.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_per_shard_with_their_latency_bucket_and_quantiles() {
        let s = ServingStats::default();
        let ab = ["A".to_string(), "B".to_string()];
        for ms in 1..=100u64 {
            s.record("m", &ab, Duration::from_millis(ms), true);
        }
        s.record("m", &ab[..1], Duration::from_millis(3), false);
        let a = s.get("m", "A");
        assert_eq!((a.requests, a.errors), (100, 1));
        assert_eq!(a.sum_us, (1..=100u64).sum::<u64>() * 1000);
        assert_eq!(a.buckets.iter().sum::<u64>(), 100);
        // 1 ms is in the 0.001 bucket; 11..=25 ms in the 0.025 one.
        assert_eq!(a.buckets[1], 1);
        assert_eq!(a.buckets[5], 15);
        assert_eq!(a.recent_quantile(0.5), 50_000);
        assert_eq!(a.recent_quantile(0.99), 99_000);
        let b = s.get("m", "B");
        assert_eq!((b.requests, b.errors), (100, 0));
        assert_eq!(s.get("m", "C"), ShardCounts::default());
    }

    #[test]
    fn the_recent_window_keeps_the_last_calls_only() {
        let s = ServingStats::default();
        let a = ["A".to_string()];
        for _ in 0..RECENT {
            s.record("m", &a, Duration::from_secs(1), true);
        }
        for _ in 0..RECENT {
            s.record("m", &a, Duration::from_micros(10), true);
        }
        assert_eq!(s.get("m", "A").recent_quantile(0.99), 10);
        assert_eq!(s.get("m", "A").requests, 2 * RECENT as u64);
    }
}
