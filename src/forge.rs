//! The TCP segments nfsentry sends itself to check that a source is real, as whole IPv4 or IPv6
//! packets ready for a raw socket: the SYN-ACK challenge, the banner segment and the RST that
//! ends a verified handshake. Also reads the TCP fields these need (sequence and acknowledgement
//! numbers, flags, payload length) from a queued packet, which [`crate::packet::Packet`] does not
//! carry.
//!
//! It does no I/O (sending is [`crate::inject`]'s job) and knows nothing of cookies beyond the
//! number it is handed (that is [`crate::cookie`]). The layouts are fixed (no IP options, one TCP
//! option), so building cannot fail; etherparse checks the results in the tests, independently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, LaxIpSlice};

use crate::cookie::Flow;
use crate::packet::TcpFlags;

/// TTL and hop limit of what is sent: what Linux sends with, so replies look ordinary.
pub const HOP_LIMIT: u8 = 64;
/// The receive window advertised: Linux's initial window for a 1460-byte MSS.
pub const WINDOW: u16 = 64240;
/// The MSS announced in the SYN-ACK: what fits a 1500-byte MTU. Nothing larger is ever sent.
pub const MSS_V4: u16 = 1460;
pub const MSS_V6: u16 = 1440;
/// Longest banner sent, in bytes: 536 is the segment size every IPv4 host must accept (RFC 879),
/// and the peer's real MSS is not known when the banner goes out (nothing is kept per SYN). A
/// longer banner is cut here.
pub const BANNER_MAX_BYTES: usize = 536;

const IPV4_HEADER_BYTES: usize = 20;
const IPV6_HEADER_BYTES: usize = 40;
const TCP_HEADER_BYTES: usize = 20;
/// Kind 2, length 4, the MSS: the only option sent.
const MSS_OPTION_BYTES: usize = 4;
const TCP_OPTION_MSS: u8 = 2;
/// IPv4 flags and fragment offset: Don't Fragment, as Linux sends TCP.
const IPV4_DONT_FRAGMENT: u16 = 0x4000;
/// Bytes of a TCP header through the window field: all [`read_tcp`] needs.
const TCP_BYTES_THROUGH_WINDOW: usize = 16;

/// The TCP fields of one queued segment that a handshake check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Addresses and ports as the segment travelled (from the peer to this host).
    pub flow: Flow,
    pub seq: u32,
    /// The acknowledgement number as sent; meaningful only when `flags` has ACK.
    pub ack: u32,
    pub flags: TcpFlags,
    /// Payload bytes as the IP header declares them, even when the copy range cut some off.
    pub payload_len: u32,
}

/// Why bytes were not read as a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not a readable IPv4 or IPv6 packet")]
    NotIp,
    #[error("not TCP (IP protocol {0})")]
    NotTcp(u8),
    /// A handshake segment is never fragmented; a fragment's bytes cannot be trusted to hold the
    /// header.
    #[error("a fragment")]
    Fragment,
    #[error("the TCP header is cut short ({got} of {needed} bytes)")]
    Truncated { needed: usize, got: usize },
}

/// Reads the TCP header of a packet starting at its IP header (as NFQUEUE hands it over). The
/// copy range may cut the payload: its length comes from the IP header, and only the first 16
/// bytes of the TCP header must be present. Checksums are not verified.
pub fn read_tcp(bytes: &[u8]) -> Result<TcpSegment, ReadError> {
    // etherparse would refuse an IPv4 header under 5 words too, but it must not be asked to
    // find a transport header in one.
    if bytes.first().is_some_and(|b| b >> 4 == 4 && b & 0x0f < 5) {
        return Err(ReadError::NotIp);
    }
    let (ip, _) = LaxIpSlice::from_slice(bytes).map_err(|_| ReadError::NotIp)?;
    let (src, dst, payload, declared_payload) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let header = v4.header();
            let declared = usize::from(header.total_len()).checked_sub(header.slice().len());
            (
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
                v4.payload(),
                declared,
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let header = v6.header();
            // A payload length of 0 is a jumbogram or a lie; the captured bytes say more then.
            let declared = match header.payload_length() {
                0 => None,
                length => usize::from(length).checked_sub(v6.extensions().slice().len()),
            };
            (
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
                v6.payload(),
                declared,
            )
        }
    };
    if payload.fragmented {
        return Err(ReadError::Fragment);
    }
    if payload.ip_number != IpNumber::TCP {
        return Err(ReadError::NotTcp(payload.ip_number.0));
    }
    let segment = payload.payload;
    let head: &[u8; TCP_BYTES_THROUGH_WINDOW] = segment
        .get(..TCP_BYTES_THROUGH_WINDOW)
        .and_then(|head| head.try_into().ok())
        .ok_or(ReadError::Truncated {
            needed: TCP_BYTES_THROUGH_WINDOW,
            got: segment.len(),
        })?;
    let header_len = usize::from(head[12] >> 4) * 4;
    // When the copy range is whole, the captured bytes are the declared ones anyway.
    let segment_len = if payload.incomplete {
        declared_payload.unwrap_or(segment.len())
    } else {
        segment.len()
    };
    let payload_len = segment_len.saturating_sub(header_len.max(TCP_HEADER_BYTES));
    Ok(TcpSegment {
        flow: Flow {
            src,
            dst,
            sport: u16::from_be_bytes([head[0], head[1]]),
            dport: u16::from_be_bytes([head[2], head[3]]),
        },
        seq: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        ack: u32::from_be_bytes([head[8], head[9], head[10], head[11]]),
        flags: TcpFlags(head[13]),
        payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
    })
}

/// The SYN-ACK that answers `syn` with `cookie` as its sequence number: it acknowledges the SYN
/// (their sequence number plus one) and announces an MSS and a window, as any stack's would.
pub fn syn_ack(syn: &TcpSegment, cookie: u32) -> Vec<u8> {
    let mss = match syn.flow.dst {
        IpAddr::V4(_) => MSS_V4,
        IpAddr::V6(_) => MSS_V6,
    };
    let [mss_high, mss_low] = mss.to_be_bytes();
    reply(
        &syn.flow,
        Tcp {
            seq: cookie,
            ack: syn.seq.wrapping_add(1),
            flags: TcpFlags::SYN | TcpFlags::ACK,
            options: &[TCP_OPTION_MSS, MSS_OPTION_BYTES as u8, mss_high, mss_low],
            payload: &[],
        },
    )
}

/// PortSentry's PORT_BANNER for a peer whose `ack` completed the handshake: PSH|ACK carrying at
/// most [`BANNER_MAX_BYTES`] of `banner`, sent where the peer expects our data to start (the
/// number it acknowledged) and acknowledging everything it sent.
pub fn banner(ack: &TcpSegment, banner: &[u8]) -> Vec<u8> {
    let payload = banner.get(..BANNER_MAX_BYTES).unwrap_or(banner);
    reply(
        &ack.flow,
        Tcp {
            seq: ack.ack,
            ack: ack.seq.wrapping_add(ack.payload_len),
            flags: TcpFlags::PSH | TcpFlags::ACK,
            options: &[],
            payload,
        },
    )
}

/// How many bytes [`banner`] sends of `banner`: what the RST after it must skip.
pub fn banner_bytes(banner: &[u8]) -> u32 {
    // At most BANNER_MAX_BYTES, so this always fits.
    u32::try_from(banner.len().min(BANNER_MAX_BYTES)).unwrap_or(0)
}

/// The RST|ACK that ends a handshake `ack` completed, after `sent` bytes of our data (the banner,
/// or 0). Its sequence number is exactly the one the peer expects next, which is what a RST must
/// carry to be accepted (RFC 5961).
pub fn reset(ack: &TcpSegment, sent: u32) -> Vec<u8> {
    reply(
        &ack.flow,
        Tcp {
            seq: ack.ack.wrapping_add(sent),
            ack: ack.seq.wrapping_add(ack.payload_len),
            flags: TcpFlags::RST | TcpFlags::ACK,
            options: &[],
            payload: &[],
        },
    )
}

/// The TCP part of a reply; ports come from the flow.
struct Tcp<'a> {
    seq: u32,
    ack: u32,
    flags: u8,
    /// Whole 32-bit words of options.
    options: &'a [u8],
    payload: &'a [u8],
}

/// A packet from this host back to the peer of `flow`: the flow's destination is our source.
/// Lengths are bounded (a short option list, a banner of at most [`BANNER_MAX_BYTES`]), so every
/// length field fits.
fn reply(flow: &Flow, tcp: Tcp<'_>) -> Vec<u8> {
    let segment = tcp_bytes(flow.dport, flow.sport, &tcp);
    let segment_len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    match (flow.dst, flow.src) {
        (IpAddr::V4(ours), IpAddr::V4(theirs)) => {
            let mut packet = ipv4_header(ours, theirs, segment_len).to_vec();
            packet.extend_from_slice(&with_checksum(
                segment,
                &pseudo_header_v4(ours, theirs, segment_len),
            ));
            packet
        }
        (IpAddr::V6(ours), IpAddr::V6(theirs)) => {
            let mut packet = ipv6_header(ours, theirs, segment_len).to_vec();
            packet.extend_from_slice(&with_checksum(
                segment,
                &pseudo_header_v6(ours, theirs, segment_len),
            ));
            packet
        }
        // A packet's two addresses are always of one family; should a caller mix them, the
        // IPv4-mapped form keeps the reply IPv6 rather than panicking.
        (ours, theirs) => reply(
            &Flow {
                src: IpAddr::V6(as_v6(theirs)),
                dst: IpAddr::V6(as_v6(ours)),
                ..*flow
            },
            tcp,
        ),
    }
}

fn as_v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The TCP header and payload with a zero checksum.
fn tcp_bytes(sport: u16, dport: u16, tcp: &Tcp<'_>) -> Vec<u8> {
    let header_len = TCP_HEADER_BYTES + tcp.options.len();
    let mut bytes = Vec::with_capacity(header_len + tcp.payload.len());
    bytes.extend_from_slice(&sport.to_be_bytes());
    bytes.extend_from_slice(&dport.to_be_bytes());
    bytes.extend_from_slice(&tcp.seq.to_be_bytes());
    bytes.extend_from_slice(&tcp.ack.to_be_bytes());
    // Data offset in 32-bit words; options are whole words, and at most a few.
    bytes.push(((header_len / 4) as u8) << 4);
    bytes.push(tcp.flags);
    bytes.extend_from_slice(&WINDOW.to_be_bytes());
    bytes.extend_from_slice(&[0, 0]); // checksum, filled in below
    bytes.extend_from_slice(&[0, 0]); // urgent pointer
    bytes.extend_from_slice(tcp.options);
    bytes.extend_from_slice(tcp.payload);
    bytes
}

/// `segment` with its checksum over the pseudo header and itself in place (bytes 16-17).
fn with_checksum(mut segment: Vec<u8>, pseudo_header: &[u8]) -> Vec<u8> {
    let checksum = internet_checksum(&[pseudo_header, &segment]);
    if let Some(field) = segment.get_mut(16..18) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
    segment
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, segment_len: u16) -> [u8; IPV4_HEADER_BYTES] {
    let total = segment_len.saturating_add(IPV4_HEADER_BYTES as u16);
    let mut header = [0u8; IPV4_HEADER_BYTES];
    header[0] = 0x45; // version 4, 5 words
    header[2..4].copy_from_slice(&total.to_be_bytes());
    // Identification 0: with DF set it identifies nothing (RFC 6864); the kernel may fill it in.
    header[6..8].copy_from_slice(&IPV4_DONT_FRAGMENT.to_be_bytes());
    header[8] = HOP_LIMIT;
    header[9] = IpNumber::TCP.0;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let checksum = internet_checksum(&[&header]);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16) -> [u8; IPV6_HEADER_BYTES] {
    let mut header = [0u8; IPV6_HEADER_BYTES];
    header[0] = 0x60; // version 6, traffic class and flow label 0
    header[4..6].copy_from_slice(&payload_len.to_be_bytes());
    header[6] = IpNumber::TCP.0;
    header[7] = HOP_LIMIT;
    header[8..24].copy_from_slice(&src.octets());
    header[24..40].copy_from_slice(&dst.octets());
    header
}

fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, segment_len: u16) -> [u8; 12] {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IpNumber::TCP.0;
    pseudo[10..12].copy_from_slice(&segment_len.to_be_bytes());
    pseudo
}

fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, segment_len: u16) -> [u8; 40] {
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&u32::from(segment_len).to_be_bytes());
    pseudo[39] = IpNumber::TCP.0;
    pseudo
}

/// The Internet checksum (RFC 1071) of the parts laid end to end. Every part but the last has
/// an even length here (headers), so 16-bit words never straddle two parts.
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for word in &mut words {
            sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold as we go, so no length of input can overflow the sum.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{self, Transport};
    use etherparse::{Ipv4HeaderSlice, TcpHeaderSlice};

    const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    const COOKIE: u32 = 0xfedc_ba98;
    const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n";

    // The peer's side of a handshake, as scapy wrote it: a Linux connect() SYN (seq 0x01020304)
    // and its ACK of a SYN-ACK with sequence number 0x0a0b0c0c, from 198.51.100.7:40000 to
    // 192.0.2.10:23 (see packet.rs for the same SYN).
    const V4_LINUX_CONNECT_SYN: &str = "4500003c1c46400034063e31c6336407c000020a9c4000170102030400000000a002faf090330000020405b40402080a000030390000000001030307";
    const V4_ACK: &str =
        "450000281c46000034067e45c6336407c000020a9c400017010203050a0b0c0d50100400091a0000";
    const V6_NMAP_SYN: &str = "600000000018063420010db800000000000000000000000720010db80000000000000000000000109c40001701020304000000006002040098540000020405a0";

    fn bytes_of(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex fixture"))
            .collect()
    }

    fn flow(src: IpAddr, dst: IpAddr) -> Flow {
        Flow {
            src,
            dst,
            sport: 40000,
            dport: 23,
        }
    }

    fn syn(src: IpAddr, dst: IpAddr) -> TcpSegment {
        TcpSegment {
            flow: flow(src, dst),
            seq: 0x0102_0304,
            ack: 0,
            flags: TcpFlags(TcpFlags::SYN),
            payload_len: 0,
        }
    }

    fn ack_of_challenge(src: IpAddr, dst: IpAddr) -> TcpSegment {
        TcpSegment {
            flow: flow(src, dst),
            seq: 0x0102_0305,
            ack: COOKIE.wrapping_add(1),
            flags: TcpFlags(TcpFlags::ACK),
            payload_len: 0,
        }
    }

    fn both_families() -> [(IpAddr, IpAddr); 2] {
        [
            (IpAddr::V4(PEER_V4), IpAddr::V4(HOST_V4)),
            (IpAddr::V6(PEER_V6), IpAddr::V6(HOST_V6)),
        ]
    }

    /// A checksum over the pseudo header and segment, recomputed from scratch with the stored
    /// checksum in place, sums to all ones (RFC 1071): the hand check, independent of `reply`.
    fn ones_complement_sum(bytes: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for pair in bytes.chunks(2) {
            let high = u64::from(pair[0]) << 8;
            let low = pair.get(1).map_or(0, |&b| u64::from(b));
            sum += high | low;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The IP header and the TCP segment of a forged packet, checked by etherparse and by hand.
    fn verified_segment(packet: &[u8]) -> Vec<u8> {
        match packet[0] >> 4 {
            4 => {
                let ip = Ipv4HeaderSlice::from_slice(packet).expect("IPv4 header");
                let header = ip.to_header();
                assert_eq!(ip.header_checksum(), header.calc_header_checksum());
                assert_eq!(ones_complement_sum(&packet[..20]), 0xffff);
                assert_eq!(usize::from(ip.total_len()), packet.len());
                assert!(ip.dont_fragment());
                assert_eq!(ip.ttl(), HOP_LIMIT);
                let segment = &packet[20..];
                let tcp = TcpHeaderSlice::from_slice(segment).expect("TCP header");
                let payload = &segment[tcp.slice().len()..];
                let expected = tcp
                    .to_header()
                    .calc_checksum_ipv4_raw(ip.source(), ip.destination(), payload)
                    .expect("checksum");
                assert_eq!(tcp.checksum(), expected, "etherparse's TCP checksum");
                let mut by_hand = pseudo_header_v4(
                    ip.source_addr(),
                    ip.destination_addr(),
                    segment.len() as u16,
                )
                .to_vec();
                by_hand.extend_from_slice(segment);
                assert_eq!(ones_complement_sum(&by_hand), 0xffff);
                segment.to_vec()
            }
            6 => {
                let segment = &packet[40..];
                assert_eq!(
                    usize::from(u16::from_be_bytes([packet[4], packet[5]])),
                    segment.len()
                );
                let src: [u8; 16] = packet[8..24].try_into().expect("16 bytes");
                let dst: [u8; 16] = packet[24..40].try_into().expect("16 bytes");
                let tcp = TcpHeaderSlice::from_slice(segment).expect("TCP header");
                let payload = &segment[tcp.slice().len()..];
                let expected = tcp
                    .to_header()
                    .calc_checksum_ipv6_raw(src, dst, payload)
                    .expect("checksum");
                assert_eq!(tcp.checksum(), expected, "etherparse's TCP checksum");
                let mut by_hand = pseudo_header_v6(
                    Ipv6Addr::from(src),
                    Ipv6Addr::from(dst),
                    segment.len() as u16,
                )
                .to_vec();
                by_hand.extend_from_slice(segment);
                assert_eq!(ones_complement_sum(&by_hand), 0xffff);
                segment.to_vec()
            }
            version => panic!("IP version {version}"),
        }
    }

    #[test]
    fn the_syn_ack_carries_the_cookie_and_acknowledges_the_syn() {
        for (peer, host) in both_families() {
            let packet = syn_ack(&syn(peer, host), COOKIE);
            let segment = verified_segment(&packet);
            let tcp = TcpHeaderSlice::from_slice(&segment).expect("TCP header");
            assert!(tcp.syn() && tcp.ack() && !tcp.rst() && !tcp.fin() && !tcp.psh());
            assert_eq!(tcp.sequence_number(), COOKIE);
            assert_eq!(tcp.acknowledgment_number(), 0x0102_0305);
            assert_eq!((tcp.source_port(), tcp.destination_port()), (23, 40000));
            assert_eq!(tcp.window_size(), WINDOW);
            let mss = if peer.is_ipv4() { MSS_V4 } else { MSS_V6 };
            let [high, low] = mss.to_be_bytes();
            assert_eq!(tcp.options(), &[2, 4, high, low]);

            // The project's own parser reads it as a reply from the host to the peer.
            let parsed = packet::parse(&packet).expect("parses");
            assert_eq!((parsed.src, parsed.dst), (host, peer));
            assert!(matches!(
                parsed.transport,
                Transport::Tcp { sport: 23, dport: 40000, flags, .. }
                    if flags == TcpFlags(TcpFlags::SYN | TcpFlags::ACK)
            ));
            // And the reader here reads back what was written.
            let read = read_tcp(&packet).expect("reads");
            assert_eq!(read.seq, COOKIE);
            assert_eq!(read.ack, 0x0102_0305);
            assert_eq!(read.payload_len, 0);
        }
    }

    #[test]
    fn the_banner_starts_after_the_syn_and_the_reset_after_the_banner() {
        for (peer, host) in both_families() {
            let ack = ack_of_challenge(peer, host);
            let packet = banner(&ack, BANNER);
            let segment = verified_segment(&packet);
            let tcp = TcpHeaderSlice::from_slice(&segment).expect("TCP header");
            assert!(tcp.psh() && tcp.ack() && !tcp.syn() && !tcp.rst());
            assert_eq!(tcp.sequence_number(), COOKIE.wrapping_add(1));
            assert_eq!(tcp.acknowledgment_number(), 0x0102_0305);
            assert_eq!(&segment[tcp.slice().len()..], BANNER);
            assert_eq!(read_tcp(&packet).expect("reads").payload_len, 21);

            let sent = banner_bytes(BANNER);
            let packet = reset(&ack, sent);
            let segment = verified_segment(&packet);
            let tcp = TcpHeaderSlice::from_slice(&segment).expect("TCP header");
            assert!(tcp.rst() && tcp.ack() && !tcp.syn() && !tcp.psh());
            assert_eq!(
                tcp.sequence_number(),
                COOKIE.wrapping_add(1).wrapping_add(21)
            );
            assert_eq!(tcp.acknowledgment_number(), 0x0102_0305);
            assert_eq!(segment.len(), 20);
            let parsed = packet::parse(&packet).expect("parses");
            assert_eq!((parsed.src, parsed.dst), (host, peer));
        }
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let (peer, host) = both_families()[0];
        let mut at_the_top = syn(peer, host);
        at_the_top.seq = u32::MAX;
        let read = read_tcp(&syn_ack(&at_the_top, u32::MAX)).expect("reads");
        assert_eq!((read.seq, read.ack), (u32::MAX, 0));
        let mut ack = ack_of_challenge(peer, host);
        ack.ack = u32::MAX;
        assert_eq!(read_tcp(&reset(&ack, 2)).expect("reads").seq, 1);
    }

    #[test]
    fn a_long_banner_is_cut_and_an_odd_length_summed_right() {
        let (peer, host) = both_families()[1];
        let long = vec![b'x'; BANNER_MAX_BYTES + 100];
        let packet = banner(&ack_of_challenge(peer, host), &long);
        let segment = verified_segment(&packet);
        assert_eq!(segment.len(), 20 + BANNER_MAX_BYTES);
        assert_eq!(banner_bytes(&long), BANNER_MAX_BYTES as u32);
        let odd = banner(&ack_of_challenge(peer, host), b"abc");
        verified_segment(&odd);
        let (peer, host) = both_families()[0];
        verified_segment(&banner(&ack_of_challenge(peer, host), b"abc"));
    }

    #[test]
    fn queued_segments_are_read() {
        let syn = read_tcp(&bytes_of(V4_LINUX_CONNECT_SYN)).expect("reads");
        assert_eq!(syn.flow, flow(IpAddr::V4(PEER_V4), IpAddr::V4(HOST_V4)));
        assert_eq!(syn.seq, 0x0102_0304);
        assert_eq!(syn.flags, TcpFlags(TcpFlags::SYN));
        assert_eq!(syn.payload_len, 0);

        let ack = read_tcp(&bytes_of(V4_ACK)).expect("reads");
        assert_eq!((ack.seq, ack.ack), (0x0102_0305, 0x0a0b_0c0d));
        assert_eq!(ack.flags, TcpFlags(TcpFlags::ACK));

        let v6 = read_tcp(&bytes_of(V6_NMAP_SYN)).expect("reads");
        assert_eq!(v6.flow, flow(IpAddr::V6(PEER_V6), IpAddr::V6(HOST_V6)));
        assert_eq!(v6.seq, 0x0102_0304);
    }

    #[test]
    fn the_payload_length_comes_from_the_ip_header_when_the_capture_is_cut() {
        // Our banner segment is a segment with a payload; cut its capture after the header.
        for (peer, host) in both_families() {
            let whole = banner(&ack_of_challenge(peer, host), BANNER);
            let header_bytes = if peer.is_ipv4() { 40 } else { 60 };
            for cut in [header_bytes, header_bytes + 3, whole.len()] {
                let read = read_tcp(&whole[..cut]).expect("reads");
                assert_eq!(read.payload_len, BANNER.len() as u32, "cut at {cut}");
            }
        }
    }

    #[test]
    fn what_is_not_a_whole_tcp_header_is_refused() {
        let udp = bytes_of("4500001e1c46000034117e44c6336407c000020acf0900a1000a13c43026");
        assert_eq!(read_tcp(&udp), Err(ReadError::NotTcp(17)));
        let first_fragment = bytes_of("4500001c1c46200034065e51c6336407c000020a9c40001701020304");
        assert_eq!(read_tcp(&first_fragment), Err(ReadError::Fragment));
        let short_ihl = bytes_of(
            "440000281c46000034067e45c6336407c000020a9c4000170102030400000000500004001f420000",
        );
        assert_eq!(read_tcp(&short_ihl), Err(ReadError::NotIp));
        assert_eq!(read_tcp(&[]), Err(ReadError::NotIp));
        let syn = bytes_of(V4_LINUX_CONNECT_SYN);
        assert_eq!(
            read_tcp(&syn[..20 + 15]),
            Err(ReadError::Truncated {
                needed: 16,
                got: 15
            })
        );
    }

    /// No prefix and no corruption of a real packet makes the reader panic, and what it reads
    /// from a corrupted packet never claims more payload than an IP packet can hold.
    #[test]
    fn truncated_and_corrupted_packets_never_panic() {
        let mut state: u32 = 0x2545_f491;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let (peer, host) = both_families()[1];
        let samples = [
            bytes_of(V4_LINUX_CONNECT_SYN),
            bytes_of(V6_NMAP_SYN),
            banner(&ack_of_challenge(peer, host), BANNER),
        ];
        for sample in &samples {
            for cut in 0..=sample.len() {
                let _ = read_tcp(&sample[..cut]);
            }
            for _ in 0..5000 {
                let mut corrupted = sample.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = next() as usize % corrupted.len();
                    corrupted[at] = next() as u8;
                }
                if let Ok(read) = read_tcp(&corrupted) {
                    assert!(read.payload_len <= u32::from(u16::MAX));
                }
            }
        }
    }

    #[test]
    fn the_checksum_matches_the_rfc_1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded), so the
        // checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&data]), !0xddf2);
        assert_eq!(internet_checksum(&[&data[..4], &data[4..]]), !0xddf2);
    }
}
