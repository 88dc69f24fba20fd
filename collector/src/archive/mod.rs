//! The archive: an append-only log of signed batches exactly as the agents sent them.
//!
//! It is the collector's source of truth, its write-ahead log and its chain of custody.
//! Ingest appends a batch and acknowledges the agent only after the bytes are on disk
//! (fsync); everything downstream (index, detections) is derived from the archive and can
//! be rebuilt from it. Consumers remember their own position as an archive offset.
//!
//! The seam to the rest of the collector is the [`Archive`] trait (append, read from an
//! offset, watch the committed end, committed offsets per consumer), so a replicated log
//! such as NATS JetStream can take the place of [`SegmentArchive`] without touching
//! ingest or the indexer. Retention ([`RetentionPolicy`]) never deletes what a registered
//! consumer has not passed.

mod backend;
mod jetstream;
mod segment;

pub use backend::{CollectorArchive, CollectorReader};

pub use jetstream::{JetStreamArchive, JetStreamConfig, JetStreamReader, connect as connect_nats};

pub use segment::{
    ArchiveReader, ArchiveStats, Backlog, FSYNC_BUCKETS, RecoveryReport, RetentionPolicy,
    RetentionReport, ScanEnd, ScannedRecord, SegmentArchive, intact_length, scan_offline,
    segment_files,
};

use std::collections::BTreeMap;
use std::future::Future;

use tokio::sync::watch;
use uuid::Uuid;

/// Errors of the archive. An I/O failure while writing is fatal for the writer: after a
/// failed fsync the file's state is unknown, so the writer stops and the collector must
/// restart and recover from what is really on disk.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("archive corrupt in {path} at byte {position}: {reason}")]
    Corrupt {
        path: String,
        position: u64,
        reason: String,
    },
    #[error("archive writer has stopped")]
    WriterStopped,
    /// The JetStream archive: NATS unreachable, a refused publish or read.
    #[error("archive stream: {0}")]
    Stream(String),
    /// A batch the archive can never take (larger than NATS's `max_payload`): retrying
    /// does not help, the agent must send smaller batches.
    #[error("batch of {size} bytes is larger than the archive takes ({limit} bytes)")]
    TooLarge { size: usize, limit: usize },
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// What happened to an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and fsynced at this archive offset. `previous_sequence` is the agent's
    /// highest archived sequence before this one (a gap when it is not `sequence - 1`).
    Accepted {
        offset: u64,
        previous_sequence: Option<u64>,
    },
    /// The agent's sequence number was already archived: acknowledged again, not stored.
    Duplicate { last_sequence: u64 },
}

/// One archived batch as read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Offset of this record; the provenance of every event derived from it.
    pub offset: u64,
    /// Offset just past this record: where a consumer resumes.
    pub next_offset: u64,
    /// When the collector received the batch (Unix milliseconds).
    pub received_at_ms: i64,
    /// The signed batch bytes exactly as received.
    pub batch: Vec<u8>,
}

/// A consumer's view of the archive: durable records in order from a position.
pub trait RecordSource: Send {
    /// Where the next record is read from (the resume point after the last one taken).
    fn offset(&self) -> u64;

    /// The end of what is durable and visible to this reader now (for a stream reader:
    /// what it has pulled, not the stream's end); the reader has caught up when its
    /// offset reached it.
    fn committed_end(&self) -> u64;

    /// Changes when more records may have become readable.
    fn watch(&self) -> watch::Receiver<u64>;

    /// Whether a consumer that is stopping should first read what is durable (the
    /// segment archive of a stopping collector: bounded, and nobody else will). A
    /// partition of a shared stream says no: its backlog belongs to whoever holds the
    /// partition next, and a stop must be quick so the node keeps renewing its leases.
    fn drain_on_stop(&self) -> bool {
        true
    }

    /// The next durable record, or `None` when the reader has caught up. Never blocks.
    fn next_record(&mut self) -> Result<Option<Record>>;
}

/// One batch to append: the signed batch's bytes with its agent and sequence.
#[derive(Debug)]
pub struct AppendBatch {
    pub agent: Uuid,
    pub sequence: u64,
    pub batch: Vec<u8>,
}

/// An append-only log of verified, signed batches.
pub trait Archive: Send + Sync + 'static {
    /// How consumers read it.
    type Reader: RecordSource;

    /// Appends the batch `sequence` of `agent` unless that sequence is already archived.
    /// Returns only once the record is durable.
    fn append(
        &self,
        agent: Uuid,
        sequence: u64,
        batch: Vec<u8>,
    ) -> impl Future<Output = Result<Appended>> + Send;

    /// Appends `batches` in their order as [`Self::append`] would one after the other,
    /// and stops at the first that fails: the results are in the same order and end with
    /// that failure, and nothing after it is stored (a later sequence stored ahead of an
    /// earlier one would turn the earlier one into a replay). Returns once every stored
    /// record is durable. The segment archive hands them to its writer as one group,
    /// so they share one fsync.
    fn append_all(
        &self,
        batches: Vec<AppendBatch>,
    ) -> impl Future<Output = Vec<Result<Appended>>> + Send {
        async move {
            let mut results = Vec::with_capacity(batches.len());
            for AppendBatch {
                agent,
                sequence,
                batch,
            } in batches
            {
                let result = self.append(agent, sequence, batch).await;
                let failed = result.is_err();
                results.push(result);
                if failed {
                    break;
                }
            }
            results
        }
    }

    /// The highest sequence archived for `agent`, if any.
    fn last_sequence(&self, agent: Uuid) -> Option<u64>;

    /// The committed end of the log; changes whenever new records become durable.
    fn committed(&self) -> watch::Receiver<u64>;

    /// A reader over the durable records from `offset` on.
    fn reader(&self, offset: u64) -> Result<Self::Reader>;

    /// Records that `consumer` has durably processed everything before `offset`.
    /// Retention never deletes a record a registered consumer has not passed.
    fn commit_consumer_offset(&self, consumer: &str, offset: u64);

    /// Forgets `consumer` (it stopped for good): retention and ingest backpressure no
    /// longer wait for it.
    fn release_consumer(&self, consumer: &str);

    /// The committed offset of every registered consumer.
    fn consumer_offsets(&self) -> BTreeMap<String, u64>;

    /// The lowest committed consumer offset; `None` when no consumer is registered.
    fn min_consumer_offset(&self) -> Option<u64> {
        self.consumer_offsets().values().copied().min()
    }
}
