//! Golden tests: every line of `fixtures/golden/<parser>.log` parsed with that parser must
//! give exactly the event in `fixtures/golden/<parser>.expected.jsonl` (one
//! `{"line": …, "event": …}` per input line). The two are compared as whole maps keyed by
//! line, so a missing, extra or changed event fails. The expected files are reviewed like
//! code; after an intended change, regenerate them with
//! `YAGURA_BLESS=1 cargo test -p yagura-agent --test parse_golden` and review the diff.
//!
//! The tailer's fields are fixed (`@timestamp` = read time 2026-11-25T08:00:00Z, a
//! constant `event.id`, host `agent-host`) so the files are deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use yagura_agent::parse::{AuditdAssembler, ParseContext, ParserKind, parse_into};
use yagura_shared::Event;

const READ_TIME: &str = "2026-11-25T08:00:00.000000Z";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn ctx() -> ParseContext {
    ParseContext::at(
        DateTime::parse_from_rfc3339(READ_TIME)
            .expect("time")
            .with_timezone(&Utc),
    )
}

/// The event the tailer would hand to the parser, with fixed id and read time.
fn tailer_event(line: &str) -> Event {
    let value = json!({
        "@timestamp": READ_TIME,
        "event": {"id": "0190b5d2-7f3e-7c4c-9b1a-2c3d4e5f6a7b", "kind": "event", "dataset": "golden", "original": line},
        "message": line,
        "host": {"name": "agent-host", "hostname": "agent-host"},
    });
    let Value::Object(map) = value else {
        unreachable!("a JSON object literal")
    };
    Event::from_map(map)
}

/// Compares `actual` (line → event) with the expected file, or writes it when blessing.
fn check_against_file(name: &str, actual: BTreeMap<String, Value>, order: &[String]) {
    let path = golden_dir().join(format!("{name}.expected.jsonl"));
    if std::env::var_os("YAGURA_BLESS").is_some() {
        let mut text = String::new();
        for line in order {
            let record = json!({"line": line, "event": actual[line]});
            text.push_str(&record.to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write expected file");
        return;
    }
    let expected = read_expected(&path);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<&String> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: lines expected but not produced: {missing:#?}"
    );
    assert!(
        extra.is_empty(),
        "{name}: lines produced but not expected: {extra:#?}"
    );
    for (line, event) in &actual {
        assert_eq!(
            event, &expected[line],
            "{name}: event of line {line:?} differs (left: actual, right: expected)"
        );
    }
    assert_eq!(actual, expected);
}

fn read_expected(path: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with YAGURA_BLESS=1 to create it)",
            path.display()
        )
    });
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("expected file line is JSON");
            let line = v["line"].as_str().expect("line").to_string();
            (line, v["event"].clone())
        })
        .collect()
}

fn golden(kind: ParserKind) {
    let name = kind.to_string();
    let input = std::fs::read_to_string(golden_dir().join(format!("{name}.log"))).expect("input");
    let ctx = ctx();
    let mut actual = BTreeMap::new();
    let mut order = Vec::new();
    for line in input.lines() {
        let mut event = tailer_event(line);
        parse_into(kind, line, &ctx, &mut event);
        event.validate().expect("parsed event is valid");
        assert_eq!(event.original(), Some(line), "event.original kept");
        let value = Value::Object(event.into_map());
        assert!(
            actual.insert(line.to_string(), value).is_none(),
            "{name}: duplicate fixture line {line:?}"
        );
        order.push(line.to_string());
    }
    check_against_file(&name, actual, &order);
}

#[test]
fn golden_syslog() {
    golden(ParserKind::Syslog);
}

#[test]
fn golden_linux_auth() {
    golden(ParserKind::LinuxAuth);
}

#[test]
fn golden_web_access() {
    golden(ParserKind::WebAccess);
}

#[test]
fn golden_web_error() {
    golden(ParserKind::WebError);
}

#[test]
fn golden_auditd_single_records() {
    golden(ParserKind::Auditd);
}

#[test]
fn golden_postgresql() {
    golden(ParserKind::Postgresql);
}

#[test]
fn golden_dns() {
    golden(ParserKind::Dns);
}

#[test]
fn golden_json() {
    golden(ParserKind::Json);
}

#[test]
fn golden_auto() {
    golden(ParserKind::Auto);
}

/// The auditd fixture through the assembler: one event per audit event (the seven
/// records of serial 4201 joined), keyed by the first line of each group.
#[test]
fn golden_auditd_assembled() {
    let input = std::fs::read_to_string(golden_dir().join("auditd.log")).expect("input");
    let mut assembler = AuditdAssembler::new(Duration::from_secs(2));
    let now = Instant::now();
    let mut groups = Vec::new();
    for line in input.lines() {
        groups.extend(assembler.push(line, line.to_string(), now));
    }
    groups.extend(assembler.flush());
    let mut actual = BTreeMap::new();
    let mut order = Vec::new();
    for group in &groups {
        let mut event = tailer_event(&group.first);
        group.write_into(&mut event);
        event.validate().expect("valid");
        actual.insert(group.first.clone(), Value::Object(event.into_map()));
        order.push(group.first.clone());
    }
    let lines_in_groups: usize = groups.iter().map(|g| g.lines.len()).sum();
    assert_eq!(
        lines_in_groups,
        input.lines().count(),
        "no line lost or repeated"
    );
    assert_eq!(groups[0].lines.len(), 7, "SYSCALL … EOE joined");
    check_against_file("auditd.assembled", actual, &order);
}
