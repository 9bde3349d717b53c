//! The control socket: how `nfsentry status`, `list`, `block`, `unblock`, `flush` and `reload`
//! reach the running daemon, and how their answers are printed.
//!
//! [`protocol`] is what is said (one JSON line each way, also what `--json` prints),
//! [`server`] the daemon's end (a thread of its own, mode 0600), [`client`] the command's end
//! (with a deadline), [`render`] the text a person reads. What each request does inside the
//! daemon is the daemon's [`server::Handler`].

pub mod client;
pub mod protocol;
pub mod render;
pub mod server;

use protocol::KernelQueue;

/// Where the kernel reports each NFQUEUE's counters.
pub const KERNEL_QUEUES: &str = "/proc/net/netfilter/nfnetlink_queue";

/// The counters of the queues in `wanted`, from the text of [`KERNEL_QUEUES`]: one line per
/// bound queue, `queue_number peer_portid queue_total copy_mode copy_range queue_dropped
/// user_dropped id_sequence 1` (net/netfilter/nfnetlink_queue.c). Lines that do not read so
/// are skipped.
pub fn kernel_queues(text: &str, wanted: &[u16]) -> Vec<KernelQueue> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let [number, _peer, waiting, _mode, _range, queue_dropped, user_dropped, ..] =
                fields[..]
            else {
                return None;
            };
            let queue = u16::try_from(number).ok()?;
            wanted.contains(&queue).then_some(KernelQueue {
                queue,
                waiting,
                queue_dropped,
                user_dropped,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_are_read_for_our_queues_only() {
        let text = "    0  31337     2 2 65535     5     7 123 1\n\
                    \x20   4  99999     0 2 65535     0     0   9 1\n\
                    garbage line\n";
        assert_eq!(
            kernel_queues(text, &[0]),
            vec![KernelQueue {
                queue: 0,
                waiting: 2,
                queue_dropped: 5,
                user_dropped: 7
            }]
        );
        assert!(kernel_queues(text, &[1]).is_empty());
        assert_eq!(kernel_queues(text, &[0, 4]).len(), 2);
    }
}
