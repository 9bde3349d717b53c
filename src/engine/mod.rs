//! The decision core: one classified packet and the current time in, a verdict and what to do
//! about its source out.
//!
//! No I/O, no clock, no kernel: the pipeline feeds it, and tests drive it on a fake clock. It
//! remembers which sources it has ordered blocked so that packets already queued behind the
//! triggering one are dropped without waiting for the firewall, and so that one scanner yields
//! one block order, not one per packet.
//!
//! What an attacker with spoofed sources must not turn into a bypass is bounded here: new blocks
//! take a token from a bucket (`max_blocks_per_sec`), sources past the trigger without one wait
//! in a bounded queue ordered by evidence, and a full block table gives up its unverified block
//! nearest its end rather than refuse a new one. How long a block lasts depends on that evidence:
//! a verified source (it completed a handshake, so the address is its own) is blocked for
//! `block_timeout`, any other for at most `unverified_timeout`.

mod blocks;
mod bucket;
mod waiting;

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use crate::addrset::AddrSet;
use crate::config::Verdict;
use crate::packet::{Packet, ScanKind, Transport};
use crate::tracker::{Target, Tracker};
use blocks::{BlockTable, End, Room};
use bucket::TokenBucket;
use waiting::{Joined, WaitingQueue};

/// Most sources waiting for a block token. At the default 50 blocks a second this is well over
/// a minute of tokens; a source further back waits behind better evidence anyway, and the bound
/// keeps a flood from costing more than this much memory (taken once, at start).
const WAITING_SOURCES_MAX: usize = 4096;

/// An unverified block this close to its end is not made verified: the responder, which counts
/// whole seconds of wall-clock time, may have lifted it already. The source is remembered as
/// verified instead, so its next block is.
const VERIFY_MARGIN: Duration = Duration::from_secs(2);

/// How the engine is tuned; built by the pipeline from the validated config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// React on hit number `scan_trigger + 1` (PortSentry's meaning).
    pub scan_trigger: u32,
    pub window: Duration,
    pub max_sources: NonZeroUsize,
    pub max_blocks: usize,
    /// How long a verified block lasts; None: until removed.
    pub block_timeout: Option<Duration>,
    /// The most an unverified block lasts; None: no cap beyond `block_timeout`.
    pub unverified_timeout: Option<Duration>,
    /// New blocks a second; None: unlimited.
    pub max_blocks_per_sec: Option<NonZeroU32>,
    /// Verdict for queued packets from sources that are watched but not (yet) blocked.
    pub verdict: Verdict,
    /// Sources never counted nor blocked: the configured ignore list plus the host's own
    /// addresses.
    pub ignore: AddrSet,
    /// When false, detections are reported but nothing is blocked (alert-only).
    pub block: bool,
}

impl EngineSettings {
    /// How long a block placed now lasts, by its evidence; None: until removed.
    pub fn term(&self, verified: bool) -> Option<Duration> {
        match (verified, self.block_timeout, self.unverified_timeout) {
            (true, timeout, _) => timeout,
            (false, Some(timeout), Some(cap)) => Some(timeout.min(cap)),
            (false, timeout, cap) => timeout.or(cap),
        }
    }
}

/// One detection: what a source did, for the log line and the block order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub source: IpAddr,
    pub kind: ScanKind,
    pub protocol: &'static str,
    /// Destination port, or for portless detections the IP protocol number.
    pub port: u16,
    /// The source's hit count including this packet.
    pub hits: u32,
}

/// What this packet's source did.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The source is on the ignore list: nothing is counted.
    Ignored,
    /// The source is already blocked: the packet is dropped, nothing new is reported.
    AlreadyBlocked,
    /// The source waits for a block token: the packet is dropped and counted towards its
    /// place in line, nothing new is reported.
    Waiting,
    /// Counted, below the trigger (or alert-only).
    Detected(Detection),
    /// Counted and past the trigger: the effects say whether it was blocked, held back or
    /// refused.
    Triggered(Detection),
}

/// A change to the blocks, for this packet's source or another: what the pipeline turns into
/// orders for the responder and log lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A block placed, lasting `term` (None: until removed).
    Blocked {
        detection: Detection,
        verified: bool,
        term: Option<Duration>,
    },
    /// Past the trigger without a token: the source waits for one, unless the queue is full
    /// of sources with more evidence.
    HeldBack { source: IpAddr, waiting: bool },
    /// A block given up before its end to make room for a new one.
    Evicted { source: IpAddr },
    /// Past the trigger, but the block table is full of verified blocks.
    Refused(Detection),
    /// A block whose time is up.
    Expired { source: IpAddr },
    /// A block made verified: it now lasts `term` from now (None: until removed).
    Verified {
        source: IpAddr,
        term: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub event: Event,
}

pub struct Engine {
    settings: EngineSettings,
    tracker: Tracker,
    blocks: BlockTable,
    waiting: WaitingQueue,
    /// None when new blocks are not rate-limited.
    bucket: Option<TokenBucket>,
    evicted_blocks: u64,
}

impl Engine {
    pub fn new(settings: EngineSettings) -> Self {
        let waiting_capacity = match settings.max_blocks_per_sec {
            Some(_) => WAITING_SOURCES_MAX,
            // Nothing ever waits without a rate cap.
            None => 1,
        };
        Engine {
            tracker: Tracker::new(settings.window, settings.max_sources),
            blocks: BlockTable::new(settings.max_blocks),
            waiting: WaitingQueue::new(waiting_capacity),
            bucket: settings.max_blocks_per_sec.map(TokenBucket::new),
            evicted_blocks: 0,
            settings,
        }
    }

    /// Marks sources blocked by an earlier run (or by another path) so they are not reported
    /// and ordered blocked again; `until` None is never.
    pub fn restore_blocked(&mut self, source: IpAddr, until: Option<Instant>, verified: bool) {
        self.blocks.insert(source, End(until), verified);
    }

    /// Takes a reloaded config's settings, keeping the tracked sources, the blocks and the
    /// sources waiting for a token. The tracker's window and bound and the rate cap size what
    /// was set up at start, so those of `settings` are not taken: they need a restart.
    pub fn reconfigure(&mut self, settings: EngineSettings) {
        let settings = EngineSettings {
            window: self.settings.window,
            max_sources: self.settings.max_sources,
            max_blocks_per_sec: self.settings.max_blocks_per_sec,
            ..settings
        };
        self.blocks.set_max(settings.max_blocks);
        self.settings = settings;
    }

    /// Lifts `source`'s block by hand and forgets its count, so that it is watched afresh and
    /// blocked again should it scan again. False when it was not blocked here.
    pub fn release(&mut self, source: &IpAddr) -> bool {
        self.tracker.forget(source);
        self.blocks.remove(source)
    }

    /// Lifts every block by hand; returns how many there were.
    pub fn release_all(&mut self) -> usize {
        self.blocks.clear()
    }

    /// Replaces the ignore list, e.g. when the host's own addresses change.
    pub fn set_ignore(&mut self, ignore: AddrSet) {
        self.settings.ignore = ignore;
    }

    /// Lifts `source`'s block before its end, because its address must never be blocked (it
    /// has just become the host's own, or a router's); it is not counted any more either.
    /// Returns whether it was blocked.
    pub fn release_protected(&mut self, source: IpAddr) -> bool {
        self.tracker.forget(&source);
        self.blocks.remove(&source)
    }

    /// The sources blocked now.
    pub fn blocked_sources(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.blocks.sources()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn blocked_count(&self) -> usize {
        self.blocks.len()
    }

    pub fn verified_blocks(&self) -> usize {
        self.blocks.verified_len()
    }

    pub fn unverified_blocks(&self) -> usize {
        self.blocks.unverified_len()
    }

    /// Blocks given up to make room for new ones since start.
    pub fn evicted_blocks(&self) -> u64 {
        self.evicted_blocks
    }

    /// Sources past the trigger waiting for a block token now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn tracked_sources(&self) -> usize {
        self.tracker.len()
    }

    pub fn evicted_sources(&self) -> u64 {
        self.tracker.evicted()
    }

    /// Decides about one classified packet; changes to the blocks (its source's or others')
    /// are appended to `effects`.
    pub fn observe(
        &mut self,
        packet: &Packet,
        kind: ScanKind,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let source = packet.src;
        if self.settings.ignore.contains(source) || source.is_unspecified() {
            return Outcome {
                verdict: Verdict::Accept,
                event: Event::Ignored,
            };
        }
        self.expire(now, effects);
        if self.blocks.contains(&source) {
            return Outcome {
                verdict: Verdict::Drop,
                event: Event::AlreadyBlocked,
            };
        }

        let (protocol, protocol_number, port) = match packet.transport {
            Transport::Tcp { dport, .. } => ("TCP", 6, dport),
            Transport::Udp { dport, .. } => ("UDP", 17, dport),
            Transport::Other { protocol } => ("IP", protocol, u16::from(protocol)),
        };
        let target = Target {
            protocol: protocol_number,
            port,
        };
        let hits = self.tracker.record(source, target, now);
        if self.waiting.contains(&source) {
            // A detected scanner: dropped, and its probing counts towards its place in line.
            self.waiting.raise(&source, hits);
            self.dispense(now, effects);
            return Outcome {
                verdict: Verdict::Drop,
                event: Event::Waiting,
            };
        }
        let detection = Detection {
            source,
            kind,
            protocol,
            port,
            hits,
        };

        if hits <= self.settings.scan_trigger || !self.settings.block {
            return Outcome {
                verdict: self.settings.verdict,
                event: Event::Detected(detection),
            };
        }
        let triggered = Outcome {
            verdict: Verdict::Drop,
            event: Event::Triggered(detection),
        };
        if self.blocks.room() == Room::None {
            effects.push(Effect::Refused(detection));
            return triggered;
        }
        let verified = self.tracker.is_verified(&source);
        if self.bucket.is_none() {
            self.place(detection, verified, now, effects);
            return triggered;
        }
        // In line first, then the tokens there are go to the best evidence, which may be this
        // source or one that waited.
        let joined = self.waiting.join(detection, verified);
        self.dispense(now, effects);
        if !self.blocks.contains(&source) {
            effects.push(Effect::HeldBack {
                source,
                waiting: joined != Joined::Turned,
            });
        }
        triggered
    }

    /// The work due without a packet: blocks whose time is up, tokens for waiting sources.
    /// Cheap when there is nothing to do; call it at least once a second.
    pub fn tick(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        self.expire(now, effects);
        self.dispense(now, effects);
    }

    /// `source` completed a TCP handshake with us at `now`: its address is its own. An
    /// unverified block becomes verified and lasts `block_timeout` from now; a waiting source
    /// goes to the front of the line; any other source is remembered as verified, so its block
    /// will be.
    pub fn verified(&mut self, source: IpAddr, now: Instant, effects: &mut Vec<Effect>) {
        if self.settings.ignore.contains(source) || source.is_unspecified() {
            return;
        }
        self.expire(now, effects);
        if let Some(left) = self.blocks.remaining(&source, now) {
            if self.blocks.is_verified(&source) {
                return;
            }
            if left.is_some_and(|left| left <= VERIFY_MARGIN) {
                self.tracker.mark_verified(source, now);
                return;
            }
            let term = self.settings.term(true);
            self.blocks.verify(&source, End::after(now, term));
            effects.push(Effect::Verified { source, term });
            return;
        }
        if self.waiting.contains(&source) {
            self.waiting.mark_verified(&source);
            self.dispense(now, effects);
            return;
        }
        self.tracker.mark_verified(source, now);
    }

    /// Takes the blocks whose time is up out of the table, so that they stop counting against
    /// `max_blocks` even when their source never sends again. O(1) when none is due.
    fn expire(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if self.blocks.next_end().map_or(true, |end| end > now) {
            return;
        }
        while let Some(source) = self.blocks.pop_due(now) {
            effects.push(Effect::Expired { source });
        }
    }

    /// Hands the tokens there are to the waiting sources, best evidence first.
    fn dispense(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        while !self.waiting.is_empty() && self.blocks.room() != Room::None {
            let Some(bucket) = self.bucket.as_mut() else {
                return;
            };
            if !bucket.try_take(now) {
                return;
            }
            let Some(next) = self.waiting.pop_best() else {
                return;
            };
            // It waited since before its address became one never blocked.
            if self.settings.ignore.contains(next.detection.source) {
                continue;
            }
            self.place(next.detection, next.verified, now, effects);
        }
    }

    /// Blocks `detection`'s source, giving up the unverified block nearest its end when the
    /// table is full. The caller has checked there is room one way or the other.
    fn place(
        &mut self,
        detection: Detection,
        verified: bool,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        if self.blocks.room() == Room::ByEviction {
            if let Some(source) = self.blocks.evict() {
                self.evicted_blocks += 1;
                effects.push(Effect::Evicted { source });
            }
        }
        let term = self.settings.term(verified);
        self.blocks
            .insert(detection.source, End::after(now, term), verified);
        self.tracker.forget(&detection.source);
        effects.push(Effect::Blocked {
            detection,
            verified,
            term,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{IpOptions, TcpFlags};
    use ipnet::IpNet;
    use std::net::Ipv4Addr;

    fn settings(trigger: u32) -> EngineSettings {
        let ignore: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
        EngineSettings {
            scan_trigger: trigger,
            window: Duration::from_secs(600),
            max_sources: NonZeroUsize::new(1024).unwrap(),
            max_blocks: 4,
            block_timeout: None,
            unverified_timeout: None,
            max_blocks_per_sec: None,
            verdict: Verdict::Drop,
            ignore: AddrSet::new(&ignore),
            block: true,
        }
    }

    fn rate(per_second: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(per_second)
    }

    fn syn(src: &str, dport: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: "203.0.113.1".parse().unwrap(),
            transport: Transport::Tcp {
                sport: 40000,
                dport,
                flags: TcpFlags(TcpFlags::SYN),
                connect_like: false,
            },
            ip_options: IpOptions::default(),
            header_words: 5,
        }
    }

    fn spoofed(i: u32) -> String {
        Ipv4Addr::from(0x0a00_0000 | i).to_string()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SCANNER: &str = "198.51.100.7";

    /// The engine takes the scan kind as given: naming it from the bytes is the pipeline's
    /// composition, and tested there.
    fn observe(engine: &mut Engine, packet: &Packet, now: Instant) -> (Outcome, Vec<Effect>) {
        let mut effects = Vec::new();
        let outcome = engine.observe(packet, ScanKind::SynNormal, now, &mut effects);
        (outcome, effects)
    }

    fn tick(engine: &mut Engine, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        engine.tick(now, &mut effects);
        effects
    }

    fn verified(engine: &mut Engine, source: &str, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        engine.verified(addr(source), now, &mut effects);
        effects
    }

    /// The sources blocked by these effects, in order.
    fn blocked(effects: &[Effect]) -> Vec<IpAddr> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Blocked { detection, .. } => Some(detection.source),
                _ => None,
            })
            .collect()
    }

    fn is_block(effects: &[Effect], source: &str) -> bool {
        blocked(effects) == [addr(source)]
    }

    #[test]
    fn portless_detections_name_the_ip_protocol_number_as_their_port() {
        let mut e = Engine::new(settings(1));
        let now = Instant::now();
        let icmp = Packet {
            transport: Transport::Other { protocol: 1 },
            ..syn(SCANNER, 0)
        };
        match observe(&mut e, &icmp, now).0.event {
            Event::Detected(d) => {
                assert_eq!(d.protocol, "IP");
                assert_eq!(d.port, 1);
            }
            other => panic!("expected a detection, got {other:?}"),
        }
        let (_, effects) = observe(&mut e, &syn(SCANNER, 1), now);
        assert!(
            is_block(&effects, SCANNER),
            "TCP port 1 is another target than IP protocol 1"
        );
    }

    #[test]
    fn trigger_two_blocks_on_the_third_distinct_port() {
        let mut e = Engine::new(settings(2));
        let now = Instant::now();
        for port in [1, 1, 2] {
            let (outcome, effects) = observe(&mut e, &syn(SCANNER, port), now);
            assert!(matches!(outcome.event, Event::Detected(_)));
            assert!(effects.is_empty());
        }
        let (outcome, effects) = observe(&mut e, &syn(SCANNER, 3), now);
        assert!(matches!(outcome.event, Event::Triggered(d) if d.hits == 3));
        assert_eq!(outcome.verdict, Verdict::Drop);
        assert!(is_block(&effects, SCANNER));
    }

    #[test]
    fn ignored_sources_are_accepted_and_never_counted() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        for port in 1..100 {
            let (out, effects) = observe(&mut e, &syn("192.0.2.50", port), now);
            assert_eq!(out.event, Event::Ignored);
            assert_eq!(out.verdict, Verdict::Accept);
            assert!(effects.is_empty());
        }
        assert!(verified(&mut e, "192.0.2.50", now).is_empty());
        assert_eq!(e.tracked_sources(), 0);
        assert_eq!(e.blocked_count(), 0);
    }

    #[test]
    fn a_source_released_by_hand_is_judged_afresh_and_can_be_blocked_again() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        let (_, effects) = observe(&mut e, &syn(SCANNER, 1), now);
        assert!(is_block(&effects, SCANNER));
        let (outcome, effects) = observe(&mut e, &syn(SCANNER, 2), now);
        assert_eq!(outcome.event, Event::AlreadyBlocked);
        assert!(effects.is_empty());
        e.release(&addr(SCANNER));
        assert_eq!(e.blocked_count(), 0);
        // Nothing expires later for a block that is gone.
        assert!(tick(&mut e, now + Duration::from_secs(86_400)).is_empty());
        let (_, effects) = observe(&mut e, &syn(SCANNER, 3), now);
        assert!(is_block(&effects, SCANNER));
    }

    #[test]
    fn a_block_with_a_timeout_ends_and_the_source_is_watched_again() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        assert!(is_block(
            &observe(&mut e, &syn(SCANNER, 1), start).1,
            SCANNER
        ));
        let during = start + Duration::from_secs(59);
        let (outcome, effects) = observe(&mut e, &syn(SCANNER, 2), during);
        assert_eq!(outcome.event, Event::AlreadyBlocked);
        assert!(effects.is_empty());
        let after = start + Duration::from_secs(61);
        let (_, effects) = observe(&mut e, &syn(SCANNER, 3), after);
        assert_eq!(
            effects[0],
            Effect::Expired {
                source: addr(SCANNER)
            }
        );
        assert!(matches!(effects[1], Effect::Blocked { .. }));
    }

    #[test]
    fn expired_blocks_leave_the_table_on_the_next_packet_or_tick() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        for i in 0..4 {
            observe(&mut e, &syn(&format!("198.51.100.{i}"), 1), start);
        }
        assert!(tick(&mut e, start + Duration::from_secs(59)).is_empty());
        let expired = tick(&mut e, start + Duration::from_secs(60));
        assert_eq!(expired.len(), 4);
        assert!(expired
            .iter()
            .all(|effect| matches!(effect, Effect::Expired { .. })));
        assert_eq!(e.blocked_count(), 0);
        assert!(tick(&mut e, start + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_timeout_beyond_the_clock_means_forever_not_a_panic() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(u64::MAX));
        let mut e = Engine::new(s);
        assert!(is_block(
            &observe(&mut e, &syn(SCANNER, 1), Instant::now()).1,
            SCANNER
        ));
        let (out, _) = observe(&mut e, &syn(SCANNER, 2), Instant::now());
        assert_eq!(out.event, Event::AlreadyBlocked);
    }

    #[test]
    fn alert_only_reports_but_never_blocks() {
        let mut s = settings(0);
        s.block = false;
        s.verdict = Verdict::Accept;
        let mut e = Engine::new(s);
        let (out, effects) = observe(&mut e, &syn(SCANNER, 1), Instant::now());
        assert!(matches!(out.event, Event::Detected(_)));
        assert_eq!(out.verdict, Verdict::Accept);
        assert!(effects.is_empty());
    }

    #[test]
    fn restored_blocks_are_not_ordered_again() {
        let mut e = Engine::new(settings(0));
        e.restore_blocked(addr(SCANNER), None, false);
        let (out, effects) = observe(&mut e, &syn(SCANNER, 1), Instant::now());
        assert_eq!(out.event, Event::AlreadyBlocked);
        assert!(effects.is_empty());
    }

    // ------------------------------------------------------------ durations by evidence

    #[test]
    fn a_blocks_term_follows_its_evidence() {
        let hour = Some(Duration::from_secs(3600));
        let day = Some(Duration::from_secs(86_400));
        let term = |block_timeout, unverified_timeout, verified| {
            let mut s = settings(0);
            s.block_timeout = block_timeout;
            s.unverified_timeout = unverified_timeout;
            s.term(verified)
        };
        assert_eq!(term(day, hour, true), day, "verified: block_timeout");
        assert_eq!(term(day, hour, false), hour, "unverified: capped");
        assert_eq!(term(hour, day, false), hour, "a cap above the timeout");
        assert_eq!(term(None, hour, false), hour, "forever, capped");
        assert_eq!(term(None, hour, true), None, "verified forever");
        assert_eq!(term(day, None, false), day, "no cap");
        assert_eq!(term(None, None, false), None);
    }

    #[test]
    fn a_stealth_block_is_unverified_and_lasts_the_capped_term() {
        let mut s = settings(0);
        s.block_timeout = None;
        s.unverified_timeout = Some(Duration::from_secs(3600));
        let mut e = Engine::new(s);
        let start = Instant::now();
        let (_, effects) = observe(&mut e, &syn(SCANNER, 1), start);
        assert!(matches!(
            effects.as_slice(),
            [Effect::Blocked { verified: false, term: Some(t), .. }] if t.as_secs() == 3600
        ));
        assert_eq!((e.verified_blocks(), e.unverified_blocks()), (0, 1));
        let expired = tick(&mut e, start + Duration::from_secs(3600));
        assert_eq!(
            expired,
            [Effect::Expired {
                source: addr(SCANNER)
            }]
        );
    }

    // ------------------------------------------------------------ verification

    #[test]
    fn a_handshake_upgrades_an_unverified_block_to_the_full_term() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(86_400));
        s.unverified_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        observe(&mut e, &syn(SCANNER, 1), start);
        let at = start + Duration::from_secs(30);
        assert_eq!(
            verified(&mut e, SCANNER, at),
            [Effect::Verified {
                source: addr(SCANNER),
                term: Some(Duration::from_secs(86_400))
            }]
        );
        assert_eq!((e.verified_blocks(), e.unverified_blocks()), (1, 0));
        assert!(verified(&mut e, SCANNER, at).is_empty(), "verified once");
        assert!(tick(&mut e, start + Duration::from_secs(3600)).is_empty());
        let end = at + Duration::from_secs(86_400);
        assert_eq!(
            tick(&mut e, end),
            [Effect::Expired {
                source: addr(SCANNER)
            }]
        );
    }

    #[test]
    fn a_block_about_to_end_is_not_upgraded_but_the_next_one_is_verified() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(86_400));
        s.unverified_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        observe(&mut e, &syn(SCANNER, 1), start);
        assert!(verified(&mut e, SCANNER, start + Duration::from_secs(59)).is_empty());
        let later = start + Duration::from_secs(61);
        let (_, effects) = observe(&mut e, &syn(SCANNER, 2), later);
        assert!(matches!(
            effects.as_slice(),
            [Effect::Expired { .. }, Effect::Blocked { verified: true, term: Some(t), .. }]
                if t.as_secs() == 86_400
        ));
    }

    #[test]
    fn a_source_verified_before_its_trigger_gets_a_verified_block() {
        let mut s = settings(1);
        s.block_timeout = Some(Duration::from_secs(86_400));
        s.unverified_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let now = Instant::now();
        observe(&mut e, &syn(SCANNER, 1), now);
        assert!(verified(&mut e, SCANNER, now).is_empty());
        let (_, effects) = observe(&mut e, &syn(SCANNER, 2), now);
        assert!(matches!(
            effects.as_slice(),
            [Effect::Blocked { verified: true, .. }]
        ));
    }

    // ------------------------------------------------------------ the block table bound

    #[test]
    fn a_full_table_evicts_the_unverified_block_nearest_its_end() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(3600));
        let mut e = Engine::new(s);
        let start = Instant::now();
        for i in 0..4u64 {
            let at = start + Duration::from_secs(i);
            observe(&mut e, &syn(&format!("198.51.100.{i}"), 1), at);
        }
        // The oldest block ends first, but a verified block is never given up.
        verified(&mut e, "198.51.100.0", start + Duration::from_secs(10));
        let (out, effects) = observe(
            &mut e,
            &syn("198.51.100.200", 1),
            start + Duration::from_secs(20),
        );
        assert_eq!(out.verdict, Verdict::Drop);
        assert_eq!(
            effects[0],
            Effect::Evicted {
                source: addr("198.51.100.1")
            }
        );
        assert!(is_block(&effects[1..], "198.51.100.200"));
        assert_eq!((e.blocked_count(), e.evicted_blocks()), (4, 1));
    }

    #[test]
    fn a_table_full_of_verified_blocks_refuses_and_still_drops() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        for i in 0..4 {
            let source = format!("198.51.100.{i}");
            observe(&mut e, &syn(&source, 1), now);
            verified(&mut e, &source, now);
        }
        let (out, effects) = observe(&mut e, &syn("198.51.100.200", 1), now);
        assert!(matches!(out.event, Event::Triggered(_)));
        assert_eq!(out.verdict, Verdict::Drop);
        assert!(matches!(effects.as_slice(), [Effect::Refused(_)]));
        assert_eq!(e.blocked_count(), 4);
    }

    // ------------------------------------------------------------ the rate cap

    #[test]
    fn new_blocks_take_tokens_and_the_rest_wait_in_line() {
        let mut s = settings(0);
        s.max_blocks = 1_000;
        s.max_blocks_per_sec = rate(2);
        let mut e = Engine::new(s);
        let start = Instant::now();
        let mut placed = Vec::new();
        for i in 0..10 {
            let (out, effects) = observe(&mut e, &syn(&spoofed(i), 80), start);
            assert_eq!(out.verdict, Verdict::Drop);
            placed.extend(blocked(&effects));
            if i >= 2 {
                assert!(matches!(
                    effects.as_slice(),
                    [Effect::HeldBack { waiting: true, .. }]
                ));
            }
        }
        assert_eq!(placed, [addr(&spoofed(0)), addr(&spoofed(1))]);
        assert_eq!(e.waiting(), 8);
        // A waiting source's packets are dropped without a new report.
        let (out, effects) = observe(&mut e, &syn(&spoofed(5), 80), start);
        assert_eq!((out.verdict, out.event), (Verdict::Drop, Event::Waiting));
        assert!(effects.is_empty());
        // Half a second later one token, to the one that waited longest.
        let half = tick(&mut e, start + Duration::from_millis(500));
        assert_eq!(blocked(&half), [addr(&spoofed(2))]);
        let later = tick(&mut e, start + Duration::from_secs(10));
        assert_eq!(blocked(&later).len(), 2, "one second's worth at most");
        assert_eq!(e.waiting(), 5);
    }

    #[test]
    fn a_scanner_probing_several_ports_is_blocked_ahead_of_a_spoofed_flood() {
        let mut s = settings(0);
        s.max_blocks = 1_000;
        s.max_blocks_per_sec = rate(1);
        let mut e = Engine::new(s);
        let start = Instant::now();
        // The first spoofed source takes the one token; the rest wait, the queue overflows.
        for i in 0..100_000 {
            observe(&mut e, &syn(&spoofed(i), 80), start);
        }
        assert_eq!(e.waiting(), WAITING_SOURCES_MAX);
        let mid = start + Duration::from_millis(100);
        for port in [1, 11, 111] {
            let (out, effects) = observe(&mut e, &syn(SCANNER, port), mid);
            assert_eq!(out.verdict, Verdict::Drop);
            assert!(blocked(&effects).is_empty());
        }
        for i in 100_000..200_000 {
            observe(&mut e, &syn(&spoofed(i), 80), mid);
        }
        let (_, effects) = observe(
            &mut e,
            &syn(&spoofed(1), 80),
            start + Duration::from_secs(1),
        );
        assert_eq!(blocked(&effects), [addr(SCANNER)], "the next token");
        assert!(matches!(
            effects.iter().find(|effect| matches!(effect, Effect::Blocked { .. })),
            Some(Effect::Blocked { detection, .. }) if detection.hits == 3 && detection.port == 1
        ));
    }

    #[test]
    fn a_verified_source_waiting_in_line_goes_first() {
        let mut s = settings(0);
        s.max_blocks_per_sec = rate(1);
        s.block_timeout = Some(Duration::from_secs(86_400));
        s.unverified_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        observe(&mut e, &syn(&spoofed(0), 80), start);
        observe(&mut e, &syn(&spoofed(1), 80), start);
        observe(&mut e, &syn(SCANNER, 80), start);
        assert!(verified(&mut e, SCANNER, start).is_empty(), "no token yet");
        let effects = tick(&mut e, start + Duration::from_secs(1));
        assert!(matches!(
            effects.as_slice(),
            [Effect::Blocked { detection, verified: true, term: Some(t) }]
                if detection.source == addr(SCANNER) && t.as_secs() == 86_400
        ));
    }

    #[test]
    fn a_source_turned_away_by_a_full_line_of_better_evidence_is_still_dropped() {
        let mut s = settings(0);
        s.max_blocks_per_sec = rate(1);
        let mut e = Engine::new(s);
        let start = Instant::now();
        observe(&mut e, &syn(&spoofed(0), 80), start); // takes the token
        for i in 1..=WAITING_SOURCES_MAX as u32 {
            let source = spoofed(i);
            observe(&mut e, &syn(&source, 1), start);
            observe(&mut e, &syn(&source, 2), start);
        }
        let (out, effects) = observe(&mut e, &syn(SCANNER, 1), start);
        assert_eq!(out.verdict, Verdict::Drop);
        assert!(matches!(
            effects.as_slice(),
            [Effect::HeldBack { waiting: false, .. }]
        ));
    }

    #[test]
    fn the_cap_holds_over_a_long_flood_with_evictions() {
        let mut s = settings(0);
        s.max_blocks = 200;
        s.max_blocks_per_sec = rate(50);
        s.unverified_timeout = Some(Duration::from_secs(3600));
        let mut e = Engine::new(s);
        let start = Instant::now();
        let (mut placed, mut evicted) = (0usize, 0usize);
        // 20 seconds of a 10k packets/s flood from new sources, ticking every 100 ms.
        for step in 0..200u32 {
            let now = start + Duration::from_millis(u64::from(step) * 100);
            for i in 0..1_000 {
                let (_, effects) = observe(&mut e, &syn(&spoofed(step * 1_000 + i), 80), now);
                placed += blocked(&effects).len();
                evicted += effects
                    .iter()
                    .filter(|effect| matches!(effect, Effect::Evicted { .. }))
                    .count();
                assert!(e.blocked_count() <= 200);
            }
            tick(&mut e, now);
        }
        // One second saved up, then 50 a second.
        assert!((990..=1_050).contains(&placed), "{placed}");
        assert_eq!(evicted, placed - 200);
        assert_eq!(e.evicted_blocks() as usize, evicted);
    }
}
