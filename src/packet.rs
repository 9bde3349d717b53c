//! Turns the bytes of one IP packet (as NFQUEUE or NFLOG hands them over, starting at the IP
//! header, possibly cut short by the copy range) into addresses, ports and flags, and names the
//! PortSentry scan type it looks like. It does no I/O, keeps no state across packets, verifies
//! no checksums (scanners send bad ones on purpose) and never decides what to do about a packet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use etherparse::err::ip::{HeaderError, LaxHeaderSliceError};
use etherparse::{IpNumber, LaxIpSlice, LaxIpv4Slice, LaxIpv6Slice};

/// The smallest legal IPv4 Internet Header Length, in 32-bit words. Anything below cannot even
/// hold the addresses, so the kernel drops it before any inet hook; scanners send it to probe.
const MIN_IPV4_HEADER_WORDS: u8 = 5;
/// Bytes of the fixed IPv4 header: enough to read protocol and both addresses.
const IPV4_FIXED_HEADER_BYTES: usize = 20;
/// Bytes of a TCP header up to and including the flags byte: all classification needs.
const TCP_BYTES_THROUGH_FLAGS: usize = 14;
/// Bytes of the fixed TCP header; options follow it.
const TCP_FIXED_HEADER_BYTES: usize = 20;
/// Bytes of a UDP header up to and including the destination port.
const UDP_BYTES_THROUGH_PORTS: usize = 4;

const IPV4_OPTION_END: u8 = 0;
const IPV4_OPTION_NOP: u8 = 1;

const TCP_OPTION_END: u8 = 0;
const TCP_OPTION_NOP: u8 = 1;
/// TCP options (kind, full length) that an operating system's connect() puts in its SYN and
/// that SYN scanners leave out: window scale, SACK-permitted and timestamps. MSS alone does
/// not count because nmap -sS sends it too.
const CONNECT_TCP_OPTIONS: [(u8, u8); 3] = [(3, 3), (4, 2), (8, 10)];

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTHENTICATION: u8 = 51;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
const IPV6_FRAGMENT_HEADER_BYTES: usize = 8;

/// The TCP flags byte exactly as sent, including the ECN bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    // Plain bytes so they combine with `|` and wrap as `TcpFlags(TcpFlags::ACK | TcpFlags::PSH)`.
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// The six flags of RFC 793. ECE and CWR are left out of classification so that an
    /// ECN-capable SYN is still a SYN.
    const CLASSIC_MASK: u8 = 0x3f;

    /// Names from the high bit down, the order PortSentry and tcpdump users read them in.
    const NAMES_HIGH_TO_LOW: [(u8, &'static str); 8] = [
        (TcpFlags::CWR, "CWR"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::FIN, "FIN"),
    ];

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if every flag set in `flags` (a combination of the constants) is also set here.
    pub const fn contains(self, flags: u8) -> bool {
        self.0 & flags == flags
    }

    /// These flags without ECE and CWR.
    pub const fn classic(self) -> TcpFlags {
        TcpFlags(self.0 & Self::CLASSIC_MASK)
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut separator = "";
        for (flag, name) in Self::NAMES_HIGH_TO_LOW {
            if self.contains(flag) {
                write!(f, "{separator}{name}")?;
                separator = " ";
            }
        }
        Ok(())
    }
}

/// The IP options worth telling apart: the source-routing ones let a scanner hide behind a
/// spoofed address, record-route and timestamp map the path. Padding (EOL, NOP) is not an option.
/// IPv6 has no options field; its Routing extension header is the source-routing equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpOption {
    /// Type 131.
    LooseSourceRoute,
    /// Type 137.
    StrictSourceRoute,
    /// Type 7.
    RecordRoute,
    /// Type 68.
    Timestamp,
    /// An IPv6 Routing extension header (next header 43), of any routing type: type 0 is
    /// deprecated (RFC 5095) yet still sent by scanners and evasion tools, and types 2-4 steer
    /// a packet just as well. Never the result of an IPv4 option byte.
    Ipv6RoutingHeader,
    /// Any other IPv4 option type, and any option whose length byte is missing or impossible.
    Other,
}

impl IpOption {
    /// In the order `IpOptions` lists them.
    const ALL: [IpOption; 6] = [
        IpOption::LooseSourceRoute,
        IpOption::StrictSourceRoute,
        IpOption::RecordRoute,
        IpOption::Timestamp,
        IpOption::Ipv6RoutingHeader,
        IpOption::Other,
    ];

    /// Maps an IPv4 option type byte; EOL and NOP are padding, so they have no `IpOption`.
    pub const fn from_type(option_type: u8) -> Option<IpOption> {
        match option_type {
            IPV4_OPTION_END | IPV4_OPTION_NOP => None,
            131 => Some(IpOption::LooseSourceRoute),
            137 => Some(IpOption::StrictSourceRoute),
            7 => Some(IpOption::RecordRoute),
            68 => Some(IpOption::Timestamp),
            _ => Some(IpOption::Other),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            IpOption::LooseSourceRoute => "loose-source-route",
            IpOption::StrictSourceRoute => "strict-source-route",
            IpOption::RecordRoute => "record-route",
            IpOption::Timestamp => "timestamp",
            IpOption::Ipv6RoutingHeader => "ipv6-routing-header",
            IpOption::Other => "other",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            IpOption::LooseSourceRoute => 1 << 0,
            IpOption::StrictSourceRoute => 1 << 1,
            IpOption::RecordRoute => 1 << 2,
            IpOption::Timestamp => 1 << 3,
            IpOption::Other => 1 << 4,
            IpOption::Ipv6RoutingHeader => 1 << 5,
        }
    }
}

// `IpOptions` keeps one bit per option in a `u8`: a ninth option needs a wider field.
const _: () = assert!(IpOption::ALL.len() <= u8::BITS as usize);

impl fmt::Display for IpOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of option kinds a packet carries (IPv4 options, or an IPv6 routing header); a bitset
/// so parsing never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpOptions(u8);

impl IpOptions {
    pub const EMPTY: IpOptions = IpOptions(0);

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, option: IpOption) -> bool {
        self.0 & option.bit() != 0
    }

    pub fn insert(&mut self, option: IpOption) {
        self.0 |= option.bit();
    }

    /// The options present, always in the same order whatever order they were sent in.
    pub fn iter(self) -> impl Iterator<Item = IpOption> {
        IpOption::ALL
            .into_iter()
            .filter(move |option| self.contains(*option))
    }

    /// Walks the option bytes of an IPv4 header (everything after the fixed 20 bytes).
    /// The walk stops at EOL, and at a length byte that is missing, below 2 or longer than
    /// what is left; such a malformed option is recorded as `Other` because a sender that
    /// mangles options on purpose is as interesting as one that sends odd ones.
    pub fn from_ipv4_option_bytes(option_bytes: &[u8]) -> IpOptions {
        let mut found = IpOptions::EMPTY;
        let mut rest = option_bytes;
        while let Some((&option_type, after_type)) = rest.split_first() {
            let Some(option) = IpOption::from_type(option_type) else {
                if option_type == IPV4_OPTION_END {
                    break;
                }
                rest = after_type;
                continue;
            };
            let declared_len = after_type.first().map(|&len| usize::from(len));
            match declared_len.and_then(|len| rest.get(len..).filter(|_| len >= 2)) {
                Some(after_option) => {
                    found.insert(option);
                    rest = after_option;
                }
                None => {
                    found.insert(IpOption::Other);
                    break;
                }
            }
        }
        found
    }
}

impl FromIterator<IpOption> for IpOptions {
    fn from_iter<I: IntoIterator<Item = IpOption>>(options: I) -> IpOptions {
        let mut set = IpOptions::EMPTY;
        for option in options {
            set.insert(option);
        }
        set
    }
}

impl fmt::Display for IpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut separator = "";
        for option in self.iter() {
            write!(f, "{separator}{option}")?;
            separator = ", ";
        }
        Ok(())
    }
}

/// What the packet carries above IP, as far as the captured bytes show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: TcpFlags,
        /// A SYN carrying the options an operating system's connect() sends (see
        /// `CONNECT_TCP_OPTIONS`); tells a plain connect() from a half-open SYN scan.
        connect_like: bool,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP and every other protocol; also TCP or UDP whose header is not in the captured
    /// bytes (tiny first fragments, cut-off packets) and every non-first fragment, whose
    /// bytes are payload that only looks like a header.
    Other {
        protocol: u8,
    },
}

impl Transport {
    /// The destination port, 0 when the transport has none.
    pub const fn dport(&self) -> u16 {
        match *self {
            Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => dport,
            Transport::Other { .. } => 0,
        }
    }

    /// The source port, 0 when the transport has none.
    pub const fn sport(&self) -> u16 {
        match *self {
            Transport::Tcp { sport, .. } | Transport::Udp { sport, .. } => sport,
            Transport::Other { .. } => 0,
        }
    }

    /// The IP protocol number (IPv6: the header after the extension headers).
    pub const fn protocol_number(&self) -> u8 {
        match *self {
            Transport::Tcp { .. } => IpNumber::TCP.0,
            Transport::Udp { .. } => IpNumber::UDP.0,
            Transport::Other { protocol } => protocol,
        }
    }

    /// The protocol word PortSentry's logs use: "TCP", "UDP", or "IP" for anything else.
    pub const fn protocol_name(&self) -> &'static str {
        match self {
            Transport::Tcp { .. } => "TCP",
            Transport::Udp { .. } => "UDP",
            Transport::Other { .. } => "IP",
        }
    }
}

/// One parsed packet: only what detection needs, copied out so it outlives the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    /// IPv4 options present; for IPv6, `Ipv6RoutingHeader` if the extension headers hold one.
    pub ip_options: IpOptions,
    /// The IPv4 Internet Header Length in 32-bit words as sent (may be below 5); 0 for IPv6.
    pub header_words: u8,
}

/// Why bytes could not be read as an IP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty packet")]
    Empty,
    #[error("IP version {0} is neither 4 nor 6")]
    UnknownVersion(u8),
    #[error("packet truncated: {needed} bytes needed to read the IP header, {got} captured")]
    Truncated { needed: usize, got: usize },
    /// Kept for anything the IP header parser rejects that the checks above do not foresee.
    #[error("IP header rejected")]
    Rejected(#[source] LaxHeaderSliceError),
}

impl From<LaxHeaderSliceError> for ParseError {
    fn from(error: LaxHeaderSliceError) -> ParseError {
        match error {
            LaxHeaderSliceError::Len(len) => ParseError::Truncated {
                needed: len.required_len,
                got: len.len,
            },
            LaxHeaderSliceError::Content(HeaderError::UnsupportedIpVersion { version_number }) => {
                ParseError::UnknownVersion(version_number)
            }
            other => ParseError::Rejected(other),
        }
    }
}

/// Parses one packet that starts at the IP header. Truncation by the copy range is tolerated
/// as long as the IP header itself is complete; checksums and length fields are not trusted.
pub fn parse(bytes: &[u8]) -> Result<Packet, ParseError> {
    let first_byte = *bytes.first().ok_or(ParseError::Empty)?;
    match first_byte >> 4 {
        4 => {
            let header_words = first_byte & 0x0f;
            if header_words < MIN_IPV4_HEADER_WORDS {
                // etherparse refuses these outright, but they are a scan signature of their own.
                return parse_short_ipv4(bytes, header_words);
            }
        }
        6 => {}
        version => return Err(ParseError::UnknownVersion(version)),
    }
    // The stop error only says where IPv6 extension parsing gave up; the payload's protocol
    // then names the extension header that failed, which is what `Transport::Other` reports.
    let (ip, _extension_stop) = LaxIpSlice::from_slice(bytes)?;
    Ok(match ip {
        LaxIpSlice::Ipv4(ipv4) => packet_from_ipv4(&ipv4),
        LaxIpSlice::Ipv6(ipv6) => packet_from_ipv6(&ipv6),
    })
}

/// An IPv4 header claiming fewer than 5 words: the fixed fields are still where they always
/// are, so report them; nothing after them can be located.
fn parse_short_ipv4(bytes: &[u8], header_words: u8) -> Result<Packet, ParseError> {
    let fixed: &[u8; IPV4_FIXED_HEADER_BYTES] = bytes
        .get(..IPV4_FIXED_HEADER_BYTES)
        .and_then(|head| head.try_into().ok())
        .ok_or(ParseError::Truncated {
            needed: IPV4_FIXED_HEADER_BYTES,
            got: bytes.len(),
        })?;
    Ok(Packet {
        src: IpAddr::V4(Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15])),
        dst: IpAddr::V4(Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19])),
        transport: Transport::Other { protocol: fixed[9] },
        ip_options: IpOptions::EMPTY,
        header_words,
    })
}

fn packet_from_ipv4(ipv4: &LaxIpv4Slice<'_>) -> Packet {
    let header = ipv4.header();
    let payload = ipv4.payload();
    let transport = if header.fragments_offset().value() != 0 {
        Transport::Other {
            protocol: payload.ip_number.0,
        }
    } else {
        transport_from(payload.ip_number, payload.payload)
    };
    Packet {
        src: IpAddr::V4(header.source_addr()),
        dst: IpAddr::V4(header.destination_addr()),
        transport,
        ip_options: IpOptions::from_ipv4_option_bytes(header.options()),
        header_words: header.ihl(),
    }
}

fn packet_from_ipv6(ipv6: &LaxIpv6Slice<'_>) -> Packet {
    let header = ipv6.header();
    let payload = ipv6.payload();
    let extensions = Ipv6ExtensionWalk::new(header.next_header().0, ipv6.extensions().slice());
    let transport = match extensions.later_fragment_protocol {
        Some(protocol) => Transport::Other { protocol },
        None => transport_from(payload.ip_number, payload.payload),
    };
    Packet {
        src: IpAddr::V6(header.source_addr()),
        dst: IpAddr::V6(header.destination_addr()),
        transport,
        ip_options: extensions.options,
        header_words: 0,
    }
}

/// What the IPv6 extension header chain says, as far as the walk could follow it.
///
/// etherparse keeps walking "headers" after a fragment header with a non-zero offset although
/// what follows is mid-stream payload, so the walk is redone here, stopping there. It uses
/// checked slicing because etherparse's own iterator reads unchecked past the end when its
/// extension parsing stopped on an error.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ipv6ExtensionWalk {
    /// The protocol a fragment header with a non-zero offset announces: the bytes after it are
    /// the middle of a payload, not headers.
    later_fragment_protocol: Option<u8>,
    /// `Ipv6RoutingHeader` once a header announces a routing header as the next one, even if
    /// the copy range cut the routing header itself off.
    options: IpOptions,
}

impl Ipv6ExtensionWalk {
    /// `extension_bytes` are the extension headers etherparse read; the last next-header field
    /// in them names the header that stopped its walk, which may be a truncated one.
    fn new(first_header: u8, extension_bytes: &[u8]) -> Ipv6ExtensionWalk {
        let mut walk = Ipv6ExtensionWalk::default();
        // `None` only says where the walk ended: at the transport, at an unknown header, or
        // where the captured bytes ran out. What was found until then is in `walk`.
        let _ = walk.follow(first_header, extension_bytes);
        walk
    }

    fn follow(&mut self, first_header: u8, extension_bytes: &[u8]) -> Option<()> {
        let mut next_header = first_header;
        let mut rest = extension_bytes;
        loop {
            let header_len = match next_header {
                IPV6_FRAGMENT => {
                    let fragment: &[u8; IPV6_FRAGMENT_HEADER_BYTES] =
                        rest.get(..IPV6_FRAGMENT_HEADER_BYTES)?.try_into().ok()?;
                    let offset_units = u16::from_be_bytes([fragment[2], fragment[3]]) >> 3;
                    if offset_units != 0 {
                        self.later_fragment_protocol = Some(fragment[0]);
                        return None;
                    }
                    IPV6_FRAGMENT_HEADER_BYTES
                }
                IPV6_ROUTING => {
                    self.options.insert(IpOption::Ipv6RoutingHeader);
                    (usize::from(*rest.get(1)?) + 1) * 8
                }
                IPV6_HOP_BY_HOP | IPV6_DESTINATION_OPTIONS => (usize::from(*rest.get(1)?) + 1) * 8,
                IPV6_AUTHENTICATION => (usize::from(*rest.get(1)?) + 2) * 4,
                _ => return None,
            };
            next_header = *rest.first()?;
            rest = rest.get(header_len..)?;
        }
    }
}

fn transport_from(protocol: IpNumber, segment: &[u8]) -> Transport {
    let parsed = match protocol {
        IpNumber::TCP => tcp_from(segment),
        IpNumber::UDP => udp_from(segment),
        _ => None,
    };
    parsed.unwrap_or(Transport::Other {
        protocol: protocol.0,
    })
}

/// Reads TCP from as many bytes as were captured: ports and flags need only 14, and the
/// options are read as far as both the data offset and the capture allow.
fn tcp_from(segment: &[u8]) -> Option<Transport> {
    let head: &[u8; TCP_BYTES_THROUGH_FLAGS] =
        segment.get(..TCP_BYTES_THROUGH_FLAGS)?.try_into().ok()?;
    let flags = TcpFlags(head[13]);
    let header_len = usize::from(head[12] >> 4) * 4;
    // A data offset below 5 words leaves no options; the range is then empty or reversed.
    let options = segment
        .get(TCP_FIXED_HEADER_BYTES..header_len.min(segment.len()))
        .unwrap_or_default();
    Some(Transport::Tcp {
        sport: u16::from_be_bytes([head[0], head[1]]),
        dport: u16::from_be_bytes([head[2], head[3]]),
        flags,
        connect_like: flags.contains(TcpFlags::SYN) && carries_connect_options(options),
    })
}

fn udp_from(segment: &[u8]) -> Option<Transport> {
    let head: &[u8; UDP_BYTES_THROUGH_PORTS] =
        segment.get(..UDP_BYTES_THROUGH_PORTS)?.try_into().ok()?;
    Some(Transport::Udp {
        sport: u16::from_be_bytes([head[0], head[1]]),
        dport: u16::from_be_bytes([head[2], head[3]]),
    })
}

/// True if the TCP options hold one of `CONNECT_TCP_OPTIONS` with its proper length. An
/// option counts once its kind and length bytes are captured, even if the copy range cut its
/// body off; a malformed length ends the walk.
fn carries_connect_options(options: &[u8]) -> bool {
    let mut rest = options;
    while let Some((&kind, after_kind)) = rest.split_first() {
        match kind {
            TCP_OPTION_END => return false,
            TCP_OPTION_NOP => rest = after_kind,
            _ => {
                let Some(&len) = after_kind.first() else {
                    return false;
                };
                if CONNECT_TCP_OPTIONS.contains(&(kind, len)) {
                    return true;
                }
                match rest.get(usize::from(len)..) {
                    Some(after_option) if len >= 2 => rest = after_option,
                    _ => return false,
                }
            }
        }
    }
    false
}

/// The scan types PortSentry reports, plus the ones it only lumped together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// A SYN that looks like a full connect() from an operating system's TCP stack.
    Connect,
    /// A bare SYN as half-open scanners send it.
    SynNormal,
    Fin,
    Null,
    /// FIN, URG and PSH.
    Xmas,
    /// All six classic flags.
    FullXmas,
    Udp,
    /// Any other TCP flag combination, as sent.
    Unknown(TcpFlags),
    /// Not TCP or UDP, or no transport header to read; carries the IP protocol number.
    OtherProtocol(u8),
    IpOptions(IpOptions),
    /// An IPv4 header length below 5 words, as sent.
    BadHeaderLength(u8),
}

impl ScanKind {
    /// Every [`ScanKind::word`], in the order of [`ScanKind::word_index`].
    pub const WORDS: [&'static str; 10] = [
        "Connect",
        "SYN/Normal",
        "FIN",
        "NULL",
        "XMAS",
        "FULL-XMAS",
        "UDP",
        "Unknown",
        "IP-options",
        "Bad-IP-header-length",
    ];

    /// Where this kind's word is in [`ScanKind::WORDS`], for counting detections by type in a
    /// fixed array.
    pub const fn word_index(&self) -> usize {
        match self {
            ScanKind::Connect => 0,
            ScanKind::SynNormal => 1,
            ScanKind::Fin => 2,
            ScanKind::Null => 3,
            ScanKind::Xmas => 4,
            ScanKind::FullXmas => 5,
            ScanKind::Udp => 6,
            ScanKind::Unknown(_) | ScanKind::OtherProtocol(_) => 7,
            ScanKind::IpOptions(_) => 8,
            ScanKind::BadHeaderLength(_) => 9,
        }
    }

    /// The fixed word log watchers match on.
    pub const fn word(&self) -> &'static str {
        match self {
            ScanKind::Connect => "Connect",
            ScanKind::SynNormal => "SYN/Normal",
            ScanKind::Fin => "FIN",
            ScanKind::Null => "NULL",
            ScanKind::Xmas => "XMAS",
            ScanKind::FullXmas => "FULL-XMAS",
            ScanKind::Udp => "UDP",
            ScanKind::Unknown(_) | ScanKind::OtherProtocol(_) => "Unknown",
            ScanKind::IpOptions(_) => "IP-options",
            ScanKind::BadHeaderLength(_) => "Bad-IP-header-length",
        }
    }
}

impl fmt::Display for ScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word();
        match self {
            ScanKind::Unknown(flags) => write!(f, "{word} (flags: {flags})"),
            ScanKind::OtherProtocol(protocol) => write!(f, "{word} (IP protocol {protocol})"),
            ScanKind::IpOptions(options) => write!(f, "{word} ({options})"),
            ScanKind::BadHeaderLength(1) => write!(f, "{word} (1 word)"),
            ScanKind::BadHeaderLength(words) => write!(f, "{word} ({words} words)"),
            _ => f.write_str(word),
        }
    }
}

/// Names the scan type. Header anomalies come first because they are deliberate evasion
/// whatever the transport says; then the transport decides.
pub fn classify(packet: &Packet) -> ScanKind {
    if packet.src.is_ipv4() && packet.header_words < MIN_IPV4_HEADER_WORDS {
        return ScanKind::BadHeaderLength(packet.header_words);
    }
    if !packet.ip_options.is_empty() {
        return ScanKind::IpOptions(packet.ip_options);
    }
    match packet.transport {
        Transport::Tcp {
            flags,
            connect_like,
            ..
        } => classify_tcp(flags, connect_like),
        Transport::Udp { .. } => ScanKind::Udp,
        Transport::Other { protocol } => ScanKind::OtherProtocol(protocol),
    }
}

fn classify_tcp(flags: TcpFlags, connect_like: bool) -> ScanKind {
    const NONE: u8 = 0;
    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const XMAS: u8 = TcpFlags::FIN | TcpFlags::URG | TcpFlags::PSH;
    const FULL_XMAS: u8 = TcpFlags::CLASSIC_MASK;
    match flags.classic().bits() {
        NONE => ScanKind::Null,
        XMAS => ScanKind::Xmas,
        FULL_XMAS => ScanKind::FullXmas,
        FIN => ScanKind::Fin,
        SYN if connect_like => ScanKind::Connect,
        SYN => ScanKind::SynNormal,
        _ => ScanKind::Unknown(flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn every_kind_counts_under_its_own_word() {
        for kind in [
            ScanKind::Connect,
            ScanKind::SynNormal,
            ScanKind::Fin,
            ScanKind::Null,
            ScanKind::Xmas,
            ScanKind::FullXmas,
            ScanKind::Udp,
            ScanKind::Unknown(TcpFlags(TcpFlags::SYN | TcpFlags::FIN)),
            ScanKind::OtherProtocol(1),
            ScanKind::BadHeaderLength(4),
        ] {
            assert_eq!(ScanKind::WORDS[kind.word_index()], kind.word());
        }
    }

    // Packets built with scapy and checked against tcpdump; sources 198.51.100.7 and
    // 2001:db8::7, destinations 192.0.2.10 and 2001:db8::10, TCP 40000 -> 23, UDP 53001 -> 161.
    const V4_NMAP_SYN: &str =
        "4500002c1c46000034067e41c6336407c000020a9c40001701020304000000006002040007840000020405b4";
    const V4_BARE_SYN: &str =
        "450000281c46000034067e45c6336407c000020a9c4000170102030400000000500204001f400000";
    const V4_LINUX_CONNECT_SYN: &str = "4500003c1c46400034063e31c6336407c000020a9c4000170102030400000000a002faf090330000020405b40402080a000030390000000001030307";
    const V4_WINDOWS_CONNECT_SYN: &str = "450000341c46400034063e39c6336407c000020a9c40001701020304000000008002faf0e77c0000020405b40103030801010402";
    const V4_ECN_SYN: &str =
        "4500002c1c46000034067e41c6336407c000020a9c400017010203040000000060c2040006c40000020405b4";
    const V4_XMAS: &str =
        "450000281c46000034067e45c6336407c000020a9c4000170102030400000000502904001f190000";
    const V4_FULL_XMAS: &str =
        "450000281c46000034067e45c6336407c000020a9c4000170102030400000000503f04001f030000";
    const V4_NULL: &str =
        "450000281c46000034067e45c6336407c000020a9c4000170102030400000000500004001f420000";
    const V4_FIN: &str =
        "450000281c46000034067e45c6336407c000020a9c4000170102030400000000500104001f410000";
    const V4_ACK: &str =
        "450000281c46000034067e45c6336407c000020a9c400017010203040a0b0c0d50100400091a0000";
    const V4_UDP: &str = "4500001e1c46000034117e44c6336407c000020acf0900a1000a13c43026";
    const V4_ICMP_ECHO: &str = "4500001c1c46000034017e56c6336407c000020a0800f7fd00010001";
    const V4_RECORD_ROUTE_SYN: &str = "480000341c4600003406702ec6336407c000020a070b040000000000000000009c4000170102030400000000500204001f400000";
    const V4_LSRR_TIMESTAMP_UDP: &str = "4a0000301c4600003411a9edc6336407c000020a830b04c6336401c000020a440809000000000000cf0900a1000843ee";
    const V4_XMAS_WITH_PAYLOAD: &str = "450000501c46000034067e1dc6336407c000020a9c40001701020304000000005029040005d8000041414141414141414141414141414141414141414141414141414141414141414141414141414141";
    /// Both the IP and the TCP checksum are wrong, as crafted scans often have them.
    const V4_BAD_CHECKSUM_FIN: &str =
        "450000281c4600003406deadc6336407c000020a9c400017010203040000000050010400beef0000";
    /// First 8-byte fragment of a FIN (nmap -f): the flags are in the next fragment.
    const V4_TINY_FIRST_FRAGMENT_FIN: &str =
        "4500001c1c46200034065e51c6336407c000020a9c40001701020304";
    /// Fragment at offset 8 whose payload is zeros: read as TCP it would be a NULL scan.
    const V4_LATER_FRAGMENT: &str =
        "450000241c46000134067e48c6336407c000020a00000000000000000000000000000000";
    /// A NULL scan header with the IHL set to 4 words.
    const V4_IHL_4: &str =
        "440000281c46000034067e45c6336407c000020a9c4000170102030400000000500004001f420000";
    const V6_NMAP_SYN: &str = "600000000018063420010db800000000000000000000000720010db80000000000000000000000109c40001701020304000000006002040098540000020405a0";
    const V6_LINUX_CONNECT_SYN: &str = "600000000028063420010db800000000000000000000000720010db80000000000000000000000109c4000170102030400000000a002fd201ec00000020405b40402080a000030390000000001030307";
    const V6_XMAS: &str = "600000000014063420010db800000000000000000000000720010db80000000000000000000000109c400017010203040000000050290400afd50000";
    const V6_NULL: &str = "600000000014063420010db800000000000000000000000720010db80000000000000000000000109c400017010203040000000050000400affe0000";
    const V6_UDP: &str = "600000000008113420010db800000000000000000000000720010db8000000000000000000000010cf0900a10008d4aa";
    const V6_ICMP_ECHO: &str = "6000000000083a3420010db800000000000000000000000720010db80000000000000000000000108000243200010001";
    /// FIN behind a hop-by-hop and a destination-options header.
    const V6_EXTENSIONS_FIN: &str = "600000000024003420010db800000000000000000000000720010db80000000000000000000000103c0001040000000006000104000000009c400017010203040000000050010400affd0000";
    const V6_FIRST_FRAGMENT_SYN: &str = "60000000001c2c3420010db800000000000000000000000720010db800000000000000000000001006000001000000079c400017010203040000000050020400affc0000";
    /// Fragment at offset 24 announcing TCP, zeros as payload.
    const V6_LATER_FRAGMENT: &str = "6000000000182c3420010db800000000000000000000000720010db8000000000000000000000010060000180000000700000000000000000000000000000000";
    /// SYN behind a type 0 routing header listing 2001:db8::99 (RFC 5095 deprecated it).
    const V6_ROUTING_TYPE0_SYN: &str = "60000000002c2b3420010db800000000000000000000000720010db8000000000000000000000010060200010000000020010db80000000000000000000000999c400017010203040000000050020400af730000";
    /// UDP behind a hop-by-hop header and a type 0 routing header with two addresses.
    const V6_HOP_BY_HOP_ROUTING_UDP: &str = "600000000038003420010db800000000000000000000000720010db80000000000000000000000102b00010400000000110400020000000020010db800000000000000000000009820010db8000000000000000000000099cf0900a10008d421";
    /// XMAS behind a segment routing header (routing type 4, segments left 0).
    const V6_SEGMENT_ROUTING_XMAS: &str = "60000000002c2b3420010db800000000000000000000000720010db8000000000000000000000010060204000000000020010db80000000000000000000000999c400017010203040000000050290400af4c0000";
    /// First fragment (offset 0, more fragments) carrying a routing header, then a FIN.
    const V6_FIRST_FRAGMENT_ROUTING_FIN: &str = "6000000000342c3420010db800000000000000000000000720010db80000000000000000000000102b00000100000007060200010000000020010db80000000000000000000000999c400017010203040000000050010400af740000";
    /// Fragment at offset 24 announcing a routing header; its payload starts with bytes that
    /// read like one, but mid-stream payload is not a header.
    const V6_LATER_FRAGMENT_OF_ROUTING: &str = "6000000000202c3420010db800000000000000000000000720010db80000000000000000000000102b00001800000007060200010000000000000000000000000000000000000000";

    const SCAN_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const TARGET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const SCAN_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    const TARGET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    fn bytes_of(hex: &str) -> Vec<u8> {
        assert!(hex.len() % 2 == 0, "odd hex fixture");
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex fixture"))
            .collect()
    }

    fn classify_hex(hex: &str) -> ScanKind {
        let bytes = bytes_of(hex);
        let packet = parse(&bytes).unwrap_or_else(|err| panic!("{hex}: {err}"));
        classify(&packet)
    }

    /// Every fixture with the classification it must get.
    fn classified_fixtures() -> Vec<(&'static str, &'static str, ScanKind)> {
        use IpOption::*;
        vec![
            ("v4 nmap SYN", V4_NMAP_SYN, ScanKind::SynNormal),
            ("v4 bare SYN", V4_BARE_SYN, ScanKind::SynNormal),
            ("v4 Linux connect", V4_LINUX_CONNECT_SYN, ScanKind::Connect),
            (
                "v4 Windows connect",
                V4_WINDOWS_CONNECT_SYN,
                ScanKind::Connect,
            ),
            ("v4 ECN SYN", V4_ECN_SYN, ScanKind::SynNormal),
            ("v4 XMAS", V4_XMAS, ScanKind::Xmas),
            ("v4 FULL-XMAS", V4_FULL_XMAS, ScanKind::FullXmas),
            ("v4 NULL", V4_NULL, ScanKind::Null),
            ("v4 FIN", V4_FIN, ScanKind::Fin),
            ("v4 bad checksums", V4_BAD_CHECKSUM_FIN, ScanKind::Fin),
            ("v4 ACK", V4_ACK, ScanKind::Unknown(TcpFlags(TcpFlags::ACK))),
            ("v4 UDP", V4_UDP, ScanKind::Udp),
            ("v4 ICMP", V4_ICMP_ECHO, ScanKind::OtherProtocol(1)),
            (
                "v4 record route",
                V4_RECORD_ROUTE_SYN,
                ScanKind::IpOptions([RecordRoute].into_iter().collect()),
            ),
            (
                "v4 LSRR + timestamp",
                V4_LSRR_TIMESTAMP_UDP,
                ScanKind::IpOptions([LooseSourceRoute, Timestamp].into_iter().collect()),
            ),
            ("v4 XMAS + payload", V4_XMAS_WITH_PAYLOAD, ScanKind::Xmas),
            (
                "v4 tiny first fragment",
                V4_TINY_FIRST_FRAGMENT_FIN,
                ScanKind::OtherProtocol(6),
            ),
            (
                "v4 later fragment",
                V4_LATER_FRAGMENT,
                ScanKind::OtherProtocol(6),
            ),
            ("v4 IHL 4", V4_IHL_4, ScanKind::BadHeaderLength(4)),
            ("v6 nmap SYN", V6_NMAP_SYN, ScanKind::SynNormal),
            ("v6 Linux connect", V6_LINUX_CONNECT_SYN, ScanKind::Connect),
            ("v6 XMAS", V6_XMAS, ScanKind::Xmas),
            ("v6 NULL", V6_NULL, ScanKind::Null),
            ("v6 UDP", V6_UDP, ScanKind::Udp),
            ("v6 ICMPv6", V6_ICMP_ECHO, ScanKind::OtherProtocol(58)),
            ("v6 extensions FIN", V6_EXTENSIONS_FIN, ScanKind::Fin),
            (
                "v6 first fragment SYN",
                V6_FIRST_FRAGMENT_SYN,
                ScanKind::SynNormal,
            ),
            (
                "v6 later fragment",
                V6_LATER_FRAGMENT,
                ScanKind::OtherProtocol(6),
            ),
            (
                "v6 routing header type 0",
                V6_ROUTING_TYPE0_SYN,
                ScanKind::IpOptions([Ipv6RoutingHeader].into_iter().collect()),
            ),
            (
                "v6 hop-by-hop + routing header",
                V6_HOP_BY_HOP_ROUTING_UDP,
                ScanKind::IpOptions([Ipv6RoutingHeader].into_iter().collect()),
            ),
            (
                "v6 segment routing header",
                V6_SEGMENT_ROUTING_XMAS,
                ScanKind::IpOptions([Ipv6RoutingHeader].into_iter().collect()),
            ),
            (
                "v6 first fragment with routing header",
                V6_FIRST_FRAGMENT_ROUTING_FIN,
                ScanKind::IpOptions([Ipv6RoutingHeader].into_iter().collect()),
            ),
            (
                "v6 later fragment of a routing header",
                V6_LATER_FRAGMENT_OF_ROUTING,
                ScanKind::OtherProtocol(43),
            ),
        ]
    }

    #[test]
    fn every_fixture_gets_its_scan_kind() {
        for (name, hex, expected) in classified_fixtures() {
            assert_eq!(classify_hex(hex), expected, "{name}");
        }
    }

    #[test]
    fn tcp_fields_and_addresses_come_from_the_packet() {
        let packet = parse(&bytes_of(V4_ACK)).expect("parses");
        assert_eq!(packet.src, IpAddr::V4(SCAN_SOURCE_V4));
        assert_eq!(packet.dst, IpAddr::V4(TARGET_V4));
        assert_eq!(packet.header_words, 5);
        assert!(packet.ip_options.is_empty());
        assert_eq!(
            packet.transport,
            Transport::Tcp {
                sport: 40000,
                dport: 23,
                flags: TcpFlags(TcpFlags::ACK),
                connect_like: false
            }
        );
        assert_eq!(packet.transport.dport(), 23);
        assert_eq!(packet.transport.sport(), 40000);
        assert_eq!(packet.transport.protocol_name(), "TCP");
        assert_eq!(packet.transport.protocol_number(), 6);
    }

    #[test]
    fn ipv6_fields_come_from_the_packet() {
        let packet = parse(&bytes_of(V6_UDP)).expect("parses");
        assert_eq!(packet.src, IpAddr::V6(SCAN_SOURCE_V6));
        assert_eq!(packet.dst, IpAddr::V6(TARGET_V6));
        assert_eq!(packet.header_words, 0);
        assert_eq!(
            packet.transport,
            Transport::Udp {
                sport: 53001,
                dport: 161
            }
        );
        assert_eq!(packet.transport.protocol_name(), "UDP");

        let behind_extensions = parse(&bytes_of(V6_EXTENSIONS_FIN)).expect("parses");
        assert_eq!(behind_extensions.transport.dport(), 23);
        assert_eq!(behind_extensions.transport.protocol_number(), 6);
    }

    #[test]
    fn a_routing_header_is_reported_and_the_transport_behind_it_still_read() {
        let routing: IpOptions = [IpOption::Ipv6RoutingHeader].into_iter().collect();
        let cases = [
            (V6_ROUTING_TYPE0_SYN, 6, 23),
            (V6_HOP_BY_HOP_ROUTING_UDP, 17, 161),
            (V6_SEGMENT_ROUTING_XMAS, 6, 23),
            (V6_FIRST_FRAGMENT_ROUTING_FIN, 6, 23),
        ];
        for (hex, protocol, dport) in cases {
            let packet = parse(&bytes_of(hex)).expect("parses");
            assert_eq!(packet.ip_options, routing, "{hex}");
            assert_eq!(packet.transport.protocol_number(), protocol, "{hex}");
            assert_eq!(packet.transport.dport(), dport, "{hex}");
            assert_eq!(packet.src, IpAddr::V6(SCAN_SOURCE_V6));
            assert_eq!(packet.dst, IpAddr::V6(TARGET_V6));
            assert_eq!(
                classify(&packet).to_string(),
                "IP-options (ipv6-routing-header)"
            );
        }
        // Extension headers without a routing header add no option.
        let plain = parse(&bytes_of(V6_EXTENSIONS_FIN)).expect("parses");
        assert!(plain.ip_options.is_empty());
        let later = parse(&bytes_of(V6_LATER_FRAGMENT_OF_ROUTING)).expect("parses");
        assert!(later.ip_options.is_empty());
        assert_eq!(later.transport, Transport::Other { protocol: 43 });
    }

    #[test]
    fn a_routing_header_counts_once_announced_even_if_cut_off() {
        let routing = ScanKind::IpOptions([IpOption::Ipv6RoutingHeader].into_iter().collect());
        // Bytes 40..64 are the routing header: at 40 only its announcement is captured.
        let direct = bytes_of(V6_ROUTING_TYPE0_SYN);
        for copy_range in 40..=direct.len() {
            let packet = parse(&direct[..copy_range]).expect("parses");
            assert_eq!(classify(&packet), routing, "copy range {copy_range}");
        }
        // Behind the hop-by-hop header (40..48) the routing header is announced at byte 40.
        let behind = bytes_of(V6_HOP_BY_HOP_ROUTING_UDP);
        assert_eq!(
            classify(&parse(&behind[..40]).expect("parses")),
            ScanKind::OtherProtocol(0)
        );
        for copy_range in 48..=behind.len() {
            let packet = parse(&behind[..copy_range]).expect("parses");
            assert_eq!(classify(&packet), routing, "copy range {copy_range}");
        }
    }

    #[test]
    fn the_extension_walk_stops_where_headers_stop() {
        let walk = |first: u8, bytes: &[u8]| Ipv6ExtensionWalk::new(first, bytes);
        let routing: IpOptions = [IpOption::Ipv6RoutingHeader].into_iter().collect();
        assert_eq!(walk(6, &[]), Ipv6ExtensionWalk::default());
        assert_eq!(walk(IPV6_ROUTING, &[]).options, routing);
        // Destination options (8 bytes) announcing a routing header that is not captured.
        let dest_then_routing = [IPV6_ROUTING, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(
            walk(IPV6_DESTINATION_OPTIONS, &dest_then_routing).options,
            routing
        );
        // A length byte of 255 asks for 2048 bytes: the walk ends, the option stays.
        assert_eq!(walk(IPV6_ROUTING, &[6, 255, 0, 1]).options, routing);
        // A later fragment ends the walk before anything it announces.
        let later_fragment = [IPV6_ROUTING, 0, 0, 0x18, 0, 0, 0, 7, 6, 0, 0, 1];
        assert_eq!(
            walk(IPV6_FRAGMENT, &later_fragment),
            Ipv6ExtensionWalk {
                later_fragment_protocol: Some(IPV6_ROUTING),
                options: IpOptions::EMPTY,
            }
        );
    }

    #[test]
    fn non_tcp_udp_has_no_port_and_says_ip() {
        let packet = parse(&bytes_of(V4_ICMP_ECHO)).expect("parses");
        assert_eq!(packet.transport, Transport::Other { protocol: 1 });
        assert_eq!(packet.transport.dport(), 0);
        assert_eq!(packet.transport.protocol_name(), "IP");
    }

    #[test]
    fn ecn_bits_are_kept_in_the_flags_but_ignored_by_classification() {
        let packet = parse(&bytes_of(V4_ECN_SYN)).expect("parses");
        let Transport::Tcp { flags, .. } = packet.transport else {
            panic!("not TCP: {packet:?}");
        };
        assert_eq!(
            flags,
            TcpFlags(TcpFlags::CWR | TcpFlags::ECE | TcpFlags::SYN)
        );
        let syn_ack_ece = TcpFlags(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::ECE);
        assert_eq!(
            classify_tcp(syn_ack_ece, false),
            ScanKind::Unknown(syn_ack_ece)
        );
        assert_eq!(
            classify_tcp(TcpFlags(TcpFlags::ECE | TcpFlags::CWR), false),
            ScanKind::Null
        );
    }

    #[test]
    fn connect_options_are_told_apart_from_scanner_options() {
        let connect_like = |hex: &str| match parse(&bytes_of(hex)).expect("parses").transport {
            Transport::Tcp { connect_like, .. } => connect_like,
            other => panic!("not TCP: {other:?}"),
        };
        assert!(!connect_like(V4_NMAP_SYN));
        assert!(!connect_like(V4_BARE_SYN));
        assert!(!connect_like(V6_NMAP_SYN));
        assert!(connect_like(V4_LINUX_CONNECT_SYN));
        assert!(connect_like(V4_WINDOWS_CONNECT_SYN));
        assert!(connect_like(V6_LINUX_CONNECT_SYN));
    }

    #[test]
    fn tcp_option_walk_handles_malformed_lists() {
        // Zero and one length would loop forever if the walk trusted them.
        assert!(!carries_connect_options(&[8, 0, 4, 2]));
        assert!(!carries_connect_options(&[2, 1, 4, 2]));
        // Length running past the end, then nothing after it.
        assert!(!carries_connect_options(&[2, 40, 4, 2]));
        // End of list hides what follows.
        assert!(!carries_connect_options(&[1, 0, 4, 2]));
        // Kind without its length byte.
        assert!(!carries_connect_options(&[1, 1, 4]));
        // Right kind, wrong length: not what a kernel sends.
        assert!(!carries_connect_options(&[4, 3, 0]));
        assert!(carries_connect_options(&[1, 1, 3, 3, 7]));
        assert!(carries_connect_options(&[2, 4, 5, 180, 8, 10]));
    }

    #[test]
    fn connect_options_count_once_their_kind_and_length_are_captured() {
        // Linux SYN: options start at byte 40 with MSS (4 bytes), SACK-permitted at 44..46.
        let full = bytes_of(V4_LINUX_CONNECT_SYN);
        for copy_range in 40..=45 {
            let kind = classify(&parse(&full[..copy_range]).expect("parses"));
            assert_eq!(kind, ScanKind::SynNormal, "copy range {copy_range}");
        }
        for copy_range in 46..=full.len() {
            let kind = classify(&parse(&full[..copy_range]).expect("parses"));
            assert_eq!(kind, ScanKind::Connect, "copy range {copy_range}");
        }
    }

    #[test]
    fn a_forty_byte_copy_range_still_classifies() {
        let xmas = bytes_of(V4_XMAS_WITH_PAYLOAD);
        assert!(xmas.len() > 40);
        assert_eq!(
            classify(&parse(&xmas[..40]).expect("parses")),
            ScanKind::Xmas
        );
        let v6 = bytes_of(V6_LINUX_CONNECT_SYN);
        assert_eq!(
            classify(&parse(&v6[..54]).expect("parses")),
            ScanKind::SynNormal
        );
        let tcp_cut_short = parse(&v6[..53]).expect("parses");
        assert_eq!(tcp_cut_short.transport, Transport::Other { protocol: 6 });
    }

    #[test]
    fn too_short_transport_headers_become_other() {
        let udp = bytes_of(V4_UDP);
        assert_eq!(
            parse(&udp[..23]).expect("parses").transport,
            Transport::Other { protocol: 17 }
        );
        assert_eq!(
            parse(&udp[..24]).expect("parses").transport,
            Transport::Udp {
                sport: 53001,
                dport: 161
            }
        );
    }

    #[test]
    fn ip_header_truncation_is_an_error_with_sizes() {
        let v4 = bytes_of(V4_FIN);
        assert_eq!(
            parse(&v4[..19]),
            Err(ParseError::Truncated {
                needed: 20,
                got: 19
            })
        );
        let lsrr = bytes_of(V4_LSRR_TIMESTAMP_UDP);
        assert_eq!(
            parse(&lsrr[..39]),
            Err(ParseError::Truncated {
                needed: 40,
                got: 39
            })
        );
        let v6 = bytes_of(V6_NULL);
        assert_eq!(
            parse(&v6[..39]),
            Err(ParseError::Truncated {
                needed: 40,
                got: 39
            })
        );
        let ihl_4 = bytes_of(V4_IHL_4);
        assert_eq!(
            parse(&ihl_4[..19]),
            Err(ParseError::Truncated {
                needed: 20,
                got: 19
            })
        );
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(&[0x00; 40]), Err(ParseError::UnknownVersion(0)));
        // 'G' is 0x47: version 4 with 7 header words, longer than the text.
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::Truncated {
                needed: 28,
                got: 16
            })
        );
        assert_eq!(
            parse(b"\x16\x03\x01 TLS"),
            Err(ParseError::UnknownVersion(1))
        );
        assert_eq!(parse(&[0xff, 1, 2]), Err(ParseError::UnknownVersion(15)));
        let error = parse(&[0x45, 0, 0]).expect_err("three bytes");
        assert_eq!(
            error.to_string(),
            "packet truncated: 20 bytes needed to read the IP header, 3 captured"
        );
    }

    #[test]
    fn short_ihl_keeps_addresses_and_protocol() {
        for header_words in 0..MIN_IPV4_HEADER_WORDS {
            let mut bytes = bytes_of(V4_IHL_4);
            bytes[0] = 0x40 | header_words;
            let packet = parse(&bytes).expect("parses");
            assert_eq!(packet.header_words, header_words);
            assert_eq!(packet.src, IpAddr::V4(SCAN_SOURCE_V4));
            assert_eq!(packet.dst, IpAddr::V4(TARGET_V4));
            assert_eq!(packet.transport, Transport::Other { protocol: 6 });
            assert_eq!(classify(&packet), ScanKind::BadHeaderLength(header_words));
        }
        // Exactly the fixed header is enough.
        let bytes = bytes_of(V4_IHL_4);
        assert!(parse(&bytes[..20]).is_ok());
    }

    #[test]
    fn bad_header_length_wins_over_everything_and_options_over_transport() {
        let mut packet = parse(&bytes_of(V4_RECORD_ROUTE_SYN)).expect("parses");
        assert_eq!(packet.header_words, 8);
        assert!(matches!(packet.transport, Transport::Tcp { .. }));
        packet.header_words = 3;
        assert_eq!(classify(&packet), ScanKind::BadHeaderLength(3));
        // IPv6 has no header length field; its 0 must not read as a bad one.
        let v6 = parse(&bytes_of(V6_XMAS)).expect("parses");
        assert_eq!(v6.header_words, 0);
        assert_eq!(classify(&v6), ScanKind::Xmas);
    }

    #[test]
    fn ipv4_option_walk() {
        use IpOption::*;
        let walk = IpOptions::from_ipv4_option_bytes;
        assert!(walk(&[]).is_empty());
        assert!(walk(&[0, 0, 0, 0]).is_empty(), "padding only");
        assert!(walk(&[1, 1, 1, 0]).is_empty(), "NOPs only");
        assert!(walk(&[0, 7, 3, 4]).is_empty(), "nothing counts after EOL");
        assert_eq!(walk(&[1, 7, 3, 4, 0]), [RecordRoute].into_iter().collect());
        assert_eq!(
            walk(&[137, 3, 4, 148, 4, 0, 0, 0]),
            [StrictSourceRoute, Other].into_iter().collect()
        );
        // Bad lengths: missing, below 2, beyond the header.
        assert_eq!(walk(&[7]), [Other].into_iter().collect());
        assert_eq!(walk(&[68, 1, 7, 3, 0]), [Other].into_iter().collect());
        assert_eq!(walk(&[131, 0]), [Other].into_iter().collect());
        assert_eq!(
            walk(&[7, 3, 0, 68, 9, 0, 0]),
            [RecordRoute, Other].into_iter().collect()
        );
    }

    #[test]
    fn padding_only_options_do_not_make_an_ip_options_scan() {
        // IHL 6 with four EOL bytes in front of a FIN.
        let fin = bytes_of(V4_FIN);
        let mut padded = vec![0x46];
        padded.extend_from_slice(&fin[1..20]);
        padded.extend_from_slice(&[0, 0, 0, 0]);
        padded.extend_from_slice(&fin[20..]);
        let packet = parse(&padded).expect("parses");
        assert_eq!(packet.header_words, 6);
        assert!(packet.ip_options.is_empty());
        assert_eq!(classify(&packet), ScanKind::Fin);
    }

    #[test]
    fn flag_names_read_high_to_low() {
        assert_eq!(TcpFlags(0).to_string(), "none");
        assert_eq!(TcpFlags(0x3f).to_string(), "URG ACK PSH RST SYN FIN");
        assert_eq!(
            TcpFlags(0xff).to_string(),
            "CWR ECE URG ACK PSH RST SYN FIN"
        );
        assert_eq!(
            TcpFlags(TcpFlags::ACK | TcpFlags::PSH).to_string(),
            "ACK PSH"
        );
        assert!(TcpFlags(0x12).contains(TcpFlags::SYN));
        assert!(!TcpFlags(0x12).contains(TcpFlags::SYN | TcpFlags::FIN));
        assert_eq!(TcpFlags(0xc2).classic(), TcpFlags(TcpFlags::SYN));
    }

    #[test]
    fn option_names_follow_a_fixed_order() {
        use IpOption::*;
        let options: IpOptions = [Timestamp, RecordRoute, LooseSourceRoute]
            .into_iter()
            .collect();
        assert_eq!(
            options.to_string(),
            "loose-source-route, record-route, timestamp"
        );
        assert_eq!(
            options.iter().collect::<Vec<_>>(),
            vec![LooseSourceRoute, RecordRoute, Timestamp]
        );
        assert!(options.contains(RecordRoute));
        assert!(!options.contains(StrictSourceRoute));
        let rest: IpOptions = [Other, StrictSourceRoute].into_iter().collect();
        assert_eq!(rest.to_string(), "strict-source-route, other");
        assert_eq!(IpOptions::EMPTY.to_string(), "none");
        assert_eq!(IpOption::from_type(0), None);
        assert_eq!(IpOption::from_type(1), None);
        assert_eq!(IpOption::from_type(131), Some(LooseSourceRoute));
        assert_eq!(IpOption::from_type(137), Some(StrictSourceRoute));
        assert_eq!(IpOption::from_type(7), Some(RecordRoute));
        assert_eq!(IpOption::from_type(68), Some(Timestamp));
        assert_eq!(IpOption::from_type(148), Some(Other));
        // IPv4 option type 43 is an unknown option, not an IPv6 routing header.
        assert_eq!(IpOption::from_type(43), Some(Other));
        assert!((0..=u8::MAX).all(|byte| IpOption::from_type(byte) != Some(Ipv6RoutingHeader)));
        let all: IpOptions = IpOption::ALL.into_iter().collect();
        assert_eq!(
            all.to_string(),
            "loose-source-route, strict-source-route, record-route, timestamp, ipv6-routing-header, other"
        );
    }

    #[test]
    fn every_option_has_a_bit_of_its_own() {
        for option in IpOption::ALL {
            let alone: IpOptions = [option].into_iter().collect();
            assert_eq!(alone.iter().collect::<Vec<_>>(), vec![option]);
            for other in IpOption::ALL.into_iter().filter(|o| *o != option) {
                assert!(!alone.contains(other), "{option} and {other} share a bit");
            }
        }
    }

    #[test]
    fn scan_kind_words_and_details() {
        use IpOption::*;
        let cases = [
            (ScanKind::Connect, "Connect", "Connect"),
            (ScanKind::SynNormal, "SYN/Normal", "SYN/Normal"),
            (ScanKind::Fin, "FIN", "FIN"),
            (ScanKind::Null, "NULL", "NULL"),
            (ScanKind::Xmas, "XMAS", "XMAS"),
            (ScanKind::FullXmas, "FULL-XMAS", "FULL-XMAS"),
            (ScanKind::Udp, "UDP", "UDP"),
            (
                ScanKind::Unknown(TcpFlags(TcpFlags::ACK | TcpFlags::PSH)),
                "Unknown",
                "Unknown (flags: ACK PSH)",
            ),
            (
                ScanKind::OtherProtocol(1),
                "Unknown",
                "Unknown (IP protocol 1)",
            ),
            (
                ScanKind::IpOptions([RecordRoute, Timestamp].into_iter().collect()),
                "IP-options",
                "IP-options (record-route, timestamp)",
            ),
            (
                ScanKind::IpOptions([Ipv6RoutingHeader].into_iter().collect()),
                "IP-options",
                "IP-options (ipv6-routing-header)",
            ),
            (
                ScanKind::BadHeaderLength(4),
                "Bad-IP-header-length",
                "Bad-IP-header-length (4 words)",
            ),
            (
                ScanKind::BadHeaderLength(1),
                "Bad-IP-header-length",
                "Bad-IP-header-length (1 word)",
            ),
        ];
        for (kind, word, shown) in cases {
            assert_eq!(kind.word(), word);
            assert_eq!(kind.to_string(), shown);
        }
    }

    #[test]
    fn tcp_flag_table() {
        use TcpFlags as F;
        // `None`: Unknown, carrying the flags exactly as sent.
        let cases = [
            (0, Some(ScanKind::Null)),
            (F::FIN | F::URG | F::PSH, Some(ScanKind::Xmas)),
            (0x3f, Some(ScanKind::FullXmas)),
            (0xff, Some(ScanKind::FullXmas)),
            (F::FIN, Some(ScanKind::Fin)),
            (F::FIN | F::ECE, Some(ScanKind::Fin)),
            (F::SYN, Some(ScanKind::SynNormal)),
            (F::SYN | F::ECE | F::CWR, Some(ScanKind::SynNormal)),
            (F::RST, None),
            (F::ACK, None),
            (F::SYN | F::FIN, None),
            (F::FIN | F::ACK, None),
            (F::FIN | F::URG, None),
            (F::FIN | F::URG | F::PSH | F::ECE, Some(ScanKind::Xmas)),
        ];
        for (bits, expected) in cases {
            let flags = TcpFlags(bits);
            let expected = expected.unwrap_or(ScanKind::Unknown(flags));
            assert_eq!(classify_tcp(flags, false), expected, "{flags}");
        }
        assert_eq!(classify_tcp(TcpFlags(F::SYN), true), ScanKind::Connect);
        // Only a lone SYN can be a connect.
        let syn_ack = TcpFlags(F::SYN | F::ACK);
        assert_eq!(classify_tcp(syn_ack, true), ScanKind::Unknown(syn_ack));
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Pseudorandom(u64);

    impl Pseudorandom {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    /// Runs the whole pipeline on one input, checks what must hold for any input and returns
    /// the classification word so the caller can see how deep its inputs reach.
    fn survives(bytes: &[u8]) -> Option<&'static str> {
        let Ok(packet) = parse(bytes) else {
            return None;
        };
        let kind = classify(&packet);
        assert!(kind.to_string().starts_with(kind.word()), "{bytes:02x?}");
        let _ = packet.ip_options.to_string();
        let Some(&first) = bytes.first() else {
            panic!("parsed an empty input");
        };
        match first >> 4 {
            4 => {
                assert!(packet.src.is_ipv4());
                assert!(!packet.ip_options.contains(IpOption::Ipv6RoutingHeader));
                assert_eq!(packet.header_words, first & 0x0f);
                let header_len = usize::from(packet.header_words).max(5) * 4;
                assert!(bytes.len() >= header_len, "{bytes:02x?}");
                if let Transport::Tcp { .. } = packet.transport {
                    // Without AH in between, the flags byte must have been captured.
                    if bytes.get(9) == Some(&6) {
                        assert!(bytes.len() >= header_len + 14, "{bytes:02x?}");
                    }
                }
            }
            6 => {
                assert!(packet.src.is_ipv6());
                assert_eq!(packet.header_words, 0);
                assert!(packet
                    .ip_options
                    .iter()
                    .all(|option| option == IpOption::Ipv6RoutingHeader));
                assert!(bytes.len() >= 40);
            }
            version => panic!("parsed IP version {version}"),
        }
        Some(kind.word())
    }

    #[test]
    fn never_panics_on_random_bytes_or_damaged_packets() {
        let mut random = Pseudorandom(0x9e37_79b9_7f4a_7c15);
        let mut words_seen = std::collections::BTreeSet::new();
        let fixtures: Vec<Vec<u8>> = classified_fixtures()
            .into_iter()
            .map(|(_, hex, _)| bytes_of(hex))
            .collect();

        for fixture in &fixtures {
            for copy_range in 0..=fixture.len() {
                let _ = survives(&fixture[..copy_range]);
            }
        }

        for _ in 0..200_000 {
            let len = random.below(100);
            let mut bytes: Vec<u8> = (0..len).map(|_| random.byte()).collect();
            // Steer most inputs past the version check so the deeper code gets exercised.
            if let Some(first) = bytes.first_mut() {
                *first = match random.below(4) {
                    0 => *first,
                    1 => 0x40 | (*first & 0x0f),
                    2 => 0x45,
                    _ => 0x60 | (*first & 0x0f),
                };
            }
            if len > 6 && random.below(2) == 0 {
                // Plausible protocols and IPv6 extension chains.
                let protocols = [0, 6, 17, 43, 44, 51, 60, 1, 58];
                let protocol = protocols[random.below(protocols.len())];
                let at = if bytes[0] >> 4 == 6 { 6 } else { 9 };
                if let Some(slot) = bytes.get_mut(at) {
                    *slot = protocol;
                }
            }
            words_seen.extend(survives(&bytes));
        }

        for _ in 0..100_000 {
            let mut bytes = fixtures[random.below(fixtures.len())].clone();
            for _ in 0..=random.below(4) {
                let at = random.below(bytes.len());
                bytes[at] = random.byte();
            }
            let copy_range = random.below(bytes.len() + 1);
            words_seen.extend(survives(&bytes[..copy_range]));
        }

        // Random and damaged inputs must have reached every classification, or the loops
        // above only exercised the early rejections.
        let every_word = [
            "Connect",
            "SYN/Normal",
            "FIN",
            "NULL",
            "XMAS",
            "FULL-XMAS",
            "UDP",
            "Unknown",
            "IP-options",
            "Bad-IP-header-length",
        ];
        assert_eq!(words_seen, every_word.into_iter().collect());
    }
}
