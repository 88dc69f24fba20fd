//! Detector nodes: two consumer groups, so every correlation group is evaluated on one
//! node whatever gateway and partition its events came through.
//!
//! - **Routers** (role [`ROUTE_ROLE`], one lease per archive partition) read their
//!   partitions of the archive, run the single-event rules ([`Detector::route`]),
//!   publish those matches, and publish each event that feeds a correlation to the
//!   *matched* stream, on the partition its correlation group hashes to
//!   ([`correlate_partition`]). Their position in the archive is a key of the state
//!   bucket, written after the publishes it covers were acknowledged.
//! - **Correlators** (role [`CORRELATE_ROLE`], one lease per matched partition) read
//!   their partitions of the matched stream through the correlations
//!   ([`Detector::correlate`]), reporting only the groups they own. Their state — the
//!   position in the matched stream, the correlation windows and episodes, and the last
//!   archive record seen from each archive partition — is snapshotted into the state
//!   bucket every [`STATE_EVERY`], after the matches found before it were acknowledged.
//!
//! A node that takes a partition over imports the snapshot and replays from its
//! position. Replays are harmless by construction: a correlator drops a routed record it
//! has already seen (a router replaying after a crash), evaluation is deterministic in
//! event time, and a match found again has the same id ([`crate::detect::engine`]), which
//! the detections stream (its duplicate window) and the store (its primary key) take
//! once. Matches go to the detections stream; the api node records them and runs the
//! alert manager on them ([`feed_alerts`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;
use yagura_shared::{Event, SignedBatch};

use super::leases::Leases;
use crate::archive::{JetStreamArchive, JetStreamConfig, Record};
use crate::detect::engine::Detection;
use crate::detect::{Detector, RuleSet};
use crate::store::{Store, StoredDetection};

/// The routers' lease role (partitions: the archive's).
pub const ROUTE_ROLE: &str = "detector-route";
/// The correlators' lease role (partitions: the matched stream's, as many as the
/// archive's).
pub const CORRELATE_ROLE: &str = "detector-correlate";
/// How often positions and correlation state are written.
pub const STATE_EVERY: Duration = Duration::from_secs(2);
/// How often a detector node logs its counters.
const STATS_EVERY: Duration = Duration::from_secs(60);
/// How long a worker waits for a record before it looks at its state and stop signal.
const READ_WAIT: Duration = Duration::from_millis(500);
/// A match published twice within this window is stored once by the stream itself.
const DETECTIONS_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// Routed events are kept this long: far beyond any snapshot's age.
const MATCHED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The state bucket's key of where detection began.
const START_KEY: &str = "route.start";
/// The durable consumer the api nodes record matches through.
pub const ALERTS_CONSUMER: &str = "alerts";
/// Matches taken per round by [`feed_alerts`].
const ALERTS_BATCH: usize = 256;

/// The streams and bucket of a cluster's detection, named after its archive.
#[derive(Debug, Clone)]
pub struct DetectionStreams {
    /// The matched stream, as an archive of its own: partition `q` holds the routed
    /// events of the groups that hash to `q`.
    pub matched: JetStreamConfig,
    pub detections_stream: String,
    pub detections_subject: String,
    pub state_bucket: String,
}

impl DetectionStreams {
    pub fn of(archive: &JetStreamConfig) -> Self {
        DetectionStreams {
            matched: JetStreamConfig {
                stream: format!("{}_MATCHED", archive.stream),
                // A sibling of the archive's subjects, never inside them.
                subject_prefix: format!("{}-matched", archive.subject_prefix),
                max_age_seconds: Some(MATCHED_MAX_AGE.as_secs()),
                max_bytes: None,
                ..archive.clone()
            },
            detections_stream: format!("{}_DETECTIONS", archive.stream),
            detections_subject: format!("{}-detections", archive.subject_prefix),
            state_bucket: format!("{}_DETECT", archive.stream),
        }
    }

    /// The subject of routed records for matched partition `q`.
    fn matched_subject(&self, q: u32) -> String {
        format!("{}.p{q}.events", self.matched.subject_prefix)
    }
}

/// The matched partition a correlation group (a [`crate::detect::engine::group_key`])
/// belongs to.
pub fn correlate_partition(group: &str, partitions: u32) -> u32 {
    let digest = sha2::Sha256::digest(group.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % u64::from(partitions.max(1))) as u32
}

/// The detections stream, made when absent.
pub async fn detections_stream(
    context: &jetstream::Context,
    streams: &DetectionStreams,
    replicas: usize,
) -> anyhow::Result<stream::Stream> {
    context
        .get_or_create_stream(stream::Config {
            name: streams.detections_stream.clone(),
            description: Some("yagura detections from the cluster's detectors".into()),
            subjects: vec![streams.detections_subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DETECTIONS_DUPLICATE_WINDOW,
            max_age: Duration::from_secs(30 * 24 * 3600),
            ..Default::default()
        })
        .await
        .with_context(|| format!("opening stream {}", streams.detections_stream))
}

/// The bucket of router positions and correlator snapshots.
pub async fn state_bucket(
    context: &jetstream::Context,
    streams: &DetectionStreams,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    super::make_bucket(
        context,
        &streams.state_bucket,
        "yagura detector positions and correlation state",
        Duration::ZERO,
        replicas,
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// Counters of a detector node.
#[derive(Debug, Default)]
pub struct DetectorNodeStats {
    pub events_routed: std::sync::atomic::AtomicU64,
    pub events_correlated: std::sync::atomic::AtomicU64,
    pub matches: std::sync::atomic::AtomicU64,
    pub replayed_records_skipped: std::sync::atomic::AtomicU64,
    pub snapshots: std::sync::atomic::AtomicU64,
    /// Snapshots too large for the state bucket (the partition replays from the last
    /// one written).
    pub snapshots_too_large: std::sync::atomic::AtomicU64,
    /// Events too large to route and matches too large to publish.
    pub oversized: std::sync::atomic::AtomicU64,
}

impl DetectorNodeStats {
    /// The counters in the log: a detector node serves no metrics endpoint.
    fn log(&self, routing: &BTreeSet<u32>, correlating: &BTreeSet<u32>) {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::info!(
            ?routing,
            ?correlating,
            events_routed = self.events_routed.load(Relaxed),
            events_correlated = self.events_correlated.load(Relaxed),
            matches = self.matches.load(Relaxed),
            replayed_records_skipped = self.replayed_records_skipped.load(Relaxed),
            snapshots = self.snapshots.load(Relaxed),
            snapshots_too_large = self.snapshots_too_large.load(Relaxed),
            oversized = self.oversized.load(Relaxed),
            "detector node"
        );
    }
}

/// What the workers of one detector node share.
pub struct DetectorNode {
    pub archive: Arc<JetStreamArchive>,
    pub matched: Arc<JetStreamArchive>,
    pub context: jetstream::Context,
    pub state: kv::Store,
    pub streams: DetectionStreams,
    pub rules: Arc<RuleSet>,
    pub pipeline: rsigma_eval::Pipeline,
    pub max_decompressed: usize,
    pub stats: Arc<DetectorNodeStats>,
}

impl DetectorNode {
    fn detector(&self) -> anyhow::Result<Detector> {
        Detector::new(&self.rules, self.pipeline.clone()).map_err(anyhow::Error::msg)
    }

    fn partitions(&self) -> u32 {
        self.matched.config().partitions
    }

    /// The largest message this node publishes (the server's limit, less room for the
    /// subject and headers).
    fn message_limit(&self) -> usize {
        self.matched.max_payload().saturating_sub(4096).max(1024)
    }

    /// Publishes a match; its id is the message id, so a replay's copy is dropped. A match
    /// too large for a message (its event holds a huge field) goes without the event and
    /// matched values; one still too large is logged and counted, never retried forever.
    async fn publish_match(
        &self,
        detection: &Detection,
        archive_offset: u64,
    ) -> anyhow::Result<Option<jetstream::context::PublishAckFuture>> {
        let mut stored = crate::detect::live::stored(detection, archive_offset);
        if stored.body.len() + 1024 > self.message_limit() {
            let mut slim = detection.clone();
            slim.event = None;
            slim.matched_fields.clear();
            stored = crate::detect::live::stored(&slim, archive_offset);
        }
        let body = serde_json::to_vec(&stored).context("encoding a match")?;
        if body.len() > self.message_limit() {
            self.stats
                .oversized
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(id = %stored.id, bytes = body.len(), "a match too large to publish left out");
            return Ok(None);
        }
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, stored.id.as_str());
        self.context
            .publish_with_headers(
                self.streams.detections_subject.clone(),
                headers,
                body.into(),
            )
            .await
            .context("publishing a match")
            .map(Some)
    }

    /// Runs both roles until `cancel`, following `routes` and `correlations`.
    pub async fn run(
        self: Arc<Self>,
        mut routes: Leases,
        mut correlations: Leases,
        renew_every: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut routers = Workers::new(ROUTE_ROLE);
        let mut correlators = Workers::new(CORRELATE_ROLE);
        let mut reported = Instant::now();
        loop {
            if reported.elapsed() >= STATS_EVERY {
                self.stats.log(&routes.held(), &correlations.held());
                reported = Instant::now();
            }
            for (leases, workers) in [
                (&mut routes, &mut routers),
                (&mut correlations, &mut correlators),
            ] {
                match leases.renew().await {
                    Ok(changes) => {
                        for partition in changes.surplus {
                            workers.begin_stop(partition, true);
                        }
                    }
                    Err(error) => tracing::warn!(role = workers.role, %error, "renewing leases"),
                }
                workers.finish_stops(leases).await;
                let route = workers.role == ROUTE_ROLE;
                workers.reconcile(&leases.held(), |partition, stop| {
                    let node = Arc::clone(&self);
                    if route {
                        tokio::spawn(async move { node.route(partition, stop).await })
                    } else {
                        tokio::spawn(async move { node.correlate(partition, stop).await })
                    }
                });
            }
            tokio::select! {
                () = tokio::time::sleep(renew_every) => {}
                () = cancel.cancelled() => break,
            }
        }
        for (leases, workers) in [
            (&mut routes, &mut routers),
            (&mut correlations, &mut correlators),
        ] {
            workers.stop_all().await;
            if let Err(error) = leases.leave().await {
                tracing::warn!(role = workers.role, %error, "leaving the detectors");
            }
        }
        Ok(())
    }

    /// Where the cluster's detection began: the archive's end when the first detector
    /// started (recorded once, [`START_KEY`]). A partition never routed before starts
    /// there, so nothing archived between a detector's start and its first lease is
    /// passed over.
    pub async fn detection_start(&self) -> anyhow::Result<u64> {
        if let Some(value) = self
            .state
            .get(START_KEY)
            .await
            .context("reading the start")?
        {
            return std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .context("the detection start is not a number");
        }
        let end = self.archive.end().await?;
        match self.state.create(START_KEY, end.to_string().into()).await {
            Ok(_) => Ok(end),
            // Another detector recorded it first: theirs holds.
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                Box::pin(self.detection_start()).await
            }
            Err(error) => Err(anyhow::anyhow!("recording the detection start: {error}")),
        }
    }

    /// A router of archive partition `partition`, until `stop`.
    async fn route(self: Arc<Self>, partition: u32, stop: CancellationToken) -> anyhow::Result<()> {
        let detector = self.detector()?;
        let key = format!("route.p{partition}");
        let start = match self
            .state
            .get(&key)
            .await
            .context("reading a router position")?
        {
            Some(value) => std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .with_context(|| format!("router position {key} is not a number"))?,
            // Rules look forward: a partition never routed starts where the cluster's
            // detection began.
            None => {
                let start = self.detection_start().await?;
                self.state
                    .put(&key, start.to_string().into())
                    .await
                    .context("writing a router position")?;
                start
            }
        };
        tracing::info!(partition, from = start, "routing archive partition");
        let mut reader = self.archive.partition_reader(partition, start)?;
        let (mut position, mut written, mut written_at) = (start, start, Instant::now());
        loop {
            let record = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                record = reader.next_within(READ_WAIT) => record?,
            };
            if let Some(record) = &record {
                self.route_record(&detector, partition, record).await?;
                position = record.next_offset;
            }
            if position != written && (record.is_none() || written_at.elapsed() >= STATE_EVERY) {
                self.state
                    .put(&key, position.to_string().into())
                    .await
                    .context("writing a router position")?;
                (written, written_at) = (position, Instant::now());
            }
        }
        if position != written {
            self.state
                .put(&key, position.to_string().into())
                .await
                .context("writing a router position")?;
        }
        Ok(())
    }

    /// One archived batch: its single-event matches published, its events that feed
    /// correlations published to their groups' partitions; returns once all are
    /// acknowledged.
    async fn route_record(
        &self,
        detector: &Detector,
        partition: u32,
        record: &Record,
    ) -> anyhow::Result<()> {
        let payload = match SignedBatch::from_bytes(record.batch.clone())
            .and_then(|b| b.decompressed_payload(self.max_decompressed))
        {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(offset = record.offset, %error, "archived batch skipped by the detector");
                return Ok(());
            }
        };
        let partitions = self.partitions();
        let limit = self.message_limit();
        let mut routed: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut acks = Vec::new();
        for line in yagura_shared::payload_lines(&payload).filter(|l| !l.is_empty()) {
            let Ok(event) = Event::from_json_slice(line) else {
                continue;
            };
            let found = detector.route(event);
            for detection in &found.detections {
                self.stats
                    .matches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                acks.extend(self.publish_match(detection, record.offset).await?);
            }
            if found.groups.is_empty() {
                continue;
            }
            if line.len() + 64 > limit {
                // A routed piece must fit one message: such an event cannot be
                // correlated here (its single-event matches were reported).
                self.stats
                    .oversized
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    offset = record.offset,
                    bytes = line.len(),
                    "an event too large to route left out of correlation"
                );
                continue;
            }
            let targets: BTreeSet<u32> = found
                .groups
                .iter()
                .map(|g| correlate_partition(g, partitions))
                .collect();
            for q in targets {
                let lines = routed.entry(q).or_default();
                lines.extend_from_slice(line);
                lines.push(b'\n');
                self.stats
                    .events_routed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // The pieces of one partition are stored one after the other: a correlator takes
        // the last piece it has seen as the mark of everything before it, so a later
        // piece must never be stored while an earlier one was lost on the way.
        for (q, lines) in routed {
            for (chunk, body) in chunks(&lines, limit - 64).into_iter().enumerate() {
                let mut message = format!("{partition} {} {chunk}\n", record.offset).into_bytes();
                message.extend_from_slice(body);
                self.context
                    .publish(self.streams.matched_subject(q), message.into())
                    .await
                    .context("routing events")?
                    .await
                    .context("waiting for JetStream's acknowledgement")?;
            }
        }
        for ack in acks {
            ack.await
                .context("waiting for JetStream's acknowledgement")?;
        }
        Ok(())
    }
}

/// `lines` (whole lines, each ending in `\n`) in pieces of at most `limit` bytes, cut at
/// line ends (a single longer line is a piece of its own).
fn chunks(lines: &[u8], limit: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (at, byte) in lines.iter().enumerate() {
        if *byte != b'\n' {
            continue;
        }
        if at + 1 - start > limit && end > start {
            pieces.push(&lines[start..end]);
            start = end;
        }
        end = at + 1;
    }
    if end > start {
        pieces.push(&lines[start..end]);
    }
    pieces
}

/// What a correlator snapshots: where it is, what it has seen, and its windows.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CorrelatorState {
    /// The matched stream's next sequence to read.
    next: u64,
    /// Per archive partition, the last routed piece taken: (archive offset, chunk).
    seen: BTreeMap<u32, (u64, u32)>,
    /// [`Detector::export_state`].
    windows: Option<String>,
}

/// A routed piece's header line: archive partition, archive offset, chunk.
fn routed_header(line: &[u8]) -> Option<(u32, u64, u32)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let chunk = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((partition, offset, chunk))
}

impl DetectorNode {
    /// The partition's snapshot imported into `detector`. A snapshot that cannot be read
    /// or imported (written by an incompatible version) is not half-used: the partition
    /// starts over from the start of the matched stream (it keeps
    /// [`MATCHED_MAX_AGE`]), rebuilding its windows, rather than resuming with empty ones.
    async fn load_state(
        &self,
        key: &str,
        detector: &mut Detector,
    ) -> anyhow::Result<CorrelatorState> {
        let Some(value) = self
            .state
            .get(key)
            .await
            .context("reading correlation state")?
        else {
            return Ok(CorrelatorState::default());
        };
        let state = zstd::decode_all(&value[..])
            .map_err(|e| e.to_string())
            .and_then(|json| {
                serde_json::from_slice::<CorrelatorState>(&json).map_err(|e| e.to_string())
            })
            .and_then(|state| match &state.windows {
                Some(windows) => detector.import_state(windows).map(|()| state),
                None => Ok(state),
            });
        match state {
            Ok(state) => Ok(state),
            Err(error) => {
                tracing::error!(
                    key,
                    %error,
                    "correlation state not usable; rebuilding it from the matched stream"
                );
                *detector = self.detector()?;
                Ok(CorrelatorState::default())
            }
        }
    }

    async fn save_state(
        &self,
        key: &str,
        detector: &mut Detector,
        state: &mut CorrelatorState,
    ) -> anyhow::Result<()> {
        detector.evict_expired();
        state.windows = Some(detector.export_state().map_err(anyhow::Error::msg)?);
        let json = serde_json::to_vec(&state).context("encoding correlation state")?;
        let packed = zstd::encode_all(&json[..], 3).context("compressing correlation state")?;
        if packed.len() > self.message_limit() {
            // Not a reason to stop correlating: a later, smaller state is written, and
            // until then a take-over replays from the last one written.
            self.stats
                .snapshots_too_large
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                key,
                bytes = packed.len(),
                limit = self.message_limit(),
                "correlation state too large for the state bucket; not written"
            );
            return Ok(());
        }
        self.state
            .put(key, packed.into())
            .await
            .context("writing correlation state")?;
        self.stats
            .snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A correlator of matched partition `q`, until `stop`.
    async fn correlate(self: Arc<Self>, q: u32, stop: CancellationToken) -> anyhow::Result<()> {
        let mut detector = self.detector()?;
        let key = format!("correlate.q{q}");
        let mut state = self.load_state(&key, &mut detector).await?;
        tracing::info!(q, from = state.next, "correlating partition");
        let partitions = self.partitions();
        let mut reader = self.matched.partition_reader(q, state.next)?;
        let (mut dirty, mut written_at) = (false, Instant::now());
        loop {
            let record = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                record = reader.next_within(READ_WAIT) => record?,
            };
            if let Some(record) = &record {
                let mut acks = Vec::new();
                let (head, lines) = record
                    .batch
                    .split_at(record.batch.iter().position(|b| *b == b'\n').unwrap_or(0));
                match routed_header(head) {
                    Some((partition, offset, chunk))
                        if state
                            .seen
                            .get(&partition)
                            .is_some_and(|s| *s >= (offset, chunk)) =>
                    {
                        // Routed again by a router that replayed after a crash.
                        self.stats
                            .replayed_records_skipped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Some((partition, offset, chunk)) => {
                        for line in yagura_shared::payload_lines(lines).filter(|l| !l.is_empty()) {
                            let Ok(event) = Event::from_json_slice(line) else {
                                continue;
                            };
                            self.stats
                                .events_correlated
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let owns = |group: &str| correlate_partition(group, partitions) == q;
                            for detection in detector.correlate(event, owns) {
                                self.stats
                                    .matches
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                acks.extend(self.publish_match(&detection, offset).await?);
                            }
                        }
                        state.seen.insert(partition, (offset, chunk));
                    }
                    None => tracing::error!(
                        q,
                        sequence = record.offset,
                        "a routed record without its header skipped"
                    ),
                }
                for ack in acks {
                    ack.await
                        .context("waiting for JetStream's acknowledgement")?;
                }
                state.next = record.next_offset;
                dirty = true;
            }
            if dirty && (record.is_none() || written_at.elapsed() >= STATE_EVERY) {
                self.save_state(&key, &mut detector, &mut state).await?;
                (dirty, written_at) = (false, Instant::now());
            }
        }
        if dirty {
            self.save_state(&key, &mut detector, &mut state).await?;
        }
        Ok(())
    }
}

type Task = tokio::task::JoinHandle<anyhow::Result<()>>;

/// The partitions of one role this node works on.
struct Workers {
    role: &'static str,
    running: BTreeMap<u32, (CancellationToken, Task)>,
    /// Told to stop, not yet ended: (partition, task, release its lease when done).
    stopping: Vec<(u32, Task, bool)>,
}

impl Workers {
    fn new(role: &'static str) -> Self {
        Workers {
            role,
            running: BTreeMap::new(),
            stopping: Vec::new(),
        }
    }

    fn begin_stop(&mut self, partition: u32, release: bool) {
        if let Some((stop, task)) = self.running.remove(&partition) {
            stop.cancel();
            self.stopping.push((partition, task, release));
        }
    }

    /// Reaps the stopped workers and releases the leases given back.
    async fn finish_stops(&mut self, leases: &mut Leases) {
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stopping)
            .into_iter()
            .partition(|(_, task, _)| task.is_finished());
        self.stopping = running;
        for (partition, task, release) in ended {
            self.report(partition, task).await;
            if release && let Err(error) = leases.release(partition).await {
                tracing::warn!(role = self.role, partition, %error, "giving a partition back");
            }
        }
    }

    async fn report(&self, partition: u32, task: Task) {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                role = self.role,
                partition,
                error = format!("{error:#}"),
                "detector worker stopped; it starts again at the next renewal"
            ),
            Err(error) => {
                tracing::error!(role = self.role, partition, %error, "detector worker failed")
            }
        }
    }

    /// Runs exactly the partitions held: stops the others, starts the held ones without
    /// a worker (again, for one that ended on an error).
    fn reconcile(
        &mut self,
        held: &BTreeSet<u32>,
        mut spawn: impl FnMut(u32, CancellationToken) -> Task,
    ) {
        let ended: Vec<u32> = self
            .running
            .iter()
            .filter(|(p, (_, task))| !held.contains(p) || task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for partition in ended {
            self.begin_stop(partition, false);
        }
        for partition in held {
            if self.running.contains_key(partition)
                || self.stopping.iter().any(|(p, _, _)| p == partition)
            {
                continue;
            }
            let stop = CancellationToken::new();
            let task = spawn(*partition, stop.clone());
            self.running.insert(*partition, (stop, task));
        }
    }

    async fn stop_all(&mut self) {
        for partition in self.running.keys().copied().collect::<Vec<_>>() {
            self.begin_stop(partition, false);
        }
        for (partition, task, _) in std::mem::take(&mut self.stopping) {
            self.report(partition, task).await;
        }
    }
}

/// On an api node: takes the cluster's matches from the detections stream into `store`
/// (each id once) and ticks `recorded` for the alert manager, until `cancel`. A match is
/// acknowledged to the stream only once recorded, so a crash takes it again.
pub async fn feed_alerts(
    context: jetstream::Context,
    streams: DetectionStreams,
    replicas: usize,
    store: Store,
    recorded: tokio::sync::watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let mut pause = Duration::from_millis(250);
    while !cancel.is_cancelled() {
        let fed = async {
            let stream = detections_stream(&context, &streams, replicas).await?;
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    ALERTS_CONSUMER,
                    consumer::pull::Config {
                        durable_name: Some(ALERTS_CONSUMER.into()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(30),
                        ..Default::default()
                    },
                )
                .await
                .context("opening the alerts consumer")?;
            loop {
                let mut batch = consumer
                    .batch()
                    .max_messages(ALERTS_BATCH)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .context("pulling matches")?;
                // Each match is acknowledged once recorded; one not acknowledged (the
                // store failed, the pull broke off) comes again after the ack wait.
                let mut taken = Vec::new();
                let mut messages = Vec::new();
                let mut broken = None;
                while let Some(message) = batch.next().await {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            broken = Some(anyhow::anyhow!("pulling matches: {error}"));
                            break;
                        }
                    };
                    match serde_json::from_slice::<StoredDetection>(&message.payload) {
                        Ok(detection) => taken.push(detection),
                        Err(error) => {
                            tracing::error!(%error, "a match that does not decode skipped")
                        }
                    }
                    messages.push(message);
                }
                if !messages.is_empty() {
                    let new = store.commit_detections(&taken, None).await?;
                    if new > 0 {
                        recorded.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    for message in messages {
                        message
                            .ack()
                            .await
                            .map_err(|e| anyhow::anyhow!("acknowledging a match: {e}"))?;
                    }
                }
                if let Some(error) = broken {
                    return Err(error);
                }
                if cancel.is_cancelled() {
                    return Ok::<(), anyhow::Error>(());
                }
            }
        };
        tokio::select! {
            result = fed => if let Err(error) = result {
                tracing::warn!(error = format!("{error:#}"), "recording the cluster's matches; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            },
            () = cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_at_line_ends_within_the_limit() {
        let lines = b"aaaa\nbb\ncccccc\nd\n";
        assert_eq!(
            chunks(lines, 8),
            vec![&b"aaaa\nbb\n"[..], b"cccccc\n", b"d\n"]
        );
        assert_eq!(chunks(lines, 100), vec![&lines[..]]);
        assert_eq!(
            chunks(b"toolongline\nx\n", 4),
            vec![&b"toolongline\n"[..], b"x\n"]
        );
        assert!(chunks(b"", 4).is_empty());
    }

    #[test]
    fn routed_headers_parse_or_refuse() {
        assert_eq!(routed_header(b"3 1200 0"), Some((3, 1200, 0)));
        assert_eq!(routed_header(b"3 1200"), None);
        assert_eq!(routed_header(b"3 1200 0 9"), None);
        assert_eq!(routed_header(b"{\"event\":1}"), None);
    }

    #[test]
    fn groups_spread_over_the_partitions_and_stay_put() {
        let mut counts = [0u32; 4];
        for n in 0..4000 {
            let group = crate::detect::engine::group_key(
                "rule",
                &[("source.ip".into(), format!("10.0.{}.{}", n / 256, n % 256))],
            );
            let q = correlate_partition(&group, 4);
            assert_eq!(q, correlate_partition(&group, 4));
            counts[q as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::archive::Archive as _;
    use crate::detect::engine::tests::BRUTE_FORCE;
    use crate::detect::live::tests::failed_login;
    use crate::detect::{ecs_pipeline, load_rules};
    use std::sync::atomic::Ordering::Relaxed;
    use yagura_shared::AgentKey;

    async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done().await {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn position(node: &DetectorNode, key: &str) -> Option<u64> {
        let value = node.state.get(key).await.expect("state")?;
        std::str::from_utf8(&value).ok()?.parse().ok()
    }

    /// A router that replays (it stopped before writing its position) routes the same
    /// records again: the correlator counts each event once, a correlator started again
    /// resumes from its snapshot, and the match is in the detections stream once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_router_replay_is_counted_once_and_the_match_published_once() {
        let Some(client) = crate::cluster::testing::nats_or_skip().await else {
            return;
        };
        let config = crate::cluster::testing::own_stream(1);
        let streams = DetectionStreams::of(&config);
        let context = jetstream::new(client.clone());
        let archive = Arc::new(
            JetStreamArchive::open(config.clone())
                .await
                .expect("archive"),
        );
        let matched = Arc::new(
            JetStreamArchive::open(streams.matched.clone())
                .await
                .expect("matched"),
        );
        let mut detections = detections_stream(&context, &streams, 1)
            .await
            .expect("detections");
        let state = state_bucket(&context, &streams, 1).await.expect("state");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("ssh.yml"), BRUTE_FORCE).expect("rules");
        let pipeline = ecs_pipeline().expect("pipeline");
        let rules = load_rules(&[dir.path().to_path_buf()], &pipeline).expect("rules");
        let node = Arc::new(DetectorNode {
            archive: Arc::clone(&archive),
            matched,
            context: context.clone(),
            state,
            streams: streams.clone(),
            rules: Arc::new(rules),
            pipeline,
            max_decompressed: 1 << 24,
            stats: Arc::default(),
        });
        // Two batches of two failed logins from one address; three make the match.
        let key = AgentKey::generate().expect("key");
        let agent = uuid::Uuid::now_v7();
        for (sequence, minutes) in [(1, [0, 1]), (2, [2, 3])] {
            let events: Vec<Event> = minutes.into_iter().map(failed_login).collect();
            let batch = SignedBatch::seal(&key, agent, sequence, chrono::Utc::now(), &events)
                .expect("seal");
            archive
                .append(agent, sequence, batch.into_bytes())
                .await
                .expect("append");
        }
        node.state.put(START_KEY, "1".into()).await.expect("start");
        let end = archive.end().await.expect("end");

        for run in ["first", "replay"] {
            node.state
                .put("route.p0", "1".into())
                .await
                .expect("position");
            let stop = CancellationToken::new();
            let routing = tokio::spawn(Arc::clone(&node).route(0, stop.clone()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            until(run, async || position(&node, "route.p0").await == Some(end)).await;
            stop.cancel();
            routing.await.expect("join").expect("router");
        }
        assert_eq!(node.stats.events_routed.load(Relaxed), 8, "routed twice");

        for run in ["correlate", "resume"] {
            let stop = CancellationToken::new();
            let correlating = tokio::spawn(Arc::clone(&node).correlate(0, stop.clone()));
            if run == "correlate" {
                until("replays skipped", async || {
                    node.stats.replayed_records_skipped.load(Relaxed) == 2
                })
                .await;
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            stop.cancel();
            correlating.await.expect("join").expect("correlator");
            assert_eq!(
                node.stats.events_correlated.load(Relaxed),
                4,
                "{run}: each event correlated once"
            );
        }
        let stored = detections.info().await.expect("info").state.messages;
        assert_eq!(stored, 1, "one match, published once");

        drop(node);
        crate::cluster::testing::delete_cluster(client, &config).await;
    }
}
