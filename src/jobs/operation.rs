//! A scheduled operation, run once when due. The grant is checked again at that moment: what
//! was allowed when it was scheduled may not be any more.

use entity::jobs::Model as Job;
use sea_orm::TransactionTrait;

use super::reports::Reports;
use crate::access::{self, Refusal};
use crate::contract::inbound::OperationRequest;
use crate::domain::{Capability, ChannelId, ErrorCode, TenantId};
use crate::handlers::operation::{Executed, OperationOutcome, execute, report, retry_delay};
use crate::handlers::{Context, HandlerError};
use crate::platform::api;
use crate::store;

pub async fn run(ctx: &Context, job: Job) -> Result<(), HandlerError> {
    let parsed = (
        TenantId::parse(job.tenant_id.clone()),
        ChannelId::parse(job.channel_id.clone()),
        serde_json::from_value::<Capability>(job.payload["capability"].clone()),
        serde_json::from_value::<OperationRequest>(job.payload["request"].clone()),
    );
    let (Ok(tenant), Ok(channel), Ok(capability), Ok(request)) = parsed else {
        tracing::error!(job = %job.id, "a scheduled operation's payload does not parse; failing it");
        let tenant = TenantId::parse(job.tenant_id.clone()).unwrap_or_else(|_| TenantId::unattributed());
        store::jobs::finish(&ctx.db, &tenant, job.id, "failed", Some("invalid_event"), None).await?;
        return Ok(());
    };
    let executed = match access::check(&ctx.db, &ctx.catalogue, &tenant, &channel, &capability).await? {
        Err(refusal) => Executed::Rejected(refusal),
        Ok(allowed) => match api::check(&allowed.provider, &request) {
            Err(_) => Executed::Rejected(Refusal::new(ErrorCode::InvalidRequest)),
            Ok(checked) => execute(ctx, &tenant, &channel, &capability, &checked).await?,
        },
    };

    let txn = ctx.db.begin().await?;
    if store::jobs::lock_running(&txn, &tenant, job.id).await?.is_none() {
        // Cancelled while it ran (revocation, reauth): the canceller answered its waiters.
        txn.rollback().await?;
        return Ok(());
    }
    let retryable = job.payload["retryable"].as_bool().unwrap_or(false);
    let attempts = u32::try_from(job.payload["after_attempts"].as_i64().unwrap_or(0) + i64::from(job.attempts))
        .unwrap_or(u32::MAX);
    if let Some(delay) = retry_delay(ctx, &executed, attempts).filter(|_| retryable) {
        let code = match &executed {
            Executed::Rejected(refusal) => refusal.code.as_str(),
            Executed::Completed(_) => "provider_unavailable",
        };
        store::jobs::retry_at(&txn, &tenant, job.id, crate::clock::now() + delay, code).await?;
        txn.commit().await?;
        return Ok(());
    }
    let waiters = store::jobs::open_waiters(&txn, &tenant, job.id).await?;
    let mut reports = Reports::new(&tenant, &channel, job.id, &waiters);
    let (entry, outcome) = report("worker", &channel, &capability, &request.method, executed);
    let status = if matches!(outcome, OperationOutcome::Completed(_)) {
        "done"
    } else {
        "failed"
    };
    reports.audit(&txn, entry.action, entry.outcome, entry.details).await?;
    match &outcome {
        OperationOutcome::Completed(data) => reports.finish(data),
        OperationOutcome::Rejected(data) => reports.finish(data),
    }
    store::jobs::finish(&txn, &tenant, job.id, status, None, None).await?;
    reports.write(&txn).await?;
    txn.commit().await?;
    ctx.outbox_ready.notify_one();
    Ok(())
}
