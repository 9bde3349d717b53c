//! How long a detection takes to become a block in the kernel: from the moment the pipeline
//! decided to block a source (carried in its order) to the moment the kernel acknowledged the
//! element in nfsentry's blocked set. The queue reader that put the element in itself records
//! the block (the inline block), or else the responder; `nfsentry status` reads the histogram
//! from the control thread without a lock.
//!
//! The histogram has fixed log2 buckets of microseconds, as atomics: recording allocates
//! nothing and the memory is the same after a billion blocks as after one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket `i` counts latencies of `2^i` to `2^(i+1)` microseconds (bucket 0 also those under
/// one); the last one everything from about 36 minutes on.
pub const BUCKETS: usize = 32;

/// The histogram, shared by the queue readers and the responder (which record) and the control
/// thread (which reads).
#[derive(Debug, Default)]
pub struct BlockLatency {
    buckets: [AtomicU64; BUCKETS],
    /// Blocks a queue reader put into the kernel's set itself.
    inline_blocks: AtomicU64,
    /// Commits of a queue reader the kernel refused, whose blocks the responder put in.
    inline_failures: AtomicU64,
}

impl BlockLatency {
    pub fn record(&self, latency: Duration) {
        self.buckets[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a block a queue reader put into the kernel's set itself.
    pub fn record_inline(&self, latency: Duration) {
        self.record(latency);
        self.inline_blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a queue reader's commit that failed, leaving its blocks to the responder.
    pub fn note_inline_failure(&self) {
        self.inline_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// How many blocks the queue readers put in themselves, and how many of their commits
    /// failed.
    pub fn inline_counts(&self) -> (u64, u64) {
        (
            self.inline_blocks.load(Ordering::Relaxed),
            self.inline_failures.load(Ordering::Relaxed),
        )
    }

    /// The counts as of now, bucket by bucket.
    pub fn snapshot(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

fn bucket_of(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    // ilog2 of 0 is undefined: under one microsecond goes with one.
    (micros.max(1).ilog2() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in microseconds: a latency counted there was below it.
pub fn bucket_limit_micros(i: usize) -> u64 {
    1u64 << (i + 1).min(63)
}

/// The latency `quantile` (0 to 1) of the blocks counted stayed under, in microseconds, at the
/// resolution of the buckets; None when nothing was counted.
pub fn quantile_micros(buckets: &[u64], quantile: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile's block, counted from 1.
    let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_limit_micros(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_power_of_two_bucket() {
        let h = BlockLatency::default();
        for micros in [0, 1, 2, 3, 100, 127, 128] {
            h.record(Duration::from_micros(micros));
        }
        h.record(Duration::from_secs(100_000));
        let b = h.snapshot();
        assert_eq!(b[0], 2, "0 and 1 µs");
        assert_eq!(b[1], 2, "2 and 3 µs");
        assert_eq!(b[6], 2, "64 to 127 µs");
        assert_eq!(b[7], 1, "128 µs");
        assert_eq!(b[BUCKETS - 1], 1, "the last bucket takes everything longer");
    }

    #[test]
    fn quantiles_are_bucket_limits() {
        let mut buckets = [0u64; BUCKETS];
        assert_eq!(quantile_micros(&buckets, 0.5), None);
        buckets[5] = 1;
        assert_eq!(quantile_micros(&buckets, 0.5), Some(64));
        assert_eq!(quantile_micros(&buckets, 0.99), Some(64));
        buckets[5] = 98;
        buckets[10] = 2;
        assert_eq!(quantile_micros(&buckets, 0.5), Some(64));
        assert_eq!(quantile_micros(&buckets, 0.99), Some(2048));
    }
}
