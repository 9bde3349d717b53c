//! End-to-end spoofing: packets forged with addresses that must never be blocked (the target's
//! gateway, an address that becomes the target's own, broadcast, multicast, unspecified) are
//! dropped and counted as spoofed, never blocked; a block of an address that becomes the
//! target's own is lifted at once. With `verify = "handshake"`, a real `connect()` scan
//! completes nfsentry's handshake check and its block lasts `block_timeout`, a connecting client
//! reads `port_banner`, and SYNs forged with another host's address stay unverified, their block
//! capped at `unverified_timeout`. Element timeouts are read back from the kernel (`nft -j`).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{wait_until, Daemon, Lab, LabError, Side, TABLE, TARGET_IF};
use nix::sys::signal::Signal;
use regex::Regex;
use serde_json::Value;

/// A watched TCP port (in the lab's `MONITORED_TCP_CONFIG`).
const BAIT_PORT: u16 = 1;
/// `block_timeout` and `unverified_timeout` of the handshake tests, in seconds.
const BLOCK_TIMEOUT_SECS: u64 = 7200;
const UNVERIFIED_TIMEOUT_SECS: u64 = 600;
const BANNER: &str = "220 nothing to see here";
const BLOCK_WAIT: Duration = Duration::from_secs(15);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// An address of the lab's /24 with the last octet `host`.
fn on_lab_subnet(lab: &Lab, host: u8) -> Ipv4Addr {
    let [a, b, c, _] = lab.target_v4.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// The lab's config with `[detect]` and `[respond]` keys added (TOML lines).
fn config(lab: &Lab, detect: &str, respond: &str) -> String {
    lab.config(&[])
        .replace("[detect]\n", &format!("[detect]\n{detect}"))
        .replace("[respond]\n", &format!("[respond]\n{respond}"))
}

/// One SYN to the bait port, forged with `source`, sent at layer 2 from the scanner.
fn spoofed_syn(lab: &Lab, source: Ipv4Addr) -> Result<(), LabError> {
    lab.scapy_send(&format!(
        "[IP(src='{source}', dst=TARGET)/TCP(sport=40000, dport={BAIT_PORT}, flags='S')]"
    ))?;
    Ok(())
}

/// The number in front of `what` in the status line the daemon logs on SIGUSR1, waiting until
/// it is at least `at_least`.
fn wait_for_status_figure(
    daemon: &mut Daemon<'_>,
    what: &str,
    at_least: u64,
) -> Result<u64, LabError> {
    let pattern = Regex::new(&format!(r"status: .*?(\d+) {}", regex::escape(what)))?;
    let mut figure = 0;
    wait_until(&format!("{at_least} {what}"), STATUS_TIMEOUT, || {
        daemon.signal(Signal::SIGUSR1)?;
        std::thread::sleep(Duration::from_millis(100));
        figure = daemon
            .log()
            .lines()
            .rev()
            .find_map(|line| pattern.captures(line)?.get(1)?.as_str().parse().ok())
            .unwrap_or(0);
        Ok(figure >= at_least)
    })?;
    Ok(figure)
}

/// The blocked set of `source`'s family as the kernel holds it: each address and its element
/// timeout in seconds (None: no timeout).
fn element_timeouts(lab: &Lab, source: IpAddr) -> Result<Vec<(IpAddr, Option<u64>)>, LabError> {
    let set = match source {
        IpAddr::V4(_) => "blocked_v4",
        IpAddr::V6(_) => "blocked_v6",
    };
    let output = lab.run_in(
        Side::Target,
        &["nft", "-j", "list", "set", "inet", TABLE, set],
    )?;
    let json: Value = serde_json::from_str(&output.stdout).map_err(|source| LabError::Json {
        command: format!("nft -j list set inet {TABLE} {set}"),
        source,
    })?;
    let elements = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["set"]["elem"].as_array())
        .flatten();
    let mut found = Vec::new();
    for element in elements {
        let (address, timeout) = match element {
            Value::String(address) => (address.as_str(), None),
            other => (
                other["elem"]["val"].as_str().unwrap_or_default(),
                other["elem"]["timeout"].as_u64(),
            ),
        };
        if let Ok(address) = address.parse() {
            found.push((address, timeout));
        }
    }
    Ok(found)
}

/// Waits until `source` is in its blocked set with a timeout `fits`; returns the timeout.
fn wait_for_block_timeout(
    lab: &Lab,
    source: IpAddr,
    what: &str,
    fits: impl Fn(Option<u64>) -> bool,
) -> Result<Option<u64>, LabError> {
    let mut seen = None;
    wait_until(what, BLOCK_WAIT, || {
        seen = element_timeouts(lab, source)?
            .into_iter()
            .find(|(address, _)| *address == source)
            .map(|(_, timeout)| timeout);
        Ok(seen.is_some_and(&fits))
    })
    .inspect_err(|_| eprintln!("{what}: last seen {seen:?}"))?;
    Ok(seen.flatten())
}

#[test]
fn spoofed_gateway_broadcast_and_multicast_sources_are_dropped_never_blocked(
) -> Result<(), LabError> {
    let lab = Lab::new("spoof-gw")?;
    let gateway = on_lab_subnet(&lab, 254);
    lab.run_in(
        Side::Target,
        &["ip", "route", "add", "default", "via", &gateway.to_string()],
    )?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;

    let forged = [
        gateway,
        on_lab_subnet(&lab, 255),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::UNSPECIFIED,
    ];
    for source in forged {
        spoofed_syn(&lab, source)?;
    }
    let spoofed = wait_for_status_figure(&mut daemon, "spoofed", forged.len() as u64)?;
    assert_eq!(spoofed, forged.len() as u64);
    assert!(
        daemon.blocked_v4()?.is_empty(),
        "{:?}",
        daemon.blocked_v4()?
    );

    // A real scanner is still blocked: the daemon watches on.
    spoofed_syn(&lab, lab.scanner_v4)?;
    wait_until("the scanner blocked", BLOCK_WAIT, || {
        Ok(daemon.blocked_v4()?.contains(&IpAddr::V4(lab.scanner_v4)))
    })?;
    assert!(!daemon.blocked_v4()?.contains(&IpAddr::V4(gateway)));
    daemon.stop()
}

#[test]
fn an_address_that_becomes_the_targets_own_is_released_at_once_and_never_blocked_again(
) -> Result<(), LabError> {
    let lab = Lab::new("spoof-own")?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let newcomer = on_lab_subnet(&lab, 50);
    spoofed_syn(&lab, newcomer)?;
    wait_until("the forged source blocked", BLOCK_WAIT, || {
        Ok(daemon.blocked_v4()?.contains(&IpAddr::V4(newcomer)))
    })?;

    // The address becomes the target's own: the rtnetlink notification lifts the block.
    lab.run_in(
        Side::Target,
        &[
            "ip",
            "addr",
            "add",
            &format!("{newcomer}/32"),
            "dev",
            TARGET_IF,
        ],
    )?;
    wait_until("the block lifted", BLOCK_WAIT, || {
        Ok(!daemon.blocked_v4()?.contains(&IpAddr::V4(newcomer)))
    })?;
    daemon.wait_for_log(
        &Regex::new(&format!(r"{newcomer}.*released.*this host"))?,
        BLOCK_WAIT,
    )?;

    // Forged again: dropped and counted as spoofed, never blocked.
    spoofed_syn(&lab, newcomer)?;
    wait_for_status_figure(&mut daemon, "spoofed", 1)?;
    assert!(!daemon.blocked_v4()?.contains(&IpAddr::V4(newcomer)));
    daemon.stop()
}

fn handshake_config(lab: &Lab) -> String {
    config(
        lab,
        "verify = \"handshake\"\n",
        &format!(
            "unverified_timeout = \"{UNVERIFIED_TIMEOUT_SECS}s\"\nport_banner = \"{BANNER}\"\n"
        ),
    )
    .replace(
        "block_timeout = \"0\"",
        &format!("block_timeout = \"{BLOCK_TIMEOUT_SECS}s\""),
    )
}

#[test]
fn a_connect_scan_is_verified_and_a_spoofed_syn_flood_is_not() -> Result<(), LabError> {
    let lab = Lab::new("spoof-verify")?;
    let mut daemon = lab.start_daemon(&handshake_config(&lab))?;

    // nmap -sT: the first connect() completes the handshake with nfsentry's cookie.
    lab.nmap(
        &["-sT", "-p", &BAIT_PORT.to_string()],
        IpAddr::V4(lab.target_v4),
    )?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    // The block's time runs from its detection, so a renewal after the handshake may leave
    // a second or so less than block_timeout; it is far above the unverified cap either way.
    let verified = |timeout: Option<u64>| {
        timeout.is_some_and(|secs| {
            secs > UNVERIFIED_TIMEOUT_SECS
                && secs <= BLOCK_TIMEOUT_SECS
                && secs + 10 >= BLOCK_TIMEOUT_SECS
        })
    };
    let timeout = wait_for_block_timeout(&lab, scanner, "a verified block", verified)?;
    assert!(verified(timeout), "{timeout:?}");

    // hping3 SYNs forged with another host's address: that host's kernel answers the SYN-ACK
    // with a RST, which proves nothing.
    let forged = IpAddr::V4(lab.scanner_v4_alt);
    lab.run_in(
        Side::Scanner,
        &[
            "hping3",
            "-q",
            "-S",
            "-c",
            "3",
            "-i",
            "u10000",
            "-p",
            &BAIT_PORT.to_string(),
            "-a",
            &forged.to_string(),
            &lab.target_v4.to_string(),
        ],
    )?;
    let timeout = wait_for_block_timeout(&lab, forged, "an unverified block", |timeout| {
        timeout.is_some()
    })?;
    assert!(
        timeout.is_some_and(|t| t <= UNVERIFIED_TIMEOUT_SECS),
        "{timeout:?}"
    );
    let handshakes = wait_for_status_figure(&mut daemon, "handshakes completed", 1)?;
    assert!(handshakes >= 1);
    let challenges = wait_for_status_figure(&mut daemon, "challenges sent", 2)?;
    assert!(challenges >= 2);
    // The forged source's block is still unverified.
    let still = element_timeouts(&lab, forged)?;
    assert!(
        still
            .iter()
            .any(|(a, t)| *a == forged && t.is_some_and(|t| t <= UNVERIFIED_TIMEOUT_SECS)),
        "{still:?}"
    );
    daemon.stop()
}

#[test]
fn a_connecting_client_reads_the_port_banner() -> Result<(), LabError> {
    let lab = Lab::new("spoof-banner")?;
    let mut daemon = lab.start_daemon(&handshake_config(&lab))?;
    let target = lab.target_v6;
    // The banner and the RST follow the handshake back to back: a client slower than both
    // sees the reset in connect() already, with the banner still in its receive queue.
    let client = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.settimeout(5)\n\
         try:\n\
         \x20   s.connect(('{target}', {BAIT_PORT}))\n\
         except ConnectionResetError:\n\
         \x20   print('reset in connect')\n\
         data = b''\n\
         try:\n\
         \x20   while True:\n\
         \x20       chunk = s.recv(1024)\n\
         \x20       if not chunk:\n\
         \x20           break\n\
         \x20       data += chunk\n\
         except OSError as e:\n\
         \x20   print('ended:', type(e).__name__)\n\
         print('received:', data.decode())\n"
    );
    let output = lab.run_in_allow_failure(Side::Scanner, &["/usr/bin/python3", "-c", &client])?;
    assert!(
        output.stdout.contains(&format!("received: {BANNER}")),
        "{}\n{}\ndaemon log:\n{}",
        output.stdout,
        output.stderr,
        daemon.log()
    );
    assert!(
        output.stdout.contains("ConnectionResetError")
            || output.stdout.contains("reset in connect"),
        "{}",
        output.stdout
    );
    let scanner = IpAddr::V6(lab.scanner_v6);
    wait_for_block_timeout(&lab, scanner, "a verified IPv6 block", |timeout| {
        timeout == Some(BLOCK_TIMEOUT_SECS)
    })?;
    daemon.stop()
}
