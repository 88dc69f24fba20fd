//! The fleet: enrolled agents, the keys that sign their batches, and their live state.
//!
//! Ingest looks up an agent's verifying key on every batch, so keys are cached in memory
//! after the first lookup; the database stays the record. Revocation goes through
//! [`AgentRegistry::revoke`] (the API route `POST /api/v1/agents/{id}/revoke`, which the
//! CLI calls), which updates the database and drops the cached entry in the same call, so
//! the very next batch of a revoked agent is refused. Enrollment goes through the store in
//! one transaction (token use and agent row together).
//!
//! [`FleetState`] keeps what the collector sees of each agent in memory (last seen, peer,
//! last sequence, and the figures of its latest heartbeat event); [`run_fleet_monitor`]
//! marks agents silent for longer than `offline_after` as offline (raising an
//! `agent_offline` event once per silence) and writes the state to the database every few
//! seconds, so `yagura agents list` can read it offline.

pub mod allowlist;
pub mod inventory;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use yagura_shared::verifying_key_from_base64;
use yagura_shared::{Event, VerifyingKey};

use crate::cluster::directory::AgentDirectory;
use crate::collector_events::CollectorEvents;
use crate::store::{
    AgentRecord, AgentState, KeyRotationOutcome, RevokeOutcome, Store, StoreError, TokenRefusal,
};
use yagura_shared::key_rotation::KeyRotation;

/// Dataset of the agents' own heartbeat events.
pub const HEARTBEAT_DATASET: &str = "yagura.agent.heartbeat";

/// An agent as ingest needs it: its record and its parsed keys.
#[derive(Debug, Clone)]
pub struct KnownAgent {
    pub record: AgentRecord,
    /// The current key.
    pub key: VerifyingKey,
    /// Keys it rotated away from: (first sequence it no longer signs, key), ascending.
    pub retired: Vec<(u64, VerifyingKey)>,
}

impl KnownAgent {
    /// The key that signs batch `sequence` (see [`AgentRecord::public_key_for`]).
    pub fn key_for(&self, sequence: u64) -> &VerifyingKey {
        self.retired
            .iter()
            .find(|(until, _)| sequence < *until)
            .map_or(&self.key, |(_, key)| key)
    }
}

/// Why a key rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyRotationError {
    #[error("no active agent {0}")]
    NotRotatable(Uuid),
    #[error("the rotation is not signed by the agent's current key and the new one: {0}")]
    BadSignature(String),
    #[error(
        "from_sequence {from} is not after the agent's last archived batch ({last}): batches \
         after it are already signed with the old key"
    )]
    TooEarly { from: u64, last: u64 },
    #[error("the key on record is not the one this rotation moves from")]
    KeyChanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("enrollment token refused ({0:?})")]
    Refused(TokenRefusal),
    #[error("public key: {0}")]
    BadKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct AgentRegistry {
    store: Store,
    cache: Arc<RwLock<HashMap<Uuid, Arc<KnownAgent>>>>,
    /// Bumped at every change of an agent's keys or status: a lookup that read the
    /// database before a change must not cache what it read.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// In a cluster: the agent records every node shares (see [`AgentDirectory`]).
    directory: Option<AgentDirectory>,
    /// An agent enrolled here could not be published: publish what is missing at the
    /// next reconnection of the follower.
    unpublished: Arc<std::sync::atomic::AtomicBool>,
}

impl AgentRegistry {
    pub fn new(store: Store) -> Self {
        AgentRegistry {
            store,
            cache: Arc::default(),
            generation: Arc::default(),
            directory: None,
            unpublished: Arc::default(),
        }
    }

    /// A registry of a cluster node: changes made here are published to `directory`,
    /// agents this node has not heard of are looked up there.
    pub fn with_directory(mut self, directory: AgentDirectory) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The agent record in this node's store; in a cluster, one this node has not
    /// heard of is read from the directory (and kept, unless it is another node's own
    /// signing identity: each node finds its own by kind). Records this node holds are
    /// kept current by [`Self::follow_directory`].
    async fn record(&self, id: Uuid) -> Result<Option<AgentRecord>, StoreError> {
        let local = self.store.agent(id).await?;
        let (Some(directory), None) = (&self.directory, &local) else {
            return Ok(local);
        };
        let Some(shared) = directory.entry(id).await? else {
            return Ok(None);
        };
        if !shared.record.is_internal() {
            self.store.import_agent(&shared.record).await?;
        }
        Ok(Some(shared.record))
    }

    /// The directory's record of `id` and its revision, after publishing this node's
    /// record if the directory has none yet (enrolled here while NATS was away).
    async fn shared_record(
        &self,
        directory: &AgentDirectory,
        id: Uuid,
    ) -> Result<Option<crate::cluster::directory::Versioned>, StoreError> {
        if let Some(found) = directory.entry(id).await? {
            return Ok(Some(found));
        }
        let Some(local) = self.store.agent(id).await? else {
            return Ok(None);
        };
        directory.publish_if_absent(&local).await?;
        directory.entry(id).await
    }

    /// Takes a record this node changed in the directory into its own store.
    async fn take(&self, record: &AgentRecord) -> Result<(), StoreError> {
        self.store.import_agent(record).await?;
        self.forget(record.id);
        Ok(())
    }

    /// Publishes every record of this node's store the directory does not have yet
    /// (agents enrolled here, this node's signing identities).
    pub async fn publish_missing(&self) -> Result<(), StoreError> {
        if let Some(directory) = &self.directory {
            self.unpublished
                .store(false, std::sync::atomic::Ordering::SeqCst);
            for record in self.store.agents().await? {
                let record = self.store.agent(record.id).await?.unwrap_or(record);
                directory.publish_if_absent(&record).await?;
            }
        }
        Ok(())
    }

    /// Follows the directory until `cancel`: copies every agent record other nodes
    /// publish into this node's store and drops the cached keys of each, so a
    /// revocation or key rotation made anywhere holds here within moments. Reconnects
    /// after an error.
    pub async fn follow_directory(&self, cancel: CancellationToken) {
        let Some(directory) = self.directory.clone() else {
            return;
        };
        loop {
            let error = tokio::select! {
                error = self.copy_from_directory(&directory) => error,
                () = cancel.cancelled() => return,
            };
            if self.unpublished.load(std::sync::atomic::Ordering::SeqCst)
                && let Err(error) = self.publish_missing().await
            {
                self.unpublished
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(%error, "publishing agents enrolled here to the directory");
            }
            tracing::warn!(%error, "following the agent directory; again in 1 s");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Copies the directory's records into this node's store until an error.
    async fn copy_from_directory(&self, directory: &AgentDirectory) -> StoreError {
        let mut watch = match directory.watch().await {
            Ok(watch) => watch,
            Err(error) => return error,
        };
        loop {
            let record = match watch.next().await {
                Ok(record) => record,
                Err(error) => return error,
            };
            let held = match self.store.agent(record.id).await {
                Ok(held) => held,
                Err(error) => return error,
            };
            let take = match &held {
                Some(held) => crate::cluster::directory::supersedes(&record, held),
                None => !record.is_internal(),
            };
            if take && let Err(error) = self.store.import_agent(&record).await {
                return error;
            }
            self.forget(record.id);
        }
    }

    /// The agent and its key, from the cache or the database.
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<KnownAgent>>, StoreError> {
        if let Some(found) = self.cache.read().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(Some(found));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let Some(record) = self.record(id).await? else {
            return Ok(None);
        };
        let key = verifying_key_from_base64(&record.public_key)
            .map_err(|e| StoreError::Invalid(format!("agent {id} key: {e}")))?;
        let retired = record
            .retired_keys
            .iter()
            .map(|k| {
                verifying_key_from_base64(&k.public_key)
                    .map(|key| (k.until_sequence, key))
                    .map_err(|e| StoreError::Invalid(format!("agent {id} retired key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let known = Arc::new(KnownAgent {
            record,
            key,
            retired,
        });
        if let Ok(mut cache) = self.cache.write()
            && self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            cache.insert(id, Arc::clone(&known));
        }
        Ok(Some(known))
    }

    /// Registers a new agent with `public_key` (base64 Ed25519) against an enrollment token.
    pub async fn enroll(
        &self,
        token: &str,
        public_key: &str,
        hostname: &str,
        version: &str,
    ) -> Result<AgentRecord, EnrollError> {
        verifying_key_from_base64(public_key).map_err(|e| EnrollError::BadKey(e.to_string()))?;
        let record = self
            .store
            .enroll_agent(token, public_key, hostname, version)
            .await?
            .map_err(EnrollError::Refused)?;
        if let Some(directory) = &self.directory
            && let Err(error) = directory.publish_if_absent(&record).await
        {
            // The agent is enrolled here (its token use is spent): it ships through this
            // node at once, and reaches the others once the record is published.
            tracing::error!(agent = %record.id, %error, "publishing an enrolled agent; retried");
            self.unpublished
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(record)
    }

    /// Moves an agent to the key a signed [`KeyRotation`] names, from its first sequence
    /// on; `last_archived` is the agent's last archived sequence (the new key must not
    /// claim batches already signed with the old one). Drops the cached entry so the very
    /// next batch is verified with the new keys.
    pub async fn rotate_key(
        &self,
        id: Uuid,
        request: &KeyRotation,
        last_archived: Option<u64>,
    ) -> Result<KeyRotationOutcome, KeyRotationError> {
        // In a cluster the change is decided against the directory's record, and
        // published only if nobody changed it meanwhile.
        let shared = match &self.directory {
            Some(directory) => self.shared_record(directory, id).await?,
            None => None,
        };
        if let Some(shared) = &shared {
            match self.store.agent(id).await? {
                Some(held) if !crate::cluster::directory::supersedes(&shared.record, &held) => {}
                _ if shared.record.is_internal() => {}
                _ => self.take(&shared.record).await?,
            }
        }
        let Some(agent) = self.record(id).await? else {
            return Err(KeyRotationError::NotRotatable(id));
        };
        if !agent.is_active() || agent.is_internal() {
            return Err(KeyRotationError::NotRotatable(id));
        }
        // A retried request whose rotation was done is answered as done, once it checks
        // out against the key that rotation moved from.
        if let Some((from_key, from_sequence)) =
            self.store.key_rotation_to(id, &request.public_key).await?
        {
            let signer = verifying_key_from_base64(&from_key)
                .map_err(|e| StoreError::Invalid(format!("agent {id} key: {e}")))?;
            request
                .verify(id, &signer)
                .map_err(|e| KeyRotationError::BadSignature(e.to_string()))?;
            return if from_sequence == request.from_sequence {
                Ok(KeyRotationOutcome::AlreadyDone)
            } else {
                Err(KeyRotationError::KeyChanged)
            };
        }
        let current = verifying_key_from_base64(&agent.public_key)
            .map_err(|e| StoreError::Invalid(format!("agent {id} key: {e}")))?;
        request
            .verify(id, &current)
            .map_err(|e| KeyRotationError::BadSignature(e.to_string()))?;
        if let Some(last) = last_archived
            && request.from_sequence <= last
        {
            return Err(KeyRotationError::TooEarly {
                from: request.from_sequence,
                last,
            });
        }
        let outcome = self
            .store
            .rotate_agent_key(
                id,
                &agent.public_key,
                &request.public_key,
                request.from_sequence,
            )
            .await?;
        self.forget(id);
        if outcome == KeyRotationOutcome::Rotated
            && let (Some(directory), Some(shared)) = (&self.directory, &shared)
        {
            let rotated = self
                .store
                .agent(id)
                .await?
                .ok_or_else(|| StoreError::Invalid(format!("agent {id} vanished")))?;
            let published = directory.replace(&rotated, shared.revision).await;
            if !matches!(published, Ok(true)) {
                // Changed elsewhere meanwhile (revoked, rotated), or not published: the
                // directory's record stands and this rotation is undone here, so a
                // retry decides again instead of finding it done.
                let now = match directory.entry(id).await {
                    Ok(Some(now)) => now.record,
                    _ => shared.record.clone(),
                };
                self.take(&now).await?;
                self.store
                    .forget_key_rotation(id, &request.public_key)
                    .await?;
                published?;
                return Err(KeyRotationError::KeyChanged);
            }
        }
        match outcome {
            KeyRotationOutcome::KeyChanged | KeyRotationOutcome::NotRotatable => {
                Err(KeyRotationError::KeyChanged)
            }
            done => Ok(done),
        }
    }

    /// Revokes an agent in the database and drops it from the key cache.
    pub async fn revoke(&self, id: Uuid) -> Result<RevokeOutcome, StoreError> {
        if let Some(directory) = &self.directory {
            // Decided on the directory's record and published at its revision: a
            // rotation made elsewhere meanwhile is read again, never overwritten.
            for _ in 0..5 {
                let Some(shared) = self.shared_record(directory, id).await? else {
                    return Ok(RevokeOutcome::NotFound);
                };
                let record = shared.record;
                if record.is_internal() {
                    return Ok(RevokeOutcome::Refused);
                }
                if !record.is_active() {
                    self.take(&record).await?;
                    return Ok(RevokeOutcome::AlreadyRevoked);
                }
                let revoked = AgentRecord {
                    status: "revoked".into(),
                    revoked_at: Some(Utc::now().to_rfc3339()),
                    ..record
                };
                if directory.replace(&revoked, shared.revision).await? {
                    self.take(&revoked).await?;
                    return Ok(RevokeOutcome::Revoked);
                }
            }
            return Err(StoreError::Directory(format!(
                "agent {id} kept changing while being revoked; revoke it again"
            )));
        }
        let outcome = self.store.revoke_agent(id).await?;
        self.forget(id);
        Ok(outcome)
    }

    /// Drops `id` from the cache after a change in the database (see `generation`).
    fn forget(&self, id: Uuid) {
        // Under the cache's write lock: a lookup inserting concurrently either sees the
        // new generation, or inserted before this removal.
        if let Ok(mut cache) = self.cache.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            cache.remove(&id);
        }
    }

    pub async fn list(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.store.agents().await
    }
}

/// Figures an agent reports in its heartbeat events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub agent_version: Option<String>,
    pub uptime_seconds: Option<u64>,
    pub spool_batches: Option<u64>,
    pub spool_bytes: Option<u64>,
    pub lag_bytes: Option<u64>,
}

impl Heartbeat {
    /// The heartbeat figures of `event`, if it is a heartbeat event.
    pub fn from_event(event: &Event) -> Option<Self> {
        if event.dataset() != Some(HEARTBEAT_DATASET) {
            return None;
        }
        let number = |path: &str| event.get(path).and_then(serde_json::Value::as_u64);
        Some(Heartbeat {
            agent_version: event.get_str("agent.version").map(str::to_string),
            uptime_seconds: number("yagura.agent.uptime_seconds"),
            spool_batches: number("yagura.agent.spool.batches"),
            spool_bytes: number("yagura.agent.spool.bytes"),
            lag_bytes: number("yagura.agent.lag_bytes"),
        })
    }
}

#[derive(Debug, Clone)]
struct LiveAgent {
    state: AgentState,
    last_seen: DateTime<Utc>,
    dirty: bool,
}

/// What the collector currently knows of each agent's connectivity. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    agents: Arc<Mutex<HashMap<Uuid, LiveAgent>>>,
}

impl FleetState {
    /// Starts from the state persisted by a previous run.
    pub fn from_persisted(states: Vec<AgentState>) -> Self {
        let map = states
            .into_iter()
            .map(|state| {
                let last_seen = DateTime::parse_from_rfc3339(&state.last_seen_at)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|_| Utc::now());
                (
                    state.agent_id,
                    LiveAgent {
                        state,
                        last_seen,
                        dirty: false,
                    },
                )
            })
            .collect();
        FleetState {
            agents: Arc::new(Mutex::new(map)),
        }
    }

    /// An authenticated batch of `agent` arrived (accepted or acknowledged again).
    pub fn record_batch(
        &self,
        agent: Uuid,
        peer: Option<IpAddr>,
        sequence: u64,
        heartbeat: Option<Heartbeat>,
    ) {
        let now = Utc::now();
        let Ok(mut agents) = self.agents.lock() else {
            return;
        };
        let live = agents.entry(agent).or_insert_with(|| LiveAgent {
            state: AgentState {
                agent_id: agent,
                ..AgentState::default()
            },
            last_seen: now,
            dirty: true,
        });
        live.last_seen = now;
        live.dirty = true;
        live.state.last_seen_at = yagura_shared::event::format_timestamp(now);
        live.state.last_peer = peer.map(|p| p.to_string()).unwrap_or_default();
        live.state.last_sequence = live.state.last_sequence.max(sequence);
        live.state.connectivity = "online".into();
        if let Some(beat) = heartbeat {
            live.state.heartbeat_at = Some(live.state.last_seen_at.clone());
            if beat.agent_version.is_some() {
                live.state.agent_version = beat.agent_version;
            }
            live.state.uptime_seconds = beat.uptime_seconds.or(live.state.uptime_seconds);
            live.state.spool_batches = beat.spool_batches.or(live.state.spool_batches);
            live.state.spool_bytes = beat.spool_bytes.or(live.state.spool_bytes);
            live.state.lag_bytes = beat.lag_bytes.or(live.state.lag_bytes);
        }
    }

    /// The state of one agent, if it ever sent a batch.
    pub fn get(&self, agent: Uuid) -> Option<AgentState> {
        self.agents
            .lock()
            .ok()?
            .get(&agent)
            .map(|l| l.state.clone())
    }

    /// Marks agents silent for longer than `offline_after` offline; returns them once.
    fn mark_silent(&self, offline_after: Duration) -> Vec<(Uuid, String, u64)> {
        let now = Utc::now();
        let Ok(mut agents) = self.agents.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for (id, live) in agents.iter_mut() {
            let silent = (now - live.last_seen).to_std().unwrap_or_default();
            if live.state.connectivity != "offline" && silent > offline_after {
                live.state.connectivity = "offline".into();
                live.dirty = true;
                gone.push((*id, live.state.last_seen_at.clone(), silent.as_secs()));
            }
        }
        gone
    }

    /// Takes the states changed since the last call.
    fn take_dirty(&self) -> Vec<AgentState> {
        let Ok(mut agents) = self.agents.lock() else {
            return Vec::new();
        };
        agents
            .values_mut()
            .filter(|l| l.dirty)
            .map(|l| {
                l.dirty = false;
                l.state.clone()
            })
            .collect()
    }
}

/// Every `check_interval`: marks silent agents offline (one `agent_offline` event per
/// silence) and persists changed fleet state. Persists once more on cancellation.
pub async fn run_fleet_monitor(
    fleet: FleetState,
    registry: AgentRegistry,
    events: CollectorEvents,
    offline_after: Duration,
    check_interval: Duration,
    cancel: CancellationToken,
) {
    let collector_id = events.collector_agent_id();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(check_interval) => false,
            _ = cancel.cancelled() => true,
        };
        if !stopping {
            for (agent, last_seen, silent) in fleet.mark_silent(offline_after) {
                if agent == collector_id {
                    continue;
                }
                let hostname = match registry.get(agent).await {
                    Ok(Some(known)) if known.record.is_internal() => continue,
                    Ok(Some(known)) => known.record.hostname.clone(),
                    _ => String::new(),
                };
                events.agent_offline(agent, &hostname, &last_seen, silent);
            }
        }
        let dirty = fleet.take_dirty();
        if !dirty.is_empty()
            && let Err(error) = registry.store.save_agent_states(&dirty).await
        {
            tracing::error!(%error, "fleet state not persisted");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_figures_are_read_and_silence_marks_offline_once() {
        let mut beat = Event::new(Utc::now());
        beat.set_str("event.dataset", HEARTBEAT_DATASET);
        beat.set_str("agent.version", "0.2.0");
        beat.set("yagura.agent.spool.batches", serde_json::json!(3));
        beat.set("yagura.agent.lag_bytes", serde_json::json!(4096));
        let figures = Heartbeat::from_event(&beat).expect("heartbeat");
        assert_eq!(figures.spool_batches, Some(3));
        assert_eq!(figures.lag_bytes, Some(4096));
        assert!(Heartbeat::from_event(&Event::new(Utc::now())).is_none());

        let fleet = FleetState::default();
        let agent = Uuid::now_v7();
        fleet.record_batch(agent, None, 4, Some(figures));
        let state = fleet.get(agent).expect("state");
        assert_eq!(state.agent_version.as_deref(), Some("0.2.0"));
        assert_eq!(state.connectivity, "online");
        assert_eq!(fleet.take_dirty().len(), 1);
        assert!(fleet.take_dirty().is_empty());
        assert!(fleet.mark_silent(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fleet.mark_silent(Duration::from_millis(10)).len(), 1);
        assert!(
            fleet.mark_silent(Duration::from_millis(10)).is_empty(),
            "once"
        );
        assert_eq!(fleet.get(agent).expect("state").connectivity, "offline");
        fleet.record_batch(agent, None, 5, None);
        assert_eq!(fleet.get(agent).expect("state").connectivity, "online");
        assert_eq!(fleet.get(agent).expect("state").spool_batches, Some(3));
    }
}
