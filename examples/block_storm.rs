//! Blocks into a blocked set, timed: how many addresses per second nfsentry's netlink path puts
//! into a blocked set when the responder coalesces a burst of orders into batches, against one
//! `nft add element` process per address (what a per-block command action would cost); or, with
//! `calm`, what the kernel itself takes to commit one block when calm.
//!
//!   block_storm [ADDRESSES] [NFT_PROCESSES] [BATCH]
//!   block_storm calm [COMMITS] [GAP_MS]
//!
//! Storm defaults: 500000 addresses in batches of 4096 (the responder's largest burst), each
//! batch one `Nft::block_many` call that waits for the kernel's ack, against 300 `nft`
//! processes. Prints one table: figure, nfsentry, baseline, ratio.
//!
//! `calm` (the baseline of `benches/trigger_to_block.sh`): COMMITS (default 100) commits of one
//! address, GAP_MS (default 20) apart, each the netlink batch a queue reader sends for a block,
//! timed from its send to the kernel's ack, with nothing of nfsentry's detection around it.
//! Prints one line: `p50 MICROSECONDS p99 MICROSECONDS`.
//!
//! Runs in a network namespace of its own (unshare), so the table it creates goes with it when
//! it exits; needs root.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use nfsentry::nft::netlink::Nft;

const TABLE: &str = "nfsentry_storm";
/// Every element carries a timeout, as nfsentry's blocks do.
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(3600));

fn nft(args: &[&str]) {
    let status = Command::new("nft")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run nft {args:?}: {e}"));
    assert!(status.success(), "nft {args:?} failed: {status}");
}

fn argument(arguments: &[String], position: usize, default: usize) -> usize {
    arguments
        .get(position)
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("argument {}: not a count: {text}", position + 1))
        })
        .unwrap_or(default)
}

/// The `i`th address of a /8 that nothing else uses.
fn address(base: u32, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(base | (i as u32 & 0x00ff_ffff))
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    // A namespace of our own: created here, gone when the process exits.
    // SAFETY: unshare takes no pointers; it only moves this process to a new namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "cannot create a network namespace (root?): {}",
            std::io::Error::last_os_error()
        );
    }
    nft(&["add", "table", "inet", TABLE]);
    for (set, kind) in [("blocked_v4", "ipv4_addr"), ("blocked_v6", "ipv6_addr")] {
        nft(&[
            "add",
            "set",
            "inet",
            TABLE,
            set,
            &format!("{{ type {kind}; flags timeout; }}"),
        ]);
    }
    let netlink = Nft::open().expect("nf_tables netlink socket");
    match arguments.split_first() {
        Some((mode, rest)) if mode == "calm" => calm(netlink, rest),
        _ => storm(netlink, &arguments),
    }
}

fn storm(mut netlink: Nft, arguments: &[String]) {
    let addresses = argument(arguments, 0, 500_000);
    let processes = argument(arguments, 1, 300);
    let batch = argument(arguments, 2, 4096).max(1);
    let entries: Vec<(IpAddr, Option<Duration>)> = (0..addresses)
        .map(|i| (IpAddr::V4(address(0x0a00_0000, i)), TIMEOUT))
        .collect();
    let start = Instant::now();
    for chunk in entries.chunks(batch) {
        netlink
            .block_many(TABLE, chunk)
            .unwrap_or_else(|e| panic!("block_many of {} addresses: {e}", chunk.len()));
    }
    let ours = start.elapsed();

    let start = Instant::now();
    for i in 0..processes {
        let element = format!("{{ {} timeout 1h }}", address(0xac10_0000, i));
        nft(&["add", "element", "inet", TABLE, "blocked_v4", &element]);
    }
    let theirs = start.elapsed();

    let ours_rate = addresses as f64 / ours.as_secs_f64();
    let theirs_rate = processes as f64 / theirs.as_secs_f64();
    println!("| figure | nfsentry | baseline | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| addresses/s into a blocked set ({addresses} in batches of {batch}; baseline: {processes} \
         `nft add element` processes) | {ours_rate:.0} | {theirs_rate:.0} | {:.0} |",
        ours_rate / theirs_rate
    );
    println!(
        "| µs per address | {:.2} | {:.0} | |",
        1e6 / ours_rate,
        1e6 / theirs_rate
    );
}

fn calm(mut netlink: Nft, arguments: &[String]) {
    let commits = argument(arguments, 0, 100).max(1);
    let gap = Duration::from_millis(argument(arguments, 1, 20) as u64);
    let mut took: Vec<Duration> = (0..commits)
        .map(|i| {
            std::thread::sleep(gap);
            let address = IpAddr::V4(address(0x0a00_0000, i));
            let start = Instant::now();
            netlink
                .block_many(TABLE, &[(address, TIMEOUT)])
                .unwrap_or_else(|e| panic!("block_many of {address}: {e}"));
            start.elapsed()
        })
        .collect();
    took.sort();
    let at = |q: f64| took[((q * took.len() as f64) as usize).min(took.len() - 1)];
    println!(
        "p50 {:.0} p99 {:.0}",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}
