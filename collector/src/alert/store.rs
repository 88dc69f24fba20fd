//! Alerts, their history and the outbox in the collector's database.
//!
//! Every change that calls for a notification writes it in the same transaction, and the
//! alert manager's read position in the detections table moves in the transaction that
//! took those detections: a crash at any instant neither loses a match nor counts one
//! twice, and a notification exists exactly when its alert change does.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::model::{
    Alert, AlertRule, AlertSample, AlertStatus, HeldNotification, HistoryEntry, Notification,
    NotificationKind, Summary,
};
use crate::store::{Store, StoreError, StoredDetection};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Matches kept per alert as samples in the alert's detail.
pub const SAMPLES: u32 = 20;
/// The collector itself, in an alert's history.
pub const SYSTEM_ACTOR: &str = "yagura";

/// A time as stored: RFC 3339, milliseconds, UTC (so text order is time order).
pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn invalid(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("{what}: {e}"))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn seconds(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A detection as the alert manager decided to take it.
#[derive(Debug, Clone)]
pub struct PlannedMatch {
    pub detection: StoredDetection,
    pub rule: AlertRule,
    pub policy: super::policy::Policy,
    pub group_key: String,
    pub group: Vec<(String, String)>,
    pub host: Option<String>,
    pub agent_id: Option<String>,
    /// Where a new alert of this match goes.
    pub destinations: Vec<String>,
}

/// What taking a match did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    Created(String),
    Joined(String),
    /// Taken before (a replay).
    Seen,
}

/// An analyst's (or the collector's) action on an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Resolve { reason: Option<String> },
    Suppress,
    Reopen,
    Assign(Option<String>),
    Note(String),
}

impl Action {
    /// What the action is called in an alert's history and on the live stream.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledged",
            Action::Resolve { .. } => "resolved",
            Action::Suppress => "suppressed",
            Action::Reopen => "reopened",
            Action::Assign(_) => "assigned",
            Action::Note(_) => "note",
        }
    }
}

/// What an action found.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    Done(Alert),
    /// Nothing to do (e.g. resolving a resolved alert); the alert as it is.
    Unchanged(Alert),
    NotFound,
}

/// Filters of the alert list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub rule: Option<String>,
    pub limit: u32,
}

#[derive(Clone)]
pub struct AlertStore {
    pool: SqlitePool,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertStore")
    }
}

/// The condition (on outbox row `o`) that nothing sent before it for the same alert and
/// destination is still unsent: no earlier pending row other than a count update, and no
/// pending rate-limit summary carrying one of them. So a resolve never overtakes its page.
macro_rules! not_blocked {
    () => {
        "NOT EXISTS (SELECT 1 FROM alert_outbox p WHERE p.destination = o.destination \
         AND p.alert_id = o.alert_id AND p.status = 'pending' AND p.kind != 'update' \
         AND p.id < o.id) AND NOT EXISTS (SELECT 1 FROM alert_outbox h JOIN alert_outbox s \
         ON s.id = h.summary_id WHERE h.destination = o.destination AND h.alert_id = o.alert_id \
         AND h.status = 'summarized' AND s.status = 'pending')"
    };
}

/// The columns of [`Alert`], as a literal (sqlx takes static SQL only).
macro_rules! alert_columns {
    () => {
        "id, rule_id, rule_title, level, tags, runbook, policy, group_key, group_fields, \
         status, first_seen, last_seen, event_count, host, agent_id, assignee, destinations, \
         created_at, updated_at, resolved_at"
    };
}

fn alert_from_row(row: &SqliteRow) -> Result<Alert> {
    let tags: String = row.try_get("tags")?;
    let group: String = row.try_get("group_fields")?;
    let destinations: String = row.try_get("destinations")?;
    let status: String = row.try_get("status")?;
    let count: i64 = row.try_get("event_count")?;
    Ok(Alert {
        id: row.try_get("id")?,
        rule: AlertRule {
            id: row.try_get("rule_id")?,
            title: row.try_get("rule_title")?,
            level: row.try_get("level")?,
            tags: serde_json::from_str(&tags).map_err(|e| invalid("alert tags", e))?,
            runbook: row.try_get("runbook")?,
        },
        policy: row.try_get("policy")?,
        group_key: row.try_get("group_key")?,
        group: serde_json::from_str(&group).map_err(|e| invalid("alert group", e))?,
        status: AlertStatus::parse(&status).ok_or_else(|| invalid("alert status", &status))?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        event_count: u64::try_from(count).unwrap_or(0),
        host: row.try_get("host")?,
        agent_id: row.try_get("agent_id")?,
        assignee: row.try_get("assignee")?,
        destinations: serde_json::from_str(&destinations)
            .map_err(|e| invalid("alert destinations", e))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

fn notification_from_row(row: &SqliteRow) -> Result<Notification> {
    let kind: String = row.try_get("kind")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Notification {
        id: row.try_get("id")?,
        alert_id: row.try_get("alert_id")?,
        destination: row.try_get("destination")?,
        kind: NotificationKind::parse(&kind).ok_or_else(|| invalid("notification kind", &kind))?,
        status: row.try_get("status")?,
        attempts: u64::try_from(attempts).unwrap_or(0),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

async fn alert_in(conn: &mut SqliteConnection, id: &str) -> Result<Option<Alert>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        alert_columns!(),
        " FROM alerts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(alert_from_row).transpose()
}

async fn add_history(
    conn: &mut SqliteConnection,
    alert_id: &str,
    at: &str,
    actor: &str,
    action: &str,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO alert_history (alert_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(alert_id)
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

async fn enqueue(
    conn: &mut SqliteConnection,
    alert_id: &str,
    destination: &str,
    kind: NotificationKind,
    at: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO alert_outbox (alert_id, destination, kind, status, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, $5)",
    )
    .bind(alert_id)
    .bind(destination)
    .bind(kind.as_str())
    .bind(at)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pending count updates of an alert are pointless once it is resolved, and unwanted
/// once it is suppressed; `why` says which.
async fn skip_pending_updates(
    conn: &mut SqliteConnection,
    alert_id: &str,
    why: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE alert_outbox SET status = 'skipped', last_error = $2 \
         WHERE alert_id = $1 AND kind = 'update' AND status = 'pending'",
    )
    .bind(alert_id)
    .bind(why)
    .execute(conn)
    .await?;
    Ok(())
}

impl AlertStore {
    pub fn new(store: &Store) -> Self {
        AlertStore {
            pool: store.pool().clone(),
        }
    }

    /// A transaction that reads, then writes: `BEGIN IMMEDIATE` takes the write lock
    /// first (waiting for it under the busy timeout), where a deferred one would fail at
    /// once with "database is locked" if another writer committed after its first read.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The rowid of the last detection taken into alerts; on the very first start the
    /// newest one (alerts look forward, as rules do).
    pub async fn cursor(&self) -> Result<i64> {
        let row = sqlx::query("SELECT detection_rowid FROM alert_cursor WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(row.try_get("detection_rowid")?);
        }
        let newest: i64 = sqlx::query("SELECT COALESCE(MAX(rowid), 0) AS n FROM detections")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        sqlx::query("INSERT INTO alert_cursor (id, detection_rowid) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(newest)
            .execute(&self.pool)
            .await?;
        Ok(newest)
    }

    /// Recorded detections after `rowid`, oldest first.
    pub async fn detections_after(
        &self,
        rowid: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredDetection)>> {
        let rows = sqlx::query(
            "SELECT rowid AS seq, id, rule_id, rule_title, level, kind, event_time, event_id, \
             archive_offset, body FROM detections WHERE rowid > $1 ORDER BY rowid LIMIT $2",
        )
        .bind(rowid)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, StoredDetection::from_row(row)?)))
            .collect()
    }

    /// Takes `matches` into alerts and moves the read position to `cursor`, in one
    /// transaction. A match joins the newest alert of its group that is not resolved and
    /// still within its policy's `for`; otherwise it opens a new alert with a trigger
    /// for each of its destinations. Joining schedules one count update per destination
    /// in `wants_updates`, sent after the policy's update interval (later matches ride
    /// on it), unless the alert is suppressed.
    pub async fn take_matches(
        &self,
        matches: &[PlannedMatch],
        cursor: i64,
        wants_updates: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MatchOutcome>> {
        let at = stamp(now);
        let mut tx = self.write().await?;
        let mut outcomes = Vec::with_capacity(matches.len());
        for m in matches {
            let d = &m.detection;
            let seen = sqlx::query("SELECT 1 AS x FROM alert_matches WHERE detection_id = $1")
                .bind(&d.id)
                .fetch_optional(&mut *tx)
                .await?;
            if seen.is_some() {
                outcomes.push(MatchOutcome::Seen);
                continue;
            }
            let event_time = d.event_time.clone().unwrap_or_else(|| at.clone());
            let resolve_at = m.policy.resolve_after.map(|q| stamp(now + seconds(q)));
            let open = sqlx::query(
                "SELECT id, status, destinations, update_interval_seconds, event_count FROM alerts \
                 WHERE group_key = $1 AND status != 'resolved' AND suppress_until > $2 \
                 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(&m.group_key)
            .bind(&at)
            .fetch_optional(&mut *tx)
            .await?;
            let (alert_id, count) = match open {
                Some(row) => {
                    let id: String = row.try_get("id")?;
                    let status: String = row.try_get("status")?;
                    let destinations: String = row.try_get("destinations")?;
                    let interval: i64 = row.try_get("update_interval_seconds")?;
                    let count: i64 = row.try_get("event_count")?;
                    sqlx::query(
                        "UPDATE alerts SET event_count = event_count + 1, \
                         last_seen = CASE WHEN last_seen < $2 THEN $2 ELSE last_seen END, \
                         first_seen = CASE WHEN first_seen > $2 THEN $2 ELSE first_seen END, \
                         last_match_at = $3, resolve_at = $4, updated_at = $3 WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(&event_time)
                    .bind(&at)
                    .bind(&resolve_at)
                    .execute(&mut *tx)
                    .await?;
                    if status != AlertStatus::Suppressed.as_str() {
                        let destinations: Vec<String> = serde_json::from_str(&destinations)
                            .map_err(|e| invalid("alert destinations", e))?;
                        let send_at = stamp(now + chrono::Duration::seconds(interval.max(1)));
                        for destination in
                            destinations.iter().filter(|d| wants_updates.contains(*d))
                        {
                            let pending = sqlx::query(
                                "SELECT 1 AS x FROM alert_outbox WHERE alert_id = $1 AND \
                                 destination = $2 AND kind = 'update' AND status = 'pending'",
                            )
                            .bind(&id)
                            .bind(destination)
                            .fetch_optional(&mut *tx)
                            .await?;
                            if pending.is_none() {
                                enqueue(
                                    &mut tx,
                                    &id,
                                    destination,
                                    NotificationKind::Update,
                                    &send_at,
                                )
                                .await?;
                            }
                        }
                    }
                    outcomes.push(MatchOutcome::Joined(id.clone()));
                    (id, count.saturating_add(1))
                }
                None => {
                    let id = alert_id(&m.group_key, &d.id);
                    let suppress_until = stamp(now + seconds(m.policy.suppress_for));
                    sqlx::query(
                        "INSERT INTO alerts (id, rule_id, rule_title, level, tags, runbook, policy, \
                         group_key, group_fields, status, first_seen, last_seen, last_match_at, \
                         resolve_at, resolve_after_seconds, suppress_until, \
                         update_interval_seconds, event_count, host, agent_id, destinations, \
                         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         'open', $10, $10, $11, $12, $13, $14, $15, 1, $16, $17, $18, $11, $11)",
                    )
                    .bind(&id)
                    .bind(&m.rule.id)
                    .bind(&m.rule.title)
                    .bind(&m.rule.level)
                    .bind(serde_json::to_string(&m.rule.tags).map_err(|e| invalid("tags", e))?)
                    .bind(&m.rule.runbook)
                    .bind(&m.policy.name)
                    .bind(&m.group_key)
                    .bind(serde_json::to_string(&m.group).map_err(|e| invalid("group", e))?)
                    .bind(&event_time)
                    .bind(&at)
                    .bind(&resolve_at)
                    .bind(m.policy.resolve_after.map(|d| to_i64(d.as_secs())))
                    .bind(&suppress_until)
                    .bind(to_i64(m.policy.update_interval.as_secs()))
                    .bind(&m.host)
                    .bind(&m.agent_id)
                    .bind(
                        serde_json::to_string(&m.destinations)
                            .map_err(|e| invalid("destinations", e))?,
                    )
                    .execute(&mut *tx)
                    .await?;
                    add_history(
                        &mut tx,
                        &id,
                        &at,
                        SYSTEM_ACTOR,
                        "created",
                        Some(&format!("policy {}, first match {}", m.policy.name, d.id)),
                    )
                    .await?;
                    for destination in &m.destinations {
                        enqueue(&mut tx, &id, destination, NotificationKind::Trigger, &at).await?;
                    }
                    outcomes.push(MatchOutcome::Created(id.clone()));
                    (id, 1)
                }
            };
            // The first matches are kept as samples (with their provenance); the rest are
            // counted. (Replays are excluded by the read position, which moves in this
            // transaction; the check above covers the samples.)
            if count > i64::from(SAMPLES) {
                continue;
            }
            sqlx::query(
                "INSERT INTO alert_matches (detection_id, alert_id, event_id, archive_offset, \
                 event_time) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&d.id)
            .bind(&alert_id)
            .bind(&d.event_id)
            .bind(to_i64(d.archive_offset))
            .bind(&d.event_time)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO alert_cursor (id, detection_rowid) VALUES (1, $1) ON CONFLICT (id) \
             DO UPDATE SET detection_rowid = excluded.detection_rowid",
        )
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Alerts whose quiet period has passed.
    pub async fn due_for_resolve(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM alerts WHERE resolve_at IS NOT NULL AND resolve_at <= $1 \
             AND status != 'resolved' ORDER BY resolve_at LIMIT 500",
        )
        .bind(stamp(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Applies `action` by `actor`, with its history entry and the notifications it
    /// calls for, in one transaction.
    pub async fn act(
        &self,
        id: &str,
        action: &Action,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<ActionOutcome> {
        let at = stamp(now);
        let mut tx = self.write().await?;
        let Some(alert) = alert_in(&mut tx, id).await? else {
            return Ok(ActionOutcome::NotFound);
        };
        let status = alert.status;
        let (new_status, notify, detail): (
            Option<AlertStatus>,
            Option<NotificationKind>,
            Option<String>,
        ) = match action {
            Action::Acknowledge if status == AlertStatus::Open => (
                Some(AlertStatus::Acknowledged),
                Some(NotificationKind::Acknowledge),
                None,
            ),
            Action::Resolve { reason } if status.is_active() => (
                Some(AlertStatus::Resolved),
                Some(NotificationKind::Resolve),
                reason.clone(),
            ),
            Action::Suppress if status.is_active() && status != AlertStatus::Suppressed => {
                (Some(AlertStatus::Suppressed), None, None)
            }
            Action::Reopen if status != AlertStatus::Open && status != AlertStatus::Resolved => {
                (Some(AlertStatus::Open), None, None)
            }
            Action::Assign(who) if alert.assignee != *who => (None, None, who.clone()),
            Action::Note(text) => (None, None, Some(text.clone())),
            _ => return Ok(ActionOutcome::Unchanged(alert)),
        };
        let history = action.name();
        if let Some(new_status) = new_status {
            let resolved_at = (new_status == AlertStatus::Resolved).then(|| at.clone());
            sqlx::query(
                "UPDATE alerts SET status = $2, updated_at = $3, resolved_at = $4, \
                 resolve_at = CASE WHEN $2 = 'resolved' THEN NULL ELSE resolve_at END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(new_status.as_str())
            .bind(&at)
            .bind(&resolved_at)
            .execute(&mut *tx)
            .await?;
        }
        if let Action::Assign(who) = action {
            sqlx::query("UPDATE alerts SET assignee = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(who)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
        } else if matches!(action, Action::Note(_)) {
            sqlx::query("UPDATE alerts SET updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
        }
        add_history(&mut tx, id, &at, actor, history, detail.as_deref()).await?;
        if matches!(action, Action::Suppress) {
            sqlx::query(
                "UPDATE alert_outbox SET status = 'skipped', last_error = 'the alert was \
                 suppressed' WHERE alert_id = $1 AND status = 'pending' \
                 AND kind IN ('trigger', 'update', 'acknowledge')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(kind) = notify {
            if kind == NotificationKind::Resolve {
                skip_pending_updates(&mut tx, id, "superseded by the resolve").await?;
            }
            // A suppressed alert's receivers heard of it being paged, so they hear of
            // its end too; nothing else is sent for it.
            if status != AlertStatus::Suppressed || kind == NotificationKind::Resolve {
                for destination in &alert.destinations {
                    enqueue(&mut tx, id, destination, kind, &at).await?;
                }
            }
        }
        let alert = alert_in(&mut tx, id)
            .await?
            .ok_or_else(|| invalid("alert", "vanished in its own transaction"))?;
        tx.commit().await?;
        Ok(ActionOutcome::Done(alert))
    }

    pub async fn alert(&self, id: &str) -> Result<Option<Alert>> {
        let mut conn = self.pool.acquire().await?;
        alert_in(&mut conn, id).await
    }

    /// Alerts, most recently changed first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE ($1 IS NULL OR status = $1) AND \
             ($2 IS NULL OR rule_id = $2 OR rule_title = $2) \
             ORDER BY updated_at DESC, id LIMIT $3"
        ))
        .bind(filter.status.map(AlertStatus::as_str))
        .bind(&filter.rule)
        .bind(i64::from(filter.limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, detail FROM alert_history WHERE alert_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// The first matches of an alert.
    pub async fn samples(&self, id: &str) -> Result<Vec<AlertSample>> {
        let rows = sqlx::query(
            "SELECT detection_id, event_id, event_time, archive_offset FROM alert_matches \
             WHERE alert_id = $1 ORDER BY rowid LIMIT $2",
        )
        .bind(id)
        .bind(i64::from(SAMPLES))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let offset: i64 = r.try_get("archive_offset")?;
                Ok(AlertSample {
                    detection_id: r.try_get("detection_id")?,
                    event_id: r.try_get("event_id")?,
                    event_time: r.try_get("event_time")?,
                    archive_offset: u64::try_from(offset).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Notifications of `destination` due at `now`, oldest first; one waiting behind an
    /// earlier unsent one of the same alert (other than a count update) is not due, so a
    /// resolve never overtakes its trigger.
    pub async fn due(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        let rows = sqlx::query(concat!(
            "SELECT * FROM alert_outbox o WHERE o.destination = $1 AND o.status = 'pending' \
             AND o.next_attempt_at <= $2 AND ",
            not_blocked!(),
            " ORDER BY o.id LIMIT $3"
        ))
        .bind(destination)
        .bind(stamp(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// When the next notification of `destination` falls due, if any is pending (and not
    /// waiting behind another).
    pub async fn next_due(&self, destination: &str) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(concat!(
            "SELECT MIN(o.next_attempt_at) AS at FROM alert_outbox o WHERE o.destination = $1 \
             AND o.status = 'pending' AND ",
            not_blocked!()
        ))
        .bind(destination)
        .fetch_one(&self.pool)
        .await?;
        let at: Option<String> = row.try_get("at")?;
        Ok(at
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc)))
    }

    /// Whether `destination` heard of `alert_id` — its page was sent, or listed in a
    /// rate-limit summary (an acknowledge, update or resolve is pointless to a receiver
    /// that never did: its page failed or was never due).
    pub async fn was_triggered(&self, alert_id: &str, destination: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS x FROM alert_outbox WHERE alert_id = $1 AND destination = $2 \
             AND kind = 'trigger' AND status IN ('sent', 'summarized')",
        )
        .bind(alert_id)
        .bind(destination)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub async fn mark_sent(&self, id: i64, attempts: u64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE alert_outbox SET status = 'sent', attempts = $2, sent_at = $3, \
             last_error = NULL WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(to_i64(attempts))
        .bind(stamp(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_retry(
        &self,
        id: i64,
        attempts: u64,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alert_outbox SET attempts = $2, next_attempt_at = $3, last_error = $4 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(to_i64(attempts))
        .bind(stamp(next))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a notification unsent: `failed` (the receiver refused it, or the retry budget
    /// is spent) or `skipped` (pointless now).
    pub async fn mark_unsent(
        &self,
        id: i64,
        status: &str,
        attempts: u64,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alert_outbox SET status = $2, attempts = $3, last_error = $4 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(to_i64(attempts))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Holds notification `id` back under the rate limit: it is marked `summarized` and
    /// added to the destination's pending summary (made, due at `send_at`, if there is
    /// none), in one transaction.
    pub async fn hold_in_summary(
        &self,
        id: i64,
        destination: &str,
        held: HeldNotification,
        send_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let at = stamp(now);
        let mut tx = self.write().await?;
        let pending = sqlx::query(
            "SELECT id, detail FROM alert_outbox WHERE destination = $1 AND kind = 'summary' \
             AND status = 'pending' AND attempts = 0 AND alert_id IS NULL ORDER BY id LIMIT 1",
        )
        .bind(destination)
        .fetch_optional(&mut *tx)
        .await?;
        let summary_id = match pending {
            Some(row) => {
                let summary_id: i64 = row.try_get("id")?;
                let detail: Option<String> = row.try_get("detail")?;
                let mut summary: Summary = detail
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| invalid("summary", e))?
                    .unwrap_or_default();
                summary.held.push(held);
                sqlx::query("UPDATE alert_outbox SET detail = $2 WHERE id = $1")
                    .bind(summary_id)
                    .bind(serde_json::to_string(&summary).map_err(|e| invalid("summary", e))?)
                    .execute(&mut *tx)
                    .await?;
                summary_id
            }
            None => {
                let summary = Summary { held: vec![held] };
                let row = sqlx::query(
                    "INSERT INTO alert_outbox (alert_id, destination, kind, status, attempts, \
                     next_attempt_at, detail, created_at) VALUES (NULL, $1, 'summary', \
                     'pending', 0, $2, $3, $4) RETURNING id",
                )
                .bind(destination)
                .bind(stamp(send_at))
                .bind(serde_json::to_string(&summary).map_err(|e| invalid("summary", e))?)
                .bind(&at)
                .fetch_one(&mut *tx)
                .await?;
                row.try_get("id")?
            }
        };
        sqlx::query(
            "UPDATE alert_outbox SET status = 'summarized', last_error = $2, summary_id = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(format!("rate limit: in summary {summary_id}"))
        .bind(summary_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the pending notifications of destinations no longer configured as `failed`
    /// (nothing would ever send them); returns how many.
    pub async fn fail_unconfigured(&self, configured: &[String]) -> Result<u64> {
        let names = serde_json::to_string(configured).map_err(|e| invalid("destinations", e))?;
        let done = sqlx::query(
            "UPDATE alert_outbox SET status = 'failed', last_error = 'destination no longer \
             configured' WHERE status = 'pending' AND destination NOT IN \
             (SELECT value FROM json_each($1))",
        )
        .bind(names)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes notifications that were delivered, summarized or skipped before `before`
    /// (failed ones stay until someone deals with the alert's history); returns how many.
    pub async fn prune_outbox(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM alert_outbox WHERE status IN ('sent', 'summarized', 'skipped') \
             AND created_at < $1",
        )
        .bind(stamp(before))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The status of a notification (to check it is still to be sent just before sending).
    pub async fn notification_status(&self, id: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT status FROM alert_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("status")).transpose()?)
    }

    /// The outbox, newest first, optionally of one status.
    pub async fn outbox(&self, status: Option<&str>, limit: u32) -> Result<Vec<Notification>> {
        let limit = i64::from(limit.max(1));
        let rows = match status {
            Some(status) => {
                sqlx::query(
                    "SELECT * FROM alert_outbox WHERE status = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(status)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM alert_outbox ORDER BY id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(notification_from_row).collect()
    }

    /// The notifications of one alert, oldest first.
    pub async fn notifications_of(&self, alert_id: &str) -> Result<Vec<Notification>> {
        let rows =
            sqlx::query("SELECT * FROM alert_outbox WHERE alert_id = $1 ORDER BY id LIMIT 1000")
                .bind(alert_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Notifications by status.
    pub async fn outbox_counts(&self) -> Result<Vec<(String, u64)>> {
        self.counts(
            "SELECT status, COUNT(*) AS n FROM alert_outbox GROUP BY status ORDER BY status",
        )
        .await
    }

    /// Alerts by status.
    pub async fn alert_counts(&self) -> Result<Vec<(String, u64)>> {
        self.counts("SELECT status, COUNT(*) AS n FROM alerts GROUP BY status ORDER BY status")
            .await
    }

    async fn counts(&self, sql: &'static str) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("status")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

/// Deterministic: the same group and first match give the same alert id.
pub fn alert_id(group_key: &str, first_detection: &str) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(group_key.as_bytes());
    hash.update([0]);
    hash.update(first_detection.as_bytes());
    hex::encode(&hash.finalize()[..16])
}
