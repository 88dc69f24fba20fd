//! Timestamp pieces shared by the parsers: fixed-width digit fields, month names, RFC 3339,
//! and the year inference of year-less timestamps. All functions return `None` on anything
//! malformed or out of range; none panics.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::ParseContext;

/// The value of `n` ASCII digits at the start of `b`.
pub(crate) fn digits(b: &[u8], n: usize) -> Option<u32> {
    if b.len() < n {
        return None;
    }
    let mut v: u32 = 0;
    for &c in &b[..n] {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `Jan` … `Dec` (case as written by syslog, Apache, BIND).
pub(crate) fn month_from_abbr(b: &[u8]) -> Option<u32> {
    let m = match b.get(..3)? {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    Some(m)
}

/// `HH:MM:SS` at the start of `b`.
pub(crate) fn hms(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(b, 2)?, digits(&b[3..], 2)?, digits(&b[6..], 2)?))
}

/// An optional `.fraction` (or `,fraction`) at the start of `b`: (microseconds, bytes used).
pub(crate) fn fraction_micros(b: &[u8]) -> (u32, usize) {
    if b.first() != Some(&b'.') && b.first() != Some(&b',') {
        return (0, 0);
    }
    let mut micros: u32 = 0;
    let mut n = 0;
    let mut used = 1;
    while let Some(&c) = b.get(used) {
        if !c.is_ascii_digit() {
            break;
        }
        if n < 6 {
            micros = micros * 10 + u32::from(c - b'0');
            n += 1;
        }
        used += 1;
    }
    if used == 1 {
        return (0, 0);
    }
    while n < 6 {
        micros *= 10;
        n += 1;
    }
    (micros, used)
}

pub(crate) fn naive(
    year: i32,
    month: u32,
    day: u32,
    (h, m, s): (u32, u32, u32),
    micros: u32,
) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(year, month, day)?.and_hms_micro_opt(h, m, s, micros)
}

/// A wall-clock time in `tz`, as UTC.
pub(crate) fn local_to_utc(t: NaiveDateTime, tz: FixedOffset) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&t)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// A year-less time in `ctx.timezone`: the latest of next, this and last year (relative to
/// `ctx.reference_time`) that is at most one day after the reference time.
pub(crate) fn infer_year(
    month: u32,
    day: u32,
    time: (u32, u32, u32),
    micros: u32,
    ctx: &ParseContext,
) -> Option<DateTime<Utc>> {
    let reference = ctx.reference_time.with_timezone(&ctx.timezone);
    let limit = ctx.reference_time + chrono::Duration::days(1);
    let year = reference.year();
    // Feb 29 exists only in leap years: look back up to four years for it.
    for candidate in [year + 1, year, year - 1, year - 2, year - 3, year - 4] {
        let Some(t) = naive(candidate, month, day, time, micros) else {
            continue;
        };
        let Some(t) = local_to_utc(t, ctx.timezone) else {
            continue;
        };
        if t <= limit {
            return Some(t);
        }
    }
    None
}

/// An RFC 3339 timestamp at the start of `s` (`2026-11-24T00:32:37.604537+00:00`, `Z`,
/// a space instead of `T`): the time and the number of bytes it took.
/// `YYYY-MM-DD?HH:MM:SS[.fraction]`, with `?` one of `separators`: the local date and
/// time, and where they end (the zone, if any, follows).
pub(crate) fn date_time_prefix(b: &[u8], separators: &[u8]) -> Option<(NaiveDateTime, usize)> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !separators.contains(&b[10]) {
        return None;
    }
    let year = digits(b, 4)? as i32;
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let time = hms(&b[11..])?;
    let (micros, used) = fraction_micros(&b[19..]);
    Some((naive(year, month, day, time, micros)?, 19 + used))
}

pub(crate) fn rfc3339_prefix(s: &str) -> Option<(DateTime<Utc>, usize)> {
    let b = s.as_bytes();
    let (local, mut pos) = date_time_prefix(b, b"Tt")?;
    let offset_seconds: i32 = match b.get(pos)? {
        b'Z' | b'z' => {
            pos += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let hours = digits(&b[pos + 1..], 2)? as i32;
            let colon = usize::from(b.get(pos + 3) == Some(&b':'));
            let minutes = digits(&b[pos + 3 + colon..], 2)? as i32;
            pos += 5 + colon;
            let total = hours * 3600 + minutes * 60;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let tz = FixedOffset::east_opt(offset_seconds)?;
    Some((local_to_utc(local, tz)?, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(now: &str) -> ParseContext {
        ParseContext::at(
            DateTime::parse_from_rfc3339(now)
                .expect("test time")
                .with_timezone(&Utc),
        )
    }

    fn iso(t: Option<DateTime<Utc>>) -> String {
        t.map(|t| t.to_rfc3339()).unwrap_or_default()
    }

    #[test]
    fn year_rolls_over_at_new_year() {
        // December line read early January: last year.
        let c = ctx("2027-01-01T00:05:00Z");
        assert_eq!(
            iso(infer_year(12, 31, (23, 59, 59), 0, &c)),
            "2026-12-31T23:59:59+00:00"
        );
        // January line (sender clock ahead) read on December 31st: next year.
        let c = ctx("2026-12-31T23:59:00Z");
        assert_eq!(
            iso(infer_year(1, 1, (0, 0, 30), 0, &c)),
            "2027-01-01T00:00:30+00:00"
        );
        // An old line of the same year stays this year.
        let c = ctx("2026-11-25T08:00:00Z");
        assert_eq!(
            iso(infer_year(1, 2, (3, 4, 5), 0, &c)),
            "2026-01-02T03:04:05+00:00"
        );
        // Feb 29 goes back to the last leap year.
        assert_eq!(
            iso(infer_year(2, 29, (0, 0, 0), 0, &c)),
            "2024-02-29T00:00:00+00:00"
        );
        assert_eq!(infer_year(2, 30, (0, 0, 0), 0, &c), None);
    }

    #[test]
    fn year_inference_uses_the_configured_zone() {
        let mut c = ctx("2026-06-01T00:00:00Z");
        c.timezone = FixedOffset::east_opt(9 * 3600).expect("JST");
        assert_eq!(
            iso(infer_year(5, 31, (9, 0, 0), 0, &c)),
            "2026-05-31T00:00:00+00:00"
        );
    }

    #[test]
    fn rfc3339_prefixes() {
        let (t, n) = rfc3339_prefix("2026-11-24T00:32:37.604537+00:00 host x").expect("ok");
        assert_eq!(t.to_rfc3339(), "2026-11-24T00:32:37.604537+00:00");
        assert_eq!(n, 32);
        let (t, n) = rfc3339_prefix("2026-11-24T09:32:37+0900 x").expect("ok");
        assert_eq!(t.to_rfc3339(), "2026-11-24T00:32:37+00:00");
        assert_eq!(n, 24);
        let (_, n) = rfc3339_prefix("2026-11-24T09:32:37.1Z").expect("ok");
        assert_eq!(n, 22);
        assert!(rfc3339_prefix("2026-11-24T09:32:37").is_none());
        assert!(rfc3339_prefix("2026-13-24T09:32:37Z").is_none());
    }
}
