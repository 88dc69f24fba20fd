//! Membership and partition assignment from a JetStream key-value bucket: no consensus of
//! our own. JetStream's compare-and-set on a key (create when absent, update at a
//! revision) decides who holds a partition; the bucket's maximum age expires a lease a
//! dead node stopped renewing, so a survivor takes the partition over within one lease.
//!
//! Keys: `member.<role>.<node>` (the node's heartbeat, with where it answers) and
//! `lease.<role>.<partition>` (the node holding the partition). Every member of a role
//! aims at an equal share, `ceil(partitions / members)`: a node that joins finds the
//! others giving partitions back to it at their next renewal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt as _;

/// A node's heartbeat: who it is and where its role answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    /// The node's HTTPS address for fan-out requests (search), if it serves any.
    #[serde(default)]
    pub url: Option<String>,
    /// SHA-256 of that listener's certificate (the api node pins it).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// What changed at a renewal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Now held: start working on these.
    pub acquired: Vec<u32>,
    /// Taken by another node (this node's lease expired): stop at once.
    pub lost: Vec<u32>,
    /// Held beyond this node's share: stop working on these, then [`Leases::release`].
    pub surplus: Vec<u32>,
}

/// Errors of the lease bucket.
#[derive(Debug, thiserror::Error)]
#[error("cluster leases: {0}")]
pub struct LeaseError(String);

fn lease_error(what: &str, error: impl std::fmt::Display) -> LeaseError {
    LeaseError(format!("{what}: {error}"))
}

/// Names a key-value bucket allows in a key token.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One node's membership of one role, and the partitions it holds.
pub struct Leases {
    kv: kv::Store,
    role: String,
    member: Member,
    partitions: u32,
    /// Held partitions and the revision of their lease.
    held: BTreeMap<u32, u64>,
    /// Whether this node's membership has been announced for a renewal already.
    announced: bool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("role", &self.role)
            .field("node", &self.member.node)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// The bucket of a cluster's leases (made when missing). Its maximum age is the lease
/// time: a key not renewed within it disappears.
pub async fn bucket(
    context: &jetstream::Context,
    name: &str,
    lease: Duration,
    replicas: usize,
) -> Result<kv::Store, LeaseError> {
    if let Ok(store) = context.get_key_value(name).await {
        // Every node must expire leases alike, or they keep taking each other's.
        let mut stream = context
            .get_stream(format!("KV_{name}"))
            .await
            .map_err(|e| lease_error(&format!("reading bucket {name}"), e))?;
        let made_with = stream
            .info()
            .await
            .map_err(|e| lease_error(&format!("reading bucket {name}"), e))?
            .config
            .max_age;
        if made_with != lease {
            return Err(LeaseError(format!(
                "bucket {name} expires leases after {made_with:?}, this node is configured \
                 with {lease:?}: give every node of the cluster the same [cluster] \
                 lease_seconds (or delete the bucket while the cluster is stopped)"
            )));
        }
        return Ok(store);
    }
    super::make_bucket(
        context,
        name,
        "yagura cluster membership and partition leases",
        lease,
        replicas,
    )
    .await
    .map_err(LeaseError)
}

impl Leases {
    pub fn new(kv: kv::Store, role: &str, member: Member, partitions: u32) -> Self {
        Leases {
            kv,
            role: role.to_string(),
            member,
            partitions,
            held: BTreeMap::new(),
            announced: false,
        }
    }

    pub fn node(&self) -> &str {
        &self.member.node
    }

    /// The partitions held now.
    pub fn held(&self) -> BTreeSet<u32> {
        self.held.keys().copied().collect()
    }

    fn lease_key(&self, partition: u32) -> String {
        format!("lease.{}.{partition}", self.role)
    }

    /// Renews the heartbeat and the held leases, gives back what exceeds this node's
    /// share and takes free partitions up to it (not at the first call, which announces
    /// the node). Call well within the lease time (a third of it).
    pub async fn renew(&mut self) -> Result<Changes, LeaseError> {
        let heartbeat = serde_json::to_vec(&self.member).map_err(|e| lease_error("member", e))?;
        self.kv
            .put(
                format!("member.{}.{}", self.role, self.member.node),
                heartbeat.into(),
            )
            .await
            .map_err(|e| lease_error("renewing membership", e))?;
        let mut changes = Changes::default();
        let node = self.member.node.clone();
        for (partition, revision) in self.held.clone() {
            match self
                .kv
                .update(self.lease_key(partition), node.clone().into(), revision)
                .await
            {
                Ok(revision) => {
                    self.held.insert(partition, revision);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Perhaps our own earlier renewal landed though its answer was lost.
                    match self.own_revision(partition).await? {
                        Some(revision) => {
                            self.held.insert(partition, revision);
                        }
                        None => {
                            self.held.remove(&partition);
                            changes.lost.push(partition);
                        }
                    }
                }
                Err(e) => return Err(lease_error("renewing a lease", e)),
            }
        }
        if !self.announced {
            // The first renewal only announces this node: nodes started together see
            // each other before anyone takes a share, instead of the first taking every
            // partition and giving half back a renewal later (work done twice).
            self.announced = true;
            return Ok(changes);
        }
        let members = members(&self.kv, &self.role).await?.len().max(1);
        let share = self.partitions.div_ceil(members as u32) as usize;
        if self.held.len() > share {
            changes.surplus = self
                .held
                .keys()
                .rev()
                .take(self.held.len() - share)
                .copied()
                .collect();
        }
        if self.held.len() < share {
            let owners = self.owners().await?;
            for partition in 0..self.partitions {
                if self.held.len() >= share {
                    break;
                }
                if owners.contains_key(&partition) {
                    continue;
                }
                match self
                    .kv
                    .create(self.lease_key(partition), node.clone().into())
                    .await
                {
                    Ok(revision) => {
                        self.held.insert(partition, revision);
                        changes.acquired.push(partition);
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        // Ours after all when an earlier take landed unanswered.
                        if let Some(revision) = self.own_revision(partition).await? {
                            self.held.insert(partition, revision);
                            changes.acquired.push(partition);
                        }
                    }
                    Err(e) => return Err(lease_error("taking a lease", e)),
                }
            }
        }
        Ok(changes)
    }

    /// The revision of `partition`'s lease when this node holds it.
    async fn own_revision(&self, partition: u32) -> Result<Option<u64>, LeaseError> {
        let entry = self
            .kv
            .entry(self.lease_key(partition))
            .await
            .map_err(|e| lease_error("reading a lease", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put && e.value == self.member.node.as_bytes())
            .map(|e| e.revision))
    }

    /// Gives a partition back (after its work stopped): another member may take it now.
    pub async fn release(&mut self, partition: u32) -> Result<(), LeaseError> {
        if let Some(revision) = self.held.remove(&partition) {
            // A lease renewed by someone else since is not ours to delete.
            let _ = self
                .kv
                .delete_expect_revision(self.lease_key(partition), Some(revision))
                .await;
        }
        Ok(())
    }

    /// Gives every partition and the membership back (a clean stop).
    pub async fn leave(&mut self) -> Result<(), LeaseError> {
        for partition in self.held() {
            self.release(partition).await?;
        }
        self.kv
            .delete(format!("member.{}.{}", self.role, self.member.node))
            .await
            .map_err(|e| lease_error("leaving", e))
    }

    /// Every partition's holder now.
    pub async fn owners(&self) -> Result<BTreeMap<u32, String>, LeaseError> {
        owners(&self.kv, &self.role).await
    }
}

/// Every live member of `role`.
pub async fn members(kv: &kv::Store, role: &str) -> Result<Vec<Member>, LeaseError> {
    let prefix = format!("member.{role}.");
    let mut found = Vec::new();
    for key in keys(kv).await? {
        if key.starts_with(&prefix)
            && let Some(entry) = kv
                .entry(key.clone())
                .await
                .map_err(|e| lease_error("reading a member", e))?
            && entry.operation == kv::Operation::Put
            && let Ok(member) = serde_json::from_slice::<Member>(&entry.value)
        {
            found.push(member);
        }
    }
    Ok(found)
}

/// Every leased partition of `role` and its holder.
pub async fn owners(kv: &kv::Store, role: &str) -> Result<BTreeMap<u32, String>, LeaseError> {
    let prefix = format!("lease.{role}.");
    let mut found = BTreeMap::new();
    for key in keys(kv).await? {
        let Some(partition) = key
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(entry) = kv
            .entry(key.clone())
            .await
            .map_err(|e| lease_error("reading a lease", e))?
            && entry.operation == kv::Operation::Put
        {
            found.insert(
                partition,
                String::from_utf8_lossy(&entry.value).into_owned(),
            );
        }
    }
    Ok(found)
}

/// Every key once. The listing follows the bucket while it is read, so a key written
/// meanwhile (another node's heartbeat) comes twice; counted twice, a member would shrink
/// everyone's share and make a node give partitions back for nothing.
async fn keys(kv: &kv::Store) -> Result<BTreeSet<String>, LeaseError> {
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| lease_error("listing keys", e))?;
    let mut found = BTreeSet::new();
    while let Some(key) = keys.next().await {
        found.insert(key.map_err(|e| lease_error("listing keys", e))?);
    }
    Ok(found)
}
