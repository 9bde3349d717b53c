//! End-to-end checks of `nfsentry run` in a hostile world: another process flushes the ruleset,
//! deletes the table, flushes a blocked set or deletes one blocked address; a second nfsentry
//! is started on the same table or state directory; the daemon is SIGKILLed in the middle of a
//! burst of blocks; its state directory is full or read-only. Detection is `e2e_scans.rs`'s
//! job: here crafted SYNs from spoofed sources to a bait port are the trigger.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    journaled, spoofed_v4, spoofed_v6, wait_until, Daemon, Lab, LabError, Side, DAEMON_BIN,
    HTTP_PORT, TABLE,
};
use nix::sys::signal::Signal;
use regex::Regex;

/// A monitored TCP port (see `MONITORED_TCP_CONFIG`).
const BAIT_PORT: u16 = 111;
/// Crafted SYNs reach the daemon well within this; the rest is daemon latency.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// The repair is due within a second; this only bounds a wait on a busy machine.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(5);
/// A log line that follows an effect already observed.
const LOG_FOLLOW_TIMEOUT: Duration = Duration::from_secs(3);
/// The daemon tries a refused write again every 2 s.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(8);

fn blocked(daemon: &Daemon<'_>) -> Result<BTreeSet<IpAddr>, LabError> {
    if !daemon.table_exists()? {
        return Ok(BTreeSet::new());
    }
    let mut all: BTreeSet<IpAddr> = daemon.blocked_v4()?.into_iter().collect();
    all.extend(daemon.blocked_v6()?);
    Ok(all)
}

fn wait_blocked(
    what: &str,
    daemon: &Daemon<'_>,
    expected: &BTreeSet<IpAddr>,
    timeout: Duration,
) -> Result<Duration, LabError> {
    let started = Instant::now();
    wait_until(what, timeout, || Ok(blocked(daemon)? == *expected))?;
    Ok(started.elapsed())
}

fn journal(state_dir: &Path) -> Result<String, LabError> {
    let path = state_dir.join("blocks");
    fs::read_to_string(&path).map_err(|source| LabError::File { path, source })
}

/// Every line of the journal is one the daemon writes, whole; a torn line would have the next
/// record glued onto it and miss its field count.
fn assert_journal_whole(text: &str) {
    let record =
        Regex::new(r"^(#.*|\+ \S+ \d+ (\d+|never) \S+ \d+ \S+ (verified|unverified)|- \S+)$")
            .unwrap();
    assert!(text.ends_with('\n'), "journal ends in a torn line:\n{text}");
    for line in text.lines() {
        assert!(
            record.is_match(line),
            "torn journal line {line:?} in:\n{text}"
        );
    }
}

fn count_lines(daemon: &Daemon<'_>, needle: &str) -> usize {
    daemon
        .log()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// A log line `[ERROR] nft ruleset damaged by nft ...: <what>...`.
fn damage_line(what: &str) -> Regex {
    Regex::new(&format!(
        r"\[ERROR\] nft ruleset damaged by nft \(netlink port \d+\): .*{}",
        regex::escape(what)
    ))
    .unwrap()
}

#[test]
fn a_flushed_ruleset_a_deleted_table_and_a_flushed_set_come_back_with_every_block(
) -> Result<(), LabError> {
    let lab = Lab::new("heal-flush")?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let mut sources = spoofed_v4(4);
    sources.extend(spoofed_v6(2));
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_blocked("every source to be blocked", &daemon, &every, BLOCK_TIMEOUT)?;

    // Restarting Debian's nftables service does this.
    lab.run_in(Side::Target, &["nft", "flush", "ruleset"])?;
    let took = wait_blocked(
        "the flushed ruleset to come back",
        &daemon,
        &every,
        REPAIR_TIMEOUT,
    )?;
    eprintln!("flush ruleset: every block back after {took:?}");
    daemon.wait_for_log(
        &damage_line("table inet nfsentry deleted"),
        LOG_FOLLOW_TIMEOUT,
    )?;
    let chain = lab.run_in(
        Side::Target,
        &["nft", "list", "chain", "inet", TABLE, "prerouting"],
    )?;
    assert!(chain.stdout.contains("queue"), "{}", chain.stdout);
    assert!(
        lab.run_in(Side::Target, &["nft", "list", "table", "netdev", TABLE])
            .is_ok(),
        "the netdev table did not come back"
    );

    lab.run_in(Side::Target, &["nft", "delete", "table", "inet", TABLE])?;
    let took = wait_blocked(
        "the deleted table to come back",
        &daemon,
        &every,
        REPAIR_TIMEOUT,
    )?;
    eprintln!("delete table: every block back after {took:?}");
    wait_until("a second damage line", LOG_FOLLOW_TIMEOUT, || {
        Ok(count_lines(&daemon, "table inet nfsentry deleted") == 2)
    })?;

    lab.run_in(
        Side::Target,
        &["nft", "flush", "set", "inet", TABLE, "blocked_v4"],
    )?;
    let took = wait_blocked(
        "the flushed set to fill again",
        &daemon,
        &every,
        REPAIR_TIMEOUT,
    )?;
    eprintln!("flush set: every block back after {took:?}");
    daemon.wait_for_log(
        &damage_line("every IPv4 block (4 elements) deleted at once"),
        LOG_FOLLOW_TIMEOUT,
    )?;
    assert!(
        !daemon.log().contains("released by hand"),
        "a flush was taken for releases:\n{}",
        daemon.log()
    );
    assert_eq!(journaled(&journal(&lab.state_dir())?), every);
    // The status line counts what is blocked, as before the damage.
    let pid = daemon
        .pid()
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or(0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR1).map_err(|source| {
        LabError::Signal {
            pid: pid as u32,
            source,
        }
    })?;
    daemon.wait_for_log(&format!("{} blocked now", every.len()), LOG_FOLLOW_TIMEOUT)?;
    for line in daemon
        .log()
        .lines()
        .filter(|l| l.contains("reinstalled with"))
    {
        eprintln!("{line}");
    }
    daemon.stop()
}

#[test]
fn a_block_deleted_by_hand_is_released_and_stays_released_after_a_restart() -> Result<(), LabError>
{
    let lab = Lab::new("heal-hand")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);
    let others = spoofed_v4(3);
    let mut sources = others.clone();
    sources.push(scanner);
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_blocked("every source to be blocked", &daemon, &every, BLOCK_TIMEOUT)?;
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "the block does not hold"
    );

    lab.nft_delete_element(TABLE, "blocked_v4", scanner)?;
    let released = format!(
        "attackalert: Host {scanner} has been released (released by hand by nft (netlink port"
    );
    daemon.wait_for_log(released.as_str(), LOG_FOLLOW_TIMEOUT)?;
    let rest: BTreeSet<IpAddr> = others.iter().copied().collect();
    assert_eq!(
        blocked(&daemon)?,
        rest,
        "the release was undone, or others went"
    );
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "the released host is still shut out"
    );
    assert_eq!(journaled(&journal(&lab.state_dir())?), rest);

    // The detector forgot the block too: a new probe blocks the host again.
    lab.scapy_send(&lab.syns_from(&[scanner], BAIT_PORT))?;
    wait_blocked(
        "the host to be blocked again",
        &daemon,
        &every,
        BLOCK_TIMEOUT,
    )?;
    lab.nft_delete_element(TABLE, "blocked_v4", scanner)?;
    wait_until("the second release", LOG_FOLLOW_TIMEOUT, || {
        Ok(count_lines(&daemon, &released) == 2)
    })?;

    daemon.restart()?;
    wait_blocked(
        "the other blocks to come back",
        &daemon,
        &rest,
        BLOCK_TIMEOUT,
    )?;
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "the release was undone at start"
    );
    daemon.stop()
}

/// `nft -j -s list ruleset`: the whole ruleset, without counters.
fn ruleset(lab: &Lab) -> Result<String, LabError> {
    Ok(lab
        .run_in(Side::Target, &["nft", "-j", "-s", "list", "ruleset"])?
        .stdout)
}

#[test]
fn a_second_instance_refuses_to_start_and_changes_nothing() -> Result<(), LabError> {
    let lab = Lab::new("heal-twice")?;
    let config = lab.config(&[]);
    let mut daemon = lab.start_daemon(&config)?;
    let sources = spoofed_v4(2);
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_blocked("the sources to be blocked", &daemon, &every, BLOCK_TIMEOUT)?;
    // The queue reader puts blocks into the set before the responder journals them.
    wait_until("the blocks to be journaled", BLOCK_TIMEOUT, || {
        Ok(journal(&lab.state_dir()).is_ok_and(|text| journaled(&text) == every))
    })?;
    let before = ruleset(&lab)?;
    let journal_before = journal(&lab.state_dir())?;

    let config_path = daemon.config_path().to_string_lossy().into_owned();
    let second =
        lab.run_in_allow_failure(Side::Target, &[DAEMON_BIN, "run", "--config", &config_path])?;
    assert!(!second.status.success(), "{second:?}");
    assert!(
        second.stderr.contains(
            "another nfsentry is running with table \"nfsentry\" in this network namespace"
        ),
        "{}",
        second.stderr
    );

    // Another table, the same state directory.
    let other_table = config.replace(&format!("table = \"{TABLE}\""), "table = \"other\"");
    assert_ne!(other_table, config);
    let other_path = lab.work_dir().join("other.toml");
    fs::write(&other_path, &other_table).map_err(|source| LabError::File {
        path: other_path.clone(),
        source,
    })?;
    let other_path = other_path.to_string_lossy().into_owned();
    let third =
        lab.run_in_allow_failure(Side::Target, &[DAEMON_BIN, "run", "--config", &other_path])?;
    assert!(!third.status.success(), "{third:?}");
    assert!(
        third.stderr.contains(&format!(
            "is using the state directory {}",
            lab.state_dir().display()
        )),
        "{}",
        third.stderr
    );

    assert_eq!(
        ruleset(&lab)?,
        before,
        "a refused instance changed the ruleset"
    );
    assert_eq!(journal(&lab.state_dir())?, journal_before);
    assert!(daemon.is_running());
    daemon.stop()
}

#[test]
fn after_a_sigkill_in_a_burst_a_restart_restores_exactly_what_was_in_force() -> Result<(), LabError>
{
    let lab = Lab::new("heal-kill")?;
    // No rate cap: the burst should be under way in the kernel, not waiting for tokens.
    let config = lab
        .config(&[])
        .replace("[daemon]\n", "[daemon]\nhistory_max_bytes = 4096\n")
        .replace("[respond]\n", "[respond]\nmax_blocks_per_sec = 0\n");
    let mut daemon = lab.start_daemon(&config)?;
    let sources = spoofed_v4(400);
    let burst = lab.scapy_send_in_background(&lab.syns_from(&sources, BAIT_PORT))?;
    wait_until("a burst of blocks under way", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.len() >= 120)
    })?;
    match daemon.stop_with(Signal::SIGKILL) {
        Err(LabError::UncleanExit { .. }) => {}
        other => panic!("SIGKILL should end the daemon uncleanly: {other:?}"),
    }
    // With nobody on the queue the rest of the burst passes: the sets stop changing.
    burst.finish(Duration::from_secs(60))?;
    let in_force: BTreeSet<IpAddr> = daemon.blocked_v4()?.into_iter().collect();
    assert!(
        in_force.len() >= 120 && in_force.len() < sources.len(),
        "{}",
        in_force.len()
    );

    daemon.start()?;
    wait_blocked(
        "exactly the blocks in force",
        &daemon,
        &in_force,
        BLOCK_TIMEOUT,
    )?;
    daemon.wait_for_log("taking them over", LOG_FOLLOW_TIMEOUT)?;
    daemon.stop()?;
    let text = journal(&lab.state_dir())?;
    assert_journal_whole(&text);
    assert_eq!(journaled(&text), in_force);

    // The history file was rotated at its bound, once.
    let history = lab.state_dir().join("history");
    let size = |path: &Path| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(size(&history) <= 4096, "{}", size(&history));
    assert!(size(&lab.state_dir().join("history.1")) > 0, "no history.1");
    assert!(!lab.state_dir().join("history.2").exists());
    Ok(())
}

/// A small tmpfs mounted at `path` in this test's mount namespace, which the daemon's `ip netns
/// exec` inherits; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Result<Tmpfs, LabError> {
        fs::create_dir_all(path).map_err(|source| LabError::File {
            path: path.to_owned(),
            source,
        })?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .map_err(|source| LabError::File {
                path: path.to_owned(),
                source,
            })?;
        assert!(
            status.success(),
            "mount tmpfs at {}: {status}",
            path.display()
        );
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let chunk = [0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        // The last page may have taken part of a chunk; fill the tail byte by byte.
        while file.write_all(&[0]).is_ok() {}
        filler
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn config_with_state_dir(lab: &Lab, state_dir: &Path) -> String {
    let default = format!("state_dir = {:?}", lab.state_dir().to_string_lossy());
    let config = lab.config(&[]);
    assert!(config.contains(&default), "{config}");
    config.replace(
        &default,
        &format!("state_dir = {:?}", state_dir.to_string_lossy()),
    )
}

#[test]
fn a_full_state_directory_keeps_blocks_in_force_and_catches_up_without_a_torn_line(
) -> Result<(), LabError> {
    let lab = Lab::new("heal-full")?;
    let mount = Tmpfs::mount(&lab.work_dir().join("full"), "size=64k")?;
    let filler = mount.fill();
    let mut daemon = lab.start_daemon(&config_with_state_dir(&lab, &mount.path))?;
    daemon.wait_for_log("cannot persist blocks", LOG_FOLLOW_TIMEOUT)?;

    let sources = spoofed_v4(40);
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_blocked("every source to be blocked", &daemon, &every, BLOCK_TIMEOUT)?;
    assert_eq!(
        count_lines(&daemon, "cannot persist"),
        1,
        "{}",
        daemon.log()
    );

    fs::remove_file(&filler).map_err(|source| LabError::File {
        path: filler.clone(),
        source,
    })?;
    daemon.wait_for_log("the state directory takes writes again", CATCH_UP_TIMEOUT)?;
    let text = journal(&mount.path)?;
    assert_journal_whole(&text);
    assert_eq!(journaled(&text), every);
    assert_eq!(
        fs::read_to_string(mount.path.join("history"))
            .unwrap_or_default()
            .lines()
            .count(),
        every.len()
    );

    daemon.restart()?;
    wait_blocked("the blocks after a restart", &daemon, &every, BLOCK_TIMEOUT)?;
    assert_journal_whole(&journal(&mount.path)?);
    daemon.stop()?;
    drop(mount);
    Ok(())
}

#[test]
fn a_read_only_state_directory_still_protects_and_hands_its_blocks_to_the_next_start(
) -> Result<(), LabError> {
    let lab = Lab::new("heal-ro")?;
    let mount = Tmpfs::mount(&lab.work_dir().join("ro"), "size=1m")?;
    let earlier = spoofed_v4(1);
    fs::write(
        mount.path.join("blocks"),
        format!("+ {} 1700000000 never TCP 23 SYN/Normal\n", earlier[0]),
    )
    .map_err(|source| LabError::File {
        path: mount.path.join("blocks"),
        source,
    })?;
    mount.remount("ro");
    let mut daemon = lab.start_daemon(&config_with_state_dir(&lab, &mount.path))?;
    daemon.wait_for_log("cannot persist blocks", LOG_FOLLOW_TIMEOUT)?;

    let later = spoofed_v6(1);
    lab.scapy_send(&lab.syns_from(&later, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = earlier.iter().chain(&later).copied().collect();
    wait_blocked(
        "the journaled and the new block",
        &daemon,
        &every,
        BLOCK_TIMEOUT,
    )?;

    // What could not be written stays in the kernel for the next start to take over.
    daemon.stop()?;
    assert!(
        daemon.table_exists()?,
        "the table went with unsaved blocks in it"
    );
    assert!(daemon
        .log()
        .contains("leaving nft tables inet nfsentry and netdev nfsentry in place"));
    daemon.start()?;
    wait_blocked("the blocks after a restart", &daemon, &every, BLOCK_TIMEOUT)?;
    daemon.stop()?;
    drop(mount);
    Ok(())
}
