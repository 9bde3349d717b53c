//! The NFQUEUE edge: receive queued packets and give the kernel its verdict for each.
//!
//! It knows nothing of scans; the caller's closure decides. Every message received is answered,
//! even when the closure cannot make sense of the packet, because an unanswered packet holds
//! its queue slot in the kernel until the queue overflows.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use log::warn;
use nfq::Queue;
use thiserror::Error;

use crate::config::Verdict;
use crate::netlink_wire::{grow_receive_buffer, RECEIVE_BUFFER_BYTES};

/// The whole packet (the kernel copies min(length, range)). A fixed header-sized range looks
/// enough, but an IPv6 scanner can put a few hundred bytes of extension headers in front of its
/// TCP header: cut off, every probe would look like the same portless packet and the scan would
/// never reach the trigger. Probes are small, so copying them whole costs little.
pub const COPY_RANGE_BYTES: u16 = u16::MAX;
/// Kernel-side queue length. Overflow is dropped (fail closed): everything queued is addressed
/// to a port with no service, or is malformed, so dropping it under a flood costs nobody.
pub const QUEUE_MAX_LEN: u32 = 16384;

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("cannot open the NFQUEUE netlink socket: {0}")]
    Open(io::Error),
    #[error(
        "cannot bind NFQUEUE {queue} (is another nfsentry or NFQUEUE reader running?): {source}"
    )]
    Bind { queue: u16, source: io::Error },
    #[error("cannot configure NFQUEUE {queue} ({what}): {source}")]
    Configure {
        queue: u16,
        what: &'static str,
        source: io::Error,
    },
    #[error("NFQUEUE {queue} receive failed: {source}")]
    Receive { queue: u16, source: io::Error },
    #[error("NFQUEUE {queue}: sending a verdict failed: {source}")]
    Verdict { queue: u16, source: io::Error },
}

pub struct PacketQueue {
    queue: Queue,
    fd: Option<RawFd>,
    number: u16,
}

impl PacketQueue {
    /// Binds queue `number`. Call before the nft rules that feed it exist: the binding
    /// handshake discards packet messages that arrive while it waits for acks.
    pub fn open(number: u16) -> Result<PacketQueue, QueueError> {
        let expected_fd = lowest_free_fd();
        let mut queue = Queue::open().map_err(QueueError::Open)?;
        let fd = expected_fd.filter(|&fd| is_netfilter_socket(fd));
        match fd {
            Some(fd) => {
                // SAFETY: the fd was just verified to be nfq's socket, which `queue` owns.
                let socket = unsafe { BorrowedFd::borrow_raw(fd) };
                if let Err(e) = grow_receive_buffer(socket, RECEIVE_BUFFER_BYTES) {
                    warn!("NFQUEUE socket buffer stays at the default size: {e}");
                }
                if let Err(e) = talk_to_kernel_only(fd) {
                    warn!("NFQUEUE socket could not be limited to the kernel: {e}");
                }
            }
            None => warn!("cannot find the NFQUEUE socket; its buffer stays at the default size"),
        }
        let configure = |what, source| QueueError::Configure {
            queue: number,
            what,
            source,
        };
        queue.bind(number).map_err(|source| QueueError::Bind {
            queue: number,
            source,
        })?;
        queue
            .set_copy_range(number, COPY_RANGE_BYTES)
            .map_err(|e| configure("copy range", e))?;
        queue
            .set_queue_max_len(number, QUEUE_MAX_LEN)
            .map_err(|e| configure("queue length", e))?;
        queue
            .set_fail_open(number, false)
            .map_err(|e| configure("fail-closed", e))?;
        queue.set_nonblocking(true);
        Ok(PacketQueue { queue, fd, number })
    }

    /// The socket to poll for readability, when it could be identified.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to `self.queue`, which outlives the borrow.
        self.fd.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Answers the packets waiting now, at most `limit` of them, so that under a flood the
    /// caller still gets to its signals and timers; returns how many. `decide` sees the packet
    /// from its IP header on, and the index of the interface it came in on (None: sent by this
    /// host).
    pub fn drain(
        &mut self,
        limit: usize,
        mut decide: impl FnMut(&[u8], Option<u32>) -> Verdict,
    ) -> Result<usize, QueueError> {
        let mut answered = 0;
        while answered < limit {
            let mut message = match self.queue.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(answered),
                // A verdict for a packet the kernel already let go (e.g. the queue was
                // flushed) comes back as an error message; it is not ours to stop for.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(QueueError::Receive {
                        queue: self.number,
                        source,
                    })
                }
            };
            // nfq reports 0 for "no input interface".
            let in_ifindex = Some(message.get_indev()).filter(|&index| index != 0);
            let verdict = match decide(message.get_payload(), in_ifindex) {
                Verdict::Accept => nfq::Verdict::Accept,
                Verdict::Drop => nfq::Verdict::Drop,
            };
            message.set_verdict(verdict);
            self.queue
                .verdict(message)
                .map_err(|source| QueueError::Verdict {
                    queue: self.number,
                    source,
                })?;
            answered += 1;
        }
        Ok(answered)
    }
}

/// nfq does not expose its socket. It is created by the next `socket()` call, which takes the
/// lowest free descriptor; this runs before any other thread exists, so nothing can race it.
/// The result is checked with [`is_netfilter_socket`] before it is used.
fn lowest_free_fd() -> Option<RawFd> {
    // SAFETY: plain open/close of a descriptor we own.
    unsafe {
        let probe = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if probe < 0 {
            return None;
        }
        libc::close(probe);
        Some(probe)
    }
}

fn is_netfilter_socket(fd: RawFd) -> bool {
    let get = |opt| -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value)
    };
    get(libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
        && get(libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
}

/// Connects the socket to the kernel, so datagrams from any other netlink sender are refused
/// (nfq's parser trusts what it reads), and marks it close-on-exec so programs nfsentry starts
/// never hold the queue.
fn talk_to_kernel_only(fd: RawFd) -> io::Result<()> {
    use nix::sys::socket::{connect, NetlinkAddr};
    connect(fd, &NetlinkAddr::new(0, 0))?;
    // SAFETY: fcntl on a descriptor we own, setting only FD_CLOEXEC.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
