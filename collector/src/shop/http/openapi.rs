//! `/shop/openapi.json`: the shop API described from the same route table the router is
//! built from, so the description cannot drift from what is served.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::{Access, CSRF_HEADER, SESSION_COOKIE, handlers};

fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        _ => json!([{"session": []}]),
    }
}

fn access_note(access: Access) -> String {
    match access {
        Access::Public => "Public.".into(),
        Access::AnySession => "Any session, also one waiting for its second factor.".into(),
        Access::Role(role) => format!(
            "Signed in (second factor passed) with role {} or higher.",
            role.as_str()
        ),
        Access::Admin => "Signed in as admin, from an address in the admin allowlist.".into(),
    }
}

/// The OpenAPI 3.1 document (built once).
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut paths = Map::new();
            for route in handlers::routes() {
                let Some(entry) = paths
                    .entry(route.path.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                else {
                    continue;
                };
                for method in &route.methods {
                    let changing = !matches!(method.as_str(), "GET" | "HEAD" | "DELETE");
                    let mut operation = json!({
                        "summary": route.summary,
                        "description": access_note(route.access),
                        "security": security(route.access),
                        "x-yagura-access": format!("{:?}", route.access),
                        "responses": {
                            "200": {"description": "Done", "content": {"application/json": {}}},
                            "4XX": {"description": "Refused", "content": {"application/problem+json": {}}}
                        }
                    });
                    if method.as_str() != "GET" && route.access != Access::Public {
                        operation["parameters"] = json!([{
                            "name": CSRF_HEADER, "in": "header", "required": true,
                            "description": "The session's CSRF token (from sign-in or GET /shop/api/session)",
                            "schema": {"type": "string"}
                        }]);
                    }
                    if let (true, Some(body)) = (changing, &route.body) {
                        operation["requestBody"] = json!({
                            "required": true,
                            "content": {"application/json": {"schema": body}}
                        });
                    }
                    entry.insert(method.as_str().to_lowercase(), operation);
                }
            }
            json!({
                "openapi": "3.1.0",
                "info": {
                    "title": "Yagura reference shop",
                    "version": env!("CARGO_PKG_VERSION"),
                    "description": "Accounts with MFA, a cart and a contact form. Every security-relevant action is an audit event (event.dataset yagura.shop.audit)."
                },
                "components": {
                    "securitySchemes": {
                        "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}
                    }
                },
                "paths": paths,
            })
        })
        .clone()
}
