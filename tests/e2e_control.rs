//! The control commands against a live daemon in a network namespace: `status`, `list`,
//! `block`, `unblock`, `flush` and `reload` (and SIGHUP), each read back as `--json` and
//! checked against the kernel's own tables with `nft -j`; and what each command says when no
//! daemon is running.

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{wait_until, Daemon, Lab, LabError, Side, DAEMON_BIN, TABLE};
use nix::sys::signal::Signal;
use regex::Regex;
use serde_json::Value;

/// One SYN from scapy reaches the daemon well within this; the rest is daemon latency.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A monitored TCP port of the lab's config.
const BAIT_PORT: u16 = 111;
/// A port the lab's config does not watch, added by a reload.
const NEW_PORT: u16 = 4444;
/// A documentation address nobody in the lab uses, blocked by hand.
const BY_HAND: &str = "192.0.2.9";
/// A `[respond]` tail (the lab's config ends in that section) that loads but fails the check.
const MISSING_COMMAND: &str =
    "actions = [\"nft-set\", \"command\"]\ncommand = [\"/nonexistent/nfsentry-notify\", \"$TARGET$\"]\n";
const MISSING_PROGRAM: &str = "/nonexistent/nfsentry-notify";

type Result<T> = std::result::Result<T, LabError>;

/// What one run of the command printed, and whether it succeeded.
struct Cli {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn json(&self) -> Value {
        assert!(self.success, "command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `nfsentry ARGS --config CONFIG`, from the host: the socket is a file, the namespace is
/// no matter.
fn cli(config: &Path, args: &[&str]) -> Cli {
    let output = Command::new(DAEMON_BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("nfsentry runs");
    Cli {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn syn_from_scanner(lab: &Lab, port: u16) -> Result<()> {
    lab.scapy_send(&format!(
        "[IP(src=SCANNER, dst=TARGET)/TCP(sport=40000, dport={port}, flags='S')]"
    ))?;
    Ok(())
}

fn blocked(daemon: &Daemon<'_>, address: IpAddr) -> Result<bool> {
    Ok(daemon.blocked_v4()?.contains(&address))
}

/// The ports in the daemon's `tcp_ports` set, read with `nft -j`: single ports and ranges.
fn watched_tcp_ports(lab: &Lab) -> Result<Vec<(u64, u64)>> {
    let output = lab.run_in(
        Side::Target,
        &["nft", "-j", "list", "set", "inet", TABLE, "tcp_ports"],
    )?;
    let json: Value = serde_json::from_str(&output.stdout).expect("nft -j prints JSON");
    let elements = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["set"]["elem"].as_array())
        .flatten()
        .filter_map(|element| match element {
            Value::Number(port) => port.as_u64().map(|p| (p, p)),
            other => {
                let range = other["range"].as_array()?;
                Some((range.first()?.as_u64()?, range.get(1)?.as_u64()?))
            }
        })
        .collect();
    Ok(elements)
}

fn watches(ports: &[(u64, u64)], port: u16) -> bool {
    ports
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&u64::from(port)))
}

/// The `list --json` entry for `address`.
fn listed(config: &Path, address: &str) -> Option<Value> {
    cli(config, &["list", "--json"]).json()["blocks"]
        .as_array()
        .expect("blocks is a list")
        .iter()
        .find(|entry| entry["address"] == address)
        .cloned()
}

#[test]
fn status_list_block_unblock_and_flush_reach_the_kernel_before_they_return() -> Result<()> {
    let lab = Lab::new("ctl-cmds")?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let config = daemon.config_path().to_path_buf();
    let scanner = IpAddr::V4(lab.scanner_v4);

    let status = cli(&config, &["status", "--json"]).json();
    assert_eq!(status["reply"], "status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        ["native", "compat"].contains(&status["queue_mode"].as_str().unwrap_or_default()),
        "{status}"
    );
    assert_eq!(status["queues"], serde_json::json!([0]));
    assert_eq!(status["blocks"]["now"], 0);

    syn_from_scanner(&lab, BAIT_PORT)?;
    wait_until("the scanner in blocked_v4", BLOCK_TIMEOUT, || {
        blocked(&daemon, scanner)
    })?;
    wait_until("status to count the detection", BLOCK_TIMEOUT, || {
        let status = cli(&config, &["status", "--json"]).json();
        Ok(status["detections"]["SYN/Normal"] == 1 && status["blocks"]["now"] == 1)
    })?;
    // The responder times the block from the detection to the kernel's ack of the element,
    // just after the ack.
    wait_until("status to time the block", BLOCK_TIMEOUT, || {
        let status = cli(&config, &["status", "--json"]).json();
        Ok(status["trigger_to_block"]["blocks"] == 1)
    })?;
    let status = cli(&config, &["status", "--json"]).json();
    let timed = &status["trigger_to_block"];
    assert!(timed["p50_us"].as_u64() > Some(0), "{status}");
    assert!(
        timed["p99_us"].as_u64() >= timed["p50_us"].as_u64(),
        "{status}"
    );
    let counted: u64 = timed["buckets"]
        .as_array()
        .expect("buckets is a list")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(counted, 1, "{status}");
    assert!(status["packets"]["queued"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["packets"]["queued"], status["packets"]["answered"]);
    assert_eq!(status["blocks"]["ordered"], 1);
    let kernel = &status["kernel_queues"][0];
    assert_eq!(kernel["queue"], 0, "{status}");
    assert_eq!(kernel["queue_dropped"], 0, "{status}");
    assert_eq!(kernel["user_dropped"], 0, "{status}");
    let human = cli(&config, &["status"]);
    assert!(
        human.success
            && human.stdout.contains("SYN/Normal 1")
            && human
                .stdout
                .contains("1 timed, detection to the kernel's ack p50 < "),
        "{}",
        human.stdout
    );

    let entry = listed(&config, &lab.scanner_v4.to_string()).expect("the scanner is listed");
    assert_eq!(entry["kind"], "SYN/Normal");
    assert_eq!(entry["protocol"], "TCP");
    assert_eq!(entry["port"], BAIT_PORT);
    assert_eq!(entry["origin"], "detection");
    // A stealth SYN proves nothing about its source: unverified, so respond.unverified_timeout
    // caps even a block_timeout of 0 (until released).
    assert_eq!(entry["verified"], false);
    assert!(entry["left_secs"].as_u64().is_some(), "{entry}");
    assert_eq!(entry["actions"], serde_json::json!(["nft-set"]));
    let table = cli(&config, &["list"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines.len() >= 2, "{}", table.stdout);
    let column = |line: &str| {
        line.find(char::is_whitespace)
            .map(|end| end + line[end..].find(|c: char| !c.is_whitespace()).unwrap_or(0))
    };
    assert_eq!(
        column(lines[0]),
        column(lines[1]),
        "aligned:\n{}",
        table.stdout
    );

    let unblock = cli(&config, &["unblock", &lab.scanner_v4.to_string()]);
    assert!(unblock.success, "{}", unblock.stderr);
    assert!(
        !blocked(&daemon, scanner)?,
        "gone from the set when unblock returns"
    );
    daemon.wait_for_log("has been released (by hand)", BLOCK_TIMEOUT)?;
    assert!(listed(&config, &lab.scanner_v4.to_string()).is_none());
    let again = cli(&config, &["unblock", &lab.scanner_v4.to_string()]);
    assert!(
        !again.success && again.stderr.contains("is not blocked"),
        "{}",
        again.stderr
    );
    // The pipeline forgot the block too: a second scan is blocked again.
    syn_from_scanner(&lab, BAIT_PORT)?;
    wait_until("the scanner blocked again", BLOCK_TIMEOUT, || {
        blocked(&daemon, scanner)
    })?;

    let by_hand: IpAddr = BY_HAND.parse().expect("an address");
    let block = cli(&config, &["block", BY_HAND, "--timeout", "1h"]);
    assert!(block.success, "{}", block.stderr);
    assert!(blocked(&daemon, by_hand)?, "in the set when block returns");
    daemon.wait_for_log("has been blocked (by hand)", BLOCK_TIMEOUT)?;
    let entry = listed(&config, BY_HAND).expect("listed");
    assert_eq!(entry["origin"], "manual");
    let left = entry["left_secs"].as_u64().expect("a timed block");
    assert!((3500..=3600).contains(&left), "{entry}");
    let journal = fs::read_to_string(lab.state_dir().join("blocks")).expect("journal");
    assert!(journal.contains(&format!("+ {BY_HAND} ")), "{journal}");
    let own = cli(&config, &["block", &lab.target_v4.to_string()]);
    assert!(
        !own.success && own.stderr.contains("own addresses"),
        "{}",
        own.stderr
    );

    let flush = cli(&config, &["flush", "--json"]).json();
    assert_eq!(flush["count"], 2);
    assert!(
        daemon.blocked_v4()?.is_empty(),
        "flushed when flush returns"
    );
    assert_eq!(
        cli(&config, &["status", "--json"]).json()["blocks"]["now"],
        0
    );
    Ok(())
}

/// A control command with a config that loads (the daemon's file may be broken on purpose):
/// only its control socket matters.
fn cli_with_config_of(lab: &Lab, args: &[&str]) -> Cli {
    let config = lab.work_dir().join("cli.toml");
    fs::write(&config, lab.config(&[])).expect("config written");
    cli(&config, args)
}

/// The lab's config with `extra_port` watched as well.
fn config_with_port(lab: &Lab, extra_port: Option<u16>) -> String {
    let config = lab.config(&[]);
    match extra_port {
        None => config,
        Some(port) => config.replacen("tcp_ports = [", &format!("tcp_ports = [{port}, "), 1),
    }
}

#[test]
fn reload_applies_new_ports_at_once_keeps_blocks_and_refuses_a_bad_file() -> Result<()> {
    let lab = Lab::new("ctl-reload")?;
    let mut daemon = lab.start_daemon(&config_with_port(&lab, None))?;
    let config = daemon.config_path().to_path_buf();
    assert!(!watches(&watched_tcp_ports(&lab)?, NEW_PORT));
    assert!(cli(&config, &["block", BY_HAND]).success);
    let by_hand: IpAddr = BY_HAND.parse().expect("an address");

    fs::write(&config, config_with_port(&lab, Some(NEW_PORT))).expect("config written");
    let reload = cli(&config, &["reload"]);
    assert!(reload.success, "{}", reload.stderr);
    assert!(reload.stdout.starts_with("reloaded"), "{}", reload.stdout);
    let ports = watched_tcp_ports(&lab)?;
    assert!(
        watches(&ports, NEW_PORT),
        "applied when reload returns: {ports:?}"
    );
    assert!(watches(&ports, BAIT_PORT), "{ports:?}");
    assert!(blocked(&daemon, by_hand)?, "blocks survive a reload");
    // The new port is queued at once: a SYN to it gets the scanner blocked.
    syn_from_scanner(&lab, NEW_PORT)?;
    wait_until(
        "the scanner blocked through the new port",
        BLOCK_TIMEOUT,
        || blocked(&daemon, IpAddr::V4(lab.scanner_v4)),
    )?;
    let entry = listed(&config, &lab.scanner_v4.to_string()).expect("listed");
    assert_eq!(entry["port"], NEW_PORT);

    // A file that loads but cannot work: the daemon refuses it with check-config's words, and
    // the running rules stay.
    let unusable = config_with_port(&lab, None) + MISSING_COMMAND;
    fs::write(&config, unusable).expect("config written");
    let check = cli(&config, &["check-config"]);
    assert!(!check.success);
    assert!(check.stderr.contains(MISSING_PROGRAM), "{}", check.stderr);
    let refused = cli(&config, &["reload"]);
    assert!(!refused.success);
    assert_eq!(
        refused.stderr, check.stderr,
        "the same message as check-config"
    );
    assert!(watches(&watched_tcp_ports(&lab)?, NEW_PORT));
    daemon.wait_for_log("reload refused", BLOCK_TIMEOUT)?;
    // A file that does not even parse, by SIGHUP: refused, said in the log with file and line.
    fs::write(&config, "[detect]\nscan_trigger = \"many\"\n").expect("config written");
    daemon.signal(Signal::SIGHUP)?;
    let line = Regex::new(r"reload refused.*nfsentry\.toml:2").expect("a regex");
    daemon.wait_for_log(&line, BLOCK_TIMEOUT)?;
    assert!(watches(&watched_tcp_ports(&lab)?, NEW_PORT));
    let status = cli_with_config_of(&lab, &["status", "--json"]).json();
    assert_eq!(status["blocks"]["now"], 2, "{status}");

    // SIGHUP does the same: back to the old ports.
    fs::write(&config, config_with_port(&lab, None)).expect("config written");
    daemon.signal(Signal::SIGHUP)?;
    wait_until("the new port gone after SIGHUP", BLOCK_TIMEOUT, || {
        Ok(!watches(&watched_tcp_ports(&lab)?, NEW_PORT))
    })?;
    assert!(blocked(&daemon, by_hand)?);
    assert_eq!(
        cli(&config, &["status", "--json"]).json()["detections"]["SYN/Normal"],
        1,
        "counters survive"
    );
    Ok(())
}

#[test]
fn without_a_daemon_each_command_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("nfsentry.toml");
    fs::write(
        &config,
        format!(
            "[daemon]\ncontrol_socket = {:?}\n",
            socket.display().to_string()
        ),
    )
    .expect("config written");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["list"],
        &["block", BY_HAND],
        &["unblock", BY_HAND],
        &["flush"],
        &["reload"],
    ] {
        let out = cli(&config, args);
        assert!(!out.success, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("not running") && out.stderr.contains("control.sock"),
            "{args:?}: {}",
            out.stderr
        );
    }
}
