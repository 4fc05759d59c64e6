//! `ConsentUrlRequested` → `ConsentUrlIssued`: least-privilege scopes, a single-use state, and
//! a PKCE verifier kept sealed server-side.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::ConnectionTrait;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Answer, Begun, Context, Disposition, HandlerError, Inbound, begin, complete};
use crate::audit::{AuditEntry, action, hex};
use crate::contract::inbound::ConsentUrlRequested;
use crate::contract::outbound::ConsentUrlIssued;
use crate::domain::ErrorCode;
use crate::domain::secrets::StateToken;
use crate::platform::{OAuthClient, PlatformError};
use crate::store::{self, authorizations::NewAuthorization};
use crate::vault::{Binding, SecretKind};

type Refusal = (ErrorCode, &'static str);

pub async fn handle(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: ConsentUrlRequested,
) -> Result<Disposition, HandlerError> {
    let Begun::Run(txn) = begin(ctx, inbound).await? else {
        return Ok(Disposition::Done);
    };
    let mut answer = Answer::to(inbound);
    let channel = Some(request.channel_id.clone());
    match issue(ctx, inbound, &request, &txn).await? {
        Ok(issued) => {
            let details = json!({
                "provider": request.provider,
                "capabilities": request.capabilities,
                "requested_scopes": issued.requested_scopes,
                "expires_at": issued.expires_at,
            });
            let entry = AuditEntry {
                channel,
                action: action::AUTHORIZATION_STARTED,
                outcome: "success",
                origin: answer.origin(),
                details,
            };
            answer.audit(&txn, entry).await?;
            answer.finish(&issued);
        }
        Err((code, message)) => {
            let error = PlatformError::new(code, message);
            let details = json!({ "provider": request.provider });
            answer
                .refuse_connection(&txn, channel, action::AUTHORIZATION_FAILED, &error, details)
                .await?;
        }
    }
    complete(ctx, txn, inbound, answer).await
}

async fn issue(
    ctx: &Context,
    inbound: &Inbound<'_>,
    request: &ConsentUrlRequested,
    db: &impl ConnectionTrait,
) -> Result<Result<ConsentUrlIssued, Refusal>, HandlerError> {
    let tenant = &inbound.envelope.tenant;
    let provider = match ctx.catalogue.provider(&request.provider) {
        Ok(provider) => provider,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if request.capabilities.is_empty() {
        return Ok(Err((
            ErrorCode::InvalidEvent,
            "capabilities must name at least one capability",
        )));
    }
    let Ok(scopes) = provider.scopes_for_all(&request.capabilities) else {
        return Ok(Err((
            ErrorCode::UnknownCapability,
            "a requested capability is not offered by this provider",
        )));
    };
    if !provider.allows_redirect(&request.redirect_uri) {
        return Ok(Err((
            ErrorCode::RedirectUriNotAllowed,
            "the redirect URI is not registered for this provider",
        )));
    }
    if let Some(existing) = store::channels::find(db, tenant, &request.channel_id).await?
        && existing.provider != provider.name().as_str()
        && existing.status != "revoked"
    {
        return Ok(Err((
            ErrorCode::InvalidEvent,
            "the channel is connected to another provider; revoke it first",
        )));
    }

    let state = StateToken::new(URL_SAFE_NO_PAD.encode(crate::random::bytes::<32>()));
    let state_hash = hash_state(&state);
    let (challenge, verifier) = if provider.definition.pkce {
        let (challenge, verifier) = OAuthClient::new_pkce();
        (Some(challenge), Some(verifier))
    } else {
        (None, None)
    };
    let verifier = verifier.map(|verifier| {
        let context = hex(&state_hash);
        let binding = Binding {
            tenant,
            channel: &request.channel_id,
            kind: SecretKind::PkceVerifier,
            context: &context,
        };
        ctx.vault.seal(&binding, verifier.expose_secret())
    });
    let ttl = chrono::Duration::from_std(ctx.settings.state_ttl).unwrap_or(chrono::Duration::minutes(10));
    let expires_at = crate::clock::now() + ttl;
    let authorization_url = OAuthClient::authorization_url(provider, &scopes, &state, challenge, &request.redirect_uri);
    store::authorizations::insert(
        db,
        NewAuthorization {
            state_hash,
            tenant,
            channel: &request.channel_id,
            provider: provider.name(),
            redirect_uri: &request.redirect_uri,
            capabilities: &request.capabilities,
            requested_scopes: &scopes,
            verifier,
            expires_at,
        },
    )
    .await?;
    Ok(Ok(ConsentUrlIssued {
        channel_id: request.channel_id.clone(),
        authorization_url: authorization_url.to_string(),
        state: state.expose_secret().to_owned(),
        expires_at,
        requested_scopes: scopes,
    }))
}

/// Only this hash of a state is stored; the state itself leaves in the URL and comes back once.
pub fn hash_state(state: &StateToken) -> [u8; 32] {
    Sha256::digest(state.expose_secret().as_bytes()).into()
}
