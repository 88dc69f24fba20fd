//! Hands the audit trail to the collector's ingest path: records are sealed into batches
//! signed with the shop's own key (`shop.key`, registered as `kind = "shop"`) and
//! appended to the archive, where they are indexed, searched and detected on like any
//! agent's events.
//!
//! Exactly once across crashes: before appending batch *n* the forwarder records "batch
//! *n* will hold records up to *s*" (`pending_*` in `audit_forwarding`); after, it
//! advances `through_sequence`. At start, a pending batch the archive already holds is
//! taken as done, one it does not hold is sent again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use yagura_shared::{AgentKey, Event, SignedBatch};

use super::audit_trail;
use super::sql_repository::SqlShopRepository;
use crate::archive::{Appended, Archive};

/// Most records in one batch.
const BATCH_RECORDS: u32 = 1_000;
/// Longest wait between looks at the trail (wakeups come sooner on every commit).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Forwards records until `cancel`, then forwards what is committed once more.
pub async fn run<A: Archive>(
    repo: SqlShopRepository,
    key: AgentKey,
    agent: Uuid,
    archive: Arc<A>,
    cancel: CancellationToken,
) {
    let mut appended = repo.appended();
    let mut failures = 0u32;
    loop {
        let closing = cancel.is_cancelled();
        match forward_once(&repo, &key, agent, archive.as_ref()).await {
            Ok(0) => {
                failures = 0;
                if closing {
                    return;
                }
                tokio::select! {
                    _ = appended.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::error!(%error, "shop audit records not forwarded yet; retrying");
                if closing && failures > 3 {
                    return;
                }
                let backoff = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }
}

/// Forwards one batch; returns how many records it held.
pub async fn forward_once<A: Archive>(
    repo: &SqlShopRepository,
    key: &AgentKey,
    agent: Uuid,
    archive: &A,
) -> Result<usize, String> {
    let db = repo.database();
    let err = |e: sqlx::Error| e.to_string();
    let row = sqlx::query(
        "SELECT through_sequence, pending_batch, pending_through FROM audit_forwarding \
         WHERE id = 1",
    )
    .fetch_one(&db.pool)
    .await
    .map_err(err)?;
    let mut through: i64 = row.try_get("through_sequence").map_err(err)?;
    let pending_batch: Option<i64> = row.try_get("pending_batch").map_err(err)?;
    let pending_through: Option<i64> = row.try_get("pending_through").map_err(err)?;
    let last_sequence = archive.last_sequence(agent).unwrap_or(0);
    if let (Some(batch), Some(upto)) = (pending_batch, pending_through) {
        let landed = u64::try_from(batch).is_ok_and(|b| last_sequence >= b);
        if landed {
            through = upto;
        }
        sqlx::query(
            "UPDATE audit_forwarding SET through_sequence = $1, pending_batch = NULL, \
             pending_through = NULL WHERE id = 1",
        )
        .bind(through)
        .execute(&db.pool)
        .await
        .map_err(err)?;
    }
    let records =
        audit_trail::records_after(db, u64::try_from(through).unwrap_or(0), BATCH_RECORDS)
            .await
            .map_err(err)?;
    let Some(last) = records.last() else {
        return Ok(0);
    };
    let upto = i64::try_from(last.sequence).map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(records.len());
    for record in &records {
        let mut event = Event::from_json_slice(record.event.as_bytes())
            .map_err(|e| format!("audit record {}: {e}", record.sequence))?;
        event.set_str("agent.id", agent.to_string());
        event.set_str("agent.type", "yagura-shop");
        event.set("yagura.shop.audit_sequence", json!(record.sequence));
        event.set_str("yagura.shop.audit_hash", record.hash.clone());
        events.push(event);
    }
    let batch = last_sequence + 1;
    sqlx::query(
        "UPDATE audit_forwarding SET pending_batch = $1, pending_through = $2 WHERE id = 1",
    )
    .bind(i64::try_from(batch).map_err(|e| e.to_string())?)
    .bind(upto)
    .execute(&db.pool)
    .await
    .map_err(err)?;
    let sealed =
        SignedBatch::seal(key, agent, batch, Utc::now(), &events).map_err(|e| e.to_string())?;
    match archive
        .append(agent, batch, sealed.into_bytes())
        .await
        .map_err(|e| e.to_string())?
    {
        Appended::Accepted { .. } => {}
        Appended::Duplicate { last_sequence } => {
            return Err(format!(
                "shop batch {batch} already archived (last {last_sequence})"
            ));
        }
    }
    sqlx::query(
        "UPDATE audit_forwarding SET through_sequence = $1, pending_batch = NULL, \
         pending_through = NULL WHERE id = 1",
    )
    .bind(upto)
    .execute(&db.pool)
    .await
    .map_err(err)?;
    Ok(records.len())
}
