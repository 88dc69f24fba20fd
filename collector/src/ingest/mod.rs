//! Ingest: the checks a batch passes before the collector takes responsibility for it.
//!
//! In order, each with its own answer (the HTTP layer has already refused a body larger
//! than `max_body_bytes` from its `Content-Length`, before reading it, with 413):
//!
//! 1. **Backpressure** — when the slowest archive consumer (the indexer) is more than
//!    `max_consumer_lag_bytes` behind, 429 with `Retry-After`; nothing is read.
//! 2. **Envelope** — structure of the signed batch (400).
//! 3. **Agent** — known (401), not revoked (401), not the collector's own identity (401).
//! 4. **Signature** — payload hash and Ed25519 signature (401).
//! 5. **Clock** — creation time within `max_batch_age` in the past and
//!    `max_clock_ahead` in the future (400, the skew in the detail). The past bound is
//!    generous on purpose: an agent re-sends batches it sealed before an outage.
//! 6. **Sequence** — a sequence already archived is acknowledged again (`duplicate`) and
//!    stored never twice; a sequence *below* the last one is also raised as a `replay`
//!    security event (an agent only ever re-sends its oldest unacknowledged batch).
//! 7. **Rate** — per-agent token bucket in events per second (429, `Retry-After`).
//! 8. **Payload** — decompression under `min(max_decompressed_bytes, ratio × compressed)`
//!    (decompression bomb: 413), zstd and NDJSON (400), every event valid and naming this
//!    agent (400), count as declared (400).
//! 9. **Archive** — append and fsync; a sequence above `last + 1` is accepted and the
//!    missing range raised as a `yagura.collector.gap` event.
//!
//! A bundle's batches ([`BatchIngest::ingest_all`]) get the same checks in the same order,
//! steps 1–7 one batch after the other; step 8, most of the CPU, runs for all of them in
//! parallel, and step 9 hands the valid ones to the archive together (one fsync).
//!
//! Only then does the agent get its ack, so a batch is either acknowledged and on disk, or
//! not acknowledged and still in the agent's spool. Every refusal that smells of an attack
//! is reported to [`CollectorEvents`] (security events, aggregated there).

mod payload;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;
use yagura_shared::{BatchError, BatchHeader, SignedBatch};

use crate::archive::{AppendBatch, Appended, Archive};
use crate::collector_events::{CollectorEvents, SecurityReport};
use crate::fleet::{AgentRegistry, FleetState, Heartbeat};

/// Limits applied to every batch.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest request body accepted, checked before and while reading it.
    pub max_body_bytes: usize,
    /// Largest decompressed payload: guards against decompression bombs.
    pub max_decompressed_bytes: usize,
    /// Largest ratio of decompressed to compressed payload size.
    pub max_decompression_ratio: u32,
    /// How old a batch's creation time may be.
    pub max_batch_age: Duration,
    /// How far in the future a batch's creation time may be.
    pub max_clock_ahead: Duration,
    /// Sustained events per second per agent; 0 turns the per-agent limit off.
    pub agent_events_per_second: u32,
    /// Events an agent may send in a burst above its sustained rate.
    pub agent_burst_events: u32,
    /// Archive bytes the slowest consumer may lag before ingest answers 429; 0 = no limit.
    pub max_consumer_lag_bytes: u64,
}

/// Why a batch was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// 400.
    #[error("{0}")]
    Malformed(String),
    /// 400, the skew in the detail.
    #[error("{0}")]
    ClockSkew(String),
    /// 401.
    #[error("unknown agent {0}")]
    UnknownAgent(Uuid),
    /// 401.
    #[error("agent {0} is revoked")]
    RevokedAgent(Uuid),
    /// 401.
    #[error("batch does not verify: {0}")]
    Unverified(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 429 with `Retry-After`.
    #[error("{detail}")]
    SlowDown {
        detail: String,
        retry_after_seconds: u64,
    },
    /// 503 with `Retry-After`.
    #[error("collector cannot store batches right now: {0}")]
    Unavailable(String),
}

impl Rejection {
    /// Whether the agent settles the batch for good on this answer (400, 413: it sets the
    /// batch aside) rather than sending it again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Rejection::Malformed(_) | Rejection::ClockSkew(_) | Rejection::TooLarge(_)
        )
    }

    /// The `reason` label of `yagura_ingest_batches_rejected_total`: one fixed word per
    /// variant, so the label's values are bounded whatever the detail says.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejection::Malformed(_) => RejectReason::Malformed,
            Rejection::ClockSkew(_) => RejectReason::ClockSkew,
            Rejection::UnknownAgent(_) => RejectReason::UnknownAgent,
            Rejection::RevokedAgent(_) => RejectReason::RevokedAgent,
            Rejection::Unverified(_) => RejectReason::Unverified,
            Rejection::TooLarge(_) => RejectReason::TooLarge,
            Rejection::SlowDown { .. } => RejectReason::SlowDown,
            Rejection::Unavailable(_) => RejectReason::Unavailable,
        }
    }
}

/// Why a batch was refused, without the detail: what operators count and alert on
/// (a rise of `unverified` is an attack or a broken agent key, `slow_down` an indexer
/// that cannot keep up, `unavailable` a collector that cannot store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a batch, an undecodable payload or bundle, an invalid event (400).
    Malformed,
    /// Created outside the allowed clock window (400).
    ClockSkew,
    /// Signed by an agent the collector does not know (401).
    UnknownAgent,
    /// Signed by a revoked agent (401).
    RevokedAgent,
    /// Signature or payload hash wrong, or the collector's own identity claimed (401).
    Unverified,
    /// An oversized body or a decompression bomb (413).
    TooLarge,
    /// Backpressure or the agent's rate limit (429).
    SlowDown,
    /// The archive or the database could not take it (503).
    Unavailable,
}

impl RejectReason {
    /// Every reason, in label order (each gets a series, zero included, so a rule on
    /// one of them always has something to evaluate).
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Malformed,
        RejectReason::ClockSkew,
        RejectReason::UnknownAgent,
        RejectReason::RevokedAgent,
        RejectReason::Unverified,
        RejectReason::TooLarge,
        RejectReason::SlowDown,
        RejectReason::Unavailable,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::ClockSkew => "clock_skew",
            RejectReason::UnknownAgent => "unknown_agent",
            RejectReason::RevokedAgent => "revoked_agent",
            RejectReason::Unverified => "unverified",
            RejectReason::TooLarge => "too_large",
            RejectReason::SlowDown => "slow_down",
            RejectReason::Unavailable => "unavailable",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What ingest decided since start, for `/metrics`: batches archived, acknowledged again
/// as duplicates and refused by reason, and the events and bytes archived. Counted where
/// [`BatchIngest::ingest`] decides, so every batch is counted exactly once.
#[derive(Debug, Default)]
pub struct IngestStats {
    batches_accepted: AtomicU64,
    batches_duplicate: AtomicU64,
    events_accepted: AtomicU64,
    bytes_accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl IngestStats {
    /// Batches appended to the archive.
    pub fn batches_accepted(&self) -> u64 {
        self.batches_accepted.load(Ordering::Relaxed)
    }

    /// Batches whose sequence was already archived (acknowledged, not stored again).
    pub fn batches_duplicate(&self) -> u64 {
        self.batches_duplicate.load(Ordering::Relaxed)
    }

    /// Events in the archived batches (as their headers declare, checked at ingest).
    pub fn events_accepted(&self) -> u64 {
        self.events_accepted.load(Ordering::Relaxed)
    }

    /// Bytes of the archived signed batches, as received (compressed).
    pub fn bytes_accepted(&self) -> u64 {
        self.bytes_accepted.load(Ordering::Relaxed)
    }

    /// Batches refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts a refusal. The API calls it for the refusals it makes before a batch
    /// reaches [`BatchIngest::ingest`] (an oversized body, an undecodable bundle).
    pub fn count_rejection(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn count_accepted(&self, events: u32, bytes: usize) {
        self.batches_accepted.fetch_add(1, Ordering::Relaxed);
        self.events_accepted
            .fetch_add(u64::from(events), Ordering::Relaxed);
        self.bytes_accepted
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn count_duplicate(&self) {
        self.batches_duplicate.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the agent is told when its batch is acknowledged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ack {
    pub status: &'static str,
    pub sequence: u64,
    /// The agent whose signature the batch carries (for the answer's extras).
    #[serde(skip)]
    pub agent_id: uuid::Uuid,
    /// The allowlist policy assigned to the agent, when it holds another (set by the
    /// HTTP layer, which knows what the agent holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<yagura_shared::policy_delivery::DeliveredPolicy>,
}

struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// Refills at `rate` per second up to `capacity`, then takes `cost` tokens; or says
    /// in how many whole seconds (at least 1) enough tokens will be there.
    fn take(&mut self, cost: f64, rate: f64, capacity: f64, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.updated = now;
        let cost = cost.min(capacity);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Ok(());
        }
        Err(((cost - self.tokens) / rate).ceil().max(1.0) as u64)
    }
}

/// `Err` with the skew in words when `created_at_ms` is outside the allowed window.
fn clock_skew(
    created_at_ms: i64,
    now_ms: i64,
    max_age: Duration,
    max_ahead: Duration,
) -> Result<(), String> {
    let skew_ms = created_at_ms.saturating_sub(now_ms);
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let max_ahead_ms = i64::try_from(max_ahead.as_millis()).unwrap_or(i64::MAX);
    if skew_ms < -max_age_ms || skew_ms > max_ahead_ms {
        return Err(format!(
            "batch creation time is {:.1} s {} the collector's clock; allowed: {} s in the past, \
             {} s in the future",
            skew_ms.unsigned_abs() as f64 / 1000.0,
            if skew_ms < 0 { "behind" } else { "ahead of" },
            max_age.as_secs(),
            max_ahead.as_secs()
        ));
    }
    Ok(())
}

/// Where one batch of an upload stands after pass one of [`BatchIngest::ingest_all`].
enum Screened {
    /// Decided already: refused, or acknowledged as a duplicate.
    Decided(Result<Ack, Rejection>),
    /// Passed everything but the payload check.
    Admitted(Admitted),
}

/// A batch whose envelope, agent, signature, clock, sequence and rate passed.
struct Admitted {
    batch: SignedBatch,
    header: BatchHeader,
    /// The most bytes its payload may decompress to.
    limit: usize,
}

/// Where one batch stands after pass two: its payload checked, or decided before.
enum Checked {
    Decided(Result<Ack, Rejection>),
    Payload(Admitted, Result<Option<Heartbeat>, PayloadFault>),
}

/// Where one batch stands in pass three.
enum Slot {
    Decided(Result<Ack, Rejection>),
    /// Handed to the archive; answered by the archive's result in the same position.
    Appending {
        header: BatchHeader,
        heartbeat: Option<Heartbeat>,
        size: usize,
    },
}

/// Why a payload failed its check.
enum PayloadFault {
    /// Not zstd, over the size limit, not NDJSON, an invalid event, a wrong count.
    Batch(BatchError),
    /// An event (on this 1-based payload line) names another agent than the batch.
    ForeignAgent { line: usize },
}

/// Decompresses and checks every event of an admitted batch; its last heartbeat's
/// figures if it has one. CPU work: called off the async workers when there are several.
fn check_payload(admitted: &Admitted) -> Result<Option<Heartbeat>, PayloadFault> {
    let Admitted {
        batch,
        header,
        limit,
    } = admitted;
    let agent_id = header.agent_id.to_string();
    let ndjson = batch
        .decompressed_payload(*limit)
        .map_err(PayloadFault::Batch)?;
    if let Some(verdict) = payload::validate_fast(&ndjson, header.event_count, &agent_id) {
        return Ok(verdict
            .heartbeats
            .iter()
            .rev()
            .find_map(Heartbeat::from_event));
    }
    drop(ndjson);
    // The full check decides, with its precise error.
    let events = batch.events(*limit).map_err(PayloadFault::Batch)?;
    if let Some(line) = events
        .iter()
        .position(|e| e.agent_id().is_some_and(|id| id != agent_id))
    {
        return Err(PayloadFault::ForeignAgent { line: line + 1 });
    }
    Ok(events.iter().rev().find_map(Heartbeat::from_event))
}

/// Pass two: the payload check of every admitted batch, in parallel on the blocking
/// pool when there are several (one is checked in place: no hand-over to pay for).
async fn check_payloads(screened: Vec<Screened>) -> Vec<Checked> {
    let admitted = screened
        .iter()
        .filter(|s| matches!(s, Screened::Admitted(_)))
        .count();
    if admitted <= 1 {
        return screened
            .into_iter()
            .map(|step| match step {
                Screened::Decided(result) => Checked::Decided(result),
                Screened::Admitted(admitted) => {
                    let verdict = check_payload(&admitted);
                    Checked::Payload(admitted, verdict)
                }
            })
            .collect();
    }
    enum Task {
        Decided(Result<Ack, Rejection>),
        Running(tokio::task::JoinHandle<(Admitted, Result<Option<Heartbeat>, PayloadFault>)>),
    }
    let tasks: Vec<Task> = screened
        .into_iter()
        .map(|step| match step {
            Screened::Decided(result) => Task::Decided(result),
            Screened::Admitted(admitted) => Task::Running(tokio::task::spawn_blocking(move || {
                let verdict = check_payload(&admitted);
                (admitted, verdict)
            })),
        })
        .collect();
    let mut checked = Vec::with_capacity(tasks.len());
    for task in tasks {
        checked.push(match task {
            Task::Decided(result) => Checked::Decided(result),
            Task::Running(handle) => match handle.await {
                Ok((admitted, verdict)) => Checked::Payload(admitted, verdict),
                Err(e) => Checked::Decided(Err(Rejection::Unavailable(format!(
                    "payload check failed: {e}"
                )))),
            },
        });
    }
    checked
}

/// Verifies batches and appends them to the archive.
pub struct BatchIngest<A: Archive> {
    archive: Arc<A>,
    agents: AgentRegistry,
    fleet: FleetState,
    events: CollectorEvents,
    limits: IngestLimits,
    buckets: Mutex<HashMap<Uuid, TokenBucket>>,
    stats: IngestStats,
}

impl<A: Archive> BatchIngest<A> {
    pub fn new(
        archive: Arc<A>,
        agents: AgentRegistry,
        fleet: FleetState,
        events: CollectorEvents,
        limits: IngestLimits,
    ) -> Self {
        BatchIngest {
            archive,
            agents,
            fleet,
            events,
            limits,
            buckets: Mutex::default(),
            stats: IngestStats::default(),
        }
    }

    pub fn limits(&self) -> IngestLimits {
        self.limits
    }

    /// The archive batches go to (health checks read its end and its consumers).
    pub fn archive(&self) -> &A {
        &self.archive
    }

    /// What ingest decided since start (`/metrics`).
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Where refusals are reported (the API reports the ones it makes itself there too).
    pub fn collector_events(&self) -> &CollectorEvents {
        &self.events
    }

    fn refuse(
        &self,
        action: &'static str,
        peer: Option<IpAddr>,
        agent: Option<Uuid>,
        rejection: Rejection,
    ) -> Rejection {
        self.events.security(SecurityReport {
            action,
            peer,
            claimed_agent: agent,
            reason: rejection.to_string(),
        });
        rejection
    }

    /// Runs every check on `body` (sent from `peer`) and archives it; returns the ack.
    /// Every refusal is counted by its reason in [`Self::stats`].
    pub async fn ingest(&self, body: Vec<u8>, peer: Option<IpAddr>) -> Result<Ack, Rejection> {
        self.ingest_all(vec![body], peer)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Rejection::Unavailable("the batch got no answer".into())))
    }

    /// Takes the batches of one upload strictly in order. Each gets every check a single
    /// upload gets, in the same order; what differs is only the work's schedule: the
    /// payload checks (decompression and every event: most of the CPU) of all of them
    /// run in parallel off the async workers, and the accepted ones are handed to the
    /// archive together, so they share one fsync.
    ///
    /// The answers are in the batches' order and end at the first batch to be retried
    /// (a refusal that is not [`Rejection::is_final`]): no batch is archived ahead of an
    /// earlier one still to come, because a later sequence archived first would make the
    /// earlier one a replay. Every refusal answered is counted in [`Self::stats`].
    pub async fn ingest_all(
        &self,
        bodies: Vec<Vec<u8>>,
        peer: Option<IpAddr>,
    ) -> Vec<Result<Ack, Rejection>> {
        // Pass one, in order and cheap: everything but the payload.
        let mut screened = Vec::with_capacity(bodies.len());
        for body in bodies {
            let step = self
                .screen(body, peer)
                .await
                .unwrap_or_else(|rejection| Screened::Decided(Err(rejection)));
            let retry = matches!(&step, Screened::Decided(Err(r)) if !r.is_final());
            screened.push(step);
            if retry {
                break;
            }
        }
        // Pass two, in parallel: the payloads of the admitted batches.
        let checked = check_payloads(screened).await;
        // Pass three: the valid batches go to the archive in order, in one hand-over.
        let mut slots = Vec::with_capacity(checked.len());
        let mut appends = Vec::new();
        for step in checked {
            match step {
                // Nothing after a batch to be retried may be stored (a payload check that
                // could not run ends the bundle here).
                Checked::Decided(Err(rejection)) if !rejection.is_final() => {
                    slots.push(Slot::Decided(Err(rejection)));
                    break;
                }
                Checked::Decided(result) => slots.push(Slot::Decided(result)),
                Checked::Payload(admitted, Ok(heartbeat)) => {
                    let Admitted { batch, header, .. } = admitted;
                    let size = batch.as_bytes().len();
                    appends.push(AppendBatch {
                        agent: header.agent_id,
                        sequence: header.sequence,
                        batch: batch.into_bytes(),
                    });
                    slots.push(Slot::Appending {
                        header,
                        heartbeat,
                        size,
                    });
                }
                Checked::Payload(admitted, Err(fault)) => slots.push(Slot::Decided(Err(
                    self.payload_fault(fault, &admitted, peer)
                ))),
            }
        }
        let mut appended = if appends.is_empty() {
            Vec::new()
        } else {
            self.archive.append_all(appends).await
        }
        .into_iter();
        let mut results = Vec::with_capacity(slots.len());
        for slot in slots {
            let result = match slot {
                Slot::Decided(result) => result,
                Slot::Appending {
                    header,
                    heartbeat,
                    size,
                } => match appended.next() {
                    Some(Ok(outcome)) => Ok(self.archived(&header, heartbeat, size, outcome, peer)),
                    Some(Err(e)) => Err(match e {
                        crate::archive::ArchiveError::TooLarge { .. } => Rejection::TooLarge(
                            format!("{e}: send smaller batches (the agent's [ship] batch bytes)"),
                        ),
                        other => Rejection::Unavailable(other.to_string()),
                    }),
                    // The archive stopped at an earlier failure: this one is not stored.
                    None => break,
                },
            };
            let retry = match &result {
                Err(rejection) => {
                    self.stats.count_rejection(rejection.reason());
                    !rejection.is_final()
                }
                Ok(_) => false,
            };
            results.push(result);
            if retry {
                break;
            }
        }
        results
    }

    /// Pass one for one batch: backpressure, envelope, agent, signature, clock, sequence
    /// and rate, in that order. A duplicate is decided here (acknowledged, not checked
    /// further); a batch that passes is admitted to the payload check.
    async fn screen(&self, body: Vec<u8>, peer: Option<IpAddr>) -> Result<Screened, Rejection> {
        self.check_backpressure()?;
        let batch = SignedBatch::from_bytes(body).map_err(|e| {
            self.refuse(
                "malformed_batch",
                peer,
                None,
                Rejection::Malformed(e.to_string()),
            )
        })?;
        let header = batch.header().clone();
        let claimed = Some(header.agent_id);
        let agent = self
            .agents
            .get(header.agent_id)
            .await
            .map_err(|e| Rejection::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                self.refuse(
                    "unknown_agent",
                    peer,
                    claimed,
                    Rejection::UnknownAgent(header.agent_id),
                )
            })?;
        if agent.record.is_internal() {
            return Err(self.refuse(
                "impersonated_collector",
                peer,
                claimed,
                Rejection::Unverified("this identity only signs inside the collector".into()),
            ));
        }
        if !agent.record.is_active() {
            return Err(self.refuse(
                "revoked_agent",
                peer,
                claimed,
                Rejection::RevokedAgent(header.agent_id),
            ));
        }
        batch.verify(agent.key_for(header.sequence)).map_err(|e| {
            let action = match e {
                BatchError::PayloadHashMismatch => "payload_hash_mismatch",
                _ => "bad_signature",
            };
            self.refuse(action, peer, claimed, Rejection::Unverified(e.to_string()))
        })?;
        self.check_clock(header.created_at_ms)
            .map_err(|r| self.refuse("clock_skew", peer, claimed, r))?;
        if let Some(last) = self.archive.last_sequence(header.agent_id)
            && header.sequence <= last
        {
            if header.sequence < last {
                self.events.security(SecurityReport {
                    action: "replay",
                    peer,
                    claimed_agent: claimed,
                    reason: format!(
                        "sequence {} replayed after {last} was archived; acknowledged, not stored",
                        header.sequence
                    ),
                });
            }
            self.fleet
                .record_batch(header.agent_id, peer, header.sequence, None);
            self.stats.count_duplicate();
            return Ok(Screened::Decided(Ok(Ack {
                status: "duplicate",
                sequence: header.sequence,
                agent_id: header.agent_id,
                allowlist: None,
            })));
        }
        self.take_rate_tokens(header.agent_id, header.event_count)?;
        let ratio_limit = batch
            .payload()
            .len()
            .saturating_mul(self.limits.max_decompression_ratio as usize)
            .max(64 * 1024);
        Ok(Screened::Admitted(Admitted {
            batch,
            header,
            limit: self.limits.max_decompressed_bytes.min(ratio_limit),
        }))
    }

    /// The refusal for a payload that failed its check, reported as a security event.
    fn payload_fault(
        &self,
        fault: PayloadFault,
        admitted: &Admitted,
        peer: Option<IpAddr>,
    ) -> Rejection {
        let claimed = Some(admitted.header.agent_id);
        match fault {
            PayloadFault::Batch(error) => self.payload_refusal(
                error,
                admitted.batch.payload().len(),
                admitted.limit,
                peer,
                claimed,
            ),
            PayloadFault::ForeignAgent { line } => self.refuse(
                "foreign_agent_events",
                peer,
                claimed,
                Rejection::Malformed(format!(
                    "event on payload line {line} names another agent than the batch"
                )),
            ),
        }
    }

    /// Records a batch the archive answered for: the fleet's view of the agent, a gap
    /// event when sequences were skipped, the counters; returns the ack.
    fn archived(
        &self,
        header: &BatchHeader,
        heartbeat: Option<Heartbeat>,
        size: usize,
        outcome: Appended,
        peer: Option<IpAddr>,
    ) -> Ack {
        self.fleet
            .record_batch(header.agent_id, peer, header.sequence, heartbeat);
        let status = match outcome {
            Appended::Accepted {
                offset,
                previous_sequence,
            } => {
                let expected = previous_sequence.unwrap_or(0) + 1;
                if header.sequence > expected {
                    self.events
                        .gap(header.agent_id, expected, header.sequence - 1, peer);
                }
                tracing::debug!(agent = %header.agent_id, sequence = header.sequence, offset, "batch archived");
                self.stats.count_accepted(header.event_count, size);
                "accepted"
            }
            Appended::Duplicate { .. } => {
                self.stats.count_duplicate();
                "duplicate"
            }
        };
        Ack {
            status,
            sequence: header.sequence,
            agent_id: header.agent_id,
            allowlist: None,
        }
    }

    fn payload_refusal(
        &self,
        error: BatchError,
        compressed: usize,
        limit: usize,
        peer: Option<IpAddr>,
        claimed: Option<Uuid>,
    ) -> Rejection {
        match error {
            BatchError::TooLarge { .. } => self.refuse(
                "decompression_bomb",
                peer,
                claimed,
                Rejection::TooLarge(format!(
                    "payload of {compressed} compressed bytes decompresses past {limit} bytes \
                     (limits: {} bytes, ratio {})",
                    self.limits.max_decompressed_bytes, self.limits.max_decompression_ratio
                )),
            ),
            other => self.refuse(
                "invalid_payload",
                peer,
                claimed,
                Rejection::Malformed(other.to_string()),
            ),
        }
    }

    fn check_backpressure(&self) -> Result<(), Rejection> {
        if self.limits.max_consumer_lag_bytes == 0 {
            return Ok(());
        }
        let Some(slowest) = self.archive.min_consumer_offset() else {
            return Ok(());
        };
        let end = *self.archive.committed().borrow();
        let lag = end.saturating_sub(slowest);
        if lag > self.limits.max_consumer_lag_bytes {
            return Err(Rejection::SlowDown {
                detail: format!(
                    "the indexer is {lag} archive bytes behind (limit {}); retry later",
                    self.limits.max_consumer_lag_bytes
                ),
                retry_after_seconds: 2,
            });
        }
        Ok(())
    }

    fn check_clock(&self, created_at_ms: i64) -> Result<(), Rejection> {
        clock_skew(
            created_at_ms,
            chrono::Utc::now().timestamp_millis(),
            self.limits.max_batch_age,
            self.limits.max_clock_ahead,
        )
        .map_err(Rejection::ClockSkew)
    }

    /// Takes `events` tokens from the agent's bucket, or says when to come back.
    fn take_rate_tokens(&self, agent: Uuid, events: u32) -> Result<(), Rejection> {
        let rate = f64::from(self.limits.agent_events_per_second);
        if rate <= 0.0 {
            return Ok(());
        }
        let capacity = f64::from(self.limits.agent_burst_events.max(1)).max(rate);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let bucket = buckets.entry(agent).or_insert(TokenBucket {
            tokens: capacity,
            updated: now,
        });
        let Err(wait) = bucket.take(f64::from(events.max(1)), rate, capacity, now) else {
            return Ok(());
        };
        Err(Rejection::SlowDown {
            detail: format!(
                "agent {agent} is over its rate of {} events/s; retry in {wait} s",
                self.limits.agent_events_per_second
            ),
            retry_after_seconds: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_maps_to_its_reason_label() {
        let agent = Uuid::nil();
        let cases = [
            (Rejection::Malformed("x".into()), "malformed"),
            (Rejection::ClockSkew("x".into()), "clock_skew"),
            (Rejection::UnknownAgent(agent), "unknown_agent"),
            (Rejection::RevokedAgent(agent), "revoked_agent"),
            (Rejection::Unverified("x".into()), "unverified"),
            (Rejection::TooLarge("x".into()), "too_large"),
            (
                Rejection::SlowDown {
                    detail: "x".into(),
                    retry_after_seconds: 1,
                },
                "slow_down",
            ),
            (Rejection::Unavailable("x".into()), "unavailable"),
        ];
        let labels: Vec<&str> = cases.iter().map(|(r, _)| r.reason().label()).collect();
        let expected: Vec<&str> = cases.iter().map(|(_, l)| *l).collect();
        assert_eq!(labels, expected);
        // ALL lists every reason once, in the order of its counters.
        let all: Vec<&str> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(all, expected);
        for (index, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
        let stats = IngestStats::default();
        for (rejection, _) in &cases {
            stats.count_rejection(rejection.reason());
        }
        stats.count_rejection(RejectReason::SlowDown);
        assert_eq!(stats.rejected(RejectReason::SlowDown), 2);
        assert_eq!(stats.rejected(RejectReason::Malformed), 1);
        stats.count_accepted(7, 300);
        stats.count_duplicate();
        assert_eq!(
            (
                stats.batches_accepted(),
                stats.events_accepted(),
                stats.bytes_accepted(),
                stats.batches_duplicate()
            ),
            (1, 7, 300, 1)
        );
    }

    #[test]
    fn token_bucket_allows_bursts_then_says_when_to_retry() {
        let start = Instant::now();
        let mut bucket = TokenBucket {
            tokens: 2_000.0,
            updated: start,
        };
        assert_eq!(bucket.take(1_000.0, 1_000.0, 2_000.0, start), Ok(()));
        assert_eq!(bucket.take(1_000.0, 1_000.0, 2_000.0, start), Ok(()));
        assert_eq!(bucket.take(1_500.0, 1_000.0, 2_000.0, start), Err(2));
        let later = start + Duration::from_millis(1_500);
        assert_eq!(bucket.take(1_500.0, 1_000.0, 2_000.0, later), Ok(()));
        // A batch larger than the burst is not refused forever.
        let much_later = later + Duration::from_secs(10);
        assert_eq!(bucket.take(9_000.0, 1_000.0, 2_000.0, much_later), Ok(()));
    }

    #[test]
    fn clock_window_is_generous_in_the_past_and_tight_ahead() {
        let now = 1_800_000_000_000i64;
        let week = Duration::from_secs(7 * 86_400);
        let five_minutes = Duration::from_secs(300);
        assert!(clock_skew(now - 6 * 86_400_000, now, week, five_minutes).is_ok());
        assert!(clock_skew(now + 60_000, now, week, five_minutes).is_ok());
        let old = clock_skew(now - 8 * 86_400_000, now, week, five_minutes).expect_err("old");
        assert!(old.contains("691200.0 s behind"), "{old}");
        let ahead = clock_skew(now + 600_000, now, week, five_minutes).expect_err("ahead");
        assert!(ahead.contains("600.0 s ahead of"), "{ahead}");
        assert!(clock_skew(i64::MIN, now, week, five_minutes).is_err());
    }
}
