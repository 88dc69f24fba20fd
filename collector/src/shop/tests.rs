//! The shop's ASVS-style suite: one test or more per control, each run against SQLite
//! and against PostgreSQL (a fresh database with an owner role and a least-privilege
//! service role per test, dropped afterwards). Requests go through the real router,
//! access checks and middleware, without a socket.
//!
//! PostgreSQL is expected on 127.0.0.1:5432 (user `postgres`, trust); without it the
//! PostgreSQL half is skipped with a printed reason, or fails under
//! `YAGURA_TEST_STRICT=1`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _};
use tower::ServiceExt as _;

use super::application::{Shop, ShopPolicy};
use super::domain::ports::ShopRepository as _;
use super::domain::user::Role;
use super::http::{self, CSRF_HEADER, SESSION_COOKIE, ShopState};
use super::infrastructure::audit_trail::{self, Verification};
use super::infrastructure::database::{Backend, ShopDatabase};
use super::infrastructure::field_cipher::FieldKeyring;
use super::infrastructure::password_hash::{HashCost, PasswordHasher};
use super::infrastructure::sql_repository::SqlShopRepository;
use super::infrastructure::totp::TotpSecret;

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_IP: &str = "127.0.0.1:50000";
const OUTSIDE_IP: &str = "203.0.113.9:40000";

/// A PostgreSQL database and its two roles, dropped with this value.
struct PgScratch {
    name: String,
}

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl PgScratch {
    async fn create() -> Result<(PgScratch, String, String), String> {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL)
            .await
            .map_err(|e| format!("PostgreSQL at 127.0.0.1:5432: {e}"))?;
        let name = format!("yagura_shop_{}", uuid::Uuid::new_v4().simple());
        for statement in [
            format!("CREATE ROLE {name}_owner LOGIN"),
            format!("CREATE ROLE {name}_app LOGIN"),
            format!("CREATE DATABASE {name} OWNER {name}_owner"),
            format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"),
            format!("GRANT CONNECT ON DATABASE {name} TO {name}_app"),
        ] {
            admin
                .execute(sqlx::AssertSqlSafe(statement))
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut inside =
            sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
                .await
                .map_err(|e| e.to_string())?;
        inside
            .execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            .await
            .map_err(|e| e.to_string())?;
        let app = format!("postgres://{name}_app@127.0.0.1:5432/{name}");
        let owner = format!("postgres://{name}_owner@127.0.0.1:5432/{name}");
        Ok((PgScratch { name }, app, owner))
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN_URL).await else {
                    return;
                };
                for statement in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("DROP ROLE IF EXISTS {name}_app"),
                    format!("DROP ROLE IF EXISTS {name}_owner"),
                ] {
                    if let Err(error) = admin.execute(sqlx::AssertSqlSafe(statement)).await {
                        eprintln!("cleaning up {name}: {error}");
                    }
                }
            });
        })
        .join();
    }
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

struct Harness {
    router: Router,
    shop: Arc<super::ShopService>,
    db: ShopDatabase,
    /// SQLite: the same database; PostgreSQL: the owner's URL (tampering needs it).
    owner_url: String,
    _dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
}

fn test_policy() -> ShopPolicy {
    ShopPolicy {
        lockout_threshold: 5,
        ip_failure_limit: 12,
        session_idle: Duration::from_secs(2),
        ..ShopPolicy::default()
    }
}

async fn harness(engine: Engine) -> Option<Harness> {
    harness_with(engine, test_policy()).await
}

async fn harness_with(engine: Engine, policy: ShopPolicy) -> Option<Harness> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, migrate_url, pg) = match engine {
        Engine::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("shop.db").display()),
            None,
            None,
        ),
        Engine::Postgres => match PgScratch::create().await {
            Ok((pg, app, owner)) => (app, Some(owner), Some(pg)),
            Err(reason) => {
                if std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1") {
                    panic!("YAGURA_TEST_STRICT=1 and PostgreSQL is not usable: {reason}");
                }
                eprintln!("skipping the PostgreSQL half: {reason}");
                return None;
            }
        },
    };
    let db = ShopDatabase::open(&url, migrate_url.as_deref())
        .await
        .expect("open the shop database");
    let keys = FieldKeyring::create_file(&dir.path().join("field.keys")).expect("keyring");
    let hasher = PasswordHasher::new(HashCost::default()).expect("hasher");
    let shop = Arc::new(Shop::new(
        SqlShopRepository::new(db.clone()),
        hasher,
        keys,
        policy,
    ));
    let router = crate::api::with_security_headers(http::router(ShopState {
        shop: Arc::clone(&shop),
        admin_allowlist: Arc::new(vec!["127.0.0.0/8".parse().expect("net")]),
    }));
    Some(Harness {
        router,
        shop,
        db,
        owner_url: migrate_url.unwrap_or(url),
        _dir: dir,
        _pg: pg,
    })
}

/// One response, read whole.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn session_cookie(&self) -> Option<String> {
        let set = self.headers.get(header::SET_COOKIE)?.to_str().ok()?;
        let (pair, _) = set.split_once(';')?;
        let (_, value) = pair.split_once('=')?;
        (!value.is_empty()).then(|| value.to_string())
    }
}

/// A client: a session cookie and CSRF token once signed in.
#[derive(Clone, Default)]
struct Client {
    cookie: Option<String>,
    csrf: Option<String>,
    peer: Option<&'static str>,
}

impl Harness {
    async fn send(
        &self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        self.send_raw(
            client,
            method,
            path,
            body.map(|b| b.to_string().into_bytes()),
            &[],
        )
        .await
    }

    async fn send_raw(
        &self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "shop.example")
            .header(header::USER_AGENT, "asvs-suite/1");
        if let Some(cookie) = &client.cookie {
            request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"));
        }
        if let Some(csrf) = &client.csrf {
            request = request.header(CSRF_HEADER, csrf);
        }
        let has_body = body.is_some();
        if has_body
            && !extra
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.map_or_else(Body::empty, Body::from))
            .expect("request");
        let peer: SocketAddr = client.peer.unwrap_or(ADMIN_IP).parse().expect("peer");
        let response = self
            .router
            .clone()
            .layer(MockConnectInfo(peer))
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn register(&self, email: &str) {
        let answer = self
            .send(
                &Client::default(),
                Method::POST,
                "/shop/api/register",
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }

    async fn login_with(
        &self,
        email: &str,
        password: &str,
        peer: Option<&'static str>,
    ) -> (Answer, Client) {
        let client = Client {
            peer,
            ..Client::default()
        };
        let answer = self
            .send(
                &client,
                Method::POST,
                "/shop/api/login",
                Some(json!({"email": email, "password": password})),
            )
            .await;
        let signed = Client {
            cookie: answer.session_cookie(),
            csrf: answer.json()["csrf_token"].as_str().map(str::to_string),
            peer,
        };
        (answer, signed)
    }

    async fn login(&self, email: &str) -> Client {
        let (answer, client) = self.login_with(email, PASSWORD, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        client
    }

    /// A signed-in account of `role` (with a second factor when the role needs one).
    async fn account(&self, email: &str, role: Role) -> (Client, Option<TotpSecret>) {
        self.shop
            .create_account(email, PASSWORD, role)
            .await
            .expect("account");
        let client = self.login(email).await;
        if !role.requires_mfa() {
            return (client, None);
        }
        let enrolment = self
            .send(&client, Method::POST, "/shop/api/mfa/enroll", None)
            .await;
        assert_eq!(enrolment.status, StatusCode::OK, "{}", enrolment.text);
        let secret = secret_of(enrolment.json()["otpauth_uri"].as_str().expect("uri"));
        let code = secret.code_at(now()).expect("code");
        let confirmed = self
            .send(
                &client,
                Method::POST,
                "/shop/api/mfa/confirm",
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
        let client = Client {
            cookie: confirmed.session_cookie(),
            csrf: confirmed.json()["csrf_token"].as_str().map(str::to_string),
            peer: None,
        };
        (client, Some(secret))
    }

    /// The audit trail's events, flattened to dotted keys (`event.action`, …).
    async fn audit(&self) -> Vec<Value> {
        audit_trail::records_after(&self.db, 0, 100_000)
            .await
            .expect("audit records")
            .into_iter()
            .map(|r| {
                let event =
                    yagura_shared::Event::from_json_slice(r.event.as_bytes()).expect("event");
                let mut flat = serde_json::Map::new();
                flatten("", &Value::Object(event.into_map()), &mut flat);
                Value::Object(flat)
            })
            .collect()
    }

    async fn audited(&self, action: &str, outcome: &str) -> Vec<Value> {
        self.audit()
            .await
            .into_iter()
            .filter(|e| e["event.action"] == action && e["event.outcome"] == outcome)
            .collect()
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut serde_json::Map<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).expect("time")
}

fn secret_of(uri: &str) -> TotpSecret {
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("secret in URI");
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .expect("base32");
    TotpSecret::from_bytes(bytes)
}

/// Runs a test body against both engines.
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = harness(Engine::Sqlite).await.expect("sqlite");
                ($body)(h).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = harness(Engine::Postgres).await {
                    ($body)(h).await;
                }
            }
        }
    };
}

on_both!(
    session_cookie_is_host_only_secure_and_random,
    |h: Harness| async move {
        h.register("alice@example.org").await;
        let (answer, client) = h.login_with("alice@example.org", PASSWORD, None).await;
        assert_eq!(answer.status, StatusCode::OK);
        let set = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
        assert!(set.starts_with("__Host-yagura_shop="), "{set}");
        for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(set.contains(flag), "{flag} in {set}");
        }
        assert!(!set.contains("Domain"), "{set}");
        let id = client.cookie.clone().expect("cookie");
        assert!(id.len() >= 22, "at least 128 bits: {id}");
        let me = h
            .send(&client, Method::GET, "/shop/api/session", None)
            .await;
        assert_eq!(me.json()["email"], "alice@example.org");
        // The database holds the id's hash only.
        assert!(
            h.shop
                .repository()
                .session(&id)
                .await
                .expect("lookup")
                .is_none(),
            "a stored id must not open the session"
        );
    }
);

on_both!(no_user_enumeration, |h: Harness| async move {
    h.register("bob@example.org").await;
    // Registering a taken address answers exactly like a new one.
    let again = h
        .send(
            &Client::default(),
            Method::POST,
            "/shop/api/register",
            Some(json!({"email": "bob@example.org", "password": PASSWORD})),
        )
        .await;
    let fresh = h
        .send(
            &Client::default(),
            Method::POST,
            "/shop/api/register",
            Some(json!({"email": "carol@example.org", "password": PASSWORD})),
        )
        .await;
    assert_eq!((again.status, &again.text), (fresh.status, &fresh.text));
    assert_eq!(h.audited("register", "failure").await.len(), 1);

    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let (a, _) = h
            .login_with(&format!("nobody{i}@example.org"), PASSWORD, None)
            .await;
        unknown.push((started.elapsed(), a.status, a.text));
        let started = Instant::now();
        let (b, _) = h
            .login_with("bob@example.org", "wrong password here", None)
            .await;
        wrong.push((started.elapsed(), b.status, b.text));
    }
    for ((_, s1, t1), (_, s2, t2)) in unknown.iter().zip(&wrong) {
        assert_eq!(
            (s1, t1),
            (s2, t2),
            "same answer for unknown user and wrong password"
        );
    }
    // Both paths run one Argon2id verification: their times are of one order.
    let median = |v: &Vec<(Duration, StatusCode, String)>| {
        let mut times: Vec<Duration> = v.iter().map(|x| x.0).collect();
        times.sort();
        times[1].as_secs_f64()
    };
    let ratio = median(&unknown) / median(&wrong);
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown/wrong time ratio {ratio}"
    );
});

on_both!(
    brute_force_hits_lockout_and_unlock_lifts_it,
    |h: Harness| async move {
        h.register("dave@example.org").await;
        for _ in 0..5 {
            let (answer, _) = h
                .login_with("dave@example.org", "not the password", None)
                .await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        }
        let (locked, _) = h.login_with("dave@example.org", PASSWORD, None).await;
        assert_eq!(
            locked.status,
            StatusCode::UNAUTHORIZED,
            "the right password is refused while locked"
        );
        let lockouts = h.audited("lockout", "success").await;
        assert_eq!(lockouts.len(), 1);
        assert_eq!(lockouts[0]["user.name"], "dave@example.org");
        assert_eq!(lockouts[0]["source.ip"], "127.0.0.1");
        assert_eq!(lockouts[0]["user_agent.original"], "asvs-suite/1");
        assert_eq!(lockouts[0]["event.dataset"], "yagura.shop.audit");

        let (admin, _) = h.account("root@example.org", Role::Admin).await;
        let users = h
            .send(&admin, Method::GET, "/shop/api/admin/users", None)
            .await;
        let dave = users
            .json()
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == "dave@example.org")
            .expect("dave")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let unlocked = h
            .send(
                &admin,
                Method::POST,
                &format!("/shop/api/admin/users/{dave}/unlock"),
                None,
            )
            .await;
        assert_eq!(unlocked.status, StatusCode::OK, "{}", unlocked.text);
        h.login("dave@example.org").await;
    }
);

on_both!(address_throttling_stops_spraying, |h: Harness| async move {
    let spray = Some("198.51.100.7:1234");
    let mut statuses = Vec::new();
    for i in 0..14 {
        let (answer, _) = h
            .login_with(&format!("user{i}@example.org"), "Spring2026!", spray)
            .await;
        statuses.push(answer.status);
    }
    assert_eq!(statuses[..12], [StatusCode::UNAUTHORIZED; 12]);
    assert_eq!(statuses[12..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // Another address is not affected.
    let (other, _) = h
        .login_with("user0@example.org", "Spring2026!", Some("198.51.100.8:1"))
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
});

on_both!(session_fixation_is_prevented, |h: Harness| async move {
    h.register("erin@example.org").await;
    // An attacker plants a cookie value of their choosing before the victim signs in.
    let planted = Client {
        cookie: Some("attacker-chosen-value-0123456789".into()),
        ..Client::default()
    };
    let answer = h
        .send(
            &planted,
            Method::POST,
            "/shop/api/login",
            Some(json!({"email": "erin@example.org", "password": PASSWORD})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let issued = answer.session_cookie().expect("new id");
    assert_ne!(issued, "attacker-chosen-value-0123456789");
    let as_attacker = h
        .send(&planted, Method::GET, "/shop/api/session", None)
        .await;
    assert_eq!(as_attacker.status, StatusCode::UNAUTHORIZED);
    // A session that existed before signing in again is ended, not upgraded.
    let first = h.login("erin@example.org").await;
    let second = h
        .send(
            &first,
            Method::POST,
            "/shop/api/login",
            Some(json!({"email": "erin@example.org", "password": PASSWORD})),
        )
        .await;
    assert_ne!(second.session_cookie(), first.cookie);
    assert_eq!(
        h.send(&first, Method::GET, "/shop/api/session", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
});

on_both!(
    csrf_needs_the_token_and_same_origin,
    |h: Harness| async move {
        h.register("frank@example.org").await;
        let client = h.login("frank@example.org").await;
        let item = json!({"sku": "TEA-1", "quantity": 1});
        let no_token = Client {
            csrf: None,
            ..client.clone()
        };
        let refused = h
            .send(
                &no_token,
                Method::POST,
                "/shop/api/cart/items",
                Some(item.clone()),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
        let wrong = Client {
            csrf: Some("0".repeat(43)),
            ..client.clone()
        };
        assert_eq!(
            h.send(
                &wrong,
                Method::POST,
                "/shop/api/cart/items",
                Some(item.clone())
            )
            .await
            .status,
            StatusCode::FORBIDDEN
        );
        let cross = h
            .send_raw(
                &client,
                Method::POST,
                "/shop/api/cart/items",
                Some(item.to_string().into_bytes()),
                &[("origin", "https://evil.example")],
            )
            .await;
        assert_eq!(
            cross.status,
            StatusCode::FORBIDDEN,
            "a cross-site origin is refused even with the token"
        );
        let cart = h.send(&client, Method::GET, "/shop/api/cart", None).await;
        assert_eq!(cart.json()["lines"], json!([]), "nothing changed");
        let ok = h
            .send_raw(
                &client,
                Method::POST,
                "/shop/api/cart/items",
                Some(item.to_string().into_bytes()),
                &[("origin", "https://shop.example")],
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        assert_eq!(h.audited("access_denied", "failure").await.len(), 3);
    }
);

on_both!(
    idor_on_another_cart_is_404_and_audited,
    |h: Harness| async move {
        h.register("grace@example.org").await;
        h.register("mallory@example.org").await;
        let grace = h.login("grace@example.org").await;
        let mallory = h.login("mallory@example.org").await;
        let added = h
            .send(
                &grace,
                Method::POST,
                "/shop/api/cart/items",
                Some(json!({"sku": "TEA-1", "quantity": 2})),
            )
            .await;
        let grace_cart = added.json()["id"].as_str().expect("cart id").to_string();
        let own = h
            .send(
                &grace,
                Method::GET,
                &format!("/shop/api/carts/{grace_cart}"),
                None,
            )
            .await;
        assert_eq!(own.status, StatusCode::OK);

        let peek = h
            .send(
                &mallory,
                Method::GET,
                &format!("/shop/api/carts/{grace_cart}"),
                None,
            )
            .await;
        let missing = h
            .send(
                &mallory,
                Method::GET,
                &format!("/shop/api/carts/{}", uuid::Uuid::now_v7()),
                None,
            )
            .await;
        assert_eq!(peek.status, StatusCode::NOT_FOUND);
        assert_eq!(
            (peek.status, peek.text.clone()),
            (missing.status, missing.text),
            "no hint that it exists"
        );
        let write = h
            .send(
                &mallory,
                Method::POST,
                &format!("/shop/api/carts/{grace_cart}/items"),
                Some(json!({"sku": "EVIL", "quantity": 1})),
            )
            .await;
        assert_eq!(write.status, StatusCode::NOT_FOUND);
        let clear = h
            .send(
                &mallory,
                Method::DELETE,
                &format!("/shop/api/carts/{grace_cart}"),
                None,
            )
            .await;
        assert_eq!(clear.status, StatusCode::NOT_FOUND);
        let after = h.send(&grace, Method::GET, "/shop/api/cart", None).await;
        assert_eq!(
            after.json()["lines"],
            json!([{"sku": "TEA-1", "quantity": 2}])
        );
        let denied = h.audited("access_denied", "failure").await;
        let about_grace: Vec<_> = denied
            .iter()
            .filter(|e| e["yagura.shop.cart_id"] == grace_cart.as_str())
            .collect();
        assert_eq!(about_grace.len(), 3, "{denied:?}");
        assert_eq!(about_grace[0]["user.name"], "mallory@example.org");
        assert_eq!(about_grace[0]["event.reason"], "cart of another user");
    }
);

on_both!(
    cart_operations_are_the_sessions_own_and_audited,
    |h: Harness| async move {
        h.register("heidi@example.org").await;
        let c = h.login("heidi@example.org").await;
        h.send(
            &c,
            Method::POST,
            "/shop/api/cart/items",
            Some(json!({"sku": "TEA-1", "quantity": 2})),
        )
        .await;
        h.send(
            &c,
            Method::POST,
            "/shop/api/cart/items",
            Some(json!({"sku": "MUG-2", "quantity": 1})),
        )
        .await;
        let set = h
            .send(
                &c,
                Method::PUT,
                "/shop/api/cart/items/TEA-1",
                Some(json!({"quantity": 5})),
            )
            .await;
        assert_eq!(set.json()["items"], 6, "{}", set.text);
        let removed = h
            .send(&c, Method::DELETE, "/shop/api/cart/items/MUG-2", None)
            .await;
        assert_eq!(
            removed.json()["lines"],
            json!([{"sku": "TEA-1", "quantity": 5}])
        );
        let too_many = h
            .send(
                &c,
                Method::PUT,
                "/shop/api/cart/items/TEA-1",
                Some(json!({"quantity": 1000})),
            )
            .await;
        assert_eq!(too_many.status, StatusCode::UNPROCESSABLE_ENTITY);
        let cleared = h.send(&c, Method::DELETE, "/shop/api/cart", None).await;
        assert_eq!(cleared.json()["lines"], json!([]));
        for action in [
            "cart_item_added",
            "cart_quantity_changed",
            "cart_item_removed",
            "cart_cleared",
        ] {
            assert!(!h.audited(action, "success").await.is_empty(), "{action}");
        }
    }
);

on_both!(
    totp_codes_cannot_be_reused_and_recovery_codes_work_once,
    |h: Harness| async move {
        let (analyst, secret) = h.account("ivan@example.org", Role::Analyst).await;
        let secret = secret.expect("secret");
        assert_eq!(
            h.send(&analyst, Method::GET, "/shop/api/audit", None)
                .await
                .status,
            StatusCode::OK
        );

        // A new sign-in: the password alone gives a session that can do nothing yet.
        let pending = h.login("ivan@example.org").await;
        let me = h
            .send(&pending, Method::GET, "/shop/api/session", None)
            .await;
        assert_eq!(me.json()["stage"], "mfa");
        assert_eq!(
            h.send(&pending, Method::GET, "/shop/api/cart", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        // The code accepted at enrolment (this step) is spent: the next step's code works.
        let used = secret.code_at(now()).expect("code");
        let reused = h
            .send(
                &pending,
                Method::POST,
                "/shop/api/login/mfa",
                Some(json!({"code": used})),
            )
            .await;
        assert_eq!(
            reused.status,
            StatusCode::UNAUTHORIZED,
            "a used code cannot be reused"
        );
        let next = secret.code_at(now() + 30).expect("code");
        let passed = h
            .send(
                &pending,
                Method::POST,
                "/shop/api/login/mfa",
                Some(json!({"code": next})),
            )
            .await;
        assert_eq!(passed.status, StatusCode::OK, "{}", passed.text);
        let full = Client {
            cookie: passed.session_cookie(),
            csrf: passed.json()["csrf_token"].as_str().map(str::to_string),
            peer: None,
        };
        assert_ne!(
            full.cookie, pending.cookie,
            "the id rotates on the privilege change"
        );
        assert_eq!(
            h.send(&pending, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            h.send(&full, Method::GET, "/shop/api/audit", None)
                .await
                .status,
            StatusCode::OK
        );
        let again = h.login("ivan@example.org").await;
        let replay = h
            .send(
                &again,
                Method::POST,
                "/shop/api/login/mfa",
                Some(json!({"code": next})),
            )
            .await;
        assert_eq!(
            replay.status,
            StatusCode::UNAUTHORIZED,
            "the same code on another session is refused too"
        );
        assert!(!h.audited("mfa_verify", "failure").await.is_empty());
    }
);

on_both!(recovery_codes_are_single_use, |h: Harness| async move {
    h.shop
        .create_account("judy@example.org", PASSWORD, Role::Analyst)
        .await
        .expect("account");
    let client = h.login("judy@example.org").await;
    let enrolment = h
        .send(&client, Method::POST, "/shop/api/mfa/enroll", None)
        .await;
    assert!(
        enrolment.json()["qr_svg"]
            .as_str()
            .expect("qr")
            .contains("<svg")
            || enrolment.text.contains("\\u003csvg")
    );
    let secret = secret_of(enrolment.json()["otpauth_uri"].as_str().expect("uri"));
    let confirmed = h
        .send(
            &client,
            Method::POST,
            "/shop/api/mfa/confirm",
            Some(json!({"code": secret.code_at(now()).expect("code")})),
        )
        .await;
    let codes: Vec<String> =
        serde_json::from_value(confirmed.json()["recovery_codes"].clone()).expect("codes");
    assert_eq!(codes.len(), 10);
    let first = h.login("judy@example.org").await;
    let ok = h
        .send(
            &first,
            Method::POST,
            "/shop/api/login/mfa",
            Some(json!({"recovery_code": codes[0].to_lowercase()})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let second = h.login("judy@example.org").await;
    let reused = h
        .send(
            &second,
            Method::POST,
            "/shop/api/login/mfa",
            Some(json!({"recovery_code": codes[0]})),
        )
        .await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.audited("recovery_code_used", "success").await.len(), 1);
    assert_eq!(h.audited("recovery_code_used", "failure").await.len(), 1);
});

on_both!(
    roles_are_enforced_and_denials_audited,
    |h: Harness| async move {
        h.register("ken@example.org").await;
        let customer = h.login("ken@example.org").await;
        assert_eq!(
            h.send(&customer, Method::GET, "/shop/api/admin/users", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            h.send(&customer, Method::GET, "/shop/api/audit", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        let (analyst, _) = h.account("lena@example.org", Role::Analyst).await;
        assert_eq!(
            h.send(&analyst, Method::GET, "/shop/api/audit", None)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            h.send(&analyst, Method::GET, "/shop/api/admin/users", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(h.audited("access_denied", "failure").await.len(), 3);
        // An admin from outside the allowlist is refused.
        let (admin, _) = h.account("root@example.org", Role::Admin).await;
        let outside = Client {
            peer: Some(OUTSIDE_IP),
            ..admin.clone()
        };
        assert_eq!(
            h.send(&outside, Method::GET, "/shop/api/admin/users", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        let ip_denied = h.audited("admin_ip_denied", "failure").await;
        assert_eq!(ip_denied.len(), 1);
        assert_eq!(ip_denied[0]["source.ip"], "203.0.113.9");
        assert_eq!(
            h.send(&admin, Method::GET, "/shop/api/admin/users", None)
                .await
                .status,
            StatusCode::OK
        );
    }
);

on_both!(
    role_change_ends_the_users_sessions,
    |h: Harness| async move {
        h.register("liam@example.org").await;
        let liam = h.login("liam@example.org").await;
        let (admin, _) = h.account("root@example.org", Role::Admin).await;
        let me = h.send(&liam, Method::GET, "/shop/api/session", None).await;
        let id = me.json()["user_id"].as_str().expect("id").to_string();
        let changed = h
            .send(
                &admin,
                Method::PUT,
                &format!("/shop/api/admin/users/{id}/role"),
                Some(json!({"role": "analyst"})),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
        assert_eq!(
            h.send(&liam, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        let change = h.audited("role_change", "success").await;
        assert_eq!(change[0]["yagura.shop.new_role"], "analyst");
        // Now an analyst: MFA is required before anything else.
        let again = h.login("liam@example.org").await;
        assert_eq!(
            h.send(&again, Method::GET, "/shop/api/session", None)
                .await
                .json()["stage"],
            "mfa"
        );
    }
);

on_both!(
    logout_and_logout_everywhere_end_sessions_on_the_server,
    |h: Harness| async move {
        h.register("mia@example.org").await;
        let one = h.login("mia@example.org").await;
        let two = h.login("mia@example.org").await;
        let three = h.login("mia@example.org").await;
        let out = h.send(&one, Method::POST, "/shop/api/logout", None).await;
        assert!(
            out.headers[header::SET_COOKIE]
                .to_str()
                .expect("ascii")
                .contains("Max-Age=0")
        );
        assert_eq!(
            h.send(&one, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            h.send(&two, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::OK
        );
        let all = h
            .send(&two, Method::POST, "/shop/api/logout/all", None)
            .await;
        assert_eq!(all.json()["sessions_ended"], 2);
        assert_eq!(
            h.send(&three, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
);

on_both!(idle_sessions_expire, |h: Harness| async move {
    h.register("nina@example.org").await;
    let c = h.login("nina@example.org").await;
    assert_eq!(
        h.send(&c, Method::GET, "/shop/api/session", None)
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        h.send(&c, Method::GET, "/shop/api/session", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.audited("session_expired", "success").await.len(), 1);
});

on_both!(
    bad_bodies_are_refused_with_problems_and_audited,
    |h: Harness| async move {
        h.register("olga@example.org").await;
        let c = h.login("olga@example.org").await;
        let big = format!(
            r#"{{"sku":"A","quantity":1,"pad":"{}"}}"#,
            "x".repeat(40_000)
        );
        let oversized = h
            .send_raw(
                &c,
                Method::POST,
                "/shop/api/cart/items",
                Some(big.into_bytes()),
                &[],
            )
            .await;
        assert_eq!(
            oversized.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            oversized.text
        );
        let malformed = h
            .send_raw(
                &c,
                Method::POST,
                "/shop/api/cart/items",
                Some(b"{\"sku\":".to_vec()),
                &[],
            )
            .await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
        let unknown = h
            .send(
                &c,
                Method::POST,
                "/shop/api/cart/items",
                Some(json!({"sku": "A", "quantity": 1, "user_id": "x"})),
            )
            .await;
        assert_eq!(
            unknown.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown fields are refused: {}",
            unknown.text
        );
        let not_json = h
            .send_raw(
                &c,
                Method::POST,
                "/shop/api/cart/items",
                Some(b"sku=A".to_vec()),
                &[("content-type", "text/plain")],
            )
            .await;
        assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        for answer in [&oversized, &malformed, &unknown, &not_json] {
            assert_eq!(
                answer.headers[header::CONTENT_TYPE],
                "application/problem+json"
            );
            let text = answer.text.to_lowercase();
            assert!(
                !text.contains("sql") && !text.contains("panick") && !text.contains(".rs:"),
                "{text}"
            );
        }
        let bad_form = h
            .send(
                &c,
                Method::POST,
                "/shop/api/form",
                Some(json!({"name": "", "email": "nope", "phone": "12", "address": "x"})),
            )
            .await;
        assert_eq!(bad_form.status, StatusCode::UNPROCESSABLE_ENTITY);
        let problems = bad_form.json();
        let fields: Vec<&str> = problems["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, ["name", "email", "phone"]);
        assert_eq!(h.audited("validation_rejected", "failure").await.len(), 5);
    }
);

on_both!(
    injection_strings_are_stored_and_returned_inert,
    |h: Harness| async move {
        h.register("pat@example.org").await;
        let c = h.login("pat@example.org").await;
        let script = "<script>alert(document.cookie)</script>";
        let sql = "1'); DROP TABLE users; --";
        let submitted = h
            .send(
                &c,
                Method::POST,
                "/shop/api/form",
                Some(json!({
                    "name": "Pat O'Neil", "email": "pat@example.org", "phone": "+44 20 7946 0958",
                    "address": sql, "message": script,
                })),
            )
            .await;
        assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.text);
        let listed = h.send(&c, Method::GET, "/shop/api/form", None).await;
        assert!(
            !listed.text.contains("<script"),
            "the raw body carries no markup: {}",
            listed.text
        );
        assert_eq!(
            listed.json()[0]["message"],
            script,
            "and decodes to exactly what was sent"
        );
        assert_eq!(listed.json()[0]["address"], sql);
        assert_eq!(listed.json()[0]["phone"], "+44 20 7946 0958");
        // The tables are intact and the sensitive fields are not stored in the clear.
        h.login("pat@example.org").await;
        let stored = h.shop.repository().submissions(None).await.expect("rows");
        assert!(
            stored[0].address_enc.starts_with("xc1.") && !stored[0].address_enc.contains("DROP")
        );
        assert!(!stored[0].phone_enc.contains("7946"));
        let sku = h
            .send(
                &c,
                Method::POST,
                "/shop/api/cart/items",
                Some(json!({"sku": "' OR 1=1 --", "quantity": 1})),
            )
            .await;
        assert_eq!(sku.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
);

on_both!(
    field_keys_rotate_with_reencryption,
    |h: Harness| async move {
        h.register("quinn@example.org").await;
        let c = h.login("quinn@example.org").await;
        h.send(&c, Method::POST, "/shop/api/form", Some(json!({
        "name": "Quinn", "email": "quinn@example.org", "phone": "+1 555 0100", "address": "1 Main St",
    }))).await;
        let before = h.shop.repository().submissions(None).await.expect("rows")[0]
            .phone_enc
            .clone();
        let keys = FieldKeyring::rotate_file(&h._dir.path().join("field.keys")).expect("rotate");
        let active = keys.active_key_id().to_string();
        h.shop.replace_keys(keys).expect("replace");
        assert_eq!(h.shop.reencrypt_all().await.expect("reencrypt"), 1);
        assert_eq!(
            h.shop.reencrypt_all().await.expect("again"),
            0,
            "nothing left under the old key"
        );
        let after = h.shop.repository().submissions(None).await.expect("rows")[0]
            .phone_enc
            .clone();
        assert_ne!(before, after);
        assert!(after.starts_with(&format!("xc1.{active}.")));
        let listed = h.send(&c, Method::GET, "/shop/api/form", None).await;
        assert_eq!(listed.json()[0]["phone"], "+1 555 0100");
        assert_eq!(h.audited("form_reencrypted", "success").await.len(), 1);
    }
);

on_both!(
    tampering_with_the_audit_trail_is_detected,
    |h: Harness| async move {
        h.register("rita@example.org").await;
        for _ in 0..3 {
            h.login_with("rita@example.org", "wrong wrong wrong", None)
                .await;
        }
        let Verification::Intact { records } = audit_trail::verify(&h.db).await.expect("verify")
        else {
            panic!("an untouched trail verifies");
        };
        assert!(records >= 4);
        // Rewrite a failure into a success, as the database owner could.
        let mut owner = sqlx::AnyConnection::connect(&h.owner_url)
            .await
            .expect("owner");
        if matches!(h.db.backend, Backend::Postgres) {
            owner
                .execute("SET search_path TO shop")
                .await
                .expect("path");
        }
        owner
        .execute("UPDATE audit_log SET event = REPLACE(event, '\"failure\"', '\"success\"') WHERE sequence = 2")
        .await
        .expect("tamper");
        match audit_trail::verify(&h.db).await.expect("verify") {
            Verification::Broken(broken) => assert_eq!(broken.sequence, 2, "{broken}"),
            other => panic!("tampering not detected: {other:?}"),
        }
    }
);

on_both!(
    every_route_is_declared_and_denies_by_default,
    |h: Harness| async move {
        let doc = h
            .send(&Client::default(), Method::GET, "/shop/openapi.json", None)
            .await;
        assert_eq!(doc.status, StatusCode::OK);
        let doc = doc.json();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 15);
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().expect("operations") {
                let concrete = path
                    .replace("{id}", &uuid::Uuid::now_v7().to_string())
                    .replace("{sku}", "A");
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let answer = h
                    .send(
                        &Client::default(),
                        method.clone(),
                        &concrete,
                        Some(json!({})),
                    )
                    .await;
                if operation["security"] == json!([]) {
                    assert_ne!(
                        answer.status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} is public"
                    );
                } else {
                    assert_eq!(
                        answer.status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} without a session"
                    );
                }
            }
        }
        let unknown = h
            .send(
                &Client::default(),
                Method::GET,
                "/shop/api/nothing-here",
                None,
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    }
);

on_both!(
    security_headers_on_every_response,
    |h: Harness| async move {
        for path in [
            "/shop/api/session",
            "/shop/openapi.json",
            "/shop/api/nothing",
        ] {
            let answer = h.send(&Client::default(), Method::GET, path, None).await;
            let csp = answer.headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("csp");
            assert!(
                csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
                "{csp}"
            );
            assert!(
                answer.headers[header::STRICT_TRANSPORT_SECURITY]
                    .to_str()
                    .expect("hsts")
                    .contains("max-age=")
            );
            assert_eq!(answer.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(answer.headers[header::REFERRER_POLICY], "no-referrer");
        }
    }
);

on_both!(
    the_service_role_has_least_privilege,
    |h: Harness| async move {
        if !matches!(h.db.backend, Backend::Postgres) {
            return; // SQLite has no roles: the file's permissions are the boundary.
        }
        h.register("sam@example.org").await;
        let pool = &h.db.pool;
        assert!(
            pool.execute("CREATE TABLE shop.evil (x int)")
                .await
                .is_err(),
            "no DDL"
        );
        assert!(
            pool.execute("CREATE TABLE public.evil (x int)")
                .await
                .is_err(),
            "not in public either"
        );
        assert!(pool.execute("DROP TABLE users").await.is_err());
        assert!(
            pool.execute("UPDATE audit_log SET event = '{}'")
                .await
                .is_err(),
            "the trail is append-only"
        );
        assert!(pool.execute("DELETE FROM audit_log").await.is_err());
        assert!(
            pool.execute("SELECT * FROM _sqlx_migrations")
                .await
                .is_err(),
            "no access to the migrations"
        );
        assert!(pool.execute("SELECT count(*) FROM users").await.is_ok());
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_can_be_required_for_any_role_by_configuration() {
    let config = crate::config::CollectorConfig::parse(
        "data_dir = \"/tmp/x\"\n[shop]\nmfa_required_roles = [\"customer\", \"admin\"]\n",
        std::path::Path::new("collector.toml"),
    )
    .expect("config");
    let policy = super::policy(&config);
    assert_eq!(policy.mfa_required, [Role::Customer, Role::Admin]);
    let refused = crate::config::CollectorConfig::parse(
        "data_dir = \"/tmp/x\"\n[shop]\nmfa_required_roles = [\"root\"]\n",
        std::path::Path::new("collector.toml"),
    )
    .expect_err("unknown role");
    assert!(refused.to_string().contains("collector.toml"), "{refused}");

    let h = harness_with(
        Engine::Sqlite,
        ShopPolicy {
            mfa_required: policy.mfa_required,
            ..test_policy()
        },
    )
    .await
    .expect("sqlite");
    h.register("uma@example.org").await;
    let (answer, customer) = h.login_with("uma@example.org", PASSWORD, None).await;
    assert_eq!(answer.json()["mfa_required"], true);
    assert_eq!(
        h.send(&customer, Method::GET, "/shop/api/cart", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Enrolment is open to the half-signed-in session, and completes the sign-in.
    let enrolment = h
        .send(&customer, Method::POST, "/shop/api/mfa/enroll", None)
        .await;
    let secret = secret_of(enrolment.json()["otpauth_uri"].as_str().expect("uri"));
    let confirmed = h
        .send(
            &customer,
            Method::POST,
            "/shop/api/mfa/confirm",
            Some(json!({"code": secret.code_at(now()).expect("code")})),
        )
        .await;
    assert_eq!(confirmed.json()["stage"], "full", "{}", confirmed.text);
    let full = Client {
        cookie: confirmed.session_cookie(),
        csrf: confirmed.json()["csrf_token"].as_str().map(str::to_string),
        peer: None,
    };
    assert_eq!(
        h.send(&full, Method::GET, "/shop/api/cart", None)
            .await
            .status,
        StatusCode::OK
    );
    // A role that requires the factor cannot turn it off.
    let code = secret.code_at(now() + 30).expect("code");
    let off = h
        .send(
            &full,
            Method::POST,
            "/shop/api/mfa/disable",
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(off.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_the_absolute_timeout_even_in_use() {
    let policy = ShopPolicy {
        session_idle: Duration::from_secs(3600),
        session_absolute: Duration::from_secs(2),
        ..test_policy()
    };
    let h = harness_with(Engine::Sqlite, policy).await.expect("sqlite");
    h.register("vera@example.org").await;
    let c = h.login("vera@example.org").await;
    for _ in 0..3 {
        assert_eq!(
            h.send(&c, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        h.send(&c, Method::GET, "/shop/api/session", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let expired = h.audited("session_expired", "success").await;
    assert_eq!(expired[0]["event.reason"], "absolute timeout");
}

on_both!(
    admins_can_end_sessions_and_reset_a_second_factor,
    |h: Harness| async move {
        let (admin, _) = h.account("root@example.org", Role::Admin).await;
        let (analyst, _) = h.account("wade@example.org", Role::Analyst).await;
        let id = h
            .send(&analyst, Method::GET, "/shop/api/session", None)
            .await
            .json()["user_id"]
            .as_str()
            .expect("id")
            .to_string();
        let reset = h
            .send(
                &admin,
                Method::POST,
                &format!("/shop/api/admin/users/{id}/mfa/reset"),
                None,
            )
            .await;
        assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
        assert_eq!(
            h.send(&analyst, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        let again = h.login("wade@example.org").await;
        let me = h
            .send(&again, Method::GET, "/shop/api/session", None)
            .await
            .json();
        assert_eq!(
            (me["stage"].as_str(), me["mfa_enrolled"].as_bool()),
            (Some("mfa"), Some(false))
        );
        assert_eq!(
            h.send(&again, Method::POST, "/shop/api/mfa/enroll", None)
                .await
                .status,
            StatusCode::OK
        );
        let revoked = h
            .send(
                &admin,
                Method::POST,
                &format!("/shop/api/admin/users/{id}/sessions/revoke"),
                None,
            )
            .await;
        assert_eq!(revoked.json()["sessions_ended"], 1);
        assert_eq!(
            h.send(&again, Method::GET, "/shop/api/session", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        let resets = h.audited("mfa_reset", "success").await;
        assert_eq!(resets[0]["user.name"], "root@example.org");
        assert_eq!(
            resets[0]["yagura.shop.target_user_name"],
            "wade@example.org"
        );
    }
);
