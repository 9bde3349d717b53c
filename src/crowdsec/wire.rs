//! The LAPI's JSON as nfsentry writes and reads it (CrowdSec 1.4.6's `localapi_swagger.yaml`),
//! and the one alert a local block becomes. Pure: no sockets, no clock of its own.
//!
//! Everything read from the LAPI is optional here, so that one odd field costs one decision
//! (counted as malformed), not the whole answer; the decision table judges the values.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::text::{format_go_seconds, format_rfc3339};
use crate::store::BlockRecord;

/// Every decision nfsentry makes is a `ban`...
pub const BAN: &str = "ban";
/// ...on one address.
pub const SCOPE_IP: &str = "Ip";
/// Pulled `ban` decisions on networks are enforced too.
pub const SCOPE_RANGE: &str = "Range";
/// The origin our decisions carry; `cscli decisions list` shows them with `-a`.
pub const ORIGIN: &str = "nfsentry";
/// The LAPI has no "forever", and Go durations stop at about 292 years; a block without
/// timeout is reported as ten years, in a unit Go reads (`1d` is refused).
pub const PERMANENT_BAN: Duration = Duration::from_secs(87_600 * 3_600);
const PERMANENT_BAN_TEXT: &str = "87600h";
/// Events (one per probed port) in one alert; a scan of thousands of ports is summed up in
/// `events_count` and the message rather than listed.
pub const MAX_EVENTS_PER_ALERT: usize = 16;

/// One port a scanner probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `TCP`, `UDP`, ... as in the block record.
    pub protocol: String,
    pub port: u16,
}

/// A block nfsentry made, with what the alert should tell about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlock {
    pub record: BlockRecord,
    /// The source's count of distinct targets when it was blocked; 0 if not known.
    pub hits: u32,
    /// Ports it probed, oldest first; may be empty (the record names the one that triggered
    /// the block). Only the last [`MAX_EVENTS_PER_ALERT`] are reported.
    pub probes: Vec<Probe>,
}

impl LocalBlock {
    /// A block known only by its record.
    pub fn new(record: BlockRecord) -> LocalBlock {
        LocalBlock {
            record,
            hits: 0,
            probes: Vec::new(),
        }
    }
}

/// The form an address takes in a decision: IPv4-mapped IPv6 as IPv4, IPv6 compressed as RFC
/// 5952 says. The LAPI compares values as strings, so one address must have one spelling.
pub fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// `POST /v1/alerts` takes an array of these. Every field the 1.4.6 LAPI requires is set,
/// even where it means nothing for a port scan (`capacity`, `leakspeed`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub scenario: String,
    pub scenario_hash: String,
    pub scenario_version: String,
    pub message: String,
    pub events_count: i32,
    pub events: Vec<Event>,
    pub capacity: i32,
    pub leakspeed: String,
    pub simulated: bool,
    pub remediation: bool,
    pub start_at: String,
    pub stop_at: String,
    pub source: Source,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub timestamp: String,
    pub meta: Vec<Meta>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub scope: String,
    pub value: String,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    pub duration: String,
    pub origin: String,
    pub scenario: String,
}

/// One decision of the stream, as read. Field names are the LAPI's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StreamDecision {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Remaining time as a Go duration; negative for deleted ones.
    #[serde(default)]
    pub duration: Option<String>,
}

/// `GET /v1/decisions/stream?startup=false`: what changed since this bouncer's last pull.
/// An empty list comes as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub new: Option<Vec<StreamDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<StreamDecision>>,
}

/// `GET /v1/decisions/stream?startup=true`: every active decision. Its `deleted` list (every
/// expired decision still in the database, days of them) is skipped unread: the active list
/// alone is the truth a resync needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FullList {
    #[serde(default)]
    pub new: Option<Vec<StreamDecision>>,
}

/// The alert reporting `block`, or None when the block is already over at `now` (a report
/// that waited out an outage): its ban would be over before it arrived.
///
/// The ban lasts the block's remaining time, counted from `stop_at` = `now`, which is how the
/// LAPI counts it. `machine` names the reporter in the message.
pub fn alert_for(
    block: &LocalBlock,
    scenario: &str,
    machine: &str,
    now: SystemTime,
) -> Option<Alert> {
    let record = &block.record;
    let address = canonical(record.source).to_string();
    let (duration, lasting) = match record.remaining(now) {
        None => (PERMANENT_BAN_TEXT.to_owned(), "until released".to_owned()),
        Some(left) if left.is_zero() => return None,
        Some(left) => {
            let text = format_go_seconds(left);
            let lasting = format!("for {text}");
            (text, lasting)
        }
    };
    let blocked_at = UNIX_EPOCH + Duration::from_secs(record.added);
    // A clock stepped back since the block must not give an alert that ends before it starts.
    let start = blocked_at.min(now);
    let start_at = format_rfc3339(start);
    let skipped = block.probes.len().saturating_sub(MAX_EVENTS_PER_ALERT);
    let mut probes: Vec<Probe> = block.probes.iter().skip(skipped).cloned().collect();
    if probes.is_empty() {
        probes.push(Probe {
            protocol: record.protocol.clone(),
            port: record.port,
        });
    }
    let events: Vec<Event> = probes
        .iter()
        .map(|probe| Event {
            timestamp: start_at.clone(),
            meta: vec![
                meta("source_ip", &address),
                meta("scan_type", &record.kind),
                meta("protocol", &probe.protocol),
                meta("dst_port", &probe.port.to_string()),
            ],
        })
        .collect();
    let hits = usize::try_from(block.hits).unwrap_or(usize::MAX);
    let events_count = hits.max(events.len()).max(1);
    let ports: Vec<String> = probes
        .iter()
        .map(|probe| format!("{} {}", probe.protocol, probe.port))
        .collect();
    let more = if skipped > 0 {
        format!(" and {skipped} earlier")
    } else {
        String::new()
    };
    let message = format!(
        "{} scan from {address} to {} port {} ({events_count} probes: {}{more}); blocked by \
         nfsentry on {machine} {lasting}",
        record.kind,
        record.protocol,
        record.port,
        ports.join(", ")
    );
    Some(Alert {
        scenario: scenario.to_owned(),
        scenario_hash: String::new(),
        scenario_version: String::new(),
        message,
        events_count: i32::try_from(events_count).unwrap_or(i32::MAX),
        events,
        capacity: 0,
        leakspeed: "0".to_owned(),
        simulated: false,
        remediation: true,
        start_at,
        stop_at: format_rfc3339(now),
        source: Source {
            scope: SCOPE_IP.to_owned(),
            value: address.clone(),
            ip: address.clone(),
        },
        decisions: vec![Decision {
            kind: BAN.to_owned(),
            scope: SCOPE_IP.to_owned(),
            value: address,
            duration,
            origin: ORIGIN.to_owned(),
            scenario: scenario.to_owned(),
        }],
    })
}

fn meta(key: &str, value: &str) -> Meta {
    Meta {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NOW: u64 = 1_795_564_518; // 2026-11-24T23:55:18Z

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn record(source: &str, expires: Option<u64>) -> BlockRecord {
        BlockRecord {
            source: source.parse().unwrap(),
            added: NOW - 10,
            expires,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
            verified: false,
        }
    }

    fn to_json(alert: &Alert) -> Value {
        serde_json::to_value(alert).unwrap()
    }

    #[test]
    fn a_timed_block_is_one_alert_with_one_ban_for_the_remaining_time() {
        let mut block = LocalBlock::new(record("198.51.100.7", Some(NOW + 3_600)));
        block.hits = 3;
        block.probes = vec![
            Probe {
                protocol: "TCP".into(),
                port: 21,
            },
            Probe {
                protocol: "TCP".into(),
                port: 22,
            },
            Probe {
                protocol: "TCP".into(),
                port: 23,
            },
        ];
        let alert = alert_for(&block, "nfsentry/portscan", "web-01", at(NOW)).unwrap();
        let value = to_json(&alert);
        assert_eq!(
            value["decisions"],
            json!([{"type": "ban", "scope": "Ip", "value": "198.51.100.7", "duration": "3600s",
                    "origin": "nfsentry", "scenario": "nfsentry/portscan"}])
        );
        assert_eq!(
            value["source"],
            json!({"scope": "Ip", "value": "198.51.100.7", "ip": "198.51.100.7"})
        );
        assert_eq!(value["stop_at"], "2026-11-24T23:55:18Z");
        assert_eq!(value["start_at"], "2026-11-24T23:55:08Z");
        assert_eq!(value["events_count"], 3);
        assert_eq!(value["events"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            value["events"][0]["meta"],
            json!([{"key": "source_ip", "value": "198.51.100.7"},
                   {"key": "scan_type", "value": "SYN/Normal"},
                   {"key": "protocol", "value": "TCP"},
                   {"key": "dst_port", "value": "21"}])
        );
        assert_eq!(
            alert.message,
            "SYN/Normal scan from 198.51.100.7 to TCP port 23 (3 probes: TCP 21, TCP 22, TCP 23); \
             blocked by nfsentry on web-01 for 3600s"
        );
        // The fields 1.4.6 refuses an alert without.
        for key in [
            "capacity",
            "events",
            "events_count",
            "leakspeed",
            "message",
            "scenario",
            "scenario_hash",
            "scenario_version",
            "simulated",
            "source",
            "start_at",
            "stop_at",
        ] {
            assert!(value.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn a_permanent_block_is_a_ten_year_ban_in_go_syntax() {
        let block = LocalBlock::new(record("2001:0db8:0:0::7", None));
        let alert = alert_for(&block, "s", "m", at(NOW)).unwrap();
        assert_eq!(alert.decisions[0].duration, "87600h");
        assert_eq!(alert.decisions[0].value, "2001:db8::7");
        assert_eq!(PERMANENT_BAN, Duration::from_secs(87_600 * 3_600));
        assert!(
            alert.message.ends_with("until released"),
            "{}",
            alert.message
        );
        assert_eq!(
            alert.events.len(),
            1,
            "the triggering port stands for the probes"
        );
    }

    #[test]
    fn a_block_over_before_it_is_sent_is_not_reported() {
        let block = LocalBlock::new(record("198.51.100.7", Some(NOW)));
        assert_eq!(alert_for(&block, "s", "m", at(NOW)), None);
        assert_eq!(alert_for(&block, "s", "m", at(NOW + 5)), None);
        // One second left is still a ban.
        let block = LocalBlock::new(record("198.51.100.7", Some(NOW + 1)));
        let alert = alert_for(&block, "s", "m", at(NOW)).unwrap();
        assert_eq!(alert.decisions[0].duration, "1s");
    }

    #[test]
    fn addresses_are_canonical() {
        let block = LocalBlock::new(record("::ffff:192.0.2.7", None));
        let alert = alert_for(&block, "s", "m", at(NOW)).unwrap();
        assert_eq!(alert.decisions[0].value, "192.0.2.7");
        assert_eq!(alert.source.value, "192.0.2.7");
    }

    #[test]
    fn many_probes_are_summed_up() {
        let mut block = LocalBlock::new(record("198.51.100.7", None));
        block.hits = 1_000;
        block.probes = (1..=40)
            .map(|port| Probe {
                protocol: "UDP".into(),
                port,
            })
            .collect();
        let alert = alert_for(&block, "s", "m", at(NOW)).unwrap();
        assert_eq!(alert.events.len(), MAX_EVENTS_PER_ALERT);
        assert_eq!(alert.events_count, 1_000);
        assert!(
            alert.message.contains("UDP 40 and 24 earlier)"),
            "{}",
            alert.message
        );
        assert!(
            alert.message.contains("(1000 probes: UDP 25,"),
            "{}",
            alert.message
        );
    }

    #[test]
    fn a_clock_stepped_back_still_gives_start_before_stop() {
        let block = LocalBlock::new(record("198.51.100.7", None));
        let alert = alert_for(&block, "s", "m", at(NOW - 60)).unwrap();
        assert_eq!(alert.start_at, alert.stop_at);
    }

    #[test]
    fn stream_answers_with_nulls_and_odd_fields_parse() {
        let delta: Delta = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert_eq!(delta, Delta::default());
        let delta: Delta = serde_json::from_str(
            r#"{"new":[{"duration":"59m59.8s","id":1,"origin":"nfsentry","scenario":"s",
                "scope":"Ip","type":"ban","value":"192.0.2.7","until":"x","extra":{"a":1}},
               {"id":2}],"deleted":[]}"#,
        )
        .unwrap();
        let new = delta.new.unwrap();
        assert_eq!(new.len(), 2);
        assert_eq!(new[0].kind.as_deref(), Some("ban"));
        assert_eq!(new[1].value, None);
        let full: FullList = serde_json::from_str(
            r#"{"deleted":[{"id":9,"value":"x","duration":"-1h"}],"new":[{"id":1}]}"#,
        )
        .unwrap();
        assert_eq!(full.new.map(|new| new.len()), Some(1));
        let full: FullList = serde_json::from_str("{}").unwrap();
        assert_eq!(full.new, None);
    }
}
