//! `nfsentry run` as the packaged unit runs it: an unprivileged uid whose only capability is
//! CAP_NET_ADMIN, handed over as an ambient capability. The daemon must come up, keep exactly
//! that capability on every thread, and still block a scanner. It does not re-check the scan
//! kinds or the actions; `e2e_scans.rs` and `e2e_actions.rs` do that as root.

mod common;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{wait_until, Lab, LabError, SCANNED_TCP_PORTS};
use regex::Regex;

/// `nobody` on Debian; any uid without a capability of its own would do.
const UNPRIVILEGED_ID: u32 = 65534;
/// CAP_NET_ADMIN is capability number 12.
const CAP_NET_ADMIN_MASK: u64 = 1 << 12;
const BLOCK_TIMEOUT: Duration = Duration::from_secs(15);

/// The `Name:\tvalue` lines of a /proc status file.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn capability_mask(status: &str, name: &str, path: &Path) -> u64 {
    let text = status_field(status, name)
        .unwrap_or_else(|| panic!("{}: no {name} line in:\n{status}", path.display()));
    u64::from_str_radix(text, 16)
        .unwrap_or_else(|_| panic!("{}: {name} is not hex: {text:?}", path.display()))
}

#[test]
fn unprivileged_daemon_with_net_admin_only_still_blocks_a_scan() -> Result<(), LabError> {
    let lab = Lab::new("least-priv")?;
    let state_dir = lab.state_dir();
    nix::unistd::chown(
        &state_dir,
        Some(nix::unistd::Uid::from_raw(UNPRIVILEGED_ID)),
        Some(nix::unistd::Gid::from_raw(UNPRIVILEGED_ID)),
    )
    .unwrap_or_else(|e| panic!("chown {} to {UNPRIVILEGED_ID}: {e}", state_dir.display()));

    let uid = format!("--reuid={UNPRIVILEGED_ID}");
    let gid = format!("--regid={UNPRIVILEGED_ID}");
    // What `User=` with `AmbientCapabilities=CAP_NET_ADMIN` and
    // `CapabilityBoundingSet=CAP_NET_ADMIN` give the daemon under systemd.
    let launcher = [
        "setpriv",
        &uid,
        &gid,
        "--clear-groups",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin",
    ];
    // What systemd's RuntimeDirectory= gives the daemon's user.
    let run_dir = lab
        .control_socket()
        .parent()
        .expect("a directory")
        .to_path_buf();
    fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()));
    nix::unistd::chown(
        &run_dir,
        Some(nix::unistd::Uid::from_raw(UNPRIVILEGED_ID)),
        Some(nix::unistd::Gid::from_raw(UNPRIVILEGED_ID)),
    )
    .unwrap_or_else(|e| panic!("chown {} to {UNPRIVILEGED_ID}: {e}", run_dir.display()));
    let mut daemon = lab.start_daemon_via(&lab.config(&[]), &launcher)?;
    let pid = daemon.pid().expect("daemon started");
    // The control socket is the daemon user's and nobody else's.
    let socket = fs::metadata(lab.control_socket()).expect("the control socket exists");
    assert_eq!(socket.uid(), UNPRIVILEGED_ID);
    assert_eq!(socket.mode() & 0o777, 0o600);

    // Every thread, not only the main one: capabilities are per thread, and the responder
    // thread is the one that writes to the firewall.
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let mut threads = 0;
    for task in fs::read_dir(&tasks).unwrap_or_else(|e| panic!("{}: {e}", tasks.display())) {
        let path = task.expect("task entry").path().join("status");
        let status =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        threads += 1;
        for (name, id) in [("Uid", UNPRIVILEGED_ID), ("Gid", UNPRIVILEGED_ID)] {
            let ids = status_field(&status, name).unwrap_or_default();
            let expected = vec![id.to_string(); 4].join("\t");
            assert_eq!(ids, expected, "{}: {name}", path.display());
        }
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            let mask = capability_mask(&status, set, &path);
            assert_eq!(
                mask,
                CAP_NET_ADMIN_MASK,
                "{}: {set} is {mask:#x}, not CAP_NET_ADMIN alone",
                path.display()
            );
        }
        // Nothing is passed on to programs the daemon might run.
        for set in ["CapInh", "CapAmb"] {
            let mask = capability_mask(&status, set, &path);
            assert_eq!(mask, 0, "{}: {set} is {mask:#x}", path.display());
        }
    }
    assert!(
        threads >= 2,
        "expected the responder thread too, saw {threads}"
    );

    let scanner = IpAddr::V4(lab.scanner_v4);
    let ports = SCANNED_TCP_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    lab.nmap(&["-sS", "-p", &ports], IpAddr::V4(lab.target_v4))?;
    wait_until("the scanner to be blocked", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&scanner))
    })?;
    let history_line = Regex::new(&format!(
        r"Host: \S+/{} Port: \d+ TCP Blocked",
        regex::escape(&scanner.to_string())
    ))?;
    wait_until("the block in the history file", BLOCK_TIMEOUT, || {
        Ok(history_line.is_match(&daemon.history()?))
    })?;

    let log = daemon.log();
    for complaint in ["cannot reduce", "without CAP_NET_ADMIN", "ERROR", "WARN"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(complaint) && !line.contains("attackalert"))
            .collect();
        assert!(
            lines.is_empty(),
            "the unprivileged daemon complained ({complaint}): {lines:#?}"
        );
    }
    daemon.stop()?;
    assert!(
        !daemon.table_exists()?,
        "the unprivileged daemon left its table behind on a clean stop"
    );
    Ok(())
}
