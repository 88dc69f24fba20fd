//! The chain of custody: from an indexed event back to the signed batch that carried it,
//! re-verified now.
//!
//! The archive keeps every batch exactly as the agent signed it. [`provenance`] takes an
//! event id, finds the indexed event (signer's agent id, batch sequence, archive offset),
//! reads that record from the archive, and checks again — the record CRC, that the header
//! names the same agent and sequence, the payload hash and the Ed25519 signature under the
//! agent key on record, and that the event really is in the payload. [`verify_archive`]
//! does the same for every batch of the archive (read-only, safe while a collector runs)
//! and names each batch that fails (agent, sequence, offset).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use uuid::Uuid;
use yagura_shared::{SignedBatch, parse_header, verifying_key_from_base64};

use crate::archive::{ArchiveError, Record, ScannedRecord, scan_offline};
use crate::index::{EventIndex, Hit, IndexError};
use crate::store::AgentRecord;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("no indexed event has id {0}")]
    EventNotFound(String),
    #[error("the archive no longer holds offset {0} (deleted by retention?)")]
    RecordGone(u64),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The signed header of an archived batch, for display.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderView {
    pub agent_id: String,
    pub sequence: u64,
    pub created_at: Option<String>,
    pub event_count: u32,
    pub payload_sha256: String,
}

/// The outcome of re-verifying one archived batch now.
#[derive(Debug, Clone, Serialize)]
pub struct BatchVerification {
    pub archive_offset: u64,
    pub received_at_ms: i64,
    /// `None` when even the header cannot be parsed.
    pub header: Option<HeaderView>,
    /// The agent's public key on record (base64), when the agent is known.
    pub agent_public_key: Option<String>,
    pub agent_hostname: Option<String>,
    pub crc_valid: bool,
    pub payload_hash_valid: bool,
    pub signature_valid: bool,
    /// Everything that failed, in words; empty when the batch verifies.
    pub problems: Vec<String>,
}

impl BatchVerification {
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }

    /// "agent A sequence S at offset O", for reports.
    pub fn name(&self) -> String {
        match &self.header {
            Some(h) => format!(
                "agent {} sequence {} at archive offset {}",
                h.agent_id, h.sequence, self.archive_offset
            ),
            None => format!(
                "unparseable batch at archive offset {}",
                self.archive_offset
            ),
        }
    }
}

/// Re-verifies one archived record against the agents on record.
pub fn verify_record(
    record: &Record,
    crc_valid: bool,
    agents: &HashMap<Uuid, AgentRecord>,
) -> BatchVerification {
    let mut check = BatchVerification {
        archive_offset: record.offset,
        received_at_ms: record.received_at_ms,
        header: None,
        agent_public_key: None,
        agent_hostname: None,
        crc_valid,
        payload_hash_valid: false,
        signature_valid: false,
        problems: Vec::new(),
    };
    if !crc_valid {
        check
            .problems
            .push("record CRC does not match: the archived bytes changed".into());
    }
    let header = match parse_header(&record.batch) {
        Ok(h) => h,
        Err(e) => {
            check.problems.push(format!("batch header: {e}"));
            return check;
        }
    };
    check.header = Some(HeaderView {
        agent_id: header.agent_id.to_string(),
        sequence: header.sequence,
        created_at: header
            .created_at()
            .map(yagura_shared::event::format_timestamp),
        event_count: header.event_count,
        payload_sha256: header.payload_sha256_hex(),
    });
    let Some(agent) = agents.get(&header.agent_id) else {
        check
            .problems
            .push(format!("agent {} is not on record", header.agent_id));
        return check;
    };
    // The key that signed this sequence: the current one, or one retired since.
    let public_key = agent.public_key_for(header.sequence);
    check.agent_public_key = Some(public_key.to_string());
    check.agent_hostname = Some(agent.hostname.clone());
    let key = match verifying_key_from_base64(public_key) {
        Ok(k) => k,
        Err(e) => {
            check.problems.push(format!("agent key on record: {e}"));
            return check;
        }
    };
    let batch = match SignedBatch::from_bytes(record.batch.clone()) {
        Ok(b) => b,
        Err(e) => {
            check.problems.push(format!("batch: {e}"));
            return check;
        }
    };
    match batch.verify(&key) {
        Ok(()) => {
            check.payload_hash_valid = true;
            check.signature_valid = true;
        }
        Err(yagura_shared::BatchError::PayloadHashMismatch) => {
            check
                .problems
                .push("payload SHA-256 does not match the signed header".into());
        }
        Err(e) => {
            check.payload_hash_valid = true;
            check.problems.push(format!("signature: {e}"));
        }
    }
    check
}

/// Reads the one record at `offset` from the archive in `dir` (read-only).
pub fn read_record_at(dir: &Path, offset: u64) -> Result<(Record, bool), CustodyError> {
    let mut found = None;
    scan_offline(dir, offset, |scanned| {
        found = Some(match scanned {
            ScannedRecord::Intact(r) => (r, true),
            ScannedRecord::CrcMismatch(r) => (r, false),
        });
        false
    })?;
    match found {
        Some((record, crc)) if record.offset == offset => Ok((record, crc)),
        _ => Err(CustodyError::RecordGone(offset)),
    }
}

/// What `yagura provenance` and `GET /api/v1/events/{id}/provenance` show.
#[derive(Debug, Clone, Serialize)]
pub struct ProvenanceReport {
    pub event_id: String,
    pub event: serde_json::Value,
    /// Agent, batch sequence and archive offset as indexed.
    pub indexed: crate::index::Provenance,
    pub batch: BatchVerification,
    /// The indexed provenance names this batch's agent and sequence.
    pub header_matches_index: bool,
    /// The event (same `event.id` and content) is in the verified payload.
    pub event_in_payload: bool,
    /// All of the above hold: the event is proven to come from the agent's key.
    pub verified: bool,
}

/// Traces `event_id` to its archived batch and re-verifies everything now.
pub fn provenance(
    event_id: &str,
    index: &EventIndex,
    archive_dir: &Path,
    agents: &HashMap<Uuid, AgentRecord>,
    max_decompressed_bytes: usize,
) -> Result<ProvenanceReport, CustodyError> {
    let hits = index.find_event(event_id)?;
    let Some(Hit { event, provenance }) = hits.into_iter().next() else {
        return Err(CustodyError::EventNotFound(event_id.to_string()));
    };
    let (record, crc_valid) = read_record_at(archive_dir, provenance.archive_offset)?;
    let mut batch = verify_record(&record, crc_valid, agents);
    let header_matches_index = batch.header.as_ref().is_some_and(|h| {
        h.agent_id == provenance.agent_id && h.sequence == provenance.batch_sequence
    });
    if !header_matches_index {
        batch
            .problems
            .push("the archived batch is not the one the index names".into());
    }
    let event_in_payload = batch.verified()
        && SignedBatch::from_bytes(record.batch.clone())
            .and_then(|b| b.events(max_decompressed_bytes))
            .is_ok_and(|events| {
                events.iter().any(|e| {
                    let mut original = serde_json::Value::Object(e.as_map().clone());
                    let mut indexed = event.clone();
                    // The indexer adds `event.ingested`; everything else is as signed.
                    for v in [&mut original, &mut indexed] {
                        if let Some(ev) = v.get_mut("event").and_then(|e| e.as_object_mut()) {
                            ev.remove("ingested");
                        }
                    }
                    e.id().is_some_and(|id| id.to_string() == event_id) && original == indexed
                })
            });
    if batch.verified() && !event_in_payload {
        batch
            .problems
            .push("the event is not in the batch's payload as signed".into());
    }
    Ok(ProvenanceReport {
        event_id: event_id.to_string(),
        verified: batch.verified() && header_matches_index && event_in_payload,
        event,
        indexed: provenance,
        batch,
        header_matches_index,
        event_in_payload,
    })
}

/// The result of `yagura archive verify`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveVerification {
    pub batches_checked: u64,
    pub batches_verified: u64,
    /// Every batch that failed, with its name and problems.
    pub failures: Vec<BatchVerification>,
    /// Damage that stopped reading a segment: (segment base, position, reason).
    pub unreadable: Vec<(u64, u64, String)>,
}

/// Re-verifies every batch received at or after `since_ms` (Unix ms; `None`: all).
pub fn verify_archive(
    archive_dir: &Path,
    agents: &HashMap<Uuid, AgentRecord>,
    since_ms: Option<i64>,
) -> Result<ArchiveVerification, CustodyError> {
    let mut out = ArchiveVerification::default();
    let end = scan_offline(archive_dir, 0, |scanned| {
        let (record, crc) = match scanned {
            ScannedRecord::Intact(r) => (r, true),
            ScannedRecord::CrcMismatch(r) => (r, false),
        };
        if since_ms.is_some_and(|since| record.received_at_ms < since) {
            return true;
        }
        out.batches_checked += 1;
        let check = verify_record(&record, crc, agents);
        if check.verified() {
            out.batches_verified += 1;
        } else {
            out.failures.push(check);
        }
        true
    })?;
    out.unreadable = end.unreadable;
    Ok(out)
}
