//! The netlink socket itself: opening one that hears only the kernel, with a bounded receive
//! timeout and the kernel's error text turned on, sizing its receive buffer, and receiving a
//! datagram while dropping those of any other sender. It does not parse what it receives.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// Which part of opening a netlink socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the netlink socket")]
    Socket(#[source] Errno),
    /// Binding to our own port or connecting to the kernel's: both only set an address.
    #[error("cannot bind the netlink socket or connect it to the kernel")]
    Bind(#[source] Errno),
    #[error("cannot set the receive timeout (SO_RCVTIMEO) on the netlink socket")]
    ReceiveTimeout(#[source] Errno),
}

impl OpenError {
    /// The errno behind the failure.
    pub fn errno(&self) -> Errno {
        match self {
            OpenError::Socket(errno)
            | OpenError::Bind(errno)
            | OpenError::ReceiveTimeout(errno) => *errno,
        }
    }
}

/// SO_RCVTIMEO of zero means "wait forever"; the shortest timeout the option can express stands
/// in for it, so a caller asking not to wait is never left hanging.
const SHORTEST_RECEIVE_TIMEOUT: Duration = Duration::from_micros(1);

/// Opens a close-on-exec raw netlink socket of `protocol` in the calling thread's network
/// namespace, bound to a port the kernel picks and connected to the kernel. It blocks, but a
/// receive gives up with EAGAIN after `receive_timeout` (at least a microsecond), so waiting for
/// an answer cannot hang.
///
/// Sending to another process's netlink port needs CAP_NET_ADMIN, but a daemon's neighbours may
/// have it; once connected, the kernel refuses (ECONNREFUSED) datagrams to this socket from any
/// sender but itself. The socket also asks for the kernel's error text (NETLINK_EXT_ACK) and for
/// refusals that echo only the refused request's header (NETLINK_CAP_ACK); a kernel without
/// either still answers, only more tersely, so failing to set them is no reason to fail here.
pub fn open_socket(
    protocol: SockProtocol,
    receive_timeout: Duration,
) -> Result<OwnedFd, OpenError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(OpenError::Socket)?;
    // Port 0 means "pick one" to bind and "the kernel" to connect; no multicast groups either way.
    let no_port = NetlinkAddr::new(0, 0);
    bind(fd.as_raw_fd(), &no_port).map_err(OpenError::Bind)?;
    let kernel = NetlinkAddr::new(0, 0);
    connect(fd.as_raw_fd(), &kernel).map_err(OpenError::Bind)?;
    set_receive_timeout(&fd, receive_timeout).map_err(OpenError::ReceiveTimeout)?;
    let _ = enable_netlink_option(&fd, libc::NETLINK_EXT_ACK);
    let _ = enable_netlink_option(&fd, libc::NETLINK_CAP_ACK);
    Ok(fd)
}

/// How long a blocking receive on `socket` waits before it gives up with EAGAIN (at least a
/// microsecond).
pub fn set_receive_timeout(socket: impl AsFd, receive_timeout: Duration) -> Result<(), Errno> {
    let receive_timeout = receive_timeout.max(SHORTEST_RECEIVE_TIMEOUT);
    let timeout = TimeVal::from(libc::timeval {
        tv_sec: libc::time_t::try_from(receive_timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below a million, so it fits even where suseconds_t is 32 bits.
        tv_usec: receive_timeout.subsec_micros() as libc::suseconds_t,
    });
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
}

/// Turns on a flag option of level SOL_NETLINK, such as NETLINK_EXT_ACK; nix has no wrapper for
/// these.
pub fn enable_netlink_option(socket: impl AsFd, option: libc::c_int) -> Result<(), Errno> {
    let enabled: libc::c_int = 1;
    // SAFETY: the descriptor is open for the call (borrowed), and the value pointer and length
    // describe `enabled`, which outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_NETLINK,
            option,
            std::ptr::from_ref(&enabled).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// Joins multicast group `group` (such as NFNLGRP_NFTABLES) on a netlink socket, so that it also
/// hears the kernel's notifications to that group. Most groups need CAP_NET_ADMIN.
pub fn join_group(socket: impl AsFd, group: u32) -> Result<(), Errno> {
    // SAFETY: the descriptor is open for the call (borrowed), and the value pointer and length
    // describe `group`, which outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            std::ptr::from_ref(&group).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// What the sockets that must absorb a burst (NFQUEUE, NFLOG) ask for: with the default buffer
/// (~500 packets) 20 ms stalls lost a fifth of the packets here, with 8 MiB none.
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Raises a socket's receive buffer to `bytes`. SO_RCVBUFFORCE passes the `rmem_max` limit but
/// needs CAP_NET_ADMIN in the initial user namespace; without it SO_RCVBUF still gets as much as
/// `rmem_max` allows, which is better than failing.
pub fn grow_receive_buffer(socket: impl AsFd, bytes: usize) -> Result<(), Errno> {
    let socket = socket.as_fd();
    setsockopt(&socket, sockopt::RcvBufForce, &bytes)
        .or_else(|_| setsockopt(&socket, sockopt::RcvBuf, &bytes))
}

/// Reads one datagram into `buffer` and returns the part filled. `Ok(None)` means it came from a
/// process rather than the kernel (port 0) and must be ignored, not parsed. A socket from
/// [`open_socket`] only hears the kernel once connected; this check covers the instant between
/// its bind and its connect, and sockets opened any other way.
pub fn receive_from_kernel<'a>(
    socket: &impl AsFd,
    buffer: &'a mut [u8],
) -> Result<Option<&'a [u8]>, Errno> {
    receive_datagram(socket, buffer, MsgFlags::empty())
}

/// [`receive_from_kernel`] with `recvfrom` flags, such as MSG_DONTWAIT to read only what is
/// queued; nix's `recvfrom` takes none.
pub(super) fn receive_datagram<'a>(
    socket: &impl AsFd,
    buffer: &'a mut [u8],
    flags: MsgFlags,
) -> Result<Option<&'a [u8]>, Errno> {
    // SAFETY: all-zero is a valid sockaddr_nl.
    let mut sender: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut sender_length = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: the descriptor is open (borrowed) for the call; the buffer pointer and length
    // describe `buffer`, and the address pointer and length describe `sender` and
    // `sender_length`, all of which outlive the call.
    let received = unsafe {
        libc::recvfrom(
            socket.as_fd().as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            flags.bits(),
            std::ptr::from_mut(&mut sender).cast(),
            &mut sender_length,
        )
    };
    let length = usize::try_from(Errno::result(received)?).unwrap_or_default();
    let whole_address = usize::try_from(sender_length)
        .is_ok_and(|length| length >= std::mem::size_of::<libc::sockaddr_nl>());
    let from_kernel =
        whole_address && i32::from(sender.nl_family) == libc::AF_NETLINK && sender.nl_pid == 0;
    Ok(from_kernel
        .then(|| buffer.get(..length.min(buffer.len())))
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::message;
    use super::super::{find_answer, Answer, Request, NLMSG_ERROR};
    use super::*;

    /// A real exchange with the kernel, which needs no privilege: rtnetlink acknowledges a NOOP
    /// that asks for it. Nothing is changed and no packet leaves the host.
    #[test]
    fn the_kernel_acknowledges_a_request_built_here() {
        let socket = open_socket(SockProtocol::NetlinkRoute, Duration::from_secs(2));
        let socket = socket.unwrap_or_else(|error| panic!("{error}"));
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let request = Request::new(libc::NLMSG_NOOP as u16, flags, 77).finish();
        let sent = nix::sys::socket::send(
            socket.as_raw_fd(),
            &request,
            nix::sys::socket::MsgFlags::empty(),
        );
        assert_eq!(sent, Ok(request.len()));
        let mut buffer = [0; 512];
        let answer = match receive_from_kernel(&socket, &mut buffer) {
            Ok(Some(datagram)) => find_answer(datagram, 77),
            other => panic!("expected a datagram from the kernel, got {other:?}"),
        };
        assert_eq!(answer, Some(Answer::Acknowledged));
    }

    fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn address_of(socket: &OwnedFd) -> NetlinkAddr {
        nix::sys::socket::getsockname::<NetlinkAddr>(socket.as_raw_fd())
            .unwrap_or_else(|error| panic!("getsockname: {error}"))
    }

    /// Looks exactly like an acknowledgement of request 1, but a process sends it.
    fn forged_acknowledgement() -> Vec<u8> {
        message(NLMSG_ERROR, 0, 1, 0, &[0; 20])
    }

    fn send_forged_acknowledgement(to: &NetlinkAddr) -> Result<usize, Errno> {
        let sender = open_socket(SockProtocol::NetlinkRoute, Duration::from_secs(1))
            .unwrap_or_else(|error| panic!("cannot open the sending socket: {error}"));
        nix::sys::socket::sendto(
            sender.as_raw_fd(),
            &forged_acknowledgement(),
            to,
            nix::sys::socket::MsgFlags::empty(),
        )
    }

    #[test]
    fn other_senders_are_refused_and_silence_times_out() {
        let timeout = Duration::from_millis(100);
        let receiver = open_socket(SockProtocol::NetlinkRoute, timeout)
            .unwrap_or_else(|error| panic!("cannot open the receiving socket: {error}"));
        let receiver_address = address_of(&receiver);
        assert_ne!(receiver_address.pid(), 0);
        // Root may send to any port, so only the connect() keeps the datagram out; anyone else
        // is stopped earlier, by the missing CAP_NET_ADMIN.
        let sent = send_forged_acknowledgement(&receiver_address);
        if running_as_root() {
            assert_eq!(sent, Err(Errno::ECONNREFUSED));
        } else {
            assert!(
                matches!(sent, Err(Errno::EPERM | Errno::ECONNREFUSED)),
                "{sent:?}"
            );
        }

        let mut buffer = [0; 512];
        let started = std::time::Instant::now();
        assert_eq!(
            receive_from_kernel(&receiver, &mut buffer),
            Err(Errno::EAGAIN)
        );
        assert!(started.elapsed() >= timeout - Duration::from_millis(10));
    }

    /// A socket not connected to the kernel (one not opened by `open_socket`) does receive a
    /// privileged process's datagram; `receive_from_kernel` must still not hand it over.
    #[test]
    fn datagrams_from_a_process_are_not_handed_over() {
        if !running_as_root() {
            eprintln!("skipped: only a process with CAP_NET_ADMIN can send to another port");
            return;
        }
        let unconnected = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .unwrap_or_else(|error| panic!("socket: {error}"));
        bind(unconnected.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .unwrap_or_else(|error| panic!("bind: {error}"));
        let forged = forged_acknowledgement();
        assert_eq!(
            send_forged_acknowledgement(&address_of(&unconnected)),
            Ok(forged.len())
        );
        let mut buffer = [0; 512];
        assert_eq!(receive_from_kernel(&unconnected, &mut buffer), Ok(None));
    }

    /// SO_RCVTIMEO 0 would block forever: a zero timeout must give up at once instead. The
    /// receive runs on its own thread so that a regression fails the test rather than hanging it.
    #[test]
    fn a_zero_timeout_gives_up_instead_of_blocking() {
        let socket = open_socket(SockProtocol::NetlinkRoute, Duration::ZERO)
            .unwrap_or_else(|error| panic!("{error}"));
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 64];
            let _ = done.send(receive_from_kernel(&socket, &mut buffer).map(|d| d.is_some()));
        });
        assert_eq!(
            outcome.recv_timeout(Duration::from_secs(2)),
            Ok(Err(Errno::EAGAIN))
        );
    }

    #[test]
    fn opened_sockets_ask_for_extended_acknowledgements() {
        let socket = open_socket(SockProtocol::NetlinkRoute, Duration::from_secs(1))
            .unwrap_or_else(|error| panic!("{error}"));
        for option in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let mut value: libc::c_int = 0;
            let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: the descriptor is open, and the pointers describe `value` and `length`,
            // which outlive the call.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_NETLINK,
                    option,
                    std::ptr::from_mut(&mut value).cast(),
                    &mut length,
                )
            };
            assert_eq!(Errno::result(rc), Ok(0), "option {option}");
            assert_eq!(value, 1, "option {option}");
        }
    }

    #[test]
    fn the_receive_buffer_grows() {
        let socket = open_socket(SockProtocol::NetlinkRoute, Duration::from_secs(1))
            .unwrap_or_else(|error| panic!("{error}"));
        let size = || nix::sys::socket::getsockopt(&socket, sockopt::RcvBuf);
        let before = size().unwrap_or_else(|error| panic!("{error}"));
        assert!(before < RECEIVE_BUFFER_BYTES, "default already {before}");
        assert_eq!(grow_receive_buffer(&socket, RECEIVE_BUFFER_BYTES), Ok(()));
        let after = size().unwrap_or_else(|error| panic!("{error}"));
        // Only SO_RCVBUFFORCE passes rmem_max; the kernel doubles what it is given.
        if running_as_root() {
            assert!(after >= RECEIVE_BUFFER_BYTES, "{after}");
        } else {
            assert!(after >= before, "{before} -> {after}");
        }
    }
}
