//! The nftables ruleset nfsentry owns, as plain data and as `nft` text; it does no I/O and does
//! not know how the ruleset reaches the kernel (that is [`super::netlink`]).
//!
//! The rule list, the set names and the interval-set encoding are defined here once, so the text
//! an admin reads (`nfsentry rules`, `nft -f`) and the netlink batch cannot drift apart.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{Config, Verify};
use crate::inject::REPLY_MARK;
use crate::packet::TcpFlags;

pub use super::intervals::{IntervalBoundary, IntervalElement, IntervalKey, IntervalList};

/// How the queue statement reaches the kernel: the config's type, so that a mode the admin
/// forces and a mode the installer reports are one and the same.
pub use crate::config::QueueMode;
use crate::config::QueueRange;

/// Everything the ruleset depends on, as plain data: [`RulesetSpec::from_config`] maps the
/// validated config onto it, and tests build one by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetSpec {
    /// Name of both the `inet` table and the `netdev` table.
    pub table: String,
    /// The NFQUEUE numbers the detector reads; over several, the kernel spreads packets by
    /// address (never by CPU), so one source always reaches the same reader.
    pub queue: QueueRange,
    /// Inclusive TCP port ranges to watch; overlapping or adjacent ranges are merged.
    pub tcp_ports: Vec<(u16, u16)>,
    /// Inclusive UDP port ranges to watch; overlapping or adjacent ranges are merged.
    pub udp_ports: Vec<(u16, u16)>,
    /// IPv4 sources never sent to the detector; may overlap and come in any order.
    pub ignore_v4: Vec<Ipv4Net>,
    /// IPv6 sources never sent to the detector; may overlap and come in any order.
    pub ignore_v6: Vec<Ipv6Net>,
    /// Devices whose ingress hook reports IPv4 headers shorter than 20 bytes; empty means no
    /// `netdev` table at all.
    pub ingress_devices: Vec<String>,
    /// NFLOG group the short-header reports go to.
    pub nflog_group: u16,
    /// The `blocked_ranges_v4` / `blocked_ranges_v6` interval sets and their drop rules, for
    /// the networks the fleet bans (`[crowdsec] pull`).
    pub blocked_ranges: bool,
    /// With `verify = "handshake"`: the firewall mark of the packets nfsentry sends itself
    /// (SYN-ACK, banner, RST). They are kept out of conntrack, so the peer's answering ACK is a
    /// new flow and reaches the queue instead of being accepted as established; and pure ACKs to
    /// a watched port reach the queue ahead of the blocked-set drop, so a source blocked by its
    /// first SYN can still complete the handshake and prove its address. None: no such rules.
    pub reply_mark: Option<u32>,
    /// `respond.blocked_table`: the admin's `inet` table whose `blocked_v4` / `blocked_v6` sets
    /// hold the blocks, and whose rules drop them. nfsentry's table then has neither those
    /// sets nor their drop rules. `None`: they are nfsentry's own.
    pub blocked_table: Option<String>,
    /// Only the blocked sets and their drop rules, nothing that queues: what a clean stop with
    /// `keep_blocks_on_exit` leaves in force (see [`RulesetSpec::kept_at_exit`]).
    pub blocks_only: bool,
}

impl RulesetSpec {
    /// The ruleset `config` asks for. `ingress_devices` is passed in rather than read from the
    /// config because an empty `daemon.interfaces` means "every interface present", which only
    /// the host can answer.
    pub fn from_config(config: &Config, ingress_devices: Vec<String>) -> RulesetSpec {
        let mut ignore_v4 = Vec::new();
        let mut ignore_v6 = Vec::new();
        for net in &config.detect.ignore {
            match net {
                IpNet::V4(net) => ignore_v4.push(*net),
                IpNet::V6(net) => ignore_v6.push(*net),
            }
        }
        RulesetSpec {
            table: config.daemon.table.clone(),
            queue: config.daemon.queue,
            tcp_ports: config.monitor.tcp.ranges().collect(),
            udp_ports: config.monitor.udp.ranges().collect(),
            ignore_v4,
            ignore_v6,
            ingress_devices,
            nflog_group: config.daemon.nflog_group,
            blocked_ranges: config
                .crowdsec
                .as_ref()
                .is_some_and(|crowdsec| crowdsec.pull.is_some()),
            reply_mark: (config.detect.verify == Verify::Handshake).then_some(REPLY_MARK),
            blocked_table: config.respond.blocked_table.clone(),
            blocks_only: false,
        }
    }

    /// What stays in force between a clean stop with `keep_blocks_on_exit` and the next start:
    /// the blocked sets and the rules that drop them, and nothing that queues, since no one
    /// reads the queue meanwhile. No `netdev` table, no ignore or port sets, no handshake
    /// chains; the fleet's range sets go too (the next start pulls them again). With
    /// `blocked_table` nothing of nfsentry's holds blocks, so nothing is left:
    /// [`RulesetSpec::holds_blocks`] says so.
    pub fn kept_at_exit(&self) -> RulesetSpec {
        RulesetSpec {
            tcp_ports: Vec::new(),
            udp_ports: Vec::new(),
            ignore_v4: Vec::new(),
            ignore_v6: Vec::new(),
            ingress_devices: Vec::new(),
            blocked_ranges: false,
            reply_mark: None,
            blocks_only: true,
            ..self.clone()
        }
    }

    /// Whether nfsentry's own table holds the blocked sets (no `blocked_table`).
    pub fn holds_blocks(&self) -> bool {
        self.blocked_table.is_none()
    }

    /// The table whose `blocked_v4` / `blocked_v6` sets hold the blocks: the admin's with
    /// `blocked_table`, else nfsentry's own. Both are `inet` tables.
    pub fn blocks_table(&self) -> &str {
        self.blocked_table.as_deref().unwrap_or(&self.table)
    }

    /// The prerouting chain, in order: [`PREROUTING_RULES`] without the range rules when there
    /// are no range sets, without the blocked-set drops when the admin's table holds the blocks,
    /// with nothing but the drops when only blocks are kept, behind the jump to
    /// [`HANDSHAKE_ANSWER_CHAIN`] when handshakes are checked.
    pub fn prerouting_rules(&self) -> Vec<PreroutingRule> {
        let jump = self
            .reply_mark
            .map(|_| PreroutingRule::JumpToHandshakeAnswer);
        let rules = PREROUTING_RULES.into_iter().filter(|rule| match rule {
            PreroutingRule::DropBlocked(_) => self.holds_blocks(),
            PreroutingRule::DropBlockedRange(_) => self.blocked_ranges,
            _ => !self.blocks_only,
        });
        jump.into_iter().chain(rules).collect()
    }

    /// The `ignore_v4` set contents, merged.
    pub fn ignore_v4_intervals(&self) -> IntervalList<Ipv4Addr> {
        IntervalList::from_ranges(
            self.ignore_v4
                .iter()
                .map(|net| net.network()..=net.broadcast()),
        )
    }

    /// The `ignore_v6` set contents, merged.
    pub fn ignore_v6_intervals(&self) -> IntervalList<Ipv6Addr> {
        IntervalList::from_ranges(
            self.ignore_v6
                .iter()
                .map(|net| net.network()..=net.broadcast()),
        )
    }

    /// The set of watched ports for `transport`, merged.
    pub fn port_intervals(&self, transport: Transport) -> IntervalList<u16> {
        let ports = match transport {
            Transport::Tcp => &self.tcp_ports,
            Transport::Udp => &self.udp_ports,
        };
        IntervalList::from_ranges(ports.iter().map(|&(first, last)| first..=last))
    }
}

/// Address family of a per-family set or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The `nft` payload keyword: `ip` or `ip6`.
    pub fn nft_keyword(self) -> &'static str {
        match self {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }
}

/// Transport protocol of a port set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The `nft` payload keyword: `tcp` or `udp`.
    pub fn nft_keyword(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Name of the set holding blocked sources of `family`.
pub fn blocked_set(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "blocked_v4",
        IpFamily::V6 => "blocked_v6",
    }
}

/// Name of the interval set holding networks the fleet bans, of `family`.
pub fn blocked_range_set(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "blocked_ranges_v4",
        IpFamily::V6 => "blocked_ranges_v6",
    }
}

/// Name of the set holding ignored sources of `family`.
pub fn ignore_set(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ignore_v4",
        IpFamily::V6 => "ignore_v6",
    }
}

/// Name of the set holding watched ports of `transport`.
pub fn port_set(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp_ports",
        Transport::Udp => "udp_ports",
    }
}

/// The chain in the `inet` table that picks packets for the detector. Chain names are C strings
/// because netlink carries them as such; the text renderer reads the same constants.
pub const PREROUTING_CHAIN: &CStr = c"prerouting";
/// `mangle` (-150): after conntrack (-200), so `ct state` is known, and after defragmentation
/// (-400), so the chain sees whole packets.
pub const PREROUTING_PRIORITY: i32 = -150;
/// The chain in the `netdev` table that reports runt IPv4 headers.
pub const SHORT_HEADER_CHAIN: &CStr = c"short_header";
/// Ingress chains run before any IP processing whatever their priority; -500 only puts this
/// chain ahead of other ingress chains an admin may have.
pub const SHORT_HEADER_PRIORITY: i32 = -500;

/// With `verify = "handshake"`: the regular chain the prerouting chain jumps to with a pure ACK
/// to a watched port that conntrack does not know, which may answer one of nfsentry's
/// challenges. It comes before the blocked-set drop: the first SYN of a scan may have blocked
/// its source already, and the ACK that follows is what proves the address.
pub const HANDSHAKE_ANSWER_CHAIN: &CStr = c"handshake_answer";
/// With `verify = "handshake"`: the output chain that keeps nfsentry's own replies untracked.
pub const HANDSHAKE_OUTPUT_CHAIN: &CStr = c"handshake_output";
/// `raw` (-300): before conntrack (-200) sees the packet, as `notrack` requires.
pub const HANDSHAKE_OUTPUT_PRIORITY: i32 = -300;

/// A rule of the two handshake chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeRule {
    /// [`HANDSHAKE_ANSWER_CHAIN`]: a local socket owns the ACK (a real service on a watched
    /// port): back to the prerouting chain, which lets it through.
    ReturnOwnedBySocket,
    /// [`HANDSHAKE_ANSWER_CHAIN`]: everything else goes to the detector, blocked or not.
    QueueAnswer,
    /// [`HANDSHAKE_OUTPUT_CHAIN`]: nfsentry's own replies, by their mark, stay out of conntrack.
    UntrackReplies(u32),
}

/// The rules of [`HANDSHAKE_ANSWER_CHAIN`], in order.
pub const HANDSHAKE_ANSWER_RULES: [HandshakeRule; 2] = [
    HandshakeRule::ReturnOwnedBySocket,
    HandshakeRule::QueueAnswer,
];

impl HandshakeRule {
    /// The rule in `nft` syntax, without comment.
    pub fn nft_text(self, queue: QueueRange) -> String {
        match self {
            HandshakeRule::ReturnOwnedBySocket => "socket transparent 0 return".to_owned(),
            HandshakeRule::QueueAnswer => format!("counter queue num {queue} bypass"),
            HandshakeRule::UntrackReplies(mark) => format!("meta mark {mark:#010x} notrack"),
        }
    }

    /// Why the rule is there, for the `#` comment in the rendered ruleset.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeRule::ReturnOwnedBySocket => "a real service on a watched port: not ours",
            HandshakeRule::QueueAnswer => {
                "may return a challenge's cookie: the detector checks it, blocked source or not"
            }
            HandshakeRule::UntrackReplies(_) => {
                "nfsentry's own SYN-ACK, banner and RST: untracked, so the answer is a new flow"
            }
        }
    }
}

/// Flag combinations no real TCP stack sends to open or continue a connection, so they are
/// queued whatever the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpFlagProbe {
    /// None of FIN, SYN, RST, ACK: the NULL scan, and PSH or URG alone.
    NoControlFlags,
    /// FIN without ACK: the FIN scan and the XMAS scan (FIN+PSH+URG).
    FinWithoutAck,
    /// SYN and FIN together.
    SynFin,
    /// SYN and RST together.
    SynRst,
}

impl TcpFlagProbe {
    /// The flags looked at.
    pub fn mask(self) -> u8 {
        match self {
            TcpFlagProbe::NoControlFlags => {
                TcpFlags::FIN | TcpFlags::SYN | TcpFlags::RST | TcpFlags::ACK
            }
            TcpFlagProbe::FinWithoutAck => TcpFlags::FIN | TcpFlags::ACK,
            TcpFlagProbe::SynFin => TcpFlags::FIN | TcpFlags::SYN,
            TcpFlagProbe::SynRst => TcpFlags::SYN | TcpFlags::RST,
        }
    }

    /// The value the masked flags must have.
    pub fn expected(self) -> u8 {
        match self {
            TcpFlagProbe::NoControlFlags => 0,
            TcpFlagProbe::FinWithoutAck => TcpFlags::FIN,
            TcpFlagProbe::SynFin => TcpFlags::FIN | TcpFlags::SYN,
            TcpFlagProbe::SynRst => TcpFlags::SYN | TcpFlags::RST,
        }
    }

    fn nft_match(self) -> &'static str {
        match self {
            TcpFlagProbe::NoControlFlags => "tcp flags & (fin|syn|rst|ack) == 0x0",
            TcpFlagProbe::FinWithoutAck => "tcp flags & (fin|ack) == fin",
            TcpFlagProbe::SynFin => "tcp flags & (fin|syn) == fin|syn",
            TcpFlagProbe::SynRst => "tcp flags & (syn|rst) == syn|rst",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            TcpFlagProbe::NoControlFlags => "NULL scan, and PSH/URG alone",
            TcpFlagProbe::FinWithoutAck => "FIN and XMAS scans: FIN without ACK",
            TcpFlagProbe::SynFin => "SYN+FIN: never part of a real handshake",
            TcpFlagProbe::SynRst => "SYN+RST: never part of a real handshake",
        }
    }
}

/// One rule of the prerouting chain. The chain is [`PREROUTING_RULES`], first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreroutingRule {
    /// With `verify = "handshake"`: a pure ACK to a watched port, new or invalid to conntrack,
    /// addressed here, goes to [`HANDSHAKE_ANSWER_CHAIN`].
    JumpToHandshakeAnswer,
    /// Count and drop sources in the blocked set.
    DropBlocked(IpFamily),
    /// Count and drop sources in a network the fleet bans (only with range sets).
    DropBlockedRange(IpFamily),
    /// Accept packets of known connections.
    AcceptEstablished,
    /// Accept packets whose destination is not an address of this host (`fib daddr type !=
    /// local`): on a router, prerouting also sees traffic on its way to other machines.
    AcceptNotAddressedHere,
    /// Accept sources in the ignore set.
    AcceptIgnored(IpFamily),
    /// Accept packets a local socket will receive (`socket transparent 0`).
    AcceptOwnedBySocket,
    /// Queue IPv4 packets carrying options (IHL > 5).
    QueueIpOptions,
    /// Queue IPv6 packets carrying a Routing extension header, IPv6's source routing. The
    /// kernel refuses type 0 only at local delivery, after prerouting, so this chain sees it.
    QueueIpv6RoutingHeader,
    /// Queue TCP packets with a flag combination no connection uses.
    QueueTcpFlags(TcpFlagProbe),
    /// Queue packets to a watched port.
    QueueWatchedPort(Transport),
}

/// The prerouting chain without handshake checks, in order (see
/// [`RulesetSpec::prerouting_rules`]). Blocked sources go first so a blocked scanner costs nothing
/// more; conntrack, the destination check, ignore list and live sockets come before any queue
/// rule so the detector only sees traffic to this host that nobody expects.
pub const PREROUTING_RULES: [PreroutingRule; 17] = [
    PreroutingRule::DropBlocked(IpFamily::V4),
    PreroutingRule::DropBlocked(IpFamily::V6),
    PreroutingRule::DropBlockedRange(IpFamily::V4),
    PreroutingRule::DropBlockedRange(IpFamily::V6),
    PreroutingRule::AcceptEstablished,
    PreroutingRule::AcceptNotAddressedHere,
    PreroutingRule::AcceptIgnored(IpFamily::V4),
    PreroutingRule::AcceptIgnored(IpFamily::V6),
    PreroutingRule::AcceptOwnedBySocket,
    PreroutingRule::QueueIpOptions,
    PreroutingRule::QueueIpv6RoutingHeader,
    PreroutingRule::QueueTcpFlags(TcpFlagProbe::NoControlFlags),
    PreroutingRule::QueueTcpFlags(TcpFlagProbe::FinWithoutAck),
    PreroutingRule::QueueTcpFlags(TcpFlagProbe::SynFin),
    PreroutingRule::QueueTcpFlags(TcpFlagProbe::SynRst),
    PreroutingRule::QueueWatchedPort(Transport::Tcp),
    PreroutingRule::QueueWatchedPort(Transport::Udp),
];

impl PreroutingRule {
    /// Whether the rule ends in the queue statement.
    pub fn queues(self) -> bool {
        matches!(
            self,
            PreroutingRule::QueueIpOptions
                | PreroutingRule::QueueIpv6RoutingHeader
                | PreroutingRule::QueueTcpFlags(_)
                | PreroutingRule::QueueWatchedPort(_)
        )
    }

    /// Whether the rule counts the packets it matches.
    pub fn counts(self) -> bool {
        !matches!(
            self,
            PreroutingRule::JumpToHandshakeAnswer
                | PreroutingRule::AcceptEstablished
                | PreroutingRule::AcceptNotAddressedHere
                | PreroutingRule::AcceptIgnored(_)
                | PreroutingRule::AcceptOwnedBySocket
        )
    }

    /// The rule in `nft` syntax, without comment.
    pub fn nft_text(self, queue: QueueRange) -> String {
        let matcher = match self {
            PreroutingRule::JumpToHandshakeAnswer => format!(
                "tcp flags == ack ct state new,invalid fib daddr type local tcp dport @{}",
                port_set(Transport::Tcp)
            ),
            PreroutingRule::DropBlocked(family) => {
                format!("{} saddr @{}", family.nft_keyword(), blocked_set(family))
            }
            PreroutingRule::DropBlockedRange(family) => {
                format!(
                    "{} saddr @{}",
                    family.nft_keyword(),
                    blocked_range_set(family)
                )
            }
            PreroutingRule::AcceptEstablished => "ct state established,related".to_owned(),
            PreroutingRule::AcceptNotAddressedHere => "fib daddr type != local".to_owned(),
            PreroutingRule::AcceptIgnored(family) => {
                format!("{} saddr @{}", family.nft_keyword(), ignore_set(family))
            }
            PreroutingRule::AcceptOwnedBySocket => "socket transparent 0".to_owned(),
            PreroutingRule::QueueIpOptions => "ip hdrlength > 5".to_owned(),
            // `nft list` prints the rule back in this form.
            PreroutingRule::QueueIpv6RoutingHeader => "exthdr rt exists".to_owned(),
            PreroutingRule::QueueTcpFlags(probe) => probe.nft_match().to_owned(),
            PreroutingRule::QueueWatchedPort(transport) => {
                format!("{} dport @{}", transport.nft_keyword(), port_set(transport))
            }
        };
        let counter = if self.counts() { " counter" } else { "" };
        let verdict = match self {
            PreroutingRule::JumpToHandshakeAnswer => {
                format!("jump {}", HANDSHAKE_ANSWER_CHAIN.to_string_lossy())
            }
            PreroutingRule::DropBlocked(_) | PreroutingRule::DropBlockedRange(_) => {
                "drop".to_owned()
            }
            _ if self.queues() => format!("queue num {queue} bypass"),
            _ => "accept".to_owned(),
        };
        format!("{matcher}{counter} {verdict}")
    }

    /// Why the rule is there, for the `#` comment in the rendered ruleset.
    pub fn reason(self) -> &'static str {
        match self {
            PreroutingRule::JumpToHandshakeAnswer => {
                "may answer a challenge: checked before the blocked-set drop"
            }
            PreroutingRule::DropBlocked(_) => "a blocked scanner: nothing else looks at it",
            PreroutingRule::DropBlockedRange(_) => "a network the fleet bans",
            PreroutingRule::AcceptEstablished => {
                "real connections and their replies (a lone ACK is new to conntrack and goes on)"
            }
            PreroutingRule::AcceptNotAddressedHere => {
                "not addressed to this host: forwarded traffic, broadcast and multicast are not probes of this host"
            }
            PreroutingRule::AcceptIgnored(_) => "a source the admin trusts",
            PreroutingRule::AcceptOwnedBySocket => {
                "a local socket owns the packet: the port is in use"
            }
            PreroutingRule::QueueIpOptions => "IPv4 options, any port",
            PreroutingRule::QueueIpv6RoutingHeader => "IPv6 routing header, any port",
            PreroutingRule::QueueTcpFlags(probe) => probe.reason(),
            PreroutingRule::QueueWatchedPort(Transport::Tcp) => "a watched TCP port",
            PreroutingRule::QueueWatchedPort(Transport::Udp) => "a watched UDP port",
        }
    }
}

/// The `netdev` rule, in `nft` syntax.
pub fn short_header_rule_text(nflog_group: u16) -> String {
    format!("ip hdrlength < 5 counter log group {nflog_group}")
}

/// Renders the ruleset in `nft` syntax, loadable with `nft -f` on a kernel that has `nft_queue`.
/// The text is the same for both modes apart from the header comment: the compat target has no
/// `nft` syntax of its own and lists as `queue`.
///
/// The table name is written as given and device names are quoted; checking them is the
/// caller's job (the config check refuses device names holding `"`, the netlink side refuses
/// names the kernel would).
pub fn render(spec: &RulesetSpec, mode: QueueMode) -> String {
    let mut out = String::new();
    // `writeln!` into a String cannot fail; the results are ignored on purpose throughout.
    let _ = match spec.blocks_only {
        true => writeln!(
            out,
            "# nfsentry's blocked sets, in force while it is stopped (keep_blocks_on_exit)."
        ),
        false => writeln!(
            out,
            "# nfsentry ruleset; the queue statements are installed as {mode}."
        ),
    };
    if let Some(admin) = &spec.blocked_table {
        let _ = writeln!(
            out,
            "# Blocked sources go into the sets {} and {} of your table inet {admin} \
             (respond.blocked_table; `nfsentry rules --blocked-sets` prints them).",
            blocked_set(IpFamily::V4),
            blocked_set(IpFamily::V6),
        );
    }
    let _ = writeln!(out, "table inet {} {{", spec.table);
    if spec.holds_blocks() {
        for family in [IpFamily::V4, IpFamily::V6] {
            let _ = writeln!(
                out,
                "\tset {} {{ type {}; flags timeout; }}\t# blocked scanners; an element's timeout releases it",
                blocked_set(family),
                address_type(family),
            );
        }
    }
    if spec.blocked_ranges {
        for family in [IpFamily::V4, IpFamily::V6] {
            write_interval_set(
                &mut out,
                blocked_range_set(family),
                address_type(family),
                "",
                "networks the fleet bans, kept by nfsentry",
            );
        }
    }
    if !spec.blocks_only {
        write_detector_sets(&mut out, spec);
    }
    let _ = writeln!(out, "\tchain {} {{", PREROUTING_CHAIN.to_string_lossy());
    let _ = writeln!(
        out,
        "\t\ttype filter hook prerouting priority mangle; policy accept;\t# {PREROUTING_PRIORITY}: after conntrack (-200) so ct state is known"
    );
    for rule in spec.prerouting_rules() {
        let _ = writeln!(
            out,
            "\t\t{}\t# {}",
            rule.nft_text(spec.queue),
            rule.reason()
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");

    if !spec.ingress_devices.is_empty() {
        let devices = spec
            .ingress_devices
            .iter()
            .map(|device| nft_quoted(device))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "table netdev {} {{", spec.table);
        let _ = writeln!(out, "\tchain {} {{", SHORT_HEADER_CHAIN.to_string_lossy());
        let _ = writeln!(
            out,
            "\t\ttype filter hook ingress devices = {{ {devices} }} priority {SHORT_HEADER_PRIORITY}; policy accept;\t# ingress runs before IPv4 header checks"
        );
        let _ = writeln!(
            out,
            "\t\t{}\t# IPv4 header under 20 bytes: the kernel drops these before any IP hook",
            short_header_rule_text(spec.nflog_group)
        );
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "}}");
    }
    out
}

/// The table the blocked-sets template names when the config names none: the usual table of a
/// distribution's `/etc/nftables.conf`.
pub const EXAMPLE_BLOCKED_TABLE: &str = "filter";

/// The template an admin loads with their own ruleset for `respond.blocked_table`: the inet
/// table `table` with the two blocked sets, and the drop rules to place, as comments. Flags as
/// nfsentry's own sets have them (`timeout`: elements carry their block's time left); single
/// addresses only, so no `interval`. `nft -f` takes it as it is, and a `table inet NAME { ... }`
/// of the admin's in the same ruleset adds to it.
pub fn render_blocked_sets(table: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#!/usr/sbin/nft -f\n\
         # nfsentry: the sets `[respond] blocked_table = \"inet {table}\"` puts blocked sources in.\n\
         # nfsentry adds and deletes their elements only; it never creates, flushes or deletes these\n\
         # sets or anything else in your table. While they are missing it keeps the blocks in its\n\
         # journal and puts them in once they exist. Load this file with your ruleset, e.g. in\n\
         # /etc/nftables.conf after `flush ruleset`:\n\
         #   include \"/usr/share/nfsentry/rules/blocked-sets.nft\"\n\
         # Your own `table inet {table} {{ ... }}` in the same ruleset adds to this one. Then drop\n\
         # the blocked sources where you want them dropped. Ahead of nfsentry's queue chain\n\
         # (priority mangle, -150) a blocked scanner costs nothing more, e.g. in your table:\n\
         #   chain drop_blocked {{\n\
         #     type filter hook prerouting priority raw; policy accept;\n\
         #     ip saddr @{v4} drop\n\
         #     ip6 saddr @{v6} drop\n\
         #   }}\n\
         # or as the first rules of your input chain. Regenerate with:\n\
         #   nfsentry rules --blocked-sets --config <a config with blocked_table = \"inet {table}\">",
        v4 = blocked_set(IpFamily::V4),
        v6 = blocked_set(IpFamily::V6),
    );
    let _ = writeln!(out, "table inet {table} {{");
    for family in [IpFamily::V4, IpFamily::V6] {
        let _ = writeln!(
            out,
            "\tset {} {{ type {}; flags timeout; }}\t# blocked by nfsentry; an element's timeout releases it",
            blocked_set(family),
            address_type(family),
        );
    }
    let _ = writeln!(out, "}}");
    out
}

/// The ignore and port sets and, with handshake checks, their chains: everything the detector
/// needs besides the prerouting chain.
fn write_detector_sets(out: &mut String, spec: &RulesetSpec) {
    let ignore_v4 = spec.ignore_v4_intervals();
    let ignore_v6 = spec.ignore_v6_intervals();
    write_interval_set(
        out,
        ignore_set(IpFamily::V4),
        address_type(IpFamily::V4),
        &ignore_v4.nft_text(),
        "sources never sent to the detector",
    );
    write_interval_set(
        out,
        ignore_set(IpFamily::V6),
        address_type(IpFamily::V6),
        &ignore_v6.nft_text(),
        "sources never sent to the detector",
    );
    for transport in [Transport::Tcp, Transport::Udp] {
        write_interval_set(
            out,
            port_set(transport),
            "inet_service",
            &spec.port_intervals(transport).nft_text(),
            "watched ports",
        );
    }
    if let Some(mark) = spec.reply_mark {
        let _ = writeln!(
            out,
            "\tchain {} {{",
            HANDSHAKE_ANSWER_CHAIN.to_string_lossy()
        );
        for rule in HANDSHAKE_ANSWER_RULES {
            let _ = writeln!(
                out,
                "\t\t{}\t# {}",
                rule.nft_text(spec.queue),
                rule.reason()
            );
        }
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(
            out,
            "\tchain {} {{",
            HANDSHAKE_OUTPUT_CHAIN.to_string_lossy()
        );
        let _ = writeln!(
            out,
            "\t\ttype filter hook output priority raw; policy accept;\t# {HANDSHAKE_OUTPUT_PRIORITY}: before conntrack (-200)"
        );
        let rule = HandshakeRule::UntrackReplies(mark);
        let _ = writeln!(
            out,
            "\t\t{}\t# {}",
            rule.nft_text(spec.queue),
            rule.reason()
        );
        let _ = writeln!(out, "\t}}");
    }
}

fn address_type(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    }
}

fn write_interval_set(out: &mut String, name: &str, key_type: &str, elements: &str, why: &str) {
    let elements = if elements.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {elements} }}")
    };
    let _ = writeln!(
        out,
        "\tset {name} {{ type {key_type}; flags interval;{elements} }}\t# {why}"
    );
}

/// A device name as an `nft` string. Always quoted: a plain word can be read as a keyword
/// (a device named `ip`) or as syntax (`0wire`, `we:ird`). `nft` strings have no escape for
/// `"`, so names holding one are refused by the config check, never rendered.
fn nft_quoted(name: &str) -> String {
    format!("\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RulesetSpec {
        RulesetSpec {
            table: "nfsentry".to_owned(),
            queue: QueueRange::single(0),
            tcp_ports: vec![(1, 1), (11, 11), (32771, 32774)],
            udp_ports: vec![],
            ignore_v4: vec!["127.0.0.0/8".parse().unwrap()],
            ignore_v6: vec!["::1/128".parse().unwrap()],
            ingress_devices: vec!["eth0".to_owned(), "eth1".to_owned()],
            nflog_group: 7219,
            blocked_ranges: false,
            reply_mark: None,
            blocked_table: None,
            blocks_only: false,
        }
    }

    fn v4(list: &[&str]) -> IntervalList<Ipv4Addr> {
        let spec = RulesetSpec {
            ignore_v4: list.iter().map(|s| s.parse().unwrap()).collect(),
            ..spec()
        };
        spec.ignore_v4_intervals()
    }

    fn v6(list: &[&str]) -> IntervalList<Ipv6Addr> {
        let spec = RulesetSpec {
            ignore_v6: list.iter().map(|s| s.parse().unwrap()).collect(),
            ..spec()
        };
        spec.ignore_v6_intervals()
    }

    /// The rendered line of the set called `name`.
    fn set_line(text: &str, name: &str) -> String {
        let prefix = format!("\tset {name} {{");
        text.lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no set {name} in\n{text}"))
            .to_owned()
    }

    #[test]
    fn overlapping_and_contained_cidrs_merge() {
        let merged = v4(&["10.0.0.0/8", "10.1.2.0/24", "192.0.2.0/25", "192.0.2.64/26"]);
        assert_eq!(merged.nft_text(), "10.0.0.0/8, 192.0.2.0/25");
    }

    #[test]
    fn adjacent_cidrs_merge_into_a_prefix_or_a_range() {
        assert_eq!(
            v4(&["198.51.100.0/25", "198.51.100.128/25"]).nft_text(),
            "198.51.100.0/24"
        );
        assert_eq!(
            v4(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]).nft_text(),
            "10.0.0.0-10.0.2.255"
        );
    }

    #[test]
    fn unsorted_input_comes_out_sorted_and_host_bits_are_dropped() {
        assert_eq!(
            v4(&["192.0.2.7/32", "127.0.0.1/8", "10.0.0.0/8"]).nft_text(),
            "10.0.0.0/8, 127.0.0.0/8, 192.0.2.7"
        );
    }

    #[test]
    fn ipv6_prefixes_single_addresses_and_merges() {
        assert_eq!(
            v6(&["2001:db8::/33", "2001:db8:8000::/33", "::1/128", "::1/128"]).nft_text(),
            "::1, 2001:db8::/32"
        );
        assert_eq!(v6(&["::/0", "2001:db8::/32"]).nft_text(), "::/0");
    }

    #[test]
    fn port_ranges_merge_when_they_overlap_or_touch() {
        let spec = RulesetSpec {
            udp_ports: vec![(700, 700), (1, 1), (7, 9), (9, 12), (13, 13), (640, 641)],
            ..spec()
        };
        let udp = spec.port_intervals(Transport::Udp);
        assert_eq!(udp.nft_text(), "1, 7-13, 640-641, 700");
        assert_eq!(
            spec.port_intervals(Transport::Tcp).nft_text(),
            "1, 11, 32771-32774"
        );
    }

    #[test]
    fn empty_and_inverted_ranges_contribute_nothing() {
        let list = IntervalList::from_ranges([
            #[allow(clippy::reversed_empty_ranges)]
            (10u16..=5),
            3..=3,
        ]);
        assert_eq!(list.ranges(), &[3..=3]);
        assert!(IntervalList::<u16>::from_ranges([]).is_empty());
    }

    #[test]
    fn a_range_reaching_the_top_swallows_everything_after_it() {
        let list = IntervalList::from_ranges([65000u16..=65535, 65535..=65535, 1..=2]);
        assert_eq!(list.nft_text(), "1-2, 65000-65535");
    }

    #[test]
    fn kernel_encoding_matches_what_nft_sends() {
        // `nft --debug=netlink` for { 1, 11, 32771-32774 }: 0 end, 1, 2 end, 11, 12 end,
        // 32771, 32775 end.
        let ports = spec().port_intervals(Transport::Tcp);
        let got: Vec<(u16, IntervalBoundary)> = ports
            .kernel_elements()
            .into_iter()
            .map(|e| (e.key, e.boundary))
            .collect();
        use IntervalBoundary::*;
        assert_eq!(
            got,
            vec![
                (0, End),
                (1, Start),
                (2, End),
                (11, Start),
                (12, End),
                (32771, Start),
                (32775, End)
            ]
        );
    }

    #[test]
    fn kernel_encoding_at_both_ends_of_the_key_space() {
        use IntervalBoundary::*;
        // { 0-10, 65000-65535 }: no leading end element, no end after the open range.
        let ports = IntervalList::from_ranges([0u16..=10, 65000..=65535]);
        let got: Vec<(u16, IntervalBoundary)> = ports
            .kernel_elements()
            .into_iter()
            .map(|e| (e.key, e.boundary))
            .collect();
        assert_eq!(got, vec![(0, Start), (11, End), (65000, StartOpen)]);

        let everything = v4(&["0.0.0.0/0"]);
        assert_eq!(everything.nft_text(), "0.0.0.0/0");
        assert_eq!(
            everything.kernel_elements(),
            vec![IntervalElement {
                key: Ipv4Addr::UNSPECIFIED,
                boundary: StartOpen
            }]
        );
        assert!(IntervalList::<u16>::from_ranges([])
            .kernel_elements()
            .is_empty());
    }

    #[test]
    fn rendered_sets_show_merged_elements() {
        let spec = RulesetSpec {
            ignore_v4: vec![
                "127.0.0.1/8".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
                "192.0.2.128/25".parse().unwrap(),
            ],
            ..spec()
        };
        let text = render(&spec, QueueMode::Native);
        assert!(set_line(&text, "ignore_v4").starts_with(
            "\tset ignore_v4 { type ipv4_addr; flags interval; elements = { 127.0.0.0/8, 192.0.2.0/24 } }"
        ));
        assert!(set_line(&text, "ignore_v6")
            .starts_with("\tset ignore_v6 { type ipv6_addr; flags interval; elements = { ::1 } }"));
        assert!(set_line(&text, "tcp_ports").starts_with(
            "\tset tcp_ports { type inet_service; flags interval; elements = { 1, 11, 32771-32774 } }"
        ));
    }

    #[test]
    fn empty_sets_are_declared_without_elements() {
        let spec = RulesetSpec {
            ignore_v4: vec![],
            ignore_v6: vec![],
            tcp_ports: vec![],
            ..spec()
        };
        let text = render(&spec, QueueMode::Native);
        for (name, key) in [
            ("ignore_v4", "ipv4_addr"),
            ("ignore_v6", "ipv6_addr"),
            ("tcp_ports", "inet_service"),
            ("udp_ports", "inet_service"),
        ] {
            let line = set_line(&text, name);
            assert!(
                line.starts_with(&format!(
                    "\tset {name} {{ type {key}; flags interval; }}\t#"
                )),
                "{line}"
            );
        }
        assert!(set_line(&text, "blocked_v4")
            .starts_with("\tset blocked_v4 { type ipv4_addr; flags timeout; }"));
        assert!(set_line(&text, "blocked_v6")
            .starts_with("\tset blocked_v6 { type ipv6_addr; flags timeout; }"));
    }

    #[test]
    fn several_queues_render_as_a_queue_range() {
        let spec = RulesetSpec {
            queue: QueueRange::new(0, 3).unwrap(),
            ..spec()
        };
        let text = render(&spec, QueueMode::Native);
        assert!(text.contains("udp dport @udp_ports counter queue num 0-3 bypass"));
        // Spread by address, never by CPU: one source must stay on one reader.
        assert!(!text.contains("fanout"));
    }

    #[test]
    fn rendered_chain_has_every_rule_in_order_with_a_comment() {
        let spec = RulesetSpec {
            queue: QueueRange::single(3),
            ..spec()
        };
        let text = render(&spec, QueueMode::Compat);
        let body: Vec<(&str, &str)> = text
            .lines()
            .skip_while(|line| !line.starts_with("\tchain prerouting {"))
            .skip(2)
            .take_while(|line| *line != "\t}")
            .map(|line| {
                line.trim()
                    .split_once("\t# ")
                    .expect("every rule has a comment")
            })
            .collect();
        let rules: Vec<&str> = body.iter().map(|(rule, _)| *rule).collect();
        assert_eq!(
            rules,
            [
                "ip saddr @blocked_v4 counter drop",
                "ip6 saddr @blocked_v6 counter drop",
                "ct state established,related accept",
                "fib daddr type != local accept",
                "ip saddr @ignore_v4 accept",
                "ip6 saddr @ignore_v6 accept",
                "socket transparent 0 accept",
                "ip hdrlength > 5 counter queue num 3 bypass",
                "exthdr rt exists counter queue num 3 bypass",
                "tcp flags & (fin|syn|rst|ack) == 0x0 counter queue num 3 bypass",
                "tcp flags & (fin|ack) == fin counter queue num 3 bypass",
                "tcp flags & (fin|syn) == fin|syn counter queue num 3 bypass",
                "tcp flags & (syn|rst) == syn|rst counter queue num 3 bypass",
                "tcp dport @tcp_ports counter queue num 3 bypass",
                "udp dport @udp_ports counter queue num 3 bypass",
            ]
        );
        assert!(body.iter().all(|(_, why)| !why.is_empty()));
        assert!(text.contains("\t\ttype filter hook prerouting priority mangle; policy accept;\t#"));
        assert!(text.starts_with(
            "# nfsentry ruleset; the queue statements are installed as xt NFQUEUE via nft compat."
        ));
    }

    #[test]
    fn handshake_checks_add_their_chains_and_a_jump_ahead_of_the_blocked_drop() {
        assert!(!render(&spec(), QueueMode::Native).contains("chain handshake_"));
        let spec = RulesetSpec {
            queue: QueueRange::single(3),
            reply_mark: Some(0x6e66_7379),
            ..spec()
        };
        let text = render(&spec, QueueMode::Native);
        let rules = |chain: &str| -> Vec<String> {
            text.lines()
                .skip_while(|line| *line != format!("\tchain {chain} {{"))
                .skip(1)
                .take_while(|line| *line != "\t}")
                .filter(|line| !line.contains("type filter hook"))
                .map(|line| {
                    line.trim()
                        .split_once("\t# ")
                        .expect("a comment")
                        .0
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            rules("handshake_answer"),
            ["socket transparent 0 return", "counter queue num 3 bypass"]
        );
        assert_eq!(rules("handshake_output"), ["meta mark 0x6e667379 notrack"]);
        assert!(text.contains("\t\ttype filter hook output priority raw; policy accept;\t#"));
        let prerouting = rules("prerouting");
        assert_eq!(
            prerouting[..2],
            [
                "tcp flags == ack ct state new,invalid fib daddr type local tcp dport @tcp_ports jump handshake_answer",
                "ip saddr @blocked_v4 counter drop",
            ]
        );
        // The jump comes on top of the chain without range sets (no `[crowdsec] pull` here).
        assert_eq!(prerouting.len(), PREROUTING_RULES.len() - 2 + 1);
        // The jump's target is declared before the chain that jumps to it.
        assert!(text.find("chain handshake_answer") < text.find("chain prerouting"));
    }

    /// The rules of the prerouting chain, without comments.
    fn prerouting(text: &str) -> Vec<String> {
        text.lines()
            .skip_while(|line| !line.starts_with("\tchain prerouting {"))
            .skip(2)
            .take_while(|line| *line != "\t}")
            .map(|line| {
                line.trim()
                    .split_once("\t# ")
                    .expect("a comment")
                    .0
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn with_the_admins_table_ours_has_no_blocked_sets_nor_their_drops() {
        let spec = RulesetSpec {
            blocked_table: Some("filter".to_owned()),
            ..spec()
        };
        assert_eq!(spec.blocks_table(), "filter");
        let text = render(&spec, QueueMode::Native);
        assert!(!text.contains("set blocked_v"), "{text}");
        assert!(text.contains("your table inet filter"));
        let rules = prerouting(&text);
        assert_eq!(rules[0], "ct state established,related accept");
        assert!(rules.iter().all(|rule| !rule.contains("@blocked_v")));
        assert!(rules.iter().any(|rule| rule.contains("queue num")));
        // Nothing of ours is left to keep over a stop.
        assert!(spec.kept_at_exit().prerouting_rules().is_empty());
    }

    #[test]
    fn kept_at_exit_has_the_blocked_sets_and_drops_and_nothing_that_queues() {
        let spec = RulesetSpec {
            reply_mark: Some(0x6e66_7379),
            ..spec()
        };
        let text = render(&spec.kept_at_exit(), QueueMode::Native);
        assert_eq!(
            prerouting(&text),
            [
                "ip saddr @blocked_v4 counter drop",
                "ip6 saddr @blocked_v6 counter drop"
            ]
        );
        assert!(!text.contains("queue num"), "{text}");
        assert!(text.starts_with("# nfsentry's blocked sets, in force while it is stopped"));
        assert!(!text.contains("netdev") && !text.contains("handshake"));
        assert_eq!(text.matches("\tset ").count(), 2, "{text}");
    }

    #[test]
    fn the_blocked_sets_template_names_the_table_and_comments_the_drops() {
        let text = render_blocked_sets("fw");
        assert!(
            text.contains("table inet fw {\n\tset blocked_v4 { type ipv4_addr; flags timeout; }")
        );
        assert!(text.contains("\tset blocked_v6 { type ipv6_addr; flags timeout; }"));
        // The drop rules are the admin's to place: only in comments.
        for line in text.lines().filter(|line| line.contains("saddr @blocked")) {
            assert!(line.starts_with('#'), "{line}");
        }
    }

    #[test]
    fn netdev_table_lists_devices_and_the_log_group() {
        let text = render(&spec(), QueueMode::Native);
        let netdev = text
            .split_once("table netdev nfsentry {\n")
            .expect("netdev table present")
            .1;
        assert!(netdev.starts_with(
            "\tchain short_header {\n\t\ttype filter hook ingress devices = { \"eth0\", \"eth1\" } priority -500; policy accept;\t# ingress runs before IPv4 header checks\n\t\tip hdrlength < 5 counter log group 7219\t# "
        ), "{netdev}");
    }

    #[test]
    fn no_devices_means_no_netdev_table() {
        let spec = RulesetSpec {
            ingress_devices: vec![],
            ..spec()
        };
        let text = render(&spec, QueueMode::Native);
        assert!(!text.contains("netdev"));
        assert_eq!(text.matches("table ").count(), 1);
    }

    #[test]
    fn device_names_are_always_quoted() {
        for name in ["eth0.100", "veth-a", "ip", "0wire", "we:ird"] {
            assert_eq!(nft_quoted(name), format!("\"{name}\""));
        }
    }

    #[test]
    fn tcp_flag_probes_match_the_scans_they_name() {
        const FIN: u8 = TcpFlags::FIN;
        const SYN: u8 = TcpFlags::SYN;
        const RST: u8 = TcpFlags::RST;
        const PSH: u8 = TcpFlags::PSH;
        const ACK: u8 = TcpFlags::ACK;
        const URG: u8 = TcpFlags::URG;
        let hits = |probe: TcpFlagProbe, flags: u8| flags & probe.mask() == probe.expected();
        assert!(hits(TcpFlagProbe::NoControlFlags, 0));
        assert!(hits(TcpFlagProbe::NoControlFlags, PSH | URG));
        assert!(hits(TcpFlagProbe::FinWithoutAck, FIN | PSH | URG));
        assert!(!hits(TcpFlagProbe::FinWithoutAck, FIN | ACK));
        assert!(hits(TcpFlagProbe::SynFin, SYN | FIN));
        assert!(hits(TcpFlagProbe::SynRst, SYN | RST));
        // A normal SYN or a SYN-ACK must pass every probe.
        for probe in [
            TcpFlagProbe::NoControlFlags,
            TcpFlagProbe::FinWithoutAck,
            TcpFlagProbe::SynFin,
            TcpFlagProbe::SynRst,
        ] {
            assert!(!hits(probe, SYN), "{probe:?}");
            assert!(!hits(probe, SYN | ACK), "{probe:?}");
        }
    }

    #[test]
    fn the_built_in_config_maps_onto_the_spec() {
        let config = Config::defaults();
        let spec = RulesetSpec::from_config(&config, vec!["eth0".to_owned()]);
        assert_eq!(spec.table, "nfsentry");
        assert_eq!(spec.queue, QueueRange::single(0));
        assert_eq!(spec.nflog_group, 7219);
        assert_eq!(spec.ingress_devices, ["eth0"]);
        assert_eq!(spec.ignore_v4, ["127.0.0.0/8".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(spec.ignore_v6, ["::1/128".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(
            spec.tcp_ports
                .iter()
                .map(|&(first, last)| usize::from(last - first) + 1)
                .sum::<usize>(),
            config.monitor.tcp.len()
        );
        assert!(spec.tcp_ports.contains(&(31337, 31337)));
        assert!(spec.udp_ports.contains(&(37444, 37444)));
    }

    #[test]
    fn queue_mode_names() {
        assert_eq!(QueueMode::Native.to_string(), "native nft queue");
        assert_eq!(QueueMode::Compat.to_string(), "xt NFQUEUE via nft compat");
    }
}
