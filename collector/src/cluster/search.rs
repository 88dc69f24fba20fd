//! Searching a cluster: an api node fans a search out to the indexers holding the
//! partitions and merges their parts ([`crate::index::merge_shards`]).
//!
//! Requests travel as NATS request/reply on `_yagura.<stream>.search.<node>`: every node
//! is already connected to NATS, so indexers need no listener, certificate or token of
//! their own, and NATS's own accounts and TLS protect the subjects. A request names the
//! partitions it wants from that node; a node answers only for partitions it holds now,
//! so a partition that moved is never answered twice (the api node reads the leases
//! again and asks the new holder).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::index::{
    EventIndex, IndexError, SearchRequest, SearchResult, ShardResult, interval_for, merge_shards,
};

/// The role whose leases say who holds a partition's index.
pub const INDEXER_ROLE: &str = "indexer";

/// The subject a node answers shard searches on.
pub fn search_subject(stream: &str, node: &str) -> String {
    format!("_yagura.{stream}.search.{node}")
}

/// The partitions' indices an indexer node holds now, by partition.
pub type Shards = Arc<RwLock<BTreeMap<u32, EventIndex>>>;

/// A search as it travels to an indexer node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardQuery {
    pub partitions: Vec<u32>,
    pub query: String,
    pub since_micros: Option<i64>,
    pub until_micros: Option<i64>,
    pub limit: usize,
    pub oldest_first: bool,
    /// The aggregations as the analyst wrote them (`terms:source.ip,...`).
    pub aggs: String,
    pub after: Option<String>,
    pub fields: Vec<String>,
    pub count_total: bool,
    /// The date-histogram interval every shard uses (chosen by the api node).
    pub interval: Option<String>,
    /// Asks for the oldest and newest matching times only (for the interval).
    pub edges_only: bool,
}

/// An indexer node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShardAnswer {
    Part(ShardResult),
    Edges(Option<i64>, Option<i64>),
    /// Partitions asked for that this node does not hold (any more).
    NotHere(Vec<u32>),
    /// The query or an aggregation is wrong (the client's mistake, a 400).
    Invalid(String),
    Failed(String),
}

impl ShardQuery {
    fn new(request: &SearchRequest, interval: Option<&str>) -> Self {
        ShardQuery {
            partitions: Vec::new(),
            query: request.query.clone(),
            since_micros: request.since.map(|t| t.timestamp_micros()),
            until_micros: request.until.map(|t| t.timestamp_micros()),
            limit: request.limit,
            oldest_first: request.oldest_first,
            aggs: request
                .aggs
                .iter()
                .map(crate::index::aggs::result_key)
                .collect::<Vec<_>>()
                .join(","),
            after: request.after.map(|c| c.to_string()),
            fields: request.fields.clone(),
            count_total: request.count_total,
            interval: interval.map(str::to_string),
            edges_only: false,
        }
    }

    fn request(&self) -> Result<SearchRequest, String> {
        let time = |micros: Option<i64>| micros.and_then(DateTime::from_timestamp_micros);
        Ok(SearchRequest {
            query: self.query.clone(),
            since: time(self.since_micros),
            until: time(self.until_micros),
            limit: self.limit,
            oldest_first: self.oldest_first,
            aggs: crate::search::aggs::parse_aggs(&self.aggs).map_err(|e| e.to_string())?,
            after: self.after.as_deref().map(str::parse).transpose()?,
            fields: self.fields.clone(),
            count_total: self.count_total,
        })
    }
}

/// Answers one shard query from the partitions held.
pub fn answer(shards: &Shards, query: &ShardQuery) -> ShardAnswer {
    let request = match query.request() {
        Ok(request) => request,
        Err(problem) => return ShardAnswer::Invalid(problem),
    };
    let held: Vec<(u32, EventIndex)> = {
        let shards = shards.read().unwrap_or_else(|p| p.into_inner());
        query
            .partitions
            .iter()
            .filter_map(|p| shards.get(p).map(|i| (*p, i.clone())))
            .collect()
    };
    let missing: Vec<u32> = query
        .partitions
        .iter()
        .copied()
        .filter(|p| !held.iter().any(|(h, _)| h == p))
        .collect();
    if !missing.is_empty() {
        return ShardAnswer::NotHere(missing);
    }
    let failed = |e: IndexError| match e {
        IndexError::Syntax(_)
        | IndexError::Compile(_)
        | IndexError::Query(_)
        | IndexError::Aggregation(_) => ShardAnswer::Invalid(e.to_string()),
        other => ShardAnswer::Failed(other.to_string()),
    };
    if query.edges_only {
        let mut edges = (None, None);
        for (_, index) in &held {
            match index.time_edges(&request) {
                Ok(found) => edges = widest(edges, found),
                Err(e) => return failed(e),
            }
        }
        return ShardAnswer::Edges(edges.0, edges.1);
    }
    let mut parts = Vec::with_capacity(held.len());
    for (_, index) in &held {
        match index.search_shard(&request, query.interval.as_deref()) {
            Ok(part) => parts.push(part),
            Err(e) => return failed(e),
        }
    }
    match crate::index::combine_shards(&request, parts) {
        Ok(part) => ShardAnswer::Part(part),
        Err(e) => failed(e),
    }
}

fn widest(
    a: (Option<i64>, Option<i64>),
    b: (Option<i64>, Option<i64>),
) -> (Option<i64>, Option<i64>) {
    let oldest = match (a.0, b.0) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    (oldest, a.1.max(b.1))
}

/// Serves shard searches for this node until `cancel`.
pub async fn serve(
    client: async_nats::Client,
    subject: String,
    shards: Shards,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = client.subscribe(subject).await?;
    loop {
        let message = tokio::select! {
            message = requests.next() => message,
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(message) = message else {
            return Ok(());
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let shards = Arc::clone(&shards);
        let client = client.clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<ShardQuery>(&message.payload) {
                Ok(query) => tokio::task::spawn_blocking(move || answer(&shards, &query))
                    .await
                    .unwrap_or_else(|e| ShardAnswer::Failed(e.to_string())),
                Err(e) => ShardAnswer::Invalid(format!("shard query: {e}")),
            };
            let mut body = serde_json::to_vec(&answer)
                .unwrap_or_else(|e| failed_body(&format!("encoding the answer: {e}")));
            // An answer NATS would refuse is said to be too large, not left unanswered.
            let limit = client.server_info().max_payload;
            if body.len() > limit {
                body = failed_body(&format!(
                    "the answer of {} bytes exceeds NATS's max_payload of {limit} bytes: ask \
                     for fewer hits or fields",
                    body.len()
                ));
            }
            if let Err(error) = client.publish(reply, body.into()).await {
                tracing::warn!(%error, "answering a shard search");
            }
        });
    }
}

fn failed_body(problem: &str) -> Vec<u8> {
    serde_json::to_vec(&ShardAnswer::Failed(problem.to_string())).unwrap_or_default()
}

/// Why a cluster search failed.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// The request is wrong (a 400).
    #[error("{0}")]
    Invalid(String),
    /// Some partition has no indexer now, or its indexer did not answer (a 503).
    #[error("{0}")]
    Unavailable(String),
}

/// An api node's view of the indexers: who holds what, and how to ask them.
#[derive(Clone)]
pub struct FanOut {
    client: async_nats::Client,
    leases: kv::Store,
    stream: String,
    partitions: u32,
    timeout: Duration,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("stream", &self.stream)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl FanOut {
    pub fn new(
        client: async_nats::Client,
        leases: kv::Store,
        stream: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Self {
        FanOut {
            client,
            leases,
            stream: stream.to_string(),
            partitions,
            timeout,
        }
    }

    /// Searches every partition: the automatic histogram interval from every shard's
    /// edges first when needed, then each node's part, merged.
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResult, FanOutError> {
        let auto = request.aggs.iter().any(crate::index::needs_auto_interval);
        let interval = if auto {
            let mut query = ShardQuery::new(request, None);
            query.edges_only = true;
            let mut edges = (None, None);
            for answer in self.ask_all(&query).await? {
                match answer {
                    ShardAnswer::Edges(oldest, newest) => edges = widest(edges, (oldest, newest)),
                    other => return Err(unexpected(other)),
                }
            }
            Some(interval_for(request, edges))
        } else {
            None
        };
        let query = ShardQuery::new(request, interval);
        let mut parts = Vec::new();
        for answer in self.ask_all(&query).await? {
            match answer {
                ShardAnswer::Part(part) => parts.push(part),
                other => return Err(unexpected(other)),
            }
        }
        merge_shards(request, interval, parts).map_err(|e| FanOutError::Invalid(e.to_string()))
    }

    /// Asks every holder for its partitions; a partition that moved meanwhile is asked of
    /// its new holder (a few times, as leases settle).
    async fn ask_all(&self, query: &ShardQuery) -> Result<Vec<ShardAnswer>, FanOutError> {
        let mut pending: BTreeSet<u32> = (0..self.partitions).collect();
        let mut answers = Vec::new();
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            let owners = super::leases::owners(&self.leases, INDEXER_ROLE)
                .await
                .map_err(|e| FanOutError::Unavailable(e.to_string()))?;
            let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for partition in &pending {
                if let Some(node) = owners.get(partition) {
                    by_node.entry(node.clone()).or_default().push(*partition);
                }
            }
            let asks = by_node.into_iter().map(|(node, partitions)| {
                let mut query = query.clone();
                query.partitions = partitions.clone();
                async move { (partitions, self.ask(&node, &query).await) }
            });
            for (partitions, answer) in futures_util::future::join_all(asks).await {
                match answer {
                    Ok(ShardAnswer::NotHere(_)) | Err(FanOutError::Unavailable(_)) => {}
                    Ok(ShardAnswer::Invalid(problem)) => {
                        return Err(FanOutError::Invalid(problem));
                    }
                    Ok(ShardAnswer::Failed(problem)) => {
                        return Err(FanOutError::Unavailable(problem));
                    }
                    Ok(answer) => {
                        for p in &partitions {
                            pending.remove(p);
                        }
                        answers.push(answer);
                    }
                    Err(error) => return Err(error),
                }
            }
            if pending.is_empty() {
                return Ok(answers);
            }
        }
        Err(FanOutError::Unavailable(format!(
            "no indexer answered for partition(s) {pending:?}; the search would be incomplete"
        )))
    }

    async fn ask(&self, node: &str, query: &ShardQuery) -> Result<ShardAnswer, FanOutError> {
        let body = serde_json::to_vec(query).map_err(|e| FanOutError::Invalid(e.to_string()))?;
        let asked = self.client.send_request(
            search_subject(&self.stream, node),
            async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(self.timeout)),
        );
        let reply = tokio::time::timeout(self.timeout, asked)
            .await
            .map_err(|_| FanOutError::Unavailable(format!("indexer {node} did not answer")))?
            .map_err(|e| FanOutError::Unavailable(format!("indexer {node}: {e}")))?;
        serde_json::from_slice(&reply.payload)
            .map_err(|e| FanOutError::Unavailable(format!("indexer {node} answered: {e}")))
    }
}

fn unexpected(answer: ShardAnswer) -> FanOutError {
    FanOutError::Unavailable(format!("unexpected shard answer: {answer:?}"))
}
