//! File tailing: configured paths and globs in, complete lines with exact checkpoints out.
//!
//! A [`Tailer`] resolves the sources' patterns (again on every [`Tailer::rescan`], so new
//! files are picked up), keeps each matched file open, and [`Tailer::poll`] reads complete
//! lines from where the previous read stopped. It needs no runtime and no network.
//!
//! Guarantees:
//!
//! * A line is handed out only once its `'\n'` has been written; a partial last line is
//!   held back. [`Tailer::checkpoints`] gives, per file, the byte offset just past the last
//!   line handed out, so a caller that commits those checkpoints together with the lines
//!   it received resumes after a restart with neither loss nor repetition.
//! * A file is identified by (device, inode) and a fingerprint of its first bytes (up to
//!   [`HEAD_BYTES`]), not by its path: a reused inode with other content is a new file,
//!   and two files with identical first lines are still two files (different inodes).
//! * Rotation by rename: the renamed file is drained to its end through the open handle
//!   before lines of the new file are handed out. Its checkpoint keeps being committed
//!   (`retired`), so after a crash or a stop mid-rotation it is found again by inode in
//!   its directory and drained from the checkpoint. Rotation while the agent is stopped is
//!   found the same way.
//! * Copytruncate: a file that shrank below the read position (or whose first bytes
//!   changed) was truncated. The unread rest is read from the rotated copy (a file in the
//!   same directory with the same first bytes, at least as long as the read position); if
//!   there is none, the unread bytes are reported as a [`Loss`]. Then the file is read
//!   from 0.
//! * Delete and recreate: the deleted file is drained through its handle, then released.
//! * Multi-line joining (per source): lines are joined into one event by a start or a
//!   continuation pattern; while an event waits for more lines, its file's checkpoint
//!   stays at the event's first byte, so a restart forms the same event again instead of
//!   splitting it. A waiting event is handed out after the flush timeout, at the line
//!   limit, or when its file is drained for good; the joined text is capped at the line
//!   limit and flagged `truncated` like a long line.
//! * Invalid UTF-8 is replaced (U+FFFD) and the line tagged `invalid_utf8`; a line longer
//!   than the limit is cut at the limit (on a character boundary) and tagged `truncated`,
//!   the rest of it up to its newline is skipped, and the checkpoint moves past it.
//! * Memory per file is bounded by the line limit plus one read buffer.
//!
//! [`DirWatcher`] turns file-system notifications into prompt wake-ups; it is an
//! optimisation only, the poll alone is correct.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use yagura_shared::{Event, FlatEvent};

use crate::config::{MultilineConfig, MultilineMode, SourceConfig, StartAt};

/// The longest line kept whole; longer lines are cut to this and tagged `truncated`.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most checkpoints of released files remembered (so a rotated file that matches a
/// pattern later is not read twice).
const MAX_DORMANT: usize = 1024;

/// How much is read from a file at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Where reading of one file resumes: the offset just past the last line handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Where the file was when it was opened (it may since have been renamed).
    pub path: String,
    pub dev: u64,
    pub inode: u64,
    pub offset: u64,
    /// How many first bytes [`Checkpoint::head_hash`] covers (0 for an empty file).
    #[serde(default)]
    pub head_len: u64,
    /// Fingerprint of the first `head_len` bytes: tells a reused inode from the old file.
    #[serde(default)]
    pub head_hash: String,
    /// The file had left its path (rotated or deleted) and was still being drained.
    #[serde(default)]
    pub retired: bool,
}

/// Bytes of a file's head that make its fingerprint.
pub const HEAD_BYTES: u64 = 256;

/// Lines or bytes that were not and will never be read: the loss ledger's raw material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub path: String,
    /// `truncated_before_read`, `rotated_away_unread`, …
    pub reason: &'static str,
    /// First unread byte offset.
    pub offset: u64,
    /// Unread bytes, when known.
    pub bytes: Option<u64>,
}

/// Fingerprint of the first `len` bytes of `file` (read with `pread`: the read position
/// does not move). `None` when the file is shorter than `len`.
fn head_hash(file: &File, len: u64) -> io::Result<Option<String>> {
    use sha2::Digest as _;
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let digest = sha2::Sha256::digest(&buf);
    Ok(Some(hex::encode(&digest[..16])))
}

/// Whether `file` (with metadata `meta`) is the file `checkpoint` was taken of.
fn is_same_file(checkpoint: &Checkpoint, file: &File, meta: &std::fs::Metadata) -> bool {
    if checkpoint.dev != meta.dev() || checkpoint.inode != meta.ino() {
        return false;
    }
    if checkpoint.head_len == 0 {
        return true;
    }
    matches!(head_hash(file, checkpoint.head_len), Ok(Some(h)) if h == checkpoint.head_hash)
}

/// Finds, in `dir`, a regular file satisfying `accept` (used to find a rotated file by its
/// identity, or a copytruncate copy by its head).
fn find_in_dir(
    dir: &Path,
    accept: impl Fn(&File, &std::fs::Metadata) -> bool,
) -> Option<(PathBuf, File)> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if accept(&file, &meta) {
            return Some((path, file));
        }
    }
    None
}

/// One complete line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Index of the source (in the configuration) the file belongs to.
    pub source: usize,
    pub dataset: Arc<str>,
    /// The source's labels, stamped as `labels.*`.
    pub labels: Arc<BTreeMap<String, String>>,
    pub path: Arc<str>,
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// The line without its `'\n'`, lossily decoded.
    pub text: String,
    pub invalid_utf8: bool,
    pub truncated: bool,
}

/// Who the events are from: stamped on every event.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub host_name: String,
    pub agent_id: Uuid,
}

impl EventContext {
    /// Stamps who the event is from: `host.name`, `host.hostname`, `agent.*`.
    pub fn stamp(&self, event: &mut Event) {
        let mut flat = FlatEvent::from_event(event);
        self.stamp_flat(&mut flat);
        *event = flat.to_event();
    }

    /// [`EventContext::stamp`] on the agent's [`FlatEvent`].
    pub fn stamp_flat(&self, event: &mut FlatEvent) {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        event.set_str("host.name", &self.host_name);
        event.set_str("host.hostname", &self.host_name);
        event.set_str("agent.id", self.agent_id.hyphenated().encode_lower(&mut id));
        event.set_str("agent.type", "yagura-agent");
        event.set_str("agent.version", crate::VERSION);
    }
}

impl Line {
    /// The line as an ECS event: `message`, `event.original`, `event.dataset`,
    /// `log.file.path`, `log.offset`, `host.*`, `agent.*` and the tags.
    pub fn into_event(self, context: &EventContext) -> Event {
        let mut event = FlatEvent::new();
        self.write_event(context, &mut event);
        event.to_event()
    }

    /// [`Line::into_event`] into a (cleared) [`FlatEvent`]: the agent's per-line path.
    pub fn write_event(&self, context: &EventContext, event: &mut FlatEvent) {
        event.start(Utc::now());
        event.set_str("event.original", &self.text);
        event.set_str("message", &self.text);
        event.set_str("event.dataset", &self.dataset);
        event.set_str("log.file.path", &self.path);
        event.set_u64("log.offset", self.offset);
        context.stamp_flat(event);
        for (key, value) in self.labels.iter() {
            event.set_str_at(&format!("labels.{key}"), value);
        }
        if self.invalid_utf8 {
            event.add_tag("invalid_utf8");
        }
        if self.truncated {
            event.add_tag("truncated");
        }
    }
}

/// Tails every file matched by a set of sources. See the module docs for its guarantees.
#[derive(Debug)]
pub struct Tailer {
    sources: Vec<SourceConfig>,
    datasets: Vec<Arc<str>>,
    labels: Vec<Arc<BTreeMap<String, String>>>,
    join_rules: Vec<Option<Arc<JoinRule>>>,
    /// Sources parsed as auditd: their records are joined by serial.
    audit_sources: Vec<bool>,
    /// Joined events handed out outside a read (a truncated file's waiting event).
    flushed: Vec<Line>,
    /// Files being tailed, by path.
    files: BTreeMap<PathBuf, TailedFile>,
    /// Files no longer at their path (deleted or replaced): drained to EOF, then dropped.
    retired: Vec<TailedFile>,
    /// Checkpoints of files not (yet) open, or drained and released: a file found again
    /// (by identity, under any matching path) resumes from here instead of from 0.
    dormant: Vec<Checkpoint>,
    /// Unread data discovered since the last [`Tailer::take_losses`].
    losses: Vec<Loss>,
    /// Paths that could not be opened, with the error last logged (logged once).
    failed: HashMap<PathBuf, String>,
    /// Round-robin start for fairness between files.
    cursor: usize,
    max_line_bytes: usize,
    initial_scan_done: bool,
}

impl Tailer {
    /// A tailer for `sources`, resuming from `checkpoints`. Scans once immediately; files
    /// found now without a checkpoint start per their source's `start_at`.
    pub fn new(sources: &[SourceConfig], checkpoints: Vec<Checkpoint>) -> Tailer {
        let mut tailer = Tailer {
            datasets: sources
                .iter()
                .map(|s| Arc::from(s.dataset.as_str()))
                .collect(),
            labels: sources.iter().map(|s| Arc::new(s.labels.clone())).collect(),
            join_rules: sources
                .iter()
                .map(|s| {
                    s.multiline
                        .as_ref()
                        .and_then(JoinRule::compile)
                        .map(Arc::new)
                })
                .collect(),
            audit_sources: sources.iter().map(|s| s.parser == "auditd").collect(),
            flushed: Vec::new(),
            sources: sources.to_vec(),
            files: BTreeMap::new(),
            retired: Vec::new(),
            dormant: Vec::new(),
            losses: Vec::new(),
            failed: HashMap::new(),
            cursor: 0,
            max_line_bytes: MAX_LINE_BYTES,
            initial_scan_done: false,
        };
        tailer.resume(checkpoints);
        tailer.rescan();
        tailer.initial_scan_done = true;
        tailer
    }

    /// Sorts committed checkpoints into files still at their path (opened by the next
    /// rescan) and files that left it (rotated or deleted, possibly while the agent was
    /// stopped): those are looked for by identity in their directory and drained from the
    /// checkpoint; when they are gone, the unread data is a loss.
    fn resume(&mut self, checkpoints: Vec<Checkpoint>) {
        for checkpoint in checkpoints {
            let path = PathBuf::from(&checkpoint.path);
            let at_path = File::open(&path)
                .and_then(|f| f.metadata().map(|m| (f, m)))
                .is_ok_and(|(f, m)| is_same_file(&checkpoint, &f, &m));
            if at_path && !checkpoint.retired {
                self.dormant.push(checkpoint);
                continue;
            }
            let dir = path.parent().unwrap_or(Path::new("/"));
            let found = if at_path {
                File::open(&path).ok().map(|f| (path.clone(), f))
            } else {
                find_in_dir(dir, |f, m| is_same_file(&checkpoint, f, m))
            };
            match found {
                Some((now_at, file)) => {
                    tracing::info!(
                        path = %checkpoint.path,
                        now_at = %now_at.display(),
                        offset = checkpoint.offset,
                        "file rotated away before it was read to its end; draining it"
                    );
                    let source = self.source_of(&path).unwrap_or(0);
                    match self.tailed(file, &path, source, checkpoint.offset) {
                        Ok(tailed) => self.retired.push(tailed),
                        Err(e) => {
                            tracing::warn!(path = %now_at.display(), error = %e, "cannot read rotated file")
                        }
                    }
                }
                None if checkpoint.retired => {
                    tracing::warn!(path = %checkpoint.path, offset = checkpoint.offset, "rotated file gone before it was read to its end");
                    self.losses.push(Loss {
                        path: checkpoint.path.clone(),
                        reason: "rotated_away_unread",
                        offset: checkpoint.offset,
                        bytes: None,
                    });
                }
                None => {
                    tracing::info!(path = %checkpoint.path, "checkpointed file is gone");
                }
            }
        }
    }

    /// The index of the first source whose patterns match `path`.
    fn source_of(&self, path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| {
            s.paths
                .iter()
                .any(|p| glob::Pattern::new(p).is_ok_and(|pat| pat.matches_path(path)))
        })
    }

    /// Unread data found since the last call: for the loss ledger.
    pub fn take_losses(&mut self) -> Vec<Loss> {
        std::mem::take(&mut self.losses)
    }

    #[cfg(test)]
    fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line_bytes = max;
        self
    }

    /// Resolves the patterns again: opens new files, retires deleted or replaced ones.
    pub fn rescan(&mut self) {
        let matched = self.resolve();
        // Tracked files whose path no longer holds them.
        let tracked: Vec<PathBuf> = self.files.keys().cloned().collect();
        for path in tracked {
            let still_there = match std::fs::metadata(&path) {
                Ok(meta) => self
                    .files
                    .get(&path)
                    .is_some_and(|f| f.dev == meta.dev() && f.inode == meta.ino()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                // Cannot tell (permissions, I/O): keep tailing what we have open.
                Err(_) => true,
            };
            if !still_there && let Some(file) = self.files.remove(&path) {
                tracing::info!(path = %path.display(), "file deleted or replaced; draining it");
                self.retired.push(file);
            }
        }
        for (path, source) in matched {
            if self.files.contains_key(&path) {
                continue;
            }
            // A rotated file still being drained may also match a pattern (`*.log*`).
            let draining = std::fs::metadata(&path).is_ok_and(|m| {
                self.retired
                    .iter()
                    .any(|f| f.dev == m.dev() && f.inode == m.ino())
            });
            if draining {
                continue;
            }
            match self.open(&path, source) {
                Ok(file) => {
                    if self.failed.remove(&path).is_some() {
                        tracing::info!(path = %path.display(), "file readable again");
                    }
                    let (dev, inode) = (file.dev, file.inode);
                    self.dormant.retain(|c| c.dev != dev || c.inode != inode);
                    self.files.insert(path, file);
                }
                Err(e) => {
                    let message = e.to_string();
                    if self.failed.get(&path) != Some(&message) {
                        tracing::warn!(path = %path.display(), error = %message, "cannot open file");
                        self.failed.insert(path, message);
                    }
                }
            }
        }
        // Dormant checkpoints are kept while their file still exists in its directory
        // (under any name), at most a bounded number of them.
        if !self.dormant.is_empty() {
            let mut present: HashSet<(u64, u64)> = HashSet::new();
            let dirs: HashSet<PathBuf> = self
                .dormant
                .iter()
                .filter_map(|c| Path::new(&c.path).parent().map(Path::to_path_buf))
                .collect();
            for dir in dirs {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if let Ok(meta) = entry.metadata() {
                            present.insert((meta.dev(), meta.ino()));
                        }
                    }
                }
            }
            self.dormant.retain(|c| present.contains(&(c.dev, c.inode)));
            let excess = self.dormant.len().saturating_sub(MAX_DORMANT);
            self.dormant.drain(..excess);
        }
    }

    /// Reads up to `max_lines` complete lines across all files.
    pub fn poll(&mut self, max_lines: usize) -> Vec<Line> {
        let mut out = Vec::new();
        // A truncation found in the first pass queues the rotated copy's rest; the second
        // pass reads it, then the file from its new start.
        if self.poll_pass(max_lines, &mut out) {
            self.poll_pass(max_lines, &mut out);
        }
        out
    }

    /// One pass over retired then current files; returns whether a truncation was found.
    fn poll_pass(&mut self, max_lines: usize, out: &mut Vec<Line>) -> bool {
        let mut truncation_found = false;
        let max_line_bytes = self.max_line_bytes;
        out.append(&mut self.flushed);
        // Replaced files first: their lines were written before the new file's.
        let mut index = 0;
        while index < self.retired.len() && out.len() < max_lines {
            let file = &mut self.retired[index];
            match file.read_lines(max_lines, max_line_bytes, out) {
                Ok(ReadEnd::Limit) => index += 1,
                Ok(ReadEnd::Eof) | Ok(ReadEnd::Truncated) => {
                    let mut file = self.retired.remove(index);
                    tracing::debug!(path = %file.path.display(), "retired file drained");
                    // It will not grow any more: its waiting event is complete.
                    if let Some(line) = file.joiner.as_mut().and_then(|j| j.flush(true)) {
                        out.push(line);
                    }
                    let mut checkpoint = file.checkpoint();
                    checkpoint.retired = false;
                    self.dormant.push(checkpoint);
                }
                Err(e) => {
                    let file = self.retired.remove(index);
                    tracing::warn!(path = %file.path.display(), error = %e, "dropping unreadable retired file");
                }
            }
        }
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        if paths.is_empty() {
            return truncation_found;
        }
        let start = self.cursor % paths.len();
        self.cursor = self.cursor.wrapping_add(1);
        for path in paths.iter().cycle().skip(start).take(paths.len()) {
            if out.len() >= max_lines {
                break;
            }
            let Some(file) = self.files.get_mut(path) else {
                continue;
            };
            let read = file.read_lines(max_lines, max_line_bytes, out);
            if matches!(read, Ok(ReadEnd::Truncated)) {
                self.recover_truncated(path);
                truncation_found = true;
                continue;
            }
            let Some(file) = self.files.get_mut(path) else {
                continue;
            };
            if let Some(line) = file.joiner.as_mut().and_then(|j| j.flush(false)) {
                out.push(line);
            }
            if let Err(e) = read {
                let message = e.to_string();
                if file.last_error.as_ref() != Some(&message) {
                    tracing::warn!(path = %path.display(), error = %message, "read failed");
                    file.last_error = Some(message);
                }
            } else {
                file.last_error = None;
            }
        }
        truncation_found
    }

    /// A tailed file was truncated (copytruncate) or rewritten in place. Its unread rest
    /// is drained from the rotated copy when one is in the directory (same first bytes, at
    /// least as long as what was read); otherwise it is recorded as a loss. The file is
    /// then read from 0.
    fn recover_truncated(&mut self, path: &Path) {
        let Some(file) = self.files.get_mut(path) else {
            return;
        };
        let (read_to, head_len, head) = (file.offset, file.head_len, file.head_hash.clone());
        let own = (file.dev, file.inode);
        let unread = file.last_size.saturating_sub(read_to);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let copy = find_in_dir(&dir, |f, m| {
            (m.dev(), m.ino()) != own
                && m.len() >= read_to
                && head_len > 0
                && matches!(head_hash(f, head_len), Ok(Some(h)) if h == head)
        });
        let source = self.source_of(path).unwrap_or(0);
        match copy {
            Some((copy_path, copy_file)) => {
                tracing::info!(
                    path = %path.display(),
                    copy = %copy_path.display(),
                    offset = read_to,
                    "file truncated (copytruncate); reading the rest from the rotated copy"
                );
                match self.tailed(copy_file, path, source, read_to) {
                    Ok(mut drained) => {
                        // Not a file to remember: its lines are reported under `path`.
                        drained.path = copy_path;
                        self.retired.push(drained);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the rotated copy"),
                }
            }
            None => {
                if unread > 0 || read_to > 0 {
                    tracing::warn!(path = %path.display(), offset = read_to, unread, "file truncated before it was read to its end, and no rotated copy found");
                }
                if unread > 0 {
                    self.losses.push(Loss {
                        path: path.display().to_string(),
                        reason: "truncated_before_read",
                        offset: read_to,
                        bytes: Some(unread),
                    });
                }
            }
        }
        if let Some(line) = self
            .files
            .get_mut(path)
            .and_then(|f| f.joiner.as_mut())
            .and_then(|j| j.flush(true))
        {
            self.flushed.push(line);
        }
        if let Some(file) = self.files.get_mut(path)
            && let Err(e) = file.restart_from_zero()
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot reread truncated file");
        }
    }

    /// Per file, the offset just past the last line handed out by [`Tailer::poll`]. Sorted
    /// by path.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        let mut all: Vec<Checkpoint> = self
            .files
            .values()
            .map(TailedFile::checkpoint)
            .chain(self.retired.iter().map(|f| Checkpoint {
                retired: true,
                ..f.checkpoint()
            }))
            .chain(self.dormant.iter().cloned())
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// The paths currently tailed.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.keys().map(PathBuf::as_path).collect()
    }

    /// Every regular file matched by a pattern, mapped to the first source matching it.
    fn resolve(&self) -> BTreeMap<PathBuf, usize> {
        let mut matched = BTreeMap::new();
        for (index, source) in self.sources.iter().enumerate() {
            for pattern in &source.paths {
                let entries = match glob::glob(pattern) {
                    Ok(entries) => entries,
                    Err(e) => {
                        tracing::warn!(%pattern, error = %e, "invalid pattern");
                        continue;
                    }
                };
                for entry in entries {
                    let Ok(path) = entry else { continue };
                    let excluded = source
                        .exclude
                        .iter()
                        .any(|x| glob::Pattern::new(x).is_ok_and(|p| p.matches_path(&path)));
                    if excluded {
                        continue;
                    }
                    let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
                    if is_file {
                        matched.entry(path).or_insert(index);
                    }
                }
            }
        }
        matched
    }

    fn open(&self, path: &Path, source: usize) -> io::Result<TailedFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let size = meta.len();
        let known = self.dormant.iter().find(|c| is_same_file(c, &file, &meta));
        let offset = match known {
            Some(c) if c.offset <= size => c.offset,
            Some(c) => {
                tracing::info!(
                    path = %path.display(),
                    checkpoint_offset = c.offset,
                    size,
                    "file is shorter than its checkpoint (truncated while stopped); reading from 0"
                );
                0
            }
            None => {
                if self.dormant.iter().any(|c| Path::new(&c.path) == path) {
                    tracing::info!(path = %path.display(), "a new file at a checkpointed path; reading from 0");
                }
                match self.sources.get(source).map(|s| s.start_at) {
                    Some(StartAt::End) if !self.initial_scan_done => size,
                    _ => 0,
                }
            }
        };
        self.tailed(file, path, source, offset)
    }

    /// Wraps an open file for reading from `offset`; `path` is the name its lines are
    /// reported under.
    fn tailed(
        &self,
        mut file: File,
        path: &Path,
        source: usize,
        offset: u64,
    ) -> io::Result<TailedFile> {
        let meta = file.metadata()?;
        let (dev, inode, size) = (meta.dev(), meta.ino(), meta.len());
        let head_len = size.min(HEAD_BYTES);
        let head = head_hash(&file, head_len)?.unwrap_or_default();
        file.seek(SeekFrom::Start(offset))?;
        tracing::debug!(path = %path.display(), offset, "tailing file");
        let dataset = self
            .datasets
            .get(source)
            .cloned()
            .unwrap_or_else(|| Arc::from("generic"));
        let labels = self.labels.get(source).cloned().unwrap_or_default();
        let joiner = if self.audit_sources.get(source).copied().unwrap_or(false) {
            Some(Joiner::Audit(crate::parse::AuditdAssembler::new(
                AUDIT_MAX_WAIT,
            )))
        } else {
            self.join_rules
                .get(source)
                .and_then(Option::as_ref)
                .map(|rule| {
                    Joiner::Pattern(PatternJoiner {
                        rule: Arc::clone(rule),
                        group: None,
                    })
                })
        };
        Ok(TailedFile {
            path_str: Arc::from(path.to_string_lossy().as_ref()),
            path: path.to_path_buf(),
            dataset,
            labels,
            source,
            joiner,
            dev,
            inode,
            head_len,
            head_hash: head,
            last_size: size,
            settled_at: None,
            file,
            offset,
            line: Vec::new(),
            line_len: 0,
            chunk: Vec::new(),
            chunk_pos: 0,
            last_error: None,
        })
    }
}

/// A source's compiled multi-line rule.
#[derive(Debug)]
struct JoinRule {
    mode: MultilineMode,
    pattern: regex::Regex,
    flush_after: Duration,
    max_lines: usize,
}

impl JoinRule {
    fn compile(config: &MultilineConfig) -> Option<JoinRule> {
        match regex::Regex::new(&config.pattern) {
            Ok(pattern) => Some(JoinRule {
                mode: config.mode,
                pattern,
                flush_after: Duration::from_millis(config.flush_timeout_ms),
                max_lines: config.max_lines.max(1),
            }),
            Err(e) => {
                // Config validation rejects this before a tailer is built.
                tracing::error!(pattern = %config.pattern, error = %e, "invalid multi-line pattern; lines are not joined");
                None
            }
        }
    }
}

/// An event being joined from several lines.
#[derive(Debug)]
struct Group {
    line: Line,
    lines: usize,
    last_at: Instant,
}

/// Joins one file's lines into events: by a multi-line rule, or auditd records by serial.
#[derive(Debug)]
enum Joiner {
    Pattern(PatternJoiner),
    Audit(crate::parse::AuditdAssembler<Line>),
}

/// How long an incomplete auditd event waits for more records (auditd writes an event's
/// records together).
const AUDIT_MAX_WAIT: Duration = Duration::from_secs(2);

impl Joiner {
    fn push(&mut self, line: Line, max_bytes: usize, out: &mut Vec<Line>) {
        match self {
            Joiner::Pattern(joiner) => joiner.push(line, max_bytes, out),
            Joiner::Audit(assembler) => {
                let text = line.text.clone();
                for group in assembler.push(&text, line, Instant::now()) {
                    out.push(audit_line(group));
                }
            }
        }
    }

    fn flush(&mut self, force: bool) -> Option<Line> {
        match self {
            Joiner::Pattern(joiner) => joiner.flush(force),
            Joiner::Audit(assembler) if force => assembler.flush().map(audit_line),
            Joiner::Audit(assembler) => assembler.poll_expired(Instant::now()).map(audit_line),
        }
    }

    fn pending_offset(&self) -> Option<u64> {
        match self {
            Joiner::Pattern(joiner) => joiner.pending_offset(),
            Joiner::Audit(assembler) => assembler.pending_first().map(|l| l.offset),
        }
    }

    /// Forgets the waiting event (its lines will be read again).
    fn reset(&mut self) {
        match self {
            Joiner::Pattern(joiner) => joiner.group = None,
            Joiner::Audit(assembler) => {
                let _ = assembler.flush();
            }
        }
    }
}

/// One line holding an auditd event's records, joined with `\n` (the `auditd` parser
/// reads them back as one group).
fn audit_line(group: crate::parse::AuditdGroup<Line>) -> Line {
    let mut line = group.first;
    line.text = group.lines.join("\n");
    line
}

/// Joins one file's lines into events by a [`JoinRule`].
#[derive(Debug)]
struct PatternJoiner {
    rule: Arc<JoinRule>,
    group: Option<Group>,
}

impl PatternJoiner {
    /// Feeds one line; events it completes go to `out`.
    fn push(&mut self, line: Line, max_bytes: usize, out: &mut Vec<Line>) {
        let matches = self.rule.pattern.is_match(&line.text);
        let joins = match self.rule.mode {
            MultilineMode::Start => !matches,
            MultilineMode::Continue => matches,
        };
        match self.group.as_mut() {
            Some(group) if joins => {
                let room = max_bytes.saturating_sub(group.line.text.len() + 1);
                if line.text.len() > room || line.truncated {
                    group.line.truncated = true;
                }
                if room > 0 {
                    group.line.text.push('\n');
                    let mut cut = line.text.len().min(room - 1);
                    while !line.text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    group.line.text.push_str(&line.text[..cut]);
                }
                group.line.invalid_utf8 |= line.invalid_utf8;
                group.lines += 1;
                group.last_at = Instant::now();
            }
            _ => {
                if let Some(done) = self.group.take() {
                    out.push(done.line);
                }
                self.group = Some(Group {
                    line,
                    lines: 1,
                    last_at: Instant::now(),
                });
            }
        }
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.lines >= self.rule.max_lines)
            && let Some(done) = self.group.take()
        {
            out.push(done.line);
        }
    }

    /// The waiting event, if its last line is older than the flush timeout (or `force`).
    fn flush(&mut self, force: bool) -> Option<Line> {
        let due = self
            .group
            .as_ref()
            .is_some_and(|g| force || g.last_at.elapsed() >= self.rule.flush_after);
        if due {
            self.group.take().map(|g| g.line)
        } else {
            None
        }
    }

    /// The first byte of the waiting event: where a restart must read from.
    fn pending_offset(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.line.offset)
    }
}

enum ReadEnd {
    /// Stopped because the caller's line limit was reached.
    Limit,
    /// Read everything currently in the file.
    Eof,
    /// The file was truncated or its first bytes replaced: nothing was read.
    Truncated,
}

/// One open file and the reading state of its current, incomplete line.
#[derive(Debug)]
struct TailedFile {
    path: PathBuf,
    path_str: Arc<str>,
    dataset: Arc<str>,
    labels: Arc<BTreeMap<String, String>>,
    source: usize,
    joiner: Option<Joiner>,
    dev: u64,
    inode: u64,
    /// Fingerprint of the first `head_len` bytes, as in [`Checkpoint`].
    head_len: u64,
    head_hash: String,
    /// Size at the last read, to notice shrinking and growth.
    last_size: u64,
    /// Modification time seen when the file was last read to its end: while size and
    /// time both stay put there is nothing to read, and an idle file costs one `fstat`.
    settled_at: Option<SystemTime>,
    file: File,
    /// Start of the current incomplete line: the checkpoint.
    offset: u64,
    /// Kept bytes of the current incomplete line (at most the line limit).
    line: Vec<u8>,
    /// Bytes of the current incomplete line scanned so far, kept or skipped.
    line_len: u64,
    /// Bytes read from the file and not yet scanned: `chunk[chunk_pos..]`.
    chunk: Vec<u8>,
    chunk_pos: usize,
    last_error: Option<String>,
}

impl TailedFile {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            path: self.path_str.to_string(),
            dev: self.dev,
            inode: self.inode,
            offset: self
                .joiner
                .as_ref()
                .and_then(Joiner::pending_offset)
                .unwrap_or(self.offset),
            head_len: self.head_len,
            head_hash: self.head_hash.clone(),
            retired: false,
        }
    }

    /// Checks that the file is still the one being read (not truncated, first bytes
    /// unchanged) and extends the fingerprint while the file is shorter than
    /// [`HEAD_BYTES`]. Returns false when it was truncated or rewritten.
    fn still_same(&mut self, size: u64) -> io::Result<bool> {
        if size < self.read_pos() {
            return Ok(false);
        }
        if size != self.last_size && self.head_len > 0 {
            match head_hash(&self.file, self.head_len)? {
                Some(h) if h == self.head_hash => {}
                _ => return Ok(false),
            }
        }
        if self.head_len < HEAD_BYTES && size > self.head_len {
            let len = size.min(HEAD_BYTES);
            if let Some(h) = head_hash(&self.file, len)? {
                self.head_len = len;
                self.head_hash = h;
            }
        }
        self.last_size = size;
        Ok(true)
    }

    /// The file position the next read starts at.
    fn read_pos(&self) -> u64 {
        self.offset + self.line_len + (self.chunk.len() - self.chunk_pos) as u64
    }

    fn restart_from_zero(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let size = self.file.metadata()?.len();
        self.head_len = size.min(HEAD_BYTES);
        self.head_hash = head_hash(&self.file, self.head_len)?.unwrap_or_default();
        self.last_size = size;
        self.settled_at = None;
        self.offset = 0;
        self.line.clear();
        self.line_len = 0;
        self.chunk.clear();
        self.chunk_pos = 0;
        Ok(())
    }

    /// Appends complete lines to `out` until it holds `max_lines` or the file is exhausted.
    fn read_lines(
        &mut self,
        max_lines: usize,
        max_line_bytes: usize,
        out: &mut Vec<Line>,
    ) -> io::Result<ReadEnd> {
        let metadata = self.file.metadata()?;
        let size = metadata.len();
        let modified = metadata.modified().ok();
        if modified.is_some()
            && modified == self.settled_at
            && size == self.last_size
            && size == self.read_pos()
        {
            return Ok(ReadEnd::Eof);
        }
        if !self.still_same(size)? {
            return Ok(ReadEnd::Truncated);
        }
        let handed_out = out.len();
        let end = self.read_available(max_lines, max_line_bytes, out)?;
        // A copytruncate between the check above and the reads would have handed us the
        // new content's bytes at the old offsets. Its head tells: then nothing read in
        // this call is kept, and the old content's rest is read from the rotated copy.
        if self.head_len > 0
            && head_hash(&self.file, self.head_len)?.as_ref() != Some(&self.head_hash)
        {
            out.truncate(handed_out);
            let earliest = self
                .joiner
                .as_mut()
                .and_then(|j| {
                    let pending = j.pending_offset();
                    j.reset();
                    pending
                })
                .unwrap_or(self.offset);
            self.offset = self.offset.min(earliest);
            self.line.clear();
            self.line_len = 0;
            self.chunk.clear();
            self.chunk_pos = 0;
            return Ok(ReadEnd::Truncated);
        }
        // Taken before reading: a write after it changes the time or the size.
        self.settled_at = if matches!(end, ReadEnd::Eof) {
            modified
        } else {
            None
        };
        Ok(end)
    }

    /// Reads complete lines until `out` holds `max_lines` or the file is exhausted.
    fn read_available(
        &mut self,
        max_lines: usize,
        max_line_bytes: usize,
        out: &mut Vec<Line>,
    ) -> io::Result<ReadEnd> {
        loop {
            while out.len() < max_lines && self.chunk_pos < self.chunk.len() {
                let rest = &self.chunk[self.chunk_pos..];
                let (segment_len, complete) = match rest.iter().position(|b| *b == b'\n') {
                    Some(i) => (i, true),
                    None => (rest.len(), false),
                };
                let room = max_line_bytes.saturating_sub(self.line.len());
                let keep = segment_len.min(room);
                self.line.extend_from_slice(&rest[..keep]);
                self.line_len += segment_len as u64;
                self.chunk_pos += segment_len;
                if complete {
                    self.chunk_pos += 1;
                    let line = self.finish_line(max_line_bytes);
                    match self.joiner.as_mut() {
                        Some(joiner) => joiner.push(line, max_line_bytes, out),
                        None => out.push(line),
                    }
                }
            }
            if out.len() >= max_lines {
                return Ok(ReadEnd::Limit);
            }
            self.chunk.clear();
            self.chunk_pos = 0;
            // Into spare capacity: no zeroing of a 64 KiB buffer per read.
            self.chunk.reserve_exact(READ_CHUNK_BYTES);
            let read = (&mut self.file)
                .take(READ_CHUNK_BYTES as u64)
                .read_to_end(&mut self.chunk);
            match read {
                Ok(0) => {
                    // At the end the buffer goes: fifty idle files do not hold 3 MiB.
                    self.chunk = Vec::new();
                    return Ok(ReadEnd::Eof);
                }
                Ok(_) => {}
                Err(e) if self.chunk.is_empty() => return Err(e),
                // Bytes came before the error: scan them; the error returns on the next read.
                Err(_) => {}
            }
        }
    }

    /// Turns the current line (its newline just scanned) into a [`Line`] and moves the
    /// checkpoint past it.
    fn finish_line(&mut self, max_line_bytes: usize) -> Line {
        let truncated = self.line_len > max_line_bytes as u64;
        let mut bytes = std::mem::take(&mut self.line);
        if truncated {
            // Do not let the cut itself split a character and look like invalid UTF-8.
            if let Err(e) = std::str::from_utf8(&bytes)
                && e.error_len().is_none()
            {
                bytes.truncate(e.valid_up_to());
            }
        }
        let (text, invalid_utf8) = match String::from_utf8(bytes) {
            Ok(text) => (text, false),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
        };
        let line = Line {
            source: self.source,
            dataset: Arc::clone(&self.dataset),
            labels: Arc::clone(&self.labels),
            path: Arc::clone(&self.path_str),
            offset: self.offset,
            text,
            invalid_utf8,
            truncated,
        };
        self.offset += self.line_len + 1;
        self.line_len = 0;
        line
    }
}

/// Wakes the agent when something changes in a directory that holds tailed files.
///
/// Watches, non-recursively (recursively for `**` patterns), the deepest directory of each
/// pattern that contains no glob character. Directories that do not exist yet are
/// watched once [`DirWatcher::refresh`] finds them.
pub struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    roots: Vec<(PathBuf, notify::RecursiveMode)>,
    watched: HashSet<PathBuf>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl DirWatcher {
    /// Calls `on_change(structural)` for every relevant notification; `structural` is true
    /// when files were created, removed or renamed (the patterns should be resolved again).
    pub fn new(
        patterns: &[String],
        on_change: impl Fn(bool) + Send + 'static,
    ) -> notify::Result<DirWatcher> {
        use notify::EventKind;
        use notify::event::ModifyKind;
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) => match event.kind {
                    // Our own opens and reads: ignoring them avoids waking ourselves up.
                    EventKind::Access(_) => {}
                    EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_)) => on_change(true),
                    _ => on_change(false),
                },
                Err(_) => on_change(true),
            }
        })?;
        let mut roots: Vec<(PathBuf, notify::RecursiveMode)> = Vec::new();
        for pattern in patterns {
            let root = watch_root(pattern);
            if !roots.iter().any(|(r, _)| *r == root.0) {
                roots.push(root);
            }
        }
        let mut watcher = DirWatcher {
            watcher,
            roots,
            watched: HashSet::new(),
        };
        watcher.refresh();
        Ok(watcher)
    }

    /// Starts watching the directories that exist now and were not watched yet.
    pub fn refresh(&mut self) {
        use notify::Watcher as _;
        for (dir, mode) in &self.roots {
            if self.watched.contains(dir) || !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            match self.watcher.watch(dir, *mode) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
    }
}

/// The directory to watch for a pattern: its deepest glob-free directory.
fn watch_root(pattern: &str) -> (PathBuf, notify::RecursiveMode) {
    let recursive = if pattern.contains("**") {
        notify::RecursiveMode::Recursive
    } else {
        notify::RecursiveMode::NonRecursive
    };
    let path = Path::new(pattern);
    let mut root = PathBuf::new();
    let mut had_glob = false;
    for component in path.components() {
        let text = component.as_os_str().to_string_lossy();
        if matches!(component, Component::Normal(_)) && text.contains(['*', '?', '[']) {
            had_glob = true;
            break;
        }
        root.push(component);
    }
    if !had_glob {
        // A plain file path: watch its directory.
        root.pop();
    }
    if root.as_os_str().is_empty() {
        root.push("/");
    }
    (root, recursive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(pattern: &Path) -> SourceConfig {
        SourceConfig {
            paths: vec![pattern.to_string_lossy().into_owned()],
            dataset: "test.ds".into(),
            start_at: StartAt::Beginning,
            ..SourceConfig::default()
        }
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(bytes).expect("write");
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn partial_line_is_held_until_its_newline() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"first\nsec");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        assert_eq!(texts(&t.poll(100)), vec!["first"]);
        assert_eq!(t.checkpoints()[0].offset, 6);
        append(&log, b"ond");
        assert!(t.poll(100).is_empty());
        assert_eq!(t.checkpoints()[0].offset, 6, "partial line not committed");
        append(&log, b"\nthi");
        let lines = t.poll(100);
        assert_eq!(texts(&lines), vec!["second"]);
        assert_eq!(lines[0].offset, 6);
        append(&log, b"rd\n");
        let lines = t.poll(100);
        assert_eq!(texts(&lines), vec!["third"]);
        assert_eq!(lines[0].offset, 13);
        assert_eq!(t.checkpoints()[0].offset, 19);
    }

    #[test]
    fn offsets_point_at_line_starts_and_limit_is_respected() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"a\n\nccc\ndd\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let first = t.poll(2);
        assert_eq!(texts(&first), vec!["a", ""]);
        assert_eq!(
            t.checkpoints()[0].offset,
            3,
            "checkpoint covers exactly what was handed out"
        );
        let rest = t.poll(10);
        assert_eq!(texts(&rest), vec!["ccc", "dd"]);
        let offsets: Vec<u64> = first.iter().chain(&rest).map(|l| l.offset).collect();
        assert_eq!(offsets, vec![0, 2, 3, 7]);
        assert!(first.iter().all(|l| &*l.dataset == "test.ds"));
        assert_eq!(&*first[0].path, log.to_string_lossy());
    }

    #[test]
    fn resume_from_checkpoint_neither_loses_nor_repeats() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        let all: Vec<String> = (0..5000).map(|i| format!("line number {i}")).collect();
        for line in &all[..3000] {
            append(&log, format!("{line}\n").as_bytes());
        }
        let mut got = Vec::new();
        let mut t = Tailer::new(&[source(&log)], vec![]);
        got.extend(t.poll(1234).into_iter().map(|l| l.text));
        let checkpoints = t.checkpoints();
        drop(t);
        for line in &all[3000..] {
            append(&log, format!("{line}\n").as_bytes());
        }
        let mut t = Tailer::new(&[source(&log)], checkpoints);
        loop {
            let lines = t.poll(700);
            if lines.is_empty() {
                break;
            }
            got.extend(lines.into_iter().map(|l| l.text));
        }
        assert_eq!(got, all);
    }

    #[test]
    fn new_file_matching_a_glob_is_picked_up_from_its_start() {
        let dir = tempfile::tempdir().expect("tmp");
        append(&dir.path().join("one.log"), b"1\n");
        append(&dir.path().join("skip.txt"), b"x\n");
        let mut src = source(&dir.path().join("*.log"));
        src.start_at = StartAt::End;
        let mut t = Tailer::new(&[src], vec![]);
        assert!(t.poll(10).is_empty(), "start_at=end skips existing content");
        append(&dir.path().join("one.log"), b"2\n");
        append(&dir.path().join("two.log"), b"a\nb\n");
        assert_eq!(texts(&t.poll(10)), vec!["2"]);
        t.rescan();
        let lines = t.poll(10);
        assert_eq!(
            texts(&lines),
            vec!["a", "b"],
            "a file appearing later is read from 0"
        );
        assert!(lines[0].path.ends_with("two.log"));
        assert_eq!(t.paths().len(), 2);
    }

    #[test]
    fn replaced_file_is_drained_then_read_from_zero() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"old 1\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        assert_eq!(texts(&t.poll(10)), vec!["old 1"]);
        let old_inode = t.checkpoints()[0].inode;
        append(&log, b"old 2\n");
        let fresh = dir.path().join("a.log.new");
        append(&fresh, b"new 1\nnew 2\n");
        std::fs::rename(&fresh, &log).expect("rename");
        t.rescan();
        assert_eq!(texts(&t.poll(10)), vec!["old 2", "new 1", "new 2"]);
        let cp = &t.checkpoints()[0];
        assert_ne!(cp.inode, old_inode);
        assert_eq!(cp.offset, 12);
    }

    #[test]
    fn checkpoint_with_another_inode_or_beyond_size_restarts_at_zero() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"x\ny\n");
        let real = Tailer::new(&[source(&log)], vec![]).checkpoints()[0].clone();
        let other_inode = Checkpoint {
            inode: real.inode + 1,
            offset: 2,
            ..real.clone()
        };
        let mut t = Tailer::new(&[source(&log)], vec![other_inode]);
        assert_eq!(texts(&t.poll(10)), vec!["x", "y"]);
        let too_far = Checkpoint {
            offset: 100,
            ..real.clone()
        };
        let mut t = Tailer::new(&[source(&log)], vec![too_far]);
        assert_eq!(texts(&t.poll(10)), vec!["x", "y"]);
        let good = Checkpoint { offset: 2, ..real };
        let mut t = Tailer::new(&[source(&log)], vec![good]);
        assert_eq!(texts(&t.poll(10)), vec!["y"]);
    }

    fn all_lines(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let lines = t.poll(1000);
            if lines.is_empty() {
                return out;
            }
            out.extend(lines.into_iter().map(|l| l.text));
        }
    }

    fn numbered(from: usize, to: usize) -> Vec<u8> {
        (from..to)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    fn expected(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn a_reused_inode_with_other_content_is_a_new_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"new first line\nsecond\n");
        let meta = std::fs::metadata(&log).expect("meta");
        // The checkpoint of an older file that had this very inode, with other content.
        let old = Checkpoint {
            path: log.display().to_string(),
            dev: meta.dev(),
            inode: meta.ino(),
            offset: 15,
            head_len: 9,
            head_hash: "not-the-hash-of-new-first".into(),
            retired: false,
        };
        let mut t = Tailer::new(&[source(&log)], vec![old]);
        assert_eq!(all_lines(&mut t), vec!["new first line", "second"]);
    }

    #[test]
    fn zero_byte_files_are_tailed_and_resumed() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("empty.log");
        std::fs::write(&log, b"").expect("create");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        assert!(t.poll(10).is_empty());
        let checkpoints = t.checkpoints();
        assert_eq!((checkpoints[0].offset, checkpoints[0].head_len), (0, 0));
        append(&log, b"first\n");
        assert_eq!(texts(&t.poll(10)), vec!["first"]);
        // Resuming from the empty file's checkpoint reads what was written since.
        let mut t2 = Tailer::new(&[source(&log)], checkpoints);
        assert_eq!(all_lines(&mut t2), vec!["first"]);
        // And from the later checkpoint, nothing again.
        let mut t3 = Tailer::new(&[source(&log)], t.checkpoints());
        assert!(all_lines(&mut t3).is_empty());
    }

    #[test]
    fn files_with_identical_first_lines_are_distinct() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, b"same header line\nonly in a\n");
        append(&b, b"same header line\nonly in b\n");
        let pattern = dir.path().join("*.log");
        let mut t = Tailer::new(&[source(&pattern)], vec![]);
        let mut got = all_lines(&mut t);
        got.sort();
        assert_eq!(
            got,
            vec![
                "only in a",
                "only in b",
                "same header line",
                "same header line"
            ]
        );
        append(&b, b"more b\n");
        let mut t2 = Tailer::new(&[source(&pattern)], t.checkpoints());
        assert_eq!(all_lines(&mut t2), vec!["more b"]);
    }

    #[test]
    fn a_stop_in_the_middle_of_a_rename_rotation_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(&log, &numbered(0, 10));
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let mut seen: Vec<String> = t.poll(3).into_iter().map(|l| l.text).collect();
        std::fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
        append(&log, &numbered(10, 15));
        t.rescan();
        seen.extend(t.poll(2).into_iter().map(|l| l.text));
        assert_eq!(seen, expected(0, 5), "the rotated file is drained first");
        // Stop here (checkpoints as committed with these lines), start again.
        let checkpoints = t.checkpoints();
        assert!(checkpoints.iter().any(|c| c.retired), "{checkpoints:?}");
        let mut t2 = Tailer::new(&[source(&log)], checkpoints);
        seen.extend(all_lines(&mut t2));
        assert_eq!(seen, expected(0, 15));
    }

    #[test]
    fn rotation_while_stopped_drains_the_rotated_file_from_its_checkpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(&log, &numbered(0, 4));
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let mut seen = all_lines(&mut t);
        let checkpoints = t.checkpoints();
        drop(t);
        append(&log, &numbered(4, 6));
        std::fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
        append(&log, &numbered(6, 8));
        let mut t2 = Tailer::new(&[source(&log)], checkpoints);
        seen.extend(all_lines(&mut t2));
        assert_eq!(seen, expected(0, 8));
        assert!(t2.take_losses().is_empty());
    }

    #[test]
    fn copytruncate_reads_the_unread_rest_from_the_copy() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(&log, &numbered(0, 10));
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let mut seen: Vec<String> = t.poll(4).into_iter().map(|l| l.text).collect();
        std::fs::copy(&log, dir.path().join("app.log.1")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        // The writer goes on, past the old read position, before the tailer looks again.
        append(&log, &numbered(10, 30));
        seen.extend(all_lines(&mut t));
        assert_eq!(seen, expected(0, 30));
        assert!(t.take_losses().is_empty());
    }

    #[test]
    fn copytruncate_without_a_copy_is_a_counted_loss() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(&log, &numbered(0, 10));
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let first = t.poll(4);
        let read_to = first
            .last()
            .map(|l| l.offset + l.text.len() as u64 + 1)
            .expect("lines");
        let size = std::fs::metadata(&log).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&log, b"after\n");
        assert_eq!(all_lines(&mut t), vec!["after"]);
        let losses = t.take_losses();
        assert_eq!(losses.len(), 1);
        assert_eq!(losses[0].reason, "truncated_before_read");
        assert_eq!(
            (losses[0].offset, losses[0].bytes),
            (read_to, Some(size - read_to))
        );
    }

    #[test]
    fn a_ten_mib_line_is_cut_flagged_and_the_next_line_is_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("big.log");
        let mut big = vec![b'x'; 10 << 20];
        big.push(b'\n');
        append(&log, &big);
        append(&log, b"next\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let lines = t.poll(10);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].truncated);
        assert_eq!(lines[0].text.len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].text, "next");
        assert_eq!(lines[1].offset, (10 << 20) + 1);
        assert_eq!(t.checkpoints()[0].offset, (10 << 20) + 6);
    }

    fn multiline_source(
        pattern: &Path,
        mode: MultilineMode,
        regex: &str,
        flush_timeout_ms: u64,
    ) -> SourceConfig {
        SourceConfig {
            multiline: Some(MultilineConfig {
                mode,
                pattern: regex.into(),
                flush_timeout_ms,
                max_lines: 4,
            }),
            ..source(pattern)
        }
    }

    #[test]
    fn multiline_start_pattern_joins_a_stack_trace_and_resumes_at_its_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(
            &log,
            b"2026-11-25 ERROR boom\n  at a()\n  at b()\n2026-11-25 INFO next\n  more\n",
        );
        let src = multiline_source(&log, MultilineMode::Start, r"^\d{4}-", 60_000);
        let mut t = Tailer::new(std::slice::from_ref(&src), vec![]);
        let lines = t.poll(10);
        assert_eq!(
            texts(&lines),
            vec!["2026-11-25 ERROR boom\n  at a()\n  at b()"]
        );
        assert_eq!(lines[0].offset, 0);
        // The second event waits for more lines: the checkpoint stays at its start.
        let next_start = "2026-11-25 ERROR boom\n  at a()\n  at b()\n".len() as u64;
        assert_eq!(t.checkpoints()[0].offset, next_start);
        // A restart from that checkpoint forms the same event, with the lines after it.
        append(&log, b"  and more\n2026-11-25 INFO last\n");
        let mut t2 = Tailer::new(&[src], t.checkpoints());
        let lines = t2.poll(10);
        assert_eq!(
            texts(&lines),
            vec!["2026-11-25 INFO next\n  more\n  and more"]
        );
        assert_eq!(lines[0].offset, next_start);
    }

    #[test]
    fn multiline_continue_pattern_flush_timeout_and_line_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("app.log");
        append(
            &log,
            b"first\n\tcont 1\nsecond\n\t1\n\t2\n\t3\n\t4\nthird\n",
        );
        let src = multiline_source(&log, MultilineMode::Continue, r"^\t", 0);
        let mut t = Tailer::new(&[src], vec![]);
        let lines = t.poll(10);
        // max_lines = 4 cuts `second` after three continuations; the flush timeout of 0
        // hands out the waiting `third` at once.
        assert_eq!(
            texts(&lines),
            vec!["first\n\tcont 1", "second\n\t1\n\t2\n\t3", "\t4", "third"]
        );
        assert_eq!(
            t.checkpoints()[0].offset,
            std::fs::metadata(&log).expect("m").len()
        );
    }

    #[test]
    fn truncated_in_place_restarts_at_zero() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"aaaa\nbbbb\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        assert_eq!(t.poll(10).len(), 2);
        std::fs::write(&log, b"c\n").expect("truncate");
        assert_eq!(texts(&t.poll(10)), vec!["c"]);
        assert_eq!(t.checkpoints()[0].offset, 2);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"ok\nbad \xff\xfe end\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let lines = t.poll(10);
        assert!(!lines[0].invalid_utf8);
        assert!(lines[1].invalid_utf8);
        assert_eq!(lines[1].text, "bad \u{fffd}\u{fffd} end");
        let event = lines[1].clone().into_event(&EventContext {
            host_name: "h".into(),
            agent_id: Uuid::now_v7(),
        });
        assert_eq!(event.as_map()["tags"], serde_json::json!(["invalid_utf8"]));
    }

    #[test]
    fn overlong_line_is_cut_flagged_and_skipped_to_its_newline() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        // 25 'é' (2 bytes each) = 50 bytes; the limit of 15 falls inside a character.
        let long = "é".repeat(25);
        append(&log, format!("short\n{long}").as_bytes());
        let mut t = Tailer::new(&[source(&log)], vec![]).with_max_line_bytes(15);
        assert_eq!(texts(&t.poll(10)), vec!["short"]);
        append(&log, b"\xc3\xa9\xc3\xa9\nnext\n");
        let lines = t.poll(10);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].truncated);
        assert!(!lines[0].invalid_utf8, "cut on a character boundary");
        assert_eq!(lines[0].text, "é".repeat(7));
        assert_eq!(lines[0].offset, 6);
        assert_eq!(lines[1].text, "next");
        assert!(!lines[1].truncated);
        assert_eq!(lines[1].offset, 6 + 54 + 1);
        assert_eq!(t.checkpoints()[0].offset, 6 + 54 + 1 + 5);
    }

    #[test]
    fn overlong_line_at_the_real_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        append(&log, &long);
        append(&log, b"\ntail\n");
        let mut t = Tailer::new(&[source(&log)], vec![]);
        let lines = t.poll(10);
        assert_eq!(lines[0].text.len(), MAX_LINE_BYTES);
        assert!(lines[0].truncated);
        assert_eq!(lines[1].text, "tail");
        assert_eq!(lines[1].offset, MAX_LINE_BYTES as u64 + 11);
    }

    #[test]
    fn event_carries_the_ecs_fields() {
        let agent_id = Uuid::now_v7();
        let line = Line {
            source: 0,
            dataset: Arc::from("system.auth"),
            labels: Arc::new(BTreeMap::from([("env".to_string(), "prod".to_string())])),
            path: Arc::from("/var/log/auth.log"),
            offset: 42,
            text: "sshd[1]: hello".into(),
            invalid_utf8: false,
            truncated: true,
        };
        let e = line.into_event(&EventContext {
            host_name: "web-1".into(),
            agent_id,
        });
        e.validate().expect("valid");
        assert_eq!(e.message(), Some("sshd[1]: hello"));
        assert_eq!(e.original(), Some("sshd[1]: hello"));
        assert_eq!(e.dataset(), Some("system.auth"));
        assert_eq!(e.get_str("log.file.path"), Some("/var/log/auth.log"));
        assert_eq!(e.get("log.offset"), Some(&serde_json::json!(42)));
        assert_eq!(e.host_name(), Some("web-1"));
        assert_eq!(e.get_str("host.hostname"), Some("web-1"));
        assert_eq!(e.agent_id(), Some(agent_id.to_string().as_str()));
        assert_eq!(e.get_str("agent.type"), Some("yagura-agent"));
        assert_eq!(e.get_str("agent.version"), Some(crate::VERSION));
        assert_eq!(e.as_map()["tags"], serde_json::json!(["truncated"]));
        assert_eq!(e.get_str("labels.env"), Some("prod"));
    }

    #[test]
    fn excluded_files_are_not_tailed() {
        let dir = tempfile::tempdir().expect("tmp");
        append(&dir.path().join("app.log"), b"keep\n");
        append(&dir.path().join("app.debug.log"), b"skip\n");
        let mut src = source(&dir.path().join("*.log"));
        src.exclude = vec![dir.path().join("*.debug.log").display().to_string()];
        let mut t = Tailer::new(&[src], vec![]);
        assert_eq!(texts(&t.poll(10)), vec!["keep"]);
    }

    #[test]
    fn watch_roots() {
        use notify::RecursiveMode::*;
        assert_eq!(
            watch_root("/var/log/auth.log"),
            (PathBuf::from("/var/log"), NonRecursive)
        );
        assert_eq!(
            watch_root("/tmp/x/*.log"),
            (PathBuf::from("/tmp/x"), NonRecursive)
        );
        assert_eq!(
            watch_root("/a/b*/c.log"),
            (PathBuf::from("/a"), NonRecursive)
        );
        assert_eq!(watch_root("/a/**/c.log"), (PathBuf::from("/a"), Recursive));
        assert_eq!(watch_root("/x.log"), (PathBuf::from("/"), NonRecursive));
    }

    #[test]
    fn watcher_wakes_on_append() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("a.log");
        append(&log, b"x\n");
        let (tx, rx) = std::sync::mpsc::channel();
        let _w = DirWatcher::new(&[log.to_string_lossy().into_owned()], move |s| {
            let _ = tx.send(s);
        })
        .expect("watcher");
        append(&log, b"y\n");
        let woke = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(woke.is_ok(), "no notification within 5 s");
    }
}
