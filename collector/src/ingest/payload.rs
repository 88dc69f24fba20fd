//! Payload validation on the hot path, without building every event.
//!
//! Ingest must know that every line of a payload is an event the rest of the path accepts
//! (`Event::validate`: an object with an RFC 3339 `@timestamp` and a UUID `event.id`, an
//! `agent.id` that is this batch's agent when present) and that the count matches the
//! header. Building a JSON map per event only to drop it costs more than the signature
//! check, so [`validate_fast`] reads each line into a small borrowed probe instead. It is
//! a strict subset of the full check: whatever it is unsure of (flat dotted keys,
//! duplicate keys, unusual types) makes it answer `None`, and ingest then runs the full
//! [`SignedBatch::events`], whose verdict and error message count.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use uuid::Uuid;
use yagura_shared::Event;

use crate::fleet::HEARTBEAT_DATASET;

#[derive(Deserialize)]
struct LineProbe<'a> {
    #[serde(rename = "@timestamp", borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    event: EventProbe<'a>,
    #[serde(default, borrow)]
    agent: Option<AgentProbe<'a>>,
    /// Literal dotted keys take precedence in `Event::get`: leave those to the full check.
    #[serde(rename = "event.id", default)]
    flat_event_id: Option<IgnoredAny>,
    #[serde(rename = "agent.id", default)]
    flat_agent_id: Option<IgnoredAny>,
    #[serde(rename = "event.dataset", default)]
    flat_dataset: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct EventProbe<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    dataset: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AgentProbe<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

/// What the fast check learned from a payload it fully accepts.
#[derive(Debug, Default)]
pub struct FastVerdict {
    /// The heartbeat events of the batch (parsed in full: they are few).
    pub heartbeats: Vec<Event>,
}

/// `Some` when every line is certainly a valid event of `agent` and there are exactly
/// `declared` of them; `None` when the full check must decide.
pub fn validate_fast(ndjson: &[u8], declared: u32, agent: &str) -> Option<FastVerdict> {
    // UTF-8 once for the whole payload. Reading lines from `&str` then spares serde_json
    // a check per string, and covers the strings the probe skips: serde_json does not
    // check those when reading from bytes, and the full check refuses invalid UTF-8
    // anywhere.
    let ndjson = std::str::from_utf8(ndjson).ok()?;
    let mut verdict = FastVerdict::default();
    let mut count: u64 = 0;
    for range in yagura_shared::payload_line_ranges(ndjson.as_bytes()) {
        let line = &ndjson[range];
        if line.is_empty() {
            continue;
        }
        // serde would also read a struct from a JSON array; only an object is an event.
        if !line.starts_with('{') {
            return None;
        }
        let probe: LineProbe<'_> = serde_json::from_str(line).ok()?;
        if probe.flat_event_id.is_some()
            || probe.flat_agent_id.is_some()
            || probe.flat_dataset.is_some()
        {
            return None;
        }
        chrono::DateTime::parse_from_rfc3339(&probe.timestamp).ok()?;
        Uuid::parse_str(&probe.event.id).ok()?;
        if let Some(claimed) = probe.agent.as_ref().and_then(|a| a.id.as_deref())
            && claimed != agent
        {
            return None;
        }
        if probe.event.dataset.as_deref() == Some(HEARTBEAT_DATASET) {
            verdict
                .heartbeats
                .push(Event::from_json_slice(line.as_bytes()).ok()?);
        }
        count += 1;
    }
    (count == u64::from(declared)).then_some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn line(event: &Event) -> String {
        format!("{}\n", event.to_json_line())
    }

    fn valid(agent: &str) -> Event {
        let mut e = Event::new(Utc::now());
        e.set_str("agent.id", agent);
        e.set_str("message", "hello \"quoted\" \\ text");
        e
    }

    #[test]
    fn accepts_valid_payloads_and_finds_heartbeats() {
        let agent = Uuid::now_v7().to_string();
        let mut beat = valid(&agent);
        beat.set_str("event.dataset", HEARTBEAT_DATASET);
        let payload = format!("{}{}", line(&valid(&agent)), line(&beat));
        let verdict = validate_fast(payload.as_bytes(), 2, &agent).expect("valid");
        assert_eq!(verdict.heartbeats.len(), 1);
        assert!(
            validate_fast(payload.as_bytes(), 3, &agent).is_none(),
            "count"
        );
    }

    #[test]
    fn invalid_utf8_in_a_skipped_field_is_left_to_the_full_check() {
        let agent = Uuid::now_v7().to_string();
        let mut payload = line(&valid(&agent)).into_bytes();
        // Inside the message, a string the probe skips; `\xff` is never UTF-8.
        let at = payload
            .windows(5)
            .position(|w| w == b"hello")
            .expect("message");
        payload[at] = 0xff;
        assert!(Event::from_json_slice(&payload[..payload.len() - 1]).is_err());
        assert!(validate_fast(&payload, 1, &agent).is_none());
    }

    proptest::proptest! {
        /// The fast check may answer "not sure", never "valid" where the full check
        /// refuses: whatever it accepts of a mangled payload, `Event::from_json_slice`
        /// accepts line by line, with no other agent's id.
        #[test]
        fn the_fast_check_accepts_nothing_the_full_check_refuses(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..4,
            )
        ) {
            let agent = "0190b5d2-7f3e-7c4c-9b1a-2c3d4e5f6a7b";
            let mut event = valid(agent);
            event.set_str("event.dataset", "auth");
            event.set("source", serde_json::json!({"ip": "203.0.113.7", "port": 52814}));
            event.set("event.category", serde_json::json!(["authentication"]));
            let mut payload = format!("{}{}", line(&event), line(&valid(agent))).into_bytes();
            for (at, byte) in edits {
                let at = at.index(payload.len());
                payload[at] = byte;
            }
            let lines: Vec<&[u8]> = payload
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            let declared = u32::try_from(lines.len()).expect("two lines at most");
            if validate_fast(&payload, declared, agent).is_some() {
                for one in lines {
                    let full = Event::from_json_slice(one);
                    proptest::prop_assert!(full.is_ok(), "{full:?} for {}", String::from_utf8_lossy(one));
                    let full = full.expect("checked");
                    proptest::prop_assert!(full.agent_id().is_none_or(|id| id == agent));
                }
            }
        }
    }

    #[test]
    fn an_array_is_not_taken_for_an_event() {
        let agent = Uuid::now_v7().to_string();
        let id = Uuid::now_v7();
        let payload = format!("[\"2026-01-01T00:00:00Z\",{{\"id\":\"{id}\"}}]\n");
        assert!(validate_fast(payload.as_bytes(), 1, &agent).is_none());
    }

    #[test]
    fn everything_the_full_check_refuses_is_left_to_it() {
        let agent = Uuid::now_v7().to_string();
        let other = Uuid::now_v7().to_string();
        let mut no_id = valid(&agent);
        no_id.set("event", serde_json::json!({"kind": "event"}));
        let mut bad_ts = valid(&agent);
        bad_ts.set_str("@timestamp", "yesterday");
        let mut flat = valid(&agent);
        flat.set_str("event.id", "not-a-uuid");
        let mut flat_map = flat.as_map().clone();
        flat_map.insert("event.id".into(), serde_json::json!("x"));
        let flat = Event::from_map(flat_map);
        for (name, payload) in [
            ("foreign agent", line(&valid(&other))),
            ("no event id", line(&no_id)),
            ("bad timestamp", line(&bad_ts)),
            ("flat dotted key", line(&flat)),
            ("not json", "{nope\n".to_string()),
            ("array", "[1,2]\n".to_string()),
            (
                "duplicate key",
                format!(
                    "{{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"@timestamp\":\"x\",\"event\":{{\"id\":\"{}\"}}}}\n",
                    Uuid::now_v7()
                ),
            ),
        ] {
            assert!(
                validate_fast(payload.as_bytes(), 1, &agent).is_none(),
                "{name}"
            );
        }
    }
}
