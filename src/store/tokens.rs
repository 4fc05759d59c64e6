//! Token ciphertexts. Plaintext never reaches this module: callers hand in sealed values.

use entity::channel_tokens::{self, Entity as ChannelTokens};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::{sql, value_rows};
use crate::domain::TenantId;
use crate::vault::{Sealed, SecretKind};

/// Upserts a channel's sealed tokens (access, and refresh when there is one) in one statement.
pub async fn store(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    channel_pk: uuid::Uuid,
    sealed: &[(SecretKind, Sealed)],
    token_version: i64,
) -> Result<(), DbErr> {
    if sealed.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(sealed.len() * 7);
    for (kind, sealed) in sealed {
        values.extend([
            channel_pk.into(),
            tenant.as_str().into(),
            kind.as_str().into(),
            sealed.key_id.clone().into(),
            sealed.nonce.clone().into(),
            sealed.ciphertext.clone().into(),
            token_version.into(),
        ]);
    }
    db.execute_raw(sql(
        &format!(
            "INSERT INTO channel_tokens (channel_pk, tenant_id, kind, key_id, nonce, ciphertext, token_version)
             VALUES {}
             ON CONFLICT (channel_pk, kind) DO UPDATE SET
                key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                token_version = EXCLUDED.token_version, updated_at = now()",
            value_rows(sealed.len(), 7)
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
