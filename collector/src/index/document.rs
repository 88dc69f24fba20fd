//! The tantivy document of an archived event.
//!
//! The indexer's hot path: every event is parsed once into [`Json`], a tree whose strings
//! borrow the archived line, checked with the same rules as [`yagura_shared::Event`],
//! and walked once into its document. A parse into `serde_json::Value` (a B-tree per
//! object, every key and string copied) and a lookup of each typed field by its path cost
//! more than tantivy's own indexing did.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use tantivy::TantivyDocument;
use tantivy::schema::document::{ReferenceValue, ReferenceValueLeaf, Value};
use tantivy::schema::{Field, Schema};
use yagura_shared::EventError;

use super::{
    ARCHIVE_OFFSET, BATCH_AGENT, BATCH_LINE, BATCH_SEQUENCE, INGESTED, IP_FIELDS, JSON_ROOTS,
    KEYWORD_FIELDS, NUMBER_FIELDS, Result, SOURCE, TEXT_FIELDS, TIMESTAMP, field,
};

/// A JSON value whose strings borrow the text they were parsed from (unless escaped).
/// Object members keep their order (and duplicates: a repeated key is indexed with both
/// values, where `_source` read back keeps the last).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The member at dotted `path` of `members`, found as [`yagura_shared::Event::get`]
/// finds it: a literal dotted key first, then the nested path.
fn lookup<'m, 'a>(members: &'m [(Cow<'a, str>, Json<'a>)], path: &str) -> Option<&'m Json<'a>> {
    let member = |members: &'m [(Cow<'a, str>, Json<'a>)], key: &str| {
        members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    };
    if let Some(v) = member(members, path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = member(members, parts.next()?)?;
    for part in parts {
        let Json::Object(inner) = current else {
            return None;
        };
        current = member(inner, part)?;
    }
    Some(current)
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Json<'de>>()? {
            let Json::Str(key) = key else {
                return Err(de::Error::custom("an object key that is not a string"));
            };
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// A borrowed tree is a tantivy value as it is: a JSON root's members go into the
/// document without being copied into an `OwnedValue` first. Strings stay strings (no
/// date detection), as every JSON root is indexed as raw text.
impl<'a, 'de: 'a> Value<'a> for &'a Json<'de> {
    type ArrayIter = std::slice::Iter<'a, Json<'de>>;
    type ObjectIter = Members<'a, 'de>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        match self {
            Json::Null => ReferenceValueLeaf::Null.into(),
            Json::Bool(b) => ReferenceValueLeaf::Bool(*b).into(),
            Json::U64(n) => ReferenceValueLeaf::U64(*n).into(),
            Json::I64(n) => ReferenceValueLeaf::I64(*n).into(),
            Json::F64(n) => ReferenceValueLeaf::F64(*n).into(),
            Json::Str(s) => ReferenceValueLeaf::Str(s).into(),
            Json::Array(items) => ReferenceValue::Array(items.iter()),
            Json::Object(members) => ReferenceValue::Object(Members(members.iter())),
        }
    }
}

/// The members of a [`Json::Object`] as tantivy walks them.
pub(crate) struct Members<'a, 'de>(std::slice::Iter<'a, (Cow<'de, str>, Json<'de>)>);

impl<'a, 'de: 'a> Iterator for Members<'a, 'de> {
    type Item = (&'a str, &'a Json<'de>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_ref(), v))
    }
}

/// An archived event, parsed and checked: its JSON line (stored as `_source` as it is,
/// the agent's signed bytes rather than a re-serialisation), its members and its time.
pub(crate) struct ArchivedEvent<'a> {
    json: &'a str,
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    timestamp: DateTime<Utc>,
}

impl<'a> ArchivedEvent<'a> {
    /// Parses one JSON line and checks it as [`yagura_shared::Event::validate`] does.
    pub fn parse(line: &'a [u8]) -> Result<Self, EventError> {
        let json = std::str::from_utf8(line).map_err(|e| EventError::Json(e.to_string()))?;
        let Json::Object(members) =
            serde_json::from_str(json).map_err(|e| EventError::Json(e.to_string()))?
        else {
            return Err(EventError::NotAnObject);
        };
        let text = |path| lookup(&members, path).map(Json::as_str);
        let timestamp = yagura_shared::event::validate_fields(
            text("@timestamp"),
            text("event.id"),
            text("agent.id"),
        )?;
        Ok(ArchivedEvent {
            json,
            members,
            timestamp,
        })
    }

    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// Sets `event.ingested` (the time the collector received the event's batch),
    /// replacing what the event carried; a non-object `event` is replaced.
    fn set_ingested(&mut self, at: &'a str) {
        let ingested = (Cow::Borrowed("ingested"), Json::Str(Cow::Borrowed(at)));
        match self.members.iter_mut().rev().find(|(k, _)| k == "event") {
            Some((_, Json::Object(event))) => {
                event.retain(|(k, _)| k != "ingested");
                event.push(ingested);
            }
            Some((_, other)) => *other = Json::Object(vec![ingested]),
            None => self
                .members
                .push((Cow::Borrowed("event"), Json::Object(vec![ingested]))),
        }
    }
}

/// How a typed field takes a value (see [`add_typed`]).
#[derive(Clone, Copy)]
enum Typed {
    Keyword(Field),
    Text(Field),
    Ip(Field),
    Number(Field),
}

/// The schema's fields, looked up once: [`document`] runs for every event.
pub(crate) struct DocFields {
    timestamp: Field,
    /// Every typed field by its dotted ECS name: [`document`] walks an event once and
    /// looks each leaf's path up here instead of looking every typed field up in it.
    typed: FxHashMap<&'static str, Typed>,
    roots: FxHashMap<&'static str, Field>,
    source: Field,
    ingested: Field,
    offset: Field,
    sequence: Field,
    agent: Field,
    line: Field,
}

impl DocFields {
    pub fn new(schema: &Schema) -> Result<Self> {
        let mut typed = FxHashMap::default();
        let kinds = [KEYWORD_FIELDS, TEXT_FIELDS, IP_FIELDS, NUMBER_FIELDS];
        let make = [Typed::Keyword, Typed::Text, Typed::Ip, Typed::Number];
        for (names, kind) in kinds.into_iter().zip(make) {
            for name in names {
                typed.insert(*name, kind(field(schema, name)?));
            }
        }
        let roots = JSON_ROOTS
            .iter()
            .map(|n| Ok((*n, field(schema, n)?)))
            .collect::<Result<_>>()?;
        Ok(DocFields {
            timestamp: field(schema, TIMESTAMP)?,
            typed,
            roots,
            source: field(schema, SOURCE)?,
            ingested: field(schema, INGESTED)?,
            offset: field(schema, ARCHIVE_OFFSET)?,
            sequence: field(schema, BATCH_SEQUENCE)?,
            agent: field(schema, BATCH_AGENT)?,
            line: field(schema, BATCH_LINE)?,
        })
    }
}

/// The tantivy document for one event and its provenance. The event is walked once: a
/// leaf whose dotted path is a typed field goes to that field (and is left out of its
/// JSON root, since queries on it go to the typed field only); every other leaf under an
/// ECS field set stays in that set's JSON root. `ingested` is indexed in the `event` root
/// and stored beside `_source` (a hit puts it back into the event).
pub(crate) fn document<'a>(
    fields: &DocFields,
    mut event: ArchivedEvent<'a>,
    ingested: Option<&'a str>,
    origin: &BatchOrigin,
    line: u64,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_date(
        fields.timestamp,
        tantivy::DateTime::from_timestamp_micros(event.timestamp.timestamp_micros()),
    );
    if let Some(at) = ingested {
        doc.add_text(fields.ingested, at);
        event.set_ingested(at);
    }
    let ArchivedEvent { json, members, .. } = event;
    let mut path = String::with_capacity(64);
    for (key, value) in members {
        // A literal dotted key (`{"host.name": …}`) is a typed field too; what a typed
        // field does not take of it is in no JSON root.
        if let Some(typed) = fields.typed.get(key.as_ref()) {
            add_typed(&mut doc, *typed, value);
            continue;
        }
        let (Some(root), Json::Object(object)) = (fields.roots.get(key.as_ref()), value) else {
            continue;
        };
        path.clear();
        path.push_str(&key);
        let members = untyped_members(fields, &mut doc, &mut path, object);
        if !members.is_empty() {
            doc.add_field_value(*root, &Json::Object(members));
        }
    }
    doc.add_text(fields.source, json);
    doc.add_u64(fields.offset, origin.offset);
    doc.add_u64(fields.sequence, origin.sequence);
    doc.add_text(fields.agent, &origin.agent);
    doc.add_u64(fields.line, line);
    doc
}

/// Where the events of one archived batch come from, worked out once per batch rather
/// than once per event (the agent id is formatted as text for its field).
pub(crate) struct BatchOrigin {
    offset: u64,
    sequence: u64,
    agent: String,
}

impl BatchOrigin {
    pub(crate) fn new(offset: u64, batch: &yagura_shared::BatchHeader) -> Self {
        BatchOrigin {
            offset,
            sequence: batch.sequence,
            agent: batch.agent_id.to_string(),
        }
    }
}

/// The members of `object` (at dotted `path`) that no typed field takes, for its JSON
/// root; the typed ones are added to `doc` on the way down.
fn untyped_members<'a>(
    fields: &DocFields,
    doc: &mut TantivyDocument,
    path: &mut String,
    object: Vec<(Cow<'a, str>, Json<'a>)>,
) -> Vec<(Cow<'a, str>, Json<'a>)> {
    // Allocated on the first untyped member: most field sets hold typed fields only.
    let mut members = Vec::new();
    for (key, value) in object {
        let parent = path.len();
        path.push('.');
        path.push_str(&key);
        let untyped = match fields.typed.get(path.as_str()) {
            Some(typed) => add_typed(doc, *typed, value),
            None => Some(value),
        };
        match untyped {
            Some(Json::Object(inner)) => {
                let inner = untyped_members(fields, doc, path, inner);
                members.push((key, Json::Object(inner)));
            }
            Some(other) => members.push((key, other)),
            None => {}
        }
        path.truncate(parent);
    }
    members
}

/// Adds `value` to its typed field; returns it when it does not have the field's type
/// (an IP field holding `"-"`, say), so it stays searchable by its text in its JSON root.
fn add_typed<'a>(doc: &mut TantivyDocument, typed: Typed, value: Json<'a>) -> Option<Json<'a>> {
    match (typed, value) {
        (Typed::Keyword(f), Json::Str(s)) => doc.add_text(f, s),
        (Typed::Keyword(f), Json::Array(items)) => {
            for item in items.iter().filter_map(Json::as_str) {
                doc.add_text(f, item);
            }
        }
        (Typed::Keyword(_), Json::Null) => {}
        (Typed::Keyword(f), other) => doc.add_text(f, compact_text(&other)),
        (Typed::Text(f), Json::Str(s)) => doc.add_text(f, s),
        (Typed::Ip(f), Json::Str(s)) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => doc.add_ip_addr(
                f,
                match ip {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    std::net::IpAddr::V6(v6) => v6,
                },
            ),
            Err(_) => return Some(Json::Str(s)),
        },
        (Typed::Number(f), value) => {
            let number = match &value {
                Json::U64(n) => Some(*n),
                Json::Str(s) => s.parse::<u64>().ok(),
                _ => None,
            };
            match number {
                Some(n) => doc.add_u64(f, n),
                None => return Some(value),
            }
        }
        (Typed::Text(_) | Typed::Ip(_), other) => return Some(other),
    }
    None
}

/// A non-string value of a keyword field as compact JSON text (`true`, `42`, `{"a":1}`).
fn compact_text(value: &Json<'_>) -> String {
    serde_json::to_string(&to_serde(value)).unwrap_or_default()
}

fn to_serde(value: &Json<'_>) -> serde_json::Value {
    match value {
        Json::Null => serde_json::Value::Null,
        Json::Bool(b) => (*b).into(),
        Json::U64(n) => (*n).into(),
        Json::I64(n) => (*n).into(),
        Json::F64(n) => (*n).into(),
        Json::Str(s) => s.as_ref().into(),
        Json::Array(items) => items.iter().map(to_serde).collect(),
        Json::Object(members) => members
            .iter()
            .map(|(k, v)| (k.to_string(), to_serde(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_borrow_the_line_unless_escaped() {
        let line = br#"{"a":"plain","b":"tab\tbed","c":[1,-2,2.5,null,true]}"#;
        let Json::Object(members) = serde_json::from_slice::<Json>(line).expect("parse") else {
            panic!("not an object");
        };
        assert!(matches!(&members[0].1, Json::Str(Cow::Borrowed("plain"))));
        assert!(matches!(&members[1].1, Json::Str(Cow::Owned(s)) if s == "tab\tbed"));
        assert_eq!(
            members[2].1,
            Json::Array(vec![
                Json::U64(1),
                Json::I64(-2),
                Json::F64(2.5),
                Json::Null,
                Json::Bool(true)
            ])
        );
    }

    #[test]
    fn parse_checks_what_event_validate_checks() {
        let id = uuid::Uuid::now_v7().to_string();
        let good = json!({"@timestamp": "2026-11-26T10:00:00Z", "event": {"id": id}});
        let good = good.to_string();
        let event = ArchivedEvent::parse(good.as_bytes()).expect("valid");
        assert_eq!(event.timestamp().to_rfc3339(), "2026-11-26T10:00:00+00:00");
        // A literal dotted key counts, as in `Event::get`.
        let dotted = json!({"@timestamp": "2026-11-26T10:00:00Z", "event.id": id});
        assert!(ArchivedEvent::parse(dotted.to_string().as_bytes()).is_ok());
        for (bad, why) in [
            (json!({"event": {"id": id}}), "@timestamp"),
            (json!({"@timestamp": 5, "event": {"id": id}}), "@timestamp"),
            (
                json!({"@timestamp": "yesterday", "event": {"id": id}}),
                "@timestamp",
            ),
            (json!({"@timestamp": "2026-11-26T10:00:00Z"}), "event.id"),
            (
                json!({"@timestamp": "2026-11-26T10:00:00Z", "event": {"id": "x"}}),
                "event.id",
            ),
            (
                json!({"@timestamp": "2026-11-26T10:00:00Z", "event": {"id": id}, "agent": {"id": 7}}),
                "agent.id",
            ),
        ] {
            let line = bad.to_string();
            let error = ArchivedEvent::parse(line.as_bytes()).err().expect(&line);
            let from_event =
                yagura_shared::Event::from_json_slice(line.as_bytes()).expect_err(&line);
            assert_eq!(error.to_string(), from_event.to_string(), "{line}");
            assert!(error.to_string().contains(why), "{error}");
        }
        assert!(matches!(
            ArchivedEvent::parse(b"[1]"),
            Err(EventError::NotAnObject)
        ));
        assert!(matches!(
            ArchivedEvent::parse(b"{\"a\":"),
            Err(EventError::Json(_))
        ));
        assert!(matches!(
            ArchivedEvent::parse(b"{\"a\":\"\xff\"}"),
            Err(EventError::Json(_))
        ));
    }

    #[test]
    fn ingested_replaces_the_events_own_and_creates_its_set() {
        let id = uuid::Uuid::now_v7().to_string();
        for (event, expected) in [
            (
                json!({"@timestamp": "2026-11-26T10:00:00Z", "event": {"id": id, "ingested": "old"}}),
                json!({"id": id, "ingested": "now"}),
            ),
            (
                json!({"@timestamp": "2026-11-26T10:00:00Z", "event.id": id}),
                json!({"ingested": "now"}),
            ),
        ] {
            let line = event.to_string();
            let mut parsed = ArchivedEvent::parse(line.as_bytes()).expect("valid");
            parsed.set_ingested("now");
            let set = lookup(&parsed.members, "event").expect("event set");
            assert_eq!(to_serde(set), expected);
        }
    }
}
