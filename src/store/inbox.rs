//! The idempotency record: one row per (tenant, event id).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr};

use super::{sql, value_rows};
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
    status_of(db, tenant, event_id).await
}

/// An event to claim.
pub struct EventKey<'a> {
    pub tenant: &'a TenantId,
    pub event_id: &'a str,
    pub event_type: &'a str,
}

/// Claims events that are answered in the claiming transaction itself: each row is written
/// `done` at once (it exists only if that transaction commits). Returns the indexes of the
/// events claimed; the others were answered already or are another run's right now
/// ([`status_of`] says which). The keys must be distinct.
pub async fn claim_answered_many(db: &impl ConnectionTrait, events: &[EventKey<'_>]) -> Result<Vec<usize>, DbErr> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let values = events
        .iter()
        .flat_map(|e| [e.tenant.as_str().into(), e.event_id.into(), e.event_type.into()]);
    let rows = db
        .query_all_raw(sql(
            &format!(
                "INSERT INTO inbox (tenant_id, event_id, event_type, status, lease_until, completed_at)
                 SELECT t, e, k, 'done', now(), now() FROM (VALUES {}) AS v (t, e, k)
                 ON CONFLICT (tenant_id, event_id) DO UPDATE SET status = 'done', completed_at = now()
                   WHERE inbox.status = 'processing' AND inbox.lease_until < now()
                 RETURNING tenant_id, event_id",
                value_rows(events.len(), 3)
            ),
            values,
        ))
        .await?;
    let mut claimed = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        claimed.insert((
            row.try_get::<String>("", "tenant_id")?,
            row.try_get::<String>("", "event_id")?,
        ));
    }
    Ok(events
        .iter()
        .enumerate()
        .filter(|(_, e)| claimed.contains(&(e.tenant.as_str().to_owned(), e.event_id.to_owned())))
        .map(|(index, _)| index)
        .collect())
}

/// What the inbox says of an event that could not be claimed.
pub async fn status_of(db: &impl ConnectionTrait, tenant: &TenantId, event_id: &str) -> Result<Claim, DbErr> {
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
