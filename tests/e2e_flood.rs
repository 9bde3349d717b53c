//! End-to-end limits under spoofed floods: hping3 `--rand-source` and scapy floods from the
//! scanner namespace against `nfsentry run`. What must hold: new blocks stay within
//! `max_blocks_per_sec` and the kernel's blocked set within `max_blocks`, a real scanner
//! is still blocked in the middle of a flood (with `scan_trigger = 0` and with `scan_trigger = 2`
//! and a small source table), and the log and the history grow by a bounded number of lines a
//! second. Each test prints its figures (`--nocapture` shows them).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon, Lab, LabError, SynSenders};
use nix::sys::signal::Signal;
use regex::Regex;

/// A monitored TCP port the floods hit (in the lab's `MONITORED_TCP_CONFIG`).
const FLOOD_PORT: &str = "111";
/// Monitored ports the real scanner probes, none of them the flood's.
const SCANNER_PORTS: &str = "1,11,21,31337";
/// The default `respond.max_blocks_per_sec`, which these tests leave as it is.
const BLOCKS_PER_SEC: usize = 50;
/// The pipeline's budget of per-event lines a second.
const LINES_PER_SEC: usize = 200;
/// Far longer than the limits need; a loaded machine (the suite runs two tests at once) is
/// slow, not wrong.
const FILL_TIMEOUT: Duration = Duration::from_secs(20);
const SCANNER_BLOCK_TIMEOUT: Duration = Duration::from_secs(15);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab's config with `[detect]` and `[respond]` keys set as given (TOML values).
fn config(lab: &Lab, detect: &[(&str, toml::Value)], respond: &[(&str, toml::Value)]) -> String {
    let mut config: toml::Table = match lab.config(&[]).parse() {
        Ok(table) => table,
        Err(error) => panic!("the lab's config: {error}"),
    };
    for (section, keys) in [("detect", detect), ("respond", respond)] {
        let table = config
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = table {
            for (key, value) in keys {
                table.insert((*key).to_owned(), value.clone());
            }
        }
    }
    config.to_string()
}

/// How many lines fall in each second: for history lines, the unix time they start with; for
/// log lines, the RFC 3339 stamp to the second. Lines without one are not counted.
fn per_second(text: &str, stamp: &Regex) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        if let Some(second) = stamp.captures(line).and_then(|c| c.get(1)) {
            *counts.entry(second.as_str().to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

fn history_stamp() -> Result<Regex, LabError> {
    Ok(Regex::new(r"^(\d{9,11}) - ")?)
}

fn log_stamp() -> Result<Regex, LabError> {
    Ok(Regex::new(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")?)
}

/// The daemon's status line, asked for with SIGUSR1 (the `n`th one asked for this run).
fn status_line(daemon: &mut Daemon<'_>, nth: usize) -> Result<String, LabError> {
    daemon.signal(Signal::SIGUSR1)?;
    let mut line = String::new();
    wait_until("a status line", STATUS_TIMEOUT, || {
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("status: ")).collect();
        if let Some(found) = lines.get(nth) {
            line = (*found).to_owned();
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(line)
}

/// How many blocks the daemon has released, from `nfsentry status --json`.
fn blocks_released(daemon: &Daemon<'_>) -> Result<u64, LabError> {
    let status = match daemon.status_json() {
        // An answer that is not JSON counts as none released yet, as the sampling goes on.
        Err(LabError::Json { .. }) => serde_json::Value::Null,
        other => other?,
    };
    Ok(status["blocks"]["released"].as_u64().unwrap_or(0))
}

/// The number in front of `what` in a status line (`"123 sources tracked"`).
fn status_figure(status: &str, what: &str) -> Option<u64> {
    let pattern = Regex::new(&format!(r"(\d+) {}", regex::escape(what))).ok()?;
    pattern.captures(status)?.get(1)?.as_str().parse().ok()
}

#[test]
fn an_hping3_flood_stays_within_the_rate_and_the_table_and_a_real_scanner_is_blocked_mid_flood(
) -> Result<(), LabError> {
    const MAX_BLOCKS: usize = 200;
    let lab = Lab::new("flood-hping")?;
    let config = config(
        &lab,
        &[],
        &[("max_blocks", toml::Value::Integer(MAX_BLOCKS as i64))],
    );
    let mut daemon = lab.start_daemon(&config)?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);

    let flood_started = Instant::now();
    let mut flood = lab.start_hping3_flood(&["--rand-source", "-S", "-p", FLOOD_PORT])?;
    let mut largest = 0;
    wait_until(
        "the blocked set to fill to max_blocks",
        FILL_TIMEOUT,
        || {
            flood.ensure_running()?;
            let blocked = daemon.blocked_v4()?.len();
            largest = largest.max(blocked);
            Ok(blocked >= MAX_BLOCKS)
        },
    )?;
    let filled_after = flood_started.elapsed();

    // A real scanner starts mid-flood, from its own address, and keeps scanning (a dropped
    // probe is retried by the next run) until the block shows in the kernel.
    let scan_started = Instant::now();
    let stop_scanning = AtomicBool::new(false);
    let (blocked_after, nmap_runs) = thread::scope(|scope| {
        let scanning = scope.spawn(|| {
            let mut runs = 0u32;
            while !stop_scanning.load(Ordering::Relaxed) {
                // Fails once the scanner is blocked mid-run; that is the point.
                let _ = lab.nmap(&["-sS", "-p", SCANNER_PORTS], target);
                runs += 1;
            }
            runs
        });
        let blocked = wait_until(
            "the real scanner in the kernel's blocked set",
            SCANNER_BLOCK_TIMEOUT,
            || {
                let set = daemon.blocked_v4()?;
                largest = largest.max(set.len());
                Ok(set.contains(&scanner))
            },
        );
        let blocked_after = scan_started.elapsed();
        stop_scanning.store(true, Ordering::Relaxed);
        let runs = scanning.join().unwrap_or(0);
        blocked.map(|()| (blocked_after, runs))
    })?;

    // The flood goes on: the table stays at its bound while blocks come and go.
    let until = Instant::now() + Duration::from_secs(2);
    wait_until("two more seconds of flood", Duration::from_secs(10), || {
        flood.ensure_running()?;
        largest = largest.max(daemon.blocked_v4()?.len());
        Ok(Instant::now() >= until)
    })?;
    flood.ensure_running()?;
    flood.stop();
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let status = status_line(&mut daemon, 0)?;

    let history = daemon.history()?;
    let blocks = history.lines().count();
    let per_second = per_second(&history, &history_stamp()?);
    let busiest = per_second.values().copied().max().unwrap_or(0);
    println!(
        "hping3 flood {flood_secs:.1} s: {blocks} blocks ({:.0}/s), blocked set full after \
         {:.1} s, largest {largest}; real scanner blocked {:.1} s after its first nmap run \
         ({nmap_runs} runs); busiest second {busiest} blocks; {status}",
        blocks as f64 / flood_secs,
        filled_after.as_secs_f64(),
        blocked_after.as_secs_f64()
    );
    assert!(
        largest <= MAX_BLOCKS,
        "{largest} addresses in the blocked set, max_blocks {MAX_BLOCKS}"
    );
    // One second's worth at once, then the rate: a little slack for the seconds the daemon
    // ran before and after the flood.
    let allowed = BLOCKS_PER_SEC + (flood_secs.ceil() as usize + 1) * BLOCKS_PER_SEC;
    assert!(
        blocks <= allowed,
        "{blocks} blocks in {flood_secs:.1} s of flood; the rate allows {allowed}"
    );
    assert!(
        busiest <= 2 * BLOCKS_PER_SEC,
        "{busiest} blocks in one second: {per_second:?}"
    );
    assert!(
        status_figure(&status, "held back (rate cap)").is_some_and(|held| held > 0),
        "the flood was never held back by the rate cap: {status}"
    );
    daemon.stop()
}

#[test]
fn a_scanner_with_trigger_two_is_blocked_in_a_spoofed_flood_that_overflows_the_source_table(
) -> Result<(), LabError> {
    const MAX_SOURCES: i64 = 256;
    let lab = Lab::new("flood-scapy")?;
    let config = config(
        &lab,
        &[
            ("scan_trigger", toml::Value::Integer(2)),
            ("max_sources", toml::Value::Integer(MAX_SOURCES)),
        ],
        &[],
    );
    let mut daemon = lab.start_daemon(&config)?;
    let scanner = IpAddr::V4(lab.scanner_v4);

    // One-packet spoofed sources from 198.18.0.0/15, far more of them than the source table
    // holds between any two of the scanner's probes, except the first two, which a scanner
    // sends back to back.
    let flood_port: u16 = FLOOD_PORT.parse().unwrap_or(111);
    let spoofed = |first, count| (SynSenders::Spoofed { first, count }, flood_port);
    let parts = [
        spoofed(0, 10_000),
        (SynSenders::Scanner, 1),
        spoofed(10_000, 20),
        (SynSenders::Scanner, 11),
        spoofed(10_020, 20_000),
        (SynSenders::Scanner, 21),
        spoofed(30_020, 10_000),
    ];
    let spoofed_total: u32 = parts
        .iter()
        .map(|(senders, _)| match senders {
            SynSenders::Spoofed { count, .. } => *count,
            SynSenders::Scanner => 0,
        })
        .sum();
    let sent_at = Instant::now();
    lab.send_syn_burst(&parts)?;
    let sent_after = sent_at.elapsed();
    wait_until(
        "the scanner in the kernel's blocked set",
        SCANNER_BLOCK_TIMEOUT,
        || Ok(daemon.blocked_v4()?.contains(&scanner)),
    )?;
    let blocked_after = sent_at.elapsed();
    let status = status_line(&mut daemon, 0)?;
    println!(
        "flood of {spoofed_total} one-packet spoofed sources in {:.1} s, max_sources \
         {MAX_SOURCES}: scanner blocked {:.1} s after the burst began; {status}",
        sent_after.as_secs_f64(),
        blocked_after.as_secs_f64()
    );
    assert_eq!(
        daemon.blocked_v4()?,
        vec![scanner],
        "one-packet sources never pass scan_trigger = 2"
    );
    let evicted = status_figure(&status, "evicted, ");
    assert!(
        evicted.is_some_and(|evicted| evicted > u64::from(spoofed_total) - 1_000),
        "the flood did not overflow the source table, so the test shows nothing: {status}"
    );
    // The detection lines drown in the flood's (the line budget holds them back); the history
    // line names the probe that took the scanner past the trigger.
    let history = daemon.history()?;
    let line = format!("/{} Port: 21 TCP Blocked", lab.scanner_v4);
    assert!(
        history.lines().any(|entry| entry.ends_with(&line)),
        "no history line ending {line:?}: {history}"
    );
    daemon.stop()
}

#[test]
fn the_log_and_the_history_grow_by_bounded_lines_a_second_during_a_flood_with_short_blocks(
) -> Result<(), LabError> {
    let lab = Lab::new("flood-lines")?;
    let config = config(
        &lab,
        &[],
        &[("block_timeout", toml::Value::String("3s".to_owned()))],
    );
    let mut daemon = lab.start_daemon(&config)?;
    let log_before = daemon.log().len();

    let flood_started = Instant::now();
    let mut flood = lab.start_hping3_flood(&["--rand-source", "-S", "-p", FLOOD_PORT])?;
    // Long enough for blocks to expire while new ones come, and for several spans' summaries.
    // A loaded machine answers fewer flood packets, so the deadline is generous: the test's
    // point is the lines per second, not how fast they come. Releases are counted by the
    // daemon, not from the log: their lines share the alert budget, which the flood's
    // detections use up, so most are rightly summed up as suppressed.
    wait_until(
        "released blocks and several held-back notices",
        3 * FILL_TIMEOUT,
        || {
            flood.ensure_running()?;
            let released = blocks_released(&daemon)?;
            let held_back = daemon.log().matches("new blocks held back").count();
            Ok(released >= 10 && held_back >= 4)
        },
    )?;
    flood.ensure_running()?;
    flood.stop();
    let flood_secs = flood_started.elapsed().as_secs_f64();

    let log = daemon.log();
    let flood_log = log.get(log_before..).unwrap_or("");
    let log_lines = per_second(flood_log, &log_stamp()?);
    let history = daemon.history()?;
    let history_lines = per_second(&history, &history_stamp()?);
    let busiest_log = log_lines.values().copied().max().unwrap_or(0);
    let busiest_history = history_lines.values().copied().max().unwrap_or(0);
    println!(
        "hping3 flood {flood_secs:.1} s with 3 s blocks: log {} lines ({:.0} bytes/s, busiest \
         second {busiest_log} lines), history {} lines ({:.0} bytes/s, busiest second \
         {busiest_history})",
        flood_log.lines().count(),
        flood_log.len() as f64 / flood_secs,
        history.lines().count(),
        history.len() as f64 / flood_secs,
    );
    // A wall-clock second can overlap two of the limiter's spans; each adds at most its
    // summary lines, and a few lines (start-up, status) are outside the budget.
    assert!(
        busiest_log <= 2 * (LINES_PER_SEC + 2) + 10,
        "{busiest_log} log lines in one second: {log_lines:?}"
    );
    assert!(
        busiest_history <= 2 * BLOCKS_PER_SEC,
        "{busiest_history} history lines in one second: {history_lines:?}"
    );
    assert!(
        flood_log.contains("alert lines suppressed in the last second"),
        "the flood never reached the line budget, so the test shows nothing"
    );
    daemon.stop()
}
