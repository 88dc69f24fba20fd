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
        settle(db, through).await.map_err(err)?;
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
    settle(db, upto).await.map_err(err)?;
    Ok(records.len())
}

/// Records that everything up to `through` is in the archive and no batch is pending.
async fn settle(
    db: &crate::shop::infrastructure::database::ShopDatabase,
    through: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_forwarding SET through_sequence = $1, pending_batch = NULL, \
         pending_through = NULL WHERE id = 1",
    )
    .bind(through)
    .execute(&db.pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::SegmentArchive;
    use crate::shop::domain::audit::{AuditEvent, Outcome};
    use crate::shop::domain::ports::ShopRepository as _;
    use crate::shop::infrastructure::database::ShopDatabase;

    async fn setup() -> (
        tempfile::TempDir,
        SqlShopRepository,
        SegmentArchive,
        AgentKey,
        Uuid,
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let db = ShopDatabase::open(
            &format!("sqlite://{}?mode=rwc", dir.path().join("shop.db").display()),
            None,
        )
        .await
        .expect("db");
        let archive = SegmentArchive::open(&dir.path().join("archive"), 1 << 20).expect("archive");
        let key = AgentKey::generate().expect("key");
        (
            dir,
            SqlShopRepository::new(db),
            archive,
            key,
            Uuid::now_v7(),
        )
    }

    async fn record(repo: &SqlShopRepository, n: usize) {
        for _ in 0..n {
            repo.record(AuditEvent::new("login", "authentication", Outcome::Failure))
                .await
                .expect("record");
        }
    }

    /// Every audit sequence the archive holds, in order.
    fn archived(archive: &SegmentArchive, key: &AgentKey) -> Vec<u64> {
        let mut reader = archive.reader(0).expect("reader");
        let mut sequences = Vec::new();
        while let Some(record) = reader.next_record().expect("record") {
            let batch = SignedBatch::from_bytes(record.batch).expect("batch");
            batch
                .verify(&key.verifying_key())
                .expect("signed by the shop key");
            for event in batch.events(1 << 24).expect("events") {
                assert_eq!(event.dataset(), Some(audit_trail::AUDIT_DATASET));
                sequences.push(
                    event
                        .get("yagura.shop.audit_sequence")
                        .and_then(serde_json::Value::as_u64)
                        .expect("sequence"),
                );
            }
        }
        sequences
    }

    async fn set_forwarding(repo: &SqlShopRepository, through: i64, pending: Option<(i64, i64)>) {
        sqlx::query(
            "UPDATE audit_forwarding SET through_sequence = $1, pending_batch = $2, \
             pending_through = $3 WHERE id = 1",
        )
        .bind(through)
        .bind(pending.map(|p| p.0))
        .bind(pending.map(|p| p.1))
        .execute(&repo.database().pool)
        .await
        .expect("update");
    }

    #[tokio::test]
    async fn each_record_reaches_the_archive_once_across_crashes() {
        let (_dir, repo, archive, key, agent) = setup().await;
        record(&repo, 3).await;
        assert_eq!(forward_once(&repo, &key, agent, &archive).await, Ok(3));
        assert_eq!(forward_once(&repo, &key, agent, &archive).await, Ok(0));

        // A crash after the append, before the cursor moved: the batch is not sent again.
        record(&repo, 2).await;
        assert_eq!(forward_once(&repo, &key, agent, &archive).await, Ok(2));
        set_forwarding(&repo, 3, Some((2, 5))).await;
        assert_eq!(forward_once(&repo, &key, agent, &archive).await, Ok(0));

        // A crash after announcing a batch, before appending it: it is sent.
        record(&repo, 2).await;
        set_forwarding(&repo, 5, Some((3, 7))).await;
        assert_eq!(forward_once(&repo, &key, agent, &archive).await, Ok(2));

        assert_eq!(archived(&archive, &key), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(archive.last_sequence(agent), Some(3));
    }
}
