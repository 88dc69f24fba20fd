//! The fleet: enrolled agents and the keys that sign their batches.
//!
//! Ingest looks up an agent's verifying key on every batch, so keys are cached in memory
//! after the first lookup; the database stays the record. Enrollment goes through the
//! store in one transaction (token use and agent row together).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;
use yagura_shared::VerifyingKey;
use yagura_shared::verifying_key_from_base64;

use crate::store::{AgentRecord, Store, StoreError, TokenRefusal};

/// An agent as ingest needs it: its record and its parsed key.
#[derive(Debug, Clone)]
pub struct KnownAgent {
    pub record: AgentRecord,
    pub key: VerifyingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("enrollment token refused ({0:?})")]
    Refused(TokenRefusal),
    #[error("public key: {0}")]
    BadKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct AgentRegistry {
    store: Store,
    cache: Arc<RwLock<HashMap<Uuid, Arc<KnownAgent>>>>,
}

impl AgentRegistry {
    pub fn new(store: Store) -> Self {
        AgentRegistry {
            store,
            cache: Arc::default(),
        }
    }

    /// The agent and its key, from the cache or the database.
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<KnownAgent>>, StoreError> {
        if let Some(found) = self.cache.read().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(Some(found));
        }
        let Some(record) = self.store.agent(id).await? else {
            return Ok(None);
        };
        let key = verifying_key_from_base64(&record.public_key)
            .map_err(|e| StoreError::Invalid(format!("agent {id} key: {e}")))?;
        let known = Arc::new(KnownAgent { record, key });
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id, Arc::clone(&known));
        }
        Ok(Some(known))
    }

    /// Registers a new agent with `public_key` (base64 Ed25519) against an enrollment token.
    pub async fn enroll(
        &self,
        token: &str,
        public_key: &str,
        hostname: &str,
        version: &str,
    ) -> Result<AgentRecord, EnrollError> {
        verifying_key_from_base64(public_key).map_err(|e| EnrollError::BadKey(e.to_string()))?;
        self.store
            .enroll_agent(token, public_key, hostname, version)
            .await?
            .map_err(EnrollError::Refused)
    }

    pub async fn list(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.store.agents().await
    }
}
