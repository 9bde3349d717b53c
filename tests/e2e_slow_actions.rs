//! End-to-end: a slow action never delays the kernel block. `actions = ["nft-set", "command"]`
//! with a command that takes a second, against bursts of SYNs from many sources: every source
//! reaches the kernel's set while earlier commands still run, the commands run up to the queue
//! bound, and what the bound refused is counted and reported. What each action does is
//! `e2e_actions.rs`'s job; the wrapper's rules are its unit tests'.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon, Lab, LabError, TABLE};
use nfsentry::respond::{COMMAND_QUEUE_BOUND, COMMAND_WORKERS};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;

/// A monitored TCP port of the lab's config.
const BAIT_PORT: u16 = 111;
/// How long the command takes for each block.
const COMMAND_SECONDS: u64 = 1;
/// The first wave: as many as the queue takes, so all of its commands are queued, and they take
/// several seconds to run on the pool.
const FIRST_WAVE: usize = COMMAND_QUEUE_BOUND;
/// More than the pool and its queue hold even with the first wave done, so some of it is
/// refused.
const SECOND_WAVE: usize = COMMAND_WORKERS + COMMAND_QUEUE_BOUND + 4;
/// Generous: on an idle machine the set fills within milliseconds of the packets arriving.
const SET_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// Burst sources: addresses of the lab's /24 that neither side owns (.1-.3 are taken).
fn burst_sources(lab: &Lab, first: u8, count: usize) -> Vec<Ipv4Addr> {
    let [a, b, c, _] = lab.scanner_v4.octets();
    (0..count)
        .map(|offset| {
            let last = usize::from(first) + offset;
            Ipv4Addr::new(a, b, c, u8::try_from(last).expect("sources fit the /24"))
        })
        .collect()
}

/// One SYN to the bait port from each source, as a list of scapy packets.
fn syns(sources: &[Ipv4Addr]) -> String {
    let packets: Vec<String> = sources
        .iter()
        .map(|source| {
            format!("IP(src='{source}', dst=TARGET)/TCP(sport=40111, dport={BAIT_PORT}, flags='S')")
        })
        .collect();
    format!("[{}]", packets.join(", "))
}

fn write_executable(path: &Path, content: &str) -> Result<(), LabError> {
    let file_error = |source| LabError::File {
        path: path.to_owned(),
        source,
    };
    fs::write(path, content).map_err(file_error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(file_error)
}

/// Lines of a file the command appends to; empty when it has not been written yet.
fn lines_of(path: &Path) -> Result<Vec<String>, LabError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LabError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

fn config(lab: &Lab, command: &Path) -> Result<String, LabError> {
    let mut config: toml::Table = lab.config(&[]).parse().map_err(LabError::ConfigToml)?;
    let respond = config
        .entry("respond")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(respond) = respond {
        let strings = |items: &[&str]| {
            toml::Value::Array(items.iter().map(|s| toml::Value::from(*s)).collect())
        };
        respond.insert("actions".into(), strings(&["nft-set", "command"]));
        let program = command.to_string_lossy();
        respond.insert("command".into(), strings(&[&program, "$TARGET$"]));
        respond.insert("command_timeout".into(), toml::Value::from("5s"));
    }
    Ok(config.to_string())
}

fn in_set(lab: &Lab, sources: &[Ipv4Addr]) -> Result<bool, LabError> {
    let set: BTreeSet<IpAddr> = lab
        .nft_set_elements(TABLE, "blocked_v4")?
        .into_iter()
        .collect();
    Ok(sources
        .iter()
        .all(|source| set.contains(&IpAddr::V4(*source))))
}

/// The command's counters from a status line the daemon logs on SIGUSR1.
struct CommandCounters {
    queued: usize,
    dropped: usize,
    failed: usize,
}

fn command_counters(daemon: &mut Daemon<'_>) -> Result<CommandCounters, LabError> {
    let pid = daemon.pid().ok_or(LabError::DaemonNotRunning)?;
    let raw = i32::try_from(pid).map_err(|_| LabError::DaemonNotRunning)?;
    kill(Pid::from_raw(raw), Signal::SIGUSR1).map_err(|source| LabError::Signal { pid, source })?;
    let pattern = Regex::new(
        r"status: .*; command: (\d+) blocks queued, \d+ waiting, (\d+) dropped \(queue full\), (\d+) failed",
    )?;
    let line = daemon.wait_for_log(&pattern, LOG_TIMEOUT)?;
    let number = |index: usize| {
        pattern
            .captures(&line)
            .and_then(|captures| captures.get(index))
            .and_then(|found| found.as_str().parse().ok())
            .unwrap_or(usize::MAX)
    };
    Ok(CommandCounters {
        queued: number(1),
        dropped: number(2),
        failed: number(3),
    })
}

/// Seconds since midnight of a log line's RFC 3339 stamp, to the nanosecond it carries.
fn stamp_seconds(line: &str) -> Option<f64> {
    let stamp = Regex::new(r"T(\d\d):(\d\d):(\d\d(?:\.\d+)?)").ok()?;
    let captures = stamp.captures(line)?;
    let field = |index: usize| captures.get(index)?.as_str().parse::<f64>().ok();
    Some(field(1)? * 3600.0 + field(2)? * 60.0 + field(3)?)
}

/// Detection-to-block latency per source from the daemon's log: the packet loop logs the scan
/// when it decides, the responder logs the block once the nft set has it (and the command is
/// queued).
fn block_latencies(log: &str, sources: &[Ipv4Addr]) -> Vec<Duration> {
    let mut detected: HashMap<String, f64> = HashMap::new();
    let mut latencies = Vec::new();
    for line in log.lines() {
        let Some(at) = stamp_seconds(line) else {
            continue;
        };
        for source in sources {
            let source = source.to_string();
            if line.contains(&format!("scan from host: {source}/")) {
                detected.insert(source.clone(), at);
            } else if line.contains(&format!("Host {source} has been blocked")) {
                if let Some(seen) = detected.get(&source) {
                    latencies.push(Duration::from_secs_f64((at - seen).max(0.0)));
                }
            }
        }
    }
    latencies.sort();
    latencies
}

#[test]
fn a_slow_command_never_delays_the_kernel_block() -> Result<(), LabError> {
    let lab = Lab::new("e2eslow-cmd")?;
    let runs = lab.work_dir().join("runs");
    let script = lab.work_dir().join("slow.sh");
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\nsleep {COMMAND_SECONDS}\necho \"$1\" >> '{}'\n",
            runs.display()
        ),
    )?;
    let mut daemon = lab.start_daemon(&config(&lab, &script)?)?;
    daemon.wait_for_log("blocking actions, in order: nft-set, command", LOG_TIMEOUT)?;

    let first_wave = burst_sources(&lab, 100, FIRST_WAVE);
    let second_wave = burst_sources(&lab, 100 + FIRST_WAVE as u8, SECOND_WAVE);
    let all: Vec<Ipv4Addr> = first_wave.iter().chain(&second_wave).copied().collect();

    // The second wave's scapy starts now and sends when told, so that its start-up (seconds)
    // does not stand between the waves.
    let go = lab.work_dir().join("go");
    let second_burst = lab.scapy_send_burst_when(&go, &syns(&second_wave))?;
    lab.scapy_send_burst(&syns(&first_wave))?;
    wait_until("the first wave in the nft set", SET_TIMEOUT, || {
        in_set(&lab, &first_wave)
    })?;
    let second_sent = Instant::now();
    fs::write(&go, "").map_err(|source| LabError::File {
        path: go.clone(),
        source,
    })?;
    wait_until("every source in the nft set", SET_TIMEOUT, || {
        in_set(&lab, &all)
    })?;
    let second_in_set = second_sent.elapsed();
    let finished_when_full = lines_of(&runs)?.len();
    second_burst.finish(LOG_TIMEOUT)?;
    // Run one after the other on the responder, the first wave's commands (seconds of them)
    // would all have finished before the second wave reached the set.
    assert!(
        finished_when_full < FIRST_WAVE,
        "{finished_when_full} commands had finished when the set filled: the kernel block \
         waited for them"
    );

    // The block line follows the hand-over, so once every source has one, the counters are
    // final but for the commands still running.
    for source in &all {
        daemon.wait_for_log(&format!("Host {source} has been blocked"), LOG_TIMEOUT)?;
    }
    let counters = command_counters(&mut daemon)?;
    assert_eq!(
        counters.queued + counters.dropped,
        all.len(),
        "every block is queued or counted as dropped"
    );
    assert!(
        counters.dropped > 0,
        "a burst beyond the queue dropped none"
    );
    assert!(
        counters.queued >= COMMAND_QUEUE_BOUND,
        "only {} commands queued",
        counters.queued
    );
    let drain =
        Duration::from_secs(COMMAND_SECONDS * (counters.queued / COMMAND_WORKERS + 1) as u64)
            + SET_TIMEOUT;
    wait_until("every queued command to run", drain, || {
        Ok(lines_of(&runs)?.len() >= counters.queued)
    })?;
    let ran = lines_of(&runs)?;
    let distinct: BTreeSet<&String> = ran.iter().collect();
    assert_eq!(ran.len(), counters.queued, "a command ran twice: {ran:?}");
    assert_eq!(distinct.len(), ran.len(), "a command ran twice: {ran:?}");
    let sources: BTreeSet<String> = all.iter().map(Ipv4Addr::to_string).collect();
    assert!(
        ran.iter().all(|source| sources.contains(source)),
        "a command ran for an address not in the burst: {ran:?}"
    );
    assert_eq!(counters.failed, 0);

    daemon.stop()?;
    // Rate-limited "queue full" lines; the stop reports what was still held back.
    let overflow = Regex::new(r"action command: queue full \(\d+ waiting\): (\d+) blocks dropped")?;
    let log = daemon.log();
    let reported: usize = log
        .lines()
        .filter_map(|line| {
            overflow
                .captures(line)?
                .get(1)?
                .as_str()
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(reported, counters.dropped, "the overflow lines' counts");

    let latencies = block_latencies(&log, &all);
    assert_eq!(
        latencies.len(),
        all.len(),
        "a detection or block line is missing"
    );
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "detection to nft set (log stamps, {} sources): median {median:?}, max {max:?}; \
         second wave released to all in the set: {second_in_set:?}; {} of {FIRST_WAVE} first-wave \
         commands finished by then; commands queued {}, dropped {}",
        latencies.len(),
        finished_when_full,
        counters.queued,
        counters.dropped
    );
    Ok(())
}
