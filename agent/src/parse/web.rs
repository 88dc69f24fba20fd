//! `web-access` and `web-error`: nginx and Apache httpd logs.
//!
//! **Access** (`web-access`): the common and combined formats, as nginx and Apache write
//! them by default: `IP IDENT USER [24/Nov/2026:10:00:00 +0000] "GET /p?q HTTP/1.1" 200
//! 512 ["REFERER" "USER-AGENT"]`, with anything after the user agent ignored (nginx's
//! extra fields). Quotes escaped inside the request or user agent (`\"`, `\x22`) are kept
//! as written. Fields: `source.address`/`ip`, `user.name`, `http.request.method`,
//! `url.original`, `url.path`, `url.query`, `http.version`, `http.response.status_code`,
//! `http.response.body.bytes`, `http.request.referrer`, `user_agent.original`. A request
//! that is not `METHOD TARGET PROTOCOL` (scanners send binary) keeps it in `url.original`
//! only when it has no spaces. `event.action: http_request`, category `web`, type
//! `access`, outcome `success` below status 400, `failure` from 400.
//!
//! **Error** (`web-error`):
//! * Apache 2.4 `[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416]
//!   [client 1.2.3.4:5678] AH00037: msg` and 2.2 `[Sun Dec 04 04:47:44 2005] [error]
//!   [client 1.2.3.4] msg`: `log.level`, `apache.error.module`, `process.pid`,
//!   `process.thread.id`, `source.ip`/`port`, `error.code` (`AH…`), `message`.
//! * nginx `2026/11/24 10:00:00 [error] 1234#5678: *99 msg, client: 1.2.3.4, server: s,
//!   request: "GET / HTTP/1.1", host: "h"`: `log.level`, `process.pid`,
//!   `process.thread.id`, `nginx.error.connection_id`, `source.ip`, `http.request.method`,
//!   `url.original`, `message` (without the trailing key list).
//!
//! Error-log times carry no zone: `ParseContext::timezone` applies. `event.action:
//! web_error`, category `web`, type `error`.

use chrono::{DateTime, FixedOffset, Utc};

use super::time::{digits, fraction_micros, hms, local_to_utc, month_from_abbr, naive};
use super::{Fields, Outcome, ParseContext};

/// One access-log line, borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord<'a> {
    pub client: &'a str,
    pub user: Option<&'a str>,
    pub timestamp: DateTime<Utc>,
    pub request: &'a str,
    pub status: Option<u16>,
    pub bytes: Option<u64>,
    pub referrer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub(crate) fn parse_access_line(line: &str, out: &mut Fields) -> bool {
    match parse_access(line) {
        Some(r) => {
            write_access(&r, out);
            true
        }
        None => false,
    }
}

fn dash(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// The content of a `"…"` at the start of `s` (backslash escapes skipped) and the rest.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('"')?;
    let b = inner.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        match b[pos] {
            b'\\' => pos += 2,
            b'"' => return Some((&inner[..pos], &inner[pos + 1..])),
            _ => pos += 1,
        }
    }
    None
}

/// `24/Nov/2026:10:00:00 +0000`.
fn clf_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let day = digits(b, 2)?;
    let month = month_from_abbr(&b[3..])?;
    let year = digits(&b[7..], 4)? as i32;
    let time = hms(&b[12..])?;
    let sign: i32 = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * (digits(&b[22..], 2)? as i32 * 3600 + digits(&b[24..], 2)? as i32 * 60);
    local_to_utc(
        naive(year, month, day, time, 0)?,
        FixedOffset::east_opt(offset)?,
    )
}

/// Reads a common or combined access-log line.
pub fn parse_access(line: &str) -> Option<AccessRecord<'_>> {
    let (client, rest) = line.split_once(' ')?;
    let (_ident, rest) = rest.split_once(' ')?;
    let (user, rest) = rest.split_once(" [")?;
    let (time, rest) = rest.split_once("] ")?;
    let timestamp = clf_time(time)?;
    let (request, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match status {
        "-" => None,
        s if s.len() == 3 => Some(s.parse::<u16>().ok()?),
        _ => return None,
    };
    let (bytes, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let bytes = match bytes {
        "-" => None,
        b => Some(b.parse::<u64>().ok()?),
    };
    let (referrer, user_agent) = match quoted(rest) {
        Some((referrer, after)) => (
            Some(referrer),
            after.strip_prefix(' ').and_then(quoted).map(|(ua, _)| ua),
        ),
        None => (None, None),
    };
    if client.is_empty() {
        return None;
    }
    Some(AccessRecord {
        client,
        user: dash(user),
        timestamp,
        request,
        status,
        bytes,
        referrer: referrer.and_then(dash),
        user_agent: user_agent.and_then(dash),
    })
}

/// `METHOD TARGET PROTOCOL` → method, target, version.
fn request_line(request: &str) -> Option<(&str, &str, Option<&str>)> {
    let (method, rest) = request.split_once(' ')?;
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    match rest.rsplit_once(' ') {
        Some((target, proto)) if proto.starts_with("HTTP/") => {
            Some((method, target, Some(&proto[5..])))
        }
        _ => Some((method, rest, None)),
    }
}

fn write_url(target: &str, out: &mut Fields) {
    out.str("url.original", target);
    let without_fragment = target.split('#').next().unwrap_or(target);
    match without_fragment.split_once('?') {
        Some((path, query)) => {
            out.str("url.path", path);
            if !query.is_empty() {
                out.str("url.query", query);
            }
        }
        None => out.str("url.path", without_fragment),
    }
}

fn write_access(r: &AccessRecord<'_>, out: &mut Fields) {
    out.timestamp(r.timestamp);
    out.classify("http_request", "web", "access");
    out.source_address(r.client);
    out.opt_str("user.name", r.user);
    match request_line(r.request) {
        Some((method, target, version)) => {
            out.str("http.request.method", method);
            write_url(target, out);
            out.opt_str("http.version", version);
        }
        None if !r.request.is_empty() && r.request != "-" && !r.request.contains(' ') => {
            out.str("url.original", r.request);
        }
        None => {}
    }
    if let Some(status) = r.status {
        out.num("http.response.status_code", i64::from(status));
        out.outcome(if status < 400 {
            Outcome::Success
        } else {
            Outcome::Failure
        });
    }
    if let Some(bytes) = r.bytes {
        out.set("http.response.body.bytes", serde_json::Value::from(bytes));
    }
    out.opt_str("http.request.referrer", r.referrer);
    out.opt_str("user_agent.original", r.user_agent);
}

pub(crate) fn parse_error_line(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    if line.starts_with('[') {
        apache_error(line, ctx, out)
    } else {
        nginx_error(line, ctx, out)
    }
}

/// `Sun Dec 04 04:47:44[.123456] 2005`.
fn apache_time(s: &str, tz: FixedOffset) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' {
        return None;
    }
    let month = month_from_abbr(&b[4..])?;
    let day = if b[8] == b' ' {
        digits(&b[9..], 1)?
    } else {
        digits(&b[8..], 2)?
    };
    let time = hms(&b[11..])?;
    let (micros, used) = fraction_micros(&b[19..]);
    if b.get(19 + used) != Some(&b' ') {
        return None;
    }
    let year = digits(&b[20 + used..], 4)? as i32;
    if b.len() != 24 + used {
        return None;
    }
    local_to_utc(naive(year, month, day, time, micros)?, tz)
}

fn apache_error(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let Some((time, mut rest)) = line[1..].split_once("] ") else {
        return false;
    };
    let Some(timestamp) = apache_time(time, ctx.timezone) else {
        return false;
    };
    let mut level = None;
    let mut module = None;
    let mut pid = None;
    let mut tid = None;
    let mut client = None;
    while let Some(inner) = rest.strip_prefix('[') {
        // A field ends at "] " (an IPv6 client is `[client [::1]:443]`), or at the
        // line's last ']'.
        let Some((field, after)) = inner
            .split_once("] ")
            .or_else(|| inner.strip_suffix(']').map(|f| (f, "")))
        else {
            break;
        };
        if let Some(p) = field.strip_prefix("pid ") {
            let (p, t) = p.split_once(":tid ").unwrap_or((p, ""));
            pid = p.parse::<u32>().ok();
            tid = t.parse::<u64>().ok();
        } else if let Some(c) = field.strip_prefix("client ") {
            client = Some(c);
        } else if level.is_none() && !field.contains(' ') {
            match field.split_once(':') {
                Some((m, l)) => {
                    module = Some(m);
                    level = Some(l);
                }
                None => level = Some(field),
            }
        } else {
            break;
        }
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    out.timestamp(timestamp);
    out.classify("web_error", "web", "error");
    out.opt_str("log.level", level);
    out.opt_str("apache.error.module", module);
    if let Some(p) = pid {
        out.num("process.pid", i64::from(p));
    }
    if let Some(t) = tid {
        out.set("process.thread.id", serde_json::Value::from(t));
    }
    if let Some(c) = client {
        // `1.2.3.4:5678`, `[::1]:5678`, `::1`, or `1.2.3.4`.
        if c.parse::<std::net::IpAddr>().is_ok() {
            out.source_address(c);
        } else if let Some((addr, port)) = c.rsplit_once(':') {
            out.source_address(addr.trim_start_matches('[').trim_end_matches(']'));
            out.port("source.port", port);
        } else {
            out.source_address(c);
        }
    }
    if let Some((code, msg)) = rest.split_once(": ")
        && code.len() == 7
        && code.starts_with("AH")
        && code[2..].bytes().all(|c| c.is_ascii_digit())
    {
        out.str("error.code", code);
        out.str("message", msg);
    } else {
        out.str("message", rest);
    }
    true
}

/// `2026/11/24 10:00:00`.
fn nginx_time(b: &[u8], tz: FixedOffset) -> Option<DateTime<Utc>> {
    if b.len() < 19 || b[4] != b'/' || b[7] != b'/' || b[10] != b' ' {
        return None;
    }
    let year = digits(b, 4)? as i32;
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let time = hms(&b[11..])?;
    local_to_utc(naive(year, month, day, time, 0)?, tz)
}

fn nginx_error(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let Some(timestamp) = nginx_time(line.as_bytes(), ctx.timezone) else {
        return false;
    };
    let Some(rest) = line.get(19..).and_then(|r| r.strip_prefix(" [")) else {
        return false;
    };
    let Some((level, rest)) = rest.split_once("] ") else {
        return false;
    };
    let Some((ids, mut message)) = rest.split_once(": ") else {
        return false;
    };
    let Some((pid, tid)) = ids.split_once('#') else {
        return false;
    };
    out.timestamp(timestamp);
    out.classify("web_error", "web", "error");
    out.str("log.level", level);
    if let Ok(p) = pid.parse::<u32>() {
        out.num("process.pid", i64::from(p));
    }
    if let Ok(t) = tid.parse::<u64>() {
        out.set("process.thread.id", serde_json::Value::from(t));
    }
    if let Some(after_star) = message.strip_prefix('*')
        && let Some((cid, after)) = after_star.split_once(' ')
        && let Ok(cid) = cid.parse::<u64>()
    {
        out.set("nginx.error.connection_id", serde_json::Value::from(cid));
        message = after;
    }
    if let Some(at) = message.find(", client: ") {
        let keys = &message[at + 2..];
        message = &message[..at];
        for (key, value) in nginx_keys(keys) {
            match key {
                "client" => out.source_address(value),
                "server" => out.str("nginx.error.server", value),
                "host" => out.str("url.domain", value),
                "request" => {
                    if let Some((method, target, version)) = request_line(value) {
                        out.str("http.request.method", method);
                        write_url(target, out);
                        out.opt_str("http.version", version);
                    }
                }
                "upstream" => out.str("nginx.error.upstream", value),
                "referrer" => out.str("http.request.referrer", value),
                _ => {}
            }
        }
    }
    out.str("message", message);
    true
}

/// `client: 1.2.3.4, server: _, request: "GET / HTTP/1.1", host: "h"` pairs.
fn nginx_keys(mut s: &str) -> Vec<(&str, &str)> {
    let mut pairs = Vec::new();
    while let Some((key, rest)) = s.split_once(": ") {
        let (value, after) = if rest.starts_with('"') {
            match quoted(rest) {
                Some(v) => v,
                None => break,
            }
        } else {
            rest.split_once(", ").map_or((rest, ""), |(v, a)| (v, a))
        };
        pairs.push((key, value));
        s = after.strip_prefix(", ").unwrap_or(after);
        if s.is_empty() {
            break;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_line() {
        let r = parse_access(
            r#"203.0.113.9 - bob [24/Nov/2026:10:00:00 +0900] "GET /a?b=1 HTTP/1.1" 404 12 "-" "curl/8.5 \"x\"""#,
        )
        .expect("ok");
        assert_eq!(r.timestamp.to_rfc3339(), "2026-11-24T01:00:00+00:00");
        assert_eq!(r.user, Some("bob"));
        assert_eq!(r.status, Some(404));
        assert_eq!(r.referrer, None);
        assert_eq!(r.user_agent, Some(r#"curl/8.5 \"x\""#));
    }

    #[test]
    fn apache_time_variants() {
        let tz = FixedOffset::east_opt(0).expect("utc");
        assert!(apache_time("Sun Dec 04 04:47:44 2005", tz).is_some());
        assert!(apache_time("Wed Oct 11 14:32:52.123456 2000", tz).is_some());
        assert!(apache_time("Wed Oct 11 14:32:52.123456 20", tz).is_none());
    }
}
