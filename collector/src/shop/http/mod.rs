//! The shop's HTTP edge: routes, the session cookie, CSRF and access checks, and the
//! mapping of use-case outcomes to responses.
//!
//! Every route is declared in one table ([`routes`]) with the access it needs; the
//! router and the OpenAPI description (`/shop/openapi.json`) are both made from it, so
//! no route exists without a declared rule, and anything else under `/shop` is 404.
//! Access is checked before the handler runs: the session (server-side, cookie
//! `__Host-yagura_shop`), its stage (password only, or second factor passed), the role,
//! the CSRF token on every state-changing request, and for admin routes the client's
//! address against `[shop] admin_allowlist`.

mod handlers;
pub mod openapi;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use ipnet::IpNet;
use serde::Serialize;

use super::ShopService;
use super::application::{Caller, Shop, ShopError};
use super::domain::audit::{AuditEvent, Origin, Outcome};
use super::domain::ports::SessionStage;
use super::domain::user::Role;
use super::infrastructure::sql_repository::SqlShopRepository;
use crate::api::ApiError;

/// The session cookie. `__Host-`: only set over HTTPS, for this host, path `/`.
pub const SESSION_COOKIE: &str = "__Host-yagura_shop";
/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest request body the shop reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the shop's handlers reach.
#[derive(Clone)]
pub struct ShopState {
    pub shop: Arc<Shop<SqlShopRepository>>,
    pub admin_allowlist: Arc<Vec<IpNet>>,
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (register, sign in, the API description).
    Public,
    /// A session, also one still waiting for its second factor.
    AnySession,
    /// A complete sign-in with at least this role.
    Role(Role),
    /// A complete sign-in as admin, from an allowlisted address.
    Admin,
}

/// One route of the table.
pub struct ShopRoute {
    pub methods: Vec<Method>,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// JSON Schema of the request body, if any.
    pub body: Option<serde_json::Value>,
    pub handler: MethodRouter<ShopState>,
}

impl Access {
    /// Routes for staff (administration, the audit trail) rather than customers.
    pub fn is_staff(self) -> bool {
        matches!(
            self,
            Access::Admin | Access::Role(Role::Analyst) | Access::Role(Role::Admin)
        )
    }
}

/// The shop's router (under `/shop`), with body limits and per-route access checks.
pub fn router(state: ShopState) -> Router {
    router_with(state, true)
}

/// The shop's customer routes only: what a listener in a DMZ serves (see
/// [`crate::listeners`]); administration and the audit trail stay on the management
/// listener, so a staff session or an exposed admin route cannot be used from there.
pub fn customer_router(state: ShopState) -> Router {
    router_with(state, false)
}

fn router_with(state: ShopState, staff: bool) -> Router {
    let mut router = Router::new();
    for route in handlers::routes() {
        if !staff && route.access.is_staff() {
            continue;
        }
        let guard = middleware::from_fn_with_state((state.clone(), route.access), guard);
        router = router.route(route.path, route.handler.route_layer(guard));
    }
    router
        .route(
            "/shop/openapi.json",
            axum::routing::get(|| async { inert_json(StatusCode::OK, &openapi::document()) }),
        )
        .route(
            "/shop/{*rest}",
            axum::routing::any(|| async { ApiError::not_found("no such route") }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A JSON response whose HTML-significant characters are escaped (`<` as `\u003c`, …):
/// stored text comes back byte-for-byte equal once parsed, yet inert if a client ever
/// puts the raw body into a page. (Outside strings JSON has no `<`, `>` or `&`, so
/// escaping the serialised text touches string contents only.)
pub fn inert_json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let text = match serde_json::to_string(value) {
        Ok(text) => text,
        Err(error) => return ApiError::internal(error).into_response(),
    };
    let mut inert = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => inert.push_str("\\u003c"),
            '>' => inert.push_str("\\u003e"),
            '&' => inert.push_str("\\u0026"),
            '\'' => inert.push_str("\\u0027"),
            c => inert.push(c),
        }
    }
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        inert,
    )
        .into_response()
}

/// Where a request came from, for audit records.
pub fn request_origin(headers: &HeaderMap, peer: Option<SocketAddr>) -> Origin {
    super::application::origin(
        peer.map(|p| p.ip()),
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    )
}

pub fn peer_of(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        // What tests put in place of a socket.
        .or_else(|| {
            extensions
                .get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
}

/// The session id in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value for a session id (or for ending it, with `None`).
pub fn session_set_cookie(id: Option<&str>) -> HeaderValue {
    let value = match id {
        Some(id) => format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        None => format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser says the request comes from another site: `Sec-Fetch-Site:
/// cross-site`, or an `Origin` whose host is not this request's host — its `Host`
/// header, or over HTTP/2 (which has none) the `:authority` of its URI.
fn cross_site(headers: &HeaderMap, authority: Option<&str>) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    origin == "null" || origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}

fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Maps a use case's outcome to a problem response. Credentials and codes get one
/// generic message each, whatever the reason.
pub fn shop_error(error: ShopError) -> ApiError {
    match error {
        ShopError::InvalidCredentials => ApiError::unauthorized("invalid email or password"),
        ShopError::InvalidCode => ApiError::unauthorized("invalid or already used code"),
        ShopError::Throttled(wait) => ApiError::too_many_requests(
            "too many failed attempts from this address; retry later",
            wait.as_secs().max(1),
        ),
        ShopError::Unauthenticated => ApiError::unauthorized("sign in first"),
        ShopError::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "not allowed"),
        ShopError::NotFound => ApiError::not_found("not found"),
        ShopError::Invalid(problems) => {
            ApiError::invalid_fields(serde_json::to_value(problems).unwrap_or_default())
        }
        ShopError::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, detail),
        ShopError::Storage(error) => ApiError::internal(error),
        ShopError::Internal(error) => ApiError::internal(error),
    }
}

async fn deny(shop: &ShopService, audit: AuditEvent, answer: ApiError) -> Response {
    if let Err(error) = shop.record_denial(audit).await {
        return shop_error(error).into_response();
    }
    answer.into_response()
}

/// What the session checks read of a request (borrowed parts that may be held across
/// an await, unlike the request with its body).
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The URI's authority (HTTP/2 requests carry the host here, not in `Host`).
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Refuses a state-changing request a browser says comes from another site (CSRF), with
/// an audit record; `None` lets it through.
pub async fn refuse_cross_site(
    shop: &ShopService,
    request: &RequestHead<'_>,
    origin: &Origin,
) -> Option<Response> {
    if !(state_changing(request.method) && cross_site(request.headers, request.authority)) {
        return None;
    }
    let audit = AuditEvent::new("access_denied", "web", Outcome::Failure)
        .origin(origin)
        .reason("cross-site request refused (CSRF)")
        .detail("path", request.path.to_string());
    Some(
        deny(
            shop,
            audit,
            ApiError::new(StatusCode::FORBIDDEN, "cross-site request refused"),
        )
        .await,
    )
}

/// The signed-in caller of a request: its session (cookie), the CSRF token on a
/// state-changing request, and — when `needed` names a role — a completed second factor
/// and at least that role. Refusals of a known caller are audited. The shop's routes and
/// the analyst console share this one check.
pub async fn signed_in(
    shop: &ShopService,
    request: &RequestHead<'_>,
    origin: &Origin,
    needed: Option<Role>,
) -> Result<Caller, Response> {
    let Some(session_id) = session_cookie(request.headers) else {
        return Err(ApiError::unauthorized("sign in first").into_response());
    };
    let caller = shop
        .authenticate(&session_id, origin)
        .await
        .map_err(|error| shop_error(error).into_response())?;
    let path = || request.path.to_string();
    if state_changing(request.method) {
        let presented = request
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_token(presented, &caller.csrf_token) {
            let audit = caller
                .audit("access_denied", "web", Outcome::Failure)
                .reason("missing or wrong CSRF token")
                .detail("path", path());
            return Err(deny(
                shop,
                audit,
                ApiError::new(StatusCode::FORBIDDEN, "missing or wrong CSRF token"),
            )
            .await);
        }
    }
    if let Some(role) = needed {
        if caller.stage != SessionStage::Full {
            return Err(ApiError::unauthorized("complete the second factor first").into_response());
        }
        if !caller.user.has(role) {
            let audit = caller
                .audit("access_denied", "web", Outcome::Failure)
                .reason(format!("needs role {}", role.as_str()))
                .detail("path", path());
            return Err(deny(
                shop,
                audit,
                ApiError::new(StatusCode::FORBIDDEN, "not allowed"),
            )
            .await);
        }
    }
    Ok(caller)
}

/// Checks a request against its route's [`Access`] before the handler runs, and hands
/// the handler the resolved [`Caller`].
async fn guard(
    State((state, access)): State<(ShopState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    let origin = request_origin(request.headers(), peer_of(&request));
    let (method, path, headers) = (
        request.method().clone(),
        request.uri().path().to_string(),
        request.headers().clone(),
    );
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    let head = RequestHead {
        method: &method,
        path: &path,
        authority: authority.as_deref(),
        headers: &headers,
    };
    if let Some(refused) = refuse_cross_site(&state.shop, &head, &origin).await {
        return refused;
    }
    if access == Access::Public {
        request.extensions_mut().insert(origin);
        return next.run(request).await;
    }
    let needed = match access {
        Access::Public | Access::AnySession => None,
        Access::Role(role) => Some(role),
        Access::Admin => Some(Role::Admin),
    };
    let caller = match signed_in(&state.shop, &head, &origin, needed).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if access == Access::Admin {
        let allowed = caller
            .origin
            .source_ip
            .is_some_and(|ip: IpAddr| state.admin_allowlist.iter().any(|net| net.contains(&ip)));
        if !allowed {
            let audit = caller
                .audit("admin_ip_denied", "web", Outcome::Failure)
                .reason("address not in the admin allowlist")
                .detail("path", path.clone());
            return deny(
                &state.shop,
                audit,
                ApiError::new(StatusCode::FORBIDDEN, "not allowed from this address"),
            )
            .await;
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller of a route with a session (set by [`guard`]).
pub type CallerExt = axum::Extension<Caller>;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// Browsers speak HTTP/2 to the collector: the host is then the request's
    /// `:authority`, with no `Host` header. A same-origin sign-in from the console must
    /// not look cross-site for want of one (it did: every browser sign-in was refused).
    #[test]
    fn the_origin_is_compared_with_the_host_or_the_http2_authority() {
        let same = headers(&[("origin", "https://127.0.0.1:8443")]);
        assert!(
            !cross_site(&same, Some("127.0.0.1:8443")),
            "HTTP/2, same origin"
        );
        assert!(cross_site(&same, Some("127.0.0.1:9443")), "another port");
        assert!(cross_site(&same, None), "no host at all: refused");
        let http1 = headers(&[
            ("origin", "https://127.0.0.1:8443"),
            ("host", "127.0.0.1:8443"),
        ]);
        assert!(!cross_site(&http1, None), "HTTP/1.1, same origin");
        let foreign = headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8443"),
        ]);
        assert!(cross_site(&foreign, Some("127.0.0.1:8443")));
        assert!(cross_site(
            &headers(&[("origin", "null")]),
            Some("127.0.0.1:8443")
        ));
        assert!(cross_site(
            &headers(&[("sec-fetch-site", "cross-site")]),
            Some("127.0.0.1:8443")
        ));
        assert!(
            !cross_site(&HeaderMap::new(), None),
            "not a browser: no Origin"
        );
    }
}
