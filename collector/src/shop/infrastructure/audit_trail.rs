//! The audit trail as stored: ECS events (`event.dataset: yagura.shop.audit`) appended
//! to the hash-chained `audit_log` table, read back for verification and forwarding.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row as _;
use yagura_shared::Event;

use super::audit_chain::{self, ChainBreak, ChainedRecord};
use super::database::ShopDatabase;
use crate::shop::domain::audit::AuditEvent;

/// The dataset of the shop's audit events.
pub const AUDIT_DATASET: &str = "yagura.shop.audit";
/// What the shop's events name as their service and host.
pub const SHOP_SERVICE: &str = "yagura-shop";

/// The ECS event for an audit record made at `at`.
pub fn ecs_event(audit: &AuditEvent, at: DateTime<Utc>) -> Event {
    let mut event = Event::new(at);
    event.set_str("event.kind", "event");
    event.set_str("event.dataset", AUDIT_DATASET);
    event.set_str("event.module", "shop");
    event.set_str("event.action", audit.action);
    event.set("event.category", json!([audit.category]));
    event.set_str("event.outcome", audit.outcome.as_str());
    event.set_str("service.name", SHOP_SERVICE);
    event.set_str("host.name", SHOP_SERVICE);
    if let Some(reason) = &audit.reason {
        event.set_str("event.reason", reason.clone());
    }
    if let Some(id) = audit.user_id {
        event.set_str("user.id", id.0.to_string());
    }
    if let Some(name) = &audit.user_name {
        event.set_str("user.name", name.clone());
    }
    if let Some(ip) = audit.origin.source_ip {
        event.set_str("source.ip", ip.to_string());
    }
    if let Some(agent) = &audit.origin.user_agent {
        event.set_str("user_agent.original", agent.clone());
    }
    for (key, value) in &audit.details {
        event.set(&format!("yagura.shop.{key}"), value.clone());
    }
    let who = audit.user_name.as_deref().unwrap_or("anonymous");
    let from = audit
        .origin
        .source_ip
        .map_or_else(|| "unknown address".to_string(), |ip| ip.to_string());
    let mut message = format!(
        "shop {} {} for {who} from {from}",
        audit.action,
        audit.outcome.as_str()
    );
    if let Some(reason) = &audit.reason {
        message.push_str(": ");
        message.push_str(reason);
    }
    event.set("message", Value::String(message));
    event
}

pub(super) fn record_from_row(row: &sqlx::any::AnyRow) -> Result<ChainedRecord, sqlx::Error> {
    Ok(ChainedRecord {
        sequence: u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0),
        at: row.try_get("at")?,
        event: row.try_get("event")?,
        previous_hash: row.try_get("previous_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Up to `limit` records after `after`, in order.
pub async fn records_after(
    db: &ShopDatabase,
    after: u64,
    limit: u32,
) -> Result<Vec<ChainedRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sequence, at, event, previous_hash, hash FROM audit_log \
         WHERE sequence > $1 ORDER BY sequence LIMIT $2",
    )
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(record_from_row).collect()
}

/// What a verification of the whole trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record links to the one before and hashes to itself.
    Intact {
        records: u64,
    },
    Broken(ChainBreak),
}

/// Checks the whole trail from its first record, reading it in pages; and that it still
/// reaches as far as what was already handed to the collector (a trail cut short at its
/// end breaks no link, but it no longer covers what the archive holds).
pub async fn verify(db: &ShopDatabase) -> Result<Verification, sqlx::Error> {
    const PAGE: u32 = 5_000;
    let mut last: Option<ChainedRecord> = None;
    loop {
        let after = last.as_ref().map_or(0, |r| r.sequence);
        let page = records_after(db, after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        if let Err(broken) = audit_chain::verify_after(last.as_ref(), &page) {
            return Ok(Verification::Broken(broken));
        }
        last = page.into_iter().last();
    }
    let records = last.map_or(0, |r| r.sequence);
    let forwarded: i64 =
        sqlx::query_scalar("SELECT through_sequence FROM audit_forwarding WHERE id = 1")
            .fetch_optional(&db.pool)
            .await?
            .unwrap_or(0);
    let forwarded = u64::try_from(forwarded).unwrap_or(0);
    if forwarded > records {
        return Ok(Verification::Broken(ChainBreak {
            sequence: records + 1,
            problem: format!(
                "missing: the trail ends at record {records}, but records up to {forwarded} \
                 were already forwarded to the collector"
            ),
        }));
    }
    Ok(Verification::Intact { records })
}
