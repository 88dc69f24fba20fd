//! Ingest: the checks a batch passes before the collector takes responsibility for it.
//!
//! In order: structure (400), agent known and active (401), payload hash and signature
//! (401), replay (acknowledged again, stored never twice), payload decompression under a
//! hard limit (413) and event validation (400), then the append to the archive, which
//! returns only once the batch is durable. Only then does the agent get its ack, so a batch
//! is either acknowledged and on disk, or not acknowledged and still in the agent's spool.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;
use yagura_shared::{BatchError, SignedBatch};

use crate::archive::{Appended, Archive};
use crate::fleet::AgentRegistry;

/// Limits applied to every batch.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest request body accepted, checked before and while reading it.
    pub max_body_bytes: usize,
    /// Largest decompressed payload: guards against decompression bombs.
    pub max_decompressed_bytes: usize,
}

/// Why a batch was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Malformed(String),
    #[error("unknown agent {0}")]
    UnknownAgent(Uuid),
    #[error("agent {0} is not active")]
    InactiveAgent(Uuid),
    #[error("batch does not verify: {0}")]
    Unverified(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("collector cannot store batches right now: {0}")]
    Unavailable(String),
}

/// What the agent is told when its batch is acknowledged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ack {
    pub status: &'static str,
    pub sequence: u64,
}

/// Verifies batches and appends them to the archive.
pub struct BatchIngest<A: Archive> {
    archive: Arc<A>,
    agents: AgentRegistry,
    limits: IngestLimits,
}

impl<A: Archive> BatchIngest<A> {
    pub fn new(archive: Arc<A>, agents: AgentRegistry, limits: IngestLimits) -> Self {
        BatchIngest {
            archive,
            agents,
            limits,
        }
    }

    pub fn limits(&self) -> IngestLimits {
        self.limits
    }

    /// Runs every check on `body` and archives it; returns the ack to send.
    pub async fn ingest(&self, body: Vec<u8>) -> Result<Ack, Rejection> {
        let batch =
            SignedBatch::from_bytes(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let header = batch.header().clone();
        let agent = self
            .agents
            .get(header.agent_id)
            .await
            .map_err(|e| Rejection::Unavailable(e.to_string()))?
            .ok_or(Rejection::UnknownAgent(header.agent_id))?;
        if !agent.record.is_active() {
            return Err(Rejection::InactiveAgent(header.agent_id));
        }
        batch
            .verify(&agent.key)
            .map_err(|e| Rejection::Unverified(e.to_string()))?;
        if self
            .archive
            .last_sequence(header.agent_id)
            .is_some_and(|last| header.sequence <= last)
        {
            return Ok(Ack {
                status: "duplicate",
                sequence: header.sequence,
            });
        }
        let events = batch
            .events(self.limits.max_decompressed_bytes)
            .map_err(|e| match e {
                BatchError::TooLarge { .. } => Rejection::TooLarge(e.to_string()),
                other => Rejection::Malformed(other.to_string()),
            })?;
        let agent_id = header.agent_id.to_string();
        if let Some(line) = events
            .iter()
            .position(|e| e.agent_id().is_some_and(|id| id != agent_id))
        {
            return Err(Rejection::Malformed(format!(
                "event on payload line {} names another agent than the batch",
                line + 1
            )));
        }
        match self
            .archive
            .append(header.agent_id, header.sequence, batch.into_bytes())
            .await
            .map_err(|e| Rejection::Unavailable(e.to_string()))?
        {
            Appended::Accepted { offset } => {
                tracing::debug!(agent = %header.agent_id, sequence = header.sequence, offset, "batch archived");
                Ok(Ack {
                    status: "accepted",
                    sequence: header.sequence,
                })
            }
            Appended::Duplicate { .. } => Ok(Ack {
                status: "duplicate",
                sequence: header.sequence,
            }),
        }
    }
}
