//! When to try the LAPI again, and when a failure is news: an exponential backoff with jitter,
//! an outage tracker that reports the first failure and the recovery once each, and a
//! log-once latch for problems that repeat on every call (a refused password). Pure: the
//! current time comes in, decisions come out; the worker sleeps and logs.

use std::time::{Duration, Instant};

/// Exponential backoff: `first`, then twice as long after each further failure, up to `max`,
/// each delay drawn between half and all of its step so that a fleet of hosts retrying a LAPI
/// that comes back does not knock on it in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Option<Duration>,
    /// xorshift state for the jitter; no cryptographic quality needed.
    state: u64,
}

impl Backoff {
    /// `seed` makes the jitter reproducible in tests; the worker seeds it from the clock.
    pub fn new(first: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            step: None,
            state: seed | 1,
        }
    }

    /// The delay before the next attempt after one more failure.
    pub fn failed(&mut self) -> Duration {
        let step = match self.step {
            None => self.first,
            Some(step) => step.saturating_mul(2).min(self.max),
        };
        self.step = Some(step);
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        // A fraction in [0.5, 1.0) of the step, in 1/1024ths.
        let fraction = 512 + u32::try_from(self.state % 512).unwrap_or(0);
        step.mul_f64(f64::from(fraction) / 1024.0)
    }

    /// Back to `first` after a success.
    pub fn succeeded(&mut self) {
        self.step = None;
    }
}

/// What a call's outcome means for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to say: still up, or still down.
    Same,
    /// The first failure of an outage.
    WentDown,
    /// The first success after an outage, which lasted this long over this many failed calls.
    CameBack { after: Duration, failures: u64 },
}

/// Up or down, and since when.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    down_since: Option<Instant>,
    failures: u64,
    outages: u64,
}

impl Outage {
    pub fn failed(&mut self, now: Instant) -> Transition {
        self.failures += 1;
        if self.down_since.is_some() {
            return Transition::Same;
        }
        self.down_since = Some(now);
        self.outages += 1;
        Transition::WentDown
    }

    pub fn succeeded(&mut self, now: Instant) -> Transition {
        let Some(since) = self.down_since.take() else {
            return Transition::Same;
        };
        let failures = std::mem::take(&mut self.failures);
        Transition::CameBack {
            after: now.saturating_duration_since(since),
            failures,
        }
    }

    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    pub fn down_since(&self) -> Option<Instant> {
        self.down_since
    }

    /// Outages so far.
    pub fn outages(&self) -> u64 {
        self.outages
    }
}

/// Says "log it" the first time a problem is raised and again only after it was cleared.
#[derive(Debug, Clone, Default)]
pub struct LogOnce {
    raised: bool,
}

impl LogOnce {
    /// True when this is news.
    pub fn raise(&mut self) -> bool {
        !std::mem::replace(&mut self.raised, true)
    }

    /// True when the problem had been raised (so its end is news).
    pub fn clear(&mut self) -> bool {
        std::mem::replace(&mut self.raised, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
        let steps = [100, 200, 400, 800, 1_600, 2_000, 2_000, 2_000];
        for step in steps {
            let delay = backoff.failed();
            let step = Duration::from_millis(step);
            assert!(
                delay >= step / 2 && delay < step,
                "{delay:?} for step {step:?}"
            );
        }
        backoff.succeeded();
        let delay = backoff.failed();
        assert!(delay >= Duration::from_millis(50) && delay < Duration::from_millis(100));
    }

    #[test]
    fn backoff_jitter_differs_between_seeds() {
        let delays = |seed| {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
            (0..6).map(|_| backoff.failed()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[test]
    fn an_outage_is_news_once_when_it_starts_and_once_when_it_ends() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut outage = Outage::default();
        assert_eq!(outage.succeeded(at(0)), Transition::Same);
        assert_eq!(outage.failed(at(1)), Transition::WentDown);
        assert!(outage.is_down());
        assert_eq!(outage.down_since(), Some(at(1)));
        for second in 2..10 {
            assert_eq!(outage.failed(at(second)), Transition::Same);
        }
        assert_eq!(
            outage.succeeded(at(12)),
            Transition::CameBack {
                after: Duration::from_secs(11),
                failures: 9
            }
        );
        assert_eq!(outage.succeeded(at(13)), Transition::Same);
        assert_eq!(outage.failed(at(20)), Transition::WentDown);
        assert_eq!(
            outage.succeeded(at(21)),
            Transition::CameBack {
                after: Duration::from_secs(1),
                failures: 1
            }
        );
        assert_eq!(outage.outages(), 2);
        assert!(!outage.is_down());
    }

    #[test]
    fn log_once_latches_until_cleared() {
        let mut latch = LogOnce::default();
        assert!(!latch.clear());
        assert!(latch.raise());
        assert!(!latch.raise());
        assert!(latch.clear());
        assert!(!latch.clear());
        assert!(latch.raise());
    }
}
