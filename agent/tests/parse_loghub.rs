//! The parsers on real logs: the 6,000 lines of the loghub samples (OpenSSH, Linux syslog,
//! Apache error log; `fixtures/loghub/README.md` for their origin and licence), checked
//! against the structured CSV that comes with them.
//!
//! Every line must become a parsed event with the timestamp, host and process of its CSV
//! row. For the OpenSSH lines and the Linux sshd/su/PAM lines, all lines of one template
//! (EventId) must get the same `event.action` and `event.outcome`, the action expected for
//! that template, and the user and source address wherever the template has them. The
//! per-template results are printed (`cargo test --test parse_loghub -- --nocapture`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Datelike, Timelike, Utc};
use yagura_agent::parse::{ParseContext, ParserKind, parse_into};
use yagura_shared::Event;

fn fixture(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/loghub")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes): rows as maps by header.
fn csv(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    let header = rows.remove(0);
    rows.into_iter()
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

/// The values of the `<*>` of `template` in `content` (literal parts matched in order).
fn template_values(template: &str, content: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = template.split("<*>").collect();
    let mut rest = content.strip_prefix(parts[0])?;
    let mut values = Vec::new();
    for (i, literal) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        let end = if literal.is_empty() {
            if last { rest.len() } else { 0 }
        } else if last {
            rest.rfind(literal)?
        } else {
            rest.find(literal)?
        };
        values.push(rest[..end].to_string());
        rest = &rest[end + literal.len()..];
    }
    Some(values)
}

fn base_event(line: &str) -> Event {
    let mut e = Event::new(Utc::now());
    e.set_str("message", line);
    e.set_str("event.original", line);
    e.set_str("host.name", "agent-host");
    e.set_str("host.hostname", "agent-host");
    e
}

fn ctx() -> ParseContext {
    ParseContext::at(
        DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
    )
}

fn month_number(name: &str) -> u32 {
    [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == name)
    .map(|p| p as u32 + 1)
    .expect("month")
}

fn check_syslog_header(e: &Event, month: &str, day: &str, time: &str, host: &str) {
    let t = e.timestamp().expect("timestamp");
    assert_eq!(t.month(), month_number(month), "{e:?}");
    assert_eq!(t.day(), day.parse::<u32>().expect("day"), "{e:?}");
    assert_eq!(
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        time
    );
    assert_eq!(e.get_str("host.hostname"), Some(host));
    assert_eq!(e.get_str("host.name"), Some("agent-host"));
}

/// What a template's `<*>` hold.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    User,
    Address,
    Other,
}
use Role::{Address as A, Other as O, User as U};

struct Expect {
    id: &'static str,
    action: Option<&'static str>,
    outcome: Option<&'static str>,
    roles: &'static [Role],
    /// A user name written literally in the template.
    literal_user: Option<&'static str>,
}

const fn ex(
    id: &'static str,
    action: Option<&'static str>,
    outcome: Option<&'static str>,
    roles: &'static [Role],
    literal_user: Option<&'static str>,
) -> Expect {
    Expect {
        id,
        action,
        outcome,
        roles,
        literal_user,
    }
}

const S: Option<&str> = Some("success");
const F: Option<&str> = Some("failure");
const UNK: Option<&str> = Some("unknown");

const OPENSSH: &[Expect] = &[
    ex("E1", Some("ssh_login"), S, &[U, A, O], None),
    ex("E2", Some("ssh_connection_closed"), UNK, &[A], None),
    ex("E3", Some("ssh_no_identification"), F, &[A], None),
    ex(
        "E4",
        Some("ssh_too_many_auth_failures"),
        F,
        &[],
        Some("admin"),
    ),
    ex(
        "E5",
        Some("ssh_too_many_auth_failures"),
        F,
        &[],
        Some("root"),
    ),
    ex("E6", Some("ssh_disconnect"), UNK, &[A, O], None),
    ex("E7", Some("ssh_disconnect"), UNK, &[A, O], None),
    ex("E8", Some("ssh_login"), F, &[U, A, O], None),
    ex("E9", Some("ssh_login"), F, &[U, A, O], None),
    ex("E10", Some("ssh_login"), F, &[U, A, O], None),
    ex("E11", None, None, &[], None),
    ex("E12", Some("ssh_invalid_user"), F, &[U], None),
    ex("E13", Some("ssh_invalid_user"), F, &[U, A], None),
    ex("E14", Some("ssh_login"), F, &[O, A, O], Some("root")),
    ex("E15", Some("pam_auth_failure"), F, &[O, O, O, A], None),
    ex("E16", Some("pam_auth_failure"), F, &[O, O, O, A], None),
    ex(
        "E17",
        Some("pam_auth_failure"),
        F,
        &[O, O, O, A],
        Some("root"),
    ),
    ex("E18", Some("pam_max_retries"), F, &[O, O], None),
    ex("E19", Some("pam_auth_failure"), F, &[O, O, A], None),
    ex("E20", Some("pam_auth_failure"), F, &[O, O, A, U], None),
    ex("E21", Some("pam_user_unknown"), F, &[], None),
    ex("E22", Some("session_closed"), S, &[U], None),
    ex("E23", Some("session_opened"), S, &[U, O], None),
    ex("E24", Some("ssh_disconnect"), UNK, &[A, O], None),
    ex("E25", Some("ssh_disconnect"), UNK, &[A, O], None),
    ex("E26", Some("ssh_disconnect"), UNK, &[A, O], None),
    ex(
        "E27",
        Some("ssh_reverse_mapping_failed"),
        UNK,
        &[O, A],
        None,
    ),
];

/// The Linux templates of sshd, su and PAM lines.
const LINUX_AUTH: &[Expect] = &[
    ex("E15", Some("pam_auth_failure"), F, &[], None),
    ex("E16", Some("pam_auth_failure"), F, &[A], None),
    ex("E17", Some("pam_auth_failure"), F, &[A], Some("guest")),
    ex("E18", Some("pam_auth_failure"), F, &[A], Some("root")),
    ex("E19", Some("pam_auth_failure"), F, &[A], Some("test")),
    ex("E27", Some("pam_user_unknown"), F, &[], None),
    ex("E91", Some("console_login"), S, &[], Some("root")),
    ex("E101", Some("session_closed"), S, &[U], None),
    ex("E102", Some("session_opened"), S, &[U, O], None),
    ex("E103", Some("session_opened"), S, &[U, O], None),
];

#[derive(Default)]
struct TemplateResult {
    lines: usize,
    outcomes: BTreeMap<(String, String), usize>,
    user_checked: usize,
    address_checked: usize,
}

/// Checks one auth line against its template's expectation; records the result.
fn check_auth_line(
    e: &Event,
    row: &BTreeMap<String, String>,
    expect: &Expect,
    results: &mut BTreeMap<String, TemplateResult>,
) {
    let action = e.action().unwrap_or("-").to_string();
    let outcome = e.outcome().unwrap_or("-").to_string();
    let result = results.entry(expect.id.to_string()).or_default();
    result.lines += 1;
    *result
        .outcomes
        .entry((action.clone(), outcome.clone()))
        .or_default() += 1;
    assert_eq!(
        e.action(),
        expect.action,
        "{}: {}",
        expect.id,
        row["Content"]
    );
    assert_eq!(
        e.outcome(),
        expect.outcome,
        "{}: {}",
        expect.id,
        row["Content"]
    );
    let values = template_values(&row["EventTemplate"], &row["Content"])
        .unwrap_or_else(|| panic!("{} does not match {}", row["Content"], row["EventTemplate"]));
    assert_eq!(values.len(), expect.roles.len(), "{}", expect.id);
    for (value, role) in values.iter().zip(expect.roles) {
        match role {
            Role::User => {
                assert_eq!(
                    e.get_str("user.name"),
                    Some(value.as_str()),
                    "{}",
                    row["Content"]
                );
                result.user_checked += 1;
            }
            Role::Address => {
                assert_eq!(
                    e.get_str("source.address"),
                    Some(value.trim()),
                    "{}",
                    row["Content"]
                );
                let is_ip = value.trim().parse::<std::net::IpAddr>().is_ok();
                assert_eq!(
                    e.get_str("source.ip").is_some(),
                    is_ip,
                    "{}",
                    row["Content"]
                );
                result.address_checked += 1;
            }
            Role::Other => {}
        }
    }
    if let Some(user) = expect.literal_user {
        assert_eq!(e.get_str("user.name"), Some(user), "{}", row["Content"]);
        result.user_checked += 1;
    }
    if !expect.roles.contains(&Role::User) && expect.literal_user.is_none() {
        assert_eq!(e.get_str("user.name"), None, "{}", row["Content"]);
    }
}

fn print_table(name: &str, results: &BTreeMap<String, TemplateResult>) {
    println!("\n{name}: per-template results");
    println!(
        "{:<6} {:>5}  {:<28} {:<8} {:>6} {:>6}",
        "id", "lines", "event.action", "outcome", "user", "addr"
    );
    let mut ids: Vec<&String> = results.keys().collect();
    ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap_or(0));
    for id in ids {
        let r = &results[id];
        for ((action, outcome), n) in &r.outcomes {
            println!(
                "{id:<6} {n:>5}  {action:<28} {outcome:<8} {:>6} {:>6}",
                r.user_checked, r.address_checked
            );
        }
        assert_eq!(
            r.outcomes.len(),
            1,
            "{id}: every line of a template gets the same action and outcome"
        );
    }
}

fn parse_all(kind: ParserKind, log: &str) -> Vec<Event> {
    let ctx = ctx();
    log.lines()
        .map(|line| {
            let mut e = base_event(line);
            parse_into(kind, line, &ctx, &mut e);
            e.validate().expect("valid event");
            assert_eq!(e.original(), Some(line));
            assert!(e.get("tags").is_none(), "unparsed: {line}");
            e
        })
        .collect()
}

#[test]
fn openssh_sample() {
    let log = fixture("OpenSSH/OpenSSH_2k.log");
    let rows = csv(&fixture("OpenSSH/OpenSSH_2k.log_structured.csv"));
    for kind in [ParserKind::LinuxAuth, ParserKind::Auto] {
        let events = parse_all(kind, &log);
        assert_eq!(events.len(), 2000);
        assert_eq!(rows.len(), 2000);
        let mut results = BTreeMap::new();
        for (e, row) in events.iter().zip(&rows) {
            check_syslog_header(
                e,
                &row["Date"],
                &row["Day"],
                &row["Time"],
                &row["Component"],
            );
            assert_eq!(e.get_str("process.name"), Some("sshd"));
            assert_eq!(
                e.get("process.pid").and_then(|p| p.as_u64()),
                Some(row["Pid"].parse::<u64>().expect("pid"))
            );
            let expect = OPENSSH
                .iter()
                .find(|x| x.id == row["EventId"])
                .unwrap_or_else(|| panic!("no expectation for {}", row["EventId"]));
            check_auth_line(e, row, expect, &mut results);
        }
        assert_eq!(results.len(), OPENSSH.len(), "every template seen");
        print_table(&format!("OpenSSH ({kind})"), &results);
    }
}

#[test]
fn linux_sample() {
    let log = fixture("Linux/Linux_2k.log");
    let rows = csv(&fixture("Linux/Linux_2k.log_structured.csv"));
    for kind in [ParserKind::LinuxAuth, ParserKind::Auto] {
        let events = parse_all(kind, &log);
        assert_eq!(events.len(), 2000);
        assert_eq!(rows.len(), 2000);
        let mut results = BTreeMap::new();
        let mut auth_lines = 0;
        for (e, row) in events.iter().zip(&rows) {
            check_syslog_header(e, &row["Month"], &row["Date"], &row["Time"], &row["Level"]);
            assert_eq!(e.get_str("process.name"), Some(row["Component"].as_str()));
            let pid = e.get("process.pid").and_then(|p| p.as_u64());
            assert_eq!(pid, row["PID"].parse::<u64>().ok(), "{}", row["Content"]);
            assert_eq!(e.message().map(str::trim), Some(row["Content"].trim()));
            let component = row["Component"].as_str();
            let is_auth = component.starts_with("sshd")
                || component.starts_with("su(")
                || component.contains("pam_unix")
                || component == "-- root";
            if !is_auth {
                continue;
            }
            auth_lines += 1;
            let expect = LINUX_AUTH
                .iter()
                .find(|x| x.id == row["EventId"])
                .unwrap_or_else(|| {
                    panic!("no expectation for {}: {}", row["EventId"], row["Content"])
                });
            check_auth_line(e, row, expect, &mut results);
        }
        assert!(auth_lines > 800, "{auth_lines} auth lines");
        print_table(&format!("Linux sshd/su/PAM ({kind})"), &results);
    }
}

#[test]
fn apache_error_sample() {
    let log = fixture("Apache/Apache_2k.log");
    let rows = csv(&fixture("Apache/Apache_2k.log_structured.csv"));
    for kind in [ParserKind::WebError, ParserKind::Auto] {
        let events = parse_all(kind, &log);
        assert_eq!(events.len(), 2000);
        let mut levels: BTreeMap<String, usize> = BTreeMap::new();
        for (e, row) in events.iter().zip(&rows) {
            let t = e.timestamp().expect("time");
            assert_eq!(t.format("%a %b %d %H:%M:%S %Y").to_string(), row["Time"]);
            assert_eq!(e.get_str("log.level"), Some(row["Level"].as_str()));
            assert_eq!(e.action(), Some("web_error"));
            assert_eq!(e.get_str("host.hostname"), Some("agent-host"));
            if let Some(client) = row["Content"].strip_prefix("[client ") {
                let ip = client.split(']').next().expect("ip");
                assert_eq!(e.get_str("source.ip"), Some(ip));
                assert!(row["Content"].ends_with(e.message().expect("message")));
            } else {
                assert_eq!(e.message(), Some(row["Content"].as_str()));
            }
            *levels.entry(row["Level"].clone()).or_default() += 1;
        }
        println!("\nApache ({kind}): 2000 lines, levels {levels:?}");
    }
}
