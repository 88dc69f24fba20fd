//! The live detector: the archive, in order, right behind ingest, through the rules.
//!
//! It runs on its own thread like the indexer and reads the same archive (consumer
//! `detector`, so archive retention keeps what it has not read). Every match is
//! published at once on a live stream (live views) and recorded in the database
//! every `commit_interval`; every [`STATE_INTERVAL`] (and at a clean stop) the same
//! transaction also records the archive offset read so far and the correlation state
//! there (rsigma's snapshot, whose size grows with open windows — too costly to write
//! twice a second). After a crash the detector imports that state and replays the
//! archive from that offset: the windows are as they were, event time drives them as
//! before, and a match found again has the same deterministic id, so it is not recorded
//! twice — every match exactly once, however the process stops.
//!
//! On its first start it begins at the archive's end: rules look forward; the past is
//! for backtests.
//!
//! Hot reload: every [`RELOAD_CHECK`] the rule directories are fingerprinted (paths,
//! sizes, modification times of the rule files and of the value lists in `lists/`, so an
//! edited blocklist takes effect like an edited rule); on a change the whole set is
//! loaded and checked again. A
//! set with any error is refused as a whole — each problem logged and raised as a
//! collector event with its `file:line` — and the running rules stay; a good set replaces
//! them between two events, carrying the correlation windows over (rsigma's snapshot is
//! keyed by the correlations' ids, so windows of kept correlations continue).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use yagura_shared::{Event, SignedBatch};

use super::engine::{Detection, Detector};
use super::lists::list_files;
use super::rules::{RuleSet, ecs_pipeline, load, rule_files};
use crate::archive::{Archive, ArchiveError, Record, RecordSource as _};
use crate::collector_events::CollectorEvents;
use crate::store::{Store, StoreError, StoredDetection};

/// The consumer name the detector commits its archive offset under.
pub const DETECTOR_CONSUMER: &str = "detector";
/// Records read between checks of the commit interval.
const RECORDS_PER_ROUND: usize = 256;
/// How often the replay point and correlation state are recorded.
pub const STATE_INTERVAL: Duration = Duration::from_secs(5);
/// Matches held for slow subscribers of the live stream before the oldest are skipped
/// (they are in the database regardless).
const LIVE_CAPACITY: usize = 4096;
/// How often the rule directories are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("detector state: {0}")]
    Store(#[from] StoreError),
    #[error("detector state: {0}")]
    State(String),
}

/// Counters for operators and tests.
#[derive(Debug, Default)]
pub struct DetectorStats {
    pub events: AtomicU64,
    pub matches: AtomicU64,
    /// Matches recorded for the first time (a replay finds some again).
    pub recorded: AtomicU64,
    pub bad_batches: AtomicU64,
    pub committed_offset: AtomicU64,
    /// Rule sets swapped in, and refused, since start.
    pub reloads: AtomicU64,
    pub refused_reloads: AtomicU64,
}

/// Where the rules come from, to notice and apply changes.
struct RuleSource {
    dirs: Vec<std::path::PathBuf>,
    fingerprint: String,
    checked: Instant,
    events: Option<CollectorEvents>,
    /// Where the running rules and refusals are published (the console).
    catalog: super::RuleCatalog,
}

/// What identifies the state of the rule files and value lists: each file's path, size
/// and modification time.
fn fingerprint(dirs: &[std::path::PathBuf]) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    match rule_files(dirs) {
        Ok(mut files) => {
            files.extend(list_files(dirs));
            for file in files {
                let meta = std::fs::metadata(&file).ok();
                let modified = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                hash.update(file.to_string_lossy().as_bytes());
                hash.update(meta.map_or(0, |m| m.len()).to_be_bytes());
                hash.update(modified.to_be_bytes());
            }
        }
        Err(problem) => hash.update(problem.to_string().as_bytes()),
    }
    hex::encode(hash.finalize())
}

/// What a background state write comes to: its offset and how many matches were new, or
/// the error with the matches it carried (put back, to be recorded at the next commit).
type StateWrite = Result<(u64, u64), (LiveError, Vec<StoredDetection>)>;

/// The rules on the archive stream, with their state in the database.
pub struct LiveDetector {
    detector: Detector,
    store: Store,
    commit_interval: Duration,
    max_decompressed: usize,
    pending: Vec<StoredDetection>,
    stats: Arc<DetectorStats>,
    source: Option<RuleSource>,
    live: tokio::sync::broadcast::Sender<Arc<Detection>>,
    /// Ticks each time new matches are committed (alerting reads them then).
    committed: Arc<tokio::sync::watch::Sender<u64>>,
    state_written: Option<Instant>,
    /// A state write running in the background: its offset and new matches when done.
    state_write: Option<tokio::task::JoinHandle<StateWrite>>,
}

impl LiveDetector {
    pub fn new(
        detector: Detector,
        store: Store,
        commit_interval: Duration,
        max_decompressed: usize,
    ) -> Self {
        LiveDetector {
            detector,
            store,
            commit_interval,
            max_decompressed,
            pending: Vec::new(),
            stats: Arc::default(),
            source: None,
            live: tokio::sync::broadcast::channel(LIVE_CAPACITY).0,
            committed: Arc::new(tokio::sync::watch::channel(0).0),
            state_written: None,
            state_write: None,
        }
    }

    /// Every match the moment it is found, before it is committed (for live views). A
    /// match found again on a replay after a crash comes again, with the same id; a
    /// subscriber too slow to keep up skips the oldest (the database has every match).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Detection>> {
        self.live.subscribe()
    }

    /// Ticks after every commit that recorded new matches: alerting reads the recorded
    /// matches, so what it pages for is durable.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn recorded(&self, new: u64) {
        self.stats.recorded.fetch_add(new, Ordering::Relaxed);
        if new > 0 {
            self.committed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Watches `dirs` (the directories `rules` was loaded from) and swaps in a changed
    /// rule set when it is valid; refusals are reported to `events`.
    pub fn with_reload(
        mut self,
        dirs: Vec<std::path::PathBuf>,
        events: Option<CollectorEvents>,
        catalog: super::RuleCatalog,
    ) -> Self {
        self.source = Some(RuleSource {
            fingerprint: fingerprint(&dirs),
            dirs,
            checked: Instant::now(),
            events,
            catalog,
        });
        self
    }

    /// Checks the rule directories (at most every [`RELOAD_CHECK`], or now when
    /// `force`) and applies a change. Returns whether a new rule set was swapped in.
    pub fn check_rules(&mut self, force: bool) -> bool {
        let Some(source) = self.source.as_mut() else {
            return false;
        };
        if !force && source.checked.elapsed() < RELOAD_CHECK {
            return false;
        }
        source.checked = Instant::now();
        let now = fingerprint(&source.dirs);
        if now == source.fingerprint {
            return false;
        }
        source.fingerprint = now;
        let dirs = source.dirs.clone();
        let events = source.events.clone();
        let catalog = source.catalog.clone();
        match self.load_new(&dirs) {
            Ok((detector, set, pipeline)) => {
                catalog.loaded(&dirs, &set, &pipeline);
                tracing::info!(
                    rules = detector.detection_rules(),
                    correlations = detector.correlation_rules(),
                    "detection rules reloaded"
                );
                self.detector = detector;
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(problems) => {
                self.stats.refused_reloads.fetch_add(1, Ordering::Relaxed);
                for problem in &problems {
                    tracing::error!(%problem, "changed detection rules refused; the running rules stay");
                }
                catalog.refused(&problems);
                if let Some(events) = events {
                    events.rules_refused(&problems);
                }
                false
            }
        }
    }

    /// The rules in `dirs` compiled, with the running correlation windows carried over;
    /// every problem when the set is not valid.
    fn load_new(
        &self,
        dirs: &[std::path::PathBuf],
    ) -> Result<(Detector, RuleSet, rsigma_eval::Pipeline), Vec<String>> {
        let pipeline = ecs_pipeline().map_err(|e| vec![e])?;
        let set: RuleSet = load(dirs, &pipeline).map_err(|p| vec![p.to_string()])?;
        if !set.errors.is_empty() {
            return Err(set.errors.iter().map(ToString::to_string).collect());
        }
        let mut detector = Detector::new(&set, pipeline.clone()).map_err(|e| vec![e])?;
        let state = self.detector.export_state().map_err(|e| vec![e])?;
        detector.import_state(&state).map_err(|e| vec![e])?;
        Ok((detector, set, pipeline))
    }

    pub fn stats(&self) -> Arc<DetectorStats> {
        Arc::clone(&self.stats)
    }

    /// Where to start reading: the recorded offset (its correlation state imported), or
    /// `archive_end` on the first start.
    pub async fn resume(&mut self, archive_end: u64) -> Result<u64, LiveError> {
        match self.store.detector_state().await? {
            Some((offset, snapshot)) => {
                // A state this version cannot read costs the open windows, not detection.
                if let Err(error) = self.detector.import_state(&snapshot) {
                    tracing::warn!(%error, "correlation state not restored: windows start empty");
                }
                Ok(offset)
            }
            None => Ok(archive_end),
        }
    }

    /// Runs until `cancel`: follows the archive, commits every `commit_interval`, and on
    /// cancellation evaluates what is durable and commits once more.
    pub fn run<A: Archive>(
        mut self,
        archive: &A,
        runtime: tokio::runtime::Handle,
        cancel: CancellationToken,
    ) -> Result<(), LiveError> {
        let end = archive.reader(0)?.committed_end();
        let start = runtime.block_on(self.resume(end))?;
        tracing::info!(
            archive_offset = start,
            rules = self.detector.detection_rules(),
            correlations = self.detector.correlation_rules(),
            "detector resuming"
        );
        // Recorded at once: a first start killed before its first commit resumes here,
        // not at a later archive end.
        runtime.block_on(self.commit(start, true))?;
        archive.commit_consumer_offset(DETECTOR_CONSUMER, start);
        let mut reader = archive.reader(start)?;
        let mut watch = reader.watch();
        let mut uncommitted = false;
        let mut last_commit = Instant::now();
        loop {
            let stopping = cancel.is_cancelled();
            let mut read = 0usize;
            self.check_rules(false);
            while let Some(record) = reader.next_record()? {
                self.detect_record(&record);
                uncommitted = true;
                read += 1;
                if read >= RECORDS_PER_ROUND {
                    break;
                }
            }
            let caught_up = reader.offset() >= reader.committed_end();
            // A state write finished in the background: its offset is the replay point. A
            // failed one is tried again at the next interval; its matches were published
            // and a replay from the older point records them.
            match self.reap_state_write(&runtime, false) {
                Ok(Some(offset)) => archive.commit_consumer_offset(DETECTOR_CONSUMER, offset),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "detector state not recorded; retrying");
                    uncommitted = true;
                }
            }
            if uncommitted && (stopping || last_commit.elapsed() >= self.commit_interval) {
                let state_due = self
                    .state_written
                    .is_none_or(|at| at.elapsed() >= STATE_INTERVAL);
                if stopping {
                    // The last state is written here, after any one in flight.
                    self.reap_state_write(&runtime, true)?;
                    runtime.block_on(self.commit(reader.offset(), true))?;
                    archive.commit_consumer_offset(DETECTOR_CONSUMER, reader.offset());
                    uncommitted = false;
                } else if self.state_write.is_some() {
                    // The database is busy with the state: the matches wait for the next
                    // round rather than hold evaluation up behind its lock.
                } else if state_due {
                    self.write_state_in_background(&runtime, reader.offset());
                    uncommitted = false;
                } else {
                    match runtime.block_on(self.commit(reader.offset(), false)) {
                        Ok(()) => uncommitted = false,
                        // Kept pending, tried again next round.
                        Err(error) => tracing::error!(%error, "matches not recorded yet; retrying"),
                    }
                }
                last_commit = Instant::now();
            }
            if stopping && caught_up && !uncommitted {
                if let Some(offset) = self.reap_state_write(&runtime, true)? {
                    archive.commit_consumer_offset(DETECTOR_CONSUMER, offset);
                }
                return Ok(());
            }
            if caught_up {
                let wait = if uncommitted {
                    self.commit_interval.saturating_sub(last_commit.elapsed())
                } else if self.source.is_some() {
                    RELOAD_CHECK
                } else {
                    Duration::from_secs(3600)
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

    /// Starts recording the pending matches, `offset` and the correlation state there
    /// on the runtime: the snapshot is taken here (a copy of the state), serialised and
    /// written while evaluation goes on, so a large state never holds matches back.
    fn write_state_in_background(&mut self, runtime: &tokio::runtime::Handle, offset: u64) {
        let snapshot = self.detector.snapshot();
        let pending = std::mem::take(&mut self.pending);
        let store = self.store.clone();
        let committed = Arc::clone(&self.committed);
        self.state_written = Some(Instant::now());
        self.state_write = Some(runtime.spawn(async move {
            let written = async {
                let json = tokio::task::spawn_blocking(move || serde_json::to_string(&snapshot))
                    .await
                    .map_err(|e| LiveError::State(format!("state serialisation: {e}")))?
                    .map_err(|e| LiveError::State(format!("correlation state: {e}")))?;
                Ok::<u64, LiveError>(
                    store
                        .commit_detections(&pending, Some((offset, json.as_str())))
                        .await?,
                )
            }
            .await;
            match written {
                Ok(recorded) => {
                    // Told here, not when the detector next reaps the task: alerting must
                    // not wait for the detector's next round.
                    if recorded > 0 {
                        committed.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Ok((offset, recorded))
                }
                Err(error) => Err((error, pending)),
            }
        }));
    }

    /// The offset of a background state write that has finished (or, `wait`, once the
    /// one in flight finishes); its error, if it failed.
    fn reap_state_write(
        &mut self,
        runtime: &tokio::runtime::Handle,
        wait: bool,
    ) -> Result<Option<u64>, LiveError> {
        let Some(task) = self.state_write.take() else {
            return Ok(None);
        };
        if !wait && !task.is_finished() {
            self.state_write = Some(task);
            return Ok(None);
        }
        let (offset, recorded) = match runtime.block_on(task) {
            Ok(Ok(done)) => done,
            Ok(Err((error, carried))) => {
                // Its matches go with the next commit, ahead of the newer ones.
                let newer = std::mem::replace(&mut self.pending, carried);
                self.pending.extend(newer);
                return Err(error);
            }
            Err(error) => return Err(LiveError::State(format!("state write: {error}"))),
        };
        self.stats.recorded.fetch_add(recorded, Ordering::Relaxed);
        self.stats.committed_offset.store(offset, Ordering::Relaxed);
        Ok(Some(offset))
    }

    /// Records the pending matches and, `with_state`, `offset` (everything before it has
    /// been evaluated) with the correlation state there.
    pub async fn commit(&mut self, offset: u64, with_state: bool) -> Result<(), LiveError> {
        let snapshot = if with_state {
            Some(self.detector.export_state().map_err(LiveError::State)?)
        } else {
            None
        };
        let state = snapshot.as_deref().map(|s| (offset, s));
        let recorded = self.store.commit_detections(&self.pending, state).await?;
        self.recorded(recorded);
        if with_state {
            self.stats.committed_offset.store(offset, Ordering::Relaxed);
            self.state_written = Some(Instant::now());
        }
        self.pending.clear();
        Ok(())
    }

    /// Evaluates every event of an archived batch. A batch that cannot be decoded is
    /// counted and skipped, as the indexer does (ingest verified it).
    pub fn detect_record(&mut self, record: &Record) {
        let decoded = SignedBatch::from_bytes(record.batch.clone())
            .and_then(|b| b.decompressed_payload(self.max_decompressed));
        let payload = match decoded {
            Ok(payload) => payload,
            Err(error) => {
                self.stats.bad_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(offset = record.offset, %error, "archived batch skipped by the detector");
                return;
            }
        };
        for line in yagura_shared::payload_lines(&payload).filter(|l| !l.is_empty()) {
            // An event that does not validate was counted by the indexer; rules need
            // valid events.
            let Ok(event) = Event::from_json_slice(line) else {
                continue;
            };
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            for detection in self.detector.process(event) {
                self.stats.matches.fetch_add(1, Ordering::Relaxed);
                self.pending.push(stored(&detection, record.offset));
                // No subscriber is not an error.
                let _ = self.live.send(Arc::new(detection));
            }
        }
    }
}

/// A match as the store records it.
pub(crate) fn stored(detection: &Detection, archive_offset: u64) -> StoredDetection {
    StoredDetection {
        id: detection.id.clone(),
        rule_id: detection.rule.id.clone(),
        rule_title: detection.rule.title.clone(),
        level: detection.rule.level.clone(),
        kind: detection.kind.to_string(),
        event_time: detection.timestamp.clone(),
        event_id: detection.event_id.clone(),
        archive_offset,
        body: serde_json::to_string(detection).unwrap_or_default(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::archive::SegmentArchive;
    use crate::detect::{ecs_pipeline, load_rules};
    use yagura_shared::AgentKey;

    use crate::detect::engine::tests::BRUTE_FORCE as RULES;

    /// A failed SSH login from 203.0.113.9 at 10:`minute` on 2026-11-25.
    pub(crate) fn failed_login(minute: u32) -> Event {
        let at = chrono::DateTime::parse_from_rfc3339(&format!("2026-11-25T10:{minute:02}:00Z"))
            .expect("time")
            .with_timezone(&chrono::Utc);
        let mut e = Event::new(at);
        e.set_str("event.dataset", "system.auth");
        e.set_str("process.name", "sshd");
        e.set_str("event.action", "ssh_login");
        e.set_str("event.outcome", "failure");
        e.set_str("source.ip", "203.0.113.9");
        e
    }

    struct Setup {
        _dir: tempfile::TempDir,
        rules: std::path::PathBuf,
        archive: SegmentArchive,
        store: Store,
        key: AgentKey,
        agent: uuid::Uuid,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tmp");
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).expect("mkdir");
        std::fs::write(rules.join("ssh.yml"), RULES).expect("rules");
        let archive = SegmentArchive::open(&dir.path().join("archive"), 1 << 20).expect("archive");
        let store = Store::open_sqlite(&dir.path().join("state.db"))
            .await
            .expect("store");
        Setup {
            _dir: dir,
            rules,
            archive,
            store,
            key: AgentKey::generate().expect("key"),
            agent: uuid::Uuid::now_v7(),
        }
    }

    impl Setup {
        fn live(&self) -> LiveDetector {
            let pipeline = ecs_pipeline().expect("pipeline");
            let set = load_rules(std::slice::from_ref(&self.rules), &pipeline).expect("rules");
            assert!(set.errors.is_empty(), "{:?}", set.errors);
            let detector = Detector::new(&set, pipeline).expect("detector");
            LiveDetector::new(
                detector,
                self.store.clone(),
                Duration::from_millis(10),
                1 << 24,
            )
        }

        async fn append(&self, seq: u64, events: &[Event]) -> Record {
            let batch = SignedBatch::seal(&self.key, self.agent, seq, chrono::Utc::now(), events)
                .expect("seal");
            let appended = self
                .archive
                .append(self.agent, seq, batch.into_bytes())
                .await
                .expect("append");
            let crate::archive::Appended::Accepted { offset, .. } = appended else {
                panic!("batch {seq} not accepted: {appended:?}");
            };
            let mut reader = self.archive.reader(offset).expect("reader");
            reader.next_record().expect("read").expect("record")
        }
    }

    fn sudo_failure(minute: u32) -> Event {
        let mut e = failed_login(minute);
        e.set_str("process.name", "sudo");
        e.set_str("event.action", "sudo_auth_failure");
        e
    }

    const SUDO_RULE: &str = "title: sudo failure\nid: 5e0c7d0e-9a51-4d8b-8a3e-000000000003\nlogsource:\n    product: linux\n    service: sudo\ndetection:\n    selection:\n        event.action: sudo_auth_failure\n    condition: selection\nlevel: medium\n";

    /// A valid new rule file is swapped in (and the open correlation window carries
    /// over); a broken one is refused with its file and line, reported as a collector
    /// event, and the running rules stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changed_rules_are_swapped_in_when_valid_and_refused_when_broken() {
        let s = setup().await;
        let events = CollectorEvents::new(uuid::Uuid::now_v7());
        let catalog = crate::detect::RuleCatalog::default();
        let mut live =
            s.live()
                .with_reload(vec![s.rules.clone()], Some(events.clone()), catalog.clone());
        live.resume(0).await.expect("resume");
        let one = s
            .append(1, &[failed_login(0), failed_login(1), sudo_failure(2)])
            .await;
        live.detect_record(&one);
        assert!(
            live.pending.is_empty(),
            "no sudo rule yet, brute force window at 2 of 3"
        );
        assert!(!live.check_rules(true), "nothing changed");

        std::fs::write(s.rules.join("sudo.yml"), SUDO_RULE).expect("write");
        assert!(live.check_rules(true), "the new rule is swapped in");
        let shown = catalog.view();
        assert!(
            shown.rules.iter().any(|r| r.title == "sudo failure"
                && r.level.as_deref() == Some("medium")
                && r.kind == "detection"),
            "the console sees the new rule: {:?}",
            shown.rules
        );
        assert!(shown.refused.is_none());
        let two = s.append(2, &[sudo_failure(3), failed_login(4)]).await;
        live.detect_record(&two);
        let titles: Vec<&str> = live.pending.iter().map(|d| d.rule_title.as_str()).collect();
        assert_eq!(
            titles,
            ["sudo failure", "SSH brute force"],
            "window carried over"
        );

        std::fs::write(
            s.rules.join("broken.yml"),
            "title: broken\nlogsource:\n    product: linux\ndetection:\n    sel:\n        a: b\n    condition: sel and\n",
        )
        .expect("write");
        assert!(!live.check_rules(true), "refused");
        assert_eq!(live.stats().refused_reloads.load(Ordering::Relaxed), 1);
        let shown = catalog.view();
        let refusal = shown.refused.expect("the console is told of the refusal");
        let at_line = format!("{}:7:", s.rules.join("broken.yml").display());
        assert!(
            refusal.problems.iter().any(|p| p.contains(&at_line)),
            "{:?}",
            refusal.problems
        );
        assert!(
            shown.rules.iter().any(|r| r.title == "sudo failure"),
            "the running rules are still listed"
        );
        let reported = events.take_ready(true);
        assert_eq!(reported.len(), 1);
        let message = reported[0].get_str("message").unwrap_or_default();
        assert!(
            message.contains(&format!("{}:7:", s.rules.join("broken.yml").display())),
            "{message}"
        );
        live.pending.clear();
        let three = s.append(3, &[sudo_failure(5)]).await;
        live.detect_record(&three);
        assert_eq!(live.pending.len(), 1, "the running rules stay");
    }

    /// A value list is watched like a rule: adding a domain to the blocklist makes the
    /// next reload fire on it, removing it stops that, and deleting the list makes the
    /// set invalid (the rule names a list that is gone) — refused, the running rules stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_list_is_reloaded_like_a_rule() {
        use crate::detect::lists::tests::{BLOCKLIST_RULE, query};
        let s = setup().await;
        let lists = s.rules.join("lists");
        std::fs::create_dir_all(&lists).expect("mkdir");
        std::fs::write(lists.join("dns_blocklist.txt"), "evil.example\n").expect("list");
        std::fs::write(s.rules.join("blocklist.yml"), BLOCKLIST_RULE).expect("rule");
        let mut live = s.live().with_reload(
            vec![s.rules.clone()],
            None,
            crate::detect::RuleCatalog::default(),
        );
        live.resume(0).await.expect("resume");
        let mut seq = 0;
        let mut fired = async |live: &mut LiveDetector, name: &str| {
            seq += 1;
            live.pending.clear();
            let record = s.append(seq, &[query(name)]).await;
            live.detect_record(&record);
            !live.pending.is_empty()
        };
        assert!(fired(&mut live, "www.evil.example").await);
        assert!(!fired(&mut live, "c2.worse.example").await);

        std::fs::write(
            lists.join("dns_blocklist.txt"),
            "# operators maintain this\nworse.example\n",
        )
        .expect("edit");
        assert!(live.check_rules(true), "the edited list is swapped in");
        assert!(fired(&mut live, "c2.worse.example").await);
        assert!(!fired(&mut live, "www.evil.example").await);

        std::fs::remove_file(lists.join("dns_blocklist.txt")).expect("rm");
        assert!(
            !live.check_rules(true),
            "a rule without its list is refused"
        );
        assert_eq!(live.stats().refused_reloads.load(Ordering::Relaxed), 1);
        assert!(
            fired(&mut live, "c2.worse.example").await,
            "the running rules stay"
        );
    }

    /// The detector dies in the middle of an event_count window (two of three failures
    /// committed, the third seen but not committed); the next one resumes from the
    /// recorded state and the correlation fires exactly once. A replay that finds the
    /// same match again (state rolled back to before it) records nothing new.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_correlation_fires_exactly_once_across_a_crash_mid_window() {
        let s = setup().await;
        let mut first = s.live();
        assert_eq!(first.resume(0).await.expect("resume"), 0);
        let one = s.append(1, &[failed_login(0), failed_login(1)]).await;
        first.detect_record(&one);
        first.commit(one.next_offset, true).await.expect("commit");
        let before_third = s
            .store
            .detector_state()
            .await
            .expect("state")
            .expect("some");
        let two = s.append(2, &[failed_login(2)]).await;
        first.detect_record(&two);
        assert_eq!(
            first.pending.len(),
            1,
            "the third failure completes the window"
        );
        drop(first); // killed before its commit

        let mut second = s.live();
        assert_eq!(
            second.resume(two.next_offset).await.expect("resume"),
            one.next_offset
        );
        second.detect_record(&two);
        second.commit(two.next_offset, true).await.expect("commit");
        let stored = s.store.detections(10).await.expect("detections");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].kind, "correlation");
        assert_eq!(stored[0].rule_title, "SSH brute force");
        assert_eq!(second.stats().recorded.load(Ordering::Relaxed), 1);

        // Killed after recording the match but, say, the state were older: the replay
        // finds the same match with the same id and records nothing new.
        s.store
            .commit_detections(&[], Some((before_third.0, &before_third.1)))
            .await
            .expect("roll back");
        let mut third = s.live();
        assert_eq!(third.resume(0).await.expect("resume"), one.next_offset);
        third.detect_record(&two);
        third.commit(two.next_offset, true).await.expect("commit");
        assert_eq!(third.stats().matches.load(Ordering::Relaxed), 1);
        assert_eq!(third.stats().recorded.load(Ordering::Relaxed), 0);
        assert_eq!(s.store.detections(10).await.expect("detections").len(), 1);

        // A fourth failure in the same window matches again, as the same window: the
        // same id, still one match.
        let three = s.append(3, &[failed_login(3)]).await;
        third.detect_record(&three);
        third.commit(three.next_offset, true).await.expect("commit");
        assert_eq!(s.store.detections(10).await.expect("detections").len(), 1);
    }
}
