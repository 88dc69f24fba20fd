//! Times as analysts write them: RFC 3339, `now`, `now-15m`; durations like `15m`.

use chrono::{DateTime, Duration, Utc};

/// An RFC 3339 time, `now`, or `now-<n><unit>` with units s, m, h, d, w.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let rest = text.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(now);
    }
    let ago = rest.strip_prefix('-')?;
    now.checked_sub_signed(parse_duration(ago)?)
}

/// `15m`, `2h`, `7d`, `30s`, `1w`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok()?;
    match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
}
