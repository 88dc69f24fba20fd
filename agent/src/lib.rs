//! The Yagura endpoint agent: tails log files, commits every line together with the file
//! checkpoints to a durable spool of sealed, signed batches, and ships those batches to the
//! collector over pinned HTTPS, deleting each only after the collector has acknowledged it.
//!
//! The stages, one module each:
//!
//! * [`tail`]: resolves the configured paths and globs, reads complete lines from each file's
//!   checkpoint, and turns every line into an [`Event`](yagura_shared::Event). No runtime,
//!   no network: testable alone.
//! * [`spool`]: seals pending events into a [`SignedBatch`](yagura_shared::SignedBatch)
//!   and writes it, with the checkpoints that cover exactly those lines, durably to disk.
//!   A crash at any instant neither loses nor repeats a line.
//! * [`ship`]: sends the oldest spooled batch, byte-identical on every retry, and acks or
//!   rejects it according to the collector's answer.
//! * [`enroll`]: one-time registration of the agent's Ed25519 key with the collector,
//!   pinning the collector's certificate.
//! * [`config`]: the TOML configuration.
//!
//! [`run`] wires them together. It owns no global state, never exits the process and
//! installs no signal handlers, so the collector's `yagura up` can run an agent in-process:
//! cancel the token to stop it cleanly.

pub mod allowlist;
pub mod build_info;
pub mod config;
mod durable;
pub mod enroll;
pub mod handover;
pub mod health;
pub mod inventory;
pub mod loss;
pub mod metrics;
pub mod parse;
pub mod rotate_key;
mod seal;
pub mod ship;
pub mod spool;
pub mod state_lock;
pub mod tail;
#[cfg(test)]
mod test_server;
pub mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use yagura_shared::{Event, EventLines, FlatEvent};

pub use config::{
    AgentConfig, ConfigError, MetricsConfig, MultilineConfig, MultilineMode, ShipConfig,
    SourceConfig, SpoolConfig, StartAt, WatchMode, WhenFull,
};
pub use enroll::{Enrollment, enroll};

/// The agent's version, as sent at enrollment and stamped on every event (`agent.version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often the tailer reads every file even when no file-system notification arrived.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the configured globs are resolved again, so new files are picked up.
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long the shipper may keep draining the spool after shutdown was requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before sealing again after a failed seal (disk full, I/O error).
const SEAL_RETRY: Duration = Duration::from_secs(1);
/// How often a requested key rotation is looked for, and a doubtful one asked about again.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
const ROTATION_RETRY: Duration = Duration::from_secs(5);
/// How often the producer publishes its checkpoints for `/metrics` (per-file lag).
const PUBLISH_CHECKPOINTS_EVERY: Duration = Duration::from_secs(1);

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{} holds no enrollment ({} is missing): run `yagura-agent enroll` first",
        state_dir.display(),
        enroll::ENROLLMENT_FILE
    )]
    NotEnrolled { state_dir: PathBuf },
    #[error(
        "already enrolled as agent {agent_id} (see {}); pass --force to enroll again",
        path.display()
    )]
    AlreadyEnrolled { path: PathBuf, agent_id: String },
    #[error("{}: {reason}", path.display())]
    BadStateFile { path: PathBuf, reason: String },
    // Messages are complete in themselves (the cause is part of the text, not a
    // `source()`), so `{}` and `{:#}` print the same, without repetition.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error("invalid certificate fingerprint {input:?}: {reason}")]
    InvalidFingerprint { input: String, reason: &'static str },
    #[error("invalid collector URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "the collector's certificate does not match the pinned fingerprint: expected {expected}, \
         the collector presented {actual}"
    )]
    FingerprintMismatch { expected: String, actual: String },
    #[error("request to {url} failed: {}", ship::ErrorChain(cause))]
    Request { url: String, cause: reqwest::Error },
    #[error("the collector refused enrollment ({status}): {message}")]
    EnrollmentRefused { status: u16, message: String },
    #[error("the collector's enrollment answer is not understood: {0}")]
    BadEnrollmentAnswer(String),
    #[error("could not build the TLS/HTTP client: {0}")]
    Client(String),
    #[error("could not generate the agent key: {0}")]
    KeyGeneration(String),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error(
        "{} is in use by {holder}: one yagura-agent per state directory (a second one would \
         ship every line twice)",
        state_dir.display()
    )]
    StateDirInUse { state_dir: PathBuf, holder: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }
}

/// Installs rustls' ring provider as the process default; harmless when one already is.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the agent until `shutdown` is cancelled: tail, spool, ship.
///
/// On cancellation the pending lines are sealed into a last batch, the shipper gets up to
/// five seconds to empty the spool, and `run` returns `Ok`. Whatever is still spooled is
/// shipped on the next start.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<()> {
    install_crypto_provider();
    config.validate()?;
    let state_dir = config.state_dir.clone();
    let enrollment = enroll::Enrollment::load(&state_dir)?;
    // Held until `run` returns: nothing below touches the state directory without it.
    let _state_lock = state_lock::acquire(&state_dir)?;
    let key = Arc::new(enroll::load_key(&state_dir)?);
    let host_name = config.resolved_host_name();

    let max_bytes = config.spool.max_bytes;
    let when_full = config.spool.when_full;
    let mut spool = blocking({
        let state_dir = state_dir.clone();
        move || spool::Spool::open(&state_dir)
    })
    .await??;
    spool.set_max_bytes(max_bytes);
    tracing::info!(
        agent_id = %enrollment.agent_id,
        collector = %enrollment.collector_url,
        spooled_batches = spool.len(),
        next_sequence = spool.next_sequence(),
        "agent starting"
    );
    // A key rotation left in doubt by a crash is settled before anything is sealed.
    let mut key = key;
    if rotate_key::pending(&state_dir) {
        let next_sequence = spool.next_sequence();
        loop {
            match rotate_key::settle(&state_dir, &enrollment, &key, next_sequence).await? {
                rotate_key::Settled::InDoubt(reason) => {
                    tracing::error!(%reason, "a key rotation is in doubt; asking the collector again before sealing anything");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(ROTATION_RETRY) => {}
                    }
                }
                settled => {
                    rotate_key::finish_request(&state_dir, &settled);
                    match settled {
                        rotate_key::Settled::Rotated(new, _) => key = Arc::new(*new),
                        rotate_key::Settled::Refused(reason) => {
                            tracing::warn!(%reason, "a pending key rotation was not done; the old key stays");
                        }
                        rotate_key::Settled::InDoubt(_) => {}
                    }
                    break;
                }
            }
        }
    }
    let checkpoints = spool.checkpoints().to_vec();
    let spool = Arc::new(Mutex::new(spool));

    let batch_sealed = Arc::new(Notify::new());
    let space_freed = Arc::new(Notify::new());
    let data_ready = Arc::new(Notify::new());
    let rescan_requested = Arc::new(AtomicBool::new(false));

    let stats = Arc::new(health::AgentStats::default());
    let shipper = ship::Shipper::new(
        &enrollment,
        &config.ship,
        Arc::clone(&spool),
        Arc::clone(&batch_sealed),
        Arc::clone(&space_freed),
    )?
    .with_stats(Arc::clone(&stats));
    // An agent enforcing an allowlist takes the policy its collector assigns it.
    let policy_mailbox = Arc::new(
        config
            .allowlist
            .as_ref()
            .and_then(|a| {
                let signer = yagura_shared::verifying_key_from_base64(&a.signer).ok()?;
                Some(allowlist::runtime::PolicyMailbox::holding(
                    &allowlist::runtime::PolicySource {
                        path: a.policy.clone(),
                        signer,
                    },
                ))
            })
            .unwrap_or_default(),
    );
    let shipper = if config.allowlist.is_some() && config.inventory.enabled {
        shipper.with_allowlist(Arc::clone(&policy_mailbox))
    } else {
        shipper
    };
    // `[metrics] listen`: the endpoint runs until `run` returns, however it returns.
    let metrics_stop = CancellationToken::new();
    let _metrics_stop_on_return = metrics_stop.clone().drop_guard();
    let published_checkpoints = config.metrics.listen.map(|address| {
        let published = metrics::PublishedCheckpoints::default();
        tokio::spawn(metrics::serve(
            address,
            metrics::MetricsSource {
                stats: Arc::clone(&stats),
                spool: Arc::clone(&spool),
                checkpoints: Arc::clone(&published),
            },
            metrics_stop.clone(),
        ));
        published
    });
    let watch_mode = config.watch;
    let heartbeat_every = Duration::from_secs(config.heartbeat_interval_seconds);
    let collector_url = enrollment.collector_url.clone();
    let status_dir = state_dir.clone();

    let sources = config.sources.clone();
    let parsers = sources
        .iter()
        .map(|s| s.parser_setup().unwrap_or_default())
        .collect::<Vec<_>>();
    let patterns: Vec<String> = sources.iter().flat_map(|s| s.paths.clone()).collect();
    // The inventory runs on its own thread; its events join the stream in the producer.
    let inventory_stop = Arc::new(AtomicBool::new(false));
    let inventory_events = if config.inventory.enabled {
        let (sender, receiver) = std::sync::mpsc::sync_channel(8);
        inventory::observe::spawn(
            inventory::observe::Roots::default(),
            tail::EventContext {
                host_name: host_name.clone(),
                agent_id: enrollment.agent_id,
            },
            Duration::from_secs(config.inventory.diff_interval_seconds),
            Duration::from_secs(config.inventory.snapshot_interval_minutes * 60),
            sender,
            Arc::clone(&inventory_stop),
            config.allowlist.as_ref().and_then(|a| {
                let signer = yagura_shared::verifying_key_from_base64(&a.signer).ok()?;
                Some(
                    allowlist::runtime::Enforcer::new(
                        allowlist::runtime::PolicySource {
                            path: a.policy.clone(),
                            signer,
                        },
                        PathBuf::from("/proc"),
                    )
                    .with_mailbox(Arc::clone(&policy_mailbox)),
                )
            }),
        )
        .map_err(|e| Error::io("starting the inventory thread", e))?;
        Some(receiver)
    } else {
        None
    };
    let mut producer = blocking({
        let spool = Arc::clone(&spool);
        let key = Arc::clone(&key);
        let batch_sealed = Arc::clone(&batch_sealed);
        let data_ready = Arc::clone(&data_ready);
        let rescan_requested = Arc::clone(&rescan_requested);
        let agent_id = enrollment.agent_id;
        let ship_config = config.ship.clone();
        move || {
            let tailer = tail::Tailer::new(&sources, checkpoints);
            let watcher = match watch_mode {
                WatchMode::Poll => Err(notify::Error::generic("polling mode configured")),
                WatchMode::Notify => tail::DirWatcher::new(&patterns, move |structural| {
                    if structural {
                        rescan_requested.store(true, Ordering::Relaxed);
                    }
                    data_ready.notify_one();
                }),
            };
            let watcher = match watcher {
                Ok(w) => Some(w),
                Err(e) if watch_mode == WatchMode::Poll => {
                    tracing::info!(reason = %e, "watching files by polling only");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file notifications unavailable, polling only");
                    None
                }
            };
            Producer {
                tailer,
                watcher,
                context: tail::EventContext {
                    host_name,
                    agent_id,
                },
                pending: EventLines::default(),
                scratch: FlatEvent::new(),
                first_pending_at: None,
                parsers,
                max_events: ship_config.batch_max_events,
                max_bytes: ship_config.batch_max_bytes,
                pending_bytes: 0,
                when_full,
                health: HealthReporter {
                    stats,
                    every: heartbeat_every,
                    last: None,
                    collector_url,
                    state_dir: status_dir,
                    published: published_checkpoints,
                    last_published: None,
                },
                max_wait: Duration::from_millis(ship_config.batch_max_wait_ms),
                last_rescan: Instant::now(),
                seal_retry_at: None,
                sealing: seal::SealPipeline::new(
                    Arc::clone(&spool),
                    Arc::clone(&key),
                    agent_id,
                    batch_sealed,
                ),
                spool,
                inventory: inventory_events,
            }
        }
    })
    .await?;

    // The collector's certificate hand-overs reach the shipper's pins.
    let handover_task = match (shipper.pins(), config.ship.handover_check_seconds) {
        (Some(pins), seconds) if seconds > 0 => Some(tokio::spawn(handover::run(
            state_dir.clone(),
            pins,
            Duration::from_secs(seconds),
            Duration::from_millis(config.ship.request_timeout_ms),
            shutdown.clone(),
        ))),
        _ => None,
    };
    // Nothing fallible is left between spawning the shipper and stopping it below.
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let mut shipper_task = tokio::spawn(shipper.run(drain.clone(), stop.clone()));

    // The first step runs at once: the files may hold lines already, and no watch event
    // will announce those.
    let mut more_ready = true;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut rotation_checked = Instant::now();
    // Set while the collector may hold a new key the agent could not confirm: nothing may
    // be sealed with the old one (not even at shutdown) until it is settled.
    let mut rotation_in_doubt = false;
    let ended: Result<Producer> = loop {
        if rotation_checked.elapsed() >= ROTATION_CHECK && rotate_key::requested(&state_dir) {
            rotation_checked = Instant::now();
            let idle = blocking(move || {
                let ready = producer.sealing.wait_idle();
                let next = producer.lock_spool().next_sequence();
                (producer, ready, next)
            })
            .await;
            let next = match idle {
                Ok((back, ready, next)) => {
                    producer = back;
                    ready.then_some(next)
                }
                Err(e) => break Err(e),
            };
            if let Some(next) = next {
                // An error with a pending key left (reading it back, say) is a doubt too.
                let in_doubt =
                    |result: Result<rotate_key::Settled>, state_dir: &std::path::Path| match result
                    {
                        Err(e) if rotate_key::pending(state_dir) => {
                            Ok(rotate_key::Settled::InDoubt(e.to_string()))
                        }
                        other => other,
                    };
                let mut settled = in_doubt(
                    rotate_key::rotate(&state_dir, &enrollment, &key, next).await,
                    &state_dir,
                );
                while let Ok(rotate_key::Settled::InDoubt(reason)) = &settled {
                    rotation_in_doubt = true;
                    tracing::error!(%reason, "a key rotation is in doubt; asking the collector again before sealing anything");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ROTATION_RETRY) => {}
                    }
                    settled = in_doubt(
                        rotate_key::settle(&state_dir, &enrollment, &key, next).await,
                        &state_dir,
                    );
                }
                match settled {
                    Ok(rotate_key::Settled::InDoubt(_)) => break Ok(producer),
                    Ok(settled) => {
                        rotation_in_doubt = false;
                        rotate_key::finish_request(&state_dir, &settled);
                        if let rotate_key::Settled::Rotated(new, _) = settled {
                            key = Arc::new(*new);
                            producer.sealing.set_key(Arc::clone(&key));
                        }
                    }
                    Err(e) => {
                        rotate_key::finish_request(
                            &state_dir,
                            &rotate_key::Settled::Refused(e.to_string()),
                        );
                    }
                }
            }
        } else if rotation_checked.elapsed() >= ROTATION_CHECK {
            rotation_checked = Instant::now();
        }
        if more_ready {
            if shutdown.is_cancelled() {
                break Ok(producer);
            }
            tokio::task::yield_now().await;
        } else {
            let seal_at = deadline;
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(producer),
                _ = data_ready.notified() => {}
                _ = space_freed.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = sleep_until_opt(seal_at), if seal_at.is_some() => {}
            }
        }
        let force_rescan = rescan_requested.swap(false, Ordering::Relaxed);
        let stepped = blocking(move || {
            let outcome = producer.step(force_rescan);
            (producer, outcome)
        })
        .await;
        match stepped {
            Ok((back, outcome)) => {
                producer = back;
                more_ready = outcome.more_ready;
                deadline = outcome.seal_deadline.map(tokio::time::Instant::from_std);
            }
            Err(e) => {
                // The producer is lost with its pending lines; they were never committed
                // and are read again on the next start.
                break Err(e);
            }
        }
    };

    inventory_stop.store(true, Ordering::Relaxed);
    let mut producer = match ended {
        Ok(producer) => producer,
        Err(e) => {
            stop.cancel();
            log_join(shipper_task.await);
            return Err(e);
        }
    };
    // Shutdown: seal what is pending, then let the shipper drain for a while (unless a
    // key rotation is in doubt: the lines are read again after it is settled).
    if rotation_in_doubt {
        tracing::warn!("not sealing the pending lines: a key rotation is in doubt");
        drain.cancel();
        stop.cancel();
        log_join(shipper_task.await);
        return Ok(());
    }
    match blocking(move || producer.seal_pending()).await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            tracing::warn!("pending lines could not be sealed; they will be read again on restart")
        }
    }
    drain.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut shipper_task).await {
        Ok(joined) => log_join(joined),
        Err(_) => {
            stop.cancel();
            log_join(shipper_task.await);
        }
    }
    if let Some(task) = handover_task {
        task.abort();
    }
    let left = spool.lock().unwrap_or_else(|p| p.into_inner()).len();
    tracing::info!(unshipped_batches = left, "agent stopped");
    Ok(())
}

fn log_join(joined: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "shipper task failed");
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Runs blocking file-system work off the async worker threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))
}

/// Heartbeat and status-file state of the producer.
struct HealthReporter {
    stats: Arc<health::AgentStats>,
    every: Duration,
    last: Option<Instant>,
    collector_url: String,
    state_dir: PathBuf,
    /// Where the checkpoints go for `/metrics` (`[metrics] listen` set), and when they
    /// last went.
    published: Option<metrics::PublishedCheckpoints>,
    last_published: Option<Instant>,
}

/// What one [`Producer::step`] did, for the loop deciding when to step again.
#[derive(Debug)]
struct StepOutcome {
    /// The tailer filled the whole request: more lines are probably waiting.
    more_ready: bool,
    /// When the pending partial batch must be sealed.
    seal_deadline: Option<Instant>,
}

/// The synchronous half of the agent: tailer plus the pending (not yet sealed) batch.
///
/// Invariant: every line the tailer has handed out is in `pending`, in the batch being
/// sealed (or waiting to be sealed again) by `sealing`, or in a sealed batch. The tailer is
/// asked for at most `max_events - pending.len()` lines, and a seal always takes all of
/// `pending` with the tailer's checkpoints of that moment, so a batch's checkpoints cover
/// exactly its lines and all earlier ones — never a line still only in memory.
struct Producer {
    tailer: tail::Tailer,
    watcher: Option<tail::DirWatcher>,
    context: tail::EventContext,
    pending: EventLines,
    /// The event being built for each line, reused (its buffers stay allocated).
    scratch: FlatEvent,
    first_pending_at: Option<Instant>,
    /// Per source: its parser and parse context.
    parsers: Vec<(parse::ParserKind, parse::ParseContext)>,
    max_events: usize,
    /// Seal once the pending events' text reaches this many bytes.
    max_bytes: usize,
    pending_bytes: usize,
    when_full: WhenFull,
    health: HealthReporter,
    max_wait: Duration,
    last_rescan: Instant,
    seal_retry_at: Option<Instant>,
    /// Seals full batches on a thread of their own while the next one is read.
    sealing: seal::SealPipeline,
    spool: Arc<Mutex<spool::Spool>>,
    /// Inventory events from the inventory thread (`[inventory] enabled`).
    inventory: Option<std::sync::mpsc::Receiver<Vec<Event>>>,
}

impl Producer {
    fn step(&mut self, force_rescan: bool) -> StepOutcome {
        self.sealing.poll();
        let now = Instant::now();
        if force_rescan || now.duration_since(self.last_rescan) >= RESCAN_INTERVAL {
            self.tailer.rescan();
            if let Some(watcher) = &mut self.watcher {
                watcher.refresh();
            }
            self.last_rescan = now;
        }
        self.record_losses();
        let mut spool_full = self.lock_spool().is_full();
        if spool_full && self.when_full == WhenFull::DropOldest {
            self.drop_to_make_room();
            spool_full = self.lock_spool().is_full();
        }
        let room = self.max_events.saturating_sub(self.pending.len());
        let mut more_ready = false;
        if !spool_full && room > 0 {
            let lines = self.tailer.poll(room);
            more_ready = lines.len() == room;
            if !lines.is_empty() && self.first_pending_at.is_none() {
                self.first_pending_at = Some(Instant::now());
            }
            self.health
                .stats
                .lines_read
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
            self.pending_bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
            let now = chrono::Utc::now();
            for (_, context) in &mut self.parsers {
                // Year inference of year-less timestamps is relative to "now".
                context.reference_time = now;
            }
            for line in lines {
                let event = &mut self.scratch;
                event.clear();
                line.write_event(&self.context, event);
                match self.parsers.get(line.source) {
                    Some((parse::ParserKind::Auditd, _)) => {
                        // The tailer joined the records of one audit event with `\n`.
                        let group = parse::AuditdGroup {
                            first: (),
                            lines: line.text.split('\n').map(str::to_string).collect(),
                        };
                        group.write_into_flat(event);
                    }
                    Some((kind, context)) => parse::parse_flat(*kind, &line.text, context, event),
                    None => {}
                }
                self.pending.push_flat(event);
            }
        }
        let due = self
            .first_pending_at
            .is_some_and(|t| t.elapsed() >= self.max_wait);
        let retry_ok = self.seal_retry_at.is_none_or(|t| Instant::now() >= t);
        self.take_inventory();
        self.heartbeat_if_due();
        self.publish_checkpoints_if_due();
        let full_batch =
            self.pending.len() >= self.max_events || self.pending_bytes >= self.max_bytes;
        let failed = self.sealing.has_failed();
        if retry_ok && (failed || (!self.pending.is_empty() && (full_batch || due))) {
            let sealed = self.start_seal();
            // The batch filled up (lines plus loss events): more lines may be waiting.
            if sealed && full_batch {
                more_ready = true;
            }
        }
        if spool_full {
            // Offsets hold until the shipper frees space; the loop wakes on `space_freed`.
            more_ready = false;
        }
        let seal_deadline = match self.first_pending_at {
            Some(t) => {
                let at = t + self.max_wait;
                Some(self.seal_retry_at.map_or(at, |r| at.max(r)))
            }
            None if self.sealing.has_failed() => self.seal_retry_at,
            None => None,
        };
        StepOutcome {
            more_ready,
            seal_deadline,
        }
    }

    /// Seals all pending events with the tailer's current checkpoints. Returns whether the
    /// pending batch is now empty.
    /// Hands the pending batch to the sealing thread, after the batch before it is
    /// sealed. False when a batch whose seal failed is still waiting (retried later).
    fn start_seal(&mut self) -> bool {
        if !self.sealing.wait_idle() {
            self.seal_retry_at = Some(Instant::now() + SEAL_RETRY);
            return false;
        }
        self.seal_retry_at = None;
        if self.pending.is_empty() {
            return true;
        }
        let lines = std::mem::replace(&mut self.pending, self.sealing.take_spare());
        self.sealing.submit(seal::SealJob {
            lines,
            checkpoints: self.tailer.checkpoints(),
        });
        self.pending_bytes = 0;
        self.first_pending_at = None;
        true
    }

    /// Seals everything pending and waits until it is in the spool (shutdown, tests).
    fn seal_pending(&mut self) -> bool {
        self.start_seal() && self.sealing.wait_idle()
    }

    /// Turns the tailer's and the spool's losses into loss events in the pending batch.
    fn record_losses(&mut self) {
        let tail_losses = self.tailer.take_losses();
        let spool_losses = self.lock_spool().take_losses();
        if tail_losses.is_empty() && spool_losses.is_empty() {
            return;
        }
        for lost in &tail_losses {
            self.pending
                .push_event(&loss::from_tail(lost, &self.context));
        }
        for lost in spool_losses {
            let events = loss::from_spool(lost, &self.context);
            self.count_lost(&events);
            for event in &events {
                self.pending.push_event(event);
            }
        }
        self.first_pending_at.get_or_insert_with(Instant::now);
    }

    /// `drop_oldest`: drops unsent batches until the spool has room. Their loss events
    /// go into the pending batch and are sealed with the next lines, so a dropped batch is
    /// replaced by a few small events and the spool makes room instead of churning.
    fn drop_to_make_room(&mut self) {
        loop {
            let dropped = {
                let mut spool = self.lock_spool();
                if !spool.is_full() {
                    break;
                }
                spool.drop_oldest_unsent()
            };
            match dropped {
                Ok(Some(lost)) => {
                    let events = loss::from_spool(lost, &self.context);
                    self.count_lost(&events);
                    for event in &events {
                        self.pending.push_event(event);
                    }
                    self.first_pending_at.get_or_insert_with(Instant::now);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "could not drop a spooled batch");
                    break;
                }
            }
        }
    }

    /// Adds the newly dropped events to the `events_lost` counter (merged, carried-over
    /// tallies are counted once, when first dropped).
    fn count_lost(&self, events: &[Event]) {
        let fresh: u64 = events
            .iter()
            .filter(|e| e.get("yagura.loss.batch_sequence").is_some())
            .filter_map(|e| {
                e.get("yagura.loss.events")
                    .and_then(serde_json::Value::as_u64)
            })
            .sum();
        self.health
            .stats
            .events_lost
            .fetch_add(fresh, Ordering::Relaxed);
    }

    /// Inventory events waiting from the inventory thread, into the pending batch while it
    /// has room (the rest wait in the channel, which then holds the inventory back).
    fn take_inventory(&mut self) {
        let Some(inventory) = &self.inventory else {
            return;
        };
        while self.pending.len() < self.max_events {
            let Ok(events) = inventory.try_recv() else {
                break;
            };
            for event in &events {
                self.pending.push_event(event);
            }
            self.first_pending_at.get_or_insert_with(Instant::now);
        }
    }

    /// With `/metrics` on, at most once a second: the tailer's checkpoints, from which a
    /// scrape computes each file's lag.
    fn publish_checkpoints_if_due(&mut self) {
        let Some(published) = &self.health.published else {
            return;
        };
        if self
            .health
            .last_published
            .is_some_and(|t| t.elapsed() < PUBLISH_CHECKPOINTS_EVERY)
        {
            return;
        }
        self.health.last_published = Some(Instant::now());
        let checkpoints = self.tailer.checkpoints();
        if let Ok(mut slot) = published.lock() {
            *slot = checkpoints;
        }
    }

    /// Every heartbeat interval: a heartbeat event into the stream and `status.json`.
    fn heartbeat_if_due(&mut self) {
        if self
            .health
            .last
            .is_some_and(|t| t.elapsed() < self.health.every)
        {
            return;
        }
        self.health.last = Some(Instant::now());
        let checkpoints = self.tailer.checkpoints();
        let (spool_batches, spool_bytes) = {
            let spool = self.lock_spool();
            (spool.len(), spool.bytes())
        };
        let status = health::Status::take(health::Snapshot {
            stats: &self.health.stats,
            context: &self.context,
            collector_url: &self.health.collector_url,
            spool_batches,
            spool_bytes,
            checkpoints: &checkpoints,
        });
        if let Err(e) = status.write(&self.health.state_dir) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
        self.pending.push_event(&status.heartbeat(&self.context));
        self.first_pending_at.get_or_insert_with(Instant::now);
    }

    fn lock_spool(&self) -> std::sync::MutexGuard<'_, spool::Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use uuid::Uuid;
    use yagura_shared::AgentKey;

    fn producer(state_dir: &Path, log: &Path, max_events: usize) -> Producer {
        let source = SourceConfig {
            paths: vec![log.to_string_lossy().into_owned()],
            ..SourceConfig::default()
        };
        let spool = spool::Spool::open(state_dir).expect("spool");
        let checkpoints = spool.checkpoints().to_vec();
        let spool = Arc::new(Mutex::new(spool));
        let agent_id = Uuid::now_v7();
        Producer {
            tailer: tail::Tailer::new(&[source], checkpoints),
            watcher: None,
            context: tail::EventContext {
                host_name: "test-host".into(),
                agent_id,
            },
            pending: EventLines::default(),
            scratch: FlatEvent::new(),
            first_pending_at: None,
            parsers: vec![(parse::ParserKind::Raw, parse::ParseContext::default())],
            max_events,
            max_bytes: 64 << 20,
            pending_bytes: 0,
            when_full: WhenFull::Block,
            health: HealthReporter {
                stats: Arc::default(),
                every: Duration::from_secs(3600),
                last: Some(Instant::now()),
                collector_url: "https://collector.invalid".into(),
                state_dir: state_dir.to_path_buf(),
                published: None,
                last_published: None,
            },
            max_wait: Duration::from_secs(3600),
            last_rescan: Instant::now(),
            seal_retry_at: None,
            sealing: seal::SealPipeline::new(
                Arc::clone(&spool),
                Arc::new(AgentKey::generate().expect("key")),
                agent_id,
                Arc::new(Notify::new()),
            ),
            spool,
            inventory: None,
        }
    }

    /// The messages of all spooled batches, in sequence order.
    fn spooled_messages(dir: &Path) -> Vec<String> {
        spooled_events(dir)
            .iter()
            .map(|e| e.message().expect("message").to_string())
            .collect()
    }

    fn spooled_events(dir: &Path) -> Vec<Event> {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("spool"))
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "batch"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                spool::read_batch_file(f)
                    .expect("batch")
                    .1
                    .events(1 << 24)
                    .expect("events")
            })
            .collect()
    }

    /// A producer whose single source uses `parser`.
    fn parsing_producer(state: &Path, log: &Path, parser: &str) -> Producer {
        let mut p = producer(state, log, 100);
        let source = SourceConfig {
            paths: vec![log.to_string_lossy().into_owned()],
            parser: parser.into(),
            ..SourceConfig::default()
        };
        p.tailer = tail::Tailer::new(std::slice::from_ref(&source), Vec::new());
        p.parsers = vec![source.parser_setup().expect("parser")];
        p
    }

    #[test]
    fn the_configured_parser_fills_ecs_fields() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("auth.log");
        std::fs::write(
            &log,
            "2026-11-24T00:32:37.604537+00:00 web-1 sshd[123]: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2\n",
        )
        .expect("write");
        let mut p = parsing_producer(&dir.path().join("state"), &log, "linux-auth");
        while p.step(false).more_ready {}
        p.seal_pending();
        let events = spooled_events(&dir.path().join("state"));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.get_str("source.ip"), Some("203.0.113.7"));
        assert_eq!(e.get_str("user.name"), Some("admin"));
        assert_eq!(e.outcome(), Some("failure"));
        assert_eq!(e.get_str("@timestamp"), Some("2026-11-24T00:32:37.604537Z"));
        assert_eq!(
            e.get_str("log.file.path"),
            Some(log.to_string_lossy().as_ref())
        );
        assert!(e.original().is_some_and(|o| o.contains("Failed password")));
    }

    #[test]
    fn auditd_records_of_one_serial_become_one_event() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("audit.log");
        std::fs::write(
            &log,
            concat!(
                "type=SYSCALL msg=audit(1700000000.123:42): arch=c000003e syscall=59 success=yes exit=0 pid=7 uid=0 comm=\"id\" exe=\"/usr/bin/id\"\n",
                "type=EXECVE msg=audit(1700000000.123:42): argc=1 a0=\"id\"\n",
                "type=PATH msg=audit(1700000000.123:42): item=0 name=\"/usr/bin/id\"\n",
                "type=SYSCALL msg=audit(1700000001.000:43): arch=c000003e syscall=2 success=no exit=-13 pid=8 uid=1000 comm=\"cat\" exe=\"/usr/bin/cat\"\n",
            ),
        )
        .expect("write");
        let state = dir.path().join("state");
        let mut p = parsing_producer(&state, &log, "auditd");
        while p.step(false).more_ready {}
        p.seal_pending();
        let events = spooled_events(&state);
        assert_eq!(events.len(), 1, "serial 43 waits for more records");
        assert_eq!(
            events[0].get("auditd.sequence"),
            Some(&serde_json::json!(42))
        );
        assert_eq!(events[0].original().map(|o| o.lines().count()), Some(3));
        // Serial 43's record is not committed yet: the checkpoint stays at its start.
        let start_of_43 = std::fs::read_to_string(&log)
            .expect("read")
            .lines()
            .take(3)
            .map(|l| l.len() + 1)
            .sum::<usize>();
        assert_eq!(p.tailer.checkpoints()[0].offset, start_of_43 as u64);
    }

    /// Under `drop_oldest` with a tiny spool and no collector: every line written is
    /// either still spooled or counted, exactly, by a loss event.
    #[test]
    fn drop_oldest_accounts_for_every_dropped_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        let mut f = std::fs::File::create(&log).expect("create");
        let mut p = producer(&state, &log, 50);
        p.when_full = WhenFull::DropOldest;
        p.lock_spool().set_max_bytes(8 * 1024);
        let total = 5_000;
        for i in 0..total {
            writeln!(
                f,
                "line {i} with some padding to make batches weigh something"
            )
            .expect("write");
            if i % 250 == 249 {
                while p.step(false).more_ready {}
                p.seal_pending();
            }
        }
        while p.step(false).more_ready {}
        p.seal_pending();
        let mut kept = 0u64;
        let mut lost = 0u64;
        for file in std::fs::read_dir(state.join("spool"))
            .expect("dir")
            .flatten()
        {
            if file.path().extension().is_none_or(|x| x != "batch") {
                continue;
            }
            let (_, batch) = spool::read_batch_file(&file.path()).expect("batch");
            for e in batch.events(1 << 24).expect("events") {
                if e.dataset() == Some(loss::LOSS_DATASET) {
                    lost += e
                        .get("yagura.loss.events")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                } else {
                    kept += 1;
                }
            }
        }
        assert!(lost > 0, "the spool really overflowed");
        assert_eq!(kept + lost, total, "kept {kept} + lost {lost}");
        assert!(
            p.lock_spool().bytes() < 64 * 1024,
            "the bound holds roughly"
        );
    }

    /// Crashes (dropping the producer with lines pending in memory) at many points, with
    /// lines appended between steps: across all restarts every line is spooled exactly once.
    #[test]
    fn checkpoints_sealed_with_a_batch_cover_exactly_its_lines() {
        for crash_every in 1..=4 {
            let dir = tempfile::tempdir().expect("tmp");
            let state = dir.path().join("state");
            let log = dir.path().join("app.log");
            let mut f = std::fs::File::create(&log).expect("create");
            let mut written = 0;
            let mut p = producer(&state, &log, 7);
            for round in 0..20 {
                for _ in 0..(round * 3 + crash_every) % 11 {
                    writeln!(f, "line {written}").expect("write");
                    written += 1;
                }
                p.step(false);
                if round % crash_every == 0 {
                    drop(p); // crash: pending lines were never committed
                    p = producer(&state, &log, 7);
                }
            }
            // Drain what is left, then seal the partial batch.
            while p.step(false).more_ready {}
            assert!(p.seal_pending());
            let want: Vec<String> = (0..written).map(|i| format!("line {i}")).collect();
            assert_eq!(
                spooled_messages(&state),
                want,
                "crash every {crash_every} steps"
            );
        }
    }
}

#[cfg(test)]
mod run_tests {
    //! The whole agent against a scripted HTTPS collector.
    use super::*;
    use crate::test_server::{Request, Response, TestServer};
    use serde_json::json;
    use std::io::Write;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use yagura_shared::{AgentKey, SignedBatch, parse_header};

    /// A collector that enrolls anyone and answers ingest with `ingest(n, request)`, `n`
    /// counting ingest requests from 0.
    fn collector(
        ingest: impl Fn(usize, &Request) -> Response + Send + Sync + 'static,
    ) -> TestServer {
        let agent_id = uuid::Uuid::now_v7();
        let count = AtomicUsize::new(0);
        TestServer::start(move |req| match req.path.as_str() {
            "/api/v1/enroll" => Response::json(200, json!({ "agent_id": agent_id })),
            "/api/v1/ingest" => ingest(count.fetch_add(1, Ordering::SeqCst), req),
            _ => Response::json(404, json!({})),
        })
    }

    fn accept(req: &Request) -> Response {
        let sequence = parse_header(&req.body).map(|h| h.sequence).unwrap_or(0);
        Response::json(200, json!({"status": "accepted", "sequence": sequence}))
    }

    fn config(state: &Path, log: &Path, max_events: usize, max_wait_ms: u64) -> AgentConfig {
        let mut config = AgentConfig::new(state);
        config.host_name = Some("test-host".into());
        config.ship.batch_max_events = max_events;
        config.ship.batch_max_wait_ms = max_wait_ms;
        config.ship.max_backoff_ms = 200;
        config.sources.push(SourceConfig {
            paths: vec![log.to_string_lossy().into_owned()],
            dataset: "test.run".into(),
            start_at: StartAt::Beginning,
            ..SourceConfig::default()
        });
        config
    }

    fn append_lines(log: &Path, range: std::ops::Range<usize>) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open");
        for i in range {
            writeln!(f, "line {i}").expect("write");
        }
    }

    /// Messages of the batches the collector accepted (status 200), in order.
    fn accepted_messages(server: &TestServer, key: &AgentKey) -> Vec<String> {
        let mut out = Vec::new();
        let mut last_sequence = 0;
        for req in server.requests() {
            if req.path != "/api/v1/ingest" || req.answered != 200 {
                continue;
            }
            let batch = SignedBatch::from_bytes(req.body.clone()).expect("batch");
            batch.verify(&key.verifying_key()).expect("signature");
            if batch.header().sequence <= last_sequence {
                continue; // a retry of a batch not accepted before, or a duplicate
            }
            last_sequence = batch.header().sequence;
            for event in batch.events(1 << 24).expect("events") {
                assert_eq!(event.host_name(), Some("test-host"));
                if event.dataset() == Some(health::HEARTBEAT_DATASET) {
                    // The first heartbeat goes out at start; it is checked on its own.
                    continue;
                }
                assert_eq!(event.dataset(), Some("test.run"));
                out.push(event.message().expect("message").to_string());
            }
        }
        out
    }

    /// A state directory enrolled with `server` (pinned) and a log of lines 0 to 9, in a
    /// temporary directory (`state/`, `app.log`); the agent's key.
    async fn enrolled_with_ten_lines(server: &TestServer) -> (tempfile::TempDir, AgentKey) {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        append_lines(&dir.path().join("app.log"), 0..10);
        enroll(
            &state,
            &server.url,
            "t",
            Some(&server.fingerprint),
            "h",
            false,
        )
        .await
        .expect("enroll");
        let key = enroll::load_key(&state).expect("key");
        (dir, key)
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_agent_or_a_forced_enrollment_is_refused_while_one_runs() {
        let server = collector(|_, req| accept(req));
        let (dir, key) = enrolled_with_ten_lines(&server).await;
        let (state, log) = (dir.path().join("state"), dir.path().join("app.log"));
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 100, 50), shutdown.clone()));
        wait_for("10 lines", || accepted_messages(&server, &key).len() == 10).await;

        let second = tokio::time::timeout(
            Duration::from_secs(10),
            run(config(&state, &log, 100, 50), CancellationToken::new()),
        )
        .await
        .expect("a second agent returns at once instead of running");
        let refused = second.expect_err("a second agent on the same state directory");
        assert!(
            matches!(refused, Error::StateDirInUse { .. })
                && refused
                    .to_string()
                    .contains(&format!("process {}", std::process::id())),
            "{refused}"
        );
        let forced = enroll(&state, &server.url, "t", None, "h", true).await;
        assert!(
            matches!(forced, Err(Error::StateDirInUse { .. })),
            "{forced:?}"
        );
        append_lines(&log, 10..12);
        wait_for("12 lines", || accepted_messages(&server, &key).len() == 12).await;
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");
        assert_eq!(
            accepted_messages(&server, &key),
            lines(0..12),
            "each line once"
        );
        // Released with the run: the next start takes it.
        drop(state_lock::acquire(&state).expect("free after the run"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_while_it_runs_and_stops_with_it() {
        let server = collector(|_, req| accept(req));
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        append_lines(&log, 0..5);
        enroll(&state, &server.url, "t", None, "h", false)
            .await
            .expect("enroll");
        let key = enroll::load_key(&state).expect("key");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut config = config(&state, &log, 100, 50);
        config.metrics.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        install_crypto_provider();
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config, shutdown.clone()));
        wait_for("5 lines", || accepted_messages(&server, &key).len() == 5).await;
        let url = format!("http://127.0.0.1:{port}/metrics");
        let client = reqwest::Client::new();
        let path = log.display().to_string();
        let start = Instant::now();
        let text = loop {
            let text = match client.get(&url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            // Shipped, and the file's lag published (at most a second late).
            if text.contains("yagura_agent_batches_shipped_total 1")
                && text.contains(&format!(
                    "yagura_agent_file_lag_bytes{{path=\"{path}\"}} 0\n"
                ))
            {
                break text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "metrics never showed the shipped batch:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for line in [
            "yagura_agent_lines_read_total 5\n",
            "yagura_agent_events_lost_total 0\n",
            "yagura_agent_spool_batches 0\n",
            "# TYPE process_cpu_seconds_total counter\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");
        // The endpoint went away with the agent.
        let mut gone = false;
        for _ in 0..50 {
            if client.get(&url).send().await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the metrics endpoint outlived the agent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ships_every_line_once_resending_identical_bytes() {
        // The first upload is answered 503 (Retry-After: 0), every later one accepted.
        let server = collector(|n, req| {
            if n == 0 {
                let mut r = Response::json(503, json!({"title": "busy"}));
                r.headers.push(("Retry-After".into(), "0".into()));
                r
            } else {
                accept(req)
            }
        });
        let (dir, key) = enrolled_with_ten_lines(&server).await;
        let (state, log) = (dir.path().join("state"), dir.path().join("app.log"));

        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 3, 50), shutdown.clone()));
        wait_for("10 lines", || accepted_messages(&server, &key).len() == 10).await;
        append_lines(&log, 10..12);
        wait_for("12 lines", || accepted_messages(&server, &key).len() == 12).await;
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");

        assert_eq!(accepted_messages(&server, &key), lines(0..12));
        let ingests: Vec<Request> = server
            .requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/ingest")
            .collect();
        assert_eq!(
            ingests[0].body, ingests[1].body,
            "the retry sends identical bytes"
        );
        assert_eq!(
            ingests[0].header("content-type"),
            Some("application/octet-stream")
        );
        let sequences: Vec<u64> = ingests[1..]
            .iter()
            .map(|r| parse_header(&r.body).expect("header").sequence)
            .collect();
        let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
        assert_eq!(sequences, expected, "sequences start at 1 and have no gaps");
        assert!(sequences.len() >= 4, "batches of at most 3 events");

        // A restart resumes after the acked lines: only new lines are shipped.
        let spool = spool::Spool::open(&state).expect("spool");
        assert!(spool.is_empty());
        assert_eq!(spool.next_sequence(), sequences.len() as u64 + 1);
        drop(spool);
        append_lines(&log, 12..13);
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 3, 50), shutdown.clone()));
        wait_for("line 12", || accepted_messages(&server, &key).len() == 13).await;
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");
        assert_eq!(accepted_messages(&server, &key), lines(0..13));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_seals_pending_lines_and_drains() {
        let server = collector(|_, req| accept(req));
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        enroll(&state, &server.url, "t", None, "h", false)
            .await
            .expect("enroll");
        let key = enroll::load_key(&state).expect("key");
        append_lines(&log, 0..5);
        let shutdown = CancellationToken::new();
        // A partial batch would wait a minute: only the shutdown seals it.
        let agent = tokio::spawn(run(config(&state, &log, 1000, 60_000), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(accepted_messages(&server, &key).is_empty());
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");
        assert_eq!(accepted_messages(&server, &key), lines(0..5));
        assert!(spool::Spool::open(&state).expect("spool").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_collector_keeps_batches_and_stops_in_time() {
        let server = collector(|_, _| Response::json(503, json!({"title": "down"})));
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        enroll(&state, &server.url, "t", None, "h", false)
            .await
            .expect("enroll");
        append_lines(&log, 0..4);
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 2, 20), shutdown.clone()));
        wait_for("two uploads", || server.requests().len() >= 3).await;
        shutdown.cancel();
        let stopped = Instant::now();
        agent.await.expect("join").expect("run ok");
        assert!(stopped.elapsed() < DRAIN_TIMEOUT + Duration::from_secs(2));
        let mut spool = spool::Spool::open(&state).expect("spool");
        assert_eq!(
            spool.len(),
            2,
            "both batches stay spooled for the next start"
        );
        assert_eq!(spool.oldest().expect("read").map(|b| b.sequence), Some(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejected_batch_is_set_aside_and_the_next_one_shipped() {
        let server = collector(|n, req| {
            if n == 0 {
                Response::json(
                    413,
                    json!({"title": "Payload Too Large", "detail": "too big"}),
                )
            } else {
                accept(req)
            }
        });
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        enroll(&state, &server.url, "t", None, "h", false)
            .await
            .expect("enroll");
        let key = enroll::load_key(&state).expect("key");
        append_lines(&log, 0..4);
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 2, 20), shutdown.clone()));
        // The rejected batch (lines 0 and 1) is not resent; the next one goes through.
        wait_for("second batch", || {
            accepted_messages(&server, &key) == lines(2..4)
        })
        .await;
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");
        let rejected: Vec<_> = std::fs::read_dir(state.join("spool").join("rejected"))
            .expect("rejected dir")
            .collect();
        assert_eq!(rejected.len(), 1);
        let spool = spool::Spool::open(&state).expect("spool");
        assert!(spool.is_empty());
        assert_eq!(spool.last_acked_sequence(), 2);
    }

    #[tokio::test]
    async fn run_without_enrollment_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = run(AgentConfig::new(dir.path()), CancellationToken::new())
            .await
            .expect_err("not enrolled");
        assert!(err.to_string().contains("yagura-agent enroll"), "{err}");
    }

    /// Whether batch `index` of upload `n` (bundle or single, counted together) was
    /// accepted by the collector of
    /// `a_bundle_is_settled_in_order_up_to_the_first_batch_to_retry`, `partial` being the
    /// upload whose batches from the third on were answered 503.
    fn upload_accepted(n: usize, index: usize, partial: Option<usize>) -> bool {
        n > 0 && (partial != Some(n) || index < 2)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bundle_is_settled_in_order_up_to_the_first_batch_to_retry() {
        // The first upload is answered 503 with `Retry-After: 1`, so that every batch is
        // spooled by the time the first bundle of three or more goes out; of that one the
        // first two batches are accepted and the rest answered 503; every other upload is
        // accepted.
        let agent_id = uuid::Uuid::now_v7();
        let uploads = AtomicUsize::new(0);
        let partial_at = Mutex::new(None);
        let server = TestServer::start(move |req| {
            let single = match req.path.as_str() {
                "/api/v1/enroll" => return Response::json(200, json!({ "agent_id": agent_id })),
                "/api/v1/ingest" => true,
                "/api/v1/ingest/bundle" => false,
                _ => return Response::json(404, json!({})),
            };
            let n = uploads.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                let mut r = Response::json(503, json!({"title": "busy"}));
                r.headers.push(("Retry-After".into(), "1".into()));
                return r;
            }
            if single {
                return accept(req);
            }
            let batches = yagura_shared::bundle::decode_bundle(&req.body).expect("bundle");
            let partial = {
                let mut at = partial_at.lock().expect("lock");
                if at.is_none() && batches.len() >= 3 {
                    *at = Some(n);
                }
                *at
            };
            let results: Vec<serde_json::Value> = batches
                .iter()
                .enumerate()
                .map(|(i, batch)| {
                    let sequence = parse_header(batch).expect("header").sequence;
                    if upload_accepted(n, i, partial) {
                        json!({"status": 200, "sequence": sequence, "outcome": "accepted"})
                    } else {
                        json!({"status": 503, "sequence": sequence, "detail": "busy",
                               "retry_after_seconds": 0})
                    }
                })
                .collect();
            Response::json(200, json!({ "results": results }))
        });
        let (dir, key) = enrolled_with_ten_lines(&server).await;
        let (state, log) = (dir.path().join("state"), dir.path().join("app.log"));
        // The uploads, each as its batches, and which one was answered in part.
        let uploads_of = |server: &TestServer| -> (Vec<Vec<Vec<u8>>>, Option<usize>) {
            let uploads: Vec<Vec<Vec<u8>>> = server
                .requests()
                .into_iter()
                .filter_map(|r| match r.path.as_str() {
                    "/api/v1/ingest" => Some(vec![r.body]),
                    "/api/v1/ingest/bundle" => Some(
                        yagura_shared::bundle::decode_bundle(&r.body)
                            .expect("bundle")
                            .into_iter()
                            .map(<[u8]>::to_vec)
                            .collect(),
                    ),
                    _ => None,
                })
                .collect();
            // Singles are never answered in part, and no bundle of one is sent.
            let partial = (1..uploads.len()).find(|&n| uploads[n].len() >= 3);
            (uploads, partial)
        };
        let accepted = |server: &TestServer| {
            let mut sequences = Vec::new();
            let mut messages = Vec::new();
            let (uploads, partial) = uploads_of(server);
            for (n, batches) in uploads.into_iter().enumerate() {
                for (i, bytes) in batches.into_iter().enumerate() {
                    if !upload_accepted(n, i, partial) {
                        continue;
                    }
                    let batch = SignedBatch::from_bytes(bytes).expect("batch");
                    batch.verify(&key.verifying_key()).expect("signature");
                    sequences.push(batch.header().sequence);
                    for event in batch.events(1 << 24).expect("events") {
                        if event.dataset() == Some("test.run") {
                            messages.push(event.message().expect("message").to_string());
                        }
                    }
                }
            }
            (sequences, messages)
        };

        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run(config(&state, &log, 2, 20), shutdown.clone()));
        wait_for("10 lines", || accepted(&server).1.len() >= 10).await;
        shutdown.cancel();
        agent.await.expect("join").expect("run ok");

        let (sequences, messages) = accepted(&server);
        assert_eq!(messages, lines(0..10), "every line accepted once, in order");
        let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
        assert_eq!(sequences, expected, "no batch accepted twice, none skipped");
        let (uploads, partial) = uploads_of(&server);
        let partial = partial.expect("a bundle of three or more: some to ack, some to retry");
        assert_eq!(
            uploads[partial + 1][0],
            uploads[partial][2],
            "the first batch to retry is sent next, unchanged"
        );
        let spool = spool::Spool::open(&state).expect("spool");
        assert!(spool.is_empty());
        assert_eq!(
            spool.last_acked_sequence(),
            *sequences.last().expect("some")
        );
        let left: Vec<_> = std::fs::read_dir(state.join("spool"))
            .expect("spool dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "batch"))
            .collect();
        assert!(left.is_empty(), "acked batch files deleted: {left:?}");
    }
}
