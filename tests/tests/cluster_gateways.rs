//! Two `yagura serve --role ingest` gateways in front of one JetStream archive, with a
//! `serve --role indexer` node behind them. Four real agents tail their logs; all enroll
//! at the first gateway, and two of them are then pointed at the second (as a load
//! balancer would send them) — the second gateway knows them only through the cluster's
//! agent directory. Every line is archived and searchable exactly once, and both
//! gateways carried batches.
//!
//! Against the NATS server on 127.0.0.1:4222 (`YAGURA_TEST_NATS_URL`), in a stream and
//! buckets of the test's own, deleted at the end. Skipped with the reason without NATS;
//! failing under `YAGURA_TEST_STRICT=1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use yagura_collector::cluster::leases;
use yagura_collector::cluster::node::lease_bucket_name;
use yagura_collector::cluster::search::FanOut;
use yagura_collector::cluster::testing::{nats_or_skip, own_stream};
use yagura_collector::index::SearchRequest;
use yagura_e2e::{Agent, ClusterToml, Collector, append_lines, cluster_indexer, copy_dir};

const PARTITIONS: u32 = 4;
const AGENTS: usize = 4;
const LINES: usize = 5_000;
const TOTAL: usize = AGENTS * LINES;

/// How many batches a gateway accepted, from its `/metrics`.
async fn batches_accepted(gateway: &Collector) -> anyhow::Result<u64> {
    let text = gateway
        .client()?
        .get(format!("{}/metrics", gateway.url))
        .bearer_auth(&gateway.api_token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("yagura_ingest_batches_accepted_total"))
        .context("no batches_accepted metric")?;
    let value = line.split_whitespace().last().context("no value")?;
    Ok(value.parse()?)
}

/// Every message the fan-out finds, with how often.
async fn messages(fan: &FanOut) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut found = BTreeMap::new();
    let mut after = None;
    loop {
        let request = SearchRequest {
            limit: 5000,
            fields: vec!["message".into()],
            after,
            count_total: false,
            ..SearchRequest::new("event.dataset:cluster.test")
        };
        let page = fan.search(&request).await?;
        for hit in &page.hits {
            let message = hit.event["message"].as_str().context("message")?;
            *found.entry(message.to_string()).or_default() += 1;
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor.parse().map_err(anyhow::Error::msg)?),
            None => return Ok(found),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_behind_two_gateways_are_archived_and_found_once() -> anyhow::Result<()> {
    let Some(client) = nats_or_skip().await else {
        return Ok(());
    };
    let config = own_stream(PARTITIONS);
    let cluster = ClusterToml {
        url: &config.url,
        stream: &config.stream,
        subject_prefix: &config.subject_prefix,
        partitions: PARTITIONS,
    };
    let dir = tempfile::tempdir()?;
    let first = Collector::start_as(
        &dir.path().join("gw-a"),
        &cluster.node("gw-a"),
        Some("ingest"),
    )?;
    // One certificate on both gateways: agents pin one fingerprint, whichever answers.
    copy_dir(
        &first.dir.join("data").join("tls"),
        &dir.path().join("gw-b").join("data").join("tls"),
    )?;
    let second = Collector::start_as(
        &dir.path().join("gw-b"),
        &cluster.node("gw-b"),
        Some("ingest"),
    )?;
    assert_eq!(first.fingerprint, second.fingerprint);
    let indexer = cluster_indexer(dir.path(), "i1", &cluster)?;

    let mut agents = Vec::new();
    for a in 0..AGENTS {
        let log = dir.path().join(format!("app-{a}.log"));
        append_lines(&log, 0..LINES, |i| format!("agent {a} line {i}"))?;
        let sources = format!(
            "[[sources]]\npaths = [\"{}\"]\ndataset = \"cluster.test\"\n",
            log.display()
        );
        let mut agent = Agent::enroll(
            &dir.path().join(format!("agent-{a}")),
            &first,
            &format!("host-{a}"),
            &sources,
        )?;
        if a % 2 == 1 {
            let path = agent.dir.join("state").join("enrollment.json");
            let text = std::fs::read_to_string(&path)?;
            anyhow::ensure!(text.contains(&first.url), "enrollment.json names gateway a");
            std::fs::write(&path, text.replace(&first.url, &second.url))?;
        }
        agent.start()?;
        agents.push(agent);
    }

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
        kv,
        &config.stream,
        PARTITIONS,
        Duration::from_secs(20),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let found = loop {
        let found = messages(&fan).await;
        if let Ok(found) = &found
            && found.len() == TOTAL
        {
            break found.clone();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "never {TOTAL} messages: {:?}",
            found.map(|f| f.len())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let doubled = found.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "{doubled} lines found more than once");
    for a in 0..AGENTS {
        for i in [0, LINES / 2, LINES - 1] {
            assert!(found.contains_key(&format!("agent {a} line {i}")));
        }
    }
    let (through_a, through_b) = (
        batches_accepted(&first).await?,
        batches_accepted(&second).await?,
    );
    assert!(
        through_a > 0 && through_b > 0,
        "batches through a: {through_a}, through b: {through_b}"
    );

    drop(agents);
    drop((indexer, first, second));
    for bucket in [
        lease_bucket_name(&config.stream),
        yagura_collector::cluster::directory::bucket_name(&config.stream),
    ] {
        let _ = context.delete_key_value(bucket).await;
    }
    context.delete_stream(&config.stream).await?;
    Ok(())
}
