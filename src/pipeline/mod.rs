//! The per-packet path: the bytes of one packet, how they arrived and the time in; the verdict
//! for the kernel, the orders for the responder and the log lines to write out.
//!
//! It joins parse → classify → engine and adds what the engine leaves to its caller: the one
//! limiter every per-event line goes through (a spoofed flood must not flood the log too, nor
//! the history file), orders with their journal records and history lines, and the counters of
//! the status line. Ahead of the engine it screens out sources that must never be counted (see
//! [`crate::spoof`]) and, with `verify = "handshake"`, runs the handshake check, whose replies
//! come out as data. It does no I/O and reads no clock: the daemon passes the time in, sends the
//! replies and carries out the orders, and the tests run it on a fake clock.

mod lines;
#[cfg(test)]
mod tests;

use std::fmt;
use std::mem;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::addrset::AddrSet;
use crate::config::{Config, PortSet, Verdict, Verify};
use crate::engine::{Detection, Effect, Engine, EngineSettings, Event};
use crate::forge;
use crate::handshake::{Evidence, Handshakes};
use crate::packet::{self, Packet, ScanKind};
use crate::report;
use crate::spoof::{self, HostFacts, Protected, Protection};
use crate::store::{self, BlockRecord};
pub use lines::LogLine;
use lines::{AlertLimiter, ALERT_LINES_PER_SPAN};

/// Why a block ends when its time is up, in its "has been released" line.
pub const EXPIRED: &str = "block timeout expired";
/// Why a block ends when a full table gives it up for a new one.
pub const EVICTED: &str = "evicted: block table full";
/// Why a block ends when an admin lifts it.
pub const BY_HAND: &str = "by hand";
/// The scan type word, protocol and port of a block placed by hand, in the journal and `list`.
pub const MANUAL_KIND: &str = "manual";
pub const MANUAL_PROTOCOL: &str = "-";
/// Why a block ends when its address becomes one never blocked.
pub const PROTECTED: &str = "now an address of this host or one of its routers";

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
    /// What the responder is to do, in order: blocks this packet caused (its own source's, or
    /// waiting sources' it had a token for), releases of blocks given up to make room. Empty,
    /// and not allocated, for most packets.
    pub orders: Vec<Order>,
    /// Lines to write, in order; empty for most packets. Once written, hand the buffer back
    /// with [`Pipeline::recycle`] and the next packet's lines reuse it.
    pub lines: Vec<LogLine>,
    /// Packets to send back (the handshake check's SYN-ACK, banner, RST), in order; empty, and
    /// not allocated, unless `verify = "handshake"` challenged or answered this one.
    pub replies: Vec<Reply>,
}

/// One whole IP packet for [`crate::inject`] to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub packet: Vec<u8>,
    /// The interface the packet it answers came in on: a link-local destination is only
    /// reachable through it.
    pub ifindex: Option<u32>,
}

/// What the work due without a packet ([`Pipeline::tick`], [`Pipeline::verified`]) produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub orders: Vec<Order>,
    pub lines: Vec<LogLine>,
}

/// What the responder is to do about one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Block(BlockOrder),
    /// Lift a block before its end: the table gave it up for a new one.
    Release(ReleaseOrder),
    /// Re-apply a block with a new end: its source proved its address.
    Renew(RenewOrder),
}

/// A block to carry out: the journal record and the PortSentry history line, which only blocks
/// that got past the rate cap have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOrder {
    pub record: BlockRecord,
    pub history_line: String,
    /// Whether its `has been blocked` line fits the shared line budget.
    pub log: bool,
    /// When the pipeline decided on the block, for the responder to time it until the kernel
    /// has it; None for a block by hand.
    pub detected_at: Option<Instant>,
    /// Set by the queue reader that put the element into the kernel's blocked set itself: the
    /// time just before it sent that commit. The responder then does not add it again, unless
    /// it deleted the source's element since (see `respond::responder`); None: the responder
    /// puts it in.
    pub in_set_since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOrder {
    pub source: IpAddr,
    /// The reason in its `has been released (...)` line.
    pub why: &'static str,
    /// Whether that line fits the shared line budget.
    pub log: bool,
}

/// The block of `source` is verified now, and ends at `expires` (unix seconds; None: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewOrder {
    pub source: IpAddr,
    pub expires: Option<u64>,
}

/// The counters of the status line, as of one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub queued: u64,
    pub short_headers_logged: u64,
    pub malformed: u64,
    pub detections: u64,
    pub blocks_ordered: u64,
    /// Past the trigger without a token from `max_blocks_per_sec`, since start.
    pub blocks_held_back: u64,
    /// Sources waiting for a token now.
    pub waiting: usize,
    /// Blocks refused because the block table was full of verified blocks.
    pub blocks_refused: u64,
    /// Unverified blocks given up to make room for new ones.
    pub blocks_evicted: u64,
    /// Unverified blocks made verified.
    pub blocks_verified: u64,
    pub blocked_now: usize,
    pub blocked_verified: usize,
    pub blocked_unverified: usize,
    pub sources_tracked: usize,
    pub sources_evicted: u64,
    pub alert_lines_suppressed: u64,
    /// Detections by scan type, indexed as [`ScanKind::WORDS`].
    pub detections_by_kind: [u64; ScanKind::WORDS.len()],
    /// Blocks lifted since start: time up, given up for room, or by hand.
    pub blocks_released: u64,
    /// Queued packets from sources never counted (impossible ones, the host's own addresses on
    /// a non-loopback device, its routers), dropped uncounted.
    pub spoofed: u64,
    /// SYN-ACK challenges sent (`verify = "handshake"`).
    pub challenges: u64,
    /// Handshakes completed with a challenge's cookie.
    pub handshakes: u64,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets queued, {} short headers logged, {} malformed, {} detections, \
             {} blocks ordered, {} held back (rate cap), {} waiting, {} refused (table full), \
             {} evicted (table full), {} verified by handshake, {} blocked now ({} verified, \
             {} unverified), {} sources tracked, {} evicted, {} alert lines suppressed, \
             {} spoofed (never counted), {} challenges sent, {} handshakes completed",
            self.queued,
            self.short_headers_logged,
            self.malformed,
            self.detections,
            self.blocks_ordered,
            self.blocks_held_back,
            self.waiting,
            self.blocks_refused,
            self.blocks_evicted,
            self.blocks_verified,
            self.blocked_now,
            self.blocked_verified,
            self.blocked_unverified,
            self.sources_tracked,
            self.sources_evicted,
            self.alert_lines_suppressed,
            self.spoofed,
            self.challenges,
            self.handshakes
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
    held_back: u64,
    refused: u64,
    verified: u64,
    detections_by_kind: [u64; ScanKind::WORDS.len()],
    released: u64,
    spoofed: u64,
    challenges: u64,
    handshakes: u64,
}

/// Owns the engine and everything between it and the daemon's I/O.
pub struct Pipeline {
    engine: Engine,
    configured_ignore: Vec<IpNet>,
    /// What the host is, as last given: its addresses, routers, broadcasts, loopback devices.
    facts: HostFacts,
    /// The addresses never blocked, built from `facts` and the ignore list.
    protected: Protected,
    verify: Verify,
    /// The handshake check, with `verify = "handshake"` once the caller gave it its secret.
    handshakes: Option<Handshakes>,
    /// The watched TCP ports: only a segment to one of them is challenged or checked.
    watched_tcp: PortSet,
    /// For queued packets whose bytes cannot be read.
    unreadable_verdict: Verdict,
    alerts: AlertLimiter,
    /// New blocks the rate cap held back in the current alert span.
    held_back_in_span: u64,
    /// The engine's effects for one call, kept so that its capacity is reused.
    effects: Vec<Effect>,
    /// A packet's lines buffer handed back by [`Pipeline::recycle`], reused for the next one,
    /// so that a logged detection allocates nothing once the daemon runs.
    spare_lines: Vec<LogLine>,
    stats: Stats,
}

impl Pipeline {
    /// `facts`: what the host is; its addresses and routers are never counted nor blocked.
    pub fn new(config: &Config, mut facts: HostFacts) -> Pipeline {
        facts.normalize();
        let settings = EngineSettings {
            scan_trigger: config.detect.scan_trigger,
            window: config.detect.window,
            max_sources: NonZeroUsize::new(config.detect.max_sources).unwrap_or(NonZeroUsize::MIN),
            max_blocks: config.respond.max_blocks,
            block_timeout: config.respond.block_timeout,
            unverified_timeout: config.respond.unverified_timeout,
            max_blocks_per_sec: NonZeroU32::new(config.respond.max_blocks_per_sec),
            verdict: config.respond.verdict,
            ignore: ignore_set(&config.detect.ignore, &facts),
            block: !config.respond.actions.is_empty(),
        };
        Pipeline {
            engine: Engine::new(settings),
            configured_ignore: config.detect.ignore.clone(),
            protected: Protected::new(&facts, &config.detect.ignore),
            facts,
            verify: config.detect.verify,
            handshakes: None,
            watched_tcp: config.monitor.tcp.clone(),
            unreadable_verdict: config.respond.verdict,
            alerts: AlertLimiter::new(ALERT_LINES_PER_SPAN),
            held_back_in_span: 0,
            effects: Vec::new(),
            spare_lines: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// With `verify = "handshake"`: the check that challenges SYNs to watched TCP ports and
    /// verifies the sources that answer. Its secret comes from the caller, which has the random
    /// source. Without it (or with `verify = "off"`) nothing is ever sent.
    pub fn with_handshakes(mut self, handshakes: Option<Handshakes>) -> Pipeline {
        self.handshakes = handshakes.filter(|_| self.verify == Verify::Handshake);
        self
    }

    /// Parses, classifies and decides about one packet that arrived at `now` on interface
    /// `in_ifindex` (None: sent by this host); `wall_clock` is the same moment for block
    /// records and history lines.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        arrival: Arrival,
        in_ifindex: Option<u32>,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Handled {
        let mut out = Output {
            orders: Vec::new(),
            lines: mem::take(&mut self.spare_lines),
        };
        let mut replies = Vec::new();
        match arrival {
            Arrival::Queued => self.stats.queued += 1,
            Arrival::ShortHeaderLog => self.stats.logged_short += 1,
        }
        let verdict = match packet::parse(bytes) {
            Ok(parsed) if self.never_counted(&parsed, in_ifindex) => {
                // Forged, or an address whose block would cut the host off: dropped, since
                // whatever it is, it is aimed at a bait port; never counted, never answered.
                self.stats.spoofed += 1;
                Verdict::Drop
            }
            Ok(parsed) => 'decided: {
                let challenged = match self.check_handshake(bytes, &parsed, in_ifindex, now) {
                    None => false,
                    Some((evidence, sent)) => {
                        replies = sent;
                        match evidence {
                            Evidence::Challenged => true,
                            Evidence::NotChallenged | Evidence::Unrelated => false,
                            Evidence::Verified => {
                                self.stats.handshakes += 1;
                                let mut effects = mem::take(&mut self.effects);
                                self.engine.verified(parsed.src, now, &mut effects);
                                self.carry_out(&mut effects, now, wall_clock, &mut out);
                                self.effects = effects;
                                break 'decided Verdict::Drop;
                            }
                            // The same connection again, not a new probe.
                            Evidence::AfterBanner => break 'decided Verdict::Drop,
                        }
                    }
                };
                let kind = packet::classify(&parsed);
                let mut effects = mem::take(&mut self.effects);
                let outcome = self.engine.observe(&parsed, kind, now, &mut effects);
                match outcome.event {
                    Event::Ignored | Event::AlreadyBlocked | Event::Waiting => {}
                    Event::Detected(d) | Event::Triggered(d) => {
                        self.stats.detections += 1;
                        self.stats.detections_by_kind[d.kind.word_index()] += 1;
                        if self.allow(now, &mut out.lines) {
                            out.lines.push(LogLine::Detection(d));
                        }
                    }
                }
                self.carry_out(&mut effects, now, wall_clock, &mut out);
                self.effects = effects;
                match challenged {
                    // The SYN-ACK is ours: the kernel must not answer the SYN as well.
                    true => Verdict::Drop,
                    false => outcome.verdict,
                }
            }
            Err(error) => {
                self.stats.malformed += 1;
                // Debug only, and outside the alert budget: these are invisible unless asked
                // for, and must not crowd out the alerts that are not.
                out.lines.push(LogLine::Unreadable {
                    arrival,
                    bytes: bytes.len(),
                    error,
                });
                self.unreadable_verdict
            }
        };
        Handled {
            verdict: (arrival == Arrival::Queued).then_some(verdict),
            orders: out.orders,
            lines: out.lines,
            replies,
        }
    }

    /// Hands back the lines of a [`Handled`] once they are written: their buffer serves the
    /// next packet.
    pub fn recycle(&mut self, mut lines: Vec<LogLine>) {
        if lines.capacity() > self.spare_lines.capacity() {
            lines.clear();
            self.spare_lines = lines;
        }
    }

    /// Whether `packet`'s source must never be counted: an address no real packet comes from,
    /// the host's own on a non-loopback device, or one of its routers. The host talking to
    /// itself over loopback and the configured ignore list go on to the engine, which lets them
    /// through uncounted as before.
    fn never_counted(&self, packet: &Packet, in_ifindex: Option<u32>) -> bool {
        let on_loopback = self.facts.is_loopback(in_ifindex);
        if spoof::impossible_source(packet.src, on_loopback, &self.facts).is_some() {
            return true;
        }
        self.protected.is_router(packet.src)
    }

    /// With `verify = "handshake"`, what a TCP segment to a watched port proves, and the packets
    /// to send back to its source.
    fn check_handshake(
        &mut self,
        bytes: &[u8],
        packet: &Packet,
        in_ifindex: Option<u32>,
        now: Instant,
    ) -> Option<(Evidence, Vec<Reply>)> {
        let handshakes = self.handshakes.as_mut()?;
        let packet::Transport::Tcp { dport, .. } = packet.transport else {
            return None;
        };
        // A watched port with IP options still gets no answer: an options probe is not how a
        // real client connects, and source routing could steer the answer elsewhere.
        if !self.watched_tcp.contains(dport) || !packet.ip_options.is_empty() {
            return None;
        }
        let segment = forge::read_tcp(bytes).ok()?;
        let step = handshakes.step(&segment, now);
        if step.evidence == Evidence::Challenged {
            self.stats.challenges += 1;
        }
        let replies = step
            .replies
            .into_iter()
            .map(|packet| Reply {
                packet,
                ifindex: in_ifindex,
            })
            .collect();
        Some((step.evidence, replies))
    }

    /// Call at least once a second: the blocks whose time is up (their release lines), tokens
    /// for sources waiting to be blocked (their orders), and once a span has ended, the lines
    /// that say how many lines and blocks were held back in it.
    pub fn tick(&mut self, now: Instant, wall_clock: SystemTime) -> Output {
        let mut out = Output::default();
        self.roll_over(now, &mut out.lines);
        let mut effects = mem::take(&mut self.effects);
        self.engine.tick(now, &mut effects);
        self.carry_out(&mut effects, now, wall_clock, &mut out);
        self.effects = effects;
        out
    }

    /// `source` completed a TCP handshake with us at `now`, so its address is its own: its
    /// unverified block is renewed to last `block_timeout`, a waiting source goes to the front
    /// of the line, and any other source's block will be verified when it comes. With
    /// `detect.verify = "off"` every block stays unverified, and this does nothing.
    pub fn verified(&mut self, source: IpAddr, now: Instant, wall_clock: SystemTime) -> Output {
        let mut out = Output::default();
        if self.verify == Verify::Off {
            return out;
        }
        let mut effects = mem::take(&mut self.effects);
        self.engine.verified(source, now, &mut effects);
        self.carry_out(&mut effects, now, wall_clock, &mut out);
        self.effects = effects;
        out
    }

    /// What makes a block verified, as configured.
    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// Follows what the host is (DHCP, rotating IPv6 temporary addresses, new routers), so that
    /// a packet spoofed from a new address of its own or a new router cannot get the host cut
    /// off. A block of an address that has just become one never blocked is lifted at once:
    /// the orders say so. Nothing when the facts did not change.
    pub fn set_host_facts(&mut self, mut facts: HostFacts, now: Instant) -> Output {
        let mut out = Output::default();
        facts.normalize();
        if facts == self.facts {
            return out;
        }
        self.protected = Protected::new(&facts, &self.configured_ignore);
        self.engine
            .set_ignore(ignore_set(&self.configured_ignore, &facts));
        self.facts = facts;
        let now_protected = self.protected.now_protected(self.engine.blocked_sources());
        for source in now_protected {
            if self.engine.release_protected(source) {
                let log = self.allow(now, &mut out.lines);
                out.orders.push(Order::Release(ReleaseOrder {
                    source,
                    why: PROTECTED,
                    log,
                }));
            }
        }
        out
    }

    /// What the host is, as last given.
    pub fn host_facts(&self) -> &HostFacts {
        &self.facts
    }

    /// Marks the blocks an earlier run placed, so their sources are dropped and not ordered
    /// blocked again; each ends when its record says, translated from `wall_clock` to `now`,
    /// and keeps its evidence.
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
            self.engine
                .restore_blocked(block.source, until, block.verified);
        }
    }

    /// Forgets the block of a source released by hand: its packets are judged afresh, and it
    /// can be blocked again.
    pub fn release(&mut self, source: IpAddr) {
        self.release_by_hand(source);
    }

    pub fn status(&self) -> Status {
        Status {
            queued: self.stats.queued,
            short_headers_logged: self.stats.logged_short,
            malformed: self.stats.malformed,
            detections: self.stats.detections,
            blocks_ordered: self.stats.blocks,
            blocks_held_back: self.stats.held_back,
            waiting: self.engine.waiting(),
            blocks_refused: self.stats.refused,
            blocks_evicted: self.engine.evicted_blocks(),
            blocks_verified: self.stats.verified,
            blocked_now: self.engine.blocked_count(),
            blocked_verified: self.engine.verified_blocks(),
            blocked_unverified: self.engine.unverified_blocks(),
            sources_tracked: self.engine.tracked_sources(),
            sources_evicted: self.engine.evicted_sources(),
            alert_lines_suppressed: self.alerts.suppressed_total,
            detections_by_kind: self.stats.detections_by_kind,
            blocks_released: self.stats.released,
            spoofed: self.stats.spoofed,
            challenges: self.stats.challenges,
            handshakes: self.stats.handshakes,
        }
    }

    /// Takes a reloaded config: thresholds, verdicts, block terms and bound, the ignore list.
    /// Tracked sources, blocks and counters are kept; what the engine fixes at start is kept
    /// too (see [`Engine::reconfigure`]).
    pub fn reconfigure(&mut self, config: &Config) {
        let fresh = Pipeline::new(config, self.facts.clone());
        self.engine.reconfigure(fresh.engine.settings().clone());
        self.configured_ignore = fresh.configured_ignore;
        self.protected = fresh.protected;
        self.unreadable_verdict = fresh.unreadable_verdict;
    }

    /// An admin's block of `source` for `term` (None: until released): the order for the
    /// responder. It counts as verified, since the admin vouches for it, so a full table never
    /// gives it up for a spoofed source. Sources never blocked (ignored, the host's own) are
    /// refused with the reason.
    pub fn block_by_hand(
        &mut self,
        source: IpAddr,
        term: Option<Duration>,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Result<BlockOrder, String> {
        match self.protected.why(source) {
            Some(Protection::Local) => {
                return Err(format!("{source} is one of this host's own addresses"))
            }
            Some(Protection::NextHop) => return Err(format!("{source} is a router of this host")),
            Some(Protection::Ignored) => {
                return Err(format!("{source} is on the ignore list (detect.ignore)"))
            }
            None => {}
        }
        self.engine
            .restore_blocked(source, term.and_then(|t| now.checked_add(t)), true);
        self.stats.blocks += 1;
        Ok(BlockOrder {
            record: BlockRecord {
                source,
                added: store::unix_seconds(wall_clock),
                expires: expires_at(term, wall_clock),
                protocol: MANUAL_PROTOCOL.to_owned(),
                port: 0,
                kind: MANUAL_KIND.to_owned(),
                verified: true,
            },
            history_line: report::history_line(wall_clock, source, MANUAL_KIND, 0),
            log: true,
            detected_at: None,
            in_set_since: None,
        })
    }

    /// An admin lifted `source`'s block: it is watched afresh, and blocked again should it scan
    /// again. Returns whether it was blocked here.
    pub fn release_by_hand(&mut self, source: IpAddr) -> bool {
        let was_blocked = self.engine.release(&source);
        self.stats.released += u64::from(was_blocked);
        was_blocked
    }

    /// An admin lifted every block; returns how many there were here.
    pub fn release_all_by_hand(&mut self) -> usize {
        let count = self.engine.release_all();
        self.stats.released += count as u64;
        count
    }

    /// Turns the engine's effects into orders and lines; drains `effects`.
    fn carry_out(
        &mut self,
        effects: &mut Vec<Effect>,
        now: Instant,
        wall_clock: SystemTime,
        out: &mut Output,
    ) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Blocked {
                    detection,
                    verified,
                    term,
                } => {
                    self.stats.blocks += 1;
                    let log = self.allow(now, &mut out.lines);
                    let order = block_order(&detection, verified, term, now, wall_clock, log);
                    out.orders.push(Order::Block(order));
                }
                Effect::HeldBack { .. } => {
                    self.stats.held_back += 1;
                    self.held_back_in_span += 1;
                }
                Effect::Evicted { source } => {
                    self.stats.released += 1;
                    let log = self.allow(now, &mut out.lines);
                    out.orders.push(Order::Release(ReleaseOrder {
                        source,
                        why: EVICTED,
                        log,
                    }));
                }
                Effect::Refused(d) => {
                    self.stats.refused += 1;
                    if self.allow(now, &mut out.lines) {
                        out.lines.push(LogLine::BlockTableFull(d.source));
                    }
                }
                Effect::Expired { source } => {
                    self.stats.released += 1;
                    // The responder lifts the block on its own clock; the line comes from here,
                    // so that it shares the budget.
                    if self.allow(now, &mut out.lines) {
                        out.lines.push(LogLine::Released {
                            source,
                            why: EXPIRED,
                        });
                    }
                }
                Effect::Verified { source, term } => {
                    self.stats.verified += 1;
                    out.orders.push(Order::Renew(RenewOrder {
                        source,
                        expires: expires_at(term, wall_clock),
                    }));
                    if self.allow(now, &mut out.lines) {
                        out.lines.push(LogLine::Verified { source, term });
                    }
                }
            }
        }
    }

    /// Whether one more per-event line may go out at `now`. A span that ends here leaves its
    /// summary lines in `lines` first.
    fn allow(&mut self, now: Instant, lines: &mut Vec<LogLine>) -> bool {
        self.roll_over(now, lines);
        self.alerts.take()
    }

    /// When the alert span is over: the line for the alert lines it held back, and the
    /// held-back notice of the rate cap (the first line of the new span, so it always fits).
    fn roll_over(&mut self, now: Instant, lines: &mut Vec<LogLine>) {
        let Some(suppressed) = self.alerts.roll_over(now) else {
            return;
        };
        if suppressed > 0 {
            lines.push(LogLine::Suppressed(suppressed));
        }
        let held = mem::take(&mut self.held_back_in_span);
        if held > 0 && self.alerts.take() {
            lines.push(LogLine::HeldBack {
                held,
                waiting: self.engine.waiting(),
                per_second: self
                    .engine
                    .settings()
                    .max_blocks_per_sec
                    .map_or(0, NonZeroU32::get),
            });
        }
    }
}

/// The unix second a block of `term` placed at `wall_clock` ends; None: never. The journal
/// counts whole seconds: a term under one must still outlast the moment it was placed, or the
/// block would be due as soon as it is written.
fn expires_at(term: Option<Duration>, wall_clock: SystemTime) -> Option<u64> {
    let added = store::unix_seconds(wall_clock);
    term.map(|t| added.saturating_add(t.as_secs().max(1)))
}

/// The responder's order for blocking `d`'s source at `now` (`wall_clock`) for `term`.
fn block_order(
    d: &Detection,
    verified: bool,
    term: Option<Duration>,
    now: Instant,
    wall_clock: SystemTime,
    log: bool,
) -> BlockOrder {
    BlockOrder {
        record: BlockRecord {
            source: d.source,
            added: store::unix_seconds(wall_clock),
            expires: expires_at(term, wall_clock),
            protocol: d.protocol.to_string(),
            port: d.port,
            kind: d.kind.word().to_string(),
            verified,
        },
        history_line: report::history_line(wall_clock, d.source, d.protocol, d.port),
        log,
        detected_at: Some(now),
        in_set_since: None,
    }
}

/// What the engine never counts nor blocks: the configured ignore list plus the host's own
/// addresses and its routers.
fn ignore_set(configured: &[IpNet], facts: &HostFacts) -> AddrSet {
    let own: Vec<IpNet> = facts
        .local
        .iter()
        .chain(&facts.next_hops)
        .map(|&a| IpNet::from(a))
        .chain(facts.local_nets.iter().copied())
        .collect();
    AddrSet::new(configured.iter().chain(&own))
}
