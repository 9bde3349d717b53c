//! Checks the NFQUEUE reader against a real kernel queue in throwaway network namespaces: packets
//! sent over a veth pair reach the reader with their metadata, its verdicts take effect (an
//! accepted connection completes, a dropped one does not; a batch answers a whole burst, with the
//! drops inside it kept), a reader that stalls while packets pile up loses none, and packets
//! that come one at a time are read one per call while a pile is read many at a time. It does not
//! test the daemon that consumes the reader.
//!
//! Needs root, `ip`, and `nft` (or `iptables-nft` where the kernel lacks nft_queue); skipped, with
//! a message, when not root.

mod support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nfsentry::config::Verdict;
use nfsentry::queue::{PacketQueue, QueueError, QueuedPacket, Waiting};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use support::Netns;

const QUEUE: u16 = 4321;
const SENDER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const TARGET_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const ACCEPTED_TCP_PORT: u16 = 7001;
const DROPPED_TCP_PORT: u16 = 7002;
const UDP_PORT: u16 = 7003;
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
/// What a reader stalled for 20 ms at 200k packets/s finds waiting.
const STALL_PACKETS: usize = 4000;
const STALL: Duration = Duration::from_millis(20);

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A sender and a target namespace joined by a veth pair, the target queueing TCP to the two
/// test ports and UDP to the third to [`QUEUE`]. Dropping it deletes both namespaces.
struct Lab {
    sender: Netns,
    target: Netns,
    target_link: String,
}

impl Lab {
    fn create(tag: &str) -> Lab {
        let id = std::process::id();
        let lab = Lab {
            sender: Netns::new("nfqueue", &format!("{tag}s")),
            target: Netns::new("nfqueue", &format!("{tag}t")),
            target_link: format!("nfq{id}{tag}t"),
        };
        let sender_link = format!("nfq{id}{tag}s");
        lab.sender
            .add_veth(&sender_link, &lab.target, &lab.target_link);
        lab.sender
            .configure_link(&sender_link, &[&format!("{SENDER_ADDRESS}/24")]);
        lab.target
            .configure_link(&lab.target_link, &[&format!("{TARGET_ADDRESS}/24")]);
        lab.queue_test_ports();
        lab
    }

    /// The native `queue` statement where the kernel has it, else the xt NFQUEUE target through
    /// nft's compat layer, as nfsentry itself falls back.
    fn queue_test_ports(&self) {
        let native = format!(
            "table inet nfqueue_test {{
                chain prerouting {{
                    type filter hook prerouting priority 0; policy accept;
                    tcp dport {{ {ACCEPTED_TCP_PORT}, {DROPPED_TCP_PORT} }} queue num {QUEUE}
                    udp dport {UDP_PORT} queue num {QUEUE}
                }}
            }}"
        );
        let file = support::ScratchDir::new("nfqueue", "rules");
        let path = file.join("rules.nft");
        std::fs::write(&path, native).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let loaded = self
            .target
            .exec_output(&["nft", "-f", &path.to_string_lossy()]);
        if loaded.status.success() {
            return;
        }
        let queue = QUEUE.to_string();
        let ports = format!("{ACCEPTED_TCP_PORT},{DROPPED_TCP_PORT}");
        let udp_port = UDP_PORT.to_string();
        for (protocol, ports) in [("tcp", ports.as_str()), ("udp", udp_port.as_str())] {
            self.target.exec(&[
                "iptables-nft",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                protocol,
                "-m",
                "multiport",
                "--dports",
                ports,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
            ]);
        }
    }

    fn target_ifindex(&self) -> u32 {
        let line = self
            .target
            .ip(&["-o", "link", "show", "dev", &self.target_link]);
        line.split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {line}"))
    }

    fn open_queue(&self) -> PacketQueue {
        self.target
            .enter(|| PacketQueue::open(QUEUE))
            .unwrap_or_else(|e| panic!("open: {e:?}"))
    }

    /// The kernel's line for the queue: (waiting, dropped for a full queue, dropped for a full
    /// socket, last packet id).
    fn queue_counters(&self) -> (u64, u64, u64, u64) {
        let table = self
            .target
            .exec(&["cat", "/proc/net/netfilter/nfnetlink_queue"]);
        let fields: Vec<u64> = table
            .lines()
            .map(|line| {
                line.split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .find(|fields| fields.first() == Some(&u64::from(QUEUE)))
            .unwrap_or_else(|| panic!("queue {QUEUE} not in\n{table}"));
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .unwrap_or_else(|| panic!("{fields:?}"))
        };
        (field(2), field(5), field(6), field(7))
    }

    /// A UDP socket in the sender namespace, connected to the target's UDP test port.
    fn udp_sender(&self) -> UdpSocket {
        self.sender.enter(|| {
            let socket = UdpSocket::bind((SENDER_ADDRESS, 0)).unwrap_or_else(|e| panic!("{e}"));
            socket
                .connect((TARGET_ADDRESS, UDP_PORT))
                .unwrap_or_else(|e| panic!("{e}"));
            socket
        })
    }

    fn wait_until_queued(&self, packets: u64) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let (waiting, ..) = self.queue_counters();
            if waiting >= packets {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {waiting} of {packets} packets queued within {DELIVERY_DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The destination port and, for UDP, the u32 sequence number the test puts first in the payload.
fn port_and_number(ipv4: &[u8]) -> Option<(u8, u16, Option<u32>)> {
    let header = usize::from(ipv4.first()? & 0x0f) * 4;
    let protocol = *ipv4.get(9)?;
    let port = u16::from_be_bytes(ipv4.get(header + 2..header + 4)?.try_into().ok()?);
    let number = ipv4
        .get(header + 8..header + 12)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_be_bytes);
    Some((protocol, port, number.filter(|_| protocol == 17)))
}

/// Of every ten UDP datagrams, the 4th to 6th (a run of drops) and the 9th (a lone drop) are
/// dropped; the rest accepted.
fn udp_verdict(number: u32) -> Verdict {
    if matches!(number % 10, 3..=5 | 8) {
        Verdict::Drop
    } else {
        Verdict::Accept
    }
}

fn wait_readable(queue: &PacketQueue, timeout: Duration) {
    let mut fds = [PollFd::new(queue.fd(), PollFlags::POLLIN)];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = poll(&mut fds, PollTimeout::from(millis));
}

#[test]
fn verdicts_take_effect_singly_and_in_batches() {
    if !running_as_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let lab = Lab::create("v");
    let mut queue = lab.open_queue();
    assert_eq!(queue.number(), QUEUE);
    // A queue has one reader: a second bind must be refused, not share or steal it.
    match lab.target.enter(|| PacketQueue::open(QUEUE)) {
        Err(QueueError::Bind { source, .. }) => {
            assert_eq!(source.errno(), Some(nix::errno::Errno::EPERM), "{source}")
        }
        other => panic!("a second socket bound the same queue: {other:?}"),
    }
    assert_eq!(queue.drain(1024, |_| Verdict::Drop).ok(), Some(0));

    // A burst of UDP piles up while nobody reads; one drain then answers all of it.
    let receiver = lab.target.enter(|| {
        let socket = UdpSocket::bind((TARGET_ADDRESS, UDP_PORT)).unwrap_or_else(|e| panic!("{e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap_or_else(|e| panic!("{e}"));
        socket
    });
    let burst: u32 = 200;
    let sender = lab.udp_sender();
    for number in 0..burst {
        sender
            .send(&number.to_be_bytes())
            .unwrap_or_else(|e| panic!("send {number}: {e}"));
    }
    lab.wait_until_queued(u64::from(burst));
    let ifindex = lab.target_ifindex();
    let mut seen = Vec::new();
    let mut answered = 0;
    while answered < burst as usize {
        answered += queue
            .drain_packets(1024, |packet| {
                assert_eq!(
                    (
                        packet.in_ifindex,
                        packet.out_ifindex,
                        packet.hook,
                        packet.hw_protocol
                    ),
                    (Some(ifindex), None, 0, 0x0800),
                    "{packet:?}"
                );
                let Some((17, UDP_PORT, Some(number))) = port_and_number(packet.payload) else {
                    panic!("not a test datagram: {packet:?}");
                };
                seen.push(number);
                udp_verdict(number)
            })
            .unwrap_or_else(|e| panic!("drain: {e:?}"));
    }
    assert_eq!(
        seen,
        (0..burst).collect::<Vec<_>>(),
        "read in order, once each"
    );
    let stats = queue.stats();
    assert_eq!(stats.packets, u64::from(burst));
    // Runs of the same verdict went as batches, the lone drops singly (a run cut by the end of a
    // read can be a single too): a message per run, not per packet.
    assert!(stats.single_verdicts >= u64::from(burst / 10), "{stats:?}");
    assert!(stats.batch_verdicts >= u64::from(burst / 10), "{stats:?}");
    assert!(
        stats.single_verdicts + stats.batch_verdicts < u64::from(burst) / 2,
        "{stats:?}"
    );
    assert!(stats.verdict_datagrams <= stats.receive_calls, "{stats:?}");
    assert!(stats.receive_calls < u64::from(burst) / 10, "{stats:?}");
    assert_eq!(stats.stale_verdicts, 0, "{stats:?}");

    let mut delivered = BTreeSet::new();
    let mut datagram = [0u8; 16];
    while let Ok(length) = receiver.recv(&mut datagram) {
        let number = datagram.get(..length).and_then(|b| b.try_into().ok());
        delivered.insert(u32::from_be_bytes(
            number.unwrap_or_else(|| panic!("{datagram:?}")),
        ));
    }
    let accepted: BTreeSet<u32> = (0..burst)
        .filter(|&n| udp_verdict(n) == Verdict::Accept)
        .collect();
    assert_eq!(delivered, accepted, "exactly the accepted datagrams arrive");
    let (waiting, queue_dropped, socket_dropped, _) = lab.queue_counters();
    assert_eq!((waiting, queue_dropped, socket_dropped), (0, 0, 0));

    // TCP through a reader running on its own thread: the accepted handshake completes, the
    // dropped one never gets an answer.
    let listeners: Vec<TcpListener> = lab.target.enter(|| {
        [ACCEPTED_TCP_PORT, DROPPED_TCP_PORT]
            .iter()
            .map(|&port| {
                TcpListener::bind((TARGET_ADDRESS, port)).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ports_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let reader = {
        let (stop, ports_seen) = (Arc::clone(&stop), Arc::clone(&ports_seen));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                wait_readable(&queue, Duration::from_millis(50));
                queue
                    .drain(1024, |packet| {
                        let Some((6, port, _)) = port_and_number(packet) else {
                            return Verdict::Drop;
                        };
                        if let Ok(mut seen) = ports_seen.lock() {
                            seen.insert(port);
                        }
                        match port {
                            ACCEPTED_TCP_PORT => Verdict::Accept,
                            _ => Verdict::Drop,
                        }
                    })
                    .unwrap_or_else(|e| panic!("drain: {e:?}"));
            }
            queue
        })
    };
    let connect = |port: u16, timeout: Duration| {
        lab.sender.enter(|| {
            TcpStream::connect_timeout(&SocketAddr::from((TARGET_ADDRESS, port)), timeout)
        })
    };
    let accepted = connect(ACCEPTED_TCP_PORT, Duration::from_secs(5));
    assert!(accepted.is_ok(), "accepted connection failed: {accepted:?}");
    let dropped = connect(DROPPED_TCP_PORT, Duration::from_millis(1500));
    assert!(
        matches!(&dropped, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "a dropped SYN must go unanswered: {dropped:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let queue = reader
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let ports = ports_seen
        .lock()
        .map(|seen| seen.clone())
        .unwrap_or_default();
    assert_eq!(
        ports,
        [ACCEPTED_TCP_PORT, DROPPED_TCP_PORT].into_iter().collect()
    );
    assert_eq!(queue.stats().stale_verdicts, 0);
    drop(listeners);
}

#[test]
fn a_reader_stalled_while_thousands_of_packets_pile_up_loses_none() {
    if !running_as_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let lab = Lab::create("s");
    let mut queue = lab.open_queue();
    let sender = lab.udp_sender();
    let (_, _, _, first_id) = lab.queue_counters();

    // The reader stalls: nothing is read while the sender pushes as fast as it can, and for at
    // least STALL in all.
    let stalled = Instant::now();
    for number in 0..STALL_PACKETS as u32 {
        loop {
            match sender.send(&number.to_be_bytes()) {
                Ok(_) => break,
                // The sender's own socket buffer is full for a moment.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => thread::yield_now(),
                Err(e) => panic!("send {number}: {e}"),
            }
        }
    }
    let burst = stalled.elapsed();
    thread::sleep(STALL.saturating_sub(burst));
    lab.wait_until_queued(STALL_PACKETS as u64);
    let (waiting, queue_dropped, socket_dropped, last_id) = lab.queue_counters();
    eprintln!(
        "{STALL_PACKETS} packets sent in {burst:?} ({:.0} packets/s), {waiting} waiting",
        STALL_PACKETS as f64 / burst.as_secs_f64()
    );
    assert_eq!(
        (queue_dropped, socket_dropped, last_id - first_id),
        (0, 0, STALL_PACKETS as u64),
        "every packet queued and delivered to the socket"
    );

    let mut answered = 0;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while answered < STALL_PACKETS {
        assert!(Instant::now() < deadline, "only {answered} answered");
        answered += queue
            .drain(1024, |_| Verdict::Accept)
            .unwrap_or_else(|e| panic!("drain: {e:?}"));
    }
    assert_eq!(answered, STALL_PACKETS);
    let (waiting, queue_dropped, socket_dropped, _) = lab.queue_counters();
    assert_eq!((waiting, queue_dropped, socket_dropped), (0, 0, 0));
    let stats = queue.stats();
    assert_eq!((stats.overruns, stats.unreadable), (0, 0), "{stats:?}");
    // Read many at a time, and all accepts: one verdict message per read.
    assert!(
        stats.receive_calls <= (STALL_PACKETS as u64) / 32,
        "{stats:?}"
    );
    assert_eq!(
        stats.single_verdicts + stats.batch_verdicts,
        stats.receive_calls,
        "{stats:?}"
    );
}

#[test]
fn a_waiting_receive_returns_with_a_packet_or_a_wake_up_and_a_wake_up_is_no_packet() {
    if !running_as_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let lab = Lab::create("w");
    let mut queue = lab.open_queue();
    let waker = queue.waker().unwrap_or_else(|e| panic!("waker: {e:?}"));

    // Woken from another thread while it waits with nothing queued: the receive returns the
    // kernel's acknowledgement of the wake-up, which is answered as nothing.
    let waking = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap_or_else(|e| panic!("wake: {e}"));
        waker
    });
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let read = loop {
        // Each wait gives up after a second with nothing read; a busy machine may take longer
        // to run the waking thread.
        let read = queue
            .receive(Waiting::UpToIdle)
            .unwrap_or_else(|e| panic!("receive: {e:?}"));
        if read > 0 || Instant::now() > deadline {
            break read;
        }
    };
    let waker = waking.join().unwrap_or_else(|_| panic!("waking thread"));
    assert_eq!(read, 1, "the wake-up's acknowledgement is what was read");
    assert_eq!(
        queue.answer(&mut |_: &QueuedPacket<'_>| Verdict::Drop).ok(),
        Some(0)
    );
    assert_eq!(queue.stats().wake_ups, 1, "{:?}", queue.stats());

    // A packet that comes while the receive waits is read by it and answered.
    let sender = lab.udp_sender();
    let sending = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        sender
            .send(&7u32.to_be_bytes())
            .unwrap_or_else(|e| panic!("send: {e}"));
    });
    let mut numbers = Vec::new();
    let mut answered = 0;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while answered == 0 {
        assert!(Instant::now() < deadline, "the packet never came");
        queue
            .receive(Waiting::UpToIdle)
            .unwrap_or_else(|e| panic!("receive: {e:?}"));
        answered = queue
            .answer(&mut |packet: &QueuedPacket<'_>| {
                numbers.extend(port_and_number(packet.payload).and_then(|(_, _, n)| n));
                Verdict::Drop
            })
            .unwrap_or_else(|e| panic!("answer: {e:?}"));
    }
    sending.join().unwrap_or_else(|_| panic!("sending thread"));
    assert_eq!((answered, numbers), (1, vec![7]));
    assert_eq!(
        lab.queue_counters().0,
        0,
        "nothing left waiting for a verdict"
    );

    // A wake-up a drain comes across is answered as nothing, too.
    waker.wake().unwrap_or_else(|e| panic!("wake: {e}"));
    assert_eq!(queue.drain(1024, |_| Verdict::Drop).ok(), Some(0));
    assert_eq!(queue.stats().wake_ups, 2, "{:?}", queue.stats());
}

#[test]
fn packets_that_come_one_at_a_time_are_read_singly_and_a_pile_many_at_a_time() {
    if !running_as_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let lab = Lab::create("p");
    let mut queue = lab.open_queue();
    let sender = lab.udp_sender();
    let send = |number: u32| {
        sender
            .send(&number.to_be_bytes())
            .unwrap_or_else(|e| panic!("send {number}: {e}"))
    };
    let receive = |queue: &mut PacketQueue| {
        let read = queue
            .receive(Waiting::UpToIdle)
            .unwrap_or_else(|e| panic!("receive: {e:?}"));
        queue
            .answer(&mut |_: &QueuedPacket<'_>| Verdict::Drop)
            .unwrap_or_else(|e| panic!("answer: {e:?}"));
        read
    };

    // One packet alone: the receive that offered every slot read one, so the socket was empty
    // right after it.
    send(0);
    lab.wait_until_queued(1);
    assert_eq!(receive(&mut queue), 1);

    // A pile: the next receive offers one slot and reads just one, finding it at once; the
    // receives after it take the pile many at a time. A receive slowed down by a busy machine
    // may look like one that slept, and offer one again: the pile is large enough for that.
    let pile: u32 = 300;
    for number in 1..=pile {
        send(number);
    }
    lab.wait_until_queued(u64::from(pile));
    let mut reads = vec![receive(&mut queue)];
    let mut answered = reads[0];
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while answered < pile as usize && Instant::now() < deadline {
        let read = receive(&mut queue);
        answered += read;
        reads.push(read);
    }
    assert_eq!(reads[0], 1, "the first receive offered one slot: {reads:?}");
    assert_eq!(answered, pile as usize, "{reads:?}");
    assert!(
        reads.iter().any(|&read| read > 1),
        "the pile was read one packet per call: {reads:?}"
    );
    assert_eq!(lab.queue_counters().0, 0, "nothing left waiting");
}
