//! The pipeline on a fake clock: bytes in, verdicts, orders and lines out.

use super::lines::ALERT_LINES_PER_SPAN;
use super::*;

use crate::config::ActionKind;
use crate::cookie::{Cookies, DEFAULT_SLOT};
use crate::handshake::DEFAULT_CHALLENGES_PER_SECOND;
use crate::packet::ScanKind;
use crate::packet::TcpFlags;
use log::Level;
use std::net::Ipv4Addr;
use std::time::UNIX_EPOCH;

const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The interface packets come in on, and the loopback device.
const ETH0: u32 = 2;
const LOOPBACK: u32 = 1;
/// An IPv4 header of 4 words (IHL 4) from 198.51.100.7, protocol TCP: a short-header probe
/// as NFLOG hands it over.
const V4_IHL_4: &str =
    "440000281c46000034067e45c6336407c000020a9c4000170102030400000000500004001f420000";

/// An nmap -sS SYN (IPv4, MSS option only) from `src` to 203.0.113.1 port `dport`.
fn syn(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = vec![
        0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x00, 0x00, 0x30, 0x06, 0x00, 0x00, // ver..csum
        0, 0, 0, 0, // src
        203, 0, 113, 1, // dst
        0xd4, 0x31, 0, 0, // sport, dport
        0, 0, 0, 1, 0, 0, 0, 0, // seq, ack
        0x60, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // off=6, SYN, win, csum, urg
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
    ];
    p[12..16].copy_from_slice(&src.octets());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The built-in defaults with `scan_trigger` and a small block table; ignores 192.0.2.0/24
/// as well, like the engine's tests.
fn config(trigger: u32) -> Config {
    let mut config = Config::defaults();
    config.detect.scan_trigger = trigger;
    config.detect.ignore.push("192.0.2.0/24".parse().unwrap());
    config.respond.max_blocks = 4;
    config
}

/// A fake clock: both clocks at one moment, moved forward together.
#[derive(Clone, Copy)]
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_795_564_518),
        }
    }

    fn after(self, seconds: f64) -> Clock {
        let step = Duration::from_secs_f64(seconds);
        Clock {
            now: self.now + step,
            wall: self.wall + step,
        }
    }
}

fn queued(p: &mut Pipeline, bytes: &[u8], at: Clock) -> Handled {
    p.handle(bytes, Arrival::Queued, Some(ETH0), at.now, at.wall)
}

fn texts(handled: &Handled) -> Vec<(Level, String)> {
    handled
        .lines
        .iter()
        .map(|line| (line.level(), line.to_string()))
        .collect()
}

/// The one block order of `handled`, if it has exactly one order and that is a block.
fn block(handled: &Handled) -> Option<&BlockOrder> {
    match handled.orders.as_slice() {
        [Order::Block(order)] => Some(order),
        _ => None,
    }
}

/// The sources of every block order in `orders`, in order.
fn blocked(orders: &[Order]) -> Vec<IpAddr> {
    orders
        .iter()
        .filter_map(|order| match order {
            Order::Block(block) => Some(block.record.source),
            _ => None,
        })
        .collect()
}

fn spoofed(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | i)
}

// ------------------------------------------------------------ parse, classify, decide

#[test]
fn trigger_zero_blocks_on_the_first_hit_and_drops_it() {
    let mut p = Pipeline::new(&config(0), HostFacts::default());
    let at = Clock::start();
    let out = queued(&mut p, &syn(SCANNER, 23), at);
    assert_eq!(out.verdict, Some(Verdict::Drop));
    match out.lines.as_slice() {
        [LogLine::Detection(d)] => {
            assert_eq!(d.kind, ScanKind::SynNormal);
            assert_eq!(d.protocol, "TCP");
            assert_eq!(d.port, 23);
            assert_eq!(d.hits, 1);
        }
        other => panic!("expected one detection line, got {other:?}"),
    }
    assert_eq!(
        texts(&out),
        [(
            Level::Warn,
            "attackalert: SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 23"
                .to_owned()
        )]
    );
    let order = block(&out).expect("a block order");
    assert_eq!(order.record.source, IpAddr::V4(SCANNER));
    assert_eq!(order.record.port, 23);

    let again = queued(&mut p, &syn(SCANNER, 24), at);
    assert_eq!(again.verdict, Some(Verdict::Drop));
    assert_eq!(block(&again), None, "one scanner, one block order");
    assert!(
        again.lines.is_empty(),
        "already blocked: nothing new to say"
    );
    let status = p.status();
    assert_eq!((status.queued, status.detections), (2, 1));
    assert_eq!((status.blocks_ordered, status.blocked_now), (1, 1));
}

#[test]
fn below_the_trigger_the_configured_verdict_applies() {
    let mut c = config(2);
    c.respond.verdict = Verdict::Accept;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    for port in [1, 2] {
        let out = queued(&mut p, &syn(SCANNER, port), at);
        assert_eq!(out.verdict, Some(Verdict::Accept));
        assert_eq!(block(&out), None);
        assert_eq!(out.lines.len(), 1);
    }
    let out = queued(&mut p, &syn(SCANNER, 3), at);
    assert_eq!(
        out.verdict,
        Some(Verdict::Drop),
        "the triggering packet is dropped"
    );
    assert!(block(&out).is_some());
}

#[test]
fn a_short_header_from_nflog_gets_no_verdict_and_names_the_ip_protocol() {
    let mut p = Pipeline::new(&config(0), HostFacts::default());
    let at = Clock::start();
    let out = p.handle(
        &hex(V4_IHL_4),
        Arrival::ShortHeaderLog,
        Some(ETH0),
        at.now,
        at.wall,
    );
    assert_eq!(out.verdict, None);
    assert_eq!(
        texts(&out),
        [(
            Level::Warn,
            "attackalert: Bad-IP-header-length (4 words) scan from host: \
             198.51.100.7/198.51.100.7 to IP protocol: 6"
                .to_owned()
        )]
    );
    let order = block(&out).expect("a block order");
    assert_eq!(order.record.protocol, "IP");
    assert_eq!(order.record.port, 6, "portless: the IP protocol number");
    assert_eq!(order.record.kind, "Bad-IP-header-length");
    assert!(order.history_line.ends_with(" Port: 6 IP Blocked"));
    let status = p.status();
    assert_eq!((status.queued, status.short_headers_logged), (0, 1));
}

#[test]
fn unreadable_bytes_get_the_configured_verdict_and_a_debug_line() {
    let mut c = config(0);
    c.respond.verdict = Verdict::Accept;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let out = queued(&mut p, &[0x45, 0x00, 0x00], at);
    assert_eq!(out.verdict, Some(Verdict::Accept));
    assert_eq!(block(&out), None);
    assert_eq!(
        texts(&out),
        [(
            Level::Debug,
            "malformed queued packet (3 bytes): packet truncated: 20 bytes needed to read \
             the IP header, 3 captured"
                .to_owned()
        )]
    );
    let logged = p.handle(&[], Arrival::ShortHeaderLog, Some(ETH0), at.now, at.wall);
    assert_eq!(logged.verdict, None);
    assert_eq!(
        logged.lines[0].to_string(),
        "malformed short-header packet (0 bytes): empty packet"
    );
    assert_eq!(p.status().malformed, 2);
}

#[test]
fn alert_only_reports_but_orders_no_block() {
    let mut c = config(0);
    c.respond.actions = Vec::new();
    c.respond.verdict = Verdict::Accept;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let out = queued(&mut p, &syn(SCANNER, 1), Clock::start());
    assert_eq!(out.verdict, Some(Verdict::Accept));
    assert_eq!(block(&out), None);
    assert!(matches!(out.lines.as_slice(), [LogLine::Detection(_)]));
    assert_eq!(p.status().blocks_ordered, 0);
}

#[test]
fn a_full_block_table_evicts_the_unverified_block_nearest_its_end_and_orders_its_release() {
    let mut c = config(0);
    c.respond.block_timeout = Some(Duration::from_secs(3600));
    let mut p = Pipeline::new(&c, HostFacts::default());
    let start = Clock::start();
    for i in 0..4 {
        let at = start.after(f64::from(i));
        assert!(block(&queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, i), 1), at)).is_some());
    }
    let out = queued(
        &mut p,
        &syn(Ipv4Addr::new(198, 51, 100, 200), 1),
        start.after(10.0),
    );
    assert_eq!(out.verdict, Some(Verdict::Drop));
    match out.orders.as_slice() {
        [Order::Release(release), Order::Block(order)] => {
            assert_eq!(
                release,
                &ReleaseOrder {
                    source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
                    why: EVICTED,
                    log: true,
                }
            );
            assert_eq!(
                order.record.source,
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200))
            );
        }
        other => panic!("expected a release and a block, got {other:?}"),
    }
    let status = p.status();
    assert_eq!((status.blocks_evicted, status.blocked_now), (1, 4));
    assert_eq!(status.blocks_refused, 0);
}

#[test]
fn a_table_full_of_verified_blocks_refuses_says_so_and_still_drops() {
    let mut c = config(0);
    c.detect.verify = Verify::Handshake;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    for i in 0..4 {
        let source = Ipv4Addr::new(198, 51, 100, i);
        queued(&mut p, &syn(source, 1), at);
        p.verified(IpAddr::V4(source), at.now, at.wall);
    }
    let out = queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, 200), 1), at);
    assert_eq!(out.verdict, Some(Verdict::Drop));
    assert!(out.orders.is_empty());
    let lines = texts(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, Level::Warn);
    assert_eq!(
        lines[1],
        (
            Level::Error,
            "block table full of verified blocks: 198.51.100.200 is not blocked (raise \
             respond.max_blocks?)"
                .to_owned()
        )
    );
    let status = p.status();
    assert_eq!((status.blocks_refused, status.blocked_now), (1, 4));
    assert_eq!((status.blocked_verified, status.blocks_verified), (4, 4));
    assert_eq!(status.detections, 5);
}

#[test]
fn expired_blocks_leave_the_table_and_say_so_through_the_limiter() {
    let mut c = config(0);
    c.respond.block_timeout = Some(Duration::from_secs(60));
    let mut p = Pipeline::new(&c, HostFacts::default());
    let start = Clock::start();
    for i in 0..4 {
        queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, i), 1), start);
    }
    assert_eq!(p.tick(start.after(59.0).now, start.wall), Output::default());
    let out = p.tick(start.after(60.0).now, start.wall);
    assert!(
        out.orders.is_empty(),
        "the responder lifts them on its own clock"
    );
    assert_eq!(out.lines.len(), 4);
    assert_eq!(
        out.lines[0].to_string(),
        "attackalert: Host 198.51.100.0 has been released (block timeout expired)"
    );
    assert_eq!(p.status().blocked_now, 0);
    let out = queued(
        &mut p,
        &syn(Ipv4Addr::new(198, 51, 100, 0), 1),
        start.after(61.0),
    );
    assert!(block(&out).is_some(), "watched, and blocked, again");
}

// ------------------------------------------------------------ the host's own addresses

/// A host on 203.0.113.1/24 behind router 203.0.113.254, and 2001:db8::1 behind fe80::1.
fn host_facts() -> HostFacts {
    HostFacts {
        local: vec![
            "203.0.113.1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ],
        local_nets: vec!["127.0.0.0/8".parse().unwrap()],
        broadcasts: vec!["203.0.113.255".parse().unwrap()],
        next_hops: vec!["203.0.113.254".parse().unwrap(), "fe80::1".parse().unwrap()],
        loopback_ifindexes: vec![LOOPBACK],
    }
}

/// Asserts `source`'s SYN is dropped and counted as spoofed, nothing else.
fn assert_spoofed(p: &mut Pipeline, source: Ipv4Addr, at: Clock) {
    let before = p.status().spoofed;
    let out = queued(p, &syn(source, 1), at);
    assert_eq!(out.verdict, Some(Verdict::Drop), "{source}");
    assert_eq!((out.orders.len(), out.lines.len()), (0, 0), "{source}");
    assert!(out.replies.is_empty(), "{source}");
    assert_eq!(p.status().spoofed, before + 1, "{source}");
    assert_eq!(p.status().sources_tracked, 0, "{source}");
}

#[test]
fn own_addresses_routers_and_impossible_sources_are_dropped_uncounted() {
    let mut p = Pipeline::new(&config(0), host_facts());
    let at = Clock::start();
    for source in [
        Ipv4Addr::new(203, 0, 113, 1),   // own, on a non-loopback device
        Ipv4Addr::new(203, 0, 113, 254), // the gateway
        Ipv4Addr::new(203, 0, 113, 255), // the subnet's broadcast
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(127, 0, 0, 1), // loopback off the loopback device
    ] {
        assert_spoofed(&mut p, source, at);
    }
    assert_eq!(p.status().blocked_now, 0);

    // The host talking to itself over loopback is let through, uncounted, as before.
    let own = syn(Ipv4Addr::new(127, 0, 0, 1), 1);
    let out = p.handle(&own, Arrival::Queued, Some(LOOPBACK), at.now, at.wall);
    assert_eq!(out.verdict, Some(Verdict::Accept));
    assert_eq!(p.status().spoofed, 7);
    // The configured ignore list too.
    let ignored = queued(&mut p, &syn(Ipv4Addr::new(192, 0, 2, 50), 1), at);
    assert_eq!(ignored.verdict, Some(Verdict::Accept));
    assert_eq!(block(&ignored), None);
}

#[test]
fn an_address_that_becomes_the_hosts_own_is_released_at_once() {
    let mut p = Pipeline::new(&config(0), host_facts());
    let at = Clock::start();
    assert!(block(&queued(&mut p, &syn(SCANNER, 1), at)).is_some());
    let unchanged = p.set_host_facts(host_facts(), at.now);
    assert_eq!(unchanged, Output::default());

    let mut facts = host_facts();
    facts.local.push(IpAddr::V4(SCANNER));
    let out = p.set_host_facts(facts.clone(), at.after(1.0).now);
    assert_eq!(
        out.orders,
        [Order::Release(ReleaseOrder {
            source: IpAddr::V4(SCANNER),
            why: PROTECTED,
            log: true,
        })]
    );
    assert_eq!(p.status().blocked_now, 0);
    assert_spoofed(&mut p, SCANNER, at.after(2.0));

    // A new router likewise.
    let router = Ipv4Addr::new(198, 51, 100, 8);
    assert!(block(&queued(&mut p, &syn(router, 1), at.after(3.0))).is_some());
    facts.next_hops.push(IpAddr::V4(router));
    let out = p.set_host_facts(facts, at.after(4.0).now);
    assert_eq!(out.orders.len(), 1);
    assert_spoofed(&mut p, router, at.after(5.0));
}

// ------------------------------------------------------------ handshakes

const BANNER: &str = "220 nothing here\r\n";

fn handshake_config(trigger: u32) -> Config {
    let mut c = config(trigger);
    c.detect.verify = Verify::Handshake;
    c.respond.block_timeout = Some(Duration::from_secs(86_400));
    c.respond.unverified_timeout = Some(Duration::from_secs(600));
    c.respond.port_banner = Some(BANNER.to_owned());
    c.monitor.tcp.insert(1);
    c
}

fn with_handshakes(c: &Config, at: Clock) -> Pipeline {
    let cookies = Cookies::from_secret(*b"0123456789abcdef", DEFAULT_SLOT, at.now);
    Pipeline::new(c, host_facts()).with_handshakes(Some(Handshakes::new(
        cookies,
        c.respond.port_banner.as_deref().unwrap_or("").as_bytes(),
        DEFAULT_CHALLENGES_PER_SECOND,
    )))
}

/// `syn` turned into the peer's answer to a SYN-ACK: flags `flags`, acknowledging `ack`.
fn answer(syn: &[u8], flags: u8, ack: u32) -> Vec<u8> {
    let mut p = syn.to_vec();
    p[24..28].copy_from_slice(&2u32.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[33] = flags;
    p
}

fn replies(out: &Handled) -> Vec<forge::TcpSegment> {
    out.replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.ifindex, Some(ETH0));
            forge::read_tcp(&reply.packet).expect("a TCP reply")
        })
        .collect()
}

#[test]
fn a_completed_handshake_verifies_the_block_and_gets_the_banner_then_a_reset() {
    let c = handshake_config(0);
    let at = Clock::start();
    let mut p = with_handshakes(&c, at);
    let probe = syn(SCANNER, 1);
    let out = queued(&mut p, &probe, at);
    assert_eq!(out.verdict, Some(Verdict::Drop));
    let [syn_ack] = replies(&out)[..] else {
        panic!("one SYN-ACK: {:?}", out.replies);
    };
    assert_eq!(syn_ack.flags.bits(), TcpFlags::SYN | TcpFlags::ACK);
    let order = block(&out).expect("blocked by the SYN");
    assert!(!order.record.verified);
    let unverified_end = order.record.expires.expect("an end");
    assert_eq!(unverified_end - order.record.added, 600);

    let ack = answer(&probe, TcpFlags::ACK, syn_ack.seq.wrapping_add(1));
    let out = queued(&mut p, &ack, at.after(0.1));
    assert_eq!(out.verdict, Some(Verdict::Drop));
    let sent = replies(&out);
    assert_eq!(sent.len(), 2, "banner and reset");
    assert_eq!(sent[0].payload_len as usize, BANNER.len());
    assert!(sent[1].flags.bits() & TcpFlags::RST != 0);
    let [Order::Renew(renew)] = &out.orders[..] else {
        panic!("a renewal: {:?}", out.orders);
    };
    assert_eq!(renew.source, IpAddr::V4(SCANNER));
    let status = p.status();
    assert_eq!((status.challenges, status.handshakes), (1, 1));
    assert_eq!((status.blocked_verified, status.blocked_unverified), (1, 0));
}

#[test]
fn a_reset_or_a_wrong_cookie_proves_nothing() {
    let c = handshake_config(5);
    let at = Clock::start();
    let mut p = with_handshakes(&c, at);
    let probe = syn(SCANNER, 1);
    let out = queued(&mut p, &probe, at);
    let cookie = replies(&out)[0].seq;
    let reset = answer(&probe, TcpFlags::RST, 0);
    assert!(queued(&mut p, &reset, at).replies.is_empty());
    let wrong = answer(&probe, TcpFlags::ACK, cookie.wrapping_add(2));
    let out = queued(&mut p, &wrong, at);
    assert!(out.replies.is_empty());
    assert!(out.orders.is_empty());
    assert_eq!(p.status().handshakes, 0);
}

#[test]
fn without_verify_nothing_is_ever_sent() {
    let mut c = handshake_config(0);
    c.detect.verify = Verify::Off;
    let at = Clock::start();
    let mut p = with_handshakes(&c, at);
    let out = queued(&mut p, &syn(SCANNER, 1), at);
    assert!(out.replies.is_empty());
    assert_eq!(p.status().challenges, 0);
}

// ------------------------------------------------------------ restored blocks

fn record(source: Ipv4Addr, added: u64, expires: Option<u64>) -> BlockRecord {
    BlockRecord {
        source: IpAddr::V4(source),
        added,
        expires,
        protocol: "TCP".to_owned(),
        port: 23,
        kind: "SYN/Normal".to_owned(),
        verified: false,
    }
}

#[test]
fn restored_blocks_drop_without_new_orders_until_their_time_is_up() {
    let mut p = Pipeline::new(&config(0), HostFacts::default());
    let at = Clock::start();
    let unix = store::unix_seconds(at.wall);
    let timed = Ipv4Addr::new(198, 51, 100, 1);
    let forever = Ipv4Addr::new(198, 51, 100, 2);
    p.restore_blocked(
        &[
            record(timed, unix - 10, Some(unix + 30)),
            record(forever, unix - 10, None),
        ],
        at.now,
        at.wall,
    );
    assert_eq!(p.status().blocked_now, 2);
    for source in [timed, forever] {
        let out = queued(&mut p, &syn(source, 1), at.after(29.0));
        assert_eq!(out.verdict, Some(Verdict::Drop));
        assert_eq!((out.orders.len(), out.lines.len()), (0, 0));
    }
    let out = queued(&mut p, &syn(timed, 1), at.after(31.0));
    assert!(block(&out).is_some(), "the restored block ran out");
    let out = queued(&mut p, &syn(forever, 1), at.after(1e9));
    assert_eq!(block(&out), None, "a block without an end never runs out");
}

// ------------------------------------------------------------ block orders

fn detection(protocol: &'static str, port: u16, kind: ScanKind) -> Detection {
    Detection {
        source: IpAddr::V4(SCANNER),
        kind,
        protocol,
        port,
        hits: 1,
    }
}

#[test]
fn a_block_order_records_the_block_its_evidence_and_its_history_line() {
    let wall = UNIX_EPOCH + Duration::from_secs(1_795_564_518);
    let d = detection("TCP", 25, ScanKind::SynNormal);
    let order = block_order(&d, true, None, Instant::now(), wall, false);
    assert_eq!(
        order.record,
        BlockRecord {
            source: IpAddr::V4(SCANNER),
            added: 1_795_564_518,
            expires: None,
            protocol: "TCP".to_owned(),
            port: 25,
            kind: "SYN/Normal".to_owned(),
            verified: true,
        }
    );
    assert!(!order.log);
    assert_eq!(
        order.history_line,
        report::history_line(wall, d.source, "TCP", 25)
    );
    assert!(order
        .history_line
        .ends_with(" Host: 198.51.100.7/198.51.100.7 Port: 25 TCP Blocked"));
}

#[test]
fn a_block_order_expires_after_its_term_and_never_before_a_second() {
    let wall = UNIX_EPOCH + Duration::from_secs(1_000);
    let d = detection("UDP", 161, ScanKind::Udp);
    let expires = |term| {
        block_order(&d, false, Some(term), Instant::now(), wall, true)
            .record
            .expires
    };
    assert_eq!(expires(Duration::from_secs(3600)), Some(4_600));
    assert_eq!(expires(Duration::from_millis(500)), Some(1_001));
    assert_eq!(expires(Duration::from_secs(u64::MAX)), Some(u64::MAX));
}

#[test]
fn the_pipeline_orders_blocks_at_the_wall_clock_it_is_given() {
    let mut c = config(0);
    c.respond.block_timeout = Some(Duration::from_secs(600));
    c.respond.actions = vec![ActionKind::Route];
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let out = queued(&mut p, &syn(SCANNER, 23), at);
    let order = block(&out).unwrap();
    let unix = store::unix_seconds(at.wall);
    assert_eq!(order.record.added, unix);
    assert_eq!(order.record.expires, Some(unix + 600));
    assert!(!order.record.verified);
    assert!(order.log);
    assert_eq!(
        order.history_line,
        report::history_line(at.wall, IpAddr::V4(SCANNER), "TCP", 23)
    );
}

// ------------------------------------------------------------ durations by evidence

#[test]
fn with_verification_off_every_block_is_unverified_and_capped() {
    let mut c = config(0);
    c.respond.block_timeout = None;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let out = queued(&mut p, &syn(SCANNER, 23), at);
    let order = block(&out).unwrap();
    let unix = store::unix_seconds(at.wall);
    assert!(!order.record.verified);
    assert_eq!(
        order.record.expires,
        Some(unix + 3600),
        "unverified_timeout"
    );
    assert_eq!(
        p.verified(IpAddr::V4(SCANNER), at.now, at.wall),
        Output::default(),
        "verify = off: a handshake changes nothing"
    );
    let mut uncapped = config(0);
    uncapped.respond.unverified_timeout = None;
    let mut p = Pipeline::new(&uncapped, HostFacts::default());
    let out = queued(&mut p, &syn(SCANNER, 23), at);
    assert_eq!(block(&out).unwrap().record.expires, None);
}

#[test]
fn a_handshake_renews_an_unverified_block_with_block_timeout() {
    let mut c = config(0);
    c.detect.verify = Verify::Handshake;
    c.respond.block_timeout = Some(Duration::from_secs(86_400));
    c.respond.unverified_timeout = Some(Duration::from_secs(600));
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let out = queued(&mut p, &syn(SCANNER, 23), at);
    assert_eq!(
        block(&out).unwrap().record.expires,
        Some(store::unix_seconds(at.wall) + 600)
    );
    let later = at.after(60.0);
    let out = p.verified(IpAddr::V4(SCANNER), later.now, later.wall);
    assert_eq!(
        out.orders,
        [Order::Renew(RenewOrder {
            source: IpAddr::V4(SCANNER),
            expires: Some(store::unix_seconds(later.wall) + 86_400),
        })]
    );
    assert_eq!(
        out.lines,
        [LogLine::Verified {
            source: IpAddr::V4(SCANNER),
            term: Some(Duration::from_secs(86_400))
        }]
    );
    let status = p.status();
    assert_eq!((status.blocked_verified, status.blocked_unverified), (1, 0));
    assert_eq!(status.blocks_verified, 1);
    // Past the unverified term, the block holds.
    let out = queued(&mut p, &syn(SCANNER, 24), at.after(3600.0));
    assert_eq!((out.verdict, out.orders.len()), (Some(Verdict::Drop), 0));
}

// ------------------------------------------------------------ the rate cap

#[test]
fn the_rate_cap_holds_blocks_back_says_so_once_a_second_and_tick_hands_out_tokens() {
    let mut c = config(0);
    c.respond.max_blocks = 10_000;
    c.respond.max_blocks_per_sec = 5;
    c.detect.max_sources = 10_000;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let mut orders = Vec::new();
    for i in 0..1_000 {
        let out = queued(&mut p, &syn(spoofed(i), 80), at);
        assert_eq!(out.verdict, Some(Verdict::Drop), "held back, still dropped");
        orders.extend(out.orders);
    }
    assert_eq!(orders.len(), 5, "one second's worth at once");
    let status = p.status();
    assert_eq!((status.blocks_held_back, status.waiting), (995, 995));
    let out = p.tick(at.after(0.5).now, at.after(0.5).wall);
    assert_eq!(
        blocked(&out.orders),
        [IpAddr::V4(spoofed(5)), IpAddr::V4(spoofed(6))]
    );
    assert!(out.lines.is_empty(), "the span is not over");
    let out = p.tick(at.after(1.0).now, at.after(1.0).wall);
    let texts: Vec<String> = out.lines.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            // 1000 detections and 7 blocks, 200 of them written.
            "807 alert lines suppressed in the last second (flood of sources?)",
            "995 new blocks held back in the last second by respond.max_blocks_per_sec = 5; \
             993 sources waiting, dropped inline"
        ]
    );
    assert_eq!(blocked(&out.orders).len(), 3);
    assert!(
        p.tick(at.after(2.5).now, at.after(2.5).wall)
            .lines
            .is_empty(),
        "said once"
    );
}

#[test]
fn history_lines_come_only_with_blocks_the_rate_cap_let_through() {
    let mut c = config(0);
    c.respond.max_blocks = 200;
    c.respond.max_blocks_per_sec = 50;
    c.detect.max_sources = 4096;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let start = Clock::start();
    let (mut blocks, mut releases, mut held_back_lines) = (0, 0, 0);
    // Ten seconds of 20k new sources a second, ticking every 100 ms.
    for step in 0..100u32 {
        let at = start.after(f64::from(step) * 0.1);
        let mut outputs = Vec::new();
        for i in 0..2_000 {
            let out = queued(&mut p, &syn(spoofed(step * 2_000 + i), 80), at);
            outputs.push(Output {
                orders: out.orders,
                lines: out.lines,
            });
        }
        outputs.push(p.tick(at.now, at.wall));
        for out in outputs {
            for order in out.orders {
                match order {
                    Order::Block(order) => {
                        assert!(order.history_line.ends_with(" Port: 80 TCP Blocked"));
                        blocks += 1;
                    }
                    Order::Release(release) => {
                        assert_eq!(release.why, EVICTED);
                        releases += 1;
                    }
                    Order::Renew(_) => panic!("nothing was verified"),
                }
            }
            held_back_lines += out
                .lines
                .iter()
                .filter(|line| matches!(line, LogLine::HeldBack { .. }))
                .count();
        }
        assert!(p.status().blocked_now <= 200);
    }
    // One second saved up, then 50 a second, for ten seconds.
    assert!((540..=560).contains(&blocks), "{blocks} blocks");
    assert_eq!(
        releases,
        blocks - 200,
        "every block past the bound evicted one"
    );
    assert!((9..=10).contains(&held_back_lines), "{held_back_lines}");
    let status = p.status();
    assert_eq!(status.blocks_ordered, blocks as u64);
    assert_eq!(status.blocks_evicted, releases as u64);
}

#[test]
fn a_scanner_probing_three_ports_is_blocked_ahead_of_a_spoofed_flood_with_trigger_zero() {
    let mut c = config(0);
    c.respond.max_blocks = 200;
    c.detect.max_sources = 1_000;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let start = Clock::start();
    for i in 0..100_000 {
        queued(&mut p, &syn(spoofed(i), 80), start);
    }
    let mid = start.after(0.01);
    for port in [1, 11, 111] {
        let out = queued(&mut p, &syn(SCANNER, port), mid);
        assert_eq!(out.verdict, Some(Verdict::Drop));
        assert!(blocked(&out.orders).is_empty(), "no token yet");
    }
    // The flood goes on; the next token, 20 ms on, is the scanner's.
    let mut first = None;
    for i in 100_000..200_000 {
        let at = start.after(0.01 + f64::from(i - 100_000) * 1e-6);
        let out = queued(&mut p, &syn(spoofed(i), 80), at);
        if let Some(source) = blocked(&out.orders).first() {
            first = Some(*source);
            break;
        }
    }
    assert_eq!(first, Some(IpAddr::V4(SCANNER)));
}

// ------------------------------------------------------------ the shared line budget

#[test]
fn a_flood_of_detections_is_held_to_the_budget_and_summed_up_by_tick() {
    let mut c = config(u32::MAX);
    c.detect.max_sources = 4096;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    assert_eq!(p.tick(at.now, at.wall), Output::default());
    let flood = ALERT_LINES_PER_SPAN + 50;
    let written: usize = (0..flood)
        .map(|i| {
            queued(&mut p, &syn(spoofed(i), 80), at.after(0.5))
                .lines
                .len()
        })
        .sum();
    assert_eq!(written, ALERT_LINES_PER_SPAN as usize);
    assert!(
        p.tick(at.after(0.9).now, at.wall).lines.is_empty(),
        "the span is not over"
    );
    let out = p.tick(at.after(1.0).now, at.wall);
    let [summary] = out.lines.as_slice() else {
        panic!("expected one summary line, got {:?}", out.lines);
    };
    assert_eq!(summary.level(), Level::Warn);
    assert_eq!(
        summary.to_string(),
        "50 alert lines suppressed in the last second (flood of sources?)"
    );
    assert!(
        p.tick(at.after(2.5).now, at.wall).lines.is_empty(),
        "said once"
    );
    let status = p.status();
    assert_eq!(status.alert_lines_suppressed, 50);
    assert_eq!(status.detections, u64::from(flood));
    let out = queued(&mut p, &syn(SCANNER, 1), at.after(2.6));
    assert_eq!(out.lines.len(), 1, "a new span has a new budget");
}

#[test]
fn block_and_release_lines_share_the_budget_with_detections() {
    let mut c = config(0);
    c.respond.max_blocks = 100;
    c.respond.max_blocks_per_sec = 0;
    c.detect.max_sources = 4096;
    let mut p = Pipeline::new(&c, HostFacts::default());
    let at = Clock::start();
    let (mut lines, mut logged_orders, mut silent_orders) = (0usize, 0usize, 0usize);
    for i in 0..1_000 {
        let out = queued(&mut p, &syn(spoofed(i), 80), at);
        lines += out.lines.len();
        for order in &out.orders {
            let log = match order {
                Order::Block(order) => order.log,
                Order::Release(order) => order.log,
                Order::Renew(_) => true,
            };
            match log {
                true => logged_orders += 1,
                false => silent_orders += 1,
            }
        }
    }
    // Each source: a detection line, a block order, and past 100 the release of another.
    assert_eq!(lines + logged_orders, ALERT_LINES_PER_SPAN as usize);
    assert_eq!(logged_orders + silent_orders, 1_000 + 900);
    let out = p.tick(at.after(1.0).now, at.wall);
    assert_eq!(
        out.lines,
        [LogLine::Suppressed(2_900 - u64::from(ALERT_LINES_PER_SPAN))]
    );
}

#[test]
fn the_status_line_keeps_its_wording() {
    let status = Status {
        queued: 1,
        short_headers_logged: 2,
        malformed: 3,
        detections: 4,
        blocks_ordered: 5,
        blocks_held_back: 6,
        waiting: 7,
        blocks_refused: 8,
        blocks_evicted: 9,
        blocks_verified: 10,
        blocked_now: 11,
        blocked_verified: 12,
        blocked_unverified: 13,
        sources_tracked: 14,
        sources_evicted: 15,
        alert_lines_suppressed: 16,
        spoofed: 17,
        challenges: 18,
        handshakes: 19,
        ..Status::default()
    };
    assert_eq!(
        status.to_string(),
        "1 packets queued, 2 short headers logged, 3 malformed, 4 detections, \
         5 blocks ordered, 6 held back (rate cap), 7 waiting, 8 refused (table full), \
         9 evicted (table full), 10 verified by handshake, 11 blocked now (12 verified, \
         13 unverified), 14 sources tracked, 15 evicted, 16 alert lines suppressed, \
         17 spoofed (never counted), 18 challenges sent, 19 handshakes completed"
    );
}

// ------------------------------------------------------------ by hand, reload

#[test]
fn a_block_by_hand_drops_the_source_and_an_unblock_lets_it_be_blocked_again() {
    let mut p = Pipeline::new(&config(0), HostFacts::default());
    let at = Clock::start();
    let hand = p
        .block_by_hand(
            IpAddr::V4(SCANNER),
            Some(Duration::from_secs(3600)),
            at.now,
            at.wall,
        )
        .unwrap();
    assert_eq!(hand.record.kind, MANUAL_KIND);
    assert!(
        hand.record.verified,
        "an admin's block is never given up for room"
    );
    assert_eq!(hand.record.expires, Some(1_795_564_518 + 3600));
    let dropped = queued(&mut p, &syn(SCANNER, 23), at);
    assert_eq!(dropped.verdict, Some(Verdict::Drop));
    assert!(
        dropped.orders.is_empty(),
        "already blocked: no second order"
    );

    assert!(p.release_by_hand(IpAddr::V4(SCANNER)));
    assert!(!p.release_by_hand(IpAddr::V4(SCANNER)));
    let again = queued(&mut p, &syn(SCANNER, 24), at.after(1.0));
    assert!(block(&again).is_some(), "scanning again is blocked again");
    let status = p.status();
    assert_eq!(status.blocks_ordered, 2);
    assert_eq!(status.blocks_released, 1);
    assert_eq!(
        status.detections_by_kind[ScanKind::SynNormal.word_index()],
        1
    );

    assert_eq!(p.release_all_by_hand(), 1);
    assert_eq!(p.status().blocked_now, 0);
}

#[test]
fn ignored_and_own_addresses_are_never_blocked_by_hand() {
    let own: IpAddr = "203.0.113.1".parse().unwrap();
    let mut p = Pipeline::new(
        &config(0),
        HostFacts {
            local: vec![own],
            ..HostFacts::default()
        },
    );
    let at = Clock::start();
    let refused = p.block_by_hand(own, None, at.now, at.wall).unwrap_err();
    assert!(refused.contains("own addresses"), "{refused}");
    let ignored: IpAddr = "192.0.2.9".parse().unwrap();
    let refused = p.block_by_hand(ignored, None, at.now, at.wall).unwrap_err();
    assert!(refused.contains("ignore list"), "{refused}");
}

#[test]
fn a_reload_keeps_counts_and_blocks_and_takes_the_new_trigger_and_ignore_list() {
    let mut p = Pipeline::new(&config(2), HostFacts::default());
    let at = Clock::start();
    let other = Ipv4Addr::new(198, 51, 100, 8);
    queued(&mut p, &syn(SCANNER, 1), at);
    queued(&mut p, &syn(SCANNER, 2), at);
    for port in 1..=3 {
        queued(&mut p, &syn(other, port), at);
    }
    assert_eq!(p.status().blocked_now, 1);

    let mut reloaded = config(1);
    reloaded
        .detect
        .ignore
        .push("198.51.100.9/32".parse().unwrap());
    p.reconfigure(&reloaded);
    let status = p.status();
    assert_eq!(status.queued, 5, "counters survive");
    assert_eq!(status.blocked_now, 1, "blocks survive");
    // Two hits were tracked before the reload: the new trigger of 1 blocks on the third.
    let third = queued(&mut p, &syn(SCANNER, 3), at);
    assert!(block(&third).is_some());
    let ignored = queued(&mut p, &syn(Ipv4Addr::new(198, 51, 100, 9), 1), at);
    assert_eq!(ignored.verdict, Some(Verdict::Accept));
}
