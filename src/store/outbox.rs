//! The transactional outbox: outcome and audit events committed with the effects they report.
//! `outbox` keeps every message (a redelivered event is answered from it); `outbox_pending`
//! lists those not yet published, in order.

use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use serde_json::Value as Json;

use super::{sql, value_rows};
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub tenant: TenantId,
    pub correlation_id: Option<String>,
    pub routing_key: String,
    pub body: Json,
    /// Set on the final outcome of an event that asked for a reply.
    pub reply_to: Option<String>,
    pub is_audit: bool,
}

/// Inserts an answer's messages in one statement.
pub async fn insert(db: &impl ConnectionTrait, messages: &[NewMessage]) -> Result<(), DbErr> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(messages.len() * 7);
    for message in messages {
        values.extend([
            message.id.into(),
            message.tenant.as_str().into(),
            message.correlation_id.clone().into(),
            message.routing_key.clone().into(),
            message.body.clone().into(),
            message.reply_to.clone().into(),
            message.is_audit.into(),
        ]);
    }
    db.execute_raw(sql(
        &format!(
            "WITH written AS (
                 INSERT INTO outbox (id, tenant_id, correlation_id, routing_key, body, reply_to, is_audit)
                 VALUES {} RETURNING seq, id, tenant_id)
             INSERT INTO outbox_pending (seq, outbox_id, tenant_id) SELECT seq, id, tenant_id FROM written",
            value_rows(messages.len(), 7)
        ),
        values,
    ))
    .await?;
    Ok(())
}

/// Queues an event's recorded outcomes for publishing again, with their original ids. A new
/// `reply_to` replaces the old one on the final outcome.
pub async fn republish_outcomes(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: &str,
    reply_to: Option<&str>,
) -> Result<u64, DbErr> {
    let result = db
        .execute_raw(sql(
            "WITH again AS (
                 UPDATE outbox SET reply_to = CASE WHEN reply_to IS NOT NULL THEN COALESCE($3, reply_to) END
                 WHERE tenant_id = $1 AND correlation_id = $2 AND NOT is_audit
                 RETURNING seq, id, tenant_id)
             INSERT INTO outbox_pending (seq, outbox_id, tenant_id) SELECT seq, id, tenant_id FROM again
             ON CONFLICT (seq) DO NOTHING",
            [
                tenant.as_str().into(),
                correlation_id.into(),
                reply_to.map(str::to_owned).into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct Pending {
    pub seq: i64,
    pub id: Uuid,
    pub correlation_id: Option<String>,
    pub routing_key: String,
    pub body: Json,
    pub reply_to: Option<String>,
}

/// Claims the oldest unpublished rows; `SKIP LOCKED` lets several relays share the table.
pub async fn claim_batch(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<Pending>, DbErr> {
    let rows = db
        .query_all_raw(sql(
            "SELECT p.seq, o.id, o.correlation_id, o.routing_key, o.body, o.reply_to
             FROM outbox_pending p JOIN outbox o ON o.id = p.outbox_id
             ORDER BY p.seq LIMIT $1 FOR UPDATE OF p SKIP LOCKED",
            [i64::try_from(limit).unwrap_or(i64::MAX).into()],
        ))
        .await?;
    rows.iter().map(|row| Pending::from_query_result(row, "")).collect()
}

/// Takes published rows off the queue; the outbox rows stay as the record of what was said.
pub async fn mark_published(db: &impl ConnectionTrait, seqs: &[i64]) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "DELETE FROM outbox_pending WHERE seq = ANY($1)",
        [seqs.to_vec().into()],
    ))
    .await?;
    Ok(())
}

pub async fn backlog(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(sql("SELECT count(*) AS n FROM outbox_pending", []))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0))
}
