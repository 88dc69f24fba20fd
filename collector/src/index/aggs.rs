//! Aggregations over the events a query matches, with tantivy's aggregation collector
//! (Elasticsearch-compatible requests and results): the analyst's specs
//! ([`crate::search::aggs`]) are checked against the schema's fast fields and turned
//! into a request; a date histogram without an interval gets one chosen from the time
//! span of the matching events, about a hundred buckets at most.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tantivy::aggregation::AggregationLimitsGuard;
use tantivy::aggregation::agg_req::Aggregations;

use super::{IP_FIELDS, KEYWORD_FIELDS, NUMBER_FIELDS, TIMESTAMP};
use crate::search::aggs::{AggKind, AggSpec};

/// Memory an aggregation request may use before it is refused.
const MEMORY_LIMIT: u64 = 256 << 20;
/// Buckets across one request.
const BUCKET_LIMIT: u32 = 65_000;
/// Automatic date histogram intervals, smallest first, and the most buckets wanted.
const AUTO_INTERVALS: &[(&str, i64)] = &[
    ("1s", 1),
    ("5s", 5),
    ("10s", 10),
    ("30s", 30),
    ("1m", 60),
    ("5m", 300),
    ("10m", 600),
    ("30m", 1800),
    ("1h", 3600),
    ("3h", 10_800),
    ("12h", 43_200),
    ("1d", 86_400),
    ("7d", 604_800),
    ("30d", 2_592_000),
];
const AUTO_MAX_BUCKETS: i64 = 100;

/// The interval for a histogram over `[from, to]`: the smallest that keeps it to about a
/// hundred buckets.
pub fn auto_interval(from: DateTime<Utc>, to: DateTime<Utc>) -> &'static str {
    let span = (to - from).num_seconds().max(1);
    AUTO_INTERVALS
        .iter()
        .find(|(_, seconds)| span / seconds < AUTO_MAX_BUCKETS)
        .map_or("30d", |(name, _)| name)
}

/// The key an aggregation's result is found under: the spec as the analyst wrote it.
pub fn result_key(spec: &AggSpec) -> String {
    let mut key = level_key(spec);
    if let Some(nested) = &spec.nested {
        key.push('>');
        key.push_str(&level_key(nested));
    }
    key
}

fn level_key(spec: &AggSpec) -> String {
    let kind = match spec.kind {
        AggKind::Terms => "terms",
        AggKind::DateHistogram => "date_histogram",
        AggKind::Cardinality => "cardinality",
        AggKind::Min => "min",
        AggKind::Max => "max",
        AggKind::Avg => "avg",
        AggKind::Percentiles => "percentiles",
    };
    let mut key = format!("{kind}:{}", spec.field);
    if let Some(size) = spec.size {
        key.push_str(&format!(":{size}"));
    }
    if let Some(interval) = &spec.interval {
        key.push_str(&format!(":{interval}"));
    }
    key
}

/// Checks `specs` against the schema and builds the request, with the limits it runs
/// under. `auto` is the interval for date histograms that name none.
pub fn request(
    specs: &[AggSpec],
    auto: &str,
) -> Result<(Aggregations, AggregationLimitsGuard), String> {
    let mut request = Map::new();
    for spec in specs {
        request.insert(result_key(spec), level(spec, auto)?);
    }
    let aggregations: Aggregations =
        serde_json::from_value(Value::Object(request)).map_err(|e| e.to_string())?;
    let limits = AggregationLimitsGuard::new(Some(MEMORY_LIMIT), Some(BUCKET_LIMIT));
    Ok((aggregations, limits))
}

fn level(spec: &AggSpec, auto: &str) -> Result<Value, String> {
    let field = spec.field.as_str();
    let keyword_like = KEYWORD_FIELDS.contains(&field)
        || IP_FIELDS.contains(&field)
        || NUMBER_FIELDS.contains(&field);
    let numeric = NUMBER_FIELDS.contains(&field) || field == TIMESTAMP;
    let mut body = match spec.kind {
        AggKind::Terms if keyword_like => {
            json!({"terms": {"field": field, "size": spec.size.unwrap_or(10)}})
        }
        AggKind::Cardinality if keyword_like => json!({"cardinality": {"field": field}}),
        AggKind::DateHistogram if field == TIMESTAMP => json!({"date_histogram": {
            "field": field,
            "fixed_interval": spec.interval.as_deref().unwrap_or(auto),
            "min_doc_count": 0,
        }}),
        AggKind::Min if numeric => json!({"min": {"field": field}}),
        AggKind::Max if numeric => json!({"max": {"field": field}}),
        AggKind::Avg if NUMBER_FIELDS.contains(&field) => json!({"avg": {"field": field}}),
        AggKind::Percentiles if NUMBER_FIELDS.contains(&field) => json!({"percentiles": {
            "field": field,
            "percents": [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0],
        }}),
        kind => return Err(not_aggregatable(kind, field)),
    };
    if let Some(nested) = &spec.nested
        && let Some(object) = body.as_object_mut()
    {
        let mut inner = Map::new();
        inner.insert(result_key(nested), level(nested, auto)?);
        object.insert("aggs".into(), Value::Object(inner));
    }
    Ok(body)
}

fn not_aggregatable(kind: AggKind, field: &str) -> String {
    let fields = |names: &[&str]| names.join(", ");
    match kind {
        AggKind::DateHistogram => format!("date_histogram works on {TIMESTAMP}, not `{field}`"),
        AggKind::Terms | AggKind::Cardinality => format!(
            "`{field}` cannot be bucketed or counted: use a keyword, IP or number field ({}, {}, {})",
            fields(KEYWORD_FIELDS),
            fields(IP_FIELDS),
            fields(NUMBER_FIELDS)
        ),
        AggKind::Min | AggKind::Max => format!(
            "`{field}` has no order to take a minimum or maximum of: use {TIMESTAMP} or a number field ({})",
            fields(NUMBER_FIELDS)
        ),
        AggKind::Avg | AggKind::Percentiles => format!(
            "`{field}` is not a number field ({})",
            fields(NUMBER_FIELDS)
        ),
    }
}
