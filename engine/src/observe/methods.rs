//! Per-method metrics: what a reactor counts of its own Requests and Notifies, by method,
//! with a latency histogram each, kept only when metrics are on. Beside the always-on
//! [`CoreStats`](crate::CoreStats), and read by the metrics scrape (`observe::scrape`).
//!
//! Invariants: only the reactor thread that owns a [`MethodMetrics`] writes it (plain
//! integers, no atomics); the set of methods is fixed when the server is built (the
//! router's Request/Notify routes, plus one `_not_found` entry), so label cardinality is
//! bounded whatever method names peers send.

use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in nanoseconds (10 µs .. 10 s, 1-2.5-5 steps); a
/// last implicit bucket holds everything slower.
pub(crate) const BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A fixed-bucket latency histogram (not cumulative: `buckets[i]` counts observations in
/// `(BUCKETS_NS[i-1], BUCKETS_NS[i]]`, the last one those above every bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LatencyHistogram {
    pub(crate) buckets: [u64; BUCKETS_NS.len() + 1],
    pub(crate) count: u64,
    pub(crate) sum_ns: u64,
}

impl LatencyHistogram {
    /// Counts one observation.
    #[inline]
    pub(crate) fn observe(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    #[cfg(feature = "metrics")]
    /// Adds `other`'s observations.
    pub(crate) fn add(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

/// One method's counters on one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MethodStats {
    /// Requests and Notifies dispatched.
    pub(crate) calls: u64,
    /// How long they took (see [`MethodMetrics`] for what is measured).
    pub(crate) latency: LatencyHistogram,
}

/// What a request needs to have its latency recorded when its answer is queued later (it
/// travels with a [`Responder`](crate::Responder)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) started: Instant,
    pub(crate) method: u32,
}

/// One reactor's per-method counters. Off (empty, nothing measured, no clock read) unless
/// the server serves metrics.
///
/// What is measured: from just before the middleware chain and handler run to when the
/// answer is queued on the connection: the handler's return for a synchronous answer and
/// for a Notify, the arrival of the responder's answer on the reactor for a deferred one
/// (blocking routes included). Time in the socket and the peer's network is not included.
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodMetrics {
    /// Indexed by route index; the last entry is `_not_found`.
    methods: Vec<MethodStats>,
}

impl MethodMetrics {
    /// Counters for `routes` methods plus `_not_found`.
    pub(crate) fn new(routes: usize) -> MethodMetrics {
        MethodMetrics {
            methods: vec![MethodStats::default(); routes + 1],
        }
    }

    /// Whether anything is measured.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        !self.methods.is_empty()
    }

    /// The index of `_not_found`.
    pub(crate) fn not_found(&self) -> u32 {
        (self.methods.len() - 1) as u32
    }

    /// Counts one dispatch of method `index` (`None`: not found) and starts its clock;
    /// `None` when off.
    #[inline]
    pub(crate) fn start(&mut self, index: Option<u32>) -> Option<Timing> {
        if !self.is_on() {
            return None;
        }
        let method = index
            .filter(|&i| (i as usize) < self.methods.len() - 1)
            .unwrap_or(self.not_found());
        self.methods[method as usize].calls += 1;
        Some(Timing {
            started: Instant::now(),
            method,
        })
    }

    /// Records how long the request `timing` started took, up to now.
    #[inline]
    pub(crate) fn finish(&mut self, timing: Timing) {
        if let Some(m) = self.methods.get_mut(timing.method as usize) {
            m.latency.observe(timing.started.elapsed());
        }
    }

    /// Every method's counters, by index.
    pub(crate) fn stats(&self) -> &[MethodStats] {
        &self.methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let mut h = LatencyHistogram::default();
        h.observe(Duration::from_nanos(10_000)); // on a bound: that bucket (le is inclusive)
        h.observe(Duration::from_nanos(10_001));
        h.observe(Duration::from_secs(60)); // above every bound
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[BUCKETS_NS.len()], 1);
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_ns, 10_000 + 10_001 + 60_000_000_000);
    }

    #[test]
    fn off_measures_nothing_and_unknown_indices_count_as_not_found() {
        let mut off = MethodMetrics::default();
        assert!(off.start(Some(0)).is_none());
        let mut on = MethodMetrics::new(2);
        let t = on.start(Some(7)).unwrap();
        assert_eq!(t.method, 2);
        on.finish(t);
        let t = on.start(Some(1)).unwrap();
        on.finish(t);
        assert_eq!(on.stats()[1].calls, 1);
        assert_eq!(on.stats()[2].calls, 1);
        assert_eq!(on.stats()[2].latency.count, 1);
        assert_eq!(on.stats()[0].calls, 0);
    }
}
