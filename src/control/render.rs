//! What the control commands print: aligned columns a person reads at a glance, or, with
//! `--json`, the answer's own fields for scripts. Pure: an answer in, text out.

use std::fmt::Write as _;
use std::time::Duration;

use super::protocol::{Answer, BlockEntry, CrowdsecStatus, Reply, StatusReport, TriggerToBlock};

/// The text for `answer`; `json` picks the machine form. Refusals are the caller's to print on
/// standard error, so they come back as `Err`.
pub fn render(answer: &Answer, json: bool, now_unix: u64) -> Result<String, String> {
    let reply = match answer {
        Answer::Done(reply) => reply,
        Answer::Refused { reason } => return Err(reason.clone()),
    };
    if json {
        let mut text = serde_json::to_string_pretty(reply).unwrap_or_default();
        text.push('\n');
        return Ok(text);
    }
    Ok(match reply {
        Reply::Status(status) => status_text(status, now_unix),
        Reply::List { blocks } => list_text(blocks, now_unix),
        Reply::Changed { summary, .. } | Reply::Reloaded { summary } => format!("{summary}\n"),
    })
}

fn status_text(s: &StatusReport, now_unix: u64) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        (
            "nfsentry",
            format!(
                "{}, pid {}, up {}",
                s.version,
                s.pid,
                duration_text(Duration::from_secs(s.uptime_secs))
            ),
        ),
        (
            "queue",
            format!("{} ({})", list_of(s.queues.iter()), s.queue_mode),
        ),
        (
            "packets",
            format!(
                "{} queued, {} answered, {} short headers, {} malformed",
                s.packets.queued,
                s.packets.answered,
                s.packets.short_headers_logged,
                s.packets.malformed
            ),
        ),
        (
            "detections",
            match s.detections.is_empty() {
                true => "none".to_owned(),
                false => s
                    .detections
                    .iter()
                    .map(|(kind, count)| format!("{kind} {count}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        ),
        (
            "blocks",
            format!(
                "{} now, {} ordered, {} refused, {} released",
                s.blocks.now, s.blocks.ordered, s.blocks.refused, s.blocks.released
            ),
        ),
        (
            "sources",
            format!(
                "{} tracked, {} evicted",
                s.sources_tracked, s.sources_evicted
            ),
        ),
        ("spoofed", format!("{} packets", s.spoofed_packets)),
        (
            "log",
            format!("{} alert lines held back", s.alert_lines_suppressed),
        ),
    ];
    for queue in &s.kernel_queues {
        rows.push((
            "kernel",
            format!(
                "queue {}: {} waiting, {} queue_dropped, {} user_dropped",
                queue.queue, queue.waiting, queue.queue_dropped, queue.user_dropped
            ),
        ));
    }
    if let Some(crowdsec) = &s.crowdsec {
        rows.extend(crowdsec_rows(crowdsec, now_unix));
    }
    rows.push(("to block", trigger_to_block_text(&s.trigger_to_block)));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (label, value) in rows {
        let _ = writeln!(text, "{label:<width$}  {value}");
    }
    text
}

/// The LAPI link: its state, what was pulled, what was pushed, the last error.
fn crowdsec_rows(c: &CrowdsecStatus, now_unix: u64) -> Vec<(&'static str, String)> {
    let ago = |at: Option<u64>| match at {
        None => "never".to_owned(),
        Some(at) => format!(
            "{} ago",
            duration_text(Duration::from_secs(now_unix.saturating_sub(at)))
        ),
    };
    let lasting = |at: u64| duration_text(Duration::from_secs(now_unix.saturating_sub(at)));
    let mut state = match (c.connected, c.since) {
        (true, Some(since)) => format!("{}: connected for {}", c.url, lasting(since)),
        (true, None) => format!("{}: connected", c.url),
        (false, Some(since)) => format!("{}: unreachable for {}", c.url, lasting(since)),
        (false, None) => format!("{}: not yet connected", c.url),
    };
    if c.outages > 0 {
        let _ = write!(state, ", {}", counted(c.outages, "outage", "outages"));
    }
    let sides: Vec<&str> = [(c.push, "push"), (c.pull, "pull")]
        .into_iter()
        .filter_map(|(on, side)| on.then_some(side))
        .collect();
    let _ = write!(state, " ({})", sides.join(", "));
    let mut rows = vec![("crowdsec", state)];
    if c.pull {
        let d = &c.decisions;
        let mut pulled = format!(
            "{} and {} held, {} ignored; last pull {}, last full pull {} ({} in all)",
            counted(d.ip, "address", "addresses"),
            counted(d.range, "range", "ranges"),
            d.ignored_type + d.ignored_scope,
            ago(c.last_pull),
            ago(c.last_full_pull),
            c.full_pulls
        );
        if d.malformed + d.refused_full > 0 {
            let _ = write!(
                pulled,
                "; {} unreadable, {} refused for a full table",
                d.malformed, d.refused_full
            );
        }
        rows.push(("pulled", pulled));
    }
    if c.push {
        let p = &c.pushes;
        rows.push((
            "pushed",
            format!(
                "{} pending, {} sent, {} failed, {} dropped, {} expired, {} deletions",
                p.pending, p.sent, p.failed, p.dropped, p.expired, p.deletions
            ),
        ));
    }
    if let Some(error) = &c.last_error {
        rows.push(("last error", format!("{}: {error}", ago(c.last_error_at))));
    }
    rows
}

/// `3 timed, detection to the kernel's ack p50 < 64 µs, p99 < 128 µs; 3 put in by the queue
/// readers`, and how many of their commits were refused if any were.
fn trigger_to_block_text(t: &TriggerToBlock) -> String {
    let mut text = match (t.p50_us, t.p99_us) {
        (Some(p50), Some(p99)) => format!(
            "{} timed, detection to the kernel's ack p50 < {p50} µs, p99 < {p99} µs; {} put in \
             by the queue readers",
            t.blocks, t.inline_blocks
        ),
        _ => "no block timed yet".to_owned(),
    };
    if t.inline_failures > 0 {
        text.push_str(&format!(
            "; {} of their commits refused (the responder put those in)",
            t.inline_failures
        ));
    }
    text
}

fn list_text(blocks: &[BlockEntry], now_unix: u64) -> String {
    if blocks.is_empty() {
        return "no address is blocked\n".to_owned();
    }
    let header = [
        "ADDRESS", "TYPE", "TARGET", "SINCE", "LEFT", "VERIFIED", "ORIGIN", "ACTIONS",
    ];
    let rows: Vec<[String; 8]> = blocks
        .iter()
        .map(|b| {
            [
                b.address.clone(),
                b.kind.clone(),
                match b.pulled {
                    true => "-".to_owned(),
                    false => format!("{}/{}", b.protocol, b.port),
                },
                format!(
                    "{} ago",
                    duration_text(Duration::from_secs(now_unix.saturating_sub(b.since)))
                ),
                b.left_secs.map_or_else(
                    || "never ends".to_owned(),
                    |left| duration_text(Duration::from_secs(left)),
                ),
                match (b.pulled, b.verified) {
                    (true, _) => "-",
                    (false, true) => "yes",
                    (false, false) => "no",
                }
                .to_owned(),
                origin_text(b),
                b.actions.join(","),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    text
}

/// `1 range`, `2 ranges`.
fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// `nfsentry` for this host's own blocks (the TYPE column tells a manual one), `crowdsec:` and
/// the decision's origin for a pulled ban (`crowdsec:cscli`, `crowdsec:nfsentry` for another
/// host's block or this one's own come back).
fn origin_text(block: &BlockEntry) -> String {
    match block.pulled {
        true if block.origin.is_empty() => "crowdsec".to_owned(),
        true => format!("crowdsec:{}", block.origin),
        false => "nfsentry".to_owned(),
    }
}

/// `1d2h`, `2h13m`, `4m12s`, `9s`: the two largest units, enough to read at a glance.
pub fn duration_text(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m{seconds}s"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ => format!("{days}d{hours}h"),
    }
}

fn list_of<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{
        BlockCounts, KernelQueue, PacketCounts, PulledDecisions, PushCounts,
    };
    use super::*;

    fn entry(address: &str, left: Option<u64>, verified: bool) -> BlockEntry {
        BlockEntry {
            address: address.into(),
            scope: "Ip".into(),
            pulled: false,
            kind: "SYN/Normal".into(),
            protocol: "TCP".into(),
            port: 23,
            since: 1_000,
            left_secs: left,
            verified,
            origin: "detection".into(),
            actions: vec!["nft-set".into(), "route".into()],
        }
    }

    #[test]
    fn the_list_is_aligned_columns_under_a_header() {
        let answer = Answer::Done(Reply::List {
            blocks: vec![
                entry("198.51.100.7", Some(3_540), false),
                entry("2001:db8::7", None, true),
            ],
        });
        let text = render(&answer, false, 1_060).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ADDRESS"), "{text}");
        // Every column starts at the same offset on every line.
        let column = |line: &str, cell: &str| line.find(cell).unwrap();
        assert_eq!(column(lines[0], "TYPE"), column(lines[1], "SYN/Normal"));
        assert_eq!(
            column(lines[1], "SYN/Normal"),
            column(lines[2], "SYN/Normal")
        );
        assert_eq!(column(lines[0], "LEFT"), column(lines[1], "59m0s"));
        assert!(lines[1].contains("1m0s ago"), "{text}");
        assert!(lines[2].contains("never ends"), "{text}");
        assert!(lines[2].contains(" yes "), "{text}");
        assert!(lines[1].ends_with("nft-set,route"), "{text}");
    }

    fn pulled(address: &str, scope: &str, origin: &str, left: u64) -> BlockEntry {
        BlockEntry {
            address: address.into(),
            scope: scope.into(),
            pulled: true,
            kind: "manual 'ban' from 'lapi'".into(),
            protocol: String::new(),
            port: 0,
            since: 1_000,
            left_secs: Some(left),
            verified: false,
            origin: origin.into(),
            actions: vec!["nft-set".into()],
        }
    }

    #[test]
    fn pulled_bans_are_listed_with_their_origin_after_our_own_blocks() {
        let answer = Answer::Done(Reply::List {
            blocks: vec![
                entry("198.51.100.7", Some(3_540), false),
                pulled("192.0.2.77", "Ip", "cscli", 7_190),
                pulled("203.0.113.0/24", "Range", "cscli", 7_185),
                pulled("198.51.100.9", "Ip", "nfsentry", 3_000),
            ],
        });
        let text = render(&answer, false, 1_060).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let column = |line: &str, cell: &str| line.find(cell).unwrap();
        let origin = column(lines[0], "ORIGIN");
        assert_eq!(column(lines[1], "nfsentry"), origin, "{text}");
        assert_eq!(column(lines[2], "crowdsec:cscli"), origin, "{text}");
        assert_eq!(column(lines[3], "crowdsec:cscli"), origin, "{text}");
        assert_eq!(column(lines[4], "crowdsec:nfsentry"), origin, "{text}");
        // A network is listed as one; its left time lines up with the others.
        assert!(lines[3].starts_with("203.0.113.0/24  "), "{text}");
        assert_eq!(
            column(lines[0], "LEFT"),
            column(lines[3], "1h59m"),
            "{text}"
        );
        // A pulled ban has no probe and was verified by no one here.
        let cell = |line: &str, name: &str| {
            let at = column(lines[0], name);
            line[at..].split("  ").next().unwrap().to_owned()
        };
        assert_eq!(cell(lines[2], "TARGET"), "-", "{text}");
        assert_eq!(cell(lines[2], "VERIFIED"), "-", "{text}");
        assert_eq!(cell(lines[1], "TARGET"), "TCP/23", "{text}");
        assert_eq!(cell(lines[1], "VERIFIED"), "no", "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&answer, true, 0).unwrap()).unwrap();
        assert_eq!(json["blocks"][2]["scope"], "Range");
        assert_eq!(json["blocks"][2]["origin"], "cscli");
        assert_eq!(json["blocks"][2]["pulled"], true);
        assert_eq!(json["blocks"][0]["pulled"], false);
    }

    fn lapi(connected: bool) -> CrowdsecStatus {
        CrowdsecStatus {
            url: "http://10.77.0.254:8080/".into(),
            push: true,
            pull: true,
            connected,
            since: Some(880),
            outages: 1,
            last_error: Some("cannot reach the LAPI: connection refused".into()),
            last_error_at: Some(995),
            logged_in: connected,
            last_pull: Some(999),
            last_full_pull: Some(990),
            full_pulls: 4,
            decisions: PulledDecisions {
                ip: 2,
                range: 1,
                ignored_type: 1,
                ..PulledDecisions::default()
            },
            pushes: PushCounts {
                pending: 3,
                sent: 12,
                failed: 1,
                dropped: 0,
                expired: 0,
                deletions: 1,
            },
        }
    }

    #[test]
    fn the_crowdsec_link_is_a_section_of_the_status() {
        let status = |crowdsec| StatusReport {
            version: "0.1.0".into(),
            crowdsec,
            ..StatusReport::default()
        };
        let up = Answer::Done(Reply::Status(Box::new(status(Some(lapi(true))))));
        let text = render(&up, false, 1_000).unwrap();
        assert!(
            text.contains(
                "\ncrowdsec    http://10.77.0.254:8080/: connected for 2m0s, 1 outage \
                 (push, pull)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\npulled      2 addresses and 1 range held, 1 ignored; last pull 1s ago, \
                 last full pull 10s ago (4 in all)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\npushed      3 pending, 12 sent, 1 failed, 0 dropped, 0 expired, 1 deletions\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nlast error  5s ago: cannot reach the LAPI: connection refused\n"),
            "{text}"
        );
        let down = Answer::Done(Reply::Status(Box::new(status(Some(lapi(false))))));
        let text = render(&down, false, 1_000).unwrap();
        assert!(text.contains(": unreachable for 2m0s, 1 outage "), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&down, true, 1_000).unwrap()).unwrap();
        assert_eq!(json["crowdsec"]["connected"], false);
        assert_eq!(json["crowdsec"]["decisions"]["range"], 1);
        assert_eq!(json["crowdsec"]["pushes"]["pending"], 3);
        // Without [crowdsec], no section, and null in JSON.
        let alone = Answer::Done(Reply::Status(Box::new(status(None))));
        assert!(!render(&alone, false, 0).unwrap().contains("crowdsec"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&alone, true, 0).unwrap()).unwrap();
        assert!(json["crowdsec"].is_null());
    }

    #[test]
    fn a_lapi_never_reached_and_a_side_turned_off_say_so() {
        let mut c = lapi(false);
        c.since = None;
        c.push = false;
        c.last_pull = None;
        c.last_full_pull = None;
        c.last_error = None;
        let rows = crowdsec_rows(&c, 1_000);
        assert_eq!(
            rows[0].1,
            "http://10.77.0.254:8080/: not yet connected, 1 outage (pull)"
        );
        assert!(
            rows[1].1.contains("last pull never, last full pull never"),
            "{rows:?}"
        );
        assert_eq!(rows.len(), 2, "no pushed or last error rows: {rows:?}");
    }

    #[test]
    fn an_empty_list_says_so() {
        let text = render(&Answer::Done(Reply::List { blocks: vec![] }), false, 0).unwrap();
        assert_eq!(text, "no address is blocked\n");
    }

    #[test]
    fn status_labels_line_up_and_json_keeps_every_field() {
        let status = StatusReport {
            version: "0.1.0".into(),
            pid: 42,
            uptime_secs: 7_980,
            queue_mode: "xt NFQUEUE via nft compat".into(),
            queues: vec![0],
            packets: PacketCounts {
                queued: 10,
                answered: 10,
                ..PacketCounts::default()
            },
            detections: [("SYN/Normal".to_owned(), 3), ("UDP".to_owned(), 1)]
                .into_iter()
                .collect(),
            blocks: BlockCounts {
                now: 2,
                ordered: 3,
                refused: 0,
                released: 1,
            },
            kernel_queues: vec![KernelQueue {
                queue: 0,
                ..KernelQueue::default()
            }],
            ..StatusReport::default()
        };
        let answer = Answer::Done(Reply::Status(Box::new(status)));
        let text = render(&answer, false, 0).unwrap();
        assert!(
            text.starts_with("nfsentry    0.1.0, pid 42, up 2h13m\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndetections  SYN/Normal 3, UDP 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nkernel      queue 0: 0 waiting, 0 queue_dropped, 0 user_dropped\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&answer, true, 0).unwrap()).unwrap();
        assert_eq!(json["blocks"]["now"], 2);
        assert_eq!(json["kernel_queues"][0]["user_dropped"], 0);
    }

    #[test]
    fn refusals_go_back_to_the_caller() {
        let refused = Answer::Refused {
            reason: "192.0.2.1 is not blocked".into(),
        };
        assert_eq!(
            render(&refused, false, 0),
            Err("192.0.2.1 is not blocked".into())
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        for (secs, text) in [
            (9, "9s"),
            (252, "4m12s"),
            (7_980, "2h13m"),
            (93_600, "1d2h"),
        ] {
            assert_eq!(duration_text(Duration::from_secs(secs)), text);
        }
    }
}
