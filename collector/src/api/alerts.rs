//! `/api/v1/alerts`: the alert list and detail, the responder's actions (each recorded
//! with the API token's name), the outbox, and a live stream of changes (server-sent
//! events) for the console.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{ApiError, AppState, Caller};
use crate::alert::{Action, ActionOutcome, AlertFilter, AlertStatus};

/// The alert routes (behind the API token check of the caller).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/stream", get(stream))
        .route("/api/v1/alerts/outbox", get(outbox))
        .route("/api/v1/alerts/{id}", get(show))
        .route("/api/v1/alerts/{id}/ack", post(acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/alerts/{id}/suppress", post(suppress))
        .route("/api/v1/alerts/{id}/reopen", post(reopen))
        .route("/api/v1/alerts/{id}/assign", post(assign))
        .route("/api/v1/alerts/{id}/notes", post(note))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    rule: Option<String>,
    limit: Option<u32>,
}

fn limit(value: Option<u32>, default: u32) -> Result<u32, ApiError> {
    let limit = value.unwrap_or(default);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request("limit must be between 1 and 1000"))
    }
}

/// `GET /api/v1/alerts?status=open&rule=…&limit=100`, most recently changed first.
async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => Some(AlertStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{text}` is not one of open, acknowledged, resolved, suppressed"
            ))
        })?),
    };
    let filter = AlertFilter {
        status,
        rule: params.rule,
        limit: limit(params.limit, 100)?,
    };
    let alerts = state
        .alerts
        .store()
        .alerts(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

/// `GET /api/v1/alerts/{id}`: the alert, its history, sample matches (each event links to
/// its provenance) and its notifications.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = state.alerts.store();
    let Some(alert) = store.alert(&id).await.map_err(ApiError::internal)? else {
        return Err(ApiError::not_found(format!("no alert {id}")));
    };
    let history = store.history(&id).await.map_err(ApiError::internal)?;
    let samples: Vec<serde_json::Value> = store
        .samples(&id)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|s| {
            let provenance = s
                .event_id
                .as_ref()
                .map(|e| format!("/api/v1/events/{e}/provenance"));
            json!({
                "detection_id": s.detection_id,
                "event_id": s.event_id,
                "event_time": s.event_time,
                "archive_offset": s.archive_offset,
                "provenance": provenance,
            })
        })
        .collect();
    let notifications = store
        .notifications_of(&id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "inventory": inventory_link(&alert),
        "alert": alert,
        "history": history,
        "samples": samples,
        "notifications": notifications,
    }))
    .into_response())
}

/// What was on the alert's host when it fired: the agent's inventory at the first
/// match's event time (`GET /api/v1/agents/{id}/inventory?at=`). `None` for an alert
/// without an agent (a correlation across hosts).
pub fn inventory_link(alert: &crate::alert::Alert) -> Option<String> {
    let agent = uuid::Uuid::parse_str(alert.agent_id.as_deref()?).ok()?;
    let at = chrono::DateTime::parse_from_rfc3339(&alert.first_seen).ok()?;
    // `Z` and no `+`: the time goes into a query string as it is.
    let at = at
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    Some(format!("/api/v1/agents/{agent}/inventory?at={at}"))
}

async fn act(
    state: &AppState,
    id: &str,
    action: Action,
    caller: &Caller,
) -> Result<Response, ApiError> {
    match state
        .alerts
        .act(id, &action, &caller.0)
        .await
        .map_err(ApiError::internal)?
    {
        ActionOutcome::Done(alert) => {
            Ok(Json(json!({ "alert": alert, "changed": true })).into_response())
        }
        ActionOutcome::Unchanged(alert) => {
            Ok(Json(json!({ "alert": alert, "changed": false })).into_response())
        }
        ActionOutcome::NotFound => Err(ApiError::not_found(format!("no alert {id}"))),
    }
}

async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &id, Action::Acknowledge, &caller).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    reason: Option<String>,
}

/// Most characters of a note, reason or assignee.
const MAX_TEXT: usize = 4000;

fn checked_text(text: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match text {
        Some(t) if t.chars().count() > MAX_TEXT => Err(ApiError::bad_request(format!(
            "{what} is longer than {MAX_TEXT} characters"
        ))),
        Some(t) if t.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    // The body is optional: no body, no reason.
    let body: ResolveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResolveBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("resolve body: {e}")))?
    };
    let reason = checked_text(body.reason, "reason")?;
    act(&state, &id, Action::Resolve { reason }, &caller).await
}

async fn suppress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &id, Action::Suppress, &caller).await
}

async fn reopen(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(&state, &id, Action::Reopen, &caller).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// Who takes it; `null` unassigns.
    assignee: Option<String>,
}

async fn assign(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let assignee = checked_text(body.assignee, "assignee")?;
    act(&state, &id, Action::Assign(assignee), &caller).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
}

async fn note(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<NoteBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(text) = checked_text(Some(body.text), "text")? else {
        return Err(ApiError::bad_request("a note needs text"));
    };
    act(&state, &id, Action::Note(text), &caller).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxParams {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/alerts/outbox?status=failed`: notifications (newest first) and the count
/// of each status — a failed notification is visible here until someone looks.
async fn outbox(
    State(state): State<AppState>,
    params: Result<Query<OutboxParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(status) = params.status.as_deref()
        && !["pending", "sent", "failed", "summarized", "skipped"].contains(&status)
    {
        return Err(ApiError::bad_request(format!(
            "status `{status}` is not one of pending, sent, failed, summarized, skipped"
        )));
    }
    let store = state.alerts.store();
    let notifications = store
        .outbox(params.status.as_deref(), limit(params.limit, 100)?)
        .await
        .map_err(ApiError::internal)?;
    let counts: serde_json::Map<String, serde_json::Value> = store
        .outbox_counts()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(status, n)| (status, json!(n)))
        .collect();
    Ok(Json(json!({ "counts": counts, "notifications": notifications })).into_response())
}

/// `GET /api/v1/alerts/stream`: every alert change as an SSE event (`event: alert`, data
/// `{"change": …, "alert": …}`); a client that falls behind gets `event: lagged` and
/// should reload the list.
async fn stream(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(permit) = state.alerts.stream_permit() else {
        return Err(ApiError::unavailable(5));
    };
    let changes = BroadcastStream::new(state.alerts.subscribe()).map(move |item| {
        // Held for as long as the stream lives.
        let _open = &permit;
        Ok::<_, Infallible>(match item {
            Ok(change) => Event::default()
                .event("alert")
                .json_data(change.as_ref())
                // Not `error`: that name is EventSource's own connection-failure event.
                .unwrap_or_else(|_| Event::default().event("encoding_failed")),
            Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                Event::default().event("lagged").data(skipped.to_string())
            }
        })
    });
    Ok(Sse::new(changes)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
