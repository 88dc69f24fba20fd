//! `GET /health/live` and `GET /health/ready`: the probes of load balancers, service
//! managers and orchestrators.
//!
//! Live means the process answers HTTP. Ready means it can do its job: the database
//! answers, the archive directory is there and its committed end is known, the index (on
//! a node that indexes) answers a search, and no consumer of the archive — the indexer,
//! the detector — is further behind its end than `[archive] ready_max_lag_bytes`. A node
//! that is live but not ready should be taken out of rotation, not restarted.
//!
//! Both are open to anonymous callers, as probes are; the answer names each check and
//! whether it passed (a lag in bytes), never a path, a query or an error text, and is
//! computed at most once a second whatever the number of callers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::archive::{Archive as _, CollectorArchive};
use crate::index::SearchRequest;

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    /// For lag checks: how many archive bytes the consumer has still to read.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_bytes: Option<u64>,
}

fn check(name: &str, ok: bool) -> Check {
    Check {
        name: name.to_string(),
        ok,
        lag_bytes: None,
    }
}

/// One check per consumer of the archive: how far behind its committed `end` it reads.
fn lag_checks(
    end: u64,
    offsets: impl IntoIterator<Item = (String, u64)>,
    max_lag_bytes: u64,
) -> Vec<Check> {
    offsets
        .into_iter()
        .map(|(consumer, offset)| {
            let lag = end.saturating_sub(offset);
            Check {
                name: format!("{consumer}_lag"),
                ok: lag <= max_lag_bytes,
                lag_bytes: Some(lag),
            }
        })
        .collect()
}

/// `GET /health/live`.
pub async fn live() -> Response {
    Json(serde_json::json!({ "status": "live" })).into_response()
}

/// How long a readiness answer is reused: probes are anonymous, and a flood of them must
/// not take database connections and blocking threads from ingest.
const READY_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// The last readiness answer and when it was computed; the lock also keeps to one
/// computation at a time.
pub type ReadyCache =
    std::sync::Arc<tokio::sync::Mutex<Option<(std::time::Instant, bool, serde_json::Value)>>>;

/// `GET /health/ready`: 200 when every check passes, else 503; both list the checks.
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut cache = state.ready_cache.lock().await;
    let (ready, body) = match cache.as_ref() {
        Some((at, ready, body)) if at.elapsed() < READY_CACHE => (*ready, body.clone()),
        _ => {
            let (ready, body) = readiness(&state).await;
            *cache = Some((std::time::Instant::now(), ready, body.clone()));
            (ready, body)
        }
    };
    drop(cache);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn readiness(state: &AppState) -> (bool, serde_json::Value) {
    let mut checks = Vec::new();
    let database = sqlx::query("SELECT 1")
        .execute(state.store.pool())
        .await
        .is_ok();
    checks.push(check("database", database));
    match state.ingest.archive() {
        CollectorArchive::Segments(segments) => {
            checks.push(check("archive", state.archive_dir.is_dir()));
            checks.push(check("archive_writer", segments.writer_running()));
        }
        CollectorArchive::JetStream(stream) => {
            // The stream answers: appends can be acknowledged.
            checks.push(check("archive_stream", stream.end().await.is_ok()));
        }
    }
    if let Some(index) = state.index.clone() {
        let searchable = tokio::task::spawn_blocking(move || {
            let mut probe = SearchRequest::new("*");
            probe.since = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
            probe.limit = 1;
            probe.count_total = false;
            index.search(&probe).is_ok()
        })
        .await
        .unwrap_or(false);
        checks.push(check("index", searchable));
    }
    let archive = state.ingest.archive();
    let end = *archive.committed().borrow();
    checks.extend(lag_checks(
        end,
        archive.consumer_offsets(),
        state.ready_max_lag_bytes,
    ));
    let ready = checks.iter().all(|c| c.ok);
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": checks,
    });
    (ready, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_too_far_behind_fails_its_check() {
        let checks = lag_checks(
            1_000,
            [("indexer".to_string(), 990), ("detector".to_string(), 100)],
            50,
        );
        let summary: Vec<(&str, bool, Option<u64>)> = checks
            .iter()
            .map(|c| (c.name.as_str(), c.ok, c.lag_bytes))
            .collect();
        assert_eq!(
            summary,
            [
                ("indexer_lag", true, Some(10)),
                ("detector_lag", false, Some(900))
            ]
        );
        // A consumer ahead of a just-reopened archive is not behind.
        assert!(lag_checks(10, [("indexer".to_string(), 20)], 0)[0].ok);
    }
}
