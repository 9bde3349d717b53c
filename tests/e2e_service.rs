//! End-to-end checks that `nfsentry run` leaves legitimate traffic alone (a busy real service,
//! ignored sources), states its config and queue mode on start, and keeps its blocks across a
//! restart. It does not re-check each scan kind; `e2e_scans.rs` does that.

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{wait_until, Lab, LabError, HTTP_PORT, SCANNED_TCP_PORTS};
use nix::sys::signal::Signal;
use regex::Regex;

const DETECTION_TIMEOUT: Duration = Duration::from_secs(20);
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_FETCHES: usize = 50;

fn scanned_port_list() -> String {
    SCANNED_TCP_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn syn_alert_from(source: IpAddr) -> Result<Regex, LabError> {
    Ok(Regex::new(&format!(
        r"attackalert: SYN/Normal scan from host: \S+/{} to TCP port: \d+",
        regex::escape(&source.to_string())
    ))?)
}

/// Matches an address as a whole token, so 10.88.1.2 does not match inside 10.88.1.23.
fn address_token(address: IpAddr) -> Result<Regex, LabError> {
    Ok(Regex::new(&format!(
        r"(^|[^0-9a-fA-F.:]){}($|[^0-9a-fA-F.:])",
        regex::escape(&address.to_string())
    ))?)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[test]
fn busy_real_service_is_never_taken_for_a_scan() -> Result<(), LabError> {
    let lab = Lab::new("svc-http")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let (scanner, target) = (IpAddr::V4(lab.scanner_v4), IpAddr::V4(lab.target_v4));

    let mut failed_fetches = 0;
    for _ in 0..HTTP_FETCHES {
        if !lab.http_get(scanner, target, HTTP_PORT)? {
            failed_fetches += 1;
        }
    }
    assert_eq!(failed_fetches, 0, "fetches from a plain client failed");
    assert!(daemon.blocked_v4()?.is_empty(), "client got blocked");

    // A scan after the fetches proves the daemon was watching all along: once its alert is
    // logged, every packet of the fetches has been judged too.
    lab.nmap(&["-sS", "-p", &scanned_port_list()], target)?;
    daemon.wait_for_log(&syn_alert_from(scanner)?, DETECTION_TIMEOUT)?;
    let scan_alert = Regex::new(r"scan from host: \S+ to (TCP|UDP) port: (\d+)")?;
    for line in daemon.attack_alerts() {
        if let Some(captures) = scan_alert.captures(&line) {
            let port = captures
                .get(2)
                .and_then(|port| port.as_str().parse::<u16>().ok());
            assert!(
                port.is_some_and(|port| SCANNED_TCP_PORTS.contains(&port)),
                "alert caused by the web traffic: {line}"
            );
        } else {
            assert!(
                line.contains(" has been blocked"),
                "alert caused by the web traffic: {line}"
            );
        }
    }
    daemon.stop()
}

#[test]
fn ignored_source_scanning_monitored_ports_is_never_blocked() -> Result<(), LabError> {
    let lab = Lab::new("svc-ignore")?;
    lab.start_http_server(HTTP_PORT)?;
    let ignored = IpAddr::V4(lab.scanner_v4);
    let watched = IpAddr::V4(lab.scanner_v4_alt);
    let target = IpAddr::V4(lab.target_v4);
    let ignore_cidr = format!("{ignored}/32");
    let mut daemon = lab.start_daemon(&lab.config(&[&ignore_cidr]))?;

    let ports = scanned_port_list();
    lab.nmap(&["-sS", "-p", &ports], target)?;
    lab.nmap(&["-sF", "-p", &ports], target)?;
    // The second source is not ignored; its alert shows the daemon judged the scans above.
    lab.nmap_from(Some(watched), &["-sS", "-p", &ports], target)?;
    daemon.wait_for_log(&syn_alert_from(watched)?, DETECTION_TIMEOUT)?;
    wait_until("the un-ignored source to be blocked", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&watched))
    })?;

    assert_eq!(daemon.blocked_v4()?, vec![watched]);
    let mentions_ignored = address_token(ignored)?;
    let about_ignored: Vec<String> = daemon
        .attack_alerts()
        .into_iter()
        .filter(|line| mentions_ignored.is_match(line))
        .collect();
    assert!(
        about_ignored.is_empty(),
        "ignored source raised alerts: {about_ignored:?}"
    );
    assert!(
        lab.http_get(ignored, target, HTTP_PORT)?,
        "ignored source lost access"
    );
    daemon.stop()
}

#[test]
fn startup_names_config_and_queue_mode_and_sigint_removes_the_table() -> Result<(), LabError> {
    let lab = Lab::new("svc-start")?;
    let native_expected = lab.native_nft_queue_available()?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;

    let log = daemon.log();
    let first_line = log
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let config_path = daemon.config_path().to_string_lossy().into_owned();
    assert!(
        first_line.contains(&config_path),
        "first log line does not name the config file {config_path}: {first_line:?}"
    );
    // A kernel without nft_queue may be described as lacking "native" queueing, so only the
    // word for the mode in use is required; "compat" has no business on a native kernel.
    let lowercase_log = log.to_lowercase();
    if native_expected {
        assert!(
            lowercase_log.contains("native") && !lowercase_log.contains("compat"),
            "kernel has native nft queue, but the daemon does not say it uses it:\n{log}"
        );
    } else {
        assert!(
            lowercase_log.contains("compat"),
            "kernel lacks native nft queue, but the daemon does not say it uses compat:\n{log}"
        );
    }

    for set in ["blocked_v4", "blocked_v6"] {
        assert!(
            lab.nft_set_elements(common::TABLE, set)?.is_empty(),
            "{set} not empty on a fresh start"
        );
    }
    daemon.stop_with(Signal::SIGINT)?;
    assert!(!daemon.table_exists()?, "table left behind after SIGINT");
    Ok(())
}

#[test]
fn block_survives_restart_in_kernel_and_history() -> Result<(), LabError> {
    let lab = Lab::new("svc-restart")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);
    let scan_started = unix_now();

    lab.nmap(&["-sS", "-p", &scanned_port_list()], target)?;
    wait_until("the scanner to be blocked", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&scanner))
    })?;

    let history_line = Regex::new(&format!(
        r"(?m)^(\d+) - \d\d/\d\d/\d{{4}} \d\d:\d\d:\d\d Host: \S+/{} Port: (\d+) TCP Blocked$",
        regex::escape(&scanner.to_string())
    ))?;
    wait_until("a history line for the block", BLOCK_TIMEOUT, || {
        Ok(history_line.is_match(&daemon.history()?))
    })?;
    let history_before = daemon.history()?;
    let captures = history_line.captures(&history_before);
    let stamp = captures
        .as_ref()
        .and_then(|captures| captures.get(1))
        .and_then(|stamp| stamp.as_str().parse::<u64>().ok());
    assert!(
        stamp.is_some_and(|stamp| (scan_started..=unix_now()).contains(&stamp)),
        "history time stamp is not the time of the block: {history_before:?}"
    );
    let port = captures
        .as_ref()
        .and_then(|captures| captures.get(2))
        .and_then(|port| port.as_str().parse::<u16>().ok());
    assert!(
        port.is_some_and(|port| SCANNED_TCP_PORTS.contains(&port)),
        "history names a port that was not scanned: {history_before:?}"
    );

    daemon.stop()?;
    assert!(!daemon.table_exists()?, "clean exit left the table behind");
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "traffic still dropped with the daemon stopped"
    );

    daemon.start()?;
    wait_until("the block to be re-applied", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&scanner))
    })?;
    assert_eq!(daemon.blocked_v4()?, vec![scanner]);
    let history_after = daemon.history()?;
    assert!(
        history_after.starts_with(&history_before),
        "history was rewritten on start:\nbefore: {history_before:?}\nafter: {history_after:?}"
    );
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "the re-applied block does not drop the scanner"
    );
    assert!(
        lab.http_get(IpAddr::V4(lab.scanner_v4_alt), target, HTTP_PORT)?,
        "an unblocked source lost access after the restart"
    );
    daemon.stop()
}
