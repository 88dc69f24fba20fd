//! `json`: one JSON object per line (application logs, ECS loggers).
//!
//! Every field of the object is passed through into the event, nested or dotted
//! (`{"user":{"name":"a"}}` and `{"user.name":"a"}` both give `user.name`), objects merged
//! into what the event already has. `tags` (strings) are added to the event's tags.
//!
//! The fields the tailer owns are never overwritten: `event.id`, `event.original`,
//! `agent.*`, `log.file.*`, `log.offset`, `host.name`, and no value replaces an object
//! with a non-object (`"event": "login"` would erase `event.id`): such values go to
//! `json.<path>` instead, so nothing is lost.
//!
//! The time comes from `JsonOptions::timestamp_field` (default: the first present of
//! `@timestamp`, `timestamp`, `time`, `ts`): an RFC 3339 string, or a number of seconds,
//! milliseconds, microseconds or nanoseconds since the epoch (told apart by size). A
//! time that cannot be read leaves the read time. The message comes from
//! `JsonOptions::message_field` (default: `message`, then `msg`) when it is a string.
//! A line that is not a JSON object is `unparsed`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::time::rfc3339_prefix;
use super::{Fields, JsonOptions};

const PROTECTED: [&str; 6] = [
    "event.id",
    "event.original",
    "agent",
    "log.file",
    "log.offset",
    "host.name",
];

const DEFAULT_TIMESTAMP_FIELDS: [&str; 4] = ["@timestamp", "timestamp", "time", "ts"];
const DEFAULT_MESSAGE_FIELDS: [&str; 2] = ["message", "msg"];

pub(crate) fn parse_line(line: &str, options: &JsonOptions, out: &mut Fields) -> bool {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return false;
    }
    let Ok(object) = serde_json::from_str::<Map<String, Value>>(trimmed) else {
        return false;
    };
    let doc = Fields::new(object);
    let timestamp = match &options.timestamp_field {
        Some(f) => doc.get(f).and_then(read_time),
        None => DEFAULT_TIMESTAMP_FIELDS
            .iter()
            .find_map(|f| doc.get(f))
            .and_then(read_time),
    };
    let message = match &options.message_field {
        Some(f) => doc.get(f).and_then(Value::as_str).map(str::to_string),
        None => DEFAULT_MESSAGE_FIELDS
            .iter()
            .find_map(|f| doc.get(f).and_then(Value::as_str))
            .map(str::to_string),
    };
    let mut moved = Vec::new();
    for (key, value) in doc.into_map() {
        if key == "@timestamp" {
            continue;
        }
        if key == "tags" {
            merge_tags(out, value);
            continue;
        }
        merge(out.map_mut(), &key, &key, value, &mut moved);
    }
    for (path, value) in moved {
        out.set(&format!("json.{path}"), value);
    }
    if let Some(t) = timestamp {
        out.timestamp(t);
    }
    if let Some(m) = message {
        out.set("message", Value::String(m));
    }
    true
}

fn merge_tags(out: &mut Fields, value: Value) {
    let tags = match value {
        Value::Array(list) => list,
        Value::String(s) => vec![Value::String(s)],
        other => {
            out.set("json.tags", other);
            return;
        }
    };
    let map = out.map_mut();
    let entry = map
        .entry("tags")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    if let Value::Array(existing) = entry {
        for tag in tags {
            if tag.is_string() && !existing.contains(&tag) {
                existing.push(tag);
            }
        }
    }
}

fn is_protected(path: &str) -> bool {
    PROTECTED
        .iter()
        .any(|p| path == *p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'.')))
}

/// Merges `value` at `key` (which may be dotted) into `map`; `path` is the full dotted
/// path, for protection checks and for the `json.` fallback.
fn merge(
    map: &mut Map<String, Value>,
    key: &str,
    path: &str,
    value: Value,
    moved: &mut Vec<(String, Value)>,
) {
    if let Some((head, rest)) = key.split_once('.')
        && !head.is_empty()
    {
        match map.get_mut(head) {
            Some(Value::Object(child)) => merge(child, rest, path, value, moved),
            Some(_) => moved.push((path.to_string(), value)),
            None => {
                let mut child = Map::new();
                merge(&mut child, rest, path, value, moved);
                if !child.is_empty() {
                    map.insert(head.to_string(), Value::Object(child));
                }
            }
        }
        return;
    }
    if is_protected(path) {
        moved.push((path.to_string(), value));
        return;
    }
    match (map.get_mut(key), value) {
        (Some(Value::Object(existing)), Value::Object(incoming)) => {
            for (k, v) in incoming {
                let child_path = format!("{path}.{k}");
                merge(existing, &k, &child_path, v, moved);
            }
        }
        (Some(Value::Object(_)), other) => moved.push((path.to_string(), other)),
        (_, Value::Object(incoming)) => {
            // A new object: still walk it, so protected paths inside are caught.
            let mut child = Map::new();
            for (k, v) in incoming {
                let child_path = format!("{path}.{k}");
                merge(&mut child, &k, &child_path, v, moved);
            }
            map.insert(key.to_string(), Value::Object(child));
        }
        (_, other) => {
            map.insert(key.to_string(), other);
        }
    }
}

/// An RFC 3339 string, or epoch seconds/ms/µs/ns.
fn read_time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => {
            let (t, used) = rfc3339_prefix(s)?;
            (used == s.len()).then_some(t)
        }
        Value::Number(n) => {
            let f = n.as_f64()?;
            if !f.is_finite() || f < 0.0 {
                return None;
            }
            let nanos = if f < 1e11 {
                f * 1e9
            } else if f < 1e14 {
                f * 1e6
            } else if f < 1e17 {
                f * 1e3
            } else {
                f
            };
            if nanos > 9.2e18 {
                return None;
            }
            Some(DateTime::from_timestamp_nanos(nanos as i64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Fields {
        let Value::Object(map) = json!({"event": {"id": "E", "original": "O"}, "host": {"name": "agent-host"}, "agent": {"id": "A"}})
        else {
            unreachable!()
        };
        Fields::new(map)
    }

    #[test]
    fn tailer_fields_are_protected() {
        let mut out = base();
        assert!(parse_line(
            r#"{"event":{"id":"x","action":"login"},"host":"h","agent.id":"z","user.name":"u","level":"info"}"#,
            &JsonOptions::default(),
            &mut out
        ));
        assert_eq!(out.get("event.id"), Some(&json!("E")));
        assert_eq!(out.get("event.action"), Some(&json!("login")));
        assert_eq!(out.get("agent.id"), Some(&json!("A")));
        assert_eq!(out.get("host.name"), Some(&json!("agent-host")));
        assert_eq!(out.get("json.host"), Some(&json!("h")));
        assert_eq!(out.get("json.event.id"), Some(&json!("x")));
        assert_eq!(out.get("json.agent.id"), Some(&json!("z")));
        assert_eq!(out.get("user.name"), Some(&json!("u")));
    }

    #[test]
    fn epoch_times() {
        let s = read_time(&json!(1_700_000_000)).expect("s");
        assert_eq!(read_time(&json!(1_700_000_000_000u64)), Some(s));
        assert_eq!(read_time(&json!(1_700_000_000_000_000u64)), Some(s));
        assert_eq!(read_time(&json!(-1)), None);
    }
}
