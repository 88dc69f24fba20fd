//! `syslog`: the three syslog line formats found in files and on the wire, told apart by
//! their first bytes.
//!
//! | format | example |
//! | --- | --- |
//! | RFC 3164 (BSD) | `<34>Nov 24 00:32:37 host sshd[123]: msg` (the `<PRI>` is optional) |
//! | RFC 5424 | `<165>1 2026-11-24T00:32:37.003Z host app 123 ID47 [ex@32473 k="v"] msg` |
//! | rsyslog file default (Debian 12+, Ubuntu) | `2026-11-24T00:32:37.604537+00:00 host sshd[123]: msg` |
//!
//! RFC 3164 has no year and no zone: the zone is `ParseContext::timezone` and the year the
//! latest that does not put the line more than a day after `ParseContext::reference_time`
//! (see [`ParseContext`]). A `TAG[PID]:` is read as `process.name` / `process.pid`; a tag
//! may hold spaces (`syslogd 1.4.1: restart.`) and a line whose host field is missing
//! (`Nov 24 00:32:37 sshd[1]: …`, as some local loggers write) is recognised by its tag.
//!
//! Fields: `@timestamp`, `host.hostname`, `process.name`, `process.pid`, `message` (the MSG
//! part), `log.syslog.{priority, facility.code, facility.name, severity.code,
//! severity.name, appname, procid, msgid, version, structured_data}`. RFC 5424
//! structured data is kept as `{"sd-id": {"param": "value"}}` with escapes decoded.

use chrono::{DateTime, Utc};
use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_while1};
use nom::character::complete::char;
use serde_json::{Map, Value};

use super::time::{digits, fraction_micros, hms, infer_year, month_from_abbr, rfc3339_prefix};
use super::{Fields, ParseContext};

/// Which of the formats a line was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc3164,
    Rfc5424,
    /// rsyslog's RFC 3339 file format (`RSYSLOG_FileFormat`).
    Rfc3339File,
}

/// One syslog line, borrowed from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogRecord<'a> {
    pub format: SyslogFormat,
    pub priority: Option<u8>,
    pub timestamp: Option<DateTime<Utc>>,
    pub hostname: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub proc_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
    /// RFC 5424 structured data as written (`[id k="v"]…`).
    pub structured_data: Option<&'a str>,
    pub message: &'a str,
}

/// Parses and writes a syslog line; `false` (nothing written) if it is not one.
pub(crate) fn parse_line(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    match parse(line, ctx) {
        Some(record) => {
            write(&record, out);
            true
        }
        None => false,
    }
}

/// Reads a syslog line in any of the three formats.
pub fn parse<'a>(line: &'a str, ctx: &ParseContext) -> Option<SyslogRecord<'a>> {
    let (rest, priority) = match priority(line) {
        Ok((rest, p)) => (rest, Some(p)),
        Err(_) => (line, None),
    };
    if let Some(after_version) = rest.strip_prefix("1 ")
        && priority.is_some()
    {
        return parse_5424(after_version, priority);
    }
    let b = rest.as_bytes();
    if let Some(month) = month_from_abbr(b) {
        return parse_3164(rest, month, priority, ctx);
    }
    let (timestamp, used) = rfc3339_prefix(rest)?;
    let after = rest.get(used..)?.strip_prefix(' ')?;
    let mut record = host_tag_message(after)?;
    record.format = SyslogFormat::Rfc3339File;
    record.priority = priority;
    record.timestamp = Some(timestamp);
    Some(record)
}

/// `<PRI>`: 1 to 3 digits, at most 191.
fn priority(i: &str) -> IResult<&str, u8> {
    let (rest, (_, digits_str, _)) = (
        char('<'),
        take_while1(|c: char| c.is_ascii_digit()),
        char('>'),
    )
        .parse(i)?;
    match digits_str.parse::<u8>() {
        Ok(p) if p <= 191 && digits_str.len() <= 3 => Ok((rest, p)),
        _ => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Verify,
        ))),
    }
}

/// `Mmm dd HH:MM:SS[.frac] ` then host, tag and message.
fn parse_3164<'a>(
    rest: &'a str,
    month: u32,
    priority: Option<u8>,
    ctx: &ParseContext,
) -> Option<SyslogRecord<'a>> {
    let b = rest.as_bytes();
    if b.len() < 16 || b[3] != b' ' {
        return None;
    }
    // "Jun  9" or "Jun 09" or "Jun 9 " (some writers do not pad).
    let (day, time_at) = if b[4] == b' ' {
        (digits(&b[5..], 1)?, 7)
    } else if b[5] == b' ' {
        (digits(&b[4..], 1)?, 6)
    } else {
        (digits(&b[4..], 2)?, 7)
    };
    if b.get(time_at - 1) != Some(&b' ') {
        return None;
    }
    let time = hms(b.get(time_at..)?)?;
    let (micros, frac) = fraction_micros(b.get(time_at + 8..)?);
    let timestamp = infer_year(month, day, time, micros, ctx)?;
    let after = rest.get(time_at + 8 + frac..)?;
    let after = after.strip_prefix(' ').unwrap_or(after);
    let mut record = host_tag_message(after)?;
    record.priority = priority;
    record.timestamp = Some(timestamp);
    Some(record)
}

/// `HOST TAG[PID]: MSG` (BSD and rsyslog file formats). The host may be missing when the
/// first word is clearly a tag; the tag may be missing (then all of it is the message).
fn host_tag_message(after: &str) -> Option<SyslogRecord<'_>> {
    let (host, rest) = match after.split_once(' ') {
        Some((first, rest)) if !first.is_empty() && !looks_like_tag(first) => (Some(first), rest),
        Some(_) => (None, after),
        None if !after.is_empty() && !looks_like_tag(after) => (Some(after), ""),
        None => (None, after),
    };
    let (app_name, proc_id, message) = tag_and_message(rest);
    Some(SyslogRecord {
        format: SyslogFormat::Rfc3164,
        priority: None,
        timestamp: None,
        hostname: host,
        app_name,
        proc_id,
        msg_id: None,
        structured_data: None,
        message,
    })
}

fn looks_like_tag(word: &str) -> bool {
    word.ends_with(':') || (word.contains('[') && word.ends_with("]:"))
}

/// Splits `TAG[PID]: MSG`. A tag is at most 64 bytes and ends at `[` or `:`.
fn tag_and_message(rest: &str) -> (Option<&str>, Option<&str>, &str) {
    let b = rest.as_bytes();
    let limit = b.len().min(64);
    let Some(end) = b[..limit].iter().position(|&c| c == b'[' || c == b':') else {
        return (None, None, rest);
    };
    let name = rest[..end].trim();
    if name.is_empty() {
        return (None, None, rest);
    }
    if b[end] == b'[' {
        let Some(close) = rest[end..].find(']') else {
            return (None, None, rest);
        };
        let pid = &rest[end + 1..end + close];
        let after = &rest[end + close + 1..];
        let Some(message) = after.strip_prefix(':') else {
            return (None, None, rest);
        };
        let message = message.strip_prefix(' ').unwrap_or(message);
        return (Some(name), Some(pid), message);
    }
    let message = &rest[end + 1..];
    if !(message.is_empty() || message.starts_with(' ')) {
        // "host 10:00 …" or an IPv6 address: not a tag.
        return (None, None, rest);
    }
    (
        Some(name),
        None,
        message.strip_prefix(' ').unwrap_or(message),
    )
}

/// `TIMESTAMP HOST APP PROCID MSGID SD [MSG]` after `<PRI>1 `.
fn parse_5424(rest: &str, priority: Option<u8>) -> Option<SyslogRecord<'_>> {
    let (ts, rest) = rest.split_once(' ')?;
    let timestamp = if ts == "-" {
        None
    } else {
        let (t, used) = rfc3339_prefix(ts)?;
        if used != ts.len() {
            return None;
        }
        Some(t)
    };
    let (hostname, rest) = rest.split_once(' ')?;
    let (app, rest) = rest.split_once(' ')?;
    let (procid, rest) = rest.split_once(' ')?;
    let (msgid, rest) = match rest.split_once(' ') {
        Some(split) => split,
        None => (rest, ""),
    };
    let (structured_data, message) = if let Some(after) = rest.strip_prefix('-') {
        (None, after)
    } else {
        let (after, _) = structured_data(rest).ok()?;
        (Some(&rest[..rest.len() - after.len()]), after)
    };
    let message = message.strip_prefix(' ').unwrap_or(message);
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    let nil = |s: &'_ str| -> bool { s == "-" || s.is_empty() };
    Some(SyslogRecord {
        format: SyslogFormat::Rfc5424,
        priority,
        timestamp,
        hostname: (!nil(hostname)).then_some(hostname),
        app_name: (!nil(app)).then_some(app),
        proc_id: (!nil(procid)).then_some(procid),
        msg_id: (!nil(msgid)).then_some(msgid),
        structured_data,
        message,
    })
}

/// SD-NAME: printable ASCII except `=`, space, `]`, `"`.
fn sd_name(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_graphic() && c != '=' && c != ']' && c != '"')(i)
}

/// A PARAM-VALUE between quotes, with `\"`, `\\` and `\]` escapes: the raw slice.
fn sd_value(i: &str) -> IResult<&str, &str> {
    let (rest, _) = char('"')(i)?;
    let b = rest.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        match b[pos] {
            b'\\' => pos += 2,
            b'"' => return Ok((&rest[pos + 1..], &rest[..pos])),
            _ => pos += 1,
        }
    }
    Err(nom::Err::Error(nom::error::Error::new(
        i,
        nom::error::ErrorKind::Char,
    )))
}

type SdElement<'a> = (&'a str, Vec<(&'a str, &'a str)>);

fn sd_element(i: &str) -> IResult<&str, SdElement<'_>> {
    let (mut rest, (_, id)) = (char('['), sd_name).parse(i)?;
    let mut params = Vec::new();
    loop {
        if let Ok((after, _)) = char::<&str, nom::error::Error<&str>>(']')(rest) {
            return Ok((after, (id, params)));
        }
        let (after, (_, name, _, value)) = (tag(" "), sd_name, char('='), sd_value).parse(rest)?;
        params.push((name, value));
        rest = after;
    }
}

/// One or more SD-ELEMENTs.
fn structured_data(i: &str) -> IResult<&str, Vec<SdElement<'_>>> {
    let mut elements = Vec::new();
    let (mut rest, first) = sd_element(i)?;
    elements.push(first);
    while rest.starts_with('[') {
        let (after, element) = sd_element(rest)?;
        elements.push(element);
        rest = after;
    }
    Ok((rest, elements))
}

fn unescape_sd(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('"' | '\\' | ']')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

/// Writes the syslog fields of `record`.
pub(crate) fn write(record: &SyslogRecord<'_>, out: &mut Fields) {
    if let Some(t) = record.timestamp {
        out.timestamp(t);
    }
    if let Some(p) = record.priority {
        out.num("log.syslog.priority", i64::from(p));
        let facility = usize::from(p / 8);
        let severity = usize::from(p % 8);
        out.num("log.syslog.facility.code", facility as i64);
        if let Some(name) = FACILITIES.get(facility) {
            out.str("log.syslog.facility.name", name);
        }
        out.num("log.syslog.severity.code", severity as i64);
        if let Some(name) = SEVERITIES.get(severity) {
            out.str("log.syslog.severity.name", name);
        }
    }
    out.opt_str("host.hostname", record.hostname);
    if let Some(app) = record.app_name {
        out.str("process.name", app);
        out.str("log.syslog.appname", app);
    }
    if let Some(pid) = record.proc_id {
        match pid.parse::<u32>() {
            Ok(n) => out.num("process.pid", i64::from(n)),
            Err(_) => out.str("log.syslog.procid", pid),
        }
    }
    if record.format == SyslogFormat::Rfc5424 {
        out.num("log.syslog.version", 1);
        out.opt_str("log.syslog.msgid", record.msg_id);
        if let Some(sd) = record.structured_data
            && let Ok((_, elements)) = structured_data(sd)
        {
            let mut map = Map::new();
            for (id, params) in elements {
                let mut fields = Map::new();
                for (name, value) in params {
                    fields.insert(name.to_string(), Value::String(unescape_sd(value)));
                }
                map.insert(id.to_string(), Value::Object(fields));
            }
            out.set("log.syslog.structured_data", Value::Object(map));
        }
    }
    out.str("message", record.message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ParseContext {
        ParseContext::at(
            DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn bsd_line() {
        let r = parse("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user x", &ctx()).expect("ok");
        assert_eq!(r.format, SyslogFormat::Rfc3164);
        assert_eq!(
            r.timestamp.map(|t| t.to_rfc3339()),
            Some("2025-12-10T06:55:46+00:00".into())
        );
        assert_eq!(r.hostname, Some("LabSZ"));
        assert_eq!(r.app_name, Some("sshd"));
        assert_eq!(r.proc_id, Some("24200"));
        assert_eq!(r.message, "Invalid user x");
    }

    #[test]
    fn bsd_quirks() {
        let r = parse("Jul  3 04:08:03 combo syslogd 1.4.1: restart.", &ctx()).expect("ok");
        assert_eq!(r.app_name, Some("syslogd 1.4.1"));
        assert_eq!(r.message, "restart.");
        let r = parse(
            "Jul  7 08:06:15 combo  -- root[2421]: ROOT LOGIN ON tty2",
            &ctx(),
        )
        .expect("ok");
        assert_eq!(r.app_name, Some("-- root"));
        assert_eq!(r.proc_id, Some("2421"));
        let r = parse("Nov 24 10:00:00 sshd[5]: hello", &ctx()).expect("ok");
        assert_eq!((r.hostname, r.app_name), (None, Some("sshd")));
        let r = parse("<13>Nov 24 10:00:00 host just text", &ctx()).expect("ok");
        assert_eq!((r.app_name, r.message), (None, "just text"));
        assert_eq!(r.priority, Some(13));
    }

    #[test]
    fn rsyslog_file_format() {
        let r = parse(
            "2026-11-24T00:32:37.604537+00:00 web-1 sshd[123]: Accepted",
            &ctx(),
        )
        .expect("ok");
        assert_eq!(r.format, SyslogFormat::Rfc3339File);
        assert_eq!(r.hostname, Some("web-1"));
        assert_eq!(r.message, "Accepted");
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let r = parse(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication"][x@1 a="]"] An application event"#,
            &ctx(),
        );
        assert!(
            r.is_some(),
            "an unescaped ] inside a value is accepted, as rsyslog does"
        );
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication"][x@1 a="\]"] An application event"#;
        let r = parse(line, &ctx()).expect("ok");
        assert_eq!(r.format, SyslogFormat::Rfc5424);
        assert_eq!(r.app_name, Some("evntslog"));
        assert_eq!(r.proc_id, None);
        assert_eq!(r.msg_id, Some("ID47"));
        assert_eq!(r.message, "An application event");
        let mut out = Fields::default();
        write(&r, &mut out);
        assert_eq!(
            out.get("log.syslog.structured_data"),
            Some(
                serde_json::json!({"exampleSDID@32473": {"iut": "3", "eventSource": "Appl\"ication"}, "x@1": {"a": "]"}})
            )
        );
        assert_eq!(
            out.get("log.syslog.facility.name"),
            Some(serde_json::json!("local4"))
        );
        assert_eq!(
            out.get("log.syslog.severity.name"),
            Some(serde_json::json!("notice"))
        );
    }

    #[test]
    fn not_syslog() {
        for line in [
            "",
            "hello",
            "<999>Nov 24 10:00:00 h x",
            "Nov 24 xx:00:00 h x",
            "<1>1 ",
        ] {
            assert!(parse(line, &ctx()).is_none(), "{line:?}");
        }
    }
}
