//! Reads and writes the duration notation of the config file ("90s", "1h30m", "250ms"); it does
//! not decide which durations a key accepts (zero, bounds) — the validator does.

use std::time::Duration;

/// The units, largest first, with their length in nanoseconds; a duration lists each at most once, in this order, so every
/// duration has exactly one spelling and [`format_duration`] can invert the parser.
const UNITS_IN_NANOS: [(&str, u128); 7] = [
    ("d", 86_400 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("s", NANOS_PER_SECOND),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("is not a duration (it is empty)")]
    Empty,
    #[error("is not a duration (a number needs a unit: d, h, m, s, ms, us or ns, e.g. \"90s\")")]
    MissingUnit,
    #[error("is not a duration (expected a number at {found:?})")]
    MissingNumber { found: String },
    #[error("is not a duration (unknown unit {unit:?}; use d, h, m, s, ms, us or ns)")]
    UnknownUnit { unit: String },
    #[error(
        "is not a duration (units must go from largest to smallest, each once, e.g. \"1h30m\")"
    )]
    UnitOrder,
    #[error("is not a duration (too long)")]
    Overflow,
    #[error("is not a duration (a number of seconds cannot be negative)")]
    Negative,
}

/// Parses `"0"`, `"90s"`, `"10m"`, `"24h"`, `"7d"`, `"1h30m"`, `"250ms"`; `"us"` and `"ns"`
/// exist so that every `Duration` can be written back.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    // A lone zero needs no unit: "0" reads the same in every unit.
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    // Summed in u128 nanoseconds: wide enough for Duration::MAX, so only the final conversion
    // can overflow.
    let mut total_nanos: u128 = 0;
    // Index into UNITS_IN_NANOS of the smallest unit used so far; the next must be smaller.
    let mut next_allowed_unit = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after_digits) = rest.split_at(digits_end);
        if digits.is_empty() {
            return Err(DurationError::MissingNumber {
                found: after_digits.to_owned(),
            });
        }
        let unit_end = after_digits
            .find(|character: char| character.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_end);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit);
        }
        let unit_index = UNITS_IN_NANOS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
            })?;
        if unit_index < next_allowed_unit {
            return Err(DurationError::UnitOrder);
        }
        next_allowed_unit = unit_index + 1;
        let (_, unit_nanos) = UNITS_IN_NANOS
            .get(unit_index)
            .copied()
            .ok_or(DurationError::Overflow)?;
        let count: u128 = digits.parse().map_err(|_| DurationError::Overflow)?;
        total_nanos = count
            .checked_mul(unit_nanos)
            .and_then(|part| total_nanos.checked_add(part))
            .ok_or(DurationError::Overflow)?;
        rest = after_unit;
    }
    let seconds =
        u64::try_from(total_nanos / NANOS_PER_SECOND).map_err(|_| DurationError::Overflow)?;
    let subsec_nanos =
        u32::try_from(total_nanos % NANOS_PER_SECOND).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(seconds, subsec_nanos))
}

/// A TOML integer in a duration key counts seconds.
pub(crate) fn duration_from_seconds(seconds: i64) -> Result<Duration, DurationError> {
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| DurationError::Negative)
}

/// Writes `duration` in the config notation: `"0"`, `"10m"`, `"1h30m"`, `"250ms"`; parsing the
/// result gives back the same duration.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0".to_owned();
    }
    let seconds = duration.as_secs();
    let nanos = u64::from(duration.subsec_nanos());
    let parts = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3_600, "h"),
        (seconds % 3_600 / 60, "m"),
        (seconds % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts
        .iter()
        .filter(|(count, _)| *count != 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        let cases = [
            ("0", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("10m", Duration::from_secs(600)),
            ("24h", Duration::from_secs(86_400)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("250ms", Duration::from_millis(250)),
            ("0s", Duration::ZERO),
            ("1d2h3m4s5ms6us7ns", Duration::new(93_784, 5_006_007)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("10"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_duration("10 parsecs"),
            Err(DurationError::UnknownUnit {
                unit: " parsecs".to_owned()
            })
        );
        assert_eq!(
            parse_duration("10 m"),
            Err(DurationError::UnknownUnit {
                unit: " m".to_owned()
            })
        );
        assert_eq!(
            parse_duration("m"),
            Err(DurationError::MissingNumber {
                found: "m".to_owned()
            })
        );
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::MissingNumber {
                found: "-5s".to_owned()
            })
        );
        assert_eq!(parse_duration("30m1h"), Err(DurationError::UnitOrder));
        assert_eq!(parse_duration("1m1m"), Err(DurationError::UnitOrder));
        assert_eq!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::Overflow)
        );
        // u64::MAX seconds is 213503982334601 days and a bit.
        assert_eq!(
            parse_duration("213503982334602d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("10M"),
            Err(DurationError::UnknownUnit {
                unit: "M".to_owned()
            })
        );
    }

    #[test]
    fn integers_are_seconds() {
        assert_eq!(duration_from_seconds(0), Ok(Duration::ZERO));
        assert_eq!(duration_from_seconds(600), Ok(Duration::from_secs(600)));
        assert_eq!(duration_from_seconds(-1), Err(DurationError::Negative));
    }

    #[test]
    fn format_examples() {
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_nanos(1_001)), "1us1ns");
    }

    #[test]
    fn format_then_parse_is_identity() {
        // A spread of values hitting every unit, carries and the extremes.
        let mut samples = vec![
            Duration::MAX,
            Duration::from_nanos(1),
            Duration::new(59, 999_999_999),
            Duration::new(86_399, 0),
            Duration::new(86_400 * 365, 500_000_000),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            // xorshift keeps the samples varied without pulling in a randomness crate.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let seconds = state % (400 * 86_400);
            let nanos = u32::try_from((state >> 20) % 1_000_000_000).unwrap_or(0);
            samples.push(Duration::new(seconds, nanos));
        }
        for duration in samples {
            let text = format_duration(duration);
            assert_eq!(parse_duration(&text), Ok(duration), "{text:?}");
        }
    }
}
