//! `yagura bench ingest` (hidden): ingest throughput on loopback, indexing excluded.
//!
//! Starts a collector in ingest-only mode (verify + archive + fsync + ack, no indexer, no
//! rate limit) in a temporary directory, enrolls one agent per client, pre-seals batches
//! of `--batch-events` realistic log events (sealing is the agent's cost, not the
//! collector's), then drives it with 1, 8 and 64 concurrent clients, each with one batch
//! in flight like a real agent. The limit it is compared with is a plain append of the
//! same bytes to a file, fsynced once per group of `clients` batches (what perfect group
//! commit would need). Finally it sends at half the best measured rate and reports the
//! ack latency percentiles.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use yagura_collector::config::CollectorConfig;
use yagura_collector::server::{self, RunMode};
use yagura_shared::{AgentKey, Event, SignedBatch};

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Concurrent clients (agents) to measure, comma separated.
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch_events: usize,
    /// Batches sent per measurement (spread over the clients).
    #[arg(long, default_value_t = 512)]
    batches: usize,
    /// Where to put the temporary collector (default: the system temp directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// A benchmark's work directory: `dir` when given (kept), else a new one under the
/// system temp dir named after the benchmark (removed at the end: the `bool`).
pub(super) fn work_dir(
    dir: Option<std::path::PathBuf>,
    bench: &str,
) -> anyhow::Result<(std::path::PathBuf, bool)> {
    let (work, remove) = match dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("yagura-bench-{bench}-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work)?;
    Ok((work, remove))
}

/// Sequences 1..=`count` of `agent`, sealed before any clock starts (sealing is the
/// agent's cost, not ingest's); `stride` and `client` vary the generated events.
fn seal_batches(
    agent: uuid::Uuid,
    key: &AgentKey,
    count: usize,
    batch_events: usize,
    stride: usize,
    client: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let id = agent.to_string();
    (1..=count)
        .map(|seq| {
            let events = sample_events(&id, seq * stride + client, batch_events);
            Ok(
                SignedBatch::seal(key, agent, seq as u64, chrono::Utc::now(), &events)?
                    .into_bytes(),
            )
        })
        .collect()
}

fn sample_events(agent: &str, batch: usize, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(chrono::Utc::now());
            let line = format!(
                "Nov 25 08:{:02}:{:02} web-{} sshd[{}]: Failed password for invalid user \
                 u{} from 203.0.113.{} port {} ssh2",
                i % 60,
                (i * 7) % 60,
                batch % 16,
                1000 + i,
                (i * 31 + batch) % 997,
                i % 250,
                40000 + (i * 13) % 20000
            );
            e.set_str("message", line.clone());
            e.set_str("event.original", line);
            e.set_str("event.dataset", "bench.auth");
            e.set_str("host.name", format!("web-{}", batch % 16));
            e.set_str("agent.id", agent);
            e.set_str("log.file.path", "/var/log/auth.log");
            e.set("log.offset", serde_json::json!(i * 120));
            e
        })
        .collect()
}

struct Measurement {
    seconds: f64,
    batches: usize,
    events: usize,
    latencies_ms: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Sends each client's batches in order, one in flight; `interval` paces each client.
async fn drive(
    url: &str,
    fingerprint: &str,
    per_client: Vec<Vec<Vec<u8>>>,
    events_per_batch: usize,
    interval: Option<Duration>,
) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let clients = per_client.len().max(1) as u32;
    for (index, batches) in per_client.into_iter().enumerate() {
        // Paced clients start spread over one interval, like agents that were not all
        // started in the same millisecond.
        let offset = interval.map_or(Duration::ZERO, |every| every * index as u32 / clients);
        let (client, _) =
            yagura_agent::tls::pinned_client(Some(fingerprint), Duration::from_secs(60))?;
        let url = format!("{url}/api/v1/ingest");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(batches.len());
            let mut next = Instant::now() + offset;
            for body in batches {
                if let Some(every) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                }
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let _ = response.bytes().await?;
                anyhow::ensure!(status.is_success(), "ingest answered {status}");
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies_ms = Vec::new();
    for task in tasks {
        latencies_ms.extend(task.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);
    let batches = latencies_ms.len();
    Ok(Measurement {
        seconds,
        batches,
        events: batches * events_per_batch,
        latencies_ms,
    })
}

/// Appends the same bytes to a file, one fsync per `group` batches.
fn fsynced_append(
    dir: &std::path::Path,
    batches: &[&Vec<u8>],
    group: usize,
) -> anyhow::Result<f64> {
    let path = dir.join("plain-append.bin");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let start = Instant::now();
    for chunk in batches.chunks(group.max(1)) {
        for bytes in chunk {
            file.write_all(bytes)?;
        }
        file.sync_data()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(seconds)
}

pub async fn run(args: BenchIngestArgs) -> anyhow::Result<()> {
    let tmp = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let mut config = CollectorConfig::with_data_dir(tmp.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.ingest.agent_events_per_second = 0;
    config.ingest.max_consumer_lag_bytes = 0;

    let total_clients: usize = args.clients.iter().sum::<usize>() + 64;
    let store = server::open_store(&config).await?;
    let token = store
        .create_enrollment_token(
            chrono::Duration::hours(1),
            u32::try_from(total_clients)?,
            &Default::default(),
        )
        .await?;
    let mut agents = Vec::new();
    for _ in 0..total_clients {
        let key = AgentKey::generate()?;
        let record = store
            .enroll_agent(token.expose(), &key.public_key_base64(), "bench", "bench")
            .await?
            .map_err(|r| anyhow::anyhow!("enrollment refused: {r:?}"))?;
        agents.push((record.id, key));
    }
    store.close().await;

    let shutdown = CancellationToken::new();
    let (started_tx, started_rx) = oneshot::channel();
    let server = tokio::spawn(server::run_with(
        config.clone(),
        started_tx,
        shutdown.clone(),
        RunMode::IngestOnly,
    ));
    let started = started_rx.await.context("collector did not start")?;
    eprintln!("collector (ingest only) on {}", started.url);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "# yagura bench ingest — {} — {} cores, {cpu} — batches of {} events, {} batches per run",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.batch_events,
        args.batches
    );
    println!(
        "| clients | events/s | batches/s | MB/s | ack p50 ms | ack p99 ms | plain fsync'd append events/s | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");

    let agents = Arc::new(agents);
    let mut next_agent = 0usize;
    let mut best_rate = 0.0f64;
    for &clients in &args.clients {
        let clients = clients.max(1);
        let per = args.batches.div_ceil(clients);
        let mut per_client = Vec::with_capacity(clients);
        for c in 0..clients {
            let (agent, key) = &agents[next_agent + c];
            per_client.push(seal_batches(*agent, key, per, args.batch_events, 131, c)?);
        }
        next_agent += clients;
        let all: Vec<&Vec<u8>> = per_client.iter().flatten().collect();
        let bytes: usize = all.iter().map(|b| b.len()).sum();
        let plain_seconds = fsynced_append(tmp.path(), &all, clients)?;
        let plain_rate = (all.len() * args.batch_events) as f64 / plain_seconds;
        let m = drive(
            &started.url,
            &started.fingerprint,
            per_client,
            args.batch_events,
            None,
        )
        .await?;
        let rate = m.events as f64 / m.seconds;
        best_rate = best_rate.max(rate);
        println!(
            "| {clients} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
            rate,
            m.batches as f64 / m.seconds,
            bytes as f64 / m.seconds / 1e6,
            percentile(&m.latencies_ms, 50.0),
            percentile(&m.latencies_ms, 99.0),
            plain_rate,
            rate / plain_rate
        );
    }

    // Half the best rate, paced over 64 clients: the ack latency an agent sees.
    let clients = 64usize;
    let target = best_rate / 2.0;
    let per_client_batches_per_s = target / args.batch_events as f64 / clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client_batches_per_s.max(0.01));
    let per = (args.batches / clients).max(4);
    let mut per_client = Vec::with_capacity(clients);
    for c in 0..clients {
        let (agent, key) = &agents[next_agent + c];
        per_client.push(seal_batches(*agent, key, per, args.batch_events, 17, c)?);
    }
    let m = drive(
        &started.url,
        &started.fingerprint,
        per_client,
        args.batch_events,
        Some(interval),
    )
    .await?;
    println!();
    println!(
        "paced at half the best rate ({:.0} events/s offered, {:.0} achieved, 64 clients): ack p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        target,
        m.events as f64 / m.seconds,
        percentile(&m.latencies_ms, 50.0),
        percentile(&m.latencies_ms, 99.0),
        m.latencies_ms.last().copied().unwrap_or(0.0)
    );

    shutdown.cancel();
    server.await.context("collector task")??;
    Ok(())
}
