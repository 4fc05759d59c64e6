//! The append-only audit log. Appends to one chain are serialised by a transaction-scoped
//! advisory lock, so concurrent events on one channel still form a single unbroken chain.

use sea_orm::{ConnectionTrait, DbErr};

use super::sql;
use crate::audit::{AuditEntry, ChainLink, GENESIS};
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct Appended {
    pub sequence: i64,
    pub hash: [u8; 32],
}

pub async fn append(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: Option<&str>,
    entry: &AuditEntry,
) -> Result<Appended, DbErr> {
    let channel_key = entry.channel.as_ref().map(|c| c.as_str()).unwrap_or_default();
    db.execute_raw(sql(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '|' || $2, 7))",
        [tenant.as_str().into(), channel_key.into()],
    ))
    .await?;
    let head = db
        .query_one_raw(sql(
            "SELECT sequence, hash FROM audit_log WHERE tenant_id = $1 AND channel_id = $2
             ORDER BY sequence DESC LIMIT 1",
            [tenant.as_str().into(), channel_key.into()],
        ))
        .await?;
    let (prev_sequence, prev_hash) = match head {
        Some(row) => (row.try_get::<i64>("", "sequence")?, row.try_get::<Vec<u8>>("", "hash")?),
        None => (0, GENESIS.to_vec()),
    };
    let link = ChainLink {
        tenant,
        channel_key,
        sequence: prev_sequence + 1,
        action: entry.action,
        outcome: entry.outcome,
        origin: &entry.origin,
        correlation_id,
        details: &entry.details,
        recorded_at: crate::clock::now(),
    };
    let hash = link.hash(&prev_hash);
    db.execute_raw(sql(
        "INSERT INTO audit_log (id, tenant_id, channel_id, sequence, action, outcome, origin,
                                correlation_id, details, prev_hash, hash, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        [
            uuid::Uuid::now_v7().into(),
            tenant.as_str().into(),
            channel_key.into(),
            link.sequence.into(),
            entry.action.into(),
            entry.outcome.into(),
            entry.origin.clone().into(),
            correlation_id.map(str::to_owned).into(),
            entry.details.clone().into(),
            prev_hash.into(),
            hash.to_vec().into(),
            link.recorded_at.into(),
        ],
    ))
    .await?;
    Ok(Appended {
        sequence: link.sequence,
        hash,
    })
}
