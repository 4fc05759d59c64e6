//! Telling the platform that a revoked channel's grant is gone (RFC 7009), after the local
//! disable has committed. The refresh token is revoked (which, per RFC 7009 §2.1, should end the
//! grant's access tokens too), then the access token. A transient failure is retried with the
//! refresh backoff; once the attempt is over, for better or worse, the ciphertext is destroyed
//! and the waiting `RevokeRequested` events get `ConnectionRevoked`.

use entity::jobs::Model as Job;
use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use super::reports::Reports;
use crate::audit::action;
use crate::contract::inbound::RevokeOrigin;
use crate::contract::outbound::{ConnectionRevoked, PlatformRevocation};
use crate::domain::secrets::{AccessToken, RefreshToken};
use crate::domain::{ChannelId, ErrorCode, ProviderName, TenantId};
use crate::handlers::{Context, HandlerError};
use crate::platform::PlatformError;
use crate::store;
use crate::vault::{Binding, SecretKind};

pub async fn run(ctx: &Context, job: Job) -> Result<(), HandlerError> {
    let (Ok(tenant), Ok(channel)) = (
        TenantId::parse(job.tenant_id.clone()),
        ChannelId::parse(job.channel_id.clone()),
    ) else {
        store::jobs::finish(
            &ctx.db,
            &TenantId::unattributed(),
            job.id,
            "failed",
            Some("invalid_event"),
            None,
        )
        .await?;
        return Ok(());
    };
    let generation = job.payload["generation"].as_i64();
    let Some(row) = store::channels::find_by_pk(&ctx.db, &tenant, job.channel_pk).await? else {
        store::jobs::finish(&ctx.db, &tenant, job.id, "failed", Some("not_found"), None).await?;
        return Ok(());
    };
    // A new consent since the revocation: the tokens now stored belong to the new grant.
    let superseded = row.status != "revoked" || generation != Some(i64::from(row.generation));
    let result = if superseded {
        None
    } else {
        Some(revoke_at_platform(ctx, &tenant, &channel, &row).await)
    };
    conclude(ctx, &tenant, &channel, &job, result).await
}

async fn revoke_at_platform(
    ctx: &Context,
    tenant: &TenantId,
    channel: &ChannelId,
    row: &entity::channels::Model,
) -> Result<(), PlatformError> {
    let provider = ProviderName::parse(row.provider.clone())
        .ok()
        .and_then(|name| ctx.catalogue.provider(&name).ok());
    let Some(provider) = provider else {
        return Err(PlatformError::new(
            ErrorCode::UnknownProvider,
            "the channel's provider is no longer configured",
        ));
    };
    let open = |kind| async move {
        let sealed = store::tokens::load(&ctx.db, tenant, row.id, kind)
            .await
            .ok()
            .flatten()?;
        let binding = Binding {
            tenant,
            channel,
            kind,
            context: "",
        };
        ctx.vault.open(&binding, &sealed).ok().map(|p| p.to_string())
    };
    let refresh = open(SecretKind::RefreshToken).await.map(RefreshToken::new);
    let access = open(SecretKind::AccessToken).await.map(AccessToken::new);
    ctx.oauth
        .revoke_grant(provider, refresh.as_ref(), access.as_ref())
        .await
}

async fn conclude(
    ctx: &Context,
    tenant: &TenantId,
    channel: &ChannelId,
    job: &Job,
    result: Option<Result<(), PlatformError>>,
) -> Result<(), HandlerError> {
    let txn = ctx.db.begin().await?;
    if store::jobs::lock_running(&txn, tenant, job.id).await?.is_none() {
        txn.rollback().await?;
        return Ok(());
    }
    let waiters = store::jobs::open_waiters(&txn, tenant, job.id).await?;
    let mut reports = Reports::new(tenant, channel, job.id, &waiters);
    let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
    let outcome = match result {
        None => None,
        Some(Ok(())) => Some((PlatformRevocation::Confirmed, None)),
        Some(Err(error)) if error.is_transient() => {
            let now = crate::clock::now();
            match ctx.settings.refresh.retry_delay(attempts, error.retry_after, now, None) {
                Some(delay) => {
                    let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                    store::jobs::retry_at(&txn, tenant, job.id, next, error.code.as_str()).await?;
                    let details = json!({ "job_id": job.id, "error_code": error.code, "attempts": attempts, "next_attempt_at": next });
                    reports
                        .audit(&txn, action::PLATFORM_REVOCATION, "retrying", details)
                        .await?;
                    reports.write(&txn).await?;
                    txn.commit().await?;
                    ctx.outbox_ready.notify_one();
                    return Ok(());
                }
                None => Some((PlatformRevocation::Failed, Some(error.code))),
            }
        }
        Some(Err(error)) => Some((PlatformRevocation::Failed, Some(error.code))),
    };
    let Some((result, error_code)) = outcome else {
        store::jobs::finish(&txn, tenant, job.id, "cancelled", None, Some("superseded")).await?;
        txn.commit().await?;
        return Ok(());
    };
    // The attempt is over: destroy the ciphertext either way; the local revocation stands.
    store::tokens::delete_all(&txn, tenant, job.channel_pk).await?;
    store::channels::record_platform_revocation(&txn, tenant, job.channel_pk, result.as_str()).await?;
    let status = if result == PlatformRevocation::Confirmed {
        "done"
    } else {
        "failed"
    };
    store::jobs::finish(&txn, tenant, job.id, status, error_code.map(ErrorCode::as_str), None).await?;
    let details =
        json!({ "job_id": job.id, "platform_revocation": result, "error_code": error_code, "attempts": attempts });
    reports
        .audit(&txn, action::PLATFORM_REVOCATION, result.as_str(), details)
        .await?;
    let cancelled_jobs: Vec<Uuid> = serde_json::from_value(job.payload["cancelled_jobs"].clone()).unwrap_or_default();
    reports.finish(&ConnectionRevoked {
        channel_id: channel.clone(),
        origin: job.payload["origin"]
            .as_str()
            .and_then(RevokeOrigin::parse)
            .unwrap_or(RevokeOrigin::User),
        platform_revocation: result,
        cancelled_jobs,
    });
    reports.write(&txn).await?;
    txn.commit().await?;
    ctx.outbox_ready.notify_one();
    Ok(())
}
