//! Go-style durations (`30s`, `5m`, `1h30m`, `250ms`) as Kubernetes users write them.

use std::time::Duration;

use super::shown;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration {} is empty", shown(.0))]
    Empty(String),
    #[error("duration {} is negative; durations must be zero or more", shown(.0))]
    Negative(String),
    #[error("duration {} has no unit after {}; use ms, s, m or h (e.g. 30s)", shown(.0), shown(.1))]
    MissingUnit(String, String),
    #[error("duration {} has an unknown unit {}; use ms, s, m or h (e.g. 30s)", shown(.0), shown(.1))]
    UnknownUnit(String, String),
    #[error(
        "duration {} is not a number followed by a unit (e.g. 30s, 5m, 1h30m)",
        shown(.0)
    )]
    Malformed(String),
    #[error("duration {} is too long", shown(.0))]
    TooLong(String),
}

/// Parses `1h30m`, `30s`, `1.5m`, `250ms`. A bare `0` is allowed, like in Go.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty(text.to_string()));
    }
    if let Some(rest) = s.strip_prefix('-') {
        return match parse_duration(rest) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => Err(DurationError::Negative(text.to_string())),
            Err(e) => Err(e),
        };
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(DurationError::Malformed(text.to_string()));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| DurationError::Malformed(text.to_string()))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ns_per_unit = match unit {
            "" => {
                return Err(DurationError::MissingUnit(
                    text.to_string(),
                    number.to_string(),
                ));
            }
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => {
                return Err(DurationError::UnknownUnit(
                    text.to_string(),
                    other.to_string(),
                ));
            }
        };
        total_ns += number * ns_per_unit;
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("30"),
            Err(DurationError::MissingUnit(..))
        ));
        assert!(matches!(
            parse_duration("3d"),
            Err(DurationError::UnknownUnit(..))
        ));
        assert!(matches!(
            parse_duration("soon"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(parse_duration(""), Err(DurationError::Empty(_))));
    }
}
