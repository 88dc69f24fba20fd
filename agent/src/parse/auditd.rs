//! `auditd`: Linux audit records (`/var/log/audit/audit.log`), one record per line, and the
//! [`AuditdAssembler`] that joins the records of one audit event (same serial) into one
//! Yagura event.
//!
//! A record is `[node=HOST ]type=TYPE msg=audit(SECONDS.MILLIS:SERIAL): key=value …`.
//! Values are decoded: `"quoted"` values lose their quotes; hex-encoded values of the
//! fields auditd encodes (`proctitle`, `cmd`, `comm`, `exe`, `acct`, `name`, `cwd`,
//! `path`, `data`, `key`, and `a0…aN` of `EXECVE`) are decoded (lossy UTF-8; the NULs of
//! `proctitle` become spaces); the `msg='…'` of user-space records (`USER_LOGIN`, …) is
//! read as more key=value pairs; the enriched format's `\x1d` separator counts as a space.
//!
//! Fields of an event (one record or a joined group): `@timestamp`, `host.hostname`
//! (`node=`), `auditd.sequence`, `auditd.record_types`, `auditd.<type>` (the decoded
//! fields of each record by lower-case type; an array when a type repeats, as `PATH`
//! does), and the ECS fields: `process.{pid, parent.pid, name, executable, title, args,
//! command_line, working_directory}`, `user.{id, audit.id, effective.id, name}`,
//! `user.target.name`, `source.address/ip` (`addr=`), `file.path`, `event.outcome` (`success=` or
//! `res=`).
//!
//! | first record type | `event.action` | category / type |
//! | --- | --- | --- |
//! | `SYSCALL` with an `EXECVE` | `executed` | process / start |
//! | `SYSCALL` | `syscall` | process / info |
//! | `USER_LOGIN` | `user_login` | authentication / start |
//! | `USER_AUTH` | `user_auth` | authentication / info |
//! | `USER_ACCT` | `user_acct` | authentication / info |
//! | `USER_CMD` | `user_cmd` | process / start |
//! | `USER_START` / `USER_END` | `session_start` / `session_end` | session / start, end |
//! | `USER_CHAUTHTOK` | `password_changed` | iam / user, change |
//! | `ADD_USER` / `DEL_USER` | `user_created` / `user_deleted` | iam / user, creation, deletion |
//! | `ADD_GROUP` / `DEL_GROUP` | `group_created` / `group_deleted` | iam / group, creation, deletion |
//! | any other | the type in lower case (`cred_acq`, `service_start`, …) | host / info |
//!
//! For `ADD_*`/`DEL_*` the account acted on (`acct=` or `id=`) is `user.target.name`;
//! otherwise `acct=` is `user.name`.

use std::time::{Duration, Instant};

use chrono::DateTime;
use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_till1, take_while1};
use nom::combinator::opt;
use nom::sequence::{delimited, terminated};
use serde_json::{Map, Value};
use yagura_shared::{Event, FlatEvent};

use super::{Fields, Outcome};

/// One record, borrowed except for decoded values.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord<'a> {
    pub node: Option<&'a str>,
    pub record_type: &'a str,
    pub seconds: i64,
    pub millis: u32,
    pub serial: u64,
    /// `key=value` pairs of the body, raw (quotes and hex still there).
    pub body: &'a str,
}

fn number(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_digit())(i)
}

/// The record header: node, type, time and serial; the rest is the body.
pub fn parse_record(line: &str) -> Option<AuditRecord<'_>> {
    let mut header = (
        opt(delimited(tag("node="), take_till1(|c| c == ' '), tag(" "))),
        delimited(tag("type="), take_till1(|c| c == ' '), tag(" msg=audit(")),
        terminated(number, tag(".")),
        terminated(number, tag(":")),
        terminated(number, tag(")")),
    );
    let result: IResult<&str, _> = header.parse(line);
    let (rest, (node, record_type, seconds, millis, serial)) = result.ok()?;
    let body = rest.strip_prefix(':').unwrap_or(rest);
    Some(AuditRecord {
        node,
        record_type,
        seconds: seconds.parse().ok()?,
        millis: millis.parse().ok()?,
        serial: serial.parse().ok()?,
        body: body.trim_start(),
    })
}

/// `key=value` pairs of a body (raw values). `msg='…'` is returned as one pair.
fn raw_pairs(body: &str) -> Vec<(&str, &str)> {
    let mut pairs = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([' ', '\x1d']);
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else { break };
        let key = &rest[..eq];
        if key.contains([' ', '\x1d']) {
            // A word without '=': skip it.
            let skip = rest.find([' ', '\x1d']).unwrap_or(rest.len());
            rest = &rest[skip..];
            continue;
        }
        let after = &rest[eq + 1..];
        let (value, next) = match after.as_bytes().first() {
            Some(&q @ (b'"' | b'\'')) => match after[1..].find(q as char) {
                Some(end) => (&after[..end + 2], &after[end + 2..]),
                None => (after, ""),
            },
            _ => {
                let end = after.find([' ', '\x1d']).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        pairs.push((key, value));
        rest = next;
    }
    pairs
}

fn is_encoded_field(record_type: &str, key: &str) -> bool {
    matches!(
        key,
        "proctitle" | "cmd" | "comm" | "exe" | "acct" | "name" | "cwd" | "path" | "data" | "key"
    ) || (record_type == "EXECVE"
        && key.len() > 1
        && key.starts_with('a')
        && key[1..].bytes().all(|c| c.is_ascii_digit()))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() < 2 || !s.len().is_multiple_of(2) {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
    }
    Some(out)
}

/// A decoded value.
fn decode_value(record_type: &str, key: &str, raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return inner.to_string();
    }
    if is_encoded_field(record_type, key)
        && let Some(bytes) = decode_hex(raw)
    {
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if key == "proctitle" {
            s = s.replace('\0', " ");
        }
        return s;
    }
    raw.to_string()
}

/// The decoded fields of one record, `msg='…'` expanded.
fn decoded_fields(record: &AuditRecord<'_>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for (key, raw) in raw_pairs(record.body) {
        if key == "msg"
            && let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\''))
        {
            for (k, v) in raw_pairs(inner) {
                fields.push((k.to_string(), decode_value(record.record_type, k, v)));
            }
            continue;
        }
        fields.push((key.to_string(), decode_value(record.record_type, key, raw)));
    }
    fields
}

/// Parses and writes a single record (not joined with others).
pub(crate) fn parse_line(line: &str, out: &mut Fields) -> bool {
    match parse_record(line) {
        Some(record) => {
            write_records(&[record], out);
            true
        }
        None => false,
    }
}

/// Writes the fields of the records of one event (all of one serial, in order).
pub(crate) fn write_records(records: &[AuditRecord<'_>], out: &mut Fields) {
    let Some(first) = records.first() else { return };
    if let Some(t) = DateTime::from_timestamp(first.seconds, first.millis.min(999) * 1_000_000) {
        out.timestamp(t);
    }
    out.opt_str("host.hostname", first.node);
    out.set("auditd.sequence", Value::from(first.serial));
    let mut types: Vec<Value> = Vec::with_capacity(records.len());
    let mut data = Map::new();
    let mut all: Vec<(String, String)> = Vec::new();
    let mut args: Vec<(u32, String)> = Vec::new();
    let mut file_path: Option<String> = None;
    let mut has_execve = false;
    for record in records {
        types.push(Value::String(record.record_type.to_string()));
        let fields = decoded_fields(record);
        let mut object = Map::new();
        for (k, v) in &fields {
            object.insert(k.clone(), Value::String(v.clone()));
        }
        match record.record_type {
            "EXECVE" => {
                has_execve = true;
                for (k, v) in &fields {
                    if let Some(n) = k.strip_prefix('a').and_then(|n| n.parse::<u32>().ok()) {
                        args.push((n, v.clone()));
                    }
                }
            }
            "PATH" if file_path.is_none() => {
                let nametype = fields.iter().find(|(k, _)| k == "nametype");
                if nametype.is_none_or(|(_, t)| t != "PARENT") {
                    file_path = fields
                        .iter()
                        .find(|(k, _)| k == "name")
                        .map(|(_, v)| v.clone());
                }
            }
            _ => {}
        }
        let key = record.record_type.to_ascii_lowercase();
        match data.get_mut(&key) {
            Some(Value::Array(list)) => list.push(Value::Object(object)),
            Some(existing) => {
                let previous = existing.take();
                *existing = Value::Array(vec![previous, Value::Object(object)]);
            }
            None => {
                data.insert(key, Value::Object(object));
            }
        }
        for (k, v) in fields {
            if !all.iter().any(|(existing, _)| *existing == k) {
                all.push((k, v));
            }
        }
    }
    let field = |name: &str| {
        all.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty() && *v != "?" && *v != "(null)" && *v != "unset")
    };
    let first_type = first.record_type;
    let (action, category, kind): (String, &str, &[&str]) = match first_type {
        "SYSCALL" if has_execve => ("executed".into(), "process", &["start"]),
        "SYSCALL" => ("syscall".into(), "process", &["info"]),
        "USER_LOGIN" => ("user_login".into(), "authentication", &["start"]),
        "USER_AUTH" => ("user_auth".into(), "authentication", &["info"]),
        "USER_ACCT" => ("user_acct".into(), "authentication", &["info"]),
        "USER_CMD" => ("user_cmd".into(), "process", &["start"]),
        "USER_START" => ("session_start".into(), "session", &["start"]),
        "USER_END" => ("session_end".into(), "session", &["end"]),
        "USER_CHAUTHTOK" => ("password_changed".into(), "iam", &["user", "change"]),
        "ADD_USER" => ("user_created".into(), "iam", &["user", "creation"]),
        "DEL_USER" => ("user_deleted".into(), "iam", &["user", "deletion"]),
        "ADD_GROUP" => ("group_created".into(), "iam", &["group", "creation"]),
        "DEL_GROUP" => ("group_deleted".into(), "iam", &["group", "deletion"]),
        other => (other.to_ascii_lowercase(), "host", &["info"]),
    };
    out.str("event.action", &action);
    out.strs("event.category", &[category]);
    out.strs("event.type", kind);
    let account_is_target = first_type.starts_with("ADD_") || first_type.starts_with("DEL_");
    let outcome = match (field("success"), field("res")) {
        (Some("yes"), _) | (_, Some("success" | "1")) => Some(Outcome::Success),
        (Some("no"), _) | (_, Some("failed" | "0")) => Some(Outcome::Failure),
        _ => None,
    };
    if let Some(o) = outcome {
        out.outcome(o);
    }
    for (name, path) in [("pid", "process.pid"), ("ppid", "process.parent.pid")] {
        if let Some(n) = field(name).and_then(|v| v.parse::<i64>().ok()) {
            out.num(path, n);
        }
    }
    out.opt_str("process.name", field("comm"));
    out.opt_str("process.executable", field("exe"));
    out.opt_str("process.title", field("proctitle"));
    out.opt_str("process.working_directory", field("cwd"));
    if !args.is_empty() {
        args.sort_by_key(|(n, _)| *n);
        let list: Vec<&str> = args.iter().map(|(_, v)| v.as_str()).collect();
        out.set("process.command_line", Value::String(list.join(" ")));
        out.strs("process.args", &list);
    } else if let Some(cmd) = field("cmd") {
        out.str("process.command_line", cmd);
    }
    out.opt_str("user.id", field("uid"));
    out.opt_str("user.audit.id", field("auid"));
    out.opt_str("user.effective.id", field("euid"));
    if account_is_target {
        out.opt_str("user.target.name", field("acct").or_else(|| field("id")));
    } else {
        out.opt_str("user.name", field("acct"));
    }
    if let Some(addr) = field("addr") {
        out.source_address(addr);
    }
    if let Some(p) = file_path {
        out.str("file.path", &p);
    }
    out.set("auditd.record_types", Value::Array(types));
    for (k, v) in data {
        out.set(&format!("auditd.{k}"), v);
    }
}

/// Records of one audit event waiting to be emitted, with what the caller attached to its
/// first line (for the tailer: the line's offset and path, to build the event).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditdGroup<T> {
    /// The caller's value for the group's first line.
    pub first: T,
    /// The group's lines, in the order they came.
    pub lines: Vec<String>,
}

impl<T> AuditdGroup<T> {
    /// Fills the joined event: `event.original` and `message` become the lines joined with
    /// `\n`; every record's fields are written as for one event. A group whose lines are
    /// not audit records (a stray line) is tagged `unparsed`, like any line.
    pub fn write_into(&self, event: &mut Event) {
        let mut flat = FlatEvent::from_event(event);
        self.write_into_flat(&mut flat);
        *event = flat.to_event();
    }

    /// [`AuditdGroup::write_into`] on the agent's [`FlatEvent`].
    pub fn write_into_flat(&self, event: &mut FlatEvent) {
        let joined = self.lines.join("\n");
        event.set_str("event.original", &joined);
        event.set_str("message", &joined);
        let records: Vec<AuditRecord<'_>> =
            self.lines.iter().filter_map(|l| parse_record(l)).collect();
        if records.is_empty() {
            event.add_tag("unparsed");
            return;
        }
        let mut out = Fields {
            event: std::mem::take(event),
        };
        write_records(&records, &mut out);
        *event = out.event;
    }
}

/// Joins the records of one audit event.
///
/// The kernel writes the records of one event (`SYSCALL`, `EXECVE`, `CWD`, `PATH`…,
/// `PROCTITLE`, then `EOE`) one after the other, all with the same serial. The assembler
/// holds the open group and hands it back, complete, when:
/// * its `EOE` record arrives ([`push`](Self::push) returns it, `EOE` line included);
/// * a record with another serial arrives (the open group first, then the new record
///   opens the next group);
/// * it has waited `max_wait` ([`poll_expired`](Self::poll_expired));
/// * it has 256 records (a bound on memory);
/// * the caller stops ([`flush`](Self::flush)).
///
/// User-space records (`USER_*`, `CRED_*`, `ADD_*`, `DEL_*`, `SERVICE_*`, `DAEMON_*`,
/// `LOGIN`, `SYSTEM_*`) are one record each and come back at once; a line that is not an
/// audit record comes back at once as a group of its own (it will be tagged `unparsed`).
///
/// Driving it from the tail loop (sketch):
///
/// ```text
/// for line in tailer.poll(n) {                    // T = the Line (offset, path, …)
///     for group in assembler.push(&line.text, line.clone(), Instant::now()) {
///         let mut event = group.first.clone().into_event(&ctx);
///         group.write_into(&mut event);            // joined original + fields
///         producer.push(event);
///     }
/// }
/// if let Some(group) = assembler.poll_expired(Instant::now()) { … same … }
/// // at shutdown: assembler.flush()
/// ```
///
/// Checkpoints: the lines of the open group are not in any event yet, so the checkpoint
/// committed with a batch must not pass [`pending_first`](Self::pending_first)'s offset
/// (otherwise a crash loses them); on restart they are read again and reassembled.
#[derive(Debug)]
pub struct AuditdAssembler<T> {
    open: Option<OpenGroup<T>>,
    max_wait: Duration,
}

#[derive(Debug)]
struct OpenGroup<T> {
    serial: u64,
    since: Instant,
    group: AuditdGroup<T>,
}

const MAX_RECORDS_PER_GROUP: usize = 256;

fn is_standalone(record_type: &str) -> bool {
    [
        "USER_", "CRED_", "ADD_", "DEL_", "SERVICE_", "DAEMON_", "SYSTEM_",
    ]
    .iter()
    .any(|p| record_type.starts_with(p))
        || record_type == "LOGIN"
}

impl<T> AuditdAssembler<T> {
    /// An assembler that emits an incomplete group after `max_wait` (auditd writes a
    /// whole event at once; 2 seconds is ample).
    pub fn new(max_wait: Duration) -> Self {
        AuditdAssembler {
            open: None,
            max_wait,
        }
    }

    /// Adds one line; returns the groups completed by it (zero, one or two), in order.
    pub fn push(&mut self, line: &str, meta: T, now: Instant) -> Vec<AuditdGroup<T>> {
        let mut done = Vec::new();
        let Some(record) = parse_record(line) else {
            done.extend(self.flush());
            done.push(AuditdGroup {
                first: meta,
                lines: vec![line.to_string()],
            });
            return done;
        };
        if let Some(open) = &mut self.open
            && open.serial == record.serial
        {
            open.group.lines.push(line.to_string());
            if record.record_type == "EOE" || open.group.lines.len() >= MAX_RECORDS_PER_GROUP {
                done.extend(self.flush());
            }
            return done;
        }
        done.extend(self.flush());
        let group = AuditdGroup {
            first: meta,
            lines: vec![line.to_string()],
        };
        if record.record_type == "EOE" || is_standalone(record.record_type) {
            done.push(group);
        } else {
            self.open = Some(OpenGroup {
                serial: record.serial,
                since: now,
                group,
            });
        }
        done
    }

    /// The open group, if it has waited `max_wait` since its first record.
    pub fn poll_expired(&mut self, now: Instant) -> Option<AuditdGroup<T>> {
        let expired = self
            .open
            .as_ref()
            .is_some_and(|o| now.saturating_duration_since(o.since) >= self.max_wait);
        if expired { self.flush() } else { None }
    }

    /// The open group, whatever its state (end of input, shutdown).
    pub fn flush(&mut self) -> Option<AuditdGroup<T>> {
        self.open.take().map(|o| o.group)
    }

    /// The caller's value for the first line still held (not yet emitted).
    pub fn pending_first(&self) -> Option<&T> {
        self.open.as_ref().map(|o| &o.group.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &str = r#"type=SYSCALL msg=audit(1700000000.123:42): arch=c000003e syscall=59 success=yes exit=0 a0=55d a1=55e a2=55f a3=0 items=2 ppid=1000 pid=1001 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="id" exe="/usr/bin/id" key="exec""#;
    const EXECVE: &str =
        r#"type=EXECVE msg=audit(1700000000.123:42): argc=2 a0="id" a1=2D752066726564"#;
    const EOE: &str = "type=EOE msg=audit(1700000000.123:42): ";

    #[test]
    fn header() {
        let r = parse_record(SYSCALL).expect("record");
        assert_eq!(
            (r.record_type, r.seconds, r.millis, r.serial),
            ("SYSCALL", 1700000000, 123, 42)
        );
        assert!(parse_record("type=X msg=audit(1.2:x): a=b").is_none());
    }

    #[test]
    fn values_are_decoded() {
        let line =
            "type=EXECVE msg=audit(1.5:7): argc=3 a0=\"ls\" a1=2D6C61 a2=2F746D70\u{1d}ARCH=x86_64";
        let r = parse_record(line).expect("record");
        let fields = decoded_fields(&r);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("a0"), Some("ls"));
        assert_eq!(get("a1"), Some("-la"));
        assert_eq!(get("a2"), Some("/tmp"));
        assert_eq!(get("ARCH"), Some("x86_64"), "enriched part after \\x1d");
        // SYSCALL's a0..a3 are numbers, not encoded strings.
        let r = parse_record("type=SYSCALL msg=audit(1.5:7): a0=2F74").expect("record");
        assert_eq!(
            decoded_fields(&r),
            vec![("a0".to_string(), "2F74".to_string())]
        );
        // Odd length or non-hex stays as written.
        let r = parse_record("type=USER_CMD msg=audit(1.5:8): cmd=ABC comm=zz").expect("record");
        assert_eq!(
            decoded_fields(&r),
            vec![("cmd".into(), "ABC".into()), ("comm".into(), "zz".into())]
        );
    }

    #[test]
    fn assembler_joins_one_serial_until_eoe() {
        let t0 = Instant::now();
        let mut a = AuditdAssembler::new(Duration::from_secs(2));
        assert!(a.push(SYSCALL, 1, t0).is_empty());
        assert!(a.push(EXECVE, 2, t0).is_empty());
        assert_eq!(a.pending_first(), Some(&1));
        let done = a.push(EOE, 3, t0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].first, 1);
        assert_eq!(done[0].lines.len(), 3);
        assert!(a.pending_first().is_none());
        let mut event = Event::new(chrono::Utc::now());
        done[0].write_into(&mut event);
        assert_eq!(event.action(), Some("executed"));
        assert_eq!(
            event.get("process.args"),
            Some(&serde_json::json!(["id", "-u fred"]))
        );
        assert_eq!(event.get_str("process.command_line"), Some("id -u fred"));
        assert_eq!(
            event.get_str("@timestamp"),
            Some("2023-11-14T22:13:20.123000Z")
        );
    }

    #[test]
    fn assembler_flushes_on_new_serial_timeout_and_stray_lines() {
        let t0 = Instant::now();
        let mut a = AuditdAssembler::new(Duration::from_secs(2));
        assert!(a.push(SYSCALL, 1, t0).is_empty());
        let next = SYSCALL.replace(":42)", ":43)");
        let done = a.push(&next, 2, t0);
        assert_eq!(done.iter().map(|g| g.first).collect::<Vec<_>>(), vec![1]);
        assert!(a.poll_expired(t0 + Duration::from_secs(1)).is_none());
        assert_eq!(
            a.poll_expired(t0 + Duration::from_secs(2)).map(|g| g.first),
            Some(2)
        );
        assert!(a.push(SYSCALL, 3, t0).is_empty());
        let done = a.push("garbage", 4, t0);
        assert_eq!(done.iter().map(|g| g.first).collect::<Vec<_>>(), vec![3, 4]);
        let user = r#"type=USER_LOGIN msg=audit(1700000000.5:50): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct="root" exe="/usr/sbin/sshd" hostname=? addr=203.0.113.5 terminal=sshd res=failed'"#;
        let done = a.push(user, 5, t0);
        assert_eq!(done.len(), 1, "user-space records are complete at once");
    }
}
