//! The collector's HTTP API: enrollment, ingest, search and fleet listing.
//!
//! Authentication per route: enrollment is authorised by its one-time (or limited-use)
//! token, ingest by the batch signature, everything else by a bearer API token (stored
//! hashed). Every request body has a size limit, every error is a problem document, and
//! every response carries headers that forbid framing, sniffing and caching.

mod error;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::ApiError;

use crate::archive::SegmentArchive;
use crate::fleet::{AgentRegistry, EnrollError};
use crate::index::{EventIndex, IndexError, SearchRequest};
use crate::ingest::{BatchIngest, Rejection};
use crate::store::Store;

/// Largest JSON body on the management routes.
const MAX_JSON_BODY: usize = 64 * 1024;
/// Most hits one search returns (pagination with cursors comes with the search issue).
pub const MAX_SEARCH_LIMIT: usize = 50_000;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub agents: AgentRegistry,
    pub ingest: Arc<BatchIngest<SegmentArchive>>,
    pub index: EventIndex,
}

/// The whole router with its layers.
pub fn router(state: AppState) -> Router {
    let max_batch = state.ingest.limits().max_body_bytes;
    let protected = Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/agents", get(list_agents))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_token,
        ));
    let ingest = Router::new()
        .route("/api/v1/ingest", post(ingest))
        .layer(DefaultBodyLimit::max(max_batch));
    let enroll = Router::new()
        .route("/api/v1/enroll", post(enroll))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    Router::new()
        .merge(protected)
        .merge(ingest)
        .merge(enroll)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
        .with_state(state)
}

/// Checks `Authorization: Bearer <token>` against the stored token hashes.
async fn require_api_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return Err(ApiError::unauthorized(
            "an API token is required (Authorization: Bearer …)",
        ));
    };
    match state.store.check_api_token(token).await {
        Ok(Some(_name)) => Ok(next.run(request).await),
        Ok(None) => Err(ApiError::unauthorized("invalid API token")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "batch exceeds the collector's size limit")
    } else {
        ApiError::new(status, rejection.body_text())
    }
}

async fn ingest(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_rejection)?;
    match state.ingest.ingest(body.to_vec()).await {
        Ok(ack) => Ok(Json(ack).into_response()),
        Err(rejection) => {
            let error = match &rejection {
                Rejection::Malformed(d) => ApiError::bad_request(d.clone()),
                Rejection::UnknownAgent(_)
                | Rejection::InactiveAgent(_)
                | Rejection::Unverified(_) => {
                    tracing::warn!(reason = %rejection, "batch refused");
                    ApiError::unauthorized(rejection.to_string())
                }
                Rejection::TooLarge(d) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, d.clone()),
                Rejection::Unavailable(cause) => {
                    tracing::error!(%cause, "batch could not be stored");
                    ApiError::unavailable(5)
                }
            };
            Err(error)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    token: String,
    public_key: String,
    hostname: String,
    version: String,
}

#[derive(Serialize)]
struct EnrollResponse {
    agent_id: String,
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if request.hostname.is_empty() || request.hostname.len() > 255 {
        return Err(ApiError::bad_request("hostname must be 1 to 255 bytes"));
    }
    if request.version.len() > 64 {
        return Err(ApiError::bad_request("version must be at most 64 bytes"));
    }
    match state
        .agents
        .enroll(
            &request.token,
            &request.public_key,
            &request.hostname,
            &request.version,
        )
        .await
    {
        Ok(agent) => {
            tracing::info!(agent = %agent.id, hostname = %agent.hostname, "agent enrolled");
            Ok(Json(EnrollResponse {
                agent_id: agent.id.to_string(),
            }))
        }
        Err(EnrollError::Refused(reason)) => {
            tracing::warn!(?reason, "enrollment refused");
            Err(ApiError::unauthorized(
                "enrollment token is invalid, expired or used up",
            ))
        }
        Err(EnrollError::BadKey(detail)) => Err(ApiError::bad_request(detail)),
        Err(EnrollError::Store(e)) => Err(ApiError::internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

/// Parses a relative time such as `15m`, `1h`, `7d` or `30s` into "now minus that".
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(absolute) = DateTime::parse_from_rfc3339(text) {
        return Ok(absolute.with_timezone(&Utc));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}`: expected a number and a unit (s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let amount: i64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number before the unit"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use s, m, h or d)"
            ));
        }
    };
    let delta = amount
        .checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("`{text}` is too far back"))?;
    now.checked_sub_signed(delta)
        .ok_or_else(|| format!("`{text}` is too far back"))
}

async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = params
        .since
        .as_deref()
        .map(|s| parse_since(s, Utc::now()))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_SEARCH_LIMIT}"
        )));
    }
    let oldest_first = match params.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order `{other}`: use asc or desc"
            )));
        }
    };
    let request = SearchRequest {
        query: params.q.unwrap_or_default(),
        since,
        limit,
        oldest_first,
    };
    let index = state.index.clone();
    let result = tokio::task::spawn_blocking(move || index.search(&request))
        .await
        .map_err(ApiError::internal)?;
    match result {
        Ok(found) => Ok(Json(found).into_response()),
        Err(IndexError::Query(detail)) => Err(ApiError::bad_request(format!("query: {detail}"))),
        Err(other) => Err(ApiError::internal(other)),
    }
}

#[derive(Serialize)]
struct AgentView {
    id: String,
    hostname: String,
    version: String,
    status: String,
    enrolled_at: String,
}

async fn list_agents(State(state): State<AppState>) -> Result<Response, ApiError> {
    let agents = state.agents.list().await.map_err(ApiError::internal)?;
    let view: Vec<AgentView> = agents
        .into_iter()
        .map(|a| AgentView {
            id: a.id.to_string(),
            hostname: a.hostname,
            version: a.version,
            status: a.status,
            enrolled_at: a.enrolled_at,
        })
        .collect();
    Ok(Json(view).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_units_and_rfc3339() {
        let now = Utc::now();
        assert_eq!(
            parse_since("90s", now),
            Ok(now - chrono::Duration::seconds(90))
        );
        assert_eq!(
            parse_since("15m", now),
            Ok(now - chrono::Duration::minutes(15))
        );
        assert_eq!(parse_since("2h", now), Ok(now - chrono::Duration::hours(2)));
        assert_eq!(parse_since("7d", now), Ok(now - chrono::Duration::days(7)));
        assert!(parse_since("2026-01-01T00:00:00Z", now).is_ok());
        assert!(parse_since("5y", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert!(parse_since("99999999999999999d", now).is_err());
    }
}
