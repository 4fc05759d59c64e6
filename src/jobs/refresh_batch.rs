//! Successful refreshes are stored in batches ([`crate::group_commit`]), under the same fence
//! as a single refresh: each channel locked, still active at the token version the call started
//! from, its job still running. One transaction and a dozen statements store as many refreshes
//! as arrived during the previous commit.
//!
//! What a batch cannot store (fenced out, or the batch failed) goes back to its runner: a
//! fenced result is discarded there as a single refresh would be, and a failed batch is retried
//! one refresh at a time, so one bad row never costs the others their tokens.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use uuid::Uuid;

use super::refresh::Subject;
use super::reports::Reports;
use crate::audit::action;
use crate::contract::outbound::TokenRefreshed;
use crate::domain::{ScopeSet, TenantId};
use crate::group_commit::GroupCommit;
use crate::handlers::{Context, HandlerError};
use crate::platform::TokenGrant;
use crate::store::{self, audit::NewRecord, channels::Refreshed, jobs::NextRefresh, tokens::SealedTokens};
use crate::vault::{Sealed, SecretKind};

/// A platform's successful answer to a refresh, sealed and waiting to be stored.
pub struct Landing {
    pub(super) subject: Subject,
    pub(super) grant: TokenGrant,
    sealed: Vec<(SecretKind, Sealed)>,
}

impl Landing {
    /// Seals the new tokens now, outside any transaction.
    pub(super) fn seal(ctx: &Context, subject: Subject, grant: TokenGrant) -> Self {
        let sealed = ctx.vault.seal_all(&subject.tenant, &subject.channel, grant.secrets());
        Self { subject, grant, sealed }
    }
}

/// What became of a queued result.
pub enum Landed {
    Stored,
    /// The channel moved on while the call was out (or the job was cancelled): discard it.
    Fenced(Box<Landing>),
    /// The batch's transaction failed; nothing of it was written.
    Failed(Box<Landing>, HandlerError),
    /// The task writing the batch died (a panic): the result is gone, the job keeps its lease
    /// and runs again when it lapses.
    Lost,
}

/// Stores successful refreshes in batches.
#[derive(Default)]
pub struct RefreshBatcher {
    group: GroupCommit<Landing, Landed>,
}

impl RefreshBatcher {
    /// Stores `landing` with whatever else is queued, and says what became of it.
    pub async fn land(&self, ctx: &Context, landing: Landing) -> Landed {
        let landed = self.group.submit(landing, |batch| write_batch(ctx, batch)).await;
        landed.unwrap_or(Landed::Lost)
    }

    /// Stores one result on its own (after its batch failed).
    pub async fn land_alone(ctx: &Context, landing: Landing) -> Landed {
        write_batch(ctx, vec![landing]).await.pop().unwrap_or(Landed::Lost)
    }
}

async fn write_batch(ctx: &Context, landings: Vec<Landing>) -> Vec<Landed> {
    match write(ctx, &landings).await {
        Ok(stored) => landings
            .into_iter()
            .zip(stored)
            .map(|(landing, stored)| {
                if stored {
                    Landed::Stored
                } else {
                    Landed::Fenced(Box::new(landing))
                }
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, refreshes = landings.len(), "a refresh batch failed; its refreshes are retried alone");
            landings
                .into_iter()
                .map(|landing| {
                    let error = HandlerError::Database(sea_orm::DbErr::Custom(error.to_string()));
                    Landed::Failed(Box::new(landing), error)
                })
                .collect()
        }
    }
}

/// One transaction for the whole batch; says which results were stored.
async fn write(ctx: &Context, landings: &[Landing]) -> Result<Vec<bool>, HandlerError> {
    use sea_orm::TransactionTrait;
    let txn = ctx.db.begin().await?;
    let channel_keys: Vec<(&TenantId, Uuid)> = landings
        .iter()
        .map(|l| (&l.subject.tenant, l.subject.channel_pk))
        .collect();
    let job_keys: Vec<(&TenantId, Uuid)> = landings.iter().map(|l| (&l.subject.tenant, l.subject.job_id)).collect();
    let channels: HashMap<Uuid, entity::channels::Model> = store::channels::lock_many(&txn, &channel_keys)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let running: HashSet<Uuid> = store::jobs::lock_running_many(&txn, &job_keys)
        .await?
        .into_iter()
        .collect();
    // The fence, as for a single refresh. A channel cannot be twice in one batch (one running
    // refresh per channel); were it, all but the first would be fenced out.
    let mut seen = HashSet::new();
    let stored: Vec<bool> = landings
        .iter()
        .map(|l| {
            let unfenced = channels.get(&l.subject.channel_pk).is_some_and(|c| {
                c.tenant_id == l.subject.tenant.as_str()
                    && c.status == "active"
                    && c.token_version == l.subject.token_version
            }) && running.contains(&l.subject.job_id);
            unfenced && seen.insert(l.subject.channel_pk)
        })
        .collect();
    let accepted: Vec<(&Landing, &entity::channels::Model)> = landings
        .iter()
        .zip(&stored)
        .filter(|(_, stored)| **stored)
        .filter_map(|(l, _)| channels.get(&l.subject.channel_pk).map(|c| (l, c)))
        .collect();
    if accepted.is_empty() {
        txn.rollback().await?;
        return Ok(stored);
    }

    let now = crate::clock::now();
    let expiries: Vec<Option<chrono::DateTime<chrono::Utc>>> = accepted
        .iter()
        .map(|(l, _)| {
            l.grant
                .expires_in
                .and_then(|lifetime| chrono::Duration::from_std(lifetime).ok())
                .map(|lifetime| now + lifetime)
        })
        .collect();
    // A `scope` in the response is the grant as it now stands.
    let refreshed: Vec<Refreshed<'_>> = accepted
        .iter()
        .zip(&expiries)
        .map(|((l, _), expires_at)| Refreshed {
            tenant: &l.subject.tenant,
            channel_pk: l.subject.channel_pk,
            granted_scopes: l.grant.scope.as_ref(),
            expires_at: *expires_at,
        })
        .collect();
    let versions: HashMap<Uuid, i64> = store::channels::record_refreshes(&txn, &refreshed)
        .await?
        .into_iter()
        .collect();
    let tokens: Vec<SealedTokens<'_>> = accepted
        .iter()
        .filter_map(|(l, _)| {
            versions.get(&l.subject.channel_pk).map(|version| SealedTokens {
                tenant: &l.subject.tenant,
                channel_pk: l.subject.channel_pk,
                sealed: &l.sealed,
                token_version: *version,
            })
        })
        .collect();
    store::tokens::store_many(&txn, &tokens).await?;
    let done: Vec<(&TenantId, Uuid)> = accepted
        .iter()
        .map(|(l, _)| (&l.subject.tenant, l.subject.job_id))
        .collect();
    store::jobs::finish_done(&txn, &done).await?;
    // The built-in schedule: each new token's next refresh.
    let next: Vec<NextRefresh<'_>> = accepted
        .iter()
        .filter_map(|(l, _)| {
            l.grant.expires_in.map(|lifetime| NextRefresh {
                tenant: &l.subject.tenant,
                channel_pk: l.subject.channel_pk,
                channel_id: l.subject.channel.as_str(),
                run_at: ctx.settings.refresh.next_refresh(now, lifetime),
            })
        })
        .collect();
    store::jobs::schedule_refreshes(&txn, &next, store::jobs::Schedule::Replace).await?;
    let mut waiters = store::jobs::answer_waiters(&txn, &done).await?;

    let waiting: Vec<Vec<store::jobs::WaitingEvent>> = accepted
        .iter()
        .map(|(l, _)| waiters.remove(&l.subject.job_id).unwrap_or_default())
        .collect();
    let mut reports = Vec::with_capacity(accepted.len());
    let mut entries = Vec::with_capacity(accepted.len());
    for (((landing, channel), expires_at), waiting) in accepted.iter().zip(&expiries).zip(&waiting) {
        let subject = &landing.subject;
        let mut report = Reports::new(&subject.tenant, &subject.channel, subject.job_id, waiting);
        // A response without `refresh_token` keeps the one we have (RFC 6749 §6).
        let rotated = landing.grant.refresh_token.is_some();
        let narrowed = landing
            .grant
            .scope
            .as_ref()
            .map(|scope| ScopeSet::from_json(&channel.granted_scopes).difference(scope))
            .filter(|lost| !lost.is_empty());
        let details = json!({
            "job_id": subject.job_id,
            "attempts": subject.attempts,
            "refresh_token_rotated": rotated,
            "expires_at": expires_at,
            "scopes_lost": narrowed,
        });
        entries.push(report.entry(action::TOKEN_REFRESHED, "success", details));
        report.finish(&TokenRefreshed {
            channel_id: subject.channel.clone(),
            expires_at: *expires_at,
            refresh_token_rotated: rotated,
            attempts: subject.attempts,
        });
        reports.push(report);
    }
    let records: Vec<NewRecord<'_>> = accepted
        .iter()
        .zip(&entries)
        .map(|((l, _), entry)| NewRecord {
            tenant: &l.subject.tenant,
            correlation_id: None,
            entry,
        })
        .collect();
    let appended = store::audit::append_many(&txn, &records).await?;
    let mut messages = Vec::new();
    for ((mut report, entry), appended) in reports.into_iter().zip(entries).zip(&appended) {
        report.audited(entry, appended);
        messages.extend(report.into_messages());
    }
    store::outbox::insert(&txn, &messages).await?;
    txn.commit().await?;
    for _ in &accepted {
        crate::metrics::refresh_settled("refreshed");
    }
    // The next refreshes just scheduled are a token lifetime away: the scheduler's poll finds
    // them in time, and waking it for each batch would cost a search for the next due time.
    ctx.outbox_ready.notify_one();
    ctx.tokens_changed.notify_waiters();
    Ok(stored)
}
