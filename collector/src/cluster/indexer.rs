//! An indexer node: a member of the indexers' consumer group. For every partition it
//! holds a lease on, it runs the collector's indexer ([`crate::index::Indexer`]) over that
//! partition of the stream into the partition's own daily indices
//! (`<index dir>/partitions/p<N>`), each day's commit carrying the stream sequence it
//! covers — so a node that takes a partition over resumes from its own last commit, or
//! indexes the partition from the start when it never held it.
//!
//! A partition is searched only at its current holder ([`super::search`]), so a node's
//! stale copy of a partition it lost never answers twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::search::Shards;
use crate::archive::JetStreamArchive;
use crate::index::{Indexer, IndexerOptions, IndexerStats};

struct Worker {
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    stats: Arc<IndexerStats>,
}

/// The partitions this node indexes, and their searchable indices.
pub struct ClusterIndexer {
    archive: Arc<JetStreamArchive>,
    root: PathBuf,
    options: IndexerOptions,
    shards: Shards,
    workers: BTreeMap<u32, Worker>,
}

impl ClusterIndexer {
    pub fn new(archive: Arc<JetStreamArchive>, index_dir: &Path, options: IndexerOptions) -> Self {
        ClusterIndexer {
            archive,
            root: index_dir.join("partitions"),
            options,
            shards: Shards::default(),
            workers: BTreeMap::new(),
        }
    }

    /// The indices of the partitions held now (what [`super::search::serve`] answers from).
    pub fn shards(&self) -> Shards {
        Arc::clone(&self.shards)
    }

    /// Stream sequence each held partition is indexed up to.
    pub fn indexed(&self) -> BTreeMap<u32, u64> {
        self.workers
            .iter()
            .map(|(p, w)| {
                (
                    *p,
                    w.stats
                        .indexed_offset
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Renews the leases every `renew_every` and follows what they say, until `cancel`;
    /// then stops every partition (each commits) and leaves the group.
    pub async fn run(
        mut self,
        mut leases: Leases,
        renew_every: std::time::Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            match leases.renew().await {
                Ok(changes) => {
                    for partition in changes.surplus {
                        self.stop(partition).await;
                        leases.release(partition).await?;
                        tracing::info!(partition, "partition given back for another indexer");
                    }
                }
                // NATS away: keep indexing what is held; the leases expire on their own
                // if it stays away, and a later renewal says what was lost.
                Err(error) => tracing::warn!(%error, "renewing indexer leases"),
            }
            // The leases held are the truth, whatever a renewal cut short by an error
            // reported: run exactly those.
            self.reconcile(&leases.held()).await;
            tokio::select! {
                () = tokio::time::sleep(renew_every) => {}
                () = cancel.cancelled() => break,
            }
        }
        for partition in self.workers.keys().copied().collect::<Vec<_>>() {
            self.stop(partition).await;
        }
        if let Err(error) = leases.leave().await {
            tracing::warn!(%error, "leaving the indexers");
        }
        Ok(())
    }

    /// Stops the partitions no longer held and workers that died, starts the held ones
    /// that have none (a died worker is restarted at the next round).
    async fn reconcile(&mut self, held: &std::collections::BTreeSet<u32>) {
        let ended: Vec<u32> = self
            .workers
            .iter()
            .filter(|(p, w)| !held.contains(p) || w.thread.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for partition in ended {
            if held.contains(&partition) {
                tracing::warn!(partition, "partition indexer ended; starting it again");
            } else {
                tracing::warn!(partition, "partition taken over by another indexer");
            }
            self.stop(partition).await;
        }
        for partition in held {
            if self.workers.contains_key(partition) {
                continue;
            }
            match self.start(*partition) {
                Ok(()) => tracing::info!(partition, "indexing partition"),
                Err(error) => tracing::error!(
                    partition,
                    error = format!("{error:#}"),
                    "cannot index partition; trying again at the next renewal"
                ),
            }
        }
    }

    fn start(&mut self, partition: u32) -> anyhow::Result<()> {
        let root = self.root.join(format!("p{partition}"));
        let (indexer, index) = Indexer::open(&root, self.options, None)?;
        let reader = self
            .archive
            .partition_reader(partition, indexer.resume_offset())?;
        let stats = indexer.stats();
        let cancel = CancellationToken::new();
        let runtime = tokio::runtime::Handle::current();
        let thread = {
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name(format!("indexer-p{partition}"))
                .spawn(move || {
                    if let Err(error) = indexer.follow(reader, runtime, cancel, |_| {}) {
                        tracing::error!(partition, %error, "partition indexer stopped");
                    }
                })?
        };
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, index);
        self.workers.insert(
            partition,
            Worker {
                cancel,
                thread,
                stats,
            },
        );
        Ok(())
    }

    /// Stops a partition's indexer (it commits what it indexed) and stops answering for it.
    async fn stop(&mut self, partition: u32) {
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
        if let Some(worker) = self.workers.remove(&partition) {
            worker.cancel.cancel();
            if tokio::task::spawn_blocking(move || worker.thread.join())
                .await
                .map_or(true, |joined| joined.is_err())
            {
                tracing::error!(partition, "partition indexer panicked");
            }
        }
    }
}
