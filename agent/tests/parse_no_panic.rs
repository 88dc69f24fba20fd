//! No parser panics on any input, and every parser keeps its promises on garbage: the
//! event stays valid, `event.original` and `event.id` are untouched, and an `unparsed`
//! event keeps its message. Inputs: arbitrary strings, arbitrary bytes (decoded lossily,
//! as the tailer does), and real fixture lines cut and spliced at random places (which
//! reach far deeper into each parser than random text does).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use yagura_agent::parse::{AuditdAssembler, ParseContext, ParserKind, parse_into};
use yagura_shared::Event;

fn fixture_lines() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).expect("fixture");
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

fn check_all_parsers(line: &str) {
    let ctx = ParseContext::at(
        DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
    );
    for kind in ParserKind::ALL {
        let mut event = Event::new(Utc::now());
        event.set_str("message", line);
        event.set_str("event.original", line);
        let id = event.id();
        parse_into(kind, line, &ctx, &mut event);
        assert!(
            event.validate().is_ok(),
            "{kind}: invalid event for {line:?}"
        );
        assert_eq!(event.original(), Some(line), "{kind}");
        assert_eq!(event.id(), id, "{kind}");
        let unparsed = event
            .get("tags")
            .and_then(|t| t.as_array())
            .is_some_and(|t| t.iter().any(|x| x == "unparsed"));
        if unparsed {
            assert_eq!(
                event.message(),
                Some(line),
                "{kind}: unparsed keeps message"
            );
        }
    }
}

/// A fixture line with a random cut and a random insertion.
fn mutated_line() -> impl Strategy<Value = String> {
    let lines = fixture_lines();
    (
        0..lines.len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "[\\PC]{0,6}",
    )
        .prop_map(move |(i, cut, at, insert)| {
            let line = &lines[i];
            let chars: Vec<char> = line.chars().collect();
            let cut = cut.index(chars.len() + 1);
            let mut kept: Vec<char> = chars[..cut].to_vec();
            let at = at.index(kept.len() + 1);
            for (n, c) in insert.chars().enumerate() {
                kept.insert(at + n, c);
            }
            kept.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings(line in any::<String>()) {
        check_all_parsers(&line);
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_all_parsers(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn log_like_text(line in "[<>0-9A-Za-z :\\[\\]=\"'.@#/(){},;*+-]{0,160}") {
        check_all_parsers(&line);
    }

    #[test]
    fn mutated_fixture_lines(line in mutated_line()) {
        check_all_parsers(&line);
    }

    #[test]
    fn auditd_assembler_never_loses_a_line(
        lines in prop::collection::vec(
            prop_oneof![
                mutated_line(),
                (0u64..4, prop::sample::select(vec!["SYSCALL", "EXECVE", "PATH", "EOE", "USER_LOGIN"]))
                    .prop_map(|(serial, t)| format!("type={t} msg=audit(1700000000.000:{serial}): a=b")),
            ],
            0..40,
        )
    ) {
        let mut assembler = AuditdAssembler::new(Duration::from_secs(2));
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            out.extend(assembler.push(line, i, now));
        }
        out.extend(assembler.flush());
        let emitted: Vec<String> = out.iter().flat_map(|g| g.lines.clone()).collect();
        prop_assert_eq!(&emitted, &lines, "every line comes out once, in order");
        for group in &out {
            let mut event = Event::new(Utc::now());
            group.write_into(&mut event);
            prop_assert!(event.validate().is_ok());
        }
    }
}
