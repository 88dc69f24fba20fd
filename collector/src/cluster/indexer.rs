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
    /// Told to end, not yet ended: (partition, worker, release its lease when done).
    stopping: Vec<(u32, Worker, bool)>,
}

impl ClusterIndexer {
    pub fn new(archive: Arc<JetStreamArchive>, index_dir: &Path, options: IndexerOptions) -> Self {
        ClusterIndexer {
            archive,
            root: index_dir.join("partitions"),
            options,
            shards: Shards::default(),
            workers: BTreeMap::new(),
            stopping: Vec::new(),
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
    ///
    /// Stopping a partition (commit, writer closed) can take seconds on a loaded machine,
    /// so it never holds up this loop: the other leases must be renewed meanwhile, or
    /// they expire and move. A partition given back is released only once its indexer
    /// has committed and ended.
    pub async fn run(
        mut self,
        mut leases: Leases,
        renew_every: std::time::Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let renewing = std::time::Instant::now();
            let renewed = leases.renew().await;
            tracing::debug!(
                took_ms = renewing.elapsed().as_millis() as u64,
                held = ?leases.held(),
                ok = renewed.is_ok(),
                "indexer leases renewed"
            );
            if renewing.elapsed() > renew_every {
                tracing::warn!(
                    took_ms = renewing.elapsed().as_millis() as u64,
                    "renewing the leases took longer than the renewal interval; partitions \
                     may move (a loaded machine or NATS server)"
                );
            }
            match renewed {
                Ok(changes) => {
                    for partition in changes.surplus {
                        self.begin_stop(partition, true);
                    }
                }
                // NATS away: keep indexing what is held; the leases expire on their own
                // if it stays away, and a later renewal says what was lost.
                Err(error) => tracing::warn!(%error, "renewing indexer leases"),
            }
            self.finish_stops(&mut leases).await;
            // The leases held are the truth, whatever a renewal cut short by an error
            // reported: run exactly those.
            self.reconcile(&leases.held());
            tokio::select! {
                () = tokio::time::sleep(renew_every) => {}
                () = cancel.cancelled() => break,
            }
        }
        for partition in self.workers.keys().copied().collect::<Vec<_>>() {
            self.begin_stop(partition, false);
        }
        for (partition, worker, _) in std::mem::take(&mut self.stopping) {
            join(partition, worker).await;
        }
        if let Err(error) = leases.leave().await {
            tracing::warn!(%error, "leaving the indexers");
        }
        Ok(())
    }

    /// Stops answering for `partition` and tells its indexer to commit and end; the
    /// lease is released once it has (`release`) — see [`Self::finish_stops`].
    fn begin_stop(&mut self, partition: u32, release: bool) {
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
        if let Some(worker) = self.workers.remove(&partition) {
            worker.cancel.cancel();
            self.stopping.push((partition, worker, release));
        }
    }

    /// Joins the indexers that have ended and releases the leases given back.
    async fn finish_stops(&mut self, leases: &mut Leases) {
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stopping)
            .into_iter()
            .partition(|(_, worker, _)| worker.thread.is_finished());
        self.stopping = running;
        for (partition, worker, release) in ended {
            join(partition, worker).await;
            if release {
                match leases.release(partition).await {
                    Ok(()) => tracing::info!(partition, "partition given back for another indexer"),
                    Err(error) => tracing::warn!(partition, %error, "giving a partition back"),
                }
            }
        }
    }

    /// Stops the partitions no longer held and workers that died, starts the held ones
    /// that have none (a died worker is restarted at the next round; a partition whose
    /// indexer is still stopping waits for it).
    fn reconcile(&mut self, held: &std::collections::BTreeSet<u32>) {
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
            self.begin_stop(partition, false);
        }
        for partition in held {
            if self.workers.contains_key(partition)
                || self.stopping.iter().any(|(p, _, _)| p == partition)
            {
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
                    background_priority();
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
}

/// Waits for a stopped partition indexer's thread (it has been told to end).
async fn join(partition: u32, worker: Worker) {
    if tokio::task::spawn_blocking(move || worker.thread.join())
        .await
        .map_or(true, |joined| joined.is_err())
    {
        tracing::error!(partition, "partition indexer panicked");
    }
}

/// Indexing is background work; lease renewals, search answers and the NATS server
/// itself must not wait behind it. Lowers this thread's priority (nice 10) and so that
/// of the tantivy threads it starts, which inherit it. Without it a node indexing flat
/// out on a loaded machine was seen missing its renewals and losing its partitions.
fn background_priority() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), 10) {
        tracing::debug!(%error, "indexer thread keeps its priority");
    }
}
