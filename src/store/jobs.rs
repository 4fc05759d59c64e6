//! Durable jobs and the events waiting on them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::jobs;
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use super::{scoped_ids, sql, tenants_and_ids, value_rows};
use crate::domain::TenantId;

pub const KIND_REFRESH: &str = "refresh";
pub const KIND_PLATFORM_REVOCATION: &str = "platform_revocation";
pub const KIND_OPERATION: &str = "operation";

pub async fn get(db: &impl ConnectionTrait, tenant: &TenantId, job_id: Uuid) -> Result<Option<jobs::Model>, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT * FROM jobs WHERE tenant_id = $1 AND id = $2",
            [tenant.as_str().into(), job_id.into()],
        ))
        .await?;
    row.map(|r| jobs::Model::from_query_result(&r, "")).transpose()
}

/// Creates a job of `kind` due at `run_at`.
pub async fn create(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: Uuid,
    channel_id: &str,
    kind: &str,
    run_at: DateTime<Utc>,
    payload: serde_json::Value,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    db.execute_raw(sql(
        "INSERT INTO jobs (id, tenant_id, channel_pk, channel_id, kind, status, run_at, payload)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
        [
            id.into(),
            tenant.as_str().into(),
            channel_pk.into(),
            channel_id.into(),
            kind.into(),
            run_at.into(),
            payload.into(),
        ],
    ))
    .await?;
    Ok(id)
}

/// The channel's unfinished job of `kind`, if any.
pub async fn find_open(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: Uuid,
    kind: &str,
) -> Result<Option<Uuid>, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT id FROM jobs WHERE tenant_id = $1 AND channel_pk = $2 AND kind = $3
               AND status IN ('pending', 'running') ORDER BY created_at DESC LIMIT 1",
            [tenant.as_str().into(), channel_pk.into(), kind.into()],
        ))
        .await?;
    row.map(|r| r.try_get("", "id")).transpose()
}

/// How a refresh is (re)scheduled when one is already pending for the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Pull it forward to `run_at` if that is sooner, unless it is backing off a failure (a
    /// platform's `Retry-After` is honoured even against a storm of requests).
    NoLaterThan,
    /// Replace its time: a new grant starts a new schedule.
    Replace,
}

/// Schedules the channel's refresh; returns the id of the one pending-or-running refresh job.
pub async fn schedule_refresh(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: Uuid,
    channel_id: &str,
    run_at: DateTime<Utc>,
    schedule: Schedule,
) -> Result<Uuid, DbErr> {
    let refresh = NextRefresh {
        tenant,
        channel_pk,
        channel_id,
        run_at,
    };
    let ids = schedule_refreshes(db, &[refresh], schedule).await?;
    ids.into_iter().next().ok_or(DbErr::RecordNotInserted)
}

/// A channel's refresh to schedule.
pub struct NextRefresh<'a> {
    pub tenant: &'a TenantId,
    pub channel_pk: Uuid,
    pub channel_id: &'a str,
    pub run_at: DateTime<Utc>,
}

/// Schedules the refreshes of several distinct channels in one statement; returns their jobs' ids.
pub async fn schedule_refreshes(
    db: &impl ConnectionTrait,
    refreshes: &[NextRefresh<'_>],
    schedule: Schedule,
) -> Result<Vec<Uuid>, DbErr> {
    if refreshes.is_empty() {
        return Ok(Vec::new());
    }
    let update = match schedule {
        Schedule::NoLaterThan => {
            "run_at = CASE WHEN jobs.status = 'pending' AND jobs.attempts = 0
                           THEN LEAST(jobs.run_at, EXCLUDED.run_at) ELSE jobs.run_at END"
        }
        Schedule::Replace => {
            "run_at = CASE WHEN jobs.status = 'pending' THEN EXCLUDED.run_at ELSE jobs.run_at END,
             attempts = CASE WHEN jobs.status = 'pending' THEN 0 ELSE jobs.attempts END"
        }
    };
    let values = refreshes.iter().flat_map(|r| {
        [
            Uuid::now_v7().into(),
            r.tenant.as_str().into(),
            r.channel_pk.into(),
            r.channel_id.into(),
            r.run_at.into(),
        ]
    });
    let rows = db
        .query_all_raw(sql(
            &format!(
                "INSERT INTO jobs (id, tenant_id, channel_pk, channel_id, run_at, kind, status)
                 SELECT *, 'refresh', 'pending' FROM (VALUES {}) AS v
                 ON CONFLICT (channel_pk) WHERE kind = 'refresh' AND status IN ('pending', 'running')
                 DO UPDATE SET {update}, updated_at = now()
                 RETURNING id",
                value_rows(refreshes.len(), 5)
            ),
            values,
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "id")).collect()
}

/// Starts the refreshes of several distinct channels, due now, like [`Schedule::NoLaterThan`];
/// a channel with no refresh pending gets one created already claimed by the caller under
/// `lease`, for the caller to run at once without a round through the scheduler. Returns, per
/// channel, the claimed job or the id of the one it joined.
pub async fn start_refreshes(
    db: &impl ConnectionTrait,
    refreshes: &[(&TenantId, Uuid, &str)],
    lease: Duration,
) -> Result<std::collections::HashMap<Uuid, RefreshStart>, DbErr> {
    let mut started = std::collections::HashMap::with_capacity(refreshes.len());
    if refreshes.is_empty() {
        return Ok(started);
    }
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let values = refreshes.iter().flat_map(|(tenant, channel_pk, channel_id)| {
        [
            Uuid::now_v7().into(),
            tenant.as_str().into(),
            (*channel_pk).into(),
            (*channel_id).into(),
            lease_ms.into(),
        ]
    });
    let rows_sql = value_rows(refreshes.len(), 5);
    let rows = db
        .query_all_raw(sql(
            &format!(
                "INSERT INTO jobs (id, tenant_id, channel_pk, channel_id, kind, status, run_at, attempts, lease_until)
                 SELECT v.id, v.t, v.pk, v.c, 'refresh', 'running', now(), 1, now() + v.lease_ms * interval '1 millisecond'
                 FROM (VALUES {rows_sql}) AS v (id, t, pk, c, lease_ms)
                 ON CONFLICT (channel_pk) WHERE kind = 'refresh' AND status IN ('pending', 'running')
                 DO UPDATE SET run_at = CASE WHEN jobs.status = 'pending' AND jobs.attempts = 0
                                             THEN LEAST(jobs.run_at, EXCLUDED.run_at) ELSE jobs.run_at END,
                               updated_at = now()
                 RETURNING *, (xmax = 0) AS inserted"
            ),
            values,
        ))
        .await?;
    for row in &rows {
        let job = jobs::Model::from_query_result(row, "")?;
        let start = if row.try_get::<bool>("", "inserted")? {
            (job.channel_pk, RefreshStart::Claimed(Box::new(job)))
        } else {
            (job.channel_pk, RefreshStart::Joined(job.id))
        };
        started.insert(start.0, start.1);
    }
    Ok(started)
}

/// What starting a refresh found.
pub enum RefreshStart {
    /// No refresh was pending: this one was created claimed, for the caller to run.
    Claimed(Box<jobs::Model>),
    /// The channel's refresh exists (pending, backing off, or running): joined, not claimed.
    Joined(Uuid),
}

pub struct Waiter<'a> {
    pub event_id: &'a str,
    pub origin: &'a str,
    pub reply_to: Option<&'a str>,
    pub traceparent: String,
}

pub async fn add_waiter(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    job_id: Uuid,
    waiter: Waiter<'_>,
) -> Result<(), DbErr> {
    add_waiters(db, &[(tenant, job_id, waiter)]).await
}

/// Registers events as waiting on jobs, in one statement.
pub async fn add_waiters(db: &impl ConnectionTrait, waiters: &[(&TenantId, Uuid, Waiter<'_>)]) -> Result<(), DbErr> {
    if waiters.is_empty() {
        return Ok(());
    }
    let values = waiters.iter().flat_map(|(tenant, job_id, waiter)| {
        [
            (*job_id).into(),
            tenant.as_str().into(),
            waiter.event_id.into(),
            waiter.origin.into(),
            waiter.reply_to.map(str::to_owned).into(),
            waiter.traceparent.clone().into(),
        ]
    });
    db.execute_raw(sql(
        &format!(
            "INSERT INTO job_waiters (job_id, tenant_id, event_id, origin, reply_to, traceparent)
             VALUES {} ON CONFLICT DO NOTHING",
            value_rows(waiters.len(), 6)
        ),
        values,
    ))
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct WaitingEvent {
    pub event_id: String,
    pub origin: String,
    pub reply_to: Option<String>,
    pub traceparent: String,
}

/// The events still waiting for this job's final answer.
pub async fn open_waiters(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    job_id: Uuid,
) -> Result<Vec<WaitingEvent>, DbErr> {
    let rows = db
        .query_all_raw(sql(
            "SELECT event_id, origin, reply_to, traceparent FROM job_waiters
             WHERE tenant_id = $1 AND job_id = $2 AND answered_at IS NULL ORDER BY created_at",
            [tenant.as_str().into(), job_id.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| WaitingEvent::from_query_result(row, ""))
        .collect()
}

pub async fn mark_answered(db: &impl ConnectionTrait, tenant: &TenantId, job_id: Uuid) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE job_waiters SET answered_at = now() WHERE tenant_id = $1 AND job_id = $2 AND answered_at IS NULL",
        [tenant.as_str().into(), job_id.into()],
    ))
    .await?;
    Ok(())
}

/// Claims due jobs, and running jobs whose runner's lease ran out, for this runner. Jobs of
/// every tenant: this is the scheduler's query, like the outbox relay's.
pub async fn claim_due(db: &impl ConnectionTrait, limit: u64, lease: Duration) -> Result<Vec<jobs::Model>, DbErr> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // Two index range scans that stop at the limit: due jobs first, then lapsed leases.
    let rows = db
        .query_all_raw(sql(
            "WITH due AS (
                SELECT id FROM jobs WHERE status = 'pending' AND run_at <= now()
                ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED),
             lapsed AS (
                SELECT id FROM jobs WHERE status = 'running' AND lease_until < now()
                ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET status = 'running', attempts = attempts + 1,
                    lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
             WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM lapsed LIMIT $1)
             RETURNING *",
            [i64::try_from(limit).unwrap_or(i64::MAX).into(), lease_ms.into()],
        ))
        .await?;
    rows.iter().map(|row| jobs::Model::from_query_result(row, "")).collect()
}

/// Gives back a job this runner claimed but cannot run now, as if never claimed.
pub async fn release(db: &impl ConnectionTrait, tenant: &str, job_id: Uuid) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE jobs SET status = 'pending', attempts = attempts - 1, lease_until = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        [tenant.into(), job_id.into()],
    ))
    .await?;
    Ok(())
}

/// When the next job falls due, for the scheduler's timer.
pub async fn next_due(db: &impl ConnectionTrait) -> Result<Option<DateTime<Utc>>, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT LEAST((SELECT min(run_at) FROM jobs WHERE status = 'pending'),
                          (SELECT min(lease_until) FROM jobs WHERE status = 'running')) AS due",
            [],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<Option<DateTime<Utc>>>("", "due"))
        .transpose()?
        .flatten())
}

/// The job, locked, if it is still this runner's to finish.
pub async fn lock_running(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    job_id: Uuid,
) -> Result<Option<jobs::Model>, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT * FROM jobs WHERE tenant_id = $1 AND id = $2 AND status = 'running' FOR UPDATE",
            [tenant.as_str().into(), job_id.into()],
        ))
        .await?;
    row.map(|r| jobs::Model::from_query_result(&r, "")).transpose()
}

/// Of these jobs, the ones still running, locked in id order.
pub async fn lock_running_many(db: &impl ConnectionTrait, keys: &[(&TenantId, Uuid)]) -> Result<Vec<Uuid>, DbErr> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT id FROM jobs WHERE {} AND status = 'running' ORDER BY id FOR UPDATE",
                scoped_ids("jobs", "id", 1, 2)
            ),
            tenants_and_ids(keys),
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "id")).collect()
}

/// Marks these jobs done.
pub async fn finish_done(db: &impl ConnectionTrait, keys: &[(&TenantId, Uuid)]) -> Result<(), DbErr> {
    if keys.is_empty() {
        return Ok(());
    }
    db.execute_raw(sql(
        &format!(
            "UPDATE jobs SET status = 'done', lease_until = NULL, finished_at = now(), updated_at = now()
             WHERE {}",
            scoped_ids("jobs", "id", 1, 2)
        ),
        tenants_and_ids(keys),
    ))
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
struct AnsweredWaiter {
    job_id: Uuid,
    event_id: String,
    origin: String,
    reply_to: Option<String>,
    traceparent: String,
    created_at: DateTime<Utc>,
}

/// Marks the events waiting on these jobs answered and returns them, per job, in the order
/// they arrived: the caller writes their final answers in the same transaction.
pub async fn answer_waiters(
    db: &impl ConnectionTrait,
    keys: &[(&TenantId, Uuid)],
) -> Result<std::collections::HashMap<Uuid, Vec<WaitingEvent>>, DbErr> {
    let mut waiting: std::collections::HashMap<Uuid, Vec<WaitingEvent>> = std::collections::HashMap::new();
    if keys.is_empty() {
        return Ok(waiting);
    }
    let rows = db
        .query_all_raw(sql(
            &format!(
                "UPDATE job_waiters SET answered_at = now() WHERE {} AND answered_at IS NULL
                 RETURNING job_id, event_id, origin, reply_to, traceparent, created_at",
                scoped_ids("job_waiters", "job_id", 1, 2)
            ),
            tenants_and_ids(keys),
        ))
        .await?;
    let mut answered = rows
        .iter()
        .map(|row| AnsweredWaiter::from_query_result(row, ""))
        .collect::<Result<Vec<_>, _>>()?;
    answered.sort_by_key(|waiter| waiter.created_at);
    for waiter in answered {
        waiting.entry(waiter.job_id).or_default().push(WaitingEvent {
            event_id: waiter.event_id,
            origin: waiter.origin,
            reply_to: waiter.reply_to,
            traceparent: waiter.traceparent,
        });
    }
    Ok(waiting)
}

pub async fn finish(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    job_id: Uuid,
    status: &str,
    error_code: Option<&str>,
    cancel_reason: Option<&str>,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE jobs SET status = $3, last_error_code = COALESCE($4, last_error_code), cancel_reason = $5,
                lease_until = NULL, finished_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        [
            tenant.as_str().into(),
            job_id.into(),
            status.into(),
            error_code.map(str::to_owned).into(),
            cancel_reason.map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Puts a failed attempt back in the queue for later: a retry is the same job, rescheduled.
pub async fn retry_at(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    job_id: Uuid,
    run_at: DateTime<Utc>,
    error_code: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE jobs SET status = 'pending', run_at = $3, last_error_code = $4, lease_until = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        [tenant.as_str().into(), job_id.into(), run_at.into(), error_code.into()],
    ))
    .await?;
    Ok(())
}

/// Cancels every unfinished job of the channel, running ones included (their runner's fence
/// then discards what they bring back). Returns their ids.
pub async fn cancel_channel_jobs(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: Uuid,
    reason: &str,
    except: Option<Uuid>,
) -> Result<Vec<Uuid>, DbErr> {
    let rows = db
        .query_all_raw(sql(
            "UPDATE jobs SET status = 'cancelled', cancel_reason = $3, lease_until = NULL,
                    finished_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND channel_pk = $2 AND status IN ('pending', 'running')
               AND ($4::uuid IS NULL OR id <> $4)
             RETURNING id",
            [tenant.as_str().into(), channel_pk.into(), reason.into(), except.into()],
        ))
        .await?;
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.try_get("", "id")).collect::<Result<_, _>>()?;
    ids.sort();
    Ok(ids)
}
