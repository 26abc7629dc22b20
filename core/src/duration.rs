//! Human durations as the CLI takes them: `1s`, `1500ms`, `30min`, `2h`, `1h30min`.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Why a duration was refused; its `Display` says what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing was given.
    Empty,
    /// A number was not followed by a unit, e.g. `90`.
    MissingUnit { input: String },
    /// A unit was not one of `ms`, `s`, `min`, `h`, `d`.
    UnknownUnit { input: String, unit: String },
    /// Something other than `<number><unit>` pairs, e.g. `2 h` or `h2`.
    Malformed { input: String },
    /// Too large to represent.
    Overflow { input: String },
    /// Well-formed but outside the allowed range.
    OutOfRange {
        input: String,
        range: RangeInclusive<Duration>,
    },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORM: &str =
            "expected a number with a unit (ms, s, min, h, d), e.g. 90s, 30min, 1h30min";
        match self {
            DurationError::Empty => write!(f, "empty duration: {FORM}"),
            DurationError::MissingUnit { input } => {
                write!(f, "'{input}' has no unit: {FORM}")
            }
            DurationError::UnknownUnit { input, unit } => {
                write!(f, "'{input}' has unknown unit '{unit}': {FORM}")
            }
            DurationError::Malformed { input } => write!(f, "'{input}' is not a duration: {FORM}"),
            DurationError::Overflow { input } => write!(f, "'{input}' is too large"),
            DurationError::OutOfRange { input, range } => write!(
                f,
                "'{input}' is out of range: allowed is {} to {}",
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a human duration: one or more `<integer><unit>` pairs, units `ms`, `s`, `min`,
/// `h`, `d`.
///
/// ```
/// use std::time::Duration;
/// use token_server_core::duration::parse_duration;
/// assert_eq!(parse_duration("1h30min"), Ok(Duration::from_secs(5400)));
/// assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("90").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let owned = || input.to_string();
    let bytes = input.as_bytes();
    let mut total_ms: u64 = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            return Err(DurationError::Malformed { input: owned() });
        }
        let number: u64 = input[digits_start..pos]
            .parse()
            .map_err(|_| DurationError::Overflow { input: owned() })?;
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &input[unit_start..pos];
        let unit_ms: u64 = match unit {
            "" if pos == bytes.len() => return Err(DurationError::MissingUnit { input: owned() }),
            "" => return Err(DurationError::Malformed { input: owned() }),
            "ms" => 1,
            "s" => 1_000,
            "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    input: owned(),
                    unit: other.to_string(),
                })
            }
        };
        total_ms = number
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| DurationError::Overflow { input: owned() })?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a human duration and checks it lies in `range` (both ends included).
///
/// ```
/// use std::time::Duration;
/// use token_server_core::duration::parse_duration_in;
/// let range = Duration::from_secs(1)..=Duration::from_secs(5400);
/// assert!(parse_duration_in("90min", &range).is_ok());
/// let err = parse_duration_in("91min", &range).unwrap_err();
/// assert_eq!(err.to_string(), "'91min' is out of range: allowed is 1s to 90min");
/// ```
pub fn parse_duration_in(
    input: &str,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, DurationError> {
    let duration = parse_duration(input)?;
    check_range(input, duration, range)
}

/// Checks that `duration` (given by the user as `input`) lies in `range`.
pub fn check_range(
    input: &str,
    duration: Duration,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, DurationError> {
    if range.contains(&duration) {
        Ok(duration)
    } else {
        Err(DurationError::OutOfRange {
            input: input.to_string(),
            range: range.clone(),
        })
    }
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest unit that
/// divides it exactly, as the seed writes its bounds ("90min", "96h", "1500ms").
///
/// ```
/// use std::time::Duration;
/// use token_server_core::duration::format_duration;
/// assert_eq!(format_duration(Duration::from_secs(5400)), "90min");
/// assert_eq!(format_duration(Duration::from_secs(96 * 3600)), "96h");
/// assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
/// assert_eq!(format_duration(Duration::from_secs(400 * 86_400)), "400d");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    // Hours rather than days up to 96h: the CLI's documented bounds read "96h", not "4d";
    // past it days, as "400d" reads better than "9600h".
    let day = 86_400_000;
    let days = (ms > 96 * 3_600_000 && ms % day == 0).then_some(("d", day));
    let (unit, size) = days
        .into_iter()
        .chain([("h", 3_600_000), ("min", 60_000), ("s", 1_000)])
        .find(|&(_, size)| ms != 0 && ms % size == 0)
        .unwrap_or(("ms", 1));
    if ms == 0 {
        return "0s".to_string();
    }
    format!("{}{unit}", ms / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_unit_and_combinations() {
        assert_eq!(parse_duration("1s"), Ok(ms(1_000)));
        assert_eq!(parse_duration("1500ms"), Ok(ms(1_500)));
        assert_eq!(parse_duration("30min"), Ok(ms(1_800_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("96h"), Ok(ms(345_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("1h30min"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1min1s1ms"), Ok(ms(61_001)));
    }

    #[test]
    fn refuses_malformed_input_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("90"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5m"),
            Err(DurationError::UnknownUnit { ref unit, .. }) if unit == "m"
        ));
        for bad in ["h", "2 h", "-1s", "1.5h", "1h 30min", "1h-", "s1"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed { .. })),
                "{bad:?} should be malformed, got {:?}",
                parse_duration(bad)
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        let message = parse_duration("5m").unwrap_err().to_string();
        assert!(message.contains("unknown unit 'm'"), "{message}");
    }

    #[test]
    fn range_is_inclusive_at_both_ends() {
        let range = ms(1_800_000)..=ms(345_600_000);
        assert!(parse_duration_in("30min", &range).is_ok());
        assert!(parse_duration_in("96h", &range).is_ok());
        assert!(parse_duration_in("29min59s999ms", &range).is_err());
        let err = parse_duration_in("96h1ms", &range).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'96h1ms' is out of range: allowed is 30min to 96h"
        );
    }

    #[test]
    fn format_round_trips() {
        for text in [
            "1s",
            "1500ms",
            "30min",
            "2h",
            "96h",
            "1h30min",
            "1h1min1s1ms",
        ] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed));
        }
        assert_eq!(format_duration(ms(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
