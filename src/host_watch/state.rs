//! The host as the kernel's messages have described it so far: addresses per interface, the
//! routes that name a router or a local or broadcast destination, and the loopback devices; and
//! the [`HostFacts`] they add up to. Applying a change is idempotent and changes arrive in
//! order, so replaying notifications queued during a dump over the dump's result converges on
//! the kernel's state.
//!
//! Where the kernel's messages cannot say everything (IPv4 drops routes silently when their
//! device goes down; a full Internet table is too big to mirror), it errs towards keeping a
//! protection: a router that is gone may stay protected until the next full dump, a router in
//! use is never forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::rtnl::{AddressFacts, AddressKey, Change, NextHop, Route, RouteKey, RouteKind};
use crate::spoof::HostFacts;

/// Routes mirrored one by one, at most. A host or a small router has a few dozen; a router with
/// full Internet tables has a million, which are not worth a copy: beyond this bound only the
/// next hops of new routes are kept, and never forgotten until the next full dump.
pub(super) const MAX_ROUTES: usize = 1 << 16;

const AF_INET: u8 = 2;
/// An IPv4 prefix this long or longer has no broadcast address (RFC 3021 for /31).
const NO_BROADCAST_PREFIX: u8 = 31;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HostState {
    addresses: BTreeMap<AddressKey, AddressFacts>,
    routes: BTreeMap<RouteKey, Route>,
    /// Next hops of routes beyond [`MAX_ROUTES`].
    sticky_next_hops: BTreeSet<IpAddr>,
    loopbacks: BTreeSet<u32>,
}

impl HostState {
    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Address {
                present: true,
                key,
                facts,
            } => {
                self.addresses.insert(key, facts);
            }
            Change::Address {
                present: false,
                key,
                ..
            } => {
                self.addresses.remove(&key);
            }
            Change::Route {
                present: true,
                append,
                key,
                route,
            } => self.add_route(key, route, append),
            Change::Route {
                present: false,
                key,
                route,
                ..
            } => self.remove_route(&key, &route),
            Change::Link {
                present: true,
                ifindex,
                loopback,
            } => {
                if loopback {
                    self.loopbacks.insert(ifindex);
                } else {
                    self.loopbacks.remove(&ifindex);
                }
            }
            Change::Link {
                present: false,
                ifindex,
                ..
            } => self.forget_link(ifindex),
        }
    }

    fn add_route(&mut self, key: RouteKey, mut route: Route, append: bool) {
        let worth_keeping = !route.next_hops.is_empty()
            || matches!(key.kind, RouteKind::Local | RouteKind::Broadcast);
        if let Some(known) = self.routes.get_mut(&key) {
            // An IPv4 route message always describes the whole route, so it replaces; an IPv6
            // one may describe only the next hop just added to a multipath route, and an
            // appended route shares its key with the one before it: both add.
            if append || key.family != AF_INET {
                known.next_hops.extend(route.next_hops);
                known.next_hops.sort_unstable();
                known.next_hops.dedup();
                return;
            }
            if worth_keeping {
                *known = route;
            } else {
                self.routes.remove(&key);
            }
            return;
        }
        if !worth_keeping {
            return;
        }
        let bounded = key.kind == RouteKind::Unicast && self.routes.len() >= MAX_ROUTES;
        if bounded {
            self.sticky_next_hops
                .extend(route.next_hops.iter().map(|hop| hop.address));
        } else {
            route.next_hops.sort_unstable();
            self.routes.insert(key, route);
        }
    }

    /// Removes the route, or only the next hops the deletion names (IPv6 deletes one next hop of
    /// a multipath route at a time).
    fn remove_route(&mut self, key: &RouteKey, deleted: &Route) {
        let Some(known) = self.routes.get_mut(key) else {
            return;
        };
        if !deleted.next_hops.is_empty() {
            known.next_hops.retain(|hop| {
                !deleted
                    .next_hops
                    .iter()
                    .any(|gone| same_next_hop(gone, hop))
            });
            if !known.next_hops.is_empty() {
                return;
            }
        }
        self.routes.remove(key);
    }

    /// A device is gone, and with it its addresses and every route through it, which IPv4 does
    /// not announce one by one.
    fn forget_link(&mut self, ifindex: u32) {
        self.loopbacks.remove(&ifindex);
        self.addresses.retain(|key, _| key.ifindex != ifindex);
        self.routes.retain(|key, route| {
            if route.next_hops.is_empty() {
                return route.oif != ifindex;
            }
            route.next_hops.retain(|hop| hop.ifindex != ifindex);
            // A route whose next hops were all through the device goes; a local or broadcast
            // route never has next hops and was judged by its device above.
            !route.next_hops.is_empty() || key.kind != RouteKind::Unicast
        });
    }

    pub(super) fn facts(&self) -> HostFacts {
        let mut facts = HostFacts::default();
        for (key, address) in &self.addresses {
            facts.local.push(key.local);
            facts.next_hops.extend(address.peer);
            if let IpAddr::V4(local) = key.local {
                if key.prefix_len < NO_BROADCAST_PREFIX {
                    facts
                        .broadcasts
                        .extend(address.broadcast.filter(IpAddr::is_ipv4));
                    if let Ok(subnet) = ipnet::Ipv4Net::new(local, key.prefix_len) {
                        facts.broadcasts.push(IpAddr::V4(subnet.broadcast()));
                    }
                }
            }
        }
        for (key, route) in &self.routes {
            facts
                .next_hops
                .extend(route.next_hops.iter().map(|hop| hop.address));
            let Some(dst) = key.dst else {
                continue;
            };
            let full_length = if dst.is_ipv4() { 32 } else { 128 };
            match key.kind {
                RouteKind::Broadcast if dst.is_ipv4() && key.dst_len == full_length => {
                    facts.broadcasts.push(dst);
                }
                RouteKind::Local if key.dst_len < full_length => {
                    if let Ok(net) = IpNet::new(dst, key.dst_len) {
                        facts.local_nets.push(net.trunc());
                    }
                }
                _ => {}
            }
        }
        facts
            .next_hops
            .extend(self.sticky_next_hops.iter().copied());
        facts
            .loopback_ifindexes
            .extend(self.loopbacks.iter().copied());
        facts.normalize();
        facts
    }
}

/// A deletion that names no device matches the address on any.
fn same_next_hop(deleted: &NextHop, known: &NextHop) -> bool {
    deleted.address == known.address && (deleted.ifindex == 0 || deleted.ifindex == known.ifindex)
}

#[cfg(test)]
mod tests {
    use super::super::rtnl::fixtures::*;
    use super::super::rtnl::parse;
    use super::*;
    use crate::netlink_wire::Messages;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    /// Applies every message of each datagram in turn.
    fn apply(state: &mut HostState, datagrams: &[Vec<u8>]) {
        for datagram in datagrams {
            for message in Messages::new(datagram) {
                if let Some(change) = parse(&message) {
                    state.apply(change);
                }
            }
        }
    }

    fn route(present: bool, dst: &str, len: u8, gateways: &[(&str, u32)]) -> Vec<u8> {
        let gateways: Vec<_> = gateways.iter().map(|&(g, i)| (ip(g), i)).collect();
        // A single-path route names its device in RTA_OIF.
        let oif = match gateways.as_slice() {
            [(_, ifindex)] => *ifindex,
            _ => 0,
        };
        route_message(
            present,
            0,
            UNICAST,
            MAIN_TABLE,
            ip(dst),
            len,
            &gateways,
            oif,
        )
    }

    #[test]
    fn addresses_come_and_go_per_interface() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[
                link_message(true, 1, true),
                address_message(true, 1, ip("127.0.0.1"), 8, None, None),
                address_message(true, 2, ip("192.0.2.10"), 24, None, Some(ip("192.0.2.255"))),
                address_message(true, 3, ip("192.0.2.10"), 24, None, None),
                address_message(true, 2, ip("2001:db8::10"), 64, None, None),
                address_message(
                    true,
                    4,
                    ip("192.0.2.20"),
                    32,
                    Some(ip("198.51.100.1")),
                    None,
                ),
            ],
        );
        let facts = state.facts();
        assert_eq!(
            facts.local,
            ["127.0.0.1", "192.0.2.10", "192.0.2.20", "2001:db8::10"].map(ip)
        );
        assert_eq!(facts.broadcasts, ["127.255.255.255", "192.0.2.255"].map(ip));
        assert_eq!(facts.next_hops, vec![ip("198.51.100.1")]);
        assert_eq!(facts.loopback_ifindexes, vec![1]);

        // The same address leaves one interface but stays on the other.
        apply(
            &mut state,
            &[address_message(false, 2, ip("192.0.2.10"), 24, None, None)],
        );
        assert!(state.facts().local.contains(&ip("192.0.2.10")));
        apply(
            &mut state,
            &[address_message(false, 3, ip("192.0.2.10"), 24, None, None)],
        );
        assert!(!state.facts().local.contains(&ip("192.0.2.10")));
    }

    #[test]
    fn a_31_or_32_has_no_broadcast_even_when_one_is_given() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[address_message(
                true,
                2,
                ip("192.0.2.0"),
                31,
                None,
                Some(ip("192.0.2.1")),
            )],
        );
        assert!(state.facts().broadcasts.is_empty());
    }

    #[test]
    fn gateways_and_multipath_next_hops_are_followed() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[
                route(true, "0.0.0.0", 0, &[("192.0.2.1", 2)]),
                route(
                    true,
                    "198.51.100.0",
                    24,
                    &[("192.0.2.2", 2), ("192.0.2.3", 3)],
                ),
                route(true, "::", 0, &[("fe80::1", 2)]),
                route(true, "192.0.2.0", 24, &[]),
            ],
        );
        assert_eq!(
            state.facts().next_hops,
            ["192.0.2.1", "192.0.2.2", "192.0.2.3", "fe80::1"].map(ip)
        );
        apply(
            &mut state,
            &[
                route(
                    false,
                    "198.51.100.0",
                    24,
                    &[("192.0.2.2", 2), ("192.0.2.3", 3)],
                ),
                route(false, "::", 0, &[("fe80::1", 2)]),
            ],
        );
        assert_eq!(state.facts().next_hops, vec![ip("192.0.2.1")]);
    }

    #[test]
    fn an_ipv4_route_replaced_drops_its_old_gateway() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[route(true, "0.0.0.0", 0, &[("192.0.2.1", 2)])],
        );
        apply(
            &mut state,
            &[route(true, "0.0.0.0", 0, &[("192.0.2.254", 2)])],
        );
        assert_eq!(state.facts().next_hops, vec![ip("192.0.2.254")]);
        // Replaced by a route without a gateway: nothing left to protect.
        apply(&mut state, &[route(true, "0.0.0.0", 0, &[])]);
        assert!(state.facts().next_hops.is_empty());
    }

    #[test]
    fn ipv6_next_hops_join_and_leave_one_at_a_time() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[
                route(true, "2001:db8:1::", 48, &[("fe80::1", 2)]),
                route(true, "2001:db8:1::", 48, &[("fe80::2", 2)]),
            ],
        );
        assert_eq!(state.facts().next_hops, ["fe80::1", "fe80::2"].map(ip));
        apply(
            &mut state,
            &[route(false, "2001:db8:1::", 48, &[("fe80::1", 2)])],
        );
        assert_eq!(state.facts().next_hops, vec![ip("fe80::2")]);
        // The same link-local router through another device is another next hop.
        apply(
            &mut state,
            &[route(false, "2001:db8:1::", 48, &[("fe80::2", 3)])],
        );
        assert_eq!(state.facts().next_hops, vec![ip("fe80::2")]);
        apply(&mut state, &[route(false, "2001:db8:1::", 48, &[])]);
        assert!(state.facts().next_hops.is_empty());
    }

    #[test]
    fn appended_ipv4_routes_add_their_gateways() {
        let mut state = HostState::default();
        let appended = route_message(
            true,
            APPEND,
            UNICAST,
            MAIN_TABLE,
            ip("198.51.100.0"),
            24,
            &[(ip("192.0.2.2"), 2)],
            0,
        );
        apply(
            &mut state,
            &[
                route(true, "198.51.100.0", 24, &[("192.0.2.1", 2)]),
                appended,
            ],
        );
        assert_eq!(state.facts().next_hops, ["192.0.2.1", "192.0.2.2"].map(ip));
    }

    #[test]
    fn local_and_broadcast_routes_of_the_local_table_are_read() {
        let mut state = HostState::default();
        let local = |dst: &str, len: u8, oif: u32| {
            route_message(true, 0, LOCAL, LOCAL_TABLE, ip(dst), len, &[], oif)
        };
        apply(
            &mut state,
            &[
                local("127.0.0.0", 8, 1),
                local("127.0.0.1", 32, 1),
                local("203.0.113.0", 28, 1),
                route_message(
                    true,
                    0,
                    BROADCAST,
                    LOCAL_TABLE,
                    ip("192.0.2.255"),
                    32,
                    &[],
                    2,
                ),
            ],
        );
        let facts = state.facts();
        assert_eq!(
            facts.local_nets,
            vec![
                "127.0.0.0/8".parse().expect("net"),
                "203.0.113.0/28".parse().expect("net")
            ]
        );
        assert_eq!(facts.broadcasts, vec![ip("192.0.2.255")]);
        apply(
            &mut state,
            &[route_message(
                false,
                0,
                BROADCAST,
                LOCAL_TABLE,
                ip("192.0.2.255"),
                32,
                &[],
                2,
            )],
        );
        assert!(state.facts().broadcasts.is_empty());
    }

    #[test]
    fn a_deleted_device_takes_its_addresses_and_routes_along() {
        let mut state = HostState::default();
        apply(
            &mut state,
            &[
                link_message(true, 2, false),
                address_message(true, 2, ip("192.0.2.10"), 24, None, None),
                address_message(true, 3, ip("198.51.100.10"), 24, None, None),
                route(true, "0.0.0.0", 0, &[("192.0.2.1", 2)]),
                route(
                    true,
                    "203.0.113.0",
                    24,
                    &[("192.0.2.2", 2), ("198.51.100.1", 3)],
                ),
                route_message(
                    true,
                    0,
                    BROADCAST,
                    LOCAL_TABLE,
                    ip("192.0.2.255"),
                    32,
                    &[],
                    2,
                ),
            ],
        );
        apply(&mut state, &[link_message(false, 2, false)]);
        let facts = state.facts();
        assert_eq!(facts.local, vec![ip("198.51.100.10")]);
        assert_eq!(facts.next_hops, vec![ip("198.51.100.1")]);
        assert_eq!(facts.broadcasts, vec![ip("198.51.100.255")]);
    }

    #[test]
    fn beyond_the_bound_next_hops_stick() {
        let mut state = HostState::default();
        for n in 0..MAX_ROUTES as u32 {
            let dst = std::net::Ipv4Addr::from(0x0a00_0000 + (n << 8));
            let change = Change::Route {
                present: true,
                append: false,
                key: RouteKey {
                    family: AF_INET,
                    table: MAIN_TABLE,
                    dst: Some(IpAddr::V4(dst)),
                    dst_len: 24,
                    src: None,
                    src_len: 0,
                    tos: 0,
                    priority: 0,
                    kind: RouteKind::Unicast,
                },
                route: Route {
                    next_hops: vec![NextHop {
                        address: ip("192.0.2.1"),
                        ifindex: 2,
                    }],
                    oif: 0,
                },
            };
            state.apply(change);
        }
        apply(
            &mut state,
            &[route(true, "198.51.100.0", 24, &[("192.0.2.9", 2)])],
        );
        assert!(state.facts().next_hops.contains(&ip("192.0.2.9")));
        apply(
            &mut state,
            &[route(false, "198.51.100.0", 24, &[("192.0.2.9", 2)])],
        );
        assert!(
            state.facts().next_hops.contains(&ip("192.0.2.9")),
            "kept until the next full dump"
        );
    }

    #[test]
    fn replaying_changes_is_harmless() {
        let datagrams = [
            address_message(true, 2, ip("192.0.2.10"), 24, None, None),
            route(true, "0.0.0.0", 0, &[("192.0.2.1", 2)]),
            route(true, "2001:db8:1::", 48, &[("fe80::1", 2)]),
        ];
        let mut once = HostState::default();
        apply(&mut once, &datagrams);
        let mut twice = once.clone();
        apply(&mut twice, &datagrams);
        assert_eq!(once.facts(), twice.facts());
    }
}
