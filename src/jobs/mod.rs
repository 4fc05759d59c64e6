//! Durable jobs: the refresh schedule, retries with backoff, and (later) scheduled operations
//! and platform revocations. Jobs live in PostgreSQL; any replica's scheduler claims due ones
//! with `SKIP LOCKED`, so a job runs on one replica at a time, and a replica that dies mid-job
//! loses its lease and the job is taken back.
//!
//! Wake-ups are prompt without a fast poll: a commit that makes a job due notifies this
//! replica's scheduler at once, the scheduler sleeps exactly until the next due job, and a slow
//! poll (`PRAISMA_JOB_POLL_MS`) picks up jobs another replica left behind.

pub mod operation;
pub mod platform_revocation;
pub mod policy;
pub mod refresh;
pub mod refresh_batch;
mod reports;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handlers::Context;
use crate::store;

pub struct Scheduler {
    pub ctx: Context,
}

/// The worker's job slots and the tracker its tasks run in (jobs, and deliveries too, so one
/// drain at shutdown covers both).
#[derive(Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Woken when a job ends and its slot is free again.
    freed: Arc<tokio::sync::Notify>,
}

impl Slots {
    pub fn new(concurrency: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(concurrency)),
            tracker: TaskTracker::new(),
            freed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// A slot if one is free right now.
    pub fn try_take(&self) -> Option<Slot> {
        self.semaphore.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Runs `job` in its slot; when it ends the slot frees, which the scheduler hears of.
    pub fn spawn<F>(&self, slot: Slot, job: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let freed = self.freed.clone();
        self.tracker.spawn(async move {
            job.await;
            drop(slot);
            freed.notify_one();
        });
    }
}

/// One of the worker's job slots, held for as long as its job runs.
pub struct Slot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Scheduler {
    /// Runs due jobs until `stop`; jobs already running finish in `tracker`.
    pub async fn run(self, stop: CancellationToken) {
        let ctx = self.ctx;
        let lease = ctx.settings.job_lease;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let free = ctx.jobs.available();
            let mut wait = ctx.settings.job_poll;
            // Whether due jobs may be waiting for a slot: only then is a freed slot a reason to
            // look again (most jobs are started by the events that ask for them, and a claim
            // that finds nothing costs a search for the next due time).
            let mut backlog = free == 0;
            if free > 0 {
                match store::jobs::claim_due(&ctx.db, free as u64, lease).await {
                    Ok(jobs) => {
                        backlog = jobs.len() == free;
                        if jobs.is_empty() {
                            wait = wait.min(until_next_due(&ctx).await);
                        }
                        start_all(&ctx, jobs).await;
                    }
                    Err(error) => tracing::warn!(%error, "claiming due jobs failed"),
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = ctx.jobs_ready.notified() => break,
                    _ = ctx.jobs.freed.notified() => if backlog { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Runs claimed jobs in free slots; the refreshes start from one read of their channels and
/// tokens.
async fn start_all(ctx: &Context, jobs: Vec<entity::jobs::Model>) {
    let (refreshes, others): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|job| job.kind == store::jobs::KIND_REFRESH);
    for job in others {
        let Some(slot) = slot_or_release(ctx, &job).await else {
            continue;
        };
        let runner = ctx.clone();
        ctx.jobs.spawn(slot, async move { run_job(&runner, job).await });
    }
    if refreshes.is_empty() {
        return;
    }
    let prepared = match refresh::prepare(ctx, refreshes).await {
        Ok(prepared) => prepared,
        Err(error) => {
            // They keep their leases and are taken back when those run out.
            tracing::warn!(%error, "reading the claimed refreshes' channels failed");
            return;
        }
    };
    for claimed in prepared {
        let Some(slot) = slot_or_release(ctx, claimed.job()).await else {
            continue;
        };
        let runner = ctx.clone();
        ctx.jobs
            .spawn(slot, async move { run_claimed_refresh(&runner, claimed).await });
    }
}

/// A free slot for a claimed job. A handler may have taken the slot this loop counted on (it
/// starts the refresh it asked for itself): the job then goes back to the queue at once.
async fn slot_or_release(ctx: &Context, job: &entity::jobs::Model) -> Option<Slot> {
    let slot = ctx.jobs.try_take();
    if slot.is_none()
        && let Err(error) = store::jobs::release(&ctx.db, &job.tenant_id, job.id).await
    {
        tracing::warn!(job = %job.id, %error, "giving back a claimed job failed; it runs when its lease lapses");
    }
    slot
}

async fn until_next_due(ctx: &Context) -> Duration {
    match store::jobs::next_due(&ctx.db).await {
        Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or(Duration::ZERO),
        Ok(None) => ctx.settings.job_poll,
        Err(error) => {
            tracing::warn!(%error, "reading the next due job failed");
            ctx.settings.job_poll
        }
    }
}

async fn run_job(ctx: &Context, job: entity::jobs::Model) {
    let (id, kind) = (job.id, job.kind.clone());
    let result = match kind.as_str() {
        store::jobs::KIND_PLATFORM_REVOCATION => platform_revocation::run(ctx, job).await,
        store::jobs::KIND_OPERATION => operation::run(ctx, job).await,
        _ => {
            tracing::error!(job = %id, kind, "no runner for this job kind");
            Ok(())
        }
    };
    settled(id, &kind, result);
}

/// Runs a refresh that the event asking for it created already claimed.
pub async fn run_claimed_refresh(ctx: &Context, claimed: refresh::Claimed) {
    let id = claimed.job().id;
    settled(id, store::jobs::KIND_REFRESH, refresh::run_claimed(ctx, claimed).await);
}

fn settled(id: uuid::Uuid, kind: &str, result: Result<(), crate::handlers::HandlerError>) {
    match result {
        Ok(()) => tracing::info!(job = %id, kind, "job settled"),
        // The job keeps its lease and is taken back when it runs out.
        Err(error) => tracing::warn!(job = %id, kind, %error, "job failed; it will be retried"),
    }
}

/// Answers the events waiting on jobs that were just cancelled (by a revocation, or a grant
/// that died): each gets its kind's refusal with `code`, in the cancelling transaction.
pub async fn answer_cancelled(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &crate::domain::TenantId,
    channel: &crate::domain::ChannelId,
    cancelled: &[uuid::Uuid],
    code: crate::domain::ErrorCode,
) -> Result<(), crate::handlers::HandlerError> {
    use crate::contract::outbound::{OperationRejected, TokenRefreshFailed};
    for job_id in cancelled {
        let Some(job) = store::jobs::get(txn, tenant, *job_id).await? else {
            continue;
        };
        let waiters = store::jobs::open_waiters(txn, tenant, *job_id).await?;
        for waiter in &waiters {
            let mut answer = crate::handlers::Answer::for_waiter(tenant, waiter);
            match job.kind.as_str() {
                store::jobs::KIND_OPERATION => answer.finish(&OperationRejected {
                    channel_id: Some(channel.clone()),
                    capability: serde_json::from_value(job.payload["capability"].clone()).ok(),
                    error_code: code,
                    missing_scopes: None,
                }),
                _ => answer.finish(&TokenRefreshFailed {
                    channel_id: Some(channel.clone()),
                    error_code: code,
                    retryable: false,
                    attempts: u32::try_from(job.attempts).unwrap_or(0),
                    next_attempt_at: None,
                }),
            }
            answer.write(txn).await?;
        }
        store::jobs::mark_answered(txn, tenant, *job_id).await?;
    }
    Ok(())
}
