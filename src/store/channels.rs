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
                                   requested_scopes, granted_scopes, token_version, expires_at)
             VALUES ($1, $2, $3, $4, 'active', 1, $5, $6, 1, $7)
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
                revoked_origin = NULL
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
