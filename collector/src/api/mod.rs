//! The collector's HTTP API: enrollment, ingest, search, fleet and provenance.
//!
//! Authentication per route: enrollment is authorised by its one-time (or limited-use)
//! token, ingest by the batch signature, everything else by a bearer API token (stored
//! hashed). Every request body has a size limit, every error is a problem document, and
//! every response carries headers that forbid framing, sniffing and caching.

mod alerts;
mod dashboards;
mod error;
mod health;
pub mod metrics;
mod rules;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;

pub use error::{ApiError, QueryPosition};

use crate::archive::CollectorArchive;
use crate::collector_events::SecurityReport;
use crate::custody::{self, CustodyError};
use crate::fleet::{AgentRegistry, EnrollError, FleetState};
use crate::index::{EventIndex, IndexError, SearchRequest};
use crate::ingest::{BatchIngest, Rejection};
use crate::store::{AgentRecord, AgentState, RevokeOutcome, Store};

/// Largest JSON body on the management routes.
const MAX_JSON_BODY: usize = 64 * 1024;
/// Most hits one search returns (pagination with cursors comes with the search issue).
pub const MAX_SEARCH_LIMIT: usize = 50_000;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub agents: AgentRegistry,
    pub fleet: FleetState,
    pub ingest: Arc<BatchIngest<CollectorArchive>>,
    /// `None` when the collector runs without an index (the ingest benchmark, a
    /// cluster's gateway and api nodes).
    pub index: Option<EventIndex>,
    /// On a cluster's api node: searches go to the indexers holding the partitions.
    pub cluster_search: Option<crate::cluster::search::FanOut>,
    /// The archive directory, read by provenance checks.
    pub archive_dir: PathBuf,
    pub alerts: crate::alert::AlertService,
    /// Allowlist policies handed to agents in ingest answers.
    pub allowlists: crate::fleet::allowlist::AllowlistDistribution,
    /// `/health/ready` fails while an archive consumer lags by more bytes than this.
    pub ready_max_lag_bytes: u64,
    /// The last readiness answer (see `health.rs`).
    pub ready_cache: health::ReadyCache,
    /// The rules the live detector runs (empty without a detector).
    pub rules: crate::detect::RuleCatalog,
    pub dashboards: Arc<crate::console::dashboards::Dashboards>,
    /// Console sign-in (the shop's sessions); `None` when the shop is disabled.
    pub console: Option<crate::console::ConsoleAuth>,
    /// The indexer's counters for `/metrics`; `None` without an indexer.
    pub indexer: Option<Arc<crate::index::IndexerStats>>,
    /// The live detector's counters for `/metrics`; `None` without a detector.
    pub detector: Option<Arc<crate::detect::DetectorStats>>,
    /// Requests by route and status, counted by [`metrics::track_http`] on every route.
    pub http: Arc<metrics::HttpMetrics>,
    /// Where a certificate hand-over is published (the generated certificate's
    /// directory); `None` with an operator-supplied certificate.
    pub tls_dir: Option<PathBuf>,
}

/// Who is calling: the name of the API token presented (recorded in alert histories).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Which network segments one listener serves (see [`crate::listeners`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segments {
    /// Agent enrollment and ingest.
    pub ingest: bool,
    /// The reference shop.
    pub shop: bool,
    /// The console, the management API and `/metrics`.
    pub console: bool,
}

impl Segments {
    pub const ALL: Segments = Segments {
        ingest: true,
        shop: true,
        console: true,
    };

    pub fn is_empty(self) -> bool {
        !(self.ingest || self.shop || self.console)
    }

    /// The segments' names, for logs and the start banner.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.ingest, "ingest"),
            (self.shop, "shop"),
            (self.console, "console"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The collector's routes grouped by segment, each group with its state and body limit,
/// so every listener is assembled from the same pieces ([`Routes::serve`]).
#[derive(Clone)]
pub struct Routes {
    management: Router,
    ingest: Router,
    health: Router,
    console: Router,
    /// The shop's router, and its customer routes alone; `None` when the shop is
    /// disabled.
    shop: Option<(Router, Router)>,
    http: Arc<metrics::HttpMetrics>,
}

/// The routes of every segment; `shop` is the shop's whole router and its customer
/// routes alone.
pub fn routes(state: AppState, shop: Option<(Router, Router)>) -> Routes {
    let max_batch = state.ingest.limits().max_body_bytes;
    let http = Arc::clone(&state.http);
    let management = Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/export", get(export))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/agents/{id}", get(show_agent))
        .route("/api/v1/agents/{id}/revoke", post(revoke_agent))
        .route("/api/v1/agents/{id}/inventory", get(agent_inventory))
        .route("/api/v1/events/{id}/provenance", get(event_provenance))
        .route("/api/v1/detections", get(list_detections))
        .merge(alerts::routes())
        .merge(rules::routes())
        .merge(dashboards::routes())
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_caller,
        ))
        .with_state(state.clone());
    let ingest = Router::new()
        .route("/api/v1/ingest", post(ingest))
        .route("/api/v1/ingest/bundle", post(ingest_bundle))
        .layer(DefaultBodyLimit::max(max_batch))
        .merge(
            Router::new()
                .route("/api/v1/enroll", post(enroll))
                .route("/api/v1/agents/{id}/key", post(rotate_agent_key))
                .route("/api/v1/tls/handover", get(tls_handover))
                .layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .with_state(state.clone());
    // Probes carry no secret and must work without one (load balancers, systemd,
    // Kubernetes): pass or fail per check, nothing more. Every listener answers them.
    let health = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(state.clone());
    let console = crate::console::router(state.console.clone());
    Routes {
        management,
        ingest,
        health,
        console,
        shop,
        http,
    }
}

impl Routes {
    /// One listener's router: the health probes plus the given segments' routes, under
    /// the security headers, with problem documents for everything else. The console
    /// segment carries the shop's routes too: the console signs in through them.
    pub fn serve(&self, segments: Segments) -> Router {
        let mut app = self.health.clone();
        if segments.ingest {
            app = app.merge(self.ingest.clone());
        }
        if segments.console {
            app = app
                .merge(self.management.clone())
                .merge(self.console.clone());
        }
        // The console signs in through the shop's routes and administers its accounts:
        // the whole shop goes with it. A shop listener of its own serves customers only.
        match (&self.shop, segments.console, segments.shop) {
            (Some((whole, _)), true, _) => app = app.merge(whole.clone()),
            (Some((_, customers)), false, true) => app = app.merge(customers.clone()),
            _ => {}
        }
        // Outermost, on every route (the shop's and the console's too) and the fallback:
        // each request is counted under its route template once routing has matched it.
        with_security_headers(app.fallback(|| async { ApiError::not_found("no such route") }))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.http),
                metrics::track_http,
            ))
    }
}

/// Every segment on one router; `shop` (the whole shop router and its customer routes)
/// is served under the same security headers, body limits and problem documents.
pub fn router(state: AppState, shop: Option<(Router, Router)>) -> Router {
    routes(state, shop).serve(Segments::ALL)
}

/// The headers every response carries: a CSP that allows nothing at all and forbids
/// framing (the console's pages set their own, which allows this origin's files and
/// still nothing inline), no MIME sniffing, no caching, HSTS, no referrer.
pub fn with_security_headers(router: Router) -> Router {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
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
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

/// Routes a console session may use only with the admin role: they change the fleet
/// itself, not an alert's triage (bearer API tokens are operators' and may).
const ADMIN_ROUTES: &[&str] = &["/api/v1/agents/{id}/revoke"];

fn admin_only(request: &Request) -> bool {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| ADMIN_ROUTES.contains(&path.as_str()))
}

/// Who may use the management API: a bearer API token (checked against the stored
/// hashes: the CLI, scripts), or else a console session — the shared sign-in with both
/// factors, role analyst or admin, and on state-changing requests the CSRF token and a
/// same-site origin (see [`crate::console::ConsoleAuth::analyst`]).
async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        let session = crate::shop::http::session_cookie(request.headers()).is_some();
        if let (true, Some(console)) = (session, &state.console) {
            return match console.analyst(&request).await {
                Ok(analyst)
                    if !analyst.user.has(crate::shop::domain::user::Role::Admin)
                        && admin_only(&request) =>
                {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "this action needs the admin role",
                    ))
                }
                Ok(analyst) => {
                    let name = format!("{} (console)", analyst.user.email.as_str());
                    request.extensions_mut().insert(Caller(name));
                    Ok(next.run(request).await)
                }
                Err(refused) => Ok(refused),
            };
        }
        return Err(ApiError::unauthorized(
            "an API token is required (Authorization: Bearer …)",
        ));
    };
    match state.store.check_api_token(token).await {
        Ok(Some(name)) => {
            request.extensions_mut().insert(Caller(name));
            Ok(next.run(request).await)
        }
        Ok(None) => Err(ApiError::unauthorized("invalid API token")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `POST /api/v1/ingest`: one signed batch. See [`read_ingest_body`] for the size checks;
/// then [`BatchIngest`] runs its checks.
async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let peer = Some(peer.ip());
    let held = held_policy(&request);
    let body = read_ingest_body(&state, peer, request).await?;
    match state.ingest.ingest(body.to_vec(), peer).await {
        Ok(mut ack) => {
            // Only a batch archived just now proves the sender holds the agent's key: a
            // replayed one (a duplicate) could come from anyone who saw it.
            if ack.status == "accepted" {
                ack.allowlist = policy_for(&state, ack.agent_id, held.as_deref()).await;
            }
            Ok(Json(ack).into_response())
        }
        Err(rejection) => Err(rejection_error(rejection)),
    }
}

/// The allowlist policy an agent says it holds (`x-yagura-allowlist`); `None` when it
/// says nothing (it enforces no allowlist, or is older) or something malformed.
fn held_policy(request: &Request) -> Option<String> {
    use yagura_shared::policy_delivery::{ALLOWLIST_HEADER, is_policy_reference};
    request
        .headers()
        .get(ALLOWLIST_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_policy_reference(v))
        .map(str::to_string)
}

/// The policy assigned to `agent` by its labels, when it holds another. Only agents that
/// name what they hold get one (an agent without an allowlist has no key to check it).
async fn policy_for(
    state: &AppState,
    agent: uuid::Uuid,
    held: Option<&str>,
) -> Option<yagura_shared::policy_delivery::DeliveredPolicy> {
    let held = held?;
    let known = state.agents.get(agent).await.ok().flatten()?;
    if known.record.is_internal() {
        return None;
    }
    state.allowlists.for_agent(&known.record.labels, held).await
}

/// `POST /api/v1/ingest/bundle`: several batches of one agent, taken strictly in order
/// (see `yagura_shared::bundle`). Each batch gets every check a single upload gets; the
/// first one that is to be retried (anything but 2xx, 400 and 413, which the agent
/// settles for good) ends the bundle, so no batch is archived ahead of an earlier one
/// still to come. When that is the first batch, its error is the answer; otherwise 200
/// with one result per batch looked at.
async fn ingest_bundle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let peer = Some(peer.ip());
    let held = held_policy(&request);
    let body = read_ingest_body(&state, peer, request).await?;
    let batches = yagura_shared::decode_bundle(&body).map_err(|e| {
        state
            .ingest
            .stats()
            .count_rejection(crate::ingest::RejectReason::Malformed);
        state.ingest.collector_events().security(SecurityReport {
            action: "malformed_batch",
            peer,
            claimed_agent: None,
            reason: e.to_string(),
        });
        ApiError::bad_request(e.to_string())
    })?;
    let sequences: Vec<Option<u64>> = batches
        .iter()
        .map(|batch| {
            yagura_shared::parse_header(batch)
                .ok()
                .map(|header| header.sequence)
        })
        .collect();
    let answers = state
        .ingest
        .ingest_all(batches.iter().map(|batch| batch.to_vec()).collect(), peer)
        .await;
    let mut results = Vec::with_capacity(answers.len());
    // The agent a policy may go to: the one whose batch was archived just now, and only
    // if every batch the bundle had acknowledged is that agent's (replays prove nothing).
    let mut accepted_agent = None;
    let mut agents_seen = std::collections::HashSet::new();
    for (answer, sequence) in answers.into_iter().zip(sequences) {
        match answer {
            Ok(ack) => {
                agents_seen.insert(ack.agent_id);
                if ack.status == "accepted" {
                    accepted_agent = Some(ack.agent_id);
                }
                results.push(yagura_shared::BatchResult {
                    status: StatusCode::OK.as_u16(),
                    sequence: Some(ack.sequence),
                    outcome: Some(ack.status.to_string()),
                    detail: None,
                    retry_after_seconds: None,
                })
            }
            // The first batch is to be retried: its error is the answer.
            Err(rejection) if !rejection.is_final() && results.is_empty() => {
                return Err(rejection_error(rejection));
            }
            // The answers end at the first batch to be retried.
            Err(rejection) => results.push(rejection_error(rejection).to_batch_result(sequence)),
        }
    }
    let allowlist = match accepted_agent {
        Some(agent) if agents_seen.len() == 1 => policy_for(&state, agent, held.as_deref()).await,
        _ => None,
    };
    Ok(Json(yagura_shared::BundleAnswer { results, allowlist }).into_response())
}

/// Reads an ingest body under the configured limit: checked from `Content-Length` before
/// a byte of it is read (413), and again while reading (a body without, or lying about,
/// its length). Oversized bodies are reported as security events.
async fn read_ingest_body(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    request: Request,
) -> Result<axum::body::Bytes, ApiError> {
    let max = state.ingest.limits().max_body_bytes;
    let oversized = |detail: String| {
        state
            .ingest
            .stats()
            .count_rejection(crate::ingest::RejectReason::TooLarge);
        state.ingest.collector_events().security(SecurityReport {
            action: "oversized_body",
            peer,
            claimed_agent: None,
            reason: detail.clone(),
        });
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > max as u64
    {
        return Err(oversized(format!(
            "body of {length} bytes exceeds the collector's limit of {max} bytes"
        )));
    }
    match axum::body::to_bytes(request.into_body(), max).await {
        Ok(body) => Ok(body),
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                oversized(format!("body exceeds the collector's limit of {max} bytes"))
            } else {
                ApiError::bad_request(format!("reading the body: {error}"))
            })
        }
    }
}

/// The HTTP answer to a batch ingest refused.
fn rejection_error(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::Malformed(d) | Rejection::ClockSkew(d) => ApiError::bad_request(d),
        Rejection::UnknownAgent(_) | Rejection::RevokedAgent(_) | Rejection::Unverified(_) => {
            ApiError::unauthorized(rejection.to_string())
        }
        Rejection::TooLarge(d) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, d),
        Rejection::SlowDown {
            detail,
            retry_after_seconds,
        } => ApiError::too_many_requests(detail, retry_after_seconds),
        Rejection::Unavailable(cause) => {
            tracing::error!(%cause, "batch could not be stored");
            ApiError::unavailable(5)
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
    /// The oldest event time: RFC 3339, `now-15m`, or `15m` (ago).
    since: Option<String>,
    /// The same as `since`.
    from: Option<String>,
    /// The newest event time, in the same forms.
    to: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
    /// Aggregations, comma-separated (`terms:source.ip,date_histogram:@timestamp`).
    agg: Option<String>,
    /// The previous page's `next_cursor`.
    after: Option<String>,
    /// Dotted fields to return, comma-separated (all when absent).
    fields: Option<String>,
    /// Export only: `ndjson` (default) or `csv`.
    format: Option<String>,
}

/// Parses a time: RFC 3339, `now`, `now-15m`, or a bare `15m`, `1h`, `7d`, `30s`
/// meaning "now minus that".
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(at) = crate::search::time::parse_time(text, now) {
        return Ok(at);
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

/// The search request of `search` and `export` parameters (400 on anything invalid).
fn search_request(params: SearchParams, limit: usize) -> Result<SearchRequest, ApiError> {
    if params.since.is_some() && params.from.is_some() {
        return Err(ApiError::bad_request(
            "give `since` or `from`, not both (they mean the same)",
        ));
    }
    let now = Utc::now();
    let time = |text: Option<&str>, name: &str| {
        text.map(|t| parse_since(t, now))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    let since = time(params.since.as_deref().or(params.from.as_deref()), "from")?;
    let until = time(params.to.as_deref(), "to")?;
    if let (Some(from), Some(to)) = (since, until)
        && from > to
    {
        return Err(ApiError::bad_request(format!(
            "the time range is empty: from {from} is after to {to}"
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
    let aggs = crate::search::aggs::parse_aggs(params.agg.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("aggregation: {e}")))?;
    let after = params
        .after
        .as_deref()
        .map(str::parse::<crate::index::Cursor>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    Ok(SearchRequest {
        aggs,
        after,
        fields: comma_list(params.fields.as_deref()),
        query: params.q.unwrap_or_default(),
        since,
        until,
        count_total: true,
        limit,
        oldest_first,
    })
}

/// A search failure as the client sees it: its mistakes as 400s with their position.
fn search_error(error: IndexError) -> ApiError {
    match error {
        IndexError::Query(detail) => ApiError::bad_request(format!("query: {detail}")),
        IndexError::Aggregation(detail) => ApiError::bad_request(format!("aggregation: {detail}")),
        IndexError::Syntax(e) => ApiError::bad_query(
            format!("query syntax: {e}"),
            QueryPosition {
                column: e.column,
                expected: Some(e.expected),
            },
        ),
        IndexError::Compile(e) => ApiError::bad_query(
            format!("query: {e}"),
            QueryPosition {
                column: e.column,
                expected: None,
            },
        ),
        other => ApiError::internal(other),
    }
}

/// A search the indexers refused is the caller's (400); one they could not all answer
/// is a 503 to retry (a partition between holders, an indexer gone).
fn fan_out_error(error: crate::cluster::search::FanOutError) -> ApiError {
    use crate::cluster::search::FanOutError;
    match error {
        FanOutError::Invalid(detail) => ApiError::bad_request(detail),
        FanOutError::Unavailable(detail) => {
            tracing::warn!(%detail, "cluster search");
            ApiError::unavailable(2).with_detail(format!("not every partition answered: {detail}"))
        }
    }
}

fn index_of(state: &AppState) -> Result<EventIndex, ApiError> {
    state
        .index
        .clone()
        .ok_or_else(|| ApiError::not_found("this collector runs without an index"))
}

async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if params.format.is_some() {
        return Err(ApiError::bad_request(
            "format applies to /api/v1/export, not to search",
        ));
    }
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_SEARCH_LIMIT}"
        )));
    }
    let request = search_request(params, limit)?;
    if state.index.is_none()
        && let Some(fan) = &state.cluster_search
    {
        return fan
            .search(&request)
            .await
            .map(|found| Json(found).into_response())
            .map_err(fan_out_error);
    }
    let index = index_of(&state)?;
    tokio::task::spawn_blocking(move || index.search(&request))
        .await
        .map_err(ApiError::internal)?
        .map(|found| Json(found).into_response())
        .map_err(search_error)
}

/// `GET /api/v1/export`: the whole result of a query as NDJSON or CSV, streamed page by
/// page (constant memory on both sides, whatever the size). The query is checked before
/// the first byte, so a bad one is still a 400.
async fn export(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    use crate::search::export::{self, Format};
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let format: Format = params
        .format
        .as_deref()
        .unwrap_or("ndjson")
        .parse()
        .map_err(ApiError::bad_request)?;
    if params.agg.is_some() || params.limit.is_some() || params.after.is_some() {
        return Err(ApiError::bad_request(
            "an export takes q, since, order, fields and format",
        ));
    }
    let request = search_request(params, 1)?;
    let index = index_of(&state)?;
    {
        let (index, probe) = (index.clone(), request.clone());
        tokio::task::spawn_blocking(move || index.search(&probe))
            .await
            .map_err(ApiError::internal)?
            .map_err(search_error)?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let sent = export::export(&index, request, format, |chunk| {
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        if let Err(e) = sent {
            tracing::error!(error = %e, "export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other("export stopped")));
        }
    });
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// A comma-separated parameter as a list (blanks dropped).
fn comma_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// An agent as `GET /api/v1/agents` and `yagura agents list|show` present it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    /// `agent`, or `collector` for the collector's own signing identity.
    pub kind: String,
    pub labels: crate::store::Labels,
    /// `active` or `revoked`.
    pub status: String,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
    /// `online`, `offline` or `never_seen`.
    pub connectivity: String,
    pub last_seen_at: Option<String>,
    pub last_peer: Option<String>,
    pub last_sequence: Option<u64>,
    /// From the latest heartbeat, else as given at enrollment.
    pub version: String,
    pub uptime_seconds: Option<u64>,
    pub spool_batches: Option<u64>,
    pub spool_bytes: Option<u64>,
    pub lag_bytes: Option<u64>,
    /// The public key batches are verified with (base64 Ed25519).
    pub public_key: String,
}

impl AgentView {
    pub fn new(record: AgentRecord, state: Option<AgentState>) -> Self {
        let state = state.unwrap_or_default();
        let seen = !state.last_seen_at.is_empty();
        AgentView {
            id: record.id.to_string(),
            hostname: record.hostname,
            kind: record.kind,
            labels: record.labels,
            status: record.status,
            enrolled_at: record.enrolled_at,
            revoked_at: record.revoked_at,
            connectivity: if seen {
                state.connectivity
            } else {
                "never_seen".into()
            },
            last_seen_at: seen.then_some(state.last_seen_at),
            last_peer: seen.then_some(state.last_peer),
            last_sequence: seen.then_some(state.last_sequence),
            version: state.agent_version.unwrap_or(record.version),
            uptime_seconds: state.uptime_seconds,
            spool_batches: state.spool_batches,
            spool_bytes: state.spool_bytes,
            lag_bytes: state.lag_bytes,
            public_key: record.public_key,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectionParams {
    limit: Option<u32>,
}

/// The newest rule matches of the live detector (at most 1,000, default 100).
async fn list_detections(
    State(state): State<AppState>,
    params: Result<Query<DetectionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let rows = state
        .store
        .detections(limit)
        .await
        .map_err(ApiError::internal)?;
    let detections: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|row| serde_json::from_str(&row.body).ok())
        .collect();
    Ok(Json(serde_json::json!({ "detections": detections })).into_response())
}

async fn list_agents(State(state): State<AppState>) -> Result<Response, ApiError> {
    let agents = state.agents.list().await.map_err(ApiError::internal)?;
    let view: Vec<AgentView> = agents
        .into_iter()
        .map(|a| {
            let live = state.fleet.get(a.id);
            AgentView::new(a, live)
        })
        .collect();
    Ok(Json(view).into_response())
}

fn agent_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::bad_request("agent id must be a UUID"))
}

async fn show_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = agent_id(&id)?;
    let record = state
        .store
        .agent(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id}")))?;
    Ok(Json(AgentView::new(record, state.fleet.get(id))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryParams {
    /// RFC 3339, or a relative time like `2h` (ago); default: now.
    at: Option<String>,
}

/// `GET /api/v1/agents/{id}/inventory?at=…`: what was on the host at that time.
async fn agent_inventory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<InventoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = agent_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let now = Utc::now();
    let at = match params.at.as_deref() {
        Some(text) => parse_since(text, now).map_err(ApiError::bad_request)?,
        None => now,
    };
    if state
        .store
        .agent(id)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no agent {id}")));
    }
    let index = index_of(&state)?;
    let answer =
        tokio::task::spawn_blocking(move || crate::fleet::inventory::inventory_at(&index, id, at))
            .await
            .map_err(ApiError::internal)?
            .map_err(search_error)?;
    Ok(Json(answer).into_response())
}

/// `POST /api/v1/agents/{id}/revoke`: through the running collector, so its key cache
/// forgets the agent at once.
async fn revoke_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = agent_id(&id)?;
    let status = match state.agents.revoke(id).await.map_err(ApiError::internal)? {
        RevokeOutcome::Revoked => "revoked",
        RevokeOutcome::AlreadyRevoked => "already_revoked",
        RevokeOutcome::NotFound => return Err(ApiError::not_found(format!("no agent {id}"))),
        RevokeOutcome::Refused => {
            return Err(ApiError::bad_request(
                "the collector's own identity cannot be revoked",
            ));
        }
    };
    tracing::info!(agent = %id, status, "agent revoked");
    Ok(Json(serde_json::json!({ "id": id.to_string(), "status": status })).into_response())
}

/// `POST /api/v1/agents/{id}/key`: an agent moves to a new signing key (on the ingest
/// segment: agents call it). Authorised by the request itself — signed by the agent's
/// current key and by the new one ([`yagura_shared::key_rotation`]); retrying a done
/// rotation answers 200 again.
async fn rotate_agent_key(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Result<Json<yagura_shared::key_rotation::KeyRotation>, JsonRejection>,
) -> Result<Response, ApiError> {
    use crate::fleet::KeyRotationError;
    let id = agent_id(&id)?;
    let Json(request) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if i64::try_from(request.from_sequence).is_err() {
        return Err(ApiError::bad_request("from_sequence is out of range"));
    }
    let last_archived = match state.ingest.archive().jetstream() {
        Some(stream) => stream
            .last_archived(id)
            .await
            .map_err(|_| ApiError::unavailable(5))?,
        None => crate::archive::Archive::last_sequence(state.ingest.archive(), id),
    };
    let outcome = state
        .agents
        .rotate_key(id, &request, last_archived)
        .await
        .map_err(|e| {
            if !matches!(e, KeyRotationError::Store(_)) {
                state
                    .ingest
                    .collector_events()
                    .security(crate::collector_events::SecurityReport {
                        action: "key_rotation_refused",
                        peer: Some(peer.ip()),
                        claimed_agent: Some(id),
                        reason: e.to_string(),
                    });
            }
            e
        })
        .map_err(|e| match e {
            KeyRotationError::NotRotatable(_) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            KeyRotationError::BadSignature(_) => ApiError::unauthorized(e.to_string()),
            KeyRotationError::TooEarly { .. } | KeyRotationError::KeyChanged => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            KeyRotationError::Store(e) => ApiError::internal(e),
        })?;
    let status = match outcome {
        crate::store::KeyRotationOutcome::Rotated => {
            state.ingest.collector_events().agent_key_rotated(
                id,
                &request.public_key,
                request.from_sequence,
                Some(peer.ip()),
            );
            "rotated"
        }
        _ => "already_rotated",
    };
    Ok(Json(serde_json::json!({
        "agent_id": id.to_string(),
        "public_key": request.public_key,
        "from_sequence": request.from_sequence,
        "status": status,
    }))
    .into_response())
}

/// `GET /api/v1/tls/handover`: the published certificate hand-over (404 when none).
/// Open to anyone, like the certificate itself: agents check its signature against the
/// certificate they pin.
async fn tls_handover(State(state): State<AppState>) -> Result<Response, ApiError> {
    let dir = state
        .tls_dir
        .ok_or_else(|| ApiError::not_found("this collector's certificate is managed outside it"))?;
    let handover = tokio::task::spawn_blocking(move || crate::tls::handover::published(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("no certificate hand-over is published"))?;
    Ok(Json(handover).into_response())
}

/// `GET /api/v1/events/{id}/provenance`: the signed batch of an event, re-verified now.
async fn event_provenance(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let event_id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::bad_request("event id must be a UUID"))?
        .to_string();
    let index = state
        .index
        .clone()
        .ok_or_else(|| ApiError::not_found("this collector runs without an index"))?;
    let agents = state
        .agents
        .list()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    let dir = state.archive_dir.clone();
    let max = state.ingest.limits().max_decompressed_bytes;
    let report = tokio::task::spawn_blocking(move || {
        custody::provenance(&event_id, &index, &dir, &agents, max)
    })
    .await
    .map_err(ApiError::internal)?;
    match report {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e @ CustodyError::EventNotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ CustodyError::RecordGone(_)) => Err(ApiError::new(StatusCode::GONE, e.to_string())),
        Err(other) => Err(ApiError::internal(other)),
    }
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
