//! Connected channels. A channel row outlives its grants: revocation changes its status, a new
//! consent bumps its generation, and its history stays.

use chrono::{DateTime, Utc};
use entity::channels::{self, Entity as Channels};
use sea_orm::prelude::Uuid;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect};

use super::{scoped_ids, sql, tenants_and_ids, value_rows};
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

/// What a refresh starts from: the channel's state and its sealed tokens, read in one
/// statement (one snapshot: the tokens are those of this token version).
pub struct RefreshSource {
    pub status: String,
    pub provider: String,
    pub token_version: i64,
    pub tokens: Vec<(String, crate::vault::Sealed)>,
}

/// The refresh sources of these channels, by channel row id (no lock: the result of the
/// refresh is fenced by the token version read here).
pub async fn refresh_sources(
    db: &impl ConnectionTrait,
    keys: &[(&TenantId, Uuid)],
) -> Result<std::collections::HashMap<Uuid, RefreshSource>, DbErr> {
    let mut sources = std::collections::HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(sources);
    }
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT c.id, c.status, c.provider, c.token_version, t.kind, t.key_id, t.nonce, t.ciphertext
                 FROM channels AS c
                 LEFT JOIN channel_tokens AS t ON t.channel_pk = c.id
                 WHERE {}",
                scoped_ids("c", "id", 1, 2)
            ),
            tenants_and_ids(keys),
        ))
        .await?;
    for row in &rows {
        let id: Uuid = row.try_get("", "id")?;
        let source = sources.entry(id).or_insert(RefreshSource {
            status: row.try_get("", "status")?,
            provider: row.try_get("", "provider")?,
            token_version: row.try_get("", "token_version")?,
            tokens: Vec::new(),
        });
        if let Some(kind) = row.try_get::<Option<String>>("", "kind")? {
            let sealed = crate::vault::Sealed {
                key_id: row.try_get("", "key_id")?,
                nonce: row.try_get("", "nonce")?,
                ciphertext: row.try_get("", "ciphertext")?,
            };
            source.tokens.push((kind, sealed));
        }
    }
    Ok(sources)
}

/// Locks the channels, always in id order: two batches locking overlapping sets wait for each
/// other instead of deadlocking.
pub async fn lock_many(db: &impl ConnectionTrait, keys: &[(&TenantId, Uuid)]) -> Result<Vec<channels::Model>, DbErr> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT * FROM channels WHERE {} ORDER BY id FOR UPDATE",
                scoped_ids("channels", "id", 1, 2)
            ),
            tenants_and_ids(keys),
        ))
        .await?;
    rows.iter()
        .map(|row| channels::Model::from_query_result(row, ""))
        .collect()
}

/// Locks the channels named by their channel ids, in id order. Each name is looked up on its
/// own through the lateral join, whatever the table's statistics say.
pub async fn lock_named(
    db: &impl ConnectionTrait,
    names: &[(&TenantId, &ChannelId)],
) -> Result<Vec<channels::Model>, DbErr> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let values = names
        .iter()
        .flat_map(|(tenant, channel)| [tenant.as_str().into(), channel.as_str().into()]);
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT c.* FROM (VALUES {}) AS v (t, k)
                 CROSS JOIN LATERAL (SELECT * FROM channels WHERE tenant_id = v.t AND channel_id = v.k) AS c
                 ORDER BY c.id FOR UPDATE OF c",
                value_rows(names.len(), 2)
            ),
            values,
        ))
        .await?;
    rows.iter()
        .map(|row| channels::Model::from_query_result(row, ""))
        .collect()
}

pub struct Refreshed<'a> {
    pub tenant: &'a TenantId,
    pub channel_pk: Uuid,
    pub granted_scopes: Option<&'a ScopeSet>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Records rotated tokens: a new token version, the new expiry, and narrower scopes if the
/// platform reported them. Returns each channel's new token version.
pub async fn record_refreshes(
    db: &impl ConnectionTrait,
    refreshed: &[Refreshed<'_>],
) -> Result<Vec<(Uuid, i64)>, DbErr> {
    if refreshed.is_empty() {
        return Ok(Vec::new());
    }
    let mut values: Vec<sea_orm::Value> = refreshed
        .iter()
        .flat_map(|r| {
            [
                r.channel_pk.into(),
                r.expires_at.into(),
                r.granted_scopes.map(ScopeSet::to_json).into(),
            ]
        })
        .collect();
    let keys: Vec<(&TenantId, Uuid)> = refreshed.iter().map(|r| (r.tenant, r.channel_pk)).collect();
    values.extend(tenants_and_ids(&keys));
    let (tenants, ids) = (values.len() - 1, values.len());
    let rows = db
        .query_all_raw(sql(
            &format!(
                "UPDATE channels AS c SET token_version = c.token_version + 1, expires_at = v.expires_at,
                        granted_scopes = COALESCE(v.granted_scopes, c.granted_scopes),
                        tokens_updated_at = now(), updated_at = now()
                 FROM (VALUES {}) AS v (id, expires_at, granted_scopes)
                 WHERE {} AND c.id = v.id
                 RETURNING c.id, c.token_version",
                value_rows(refreshed.len(), 3),
                scoped_ids("c", "id", tenants, ids)
            ),
            values,
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "id")?, row.try_get("", "token_version")?)))
        .collect()
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
