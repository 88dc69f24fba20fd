//! The indexer: archived batches into day indices, in archive order, resumable.
//!
//! Each event goes to the index of its `@timestamp`'s UTC day (an event dated more than a
//! day after it arrived, or older than the retention keeps, goes to the day it arrived,
//! so a wrong clock cannot make thousands of indices; searches prune by the times a day
//! actually holds, so such an event is still found by its time).
//!
//! Exactly once, across crashes: every day's tantivy commit carries, in its payload, the
//! archive offset below which all of that day's events are in it. After committing the
//! days it wrote to, the indexer records the offset every day covers in `indexer.json`
//! and resumes from there; a day whose own payload is further on (it committed, then the
//! process died before `indexer.json` moved) skips the records it already holds. A record
//! is never split across a day's commit: days are only committed between records.
//!
//! At most [`MAX_OPEN_WRITERS`] day writers are open (each holds a memory arena and
//! threads); a late event for another day closes the least recently used one (committing
//! it first), and writers idle for [`IDLE_CLOSE`] are closed at the next commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tantivy::indexer::UserOperation;
use tantivy::{Index, IndexWriter, TantivyDocument};
use tokio_util::sync::CancellationToken;
use yagura_shared::SignedBatch;

use super::days::{self, DayReader, DaySet};
use super::document::{ArchivedEvent, BatchOrigin, DocFields, document};
use super::{EventIndex, IndexError, Result};
use crate::archive::{Archive, Record, RecordSource};
use crate::collector_events::CollectorEvents;

/// The consumer name the indexer commits its archive offset under.
pub const INDEXER_CONSUMER: &str = "indexer";
/// Day writers open at once.
pub const MAX_OPEN_WRITERS: usize = 3;
/// A day writer unused this long is closed at the next commit.
const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// Documents handed to tantivy at once where events do not come in batches already
/// (an agent's batch is added with one hand-over; this is the size agents default to).
pub(crate) const ADD_BATCH: usize = 2_000;
/// Records read between checks of the commit interval.
const RECORDS_PER_ROUND: usize = 256;

/// The payload written with every day's commit.
#[derive(Debug, Serialize, Deserialize)]
struct CommitPayload {
    archive_offset: u64,
}

/// The archive offset a day's durable index covers.
fn committed_offset(index: &Index) -> Result<u64> {
    let metas = index.load_metas()?;
    match metas.payload {
        None => Ok(0),
        Some(raw) => serde_json::from_str::<CommitPayload>(&raw)
            .map(|p| p.archive_offset)
            .map_err(|e| IndexError::Payload(e.to_string())),
    }
}

/// Counters an operator (and later the metrics endpoint) reads.
#[derive(Debug, Default)]
pub struct IndexerStats {
    pub events_indexed: std::sync::atomic::AtomicU64,
    pub bad_batches: std::sync::atomic::AtomicU64,
    /// Events skipped one by one inside otherwise readable batches.
    pub bad_events: std::sync::atomic::AtomicU64,
    pub indexed_offset: std::sync::atomic::AtomicU64,
    /// Days deleted by retention.
    pub days_deleted: std::sync::atomic::AtomicU64,
}

/// Which days are deleted: those older than `max_age_days` (kept: today and the
/// `max_age_days` before it), then the oldest while all days together exceed `max_bytes`
/// (the newest day is never deleted for size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexRetention {
    pub max_age_days: Option<u32>,
    pub max_bytes: Option<u64>,
}

/// How the indexer runs.
#[derive(Debug, Clone, Copy)]
pub struct IndexerOptions {
    /// Memory arena of each open day writer.
    pub writer_memory_bytes: usize,
    /// Commits are at most this far apart while events arrive.
    pub commit_interval: Duration,
    /// The largest decompressed batch payload accepted.
    pub max_decompressed: usize,
    pub retention: IndexRetention,
    /// How often retention is enforced.
    pub retention_check_interval: Duration,
}

/// A day deleted by retention, as it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedDay {
    pub day: NaiveDate,
    /// `age` or `size`.
    pub reason: &'static str,
    pub events: u64,
    pub bytes: u64,
}

struct DayWriter {
    writer: IndexWriter<TantivyDocument>,
    dirty: bool,
    last_used: Instant,
}

/// Writes archived events into the day indices, resuming from the commit payloads.
pub struct Indexer {
    root: PathBuf,
    days: DaySet,
    writers: BTreeMap<NaiveDate, DayWriter>,
    /// Days that committed past the resume point: the archive offset below which each
    /// already holds its events.
    covered: HashMap<NaiveDate, u64>,
    start: u64,
    fields: DocFields,
    options: IndexerOptions,
    stats: Arc<IndexerStats>,
    events: Option<CollectorEvents>,
}

/// The days under `root` with their indices, or `None` when one has another schema.
fn open_existing(root: &Path) -> Result<Option<Vec<(NaiveDate, Index)>>> {
    let mut opened = Vec::new();
    for day in days::list_days(root)? {
        match days::open_day(root, day) {
            Ok(index) => opened.push((day, index)),
            Err(IndexError::Tantivy(tantivy::TantivyError::SchemaError(reason))) => {
                tracing::warn!(%day, %reason, "index schema changed");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(opened))
}

impl Indexer {
    /// Opens the day indices under `root` for writing. A store written by an older
    /// version (another schema, or one index for all days) is moved aside and rebuilt
    /// from the archive. Retention events are reported to `events` when given.
    pub fn open(
        root: &Path,
        options: IndexerOptions,
        events: Option<CollectorEvents>,
    ) -> Result<(Self, EventIndex)> {
        if days::is_single_index_layout(root) {
            days::move_aside(root, "single")?;
        }
        days::remove_leftovers(root);
        let existing = match open_existing(root)? {
            Some(existing) => existing,
            None => {
                days::move_aside(root, "schema")?;
                Vec::new()
            }
        };
        std::fs::create_dir_all(root).map_err(|e| days::io_error(root, e))?;
        let mut offsets = Vec::with_capacity(existing.len());
        let set = DaySet::default();
        for (day, index) in &existing {
            offsets.push((*day, committed_offset(index)?));
            set.insert(DayReader::new(*day, index.clone())?);
        }
        // Without `indexer.json` (first start, or lost), the least any day covers.
        let start = match days::read_state(root)? {
            Some(offset) => offset,
            None => offsets.iter().map(|(_, o)| *o).min().unwrap_or(0),
        };
        let covered = offsets.into_iter().filter(|(_, o)| *o > start).collect();
        let fields = DocFields::new(&super::build_schema())?;
        let search = EventIndex::from_days(set.clone());
        Ok((
            Indexer {
                root: root.to_path_buf(),
                days: set,
                writers: BTreeMap::new(),
                covered,
                start,
                fields,
                options,
                stats: Arc::new(IndexerStats::default()),
                events,
            },
            search,
        ))
    }

    pub fn stats(&self) -> Arc<IndexerStats> {
        Arc::clone(&self.stats)
    }

    /// The archive offset indexing resumes from.
    pub fn resume_offset(&self) -> u64 {
        self.start
    }

    /// Runs until `cancel`: follows the archive, commits every `commit_interval`, enforces
    /// retention between commits, and on cancellation indexes what is durable and
    /// commits once more.
    pub fn run<A: Archive>(
        self,
        archive: &A,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> Result<()> {
        let start = self.start;
        tracing::info!(archive_offset = start, "indexer resuming");
        archive.commit_consumer_offset(INDEXER_CONSUMER, start);
        let reader = archive.reader(start)?;
        self.follow(reader, runtime, cancel, |offset| {
            archive.commit_consumer_offset(INDEXER_CONSUMER, offset);
        })
    }

    /// [`Indexer::run`] over any reader that starts at [`Indexer::resume_offset`] (a
    /// cluster indexer reads one partition of the stream); `committed` is told every
    /// offset committed.
    pub fn follow(
        mut self,
        mut reader: impl RecordSource,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
        mut committed: impl FnMut(u64),
    ) -> Result<()> {
        let mut watch = reader.watch();
        let mut uncommitted = false;
        let mut last_commit = Instant::now();
        let mut last_retention: Option<Instant> = None;
        let drain = reader.drain_on_stop();
        loop {
            let stopping = cancel.is_cancelled();
            let mut added = 0usize;
            // A reader that is not drained on stop checks at every record, so a stop
            // never waits for a round of indexing.
            while (drain || !cancel.is_cancelled())
                && let Some(record) = reader.next_record()?
            {
                if record.offset < self.start {
                    // Below the resume point: already in a committed day (a reader never
                    // hands these out; this is the indexer's own guard against doubles).
                    continue;
                }
                self.add_record(&record)?;
                uncommitted = true;
                added += 1;
                if added >= RECORDS_PER_ROUND {
                    break;
                }
            }
            let caught_up = (stopping && !drain) || reader.offset() >= reader.committed_end();
            if uncommitted && (stopping || last_commit.elapsed() >= self.options.commit_interval) {
                self.commit(reader.offset())?;
                committed(reader.offset());
                uncommitted = false;
                last_commit = Instant::now();
            }
            let retention_due = last_retention
                .is_none_or(|at| at.elapsed() >= self.options.retention_check_interval);
            if !uncommitted && !stopping && retention_due {
                last_retention = Some(Instant::now());
                if let Err(error) = self.enforce_retention(Utc::now()) {
                    tracing::error!(%error, "index retention failed");
                }
            }
            if stopping && caught_up && !uncommitted {
                return Ok(());
            }
            if caught_up {
                let wait = if uncommitted {
                    self.options
                        .commit_interval
                        .saturating_sub(last_commit.elapsed())
                } else {
                    self.options.retention_check_interval
                };
                runtime.block_on(async {
                    tokio::select! {
                        _ = watch.changed() => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        }
    }

    /// Commits every day written since its last commit with `offset` (the end of the last
    /// record added) as its payload, then records `offset` as the resume point.
    pub fn commit(&mut self, offset: u64) -> Result<()> {
        for (day, writer) in &mut self.writers {
            if writer.dirty {
                commit_day(&mut writer.writer, offset)?;
                writer.dirty = false;
                tracing::debug!(%day, archive_offset = offset, "index day committed");
            }
        }
        days::write_state(&self.root, offset)?;
        self.start = offset;
        self.covered.retain(|_, covers| *covers > offset);
        self.stats.indexed_offset.store(offset, Ordering::Relaxed);
        let idle: Vec<NaiveDate> = self
            .writers
            .iter()
            .filter(|(_, w)| w.last_used.elapsed() >= IDLE_CLOSE)
            .map(|(day, _)| *day)
            .collect();
        for day in idle {
            self.close_writer(day, offset)?;
        }
        Ok(())
    }

    /// Closes a day's writer, committing what it holds with `covers` as its payload.
    fn close_writer(&mut self, day: NaiveDate, covers: u64) -> Result<()> {
        if let Some(mut writer) = self.writers.remove(&day) {
            if writer.dirty {
                commit_day(&mut writer.writer, covers)?;
            }
            writer.writer.wait_merging_threads()?;
            tracing::debug!(%day, "index day writer closed");
        }
        Ok(())
    }

    /// The day an event is stored under (see the module documentation).
    fn day_of(&self, at: DateTime<Utc>, arrived: DateTime<Utc>) -> NaiveDate {
        let arrival_day = arrived.date_naive();
        if at > arrived + chrono::Duration::days(1) {
            return arrival_day;
        }
        if let Some(age) = self.options.retention.max_age_days
            && at.date_naive() < arrival_day - chrono::Days::new(u64::from(age))
        {
            return arrival_day;
        }
        at.date_naive()
    }

    /// Opens the writers `needed` (closing the least recently used others beyond
    /// [`MAX_OPEN_WRITERS`], committed as covering the archive below `offset`).
    fn open_writers(&mut self, needed: &[NaiveDate], offset: u64) -> Result<()> {
        for day in needed {
            if self.writers.contains_key(day) {
                continue;
            }
            while self.writers.len() >= MAX_OPEN_WRITERS {
                let victim = self
                    .writers
                    .iter()
                    .filter(|(d, _)| !needed.contains(d))
                    .min_by_key(|(_, w)| w.last_used)
                    .map(|(d, _)| *d);
                match victim {
                    Some(victim) => self.close_writer(victim, offset)?,
                    None => break,
                }
            }
            let index = days::open_day(&self.root, *day)?;
            let writer = index.writer_with_num_threads(1, self.options.writer_memory_bytes)?;
            self.days.insert(DayReader::new(*day, index)?);
            self.writers.insert(
                *day,
                DayWriter {
                    writer,
                    dirty: false,
                    last_used: Instant::now(),
                },
            );
        }
        Ok(())
    }

    /// Adds every event of an archived batch to its day. A batch that cannot be decoded
    /// is counted and skipped (ingest verified it, so this means a bug or damage, never a
    /// reason to stop indexing everything after it).
    fn add_record(&mut self, record: &Record) -> Result<()> {
        let decoded = SignedBatch::from_bytes(record.batch.clone()).and_then(|b| {
            b.decompressed_payload(self.options.max_decompressed)
                .map(|p| (b, p))
        });
        let (batch, payload) = match decoded {
            Ok(ok) => ok,
            Err(error) => {
                self.stats.bad_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(offset = record.offset, %error, "archived batch skipped by the indexer");
                return Ok(());
            }
        };
        let arrived =
            DateTime::from_timestamp_millis(record.received_at_ms).unwrap_or_else(Utc::now);
        let ingested = yagura_shared::event::format_timestamp(arrived);
        // Line by line: one event that does not validate costs itself, not its batch.
        // Documents are grouped by day: one hand-over to a day's tantivy thread per batch,
        // not one per event.
        let mut adds: BTreeMap<NaiveDate, Vec<UserOperation<TantivyDocument>>> = BTreeMap::new();
        let origin = BatchOrigin::new(record.offset, batch.header());
        // The signed count, capped: it sizes a buffer, so it is not trusted beyond that.
        let expected = (batch.header().event_count as usize).min(ADD_BATCH);
        for (index, line) in yagura_shared::payload_lines(&payload).enumerate() {
            if line.is_empty() {
                continue;
            }
            match ArchivedEvent::parse(line) {
                Ok(event) => {
                    let day = self.day_of(event.timestamp(), arrived);
                    if self.covered.get(&day).is_some_and(|c| record.offset < *c) {
                        continue;
                    }
                    let number = index as u64 + 1;
                    let doc = document(&self.fields, event, Some(&ingested), &origin, number);
                    adds.entry(day)
                        .or_insert_with(|| Vec::with_capacity(expected))
                        .push(UserOperation::Add(doc));
                }
                Err(error) => {
                    self.stats.bad_events.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(offset = record.offset, line = index + 1, %error, "archived event skipped by the indexer");
                }
            }
        }
        let needed: Vec<NaiveDate> = adds.keys().copied().collect();
        self.open_writers(&needed, record.offset)?;
        let now = Instant::now();
        for (day, docs) in adds {
            let Some(writer) = self.writers.get_mut(&day) else {
                continue;
            };
            let count = docs.len() as u64;
            writer.writer.run(docs)?;
            writer.dirty = true;
            writer.last_used = now;
            self.stats
                .events_indexed
                .fetch_add(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletes the days the retention policy no longer keeps (see [`IndexRetention`]),
    /// each reported as a collector event. Runs between commits, so no deleted day holds
    /// anything uncommitted.
    pub fn enforce_retention(&mut self, now: DateTime<Utc>) -> Result<Vec<DeletedDay>> {
        let policy = self.options.retention;
        if policy == IndexRetention::default() {
            return Ok(Vec::new());
        }
        let mut remaining: Vec<(NaiveDate, u64)> = days::list_days(&self.root)?
            .into_iter()
            .map(|day| (day, days::dir_bytes(&days::day_dir(&self.root, day))))
            .collect();
        let mut doomed: Vec<(NaiveDate, &'static str, u64)> = Vec::new();
        if let Some(age) = policy.max_age_days {
            let oldest_kept = now.date_naive() - chrono::Days::new(u64::from(age));
            remaining.retain(|(day, bytes)| {
                let keep = *day >= oldest_kept;
                if !keep {
                    doomed.push((*day, "age", *bytes));
                }
                keep
            });
        }
        if let Some(budget) = policy.max_bytes {
            let mut total: u64 = remaining.iter().map(|(_, b)| b).sum();
            // Never the newest day, nor today (a day ahead may exist for events dated
            // slightly in the future).
            while total > budget && remaining.len() > 1 && remaining[0].0 < now.date_naive() {
                let (day, bytes) = remaining.remove(0);
                total -= bytes;
                doomed.push((day, "size", bytes));
            }
        }
        let mut deleted = Vec::with_capacity(doomed.len());
        for (day, reason, bytes) in doomed {
            deleted.push(self.delete_day(day, reason, bytes)?);
        }
        Ok(deleted)
    }

    fn delete_day(
        &mut self,
        day: NaiveDate,
        reason: &'static str,
        bytes: u64,
    ) -> Result<DeletedDay> {
        if let Some(writer) = self.writers.remove(&day) {
            // Nothing uncommitted (retention runs after a commit); merges still writing
            // into the directory finish first.
            writer.writer.wait_merging_threads()?;
        }
        let events = self
            .days
            .remove(day)
            .map(|reader| reader.reader.searcher().num_docs())
            .unwrap_or(0);
        self.covered.remove(&day);
        days::remove_day(&self.root, day)?;
        self.stats.days_deleted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%day, reason, events, bytes, "index retention deleted a day");
        if let Some(sink) = &self.events {
            sink.index_day_deleted(&day.to_string(), reason, events, bytes);
        }
        Ok(DeletedDay {
            day,
            reason,
            events,
            bytes,
        })
    }
}

fn commit_day(writer: &mut IndexWriter<TantivyDocument>, covers: u64) -> Result<()> {
    let payload = serde_json::to_string(&CommitPayload {
        archive_offset: covers,
    })
    .map_err(|e| IndexError::Payload(e.to_string()))?;
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&payload);
    prepared.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::SegmentArchive;
    use crate::index::{SearchRequest, SearchResult};
    use yagura_shared::AgentKey;
    use yagura_shared::Event;

    fn events(n: usize, start: usize) -> Vec<Event> {
        (start..start + n)
            .map(|i| {
                let mut e = Event::new(Utc::now());
                e.set_str("message", format!("sshd failed password line {i}"));
                e.set_str("host.name", "web-1");
                e.set_str("source.ip", "10.1.2.3");
                e.set_str("event.dataset", "demo");
                e
            })
            .collect()
    }

    fn search(index: &EventIndex, q: &str) -> SearchResult {
        index.refresh().expect("refresh");
        index
            .search(&SearchRequest {
                limit: 1000,
                ..SearchRequest::new(q)
            })
            .expect("search")
    }

    fn options(retention: IndexRetention) -> IndexerOptions {
        IndexerOptions {
            writer_memory_bytes: 20_000_000,
            commit_interval: Duration::from_millis(50),
            max_decompressed: 1 << 24,
            retention,
            retention_check_interval: Duration::from_secs(3600),
        }
    }

    fn archive_in(dir: &Path) -> Arc<SegmentArchive> {
        Arc::new(SegmentArchive::open(&dir.join("archive"), 1 << 20).expect("archive"))
    }

    async fn append(
        archive: &SegmentArchive,
        key: &AgentKey,
        agent: uuid::Uuid,
        seq: u64,
        events: &[Event],
    ) {
        let batch = SignedBatch::seal(key, agent, seq, Utc::now(), events).expect("seal");
        archive
            .append(agent, seq, batch.into_bytes())
            .await
            .expect("append");
    }

    /// Runs an indexer over everything archived, then stops it (a clean stop).
    async fn index_all(
        archive: &Arc<SegmentArchive>,
        root: &Path,
        retention: IndexRetention,
    ) -> (EventIndex, Arc<IndexerStats>) {
        let (indexer, search) = Indexer::open(root, options(retention), None).expect("open");
        let stats = indexer.stats();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let runtime = tokio::runtime::Handle::current();
        let shared = Arc::clone(archive);
        let task = tokio::task::spawn_blocking(move || indexer.run(shared.as_ref(), runtime, stop));
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
        task.await.expect("join").expect("indexer");
        (search, stats)
    }

    /// An archived batch holding one invalid event (only a buggy or hostile agent signs
    /// one) loses that event alone; the rest of the batch is indexed and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_invalid_event_costs_itself_not_its_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        let archive = archive_in(dir.path());
        let mut batch_events = events(2, 0);
        let mut no_id = batch_events[0].as_map().clone();
        no_id.remove("event");
        batch_events.insert(1, Event::from_map(no_id));
        append(&archive, &key, agent, 1, &batch_events).await;
        let (search_index, stats) = index_all(
            &archive,
            &dir.path().join("index"),
            IndexRetention::default(),
        )
        .await;
        assert_eq!(search(&search_index, "*").total, 2);
        assert_eq!(stats.bad_events.load(Ordering::Relaxed), 1);
        assert_eq!(stats.bad_batches.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexes_the_archive_and_resumes_from_the_commit_payload() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        let archive = archive_in(dir.path());
        for seq in 1..=3u64 {
            append(&archive, &key, agent, seq, &events(10, seq as usize * 10)).await;
        }
        let root = dir.path().join("index");
        let (search1, _) = index_all(&archive, &root, IndexRetention::default()).await;
        assert_eq!(search(&search1, "*").total, 30);
        assert_eq!(search(&search1, "host.name:web-1").total, 30);
        assert_eq!(search(&search1, "\"line 15\"").total, 1);
        assert_eq!(search(&search1, "source.ip:10.1.2.3").total, 30);
        let hit = &search(&search1, "\"line 25\"").hits[0];
        assert_eq!(hit.provenance.batch_sequence, 2);
        assert_eq!(hit.provenance.agent_id, agent.to_string());
        let event_id = hit.event["event"]["id"].as_str().expect("id");
        let found = search1.find_event(event_id).expect("find");
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].provenance.archive_offset,
            hit.provenance.archive_offset
        );
        assert!(archive.min_consumer_offset().is_some_and(|o| o > 0));
        assert!(hit.event["event"]["ingested"].is_string());
        drop(search1);
        // More batches, then a second indexer run: it starts at the recorded offset, so
        // nothing is indexed twice.
        append(&archive, &key, agent, 4, &events(5, 100)).await;
        let (search2, _) = index_all(&archive, &root, IndexRetention::default()).await;
        assert_eq!(search(&search2, "*").total, 35);
    }

    fn at(time: DateTime<Utc>, tag: &str) -> Event {
        let mut e = Event::new(time);
        e.set_str("user.name", tag);
        e
    }

    /// Events land in the index of their UTC day; a query with a time range opens only
    /// the days holding events in it; an event dated in the future goes to the day it
    /// arrived and is still found by its own time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_go_to_their_day_and_queries_open_only_the_days_they_need() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        let archive = archive_in(dir.path());
        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let batch = vec![
            at(now - day * 2, "two-days-ago"),
            at(now - day, "yesterday"),
            at(now - chrono::Duration::minutes(1), "now"),
            at(now + day * 10, "future"),
        ];
        append(&archive, &key, agent, 1, &batch).await;
        append(
            &archive,
            &key,
            agent,
            2,
            &[at(now - day * 2, "two-days-ago")],
        )
        .await;
        let root = dir.path().join("index");
        let (index, _) = index_all(&archive, &root, IndexRetention::default()).await;
        let days_on_disk = days::list_days(&root).expect("days");
        let expected: Vec<NaiveDate> = vec![
            (now - day * 2).date_naive(),
            (now - day).date_naive(),
            now.date_naive(),
        ];
        assert_eq!(
            days_on_disk, expected,
            "one index per day, the future one in today's"
        );
        index.refresh().expect("refresh");
        let run = |since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>| {
            index
                .search(&SearchRequest {
                    since,
                    until,
                    ..SearchRequest::new("*")
                })
                .expect("search")
        };
        let all = run(None, None);
        assert_eq!((all.total, all.days_searched, all.days_total), (5, 3, 3));
        let last_hour = run(Some(now - chrono::Duration::hours(1)), Some(now));
        assert_eq!((last_hour.total, last_hour.days_searched), (1, 1));
        assert_eq!(last_hour.hits[0].event["user"]["name"], "now");
        let yesterday = run(
            Some(now - day - chrono::Duration::hours(1)),
            Some(now - day + chrono::Duration::hours(1)),
        );
        assert_eq!((yesterday.total, yesterday.days_searched), (1, 1));
        let older = run(None, Some(now - day - chrono::Duration::hours(1)));
        assert_eq!((older.total, older.days_searched), (2, 1));
        let future = run(Some(now + day * 9), None);
        assert_eq!((future.total, future.days_searched), (1, 1));
        assert_eq!(future.hits[0].event["user"]["name"], "future");
        // Newest first across days, and the cursor crosses from one day to the next.
        let mut names = Vec::new();
        let mut after = None;
        loop {
            let page = index
                .search(&SearchRequest {
                    limit: 2,
                    after,
                    ..SearchRequest::new("*")
                })
                .expect("page");
            names.extend(
                page.hits
                    .iter()
                    .map(|h| h.event["user"]["name"].to_string()),
            );
            match page.next_cursor {
                Some(cursor) => after = Some(cursor.parse().expect("cursor")),
                None => break,
            }
        }
        assert_eq!(
            names,
            [
                "\"future\"",
                "\"now\"",
                "\"yesterday\"",
                "\"two-days-ago\"",
                "\"two-days-ago\""
            ]
        );
        // Aggregations merge across days: one terms bucket list, counted over all.
        let terms = index
            .search(&SearchRequest {
                aggs: crate::search::aggs::parse_aggs("terms:user.name").expect("aggs"),
                ..SearchRequest::new("*")
            })
            .expect("aggs");
        let buckets = &terms.aggregations.expect("aggregations")["terms:user.name"]["buckets"];
        assert_eq!(buckets[0]["key"], "two-days-ago");
        assert_eq!(buckets[0]["doc_count"], 2);
        assert_eq!(buckets.as_array().map(Vec::len), Some(4));
    }

    /// A day that committed after the recorded resume point (the process died between
    /// the day's commit and `indexer.json`) does not take the replayed records twice,
    /// while the other days do take them; without `indexer.json` the least any day
    /// covers is the resume point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_committed_before_a_crash_takes_no_record_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        let archive = archive_in(dir.path());
        let now = Utc::now();
        let yesterday = now - chrono::Duration::days(1);
        append(
            &archive,
            &key,
            agent,
            1,
            &[at(yesterday, "a"), at(now, "a")],
        )
        .await;
        let root = dir.path().join("index");
        let (first, _) = index_all(&archive, &root, IndexRetention::default()).await;
        assert_eq!(search(&first, "*").total, 2);
        drop(first);
        // Batch 2 reaches both days; today's day index commits it, then the "crash":
        // yesterday's writer and indexer.json never saw it.
        append(
            &archive,
            &key,
            agent,
            2,
            &[at(yesterday, "b"), at(now, "b")],
        )
        .await;
        let resume = days::read_state(&root).expect("state").expect("written");
        let (mut indexer, _) =
            Indexer::open(&root, options(IndexRetention::default()), None).expect("open");
        let mut reader = archive.reader(resume).expect("reader");
        let record = reader.next_record().expect("read").expect("record");
        indexer.add_record(&record).expect("add");
        let today = indexer
            .writers
            .get_mut(&now.date_naive())
            .expect("today's writer");
        commit_day(&mut today.writer, reader.offset()).expect("commit today");
        drop(indexer);
        let (after, _) = index_all(&archive, &root, IndexRetention::default()).await;
        assert_eq!(
            search(&after, "user.name:b").total,
            2,
            "each day has b once"
        );
        assert_eq!(search(&after, "*").total, 4);
        drop(after);
        // indexer.json lost: the least any day covers is where indexing resumes.
        std::fs::remove_file(root.join("indexer.json")).expect("remove state");
        let (again, _) = index_all(&archive, &root, IndexRetention::default()).await;
        assert_eq!(search(&again, "*").total, 4);
    }

    /// Retention deletes exactly the days older than its age, then the oldest while the
    /// store is over its size budget, and reports each deletion as a collector event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_drops_exactly_the_days_it_should() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        let archive = archive_in(dir.path());
        let now = Utc::now();
        let ages = [10i64, 5, 3, 2, 1, 0];
        let batch: Vec<Event> = ages
            .iter()
            .map(|d| at(now - chrono::Duration::days(*d), &format!("{d}-days-ago")))
            .collect();
        append(&archive, &key, agent, 1, &batch).await;
        let root = dir.path().join("index");
        let (index, _) = index_all(&archive, &root, IndexRetention::default()).await;
        drop(index);
        let day = |ago: i64| (now - chrono::Duration::days(ago)).date_naive();
        assert_eq!(days::list_days(&root).expect("days").len(), 6);

        let sink = CollectorEvents::new(uuid::Uuid::now_v7());
        let by_age = IndexRetention {
            max_age_days: Some(3),
            max_bytes: None,
        };
        let (mut indexer, search_index) =
            Indexer::open(&root, options(by_age), Some(sink.clone())).expect("open");
        let deleted = indexer.enforce_retention(now).expect("retention");
        let gone: Vec<(NaiveDate, &str)> = deleted.iter().map(|d| (d.day, d.reason)).collect();
        assert_eq!(gone, vec![(day(10), "age"), (day(5), "age")]);
        assert!(deleted.iter().all(|d| d.events == 1 && d.bytes > 0));
        assert_eq!(
            days::list_days(&root).expect("days"),
            vec![day(3), day(2), day(1), day(0)]
        );
        assert_eq!(
            search(&search_index, "*").total,
            4,
            "searches see the deletion"
        );
        assert!(indexer.enforce_retention(now).expect("again").is_empty());

        // A budget that holds the two newest days and not three.
        let sizes: Vec<u64> = [1i64, 0]
            .iter()
            .map(|ago| days::dir_bytes(&days::day_dir(&root, day(*ago))))
            .collect();
        indexer.options.retention = IndexRetention {
            max_age_days: Some(3),
            max_bytes: Some(sizes.iter().sum::<u64>() + 1),
        };
        let deleted = indexer.enforce_retention(now).expect("retention");
        let gone: Vec<(NaiveDate, &str)> = deleted.iter().map(|d| (d.day, d.reason)).collect();
        assert_eq!(gone, vec![(day(3), "size"), (day(2), "size")]);
        assert_eq!(days::list_days(&root).expect("days"), vec![day(1), day(0)]);
        // The newest day is never deleted for size.
        indexer.options.retention.max_bytes = Some(1);
        let deleted = indexer.enforce_retention(now).expect("retention");
        assert_eq!(deleted.len(), 1);
        assert_eq!(days::list_days(&root).expect("days"), vec![day(0)]);

        let logged = sink.take_ready(true);
        let logged: Vec<(String, String)> = logged
            .iter()
            .map(|e| {
                (
                    e.get_str("yagura.retention.day")
                        .unwrap_or_default()
                        .to_string(),
                    e.get_str("yagura.retention.reason")
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            (10, "age"),
            (5, "age"),
            (3, "size"),
            (2, "size"),
            (1, "size"),
        ]
        .iter()
        .map(|(ago, reason)| (day(*ago).to_string(), reason.to_string()))
        .collect();
        assert_eq!(logged, expected);
        assert_eq!(indexer.stats().days_deleted.load(Ordering::Relaxed), 5);
    }
}
