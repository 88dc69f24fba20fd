#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use yagura_agent::parse::AuditdAssembler;
use yagura_shared::Event;

// The input's lines go through the assembler; every line must come out exactly once, in
// order, and every group must make a valid event.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let mut assembler = AuditdAssembler::new(Duration::from_secs(2));
    let now = Instant::now();
    let mut groups = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        groups.extend(assembler.push(line, i, now));
    }
    groups.extend(assembler.flush());
    let out: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.lines.iter().map(String::as_str))
        .collect();
    assert_eq!(out, lines);
    for group in &groups {
        let mut event = Event::new(chrono::Utc::now());
        group.write_into(&mut event);
        assert!(event.validate().is_ok());
    }
});
