//! The alert manager: recorded detections, in order, into alerts; quiet alerts resolved.
//!
//! It reads the `detections` table after its position (a rowid, moved in the same
//! transaction as the alerts), woken by the detector after each commit and at least once
//! a second. Detections are read only once recorded, so what is paged has been recorded;
//! the detector commits matches within its commit interval (100 ms by default), well
//! inside the one-second budget from log line to pager.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;
use yagura_shared::Event;

use super::AlertService;
use super::model::{AlertRule, Level};
use super::policy::{AlertPolicies, RuleFacts};
use super::store::{Action, ActionOutcome, MatchOutcome, PlannedMatch, SYSTEM_ACTOR};
use crate::store::StoredDetection;

/// Detections taken per transaction.
const BATCH: u32 = 500;
/// How often quiet alerts are looked for, and the longest wait for new detections.
const TICK: Duration = Duration::from_secs(1);
/// Delivered (and skipped) notifications are kept this long, then deleted, once an hour.
const OUTBOX_KEPT: chrono::Duration = chrono::Duration::days(30);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct AlertManager {
    service: AlertService,
    policies: AlertPolicies,
    /// Where the rules are: a rule's runbook is `runbooks/<rule id>.md` beside them.
    rule_dirs: Vec<PathBuf>,
    /// Destinations that take count updates.
    wants_updates: HashSet<String>,
    /// Every configured destination: pending notifications for any other are failed.
    configured: Vec<String>,
}

/// Longest group value kept (event fields are attacker-controlled; receivers limit
/// message sizes).
const MAX_GROUP_VALUE: usize = 256;

/// `value`, cut to [`MAX_GROUP_VALUE`] characters.
fn cap(value: String) -> String {
    if value.chars().count() <= MAX_GROUP_VALUE {
        value
    } else {
        value.chars().take(MAX_GROUP_VALUE).collect()
    }
}

/// A field's value as text (arrays joined with `,`), for grouping and display.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(text_of)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

impl AlertManager {
    pub fn new(
        service: AlertService,
        policies: AlertPolicies,
        rule_dirs: Vec<PathBuf>,
        wants_updates: HashSet<String>,
        configured: Vec<String>,
    ) -> Self {
        AlertManager {
            service,
            policies,
            rule_dirs,
            wants_updates,
            configured,
        }
    }

    fn runbook(&self, rule_id: Option<&str>) -> Option<String> {
        let id = rule_id?;
        // A rule id is a UUID; anything with a path separator is not looked up.
        if id.contains(['/', '\\']) || id.contains("..") {
            return None;
        }
        let name = format!("{id}.md");
        self.rule_dirs.iter().find_map(|dir| {
            let base = if dir.is_file() {
                dir.parent()?
            } else {
                dir.as_path()
            };
            let path = base.join("runbooks").join(&name);
            path.is_file().then(|| format!("runbooks/{name}"))
        })
    }

    /// How a recorded detection becomes part of an alert: its rule, policy, group and
    /// destinations.
    pub fn plan(&self, detection: StoredDetection) -> PlannedMatch {
        let body: Value = serde_json::from_str(&detection.body).unwrap_or(Value::Null);
        let tags: Vec<String> = body["rule"]["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let level = Level::of(detection.level.as_deref());
        let facts = RuleFacts {
            id: detection.rule_id.as_deref(),
            title: &detection.rule_title,
            level,
            tags: &tags,
        };
        let policy = self.policies.policy_for(facts);
        let destinations = self.policies.destinations_for(facts);
        let event = match &body["event"] {
            Value::Object(map) => Some(Event::from_map(map.clone())),
            _ => None,
        };
        let correlation_group: Vec<(String, String)> = body["correlation"]["group"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|pair| Some((pair[0].as_str()?.to_string(), text_of(&pair[1])?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut group: Vec<(String, String)> = Vec::new();
        for field in &policy.by {
            let value = correlation_group
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, v)| v.clone())
                .or_else(|| event.as_ref().and_then(|e| e.get(field)).and_then(text_of));
            if let Some(value) = value {
                group.push((field.clone(), cap(value)));
            }
        }
        for (field, value) in &correlation_group {
            if !group.iter().any(|(f, _)| f == field) {
                group.push((field.clone(), cap(value.clone())));
            }
        }
        let rule_key = detection
            .rule_id
            .clone()
            .unwrap_or_else(|| detection.rule_title.clone());
        // Canonical JSON: a missing field (null) differs from an empty one, and no value
        // can forge a field boundary.
        let by_values: Vec<(&String, Option<&String>)> = policy
            .by
            .iter()
            .map(|field| {
                let value = correlation_group
                    .iter()
                    .chain(group.iter())
                    .find(|(f, _)| f == field)
                    .map(|(_, v)| v);
                (field, value)
            })
            .collect();
        let identity = serde_json::json!([rule_key, policy.name, by_values, correlation_group]);
        let group_key = hex::encode(&sha2::Sha256::digest(identity.to_string().as_bytes())[..16]);
        let host = event
            .as_ref()
            .and_then(|e| e.host_name().map(str::to_string))
            .or_else(|| {
                correlation_group
                    .iter()
                    .find(|(f, _)| f == "host.name")
                    .map(|(_, v)| v.clone())
            });
        let agent_id = event
            .as_ref()
            .and_then(|e| e.agent_id().map(str::to_string));
        let rule = AlertRule {
            id: detection.rule_id.clone(),
            title: detection.rule_title.clone(),
            level: detection.level.clone(),
            runbook: self.runbook(detection.rule_id.as_deref()),
            tags,
        };
        PlannedMatch {
            detection,
            rule,
            policy,
            group_key,
            group,
            host,
            agent_id,
            destinations,
        }
    }

    /// Takes every recorded detection after the position into alerts; returns how many.
    pub async fn take_new(&self, cursor: &mut i64) -> Result<usize, crate::store::StoreError> {
        let store = self.service.store();
        let rows = store.detections_after(*cursor, BATCH).await?;
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            return Ok(0);
        };
        let taken = rows.len();
        let plans: Vec<PlannedMatch> = rows.into_iter().map(|(_, d)| self.plan(d)).collect();
        let outcomes = store
            .take_matches(&plans, last, &self.wants_updates, Utc::now())
            .await?;
        *cursor = last;
        let stats = self.service.stats();
        let mut changed: Vec<(&str, String)> = Vec::new();
        for outcome in outcomes {
            match outcome {
                MatchOutcome::Created(id) => {
                    stats.created.fetch_add(1, Ordering::Relaxed);
                    stats.matches.fetch_add(1, Ordering::Relaxed);
                    changed.push(("created", id));
                }
                MatchOutcome::Joined(id) => {
                    stats.matches.fetch_add(1, Ordering::Relaxed);
                    // One change per alert per batch is enough for the stream.
                    if !changed.iter().any(|(_, c)| *c == id) {
                        changed.push(("updated", id));
                    }
                }
                MatchOutcome::Seen => {}
            }
        }
        self.service.wake_outbox();
        for (change, id) in changed {
            if let Some(alert) = store.alert(&id).await? {
                if change == "created" {
                    tracing::info!(
                        alert = %alert.id,
                        rule = %alert.rule.title,
                        level = alert.rule.level.as_deref().unwrap_or("low"),
                        host = alert.host.as_deref().unwrap_or("-"),
                        "alert opened"
                    );
                }
                self.service.publish(change, alert);
            }
        }
        Ok(taken)
    }

    /// Resolves the alerts whose quiet period has passed, and fails the notifications of
    /// destinations no longer configured.
    pub async fn resolve_quiet(&self) -> Result<usize, crate::store::StoreError> {
        let orphaned = self
            .service
            .store()
            .fail_unconfigured(&self.configured)
            .await?;
        if orphaned > 0 {
            tracing::error!(
                notifications = orphaned,
                "notifications for destinations no longer configured marked failed"
            );
        }
        let due = self.service.store().due_for_resolve(Utc::now()).await?;
        let mut resolved = 0;
        for id in due {
            let action = Action::Resolve {
                reason: Some("no match during the policy's quiet period".into()),
            };
            if let ActionOutcome::Done(alert) = self.service.act(&id, &action, SYSTEM_ACTOR).await?
            {
                tracing::info!(alert = %alert.id, rule = %alert.rule.title, "alert resolved after its quiet period");
                resolved += 1;
            }
        }
        Ok(resolved)
    }

    /// Runs until `cancel`. `committed` ticks after each detector commit (absent or
    /// closed without a detector: the tick alone drives it).
    pub async fn run(
        self,
        mut committed: Option<tokio::sync::watch::Receiver<u64>>,
        cancel: CancellationToken,
    ) {
        let mut cursor = loop {
            match self.service.store().cursor().await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    tracing::error!(%error, "alert manager: reading its position; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(TICK) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        };
        tracing::info!(detection_rowid = cursor, "alert manager running");
        let mut last_sweep = tokio::time::Instant::now();
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                match self
                    .service
                    .store()
                    .prune_outbox(Utc::now() - OUTBOX_KEPT)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(notifications = n, "old delivered notifications deleted")
                    }
                    Err(error) => tracing::error!(%error, "alert manager: outbox not pruned"),
                }
            }
            match self.take_new(&mut cursor).await {
                // A full batch: there may be more at once.
                Ok(n) if n >= BATCH as usize => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "alert manager: detections not taken yet; retrying")
                }
            }
            if last_sweep.elapsed() >= TICK {
                last_sweep = tokio::time::Instant::now();
                if let Err(error) = self.resolve_quiet().await {
                    tracing::error!(%error, "alert manager: quiet alerts not resolved yet; retrying");
                }
            }
            let tick = tokio::time::sleep(TICK.saturating_sub(last_sweep.elapsed()));
            tokio::select! {
                changed = async {
                    match committed.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        // The detector stopped: its channel is gone; the tick goes on.
                        committed = None;
                    }
                }
                _ = tick => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
