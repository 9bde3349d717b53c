//! Golden bytes and hostile input for the NFQUEUE messages. The golden requests and the kernel's
//! packet message were captured on this kernel (6.18) with `strace -e trace=sendto,recvfrom
//! -e write=3 -e read=3` around a reader built on the `nfq` crate, whose messages are
//! libnetfilter_queue's; they are in host byte order where netlink is, so little-endian here.

use super::*;
use crate::netlink_wire::fixtures::{attribute, is_within, message, truncations_and_corruptions};
use crate::netlink_wire::{Messages, NLMSG_ERROR};

const QUEUE: u16 = 7;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap_or_else(|e| panic!("{e}"));
            u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("{pair}: {e}"))
        })
        .collect()
}

/// A UDP datagram "a\n" from 127.0.0.1 to port 9 on lo, queued from LOCAL_IN, as the kernel sent
/// it: packet header (id 1, 0x0800, hook 1), in-interface 1, hardware address, payload. The last
/// message of a datagram comes without its padding.
const KERNEL_PACKET: &str = "5a000000 0003 0000 00000000 00000000 02000007
    0b000100 00000001 0800 01 00
    08000500 00000001
    10000900 0006 0000 0000000000000000
    22000a00 4500001e106c40004011 2c617f0000017f000001 e4530009000abc70 610a";

#[cfg(target_endian = "little")]
#[test]
fn configuration_requests_are_byte_for_byte_libnetfilter_queues() {
    // nfq numbers every request 0; ours count up, which only changes the sequence field.
    let cases = [
        (
            bind_request(QUEUE, 0),
            "1c000000 0203 0500 00000000 00000000 00000007 08000100 01000000",
        ),
        (
            copy_packet_request(QUEUE, 0xffff, 0),
            "20000000 0203 0500 00000000 00000000 00000007 09000200 0000ffff 02000000",
        ),
        (
            queue_length_request(QUEUE, 16384, 0),
            "1c000000 0203 0500 00000000 00000000 00000007 08000300 00004000",
        ),
        (
            fail_closed_request(QUEUE, 0),
            "24000000 0203 0500 00000000 00000000 00000007 08000500 00000000 08000400 00000001",
        ),
    ];
    for (ours, captured) in cases {
        assert_eq!(ours, hex(captured), "{captured}");
    }
    let numbered = bind_request(QUEUE, 0x0102_0304);
    assert_eq!(numbered.get(8..12), Some(&[4, 3, 2, 1][..]));
}

#[cfg(target_endian = "little")]
#[test]
fn verdicts_are_byte_for_byte_libnetfilter_queues() {
    let accept_1 = "20000000 0103 0100 00000000 00000000 00000007 0c000200 00000001 00000001";
    let drop_2 = "20000000 0103 0100 00000000 00000000 00000007 0c000200 00000000 00000002";
    assert_eq!(
        verdict_message(Reach::One, QUEUE, Verdict::Accept, 1).to_vec(),
        hex(accept_1)
    );
    assert_eq!(
        verdict_message(Reach::One, QUEUE, Verdict::Drop, 2).to_vec(),
        hex(drop_2)
    );
    // nfq_set_verdict_batch sends the same message as nfq_set_verdict, typed
    // NFQNL_MSG_VERDICT_BATCH (3): its id is the last one it reaches.
    let batch = "20000000 0303 0100 00000000 00000000 00000007 0c000200 00000001 00012345";
    assert_eq!(
        verdict_message(Reach::UpTo, QUEUE, Verdict::Accept, 0x12345).to_vec(),
        hex(batch)
    );
}

#[test]
fn a_verdict_reads_back_as_the_request_builder_would_write_it() {
    for (reach, verdict, id) in [
        (Reach::One, Verdict::Drop, 0),
        (Reach::UpTo, Verdict::Accept, u32::MAX),
    ] {
        let kind = if reach == Reach::One {
            VERDICT
        } else {
            VERDICT_BATCH
        };
        let mut header = netfilter_verdict(verdict).to_be_bytes().to_vec();
        header.extend_from_slice(&id.to_be_bytes());
        let header: [u8; VERDICT_HEADER_BYTES] =
            header.try_into().unwrap_or_else(|h| panic!("{h:?}"));
        let built = Request::new(kind, libc::NLM_F_REQUEST as u16, 0)
            .family_header(&nfgenmsg(0xabcd))
            .attribute(libc::NFQA_VERDICT_HDR as u16, &header)
            .finish();
        assert_eq!(verdict_message(reach, 0xabcd, verdict, id).to_vec(), built);
    }
}

#[test]
fn the_kernels_packet_message_yields_the_packet_and_its_metadata() {
    let datagram = hex(KERNEL_PACKET);
    let events: Vec<_> = Messages::new(&datagram).map(read_message).collect();
    let payload = datagram.get(60..).unwrap_or_default();
    assert_eq!(payload.len(), 30);
    assert_eq!(
        events,
        vec![Event::Packet(QueuedPacket {
            id: 1,
            payload,
            hw_protocol: 0x0800,
            hook: 1,
            in_ifindex: Some(1),
            out_ifindex: None,
            original_length: None,
        })]
    );
}

/// A packet message as the kernel builds one, from its attributes.
fn packet_message(attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, 0];
    body.extend_from_slice(&QUEUE.to_be_bytes());
    for attribute in attributes {
        body.extend_from_slice(attribute);
    }
    message(PACKET, 0, 0, 0, &body)
}

fn header(id: u32) -> Vec<u8> {
    let mut value = id.to_be_bytes().to_vec();
    value.extend_from_slice(&[0x86, 0xdd, 0]);
    attribute(libc::NFQA_PACKET_HDR as u16, &value)
}

fn ifindex(kind: libc::c_int, index: u32) -> Vec<u8> {
    attribute(kind as u16, &index.to_be_bytes())
}

const IPV6_PROBE: [u8; 12] = [0x60, 0, 0, 0, 0, 8, 6, 64, 0x20, 0x01, 0x0d, 0xb8];

fn payload(bytes: &[u8]) -> Vec<u8> {
    attribute(libc::NFQA_PAYLOAD as u16, bytes)
}

fn events(datagram: &[u8]) -> Vec<Event<'_>> {
    Messages::new(datagram).map(read_message).collect()
}

#[test]
fn out_interface_cut_length_and_unknown_attributes_are_read() {
    let datagram = packet_message(&[
        header(9),
        ifindex(libc::NFQA_IFINDEX_INDEV, 2),
        ifindex(libc::NFQA_IFINDEX_OUTDEV, 3),
        attribute(libc::NFQA_CAP_LEN as u16, &1500u32.to_be_bytes()),
        attribute(libc::NFQA_UID as u16, &0u32.to_be_bytes()),
        attribute(0x3ff0, b"from a newer kernel"),
        payload(&IPV6_PROBE),
    ]);
    let [Event::Packet(packet)] = events(&datagram)[..] else {
        panic!("{:?}", events(&datagram));
    };
    assert_eq!(
        (packet.id, packet.hw_protocol, packet.hook, packet.payload),
        (9, 0x86dd, 0, &IPV6_PROBE[..])
    );
    assert_eq!(
        (
            packet.in_ifindex,
            packet.out_ifindex,
            packet.original_length
        ),
        (Some(2), Some(3), Some(1500))
    );
}

#[test]
fn a_packet_whose_contents_do_not_add_up_is_unreadable_but_keeps_its_id() {
    let mut overlong = payload(&IPV6_PROBE);
    overlong.splice(0..2, 200u16.to_ne_bytes());
    let cases = [
        (
            "no payload",
            vec![header(4), ifindex(libc::NFQA_IFINDEX_INDEV, 2)],
        ),
        (
            "ifindex of 5 bytes",
            vec![
                header(4),
                attribute(libc::NFQA_IFINDEX_INDEV as u16, &[0, 0, 0, 0, 2]),
                payload(&IPV6_PROBE),
            ],
        ),
        (
            "cut length of 2 bytes",
            vec![
                header(4),
                attribute(libc::NFQA_CAP_LEN as u16, &[5, 0xdc]),
                payload(&IPV6_PROBE),
            ],
        ),
        (
            "attribute longer than the message",
            vec![header(4), overlong],
        ),
    ];
    for (what, attributes) in cases {
        let datagram = packet_message(&attributes);
        assert_eq!(
            events(&datagram),
            vec![Event::Unreadable { id: 4 }],
            "{what}"
        );
    }
}

#[test]
fn a_packet_without_a_readable_id_is_unidentified() {
    let short_header = attribute(libc::NFQA_PACKET_HDR as u16, &[0, 0, 0, 4, 8, 0]);
    let cases = [
        vec![payload(&IPV6_PROBE)],
        vec![short_header, payload(&IPV6_PROBE)],
        vec![],
    ];
    for attributes in cases {
        let datagram = packet_message(&attributes);
        assert_eq!(
            events(&datagram),
            vec![Event::Unidentified],
            "{attributes:?}"
        );
    }
    let no_nfgenmsg = message(PACKET, 0, 0, 0, &[2, 0]);
    assert_eq!(events(&no_nfgenmsg), vec![Event::Unidentified]);
}

#[test]
fn refusals_are_reported_and_other_messages_are_not_packets() {
    let error = |errno: i32| {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; MESSAGE_HEADER_BYTES]);
        message(NLMSG_ERROR, libc::NLM_F_CAPPED as u16, 0, 0, &body)
    };
    let mut datagram = error(libc::ENOENT);
    datagram.extend(error(libc::EINVAL));
    datagram.extend(error(0));
    datagram.extend(message(VERDICT, 0, 0, 0, &[0; 16]));
    datagram.extend(message(PACKET & 0x00ff | 0x0400, 0, 0, 0, &[0; 16]));
    assert_eq!(
        events(&datagram),
        vec![
            Event::Refused {
                errno: Errno::ENOENT
            },
            Event::Refused {
                errno: Errno::EINVAL
            },
            Event::Other,
            Event::Other,
            Event::Other,
        ]
    );
}

#[test]
fn a_cut_datagram_gives_up_its_id_when_the_header_arrived() {
    let whole = hex(KERNEL_PACKET);
    for cut in 0..whole.len() {
        let part = whole.get(..cut).unwrap_or_default();
        let expected = if cut < 4 + 2 {
            Event::Other
        } else if cut < 20 + 4 + 7 {
            Event::Unidentified
        } else {
            Event::Unreadable { id: 1 }
        };
        assert_eq!(read_cut_datagram(part), expected, "cut at {cut}");
    }
    let error = message(NLMSG_ERROR, 0, 0, 0, &[0; 20]);
    assert_eq!(read_cut_datagram(&error), Event::Other);
}

/// Every prefix and many corrupted variants of a datagram holding packets and answers parse
/// without panic, yield no more events than headers fit, and never point outside the input.
#[test]
fn truncated_and_corrupted_datagrams_never_panic() {
    let mut datagram = hex(KERNEL_PACKET);
    datagram.resize(align4_len(datagram.len()), 0);
    datagram.extend(packet_message(&[
        header(2),
        ifindex(libc::NFQA_IFINDEX_INDEV, 2),
        ifindex(libc::NFQA_IFINDEX_OUTDEV, 3),
        attribute(libc::NFQA_CAP_LEN as u16, &1500u32.to_be_bytes()),
        payload(&IPV6_PROBE),
    ]));
    let mut refusal = (-libc::ENOENT).to_ne_bytes().to_vec();
    refusal.extend_from_slice(&[0; MESSAGE_HEADER_BYTES]);
    datagram.extend(message(NLMSG_ERROR, 0, 0, 0, &refusal));
    for bytes in truncations_and_corruptions(&datagram, 30_000) {
        let read = events(&bytes);
        assert!(read.len() <= bytes.len() / MESSAGE_HEADER_BYTES);
        for event in read {
            if let Event::Packet(packet) = event {
                assert!(is_within(packet.payload, &bytes));
            }
        }
        let _ = read_cut_datagram(&bytes);
    }
}

fn align4_len(length: usize) -> usize {
    crate::netlink_wire::align4(length)
}
