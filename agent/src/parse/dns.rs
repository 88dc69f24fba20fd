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
//!
//! Every event with a `dns.question.name` of two labels or more also gets the parts of
//! the name ([`NameParts`]) that rules need and Sigma cannot compute:
//!
//! * `dns.question.top_level_domain` (the last label), `dns.question.registered_domain`
//!   (the last two) and `dns.question.subdomain` (the labels before those) — by a
//!   *last-two-labels heuristic*, not the public suffix list (which would be a dependency
//!   and a data file to keep current): for `www.example.co.uk` it says `co.uk` is the
//!   registered domain. Good enough to group and search by; rules that need the real
//!   registrant match on `dns.question.name` itself.
//! * `yagura.dns.entropy`: the Shannon entropy, in bits per character, of the name's
//!   longest label other than the last (`yagura.dns.entropy_label`), letters compared
//!   case-insensitively. Random labels — domain generation algorithms, encoded tunnel
//!   data — score high; words and hostnames score low. The registrable label is included
//!   on purpose: a DGA's randomness *is* the registrable label (`qx7kz…wq.com`), so
//!   skipping the last two labels would miss exactly what T1568.002 names; the TLD is
//!   never random and is left out. Entropy grows with length (a label of n distinct
//!   characters scores log2 n), so rules pair a threshold with a minimum label length
//!   (detections/linux/dns/high_entropy_name.yml).

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
    write_question_name(q.name, out);
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

/// `dns.question.name` and what is derived from it (see the module documentation).
fn write_question_name(name: &str, out: &mut Fields) {
    out.str("dns.question.name", name);
    let Some(parts) = NameParts::of(name) else {
        return;
    };
    out.str("dns.question.top_level_domain", parts.top_level_domain);
    out.str("dns.question.registered_domain", parts.registered_domain);
    out.opt_str("dns.question.subdomain", parts.subdomain);
    // Three decimals: enough for any threshold, and stable text in the JSON.
    let bits = (shannon_entropy(parts.entropy_label) * 1000.0).round() / 1000.0;
    out.set("yagura.dns.entropy", Value::from(bits));
    out.str("yagura.dns.entropy_label", parts.entropy_label);
}

/// The parts of a queried name, by the last-two-labels heuristic (module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameParts<'a> {
    /// The last label (`com`).
    pub top_level_domain: &'a str,
    /// The last two labels (`example.com`).
    pub registered_domain: &'a str,
    /// The labels before the last two (`www`, `a.b`), if any.
    pub subdomain: Option<&'a str>,
    /// The longest label other than the last (the first of equals), whose entropy rules
    /// look at.
    pub entropy_label: &'a str,
}

impl<'a> NameParts<'a> {
    /// The parts of `name` (one trailing dot, the DNS root, is ignored); `None` for what
    /// is not a name of two labels or more: a single label, an empty label (`a..b`),
    /// blanks or control characters (a log line that was not a name), an IP address.
    pub fn of(name: &'a str) -> Option<Self> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty()
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
            || name.parse::<std::net::IpAddr>().is_ok()
            || name.split('.').any(str::is_empty)
        {
            return None;
        }
        let last_dot = name.rfind('.')?;
        let top_level_domain = &name[last_dot + 1..];
        let before = &name[..last_dot];
        let (subdomain, registered_domain) = match before.rfind('.') {
            Some(dot) => (Some(&name[..dot]), &name[dot + 1..]),
            None => (None, name),
        };
        let entropy_label = before.split('.').fold("", |longest, label| {
            if label.chars().count() > longest.chars().count() {
                label
            } else {
                longest
            }
        });
        Some(NameParts {
            top_level_domain,
            registered_domain,
            subdomain,
            entropy_label,
        })
    }
}

/// Shannon entropy of `text` in bits per character, ASCII letters compared without
/// case (resolvers may randomise case, `dns-0x20`, which must not look like randomness);
/// 0 for an empty text.
pub fn shannon_entropy(text: &str) -> f64 {
    let mut ascii = [0u32; 128];
    let mut other: Vec<char> = Vec::new();
    let mut total = 0u32;
    for c in text.chars() {
        total = total.saturating_add(1);
        match u8::try_from(c) {
            Ok(b) if b.is_ascii() => {
                let slot = &mut ascii[usize::from(b.to_ascii_lowercase())];
                *slot = slot.saturating_add(1);
            }
            _ => other.push(c),
        }
    }
    if total == 0 {
        return 0.0;
    }
    other.sort_unstable();
    let total = f64::from(total);
    let term = |n: u32| {
        let p = f64::from(n) / total;
        -p * p.log2()
    };
    let bits: f64 = ascii
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| term(n))
        .sum::<f64>()
        + other
            .chunk_by(|a, b| a == b)
            .map(|run| term(u32::try_from(run.len()).unwrap_or(u32::MAX)))
            .sum::<f64>();
    // A single repeated character sums to -0.0, which JSON would write as `-0.0`.
    if bits > 0.0 { bits } else { 0.0 }
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
            write_question_name(name, out);
            out.str("dns.question.type", qtype);
            out.source_address(client);
        }
        DnsmasqMessage::Forwarded { name, server } => {
            out.classify("dns_forward", "network", "protocol");
            out.str("dns.type", "query");
            write_question_name(name, out);
            out.endpoint(Side::Destination, server);
        }
        DnsmasqMessage::Answer { source, name, data } => {
            out.classify("dns_answer", "network", "protocol");
            out.str("dns.type", "answer");
            write_question_name(name, out);
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

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn entropy_is_bits_per_character() {
        assert!(close(shannon_entropy(""), 0.0));
        assert!(close(shannon_entropy("aaaa"), 0.0));
        assert!(shannon_entropy("x").is_sign_positive(), "0, not -0");
        assert!(close(shannon_entropy("ab"), 1.0));
        assert!(close(shannon_entropy("abcd"), 2.0));
        // Sixteen distinct characters: log2 16.
        assert!(close(shannon_entropy("0123456789abcdef"), 4.0));
        // 0.5·1 + 2·0.25·2 for a, b, c at 1/2, 1/4, 1/4.
        assert!(close(shannon_entropy("aabc"), 1.5));
        // Case does not count (dns-0x20 randomises it), other characters do.
        assert!(close(shannon_entropy("AbAB"), shannon_entropy("abab")));
        assert!(close(shannon_entropy("ééàà"), 1.0));
        // A word against a random label of the same length.
        assert!(shannon_entropy("documentation") < 3.3);
        assert!(shannon_entropy("x7kq2vzp9wmd4hjt8ryb") > 4.0);
    }

    #[test]
    fn names_split_by_the_last_two_labels() {
        let parts = NameParts::of("a.b.www.example.com.").expect("name");
        assert_eq!(
            parts,
            NameParts {
                top_level_domain: "com",
                registered_domain: "example.com",
                subdomain: Some("a.b.www"),
                entropy_label: "example",
            }
        );
        let parts = NameParts::of("x7kq2vzp9wmd4hjt.net").expect("name");
        assert_eq!(parts.subdomain, None);
        assert_eq!(
            parts.entropy_label, "x7kq2vzp9wmd4hjt",
            "the registrable label counts: a DGA's randomness is there"
        );
        // The heuristic, documented: two-label public suffixes are taken as domains.
        assert_eq!(
            NameParts::of("www.example.co.uk").map(|p| p.registered_domain),
            Some("co.uk")
        );
        for not_a_name in ["", ".", "localhost", "a..b", "a b.c", "192.0.2.1", "::1"] {
            assert_eq!(NameParts::of(not_a_name), None, "{not_a_name:?}");
        }
    }

    fn parsed(line: &str) -> Fields {
        let mut out = Fields::default();
        assert!(
            parse_line(line, &ParseContext::default(), &mut out),
            "{line}"
        );
        out
    }

    #[test]
    fn queries_carry_the_name_parts_and_entropy() {
        let out = parsed(
            "Nov 24 10:00:00 gw dnsmasq[612]: query[A] q8x3vd0k2mz7rw5ty1nb.cdn.example.com from 192.168.1.10",
        );
        assert_eq!(
            out.get("dns.question.registered_domain"),
            Some(Value::from("example.com"))
        );
        assert_eq!(
            out.get("dns.question.subdomain"),
            Some(Value::from("q8x3vd0k2mz7rw5ty1nb.cdn"))
        );
        assert_eq!(
            out.get("dns.question.top_level_domain"),
            Some(Value::from("com"))
        );
        assert_eq!(
            out.get("yagura.dns.entropy_label"),
            Some(Value::from("q8x3vd0k2mz7rw5ty1nb"))
        );
        // Twenty characters, all distinct: log2 20, to three decimals.
        assert_eq!(out.get("yagura.dns.entropy"), Some(Value::from(4.322)));

        let out = parsed(
            "24-Nov-2026 10:00:08.000 client 192.168.1.12#40000 (mail.example.com): query: mail.example.com IN MX + (192.168.1.1)",
        );
        assert_eq!(
            out.get("yagura.dns.entropy_label"),
            Some(Value::from("example"))
        );
        let out = parsed("Nov 24 10:00:04 gw dnsmasq[612]: /etc/hosts router is 192.168.1.1");
        assert_eq!(out.get("dns.question.name"), Some(Value::from("router")));
        assert_eq!(out.get("dns.question.registered_domain"), None);
        assert_eq!(out.get("yagura.dns.entropy"), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Names made of DNS-ish pieces, so the splitting paths are exercised, not only
        /// the early refusals of arbitrary text.
        fn dnsish() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just(".".to_string()),
                    "[a-z0-9-]{0,70}",
                    "\\\\[0-9]{3}",
                    any::<char>().prop_map(String::from),
                ],
                0..12,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            #[test]
            fn arbitrary_lines_never_panic(line in any::<String>()) {
                let mut out = Fields::default();
                let _ = parse_line(&line, &ParseContext::default(), &mut out);
                let mut out = Fields::default();
                write_syslog_message(&line, &ParseContext::default(), &mut out);
            }

            #[test]
            fn arbitrary_names_never_panic_and_entropy_is_bounded(name in dnsish()) {
                let line = format!("Nov 24 10:00:00 gw dnsmasq[1]: query[A] {name} from 10.0.0.1");
                let mut out = Fields::default();
                let _ = parse_line(&line, &ParseContext::default(), &mut out);
                if let Some(parts) = NameParts::of(&name) {
                    prop_assert!(name.contains(parts.registered_domain));
                    prop_assert!(parts.registered_domain.ends_with(parts.top_level_domain));
                    let label = parts.entropy_label;
                    prop_assert!(!label.is_empty() && !label.contains('.'));
                    let bits = shannon_entropy(label);
                    let length = label.chars().count() as f64;
                    prop_assert!(bits >= 0.0 && bits <= length.log2() + 1e-9, "{label}: {bits}");
                }
            }
        }
    }
}
