//! Checks the NFLOG reader against a real kernel: a netdev ingress rule in a throwaway network
//! namespace logs IPv4 packets with a header length below 5 words, and the reader must hand them
//! over with their source address; it does not test the daemon that consumes them.
//!
//! Needs root, `ip`, `nft` and scapy under /usr/bin/python3; skipped (with a message) when not
//! root.

mod support;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use nfsentry::nflog::{NflogError, NflogSocket, NflogStep};
use support::Netns;

const LOG_GROUP: u16 = 7;
/// Shorter than the 40-byte test packets, so the payload length shows the range was applied.
const COPY_RANGE_BYTES: u32 = 24;
const SENDER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const TARGET_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const TABLE: &str = "nflog_test";
/// Longer than the flush timeout `NflogSocket::bind` asks the kernel for (100 ms).
const SETTLE_AFTER_LAST_PACKET: Duration = Duration::from_millis(400);
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);

/// A sender and a target namespace joined by a veth pair; both namespaces (and with them the
/// veth pair and the nft table) are deleted on drop, also when an assertion fails.
struct TwoNamespaces {
    sender: Netns,
    target: Netns,
    sender_link: String,
    target_link: String,
}

impl TwoNamespaces {
    fn create() -> TwoNamespaces {
        let id = std::process::id();
        let namespaces = TwoNamespaces {
            sender: Netns::new("nflog", "s"),
            target: Netns::new("nflog", "t"),
            // Interface names are limited to 15 bytes.
            sender_link: format!("nflog{id}s"),
            target_link: format!("nflog{id}t"),
        };
        let (sender, target) = (&namespaces.sender, &namespaces.target);
        let (sender_link, target_link) = (&namespaces.sender_link, &namespaces.target_link);
        sender.add_veth(sender_link, target, target_link);
        for (namespace, link, address) in [
            (sender, sender_link, SENDER_ADDRESS),
            (target, target_link, TARGET_ADDRESS),
        ] {
            namespace.configure_link(link, &[&format!("{address}/24")]);
        }
        namespaces
    }

    /// The target link's line of `ip -o link show`: "INDEX: NAME: <FLAGS> … link/ether MAC …".
    fn target_link_line(&self) -> String {
        self.target
            .ip(&["-o", "link", "show", "dev", &self.target_link])
    }

    /// Field `after` of `ip -o link show` for the target link, e.g. its MAC after "link/ether".
    fn target_link_field(&self, after: &str) -> String {
        let line = self.target_link_line();
        let mut words = line.split_whitespace();
        words.find(|word| *word == after);
        words
            .next()
            .unwrap_or_else(|| panic!("no {after} in {line}"))
            .to_owned()
    }

    fn target_ifindex(&self) -> u32 {
        let line = self.target_link_line();
        line.split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {line}"))
    }

    fn in_target<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        self.target.enter(work)
    }
}

#[derive(Debug)]
struct ReceivedPacket {
    payload: Vec<u8>,
    hw_protocol: u16,
    in_ifindex: Option<u32>,
}

impl ReceivedPacket {
    fn header_length_words(&self) -> Option<u8> {
        self.payload.first().map(|byte| byte & 0x0f)
    }

    fn source(&self) -> Option<Ipv4Addr> {
        let octets: [u8; 4] = self.payload.get(12..16)?.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    }
}

fn receive_all(socket: &mut NflogSocket, into: &mut Vec<ReceivedPacket>) -> usize {
    socket
        .recv_batch(|packet| {
            into.push(ReceivedPacket {
                payload: packet.payload.to_vec(),
                hw_protocol: packet.hw_protocol,
                in_ifindex: packet.in_ifindex,
            })
        })
        .unwrap_or_else(|error| panic!("recv_batch: {error:?}"))
}

fn descriptor_flag_set(socket: &NflogSocket, command: libc::c_int, flag: libc::c_int) -> bool {
    // SAFETY: F_GETFL / F_GETFD only read the flags of a descriptor the socket keeps open.
    let flags = unsafe { libc::fcntl(socket.as_raw_fd(), command) };
    assert!(flags >= 0, "fcntl: {}", std::io::Error::last_os_error());
    flags & flag != 0
}

#[test]
fn short_ipv4_headers_logged_on_ingress_reach_the_reader_and_normal_packets_do_not() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let namespaces = TwoNamespaces::create();
    let ruleset = format!(
        "table netdev {TABLE} {{
            chain ingress {{
                type filter hook ingress device \"{link}\" priority -500; policy accept;
                ip hdrlength < 5 log group {LOG_GROUP}
                ip hdrlength 5 ip protocol tcp counter
            }}
        }}",
        link = namespaces.target_link
    );
    namespaces.target.nft_load(&ruleset);

    let mut socket = namespaces
        .in_target(|| NflogSocket::bind(LOG_GROUP, COPY_RANGE_BYTES))
        .unwrap_or_else(|error| panic!("bind: {error:?}"));
    assert!(descriptor_flag_set(
        &socket,
        libc::F_GETFL,
        libc::O_NONBLOCK
    ));
    assert!(descriptor_flag_set(
        &socket,
        libc::F_GETFD,
        libc::FD_CLOEXEC
    ));

    // A group has one reader: a second bind must be refused, not silently share or steal it.
    let second = namespaces.in_target(|| NflogSocket::bind(LOG_GROUP, COPY_RANGE_BYTES));
    let error = match second {
        Err(error) => error,
        Ok(_) => panic!("a second socket bound the same log group"),
    };
    assert_eq!(error.step(), NflogStep::ConfigureGroup, "{error:?}");
    assert!(
        matches!(error, NflogError::Refused { .. }),
        "not the kernel's refusal: {error:?}"
    );
    assert_eq!(error.errno(), nix::errno::Errno::EPERM, "{error:?}");

    let mut received = Vec::new();
    assert_eq!(receive_all(&mut socket, &mut received), 0);

    // Explicit Ethernet frames: no ARP needed, and the IHL-4 header is exactly what scapy builds
    // (it writes the field as given and still emits a 20-byte header).
    let mac = namespaces.target_link_field("link/ether");
    let script = format!(
        "from scapy.all import *\n\
         frame = lambda **ip: Ether(dst='{mac}')/IP(src='{SENDER_ADDRESS}', dst='{TARGET_ADDRESS}', **ip)/TCP(dport=80)\n\
         short = frame(ihl=4)\n\
         assert bytes(short[IP])[0] == 0x44, bytes(short[IP]).hex()\n\
         sendp([frame(), short, frame()], iface='{link}', verbose=False)\n",
        link = namespaces.sender_link
    );
    namespaces.sender.exec(&["/usr/bin/python3", "-c", &script]);

    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while !received
        .iter()
        .any(|packet| packet.header_length_words() == Some(4))
    {
        assert!(
            Instant::now() < deadline,
            "no IHL-4 packet within {DELIVERY_DEADLINE:?}; got {received:?}"
        );
        thread::sleep(Duration::from_millis(20));
        receive_all(&mut socket, &mut received);
    }
    thread::sleep(SETTLE_AFTER_LAST_PACKET);
    receive_all(&mut socket, &mut received);

    assert_eq!(
        received.len(),
        1,
        "only the short header is logged: {received:?}"
    );
    let packet = received.first().expect("one packet");
    assert_eq!(packet.header_length_words(), Some(4));
    assert_eq!(packet.source(), Some(SENDER_ADDRESS));
    assert_eq!(packet.hw_protocol, 0x0800);
    assert_eq!(packet.in_ifindex, Some(namespaces.target_ifindex()));
    assert_eq!(packet.payload.len(), COPY_RANGE_BYTES as usize);
    assert_eq!(socket.overruns(), 0);

    // The normal packets did cross the same chain: their absence above is the rule's doing.
    let chain = namespaces
        .target
        .exec(&["nft", "list", "chain", "netdev", TABLE, "ingress"]);
    assert!(
        chain.contains("counter packets 2 "),
        "the two normal packets should have passed the chain:\n{chain}"
    );
}
