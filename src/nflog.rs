//! Reads packets that an nftables `log group N` rule hands to NFLOG, over a raw netfilter netlink
//! socket; it does not install the rule, decide anything about the packets, or use libnetfilter_log.
//!
//! nfsentry needs this for IPv4 packets whose header length field is below 5 words: the kernel
//! drops them in `ip_rcv` before any IP hook, so only a `netdev` ingress chain sees them, and a
//! netdev chain cannot queue, only log.
//!
//! Everything that arrives on the socket is treated as untrusted bytes: every length is checked
//! against the bytes actually present, messages that do not come from the kernel are dropped, and
//! anything not understood is skipped rather than reported as an error.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::SockProtocol;

use crate::netlink_wire::{
    self, kernel_says, Attribute, Attributes, Message, Messages, OpenError, Request, RequestError,
    Wait,
};

/// One datagram holds at most one packet of up to 64 KiB plus its attributes, or several small
/// packets batched up to the kernel's (default, page-sized) buffer; 128 KiB holds either.
const DATAGRAM_BUFFER_BYTES: usize = 128 << 10;

/// How long the kernel may hold logged packets to batch them into one datagram. Short enough that
/// a scanner is seen promptly; the kernel default is one second.
const FLUSH_TIMEOUT_HUNDREDTHS_OF_SECOND: u32 = 10;

/// How many packets the kernel batches before sending a datagram even if the timeout has not run
/// out, so a flood costs one receive per many packets.
const FLUSH_THRESHOLD_PACKETS: u32 = 64;

/// How long `bind` waits for the kernel to answer the configuration request.
const CONFIG_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Datagrams read in one `recv_batch` call at most, so a flood of logged packets cannot starve the
/// other file descriptors the daemon polls; poll() reports the socket readable again if more wait.
const MAX_DATAGRAMS_PER_BATCH: usize = 256;

/// Layout of the netfilter parts (include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_log.h);
/// the netlink framing around them is [`netlink_wire`]'s.
const NFGENMSG_BYTES: usize = 4;
const NFULNL_PACKET_HDR_BYTES: usize = 4;
const IFINDEX_BYTES: usize = 4;
const NFULNL_MSG_TYPE_PACKET: u16 =
    ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const NFULNL_MSG_TYPE_CONFIG: u16 =
    ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_CONFIG as u16;

/// The stage of talking to NFLOG that failed, so an error message says what was being attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NflogStep {
    OpenSocket,
    BindSocket,
    SizeReceiveBuffer,
    SetConfigTimeout,
    SendConfig,
    /// The kernel refused the configuration (see [`NflogError::Refused`]).
    ConfigureGroup,
    AwaitConfigAnswer,
    SetNonBlocking,
    Receive,
}

impl fmt::Display for NflogStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NflogStep::OpenSocket => "opening the netfilter netlink socket",
            NflogStep::BindSocket => "binding the netlink socket",
            NflogStep::SizeReceiveBuffer => "sizing the socket receive buffer",
            NflogStep::SetConfigTimeout => "setting the configuration answer timeout",
            NflogStep::SendConfig => "sending the log group configuration",
            NflogStep::ConfigureGroup => "binding the log group (kernel refused)",
            NflogStep::AwaitConfigAnswer => "waiting for the kernel's configuration answer",
            NflogStep::SetNonBlocking => "making the socket non-blocking",
            NflogStep::Receive => "receiving logged packets",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("nflog group {group}: {step} failed")]
    Io {
        group: u16,
        step: NflogStep,
        #[source]
        source: Errno,
    },
    /// The kernel answered the configuration with an error, for example EPERM when another
    /// socket already owns the group.
    #[error("nflog group {group}: the kernel refused to bind it{}", kernel_says(.kernel_message))]
    Refused {
        group: u16,
        /// The kernel's extended-ack text, when it gave one.
        kernel_message: Option<String>,
        #[source]
        errno: Errno,
    },
}

impl NflogError {
    fn io(group: u16, step: NflogStep, errno: Errno) -> NflogError {
        NflogError::Io {
            group,
            step,
            source: errno,
        }
    }

    fn opening(group: u16, error: OpenError) -> NflogError {
        let (step, errno) = match error {
            OpenError::Socket(errno) => (NflogStep::OpenSocket, errno),
            OpenError::Bind(errno) => (NflogStep::BindSocket, errno),
            OpenError::ReceiveTimeout(errno) => (NflogStep::SetConfigTimeout, errno),
        };
        NflogError::io(group, step, errno)
    }

    /// The stage that failed.
    pub fn step(&self) -> NflogStep {
        match self {
            NflogError::Io { step, .. } => *step,
            NflogError::Refused { .. } => NflogStep::ConfigureGroup,
        }
    }

    /// The errno behind the failure.
    pub fn errno(&self) -> Errno {
        match self {
            NflogError::Io { source: errno, .. } | NflogError::Refused { errno, .. } => *errno,
        }
    }
}

/// One packet handed over by an nftables `log group` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedPacket<'a> {
    /// The packet from its network header on, cut to the copy range; empty if the kernel sent no
    /// payload.
    pub payload: &'a [u8],
    /// The link-layer protocol (an EtherType such as 0x0800), in host byte order; 0 if absent.
    pub hw_protocol: u16,
    /// Index of the interface the packet came in on, if it came in at all.
    pub in_ifindex: Option<u32>,
}

/// A socket bound to one NFLOG group, copying packets up to a chosen length.
pub struct NflogSocket {
    fd: OwnedFd,
    group: u16,
    datagram: Vec<u8>,
    overruns: u64,
}

impl fmt::Debug for NflogSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NflogSocket")
            .field("fd", &self.fd)
            .field("group", &self.group)
            .field("overruns", &self.overruns)
            .finish_non_exhaustive()
    }
}

impl NflogSocket {
    /// Opens a netfilter netlink socket (non-blocking, close-on-exec) in the calling thread's
    /// network namespace and binds it to NFLOG `group`, copying up to `copy_range` bytes of each
    /// packet from the network header (0 means as much as the kernel allows).
    ///
    /// Fails with `ConfigureGroup` / EPERM if another socket already owns the group. Needs
    /// CAP_NET_ADMIN.
    pub fn bind(group: u16, copy_range: u32) -> Result<NflogSocket, NflogError> {
        let fail = |step| move |errno| NflogError::io(group, step, errno);
        // Blocking at first, so the configuration answer can be awaited with a timeout.
        let fd = netlink_wire::open_socket(SockProtocol::NetlinkNetFilter, CONFIG_ANSWER_TIMEOUT)
            .map_err(|error| NflogError::opening(group, error))?;
        // A burst of logged packets then waits in the socket instead of being dropped while
        // the daemon is busy elsewhere.
        netlink_wire::grow_receive_buffer(&fd, netlink_wire::RECEIVE_BUFFER_BYTES)
            .map_err(fail(NflogStep::SizeReceiveBuffer))?;

        let mut socket = NflogSocket {
            fd,
            group,
            datagram: vec![0; DATAGRAM_BUFFER_BYTES],
            overruns: 0,
        };
        // The bind and the copy mode go in one message: the kernel applies them together, so no
        // packet is ever delivered with the default copy range (the whole packet).
        const CONFIG_SEQUENCE: u32 = 1;
        let request = config_request(group, copy_range, CONFIG_SEQUENCE);
        // A packet logged in the instant between the bind and the acknowledgement can arrive
        // first; it is dropped, since the caller has no callback yet.
        let wait = Wait::new(&mut socket.datagram, CONFIG_ANSWER_TIMEOUT)
            .counting_overruns(&mut socket.overruns);
        netlink_wire::request_ack(&socket.fd, &request, CONFIG_SEQUENCE, wait)
            .map_err(|error| config_failure(group, error))?;

        let flags =
            fcntl(&socket.fd, FcntlArg::F_GETFL).map_err(fail(NflogStep::SetNonBlocking))?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&socket.fd, FcntlArg::F_SETFL(flags)).map_err(fail(NflogStep::SetNonBlocking))?;
        Ok(socket)
    }

    /// Drains the datagrams available now (at most `MAX_DATAGRAMS_PER_BATCH`), calling `on_packet`
    /// for each packet logged to this socket's group; returns how many were delivered. Nothing
    /// waiting is `Ok(0)`. A receive-buffer overrun (ENOBUFS: the kernel dropped packets) is
    /// counted in [`overruns`](Self::overruns), not returned as an error.
    pub fn recv_batch(
        &mut self,
        mut on_packet: impl FnMut(LoggedPacket<'_>),
    ) -> Result<usize, NflogError> {
        let mut delivered = 0;
        let mut datagrams_read = 0;
        while datagrams_read < MAX_DATAGRAMS_PER_BATCH {
            let datagram = match netlink_wire::receive_from_kernel(&self.fd, &mut self.datagram) {
                Ok(Some(datagram)) => datagram,
                Ok(None) => continue,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    self.overruns += 1;
                    continue;
                }
                Err(errno) => return Err(NflogError::io(self.group, NflogStep::Receive, errno)),
            };
            datagrams_read += 1;
            for (group, packet) in Messages::new(datagram).filter_map(logged_packet) {
                if group == self.group {
                    on_packet(packet);
                    delivered += 1;
                }
            }
        }
        Ok(delivered)
    }

    /// How many times the kernel reported that the receive buffer overflowed and logged packets
    /// were lost.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }
}

impl AsFd for NflogSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NflogSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Which step of `bind` the configuration request failed at. A configuration left unanswered
/// is reported as ETIMEDOUT.
fn config_failure(group: u16, error: RequestError) -> NflogError {
    match error {
        RequestError::Send(errno) => NflogError::io(group, NflogStep::SendConfig, errno),
        RequestError::Receive(errno) => NflogError::io(group, NflogStep::AwaitConfigAnswer, errno),
        RequestError::Unanswered { .. } => {
            NflogError::io(group, NflogStep::AwaitConfigAnswer, Errno::ETIMEDOUT)
        }
        RequestError::Refused {
            errno,
            kernel_message,
            ..
        } => NflogError::Refused {
            group,
            kernel_message,
            errno,
        },
    }
}

/// Builds the NFULNL_MSG_CONFIG request that binds `group`, sets the packet copy mode and range
/// and the batching limits, and asks for an acknowledgement.
fn config_request(group: u16, copy_range: u32, sequence: u32) -> Vec<u8> {
    // struct nfulnl_msg_config_mode is packed: __be32 copy_range, u8 copy_mode, u8 pad.
    let [range0, range1, range2, range3] = copy_range.to_be_bytes();
    let copy_mode = [
        range0,
        range1,
        range2,
        range3,
        libc::NFULNL_COPY_PACKET as u8,
        0,
    ];
    let [group_high, group_low] = group.to_be_bytes();
    let nfgenmsg = [
        libc::AF_UNSPEC as u8,
        libc::NFNETLINK_V0 as u8,
        group_high,
        group_low,
    ];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    Request::new(NFULNL_MSG_TYPE_CONFIG, flags, sequence)
        .family_header(&nfgenmsg)
        .attribute(
            libc::NFULA_CFG_CMD as u16,
            &[libc::NFULNL_CFG_CMD_BIND as u8],
        )
        .attribute(libc::NFULA_CFG_MODE as u16, &copy_mode)
        .attribute(
            libc::NFULA_CFG_TIMEOUT as u16,
            &FLUSH_TIMEOUT_HUNDREDTHS_OF_SECOND.to_be_bytes(),
        )
        .attribute(
            libc::NFULA_CFG_QTHRESH as u16,
            &FLUSH_THRESHOLD_PACKETS.to_be_bytes(),
        )
        .finish()
}

/// The group and packet of an NFULNL_MSG_PACKET message; `None` for any other message, and for a
/// packet message whose contents do not add up.
fn logged_packet(message: Message<'_>) -> Option<(u16, LoggedPacket<'_>)> {
    if message.kind != NFULNL_MSG_TYPE_PACKET {
        return None;
    }
    parse_packet_message(message.payload)
}

/// Parses the body of an NFULNL_MSG_PACKET message (nfgenmsg, then attributes). Returns `None`
/// if any attribute's length does not fit, or an attribute this reader uses has the wrong size:
/// a half-understood packet is not delivered.
fn parse_packet_message(body: &[u8]) -> Option<(u16, LoggedPacket<'_>)> {
    let nfgenmsg = body.get(..NFGENMSG_BYTES)?;
    let group = u16::from_be_bytes([*nfgenmsg.get(2)?, *nfgenmsg.get(3)?]);
    let mut packet = LoggedPacket {
        payload: &[],
        hw_protocol: 0,
        in_ifindex: None,
    };
    for attribute in Attributes::new(body.get(NFGENMSG_BYTES..)?) {
        let Attribute { kind, value: data } = attribute.ok()?;
        match i32::from(kind) {
            libc::NFULA_PACKET_HDR => {
                // struct nfulnl_msg_packet_hdr: __be16 hw_protocol, u8 hook, u8 pad.
                if data.len() != NFULNL_PACKET_HDR_BYTES {
                    return None;
                }
                packet.hw_protocol = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            }
            libc::NFULA_IFINDEX_INDEV => {
                let index: [u8; IFINDEX_BYTES] = data.try_into().ok()?;
                packet.in_ifindex = Some(u32::from_be_bytes(index));
            }
            libc::NFULA_PAYLOAD => packet.payload = data,
            _ => {}
        }
    }
    Some((group, packet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::fixtures::{attribute, is_within, truncations_and_corruptions};
    use crate::netlink_wire::{
        read_u16_ne, read_u32_ne, Answer, ATTRIBUTE_HEADER_BYTES, MESSAGE_HEADER_BYTES, NLMSG_DONE,
        NLMSG_ERROR,
    };

    const GROUP: u16 = 7;

    /// What `bind` makes of the kernel's answer to its configuration request.
    fn config_outcome(group: u16, answer: Answer) -> Result<(), NflogError> {
        answer
            .outcome(1)
            .map_err(|error| config_failure(group, error))
    }

    /// An IPv4/TCP header with IHL 4 from 192.0.2.1 to 192.0.2.2, as a scanner would send it.
    const IHL4_PACKET: [u8; 24] = [
        0x44, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0xf7, 0xcb, 0xc0, 0x00, 0x02,
        0x01, 0xc0, 0x00, 0x02, 0x02, 0x00, 0x14, 0x00, 0x50,
    ];

    /// A message from the kernel (port 0).
    fn netlink_message(message_type: u16, flags: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
        crate::netlink_wire::fixtures::message(message_type, flags, sequence, 0, body)
    }

    fn packet_body(group: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        // NFPROTO_NETDEV is what a netdev ingress chain logs with.
        let mut body = vec![5, 0];
        body.extend_from_slice(&group.to_be_bytes());
        for attribute in attributes {
            body.extend_from_slice(attribute);
        }
        body
    }

    /// The attributes the kernel sends for a packet logged on ingress, in its order.
    fn kernel_like_attributes(payload: &[u8], ifindex: u32) -> Vec<Vec<u8>> {
        vec![
            attribute(libc::NFULA_PACKET_HDR as u16, &[0x08, 0x00, 0x00, 0x00]),
            attribute(libc::NFULA_PREFIX as u16, b"\0"),
            attribute(libc::NFULA_IFINDEX_INDEV as u16, &ifindex.to_be_bytes()),
            attribute(libc::NFULA_HWTYPE as u16, &1u16.to_be_bytes()),
            attribute(libc::NFULA_PAYLOAD as u16, payload),
        ]
    }

    fn packet_message(group: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        netlink_message(
            NFULNL_MSG_TYPE_PACKET,
            0,
            0,
            &packet_body(group, attributes),
        )
    }

    fn error_message(sequence: u32, negative_errno: i32) -> Vec<u8> {
        let mut body = negative_errno.to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; MESSAGE_HEADER_BYTES]);
        netlink_message(NLMSG_ERROR, 0, sequence, &body)
    }

    /// What each message of `datagram` yields, in order: `Some` for a packet delivered.
    fn read_each(datagram: &[u8]) -> Vec<Option<(u16, LoggedPacket<'_>)>> {
        Messages::new(datagram).map(logged_packet).collect()
    }

    fn packets(datagram: &[u8]) -> Vec<(u16, LoggedPacket<'_>)> {
        read_each(datagram).into_iter().flatten().collect()
    }

    #[test]
    fn a_kernel_like_packet_message_yields_payload_protocol_and_interface() {
        let datagram = packet_message(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        assert_eq!(
            read_each(&datagram),
            vec![Some((
                GROUP,
                LoggedPacket {
                    payload: &IHL4_PACKET,
                    hw_protocol: 0x0800,
                    in_ifindex: Some(3),
                },
            ))]
        );
    }

    #[test]
    fn a_packet_without_optional_attributes_is_still_delivered() {
        let datagram = packet_message(GROUP, &[]);
        assert_eq!(
            packets(&datagram),
            vec![(
                GROUP,
                LoggedPacket {
                    payload: &[],
                    hw_protocol: 0,
                    in_ifindex: None
                }
            )]
        );
    }

    #[test]
    fn flag_bits_in_the_attribute_type_are_ignored() {
        let nested_payload = attribute(libc::NFULA_PAYLOAD as u16 | 0x8000, &IHL4_PACKET);
        let datagram = packet_message(GROUP, &[nested_payload]);
        let delivered = packets(&datagram);
        assert_eq!(delivered.len(), 1);
        assert_eq!(
            delivered.first().map(|(_, p)| p.payload),
            Some(&IHL4_PACKET[..])
        );
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_read_and_done_is_skipped() {
        let multi = libc::NLM_F_MULTI as u16;
        let first = packet_body(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        // An odd payload length makes the next message start after padding.
        let second = packet_body(GROUP, &kernel_like_attributes(&IHL4_PACKET[..21], 4));
        let mut datagram = netlink_message(NFULNL_MSG_TYPE_PACKET, multi, 0, &first);
        datagram.extend(netlink_message(NFULNL_MSG_TYPE_PACKET, multi, 0, &second));
        datagram.extend(netlink_message(NLMSG_DONE, multi, 0, &0u32.to_ne_bytes()));

        let messages = read_each(&datagram);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages.last(), Some(&None));
        let delivered = packets(&datagram);
        let interfaces: Vec<_> = delivered.iter().map(|(_, p)| p.in_ifindex).collect();
        assert_eq!(interfaces, vec![Some(3), Some(4)]);
        assert_eq!(
            delivered.get(1).map(|(_, p)| p.payload),
            Some(&IHL4_PACKET[..21])
        );
    }

    #[test]
    fn an_attribute_longer_than_its_message_drops_that_message_only() {
        let mut bad_attribute = attribute(libc::NFULA_PAYLOAD as u16, &IHL4_PACKET);
        // Claims 40 more bytes than the message holds.
        let claimed = (ATTRIBUTE_HEADER_BYTES + IHL4_PACKET.len() + 40) as u16;
        bad_attribute.splice(0..2, claimed.to_ne_bytes());
        let mut datagram = packet_message(GROUP, &[bad_attribute]);
        datagram.extend(packet_message(
            GROUP,
            &kernel_like_attributes(&IHL4_PACKET, 9),
        ));

        assert_eq!(read_each(&datagram).first(), Some(&None));
        let delivered = packets(&datagram);
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered.first().map(|(_, p)| p.in_ifindex), Some(Some(9)));
    }

    #[test]
    fn an_attribute_shorter_than_its_own_header_drops_the_message() {
        let mut bad_attribute = attribute(libc::NFULA_PREFIX as u16, b"abc\0");
        bad_attribute.splice(0..2, 2u16.to_ne_bytes());
        let mut attributes = kernel_like_attributes(&IHL4_PACKET, 3);
        attributes.insert(1, bad_attribute);
        assert!(packets(&packet_message(GROUP, &attributes)).is_empty());
    }

    #[test]
    fn a_truncated_attribute_header_drops_the_message() {
        let mut body = packet_body(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        body.extend_from_slice(&[8, 0]);
        let datagram = netlink_message(NFULNL_MSG_TYPE_PACKET, 0, 0, &body);
        assert!(packets(&datagram).is_empty());
    }

    #[test]
    fn known_attributes_of_the_wrong_size_drop_the_message() {
        let short_header = attribute(libc::NFULA_PACKET_HDR as u16, &[0x08]);
        let long_ifindex = attribute(libc::NFULA_IFINDEX_INDEV as u16, &[0, 0, 0, 0, 3]);
        assert!(packets(&packet_message(GROUP, &[short_header])).is_empty());
        assert!(packets(&packet_message(GROUP, &[long_ifindex])).is_empty());
    }

    #[test]
    fn a_body_too_short_for_nfgenmsg_is_skipped() {
        let datagram = netlink_message(NFULNL_MSG_TYPE_PACKET, 0, 0, &[5, 0]);
        assert_eq!(read_each(&datagram), vec![None]);
    }

    #[test]
    fn answers_are_not_packets() {
        let mut datagram = error_message(41, 0);
        datagram.extend(error_message(42, -libc::EPERM));
        assert_eq!(read_each(&datagram), vec![None, None]);
    }

    #[test]
    fn the_config_answer_keeps_the_kernel_errno_and_text() {
        assert!(config_outcome(GROUP, Answer::Acknowledged).is_ok());
        let refusal = Answer::Refused {
            errno: Errno::EPERM,
            kernel_message: Some("group in use".to_owned()),
        };
        let error = match config_outcome(GROUP, refusal) {
            Err(error) => error,
            Ok(()) => panic!("a refusal was taken for success"),
        };
        assert_eq!(error.step(), NflogStep::ConfigureGroup);
        assert_eq!(error.errno(), Errno::EPERM);
        assert_eq!(
            error.to_string(),
            "nflog group 7: the kernel refused to bind it (group in use)"
        );
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(cause, Some(Errno::EPERM.to_string()));
    }

    /// The answer is found by its sequence number among packets logged before it arrived.
    #[test]
    fn the_config_answer_is_found_behind_logged_packets() {
        let mut datagram = packet_message(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        datagram.extend(error_message(1, -libc::EBUSY));
        datagram.extend(error_message(2, -libc::EPERM));
        let outcome = netlink_wire::find_answer(&datagram, 2).map(|a| config_outcome(GROUP, a));
        assert_eq!(
            outcome.map(|o| o.map_err(|e| e.errno())),
            Some(Err(Errno::EPERM))
        );
    }

    #[test]
    fn the_group_comes_from_the_message_so_other_groups_can_be_filtered() {
        let datagram = packet_message(GROUP + 1, &kernel_like_attributes(&IHL4_PACKET, 3));
        let groups: Vec<_> = packets(&datagram).iter().map(|(g, _)| *g).collect();
        assert_eq!(groups, vec![GROUP + 1]);
    }

    #[test]
    fn other_netfilter_messages_are_skipped() {
        let queue_packet_type = (libc::NFNL_SUBSYS_QUEUE as u16) << 8;
        let body = packet_body(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        let datagram = netlink_message(queue_packet_type, 0, 0, &body);
        assert_eq!(read_each(&datagram), vec![None]);
    }

    /// Every prefix and many corrupted variants of a real-looking datagram parse without panic,
    /// and never yield a payload that is not a slice of the input.
    #[test]
    fn truncated_and_corrupted_datagrams_never_panic() {
        let mut datagram = packet_message(GROUP, &kernel_like_attributes(&IHL4_PACKET, 3));
        datagram.extend(error_message(1, -libc::EPERM));
        datagram.extend(packet_message(
            GROUP,
            &kernel_like_attributes(&IHL4_PACKET, 4),
        ));
        for bytes in truncations_and_corruptions(&datagram, 20_000) {
            let messages = read_each(&bytes);
            assert!(messages.len() <= bytes.len() / MESSAGE_HEADER_BYTES);
            for (_, packet) in messages.into_iter().flatten() {
                // A packet without a payload attribute gets an empty slice of its own.
                assert!(packet.payload.is_empty() || is_within(packet.payload, &bytes));
            }
        }
    }

    #[test]
    fn the_config_request_binds_the_group_with_packet_copy_and_asks_for_an_ack() {
        let request = config_request(0x0102, 128, 9);
        assert_eq!(read_u32_ne(&request, 0), Some(request.len() as u32));
        assert_eq!(read_u16_ne(&request, 4), Some(0x0401));
        let flags = read_u16_ne(&request, 6).unwrap_or_default();
        assert_eq!(
            flags,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            "flags {flags:#x}"
        );
        assert_eq!(read_u32_ne(&request, 8), Some(9));
        // nfgenmsg: AF_UNSPEC, version 0, the group in network byte order.
        assert_eq!(request.get(16..20), Some(&[0, 0, 0x01, 0x02][..]));

        let attributes: Vec<_> = Attributes::new(request.get(20..).unwrap_or_default())
            .map_while(Result::ok)
            .map(|attribute| (i32::from(attribute.kind), attribute.value.to_vec()))
            .collect();
        assert_eq!(
            attributes,
            vec![
                (libc::NFULA_CFG_CMD, vec![libc::NFULNL_CFG_CMD_BIND as u8]),
                (libc::NFULA_CFG_MODE, vec![0, 0, 0, 128, 2, 0]),
                (libc::NFULA_CFG_TIMEOUT, 10u32.to_be_bytes().to_vec()),
                (libc::NFULA_CFG_QTHRESH, 64u32.to_be_bytes().to_vec()),
            ]
        );
    }
}
