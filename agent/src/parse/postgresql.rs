//! `postgresql`: PostgreSQL server logs, in the stderr format with the default prefixes
//! (`%m [%p] ` upstream, `%m [%p] %q%u@%d ` on Debian and Ubuntu) and in `jsonlog`.
//!
//! Stderr: `2026-11-25 08:01:02.123 UTC [1234] alice@shop FATAL:  message`. The zone
//! `UTC`/`GMT` or a numeric offset (`+09`, `-0330`) is honoured; another abbreviation
//! (`CET`) is read in `ParseContext::timezone`. Continuation lines of a multi-line
//! statement (starting with a tab) are not log lines: they are `unparsed`.
//!
//! Fields: `@timestamp`, `process.pid`, `log.level` (the severity as written: `LOG`,
//! `ERROR`, `FATAL`, `STATEMENT`, …), `user.name`, `postgresql.log.database`, `message`,
//! `source.address/ip`, `source.port`, `postgresql.log.query`, `event.duration` (ns),
//! `error.code` (SQLSTATE, jsonlog only), `error.message`.
//!
//! | message | `event.action` | outcome | category |
//! | --- | --- | --- | --- |
//! | `LOG: connection received: host=H port=P` | `pg_connection_received` | unknown | network |
//! | `LOG: connection authenticated: …` | `pg_connection_authenticated` | success | authentication |
//! | `LOG: connection authorized: user=U database=D …` | `pg_connection_authorized` | success | authentication |
//! | `LOG: disconnection: session time: … user=U database=D host=H port=P` | `pg_disconnection` | unknown | session |
//! | `FATAL: password authentication failed for user "U"` | `pg_auth_failed` | failure | authentication |
//! | `FATAL: role "U" does not exist` | `pg_role_missing` | failure | authentication |
//! | `FATAL: no pg_hba.conf entry for host "H", user "U", database "D"…` | `pg_hba_rejected` | failure | authentication |
//! | `FATAL: database "D" does not exist` | `pg_database_missing` | failure | authentication |
//! | other `FATAL`/`PANIC` | `pg_fatal` | failure | database |
//! | `LOG: statement: SQL`, `LOG: duration: N ms  statement: SQL`, `LOG: execute N: SQL` | `pg_statement` | unknown | database |
//! | `ERROR: …` | `pg_error` | failure | database |
//! | `STATEMENT: SQL` (the statement of the error before it) | `pg_error_statement` | failure | database |

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;

use super::time::{date_time_prefix, digits, local_to_utc};
use super::{Fields, Outcome, ParseContext};

/// One log line, borrowed where the format allows.
#[derive(Debug, Clone, PartialEq)]
pub struct PgRecord<'a> {
    pub timestamp: DateTime<Utc>,
    pub pid: Option<u32>,
    pub user: Option<Cow<'a, str>>,
    pub database: Option<Cow<'a, str>>,
    pub level: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub remote_host: Option<Cow<'a, str>>,
    pub remote_port: Option<u16>,
    pub sqlstate: Option<Cow<'a, str>>,
    pub statement: Option<Cow<'a, str>>,
}

pub(crate) fn parse_line(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let record = if line.starts_with('{') {
        parse_jsonlog(line, ctx)
    } else {
        parse_stderr(line, ctx)
    };
    match record {
        Some(r) => {
            write(&r, out);
            true
        }
        None => false,
    }
}

/// `2026-11-25 08:01:02.123 UTC`: the time and the bytes it took (zone included).
fn pg_time(s: &str, tz: FixedOffset) -> Option<(DateTime<Utc>, usize)> {
    let b = s.as_bytes();
    let (local, mut pos) = date_time_prefix(b, b" ")?;
    let mut zone = tz;
    if b.get(pos) == Some(&b' ') {
        let rest = &s[pos + 1..];
        let end = rest.find(' ').unwrap_or(rest.len());
        let word = &rest[..end];
        zone = match word {
            "UTC" | "GMT" | "Z" => FixedOffset::east_opt(0)?,
            w if w.starts_with(['+', '-']) => numeric_zone(w)?,
            w if !w.is_empty() && w.bytes().all(|c| c.is_ascii_alphabetic()) => tz,
            _ => return None,
        };
        pos += 1 + end;
    }
    Some((local_to_utc(local, zone)?, pos))
}

/// `+09`, `-0330`, `+05:30`.
fn numeric_zone(w: &str) -> Option<FixedOffset> {
    let b = w.as_bytes();
    let sign = if b[0] == b'-' { -1 } else { 1 };
    let hours = digits(&b[1..], 2)? as i32;
    let rest = &b[3..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    let minutes = if rest.is_empty() {
        0
    } else {
        digits(rest, 2)? as i32
    };
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

fn is_level(word: &str) -> bool {
    matches!(
        word,
        "LOG"
            | "INFO"
            | "NOTICE"
            | "WARNING"
            | "ERROR"
            | "FATAL"
            | "PANIC"
            | "DETAIL"
            | "HINT"
            | "QUERY"
            | "CONTEXT"
            | "STATEMENT"
            | "LOCATION"
            | "DEBUG"
            | "DEBUG1"
            | "DEBUG2"
            | "DEBUG3"
            | "DEBUG4"
            | "DEBUG5"
    )
}

/// `%m [%p] [%q%u@%d ]LEVEL:  message`.
pub fn parse_stderr<'a>(line: &'a str, ctx: &ParseContext) -> Option<PgRecord<'a>> {
    let (timestamp, used) = pg_time(line, ctx.timezone)?;
    let rest = line.get(used..)?.strip_prefix(" [")?;
    let (pid, rest) = rest.split_once("] ")?;
    let pid = pid.parse::<u32>().ok()?;
    let (first, after_first) = rest.split_once(' ').unwrap_or((rest, ""));
    let (user, database, rest) = match first.strip_suffix(':') {
        Some(level) if is_level(level) => (None, None, rest),
        _ => match first.split_once('@') {
            Some((u, d)) => (Some(u), Some(d), after_first),
            None => return None,
        },
    };
    let (level, message) = rest.split_once(':')?;
    if !is_level(level) {
        return None;
    }
    let message = message.trim_start_matches(' ');
    let known = |s: &'a str| (!s.is_empty() && s != "[unknown]").then_some(Cow::Borrowed(s));
    Some(PgRecord {
        timestamp,
        pid: Some(pid),
        user: user.and_then(known),
        database: database.and_then(known),
        level: Cow::Borrowed(level),
        message: Cow::Borrowed(message),
        remote_host: None,
        remote_port: None,
        sqlstate: None,
        statement: None,
    })
}

#[derive(Deserialize)]
struct JsonLog<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    dbname: Option<Cow<'a, str>>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(borrow, default)]
    remote_host: Option<Cow<'a, str>>,
    #[serde(default)]
    remote_port: Option<u16>,
    #[serde(borrow)]
    error_severity: Cow<'a, str>,
    #[serde(borrow, default)]
    state_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    statement: Option<Cow<'a, str>>,
}

/// One `jsonlog` line (PostgreSQL 15+).
pub fn parse_jsonlog<'a>(line: &'a str, ctx: &ParseContext) -> Option<PgRecord<'a>> {
    let log: JsonLog<'a> = serde_json::from_str(line).ok()?;
    let (timestamp, used) = pg_time(&log.timestamp, ctx.timezone)?;
    if used != log.timestamp.len() {
        return None;
    }
    Some(PgRecord {
        timestamp,
        pid: log.pid,
        user: log.user,
        database: log.dbname,
        level: log.error_severity,
        message: log.message.unwrap_or(Cow::Borrowed("")),
        remote_host: log.remote_host,
        remote_port: log.remote_port,
        sqlstate: log.state_code,
        statement: log.statement,
    })
}

/// The value of `key=` in `key=value key=value` (values without spaces).
fn word_field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The first `"quoted"` part of `s`.
fn first_quoted(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once('"')?;
    rest.split_once('"').map(|(q, _)| q)
}

fn write(r: &PgRecord<'_>, out: &mut Fields) {
    out.timestamp(r.timestamp);
    if let Some(pid) = r.pid {
        out.num("process.pid", i64::from(pid));
    }
    out.str("log.level", &r.level);
    out.opt_str("user.name", r.user.as_deref());
    out.opt_str("postgresql.log.database", r.database.as_deref());
    out.opt_str("error.code", r.sqlstate.as_deref());
    if let Some(host) = &r.remote_host {
        out.source_address(host);
    }
    if let Some(port) = r.remote_port {
        out.num("source.port", i64::from(port));
    }
    out.str("message", &r.message);
    let message: &str = &r.message;
    let level: &str = &r.level;
    use Outcome::*;
    let (action, category, kind, outcome) = match level {
        "LOG" if message.starts_with("connection received: ") => {
            if let Some(h) = word_field(message, "host") {
                out.source_address(h);
            }
            if let Some(p) = word_field(message, "port") {
                out.port("source.port", p);
            }
            ("pg_connection_received", "network", "start", Unknown)
        }
        "LOG" if message.starts_with("connection authenticated: ") => (
            "pg_connection_authenticated",
            "authentication",
            "info",
            Success,
        ),
        "LOG" if message.starts_with("connection authorized: ") => {
            if r.user.is_none() {
                out.opt_str("user.name", word_field(message, "user"));
            }
            (
                "pg_connection_authorized",
                "authentication",
                "start",
                Success,
            )
        }
        "LOG" if message.starts_with("disconnection: ") => {
            if let Some(h) = word_field(message, "host") {
                out.source_address(h);
            }
            if let Some(p) = word_field(message, "port") {
                out.port("source.port", p);
            }
            ("pg_disconnection", "session", "end", Unknown)
        }
        "LOG" => {
            let sql = message
                .strip_prefix("statement: ")
                .or_else(|| message.split_once("  statement: ").map(|(_, s)| s))
                .or_else(|| {
                    message
                        .strip_prefix("execute ")
                        .and_then(|m| m.split_once(": ").map(|(_, s)| s))
                });
            let Some(sql) = sql else { return };
            out.str("postgresql.log.query", sql);
            if let Some(ms) = message
                .strip_prefix("duration: ")
                .and_then(|d| d.split_once(" ms"))
                .and_then(|(ms, _)| ms.parse::<f64>().ok())
            {
                out.num("event.duration", (ms * 1_000_000.0) as i64);
            }
            ("pg_statement", "database", "access", Unknown)
        }
        "FATAL" | "PANIC" => {
            out.str("error.message", message);
            if message.starts_with("password authentication failed for user ") {
                if r.user.is_none() {
                    out.opt_str("user.name", first_quoted(message));
                }
                ("pg_auth_failed", "authentication", "start", Failure)
            } else if message.starts_with("role \"") && message.ends_with("\" does not exist") {
                if r.user.is_none() {
                    out.opt_str("user.name", first_quoted(message));
                }
                ("pg_role_missing", "authentication", "start", Failure)
            } else if let Some(rest) = message.strip_prefix("no pg_hba.conf entry for host ") {
                if let Some(h) = first_quoted(rest) {
                    out.source_address(h);
                }
                if let Some((_, u)) = rest.split_once("user ") {
                    out.opt_str("user.name", first_quoted(u));
                }
                ("pg_hba_rejected", "authentication", "start", Failure)
            } else if message.starts_with("database \"") && message.ends_with("\" does not exist") {
                ("pg_database_missing", "authentication", "start", Failure)
            } else {
                ("pg_fatal", "database", "info", Failure)
            }
        }
        "ERROR" => {
            out.str("error.message", message);
            out.opt_str("postgresql.log.query", r.statement.as_deref());
            ("pg_error", "database", "info", Failure)
        }
        "STATEMENT" => {
            out.str("postgresql.log.query", message);
            ("pg_error_statement", "database", "info", Failure)
        }
        _ => return,
    };
    out.classify(action, category, kind);
    out.outcome(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_prefix() {
        let ctx = ParseContext::default();
        let r = parse_stderr(
            "2026-11-25 08:01:02.123 UTC [1234] bob@shop FATAL:  role \"bob\" does not exist",
            &ctx,
        )
        .expect("ok");
        assert_eq!(r.level, "FATAL");
        assert_eq!(r.user.as_deref(), Some("bob"));
        assert_eq!(r.database.as_deref(), Some("shop"));
        assert_eq!(r.message, "role \"bob\" does not exist");
        let r =
            parse_stderr("2026-11-25 07:53:19.522 UTC [2205] LOG:  starting", &ctx).expect("ok");
        assert_eq!((r.user, r.pid), (None, Some(2205)));
        let r = parse_stderr(
            "2026-11-25 17:53:19.522 +09 [2205] [unknown]@[unknown] LOG:  connection received: host=::1 port=5",
            &ctx,
        )
        .expect("ok");
        assert_eq!(r.timestamp.to_rfc3339(), "2026-11-25T08:53:19.522+00:00");
        assert_eq!(r.user, None);
        assert!(parse_stderr("\tSELECT 1", &ctx).is_none());
        assert!(parse_stderr("2026-11-25 07:53:19.522 UTC [x] LOG:  a", &ctx).is_none());
    }
}
