//! Sources past the trigger that wait for a block token, best evidence first: verified sources,
//! then by how many distinct targets they touched, and in the order they came within the same
//! evidence. A source's place rises as it keeps probing.
//!
//! The queue is bounded: when it is full, a newcomer takes the place of the oldest source with
//! the least evidence, unless every waiting source has more than the newcomer. So a flood of
//! one-packet spoofed sources only ever churns the bottom, and a scanner that probed several
//! targets gets the next token. Evidence is bucketed into a fixed number of levels, each a FIFO
//! list in one preallocated arena, so every operation is O(1) and allocates nothing. This module
//! decides nothing about blocks; the engine hands out the tokens.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Detection;
use crate::tracker::{source_hasher, SourceHasher};

/// Levels of evidence: 1..=`HITS_LEVELS` distinct targets (more counts as the top of that
/// range), and one above for a verified source. A source that probed thirty targets is a scanner
/// beyond doubt; telling thirty from three hundred buys nothing.
const HITS_LEVELS: u32 = 30;
const VERIFIED_LEVEL: u32 = HITS_LEVELS + 1;
const LEVELS: usize = VERIFIED_LEVEL as usize + 1;

type SlotIndex = u32;
const NIL: SlotIndex = SlotIndex::MAX;

#[derive(Debug, Clone)]
struct Entry {
    /// The detection that put the source past the trigger; `hits` follows its probing since.
    detection: Detection,
    verified: bool,
    level: u32,
    older: SlotIndex,
    newer: SlotIndex,
}

#[derive(Debug, Clone, Copy)]
struct List {
    oldest: SlotIndex,
    newest: SlotIndex,
}

const EMPTY: List = List {
    oldest: NIL,
    newest: NIL,
};

/// What became of a source that asked to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It waits.
    Waiting,
    /// It waits, in the place of this source with less (or as little but older) evidence.
    Displaced(IpAddr),
    /// The queue is full of sources with more evidence: it does not wait.
    Turned,
}

/// One source handed out for a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waited {
    pub detection: Detection,
    pub verified: bool,
}

pub struct WaitingQueue {
    index: HashMap<IpAddr, SlotIndex, SourceHasher>,
    entries: Vec<Entry>,
    /// Unused slots, linked through `newer`.
    free: SlotIndex,
    levels: [List; LEVELS],
    /// Bit `n` is set when level `n` holds a source: the best and the worst are one bit scan
    /// away.
    occupied: u64,
    capacity: usize,
}

fn level(hits: u32, verified: bool) -> u32 {
    match verified {
        true => VERIFIED_LEVEL,
        false => hits.clamp(1, HITS_LEVELS),
    }
}

impl WaitingQueue {
    /// Room for `capacity` sources (at least one), taken up front.
    pub fn new(capacity: usize) -> WaitingQueue {
        let capacity = capacity.clamp(1, NIL as usize);
        WaitingQueue {
            index: HashMap::with_capacity_and_hasher(capacity, source_hasher()),
            entries: Vec::with_capacity(capacity),
            free: NIL,
            levels: [EMPTY; LEVELS],
            occupied: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, source: &IpAddr) -> bool {
        self.index.contains_key(source)
    }

    /// Puts a source past the trigger in line, unless it is waiting already.
    pub fn join(&mut self, detection: Detection, verified: bool) -> Joined {
        if self.contains(&detection.source) {
            self.raise(&detection.source, detection.hits);
            return Joined::Waiting;
        }
        let level = level(detection.hits, verified);
        let mut joined = Joined::Waiting;
        if self.index.len() >= self.capacity {
            let lowest = self.occupied.trailing_zeros();
            if lowest > level {
                return Joined::Turned;
            }
            let Some(displaced) = self.pop_oldest(lowest) else {
                return Joined::Turned;
            };
            joined = Joined::Displaced(displaced.detection.source);
        }
        let slot = self.take_slot(Entry {
            detection,
            verified,
            level,
            older: NIL,
            newer: NIL,
        });
        self.index.insert(detection.source, slot);
        self.push_newest(slot, level);
        joined
    }

    /// A waiting source touched another target: its count follows, and its place rises when
    /// the count reaches a higher level. It never falls: a count that starts over (the tracker
    /// forgot the source) does not undo what was seen.
    pub fn raise(&mut self, source: &IpAddr, hits: u32) {
        let Some(&slot) = self.index.get(source) else {
            return;
        };
        let entry = &mut self.entries[slot as usize];
        if hits <= entry.detection.hits {
            return;
        }
        entry.detection.hits = hits;
        let wanted = level(hits, entry.verified);
        if wanted != entry.level {
            self.unlink(slot);
            self.push_newest(slot, wanted);
        }
    }

    /// A waiting source completed a handshake: it goes to the front of the line.
    pub fn mark_verified(&mut self, source: &IpAddr) {
        let Some(&slot) = self.index.get(source) else {
            return;
        };
        self.entries[slot as usize].verified = true;
        if self.entries[slot as usize].level != VERIFIED_LEVEL {
            self.unlink(slot);
            self.push_newest(slot, VERIFIED_LEVEL);
        }
    }

    /// The source with the best evidence, the longest waiting among equals.
    pub fn pop_best(&mut self) -> Option<Waited> {
        if self.occupied == 0 {
            return None;
        }
        let best = u64::BITS - 1 - self.occupied.leading_zeros();
        self.pop_oldest(best)
    }

    fn pop_oldest(&mut self, level: u32) -> Option<Waited> {
        let slot = self.levels.get(level as usize)?.oldest;
        if slot == NIL {
            return None;
        }
        self.unlink(slot);
        let entry = &self.entries[slot as usize];
        let waited = Waited {
            detection: entry.detection,
            verified: entry.verified,
        };
        self.index.remove(&waited.detection.source);
        self.entries[slot as usize].newer = self.free;
        self.free = slot;
        Some(waited)
    }

    fn take_slot(&mut self, entry: Entry) -> SlotIndex {
        match self.free {
            NIL => {
                // Within the capacity reserved up front: no allocation.
                self.entries.push(entry);
                (self.entries.len() - 1) as SlotIndex
            }
            free => {
                self.free = self.entries[free as usize].newer;
                self.entries[free as usize] = entry;
                free
            }
        }
    }

    fn push_newest(&mut self, slot: SlotIndex, level: u32) {
        let list = self.levels[level as usize];
        {
            let entry = &mut self.entries[slot as usize];
            entry.level = level;
            entry.older = list.newest;
            entry.newer = NIL;
        }
        match list.newest {
            NIL => self.levels[level as usize].oldest = slot,
            newest => self.entries[newest as usize].newer = slot,
        }
        self.levels[level as usize].newest = slot;
        self.occupied |= 1 << level;
    }

    fn unlink(&mut self, slot: SlotIndex) {
        let (level, older, newer) = {
            let entry = &self.entries[slot as usize];
            (entry.level as usize, entry.older, entry.newer)
        };
        match older {
            NIL => self.levels[level].oldest = newer,
            older => self.entries[older as usize].newer = newer,
        }
        match newer {
            NIL => self.levels[level].newest = older,
            newer => self.entries[newer as usize].older = older,
        }
        if self.levels[level].oldest == NIL {
            self.occupied &= !(1 << level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ScanKind;
    use std::net::Ipv4Addr;

    fn detection(source: IpAddr, hits: u32) -> Detection {
        Detection {
            source,
            kind: ScanKind::SynNormal,
            protocol: "TCP",
            port: 23,
            hits,
        }
    }

    fn spoofed(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
    }

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    fn drain(queue: &mut WaitingQueue) -> Vec<IpAddr> {
        std::iter::from_fn(|| queue.pop_best())
            .map(|waited| waited.detection.source)
            .collect()
    }

    #[test]
    fn best_evidence_first_then_first_come() {
        let mut q = WaitingQueue::new(16);
        let (a, b, c, d) = (spoofed(1), spoofed(2), spoofed(3), spoofed(4));
        assert_eq!(q.join(detection(a, 1), false), Joined::Waiting);
        assert_eq!(q.join(detection(b, 3), false), Joined::Waiting);
        assert_eq!(q.join(detection(c, 1), false), Joined::Waiting);
        assert_eq!(q.join(detection(d, 1), true), Joined::Waiting);
        assert_eq!(q.len(), 4);
        assert_eq!(drain(&mut q), [d, b, a, c]);
        assert!(q.is_empty());
    }

    #[test]
    fn probing_on_moves_a_source_up_and_never_down() {
        let mut q = WaitingQueue::new(16);
        let (a, b) = (spoofed(1), spoofed(2));
        q.join(detection(a, 2), false);
        q.join(detection(b, 1), false);
        q.raise(&b, 3);
        q.raise(&a, 1);
        let first = q.pop_best().unwrap();
        assert_eq!((first.detection.source, first.detection.hits), (b, 3));
        let second = q.pop_best().unwrap();
        assert_eq!((second.detection.source, second.detection.hits), (a, 2));
    }

    #[test]
    fn a_verified_source_jumps_the_line() {
        let mut q = WaitingQueue::new(16);
        q.join(detection(spoofed(1), 25), false);
        q.join(detection(SCANNER, 1), false);
        q.mark_verified(&SCANNER);
        let first = q.pop_best().unwrap();
        assert_eq!(first.detection.source, SCANNER);
        assert!(first.verified);
    }

    #[test]
    fn a_flood_churns_the_bottom_and_a_scanner_stays_on_top() {
        let mut q = WaitingQueue::new(64);
        for i in 0..10 {
            q.join(detection(spoofed(i), 1), false);
        }
        q.join(detection(SCANNER, 3), false);
        for i in 10..1_000_000 {
            let joined = q.join(detection(spoofed(i), 1), false);
            assert!(matches!(joined, Joined::Waiting | Joined::Displaced(_)));
            assert!(q.len() <= 64);
        }
        assert_eq!(q.len(), 64);
        assert_eq!(q.entries.len(), 64, "the arena never grew past its bound");
        assert_eq!(q.pop_best().unwrap().detection.source, SCANNER);
        // The rest are the newest of the flood, oldest first.
        assert_eq!(
            q.pop_best().unwrap().detection.source,
            spoofed(1_000_000 - 63)
        );
    }

    #[test]
    fn when_full_the_oldest_with_least_evidence_makes_room_or_the_newcomer_is_turned() {
        let mut q = WaitingQueue::new(3);
        let (a, b, c) = (spoofed(1), spoofed(2), spoofed(3));
        q.join(detection(a, 2), false);
        q.join(detection(b, 2), false);
        q.join(detection(c, 3), false);
        assert_eq!(q.join(detection(spoofed(4), 1), false), Joined::Turned);
        assert_eq!(
            q.join(detection(spoofed(5), 2), false),
            Joined::Displaced(a)
        );
        assert_eq!(
            q.join(detection(spoofed(6), 9), false),
            Joined::Displaced(b)
        );
        assert_eq!(drain(&mut q), [spoofed(6), c, spoofed(5)]);
    }

    #[test]
    fn joining_twice_keeps_one_place() {
        let mut q = WaitingQueue::new(4);
        q.join(detection(SCANNER, 1), false);
        assert_eq!(q.join(detection(SCANNER, 4), false), Joined::Waiting);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_best().unwrap().detection.hits, 4);
        assert!(q.pop_best().is_none());
        assert!(!q.contains(&SCANNER));
    }

    #[test]
    fn counts_beyond_the_top_level_share_it_in_arrival_order() {
        let mut q = WaitingQueue::new(4);
        q.join(detection(spoofed(1), 500), false);
        q.join(detection(spoofed(2), 40), false);
        assert_eq!(drain(&mut q), [spoofed(1), spoofed(2)]);
    }
}
