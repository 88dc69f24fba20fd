//! The shop's routes: the table and the handlers.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use super::{
    Access, CallerExt, ShopRoute, ShopState, inert_json, session_cookie, session_set_cookie,
    shop_error,
};
use crate::api::ApiError;
use crate::shop::application::{Caller, CartChange, NewSession};
use crate::shop::domain::audit::{AuditEvent, Origin, Outcome};
use crate::shop::domain::cart::{Cart, CartId, Quantity, Sku};
use crate::shop::domain::form::RawContactForm;
use crate::shop::domain::user::{Role, UserId};
use crate::shop::infrastructure::audit_trail;

type Body<T> = Result<Json<T>, JsonRejection>;

/// The value of an `Ok`, or the early answer an `Err` carries (a refusal already audited
/// and rendered by the step that made it).
macro_rules! or_return {
    ($step:expr) => {
        match $step {
            Ok(value) => value,
            Err(response) => return response,
        }
    };
}

/// A refused body: audited (`validation_rejected`) and answered 400/413/415.
async fn parsed<T: DeserializeOwned>(
    state: &ShopState,
    who: Who<'_>,
    body: Body<T>,
) -> Result<T, Response> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => {
            let status = rejection.status();
            let audit = who
                .audit("validation_rejected", "web", Outcome::Failure)
                .reason(match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body too large".to_string(),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "not JSON".to_string(),
                    _ => "malformed body".to_string(),
                });
            if let Err(error) = state.shop.record_denial(audit).await {
                return Err(shop_error(error).into_response());
            }
            // The parser's message names the field and position, never internals.
            let detail = match status {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    format!("body larger than {} bytes", super::MAX_BODY_BYTES)
                }
                _ => rejection.body_text(),
            };
            Err(ApiError::new(status, detail).into_response())
        }
    }
}

/// Who made a request, for audit records of refusals.
#[derive(Clone, Copy)]
enum Who<'a> {
    Anonymous(&'a Origin),
    Caller(&'a Caller),
}

impl Who<'_> {
    fn audit(self, action: &'static str, category: &'static str, outcome: Outcome) -> AuditEvent {
        match self {
            Who::Anonymous(origin) => AuditEvent::new(action, category, outcome).origin(origin),
            Who::Caller(caller) => caller.audit(action, category, outcome),
        }
    }
}

fn answer<T: serde::Serialize>(result: Result<T, crate::shop::application::ShopError>) -> Response {
    match result {
        Ok(value) => inert_json(StatusCode::OK, &value),
        Err(error) => shop_error(error).into_response(),
    }
}

fn session_response(
    session: &NewSession,
    status: StatusCode,
    extra: serde_json::Value,
) -> Response {
    let mut body = json!({
        "stage": session.stage.as_str(),
        "csrf_token": session.csrf_token,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let mut response = inert_json(status, &body);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie(Some(&session.id)));
    response
}

// ----- accounts ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

async fn register(
    State(state): State<ShopState>,
    Extension(origin): Extension<Origin>,
    body: Body<Credentials>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Anonymous(&origin), body).await);
    match state
        .shop
        .register(&body.email, &body.password, &origin)
        .await
    {
        // The same answer whether or not the address was new.
        Ok(()) => inert_json(
            StatusCode::ACCEPTED,
            &json!({"status": "registration received; sign in to continue"}),
        ),
        Err(error) => shop_error(error).into_response(),
    }
}

async fn login(
    State(state): State<ShopState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Body<Credentials>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Anonymous(&origin), body).await);
    let presented = session_cookie(&headers);
    match state
        .shop
        .login(&body.email, &body.password, presented.as_deref(), &origin)
        .await
    {
        Ok(signed_in) => session_response(
            &signed_in.session,
            StatusCode::OK,
            json!({
                "mfa_required": signed_in.mfa_pending,
                "mfa_enrolled": signed_in.mfa_enrolled,
            }),
        ),
        Err(error) => shop_error(error).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaCode {
    code: Option<String>,
    recovery_code: Option<String>,
}

async fn login_mfa(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    body: Body<MfaCode>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    match state
        .shop
        .verify_mfa(&caller, body.code.as_deref(), body.recovery_code.as_deref())
        .await
    {
        Ok(session) => session_response(&session, StatusCode::OK, json!({})),
        Err(error) => shop_error(error).into_response(),
    }
}

async fn logout(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    match state.shop.logout(&caller).await {
        Ok(()) => ended(json!({"status": "signed out"})),
        Err(error) => shop_error(error).into_response(),
    }
}

async fn logout_all(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    match state.shop.logout_everywhere(&caller).await {
        Ok(ended_sessions) => {
            ended(json!({"status": "signed out everywhere", "sessions_ended": ended_sessions}))
        }
        Err(error) => shop_error(error).into_response(),
    }
}

fn ended(body: serde_json::Value) -> Response {
    let mut response = inert_json(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie(None));
    response
}

async fn session(Extension(caller): CallerExt) -> Response {
    inert_json(
        StatusCode::OK,
        &json!({
            "user_id": caller.user.id.0,
            "email": caller.user.email.as_str(),
            "role": caller.user.role,
            "stage": caller.stage.as_str(),
            "mfa_enrolled": caller.user.mfa_enrolled,
            "csrf_token": caller.csrf_token,
        }),
    )
}

// ----- second factor ------------------------------------------------------------------

async fn mfa_enroll(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    answer(state.shop.enroll_mfa(&caller).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

async fn mfa_confirm(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    body: Body<Code>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    match state.shop.confirm_mfa(&caller, &body.code).await {
        Ok((codes, Some(session))) => {
            session_response(&session, StatusCode::OK, json!({"recovery_codes": codes}))
        }
        Ok((codes, None)) => inert_json(StatusCode::OK, &json!({"recovery_codes": codes})),
        Err(error) => shop_error(error).into_response(),
    }
}

async fn mfa_disable(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    body: Body<Code>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    answer(
        state
            .shop
            .disable_mfa(&caller, &body.code)
            .await
            .map(|()| json!({"status": "second factor disabled"})),
    )
}

// ----- cart -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQuantity {
    quantity: u32,
}

fn cart_body(cart: &Cart) -> serde_json::Value {
    json!({
        "id": cart.id.0,
        "lines": cart.lines,
        "items": cart.lines.iter().map(|l| u64::from(l.quantity.get())).sum::<u64>(),
    })
}

fn cart_answer(result: Result<Cart, crate::shop::application::ShopError>) -> Response {
    match result {
        Ok(cart) => inert_json(StatusCode::OK, &cart_body(&cart)),
        Err(error) => shop_error(error).into_response(),
    }
}

/// A cart id from the path: malformed is the same 404 as someone else's, and audited.
async fn cart_id(state: &ShopState, caller: &Caller, id: &str) -> Result<CartId, Response> {
    match Uuid::parse_str(id) {
        Ok(id) => Ok(CartId(id)),
        Err(_) => {
            let audit = caller
                .audit("access_denied", "web", Outcome::Failure)
                .reason("malformed cart id");
            if let Err(error) = state.shop.record_denial(audit).await {
                return Err(shop_error(error).into_response());
            }
            Err(ApiError::not_found("not found").into_response())
        }
    }
}

async fn field_refused(
    state: &ShopState,
    caller: &Caller,
    field: &'static str,
    problem: String,
) -> Response {
    let audit = caller
        .audit("validation_rejected", "web", Outcome::Failure)
        .reason(format!("{field}: {problem}"));
    if let Err(error) = state.shop.record_denial(audit).await {
        return shop_error(error).into_response();
    }
    ApiError::invalid_fields(json!([{"field": field, "problem": problem}])).into_response()
}

async fn item_change(
    state: &ShopState,
    caller: &Caller,
    cart: Option<CartId>,
    sku: &str,
    quantity: Option<u32>,
    kind: fn(Sku, Option<Quantity>) -> CartChange,
) -> Response {
    let sku = match Sku::parse(sku) {
        Ok(sku) => sku,
        Err(error) => return field_refused(state, caller, "sku", error.to_string()).await,
    };
    let quantity = match quantity.map(Quantity::new).transpose() {
        Ok(q) => q,
        Err(error) => return field_refused(state, caller, "quantity", error.to_string()).await,
    };
    cart_answer(
        state
            .shop
            .change_cart(caller, cart, kind(sku, quantity))
            .await,
    )
}

fn add(sku: Sku, quantity: Option<Quantity>) -> CartChange {
    match quantity {
        Some(quantity) => CartChange::Add { sku, quantity },
        None => CartChange::Remove { sku },
    }
}

fn set(sku: Sku, quantity: Option<Quantity>) -> CartChange {
    match quantity {
        Some(quantity) => CartChange::SetQuantity { sku, quantity },
        None => CartChange::Remove { sku },
    }
}

fn remove(sku: Sku, _: Option<Quantity>) -> CartChange {
    CartChange::Remove { sku }
}

async fn my_cart(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    cart_answer(state.shop.my_cart(&caller).await)
}

async fn clear_my_cart(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    cart_answer(
        state
            .shop
            .change_cart(&caller, None, CartChange::Clear)
            .await,
    )
}

async fn add_my_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    body: Body<NewItem>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    item_change(&state, &caller, None, &body.sku, Some(body.quantity), add).await
}

async fn set_my_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path(sku): Path<String>,
    body: Body<NewQuantity>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    item_change(&state, &caller, None, &sku, Some(body.quantity), set).await
}

async fn remove_my_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path(sku): Path<String>,
) -> Response {
    item_change(&state, &caller, None, &sku, None, remove).await
}

async fn show_cart(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path(id): Path<String>,
) -> Response {
    let id = or_return!(cart_id(&state, &caller, &id).await);
    cart_answer(state.shop.cart(&caller, id).await)
}

async fn add_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path(id): Path<String>,
    body: Body<NewItem>,
) -> Response {
    let id = or_return!(cart_id(&state, &caller, &id).await);
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    item_change(
        &state,
        &caller,
        Some(id),
        &body.sku,
        Some(body.quantity),
        add,
    )
    .await
}

async fn set_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path((id, sku)): Path<(String, String)>,
    body: Body<NewQuantity>,
) -> Response {
    let id = or_return!(cart_id(&state, &caller, &id).await);
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    item_change(&state, &caller, Some(id), &sku, Some(body.quantity), set).await
}

async fn remove_item(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path((id, sku)): Path<(String, String)>,
) -> Response {
    let id = or_return!(cart_id(&state, &caller, &id).await);
    item_change(&state, &caller, Some(id), &sku, None, remove).await
}

async fn clear_cart(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    Path(id): Path<String>,
) -> Response {
    let id = or_return!(cart_id(&state, &caller, &id).await);
    cart_answer(
        state
            .shop
            .change_cart(&caller, Some(id), CartChange::Clear)
            .await,
    )
}

// ----- form -------------------------------------------------------------------------------

async fn submit_form(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    body: Body<RawContactForm>,
) -> Response {
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    match state.shop.submit_form(&caller, body).await {
        Ok(id) => inert_json(StatusCode::CREATED, &json!({"id": id})),
        Err(error) => shop_error(error).into_response(),
    }
}

async fn my_submissions(State(state): State<ShopState>, Extension(caller): CallerExt) -> Response {
    answer(state.shop.my_submissions(&caller).await)
}

// ----- administration ---------------------------------------------------------------------

async fn users(State(state): State<ShopState>) -> Response {
    answer(state.shop.users().await.map(|users| {
        users
            .into_iter()
            .map(|u| {
                json!({
                    "id": u.id.0,
                    "email": u.email.as_str(),
                    "role": u.role,
                    "mfa_enrolled": u.mfa_enrolled,
                })
            })
            .collect::<Vec<_>>()
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    role: String,
}

async fn user_id(
    state: &ShopState,
    caller: &Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<UserId, Response> {
    match id.ok().and_then(|Path(id)| Uuid::parse_str(&id).ok()) {
        Some(id) => Ok(UserId(id)),
        None => Err(field_refused(state, caller, "id", "not a user id".into()).await),
    }
}

async fn set_role(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    id: Result<Path<String>, PathRejection>,
    body: Body<NewRole>,
) -> Response {
    let id = or_return!(user_id(&state, &caller, id).await);
    let body = or_return!(parsed(&state, Who::Caller(&caller), body).await);
    let Some(role) = Role::parse(&body.role) else {
        return field_refused(
            &state,
            &caller,
            "role",
            "one of customer, analyst, admin".into(),
        )
        .await;
    };
    answer(
        state
            .shop
            .set_role(&caller, id, role)
            .await
            .map(|()| json!({"status": "role changed; the user's sessions were ended"})),
    )
}

async fn unlock(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = or_return!(user_id(&state, &caller, id).await);
    answer(
        state
            .shop
            .unlock(&caller, id)
            .await
            .map(|()| json!({"status": "unlocked"})),
    )
}

async fn revoke_sessions(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = or_return!(user_id(&state, &caller, id).await);
    answer(
        state
            .shop
            .revoke_sessions_of(&caller, id)
            .await
            .map(|ended| json!({"status": "sessions ended", "sessions_ended": ended})),
    )
}

async fn reset_mfa(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = or_return!(user_id(&state, &caller, id).await);
    answer(state.shop.reset_mfa(&caller, id).await.map(
        |()| json!({"status": "second factor removed; the user enrols again at the next sign-in"}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPage {
    after: Option<u64>,
    limit: Option<u32>,
}

/// The audit trail, page by page (analysts): each record with its chain hashes.
async fn audit(
    State(state): State<ShopState>,
    Extension(caller): CallerExt,
    query: Result<Query<AuditPage>, QueryRejection>,
) -> Response {
    let Ok(Query(page)) = query else {
        return field_refused(
            &state,
            &caller,
            "query",
            "after and limit are numbers".into(),
        )
        .await;
    };
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    match audit_trail::records_after(state.shop.repository().database(), page.after.unwrap_or(0), limit).await {
        Ok(records) => inert_json(
            StatusCode::OK,
            &records
                .into_iter()
                .map(|r| {
                    json!({
                        "sequence": r.sequence,
                        "at": r.at,
                        "event": serde_json::from_str::<serde_json::Value>(&r.event).unwrap_or_default(),
                        "previous_hash": r.previous_hash,
                        "hash": r.hash,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Err(error) => ApiError::internal(error).into_response(),
    }
}

// ----- the table ------------------------------------------------------------------------------

fn schema_credentials() -> serde_json::Value {
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "password": {"type": "string", "minLength": 8, "maxLength": 128}
        }
    })
}

fn schema_item() -> serde_json::Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["sku", "quantity"],
        "properties": {
            "sku": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,32}$"},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 99}
        }
    })
}

fn schema_quantity() -> serde_json::Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["quantity"],
        "properties": {"quantity": {"type": "integer", "minimum": 1, "maximum": 99}}
    })
}

fn schema_code() -> serde_json::Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["code"],
        "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}}
    })
}

/// Every route of the shop, with the access it needs.
pub fn routes() -> Vec<ShopRoute> {
    let customer = Access::Role(Role::Customer);
    let route = |methods: &[Method], path, access, summary, body, handler| ShopRoute {
        methods: methods.to_vec(),
        path,
        access,
        summary,
        body,
        handler,
    };
    vec![
        route(
            &[Method::POST],
            "/shop/api/register",
            Access::Public,
            "Register a customer account (same answer whether or not the email is taken)",
            Some(schema_credentials()),
            post(register),
        ),
        route(
            &[Method::POST],
            "/shop/api/login",
            Access::Public,
            "Sign in with email and password; sets the session cookie",
            Some(schema_credentials()),
            post(login),
        ),
        route(
            &[Method::POST],
            "/shop/api/login/mfa",
            Access::AnySession,
            "Second factor: a TOTP code or a recovery code; rotates the session id",
            Some(json!({
                "type": "object", "additionalProperties": false,
                "properties": {"code": {"type": "string"}, "recovery_code": {"type": "string"}}
            })),
            post(login_mfa),
        ),
        route(
            &[Method::POST],
            "/shop/api/logout",
            Access::AnySession,
            "End this session",
            None,
            post(logout),
        ),
        route(
            &[Method::POST],
            "/shop/api/logout/all",
            customer,
            "End every session of this account",
            None,
            post(logout_all),
        ),
        route(
            &[Method::GET],
            "/shop/api/session",
            Access::AnySession,
            "This session: user, role, stage and CSRF token",
            None,
            get(session),
        ),
        route(
            &[Method::POST],
            "/shop/api/mfa/enroll",
            Access::AnySession,
            "Start TOTP enrolment: otpauth URI and QR code",
            None,
            post(mfa_enroll),
        ),
        route(
            &[Method::POST],
            "/shop/api/mfa/confirm",
            Access::AnySession,
            "Confirm enrolment with a code; returns recovery codes once",
            Some(schema_code()),
            post(mfa_confirm),
        ),
        route(
            &[Method::POST],
            "/shop/api/mfa/disable",
            customer,
            "Turn the second factor off (not for roles that require it)",
            Some(schema_code()),
            post(mfa_disable),
        ),
        route(
            &[Method::GET, Method::DELETE],
            "/shop/api/cart",
            customer,
            "The caller's cart",
            None,
            get(my_cart).delete(clear_my_cart),
        ),
        route(
            &[Method::POST],
            "/shop/api/cart/items",
            customer,
            "Add to the caller's cart",
            Some(schema_item()),
            post(add_my_item),
        ),
        route(
            &[Method::PUT, Method::DELETE],
            "/shop/api/cart/items/{sku}",
            customer,
            "Change a quantity in the caller's cart (DELETE removes the line)",
            Some(schema_quantity()),
            put(set_my_item).delete(remove_my_item),
        ),
        route(
            &[Method::GET, Method::DELETE],
            "/shop/api/carts/{id}",
            customer,
            "A cart by id: only the caller's own (others are 404 and audited); DELETE clears it",
            None,
            get(show_cart).delete(clear_cart),
        ),
        route(
            &[Method::POST],
            "/shop/api/carts/{id}/items",
            customer,
            "Add to a cart by id (the caller's own only)",
            Some(schema_item()),
            post(add_item),
        ),
        route(
            &[Method::PUT, Method::DELETE],
            "/shop/api/carts/{id}/items/{sku}",
            customer,
            "Change a quantity in a cart by id (DELETE removes the line)",
            Some(schema_quantity()),
            put(set_item).delete(remove_item),
        ),
        route(
            &[Method::POST, Method::GET],
            "/shop/api/form",
            customer,
            "Submit the contact form (phone and address encrypted at rest); GET lists the caller's submissions",
            Some(json!({
                "type": "object", "additionalProperties": false,
                "required": ["name", "email", "phone", "address"],
                "properties": {
                    "name": {"type": "string", "maxLength": 100},
                    "email": {"type": "string", "format": "email"},
                    "phone": {"type": "string", "maxLength": 20},
                    "address": {"type": "string", "maxLength": 200},
                    "message": {"type": "string", "maxLength": 2000}
                }
            })),
            post(submit_form).get(my_submissions),
        ),
        route(
            &[Method::GET],
            "/shop/api/admin/users",
            Access::Admin,
            "Every account (admin, from an allowlisted address)",
            None,
            get(users),
        ),
        route(
            &[Method::PUT],
            "/shop/api/admin/users/{id}/role",
            Access::Admin,
            "Change an account's role; ends its sessions",
            Some(json!({
                "type": "object", "additionalProperties": false, "required": ["role"],
                "properties": {"role": {"enum": ["customer", "analyst", "admin"]}}
            })),
            put(set_role),
        ),
        route(
            &[Method::POST],
            "/shop/api/admin/users/{id}/unlock",
            Access::Admin,
            "Lift an account's lockout",
            None,
            post(unlock),
        ),
        route(
            &[Method::POST],
            "/shop/api/admin/users/{id}/sessions/revoke",
            Access::Admin,
            "End every session of an account",
            None,
            post(revoke_sessions),
        ),
        route(
            &[Method::POST],
            "/shop/api/admin/users/{id}/mfa/reset",
            Access::Admin,
            "Remove an account's second factor (it enrols again) and end its sessions",
            None,
            post(reset_mfa),
        ),
        route(
            &[Method::GET],
            "/shop/api/audit",
            Access::Role(Role::Analyst),
            "The hash-chained audit trail, page by page (?after=&limit=)",
            None,
            get(audit),
        ),
    ]
}
