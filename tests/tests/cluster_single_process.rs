//! `yagura serve --role all` on the JetStream archive: one process is a whole cluster
//! node — gateway, indexer, detector and api at once. A real agent enrolls and ships to
//! it; every line is found once through the fan-out search (answered by the process's own
//! indexer over NATS), and a correlation over four marker lines fires once and becomes
//! an alert.
//!
//! Against the NATS server on 127.0.0.1:4222 (`YAGURA_TEST_NATS_URL`), in streams and
//! buckets of the test's own, deleted at the end. Skipped with the reason without NATS;
//! failing under `YAGURA_TEST_STRICT=1`.

use std::time::Duration;

use yagura_collector::cluster::testing::{delete_cluster, nats_or_skip, own_stream};
use yagura_e2e::{
    Agent, ClusterToml, Collector, MARKER_BURST, append_lines, marker_rules, wait_for_correlation,
};

const LINES: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_runs_every_cluster_role() -> anyhow::Result<()> {
    let Some(client) = nats_or_skip().await else {
        return Ok(());
    };
    let config = own_stream(2);
    let cluster = ClusterToml {
        url: &config.url,
        stream: &config.stream,
        subject_prefix: &config.subject_prefix,
        partitions: 2,
    };
    let dir = tempfile::tempdir()?;
    let rules = marker_rules(dir.path())?;
    let node = Collector::start_as(
        &dir.path().join("node"),
        &format!(
            "{}\n[detect]\nrules = [\"{}\"]\n",
            cluster.node("n1"),
            rules.display()
        ),
        Some("all"),
    )?;
    let log = dir.path().join("app.log");
    append_lines(&log, 0..LINES, |i| {
        let marker = if i % 500 == 7 { " marker" } else { "" };
        format!("single line {i}{marker}")
    })?;
    let sources = format!(
        "[[sources]]\npaths = [\"{}\"]\ndataset = \"cluster.test\"\n",
        log.display()
    );
    let mut agent = Agent::enroll(&dir.path().join("agent"), &node, "host-1", &sources)?;
    agent.start()?;

    node.wait_for_total(
        "event.dataset:cluster.test",
        LINES as u64,
        Duration::from_secs(120),
    )
    .await?;
    let matched = wait_for_correlation(
        &node,
        MARKER_BURST,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await?;
    assert_eq!(matched.len(), 1, "correlation matches: {matched:?}");

    drop(agent);
    drop(node);
    delete_cluster(client, &config).await;
    Ok(())
}
