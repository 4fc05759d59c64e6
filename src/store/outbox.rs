//! The transactional outbox: outcome and audit events committed with the effects they report.

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
            "INSERT INTO outbox (id, tenant_id, correlation_id, routing_key, body, reply_to, is_audit) VALUES {}",
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
            "UPDATE outbox SET published_at = NULL,
                    reply_to = CASE WHEN reply_to IS NOT NULL THEN COALESCE($3, reply_to) END
             WHERE tenant_id = $1 AND correlation_id = $2 AND NOT is_audit",
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
            "SELECT id, correlation_id, routing_key, body, reply_to FROM outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            [i64::try_from(limit).unwrap_or(i64::MAX).into()],
        ))
        .await?;
    rows.iter().map(|row| Pending::from_query_result(row, "")).collect()
}

pub async fn mark_published(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
        [ids.to_vec().into()],
    ))
    .await?;
    Ok(())
}

pub async fn backlog(db: &impl ConnectionTrait) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(sql("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL", []))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0))
}
