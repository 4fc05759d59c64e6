//! `keys rotate`: re-encrypts every ciphertext not under the active key, in batches, with the
//! worker running. Deploy the new key ring to the workers first (the new key first, the old ones
//! still listed), then run this; it can be stopped and run again at any point.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value};

use crate::domain::{ChannelId, TenantId};
use crate::vault::{Binding, Sealed, SecretKind, Vault};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub rotated: u64,
    /// Rows that could not be opened with any listed key: left as they are, and counted.
    pub unreadable: u64,
    /// Rows still under other keys when the run ended.
    pub remaining: u64,
}

fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

pub async fn rotate(
    db: &DatabaseConnection,
    vault: &Vault,
    batch: u64,
    mut progress: impl FnMut(&Rotation),
) -> Result<Rotation, DbErr> {
    let active = vault.active_key_id().to_owned();
    let mut report = Rotation::default();
    let mut cursor: (uuid::Uuid, String) = (uuid::Uuid::nil(), String::new());
    loop {
        let txn = db.begin().await?;
        // Keyset order, so rows that cannot be opened are passed once, not retried forever.
        let rows = txn
            .query_all_raw(statement(
                "SELECT t.channel_pk, t.kind, t.tenant_id, c.channel_id, t.key_id, t.nonce, t.ciphertext
                 FROM channel_tokens t JOIN channels c ON c.id = t.channel_pk
                 WHERE t.key_id <> $1 AND (t.channel_pk, t.kind) > ($2, $3)
                 ORDER BY t.channel_pk, t.kind LIMIT $4 FOR UPDATE OF t SKIP LOCKED",
                vec![
                    active.clone().into(),
                    cursor.0.into(),
                    cursor.1.clone().into(),
                    (batch as i64).into(),
                ],
            ))
            .await?;
        if rows.is_empty() {
            txn.commit().await?;
            break;
        }
        for row in &rows {
            let channel_pk: uuid::Uuid = row.try_get("", "channel_pk")?;
            let kind: String = row.try_get("", "kind")?;
            cursor = (channel_pk, kind.clone());
            let sealed = Sealed {
                key_id: row.try_get("", "key_id")?,
                nonce: row.try_get("", "nonce")?,
                ciphertext: row.try_get("", "ciphertext")?,
            };
            let parsed = (
                TenantId::parse(row.try_get::<String>("", "tenant_id")?),
                ChannelId::parse(row.try_get::<String>("", "channel_id")?),
                match kind.as_str() {
                    "access" => Some(SecretKind::AccessToken),
                    "refresh" => Some(SecretKind::RefreshToken),
                    _ => None,
                },
            );
            let (Ok(tenant), Ok(channel), Some(kind_of)) = parsed else {
                report.unreadable += 1;
                continue;
            };
            let binding = Binding {
                tenant: &tenant,
                channel: &channel,
                kind: kind_of,
                context: "",
            };
            let Ok(plaintext) = vault.open(&binding, &sealed) else {
                report.unreadable += 1;
                continue;
            };
            let resealed = vault.seal(&binding, &plaintext);
            txn.execute_raw(statement(
                "UPDATE channel_tokens SET key_id = $3, nonce = $4, ciphertext = $5, updated_at = now()
                 WHERE channel_pk = $1 AND kind = $2",
                vec![
                    channel_pk.into(),
                    kind.into(),
                    resealed.key_id.into(),
                    resealed.nonce.into(),
                    resealed.ciphertext.into(),
                ],
            ))
            .await?;
            report.rotated += 1;
        }
        txn.commit().await?;
        progress(&report);
    }
    report.rotated += rotate_verifiers(db, vault, &active, &mut report.unreadable).await?;
    report.remaining = remaining(db, &active).await?;
    Ok(report)
}

/// Ciphertexts not under `active`: what a run has left to do.
pub async fn remaining(db: &impl ConnectionTrait, active: &str) -> Result<u64, DbErr> {
    let row = db
        .query_one_raw(statement(
            "SELECT (SELECT count(*) FROM channel_tokens WHERE key_id <> $1)
                  + (SELECT count(*) FROM authorizations WHERE verifier_key_id <> $1) AS n",
            vec![active.into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0).max(0) as u64)
}

/// PKCE verifiers of consents still open: few and short-lived, so one pass.
async fn rotate_verifiers(
    db: &DatabaseConnection,
    vault: &Vault,
    active: &str,
    unreadable: &mut u64,
) -> Result<u64, DbErr> {
    let txn = db.begin().await?;
    let rows = txn
        .query_all_raw(statement(
            "SELECT state_hash, tenant_id, channel_id, verifier_key_id, verifier_nonce, verifier_ciphertext
             FROM authorizations WHERE verifier_key_id <> $1 FOR UPDATE SKIP LOCKED",
            vec![active.into()],
        ))
        .await?;
    let mut rotated = 0;
    for row in &rows {
        let state_hash: Vec<u8> = row.try_get("", "state_hash")?;
        let sealed = Sealed {
            key_id: row.try_get("", "verifier_key_id")?,
            nonce: row.try_get("", "verifier_nonce")?,
            ciphertext: row.try_get("", "verifier_ciphertext")?,
        };
        let (Ok(tenant), Ok(channel)) = (
            TenantId::parse(row.try_get::<String>("", "tenant_id")?),
            ChannelId::parse(row.try_get::<String>("", "channel_id")?),
        ) else {
            *unreadable += 1;
            continue;
        };
        let context = crate::audit::hex(&state_hash);
        let binding = Binding {
            tenant: &tenant,
            channel: &channel,
            kind: SecretKind::PkceVerifier,
            context: &context,
        };
        let Ok(plaintext) = vault.open(&binding, &sealed) else {
            *unreadable += 1;
            continue;
        };
        let resealed = vault.seal(&binding, &plaintext);
        txn.execute_raw(statement(
            "UPDATE authorizations SET verifier_key_id = $2, verifier_nonce = $3, verifier_ciphertext = $4 WHERE state_hash = $1",
            vec![state_hash.into(), resealed.key_id.into(), resealed.nonce.into(), resealed.ciphertext.into()],
        ))
        .await?;
        rotated += 1;
    }
    txn.commit().await?;
    Ok(rotated)
}
