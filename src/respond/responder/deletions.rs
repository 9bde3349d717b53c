//! When the responder last took elements out of the kernel's blocked sets. A block that a queue
//! reader put into the sets itself reaches the responder marked with the time of that commit
//! ([`crate::pipeline::BlockOrder::in_set_since`]), and the responder leaves its element alone,
//! unless it deleted the source's element since: a release of the source's earlier block that
//! was ordered before the new block but carried out after the reader's commit (an eviction, an
//! expiry, a pulled ban let go), or a rebuild of the sets from the journal, which did not hold
//! the new block yet (a repair after `nft flush ruleset`). The kernel commits one transaction at
//! a time, the reader takes its time before its commit and the responder after each of its own,
//! so a delete the kernel committed after the add is always later here; ties count as later.
//!
//! Memory is bounded: times older than [`HORIZON`] are forgotten, and a block put in before
//! what was forgotten is added again (as before the readers put blocks in), as is every block
//! put in before more than [`MAX_SOURCES`] sources were deleted within the horizon.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a delete is remembered. A block order reaches the responder within milliseconds of
/// the reader's commit unless the responder is that far behind.
const HORIZON: Duration = Duration::from_secs(60);
/// Most sources remembered one by one (about 3 MiB).
const MAX_SOURCES: usize = 1 << 16;

#[derive(Debug, Default)]
pub(super) struct Deletions {
    /// When each source's element was last deleted, within the horizon.
    at: HashMap<IpAddr, Instant>,
    /// Any element may have been deleted at this time: the sets were rebuilt, or deletes were
    /// forgotten up to it.
    every: Option<Instant>,
}

impl Deletions {
    /// The elements of `sources` were just deleted (or were absent already).
    pub(super) fn of(&mut self, sources: impl IntoIterator<Item = IpAddr>) {
        let now = Instant::now();
        for source in sources {
            if self.at.len() >= MAX_SOURCES {
                self.of_every();
                return;
            }
            self.at.insert(source, now);
        }
    }

    /// Every element may just have been deleted.
    pub(super) fn of_every(&mut self) {
        self.at.clear();
        self.every = Some(Instant::now());
    }

    /// Whether the element of `source` may have been deleted since `put_in`.
    pub(super) fn since(&self, source: &IpAddr, put_in: Instant) -> bool {
        let after = |at: &Instant| *at >= put_in;
        self.every.as_ref().is_some_and(after) || self.at.get(source).is_some_and(after)
    }

    /// Forgets the deletes older than the horizon at `now`.
    pub(super) fn forget_old(&mut self, now: Instant) {
        let Some(floor) = now.checked_sub(HORIZON) else {
            return;
        };
        if self.every.is_some_and(|every| every >= floor) {
            return;
        }
        self.at.retain(|_, at| *at > floor);
        self.every = Some(floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_delete_after_the_element_went_in_counts() {
        let mut deletions = Deletions::default();
        let before = Instant::now();
        deletions.of([source("198.51.100.1")]);
        let after = Instant::now() + Duration::from_nanos(1);
        assert!(deletions.since(&source("198.51.100.1"), before));
        assert!(!deletions.since(&source("198.51.100.1"), after));
        assert!(!deletions.since(&source("198.51.100.2"), before));
        deletions.of_every();
        assert!(deletions.since(&source("198.51.100.2"), before));
        assert!(!deletions.since(&source("198.51.100.2"), after + HORIZON));
    }

    #[test]
    fn forgotten_deletes_count_for_every_element_put_in_before_them() {
        let mut deletions = Deletions::default();
        let put_in = Instant::now();
        deletions.of([source("198.51.100.1")]);
        deletions.forget_old(Instant::now() + HORIZON * 2);
        assert!(deletions.at.is_empty());
        assert!(deletions.since(&source("198.51.100.2"), put_in));
        assert!(!deletions.since(&source("198.51.100.2"), put_in + HORIZON * 2));
    }

    #[test]
    fn too_many_sources_count_as_every_element() {
        let mut deletions = Deletions::default();
        let put_in = Instant::now();
        deletions.of((0..=MAX_SOURCES as u32).map(|n| IpAddr::from(n.to_be_bytes())));
        assert!(deletions.at.is_empty());
        assert!(deletions.since(&source("2001:db8::1"), put_in));
    }
}
