//! The archive a collector process was configured with: its own segment files, or the
//! cluster's JetStream stream (`[archive] backend`). One type for the HTTP state and the
//! tasks that append (ingest, collector events, the shop's audit trail), so they are
//! written once for both.

use std::collections::BTreeMap;

use tokio::sync::watch;
use uuid::Uuid;

use super::{
    AppendBatch, Appended, Archive, ArchiveReader, JetStreamArchive, JetStreamReader, Record,
    RecordSource, Result, SegmentArchive,
};

/// Either archive backend.
pub enum CollectorArchive {
    Segments(SegmentArchive),
    /// Boxed: the stream client is large beside the segment archive's handle.
    JetStream(Box<JetStreamArchive>),
}

impl CollectorArchive {
    /// The segment archive, when this process keeps one (retention, recovery and the
    /// byte-offset figures of health and metrics are its own).
    pub fn segments(&self) -> Option<&SegmentArchive> {
        match self {
            CollectorArchive::Segments(archive) => Some(archive),
            CollectorArchive::JetStream(_) => None,
        }
    }

    /// The shared stream, when this process is a node of a cluster.
    pub fn jetstream(&self) -> Option<&JetStreamArchive> {
        match self {
            CollectorArchive::Segments(_) => None,
            CollectorArchive::JetStream(archive) => Some(archive.as_ref()),
        }
    }
}

/// A reader of either backend.
pub enum CollectorReader {
    Segments(ArchiveReader),
    JetStream(JetStreamReader),
}

impl RecordSource for CollectorReader {
    fn offset(&self) -> u64 {
        match self {
            CollectorReader::Segments(r) => r.offset(),
            CollectorReader::JetStream(r) => r.offset(),
        }
    }

    fn committed_end(&self) -> u64 {
        match self {
            CollectorReader::Segments(r) => r.committed_end(),
            CollectorReader::JetStream(r) => r.committed_end(),
        }
    }

    fn watch(&self) -> watch::Receiver<u64> {
        match self {
            CollectorReader::Segments(r) => r.watch(),
            CollectorReader::JetStream(r) => r.watch(),
        }
    }

    fn drain_on_stop(&self) -> bool {
        match self {
            CollectorReader::Segments(r) => r.drain_on_stop(),
            CollectorReader::JetStream(r) => r.drain_on_stop(),
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        match self {
            CollectorReader::Segments(r) => r.next_record(),
            CollectorReader::JetStream(r) => r.next_record(),
        }
    }
}

impl Archive for CollectorArchive {
    type Reader = CollectorReader;

    async fn append(&self, agent: Uuid, sequence: u64, batch: Vec<u8>) -> Result<Appended> {
        match self {
            CollectorArchive::Segments(a) => a.append(agent, sequence, batch).await,
            CollectorArchive::JetStream(a) => a.append(agent, sequence, batch).await,
        }
    }

    async fn append_all(&self, batches: Vec<AppendBatch>) -> Vec<Result<Appended>> {
        match self {
            CollectorArchive::Segments(a) => a.append_all(batches).await,
            CollectorArchive::JetStream(a) => a.append_all(batches).await,
        }
    }

    fn last_sequence(&self, agent: Uuid) -> Option<u64> {
        match self {
            CollectorArchive::Segments(a) => a.last_sequence(agent),
            CollectorArchive::JetStream(a) => a.last_sequence(agent),
        }
    }

    fn committed(&self) -> watch::Receiver<u64> {
        match self {
            CollectorArchive::Segments(a) => a.committed(),
            CollectorArchive::JetStream(a) => a.committed(),
        }
    }

    fn reader(&self, offset: u64) -> Result<CollectorReader> {
        match self {
            CollectorArchive::Segments(a) => a.reader(offset).map(CollectorReader::Segments),
            CollectorArchive::JetStream(a) => a.reader(offset).map(CollectorReader::JetStream),
        }
    }

    fn commit_consumer_offset(&self, consumer: &str, offset: u64) {
        match self {
            CollectorArchive::Segments(a) => a.commit_consumer_offset(consumer, offset),
            CollectorArchive::JetStream(a) => a.commit_consumer_offset(consumer, offset),
        }
    }

    fn release_consumer(&self, consumer: &str) {
        match self {
            CollectorArchive::Segments(a) => a.release_consumer(consumer),
            CollectorArchive::JetStream(a) => a.release_consumer(consumer),
        }
    }

    fn consumer_offsets(&self) -> BTreeMap<String, u64> {
        match self {
            CollectorArchive::Segments(a) => a.consumer_offsets(),
            CollectorArchive::JetStream(a) => a.consumer_offsets(),
        }
    }
}
