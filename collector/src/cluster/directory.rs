//! The agent directory a cluster's nodes share: every agent record (keys, retired keys,
//! status, labels) in one JetStream key-value bucket, `<stream>_AGENTS`.
//!
//! An agent enrolls at one gateway and may ship through any other, and a revocation
//! made on the api node must stop its batches at every gateway. Each node keeps its
//! own state store; the directory is what they agree on. A change made on a node
//! (enrollment, key rotation, revocation) is written to the node's store and then
//! published here; every node follows the bucket and copies what others published into
//! its store, dropping its cached keys for that agent. A gateway asked about an agent it
//! has not heard of yet reads the directory before refusing the batch.
//!
//! The identities a node signs its own batches with (its collector events, the shop's
//! audit trail) are published too, so any node can verify them in provenance checks, but
//! never copied into another node's store: each node finds its own identity there by
//! kind.

use async_nats::jetstream::{self, kv};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use crate::store::{AgentRecord, StoreError};

/// A record as the directory holds it, with the revision a change must name.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub record: AgentRecord,
    pub revision: u64,
}

/// Whether a copy from the directory may replace what a node holds: a revocation is
/// final, and key rotations only ever add retired keys. A copy that fails either is
/// older than the node's own (a replica behind, a change not published yet) and is not
/// taken.
pub fn supersedes(shared: &AgentRecord, held: &AgentRecord) -> bool {
    if held.is_internal() || shared.kind != held.kind {
        return false;
    }
    if !held.is_active() && shared.is_active() {
        return false;
    }
    shared.retired_keys.len() >= held.retired_keys.len() && shared != held
}

/// The shared agent records of a cluster.
#[derive(Clone)]
pub struct AgentDirectory {
    kv: kv::Store,
}

impl std::fmt::Debug for AgentDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentDirectory").finish_non_exhaustive()
    }
}

fn directory_error(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Directory(format!("{what}: {error}"))
}

/// The directory bucket of the cluster on `stream`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_AGENTS")
}

impl AgentDirectory {
    /// Opens the directory of the cluster on `stream` (made when missing).
    pub async fn open(
        context: &jetstream::Context,
        stream: &str,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        let kv = super::make_bucket(
            context,
            &bucket_name(stream),
            "yagura cluster agent directory",
            std::time::Duration::ZERO,
            replicas,
        )
        .await
        .map_err(StoreError::Directory)?;
        Ok(AgentDirectory { kv })
    }

    /// Publishes the record of a new agent (enrolled on this node), or this node's
    /// record at its start: never over a record the directory has, which may be newer.
    pub async fn publish_if_absent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record).map_err(|e| directory_error("encoding", e))?;
        match self.kv.create(record.id.to_string(), value.into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(directory_error("publishing an agent", e)),
        }
    }

    /// Replaces the record of an agent if the directory still holds `revision` of it:
    /// `false` when another node changed it meanwhile (read it again and decide anew).
    pub async fn replace(&self, record: &AgentRecord, revision: u64) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(record).map_err(|e| directory_error("encoding", e))?;
        match self
            .kv
            .update(record.id.to_string(), value.into(), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(directory_error("publishing an agent", e)),
        }
    }

    /// The directory's record of `id`, with its revision.
    pub async fn entry(&self, id: Uuid) -> Result<Option<Versioned>, StoreError> {
        let Some(entry) = self
            .kv
            .entry(id.to_string())
            .await
            .map_err(|e| directory_error("reading an agent", e))?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        Ok(Some(Versioned {
            record: decode(&entry.value)?,
            revision: entry.revision,
        }))
    }

    /// Every record now in the directory, then each change as it is published.
    pub async fn watch(&self) -> Result<DirectoryWatch, StoreError> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| directory_error("following the directory", e))?;
        Ok(DirectoryWatch { watch })
    }
}

/// The directory's records, then its changes ([`AgentDirectory::watch`]).
pub struct DirectoryWatch {
    watch: kv::Watch,
}

impl DirectoryWatch {
    /// The next record published; an error when the watch ended (the connection).
    pub async fn next(&mut self) -> Result<AgentRecord, StoreError> {
        while let Some(entry) = self.watch.next().await {
            let entry = entry.map_err(|e| directory_error("following the directory", e))?;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match decode(&entry.value) {
                Ok(record) => return Ok(record),
                Err(error) => {
                    tracing::warn!(key = entry.key, %error, "agent directory entry left out");
                }
            }
        }
        Err(StoreError::Directory("the directory watch ended".into()))
    }
}

fn decode(value: &[u8]) -> Result<AgentRecord, StoreError> {
    serde_json::from_slice(value).map_err(|e| directory_error("decoding an agent", e))
}
