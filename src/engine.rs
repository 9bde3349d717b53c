//! The decision core: one classified packet and the current time in, a verdict and what to do
//! about its source out.
//!
//! No I/O, no clock, no kernel: the pipeline feeds it, and tests drive it on a fake clock. It
//! remembers which sources it has ordered blocked so that packets already queued behind the
//! triggering one are dropped without waiting for the firewall, and so that one scanner yields
//! one block order, not one per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::addrset::AddrSet;
use crate::config::Verdict;
use crate::packet::{Packet, ScanKind, Transport};
use crate::tracker::{Target, Tracker};

/// How the engine is tuned; built by the pipeline from the validated config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// React on hit number `scan_trigger + 1` (PortSentry's meaning).
    pub scan_trigger: u32,
    pub window: Duration,
    pub max_sources: NonZeroUsize,
    pub max_blocks: usize,
    pub block_timeout: Option<Duration>,
    /// Verdict for queued packets from sources that are watched but not (yet) blocked.
    pub verdict: Verdict,
    /// Sources never counted nor blocked: the configured ignore list plus the host's own
    /// addresses.
    pub ignore: AddrSet,
    /// When false, detections are reported but nothing is blocked (alert-only).
    pub block: bool,
}

/// One detection: what a source did, for the log line and the block order.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub source: IpAddr,
    pub kind: ScanKind,
    pub protocol: &'static str,
    /// Destination port, or for portless detections the IP protocol number.
    pub port: u16,
    /// The source's hit count including this packet.
    pub hits: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The source is on the ignore list: nothing is counted.
    Ignored,
    /// The source is already blocked: the packet is dropped, nothing new is reported.
    AlreadyBlocked,
    /// Counted, below the trigger.
    Detected(Detection),
    /// Counted and past the trigger: block the source.
    Block(Detection),
    /// Past the trigger, but `max_blocks` sources are blocked already.
    BlockRefused(Detection),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub event: Event,
}

pub struct Engine {
    settings: EngineSettings,
    tracker: Tracker,
    /// Blocked sources and when their block ends (None: never).
    blocked: HashMap<IpAddr, Option<Instant>>,
}

impl Engine {
    pub fn new(settings: EngineSettings) -> Self {
        Engine {
            tracker: Tracker::new(settings.window, settings.max_sources),
            blocked: HashMap::new(),
            settings,
        }
    }

    /// Marks sources blocked by an earlier run (or by another path) so they are not reported
    /// and ordered blocked again.
    pub fn restore_blocked(&mut self, source: IpAddr, until: Option<Instant>) {
        self.blocked.insert(source, until);
    }

    /// Forgets the block of a source released by hand, so that it is judged afresh.
    pub fn release(&mut self, source: &IpAddr) {
        self.blocked.remove(source);
    }

    /// Forgets blocks whose time is up, so that they stop counting against `max_blocks` even
    /// when their source never sends again. O(blocked): call it on a timer, not per packet.
    pub fn expire(&mut self, now: Instant) {
        self.blocked
            .retain(|_, until| !matches!(until, Some(until) if *until <= now));
    }

    /// Replaces the ignore list, e.g. when the host's own addresses change.
    pub fn set_ignore(&mut self, ignore: AddrSet) {
        self.settings.ignore = ignore;
    }

    pub fn blocked_count(&self) -> usize {
        self.blocked.len()
    }

    pub fn tracked_sources(&self) -> usize {
        self.tracker.len()
    }

    pub fn evicted_sources(&self) -> u64 {
        self.tracker.evicted()
    }

    /// Decides about one classified packet.
    pub fn observe(&mut self, packet: &Packet, kind: ScanKind, now: Instant) -> Outcome {
        let source = packet.src;
        if self.settings.ignore.contains(source) || source.is_unspecified() {
            return Outcome {
                verdict: Verdict::Accept,
                event: Event::Ignored,
            };
        }
        if self.is_blocked(&source, now) {
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
        if self.blocked.len() >= self.settings.max_blocks {
            return Outcome {
                verdict: Verdict::Drop,
                event: Event::BlockRefused(detection),
            };
        }
        // A timeout too long for the clock to represent is as good as forever.
        let until = self.settings.block_timeout.and_then(|t| now.checked_add(t));
        self.blocked.insert(source, until);
        self.tracker.forget(&source);
        Outcome {
            verdict: Verdict::Drop,
            event: Event::Block(detection),
        }
    }

    fn is_blocked(&mut self, source: &IpAddr, now: Instant) -> bool {
        match self.blocked.get(source) {
            None => false,
            Some(Some(until)) if *until <= now => {
                self.blocked.remove(source);
                false
            }
            Some(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{IpOptions, TcpFlags};
    use ipnet::IpNet;

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
            verdict: Verdict::Drop,
            ignore: AddrSet::new(&ignore),
            block: true,
        }
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

    /// The engine takes the scan kind as given: naming it from the bytes is the pipeline's
    /// composition, and tested there.
    fn observe(engine: &mut Engine, packet: &Packet, now: Instant) -> Outcome {
        engine.observe(packet, ScanKind::SynNormal, now)
    }

    #[test]
    fn portless_detections_name_the_ip_protocol_number_as_their_port() {
        let mut e = Engine::new(settings(1));
        let now = Instant::now();
        let icmp = Packet {
            transport: Transport::Other { protocol: 1 },
            ..syn("198.51.100.7", 0)
        };
        match observe(&mut e, &icmp, now).event {
            Event::Detected(d) => {
                assert_eq!(d.protocol, "IP");
                assert_eq!(d.port, 1);
            }
            other => panic!("expected a detection, got {other:?}"),
        }
        let tcp_port_1 = observe(&mut e, &syn("198.51.100.7", 1), now);
        assert!(
            matches!(tcp_port_1.event, Event::Block(_)),
            "TCP port 1 is another target than IP protocol 1"
        );
    }

    #[test]
    fn trigger_two_blocks_on_the_third_distinct_port() {
        let mut e = Engine::new(settings(2));
        let now = Instant::now();
        let src = "198.51.100.7";
        assert!(matches!(
            observe(&mut e, &syn(src, 1), now).event,
            Event::Detected(_)
        ));
        assert!(matches!(
            observe(&mut e, &syn(src, 1), now).event,
            Event::Detected(_)
        ));
        assert!(matches!(
            observe(&mut e, &syn(src, 2), now).event,
            Event::Detected(_)
        ));
        assert!(matches!(
            observe(&mut e, &syn(src, 3), now).event,
            Event::Block(_)
        ));
    }

    #[test]
    fn ignored_sources_are_accepted_and_never_counted() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        for port in 1..100 {
            let out = observe(&mut e, &syn("192.0.2.50", port), now);
            assert_eq!(out.event, Event::Ignored);
            assert_eq!(out.verdict, Verdict::Accept);
        }
        assert_eq!(e.tracked_sources(), 0);
        assert_eq!(e.blocked_count(), 0);
    }

    #[test]
    fn a_source_released_by_hand_is_judged_afresh_and_can_be_blocked_again() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        let src = "198.51.100.7";
        assert!(matches!(
            observe(&mut e, &syn(src, 1), now).event,
            Event::Block(_)
        ));
        assert_eq!(
            observe(&mut e, &syn(src, 2), now).event,
            Event::AlreadyBlocked
        );
        e.release(&src.parse().unwrap());
        assert_eq!(e.blocked_count(), 0);
        assert!(matches!(
            observe(&mut e, &syn(src, 3), now).event,
            Event::Block(_)
        ));
    }

    #[test]
    fn a_block_with_a_timeout_ends_and_the_source_is_watched_again() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        assert!(matches!(
            observe(&mut e, &syn("198.51.100.7", 1), start).event,
            Event::Block(_)
        ));
        let during = start + Duration::from_secs(59);
        assert_eq!(
            observe(&mut e, &syn("198.51.100.7", 2), during).event,
            Event::AlreadyBlocked
        );
        let after = start + Duration::from_secs(61);
        assert!(matches!(
            observe(&mut e, &syn("198.51.100.7", 3), after).event,
            Event::Block(_)
        ));
    }

    #[test]
    fn expired_blocks_stop_counting_against_the_table_bound() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(60));
        let mut e = Engine::new(s);
        let start = Instant::now();
        for i in 0..4 {
            let out = observe(&mut e, &syn(&format!("198.51.100.{i}"), 1), start);
            assert!(matches!(out.event, Event::Block(_)));
        }
        let later = start + Duration::from_secs(3600);
        let out = observe(&mut e, &syn("198.51.100.200", 1), later);
        assert!(matches!(out.event, Event::BlockRefused(_)), "not swept yet");
        e.expire(later);
        assert_eq!(e.blocked_count(), 0);
        let out = observe(&mut e, &syn("198.51.100.201", 1), later);
        assert!(matches!(out.event, Event::Block(_)));
    }

    #[test]
    fn a_timeout_beyond_the_clock_means_forever_not_a_panic() {
        let mut s = settings(0);
        s.block_timeout = Some(Duration::from_secs(u64::MAX));
        let mut e = Engine::new(s);
        let out = observe(&mut e, &syn("198.51.100.7", 1), Instant::now());
        assert!(matches!(out.event, Event::Block(_)));
        let out = observe(&mut e, &syn("198.51.100.7", 2), Instant::now());
        assert_eq!(out.event, Event::AlreadyBlocked);
    }

    #[test]
    fn the_block_table_is_bounded() {
        let mut e = Engine::new(settings(0));
        let now = Instant::now();
        for i in 0..4 {
            let out = observe(&mut e, &syn(&format!("198.51.100.{i}"), 1), now);
            assert!(matches!(out.event, Event::Block(_)));
        }
        let out = observe(&mut e, &syn("198.51.100.200", 1), now);
        assert!(matches!(out.event, Event::BlockRefused(_)));
        assert_eq!(out.verdict, Verdict::Drop);
        assert_eq!(e.blocked_count(), 4);
    }

    #[test]
    fn alert_only_reports_but_never_blocks() {
        let mut s = settings(0);
        s.block = false;
        s.verdict = Verdict::Accept;
        let mut e = Engine::new(s);
        let out = observe(&mut e, &syn("198.51.100.7", 1), Instant::now());
        assert!(matches!(out.event, Event::Detected(_)));
        assert_eq!(out.verdict, Verdict::Accept);
    }

    #[test]
    fn restored_blocks_are_not_ordered_again() {
        let mut e = Engine::new(settings(0));
        e.restore_blocked("198.51.100.7".parse().unwrap(), None);
        let out = observe(&mut e, &syn("198.51.100.7", 1), Instant::now());
        assert_eq!(out.event, Event::AlreadyBlocked);
    }
}
