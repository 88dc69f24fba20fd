//! [`FlatEvent`]: an event under construction, as a flat list of dotted ECS paths written
//! straight to one NDJSON line.
//!
//! [`Event`] is a nested `serde_json::Map`: every field written costs a `String` key, a
//! value and B-tree nodes at each level, and a line of `linux-auth` writes about 25 fields
//! into 8 nested objects. That is most of the agent's per-line cost. A `FlatEvent` keeps
//! `&'static` keys (the ECS names parsers write are literals), all text in one reusable
//! arena, and values as small enums; after the first few lines it allocates nothing.
//! The nesting is produced only when the line is written out ([`FlatEvent::write_json`]),
//! by sorting the paths so that every object's members are contiguous.
//!
//! It behaves exactly like [`Event::set`] applied in the same order (a later write to
//! `a.b` replaces a value at `a`, a later write to `a` replaces the object `a`), and its
//! JSON is byte-for-byte what the equivalent [`Event`] serializes to (members sorted);
//! the property test below holds it to that. Writes are O(1): conflicts between paths are
//! resolved once, when the event is written out.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::Event;

/// A range of [`FlatEvent`]'s text arena.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Static(&'static str),
    Arena(Span),
}

#[derive(Debug, Clone, Copy)]
enum Val {
    Str(Span),
    I64(i64),
    U64(u64),
    Bool(bool),
    /// A list of strings: a range of `FlatEvent::list_items`.
    Strs {
        start: u32,
        len: u32,
    },
    /// Any other JSON value (arrays of objects, numbers with fractions, empty objects):
    /// an index into `FlatEvent::json`. Never a non-empty object (those are flattened).
    Json(u32),
    /// Clears the subtree at this path (an object written over it); never written out.
    Cleared,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    key: Key,
    val: Val,
}

/// A field's value as read back with [`FlatEvent::get`]; lists of strings are read with
/// [`FlatEvent::get_value`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    Str(&'a str),
    I64(i64),
    U64(u64),
    Bool(bool),
    Json(&'a Value),
}

/// An event as flat dotted paths; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct FlatEvent {
    arena: String,
    fields: Vec<Field>,
    list_items: Vec<Span>,
    json: Vec<Value>,
    /// Scratch for working out a shape: the live fields, sorted.
    order: Vec<(u64, u32)>,
    /// Layouts of recently written sequences of paths.
    shapes: Vec<Shape>,
    next_evicted: usize,
}

/// How many layouts a [`FlatEvent`] keeps: a source's parser emits a handful of kinds of
/// events (an sshd failure, an accepted login, a sudo command …), each with its own.
const MAX_SHAPES: usize = 32;

/// The layout of one sequence of paths: `punctuation` is the JSON text between values
/// (braces, commas and keys) and `values` says, in order, where each value goes and which
/// field supplies it.
#[derive(Debug, Clone)]
struct Shape {
    hash: u64,
    paths: Vec<ShapePath>,
    punctuation: Vec<u8>,
    values: Vec<(u32, u32)>,
}

/// One path of a [`Shape`]'s sequence, and whether that write cleared an object.
#[derive(Debug, Clone)]
enum ShapePath {
    Static(&'static str, bool),
    Text(Box<str>, bool),
}

impl FlatEvent {
    pub fn new() -> Self {
        FlatEvent::default()
    }

    /// Empties the event, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.fields.clear();
        self.list_items.clear();
        self.json.clear();
    }

    /// A point to return to with [`FlatEvent::rollback`].
    pub fn mark(&self) -> Mark {
        Mark {
            arena: self.arena.len(),
            fields: self.fields.len(),
            list_items: self.list_items.len(),
            json: self.json.len(),
        }
    }

    /// Forgets every write made since `mark` (a parser that fails halfway leaves nothing).
    pub fn rollback(&mut self, mark: Mark) {
        self.arena.truncate(mark.arena);
        self.fields.truncate(mark.fields);
        self.list_items.truncate(mark.list_items);
        self.json.truncate(mark.json);
    }

    /// Whether no field was written since the last [`FlatEvent::clear`].
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// What [`Event::new`] writes: `@timestamp`, a fresh UUIDv7 `event.id` and
    /// `event.kind: "event"`.
    pub fn start(&mut self, timestamp: DateTime<Utc>) {
        self.set_timestamp("@timestamp", timestamp);
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = Uuid::now_v7().hyphenated().encode_lower(&mut buf);
        self.set_str("event.id", id);
        self.set_str("event.kind", "event");
    }

    fn push_text(&mut self, text: &str) -> Span {
        let start = self.arena.len();
        self.arena.push_str(text);
        Span {
            start: start as u32,
            len: text.len() as u32,
        }
    }

    fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }

    fn key(&self, key: Key) -> &str {
        match key {
            Key::Static(s) => s,
            Key::Arena(span) => self.text(span),
        }
    }

    fn push(&mut self, key: Key, val: Val) {
        self.fields.push(Field { key, val });
    }

    /// The arena only grows within one event; an event larger than 4 GiB of text cannot
    /// be built (the agent caps lines far below that), so its further text is dropped.
    fn fits(&self, extra: usize) -> bool {
        self.arena.len() + extra <= u32::MAX as usize
    }

    fn key_of(&mut self, path: &str) -> Key {
        Key::Arena(self.push_text(path))
    }

    /// Sets a string field under a literal path.
    pub fn set_str(&mut self, path: &'static str, value: &str) {
        if !self.fits(value.len()) {
            return;
        }
        let span = self.push_text(value);
        self.push(Key::Static(path), Val::Str(span));
    }

    /// Sets a string field under a path built at run time.
    pub fn set_str_at(&mut self, path: &str, value: &str) {
        if !self.fits(path.len() + value.len()) {
            return;
        }
        let key = self.key_of(path);
        let span = self.push_text(value);
        self.push(key, Val::Str(span));
    }

    pub fn set_i64(&mut self, path: &'static str, value: i64) {
        self.push(Key::Static(path), Val::I64(value));
    }

    pub fn set_u64(&mut self, path: &'static str, value: u64) {
        self.push(Key::Static(path), Val::U64(value));
    }

    pub fn set_bool(&mut self, path: &'static str, value: bool) {
        self.push(Key::Static(path), Val::Bool(value));
    }

    /// Sets a list of strings (ECS `event.category`, `event.type`, …).
    pub fn set_strs(&mut self, path: &'static str, values: &[&str]) {
        if !self.fits(values.iter().map(|v| v.len()).sum()) {
            return;
        }
        let start = self.list_items.len() as u32;
        for value in values {
            let span = self.push_text(value);
            self.list_items.push(span);
        }
        self.push(
            Key::Static(path),
            Val::Strs {
                start,
                len: values.len() as u32,
            },
        );
    }

    /// Sets a timestamp as RFC 3339 UTC with microseconds, as [`crate::event::format_timestamp`].
    pub fn set_timestamp(&mut self, path: &'static str, t: DateTime<Utc>) {
        let mut buf = [0u8; 27];
        let text = format_timestamp_into(t, &mut buf);
        self.set_str(path, text);
    }

    /// Sets any JSON value under a run-time path. An object is written as its members
    /// (replacing whatever was at `path`, as [`Event::set`] does).
    pub fn set_value(&mut self, path: &str, value: Value) {
        match value {
            Value::String(s) => self.set_str_at(path, &s),
            Value::Bool(b) => {
                let key = self.key_of(path);
                self.push(key, Val::Bool(b));
            }
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                let key = self.key_of(path);
                let val = match n.as_i64() {
                    Some(i) => Val::I64(i),
                    None => Val::U64(n.as_u64().unwrap_or_default()),
                };
                self.push(key, val);
            }
            Value::Object(map) if !map.is_empty() => {
                let key = self.key_of(path);
                self.push(key, Val::Cleared);
                let mut child = String::with_capacity(path.len() + 16);
                for (name, member) in map {
                    child.clear();
                    child.push_str(path);
                    child.push('.');
                    child.push_str(&name);
                    self.set_value(&child, member);
                }
            }
            other => {
                let key = self.key_of(path);
                let index = self.json.len() as u32;
                self.json.push(other);
                self.push(key, Val::Json(index));
            }
        }
    }

    /// Adds a tag to `tags`, once (as [`Event::add_tag`]).
    pub fn add_tag(&mut self, tag: &str) {
        let mut tags = match self.get_value("tags") {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        if !tags.iter().any(|t| t.as_str() == Some(tag)) {
            tags.push(Value::String(tag.to_string()));
        }
        self.set_value("tags", Value::Array(tags));
    }

    /// The latest write that decides `path`: the write to `path` itself, or a later one
    /// to an ancestor or descendant that replaced it.
    fn latest_touching(&self, path: &str) -> Option<&Field> {
        self.fields
            .iter()
            .rev()
            .find(|f| paths_overlap(self.key(f.key), path))
    }

    /// A leaf field's value, borrowed (`None` for objects, for lists of strings — see
    /// [`FlatEvent::get_value`] — and for what a later write replaced).
    pub fn get(&self, path: &str) -> Option<FieldRef<'_>> {
        let field = self.latest_touching(path)?;
        if self.key(field.key) != path {
            return None;
        }
        Some(match field.val {
            Val::Str(span) => FieldRef::Str(self.text(span)),
            Val::I64(i) => FieldRef::I64(i),
            Val::U64(u) => FieldRef::U64(u),
            Val::Bool(b) => FieldRef::Bool(b),
            Val::Json(i) => FieldRef::Json(self.json.get(i as usize)?),
            Val::Strs { .. } | Val::Cleared => return None,
        })
    }

    /// A leaf field's value as JSON.
    pub fn get_value(&self, path: &str) -> Option<Value> {
        let field = self.latest_touching(path)?;
        if self.key(field.key) != path {
            return None;
        }
        self.value_of(field.val)
    }

    /// A leaf string field.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        match self.get(path)? {
            FieldRef::Str(s) => Some(s),
            _ => None,
        }
    }

    fn value_of(&self, val: Val) -> Option<Value> {
        Some(match val {
            Val::Str(span) => Value::String(self.text(span).to_string()),
            Val::I64(i) => Value::from(i),
            Val::U64(u) => Value::from(u),
            Val::Bool(b) => Value::Bool(b),
            Val::Strs { start, len } => Value::Array(
                self.list(start, len)
                    .iter()
                    .map(|s| Value::String(self.text(*s).to_string()))
                    .collect(),
            ),
            Val::Json(i) => self.json.get(i as usize)?.clone(),
            Val::Cleared => return None,
        })
    }

    fn list(&self, start: u32, len: u32) -> &[Span] {
        let start = start as usize;
        self.list_items
            .get(start..start + len as usize)
            .unwrap_or(&[])
    }

    /// What a write of a leaf at `path` would meet, as [`Event`] would see it now.
    pub fn occupant(&self, path: &str) -> Occupant {
        let Some(field) = self.latest_touching(path) else {
            return Occupant::Free;
        };
        let key = self.key(field.key);
        if matches!(field.val, Val::Cleared) {
            // A fresh object at `key`: `path` itself or an ancestor of it was just
            // emptied; a write of the object's members follows.
            return if key == path {
                Occupant::Object
            } else {
                Occupant::Free
            };
        }
        if key == path {
            Occupant::Value
        } else if contains_path(path, key) {
            Occupant::Object
        } else {
            Occupant::ValueAbove
        }
    }

    /// Writes the event as one compact JSON object (no newline), members sorted.
    ///
    /// Events of one source mostly repeat a few sequences of paths, so the layout of a
    /// sequence (which fields are live, in what order, and the keys and braces between
    /// their values) is worked out once and kept in a small cache of [`Shape`]s; writing
    /// is then one copy of punctuation and one value per field.
    pub fn write_json(&mut self, out: &mut Vec<u8>) {
        let hash = self.shape_hash();
        let found = self
            .shapes
            .iter()
            .position(|shape| shape.hash == hash && self.has_shape(shape));
        let index = match found {
            Some(index) => index,
            None => {
                let shape = self.build_shape(hash);
                if self.shapes.len() < MAX_SHAPES {
                    self.shapes.push(shape);
                    self.shapes.len() - 1
                } else {
                    self.next_evicted = (self.next_evicted + 1) % MAX_SHAPES;
                    self.shapes[self.next_evicted] = shape;
                    self.next_evicted
                }
            }
        };
        let shape = &self.shapes[index];
        out.reserve(self.arena.len() + shape.punctuation.len());
        let mut from = 0;
        for &(until, field) in &shape.values {
            out.extend_from_slice(&shape.punctuation[from..until as usize]);
            from = until as usize;
            if let Some(field) = self.fields.get(field as usize) {
                self.write_val(out, field.val);
            }
        }
        out.extend_from_slice(&shape.punctuation[from..]);
    }

    /// A hash of the sequence of paths (static paths by address) and of which are cleared.
    fn shape_hash(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ self.fields.len() as u64;
        let mut mix = |v: u64| hash = (hash ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
        for field in &self.fields {
            match field.key {
                Key::Static(s) => mix(s.as_ptr() as u64 ^ ((s.len() as u64) << 48)),
                Key::Arena(span) => {
                    for chunk in self.text(span).as_bytes().chunks(8) {
                        let mut word = [0u8; 8];
                        word[..chunk.len()].copy_from_slice(chunk);
                        mix(u64::from_le_bytes(word));
                    }
                    mix(span.len as u64);
                }
            }
            mix(u64::from(matches!(field.val, Val::Cleared)));
        }
        hash
    }

    fn has_shape(&self, shape: &Shape) -> bool {
        shape.paths.len() == self.fields.len()
            && self.fields.iter().zip(&shape.paths).all(|(field, path)| {
                let cleared = matches!(field.val, Val::Cleared);
                match (field.key, path) {
                    (Key::Static(s), ShapePath::Static(p, c)) => {
                        std::ptr::eq(s, *p) && cleared == *c
                    }
                    (Key::Arena(span), ShapePath::Text(p, c)) => {
                        self.text(span) == &**p && cleared == *c
                    }
                    _ => false,
                }
            })
    }

    /// Works out the layout of this event's sequence of paths.
    fn build_shape(&mut self, hash: u64) -> Shape {
        let mut order = std::mem::take(&mut self.order);
        self.live_fields_sorted(&mut order);
        let mut out = Vec::with_capacity(32 * order.len() + 2);
        let mut values = Vec::with_capacity(order.len());
        out.push(b'{');
        // The path of the innermost open object (`None`: the event itself; `Some("")` is
        // a member named "") and how many objects are open.
        let mut open: Option<&str> = None;
        let mut depth = 0usize;
        let mut first = true;
        for &(_, index) in &order {
            let Some(field) = self.fields.get(index as usize) else {
                continue;
            };
            let key = self.key(field.key);
            let (parent, leaf) = match key.rfind('.') {
                Some(dot) => (Some(&key[..dot]), &key[dot + 1..]),
                None => (None, key),
            };
            let common = common_segments(open, parent);
            while depth > common {
                out.push(b'}');
                depth -= 1;
                first = false;
            }
            if let Some(parent) = parent {
                let mut rest = skip_segments(parent, common);
                while let Some(rest_path) = rest {
                    let (segment, next) = match rest_path.find('.') {
                        Some(dot) => (&rest_path[..dot], Some(&rest_path[dot + 1..])),
                        None => (rest_path, None),
                    };
                    if !first {
                        out.push(b',');
                    }
                    write_json_str(&mut out, segment);
                    out.extend_from_slice(b":{");
                    depth += 1;
                    first = true;
                    rest = next;
                }
            }
            open = parent;
            if !first {
                out.push(b',');
            }
            write_json_str(&mut out, leaf);
            out.push(b':');
            values.push((out.len() as u32, index));
            first = false;
        }
        out.extend(std::iter::repeat_n(b'}', depth + 1));
        let paths = self
            .fields
            .iter()
            .map(|field| {
                let cleared = matches!(field.val, Val::Cleared);
                match field.key {
                    Key::Static(s) => ShapePath::Static(s, cleared),
                    Key::Arena(span) => ShapePath::Text(self.text(span).into(), cleared),
                }
            })
            .collect();
        self.order = order;
        Shape {
            hash,
            paths,
            punctuation: out,
            values,
        }
    }

    /// Writes the event and a newline.
    pub fn write_json_line(&mut self, out: &mut Vec<u8>) {
        self.write_json(out);
        out.push(b'\n');
    }

    fn write_val(&self, out: &mut Vec<u8>, val: Val) {
        match val {
            Val::Str(span) => write_json_str(out, self.text(span)),
            Val::I64(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            Val::U64(u) => out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            Val::Strs { start, len } => {
                out.push(b'[');
                for (i, span) in self.list(start, len).iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, self.text(*span));
                }
                out.push(b']');
            }
            Val::Json(i) => match self.json.get(i as usize) {
                Some(value) => {
                    // Writing a `Value` into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, value);
                }
                None => out.extend_from_slice(b"null"),
            },
            Val::Cleared => out.extend_from_slice(b"null"),
        }
    }

    /// Fills `order` with the fields a reader would see, sorted so that the members of
    /// every object are contiguous: paths compared byte by byte with `.` lowest, which is
    /// also the member order of a nested `serde_json::Map`. A field is live when no later
    /// write touched its path, an ancestor or a descendant of it. Each entry carries the
    /// first 8 bytes of its path as a number, so most comparisons are one integer compare.
    fn live_fields_sorted(&self, order: &mut Vec<(u64, u32)>) {
        order.clear();
        order.extend(
            self.fields
                .iter()
                .enumerate()
                .map(|(i, f)| (sort_prefix(self.key(f.key)), i as u32)),
        );
        order.sort_unstable_by(|&(pa, a), &(pb, b)| {
            pa.cmp(&pb).then_with(|| {
                let ka = self.key(self.fields[a as usize].key);
                let kb = self.key(self.fields[b as usize].key);
                compare_paths(ka, kb).then(a.cmp(&b))
            })
        });
        // In this order, the writes touching a path are its ancestors (earlier), the
        // writes to the same path (adjacent) and its descendants (right after). The stack
        // holds the positions of the earlier paths that contain the current one.
        let mut ancestors: Vec<usize> = Vec::new();
        for position in 0..order.len() {
            let index = order[position].1;
            let field = self.fields[index as usize];
            let key = self.key(field.key);
            while let Some(&top) = ancestors.last() {
                let top_key = self.key(self.fields[order[top].1 as usize].key);
                if contains_path(top_key, key) {
                    break;
                }
                ancestors.pop();
            }
            let mut live = !matches!(field.val, Val::Cleared);
            for &above in &ancestors {
                if order[above].1 > index {
                    live = false;
                } else {
                    // Replaced by this later write: marked by clearing its path number.
                    order[above].0 = u64::MAX;
                }
            }
            if !live {
                order[position].0 = u64::MAX;
            }
            ancestors.push(position);
        }
        // A field's path number is never u64::MAX: its first byte is ranked below 0xff.
        order.retain(|&(prefix, _)| prefix != u64::MAX);
    }

    /// The event as an [`Event`] (through its JSON, so both agree by construction).
    pub fn to_event(&mut self) -> Event {
        let mut json = Vec::with_capacity(self.arena.len() * 2 + 64);
        self.write_json(&mut json);
        match serde_json::from_slice::<Map<String, Value>>(&json) {
            Ok(map) => Event::from_map(map),
            Err(_) => Event::from_map(Map::new()),
        }
    }

    /// The fields of `event`, in its member order (objects flattened into paths).
    pub fn from_event(event: &Event) -> FlatEvent {
        let mut flat = FlatEvent::new();
        for (key, value) in event.as_map() {
            flat.set_value(key, value.clone());
        }
        flat
    }
}

/// A state of a [`FlatEvent`] to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    arena: usize,
    fields: usize,
    list_items: usize,
    json: usize,
}

/// What a path holds, for writers that must not replace objects ([`FlatEvent::occupant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupant {
    /// Nothing at the path or around it.
    Free,
    /// A value at the path itself.
    Value,
    /// An object at the path (fields below it).
    Object,
    /// A non-object value at an ancestor of the path.
    ValueAbove,
}

/// Whether `outer` is `inner` or one of its ancestors (`a` contains `a` and `a.b`, not `ab`).
fn contains_path(outer: &str, inner: &str) -> bool {
    inner.starts_with(outer)
        && (inner.len() == outer.len() || inner.as_bytes()[outer.len()] == b'.')
}

/// Whether one path contains the other (or they are equal): the writes conflict.
fn paths_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    if (n > 0 && a[0] != b[0]) || a[..n] != b[..n] {
        return false;
    }
    let longer = if a.len() > n { a } else { b };
    longer.len() == n || longer[n] == b'.'
}

/// Path order: bytewise with `.` below every other byte, so `a.b` < `a.c` < `a-b` < `ab`.
fn compare_paths(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    match (a.get(common), b.get(common)) {
        (Some(x), Some(y)) => rank(*x).cmp(&rank(*y)),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
    }
}

fn rank(byte: u8) -> u16 {
    if byte == b'.' { 0 } else { u16::from(byte) + 1 }
}

/// The first 8 bytes of a path, ranked as [`compare_paths`] ranks them, as one number
/// (shorter paths padded with 0, below every rank, so a prefix sorts first).
fn sort_prefix(path: &str) -> u64 {
    let mut prefix = 0u64;
    for i in 0..8 {
        let byte = path.as_bytes().get(i).map_or(0, |&b| rank_u8(b));
        prefix = (prefix << 8) | u64::from(byte);
    }
    prefix
}

/// [`rank`] squeezed into a byte: `.` → 1, other bytes keep their order above it (0xff
/// and 0xfe share a rank; the full comparison still tells them apart).
fn rank_u8(byte: u8) -> u8 {
    match byte {
        b'.' => 1,
        0..=b'-' => byte.saturating_add(2),
        _ => byte.saturating_add(1).min(0xfe),
    }
}

/// How many leading `.`-segments two object paths share (`None`, the event, has none).
fn common_segments(a: Option<&str>, b: Option<&str>) -> usize {
    let (Some(a), Some(b)) = (a, b) else {
        return 0;
    };
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let same = ab.iter().zip(bb).take_while(|(x, y)| x == y).count();
    let whole = |longer: &[u8]| same == longer.len() || longer[same] == b'.';
    let dots = ab[..same].iter().filter(|&&c| c == b'.').count();
    if (same == ab.len() || ab[same] == b'.') && whole(bb) {
        dots + 1
    } else {
        dots
    }
}

/// The path after its first `n` segments (`None` when it has no more).
fn skip_segments(path: &str, n: usize) -> Option<&str> {
    let mut rest = path;
    for _ in 0..n {
        rest = &rest[rest.find('.')? + 1..];
    }
    Some(rest)
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing a `&str` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether JSON needs any byte of `bytes` escaped (control, `"` or `\\`), eight bytes at a
/// time: a zero byte of `x ^ c` marks `c`, and `x - 0x20` borrows into a byte below 0x20.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let below_space = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
        if below_space
            | has_zero(v ^ (ONES * u64::from(b'"')))
            | has_zero(v ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` without going through a formatter; years outside
/// 0000–9999 fall back to chrono.
fn format_timestamp_into(t: DateTime<Utc>, buf: &mut [u8; 27]) -> &str {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let text = crate::event::format_timestamp(t);
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        return std::str::from_utf8(&buf[..n]).unwrap_or("");
    }
    let micros = t.timestamp_subsec_micros().min(999_999);
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    put(20, micros, 6);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'.';
    buf[26] = b'Z';
    std::str::from_utf8(&buf[..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_of(flat: &mut FlatEvent) -> String {
        let mut out = Vec::new();
        flat.write_json(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn nested_output_matches_event() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T00:32:37.604537Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut flat = FlatEvent::new();
        flat.set_timestamp("@timestamp", t);
        flat.set_str("log.file.path", "/var/log/auth.log");
        flat.set_u64("log.offset", 42);
        flat.set_str("message", "a \"quoted\"\nline");
        flat.set_strs("event.category", &["authentication"]);
        flat.set_str("event.action", "ssh_login");
        flat.set_str("a-b", "x");
        flat.set_str("a.b", "y");
        flat.set_str("ab", "z");
        let mut event = Event::from_map(Map::new());
        event.set_str("@timestamp", crate::event::format_timestamp(t));
        event.set_str("log.file.path", "/var/log/auth.log");
        event.set("log.offset", json!(42));
        event.set_str("message", "a \"quoted\"\nline");
        event.set("event.category", json!(["authentication"]));
        event.set_str("event.action", "ssh_login");
        event.set_str("a-b", "x");
        event.set_str("a.b", "y");
        event.set_str("ab", "z");
        assert_eq!(json_of(&mut flat), event.to_json_line());
    }

    #[test]
    fn later_writes_replace_earlier_ones_like_event_set() {
        let mut flat = FlatEvent::new();
        flat.set_str("a", "scalar");
        flat.set_str("a.b", "object wins");
        flat.set_str("c.d", "object");
        flat.set_str("c", "scalar wins");
        flat.set_str("e", "first");
        flat.set_str("e", "second");
        assert_eq!(
            json_of(&mut flat),
            r#"{"a":{"b":"object wins"},"c":"scalar wins","e":"second"}"#
        );
        assert_eq!(flat.get_str("e"), Some("second"));
        assert_eq!(flat.get_str("a"), None);
        assert_eq!(flat.occupant("a"), Occupant::Object);
        assert_eq!(flat.occupant("c.d"), Occupant::ValueAbove);
        assert_eq!(flat.occupant("x"), Occupant::Free);
    }

    #[test]
    fn objects_replace_the_subtree_and_tags_are_added_once() {
        let mut flat = FlatEvent::new();
        flat.set_str("a.x", "gone");
        flat.set_value("a", json!({"y": {"z": 1}, "w": []}));
        flat.add_tag("unparsed");
        flat.add_tag("unparsed");
        flat.add_tag("truncated");
        assert_eq!(
            json_of(&mut flat),
            r#"{"a":{"w":[],"y":{"z":1}},"tags":["unparsed","truncated"]}"#
        );
    }

    #[test]
    fn alternating_shapes_each_keep_their_layout() {
        let mut flat = FlatEvent::new();
        for i in 0..100 {
            flat.clear();
            flat.set_str("event.action", "x");
            if i % 3 == 0 {
                flat.set_str("source.ip", "192.0.2.1");
            } else if i % 3 == 1 {
                flat.set_i64("source.port", i);
                flat.set_str("event", "replaces");
            }
            flat.set_str_at(&format!("labels.l{}", i % 40), "v");
            let expected = match i % 3 {
                0 => format!(
                    r#"{{"event":{{"action":"x"}},"labels":{{"l{}":"v"}},"source":{{"ip":"192.0.2.1"}}}}"#,
                    i % 40
                ),
                1 => format!(
                    r#"{{"event":"replaces","labels":{{"l{}":"v"}},"source":{{"port":{i}}}}}"#,
                    i % 40
                ),
                _ => format!(
                    r#"{{"event":{{"action":"x"}},"labels":{{"l{}":"v"}}}}"#,
                    i % 40
                ),
            };
            assert_eq!(json_of(&mut flat), expected);
        }
    }

    #[test]
    fn rollback_forgets_later_writes() {
        let mut flat = FlatEvent::new();
        flat.set_str("a", "kept");
        let mark = flat.mark();
        flat.set_str("a", "dropped");
        flat.set_value("b", json!({"c": [1]}));
        flat.rollback(mark);
        assert_eq!(json_of(&mut flat), r#"{"a":"kept"}"#);
    }

    #[test]
    fn start_makes_a_valid_event_and_clear_reuses() {
        let mut flat = FlatEvent::new();
        flat.start(Utc::now());
        let event = flat.to_event();
        event.validate().expect("valid");
        assert_eq!(event.get_str("event.kind"), Some("event"));
        flat.clear();
        assert!(flat.is_empty());
        assert_eq!(json_of(&mut flat), "{}");
    }

    #[test]
    fn timestamps_format_like_chrono() {
        for raw in [
            "2026-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999Z",
            "0001-02-03T04:05:06.000007Z",
        ] {
            let t = DateTime::parse_from_rfc3339(raw)
                .expect("time")
                .with_timezone(&Utc);
            let mut buf = [0u8; 27];
            assert_eq!(
                format_timestamp_into(t, &mut buf),
                crate::event::format_timestamp(t)
            );
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Str(String, String),
        Num(String, i64),
        Obj(String, Value),
        Tag(String),
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "a-b", "ab", ""]), 1..4)
            .prop_map(|parts| parts.join("."))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (path(), "[a-z\"\\\\\n]{0,4}").prop_map(|(p, v)| Op::Str(p, v)),
            (path(), any::<i64>()).prop_map(|(p, v)| Op::Num(p, v)),
            (path(), prop::sample::select(vec!["a", "b", "ab"]))
                .prop_map(|(p, k)| { Op::Obj(p, json!({ k: {"x": 1}, "y": [true] })) }),
            "[a-c]".prop_map(Op::Tag),
        ]
    }

    proptest! {
        #[test]
        fn overlap_is_containment_either_way(a in "[.ab]{0,4}", b in "[.ab]{0,4}") {
            prop_assert_eq!(paths_overlap(&a, &b), contains_path(&a, &b) || contains_path(&b, &a));
        }

        #[test]
        fn escape_check_matches_the_plain_one(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let plain = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(&bytes), plain);
        }

        #[test]
        fn path_numbers_never_contradict_the_full_order(a in "[-./a-z\u{7f}-\u{ff}]{0,12}", b in "[-./a-z\u{7f}-\u{ff}]{0,12}") {
            let by_number = sort_prefix(&a).cmp(&sort_prefix(&b));
            if by_number != Ordering::Equal {
                prop_assert_eq!(by_number, compare_paths(&a, &b));
            }
        }

        /// Any sequence of writes gives the same JSON as the same writes to an `Event`.
        #[test]
        fn same_json_as_event_for_any_writes(ops in prop::collection::vec(op(), 0..24)) {
            // The second round reuses the first one's cached layout.
            let mut flat = FlatEvent::new();
            for round in 0..2 {
            flat.clear();
            let mut event = Event::from_map(Map::new());
            for op in ops.clone() {
                match op {
                    Op::Str(p, v) => {
                        let v = format!("{v}{round}");
                        flat.set_str_at(&p, &v);
                        event.set(&p, Value::String(v));
                    }
                    Op::Num(p, v) => {
                        flat.set_value(&p, json!(v));
                        event.set(&p, json!(v));
                    }
                    Op::Obj(p, v) => {
                        flat.set_value(&p, v.clone());
                        event.set(&p, v);
                    }
                    Op::Tag(t) => {
                        flat.add_tag(&t);
                        event.add_tag(&t);
                    }
                }
                for probe in ["a", "a.b", "ab", "tags"] {
                    prop_assert_eq!(flat.get_value(probe).filter(|v| !v.is_object()),
                        event.get(probe).filter(|v| !v.is_object()).cloned(), "get {}", probe);
                }
            }
            prop_assert_eq!(json_of(&mut flat), event.to_json_line());
            }
        }
    }
}
