//! Two `yagura serve --role detector` processes share a cluster's detection. An agent
//! writes two of the four marker lines a correlation needs; once the detector owning the
//! correlation group has snapshotted its window, that detector is SIGKILLed mid-window.
//! The agent writes the other markers: the surviving detector takes the group over (the
//! lease expires, it imports the snapshot and replays the rest) and the correlation
//! fires exactly once at the api node — not twice, not never. Then the killed node comes
//! back and the survivor is killed: the episode moves with the snapshot, and a sixth
//! marker is still the same match.
//!
//! Against the NATS server on 127.0.0.1:4222 (`YAGURA_TEST_NATS_URL`), in streams and
//! buckets of the test's own, deleted at the end. Skipped with the reason without NATS;
//! failing under `YAGURA_TEST_STRICT=1`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use yagura_collector::cluster::detector::{CORRELATE_ROLE, DetectionStreams};
use yagura_collector::cluster::leases;
use yagura_collector::cluster::node::lease_bucket_name;
use yagura_collector::cluster::testing::{delete_cluster, nats_or_skip, own_stream};
use yagura_e2e::{
    Agent, ClusterToml, Collector, MARKER_BURST, append_lines, cluster_detector, marker_rules,
    wait_for_correlation,
};

const PARTITIONS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_killed_mid_window_still_fires_the_correlation_once() -> anyhow::Result<()> {
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
    let gateway = Collector::start_as(&dir.path().join("gw"), &cluster.node("gw"), Some("ingest"))?;
    let rules = marker_rules(dir.path())?;
    let mut detectors = vec![
        ("d1", cluster_detector(dir.path(), "d1", &cluster, &rules)?),
        ("d2", cluster_detector(dir.path(), "d2", &cluster, &rules)?),
    ];
    let api = Collector::start_as(&dir.path().join("api"), &cluster.node("api"), Some("api"))?;
    let log = dir.path().join("app.log");
    append_lines(&log, 0..100, |i| format!("quiet line {i}"))?;
    let sources = format!(
        "[[sources]]\npaths = [\"{}\"]\ndataset = \"cluster.test\"\n",
        log.display()
    );
    let mut agent = Agent::enroll(&dir.path().join("agent"), &gateway, "host-k", &sources)?;
    agent.start()?;
    append_lines(&log, 0..2, |i| format!("marker {i} of the window"))?;

    // The correlator of the group has taken the two markers into its window and
    // snapshotted it: the one key of the state bucket under `correlate.`.
    let context = async_nats::jetstream::new(client.clone());
    let state = context
        .get_key_value(DetectionStreams::of(&config).state_bucket)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = loop {
        let mut keys = state.keys().await?;
        let mut found = None;
        while let Some(key) = keys.next().await {
            if let Some(q) = key?.strip_prefix("correlate.q") {
                found = Some(q.parse::<u32>()?);
            }
        }
        if let Some(q) = found {
            break q;
        }
        anyhow::ensure!(Instant::now() < deadline, "no correlator took the markers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lease_kv = context
        .get_key_value(lease_bucket_name(&config.stream))
        .await?;
    let owner = leases::owners(&lease_kv, CORRELATE_ROLE)
        .await?
        .remove(&q)
        .context("the group's partition has no owner")?;
    assert!(
        wait_for_correlation(&api, MARKER_BURST, Duration::ZERO, Duration::ZERO)
            .await
            .is_err(),
        "fired before the window was full"
    );
    let killed = detectors
        .iter()
        .position(|(name, _)| *name == owner)
        .context("the owner is one of the detectors")?;
    let (_, mut process) = detectors.remove(killed);
    process.kill_hard();

    // The rest of the window, then one more in the same episode.
    append_lines(&log, 2..4, |i| format!("marker {i} of the window"))?;
    let matched = wait_for_correlation(
        &api,
        MARKER_BURST,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await?;
    assert_eq!(matched.len(), 1, "correlation matches: {matched:?}");
    append_lines(&log, 4..5, |i| format!("marker {i} of the window"))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let matched = wait_for_correlation(&api, MARKER_BURST, Duration::ZERO, Duration::ZERO).await?;
    assert_eq!(matched.len(), 1, "correlation matches: {matched:?}");
    // The survivor holds the group now.
    let now = leases::owners(&lease_kv, CORRELATE_ROLE).await?.remove(&q);
    assert_eq!(now.as_deref(), Some(detectors[0].0));

    // The episode survives a crash too: the killed node comes back, the survivor (which
    // fired) is killed in turn once its snapshot is written, and a sixth marker at the
    // returned node continues the same episode — the same match, not a second one.
    let back = cluster_detector(dir.path(), owner.as_str(), &cluster, &rules)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, mut survivor) = detectors.remove(0);
    survivor.kill_hard();
    append_lines(&log, 5..6, |i| format!("marker {i} of the window"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owner_now = leases::owners(&lease_kv, CORRELATE_ROLE).await?.remove(&q);
        if owner_now.as_deref() == Some(owner.as_str()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the returned node never took the group"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let matched = wait_for_correlation(&api, MARKER_BURST, Duration::ZERO, Duration::ZERO).await?;
    assert_eq!(
        matched.len(),
        1,
        "correlation matches after the second crash: {matched:?}"
    );

    drop(agent);
    drop(back);
    drop((detectors, api, gateway));
    delete_cluster(client, &config).await;
    Ok(())
}
