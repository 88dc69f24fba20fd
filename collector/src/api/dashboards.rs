//! `GET /api/v1/dashboards` and `GET /api/v1/dashboards/{id}`: the dashboard files the
//! console renders (each panel is then one search the console makes).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{id}", get(show))
}

async fn list(State(state): State<AppState>) -> Response {
    let dashboards: Vec<_> = state
        .dashboards
        .all()
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "title": d.title,
                "description": d.description,
                "panels": d.panels.len(),
            })
        })
        .collect();
    Json(json!({ "dashboards": dashboards })).into_response()
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    state
        .dashboards
        .get(&id)
        .map(|d| Json(d).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no dashboard {id}")))
}
