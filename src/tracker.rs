//! Per-source scan counters: how many distinct targets each source IP touched recently.
//!
//! The table is bounded: a flood of spoofed sources evicts the longest-silent entries instead of
//! growing memory, and the hash is keyed per process (SipHash with a random key) so an attacker
//! cannot choose addresses that collide. This module knows nothing of packets or verdicts.

use std::collections::hash_map::RandomState;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

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
    fn packed(self) -> u32 {
        (u32::from(self.protocol) << 16) | u32::from(self.port)
    }
}

/// How many recent distinct targets a source remembers. Retransmissions and a client retrying
/// the same closed port then count once, which keeps `scan_trigger` meaning "ports probed"
/// rather than "packets sent", while the memory per source stays fixed.
const RECENT_TARGETS: usize = 8;

#[derive(Debug, Clone)]
struct SourceState {
    hits: u32,
    last_seen: Instant,
    recent: [u32; RECENT_TARGETS],
    recent_len: u8,
    recent_next: u8,
}

impl SourceState {
    fn new(now: Instant) -> Self {
        SourceState {
            hits: 0,
            last_seen: now,
            recent: [0; RECENT_TARGETS],
            recent_len: 0,
            recent_next: 0,
        }
    }

    /// Counts `target` unless it is one of the last few distinct targets; returns the count.
    fn record(&mut self, target: Target) -> u32 {
        let packed = target.packed();
        let len = usize::from(self.recent_len);
        if self.recent[..len].contains(&packed) {
            return self.hits;
        }
        let slot = usize::from(self.recent_next);
        self.recent[slot] = packed;
        self.recent_next = ((slot + 1) % RECENT_TARGETS) as u8;
        self.recent_len = (len + 1).min(RECENT_TARGETS) as u8;
        self.hits = self.hits.saturating_add(1);
        self.hits
    }
}

/// The bounded table of sources and their hit counts.
pub struct Tracker {
    sources: LruCache<IpAddr, SourceState, RandomState>,
    window: Duration,
    evicted: u64,
}

impl Tracker {
    /// `window`: a source silent for this long starts again from zero.
    /// `capacity`: the most sources remembered at once.
    pub fn new(window: Duration, capacity: NonZeroUsize) -> Self {
        Tracker {
            sources: LruCache::with_hasher(capacity, RandomState::new()),
            window,
            evicted: 0,
        }
    }

    /// Records that `source` touched `target` at `now`; returns the source's hit count, which
    /// grows by one for each distinct target within the window.
    pub fn record(&mut self, source: IpAddr, target: Target, now: Instant) -> u32 {
        if let Some(state) = self.sources.get_mut(&source) {
            if now.saturating_duration_since(state.last_seen) > self.window {
                *state = SourceState::new(now);
            }
            state.last_seen = now;
            return state.record(target);
        }
        let mut state = SourceState::new(now);
        let hits = state.record(target);
        if self.sources.push(source, state).is_some() {
            self.evicted += 1;
        }
        hits
    }

    /// Forgets a source, e.g. once it is blocked: its history is no longer needed.
    pub fn forget(&mut self, source: &IpAddr) {
        self.sources.pop(source);
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// How many sources were pushed out to make room since start: a sign of a spoofed flood.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn tracker(window_s: u64, cap: usize) -> Tracker {
        Tracker::new(
            Duration::from_secs(window_s),
            NonZeroUsize::new(cap).unwrap(),
        )
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
            let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | i));
            t.record(spoofed, tcp(80), now);
            assert!(t.len() <= 1000);
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.evicted(), 100_000 + 1 - 1000);
        assert_eq!(
            t.record(scanner, tcp(2), now),
            1,
            "the oldest source was evicted first"
        );
    }

    #[test]
    fn recently_active_sources_survive_eviction() {
        let mut t = tracker(600, 3);
        let now = Instant::now();
        let (a, b, c, d) = (
            addr("192.0.2.1"),
            addr("192.0.2.2"),
            addr("192.0.2.3"),
            addr("192.0.2.4"),
        );
        t.record(a, tcp(1), now);
        t.record(b, tcp(1), now);
        t.record(c, tcp(1), now);
        t.record(a, tcp(2), now); // a is now the most recent
        t.record(d, tcp(1), now); // evicts b
        assert_eq!(t.record(a, tcp(3), now), 3);
        assert_eq!(t.record(b, tcp(2), now), 1);
    }

    #[test]
    fn forget_drops_the_history() {
        let mut t = tracker(600, 16);
        let now = Instant::now();
        let src = addr("192.0.2.9");
        t.record(src, tcp(1), now);
        t.record(src, tcp(2), now);
        t.forget(&src);
        assert!(t.is_empty());
        assert_eq!(t.record(src, tcp(3), now), 1);
    }
}
