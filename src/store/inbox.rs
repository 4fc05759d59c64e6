//! The idempotency record: one row per (tenant, event id).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr};

use super::sql;
use crate::domain::TenantId;

/// What claiming an event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First sight of this event: run it.
    Fresh,
    /// A previous run stopped half-way (its lease ran out): run it again, idempotently.
    Resumed,
    /// Already answered: republish the recorded outcome.
    Done,
    /// Another run holds the lease right now.
    Busy,
}

pub async fn claim(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    event_id: &str,
    event_type: &str,
    lease: Duration,
) -> Result<Claim, DbErr> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let claimed = db
        .query_one_raw(sql(
            "INSERT INTO inbox (tenant_id, event_id, event_type, status, lease_until)
             VALUES ($1, $2, $3, 'processing', now() + $4 * interval '1 millisecond')
             ON CONFLICT (tenant_id, event_id) DO UPDATE SET lease_until = EXCLUDED.lease_until
               WHERE inbox.status = 'processing' AND inbox.lease_until < now()
             RETURNING (xmax = 0) AS inserted",
            [
                tenant.as_str().into(),
                event_id.into(),
                event_type.into(),
                lease_ms.into(),
            ],
        ))
        .await?;
    if let Some(row) = claimed {
        let inserted: bool = row.try_get("", "inserted")?;
        return Ok(if inserted { Claim::Fresh } else { Claim::Resumed });
    }
    let status = db
        .query_one_raw(sql(
            "SELECT status FROM inbox WHERE tenant_id = $1 AND event_id = $2",
            [tenant.as_str().into(), event_id.into()],
        ))
        .await?
        .map(|row| row.try_get::<String>("", "status"))
        .transpose()?;
    Ok(match status.as_deref() {
        Some("done") => Claim::Done,
        _ => Claim::Busy,
    })
}

/// Locks the event's row and says whether it is still unanswered: a second run that lost the
/// race must not write a second outcome.
pub async fn lock_if_processing(db: &impl ConnectionTrait, tenant: &TenantId, event_id: &str) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT status FROM inbox WHERE tenant_id = $1 AND event_id = $2 FOR UPDATE",
            [tenant.as_str().into(), event_id.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<String>("", "status")? == "processing",
        None => false,
    })
}

pub async fn complete(db: &impl ConnectionTrait, tenant: &TenantId, event_id: &str) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE inbox SET status = 'done', completed_at = now() WHERE tenant_id = $1 AND event_id = $2",
        [tenant.as_str().into(), event_id.into()],
    ))
    .await?;
    Ok(())
}
