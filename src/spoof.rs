//! Which sources nfsentry must never count or block: addresses no real packet can come from
//! (a forged source, to be dropped uncounted), and addresses whose block would cut the host off
//! (its own addresses, its routers, the admin's ignore list), however convincing the scan
//! "from" them looks.
//!
//! It does no I/O: what the host is arrives as [`HostFacts`], which [`crate::host_watch`] keeps
//! up to date from the kernel's own notifications; the ignore list comes from the config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::addrset::AddrSet;

/// What the host is, as far as telling possible sources from impossible ones needs. Lists are
/// sorted and without duplicates (see [`HostFacts::normalize`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The host's own addresses, on any interface, tentative ones included.
    pub local: Vec<IpAddr>,
    /// Whole prefixes the host takes as its own (`local` routes shorter than one address, such as
    /// 127.0.0.0/8 or an AnyIP range).
    pub local_nets: Vec<IpNet>,
    /// IPv4 broadcast addresses of the host's subnets (the limited broadcast is always one, and
    /// is not listed).
    pub broadcasts: Vec<IpAddr>,
    /// Routers the routing table sends through: gateways of every table, each next hop of a
    /// multipath route, IPv6 routers (link-local ones too), and the far end of point-to-point
    /// links.
    pub next_hops: Vec<IpAddr>,
    /// Interfaces that are loopback devices.
    pub loopback_ifindexes: Vec<u32>,
}

impl HostFacts {
    /// Sorts every list and drops duplicates, which the lookups rely on.
    pub fn normalize(&mut self) {
        for list in [&mut self.local, &mut self.broadcasts, &mut self.next_hops] {
            list.sort_unstable();
            list.dedup();
        }
        self.local_nets.sort_unstable();
        self.local_nets.dedup();
        self.loopback_ifindexes.sort_unstable();
        self.loopback_ifindexes.dedup();
    }

    /// Whether interface `ifindex` (as NFQUEUE reports the packet's input device) is a loopback
    /// device. No interface (a locally generated packet) counts as loopback.
    pub fn is_loopback(&self, ifindex: Option<u32>) -> bool {
        ifindex.map_or(true, |index| {
            self.loopback_ifindexes.binary_search(&index).is_ok()
        })
    }

    fn is_local(&self, address: IpAddr) -> bool {
        is_listed(&self.local, address) || self.local_nets.iter().any(|net| net.contains(&address))
    }
}

/// Why a source address cannot be a real sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 0.0.0.0/8 ("this network") or `::`: only a host that does not know its address yet
    /// sends from it (DHCP, IPv6 duplicate address detection), never to a port on this host.
    Unspecified,
    /// 255.255.255.255.
    LimitedBroadcast,
    /// The broadcast address of one of the host's subnets.
    DirectedBroadcast,
    /// 224.0.0.0/4 or ff00::/8: a group, never a sender.
    Multicast,
    /// 127.0.0.0/8 or ::1 on anything but a loopback device.
    Loopback,
    /// One of the host's own addresses on anything but a loopback device: the host talks to
    /// itself over loopback.
    OwnAddress,
    /// An IPv4-mapped IPv6 address (::ffff:0:0/96), which must never appear on the wire
    /// (RFC 4291 2.5.5.2).
    Ipv4MappedIpv6,
}

impl Reason {
    /// A fixed word for counters and log lines.
    pub const fn word(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::LimitedBroadcast => "limited-broadcast",
            Reason::DirectedBroadcast => "directed-broadcast",
            Reason::Multicast => "multicast",
            Reason::Loopback => "loopback",
            Reason::OwnAddress => "own-address",
            Reason::Ipv4MappedIpv6 => "ipv4-mapped",
        }
    }
}

/// Why `source`, seen on a packet that came in on a loopback device or not, cannot be a real
/// sender; `None` when it can. A packet from such a source was forged: counting it would let
/// anyone get any address blocked, or fill the tables with junk, so it is dropped uncounted.
pub fn impossible_source(
    source: IpAddr,
    came_in_on_loopback: bool,
    facts: &HostFacts,
) -> Option<Reason> {
    let reason = match source {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(_) => Some(Reason::Ipv4MappedIpv6),
            None => v6_reason(v6),
        },
    };
    if let Some(reason) = reason {
        return match reason {
            // The host talking to itself uses loopback addresses on the loopback device.
            Reason::Loopback if came_in_on_loopback => None,
            reason => Some(reason),
        };
    }
    if is_listed(&facts.broadcasts, source) {
        return Some(Reason::DirectedBroadcast);
    }
    if !came_in_on_loopback && facts.is_local(source) {
        return Some(Reason::OwnAddress);
    }
    None
}

/// Whether sorted `list` holds `address`. Asked for every queued packet, and some lists are
/// mostly empty (broadcasts on an IPv6-only host, for one): an empty list is not searched.
fn is_listed(list: &[IpAddr], address: IpAddr) -> bool {
    !list.is_empty() && list.binary_search(&address).is_ok()
}

fn v4_reason(address: Ipv4Addr) -> Option<Reason> {
    if address.octets()[0] == 0 {
        Some(Reason::Unspecified)
    } else if address.is_broadcast() {
        Some(Reason::LimitedBroadcast)
    } else if address.is_multicast() {
        Some(Reason::Multicast)
    } else if address.is_loopback() {
        Some(Reason::Loopback)
    } else {
        None
    }
}

fn v6_reason(address: Ipv6Addr) -> Option<Reason> {
    if address.is_unspecified() {
        Some(Reason::Unspecified)
    } else if address.is_multicast() {
        Some(Reason::Multicast)
    } else if address.is_loopback() {
        Some(Reason::Loopback)
    } else {
        None
    }
}

/// Why an address is never blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// The host's own address: a spoofed scan from it would shut the host out of itself.
    Local,
    /// A router of the host: blocking it would cut the host off the network.
    NextHop,
    /// On the admin's ignore list.
    Ignored,
}

/// The addresses never blocked: local ∪ next hops ∪ ignore list. Each lookup is a binary search
/// (O(log n)) in merged ranges.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    local: AddrSet,
    next_hops: AddrSet,
    ignored: AddrSet,
}

impl Protected {
    /// Built from the host's facts and the configured ignore list (CIDRs).
    pub fn new(facts: &HostFacts, ignore: &[IpNet]) -> Protected {
        let local: Vec<IpNet> = facts
            .local
            .iter()
            .map(|&address| IpNet::from(address))
            .chain(facts.local_nets.iter().copied())
            .collect();
        let next_hops: Vec<IpNet> = facts.next_hops.iter().map(|&a| IpNet::from(a)).collect();
        Protected {
            local: AddrSet::new(&local),
            next_hops: AddrSet::new(&next_hops),
            ignored: AddrSet::new(ignore),
        }
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.why(address).is_some()
    }

    /// Why `address` is protected, naming the first reason of local, next hop, ignored.
    pub fn why(&self, address: IpAddr) -> Option<Protection> {
        if self.local.contains(address) {
            Some(Protection::Local)
        } else if self.next_hops.contains(address) {
            Some(Protection::NextHop)
        } else if self.ignored.contains(address) {
            Some(Protection::Ignored)
        } else {
            None
        }
    }

    /// Whether `address` is a router of the host and not one of its own addresses: what
    /// [`Protected::why`] names [`Protection::NextHop`], without asking the ignore list, and
    /// with the short list of routers asked first since most addresses are not on it.
    pub fn is_router(&self, address: IpAddr) -> bool {
        self.next_hops.contains(address) && !self.local.contains(address)
    }

    /// Of the addresses blocked now, those that are protected: when an address has just become
    /// the host's own or a router, its block must be lifted at once.
    pub fn now_protected(&self, blocked: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        blocked
            .into_iter()
            .filter(|&address| self.contains(address))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK_IFINDEX: u32 = 1;
    const ETH0: u32 = 2;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    /// A host on 192.0.2.10/24 and 2001:db8::10/64 behind router 192.0.2.1 and fe80::1, with a
    /// point-to-point peer 198.51.100.1 and an AnyIP range 203.0.113.0/28.
    fn facts() -> HostFacts {
        let mut facts = HostFacts {
            local: ["192.0.2.10", "127.0.0.1", "::1", "2001:db8::10", "fe80::10"]
                .map(ip)
                .to_vec(),
            local_nets: vec![net("127.0.0.0/8"), net("203.0.113.0/28")],
            broadcasts: vec![ip("192.0.2.255")],
            next_hops: ["192.0.2.1", "fe80::1", "198.51.100.1"].map(ip).to_vec(),
            loopback_ifindexes: vec![LOOPBACK_IFINDEX],
        };
        facts.normalize();
        facts
    }

    #[test]
    fn impossible_sources_are_named() {
        let facts = facts();
        let cases: &[(&str, bool, Option<Reason>)] = &[
            ("0.0.0.0", false, Some(Reason::Unspecified)),
            ("0.1.2.3", false, Some(Reason::Unspecified)),
            ("::", false, Some(Reason::Unspecified)),
            ("255.255.255.255", false, Some(Reason::LimitedBroadcast)),
            ("255.255.255.255", true, Some(Reason::LimitedBroadcast)),
            ("192.0.2.255", false, Some(Reason::DirectedBroadcast)),
            ("224.0.0.1", false, Some(Reason::Multicast)),
            ("239.255.255.250", true, Some(Reason::Multicast)),
            ("ff02::1", false, Some(Reason::Multicast)),
            ("127.0.0.1", false, Some(Reason::Loopback)),
            ("127.9.9.9", false, Some(Reason::Loopback)),
            ("::1", false, Some(Reason::Loopback)),
            ("127.0.0.1", true, None),
            ("::1", true, None),
            ("192.0.2.10", false, Some(Reason::OwnAddress)),
            ("2001:db8::10", false, Some(Reason::OwnAddress)),
            ("203.0.113.9", false, Some(Reason::OwnAddress)),
            ("192.0.2.10", true, None),
            ("::ffff:198.51.100.7", false, Some(Reason::Ipv4MappedIpv6)),
            // Real sources: scanners, neighbours, routers (protected, but possible).
            ("198.51.100.7", false, None),
            ("192.0.2.7", false, None),
            ("192.0.2.0", false, None),
            ("192.0.2.1", false, None),
            ("2001:db8::7", false, None),
            ("fe80::7", false, None),
            ("169.254.1.1", false, None),
            ("240.0.0.1", false, None),
        ];
        for &(source, on_loopback, expected) in cases {
            assert_eq!(
                impossible_source(ip(source), on_loopback, &facts),
                expected,
                "{source} (loopback: {on_loopback})"
            );
        }
    }

    #[test]
    fn without_facts_only_the_fixed_ranges_are_impossible() {
        let none = HostFacts::default();
        assert_eq!(impossible_source(ip("192.0.2.255"), false, &none), None);
        assert_eq!(impossible_source(ip("192.0.2.10"), false, &none), None);
        assert_eq!(
            impossible_source(ip("127.0.0.1"), false, &none),
            Some(Reason::Loopback)
        );
        // No interface means the host itself sent it.
        assert!(none.is_loopback(None));
        assert!(!none.is_loopback(Some(ETH0)));
    }

    #[test]
    fn loopback_devices_are_looked_up() {
        let facts = facts();
        assert!(facts.is_loopback(Some(LOOPBACK_IFINDEX)));
        assert!(!facts.is_loopback(Some(ETH0)));
    }

    #[test]
    fn protection_names_its_reason() {
        let ignore = [net("198.51.100.0/28"), net("2001:db8:f::/48")];
        let protected = Protected::new(&facts(), &ignore);
        let cases: &[(&str, Option<Protection>)] = &[
            ("192.0.2.10", Some(Protection::Local)),
            ("::ffff:192.0.2.10", Some(Protection::Local)),
            ("203.0.113.15", Some(Protection::Local)),
            ("203.0.113.16", None),
            ("fe80::10", Some(Protection::Local)),
            ("192.0.2.1", Some(Protection::NextHop)),
            ("fe80::1", Some(Protection::NextHop)),
            // The peer of a point-to-point link is also inside the ignored range: local and
            // next hop are named first.
            ("198.51.100.1", Some(Protection::NextHop)),
            ("198.51.100.7", Some(Protection::Ignored)),
            ("2001:db8:f::1", Some(Protection::Ignored)),
            ("198.51.100.16", None),
            ("192.0.2.7", None),
            ("2001:db8::7", None),
        ];
        for &(address, expected) in cases {
            assert_eq!(protected.why(ip(address)), expected, "{address}");
            assert_eq!(protected.contains(ip(address)), expected.is_some());
            assert_eq!(
                protected.is_router(ip(address)),
                expected == Some(Protection::NextHop),
                "{address}"
            );
        }
    }

    #[test]
    fn blocks_of_newly_protected_addresses_are_named_for_release() {
        let before = Protected::new(&HostFacts::default(), &[]);
        let blocked = ["192.0.2.1", "198.51.100.7", "192.0.2.10"].map(ip);
        assert!(before.now_protected(blocked).is_empty());
        let after = Protected::new(&facts(), &[]);
        assert_eq!(
            after.now_protected(blocked),
            vec![ip("192.0.2.1"), ip("192.0.2.10")]
        );
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let mut facts = HostFacts {
            local: ["2001:db8::1", "192.0.2.1", "192.0.2.1"].map(ip).to_vec(),
            loopback_ifindexes: vec![3, 1, 3],
            ..HostFacts::default()
        };
        facts.normalize();
        assert_eq!(facts.local, vec![ip("192.0.2.1"), ip("2001:db8::1")]);
        assert_eq!(facts.loopback_ifindexes, vec![1, 3]);
    }

    #[test]
    fn reasons_have_distinct_words() {
        let words = [
            Reason::Unspecified,
            Reason::LimitedBroadcast,
            Reason::DirectedBroadcast,
            Reason::Multicast,
            Reason::Loopback,
            Reason::OwnAddress,
            Reason::Ipv4MappedIpv6,
        ]
        .map(Reason::word);
        let distinct: std::collections::HashSet<_> = words.iter().collect();
        assert_eq!(distinct.len(), words.len());
    }
}
