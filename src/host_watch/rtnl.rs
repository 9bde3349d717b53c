//! Reads rtnetlink's address, route and link messages (RTM_NEWADDR/DELADDR, RTM_NEWROUTE/
//! DELROUTE, RTM_NEWLINK/DELLINK, dumped or notified alike) into the few facts the host watch
//! keeps, and builds the dump requests. Every length is checked against the bytes present; a
//! message that cannot be read whole is dropped or, for a deletion, ignored, so that a damaged
//! message can never take a protection away.
//!
//! Layouts from include/uapi/linux/rtnetlink.h, if_addr.h and if_link.h; header fields are in
//! host byte order, addresses in network order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink_wire::{align4, read_u16_ne, read_u32_ne, Attributes, Message, Request};

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_DELADDR: u16 = 21;
pub(super) const RTM_GETADDR: u16 = 22;
pub(super) const RTM_NEWROUTE: u16 = 24;
pub(super) const RTM_DELROUTE: u16 = 25;
pub(super) const RTM_GETROUTE: u16 = 26;

/// Multicast groups (`enum rtnetlink_groups`).
pub(super) const RTNLGRP_LINK: u32 = 1;
pub(super) const RTNLGRP_IPV4_IFADDR: u32 = 5;
pub(super) const RTNLGRP_IPV4_ROUTE: u32 = 7;
pub(super) const RTNLGRP_IPV6_IFADDR: u32 = 9;
pub(super) const RTNLGRP_IPV6_ROUTE: u32 = 11;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `struct ifaddrmsg`: family, prefix length, flags, scope (u8 each), interface index (u32).
const IFADDRMSG_BYTES: usize = 8;
/// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type (u8 each), flags.
const RTMSG_BYTES: usize = 12;
/// `struct ifinfomsg`: family, pad, type (u16), index (i32), flags (u32), change (u32).
const IFINFOMSG_BYTES: usize = 16;
/// `struct rtnexthop`: length (u16), flags, hops (u8 each), interface index (i32).
const RTNEXTHOP_BYTES: usize = 8;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
/// A next hop of another family (IPv4 routes via IPv6 routers, RFC 5549): `struct rtvia`, a u16
/// family and the address.
const RTA_VIA: u16 = 18;

const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTN_BROADCAST: u8 = 3;
/// A route cache entry (IPv6 exceptions such as learned path MTUs), not a route.
const RTM_F_CLONED: u32 = 0x200;
const IFF_LOOPBACK: u32 = 0x8;
/// A new route added beside one with the same key rather than replacing it.
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;

/// What one message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Address {
        /// RTM_NEWADDR (or dumped) rather than RTM_DELADDR.
        present: bool,
        key: AddressKey,
        facts: AddressFacts,
    },
    Route {
        present: bool,
        /// NLM_F_APPEND: the next hops join those of the route with this key.
        append: bool,
        key: RouteKey,
        route: Route,
    },
    Link {
        present: bool,
        ifindex: u32,
        loopback: bool,
    },
}

/// One address on one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AddressKey {
    pub(crate) ifindex: u32,
    /// IFA_LOCAL where present (IPv4), else IFA_ADDRESS.
    pub(crate) local: IpAddr,
    pub(crate) prefix_len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AddressFacts {
    /// The far end of a point-to-point link: IFA_ADDRESS when it differs from IFA_LOCAL.
    pub(crate) peer: Option<IpAddr>,
    pub(crate) broadcast: Option<IpAddr>,
}

/// What tells one route from another in the kernel's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RouteKey {
    pub(crate) family: u8,
    pub(crate) table: u32,
    pub(crate) dst: Option<IpAddr>,
    pub(crate) dst_len: u8,
    pub(crate) src: Option<IpAddr>,
    pub(crate) src_len: u8,
    pub(crate) tos: u8,
    pub(crate) priority: u32,
    pub(crate) kind: RouteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RouteKind {
    Unicast,
    /// Delivered to the host itself (the `local` table: addresses, 127.0.0.0/8, AnyIP ranges).
    Local,
    Broadcast,
    Other(u8),
}

/// What the watch keeps of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Route {
    pub(crate) next_hops: Vec<NextHop>,
    /// RTA_OIF: the device of a single-path route (0 when absent).
    pub(crate) oif: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NextHop {
    pub(crate) address: IpAddr,
    /// The device it is reached through (0 when the message does not say).
    pub(crate) ifindex: u32,
}

/// A dump request of `kind` (RTM_GETLINK, RTM_GETADDR or RTM_GETROUTE) for every family and,
/// for routes, every table.
pub(super) fn dump_request(kind: u16, sequence: u32) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_DUMP;
    let request = Request::new(kind, flags, sequence);
    // Family AF_UNSPEC and zeros everywhere else: no filter.
    match kind {
        RTM_GETLINK => request.family_header(&[AF_UNSPEC; IFINFOMSG_BYTES]),
        RTM_GETADDR => request.family_header(&[AF_UNSPEC; IFADDRMSG_BYTES]),
        _ => request.family_header(&[AF_UNSPEC; RTMSG_BYTES]),
    }
    .finish()
}

/// What `message` says, if it is an address, route or link message that can be read; `None`
/// for anything else, and for a deletion that cannot be read whole.
pub(crate) fn parse(message: &Message<'_>) -> Option<Change> {
    match message.kind {
        RTM_NEWADDR | RTM_DELADDR => parse_address(message.payload, message.kind == RTM_NEWADDR),
        RTM_NEWROUTE | RTM_DELROUTE => parse_route(
            message.payload,
            message.kind == RTM_NEWROUTE,
            message.flags & NLM_F_APPEND != 0,
        ),
        RTM_NEWLINK | RTM_DELLINK => parse_link(message.payload, message.kind == RTM_NEWLINK),
        _ => None,
    }
}

/// The attributes after a family header, as far as they could be read.
struct Walked<'a> {
    /// Kind and value of each attribute read, in order.
    found: Vec<(u16, &'a [u8])>,
    /// Whether the walk reached the end unharmed.
    complete: bool,
}

fn attributes(payload: &[u8], header_bytes: usize) -> Option<Walked<'_>> {
    let bytes = payload.get(align4(header_bytes)..)?;
    let mut found = Vec::new();
    for attribute in Attributes::new(bytes) {
        match attribute {
            Ok(attribute) => found.push((attribute.kind, attribute.value)),
            Err(_) => {
                return Some(Walked {
                    found,
                    complete: false,
                })
            }
        }
    }
    Some(Walked {
        found,
        complete: true,
    })
}

fn parse_address(payload: &[u8], present: bool) -> Option<Change> {
    let header = payload.get(..IFADDRMSG_BYTES)?;
    let family = header[0];
    let prefix_len = header[1];
    let ifindex = read_u32_ne(header, 4)?;
    let walked = attributes(payload, IFADDRMSG_BYTES)?;
    if !walked.complete && !present {
        return None;
    }
    let address_of = |kind| {
        walked
            .found
            .iter()
            .find(|(found, _)| *found == kind)
            .and_then(|(_, value)| ip_address(family, value))
    };
    let address = address_of(IFA_ADDRESS);
    let local = address_of(IFA_LOCAL);
    let key = AddressKey {
        ifindex,
        local: local.or(address)?,
        prefix_len,
    };
    let facts = AddressFacts {
        peer: address
            .filter(|_| local.is_some())
            .filter(|&a| Some(a) != local),
        broadcast: address_of(IFA_BROADCAST),
    };
    Some(Change::Address {
        present,
        key,
        facts,
    })
}

fn parse_route(payload: &[u8], present: bool, append: bool) -> Option<Change> {
    let header = payload.get(..RTMSG_BYTES)?;
    let [family, dst_len, src_len, tos, table, _protocol, _scope, kind] =
        <[u8; 8]>::try_from(header.get(..8)?).ok()?;
    let flags = read_u32_ne(header, 8)?;
    if flags & RTM_F_CLONED != 0 || !(family == AF_INET || family == AF_INET6) {
        return None;
    }
    let walked = attributes(payload, RTMSG_BYTES)?;
    if !walked.complete && !present {
        return None;
    }
    let mut key = RouteKey {
        family,
        table: u32::from(table),
        dst: None,
        dst_len,
        src: None,
        src_len,
        tos,
        priority: 0,
        kind: match kind {
            RTN_UNICAST => RouteKind::Unicast,
            RTN_LOCAL => RouteKind::Local,
            RTN_BROADCAST => RouteKind::Broadcast,
            other => RouteKind::Other(other),
        },
    };
    let mut route = Route::default();
    let mut gateway = None;
    for &(attribute, value) in &walked.found {
        match attribute {
            RTA_DST => key.dst = ip_address(family, value),
            RTA_SRC => key.src = ip_address(family, value),
            RTA_TABLE => key.table = read_u32_ne(value, 0).unwrap_or(key.table),
            RTA_PRIORITY => key.priority = read_u32_ne(value, 0).unwrap_or(0),
            RTA_OIF => route.oif = read_u32_ne(value, 0).unwrap_or(0),
            RTA_GATEWAY => gateway = gateway.or(ip_address(family, value)),
            RTA_VIA => gateway = gateway.or(via_address(value)),
            RTA_MULTIPATH => route.next_hops.extend(multipath(family, value)),
            _ => {}
        }
    }
    if let Some(address) = gateway {
        route.next_hops.push(NextHop {
            address,
            ifindex: route.oif,
        });
    }
    route.next_hops.sort_unstable();
    route.next_hops.dedup();
    Some(Change::Route {
        present,
        append,
        key,
        route,
    })
}

/// The next hops of an RTA_MULTIPATH value: `struct rtnexthop`s, each followed by its own
/// attributes. A length that cannot be right ends the list there.
fn multipath(family: u8, value: &[u8]) -> Vec<NextHop> {
    let mut next_hops = Vec::new();
    let mut rest = value;
    while let Some(length) = read_u16_ne(rest, 0).map(usize::from) {
        let Some(entry) = rest.get(..length).filter(|_| length >= RTNEXTHOP_BYTES) else {
            break;
        };
        let ifindex = read_u32_ne(entry, 4).unwrap_or(0);
        let nested = entry.get(RTNEXTHOP_BYTES..).unwrap_or_default();
        for attribute in Attributes::new(nested).map_while(Result::ok) {
            let address = match attribute.kind {
                RTA_GATEWAY => ip_address(family, attribute.value),
                RTA_VIA => via_address(attribute.value),
                _ => None,
            };
            if let Some(address) = address {
                next_hops.push(NextHop { address, ifindex });
            }
        }
        rest = rest
            .get(align4(length).min(rest.len())..)
            .unwrap_or_default();
    }
    next_hops
}

fn parse_link(payload: &[u8], present: bool) -> Option<Change> {
    let header = payload.get(..IFINFOMSG_BYTES)?;
    Some(Change::Link {
        present,
        ifindex: read_u32_ne(header, 4)?,
        loopback: read_u32_ne(header, 8)? & IFF_LOOPBACK != 0,
    })
}

/// An address of `family` from an attribute value of exactly its length.
fn ip_address(family: u8, value: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => <[u8; 4]>::try_from(value)
            .ok()
            .map(|octets| IpAddr::V4(Ipv4Addr::from(octets))),
        AF_INET6 => <[u8; 16]>::try_from(value)
            .ok()
            .map(|octets| IpAddr::V6(Ipv6Addr::from(octets))),
        _ => None,
    }
}

/// `struct rtvia`: the family as a u16 (host order), then the address.
fn via_address(value: &[u8]) -> Option<IpAddr> {
    let family = u8::try_from(read_u16_ne(value, 0)?).ok()?;
    ip_address(family, value.get(2..)?)
}

/// Messages as the kernel sends them, for this module's tests and the watch's.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::netlink_wire::fixtures::{attribute, message};

    pub(crate) fn octets(address: IpAddr) -> Vec<u8> {
        match address {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }
    }

    fn family_of(address: IpAddr) -> u8 {
        if address.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        }
    }

    /// RTM_NEWADDR or RTM_DELADDR as the kernel sends it: IPv4 with IFA_LOCAL (and IFA_ADDRESS
    /// the same or the peer), IPv6 with IFA_ADDRESS only.
    pub(crate) fn address_message(
        present: bool,
        ifindex: u32,
        local: IpAddr,
        prefix_len: u8,
        peer: Option<IpAddr>,
        broadcast: Option<IpAddr>,
    ) -> Vec<u8> {
        let mut payload = vec![family_of(local), prefix_len, 0, 0];
        payload.extend_from_slice(&ifindex.to_ne_bytes());
        payload.extend(attribute(IFA_ADDRESS, &octets(peer.unwrap_or(local))));
        if local.is_ipv4() {
            payload.extend(attribute(IFA_LOCAL, &octets(local)));
        }
        if let Some(broadcast) = broadcast {
            payload.extend(attribute(IFA_BROADCAST, &octets(broadcast)));
        }
        payload.extend(attribute(3, b"eth0\0"));
        let kind = if present { RTM_NEWADDR } else { RTM_DELADDR };
        message(kind, 0, 0, 0, &payload)
    }

    /// One next hop of a multipath route: `struct rtnexthop` and an RTA_GATEWAY (or RTA_VIA when
    /// its family differs from the route's).
    pub(crate) fn rtnexthop(route_family: u8, gateway: IpAddr, ifindex: u32) -> Vec<u8> {
        let nested = if family_of(gateway) == route_family {
            attribute(RTA_GATEWAY, &octets(gateway))
        } else {
            let mut via = u16::from(family_of(gateway)).to_ne_bytes().to_vec();
            via.extend(octets(gateway));
            attribute(RTA_VIA, &via)
        };
        let length = (RTNEXTHOP_BYTES + nested.len()) as u16;
        let mut bytes = length.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&ifindex.to_ne_bytes());
        bytes.extend(nested);
        bytes
    }

    /// A route message. `dst` with its length; `gateways` as one RTA_GATEWAY when there is one,
    /// as RTA_MULTIPATH when there are several.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn route_message(
        present: bool,
        flags: u16,
        kind: u8,
        table: u32,
        dst: IpAddr,
        dst_len: u8,
        gateways: &[(IpAddr, u32)],
        oif: u32,
    ) -> Vec<u8> {
        let family = family_of(dst);
        let mut payload = vec![family, dst_len, 0, 0, table.min(255) as u8, 4, 0, kind];
        payload.extend_from_slice(&0u32.to_ne_bytes());
        payload.extend(attribute(RTA_TABLE, &table.to_ne_bytes()));
        if dst_len > 0 {
            payload.extend(attribute(RTA_DST, &octets(dst)));
        }
        payload.extend(attribute(RTA_PRIORITY, &100u32.to_ne_bytes()));
        match gateways {
            [] => {}
            [(gateway, _)] if family_of(*gateway) == family => {
                payload.extend(attribute(RTA_GATEWAY, &octets(*gateway)));
            }
            many => {
                let nexthops: Vec<u8> = many
                    .iter()
                    .flat_map(|&(gateway, ifindex)| rtnexthop(family, gateway, ifindex))
                    .collect();
                payload.extend(attribute(RTA_MULTIPATH, &nexthops));
            }
        }
        if oif != 0 {
            payload.extend(attribute(RTA_OIF, &oif.to_ne_bytes()));
        }
        let kind = if present { RTM_NEWROUTE } else { RTM_DELROUTE };
        message(kind, flags, 0, 0, &payload)
    }

    pub(crate) fn link_message(present: bool, ifindex: u32, loopback: bool) -> Vec<u8> {
        let mut payload = vec![AF_UNSPEC, 0];
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(&ifindex.to_ne_bytes());
        let flags: u32 = if loopback { IFF_LOOPBACK | 1 } else { 1 };
        payload.extend_from_slice(&flags.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes());
        payload.extend(attribute(3, b"lo\0"));
        let kind = if present { RTM_NEWLINK } else { RTM_DELLINK };
        message(kind, 0, 0, 0, &payload)
    }

    pub(crate) const UNICAST: u8 = RTN_UNICAST;
    pub(crate) const LOCAL: u8 = RTN_LOCAL;
    pub(crate) const BROADCAST: u8 = RTN_BROADCAST;
    pub(crate) const APPEND: u16 = NLM_F_APPEND;
    pub(crate) const MAIN_TABLE: u32 = 254;
    pub(crate) const LOCAL_TABLE: u32 = 255;
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::netlink_wire::fixtures::{attribute, message, truncations_and_corruptions};
    use crate::netlink_wire::Messages;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn parse_one(bytes: &[u8]) -> Option<Change> {
        let messages: Vec<_> = Messages::new(bytes).collect();
        let [message] = messages.as_slice() else {
            panic!("one message expected, got {}", messages.len());
        };
        parse(message)
    }

    #[test]
    fn addresses_are_read_with_peer_and_broadcast() {
        let plain = address_message(true, 2, ip("192.0.2.10"), 24, None, Some(ip("192.0.2.255")));
        assert_eq!(
            parse_one(&plain),
            Some(Change::Address {
                present: true,
                key: AddressKey {
                    ifindex: 2,
                    local: ip("192.0.2.10"),
                    prefix_len: 24
                },
                facts: AddressFacts {
                    peer: None,
                    broadcast: Some(ip("192.0.2.255"))
                },
            })
        );
        let point_to_point = address_message(
            false,
            5,
            ip("192.0.2.10"),
            32,
            Some(ip("198.51.100.1")),
            None,
        );
        assert_eq!(
            parse_one(&point_to_point),
            Some(Change::Address {
                present: false,
                key: AddressKey {
                    ifindex: 5,
                    local: ip("192.0.2.10"),
                    prefix_len: 32
                },
                facts: AddressFacts {
                    peer: Some(ip("198.51.100.1")),
                    broadcast: None
                },
            })
        );
        let v6 = address_message(true, 3, ip("fe80::10"), 64, None, None);
        assert!(matches!(
            parse_one(&v6),
            Some(Change::Address { key, facts, .. })
                if key.local == ip("fe80::10") && facts == AddressFacts::default()
        ));
    }

    #[test]
    fn routes_are_read_with_every_kind_of_next_hop() {
        let via_gateway = route_message(
            true,
            0,
            UNICAST,
            MAIN_TABLE,
            ip("0.0.0.0"),
            0,
            &[(ip("192.0.2.1"), 0)],
            2,
        );
        let Some(Change::Route { key, route, .. }) = parse_one(&via_gateway) else {
            panic!("a route");
        };
        assert_eq!(key.table, MAIN_TABLE);
        assert_eq!(key.dst, None);
        assert_eq!(key.priority, 100);
        assert_eq!(key.kind, RouteKind::Unicast);
        assert_eq!(
            route.next_hops,
            vec![NextHop {
                address: ip("192.0.2.1"),
                ifindex: 2
            }]
        );

        // Multipath, one next hop an IPv6 router (RTA_VIA), in a table above 255.
        let multipath = route_message(
            true,
            APPEND,
            UNICAST,
            1000,
            ip("198.51.100.0"),
            24,
            &[(ip("192.0.2.1"), 2), (ip("fe80::1"), 3)],
            0,
        );
        let Some(Change::Route {
            key, route, append, ..
        }) = parse_one(&multipath)
        else {
            panic!("a route");
        };
        assert!(append);
        assert_eq!(key.table, 1000);
        assert_eq!(key.dst, Some(ip("198.51.100.0")));
        assert_eq!(
            route.next_hops,
            vec![
                NextHop {
                    address: ip("192.0.2.1"),
                    ifindex: 2
                },
                NextHop {
                    address: ip("fe80::1"),
                    ifindex: 3
                },
            ]
        );

        let broadcast = route_message(
            false,
            0,
            BROADCAST,
            LOCAL_TABLE,
            ip("192.0.2.255"),
            32,
            &[],
            2,
        );
        assert!(matches!(
            parse_one(&broadcast),
            Some(Change::Route { present: false, key, route, .. })
                if key.kind == RouteKind::Broadcast && route.next_hops.is_empty() && route.oif == 2
        ));
    }

    #[test]
    fn cached_routes_and_other_families_are_skipped() {
        let mut cloned = route_message(
            true,
            0,
            UNICAST,
            MAIN_TABLE,
            ip("2001:db8::7"),
            128,
            &[(ip("fe80::1"), 2)],
            2,
        );
        cloned[16 + 8..16 + 12].copy_from_slice(&RTM_F_CLONED.to_ne_bytes());
        assert_eq!(parse_one(&cloned), None);
        let mut bridge = route_message(true, 0, UNICAST, MAIN_TABLE, ip("::"), 0, &[], 0);
        bridge[16] = 7; // AF_BRIDGE
        assert_eq!(parse_one(&bridge), None);
        assert_eq!(parse_one(&message(RTM_GETROUTE, 0, 0, 0, &[0; 12])), None);
    }

    #[test]
    fn links_say_whether_they_are_loopback() {
        assert_eq!(
            parse_one(&link_message(true, 1, true)),
            Some(Change::Link {
                present: true,
                ifindex: 1,
                loopback: true
            })
        );
        assert_eq!(
            parse_one(&link_message(false, 4, false)),
            Some(Change::Link {
                present: false,
                ifindex: 4,
                loopback: false
            })
        );
    }

    #[test]
    fn a_damaged_deletion_is_ignored_and_a_damaged_addition_kept_as_far_as_read() {
        // A gateway, then an attribute claiming more bytes than there are.
        let mut payload = vec![AF_INET, 24, 0, 0, 254, 4, 0, RTN_UNICAST];
        payload.extend_from_slice(&0u32.to_ne_bytes());
        payload.extend(attribute(RTA_GATEWAY, &[192, 0, 2, 1]));
        payload.extend_from_slice(&[200, 0, 1, 0]);
        let deletion = message(RTM_DELROUTE, 0, 0, 0, &payload);
        assert_eq!(parse_one(&deletion), None);
        let addition = message(RTM_NEWROUTE, 0, 0, 0, &payload);
        assert!(matches!(
            parse_one(&addition),
            Some(Change::Route { route, .. }) if route.next_hops.len() == 1
        ));
    }

    #[test]
    fn wrong_lengths_are_not_addresses() {
        assert_eq!(ip_address(AF_INET, &[1, 2, 3]), None);
        assert_eq!(ip_address(AF_INET6, &[0; 4]), None);
        assert_eq!(ip_address(7, &[0; 4]), None);
        assert_eq!(via_address(&[10]), None);
        let mut via = u16::from(AF_INET6).to_ne_bytes().to_vec();
        via.extend_from_slice(&[0; 15]);
        assert_eq!(via_address(&via), None);
        // A multipath entry that claims less than its own header ends the list.
        assert_eq!(multipath(AF_INET, &[4, 0, 0, 0, 0, 0, 0, 0]), vec![]);
    }

    #[test]
    fn dump_requests_ask_for_every_family() {
        for (kind, header) in [
            (RTM_GETLINK, IFINFOMSG_BYTES),
            (RTM_GETADDR, IFADDRMSG_BYTES),
            (RTM_GETROUTE, RTMSG_BYTES),
        ] {
            let request = dump_request(kind, 9);
            let messages: Vec<_> = Messages::new(&request).collect();
            let [message] = messages.as_slice() else {
                panic!("one message");
            };
            assert_eq!(message.kind, kind);
            assert_eq!(message.flags, NLM_F_REQUEST | NLM_F_DUMP);
            assert_eq!(message.sequence, 9);
            assert_eq!(message.payload, &vec![0; header][..]);
        }
    }

    /// Every prefix and thousands of corrupted copies of each kind of message parse without
    /// panic, and a damaged deletion never yields a change.
    #[test]
    fn truncated_and_corrupted_messages_never_panic() {
        let samples = [
            address_message(
                true,
                2,
                ip("192.0.2.10"),
                24,
                Some(ip("192.0.2.9")),
                Some(ip("192.0.2.255")),
            ),
            address_message(false, 2, ip("2001:db8::10"), 64, None, None),
            route_message(
                true,
                APPEND,
                UNICAST,
                1000,
                ip("198.51.100.0"),
                24,
                &[
                    (ip("192.0.2.1"), 2),
                    (ip("fe80::1"), 3),
                    (ip("192.0.2.2"), 4),
                ],
                0,
            ),
            route_message(
                false,
                0,
                UNICAST,
                MAIN_TABLE,
                ip("2001:db8:1::"),
                48,
                &[(ip("fe80::1"), 2)],
                2,
            ),
            link_message(true, 1, true),
        ];
        for sample in &samples {
            for bytes in truncations_and_corruptions(sample, 5000) {
                for message in Messages::new(&bytes) {
                    let _ = parse(&message);
                }
            }
        }
    }
}
