//! The event model: an ECS-style nested JSON object with typed accessors.
//!
//! Events stay schemaless JSON on purpose (parsers, Sigma pipelines and analysts all speak
//! ECS field names, and any ECS field may appear), but the few fields the data path relies
//! on — `@timestamp`, `event.id`, `agent.id` — are validated by [`Event::validate`] and
//! read through typed accessors rather than ad-hoc lookups.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Why an event was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("event is not valid JSON: {0}")]
    Json(String),
}

/// One event: a JSON object with ECS field names, nested (`{"event":{"id":…}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event(Map<String, Value>);

impl Event {
    /// A new event with a fresh UUIDv7 `event.id`, `event.kind: "event"` and the given time.
    pub fn new(timestamp: DateTime<Utc>) -> Self {
        let mut event = Event(Map::new());
        event.set("@timestamp", Value::String(format_timestamp(timestamp)));
        event.set("event.id", Value::String(Uuid::now_v7().to_string()));
        event.set("event.kind", Value::String("event".into()));
        event
    }

    /// Wraps a JSON object as-is; call [`Event::validate`] before trusting it.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Event(map)
    }

    /// Parses and validates one JSON line.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::Json(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(EventError::NotAnObject);
        };
        let event = Event(map);
        event.validate()?;
        Ok(event)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Reads a field by its dotted ECS path (`host.name`). A literal key containing dots
    /// (`{"host.name": …}`, as some JSON logs write it) is found too.
    pub fn get(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(path) {
            return Some(v);
        }
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut current = self.0.get(first)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }

    /// A field's value when it is a string.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }

    /// Sets a field by its dotted ECS path, creating (or replacing non-object) parents.
    pub fn set(&mut self, path: &str, value: Value) {
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { return };
        let mut current = &mut self.0;
        for part in parts {
            let entry = current
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { return };
            current = next;
        }
        current.insert(last.to_string(), value);
    }

    /// Sets a string field.
    pub fn set_str(&mut self, path: &str, value: impl Into<String>) {
        self.set(path, Value::String(value.into()));
    }

    /// Adds a tag to `tags`, once.
    pub fn add_tag(&mut self, tag: &str) {
        let tags = self
            .0
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !tags.is_array() {
            *tags = Value::Array(Vec::new());
        }
        if let Value::Array(list) = tags
            && !list.iter().any(|t| t.as_str() == Some(tag))
        {
            list.push(Value::String(tag.to_string()));
        }
    }

    /// `@timestamp`, parsed.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        let raw = self.get_str("@timestamp")?;
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// `event.id`, parsed.
    pub fn id(&self) -> Option<Uuid> {
        self.get_str("event.id")
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    pub fn dataset(&self) -> Option<&str> {
        self.get_str("event.dataset")
    }

    pub fn action(&self) -> Option<&str> {
        self.get_str("event.action")
    }

    pub fn outcome(&self) -> Option<&str> {
        self.get_str("event.outcome")
    }

    pub fn host_name(&self) -> Option<&str> {
        self.get_str("host.name")
    }

    pub fn agent_id(&self) -> Option<&str> {
        self.get_str("agent.id")
    }

    pub fn message(&self) -> Option<&str> {
        self.get_str("message")
    }

    pub fn original(&self) -> Option<&str> {
        self.get_str("event.original")
    }

    /// Checks the fields the data path relies on: `@timestamp` (RFC 3339) and `event.id`
    /// (a UUID) must be present and well formed; `agent.id`, when present, must be a UUID.
    pub fn validate(&self) -> Result<(), EventError> {
        let text = |path| self.get(path).map(Value::as_str);
        validate_fields(text("@timestamp"), text("event.id"), text("agent.id")).map(|_| ())
    }

    /// One compact JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

/// The rules of [`Event::validate`] on the three fields they read, each `None` when
/// absent and `Some(None)` when not a string: for readers that parse events into another
/// form than [`Event`] (the indexer). Returns the event's time.
pub fn validate_fields(
    timestamp: Option<Option<&str>>,
    id: Option<Option<&str>>,
    agent: Option<Option<&str>>,
) -> Result<DateTime<Utc>, EventError> {
    let ts = timestamp.ok_or(EventError::Missing("@timestamp"))?;
    let ts = ts.ok_or(EventError::Invalid {
        field: "@timestamp",
        reason: "not a string".into(),
    })?;
    let at = DateTime::parse_from_rfc3339(ts).map_err(|e| EventError::Invalid {
        field: "@timestamp",
        reason: e.to_string(),
    })?;
    let id = id.ok_or(EventError::Missing("event.id"))?;
    let id = id.ok_or(EventError::Invalid {
        field: "event.id",
        reason: "not a string".into(),
    })?;
    Uuid::parse_str(id).map_err(|e| EventError::Invalid {
        field: "event.id",
        reason: e.to_string(),
    })?;
    if let Some(agent) = agent
        && agent.is_none_or(|s| Uuid::parse_str(s).is_err())
    {
        return Err(EventError::Invalid {
            field: "agent.id",
            reason: "not a UUID string".into(),
        });
    }
    Ok(at.with_timezone(&Utc))
}

/// RFC 3339 with microseconds and `Z`, the one timestamp format Yagura writes.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_event_is_valid_and_has_uuid_v7() {
        let e = Event::new(Utc::now());
        e.validate().expect("valid");
        assert_eq!(e.id().map(|u| u.get_version_num()), Some(7));
        assert_eq!(e.get_str("event.kind"), Some("event"));
    }

    #[test]
    fn set_and_get_nested_paths() {
        let mut e = Event::new(Utc::now());
        e.set_str("host.name", "web-1");
        e.set_str("log.file.path", "/var/log/auth.log");
        e.set("log.offset", json!(42));
        assert_eq!(e.host_name(), Some("web-1"));
        assert_eq!(e.get("log.offset"), Some(&json!(42)));
        assert_eq!(
            e.as_map()["log"]["file"]["path"],
            json!("/var/log/auth.log")
        );
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let mut e = Event::new(Utc::now());
        e.set_str("message", "hello \"world\" ✓");
        e.add_tag("unparsed");
        e.add_tag("unparsed");
        let back = Event::from_json_slice(e.to_json_line().as_bytes()).expect("parses");
        assert_eq!(back, e);
        assert_eq!(back.as_map()["tags"], json!(["unparsed"]));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let missing =
            Event::from_json_slice(br#"{"event":{"id":"0190b5d2-7f3e-7c4c-9b1a-2c3d4e5f6a7b"}}"#);
        assert_eq!(missing, Err(EventError::Missing("@timestamp")));
        let bad_id = Event::from_json_slice(
            br#"{"@timestamp":"2026-01-01T00:00:00Z","event":{"id":"nope"}}"#,
        );
        assert!(matches!(
            bad_id,
            Err(EventError::Invalid {
                field: "event.id",
                ..
            })
        ));
        assert_eq!(Event::from_json_slice(b"[1]"), Err(EventError::NotAnObject));
        assert!(matches!(
            Event::from_json_slice(b"{"),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn dotted_literal_keys_are_found() {
        let e = Event::from_map(
            json!({"@timestamp":"2026-01-01T00:00:00Z","host.name":"x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(e.host_name(), Some("x"));
    }
}
