//! Sends whole IP packets that nfsentry built itself ([`crate::forge`]'s SYN-ACKs, banners and
//! RSTs) through raw sockets, one for IPv4 and one for IPv6, each with a firewall mark so the
//! ruleset can keep them out of conntrack. It never blocks: a full socket buffer is an error the
//! caller counts, not a wait on the packet path.
//!
//! It does not build packets, choose what to send or decide when; it does not receive anything
//! (an IPPROTO_RAW socket hears nothing). Opening it needs CAP_NET_RAW (raw sockets) and, for the
//! mark, CAP_NET_ADMIN or, since Linux 5.17, CAP_NET_RAW.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn, SockaddrIn6,
};

/// The firewall mark nfsentry's replies carry unless configured otherwise ("nfsy" in ASCII): the
/// ruleset's raw-priority output chain matches it exactly to keep the replies untracked, so it
/// must not collide with marks the admin's own policy routing uses.
pub const REPLY_MARK: u32 = 0x6e66_7379;

/// Which of the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why a raw socket could not be set up or a packet not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("cannot open a raw {family} socket (sending handshake replies needs CAP_NET_RAW)")]
    Open {
        family: Family,
        #[source]
        source: Errno,
    },
    #[error("cannot set {option} on the raw {family} socket")]
    Configure {
        family: Family,
        option: &'static str,
        #[source]
        source: Errno,
    },
    #[error("the bytes to send are not an IPv4 or IPv6 packet ({bytes} bytes)")]
    NotAPacket { bytes: usize },
    #[error("no IPv6 socket (IPv6 is off on this host?): cannot send to {to}")]
    NoIpv6 { to: IpAddr },
    /// A link-local destination names no link by itself; the interface the packet it answers
    /// came in on must be given.
    #[error("{to} is link-local, and no interface was given to send it out of")]
    NoInterface { to: IpAddr },
    /// EAGAIN or ENOBUFS mean the socket or device queue is full: the packet is dropped, as a
    /// router would drop it.
    #[error("sending {bytes} bytes to {to} failed")]
    Send {
        to: IpAddr,
        bytes: usize,
        #[source]
        source: Errno,
    },
}

/// The two raw sockets.
#[derive(Debug)]
pub struct Injector {
    v4: OwnedFd,
    /// None where the kernel has no IPv6 (booted with ipv6.disable=1).
    v6: Option<OwnedFd>,
    mark: u32,
}

impl Injector {
    /// Opens both raw sockets (close-on-exec, non-blocking, header included) in the calling
    /// thread's network namespace, marking everything they send with `mark` (SO_MARK). An IPv6
    /// socket that cannot be opened because the kernel lacks IPv6 is left out; any other failure
    /// is an error.
    pub fn open(mark: u32) -> Result<Injector, InjectError> {
        let v4 = open_raw(Family::V4, mark)?;
        let v6 = match open_raw(Family::V6, mark) {
            Ok(socket) => Some(socket),
            Err(InjectError::Open {
                source: Errno::EAFNOSUPPORT,
                ..
            }) => None,
            Err(error) => return Err(error),
        };
        Ok(Injector { v4, v6, mark })
    }

    /// The mark every packet is sent with.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// Whether IPv6 packets can be sent.
    pub fn has_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    /// Sends one whole packet (IP header first) to the destination its header names. `ifindex`
    /// is the interface the packet being answered arrived on: a link-local IPv6 destination is
    /// only reachable through it, so it is required there and ignored elsewhere.
    pub fn send(&self, packet: &[u8], ifindex: Option<u32>) -> Result<(), InjectError> {
        let to = destination(packet)?;
        let sent = match to {
            IpAddr::V4(address) => {
                // The port of a raw socket address is unused.
                let address = SockaddrIn::from(SocketAddrV4::new(address, 0));
                sendto(
                    self.v4.as_raw_fd(),
                    packet,
                    &address,
                    MsgFlags::MSG_DONTWAIT,
                )
            }
            IpAddr::V6(address) => {
                let socket = self.v6.as_ref().ok_or(InjectError::NoIpv6 { to })?;
                let scope_id =
                    scope_for(address, ifindex).ok_or(InjectError::NoInterface { to })?;
                // Port 0: with the header included, the protocol is the header's own.
                let address = SockaddrIn6::from(SocketAddrV6::new(address, 0, 0, scope_id));
                sendto(socket.as_raw_fd(), packet, &address, MsgFlags::MSG_DONTWAIT)
            }
        };
        let bytes = packet.len();
        match sent {
            Ok(written) if written == bytes => Ok(()),
            // A raw datagram goes whole or not at all; a short count would be a kernel bug.
            Ok(_) => Err(InjectError::Send {
                to,
                bytes,
                source: Errno::EMSGSIZE,
            }),
            Err(source) => Err(InjectError::Send { to, bytes, source }),
        }
    }
}

/// One raw socket of `family` that takes whole IP packets and marks them.
fn open_raw(family: Family, mark: u32) -> Result<OwnedFd, InjectError> {
    let address_family = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    let socket = socket(
        address_family,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Raw,
    )
    .map_err(|source| InjectError::Open { family, source })?;
    let configure = |option| {
        move |source| InjectError::Configure {
            family,
            option,
            source,
        }
    };
    setsockopt(&socket, sockopt::Mark, &mark).map_err(configure("SO_MARK"))?;
    // IPPROTO_RAW implies the header is included for both families; saying so costs nothing and
    // keeps a kernel that thought otherwise from prepending a header of its own.
    match family {
        Family::V4 => {
            enable(&socket, libc::IPPROTO_IP, libc::IP_HDRINCL).map_err(configure("IP_HDRINCL"))?
        }
        Family::V6 => enable(&socket, libc::IPPROTO_IPV6, libc::IPV6_HDRINCL)
            .map_err(configure("IPV6_HDRINCL"))?,
    }
    Ok(socket)
}

/// Sets an int socket option to 1; nix has no wrapper for the header-included options.
fn enable(socket: &OwnedFd, level: libc::c_int, option: libc::c_int) -> Result<(), Errno> {
    let enabled: libc::c_int = 1;
    // SAFETY: the descriptor is open for the call (borrowed), and the value pointer and length
    // describe `enabled`, which outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            option,
            std::ptr::from_ref(&enabled).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// The destination address in a packet's IP header.
fn destination(packet: &[u8]) -> Result<IpAddr, InjectError> {
    let not_a_packet = InjectError::NotAPacket {
        bytes: packet.len(),
    };
    match packet.first().map(|byte| byte >> 4) {
        Some(4) => {
            let octets: [u8; 4] = packet
                .get(16..20)
                .and_then(|field| field.try_into().ok())
                .ok_or(not_a_packet)?;
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        Some(6) => {
            let octets: [u8; 16] = packet
                .get(24..40)
                .and_then(|field| field.try_into().ok())
                .ok_or(not_a_packet)?;
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(not_a_packet),
    }
}

/// The scope id to send to `address` with: the interface for a link-local unicast address (none
/// given: `None`), 0 for any other.
fn scope_for(address: Ipv6Addr, ifindex: Option<u32>) -> Option<u32> {
    // fe80::/10; std's `is_unicast_link_local` is newer than the supported Rust.
    if address.segments()[0] & 0xffc0 == 0xfe80 {
        ifindex.filter(|&index| index != 0)
    } else {
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_comes_from_the_header() {
        let mut v4 = vec![0x45; 20];
        v4[16..20].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(
            destination(&v4),
            Ok(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
        );
        let mut v6 = vec![0; 40];
        v6[0] = 0x60;
        v6[24..40].copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).octets());
        assert_eq!(
            destination(&v6),
            Ok(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)))
        );
        for bad in [&v4[..19], &v6[..39], &[], &[0x50; 60][..]] {
            assert_eq!(
                destination(bad),
                Err(InjectError::NotAPacket { bytes: bad.len() })
            );
        }
    }

    #[test]
    fn only_link_local_destinations_need_an_interface() {
        let link_local: Ipv6Addr = "fe80::7".parse().expect("address");
        let global: Ipv6Addr = "2001:db8::7".parse().expect("address");
        assert_eq!(scope_for(link_local, Some(3)), Some(3));
        assert_eq!(scope_for(link_local, None), None);
        assert_eq!(scope_for(link_local, Some(0)), None);
        assert_eq!(scope_for(global, Some(3)), Some(0));
        assert_eq!(scope_for(global, None), Some(0));
    }

    #[test]
    fn errors_say_what_is_missing() {
        let open = InjectError::Open {
            family: Family::V6,
            source: Errno::EPERM,
        };
        assert_eq!(
            open.to_string(),
            "cannot open a raw IPv6 socket (sending handshake replies needs CAP_NET_RAW)"
        );
        let to = IpAddr::V6("fe80::7".parse().expect("address"));
        assert_eq!(
            InjectError::NoInterface { to }.to_string(),
            "fe80::7 is link-local, and no interface was given to send it out of"
        );
    }

    /// Root only: the sockets open with everything set, and a packet that is no packet is
    /// refused before any system call.
    #[test]
    fn sockets_open_marked_and_refuse_garbage() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: raw sockets need CAP_NET_RAW");
            return;
        }
        let injector = Injector::open(0x6e66).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(injector.mark(), 0x6e66);
        let mark = nix::sys::socket::getsockopt(&injector.v4, sockopt::Mark);
        assert_eq!(mark, Ok(0x6e66));
        assert!(matches!(
            injector.send(&[1, 2, 3], None),
            Err(InjectError::NotAPacket { bytes: 3 })
        ));
    }
}
