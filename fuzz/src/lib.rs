//! What every parser fuzz target checks: `parse_into` does not panic on the bytes (decoded
//! lossily, as the tailer does), the event stays valid, and `event.original` is kept.

use chrono::{DateTime, Utc};
use yagura_agent::parse::{ParseContext, ParserKind, parse_into};
use yagura_shared::Event;

/// Runs one parser on `data` and checks its guarantees (panics, for libFuzzer, if broken).
pub fn check_parser(kind: ParserKind, data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let reference = DateTime::from_timestamp(1_764_057_600, 0).unwrap_or_else(Utc::now);
    let ctx = ParseContext::at(reference);
    let mut event = Event::new(reference);
    event.set_str("message", line.as_ref());
    event.set_str("event.original", line.as_ref());
    parse_into(kind, &line, &ctx, &mut event);
    assert!(event.validate().is_ok(), "invalid event");
    assert_eq!(
        event.original(),
        Some(line.as_ref()),
        "event.original changed"
    );
}
