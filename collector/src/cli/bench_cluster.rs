//! `yagura bench cluster`: what a JetStream cluster gives on this machine — the publish
//! acknowledgement latency a gateway waits for before it acks an agent, and indexing
//! throughput through one and through two `yagura serve --role indexer` processes.
//!
//! The batches are sealed before any clock starts (sealing is the agents' cost). Each
//! indexer run starts from an empty data directory on the same stream, and ends when a
//! fan-out search counts every event; CPU is read from the indexer processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use tokio::sync::Mutex;
use yagura_collector::archive::{Archive, JetStreamArchive, JetStreamConfig};
use yagura_collector::cluster::leases;
use yagura_collector::cluster::node::lease_bucket_name;
use yagura_collector::cluster::search::FanOut;
use yagura_collector::index::SearchRequest;
use yagura_shared::{AgentKey, SignedBatch};

use super::bench_search::{XorShift, event, percentile};

#[derive(Debug, Args)]
pub struct BenchClusterArgs {
    /// Events to publish and index.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Events per signed batch.
    #[arg(long, default_value_t = 1_000)]
    batch_events: u64,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Work directory (default: a new one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const AGENTS: usize = 8;

struct Sealed {
    agent: uuid::Uuid,
    sequence: u64,
    bytes: Vec<u8>,
}

fn seal_all(args: &BenchClusterArgs) -> anyhow::Result<Vec<Sealed>> {
    let agents: Vec<(uuid::Uuid, AgentKey)> = (0..AGENTS)
        .map(|_| Ok((uuid::Uuid::now_v7(), AgentKey::generate()?)))
        .collect::<anyhow::Result<_>>()?;
    let batches = args.events.div_ceil(args.batch_events);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let end = Utc::now();
    let mut sealed = Vec::with_capacity(batches as usize);
    let mut i = 0;
    for b in 0..batches {
        let (agent, key) = &agents[b as usize % AGENTS];
        let count = args.batch_events.min(args.events - i);
        let events: Vec<_> = (0..count)
            .map(|k| event(i + k, args.events, end, &agent.to_string(), &mut rng))
            .collect();
        i += count;
        let sequence = b / AGENTS as u64 + 1;
        sealed.push(Sealed {
            agent: *agent,
            sequence,
            bytes: SignedBatch::seal(key, *agent, sequence, Utc::now(), &events)?.into_bytes(),
        });
    }
    Ok(sealed)
}

struct Published {
    wall: Duration,
    events: u64,
    latencies: Vec<Duration>,
}

/// Publishes `batches` from `publishers` concurrent gateways' tasks (one per agent, so
/// each agent's batches stay in order), timing each acknowledgement.
async fn publish(
    archive: &Arc<JetStreamArchive>,
    batches: Vec<Sealed>,
    publishers: usize,
    batch_events: u64,
) -> anyhow::Result<Published> {
    let events = batches.len() as u64 * batch_events;
    let mut queues: Vec<Vec<Sealed>> = (0..publishers).map(|_| Vec::new()).collect();
    for batch in batches {
        let lane = (batch.agent.as_u128() % publishers as u128) as usize;
        queues[lane].push(batch);
    }
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in queues {
        let archive = Arc::clone(archive);
        let latencies = Arc::clone(&latencies);
        tasks.spawn(async move {
            for batch in queue {
                let at = Instant::now();
                archive
                    .append(batch.agent, batch.sequence, batch.bytes)
                    .await?;
                latencies.lock().await.push(at.elapsed());
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let wall = started.elapsed();
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort();
    Ok(Published {
        wall,
        events,
        latencies,
    })
}

struct IndexerProcess {
    child: Child,
}

impl IndexerProcess {
    fn start(dir: &Path, node: &str, config: &JetStreamConfig) -> anyhow::Result<Self> {
        let data = dir.join(node);
        std::fs::create_dir_all(&data)?;
        let path = data.join("collector.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\n\n[archive]\nbackend = \"jetstream\"\n\n\
                 [archive.jetstream]\nurl = \"{}\"\nstream = \"{}\"\nsubject_prefix = \"{}\"\n\
                 partitions = {}\n\n[cluster]\nnode = \"{node}\"\nlease_seconds = 6\n",
                data.display(),
                config.url,
                config.stream,
                config.subject_prefix,
                config.partitions,
            ),
        )?;
        let log = std::fs::File::create(data.join("indexer.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["serve", "--role", "indexer", "--config"])
            .arg(&path)
            .env(
                "RUST_LOG",
                "info,async_nats=warn,yagura_collector::cluster=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(IndexerProcess { child })
    }

    fn cpu_seconds(&self) -> f64 {
        yagura_agent::health::cpu_seconds_of(self.child.id()).unwrap_or(0.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for IndexerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Indexed {
    wall: Duration,
    cpu: f64,
}

/// Starts `nodes` indexer processes on the stream, each with an empty data directory,
/// and waits until a fan-out search counts `events`.
async fn index_with(
    work: &Path,
    run: &str,
    nodes: usize,
    config: &JetStreamConfig,
    fan: &FanOut,
    events: u64,
) -> anyhow::Result<Indexed> {
    let started = Instant::now();
    let processes: Vec<IndexerProcess> = (0..nodes)
        .map(|n| IndexerProcess::start(&work.join(run), &format!("{run}-{n}"), config))
        .collect::<anyhow::Result<_>>()?;
    let deadline = started + Duration::from_secs(3_600);
    // A count over every partition each half second (searches run at normal priority,
    // indexing at nice 10: polling much more often would measure the polling).
    let count = SearchRequest {
        limit: 1,
        ..SearchRequest::new("*")
    };
    loop {
        if let Ok(found) = fan.search(&count).await
            && found.total as u64 >= events
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{run}: not indexed within an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed();
    let cpu = processes.iter().map(IndexerProcess::cpu_seconds).sum();
    for process in processes {
        process.stop();
    }
    Ok(Indexed { wall, cpu })
}

pub async fn run(args: BenchClusterArgs) -> anyhow::Result<()> {
    let work = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("bench-cluster-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new()
            .prefix("yagura-bench-cluster-")
            .tempdir()?,
    };
    if args.dir.is_some() {
        println!("work directory (kept): {}", work.path().display());
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = JetStreamConfig {
        url: args.nats.clone(),
        stream: format!("YAGURA_BENCH_{id}"),
        subject_prefix: format!("yagura-bench.{id}"),
        partitions: args.partitions,
        ..JetStreamConfig::default()
    };
    println!(
        "sealing {} events in batches of {} from {AGENTS} agents ...",
        args.events, args.batch_events
    );
    let mut batches = seal_all(&args)?;
    let archive = Arc::new(JetStreamArchive::open(config.clone()).await?);
    let client = yagura_collector::archive::connect_nats(&args.nats, "yagura-bench").await?;
    let context = async_nats::jetstream::new(client.clone());
    let result = async {
        // One gateway task (one batch in flight, like one agent), then eight.
        let single: Vec<Sealed> = batches.drain(..batches.len().min(200)).collect();
        let one = publish(&archive, single, 1, args.batch_events).await?;
        let eight = publish(&archive, batches, AGENTS, args.batch_events).await?;
        let bytes = context
            .get_stream(&config.stream)
            .await?
            .info()
            .await?
            .state
            .bytes;
        println!(
            "\npublish (gateway → JetStream ack), batches of {} events:",
            args.batch_events
        );
        println!("| publishers | batches | events/s | ack p50 | ack p99 |");
        println!("| ---: | ---: | ---: | ---: | ---: |");
        for (publishers, p) in [(1, &one), (AGENTS, &eight)] {
            println!(
                "| {publishers} | {} | {:.0} | {:.2} ms | {:.2} ms |",
                p.latencies.len(),
                p.events as f64 / p.wall.as_secs_f64(),
                percentile(&p.latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&p.latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
        println!(
            "stream: {} bytes for {} events ({:.0} bytes/event)",
            bytes,
            args.events,
            bytes as f64 / args.events as f64
        );

        let kv = leases::bucket(
            &context,
            &lease_bucket_name(&config.stream),
            Duration::from_secs(6),
            1,
        )
        .await?;
        let fan = FanOut::new(
            client.clone(),
            kv,
            &config.stream,
            config.partitions,
            Duration::from_secs(30),
        );
        let one = index_with(work.path(), "one", 1, &config, &fan, args.events).await?;
        let two = index_with(work.path(), "two", 2, &config, &fan, args.events).await?;
        println!(
            "\nindexing {} events from the stream ({} partitions), until a fan-out search \
             counts them all:",
            args.events, config.partitions
        );
        println!("| indexer processes | wall | events/s | CPU s | events per CPU-second |");
        println!("| ---: | ---: | ---: | ---: | ---: |");
        for (n, r) in [(1, &one), (2, &two)] {
            println!(
                "| {n} | {:.1} s | {:.0} | {:.1} | {:.0} |",
                r.wall.as_secs_f64(),
                args.events as f64 / r.wall.as_secs_f64(),
                r.cpu,
                args.events as f64 / r.cpu.max(0.001),
            );
        }
        println!(
            "two processes / one: {:.2}× events/s",
            one.wall.as_secs_f64() / two.wall.as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    let _ = context
        .delete_key_value(lease_bucket_name(&config.stream))
        .await;
    let _ = context.delete_stream(&config.stream).await;
    if args.dir.is_some() {
        // The indexers' logs and data stay for a look.
        let _ = work.keep();
    }
    result
}
