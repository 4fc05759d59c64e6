//! `channels show`: one channel's status, scopes, expiry, tokens (kinds and key ids only), jobs
//! and latest audit records. Never a token or a ciphertext.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde_json::{Value, json};

use crate::domain::{ChannelId, TenantId};
use crate::store;

pub async fn show(db: &impl ConnectionTrait, tenant: &TenantId, channel: &ChannelId) -> Result<Option<Value>, DbErr> {
    let Some(row) = store::channels::find(db, tenant, channel).await? else {
        return Ok(None);
    };
    let list = |sql: &str| {
        db.query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT coalesce(json_agg(x), '[]'::json)::text AS j FROM ({sql}) x"),
            [tenant.as_str().into(), row.id.into()],
        ))
    };
    let json_of = |rows: Vec<sea_orm::QueryResult>| -> Result<Value, DbErr> {
        let text: String = rows
            .first()
            .map(|r| r.try_get("", "j"))
            .transpose()?
            .unwrap_or_else(|| "[]".into());
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let tokens = json_of(
        list("SELECT kind, key_id, token_version, updated_at FROM channel_tokens WHERE tenant_id = $1 AND channel_pk = $2 ORDER BY kind")
            .await?,
    )?;
    let jobs = json_of(
        list(
            "SELECT id, kind, status, run_at, attempts, last_error_code, cancel_reason, finished_at FROM jobs
             WHERE tenant_id = $1 AND channel_pk = $2 ORDER BY created_at DESC LIMIT 50",
        )
        .await?,
    )?;
    let audit = json_of(
        list(
            "SELECT a.sequence, a.action, a.outcome, a.origin, a.recorded_at FROM audit_log a
             JOIN channels c ON c.tenant_id = a.tenant_id AND c.channel_id = a.channel_id
             WHERE a.tenant_id = $1 AND c.id = $2 ORDER BY a.sequence DESC LIMIT 20",
        )
        .await?,
    )?;
    Ok(Some(json!({
        "tenant": row.tenant_id,
        "channel_id": row.channel_id,
        "provider": row.provider,
        "status": row.status,
        "generation": row.generation,
        "requested_scopes": row.requested_scopes,
        "granted_scopes": row.granted_scopes,
        "token_version": row.token_version,
        "expires_at": row.expires_at,
        "tokens_updated_at": row.tokens_updated_at,
        "revoked_at": row.revoked_at,
        "revoked_origin": row.revoked_origin,
        "platform_revocation": row.platform_revocation,
        "tokens": tokens,
        "jobs": jobs,
        "audit": audit,
    })))
}
