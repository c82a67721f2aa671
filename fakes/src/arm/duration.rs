//! ISO 8601 durations as Service Bus writes them (`PT1M`, `P10675199DT2H48M5.4775807S`).
//!
//! Service Bus serialises .NET `TimeSpan` values with `XmlConvert`, which counts a year as
//! 365 days and a month as 30 days, and keeps 100 ns ticks, so at most 7 fractional digits.

use time::Duration;

/// `TimeSpan.MaxValue`, which Service Bus reports for "never expires".
pub const TIMESPAN_MAX: &str = "P10675199DT2H48M5.4775807S";

/// The reason a duration text is invalid.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not an ISO 8601 duration such as PT1M or P14D: {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses `PnYnMnWnDTnHnMnS`, where only the seconds may have a fraction.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let rest = text
        .strip_prefix('P')
        .ok_or_else(|| error("it must start with P"))?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(error("T must be followed by a time")),
        Some((date, time)) => (date, time),
        None => (rest, ""),
    };
    if date.is_empty() && time.is_empty() {
        return Err(error("it has no components"));
    }

    let mut total = Duration::ZERO;
    for (value, unit) in components(date).map_err(error)? {
        let whole = value
            .parse::<i64>()
            .map_err(|_| error("date components must be whole numbers"))?;
        let days = match unit {
            'Y' => 365,
            'M' => 30,
            'W' => 7,
            'D' => 1,
            _ => return Err(error("date units are Y, M, W and D")),
        };
        total += Duration::days(
            whole
                .checked_mul(days)
                .ok_or_else(|| error("it is too long"))?,
        );
    }
    for (value, unit) in components(time).map_err(error)? {
        let component = match unit {
            'H' => Duration::hours(
                value
                    .parse()
                    .map_err(|_| error("hours must be a whole number"))?,
            ),
            'M' => Duration::minutes(
                value
                    .parse()
                    .map_err(|_| error("minutes must be a whole number"))?,
            ),
            'S' => seconds(value).ok_or_else(|| error("seconds must be a number"))?,
            _ => return Err(error("time units are H, M and S")),
        };
        total = total
            .checked_add(component)
            .ok_or_else(|| error("it is too long"))?;
    }
    Ok(total)
}

/// Formats a duration in the shortest form Service Bus uses: `PT1M`, `P14D`, `PT0S`.
pub fn format(duration: Duration) -> String {
    let total_seconds = duration.whole_seconds();
    let days = total_seconds / 86_400;
    let hours = total_seconds % 86_400 / 3_600;
    let minutes = total_seconds % 3_600 / 60;
    let seconds = total_seconds % 60;
    // 100 ns ticks, the resolution of a TimeSpan.
    let ticks = duration.subsec_nanoseconds() / 100;

    let mut text = String::from("P");
    if days > 0 {
        text.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || seconds > 0 || ticks > 0 || days == 0 {
        text.push('T');
    }
    if hours > 0 {
        text.push_str(&format!("{hours}H"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}M"));
    }
    if ticks > 0 {
        let fraction = format!("{ticks:07}");
        text.push_str(&format!("{seconds}.{}S", fraction.trim_end_matches('0')));
    } else if seconds > 0 || text.ends_with('T') {
        text.push_str(&format!("{seconds}S"));
    }
    text
}

/// Splits `12H30M` into `[("12", 'H'), ("30", 'M')]`.
fn components(text: &str) -> Result<Vec<(&str, char)>, &'static str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (index, c) in text.char_indices() {
        if c.is_ascii_digit() || c == '.' {
            continue;
        }
        if index == start {
            return Err("each unit needs a number before it");
        }
        parts.push((&text[start..index], c));
        start = index + c.len_utf8();
    }
    if start != text.len() {
        return Err("a number has no unit after it");
    }
    Ok(parts)
}

/// Seconds with an optional fraction, kept to nanoseconds.
fn seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanoseconds: i32 = digits.parse().ok()?;
    Some(Duration::new(whole, nanoseconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_bus_defaults() {
        assert_eq!(parse("PT1M"), Ok(Duration::minutes(1)));
        assert_eq!(parse("PT10M"), Ok(Duration::minutes(10)));
        assert_eq!(parse("P14D"), Ok(Duration::days(14)));
        assert_eq!(parse("PT30S"), Ok(Duration::seconds(30)));
        assert_eq!(
            parse("P1DT2H3M4.5S"),
            Ok(Duration::new(93_784, 500_000_000))
        );
    }

    #[test]
    fn parses_timespan_max() {
        let max = parse(TIMESPAN_MAX).unwrap();
        assert_eq!(max.whole_days(), 10_675_199);
        assert_eq!(max.subsec_nanoseconds(), 477_580_700);
    }

    #[test]
    fn years_months_and_weeks_use_xmlconvert_lengths() {
        assert_eq!(parse("P1Y"), Ok(Duration::days(365)));
        assert_eq!(parse("P2M"), Ok(Duration::days(60)));
        assert_eq!(parse("P1W"), Ok(Duration::days(7)));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "", "1M", "P", "PT", "PTM", "PT1", "P1H", "PT1D", "PT1.5M", "pt1m", "PT1X",
        ] {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn formats_shortest_form() {
        assert_eq!(format(Duration::minutes(1)), "PT1M");
        assert_eq!(format(Duration::days(14)), "P14D");
        assert_eq!(format(Duration::ZERO), "PT0S");
        assert_eq!(format(Duration::new(93_784, 500_000_000)), "P1DT2H3M4.5S");
    }

    #[test]
    fn timespan_max_round_trips() {
        assert_eq!(format(parse(TIMESPAN_MAX).unwrap()), TIMESPAN_MAX);
    }
}
