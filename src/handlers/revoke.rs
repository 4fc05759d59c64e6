//! `RevokeRequested`: the channel is disabled and its jobs cancelled in one transaction, so from
//! that commit on no operation, refresh or scheduled job of it runs. Telling the platform is a
//! job of its own, after the commit; the tokens are destroyed once that has been attempted (at
//! once when there is nothing to tell). The channel row, its jobs and its audit trail stay.

use serde_json::json;

use super::{Answer, Begun, Context, Disposition, HandlerError, Inbound, begin, complete};
use crate::audit::{AuditEntry, action};
use crate::contract::inbound::{RevokeOrigin, RevokeRequested};
use crate::contract::outbound::{ConnectionRevoked, PlatformRevocation, RevokeRejected};
use crate::domain::{ErrorCode, ProviderName};
use crate::store;

pub async fn handle(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: RevokeRequested,
) -> Result<Disposition, HandlerError> {
    let Begun::Run(txn) = begin(ctx, inbound).await? else {
        return Ok(Disposition::Done);
    };
    let tenant = &inbound.envelope.tenant;
    let mut answer = Answer::to(inbound);

    let Some(channel) = store::channels::find_for_update(&txn, tenant, &request.channel_id).await? else {
        let details = json!({ "error_code": ErrorCode::NotFound, "event_type": "RevokeRequested" });
        let entry = AuditEntry {
            channel: None,
            action: action::EVENT_REJECTED,
            outcome: "rejected",
            origin: answer.origin(),
            details,
        };
        answer.audit(&txn, entry).await?;
        answer.finish(&RevokeRejected {
            channel_id: request.channel_id.clone(),
            error_code: ErrorCode::NotFound,
        });
        return complete(ctx, txn, inbound, answer).await;
    };

    if channel.status == "revoked" {
        // Revoking again answers what the first revocation did, once it is known.
        let recorded = channel
            .platform_revocation
            .as_deref()
            .and_then(PlatformRevocation::parse);
        let pending = store::jobs::find_open(&txn, tenant, channel.id, store::jobs::KIND_PLATFORM_REVOCATION).await?;
        match (recorded, pending) {
            (None, Some(job_id)) => store::jobs::add_waiter(&txn, tenant, job_id, inbound.as_waiter()).await?,
            (recorded, _) => answer.finish(&ConnectionRevoked {
                channel_id: request.channel_id.clone(),
                origin: channel
                    .revoked_origin
                    .as_deref()
                    .and_then(RevokeOrigin::parse)
                    .unwrap_or(request.origin),
                platform_revocation: recorded.unwrap_or(PlatformRevocation::Failed),
                cancelled_jobs: Vec::new(),
            }),
        }
        return complete(ctx, txn, inbound, answer).await;
    }

    store::channels::mark_revoked(&txn, tenant, channel.id, request.origin.as_str()).await?;
    let cancelled = store::jobs::cancel_channel_jobs(&txn, tenant, channel.id, "revoked", None).await?;
    crate::jobs::answer_cancelled(
        &txn,
        tenant,
        &request.channel_id,
        &cancelled,
        ErrorCode::ConnectionRevoked,
    )
    .await?;
    let provider = ProviderName::parse(channel.provider.clone())
        .ok()
        .and_then(|name| ctx.catalogue.provider(&name).ok());
    let platform_step = if request.origin == RevokeOrigin::Platform {
        // The platform told us: there is nothing left there to revoke.
        Some(PlatformRevocation::Skipped)
    } else if provider.is_none_or(|p| p.definition.revocation_url.is_none()) {
        Some(PlatformRevocation::Unsupported)
    } else {
        None
    };
    let details = json!({
        "origin": request.origin,
        "cancelled_jobs": cancelled,
        "generation": channel.generation,
        "reason_given": request.reason.is_some(),
    });
    let entry = AuditEntry {
        channel: Some(request.channel_id.clone()),
        action: action::CONNECTION_REVOKED,
        outcome: "success",
        origin: answer.origin(),
        details,
    };
    answer.audit(&txn, entry).await?;

    match platform_step {
        Some(result) => {
            store::tokens::delete_all(&txn, tenant, channel.id).await?;
            store::channels::record_platform_revocation(&txn, tenant, channel.id, result.as_str()).await?;
            answer.finish(&ConnectionRevoked {
                channel_id: request.channel_id.clone(),
                origin: request.origin,
                platform_revocation: result,
                cancelled_jobs: cancelled,
            });
        }
        None => {
            let payload =
                json!({ "origin": request.origin, "cancelled_jobs": cancelled, "generation": channel.generation });
            let job_id = store::jobs::create(
                &txn,
                tenant,
                channel.id,
                channel.channel_id.as_str(),
                store::jobs::KIND_PLATFORM_REVOCATION,
                crate::clock::now(),
                payload,
            )
            .await?;
            store::jobs::add_waiter(&txn, tenant, job_id, inbound.as_waiter()).await?;
        }
    }
    let disposition = complete(ctx, txn, inbound, answer).await?;
    ctx.jobs_ready.notify_one();
    Ok(disposition)
}
