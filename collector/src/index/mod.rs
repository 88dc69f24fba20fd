//! The event store: tantivy, one index per UTC day, fed from the archive in order.
//!
//! This is the only module that touches tantivy types. [`days`] is the layout on disk,
//! [`writer`] the [`Indexer`] (archive → day indices, exactly once across crashes, and
//! retention), this file the schema, the document of an event and [`EventIndex`], which
//! answers searches over the days a request's time range needs.
//!
//! Schema: typed keyword fields for the fields the data path relies on, `message` and
//! `event.original` as full text, a JSON field per ECS top-level field set so any nested
//! ECS field is searchable by its dotted name, and `_source` (the event's JSON line as
//! archived, with `event.ingested` stored beside it) plus the provenance of each event
//! (the id of the agent that signed its batch, the batch sequence and the archive offset
//! of the batch). The indexer registers its committed offset with
//! the archive as consumer `indexer`, so archive retention never deletes what it has not
//! indexed and ingest can push back when it lags.

use std::ops::Bound;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::collector::sort_key::SortByStaticFastValue;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, JsonObjectOptions, STORED, STRING,
    Schema, TEXT, TextFieldIndexing, TextOptions, Value as _,
};
use tantivy::{DocAddress, Index, IndexWriter, Order, TantivyDocument, Term};
use yagura_shared::Event;

use crate::archive::ArchiveError;
use crate::search::query::{self, SyntaxError};
#[cfg(test)]
use days::DayReader;
use days::{DaySearcher, DaySet};
use document::{ArchivedEvent, BatchOrigin, DocFields, document};

pub mod aggs;
pub mod compile;
mod days;
mod document;
mod writer;

pub use compile::CompileError;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("query: {0}")]
    Query(String),
    /// The query text does not parse.
    #[error("query syntax: {0}")]
    Syntax(#[from] SyntaxError),
    /// The query parses but asks something of a field it cannot do.
    #[error("query: {0}")]
    Compile(#[from] CompileError),
    /// An aggregation that cannot run (field, limits).
    #[error("aggregation: {0}")]
    Aggregation(String),
    #[error("index commit payload is unreadable: {0}")]
    Payload(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Typed keyword fields, searchable by exact value and usable as fast fields.
const KEYWORD_FIELDS: &[&str] = &[
    "event.id",
    "event.dataset",
    "event.action",
    "event.outcome",
    "event.kind",
    "host.name",
    "agent.id",
    "user.name",
    "log.file.path",
    "tags",
    "event.category",
    "process.name",
    "process.executable",
    "process.command_line",
    "file.path",
    "url.path",
    "rule.id",
];
/// Keyword fields that are fast fields only, not in the inverted index: a unique value
/// per event (a term dictionary as large as the index, rebuilt at every merge) for a
/// field that is only ever looked up by its exact value, which tantivy answers from the
/// fast field. Wildcards and regular expressions on them are refused with a clear error.
const EXACT_ONLY_KEYWORDS: &[&str] = &["event.id"];
/// IP address fields: exact, range and CIDR queries (IPv4 stored as IPv4-mapped IPv6).
const IP_FIELDS: &[&str] = &["source.ip", "destination.ip", "client.ip", "server.ip"];
/// Whole-number fields: exact and range queries.
const NUMBER_FIELDS: &[&str] = &[
    "source.port",
    "destination.port",
    "http.response.status_code",
    "process.pid",
];
/// Full-text fields, the default fields of a query without a field name.
const TEXT_FIELDS: &[&str] = &["message", "event.original"];
/// ECS top-level field sets indexed as JSON, so `source.ip:…` or `process.name:…` work.
const JSON_ROOTS: &[&str] = &[
    "agent",
    "client",
    "destination",
    "dns",
    "error",
    "event",
    "file",
    "host",
    "http",
    "labels",
    "log",
    "network",
    "process",
    "server",
    "service",
    "source",
    "url",
    "user",
    "user_agent",
    "yagura",
];
const TIMESTAMP: &str = "@timestamp";
const SOURCE: &str = "_source";
/// `event.ingested` of a `_source` stored as it arrived (see [`document::document`]).
const INGESTED: &str = "_ingested";
const ARCHIVE_OFFSET: &str = "_archive_offset";
const BATCH_SEQUENCE: &str = "_batch_sequence";
const BATCH_AGENT: &str = "_batch_agent";
/// The event's line (from 1) in its batch's payload: with the archive offset, the event's
/// unique place in the archive, and the last key of the result order.
const BATCH_LINE: &str = "_batch_line";

pub use writer::{
    DeletedDay, INDEXER_CONSUMER, IndexRetention, Indexer, IndexerOptions, IndexerStats,
    MAX_OPEN_WRITERS,
};

fn build_schema() -> Schema {
    let mut builder = Schema::builder();
    // The time and the archive position are fast fields only: every query on them is a
    // range or a sort, which tantivy runs on the fast field, and an inverted index of
    // nearly unique values made the term dictionaries the indexer's largest cost.
    builder.add_date_field(
        TIMESTAMP,
        DateOptions::default()
            .set_fast()
            .set_precision(DateTimePrecision::Microseconds),
    );
    for name in KEYWORD_FIELDS {
        if EXACT_ONLY_KEYWORDS.contains(name) {
            builder.add_text_field(name, FAST);
        } else {
            builder.add_text_field(name, STRING | FAST);
        }
    }
    for name in TEXT_FIELDS {
        builder.add_text_field(name, TEXT);
    }
    for name in IP_FIELDS {
        builder.add_ip_addr_field(name, INDEXED | FAST);
    }
    for name in NUMBER_FIELDS {
        builder.add_u64_field(name, INDEXED | FAST);
    }
    let json = JsonObjectOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(tantivy::schema::IndexRecordOption::Basic),
        )
        .set_expand_dots_enabled();
    for name in JSON_ROOTS {
        builder.add_json_field(name, json.clone());
    }
    builder.add_text_field(SOURCE, TextOptions::default().set_stored());
    builder.add_text_field(INGESTED, TextOptions::default().set_stored());
    builder.add_u64_field(ARCHIVE_OFFSET, FAST | STORED);
    builder.add_u64_field(BATCH_SEQUENCE, STORED);
    builder.add_text_field(BATCH_AGENT, STRING | STORED);
    builder.add_u64_field(BATCH_LINE, FAST | STORED);
    builder.build()
}

fn field(schema: &Schema, name: &str) -> Result<Field> {
    schema
        .get_field(name)
        .map_err(|e| IndexError::Query(format!("schema field {name}: {e}")))
}

/// Where an indexed event came from: the archived, signed batch that carried it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    /// The agent whose key signed the batch (not merely the `agent.id` the event claims).
    pub agent_id: String,
    pub archive_offset: u64,
    pub batch_sequence: u64,
    /// The event's line (from 1) in the batch's decompressed payload.
    pub line: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub event: Value,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// Number of events matching the query and time range (without `count_total`, the
    /// number of hits in this page).
    pub total: usize,
    /// The newest `limit` of them (or oldest, on request).
    pub hits: Vec<Hit>,
    /// Results of the requested aggregations, by the spec as written
    /// (Elasticsearch-compatible shapes: `buckets`, `value`, `values`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregations: Option<Value>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Day indices the query ran on, of `days_total`: the others hold no event in the
    /// time range.
    pub days_searched: usize,
    pub days_total: usize,
}

/// Where a page ends in the result order (time, then the event's place in the archive,
/// which is unique): the next page starts strictly after it. Events that arrive later
/// sort into place without shifting pages already read, so paging is stable while writes
/// continue. Written as `MICROS.OFFSET.LINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub micros: i64,
    pub archive_offset: u64,
    pub line: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.micros, self.archive_offset, self.line)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{text}` is not a cursor from an earlier page");
        let mut parts = text.splitn(3, '.');
        let mut next = || parts.next().ok_or_else(bad);
        Ok(Cursor {
            micros: next()?.parse().map_err(|_| bad())?,
            archive_offset: next()?.parse().map_err(|_| bad())?,
            line: next()?.parse().map_err(|_| bad())?,
        })
    }
}

/// A search request, already validated.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub since: Option<DateTime<Utc>>,
    /// Only events at or before this time.
    pub until: Option<DateTime<Utc>>,
    pub limit: usize,
    pub oldest_first: bool,
    /// Aggregations over every matching event (not only the returned page).
    pub aggs: Vec<crate::search::aggs::AggSpec>,
    /// Start after this point of the result order (the previous page's `next_cursor`).
    pub after: Option<Cursor>,
    /// Dotted fields to keep in each hit's event (all when empty).
    pub fields: Vec<String>,
    /// Count every match into `total` (an export reading page after page does not need
    /// it, and it costs a pass over the matches per page).
    pub count_total: bool,
}

impl SearchRequest {
    /// `query` over all time, the newest 100 first, no aggregations, whole events.
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            since: None,
            until: None,
            limit: 100,
            oldest_first: false,
            aggs: Vec::new(),
            after: None,
            fields: Vec::new(),
            count_total: true,
        }
    }
}

/// Read side of the event store: the day indices, each with one long-lived reader; a
/// search takes a searcher of every day its time range needs.
#[derive(Clone)]
pub struct EventIndex {
    days: DaySet,
    /// An empty index with the schema: queries compile against it once for every day.
    template: Index,
}

impl std::fmt::Debug for EventIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventIndex")
    }
}

/// A hit's place in the result order, comparable across days.
pub type OrderKey = (i64, u64, u64);

/// A day's searcher and the span of its events' times (Unix microseconds).
type DayInRange = (DaySearcher, Option<(i64, i64)>);

impl EventIndex {
    fn from_days(days: DaySet) -> Self {
        EventIndex {
            days,
            template: Index::create_in_ram(build_schema()),
        }
    }

    /// A store of one index (tests of the stages that read it).
    #[cfg(test)]
    pub(crate) fn single(index: Index) -> Self {
        let set = DaySet::default();
        set.insert(DayReader::new(Utc::now().date_naive(), index).expect("reader"));
        Self::from_days(set)
    }

    /// Opens the store under `root` read-only (for tools that do not run the indexer).
    pub fn open_read_only(root: &Path) -> Result<Self> {
        Ok(Self::from_days(DaySet::open(root)?))
    }

    /// Runs a query in Yagura's query language (docs/query-language.md; empty or `*`
    /// matches everything) over the days its time range needs.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResult> {
        let interval = if request.aggs.iter().any(needs_auto_interval) {
            Some(interval_for(request, self.time_edges(request)?))
        } else {
            None
        };
        let shard = self.search_shard(request, interval)?;
        merge_shards(request, interval, vec![shard])
    }

    /// The query of `request` with its time range.
    fn compiled(&self, request: &SearchRequest) -> Result<Box<dyn Query>> {
        let schema = self.template.schema();
        let tree = query::parse(&request.query)?;
        let mut query = compile::compile(&self.template, &tree, Utc::now())?;
        if request.since.is_some() || request.until.is_some() {
            let ts = field(&schema, TIMESTAMP)?;
            let bound = |at: Option<DateTime<Utc>>| match at {
                Some(at) => Bound::Included(Term::from_field_date(
                    ts,
                    tantivy::DateTime::from_timestamp_micros(at.timestamp_micros()),
                )),
                None => Bound::Unbounded,
            };
            let range = RangeQuery::new(bound(request.since), bound(request.until));
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(range)),
            ]));
        }
        Ok(query)
    }

    /// The days holding events in the time range of `request`, in result order, and how
    /// many days there are in all.
    fn days_for(&self, request: &SearchRequest) -> (Vec<DayInRange>, usize) {
        let all = self.days.searchers();
        let days_total = all.len();
        let wanted = |span: Option<(i64, i64)>| match span {
            None => request.since.is_none() && request.until.is_none(),
            Some((oldest, newest)) => {
                request.since.is_none_or(|t| newest >= t.timestamp_micros())
                    && request.until.is_none_or(|t| oldest <= t.timestamp_micros())
            }
        };
        let mut days: Vec<DayInRange> = all
            .into_iter()
            .map(|d| {
                let span = d.time_span();
                (d, span)
            })
            .filter(|(_, span)| wanted(*span))
            .collect();
        if !request.oldest_first {
            // Newest day first, so older days can be passed over once the page is full.
            days.reverse();
        }
        (days, days_total)
    }

    /// The times (Unix microseconds) of the oldest and the newest event matching
    /// `request`: what the automatic interval of a date histogram is chosen from. A
    /// cluster asks every shard and takes the widest span.
    pub fn time_edges(&self, request: &SearchRequest) -> Result<(Option<i64>, Option<i64>)> {
        let query = self.compiled(request)?;
        let (days, _) = self.days_for(request);
        let edge = |order: Order| -> Result<Option<i64>> {
            let first =
                TopDocs::with_limit(1).order_by_fast_field::<tantivy::DateTime>(TIMESTAMP, order);
            let mut best: Option<i64> = None;
            for (day, _) in &days {
                for (at, _) in day.searcher.search(&query, &first)? {
                    let Some(at) = at.map(tantivy::DateTime::into_timestamp_micros) else {
                        continue;
                    };
                    best = Some(match (best, order) {
                        (None, _) => at,
                        (Some(b), Order::Desc) => b.max(at),
                        (Some(b), Order::Asc) => b.min(at),
                    });
                }
            }
            Ok(best)
        };
        Ok((edge(Order::Asc)?, edge(Order::Desc)?))
    }

    /// This index's part of a search: its total, its first `limit` hits in result order
    /// with their sort keys, and its aggregations in tantivy's intermediate (mergeable)
    /// form — what [`merge_shards`] combines with other shards' parts into one answer.
    /// `interval` replaces the automatic interval of date histograms (every shard must
    /// bucket alike).
    pub fn search_shard(
        &self,
        request: &SearchRequest,
        interval: Option<&str>,
    ) -> Result<ShardResult> {
        let schema = self.template.schema();
        let query = self.compiled(request)?;
        let (days, days_total) = self.days_for(request);
        let order = if request.oldest_first {
            Order::Asc
        } else {
            Order::Desc
        };
        let limit = request.limit.max(1);
        let top = || {
            TopDocs::with_limit(limit).order_by((
                (
                    SortByStaticFastValue::<tantivy::DateTime>::for_field(TIMESTAMP),
                    order,
                ),
                (
                    SortByStaticFastValue::<u64>::for_field(ARCHIVE_OFFSET),
                    order,
                ),
                (SortByStaticFastValue::<u64>::for_field(BATCH_LINE), order),
            ))
        };
        let page: Box<dyn Query> = match request.after {
            None => query.box_clone(),
            Some(after) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, query.box_clone()),
                (Occur::Must, after_cursor(&schema, after, order)?),
            ])),
        };
        // The total counts the whole result; the page starts after the cursor.
        let mut total = 0usize;
        let mut found: Vec<(OrderKey, usize, DocAddress)> = Vec::new();
        for (position, (day, span)) in days.iter().enumerate() {
            // A day whose every event sorts after a full page adds nothing to it.
            let beyond_page = found.len() >= limit
                && span.is_some_and(|(oldest, newest)| {
                    let last = found[limit - 1].0.0;
                    match order {
                        Order::Desc => newest < last,
                        Order::Asc => oldest > last,
                    }
                });
            if beyond_page {
                if request.count_total {
                    total += day.searcher.search(&query, &Count)?;
                }
                continue;
            }
            let docs = if request.after.is_none() && request.count_total {
                let (count, docs) = day.searcher.search(&query, &(Count, top()))?;
                total += count;
                docs
            } else {
                if request.count_total {
                    total += day.searcher.search(&query, &Count)?;
                }
                day.searcher.search(&page, &top())?
            };
            found.extend(docs.into_iter().map(|((at, offset, line), address)| {
                let key = (
                    at.map_or(i64::MIN, tantivy::DateTime::into_timestamp_micros),
                    offset.unwrap_or(0),
                    line.unwrap_or(0),
                );
                (key, position, address)
            }));
            sort_in_order(&mut found, order, |f| f.0);
        }
        let mut hits = Vec::with_capacity(found.len().min(limit));
        for (key, position, address) in found.into_iter().take(request.limit) {
            let mut hit = hit(&days[position].0.searcher, address)?;
            if !request.fields.is_empty() {
                hit.event = select_fields(&hit.event, &request.fields);
            }
            hits.push(ShardHit { key, hit });
        }
        let searchers: Vec<&DaySearcher> = days.iter().map(|(d, _)| d).collect();
        let aggregations = if request.aggs.is_empty() || (request.count_total && total == 0) {
            None
        } else {
            aggregate(
                &searchers,
                query.as_ref(),
                request,
                interval.unwrap_or("1h"),
            )?
        };
        Ok(ShardResult {
            total,
            hits,
            aggregations,
            days_searched: searchers.len(),
            days_total,
        })
    }

    /// Every indexed copy of the event with this `event.id` (normally one).
    pub fn find_event(&self, event_id: &str) -> Result<Vec<Hit>> {
        let schema = self.template.schema();
        let term = Term::from_field_text(field(&schema, "event.id")?, event_id);
        let query = tantivy::query::TermQuery::new(term, tantivy::schema::IndexRecordOption::Basic);
        // In time order, not by score: `event.id` is a fast field only (see
        // `EXACT_ONLY_KEYWORDS`), which tantivy matches without scoring.
        let newest = TopDocs::with_limit(16)
            .order_by_fast_field::<tantivy::DateTime>(TIMESTAMP, Order::Desc);
        let mut hits = Vec::new();
        for day in self.days.searchers() {
            let docs = day.searcher.search(&query, &newest)?;
            for (_, address) in docs {
                hits.push(hit(&day.searcher, address)?);
            }
        }
        Ok(hits)
    }

    /// Reloads the readers now (tests and tools; the server relies on the reload policy).
    pub fn refresh(&self) -> Result<()> {
        self.days.reload()
    }
}

/// The aggregations of `request` over the matches of `query` in `days`, each day's
/// intermediate results merged (not finalised: top-N and cardinalities are decided once,
/// over every day and every shard, in [`merge_shards`]).
fn aggregate(
    days: &[&DaySearcher],
    query: &dyn Query,
    request: &SearchRequest,
    interval: &str,
) -> Result<Option<IntermediateAggregationResults>> {
    let (aggregations, limits) =
        aggs::request(&request.aggs, interval).map_err(IndexError::Aggregation)?;
    let collector = tantivy::aggregation::DistributedAggregationCollector::from_aggs(
        aggregations,
        tantivy::aggregation::AggContextParams::new(limits, Default::default()),
    );
    let mut merged: Option<IntermediateAggregationResults> = None;
    for day in days {
        let fruit = day
            .searcher
            .search(query, &collector)
            .map_err(aggregation_failed)?;
        match &mut merged {
            None => merged = Some(fruit),
            Some(all) => all.merge_fruits(fruit).map_err(aggregation_failed)?,
        }
    }
    Ok(merged)
}

fn aggregation_failed(e: tantivy::TantivyError) -> IndexError {
    match e {
        tantivy::TantivyError::AggregationError(e) => IndexError::Aggregation(e.to_string()),
        other => IndexError::Tantivy(other),
    }
}

fn sort_in_order<T>(items: &mut [T], order: Order, key: impl Fn(&T) -> OrderKey) {
    items.sort_by(|a, b| match order {
        Order::Desc => key(b).cmp(&key(a)),
        Order::Asc => key(a).cmp(&key(b)),
    });
}

/// The automatic date-histogram interval for `request`, from the oldest and newest
/// matching event's time (Unix microseconds; [`EventIndex::time_edges`], widest over
/// every shard).
pub fn interval_for(request: &SearchRequest, edges: (Option<i64>, Option<i64>)) -> &'static str {
    let time = |micros: Option<i64>| micros.and_then(DateTime::from_timestamp_micros);
    let newest = time(edges.1).unwrap_or_else(Utc::now);
    let oldest = request.since.or(time(edges.0)).unwrap_or(newest);
    aggs::auto_interval(oldest, request.until.map_or(newest, |u| u.min(newest)))
}

/// Several shards' parts of one search made into its answer: totals added, hits sorted
/// into one page, aggregations merged and then finalised once.
pub fn merge_shards(
    request: &SearchRequest,
    interval: Option<&str>,
    shards: Vec<ShardResult>,
) -> Result<SearchResult> {
    let ShardResult {
        mut total,
        hits: found,
        aggregations: merged,
        days_searched,
        days_total,
    } = combine_shards(request, shards)?;
    let limit = request.limit.max(1);
    let next_cursor = found
        .get(limit - 1)
        .filter(|_| found.len() >= request.limit)
        .map(|hit| {
            let (micros, archive_offset, line) = hit.key;
            Cursor {
                micros,
                archive_offset,
                line,
            }
            .to_string()
        });
    let hits: Vec<Hit> = found
        .into_iter()
        .take(request.limit)
        .map(|h| h.hit)
        .collect();
    if !request.count_total {
        total = hits.len();
    }
    let aggregations = match merged {
        Some(merged) if total > 0 && !request.aggs.is_empty() => {
            let (aggregations, limits) = aggs::request(&request.aggs, interval.unwrap_or("1h"))
                .map_err(IndexError::Aggregation)?;
            let results = merged
                .into_final_result(aggregations, limits)
                .map_err(aggregation_failed)?;
            Some(
                serde_json::to_value(&results)
                    .map_err(|e| IndexError::Aggregation(e.to_string()))?,
            )
        }
        _ => None,
    };
    Ok(SearchResult {
        total,
        hits,
        aggregations,
        next_cursor,
        days_searched,
        days_total,
    })
}

/// Several shards' parts combined into one part, still mergeable (an indexer node
/// answering for all the partitions it holds): totals added, the first page of all,
/// aggregations merged but not finalised.
pub fn combine_shards(request: &SearchRequest, shards: Vec<ShardResult>) -> Result<ShardResult> {
    let order = if request.oldest_first {
        Order::Asc
    } else {
        Order::Desc
    };
    let mut combined = ShardResult {
        total: 0,
        hits: Vec::new(),
        aggregations: None,
        days_searched: 0,
        days_total: 0,
    };
    for shard in shards {
        combined.total += shard.total;
        combined.days_searched += shard.days_searched;
        combined.days_total += shard.days_total;
        combined.hits.extend(shard.hits);
        if let Some(part) = shard.aggregations {
            match &mut combined.aggregations {
                None => combined.aggregations = Some(part),
                Some(all) => all.merge_fruits(part).map_err(aggregation_failed)?,
            }
        }
    }
    sort_in_order(&mut combined.hits, order, |h| h.key);
    combined.hits.truncate(request.limit.max(1));
    Ok(combined)
}

/// One hit of a shard, with its place in the result order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardHit {
    pub key: OrderKey,
    pub hit: Hit,
}

/// A shard's part of a search ([`EventIndex::search_shard`]); it travels between cluster
/// nodes as JSON, the aggregations inside as tantivy's intermediate results in postcard
/// (tantivy's own advice: not JSON), base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardResult {
    pub total: usize,
    pub hits: Vec<ShardHit>,
    #[serde(default, with = "intermediate_as_postcard")]
    pub aggregations: Option<IntermediateAggregationResults>,
    pub days_searched: usize,
    pub days_total: usize,
}

mod intermediate_as_postcard {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};
    use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;

    pub fn serialize<S: Serializer>(
        value: &Option<IntermediateAggregationResults>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(value) => {
                let bytes = postcard::to_allocvec(value).map_err(serde::ser::Error::custom)?;
                serializer.serialize_some(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<IntermediateAggregationResults>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// The stored event at `address` with its provenance.
fn hit(searcher: &tantivy::Searcher, address: DocAddress) -> Result<Hit> {
    let schema = searcher.schema();
    let source = field(schema, SOURCE)?;
    let offset = field(schema, ARCHIVE_OFFSET)?;
    let sequence = field(schema, BATCH_SEQUENCE)?;
    let agent = field(schema, BATCH_AGENT)?;
    let line = field(schema, BATCH_LINE)?;
    let ingested = field(schema, INGESTED)?;
    let doc: TantivyDocument = searcher.doc(address)?;
    let mut event = doc
        .get_first(source)
        .and_then(|v| v.as_str())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    if let (Some(at), Value::Object(map)) =
        (doc.get_first(ingested).and_then(|v| v.as_str()), &mut event)
    {
        let mut stored = Event::from_map(std::mem::take(map));
        stored.set_str("event.ingested", at);
        *map = stored.into_map();
    }
    Ok(Hit {
        event,
        provenance: Provenance {
            agent_id: doc
                .get_first(agent)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            archive_offset: doc.get_first(offset).and_then(|v| v.as_u64()).unwrap_or(0),
            batch_sequence: doc
                .get_first(sequence)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            line: doc.get_first(line).and_then(|v| v.as_u64()).unwrap_or(0),
        },
    })
}

/// Everything strictly after `cursor` in the result order (time, archive offset, line;
/// descending or ascending).
fn after_cursor(schema: &Schema, cursor: Cursor, order: Order) -> Result<Box<dyn Query>> {
    let ts = field(schema, TIMESTAMP)?;
    let offset = field(schema, ARCHIVE_OFFSET)?;
    let line = field(schema, BATCH_LINE)?;
    // Not `from_field_date_for_search`: that truncates to the inverted index's seconds,
    // while these ranges run on the fast field, at the field's microseconds.
    let at = Term::from_field_date(ts, tantivy::DateTime::from_timestamp_micros(cursor.micros));
    let beyond = |term: Term| -> Box<dyn Query> {
        Box::new(match order {
            Order::Desc => RangeQuery::new(Bound::Unbounded, Bound::Excluded(term)),
            Order::Asc => RangeQuery::new(Bound::Excluded(term), Bound::Unbounded),
        })
    };
    let equal = |term: Term| -> Box<dyn Query> {
        Box::new(RangeQuery::new(
            Bound::Included(term.clone()),
            Bound::Included(term),
        ))
    };
    let same_batch = |rest: Box<dyn Query>| -> Box<dyn Query> {
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, equal(at.clone())),
            (Occur::Must, rest),
        ]))
    };
    Ok(Box::new(BooleanQuery::new(vec![
        (Occur::Should, beyond(at.clone())),
        (
            Occur::Should,
            same_batch(beyond(Term::from_field_u64(offset, cursor.archive_offset))),
        ),
        (
            Occur::Should,
            same_batch(Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    equal(Term::from_field_u64(offset, cursor.archive_offset)),
                ),
                (Occur::Must, beyond(Term::from_field_u64(line, cursor.line))),
            ]))),
        ),
    ])))
}

/// The event with only `fields` (dotted paths, as nested objects), in their order.
fn select_fields(event: &Value, fields: &[String]) -> Value {
    let Some(map) = event.as_object() else {
        return Value::Null;
    };
    // Through `Event::get`, which knows literal dotted keys too.
    let event = Event::from_map(map.clone());
    let mut out = serde_json::Map::new();
    for path in fields {
        let Some(value) = event.get(path) else {
            continue;
        };
        let mut node = &mut out;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_string(), value.clone());
                break;
            }
            let child = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !child.is_object() {
                *child = Value::Object(serde_json::Map::new());
            }
            match child.as_object_mut() {
                Some(map) => node = map,
                None => break,
            }
        }
    }
    Value::Object(out)
}

/// Whether a date histogram in `spec` (or nested in it) needs an interval chosen.
pub fn needs_auto_interval(spec: &crate::search::aggs::AggSpec) -> bool {
    let own = spec.kind == crate::search::aggs::AggKind::DateHistogram && spec.interval.is_none();
    own || spec.nested.as_deref().is_some_and(needs_auto_interval)
}

/// The header of a batch that was never signed, for documents of events that did not
/// come through the archive (the benchmark's limit, tests).
fn unsigned_header() -> yagura_shared::BatchHeader {
    yagura_shared::BatchHeader {
        agent_id: uuid::Uuid::nil(),
        sequence: 0,
        created_at_ms: 0,
        event_count: 0,
        payload_sha256: [0; 32],
    }
}

/// The limit `yagura bench search` compares the indexer with: JSON `lines` parsed and
/// added straight to a new index in `dir` (same schema, one writer thread of
/// `writer_memory` bytes and batches of [`writer::ADD_BATCH`], as the indexer) and
/// committed once; no archive, no decompression, no commit interval. Returns how many
/// were added.
pub fn index_directly<E: std::fmt::Display>(
    dir: &Path,
    writer_memory: usize,
    lines: impl Iterator<Item = std::result::Result<String, E>>,
) -> Result<u64> {
    let index = days::open_day(dir, Utc::now().date_naive())?;
    let fields = DocFields::new(&index.schema())?;
    let mut writer: IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(1, writer_memory)?;
    let origin = BatchOrigin::new(0, &unsigned_header());
    let mut added = 0u64;
    let mut batch = Vec::with_capacity(writer::ADD_BATCH);
    for line in lines {
        let failed =
            |e: &dyn std::fmt::Display| IndexError::Query(format!("event {}: {e}", added + 1));
        let line = line.map_err(|e| failed(&e))?;
        let event = ArchivedEvent::parse(line.as_bytes()).map_err(|e| failed(&e))?;
        batch.push(tantivy::indexer::UserOperation::Add(document(
            &fields,
            event,
            None,
            &origin,
            added + 1,
        )));
        added += 1;
        if batch.len() == writer::ADD_BATCH {
            writer.run(std::mem::take(&mut batch))?;
        }
    }
    writer.run(batch)?;
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(added)
}

/// The document of an event that arrives as its own serialisation: for tests.
#[cfg(test)]
fn document_of(
    fields: &DocFields,
    event: Event,
    offset: u64,
    line: u64,
    batch: &yagura_shared::BatchHeader,
) -> TantivyDocument {
    let json = event.to_json_line();
    let event = ArchivedEvent::parse(json.as_bytes()).expect("a valid event");
    document(fields, event, None, &BatchOrigin::new(offset, batch), line)
}

/// An in-memory index holding `events` (one batch, lines in order): for tests of the
/// stages that read the index.
#[cfg(test)]
pub(crate) fn index_in_ram(events: &[Event]) -> EventIndex {
    index_in_ram_at(events.iter().map(|e| (0, e)))
}

/// An in-memory index of events at the archive offsets given (their lines counted per
/// offset): shards of one data set in tests.
#[cfg(test)]
pub(crate) fn index_in_ram_at<'a>(events: impl Iterator<Item = (u64, &'a Event)>) -> EventIndex {
    let index = Index::create_in_ram(build_schema());
    let fields = DocFields::new(&index.schema()).expect("fields");
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, 15_000_000)
        .expect("writer");
    let header = unsigned_header();
    let mut lines: std::collections::BTreeMap<u64, u64> = Default::default();
    for (offset, e) in events {
        let line = lines.entry(offset).or_default();
        *line += 1;
        writer
            .add_document(document_of(&fields, e.clone(), offset, *line, &header))
            .expect("add");
    }
    writer.commit().expect("commit");
    let search = EventIndex::single(index);
    search.refresh().expect("refresh");
    search
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_since_filter() {
        let dir = tempfile::tempdir().expect("tmp");
        let index = days::open_day(dir.path(), Utc::now().date_naive()).expect("index");
        let schema = index.schema();
        let mut writer: IndexWriter<TantivyDocument> = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        let now = Utc::now();
        for minutes_ago in [120i64, 30, 5] {
            let mut e = Event::new(now - chrono::Duration::minutes(minutes_ago));
            e.set_str("message", format!("{minutes_ago} minutes ago"));
            let header = unsigned_header();
            writer
                .add_document(document_of(
                    &DocFields::new(&schema).expect("fields"),
                    e,
                    0,
                    1,
                    &header,
                ))
                .expect("add");
        }
        writer.commit().expect("commit");
        let search = EventIndex::single(index);
        search.refresh().expect("refresh");
        let all = search
            .search(&SearchRequest {
                limit: 10,
                ..SearchRequest::new("*")
            })
            .expect("search");
        let order: Vec<&str> = all
            .hits
            .iter()
            .filter_map(|h| h.event["message"].as_str())
            .collect();
        assert_eq!(
            order,
            ["5 minutes ago", "30 minutes ago", "120 minutes ago"]
        );
        let recent = search
            .search(&SearchRequest {
                since: Some(now - chrono::Duration::hours(1)),
                limit: 10,
                oldest_first: true,
                ..SearchRequest::new("*")
            })
            .expect("search");
        assert_eq!(recent.total, 2);
        assert_eq!(recent.hits[0].event["message"], "30 minutes ago");
        let bad = search.search(&SearchRequest {
            limit: 1,
            ..SearchRequest::new("message:(")
        });
        assert!(matches!(bad, Err(IndexError::Syntax(e)) if e.column == 9));
    }

    /// Pages read with cursors while events keep arriving (newer ones and late ones with
    /// old timestamps) hold every event that was there at the start exactly once, in
    /// order, whatever the ties in time.
    #[test]
    fn cursor_pages_are_stable_while_writes_continue() {
        for oldest_first in [false, true] {
            let index = Index::create_in_ram(build_schema());
            let fields = DocFields::new(&index.schema()).expect("fields");
            let mut writer: IndexWriter<TantivyDocument> = index
                .writer_with_num_threads(1, 15_000_000)
                .expect("writer");
            let base = Utc::now() - chrono::Duration::hours(1);
            let mut add = |batch: u64, count: u64, minute: &dyn Fn(u64) -> i64, tag: &str| {
                let mut ids = Vec::new();
                for i in 0..count {
                    // Five events per timestamp: the cursor must break ties.
                    let mut e = Event::new(base + chrono::Duration::minutes(minute(i / 5)));
                    e.set_str("user.name", tag);
                    ids.push(e.id().unwrap_or_default().to_string());
                    let doc = document_of(&fields, e, batch * 1000, i + 1, &unsigned_header());
                    writer.add_document(doc).expect("add");
                }
                writer.commit().expect("commit");
                ids
            };
            let original = add(1, 250, &|t| t as i64, "original");
            let search = EventIndex::single(index.clone());
            search.refresh().expect("refresh");
            let mut seen: Vec<String> = Vec::new();
            let mut keys: Vec<(String, u64, u64)> = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = search
                    .search(&SearchRequest {
                        query: "*".into(),
                        since: None,
                        until: None,
                        limit: 40,
                        oldest_first,
                        aggs: Vec::new(),
                        after,
                        fields: Vec::new(),
                        count_total: true,
                    })
                    .expect("page");
                for hit in &page.hits {
                    seen.push(hit.event["event"]["id"].as_str().unwrap_or("").to_string());
                    keys.push((
                        hit.event["@timestamp"].as_str().unwrap_or("").to_string(),
                        hit.provenance.archive_offset,
                        hit.provenance.line,
                    ));
                }
                pages += 1;
                if pages == 1 {
                    // Newer events and late ones from the middle of the hour arrive.
                    add(2, 50, &|t| 100 + t as i64, "newer");
                    add(3, 50, &|t| 20 + t as i64, "late");
                    search.refresh().expect("refresh");
                }
                match page.next_cursor {
                    Some(cursor) => after = Some(cursor.parse().expect("cursor")),
                    None => break,
                }
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), seen.len(), "no event twice");
            for id in &original {
                assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "{id}");
            }
            let mut sorted = keys.clone();
            sorted.sort();
            if !oldest_first {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "in order (oldest_first: {oldest_first})");
        }
    }

    #[test]
    fn field_selection_keeps_only_the_named_paths() {
        let mut e = Event::new(Utc::now());
        e.set_str("user.name", "alice");
        e.set_str("source.ip", "10.0.0.1");
        e.set_str("message", "hello");
        let event: Value = serde_json::from_str(&e.to_json_line()).expect("json");
        let selected = select_fields(
            &event,
            &["user.name".into(), "message".into(), "no.such".into()],
        );
        assert_eq!(
            selected,
            serde_json::json!({"user": {"name": "alice"}, "message": "hello"})
        );
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    /// 3,000 events over two days: users, sources (IPv4 and IPv6), ports, outcomes.
    fn data() -> Vec<(u64, Event)> {
        let start = Utc::now() - chrono::Duration::hours(40);
        (0..3_000u64)
            .map(|i| {
                let mut e = Event::new(start + chrono::Duration::seconds(i as i64 * 47));
                e.set_str("user.name", format!("user{}", i % 7));
                e.set_str(
                    "event.outcome",
                    if i % 3 == 0 { "failure" } else { "success" },
                );
                let ip = if i % 5 == 0 {
                    format!("2001:db8::{:x}", i % 13)
                } else {
                    format!("10.0.{}.{}", i % 4, i % 250)
                };
                e.set_str("source.ip", ip);
                e.set("source.port", serde_json::json!(1024 + (i * 7919) % 50_000));
                e.set_str("message", format!("login {i}"));
                // Ten events per batch: the archive offset orders batches.
                (i / 10 + 1, e)
            })
            .collect()
    }

    /// The data split into `n` shards by batch, as partitions divide agents' batches.
    fn shards(data: &[(u64, Event)], n: u64) -> Vec<EventIndex> {
        (0..n)
            .map(|k| {
                index_in_ram_at(
                    data.iter()
                        .filter(|(offset, _)| offset % n == k)
                        .map(|(offset, e)| (*offset, e)),
                )
            })
            .collect()
    }

    /// What a cluster's api node does: edges from every shard for the automatic interval,
    /// each shard's part through JSON (as it travels), then one merge.
    fn fan_out(shards: &[EventIndex], request: &SearchRequest) -> SearchResult {
        let interval = request.aggs.iter().any(needs_auto_interval).then(|| {
            let mut edges = (None::<i64>, None::<i64>);
            for shard in shards {
                let (oldest, newest) = shard.time_edges(request).expect("edges");
                edges.0 = match (edges.0, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                edges.1 = edges.1.max(newest);
            }
            interval_for(request, edges)
        });
        let parts = shards
            .iter()
            .map(|shard| {
                let part = shard.search_shard(request, interval).expect("shard");
                let wire = serde_json::to_vec(&part).expect("to json");
                serde_json::from_slice::<ShardResult>(&wire).expect("from json")
            })
            .collect();
        merge_shards(request, interval, parts).expect("merge")
    }

    fn without_error_bound(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("doc_count_error_upper_bound");
                map.values_mut().for_each(without_error_bound);
            }
            Value::Array(items) => items.iter_mut().for_each(without_error_bound),
            _ => {}
        }
    }

    fn ids(result: &SearchResult) -> Vec<String> {
        result
            .hits
            .iter()
            .map(|h| {
                h.event["event"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn shards_merged_answer_as_one_index_does() {
        let data = data();
        let single = index_in_ram_at(data.iter().map(|(o, e)| (*o, e)));
        let parts = shards(&data, 3);
        let aggs = crate::search::aggs::parse_aggs(
            "terms:source.ip, date_histogram:@timestamp, cardinality:user.name, \
             cardinality:source.ip, avg:source.port, max:source.port, \
             percentiles:source.port, terms:user.name>date_histogram:@timestamp:1h",
        )
        .expect("aggs");
        for query in [
            "*",
            "event.outcome:failure",
            "source.ip:10.0.0.0/8 AND user.name:user3",
        ] {
            for oldest_first in [false, true] {
                let request = SearchRequest {
                    limit: 25,
                    oldest_first,
                    aggs: aggs.clone(),
                    ..SearchRequest::new(query)
                };
                let one = single.search(&request).expect("single");
                let merged = fan_out(&parts, &request);
                assert!(one.total > 0, "{query}");
                assert_eq!(merged.total, one.total, "{query}");
                assert_eq!(
                    ids(&merged),
                    ids(&one),
                    "{query} oldest_first={oldest_first}"
                );
                assert_eq!(merged.next_cursor, one.next_cursor, "{query}");
                let (merged_aggs, one_aggs) = (
                    merged.aggregations.clone().unwrap_or_default(),
                    one.aggregations.clone().unwrap_or_default(),
                );
                for spec in &request.aggs {
                    let key = aggs::result_key(spec);
                    if spec.kind == crate::search::aggs::AggKind::Cardinality {
                        // A sketch (HyperLogLog, 2^11 registers): a union of shards'
                        // sketches estimates with another estimator than one sketch fed
                        // directly, so the two agree within the sketch's error, not
                        // to the unit.
                        let value = |aggs: &Value| aggs[&key]["value"].as_f64().unwrap_or(-1.0);
                        let (m, o) = (value(&merged_aggs), value(&one_aggs));
                        assert!(
                            (m - o).abs() <= 0.05 * o.max(20.0),
                            "{query}: {key}: merged {m}, single {o}"
                        );
                        continue;
                    }
                    // Buckets and counts agree exactly; `doc_count_error_upper_bound` is
                    // a bound that grows with the number of parts merged, as in
                    // Elasticsearch.
                    let (mut m, mut o) = (merged_aggs[&key].clone(), one_aggs[&key].clone());
                    without_error_bound(&mut m);
                    without_error_bound(&mut o);
                    assert_eq!(m, o, "{query}: {key} differs");
                }
                // Pages after the cursor agree too, to the end.
                let mut cursor = one.next_cursor.clone();
                let mut pages = 0;
                while let Some(after) = cursor.take() {
                    let page = SearchRequest {
                        after: Some(after.parse().expect("cursor")),
                        aggs: Vec::new(),
                        ..request.clone()
                    };
                    let one = single.search(&page).expect("single page");
                    let merged = fan_out(&parts, &page);
                    assert_eq!(ids(&merged), ids(&one), "{query} page {pages}");
                    cursor = one.next_cursor;
                    pages += 1;
                    if pages == 4 {
                        break;
                    }
                }
            }
        }
    }
}
