//! A cluster of separate processes on one JetStream archive: two `yagura serve --role
//! ingest` gateways, two `serve --role indexer` nodes, two `serve --role detector` nodes
//! and one `serve --role api` node. Four real agents tail their logs; all enroll at the
//! first gateway, and two of them are then pointed at the second (as a load balancer
//! would send them) — the second gateway knows them only through the cluster's agent
//! directory. Search through the api node finds every one of 200,000 lines exactly once, its
//! aggregations count every host's lines, both gateways carried batches, and the api node
//! takes none. Each agent writes one marker line; the correlation that needs all four
//! (their events came through both gateways, into different archive partitions) fires
//! exactly once and reaches the api node's alerts.
//!
//! Against the NATS server on 127.0.0.1:4222 (`YAGURA_TEST_NATS_URL`), in a stream and
//! buckets of the test's own, deleted at the end. Skipped with the reason without NATS;
//! failing under `YAGURA_TEST_STRICT=1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use yagura_collector::cluster::testing::{delete_cluster, nats_or_skip, own_stream};
use yagura_e2e::{
    Agent, ClusterToml, Collector, MARKER_BURST, append_lines, cluster_detector, cluster_indexer,
    copy_dir, marker_rules, wait_for_correlation,
};

const PARTITIONS: u32 = 4;
const AGENTS: usize = 4;
const LINES: usize = 50_000;
const TOTAL: usize = AGENTS * LINES;
/// The line of each agent that the correlation counts.
const MARKER_LINE: usize = LINES / 4;

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

/// Every message the api node's search finds, with how often (page by page).
async fn messages(api: &Collector) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut found = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = vec![
            ("q", "event.dataset:cluster.test"),
            ("limit", "5000"),
            ("fields", "message"),
        ];
        if let Some(cursor) = &after {
            params.push(("after", cursor));
        }
        let page = api.search_with(&params).await?;
        for hit in page["hits"].as_array().context("hits")? {
            let message = hit["event"]["message"].as_str().context("message")?;
            *found.entry(message.to_string()).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
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
    let indexers = [
        cluster_indexer(dir.path(), "i1", &cluster)?,
        cluster_indexer(dir.path(), "i2", &cluster)?,
    ];
    let rules = marker_rules(dir.path())?;
    let detectors = [
        cluster_detector(dir.path(), "d1", &cluster, &rules)?,
        cluster_detector(dir.path(), "d2", &cluster, &rules)?,
    ];
    let api = Collector::start_as(&dir.path().join("api"), &cluster.node("api"), Some("api"))?;

    let mut agents = Vec::new();
    for a in 0..AGENTS {
        let log = dir.path().join(format!("app-{a}.log"));
        append_lines(&log, 0..LINES, |i| {
            let marker = if i == MARKER_LINE { " marker" } else { "" };
            format!("agent {a} line {i}{marker}")
        })?;
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

    let started = Instant::now();
    // The total first (cheap), then every line page by page.
    api.wait_for_at_least(
        "event.dataset:cluster.test",
        TOTAL as u64,
        Duration::from_secs(900),
    )
    .await?;
    eprintln!(
        "{TOTAL} events searchable through the api node after {:?}",
        started.elapsed()
    );
    let found = messages(&api).await?;
    assert_eq!(found.len(), TOTAL, "distinct lines found");
    let doubled = found.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "{doubled} lines found more than once");
    for a in 0..AGENTS {
        for i in [0, LINES / 2, LINES - 1] {
            assert!(found.contains_key(&format!("agent {a} line {i}")));
        }
    }
    // Aggregations merged over both indexers: every host's lines, exactly.
    let counted = api
        .search_with(&[
            ("q", "event.dataset:cluster.test"),
            ("limit", "1"),
            ("agg", "terms:host.name"),
        ])
        .await?;
    assert_eq!(counted["total"].as_u64(), Some(TOTAL as u64));
    let buckets = counted["aggregations"]["terms:host.name"]["buckets"]
        .as_array()
        .context("buckets")?;
    let per_host: BTreeMap<String, u64> = buckets
        .iter()
        .filter_map(|b| Some((b["key"].as_str()?.to_string(), b["doc_count"].as_u64()?)))
        .collect();
    let expected: BTreeMap<String, u64> = (0..AGENTS)
        .map(|a| (format!("host-{a}"), LINES as u64))
        .collect();
    assert_eq!(per_host, expected);
    // The api node takes no batches.
    let refused = api
        .client()?
        .post(format!("{}/api/v1/ingest", api.url))
        .body(Vec::<u8>::new())
        .send()
        .await?
        .status();
    assert_eq!(refused.as_u16(), 404);
    let (through_a, through_b) = (
        batches_accepted(&first).await?,
        batches_accepted(&second).await?,
    );
    assert!(
        through_a > 0 && through_b > 0,
        "batches through a: {through_a}, through b: {through_b}"
    );

    // Four markers, two through each gateway: one correlation match, once, and its alert
    // at the api node.
    let matched = wait_for_correlation(
        &api,
        MARKER_BURST,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await?;
    assert_eq!(matched.len(), 1, "correlation matches: {matched:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = api.get_json("/api/v1/alerts").await?;
        if alerts.to_string().contains(MARKER_BURST) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no alert for the correlation: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    drop(agents);
    drop((indexers, detectors, api, first, second));
    delete_cluster(client, &config).await;
    Ok(())
}
