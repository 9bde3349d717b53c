//! The two text notations the LAPI speaks besides JSON: Go's `time.Duration` strings
//! (`"4h0m26.68s"`, `"-154.2ms"`) and RFC 3339 timestamps in UTC. Pure functions; they know
//! nothing of decisions or alerts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SECOND: u128 = 1_000_000_000;
/// Go's `time.Duration` is an int64 of nanoseconds: about 292 years either way.
const GO_DURATION_MAX_NANOS: u128 = i64::MAX as u128;

/// Go's duration units, with their length in nanoseconds. Go accepts both micro signs.
const GO_UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
];

/// A parsed Go duration: its sign and size. The LAPI writes a decision's remaining time this
/// way, negative once it has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub magnitude: Duration,
}

impl GoDuration {
    /// The time left, or None when it is zero or negative.
    pub fn remaining(self) -> Option<Duration> {
        (!self.negative && !self.magnitude.is_zero()).then_some(self.magnitude)
    }
}

/// Parses Go's `time.ParseDuration` syntax: an optional sign, then one or more decimal numbers
/// (with an optional fraction) each followed by a unit, e.g. `"1h30m"`, `"-1.5s"`, `"300ms"`;
/// `"0"` alone needs no unit. Fractions finer than a nanosecond are cut, as Go does. None for
/// anything else or for a value past Go's range.
pub fn parse_go_duration(text: &str) -> Option<GoDuration> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(GoDuration {
            negative,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, after_whole) = rest.split_at(whole_end);
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => {
                let end = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                after_dot.split_at(end)
            }
            None => ("", after_whole),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_end = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_end);
        let unit_nanos = GO_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)?;
        // Digits past what u128 holds are past Go's range anyway.
        let whole_value: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut part = whole_value.checked_mul(unit_nanos)?;
        if !fraction.is_empty() {
            // Only the first digits can matter below a nanosecond of an hour.
            let digits = &fraction[..fraction.len().min(20)];
            let scale = 10u128.checked_pow(u32::try_from(digits.len()).ok()?)?;
            let value: u128 = digits.parse().ok()?;
            part = part.checked_add(value.checked_mul(unit_nanos)? / scale)?;
        }
        total = total.checked_add(part)?;
        if total > GO_DURATION_MAX_NANOS {
            return None;
        }
        rest = after_unit;
    }
    let seconds = u64::try_from(total / NANOS_PER_SECOND).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SECOND).ok()?;
    Some(GoDuration {
        negative,
        magnitude: Duration::new(seconds, nanos),
    })
}

/// `duration` in whole seconds, rounded up, as Go reads it: `"14400s"`. Never below `"1s"`,
/// since a zero duration would be a decision that is over as it is made.
pub fn format_go_seconds(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 || seconds == 0 {
        seconds = seconds.saturating_add(1);
    }
    format!("{seconds}s")
}

/// `2026-11-30T02:28:00Z`: whole seconds, UTC. Times before 1970 are written as the epoch.
pub fn format_rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, as the LAPI writes a token's `expire`. None for
/// anything else, or for a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    };
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        let digits = &fraction[..end.min(9)];
        let value: u32 = digits.parse().ok()?;
        let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
        nanos = value * scale;
        rest = &fraction[end..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = rest.get(1..)?;
            if offset.len() != 5 || offset.as_bytes().get(2) != Some(&b':') {
                return None;
            }
            let hours: i64 = offset.get(0..2)?.parse().ok()?;
            let minutes: i64 = offset.get(3..5)?.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3_600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days.saturating_add(719_468);
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(text: &str) -> Option<(bool, Duration)> {
        parse_go_duration(text).map(|d| (d.negative, d.magnitude))
    }

    #[test]
    fn go_durations_as_the_lapi_writes_them() {
        let cases = [
            ("4h0m26.68s", false, Duration::new(14_426, 680_000_000)),
            ("59m59.805512569s", false, Duration::new(3_599, 805_512_569)),
            ("-154.220373ms", true, Duration::new(0, 154_220_373)),
            (
                "87599h59m59.727583392s",
                false,
                Duration::new(315_359_999, 727_583_392),
            ),
            ("0s", false, Duration::ZERO),
            ("0", false, Duration::ZERO),
            ("1.5h", false, Duration::from_secs(5_400)),
            ("300ms", false, Duration::from_millis(300)),
            ("1\u{b5}s", false, Duration::from_micros(1)),
            ("1\u{3bc}s", false, Duration::from_micros(1)),
            ("2us3ns", false, Duration::from_nanos(2_003)),
            (".5s", false, Duration::from_millis(500)),
            ("1.s", false, Duration::from_secs(1)),
            ("+90s", false, Duration::from_secs(90)),
            ("1.0000000001s", false, Duration::from_secs(1)),
            (
                "2562047h47m16.854775807s",
                false,
                Duration::new(9_223_372_036, 854_775_807),
            ),
        ];
        for (text, negative, magnitude) in cases {
            assert_eq!(go(text), Some((negative, magnitude)), "{text:?}");
        }
    }

    #[test]
    fn go_duration_refusals() {
        for bad in [
            "",
            "-",
            "1",
            "1d",
            "h",
            ".s",
            "1h-2m",
            "1 h",
            "1H",
            "2562047h47m16.854775808s",
            "99999999999999999999999999999999999999999h",
            "--1s",
            "1..5s",
            "\u{b5}s",
        ] {
            assert_eq!(go(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn remaining_time_is_none_once_over() {
        let remaining = |text| parse_go_duration(text).and_then(GoDuration::remaining);
        assert_eq!(remaining("1m"), Some(Duration::from_secs(60)));
        assert_eq!(remaining("0s"), None);
        assert_eq!(remaining("-1ms"), None);
    }

    #[test]
    fn go_seconds_round_up_and_read_back() {
        assert_eq!(format_go_seconds(Duration::from_secs(14_400)), "14400s");
        assert_eq!(format_go_seconds(Duration::from_millis(1_500)), "2s");
        assert_eq!(format_go_seconds(Duration::ZERO), "1s");
        for seconds in [1, 59, 3_600, 315_360_000] {
            let text = format_go_seconds(Duration::from_secs(seconds));
            assert_eq!(
                go(&text),
                Some((false, Duration::from_secs(seconds))),
                "{text}"
            );
        }
    }

    #[test]
    fn rfc3339_round_trip_and_known_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_564_518, "2026-11-24T23:55:18Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (seconds, text) in cases {
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(format_rfc3339(time), text);
            assert_eq!(parse_rfc3339(text), Some(time), "{text}");
        }
        // Every day over four centuries survives the round trip.
        for day in (0..146_097).step_by(7) {
            let time = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 45_296);
            assert_eq!(parse_rfc3339(&format_rfc3339(time)), Some(time));
        }
    }

    #[test]
    fn rfc3339_offsets_fractions_and_refusals() {
        let at = |seconds: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(seconds, nanos));
        assert_eq!(
            parse_rfc3339("2026-11-24T23:55:18.25Z"),
            at(1_795_564_518, 250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T01:55:18+02:00"),
            at(1_795_564_518, 0)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T20:55:18-03:00"),
            at(1_795_564_518, 0)
        );
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24T23:55:18",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T23:55:18.Z",
            "2026-11-24T23:55:18+2:00",
            "1969-12-31T23:59:59Z",
            "2026-11-24T23:55:1xZ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
