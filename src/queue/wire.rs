//! NFQUEUE's messages as bytes: the configuration requests that bind a queue, reading a queued
//! packet and its metadata out of the kernel's message, and writing verdicts — one packet's, or a
//! whole run of packets' at once (NFQNL_MSG_VERDICT_BATCH). It does no I/O; the socket is
//! [`super`]'s.
//!
//! What arrives is read like everything on [`netlink_wire`]: as untrusted bytes, every length
//! checked, nothing can panic. A packet message that does not add up is still answered (dropped)
//! whenever its packet id can be read, because an unanswered packet holds its queue slot.
//!
//! Layout from include/uapi/linux/netfilter/nfnetlink_queue.h and nfnetlink.h. The netlink header
//! is in host byte order; everything NFQUEUE adds is big-endian.

use nix::errno::Errno;

use crate::config::Verdict;
use crate::netlink_wire::{
    self, Answer, Attribute, Attributes, Message, Request, ATTRIBUTE_HEADER_BYTES,
    MESSAGE_HEADER_BYTES,
};

const fn queue_message_type(kind: libc::c_int) -> u16 {
    ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | kind as u16
}

/// A queued packet, from the kernel.
pub const PACKET: u16 = queue_message_type(libc::NFQNL_MSG_PACKET);
/// The verdict for one packet.
pub const VERDICT: u16 = queue_message_type(libc::NFQNL_MSG_VERDICT);
/// Binding and configuring a queue.
pub const CONFIG: u16 = queue_message_type(libc::NFQNL_MSG_CONFIG);
/// One verdict for every packet still queued whose id is not after the given one.
pub const VERDICT_BATCH: u16 = queue_message_type(libc::NFQNL_MSG_VERDICT_BATCH);

/// `struct nfgenmsg`: u8 family, u8 version, __be16 resource id (the queue number).
const NFGENMSG_BYTES: usize = 4;
/// `struct nfqnl_msg_packet_hdr` (packed): __be32 packet id, __be16 hw protocol, u8 hook.
const PACKET_HEADER_BYTES: usize = 7;
const IFINDEX_BYTES: usize = 4;
const CAPTURED_LENGTH_BYTES: usize = 4;
/// `struct nfqnl_msg_verdict_hdr`: __be32 verdict, __be32 packet id.
const VERDICT_HEADER_BYTES: usize = 8;
/// A whole verdict message: netlink header, nfgenmsg, and the verdict header attribute.
pub const VERDICT_MESSAGE_BYTES: usize =
    MESSAGE_HEADER_BYTES + NFGENMSG_BYTES + ATTRIBUTE_HEADER_BYTES + VERDICT_HEADER_BYTES;

/// The kernel's largest copy range, `NFQNL_MAX_COPY_RANGE`: a 16-bit attribute length less its
/// header. Asking for more gets this.
pub const MAX_COPY_RANGE_BYTES: u32 = 0xffff - ATTRIBUTE_HEADER_BYTES as u32;

/// The nfgenmsg of every message about `queue`.
fn nfgenmsg(queue: u16) -> [u8; NFGENMSG_BYTES] {
    let [high, low] = queue.to_be_bytes();
    [libc::AF_UNSPEC as u8, libc::NFNETLINK_V0 as u8, high, low]
}

fn config_request(queue: u16, sequence: u32) -> Request {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    Request::new(CONFIG, flags, sequence).family_header(&nfgenmsg(queue))
}

/// Binds `queue` to the sending socket (NFQNL_CFG_CMD_BIND). The kernel refuses with EPERM when
/// another socket owns the queue, and with EBUSY when this one does already.
pub fn bind_request(queue: u16, sequence: u32) -> Vec<u8> {
    // struct nfqnl_msg_config_cmd: u8 command, u8 pad, __be16 pf (unused by BIND).
    let command = [libc::NFQNL_CFG_CMD_BIND as u8, 0, 0, 0];
    config_request(queue, sequence)
        .attribute(libc::NFQA_CFG_CMD as u16, &command)
        .finish()
}

/// Asks for the packet itself, up to `range` bytes of it from the network header on
/// (NFQNL_COPY_PACKET).
pub fn copy_packet_request(queue: u16, range: u32, sequence: u32) -> Vec<u8> {
    // struct nfqnl_msg_config_params is packed: __be32 copy range, u8 copy mode.
    let [r0, r1, r2, r3] = range.to_be_bytes();
    let params = [r0, r1, r2, r3, libc::NFQNL_COPY_PACKET as u8];
    config_request(queue, sequence)
        .attribute(libc::NFQA_CFG_PARAMS as u16, &params)
        .finish()
}

/// Sets how many packets the kernel holds for the queue, waiting for verdicts, before it treats
/// new ones as the queue's flags say.
pub fn queue_length_request(queue: u16, packets: u32, sequence: u32) -> Vec<u8> {
    config_request(queue, sequence)
        .attribute(libc::NFQA_CFG_QUEUE_MAXLEN as u16, &packets.to_be_bytes())
        .finish()
}

/// Sets the queue flags in `mask` to their values in `flags` and leaves the others alone; the
/// flags go before the mask, as libnetfilter_queue sends them.
pub fn flags_request(queue: u16, flags: u32, mask: u32, sequence: u32) -> Vec<u8> {
    config_request(queue, sequence)
        .attribute(libc::NFQA_CFG_FLAGS as u16, &flags.to_be_bytes())
        .attribute(libc::NFQA_CFG_MASK as u16, &mask.to_be_bytes())
        .finish()
}

/// Fail closed: the flags request that clears NFQA_CFG_F_FAIL_OPEN, so that what the queue cannot
/// hold is dropped rather than let through.
pub fn fail_closed_request(queue: u16, sequence: u32) -> Vec<u8> {
    let fail_open = libc::NFQA_CFG_F_FAIL_OPEN as u32;
    flags_request(queue, 0, fail_open, sequence)
}

/// The sequence number of wake-up requests ([`wake_request`]): their acknowledgements are
/// wake-ups, never answers to anything else (configuration uses small numbers, verdicts none).
pub const WAKE_SEQUENCE: u32 = u32::MAX;

/// A request that does nothing but make the kernel acknowledge it on the sending socket
/// (NLMSG_NOOP, which the kernel skips, with NLM_F_ACK): the acknowledgement wakes a reader
/// sleeping in a receive on that socket.
pub fn wake_request() -> Vec<u8> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    Request::new(libc::NLMSG_NOOP as u16, flags, WAKE_SEQUENCE).finish()
}

/// Whether a verdict message is about one packet or every queued packet up to an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// NFQNL_MSG_VERDICT: the packet with this id only.
    One,
    /// NFQNL_MSG_VERDICT_BATCH: every packet still queued whose id is not after this one.
    UpTo,
}

fn netfilter_verdict(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Drop => libc::NF_DROP as u32,
        Verdict::Accept => libc::NF_ACCEPT as u32,
    }
}

/// One verdict message, byte for byte what libnetfilter_queue's `nfq_set_verdict` and
/// `nfq_set_verdict_batch` send: no acknowledgement is asked for (the kernel still reports a
/// failure), and the sequence number is 0 since nothing waits for an answer by it.
pub fn verdict_message(
    reach: Reach,
    queue: u16,
    verdict: Verdict,
    id: u32,
) -> [u8; VERDICT_MESSAGE_BYTES] {
    let kind = match reach {
        Reach::One => VERDICT,
        Reach::UpTo => VERDICT_BATCH,
    };
    // Destructured rather than indexed: the layout is fixed and nothing here can panic.
    let [l0, l1, l2, l3] = (VERDICT_MESSAGE_BYTES as u32).to_ne_bytes();
    let [k0, k1] = kind.to_ne_bytes();
    let [f0, f1] = (libc::NLM_F_REQUEST as u16).to_ne_bytes();
    let [family, version, queue_high, queue_low] = nfgenmsg(queue);
    let [a0, a1] = ((ATTRIBUTE_HEADER_BYTES + VERDICT_HEADER_BYTES) as u16).to_ne_bytes();
    let [t0, t1] = (libc::NFQA_VERDICT_HDR as u16).to_ne_bytes();
    let [v0, v1, v2, v3] = netfilter_verdict(verdict).to_be_bytes();
    let [i0, i1, i2, i3] = id.to_be_bytes();
    [
        l0, l1, l2, l3, k0, k1, f0, f1, // length, type, flags
        0, 0, 0, 0, 0, 0, 0, 0, // sequence, port
        family, version, queue_high, queue_low, // nfgenmsg
        a0, a1, t0, t1, // NFQA_VERDICT_HDR
        v0, v1, v2, v3, i0, i1, i2, i3, // verdict, packet id
    ]
}

/// A queued packet as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    /// The kernel's id for the packet, which its verdict names.
    pub id: u32,
    /// The packet from its network header on, as far as the copy range reaches.
    pub payload: &'a [u8],
    /// The link-layer protocol (an EtherType such as 0x0800 or 0x86dd), in host byte order.
    pub hw_protocol: u16,
    /// The netfilter hook the packet was queued from (0 = prerouting).
    pub hook: u8,
    /// The interface the packet came in on; `None` for packets this host sends.
    pub in_ifindex: Option<u32>,
    /// The interface the packet goes out of, when known at the hook (not in prerouting).
    pub out_ifindex: Option<u32>,
    /// The packet's whole length when the copy range cut it; `None` when `payload` is all of it.
    pub original_length: Option<u32>,
}

/// What one message from the queue socket means to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A packet waiting for its verdict.
    Packet(QueuedPacket<'a>),
    /// A packet message whose contents do not add up (a bad attribute, no payload, cut short);
    /// only its id could be read. It is answered without being looked at.
    Unreadable { id: u32 },
    /// A packet message without a readable id. No single verdict can name it; only a batch
    /// verdict that reaches past it can answer it.
    Unidentified,
    /// The kernel refused a verdict: ENOENT for a packet it no longer holds (it was let go, or a
    /// batch verdict reached no packet), anything else for a message it could not take.
    Refused { errno: Errno },
    /// The kernel's answer to a [`wake_request`]: another thread wants the reader's attention.
    WakeUp,
    /// Anything else (an acknowledgement, another family's message): nothing to do.
    Other,
}

/// What `message` means to the reader.
pub fn read_message(message: Message<'_>) -> Event<'_> {
    if message.kind == PACKET {
        return read_packet(message.payload);
    }
    match message.answer() {
        // Whatever the kernel made of it, the answer to a wake-up only wakes.
        Some(_) if message.sequence == WAKE_SEQUENCE => Event::WakeUp,
        Some(Answer::Refused { errno, .. }) => Event::Refused { errno },
        Some(Answer::Acknowledged) | None => Event::Other,
    }
}

/// Reads the body of an NFQNL_MSG_PACKET message: nfgenmsg, then attributes.
fn read_packet(body: &[u8]) -> Event<'_> {
    let Some(attributes) = body.get(NFGENMSG_BYTES..) else {
        return Event::Unidentified;
    };
    let mut header: Option<(u32, u16, u8)> = None;
    let mut payload: Option<&[u8]> = None;
    let mut in_ifindex = None;
    let mut out_ifindex = None;
    let mut original_length = None;
    let mut sound = true;
    for attribute in Attributes::new(attributes) {
        let Ok(Attribute { kind, value }) = attribute else {
            sound = false;
            break;
        };
        let understood = match i32::from(kind) {
            libc::NFQA_PACKET_HDR => packet_header(value).map(|read| header = Some(read)),
            libc::NFQA_PAYLOAD => {
                payload = Some(value);
                Some(())
            }
            libc::NFQA_IFINDEX_INDEV => be_u32(value, IFINDEX_BYTES).map(|i| in_ifindex = Some(i)),
            libc::NFQA_IFINDEX_OUTDEV => {
                be_u32(value, IFINDEX_BYTES).map(|i| out_ifindex = Some(i))
            }
            libc::NFQA_CAP_LEN => {
                be_u32(value, CAPTURED_LENGTH_BYTES).map(|length| original_length = Some(length))
            }
            _ => Some(()),
        };
        sound &= understood.is_some();
    }
    let Some((id, hw_protocol, hook)) = header else {
        return Event::Unidentified;
    };
    match (sound, payload) {
        (true, Some(payload)) => Event::Packet(QueuedPacket {
            id,
            payload,
            hw_protocol,
            hook,
            in_ifindex,
            out_ifindex,
            original_length,
        }),
        _ => Event::Unreadable { id },
    }
}

/// What a datagram that did not fit the receive buffer still says: the packet id, if the part
/// that arrived holds the packet header (the kernel puts it first), so the packet can be dropped.
pub fn read_cut_datagram(cut: &[u8]) -> Event<'_> {
    let kind = netlink_wire::read_u16_ne(cut, 4);
    if kind != Some(PACKET) {
        return Event::Other;
    }
    let attributes = cut
        .get(MESSAGE_HEADER_BYTES + NFGENMSG_BYTES..)
        .unwrap_or_default();
    let id = Attributes::new(attributes)
        .map_while(Result::ok)
        .find(|attribute| i32::from(attribute.kind) == libc::NFQA_PACKET_HDR)
        .and_then(|attribute| packet_header(attribute.value));
    match id {
        Some((id, _, _)) => Event::Unreadable { id },
        None => Event::Unidentified,
    }
}

fn packet_header(value: &[u8]) -> Option<(u32, u16, u8)> {
    if value.len() != PACKET_HEADER_BYTES {
        return None;
    }
    let id = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let hw_protocol = u16::from_be_bytes(value.get(4..6)?.try_into().ok()?);
    Some((id, hw_protocol, *value.get(6)?))
}

fn be_u32(value: &[u8], expected_bytes: usize) -> Option<u32> {
    if value.len() != expected_bytes {
        return None;
    }
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests;
