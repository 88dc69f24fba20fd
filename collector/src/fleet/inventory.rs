//! What was on a host at a given time, rebuilt from the inventory events in the index.
//!
//! Agents send a full snapshot (every item, one `yagura.inventory.snapshot_id`) hourly and
//! change events in between, each naming its item by `yagura.inventory.item` (kind) and
//! `yagura.inventory.key`. The inventory at time *t* is the last snapshot at or before
//! *t*, with the changes between it and *t* applied in order — at most one snapshot
//! interval of changes to replay. The index is the single store of events, so the history
//! lasts as long as index retention keeps it, and nothing else has to be kept in step.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::index::{Cursor, EventIndex, IndexError, SearchRequest};

/// Most events one page of the replay reads.
const PAGE: usize = 10_000;

/// One item present at the asked time.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryItem {
    pub key: String,
    /// When the event that put the item in this state was made.
    pub since: String,
    /// That event's fields (`process.*`, `server.*`, `device.*`, `package.*`, …).
    pub event: Value,
}

/// The inventory of one agent at one time.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryAt {
    pub agent_id: Uuid,
    pub at: String,
    /// The snapshot the answer starts from (`None`: no snapshot that old is indexed).
    pub snapshot_id: Option<String>,
    pub snapshot_at: Option<String>,
    /// The snapshot's host facts (OS, kernel, boot time, machine id, memory, CPUs).
    pub host: Option<Value>,
    /// Items by kind: `process`, `port`, `usb`, `user`, `group`, `package`, `neighbour`.
    pub items: BTreeMap<String, Vec<InventoryItem>>,
    /// Change events applied after the snapshot.
    pub changes_applied: usize,
}

fn get<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(event, |v, part| v.get(part))
}

fn text(event: &Value, path: &str) -> Option<String> {
    get(event, path).and_then(Value::as_str).map(str::to_string)
}

/// Every event `query` matches in the time range, oldest first, page by page.
fn all_events(
    index: &EventIndex,
    query: &str,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> Result<Vec<Value>, IndexError> {
    let mut events = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let mut request = SearchRequest::new(query);
        request.since = since;
        request.until = Some(until);
        request.limit = PAGE;
        request.oldest_first = true;
        request.count_total = false;
        request.after = after.take();
        let result = index.search(&request)?;
        events.extend(result.hits.into_iter().map(|h| h.event));
        match result.next_cursor {
            Some(next) => match next.parse() {
                Ok(cursor) => after = Some(cursor),
                Err(_) => break,
            },
            None => break,
        }
    }
    Ok(events)
}

/// Applies one change event to the items.
fn apply(items: &mut BTreeMap<(String, String), InventoryItem>, event: Value) -> bool {
    let (Some(kind), Some(key), Some(action)) = (
        text(&event, "yagura.inventory.item"),
        text(&event, "yagura.inventory.key"),
        text(&event, "event.action"),
    ) else {
        return false;
    };
    let ends = ["_exited", "_closed", "_removed"];
    if ends.iter().any(|e| action.ends_with(e)) {
        items.remove(&(kind, key));
    } else {
        let since = text(&event, "@timestamp").unwrap_or_default();
        items.insert((kind, key.clone()), InventoryItem { key, since, event });
    }
    true
}

/// The inventory of `agent` at `at`.
pub fn inventory_at(
    index: &EventIndex,
    agent: Uuid,
    at: DateTime<Utc>,
) -> Result<InventoryAt, IndexError> {
    let mut latest = SearchRequest::new(format!(
        "agent.id:\"{agent}\" AND event.dataset:yagura.inventory AND event.action:inventory_snapshot"
    ));
    latest.until = Some(at);
    latest.limit = 1;
    latest.count_total = false;
    let summary = index
        .search(&latest)?
        .hits
        .into_iter()
        .next()
        .map(|h| h.event);
    let snapshot_id = summary
        .as_ref()
        .and_then(|s| text(s, "yagura.inventory.snapshot_id"));
    let snapshot_at = summary.as_ref().and_then(|s| text(s, "@timestamp"));
    let since = snapshot_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let mut items = BTreeMap::new();
    if let Some(id) = &snapshot_id {
        // Agents stamp a snapshot's items with the summary's time; items of earlier
        // agents were made just before their summary.
        for event in all_events(
            index,
            &format!("agent.id:\"{agent}\" AND yagura.inventory.snapshot_id:\"{id}\""),
            since.map(|t| t - chrono::Duration::minutes(10)),
            at,
        )? {
            apply(&mut items, event);
        }
    }
    let mut changes_applied = 0;
    for event in all_events(
        index,
        &format!("agent.id:\"{agent}\" AND event.dataset:yagura.inventory AND event.kind:event"),
        since,
        at,
    )? {
        if apply(&mut items, event) {
            changes_applied += 1;
        }
    }
    let mut by_kind: BTreeMap<String, Vec<InventoryItem>> = BTreeMap::new();
    for ((kind, _), item) in items {
        by_kind.entry(kind).or_default().push(item);
    }
    Ok(InventoryAt {
        agent_id: agent,
        at: yagura_shared::event::format_timestamp(at),
        snapshot_id,
        snapshot_at,
        host: summary.and_then(|s| get(&s, "yagura.inventory.host").cloned()),
        items: by_kind,
        changes_applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yagura_agent::inventory::observe::{self, Observed, Roots};
    use yagura_agent::inventory::processes::ExeHasher;
    use yagura_agent::inventory::usb::UsbDevice;
    use yagura_agent::tail::EventContext;
    use yagura_shared::Event;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn stamped(mut events: Vec<Event>, time: &str) -> Vec<Event> {
        for event in &mut events {
            event.set_str("@timestamp", time);
        }
        events
    }

    fn stick() -> UsbDevice {
        UsbDevice {
            bus_id: "1-2".into(),
            vendor_id: "0781".into(),
            product_id: "5581".into(),
            serial: Some("4C530001".into()),
            class: Some("00".into()),
            manufacturer: Some("SanDisk".into()),
            product: Some("Ultra".into()),
            authorized: Some(true),
            sys_path: "/sys/bus/usb/devices/1-2".into(),
        }
    }

    /// The agent's own events (snapshot, then a USB stick attached and removed), indexed;
    /// `--at` before the attach shows no device, between shows it, after shows none.
    #[test]
    fn the_inventory_at_a_time_replays_the_snapshot_and_the_changes() {
        let agent = Uuid::now_v7();
        let context = EventContext {
            host_name: "web-1".into(),
            agent_id: agent,
        };
        let etc = tempfile::tempdir().expect("tmp");
        std::fs::write(
            etc.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        )
        .expect("passwd");
        let roots = Roots {
            proc: etc.path().join("no-proc"),
            sys: etc.path().join("no-sys"),
            etc: etc.path().to_path_buf(),
            root: etc.path().join("no-root"),
        };
        let (snapshot, observed) = observe::snapshot(&context, &roots, &mut ExeHasher::new());
        let mut with_stick = observed.clone();
        with_stick.usb.insert("1-2".into(), stick());
        let attached = observe::changes(&context, &observed, &with_stick);
        let removed = observe::changes(&context, &with_stick, &Observed { ..observed.clone() });
        let mut events = stamped(snapshot, "2026-11-25T10:00:00.000000Z");
        // Items made a moment before their summary (as earlier agents made them) still count.
        events[0].set_str("@timestamp", "2026-11-25T10:00:01.000000Z");
        events.extend(stamped(attached, "2026-11-25T10:20:00.000000Z"));
        events.extend(stamped(removed, "2026-11-25T10:40:00.000000Z"));
        let index = crate::index::index_in_ram(&events);

        let before = inventory_at(&index, agent, at("2026-11-25T10:10:00Z")).expect("before");
        assert!(before.snapshot_id.is_some());
        assert!(
            !before.items.contains_key("usb"),
            "{:?}",
            before.items.keys()
        );
        let users: Vec<&str> = before.items["user"]
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(users, ["alice", "root"]);

        let during = inventory_at(&index, agent, at("2026-11-25T10:30:00Z")).expect("during");
        let usb = &during.items["usb"];
        assert_eq!(usb.len(), 1);
        assert_eq!(usb[0].event["device"]["id"], "0781:5581:4C530001");
        assert_eq!(usb[0].since, "2026-11-25T10:20:00.000000Z");
        assert_eq!(during.changes_applied, 1);

        let after = inventory_at(&index, agent, at("2026-11-25T10:50:00Z")).expect("after");
        assert!(!after.items.contains_key("usb"));
        assert_eq!(after.changes_applied, 2);

        let other =
            inventory_at(&index, Uuid::now_v7(), at("2026-11-25T10:50:00Z")).expect("other");
        assert!(
            other.snapshot_id.is_none() && other.items.is_empty(),
            "per agent"
        );
        let earlier = inventory_at(&index, agent, at("2026-11-25T09:00:00Z")).expect("earlier");
        assert!(
            earlier.snapshot_id.is_none(),
            "nothing before the first snapshot"
        );
    }
}
