//! The NFQUEUE edge: one queue's socket, reading the packets the kernel queues and giving it a
//! verdict for each. It knows nothing of scans; the caller's closure decides. The messages
//! themselves are [`wire`]'s, and how verdicts are grouped is [`verdicts`]'s.
//!
//! Every queued packet waits in the kernel for its verdict, so the per-packet cost here is
//! latency and CPU for everything nfsentry watches. Packets that queue up are therefore read many
//! per system call (recvmmsg), packets that come one at a time one per call ([`offer`]), and the
//! verdicts for what one call read go back in one datagram, a run of the same verdict said once
//! by a batch verdict ([`verdicts`]). Every packet read is
//! answered before [`PacketQueue::answer`] returns, so nothing is held while the caller sleeps,
//! and a packet whose message cannot be read is dropped, since an unanswered packet holds its
//! queue slot until the queue overflows.
//!
//! At a low rate each packet is a wake-up of its own, and what a wake-up costs is then most of
//! what a packet costs. So the reader sleeps in the receive itself ([`Waiting::UpToIdle`]), not in
//! `poll` beside other descriptors: one call to wait and read, one to answer, as the barest
//! NFQUEUE loop does. What else the reading thread must hear about wakes it through the queue
//! ([`QueueWaker`]): the kernel answers a no-op request with an acknowledgement on this very
//! socket, which the receive returns with.
//!
//! One `PacketQueue` owns one queue number and its own socket; it is `Send`, so several queues
//! can be read by one thread each.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::socket::SockProtocol;
use thiserror::Error;

use crate::config::Verdict;
use crate::netlink_wire::{self, Messages, OpenError, RequestError, Wait};

mod offer;
mod slots;
mod verdicts;
pub mod wire;

use offer::ReceiveOffer;
use slots::{ReceiveSlots, RECEIVE_SLOTS};

use wire::Event;
pub use wire::QueuedPacket;

/// The whole packet (the kernel copies min(length, range)). A fixed header-sized range looks
/// enough, but an IPv6 scanner can put a few hundred bytes of extension headers in front of its
/// TCP header: cut off, every probe would look like the same portless packet and the scan would
/// never reach the trigger. Probes are small, so copying them whole costs little. The kernel caps
/// the range at [`wire::MAX_COPY_RANGE_BYTES`]; asking for 0xffff, as libnetfilter_queue's users
/// usually do, means "all of it".
pub const COPY_RANGE_BYTES: u32 = 0xffff;
/// Kernel-side queue length. Overflow is dropped (fail closed): everything queued is addressed
/// to a port with no service, or is malformed, so dropping it under a flood costs nobody.
pub const QUEUE_MAX_LEN: u32 = 16384;
/// Asked of the socket's receive buffer (the kernel doubles it for its bookkeeping). A 20 ms
/// stall at 200k packets/s leaves 4000 small packets waiting; the default buffer (~500 of them)
/// lost a fifth of such bursts here, 8 MiB lost none.
pub const RECEIVE_BUFFER_BYTES: usize = netlink_wire::RECEIVE_BUFFER_BYTES;

/// How long a receive that waits gives up after with nothing queued: the reading thread's
/// timers (expiries, status, the watchdog) run at least this often.
pub const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long `open` waits for the kernel to answer each configuration request.
const CONFIG_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("cannot open the NFQUEUE netlink socket: {0}")]
    Open(#[source] OpenError),
    #[error(
        "cannot bind NFQUEUE {queue} (is another nfsentry or NFQUEUE reader running?): {source}"
    )]
    Bind {
        queue: u16,
        #[source]
        source: RequestError,
    },
    #[error("cannot configure NFQUEUE {queue} ({what}): {source}")]
    Configure {
        queue: u16,
        what: &'static str,
        #[source]
        source: RequestError,
    },
    #[error("cannot set how long a receive on the NFQUEUE {queue} socket waits: {source}")]
    IdleWait {
        queue: u16,
        #[source]
        source: Errno,
    },
    #[error("cannot make a waker for NFQUEUE {queue}: {source}")]
    Waker {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("NFQUEUE {queue} receive failed: {source}")]
    Receive {
        queue: u16,
        #[source]
        source: Errno,
    },
    #[error("NFQUEUE {queue}: sending verdicts failed: {source}")]
    Verdict {
        queue: u16,
        #[source]
        source: Errno,
    },
    /// The kernel refused a verdict for a reason other than the packet being gone: the messages
    /// are wrong, and every packet would stay queued.
    #[error("NFQUEUE {queue}: the kernel refused a verdict: {errno}")]
    VerdictRefused { queue: u16, errno: Errno },
}

/// What the reader has done so far, for status lines and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets read and answered.
    pub packets: u64,
    /// Packets answered without being looked at: their message could not be read (dropped).
    pub unreadable: u64,
    /// Receive calls that returned packets.
    pub receive_calls: u64,
    /// Datagrams of verdicts sent.
    pub verdict_datagrams: u64,
    /// Verdict messages for one packet each.
    pub single_verdicts: u64,
    /// Batch verdict messages, each for a run of packets.
    pub batch_verdicts: u64,
    /// Verdicts the kernel had no packet for any more (ENOENT): harmless.
    pub stale_verdicts: u64,
    /// Wake-ups another thread sent through the queue ([`QueueWaker`]).
    pub wake_ups: u64,
    /// Times the kernel said the receive buffer overflowed: it dropped queued packets then.
    pub overruns: u64,
}

/// One queue's socket and buffers.
pub struct PacketQueue {
    socket: OwnedFd,
    number: u16,
    /// What the last receive read; the first `filled` slots are not answered yet.
    slots: ReceiveSlots,
    filled: usize,
    /// How many slots the next waiting receive offers.
    offer: ReceiveOffer,
    verdicts: verdicts::Verdicts,
    stats: QueueStats,
}

impl fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketQueue")
            .field("socket", &self.socket)
            .field("number", &self.number)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PacketQueue {
    /// Opens a netfilter netlink socket in the calling thread's network namespace (close-on-exec,
    /// hearing only the kernel, its receive buffer grown) and binds queue `number` to it: whole
    /// packets, [`QUEUE_MAX_LEN`] packets held, fail closed. Needs CAP_NET_ADMIN.
    ///
    /// Call it before the nft rules that feed the queue exist: packets that arrive while the
    /// configuration is being acknowledged are read past, unanswered.
    pub fn open(number: u16) -> Result<PacketQueue, QueueError> {
        let socket =
            netlink_wire::open_socket(SockProtocol::NetlinkNetFilter, CONFIG_ANSWER_TIMEOUT)
                .map_err(QueueError::Open)?;
        // SO_RCVBUFFORCE, or SO_RCVBUF up to rmem_max without CAP_NET_ADMIN in the initial
        // namespace; a smaller buffer still works, it only absorbs shorter stalls.
        if let Err(e) = netlink_wire::grow_receive_buffer(&socket, RECEIVE_BUFFER_BYTES) {
            warn!("NFQUEUE {number}: the socket buffer stays at the default size: {e}");
        }
        let mut queue = PacketQueue {
            socket,
            number,
            slots: ReceiveSlots::new(),
            filled: 0,
            offer: ReceiveOffer::new(RECEIVE_SLOTS),
            verdicts: verdicts::Verdicts::new(number, RECEIVE_SLOTS),
            stats: QueueStats::default(),
        };
        queue.configure()?;
        // Configured: from now on a receive that waits gives up after IDLE_WAIT, not after the
        // time allowed for an answer.
        netlink_wire::set_receive_timeout(&queue.socket, IDLE_WAIT).map_err(|source| {
            QueueError::IdleWait {
                queue: number,
                source,
            }
        })?;
        Ok(queue)
    }

    /// Binds the queue, then sets it up, one acknowledged request at a time as libnetfilter_queue
    /// does. The binding comes first: the kernel refuses settings for a queue nobody has bound.
    fn configure(&mut self) -> Result<(), QueueError> {
        let queue = self.number;
        self.request(&wire::bind_request(queue, 1), 1)
            .map_err(|source| QueueError::Bind { queue, source })?;
        let settings = [
            (
                "copy range",
                wire::copy_packet_request(queue, COPY_RANGE_BYTES, 2),
            ),
            (
                "queue length",
                wire::queue_length_request(queue, QUEUE_MAX_LEN, 3),
            ),
            ("fail-closed", wire::fail_closed_request(queue, 4)),
        ];
        for (sequence, (what, request)) in (2..).zip(settings) {
            self.request(&request, sequence)
                .map_err(|source| QueueError::Configure {
                    queue,
                    what,
                    source,
                })?;
        }
        Ok(())
    }

    /// Sends one configuration request and waits for the kernel's answer. The receive buffer is
    /// the packet slots: big enough for a packet that arrives meanwhile, so the answer behind it
    /// is still found.
    fn request(&mut self, request: &[u8], sequence: u32) -> Result<(), RequestError> {
        let wait = Wait::new(self.slots.buffer_mut(), CONFIG_ANSWER_TIMEOUT)
            .counting_overruns(&mut self.stats.overruns);
        netlink_wire::request_ack(&self.socket, request, sequence, wait)
    }

    /// The queue number this reader owns.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// The socket to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Answers the packets waiting now, at most about `limit` of them (whole receive calls), so
    /// that under a flood the caller still gets to its signals and timers; returns how many.
    /// `decide` sees each packet from its IP header on.
    pub fn drain(
        &mut self,
        limit: usize,
        mut decide: impl FnMut(&[u8]) -> Verdict,
    ) -> Result<usize, QueueError> {
        self.drain_packets(limit, |packet| decide(packet.payload))
    }

    /// [`drain`](Self::drain), with what the kernel says about each packet besides its bytes
    /// (its id, interfaces and link-layer protocol).
    pub fn drain_packets(
        &mut self,
        limit: usize,
        mut decide: impl FnMut(&QueuedPacket<'_>) -> Verdict,
    ) -> Result<usize, QueueError> {
        let read = self.receive(Waiting::No)?;
        Ok(self
            .drain_read(read, limit, &mut decide)?
            .unwrap_or_default())
    }

    /// Answers the `read` datagrams the last [`receive`](Self::receive) got, then reads on
    /// without waiting while reads come back full, until about `limit` packets are answered
    /// (whole receive calls; 0: these only): a deep queue drains in big batches, and the caller
    /// still gets to its signals and timers. Returns how many were answered, or None when the
    /// judge said stop before a batch ([`Judge::before_answer`]), which then stays unanswered
    /// until the next receive or the queue's close (fail closed).
    pub fn drain_read(
        &mut self,
        mut read: usize,
        limit: usize,
        judge: &mut impl Judge,
    ) -> Result<Option<usize>, QueueError> {
        let mut answered = 0;
        loop {
            if !judge.before_answer() {
                return Ok(None);
            }
            answered += self.answer(judge)?;
            // A short read means the socket is empty, and a read offered one slot was made
            // because packets come one at a time: asking again would only cost a call.
            if !Self::full_read(read) || answered >= limit {
                return Ok(Some(answered));
            }
            read = self.receive(Waiting::No)?;
        }
    }

    /// Reads what is queued, up to one receive call's worth, waiting for the first datagram as
    /// `wait` says; returns how many datagrams were read (0 when the wait ran out, or the call
    /// was interrupted or overran: the caller just asks again). A full read
    /// ([`PacketQueue::full_read`]) means more may be waiting. Whatever was read and not
    /// answered yet is answered first, so no packet is ever left without its verdict.
    pub fn receive(&mut self, wait: Waiting) -> Result<usize, QueueError> {
        if self.filled > 0 {
            self.answer(&mut |_: &QueuedPacket<'_>| Verdict::Drop)?;
        }
        // A receive that waits offers what the queue's pace says (see `offer`); one that does
        // not follows a full read, so the queue is deep: all the slots.
        let (flags, offered) = match wait {
            Waiting::No => (libc::MSG_DONTWAIT, RECEIVE_SLOTS),
            // The first datagram waited for, the rest of the call taken as they are.
            Waiting::UpToIdle => (libc::MSG_WAITFORONE, self.offer.slots()),
        };
        let started = (wait == Waiting::UpToIdle && self.offer.wants_timing()).then(Instant::now);
        let received = self.slots.receive(self.socket.as_fd(), flags, offered);
        let count = match received {
            Ok(count) => count,
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(Errno::ENOBUFS) => {
                self.note_overrun();
                0
            }
            Err(source) => {
                return Err(QueueError::Receive {
                    queue: self.number,
                    source,
                })
            }
        };
        if wait == Waiting::UpToIdle {
            self.offer
                .learn(count, started.map(|started| started.elapsed()));
        }
        if count > 0 {
            self.stats.receive_calls += 1;
        }
        self.filled = count;
        Ok(count)
    }

    /// Whether `read` datagrams fill all the slots of a receive call, so that more may be
    /// waiting.
    fn full_read(read: usize) -> bool {
        read >= RECEIVE_SLOTS
    }

    /// Answers every packet the last [`receive`](Self::receive) read, as `judge` says, in one
    /// datagram of verdicts, telling the judge before they go; returns how many packets were
    /// answered.
    pub fn answer(&mut self, judge: &mut impl Judge) -> Result<usize, QueueError> {
        let mut answered = 0;
        let mut refused = None;
        let count = std::mem::take(&mut self.filled);
        for (bytes, cut) in self.slots.datagrams(count) {
            let mut on_event = |event| match event {
                Event::Packet(packet) => {
                    let verdict = judge.judge(&packet);
                    self.verdicts.push(packet.id, verdict);
                    self.stats.packets += 1;
                    answered += 1;
                }
                Event::Unreadable { id } => {
                    self.verdicts.push(id, Verdict::Drop);
                    self.stats.packets += 1;
                    self.stats.unreadable += 1;
                    answered += 1;
                }
                Event::Unidentified => {
                    self.verdicts.push_unidentified();
                    self.stats.packets += 1;
                    self.stats.unreadable += 1;
                    answered += 1;
                }
                Event::Refused {
                    errno: Errno::ENOENT,
                } => {
                    self.stats.stale_verdicts += 1;
                }
                Event::Refused { errno } => {
                    refused.get_or_insert(errno);
                }
                Event::WakeUp => self.stats.wake_ups += 1,
                Event::Other => {}
            };
            if cut {
                on_event(wire::read_cut_datagram(bytes));
            } else {
                Messages::new(bytes)
                    .map(wire::read_message)
                    .for_each(on_event);
            }
        }
        judge.before_verdicts();
        self.flush()?;
        if let Some(errno) = refused {
            return Err(QueueError::VerdictRefused {
                queue: self.number,
                errno,
            });
        }
        Ok(answered)
    }

    /// A handle another thread wakes this queue's reader with, however long its receive waits.
    pub fn waker(&self) -> Result<QueueWaker, QueueError> {
        let socket = self
            .socket
            .try_clone()
            .map_err(|source| QueueError::Waker {
                queue: self.number,
                source,
            })?;
        Ok(QueueWaker { socket })
    }

    /// Sends the verdicts for everything read since the last flush, in one datagram.
    fn flush(&mut self) -> Result<(), QueueError> {
        if self.verdicts.is_empty() {
            return Ok(());
        }
        let (datagram, sent) = self.verdicts.finish();
        if datagram.is_empty() {
            return Ok(());
        }
        loop {
            match nix::sys::socket::send(
                self.socket.as_raw_fd(),
                datagram,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(QueueError::Verdict {
                        queue: self.number,
                        source,
                    })
                }
            }
        }
        self.stats.verdict_datagrams += 1;
        self.stats.single_verdicts += sent.single;
        self.stats.batch_verdicts += sent.batch;
        Ok(())
    }

    /// The kernel dropped packets because the receive buffer was full (fail closed). Said at the
    /// 1st, 2nd, 4th, 8th... time, so a long overload cannot flood the log.
    fn note_overrun(&mut self) {
        self.stats.overruns += 1;
        let overruns = self.stats.overruns;
        if overruns.is_power_of_two() {
            warn!(
                "NFQUEUE {}: the socket buffer overflowed ({overruns} times so far); the kernel \
                 dropped the packets it could not queue",
                self.number
            );
        } else {
            debug!("NFQUEUE {}: socket buffer overflow {overruns}", self.number);
        }
    }
}

impl AsFd for PacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Whether [`PacketQueue::receive`] waits for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Takes what is there, if anything.
    No,
    /// Sleeps until a datagram comes (a packet, or a [`QueueWaker`]'s wake-up), or
    /// [`IDLE_WAIT`] has passed.
    UpToIdle,
}

/// Wakes a queue's reader from its receive: a no-op request sent on the queue's own socket,
/// which the kernel acknowledges on that socket. Nothing from another process could do it: the
/// socket takes datagrams from the kernel only.
#[derive(Debug)]
pub struct QueueWaker {
    socket: OwnedFd,
}

impl QueueWaker {
    pub fn wake(&self) -> Result<(), Errno> {
        let request = wire::wake_request();
        loop {
            match nix::sys::socket::send(
                self.socket.as_raw_fd(),
                &request,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Err(Errno::EINTR) => continue,
                other => return other.map(|_| ()),
            }
        }
    }
}

/// What [`PacketQueue::answer`] asks: a verdict for each packet, and whatever must be done
/// before the kernel lets the packets of one receive call go.
pub trait Judge {
    /// Called before each receive call's packets are judged, to take in what must come before
    /// any of them; false: stop, and leave them unanswered for now.
    fn before_answer(&mut self) -> bool {
        true
    }

    fn judge(&mut self, packet: &QueuedPacket<'_>) -> Verdict;

    /// Called once the packets of a receive call are judged, before their verdicts are sent.
    fn before_verdicts(&mut self) {}
}

/// A closure that only decides.
impl<F: FnMut(&QueuedPacket<'_>) -> Verdict> Judge for F {
    fn judge(&mut self, packet: &QueuedPacket<'_>) -> Verdict {
        self(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_can_move_to_its_own_thread() {
        fn is_send<T: Send>() {}
        is_send::<PacketQueue>();
    }
}
