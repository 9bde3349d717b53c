//! Follows what the host is — its addresses, the next hops of its routing tables, its broadcast
//! addresses and loopback devices — through the kernel's rtnetlink notifications, so that an
//! address that has just become local, or a router that has just been added, is protected at
//! once instead of at the next poll. Hands out [`HostFacts`] whenever they change.
//!
//! It only listens: it changes nothing in the kernel, and what to protect or lift is the
//! caller's business ([`crate::spoof`]). Reading the messages is [`rtnl`]'s job, keeping the
//! picture [`state`]'s. Needs no privilege.
//!
//! Two sockets: one subscribed to the notifications, opened first, and one for the full dumps
//! (at start, and again whenever the kernel says notifications were lost). Notifications that
//! arrive during a dump wait on the first socket and are applied after it, in order, which
//! converges on the kernel's state whatever the dump already showed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::SockProtocol;

use crate::netlink_wire::{self, Dump, Messages, OpenError, RequestError, Wait};
use crate::spoof::HostFacts;

mod rtnl;
mod state;

use state::HostState;

/// How long one dump may take in all; a host with a full Internet table needs seconds.
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// The netlink socket's receive timeout for each datagram of a dump.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The kernel sizes a dump's datagrams to the reader's buffer, up to 32 KiB per message batch;
/// notifications are far smaller.
const DATAGRAM_BUFFER_BYTES: usize = 64 * 1024;
/// Dumps the kernel flagged as interrupted (NLM_F_DUMP_INTR) are redone this often at most; the
/// last one is then taken as it is, since the notifications that follow it correct it.
const DUMP_ATTEMPTS: usize = 3;
/// Datagrams read per [`HostWatch::drain`] at most, so a storm of route changes cannot hold up
/// the caller's other work; the socket stays readable for the rest.
const MAX_DATAGRAMS_PER_DRAIN: usize = 256;

/// The notification groups: links (to know loopback devices and forget deleted ones), IPv4 and
/// IPv6 addresses and routes.
const GROUPS: [u32; 5] = [
    rtnl::RTNLGRP_LINK,
    rtnl::RTNLGRP_IPV4_IFADDR,
    rtnl::RTNLGRP_IPV6_IFADDR,
    rtnl::RTNLGRP_IPV4_ROUTE,
    rtnl::RTNLGRP_IPV6_ROUTE,
];

/// What could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("cannot open an rtnetlink socket to follow addresses and routes")]
    Open(#[source] OpenError),
    #[error("cannot subscribe to rtnetlink group {group}")]
    Subscribe {
        group: u32,
        #[source]
        source: Errno,
    },
    #[error("cannot make the rtnetlink notification socket non-blocking")]
    NonBlocking(#[source] Errno),
    #[error("cannot dump the {what} from the kernel")]
    Dump {
        what: &'static str,
        #[source]
        source: RequestError,
    },
    #[error("reading rtnetlink notifications failed")]
    Receive(#[source] Errno),
}

/// The open watch.
#[derive(Debug)]
pub struct HostWatch {
    notifications: OwnedFd,
    dumps: OwnedFd,
    state: HostState,
    facts: HostFacts,
    buffer: Vec<u8>,
    sequence: u32,
    overruns: u64,
}

impl HostWatch {
    /// Subscribes to the notifications, then dumps links, addresses and routes, in the calling
    /// thread's network namespace. Returns the watch and the facts as of now.
    pub fn open() -> Result<(HostWatch, HostFacts), WatchError> {
        let notifications = netlink_wire::open_socket(SockProtocol::NetlinkRoute, RECEIVE_TIMEOUT)
            .map_err(WatchError::Open)?;
        for group in GROUPS {
            subscribe(&notifications, group)?;
        }
        // A burst of route changes waits here instead of being lost; a loss costs a full dump.
        let _ =
            netlink_wire::grow_receive_buffer(&notifications, netlink_wire::RECEIVE_BUFFER_BYTES);
        let flags = fcntl(&notifications, FcntlArg::F_GETFL).map_err(WatchError::NonBlocking)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&notifications, FcntlArg::F_SETFL(flags)).map_err(WatchError::NonBlocking)?;

        let dumps = netlink_wire::open_socket(SockProtocol::NetlinkRoute, RECEIVE_TIMEOUT)
            .map_err(WatchError::Open)?;
        let mut watch = HostWatch {
            notifications,
            dumps,
            state: HostState::default(),
            facts: HostFacts::default(),
            buffer: vec![0; DATAGRAM_BUFFER_BYTES],
            sequence: 0,
            overruns: 0,
        };
        let facts = watch.resync()?;
        Ok((watch, facts))
    }

    /// The socket to poll for readability; call [`drain`](Self::drain) when it is readable.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.notifications.as_fd()
    }

    /// The facts as last handed out.
    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// How often the kernel dropped notifications for want of buffer room (each time, a full
    /// dump followed).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Applies the notifications waiting now (up to a bound) and returns the facts if they
    /// changed. Never blocks. When the kernel reports lost notifications it dumps everything
    /// again first, which blocks for as long as the dump takes.
    pub fn drain(&mut self) -> Result<Option<HostFacts>, WatchError> {
        let mut lost = false;
        for _ in 0..MAX_DATAGRAMS_PER_DRAIN {
            match netlink_wire::receive_from_kernel(&self.notifications, &mut self.buffer) {
                Ok(Some(datagram)) => {
                    for change in Messages::new(datagram).filter_map(|m| rtnl::parse(&m)) {
                        self.state.apply(change);
                    }
                }
                // Not from the kernel: never read.
                Ok(None) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(Errno::ENOBUFS) => {
                    self.overruns += 1;
                    lost = true;
                }
                Err(errno) => return Err(WatchError::Receive(errno)),
            }
        }
        if lost {
            self.state = self.dump_all()?;
        }
        let facts = self.state.facts();
        if facts == self.facts {
            return Ok(None);
        }
        self.facts = facts.clone();
        Ok(Some(facts))
    }

    /// Forgets everything and dumps it all again: for a timer that corrects what notifications
    /// cannot say (IPv4 removes routes silently when their device goes down), or after an error.
    pub fn resync(&mut self) -> Result<HostFacts, WatchError> {
        self.state = self.dump_all()?;
        self.facts = self.state.facts();
        Ok(self.facts.clone())
    }

    /// The kernel's links, addresses and routes, in that order (a route's device is known before
    /// the route).
    fn dump_all(&mut self) -> Result<HostState, WatchError> {
        let mut state = HostState::default();
        for (kind, what) in [
            (rtnl::RTM_GETLINK, "network devices"),
            (rtnl::RTM_GETADDR, "addresses"),
            (rtnl::RTM_GETROUTE, "routes"),
        ] {
            self.dump(kind, what, &mut state)?;
        }
        Ok(state)
    }

    fn dump(
        &mut self,
        kind: u16,
        what: &'static str,
        state: &mut HostState,
    ) -> Result<(), WatchError> {
        for attempt in 1..=DUMP_ATTEMPTS {
            self.sequence = self.sequence.wrapping_add(1);
            let request = rtnl::dump_request(kind, self.sequence);
            let mut dumped = state.clone();
            let wait = Wait::new(&mut self.buffer, DUMP_TIMEOUT);
            let ended =
                netlink_wire::request_dump(&self.dumps, &request, self.sequence, wait, |message| {
                    if let Some(change) = rtnl::parse(&message) {
                        dumped.apply(change);
                    }
                })
                .map_err(|source| WatchError::Dump { what, source })?;
            if ended == Dump::Complete || attempt == DUMP_ATTEMPTS {
                *state = dumped;
                return Ok(());
            }
        }
        Ok(())
    }
}

impl AsFd for HostWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

/// Joins a netlink multicast group (NETLINK_ADD_MEMBERSHIP takes the group number, unlike the
/// bitmask of the bind address, which only reaches the first 32).
fn subscribe(socket: &OwnedFd, group: u32) -> Result<(), WatchError> {
    // SAFETY: the descriptor is open for the call, and the value pointer and length describe
    // `group`, which outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            std::ptr::from_ref(&group).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(|source| WatchError::Subscribe { group, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Needs no privilege: the host's own loopback is always there to be seen.
    #[test]
    fn the_host_is_seen_at_once() {
        let (watch, facts) = HostWatch::open().unwrap_or_else(|error| panic!("{error}"));
        assert!(
            facts.local.contains(&IpAddr::from([127, 0, 0, 1])),
            "{facts:?}"
        );
        assert!(!facts.loopback_ifindexes.is_empty(), "{facts:?}");
        assert!(
            facts
                .local_nets
                .iter()
                .any(|net| net.contains(&IpAddr::from([127, 0, 0, 2]))),
            "{facts:?}"
        );
        assert_eq!(watch.facts(), &facts);
    }
}
