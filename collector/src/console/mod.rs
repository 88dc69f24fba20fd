//! The analyst console: search, alerts, fleet, rules and dashboards in the browser.
//!
//! Its files (`dashboards/console/`) are embedded in the binary and served under
//! `/console/`; the pages fetch the collector's own API with the session cookie of the
//! shared sign-in (the shop's accounts: password and TOTP, roles analyst and admin), so
//! there is one authentication component and one set of API routes for the CLI and the
//! browser. Every page but the sign-in page checks the session and role on the server
//! before it is served; every API call checks them again (see `api::require_caller`).
//! The content security policy allows scripts, styles and fetches from this origin only
//! and nothing inline.

pub mod assets;
pub mod dashboards;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::ApiError;
use crate::shop::ShopService;
use crate::shop::application::Caller;
use crate::shop::domain::user::Role;
use crate::shop::http::{RequestHead, peer_of, refuse_cross_site, request_origin, signed_in};

/// What the console's pages may load: their own scripts, styles and API, images drawn
/// inline (`data:`: the enrolment QR code); nothing inline, nothing from elsewhere.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The console's pages (one application shell; the script draws the page the URL names).
const PAGES: &[&str] = &["search", "alerts", "fleet", "rules", "dashboards"];

/// Signs console requests in through the shop's sessions.
#[derive(Clone)]
pub struct ConsoleAuth {
    shop: Arc<ShopService>,
}

impl ConsoleAuth {
    pub fn new(shop: Arc<ShopService>) -> Self {
        ConsoleAuth { shop }
    }

    /// The analyst (or admin) behind a request: a cross-site write is refused, the
    /// session must have passed both factors, and the role must be analyst or above (a
    /// customer's attempt is an audit record). The error is the response to send.
    ///
    /// The future owns what it reads of the request (a request with its body cannot be
    /// held across an await by a handler that must be `Send`).
    pub fn analyst(
        &self,
        request: &Request,
    ) -> impl Future<Output = Result<Caller, Response>> + Send + 'static {
        let origin = request_origin(request.headers(), peer_of(request));
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let headers = request.headers().clone();
        let authority = request.uri().authority().map(|a| a.as_str().to_string());
        let shop = Arc::clone(&self.shop);
        async move {
            let head = RequestHead {
                method: &method,
                path: &path,
                authority: authority.as_deref(),
                headers: &headers,
            };
            if let Some(refused) = refuse_cross_site(&shop, &head, &origin).await {
                return Err(refused);
            }
            signed_in(&shop, &head, &origin, Some(Role::Analyst)).await
        }
    }
}

/// `/console/…`: the pages and their files.
pub fn router(auth: Option<ConsoleAuth>) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/console/") }))
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(page))
        .route("/console/login", get(login))
        .route("/console/assets/{name}", get(asset))
        .route("/console/{page}", get(page))
        .route("/console/{page}/{*rest}", get(page))
        .with_state(auth)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_CSP),
        ))
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => ApiError::bad_request("bad redirect").into_response(),
    }
}

fn embedded(name: &str) -> Response {
    match assets::find(name) {
        Some(asset) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response(),
        None => ApiError::not_found("no such file").into_response(),
    }
}

/// The sign-in page: the only page served without a session.
async fn login(State(auth): State<Option<ConsoleAuth>>) -> Response {
    if auth.is_none() {
        return disabled();
    }
    embedded("login.html")
}

/// Scripts and styles: public (they hold no data), like any login page's.
async fn asset(Path(name): Path<String>) -> Response {
    embedded(&name)
}

fn disabled() -> Response {
    ApiError::not_found(
        "the console signs analysts in through the shop's accounts; this collector runs \
         with [shop] enabled = false",
    )
    .into_response()
}

/// A console page, for a signed-in analyst; without a session, the sign-in page (which
/// comes back here); for any other role, 403.
async fn page(State(auth): State<Option<ConsoleAuth>>, request: Request) -> Response {
    let Some(auth) = auth else {
        return disabled();
    };
    let name = request
        .uri()
        .path()
        .trim_start_matches("/console/")
        .split('/')
        .next()
        .unwrap_or_default();
    if !name.is_empty() && !PAGES.contains(&name) {
        return ApiError::not_found("no such page").into_response();
    }
    match auth.analyst(&request).await {
        Ok(_) => embedded("index.html"),
        Err(refused) if refused.status() == StatusCode::UNAUTHORIZED => {
            let back = request
                .uri()
                .path_and_query()
                .map_or("/console/search", |p| p.as_str());
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", back)
                .finish();
            see_other(&format!("/console/login?{query}"))
        }
        Err(refused) => refused,
    }
}
