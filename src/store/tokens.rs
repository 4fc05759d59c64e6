//! Token ciphertexts. Plaintext never reaches this module: callers hand in sealed values.

use entity::channel_tokens::{self, Entity as ChannelTokens};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::sql;
use crate::domain::TenantId;
use crate::vault::{Sealed, SecretKind};

pub async fn store(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    kind: SecretKind,
    sealed: &Sealed,
    token_version: i64,
) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "INSERT INTO channel_tokens (channel_pk, tenant_id, kind, key_id, nonce, ciphertext, token_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (channel_pk, kind) DO UPDATE SET
            key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
            token_version = EXCLUDED.token_version, updated_at = now()",
        [
            channel_pk.into(),
            tenant.as_str().into(),
            kind.as_str().into(),
            sealed.key_id.clone().into(),
            sealed.nonce.clone().into(),
            sealed.ciphertext.clone().into(),
            token_version.into(),
        ],
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
