//! The collector's state database (agents, tokens), through sqlx.
//!
//! SQLite in the data directory is the embedded default. Queries are written in the
//! common subset of SQLite and PostgreSQL so that a PostgreSQL URL can take its place.
//! Secrets are never stored: tokens are kept as their SHA-256 (they are 256-bit random
//! values, so a fast hash is enough; passwords, later, get Argon2id).

use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("random source: {0}")]
    Random(String),
    #[error("stored value is invalid: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An enrolled agent.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub id: Uuid,
    pub public_key: String,
    pub hostname: String,
    pub version: String,
    pub status: String,
    pub enrolled_at: String,
}

impl AgentRecord {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// Why an enrollment token was refused. Deliberately one message to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// A new random token with a recognisable prefix (`ygt_` API, `yge_` enrollment).
fn new_token(prefix: &str) -> Result<Secret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(Secret(format!("{prefix}{}", B64URL.encode(bytes))))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Opens the SQLite database at `path` (created if missing) and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Creates an API token and returns it; only its hash is stored.
    pub async fn create_api_token(&self, name: &str) -> Result<Secret> {
        let token = new_token("ygt_")?;
        sqlx::query("INSERT INTO api_tokens (token_hash, name, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash(token.expose()))
            .bind(name)
            .bind(Utc::now().to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    pub async fn api_token_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The name of the API token, if the presented token is valid.
    pub async fn check_api_token(&self, token: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    /// Creates an enrollment token valid for `ttl` and `uses` enrollments.
    pub async fn create_enrollment_token(&self, ttl: Duration, uses: u32) -> Result<Secret> {
        let token = new_token("yge_")?;
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at, uses_left) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash(token.expose()))
        .bind(now.to_rfc3339())
        .bind((now + ttl).to_rfc3339())
        .bind(i64::from(uses))
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Consumes one use of an enrollment token and registers the agent, in one transaction.
    pub async fn enroll_agent(
        &self,
        token: &str,
        public_key: &str,
        hostname: &str,
        version: &str,
    ) -> Result<std::result::Result<AgentRecord, TokenRefusal>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT expires_at, uses_left FROM enrollment_tokens WHERE token_hash = $1",
        )
        .bind(token_hash(token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let expires: String = row.try_get("expires_at")?;
        let expires = DateTime::parse_from_rfc3339(&expires)
            .map_err(|e| StoreError::Invalid(format!("token expiry: {e}")))?;
        if expires < Utc::now() {
            return Ok(Err(TokenRefusal::Expired));
        }
        let uses_left: i64 = row.try_get("uses_left")?;
        if uses_left <= 0 {
            return Ok(Err(TokenRefusal::UsedUp));
        }
        sqlx::query("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&mut *tx)
            .await?;
        let agent = AgentRecord {
            id: Uuid::now_v7(),
            public_key: public_key.to_string(),
            hostname: hostname.to_string(),
            version: version.to_string(),
            status: "active".into(),
            enrolled_at: Utc::now().to_rfc3339(),
        };
        sqlx::query(
            "INSERT INTO agents (id, public_key, hostname, version, status, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(agent.id.to_string())
        .bind(&agent.public_key)
        .bind(&agent.hostname)
        .bind(&agent.version)
        .bind(&agent.status)
        .bind(&agent.enrolled_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(agent))
    }

    pub async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(
            "SELECT id, public_key, hostname, version, status, enrolled_at FROM agents WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| agent_from_row(&r)).transpose()
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(
            "SELECT id, public_key, hostname, version, status, enrolled_at FROM agents ORDER BY enrolled_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn agent_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AgentRecord> {
    let id: String = row.try_get("id")?;
    Ok(AgentRecord {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Invalid(format!("agent id: {e}")))?,
        public_key: row.try_get("public_key")?,
        hostname: row.try_get("hostname")?,
        version: row.try_get("version")?,
        status: row.try_get("status")?,
        enrolled_at: row.try_get("enrolled_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_sqlite(&dir.path().join("state.db"))
            .await
            .expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn api_tokens_are_stored_hashed() {
        let (dir, store) = store().await;
        let token = store.create_api_token("first-run").await.expect("create");
        assert!(token.expose().starts_with("ygt_"));
        assert_eq!(
            store.check_api_token(token.expose()).await.expect("check"),
            Some("first-run".into())
        );
        assert_eq!(
            store.check_api_token("ygt_wrong").await.expect("check"),
            None
        );
        assert_eq!(format!("{token:?}"), "Secret(***)");
        store.close().await;
        // The plain token appears nowhere in the database files.
        for entry in std::fs::read_dir(dir.path()).expect("ls") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            let needle = token.expose().as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    #[tokio::test]
    async fn enrollment_tokens_are_use_counted_and_expire() {
        let (_dir, store) = store().await;
        let token = store
            .create_enrollment_token(Duration::hours(1), 2)
            .await
            .expect("token");
        for _ in 0..2 {
            let agent = store
                .enroll_agent(token.expose(), "pk", "host", "0.1.0")
                .await
                .expect("db")
                .expect("enrolled");
            assert!(store.agent(agent.id).await.expect("db").is_some());
        }
        let third = store
            .enroll_agent(token.expose(), "pk", "host", "0.1.0")
            .await
            .expect("db");
        assert_eq!(third.err(), Some(TokenRefusal::UsedUp));
        let expired = store
            .create_enrollment_token(Duration::seconds(-1), 5)
            .await
            .expect("token");
        let refused = store
            .enroll_agent(expired.expose(), "pk", "h", "v")
            .await
            .expect("db");
        assert_eq!(refused.err(), Some(TokenRefusal::Expired));
        let unknown = store
            .enroll_agent("yge_nope", "pk", "h", "v")
            .await
            .expect("db");
        assert_eq!(unknown.err(), Some(TokenRefusal::Unknown));
        assert_eq!(store.agents().await.expect("db").len(), 2);
    }
}
