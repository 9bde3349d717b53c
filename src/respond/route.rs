//! The `route` action: a host route for each blocked source (/32 or /128), a blackhole or one via
//! the configured gateway, added and removed over rtnetlink so that this host's replies to the
//! scanner go nowhere. It does not filter incoming packets (the nft set does), never runs `ip`,
//! and never removes a route it did not tag with [`ROUTE_PROTOCOL`].
//!
//! Why a route is added without `NLM_F_REPLACE`: the kernel keys a route by destination, tos and
//! metric, not by protocol, so a replace would take over a route the admin put there by hand,
//! and the release would then delete it. Added with `NLM_F_CREATE` alone, an IPv4 route is put
//! in front of any admin route for the same address (ours is the one used, theirs stays), and
//! re-adding our identical route is refused with `EEXIST`, which is what makes a repeated block
//! or a restore place nothing twice. IPv6 refuses a second route with the same next hop at the
//! same metric with `EEXIST` whoever owns it; such a route already sends the replies where ours
//! would, so that counts as blocked too.
//!
//! The kernel cannot route an IPv6 destination through an IPv4 gateway, and a host route that
//! sends an IPv4 scanner to an IPv6 "dead host" serves no purpose a blackhole does not; when the
//! gateway's family differs from the scanner's, the route is a blackhole.
//!
//! Needs CAP_NET_ADMIN, and nothing else: no child process is started.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;
use thiserror::Error;

use super::{attempt_each, Action, ActionError};
use crate::config::{self, RouteTarget};
use crate::host;
use crate::netlink_wire::{self, kernel_says, OpenError, Request, RequestError, Wait};
pub use crate::netlink_wire::{find_answer, Answer};
use crate::store::BlockRecord;

/// The `rtm_protocol` every nfsentry route carries, and the only one its release deletes.
/// 254 is free in iproute2's `rt_protos` (names end at 192, `eigrp`), above the values the
/// kernel itself interprets (< 4), and not used by the routing daemons we know of (FRR, BIRD,
/// babeld, keepalived, systemd-networkd). `ip route show proto 254` lists nfsentry's routes; a
/// line `254 nfsentry` in `/etc/iproute2/rt_protos.d/nfsentry.conf` names them in `ip` output.
pub const ROUTE_PROTOCOL: u8 = 0xfe;

const ACTION_NAME: &str = "route";
/// How long the kernel may take to acknowledge one route change. It normally answers in
/// microseconds; the bound only keeps a wedged socket from stalling the responder.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// A release deletes our routes for an address one at a time until none is left. More than one
/// exists only when the route target changed between runs; the bound makes a kernel that keeps
/// answering "deleted" unable to hold the responder.
const MAX_OWN_ROUTES_PER_SOURCE: usize = 16;
/// Room for any acknowledgement; with NETLINK_CAP_ACK they are a few dozen bytes.
const RECEIVE_BUFFER_BYTES: usize = 8192;

// rtnetlink layout (include/uapi/linux/rtnetlink.h); the netlink framing is `netlink_wire`'s.
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
const RTA_DST: u16 = libc::RTA_DST;
const RTA_GATEWAY: u16 = libc::RTA_GATEWAY;

/// Why a route change did not happen. Every variant names the change that was attempted, in
/// `ip route` words.
#[derive(Debug, Error)]
pub enum RouteError {
    #[error("cannot open a route netlink socket")]
    Open(#[source] Errno),
    #[error("cannot set {option} on the route netlink socket")]
    SocketOption {
        option: &'static str,
        #[source]
        source: Errno,
    },
    #[error("sending `{change}` to the kernel failed")]
    Send {
        change: RouteChange,
        #[source]
        source: Errno,
    },
    #[error("reading the kernel's answer to `{change}` failed")]
    Receive {
        change: RouteChange,
        #[source]
        source: Errno,
    },
    #[error("the kernel did not answer `{change}` within {timeout:?}")]
    Unanswered {
        change: RouteChange,
        timeout: Duration,
    },
    #[error("the kernel refused `{change}`{}", kernel_says(.kernel_message))]
    Refused {
        change: RouteChange,
        /// The kernel's extended-ack text, e.g. "Nexthop has invalid gateway".
        kernel_message: Option<String>,
        #[source]
        errno: Errno,
    },
}

impl RouteError {
    /// The errno behind the failure, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RouteError::Open(errno)
            | RouteError::SocketOption { source: errno, .. }
            | RouteError::Send { source: errno, .. }
            | RouteError::Receive { source: errno, .. }
            | RouteError::Refused { errno, .. } => Some(*errno),
            RouteError::Unanswered { .. } => None,
        }
    }
}

impl From<RouteError> for ActionError {
    fn from(error: RouteError) -> ActionError {
        ActionError::kernel(ACTION_NAME, error.errno(), &error)
    }
}

/// Where a host route sends the scanner's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Blackhole,
    Via(IpAddr),
}

impl RouteKind {
    /// The route for `destination` under `target`, falling back to a blackhole when the gateway
    /// belongs to the other address family (see the module notes).
    pub fn for_destination(target: &RouteTarget, destination: IpAddr) -> RouteKind {
        match target {
            RouteTarget::Gateway(gateway) if gateway.is_ipv4() == destination.is_ipv4() => {
                RouteKind::Via(*gateway)
            }
            RouteTarget::Gateway(_) | RouteTarget::Blackhole => RouteKind::Blackhole,
        }
    }
}

/// One route change as sent to the kernel; displayed in `ip route` words for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Add {
        destination: IpAddr,
        kind: RouteKind,
    },
    /// Deletes one route to `destination` carrying [`ROUTE_PROTOCOL`], whatever its kind.
    DeleteOwn { destination: IpAddr },
}

impl RouteChange {
    fn destination(&self) -> IpAddr {
        match self {
            RouteChange::Add { destination, .. } | RouteChange::DeleteOwn { destination } => {
                *destination
            }
        }
    }

    /// The complete RTM_NEWROUTE / RTM_DELROUTE message with sequence number `sequence`.
    pub fn encode(&self, sequence: u32) -> Vec<u8> {
        let destination = self.destination();
        let (family, prefix_len) = match destination {
            IpAddr::V4(_) => (libc::AF_INET as u8, 32),
            IpAddr::V6(_) => (libc::AF_INET6 as u8, 128),
        };
        let (message_type, flags, scope, route_type, gateway) = match self {
            RouteChange::Add { kind, .. } => {
                let (route_type, gateway) = match kind {
                    RouteKind::Blackhole => (libc::RTN_BLACKHOLE, None),
                    RouteKind::Via(gateway) => (libc::RTN_UNICAST, Some(*gateway)),
                };
                (
                    libc::RTM_NEWROUTE,
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
                    libc::RT_SCOPE_UNIVERSE,
                    route_type,
                    gateway,
                )
            }
            // Type unspecified and scope "nowhere" are the kernel's wildcards: a delete then
            // matches on destination, table and protocol only.
            RouteChange::DeleteOwn { .. } => (
                libc::RTM_DELROUTE,
                NLM_F_REQUEST | NLM_F_ACK,
                libc::RT_SCOPE_NOWHERE,
                libc::RTN_UNSPEC,
                None,
            ),
        };

        let rtmsg = [
            family,
            prefix_len,
            0, // rtm_src_len
            0, // rtm_tos
            libc::RT_TABLE_MAIN,
            ROUTE_PROTOCOL,
            scope,
            route_type,
            0, // rtm_flags, a u32 that is 0 in any byte order
            0,
            0,
            0,
        ];
        let mut request = Request::new(message_type, flags, sequence).family_header(&rtmsg);
        request = with_address(request, RTA_DST, destination);
        if let Some(gateway) = gateway {
            request = with_address(request, RTA_GATEWAY, gateway);
        }
        request.finish()
    }
}

fn with_address(request: Request, kind: u16, address: IpAddr) -> Request {
    match address {
        IpAddr::V4(v4) => request.attribute(kind, &v4.octets()),
        IpAddr::V6(v6) => request.attribute(kind, &v6.octets()),
    }
}

impl fmt::Display for RouteChange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = if self.destination().is_ipv6() {
            "-6 "
        } else {
            ""
        };
        let prefix_len = if self.destination().is_ipv6() {
            128
        } else {
            32
        };
        match self {
            RouteChange::Add {
                destination,
                kind: RouteKind::Blackhole,
            } => write!(
                formatter,
                "ip {family}route add blackhole {destination}/{prefix_len} proto {ROUTE_PROTOCOL}"
            ),
            RouteChange::Add {
                destination,
                kind: RouteKind::Via(gateway),
            } => write!(
                formatter,
                "ip {family}route add {destination}/{prefix_len} via {gateway} proto {ROUTE_PROTOCOL}"
            ),
            RouteChange::DeleteOwn { destination } => write!(
                formatter,
                "ip {family}route del {destination}/{prefix_len} proto {ROUTE_PROTOCOL}"
            ),
        }
    }
}

/// The `route` action: what it is configured to do, and its socket once `init` has opened it.
pub struct RouteAction {
    target: RouteTarget,
    routes: Option<Routes>,
}

impl RouteAction {
    pub fn new(target: RouteTarget) -> RouteAction {
        RouteAction {
            target,
            routes: None,
        }
    }

    fn routes(&mut self) -> Result<&mut Routes, ActionError> {
        self.routes.as_mut().ok_or_else(|| ActionError::Config {
            action: ACTION_NAME,
            detail: "used before init".to_owned(),
        })
    }
}

/// Places and lifts host routes for blocked sources over one rtnetlink socket.
pub struct Routes {
    socket: OwnedFd,
    target: RouteTarget,
    sequence: u32,
    receive_buffer: Vec<u8>,
}

impl Routes {
    /// Opens the rtnetlink socket in the calling thread's network namespace. Routes go to the
    /// main table.
    pub fn open(target: RouteTarget) -> Result<Routes, RouteError> {
        let socket = netlink_wire::open_socket(SockProtocol::NetlinkRoute, ACK_TIMEOUT).map_err(
            |error| match error {
                OpenError::Socket(errno) | OpenError::Bind(errno) => RouteError::Open(errno),
                OpenError::ReceiveTimeout(source) => RouteError::SocketOption {
                    option: "SO_RCVTIMEO",
                    source,
                },
            },
        )?;
        Ok(Routes {
            socket,
            target,
            sequence: 0,
            receive_buffer: vec![0; RECEIVE_BUFFER_BYTES],
        })
    }

    /// Adds the host route for `source`; present already (ours, identical) counts as done.
    pub fn block(&mut self, source: IpAddr) -> Result<(), RouteError> {
        let change = RouteChange::Add {
            destination: source,
            kind: RouteKind::for_destination(&self.target, source),
        };
        match self.apply(change) {
            Err(RouteError::Refused {
                errno: Errno::EEXIST,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Deletes every route to `source` tagged with [`ROUTE_PROTOCOL`]; none at all is fine.
    pub fn release(&mut self, source: IpAddr) -> Result<(), RouteError> {
        for _ in 0..MAX_OWN_ROUTES_PER_SOURCE {
            match self.apply(RouteChange::DeleteOwn {
                destination: source,
            }) {
                Ok(()) => {}
                Err(RouteError::Refused {
                    errno: Errno::ESRCH,
                    ..
                }) => return Ok(()),
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Sends one change and waits for the kernel's acknowledgement of it. A late answer to an
    /// earlier change that timed out carries that change's sequence number and is skipped.
    fn apply(&mut self, change: RouteChange) -> Result<(), RouteError> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = change.encode(self.sequence);
        let wait = Wait::new(&mut self.receive_buffer, ACK_TIMEOUT);
        netlink_wire::request_ack(&self.socket, &request, self.sequence, wait).map_err(|error| {
            match error {
                RequestError::Send(source) => RouteError::Send { change, source },
                RequestError::Receive(source) => RouteError::Receive { change, source },
                RequestError::Unanswered { timeout, .. } => {
                    RouteError::Unanswered { change, timeout }
                }
                RequestError::Refused {
                    errno,
                    kernel_message,
                    ..
                } => RouteError::Refused {
                    change,
                    kernel_message,
                    errno,
                },
            }
        })
    }
}

/// Why routes via `gateway` would not send a scanner's replies away, given this host's own
/// addresses (`local`) and the broadcast addresses of its networks; empty when nothing is
/// known against it. A route via the host itself hands the replies back to it (the kernel even
/// takes such an IPv4 route), one via a broadcast address is refused on every block.
pub fn gateway_problems(gateway: IpAddr, local: &[IpAddr], broadcasts: &[IpAddr]) -> Vec<String> {
    let problem = if let Some(problem) = config::gateway_problem(gateway) {
        problem
    } else if local.contains(&gateway) {
        "is one of this host's own addresses, which hands the replies back to this host \
         instead of sending them away; \"blackhole\" drops them, or name another host"
    } else if broadcasts.contains(&gateway) {
        "is the broadcast address of a network this host is on; a gateway is one host on it"
    } else {
        return Vec::new();
    };
    vec![format!("respond.route: \"{gateway}\" {problem}")]
}

impl Action for RouteAction {
    fn name(&self) -> &'static str {
        ACTION_NAME
    }

    /// A gateway that is one of this host's own addresses now, or the broadcast address of one
    /// of its networks, besides what the config refuses from the address alone.
    fn check(&self) -> Vec<String> {
        match self.target {
            RouteTarget::Blackhole => Vec::new(),
            RouteTarget::Gateway(gateway) => gateway_problems(
                gateway,
                &host::local_addresses(),
                &host::broadcast_addresses(),
            ),
        }
    }

    fn describe(&self) -> Vec<String> {
        let how = match &self.target {
            RouteTarget::Blackhole => "blackhole $TARGET$/32".to_string(),
            RouteTarget::Gateway(gateway) => format!("$TARGET$/32 via {gateway}"),
        };
        vec![
            format!(
                "block:   ip route add {how} proto {ROUTE_PROTOCOL}   (/128 for IPv6; \
                 rtnetlink, no ip process)"
            ),
            format!("release: ip route del $TARGET$/32 proto {ROUTE_PROTOCOL}"),
        ]
    }

    /// Opens the socket and adds the due routes; one already in place counts as added.
    fn init(&mut self, due: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        self.routes = Some(Routes::open(self.target)?);
        self.block(due, now)
    }

    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        let routes = self.routes()?;
        attempt_each(ACTION_NAME, blocks, |block| Ok(routes.block(block.source)?))
    }

    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        let routes = self.routes()?;
        attempt_each(ACTION_NAME, blocks, |block| {
            Ok(routes.release(block.source)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::fixtures::{attribute, message};
    use crate::netlink_wire::{
        read_u16_ne, read_u32_ne, MESSAGE_HEADER_BYTES, NLMSGERR_ATTR_MSG, NLMSG_ERROR,
        NLM_F_ACK_TLVS, NLM_F_CAPPED,
    };
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SCANNER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    const SCANNER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
    const GATEWAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const GATEWAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));

    fn header(message: &[u8]) -> (u32, u16, u16, u32) {
        (
            read_u32_ne(message, 0).unwrap_or_default(),
            read_u16_ne(message, 4).unwrap_or_default(),
            read_u16_ne(message, 6).unwrap_or_default(),
            read_u32_ne(message, 8).unwrap_or_default(),
        )
    }

    #[test]
    fn gateways_that_would_not_send_replies_away_are_named() {
        let local = [
            GATEWAY_V4,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
        ];
        let broadcasts = [IpAddr::V4(Ipv4Addr::new(198, 51, 100, 255))];
        let problems =
            |gateway: &str| gateway_problems(gateway.parse().unwrap(), &local, &broadcasts);
        let cases = [
            (
                "198.51.100.1",
                "respond.route: \"198.51.100.1\" is one of this host's own addresses, which \
                 hands the replies back to this host instead of sending them away; \
                 \"blackhole\" drops them, or name another host",
            ),
            (
                "2001:db8:1::2",
                "respond.route: \"2001:db8:1::2\" is one of this host's own addresses, which \
                 hands the replies back to this host instead of sending them away; \
                 \"blackhole\" drops them, or name another host",
            ),
            (
                "198.51.100.255",
                "respond.route: \"198.51.100.255\" is the broadcast address of a network this \
                 host is on; a gateway is one host on it",
            ),
            (
                "127.0.0.1",
                "respond.route: \"127.0.0.1\" is a loopback address, which hands the replies \
                 back to this host instead of sending them away; \"blackhole\" drops them, \
                 which is what a loopback gateway meant in PortSentry's recipes",
            ),
            (
                "0.0.0.0",
                "respond.route: \"0.0.0.0\" is the unspecified address, which names no \
                 gateway; \"blackhole\" drops the replies",
            ),
        ];
        for (gateway, expected) in cases {
            assert_eq!(problems(gateway), [expected], "{gateway}");
        }
        assert!(problems("198.51.100.9").is_empty());
        assert!(problems("2001:db8:1::9").is_empty());
        assert!(RouteAction::new(RouteTarget::Blackhole).check().is_empty());
    }

    #[test]
    fn the_check_knows_this_hosts_addresses() {
        let Some(local) = host::local_addresses().into_iter().next() else {
            return;
        };
        let problems = RouteAction::new(RouteTarget::Gateway(local)).check();
        assert_eq!(problems.len(), 1, "{local}: {problems:?}");
    }

    #[test]
    fn blackhole_v4_add_is_a_tagged_host_route_without_replace() {
        let message = RouteChange::Add {
            destination: SCANNER_V4,
            kind: RouteKind::Blackhole,
        }
        .encode(41);
        let (length, kind, flags, sequence) = header(&message);
        assert_eq!(length as usize, message.len());
        assert_eq!(message.len(), 16 + 12 + 8);
        assert_eq!(kind, libc::RTM_NEWROUTE);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(flags & libc::NLM_F_REPLACE as u16, 0);
        assert_eq!(sequence, 41);
        assert_eq!(
            &message[16..24],
            &[
                libc::AF_INET as u8,
                32,
                0,
                0,
                libc::RT_TABLE_MAIN,
                ROUTE_PROTOCOL,
                libc::RT_SCOPE_UNIVERSE,
                libc::RTN_BLACKHOLE
            ]
        );
        assert_eq!(read_u16_ne(&message, 28), Some(8));
        assert_eq!(read_u16_ne(&message, 30), Some(RTA_DST));
        assert_eq!(&message[32..36], &[192, 0, 2, 7]);
    }

    #[test]
    fn gateway_v6_add_carries_destination_and_gateway() {
        let message = RouteChange::Add {
            destination: SCANNER_V6,
            kind: RouteKind::Via(GATEWAY_V6),
        }
        .encode(1);
        assert_eq!(message.len(), 16 + 12 + 20 + 20);
        assert_eq!(message[16], libc::AF_INET6 as u8);
        assert_eq!(message[17], 128);
        assert_eq!(message[23], libc::RTN_UNICAST);
        assert_eq!(read_u16_ne(&message, 30), Some(RTA_DST));
        let IpAddr::V6(scanner) = SCANNER_V6 else {
            unreachable!()
        };
        assert_eq!(&message[32..48], &scanner.octets());
        assert_eq!(read_u16_ne(&message, 48), Some(20));
        assert_eq!(read_u16_ne(&message, 50), Some(RTA_GATEWAY));
        let IpAddr::V6(gateway) = GATEWAY_V6 else {
            unreachable!()
        };
        assert_eq!(&message[52..68], &gateway.octets());
    }

    #[test]
    fn delete_matches_only_on_protocol_with_kernel_wildcards() {
        let message = RouteChange::DeleteOwn {
            destination: SCANNER_V4,
        }
        .encode(9);
        let (_, kind, flags, _) = header(&message);
        assert_eq!(kind, libc::RTM_DELROUTE);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(message[21], ROUTE_PROTOCOL);
        assert_eq!(message[22], libc::RT_SCOPE_NOWHERE);
        assert_eq!(message[23], libc::RTN_UNSPEC);
        assert_eq!(message.len(), 16 + 12 + 8, "no gateway attribute");
    }

    #[test]
    fn gateway_of_the_other_family_falls_back_to_blackhole() {
        let v4_gateway = RouteTarget::Gateway(GATEWAY_V4);
        assert_eq!(
            RouteKind::for_destination(&v4_gateway, SCANNER_V4),
            RouteKind::Via(GATEWAY_V4)
        );
        assert_eq!(
            RouteKind::for_destination(&v4_gateway, SCANNER_V6),
            RouteKind::Blackhole
        );
        assert_eq!(
            RouteKind::for_destination(&RouteTarget::Gateway(GATEWAY_V6), SCANNER_V4),
            RouteKind::Blackhole
        );
        assert_eq!(
            RouteKind::for_destination(&RouteTarget::Blackhole, SCANNER_V6),
            RouteKind::Blackhole
        );
    }

    #[test]
    fn changes_read_like_ip_route_commands() {
        let add = RouteChange::Add {
            destination: SCANNER_V6,
            kind: RouteKind::Via(GATEWAY_V6),
        };
        assert_eq!(
            add.to_string(),
            "ip -6 route add 2001:db8::7/128 via 2001:db8:1::1 proto 254"
        );
        let delete = RouteChange::DeleteOwn {
            destination: SCANNER_V4,
        };
        assert_eq!(delete.to_string(), "ip route del 192.0.2.7/32 proto 254");
    }

    /// An NLMSG_ERROR as the kernel builds it: capped echo, optional extended-ack message.
    fn error_datagram(sequence: u32, error: i32, kernel_message: Option<&str>) -> Vec<u8> {
        let mut flags = NLM_F_CAPPED;
        let echoed = RouteChange::DeleteOwn {
            destination: SCANNER_V4,
        }
        .encode(sequence);
        let mut payload = error.to_ne_bytes().to_vec();
        payload.extend_from_slice(&echoed[..MESSAGE_HEADER_BYTES]);
        if let Some(text) = kernel_message {
            flags |= NLM_F_ACK_TLVS;
            let mut value = text.as_bytes().to_vec();
            value.push(0);
            payload.extend(attribute(NLMSGERR_ATTR_MSG, &value));
        }
        message(NLMSG_ERROR, flags, sequence, 4242, &payload)
    }

    #[test]
    fn zero_error_is_an_acknowledgement() {
        let datagram = error_datagram(5, 0, None);
        assert_eq!(find_answer(&datagram, 5), Some(Answer::Acknowledged));
    }

    #[test]
    fn refusal_carries_errno_and_kernel_text() {
        let datagram = error_datagram(6, -libc::ENETUNREACH, Some("Nexthop has invalid gateway"));
        assert_eq!(
            find_answer(&datagram, 6),
            Some(Answer::Refused {
                errno: Errno::ENETUNREACH,
                kernel_message: Some("Nexthop has invalid gateway".into()),
            })
        );
    }

    #[test]
    fn answers_to_other_requests_are_skipped() {
        let mut datagram = error_datagram(3, -libc::EEXIST, None);
        datagram.extend(error_datagram(4, 0, None));
        assert_eq!(find_answer(&datagram, 4), Some(Answer::Acknowledged));
        assert_eq!(find_answer(&datagram, 99), None);
    }

    #[test]
    fn malformed_datagrams_yield_nothing_and_do_not_panic() {
        let whole = error_datagram(7, -libc::ESRCH, Some("x"));
        assert!(find_answer(&whole, 7).is_some());
        for cut in 0..whole.len() {
            let answer = find_answer(&whole[..cut], 7);
            assert_eq!(answer, None, "cut at {cut}");
        }
        let mut lying_length = whole.clone();
        lying_length[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(find_answer(&lying_length, 7), None);
        let mut short_length = whole.clone();
        short_length[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(find_answer(&short_length, 7), None);
        let mut bad_attribute = whole;
        let attribute_at = MESSAGE_HEADER_BYTES + 4 + MESSAGE_HEADER_BYTES;
        bad_attribute[attribute_at..attribute_at + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(
            find_answer(&bad_attribute, 7),
            Some(Answer::Refused {
                errno: Errno::ESRCH,
                kernel_message: None
            })
        );
    }

    #[test]
    fn uncapped_echo_is_skipped_to_reach_the_kernel_text() {
        let request = RouteChange::Add {
            destination: SCANNER_V6,
            kind: RouteKind::Blackhole,
        }
        .encode(8);
        let mut payload = (-libc::EAFNOSUPPORT).to_ne_bytes().to_vec();
        payload.extend_from_slice(&request);
        payload.extend(attribute(NLMSGERR_ATTR_MSG, b"IPv6 is disabled\0"));
        let datagram = message(NLMSG_ERROR, NLM_F_ACK_TLVS, 8, 0, &payload);
        assert_eq!(
            find_answer(&datagram, 8),
            Some(Answer::Refused {
                errno: Errno::EAFNOSUPPORT,
                kernel_message: Some("IPv6 is disabled".into()),
            })
        );
    }

    #[test]
    fn action_error_names_the_change_and_the_errno() {
        let error = RouteError::Refused {
            change: RouteChange::Add {
                destination: SCANNER_V4,
                kind: RouteKind::Via(GATEWAY_V4),
            },
            kernel_message: Some("Nexthop has invalid gateway".into()),
            errno: Errno::ENETUNREACH,
        };
        assert_eq!(error.errno(), Some(Errno::ENETUNREACH));
        let error = ActionError::from(error);
        let message = error.to_string();
        let ActionError::Kernel { action, errno, .. } = error else {
            panic!("a refusal is the kernel's: {message}");
        };
        assert_eq!(action, "route");
        assert_eq!(errno, Some(Errno::ENETUNREACH));
        assert!(
            message.contains("ip route add 192.0.2.7/32 via 198.51.100.1 proto 254"),
            "{message}"
        );
        assert!(message.contains("Nexthop has invalid gateway"), "{message}");
        assert!(message.contains("ENETUNREACH"), "{message}");
    }
}
