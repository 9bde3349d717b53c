//! The netlink layer that nfsentry's netlink sockets share (nf_tables, NFLOG, rtnetlink):
//! splitting a datagram into messages and a message into attributes, building requests, reading
//! the kernel's acknowledgement; opening a socket that hears only the kernel (in [`socket`]); and
//! sending a request and waiting for its answer, a batch's answers or a dump (in [`exchange`]). It
//! knows nothing of any one family's messages: family headers such as `nfgenmsg` or `rtmsg`, the
//! meaning of attribute values, and what a request is for stay with their users.
//!
//! Parsing treats every byte as untrusted, even on a socket that hears only the kernel: every
//! length is checked against the bytes actually present, nothing here can panic on any input,
//! and a length that cannot be right ends the walk, because where the next item starts is then
//! unknown.
//!
//! Layout from include/uapi/linux/netlink.h. Header fields are in host byte order.

use std::iter::FusedIterator;

use nix::errno::Errno;

mod exchange;
mod socket;

pub use exchange::{request_ack, request_batch, request_dump, Dump, RequestError, Wait};
pub use socket::{
    enable_netlink_option, grow_receive_buffer, join_group, open_socket, receive_from_kernel,
    set_receive_timeout, OpenError, RECEIVE_BUFFER_BYTES,
};

/// `struct nlmsghdr`: u32 length (header included), u16 type, u16 flags, u32 sequence, u32 port.
pub const MESSAGE_HEADER_BYTES: usize = 16;
/// `struct nlattr`: u16 length (header included), u16 type.
pub const ATTRIBUTE_HEADER_BYTES: usize = 4;
/// The top two bits of an attribute type are the nested and byte-order flags, not the type.
pub const ATTRIBUTE_TYPE_MASK: u16 = 0x3fff;
/// The largest attribute value whose length still fits the u16 length field.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = u16::MAX as usize - ATTRIBUTE_HEADER_BYTES;

pub const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;

/// A message that is one of several answering the same request (a dump's).
pub const NLM_F_MULTI: u16 = libc::NLM_F_MULTI as u16;
/// A dumped message or NLMSG_DONE: what was dumped changed while the kernel was dumping it.
pub const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
/// NLMSG_ERROR flag: the echoed request is its header alone.
pub const NLM_F_CAPPED: u16 = libc::NLM_F_CAPPED as u16;
/// NLMSG_ERROR flag: extended-ack attributes follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
/// `enum nlmsgerr_attrs` in netlink.h (the kernel's error text); not exported by libc.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// `struct nlmsgerr` starts with the (negative) errno, 0 for an acknowledgement.
const NLMSGERR_ERROR_BYTES: usize = 4;

/// Rounds a length up to netlink's 4-byte alignment. Saturates instead of wrapping, so a huge
/// untrusted length can only point past the data, never back into it.
pub fn align4(length: usize) -> usize {
    length.saturating_add(3) & !3
}

pub(crate) fn read_u16_ne(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(field.try_into().ok()?))
}

pub(crate) fn read_u32_ne(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(field.try_into().ok()?))
}

/// One netlink message; `payload` is everything after the header, without trailing padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub sequence: u32,
    /// The sender's port id; 0 is the kernel.
    pub port: u32,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// What the kernel said about a request, if this is an NLMSG_ERROR message whose
    /// `struct nlmsgerr` is present at least as far as its errno.
    pub fn answer(&self) -> Option<Answer> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        let error = i32::from_ne_bytes(self.payload.get(..NLMSGERR_ERROR_BYTES)?.try_into().ok()?);
        if error == 0 {
            return Some(Answer::Acknowledged);
        }
        let kernel_message = if self.flags & NLM_F_ACK_TLVS != 0 {
            self.extended_ack_attributes()
                .and_then(extended_ack_message)
        } else {
            None
        };
        Some(Answer::Refused {
            errno: Errno::from_raw(error.saturating_neg()),
            kernel_message,
        })
    }

    /// The extended-ack attributes behind the echoed request, which is its header alone when the
    /// kernel flagged the echo as capped, else the whole request.
    fn extended_ack_attributes(&self) -> Option<&[u8]> {
        let echoed = self.payload.get(NLMSGERR_ERROR_BYTES..)?;
        let echoed_length = if self.flags & NLM_F_CAPPED != 0 {
            MESSAGE_HEADER_BYTES
        } else {
            usize::try_from(read_u32_ne(echoed, 0)?).ok()?
        };
        echoed.get(align4(echoed_length)..)
    }
}

/// The kernel's text from NLMSGERR_ATTR_MSG, cut at its NUL and stripped of control characters
/// so it can go into a log line as it is.
fn extended_ack_message(attributes: &[u8]) -> Option<String> {
    let text = Attributes::new(attributes)
        .map_while(Result::ok)
        .find(|attribute| attribute.kind == NLMSGERR_ATTR_MSG)?
        .value
        .split(|&byte| byte == 0)
        .next()?;
    let printable: String = String::from_utf8_lossy(text)
        .chars()
        .filter(|character| !character.is_control())
        .collect();
    (!printable.is_empty()).then_some(printable)
}

/// What the kernel said about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Acknowledged,
    Refused {
        errno: Errno,
        /// The kernel's extended-ack text, e.g. "Nexthop has invalid gateway", when the socket
        /// asked for it (NETLINK_EXT_ACK) and the kernel had one.
        kernel_message: Option<String>,
    },
}

/// ` (TEXT)` to end an error line with the kernel's explanation of a refusal, or nothing when
/// it gave none.
pub fn kernel_says(kernel_message: &Option<String>) -> String {
    kernel_message
        .as_ref()
        .map_or_else(String::new, |text| format!(" ({text})"))
}

/// The answer to request `sequence` in one datagram from the kernel, if it holds one. Anything
/// malformed, truncated or about another request is skipped, never trusted.
pub fn find_answer(datagram: &[u8], sequence: u32) -> Option<Answer> {
    Messages::new(datagram)
        .find(|message| message.kind == NLMSG_ERROR && message.sequence == sequence)?
        .answer()
}

/// Walks the messages of one datagram. Ends at the first header whose length cannot be right
/// (shorter than a header, or longer than what is left), dropping that message and the rest.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    remaining: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages {
            remaining: datagram,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let bytes = std::mem::take(&mut self.remaining);
        let declared_length = usize::try_from(read_u32_ne(bytes, 0)?).ok()?;
        if declared_length < MESSAGE_HEADER_BYTES {
            return None;
        }
        let message = Message {
            kind: read_u16_ne(bytes, 4)?,
            flags: read_u16_ne(bytes, 6)?,
            sequence: read_u32_ne(bytes, 8)?,
            port: read_u32_ne(bytes, 12)?,
            payload: bytes.get(MESSAGE_HEADER_BYTES..declared_length)?,
        };
        // The last message of a datagram may lack its padding.
        let next_start = align4(declared_length).min(bytes.len());
        self.remaining = bytes.get(next_start..).unwrap_or_default();
        Some(message)
    }
}

impl FusedIterator for Messages<'_> {}

/// One attribute; `kind` has the nested and byte-order flag bits masked off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// Why an attribute walk stopped before the end of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedAttribute {
    #[error("{available} bytes left, too few for an attribute header")]
    TruncatedHeader { available: usize },
    #[error("attribute declares {declared} bytes, but at least 4 and at most {available} fit")]
    LengthOutOfBounds { declared: usize, available: usize },
}

/// Walks attributes packed back to back (a message payload after its family header, or a
/// nested attribute's value). A malformed attribute is yielded as an error and ends the walk,
/// so a caller decides whether what came before it is still worth using.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    remaining: &'a [u8],
}

impl<'a> Attributes<'a> {
    pub fn new(bytes: &'a [u8]) -> Attributes<'a> {
        Attributes { remaining: bytes }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<Attribute<'a>, MalformedAttribute>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = std::mem::take(&mut self.remaining);
        if bytes.is_empty() {
            return None;
        }
        let (Some(declared_length), Some(kind)) = (read_u16_ne(bytes, 0), read_u16_ne(bytes, 2))
        else {
            return Some(Err(MalformedAttribute::TruncatedHeader {
                available: bytes.len(),
            }));
        };
        let declared_length = usize::from(declared_length);
        let value = declared_length
            .checked_sub(ATTRIBUTE_HEADER_BYTES)
            .and_then(|_| bytes.get(ATTRIBUTE_HEADER_BYTES..declared_length));
        let Some(value) = value else {
            return Some(Err(MalformedAttribute::LengthOutOfBounds {
                declared: declared_length,
                available: bytes.len(),
            }));
        };
        // The last attribute of a message may lack its padding.
        let next_start = align4(declared_length).min(bytes.len());
        self.remaining = bytes.get(next_start..).unwrap_or_default();
        Some(Ok(Attribute {
            kind: kind & ATTRIBUTE_TYPE_MASK,
            value,
        }))
    }
}

impl FusedIterator for Attributes<'_> {}

/// Builds one request: the netlink header, an optional family header, then attributes, each
/// padded to the alignment the kernel expects; the length is filled in by [`finish`](Self::finish).
///
/// Attribute values are arrays so that a value too long for the u16 length field is a compile
/// error rather than a malformed request at run time.
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn new(kind: u16, flags: u16, sequence: u32) -> Request {
        let mut bytes = Vec::with_capacity(64);
        // The length is patched in by `finish`.
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        // The port is left 0: the kernel replies to the socket the request came from anyway.
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        Request { bytes }
    }

    /// Appends the family's fixed header (`nfgenmsg`, `rtmsg`, ...), padded to alignment.
    pub fn family_header(mut self, header: &[u8]) -> Request {
        self.bytes.extend_from_slice(header);
        self.bytes.resize(align4(self.bytes.len()), 0);
        self
    }

    pub fn attribute<const VALUE_BYTES: usize>(
        mut self,
        kind: u16,
        value: &[u8; VALUE_BYTES],
    ) -> Request {
        const {
            assert!(
                VALUE_BYTES <= MAX_ATTRIBUTE_VALUE_BYTES,
                "attribute value too long for netlink's u16 length field"
            )
        };
        put_attribute(&mut self.bytes, kind, value);
        self
    }

    /// An attribute whose value is known only at run time, such as a table name; `None` when
    /// it is too long for the u16 length field, so no malformed request is ever built.
    pub fn attribute_bytes(mut self, kind: u16, value: &[u8]) -> Option<Request> {
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return None;
        }
        put_attribute(&mut self.bytes, kind, value);
        Some(self)
    }

    /// The complete request, its length field set.
    pub fn finish(mut self) -> Vec<u8> {
        // Only an absurd number of attributes could pass 4 GiB; the kernel would refuse the
        // mismatched length rather than read past the request.
        let length = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        if let Some(length_field) = self.bytes.get_mut(..4) {
            length_field.copy_from_slice(&length.to_ne_bytes());
        }
        self.bytes
    }
}

/// Appends one padded attribute. Callers keep `value` within [`MAX_ATTRIBUTE_VALUE_BYTES`].
fn put_attribute(bytes: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let declared_length = u16::try_from(ATTRIBUTE_HEADER_BYTES + value.len()).unwrap_or(u16::MAX);
    bytes.extend_from_slice(&declared_length.to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(value);
    bytes.resize(align4(bytes.len()), 0);
}

/// Kernel-like messages built from arbitrary bytes, for the tests of this module and its users.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// One attribute with any value (at most [`MAX_ATTRIBUTE_VALUE_BYTES`]), padded.
    pub(crate) fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        put_attribute(&mut bytes, kind, value);
        bytes
    }

    /// One message framed as the kernel does: the declared length covers header and payload,
    /// and padding to the next message follows.
    pub(crate) fn message(
        kind: u16,
        flags: u16,
        sequence: u32,
        port: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let declared_length =
            u32::try_from(MESSAGE_HEADER_BYTES + payload.len()).unwrap_or(u32::MAX);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&declared_length.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&port.to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes.resize(align4(bytes.len()), 0);
        bytes
    }

    /// Every prefix of `original`, then `rounds` copies with one to four bytes overwritten.
    /// xorshift makes the corruption deterministic without a random-number dependency.
    pub(crate) fn truncations_and_corruptions(
        original: &[u8],
        rounds: usize,
    ) -> impl Iterator<Item = Vec<u8>> + '_ {
        let mut state: u32 = 0x9e37_79b9;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let corruptions = (0..rounds).map(move |_| {
            let mut corrupted = original.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = next() as usize % corrupted.len().max(1);
                if let Some(byte) = corrupted.get_mut(at) {
                    *byte = next() as u8;
                }
            }
            corrupted
        });
        (0..=original.len())
            .filter_map(|cut| original.get(..cut).map(<[u8]>::to_vec))
            .chain(corruptions)
    }

    /// Whether `part` lies inside `whole`'s memory: parsed slices must never point elsewhere.
    pub(crate) fn is_within(part: &[u8], whole: &[u8]) -> bool {
        let whole_range = whole.as_ptr_range();
        let part_range = part.as_ptr_range();
        whole_range.start <= part_range.start && part_range.end <= whole_range.end
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{attribute, is_within, message, truncations_and_corruptions};
    use super::*;

    const KIND: u16 = 0x0401;

    fn error_payload(error: i32, echoed: &[u8], attributes: &[u8]) -> Vec<u8> {
        let mut payload = error.to_ne_bytes().to_vec();
        payload.extend_from_slice(echoed);
        payload.extend_from_slice(attributes);
        payload
    }

    #[test]
    fn align4_rounds_up_and_saturates() {
        let aligned: Vec<_> = (0..=8).map(align4).collect();
        assert_eq!(aligned, vec![0, 4, 4, 4, 4, 8, 8, 8, 8]);
        assert!(align4(usize::MAX) >= usize::MAX - 3);
    }

    #[test]
    fn messages_carry_every_header_field_and_skip_padding() {
        let mut datagram = message(KIND, 0x0002, 7, 0, &[1, 2, 3]);
        datagram.extend(message(NLMSG_DONE, 0x0002, 8, 4242, &[]));
        let messages: Vec<_> = Messages::new(&datagram).collect();
        assert_eq!(
            messages,
            vec![
                Message {
                    kind: KIND,
                    flags: 0x0002,
                    sequence: 7,
                    port: 0,
                    payload: &[1, 2, 3],
                },
                Message {
                    kind: NLMSG_DONE,
                    flags: 0x0002,
                    sequence: 8,
                    port: 4242,
                    payload: &[],
                },
            ]
        );
    }

    #[test]
    fn an_unpadded_last_message_is_still_read() {
        let mut datagram = message(KIND, 0, 1, 0, &[9]);
        datagram.truncate(MESSAGE_HEADER_BYTES + 1);
        let payloads: Vec<_> = Messages::new(&datagram).map(|m| m.payload).collect();
        assert_eq!(payloads, vec![&[9u8][..]]);
    }

    #[test]
    fn an_impossible_length_ends_the_walk_there() {
        let good = message(KIND, 0, 1, 0, &[0; 8]);
        for bogus_length in [0u32, 1, 15, u32::MAX, 1000] {
            let mut bogus = message(KIND, 0, 2, 0, &[0; 8]);
            bogus.splice(0..4, bogus_length.to_ne_bytes());
            let mut datagram = good.clone();
            datagram.extend(&bogus);
            datagram.extend(&good);
            let sequences: Vec<_> = Messages::new(&datagram).map(|m| m.sequence).collect();
            assert_eq!(sequences, vec![1], "length {bogus_length}");
        }
    }

    #[test]
    fn a_cut_datagram_yields_only_the_whole_messages_before_the_cut() {
        let first = message(KIND, 0, 1, 0, &[0; 5]);
        let mut datagram = first.clone();
        datagram.extend(message(KIND, 0, 2, 0, &[0; 12]));
        for cut in 0..=datagram.len() {
            let whole_messages = if cut == datagram.len() {
                2
            } else if cut >= MESSAGE_HEADER_BYTES + 5 {
                1
            } else {
                0
            };
            assert_eq!(
                Messages::new(&datagram[..cut]).count(),
                whole_messages,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn attributes_mask_flag_bits_and_skip_padding() {
        let nested_flag = 0x8000;
        let byte_order_flag = 0x4000;
        let mut bytes = attribute(3 | nested_flag, &[1, 2, 3, 4, 5]);
        bytes.extend(attribute(4 | byte_order_flag, &[]));
        bytes.extend(attribute(5, &[6]));
        let attributes: Vec<_> = Attributes::new(&bytes).collect();
        assert_eq!(
            attributes,
            vec![
                Ok(Attribute {
                    kind: 3,
                    value: &[1, 2, 3, 4, 5]
                }),
                Ok(Attribute {
                    kind: 4,
                    value: &[]
                }),
                Ok(Attribute {
                    kind: 5,
                    value: &[6]
                }),
            ]
        );
    }

    #[test]
    fn an_unpadded_last_attribute_is_still_read() {
        let mut bytes = attribute(1, &[0xaa; 4]);
        bytes.extend(attribute(2, &[0xbb]));
        bytes.truncate(bytes.len() - 3);
        let kinds: Vec<_> = Attributes::new(&bytes)
            .map(|attribute| attribute.map(|a| (a.kind, a.value.len())))
            .collect();
        assert_eq!(kinds, vec![Ok((1, 4)), Ok((2, 1))]);
    }

    #[test]
    fn a_malformed_attribute_is_reported_once_and_ends_the_walk() {
        let good = attribute(1, &[0; 4]);
        let header = |declared_length: u16| {
            let mut bytes = declared_length.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&9u16.to_ne_bytes());
            bytes
        };
        let shorter_than_its_header = header(2);
        let mut longer_than_what_is_left = header(40);
        longer_than_what_is_left.extend_from_slice(&[1, 2, 3, 4]);
        let mut cut_header = header(8);
        cut_header.truncate(3);
        let cases = [
            (
                shorter_than_its_header,
                MalformedAttribute::LengthOutOfBounds {
                    declared: 2,
                    available: 4 + good.len(),
                },
            ),
            (
                longer_than_what_is_left,
                MalformedAttribute::LengthOutOfBounds {
                    declared: 40,
                    available: 8 + good.len(),
                },
            ),
            (
                cut_header,
                MalformedAttribute::TruncatedHeader { available: 3 },
            ),
        ];
        for (bad, error) in cases {
            let mut bytes = good.clone();
            bytes.extend(&bad);
            // Behind a truncated header there is nothing more; behind a bad length there is.
            if !matches!(error, MalformedAttribute::TruncatedHeader { .. }) {
                bytes.extend(&good);
            }
            let walked: Vec<_> = Attributes::new(&bytes).collect();
            assert_eq!(
                walked,
                vec![
                    Ok(Attribute {
                        kind: 1,
                        value: &[0; 4]
                    }),
                    Err(error)
                ],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_request_reads_back_as_one_message_with_its_attributes() {
        let request = Request::new(KIND, 0x0005, 9)
            .family_header(&[0, 0, 0x01])
            .attribute(1, &[7])
            .attribute(2, &0x0102_0304u32.to_be_bytes())
            .attribute(3, &[0; 6])
            .finish();
        assert_eq!(request.len() % 4, 0);
        assert_eq!(read_u32_ne(&request, 0), Some(request.len() as u32));
        let messages: Vec<_> = Messages::new(&request).collect();
        let [message] = messages.as_slice() else {
            panic!("expected one message, got {messages:?}");
        };
        assert_eq!(
            (message.kind, message.flags, message.sequence, message.port),
            (KIND, 0x0005, 9, 0)
        );
        // The 3-byte family header is padded to 4 before the first attribute.
        assert_eq!(message.payload.get(..4), Some(&[0, 0, 1, 0][..]));
        let attributes: Vec<_> = Attributes::new(message.payload.get(4..).unwrap_or_default())
            .map(|attribute| attribute.map(|a| (a.kind, a.value.to_vec())))
            .collect();
        assert_eq!(
            attributes,
            vec![
                Ok((1, vec![7])),
                Ok((2, vec![1, 2, 3, 4])),
                Ok((3, vec![0; 6])),
            ]
        );
    }

    #[test]
    fn run_time_values_are_refused_only_past_the_length_field() {
        let longest = vec![0xdd; MAX_ATTRIBUTE_VALUE_BYTES];
        assert!(Request::new(KIND, 0, 1)
            .attribute_bytes(1, &[longest.as_slice(), &[0]].concat())
            .is_none());
        let request = Request::new(KIND, 0, 1)
            .attribute_bytes(1, b"nfsentry\0")
            .and_then(|request| request.attribute_bytes(2, &longest))
            .map(Request::finish)
            .unwrap_or_default();
        let payload = request.get(MESSAGE_HEADER_BYTES..).unwrap_or_default();
        let values: Vec<_> = Attributes::new(payload)
            .map(|attribute| attribute.map(|a| a.value.len()))
            .collect();
        assert_eq!(values, vec![Ok(9), Ok(MAX_ATTRIBUTE_VALUE_BYTES)]);
    }

    #[test]
    fn the_longest_value_fits_the_length_field_exactly() {
        let request = Request::new(KIND, 0, 1)
            .attribute(1, &[0xcc; MAX_ATTRIBUTE_VALUE_BYTES])
            .finish();
        assert_eq!(read_u16_ne(&request, MESSAGE_HEADER_BYTES), Some(u16::MAX));
        let payload = request.get(MESSAGE_HEADER_BYTES..).unwrap_or_default();
        let lengths: Vec<_> = Attributes::new(payload)
            .map(|attribute| attribute.map(|a| a.value.len()))
            .collect();
        assert_eq!(lengths, vec![Ok(MAX_ATTRIBUTE_VALUE_BYTES)]);
    }

    #[test]
    fn error_messages_answer_and_other_messages_do_not() {
        let ack = message(NLMSG_ERROR, 0, 1, 0, &error_payload(0, &[0; 16], &[]));
        let refusal = message(
            NLMSG_ERROR,
            0,
            2,
            0,
            &error_payload(-libc::EPERM, &[0; 16], &[]),
        );
        let too_short = message(NLMSG_ERROR, 0, 3, 0, &[0, 0]);
        let not_an_error = message(KIND, 0, 4, 0, &error_payload(0, &[], &[]));
        let answers: Vec<_> = [ack, refusal, too_short, not_an_error]
            .iter()
            .flat_map(|datagram| Messages::new(datagram).map(|m| m.answer()))
            .collect();
        assert_eq!(
            answers,
            vec![
                Some(Answer::Acknowledged),
                Some(Answer::Refused {
                    errno: Errno::EPERM,
                    kernel_message: None
                }),
                None,
                None,
            ]
        );
    }

    #[test]
    fn kernel_text_is_read_only_when_flagged_and_is_made_printable() {
        let mut text = attribute(NLMSGERR_ATTR_MSG, b"bad\tgate\x1bway\0junk");
        text.splice(0..0, attribute(2, &[0; 4]));
        let payload = error_payload(-libc::EINVAL, &[0; 16], &text);
        let flagged = message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 1, 0, &payload);
        let unflagged = message(NLMSG_ERROR, NLM_F_CAPPED, 1, 0, &payload);
        let kernel_text = |datagram: &[u8]| match find_answer(datagram, 1) {
            Some(Answer::Refused { kernel_message, .. }) => kernel_message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(kernel_text(&flagged), Some("badgateway".to_string()));
        assert_eq!(kernel_text(&unflagged), None);
    }

    #[test]
    fn find_answer_stops_at_a_broken_header_before_the_answer() {
        let answer = message(NLMSG_ERROR, 0, 5, 0, &error_payload(0, &[0; 16], &[]));
        let mut broken = message(KIND, 0, 4, 0, &[0; 4]);
        broken.splice(0..4, 3u32.to_ne_bytes());
        let mut datagram = message(KIND, 0, 5, 0, &[]);
        datagram.extend(&answer);
        assert_eq!(find_answer(&datagram, 5), Some(Answer::Acknowledged));
        broken.extend(&answer);
        assert_eq!(find_answer(&broken, 5), None);
    }

    /// Every prefix and many corrupted variants of a datagram with nested framing parse without
    /// panic, never yield more messages than headers fit, and never point outside the input.
    #[test]
    fn truncated_and_corrupted_datagrams_never_panic() {
        let mut attributes = attribute(1, b"Nexthop has invalid gateway\0");
        attributes.extend(attribute(2, &[0; 3]));
        let mut datagram = message(KIND, 0, 1, 0, &attributes);
        datagram.extend(message(
            NLMSG_ERROR,
            NLM_F_ACK_TLVS,
            2,
            0,
            &error_payload(-libc::ENETUNREACH, &datagram.clone(), &attributes),
        ));
        datagram.extend(message(NLMSG_DONE, 0, 3, 0, &[0; 4]));

        for bytes in truncations_and_corruptions(&datagram, 20_000) {
            let messages: Vec<_> = Messages::new(&bytes).collect();
            assert!(messages.len() <= bytes.len() / MESSAGE_HEADER_BYTES);
            for message in messages {
                assert!(is_within(message.payload, &bytes));
                let _ = message.answer();
                for attribute in Attributes::new(message.payload).map_while(Result::ok) {
                    assert!(is_within(attribute.value, message.payload));
                }
            }
            let _ = find_answer(&bytes, 2);
        }
    }
}
