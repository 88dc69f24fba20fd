//! `GET /api/v1/rules` (what the live detector runs, with the day's hits, load problems
//! and fixture results) and `GET /api/v1/rules/{id}/hits` (a rule's matches per hour).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rules", get(list))
        .route("/api/v1/rules/{id}/hits", get(hits))
}

fn stored(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The catalog, each rule with `hits_24h`.
async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let view = state.rules.view();
    let since = stored(Utc::now() - Duration::hours(24));
    let counts: std::collections::HashMap<String, u64> = state
        .store
        .rule_hits(&since)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .collect();
    let mut body = serde_json::to_value(&view).map_err(ApiError::internal)?;
    if let Some(rules) = body.get_mut("rules").and_then(|r| r.as_array_mut()) {
        for rule in rules {
            let key = rule
                .get("id")
                .and_then(|v| v.as_str())
                .or_else(|| rule.get("title").and_then(|v| v.as_str()))
                .unwrap_or_default()
                .to_string();
            rule["hits_24h"] = json!(counts.get(&key).copied().unwrap_or(0));
        }
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HitParams {
    /// How far back: `24h`, `7d` (default), at most 30 days.
    since: Option<String>,
}

/// Hourly buckets (`key` in ms, `doc_count`) from `since` to now, empty hours included.
async fn hits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<HitParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let now = Utc::now();
    let since = super::parse_since(params.since.as_deref().unwrap_or("7d"), now)
        .map_err(ApiError::bad_request)?;
    if now - since > Duration::days(30) {
        return Err(ApiError::bad_request("since: at most 30 days"));
    }
    let start = since
        .duration_trunc(Duration::hours(1))
        .map_err(ApiError::internal)?;
    let counts = state
        .store
        .rule_hits_by_hour(&id, &stored(start))
        .await
        .map_err(ApiError::internal)?;
    let counts: std::collections::HashMap<i64, u64> = counts
        .into_iter()
        .filter_map(|(hour, n)| {
            NaiveDateTime::parse_from_str(&format!("{hour}:00:00"), "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| (t.and_utc().timestamp_millis(), n))
        })
        .collect();
    let mut buckets = Vec::new();
    let mut hour = start;
    while hour <= now {
        let key = hour.timestamp_millis();
        buckets.push(json!({
            "key": key,
            "key_as_string": hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "doc_count": counts.get(&key).copied().unwrap_or(0),
        }));
        hour += Duration::hours(1);
    }
    Ok(Json(json!({ "rule": id, "interval": "1h", "buckets": buckets })).into_response())
}
