//! Parsers: turn one raw log line into ECS fields of an [`Event`].
//!
//! The tailer builds the event of a line (`@timestamp` = read time, `event.id`, `message`,
//! `event.original`, `log.*`, `host.*`, `agent.*`, `event.dataset`); [`parse_into`] then
//! fills in what the line says, selected per source with `parser = "..."` ([`ParserKind`]).
//!
//! Guarantees, for every parser and every input:
//!
//! * **Never panics, never drops a line.** A line the parser does not understand keeps its
//!   `message` and `event.original` and gets the tag `unparsed`; nothing else is written
//!   (parsing is done on borrowed slices first, and fields are written only on success).
//! * **`event.original` is never touched**, `event.id`, `agent.*`, `log.file.*` and
//!   `log.offset` neither (the JSON parser refuses to overwrite them too).
//! * `@timestamp` is replaced by the time the line carries when it has one, always written
//!   as RFC 3339 UTC with microseconds, so the event stays valid.
//! * `host.hostname` is set to the host named in the line (syslog, auditd `node=`), while
//!   `host.name` stays the agent's host: a forwarded line keeps both.
//! * `message` becomes the free-text part of the line (the syslog `MSG`, the PostgreSQL
//!   message, …); the whole line is still in `event.original`.
//!
//! Formats, one module each: [`syslog`] (RFC 3164, RFC 5424, rsyslog's RFC 3339 file
//! format), [`auth`] (`linux-auth`: sshd, PAM, sudo, su, shadow-utils, systemd-logind on
//! top of syslog), [`web`] (`web-access`, `web-error`: nginx and Apache), [`auditd`]
//! (one record per line, and [`AuditdAssembler`] to join the records of one event),
//! [`postgresql`] (stderr prefix `%m [%p] %q%u@%d ` and `jsonlog`), [`dns`] (dnsmasq and
//! BIND query logs), [`json`] (one JSON object per line) and `auto`, which tries them in
//! a fixed order. The `event.action` names each parser emits are stable (rules match on
//! them); the tables are in each module's docs and in `docs/parsers.md`.

pub mod auditd;
pub mod auth;
pub mod dns;
pub mod json;
pub mod postgresql;
pub mod syslog;
mod time;
pub mod web;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Offset, Utc};
use serde_json::Value;
use yagura_shared::{Event, FlatEvent};

pub use auditd::{AuditdAssembler, AuditdGroup};

/// Which parser a source uses (`parser = "..."` in the agent configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ParserKind {
    /// No parsing: the event stays as the tailer made it (not tagged `unparsed`).
    #[default]
    Raw,
    Syslog,
    LinuxAuth,
    WebAccess,
    WebError,
    Auditd,
    Postgresql,
    Dns,
    Json,
    Auto,
}

impl ParserKind {
    /// Every kind, in the order of their configuration names.
    pub const ALL: [ParserKind; 10] = [
        ParserKind::Raw,
        ParserKind::Syslog,
        ParserKind::LinuxAuth,
        ParserKind::WebAccess,
        ParserKind::WebError,
        ParserKind::Auditd,
        ParserKind::Postgresql,
        ParserKind::Dns,
        ParserKind::Json,
        ParserKind::Auto,
    ];

    /// The configuration name (`"linux-auth"`, …).
    pub fn name(self) -> &'static str {
        match self {
            ParserKind::Raw => "raw",
            ParserKind::Syslog => "syslog",
            ParserKind::LinuxAuth => "linux-auth",
            ParserKind::WebAccess => "web-access",
            ParserKind::WebError => "web-error",
            ParserKind::Auditd => "auditd",
            ParserKind::Postgresql => "postgresql",
            ParserKind::Dns => "dns",
            ParserKind::Json => "json",
            ParserKind::Auto => "auto",
        }
    }
}

impl fmt::Display for ParserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parser name that is not one of [`ParserKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown parser `{0}` (expected one of: raw, syslog, linux-auth, web-access, web-error, auditd, postgresql, dns, json, auto)"
)]
pub struct UnknownParser(pub String);

impl FromStr for ParserKind {
    type Err = UnknownParser;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ParserKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownParser(s.to_string()))
    }
}

/// What a parser needs to know besides the line.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// "Now" for RFC 3164 and other year-less timestamps: the year is the latest one that
    /// puts the line no more than a day after this instant (so a December line read in
    /// January is last year's, and a January 1st line from a sender whose clock is a bit
    /// ahead, read on December 31st, is next year's).
    pub reference_time: DateTime<Utc>,
    /// The zone of timestamps that carry none (RFC 3164, Apache error log, BIND, nginx
    /// error log, PostgreSQL zone abbreviations other than UTC/GMT).
    pub timezone: FixedOffset,
    /// Options of the `json` parser.
    pub json: JsonOptions,
}

impl Default for ParseContext {
    fn default() -> Self {
        ParseContext {
            reference_time: Utc::now(),
            timezone: Utc.fix(),
            json: JsonOptions::default(),
        }
    }
}

impl ParseContext {
    /// A context with a fixed reference time (tests, replays of old files).
    pub fn at(reference_time: DateTime<Utc>) -> Self {
        ParseContext {
            reference_time,
            ..ParseContext::default()
        }
    }
}

/// Options of the `json` parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Field holding the event time (dotted path). `None`: the first of `@timestamp`,
    /// `timestamp`, `time`, `ts` that is present.
    pub timestamp_field: Option<String>,
    /// Field holding the message (dotted path). `None`: `message`, then `msg`.
    pub message_field: Option<String>,
}

/// Fills the fields `line` carries into `event`. See the module docs for the guarantees:
/// never panics; a line the parser cannot read gets the tag `unparsed` and is otherwise
/// left as it was.
///
/// The agent itself builds events as [`FlatEvent`]s and calls [`parse_flat`]; this form
/// (used by `yagura-agent parse` and tests) runs the same parser through a conversion.
pub fn parse_into(kind: ParserKind, line: &str, ctx: &ParseContext, event: &mut Event) {
    if kind == ParserKind::Raw {
        return;
    }
    let mut flat = FlatEvent::from_event(event);
    parse_flat(kind, line, ctx, &mut flat);
    *event = flat.to_event();
}

/// [`parse_into`] on the agent's [`FlatEvent`]: the per-line hot path.
pub fn parse_flat(kind: ParserKind, line: &str, ctx: &ParseContext, event: &mut FlatEvent) {
    if kind == ParserKind::Raw {
        return;
    }
    let mut out = Fields {
        event: std::mem::take(event),
    };
    let parsed = match kind {
        ParserKind::Raw => true,
        ParserKind::Syslog => syslog::parse_line(line, ctx, &mut out),
        ParserKind::LinuxAuth => auth::parse_line(line, ctx, &mut out),
        ParserKind::WebAccess => web::parse_access_line(line, &mut out),
        ParserKind::WebError => web::parse_error_line(line, ctx, &mut out),
        ParserKind::Auditd => auditd::parse_line(line, &mut out),
        ParserKind::Postgresql => postgresql::parse_line(line, ctx, &mut out),
        ParserKind::Dns => dns::parse_line(line, ctx, &mut out),
        ParserKind::Json => json::parse_line(line, &ctx.json, &mut out),
        ParserKind::Auto => parse_auto(line, ctx, &mut out),
    };
    *event = out.event;
    if !parsed {
        event.add_tag("unparsed");
    }
}

/// `auto`: picks the parser from the line's shape, falling back to plain syslog; a line
/// none of them reads is `unparsed`.
fn parse_auto(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let first = line.as_bytes().first().copied().unwrap_or(b' ');
    if first == b'{' {
        return json::parse_line(line, &ctx.json, out) || postgresql::parse_line(line, ctx, out);
    }
    if line.starts_with("type=") || line.starts_with("node=") {
        return auditd::parse_line(line, out);
    }
    if first == b'[' {
        return web::parse_error_line(line, ctx, out);
    }
    if first.is_ascii_digit() {
        // 2026/11/24 nginx error, 2026-11-24 PostgreSQL or RFC 3339 syslog,
        // 24-Nov-2026 BIND, 192.0.2.1 - - [...] access log.
        let b = line.as_bytes();
        if b.len() > 10 && b[4] == b'/' {
            return web::parse_error_line(line, ctx, out);
        }
        if b.len() > 19 && b[4] == b'-' && b[10] == b' ' {
            return postgresql::parse_line(line, ctx, out);
        }
        if b.len() > 11 && b[2] == b'-' && b[6] == b'-' {
            return dns::parse_line(line, ctx, out);
        }
        if b.len() > 10 && b[4] == b'-' && b[10] == b'T' {
            return parse_auto_syslog(line, ctx, out);
        }
        return web::parse_access_line(line, out) || parse_auto_syslog(line, ctx, out);
    }
    if web::parse_access_line(line, out) {
        return true;
    }
    parse_auto_syslog(line, ctx, out)
}

/// A syslog line: its message is read as auth or DNS when the program is one of theirs.
fn parse_auto_syslog(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let Some(record) = syslog::parse(line, ctx) else {
        return false;
    };
    syslog::write(&record, out);
    let app = record.app_name.unwrap_or("");
    if auth::is_auth_program(app) {
        auth::write_message(app, record.message, out);
    } else if dns::is_dns_program(app) {
        dns::write_syslog_message(record.message, ctx, out);
    }
    true
}

/// The event being filled, with the setters parsers share. Parsers only write: fields are
/// written once the line has been read successfully (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub(crate) event: FlatEvent,
}

impl Fields {
    /// A field's value, objects included (tests).
    #[cfg(test)]
    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        self.event.clone().to_event().get(path).cloned()
    }

    /// Any JSON value under a run-time path.
    pub(crate) fn set(&mut self, path: &str, value: Value) {
        self.event.set_value(path, value);
    }

    pub(crate) fn str(&mut self, path: &'static str, value: &str) {
        self.event.set_str(path, value);
    }

    pub(crate) fn opt_str(&mut self, path: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(path, v);
        }
    }

    pub(crate) fn num(&mut self, path: &'static str, value: i64) {
        self.event.set_i64(path, value);
    }

    pub(crate) fn strs(&mut self, path: &'static str, values: &[&str]) {
        self.event.set_strs(path, values);
    }

    pub(crate) fn timestamp(&mut self, t: DateTime<Utc>) {
        self.event.set_timestamp("@timestamp", t);
    }

    /// `event.category`, `event.type` (ECS arrays) and `event.action`.
    pub(crate) fn classify(&mut self, action: &str, category: &str, kind: &str) {
        self.str("event.action", action);
        self.strs("event.category", &[category]);
        self.strs("event.type", &[kind]);
    }

    pub(crate) fn outcome(&mut self, outcome: Outcome) {
        self.str("event.outcome", outcome.as_str());
    }

    /// `source.address`, plus `source.ip` when it is an IP address, or `source.domain`.
    pub(crate) fn source_address(&mut self, address: &str) {
        self.endpoint(Side::Source, address);
    }

    pub(crate) fn endpoint(&mut self, side: Side, address: &str) {
        if address.is_empty() || address == "?" || address == "-" {
            return;
        }
        let (address_path, ip_path, domain_path) = match side {
            Side::Source => ("source.address", "source.ip", "source.domain"),
            Side::Destination => (
                "destination.address",
                "destination.ip",
                "destination.domain",
            ),
        };
        self.str(address_path, address);
        if address.parse::<std::net::IpAddr>().is_ok() {
            self.str(ip_path, address);
        } else {
            self.str(domain_path, address);
        }
    }

    pub(crate) fn port(&mut self, path: &'static str, port: &str) {
        if let Ok(p) = port.parse::<u16>() {
            self.num(path, i64::from(p));
        }
    }
}

/// Which end of a connection an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// `event.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ParserKind::ALL {
            assert_eq!(kind.to_string().parse::<ParserKind>(), Ok(kind));
        }
        assert_eq!(
            "nope".parse::<ParserKind>(),
            Err(UnknownParser("nope".into()))
        );
    }

    #[test]
    fn unparsed_line_keeps_message_and_original() {
        let mut event = Event::new(Utc::now());
        event.set_str("message", "???");
        event.set_str("event.original", "???");
        let before = event.clone();
        parse_into(
            ParserKind::Syslog,
            "???",
            &ParseContext::default(),
            &mut event,
        );
        assert_eq!(event.get("tags"), Some(&serde_json::json!(["unparsed"])));
        assert_eq!(event.message(), Some("???"));
        assert_eq!(event.original(), Some("???"));
        assert_eq!(event.id(), before.id());
        event.validate().expect("still valid");
    }

    #[test]
    fn raw_changes_nothing() {
        let mut event = Event::new(Utc::now());
        let before = event.clone();
        parse_into(ParserKind::Raw, "x", &ParseContext::default(), &mut event);
        assert_eq!(event, before);
    }
}
