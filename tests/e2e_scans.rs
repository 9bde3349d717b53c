//! End-to-end scan detection: real scanners (nmap, scapy) against `nfsentry run` in a network
//! namespace, checking the logged scan kind, the kernel's block sets and that a blocked
//! source's traffic is then dropped. Classifier corner cases belong to the unit tests, not here.
//!
//! The `lab_*` tests check the harness itself without the daemon, so that a failure elsewhere
//! can be pinned on the daemon rather than on the lab.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::{
    parse_nft_set_elements, wait_until, Daemon, Lab, LabError, Side, HTTP_PORT, SCANNED_TCP_PORTS,
    SCANNED_UDP_PORTS,
};
use regex::Regex;

/// nmap with -T4 sends its first probe well within this; the rest is daemon latency.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(20);
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn log_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    fn scanned_ports(self) -> &'static [u16] {
        match self {
            Protocol::Tcp => &SCANNED_TCP_PORTS,
            Protocol::Udp => &SCANNED_UDP_PORTS,
        }
    }
}

/// One nmap scan and what the daemon must call it.
struct ScanCase<'a> {
    tag: &'a str,
    nmap_args: &'a [&'a str],
    protocol: Protocol,
    kind: &'a str,
    /// A kind this scan must never be reported as (to tell -sT and -sS apart).
    not_kind: Option<&'a str>,
}

/// The attack line the contract prescribes, capturing the port.
fn attack_line(kind: &str, source: IpAddr, protocol: Protocol) -> Result<Regex, LabError> {
    Ok(Regex::new(&format!(
        r"attackalert: {} scan from host: \S+/{} to {} port: (\d+)",
        regex::escape(kind),
        regex::escape(&source.to_string()),
        protocol.log_name()
    ))?)
}

fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn logged_port(line: &str, pattern: &Regex) -> Option<u16> {
    pattern.captures(line)?.get(1)?.as_str().parse().ok()
}

fn blocked_set(daemon: &Daemon<'_>, address: IpAddr) -> Result<Vec<IpAddr>, LabError> {
    match address {
        IpAddr::V4(_) => daemon.blocked_v4(),
        IpAddr::V6(_) => daemon.blocked_v6(),
    }
}

/// Scans the target from the scanner's primary address (v6 when `ipv6`, else v4) and
/// checks detection, the block in the kernel, and that the block drops the scanner's traffic
/// while another source on the same host still gets through.
fn assert_scan_detected_and_blocked(case: &ScanCase<'_>, ipv6: bool) -> Result<(), LabError> {
    let lab = Lab::new(case.tag)?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let (scanner, target) = if ipv6 {
        (IpAddr::V6(lab.scanner_v6), IpAddr::V6(lab.target_v6))
    } else {
        (IpAddr::V4(lab.scanner_v4), IpAddr::V4(lab.target_v4))
    };
    // The unblocked control: v4 traffic from the other address, which a v4 block of the
    // primary or a v6 block leaves alone.
    let bystander = if ipv6 {
        IpAddr::V4(lab.scanner_v4)
    } else {
        IpAddr::V4(lab.scanner_v4_alt)
    };
    let bystander_target = IpAddr::V4(lab.target_v4);

    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "{}: the scanner must reach the target's web server before scanning",
        case.tag
    );
    assert!(
        !blocked_set(&daemon, scanner)?.contains(&scanner),
        "{}: scanner blocked before it scanned",
        case.tag
    );

    let ports = port_list(case.protocol.scanned_ports());
    let mut nmap_args = case.nmap_args.to_vec();
    nmap_args.extend_from_slice(&["-p", &ports]);
    lab.nmap(&nmap_args, target)?;

    let expected = attack_line(case.kind, scanner, case.protocol)?;
    let line = daemon.wait_for_log(&expected, DETECTION_TIMEOUT)?;
    let port = logged_port(&line, &expected);
    assert!(
        port.is_some_and(|port| case.protocol.scanned_ports().contains(&port)),
        "{}: alert names a port that was not scanned: {line}",
        case.tag
    );

    wait_until(
        &format!("{scanner} in the kernel's block set"),
        BLOCK_TIMEOUT,
        || Ok(blocked_set(&daemon, scanner)?.contains(&scanner)),
    )?;
    daemon.wait_for_log(
        &format!("attackalert: Host {scanner} has been blocked"),
        BLOCK_TIMEOUT,
    )?;

    if let Some(not_kind) = case.not_kind {
        let wrong = attack_line(not_kind, scanner, case.protocol)?;
        let misreported: Vec<String> = daemon
            .attack_alerts()
            .into_iter()
            .filter(|line| wrong.is_match(line))
            .collect();
        assert!(
            misreported.is_empty(),
            "{}: {:?} scan also reported as {not_kind}: {misreported:?}",
            case.tag,
            case.kind
        );
    }

    assert_eq!(
        blocked_set(&daemon, scanner)?,
        vec![scanner],
        "{}: exactly the scanner is blocked",
        case.tag
    );
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "{}: the blocked scanner still reaches the web server",
        case.tag
    );
    assert!(
        lab.http_get(bystander, bystander_target, HTTP_PORT)?,
        "{}: an unblocked source lost access too (block is not per address, or the server died)",
        case.tag
    );
    daemon.stop()
}

#[test]
fn connect_scan_is_reported_as_connect_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "connect",
            nmap_args: &["-sT"],
            protocol: Protocol::Tcp,
            kind: "Connect",
            not_kind: Some("SYN/Normal"),
        },
        false,
    )
}

#[test]
fn syn_scan_is_reported_as_syn_normal_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "syn",
            nmap_args: &["-sS"],
            protocol: Protocol::Tcp,
            kind: "SYN/Normal",
            not_kind: Some("Connect"),
        },
        false,
    )
}

#[test]
fn fin_scan_is_reported_as_fin_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "fin",
            nmap_args: &["-sF"],
            protocol: Protocol::Tcp,
            kind: "FIN",
            not_kind: None,
        },
        false,
    )
}

#[test]
fn null_scan_is_reported_as_null_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "null",
            nmap_args: &["-sN"],
            protocol: Protocol::Tcp,
            kind: "NULL",
            not_kind: None,
        },
        false,
    )
}

#[test]
fn xmas_scan_is_reported_as_xmas_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "xmas",
            nmap_args: &["-sX"],
            protocol: Protocol::Tcp,
            kind: "XMAS",
            not_kind: Some("FULL-XMAS"),
        },
        false,
    )
}

#[test]
fn all_flags_scan_is_reported_as_full_xmas_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "full-xmas",
            nmap_args: &["--scanflags", "URGACKPSHRSTSYNFIN"],
            protocol: Protocol::Tcp,
            kind: "FULL-XMAS",
            not_kind: None,
        },
        false,
    )
}

#[test]
fn udp_scan_is_reported_as_udp_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "udp",
            nmap_args: &["-sU"],
            protocol: Protocol::Udp,
            kind: "UDP",
            not_kind: None,
        },
        false,
    )
}

/// PortSentry's stealth modes skipped anything with ACK set, so ACK, Window and Maimon scans
/// went unseen. Conntrack, not the flags, decides here what belongs to a real connection.
#[test]
fn ack_scan_is_reported_with_its_flags_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "ack",
            nmap_args: &["-sA"],
            protocol: Protocol::Tcp,
            kind: "Unknown (flags: ACK)",
            not_kind: None,
        },
        false,
    )
}

/// Maimon's scan: FIN+ACK to a closed port.
#[test]
fn maimon_scan_is_reported_with_its_flags_and_blocked() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "maimon",
            nmap_args: &["-sM"],
            protocol: Protocol::Tcp,
            kind: "Unknown (flags: ACK FIN)",
            not_kind: None,
        },
        false,
    )
}

#[test]
fn ipv6_syn_scan_lands_in_blocked_v6() -> Result<(), LabError> {
    assert_scan_detected_and_blocked(
        &ScanCase {
            tag: "syn6",
            nmap_args: &["-sS"],
            protocol: Protocol::Tcp,
            kind: "SYN/Normal",
            not_kind: None,
        },
        true,
    )
}

/// Sends scapy-built packets and returns the first `IP-options (...)` alert's option list.
fn ip_options_alert(tag: &str, ip_layers: &str) -> Result<String, LabError> {
    let lab = Lab::new(tag)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    lab.scapy_send(ip_layers)?;
    let expected = Regex::new(&format!(
        r"attackalert: IP-options \(([^)]*)\) scan from host: \S+/{} to ",
        regex::escape(&lab.scanner_v4.to_string())
    ))?;
    let line = daemon.wait_for_log(&expected, DETECTION_TIMEOUT)?;
    let options = expected
        .captures(&line)
        .and_then(|captures| captures.get(1))
        .map(|list| list.as_str().to_owned())
        .unwrap_or_default();
    daemon.stop()?;
    Ok(options)
}

/// The option names of an alert, sorted, so the check does not depend on listing order.
fn sorted_names(options: &str) -> Vec<&str> {
    let mut names: Vec<&str> = options.split(", ").collect();
    names.sort_unstable();
    names
}

#[test]
fn record_route_option_is_reported_by_name() -> Result<(), LabError> {
    let options = ip_options_alert(
        "opt-rr",
        r#"[IP(src=SCANNER, dst=TARGET, options=[IPOption_RR(pointer=4, routers=["0.0.0.0"] * 4)]) / TCP(sport=40100, dport=111, flags="S")]"#,
    )?;
    assert_eq!(sorted_names(&options), ["record-route"]);
    Ok(())
}

#[test]
fn loose_source_route_and_timestamp_options_are_reported_by_name() -> Result<(), LabError> {
    let options = ip_options_alert(
        "opt-lsrr-ts",
        r#"[IP(src=SCANNER, dst=TARGET, options=[IPOption_LSRR(pointer=4, routers=["192.0.2.1"]), IPOption_Timestamp(pointer=5, flg=0, timestamp=0)]) / TCP(sport=40101, dport=111, flags="S")]"#,
    )?;
    assert_eq!(sorted_names(&options), ["loose-source-route", "timestamp"]);
    Ok(())
}

#[test]
fn four_word_ip_header_is_reported() -> Result<(), LabError> {
    let lab = Lab::new("ihl4")?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    // The kernel drops IHL < 5 before any inet hook; only the netdev ingress path sees it.
    lab.scapy_send(
        r#"[IP(src=SCANNER, dst=TARGET, ihl=4) / TCP(sport=40102, dport=111, flags="S")]"#,
    )?;
    let expected = Regex::new(&format!(
        r"attackalert: Bad-IP-header-length \(4 words\) scan from host: \S+/{} to ",
        regex::escape(&lab.scanner_v4.to_string())
    ))?;
    daemon.wait_for_log(&expected, DETECTION_TIMEOUT)?;
    daemon.stop()
}

#[test]
fn ipv6_routing_header_is_reported_as_ip_options_and_blocked() -> Result<(), LabError> {
    let lab = Lab::new("opt-rthdr6")?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let scanner = IpAddr::V6(lab.scanner_v6);
    assert!(
        daemon.blocked_v6()?.is_empty(),
        "blocked before anything was sent"
    );
    // Port 80 is neither watched nor in use: only the routing header rule can queue it. The
    // kernel discards a type 0 routing header at local delivery, after prerouting.
    lab.scapy_send(&format!(
        r#"[IPv6(src="{}", dst="{}") / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / TCP(sport=40103, dport=80, flags="S")]"#,
        lab.scanner_v6, lab.target_v6
    ))?;
    let expected = Regex::new(&format!(
        r"attackalert: IP-options \(ipv6-routing-header\) scan from host: \S+/{} to TCP port: 80\b",
        regex::escape(&lab.scanner_v6.to_string())
    ))?;
    daemon.wait_for_log(&expected, DETECTION_TIMEOUT)?;
    wait_until(
        &format!("{scanner} in the kernel's blocked_v6 set"),
        BLOCK_TIMEOUT,
        || Ok(daemon.blocked_v6()?.contains(&scanner)),
    )?;
    assert_eq!(
        daemon.blocked_v6()?,
        vec![scanner],
        "exactly the scanner is blocked"
    );
    assert!(
        daemon.blocked_v4()?.is_empty(),
        "an IPv6 detection blocked an IPv4 address"
    );
    daemon.stop()
}

/// An IPv6 scanner can pad its probes with a few hundred bytes of extension headers. If the
/// daemon saw only a header-sized copy of each packet, every probe would look like the same
/// portless packet, the per-source count would never pass the trigger, and the scan would go
/// unblocked while the kernel kept queueing it.
#[test]
fn ipv6_probes_padded_with_extension_headers_still_count_per_port() -> Result<(), LabError> {
    let lab = Lab::new("pad-ext6")?;
    let config = lab
        .config(&[])
        .replace("scan_trigger = 0", "scan_trigger = 2");
    assert!(config.contains("scan_trigger = 2"), "{config}");
    let mut daemon = lab.start_daemon(&config)?;
    let scanner = IpAddr::V6(lab.scanner_v6);
    let probes: Vec<String> = SCANNED_TCP_PORTS
        .iter()
        .take(3)
        .map(|port| {
            format!(
                r#"IPv6(src="{}", dst="{}") / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 150), PadN(optdata=b"\x00" * 150)]) / TCP(sport=40200, dport={port}, flags="S")"#,
                lab.scanner_v6, lab.target_v6
            )
        })
        .collect();
    lab.scapy_send(&format!("[{}]", probes.join(", ")))?;
    wait_until(
        &format!("{scanner} blocked after 3 padded probes with scan_trigger 2"),
        BLOCK_TIMEOUT,
        || Ok(daemon.blocked_v6()?.contains(&scanner)),
    )?;
    let third = SCANNED_TCP_PORTS[2];
    let expected = Regex::new(&format!(
        r"attackalert: SYN/Normal scan from host: \S+/{} to TCP port: {third}\b",
        regex::escape(&lab.scanner_v6.to_string())
    ))?;
    daemon.wait_for_log(&expected, DETECTION_TIMEOUT)?;
    daemon.stop()
}

// ---- harness self-checks: no daemon involved ----

#[test]
fn lab_carries_http_over_v4_and_v6_from_both_scanner_addresses() -> Result<(), LabError> {
    let lab = Lab::new("lab-http")?;
    lab.start_http_server(HTTP_PORT)?;
    let target_v4 = IpAddr::V4(lab.target_v4);
    assert!(lab.http_get(IpAddr::V4(lab.scanner_v4), target_v4, HTTP_PORT)?);
    assert!(lab.http_get(IpAddr::V4(lab.scanner_v4_alt), target_v4, HTTP_PORT)?);
    assert!(lab.http_get(
        IpAddr::V6(lab.scanner_v6),
        IpAddr::V6(lab.target_v6),
        HTTP_PORT
    )?);
    // And a port nobody serves must read as a failure, or every "is dropped" check is void.
    assert!(!lab.http_get(IpAddr::V4(lab.scanner_v4), target_v4, HTTP_PORT + 1)?);
    Ok(())
}

/// The state nmap's normal output gives for `port`/tcp, e.g. "open" or "closed".
fn nmap_tcp_port_state(nmap_stdout: &str, port: u16) -> Option<&str> {
    let port_column = format!("{port}/tcp");
    nmap_stdout.lines().find_map(|line| {
        let mut columns = line.split_whitespace();
        if columns.next()? == port_column {
            columns.next()
        } else {
            None
        }
    })
}

#[test]
fn lab_nmap_sees_the_http_port_open_and_monitored_ports_closed() -> Result<(), LabError> {
    let lab = Lab::new("lab-nmap")?;
    lab.start_http_server(HTTP_PORT)?;
    let ports = format!("{},{}", HTTP_PORT, port_list(&SCANNED_TCP_PORTS));
    let scan = lab.nmap(&["-sS", "-p", &ports], IpAddr::V4(lab.target_v4))?;
    assert_eq!(
        nmap_tcp_port_state(&scan.stdout, HTTP_PORT),
        Some("open"),
        "{}",
        scan.stdout
    );
    for port in SCANNED_TCP_PORTS {
        assert_eq!(
            nmap_tcp_port_state(&scan.stdout, port),
            Some("closed"),
            "{}",
            scan.stdout
        );
    }
    let scan6 = lab.nmap(
        &["-sS", "-p", &HTTP_PORT.to_string()],
        IpAddr::V6(lab.target_v6),
    )?;
    assert_eq!(
        nmap_tcp_port_state(&scan6.stdout, HTTP_PORT),
        Some("open"),
        "{}",
        scan6.stdout
    );
    Ok(())
}

#[test]
fn lab_scapy_packets_arrive_with_the_crafted_headers() -> Result<(), LabError> {
    let lab = Lab::new("lab-scapy")?;
    let src = lab.scanner_v4;
    // First option byte: 7 record route, 131 loose source route; first byte 0x44: IHL 4.
    let capture = lab.start_capture(
        Side::Target,
        &format!("src host {src} and (ip[20] == 7 or ip[20] == 131 or ip[0] == 0x44)"),
        3,
    )?;
    lab.scapy_send(
        r#"[IP(src=SCANNER, dst=TARGET, options=[IPOption_RR(pointer=4, routers=["0.0.0.0"] * 4)]) / TCP(sport=40100, dport=111, flags="S"),
            IP(src=SCANNER, dst=TARGET, options=[IPOption_LSRR(pointer=4, routers=["192.0.2.1"]), IPOption_Timestamp(pointer=5, flg=0, timestamp=0)]) / TCP(sport=40101, dport=111, flags="S"),
            IP(src=SCANNER, dst=TARGET, ihl=4) / TCP(sport=40102, dport=111, flags="S")]"#,
    )?;
    let decoded = capture.finish(Duration::from_secs(10))?;
    assert!(decoded.contains("options (RR "), "{decoded}");
    assert!(
        decoded.contains("LSRR 192.0.2.1") && decoded.contains("timestamp"),
        "{decoded}"
    );
    assert!(decoded.contains("bad-hlen 16"), "{decoded}");
    Ok(())
}

#[test]
fn lab_reads_block_sets_back_from_the_kernel() -> Result<(), LabError> {
    let lab = Lab::new("lab-nft")?;
    lab.nft_load(
        "table inet nfsentry {
            set blocked_v4 { type ipv4_addr; flags timeout; }
            set blocked_v6 { type ipv6_addr; flags timeout; }
        }",
    )?;
    assert!(lab.nft_set_elements("nfsentry", "blocked_v4")?.is_empty());
    lab.nft_load(
        "add element inet nfsentry blocked_v4 { 198.51.100.7, 198.51.100.8 timeout 1h }
         add element inet nfsentry blocked_v6 { 2001:db8::7 }",
    )?;
    let mut v4 = lab.nft_set_elements("nfsentry", "blocked_v4")?;
    v4.sort();
    assert_eq!(
        v4,
        vec![
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8))
        ]
    );
    assert_eq!(
        lab.nft_set_elements("nfsentry", "blocked_v6")?,
        vec![IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))]
    );
    assert!(lab.nft_table_exists("nfsentry")?);
    assert!(!lab.nft_table_exists("absent")?);
    Ok(())
}

#[test]
fn nft_set_parser_reads_plain_and_timed_elements_and_rejects_junk() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet",
        "name": "blocked_v4", "table": "nfsentry", "type": "ipv4_addr", "flags": ["timeout"],
        "elem": ["192.0.2.1", {"elem": {"val": "192.0.2.2", "timeout": 3600, "expires": 3599}}]}}]}"#;
    assert!(matches!(
        parse_nft_set_elements(json).as_deref(),
        Ok([first, second]) if *first == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            && *second == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))
    ));
    let empty = r#"{"nftables": [{"set": {"name": "blocked_v6", "type": "ipv6_addr"}}]}"#;
    assert!(matches!(parse_nft_set_elements(empty).as_deref(), Ok([])));
    for junk in [
        "",
        "{}",
        r#"{"nftables": []}"#,
        r#"{"nftables": [{"set": {"elem": ["not-an-address"]}}]}"#,
        r#"{"nftables": [{"set": {"elem": [{"prefix": {"addr": "192.0.2.0", "len": 24}}]}}]}"#,
    ] {
        assert!(parse_nft_set_elements(junk).is_err(), "accepted {junk:?}");
    }
}
