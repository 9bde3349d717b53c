//! The table of blocked sources: when each block ends and whether it is verified (its source
//! completed a handshake with us, so its address is its own) or unverified (anything else,
//! including every block of a stealth detection).
//!
//! Blocks are kept ordered by their end as well, per evidence: the unverified block nearest its
//! end is the one a full table gives up for a new block, and the ones whose time is up are
//! found without a scan of the table. Every change is O(log n); they happen once per block, not
//! per packet. This module knows nothing of packets, tokens or orders.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::tracker::{source_hasher, SourceHasher};

/// When a block ends; `None` is never, which sorts after every moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End(pub Option<Instant>);

impl Ord for End {
    fn cmp(&self, other: &End) -> Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &End) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl End {
    /// The end of a block of `term` placed at `now`; a term the clock cannot represent is as
    /// good as forever.
    pub fn after(now: Instant, term: Option<Duration>) -> End {
        End(term.and_then(|term| now.checked_add(term)))
    }

    fn is_due(self, now: Instant) -> bool {
        self.0.is_some_and(|end| end <= now)
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    end: End,
    verified: bool,
}

/// Whether a new block fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Free,
    /// Full; the unverified block nearest its end would make way.
    ByEviction,
    /// Full of verified blocks: nothing may make way.
    None,
}

pub struct BlockTable {
    blocks: HashMap<IpAddr, Block, SourceHasher>,
    unverified: BTreeSet<(End, IpAddr)>,
    verified: BTreeSet<(End, IpAddr)>,
    max: usize,
}

impl BlockTable {
    pub fn new(max: usize) -> BlockTable {
        BlockTable {
            blocks: HashMap::with_hasher(source_hasher()),
            unverified: BTreeSet::new(),
            verified: BTreeSet::new(),
            max,
        }
    }

    pub fn contains(&self, source: &IpAddr) -> bool {
        self.blocks.contains_key(source)
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn sources(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.blocks.keys().copied()
    }

    pub fn verified_len(&self) -> usize {
        self.verified.len()
    }

    pub fn unverified_len(&self) -> usize {
        self.unverified.len()
    }

    /// Whether `source` is blocked with a verified block.
    pub fn is_verified(&self, source: &IpAddr) -> bool {
        self.blocks.get(source).is_some_and(|block| block.verified)
    }

    /// Time left of `source`'s block at `now`: `Some(None)` for a block without end.
    pub fn remaining(&self, source: &IpAddr, now: Instant) -> Option<Option<Duration>> {
        let block = self.blocks.get(source)?;
        Some(block.end.0.map(|end| end.saturating_duration_since(now)))
    }

    pub fn room(&self) -> Room {
        if self.blocks.len() < self.max {
            Room::Free
        } else if self.unverified.is_empty() {
            Room::None
        } else {
            Room::ByEviction
        }
    }

    /// Records a block; replaces one `source` had. The bound is the caller's to keep (a block
    /// restored from an earlier run is taken even beyond it).
    pub fn insert(&mut self, source: IpAddr, end: End, verified: bool) {
        self.remove(&source);
        self.blocks.insert(source, Block { end, verified });
        self.index(verified).insert((end, source));
    }

    /// Gives up the unverified block nearest its end; returns its source.
    pub fn evict(&mut self) -> Option<IpAddr> {
        let (_, source) = self.unverified.pop_first()?;
        self.blocks.remove(&source);
        Some(source)
    }

    /// Makes `source`'s block verified, ending at `end`; false when it is not blocked.
    pub fn verify(&mut self, source: &IpAddr, end: End) -> bool {
        if !self.contains(source) {
            return false;
        }
        self.insert(*source, end, true);
        true
    }

    /// When the next block ends, if any does.
    pub fn next_end(&self) -> Option<Instant> {
        let first = |index: &BTreeSet<(End, IpAddr)>| index.first().and_then(|(end, _)| end.0);
        match (first(&self.unverified), first(&self.verified)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes out one block whose time is up at `now`; returns its source.
    pub fn pop_due(&mut self, now: Instant) -> Option<IpAddr> {
        let due = |index: &BTreeSet<(End, IpAddr)>| {
            index
                .first()
                .filter(|(end, _)| end.is_due(now))
                .map(|(_, source)| *source)
        };
        let source = due(&self.unverified).or_else(|| due(&self.verified))?;
        self.remove(&source);
        Some(source)
    }

    /// Takes out `source`'s block; false when it had none.
    pub fn remove(&mut self, source: &IpAddr) -> bool {
        let Some(block) = self.blocks.remove(source) else {
            return false;
        };
        self.index(block.verified).remove(&(block.end, *source));
        true
    }

    /// Takes out every block; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let count = self.blocks.len();
        self.blocks.clear();
        self.unverified.clear();
        self.verified.clear();
        count
    }

    /// A new bound; blocks beyond it stay until they end, and new ones wait for room.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    fn index(&mut self, verified: bool) -> &mut BTreeSet<(End, IpAddr)> {
        match verified {
            true => &mut self.verified,
            false => &mut self.unverified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn source(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))
    }

    fn at(start: Instant, seconds: u64) -> End {
        End(Some(start + Duration::from_secs(seconds)))
    }

    #[test]
    fn never_sorts_after_every_moment() {
        let now = Instant::now();
        assert!(End(None) > End(Some(now + Duration::from_secs(1_000_000))));
        assert!(End(Some(now)) < End(Some(now + Duration::from_nanos(1))));
        assert_eq!(End::after(now, None), End(None));
        assert_eq!(
            End::after(now, Some(Duration::from_secs(u64::MAX))),
            End(None)
        );
    }

    #[test]
    fn a_full_table_gives_up_the_unverified_block_nearest_its_end() {
        let start = Instant::now();
        let mut t = BlockTable::new(4);
        t.insert(source(1), at(start, 300), false);
        t.insert(source(2), at(start, 100), true);
        t.insert(source(3), at(start, 200), false);
        assert_eq!(t.room(), Room::Free);
        t.insert(source(4), End(None), false);
        assert_eq!(t.room(), Room::ByEviction);
        assert_eq!(t.evict(), Some(source(3)), "the verified block ends sooner");
        assert_eq!(t.evict(), Some(source(1)));
        assert_eq!(t.evict(), Some(source(4)), "a block without end goes last");
        assert_eq!(t.evict(), None);
        assert_eq!((t.len(), t.verified_len()), (1, 1));
    }

    #[test]
    fn a_table_full_of_verified_blocks_has_no_room() {
        let start = Instant::now();
        let mut t = BlockTable::new(2);
        t.insert(source(1), at(start, 10), true);
        t.insert(source(2), at(start, 10), true);
        assert_eq!(t.room(), Room::None);
    }

    #[test]
    fn verifying_moves_a_block_and_changes_its_end() {
        let start = Instant::now();
        let mut t = BlockTable::new(4);
        t.insert(source(1), at(start, 60), false);
        assert!(t.verify(&source(1), End(None)));
        assert!(!t.verify(&source(2), End(None)), "not blocked");
        assert!(t.is_verified(&source(1)));
        assert_eq!((t.verified_len(), t.unverified_len()), (1, 0));
        assert_eq!(t.remaining(&source(1), start), Some(None));
        assert_eq!(t.pop_due(start + Duration::from_secs(3600)), None);
    }

    #[test]
    fn due_blocks_come_out_in_order_of_their_end() {
        let start = Instant::now();
        let mut t = BlockTable::new(8);
        t.insert(source(1), at(start, 30), true);
        t.insert(source(2), at(start, 10), false);
        t.insert(source(3), at(start, 20), true);
        t.insert(source(4), End(None), false);
        assert_eq!(t.next_end(), Some(start + Duration::from_secs(10)));
        let later = start + Duration::from_secs(25);
        assert_eq!(t.pop_due(later), Some(source(2)));
        assert_eq!(t.pop_due(later), Some(source(3)));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.next_end(), Some(start + Duration::from_secs(30)));
        assert_eq!(
            t.remaining(&source(1), later),
            Some(Some(Duration::from_secs(5)))
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn inserting_a_blocked_source_again_replaces_its_block() {
        let start = Instant::now();
        let mut t = BlockTable::new(8);
        t.insert(source(1), at(start, 10), false);
        t.insert(source(1), at(start, 20), true);
        assert_eq!((t.len(), t.verified_len(), t.unverified_len()), (1, 1, 0));
    }
}
