//! Exporting 1,000,000 events holds one page at a time: the process's anonymous memory
//! (heap) grows by less than 100 MiB while the whole result streams out.
//!
//! Anonymous memory, not all of RSS: the index is memory-mapped, and the pages of its
//! files that an export reads count in RSS as page cache shared with the kernel, which
//! reclaims them under pressure; they say nothing about what the export holds. Both are
//! printed. This file holds one test, so nothing else runs in its process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use yagura_collector::index::{self, EventIndex, SearchRequest};
use yagura_collector::search::export::{Format, export};
use yagura_shared::Event;

const EVENTS: u64 = 1_000_000;
const LIMIT_BYTES: u64 = 100 << 20;

/// `(RssAnon, RssFile)` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn event(i: u64, start: chrono::DateTime<Utc>) -> Event {
    let mut e = Event::new(start + chrono::Duration::milliseconds(i as i64));
    e.set_str("event.dataset", "system.auth");
    e.set_str("event.action", "ssh_login");
    e.set_str(
        "event.outcome",
        if i.is_multiple_of(7) {
            "failure"
        } else {
            "success"
        },
    );
    e.set_str("host.name", format!("web-{:02}", i % 40));
    e.set_str("user.name", format!("user{}", i % 500));
    e.set_str(
        "source.ip",
        format!("10.{}.{}.{}", i % 200, (i / 7) % 250, i % 251),
    );
    e.set_str(
        "process.command_line",
        format!("/usr/sbin/sshd -D -R -o session={i:08} -p 22"),
    );
    e.set_str(
        "message",
        format!(
            "Accepted publickey for user{} from 10.0.0.{} port {} ssh2",
            i % 500,
            i % 251,
            40_000 + i % 20_000
        ),
    );
    e
}

/// Set in the child process: the index directory to export from.
const CHILD_ENV: &str = "YAGURA_EXPORT_MEMORY_INDEX";
const TEST_NAME: &str = "exporting_a_million_events_grows_memory_by_less_than_100_mib";

/// The index is built in this process, the export runs in a child started from this same
/// test binary: its memory before the export is what opening the index costs, not the
/// heap the indexer left behind (which the allocator keeps and the export would reuse,
/// hiding its own growth).
#[test]
fn exporting_a_million_events_grows_memory_by_less_than_100_mib() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        export_and_measure(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let began = std::time::Instant::now();
    let start = Utc::now() - chrono::Duration::hours(6);
    let added = index::index_directly(
        dir.path(),
        64 << 20,
        (0..EVENTS).map(|i| Ok::<_, std::convert::Infallible>(event(i, start).to_json_line())),
    )
    .expect("index");
    assert_eq!(added, EVENTS);
    eprintln!("indexed {EVENTS} events in {:?}", began.elapsed());
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .expect("starting the export process");
    assert!(status.success(), "the export process failed: {status}");
}

fn export_and_measure(dir: &std::path::Path) {
    let began = std::time::Instant::now();
    let store = EventIndex::open_read_only(dir).expect("open");
    let (anon_before, file_before) = rss();
    let peak_anon = Arc::new(AtomicU64::new(anon_before));
    let peak_file = Arc::new(AtomicU64::new(file_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_anon, peak_file, done) = (peak_anon.clone(), peak_file.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (anon, file) = rss();
                peak_anon.fetch_max(anon, Ordering::Relaxed);
                peak_file.fetch_max(file, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut bytes = 0u64;
    let mut lines = 0u64;
    let written = export(&store, SearchRequest::new("*"), Format::Ndjson, |chunk| {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        let (anon, _) = rss();
        peak_anon.fetch_max(anon, Ordering::Relaxed);
        true
    })
    .expect("export");
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let growth = peak_anon
        .load(Ordering::Relaxed)
        .saturating_sub(anon_before);
    let file_growth = peak_file
        .load(Ordering::Relaxed)
        .saturating_sub(file_before);
    eprintln!(
        "exported {written} events ({} MiB) in {:?}: anonymous memory {} MiB before, grew \
         {} MiB (limit {}); mapped index pages grew {} MiB",
        bytes >> 20,
        began.elapsed(),
        anon_before >> 20,
        growth >> 20,
        LIMIT_BYTES >> 20,
        file_growth >> 20
    );
    assert_eq!(written, EVENTS);
    assert_eq!(lines, EVENTS);
    assert!(growth < LIMIT_BYTES, "anonymous memory grew {growth} bytes");
}
