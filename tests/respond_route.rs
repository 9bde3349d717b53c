//! Kernel tests for the `route` response action: each test enters a fresh network namespace
//! (setns on the test thread), places and lifts routes through `RouteAction`, and reads the
//! result back with `ip` and ICMP echoes. They need root and the `ip` tool; they do not
//! test when the responder decides to block.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use nfsentry::config::RouteTarget;
use nfsentry::respond::route::{RouteAction, ROUTE_PROTOCOL};
use nfsentry::respond::{Action, ActionError};
use nfsentry::store::BlockRecord;
use nix::sys::socket::{
    connect, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};
use serde_json::Value;
use support::{in_namespace, Netns, ThreadInNamespace};

const SCANNER_V4: &str = "192.0.2.7";
const SCANNER_V6: &str = "2001:db8::7";
/// One echo per this interval until an answer or the deadline.
const ECHO_INTERVAL: Duration = Duration::from_millis(250);
/// Generous: the first IPv6 echo waits for neighbour discovery.
const ANSWER_EXPECTED_WITHIN: Duration = Duration::from_secs(3);
/// How long a black-holed scanner is given to get an answer anyway.
const SILENCE_FOR: Duration = Duration::from_secs(1);

/// Namespaces of this file are named `route-…`.
const NETNS_PREFIX: &str = "route";

/// Network namespaces that exist for one test. Entering one moves the test thread there; on drop
/// the thread goes back to where it was and the namespaces are deleted, passed or failed.
struct Lab {
    inside: Option<ThreadInNamespace>,
    target: Netns,
    peers: Vec<Netns>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create network namespaces and need root"
        );
        Lab {
            inside: None,
            target: Netns::new(NETNS_PREFIX, tag),
            peers: Vec::new(),
        }
    }

    /// Moves the test thread into the target namespace, where `RouteAction::init` then opens
    /// its socket.
    fn enter(&mut self) {
        self.inside = Some(ThreadInNamespace::enter(self.target.name()));
    }

    /// `ip` in the target namespace; panics when it fails.
    fn ip(&self, args: &[&str]) -> String {
        self.target.ip(args)
    }

    fn ip_output(&self, args: &[&str]) -> Output {
        self.target.ip_output(args)
    }

    /// (destination, protocol) of every route of `route_type` in the main table, family `-4`
    /// or `-6`.
    fn routes(&self, family: &str, route_type: &str) -> Vec<(String, String)> {
        let text = self.ip(&["-j", family, "route", "show", "type", route_type]);
        let parsed: Value = serde_json::from_str(&text).expect("ip -j prints JSON");
        parsed
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|route| {
                (
                    route["dst"].as_str().unwrap_or_default().to_string(),
                    route["protocol"].as_str().unwrap_or("boot").to_string(),
                )
            })
            .collect()
    }

    fn routes_to(&self, family: &str, route_type: &str, destination: &str) -> Vec<String> {
        self.routes(family, route_type)
            .into_iter()
            .filter(|(dst, _)| dst == destination)
            .map(|(_, protocol)| protocol)
            .collect()
    }

    /// The gateway `ip route get` picks for `destination`, if the lookup succeeds.
    fn gateway_for(&self, destination: &str) -> Option<String> {
        let output = self.ip_output(&["-j", "route", "get", destination]);
        if !output.status.success() {
            return None;
        }
        let parsed: Value = serde_json::from_slice(&output.stdout).expect("ip -j prints JSON");
        parsed[0]["gateway"].as_str().map(str::to_string)
    }

    /// A second namespace joined to the target by a veth pair, with the given addresses on
    /// each end (`target_addresses` on the target side).
    fn add_peer(&mut self, target_addresses: &[&str], peer_addresses: &[&str]) -> String {
        let peer = Netns::new(NETNS_PREFIX, "peer");
        self.target.add_veth("route-t", &peer, "route-p");
        self.target.configure_link("route-t", target_addresses);
        peer.configure_link("route-p", peer_addresses);
        let name = peer.name().to_owned();
        self.peers.push(peer);
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The thread leaves before the fields drop: a namespace the thread is still in would
        // outlive its deletion.
        drop(self.inside.take());
    }
}

/// Whether `address` answers an ICMP echo sent from `namespace` within `timeout`. Sent over a
/// ping socket from a thread that entered `namespace`; the kernel fills in the echo id and
/// checksum and hands the socket only the replies to its own echoes.
fn ping_answered(namespace: &str, address: &str, timeout: Duration) -> bool {
    let address: IpAddr = address.parse().expect("test address");
    in_namespace(namespace, || {
        // Ping sockets are closed to every group in a new namespace; /proc/sys/net is the
        // namespace of the thread that opens it, so this opens them in `namespace` only.
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0")
            .expect("open ping sockets to root");
        echo_answered(address, timeout)
    })
}

fn echo_answered(address: IpAddr, timeout: Duration) -> bool {
    let (family, protocol, request, reply) = match address {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8u8, 0u8),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128, 129),
    };
    let socket = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, protocol)
        .expect("open ping socket");
    connect(
        socket.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(address, 0)),
    )
    .expect("connect ping socket");
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::milliseconds(ECHO_INTERVAL.as_millis() as i64),
    )
    .expect("set receive timeout");
    let deadline = Instant::now() + timeout;
    let mut sequence: u16 = 0;
    while Instant::now() < deadline {
        sequence += 1;
        let [high, low] = sequence.to_be_bytes();
        let echo = [request, 0, 0, 0, 0, 0, high, low, b'n', b'f', b's', b'e'];
        // Sending can fail while the neighbour is still unresolved; the next round retries.
        let _ = send(socket.as_raw_fd(), &echo, MsgFlags::empty());
        let mut answer = [0u8; 64];
        if let Ok(length) = recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty()) {
            if length >= 8 && answer[0] == reply {
                return true;
            }
        }
    }
    false
}

fn record(source: &str) -> BlockRecord {
    BlockRecord {
        source: source.parse::<IpAddr>().expect("test address"),
        added: 1_700_000_000,
        expires: Some(1_700_003_600),
        protocol: "TCP".into(),
        port: 31337,
        kind: "SYN/Normal".into(),
        verified: false,
    }
}

fn ours() -> String {
    ROUTE_PROTOCOL.to_string()
}

/// A route action that has opened its socket in the calling thread's namespace.
fn action_for(target: RouteTarget) -> RouteAction {
    let mut action = RouteAction::new(target);
    action
        .init(&[], SystemTime::now())
        .unwrap_or_else(|e| panic!("open route action: {e}"));
    action
}

fn check(result: Result<(), ActionError>, what: &str) {
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

#[test]
fn blackhole_routes_are_placed_once_and_released() {
    let mut lab = Lab::new("bh");
    lab.enter();
    let mut routes = action_for(RouteTarget::Blackhole);
    let now = SystemTime::now();
    assert_eq!(routes.name(), "route");

    for source in [SCANNER_V4, SCANNER_V6] {
        check(routes.block(&[&record(source)], now), "block");
        check(routes.block(&[&record(source)], now), "block again");
    }
    assert_eq!(lab.routes_to("-4", "blackhole", SCANNER_V4), vec![ours()]);
    assert_eq!(lab.routes_to("-6", "blackhole", SCANNER_V6), vec![ours()]);

    for source in [SCANNER_V4, SCANNER_V6] {
        check(routes.release(&[&record(source)]), "release");
    }
    assert!(lab.routes_to("-4", "blackhole", SCANNER_V4).is_empty());
    assert!(lab.routes_to("-6", "blackhole", SCANNER_V6).is_empty());

    // Already gone (and never placed, for the third address): still fine.
    for source in [SCANNER_V4, SCANNER_V6, "198.51.100.99"] {
        check(routes.release(&[&record(source)]), "release absent");
    }
}

#[test]
fn restore_places_nothing_twice() {
    let mut lab = Lab::new("restore");
    lab.enter();
    let mut routes = action_for(RouteTarget::Blackhole);
    let now = SystemTime::now();
    let v4 = record(SCANNER_V4);
    let v6 = record(SCANNER_V6);
    check(routes.block(&[&v4], now), "block");
    check(routes.init(&[&v4, &v6], now), "restore");
    check(routes.init(&[&v4, &v6], now), "restore again");
    assert_eq!(lab.routes_to("-4", "blackhole", SCANNER_V4), vec![ours()]);
    assert_eq!(lab.routes_to("-6", "blackhole", SCANNER_V6), vec![ours()]);
}

#[test]
fn gateway_mode_routes_the_scanner_via_the_gateway() {
    let mut lab = Lab::new("gw");
    lab.add_peer(&["198.51.100.1/24", "2001:db8:1::1/64"], &[]);
    lab.enter();
    let now = SystemTime::now();

    let mut via_v4 = action_for(RouteTarget::Gateway("198.51.100.254".parse().unwrap()));
    check(
        via_v4.block(&[&record(SCANNER_V4)], now),
        "block via v4 gateway",
    );
    assert_eq!(
        lab.gateway_for(SCANNER_V4).as_deref(),
        Some("198.51.100.254")
    );
    assert_eq!(lab.routes_to("-4", "unicast", SCANNER_V4), vec![ours()]);
    // An IPv6 scanner cannot go through an IPv4 gateway: it gets a blackhole instead.
    check(
        via_v4.block(&[&record(SCANNER_V6)], now),
        "block v6 with v4 gateway",
    );
    assert_eq!(lab.routes_to("-6", "blackhole", SCANNER_V6), vec![ours()]);

    let mut via_v6 = action_for(RouteTarget::Gateway("2001:db8:1::fe".parse().unwrap()));
    let scanner = "2001:db8:99::9";
    check(
        via_v6.block(&[&record(scanner)], now),
        "block via v6 gateway",
    );
    assert_eq!(lab.gateway_for(scanner).as_deref(), Some("2001:db8:1::fe"));

    check(via_v4.release(&[&record(SCANNER_V4)]), "release v4");
    check(
        via_v4.release(&[&record(SCANNER_V6)]),
        "release v6 blackhole",
    );
    check(via_v6.release(&[&record(scanner)]), "release v6");
    assert_eq!(lab.gateway_for(SCANNER_V4), None, "no route left");
    assert!(lab.routes_to("-4", "unicast", SCANNER_V4).is_empty());
    assert!(lab.routes_to("-6", "blackhole", SCANNER_V6).is_empty());
    assert!(lab.routes_to("-6", "unicast", scanner).is_empty());
}

#[test]
fn unreachable_gateway_is_reported_with_errno_and_route() {
    let mut lab = Lab::new("unreach");
    lab.enter();
    let mut routes = action_for(RouteTarget::Gateway("203.0.113.1".parse().unwrap()));
    let Err(error) = routes.block(&[&record(SCANNER_V4)], SystemTime::now()) else {
        panic!("a gateway with no route to it must be refused");
    };
    let message = error.to_string();
    let ActionError::Kernel { action, errno, .. } = error else {
        panic!("a refused route is the kernel's refusal: {message}");
    };
    assert_eq!(action, "route");
    assert_eq!(errno, Some(nix::errno::Errno::ENETUNREACH), "{message}");
    assert!(
        message.contains("ip route add 192.0.2.7/32 via 203.0.113.1 proto 254"),
        "{message}"
    );
    assert!(message.contains("ENETUNREACH"), "{message}");
}

#[test]
fn release_removes_routes_of_an_earlier_target_too() {
    let mut lab = Lab::new("retarget");
    lab.add_peer(&["198.51.100.1/24"], &[]);
    lab.enter();
    let now = SystemTime::now();
    // An earlier run with blackholes, this one with a gateway: both routes are ours.
    check(
        action_for(RouteTarget::Blackhole).block(&[&record(SCANNER_V4)], now),
        "block as blackhole",
    );
    let mut routes = action_for(RouteTarget::Gateway("198.51.100.254".parse().unwrap()));
    check(
        routes.block(&[&record(SCANNER_V4)], now),
        "block via gateway",
    );
    assert_eq!(lab.routes_to("-4", "blackhole", SCANNER_V4), vec![ours()]);
    assert_eq!(lab.routes_to("-4", "unicast", SCANNER_V4), vec![ours()]);

    check(routes.release(&[&record(SCANNER_V4)]), "release");
    assert!(lab.routes_to("-4", "blackhole", SCANNER_V4).is_empty());
    assert!(lab.routes_to("-4", "unicast", SCANNER_V4).is_empty());
}

#[test]
fn admin_routes_to_the_same_address_survive_release() {
    let mut lab = Lab::new("admin");
    lab.enter();
    let now = SystemTime::now();
    let mut routes = action_for(RouteTarget::Blackhole);

    // IPv4, admin's route first at the same metric: ours goes in front, theirs stays put.
    lab.ip(&["route", "add", "blackhole", SCANNER_V4, "proto", "static"]);
    check(routes.block(&[&record(SCANNER_V4)], now), "block v4");
    let mut both = lab.routes_to("-4", "blackhole", SCANNER_V4);
    both.sort();
    assert_eq!(both, vec![ours(), "static".to_string()]);
    check(routes.release(&[&record(SCANNER_V4)]), "release v4");
    assert_eq!(
        lab.routes_to("-4", "blackhole", SCANNER_V4),
        vec!["static".to_string()]
    );

    // IPv4, admin's route added after ours at another metric.
    let later = "192.0.2.8";
    check(routes.block(&[&record(later)], now), "block v4 later");
    lab.ip(&["route", "add", "unicast", later, "dev", "lo", "metric", "7"]);
    check(routes.release(&[&record(later)]), "release v4 later");
    assert!(lab.routes_to("-4", "blackhole", later).is_empty());
    assert_eq!(
        lab.routes_to("-4", "unicast", later),
        vec!["boot".to_string()]
    );

    // IPv6, admin's blackhole at the same metric: it already blocks, ours is not needed.
    lab.ip(&[
        "-6",
        "route",
        "add",
        "blackhole",
        SCANNER_V6,
        "proto",
        "static",
    ]);
    check(routes.block(&[&record(SCANNER_V6)], now), "block v6");
    check(routes.release(&[&record(SCANNER_V6)]), "release v6");
    assert_eq!(
        lab.routes_to("-6", "blackhole", SCANNER_V6),
        vec!["static".to_string()]
    );

    // IPv6, admin's route at another metric: both exist until ours is released.
    let other = "2001:db8::8";
    lab.ip(&[
        "-6",
        "route",
        "add",
        "blackhole",
        other,
        "proto",
        "static",
        "metric",
        "2000",
    ]);
    check(routes.block(&[&record(other)], now), "block v6 other");
    let mut both = lab.routes_to("-6", "blackhole", other);
    both.sort();
    assert_eq!(both, vec![ours(), "static".to_string()]);
    check(routes.release(&[&record(other)]), "release v6 other");
    assert_eq!(
        lab.routes_to("-6", "blackhole", other),
        vec!["static".to_string()]
    );
}

#[test]
fn blocked_scanner_gets_no_replies() {
    let mut lab = Lab::new("ping");
    let peer = lab.add_peer(
        &["198.51.100.1/24", "2001:db8:7::1/64"],
        &["198.51.100.2/24", "2001:db8:7::2/64"],
    );
    lab.enter();
    let mut routes = action_for(RouteTarget::Blackhole);
    let cases = [
        ("198.51.100.1", "198.51.100.2"),
        ("2001:db8:7::1", "2001:db8:7::2"),
    ];

    for (target, scanner) in cases {
        assert!(
            ping_answered(&peer, target, ANSWER_EXPECTED_WITHIN),
            "{target} answers before"
        );
        check(
            routes.block(&[&record(scanner)], SystemTime::now()),
            "block",
        );
        assert!(
            !ping_answered(&peer, target, SILENCE_FOR),
            "{target} still answers {scanner} after the block"
        );
        check(routes.release(&[&record(scanner)]), "release");
        assert!(
            ping_answered(&peer, target, ANSWER_EXPECTED_WITHIN),
            "{target} answers again after the release"
        );
    }
}
