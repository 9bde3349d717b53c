//! Sends a request to the kernel and reads the kernel's answer to it: the acknowledgement or
//! refusal of one request, the answers to every message of an nfnetlink batch, or the messages of
//! a dump. There is one wait loop, [`read_until`]; the three readers differ only in what they make
//! of each message. Building requests and interpreting dumped messages stay with the families.
//!
//! What arrives is read as untrusted bytes like everything in [`super`]: datagrams from anyone but
//! the kernel are dropped unread, and answers to other requests are skipped.

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

use super::socket::receive_datagram;
use super::{
    extended_ack_message, kernel_says, read_u32_ne, Answer, Message, Messages, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK_TLVS, NLM_F_DUMP_INTR, NLM_F_MULTI,
};

/// `NLMSG_DONE` starts with an int: 0, or the (negative) errno that ended the dump early.
const DONE_ERROR_BYTES: usize = 4;

/// Why a request did not get the answer it asked for. The family's own error type says what was
/// asked; this says what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("sending the request to the kernel failed")]
    Send(#[source] Errno),
    #[error("reading the kernel's answer failed")]
    Receive(#[source] Errno),
    /// The errno is the refusal itself rather than a cause behind it, so the message carries
    /// it, followed by the kernel's own explanation when it gave one.
    #[error(
        "the kernel refused message {sequence}: {errno}{}",
        kernel_says(.kernel_message)
    )]
    Refused {
        /// The refused message; in a batch the earliest one refused.
        sequence: u32,
        errno: Errno,
        /// The kernel's extended-ack text, when it had one.
        kernel_message: Option<String>,
    },
    #[error("the kernel did not answer message {sequence} within {timeout:?}")]
    Unanswered {
        /// The message still unanswered; in a batch the earliest one.
        sequence: u32,
        timeout: Duration,
    },
}

impl RequestError {
    /// The errno behind the failure, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RequestError::Send(errno) | RequestError::Receive(errno) => Some(*errno),
            RequestError::Refused { errno, .. } => Some(*errno),
            RequestError::Unanswered { .. } => None,
        }
    }
}

impl Answer {
    /// The outcome of request `sequence` that this answers.
    pub fn outcome(self, sequence: u32) -> Result<(), RequestError> {
        match self {
            Answer::Acknowledged => Ok(()),
            Answer::Refused {
                errno,
                kernel_message,
            } => Err(RequestError::Refused {
                sequence,
                errno,
                kernel_message,
            }),
        }
    }
}

/// How a dump ended, when it ended without a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    Complete,
    /// The kernel flagged (NLM_F_DUMP_INTR) that what it dumped changed meanwhile: the messages
    /// may mix old and new state, and only dumping again gives a consistent view.
    Inconsistent,
}

/// How to wait for answers: the buffer datagrams are read into, the longest the whole wait may
/// take, and what a receive-buffer overrun means.
#[derive(Debug)]
pub struct Wait<'a> {
    buffer: &'a mut [u8],
    timeout: Duration,
    overruns: Option<&'a mut u64>,
}

impl<'a> Wait<'a> {
    /// Reads into `buffer`, which must hold the largest datagram expected (a longer one is cut,
    /// and its cut message dropped), for at most `timeout` in all. Each receive is bounded by the
    /// socket's own receive timeout too (see [`super::open_socket`]).
    pub fn new(buffer: &'a mut [u8], timeout: Duration) -> Wait<'a> {
        Wait {
            buffer,
            timeout,
            overruns: None,
        }
    }

    /// For a socket that also hears messages nobody asked for, such as logged packets: the
    /// kernel's reports that it dropped some for want of buffer room (ENOBUFS) are counted in
    /// `overruns` and read past. Otherwise such a report fails the wait, since what was dropped
    /// may be the answer itself.
    pub fn counting_overruns(mut self, overruns: &'a mut u64) -> Wait<'a> {
        self.overruns = Some(overruns);
        self
    }

    /// The datagrams of `socket`, read into the buffer, and how to wait for them.
    fn on<S: AsFd>(self, socket: &S) -> (FromSocket<'_, 'a, S>, Duration, Option<&'a mut u64>) {
        let datagrams = FromSocket {
            socket,
            buffer: self.buffer,
        };
        (datagrams, self.timeout, self.overruns)
    }
}

/// Sends `request` and waits for the kernel's acknowledgement or refusal of message `sequence`
/// (the request must ask for one with NLM_F_ACK). Answers to other requests, such as a late
/// answer to an earlier one that timed out, and whatever else the socket hears are skipped.
pub fn request_ack(
    socket: &impl AsFd,
    request: &[u8],
    sequence: u32,
    wait: Wait<'_>,
) -> Result<(), RequestError> {
    send_to_kernel(socket, &[request]).map_err(RequestError::Send)?;
    let (mut datagrams, timeout, overruns) = wait.on(socket);
    await_ack(&mut datagrams, sequence, timeout, overruns)
}

/// Sends an nfnetlink batch (given in parts that go out as one datagram, since the kernel takes a
/// batch only whole) and waits until each message in `awaited` is answered. The kernel answers
/// every message of a refused batch, but after a refusal only the answers already queued are
/// read; the earliest refused message is reported, since later refusals often only follow from it.
///
/// A batch's sequence numbers start again at 1 (libnftnl's batches do), so an answer left over
/// from an earlier batch could not be told from a fresh one: whatever is queued is discarded
/// before sending, and every answer read after it is this batch's, whatever its sequence. The
/// socket must therefore hear nothing but answers to its own batches.
pub fn request_batch(
    socket: &impl AsFd,
    batch: &[&[u8]],
    awaited: &[u32],
    wait: Wait<'_>,
) -> Result<(), RequestError> {
    let (mut datagrams, timeout, overruns) = wait.on(socket);
    discard_queued(&mut datagrams, timeout);
    send_to_kernel(socket, batch).map_err(RequestError::Send)?;
    await_batch(&mut datagrams, awaited, timeout, overruns)
}

/// Sends a dump request (NLM_F_DUMP) and hands each message of the answer to `on_message`, in
/// order, until NLMSG_DONE; a refusal, on an NLMSG_ERROR or in NLMSG_DONE, ends it as an error.
/// A request answered by one message without NLM_F_MULTI (a plain get) ends with that message.
/// `timeout` bounds the whole dump.
pub fn request_dump(
    socket: &impl AsFd,
    request: &[u8],
    sequence: u32,
    wait: Wait<'_>,
    on_message: impl FnMut(Message<'_>),
) -> Result<Dump, RequestError> {
    send_to_kernel(socket, &[request]).map_err(RequestError::Send)?;
    let (mut datagrams, timeout, overruns) = wait.on(socket);
    await_dump(&mut datagrams, sequence, timeout, overruns, on_message)
}

/// Where [`read_until`] gets datagrams: a socket, or crafted datagrams in the tests.
trait Datagrams {
    /// The next datagram; `Ok(None)` for one that did not come from the kernel and must not be
    /// read. Without `block`, EAGAIN at once when nothing is queued.
    fn next(&mut self, block: bool) -> Result<Option<&[u8]>, Errno>;
}

struct FromSocket<'s, 'b, S> {
    socket: &'s S,
    buffer: &'b mut [u8],
}

impl<S: AsFd> Datagrams for FromSocket<'_, '_, S> {
    fn next(&mut self, block: bool) -> Result<Option<&[u8]>, Errno> {
        let flags = if block {
            MsgFlags::empty()
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        receive_datagram(self.socket, self.buffer, flags)
    }
}

/// What a reader wants after each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// More, waiting for it up to the timeout.
    Waiting,
    /// Only what is queued already, then stop.
    Draining,
    /// Nothing more.
    Done,
}

/// The wait loop: hands every message of every datagram from the kernel to `on_message` until it
/// says `Done`, nothing comes while `Waiting` (the socket's receive timeout) or nothing more is
/// queued while `Draining`, or `timeout` has passed in all. Returns the progress it ended with:
/// still `Waiting` means the answer did not come in time.
fn read_until(
    datagrams: &mut impl Datagrams,
    timeout: Duration,
    mut overruns: Option<&mut u64>,
    mut progress: Progress,
    mut on_message: impl FnMut(Message<'_>) -> Progress,
) -> Result<Progress, Errno> {
    // The socket's receive timeout bounds each receive; this bounds the whole exchange, in case
    // other datagrams keep arriving and the answer does not.
    let deadline = Instant::now().checked_add(timeout);
    while progress != Progress::Done && deadline.map_or(true, |end| Instant::now() < end) {
        let datagram = match datagrams.next(progress == Progress::Waiting) {
            Ok(Some(datagram)) => datagram,
            // Only the kernel answers requests; anything else is not ours to read.
            Ok(None) | Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) if overruns.is_some() => {
                if let Some(count) = overruns.as_deref_mut() {
                    *count += 1;
                }
                continue;
            }
            // The receive timeout surfaces as EAGAIN on a blocking socket.
            Err(Errno::EAGAIN) => break,
            Err(errno) => return Err(errno),
        };
        for message in Messages::new(datagram) {
            progress = on_message(message);
            if progress == Progress::Done {
                break;
            }
        }
    }
    Ok(progress)
}

/// Drops whatever is queued, so that it cannot be taken for the answer to what is sent next.
fn discard_queued(datagrams: &mut impl Datagrams, timeout: Duration) {
    // Overruns only mean that less is left to discard.
    let mut dropped = 0;
    let _ = read_until(
        datagrams,
        timeout,
        Some(&mut dropped),
        Progress::Draining,
        |_| Progress::Draining,
    );
}

fn await_ack(
    datagrams: &mut impl Datagrams,
    sequence: u32,
    timeout: Duration,
    overruns: Option<&mut u64>,
) -> Result<(), RequestError> {
    read_until_outcome(datagrams, sequence, timeout, overruns, |message| {
        message.answer().map(|answer| answer.outcome(sequence))
    })
}

/// Reads until `outcome` makes one of a message answering request `sequence`; answers to other
/// requests are skipped. No outcome in time is [`RequestError::Unanswered`].
fn read_until_outcome<T>(
    datagrams: &mut impl Datagrams,
    sequence: u32,
    timeout: Duration,
    overruns: Option<&mut u64>,
    mut outcome: impl FnMut(Message<'_>) -> Option<Result<T, RequestError>>,
) -> Result<T, RequestError> {
    let mut ended = None;
    read_until(datagrams, timeout, overruns, Progress::Waiting, |message| {
        if message.sequence == sequence {
            ended = outcome(message);
        }
        if ended.is_some() {
            Progress::Done
        } else {
            Progress::Waiting
        }
    })
    .map_err(RequestError::Receive)?;
    ended.unwrap_or(Err(RequestError::Unanswered { sequence, timeout }))
}

fn await_batch(
    datagrams: &mut impl Datagrams,
    awaited: &[u32],
    timeout: Duration,
    overruns: Option<&mut u64>,
) -> Result<(), RequestError> {
    let mut unanswered: BTreeSet<u32> = awaited.iter().copied().collect();
    let mut refusal: Option<RequestError> = None;
    let start = if unanswered.is_empty() {
        Progress::Done
    } else {
        Progress::Waiting
    };
    read_until(datagrams, timeout, overruns, start, |message| {
        if let Some(answer) = message.answer() {
            unanswered.remove(&message.sequence);
            if let Err(refused) = answer.outcome(message.sequence) {
                let earliest_so_far = match &refusal {
                    Some(RequestError::Refused { sequence, .. }) => message.sequence < *sequence,
                    _ => true,
                };
                if earliest_so_far {
                    refusal = Some(refused);
                }
            }
        }
        if unanswered.is_empty() {
            Progress::Done
        } else if refusal.is_some() {
            Progress::Draining
        } else {
            Progress::Waiting
        }
    })
    .map_err(RequestError::Receive)?;
    match (refusal, unanswered.first()) {
        (Some(refused), _) => Err(refused),
        (None, Some(&sequence)) => Err(RequestError::Unanswered { sequence, timeout }),
        (None, None) => Ok(()),
    }
}

fn await_dump(
    datagrams: &mut impl Datagrams,
    sequence: u32,
    timeout: Duration,
    overruns: Option<&mut u64>,
    mut on_message: impl FnMut(Message<'_>),
) -> Result<Dump, RequestError> {
    let mut inconsistent = false;
    read_until_outcome(datagrams, sequence, timeout, overruns, |message| {
        inconsistent |= message.flags & NLM_F_DUMP_INTR != 0;
        match message.kind {
            NLMSG_DONE => Some(done_outcome(&message)),
            // Kernels do not acknowledge a dump, but a plain get asked to is acknowledged after
            // its one message; a cut error message is no answer at all.
            NLMSG_ERROR => message.answer().map(|answer| answer.outcome(sequence)),
            _ => {
                on_message(message);
                (message.flags & NLM_F_MULTI == 0).then_some(Ok(()))
            }
        }
    })?;
    Ok(if inconsistent {
        Dump::Inconsistent
    } else {
        Dump::Complete
    })
}

/// NLMSG_DONE carries the errno that ended the dump early, if one did, with the kernel's text
/// right behind it. A DONE too short for the errno still ends the dump.
fn done_outcome(done: &Message<'_>) -> Result<(), RequestError> {
    let error = read_u32_ne(done.payload, 0).map_or(0, |raw| raw as i32);
    if error >= 0 {
        return Ok(());
    }
    let kernel_message = if done.flags & NLM_F_ACK_TLVS != 0 {
        done.payload
            .get(DONE_ERROR_BYTES..)
            .and_then(extended_ack_message)
    } else {
        None
    };
    Err(RequestError::Refused {
        sequence: done.sequence,
        errno: Errno::from_raw(error.saturating_neg()),
        kernel_message,
    })
}

/// Sends `parts` as one datagram to the kernel. Netlink takes a datagram whole or not at all, so
/// a short count would be a kernel bug; it is reported as EMSGSIZE rather than retried.
fn send_to_kernel(socket: &impl AsFd, parts: &[&[u8]]) -> Result<(), Errno> {
    let bytes: usize = parts.iter().map(|part| part.len()).sum();
    let mut iovecs: Vec<libc::iovec> = parts
        .iter()
        .map(|part| libc::iovec {
            // The kernel only reads from send buffers; the `mut` is the C type's.
            iov_base: part.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: part.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid sockaddr_nl and msghdr; port id 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: as above.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = std::ptr::from_mut(&mut kernel).cast::<c_void>();
    header.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    header.msg_iov = iovecs.as_mut_ptr();
    header.msg_iovlen = iovecs.len() as _;
    loop {
        // SAFETY: `header` points at the address and iovecs above, which outlive the call, each
        // iovec covers a live part, and the descriptor is open (borrowed) for the call.
        let sent = unsafe { libc::sendmsg(socket.as_fd().as_raw_fd(), &header, 0) };
        match Errno::result(sent) {
            Ok(sent) if usize::try_from(sent).ok() == Some(bytes) => return Ok(()),
            Ok(_) => return Err(Errno::EMSGSIZE),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{attribute, message, truncations_and_corruptions};
    use super::super::{open_socket, Attributes, Request, MESSAGE_HEADER_BYTES, NLMSGERR_ATTR_MSG};
    use super::*;
    use std::collections::VecDeque;

    use nix::sys::socket::SockProtocol;

    const TIMEOUT: Duration = Duration::from_secs(2);
    /// Some family's data message, such as RTM_NEWLINK in a dump.
    const DATA: u16 = 0x0410;

    /// Datagrams as the kernel could send them, in order, then silence (EAGAIN); `Ok(None)` is one
    /// from a process. Records whether each receive would have blocked.
    struct Crafted {
        queue: VecDeque<Result<Option<Vec<u8>>, Errno>>,
        current: Vec<u8>,
        blocking: Vec<bool>,
    }

    impl Crafted {
        fn new(datagrams: impl IntoIterator<Item = Result<Option<Vec<u8>>, Errno>>) -> Crafted {
            Crafted {
                queue: datagrams.into_iter().collect(),
                current: Vec::new(),
                blocking: Vec::new(),
            }
        }

        fn kernel(datagrams: impl IntoIterator<Item = Vec<u8>>) -> Crafted {
            Crafted::new(datagrams.into_iter().map(|datagram| Ok(Some(datagram))))
        }
    }

    impl Datagrams for Crafted {
        fn next(&mut self, block: bool) -> Result<Option<&[u8]>, Errno> {
            self.blocking.push(block);
            match self.queue.pop_front() {
                None => Err(Errno::EAGAIN),
                Some(Err(errno)) => Err(errno),
                Some(Ok(None)) => Ok(None),
                Some(Ok(Some(datagram))) => {
                    self.current = datagram;
                    Ok(Some(&self.current))
                }
            }
        }
    }

    /// An NLMSG_ERROR or NLMSG_DONE as the kernel builds them: the (negated) errno, then
    /// `echoed`, then the kernel's text if it has one.
    fn with_errno(
        kind: u16,
        flags: u16,
        sequence: u32,
        errno: i32,
        echoed: &[u8],
        text: Option<&str>,
    ) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(echoed);
        let mut flags = flags;
        if let Some(text) = text {
            flags |= NLM_F_ACK_TLVS;
            let value = [text.as_bytes(), b"\0"].concat();
            payload.extend(attribute(NLMSGERR_ATTR_MSG, &value));
        }
        message(kind, flags, sequence, 0, &payload)
    }

    /// With NETLINK_CAP_ACK the kernel echoes only the refused request's header.
    fn error(sequence: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
        let capped = libc::NLM_F_CAPPED as u16;
        let echoed = [0; MESSAGE_HEADER_BYTES];
        with_errno(NLMSG_ERROR, capped, sequence, errno, &echoed, text)
    }

    fn ack(sequence: u32) -> Vec<u8> {
        error(sequence, 0, None)
    }

    fn done(sequence: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
        with_errno(NLMSG_DONE, NLM_F_MULTI, sequence, errno, &[], text)
    }

    fn data(sequence: u32, flags: u16, payload: &[u8]) -> Vec<u8> {
        message(DATA, flags, sequence, 0, payload)
    }

    fn ack_of(datagrams: &mut Crafted, sequence: u32) -> Result<(), RequestError> {
        await_ack(datagrams, sequence, TIMEOUT, None)
    }

    fn batch(datagrams: &mut Crafted, awaited: &[u32]) -> Result<(), RequestError> {
        await_batch(datagrams, awaited, TIMEOUT, None)
    }

    /// The dump's outcome and the payloads handed over.
    fn dump(datagrams: &mut Crafted, sequence: u32) -> (Result<Dump, RequestError>, Vec<Vec<u8>>) {
        let mut delivered = Vec::new();
        let outcome = await_dump(datagrams, sequence, TIMEOUT, None, |message| {
            delivered.push(message.payload.to_vec());
        });
        (outcome, delivered)
    }

    #[test]
    fn an_ack_is_found_past_strangers_stale_answers_and_other_messages() {
        let mut stale_and_data = error(4, libc::EEXIST, None);
        stale_and_data.extend(data(0, 0, &[1, 2, 3, 4]));
        let mut datagrams = Crafted::new([
            Ok(None),
            Ok(Some(stale_and_data)),
            Err(Errno::EINTR),
            Ok(Some(ack(5))),
            Ok(Some(error(5, libc::EPERM, None))),
        ]);
        assert_eq!(ack_of(&mut datagrams, 5), Ok(()));
        // Reading stopped at the answer.
        assert_eq!(datagrams.queue.len(), 1);
        assert!(datagrams.blocking.iter().all(|&block| block));
    }

    #[test]
    fn a_refusal_keeps_the_errno_and_the_kernel_text() {
        let text = "Nexthop has invalid gateway";
        let mut datagrams = Crafted::kernel([error(6, libc::ENETUNREACH, Some(text))]);
        let refused = ack_of(&mut datagrams, 6);
        assert_eq!(
            refused,
            Err(RequestError::Refused {
                sequence: 6,
                errno: Errno::ENETUNREACH,
                kernel_message: Some(text.to_owned()),
            })
        );
        let Err(error) = refused else {
            panic!("a refusal was taken for success");
        };
        assert_eq!(error.errno(), Some(Errno::ENETUNREACH));
        assert_eq!(
            error.to_string(),
            "the kernel refused message 6: ENETUNREACH: Network is unreachable \
             (Nexthop has invalid gateway)"
        );
    }

    #[test]
    fn silence_is_unanswered_and_receive_errors_are_reported() {
        let mut stale_only = Crafted::kernel([ack(1)]);
        assert_eq!(
            ack_of(&mut stale_only, 2),
            Err(RequestError::Unanswered {
                sequence: 2,
                timeout: TIMEOUT
            })
        );
        let mut broken = Crafted::new([Err(Errno::EBADF), Ok(Some(ack(2)))]);
        assert_eq!(
            ack_of(&mut broken, 2),
            Err(RequestError::Receive(Errno::EBADF))
        );
    }

    #[test]
    fn an_overrun_fails_the_wait_unless_counted() {
        let datagrams = || Crafted::new([Err(Errno::ENOBUFS), Ok(Some(ack(3)))]);
        assert_eq!(
            ack_of(&mut datagrams(), 3),
            Err(RequestError::Receive(Errno::ENOBUFS))
        );
        let mut overruns = 0;
        let counted = await_ack(&mut datagrams(), 3, TIMEOUT, Some(&mut overruns));
        assert_eq!((counted, overruns), (Ok(()), 1));
    }

    #[test]
    fn a_zero_timeout_reads_nothing() {
        let mut datagrams = Crafted::kernel([ack(1)]);
        let outcome = await_ack(&mut datagrams, 1, Duration::ZERO, None);
        assert!(
            matches!(outcome, Err(RequestError::Unanswered { sequence: 1, .. })),
            "{outcome:?}"
        );
        assert!(datagrams.blocking.is_empty());
    }

    #[test]
    fn a_batch_waits_for_every_awaited_answer() {
        // The batch begin's own acknowledgement (kernels >= 6.10) is answered but not awaited.
        let mut first = ack(1);
        first.extend(ack(2));
        let mut datagrams = Crafted::kernel([first, ack(3), ack(4), ack(5)]);
        assert_eq!(batch(&mut datagrams, &[2, 3, 4]), Ok(()));
        // The batch end's acknowledgement is left for the next batch to discard.
        assert_eq!(datagrams.queue.len(), 1);
        assert_eq!(batch(&mut Crafted::kernel([]), &[]), Ok(()));
    }

    #[test]
    fn a_batch_reports_its_earliest_refusal_and_then_reads_only_what_is_queued() {
        let mut first = ack(2);
        first.extend(error(5, libc::ENOENT, None));
        let earlier = error(3, libc::EEXIST, Some("earlier"));
        let mut datagrams = Crafted::kernel([first, earlier, error(4, libc::ENOENT, None)]);
        assert_eq!(
            batch(&mut datagrams, &[2, 3, 4, 5, 6]),
            Err(RequestError::Refused {
                sequence: 3,
                errno: Errno::EEXIST,
                kernel_message: Some("earlier".to_owned()),
            })
        );
        assert_eq!(datagrams.blocking, vec![true, false, false, false]);
    }

    #[test]
    fn a_refusal_of_a_message_not_awaited_still_refuses_the_batch() {
        // Without CAP_NET_ADMIN the kernel refuses the batch begin, which asked for no answer.
        let mut datagrams = Crafted::kernel([error(0, libc::EPERM, None)]);
        assert_eq!(
            batch(&mut datagrams, &[1, 2]),
            Err(RequestError::Refused {
                sequence: 0,
                errno: Errno::EPERM,
                kernel_message: None,
            })
        );
    }

    #[test]
    fn a_batch_names_its_earliest_unanswered_message() {
        let mut datagrams = Crafted::kernel([ack(2), ack(4)]);
        assert_eq!(
            batch(&mut datagrams, &[5, 4, 3, 2]),
            Err(RequestError::Unanswered {
                sequence: 3,
                timeout: TIMEOUT
            })
        );
    }

    #[test]
    fn discarding_reads_what_is_queued_without_waiting() {
        let mut datagrams = Crafted::new([
            Ok(Some(ack(1))),
            Err(Errno::ENOBUFS),
            Ok(Some(ack(2))),
            Ok(None),
        ]);
        discard_queued(&mut datagrams, TIMEOUT);
        assert!(datagrams.queue.is_empty());
        assert!(datagrams.blocking.iter().all(|&block| !block));
    }

    #[test]
    fn a_dump_hands_over_its_messages_in_order_until_done() {
        let mut first = data(7, NLM_F_MULTI, b"lo\0\0");
        first.extend(data(6, NLM_F_MULTI, b"stale"));
        first.extend(data(7, NLM_F_MULTI, b"eth0"));
        let mut last = data(7, NLM_F_MULTI, b"eth1");
        last.extend(done(7, 0, None));
        let mut datagrams = Crafted::kernel([first, last, data(7, NLM_F_MULTI, b"after")]);
        let (outcome, delivered) = dump(&mut datagrams, 7);
        assert_eq!(outcome, Ok(Dump::Complete));
        assert_eq!(
            delivered,
            vec![b"lo\0\0".to_vec(), b"eth0".to_vec(), b"eth1".to_vec()]
        );
        assert_eq!(datagrams.queue.len(), 1);
    }

    #[test]
    fn a_dump_refused_at_the_start_or_in_done_is_an_error() {
        let (refused, delivered) = dump(
            &mut Crafted::kernel([error(8, libc::EPERM, Some("not allowed"))]),
            8,
        );
        assert_eq!(
            refused,
            Err(RequestError::Refused {
                sequence: 8,
                errno: Errno::EPERM,
                kernel_message: Some("not allowed".to_owned()),
            })
        );
        assert!(delivered.is_empty());

        let mut cut_short = data(8, NLM_F_MULTI, b"one");
        cut_short.extend(done(8, libc::EMSGSIZE, Some("dump too big")));
        let (refused, delivered) = dump(&mut Crafted::kernel([cut_short]), 8);
        assert_eq!(
            refused,
            Err(RequestError::Refused {
                sequence: 8,
                errno: Errno::EMSGSIZE,
                kernel_message: Some("dump too big".to_owned()),
            })
        );
        assert_eq!(delivered, vec![b"one".to_vec()]);
    }

    #[test]
    fn a_dump_that_changed_meanwhile_is_inconsistent() {
        let mut datagram = data(9, NLM_F_MULTI | NLM_F_DUMP_INTR, b"old");
        datagram.extend(done(9, 0, None));
        assert_eq!(
            dump(&mut Crafted::kernel([datagram]), 9).0,
            Ok(Dump::Inconsistent)
        );
    }

    #[test]
    fn a_single_answer_ends_a_get_and_silence_ends_a_dump_unanswered() {
        let (outcome, delivered) = dump(&mut Crafted::kernel([data(3, 0, b"only")]), 3);
        assert_eq!(
            (outcome, delivered),
            (Ok(Dump::Complete), vec![b"only".to_vec()])
        );
        let (outcome, delivered) = dump(&mut Crafted::kernel([data(3, NLM_F_MULTI, b"")]), 3);
        assert_eq!(
            outcome,
            Err(RequestError::Unanswered {
                sequence: 3,
                timeout: TIMEOUT
            })
        );
        assert_eq!(delivered.len(), 1);
    }

    /// Every prefix and many corrupted variants of a datagram that holds a dump, acks, a refusal
    /// and DONE go through every reader without panic, and no reader hands over more messages than
    /// headers fit.
    #[test]
    fn truncated_and_corrupted_answers_never_panic() {
        let mut datagram = data(7, NLM_F_MULTI, &attribute(3, b"lo\0"));
        datagram.extend(ack(2));
        datagram.extend(error(3, libc::ENOENT, Some("No such table")));
        datagram.extend(data(7, NLM_F_MULTI | NLM_F_DUMP_INTR, &[0; 8]));
        datagram.extend(done(7, libc::EINTR, Some("interrupted")));
        for bytes in truncations_and_corruptions(&datagram, 20_000) {
            let fits = bytes.len() / MESSAGE_HEADER_BYTES;
            let _ = ack_of(&mut Crafted::kernel([bytes.clone()]), 2);
            let _ = batch(&mut Crafted::kernel([bytes.clone()]), &[2, 3, 4]);
            let (_, delivered) = dump(&mut Crafted::kernel([bytes]), 7);
            assert!(delivered.len() <= fits);
        }
    }

    fn netlink_route_socket() -> std::os::fd::OwnedFd {
        open_socket(SockProtocol::NetlinkRoute, TIMEOUT).unwrap_or_else(|error| panic!("{error}"))
    }

    /// rtnetlink acknowledges a NOOP that asks for it, without privilege and changing nothing.
    #[test]
    fn the_kernel_acknowledges_a_request_through_request_ack() {
        let socket = netlink_route_socket();
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let request = Request::new(libc::NLMSG_NOOP as u16, flags, 41).finish();
        let mut buffer = [0; 512];
        let wait = Wait::new(&mut buffer, TIMEOUT);
        assert_eq!(request_ack(&socket, &request, 41, wait), Ok(()));
    }

    /// Any process may dump its namespace's links, and every namespace has `lo`.
    #[test]
    fn the_kernel_dumps_the_links_of_this_namespace() {
        let socket = netlink_route_socket();
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        // struct ifinfomsg, all zero: every family, every link.
        let request = Request::new(libc::RTM_GETLINK, flags, 42)
            .family_header(&[0; 16])
            .finish();
        let mut buffer = vec![0; 64 << 10];
        let mut names = Vec::new();
        let outcome = request_dump(
            &socket,
            &request,
            42,
            Wait::new(&mut buffer, TIMEOUT),
            |message| {
                assert_eq!(message.kind, libc::RTM_NEWLINK);
                let attributes = Attributes::new(message.payload.get(16..).unwrap_or_default());
                names.extend(
                    attributes
                        .map_while(Result::ok)
                        .filter(|attribute| attribute.kind == libc::IFLA_IFNAME)
                        .map(|attribute| attribute.value.to_vec()),
                );
            },
        );
        assert!(
            matches!(outcome, Ok(Dump::Complete | Dump::Inconsistent)),
            "{outcome:?}"
        );
        assert!(names.contains(&b"lo\0".to_vec()), "{names:?}");
    }
}
