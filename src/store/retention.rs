//! Pruning by age. Like the relay's and the scheduler's, these statements span every tenant: a
//! row's age decides, not its owner. Each deletes at most [`BATCH`] rows, so no statement holds
//! many locks or writes a burst of WAL.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};

use super::sql;

pub const BATCH: u64 = 5_000;

fn limit() -> sea_orm::Value {
    i64::try_from(BATCH).unwrap_or(i64::MAX).into()
}

/// Runs a batch delete whose `$1` is the cut-off and `$2` the batch size.
async fn delete_batch(db: &impl ConnectionTrait, statement: &str, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let result = db.execute_raw(sql(statement, [before.into(), limit()])).await?;
    Ok(result.rows_affected())
}

/// Idempotency records of events settled before `before`.
pub async fn inbox(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    delete_batch(
        db,
        "DELETE FROM inbox WHERE (tenant_id, event_id) IN (
              SELECT tenant_id, event_id FROM inbox
              WHERE status = 'done' AND received_at < $1 LIMIT $2)",
        before,
    )
    .await
}

/// Published messages written before `before`: the answers a redelivered event would be given.
pub async fn outbox(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    delete_batch(
        db,
        "DELETE FROM outbox WHERE id IN (
              SELECT o.id FROM outbox o
              WHERE o.created_at < $1
                AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.outbox_id = o.id)
              LIMIT $2)",
        before,
    )
    .await
}

/// Jobs that finished before `before`, with the events they answered.
pub async fn jobs(db: &DatabaseConnection, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let txn = db.begin().await?;
    let rows = txn
        .query_all_raw(sql(
            "SELECT id FROM jobs
             WHERE status IN ('done', 'failed', 'cancelled') AND finished_at < $1 LIMIT $2
             FOR UPDATE SKIP LOCKED",
            [before.into(), limit()],
        ))
        .await?;
    let ids = rows
        .iter()
        .map(|row| row.try_get::<uuid::Uuid>("", "id"))
        .collect::<Result<Vec<_>, _>>()?;
    if !ids.is_empty() {
        txn.execute_raw(sql(
            "DELETE FROM job_waiters WHERE job_id = ANY($1)",
            [ids.clone().into()],
        ))
        .await?;
        txn.execute_raw(sql("DELETE FROM jobs WHERE id = ANY($1)", [ids.clone().into()]))
            .await?;
    }
    txn.commit().await?;
    Ok(ids.len() as u64)
}

/// Consent states (with their encrypted PKCE verifiers) that expired before `before`.
pub async fn authorizations(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    delete_batch(
        db,
        "DELETE FROM authorizations WHERE state_hash IN (
              SELECT state_hash FROM authorizations WHERE expires_at < $1 LIMIT $2)",
        before,
    )
    .await
}
