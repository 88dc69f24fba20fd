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
    let archive = Arc::new(
        JetStreamArchive::open(jetstream_config.clone())
            .await
            .context("opening the JetStream archive")?,
    );
    let client = crate::archive::connect_nats(&jetstream_config.url, &format!("yagura-{node}"))
        .await
        .context("connecting to NATS")?;
    let context = jetstream::new(client.clone());
    let kv = leases::bucket(
        &context,
        &lease_bucket_name(&jetstream_config.stream),
        config.cluster.lease(),
        jetstream_config.replicas,
    )
    .await?;
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
