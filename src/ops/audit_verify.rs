//! `audit verify`: walks every (tenant, channel) audit chain in order and names the first broken
//! link of each: a gap in the sequence, a record whose `prev_hash` is not its predecessor's hash,
//! or a record whose hash does not match its content.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::audit::{ChainLink, GENESIS};
use crate::domain::TenantId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub tenant: String,
    pub channel: String,
    pub sequence: i64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub records: u64,
    pub chains: u64,
    pub broken: Vec<BrokenLink>,
}

const PAGE: i64 = 1000;

/// Records to check, for the progress bar.
pub async fn count(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM audit_log",
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0).max(0) as u64)
}

pub async fn verify(db: &impl ConnectionTrait, mut progress: impl FnMut(u64)) -> Result<Verification, DbErr> {
    let mut report = Verification::default();
    let mut cursor: (String, String, i64) = (String::new(), String::new(), -1);
    let mut chain: Option<(String, String)> = None;
    let (mut expected_sequence, mut expected_prev, mut skip_chain) = (1i64, GENESIS.to_vec(), false);
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT tenant_id, channel_id, sequence, action, outcome, origin, correlation_id, details,
                        prev_hash, hash, recorded_at
                 FROM audit_log WHERE (tenant_id, channel_id, sequence) > ($1, $2, $3)
                 ORDER BY tenant_id, channel_id, sequence LIMIT $4",
                [
                    cursor.0.clone().into(),
                    cursor.1.clone().into(),
                    cursor.2.into(),
                    PAGE.into(),
                ],
            ))
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let tenant: String = row.try_get("", "tenant_id")?;
            let channel: String = row.try_get("", "channel_id")?;
            let sequence: i64 = row.try_get("", "sequence")?;
            if chain.as_ref() != Some(&(tenant.clone(), channel.clone())) {
                chain = Some((tenant.clone(), channel.clone()));
                report.chains += 1;
                (expected_sequence, expected_prev, skip_chain) = (1, GENESIS.to_vec(), false);
            }
            report.records += 1;
            cursor = (tenant.clone(), channel.clone(), sequence);
            if skip_chain {
                continue;
            }
            let prev_hash: Vec<u8> = row.try_get("", "prev_hash")?;
            let hash: Vec<u8> = row.try_get("", "hash")?;
            let details: serde_json::Value = row.try_get("", "details")?;
            let correlation: Option<String> = row.try_get("", "correlation_id")?;
            let (action, outcome, origin): (String, String, String) = (
                row.try_get("", "action")?,
                row.try_get("", "outcome")?,
                row.try_get("", "origin")?,
            );
            let recorded_at: DateTime<Utc> = row.try_get("", "recorded_at")?;
            // The reserved tenant of unattributed records is not a parseable tenant id.
            let tenant_id = TenantId::parse(tenant.clone()).unwrap_or_else(|_| TenantId::unattributed());
            let link = ChainLink {
                tenant: &tenant_id,
                channel_key: &channel,
                sequence,
                action: &action,
                outcome: &outcome,
                origin: &origin,
                correlation_id: correlation.as_deref(),
                details: &details,
                recorded_at,
            };
            let reason = if sequence != expected_sequence {
                Some("the sequence has a gap")
            } else if prev_hash != expected_prev {
                Some("prev_hash is not the previous record's hash")
            } else if link.hash(&prev_hash).as_slice() != hash.as_slice() {
                Some("the record does not match its hash")
            } else {
                None
            };
            if let Some(reason) = reason {
                report.broken.push(BrokenLink {
                    tenant: tenant.clone(),
                    channel: channel.clone(),
                    sequence,
                    reason,
                });
                skip_chain = true;
            }
            expected_sequence = sequence + 1;
            expected_prev = hash;
        }
        progress(report.records);
    }
    Ok(report)
}
