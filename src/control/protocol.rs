//! What the control commands and the daemon say to each other: one JSON request line, one JSON
//! answer line. The types are also what `--json` prints, so scripts read the same fields the
//! daemon sends. Pure data and its encoding; the socket is [`super::server`]'s and
//! [`super::client`]'s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads: every request is a few dozen bytes, so anything
/// longer is not a client of ours and is refused without being buffered.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// The longest answer line a client reads: a `list` of the largest block table the config
/// allows (16M entries) does not fit, but a client must bound what it buffers; 256 MiB holds
/// about a million entries.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// One command to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    List,
    /// Blocks `address` through every configured action, as if it had scanned; `timeout_secs`
    /// `None` means the configured block timeout, `Some(0)` until released.
    Block {
        address: IpAddr,
        timeout_secs: Option<u64>,
    },
    Unblock {
        address: IpAddr,
    },
    Flush,
    Reload,
}

/// The daemon's answer: the result, or why the request was not carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Answer {
    Done(Reply),
    Refused { reason: String },
}

/// What a request that was carried out returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Status(Box<StatusReport>),
    List {
        blocks: Vec<BlockEntry>,
    },
    /// A block, unblock or flush: what it did, in a sentence, and how many blocks it changed.
    Changed {
        summary: String,
        count: usize,
    },
    Reloaded {
        summary: String,
    },
}

/// `nfsentry status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// `native` or `compat`.
    pub queue_mode: String,
    pub queues: Vec<u16>,
    pub packets: PacketCounts,
    /// Detections by the scan type's report word (`SYN/Normal`, `UDP`, ...).
    pub detections: BTreeMap<String, u64>,
    pub blocks: BlockCounts,
    pub sources_tracked: u64,
    pub sources_evicted: u64,
    /// Packets whose source cannot be a real scanner (spoofed, impossible, protected).
    pub spoofed_packets: u64,
    pub alert_lines_suppressed: u64,
    /// The kernel's own counters for each queue, from `/proc/net/netfilter/nfnetlink_queue`.
    pub kernel_queues: Vec<KernelQueue>,
    /// The CrowdSec LAPI link, when `[crowdsec]` is configured.
    pub crowdsec: Option<CrowdsecStatus>,
    /// From detection to the element in the kernel's blocked set.
    #[serde(default)]
    pub trigger_to_block: TriggerToBlock,
}

/// How long detected sources took to be blocked in the kernel: the time from the pipeline's
/// decision to the kernel's acknowledgement of the element in the blocked set (the `nft-set`
/// action), over every such block since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerToBlock {
    /// Blocks timed.
    pub blocks: u64,
    /// Half of them took less than this many microseconds (a bucket's upper bound); None
    /// before the first.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// The histogram: `buckets[i]` blocks took from `2^i` to `2^(i+1)` microseconds (the first
    /// also those under one, the last everything longer).
    pub buckets: Vec<u64>,
    /// Of the blocks timed, those a queue reader put into the kernel's set itself, before the
    /// verdict of the packet that triggered it.
    #[serde(default)]
    pub inline_blocks: u64,
    /// A queue reader's commits the kernel refused (its table or sets missing), whose blocks
    /// the responder put in instead.
    #[serde(default)]
    pub inline_failures: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketCounts {
    pub queued: u64,
    pub answered: u64,
    pub short_headers_logged: u64,
    pub malformed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCounts {
    /// In force now.
    pub now: u64,
    /// Ordered since start (detections past the trigger, and by hand).
    pub ordered: u64,
    /// Past the trigger but not blocked (table full, held back by the rate cap).
    pub refused: u64,
    /// Lifted since start (time up, by hand, evicted).
    pub released: u64,
}

/// One line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelQueue {
    pub queue: u16,
    /// Packets waiting for a verdict now.
    pub waiting: u64,
    /// Dropped by the kernel because the queue was full.
    pub queue_dropped: u64,
    /// Dropped because the reader's socket buffer was full.
    pub user_dropped: u64,
}

/// The CrowdSec LAPI link in `nfsentry status`. Names no password, key or token. Points in
/// time are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    /// The LAPI's base URL (one with credentials in it is refused by `check-config`).
    pub url: String,
    /// Whether this host reports its blocks, and enforces the fleet's bans.
    pub push: bool,
    pub pull: bool,
    /// The LAPI answered the last call.
    pub connected: bool,
    /// Since when it has been connected, or unreachable; None before the first answer.
    pub since: Option<u64>,
    /// Outages so far.
    pub outages: u64,
    /// The last call that failed (kept after a recovery), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// The watcher holds a token.
    pub logged_in: bool,
    pub last_pull: Option<u64>,
    /// The last full (`startup=true`) pull, and how many there were.
    pub last_full_pull: Option<u64>,
    pub full_pulls: u64,
    pub decisions: PulledDecisions,
    pub pushes: PushCounts,
}

/// The fleet's decisions this host holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledDecisions {
    /// Bans on single addresses (scope `Ip`), enforced in the address sets.
    pub ip: u64,
    /// Bans on networks (scope `Range`), enforced in the range sets.
    pub range: u64,
    /// Active decisions left alone: not a `ban`, or a scope other than `Ip` and `Range`.
    pub ignored_type: u64,
    pub ignored_scope: u64,
    /// Stream entries that could not be read, and networks refused for a full table, ever.
    pub malformed: u64,
    pub refused_full: u64,
}

/// Reports of this host's blocks (and unblocks) to the LAPI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushCounts {
    /// Waiting for the LAPI (the backlog, and a post in progress).
    pub pending: u64,
    /// Alerts the LAPI accepted.
    pub sent: u64,
    /// Given up after the LAPI answered them with errors.
    pub failed: u64,
    /// Dropped from a full backlog, oldest first.
    pub dropped: u64,
    /// Blocks over before they could be sent.
    pub expired: u64,
    /// Deletions of our decisions after `nfsentry unblock`.
    pub deletions: u64,
}

/// One blocked address or network in `nfsentry list`: this host's own block, or a ban pulled
/// from the CrowdSec LAPI. One address can have both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// An address, or for a pulled `Range` a network (`198.51.100.0/24`).
    pub address: String,
    /// `Ip` or `Range`, as CrowdSec names scopes; this host's own blocks are `Ip`.
    pub scope: String,
    /// A ban pulled from the CrowdSec LAPI; false for this host's own blocks.
    pub pulled: bool,
    /// The scan type that triggered it, or `manual` / the fleet decision's scenario.
    pub kind: String,
    /// The probe that triggered it; empty and 0 for a pulled ban.
    pub protocol: String,
    pub port: u16,
    /// Unix seconds: when it was blocked, or when this host began enforcing a pulled ban.
    pub since: u64,
    /// Seconds left; `None` until released by hand.
    pub left_secs: Option<u64>,
    pub verified: bool,
    /// Where the block came from: `detection`, `manual`, or for a pulled ban the decision's
    /// origin (`cscli`, `crowdsec`, `lists`, `CAPI`, `nfsentry` for another nfsentry's or
    /// this host's own pushed block).
    pub origin: String,
    /// The actions holding it, by config word.
    pub actions: Vec<String>,
}

/// Why a line could not be read as a request or an answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("not a request nfsentry understands: {0}")]
    Json(#[from] serde_json::Error),
}

/// One line of JSON, newline-terminated.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain types cannot fail: no maps with non-string keys, no custom
    // serializers. An empty object keeps the line well-formed should it ever.
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// Reads one request line (without its newline).
pub fn decode_request(line: &[u8]) -> Result<Request, DecodeError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(DecodeError::TooLong {
            limit: MAX_REQUEST_BYTES,
        });
    }
    Ok(serde_json::from_slice(line)?)
}

/// Reads one answer line (without its newline).
pub fn decode_answer(line: &[u8]) -> Result<Answer, DecodeError> {
    if line.len() > MAX_ANSWER_BYTES {
        return Err(DecodeError::TooLong {
            limit: MAX_ANSWER_BYTES,
        });
    }
    Ok(serde_json::from_slice(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(request: Request) {
        let line = encode(&request);
        assert_eq!(line.last(), Some(&b'\n'));
        let back = decode_request(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn every_request_survives_the_wire() {
        for request in [
            Request::Status,
            Request::List,
            Request::Block {
                address: "198.51.100.7".parse().unwrap(),
                timeout_secs: Some(3600),
            },
            Request::Block {
                address: "2001:db8::7".parse().unwrap(),
                timeout_secs: None,
            },
            Request::Unblock {
                address: "2001:db8::7".parse().unwrap(),
            },
            Request::Flush,
            Request::Reload,
        ] {
            round_trip_request(request);
        }
    }

    #[test]
    fn requests_are_plain_json_a_script_can_write() {
        assert_eq!(
            decode_request(br#"{"command":"unblock","address":"192.0.2.9"}"#).unwrap(),
            Request::Unblock {
                address: "192.0.2.9".parse().unwrap()
            }
        );
        assert_eq!(
            encode(&Request::Status),
            b"{\"command\":\"status\"}\n".to_vec()
        );
    }

    #[test]
    fn hostile_lines_are_refused_not_trusted() {
        for line in [
            &b""[..],
            b"{",
            b"{\"command\":\"rm -rf\"}",
            b"{\"command\":\"block\",\"address\":\"999.1.1.1\"}",
            b"{\"command\":\"block\",\"address\":\"192.0.2.1; reboot\"}",
            b"\xff\xfe",
        ] {
            assert!(decode_request(line).is_err(), "{line:?}");
        }
        let long = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            decode_request(&long),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn answers_survive_the_wire() {
        let status = StatusReport {
            version: "0.1.0".into(),
            queues: vec![0, 1],
            detections: [("SYN/Normal".to_owned(), 3)].into_iter().collect(),
            crowdsec: Some(CrowdsecStatus {
                url: "http://127.0.0.1:8080/".into(),
                connected: true,
                last_pull: Some(1_700_000_000),
                decisions: PulledDecisions {
                    ip: 2,
                    range: 1,
                    ..PulledDecisions::default()
                },
                ..CrowdsecStatus::default()
            }),
            ..StatusReport::default()
        };
        for answer in [
            Answer::Done(Reply::Status(Box::new(status))),
            Answer::Done(Reply::List {
                blocks: vec![BlockEntry {
                    address: "198.51.100.7".into(),
                    scope: "Ip".into(),
                    pulled: false,
                    kind: "SYN/Normal".into(),
                    protocol: "TCP".into(),
                    port: 23,
                    since: 1_700_000_000,
                    left_secs: None,
                    verified: false,
                    origin: "detection".into(),
                    actions: vec!["nft-set".into()],
                }],
            }),
            Answer::Done(Reply::Changed {
                summary: "unblocked 198.51.100.7".into(),
                count: 1,
            }),
            Answer::Refused {
                reason: "192.0.2.1 is not blocked".into(),
            },
        ] {
            let line = encode(&answer);
            assert_eq!(decode_answer(&line[..line.len() - 1]).unwrap(), answer);
        }
    }
}
