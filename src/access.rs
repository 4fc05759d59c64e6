//! The only door to a plaintext access token. Before anything is decrypted, the grant is
//! checked in the contract's order: the channel exists for this tenant, it is active, the
//! provider offers the capability, the granted scopes cover it. The token comes back as a
//! handle that cannot be printed, serialized or cloned, and lives only as long as the call.

use sea_orm::ConnectionTrait;

use crate::domain::secrets::AccessToken;
use crate::domain::{Capability, ChannelId, ErrorCode, ProviderName, ScopeSet, TenantId};
use crate::handlers::{Context, HandlerError};
use crate::platform::{Catalogue, Provider};
use crate::store;
use crate::vault::{Binding, SecretKind};

/// Why an operation may not run: the same answer every time for the same grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub missing_scopes: Option<ScopeSet>,
}

impl Refusal {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            missing_scopes: None,
        }
    }
}

/// A channel whose grant covers the capability.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub channel: entity::channels::Model,
    pub provider: Provider,
}

/// The checks, without touching any secret.
pub async fn check(
    db: &impl ConnectionTrait,
    catalogue: &Catalogue,
    tenant: &TenantId,
    channel: &ChannelId,
    capability: &Capability,
) -> Result<Result<Allowed, Refusal>, HandlerError> {
    let Some(row) = store::channels::find(db, tenant, channel).await? else {
        return Ok(Err(Refusal::new(ErrorCode::NotFound)));
    };
    let refused = match row.status.as_str() {
        "active" => None,
        "revoked" => Some(ErrorCode::ConnectionRevoked),
        "reauth_required" => Some(ErrorCode::ReauthRequired),
        _ => Some(ErrorCode::ConnectionNotActive),
    };
    if let Some(code) = refused {
        return Ok(Err(Refusal::new(code)));
    }
    let provider = ProviderName::parse(row.provider.clone())
        .ok()
        .and_then(|name| catalogue.provider(&name).ok());
    let Some(provider) = provider else {
        return Ok(Err(Refusal::new(ErrorCode::UnknownProvider)));
    };
    let grant = provider.grant(ScopeSet::from_json(&row.granted_scopes));
    match grant.missing(capability) {
        None => Ok(Err(Refusal::new(ErrorCode::UnknownCapability))),
        Some(missing) if !missing.is_empty() => Ok(Err(Refusal {
            code: ErrorCode::ScopeNotGranted,
            missing_scopes: Some(missing),
        })),
        Some(_) => Ok(Ok(Allowed {
            channel: row,
            provider: provider.clone(),
        })),
    }
}

/// An access token resolved for one call. Not `Clone`, no `Serialize`, redacted `Debug`.
pub struct ResolvedToken {
    token: AccessToken,
    pub token_version: i64,
    pub channel_pk: uuid::Uuid,
}

impl std::fmt::Debug for ResolvedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedToken")
            .field("token", &self.token)
            .field("token_version", &self.token_version)
            .finish()
    }
}

impl ResolvedToken {
    pub(crate) fn token(&self) -> &AccessToken {
        &self.token
    }
}

/// Checks the grant, then decrypts the channel's access token for this one capability.
pub async fn resolve(
    ctx: &Context,
    tenant: &TenantId,
    channel: &ChannelId,
    capability: &Capability,
) -> Result<Result<(Allowed, ResolvedToken), Refusal>, HandlerError> {
    let allowed = match check(&ctx.db, &ctx.catalogue, tenant, channel, capability).await? {
        Ok(allowed) => allowed,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let row = &allowed.channel;
    let Some(sealed) = store::tokens::load(&ctx.db, tenant, row.id, SecretKind::AccessToken).await? else {
        return Ok(Err(Refusal::new(ErrorCode::ReauthRequired)));
    };
    let binding = Binding {
        tenant,
        channel,
        kind: SecretKind::AccessToken,
        context: "",
    };
    let Ok(plaintext) = ctx.vault.open(&binding, &sealed) else {
        tracing::error!(tenant = %tenant, channel = %channel, "a stored access token failed to open");
        return Ok(Err(Refusal::new(ErrorCode::ReauthRequired)));
    };
    let resolved = ResolvedToken {
        token: AccessToken::new(plaintext.to_string()),
        token_version: row.token_version,
        channel_pk: row.id,
    };
    Ok(Ok((allowed, resolved)))
}
