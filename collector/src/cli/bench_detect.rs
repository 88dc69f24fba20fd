//! `yagura bench detect` (hidden): detection latency, archive append → match emitted.
//!
//! A real segment archive and state database in a work directory, the live detector on
//! its own thread with the given rules (default: the project's `detections/`), and a
//! producer appending signed batches at a steady rate (default 10,000 events/s: a batch
//! of 100 every 10 ms). Each batch holds one event that a single-event rule matches
//! (`sudo_not_in_sudoers`, with a unique id) among benign SSH logins. The latency of a
//! match is from the moment its batch's append returned (fsynced: what the agent is
//! acknowledged for) to the moment the detector published it on its live stream (what
//! alerting reads). Reports p50, p99 and the maximum.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use tokio_util::sync::CancellationToken;
use yagura_collector::archive::{Archive, SegmentArchive};
use yagura_collector::detect::{Detector, LiveDetector, ecs_pipeline, load_rules};
use yagura_collector::store::Store;
use yagura_shared::{AgentKey, Event, SignedBatch};

#[derive(Debug, Args)]
pub struct BenchDetectArgs {
    /// Rule directories.
    #[arg(long, default_value = "detections")]
    rules: Vec<PathBuf>,
    /// Events per second appended.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// Batches appended per second (the rate is spread over them).
const BATCHES_PER_SECOND: u64 = 100;

fn benign(i: u64) -> Event {
    let mut e = Event::new(Utc::now());
    e.set_str("event.dataset", "system.auth");
    e.set_str("process.name", "sshd");
    e.set_str("event.action", "ssh_login");
    e.set_str("event.outcome", "success");
    e.set_str("user.name", format!("user{}", i % 50));
    e.set_str("source.ip", format!("10.0.{}.{}", (i / 250) % 250, i % 250));
    e.set_str(
        "message",
        format!(
            "Accepted publickey for user{} from 10.0.0.1 port 22 ssh2",
            i % 50
        ),
    );
    e
}

fn marked() -> Event {
    let mut e = Event::new(Utc::now());
    e.set_str("event.dataset", "system.auth");
    e.set_str("process.name", "sudo");
    e.set_str("event.action", "sudo_not_in_sudoers");
    e.set_str("event.outcome", "failure");
    e.set_str("user.name", "mallory");
    e
}

/// Append and arrival times of the marked events, matched up by event id.
#[derive(Default)]
struct Timing {
    appended: HashMap<String, Instant>,
    seen: HashMap<String, Instant>,
    latencies: Vec<Duration>,
}

impl Timing {
    fn appended(&mut self, id: String, at: Instant) {
        match self.seen.remove(&id) {
            // Published before the append call returned to us: as good as no wait.
            Some(seen) => self.latencies.push(seen.saturating_duration_since(at)),
            None => {
                self.appended.insert(id, at);
            }
        }
    }

    fn seen(&mut self, id: String, at: Instant) {
        match self.appended.remove(&id) {
            Some(appended) => self.latencies.push(at.saturating_duration_since(appended)),
            None => {
                self.seen.insert(id, at);
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

pub async fn run(args: BenchDetectArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("work directory")?;
    let archive = Arc::new(SegmentArchive::open(
        &work.path().join("archive"),
        256 << 20,
    )?);
    let store = Store::open_sqlite(&work.path().join("state.db")).await?;
    let pipeline = ecs_pipeline().map_err(anyhow::Error::msg)?;
    let rules = load_rules(&args.rules, &pipeline).map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(first) = rules.errors.first() {
        anyhow::bail!("{first}");
    }
    let detector = Detector::new(&rules, pipeline).map_err(anyhow::Error::msg)?;
    let live = LiveDetector::new(detector, store, Duration::from_millis(500), 64 << 20);
    let stats = live.stats();
    let mut matches = live.subscribe();
    let cancel = CancellationToken::new();
    let thread = {
        let archive = Arc::clone(&archive);
        let cancel = cancel.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("detector".into())
            .spawn(move || live.run(archive.as_ref(), runtime, cancel))?
    };
    // Let the detector record its start before the load begins.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The append's return and the match's arrival race (the detector may publish before
    // the producer has noted the time); whichever side comes second measures.
    let timing: Arc<Mutex<Timing>> = Arc::default();
    let receiver = {
        let timing = Arc::clone(&timing);
        tokio::spawn(async move {
            loop {
                match matches.recv().await {
                    Ok(detection) => {
                        let now = Instant::now();
                        if let (Some(id), Ok(mut t)) = (&detection.event_id, timing.lock()) {
                            t.seen(id.clone(), now);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("latency receiver lagged by {n} matches");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };

    let key = AgentKey::generate()?;
    let agent = uuid::Uuid::now_v7();
    let per_batch = (args.rate / BATCHES_PER_SECOND).max(1);
    let batches = args.seconds * BATCHES_PER_SECOND;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / BATCHES_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for sequence in 1..=batches {
        tick.tick().await;
        let mut events: Vec<Event> = (0..per_batch - 1)
            .map(|i| benign(sequence * per_batch + i))
            .collect();
        let mark = marked();
        let id = mark.id().map(|u| u.to_string()).unwrap_or_default();
        events.push(mark);
        let batch = SignedBatch::seal(&key, agent, sequence, Utc::now(), &events)?;
        archive.append(agent, sequence, batch.into_bytes()).await?;
        let now = Instant::now();
        if let Ok(mut t) = timing.lock() {
            t.appended(id, now);
        }
    }
    let load = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("detector thread panicked"))?
        .map_err(|e| anyhow::anyhow!("detector: {e}"))?;
    receiver.abort();

    let (mut sorted, missing) = timing
        .lock()
        .map(|t| (t.latencies.clone(), t.appended.len()))
        .unwrap_or_default();
    sorted.sort();
    let events = batches * per_batch;
    println!(
        "{events} events in {batches} batches over {:.1} s ({:.0} events/s), {} rules, {} correlations",
        load.as_secs_f64(),
        events as f64 / load.as_secs_f64(),
        rules.detection_rules(),
        rules.correlation_rules()
    );
    println!("| latency, append → match | p50 | p99 | max | matches timed | not seen |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} events/s | {:.1} ms | {:.1} ms | {:.1} ms | {} | {missing} |",
        args.rate,
        percentile(&sorted, 0.5).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        sorted.len()
    );
    println!(
        "detector: {} events evaluated, {} matches",
        stats.events.load(std::sync::atomic::Ordering::Relaxed),
        stats.matches.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
