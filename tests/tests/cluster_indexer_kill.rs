//! Two `yagura serve --role indexer` processes share a JetStream archive that two
//! gateways fill with 100,000 events from 4 agents. One indexer is SIGKILLed mid-run:
//! the other takes its partitions over, and search through the fan-out finds every event
//! exactly once. The killed node comes back, takes its share again (resuming from its
//! own commits) and still nothing is lost or doubled.
//!
//! Against the NATS server on 127.0.0.1:4222 (`YAGURA_TEST_NATS_URL`), in a stream and a
//! lease bucket of the test's own, deleted at the end. Skipped with the reason without
//! NATS; failing under `YAGURA_TEST_STRICT=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use uuid::Uuid;
use yagura_collector::archive::{Archive, JetStreamArchive, JetStreamConfig};
use yagura_collector::cluster::leases;
use yagura_collector::cluster::node::lease_bucket_name;
use yagura_collector::cluster::search::FanOut;
use yagura_collector::index::SearchRequest;
use yagura_e2e::{ClusterToml, Process, cluster_indexer};
use yagura_shared::{AgentKey, Event, SignedBatch};

const PARTITIONS: u32 = 4;
const AGENTS: usize = 4;
const BATCHES: u64 = 250;
const EVENTS_PER_BATCH: u64 = 100;
const TOTAL: usize = AGENTS * (BATCHES * EVENTS_PER_BATCH) as usize;

fn indexer(dir: &Path, node: &str, config: &JetStreamConfig) -> anyhow::Result<Process> {
    let cluster = ClusterToml {
        url: &config.url,
        stream: &config.stream,
        subject_prefix: &config.subject_prefix,
        partitions: PARTITIONS,
    };
    cluster_indexer(dir, node, &cluster)
}

fn batch(key: &AgentKey, agent: Uuid, a: usize, sequence: u64) -> Vec<u8> {
    let events: Vec<Event> = (0..EVENTS_PER_BATCH)
        .map(|line| {
            let mut e = Event::new(Utc::now());
            e.set_str("host.name", format!("host-{a}"));
            e.set_str("message", format!("agent {a} batch {sequence} line {line}"));
            e
        })
        .collect();
    SignedBatch::seal(key, agent, sequence, Utc::now(), &events)
        .expect("seal")
        .into_bytes()
}

/// Every event id the fan-out finds, with how often.
async fn ids(fan: &FanOut) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut found = BTreeMap::new();
    let mut after = None;
    loop {
        let request = SearchRequest {
            limit: 2000,
            fields: vec!["event.id".into()],
            after,
            count_total: false,
            ..SearchRequest::new("*")
        };
        let page = fan.search(&request).await?;
        for hit in &page.hits {
            let id = hit.event["event"]["id"].as_str().context("id")?.to_string();
            *found.entry(id).or_default() += 1;
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor.parse().map_err(anyhow::Error::msg)?),
            None => return Ok(found),
        }
    }
}

async fn wait_for_total(fan: &FanOut, total: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let last = fan.search(&SearchRequest::new("*")).await;
        if let Ok(result) = &last
            && result.total == total
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "never {total}: {last:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn assert_each_once(found: &BTreeMap<String, usize>) {
    assert_eq!(found.len(), TOTAL, "events lost");
    let doubled = found.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "{doubled} events found more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexer_killed_mid_run_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let Some(client) = yagura_collector::cluster::testing::nats_or_skip().await else {
        return Ok(());
    };
    let config = yagura_collector::cluster::testing::own_stream(PARTITIONS);
    let dir = tempfile::tempdir()?;
    // Two gateways: each agent's batches alternate between them.
    let gateways = [
        Arc::new(JetStreamArchive::open(config.clone()).await?),
        Arc::new(JetStreamArchive::open(config.clone()).await?),
    ];
    let first = indexer(dir.path(), "i1", &config)?;
    let mut second = indexer(dir.path(), "i2", &config)?;

    let agents: Vec<(Uuid, AgentKey)> = (0..AGENTS)
        .map(|_| Ok((Uuid::new_v4(), AgentKey::generate()?)))
        .collect::<anyhow::Result<_>>()?;
    let send = |from: u64, to: u64| {
        let agents = &agents;
        let gateways = &gateways;
        async move {
            for sequence in from..to {
                for (a, (agent, key)) in agents.iter().enumerate() {
                    let gateway = &gateways[(sequence as usize + a) % 2];
                    gateway
                        .append(*agent, sequence, batch(key, *agent, a, sequence))
                        .await?;
                }
            }
            anyhow::Ok(())
        }
    };
    send(1, BATCHES / 3).await?;
    // SIGKILL mid-run: no commit, no lease given back.
    second.kill_hard();
    let killed = Instant::now();
    send(BATCHES / 3, BATCHES + 1).await?;

    let context = async_nats::jetstream::new(client.clone());
    let kv = leases::bucket(
        &context,
        &lease_bucket_name(&config.stream),
        Duration::from_secs(2),
        1,
    )
    .await?;
    let fan = FanOut::new(
        client.clone(),
        kv.clone(),
        &config.stream,
        PARTITIONS,
        Duration::from_secs(20),
    );
    wait_for_total(&fan, TOTAL, Duration::from_secs(240)).await?;
    eprintln!(
        "{TOTAL} events searchable through the survivor {:?} after the kill",
        killed.elapsed()
    );
    let owners = leases::owners(&kv, "indexer").await?;
    assert!(owners.values().all(|n| n == "i1"), "{owners:?}");
    assert_each_once(&ids(&fan).await?);

    // The killed node comes back: it takes its share again, resuming from what it had
    // committed before the kill (or from the start), and nothing is doubled.
    let back = indexer(dir.path(), "i2", &config)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners = leases::owners(&kv, "indexer").await?;
        if owners.len() == PARTITIONS as usize && owners.values().any(|n| n == "i2") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "i2 never took a share: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_total(&fan, TOTAL, Duration::from_secs(240)).await?;
    assert_each_once(&ids(&fan).await?);

    drop((first, back));
    let _ = context
        .delete_key_value(lease_bucket_name(&config.stream))
        .await;
    context.delete_stream(&config.stream).await?;
    Ok(())
}
