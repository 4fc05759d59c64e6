//! Token ciphertexts. Plaintext never reaches this module: callers hand in sealed values.

use entity::channel_tokens::{self, Entity as ChannelTokens};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::{scoped_ids, sql, tenants_and_ids, value_rows};
use crate::domain::TenantId;
use crate::vault::{Sealed, SecretKind};

/// A channel's sealed tokens (access, and refresh when there is one) at a token version.
pub struct SealedTokens<'a> {
    pub tenant: &'a TenantId,
    pub channel_pk: uuid::Uuid,
    pub sealed: &'a [(SecretKind, Sealed)],
    pub token_version: i64,
}

/// Upserts a channel's sealed tokens in one statement.
pub async fn store(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    sealed: &[(SecretKind, Sealed)],
    token_version: i64,
) -> Result<(), DbErr> {
    let tokens = SealedTokens {
        tenant,
        channel_pk,
        sealed,
        token_version,
    };
    store_many(db, &[tokens]).await
}

/// Upserts the sealed tokens of several channels in one statement.
pub async fn store_many(db: &impl ConnectionTrait, channels: &[SealedTokens<'_>]) -> Result<(), DbErr> {
    let rows: usize = channels.iter().map(|c| c.sealed.len()).sum();
    if rows == 0 {
        return Ok(());
    }
    let mut values = Vec::with_capacity(rows * 7);
    for channel in channels {
        for (kind, sealed) in channel.sealed {
            values.extend([
                channel.channel_pk.into(),
                channel.tenant.as_str().into(),
                kind.as_str().into(),
                sealed.key_id.clone().into(),
                sealed.nonce.clone().into(),
                sealed.ciphertext.clone().into(),
                channel.token_version.into(),
            ]);
        }
    }
    db.execute_raw(sql(
        &format!(
            "INSERT INTO channel_tokens (channel_pk, tenant_id, kind, key_id, nonce, ciphertext, token_version)
             VALUES {}
             ON CONFLICT (channel_pk, kind) DO UPDATE SET
                key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                token_version = EXCLUDED.token_version, updated_at = now()",
            value_rows(rows, 7)
        ),
        values,
    ))
    .await?;
    Ok(())
}

pub async fn delete(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    kind: SecretKind,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "DELETE FROM channel_tokens WHERE tenant_id = $1 AND channel_pk = $2 AND kind = $3",
        [tenant.as_str().into(), channel_pk.into(), kind.as_str().into()],
    ))
    .await?;
    Ok(())
}

pub async fn load(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    kind: SecretKind,
) -> Result<Option<Sealed>, DbErr> {
    let row = ChannelTokens::find()
        .filter(channel_tokens::Column::TenantId.eq(tenant.as_str()))
        .filter(channel_tokens::Column::ChannelPk.eq(channel_pk))
        .filter(channel_tokens::Column::Kind.eq(kind.as_str()))
        .one(db)
        .await?;
    Ok(row.map(|r| Sealed {
        key_id: r.key_id,
        nonce: r.nonce,
        ciphertext: r.ciphertext,
    }))
}

/// Every sealed token of these channels, by channel row id and kind.
pub async fn load_many(
    db: &impl ConnectionTrait,
    channels: &[(&TenantId, uuid::Uuid)],
) -> Result<std::collections::HashMap<(uuid::Uuid, String), Sealed>, DbErr> {
    let mut sealed = std::collections::HashMap::new();
    if channels.is_empty() {
        return Ok(sealed);
    }
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT channel_pk, kind, key_id, nonce, ciphertext FROM channel_tokens WHERE {}",
                scoped_ids("channel_tokens", "channel_pk", 1, 2)
            ),
            tenants_and_ids(channels),
        ))
        .await?;
    for row in &rows {
        sealed.insert(
            (row.try_get("", "channel_pk")?, row.try_get("", "kind")?),
            Sealed {
                key_id: row.try_get("", "key_id")?,
                nonce: row.try_get("", "nonce")?,
                ciphertext: row.try_get("", "ciphertext")?,
            },
        );
    }
    Ok(sealed)
}

/// Destroys every token of the channel; the channel row and its history stay.
pub async fn delete_all(db: &impl ConnectionTrait, tenant: &TenantId, channel_pk: uuid::Uuid) -> Result<u64, DbErr> {
    let result = db
        .execute_raw(sql(
            "DELETE FROM channel_tokens WHERE tenant_id = $1 AND channel_pk = $2",
            [tenant.as_str().into(), channel_pk.into()],
        ))
        .await?;
    Ok(result.rows_affected())
}
