//! Scale-out on NATS JetStream: the roles a collector can take in a cluster and how they
//! divide the work.
//!
//! With `[archive] backend = "jetstream"` the stream is the archive every node shares.
//! Ingest gateways append to it; indexers and detectors are consumer groups over its
//! partitions, each partition held by one member at a time through a lease in a
//! JetStream key-value bucket ([`leases`]); api nodes fan searches out to the indexers
//! holding the partitions. Nothing here is a consensus protocol of our own: JetStream's
//! compare-and-set on keys and its message expiry decide.

pub mod detector;
pub mod directory;
pub mod indexer;
pub mod leases;
pub mod node;
pub mod search;
pub mod testing;

use std::time::Duration;

use serde::Deserialize;

/// `[cluster]` in `collector.toml`: this node's name and the lease timing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (letters, digits, '-', '_'); the host
    /// name when unset.
    #[serde(default)]
    pub node: Option<String>,
    /// A partition whose holder stopped renewing is taken over after this long.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// How long an api node waits for the indexers' answers to one search.
    #[serde(default = "default_search_timeout_seconds")]
    pub search_timeout_seconds: u64,
}

fn default_search_timeout_seconds() -> u64 {
    20
}

fn default_lease_seconds() -> u64 {
    6
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            lease_seconds: default_lease_seconds(),
            search_timeout_seconds: default_search_timeout_seconds(),
        }
    }
}

impl ClusterConfig {
    /// How long an api node waits for one search's answers (at least a second).
    pub fn search_timeout(&self) -> Duration {
        Duration::from_secs(self.search_timeout_seconds.max(1))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(2))
    }

    /// Leases are renewed three times per lease time.
    pub fn renew_every(&self) -> Duration {
        self.lease() / 3
    }

    /// This node's name: configured, or the host name made a valid key token.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "node".into());
            let token: String = host
                .trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if token.is_empty() {
                "node".into()
            } else {
                token
            }
        })
    }

    /// Problems with the values, for `check-config` and the start.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(node) = &self.node
            && !leases::valid_token(node)
        {
            problems.push(format!(
                "node {node:?}: use letters, digits, '-' and '_' only"
            ));
        }
        if self.lease_seconds < 2 {
            problems.push("lease_seconds must be at least 2".into());
        }
        problems
    }
}

/// What a `yagura serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything in one process (the default): on the segment archive the single-node
    /// collector; on the JetStream archive every cluster role at once (gateway, indexer,
    /// detector when rules are configured, api).
    All,
    /// An ingest gateway: verifies agents' batches (keys from the cluster's agent
    /// directory) and appends them to the stream.
    Ingest,
    /// Indexes the partitions it holds and answers searches over them.
    Indexer,
    /// Runs the detection rules: routes the archive partitions it holds (single-event
    /// rules, events to their correlation group's partition) and correlates the groups
    /// of the matched partitions it holds.
    Detector,
    /// Serves the management API, fanning searches out to the indexers.
    Api,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Indexer => "indexer",
            Role::Detector => "detector",
            Role::Api => "api",
        }
    }
}

#[cfg(test)]
mod tests;

/// Opens a JetStream key-value bucket, making it when missing. `max_age` zero keeps
/// values until they are replaced.
///
/// The bucket's stream is made as the key-value convention has it (`KV_<bucket>`,
/// subjects `$KV.<bucket>.>`, one message per key) rather than through
/// `create_key_value`, which first asks for the account's limits in a shape servers
/// before 2.10 do not answer in.
pub(crate) async fn make_bucket(
    context: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream;
    if let Ok(store) = context.get_key_value(name).await {
        return Ok(store);
    }
    let duplicate_window = if max_age.is_zero() {
        Duration::from_secs(120)
    } else {
        max_age.min(Duration::from_secs(120))
    };
    let made = context
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await;
    if let Err(error) = made
        && context.get_key_value(name).await.is_err()
    {
        return Err(format!("making bucket {name}: {error}"));
    }
    context
        .get_key_value(name)
        .await
        .map_err(|e| format!("opening bucket {name}: {e}"))
}
