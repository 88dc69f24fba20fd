//! The shop's use cases: register, sign in (password, then second factor), MFA
//! enrolment, sessions, the cart, the form and role management.
//!
//! Each use case checks who may do it, does it through the [`ShopRepository`] port, and
//! hands the repository the audit event that describes it — successes and failures
//! alike. Nothing here knows about HTTP or SQL.

pub mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use self::throttle::IpThrottle;
use super::domain::audit::{AuditEvent, Origin, Outcome};
use super::domain::cart::{Cart, CartError, CartId, Quantity, Sku};
use super::domain::form::{ContactForm, FieldProblem, RawContactForm};
use super::domain::password::check_new_password;
use super::domain::ports::{
    RepoError, SessionRecord, SessionStage, ShopRepository, StoredSubmission, StoredUser,
};
use super::domain::user::{Email, Role, User, UserId};
use super::infrastructure::field_cipher::FieldKeyring;
use super::infrastructure::password_hash::PasswordHasher;
use super::infrastructure::totp::{self, TotpSecret};

/// The rules the shop runs by (from `[shop]` in the collector's configuration).
#[derive(Debug, Clone)]
pub struct ShopPolicy {
    /// A session unused this long is ended.
    pub session_idle: Duration,
    /// A session is ended this long after sign-in, used or not.
    pub session_absolute: Duration,
    /// Failed sign-ins (password or second factor) that lock an account.
    pub lockout_threshold: u32,
    pub lockout_duration: Duration,
    /// Failed sign-ins one address may make within `ip_window`.
    pub ip_failure_limit: usize,
    pub ip_window: Duration,
    /// Roles that must pass a second factor.
    pub mfa_required: Vec<Role>,
    /// The issuer shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for ShopPolicy {
    fn default() -> Self {
        ShopPolicy {
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            lockout_threshold: 5,
            lockout_duration: Duration::from_secs(15 * 60),
            ip_failure_limit: 50,
            ip_window: Duration::from_secs(15 * 60),
            mfa_required: vec![Role::Analyst, Role::Admin],
            totp_issuer: "Yagura shop".into(),
        }
    }
}

/// Why a use case did not happen. What a client sees is decided at the edge; these say
/// exactly what happened, for the code and the tests.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// Wrong email or password, unknown account, or a locked one: one answer for all.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid or already used code")]
    InvalidCode,
    #[error("too many failed attempts; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("not signed in")]
    Unauthenticated,
    #[error("not allowed")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("invalid input")]
    Invalid(Vec<FieldProblem>),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] RepoError),
    #[error("internal: {0}")]
    Internal(String),
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn problem(field: &'static str, text: impl Into<String>) -> ShopError {
    ShopError::Invalid(vec![FieldProblem {
        field,
        problem: text.into(),
    }])
}

/// A session id as handed to the client (never stored) and its stored hash.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub stage: SessionStage,
}

fn random_token() -> Result<String, ShopError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ShopError::Internal(format!("random source: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a session id.
pub fn session_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A signed-in (or half signed-in) caller, resolved from a session cookie.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub session_hash: String,
    pub csrf_token: String,
    pub stage: SessionStage,
    pub origin: Origin,
}

impl Caller {
    /// An audit event about this caller.
    pub fn audit(
        &self,
        action: &'static str,
        category: &'static str,
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent::new(action, category, outcome)
            .user(self.user.id, &self.user.email)
            .origin(&self.origin)
    }
}

/// What sign-in's first step gives.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: NewSession,
    /// The second factor is still to come (`true`), or must first be enrolled.
    pub mfa_pending: bool,
    pub mfa_enrolled: bool,
}

/// An MFA enrolment in progress: shown once.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolment {
    pub otpauth_uri: String,
    /// The same URI as a QR code, SVG.
    pub qr_svg: String,
}

/// A submission as its owner sees it (sensitive fields decrypted).
#[derive(Debug, Clone, Serialize)]
pub struct Submission {
    pub id: Uuid,
    pub created_at: i64,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub address: String,
    pub message: String,
}

/// The shop's use cases over a repository.
pub struct Shop<R> {
    repo: R,
    hasher: Arc<PasswordHasher>,
    keys: Arc<RwLock<FieldKeyring>>,
    policy: ShopPolicy,
    throttle: IpThrottle,
}

impl<R> std::fmt::Debug for Shop<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shop")
            .field("policy", &self.policy)
            .finish()
    }
}

impl<R: ShopRepository> Shop<R> {
    pub fn new(repo: R, hasher: PasswordHasher, keys: FieldKeyring, policy: ShopPolicy) -> Self {
        let throttle = IpThrottle::new(policy.ip_failure_limit, policy.ip_window);
        Shop {
            repo,
            hasher: Arc::new(hasher),
            keys: Arc::new(RwLock::new(keys)),
            policy,
            throttle,
        }
    }

    pub fn repository(&self) -> &R {
        &self.repo
    }

    pub fn policy(&self) -> &ShopPolicy {
        &self.policy
    }

    fn requires_mfa(&self, user: &User) -> bool {
        user.mfa_enrolled || self.policy.mfa_required.contains(&user.role)
    }

    async fn hash(&self, password: String) -> Result<String, ShopError> {
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| ShopError::Internal(e.to_string()))?
            .map_err(|e| ShopError::Internal(e.to_string()))
    }

    /// Checks `password` against `stored` (or a dummy, costing the same) off the runtime.
    async fn verify_password(
        &self,
        stored: Option<String>,
        password: String,
    ) -> Result<(bool, bool), ShopError> {
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || {
            let ok = hasher.verify(stored.as_deref(), &password);
            let rehash = ok && stored.as_deref().is_some_and(|s| hasher.needs_rehash(s));
            (ok, rehash)
        })
        .await
        .map_err(|e| ShopError::Internal(e.to_string()))
    }

    fn with_keys<T>(&self, f: impl FnOnce(&FieldKeyring) -> T) -> Result<T, ShopError> {
        let keys = self
            .keys
            .read()
            .map_err(|_| ShopError::Internal("field keyring lock poisoned".into()))?;
        Ok(f(&keys))
    }

    /// Replaces the field keyring (after a rotation); values are re-encrypted separately.
    pub fn replace_keys(&self, keys: FieldKeyring) -> Result<(), ShopError> {
        *self
            .keys
            .write()
            .map_err(|_| ShopError::Internal("field keyring lock poisoned".into()))? = keys;
        Ok(())
    }

    // ----- accounts ---------------------------------------------------------------

    /// Registers a customer. The answer is the same whether or not the address already
    /// has an account (the taken case is audited, and costs the same hashing time).
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<(), ShopError> {
        let Ok(email) = Email::parse(email) else {
            self.repo
                .record(
                    AuditEvent::new("register", "iam", Outcome::Failure)
                        .origin(origin)
                        .reason("invalid email"),
                )
                .await?;
            return Err(problem("email", "not an email address"));
        };
        if let Err(why) = check_new_password(password, &[email.as_str()]) {
            self.repo
                .record(
                    AuditEvent::new("register", "iam", Outcome::Failure)
                        .user_name(email.as_str())
                        .origin(origin)
                        .reason(format!("password refused: {why}")),
                )
                .await?;
            return Err(problem("password", why.to_string()));
        }
        let stored = self.new_account(&email, password, Role::Customer).await?;
        let id = stored.user.id;
        let created = AuditEvent::new("register", "iam", Outcome::Success)
            .user(id, &email)
            .origin(origin)
            .detail("role", Role::Customer.as_str());
        let taken = AuditEvent::new("register", "iam", Outcome::Failure)
            .user_name(email.as_str())
            .origin(origin)
            .reason("email already registered");
        self.repo.create_user(&stored, created, taken).await?;
        Ok(())
    }

    /// A new account's stored form, its password hashed.
    async fn new_account(
        &self,
        email: &Email,
        password: &str,
        role: Role,
    ) -> Result<StoredUser, ShopError> {
        Ok(StoredUser {
            user: User {
                id: UserId(Uuid::now_v7()),
                email: email.clone(),
                role,
                mfa_enrolled: false,
            },
            password_hash: self.hash(password.to_string()).await?,
            failed_logins: 0,
            locked_until: None,
            totp_secret: None,
            totp_last_step: None,
            created_at: now_ms(),
        })
    }

    /// Creates an account with a role directly (the console's first admin, tests).
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        role: Role,
    ) -> Result<UserId, ShopError> {
        let email = Email::parse(email).map_err(|_| problem("email", "not an email address"))?;
        check_new_password(password, &[email.as_str()])
            .map_err(|why| problem("password", why.to_string()))?;
        let stored = self.new_account(&email, password, role).await?;
        let id = stored.user.id;
        let created = AuditEvent::new("account_created", "iam", Outcome::Success)
            .user(id, &email)
            .detail("role", role.as_str());
        let taken = AuditEvent::new("account_created", "iam", Outcome::Failure)
            .user_name(email.as_str())
            .reason("email already registered");
        if self.repo.create_user(&stored, created, taken).await? {
            Ok(id)
        } else {
            Err(ShopError::Conflict(
                "an account with this email exists".into(),
            ))
        }
    }

    /// Counts a failed sign-in step against the account (and the address); locks the
    /// account at the threshold.
    async fn failed_attempt(
        &self,
        stored: &StoredUser,
        audit: AuditEvent,
        origin: &Origin,
    ) -> Result<(), ShopError> {
        if let Some(ip) = origin.source_ip {
            self.throttle.failed(ip);
        }
        let failed = stored.failed_logins + 1;
        let mut audits = vec![audit];
        let (failed, locked_until) = if failed >= self.policy.lockout_threshold {
            let until = now_ms()
                + i64::try_from(self.policy.lockout_duration.as_millis()).unwrap_or(i64::MAX);
            audits.push(
                AuditEvent::new("lockout", "authentication", Outcome::Success)
                    .user(stored.user.id, &stored.user.email)
                    .origin(origin)
                    .reason(format!("{failed} failed sign-in attempts"))
                    .detail("locked_seconds", self.policy.lockout_duration.as_secs()),
            );
            (0, Some(until))
        } else {
            (failed, stored.locked_until)
        };
        self.repo
            .update_login_state(stored.user.id, failed, locked_until, None, audits)
            .await?;
        Ok(())
    }

    fn check_ip(&self, origin: &Origin) -> Option<Duration> {
        origin
            .source_ip
            .and_then(|ip| self.throttle.blocked_for(ip))
    }

    /// Sign-in, first step: email and password. `presented` is the session the client
    /// already had, if any: it is ended, and a new id is issued (no fixation).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        presented: Option<&str>,
        origin: &Origin,
    ) -> Result<SignedIn, ShopError> {
        if let Some(wait) = self.check_ip(origin) {
            self.repo
                .record(
                    AuditEvent::new("login", "authentication", Outcome::Failure)
                        .user_name(email.chars().take(254).collect::<String>())
                        .origin(origin)
                        .reason("address throttled"),
                )
                .await?;
            return Err(ShopError::Throttled(wait));
        }
        let stored = match Email::parse(email) {
            Ok(email) => self.repo.user_by_email(&email).await?,
            Err(_) => None,
        };
        let now = now_ms();
        let locked = stored
            .as_ref()
            .is_some_and(|s| s.locked_until.is_some_and(|until| until > now));
        // Always one Argon2id verification, against a dummy hash when there is no
        // account: unknown, wrong and locked cost the same.
        let (ok, rehash) = self
            .verify_password(
                stored.as_ref().map(|s| s.password_hash.clone()),
                password.to_string(),
            )
            .await?;
        let failure = |reason: &str, account: Option<&StoredUser>| {
            let event = AuditEvent::new("login", "authentication", Outcome::Failure)
                .origin(origin)
                .reason(reason);
            match account {
                Some(s) => event.user(s.user.id, &s.user.email),
                None => event.user_name(email.chars().take(254).collect::<String>()),
            }
        };
        let Some(stored) = stored else {
            if let Some(ip) = origin.source_ip {
                self.throttle.failed(ip);
            }
            self.repo.record(failure("unknown account", None)).await?;
            return Err(ShopError::InvalidCredentials);
        };
        if locked {
            if let Some(ip) = origin.source_ip {
                self.throttle.failed(ip);
            }
            self.repo
                .record(failure("account locked", Some(&stored)))
                .await?;
            return Err(ShopError::InvalidCredentials);
        }
        if !ok {
            self.failed_attempt(&stored, failure("wrong password", Some(&stored)), origin)
                .await?;
            return Err(ShopError::InvalidCredentials);
        }
        if let Some(ip) = origin.source_ip {
            self.throttle.succeeded(ip);
        }
        let new_hash = if rehash {
            Some(self.hash(password.to_string()).await?)
        } else {
            None
        };
        let user = &stored.user;
        let mfa = self.requires_mfa(user);
        let mut success = AuditEvent::new("login", "authentication", Outcome::Success)
            .user(user.id, &user.email)
            .origin(origin)
            .detail("mfa", if mfa { "pending" } else { "not_required" });
        if new_hash.is_some() {
            success = success.detail("rehashed", true);
        }
        self.repo
            .update_login_state(user.id, 0, None, new_hash, vec![success])
            .await?;
        let stage = if mfa {
            SessionStage::Mfa
        } else {
            SessionStage::Full
        };
        let replaces = presented.map(session_hash);
        let session = self
            .start_session(user, stage, replaces.as_deref(), origin, "session_created")
            .await?;
        Ok(SignedIn {
            session,
            mfa_pending: mfa,
            mfa_enrolled: user.mfa_enrolled,
        })
    }

    async fn start_session(
        &self,
        user: &User,
        stage: SessionStage,
        replaces_hash: Option<&str>,
        origin: &Origin,
        action: &'static str,
    ) -> Result<NewSession, ShopError> {
        let id = random_token()?;
        let csrf_token = random_token()?;
        let now = now_ms();
        let record = SessionRecord {
            user_id: user.id,
            csrf_token: csrf_token.clone(),
            stage,
            created_at: now,
            last_seen_at: now,
        };
        let audit = AuditEvent::new(action, "session", Outcome::Success)
            .user(user.id, &user.email)
            .origin(origin)
            .detail("stage", stage.as_str())
            .detail("replaced_session", replaces_hash.is_some());
        self.repo
            .create_session(&session_hash(&id), &record, replaces_hash, audit)
            .await?;
        Ok(NewSession {
            id,
            csrf_token,
            stage,
        })
    }

    /// Resolves a session cookie; ends it if it is idle or too old.
    pub async fn authenticate(
        &self,
        session_id: &str,
        origin: &Origin,
    ) -> Result<Caller, ShopError> {
        let hash = session_hash(session_id);
        let Some(session) = self.repo.session(&hash).await? else {
            return Err(ShopError::Unauthenticated);
        };
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let idle = now - session.last_seen_at > ms(self.policy.session_idle);
        let old = now - session.created_at > ms(self.policy.session_absolute);
        if idle || old {
            let audit = AuditEvent::new("session_expired", "session", Outcome::Success)
                .user_id(session.user_id)
                .origin(origin)
                .reason(if idle {
                    "idle timeout"
                } else {
                    "absolute timeout"
                });
            self.repo.delete_session(&hash, Some(audit)).await?;
            return Err(ShopError::Unauthenticated);
        }
        let Some(stored) = self.repo.user(session.user_id).await? else {
            self.repo.delete_session(&hash, None).await?;
            return Err(ShopError::Unauthenticated);
        };
        // The idle clock moves at most once a minute: fewer writes, same protection.
        if now - session.last_seen_at > 60_000 {
            self.repo.touch_session(&hash, now).await?;
        }
        Ok(Caller {
            user: stored.user,
            session_hash: hash,
            csrf_token: session.csrf_token,
            stage: session.stage,
            origin: origin.clone(),
        })
    }

    pub async fn logout(&self, caller: &Caller) -> Result<(), ShopError> {
        let audit = caller.audit("logout", "session", Outcome::Success);
        self.repo
            .delete_session(&caller.session_hash, Some(audit))
            .await?;
        Ok(())
    }

    /// Ends every session of the caller's account, this one included.
    pub async fn logout_everywhere(&self, caller: &Caller) -> Result<u64, ShopError> {
        let audit = caller.audit("sessions_revoked", "session", Outcome::Success);
        Ok(self.repo.delete_sessions_of(caller.user.id, audit).await?)
    }

    // ----- second factor ----------------------------------------------------------

    fn totp_aad(user: UserId) -> Vec<u8> {
        format!("totp:{}", user.0).into_bytes()
    }

    fn secret_of(&self, stored: &StoredUser) -> Result<Option<TotpSecret>, ShopError> {
        let Some(encrypted) = &stored.totp_secret else {
            return Ok(None);
        };
        let hex_secret = self
            .with_keys(|keys| keys.decrypt(encrypted, &Self::totp_aad(stored.user.id)))?
            .map_err(|e| ShopError::Internal(format!("TOTP secret: {e}")))?;
        let bytes = hex::decode(hex_secret)
            .map_err(|e| ShopError::Internal(format!("TOTP secret: {e}")))?;
        Ok(Some(TotpSecret::from_bytes(bytes)))
    }

    async fn stored(&self, caller: &Caller) -> Result<StoredUser, ShopError> {
        self.repo
            .user(caller.user.id)
            .await?
            .ok_or(ShopError::Unauthenticated)
    }

    /// Starts an enrolment: a new secret, stored encrypted and not yet enabled.
    pub async fn enroll_mfa(&self, caller: &Caller) -> Result<Enrolment, ShopError> {
        if caller.user.mfa_enrolled {
            return Err(ShopError::Conflict(
                "a second factor is already enrolled; disable it first".into(),
            ));
        }
        let secret = TotpSecret::generate().map_err(|e| ShopError::Internal(e.to_string()))?;
        let uri = secret
            .provisioning_uri(&self.policy.totp_issuer, caller.user.email.as_str())
            .map_err(|e| ShopError::Internal(e.to_string()))?;
        let encrypted = self.with_keys(|keys| {
            keys.encrypt(
                &hex::encode(secret.expose()),
                &Self::totp_aad(caller.user.id),
            )
        })?;
        self.repo
            .set_totp(
                caller.user.id,
                Some(encrypted),
                false,
                Vec::new(),
                caller.audit("mfa_enroll_started", "iam", Outcome::Success),
            )
            .await?;
        let qr_svg = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| ShopError::Internal(format!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        Ok(Enrolment {
            otpauth_uri: uri,
            qr_svg,
        })
    }

    /// Finishes an enrolment with a code from the app: enables the factor, returns the
    /// recovery codes (shown once), and — for a session waiting on its second factor —
    /// completes the sign-in with a new session id.
    pub async fn confirm_mfa(
        &self,
        caller: &Caller,
        code: &str,
    ) -> Result<(Vec<String>, Option<NewSession>), ShopError> {
        let stored = self.stored(caller).await?;
        if stored.user.mfa_enrolled {
            return Err(ShopError::Conflict(
                "the second factor is already enabled".into(),
            ));
        }
        let Some(secret) = self.secret_of(&stored)? else {
            return Err(ShopError::Conflict("no enrolment in progress".into()));
        };
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let Some(step) = secret.verify(code, now, stored.totp_last_step) else {
            let audit = caller
                .audit("mfa_enroll", "iam", Outcome::Failure)
                .reason("wrong code");
            self.failed_attempt(&stored, audit, &caller.origin).await?;
            return Err(ShopError::InvalidCode);
        };
        let (codes, hashes) =
            totp::recovery_codes().map_err(|e| ShopError::Internal(e.to_string()))?;
        self.repo
            .set_totp(
                caller.user.id,
                stored.totp_secret.clone(),
                true,
                hashes,
                caller.audit("mfa_enroll", "iam", Outcome::Success),
            )
            .await?;
        self.repo
            .accept_totp_step(
                caller.user.id,
                step,
                caller.audit("mfa_verify", "authentication", Outcome::Success),
            )
            .await?;
        let session = if caller.stage == SessionStage::Mfa {
            let mut user = caller.user.clone();
            user.mfa_enrolled = true;
            Some(
                self.start_session(
                    &user,
                    SessionStage::Full,
                    Some(&caller.session_hash),
                    &caller.origin,
                    "session_elevated",
                )
                .await?,
            )
        } else {
            None
        };
        Ok((codes, session))
    }

    /// Sign-in, second step: a TOTP code or a recovery code. Gives the full session.
    pub async fn verify_mfa(
        &self,
        caller: &Caller,
        code: Option<&str>,
        recovery_code: Option<&str>,
    ) -> Result<NewSession, ShopError> {
        if caller.stage != SessionStage::Mfa {
            return Err(ShopError::Conflict("no second factor is pending".into()));
        }
        if let Some(wait) = self.check_ip(&caller.origin) {
            return Err(ShopError::Throttled(wait));
        }
        let stored = self.stored(caller).await?;
        if stored.locked_until.is_some_and(|until| until > now_ms()) {
            self.repo
                .record(
                    caller
                        .audit("mfa_verify", "authentication", Outcome::Failure)
                        .reason("account locked"),
                )
                .await?;
            return Err(ShopError::InvalidCode);
        }
        if !stored.user.mfa_enrolled {
            return Err(ShopError::Conflict("enroll a second factor first".into()));
        }
        let accepted = match (code, recovery_code) {
            (Some(code), None) => {
                let secret = self.secret_of(&stored)?.ok_or(ShopError::InvalidCode)?;
                let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
                match secret.verify(code, now, stored.totp_last_step) {
                    Some(step) => {
                        self.repo
                            .accept_totp_step(
                                caller.user.id,
                                step,
                                caller.audit("mfa_verify", "authentication", Outcome::Success),
                            )
                            .await?
                    }
                    None => false,
                }
            }
            (None, Some(recovery)) => {
                self.repo
                    .use_recovery_code(
                        caller.user.id,
                        &totp::recovery_code_hash(recovery),
                        caller.audit("recovery_code_used", "authentication", Outcome::Success),
                    )
                    .await?
            }
            _ => return Err(problem("code", "give either code or recovery_code")),
        };
        if !accepted {
            let kind = if code.is_some() {
                "mfa_verify"
            } else {
                "recovery_code_used"
            };
            let audit = caller
                .audit(kind, "authentication", Outcome::Failure)
                .reason("wrong or reused code");
            self.failed_attempt(&stored, audit, &caller.origin).await?;
            return Err(ShopError::InvalidCode);
        }
        self.repo
            .update_login_state(caller.user.id, 0, None, None, Vec::new())
            .await?;
        self.start_session(
            &caller.user,
            SessionStage::Full,
            Some(&caller.session_hash),
            &caller.origin,
            "session_elevated",
        )
        .await
    }

    /// Turns the second factor off (a current code is required); refused for roles that
    /// must have one.
    pub async fn disable_mfa(&self, caller: &Caller, code: &str) -> Result<(), ShopError> {
        if self.policy.mfa_required.contains(&caller.user.role) {
            self.repo
                .record(
                    caller
                        .audit("mfa_disable", "iam", Outcome::Failure)
                        .reason("the role requires a second factor"),
                )
                .await?;
            return Err(ShopError::Forbidden);
        }
        let stored = self.stored(caller).await?;
        let secret = self.secret_of(&stored)?.ok_or(ShopError::InvalidCode)?;
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        if secret.verify(code, now, stored.totp_last_step).is_none() || !stored.user.mfa_enrolled {
            let audit = caller
                .audit("mfa_disable", "iam", Outcome::Failure)
                .reason("wrong code");
            self.failed_attempt(&stored, audit, &caller.origin).await?;
            return Err(ShopError::InvalidCode);
        }
        self.repo
            .set_totp(
                caller.user.id,
                None,
                false,
                Vec::new(),
                caller.audit("mfa_disable", "iam", Outcome::Success),
            )
            .await?;
        Ok(())
    }

    // ----- cart ---------------------------------------------------------------------

    /// The caller's own cart.
    pub async fn my_cart(&self, caller: &Caller) -> Result<Cart, ShopError> {
        match self.repo.cart_of(caller.user.id).await? {
            Some(cart) => Ok(cart),
            None => Ok(Cart::empty(CartId(Uuid::now_v7()), caller.user.id)),
        }
    }

    /// The cart `id`, if it is the caller's. Anyone else's is "not found" to the caller
    /// (no hint that it exists) and an `access_denied` audit event.
    pub async fn cart(&self, caller: &Caller, id: CartId) -> Result<Cart, ShopError> {
        match self.repo.cart(id).await? {
            Some(cart) if cart.owner == caller.user.id => Ok(cart),
            found => {
                self.repo
                    .record(
                        caller
                            .audit("access_denied", "web", Outcome::Failure)
                            .reason(if found.is_some() {
                                "cart of another user"
                            } else {
                                "no such cart"
                            })
                            .detail("cart_id", id.0.to_string()),
                    )
                    .await?;
                Err(ShopError::NotFound)
            }
        }
    }

    /// Applies `change` to the caller's cart `id` (or own cart when `None`) and saves.
    pub async fn change_cart(
        &self,
        caller: &Caller,
        id: Option<CartId>,
        change: CartChange,
    ) -> Result<Cart, ShopError> {
        let mut cart = match id {
            Some(id) => self.cart(caller, id).await?,
            None => self.my_cart(caller).await?,
        };
        let (action, sku) = match &change {
            CartChange::Add { sku, .. } => ("cart_item_added", Some(sku.clone())),
            CartChange::SetQuantity { sku, .. } => ("cart_quantity_changed", Some(sku.clone())),
            CartChange::Remove { sku } => ("cart_item_removed", Some(sku.clone())),
            CartChange::Clear => ("cart_cleared", None),
        };
        let applied = match change {
            CartChange::Add { sku, quantity } => cart.add(sku, quantity),
            CartChange::SetQuantity { sku, quantity } => cart.set_quantity(&sku, quantity),
            CartChange::Remove { sku } => cart.remove(&sku),
            CartChange::Clear => {
                cart.clear();
                Ok(())
            }
        };
        let mut audit = caller
            .audit(action, "web", Outcome::Success)
            .detail("cart_id", cart.id.0.to_string());
        if let Some(sku) = &sku {
            audit = audit.detail("sku", sku.as_str());
        }
        if let Err(error) = applied {
            self.repo
                .record(
                    AuditEvent {
                        outcome: Outcome::Failure,
                        ..audit
                    }
                    .reason(error.to_string()),
                )
                .await?;
            return Err(match error {
                CartError::NotInCart => ShopError::NotFound,
                other => problem("quantity", other.to_string()),
            });
        }
        self.repo.save_cart(&cart, audit).await?;
        Ok(cart)
    }

    // ----- form ---------------------------------------------------------------------

    fn form_aad(id: Uuid, field: &str) -> Vec<u8> {
        format!("form:{id}:{field}").into_bytes()
    }

    /// Validates and stores a submission, phone and address encrypted.
    pub async fn submit_form(
        &self,
        caller: &Caller,
        raw: RawContactForm,
    ) -> Result<Uuid, ShopError> {
        let form = match ContactForm::parse(raw) {
            Ok(form) => form,
            Err(problems) => {
                let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
                self.repo
                    .record(
                        caller
                            .audit("validation_rejected", "web", Outcome::Failure)
                            .reason("form fields refused")
                            .detail("fields", fields),
                    )
                    .await?;
                return Err(ShopError::Invalid(problems));
            }
        };
        let id = Uuid::now_v7();
        let (phone_enc, address_enc) = self.with_keys(|keys| {
            (
                keys.encrypt(form.phone(), &Self::form_aad(id, "phone")),
                keys.encrypt(form.address(), &Self::form_aad(id, "address")),
            )
        })?;
        let submission = StoredSubmission {
            id,
            user_id: caller.user.id,
            created_at: now_ms(),
            name: form.name().to_string(),
            email: form.email().as_str().to_string(),
            phone_enc,
            address_enc,
            message: form.message().to_string(),
        };
        self.repo
            .save_submission(
                &submission,
                caller
                    .audit("form_submitted", "web", Outcome::Success)
                    .detail("submission_id", id.to_string()),
            )
            .await?;
        Ok(id)
    }

    fn decrypt_submission(&self, stored: StoredSubmission) -> Result<Submission, ShopError> {
        let (phone, address) = self.with_keys(|keys| {
            (
                keys.decrypt(&stored.phone_enc, &Self::form_aad(stored.id, "phone")),
                keys.decrypt(&stored.address_enc, &Self::form_aad(stored.id, "address")),
            )
        })?;
        let failed = |e| ShopError::Internal(format!("submission {}: {e}", stored.id));
        Ok(Submission {
            id: stored.id,
            created_at: stored.created_at,
            phone: phone.map_err(failed)?,
            address: address.map_err(failed)?,
            name: stored.name,
            email: stored.email,
            message: stored.message,
        })
    }

    /// The caller's own submissions, decrypted.
    pub async fn my_submissions(&self, caller: &Caller) -> Result<Vec<Submission>, ShopError> {
        self.repo
            .submissions(Some(caller.user.id))
            .await?
            .into_iter()
            .map(|s| self.decrypt_submission(s))
            .collect()
    }

    /// Every submission, decrypted (the masked export and key rotation read these).
    pub async fn all_submissions(&self) -> Result<Vec<Submission>, ShopError> {
        self.repo
            .submissions(None)
            .await?
            .into_iter()
            .map(|s| self.decrypt_submission(s))
            .collect()
    }

    /// Re-encrypts every sensitive value not under the active key (after a rotation);
    /// returns how many submissions changed.
    pub async fn reencrypt_all(&self) -> Result<u64, ShopError> {
        let mut changed = 0;
        for stored in self.repo.submissions(None).await? {
            let stale = self.with_keys(|keys| {
                keys.needs_reencryption(&stored.phone_enc)
                    || keys.needs_reencryption(&stored.address_enc)
            })?;
            if !stale {
                continue;
            }
            let id = stored.id;
            let plain = self.decrypt_submission(stored)?;
            let (phone_enc, address_enc, key) = self.with_keys(|keys| {
                (
                    keys.encrypt(&plain.phone, &Self::form_aad(id, "phone")),
                    keys.encrypt(&plain.address, &Self::form_aad(id, "address")),
                    keys.active_key_id().to_string(),
                )
            })?;
            let audit = AuditEvent::new("form_reencrypted", "database", Outcome::Success)
                .detail("submission_id", id.to_string())
                .detail("key_id", key);
            self.repo
                .reencrypt_submission(id, &phone_enc, &address_enc, audit)
                .await?;
            changed += 1;
        }
        Ok(changed)
    }

    // ----- administration -----------------------------------------------------------

    pub async fn users(&self) -> Result<Vec<User>, ShopError> {
        Ok(self
            .repo
            .users()
            .await?
            .into_iter()
            .map(|s| s.user)
            .collect())
    }

    /// Changes a user's role; every session of that user ends (privileges change only
    /// through a new sign-in).
    pub async fn set_role(
        &self,
        caller: &Caller,
        user: UserId,
        role: Role,
    ) -> Result<(), ShopError> {
        let Some(target) = self.repo.user(user).await? else {
            return Err(ShopError::NotFound);
        };
        let audit = caller
            .audit("role_change", "iam", Outcome::Success)
            .detail("target_user_id", user.0.to_string())
            .detail("target_user_name", target.user.email.as_str())
            .detail("old_role", target.user.role.as_str())
            .detail("new_role", role.as_str());
        self.repo.set_role(user, role, audit).await?;
        Ok(())
    }

    /// Lifts a lockout.
    pub async fn unlock(&self, caller: &Caller, user: UserId) -> Result<(), ShopError> {
        let Some(target) = self.repo.user(user).await? else {
            return Err(ShopError::NotFound);
        };
        let audit = caller
            .audit("account_unlocked", "iam", Outcome::Success)
            .detail("target_user_id", user.0.to_string())
            .detail("target_user_name", target.user.email.as_str());
        self.repo
            .update_login_state(user, 0, None, None, vec![audit])
            .await?;
        Ok(())
    }

    /// Ends every session of another account (a suspected takeover).
    pub async fn revoke_sessions_of(
        &self,
        caller: &Caller,
        user: UserId,
    ) -> Result<u64, ShopError> {
        let Some(target) = self.repo.user(user).await? else {
            return Err(ShopError::NotFound);
        };
        let audit = caller
            .audit("sessions_revoked", "session", Outcome::Success)
            .detail("target_user_id", user.0.to_string())
            .detail("target_user_name", target.user.email.as_str());
        Ok(self.repo.delete_sessions_of(user, audit).await?)
    }

    /// Removes another account's second factor and recovery codes (a lost phone) and
    /// ends its sessions; at its next sign-in it enrols again (required roles must).
    pub async fn reset_mfa(&self, caller: &Caller, user: UserId) -> Result<(), ShopError> {
        let Some(target) = self.repo.user(user).await? else {
            return Err(ShopError::NotFound);
        };
        let audit = |action| {
            caller
                .audit(action, "iam", Outcome::Success)
                .detail("target_user_id", user.0.to_string())
                .detail("target_user_name", target.user.email.as_str())
        };
        self.repo
            .set_totp(user, None, false, Vec::new(), audit("mfa_reset"))
            .await?;
        self.repo
            .delete_sessions_of(user, audit("sessions_revoked"))
            .await?;
        Ok(())
    }

    /// Records a refusal made at the edge (RBAC, CSRF, address allowlist, bad input).
    pub async fn record_denial(&self, audit: AuditEvent) -> Result<(), ShopError> {
        Ok(self.repo.record(audit).await?)
    }
}

/// A change to a cart.
#[derive(Debug, Clone)]
pub enum CartChange {
    Add { sku: Sku, quantity: Quantity },
    SetQuantity { sku: Sku, quantity: Quantity },
    Remove { sku: Sku },
    Clear,
}

/// Parses a source address for audit records.
pub fn origin(ip: Option<IpAddr>, user_agent: Option<&str>) -> Origin {
    Origin {
        source_ip: ip,
        user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
    }
}
