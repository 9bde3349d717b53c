//! The per-packet path: the bytes of one packet, how they arrived and the time in; the verdict
//! for the kernel, the block order for the responder and the log lines to write out.
//!
//! It joins parse → classify → engine and adds what the engine leaves to its caller: the alert
//! limiter (a spoofed flood must not flood the log too), block orders with their history lines,
//! and the counters of the status line. It does no I/O and reads no clock: the daemon passes
//! the time in and carries out what comes back, and the tests run it on a fake clock.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use log::Level;

use crate::addrset::AddrSet;
use crate::config::{Config, Verdict};
use crate::engine::{Detection, Engine, EngineSettings, Event};
use crate::packet::{self, ParseError};
use crate::report;
use crate::store::{self, BlockRecord};

/// Most alert lines let through per [`ALERT_SPAN`].
const ALERT_LINES_PER_SPAN: u32 = 200;
/// The span the alert budget covers; what it holds back is summed up once it ends.
const ALERT_SPAN: Duration = Duration::from_secs(1);

/// How a packet reached nfsentry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// From the NFQUEUE: the kernel holds the packet until it gets a verdict.
    Queued,
    /// From NFLOG: an IPv4 header shorter than 5 words, which the kernel drops anyway. There is
    /// no verdict to give, only a source to count.
    ShortHeaderLog,
}

impl Arrival {
    fn noun(self) -> &'static str {
        match self {
            Arrival::Queued => "queued packet",
            Arrival::ShortHeaderLog => "short-header packet",
        }
    }
}

/// What became of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The answer for the kernel: always present for a queued packet (the configured verdict
    /// when the bytes cannot be read), never for a logged one.
    pub verdict: Option<Verdict>,
    /// The block to carry out, when this packet took its source past the trigger.
    pub block: Option<BlockOrder>,
    /// Lines to write, in order; empty, and not allocated, for most packets.
    pub lines: Vec<LogLine>,
}

/// A block for the responder to carry out: the journal record and the PortSentry history line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOrder {
    pub record: BlockRecord,
    pub history_line: String,
}

/// A log line, kept as data until it is written: the text is only built if the logger wants
/// the line's level.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// `attackalert: SYN/Normal scan from host: ...`, in PortSentry's words.
    Detection(Detection),
    /// A source past the trigger that the full block table could not take.
    BlockTableFull(IpAddr),
    /// How many alert lines the limiter held back in the span that just ended.
    Suppressed(u64),
    /// Bytes that could not be read as an IP packet: counted, never alerted on.
    Unreadable {
        arrival: Arrival,
        bytes: usize,
        error: ParseError,
    },
}

impl LogLine {
    pub fn level(&self) -> Level {
        match self {
            LogLine::Detection(_) | LogLine::Suppressed(_) => Level::Warn,
            LogLine::BlockTableFull(_) => Level::Error,
            LogLine::Unreadable { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLine::Detection(d) => f.write_str(&report::detection_line(d)),
            LogLine::BlockTableFull(source) => write!(
                f,
                "block table full: {source} is not blocked (raise respond.max_blocks?)"
            ),
            LogLine::Suppressed(count) => write!(
                f,
                "{count} alert lines suppressed in the last second (flood of sources?)"
            ),
            LogLine::Unreadable {
                arrival,
                bytes,
                error,
            } => write!(f, "malformed {} ({bytes} bytes): {error}", arrival.noun()),
        }
    }
}

/// The counters of the status line, as of one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub queued: u64,
    pub short_headers_logged: u64,
    pub malformed: u64,
    pub detections: u64,
    pub blocks_ordered: u64,
    /// Blocks refused because the block table was full.
    pub blocks_refused: u64,
    pub blocked_now: usize,
    pub sources_tracked: usize,
    pub sources_evicted: u64,
    pub alert_lines_suppressed: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets queued, {} short headers logged, {} malformed, {} detections, \
             {} blocks ordered, {} refused (table full), {} blocked now, {} sources tracked, \
             {} evicted, {} alert lines suppressed",
            self.queued,
            self.short_headers_logged,
            self.malformed,
            self.detections,
            self.blocks_ordered,
            self.blocks_refused,
            self.blocked_now,
            self.sources_tracked,
            self.sources_evicted,
            self.alert_lines_suppressed
        )
    }
}

/// The counters the pipeline itself keeps; the engine keeps the table sizes.
#[derive(Debug, Default)]
struct Stats {
    queued: u64,
    logged_short: u64,
    malformed: u64,
    detections: u64,
    blocks: u64,
    refused: u64,
}

/// Owns the engine and everything between it and the daemon's I/O.
pub struct Pipeline {
    engine: Engine,
    configured_ignore: Vec<IpNet>,
    /// The host's own addresses as last given; ignored like the configured list.
    local: Vec<IpAddr>,
    block_timeout: Option<Duration>,
    /// For queued packets whose bytes cannot be read.
    unreadable_verdict: Verdict,
    alerts: AlertLimiter,
    stats: Stats,
}

impl Pipeline {
    /// `local`: the host's own addresses, never counted nor blocked.
    pub fn new(config: &Config, local: Vec<IpAddr>) -> Pipeline {
        let settings = EngineSettings {
            scan_trigger: config.detect.scan_trigger,
            window: config.detect.window,
            max_sources: NonZeroUsize::new(config.detect.max_sources).unwrap_or(NonZeroUsize::MIN),
            max_blocks: config.respond.max_blocks,
            block_timeout: config.respond.block_timeout,
            verdict: config.respond.verdict,
            ignore: ignore_set(&config.detect.ignore, &local),
            block: !config.respond.actions.is_empty(),
        };
        Pipeline {
            engine: Engine::new(settings),
            configured_ignore: config.detect.ignore.clone(),
            local,
            block_timeout: config.respond.block_timeout,
            unreadable_verdict: config.respond.verdict,
            alerts: AlertLimiter::new(ALERT_LINES_PER_SPAN),
            stats: Stats::default(),
        }
    }

    /// Parses, classifies and decides about one packet that arrived at `now`; `wall_clock` is
    /// the same moment for the block record and the history line.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        arrival: Arrival,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Handled {
        let mut handled = Handled {
            verdict: None,
            block: None,
            lines: Vec::new(),
        };
        match arrival {
            Arrival::Queued => self.stats.queued += 1,
            Arrival::ShortHeaderLog => self.stats.logged_short += 1,
        }
        let verdict = match packet::parse(bytes) {
            Ok(parsed) => {
                let kind = packet::classify(&parsed);
                let outcome = self.engine.observe(&parsed, kind, now);
                self.act_on(outcome.event, now, wall_clock, &mut handled);
                outcome.verdict
            }
            Err(error) => {
                self.stats.malformed += 1;
                handled.lines.push(LogLine::Unreadable {
                    arrival,
                    bytes: bytes.len(),
                    error,
                });
                self.unreadable_verdict
            }
        };
        if arrival == Arrival::Queued {
            handled.verdict = Some(verdict);
        }
        handled
    }

    /// Call at least once a second: when an alert span has ended with lines held back, the
    /// line that says how many. Without it a flood that stops would never be summed up.
    pub fn tick(&mut self, now: Instant) -> Option<LogLine> {
        self.alerts.roll_over(now).map(LogLine::Suppressed)
    }

    /// Forgets blocks whose time is up, so that they stop counting against `max_blocks`.
    /// O(blocked): call it on a timer, not per packet.
    pub fn expire(&mut self, now: Instant) {
        self.engine.expire(now);
    }

    /// Forgets the block of a source released by hand: its packets are judged afresh, and it
    /// can be blocked again.
    pub fn release(&mut self, source: IpAddr) {
        self.engine.release(&source);
    }

    /// Follows the host's own addresses (DHCP, rotating IPv6 temporary addresses) so that a
    /// packet spoofed from a new one cannot get the host blocked from itself. Returns whether
    /// they changed.
    pub fn set_local_addresses(&mut self, local: Vec<IpAddr>) -> bool {
        if local == self.local {
            return false;
        }
        self.engine
            .set_ignore(ignore_set(&self.configured_ignore, &local));
        self.local = local;
        true
    }

    /// The host's own addresses as last given.
    pub fn local_addresses(&self) -> &[IpAddr] {
        &self.local
    }

    /// Marks the blocks an earlier run placed, so their sources are dropped and not ordered
    /// blocked again; each ends when its record says, translated from `wall_clock` to `now`.
    pub fn restore_blocked(
        &mut self,
        blocks: &[BlockRecord],
        now: Instant,
        wall_clock: SystemTime,
    ) {
        for block in blocks {
            // A block that outlasts what the clock can represent is as good as forever.
            let until = block
                .remaining(wall_clock)
                .and_then(|left| now.checked_add(left));
            self.engine.restore_blocked(block.source, until);
        }
    }

    pub fn status(&self) -> Status {
        Status {
            queued: self.stats.queued,
            short_headers_logged: self.stats.logged_short,
            malformed: self.stats.malformed,
            detections: self.stats.detections,
            blocks_ordered: self.stats.blocks,
            blocks_refused: self.stats.refused,
            blocked_now: self.engine.blocked_count(),
            sources_tracked: self.engine.tracked_sources(),
            sources_evicted: self.engine.evicted_sources(),
            alert_lines_suppressed: self.alerts.suppressed_total,
        }
    }

    fn act_on(&mut self, event: Event, now: Instant, wall_clock: SystemTime, out: &mut Handled) {
        match event {
            Event::Ignored | Event::AlreadyBlocked => {}
            Event::Detected(d) => {
                self.stats.detections += 1;
                self.alert(d, now, &mut out.lines);
            }
            Event::Block(d) => {
                self.stats.detections += 1;
                self.stats.blocks += 1;
                out.block = Some(block_order(&d, self.block_timeout, wall_clock));
                self.alert(d, now, &mut out.lines);
            }
            Event::BlockRefused(d) => {
                self.stats.detections += 1;
                self.stats.refused += 1;
                let source = d.source;
                self.alert(d, now, &mut out.lines);
                if self.alerts.allow(now, &mut out.lines) {
                    out.lines.push(LogLine::BlockTableFull(source));
                }
            }
        }
    }

    fn alert(&mut self, d: Detection, now: Instant, lines: &mut Vec<LogLine>) {
        if self.alerts.allow(now, lines) {
            lines.push(LogLine::Detection(d));
        }
    }
}

/// The responder's order for blocking `d`'s source at `wall_clock`.
fn block_order(
    d: &Detection,
    block_timeout: Option<Duration>,
    wall_clock: SystemTime,
) -> BlockOrder {
    let added = store::unix_seconds(wall_clock);
    BlockOrder {
        record: BlockRecord {
            source: d.source,
            added,
            // The journal counts whole seconds: a timeout under one must still outlast the
            // moment it was placed, or the block would be due as soon as it is written.
            expires: block_timeout.map(|t| added.saturating_add(t.as_secs().max(1))),
            protocol: d.protocol.to_string(),
            port: d.port,
            kind: d.kind.word().to_string(),
        },
        history_line: report::history_line(wall_clock, d.source, d.protocol, d.port),
    }
}

/// The configured ignore list plus the host's own addresses.
fn ignore_set(configured: &[IpNet], local: &[IpAddr]) -> AddrSet {
    let own: Vec<IpNet> = local.iter().map(|&a| IpNet::from(a)).collect();
    AddrSet::new(configured.iter().chain(&own))
}

/// At most `per_span` lines in each [`ALERT_SPAN`]; what is held back is counted, and the count
/// is handed out once the span ends.
#[derive(Debug)]
struct AlertLimiter {
    per_span: u32,
    /// When the current span began; none before the first line or tick.
    span_start: Option<Instant>,
    used: u32,
    suppressed: u64,
    suppressed_total: u64,
}

impl AlertLimiter {
    fn new(per_span: u32) -> Self {
        AlertLimiter {
            per_span,
            span_start: None,
            used: 0,
            suppressed: 0,
            suppressed_total: 0,
        }
    }

    /// Whether one more line may go out at `now`. A span that ends here leaves its summary
    /// line in `lines` first.
    fn allow(&mut self, now: Instant, lines: &mut Vec<LogLine>) -> bool {
        if let Some(held_back) = self.roll_over(now) {
            lines.push(LogLine::Suppressed(held_back));
        }
        if self.used < self.per_span {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }

    /// Starts a new span if the current one is over; returns how many lines the finished span
    /// held back, if any.
    fn roll_over(&mut self, now: Instant) -> Option<u64> {
        if let Some(start) = self.span_start {
            if now.saturating_duration_since(start) < ALERT_SPAN {
                return None;
            }
        }
        let held_back = self.suppressed;
        self.span_start = Some(now);
        self.used = 0;
        self.suppressed = 0;
        (held_back > 0).then_some(held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ActionKind;
    use crate::packet::ScanKind;
    use std::net::Ipv4Addr;
    use std::time::UNIX_EPOCH;

    const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    /// An IPv4 header of 4 words (IHL 4) from 198.51.100.7, protocol TCP: a short-header probe
    /// as NFLOG hands it over.
    const V4_IHL_4: &str =
        "440000281c46000034067e45c6336407c000020a9c4000170102030400000000500004001f420000";

    /// An nmap -sS SYN (IPv4, MSS option only) from `src` to 203.0.113.1 port `dport`.
    fn syn(src: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x00, 0x00, 0x30, 0x06, 0x00,
            0x00, // ver..csum
            0, 0, 0, 0, // src
            203, 0, 113, 1, // dst
            0xd4, 0x31, 0, 0, // sport, dport
            0, 0, 0, 1, 0, 0, 0, 0, // seq, ack
            0x60, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // off=6, SYN, win, csum, urg
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
        ];
        p[12..16].copy_from_slice(&src.octets());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The built-in defaults with `scan_trigger` and a small block table; ignores 192.0.2.0/24
    /// as well, like the engine's tests.
    fn config(trigger: u32) -> Config {
        let mut config = Config::defaults();
        config.detect.scan_trigger = trigger;
        config.detect.ignore.push("192.0.2.0/24".parse().unwrap());
        config.respond.max_blocks = 4;
        config
    }

    /// A fake clock: both clocks at one moment, moved forward together.
    #[derive(Clone, Copy)]
    struct Clock {
        now: Instant,
        wall: SystemTime,
    }

    impl Clock {
        fn start() -> Clock {
            Clock {
                now: Instant::now(),
                wall: UNIX_EPOCH + Duration::from_secs(1_795_564_518),
            }
        }

        fn after(self, seconds: f64) -> Clock {
            let step = Duration::from_secs_f64(seconds);
            Clock {
                now: self.now + step,
                wall: self.wall + step,
            }
        }
    }

    fn queued(p: &mut Pipeline, bytes: &[u8], at: Clock) -> Handled {
        p.handle(bytes, Arrival::Queued, at.now, at.wall)
    }

    fn texts(handled: &Handled) -> Vec<(Level, String)> {
        handled
            .lines
            .iter()
            .map(|line| (line.level(), line.to_string()))
            .collect()
    }

    // ------------------------------------------------------------ parse, classify, decide

    #[test]
    fn trigger_zero_blocks_on_the_first_hit_and_drops_it() {
        let mut p = Pipeline::new(&config(0), Vec::new());
        let at = Clock::start();
        let out = queued(&mut p, &syn(SCANNER, 23), at);
        assert_eq!(out.verdict, Some(Verdict::Drop));
        match out.lines.as_slice() {
            [LogLine::Detection(d)] => {
                assert_eq!(d.kind, ScanKind::SynNormal);
                assert_eq!(d.protocol, "TCP");
                assert_eq!(d.port, 23);
                assert_eq!(d.hits, 1);
            }
            other => panic!("expected one detection line, got {other:?}"),
        }
        assert_eq!(
            texts(&out),
            [(
                Level::Warn,
                "attackalert: SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 23"
                    .to_owned()
            )]
        );
        let order = out.block.expect("a block order");
        assert_eq!(order.record.source, IpAddr::V4(SCANNER));
        assert_eq!(order.record.port, 23);

        let again = queued(&mut p, &syn(SCANNER, 24), at);
        assert_eq!(again.verdict, Some(Verdict::Drop));
        assert_eq!(again.block, None, "one scanner, one block order");
        assert!(
            again.lines.is_empty(),
            "already blocked: nothing new to say"
        );
        let status = p.status();
        assert_eq!((status.queued, status.detections), (2, 1));
        assert_eq!((status.blocks_ordered, status.blocked_now), (1, 1));
    }

    #[test]
    fn below_the_trigger_the_configured_verdict_applies() {
        let mut c = config(2);
        c.respond.verdict = Verdict::Accept;
        let mut p = Pipeline::new(&c, Vec::new());
        let at = Clock::start();
        for port in [1, 2] {
            let out = queued(&mut p, &syn(SCANNER, port), at);
            assert_eq!(out.verdict, Some(Verdict::Accept));
            assert_eq!(out.block, None);
            assert_eq!(out.lines.len(), 1);
        }
        let out = queued(&mut p, &syn(SCANNER, 3), at);
        assert_eq!(
            out.verdict,
            Some(Verdict::Drop),
            "the triggering packet is dropped"
        );
        assert!(out.block.is_some());
    }

    #[test]
    fn a_short_header_from_nflog_gets_no_verdict_and_names_the_ip_protocol() {
        let mut p = Pipeline::new(&config(0), Vec::new());
        let at = Clock::start();
        let out = p.handle(&hex(V4_IHL_4), Arrival::ShortHeaderLog, at.now, at.wall);
        assert_eq!(out.verdict, None);
        assert_eq!(
            texts(&out),
            [(
                Level::Warn,
                "attackalert: Bad-IP-header-length (4 words) scan from host: \
                 198.51.100.7/198.51.100.7 to IP protocol: 6"
                    .to_owned()
            )]
        );
        let order = out.block.expect("a block order");
        assert_eq!(order.record.protocol, "IP");
        assert_eq!(order.record.port, 6, "portless: the IP protocol number");
        assert_eq!(order.record.kind, "Bad-IP-header-length");
        assert!(order.history_line.ends_with(" Port: 6 IP Blocked"));
        let status = p.status();
        assert_eq!((status.queued, status.short_headers_logged), (0, 1));
    }

    #[test]
    fn unreadable_bytes_get_the_configured_verdict_and_a_debug_line() {
        let mut c = config(0);
        c.respond.verdict = Verdict::Accept;
        let mut p = Pipeline::new(&c, Vec::new());
        let at = Clock::start();
        let out = queued(&mut p, &[0x45, 0x00, 0x00], at);
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!(out.block, None);
        assert_eq!(
            texts(&out),
            [(
                Level::Debug,
                "malformed queued packet (3 bytes): packet truncated: 20 bytes needed to read \
                 the IP header, 3 captured"
                    .to_owned()
            )]
        );
        let logged = p.handle(&[], Arrival::ShortHeaderLog, at.now, at.wall);
        assert_eq!(logged.verdict, None);
        assert_eq!(
            logged.lines[0].to_string(),
            "malformed short-header packet (0 bytes): empty packet"
        );
        assert_eq!(p.status().malformed, 2);
    }

    #[test]
    fn alert_only_reports_but_orders_no_block() {
        let mut c = config(0);
        c.respond.actions = Vec::new();
        c.respond.verdict = Verdict::Accept;
        let mut p = Pipeline::new(&c, Vec::new());
        let out = queued(&mut p, &syn(SCANNER, 1), Clock::start());
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!(out.block, None);
        assert!(matches!(out.lines.as_slice(), [LogLine::Detection(_)]));
        assert_eq!(p.status().blocks_ordered, 0);
    }

    #[test]
    fn a_full_block_table_refuses_says_so_and_still_drops() {
        let mut p = Pipeline::new(&config(0), Vec::new());
        let at = Clock::start();
        for i in 0..4 {
            assert!(queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, i), 1), at)
                .block
                .is_some());
        }
        let out = queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, 200), 1), at);
        assert_eq!(out.verdict, Some(Verdict::Drop));
        assert_eq!(out.block, None);
        let lines = texts(&out);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].0, Level::Warn);
        assert_eq!(
            lines[1],
            (
                Level::Error,
                "block table full: 198.51.100.200 is not blocked (raise respond.max_blocks?)"
                    .to_owned()
            )
        );
        let status = p.status();
        assert_eq!((status.blocks_refused, status.blocked_now), (1, 4));
        assert_eq!(status.detections, 5);
    }

    #[test]
    fn expired_blocks_leave_the_table_on_expire() {
        let mut c = config(0);
        c.respond.block_timeout = Some(Duration::from_secs(60));
        let mut p = Pipeline::new(&c, Vec::new());
        let start = Clock::start();
        for i in 0..4 {
            queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, i), 1), start);
        }
        let later = start.after(3600.0);
        let out = queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, 200), 1), later);
        assert_eq!(out.block, None, "not swept yet");
        p.expire(later.now);
        assert_eq!(p.status().blocked_now, 0);
        let out = queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, 201), 1), later);
        assert!(out.block.is_some());
    }

    // ------------------------------------------------------------ the host's own addresses

    #[test]
    fn the_hosts_own_addresses_are_never_counted_and_follow_changes() {
        let own = IpAddr::V4(SCANNER);
        let mut p = Pipeline::new(&config(0), vec![own]);
        let at = Clock::start();
        let out = queued(&mut p, &syn(SCANNER, 1), at);
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!((out.block, out.lines.len()), (None, 0));
        assert_eq!(p.status().sources_tracked, 0);

        assert!(!p.set_local_addresses(vec![own]), "unchanged");
        assert!(p.set_local_addresses(vec!["2001:db8::1".parse().unwrap()]));
        assert_eq!(
            p.local_addresses(),
            ["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
        assert!(queued(&mut p, &syn(SCANNER, 1), at).block.is_some());
        // The configured list stays in force after the change.
        let ignored = queued(&mut p, &syn(Ipv4Addr::new(192, 0, 2, 50), 1), at);
        assert_eq!(ignored.verdict, Some(Verdict::Accept));
        assert_eq!(ignored.block, None);
    }

    // ------------------------------------------------------------ restored blocks

    fn record(source: Ipv4Addr, added: u64, expires: Option<u64>) -> BlockRecord {
        BlockRecord {
            source: IpAddr::V4(source),
            added,
            expires,
            protocol: "TCP".to_owned(),
            port: 23,
            kind: "SYN/Normal".to_owned(),
        }
    }

    #[test]
    fn restored_blocks_drop_without_new_orders_until_their_time_is_up() {
        let mut p = Pipeline::new(&config(0), Vec::new());
        let at = Clock::start();
        let unix = store::unix_seconds(at.wall);
        let timed = Ipv4Addr::new(198, 51, 100, 1);
        let forever = Ipv4Addr::new(198, 51, 100, 2);
        p.restore_blocked(
            &[
                record(timed, unix - 10, Some(unix + 30)),
                record(forever, unix - 10, None),
            ],
            at.now,
            at.wall,
        );
        assert_eq!(p.status().blocked_now, 2);
        for source in [timed, forever] {
            let out = queued(&mut p, &syn(source, 1), at.after(29.0));
            assert_eq!(out.verdict, Some(Verdict::Drop));
            assert_eq!((out.block, out.lines.len()), (None, 0));
        }
        let out = queued(&mut p, &syn(timed, 1), at.after(31.0));
        assert!(out.block.is_some(), "the restored block ran out");
        let out = queued(&mut p, &syn(forever, 1), at.after(1e9));
        assert_eq!(out.block, None, "a block without an end never runs out");
    }

    // ------------------------------------------------------------ block orders

    fn detection(protocol: &'static str, port: u16, kind: ScanKind) -> Detection {
        Detection {
            source: IpAddr::V4(SCANNER),
            kind,
            protocol,
            port,
            hits: 1,
        }
    }

    #[test]
    fn a_block_order_records_the_block_and_its_history_line() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_795_564_518);
        let d = detection("TCP", 25, ScanKind::SynNormal);
        let order = block_order(&d, None, wall);
        assert_eq!(
            order.record,
            BlockRecord {
                source: IpAddr::V4(SCANNER),
                added: 1_795_564_518,
                expires: None,
                protocol: "TCP".to_owned(),
                port: 25,
                kind: "SYN/Normal".to_owned(),
            }
        );
        assert_eq!(
            order.history_line,
            report::history_line(wall, d.source, "TCP", 25)
        );
        assert!(order
            .history_line
            .ends_with(" Host: 198.51.100.7/198.51.100.7 Port: 25 TCP Blocked"));
    }

    #[test]
    fn a_block_order_expires_after_the_timeout_and_never_before_a_second() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let d = detection("UDP", 161, ScanKind::Udp);
        let expires = |timeout| block_order(&d, Some(timeout), wall).record.expires;
        assert_eq!(expires(Duration::from_secs(3600)), Some(4_600));
        assert_eq!(expires(Duration::from_millis(500)), Some(1_001));
        assert_eq!(expires(Duration::from_secs(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn the_pipeline_orders_blocks_at_the_wall_clock_it_is_given() {
        let mut c = config(0);
        c.respond.block_timeout = Some(Duration::from_secs(600));
        c.respond.actions = vec![ActionKind::Route];
        let mut p = Pipeline::new(&c, Vec::new());
        let at = Clock::start();
        let order = queued(&mut p, &syn(SCANNER, 23), at).block.unwrap();
        let unix = store::unix_seconds(at.wall);
        assert_eq!(order.record.added, unix);
        assert_eq!(order.record.expires, Some(unix + 600));
        assert_eq!(
            order.history_line,
            report::history_line(at.wall, IpAddr::V4(SCANNER), "TCP", 23)
        );
    }

    // ------------------------------------------------------------ the alert limiter

    #[test]
    fn the_limiter_lets_a_spans_budget_through_and_counts_the_rest() {
        let mut limiter = AlertLimiter::new(3);
        let start = Instant::now();
        let mut lines = Vec::new();
        let allowed: Vec<bool> = (0..5)
            .map(|i| limiter.allow(start + Duration::from_millis(i * 100), &mut lines))
            .collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert!(lines.is_empty(), "the span has not ended");
        assert_eq!(limiter.roll_over(start + Duration::from_millis(999)), None);
        assert_eq!(limiter.roll_over(start + ALERT_SPAN), Some(2));
        assert_eq!(limiter.suppressed_total, 2);
        // A fresh span with a fresh budget; a span with nothing held back says nothing.
        let next = start + ALERT_SPAN;
        assert!(limiter.allow(next, &mut lines));
        assert_eq!(limiter.roll_over(next + ALERT_SPAN), None);
        assert!(lines.is_empty());
    }

    #[test]
    fn the_next_alert_after_a_span_carries_its_summary_first() {
        let mut limiter = AlertLimiter::new(1);
        let start = Instant::now();
        let mut lines = Vec::new();
        assert!(limiter.allow(start, &mut lines));
        assert!(!limiter.allow(start, &mut lines));
        assert!(!limiter.allow(start, &mut lines));
        assert!(limiter.allow(start + Duration::from_secs(5), &mut lines));
        assert_eq!(lines, [LogLine::Suppressed(2)]);
        assert_eq!(limiter.suppressed_total, 2);
    }

    #[test]
    fn a_flood_of_detections_is_held_to_the_budget_and_summed_up_by_tick() {
        let mut c = config(u32::MAX);
        c.detect.max_sources = 4096;
        let mut p = Pipeline::new(&c, Vec::new());
        let at = Clock::start();
        assert_eq!(p.tick(at.now), None);
        let flood = ALERT_LINES_PER_SPAN + 50;
        let written: usize = (0..flood)
            .map(|i| {
                let source = Ipv4Addr::from(0x0a00_0000 | i);
                queued(&mut p, &syn(source, 80), at.after(0.5)).lines.len()
            })
            .sum();
        assert_eq!(written, ALERT_LINES_PER_SPAN as usize);
        assert_eq!(p.tick(at.after(0.9).now), None, "the span is not over");
        let summary = p.tick(at.after(1.0).now).expect("a summary line");
        assert_eq!(summary.level(), Level::Warn);
        assert_eq!(
            summary.to_string(),
            "50 alert lines suppressed in the last second (flood of sources?)"
        );
        assert_eq!(p.tick(at.after(2.5).now), None, "said once");
        let status = p.status();
        assert_eq!(status.alert_lines_suppressed, 50);
        assert_eq!(status.detections, u64::from(flood));
        let out = queued(&mut p, &syn(SCANNER, 1), at.after(2.6));
        assert_eq!(out.lines.len(), 1, "a new span has a new budget");
    }

    #[test]
    fn the_status_line_keeps_its_wording() {
        let status = Status {
            queued: 1,
            short_headers_logged: 2,
            malformed: 3,
            detections: 4,
            blocks_ordered: 5,
            blocks_refused: 6,
            blocked_now: 7,
            sources_tracked: 8,
            sources_evicted: 9,
            alert_lines_suppressed: 10,
        };
        assert_eq!(
            status.to_string(),
            "1 packets queued, 2 short headers logged, 3 malformed, 4 detections, \
             5 blocks ordered, 6 refused (table full), 7 blocked now, 8 sources tracked, \
             9 evicted, 10 alert lines suppressed"
        );
    }
}
