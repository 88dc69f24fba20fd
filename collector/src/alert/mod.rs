//! Alerting: matches of the live detector become alerts a responder is paged for once
//! per incident, kept up to date, and resolved when the incident ends.
//!
//! The data path: the detector records its matches in the `detections` table and says
//! so on a channel; the [`manager`] reads the new rows in order and, under the policy of
//! their rule (`[alert]` of `collector.toml`, see [`policy`]), opens an alert or adds
//! the match to the open alert of its group — writing the alert change, its history and
//! the notifications it calls for in one transaction with its read position ([`store`]).
//! The [`outbox`] sends those notifications to their destinations ([`sinks`]), retrying
//! with backoff until they are delivered or their retry budget is spent and they are
//! marked failed, visibly. A crash at any instant loses nothing and pages nobody twice:
//! what was not yet taken is taken on restart, what was not yet sent is sent then.

pub mod manager;
pub mod model;
pub mod outbox;
pub mod policy;
pub mod sinks;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Serialize;

pub use model::{Alert, AlertStatus, Notification, NotificationKind};
pub use policy::{AlertConfig, AlertPolicies};
pub use store::{Action, ActionOutcome, AlertFilter, AlertStore};

use crate::store::{Store, StoreError};

/// Live changes held for slow stream subscribers before the oldest are skipped (the
/// console reloads the list when it lags).
const CHANGES_CAPACITY: usize = 1024;
/// Live streams open at once (each holds a connection and a subscription).
pub const MAX_STREAMS: usize = 64;

/// A change to an alert, as the live stream carries it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertChange {
    /// `created`, `updated` (a match joined), `acknowledged`, `resolved`, `suppressed`,
    /// `reopened`, `assigned` or `note`.
    pub change: String,
    pub alert: Alert,
}

/// Counters for operators (and the metrics endpoint).
#[derive(Debug, Default)]
pub struct AlertStats {
    pub matches: AtomicU64,
    pub created: AtomicU64,
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
    pub held: AtomicU64,
}

/// What the API and the alerting tasks share: the alert tables, the live stream of
/// changes and the outbox's wake-up.
#[derive(Clone)]
pub struct AlertService {
    store: AlertStore,
    changes: tokio::sync::broadcast::Sender<Arc<AlertChange>>,
    outbox: Arc<tokio::sync::watch::Sender<u64>>,
    stats: Arc<AlertStats>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertService")
    }
}

impl AlertService {
    pub fn new(store: &Store) -> Self {
        AlertService {
            store: AlertStore::new(store),
            changes: tokio::sync::broadcast::channel(CHANGES_CAPACITY).0,
            outbox: Arc::new(tokio::sync::watch::channel(0).0),
            stats: Arc::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        }
    }

    /// A place for one more live stream, while fewer than [`MAX_STREAMS`] are open; the
    /// stream holds it until it ends.
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.streams).try_acquire_owned().ok()
    }

    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    pub fn stats(&self) -> &AlertStats {
        &self.stats
    }

    /// Every alert change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<AlertChange>> {
        self.changes.subscribe()
    }

    /// Applies a responder's action (recorded with `actor`), publishes the change and
    /// wakes the outbox for the notifications it wrote.
    pub async fn act(
        &self,
        id: &str,
        action: &Action,
        actor: &str,
    ) -> Result<ActionOutcome, StoreError> {
        let outcome = self
            .store
            .act(id, action, actor, chrono::Utc::now())
            .await?;
        if let ActionOutcome::Done(alert) = &outcome {
            self.publish(action.name(), alert.clone());
            self.wake_outbox();
        }
        Ok(outcome)
    }

    pub(crate) fn publish(&self, change: &str, alert: Alert) {
        // No subscriber is not an error.
        let _ = self.changes.send(Arc::new(AlertChange {
            change: change.to_string(),
            alert,
        }));
    }

    pub(crate) fn wake_outbox(&self) {
        self.outbox.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn outbox_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox.subscribe()
    }
}

#[cfg(test)]
mod tests;
