//! The loss ledger: whatever the agent skips or drops becomes a `yagura.agent.loss` event.
//!
//! Losses are never silent. Each event says why (`yagura.loss.reason`), which file and
//! byte range, and how many events (when they can be counted) or bytes were lost, so a
//! fleet can alert on it and an analyst can account for every line missing from the index.
//! Reasons: `spool_full` (dropped under `when_full = "drop_oldest"`; counts are exact),
//! `spool_corrupt` (a spooled batch that could not be read; count unknown),
//! `truncated_before_read` (copytruncate with no rotated copy; unread bytes known) and
//! `rotated_away_unread` (a rotated file deleted before it was drained; size unknown).

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::Value;
use yagura_shared::Event;

use crate::spool::SpoolLoss;
use crate::tail::{EventContext, Loss};

/// The dataset of loss events.
pub const LOSS_DATASET: &str = "yagura.agent.loss";

fn loss_event(context: &EventContext, reason: &str, message: String) -> Event {
    let mut event = Event::new(Utc::now());
    context.stamp(&mut event);
    event.set_str("event.dataset", LOSS_DATASET);
    event.set_str("event.action", "data_lost");
    event.set_str("event.outcome", "failure");
    event.set_str("event.reason", reason);
    event.set_str("yagura.loss.reason", reason);
    event.set_str("message", message);
    event
}

/// The loss event for unread file data found by the tailer.
pub fn from_tail(loss: &Loss, context: &EventContext) -> Event {
    let amount = match loss.bytes {
        Some(bytes) => format!("{bytes} unread bytes"),
        None => "an unknown amount of unread data".into(),
    };
    let mut event = loss_event(
        context,
        loss.reason,
        format!(
            "{}: {amount} from offset {} lost ({})",
            loss.path, loss.offset, loss.reason
        ),
    );
    event.set_str("log.file.path", loss.path.clone());
    event.set("yagura.loss.first_offset", Value::from(loss.offset));
    if let Some(bytes) = loss.bytes {
        event.set("yagura.loss.bytes", Value::from(bytes));
    }
    event
}

/// Loss events for a batch that left the spool unsent: one per file (with the exact count
/// and offset range of its lines), one for events that came from no file. Loss events the
/// batch itself carried are not lost either: those of the same reason are merged into the
/// tallies, others re-emitted unchanged, so the ledger stays complete and bounded.
pub fn from_spool(loss: SpoolLoss, context: &EventContext) -> Vec<Event> {
    let Some(events) = loss.events else {
        let mut event = loss_event(
            context,
            loss.reason,
            format!(
                "spooled batch {} could not be read and was set aside ({})",
                loss.sequence, loss.reason
            ),
        );
        event.set("yagura.loss.batch_sequence", Value::from(loss.sequence));
        return vec![event];
    };
    let mut per_file: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut without_file = 0u64;
    let mut out = Vec::new();
    for event in events {
        if event.dataset() == Some(LOSS_DATASET) {
            // An earlier loss of the same kind is merged into this one's tallies, so losses
            // of losses do not pile up; any other loss is carried unchanged.
            let same_reason = event.get_str("yagura.loss.reason") == Some(loss.reason);
            let count = event.get("yagura.loss.events").and_then(Value::as_u64);
            match (same_reason, count, event.get_str("log.file.path")) {
                (true, Some(count), Some(path)) => {
                    let first = event
                        .get("yagura.loss.first_offset")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let last = event
                        .get("yagura.loss.last_offset")
                        .and_then(Value::as_u64)
                        .unwrap_or(first);
                    let entry = per_file.entry(path.to_string()).or_insert((0, first, last));
                    entry.0 += count;
                    entry.1 = entry.1.min(first);
                    entry.2 = entry.2.max(last);
                }
                (true, Some(count), None) => without_file += count,
                _ => out.push(event),
            }
            continue;
        }
        match (
            event.get_str("log.file.path"),
            event.get("log.offset").and_then(Value::as_u64),
        ) {
            (Some(path), Some(offset)) => {
                let entry = per_file
                    .entry(path.to_string())
                    .or_insert((0, offset, offset));
                entry.0 += 1;
                entry.1 = entry.1.min(offset);
                entry.2 = entry.2.max(offset);
            }
            _ => without_file += 1,
        }
    }
    for (path, (count, first, last)) in per_file {
        let mut event = loss_event(
            context,
            loss.reason,
            format!(
                "{path}: {count} events (offsets {first}..={last}) of batch {} dropped ({})",
                loss.sequence, loss.reason
            ),
        );
        event.set_str("log.file.path", path);
        event.set("yagura.loss.events", Value::from(count));
        event.set("yagura.loss.first_offset", Value::from(first));
        event.set("yagura.loss.last_offset", Value::from(last));
        event.set("yagura.loss.batch_sequence", Value::from(loss.sequence));
        out.push(event);
    }
    if without_file > 0 {
        let mut event = loss_event(
            context,
            loss.reason,
            format!(
                "{without_file} agent events of batch {} dropped ({})",
                loss.sequence, loss.reason
            ),
        );
        event.set("yagura.loss.events", Value::from(without_file));
        event.set("yagura.loss.batch_sequence", Value::from(loss.sequence));
        out.push(event);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn context() -> EventContext {
        EventContext {
            host_name: "h".into(),
            agent_id: Uuid::now_v7(),
        }
    }

    fn line(path: &str, offset: u64) -> Event {
        let mut e = Event::new(Utc::now());
        e.set_str("log.file.path", path);
        e.set("log.offset", Value::from(offset));
        e
    }

    #[test]
    fn a_dropped_batch_is_counted_per_file_and_carried_losses_survive() {
        let ctx = context();
        let carried = from_tail(
            &Loss {
                path: "/l/c.log".into(),
                reason: "truncated_before_read",
                offset: 9,
                bytes: Some(3),
            },
            &ctx,
        );
        let events = vec![
            line("/l/a.log", 10),
            line("/l/b.log", 0),
            line("/l/a.log", 40),
            carried.clone(),
            Event::new(Utc::now()),
        ];
        let out = from_spool(
            SpoolLoss {
                reason: "spool_full",
                sequence: 7,
                events: Some(events),
            },
            &ctx,
        );
        assert_eq!(out.len(), 4);
        assert!(out.contains(&carried), "carried loss re-emitted unchanged");
        let a = out
            .iter()
            .find(|e| e.get_str("log.file.path") == Some("/l/a.log"))
            .expect("a");
        assert_eq!(a.get("yagura.loss.events"), Some(&Value::from(2)));
        assert_eq!(a.get("yagura.loss.first_offset"), Some(&Value::from(10)));
        assert_eq!(a.get("yagura.loss.last_offset"), Some(&Value::from(40)));
        assert_eq!(a.dataset(), Some(LOSS_DATASET));
        assert_eq!(a.agent_id(), Some(ctx.agent_id.to_string().as_str()));
        a.validate().expect("valid event");
        let orphan = out
            .iter()
            .find(|e| e.get_str("log.file.path").is_none() && e.get("yagura.loss.events").is_some())
            .expect("no-file");
        assert_eq!(orphan.get("yagura.loss.events"), Some(&Value::from(1)));
    }

    #[test]
    fn earlier_losses_of_the_same_kind_are_merged_not_piled_up() {
        let ctx = context();
        let first = from_spool(
            SpoolLoss {
                reason: "spool_full",
                sequence: 1,
                events: Some(vec![line("/l/a.log", 0), line("/l/a.log", 5)]),
            },
            &ctx,
        );
        let mut second_batch = first;
        second_batch.push(line("/l/a.log", 9));
        let merged = from_spool(
            SpoolLoss {
                reason: "spool_full",
                sequence: 2,
                events: Some(second_batch),
            },
            &ctx,
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].get("yagura.loss.events"), Some(&Value::from(3)));
        assert_eq!(
            merged[0].get("yagura.loss.first_offset"),
            Some(&Value::from(0))
        );
        assert_eq!(
            merged[0].get("yagura.loss.last_offset"),
            Some(&Value::from(9))
        );
    }

    #[test]
    fn an_unreadable_batch_is_reported_without_a_count() {
        let out = from_spool(
            SpoolLoss {
                reason: "spool_corrupt",
                sequence: 3,
                events: None,
            },
            &context(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].get_str("yagura.loss.reason"), Some("spool_corrupt"));
        assert!(out[0].get("yagura.loss.events").is_none());
    }
}
