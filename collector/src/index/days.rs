//! The on-disk layout of the event store: one tantivy index per UTC day.
//!
//! ```text
//! index/
//!   indexer.json          archive offset every day index covers (written after commits)
//!   days/.deleting-…      a day being deleted by retention (never read)
//!   days/2026-11-24/      a tantivy index: events whose day this is
//!   days/2026-11-25/
//! ```
//!
//! Why days: retention deletes a whole directory instead of deleting documents and
//! waiting for merges, and a search whose time range needs two days opens two indices,
//! not a year of them. Each day index keeps its own archive offset in its commit payload
//! (see [`super::writer`]), so days commit independently and a crash between two of their
//! commits neither loses nor repeats an event.
//!
//! [`DaySet`] is what the indexer and the searchers share: the indexer adds a day when its
//! first event arrives, retention removes days, and each search takes a snapshot of the
//! set, so a day deleted during a search is read to the end from its open files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher};

use super::{IndexError, Result, TIMESTAMP, build_schema};

/// Sub-directory holding one directory per day.
const DAYS_DIR: &str = "days";
/// The indexer's resume point, covering every day.
const STATE_FILE: &str = "indexer.json";
/// Day directory names.
const DAY_FORMAT: &str = "%Y-%m-%d";

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> IndexError {
    IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The directory of `day` under the index root.
pub(crate) fn day_dir(root: &Path, day: NaiveDate) -> PathBuf {
    root.join(DAYS_DIR).join(day.format(DAY_FORMAT).to_string())
}

/// The days that have a directory under `root`, oldest first. Other names (an operator's
/// backup, a day being deleted) are left alone.
pub(crate) fn list_days(root: &Path) -> Result<Vec<NaiveDate>> {
    let dir = root.join(DAYS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir, e)),
    };
    let mut days = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&dir, e))?;
        if !entry.file_type().map_err(|e| io_error(&dir, e))?.is_dir() {
            continue;
        }
        if let Some(day) = entry
            .file_name()
            .to_str()
            .and_then(|name| NaiveDate::parse_from_str(name, DAY_FORMAT).ok())
        {
            days.push(day);
        }
    }
    days.sort();
    Ok(days)
}

/// Prefix of a day directory being deleted: not a date, so never opened as a day.
const DELETING: &str = ".deleting-";

/// Deletes a day: renamed out of the day names first (one atomic step), then removed,
/// so a crash half-way leaves a directory no start opens as a day; leftovers are
/// removed by [`remove_leftovers`].
pub(crate) fn remove_day(root: &Path, day: NaiveDate) -> Result<()> {
    let dir = day_dir(root, day);
    let doomed = root
        .join(DAYS_DIR)
        .join(format!("{DELETING}{}", day.format(DAY_FORMAT)));
    std::fs::rename(&dir, &doomed).map_err(|e| io_error(&dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| io_error(&doomed, e))
}

/// Removes day directories a crash left half-deleted.
pub(crate) fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join(DAYS_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(DELETING)
            && let Err(error) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), %error, "half-deleted day not removed");
        }
    }
}

/// Bytes on disk under `dir` (files only, not following links).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Opens (or creates) the tantivy index of one day.
pub(crate) fn open_day(root: &Path, day: NaiveDate) -> Result<Index> {
    let dir = day_dir(root, day);
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let directory = tantivy::directory::MmapDirectory::open(&dir)
        .map_err(|e| IndexError::Query(format!("open {}: {e}", dir.display())))?;
    Ok(Index::open_or_create(directory, build_schema())?)
}

/// Moves `root` aside (kept for the operator) so a new store is built from the archive,
/// which is the source of truth: for a store written by an older version, with another
/// schema or the single-index layout.
pub(crate) fn move_aside(root: &Path, why: &str) -> Result<()> {
    let aside = root.with_file_name(format!(
        "{}.{why}-{}",
        root.file_name().and_then(|n| n.to_str()).unwrap_or("index"),
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    tracing::warn!(
        index = %root.display(),
        moved_to = %aside.display(),
        why,
        "the index is rebuilt from the archive"
    );
    std::fs::rename(root, &aside).map_err(|e| io_error(root, e))
}

/// Whether `root` holds the single-index layout of earlier versions.
pub(crate) fn is_single_index_layout(root: &Path) -> bool {
    root.join("meta.json").exists()
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexerState {
    archive_offset: u64,
}

/// The archive offset every day covers, if it was ever written.
pub(crate) fn read_state(root: &Path) -> Result<Option<u64>> {
    let path = root.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<IndexerState>(&bytes)
            .map(|s| Some(s.archive_offset))
            .map_err(|e| IndexError::Payload(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Records that every day covers the archive up to `offset` (atomically: a temporary
/// file, synced, renamed over the old one).
pub(crate) fn write_state(root: &Path, offset: u64) -> Result<()> {
    use std::io::Write as _;
    let path = root.join(STATE_FILE);
    let tmp = root.join(format!("{STATE_FILE}.tmp"));
    let body = serde_json::to_vec(&IndexerState {
        archive_offset: offset,
    })
    .map_err(|e| IndexError::Payload(e.to_string()))?;
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(&body).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))
}

/// The read side of one day.
#[derive(Clone)]
pub(crate) struct DayReader {
    pub day: NaiveDate,
    pub reader: IndexReader,
}

/// The threads every day's searches run their segments on: one pool for the process, as
/// many threads as cores (at most eight), so one query uses the machine while many
/// days do not each start their own pool.
fn search_executor() -> Result<tantivy::Executor> {
    static EXECUTOR: std::sync::OnceLock<tantivy::Executor> = std::sync::OnceLock::new();
    if let Some(executor) = EXECUTOR.get() {
        return Ok(executor.clone());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    let executor = if threads > 1 {
        tantivy::Executor::multi_thread(threads, "search-")?
    } else {
        tantivy::Executor::single_thread()
    };
    Ok(EXECUTOR.get_or_init(|| executor).clone())
}

impl DayReader {
    pub fn new(day: NaiveDate, mut index: Index) -> Result<Self> {
        index.set_executor(search_executor()?);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(DayReader { day, reader })
    }
}

/// One day's searcher, with the span of event times it holds.
pub(crate) struct DaySearcher {
    pub searcher: Searcher,
}

impl DaySearcher {
    /// The oldest and newest `@timestamp` in the day, in microseconds (bounds: deleted
    /// documents may widen them), or `None` for a day without timed events.
    pub fn time_span(&self) -> Option<(i64, i64)> {
        let mut span: Option<(i64, i64)> = None;
        for segment in self.searcher.segment_readers() {
            let Ok(column) = segment.fast_fields().date(TIMESTAMP) else {
                continue;
            };
            if column.num_docs() == 0 || segment.num_docs() == 0 {
                continue;
            }
            let low = column.min_value().into_timestamp_micros();
            let high = column.max_value().into_timestamp_micros();
            span = Some(match span {
                None => (low, high),
                Some((a, b)) => (a.min(low), b.max(high)),
            });
        }
        span
    }
}

/// The days searchers can read, shared with the indexer.
#[derive(Clone, Default)]
pub(crate) struct DaySet {
    days: Arc<RwLock<BTreeMap<NaiveDate, DayReader>>>,
}

impl DaySet {
    pub fn insert(&self, reader: DayReader) {
        self.days
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(reader.day, reader);
    }

    pub fn remove(&self, day: NaiveDate) -> Option<DayReader> {
        self.days
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&day)
    }

    /// A searcher per day, oldest day first: the state every search of one request reads.
    pub fn searchers(&self) -> Vec<DaySearcher> {
        self.days
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|d| DaySearcher {
                searcher: d.reader.searcher(),
            })
            .collect()
    }

    /// Reloads every day's reader now.
    pub fn reload(&self) -> Result<()> {
        let readers: Vec<DayReader> = self
            .days
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for day in readers {
            day.reader.reload()?;
        }
        Ok(())
    }

    /// Opens every day under `root` for reading.
    pub fn open(root: &Path) -> Result<Self> {
        let set = DaySet::default();
        for day in list_days(root)? {
            set.insert(DayReader::new(day, open_day(root, day)?)?);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_listed_in_order_and_foreign_names_ignored() {
        let root = tempfile::tempdir().expect("tempdir");
        for name in ["2026-11-25", "2026-01-02", "backup", "2026-13-01"] {
            std::fs::create_dir_all(root.path().join(DAYS_DIR).join(name)).expect("mkdir");
        }
        let days = list_days(root.path()).expect("list");
        assert_eq!(
            days,
            vec![
                NaiveDate::from_ymd_opt(2026, 1, 2).expect("date"),
                NaiveDate::from_ymd_opt(2026, 11, 25).expect("date"),
            ]
        );
    }

    /// A day is renamed out of the day names before it is removed; what a crash leaves
    /// of one is never listed and is cleaned at the next start.
    #[test]
    fn a_half_deleted_day_is_never_a_day_and_is_cleaned_up() {
        let root = tempfile::tempdir().expect("tempdir");
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        std::fs::create_dir_all(day_dir(root.path(), day)).expect("mkdir");
        std::fs::write(day_dir(root.path(), day).join("meta.json"), "{}").expect("write");
        remove_day(root.path(), day).expect("remove");
        assert!(list_days(root.path()).expect("list").is_empty());
        let leftover = root.path().join(DAYS_DIR).join(".deleting-2026-11-21");
        std::fs::create_dir_all(&leftover).expect("mkdir");
        assert!(list_days(root.path()).expect("list").is_empty());
        remove_leftovers(root.path());
        assert!(!leftover.exists());
    }

    #[test]
    fn state_round_trips_and_is_absent_at_first() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_state(root.path()).expect("read"), None);
        write_state(root.path(), 4096).expect("write");
        assert_eq!(read_state(root.path()).expect("read"), Some(4096));
    }
}
