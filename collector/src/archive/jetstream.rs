//! NATS JetStream as the archive: the replicated log a cluster of collectors shares.
//!
//! Each verified batch is published unchanged (the agent-signed bytes: the chain of
//! custody holds) to `<subject_prefix>.p<partition>.<agent id>`, and the agent is
//! acknowledged only after JetStream's own acknowledgement, which a replicated stream
//! gives once a quorum of its servers holds the message. The partition is a pure function
//! of the agent id, so one agent's batches stay in order in one partition, and a consumer
//! group (indexers, detectors) divides the partitions among its members.
//!
//! Exactly once across gateways: the stream keeps the last batch of every agent subject,
//! and a gateway publishes with `Nats-Expected-Last-Subject-Sequence` set to the stream
//! sequence of the batch it believes last. When another gateway appended in between (an
//! agent that moved gateways), JetStream refuses, the gateway reads the subject's last
//! batch again and either finds the sequence already archived (a duplicate, acknowledged
//! again) or publishes after it. `Nats-Msg-Id` (agent and sequence) makes a publish that
//! is retried after a lost acknowledgement a duplicate within the stream's window.
//!
//! Offsets are stream sequences: a [`Record`]'s `offset` is its stream sequence and its
//! `next_offset` the one after, so every consumer resumes from what it stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use super::{Appended, Archive, ArchiveError, Record, RecordSource, Result};

/// The header carrying the agent's batch sequence (also in the signed bytes; here so a
/// gateway learns an agent's last sequence without parsing the batch).
const SEQUENCE_HEADER: &str = "Yagura-Sequence";
/// When the gateway received the batch (Unix milliseconds).
const RECEIVED_HEADER: &str = "Yagura-Received-At";
/// How often a publish is tried again when another gateway appended for the same agent.
const CONFLICT_RETRIES: usize = 5;
/// Records a reader buffers ahead of its consumer (each at most NATS's `max_payload`,
/// 1 MiB by default).
const READ_AHEAD: usize = 64;

/// `[archive.jetstream]` in `collector.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// NATS server(s), comma separated (`nats://host:4222`).
    #[serde(default = "default_url")]
    pub url: String,
    /// The stream's name; every collector of a cluster names the same stream.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subjects are `<subject_prefix>.p<partition>.<agent id>`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Number of partitions; fixed when the stream is made (it is recorded in the
    /// stream's description and checked at every start).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Copies JetStream keeps of each batch (1 on a single server, 3 on a cluster of 3).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a gateway waits for JetStream's acknowledgement before answering the
    /// agent 503 (the agent retries; the message id makes the retry a duplicate).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Batches older than this are dropped by JetStream (none when unset).
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// The oldest batches are dropped while the stream is larger than this.
    #[serde(default)]
    pub max_bytes: Option<i64>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_stream() -> String {
    "YAGURA_ARCHIVE".into()
}
fn default_subject_prefix() -> String {
    "yagura.archive".into()
}
fn default_partitions() -> u32 {
    8
}
fn default_replicas() -> usize {
    1
}
fn default_ack_timeout_ms() -> u64 {
    5_000
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            url: default_url(),
            stream: default_stream(),
            subject_prefix: default_subject_prefix(),
            partitions: default_partitions(),
            replicas: default_replicas(),
            ack_timeout_ms: default_ack_timeout_ms(),
            max_age_seconds: None,
            max_bytes: None,
        }
    }
}

impl JetStreamConfig {
    /// Problems with the values, for `check-config` and the start.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.partitions == 0 || self.partitions > 1024 {
            problems.push("partitions must be between 1 and 1024".into());
        }
        if self.replicas == 0 || self.replicas > 5 {
            problems.push("replicas must be between 1 and 5 (JetStream's limit)".into());
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token_ok(&self.stream) {
            problems.push(format!(
                "stream {:?}: use letters, digits, '-' and '_' only",
                self.stream
            ));
        }
        if self.subject_prefix.is_empty()
            || self.subject_prefix.split('.').any(|token| !token_ok(token))
        {
            problems.push(format!(
                "subject_prefix {:?}: dot-separated tokens of letters, digits, '-' and '_'",
                self.subject_prefix
            ));
        }
        problems
    }

    /// The partition an agent's batches go to.
    pub fn partition_of(&self, agent: Uuid) -> u32 {
        // The low bits of UUIDv4/v7 are random; the modulo spreads agents evenly.
        (agent.as_u128() % u128::from(self.partitions.max(1))) as u32
    }

    /// The subject of one agent's batches.
    pub fn subject(&self, agent: Uuid) -> String {
        format!(
            "{}.p{}.{}",
            self.subject_prefix,
            self.partition_of(agent),
            agent
        )
    }

    /// The subjects of one partition (a consumer's filter).
    pub fn partition_filter(&self, partition: u32) -> String {
        format!("{}.p{partition}.>", self.subject_prefix)
    }

    fn description(&self) -> String {
        format!(
            "yagura archive of signed batches; partitions={}",
            self.partitions
        )
    }
}

fn stream_error(what: &str, error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Stream(format!("{what}: {error}"))
}

/// What a gateway knows of an agent's subject: its last archived batch.
#[derive(Debug, Clone, Copy, Default)]
struct AgentTail {
    /// Read from the stream since the last conflict.
    known: bool,
    /// The agent's highest archived batch sequence.
    sequence: Option<u64>,
    /// The stream sequence of that batch (0: none).
    stream_sequence: u64,
}

/// The archive on a JetStream stream.
pub struct JetStreamArchive {
    config: JetStreamConfig,
    context: jetstream::Context,
    stream: stream::Stream,
    runtime: tokio::runtime::Handle,
    /// The server's largest message.
    max_payload: usize,
    /// One lock per agent: a gateway appends one agent's batches one at a time.
    tails: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<AgentTail>>>>,
    /// The last sequence per agent this gateway saw (what `last_sequence` answers).
    last: Mutex<HashMap<Uuid, u64>>,
    committed: watch::Sender<u64>,
}

impl std::fmt::Debug for JetStreamArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamArchive")
            .field("stream", &self.config.stream)
            .field("partitions", &self.config.partitions)
            .finish_non_exhaustive()
    }
}

/// Connects to NATS. Also used by the cluster's membership and key-value buckets.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| stream_error(&format!("connecting to NATS at {url}"), e))
}

impl JetStreamArchive {
    /// Connects, and makes the stream when it does not exist yet. A stream made with
    /// another number of partitions is refused: agents would move between partitions and
    /// their batches could be consumed out of order.
    pub async fn open(config: JetStreamConfig) -> Result<Self> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ArchiveError::Stream(format!(
                "[archive.jetstream]: {}",
                problems.join("; ")
            )));
        }
        let client = connect(&config.url, "yagura-archive").await?;
        let max_payload = client.server_info().max_payload;
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .build(client);
        let wanted = stream::Config {
            name: config.stream.clone(),
            description: Some(config.description()),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(120),
            max_age: config
                .max_age_seconds
                .map_or(Duration::ZERO, Duration::from_secs),
            max_bytes: config.max_bytes.unwrap_or(-1),
            allow_direct: true,
            ..Default::default()
        };
        let mut stream = context
            .get_or_create_stream(wanted)
            .await
            .map_err(|e| stream_error(&format!("opening stream {}", config.stream), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| stream_error("reading the stream's state", e))?;
        let recorded = info.config.description.clone().unwrap_or_default();
        if recorded != config.description() {
            return Err(ArchiveError::Stream(format!(
                "stream {} was made as {recorded:?}, the configuration says {:?}; the \
                 number of partitions cannot change on an existing stream",
                config.stream,
                config.description()
            )));
        }
        let last = info.state.last_sequence;
        let (committed, _) = watch::channel(last + 1);
        Ok(JetStreamArchive {
            config,
            context,
            stream,
            runtime: tokio::runtime::Handle::current(),
            max_payload,
            tails: Mutex::default(),
            last: Mutex::default(),
            committed,
        })
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// The largest message the NATS server takes: batches beyond it are refused (413).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Deletes the stream (tests, and `yagura` clean-ups of throwaway clusters).
    pub async fn delete(self) -> Result<()> {
        self.context
            .delete_stream(&self.config.stream)
            .await
            .map(|_| ())
            .map_err(|e| stream_error("deleting the stream", e))
    }

    /// The stream sequence after the last message, now (what a consumer that has read
    /// everything has as its offset when nothing is filtered out).
    pub async fn end(&self) -> Result<u64> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| stream_error("reading the stream's state", e))?;
        Ok(info.state.last_sequence + 1)
    }

    /// A reader of one partition's records from stream sequence `offset` on.
    pub fn partition_reader(&self, partition: u32, offset: u64) -> Result<JetStreamReader> {
        Ok(self.reader_filtered(self.config.partition_filter(partition), offset))
    }

    /// The record at a stream sequence (provenance look-ups).
    pub async fn record_at(&self, offset: u64) -> Result<Option<Record>> {
        match self.stream.get_raw_message(offset).await {
            Ok(message) => Ok(Some(Record {
                offset,
                next_offset: offset + 1,
                received_at_ms: received_at(&message.headers),
                batch: message.payload.to_vec(),
            })),
            Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(stream_error("reading a record", e)),
        }
    }

    fn reader_filtered(&self, filter: String, offset: u64) -> JetStreamReader {
        let (records, receiving) = mpsc::channel(READ_AHEAD);
        let start = offset.max(1);
        let (end, end_watch) = watch::channel(start);
        let stream = self.stream.clone();
        let pump = self.runtime.spawn(async move {
            if let Err(error) = pump(stream, filter, start, &records, &end).await {
                let _ = records.send(Err(error)).await;
            }
        });
        JetStreamReader {
            offset: start,
            receiving,
            end: end_watch,
            pump,
        }
    }

    async fn load_tail(&self, agent: Uuid) -> Result<AgentTail> {
        let subject = self.config.subject(agent);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let sequence = message
                    .headers
                    .get(SEQUENCE_HEADER)
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| ArchiveError::Corrupt {
                        path: subject.clone(),
                        position: message.sequence,
                        reason: format!("the last batch has no {SEQUENCE_HEADER} header"),
                    })?;
                Ok(AgentTail {
                    known: true,
                    sequence: Some(sequence),
                    stream_sequence: message.sequence,
                })
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(AgentTail {
                    known: true,
                    sequence: None,
                    stream_sequence: 0,
                })
            }
            Err(e) => Err(stream_error("reading an agent's last batch", e)),
        }
    }

    /// The highest sequence of `agent` in the stream, whichever gateway archived it
    /// (`Archive::last_sequence` knows only this process's appends).
    pub async fn last_archived(&self, agent: Uuid) -> Result<Option<u64>> {
        Ok(self.load_tail(agent).await?.sequence)
    }

    fn tail_lock(&self, agent: Uuid) -> Arc<tokio::sync::Mutex<AgentTail>> {
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tails.entry(agent).or_default())
    }

    fn remember(&self, agent: Uuid, sequence: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entry = last.entry(agent).or_insert(sequence);
        *entry = (*entry).max(sequence);
    }
}

impl Archive for JetStreamArchive {
    type Reader = JetStreamReader;

    async fn append(&self, agent: Uuid, sequence: u64, batch: Vec<u8>) -> Result<Appended> {
        let lock = self.tail_lock(agent);
        let mut tail = lock.lock().await;
        let subject = self.config.subject(agent);
        // Headers and subject travel in the same message; keep 4 KiB for them.
        let limit = self.max_payload.saturating_sub(4096);
        if batch.len() > limit {
            return Err(ArchiveError::TooLarge {
                size: batch.len(),
                limit,
            });
        }
        let payload = bytes::Bytes::from(batch);
        for _ in 0..CONFLICT_RETRIES {
            if !tail.known {
                *tail = self.load_tail(agent).await?;
            }
            if let Some(last) = tail.sequence {
                self.remember(agent, last);
                if sequence <= last {
                    return Ok(Appended::Duplicate {
                        last_sequence: last,
                    });
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{agent}:{sequence}").as_str(),
            );
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                tail.stream_sequence.to_string().as_str(),
            );
            headers.insert(SEQUENCE_HEADER, sequence.to_string().as_str());
            headers.insert(
                RECEIVED_HEADER,
                chrono::Utc::now().timestamp_millis().to_string().as_str(),
            );
            let sent = self
                .context
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
                .map_err(|e| stream_error("publishing a batch", e))?;
            match sent.await {
                Ok(ack) if ack.duplicate => {
                    // Published before (an acknowledgement lost on the way back).
                    tail.known = false;
                    return Ok(Appended::Duplicate {
                        last_sequence: sequence,
                    });
                }
                Ok(ack) => {
                    let previous_sequence = tail.sequence;
                    *tail = AgentTail {
                        known: true,
                        sequence: Some(sequence),
                        stream_sequence: ack.sequence,
                    };
                    self.remember(agent, sequence);
                    self.committed
                        .send_modify(|end| *end = (*end).max(ack.sequence + 1));
                    return Ok(Appended::Accepted {
                        offset: ack.sequence,
                        previous_sequence,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another gateway appended for this agent: read its last batch again.
                    tail.known = false;
                }
                Err(e) => {
                    // In doubt (a timeout may still land): read the subject again next time.
                    tail.known = false;
                    return Err(stream_error("waiting for JetStream's acknowledgement", e));
                }
            }
        }
        Err(ArchiveError::Stream(format!(
            "agent {agent}: {CONFLICT_RETRIES} conflicting appends in a row from other gateways"
        )))
    }

    fn last_sequence(&self, agent: Uuid) -> Option<u64> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&agent).copied()
    }

    fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn reader(&self, offset: u64) -> Result<JetStreamReader> {
        Ok(self.reader_filtered(format!("{}.>", self.config.subject_prefix), offset))
    }

    // Consumers of a JetStream archive keep their positions themselves (in their index
    // commits and key-value snapshots) and the stream's limits, not consumers, decide
    // what is dropped; ingest backpressure comes from JetStream's own limits.
    fn commit_consumer_offset(&self, _consumer: &str, _offset: u64) {}

    fn release_consumer(&self, _consumer: &str) {}

    fn consumer_offsets(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

fn received_at(headers: &HeaderMap) -> i64 {
    headers
        .get(RECEIVED_HEADER)
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// Feeds one filtered view of the stream, from `start`, into `records`; `end` follows
/// the stream sequence after the last record handed over.
///
/// An ephemeral pull consumer without acknowledgements, asked for up to [`READ_AHEAD`]
/// records at a time, and only once the previous ones are handed over. Nothing is in
/// flight while the reader is slow, so the server has no heartbeats to miss; a consumer
/// the server lost (a restart, a long pause beyond its inactivity threshold) is made
/// again here at the reader's own position, not from the stream's start.
async fn pump(
    stream: stream::Stream,
    filter: String,
    start: u64,
    records: &mpsc::Sender<Result<Record>>,
    end: &watch::Sender<u64>,
) -> Result<()> {
    let mut expected = start;
    let mut pause = Duration::from_millis(250);
    loop {
        let consumer = tokio::select! {
            made = reader_consumer(&stream, &filter, expected) => made?,
            () = records.closed() => return Ok(()),
        };
        // Without acknowledgements the server counts a record delivered once sent: one
        // lost on the way (a reconnect mid-pull) shows only as a gap in the consumer's
        // own sequence, which starts at 1 and has no holes. A gap makes a new consumer
        // at `expected`, so nothing is skipped.
        let mut delivered = 0;
        let mut handed_over = false;
        'pulling: loop {
            let fetched = tokio::select! {
                fetched = fetch(&consumer) => fetched,
                () = records.closed() => return Ok(()),
            };
            let (messages, failure) = match fetched {
                Ok(batch) => batch,
                Err(error) => (Vec::new(), Some(error)),
            };
            for message in messages {
                let info = message
                    .info()
                    .map_err(|e| stream_error("a message without stream metadata", e))?;
                let sequence = info.stream_sequence;
                if info.consumer_sequence != delivered + 1 {
                    tracing::debug!(%filter, from = expected, "a record lost in delivery");
                    break 'pulling;
                }
                delivered = info.consumer_sequence;
                if sequence < expected {
                    continue;
                }
                handed_over = true;
                expected = sequence + 1;
                let record = Record {
                    offset: sequence,
                    next_offset: sequence + 1,
                    received_at_ms: message.headers.as_ref().map_or(0, received_at),
                    batch: message.payload.to_vec(),
                };
                if records.send(Ok(record)).await.is_err() {
                    return Ok(());
                }
                end.send_replace(sequence + 1);
            }
            if let Some(error) = failure {
                tracing::debug!(%filter, from = expected, %error, "stream reader made again");
                break;
            }
        }
        // The old consumer goes now rather than at its inactivity limit; one the server
        // already lost is not there to delete.
        let _ = stream.delete_consumer(&consumer.cached_info().name).await;
        // Quick again after a consumer that delivered, slower while every new one fails
        // at once (the server is going away).
        pause = if handed_over {
            Duration::from_millis(250)
        } else {
            (pause * 2).min(Duration::from_secs(5))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = records.closed() => return Ok(()),
        }
    }
}

/// How long a pull waits on the server for a first record.
const PULL_WAIT: Duration = Duration::from_secs(2);

/// How long the server keeps a reader's consumer while nobody pulls (a reader whose
/// indexer is busy); past it the pump makes a new one.
const READER_INACTIVE: Duration = Duration::from_secs(300);

async fn reader_consumer(
    stream: &stream::Stream,
    filter: &str,
    from: u64,
) -> Result<consumer::PullConsumer> {
    let deliver_policy = if from <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: READER_INACTIVE,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error("creating a reader", e))
}

/// Up to [`READ_AHEAD`] records, fewer when the stream has no more within [`PULL_WAIT`];
/// with the error that cut the pull short, if one did (what came before it is kept).
async fn fetch(
    consumer: &consumer::PullConsumer,
) -> std::result::Result<(Vec<jetstream::Message>, Option<String>), String> {
    let mut batch = consumer
        .batch()
        .max_messages(READ_AHEAD)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(error) => return Ok((messages, Some(error.to_string()))),
        }
    }
    Ok((messages, None))
}

/// Reads a filtered view of the stream in order. A task on the runtime pulls ahead (up to
/// [`READ_AHEAD`] records); the consumer's thread takes them without blocking.
pub struct JetStreamReader {
    offset: u64,
    receiving: mpsc::Receiver<Result<Record>>,
    end: watch::Receiver<u64>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for JetStreamReader {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl JetStreamReader {
    /// Waits (on the runtime) for the next record, at most `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Record>> {
        match tokio::time::timeout(timeout, self.receiving.recv()).await {
            Ok(Some(Ok(record))) => {
                self.offset = record.next_offset;
                Ok(Some(record))
            }
            Ok(Some(Err(error))) => Err(error),
            Ok(None) => Err(ArchiveError::Stream("the stream reader stopped".into())),
            Err(_) => Ok(None),
        }
    }
}

impl RecordSource for JetStreamReader {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn committed_end(&self) -> u64 {
        if !self.receiving.is_empty() {
            // More is waiting: the end is beyond the offset.
            (*self.end.borrow()).max(self.offset + 1)
        } else {
            self.offset
        }
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.end.clone()
    }

    fn drain_on_stop(&self) -> bool {
        false
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        match self.receiving.try_recv() {
            Ok(Ok(record)) => {
                self.offset = record.next_offset;
                Ok(Some(record))
            }
            Ok(Err(error)) => Err(error),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Err(ArchiveError::Stream("the stream reader stopped".into()))
            }
        }
    }
}
