//! `json`: one JSON object per line (application logs, ECS loggers).
//!
//! Every field of the object is passed through into the event, nested or dotted
//! (`{"user":{"name":"a"}}` and `{"user.name":"a"}` both give `user.name`), objects merged
//! into what the event already has, in the order of the document (a later member wins).
//! The line is merged while it is read, without building a document tree; a line that
//! turns out not to be one whole JSON object leaves the event as it was. `tags` (strings)
//! are added to the event's tags.
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
use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use yagura_shared::Occupant;

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
    let time_fields: Vec<&str> = match &options.timestamp_field {
        Some(f) => vec![f.as_str()],
        None => DEFAULT_TIMESTAMP_FIELDS.to_vec(),
    };
    let message_fields: Vec<&str> = match &options.message_field {
        Some(f) => vec![f.as_str()],
        None => DEFAULT_MESSAGE_FIELDS.to_vec(),
    };
    let mark = out.event.mark();
    let mut sink = Sink {
        times: vec![None; time_fields.len()],
        messages: vec![None; message_fields.len()],
        time_fields,
        message_fields,
        out,
        path: String::with_capacity(64),
        moved: Vec::new(),
    };
    let mut reader = serde_json::Deserializer::from_str(trimmed);
    let read = Member {
        sink: &mut sink,
        top: true,
    }
    .deserialize(&mut reader)
    .and_then(|()| reader.end());
    if read.is_err() {
        // Nothing of a line that is not one whole JSON object is kept.
        sink.out.event.rollback(mark);
        return false;
    }
    let Sink {
        out,
        moved,
        times,
        messages,
        ..
    } = sink;
    for (path, value) in moved {
        out.set(&format!("json.{path}"), value);
    }
    // The first time field present is the one read, as it is the one the user meant.
    if let Some(t) = times
        .into_iter()
        .flatten()
        .next()
        .as_ref()
        .and_then(read_time)
    {
        out.timestamp(t);
    }
    if let Some(m) = messages.into_iter().flatten().next() {
        out.str("message", &m);
    }
    true
}

/// Where the members of the document go while it is read: each value is merged into the
/// event as soon as it is read (no document tree is built), at `path`.
struct Sink<'a> {
    out: &'a mut Fields,
    path: String,
    /// Values that may not be written where they are (see the module docs): written under
    /// `json.` once the whole line has been read.
    moved: Vec<(String, Value)>,
    time_fields: Vec<&'a str>,
    times: Vec<Option<Value>>,
    message_fields: Vec<&'a str>,
    messages: Vec<Option<String>>,
}

impl Sink<'_> {
    /// Keeps the value when it is one of the time or message fields.
    fn capture(&mut self, path: &str, value: &Value) {
        self.capture_time(path, || value.clone());
        if let Value::String(text) = value {
            self.capture_message(path, text);
        }
    }

    /// Keeps the value (made only when needed) when `path` is one of the time fields.
    fn capture_time(&mut self, path: &str, value: impl Fn() -> Value) {
        for (field, slot) in self.time_fields.iter().zip(&mut self.times) {
            if slot.is_none() && *field == path {
                *slot = Some(value());
            }
        }
    }

    fn capture_message(&mut self, path: &str, text: &str) {
        for (field, slot) in self.message_fields.iter().zip(&mut self.messages) {
            if slot.is_none() && *field == path {
                *slot = Some(text.to_string());
            }
        }
    }

    /// [`Sink::capture`] for the members of an object moved whole, at `path`.
    fn capture_within(&mut self, path: &str, value: &Value) {
        let fields: Vec<(String, Value)> = self
            .time_fields
            .iter()
            .chain(&self.message_fields)
            .filter_map(|field| {
                let rest = field.strip_prefix(path)?.strip_prefix('.')?;
                let found = lookup(value.as_object()?, rest)?;
                Some((field.to_string(), found.clone()))
            })
            .collect();
        for (field, found) in fields {
            self.capture(&field, &found);
        }
    }

    /// A value that is not an object, at `self.path`.
    fn leaf(&mut self, value: Value) {
        let path = std::mem::take(&mut self.path);
        self.capture(&path, &value);
        if self.writable_leaf(&path) {
            self.out.set(&path, value);
        } else {
            self.moved.push((path.clone(), value));
        }
        self.path = path;
    }

    /// A string, at `self.path`: written without building a JSON value.
    fn leaf_str(&mut self, text: &str) {
        let path = std::mem::take(&mut self.path);
        self.capture_message(&path, text);
        self.capture_time(&path, || Value::String(text.to_string()));
        if self.writable_leaf(&path) {
            self.out.event.set_str_at(&path, text);
        } else {
            self.moved
                .push((path.clone(), Value::String(text.to_string())));
        }
        self.path = path;
    }

    fn writable_leaf(&self, path: &str) -> bool {
        matches!(
            self.out.event.occupant(path),
            Occupant::Free | Occupant::Value
        ) && !is_protected(path)
    }
}

/// The value at the sink's path (`top`: the document itself).
struct Member<'s, 'a> {
    sink: &'s mut Sink<'a>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Member<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        if self.top {
            reader.deserialize_map(self)
        } else {
            reader.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Member<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.leaf(Value::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.leaf(Value::from(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.leaf(Value::from(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.leaf(Value::from(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.leaf_str(v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.sink.leaf(Value::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.sink.leaf(value);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.sink;
        if self.top {
            while let Some(MemberName(name)) = map.next_key()? {
                sink.path.clear();
                sink.path.push_str(&name);
                match &*name {
                    "@timestamp" => {
                        let value: Value = map.next_value()?;
                        sink.capture("@timestamp", &value);
                    }
                    "tags" => {
                        let value: Value = map.next_value()?;
                        merge_tags(sink.out, value);
                    }
                    _ => map.next_value_seed(Member {
                        sink: &mut *sink,
                        top: false,
                    })?,
                }
            }
            return Ok(());
        }
        let occupant = sink.out.event.occupant(&sink.path);
        if occupant == Occupant::ValueAbove || is_protected(&sink.path) {
            let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            let path = sink.path.clone();
            sink.capture_within(&path, &value);
            sink.moved.push((path, value));
            return Ok(());
        }
        if occupant == Occupant::Value {
            // A new object replaces a value, as in the document.
            sink.out.set(&sink.path, Value::Object(Map::new()));
        }
        let len = sink.path.len();
        let mut empty = true;
        while let Some(MemberName(name)) = map.next_key()? {
            empty = false;
            sink.path.push('.');
            sink.path.push_str(&name);
            map.next_value_seed(Member {
                sink: &mut *sink,
                top: false,
            })?;
            sink.path.truncate(len);
        }
        if empty && occupant == Occupant::Free {
            sink.out.set(&sink.path, Value::Object(Map::new()));
        }
        Ok(())
    }
}

/// A member name, borrowed from the line when it has no escapes.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(reader: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = MemberName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v.to_string())))
            }
        }
        reader.deserialize_str(Name)
    }
}

/// A member of an object by dotted path, walking nested objects.
fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut current = doc;
    let mut rest = path;
    loop {
        match rest.split_once('.') {
            None => return current.get(rest),
            Some((head, tail)) => {
                current = current.get(head)?.as_object()?;
                rest = tail;
            }
        }
    }
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
    let mut existing = match out.event.get_value("tags") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    for tag in tags {
        if tag.is_string() && !existing.contains(&tag) {
            existing.push(tag);
        }
    }
    out.set("tags", Value::Array(existing));
}

fn is_protected(path: &str) -> bool {
    PROTECTED
        .iter()
        .any(|p| path == *p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'.')))
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
    use yagura_shared::FlatEvent;

    fn base() -> Fields {
        let Value::Object(map) = json!({"event": {"id": "E", "original": "O"}, "host": {"name": "agent-host"}, "agent": {"id": "A"}})
        else {
            unreachable!()
        };
        Fields {
            event: FlatEvent::from_event(&yagura_shared::Event::from_map(map)),
        }
    }

    #[test]
    fn tailer_fields_are_protected() {
        let mut out = base();
        assert!(parse_line(
            r#"{"event":{"id":"x","action":"login"},"host":"h","agent.id":"z","user.name":"u","level":"info"}"#,
            &JsonOptions::default(),
            &mut out
        ));
        assert_eq!(out.get("event.id"), Some(json!("E")));
        assert_eq!(out.get("event.action"), Some(json!("login")));
        assert_eq!(out.get("agent.id"), Some(json!("A")));
        assert_eq!(out.get("host.name"), Some(json!("agent-host")));
        assert_eq!(out.get("json.host"), Some(json!("h")));
        assert_eq!(out.get("json.event.id"), Some(json!("x")));
        assert_eq!(out.get("json.agent.id"), Some(json!("z")));
        assert_eq!(out.get("user.name"), Some(json!("u")));
    }

    #[test]
    fn a_line_broken_halfway_leaves_the_event_as_it_was() {
        let mut out = base();
        let before = out.get("event");
        for line in [
            r#"{"user":{"name":"u"},"tags":["x"],"level":"info","#,
            r#"{"user":{"name":"u"}} trailing"#,
            r#"{"a":{"b":{"c":1}},"d":[1,2"#,
        ] {
            assert!(
                !parse_line(line, &JsonOptions::default(), &mut out),
                "{line}"
            );
            assert_eq!(out.get("user"), None);
            assert_eq!(out.get("tags"), None);
            assert_eq!(out.get("a"), None);
            assert_eq!(out.get("event"), before);
        }
    }

    #[test]
    fn time_and_message_inside_a_moved_object_are_still_read() {
        let mut out = base();
        let options = JsonOptions {
            timestamp_field: Some("agent.time".into()),
            message_field: Some("agent.msg".into()),
        };
        assert!(parse_line(
            r#"{"agent":{"time":"2026-11-24T10:00:00Z","msg":"hello"}}"#,
            &options,
            &mut out
        ));
        assert_eq!(
            out.get("@timestamp"),
            Some(json!("2026-11-24T10:00:00.000000Z"))
        );
        assert_eq!(out.get("message"), Some(json!("hello")));
        assert_eq!(out.get("json.agent.msg"), Some(json!("hello")));
    }

    #[test]
    fn epoch_times() {
        let s = read_time(&json!(1_700_000_000)).expect("s");
        assert_eq!(read_time(&json!(1_700_000_000_000u64)), Some(s));
        assert_eq!(read_time(&json!(1_700_000_000_000_000u64)), Some(s));
        assert_eq!(read_time(&json!(-1)), None);
    }
}
