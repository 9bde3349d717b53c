//! Per-source scan counters: how many distinct targets each source IP touched recently, and
//! whether it proved its address by completing a handshake.
//!
//! The table is bounded and split in two segments, as in SLRU: a source enters *probation*, and
//! moves to the *protected* segment once it has touched two distinct targets (or is verified).
//! A full table evicts the longest-silent source of probation first, so a flood of spoofed
//! one-packet sources churns probation only and cannot push a real scanner out between its
//! probes once it has made two. The hash is keyed with random bits per process (see
//! [`source_hasher`]), so an attacker cannot choose addresses that collide.
//!
//! Entries live in one arena of fixed-size slots, linked by index into the two lists and into
//! the chains of a hash index whose bucket count is fixed at start: once the table has grown to
//! its bound, recording a packet allocates nothing. A slot is 61 bytes and the index 2 bytes per
//! source, so a full table of a million sources holds 63 MB. This module knows nothing of packets
//! or verdicts.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use foldhash::SharedSeed;

/// The hasher of the tables keyed by source address on the packet path: this tracker's index,
/// the engine's block table and its waiting line. foldhash costs a few nanoseconds for an
/// address where SipHash costs tens, and is keyed, here with random bits per process and per
/// table, so addresses that collide cannot be chosen from outside.
pub type SourceHasher = foldhash::quality::SeedableRandomState;

/// A [`SourceHasher`] with a random key of its own.
pub fn source_hasher() -> SourceHasher {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
    SourceHasher::with_seed(random_u64(), shared)
}

/// 64 random bits. std keys each `RandomState` from the kernel's random source (getrandom(2)),
/// so a hash under fresh keys is random too, and taking it cannot fail.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0u64)
}

/// What a source touched: protocol number and port, packed so that a recent-target check is a
/// comparison of plain integers. Targets without a port (IP options on ICMP, short headers) carry
/// their IP protocol number as the port too, as the engine fills them in: the same number the
/// log line and the history name, and each such protocol counts once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub protocol: u8,
    pub port: u16,
}

impl Target {
    fn packed(self) -> PackedTarget {
        let [high, low] = self.port.to_be_bytes();
        [self.protocol, high, low]
    }
}

/// A target in three bytes: protocol, then port.
type PackedTarget = [u8; 3];

/// How many recent distinct targets a source remembers. Retransmissions and a client retrying
/// the same closed port then count once, which keeps `scan_trigger` meaning "ports probed"
/// rather than "packets sent", while the memory per source stays fixed.
const RECENT_TARGETS: usize = 8;

/// Distinct targets that earn a source its place in the protected segment: one probe is all a
/// spoofed packet ever makes, two is already a pattern.
const PROTECT_AT_HITS: u32 = 2;

/// A moment as the tracker keeps it: tenths of a second since the first moment it was given,
/// in four bytes instead of an `Instant`'s sixteen. That is fine enough for a window of
/// seconds to hours, and lasts 13 years; past that every source looks seen at the same time.
type Tick = u32;

/// How long one tick lasts.
const TICK: Duration = Duration::from_millis(100);

fn ticks(duration: Duration) -> Tick {
    // Whole seconds and milliseconds apart: 64-bit arithmetic, where `as_millis` is 128-bit.
    let tenths = duration.as_secs().saturating_mul(10) + u64::from(duration.subsec_millis() / 100);
    Tick::try_from(tenths).unwrap_or(Tick::MAX)
}

/// Index of a slot in the arena; `NIL` ends a list or a chain.
type SlotIndex = u32;
const NIL: SlotIndex = SlotIndex::MAX;

/// `Slot::marks`: in the protected segment (else in probation, or free).
const PROTECTED: u8 = 1;
/// `Slot::marks`: completed a TCP handshake with us, so the address is not spoofed.
const VERIFIED: u8 = 2;

/// One source and its counters. Packed, because it is what a million tracked sources cost:
/// 61 bytes instead of 64 with padding. Fields are only ever read and written whole.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed)]
struct Slot {
    /// The address as IPv6 bits, an IPv4 one mapped (see [`key`]).
    source: u128,
    /// The next slot in the same bucket of the index. Next to `source`, so that a walk down a
    /// chain mostly reads one cache line per slot, not two.
    next_in_bucket: SlotIndex,
    /// Towards the least recently seen end of its segment.
    older: SlotIndex,
    /// Towards the most recently seen end; on the free list, the next free slot.
    newer: SlotIndex,
    hits: u32,
    last_seen: Tick,
    marks: u8,
    /// The last distinct targets, a ring: the next goes to `hits % RECENT_TARGETS`, and the
    /// first `min(hits, RECENT_TARGETS)` are filled, since every distinct target counts once.
    recent: [PackedTarget; RECENT_TARGETS],
}

impl Slot {
    fn new(source: u128, now: Tick) -> Self {
        Slot {
            source,
            next_in_bucket: NIL,
            older: NIL,
            newer: NIL,
            hits: 0,
            last_seen: now,
            marks: 0,
            recent: [[0; 3]; RECENT_TARGETS],
        }
    }

    /// Counts `target` unless it is one of the last few distinct targets; returns the count.
    fn record(&mut self, target: Target) -> u32 {
        let packed = target.packed();
        let hits = self.hits;
        let filled = (hits as usize).min(RECENT_TARGETS);
        if self.recent[..filled].contains(&packed) {
            return hits;
        }
        self.recent[hits as usize % RECENT_TARGETS] = packed;
        self.hits = hits.saturating_add(1);
        self.hits
    }

    /// Silence longer than the window forgets the count, not the proof: the address did answer.
    fn start_over(&mut self) {
        self.hits = 0;
    }

    fn is(&self, mark: u8) -> bool {
        self.marks & mark != 0
    }

    fn deserves_protection(&self) -> bool {
        self.is(VERIFIED) || self.hits >= PROTECT_AT_HITS
    }
}

/// The tracker's key for an address: its IPv6 bits, an IPv4 address as its IPv4-mapped IPv6
/// form. The pipeline screens out IPv4-mapped IPv6 sources as impossible before they get here;
/// were one given, it would count as the IPv4 address it names.
fn key(source: IpAddr) -> u128 {
    match source {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The moments `[from, until)` that all make `tick`.
#[derive(Debug, Clone, Copy)]
struct TickSpan {
    from: Instant,
    until: Instant,
    tick: Tick,
}

impl TickSpan {
    fn holds(&self, now: Instant) -> bool {
        self.from <= now && now < self.until
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Probation,
    Protected,
}

/// A doubly linked list of slots, oldest first.
#[derive(Debug, Clone, Copy)]
struct List {
    oldest: SlotIndex,
    newest: SlotIndex,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        oldest: NIL,
        newest: NIL,
        len: 0,
    };
}

/// The bounded table of sources and their hit counts.
pub struct Tracker {
    /// The first slot of each bucket's chain; one bucket per two sources the table holds.
    buckets: Box<[SlotIndex]>,
    hasher: SourceHasher,
    slots: Vec<Slot>,
    /// Freed slots (from `forget`), reused before the arena grows; linked through `newer`.
    free: SlotIndex,
    probation: List,
    protected: List,
    capacity: usize,
    /// Most sources the protected segment holds; beyond it its oldest go back to probation.
    protected_capacity: usize,
    window: Tick,
    /// The moment tick 0 stands for: the first one given.
    epoch: Option<Instant>,
    /// The tick of the last moment given, and the moments that make that same tick: packets
    /// that arrive close together skip the clock arithmetic.
    current_tick: Option<TickSpan>,
    /// The slot found last: a scan sends its probes back to back, and they skip the hash.
    last_found: SlotIndex,
    evicted: u64,
}

impl Tracker {
    /// `window`: a source silent for this long starts again from zero.
    /// `capacity`: the most sources remembered at once. Half of it may be protected: the other
    /// half keeps room for new sources to make their second probe in.
    pub fn new(window: Duration, capacity: NonZeroUsize) -> Self {
        // Beyond the arena's index range no table could be addressed anyway; the config caps
        // `max_sources` far below it.
        let capacity = capacity.get().min(NIL as usize - 1);
        Tracker {
            buckets: vec![NIL; capacity.div_ceil(2)].into_boxed_slice(),
            hasher: source_hasher(),
            slots: Vec::new(),
            free: NIL,
            probation: List::EMPTY,
            protected: List::EMPTY,
            capacity,
            protected_capacity: capacity / 2,
            window: ticks(window),
            epoch: None,
            current_tick: None,
            last_found: NIL,
            evicted: 0,
        }
    }

    /// Records that `source` touched `target` at `now`; returns the source's hit count, which
    /// grows by one for each distinct target within the window.
    pub fn record(&mut self, source: IpAddr, target: Target, now: Instant) -> u32 {
        let slot = self.slot_for(source, now);
        let hits = self.slots[slot as usize].record(target);
        self.promote_if_deserved(slot);
        hits
    }

    /// Notes that `source` completed a handshake: its later block is verified, and it is kept
    /// from eviction by sources that never did.
    pub fn mark_verified(&mut self, source: IpAddr, now: Instant) {
        let slot = self.slot_for(source, now);
        self.slots[slot as usize].marks |= VERIFIED;
        self.promote_if_deserved(slot);
    }

    /// Whether `source` completed a handshake while it was remembered.
    pub fn is_verified(&self, source: &IpAddr) -> bool {
        let key = key(*source);
        self.find(key, self.bucket_of(key))
            .is_some_and(|slot| self.slots[slot as usize].is(VERIFIED))
    }

    /// Forgets a source, e.g. once it is blocked: its history is no longer needed.
    pub fn forget(&mut self, source: &IpAddr) {
        let key = key(*source);
        if let Some(slot) = self.find(key, self.bucket_of(key)) {
            self.remove(slot);
        }
    }

    pub fn len(&self) -> usize {
        self.probation.len + self.protected.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sources in the protected segment: those that touched two targets or more, or verified.
    pub fn protected_len(&self) -> usize {
        self.protected.len
    }

    /// How many sources were pushed out to make room since start: a sign of a spoofed flood.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// `now` as a tick; the first moment given is tick 0, and earlier ones count as it.
    fn tick(&mut self, now: Instant) -> Tick {
        if let Some(span) = self.current_tick.filter(|span| span.holds(now)) {
            return span.tick;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let tick = ticks(now.saturating_duration_since(epoch));
        // Tick t is every moment from t tenths after the epoch to just before the next tenth.
        let from = TICK
            .checked_mul(tick)
            .and_then(|since_epoch| epoch.checked_add(since_epoch));
        self.current_tick = from
            .and_then(|from| Some((from, from.checked_add(TICK)?)))
            .map(|(from, until)| TickSpan { from, until, tick })
            // Not so before the epoch, nor once the ticks have run out.
            .filter(|span| span.holds(now) && tick < Tick::MAX);
        tick
    }

    /// The bucket `key` hashes to.
    fn bucket_of(&self, key: u128) -> usize {
        // The high half of the hash scaled to the bucket count: no division, no power of two.
        let high = self.hasher.hash_one(key) >> 32;
        ((high * self.buckets.len() as u64) >> 32) as usize
    }

    fn find(&self, key: u128, bucket: usize) -> Option<SlotIndex> {
        self.find_or_last(key, bucket).ok()
    }

    /// The slots of `bucket`'s chain, first to last.
    fn chain(&self, bucket: usize) -> impl Iterator<Item = SlotIndex> + '_ {
        let first = self.buckets[bucket];
        std::iter::successors((first != NIL).then_some(first), move |&at| {
            let next = self.slots[at as usize].next_in_bucket;
            (next != NIL).then_some(next)
        })
    }

    /// The slot of `key` in `bucket`'s chain, or else the last slot of that chain (NIL when it
    /// is empty), after which a new one is linked.
    fn find_or_last(&self, key: u128, bucket: usize) -> Result<SlotIndex, SlotIndex> {
        let mut last = NIL;
        for at in self.chain(bucket) {
            if { self.slots[at as usize].source } == key {
                return Ok(at);
            }
            last = at;
        }
        Err(last)
    }

    /// The slot of `source`, marked as seen at `now`: its own, reset if it was silent longer
    /// than the window, or a fresh one in probation.
    fn slot_for(&mut self, source: IpAddr, now: Instant) -> SlotIndex {
        let now = self.tick(now);
        let key = key(source);
        let last = self.slots.get(self.last_found as usize);
        let found = match last.filter(|last| { last.source } == key) {
            Some(_) => Ok(self.last_found),
            None => {
                let bucket = self.bucket_of(key);
                self.find_or_last(key, bucket)
                    .map_err(|last_in_chain| (bucket, last_in_chain))
            }
        };
        let (bucket, mut last_in_chain) = match found {
            Ok(slot) => {
                self.last_found = slot;
                let entry = &mut self.slots[slot as usize];
                if now.saturating_sub(entry.last_seen) > self.window {
                    entry.start_over();
                }
                entry.last_seen = now;
                self.touch(slot);
                return slot;
            }
            Err(place) => place,
        };
        if self.len() >= self.capacity && self.evict_one() == Some(last_in_chain) {
            last_in_chain = self.chain(bucket).last().unwrap_or(NIL);
        }
        let slot = self.take_slot(Slot::new(key, now));
        // A new source goes to the end of its chain, so chains run from the longest-tracked
        // source: the one a full table evicts is then mostly the first of its chain, taken out
        // without a walk down the chain.
        match last_in_chain {
            NIL => self.buckets[bucket] = slot,
            last => self.slots[last as usize].next_in_bucket = slot,
        }
        self.push_newest(slot, Segment::Probation);
        if self.len() >= self.capacity {
            // The next source to come evicts the oldest in probation, and unlinking it writes
            // to its newer neighbour, which no recent packet touched: have that slot fetched
            // into the cache now, while the rest of this packet's work goes on.
            if let Some(next_victim) = self.slots.get(self.probation.oldest as usize) {
                self.prefetch(next_victim.newer);
            }
        }
        slot
    }

    /// Asks the processor to fetch `slot`'s list links into the cache, without waiting for them.
    fn prefetch(&self, slot: SlotIndex) {
        #[cfg(target_arch = "x86_64")]
        if let Some(entry) = self.slots.get(slot as usize) {
            let links = std::ptr::addr_of!(entry.older).cast::<i8>();
            // SAFETY: a prefetch is only a hint to the cache: it reads nothing into the program,
            // cannot fault, and the address is that of a live slot anyway.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(links) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Moves a probation slot that has earned it into the protected segment; when that is full,
    /// its longest-silent source goes back to probation (as the newest there, so it keeps a
    /// chance to prove itself again).
    fn promote_if_deserved(&mut self, slot: SlotIndex) {
        let entry = &self.slots[slot as usize];
        if entry.is(PROTECTED) || !entry.deserves_protection() {
            return;
        }
        if self.protected_capacity == 0 {
            return;
        }
        if self.protected.len >= self.protected_capacity {
            let demoted = self.protected.oldest;
            self.unlink(demoted);
            self.push_newest(demoted, Segment::Probation);
        }
        self.unlink(slot);
        self.push_newest(slot, Segment::Protected);
    }

    /// Makes room for one source: the longest-silent in probation, or in the protected segment
    /// when probation is empty. Returns the slot it freed.
    fn evict_one(&mut self) -> Option<SlotIndex> {
        let victim = match self.probation.oldest {
            NIL => self.protected.oldest,
            oldest => oldest,
        };
        if victim == NIL {
            return None;
        }
        self.remove(victim);
        self.evicted += 1;
        Some(victim)
    }

    /// Takes a linked slot out of the index and its list, and frees it.
    fn remove(&mut self, slot: SlotIndex) {
        let (key, next) = {
            let entry = &self.slots[slot as usize];
            (entry.source, entry.next_in_bucket)
        };
        let bucket = self.bucket_of(key);
        if self.buckets[bucket] == slot {
            self.buckets[bucket] = next;
        } else {
            let before = self
                .chain(bucket)
                .find(|&at| self.slots[at as usize].next_in_bucket == slot);
            if let Some(before) = before {
                self.slots[before as usize].next_in_bucket = next;
            }
        }
        self.unlink(slot);
        if self.last_found == slot {
            self.last_found = NIL;
        }
        let entry = &mut self.slots[slot as usize];
        entry.marks = 0;
        entry.next_in_bucket = NIL;
        entry.newer = self.free;
        self.free = slot;
    }

    fn segment(&self, slot: SlotIndex) -> Segment {
        match self.slots[slot as usize].is(PROTECTED) {
            true => Segment::Protected,
            false => Segment::Probation,
        }
    }

    /// Moves a linked slot to the newest end of its own segment.
    fn touch(&mut self, slot: SlotIndex) {
        let segment = self.segment(slot);
        if self.list(segment).newest == slot {
            return;
        }
        self.unlink(slot);
        self.push_newest(slot, segment);
    }

    fn list(&mut self, segment: Segment) -> &mut List {
        match segment {
            Segment::Protected => &mut self.protected,
            Segment::Probation => &mut self.probation,
        }
    }

    fn push_newest(&mut self, slot: SlotIndex, segment: Segment) {
        let list = *self.list(segment);
        {
            let entry = &mut self.slots[slot as usize];
            entry.marks = match segment {
                Segment::Protected => entry.marks | PROTECTED,
                Segment::Probation => entry.marks & !PROTECTED,
            };
            entry.older = list.newest;
            entry.newer = NIL;
        }
        if list.newest != NIL {
            self.slots[list.newest as usize].newer = slot;
        }
        let list = self.list(segment);
        if list.oldest == NIL {
            list.oldest = slot;
        }
        list.newest = slot;
        list.len += 1;
    }

    fn unlink(&mut self, slot: SlotIndex) {
        let segment = self.segment(slot);
        let (older, newer) = {
            let entry = &self.slots[slot as usize];
            (entry.older, entry.newer)
        };
        match older {
            NIL => self.list(segment).oldest = newer,
            older => self.slots[older as usize].newer = newer,
        }
        match newer {
            NIL => self.list(segment).newest = older,
            newer => self.slots[newer as usize].older = older,
        }
        self.list(segment).len -= 1;
        let entry = &mut self.slots[slot as usize];
        entry.older = NIL;
        entry.newer = NIL;
    }

    fn take_slot(&mut self, slot: Slot) -> SlotIndex {
        match self.free {
            NIL => {
                // The arena doubles until the table is full, and never past it: then every
                // slot is reused.
                if self.slots.len() == self.slots.capacity() {
                    let room = self.capacity - self.slots.len();
                    self.slots.reserve_exact(self.slots.len().max(16).min(room));
                }
                self.slots.push(slot);
                (self.slots.len() - 1) as SlotIndex
            }
            free => {
                self.free = self.slots[free as usize].newer;
                self.slots[free as usize] = slot;
                free
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const TCP: u8 = 6;

    fn tcp(port: u16) -> Target {
        Target {
            protocol: TCP,
            port,
        }
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spoofed(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
    }

    fn tracker(window_s: u64, cap: usize) -> Tracker {
        Tracker::new(
            Duration::from_secs(window_s),
            NonZeroUsize::new(cap).unwrap(),
        )
    }

    /// The lists and the index agree: every indexed source is linked once, in the segment its
    /// slot names, and the counts add up.
    fn assert_consistent(t: &Tracker) {
        let mut seen = 0;
        for (list, segment) in [
            (t.probation, Segment::Probation),
            (t.protected, Segment::Protected),
        ] {
            let mut count = 0;
            let mut at = list.oldest;
            let mut previous = NIL;
            while at != NIL {
                let slot = t.slots[at as usize];
                assert_eq!(t.segment(at), segment);
                assert_eq!({ slot.older }, previous);
                assert_eq!(t.find(slot.source, t.bucket_of(slot.source)), Some(at));
                previous = at;
                at = slot.newer;
                count += 1;
            }
            assert_eq!(previous, list.newest);
            assert_eq!(count, list.len);
            seen += count;
        }
        let chained: usize = (0..t.buckets.len())
            .map(|bucket| t.chain(bucket).count())
            .sum();
        assert_eq!(seen, chained, "every linked source is in the index once");
        assert_eq!(seen, t.len());
        assert!(t.len() <= t.capacity);
        assert!(t.slots.len() <= t.capacity);
        assert!(t.protected.len <= t.protected_capacity);
    }

    #[test]
    fn a_moment_makes_the_same_tick_whether_or_not_its_tick_was_the_last() {
        let mut t = tracker(600, 16);
        let epoch = Instant::now();
        let at = |millis: u64| epoch + Duration::from_millis(millis);
        let moments = [
            epoch,
            at(1),
            at(99),
            at(100),
            at(150),
            at(99),
            at(199),
            at(200),
            at(86_400_000),
            at(86_400_099),
            at(5),
            epoch.checked_sub(Duration::from_millis(1)).unwrap_or(epoch),
            at(50),
        ];
        for now in moments {
            let plain = ticks(now.saturating_duration_since(epoch));
            assert_eq!(t.tick(now), plain, "{:?} after the epoch", now - epoch);
            assert_eq!(t.tick(now), plain, "and again");
        }
    }

    #[test]
    fn a_slot_is_61_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 61);
    }

    #[test]
    fn counts_distinct_ports_across_the_source() {
        let mut t = tracker(600, 16);
        let now = Instant::now();
        let src = addr("198.51.100.7");
        assert_eq!(t.record(src, tcp(23), now), 1);
        assert_eq!(
            t.record(src, tcp(23), now),
            1,
            "a retransmission counts once"
        );
        assert_eq!(t.record(src, tcp(25), now), 2);
        assert_eq!(
            t.record(
                src,
                Target {
                    protocol: 17,
                    port: 25
                },
                now
            ),
            3,
            "UDP 25 is another target than TCP 25"
        );
        assert_eq!(t.record(addr("198.51.100.8"), tcp(23), now), 1);
        assert_consistent(&t);
    }

    #[test]
    fn a_scan_of_many_ports_counts_every_port() {
        let mut t = tracker(600, 16);
        let now = Instant::now();
        let src = addr("2001:db8::7");
        let mut last = 0;
        for port in 1..=1000 {
            last = t.record(src, tcp(port), now);
        }
        assert_eq!(last, 1000);
    }

    #[test]
    fn silence_longer_than_the_window_starts_over() {
        let mut t = tracker(10, 16);
        let start = Instant::now();
        let src = addr("192.0.2.1");
        t.record(src, tcp(1), start);
        t.record(src, tcp(2), start + Duration::from_secs(9));
        assert_eq!(t.record(src, tcp(3), start + Duration::from_secs(18)), 3);
        assert_eq!(
            t.record(src, tcp(4), start + Duration::from_secs(29)),
            1,
            "11 s of silence exceeds the 10 s window"
        );
    }

    #[test]
    fn a_spoofed_flood_cannot_grow_the_table_and_evicts_the_oldest() {
        let mut t = tracker(600, 1000);
        let now = Instant::now();
        let scanner = addr("198.51.100.7");
        t.record(scanner, tcp(1), now);
        for i in 0..100_000u32 {
            t.record(spoofed(i), tcp(80), now);
            assert!(t.len() <= 1000);
        }
        assert_consistent(&t);
        assert_eq!(t.len(), 1000);
        assert_eq!(t.evicted(), 100_000 + 1 - 1000);
        assert_eq!(
            t.record(scanner, tcp(2), now),
            1,
            "one probe earns no protection: the oldest source was evicted first"
        );
    }

    #[test]
    fn two_targets_protect_a_scanner_from_a_flood_of_one_packet_sources() {
        let mut t = tracker(600, 64);
        let now = Instant::now();
        let scanner = addr("198.51.100.7");
        for i in 0..1_000u32 {
            t.record(spoofed(i), tcp(80), now);
        }
        assert_eq!(t.record(scanner, tcp(1), now), 1);
        for i in 1_000..1_010u32 {
            t.record(spoofed(i), tcp(80), now);
        }
        assert_eq!(t.record(scanner, tcp(2), now), 2);
        assert_eq!(t.protected_len(), 1);
        // Two million spoofed sources, each far more than the table holds.
        for i in 0..2_000_000u32 {
            t.record(spoofed(10_000 + i), tcp(80), now);
        }
        assert_consistent(&t);
        assert_eq!(t.len(), 64);
        assert_eq!(
            t.record(scanner, tcp(3), now),
            3,
            "the scanner kept its count through the flood"
        );
    }

    #[test]
    fn a_full_protected_segment_sends_its_oldest_back_to_probation() {
        // Capacity 8: at most 4 protected.
        let mut t = tracker(600, 8);
        let now = Instant::now();
        let scanners: Vec<IpAddr> = (1..=5).map(|i| spoofed(1_000_000 + i)).collect();
        for scanner in &scanners {
            t.record(*scanner, tcp(1), now);
            t.record(*scanner, tcp(2), now);
        }
        assert_eq!(t.protected_len(), 4);
        assert_consistent(&t);
        // The first scanner was demoted to probation and is the first to go.
        for i in 0..4 {
            t.record(spoofed(i), tcp(80), now);
        }
        assert_consistent(&t);
        assert_eq!(
            t.record(scanners[0], tcp(3), now),
            1,
            "demoted, then evicted"
        );
        for scanner in &scanners[1..] {
            assert_eq!(t.record(*scanner, tcp(3), now), 3, "still protected");
        }
    }

    #[test]
    fn probation_is_evicted_before_protected_sources() {
        let mut t = tracker(600, 4);
        let now = Instant::now();
        let (a, b) = (addr("192.0.2.1"), addr("192.0.2.2"));
        t.record(a, tcp(1), now);
        t.record(a, tcp(2), now); // protected
        t.record(b, tcp(1), now);
        t.record(b, tcp(2), now); // protected
        for i in 0..10 {
            t.record(spoofed(i), tcp(80), now);
        }
        assert_consistent(&t);
        assert_eq!(t.record(a, tcp(3), now), 3);
        assert_eq!(t.record(b, tcp(3), now), 3);
    }

    #[test]
    fn verified_sources_are_protected_and_keep_the_mark_through_silence() {
        let mut t = tracker(10, 4);
        let start = Instant::now();
        let source = addr("198.51.100.9");
        assert!(!t.is_verified(&source));
        t.mark_verified(source, start);
        assert!(t.is_verified(&source));
        assert_eq!(t.protected_len(), 1);
        for i in 0..100 {
            t.record(spoofed(i), tcp(80), start);
        }
        assert!(t.is_verified(&source), "not evicted by one-packet sources");
        let later = start + Duration::from_secs(60);
        assert_eq!(t.record(source, tcp(1), later), 1, "the count starts over");
        assert!(t.is_verified(&source), "the proof does not");
        assert_consistent(&t);
    }

    #[test]
    fn a_retransmission_keeps_a_source_fresh_in_probation() {
        // Capacity 4: room for 4 in probation while nothing is protected.
        let mut t = tracker(600, 4);
        let now = Instant::now();
        let sources: Vec<IpAddr> = (1..=4).map(|i| spoofed(1_000 + i)).collect();
        for source in &sources {
            t.record(*source, tcp(1), now);
        }
        t.record(sources[0], tcp(1), now); // the oldest is now the newest
        t.record(spoofed(1), tcp(80), now); // evicts sources[1]
        assert_eq!(t.protected_len(), 0);
        assert_eq!(t.record(sources[0], tcp(2), now), 2);
        assert_eq!(t.record(sources[1], tcp(2), now), 1);
        assert_consistent(&t);
    }

    #[test]
    fn without_room_for_a_protected_segment_the_table_is_plain_lru() {
        // A capacity of 1 leaves no room for a protected segment: plain LRU.
        let mut t = tracker(600, 1);
        let now = Instant::now();
        let (a, b) = (addr("192.0.2.1"), addr("192.0.2.2"));
        t.record(a, tcp(1), now);
        t.record(a, tcp(2), now);
        assert_eq!(t.protected_len(), 0);
        t.record(b, tcp(1), now);
        assert_eq!(t.record(a, tcp(3), now), 1);
        assert_consistent(&t);
    }

    #[test]
    fn forget_drops_the_history_and_frees_the_slot_for_reuse() {
        let mut t = tracker(600, 16);
        let now = Instant::now();
        let src = addr("192.0.2.9");
        t.record(src, tcp(1), now);
        t.record(src, tcp(2), now);
        t.forget(&src);
        assert!(t.is_empty());
        assert_consistent(&t);
        assert_eq!(t.record(src, tcp(3), now), 1);
        assert_eq!(t.slots.len(), 1, "the freed slot was reused");
        t.forget(&addr("192.0.2.10"));
        assert_eq!(t.len(), 1, "forgetting an unknown source changes nothing");
    }

    #[test]
    fn a_full_table_reuses_its_slots() {
        let mut t = tracker(600, 100);
        let now = Instant::now();
        for i in 0..10_000u32 {
            t.record(spoofed(i), tcp(80), now);
        }
        assert_eq!(t.slots.len(), 100, "the arena stopped growing at the bound");
        assert_consistent(&t);
    }
}
