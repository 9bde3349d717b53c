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
//! An element another process deleted one by one is a release by hand ([`crate::heal`]), but
//! the watch may report it before the block order that put the element in reaches the
//! responder, when the journal does not hold the block yet: such deletes of sources not held
//! are remembered too (at the time the responder heard of them, which is no earlier than the
//! kernel's), and the block they hit is released by hand once journaled.
//!
//! Memory is bounded: times older than [`HORIZON`] are forgotten, and a block put in before
//! what was forgotten is added again (as before the readers put blocks in), as is every block
//! put in before more than [`MAX_SOURCES`] sources were deleted within the horizon.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a delete is remembered. A block order reaches the responder within milliseconds of
/// the reader's commit unless the responder is that far behind.
const HORIZON: Duration = Duration::from_secs(60);
/// Most sources remembered one by one (about 3 MiB).
const MAX_SOURCES: usize = 1 << 16;

/// What became of an element a queue reader put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Since {
    /// Nothing deleted it: it is in the set.
    Kept,
    /// The responder may have deleted it: it goes back in.
    Deleted,
    /// Another process deleted it, by hand: the block is released. Names who.
    DeletedBy(Arc<str>),
}

#[derive(Debug, Default)]
pub(super) struct Deletions {
    /// When the responder last deleted each source's element, within the horizon.
    at: HashMap<IpAddr, Instant>,
    /// When the responder heard that another process deleted the element of a source it did
    /// not hold, and who did, within the horizon.
    by_hand: HashMap<IpAddr, (Instant, Arc<str>)>,
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

    /// Another process deleted the elements of `sources`, which the responder did not hold.
    pub(super) fn by_hand(&mut self, sources: impl IntoIterator<Item = IpAddr>, by: &str) {
        let now = Instant::now();
        let by: Arc<str> = Arc::from(by);
        for source in sources {
            if self.by_hand.len() >= MAX_SOURCES {
                self.of_every();
                return;
            }
            self.by_hand
                .insert(source.to_canonical(), (now, by.clone()));
        }
    }

    /// Every element may just have been deleted. What was remembered is dominated by it:
    /// forgetting a delete by hand puts the element back, as before the readers put blocks in.
    pub(super) fn of_every(&mut self) {
        self.at.clear();
        self.by_hand.clear();
        self.every = Some(Instant::now());
    }

    /// What became of the element of `source` that went in at `put_in`. A delete by hand since
    /// then comes first: whatever else happened, the admin let the source go.
    pub(super) fn since(&self, source: &IpAddr, put_in: Instant) -> Since {
        let after = |at: &Instant| *at >= put_in;
        match self.by_hand.get(&source.to_canonical()) {
            Some((at, by)) if after(at) => Since::DeletedBy(by.clone()),
            _ if self.every.as_ref().is_some_and(after) => Since::Deleted,
            _ if self.at.get(source).is_some_and(after) => Since::Deleted,
            _ => Since::Kept,
        }
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
        self.by_hand.retain(|_, (at, _)| *at > floor);
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
        assert_eq!(
            deletions.since(&source("198.51.100.1"), before),
            Since::Deleted
        );
        assert_eq!(deletions.since(&source("198.51.100.1"), after), Since::Kept);
        assert_eq!(
            deletions.since(&source("198.51.100.2"), before),
            Since::Kept
        );
        deletions.of_every();
        assert_eq!(
            deletions.since(&source("198.51.100.2"), before),
            Since::Deleted
        );
        assert_eq!(
            deletions.since(&source("198.51.100.2"), after + HORIZON),
            Since::Kept
        );
    }

    #[test]
    fn a_delete_by_hand_after_the_element_went_in_comes_first() {
        let mut deletions = Deletions::default();
        let before = Instant::now();
        deletions.by_hand([source("::ffff:198.51.100.1")], "nft (netlink port 7)");
        deletions.of([source("198.51.100.1")]);
        let by_hand = Since::DeletedBy(Arc::from("nft (netlink port 7)"));
        assert_eq!(deletions.since(&source("198.51.100.1"), before), by_hand);
        let after = Instant::now() + Duration::from_nanos(1);
        assert_eq!(deletions.since(&source("198.51.100.1"), after), Since::Kept);
        // A rebuild of the sets forgets it, and puts the element back, as it always did.
        deletions.of_every();
        assert_eq!(
            deletions.since(&source("198.51.100.1"), before),
            Since::Deleted
        );
    }

    #[test]
    fn forgotten_deletes_count_for_every_element_put_in_before_them() {
        let mut deletions = Deletions::default();
        let put_in = Instant::now();
        deletions.of([source("198.51.100.1")]);
        deletions.by_hand([source("198.51.100.3")], "nft");
        deletions.forget_old(Instant::now() + HORIZON * 2);
        assert!(deletions.at.is_empty() && deletions.by_hand.is_empty());
        assert_eq!(
            deletions.since(&source("198.51.100.3"), put_in),
            Since::Deleted
        );
        assert_eq!(
            deletions.since(&source("198.51.100.2"), put_in + HORIZON * 2),
            Since::Kept
        );
    }

    #[test]
    fn too_many_sources_count_as_every_element() {
        let mut deletions = Deletions::default();
        let put_in = Instant::now();
        deletions.of((0..=MAX_SOURCES as u32).map(|n| IpAddr::from(n.to_be_bytes())));
        assert!(deletions.at.is_empty());
        assert_eq!(
            deletions.since(&source("2001:db8::1"), put_in),
            Since::Deleted
        );
    }
}
