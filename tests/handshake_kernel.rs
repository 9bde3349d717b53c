//! Checks `verify = "handshake"` against real kernels: a peer namespace makes a real `connect()`
//! to a bait port of a target namespace, whose ruleset hands the SYN to the test instead of the
//! kernel; the test answers with a forged SYN-ACK carrying a cookie, sent through a marked raw
//! socket. The peer's kernel must accept it (connect() succeeds), its ACK must come back as a
//! *new* flow to conntrack although the source was blocked in between, the cookie check must
//! accept it, and the peer must read the banner and then see the connection reset. A real
//! service on a watched port must be left alone. IPv4, IPv6 and IPv6 link-local. A SYN forged
//! with the peer's address must get only the peer kernel's RST, which verifies nothing.
//!
//! The kernel here lacks `nft_queue`, so the rules hand packets over with `log group N` (NFLOG)
//! and drop them where nfsentry's rules say `queue num N bypass` and its verdict is drop; the
//! matches in front of them are the ones nfsentry's ruleset is to use. Needs root, `ip`, `nft`,
//! `sysctl` and scapy under /usr/bin/python3.

mod support;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nfsentry::cookie::{Cookies, DEFAULT_SLOT};
use nfsentry::forge::{self, TcpSegment};
use nfsentry::handshake::{Evidence, Handshakes, DEFAULT_CHALLENGES_PER_SECOND};
use nfsentry::inject::{Injector, REPLY_MARK};
use nfsentry::nflog::NflogSocket;
use nfsentry::packet::TcpFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;
use support::Netns;

const TABLE: &str = "hs";
const LOG_GROUP: u16 = 9;
const BAIT_PORT: u16 = 23;
const SERVICE_PORT: u16 = 8080;
const TARGET_LINK: &str = "hs-t";
const PEER_LINK: &str = "hs-p";
const BANNER: &[u8] = b"220 nothing to see here\r\n";
const DEADLINE: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// scapy lives in the distro python; a pyenv `python3` earlier on PATH lacks it.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A peer and a target namespace on one veth, the target with the ruleset below.
struct Lab {
    target: Netns,
    peer: Netns,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create network namespaces and need root"
        );
        let lab = Lab {
            target: Netns::new("handshake", &format!("{tag}t")),
            peer: Netns::new("handshake", &format!("{tag}p")),
        };
        lab.target.add_veth(TARGET_LINK, &lab.peer, PEER_LINK);
        for (netns, link, host) in [(&lab.target, TARGET_LINK, 1), (&lab.peer, PEER_LINK, 2)] {
            // The kernel's own link-local address would be tentative for a second or two.
            netns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{link}.accept_dad=0"),
            ]);
            netns.configure_link(
                link,
                &[
                    &format!("192.0.2.{host}/24"),
                    &format!("2001:db8::{host}/64"),
                    &format!("fe80::{host}/64"),
                ],
            );
        }
        lab.target.nft_load(&ruleset());
        lab
    }

    /// The counters of a chain of the target's table, in rule order.
    fn counters(&self, chain: &str) -> Vec<u64> {
        let listing = self
            .target
            .exec(&["nft", "-j", "list", "chain", "inet", TABLE, chain]);
        let json: Value = serde_json::from_str(&listing).expect("nft -j output is JSON");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("rule"))
            .filter_map(|rule| {
                rule["expr"]
                    .as_array()?
                    .iter()
                    .find_map(|expression| expression["counter"]["packets"].as_u64())
            })
            .collect()
    }

    fn block(&self, source: IpAddr) {
        let set = if source.is_ipv4() {
            "blocked_v4"
        } else {
            "blocked_v6"
        };
        self.target.exec(&[
            "nft",
            "add",
            "element",
            "inet",
            TABLE,
            set,
            &format!("{{ {source} }}"),
        ]);
    }
}

/// nfsentry's rules for the handshake check, the queue replaced by NFLOG and a drop, plus three
/// chains of the test's own (`sent_untracked`, `observe`) that only count.
fn ruleset() -> String {
    format!(
        "table inet {TABLE} {{
    set blocked_v4 {{ type ipv4_addr; flags timeout; }}
    set blocked_v6 {{ type ipv6_addr; flags timeout; }}
    set tcp_ports {{ type inet_service; flags interval; elements = {{ {BAIT_PORT}, {SERVICE_PORT} }} }}
    chain handshake_output {{
        type filter hook output priority raw; policy accept;
        meta mark {REPLY_MARK:#x} notrack
    }}
    chain sent_untracked {{
        type filter hook output priority -299; policy accept;
        meta mark {REPLY_MARK:#x} ct state untracked counter
    }}
    chain observe {{
        type filter hook prerouting priority -151; policy accept;
        tcp dport {BAIT_PORT} tcp flags == ack ct state new counter
        tcp dport {BAIT_PORT} tcp flags == ack ct state invalid counter
        tcp dport {BAIT_PORT} tcp flags == ack ct state established counter
    }}
    chain verify_ack {{
        socket transparent 0 return
        counter log group {LOG_GROUP} drop
    }}
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        tcp flags == ack ct state new,invalid fib daddr type local tcp dport @tcp_ports jump verify_ack
        ip saddr @blocked_v4 counter drop
        ip6 saddr @blocked_v6 counter drop
        ct state established,related accept
        fib daddr type != local accept
        socket transparent 0 accept
        tcp dport @tcp_ports counter log group {LOG_GROUP} drop
    }}
}}
"
    )
}

/// What the peer's `connect()` saw.
#[derive(Debug)]
struct ClientSaw {
    received: Vec<u8>,
    /// How reading ended: an error kind, or `None` for a clean end of stream.
    ended_by: Option<io::ErrorKind>,
}

fn connect_and_read(to: SocketAddr) -> io::Result<ClientSaw> {
    let mut stream = TcpStream::connect_timeout(&to, CLIENT_TIMEOUT)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut received = Vec::new();
    let mut buffer = [0; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => {
                return Ok(ClientSaw {
                    received,
                    ended_by: None,
                })
            }
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) => {
                return Ok(ClientSaw {
                    received,
                    ended_by: Some(error.kind()),
                })
            }
        }
    }
}

/// nfsentry's part, played by the test: what NFLOG hands over goes through the handshake check,
/// and its replies go out through the marked raw sockets.
struct Responder {
    nflog: NflogSocket,
    injector: Injector,
    handshakes: Handshakes,
    cookies: Cookies,
    /// What each segment to the bait port proved, in order.
    evidence: Vec<Evidence>,
    /// Those segments.
    seen: Vec<TcpSegment>,
    /// The ACK that completed a handshake.
    verified: Option<TcpSegment>,
}

impl Responder {
    fn open(lab: &Lab) -> Responder {
        let (nflog, injector) = lab.target.enter(|| {
            (
                NflogSocket::bind(LOG_GROUP, 0).unwrap_or_else(|error| panic!("{error}")),
                Injector::open(REPLY_MARK).unwrap_or_else(|error| panic!("{error}")),
            )
        });
        let cookies = Cookies::generate(DEFAULT_SLOT, Instant::now()).expect("a secret");
        Responder {
            nflog,
            injector,
            handshakes: Handshakes::new(cookies.clone(), BANNER, DEFAULT_CHALLENGES_PER_SECOND),
            cookies,
            evidence: Vec::new(),
            seen: Vec::new(),
            verified: None,
        }
    }

    /// Handles what arrives within a tenth of a second. `on_challenge` runs before a SYN-ACK
    /// goes out.
    fn serve_once(&mut self, peer_address: IpAddr, mut on_challenge: impl FnMut()) {
        let mut fds = [PollFd::new(self.nflog.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let mut logged = Vec::new();
        self.nflog
            .recv_batch(|packet| logged.push((packet.payload.to_vec(), packet.in_ifindex)))
            .unwrap_or_else(|error| panic!("{error}"));
        for (bytes, in_ifindex) in logged {
            let Ok(segment) = forge::read_tcp(&bytes) else {
                continue;
            };
            if segment.flow.dport != BAIT_PORT {
                continue;
            }
            assert_eq!(segment.flow.src, peer_address);
            let step = self.handshakes.step(&segment, Instant::now());
            self.evidence.push(step.evidence);
            self.seen.push(segment);
            match step.evidence {
                Evidence::Challenged => on_challenge(),
                Evidence::Verified => self.verified = Some(segment),
                _ => {}
            }
            for reply in &step.replies {
                self.injector
                    .send(reply, in_ifindex)
                    .unwrap_or_else(|error| panic!("{error}"));
            }
        }
    }
}

/// The peer connects to `target` (`peer_address` is its source); the test plays nfsentry's part.
fn handshake_through_the_kernel(tag: &str, target: IpAddr, peer_address: IpAddr) {
    let lab = Lab::new(tag);
    let mut responder = Responder::open(&lab);
    let destination = match target {
        IpAddr::V6(v6) if v6.segments()[0] == 0xfe80 => {
            let scope = lab.peer.enter(|| {
                nix::net::if_::if_nametoindex(PEER_LINK).expect("the peer's link has an index")
            });
            SocketAddr::V6(SocketAddrV6::new(v6, BAIT_PORT, 0, scope))
        }
        address => SocketAddr::new(address, BAIT_PORT),
    };

    let mut blocked = false;
    let client = std::thread::scope(|scope| {
        let client = scope.spawn(|| lab.peer.enter(|| connect_and_read(destination)));
        let started = Instant::now();
        while !(client.is_finished() && responder.verified.is_some()) {
            assert!(
                started.elapsed() < DEADLINE,
                "no completed handshake within {DEADLINE:?}; evidence so far: {:?}",
                responder.evidence
            );
            // The scan triggers a block at once; the answer must still get through.
            responder.serve_once(peer_address, || {
                if !blocked {
                    lab.block(peer_address);
                    blocked = true;
                }
            });
        }
        client.join().expect("the client thread")
    });

    let saw = client.unwrap_or_else(|error| panic!("connect() to {destination} failed: {error}"));
    assert_eq!(
        saw.received,
        BANNER,
        "banner: {:?}",
        String::from_utf8_lossy(&saw.received)
    );
    assert_eq!(saw.ended_by, Some(io::ErrorKind::ConnectionReset));
    let evidence = &responder.evidence;
    assert_eq!(
        evidence.first(),
        Some(&Evidence::Challenged),
        "{evidence:?}"
    );
    assert!(evidence.contains(&Evidence::Verified), "{evidence:?}");

    // The ACK that completed the handshake carries the cookie, by the cookie's own check.
    let ack = responder.verified.expect("a verified ACK");
    assert!(responder
        .cookies
        .is_answer(&ack.flow, ack.ack, Instant::now()));
    assert_eq!(ack.flags.bits(), TcpFlags::ACK);

    // Conntrack saw the returning ACKs as new flows, never as an established connection,
    // because the replies left untracked (SYN-ACK, banner, RST, at least).
    let [acks_new, acks_invalid, acks_established] = lab.counters("observe")[..] else {
        panic!("three counters in observe");
    };
    assert!(acks_new >= 1, "new {acks_new}, invalid {acks_invalid}");
    assert_eq!(acks_established, 0);
    assert!(lab.counters("sent_untracked")[0] >= 3);
    // The source was in the blocked set when its ACK came, and the ACK still reached us.
    assert!(lab.counters("verify_ack")[0] >= 1);
    let listing = lab.target.exec(&["nft", "list", "table", "inet", TABLE]);
    assert!(listing.contains(&peer_address.to_string()), "{listing}");
}

#[test]
fn an_ipv4_connect_completes_the_handshake() {
    handshake_through_the_kernel(
        "v4",
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
    );
}

#[test]
fn an_ipv6_connect_completes_the_handshake() {
    handshake_through_the_kernel(
        "v6",
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    );
}

#[test]
fn a_link_local_connect_is_answered_through_its_interface() {
    handshake_through_the_kernel("ll", "fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
}

/// A SYN forged with the peer's address (scapy, no socket behind it): the peer's kernel answers
/// the challenge with a RST, exactly as an innocent host whose address a scanner spoofed would.
/// The RST carries the SYN's number plus one and nothing of the cookie: it verifies nothing.
#[test]
fn a_spoofed_syn_gets_only_a_reset_from_the_address_owner() {
    const FORGED_SEQ: u32 = 1000;
    let lab = Lab::new("spf");
    let mut responder = Responder::open(&lab);
    let peer_address: IpAddr = "192.0.2.2".parse().unwrap();
    // The SYN waits in the NFLOG socket until the responder reads it.
    lab.peer.exec(&[
        SYSTEM_PYTHON,
        "-c",
        &format!(
            "from scapy.all import IP, TCP, send; \
             send(IP(src='{peer_address}', dst='192.0.2.1')/TCP(sport=40001, dport={BAIT_PORT}, flags='S', seq={FORGED_SEQ}), verbose=0)"
        ),
    ]);
    let started = Instant::now();
    while responder.seen.len() < 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "no reset within {DEADLINE:?}; evidence so far: {:?}",
            responder.evidence
        );
        responder.serve_once(peer_address, || {});
    }
    assert_eq!(
        responder.evidence,
        [Evidence::Challenged, Evidence::Unrelated]
    );
    let reset = responder.seen[1];
    assert_eq!(reset.flags, TcpFlags(TcpFlags::RST));
    assert_eq!(reset.seq, FORGED_SEQ + 1);
    assert!(responder.verified.is_none());
}

/// A service listening on a watched port: its handshake is the kernel's, its ACK established or
/// owned by the socket, and nothing reaches the handshake check.
#[test]
fn a_real_service_on_a_watched_port_is_left_alone() {
    let lab = Lab::new("svc");
    let listener = lab
        .target
        .enter(|| TcpListener::bind(("192.0.2.1", SERVICE_PORT)).expect("bind the service"));
    let served = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.write_all(b"hello\n").expect("write");
    });
    let saw = lab
        .peer
        .enter(|| connect_and_read(SocketAddr::new("192.0.2.1".parse().unwrap(), SERVICE_PORT)))
        .expect("connect to the service");
    served.join().expect("the service thread");
    assert_eq!(saw.received, b"hello\n");
    assert_eq!(saw.ended_by, None);
    assert_eq!(lab.counters("verify_ack"), vec![0]);
    // Nothing was handed over: the prerouting chain's NFLOG rule counted nothing.
    assert_eq!(lab.counters("prerouting").last(), Some(&0));
}
