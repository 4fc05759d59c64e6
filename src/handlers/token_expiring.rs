//! `TokenExpiring` pulls the channel's refresh forward. It never calls the platform itself: it
//! joins the channel's one refresh job (creating it if none is pending) and registers as one of
//! the events that job answers. A storm of these is one platform call and one answer each.

use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::{Answer, Begun, Context, Disposition, HandlerError, Inbound, begin, complete};
use crate::audit::{AuditEntry, action};
use crate::contract::inbound::TokenExpiring;
use crate::contract::outbound::{TokenRefreshFailed, TokenRefreshed};
use crate::domain::ErrorCode;
use crate::jobs::refresh::Claimed;
use crate::store::{self, jobs::RefreshStart, jobs::Schedule};
use crate::vault::SecretKind;

pub async fn handle(ctx: &Context, inbound: &Inbound<'_>, request: TokenExpiring) -> Result<Disposition, HandlerError> {
    let Begun::Run(txn) = begin(ctx, inbound).await? else {
        return Ok(Disposition::Done);
    };
    let tenant = &inbound.envelope.tenant;
    let mut answer = Answer::to(inbound);
    // The channel's row lock orders this against a refresh finishing right now.
    let Some(channel) = store::channels::find_for_update(&txn, tenant, &request.channel_id).await? else {
        refuse(&txn, &mut answer, &request, ErrorCode::NotFound, false).await?;
        return complete(ctx, txn, inbound, answer).await;
    };
    let refusal = match channel.status.as_str() {
        "active" => None,
        "revoked" => Some(ErrorCode::ConnectionRevoked),
        "reauth_required" => Some(ErrorCode::ReauthRequired),
        _ => Some(ErrorCode::ConnectionNotActive),
    };
    if let Some(code) = refusal {
        refuse(&txn, &mut answer, &request, code, true).await?;
        return complete(ctx, txn, inbound, answer).await;
    }

    let now = crate::clock::now();
    let provider = crate::domain::ProviderName::parse(channel.provider.clone())
        .ok()
        .and_then(|name| ctx.catalogue.provider(&name).ok());
    // Instagram and Threads refuse to renew a token younger than a day: until then, the one
    // there is is the freshest there can be.
    let debounce = provider
        .map_or(std::time::Duration::ZERO, |p| p.min_renewal_age())
        .max(ctx.settings.refresh.debounce);
    let debounce = chrono::Duration::from_std(debounce).unwrap_or_default();
    let just_replaced = channel.tokens_updated_at.is_some_and(|at| now - at < debounce);
    let already_newer =
        matches!((request.expires_at, channel.expires_at), (Some(asked), Some(current)) if current > asked);
    let still_valid = channel.expires_at.is_none_or(|at| at > now);
    if channel.expires_at.is_none() || (still_valid && (just_replaced || already_newer)) {
        // Fresh enough, or a token that never expires: describe it, call nobody.
        answer.finish(&TokenRefreshed {
            channel_id: request.channel_id.clone(),
            expires_at: channel.expires_at,
            refresh_token_rotated: false,
            attempts: 0,
        });
        return complete(ctx, txn, inbound, answer).await;
    }
    // The token the refresh will renew with, read under the row lock at the same token version.
    let kind = if provider.is_some_and(|provider| provider.renews_with_access_token()) {
        SecretKind::AccessToken
    } else {
        SecretKind::RefreshToken
    };
    let sealed = store::tokens::load(&txn, tenant, channel.id, kind).await?;
    if sealed.is_none() && kind == SecretKind::RefreshToken {
        refuse(&txn, &mut answer, &request, ErrorCode::ReauthRequired, true).await?;
        return complete(ctx, txn, inbound, answer).await;
    }

    // With a free job slot, this event creates the refresh already claimed and runs it as soon
    // as this transaction commits; otherwise (or if the channel's refresh exists) it joins the
    // schedule.
    let slot = sealed.as_ref().and_then(|_| ctx.jobs.try_take());
    let (job_id, claimed) = match slot {
        Some(slot) => {
            let lease = ctx.settings.job_lease;
            match store::jobs::start_refresh(&txn, tenant, channel.id, channel.channel_id.as_str(), lease).await? {
                RefreshStart::Claimed(job) => (job.id, Some((job, slot))),
                RefreshStart::Joined(job_id) => (job_id, None),
            }
        }
        None => {
            let job_id = store::jobs::schedule_refresh(
                &txn,
                tenant,
                channel.id,
                channel.channel_id.as_str(),
                now,
                Schedule::NoLaterThan,
            )
            .await?;
            (job_id, None)
        }
    };
    store::jobs::add_waiter(&txn, tenant, job_id, inbound.as_waiter()).await?;
    complete(ctx, txn, inbound, answer).await?;
    match (claimed, sealed) {
        (Some((job, slot)), Some(sealed)) => {
            let claimed = Claimed::new(*job, &channel, sealed);
            let runner = ctx.clone();
            ctx.jobs.spawn(ctx, slot, async move {
                crate::jobs::run_claimed_refresh(&runner, claimed).await
            });
        }
        _ => ctx.jobs_ready.notify_one(),
    }
    Ok(Disposition::Done)
}

async fn refuse(
    txn: &DatabaseTransaction,
    answer: &mut Answer<'_>,
    request: &TokenExpiring,
    code: ErrorCode,
    channel_exists: bool,
) -> Result<(), HandlerError> {
    // An unknown channel gets no audit chain of its own.
    let channel = channel_exists.then(|| request.channel_id.clone());
    let entry = AuditEntry {
        channel,
        action: action::TOKEN_REFRESH_FAILED,
        outcome: "rejected",
        origin: answer.origin(),
        details: json!({ "error_code": code }),
    };
    answer.audit(txn, entry).await?;
    answer.finish(&TokenRefreshFailed {
        channel_id: Some(request.channel_id.clone()),
        error_code: code,
        retryable: false,
        attempts: 0,
        next_attempt_at: None,
    });
    Ok(())
}
