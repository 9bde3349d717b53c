//! Checks the host watch against a real kernel: in a throwaway network namespace, addresses and
//! routes (through a gateway, multipath, IPv6 via a link-local router) are added and deleted
//! with `ip`, and each change must reach the watch as a notification, within a bound measured in
//! milliseconds, without polling. It does not test what the daemon makes of the facts.
//!
//! Needs root and `ip`.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use nfsentry::host_watch::HostWatch;
use nfsentry::spoof::HostFacts;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use support::Netns;

/// Generous for a loaded 2-core machine; the observed delay is printed, and is a few ms.
const NOTICED_WITHIN: Duration = Duration::from_secs(2);
const LINK: &str = "hw0";
const PEER_END: &str = "hw1";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|_| panic!("{text}"))
}

/// Waits on the watch's socket (no polling loop of our own) until `condition` holds for the
/// facts it hands out; returns how long that took.
fn wait_until(
    watch: &mut HostWatch,
    what: &str,
    condition: impl Fn(&HostFacts) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if condition(watch.facts()) {
            let took = started.elapsed();
            eprintln!("{what}: seen after {took:?}");
            return took;
        }
        let left = NOTICED_WITHIN.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: not seen within {NOTICED_WITHIN:?}; facts: {:?}",
            watch.facts()
        );
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(watch.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => panic!("poll: {error}"),
        }
        watch
            .drain()
            .unwrap_or_else(|error| panic!("drain: {error}"));
    }
}

fn lab() -> (Netns, HostWatch) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and need root"
    );
    let netns = Netns::new("hostwatch", "t");
    // A veth pair with both ends here: this kernel has no dummy devices.
    netns.ip(&[
        "link", "add", LINK, "type", "veth", "peer", "name", PEER_END,
    ]);
    netns.ip(&["link", "set", PEER_END, "up"]);
    netns.ip(&["link", "set", LINK, "up"]);
    // The watch's sockets belong to the namespace they were opened in, whatever thread reads
    // them later.
    let (watch, facts) =
        netns.enter(|| HostWatch::open().unwrap_or_else(|error| panic!("{error}")));
    assert!(facts.local.contains(&ip("127.0.0.1")), "{facts:?}");
    assert!(facts.local.contains(&ip("::1")), "{facts:?}");
    assert_eq!(facts.loopback_ifindexes, vec![1], "{facts:?}");
    assert!(facts.next_hops.is_empty(), "{facts:?}");
    (netns, watch)
}

#[test]
fn addresses_and_broadcasts_come_and_go() {
    let (netns, mut watch) = lab();
    netns.ip(&["address", "add", "192.0.2.10/24", "dev", LINK]);
    netns.ip(&["address", "add", "2001:db8::10/64", "dev", LINK, "nodad"]);
    wait_until(&mut watch, "addresses added", |facts| {
        facts.local.contains(&ip("192.0.2.10"))
            && facts.local.contains(&ip("2001:db8::10"))
            && facts.broadcasts.contains(&ip("192.0.2.255"))
    });
    // A point-to-point address: the far end is a next hop.
    netns.ip(&[
        "address",
        "add",
        "198.51.100.10",
        "peer",
        "198.51.100.1",
        "dev",
        LINK,
    ]);
    wait_until(&mut watch, "point-to-point peer", |facts| {
        facts.local.contains(&ip("198.51.100.10")) && facts.next_hops.contains(&ip("198.51.100.1"))
    });

    netns.ip(&["address", "del", "192.0.2.10/24", "dev", LINK]);
    netns.ip(&["address", "del", "2001:db8::10/64", "dev", LINK]);
    netns.ip(&[
        "address",
        "del",
        "198.51.100.10",
        "peer",
        "198.51.100.1",
        "dev",
        LINK,
    ]);
    wait_until(&mut watch, "addresses deleted", |facts| {
        !facts.local.contains(&ip("192.0.2.10"))
            && !facts.local.contains(&ip("2001:db8::10"))
            && !facts.local.contains(&ip("198.51.100.10"))
            && !facts.broadcasts.contains(&ip("192.0.2.255"))
            && facts.next_hops.is_empty()
    });
}

#[test]
fn next_hops_of_every_kind_come_and_go() {
    let (netns, mut watch) = lab();
    netns.ip(&["address", "add", "192.0.2.10/24", "dev", LINK]);
    netns.ip(&["address", "add", "2001:db8::10/64", "dev", LINK, "nodad"]);
    netns.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);
    netns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "nexthop",
        "via",
        "192.0.2.252",
        "nexthop",
        "via",
        "192.0.2.253",
    ]);
    // A policy-routing table, not only the main one.
    netns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.251",
        "table",
        "100",
    ]);
    netns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:1::/48",
        "via",
        "fe80::1",
        "dev",
        LINK,
    ]);
    netns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:2::/48",
        "nexthop",
        "via",
        "2001:db8::a",
        "dev",
        LINK,
        "nexthop",
        "via",
        "2001:db8::b",
        "dev",
        LINK,
    ]);
    let expected = [
        "192.0.2.251",
        "192.0.2.252",
        "192.0.2.253",
        "192.0.2.254",
        "2001:db8::a",
        "2001:db8::b",
        "fe80::1",
    ]
    .map(ip);
    let took = wait_until(&mut watch, "next hops added", |facts| {
        expected.iter().all(|hop| facts.next_hops.contains(hop))
    });
    assert!(took < NOTICED_WITHIN);

    // One next hop of the IPv6 multipath route goes, then the rest.
    netns.ip(&[
        "-6",
        "route",
        "del",
        "2001:db8:2::/48",
        "via",
        "2001:db8::a",
        "dev",
        LINK,
    ]);
    wait_until(&mut watch, "one IPv6 next hop deleted", |facts| {
        !facts.next_hops.contains(&ip("2001:db8::a"))
            && facts.next_hops.contains(&ip("2001:db8::b"))
    });
    netns.ip(&["route", "del", "198.51.100.0/24"]);
    netns.ip(&["route", "del", "203.0.113.0/24"]);
    netns.ip(&["route", "del", "default", "table", "100"]);
    netns.ip(&["-6", "route", "del", "2001:db8:1::/48"]);
    netns.ip(&["-6", "route", "del", "2001:db8:2::/48"]);
    wait_until(&mut watch, "next hops deleted", |facts| {
        facts.next_hops.is_empty()
    });
}

#[test]
fn a_deleted_device_takes_its_routes_along() {
    let (netns, mut watch) = lab();
    netns.ip(&["address", "add", "192.0.2.10/24", "dev", LINK]);
    netns.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"]);
    wait_until(&mut watch, "route added", |facts| {
        facts.next_hops.contains(&ip("192.0.2.254"))
    });
    // IPv4 announces no RTM_DELROUTE for the routes of a device that goes away; the link's own
    // deletion must take them along.
    netns.ip(&["link", "del", LINK]);
    wait_until(&mut watch, "device deleted", |facts| {
        facts.next_hops.is_empty() && !facts.local.contains(&ip("192.0.2.10"))
    });
    let fresh = watch.resync().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(&fresh, watch.facts());
}
