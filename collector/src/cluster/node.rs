//! Running one role of a cluster as a process (`yagura serve --role ...`).

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::indexer::ClusterIndexer;
use super::leases::{self, Leases, Member};
use super::search;
use crate::archive::JetStreamArchive;
use crate::config::CollectorConfig;

/// What a started node tells its caller.
#[derive(Debug, Clone)]
pub struct NodeStarted {
    pub name: String,
    pub stream: String,
    pub partitions: u32,
}

/// The bucket of a cluster's leases: named after its stream.
pub fn lease_bucket_name(stream: &str) -> String {
    format!("{stream}_LEASES")
}

/// What a consumer-group node opens first.
struct Connected {
    archive: Arc<JetStreamArchive>,
    /// The node's own connection (named after it in the server's connection list).
    client: async_nats::Client,
    context: jetstream::Context,
    /// The cluster's lease bucket.
    leases: async_nats::jetstream::kv::Store,
}

async fn connect(config: &CollectorConfig, node: &str) -> anyhow::Result<Connected> {
    let jetstream_config = &config.archive.jetstream;
    let archive = Arc::new(
        JetStreamArchive::open(jetstream_config.clone())
            .await
            .context("opening the JetStream archive")?,
    );
    let client = crate::archive::connect_nats(&jetstream_config.url, &format!("yagura-{node}"))
        .await
        .context("connecting to NATS")?;
    let context = jetstream::new(client.clone());
    let leases = leases::bucket(
        &context,
        &lease_bucket_name(&jetstream_config.stream),
        config.cluster.lease(),
        jetstream_config.replicas,
    )
    .await?;
    Ok(Connected {
        archive,
        client,
        context,
        leases,
    })
}

/// Runs an indexer node until `shutdown`: takes its share of the partitions, indexes them
/// into the data directory and answers shard searches for them; on shutdown each
/// partition commits and the leases are given back, so the others take over at once.
pub async fn run_indexer(
    config: CollectorConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(&NodeStarted),
) -> anyhow::Result<()> {
    let jetstream_config = config.archive.jetstream.clone();
    let node = config.cluster.node_name();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let Connected {
        archive,
        client,
        context: _,
        leases: kv,
    } = connect(&config, &node).await?;
    let indexer = ClusterIndexer::new(
        Arc::clone(&archive),
        &config.index_dir(),
        config.indexer_options(),
    );
    let serving = tokio::spawn(search::serve(
        client,
        search::search_subject(&jetstream_config.stream, &node),
        indexer.shards(),
        shutdown.clone(),
    ));
    let member = Member {
        node: node.clone(),
        url: None,
        fingerprint: None,
    };
    let leases = Leases::new(
        kv,
        search::INDEXER_ROLE,
        member,
        jetstream_config.partitions,
    );
    started(&NodeStarted {
        name: node,
        stream: jetstream_config.stream.clone(),
        partitions: jetstream_config.partitions,
    });
    let result = indexer
        .run(leases, config.cluster.renew_every(), shutdown.clone())
        .await;
    shutdown.cancel();
    let _ = serving.await;
    result
}

/// Runs a detector node until `shutdown`: routes the archive partitions it holds and
/// correlates the matched partitions it holds ([`super::detector`]); on shutdown each
/// worker writes its position and state and the leases are given back.
pub async fn run_detector(
    config: CollectorConfig,
    shutdown: CancellationToken,
    started: impl FnOnce(&NodeStarted),
) -> anyhow::Result<()> {
    use super::detector::{self, DetectionStreams, DetectorNode};
    let jetstream_config = config.archive.jetstream.clone();
    let node = config.cluster.node_name();
    anyhow::ensure!(
        !config.detect.rules.is_empty(),
        "a detector needs rules: set [detect] rules to the rule directories"
    );
    let pipeline = crate::detect::ecs_pipeline().map_err(anyhow::Error::msg)?;
    let rules = crate::detect::load_rules(&config.detect.rules, &pipeline)
        .map_err(|problem| anyhow::anyhow!("loading detection rules: {problem}"))?;
    for problem in &rules.errors {
        tracing::error!(%problem, "detection rule file left out");
    }
    // The rules must compile here, not in every worker.
    let compiled =
        crate::detect::Detector::new(&rules, pipeline.clone()).map_err(anyhow::Error::msg)?;
    for title in compiled.chained_correlations() {
        tracing::warn!(
            correlation = %title,
            "a correlation over another correlation's matches is not routed by cluster \
             detectors: it fires only where its group and the feeding group land together"
        );
    }
    let streams = DetectionStreams::of(&jetstream_config);
    let Connected {
        archive,
        client: _,
        context,
        leases: kv,
    } = connect(&config, &node).await?;
    let matched = Arc::new(
        JetStreamArchive::open(streams.matched.clone())
            .await
            .context("opening the matched-events stream")?,
    );
    detector::detections_stream(&context, &streams, jetstream_config.replicas).await?;
    let state = detector::state_bucket(&context, &streams, jetstream_config.replicas).await?;
    let member = Member {
        node: node.clone(),
        url: None,
        fingerprint: None,
    };
    let partitions = jetstream_config.partitions;
    let routes = Leases::new(kv.clone(), detector::ROUTE_ROLE, member.clone(), partitions);
    let correlations = Leases::new(kv, detector::CORRELATE_ROLE, member, partitions);
    tracing::info!(
        rules = rules.detection_rules(),
        correlations = rules.correlation_rules(),
        "detection rules loaded"
    );
    let worker = Arc::new(DetectorNode {
        archive,
        matched,
        context,
        state,
        streams,
        rules: Arc::new(rules),
        pipeline,
        max_decompressed: config.ingest.max_decompressed_bytes,
        stats: Arc::default(),
    });
    // Recorded before the node says it runs: what is archived from now on is detected.
    worker.detection_start().await?;
    started(&NodeStarted {
        name: node,
        stream: jetstream_config.stream.clone(),
        partitions,
    });
    worker
        .run(routes, correlations, config.cluster.renew_every(), shutdown)
        .await
}
