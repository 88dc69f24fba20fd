//! Allowlist policies assigned to agents by label, and handed to them on ingest.
//!
//! An operator assigns a signed policy to every agent whose enrollment labels include a
//! selector (`yagura allowlist assign FILE --name prod-web --labels
//! env=prod,role=web`); an empty selector is the fleet's default. An agent gets the most specific
//! assignment it matches: the one with the most selector labels, then the first by name,
//! so a host-group policy overrides the default without a priority number to keep right.
//!
//! Ingest asks [`AllowlistDistribution::for_agent`] on every answer, so the assignments
//! are read from the database at most every [`REFRESH`] and kept in memory between: a new
//! assignment reaches an active agent within that time plus one of its requests
//! (heartbeats keep idle agents talking).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::Row as _;
use yagura_shared::policy_delivery::{DeliveredPolicy, MAX_POLICY_BYTES, policy_sha256};

use crate::store::{Labels, Store, StoreError};

/// How long assignments read from the database are used before they are read again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// One policy assigned to the agents that carry every label of `selector`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    pub name: String,
    pub selector: Labels,
    pub policy: String,
    pub signature: String,
    pub sha256: String,
    pub assigned_at: String,
}

impl Assignment {
    fn applies_to(&self, labels: &Labels) -> bool {
        self.selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }

    /// The assignment as the agent receives it.
    pub fn delivery(&self) -> DeliveredPolicy {
        DeliveredPolicy {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            policy: self.policy.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// The assignment an agent with `labels` gets, if any: most selector labels, then name.
pub fn select<'a>(assignments: &'a [Assignment], labels: &Labels) -> Option<&'a Assignment> {
    assignments
        .iter()
        .filter(|a| a.applies_to(labels))
        .min_by(|a, b| {
            b.selector
                .len()
                .cmp(&a.selector.len())
                .then_with(|| a.name.cmp(&b.name))
        })
}

/// Stores or replaces the assignment `name`. The policy must already be checked and
/// signed; its hash is computed here so agents and collector name it the same way.
pub async fn assign(
    store: &Store,
    name: &str,
    selector: &Labels,
    policy: &str,
    signature: &str,
) -> Result<Assignment, StoreError> {
    if name.is_empty() || name.len() > 128 {
        return Err(StoreError::Invalid(
            "an assignment name is 1 to 128 characters".into(),
        ));
    }
    if policy.len() > MAX_POLICY_BYTES {
        return Err(StoreError::Invalid(format!(
            "the policy is {} bytes; at most {MAX_POLICY_BYTES} are handed to agents",
            policy.len()
        )));
    }
    let assignment = Assignment {
        name: name.to_string(),
        selector: selector.clone(),
        policy: policy.to_string(),
        signature: signature.to_string(),
        sha256: policy_sha256(policy),
        assigned_at: Utc::now().to_rfc3339(),
    };
    let selector =
        serde_json::to_string(selector).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO allowlist_assignments (name, selector, policy, signature, sha256, assigned_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET selector = excluded.selector, policy = excluded.policy, \
         signature = excluded.signature, sha256 = excluded.sha256, assigned_at = excluded.assigned_at",
    )
    .bind(&assignment.name)
    .bind(selector)
    .bind(&assignment.policy)
    .bind(&assignment.signature)
    .bind(&assignment.sha256)
    .bind(&assignment.assigned_at)
    .execute(store.pool())
    .await?;
    Ok(assignment)
}

/// Removes the assignment `name`; whether there was one. Agents keep the policy they
/// hold (removing an assignment does not lift a host's protection).
pub async fn unassign(store: &Store, name: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM allowlist_assignments WHERE name = $1")
        .bind(name)
        .execute(store.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every assignment, by name.
pub async fn assignments(store: &Store) -> Result<Vec<Assignment>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, selector, policy, signature, sha256, assigned_at \
         FROM allowlist_assignments ORDER BY name",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let selector: String = row.try_get("selector")?;
            Ok(Assignment {
                name: row.try_get("name")?,
                selector: serde_json::from_str(&selector)
                    .map_err(|e| StoreError::Invalid(format!("assignment selector: {e}")))?,
                policy: row.try_get("policy")?,
                signature: row.try_get("signature")?,
                sha256: row.try_get("sha256")?,
                assigned_at: row.try_get("assigned_at")?,
            })
        })
        .collect()
}

/// Assignments as last read, and when.
type Cached = Option<(Instant, Arc<Vec<Assignment>>)>;

/// The assignments as ingest consults them: from memory, read again every [`REFRESH`].
#[derive(Debug, Clone)]
pub struct AllowlistDistribution {
    store: Store,
    cache: Arc<Mutex<Cached>>,
}

impl AllowlistDistribution {
    pub fn new(store: Store) -> Self {
        AllowlistDistribution {
            store,
            cache: Arc::default(),
        }
    }

    async fn current(&self) -> Result<Arc<Vec<Assignment>>, StoreError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((read_at, assignments)) = cache.as_ref()
            && read_at.elapsed() < REFRESH
        {
            return Ok(Arc::clone(assignments));
        }
        let fresh = Arc::new(assignments(&self.store).await?);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), Arc::clone(&fresh)));
        }
        Ok(fresh)
    }

    /// The policy to hand to an agent with `labels` that holds the policy named `held`
    /// (a SHA-256, or `none`): its assignment, unless that is what it holds. A database
    /// error hands out nothing (the agent asks again with its next request).
    pub async fn for_agent(&self, labels: &Labels, held: &str) -> Option<DeliveredPolicy> {
        let assignments = match self.current().await {
            Ok(assignments) => assignments,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read allowlist assignments");
                return None;
            }
        };
        select(&assignments, labels)
            .filter(|a| !a.sha256.eq_ignore_ascii_case(held))
            .map(Assignment::delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn assignment(name: &str, selector: &[(&str, &str)]) -> Assignment {
        Assignment {
            name: name.into(),
            selector: labels(selector),
            policy: format!("# {name}\n"),
            signature: String::new(),
            sha256: policy_sha256(&format!("# {name}\n")),
            assigned_at: String::new(),
        }
    }

    #[test]
    fn the_most_specific_matching_assignment_wins() {
        let all = vec![
            assignment("default", &[]),
            assignment("prod", &[("env", "prod")]),
            assignment("prod-web", &[("env", "prod"), ("role", "web")]),
            assignment("b-staging", &[("env", "staging")]),
            assignment("a-staging", &[("env", "staging")]),
        ];
        let pick = |l: &[(&str, &str)]| select(&all, &labels(l)).map(|a| a.name.as_str());
        assert_eq!(pick(&[]), Some("default"));
        assert_eq!(pick(&[("env", "prod")]), Some("prod"));
        assert_eq!(pick(&[("env", "prod"), ("role", "web")]), Some("prod-web"));
        assert_eq!(pick(&[("env", "prod"), ("role", "db")]), Some("prod"));
        assert_eq!(pick(&[("env", "staging")]), Some("a-staging"));
        assert_eq!(select(&all[1..2], &labels(&[("env", "dev")])), None);
    }

    #[tokio::test]
    async fn assignments_are_stored_replaced_and_handed_out_only_when_different()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open_sqlite(&dir.path().join("yagura.db")).await?;
        let prod = labels(&[("env", "prod")]);
        let first = assign(&store, "prod", &prod, "[usb]\nmode = \"audit\"\n", "sig1").await?;
        let distribution = AllowlistDistribution::new(store.clone());
        let handed = distribution.for_agent(&prod, "none").await;
        assert_eq!(
            handed.as_ref().map(|d| d.sha256.as_str()),
            Some(first.sha256.as_str())
        );
        assert_eq!(handed.map(|d| d.signature), Some("sig1".to_string()));
        // The agent holds it: nothing to hand.
        assert!(distribution.for_agent(&prod, &first.sha256).await.is_none());
        // Another label set matches nothing.
        assert!(
            distribution
                .for_agent(&Labels::new(), "none")
                .await
                .is_none()
        );

        let second = assign(&store, "prod", &prod, "[usb]\nmode = \"enforce\"\n", "sig2").await?;
        assert_ne!(first.sha256, second.sha256);
        assert_eq!(assignments(&store).await?.len(), 1);
        // Read again after the refresh interval (a fresh distribution here).
        let fresh = AllowlistDistribution::new(store.clone());
        let handed = fresh.for_agent(&prod, &first.sha256).await;
        assert_eq!(handed.map(|d| d.sha256), Some(second.sha256));

        assert!(unassign(&store, "prod").await?);
        assert!(!unassign(&store, "prod").await?);
        assert!(assign(&store, "", &prod, "x", "y").await.is_err());
        let huge = "#".repeat(MAX_POLICY_BYTES + 1);
        assert!(assign(&store, "huge", &prod, &huge, "y").await.is_err());
        store.close().await;
        Ok(())
    }
}
