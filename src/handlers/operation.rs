//! `OperationRequested`: the grant is checked before anything else; then the call runs with a
//! token resolved for it alone, or, with a future `run_at`, becomes a job of the channel.
//!
//! The platform call happens between two transactions, like a code exchange. A crash after the
//! platform answered and before the outcome committed re-runs the call when the event comes
//! back: platforms offer no general way to make a write idempotent, so this is at-least-once.

use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::{Value, json};
use tracing::Instrument;

use super::{Answer, Begun, Context, Disposition, HandlerError, Inbound, begin, complete};
use crate::access::{self, Refusal};
use crate::audit::{AuditEntry, action};
use crate::contract::inbound::OperationRequested;
use crate::contract::outbound::{OperationCompleted, OperationRejected};
use crate::domain::{Capability, ChannelId, ErrorCode, TenantId};
use crate::platform::api::{self, ApiResponse, CheckedRequest};
use crate::store::{self, inbox, jobs::Schedule};

pub async fn handle(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: OperationRequested,
) -> Result<Disposition, HandlerError> {
    let Begun::Run(txn) = begin(ctx, inbound).await? else {
        return Ok(Disposition::Done);
    };
    let tenant = &inbound.envelope.tenant;
    let (channel, capability) = (&request.channel_id, &request.capability);
    let mut answer = Answer::to(inbound);
    let checked = match access::check(&txn, &ctx.catalogue, tenant, channel, capability).await? {
        Ok(allowed) => {
            api::check(&allowed.provider, &request.request).map_err(|_| Refusal::new(ErrorCode::InvalidRequest))
        }
        Err(refusal) => Err(refusal),
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(refusal) => {
            let (entry, outcome) = report(
                &answer.origin(),
                channel,
                capability,
                &request.request.method,
                Executed::Rejected(refusal),
            );
            answer.audit(&txn, entry).await?;
            outcome.finish(&mut answer);
            return complete(ctx, txn, inbound, answer).await;
        }
    };

    if let Some(run_at) = request.run_at.filter(|at| *at > crate::clock::now()) {
        return defer(ctx, txn, inbound, answer, &request, run_at, Deferral::Scheduled).await;
    }

    // The inbox row stays 'processing' under its lease while the platform is called.
    txn.commit().await?;
    let executed = execute(ctx, tenant, channel, capability, &checked).await?;
    let txn = ctx.db.begin().await?;
    if !inbox::lock_if_processing(&txn, tenant, inbound.envelope.id.as_str()).await? {
        txn.rollback().await?;
        return Ok(Disposition::Done);
    }
    let mut answer = Answer::to(inbound);
    if let Some(delay) = retry_delay(ctx, &executed, 1).filter(|_| request.retryable) {
        // Answered when a later attempt settles it.
        let run_at = crate::clock::now() + delay;
        return defer(ctx, txn, inbound, answer, &request, run_at, Deferral::Retry).await;
    }
    let (entry, outcome) = report(&answer.origin(), channel, capability, &request.request.method, executed);
    answer.audit(&txn, entry).await?;
    outcome.finish(&mut answer);
    complete(ctx, txn, inbound, answer).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferral {
    /// A future `run_at`.
    Scheduled,
    /// A retryable call that failed transiently on its first attempt.
    Retry,
}

/// Makes the operation a job of its channel due at `run_at`, answered when it runs.
async fn defer(
    ctx: &Context,
    txn: DatabaseTransaction,
    inbound: &Inbound<'_>,
    mut answer: Answer<'_>,
    request: &OperationRequested,
    run_at: chrono::DateTime<chrono::Utc>,
    deferral: Deferral,
) -> Result<Disposition, HandlerError> {
    let tenant = &inbound.envelope.tenant;
    let (channel, capability) = (&request.channel_id, &request.capability);
    let Some(row) = store::channels::find(&txn, tenant, channel).await? else {
        return Err(HandlerError::Database(sea_orm::DbErr::RecordNotFound("channel".into())));
    };
    let retry = deferral == Deferral::Retry;
    let payload = json!({
        "capability": capability,
        "request": request.request,
        "retryable": request.retryable,
        "after_attempts": u32::from(retry),
    });
    let kind = store::jobs::KIND_OPERATION;
    let job_id = store::jobs::create(&txn, tenant, row.id, channel.as_str(), kind, run_at, payload).await?;
    store::jobs::add_waiter(&txn, tenant, job_id, inbound.as_waiter()).await?;
    let entry = AuditEntry {
        channel: Some(channel.clone()),
        action: action::OPERATION_SCHEDULED,
        outcome: if retry { "retrying" } else { "success" },
        origin: answer.origin(),
        details: json!({ "capability": capability, "job_id": job_id, "run_at": run_at, "retry": retry }),
    };
    answer.audit(&txn, entry).await?;
    let disposition = complete(ctx, txn, inbound, answer).await?;
    ctx.jobs_ready.notify_one();
    Ok(disposition)
}

/// When a retryable operation should be tried again after `attempts` tries, if at all: only
/// for a 429, a 5xx or a transient transport failure, within the refresh backoff's attempts.
pub(crate) fn retry_delay(ctx: &Context, executed: &Executed, attempts: u32) -> Option<chrono::Duration> {
    let retry_after = match executed {
        Executed::Completed(response) if response.status == 429 || response.status >= 500 => response.retry_after,
        Executed::Rejected(refusal) if refusal.code.is_transient() => None,
        _ => return None,
    };
    let delay = ctx
        .settings
        .refresh
        .retry_delay(attempts, retry_after, crate::clock::now(), None)?;
    chrono::Duration::from_std(delay).ok()
}

/// What running an operation came to.
pub(crate) enum Executed {
    Completed(ApiResponse),
    Rejected(Refusal),
}

/// Resolves the token (re-checking the grant), calls the platform, and on a 401 refreshes the
/// token through the channel's single-flight refresh job and tries once more.
pub(crate) async fn execute(
    ctx: &Context,
    tenant: &TenantId,
    channel: &ChannelId,
    capability: &Capability,
    request: &CheckedRequest,
) -> Result<Executed, HandlerError> {
    let mut refreshed = false;
    loop {
        let (allowed, token) = match access::resolve(ctx, tenant, channel, capability).await? {
            Ok(resolved) => resolved,
            Err(refusal) => return Ok(Executed::Rejected(refusal)),
        };
        let started = std::time::Instant::now();
        // Method, host and status only: never the path's values, a query, a header or a body.
        let span = tracing::info_span!(
            "platform call",
            otel.name = %format!("api {}", request.method),
            otel.kind = "client",
            http.request.method = %request.method,
            server.address = request.url.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
        );
        let max_body = ctx.settings.operation_max_body;
        let response = api::send(ctx.oauth.http(), request, token.token(), max_body)
            .instrument(span.clone())
            .await;
        let outcome = match &response {
            Ok(response) => {
                span.record("http.response.status_code", response.status);
                format!("{}xx", response.status / 100)
            }
            Err(error) => error.code.as_str().to_owned(),
        };
        crate::metrics::platform_call(allowed.provider.name().as_str(), "api", &outcome, started);
        drop(token);
        match response {
            Ok(response) if response.token_refused && !refreshed => {
                refreshed = true;
                refresh_and_wait(ctx, tenant, &allowed.channel).await?;
            }
            Ok(response) => return Ok(Executed::Completed(response)),
            Err(error) => return Ok(Executed::Rejected(Refusal::new(error.code))),
        }
    }
}

/// Pulls the channel's refresh forward and waits (bounded) until it has stored a new token.
async fn refresh_and_wait(
    ctx: &Context,
    tenant: &TenantId,
    channel: &entity::channels::Model,
) -> Result<(), HandlerError> {
    let txn = ctx.db.begin().await?;
    let now = crate::clock::now();
    store::jobs::schedule_refresh(
        &txn,
        tenant,
        channel.id,
        &channel.channel_id,
        now,
        Schedule::NoLaterThan,
    )
    .await?;
    txn.commit().await?;
    ctx.jobs_ready.notify_one();
    let deadline = tokio::time::Instant::now() + ctx.settings.http_timeout * 2;
    loop {
        let changed = ctx.tokens_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let current = store::channels::find_by_pk(&ctx.db, tenant, channel.id).await?;
        let moved_on = current.is_none_or(|row| row.token_version != channel.token_version || row.status != "active");
        if moved_on || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        // A refresh on another replica does not wake us; look again shortly.
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

/// The outcome of an operation, final either way.
pub(crate) enum OperationOutcome {
    Completed(OperationCompleted),
    Rejected(OperationRejected),
}

impl OperationOutcome {
    pub(crate) fn finish(&self, answer: &mut Answer<'_>) {
        match self {
            Self::Completed(data) => answer.finish(data),
            Self::Rejected(data) => answer.finish(data),
        }
    }
}

/// The audit record and the outcome for an operation's result.
pub(crate) fn report(
    origin: &str,
    channel: &ChannelId,
    capability: &Capability,
    method: &str,
    executed: Executed,
) -> (AuditEntry, OperationOutcome) {
    let method = method.to_ascii_uppercase();
    let method = if api::METHODS.contains(&method.as_str()) {
        Value::String(method)
    } else {
        Value::Null
    };
    match executed {
        Executed::Completed(response) => (
            AuditEntry {
                channel: Some(channel.clone()),
                action: action::OPERATION_COMPLETED,
                outcome: "success",
                origin: origin.to_owned(),
                details: json!({ "capability": capability, "method": method, "status": response.status, "truncated": response.truncated }),
            },
            OperationOutcome::Completed(OperationCompleted {
                channel_id: channel.clone(),
                capability: capability.clone(),
                status: response.status,
                body: response.body,
                truncated: response.truncated,
            }),
        ),
        Executed::Rejected(refusal) => (
            AuditEntry {
                channel: Some(channel.clone()),
                action: action::OPERATION_REJECTED,
                outcome: "rejected",
                origin: origin.to_owned(),
                details: json!({ "capability": capability, "error_code": refusal.code, "missing_scopes": refusal.missing_scopes }),
            },
            OperationOutcome::Rejected(OperationRejected {
                channel_id: Some(channel.clone()),
                capability: Some(capability.clone()),
                error_code: refusal.code,
                missing_scopes: refusal.missing_scopes,
            }),
        ),
    }
}
