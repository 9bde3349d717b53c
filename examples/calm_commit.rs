//! The baseline of `benches/trigger_to_block.sh`: what the kernel itself takes to commit one
//! blocked element when calm, timed alone, with nothing of nfsentry's detection around it.
//!
//!   calm_commit [COMMITS] [GAP_MS]
//!
//! Defaults: 100 commits, 20 ms apart. Each is one `Nft::block_many` call of one address, the
//! netlink batch the queue reader sends for a block, timed from its send to the kernel's ack.
//! Runs in a network namespace of its own (unshare), so the table it creates goes with it when
//! it exits; needs root. Prints one line: `p50 MICROSECONDS p99 MICROSECONDS`.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use nfsentry::nft::netlink::Nft;

const TABLE: &str = "nfsentry_calm";
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(3600));

fn nft(args: &[&str]) {
    let status = Command::new("nft")
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run nft {args:?}: {e}"));
    assert!(status.success(), "nft {args:?} failed: {status}");
}

fn argument(position: usize, default: u64) -> u64 {
    std::env::args()
        .nth(position)
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("argument {position}: not a number: {text}"))
        })
        .unwrap_or(default)
}

fn main() {
    let commits = argument(1, 100).max(1);
    let gap = Duration::from_millis(argument(2, 20));

    // A namespace of our own: created here, gone when the process exits.
    // SAFETY: unshare takes no pointers; it only changes this process's namespace.
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
    let mut netlink = Nft::open().expect("nf_tables netlink socket");
    let mut took: Vec<Duration> = (0..commits)
        .map(|i| {
            std::thread::sleep(gap);
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i as u32));
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
