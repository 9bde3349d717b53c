//! Several queues end to end: with `queue = "0-3"` the kernel spreads packets over four queues
//! by address, nfsentry reads each with its own thread and shard of the tables, and a scan from
//! any source is still detected and blocked, whichever queue its packets reach. The kernel's
//! own view (`/proc/net/netfilter/nfnetlink_queue`) says the four queues are bound by the
//! daemon and saw packets, and `nfsentry status` adds up what every shard counted.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{wait_until, Lab, LabError, Side, SCANNER_IF};
use regex::Regex;

type Result<T> = std::result::Result<T, LabError>;

const BLOCK_TIMEOUT: Duration = Duration::from_secs(20);
/// A monitored TCP port of the lab's config.
const BAIT_PORT: u16 = 111;
/// Sources scanning: with four queues, the chance that the kernel's hash puts all of them on
/// one queue is 4 * (1/4)^12, about 1 in 4 million.
const SOURCES: u8 = 12;
const QUEUES: [u16; 4] = [0, 1, 2, 3];

/// One line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug)]
struct KernelQueue {
    /// The netlink port id of the socket bound to the queue.
    port_id: u32,
    /// Packets the kernel has queued to it since it was bound.
    queued: u64,
}

/// The kernel's queues in the target namespace, by number.
fn kernel_queues(lab: &Lab) -> Result<BTreeMap<u16, KernelQueue>> {
    let text = lab
        .run_in(
            Side::Target,
            &["cat", "/proc/net/netfilter/nfnetlink_queue"],
        )?
        .stdout;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            // queue, port id, waiting, copy mode, copy range, queue dropped, user dropped,
            // id sequence, 1
            let [queue, port_id, _, _, _, _, _, id_sequence, ..] = fields[..] else {
                return None;
            };
            Some((
                u16::try_from(queue).ok()?,
                KernelQueue {
                    port_id: u32::try_from(port_id).ok()?,
                    queued: id_sequence,
                },
            ))
        })
        .collect())
}

/// The socket inodes of the netfilter netlink sockets in the target namespace, by port id
/// (`/proc/net/netlink`: sk, protocol, port id, groups, rmem, wmem, dump, locks, drops, inode).
fn netfilter_socket_inodes(lab: &Lab) -> Result<BTreeMap<u32, u64>> {
    const NETLINK_NETFILTER: &str = "12";
    let text = lab
        .run_in(Side::Target, &["cat", "/proc/net/netlink"])?
        .stdout;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&NETLINK_NETFILTER) {
                return None;
            }
            let port_id = fields.get(2)?.parse().ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some((port_id, inode))
        })
        .collect())
}

/// Whether process `pid` holds the socket with this inode.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == wanted.as_str())
        })
}

#[test]
fn sources_spread_over_four_queues_are_each_blocked_and_counted_once() -> Result<()> {
    let lab = Lab::new("queues")?;
    // Real addresses of the scanner's interface, in the lab's /24 next to its own.
    let base = lab.scanner_v4.octets();
    let sources: Vec<Ipv4Addr> = (0..SOURCES)
        .map(|n| Ipv4Addr::new(base[0], base[1], base[2], 100 + n))
        .collect();
    for source in &sources {
        lab.run_in(
            Side::Scanner,
            &[
                "ip",
                "addr",
                "add",
                &format!("{source}/24"),
                "dev",
                SCANNER_IF,
            ],
        )?;
    }
    let config = lab.config(&[]).replace("queue = 0\n", "queue = \"0-3\"\n");
    assert!(config.contains("queue = \"0-3\""), "{config}");
    let mut daemon = lab.start_daemon(&config)?;
    let pid = daemon.pid().expect("the daemon runs");

    // Every queue is bound, each to a socket of the daemon's own.
    let queues = kernel_queues(&lab)?;
    let inodes = netfilter_socket_inodes(&lab)?;
    for number in QUEUES {
        let queue = queues
            .get(&number)
            .unwrap_or_else(|| panic!("queue {number} is not bound: {queues:?}"));
        let inode = inodes
            .get(&queue.port_id)
            .unwrap_or_else(|| panic!("no netlink socket with port id {}", queue.port_id));
        assert!(
            holds_socket(pid, *inode),
            "queue {number} is bound by a socket nfsentry ({pid}) does not hold"
        );
    }

    let list: Vec<String> = sources
        .iter()
        .map(|source| {
            format!("IP(src='{source}', dst=TARGET)/TCP(sport=40000, dport={BAIT_PORT}, flags='S')")
        })
        .collect();
    lab.scapy_send(&format!("[{}]", list.join(", ")))?;

    wait_until("every source in blocked_v4", BLOCK_TIMEOUT, || {
        let blocked = daemon.blocked_v4()?;
        Ok(sources
            .iter()
            .all(|source| blocked.contains(&IpAddr::V4(*source))))
    })?;
    for source in &sources {
        let alert = Regex::new(&format!(
            r"attackalert: SYN/Normal scan from host: \S+/{} to TCP port: {BAIT_PORT}\b",
            regex::escape(&source.to_string())
        ))?;
        daemon.wait_for_log(&alert, BLOCK_TIMEOUT)?;
    }

    let queues = kernel_queues(&lab)?;
    let busy = queues.values().filter(|queue| queue.queued > 0).count();
    assert!(busy > 1, "the packets all went to one queue: {queues:?}");
    let kernel_total: u64 = queues.values().map(|queue| queue.queued).sum();
    assert!(kernel_total >= u64::from(SOURCES), "{queues:?}");

    // Each shard publishes after its batch: the sums settle on the kernel's own count.
    wait_until(
        "status to add up every queue's shard",
        BLOCK_TIMEOUT,
        || {
            let status = daemon.status_json()?;
            Ok(status["packets"]["queued"] == kernel_total
                && status["packets"]["answered"] == kernel_total
                && status["detections"]["SYN/Normal"] == u64::from(SOURCES)
                && status["blocks"]["ordered"] == u64::from(SOURCES)
                && status["blocks"]["now"] == u64::from(SOURCES))
        },
    )?;
    let status = daemon.status_json()?;
    assert_eq!(status["queues"], serde_json::json!(QUEUES), "{status}");
    let reported: Vec<u64> = status["kernel_queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|queue| queue["queue"].as_u64())
        .collect();
    assert_eq!(reported, [0, 1, 2, 3], "{status}");
    Ok(())
}
