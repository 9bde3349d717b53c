//! The log lines the per-packet path produces, kept as data until they are written, and the
//! one limiter every per-event line goes through: detections, "has been blocked" and "has been
//! released" lines, refusals and the held-back notice share its budget, so a spoofed flood
//! cannot flood the log. What the limiter holds back is summed up in one line per span.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::Level;

use crate::config::format_duration;
use crate::engine::Detection;
use crate::packet::ParseError;
use crate::report;

use super::Arrival;

/// Most per-event lines let through per [`ALERT_SPAN`].
pub(super) const ALERT_LINES_PER_SPAN: u32 = 200;
/// The span the budget covers; what it holds back is summed up once it ends.
pub(super) const ALERT_SPAN: Duration = Duration::from_secs(1);

/// A log line, kept as data until it is written: the text is only built if the logger wants
/// the line's level.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// `attackalert: SYN/Normal scan from host: ...`, in PortSentry's words.
    Detection(Detection),
    /// A source past the trigger that the block table, full of verified blocks, could not take.
    BlockTableFull(IpAddr),
    /// `attackalert: Host ... has been released (...)`, for a block whose time is up.
    Released { source: IpAddr, why: &'static str },
    /// A block made verified by a completed handshake, and how long it lasts now (None: until
    /// removed).
    Verified {
        source: IpAddr,
        term: Option<Duration>,
    },
    /// How many new blocks the rate cap held back in the span that just ended.
    HeldBack {
        held: u64,
        waiting: usize,
        per_second: u32,
    },
    /// How many alert lines the limiter held back in the span that just ended.
    Suppressed(u64),
    /// Bytes that could not be read as an IP packet: counted, never alerted on.
    Unreadable {
        arrival: Arrival,
        bytes: usize,
        error: ParseError,
    },
}

impl LogLine {
    pub fn level(&self) -> Level {
        match self {
            LogLine::Detection(_) | LogLine::Suppressed(_) | LogLine::HeldBack { .. } => {
                Level::Warn
            }
            LogLine::BlockTableFull(_) => Level::Error,
            LogLine::Released { .. } | LogLine::Verified { .. } => Level::Info,
            LogLine::Unreadable { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLine::Detection(d) => f.write_str(&report::detection_line(d)),
            LogLine::BlockTableFull(source) => write!(
                f,
                "block table full of verified blocks: {source} is not blocked (raise \
                 respond.max_blocks?)"
            ),
            LogLine::Released { source, why } => f.write_str(&report::released_line(*source, why)),
            LogLine::Verified { source, term } => {
                let term = match term {
                    Some(term) => format!("for {}", format_duration(*term)),
                    None => "until removed".to_owned(),
                };
                write!(
                    f,
                    "block of {source} verified by a completed TCP handshake: it now lasts \
                     {term}"
                )
            }
            LogLine::HeldBack {
                held,
                waiting,
                per_second,
            } => write!(
                f,
                "{held} new blocks held back in the last second by respond.max_blocks_per_sec = \
                 {per_second}; {waiting} sources waiting, dropped inline"
            ),
            LogLine::Suppressed(count) => write!(
                f,
                "{count} alert lines suppressed in the last second (flood of sources?)"
            ),
            LogLine::Unreadable {
                arrival,
                bytes,
                error,
            } => write!(f, "malformed {} ({bytes} bytes): {error}", arrival.noun()),
        }
    }
}

/// At most `per_span` lines in each [`ALERT_SPAN`]; what is held back is counted, and the count
/// is handed out once the span ends.
#[derive(Debug)]
pub(super) struct AlertLimiter {
    per_span: u32,
    /// When the current span ends (it began [`ALERT_SPAN`] before); none before the first
    /// line or tick, or when the clock cannot represent its end. A comparison per packet, where
    /// the time since its start was a subtraction.
    span_end: Option<Instant>,
    /// Whether a span began.
    started: bool,
    used: u32,
    suppressed: u64,
    pub(super) suppressed_total: u64,
}

impl AlertLimiter {
    pub(super) fn new(per_span: u32) -> Self {
        AlertLimiter {
            per_span,
            span_end: None,
            started: false,
            used: 0,
            suppressed: 0,
            suppressed_total: 0,
        }
    }

    /// Whether one more line fits the current span's budget; counts it as held back if not.
    /// Call [`AlertLimiter::roll_over`] first, so that the span is the current one.
    pub(super) fn take(&mut self) -> bool {
        if self.used < self.per_span {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }

    /// Starts a new span if the current one is over (or none began); then returns how many
    /// lines the finished span held back, zero included. None while the span goes on.
    pub(super) fn roll_over(&mut self, now: Instant) -> Option<u64> {
        if self.started && self.span_end.map_or(true, |end| now < end) {
            return None;
        }
        let held_back = self.suppressed;
        self.started = true;
        self.span_end = now.checked_add(ALERT_SPAN);
        self.used = 0;
        self.suppressed = 0;
        Some(held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_limiter_lets_a_spans_budget_through_and_counts_the_rest() {
        let mut limiter = AlertLimiter::new(3);
        let start = Instant::now();
        assert_eq!(limiter.roll_over(start), Some(0), "the first span begins");
        let allowed: Vec<bool> = (0..5).map(|_| limiter.take()).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert_eq!(limiter.roll_over(start + Duration::from_millis(999)), None);
        assert_eq!(limiter.roll_over(start + ALERT_SPAN), Some(2));
        assert_eq!(limiter.suppressed_total, 2);
        // A fresh span with a fresh budget.
        assert!(limiter.take());
        assert_eq!(limiter.roll_over(start + 2 * ALERT_SPAN), Some(0));
    }

    #[test]
    fn new_lines_keep_portsentry_wording_where_portsentry_had_some() {
        let source = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let released = LogLine::Released {
            source,
            why: "block timeout expired",
        };
        assert_eq!(
            released.to_string(),
            "attackalert: Host 198.51.100.7 has been released (block timeout expired)"
        );
        assert_eq!(released.level(), Level::Info);
        let verified = LogLine::Verified {
            source,
            term: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(
            verified.to_string(),
            "block of 198.51.100.7 verified by a completed TCP handshake: it now lasts for 1d"
        );
        let forever = LogLine::Verified { source, term: None };
        assert!(forever.to_string().ends_with("it now lasts until removed"));
        let held = LogLine::HeldBack {
            held: 12_345,
            waiting: 4096,
            per_second: 50,
        };
        assert_eq!(
            held.to_string(),
            "12345 new blocks held back in the last second by respond.max_blocks_per_sec = 50; \
             4096 sources waiting, dropped inline"
        );
        assert_eq!(held.level(), Level::Warn);
        assert_eq!(
            LogLine::BlockTableFull(source).to_string(),
            "block table full of verified blocks: 198.51.100.7 is not blocked (raise \
             respond.max_blocks?)"
        );
    }
}
