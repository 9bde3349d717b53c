//! The byte code of nfsentry's rules and the encodings of its set keys: which expressions, with
//! which registers, offsets and data, make up each rule of [`super::ruleset`]'s model. It mirrors
//! what `nft` 1.0.6 generates for the rendered text, so `nft list` prints a netlink-installed
//! table exactly like one loaded with `nft -f`. It decides nothing about batches and does not
//! touch libnftnl itself ([`super::objects`] does).

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nftnl::ProtoFamily;

use super::objects::RuleObject;
use super::ruleset::{
    blocked_range_set, blocked_set, ignore_set, port_set, HandshakeRule, IpFamily, PreroutingRule,
    QueueMode, Transport, HANDSHAKE_ANSWER_CHAIN,
};
use crate::config::QueueRange;
use crate::packet::TcpFlags;

/// `NFT_SOCKET_TRANSPARENT` from linux/netfilter/nf_tables.h.
const NFT_SOCKET_TRANSPARENT: u32 = 0;
/// `NFTA_FIB_F_DADDR` and `NFT_FIB_RESULT_ADDRTYPE` from linux/netfilter/nf_tables.h, missing
/// from the `libc` crate: look up the destination address and load its route type.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`: the route type of an address assigned to this host.
const RTN_LOCAL: u32 = libc::RTN_LOCAL as u32;
/// `NFT_EXTHDR_OP_IPV6` and `NFT_EXTHDR_F_PRESENT` from linux/netfilter/nf_tables.h, missing
/// from the `libc` crate: look in the IPv6 extension header chain and load 1 if the header
/// type is there rather than bytes of it.
const NFT_EXTHDR_OP_IPV6: u32 = 0;
const NFT_EXTHDR_F_PRESENT: u32 = 1;
/// `IPPROTO_ROUTING`: the next-header value of the IPv6 Routing extension header.
const IPV6_ROUTING_HEADER: u8 = libc::IPPROTO_ROUTING as u8;
/// Data types `nft` uses for set keys (nftables' `enum datatypes`).
const NFT_TYPE_IPV4_ADDR: u32 = 7;
const NFT_TYPE_IPV6_ADDR: u32 = 8;
const NFT_TYPE_INET_SERVICE: u32 = 13;
/// xt NFQUEUE target: revision 3 takes `xt_NFQ_info_v3`.
const XT_NFQUEUE_NAME: &CStr = c"NFQUEUE";
const XT_NFQUEUE_REVISION: u32 = 3;
/// `NFQ_FLAG_BYPASS` in `xt_NFQ_info_v3.flags`: accept packets when no reader is bound.
const XT_NFQ_FLAG_BYPASS: u16 = 0x01;

/// The byte code `nft` generates for each rule of the model.
pub(super) fn prerouting_rule(
    table: &CStr,
    chain: &CStr,
    rule: PreroutingRule,
    queue: QueueRange,
    mode: QueueMode,
    set_id: &dyn Fn(&'static str) -> u32,
) -> RuleObject {
    let mut object = RuleObject::new(ProtoFamily::Inet, table, chain);
    match rule {
        PreroutingRule::JumpToHandshakeAnswer => {
            // `nft --debug=netlink` for `tcp flags == ack ct state new,invalid fib daddr type
            // local tcp dport @tcp_ports`: one l4proto dependency for both tcp matches.
            push_l4proto(&mut object, libc::IPPROTO_TCP as u8);
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                13,
                1,
            ));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[TcpFlags::ACK]));
            // ct state bits in host order: invalid 1<<0, new 1<<3.
            let new_or_invalid: u32 = (1 << 0) | (1 << 3);
            object.push(expr::ct(libc::NFT_CT_STATE as u32));
            object.push(expr::bitwise(
                &new_or_invalid.to_ne_bytes(),
                &0u32.to_ne_bytes(),
            ));
            object.push(expr::cmp(libc::NFT_CMP_NEQ as u32, &0u32.to_ne_bytes()));
            object.push(expr::fib(NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &RTN_LOCAL.to_ne_bytes()));
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                2,
                2,
            ));
            let set = port_set(Transport::Tcp);
            object.push(expr::lookup(set, set_id(set)));
        }
        PreroutingRule::DropBlocked(family)
        | PreroutingRule::DropBlockedRange(family)
        | PreroutingRule::AcceptIgnored(family) => {
            let set = match rule {
                PreroutingRule::DropBlocked(_) => blocked_set(family),
                PreroutingRule::DropBlockedRange(_) => blocked_range_set(family),
                _ => ignore_set(family),
            };
            let (nfproto, offset, length) = match family {
                IpFamily::V4 => (libc::NFPROTO_IPV4 as u8, 12, 4),
                IpFamily::V6 => (libc::NFPROTO_IPV6 as u8, 8, 16),
            };
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[nfproto]));
            object.push(expr::payload(
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                offset,
                length,
            ));
            object.push(expr::lookup(set, set_id(set)));
        }
        PreroutingRule::AcceptEstablished => {
            // ct state is a 32-bit mask in host order: established 1<<1, related 1<<2.
            let established_or_related: u32 = (1 << 1) | (1 << 2);
            object.push(expr::ct(libc::NFT_CT_STATE as u32));
            object.push(expr::bitwise(
                &established_or_related.to_ne_bytes(),
                &0u32.to_ne_bytes(),
            ));
            object.push(expr::cmp(libc::NFT_CMP_NEQ as u32, &0u32.to_ne_bytes()));
        }
        PreroutingRule::AcceptNotAddressedHere => {
            // The route type is a 32-bit value in host order, as `nft` compares it.
            object.push(expr::fib(NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE));
            object.push(expr::cmp(
                libc::NFT_CMP_NEQ as u32,
                &RTN_LOCAL.to_ne_bytes(),
            ));
        }
        PreroutingRule::AcceptOwnedBySocket => {
            object.push(expr::socket(NFT_SOCKET_TRANSPARENT));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[0]));
        }
        PreroutingRule::QueueIpOptions => {
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(
                libc::NFT_CMP_EQ as u32,
                &[libc::NFPROTO_IPV4 as u8],
            ));
            push_ip_header_length(&mut object);
            object.push(expr::cmp(libc::NFT_CMP_GT as u32, &[5]));
        }
        PreroutingRule::QueueIpv6RoutingHeader => {
            // `nft --debug=netlink` for `exthdr rt exists` in an inet chain: nfproto ipv6, then
            // `exthdr load ipv6 1b @ 43 + 0 present`, compared with 1.
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(
                libc::NFT_CMP_EQ as u32,
                &[libc::NFPROTO_IPV6 as u8],
            ));
            object.push(expr::ipv6_extension_header_present(IPV6_ROUTING_HEADER));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[1]));
        }
        PreroutingRule::QueueTcpFlags(probe) => {
            push_l4proto(&mut object, libc::IPPROTO_TCP as u8);
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                13,
                1,
            ));
            object.push(expr::bitwise(&[probe.mask()], &[0]));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[probe.expected()]));
        }
        PreroutingRule::QueueWatchedPort(transport) => {
            let protocol = match transport {
                Transport::Tcp => libc::IPPROTO_TCP as u8,
                Transport::Udp => libc::IPPROTO_UDP as u8,
            };
            push_l4proto(&mut object, protocol);
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                2,
                2,
            ));
            let set = port_set(transport);
            object.push(expr::lookup(set, set_id(set)));
        }
    }
    if rule.counts() {
        object.push(expr::counter());
    }
    match rule {
        PreroutingRule::JumpToHandshakeAnswer => {
            object.push(expr::jump(HANDSHAKE_ANSWER_CHAIN));
        }
        PreroutingRule::DropBlocked(_) | PreroutingRule::DropBlockedRange(_) => {
            object.push(expr::verdict(libc::NF_DROP as u32))
        }
        _ if rule.queues() => object.push(match mode {
            QueueMode::Native => expr::queue(queue),
            QueueMode::Compat => expr::xt_nfqueue(queue),
        }),
        _ => object.push(expr::verdict(libc::NF_ACCEPT as u32)),
    }
    object
}

/// The byte code `nft` generates for the rules of the handshake chains.
pub(super) fn handshake_rule(
    table: &CStr,
    chain: &CStr,
    rule: HandshakeRule,
    queue: QueueRange,
    mode: QueueMode,
) -> RuleObject {
    let mut object = RuleObject::new(ProtoFamily::Inet, table, chain);
    match rule {
        HandshakeRule::ReturnOwnedBySocket => {
            object.push(expr::socket(NFT_SOCKET_TRANSPARENT));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[0]));
            object.push(expr::verdict(libc::NFT_RETURN as u32));
        }
        HandshakeRule::QueueAnswer => {
            object.push(expr::counter());
            object.push(match mode {
                QueueMode::Native => expr::queue(queue),
                QueueMode::Compat => expr::xt_nfqueue(queue),
            });
        }
        HandshakeRule::UntrackReplies(mark) => {
            object.push(expr::meta(libc::NFT_META_MARK as u32));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &mark.to_ne_bytes()));
            object.push(expr::notrack());
        }
    }
    object
}

fn push_l4proto(object: &mut RuleObject, protocol: u8) {
    object.push(expr::meta(libc::NFT_META_L4PROTO as u32));
    object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[protocol]));
}

/// `ip hdrlength`: the low nibble of the first header byte, in 32-bit words.
fn push_ip_header_length(object: &mut RuleObject) {
    object.push(expr::payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 0, 1));
    object.push(expr::bitwise(&[0x0f], &[0]));
}

pub(super) fn short_header_rule(table: &CStr, chain: &CStr, nflog_group: u16) -> RuleObject {
    let mut object = RuleObject::new(ProtoFamily::NetDev, table, chain);
    // In a netdev chain `ip` first checks the ethertype, in network byte order.
    object.push(expr::meta(libc::NFT_META_PROTOCOL as u32));
    object.push(expr::cmp(
        libc::NFT_CMP_EQ as u32,
        &(libc::ETH_P_IP as u16).to_be_bytes(),
    ));
    push_ip_header_length(&mut object);
    object.push(expr::cmp(libc::NFT_CMP_LT as u32, &[5]));
    object.push(expr::counter());
    object.push(expr::log_group(nflog_group));
    object
}

/// Key type and length of a set, as `nft` declares them.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyKind {
    Ipv4,
    Ipv6,
    Port,
}

impl KeyKind {
    pub(super) fn address(family: IpFamily) -> Self {
        match family {
            IpFamily::V4 => KeyKind::Ipv4,
            IpFamily::V6 => KeyKind::Ipv6,
        }
    }

    pub(super) fn type_and_length(self) -> (u32, u32) {
        match self {
            KeyKind::Ipv4 => (NFT_TYPE_IPV4_ADDR, 4),
            KeyKind::Ipv6 => (NFT_TYPE_IPV6_ADDR, 16),
            KeyKind::Port => (NFT_TYPE_INET_SERVICE, 2),
        }
    }
}

/// A set key as the kernel stores it: network byte order.
pub(super) trait KeyBytes {
    fn key_bytes(&self) -> Vec<u8>;
}

impl KeyBytes for u16 {
    fn key_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
}

impl KeyBytes for Ipv4Addr {
    fn key_bytes(&self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

impl KeyBytes for Ipv6Addr {
    fn key_bytes(&self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

/// The blocked set and key for an address; IPv4-mapped IPv6 counts as IPv4, which is what
/// such a peer's packets carry on the wire.
pub(super) fn address_key(addr: IpAddr) -> (IpFamily, Vec<u8>) {
    match addr.to_canonical() {
        IpAddr::V4(v4) => (IpFamily::V4, v4.key_bytes()),
        IpAddr::V6(v6) => (IpFamily::V6, v6.key_bytes()),
    }
}

/// Expression builders. Each loads into or reads from register 1, the way `nft` does for a
/// single match.
mod expr {
    use super::{
        NFT_EXTHDR_F_PRESENT, NFT_EXTHDR_OP_IPV6, XT_NFQUEUE_NAME, XT_NFQUEUE_REVISION,
        XT_NFQ_FLAG_BYPASS,
    };
    use crate::config::QueueRange;
    use crate::nft::objects::ExprObject as Expr;
    use nftnl_sys as sys;
    use std::ffi::{CStr, CString};

    const REG_1: u32 = libc::NFT_REG_1 as u32;

    pub(super) fn meta(key: u32) -> Expr {
        Expr::new(c"meta")
            .u32(sys::NFTNL_EXPR_META_KEY, key)
            .u32(sys::NFTNL_EXPR_META_DREG, REG_1)
    }

    pub(super) fn ct(key: u32) -> Expr {
        Expr::new(c"ct")
            .u32(sys::NFTNL_EXPR_CT_KEY, key)
            .u32(sys::NFTNL_EXPR_CT_DREG, REG_1)
    }

    pub(super) fn payload(base: u32, offset: u32, length: u32) -> Expr {
        Expr::new(c"payload")
            .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
            .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
            .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, length)
    }

    /// `reg1 = (reg1 & mask) ^ xor` over `mask.len()` bytes.
    pub(super) fn bitwise(mask: &[u8], xor: &[u8]) -> Expr {
        Expr::new(c"bitwise")
            .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
            .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
            .bytes(sys::NFTNL_EXPR_BITWISE_XOR, xor)
    }

    pub(super) fn cmp(op: u32, data: &[u8]) -> Expr {
        Expr::new(c"cmp")
            .u32(sys::NFTNL_EXPR_CMP_SREG, REG_1)
            .u32(sys::NFTNL_EXPR_CMP_OP, op)
            .bytes(sys::NFTNL_EXPR_CMP_DATA, data)
    }

    /// Matches when register 1 is in the named set; `id` finds a set created in the same batch.
    pub(super) fn lookup(set: &'static str, id: u32) -> Expr {
        let name = CString::new(set).unwrap_or_default();
        Expr::new(c"lookup")
            .u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG_1)
            .string(sys::NFTNL_EXPR_LOOKUP_SET, &name)
            .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id)
    }

    /// Loads a property of the socket the packet belongs to; no socket means no match.
    pub(super) fn socket(key: u32) -> Expr {
        Expr::new(c"socket")
            .u32(sys::NFTNL_EXPR_SOCKET_KEY, key)
            .u32(sys::NFTNL_EXPR_SOCKET_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_SOCKET_LEVEL, 0)
    }

    /// Looks up the packet in the routing table (`flags` says which addresses and devices) and
    /// loads `result`; on a failed lookup the register holds 0 (`RTN_UNSPEC`).
    pub(super) fn fib(flags: u32, result: u32) -> Expr {
        Expr::new(c"fib")
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, flags)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, result)
            .u32(sys::NFTNL_EXPR_FIB_DREG, REG_1)
    }

    /// Loads 1 (one byte) when the packet's IPv6 extension header chain holds a header of
    /// `header_type`, 0 when it does not.
    pub(super) fn ipv6_extension_header_present(header_type: u8) -> Expr {
        Expr::new(c"exthdr")
            .u32(sys::NFTNL_EXPR_EXTHDR_DREG, REG_1)
            .u8(sys::NFTNL_EXPR_EXTHDR_TYPE, header_type)
            .u32(sys::NFTNL_EXPR_EXTHDR_OFFSET, 0)
            .u32(sys::NFTNL_EXPR_EXTHDR_LEN, 1)
            .u32(sys::NFTNL_EXPR_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT)
            .u32(sys::NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_IPV6)
    }

    /// Continue in the regular chain `chain`; a `return` there comes back to the next rule.
    pub(super) fn jump(chain: &CStr) -> Expr {
        Expr::new(c"immediate")
            .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, libc::NFT_JUMP as u32)
            .string(sys::NFTNL_EXPR_IMM_CHAIN, chain)
    }

    /// Keeps the packet out of conntrack; only valid before conntrack's hooks (priority raw).
    pub(super) fn notrack() -> Expr {
        Expr::new(c"notrack")
    }

    pub(super) fn counter() -> Expr {
        Expr::new(c"counter")
    }

    pub(super) fn verdict(code: u32) -> Expr {
        Expr::new(c"immediate")
            .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, code)
    }

    /// Native `queue num N bypass` or `queue num N-M bypass`. Without the fanout flag the
    /// kernel picks among several queues by a hash of the addresses, so one source always lands
    /// on one queue; with it, by CPU, which would split a scan over the readers.
    pub(super) fn queue(queues: QueueRange) -> Expr {
        Expr::new(c"queue")
            .u16(sys::NFTNL_EXPR_QUEUE_NUM, queues.first())
            .u16(sys::NFTNL_EXPR_QUEUE_TOTAL, queues.count())
            .u16(
                sys::NFTNL_EXPR_QUEUE_FLAGS,
                libc::NFT_QUEUE_FLAG_BYPASS as u16,
            )
    }

    /// The xtables NFQUEUE target through `nft_compat`, for kernels without `nft_queue`.
    /// `--queue-balance first:last` for several queues: balanced by address hash, as the native
    /// form, so NFQ_FLAG_CPU_FANOUT is never set.
    pub(super) fn xt_nfqueue(queues: QueueRange) -> Expr {
        // xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; }, host byte order.
        let mut info = [0u8; 6];
        info[..2].copy_from_slice(&queues.first().to_ne_bytes());
        info[2..4].copy_from_slice(&queues.count().to_ne_bytes());
        info[4..].copy_from_slice(&XT_NFQ_FLAG_BYPASS.to_ne_bytes());
        Expr::new(c"target")
            .string(sys::NFTNL_EXPR_TG_NAME, XT_NFQUEUE_NAME)
            .u32(sys::NFTNL_EXPR_TG_REV, XT_NFQUEUE_REVISION)
            // libnftnl keeps the TG_INFO pointer itself and free()s it with the expression.
            .malloced_bytes(sys::NFTNL_EXPR_TG_INFO, &info)
    }

    pub(super) fn log_group(group: u16) -> Expr {
        Expr::new(c"log").u16(sys::NFTNL_EXPR_LOG_GROUP, group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_addresses_block_the_ipv4_host() {
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(address_key(mapped), (IpFamily::V4, vec![192, 0, 2, 9]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_key(v6).0, IpFamily::V6);
    }
}
