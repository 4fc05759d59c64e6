//! The append-only audit log. Appends to one chain are serialised by a transaction-scoped
//! advisory lock, so concurrent events on one channel still form a single unbroken chain.

use sea_orm::{ConnectionTrait, DbErr};

use std::collections::{BTreeSet, HashMap};

use super::{sql, value_rows};
use crate::audit::{AuditEntry, ChainLink, GENESIS};
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct Appended {
    pub sequence: i64,
    pub hash: [u8; 32],
}

pub async fn append(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: Option<&str>,
    entry: &AuditEntry,
) -> Result<Appended, DbErr> {
    let record = NewRecord {
        tenant,
        correlation_id,
        entry,
    };
    let appended = append_many(db, &[record]).await?;
    appended.into_iter().next().ok_or(DbErr::RecordNotInserted)
}

/// One record to append.
pub struct NewRecord<'a> {
    pub tenant: &'a TenantId,
    pub correlation_id: Option<&'a str>,
    pub entry: &'a AuditEntry,
}

/// Appends records, in order, to their chains in three statements whatever their number:
/// lock the chains (in one order, so two appenders never deadlock), read their heads, insert.
pub async fn append_many(db: &impl ConnectionTrait, records: &[NewRecord<'_>]) -> Result<Vec<Appended>, DbErr> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let chain_of = |record: &NewRecord<'_>| {
        let channel_key = record.entry.channel.as_ref().map(|c| c.as_str()).unwrap_or_default();
        (record.tenant.as_str().to_owned(), channel_key.to_owned())
    };
    let chains: Vec<(String, String)> = records
        .iter()
        .map(chain_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chain_values = || chains.iter().flat_map(|(t, c)| [t.as_str().into(), c.as_str().into()]);
    db.execute_raw(sql(
        &format!(
            "SELECT pg_advisory_xact_lock(hashtextextended(t || '|' || c, 7))
             FROM (VALUES {}) AS v (t, c) ORDER BY t, c",
            value_rows(chains.len(), 2)
        ),
        chain_values(),
    ))
    .await?;
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT v.t, v.c, h.sequence, h.hash FROM (VALUES {}) AS v (t, c)
                 LEFT JOIN LATERAL (SELECT sequence, hash FROM audit_log
                                    WHERE tenant_id = v.t AND channel_id = v.c
                                    ORDER BY sequence DESC LIMIT 1) AS h ON true",
                value_rows(chains.len(), 2)
            ),
            chain_values(),
        ))
        .await?;
    let mut heads: HashMap<(String, String), (i64, Vec<u8>)> = HashMap::with_capacity(chains.len());
    for row in &rows {
        let chain = (row.try_get::<String>("", "t")?, row.try_get::<String>("", "c")?);
        let head = match row.try_get::<Option<i64>>("", "sequence")? {
            Some(sequence) => (sequence, row.try_get::<Vec<u8>>("", "hash")?),
            None => (0, GENESIS.to_vec()),
        };
        heads.insert(chain, head);
    }

    let recorded_at = crate::clock::now();
    let mut appended = Vec::with_capacity(records.len());
    let mut values = Vec::with_capacity(records.len() * 12);
    for record in records {
        let chain = chain_of(record);
        let (prev_sequence, prev_hash) = heads.get(&chain).cloned().unwrap_or((0, GENESIS.to_vec()));
        let entry = record.entry;
        let link = ChainLink {
            tenant: record.tenant,
            channel_key: &chain.1,
            sequence: prev_sequence + 1,
            action: entry.action,
            outcome: entry.outcome,
            origin: &entry.origin,
            correlation_id: record.correlation_id,
            details: &entry.details,
            recorded_at,
        };
        let hash = link.hash(&prev_hash);
        let sequence = link.sequence;
        values.extend([
            uuid::Uuid::now_v7().into(),
            record.tenant.as_str().into(),
            chain.1.clone().into(),
            sequence.into(),
            entry.action.into(),
            entry.outcome.into(),
            entry.origin.clone().into(),
            record.correlation_id.map(str::to_owned).into(),
            entry.details.clone().into(),
            prev_hash.into(),
            hash.to_vec().into(),
            recorded_at.into(),
        ]);
        appended.push(Appended { sequence, hash });
        heads.insert(chain, (sequence, hash.to_vec()));
    }
    db.execute_raw(sql(
        &format!(
            "INSERT INTO audit_log (id, tenant_id, channel_id, sequence, action, outcome, origin,
                                    correlation_id, details, prev_hash, hash, recorded_at)
             VALUES {}",
            value_rows(records.len(), 12)
        ),
        values,
    ))
    .await?;
    Ok(appended)
}
