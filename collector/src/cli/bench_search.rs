//! `yagura bench search` (hidden): indexing throughput and warm query latency.
//!
//! Generates `--events` ECS events (~400 bytes of JSON each, two days of time, a hundred
//! hosts, fifty users, mixed IPv4/IPv6 sources, a few command lines worth hunting for),
//! archives them as signed batches of 2,000 in a real segment archive and writes the same
//! events as one NDJSON file. Then:
//!
//! - the real indexer (archive read, decompression, validation, documents, tantivy with
//!   the collector's writer settings and commit interval) indexes the archive: events/s,
//!   CPU seconds (the whole process: the writer's and tantivy's merge threads count) and
//!   disk bytes per event;
//! - the limit: the same events from the NDJSON file, parsed and added to a fresh index
//!   with the same schema and writer settings by tantivy directly, one commit at the end;
//! - warm query latency over the indexed events: p50 and p99 of fifty runs of each query
//!   after five warm-up runs.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;
use yagura_collector::archive::{Archive, SegmentArchive};
use yagura_collector::index::{self, EventIndex, Indexer, SearchRequest};
use yagura_collector::search::aggs::parse_aggs;
use yagura_shared::{AgentKey, Event, SignedBatch};

#[derive(Debug, Args)]
pub struct BenchSearchArgs {
    /// Events to generate and index.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Work directory (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const BATCH_EVENTS: u64 = 2_000;
/// The collector's defaults (`[index]` in collector.toml).
const WRITER_MEMORY: usize = 64 << 20;
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
const MAX_DECOMPRESSED: usize = 64 << 20;

/// A small deterministic generator: the same data set for the same `--events`.
pub(super) struct XorShift(pub(super) u64);
impl XorShift {
    pub(super) fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const USERS: &[&str] = &[
    "admin", "root", "oracle", "deploy", "ubuntu", "postgres", "git", "alice", "bob", "carol",
];
const COMMANDS: &[&str] = &[
    "/usr/sbin/sshd -D",
    "/bin/bash -c backup.sh",
    "/usr/bin/python3 /opt/app/worker.py --queue default",
    "powershell.exe -NoProfile -ExecutionPolicy Bypass",
    "/usr/bin/curl -fsSL https://example.com/install.sh",
    "C:\\Tools\\mimikatz.exe privilege::debug sekurlsa::logonpasswords",
];

/// Event `i` of `n`, spread over the two days before `end`.
pub(super) fn event(
    i: u64,
    n: u64,
    end: chrono::DateTime<Utc>,
    agent: &str,
    rng: &mut XorShift,
) -> Event {
    let span_ms = 48 * 3600 * 1000;
    let at = end - chrono::Duration::milliseconds(span_ms - (i * span_ms as u64 / n.max(1)) as i64);
    let mut e = Event::new(at);
    let user = USERS[rng.next(USERS.len() as u64) as usize];
    let ip = match rng.next(10) {
        0..=5 => format!("10.{}.{}.{}", rng.next(256), rng.next(256), rng.next(256)),
        6 | 7 => format!("203.0.113.{}", rng.next(256)),
        8 => format!("198.51.100.{}", rng.next(256)),
        _ => format!("2001:db8::{:x}", rng.next(65536)),
    };
    let port = 1024 + rng.next(64_000);
    let failed = rng.next(10) < 3;
    e.set_str("agent.id", agent);
    e.set_str("host.name", format!("host-{:03}", rng.next(100)));
    e.set_str("event.dataset", "bench.search");
    e.set_str(
        "event.action",
        ["ssh_login", "process_start", "http_request"][(i % 3) as usize],
    );
    e.set_str("event.outcome", if failed { "failure" } else { "success" });
    e.set_str("user.name", user);
    e.set_str("source.ip", &ip);
    e.set("source.port", serde_json::Value::from(port));
    e.set_str("destination.ip", format!("10.0.0.{}", rng.next(32)));
    e.set(
        "http.response.status_code",
        serde_json::Value::from([200u64, 200, 200, 302, 404, 500][rng.next(6) as usize]),
    );
    // One command line in two hundred is the one worth hunting.
    let command = if rng.next(200) == 0 {
        COMMANDS[5]
    } else {
        COMMANDS[rng.next(5) as usize]
    };
    e.set_str("process.command_line", command);
    e.set_str(
        "message",
        if failed {
            format!("Failed password for {user} from {ip} port {port} ssh2")
        } else {
            format!("Accepted publickey for {user} from {ip} port {port} ssh2")
        },
    );
    e
}

/// CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    yagura_agent::health::cpu_seconds().unwrap_or(0.0)
}

pub(super) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Writes the archive and the NDJSON file; returns the archive's end offset.
async fn generate(work: &Path, n: u64) -> anyhow::Result<(Arc<SegmentArchive>, u64)> {
    let archive = Arc::new(SegmentArchive::open(&work.join("archive"), 256 << 20)?);
    let key = AgentKey::generate()?;
    let agent = uuid::Uuid::now_v7();
    let agent_text = agent.to_string();
    let mut ndjson = std::io::BufWriter::new(std::fs::File::create(work.join("events.ndjson"))?);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let end = Utc::now();
    let mut sequence = 0;
    let mut i = 0;
    while i < n {
        let count = BATCH_EVENTS.min(n - i);
        let events: Vec<Event> = (i..i + count)
            .map(|j| event(j, n, end, &agent_text, &mut rng))
            .collect();
        for e in &events {
            ndjson.write_all(e.to_json_line().as_bytes())?;
            ndjson.write_all(b"\n")?;
        }
        sequence += 1;
        let batch = SignedBatch::seal(&key, agent, sequence, Utc::now(), &events)?;
        archive.append(agent, sequence, batch.into_bytes()).await?;
        i += count;
    }
    ndjson.flush()?;
    let committed = *archive.committed().borrow();
    Ok((archive, committed))
}

struct Indexed {
    wall: Duration,
    cpu: f64,
    bytes: u64,
}

fn run_indexer(
    archive: &Arc<SegmentArchive>,
    end: u64,
    dir: &Path,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<(Indexed, EventIndex)> {
    let options = index::IndexerOptions {
        writer_memory_bytes: WRITER_MEMORY,
        commit_interval: COMMIT_INTERVAL,
        max_decompressed: MAX_DECOMPRESSED,
        retention: index::IndexRetention::default(),
        retention_check_interval: Duration::from_secs(3600),
    };
    let (indexer, search) = Indexer::open(dir, options, None)?;
    let stats = indexer.stats();
    let cancel = CancellationToken::new();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let worker = {
        let archive = Arc::clone(archive);
        let cancel = cancel.clone();
        std::thread::spawn(move || indexer.run(archive.as_ref(), runtime, cancel))
    };
    while stats
        .indexed_offset
        .load(std::sync::atomic::Ordering::Relaxed)
        < end
    {
        anyhow::ensure!(!worker.is_finished(), "the indexer stopped early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    cancel.cancel();
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("indexer thread panicked"))??;
    Ok((
        Indexed {
            wall,
            cpu,
            bytes: dir_bytes(dir),
        },
        search,
    ))
}

fn run_direct(ndjson: &Path, dir: &Path) -> anyhow::Result<Indexed> {
    let lines = std::io::BufReader::new(std::fs::File::open(ndjson)?).lines();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    index::index_directly(dir, WRITER_MEMORY, lines)?;
    Ok(Indexed {
        wall: start.elapsed(),
        cpu: cpu_seconds() - cpu_before,
        bytes: dir_bytes(dir),
    })
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn latency(index: &EventIndex, name: &str, request: &SearchRequest) -> anyhow::Result<()> {
    let mut total = 0;
    for _ in 0..5 {
        total = index.search(request)?.total;
    }
    let mut runs: Vec<Duration> = (0..50)
        .map(|_| {
            let start = Instant::now();
            index.search(request).map(|_| start.elapsed())
        })
        .collect::<Result<_, _>>()?;
    runs.sort();
    println!(
        "| {name} | `{}`{} | {total} | {:.1} ms | {:.1} ms |",
        request.query,
        if request.aggs.is_empty() {
            String::new()
        } else {
            format!(" + `{}`", request_aggs_text(request))
        },
        percentile(&runs, 0.5).as_secs_f64() * 1e3,
        percentile(&runs, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn request_aggs_text(request: &SearchRequest) -> String {
    request
        .aggs
        .iter()
        .map(index::aggs::result_key)
        .collect::<Vec<_>>()
        .join(",")
}

fn request(query: &str, since_hours: Option<i64>, aggs: &str) -> anyhow::Result<SearchRequest> {
    Ok(SearchRequest {
        since: since_hours.map(|h| Utc::now() - chrono::Duration::hours(h)),
        aggs: parse_aggs(aggs)?,
        ..SearchRequest::new(query)
    })
}

pub async fn run(args: BenchSearchArgs) -> anyhow::Result<()> {
    let (work, remove) = super::bench::work_dir(args.dir, "search")?;
    let n = args.events;
    eprintln!("generating {n} events into {}", work.display());
    let (archive, end) = generate(&work, n).await?;
    let ndjson_bytes = std::fs::metadata(work.join("events.ndjson"))?.len();
    println!(
        "{n} events, {:.0} bytes of JSON each on average, {} cores",
        ndjson_bytes as f64 / n as f64,
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );

    let runtime = tokio::runtime::Handle::current();
    let index_dir = work.join("index");
    let (ours, search) = tokio::task::spawn_blocking({
        let archive = Arc::clone(&archive);
        let dir = index_dir.clone();
        move || run_indexer(&archive, end, &dir, runtime)
    })
    .await??;
    let direct_dir = work.join("direct");
    let direct = tokio::task::spawn_blocking({
        let ndjson = work.join("events.ndjson");
        let dir = direct_dir.clone();
        move || run_direct(&ndjson, &dir)
    })
    .await??;
    std::fs::remove_dir_all(&direct_dir).context("removing the direct index")?;

    println!("| indexing | events/s | CPU s | events/s per CPU-second | disk bytes/event |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, f) in [
        (
            "yagura indexer (archive → tantivy, commits every 500 ms)",
            &ours,
        ),
        (
            "tantivy directly (NDJSON → same schema, one commit)",
            &direct,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0} |",
            n as f64 / f.wall.as_secs_f64(),
            f.cpu,
            n as f64 / f.cpu.max(0.001),
            f.bytes as f64 / n as f64
        );
    }
    println!(
        "ratio to tantivy directly: {:.2} (wall), {:.2} (CPU)",
        direct.wall.as_secs_f64() / ours.wall.as_secs_f64(),
        direct.cpu / ours.cpu.max(0.001)
    );

    let searcher = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        search.refresh()?;
        println!("| query | text | hits | p50 | p99 |");
        println!("| --- | --- | ---: | ---: | ---: |");
        latency(&search, "term", &request("user.name:admin", None, "")?)?;
        latency(
            &search,
            "term + 1 h",
            &request("user.name:admin", Some(1), "")?,
        )?;
        latency(
            &search,
            "CIDR + term",
            &request("source.ip:10.0.0.0/8 AND event.outcome:failure", None, "")?,
        )?;
        latency(
            &search,
            "infix wildcard",
            &request("process.command_line:*mimikatz*", None, "")?,
        )?;
        latency(
            &search,
            "24 h date histogram",
            &request("*", Some(24), "date_histogram:@timestamp")?,
        )?;
        latency(
            &search,
            "terms top 10",
            &request("*", None, "terms:source.ip")?,
        )?;
        Ok(())
    });
    searcher.await??;
    drop(archive);
    if remove {
        std::fs::remove_dir_all(&work).ok();
    }
    Ok(())
}
