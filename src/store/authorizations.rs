//! Pending consents, keyed by the hash of their `state`.

use chrono::{DateTime, Utc};
use entity::authorizations::{self, Entity as Authorizations};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};

use super::sql;
use crate::domain::{Capability, ChannelId, ProviderName, ScopeSet, TenantId};
use crate::vault::Sealed;

pub struct NewAuthorization<'a> {
    pub state_hash: [u8; 32],
    pub tenant: &'a TenantId,
    pub channel: &'a ChannelId,
    pub provider: &'a ProviderName,
    pub redirect_uri: &'a url::Url,
    pub capabilities: &'a [Capability],
    pub requested_scopes: &'a ScopeSet,
    pub verifier: Option<Sealed>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(db: &impl ConnectionTrait, new: NewAuthorization<'_>) -> Result<(), DbErr> {
    let (key_id, nonce, ciphertext) = match new.verifier {
        Some(sealed) => (Some(sealed.key_id), Some(sealed.nonce), Some(sealed.ciphertext)),
        None => (None, None, None),
    };
    authorizations::ActiveModel {
        state_hash: Set(new.state_hash.to_vec()),
        tenant_id: Set(new.tenant.as_str().to_owned()),
        channel_id: Set(new.channel.as_str().to_owned()),
        provider: Set(new.provider.as_str().to_owned()),
        redirect_uri: Set(new.redirect_uri.to_string()),
        capabilities: Set(serde_json::json!(new.capabilities)),
        requested_scopes: Set(new.requested_scopes.to_json()),
        verifier_key_id: Set(key_id),
        verifier_nonce: Set(nonce),
        verifier_ciphertext: Set(ciphertext),
        expires_at: Set(new.expires_at),
        used_at: Set(None),
        used_by_event: Set(None),
        created_at: Set(crate::clock::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// The tenant's authorization for this state, locked for the rest of the transaction. Another
/// tenant's state is simply not found.
pub async fn find_for_update(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    state_hash: &[u8; 32],
) -> Result<Option<authorizations::Model>, DbErr> {
    Authorizations::find()
        .filter(authorizations::Column::TenantId.eq(tenant.as_str()))
        .filter(authorizations::Column::StateHash.eq(state_hash.to_vec()))
        .lock_exclusive()
        .one(db)
        .await
}

pub async fn mark_used(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    state_hash: &[u8; 32],
    event_id: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE authorizations SET used_at = now(), used_by_event = $3 WHERE tenant_id = $1 AND state_hash = $2",
        [tenant.as_str().into(), state_hash.to_vec().into(), event_id.into()],
    ))
    .await?;
    Ok(())
}

/// Gives the state back after a transient failure, so the same callback can be retried.
pub async fn release(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    state_hash: &[u8; 32],
    event_id: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE authorizations SET used_at = NULL, used_by_event = NULL
         WHERE tenant_id = $1 AND state_hash = $2 AND used_by_event = $3",
        [tenant.as_str().into(), state_hash.to_vec().into(), event_id.into()],
    ))
    .await?;
    Ok(())
}

/// Destroys the PKCE verifier once the exchange no longer needs it.
pub async fn forget_verifier(db: &impl ConnectionTrait, tenant: &TenantId, state_hash: &[u8; 32]) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE authorizations SET verifier_key_id = NULL, verifier_nonce = NULL, verifier_ciphertext = NULL
         WHERE tenant_id = $1 AND state_hash = $2",
        [tenant.as_str().into(), state_hash.to_vec().into()],
    ))
    .await?;
    Ok(())
}
