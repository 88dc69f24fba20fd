//! Sealing a batch into the spool on a thread of its own, one batch at a time.
//!
//! Compressing, signing and the durable write of batch N overlap with reading and parsing
//! batch N+1; on a busy agent that is a third of the producer's work taken off its path.
//! At most one batch is being sealed: [`SealPipeline::wait_idle`] waits for it before the
//! next one is handed over, which keeps sequence numbers in order and is the backpressure.
//!
//! Nothing is lost on the way. A batch whose seal failed (disk full, I/O error) comes
//! back as a [`SealJob`] and is sealed again before any later batch, with the checkpoints
//! it was handed over with; until then no later checkpoint reaches the spool, so a crash
//! reads its lines again. Even a panic while sealing hands the job back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::Notify;
use uuid::Uuid;
use yagura_shared::{AgentKey, EventLines};

use crate::spool::{Spool, SpoolError};
use crate::tail::Checkpoint;

/// A batch to seal: its events and the checkpoints of every file after its last line.
#[derive(Debug)]
pub(crate) struct SealJob {
    pub lines: EventLines,
    pub checkpoints: Vec<Checkpoint>,
}

/// What a batch is sealed with.
#[derive(Clone)]
struct Sealing {
    spool: Arc<Mutex<Spool>>,
    key: Arc<AgentKey>,
    agent_id: Uuid,
    batch_sealed: Arc<Notify>,
}

impl Sealing {
    /// Seals and commits one batch, then wakes the shipper.
    fn seal(&self, job: &SealJob) -> Result<(), String> {
        let sealer = lock(&self.spool).sealer();
        let batch = sealer
            .seal(&job.lines, &job.checkpoints, &self.key, self.agent_id)
            .and_then(|written| lock(&self.spool).commit(written))
            .map_err(|e: SpoolError| e.to_string())?;
        tracing::debug!(
            sequence = batch.sequence,
            events = batch.event_count,
            bytes = batch.bytes.len(),
            "batch sealed"
        );
        self.batch_sealed.notify_one();
        Ok(())
    }

    /// [`Sealing::seal`], with a panic turned into an error: the job is never lost.
    fn seal_guarded(&self, job: &SealJob) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| self.seal(job)))
            .unwrap_or_else(|_| Err("sealing panicked".into()))
    }
}

/// The result of a sealing thread: the emptied event buffer for reuse, or the job back.
type Sealed = Result<EventLines, (SealJob, String)>;

/// The producer's handle on sealing. See the module docs.
pub(crate) struct SealPipeline {
    sealing: Sealing,
    in_flight: Option<JoinHandle<Sealed>>,
    /// A batch whose seal failed: sealed again before anything else.
    failed: Option<SealJob>,
    /// An event buffer from a sealed batch, capacity kept, for the next pending batch.
    spare: Option<EventLines>,
}

impl SealPipeline {
    pub fn new(
        spool: Arc<Mutex<Spool>>,
        key: Arc<AgentKey>,
        agent_id: Uuid,
        batch_sealed: Arc<Notify>,
    ) -> Self {
        SealPipeline {
            sealing: Sealing {
                spool,
                key,
                agent_id,
                batch_sealed,
            },
            in_flight: None,
            failed: None,
            spare: None,
        }
    }

    /// Waits for the batch being sealed, then seals a failed one again, here. True when
    /// nothing is in flight and nothing failed: the next batch may be handed over.
    pub fn wait_idle(&mut self) -> bool {
        if let Some(handle) = self.in_flight.take() {
            self.settle(handle);
        }
        if let Some(job) = self.failed.take() {
            match self.sealing.seal_guarded(&job) {
                Ok(()) => self.spare = Some(emptied(job.lines)),
                Err(error) => {
                    tracing::error!(%error, events = job.lines.len(), "could not seal a batch; will retry");
                    self.failed = Some(job);
                }
            }
        }
        self.failed.is_none()
    }

    /// Seals with `key` from the next batch on. Only when idle (see [`Self::wait_idle`]):
    /// a batch in flight was numbered for the old key.
    pub fn set_key(&mut self, key: Arc<AgentKey>) {
        debug_assert!(self.in_flight.is_none() && self.failed.is_none());
        self.sealing.key = key;
    }

    /// Takes in a finished seal without waiting for an unfinished one.
    pub fn poll(&mut self) {
        if self.in_flight.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(handle) = self.in_flight.take()
        {
            self.settle(handle);
        }
    }

    /// Whether a failed batch waits to be sealed again.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Starts sealing `job` on its own thread. Call only after [`SealPipeline::wait_idle`]
    /// returned true.
    pub fn submit(&mut self, job: SealJob) {
        debug_assert!(self.in_flight.is_none() && self.failed.is_none());
        let sealing = self.sealing.clone();
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<SealJob>(1);
        let spawned = std::thread::Builder::new()
            .name("sealer".into())
            .spawn(move || -> Sealed {
                let job = job_rx.recv().map_err(|_| {
                    // Unreachable: the job is sent right after the spawn succeeds.
                    (
                        SealJob {
                            lines: EventLines::default(),
                            checkpoints: Vec::new(),
                        },
                        "no job".to_string(),
                    )
                })?;
                match sealing.seal_guarded(&job) {
                    Ok(()) => Ok(emptied(job.lines)),
                    Err(error) => Err((job, error)),
                }
            });
        match spawned {
            Ok(handle) => match job_tx.send(job) {
                Ok(()) => self.in_flight = Some(handle),
                Err(returned) => self.failed = Some(returned.0),
            },
            Err(e) => {
                // No thread to spare: seal here instead.
                tracing::warn!(error = %e, "cannot start a sealing thread; sealing in place");
                self.failed = Some(job);
                self.wait_idle();
            }
        }
    }

    /// An empty event buffer, with the capacity of an earlier batch's where one is spare.
    pub fn take_spare(&mut self) -> EventLines {
        self.spare.take().unwrap_or_default()
    }

    fn settle(&mut self, handle: JoinHandle<Sealed>) {
        match handle.join() {
            Ok(Ok(lines)) => self.spare = Some(lines),
            Ok(Err((job, error))) => {
                tracing::error!(%error, events = job.lines.len(), "could not seal a batch; will retry");
                self.failed = Some(job);
            }
            // `seal_guarded` catches panics and the job is received before it runs, so
            // the thread itself cannot panic.
            Err(_) => tracing::error!("sealing thread ended abnormally"),
        }
    }
}

/// A batch being sealed is finished, not abandoned halfway: the producer is dropped on
/// shutdown and on errors, and a spool opened after that must see the batch whole or not.
impl Drop for SealPipeline {
    fn drop(&mut self) {
        if let Some(handle) = self.in_flight.take() {
            self.settle(handle);
        }
    }
}

impl std::fmt::Debug for SealPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealPipeline")
            .field("in_flight", &self.in_flight.is_some())
            .field("failed", &self.failed.as_ref().map(|j| j.lines.len()))
            .finish()
    }
}

fn emptied(mut lines: EventLines) -> EventLines {
    lines.clear();
    lines
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use yagura_shared::{Event, SignedBatch};

    fn job(messages: &[&str]) -> SealJob {
        let mut lines = EventLines::default();
        for message in messages {
            let mut event = Event::new(Utc::now());
            event.set_str("message", *message);
            lines.push_event(&event);
        }
        SealJob {
            lines,
            checkpoints: Vec::new(),
        }
    }

    fn spooled(spool: &Mutex<Spool>) -> Vec<(u64, Vec<String>)> {
        let batches = lock(spool).oldest_batches(16, usize::MAX).expect("read");
        batches
            .into_iter()
            .map(|b| {
                let events = SignedBatch::from_bytes(b.bytes)
                    .and_then(|s| s.events(1 << 20))
                    .expect("batch");
                let messages = events
                    .iter()
                    .map(|e| e.message().unwrap_or_default().to_string())
                    .collect();
                (b.sequence, messages)
            })
            .collect()
    }

    #[test]
    fn a_failed_seal_is_retried_before_any_later_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Arc::new(Mutex::new(Spool::open(dir.path()).expect("spool")));
        let key = Arc::new(AgentKey::generate().expect("key"));
        let mut pipeline =
            SealPipeline::new(Arc::clone(&spool), key, Uuid::now_v7(), Arc::default());

        // The spool directory is gone: the write fails, on the thread and in place.
        let spool_dir = dir.path().join("spool");
        std::fs::remove_dir_all(&spool_dir).expect("remove");
        assert!(pipeline.wait_idle());
        pipeline.submit(job(&["a1", "a2"]));
        assert!(!pipeline.wait_idle(), "the retry fails too");
        assert!(pipeline.has_failed());

        std::fs::create_dir_all(&spool_dir).expect("recreate");
        assert!(pipeline.wait_idle(), "the failed batch is sealed now");
        pipeline.submit(job(&["b1"]));
        assert!(pipeline.wait_idle());
        assert_eq!(
            spooled(&spool),
            vec![
                (1, vec!["a1".to_string(), "a2".to_string()]),
                (2, vec!["b1".to_string()]),
            ]
        );
    }

    #[test]
    fn dropping_the_pipeline_finishes_the_batch_in_flight() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Arc::new(Mutex::new(Spool::open(dir.path()).expect("spool")));
        let key = Arc::new(AgentKey::generate().expect("key"));
        let mut pipeline =
            SealPipeline::new(Arc::clone(&spool), key, Uuid::now_v7(), Arc::default());
        let big: Vec<String> = (0..5000).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = big.iter().map(String::as_str).collect();
        pipeline.submit(job(&refs));
        drop(pipeline);
        let reopened = Mutex::new(Spool::open(dir.path()).expect("reopen"));
        let batches = spooled(&reopened);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1.len(), 5000);
    }
}
