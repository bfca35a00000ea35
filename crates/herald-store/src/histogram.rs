//! A latency histogram an operator scrapes (`/metrics`): fixed buckets, lock-free, so the
//! archive writer thread and every store call can record into it without waiting. It lives
//! here because the store is the lowest crate both the writer and the server share.
//!
//! Bounded by construction: [`BOUNDS_MICROS`] buckets, whatever is recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets (microseconds), Prometheus `le` values from 100 µs to 10 s:
/// a store call or a commit is normally well under a millisecond; seconds mean trouble.
pub const BOUNDS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// Counts of durations per bucket, with their sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Not cumulative: `buckets[i]` counts durations in (`BOUNDS_MICROS[i-1]`,
    /// `BOUNDS_MICROS[i]`]; the last one those above every bound.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment, cumulative as Prometheus wants them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `(le in microseconds, observations ≤ le)`, one per [`BOUNDS_MICROS`] entry.
    pub cumulative: Vec<(u64, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Their sum, microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one duration given in microseconds.
    pub fn observe_micros(&self, us: u64) {
        let i = BOUNDS_MICROS.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The values now (each field read separately: a scrape during a write may be off by
    /// the observation being written, which Prometheus tolerates).
    pub fn snapshot(&self) -> Snapshot {
        let mut acc = 0;
        let cumulative = BOUNDS_MICROS
            .iter()
            .zip(&self.buckets)
            .map(|(le, b)| {
                acc += b.load(Ordering::Relaxed);
                (*le, acc)
            })
            .collect();
        Snapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_accumulate() {
        let h = Histogram::default();
        for us in [0, 100, 101, 999_999, 20_000_000] {
            h.observe_micros(us);
        }
        h.observe(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum_micros, 100 + 101 + 999_999 + 20_000_000 + 3_000);
        let le = |b: u64| s.cumulative.iter().find(|(l, _)| *l == b).map(|x| x.1);
        // (le, cumulative count): 0 and 100 are ≤ 100; 101 ≤ 250; 3 ms ≤ 5 ms; 999_999 ≤ 1 s;
        // 20 s only in +Inf.
        for (b, n) in [
            (100, 2),
            (250, 3),
            (2_500, 3),
            (5_000, 4),
            (1_000_000, 5),
            (10_000_000, 5),
        ] {
            assert_eq!(le(b), Some(n), "le {b}");
        }
    }
}
