//! The durable spool of sealed batches: the agent's crash-consistency core.
//!
//! Layout under the state directory:
//!
//! ```text
//! spool/00000000000000000042.batch   one sealed batch, not yet acked by the collector
//! spool/quarantine/                   spool files that could not be parsed
//! spool/rejected/                     batches the collector refused for good (400, 413)
//! acked.json                          {"last_acked_sequence": N, "checkpoints": [...]}
//! retired/<unix ms>/                  unshipped batches of a previous enrollment (--force)
//! ```
//!
//! A batch file is `"YGS1"`, a big-endian `u32` length, that many bytes of JSON header
//! (`{"sequence", "checkpoints"}`: the checkpoint of every tailed file *after* this batch's
//! lines) and then the signed batch exactly as it is sent.
//!
//! Guarantees:
//!
//! * Sealing (sequence number, bytes, signature) happens once, before the first send, so
//!   every resend is byte-identical. A batch file is written to a temporary file, fsync'd,
//!   renamed into place and the directory fsync'd: it exists whole or not at all.
//! * Events and the checkpoints that cover them are committed by that one rename, so after
//!   a crash at any instant the tailer resumes exactly after the last spooled line.
//! * Acking writes `acked.json` atomically *before* the batch file is deleted; a batch file
//!   whose sequence is not above `last_acked_sequence` is therefore an already-acked
//!   leftover and is removed on open.
//! * Sequence numbers start at 1, grow by one per batch and are never reused, not even
//!   those of quarantined or rejected batches.
//! * A file that does not parse is moved to `quarantine/` and logged; opening never fails
//!   because of one (no crash loop). Leftover temporary files are deleted.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use yagura_shared::{AgentKey, BatchError, Event, EventLines, SignedBatch};

use crate::durable;
use crate::tail::Checkpoint;

/// Default bound of the spool: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

const SPOOL_DIR: &str = "spool";
const QUARANTINE_DIR: &str = "quarantine";
const REJECTED_DIR: &str = "rejected";
const RETIRED_DIR: &str = "retired";
const ACKED_FILE: &str = "acked.json";
const BATCH_EXTENSION: &str = "batch";
const FILE_MAGIC: &[u8; 4] = b"YGS1";
/// A header larger than this is corruption, not a big checkpoint list.
const MAX_HEADER_BYTES: usize = 64 << 20;

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("cannot seal batch: {0}")]
    Seal(BatchError),
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("batch {sequence} is not the oldest spooled batch (oldest: {oldest:?})")]
    NotOldest { sequence: u64, oldest: Option<u64> },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |cause| SpoolError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A sealed batch as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    pub sequence: u64,
    pub event_count: u32,
    /// The signed batch bytes: the request body, identical on every send.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHeader {
    sequence: u64,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AckedState {
    last_acked_sequence: u64,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Debug)]
struct BatchMeta {
    file_bytes: u64,
    checkpoints: Vec<Checkpoint>,
}

/// The spool. Not shared between processes; one `Spool` per state directory.
#[derive(Debug)]
pub struct Spool {
    state_dir: PathBuf,
    dir: PathBuf,
    batches: BTreeMap<u64, BatchMeta>,
    bytes: u64,
    max_bytes: u64,
    next_sequence: u64,
    last_acked_sequence: u64,
    /// The checkpoints after the newest committed line (spooled or acked).
    checkpoints: Vec<Checkpoint>,
    /// The batches the shipper is sending (all those up to this sequence): never dropped
    /// to make room.
    in_flight: Option<u64>,
    /// Batches lost since the last [`Spool::take_losses`] (quarantined files).
    losses: Vec<SpoolLoss>,
    /// The highest sequence `acked.json` durably records, behind its own lock: an
    /// [`AckRecord`] is written without the spool's lock, and this keeps the file from
    /// ever going back should two writes race.
    acked_on_disk: Arc<Mutex<u64>>,
}

/// An acknowledgement checked under the spool's lock ([`Spool::prepare_ack`]), made
/// durable without it ([`AckRecord::write`]: `acked.json`, two fsyncs) and then applied
/// ([`Spool::settle_ack`]). The producer takes the spool's lock on every step, so it
/// never waits for the disk on the shipper's behalf. Between the write and the settle the
/// acknowledged batches are still in the spool's memory, in flight, which only delays
/// their space being freed; after a crash there they are acked leftovers, removed on open.
#[derive(Debug)]
#[must_use = "an acknowledgement is recorded only once written and settled"]
pub struct AckRecord {
    path: PathBuf,
    state: AckedState,
    sequences: Vec<u64>,
    acked_on_disk: Arc<Mutex<u64>>,
}

impl AckRecord {
    /// Writes `acked.json` atomically and durably, unless there is nothing to record or a
    /// record as new or newer is already written.
    pub fn write(&self) -> Result<(), SpoolError> {
        let mut on_disk = self.acked_on_disk.lock().unwrap_or_else(|p| p.into_inner());
        if self.sequences.is_empty() || *on_disk >= self.state.last_acked_sequence {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| SpoolError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        durable::write_atomic(&self.path, &json, 0o600).map_err(io_err(&self.path))?;
        *on_disk = (*on_disk).max(self.state.last_acked_sequence);
        Ok(())
    }
}

/// Seals the next batch outside the spool's lock ([`Spool::sealer`]).
#[derive(Debug, Clone)]
pub struct Sealer {
    dir: PathBuf,
    sequence: u64,
}

/// A batch file written and synced by a [`Sealer`], waiting for [`Spool::commit`].
#[derive(Debug)]
pub struct WrittenBatch {
    batch: SpooledBatch,
    file_bytes: u64,
    checkpoints: Vec<Checkpoint>,
}

impl Sealer {
    /// Compresses, signs and durably writes `events` with `checkpoints` (which must cover
    /// exactly these events and all earlier ones) as the batch file of the next sequence.
    /// A crash after this leaves a complete batch that [`Spool::open`] takes in.
    pub fn seal(
        &self,
        events: &EventLines,
        checkpoints: &[Checkpoint],
        key: &AgentKey,
        agent_id: Uuid,
    ) -> Result<WrittenBatch, SpoolError> {
        let sequence = self.sequence;
        let batch = SignedBatch::seal_lines(key, agent_id, sequence, Utc::now(), events)
            .map_err(SpoolError::Seal)?;
        let event_count = batch.header().event_count;
        let header = FileHeader {
            sequence,
            checkpoints: checkpoints.to_vec(),
        };
        let header_json = serde_json::to_vec(&header).map_err(|e| SpoolError::Corrupt {
            path: self.dir.clone(),
            reason: format!("cannot encode header: {e}"),
        })?;
        let header_len = u32::try_from(header_json.len()).map_err(|_| SpoolError::Corrupt {
            path: self.dir.clone(),
            reason: "checkpoint header larger than 4 GiB".into(),
        })?;
        let bytes = batch.into_bytes();
        let mut file = Vec::with_capacity(8 + header_json.len() + bytes.len());
        file.extend_from_slice(FILE_MAGIC);
        file.extend_from_slice(&header_len.to_be_bytes());
        file.extend_from_slice(&header_json);
        file.extend_from_slice(&bytes);
        let path = self.dir.join(batch_file_name(sequence));
        durable::write_atomic(&path, &file, 0o600).map_err(io_err(&path))?;
        Ok(WrittenBatch {
            batch: SpooledBatch {
                sequence,
                event_count,
                bytes,
            },
            file_bytes: file.len() as u64,
            checkpoints: header.checkpoints,
        })
    }
}

/// Events that left the spool without reaching the collector.
#[derive(Debug, Clone)]
pub struct SpoolLoss {
    /// `spool_full` or `spool_corrupt`.
    pub reason: &'static str,
    pub sequence: u64,
    /// The dropped events, when they could be read (a corrupt file's cannot).
    pub events: Option<Vec<Event>>,
}

impl Spool {
    /// Opens (creating if needed) the spool under `state_dir` and recovers its state:
    /// deletes temporary files and already-acked leftovers, quarantines unparsable files.
    pub fn open(state_dir: &Path) -> Result<Spool, SpoolError> {
        let dir = state_dir.join(SPOOL_DIR);
        durable::create_private_dir(&dir).map_err(io_err(&dir))?;
        let acked = read_acked(state_dir)?;
        let mut highest_seen = acked.last_acked_sequence;
        let mut batches = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir))?;
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            if !entry.file_type().map_err(io_err(&dir))?.is_dir() {
                names.push(entry.path());
            }
        }
        names.sort();
        let mut losses = Vec::new();
        for path in names {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(durable::TMP_SUFFIX) {
                tracing::info!(path = %path.display(), "removing temporary file left by a crash");
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let Some(sequence) = sequence_of_name(&name) else {
                tracing::warn!(path = %path.display(), "ignoring unexpected file in the spool");
                continue;
            };
            highest_seen = highest_seen.max(sequence);
            if sequence <= acked.last_acked_sequence {
                tracing::debug!(sequence, "removing batch already acked");
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            match read_batch_file(&path) {
                Ok((header, batch))
                    if header.sequence == sequence && batch.header().sequence == sequence =>
                {
                    let file_bytes = std::fs::metadata(&path).map_err(io_err(&path))?.len();
                    batches.insert(
                        sequence,
                        BatchMeta {
                            file_bytes,
                            checkpoints: header.checkpoints,
                        },
                    );
                }
                Ok(_) => {
                    quarantine(&dir, &path, "sequence in the file does not match its name");
                    losses.push(SpoolLoss {
                        reason: "spool_corrupt",
                        sequence,
                        events: None,
                    });
                }
                Err(e) => {
                    quarantine(&dir, &path, &e.to_string());
                    losses.push(SpoolLoss {
                        reason: "spool_corrupt",
                        sequence,
                        events: None,
                    });
                }
            }
        }
        let checkpoints = match batches.values().next_back() {
            Some(newest) => newest.checkpoints.clone(),
            None => acked.checkpoints,
        };
        let bytes = batches.values().map(|m| m.file_bytes).sum();
        Ok(Spool {
            state_dir: state_dir.to_path_buf(),
            dir,
            batches,
            bytes,
            max_bytes: DEFAULT_MAX_BYTES,
            next_sequence: highest_seen + 1,
            last_acked_sequence: acked.last_acked_sequence,
            checkpoints,
            in_flight: None,
            losses,
            acked_on_disk: Arc::new(Mutex::new(acked.last_acked_sequence)),
        })
    }

    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// Whether the spooled batches reach the bound: tailing should pause.
    pub fn is_full(&self) -> bool {
        self.bytes >= self.max_bytes
    }

    /// Seals `events` as the next batch and writes it durably together with `checkpoints`,
    /// which must cover exactly these events and all earlier ones.
    pub fn seal(
        &mut self,
        events: &EventLines,
        checkpoints: &[Checkpoint],
        key: &AgentKey,
        agent_id: Uuid,
    ) -> Result<SpooledBatch, SpoolError> {
        let written = self.sealer().seal(events, checkpoints, key, agent_id)?;
        self.commit(written)
    }

    /// What the one producer needs to seal the next batch without holding the spool:
    /// compressing, signing and the fsync then never block the shipper's acks.
    pub fn sealer(&self) -> Sealer {
        Sealer {
            dir: self.dir.clone(),
            sequence: self.next_sequence,
        }
    }

    /// Takes a batch written by [`Sealer::seal`] into the spool. Its sequence must still be
    /// the next one (there is one producer; anything else is a bug, and the file is
    /// removed so that it cannot clash later).
    pub fn commit(&mut self, written: WrittenBatch) -> Result<SpooledBatch, SpoolError> {
        let path = self.batch_path(written.batch.sequence);
        if written.batch.sequence != self.next_sequence {
            let _ = std::fs::remove_file(&path);
            return Err(SpoolError::Corrupt {
                path,
                reason: format!(
                    "batch sealed as sequence {} but the next sequence is {}",
                    written.batch.sequence, self.next_sequence
                ),
            });
        }
        // Only now is the sequence spent: a failed write left no file behind to clash.
        self.next_sequence += 1;
        self.bytes += written.file_bytes;
        self.batches.insert(
            written.batch.sequence,
            BatchMeta {
                file_bytes: written.file_bytes,
                checkpoints: written.checkpoints.clone(),
            },
        );
        self.checkpoints = written.checkpoints;
        Ok(written.batch)
    }

    /// The oldest spooled batch, read from disk. A file that no longer parses is
    /// quarantined and the next one returned.
    pub fn oldest(&mut self) -> Result<Option<SpooledBatch>, SpoolError> {
        Ok(self.oldest_batches(1, usize::MAX)?.into_iter().next())
    }

    /// The oldest spooled batches, up to `count` of them and `max_bytes` together (at
    /// least one, whatever its size), read from disk and marked in flight. Files that no
    /// longer parse are quarantined and skipped.
    pub fn oldest_batches(
        &mut self,
        count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        let mut found: Vec<SpooledBatch> = Vec::new();
        let mut bytes = 0usize;
        let mut after: Option<u64> = None;
        while found.len() < count {
            let next = match after {
                None => self.batches.keys().next(),
                Some(a) => self.batches.range(a + 1..).map(|(k, _)| k).next(),
            };
            let Some(&sequence) = next else { break };
            after = Some(sequence);
            let path = self.batch_path(sequence);
            match read_batch_file(&path) {
                Ok((_, batch)) => {
                    let batch = SpooledBatch {
                        sequence,
                        event_count: batch.header().event_count,
                        bytes: batch.into_bytes(),
                    };
                    if !found.is_empty() && bytes + batch.bytes.len() > max_bytes {
                        break;
                    }
                    bytes += batch.bytes.len();
                    self.in_flight = Some(sequence);
                    found.push(batch);
                }
                Err(SpoolError::Io { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                    tracing::error!(sequence, path = %path.display(), "spooled batch vanished");
                    self.forget(sequence);
                }
                Err(SpoolError::Io { cause, .. }) => {
                    if found.is_empty() {
                        return Err(SpoolError::Io { path, cause });
                    }
                    break;
                }
                Err(e) => {
                    quarantine(&self.dir, &path, &e.to_string());
                    self.losses.push(SpoolLoss {
                        reason: "spool_corrupt",
                        sequence,
                        events: None,
                    });
                    self.forget(sequence);
                }
            }
        }
        Ok(found)
    }

    /// Drops the oldest batch that is not being sent, to make room under `drop_oldest`.
    /// Returns what was dropped (with its events, for the loss ledger), or `None` when the
    /// only batch left is the one in flight.
    pub fn drop_oldest_unsent(&mut self) -> Result<Option<SpoolLoss>, SpoolError> {
        let Some(sequence) = self
            .batches
            .keys()
            .copied()
            .find(|s| self.in_flight.is_none_or(|last| *s > last))
        else {
            return Ok(None);
        };
        let path = self.batch_path(sequence);
        let events = read_batch_file(&path)
            .ok()
            .and_then(|(_, batch)| batch.events(usize::MAX).ok());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::Io { path, cause: e }),
        }
        self.forget(sequence);
        tracing::warn!(sequence, "spool full: dropped the oldest unsent batch");
        Ok(Some(SpoolLoss {
            reason: "spool_full",
            sequence,
            events,
        }))
    }

    /// Batches lost since the last call (quarantined as unreadable).
    pub fn take_losses(&mut self) -> Vec<SpoolLoss> {
        std::mem::take(&mut self.losses)
    }

    /// Records that the collector holds batch `sequence` (the oldest) and deletes it.
    pub fn ack(&mut self, sequence: u64) -> Result<(), SpoolError> {
        self.ack_all(&[sequence])?.delete();
        Ok(())
    }

    /// Records that the collector holds `sequences` — the oldest batches, in order, as a
    /// bundle's answer settles them — with one durable write of `acked.json` (two fsyncs
    /// for the whole bundle instead of two per batch). Nothing is recorded unless every
    /// one of them is next in line. Their files are left to the caller to delete
    /// ([`AckedFiles::delete`]), after the spool's lock is released. A spool shared with
    /// the producer is better acked in the three steps of [`Spool::prepare_ack`].
    pub fn ack_all(&mut self, sequences: &[u64]) -> Result<AckedFiles, SpoolError> {
        let record = self.prepare_ack(sequences)?;
        record.write()?;
        Ok(self.settle_ack(record))
    }

    /// The first step of [`Spool::ack_all`], under the spool's lock: checks that
    /// `sequences` are the oldest batches, in order, and what `acked.json` is to say. The
    /// record is then written ([`AckRecord::write`]) with the lock released, and applied
    /// with [`Spool::settle_ack`].
    pub fn prepare_ack(&self, sequences: &[u64]) -> Result<AckRecord, SpoolError> {
        let Some(&last) = sequences.last() else {
            // Nothing to record: `AckRecord::write` writes nothing for it.
            return Ok(self.ack_record(Vec::new(), self.last_acked_sequence, &[]));
        };
        let mut oldest = self.batches.keys();
        for &sequence in sequences {
            let next = oldest.next().copied();
            if next != Some(sequence) {
                return Err(SpoolError::NotOldest {
                    sequence,
                    oldest: next,
                });
            }
        }
        Ok(self.ack_record(sequences.to_vec(), last, &self.batches[&last].checkpoints))
    }

    /// The last step of [`Spool::ack_all`], after the record is written: forgets the
    /// acknowledged batches and hands their files over for deletion.
    pub fn settle_ack(&mut self, record: AckRecord) -> AckedFiles {
        self.last_acked_sequence = self
            .last_acked_sequence
            .max(record.state.last_acked_sequence);
        let mut files = Vec::with_capacity(record.sequences.len());
        for sequence in record.sequences {
            if self.batches.contains_key(&sequence) {
                files.push(self.batch_path(sequence));
                self.forget(sequence);
            }
        }
        AckedFiles(files)
    }

    fn ack_record(&self, sequences: Vec<u64>, last: u64, checkpoints: &[Checkpoint]) -> AckRecord {
        AckRecord {
            path: self.state_dir.join(ACKED_FILE),
            state: AckedState {
                last_acked_sequence: last.max(self.last_acked_sequence),
                checkpoints: checkpoints.to_vec(),
            },
            sequences,
            acked_on_disk: Arc::clone(&self.acked_on_disk),
        }
    }

    /// Moves batch `sequence` (the oldest), which the collector can never accept, to
    /// `spool/rejected/` and settles it like an acked one, so its lines are not read again.
    pub fn reject(&mut self, sequence: u64) -> Result<PathBuf, SpoolError> {
        let checkpoints = self.take_oldest(sequence)?.checkpoints.clone();
        let rejected_dir = self.dir.join(REJECTED_DIR);
        durable::create_private_dir(&rejected_dir).map_err(io_err(&rejected_dir))?;
        let from = self.batch_path(sequence);
        let to = rejected_dir.join(batch_file_name(sequence));
        durable::rename_durable(&from, &to).map_err(io_err(&to))?;
        self.forget(sequence);
        let record = self.ack_record(vec![sequence], sequence, &checkpoints);
        record.write()?;
        self.last_acked_sequence = record.state.last_acked_sequence;
        Ok(to)
    }

    /// The checkpoints after the newest committed line: where tailing resumes.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// Number of spooled (unacked) batches.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes taken by the spooled batch files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sequence number the next sealed batch gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn last_acked_sequence(&self) -> u64 {
        self.last_acked_sequence
    }

    fn take_oldest(&self, sequence: u64) -> Result<&BatchMeta, SpoolError> {
        match self.batches.iter().next() {
            Some((&oldest, meta)) if oldest == sequence => Ok(meta),
            other => Err(SpoolError::NotOldest {
                sequence,
                oldest: other.map(|(s, _)| *s),
            }),
        }
    }

    fn forget(&mut self, sequence: u64) {
        if self.in_flight == Some(sequence) {
            self.in_flight = None;
        }
        if let Some(meta) = self.batches.remove(&sequence) {
            self.bytes = self.bytes.saturating_sub(meta.file_bytes);
        }
    }

    fn batch_path(&self, sequence: u64) -> PathBuf {
        self.dir.join(batch_file_name(sequence))
    }
}

/// The files of batches [`Spool::ack_all`] recorded as acknowledged. Deleting one can
/// block on the disk (a filesystem mounted with `discard` trims the freed blocks
/// synchronously), so it is done outside the spool's lock and off the shipper's path. A
/// file whose deletion is lost (a crash, an error) is an acked leftover, removed when the
/// spool is next opened; no file of this run can take its name, as sequences only grow.
#[derive(Debug)]
#[must_use = "the acknowledged batch files are still on disk"]
pub struct AckedFiles(Vec<PathBuf>);

impl AckedFiles {
    pub fn delete(self) {
        for path in self.0 {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot delete an acknowledged batch file; it is removed at the next start"
                ),
            }
        }
    }
}

/// Retires the spool of a previous enrollment: its unshipped batches (signed by the old
/// key, numbered for the old agent id) move to `retired/<unix ms>/` and a fresh
/// `acked.json` keeps only the checkpoints, so tailing continues where it was and the new
/// identity starts at sequence 1. Returns how many batches were moved.
pub(crate) fn retire_for_new_identity(state_dir: &Path) -> Result<usize, SpoolError> {
    let acked_path = state_dir.join(ACKED_FILE);
    let spool_dir = state_dir.join(SPOOL_DIR);
    let had_state = exists(&acked_path)? || exists(&spool_dir)?;
    if !had_state {
        return Ok(0);
    }
    let spool = Spool::open(state_dir)?;
    let checkpoints = spool.checkpoints().to_vec();
    let target = state_dir
        .join(RETIRED_DIR)
        .join(Utc::now().timestamp_millis().to_string());
    let moved = spool.batches.len();
    if moved > 0 || exists(&acked_path)? {
        durable::create_private_dir(&target).map_err(io_err(&target))?;
    }
    for &sequence in spool.batches.keys() {
        let from = spool.batch_path(sequence);
        let to = target.join(batch_file_name(sequence));
        durable::rename_durable(&from, &to).map_err(io_err(&to))?;
    }
    if exists(&acked_path)? {
        let to = target.join(ACKED_FILE);
        std::fs::copy(&acked_path, &to).map_err(io_err(&to))?;
    }
    let fresh = AckedState {
        last_acked_sequence: 0,
        checkpoints,
    };
    let json = serde_json::to_vec_pretty(&fresh).map_err(|e| SpoolError::Corrupt {
        path: acked_path.clone(),
        reason: e.to_string(),
    })?;
    durable::write_atomic(&acked_path, &json, 0o600).map_err(io_err(&acked_path))?;
    Ok(moved)
}

fn exists(path: &Path) -> Result<bool, SpoolError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpoolError::Io {
            path: path.to_path_buf(),
            cause: e,
        }),
    }
}

fn read_acked(state_dir: &Path) -> Result<AckedState, SpoolError> {
    let path = state_dir.join(ACKED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path,
            reason: format!("not a valid acked state: {e}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AckedState::default()),
        Err(e) => Err(SpoolError::Io { path, cause: e }),
    }
}

fn batch_file_name(sequence: u64) -> String {
    format!("{sequence:020}.{BATCH_EXTENSION}")
}

fn sequence_of_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(BATCH_EXTENSION)?.strip_suffix('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Reads and parses one spool file: its header and the signed batch (structure only).
pub(crate) fn read_batch_file(path: &Path) -> Result<(FileHeader, SignedBatch), SpoolError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.get(..4) != Some(FILE_MAGIC.as_slice()) {
        return Err(corrupt("not a spool file (bad magic)".into()));
    }
    let len_bytes: [u8; 4] = bytes
        .get(4..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| corrupt("truncated header length".into()))?;
    let header_len = u32::from_be_bytes(len_bytes) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(corrupt(format!(
            "header length {header_len} is implausible"
        )));
    }
    let header_bytes = bytes
        .get(8..8 + header_len)
        .ok_or_else(|| corrupt("truncated header".into()))?;
    let header: FileHeader =
        serde_json::from_slice(header_bytes).map_err(|e| corrupt(format!("bad header: {e}")))?;
    let batch_bytes = bytes.get(8 + header_len..).unwrap_or_default().to_vec();
    let batch = SignedBatch::from_bytes(batch_bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok((header, batch))
}

/// Moves an unusable spool file aside. Never fails: if even that is impossible the file
/// is left in place (the caller forgets it) and the error is logged.
fn quarantine(spool_dir: &Path, path: &Path, reason: &str) {
    tracing::error!(path = %path.display(), %reason, "unreadable spool file; moving it to quarantine");
    let dir = spool_dir.join(QUARANTINE_DIR);
    let Some(name) = path.file_name() else { return };
    let result = durable::create_private_dir(&dir)
        .and_then(|()| durable::rename_durable(path, &dir.join(name)));
    if let Err(e) = result {
        tracing::error!(path = %path.display(), error = %e, "cannot quarantine spool file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yagura_shared::verifying_key_from_base64;

    fn lines(n: usize) -> EventLines {
        let mut lines = EventLines::default();
        for event in events(n) {
            lines.push_event(&event);
        }
        lines
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(Utc::now());
                e.set_str("message", format!("m{i}"));
                e
            })
            .collect()
    }

    fn cp(path: &str, offset: u64) -> Checkpoint {
        Checkpoint {
            path: path.into(),
            dev: 1,
            inode: 2,
            offset,
            ..Checkpoint::default()
        }
    }

    /// A spool in a new directory holding `count` one-event batches, batch `i` with the
    /// checkpoint `/a` at `i * step`, and the key and agent id they were sealed with.
    fn spool_with(count: u64, step: u64) -> (tempfile::TempDir, Spool, AgentKey, Uuid) {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let mut spool = Spool::open(dir.path()).expect("open");
        for i in 1..=count {
            spool
                .seal(&lines(1), &[cp("/a", i * step)], &key, agent)
                .expect("seal");
        }
        (dir, spool, key, agent)
    }

    #[test]
    fn seal_oldest_ack_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let mut spool = Spool::open(dir.path()).expect("open");
        assert_eq!(spool.next_sequence(), 1);
        assert!(spool.oldest().expect("oldest").is_none());
        let a = spool
            .seal(&lines(3), &[cp("/a", 10)], &key, agent)
            .expect("seal");
        let b = spool
            .seal(&lines(2), &[cp("/a", 20)], &key, agent)
            .expect("seal");
        assert_eq!((a.sequence, b.sequence), (1, 2));
        assert_eq!(spool.len(), 2);
        assert!(spool.bytes() > (a.bytes.len() + b.bytes.len()) as u64);
        let oldest = spool.oldest().expect("read").expect("some");
        assert_eq!(oldest, a);
        let parsed = SignedBatch::from_bytes(oldest.bytes).expect("parse");
        parsed
            .verify(&verifying_key_from_base64(&key.public_key_base64()).expect("pk"))
            .expect("verifies");
        assert_eq!(parsed.events(1 << 20).expect("events").len(), 3);
        assert!(matches!(
            spool.ack(2),
            Err(SpoolError::NotOldest {
                oldest: Some(1),
                ..
            })
        ));
        spool.ack(1).expect("ack");
        assert_eq!(spool.oldest().expect("read"), Some(b.clone()));
        spool.ack(2).expect("ack");
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.last_acked_sequence(), 2);
        let acked: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("acked.json")).expect("read"))
                .expect("json");
        assert_eq!(acked["last_acked_sequence"], 2);
        assert_eq!(acked["checkpoints"][0]["offset"], 20);
    }

    #[test]
    fn reopen_without_ack_gives_same_bytes_and_newest_checkpoints() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let (first, second) = {
            let mut spool = Spool::open(dir.path()).expect("open");
            let first = spool
                .seal(&lines(2), &[cp("/a", 5)], &key, agent)
                .expect("seal");
            let second = spool
                .seal(&lines(2), &[cp("/a", 9), cp("/b", 1)], &key, agent)
                .expect("seal");
            (first, second)
        };
        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.next_sequence(), 3);
        assert_eq!(spool.checkpoints(), &[cp("/a", 9), cp("/b", 1)]);
        assert_eq!(spool.oldest().expect("read"), Some(first));
        spool.ack(1).expect("ack");
        assert_eq!(spool.oldest().expect("read"), Some(second));
    }

    #[test]
    fn reopen_after_ack_continues_the_sequence_with_acked_checkpoints() {
        let (dir, mut spool, key, agent) = spool_with(3, 1);
        for i in 1..=3 {
            spool.ack(i).expect("ack");
        }
        drop(spool);
        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert!(spool.is_empty());
        assert_eq!(spool.next_sequence(), 4);
        assert_eq!(spool.checkpoints(), &[cp("/a", 3)]);
        let next = spool
            .seal(&lines(1), &[cp("/a", 4)], &key, agent)
            .expect("seal");
        assert_eq!(next.sequence, 4);
    }

    #[test]
    fn a_bundle_is_acked_with_one_record_and_only_in_order() {
        let (dir, mut spool, ..) = spool_with(4, 10);
        // Not the oldest, or a gap: refused, and nothing is recorded or deleted.
        for wrong in [&[2, 3][..], &[1, 3], &[1, 2, 2]] {
            assert!(
                matches!(spool.ack_all(wrong), Err(SpoolError::NotOldest { .. })),
                "{wrong:?}"
            );
        }
        assert_eq!(spool.len(), 4);
        assert!(!dir.path().join("acked.json").exists());
        spool.ack_all(&[]).expect("nothing to ack").delete();
        let files = spool.ack_all(&[1, 2, 3]).expect("ack");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.last_acked_sequence(), 3);
        // Recorded before the files go (a crash now leaves acked leftovers, removed on open).
        for kept in 1..=4 {
            assert!(
                spool.batch_path(kept).exists(),
                "batch {kept} still on disk"
            );
        }
        files.delete();
        for gone in 1..=3 {
            assert!(!spool.batch_path(gone).exists(), "batch {gone} deleted");
        }
        assert!(spool.batch_path(4).exists());
        let acked: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("acked.json")).expect("read"))
                .expect("json");
        assert_eq!(acked["last_acked_sequence"], 3);
        assert_eq!(acked["checkpoints"][0]["offset"], 30);
        // Reopened, the fourth batch is still there to be sent.
        drop(spool);
        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.oldest().expect("read").expect("fourth").sequence, 4);
    }

    #[test]
    fn an_ack_written_outside_the_lock_lets_batches_be_sealed_and_never_goes_back() {
        let (dir, mut spool, key, agent) = spool_with(3, 10);
        let older = spool.prepare_ack(&[1]).expect("prepare");
        let newer = spool.prepare_ack(&[1, 2]).expect("prepare");
        // Written, not yet settled: the spool still holds the batches and goes on sealing.
        newer.write().expect("write");
        spool
            .seal(&lines(1), &[cp("/a", 40)], &key, agent)
            .expect("seal while an ack is being recorded");
        assert_eq!(spool.len(), 4);
        // A stale record written late must not take acked.json back.
        older.write().expect("write");
        let read_acked = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.path().join("acked.json")).expect("read"))
                .expect("json")
        };
        assert_eq!(read_acked()["last_acked_sequence"], 2);
        assert_eq!(read_acked()["checkpoints"][0]["offset"], 20);
        // A crash here: reopening treats 1 and 2 as acked leftovers, resumes after 4.
        {
            let reopened = Spool::open(dir.path()).expect("reopen");
            assert_eq!(reopened.len(), 2);
            assert_eq!(reopened.last_acked_sequence(), 2);
            assert_eq!(reopened.next_sequence(), 5);
        }
        let files = spool.settle_ack(newer);
        files.delete();
        let files = spool.settle_ack(older);
        assert!(files.0.is_empty(), "a stale settle forgets nothing twice");
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.last_acked_sequence(), 2);
        assert_eq!(spool.bytes(), {
            let sizes: u64 = [3, 4]
                .iter()
                .map(|s| std::fs::metadata(spool.batch_path(*s)).expect("stat").len())
                .sum();
            sizes
        });
        // An empty acknowledgement writes nothing.
        std::fs::remove_file(dir.path().join("acked.json")).expect("rm");
        spool.ack_all(&[]).expect("empty ack").delete();
        assert!(!dir.path().join("acked.json").exists());
    }

    #[test]
    fn acked_leftover_is_removed_on_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let mut spool = Spool::open(dir.path()).expect("open");
        spool
            .seal(&lines(1), &[cp("/a", 1)], &key, agent)
            .expect("seal");
        let path = spool.batch_path(1);
        let copy = std::fs::read(&path).expect("read");
        spool.ack(1).expect("ack");
        // Simulate a crash between writing acked.json and the deletion.
        std::fs::write(&path, copy).expect("restore");
        let spool = Spool::open(dir.path()).expect("reopen");
        assert!(spool.is_empty());
        assert_eq!(spool.next_sequence(), 2);
        assert!(std::fs::metadata(&path).is_err());
    }

    #[test]
    fn stray_tmp_and_garbage_batch_do_not_crash_and_are_set_aside() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let good = {
            let mut spool = Spool::open(dir.path()).expect("open");
            spool
                .seal(&lines(1), &[cp("/a", 7)], &key, agent)
                .expect("seal")
        };
        let spool_dir = dir.path().join("spool");
        std::fs::write(spool_dir.join("00000000000000000002.batch.tmp"), b"half").expect("w");
        std::fs::write(spool_dir.join(batch_file_name(5)), b"garbage").expect("w");
        let mut spool = Spool::open(dir.path()).expect("reopen survives");
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.oldest().expect("read"), Some(good));
        assert_eq!(
            spool.checkpoints(),
            &[cp("/a", 7)],
            "torn newest file is not trusted"
        );
        assert_eq!(
            spool.next_sequence(),
            6,
            "the quarantined sequence is never reused"
        );
        assert!(std::fs::metadata(spool_dir.join("00000000000000000002.batch.tmp")).is_err());
        assert!(std::fs::metadata(spool_dir.join("quarantine").join(batch_file_name(5))).is_ok());
    }

    #[test]
    fn truncated_batch_file_is_quarantined() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let mut spool = Spool::open(dir.path()).expect("open");
            spool
                .seal(&lines(5), &[cp("/a", 1)], &key, agent)
                .expect("seal");
        }
        let path = dir.path().join("spool").join(batch_file_name(1));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("truncate");
        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert!(spool.oldest().expect("read").is_none());
        assert!(spool.checkpoints().is_empty());
        assert_eq!(spool.next_sequence(), 2);
    }

    #[test]
    fn reject_moves_the_batch_and_settles_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let mut spool = Spool::open(dir.path()).expect("open");
        spool
            .seal(&lines(1), &[cp("/a", 3)], &key, agent)
            .expect("seal");
        let moved = spool.reject(1).expect("reject");
        assert!(moved.starts_with(dir.path().join("spool").join("rejected")));
        assert!(spool.is_empty());
        let spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.next_sequence(), 2);
        assert_eq!(spool.checkpoints(), &[cp("/a", 3)]);
    }

    #[test]
    fn fullness_follows_the_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let mut spool = Spool::open(dir.path()).expect("open");
        spool.set_max_bytes(1);
        assert!(!spool.is_full());
        spool
            .seal(&lines(1), &[], &key, Uuid::now_v7())
            .expect("seal");
        assert!(spool.is_full());
        spool.ack(1).expect("ack");
        assert!(!spool.is_full());
    }

    #[test]
    fn retiring_keeps_checkpoints_and_restarts_sequence() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let mut spool = Spool::open(dir.path()).expect("open");
            spool
                .seal(&lines(1), &[cp("/a", 3)], &key, agent)
                .expect("seal");
            spool.ack(1).expect("ack");
            spool
                .seal(&lines(1), &[cp("/a", 8)], &key, agent)
                .expect("seal");
        }
        assert_eq!(retire_for_new_identity(dir.path()).expect("retire"), 1);
        let spool = Spool::open(dir.path()).expect("reopen");
        assert!(spool.is_empty());
        assert_eq!(spool.next_sequence(), 1);
        assert_eq!(spool.checkpoints(), &[cp("/a", 8)]);
    }

    #[test]
    fn file_names_parse_strictly() {
        assert_eq!(sequence_of_name(&batch_file_name(42)), Some(42));
        assert_eq!(sequence_of_name("42.batch"), Some(42));
        assert_eq!(sequence_of_name("x.batch"), None);
        assert_eq!(sequence_of_name(".batch"), None);
        assert_eq!(sequence_of_name("1.batch.tmp"), None);
    }

    #[test]
    fn several_oldest_batches_go_in_flight_and_are_never_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let mut spool = Spool::open(dir.path()).expect("open");
        for i in 1..=5 {
            spool
                .seal(&lines(2), &[cp("/a", i)], &key, agent)
                .expect("seal");
        }
        let sizes: Vec<usize> = spool
            .oldest_batches(5, usize::MAX)
            .expect("read")
            .iter()
            .map(|b| b.bytes.len())
            .collect();
        // Byte bound: at least one batch, then as many as fit.
        let sent = spool.oldest_batches(3, 1).expect("read");
        assert_eq!(sent.iter().map(|b| b.sequence).collect::<Vec<_>>(), [1]);
        let sent = spool
            .oldest_batches(3, sizes[0] + sizes[1] + sizes[2] - 1)
            .expect("read");
        assert_eq!(sent.iter().map(|b| b.sequence).collect::<Vec<_>>(), [1, 2]);
        let sent = spool.oldest_batches(3, usize::MAX).expect("read");
        assert_eq!(
            sent.iter().map(|b| b.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let dropped = spool.drop_oldest_unsent().expect("drop").expect("some");
        assert_eq!(dropped.sequence, 4, "batches in flight are never dropped");
        spool.ack(1).expect("ack");
        spool.ack(2).expect("ack");
        spool.ack(3).expect("ack");
        assert_eq!(
            spool
                .drop_oldest_unsent()
                .expect("drop")
                .map(|l| l.sequence),
            Some(5)
        );
    }
}
