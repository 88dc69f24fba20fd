//! The shop's repository over SQL (SQLite or PostgreSQL through sqlx's Any driver).
//!
//! Every write and the audit records describing it commit in one transaction. Writes are
//! serialised in this process: a write takes the chain lock *before* its transaction
//! begins (so no transaction ever waits on the lock while holding database locks), reads
//! the chain's head inside the transaction, and appends. The head is read each time, not
//! cached, so another process appending (`yagura shop create-account`, `rotate-key`)
//! never leaves this one on a stale head; on SQLite the transaction begins `IMMEDIATE`
//! (the write lock first), and the primary key on `sequence` refuses a fork.

use std::sync::Arc;

use chrono::Utc;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use uuid::Uuid;

use super::audit_chain::{GENESIS, link_hash};
use super::audit_trail::ecs_event;
use super::database::{Backend, ShopDatabase};
use crate::shop::domain::audit::AuditEvent;
use crate::shop::domain::cart::{Cart, CartId, CartLine, Quantity, Sku};
use crate::shop::domain::ports::{
    RepoError, SessionRecord, SessionStage, ShopRepository, StoredSubmission, StoredUser,
};
use crate::shop::domain::user::{Email, Role, User, UserId};

impl From<sqlx::Error> for RepoError {
    fn from(error: sqlx::Error) -> Self {
        RepoError(error.to_string())
    }
}

/// One write: its transaction and the chain lock, held until it commits or drops.
struct Unit {
    tx: Transaction<'static, Any>,
    _chain: OwnedMutexGuard<()>,
}

impl Unit {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// The repository; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlShopRepository {
    db: ShopDatabase,
    /// Held from the start of every write transaction to its commit.
    chain: Arc<Mutex<()>>,
    /// The last sequence committed, for the forwarder to wake on.
    appended: watch::Sender<u64>,
}

/// `SELECT` of every user column, then `$clause` (queries stay static strings).
macro_rules! select_users {
    ($clause:literal) => {
        concat!(
            "SELECT id, email, password_hash, role, created_at, failed_logins, locked_until, \
             totp_secret, totp_enabled, totp_last_step FROM users ",
            $clause
        )
    };
}

/// `SELECT` of every submission column, then `$clause`.
macro_rules! select_submissions {
    ($clause:literal) => {
        concat!(
            "SELECT id, user_id, created_at, name, email, phone_enc, address_enc, message \
             FROM form_submissions ",
            $clause
        )
    };
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn corrupt(what: &str) -> RepoError {
    RepoError(format!("stored {what} is not valid"))
}

fn user_from_row(row: &AnyRow) -> Result<StoredUser, RepoError> {
    let id: String = row.try_get("id")?;
    let email: String = row.try_get("email")?;
    let role: String = row.try_get("role")?;
    let failed: i64 = row.try_get("failed_logins")?;
    let last_step: Option<i64> = row.try_get("totp_last_step")?;
    Ok(StoredUser {
        user: User {
            id: UserId(Uuid::parse_str(&id).map_err(|_| corrupt("user id"))?),
            email: Email::parse(&email).map_err(|_| corrupt("email"))?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role"))?,
            mfa_enrolled: row.try_get::<i64, _>("totp_enabled")? == 1,
        },
        password_hash: row.try_get("password_hash")?,
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        locked_until: row.try_get("locked_until")?,
        totp_secret: row.try_get("totp_secret")?,
        totp_last_step: last_step.and_then(|s| u64::try_from(s).ok()),
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, RepoError> {
    let user: String = row.try_get("user_id")?;
    let stage: String = row.try_get("stage")?;
    Ok(SessionRecord {
        user_id: UserId(Uuid::parse_str(&user).map_err(|_| corrupt("session user"))?),
        csrf_token: row.try_get("csrf_token")?,
        stage: match stage.as_str() {
            "mfa" => SessionStage::Mfa,
            "full" => SessionStage::Full,
            _ => return Err(corrupt("session stage")),
        },
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
    })
}

fn submission_from_row(row: &AnyRow) -> Result<StoredSubmission, RepoError> {
    let id: String = row.try_get("id")?;
    let user: String = row.try_get("user_id")?;
    Ok(StoredSubmission {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("submission id"))?,
        user_id: UserId(Uuid::parse_str(&user).map_err(|_| corrupt("submission user"))?),
        created_at: row.try_get("created_at")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        phone_enc: row.try_get("phone_enc")?,
        address_enc: row.try_get("address_enc")?,
        message: row.try_get("message")?,
    })
}

impl SqlShopRepository {
    pub fn new(db: ShopDatabase) -> Self {
        SqlShopRepository {
            db,
            chain: Arc::default(),
            appended: watch::channel(0).0,
        }
    }

    pub fn database(&self) -> &ShopDatabase {
        &self.db
    }

    /// Wakes when audit records are committed (the value: the last sequence).
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    async fn begin(&self) -> Result<Unit, RepoError> {
        let guard = Arc::clone(&self.chain).lock_owned().await;
        let tx = match self.db.backend {
            Backend::Sqlite => self.db.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.db.pool.begin().await?,
        };
        Ok(Unit { tx, _chain: guard })
    }

    /// Appends `audits` to the chain inside `unit` and commits it.
    async fn commit(&self, mut unit: Unit, audits: Vec<AuditEvent>) -> Result<(), RepoError> {
        let row =
            sqlx::query("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1")
                .fetch_optional(unit.conn())
                .await?;
        let (mut sequence, mut hash) = match row {
            Some(row) => (
                u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0),
                row.try_get("hash")?,
            ),
            None => (0, GENESIS.to_string()),
        };
        for audit in &audits {
            let now = Utc::now();
            let at = yagura_shared::event::format_timestamp(now);
            let event = ecs_event(audit, now).to_json_line();
            let next = sequence + 1;
            let next_hash = link_hash(&hash, next, &at, &event);
            sqlx::query(
                "INSERT INTO audit_log (sequence, at, event, previous_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(i64::try_from(next).map_err(|_| corrupt("audit sequence"))?)
            .bind(at)
            .bind(event)
            .bind(&hash)
            .bind(&next_hash)
            .execute(unit.conn())
            .await?;
            (sequence, hash) = (next, next_hash);
        }
        unit.tx.commit().await?;
        if !audits.is_empty() {
            self.appended.send_replace(sequence);
        }
        Ok(())
    }

    async fn load_cart(&self, row: Option<AnyRow>) -> Result<Option<Cart>, RepoError> {
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let owner: String = row.try_get("owner_id")?;
        let items = sqlx::query(
            "SELECT sku, quantity FROM cart_items WHERE cart_id = $1 ORDER BY position",
        )
        .bind(&id)
        .fetch_all(&self.db.pool)
        .await?;
        let mut cart = Cart::empty(
            CartId(Uuid::parse_str(&id).map_err(|_| corrupt("cart id"))?),
            UserId(Uuid::parse_str(&owner).map_err(|_| corrupt("cart owner"))?),
        );
        for item in items {
            let sku: String = item.try_get("sku")?;
            let quantity: i64 = item.try_get("quantity")?;
            cart.lines.push(CartLine {
                sku: Sku::parse(&sku).map_err(|_| corrupt("sku"))?,
                quantity: u32::try_from(quantity)
                    .ok()
                    .and_then(|q| Quantity::new(q).ok())
                    .ok_or_else(|| corrupt("quantity"))?,
            });
        }
        Ok(Some(cart))
    }
}

impl ShopRepository for SqlShopRepository {
    async fn user_by_email(&self, email: &Email) -> Result<Option<StoredUser>, RepoError> {
        let row = sqlx::query(select_users!("WHERE email = $1"))
            .bind(email.as_str())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<StoredUser>, RepoError> {
        let row = sqlx::query(select_users!("WHERE id = $1"))
            .bind(id.0.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn users(&self) -> Result<Vec<StoredUser>, RepoError> {
        let rows = sqlx::query(select_users!("ORDER BY created_at, id"))
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn create_user(
        &self,
        user: &StoredUser,
        audit: AuditEvent,
        taken: AuditEvent,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING",
        )
        .bind(user.user.id.0.to_string())
        .bind(user.user.email.as_str())
        .bind(&user.password_hash)
        .bind(user.user.role.as_str())
        .bind(user.created_at)
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query("INSERT INTO carts (id, owner_id, updated_at) VALUES ($1, $2, $3)")
                .bind(Uuid::now_v7().to_string())
                .bind(user.user.id.0.to_string())
                .bind(user.created_at)
                .execute(tx.conn())
                .await?;
        }
        self.commit(tx, vec![if inserted { audit } else { taken }])
            .await?;
        Ok(inserted)
    }

    async fn update_login_state(
        &self,
        id: UserId,
        failed_logins: u32,
        locked_until: Option<i64>,
        new_hash: Option<String>,
        audits: Vec<AuditEvent>,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE users SET failed_logins = $1, locked_until = $2, \
             password_hash = COALESCE($3, password_hash) WHERE id = $4",
        )
        .bind(i64::from(failed_logins))
        .bind(locked_until)
        .bind(new_hash)
        .bind(id.0.to_string())
        .execute(tx.conn())
        .await?;
        self.commit(tx, audits).await
    }

    async fn set_totp(
        &self,
        id: UserId,
        secret: Option<String>,
        enabled: bool,
        recovery_hashes: Vec<String>,
        audit: AuditEvent,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_enabled = $2, totp_last_step = NULL \
             WHERE id = $3",
        )
        .bind(secret)
        .bind(i64::from(enabled))
        .bind(id.0.to_string())
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id.0.to_string())
            .execute(tx.conn())
            .await?;
        for hash in recovery_hashes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(id.0.to_string())
                .bind(hash)
                .execute(tx.conn())
                .await?;
        }
        self.commit(tx, vec![audit]).await
    }

    async fn accept_totp_step(
        &self,
        id: UserId,
        step: u64,
        audit: AuditEvent,
    ) -> Result<bool, RepoError> {
        let step = i64::try_from(step).map_err(|_| corrupt("totp step"))?;
        let mut tx = self.begin().await?;
        let accepted = sqlx::query(
            "UPDATE users SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(id.0.to_string())
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if accepted {
            self.commit(tx, vec![audit]).await?;
        } else {
            tx.tx.rollback().await?;
        }
        Ok(accepted)
    }

    async fn use_recovery_code(
        &self,
        id: UserId,
        code_hash: &str,
        audit: AuditEvent,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin().await?;
        let used = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now_ms())
        .bind(id.0.to_string())
        .bind(code_hash)
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if used {
            self.commit(tx, vec![audit]).await?;
        } else {
            tx.tx.rollback().await?;
        }
        Ok(used)
    }

    async fn set_role(&self, id: UserId, role: Role, audit: AuditEvent) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id.0.to_string())
            .execute(tx.conn())
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id.0.to_string())
            .execute(tx.conn())
            .await?;
        self.commit(tx, vec![audit]).await
    }

    async fn create_session(
        &self,
        id_hash: &str,
        session: &SessionRecord,
        replaces: Option<&str>,
        audit: AuditEvent,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        if let Some(old) = replaces {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(old)
                .execute(tx.conn())
                .await?;
        }
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, stage, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(session.user_id.0.to_string())
        .bind(&session.csrf_token)
        .bind(session.stage.as_str())
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .execute(tx.conn())
        .await?;
        self.commit(tx, vec![audit]).await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, RepoError> {
        let row = sqlx::query(
            "SELECT user_id, csrf_token, stage, created_at, last_seen_at FROM sessions \
             WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), RepoError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    async fn delete_session(
        &self,
        id_hash: &str,
        audit: Option<AuditEvent>,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(tx.conn())
            .await?;
        self.commit(tx, audit.into_iter().collect()).await
    }

    async fn delete_sessions_of(&self, id: UserId, audit: AuditEvent) -> Result<u64, RepoError> {
        let mut tx = self.begin().await?;
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id.0.to_string())
            .execute(tx.conn())
            .await?
            .rows_affected();
        self.commit(tx, vec![audit.detail("sessions_ended", ended)])
            .await?;
        Ok(ended)
    }

    async fn cart_of(&self, owner: UserId) -> Result<Option<Cart>, RepoError> {
        let row = sqlx::query("SELECT id, owner_id FROM carts WHERE owner_id = $1")
            .bind(owner.0.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        self.load_cart(row).await
    }

    async fn cart(&self, id: CartId) -> Result<Option<Cart>, RepoError> {
        let row = sqlx::query("SELECT id, owner_id FROM carts WHERE id = $1")
            .bind(id.0.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        self.load_cart(row).await
    }

    async fn save_cart(&self, cart: &Cart, audit: AuditEvent) -> Result<(), RepoError> {
        let id = cart.id.0.to_string();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO carts (id, owner_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(&id)
        .bind(cart.owner.0.to_string())
        .bind(now_ms())
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM cart_items WHERE cart_id = $1")
            .bind(&id)
            .execute(tx.conn())
            .await?;
        for (position, line) in cart.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO cart_items (cart_id, position, sku, quantity) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(line.sku.as_str())
            .bind(i64::from(line.quantity.get()))
            .execute(tx.conn())
            .await?;
        }
        self.commit(tx, vec![audit]).await
    }

    async fn save_submission(
        &self,
        submission: &StoredSubmission,
        audit: AuditEvent,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO form_submissions \
             (id, user_id, created_at, name, email, phone_enc, address_enc, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(submission.id.to_string())
        .bind(submission.user_id.0.to_string())
        .bind(submission.created_at)
        .bind(&submission.name)
        .bind(&submission.email)
        .bind(&submission.phone_enc)
        .bind(&submission.address_enc)
        .bind(&submission.message)
        .execute(tx.conn())
        .await?;
        self.commit(tx, vec![audit]).await
    }

    async fn submissions(&self, of: Option<UserId>) -> Result<Vec<StoredSubmission>, RepoError> {
        let rows = match of {
            Some(user) => {
                sqlx::query(select_submissions!(
                    "WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
                ))
                .bind(user.0.to_string())
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(select_submissions!("ORDER BY created_at DESC, id DESC"))
                    .fetch_all(&self.db.pool)
                    .await?
            }
        };
        rows.iter().map(submission_from_row).collect()
    }

    async fn reencrypt_submission(
        &self,
        id: Uuid,
        phone_enc: &str,
        address_enc: &str,
        audit: AuditEvent,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE form_submissions SET phone_enc = $1, address_enc = $2 WHERE id = $3")
            .bind(phone_enc)
            .bind(address_enc)
            .bind(id.to_string())
            .execute(tx.conn())
            .await?;
        self.commit(tx, vec![audit]).await
    }

    async fn record(&self, audit: AuditEvent) -> Result<(), RepoError> {
        let tx = self.begin().await?;
        self.commit(tx, vec![audit]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shop::domain::audit::Outcome;
    use crate::shop::infrastructure::audit_trail::{self, Verification};

    fn audit() -> AuditEvent {
        AuditEvent::new("login", "authentication", Outcome::Failure)
    }

    /// Two writers on one database — another process, say `yagura shop create-account`
    /// next to the running collector — and many concurrent writes in one: the chain
    /// stays one unbroken line.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_chain_stays_linear_with_concurrent_and_foreign_writers() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("shop.db").display());
        let this = SqlShopRepository::new(ShopDatabase::open(&url, None).await.expect("db"));
        let other = SqlShopRepository::new(ShopDatabase::open(&url, None).await.expect("db"));
        for _ in 0..5 {
            this.record(audit()).await.expect("this");
            other.record(audit()).await.expect("other");
        }
        let mut tasks = Vec::new();
        for i in 0..40 {
            let repo = if i % 4 == 0 {
                other.clone()
            } else {
                this.clone()
            };
            tasks.push(tokio::spawn(async move { repo.record(audit()).await }));
        }
        for task in tasks {
            task.await.expect("join").expect("record");
        }
        assert_eq!(
            audit_trail::verify(this.database()).await.expect("verify"),
            Verification::Intact { records: 50 }
        );
    }
}
