//! The collector's state database (agents, tokens, fleet state), through sqlx.
//!
//! SQLite in the data directory is the embedded default. Queries are written in the
//! common subset of SQLite and PostgreSQL so that a PostgreSQL URL can take its place.
//! Secrets are never stored: tokens are kept as their SHA-256 (they are 256-bit random
//! values, so a fast hash is enough; passwords, later, get Argon2id).

use std::collections::{BTreeMap, HashMap};
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
    /// The cluster's shared agent directory (a JetStream key-value bucket) could not be
    /// read or written.
    #[error("cluster agent directory: {0}")]
    Directory(String),
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

/// Labels (`key=value`) put on an enrollment token and copied to its agents.
pub type Labels = BTreeMap<String, String>;

/// The `kind` of the collector's own signing identity in the agents table.
pub const COLLECTOR_KIND: &str = "collector";
/// `kind` of the shop's audit-trail identity.
pub const SHOP_KIND: &str = "shop";

/// An enrolled agent (or, with `kind == "collector"`, the collector's own identity).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentRecord {
    pub id: Uuid,
    pub public_key: String,
    pub hostname: String,
    pub version: String,
    /// `active` or `revoked`.
    pub status: String,
    pub enrolled_at: String,
    /// `agent` or `collector`.
    pub kind: String,
    pub labels: Labels,
    pub revoked_at: Option<String>,
    /// Keys it signed with before its current one, oldest first.
    pub retired_keys: Vec<RetiredKey>,
}

/// A key an agent rotated away from, and the batches it signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetiredKey {
    pub public_key: String,
    /// It signed the sequence numbers below this one (down to the key before it).
    pub until_sequence: u64,
    pub retired_at: String,
}

/// What an agent key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRotationOutcome {
    Rotated,
    /// The same rotation was recorded before (a retried request).
    AlreadyDone,
    /// The key on record is no longer the one the request moves from.
    KeyChanged,
    /// Not an active agent (unknown, revoked, or one of the collector's own identities).
    NotRotatable,
}

impl AgentRecord {
    /// The public key (base64) that signs batch `sequence`: the retired key whose range
    /// holds it, else the current one.
    pub fn public_key_for(&self, sequence: u64) -> &str {
        self.retired_keys
            .iter()
            .filter(|k| sequence < k.until_sequence)
            .min_by_key(|k| k.until_sequence)
            .map_or(self.public_key.as_str(), |k| k.public_key.as_str())
    }

    pub fn is_active(&self) -> bool {
        self.status == "active"
    }

    /// The collector's own identity: never accepted from the network.
    pub fn is_collector(&self) -> bool {
        self.kind == COLLECTOR_KIND
    }

    /// Whether this identity signs only inside the collector process (the collector's
    /// own events, the shop's audit trail): never accepted from the network, never
    /// revoked, never expected to send heartbeats.
    pub fn is_internal(&self) -> bool {
        self.kind == COLLECTOR_KIND || self.kind == SHOP_KIND
    }
}

/// Fleet state of one agent as persisted by the fleet monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgentState {
    pub agent_id: Uuid,
    pub last_seen_at: String,
    pub last_peer: String,
    pub last_sequence: u64,
    /// `online` or `offline`.
    pub connectivity: String,
    pub agent_version: Option<String>,
    pub uptime_seconds: Option<u64>,
    pub spool_batches: Option<u64>,
    pub spool_bytes: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub heartbeat_at: Option<String>,
}

/// What a revoke found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
    /// The collector's own identity cannot be revoked.
    Refused,
}

/// `SELECT <every agent column> FROM agents <rest>`, as a static string (sqlx refuses
/// dynamic SQL).
macro_rules! select_agents {
    ($rest:literal) => {
        concat!(
            "SELECT id, public_key, hostname, version, status, enrolled_at, kind, labels, \
             revoked_at FROM agents ",
            $rest
        )
    };
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

    /// Creates an enrollment token valid for `ttl` and `uses` enrollments; every agent
    /// enrolled with it gets `labels`.
    pub async fn create_enrollment_token(
        &self,
        ttl: Duration,
        uses: u32,
        labels: &Labels,
    ) -> Result<Secret> {
        let token = new_token("yge_")?;
        let now = Utc::now();
        let labels =
            serde_json::to_string(labels).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at, uses_left, labels) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(token.expose()))
        .bind(now.to_rfc3339())
        .bind((now + ttl).to_rfc3339())
        .bind(i64::from(uses))
        .bind(labels)
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
            "SELECT expires_at, uses_left, labels FROM enrollment_tokens WHERE token_hash = $1",
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
        let labels: String = row.try_get("labels")?;
        let labels = parse_labels(&labels)?;
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
            kind: "agent".into(),
            labels,
            revoked_at: None,
            retired_keys: Vec::new(),
        };
        insert_agent(&mut tx, &agent).await?;
        tx.commit().await?;
        Ok(Ok(agent))
    }

    /// The collector's own signing identity: registered at first start with
    /// `public_key`, found again at every later start. A stored identity whose key differs
    /// from the key file is an error (the key file was replaced or the database swapped).
    pub async fn collector_identity(&self, public_key: &str, version: &str) -> Result<AgentRecord> {
        self.service_identity(COLLECTOR_KIND, "yagura-collector", public_key, version)
            .await
    }

    /// The identity of a service inside the collector process that signs its own
    /// batches (`kind`: `collector`, `shop`), registered at its first start.
    pub async fn service_identity(
        &self,
        kind: &'static str,
        hostname: &str,
        public_key: &str,
        version: &str,
    ) -> Result<AgentRecord> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(select_agents!(
            "WHERE kind = $1 ORDER BY enrolled_at LIMIT 1"
        ))
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let record = agent_from_row(&row)?;
            if record.public_key != public_key {
                return Err(StoreError::Invalid(format!(
                    "the {kind} identity {} in the database has another public key than \
                     its key file",
                    record.id
                )));
            }
            return Ok(record);
        }
        let record = AgentRecord {
            id: Uuid::now_v7(),
            public_key: public_key.to_string(),
            hostname: hostname.to_string(),
            version: version.to_string(),
            status: "active".into(),
            enrolled_at: Utc::now().to_rfc3339(),
            kind: kind.into(),
            labels: Labels::new(),
            revoked_at: None,
            retired_keys: Vec::new(),
        };
        insert_agent(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Marks an agent revoked; its batches are refused from then on.
    pub async fn revoke_agent(&self, id: Uuid) -> Result<RevokeOutcome> {
        let Some(agent) = self.agent(id).await? else {
            return Ok(RevokeOutcome::NotFound);
        };
        if agent.is_internal() {
            return Ok(RevokeOutcome::Refused);
        }
        if !agent.is_active() {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        sqlx::query("UPDATE agents SET status = 'revoked', revoked_at = $1 WHERE id = $2")
            .bind(Utc::now().to_rfc3339())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(RevokeOutcome::Revoked)
    }

    pub async fn agent(&self, id: Uuid) -> Result<Option<AgentRecord>> {
        // One transaction: the current key and the retired ones from the same moment.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(select_agents!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(mut agent) = row.map(|r| agent_from_row(&r)).transpose()? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT agent_id, public_key, until_sequence, retired_at FROM agent_retired_keys \
             WHERE agent_id = $1 ORDER BY until_sequence",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for row in &rows {
            agent.retired_keys.push(retired_key_from_row(row)?.1);
        }
        Ok(Some(agent))
    }

    /// Stores a copy of an agent record kept elsewhere (a cluster's agent directory):
    /// inserted, or replacing the row and the retired keys held for it, in one
    /// transaction. Key-rotation history (`agent_key_rotations`) stays with the node
    /// that rotated.
    pub async fn import_agent(&self, agent: &AgentRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_agent(&mut tx, agent).await?;
        sqlx::query("DELETE FROM agent_retired_keys WHERE agent_id = $1")
            .bind(agent.id.to_string())
            .execute(&mut *tx)
            .await?;
        for key in &agent.retired_keys {
            let until = i64::try_from(key.until_sequence)
                .map_err(|_| StoreError::Invalid(format!("sequence {}", key.until_sequence)))?;
            sqlx::query(
                "INSERT INTO agent_retired_keys (agent_id, public_key, until_sequence, \
                 retired_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(agent.id.to_string())
            .bind(&key.public_key)
            .bind(until)
            .bind(&key.retired_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(select_agents!("ORDER BY enrolled_at"))
            .fetch_all(&self.pool)
            .await?;
        let mut agents = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>>>()?;
        let retired = sqlx::query(
            "SELECT agent_id, public_key, until_sequence, retired_at FROM agent_retired_keys \
             ORDER BY agent_id, until_sequence",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_agent: HashMap<Uuid, Vec<RetiredKey>> = HashMap::new();
        for row in &retired {
            let (id, key) = retired_key_from_row(row)?;
            by_agent.entry(id).or_default().push(key);
        }
        for agent in &mut agents {
            if let Some(keys) = by_agent.remove(&agent.id) {
                agent.retired_keys = keys;
            }
        }
        Ok(agents)
    }

    /// The rotation of agent `id` to the key `to`, if it was done: (the key it moved
    /// from, its first sequence).
    pub async fn key_rotation_to(&self, id: Uuid, to: &str) -> Result<Option<(String, u64)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT from_key, from_sequence FROM agent_key_rotations WHERE agent_id = $1 \
             AND to_key = $2",
        )
        .bind(id.to_string())
        .bind(to)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(from, sequence)| {
            u64::try_from(sequence)
                .map(|s| (from, s))
                .map_err(|_| StoreError::Invalid(format!("rotation sequence {sequence}")))
        })
        .transpose()
    }

    /// Forgets the record of a rotation to `to` (undone: the cluster's directory holds
    /// another change of the agent).
    pub async fn forget_key_rotation(&self, id: Uuid, to: &str) -> Result<()> {
        sqlx::query("DELETE FROM agent_key_rotations WHERE agent_id = $1 AND to_key = $2")
            .bind(id.to_string())
            .bind(to)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an active agent from the key `from` to `to`, which signs from sequence
    /// `from_sequence` on; `from` is kept for the sequences before it. One transaction.
    pub async fn rotate_agent_key(
        &self,
        id: Uuid,
        from: &str,
        to: &str,
        from_sequence: u64,
    ) -> Result<KeyRotationOutcome> {
        let until = i64::try_from(from_sequence)
            .map_err(|_| StoreError::Invalid(format!("sequence {from_sequence}")))?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(select_agents!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(agent) = row.map(|r| agent_from_row(&r)).transpose()? else {
            return Ok(KeyRotationOutcome::NotRotatable);
        };
        if !agent.is_active() || agent.is_internal() {
            return Ok(KeyRotationOutcome::NotRotatable);
        }
        if agent.public_key != from {
            return Ok(KeyRotationOutcome::KeyChanged);
        }
        sqlx::query(
            "INSERT INTO agent_key_rotations (agent_id, from_key, to_key, from_sequence, \
             rotated_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(from)
        .bind(to)
        .bind(until)
        .bind(Utc::now().to_rfc3339())
        .execute(&mut *tx)
        .await?;
        let (latest,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(until_sequence) FROM agent_retired_keys WHERE agent_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        match latest {
            // The ranges must follow one another.
            Some(latest) if until < latest => return Ok(KeyRotationOutcome::KeyChanged),
            // The current key signed nothing (rotated again before any batch): the
            // earlier key keeps its range, the unused one is not kept.
            Some(latest) if until == latest => {}
            _ => {
                sqlx::query(
                    "INSERT INTO agent_retired_keys (agent_id, public_key, until_sequence, \
                     retired_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id.to_string())
                .bind(from)
                .bind(until)
                .bind(Utc::now().to_rfc3339())
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE agents SET public_key = $1 WHERE id = $2")
            .bind(to)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(KeyRotationOutcome::Rotated)
    }

    /// Writes the fleet state of these agents (insert or replace), in one transaction.
    pub async fn save_agent_states(&self, states: &[AgentState]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for s in states {
            sqlx::query(
                "INSERT INTO agent_state (agent_id, last_seen_at, last_peer, last_sequence, \
                 connectivity, agent_version, uptime_seconds, spool_batches, spool_bytes, \
                 lag_bytes, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (agent_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, \
                 last_peer = excluded.last_peer, last_sequence = excluded.last_sequence, \
                 connectivity = excluded.connectivity, agent_version = excluded.agent_version, \
                 uptime_seconds = excluded.uptime_seconds, spool_batches = excluded.spool_batches, \
                 spool_bytes = excluded.spool_bytes, lag_bytes = excluded.lag_bytes, \
                 heartbeat_at = excluded.heartbeat_at",
            )
            .bind(s.agent_id.to_string())
            .bind(&s.last_seen_at)
            .bind(&s.last_peer)
            .bind(to_i64(s.last_sequence))
            .bind(&s.connectivity)
            .bind(&s.agent_version)
            .bind(s.uptime_seconds.map(to_i64))
            .bind(s.spool_batches.map(to_i64))
            .bind(s.spool_bytes.map(to_i64))
            .bind(s.lag_bytes.map(to_i64))
            .bind(&s.heartbeat_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The persisted fleet state of every agent that ever sent a batch.
    pub async fn agent_states(&self) -> Result<Vec<AgentState>> {
        let rows = sqlx::query(
            "SELECT agent_id, last_seen_at, last_peer, last_sequence, connectivity, \
             agent_version, uptime_seconds, spool_batches, spool_bytes, lag_bytes, heartbeat_at \
             FROM agent_state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("agent_id")?;
                let opt = |name: &str| -> Result<Option<u64>> {
                    let v: Option<i64> = row.try_get(name)?;
                    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
                };
                let last_sequence: i64 = row.try_get("last_sequence")?;
                Ok(AgentState {
                    agent_id: Uuid::parse_str(&id)
                        .map_err(|e| StoreError::Invalid(format!("agent id: {e}")))?,
                    last_seen_at: row.try_get("last_seen_at")?,
                    last_peer: row.try_get("last_peer")?,
                    last_sequence: u64::try_from(last_sequence).unwrap_or(0),
                    connectivity: row.try_get("connectivity")?,
                    agent_version: row.try_get("agent_version")?,
                    uptime_seconds: opt("uptime_seconds")?,
                    spool_batches: opt("spool_batches")?,
                    spool_bytes: opt("spool_bytes")?,
                    lag_bytes: opt("lag_bytes")?,
                    heartbeat_at: row.try_get("heartbeat_at")?,
                })
            })
            .collect()
    }

    /// Records `detections` (a match already recorded is left as it is) and, when given,
    /// the live detector's replay point and correlation state there, in one transaction:
    /// after a crash the detector replays from that point and finds the later matches
    /// again, with the same ids. Returns how many matches were new.
    pub async fn commit_detections(
        &self,
        detections: &[StoredDetection],
        state: Option<(u64, &str)>,
    ) -> Result<u64> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0u64;
        for d in detections {
            let done = sqlx::query(
                "INSERT INTO detections (id, rule_id, rule_title, level, kind, event_time, \
                 event_id, archive_offset, body, detected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&d.id)
            .bind(&d.rule_id)
            .bind(&d.rule_title)
            .bind(&d.level)
            .bind(&d.kind)
            .bind(&d.event_time)
            .bind(&d.event_id)
            .bind(to_i64(d.archive_offset))
            .bind(&d.body)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            inserted += done.rows_affected();
        }
        if let Some((archive_offset, snapshot)) = state {
            sqlx::query(
                "INSERT INTO detector_state (id, archive_offset, snapshot, updated_at) \
                 VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
                 archive_offset = excluded.archive_offset, snapshot = excluded.snapshot, \
                 updated_at = excluded.updated_at",
            )
            .bind(to_i64(archive_offset))
            .bind(snapshot)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The live detector's recorded position and correlation state.
    pub async fn detector_state(&self) -> Result<Option<(u64, String)>> {
        let row = sqlx::query("SELECT archive_offset, snapshot FROM detector_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let offset: i64 = row.try_get("archive_offset")?;
            Ok((u64::try_from(offset).unwrap_or(0), row.try_get("snapshot")?))
        })
        .transpose()
    }

    /// The newest `limit` matches, newest first.
    pub async fn detections(&self, limit: u32) -> Result<Vec<StoredDetection>> {
        let rows = sqlx::query(
            "SELECT id, rule_id, rule_title, level, kind, event_time, event_id, \
             archive_offset, body FROM detections ORDER BY detected_at DESC, rowid DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StoredDetection::from_row).collect()
    }

    /// Matches recorded since `since` (RFC 3339, UTC, as stored), per rule (its id, else
    /// its title).
    pub async fn rule_hits(&self, since: &str) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT COALESCE(rule_id, rule_title) AS rule, COUNT(*) AS hits FROM detections \
             WHERE detected_at >= $1 GROUP BY rule",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let hits: i64 = row.try_get("hits")?;
                Ok((row.try_get("rule")?, u64::try_from(hits).unwrap_or(0)))
            })
            .collect()
    }

    /// One rule's matches per hour since `since`: (`YYYY-MM-DDTHH`, count), oldest first,
    /// hours without a match left out.
    pub async fn rule_hits_by_hour(&self, rule: &str, since: &str) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT substr(detected_at, 1, 13) AS hour, COUNT(*) AS hits FROM detections \
             WHERE detected_at >= $1 AND COALESCE(rule_id, rule_title) = $2 \
             GROUP BY hour ORDER BY hour",
        )
        .bind(since)
        .bind(rule)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let hits: i64 = row.try_get("hits")?;
                Ok((row.try_get("hour")?, u64::try_from(hits).unwrap_or(0)))
            })
            .collect()
    }

    /// The connection pool, for the stages that keep their own tables here (alerting).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A detection as stored: the columns searched on, and the whole match as JSON (also
/// how a cluster's detectors hand matches to the api nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredDetection {
    pub id: String,
    pub rule_id: Option<String>,
    pub rule_title: String,
    pub level: Option<String>,
    pub kind: String,
    pub event_time: Option<String>,
    pub event_id: Option<String>,
    pub archive_offset: u64,
    pub body: String,
}

impl StoredDetection {
    /// A row of `detections` (every column of the struct selected by name).
    pub(crate) fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Self> {
        let offset: i64 = row.try_get("archive_offset")?;
        Ok(StoredDetection {
            id: row.try_get("id")?,
            rule_id: row.try_get("rule_id")?,
            rule_title: row.try_get("rule_title")?,
            level: row.try_get("level")?,
            kind: row.try_get("kind")?,
            event_time: row.try_get("event_time")?,
            event_id: row.try_get("event_id")?,
            archive_offset: u64::try_from(offset).unwrap_or(0),
            body: row.try_get("body")?,
        })
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn parse_labels(text: &str) -> Result<Labels> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid(format!("labels: {e}")))
}

async fn insert_agent(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    agent: &AgentRecord,
) -> Result<()> {
    let labels =
        serde_json::to_string(&agent.labels).map_err(|e| StoreError::Invalid(e.to_string()))?;
    // An upsert: a copy from a cluster's agent directory replaces the one held before
    // (enrolled_at and kind never change).
    sqlx::query(
        "INSERT INTO agents (id, public_key, hostname, version, status, enrolled_at, kind, \
         labels, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, \
         hostname = excluded.hostname, version = excluded.version, status = excluded.status, \
         labels = excluded.labels, revoked_at = excluded.revoked_at",
    )
    .bind(agent.id.to_string())
    .bind(&agent.public_key)
    .bind(&agent.hostname)
    .bind(&agent.version)
    .bind(&agent.status)
    .bind(&agent.enrolled_at)
    .bind(&agent.kind)
    .bind(labels)
    .bind(&agent.revoked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn agent_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AgentRecord> {
    let id: String = row.try_get("id")?;
    let labels: String = row.try_get("labels")?;
    Ok(AgentRecord {
        kind: row.try_get("kind")?,
        labels: parse_labels(&labels)?,
        revoked_at: row.try_get("revoked_at")?,
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Invalid(format!("agent id: {e}")))?,
        public_key: row.try_get("public_key")?,
        hostname: row.try_get("hostname")?,
        version: row.try_get("version")?,
        status: row.try_get("status")?,
        enrolled_at: row.try_get("enrolled_at")?,
        retired_keys: Vec::new(),
    })
}

fn retired_key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, RetiredKey)> {
    let id: String = row.try_get("agent_id")?;
    let until: i64 = row.try_get("until_sequence")?;
    Ok((
        Uuid::parse_str(&id).map_err(|e| StoreError::Invalid(format!("agent id: {e}")))?,
        RetiredKey {
            public_key: row.try_get("public_key")?,
            until_sequence: u64::try_from(until)
                .map_err(|_| StoreError::Invalid(format!("retired key until {until}")))?,
            retired_at: row.try_get("retired_at")?,
        },
    ))
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
            .create_enrollment_token(
                Duration::hours(1),
                2,
                &Labels::from([("site".to_string(), "osaka".to_string())]),
            )
            .await
            .expect("token");
        for _ in 0..2 {
            let agent = store
                .enroll_agent(token.expose(), "pk", "host", "0.1.0")
                .await
                .expect("db")
                .expect("enrolled");
            let stored = store.agent(agent.id).await.expect("db").expect("stored");
            assert_eq!(stored.labels.get("site").map(String::as_str), Some("osaka"));
        }
        let third = store
            .enroll_agent(token.expose(), "pk", "host", "0.1.0")
            .await
            .expect("db");
        assert_eq!(third.err(), Some(TokenRefusal::UsedUp));
        let expired = store
            .create_enrollment_token(Duration::seconds(-1), 5, &Labels::new())
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

    #[tokio::test]
    async fn key_rotations_keep_each_key_for_its_sequences() {
        let (_dir, store) = store().await;
        let token = store
            .create_enrollment_token(Duration::hours(1), 1, &Labels::new())
            .await
            .expect("token");
        let agent = store
            .enroll_agent(token.expose(), "k0", "host", "0.1.0")
            .await
            .expect("db")
            .expect("enrolled");
        let rotate = |from: &'static str, to: &'static str, at: u64| {
            let store = store.clone();
            async move {
                store
                    .rotate_agent_key(agent.id, from, to, at)
                    .await
                    .expect("db")
            }
        };
        assert_eq!(rotate("k0", "k1", 10).await, KeyRotationOutcome::Rotated);
        // Rotated again before any batch: k1 signed nothing, k0 keeps 1..10.
        assert_eq!(rotate("k1", "k2", 10).await, KeyRotationOutcome::Rotated);
        assert_eq!(rotate("k2", "k3", 25).await, KeyRotationOutcome::Rotated);
        // From a key no longer current: refused; a range behind the last: refused.
        assert_eq!(rotate("k1", "k9", 30).await, KeyRotationOutcome::KeyChanged);
        assert_eq!(rotate("k3", "k9", 20).await, KeyRotationOutcome::KeyChanged);
        let record = store.agent(agent.id).await.expect("db").expect("agent");
        assert_eq!(record.public_key, "k3");
        for (sequence, key) in [
            (1, "k0"),
            (9, "k0"),
            (10, "k2"),
            (24, "k2"),
            (25, "k3"),
            (99, "k3"),
        ] {
            assert_eq!(record.public_key_for(sequence), key, "sequence {sequence}");
        }
        // Every rotation is on record, also the one whose key signed nothing, so a retry
        // of it is recognised.
        assert_eq!(
            store.key_rotation_to(agent.id, "k2").await.expect("db"),
            Some(("k1".to_string(), 10))
        );
        assert_eq!(
            store.key_rotation_to(agent.id, "k9").await.expect("db"),
            None
        );
        let all = store.agents().await.expect("db");
        assert_eq!(
            all[0].retired_keys, record.retired_keys,
            "agents() loads them too"
        );
    }

    #[tokio::test]
    async fn revoke_and_collector_identity() {
        let (_dir, store) = store().await;
        let token = store
            .create_enrollment_token(Duration::hours(1), 1, &Labels::new())
            .await
            .expect("token");
        let agent = store
            .enroll_agent(token.expose(), "pk", "host", "0.1.0")
            .await
            .expect("db")
            .expect("enrolled");
        assert_eq!(
            store.revoke_agent(agent.id).await.expect("db"),
            RevokeOutcome::Revoked
        );
        let revoked = store.agent(agent.id).await.expect("db").expect("row");
        assert!(!revoked.is_active() && revoked.revoked_at.is_some());
        assert_eq!(
            store.revoke_agent(agent.id).await.expect("db"),
            RevokeOutcome::AlreadyRevoked
        );
        assert_eq!(
            store.revoke_agent(Uuid::now_v7()).await.expect("db"),
            RevokeOutcome::NotFound
        );
        let me = store.collector_identity("ck", "1").await.expect("id");
        assert!(me.is_collector());
        assert_eq!(
            store.collector_identity("ck", "1").await.expect("again").id,
            me.id
        );
        assert!(store.collector_identity("other", "1").await.is_err());
        assert_eq!(
            store.revoke_agent(me.id).await.expect("db"),
            RevokeOutcome::Refused
        );
        let state = AgentState {
            agent_id: agent.id,
            last_seen_at: "2026-11-25T00:00:00Z".into(),
            last_peer: "127.0.0.1".into(),
            last_sequence: 9,
            connectivity: "online".into(),
            lag_bytes: Some(5),
            ..AgentState::default()
        };
        store
            .save_agent_states(std::slice::from_ref(&state))
            .await
            .expect("save");
        store
            .save_agent_states(std::slice::from_ref(&state))
            .await
            .expect("save again");
        assert_eq!(store.agent_states().await.expect("load"), vec![state]);
    }
}
