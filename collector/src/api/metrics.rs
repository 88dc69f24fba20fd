//! `GET /metrics`: Prometheus text exposition of every stage, for operators to graph and
//! alert on. Behind the API token like every other management route (Prometheus sends
//! it with `authorization.credentials`).
//!
//! Everything is read at scrape time from what the stages already keep — ingest's,
//! the archive writer's, the indexer's, the detector's and alerting's atomics, the
//! archive's end and its consumers' offsets, the alert tables, `/proc/self` — and encoded
//! by the official Prometheus client (`yagura_shared::metrics`). Families:
//!
//! * ingest: `yagura_ingest_batches_accepted_total`, `…_batches_duplicate_total`,
//!   `…_batches_rejected_total{reason}` (malformed, clock_skew, unknown_agent,
//!   revoked_agent, unverified, too_large, slow_down, unavailable; every reason present),
//!   `…_events_accepted_total`, `…_accepted_bytes_total`;
//! * archive: `yagura_archive_bytes` (committed end offset), `…_records_appended_total`,
//!   `…_fsync_seconds` (histogram), `…_writer_running`;
//! * each archive consumer (indexer, detector): `yagura_consumer_lag_bytes{consumer}`,
//!   `…_lag_seconds{consumer}` (age of the oldest record it has not consumed, 0 when
//!   caught up), `…_lag_events{consumer}` and `…_lag_events_truncated{consumer}`: the
//!   events are counted from the batch headers of at most [`LAG_SCAN_MAX_RECORDS`]
//!   records past the consumer's offset; further behind, the count stops there (a lower
//!   bound) and `truncated` is 1, while `lag_bytes` stays exact;
//! * indexer: `yagura_indexer_events_total`, `…_bad_batches_total`,
//!   `…_bad_events_total`, `…_days_deleted_total`;
//! * detector: `yagura_detector_events_total`, `…_matches_total`,
//!   `…_matches_recorded_total`, `…_bad_batches_total`, `…_rule_reloads_total`,
//!   `…_rule_reloads_refused_total`;
//! * alerting: `yagura_alerts{status}`, `yagura_alert_notifications{status}` and the
//!   `yagura_alert_…_total` counters (unchanged names);
//! * HTTP: `yagura_http_requests_total{route,method,status}` and
//!   `yagura_http_request_duration_seconds{route}` (see [`track_http`]);
//! * process: `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//!   `process_open_fds`, `process_max_fds`, `process_start_time_seconds`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use yagura_shared::metrics::{Exposition, Histogram, ProcessStats};

use super::{ApiError, AppState};
use crate::archive::{Archive as _, Backlog, SegmentArchive};
use crate::ingest::{IngestStats, RejectReason};

/// Records a scrape reads past each consumer's offset to count its lag in events: ten
/// thousand record headers (a few small reads each, no payload) keep a scrape in the
/// milliseconds; a consumer further behind than that is in trouble whatever the count.
pub const LAG_SCAN_MAX_RECORDS: u64 = 10_000;

/// Upper bounds (seconds) of the HTTP request duration histogram: an ingest ack in a
/// few milliseconds up to a large search or export page.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` label of a request that matched no route (the 404 fallback): one value
/// for all of them, so scanners probing random paths cannot grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Requests by route, method and status, and their durations by route. The labels are
/// bounded: routes are the router's templates (`/api/v1/agents/{id}`, never the path
/// asked for), methods the standard ones (anything else is `other`), statuses three
/// digits.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<String, RouteMetrics>>,
    /// Connections closed by a listener's allowlist, by listener.
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Debug)]
struct RouteMetrics {
    durations: Histogram,
    requests: BTreeMap<(&'static str, u16), u64>,
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn record(&self, route: &str, method: &'static str, status: u16, elapsed: Duration) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let metrics = match routes.get_mut(route) {
            Some(metrics) => metrics,
            None => routes.entry(route.to_string()).or_insert(RouteMetrics {
                durations: Histogram::new(HTTP_DURATION_BUCKETS),
                requests: BTreeMap::new(),
            }),
        };
        *metrics.requests.entry((method, status)).or_insert(0) += 1;
        metrics.durations.observe(elapsed);
    }

    /// Makes `listener`'s refused-connection counter exist (at 0) from its start.
    pub fn watch_listener(&self, listener: &'static str) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.entry(listener).or_insert(0);
        }
    }

    /// Counts one connection closed by `listener`'s allowlist.
    pub fn refused_connection(&self, listener: &'static str) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(listener).or_insert(0) += 1;
        }
    }

    /// Adds the HTTP families.
    pub fn add_to(&self, out: &mut Exposition) {
        if let Ok(refused) = self.refused.lock() {
            let family = out.counter(
                "yagura_http_connections_refused_total",
                "Connections closed before the TLS handshake because the client's address \
                 is outside the listener's allowlist, by listener.",
            );
            for (listener, n) in refused.iter() {
                family.sample(&[("listener", listener)], *n);
            }
        }
        let Ok(routes) = self.routes.lock() else {
            return;
        };
        let requests = out.counter(
            "yagura_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
        );
        for (route, metrics) in routes.iter() {
            for ((method, status), n) in &metrics.requests {
                let status = status.to_string();
                requests.sample(
                    &[
                        ("route", route.as_str()),
                        ("method", method),
                        ("status", status.as_str()),
                    ],
                    *n,
                );
            }
        }
        let durations = out.histogram(
            "yagura_http_request_duration_seconds",
            "Time from a request's arrival to its response head (a streamed body, as \
             export or the alert stream, is not included), by route template.",
        );
        for (route, metrics) in routes.iter() {
            durations.histogram(&[("route", route.as_str())], metrics.durations.snapshot());
        }
    }
}

/// The `method` label: the standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware counting every request by its route template (`MatchedPath`, set by the
/// router before a `Router::layer` middleware runs; [`UNMATCHED_ROUTE`] without one),
/// method and status, and timing it to its response head.
pub async fn track_http(
    State(http): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    http.record(
        route.as_ref().map_or(UNMATCHED_ROUTE, |r| r.as_str()),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// One archive consumer's distance from the committed end.
#[derive(Debug, Clone, PartialEq)]
struct ConsumerLag {
    consumer: String,
    bytes: u64,
    /// `None` when the archive could not be read (logged; the bytes still count).
    backlog: Option<Backlog>,
}

/// Every consumer's lag (blocking file I/O: run it off the async threads).
fn consumer_lags(archive: &SegmentArchive) -> Vec<ConsumerLag> {
    let end = archive.committed_end();
    archive
        .consumer_offsets()
        .into_iter()
        .map(|(consumer, offset)| {
            let backlog = match archive.backlog(offset, LAG_SCAN_MAX_RECORDS) {
                Ok(backlog) => Some(backlog),
                Err(error) => {
                    tracing::warn!(%consumer, %error, "metrics: reading the consumer's backlog");
                    None
                }
            };
            ConsumerLag {
                bytes: end.saturating_sub(offset),
                consumer,
                backlog,
            }
        })
        .collect()
}

fn add_consumer_lags(out: &mut Exposition, lags: &[ConsumerLag], now_ms: i64) {
    let bytes = out.gauge(
        "yagura_consumer_lag_bytes",
        "Archive bytes between a consumer's committed offset (what it has durably \
         processed: the indexer commits every commit_interval_ms, the detector's replay \
         point every 5 s) and the archive's end.",
    );
    for lag in lags {
        bytes.sample(&[("consumer", lag.consumer.as_str())], lag.bytes);
    }
    let seconds = out.gauge(
        "yagura_consumer_lag_seconds",
        "Age of the oldest archived record a consumer has not consumed; 0 when caught up.",
    );
    for lag in lags {
        if let Some(backlog) = lag.backlog {
            let age_ms = backlog
                .oldest_received_at_ms
                .map_or(0, |at| now_ms.saturating_sub(at).max(0));
            seconds.sample(
                &[("consumer", lag.consumer.as_str())],
                age_ms as f64 / 1000.0,
            );
        }
    }
    let events = out.gauge(
        "yagura_consumer_lag_events",
        "Events in the batches a consumer has not consumed, counted over at most 10000 \
         records past its offset (a lower bound when truncated).",
    );
    for lag in lags {
        if let Some(backlog) = lag.backlog {
            events.sample(&[("consumer", lag.consumer.as_str())], backlog.events);
        }
    }
    let truncated = out.gauge(
        "yagura_consumer_lag_events_truncated",
        "1 when yagura_consumer_lag_events stopped at its record limit before the end.",
    );
    for lag in lags {
        if let Some(backlog) = lag.backlog {
            truncated.sample(
                &[("consumer", lag.consumer.as_str())],
                u64::from(!backlog.complete),
            );
        }
    }
}

fn add_ingest(out: &mut Exposition, stats: &IngestStats) {
    out.counter(
        "yagura_ingest_batches_accepted_total",
        "Signed batches verified and appended to the archive.",
    )
    .sample(&[], stats.batches_accepted());
    out.counter(
        "yagura_ingest_batches_duplicate_total",
        "Batches whose sequence was already archived: acknowledged again, not stored.",
    )
    .sample(&[], stats.batches_duplicate());
    let rejected = out.counter(
        "yagura_ingest_batches_rejected_total",
        "Batches refused, by reason.",
    );
    for reason in RejectReason::ALL {
        rejected.sample(&[("reason", reason.label())], stats.rejected(reason));
    }
    out.counter(
        "yagura_ingest_events_accepted_total",
        "Events in the batches appended to the archive.",
    )
    .sample(&[], stats.events_accepted());
    out.counter(
        "yagura_ingest_accepted_bytes_total",
        "Bytes of the signed batches appended to the archive, as received (compressed).",
    )
    .sample(&[], stats.bytes_accepted());
}

fn add_archive(out: &mut Exposition, archive: &SegmentArchive) {
    out.gauge(
        "yagura_archive_bytes",
        "The archive's committed end offset: bytes ever made durable (retention deletes \
         old segments, offsets keep growing).",
    )
    .sample(&[], archive.committed_end());
    out.counter(
        "yagura_archive_records_appended_total",
        "Records written and fsynced by the archive writer.",
    )
    .sample(&[], archive.stats().records_appended());
    out.histogram(
        "yagura_archive_fsync_seconds",
        "Duration of each fsync of an archive segment (one per group commit, and one \
         when a segment is closed).",
    )
    .histogram(&[], archive.stats().fsync_seconds());
    out.gauge(
        "yagura_archive_writer_running",
        "1 while the archive writer takes appends; 0 after an I/O error stopped it.",
    )
    .sample(&[], u64::from(archive.writer_running()));
}

fn add_indexer(out: &mut Exposition, stats: &crate::index::IndexerStats) {
    for (name, help, value) in [
        (
            "yagura_indexer_events_total",
            "Events written to the index.",
            &stats.events_indexed,
        ),
        (
            "yagura_indexer_bad_batches_total",
            "Archived batches the indexer could not decode (skipped).",
            &stats.bad_batches,
        ),
        (
            "yagura_indexer_bad_events_total",
            "Events skipped one by one inside otherwise readable batches.",
            &stats.bad_events,
        ),
        (
            "yagura_indexer_days_deleted_total",
            "Daily indices deleted by retention.",
            &stats.days_deleted,
        ),
    ] {
        out.counter(name, help)
            .sample(&[], value.load(Ordering::Relaxed));
    }
}

fn add_detector(out: &mut Exposition, stats: &crate::detect::DetectorStats) {
    for (name, help, value) in [
        (
            "yagura_detector_events_total",
            "Events evaluated against the detection rules.",
            &stats.events,
        ),
        (
            "yagura_detector_matches_total",
            "Rule matches found (a replay after a restart finds some again).",
            &stats.matches,
        ),
        (
            "yagura_detector_matches_recorded_total",
            "Rule matches recorded for the first time.",
            &stats.recorded,
        ),
        (
            "yagura_detector_bad_batches_total",
            "Archived batches the detector could not decode (skipped).",
            &stats.bad_batches,
        ),
        (
            "yagura_detector_rule_reloads_total",
            "Changed rule sets loaded and swapped in.",
            &stats.reloads,
        ),
        (
            "yagura_detector_rule_reloads_refused_total",
            "Changed rule sets refused for an error (the running rules stayed).",
            &stats.refused_reloads,
        ),
    ] {
        out.counter(name, help)
            .sample(&[], value.load(Ordering::Relaxed));
    }
}

fn add_by_status(
    out: &mut Exposition,
    name: &str,
    help: &str,
    rows: &[(String, u64)],
    all: &[&str],
) {
    let family = out.gauge(name, help);
    // Every status is present, zero included, so a rule on `failed > 0` always has a series.
    for status in all {
        let n = rows
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        family.sample(&[("status", status)], n);
    }
}

fn add_alerting(
    out: &mut Exposition,
    alerts: &[(String, u64)],
    outbox: &[(String, u64)],
    stats: &crate::alert::AlertStats,
) {
    add_by_status(
        out,
        "yagura_alerts",
        "Alerts by status.",
        alerts,
        &["open", "acknowledged", "suppressed", "resolved"],
    );
    add_by_status(
        out,
        "yagura_alert_notifications",
        "Notifications of the alert outbox by status.",
        outbox,
        &["pending", "sent", "failed", "summarized", "skipped"],
    );
    for (name, help, value) in [
        (
            "yagura_alert_matches_total",
            "Rule matches taken into alerts since start.",
            &stats.matches,
        ),
        (
            "yagura_alerts_created_total",
            "Alerts opened since start.",
            &stats.created,
        ),
        (
            "yagura_alert_notifications_sent_total",
            "Notifications delivered since start.",
            &stats.sent,
        ),
        (
            "yagura_alert_notification_retries_total",
            "Failed delivery attempts retried since start.",
            &stats.retries,
        ),
        (
            "yagura_alert_notifications_failed_total",
            "Notifications marked failed since start.",
            &stats.failed,
        ),
        (
            "yagura_alert_notifications_held_total",
            "Notifications held for a rate-limit summary since start.",
            &stats.held,
        ),
    ] {
        out.counter(name, help)
            .sample(&[], value.load(Ordering::Relaxed));
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.alerts.store();
    let alerts = store.alert_counts().await.map_err(ApiError::internal)?;
    let outbox = store.outbox_counts().await.map_err(ApiError::internal)?;
    let ingest = Arc::clone(&state.ingest);
    let (lags, process) = tokio::task::spawn_blocking(move || {
        // A cluster's stream has no byte offsets of its own here; its consumers are
        // followed by the indexer and detector nodes.
        let lags = ingest
            .archive()
            .segments()
            .map(consumer_lags)
            .unwrap_or_default();
        (lags, ProcessStats::read())
    })
    .await
    .map_err(ApiError::internal)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out = Exposition::default();
    add_ingest(&mut out, state.ingest.stats());
    if let Some(segments) = state.ingest.archive().segments() {
        add_archive(&mut out, segments);
    }
    add_consumer_lags(&mut out, &lags, now_ms);
    if let Some(indexer) = &state.indexer {
        add_indexer(&mut out, indexer);
    }
    if let Some(detector) = &state.detector {
        add_detector(&mut out, detector);
    }
    add_alerting(&mut out, &alerts, &outbox, state.alerts.stats());
    state.http.add_to(&mut out);
    process.add_to(&mut out);
    let text = out.encode().map_err(ApiError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, yagura_shared::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_labels_stay_bounded_and_every_series_is_written() {
        let http = HttpMetrics::default();
        http.record("/api/v1/agents/{id}", "GET", 200, Duration::from_millis(3));
        http.record("/api/v1/agents/{id}", "GET", 200, Duration::from_millis(30));
        http.record("/api/v1/agents/{id}", "POST", 405, Duration::from_millis(1));
        http.record(UNMATCHED_ROUTE, "GET", 404, Duration::from_millis(1));
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PROPFIND").expect("method")),
            "other"
        );
        let mut out = Exposition::default();
        http.add_to(&mut out);
        let text = out.encode().expect("encode");
        assert!(
            text.contains(
                "yagura_http_requests_total{route=\"/api/v1/agents/{id}\",method=\"GET\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "yagura_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "yagura_http_request_duration_seconds_bucket{route=\"/api/v1/agents/{id}\",le=\"0.005\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "yagura_http_request_duration_seconds_count{route=\"/api/v1/agents/{id}\"} 3\n"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE yagura_http_requests_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn consumer_lag_series_say_when_the_event_count_was_cut_short() {
        let lags = [
            ConsumerLag {
                consumer: "indexer".into(),
                bytes: 500,
                backlog: Some(Backlog {
                    records: 10_000,
                    events: 40_000,
                    oldest_received_at_ms: Some(1_000),
                    complete: false,
                }),
            },
            ConsumerLag {
                consumer: "detector".into(),
                bytes: 0,
                backlog: Some(Backlog {
                    complete: true,
                    ..Backlog::default()
                }),
            },
            ConsumerLag {
                consumer: "broken".into(),
                bytes: 7,
                backlog: None,
            },
        ];
        let mut out = Exposition::default();
        add_consumer_lags(&mut out, &lags, 3_500);
        let text = out.encode().expect("encode");
        for line in [
            "yagura_consumer_lag_bytes{consumer=\"indexer\"} 500\n",
            "yagura_consumer_lag_bytes{consumer=\"broken\"} 7\n",
            "yagura_consumer_lag_seconds{consumer=\"indexer\"} 2.5\n",
            "yagura_consumer_lag_seconds{consumer=\"detector\"} 0.0\n",
            "yagura_consumer_lag_events{consumer=\"indexer\"} 40000\n",
            "yagura_consumer_lag_events_truncated{consumer=\"indexer\"} 1\n",
            "yagura_consumer_lag_events_truncated{consumer=\"detector\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("lag_seconds{consumer=\"broken\"}"), "{text}");
    }

    #[test]
    fn every_rejection_reason_has_a_series() {
        let stats = IngestStats::default();
        stats.count_rejection(RejectReason::Unverified);
        let mut out = Exposition::default();
        add_ingest(&mut out, &stats);
        let text = out.encode().expect("encode");
        for reason in RejectReason::ALL {
            let expected = u64::from(reason == RejectReason::Unverified);
            let line = format!(
                "yagura_ingest_batches_rejected_total{{reason=\"{}\"}} {expected}\n",
                reason.label()
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
