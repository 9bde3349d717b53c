//! The token bucket behind `respond.max_blocks_per_sec`: how many new blocks may be placed now.
//!
//! It holds at most one second's worth of tokens, so a quiet daemon can still block a handful
//! of scanners at once, and refills continuously at the configured rate. Integer nanoseconds
//! throughout, no floating point; the time comes from the caller.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// What one token costs in credit.
    nanos_per_token: u64,
    /// Saved-up time, at most one second's worth: `credit / nanos_per_token` tokens.
    credit_nanos: u64,
    /// When the credit was last topped up; none before the first use, which finds it full.
    refilled: Option<Instant>,
}

impl TokenBucket {
    /// `per_second` tokens a second, and as many at once after a quiet second.
    pub fn new(per_second: NonZeroU32) -> TokenBucket {
        TokenBucket {
            nanos_per_token: NANOS_PER_SECOND / u64::from(per_second.get()),
            credit_nanos: NANOS_PER_SECOND,
            refilled: None,
        }
    }

    /// Whether a token is there at `now`, without taking it.
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.credit_nanos >= self.nanos_per_token
    }

    /// Takes a token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if !self.has_token(now) {
            return false;
        }
        self.credit_nanos -= self.nanos_per_token;
        true
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = match self.refilled {
            Some(last) => now.saturating_duration_since(last),
            None => Duration::ZERO,
        };
        // A clock that stands still or a caller that is behind adds nothing; the credit is
        // capped before it could overflow.
        let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.credit_nanos = self
            .credit_nanos
            .saturating_add(elapsed)
            .min(NANOS_PER_SECOND);
        match self.refilled {
            Some(last) if now <= last => {}
            _ => self.refilled = Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: u32) -> TokenBucket {
        TokenBucket::new(NonZeroU32::new(per_second).unwrap())
    }

    fn taken(bucket: &mut TokenBucket, at: Instant, tries: usize) -> usize {
        (0..tries).filter(|_| bucket.try_take(at)).count()
    }

    #[test]
    fn starts_with_one_seconds_worth_then_refills_at_the_rate() {
        let mut b = bucket(50);
        let start = Instant::now();
        assert_eq!(taken(&mut b, start, 1000), 50);
        assert!(!b.has_token(start));
        assert_eq!(taken(&mut b, start + Duration::from_millis(19), 10), 0);
        assert_eq!(taken(&mut b, start + Duration::from_millis(20), 10), 1);
        assert_eq!(taken(&mut b, start + Duration::from_millis(120), 10), 5);
    }

    #[test]
    fn a_long_pause_saves_up_one_second_only() {
        let mut b = bucket(50);
        let start = Instant::now();
        taken(&mut b, start, 50);
        assert_eq!(taken(&mut b, start + Duration::from_secs(3600), 1000), 50);
    }

    #[test]
    fn over_ten_seconds_the_rate_holds() {
        let mut b = bucket(50);
        let start = Instant::now();
        // A packet every millisecond for ten seconds, each wanting a block.
        let total: usize = (0..10_000u64)
            .map(|ms| taken(&mut b, start + Duration::from_millis(ms), 1))
            .sum();
        // The first second's saved-up 50, then 50 a second.
        assert!((549..=551).contains(&total), "{total}");
    }

    #[test]
    fn odd_rates_and_the_extremes_keep_their_count() {
        let mut b = bucket(3);
        let start = Instant::now();
        assert_eq!(
            taken(&mut b, start, 10),
            3,
            "one second's worth of a rate of 3"
        );
        let mut fast = bucket(1_000_000);
        assert_eq!(taken(&mut fast, start, 2_000_000), 1_000_000);
        assert_eq!(taken(&mut fast, start + Duration::from_micros(10), 100), 10);
    }

    #[test]
    fn a_clock_that_goes_back_gives_nothing_and_breaks_nothing() {
        let mut b = bucket(10);
        let start = Instant::now() + Duration::from_secs(10);
        taken(&mut b, start, 10);
        assert!(!b.try_take(start - Duration::from_secs(5)));
        assert_eq!(taken(&mut b, start + Duration::from_millis(100), 10), 1);
    }
}
