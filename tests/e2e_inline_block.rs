//! End-to-end: the queue reader puts a block into the kernel's set itself, before the verdict
//! of the packet that triggered it, without waiting for the responder thread. The responder is
//! held stopped (ptrace stops that one thread; the rest of the daemon runs on) while a scanner
//! trips a bait port: its address reaches the kernel's blocked set and its next connection to
//! a port in use fails, although the responder has neither logged nor journaled the block.
//! Let go, the responder carries the block out as always, and the block is timed once.
//! With the admin's sets (`respond.blocked_table`) not loaded yet, the reader's commit is
//! refused and counted, and the responder's path takes the block; once they are loaded, the
//! reader puts blocks into them itself. And the responder never adds such an element again: an
//! admin's `nft delete element` made before the responder got to the block stays done.

mod common;

use std::fs;
use std::net::IpAddr;
use std::time::Duration;

use common::{spoofed_v4, wait_until, Lab, LabError, HTTP_PORT, TABLE};

/// One SYN from scapy reaches the daemon well within this; the rest is daemon latency.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// A monitored TCP port of the lab's config.
const BAIT_PORT: u16 = 111;
/// The admin's table holding the blocked sets, in the second test.
const ADMIN_TABLE: &str = "inlineadmin";

/// One thread of another process, stopped with ptrace (PTRACE_SEIZE and PTRACE_INTERRUPT stop
/// that thread alone, without a signal the others would see) until dropped.
struct StoppedThread {
    tid: libc::pid_t,
}

impl StoppedThread {
    /// Stops the thread of process `pid` named `name`.
    fn stop(pid: u32, name: &str) -> StoppedThread {
        let tasks = format!("/proc/{pid}/task");
        let tid: libc::pid_t = fs::read_dir(&tasks)
            .unwrap_or_else(|e| panic!("cannot list {tasks}: {e}"))
            .filter_map(|task| {
                let task = task.ok()?;
                let comm = fs::read_to_string(task.path().join("comm")).ok()?;
                (comm.trim_end() == name).then(|| task.file_name().to_str()?.parse().ok())?
            })
            .next()
            .unwrap_or_else(|| panic!("no thread named {name} in {tasks}"));
        // SAFETY: plain ptrace and waitpid calls on a thread id; no memory is passed.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "PTRACE_SEIZE of thread {tid}: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0),
                0,
                "PTRACE_INTERRUPT of thread {tid}: {}",
                std::io::Error::last_os_error()
            );
            let mut status = 0;
            assert_eq!(
                libc::waitpid(tid, &mut status, libc::__WALL),
                tid,
                "waiting for thread {tid} to stop: {}",
                std::io::Error::last_os_error()
            );
            assert!(libc::WIFSTOPPED(status), "thread {tid}: status {status:#x}");
        }
        StoppedThread { tid }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // SAFETY: as above. The thread goes on where it stopped.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.tid, 0, 0);
        }
    }
}

#[test]
fn the_queue_reader_blocks_in_the_kernel_while_the_responder_is_stopped() -> Result<(), LabError> {
    let lab = Lab::new("e2einline")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    daemon.wait_for_log("watching;", LOG_TIMEOUT)?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "HTTP before the scan"
    );

    let pid = daemon.pid().ok_or(LabError::DaemonNotRunning)?;
    let responder = StoppedThread::stop(pid, "responder");
    lab.scapy_send(&format!(
        "[IP(src=SCANNER, dst=TARGET)/TCP(sport=40000, dport={BAIT_PORT}, flags='S')]"
    ))?;
    wait_until("the scanner in blocked_v4", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&scanner))
    })?;
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "the blocked scanner still fetches over HTTP"
    );
    let blocked_line = format!("Host {scanner} has been blocked");
    assert!(
        !daemon.log().contains(&blocked_line),
        "the stopped responder carried the block out"
    );
    let timed = daemon.status_json()?["trigger_to_block"].clone();
    assert_eq!(timed["blocks"], 1, "{timed}");
    assert_eq!(timed["inline_blocks"], 1, "{timed}");
    assert_eq!(timed["inline_failures"], 0, "{timed}");

    drop(responder);
    daemon.wait_for_log(&blocked_line, LOG_TIMEOUT)?;
    wait_until("the block in the journal", LOG_TIMEOUT, || {
        Ok(lab.journaled_blocks().contains(&scanner))
    })?;
    assert_eq!(daemon.blocked_v4()?, [scanner], "one element for the block");
    let timed = daemon.status_json()?["trigger_to_block"].clone();
    assert_eq!(timed["blocks"], 1, "the block was timed twice: {timed}");
    daemon.stop()?;
    Ok(())
}

#[test]
fn a_refused_inline_commit_leaves_the_block_to_the_responder() -> Result<(), LabError> {
    let lab = Lab::new("e2einline-admin")?;
    let config = format!(
        "{}blocked_table = \"inet {ADMIN_TABLE}\"\n",
        lab.config(&[])
    );
    let daemon = lab.start_daemon(&config)?;
    let [first, second] = <[IpAddr; 2]>::try_from(spoofed_v4(2)).expect("two sources");

    // The admin's sets are not loaded yet: the reader's commit is refused, the block is
    // journaled all the same.
    lab.scapy_send(&lab.syns_from(&[first], BAIT_PORT))?;
    wait_until("the first block in the journal", BLOCK_TIMEOUT, || {
        Ok(lab.journaled_blocks().contains(&first))
    })?;
    let timed = daemon.status_json()?["trigger_to_block"].clone();
    assert_eq!(timed["inline_blocks"], 0, "{timed}");
    assert!(timed["inline_failures"].as_u64() >= Some(1), "{timed}");

    lab.nft_load(&format!(
        "table inet {ADMIN_TABLE} {{\n\
         \tset blocked_v4 {{ type ipv4_addr; flags timeout; }}\n\
         \tset blocked_v6 {{ type ipv6_addr; flags timeout; }}\n\
         }}\n"
    ))?;
    let admin_v4 = || lab.nft_set_elements(ADMIN_TABLE, "blocked_v4");
    wait_until("the first block in the admin's set", BLOCK_TIMEOUT, || {
        Ok(admin_v4()?.contains(&first))
    })?;
    lab.scapy_send(&lab.syns_from(&[second], BAIT_PORT))?;
    wait_until("the second block in the admin's set", BLOCK_TIMEOUT, || {
        Ok(admin_v4()?.contains(&second))
    })?;
    wait_until("the second block timed", BLOCK_TIMEOUT, || {
        Ok(daemon.status_json()?["trigger_to_block"]["inline_blocks"] == 1)
    })?;
    Ok(())
}

#[test]
fn blocks_handed_out_by_the_rate_limit_later_go_in_inline_too() -> Result<(), LabError> {
    let lab = Lab::new("e2einline-rate")?;
    // One block a second: the first source is blocked by its own packet, the others wait in
    // line and get their tokens from the reader's tick, with no packet of theirs to judge.
    let config = lab
        .config(&[])
        .replace("[respond]\n", "[respond]\nmax_blocks_per_sec = 1\n");
    let mut daemon = lab.start_daemon(&config)?;
    daemon.wait_for_log("watching;", LOG_TIMEOUT)?;
    let sources = spoofed_v4(3);

    let pid = daemon.pid().ok_or(LabError::DaemonNotRunning)?;
    let responder = StoppedThread::stop(pid, "responder");
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    wait_until("every source in blocked_v4", BLOCK_TIMEOUT, || {
        let blocked = daemon.blocked_v4()?;
        Ok(sources.iter().all(|source| blocked.contains(source)))
    })?;
    let timed = daemon.status_json()?["trigger_to_block"].clone();
    assert_eq!(timed["inline_blocks"], 3, "{timed}");

    drop(responder);
    wait_until("every block in the journal", LOG_TIMEOUT, || {
        Ok(sources
            .iter()
            .all(|source| lab.journaled_blocks().contains(source)))
    })?;
    assert_eq!(daemon.status_json()?["trigger_to_block"]["blocks"], 3);
    daemon.stop()?;
    Ok(())
}

#[test]
fn an_element_deleted_by_hand_before_the_responder_got_to_it_stays_deleted() -> Result<(), LabError>
{
    let lab = Lab::new("e2einline-hand")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&lab.config(&[]))?;
    daemon.wait_for_log("watching;", LOG_TIMEOUT)?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);

    // The nft watch is held too, so that the responder meets the block before it hears of the
    // deletion, as it would with a watch running late.
    let pid = daemon.pid().ok_or(LabError::DaemonNotRunning)?;
    let responder = StoppedThread::stop(pid, "responder");
    let watch = StoppedThread::stop(pid, "nft-watch");
    lab.scapy_send(&lab.syns_from(&[scanner], BAIT_PORT))?;
    wait_until("the scanner in blocked_v4", BLOCK_TIMEOUT, || {
        Ok(daemon.blocked_v4()?.contains(&scanner))
    })?;
    lab.nft_delete_element(TABLE, "blocked_v4", scanner)?;
    assert!(!daemon.blocked_v4()?.contains(&scanner));

    // The responder journals the block and logs it, and leaves the set as the admin left it.
    drop(responder);
    wait_until("the block in the journal", LOG_TIMEOUT, || {
        Ok(lab.journaled_blocks().contains(&scanner))
    })?;
    daemon.wait_for_log(
        format!("Host {scanner} has been blocked").as_str(),
        LOG_TIMEOUT,
    )?;
    assert_eq!(
        daemon.blocked_v4()?,
        Vec::<IpAddr>::new(),
        "the responder put the element deleted by hand back"
    );
    let timed = daemon.status_json()?["trigger_to_block"].clone();
    assert_eq!(timed["blocks"], 1, "{timed}");
    assert_eq!(timed["inline_blocks"], 1, "{timed}");

    // Once the watch reports the deletion, it is a release by hand: journaled, and the host is
    // let in again.
    drop(watch);
    let released = format!(
        "attackalert: Host {scanner} has been released (released by hand by nft (netlink port"
    );
    daemon.wait_for_log(released.as_str(), LOG_TIMEOUT)?;
    wait_until("the release in the journal", LOG_TIMEOUT, || {
        Ok(!lab.journaled_blocks().contains(&scanner))
    })?;
    assert_eq!(
        daemon.blocked_v4()?,
        Vec::<IpAddr>::new(),
        "the release by hand was undone"
    );
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "the host released by hand is still shut out"
    );
    daemon.stop()?;
    Ok(())
}
