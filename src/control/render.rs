//! What the control commands print: aligned columns a person reads at a glance, or, with
//! `--json`, the answer's own fields for scripts. Pure: an answer in, text out.

use std::fmt::Write as _;
use std::time::Duration;

use super::protocol::{Answer, BlockEntry, Reply, StatusReport, TriggerToBlock};

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
        Reply::Status(status) => status_text(status),
        Reply::List { blocks } => list_text(blocks, now_unix),
        Reply::Changed { summary, .. } | Reply::Reloaded { summary } => format!("{summary}\n"),
    })
}

fn status_text(s: &StatusReport) -> String {
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
    for (name, state) in &s.links {
        rows.push((name.as_str(), state.clone()));
    }
    rows.push(("to block", trigger_to_block_text(&s.trigger_to_block)));
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (label, value) in rows {
        let _ = writeln!(text, "{label:<width$}  {value}");
    }
    text
}

/// `3 timed, detection to the kernel's ack p50 < 64 µs, p99 < 128 µs`.
fn trigger_to_block_text(t: &TriggerToBlock) -> String {
    match (t.p50_us, t.p99_us) {
        (Some(p50), Some(p99)) => format!(
            "{} timed, detection to the kernel's ack p50 < {p50} µs, p99 < {p99} µs",
            t.blocks
        ),
        _ => "no block timed yet".to_owned(),
    }
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
                format!("{}/{}", b.protocol, b.port),
                format!(
                    "{} ago",
                    duration_text(Duration::from_secs(now_unix.saturating_sub(b.since)))
                ),
                b.left_secs.map_or_else(
                    || "never ends".to_owned(),
                    |left| duration_text(Duration::from_secs(left)),
                ),
                if b.verified { "yes" } else { "no" }.to_owned(),
                b.origin.clone(),
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
    use super::super::protocol::{BlockCounts, KernelQueue, PacketCounts};
    use super::*;

    fn entry(address: &str, left: Option<u64>, verified: bool) -> BlockEntry {
        BlockEntry {
            address: address.into(),
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
