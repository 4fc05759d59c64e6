//! The refresh job: the only place a channel's token endpoint is called after the first exchange.
//!
//! The job row is the single flight: one pending-or-running refresh per channel (a unique
//! index), claimed by one runner at a time (`SKIP LOCKED` plus a lease). The platform call runs
//! outside any transaction; its result is written only if, under the channel's row lock, the
//! channel is still active at the token version the call started from and the job was not
//! cancelled. Anything else is fenced out: a late result never overwrites newer tokens or
//! revives a revoked channel.

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use entity::jobs::Model as Job;
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use super::refresh_batch::{Landed, Landing, RefreshBatcher};
use super::reports::Reports;
use crate::audit::action;
use crate::contract::outbound::{ConnectionReauthRequired, TokenRefreshFailed, TokenRefreshed};
use crate::domain::secrets::{AccessToken, RefreshToken};
use crate::domain::{ChannelId, ErrorCode, ProviderName, TenantId};
use crate::handlers::{Context, HandlerError};
use crate::platform::{PlatformError, TokenGrant};
use crate::store::{self, jobs::Schedule};
use crate::vault::{Binding, Sealed, SecretKind};

/// Whose job this is, read once when it starts.
#[derive(Clone)]
pub(super) struct Subject {
    pub(super) tenant: TenantId,
    pub(super) channel: ChannelId,
    pub(super) channel_pk: Uuid,
    pub(super) job_id: Uuid,
    pub(super) attempts: u32,
    pub(super) token_version: i64,
    /// Until when this runner owns the job.
    pub(super) lease_until: Option<chrono::DateTime<Utc>>,
}

/// The refresh jobs the scheduler claimed, each with the channel and token it starts from, all
/// read in one statement. A job naming an invalid tenant or a channel that is gone is failed
/// here, not run.
pub async fn prepare(ctx: &Context, jobs: Vec<Job>) -> Result<Vec<Claimed>, HandlerError> {
    let mut valid = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(tenant) = job_tenant(ctx, &job).await? {
            valid.push((tenant, job));
        }
    }
    let keys: Vec<(&TenantId, Uuid)> = valid.iter().map(|(tenant, job)| (tenant, job.channel_pk)).collect();
    // Nothing has been called yet, so a database outage here is waited out rather than left
    // to the lease (a minute).
    let read = || store::channels::refresh_sources(&ctx.db, &keys);
    let mut sources = read
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(100))
                .with_max_delay(std::time::Duration::from_secs(5))
                .with_max_times(8),
        )
        .await?;
    let mut claimed = Vec::with_capacity(valid.len());
    for (tenant, job) in valid {
        let Some(source) = sources.remove(&job.channel_pk) else {
            store::jobs::finish(&ctx.db, &tenant, job.id, "failed", Some("not_found"), None).await?;
            continue;
        };
        let kind = renewal_kind(configured(ctx, &source.provider));
        let sealed = source
            .tokens
            .into_iter()
            .find_map(|(stored, sealed)| (stored == kind.as_str()).then_some(sealed));
        claimed.push(Claimed {
            job,
            status: source.status,
            provider: source.provider,
            token_version: source.token_version,
            sealed,
        });
    }
    Ok(claimed)
}

/// The channel's provider, if this deployment still configures it.
pub fn configured<'a>(ctx: &'a Context, provider: &str) -> Option<&'a crate::platform::Provider> {
    ProviderName::parse(provider.to_owned())
        .ok()
        .and_then(|name| ctx.catalogue.provider(&name).ok())
}

/// The token a refresh renews with: Meta, Instagram and Threads trade the access token itself;
/// everyone else uses the refresh token.
pub fn renewal_kind(provider: Option<&crate::platform::Provider>) -> SecretKind {
    match provider {
        Some(provider) if provider.renews_with_access_token() => SecretKind::AccessToken,
        _ => SecretKind::RefreshToken,
    }
}

/// A claimed refresh job with the channel as it stood when the job was claimed and the sealed
/// token to renew with (none: the grant has nothing to renew with), read in one snapshot.
pub struct Claimed {
    job: Job,
    status: String,
    provider: String,
    token_version: i64,
    sealed: Option<Sealed>,
}

impl Claimed {
    pub fn new(job: Job, channel: &entity::channels::Model, sealed: Sealed) -> Self {
        Self {
            job,
            status: channel.status.clone(),
            provider: channel.provider.clone(),
            token_version: channel.token_version,
            sealed: Some(sealed),
        }
    }

    pub fn job(&self) -> &Job {
        &self.job
    }
}

pub async fn run_claimed(ctx: &Context, claimed: Claimed) -> Result<(), HandlerError> {
    let Some(tenant) = job_tenant(ctx, &claimed.job).await? else {
        return Ok(());
    };
    let job = claimed.job;
    let Ok(channel) = ChannelId::parse(job.channel_id.clone()) else {
        return Ok(());
    };
    let subject = Subject {
        tenant,
        channel,
        channel_pk: job.channel_pk,
        job_id: job.id,
        attempts: u32::try_from(job.attempts).unwrap_or(u32::MAX),
        token_version: claimed.token_version,
        lease_until: job.lease_until,
    };
    let attempt = if claimed.status == "active" {
        call(ctx, &subject, &claimed.provider, claimed.sealed).await
    } else {
        Attempt::Inactive
    };
    conclude(ctx, subject, attempt).await
}

/// The job's tenant; a job naming an invalid tenant or channel is failed, not run.
async fn job_tenant(ctx: &Context, job: &Job) -> Result<Option<TenantId>, HandlerError> {
    match (
        TenantId::parse(job.tenant_id.clone()),
        ChannelId::parse(job.channel_id.clone()),
    ) {
        (Ok(tenant), Ok(_)) => Ok(Some(tenant)),
        _ => {
            tracing::error!(job = %job.id, "a refresh job names an invalid tenant or channel; failing it");
            let tenant = TenantId::unattributed();
            store::jobs::finish(&ctx.db, &tenant, job.id, "failed", Some("invalid_event"), None).await?;
            Ok(None)
        }
    }
}

enum Attempt {
    /// The channel was not active when the job started: no call was made.
    Inactive,
    Called(Result<TokenGrant, PlatformError>),
}

async fn call(ctx: &Context, subject: &Subject, provider: &str, sealed: Option<Sealed>) -> Attempt {
    let Some(provider) = configured(ctx, provider) else {
        return Attempt::Called(Err(PlatformError::new(
            ErrorCode::UnknownProvider,
            "the channel's provider is no longer configured",
        )));
    };
    let kind = renewal_kind(Some(provider));
    let binding = Binding {
        tenant: &subject.tenant,
        channel: &subject.channel,
        kind,
        context: "",
    };
    let Some(sealed) = sealed else {
        return Attempt::Called(Err(PlatformError::new(
            ErrorCode::ReauthRequired,
            "the grant has no token to renew with",
        )));
    };
    let plaintext = match ctx.vault.open(&binding, &sealed) {
        Ok(plaintext) => plaintext,
        Err(error) => {
            tracing::error!(%error, tenant = %subject.tenant, channel = %subject.channel, "a stored token failed to open");
            return Attempt::Called(Err(PlatformError::new(
                ErrorCode::ReauthRequired,
                "the stored token could not be read",
            )));
        }
    };
    let result = match kind {
        SecretKind::AccessToken => {
            ctx.oauth
                .renew_access_token(provider, &AccessToken::new(plaintext.to_string()))
                .await
        }
        _ => {
            ctx.oauth
                .refresh(provider, &RefreshToken::new(plaintext.to_string()))
                .await
        }
    };
    Attempt::Called(result)
}

/// Stores a successful result (in a batch with others), or records why nothing was stored.
async fn conclude(ctx: &Context, subject: Subject, attempt: Attempt) -> Result<(), HandlerError> {
    let attempt = match attempt {
        Attempt::Called(Ok(grant)) => {
            let landing = Landing::seal(ctx, subject.clone(), grant);
            let landed = match ctx.refreshes.land(ctx, landing).await {
                Landed::Failed(landing, _) => land_alone_retrying(ctx, *landing).await,
                landed => landed,
            };
            match landed {
                Landed::Stored => return Ok(()),
                Landed::Fenced(landing) => Attempt::Called(Ok(landing.grant)),
                Landed::Failed(_, error) => return Err(error),
                Landed::Lost => {
                    tracing::error!(job = %subject.job_id, "a refresh result was lost with its batch; the job runs again when its lease lapses");
                    return Ok(());
                }
            }
        }
        attempt => attempt,
    };
    conclude_unstored(ctx, &subject, attempt).await
}

/// Stores a result whose batch failed on its own, retrying while the database is away: the
/// platform has already rotated the tokens, so giving up would cost the user the grant. It
/// stops while the job's lease still holds, so no other runner can take the job back and
/// replay the old refresh token meanwhile.
async fn land_alone_retrying(ctx: &Context, mut landing: Landing) -> Landed {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let lease_left = landing
            .subject
            .lease_until
            .map_or(chrono::Duration::zero(), |until| until - crate::clock::now());
        let retry_fits = chrono::Duration::from_std(delay * 2).is_ok_and(|needed| lease_left > needed);
        match RefreshBatcher::land_alone(ctx, landing).await {
            Landed::Failed(back, error) if retry_fits => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "storing a refresh failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
                landing = *back;
            }
            landed => return landed,
        }
    }
}

/// Everything but a stored refresh: a result fenced out, a failure, or a job that found its
/// channel inactive.
async fn conclude_unstored(ctx: &Context, subject: &Subject, attempt: Attempt) -> Result<(), HandlerError> {
    let txn = ctx.db.begin().await?;
    let tenant = &subject.tenant;
    let channel = store::channels::find_by_pk_for_update(&txn, tenant, subject.channel_pk).await?;
    let job = store::jobs::lock_running(&txn, tenant, subject.job_id).await?;
    let waiters = store::jobs::open_waiters(&txn, tenant, subject.job_id).await?;
    let Some(channel) = channel else {
        txn.rollback().await?;
        return Ok(());
    };
    let mut reports = Reports::new(&subject.tenant, &subject.channel, subject.job_id, &waiters);

    let fenced = if job.is_none() {
        Some("cancelled")
    } else if channel.status != "active" {
        Some("inactive")
    } else if channel.token_version != subject.token_version {
        Some("superseded")
    } else {
        None
    };
    // A job that found the channel inactive made no call; if the channel is active again now,
    // a new grant replaced the old one meanwhile.
    // A grant here was fenced out of its batch: it is late whatever this transaction sees.
    let (result, late_grant) = match attempt {
        Attempt::Called(Ok(grant)) => (Err(fenced.unwrap_or("superseded")), Some(grant)),
        Attempt::Called(Err(error)) if fenced.is_none() => (Ok(error), None),
        _ => (Err(fenced.unwrap_or("superseded")), None),
    };
    // Tokens a late refresh brought back for a channel revoked meanwhile are live at the
    // platform; they are revoked there too once this transaction is done.
    let orphaned =
        late_grant.filter(|_| channel.status == "revoked" && channel.revoked_origin.as_deref() != Some("platform"));
    let provider = channel.provider.clone();
    match result {
        Err(reason) => {
            // Nothing of the result is written: the channel moved on while the call was out.
            if job.is_some() {
                store::jobs::finish(&txn, tenant, subject.job_id, "cancelled", None, Some(reason)).await?;
            }
            crate::metrics::refresh_settled("discarded");
            let details = json!({ "job_id": subject.job_id, "discarded": reason, "status": channel.status });
            reports
                .audit(&txn, action::TOKEN_REFRESH_DISCARDED, "discarded", details)
                .await?;
            match channel.status.as_str() {
                "active" => {
                    reports.finish(&TokenRefreshed {
                        channel_id: subject.channel.clone(),
                        expires_at: channel.expires_at,
                        refresh_token_rotated: false,
                        attempts: subject.attempts,
                    });
                    reschedule_current(ctx, &txn, subject, &channel).await?;
                }
                status => {
                    let code = if status == "revoked" {
                        ErrorCode::ConnectionRevoked
                    } else {
                        ErrorCode::ReauthRequired
                    };
                    reports.finish(&failed(subject, code, false, None));
                }
            }
        }
        // A transient failure is retried while there is time. A refusal of this deployment's own
        // client credentials or catalogue is not the user's grant failing: the refresh fails
        // and the channel stays active with its tokens, for the next request after the fix.
        Ok(error) if error.is_transient() || error.code.is_deployment_fault() => {
            let now = crate::clock::now();
            let delay = if error.is_transient() {
                ctx.settings
                    .refresh
                    .retry_delay(subject.attempts, error.retry_after, now, channel.expires_at)
            } else {
                tracing::error!(code = %error.code, provider = %provider, "a refresh failed on this deployment's configuration; the channel is left as it was");
                None
            };
            let details = json!({ "job_id": subject.job_id, "error_code": error.code, "attempts": subject.attempts });
            match delay.and_then(|d| chrono::Duration::from_std(d).ok()) {
                Some(delay) => {
                    crate::metrics::refresh_settled("retrying");
                    let next = now + delay;
                    store::jobs::retry_at(&txn, tenant, subject.job_id, next, error.code.as_str()).await?;
                    reports
                        .audit(&txn, action::TOKEN_REFRESH_FAILED, "retrying", details)
                        .await?;
                    reports.progress(&failed(subject, error.code, true, Some(next)));
                }
                None => {
                    crate::metrics::refresh_settled("failed");
                    store::jobs::finish(&txn, tenant, subject.job_id, "failed", Some(error.code.as_str()), None)
                        .await?;
                    reports
                        .audit(&txn, action::TOKEN_REFRESH_FAILED, "failure", details)
                        .await?;
                    reports.finish(&failed(subject, error.code, false, None));
                }
            }
        }
        Ok(error) => {
            // The grant is dead: halt the channel until the user consents again.
            crate::metrics::refresh_settled("reauth_required");
            store::channels::set_status(&txn, tenant, subject.channel_pk, "reauth_required").await?;
            store::jobs::finish(&txn, tenant, subject.job_id, "failed", Some(error.code.as_str()), None).await?;
            let cancelled = store::jobs::cancel_channel_jobs(
                &txn,
                tenant,
                subject.channel_pk,
                "reauth_required",
                Some(subject.job_id),
            )
            .await?;
            super::answer_cancelled(&txn, tenant, &subject.channel, &cancelled, ErrorCode::ReauthRequired).await?;
            let details = json!({ "job_id": subject.job_id, "error_code": error.code, "cancelled_jobs": cancelled });
            reports
                .audit(&txn, action::CONNECTION_REAUTH_REQUIRED, "failure", details)
                .await?;
            reports.finish(&ConnectionReauthRequired {
                channel_id: subject.channel.clone(),
                error_code: error.code,
                cancelled_jobs: cancelled,
            });
        }
    }
    reports.write(&txn).await?;
    txn.commit().await?;
    ctx.outbox_ready.notify_one();
    ctx.jobs_ready.notify_one();
    ctx.tokens_changed.notify_waiters();
    if let Some(grant) = orphaned {
        revoke_orphaned(ctx, &provider, grant).await;
    }
    Ok(())
}

async fn revoke_orphaned(ctx: &Context, provider: &str, grant: TokenGrant) {
    let Some(provider) = ProviderName::parse(provider.to_owned())
        .ok()
        .and_then(|n| ctx.catalogue.provider(&n).ok())
    else {
        return;
    };
    if provider.definition.revocation_url.is_none() {
        return;
    }
    let revoked = ctx
        .oauth
        .revoke_grant(provider, grant.refresh_token.as_ref(), Some(&grant.access_token))
        .await;
    if let Err(error) = revoked {
        tracing::warn!(code = %error.code, "revoking the tokens of a discarded refresh failed");
    }
}

/// After a discarded result, makes sure the current grant still has its next refresh.
async fn reschedule_current(
    ctx: &Context,
    txn: &DatabaseTransaction,
    subject: &Subject,
    channel: &entity::channels::Model,
) -> Result<(), HandlerError> {
    if let (Some(expires_at), Some(updated_at)) = (channel.expires_at, channel.tokens_updated_at)
        && let Ok(lifetime) = (expires_at - updated_at).to_std()
    {
        schedule_next(ctx, txn, subject, updated_at, lifetime).await?;
    }
    Ok(())
}

/// The built-in schedule: the next refresh of a token issued at `issued_at` for `lifetime`.
async fn schedule_next(
    ctx: &Context,
    txn: &DatabaseTransaction,
    subject: &Subject,
    issued_at: chrono::DateTime<chrono::Utc>,
    lifetime: std::time::Duration,
) -> Result<(), HandlerError> {
    let next = ctx.settings.refresh.next_refresh(issued_at, lifetime);
    let (tenant, channel) = (&subject.tenant, subject.channel.as_str());
    store::jobs::schedule_refresh(txn, tenant, subject.channel_pk, channel, next, Schedule::Replace).await?;
    Ok(())
}

fn failed(
    subject: &Subject,
    code: ErrorCode,
    retryable: bool,
    next_attempt_at: Option<chrono::DateTime<Utc>>,
) -> TokenRefreshFailed {
    TokenRefreshFailed {
        channel_id: Some(subject.channel.clone()),
        error_code: code,
        retryable,
        attempts: subject.attempts,
        next_attempt_at,
    }
}
