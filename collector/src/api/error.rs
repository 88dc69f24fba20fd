//! One error type for every HTTP route, rendered as an RFC 9457 problem document.
//!
//! Client mistakes carry their detail; server faults are logged with their cause and
//! answered with a generic message, so no internal detail (paths, SQL, keys) leaks.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after_seconds: Option<u64>,
    /// Where in a query the problem is, for a client to point at.
    query_position: Option<QueryPosition>,
    /// Per-field problems of a refused form (`errors` member).
    field_errors: Option<serde_json::Value>,
}

/// The place of a query error: RFC 9457 extension members of the problem document.
#[derive(Debug, Clone, Serialize)]
pub struct QueryPosition {
    /// 1-based character column in the query text.
    pub column: usize,
    /// What the parser expected there (syntax errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    position: Option<&'a QueryPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            retry_after_seconds: None,
            query_position: None,
            field_errors: None,
        }
    }

    /// 400 for a query that does not parse or cannot run, with its position.
    pub fn bad_query(detail: impl Into<String>, position: QueryPosition) -> Self {
        ApiError {
            query_position: Some(position),
            ..Self::bad_request(detail)
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 503 with a Retry-After, for a temporary inability to take the request.
    pub fn unavailable(retry_after_seconds: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "the collector cannot take this request right now; retry later".into(),
            retry_after_seconds: Some(retry_after_seconds),
            query_position: None,
            field_errors: None,
        }
    }

    /// The same answer with another detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// 429 with a Retry-After: slow down (rate limit or backpressure).
    pub fn too_many_requests(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            detail: detail.into(),
            retry_after_seconds: Some(retry_after_seconds),
            query_position: None,
            field_errors: None,
        }
    }

    /// A server fault: logs the cause, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// 422 for input that parsed but is not acceptable, with what is wrong per field.
    pub fn invalid_fields(errors: serde_json::Value) -> Self {
        ApiError {
            field_errors: Some(errors),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "some fields are not acceptable; see errors",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// This error as the result of one batch of a bundle.
    pub fn to_batch_result(&self, sequence: Option<u64>) -> yagura_shared::BatchResult {
        yagura_shared::BatchResult {
            status: self.status.as_u16(),
            sequence,
            outcome: None,
            detail: Some(self.detail.clone()),
            retry_after_seconds: self.retry_after_seconds,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            kind: "about:blank",
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            position: self.query_position.as_ref(),
            errors: self.field_errors.as_ref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
