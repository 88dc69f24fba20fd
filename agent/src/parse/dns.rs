//! `dns`: DNS query logs of dnsmasq (`log-queries`, through syslog or its own log file)
//! and BIND (`querylog`, in its own file or through syslog).
//!
//! * dnsmasq: `Nov 24 10:00:00 dnsmasq[612]: query[A] example.com from 192.168.1.10`,
//!   with or without the `log-queries=extra` prefix (`1234 192.168.1.10/53211 `).
//! * BIND: `24-Nov-2026 10:00:00.123 queries: info: client @0x7f… 192.168.1.10#53211
//!   (example.com): query: example.com IN A +E(0)K (192.168.1.1)`, the category and
//!   severity words optional; through syslog as `named[…]: client …`.
//!
//! | message | `event.action` | `dns.type` | fields |
//! | --- | --- | --- | --- |
//! | dnsmasq `query[TYPE] NAME from IP` | `dns_query` | query | `dns.question.{name,type}`, `source.ip` |
//! | dnsmasq `forwarded NAME to IP` | `dns_forward` | query | `dns.question.name`, `destination.ip` |
//! | dnsmasq `reply\|cached\|config\|/etc/hosts NAME is DATA` | `dns_answer` | answer | `dns.question.name`, `dns.answers[{data,type}]`, `dns.resolved_ip`, `dns.response_code` (`NXDOMAIN`, `NOERROR`, …) |
//! | BIND `client … IP#PORT (NAME): query: NAME CLASS TYPE FLAGS (SERVER)` | `dns_query` | query | `dns.question.{name,class,type}`, `source.ip/port`, `destination.ip` |
//!
//! Category `network`, type `protocol`. BIND file times carry no zone:
//! `ParseContext::timezone` applies. A syslog line of another program is still parsed
//! as syslog (no `event.action`).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::syslog;
use super::time::{digits, fraction_micros, hms, local_to_utc, month_from_abbr, naive};
use super::{Fields, ParseContext, Side};

pub(crate) fn is_dns_program(app: &str) -> bool {
    matches!(app, "dnsmasq" | "named")
}

pub(crate) fn parse_line(line: &str, ctx: &ParseContext, out: &mut Fields) -> bool {
    let b = line.as_bytes();
    if b.len() > 11 && b[2] == b'-' && b[6] == b'-' {
        let Some((timestamp, rest)) = bind_time(line, ctx) else {
            return false;
        };
        let Some(query) = bind_query(rest) else {
            return false;
        };
        out.timestamp(timestamp);
        write_bind(&query, out);
        return true;
    }
    let Some(record) = syslog::parse(line, ctx) else {
        return false;
    };
    syslog::write(&record, out);
    write_syslog_message(record.message, ctx, out);
    true
}

/// A DNS message carried by syslog (dnsmasq or BIND).
pub(crate) fn write_syslog_message(message: &str, _ctx: &ParseContext, out: &mut Fields) {
    if let Some(q) = bind_query(message) {
        write_bind(&q, out);
    } else if let Some(m) = dnsmasq(message) {
        write_dnsmasq(&m, out);
    }
}

/// `24-Nov-2026 10:00:00.123 ` and the rest.
fn bind_time<'a>(line: &'a str, ctx: &ParseContext) -> Option<(DateTime<Utc>, &'a str)> {
    let b = line.as_bytes();
    if b.len() < 21 || b[11] != b' ' {
        return None;
    }
    let day = digits(b, 2)?;
    let month = month_from_abbr(&b[3..])?;
    let year = digits(&b[7..], 4)? as i32;
    let time = hms(&b[12..])?;
    let (micros, used) = fraction_micros(&b[20..]);
    let t = local_to_utc(naive(year, month, day, time, micros)?, ctx.timezone)?;
    let rest = line.get(20 + used..)?.strip_prefix(' ')?;
    Some((t, rest))
}

/// A BIND query-log message.
#[derive(Debug, Clone, PartialEq)]
pub struct BindQuery<'a> {
    pub client_ip: &'a str,
    pub client_port: &'a str,
    pub name: &'a str,
    pub class: &'a str,
    pub qtype: &'a str,
    pub flags: &'a str,
    pub server: Option<&'a str>,
}

fn bind_query(message: &str) -> Option<BindQuery<'_>> {
    let (_, rest) = message.split_once("client ")?;
    let rest = match rest.strip_prefix('@') {
        Some(r) => r.split_once(' ')?.1,
        None => rest,
    };
    let (client, rest) = rest.split_once('#')?;
    let port_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let client_port = &rest[..port_end];
    let (_, query) = rest.split_once("query: ")?;
    let mut words = query.split(' ');
    let name = words.next()?;
    let class = words.next()?;
    let qtype = words.next()?;
    let flags = words.next().unwrap_or("");
    let server = words
        .next()
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.strip_suffix(')'));
    Some(BindQuery {
        client_ip: client,
        client_port,
        name,
        class,
        qtype,
        flags,
        server,
    })
}

fn write_bind(q: &BindQuery<'_>, out: &mut Fields) {
    out.classify("dns_query", "network", "protocol");
    out.str("dns.type", "query");
    out.str("dns.question.name", q.name);
    out.str("dns.question.class", q.class);
    out.str("dns.question.type", q.qtype);
    if !q.flags.is_empty() {
        out.str("bind.query.flags", q.flags);
    }
    out.source_address(q.client_ip);
    out.port("source.port", q.client_port);
    if let Some(s) = q.server {
        out.endpoint(Side::Destination, s);
    }
}

/// A dnsmasq query-log message.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsmasqMessage<'a> {
    Query {
        qtype: &'a str,
        name: &'a str,
        client: &'a str,
    },
    Forwarded {
        name: &'a str,
        server: &'a str,
    },
    Answer {
        source: &'a str,
        name: &'a str,
        data: &'a str,
    },
}

fn dnsmasq(message: &str) -> Option<DnsmasqMessage<'_>> {
    // log-queries=extra: "1234 192.168.1.10/53211 query[A] …".
    let mut msg = message;
    if msg.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && let Some((serial, rest)) = msg.split_once(' ')
        && serial.bytes().all(|c| c.is_ascii_digit())
        && let Some((_client, rest)) = rest.split_once(' ')
    {
        msg = rest;
    }
    if let Some(rest) = msg.strip_prefix("query[") {
        let (qtype, rest) = rest.split_once("] ")?;
        let (name, client) = rest.split_once(" from ")?;
        return Some(DnsmasqMessage::Query {
            qtype,
            name,
            client,
        });
    }
    if let Some(rest) = msg.strip_prefix("forwarded ") {
        let (name, server) = rest.split_once(" to ")?;
        return Some(DnsmasqMessage::Forwarded { name, server });
    }
    let (source, rest) = msg.split_once(' ')?;
    if matches!(source, "reply" | "cached" | "config" | "/etc/hosts") || source.starts_with('/') {
        let (name, data) = rest.split_once(" is ")?;
        return Some(DnsmasqMessage::Answer { source, name, data });
    }
    None
}

fn write_dnsmasq(m: &DnsmasqMessage<'_>, out: &mut Fields) {
    match m {
        DnsmasqMessage::Query {
            qtype,
            name,
            client,
        } => {
            out.classify("dns_query", "network", "protocol");
            out.str("dns.type", "query");
            out.str("dns.question.name", name);
            out.str("dns.question.type", qtype);
            out.source_address(client);
        }
        DnsmasqMessage::Forwarded { name, server } => {
            out.classify("dns_forward", "network", "protocol");
            out.str("dns.type", "query");
            out.str("dns.question.name", name);
            out.endpoint(Side::Destination, server);
        }
        DnsmasqMessage::Answer { source, name, data } => {
            out.classify("dns_answer", "network", "protocol");
            out.str("dns.type", "answer");
            out.str("dns.question.name", name);
            out.str("dnsmasq.answer_source", source);
            let code = match *data {
                "NXDOMAIN" | "NXDOMAIN-IPv4" | "NXDOMAIN-IPv6" => "NXDOMAIN",
                "SERVFAIL" => "SERVFAIL",
                "REFUSED" => "REFUSED",
                _ => "NOERROR",
            };
            out.str("dns.response_code", code);
            if code != "NOERROR" || data.starts_with("NODATA") {
                return;
            }
            let mut answer = Map::new();
            if *data == "<CNAME>" {
                answer.insert("type".into(), Value::String("CNAME".into()));
            } else {
                if let Ok(ip) = data.parse::<std::net::IpAddr>() {
                    let t = if ip.is_ipv4() { "A" } else { "AAAA" };
                    answer.insert("type".into(), Value::String(t.into()));
                    out.strs("dns.resolved_ip", &[data]);
                }
                answer.insert("data".into(), Value::String((*data).to_string()));
            }
            answer.insert("name".into(), Value::String((*name).to_string()));
            out.set("dns.answers", Value::Array(vec![Value::Object(answer)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_query_forms() {
        let q = bind_query(
            "queries: info: client @0x7f1c2c0a6b68 192.168.1.10#53211 (example.com): query: example.com IN A +E(0)K (192.168.1.1)",
        )
        .expect("ok");
        assert_eq!(
            (q.client_ip, q.client_port, q.name, q.qtype, q.server),
            (
                "192.168.1.10",
                "53211",
                "example.com",
                "A",
                Some("192.168.1.1")
            )
        );
        let q = bind_query("client 10.0.0.1#1 (a.b): view internal: query: a.b IN MX + (10.0.0.2)")
            .expect("ok");
        assert_eq!((q.name, q.qtype), ("a.b", "MX"));
    }

    #[test]
    fn dnsmasq_forms() {
        assert_eq!(
            dnsmasq("query[AAAA] example.com from 192.168.1.10"),
            Some(DnsmasqMessage::Query {
                qtype: "AAAA",
                name: "example.com",
                client: "192.168.1.10"
            })
        );
        assert_eq!(
            dnsmasq("17 192.168.1.10/53211 reply example.com is 93.184.216.34"),
            Some(DnsmasqMessage::Answer {
                source: "reply",
                name: "example.com",
                data: "93.184.216.34"
            })
        );
        assert_eq!(dnsmasq("started, version 2.89 cachesize 150"), None);
    }
}
