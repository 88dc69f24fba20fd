//! Events the collector raises itself: security refusals, sequence gaps, agents gone
//! offline. They take the same road as every agent's events.
//!
//! The collector has its own Ed25519 identity (`collector.key` in the data directory,
//! mode 0600, registered in the agents table with `kind = "collector"` at first start).
//! [`CollectorEvents`] collects events from ingest and the fleet monitor;
//! [`run_sealer`] seals them into collector-signed batches ([`SignedBatch::seal`]) and
//! appends those to the archive, so they are indexed, searchable and verifiable exactly
//! like agent batches (the archive stays the single source of truth).
//!
//! Guarantees and limits: security events are aggregated per (action, peer, claimed
//! agent) and minute — the first one is raised at once, the rest of that minute become one
//! summary event with `yagura.count` — and at most [`MAX_OPEN_WINDOWS`] keys and
//! [`MAX_READY_EVENTS`] unsealed events are held; beyond that they are counted and raised
//! as one `suppressed` event, so an attacker cannot flood the archive through us. Events
//! still unsealed when the process is killed are lost (they describe refused requests;
//! nothing an agent sent is lost with them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use yagura_shared::{AgentKey, Event, SignedBatch};

use crate::archive::{Appended, Archive};

/// Dataset of refused batches and other attacks on the collector.
pub const SECURITY_DATASET: &str = "yagura.collector.security";
/// Dataset of sequence gaps (batches an agent sealed that never arrived).
pub const GAP_DATASET: &str = "yagura.collector.gap";
/// Dataset of agent key rotations.
pub const KEY_ROTATION_DATASET: &str = "yagura.collector.key_rotation";
/// Dataset of the detector's own events (rule sets refused).
pub const DETECT_DATASET: &str = "yagura.collector.detect";
/// Dataset of index days deleted by retention.
pub const INDEX_RETENTION_DATASET: &str = "yagura.collector.index_retention";
/// Dataset of agents that went silent for longer than their interval.
pub const OFFLINE_DATASET: &str = "yagura.collector.agent_offline";

/// Aggregation window of security events.
const WINDOW: Duration = Duration::from_secs(60);
/// Most distinct (action, peer, agent) keys aggregated at once.
pub const MAX_OPEN_WINDOWS: usize = 10_000;
/// Most events waiting to be sealed.
pub const MAX_READY_EVENTS: usize = 10_000;
/// Most events in one collector batch.
const MAX_EVENTS_PER_BATCH: usize = 1_000;
/// How often pending events are sealed and archived.
const SEAL_INTERVAL: Duration = Duration::from_millis(250);

/// Loads the collector's signing key from `path`, or makes one (mode 0600) on first start.
pub fn load_or_create_key(path: &Path) -> std::io::Result<AgentKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => AgentKey::from_file_text(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = AgentKey::generate().map_err(std::io::Error::other)?;
            let tmp = path.with_extension("key.tmp");
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(key.to_file_text().as_bytes())?;
                file.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// A refusal worth an event: what was attempted, by whom, and why it failed.
#[derive(Debug, Clone)]
pub struct SecurityReport {
    /// `bad_signature`, `unknown_agent`, `revoked_agent`, `replay`, … (`event.action`).
    pub action: &'static str,
    pub peer: Option<IpAddr>,
    /// The agent id the batch claimed, when it could be read.
    pub claimed_agent: Option<Uuid>,
    pub reason: String,
}

type WindowKey = (&'static str, Option<IpAddr>, Option<Uuid>);

struct Window {
    opened: Instant,
    opened_at: DateTime<Utc>,
    suppressed: u64,
    last_reason: String,
}

#[derive(Default)]
struct Pending {
    windows: HashMap<WindowKey, Window>,
    ready: Vec<Event>,
    /// Events not kept because a bound was reached, raised as one `suppressed` event.
    overflow: u64,
}

/// Where ingest and the fleet monitor report what the collector itself must record.
/// Cheap to clone; reporting never blocks on I/O.
#[derive(Clone)]
pub struct CollectorEvents {
    collector_agent_id: Uuid,
    pending: Arc<Mutex<Pending>>,
}

impl std::fmt::Debug for CollectorEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorEvents")
            .field("collector_agent_id", &self.collector_agent_id)
            .finish()
    }
}

impl CollectorEvents {
    pub fn new(collector_agent_id: Uuid) -> Self {
        CollectorEvents {
            collector_agent_id,
            pending: Arc::default(),
        }
    }

    /// The agent id the collector signs its own batches with.
    pub fn collector_agent_id(&self) -> Uuid {
        self.collector_agent_id
    }

    fn base_event(&self, dataset: &str, action: &str, kind: &str) -> Event {
        let mut event = Event::new(Utc::now());
        event.set_str("event.kind", kind);
        event.set_str("event.dataset", dataset);
        event.set_str("event.action", action);
        event.set_str("agent.id", self.collector_agent_id.to_string());
        event.set_str("agent.type", "yagura-collector");
        event.set_str("host.name", "yagura-collector");
        event
    }

    fn security_event(&self, report: &SecurityReport, count: u64, since: DateTime<Utc>) -> Event {
        let mut event = self.base_event(SECURITY_DATASET, report.action, "alert");
        event.set_str("event.outcome", "failure");
        event.set_str("event.reason", report.reason.clone());
        if let Some(peer) = report.peer {
            event.set_str("source.ip", peer.to_string());
        }
        if let Some(agent) = report.claimed_agent {
            event.set_str("yagura.claimed_agent_id", agent.to_string());
        }
        event.set("yagura.count", json!(count));
        event.set_str(
            "yagura.window_start",
            yagura_shared::event::format_timestamp(since),
        );
        event.set_str(
            "message",
            format!(
                "batch refused ({}): {} [{} time(s) from {}]",
                report.action,
                report.reason,
                count,
                report
                    .peer
                    .map_or_else(|| "unknown peer".to_string(), |p| p.to_string())
            ),
        );
        event
    }

    /// Records a refused batch; aggregated per (action, peer, claimed agent) and minute.
    pub fn security(&self, report: SecurityReport) {
        tracing::warn!(
            action = report.action,
            peer = ?report.peer,
            claimed_agent = ?report.claimed_agent,
            reason = %report.reason,
            "batch refused"
        );
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let key = (report.action, report.peer, report.claimed_agent);
        if let Some(window) = pending.windows.get_mut(&key) {
            window.suppressed += 1;
            window.last_reason = report.reason;
            return;
        }
        if pending.windows.len() >= MAX_OPEN_WINDOWS || pending.ready.len() >= MAX_READY_EVENTS {
            pending.overflow += 1;
            return;
        }
        let now = Utc::now();
        let event = self.security_event(&report, 1, now);
        pending.ready.push(event);
        pending.windows.insert(
            key,
            Window {
                opened: Instant::now(),
                opened_at: now,
                suppressed: 0,
                last_reason: report.reason,
            },
        );
    }

    /// Records a sequence gap: batches `first_missing..=last_missing` of `agent` never
    /// arrived (the batch after them did).
    pub fn gap(&self, agent: Uuid, first_missing: u64, last_missing: u64, peer: Option<IpAddr>) {
        tracing::warn!(%agent, first_missing, last_missing, "sequence gap");
        let mut event = self.base_event(GAP_DATASET, "sequence_gap", "event");
        event.set_str("yagura.subject_agent_id", agent.to_string());
        event.set("yagura.gap.first_missing", json!(first_missing));
        event.set("yagura.gap.last_missing", json!(last_missing));
        event.set(
            "yagura.gap.missing_batches",
            json!(last_missing.saturating_sub(first_missing) + 1),
        );
        if let Some(peer) = peer {
            event.set_str("source.ip", peer.to_string());
        }
        event.set_str(
            "message",
            format!("agent {agent}: batches {first_missing} to {last_missing} never arrived"),
        );
        self.push(event);
    }

    /// Records that `agent` moved to a new signing key from batch `from_sequence` on (the
    /// old key still verifies the batches before it).
    pub fn agent_key_rotated(
        &self,
        agent: Uuid,
        public_key: &str,
        from_sequence: u64,
        peer: Option<IpAddr>,
    ) {
        tracing::info!(%agent, from_sequence, "agent signing key rotated");
        let mut event = self.base_event(KEY_ROTATION_DATASET, "agent_key_rotated", "event");
        event.set("event.category", json!(["iam"]));
        event.set_str("yagura.subject_agent_id", agent.to_string());
        event.set_str("yagura.key_rotation.public_key", public_key);
        event.set("yagura.key_rotation.from_sequence", json!(from_sequence));
        if let Some(peer) = peer {
            event.set_str("source.ip", peer.to_string());
        }
        event.set_str(
            "message",
            format!("agent {agent} signs with a new key from batch {from_sequence} on"),
        );
        self.push(event);
    }

    /// Records that `agent` has been silent for `silent_seconds` (longer than allowed).
    pub fn agent_offline(&self, agent: Uuid, hostname: &str, last_seen: &str, silent_seconds: u64) {
        tracing::warn!(%agent, hostname, silent_seconds, "agent offline");
        let mut event = self.base_event(OFFLINE_DATASET, "agent_offline", "event");
        event.set_str("yagura.subject_agent_id", agent.to_string());
        event.set_str("yagura.subject_hostname", hostname);
        event.set_str("yagura.last_seen", last_seen);
        event.set("yagura.silent_seconds", json!(silent_seconds));
        event.set_str(
            "message",
            format!("agent {agent} ({hostname}) silent for {silent_seconds} s, marked offline"),
        );
        self.push(event);
    }

    /// Records that changed detection rules were refused (`problems`: `file:line:
    /// message` each); the running rules stay.
    pub fn rules_refused(&self, problems: &[String]) {
        let mut event = self.base_event(DETECT_DATASET, "rules_refused", "event");
        event.set("event.category", json!(["configuration"]));
        event.set("event.type", json!(["change"]));
        event.set_str("event.outcome", "failure");
        event.set("yagura.rules.problems", json!(problems));
        let first = problems.first().map_or("", String::as_str);
        event.set_str(
            "message",
            format!(
                "changed detection rules refused, the running rules stay: {first}{}",
                if problems.len() > 1 {
                    format!(" (and {} more)", problems.len() - 1)
                } else {
                    String::new()
                }
            ),
        );
        self.push(event);
    }

    /// Records that index retention deleted a day (`reason`: `age` or `size`).
    pub fn index_day_deleted(&self, day: &str, reason: &str, events: u64, bytes: u64) {
        let mut event = self.base_event(INDEX_RETENTION_DATASET, "index_day_deleted", "event");
        event.set("event.category", json!(["database"]));
        event.set("event.type", json!(["deletion"]));
        event.set_str("yagura.retention.day", day);
        event.set_str("yagura.retention.reason", reason);
        event.set("yagura.retention.events", json!(events));
        event.set("yagura.retention.bytes", json!(bytes));
        let why = match reason {
            "age" => "older than the retention age",
            _ => "the index is over its size budget",
        };
        event.set_str(
            "message",
            format!("index day {day} deleted ({why}): {events} events, {bytes} bytes"),
        );
        self.push(event);
    }

    fn push(&self, event: Event) {
        if let Ok(mut pending) = self.pending.lock() {
            if pending.ready.len() >= MAX_READY_EVENTS {
                pending.overflow += 1;
            } else {
                pending.ready.push(event);
            }
        }
    }

    /// Takes what is ready to seal: new events, the summaries of windows that closed (all
    /// windows when `closing`), and one `suppressed` event for what the bounds dropped.
    pub(crate) fn take_ready(&self, closing: bool) -> Vec<Event> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let mut out = std::mem::take(&mut pending.ready);
        let closed: Vec<WindowKey> = pending
            .windows
            .iter()
            .filter(|(_, w)| closing || w.opened.elapsed() >= WINDOW)
            .map(|(k, _)| *k)
            .collect();
        for key in closed {
            if let Some(window) = pending.windows.remove(&key)
                && window.suppressed > 0
            {
                let report = SecurityReport {
                    action: key.0,
                    peer: key.1,
                    claimed_agent: key.2,
                    reason: window.last_reason,
                };
                out.push(self.security_event(&report, window.suppressed, window.opened_at));
            }
        }
        if pending.overflow > 0 {
            let mut event = self.base_event(SECURITY_DATASET, "suppressed", "alert");
            event.set("yagura.count", json!(pending.overflow));
            event.set_str(
                "message",
                format!(
                    "{} collector events not recorded individually (bounds reached)",
                    pending.overflow
                ),
            );
            pending.overflow = 0;
            out.push(event);
        }
        out
    }
}

/// Seals pending collector events into signed batches and appends them to the archive,
/// every [`SEAL_INTERVAL`], until `cancel`; then seals what is left once more.
pub async fn run_sealer<A: Archive>(
    events: CollectorEvents,
    key: AgentKey,
    archive: Arc<A>,
    cancel: CancellationToken,
) {
    loop {
        let closing = tokio::select! {
            _ = tokio::time::sleep(SEAL_INTERVAL) => false,
            _ = cancel.cancelled() => true,
        };
        let ready = events.take_ready(closing);
        for chunk in ready.chunks(MAX_EVENTS_PER_BATCH) {
            if let Err(error) = seal_and_append(&events, &key, archive.as_ref(), chunk).await {
                tracing::error!(%error, dropped = chunk.len(), "collector events not archived");
            }
        }
        if closing {
            return;
        }
    }
}

async fn seal_and_append<A: Archive>(
    events: &CollectorEvents,
    key: &AgentKey,
    archive: &A,
    chunk: &[Event],
) -> Result<(), String> {
    let agent = events.collector_agent_id;
    let sequence = archive.last_sequence(agent).unwrap_or(0) + 1;
    let batch =
        SignedBatch::seal(key, agent, sequence, Utc::now(), chunk).map_err(|e| e.to_string())?;
    match archive
        .append(agent, sequence, batch.into_bytes())
        .await
        .map_err(|e| e.to_string())?
    {
        Appended::Accepted { offset, .. } => {
            tracing::debug!(
                sequence,
                offset,
                events = chunk.len(),
                "collector events archived"
            );
            Ok(())
        }
        Appended::Duplicate { last_sequence } => Err(format!(
            "collector sequence {sequence} already archived (last {last_sequence})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: &'static str) -> SecurityReport {
        SecurityReport {
            action,
            peer: Some("192.0.2.7".parse().expect("ip")),
            claimed_agent: None,
            reason: "test".into(),
        }
    }

    #[test]
    fn security_events_are_aggregated_per_key() {
        let events = CollectorEvents::new(Uuid::now_v7());
        for _ in 0..100 {
            events.security(report("bad_signature"));
        }
        events.security(report("unknown_agent"));
        let first = events.take_ready(false);
        assert_eq!(first.len(), 2, "one event per key at once");
        let summary = events.take_ready(true);
        assert_eq!(summary.len(), 1, "one summary for the 99 others");
        assert_eq!(summary[0].get("yagura.count"), Some(&json!(99)));
        assert_eq!(summary[0].action(), Some("bad_signature"));
        assert_eq!(summary[0].get_str("source.ip"), Some("192.0.2.7"));
        for event in first.iter().chain(&summary) {
            event.validate().expect("valid event");
        }
    }

    #[test]
    fn bounds_turn_a_flood_into_one_suppressed_event() {
        let events = CollectorEvents::new(Uuid::now_v7());
        for i in 0..(MAX_OPEN_WINDOWS + 50) {
            events.security(SecurityReport {
                action: "bad_signature",
                peer: None,
                claimed_agent: Some(Uuid::from_u128(i as u128)),
                reason: "flood".into(),
            });
        }
        let ready = events.take_ready(false);
        assert_eq!(ready.len(), MAX_OPEN_WINDOWS + 1);
        let last = ready.last().expect("suppressed");
        assert_eq!(last.action(), Some("suppressed"));
        assert_eq!(last.get("yagura.count"), Some(&json!(50)));
    }

    #[test]
    fn key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("collector.key");
        let key = load_or_create_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_key(&path).expect("load");
        assert_eq!(key.verifying_key(), again.verifying_key());
    }
}
