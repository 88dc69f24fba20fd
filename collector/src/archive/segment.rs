//! Segment files: the single-node archive implementation.
//!
//! Layout: `archive/{base_offset:020}.seg`, each a run of records
//! `[u32 length][u32 crc32][u8 version][i64 received_at_ms][batch bytes]` (big-endian),
//! where `length` and the CRC cover everything after the CRC. An archive offset is a
//! global byte position: a segment's base offset plus the position inside it, so offsets
//! only grow and a consumer's offset stays valid across segment rotation.
//!
//! One writer task owns the files. Concurrent appends queue on a channel and are written
//! together with one fsync (group commit), so many agents share the cost of durability.
//! The same task owns the per-agent last-sequence map, which makes the replay check and
//! the append one atomic step; the map is rebuilt from the records at start, so the ack
//! state can never disagree with what is on disk.
//!
//! At start every segment is checked record by record. A torn record at the end of the
//! newest segment (a crash mid-write) is cut off and reported; nothing before it is lost,
//! and it was never acknowledged. Damage anywhere else stops the start with an error.
//!
//! Retention deletes whole segments, oldest first, when they are older than `max_age` or
//! the archive is larger than `max_bytes` — but never the segment being written, and never
//! one that a registered consumer has not passed (its committed offset). Before deleting,
//! the per-agent sequence map is written to `sequences.json`, so replay detection keeps
//! working for batches whose records are gone.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;
use yagura_shared::batch::EVENT_COUNT_PREFIX_LEN;
use yagura_shared::metrics::{Histogram, HistogramSnapshot};
use yagura_shared::{parse_header, peek_event_count};

use super::{AppendBatch, Appended, Archive, ArchiveError, Record, Result};

/// The sequence snapshot written before retention deletes segments.
const SEQUENCE_SNAPSHOT: &str = "sequences.json";

const RECORD_PREFIX: usize = 8; // length + crc
const RECORD_META: usize = 9; // version + received_at_ms
const RECORD_VERSION: u8 = 1;
/// Upper bound for one record, far above any batch ingest accepts; a larger length field
/// can only be damage.
const MAX_RECORD_BYTES: u32 = 1 << 30;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

struct AppendRequest {
    agent: Uuid,
    sequence: u64,
    batch: Vec<u8>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// What start-up recovery found, for the operator.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the newest segment (a torn final record).
    pub truncated_bytes: u64,
    pub end_offset: u64,
}

/// How long and how much the archive keeps. `None` keeps forever / without bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionPolicy {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    /// Segments retention wanted to delete but a consumer had not passed yet.
    pub held_by_consumers: usize,
}

/// Upper bounds (seconds) of the fsync latency histogram: from a fast NVMe flush to a
/// disk in trouble; slower flushes fall in `+Inf`.
pub const FSYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// What the writer did since start, for `/metrics`: records made durable and how long
/// each fsync took (the latency every ack waits for). Updated by the writer thread only.
#[derive(Debug)]
pub struct ArchiveStats {
    records_appended: AtomicU64,
    fsync: Histogram,
}

impl Default for ArchiveStats {
    fn default() -> Self {
        ArchiveStats {
            records_appended: AtomicU64::new(0),
            fsync: Histogram::new(FSYNC_BUCKETS),
        }
    }
}

impl ArchiveStats {
    /// Records written and fsynced (duplicates are not written, so not counted).
    pub fn records_appended(&self) -> u64 {
        self.records_appended.load(Ordering::Relaxed)
    }

    /// Every fsync of a segment file: one per group commit, plus the one that closes a
    /// segment at rotation.
    pub fn fsync_seconds(&self) -> HistogramSnapshot {
        self.fsync.snapshot()
    }
}

/// What lies between a consumer's offset and the committed end, as far as a bounded
/// scan of the record headers saw (see [`SegmentArchive::backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Records counted.
    pub records: u64,
    /// The events those records' batches declare.
    pub events: u64,
    /// When the collector received the first record not yet consumed; `None` when the
    /// consumer has caught up.
    pub oldest_received_at_ms: Option<i64>,
    /// `false` when the scan stopped at its record limit before the end: the counts are
    /// then a lower bound.
    pub complete: bool,
}

/// The segment-file archive. Cheap to clone through `Arc`.
pub struct SegmentArchive {
    dir: PathBuf,
    /// Each message is one caller's requests, kept together in one group.
    requests: mpsc::Sender<Vec<AppendRequest>>,
    committed: watch::Receiver<u64>,
    sequences: Arc<RwLock<HashMap<Uuid, u64>>>,
    consumers: Mutex<BTreeMap<String, u64>>,
    report: RecoveryReport,
    stats: Arc<ArchiveStats>,
}

impl SegmentArchive {
    /// Whether the writer thread still takes appends (it stops on an I/O error it cannot
    /// get past, after which every append is refused).
    pub fn writer_running(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Opens (or creates) the archive in `dir`, recovers it, and starts the writer task.
    /// Must be called inside a tokio runtime.
    pub fn open(dir: &Path, segment_max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (segments, report, sequences) = recover(dir)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(
                truncated_bytes = report.truncated_bytes,
                end_offset = report.end_offset,
                "archive had a torn final record; cut it off (it was never acknowledged)"
            );
        }
        let (base, path) = match segments.last() {
            Some((base, path)) => (*base, path.clone()),
            None => (0, segment_path(dir, 0)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(dir)?;
        let (committed_tx, committed) = watch::channel(report.end_offset);
        let (requests, rx) = mpsc::channel(1024);
        let sequences = Arc::new(RwLock::new(sequences));
        let stats = Arc::new(ArchiveStats::default());
        let writer = Writer {
            dir: dir.to_path_buf(),
            file,
            path,
            segment_base: base,
            end_offset: report.end_offset,
            segment_max_bytes,
            sequences: Arc::clone(&sequences),
            committed: committed_tx,
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(SegmentArchive {
            dir: dir.to_path_buf(),
            requests,
            committed,
            sequences,
            consumers: Mutex::new(BTreeMap::new()),
            report,
            stats,
        })
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The writer's counters and fsync latencies (`/metrics`).
    pub fn stats(&self) -> &ArchiveStats {
        &self.stats
    }

    /// The committed end offset: every byte ever made durable (retention deletes old
    /// segments but offsets keep growing), and where every consumer is headed.
    pub fn committed_end(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Counts the records and events from `from` to the committed end, reading only each
    /// record's length, receive time and the batch header up to its event count (no
    /// payload, no CRC check), and stops after `max_records` (then `complete` is false).
    /// Blocking file I/O: call it off the async threads. An offset before the oldest
    /// kept segment counts from that segment, as a reader would resume there.
    pub fn backlog(&self, from: u64, max_records: u64) -> Result<Backlog> {
        let end = self.committed_end();
        let mut backlog = Backlog {
            complete: true,
            ..Backlog::default()
        };
        if from >= end {
            return Ok(backlog);
        }
        let segments = list_segments(&self.dir)?;
        let first = segments
            .iter()
            .rposition(|(base, _)| *base <= from)
            .unwrap_or(0);
        let mut position = from;
        for (base, path) in segments.iter().skip(first) {
            if *base >= end {
                break;
            }
            position = position.max(*base);
            let file = match File::open(path) {
                Ok(file) => file,
                // Retention removed it since the listing: its records are gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            while position < end {
                if backlog.records >= max_records {
                    backlog.complete = false;
                    return Ok(backlog);
                }
                let Some(head) = read_record_head(&file, position - base).map_err(io_err(path))?
                else {
                    break; // the end of this segment: the next one goes on
                };
                backlog.records += 1;
                backlog.events += u64::from(head.event_count);
                backlog
                    .oldest_received_at_ms
                    .get_or_insert(head.received_at_ms);
                position += head.len;
            }
            if position >= end {
                break;
            }
        }
        Ok(backlog)
    }

    /// Offset of the oldest record still kept (after retention, above 0).
    pub fn first_offset(&self) -> Result<u64> {
        Ok(list_segments(&self.dir)?
            .first()
            .map_or(*self.committed.borrow(), |(base, _)| *base))
    }

    /// Deletes whole segments beyond `policy`, oldest first; see the module docs.
    pub fn enforce_retention(&self, policy: RetentionPolicy) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if policy.max_age.is_none() && policy.max_bytes.is_none() {
            return Ok(report);
        }
        let segments = list_segments(&self.dir)?;
        let committed = *self.committed.borrow();
        // Consumers hold back deletion; with no consumer registered, nothing is deleted.
        let Some(min_consumer) = self.min_consumer_offset() else {
            return Ok(report);
        };
        let mut sizes = Vec::with_capacity(segments.len());
        for (base, path) in &segments {
            let meta = std::fs::metadata(path).map_err(io_err(path))?;
            sizes.push((*base, path.clone(), meta.len(), meta.modified().ok()));
        }
        let mut total: u64 = sizes.iter().map(|s| s.2).sum();
        let now = SystemTime::now();
        let mut snapshot_written = false;
        for (index, (base, path, size, modified)) in sizes.iter().enumerate() {
            let Some((next_base, ..)) = sizes.get(index + 1) else {
                break; // the segment being written is never deleted
            };
            let too_old = match (policy.max_age, modified) {
                (Some(max), Some(m)) => now.duration_since(*m).is_ok_and(|age| age > max),
                _ => false,
            };
            let too_big = policy.max_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            if *next_base > min_consumer || *next_base > committed {
                report.held_by_consumers = sizes.len() - 1 - index;
                break;
            }
            if !snapshot_written {
                self.write_sequence_snapshot()?;
                snapshot_written = true;
            }
            std::fs::remove_file(path).map_err(io_err(path))?;
            tracing::info!(
                segment_base = base,
                bytes = size,
                "archive segment deleted by retention"
            );
            total -= size;
            report.deleted_segments += 1;
            report.deleted_bytes += size;
        }
        if report.deleted_segments > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(report)
    }

    fn write_sequence_snapshot(&self) -> Result<()> {
        let map: BTreeMap<String, u64> = self
            .sequences
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default();
        let text = serde_json::to_vec(&map).map_err(|e| ArchiveError::Corrupt {
            path: SEQUENCE_SNAPSHOT.into(),
            position: 0,
            reason: e.to_string(),
        })?;
        let tmp = self.dir.join(format!("{SEQUENCE_SNAPSHOT}.tmp"));
        let target = self.dir.join(SEQUENCE_SNAPSHOT);
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&text).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
        sync_dir(&self.dir)
    }
}

impl Archive for SegmentArchive {
    type Reader = ArchiveReader;

    async fn append(&self, agent: Uuid, sequence: u64, batch: Vec<u8>) -> Result<Appended> {
        let one = AppendBatch {
            agent,
            sequence,
            batch,
        };
        self.append_all(vec![one])
            .await
            .into_iter()
            .next()
            .unwrap_or(Err(ArchiveError::WriterStopped))
    }

    /// One message to the writer: the batches land in one group, in order, under one
    /// fsync. A failed write stops the writer, so nothing after a failure is stored.
    async fn append_all(&self, batches: Vec<AppendBatch>) -> Vec<Result<Appended>> {
        let mut requests = Vec::with_capacity(batches.len());
        let mut answers = Vec::with_capacity(batches.len());
        for AppendBatch {
            agent,
            sequence,
            batch,
        } in batches
        {
            let (reply, answer) = oneshot::channel();
            requests.push(AppendRequest {
                agent,
                sequence,
                batch,
                reply,
            });
            answers.push(answer);
        }
        if self.requests.send(requests).await.is_err() {
            return vec![Err(ArchiveError::WriterStopped)];
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            let result = answer.await.unwrap_or(Err(ArchiveError::WriterStopped));
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

    fn last_sequence(&self, agent: Uuid) -> Option<u64> {
        self.sequences.read().ok()?.get(&agent).copied()
    }

    fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn reader(&self, offset: u64) -> Result<ArchiveReader> {
        ArchiveReader::open(&self.dir, offset, self.committed.clone())
    }

    fn commit_consumer_offset(&self, consumer: &str, offset: u64) {
        if let Ok(mut map) = self.consumers.lock() {
            map.insert(consumer.to_string(), offset);
        }
    }

    fn release_consumer(&self, consumer: &str) {
        if let Ok(mut map) = self.consumers.lock() {
            map.remove(consumer);
        }
    }

    fn consumer_offsets(&self) -> BTreeMap<String, u64> {
        self.consumers.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    segment_base: u64,
    end_offset: u64,
    segment_max_bytes: u64,
    sequences: Arc<RwLock<HashMap<Uuid, u64>>>,
    committed: watch::Sender<u64>,
    stats: Arc<ArchiveStats>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Vec<AppendRequest>>) {
        while let Some(mut group) = rx.blocking_recv() {
            while group.len() < 256 {
                let Ok(more) = rx.try_recv() else { break };
                group.extend(more);
            }
            if let Err(error) = self.write_group(group) {
                tracing::error!(%error, "archive writer stopped; restart the collector to recover");
                return;
            }
        }
    }

    /// Writes every accepted request of the group, fsyncs once, then answers them all.
    fn write_group(&mut self, group: Vec<AppendRequest>) -> Result<()> {
        let mut replies = Vec::with_capacity(group.len());
        let mut pending: HashMap<Uuid, u64> = HashMap::new();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut wrote = 0u64;
        for request in group {
            let known = pending
                .get(&request.agent)
                .copied()
                .or_else(|| self.sequences.read().ok()?.get(&request.agent).copied());
            if let Some(last) = known
                && request.sequence <= last
            {
                replies.push((
                    request.reply,
                    Appended::Duplicate {
                        last_sequence: last,
                    },
                ));
                continue;
            }
            if self.end_offset - self.segment_base >= self.segment_max_bytes {
                self.rotate()?;
            }
            let offset = self.end_offset;
            let record = encode_record(now_ms, &request.batch);
            self.file.write_all(&record).map_err(io_err(&self.path))?;
            self.end_offset += record.len() as u64;
            pending.insert(request.agent, request.sequence);
            replies.push((
                request.reply,
                Appended::Accepted {
                    offset,
                    previous_sequence: known,
                },
            ));
            wrote += 1;
        }
        if wrote > 0 {
            let started = Instant::now();
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.stats.fsync.observe(started.elapsed());
            self.stats
                .records_appended
                .fetch_add(wrote, Ordering::Relaxed);
            if let Ok(mut map) = self.sequences.write() {
                map.extend(pending);
            }
            self.committed.send_replace(self.end_offset);
        }
        for (reply, outcome) in replies {
            let _ = reply.send(Ok(outcome));
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let started = Instant::now();
        self.file.sync_all().map_err(io_err(&self.path))?;
        self.stats.fsync.observe(started.elapsed());
        let path = segment_path(&self.dir, self.end_offset);
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.path = path;
        self.segment_base = self.end_offset;
        Ok(())
    }
}

fn encode_record(received_at_ms: i64, batch: &[u8]) -> Vec<u8> {
    let body_len = RECORD_META + batch.len();
    let mut record = Vec::with_capacity(RECORD_PREFIX + body_len);
    record.extend_from_slice(&(body_len as u32).to_be_bytes());
    record.extend_from_slice(&[0; 4]);
    record.push(RECORD_VERSION);
    record.extend_from_slice(&received_at_ms.to_be_bytes());
    record.extend_from_slice(batch);
    let crc = crc32fast::hash(&record[RECORD_PREFIX..]);
    record[4..8].copy_from_slice(&crc.to_be_bytes());
    record
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Segment files in offset order.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(base) = stem.parse::<u64>() {
            segments.push((base, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The segment files of the archive in `dir`, oldest first, with their base offsets.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    list_segments(dir)
}

/// How many leading bytes of the segment file at `path` are whole, intact records: a
/// copy of those bytes is a consistent archive prefix even while a writer appends (a
/// record in progress, or one whose CRC fails, ends the count).
pub fn intact_length(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut position = 0u64;
    loop {
        match read_record(&mut reader).map_err(io_err(path))? {
            ReadOutcome::Record { len, .. } => position += len,
            ReadOutcome::End | ReadOutcome::CrcMismatch { .. } | ReadOutcome::Damaged(_) => {
                return Ok(position);
            }
        }
    }
}

/// Outcome of reading one record from a segment.
enum ReadOutcome {
    Record {
        received_at_ms: i64,
        batch: Vec<u8>,
        len: u64,
    },
    End,
    /// Incomplete or damaged bytes at `position`.
    Damaged(String),
    /// A complete record whose CRC does not match: the bytes are returned so an offline
    /// verification can name the batch; everywhere else this is damage.
    CrcMismatch {
        received_at_ms: i64,
        batch: Vec<u8>,
        len: u64,
    },
}

fn read_record(reader: &mut impl Read) -> std::io::Result<ReadOutcome> {
    let mut prefix = [0u8; RECORD_PREFIX];
    let mut filled = 0;
    while filled < RECORD_PREFIX {
        let n = reader.read(&mut prefix[filled..])?;
        if n == 0 {
            return Ok(if filled == 0 {
                ReadOutcome::End
            } else {
                ReadOutcome::Damaged("record prefix cut short".into())
            });
        }
        filled += n;
    }
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let crc = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if (len as usize) < RECORD_META || len > MAX_RECORD_BYTES {
        return Ok(ReadOutcome::Damaged(format!(
            "impossible record length {len}"
        )));
    }
    // Grows with what is really there: a damaged length must not size an allocation.
    let mut body = Vec::new();
    let got = reader.take(u64::from(len)).read_to_end(&mut body)?;
    if got < len as usize {
        return Ok(ReadOutcome::Damaged(format!(
            "record of {len} bytes cut short at {got}"
        )));
    }
    let crc_matches = crc32fast::hash(&body) == crc;
    if crc_matches && body[0] != RECORD_VERSION {
        return Ok(ReadOutcome::Damaged(format!(
            "unknown record version {}",
            body[0]
        )));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&body[1..9]);
    let batch = body.split_off(RECORD_META);
    let received_at_ms = i64::from_be_bytes(ts);
    let len = (RECORD_PREFIX as u64) + u64::from(len);
    Ok(if crc_matches {
        ReadOutcome::Record {
            received_at_ms,
            batch,
            len,
        }
    } else {
        ReadOutcome::CrcMismatch {
            received_at_ms,
            batch,
            len,
        }
    })
}

/// The start of a record, as [`SegmentArchive::backlog`] reads it.
struct RecordHead {
    /// The whole record's length, prefix included.
    len: u64,
    received_at_ms: i64,
    /// 0 when the batch is too short or not a batch (damage is not this reader's call).
    event_count: u32,
}

/// Reads the record at `at` of a segment file: its prefix, receive time and batch header
/// up to the event count — one positioned read of 57 bytes, whatever the record's size
/// (a buffered reader would pull in a whole buffer per record to skip most of it).
/// `None` at the end of the segment (or a record cut short there).
fn read_record_head(file: &File, at: u64) -> std::io::Result<Option<RecordHead>> {
    let mut head = [0u8; RECORD_PREFIX + RECORD_META + EVENT_COUNT_PREFIX_LEN];
    let got = read_at_most(file, &mut head, at)?;
    if got < RECORD_PREFIX + RECORD_META {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if (len as usize) < RECORD_META || len > MAX_RECORD_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("impossible record length {len}"),
        ));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[RECORD_PREFIX + 1..RECORD_PREFIX + RECORD_META]);
    let batch_len = len as usize - RECORD_META;
    let peeked = batch_len.min(EVENT_COUNT_PREFIX_LEN);
    let start = RECORD_PREFIX + RECORD_META;
    if got < start + peeked {
        return Ok(None);
    }
    let event_count = peek_event_count(&head[start..start + peeked]).unwrap_or(0);
    Ok(Some(RecordHead {
        len: (RECORD_PREFIX as u64) + u64::from(len),
        received_at_ms: i64::from_be_bytes(ts),
        event_count,
    }))
}

/// Reads up to `buf.len()` bytes at `at` (fewer only where the file ends).
fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

type Recovered = (Vec<(u64, PathBuf)>, RecoveryReport, HashMap<Uuid, u64>);

/// The sequences of batches whose segments retention deleted (empty when none was).
fn read_sequence_snapshot(dir: &Path) -> Result<HashMap<Uuid, u64>> {
    let path = dir.join(SEQUENCE_SNAPSHOT);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let map: BTreeMap<String, u64> =
        serde_json::from_slice(&text).map_err(|e| ArchiveError::Corrupt {
            path: path.display().to_string(),
            position: 0,
            reason: e.to_string(),
        })?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| Uuid::parse_str(&k).ok().map(|id| (id, v)))
        .collect())
}

/// Checks every record, rebuilds the per-agent sequences, cuts a torn tail.
fn recover(dir: &Path) -> Result<Recovered> {
    let segments = list_segments(dir)?;
    let mut report = RecoveryReport {
        segments: segments.len(),
        ..RecoveryReport::default()
    };
    let mut sequences = read_sequence_snapshot(dir)?;
    if let Some((first_base, _)) = segments.first() {
        report.end_offset = *first_base;
    }
    for (index, (base, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut position = 0u64;
        loop {
            match read_record(&mut reader).map_err(io_err(path))? {
                ReadOutcome::End => break,
                ReadOutcome::Record { batch, len, .. } => {
                    if let Ok(header) = parse_header(&batch) {
                        let entry = sequences.entry(header.agent_id).or_insert(0);
                        *entry = (*entry).max(header.sequence);
                    }
                    position += len;
                    report.records += 1;
                }
                damaged @ (ReadOutcome::Damaged(_) | ReadOutcome::CrcMismatch { .. }) => {
                    let reason = match damaged {
                        ReadOutcome::Damaged(reason) => reason,
                        _ => "CRC mismatch".to_string(),
                    };
                    if !is_last {
                        return Err(ArchiveError::Corrupt {
                            path: path.display().to_string(),
                            position,
                            reason,
                        });
                    }
                    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_err(path))?;
                    file.set_len(position).map_err(io_err(path))?;
                    file.sync_all().map_err(io_err(path))?;
                    report.truncated_bytes = size - position;
                    tracing::warn!(path = %path.display(), position, %reason, "torn archive tail cut");
                    break;
                }
            }
        }
        report.end_offset = base + position;
    }
    Ok((segments, report, sequences))
}

/// Reads durable records in order from an offset. Never reads past the committed end, so
/// a consumer sees only what ingest has acknowledged.
pub struct ArchiveReader {
    dir: PathBuf,
    offset: u64,
    committed: watch::Receiver<u64>,
    current: Option<(u64, BufReader<File>, PathBuf)>,
}

impl ArchiveReader {
    fn open(dir: &Path, offset: u64, committed: watch::Receiver<u64>) -> Result<Self> {
        Ok(ArchiveReader {
            dir: dir.to_path_buf(),
            offset,
            committed,
            current: None,
        })
    }

    /// The offset of the next record to be read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The committed end of the archive now.
    pub fn committed_end(&self) -> u64 {
        *self.committed.borrow()
    }

    /// A receiver that changes when more records become durable.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The next durable record, or `None` when the reader has caught up.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        self.read_next()
    }

    fn read_next(&mut self) -> Result<Option<Record>> {
        let end = self.committed_end();
        if self.offset >= end {
            return Ok(None);
        }
        loop {
            if self.current.is_none() {
                self.current = Some(self.open_segment_at(self.offset)?);
            }
            let Some((base, reader, path)) = self.current.as_mut() else {
                return Ok(None);
            };
            match read_record(reader).map_err(io_err(path))? {
                ReadOutcome::Record {
                    received_at_ms,
                    batch,
                    len,
                } => {
                    let record = Record {
                        offset: self.offset,
                        next_offset: self.offset + len,
                        received_at_ms,
                        batch,
                    };
                    self.offset = record.next_offset;
                    return Ok(Some(record));
                }
                ReadOutcome::End => {
                    // End of this segment: the next record is in the following segment.
                    let _ = base;
                    self.current = None;
                    let next = list_segments(&self.dir)?
                        .into_iter()
                        .find(|(b, _)| *b >= self.offset);
                    if next.is_none() {
                        return Ok(None);
                    }
                }
                ReadOutcome::Damaged(reason) => {
                    return Err(ArchiveError::Corrupt {
                        path: path.display().to_string(),
                        position: self.offset - *base,
                        reason,
                    });
                }
                ReadOutcome::CrcMismatch { .. } => {
                    return Err(ArchiveError::Corrupt {
                        path: path.display().to_string(),
                        position: self.offset - *base,
                        reason: "CRC mismatch".into(),
                    });
                }
            }
        }
    }

    /// Opens the segment holding `offset`. An offset before the oldest kept segment
    /// (deleted by retention) moves the reader to the oldest record still there.
    fn open_segment_at(&mut self, offset: u64) -> Result<(u64, BufReader<File>, PathBuf)> {
        let segments = list_segments(&self.dir)?;
        let found = segments
            .iter()
            .rev()
            .find(|(base, _)| *base <= offset)
            .or_else(|| segments.first())
            .cloned();
        let (base, path) = found.ok_or_else(|| ArchiveError::Corrupt {
            path: self.dir.display().to_string(),
            position: offset,
            reason: "no segment holds this offset".into(),
        })?;
        let offset = offset.max(base);
        self.offset = offset;
        let mut file = File::open(&path).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(offset - base))
            .map_err(io_err(&path))?;
        Ok((base, BufReader::with_capacity(1 << 20, file), path))
    }
}

/// One record met by [`scan_offline`].
#[derive(Debug)]
pub enum ScannedRecord {
    /// A record whose CRC matches.
    Intact(Record),
    /// A complete record whose CRC does not match (its bytes as found).
    CrcMismatch(Record),
}

impl super::RecordSource for ArchiveReader {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn committed_end(&self) -> u64 {
        *self.committed.borrow()
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        self.read_next()
    }
}

/// How an offline scan ended.
#[derive(Debug, Clone, Default)]
pub struct ScanEnd {
    pub segments: usize,
    pub records: u64,
    /// Damage that stopped the reading of a segment: (segment base, position, reason).
    /// At the very end of the newest segment this is usually a write in progress.
    pub unreadable: Vec<(u64, u64, String)>,
}

/// Reads every record of the archive in `dir` from `from_offset` on, without a writer
/// and without changing anything: safe while a collector runs. Records are passed to
/// `visit` even when their CRC fails, so the caller can name the batch; `visit` returns
/// `false` to stop the scan.
pub fn scan_offline(
    dir: &Path,
    from_offset: u64,
    mut visit: impl FnMut(ScannedRecord) -> bool,
) -> Result<ScanEnd> {
    let segments = list_segments(dir)?;
    let mut end = ScanEnd::default();
    for (index, (base, path)) in segments.iter().enumerate() {
        let next_base = segments.get(index + 1).map(|(b, _)| *b);
        if next_base.is_some_and(|n| n <= from_offset) {
            continue;
        }
        let file = match File::open(path) {
            Ok(f) => f,
            // Retention removed it since the listing: nothing to verify there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        end.segments += 1;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut position = 0u64;
        loop {
            // An intact record and one whose CRC fails are read the same way; only what the
            // visitor is told differs.
            let (received_at_ms, batch, len, intact) =
                match read_record(&mut reader).map_err(io_err(path))? {
                    ReadOutcome::End => break,
                    ReadOutcome::Record {
                        received_at_ms,
                        batch,
                        len,
                    } => (received_at_ms, batch, len, true),
                    ReadOutcome::CrcMismatch {
                        received_at_ms,
                        batch,
                        len,
                    } => (received_at_ms, batch, len, false),
                    ReadOutcome::Damaged(reason) => {
                        end.unreadable.push((*base, position, reason));
                        break;
                    }
                };
            let record = Record {
                offset: base + position,
                next_offset: base + position + len,
                received_at_ms,
                batch,
            };
            position += len;
            if record.offset >= from_offset {
                end.records += 1;
                let scanned = if intact {
                    ScannedRecord::Intact(record)
                } else {
                    ScannedRecord::CrcMismatch(record)
                };
                if !visit(scanned) {
                    return Ok(end);
                }
            }
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use yagura_shared::{AgentKey, Event, SignedBatch};

    fn batch(key: &AgentKey, agent: Uuid, sequence: u64) -> Vec<u8> {
        let mut e = Event::new(Utc::now());
        e.set_str("message", format!("seq {sequence}"));
        SignedBatch::seal(key, agent, sequence, Utc::now(), &[e])
            .expect("seal")
            .into_bytes()
    }

    fn read_all(archive: &SegmentArchive, from: u64) -> Vec<Record> {
        let mut reader = archive.reader(from).expect("reader");
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().expect("read") {
            out.push(r);
        }
        out
    }

    #[tokio::test]
    async fn append_read_back_and_reject_replays() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let archive = SegmentArchive::open(dir.path(), 1 << 20).expect("open");
        let first = archive
            .append(agent, 1, batch(&key, agent, 1))
            .await
            .expect("a1");
        assert_eq!(
            first,
            Appended::Accepted {
                offset: 0,
                previous_sequence: None
            }
        );
        let second = archive
            .append(agent, 2, batch(&key, agent, 2))
            .await
            .expect("a2");
        assert!(matches!(
            second,
            Appended::Accepted { offset, previous_sequence: Some(1) } if offset > 0
        ));
        let replay = archive
            .append(agent, 1, batch(&key, agent, 1))
            .await
            .expect("a3");
        assert_eq!(replay, Appended::Duplicate { last_sequence: 2 });
        let records = read_all(&archive, 0);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].offset, records[0].next_offset);
        assert_eq!(parse_header(&records[1].batch).expect("hdr").sequence, 2);
        // Resuming from the second record's offset reads only that one.
        assert_eq!(read_all(&archive, records[1].offset).len(), 1);
    }

    fn batch_of(key: &AgentKey, agent: Uuid, sequence: u64, events: usize) -> Vec<u8> {
        let events: Vec<Event> = (0..events)
            .map(|i| {
                let mut e = Event::new(Utc::now());
                e.set_str("message", format!("seq {sequence} event {i}"));
                e
            })
            .collect();
        SignedBatch::seal(key, agent, sequence, Utc::now(), &events)
            .expect("seal")
            .into_bytes()
    }

    /// A bundle's batches reach the writer as one group: in order, a duplicate among
    /// them answered as such, and one fsync for all of them.
    #[tokio::test]
    async fn append_all_stores_in_order_under_one_fsync() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let archive = SegmentArchive::open(dir.path(), 1 << 30).expect("open");
        archive
            .append(agent, 1, batch_of(&key, agent, 1, 1))
            .await
            .expect("append");
        let fsyncs_before = archive.stats().fsync_seconds().count;
        let batches = [2u64, 3, 1, 4, 5, 6, 7, 8]
            .into_iter()
            .map(|sequence| AppendBatch {
                agent,
                sequence,
                batch: batch_of(&key, agent, sequence, 2),
            })
            .collect();
        let results = archive.append_all(batches).await;
        let outcomes: Vec<_> = results
            .into_iter()
            .map(|r| match r.expect("appended") {
                Appended::Accepted {
                    previous_sequence, ..
                } => ("accepted", previous_sequence),
                Appended::Duplicate { last_sequence } => ("duplicate", Some(last_sequence)),
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("accepted", Some(1)),
                ("accepted", Some(2)),
                ("duplicate", Some(3)),
                ("accepted", Some(3)),
                ("accepted", Some(4)),
                ("accepted", Some(5)),
                ("accepted", Some(6)),
                ("accepted", Some(7)),
            ]
        );
        assert_eq!(archive.stats().fsync_seconds().count - fsyncs_before, 1);
        assert_eq!(archive.last_sequence(agent), Some(8));
        let sequences: Vec<u64> = read_all(&archive, 0)
            .iter()
            .map(|r| {
                yagura_shared::parse_header(&r.batch)
                    .expect("header")
                    .sequence
            })
            .collect();
        assert_eq!(sequences, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn metrics_count_records_fsyncs_and_the_backlog_across_segments() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        // Small segments, so the backlog crosses several of them.
        let archive = SegmentArchive::open(dir.path(), 400).expect("open");
        let mut offsets = Vec::new();
        for seq in 1..=6u64 {
            let appended = archive
                .append(agent, seq, batch_of(&key, agent, seq, seq as usize))
                .await
                .expect("append");
            let Appended::Accepted { offset, .. } = appended else {
                panic!("accepted");
            };
            offsets.push(offset);
        }
        archive
            .append(agent, 3, batch_of(&key, agent, 3, 3))
            .await
            .expect("duplicate");
        assert!(list_segments(dir.path()).expect("ls").len() > 2, "rotated");
        assert_eq!(archive.stats().records_appended(), 6);
        let fsyncs = archive.stats().fsync_seconds();
        // One per append (each its own group here), plus one per rotation.
        assert!(fsyncs.count >= 6, "{fsyncs:?}");
        assert_eq!(fsyncs.buckets.len(), FSYNC_BUCKETS.len() + 1);
        let end = archive.committed_end();
        let records = read_all(&archive, 0);
        assert_eq!(records.last().map(|r| r.next_offset), Some(end));

        // From the start: every record, 1 + 2 + … + 6 events, the first receive time.
        let all = archive.backlog(0, 10_000).expect("backlog");
        assert_eq!((all.records, all.events, all.complete), (6, 21, true));
        assert_eq!(all.oldest_received_at_ms, Some(records[0].received_at_ms));
        // From the fourth record: 4 + 5 + 6.
        let rest = archive.backlog(offsets[3], 10_000).expect("backlog");
        assert_eq!((rest.records, rest.events, rest.complete), (3, 15, true));
        // Capped: what was counted, marked incomplete.
        let capped = archive.backlog(0, 2).expect("backlog");
        assert_eq!(
            (capped.records, capped.events, capped.complete),
            (2, 3, false)
        );
        // Caught up.
        let none = archive.backlog(end, 10_000).expect("backlog");
        assert_eq!(
            none,
            Backlog {
                complete: true,
                ..Backlog::default()
            }
        );
    }

    #[tokio::test]
    async fn sequences_and_end_survive_reopen_and_segments_rotate() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let archive = SegmentArchive::open(dir.path(), 600).expect("open");
            for seq in 1..=10 {
                archive
                    .append(agent, seq, batch(&key, agent, seq))
                    .await
                    .expect("append");
            }
        }
        assert!(list_segments(dir.path()).expect("ls").len() > 1, "rotated");
        let archive = SegmentArchive::open(dir.path(), 600).expect("reopen");
        assert_eq!(archive.last_sequence(agent), Some(10));
        assert_eq!(archive.recovery_report().records, 10);
        let replay = archive
            .append(agent, 10, batch(&key, agent, 10))
            .await
            .expect("dup");
        assert_eq!(replay, Appended::Duplicate { last_sequence: 10 });
        let records = read_all(&archive, 0);
        let seqs: Vec<u64> = records
            .iter()
            .map(|r| parse_header(&r.batch).expect("hdr").sequence)
            .collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let archive = SegmentArchive::open(dir.path(), 1 << 20).expect("open");
            for seq in 1..=3 {
                archive
                    .append(agent, seq, batch(&key, agent, seq))
                    .await
                    .expect("append");
            }
        }
        let path = segment_path(dir.path(), 0);
        let full = std::fs::metadata(&path).expect("meta").len();
        // Append half a record, as a crash in the middle of a write leaves it.
        let partial = encode_record(0, &batch(&key, agent, 4));
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open seg");
        f.write_all(&partial[..partial.len() / 2]).expect("write");
        drop(f);
        let archive = SegmentArchive::open(dir.path(), 1 << 20).expect("recover");
        assert_eq!(
            archive.recovery_report().truncated_bytes,
            (partial.len() / 2) as u64
        );
        assert_eq!(archive.recovery_report().end_offset, full);
        assert_eq!(read_all(&archive, 0).len(), 3);
        assert_eq!(archive.last_sequence(agent), Some(3));
        // Sequence 4 was never acknowledged, so the agent's resend is accepted.
        let again = archive
            .append(agent, 4, batch(&key, agent, 4))
            .await
            .expect("append");
        assert_eq!(
            again,
            Appended::Accepted {
                offset: full,
                previous_sequence: Some(3)
            }
        );
    }

    #[tokio::test]
    async fn retention_deletes_old_segments_only_behind_every_consumer() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        let archive = SegmentArchive::open(dir.path(), 600).expect("open");
        for seq in 1..=10 {
            archive
                .append(agent, seq, batch(&key, agent, seq))
                .await
                .expect("append");
        }
        let segments = list_segments(dir.path()).expect("ls");
        assert!(segments.len() > 3, "rotated into several segments");
        let policy = RetentionPolicy {
            max_age: None,
            max_bytes: Some(1),
        };
        // No consumer registered yet: nothing may go.
        assert_eq!(
            archive.enforce_retention(policy).expect("retention"),
            RetentionReport::default()
        );
        // The consumer has passed only the first two segments.
        archive.commit_consumer_offset("indexer", segments[2].0);
        let report = archive.enforce_retention(policy).expect("retention");
        assert_eq!(report.deleted_segments, 2);
        assert!(report.held_by_consumers > 0);
        assert_eq!(archive.first_offset().expect("first"), segments[2].0);
        // A reader from 0 starts at the oldest kept record.
        let records = read_all(&archive, 0);
        assert_eq!(records[0].offset, segments[2].0);
        drop(archive);
        // Replay detection survives the deletion through the snapshot.
        let archive = SegmentArchive::open(dir.path(), 600).expect("reopen");
        assert_eq!(archive.last_sequence(agent), Some(10));
        let replay = archive
            .append(agent, 1, batch(&key, agent, 1))
            .await
            .expect("dup");
        assert_eq!(replay, Appended::Duplicate { last_sequence: 10 });
    }

    #[tokio::test]
    async fn offline_scan_names_a_record_whose_crc_fails() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let archive = SegmentArchive::open(dir.path(), 1 << 20).expect("open");
            for seq in 1..=3 {
                archive
                    .append(agent, seq, batch(&key, agent, seq))
                    .await
                    .expect("append");
            }
        }
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).expect("read");
        let first_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize + 8;
        bytes[first_len + 8 + 9 + 100] ^= 0x01; // inside the second record's batch
        std::fs::write(&path, bytes).expect("write");
        let mut seen = Vec::new();
        let end = scan_offline(dir.path(), 0, |r| {
            seen.push(r);
            true
        })
        .expect("scan");
        assert_eq!(end.records, 3);
        assert!(end.unreadable.is_empty());
        assert!(matches!(seen[0], ScannedRecord::Intact(_)));
        let ScannedRecord::CrcMismatch(bad) = &seen[1] else {
            panic!("second record must fail its CRC");
        };
        assert_eq!(bad.offset, first_len as u64);
        assert!(matches!(seen[2], ScannedRecord::Intact(_)));
    }

    #[tokio::test]
    async fn damage_in_an_older_segment_stops_the_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = Uuid::now_v7();
        {
            let archive = SegmentArchive::open(dir.path(), 600).expect("open");
            for seq in 1..=6 {
                archive
                    .append(agent, seq, batch(&key, agent, seq))
                    .await
                    .expect("append");
            }
        }
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
        let err = SegmentArchive::open(dir.path(), 600)
            .err()
            .expect("must fail");
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
    }
}
