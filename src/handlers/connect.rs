//! `ConnectRequested` → `ConnectionEstablished` or `ConnectionFailed`.
//!
//! Two transactions around the platform call: the first claims the event and spends the state;
//! the second stores the tokens, the grant and the answer. A crash in between re-runs the
//! exchange with the same code: a platform that already redeemed it answers `invalid_grant` and,
//! per RFC 6749 §4.1.2, revokes what it issued, so no grant is left dangling.

use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde_json::json;
use url::Url;

use super::consent_url::hash_state;
use super::{Answer, Begun, Context, Disposition, HandlerError, Inbound, begin, complete};
use crate::audit::{AuditEntry, action, hex};
use crate::contract::inbound::ConnectRequested;
use crate::contract::outbound::ConnectionEstablished;
use crate::domain::secrets::{AuthCode, PkceVerifier};
use crate::domain::{Capability, ChannelId, ErrorCode, ScopeSet};
use crate::platform::{PlatformError, Provider, TokenGrant};
use crate::store::{self, channels::Connected, inbox, jobs::Schedule};
use crate::vault::{Binding, Sealed, SecretKind};

/// Everything the exchange needs once the first transaction has committed.
struct Exchange {
    channel: ChannelId,
    provider: Provider,
    redirect_uri: Url,
    requested: ScopeSet,
    capabilities: Vec<Capability>,
    state_hash: [u8; 32],
    code: AuthCode,
    verifier: Option<PkceVerifier>,
}

enum FirstStep {
    Answered,
    Exchange(Box<Exchange>),
}

pub async fn handle(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: ConnectRequested,
) -> Result<Disposition, HandlerError> {
    let Begun::Run(txn) = begin(ctx, inbound).await? else {
        return Ok(Disposition::Done);
    };
    let exchange = match claim_state(ctx, inbound, request, txn).await? {
        FirstStep::Answered => return Ok(Disposition::Done),
        FirstStep::Exchange(exchange) => *exchange,
    };

    let Exchange {
        channel,
        provider,
        redirect_uri,
        requested,
        capabilities,
        state_hash,
        code,
        verifier,
    } = exchange;
    let result = ctx.oauth.exchange_code(&provider, code, verifier, &redirect_uri).await;

    let txn = ctx.db.begin().await?;
    let tenant = &inbound.envelope.tenant;
    if !inbox::lock_if_processing(&txn, tenant, inbound.envelope.id.as_str()).await? {
        // Another run of this event answered while we were away; its answer stands.
        txn.rollback().await?;
        return Ok(Disposition::Done);
    }
    let mut answer = Answer::to(inbound);
    match result {
        Ok(grant) => {
            let established =
                store_grant(ctx, &txn, tenant, &channel, &provider, &requested, &capabilities, grant).await?;
            store::authorizations::forget_verifier(&txn, tenant, &state_hash).await?;
            let details = json!({
                "provider": provider.name(),
                "requested_scopes": established.requested_scopes,
                "granted_scopes": established.granted_scopes,
                "missing_scopes": established.missing_scopes,
            });
            let entry = AuditEntry {
                channel: Some(channel),
                action: action::AUTHORIZATION_GRANTED,
                outcome: "success",
                origin: answer.origin(),
                details,
            };
            answer.audit(&txn, entry).await?;
            answer.finish(&established);
        }
        Err(error) => {
            if error.is_transient() {
                // The code may still be good: give the state back so the callback can be retried.
                store::authorizations::release(&txn, tenant, &state_hash, inbound.envelope.id.as_str()).await?;
            } else {
                store::authorizations::forget_verifier(&txn, tenant, &state_hash).await?;
            }
            refuse(&txn, &mut answer, Some(channel), &error).await?;
        }
    }
    let disposition = complete(ctx, txn, inbound, answer).await?;
    ctx.jobs_ready.notify_one();
    Ok(disposition)
}

/// The first transaction: checks the state and spends it, or answers the refusal.
async fn claim_state(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: ConnectRequested,
    txn: DatabaseTransaction,
) -> Result<FirstStep, HandlerError> {
    let tenant = &inbound.envelope.tenant;
    let event_id = inbound.envelope.id.as_str();
    let state_hash = hash_state(&request.state);
    let mut answer = Answer::to(inbound);

    let authorization = store::authorizations::find_for_update(&txn, tenant, &state_hash).await?;
    let refusal = |code, message| PlatformError::new(code, message);
    let Some(authorization) = authorization else {
        refuse(
            &txn,
            &mut answer,
            None,
            &refusal(ErrorCode::StateUnknown, "the state is not one this worker issued"),
        )
        .await?;
        complete(ctx, txn, inbound, answer).await?;
        return Ok(FirstStep::Answered);
    };
    let channel = ChannelId::parse(authorization.channel_id.clone()).ok();
    let spent_by_other = authorization
        .used_by_event
        .as_deref()
        .is_some_and(|used_by| used_by != event_id);
    let early_refusal = if spent_by_other {
        Some(refusal(ErrorCode::StateReused, "the state was already used"))
    } else if authorization.used_at.is_none() && authorization.expires_at <= crate::clock::now() {
        Some(refusal(
            ErrorCode::StateExpired,
            "the state expired before the user came back",
        ))
    } else {
        None
    };
    if let Some(error) = early_refusal {
        refuse(&txn, &mut answer, channel, &error).await?;
        complete(ctx, txn, inbound, answer).await?;
        return Ok(FirstStep::Answered);
    }

    store::authorizations::mark_used(&txn, tenant, &state_hash, event_id).await?;
    if let Some(error) = request.error.as_deref() {
        store::authorizations::forget_verifier(&txn, tenant, &state_hash).await?;
        // `error` is an RFC 6749 code; anything else is not echoed into the audit trail.
        let platform_error = Some(error)
            .filter(|e| e.len() <= 64 && e.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .unwrap_or("unrecognised");
        let (code, message) = if error == "access_denied" {
            (ErrorCode::ConsentDenied, "the user did not grant access")
        } else {
            (
                ErrorCode::ProviderRejected,
                "the platform returned an error instead of a code",
            )
        };
        let details = json!({ "provider": authorization.provider, "platform_error": platform_error });
        let denied = PlatformError::new(code, message);
        answer
            .refuse_connection(&txn, channel, action::AUTHORIZATION_DENIED, &denied, details)
            .await?;
        complete(ctx, txn, inbound, answer).await?;
        return Ok(FirstStep::Answered);
    }

    let Some(code) = request.code else {
        let error = refusal(
            ErrorCode::InvalidEvent,
            "the callback carries neither a code nor an error",
        );
        refuse(&txn, &mut answer, channel, &error).await?;
        complete(ctx, txn, inbound, answer).await?;
        return Ok(FirstStep::Answered);
    };
    let provider = crate::domain::ProviderName::parse(authorization.provider.clone())
        .ok()
        .and_then(|name| ctx.catalogue.provider(&name).ok().cloned());
    let (Some(channel), Some(provider), Ok(redirect_uri)) =
        (channel.clone(), provider, Url::parse(&authorization.redirect_uri))
    else {
        let error = refusal(
            ErrorCode::UnknownProvider,
            "the provider of this consent is no longer configured",
        );
        refuse(&txn, &mut answer, channel, &error).await?;
        complete(ctx, txn, inbound, answer).await?;
        return Ok(FirstStep::Answered);
    };
    let verifier = match open_verifier(ctx, tenant, &channel, &authorization) {
        Ok(verifier) => verifier,
        Err(()) => {
            tracing::error!(tenant = %tenant, channel = %channel, "a stored PKCE verifier failed to open");
            let error = refusal(ErrorCode::StateUnknown, "the stored consent could not be read");
            refuse(&txn, &mut answer, Some(channel), &error).await?;
            complete(ctx, txn, inbound, answer).await?;
            return Ok(FirstStep::Answered);
        }
    };
    let capabilities = serde_json::from_value(authorization.capabilities.clone()).unwrap_or_default();
    txn.commit().await?;
    Ok(FirstStep::Exchange(Box::new(Exchange {
        channel,
        provider,
        redirect_uri,
        requested: ScopeSet::from_json(&authorization.requested_scopes),
        capabilities,
        state_hash,
        code,
        verifier,
    })))
}

fn open_verifier(
    ctx: &Context,
    tenant: &crate::domain::TenantId,
    channel: &ChannelId,
    authorization: &entity::authorizations::Model,
) -> Result<Option<PkceVerifier>, ()> {
    let (Some(key_id), Some(nonce), Some(ciphertext)) = (
        authorization.verifier_key_id.clone(),
        authorization.verifier_nonce.clone(),
        authorization.verifier_ciphertext.clone(),
    ) else {
        return Ok(None);
    };
    let context = hex(&authorization.state_hash);
    let binding = Binding {
        tenant,
        channel,
        kind: SecretKind::PkceVerifier,
        context: &context,
    };
    let plaintext = ctx
        .vault
        .open(
            &binding,
            &Sealed {
                key_id,
                nonce,
                ciphertext,
            },
        )
        .map_err(|_| ())?;
    Ok(Some(PkceVerifier::new(plaintext.to_string())))
}

#[allow(clippy::too_many_arguments)]
async fn store_grant(
    ctx: &Context,
    txn: &DatabaseTransaction,
    tenant: &crate::domain::TenantId,
    channel: &ChannelId,
    provider: &Provider,
    requested: &ScopeSet,
    capabilities: &[Capability],
    grant: TokenGrant,
) -> Result<ConnectionEstablished, HandlerError> {
    // RFC 6749 §5.1: no `scope` in the response means the requested scopes were granted.
    let granted = grant.scope.clone().unwrap_or_else(|| requested.clone());
    let expires_at = grant
        .expires_in
        .and_then(|lifetime| chrono::Duration::from_std(lifetime).ok())
        .map(|lifetime| crate::clock::now() + lifetime);
    let row = store::channels::record_grant(
        txn,
        Connected {
            tenant,
            channel,
            provider: provider.name(),
            requested_scopes: requested,
            granted_scopes: &granted,
            expires_at,
        },
    )
    .await?;
    let sealed = ctx.vault.seal_all(tenant, channel, grant.secrets());
    store::tokens::store(txn, tenant, row.id, &sealed, row.token_version).await?;
    if grant.refresh_token.is_none() {
        // A new grant without a refresh token must not inherit the previous grant's.
        store::tokens::delete(txn, tenant, row.id, SecretKind::RefreshToken).await?;
    }
    // The built-in schedule: refresh ahead of expiry with no external scheduler. A token that
    // never expires, or that cannot be refreshed, gets no job.
    let renewable = grant.refresh_token.is_some() || provider.renews_with_access_token();
    if let Some(lifetime) = grant.expires_in.filter(|_| renewable) {
        let next = ctx.settings.refresh.next_refresh(crate::clock::now(), lifetime);
        store::jobs::schedule_refresh(txn, tenant, row.id, channel.as_str(), next, Schedule::Replace).await?;
    }
    Ok(ConnectionEstablished {
        channel_id: channel.clone(),
        provider: provider.name().clone(),
        requested_scopes: requested.clone(),
        missing_scopes: requested.difference(&granted),
        capabilities: provider.covered(capabilities, &granted),
        granted_scopes: granted,
        expires_at,
    })
}

/// Audits a failed authorization and answers `ConnectionFailed`.
async fn refuse(
    txn: &DatabaseTransaction,
    answer: &mut Answer<'_>,
    channel: Option<ChannelId>,
    error: &PlatformError,
) -> Result<(), HandlerError> {
    Ok(answer
        .refuse_connection(txn, channel, action::AUTHORIZATION_FAILED, error, json!({}))
        .await?)
}
