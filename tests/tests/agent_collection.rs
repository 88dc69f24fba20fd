//! Acceptance of agent log collection (issue 3), end to end with the real binaries:
//! rotation storms, a collector outage, SIGKILLs of the agent and a full spool under
//! `drop_oldest`. Every check is exact, line by line: after the run the collector is
//! stopped gracefully (it commits its index on the way out) and its index is read
//! in-process, because the search API returns at most 50,000 hits per request.
//!
//! Set `YAGURA_E2E_KEEP=1` to keep the working directories (logs, agent and collector
//! state) after a run, and `YAGURA_E2E_SEED=<n>` to replay the SIGKILL schedule of a run.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use yagura_collector::index::{EventIndex, SearchRequest};
use yagura_e2e::{Agent, Collector, append_lines};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A numbered line of fixed width (for a given tag), so a byte count is a line count.
fn numbered(tag: &str, i: usize) -> String {
    format!(
        "2026-11-25T08:00:00.000000+00:00 e2e-host {tag}[42]: line {i:06} of the {tag} run, fixed-width payload"
    )
}

/// Bytes of one line of `tag`, newline included.
fn line_bytes(tag: &str) -> u64 {
    numbered(tag, 0).len() as u64 + 1
}

/// A temporary working directory, kept when `YAGURA_E2E_KEEP` is set.
struct Workdir {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

fn workdir(name: &str) -> anyhow::Result<Workdir> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("yagura-e2e-{name}-"))
        .tempdir()?;
    if std::env::var_os("YAGURA_E2E_KEEP").is_some() {
        let path = tmp.keep();
        eprintln!("[{name}] keeping the working directory {}", path.display());
        Ok(Workdir { _tmp: None, path })
    } else {
        let path = tmp.path().to_path_buf();
        Ok(Workdir {
            _tmp: Some(tmp),
            path,
        })
    }
}

/// Prints a progress line with the time since the test started.
fn progress(started: Instant, test: &str, what: &str) {
    eprintln!("[{test} +{:6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// `[[sources]]` for one file with its own dataset.
fn source_toml(path: &Path, dataset: &str) -> String {
    format!(
        "[[sources]]\npaths = [\"{}\"]\ndataset = \"{dataset}\"\n",
        path.display()
    )
}

/// The open file descriptors of process `pid` whose target lies in `dir` (Linux `/proc`),
/// as (fd number, target) with the kernel's ` (deleted)` suffix kept.
fn open_files_in(pid: u32, dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let prefix = format!("{}/", dir.display());
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.display().to_string();
            if target.starts_with(&prefix) {
                out.push((entry.file_name().to_string_lossy().into_owned(), target));
            }
        }
    }
    out
}

/// The read position of process `pid` in `path`, when it has the file open.
fn read_position(pid: u32, path: &Path) -> Option<u64> {
    let wanted = path.display().to_string();
    open_files_in(pid, path.parent()?)
        .into_iter()
        .filter(|(_, target)| *target == wanted)
        .find_map(|(fd, _)| {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|p| p.trim().parse().ok())
        })
}

/// Waits until the agent process has `path` open (it tails it).
async fn wait_until_open(agent: &Agent, path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let pid = agent
        .process
        .as_ref()
        .map(|p| p.pid())
        .ok_or_else(|| anyhow::anyhow!("agent not running"))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if read_position(pid, path).is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the agent did not open {} in {timeout:?}", path.display())
}

/// A fingerprint of the data path's on-disk state: sizes and count of the files under
/// `dirs` (collector archive and index, agent spool). It changes while anything is still
/// being read, spooled, shipped, archived or indexed.
fn activity(dirs: &[PathBuf]) -> u64 {
    fn walk(dir: &Path, depth: usize, sum: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() && depth > 0 => walk(&entry.path(), depth - 1, sum),
                Ok(meta) => *sum = sum.wrapping_add(meta.len()).wrapping_add(1 << 40),
                Err(_) => {}
            }
        }
    }
    let mut sum = 0;
    for dir in dirs {
        walk(dir, 2, &mut sum);
    }
    sum
}

/// The directories whose [`activity`] shows that the pipeline is still moving.
fn pipeline_dirs(collector: &Collector, agent: &Agent) -> Vec<PathBuf> {
    vec![
        collector.dir.join("data").join("archive"),
        collector.dir.join("data").join("index"),
        agent.dir.join("state").join("spool"),
    ]
}

/// Polls `observe` until it returns `target`, or neither it nor the [`activity`] of
/// `dirs` changed for `quiet`, or `timeout` passes; returns the last value. Reaching the
/// target is followed by a short settling pause (a late duplicate would show then). The
/// exact checks come after this, so it never fails by itself: a stall is diagnosed by
/// what is missing.
async fn settle(
    started: Instant,
    test: &str,
    target: u64,
    dirs: &[PathBuf],
    timeout: Duration,
    mut observe: impl AsyncFnMut() -> anyhow::Result<u64>,
) -> u64 {
    let quiet = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    let mut last: Option<u64> = None;
    let mut last_activity = activity(dirs);
    let mut changed_at = Instant::now();
    let mut reported_at = Instant::now();
    loop {
        match observe().await {
            Ok(value) => {
                if last != Some(value) {
                    last = Some(value);
                    changed_at = Instant::now();
                }
                if value == target {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    progress(started, test, &format!("reached {target}"));
                    return observe().await.unwrap_or(value);
                }
            }
            Err(e) => progress(started, test, &format!("observing failed: {e:#}")),
        }
        let now_activity = activity(dirs);
        if now_activity != last_activity {
            last_activity = now_activity;
            changed_at = Instant::now();
        }
        if changed_at.elapsed() >= quiet {
            progress(
                started,
                test,
                &format!("stalled at {last:?} of {target}: nothing moved for {quiet:?}"),
            );
            return last.unwrap_or(0);
        }
        if Instant::now() >= deadline {
            progress(started, test, &format!("timed out at {last:?} of {target}"));
            return last.unwrap_or(0);
        }
        if reported_at.elapsed() >= Duration::from_secs(10) {
            progress(started, test, &format!("at {last:?} of {target}"));
            reported_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The tests of this file run one at a time: each starts a collector, an agent and a
/// writer, and on two cores their pacing and time bounds only mean something alone.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The search total of `query` through the API.
async fn api_total(collector: &Collector, query: &str) -> anyhow::Result<u64> {
    let body = collector.search(query, 1).await?;
    body["total"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no total in {body}"))
}

/// Every indexed event matching `query`, read from the (stopped) collector's index
/// in-process.
fn indexed_events(collector: &Collector, query: &str) -> anyhow::Result<Vec<Value>> {
    let index = EventIndex::open_read_only(&collector.dir.join("data").join("index"))?;
    let result = index.search(&SearchRequest {
        limit: 1_000_000,
        oldest_first: true,
        ..SearchRequest::new(query)
    })?;
    anyhow::ensure!(
        result.hits.len() == result.total,
        "{query}: {} hits of {} total",
        result.hits.len(),
        result.total
    );
    Ok(result.hits.into_iter().map(|h| h.event).collect())
}

/// Stops the agent (SIGKILL: what it still holds is irrelevant now) and the collector
/// (SIGTERM, waiting for its final index commit), then reads the index.
fn stop_and_read(
    agent: &mut Agent,
    collector: &mut Collector,
    queries: &[&str],
) -> anyhow::Result<Vec<Vec<Value>>> {
    agent.kill_hard();
    let status = collector.process.stop("TERM", Duration::from_secs(120))?;
    anyhow::ensure!(status.success(), "collector exited with {status}");
    queries
        .iter()
        .map(|q| indexed_events(collector, q))
        .collect()
}

/// How the indexed lines compare with the lines written.
#[derive(Debug, Default)]
struct Tally {
    written: usize,
    indexed: usize,
    /// Line numbers written and not indexed, ascending.
    missing: Vec<usize>,
    /// (line number, copies) for lines indexed more than once.
    duplicated: Vec<(usize, usize)>,
    /// Indexed texts that were never written.
    unexpected: Vec<String>,
}

impl Tally {
    /// Compares the whole set of `event.original` of `events` with lines `0..written`.
    fn of(tag: &str, written: usize, events: &[Value]) -> Tally {
        let expected: HashMap<String, usize> =
            (0..written).map(|i| (numbered(tag, i), i)).collect();
        let mut seen = vec![0usize; written];
        let mut unexpected = Vec::new();
        for event in events {
            let original = event["event"]["original"].as_str().unwrap_or_default();
            match expected.get(original) {
                Some(&i) => seen[i] += 1,
                None => unexpected.push(original.to_string()),
            }
        }
        Tally {
            written,
            indexed: events.len(),
            missing: (0..written).filter(|&i| seen[i] == 0).collect(),
            duplicated: (0..written)
                .filter(|&i| seen[i] > 1)
                .map(|i| (i, seen[i]))
                .collect(),
            unexpected,
        }
    }

    fn summary(&self) -> String {
        let dups: Vec<String> = self
            .duplicated
            .iter()
            .take(10)
            .map(|(i, n)| format!("{i}×{n}"))
            .collect();
        format!(
            "written {}, indexed {}, missing {} (line ranges {}), duplicated {} (first: {}), unexpected {} (first: {:?})",
            self.written,
            self.indexed,
            self.missing.len(),
            ranges(&self.missing),
            self.duplicated.len(),
            dups.join(", "),
            self.unexpected.len(),
            self.unexpected.iter().take(3).collect::<Vec<_>>(),
        )
    }
}

/// `[3, 4, 5, 9]` → `"3..=5, 9"` (at most 20 ranges, then a count).
fn ranges(numbers: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    let mut count = 0;
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        count += 1;
        if out.len() < 20 {
            out.push(if start == end {
                start.to_string()
            } else {
                format!("{start}..={end}")
            });
        }
    }
    if count > out.len() {
        out.push(format!("… {} ranges in all", count));
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// A loss event's fields that the checks use.
#[derive(Debug)]
struct LossEvent {
    path: Option<String>,
    reason: String,
    events: Option<u64>,
    bytes: Option<u64>,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    #[expect(dead_code, reason = "shown in failure messages through Debug")]
    message: String,
}

impl LossEvent {
    fn of(event: &Value) -> LossEvent {
        let loss = &event["yagura"]["loss"];
        LossEvent {
            path: event["log"]["file"]["path"].as_str().map(str::to_string),
            reason: loss["reason"].as_str().unwrap_or_default().to_string(),
            events: loss["events"].as_u64(),
            bytes: loss["bytes"].as_u64(),
            first_offset: loss["first_offset"].as_u64(),
            last_offset: loss["last_offset"].as_u64(),
            message: event["message"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// A tiny seeded PRNG (xorshift64*), so a failing SIGKILL schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `range` (milliseconds, say).
    fn between(&mut self, range: Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start).max(1)
    }
}

/// Writes lines `range` of `tag` to `path` in chunks of `chunk` lines, one chunk every
/// `every`, counting what is written in `written`.
fn paced_writer(
    path: PathBuf,
    tag: &'static str,
    range: Range<usize>,
    chunk: usize,
    every: Duration,
    written: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let mut next = range.start;
        let mut due = Instant::now();
        while next < range.end {
            let end = (next + chunk).min(range.end);
            append_lines(&path, next..end, |i| numbered(tag, i))?;
            written.store(end, Ordering::SeqCst);
            next = end;
            due += every;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Ok(())
    })
}

fn join(handle: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
}

// ---------------------------------------------------------------------------------------
// 1. Rotation storm
// ---------------------------------------------------------------------------------------

const STORM_TAG: &str = "storm";
const STORM_LINES: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    /// `app.log` → `app.log.N`, then a new, empty `app.log` (logrotate `create`).
    Rename,
    /// Copy `app.log` to `app.log.cN`, then truncate `app.log` in place.
    CopyTruncate,
    /// Delete `app.log`, then create a new, empty one.
    DeleteRecreate,
}

/// One generation of `app.log`: the lines written to it, how long it is written to, and
/// how it ends (`None`: the last one, still live at the end).
#[derive(Debug, Clone)]
struct Generation {
    lines: Range<usize>,
    lifetime: Duration,
    ends_by: Option<Rotation>,
}

/// 100 rotations of each kind, then a last live generation; the lines are spread evenly.
fn storm_plan() -> Vec<Generation> {
    let mut kinds = Vec::new();
    // Every generation lives 300 ms, more than the agent's 250 ms poll: the agent must
    // see each one with content at least once. A generation renamed away to a name no
    // pattern matches, or truncated and refilled twice, before the agent ever read from it
    // cannot be told from growth by any polling tailer (a known limit, in the docs); at
    // 300 ms the storm still rotates thousands of times faster than logrotate does.
    let lifetime = Duration::from_millis(300);
    for rotation in [
        Rotation::Rename,
        Rotation::CopyTruncate,
        Rotation::DeleteRecreate,
    ] {
        kinds.extend(std::iter::repeat_n((Some(rotation), lifetime), 100));
    }
    kinds.push((None, Duration::from_millis(300)));
    let n = kinds.len();
    kinds
        .into_iter()
        .enumerate()
        .map(|(g, (ends_by, lifetime))| Generation {
            lines: g * STORM_LINES / n..(g + 1) * STORM_LINES / n,
            lifetime,
            ends_by,
        })
        .collect()
}

/// The writer: each generation's lines in chunks over its lifetime, then its rotation.
///
/// Writes and rotations are serialised (they run on this one thread) because a
/// copytruncate racing a write loses that write for any reader (logrotate documents the
/// window between copy and truncate); the agent's guarantee is about lines written before
/// the truncation.
///
/// Returns, per generation ended by rename or delete, whether the agent (`agent_pid`) had
/// that generation's `app.log` open just before it left its path: a diagnosis for lines
/// missing from the index (a generation the agent never opened was never read).
fn storm_writer(log: &Path, plan: &[Generation], agent_pid: u32) -> anyhow::Result<Vec<bool>> {
    let dir = log.parent().ok_or_else(|| anyhow::anyhow!("no parent"))?;
    let live = log.display().to_string();
    let mut opened = Vec::with_capacity(plan.len());
    for (g, generation) in plan.iter().enumerate() {
        let chunks = (generation.lifetime.as_millis() / 20).max(1) as usize;
        let n = generation.lines.len();
        let pause = generation.lifetime / chunks as u32;
        for c in 0..chunks {
            let from = generation.lines.start + n * c / chunks;
            let to = generation.lines.start + n * (c + 1) / chunks;
            append_lines(log, from..to, |i| numbered(STORM_TAG, i))?;
            std::thread::sleep(pause);
        }
        // Earlier generations' handles point at their rotated names or are "(deleted)":
        // a handle on `app.log` itself is one on this generation.
        opened.push(
            open_files_in(agent_pid, dir)
                .iter()
                .any(|(_, target)| *target == live),
        );
        match generation.ends_by {
            Some(Rotation::Rename) => {
                std::fs::rename(log, dir.join(format!("app.log.{g}")))?;
                std::fs::File::create(log)?;
            }
            Some(Rotation::CopyTruncate) => {
                std::fs::copy(log, dir.join(format!("app.log.c{g}")))?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(log)?
                    .set_len(0)?;
            }
            Some(Rotation::DeleteRecreate) => {
                std::fs::remove_file(log)?;
                std::fs::File::create(log)?;
            }
            None => {}
        }
    }
    Ok(opened)
}

/// 200,000 numbered lines written while `app.log` is rotated 100 times by rename+create,
/// then 100 times by copytruncate, then 100 times by delete+recreate; the agent watches
/// only `app.log` (the rotated names do not match). Every line is indexed exactly once,
/// except lines a copytruncate took away before they were read, which `yagura.agent.loss`
/// events must count exactly. Afterwards the agent holds no handle on a rotated or
/// deleted file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_storm_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const TEST: &str = "storm";
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let work = workdir(TEST)?;
    let mut collector = Collector::start(&work.path.join("collector"), "")?;
    let log_dir = work.path.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join("app.log");
    std::fs::File::create(&log)?;
    let mut agent = Agent::enroll(
        &work.path.join("agent"),
        &collector,
        "e2e-host",
        &source_toml(&log, "e2e.storm"),
    )?;
    agent.start()?;
    // A generation renamed away before the agent ever opened `app.log` could not be
    // found by any tailer: start the storm once the agent tails the file.
    wait_until_open(&agent, &log, Duration::from_secs(60)).await?;
    progress(started, TEST, "agent tails app.log; storm starts");

    let plan = storm_plan();
    let pid = agent.process.as_ref().map(|p| p.pid()).unwrap_or(0);
    let writer = std::thread::spawn({
        let log = log.clone();
        let plan = plan.clone();
        move || storm_writer(&log, &plan, pid)
    });
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let opened = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    let never_opened: Vec<usize> = plan
        .iter()
        .enumerate()
        .filter(|(g, generation)| {
            matches!(
                generation.ends_by,
                Some(Rotation::Rename | Rotation::DeleteRecreate)
            ) && !opened[*g]
        })
        .map(|(g, _)| g)
        .collect();
    progress(
        started,
        TEST,
        &format!(
            "storm written (300 rotations); generations the agent never opened before they left app.log: {never_opened:?}"
        ),
    );

    let query = "event.dataset:e2e.storm";
    settle(
        started,
        TEST,
        STORM_LINES as u64,
        &pipeline_dirs(&collector, &agent),
        Duration::from_secs(150),
        async || api_total(&collector, query).await,
    )
    .await;

    // Handles of rotated and deleted files are released once drained.
    let open = open_files_in(pid, &log_dir);

    let read = stop_and_read(
        &mut agent,
        &mut collector,
        &[query, "event.dataset:yagura.agent.loss"],
    )?;
    let [lines, losses] = <[Vec<Value>; 2]>::try_from(read)
        .map_err(|_| anyhow::anyhow!("two result sets expected"))?;
    let tally = Tally::of(STORM_TAG, STORM_LINES, &lines);
    let losses: Vec<LossEvent> = losses.iter().map(LossEvent::of).collect();
    progress(started, TEST, &tally.summary());
    for loss in &losses {
        progress(started, TEST, &format!("loss event: {loss:?}"));
    }

    // Which generation (and so which rotation kind) each missing line was written in.
    let mut missing_by_generation: Vec<String> = Vec::new();
    let mut missing_outside_copytruncate = 0;
    for (g, generation) in plan.iter().enumerate() {
        let missing = tally
            .missing
            .iter()
            .filter(|i| generation.lines.contains(i))
            .count();
        if missing > 0 {
            let unseen = if never_opened.contains(&g) {
                " (never opened by the agent while at app.log)"
            } else {
                ""
            };
            missing_by_generation.push(format!(
                "generation {g} (lines {:?}, ended by {:?}): {missing} missing{unseen}",
                generation.lines, generation.ends_by
            ));
            if generation.ends_by != Some(Rotation::CopyTruncate) {
                missing_outside_copytruncate += missing;
            }
        }
    }
    let detail = format!(
        "{}\nmissing per generation:\n  {}\nloss events: {losses:#?}",
        tally.summary(),
        missing_by_generation.join("\n  ")
    );
    assert!(tally.duplicated.is_empty(), "lines indexed twice: {detail}");
    assert!(tally.unexpected.is_empty(), "unexpected lines: {detail}");
    assert_eq!(
        missing_outside_copytruncate, 0,
        "lines lost in rename or delete+recreate rotations: {detail}"
    );
    let other_losses: Vec<&LossEvent> = losses
        .iter()
        .filter(|l| l.reason != "truncated_before_read")
        .collect();
    assert!(
        other_losses.is_empty(),
        "loss events other than truncated_before_read: {detail}"
    );
    let lost_bytes: u64 = losses.iter().filter_map(|l| l.bytes).sum();
    let line = line_bytes(STORM_TAG);
    assert_eq!(
        lost_bytes % line,
        0,
        "lost bytes are not whole lines of {line} bytes: {detail}"
    );
    assert_eq!(
        tally.missing.len() as u64,
        lost_bytes / line,
        "loss events must count exactly the lines a copytruncate took before they were read: {detail}"
    );
    assert!(
        open.iter()
            .all(|(_, target)| *target == log.display().to_string()),
        "the agent still holds rotated or deleted files after draining them: {open:?}"
    );
    progress(started, TEST, "passed");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Collector outage
// ---------------------------------------------------------------------------------------

/// The collector is killed (SIGKILL) for 60 s while 100,000 lines are written, then
/// started again on the same address: every line arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_of_sixty_seconds_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const TEST: &str = "outage";
    const TAG: &str = "outage";
    const WARMUP: usize = 500;
    const DURING: usize = 100_000;
    let total = WARMUP + DURING;
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let work = workdir(TEST)?;
    let mut collector = Collector::start(&work.path.join("collector"), "")?;
    let log_dir = work.path.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join("app.log");
    let mut agent = Agent::enroll(
        &work.path.join("agent"),
        &collector,
        "e2e-host",
        &source_toml(&log, "e2e.outage"),
    )?;
    agent.start()?;
    let query = "event.dataset:e2e.outage";

    // The path works before the outage.
    append_lines(&log, 0..WARMUP, |i| numbered(TAG, i))?;
    collector
        .wait_for_total(query, WARMUP as u64, Duration::from_secs(60))
        .await?;
    progress(started, TEST, "warm-up indexed; killing the collector");

    collector.process.kill_hard();
    let outage = Instant::now();
    // 100,000 lines over the 60 s: 250 every 150 ms.
    let writer = paced_writer(
        log.clone(),
        TAG,
        WARMUP..total,
        250,
        Duration::from_millis(150),
        Arc::new(AtomicUsize::new(0)),
    );
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    join(writer)?;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;
    progress(
        started,
        TEST,
        &format!(
            "{DURING} lines written during an outage of {:.1}s; restarting the collector",
            outage.elapsed().as_secs_f64()
        ),
    );
    collector.restart()?;

    settle(
        started,
        TEST,
        total as u64,
        &pipeline_dirs(&collector, &agent),
        Duration::from_secs(150),
        async || api_total(&collector, query).await,
    )
    .await;
    let read = stop_and_read(
        &mut agent,
        &mut collector,
        &[query, "event.dataset:yagura.agent.loss"],
    )?;
    let tally = Tally::of(TAG, total, &read[0]);
    progress(started, TEST, &tally.summary());
    let losses: Vec<LossEvent> = read[1].iter().map(LossEvent::of).collect();
    assert!(
        tally.missing.is_empty() && tally.duplicated.is_empty() && tally.unexpected.is_empty(),
        "every line exactly once: {}; loss events: {losses:#?}",
        tally.summary()
    );
    assert!(losses.is_empty(), "no loss expected: {losses:#?}");
    progress(started, TEST, "passed");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILLs of the agent
// ---------------------------------------------------------------------------------------

/// The seed of the SIGKILL schedule: `YAGURA_E2E_SEED`, or the clock.
fn seed() -> u64 {
    std::env::var("YAGURA_E2E_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// During a 200,000-line run the agent is killed with SIGKILL 20 times at random moments
/// (seeded; the seed is printed, `YAGURA_E2E_SEED` replays it) and started again after a
/// random pause: no line is lost, none is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agent_sigkills_lose_and_repeat_nothing() -> anyhow::Result<()> {
    const TEST: &str = "sigkill";
    const TAG: &str = "sigkill";
    const LINES: usize = 200_000;
    const KILLS: usize = 20;
    let seed = seed();
    eprintln!("[{TEST}] seed {seed} (replay with YAGURA_E2E_SEED={seed})");
    let mut rng = Rng::new(seed);
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let work = workdir(TEST)?;
    let mut collector = Collector::start(&work.path.join("collector"), "")?;
    let log_dir = work.path.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join("app.log");
    let mut agent = Agent::enroll(
        &work.path.join("agent"),
        &collector,
        "e2e-host",
        &source_toml(&log, "e2e.sigkill"),
    )?;
    agent.start()?;

    // 200,000 lines in about 20 s: 250 every 25 ms.
    let written = Arc::new(AtomicUsize::new(0));
    let writer = paced_writer(
        log.clone(),
        TAG,
        0..LINES,
        250,
        Duration::from_millis(25),
        Arc::clone(&written),
    );
    // The kills are spread over the writing (about 20 s): 0.3–1.5 s apart, each followed
    // by a 0–300 ms pause before the restart.
    let mut schedule = Vec::new();
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(300..1500))).await;
        let at = started.elapsed();
        let lines = written.load(Ordering::SeqCst);
        agent.kill_hard();
        let pause = rng.between(0..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        agent.start()?;
        schedule.push(format!(
            "kill {k} at {:.2}s ({lines} lines written), restart after {pause} ms",
            at.as_secs_f64()
        ));
    }
    for line in &schedule {
        eprintln!("[{TEST}] {line}");
    }
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    join(writer)?;
    progress(started, TEST, "all lines written, 20 kills done");

    let query = "event.dataset:e2e.sigkill";
    settle(
        started,
        TEST,
        LINES as u64,
        &pipeline_dirs(&collector, &agent),
        Duration::from_secs(150),
        async || api_total(&collector, query).await,
    )
    .await;
    let read = stop_and_read(
        &mut agent,
        &mut collector,
        &[query, "event.dataset:yagura.agent.loss"],
    )?;
    let tally = Tally::of(TAG, LINES, &read[0]);
    progress(started, TEST, &tally.summary());
    let losses: Vec<LossEvent> = read[1].iter().map(LossEvent::of).collect();
    assert!(
        tally.missing.is_empty() && tally.duplicated.is_empty() && tally.unexpected.is_empty(),
        "every line exactly once through {KILLS} SIGKILLs (seed {seed}): {}\nschedule:\n{}\nloss events: {losses:#?}",
        tally.summary(),
        schedule.join("\n")
    );
    assert!(losses.is_empty(), "no loss expected: {losses:#?}");
    progress(started, TEST, "passed");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Full spool with drop_oldest
// ---------------------------------------------------------------------------------------

/// With a 64 KiB spool under `when_full = "drop_oldest"` and the collector down while
/// 50,000 lines are written, batches are dropped; once the collector is back, the
/// `yagura.loss.events` of the loss events for the file add up to exactly the number of
/// lines missing from the index, every missing line lies in a loss event's offset range,
/// and no line is indexed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_with_drop_oldest_counts_every_dropped_line() -> anyhow::Result<()> {
    const TEST: &str = "drop";
    const TAG: &str = "drop";
    const LINES: usize = 50_000;
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let work = workdir(TEST)?;
    let mut collector = Collector::start(&work.path.join("collector"), "")?;
    let log_dir = work.path.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join("app.log");
    std::fs::File::create(&log)?;
    let path = log.display().to_string();
    let mut agent = Agent::enroll(
        &work.path.join("agent"),
        &collector,
        "e2e-host",
        &format!(
            "[spool]\nmax_bytes = 65536\nwhen_full = \"drop_oldest\"\n{}",
            source_toml(&log, "e2e.drop")
        ),
    )?;
    let status = collector.process.stop("TERM", Duration::from_secs(60))?;
    anyhow::ensure!(status.success(), "collector exited with {status}");
    agent.start()?;
    wait_until_open(&agent, &log, Duration::from_secs(60)).await?;
    progress(started, TEST, "collector down, agent tails app.log");

    // 50,000 lines in about 10 s: 500 every 100 ms.
    let writer = paced_writer(
        log.clone(),
        TAG,
        0..LINES,
        500,
        Duration::from_millis(100),
        Arc::new(AtomicUsize::new(0)),
    );
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    join(writer)?;
    // Let the agent read the whole file while the collector is still down (drop_oldest
    // never stops reading), then give it a moment to seal the last batch.
    let size = std::fs::metadata(&log)?.len();
    let pid = agent.process.as_ref().map(|p| p.pid()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_position(pid, &log) != Some(size) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(
        read_position(pid, &log) == Some(size),
        "the agent did not read app.log to its end ({size} bytes) while the collector was down: at {:?}",
        read_position(pid, &log)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress(
        started,
        TEST,
        "all lines read by the agent; collector up again",
    );
    collector.restart()?;

    let query = "event.dataset:e2e.drop";
    let loss_query = "event.dataset:yagura.agent.loss";
    settle(
        started,
        TEST,
        LINES as u64,
        &pipeline_dirs(&collector, &agent),
        Duration::from_secs(150),
        async || {
            let indexed = api_total(&collector, query).await?;
            let losses = collector.search(loss_query, 10_000).await?;
            let lost: u64 = losses["hits"]
                .as_array()
                .map(|hits| {
                    hits.iter()
                        .map(|h| LossEvent::of(&h["event"]))
                        .filter(|l| l.path.as_deref() == Some(path.as_str()))
                        .filter_map(|l| l.events)
                        .sum()
                })
                .unwrap_or(0);
            Ok(indexed + lost)
        },
    )
    .await;
    let read = stop_and_read(&mut agent, &mut collector, &[query, loss_query])?;
    let tally = Tally::of(TAG, LINES, &read[0]);
    let losses: Vec<LossEvent> = read[1].iter().map(LossEvent::of).collect();
    progress(started, TEST, &tally.summary());
    let for_file: Vec<&LossEvent> = losses
        .iter()
        .filter(|l| l.path.as_deref() == Some(path.as_str()))
        .collect();
    let counted: u64 = for_file.iter().filter_map(|l| l.events).sum();
    progress(
        started,
        TEST,
        &format!(
            "{} loss events ({} for app.log) count {counted} lost lines",
            losses.len(),
            for_file.len()
        ),
    );
    let detail = format!("{}\nloss events: {losses:#?}", tally.summary());
    assert!(tally.duplicated.is_empty(), "lines indexed twice: {detail}");
    assert!(tally.unexpected.is_empty(), "unexpected lines: {detail}");
    assert!(
        !tally.missing.is_empty() && tally.indexed > 0,
        "the 64 KiB spool must have overflowed and some lines arrived: {detail}"
    );
    assert!(
        for_file
            .iter()
            .all(|l| l.reason == "spool_full" && l.events.is_some()),
        "every loss of app.log is a counted spool_full loss: {detail}"
    );
    assert_eq!(
        counted,
        tally.missing.len() as u64,
        "the loss events count exactly the lines missing from the index: {detail}"
    );
    let line = line_bytes(TAG);
    let uncovered: Vec<usize> = tally
        .missing
        .iter()
        .copied()
        .filter(|&i| {
            let offset = i as u64 * line;
            !for_file.iter().any(|l| {
                l.first_offset.is_some_and(|f| f <= offset)
                    && l.last_offset.is_some_and(|t| offset <= t)
            })
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "missing lines outside every loss event's offset range: {}\n{detail}",
        ranges(&uncovered)
    );
    progress(started, TEST, "passed");
    Ok(())
}
