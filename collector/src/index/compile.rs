//! Compiles a parsed query ([`crate::search::query`]) into a tantivy query over this
//! index's schema. The field decides what a value means: on an IP field `10.0.0.0/8` is a
//! CIDR block, on a number field `>=500` a numeric range, on `@timestamp` a time range,
//! on a keyword field `*mimikatz*` a wildcard over whole values, on a full-text field a
//! wildcard over words. What a field cannot do is a [`CompileError`] at the clause's
//! column, never a silent "no hits".

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use tantivy::Index;
use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, Occur, PhraseQuery, Query, RangeQuery,
    RegexQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TokenStream as _;

use super::{
    EXACT_ONLY_KEYWORDS, IP_FIELDS, JSON_ROOTS, KEYWORD_FIELDS, NUMBER_FIELDS, TEXT_FIELDS,
    TIMESTAMP,
};
use crate::search::query::{Clause, Glob, Node, Value};
use crate::search::time::parse_time;

/// A query that parsed but cannot run against these fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct CompileError {
    /// 1-based character column of the clause.
    pub column: usize,
    pub message: String,
}

/// What kind of field a name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Timestamp,
    Keyword,
    Text,
    Ip,
    Number,
    /// A field inside one of the JSON roots: `root` and the dotted path below it.
    Nested {
        root: &'static str,
        path: String,
    },
}

fn kind_of(name: &str) -> Option<Kind> {
    if name == TIMESTAMP {
        return Some(Kind::Timestamp);
    }
    if KEYWORD_FIELDS.contains(&name) {
        return Some(Kind::Keyword);
    }
    if TEXT_FIELDS.contains(&name) {
        return Some(Kind::Text);
    }
    if IP_FIELDS.contains(&name) {
        return Some(Kind::Ip);
    }
    if NUMBER_FIELDS.contains(&name) {
        return Some(Kind::Number);
    }
    let (root, path) = name.split_once('.')?;
    let root = JSON_ROOTS.iter().find(|r| **r == root)?;
    (!path.is_empty()).then(|| Kind::Nested {
        root,
        path: path.to_string(),
    })
}

/// Compiles `node`; relative times (`now-15m`) are taken against `now`.
pub fn compile(
    index: &Index,
    node: &Node,
    now: DateTime<Utc>,
) -> Result<Box<dyn Query>, CompileError> {
    Compiler { index, now }.node(node)
}

struct Compiler<'a> {
    index: &'a Index,
    now: DateTime<Utc>,
}

impl Compiler<'_> {
    fn node(&self, node: &Node) -> Result<Box<dyn Query>, CompileError> {
        match node {
            Node::All => Ok(Box::new(AllQuery)),
            Node::Clause(clause) => self.clause(clause),
            Node::Not(inner) => Ok(Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.node(inner)?),
            ]))),
            Node::And(items) => {
                let mut clauses = Vec::with_capacity(items.len() + 1);
                for item in items {
                    clauses.push(match item {
                        Node::Not(inner) => (Occur::MustNot, self.node(inner)?),
                        other => (Occur::Must, self.node(other)?),
                    });
                }
                // Only exclusions: they exclude from everything.
                if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Box::new(BooleanQuery::new(clauses)))
            }
            Node::Or(items) => {
                let clauses = items
                    .iter()
                    .map(|item| Ok((Occur::Should, self.node(item)?)))
                    .collect::<Result<Vec<_>, CompileError>>()?;
                Ok(Box::new(BooleanQuery::new(clauses)))
            }
        }
    }

    fn field(&self, name: &str, column: usize) -> Result<Field, CompileError> {
        self.index
            .schema()
            .get_field(name)
            .map_err(|_| error(column, format!("field `{name}` is not in the index schema")))
    }

    fn clause(&self, clause: &Clause) -> Result<Box<dyn Query>, CompileError> {
        let column = clause.column;
        let Some(name) = clause.field.as_deref() else {
            let fields = TEXT_FIELDS
                .iter()
                .map(|n| self.field(n, column))
                .collect::<Result<Vec<_>, _>>()?;
            return self.text(&fields, &clause.value, column);
        };
        let kind = kind_of(name).ok_or_else(|| {
            error(
                column,
                format!(
                    "unknown field `{name}`: a typed field ({}) or an ECS field under one of {}",
                    typed_fields().join(", "),
                    JSON_ROOTS.join(", ")
                ),
            )
        })?;
        match kind {
            Kind::Timestamp => self.timestamp(self.field(name, column)?, &clause.value, column),
            Kind::Keyword => self.keyword(name, self.field(name, column)?, &clause.value, column),
            Kind::Text => self.text(&[self.field(name, column)?], &clause.value, column),
            Kind::Ip => self.ip(name, self.field(name, column)?, &clause.value, column),
            Kind::Number => self.number(name, self.field(name, column)?, &clause.value, column),
            Kind::Nested { root, path } => self.nested(
                name,
                self.field(root, column)?,
                &path,
                &clause.value,
                column,
            ),
        }
    }

    fn keyword(
        &self,
        name: &str,
        field: Field,
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        if EXACT_ONLY_KEYWORDS.contains(&name)
            && matches!(value, Value::Wildcard(_) | Value::Regex(_))
        {
            return Err(error(
                column,
                format!("`{name}` takes exact values only (no wildcards or regular expressions)"),
            ));
        }
        Ok(match value {
            Value::Word(s) | Value::Phrase(s) => term_query(Term::from_field_text(field, s)),
            Value::Wildcard(globs) => regex_query(&glob_regex(globs, false), field, column)?,
            Value::Regex(pattern) => regex_query(pattern, field, column)?,
            Value::Range { lower, upper } => Box::new(RangeQuery::new(
                map_bound(lower, |s| Ok(Term::from_field_text(field, s)))?,
                map_bound(upper, |s| Ok(Term::from_field_text(field, s)))?,
            )),
            Value::Exists => Box::new(ExistsQuery::new(name.to_string(), false)),
        })
    }

    /// Full text: values are split into words as the field was at indexing (lower case).
    fn text(
        &self,
        fields: &[Field],
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for field in fields {
            let query: Box<dyn Query> = match value {
                Value::Word(s) | Value::Phrase(s) => {
                    let terms = self.words(*field, s, column)?;
                    match terms.len() {
                        0 => Box::new(EmptyQuery),
                        1 => term_query(
                            terms
                                .into_iter()
                                .next()
                                .unwrap_or_else(|| Term::from_field_text(*field, "")),
                        ),
                        _ => Box::new(PhraseQuery::new(terms)),
                    }
                }
                Value::Wildcard(globs) => regex_query(&glob_regex(globs, true), *field, column)?,
                Value::Regex(pattern) => regex_query(pattern, *field, column)?,
                Value::Range { .. } | Value::Exists => {
                    return Err(error(
                        column,
                        "ranges and `:*` apply to typed fields, not to full text".into(),
                    ));
                }
            };
            alternatives.push((Occur::Should, query));
        }
        Ok(if alternatives.len() == 1 {
            alternatives
                .pop()
                .map(|(_, q)| q)
                .unwrap_or(Box::new(EmptyQuery))
        } else {
            Box::new(BooleanQuery::new(alternatives))
        })
    }

    fn words(&self, field: Field, text: &str, column: usize) -> Result<Vec<Term>, CompileError> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(field)
            .map_err(|e| error(column, format!("no tokenizer: {e}")))?;
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(field, &stream.token().text));
        }
        Ok(terms)
    }

    fn ip(
        &self,
        name: &str,
        field: Field,
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        if let Value::Word(s) | Value::Phrase(s) = value
            && s.contains('/')
        {
            let net = IpNet::from_str(s).map_err(|_| {
                error(
                    column,
                    format!("`{s}` is not a CIDR block (like 10.0.0.0/8 or 2001:db8::/32)"),
                )
            })?;
            return Ok(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_ip_addr(field, to_v6(net.network()))),
                Bound::Included(Term::from_field_ip_addr(field, to_v6(net.broadcast()))),
            )));
        }
        typed(
            name,
            value,
            column,
            "an IP field: use an address, a CIDR block or a range",
            |s| {
                IpAddr::from_str(s)
                    .map(|ip| Term::from_field_ip_addr(field, to_v6(ip)))
                    .map_err(|_| error(column, format!("`{s}` is not an IP address")))
            },
        )
    }

    fn number(
        &self,
        name: &str,
        field: Field,
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        typed(
            name,
            value,
            column,
            "a number field: use a number or a range",
            |s| {
                u64::from_str(s)
                    .map(|n| Term::from_field_u64(field, n))
                    .map_err(|_| {
                        error(
                            column,
                            format!("`{name}` holds whole numbers; `{s}` is not one"),
                        )
                    })
            },
        )
    }

    fn timestamp(
        &self,
        field: Field,
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        // One time is the range [t, t]: ranges run on the fast field, at microseconds.
        let exact;
        let value = match value {
            Value::Word(s) | Value::Phrase(s) => {
                exact = Value::Range {
                    lower: Bound::Included(s.clone()),
                    upper: Bound::Included(s.clone()),
                };
                &exact
            }
            other => other,
        };
        typed(
            TIMESTAMP,
            value,
            column,
            "a time: use a range, like @timestamp:[now-1h TO now]",
            |s| {
                let at = parse_time(s, self.now).ok_or_else(|| {
                    error(
                        column,
                        format!("`{s}` is not a time (RFC 3339, `now` or `now-15m`)"),
                    )
                })?;
                Ok(Term::from_field_date(
                    field,
                    tantivy::DateTime::from_timestamp_micros(at.timestamp_micros()),
                ))
            },
        )
    }

    /// An ECS field inside a JSON root: exact values only (strings, numbers, booleans).
    fn nested(
        &self,
        name: &str,
        field: Field,
        path: &str,
        value: &Value,
        column: usize,
    ) -> Result<Box<dyn Query>, CompileError> {
        let (Value::Word(s) | Value::Phrase(s)) = value else {
            return Err(error(
                column,
                format!(
                    "`{name}` is matched by exact value; wildcards, regexes, ranges and `:*` \
                     work on the typed fields ({})",
                    typed_fields().join(", ")
                ),
            ));
        };
        // The text may be a JSON string, number or boolean in the event: one term each.
        let typed_term = |append: &dyn Fn(&mut Term)| {
            let mut term = Term::from_field_json_path(field, path, true);
            append(&mut term);
            (Occur::Should, term_query(term))
        };
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> =
            vec![typed_term(&|t| t.append_type_and_str(s))];
        if let Ok(n) = i64::from_str(s) {
            alternatives.push(typed_term(&|t| t.append_type_and_fast_value(n)));
        }
        if let Ok(n) = u64::from_str(s) {
            alternatives.push(typed_term(&|t| t.append_type_and_fast_value(n)));
        }
        if let Ok(n) = f64::from_str(s)
            && n.is_finite()
        {
            alternatives.push(typed_term(&|t| t.append_type_and_fast_value(n)));
        }
        if let Ok(b) = bool::from_str(s) {
            alternatives.push(typed_term(&|t| t.append_type_and_fast_value(b)));
        }
        Ok(Box::new(BooleanQuery::new(alternatives)))
    }
}

/// A typed field (IP, number, time): one value, a range or presence; `term` reads a
/// value from its text. Wildcards and regexes have no meaning there.
fn typed(
    name: &str,
    value: &Value,
    column: usize,
    what: &str,
    term: impl Fn(&str) -> Result<Term, CompileError>,
) -> Result<Box<dyn Query>, CompileError> {
    Ok(match value {
        Value::Word(s) | Value::Phrase(s) => term_query(term(s)?),
        Value::Range { lower, upper } => Box::new(RangeQuery::new(
            map_bound(lower, &term)?,
            map_bound(upper, &term)?,
        )),
        Value::Exists => Box::new(ExistsQuery::new(name.to_string(), false)),
        Value::Wildcard(_) | Value::Regex(_) => {
            return Err(error(column, format!("`{name}` is {what}")));
        }
    })
}

fn error(column: usize, message: String) -> CompileError {
    CompileError { column, message }
}

fn typed_fields() -> Vec<&'static str> {
    let mut names = vec![TIMESTAMP];
    names.extend(KEYWORD_FIELDS);
    names.extend(TEXT_FIELDS);
    names.extend(IP_FIELDS);
    names.extend(NUMBER_FIELDS);
    names
}

fn term_query(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

fn regex_query(pattern: &str, field: Field, column: usize) -> Result<Box<dyn Query>, CompileError> {
    RegexQuery::from_pattern(pattern, field)
        .map(|q| Box::new(q) as Box<dyn Query>)
        .map_err(|e| error(column, format!("invalid regular expression: {e}")))
}

/// A wildcard pattern as an anchored regex (tantivy matches whole terms).
fn glob_regex(globs: &[Glob], lowercase: bool) -> String {
    let mut out = String::new();
    for glob in globs {
        match glob {
            Glob::AnyRun => out.push_str(".*"),
            Glob::AnyOne => out.push('.'),
            Glob::Literal(text) if lowercase => out.push_str(&regex::escape(&text.to_lowercase())),
            Glob::Literal(text) => out.push_str(&regex::escape(text)),
        }
    }
    out
}

fn map_bound(
    bound: &Bound<String>,
    f: impl Fn(&str) -> Result<Term, CompileError>,
) -> Result<Bound<Term>, CompileError> {
    Ok(match bound {
        Bound::Included(s) => Bound::Included(f(s)?),
        Bound::Excluded(s) => Bound::Excluded(f(s)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EventIndex, SearchRequest};
    use super::*;
    use crate::search::time::parse_duration;
    use chrono::Duration;
    use serde_json::Value as Json;
    use yagura_shared::Event;

    /// A small deterministic generator (no seed file, no extra crate): the same data set
    /// on every run, so every expected count below is exact.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn data_set(now: DateTime<Utc>) -> Vec<Event> {
        let mut rng = Lcg(42);
        let users = ["admin", "root", "alice", "bob"];
        let ips = [
            "10.0.0.7",
            "10.200.1.1",
            "192.168.1.5",
            "203.0.113.9",
            "2001:db8::1",
            "2001:db9::1",
            "not-an-ip",
        ];
        let commands = [
            "powershell -enc SQBFAFgA",
            "C:\\tools\\mimikatz.exe sekurlsa::logonpasswords",
            "/usr/bin/ssh backup@host",
            "Invoke-Mimikatz -DumpCreds",
            "ls -la",
        ];
        (0..600)
            .map(|i| {
                let at = now - Duration::minutes(rng.next(24 * 60) as i64);
                let mut e = Event::new(at);
                if rng.next(5) != 0 {
                    e.set_str("user.name", users[rng.next(4) as usize]);
                }
                e.set_str("source.ip", ips[rng.next(ips.len() as u64) as usize]);
                e.set("source.port", Json::from(rng.next(3000)));
                e.set(
                    "http.response.status_code",
                    Json::from([200u64, 302, 404, 500, 503][rng.next(5) as usize]),
                );
                e.set_str(
                    "event.outcome",
                    if rng.next(2) == 0 {
                        "failure"
                    } else {
                        "success"
                    },
                );
                e.set_str(
                    "process.command_line",
                    commands[rng.next(commands.len() as u64) as usize],
                );
                e.set_str(
                    "process.parent.name",
                    ["bash", "sshd", "explorer.exe"][rng.next(3) as usize],
                );
                e.set_str(
                    "message",
                    if rng.next(3) == 0 {
                        format!("Failed password for user {i}")
                    } else {
                        format!("session opened {i}")
                    },
                );
                e
            })
            .collect()
    }

    fn index_of(events: &[Event]) -> EventIndex {
        super::super::index_in_ram(events)
    }

    fn total(index: &EventIndex, query: &str) -> usize {
        index
            .search(&SearchRequest {
                limit: 1,
                ..SearchRequest::new(query)
            })
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .total
    }

    fn s<'a>(e: &'a Event, path: &str) -> &'a str {
        e.get_str(path).unwrap_or("")
    }

    fn n(e: &Event, path: &str) -> u64 {
        e.get(path).and_then(Json::as_u64).unwrap_or(u64::MAX)
    }

    fn ip(e: &Event) -> Option<IpAddr> {
        s(e, "source.ip").parse().ok()
    }

    #[test]
    fn every_query_feature_gives_the_known_answer() {
        let now = Utc::now();
        let events = data_set(now);
        let index = index_of(&events);
        type Check = fn(&Event) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("*", |_| true),
            ("user.name:admin", |e| s(e, "user.name") == "admin"),
            ("event.outcome:failure AND user.name:admin", |e| {
                s(e, "event.outcome") == "failure" && s(e, "user.name") == "admin"
            }),
            ("event.outcome:failure user.name:admin", |e| {
                s(e, "event.outcome") == "failure" && s(e, "user.name") == "admin"
            }),
            ("source.ip:10.0.0.0/8", |e| {
                ip(e).is_some_and(|ip| IpNet::from_str("10.0.0.0/8").expect("valid").contains(&ip))
            }),
            ("source.ip:2001:db8::/32", |e| {
                ip(e).is_some_and(|ip| {
                    IpNet::from_str("2001:db8::/32")
                        .expect("valid")
                        .contains(&ip)
                })
            }),
            ("source.ip:192.168.1.5", |e| {
                s(e, "source.ip") == "192.168.1.5"
            }),
            ("source.ip:[10.0.0.0 TO 10.0.0.255]", |e| {
                ip(e).is_some_and(|ip| IpNet::from_str("10.0.0.0/24").expect("valid").contains(&ip))
            }),
            ("source.ip:*", |e| ip(e).is_some()),
            ("process.command_line:*mimikatz*", |e| {
                s(e, "process.command_line").contains("mimikatz")
            }),
            ("process.command_line:*Mimikatz*", |e| {
                s(e, "process.command_line").contains("Mimikatz")
            }),
            ("process.command_line:/.*-enc [A-Za-z0-9]+/", |e| {
                s(e, "process.command_line").starts_with("powershell -enc ")
            }),
            ("process.command_line:ls?-la", |e| {
                s(e, "process.command_line") == "ls -la"
            }),
            ("http.response.status_code:>=500", |e| {
                n(e, "http.response.status_code") >= 500
            }),
            ("http.response.status_code:404", |e| {
                n(e, "http.response.status_code") == 404
            }),
            ("source.port:[1000 TO 2000}", |e| {
                (1000..2000).contains(&n(e, "source.port"))
            }),
            ("source.port:<10", |e| n(e, "source.port") < 10),
            ("user.name:*", |e| e.get_str("user.name").is_some()),
            ("NOT user.name:root", |e| s(e, "user.name") != "root"),
            ("-user.name:root -user.name:admin", |e| {
                !["root", "admin"].contains(&s(e, "user.name"))
            }),
            (
                "(user.name:admin OR user.name:root) -event.outcome:success",
                |e| {
                    ["admin", "root"].contains(&s(e, "user.name"))
                        && s(e, "event.outcome") != "success"
                },
            ),
            ("\"failed password\"", |e| {
                s(e, "message").to_lowercase().contains("failed password")
            }),
            ("FAILED", |e| s(e, "message").starts_with("Failed")),
            ("message:sess*", |e| s(e, "message").starts_with("session")),
            ("message:/open(ed)?/", |e| {
                s(e, "message").contains("opened")
            }),
            ("@timestamp:[now-2h TO now]", |e| {
                e.timestamp()
                    .is_some_and(|t| t >= Utc::now() - Duration::hours(2))
            }),
            ("process.parent.name:bash", |e| {
                s(e, "process.parent.name") == "bash"
            }),
            (
                "process.parent.name:\"explorer.exe\" OR user.name:bob",
                |e| s(e, "process.parent.name") == "explorer.exe" || s(e, "user.name") == "bob",
            ),
        ];
        for (query, check) in cases {
            let want = events.iter().filter(|e| check(e)).count();
            assert!(
                want > 0 || query.contains('<'),
                "{query}: the data set must have hits"
            );
            assert_eq!(total(&index, query), want, "{query}");
        }
    }

    #[test]
    fn what_a_field_cannot_do_is_an_error_at_its_column() {
        let index = index_of(&data_set(Utc::now()));
        let cases = [
            ("user.name:admin source.ip:nope", 17, "not an IP address"),
            ("source.ip:10.0.0.0/33", 1, "not a CIDR block"),
            ("nosuch.field:x", 1, "unknown field `nosuch.field`"),
            ("process.parent.name:*bash*", 1, "matched by exact value"),
            ("source.port:high", 1, "whole numbers"),
            ("@timestamp:[yesterday TO now]", 1, "not a time"),
            ("message:[a TO b]", 1, "not to full text"),
            ("user.name:/[/", 1, "invalid regular expression"),
            ("event.id:0193*", 1, "exact values only"),
            (
                "user.name:admin OR event.id:/0193.*/",
                20,
                "exact values only",
            ),
        ];
        for (query, column, message) in cases {
            let result = index.search(&SearchRequest {
                limit: 1,
                ..SearchRequest::new(query)
            });
            match result {
                Err(super::super::IndexError::Compile(e)) => {
                    assert_eq!(e.column, column, "{query}");
                    assert!(e.message.contains(message), "{query}: {}", e.message);
                }
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_event_is_found_by_its_id_from_the_fast_field() {
        let events = data_set(Utc::now());
        let index = index_of(&events);
        let wanted = &events[events.len() / 2];
        let id = s(wanted, "event.id");
        assert_eq!(total(&index, &format!("event.id:{id}")), 1);
        assert_eq!(total(&index, &format!("event.id:\"{id}\"")), 1);
        assert_eq!(total(&index, "event.id:*"), events.len());
        let found = index.find_event(id).expect("find");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].event["event"]["id"], id);
        assert!(
            index
                .find_event(&uuid::Uuid::now_v7().to_string())
                .expect("find")
                .is_empty()
        );
    }

    #[test]
    fn relative_times_and_durations() {
        let now = Utc::now();
        assert_eq!(parse_time("now", now), Some(now));
        assert_eq!(
            parse_time("now-15m", now),
            Some(now - Duration::minutes(15))
        );
        assert_eq!(parse_time("now-2d", now), Some(now - Duration::days(2)));
        assert!(parse_time("2026-11-25T10:00:00Z", now).is_some());
        assert_eq!(parse_time("now+1h", now), None);
        assert_eq!(parse_time("now-1y", now), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    fn aggregate(index: &EventIndex, query: &str, aggs: &str) -> Json {
        let result = index
            .search(&SearchRequest {
                limit: 1,
                aggs: crate::search::aggs::parse_aggs(aggs).expect("aggs"),
                ..SearchRequest::new(query)
            })
            .unwrap_or_else(|e| panic!("{aggs}: {e}"));
        result.aggregations.expect("aggregations")
    }

    fn counts_by(events: &[&Event], key: impl Fn(&Event) -> String) -> Vec<(String, u64)> {
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for e in events {
            *counts.entry(key(e)).or_default() += 1;
        }
        let mut sorted: Vec<_> = counts.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sorted
    }

    fn buckets(result: &Json) -> Vec<(String, u64)> {
        result["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| {
                let key = b["key"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| b["key"].to_string());
                (key, b["doc_count"].as_u64().expect("count"))
            })
            .collect()
    }

    #[test]
    fn aggregations_give_the_known_answers() {
        let now = Utc::now();
        let events = data_set(now);
        let index = index_of(&events);
        let failures: Vec<&Event> = events
            .iter()
            .filter(|e| s(e, "event.outcome") == "failure")
            .collect();

        let got = aggregate(&index, "event.outcome:failure", "terms:user.name");
        let want = counts_by(
            &failures
                .iter()
                .copied()
                .filter(|e| e.get_str("user.name").is_some())
                .collect::<Vec<_>>(),
            |e| s(e, "user.name").to_string(),
        );
        let mut got_buckets = buckets(&got["terms:user.name"]);
        got_buckets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(got_buckets, want);

        // IP keys come back as written (IPv4 as IPv4); the unparsable address is absent.
        let got = aggregate(&index, "*", "terms:source.ip:20,cardinality:source.ip");
        let all: Vec<&Event> = events.iter().filter(|e| ip(e).is_some()).collect();
        let mut got_buckets = buckets(&got["terms:source.ip:20"]);
        got_buckets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(
            got_buckets,
            counts_by(&all, |e| s(e, "source.ip").to_string())
        );
        assert_eq!(got["cardinality:source.ip"]["value"].as_f64(), Some(6.0));

        let got = aggregate(
            &index,
            "*",
            "min:source.port,max:source.port,avg:http.response.status_code,percentiles:source.port",
        );
        let ports: Vec<u64> = events.iter().map(|e| n(e, "source.port")).collect();
        let statuses: Vec<u64> = events
            .iter()
            .map(|e| n(e, "http.response.status_code"))
            .collect();
        assert_eq!(
            got["min:source.port"]["value"].as_f64(),
            ports.iter().min().map(|m| *m as f64)
        );
        assert_eq!(
            got["max:source.port"]["value"].as_f64(),
            ports.iter().max().map(|m| *m as f64)
        );
        let avg = statuses.iter().sum::<u64>() as f64 / statuses.len() as f64;
        let got_avg = got["avg:http.response.status_code"]["value"]
            .as_f64()
            .expect("avg");
        assert!((got_avg - avg).abs() < 1e-6, "{got_avg} vs {avg}");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2] as f64;
        let got_median = got["percentiles:source.port"]["values"]["50.0"]
            .as_f64()
            .expect("p50");
        // Percentiles are a sketch (DDSketch): within 2 % of the range here.
        assert!(
            (got_median - median).abs() < 60.0,
            "{got_median} vs {median}"
        );

        // The date histogram covers every event once; nested, every user's events once.
        let got = aggregate(
            &index,
            "*",
            "date_histogram:@timestamp,terms:user.name>date_histogram:@timestamp:1h",
        );
        let histogram = buckets(&got["date_histogram:@timestamp"]);
        assert!(
            histogram.len() > 10 && histogram.len() <= 100,
            "{}",
            histogram.len()
        );
        assert_eq!(
            histogram.iter().map(|(_, c)| c).sum::<u64>(),
            events.len() as u64
        );
        for user in got["terms:user.name>date_histogram:@timestamp:1h"]["buckets"]
            .as_array()
            .expect("users")
        {
            let inner = buckets(&user["date_histogram:@timestamp:1h"]);
            assert_eq!(
                inner.iter().map(|(_, c)| c).sum::<u64>(),
                user["doc_count"].as_u64().expect("count")
            );
        }
    }

    #[test]
    fn aggregations_refuse_fields_they_cannot_use() {
        let index = index_of(&data_set(Utc::now()));
        for (aggs, why) in [
            ("terms:message", "cannot be bucketed"),
            ("date_histogram:source.port", "works on @timestamp"),
            ("avg:user.name", "not a number field"),
            ("max:process.parent.name", "no order"),
        ] {
            let result = index.search(&SearchRequest {
                limit: 1,
                aggs: crate::search::aggs::parse_aggs(aggs).expect("parses"),
                ..SearchRequest::new("*")
            });
            match result {
                Err(super::super::IndexError::Aggregation(e)) => {
                    assert!(e.contains(why), "{aggs}: {e}")
                }
                other => panic!("{aggs}: {other:?}"),
            }
        }
    }

    #[test]
    fn auto_intervals_keep_histograms_to_about_a_hundred_buckets() {
        use super::super::aggs::auto_interval;
        let now = Utc::now();
        assert_eq!(auto_interval(now - Duration::minutes(15), now), "10s");
        assert_eq!(auto_interval(now - Duration::hours(24), now), "30m");
        assert_eq!(auto_interval(now - Duration::days(30), now), "12h");
        assert_eq!(auto_interval(now, now), "1s");
        assert_eq!(auto_interval(now - Duration::days(10_000), now), "30d");
    }
}
