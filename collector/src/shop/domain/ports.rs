//! What the use cases need from storage, as one repository trait.
//!
//! Every write takes the audit event that describes it, and an implementation commits
//! the write and its audit record together (or neither): the trail cannot miss a change
//! nor record one that did not happen.

use std::future::Future;

use super::audit::AuditEvent;
use super::cart::{Cart, CartId};
use super::user::{Email, Role, User, UserId};

/// A storage failure; the details are for the log, never for the client.
#[derive(Debug, thiserror::Error)]
#[error("shop storage: {0}")]
pub struct RepoError(pub String);

/// An account as stored, with its secrets (hashed or encrypted).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: String,
    pub failed_logins: u32,
    /// Unix ms until which password login is refused.
    pub locked_until: Option<i64>,
    /// The TOTP secret, encrypted (present from enrolment on, enabled once verified).
    pub totp_secret: Option<String>,
    /// The last TOTP time step accepted (a code of this step or earlier is refused).
    pub totp_last_step: Option<u64>,
    pub created_at: i64,
}

/// Between password and second factor, or signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStage {
    Mfa,
    Full,
}

impl SessionStage {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStage::Mfa => "mfa",
            SessionStage::Full => "full",
        }
    }
}

/// A server-side session, found by the hash of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: UserId,
    pub csrf_token: String,
    pub stage: SessionStage,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// A form submission as stored: phone and address encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubmission {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub created_at: i64,
    pub name: String,
    pub email: String,
    pub phone_enc: String,
    pub address_enc: String,
    pub message: String,
}

/// The shop's storage.
pub trait ShopRepository: Send + Sync + 'static {
    fn user_by_email(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<StoredUser>, RepoError>> + Send;
    fn user(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<StoredUser>, RepoError>> + Send;
    fn users(&self) -> impl Future<Output = Result<Vec<StoredUser>, RepoError>> + Send;
    /// Creates the account; `false` (and only the audit record) when the email is taken.
    fn create_user(
        &self,
        user: &StoredUser,
        audit: AuditEvent,
        taken: AuditEvent,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Stores the login counters (and a new hash, after a cost change) with the audits.
    fn update_login_state(
        &self,
        id: UserId,
        failed_logins: u32,
        locked_until: Option<i64>,
        new_hash: Option<String>,
        audits: Vec<AuditEvent>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Stores a TOTP enrolment (secret, enabled, recovery code hashes) or its removal.
    fn set_totp(
        &self,
        id: UserId,
        secret: Option<String>,
        enabled: bool,
        recovery_hashes: Vec<String>,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Records the TOTP step just accepted, only if it is later than the stored one;
    /// `false` when it is not (a concurrent use of the same code).
    fn accept_totp_step(
        &self,
        id: UserId,
        step: u64,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Marks a recovery code used; `false` if there is no such unused code.
    fn use_recovery_code(
        &self,
        id: UserId,
        code_hash: &str,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Changes the role and ends every session of the account.
    fn set_role(
        &self,
        id: UserId,
        role: Role,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    fn create_session(
        &self,
        id_hash: &str,
        session: &SessionRecord,
        replaces: Option<&str>,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn session(
        &self,
        id_hash: &str,
    ) -> impl Future<Output = Result<Option<SessionRecord>, RepoError>> + Send;
    /// Moves a session's idle clock (not audited: it changes no state anyone relies on).
    fn touch_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn delete_session(
        &self,
        id_hash: &str,
        audit: Option<AuditEvent>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Ends every session of a user; returns how many.
    fn delete_sessions_of(
        &self,
        id: UserId,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;

    fn cart_of(
        &self,
        owner: UserId,
    ) -> impl Future<Output = Result<Option<Cart>, RepoError>> + Send;
    fn cart(&self, id: CartId) -> impl Future<Output = Result<Option<Cart>, RepoError>> + Send;
    fn save_cart(
        &self,
        cart: &Cart,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    fn save_submission(
        &self,
        submission: &StoredSubmission,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// A user's submissions (`None`: everyone's), newest first.
    fn submissions(
        &self,
        of: Option<UserId>,
    ) -> impl Future<Output = Result<Vec<StoredSubmission>, RepoError>> + Send;
    /// Replaces the encrypted fields of a submission (key rotation).
    fn reencrypt_submission(
        &self,
        id: uuid::Uuid,
        phone_enc: &str,
        address_enc: &str,
        audit: AuditEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// An audit record with no other write (a failure, a denial).
    fn record(&self, audit: AuditEvent) -> impl Future<Output = Result<(), RepoError>> + Send;
}
