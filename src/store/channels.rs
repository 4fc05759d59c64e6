//! Connected channels. A channel row outlives its grants: revocation changes its status, a new
//! consent bumps its generation, and its history stays.

use chrono::{DateTime, Utc};
use entity::channels::{self, Entity as Channels};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use super::sql;
use crate::domain::{ChannelId, ProviderName, ScopeSet, TenantId};

pub async fn find(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel: &ChannelId,
) -> Result<Option<channels::Model>, DbErr> {
    Channels::find()
        .filter(channels::Column::TenantId.eq(tenant.as_str()))
        .filter(channels::Column::ChannelId.eq(channel.as_str()))
        .one(db)
        .await
}

pub async fn find_for_update(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel: &ChannelId,
) -> Result<Option<channels::Model>, DbErr> {
    Channels::find()
        .filter(channels::Column::TenantId.eq(tenant.as_str()))
        .filter(channels::Column::ChannelId.eq(channel.as_str()))
        .lock_exclusive()
        .one(db)
        .await
}

pub struct Connected<'a> {
    pub tenant: &'a TenantId,
    pub channel: &'a ChannelId,
    pub provider: &'a ProviderName,
    pub requested_scopes: &'a ScopeSet,
    pub granted_scopes: &'a ScopeSet,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Records a fresh grant: the channel becomes active under a new token version; a channel that
/// was revoked starts a new generation so its old grant's history stays distinct.
pub async fn record_grant(db: &impl ConnectionTrait, grant: Connected<'_>) -> Result<channels::Model, DbErr> {
    let row = db
        .query_one_raw(sql(
            "INSERT INTO channels (id, tenant_id, channel_id, provider, status, generation,
                                   requested_scopes, granted_scopes, token_version, expires_at, tokens_updated_at)
             VALUES ($1, $2, $3, $4, 'active', 1, $5, $6, 1, $7, now())
             ON CONFLICT (tenant_id, channel_id) DO UPDATE SET
                provider = EXCLUDED.provider,
                status = 'active',
                generation = channels.generation + CASE WHEN channels.status = 'revoked' THEN 1 ELSE 0 END,
                requested_scopes = EXCLUDED.requested_scopes,
                granted_scopes = EXCLUDED.granted_scopes,
                token_version = channels.token_version + 1,
                expires_at = EXCLUDED.expires_at,
                updated_at = now(),
                revoked_at = NULL,
                revoked_origin = NULL,
                tokens_updated_at = now()
             RETURNING id",
            [
                uuid::Uuid::now_v7().into(),
                grant.tenant.as_str().into(),
                grant.channel.as_str().into(),
                grant.provider.as_str().into(),
                grant.requested_scopes.to_json().into(),
                grant.granted_scopes.to_json().into(),
                grant.expires_at.into(),
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted)?;
    let id: uuid::Uuid = row.try_get("", "id")?;
    Channels::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("channel".into()))
}

/// The channel by its row id, locked: the refresh fence reads status and token version here.
pub async fn find_by_pk_for_update(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
) -> Result<Option<channels::Model>, DbErr> {
    Channels::find_by_id(channel_pk)
        .filter(channels::Column::TenantId.eq(tenant.as_str()))
        .lock_exclusive()
        .one(db)
        .await
}

pub async fn find_by_pk(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
) -> Result<Option<channels::Model>, DbErr> {
    Channels::find_by_id(channel_pk)
        .filter(channels::Column::TenantId.eq(tenant.as_str()))
        .one(db)
        .await
}

pub struct Refreshed<'a> {
    pub granted_scopes: Option<&'a ScopeSet>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Records rotated tokens: a new token version, the new expiry, and narrower scopes if the
/// platform reported them.
pub async fn record_refresh(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    refreshed: Refreshed<'_>,
) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(sql(
            "UPDATE channels SET token_version = token_version + 1, expires_at = $3,
                    granted_scopes = COALESCE($4, granted_scopes), tokens_updated_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND id = $2 RETURNING token_version",
            [
                tenant.as_str().into(),
                channel_pk.into(),
                refreshed.expires_at.into(),
                refreshed.granted_scopes.map(ScopeSet::to_json).into(),
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("channel".into()))?;
    row.try_get("", "token_version")
}

pub async fn set_status(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    status: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE channels SET status = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        [tenant.as_str().into(), channel_pk.into(), status.into()],
    ))
    .await?;
    Ok(())
}

/// Disables the channel at once: from this commit on, nothing of it runs.
pub async fn mark_revoked(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    origin: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE channels SET status = 'revoked', revoked_at = now(), revoked_origin = $3,
                platform_revocation = NULL, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        [tenant.as_str().into(), channel_pk.into(), origin.into()],
    ))
    .await?;
    Ok(())
}

pub async fn record_platform_revocation(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    result: &str,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "UPDATE channels SET platform_revocation = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        [tenant.as_str().into(), channel_pk.into(), result.into()],
    ))
    .await?;
    Ok(())
}
