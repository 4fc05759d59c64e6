//! `TokenExpiring` pulls the channel's refresh forward. It never calls the platform itself: it
//! joins the channel's one refresh job (creating it if none is pending) and registers as one of
//! the events that job answers. A storm of these is one platform call and one answer each.
//!
//! These events are the bulk of the traffic, so they are handled in batches
//! ([`crate::group_commit`]): one transaction claims every event of the batch in the inbox,
//! locks their channels, reads their tokens, starts or joins their refreshes and writes the
//! immediate answers, each step one statement for the whole batch. With a free job slot, a
//! refresh is created already claimed and runs as soon as the batch commits, with the channel
//! and token it read under the lock.

use std::collections::HashMap;

use sea_orm::{DbErr, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use super::{Answer, Context, Disposition, HandlerError, Inbound};
use crate::audit::{AuditEntry, action};
use crate::contract::TraceParent;
use crate::contract::inbound::TokenExpiring;
use crate::contract::outbound::{TokenRefreshFailed, TokenRefreshed};
use crate::domain::{ChannelId, ErrorCode, TenantId};
use crate::jobs::Slot;
use crate::jobs::refresh::{Claimed, configured, renewal_kind};
use crate::store::inbox::{Claim, EventKey};
use crate::store::jobs::{NextRefresh, RefreshStart, Schedule, Waiter};
use crate::store::{self, audit::NewRecord};
use crate::vault::SecretKind;

/// The batches `TokenExpiring` events are written in.
pub type Batches = crate::group_commit::GroupCommit<Expiring, Result<Disposition, HandlerError>>;

/// A `TokenExpiring` event waiting for its batch, owned so that any task can write it.
pub struct Expiring {
    tenant: TenantId,
    event_id: String,
    event_type: String,
    origin: String,
    reply_to: Option<String>,
    span: TraceParent,
    request: TokenExpiring,
}

pub async fn handle(ctx: &Context, inbound: &Inbound<'_>, request: TokenExpiring) -> Result<Disposition, HandlerError> {
    let envelope = inbound.envelope;
    let event = Expiring {
        tenant: envelope.tenant.clone(),
        event_id: envelope.id.as_str().to_owned(),
        event_type: envelope.event_type.clone(),
        origin: envelope.source.clone(),
        reply_to: inbound.reply_to.map(str::to_owned),
        span: inbound.span,
        request,
    };
    ctx.expiring
        .submit(event, |batch| write_batch(ctx, batch))
        .await
        // The task writing the batch died: the event is handled again like any database failure.
        .unwrap_or_else(|| Err(HandlerError::Database(DbErr::Custom("the batch was abandoned".into()))))
}

async fn write_batch(ctx: &Context, events: Vec<Expiring>) -> Vec<Result<Disposition, HandlerError>> {
    match write(ctx, &events).await {
        Ok(results) => results,
        Err(error) => {
            tracing::warn!(%error, events = events.len(), "a TokenExpiring batch failed; its events are retried");
            events
                .iter()
                .map(|_| Err(HandlerError::Database(DbErr::Custom(error.to_string()))))
                .collect()
        }
    }
}

/// What one event gets.
enum Decision {
    Refuse {
        code: ErrorCode,
        channel_exists: bool,
    },
    /// Fresh enough, or a token that never expires: describe it, call nobody.
    Current {
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Wait on the channel's refresh.
    Join {
        channel_pk: Uuid,
    },
}

#[tracing::instrument(name = "db.transaction token_expiring", skip_all, fields(db.system.name = "postgresql", events = events.len()))]
async fn write(ctx: &Context, events: &[Expiring]) -> Result<Vec<Result<Disposition, HandlerError>>, HandlerError> {
    let txn = ctx.db.begin().await?;
    // A redelivered copy of an event already in this batch is claimed once; the copy is busy.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let distinct: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let key = (events[i].tenant.as_str(), events[i].event_id.as_str());
            *first_of.entry(key).or_insert(i) == i
        })
        .collect();
    let keys: Vec<EventKey<'_>> = distinct
        .iter()
        .map(|&i| EventKey {
            tenant: &events[i].tenant,
            event_id: &events[i].event_id,
            event_type: &events[i].event_type,
        })
        .collect();
    let claimed: Vec<usize> = store::inbox::claim_answered_many(&txn, &keys)
        .await?
        .into_iter()
        .map(|k| distinct[k])
        .collect();
    let is_claimed: std::collections::HashSet<usize> = claimed.iter().copied().collect();
    let mut results: Vec<Option<Result<Disposition, HandlerError>>> = (0..events.len()).map(|_| None).collect();
    for (i, event) in events.iter().enumerate() {
        if is_claimed.contains(&i) {
            continue;
        }
        // Already answered: its recorded outcomes are queued again with their original ids.
        results[i] = Some(
            match store::inbox::status_of(&txn, &event.tenant, &event.event_id).await? {
                Claim::Done if first_of.get(&(event.tenant.as_str(), event.event_id.as_str())) == Some(&i) => {
                    let reply_to = event.reply_to.as_deref();
                    store::outbox::republish_outcomes(&txn, &event.tenant, &event.event_id, reply_to).await?;
                    Ok(Disposition::Done)
                }
                _ => Err(HandlerError::Busy),
            },
        );
    }

    // The channels' row locks order these events against refreshes finishing right now.
    let names: Vec<(&TenantId, &ChannelId)> = claimed
        .iter()
        .map(|&i| (&events[i].tenant, &events[i].request.channel_id))
        .collect();
    let channels: HashMap<(String, String), entity::channels::Model> = store::channels::lock_named(&txn, &names)
        .await?
        .into_iter()
        .map(|row| ((row.tenant_id.clone(), row.channel_id.clone()), row))
        .collect();
    let channel_keys: Vec<(&TenantId, Uuid)> = claimed
        .iter()
        .filter_map(|&i| channel_for(&channels, &events[i]).map(|row| (&events[i].tenant, row.id)))
        .collect();
    let mut tokens = store::tokens::load_many(&txn, &channel_keys).await?;

    let now = crate::clock::now();
    let mut decisions: Vec<(usize, Decision)> = Vec::with_capacity(claimed.len());
    // Each channel that needs a refresh once: the first event asking, and the token kind the
    // refresh renews with.
    let mut refreshes: Vec<(usize, &entity::channels::Model, SecretKind)> = Vec::new();
    for &i in &claimed {
        let event = &events[i];
        let channel = channel_for(&channels, event);
        let decision = match channel {
            None => Decision::Refuse {
                code: ErrorCode::NotFound,
                channel_exists: false,
            },
            Some(channel) => decide(ctx, channel, &event.request, now, &tokens),
        };
        if let (Decision::Join { channel_pk }, Some(channel)) = (&decision, channel)
            && !refreshes.iter().any(|(_, row, _)| row.id == *channel_pk)
        {
            refreshes.push((i, channel, renewal_kind(configured(ctx, &channel.provider))));
        }
        decisions.push((i, decision));
    }

    // One refresh per channel: claimed here when a job slot is free and the token is at hand,
    // scheduled for the scheduler otherwise.
    let mut slots: HashMap<Uuid, Slot> = HashMap::new();
    let mut to_start = Vec::new();
    let mut to_schedule = Vec::new();
    for &(i, row, kind) in &refreshes {
        let event = &events[i];
        let (channel_pk, channel_id) = (row.id, event.request.channel_id.as_str());
        let renewable = tokens.contains_key(&(channel_pk, kind.as_str().to_owned()));
        match renewable.then(|| ctx.jobs.try_take()).flatten() {
            Some(slot) => {
                slots.insert(channel_pk, slot);
                to_start.push((&event.tenant, channel_pk, channel_id));
            }
            None => to_schedule.push(NextRefresh {
                tenant: &event.tenant,
                channel_pk,
                channel_id,
                run_at: now,
            }),
        }
    }
    let mut job_of: HashMap<Uuid, Uuid> = HashMap::new();
    let mut claimed_jobs = Vec::new();
    let started = store::jobs::start_refreshes(&txn, &to_start, ctx.settings.job_lease).await?;
    for (channel_pk, start) in started {
        match start {
            RefreshStart::Claimed(job) => {
                job_of.insert(channel_pk, job.id);
                claimed_jobs.push(job);
            }
            RefreshStart::Joined(job_id) => {
                job_of.insert(channel_pk, job_id);
                slots.remove(&channel_pk);
            }
        }
    }
    let scheduled = store::jobs::schedule_refreshes(&txn, &to_schedule, Schedule::NoLaterThan).await?;
    for (refresh, job_id) in to_schedule.iter().zip(scheduled) {
        job_of.insert(refresh.channel_pk, job_id);
    }

    let mut waiters = Vec::new();
    let mut refusals = Vec::new();
    let mut answers = Vec::new();
    for (i, decision) in &decisions {
        let event = &events[*i];
        match decision {
            Decision::Join { channel_pk } => {
                if let Some(job_id) = job_of.get(channel_pk) {
                    let waiter = Waiter {
                        event_id: &event.event_id,
                        origin: &event.origin,
                        reply_to: event.reply_to.as_deref(),
                        traceparent: event.span.to_string(),
                    };
                    waiters.push((&event.tenant, *job_id, waiter));
                }
            }
            Decision::Current { expires_at } => {
                let mut answer = answer_to(event);
                answer.finish(&TokenRefreshed {
                    channel_id: event.request.channel_id.clone(),
                    expires_at: *expires_at,
                    refresh_token_rotated: false,
                    attempts: 0,
                });
                answers.push(answer);
            }
            Decision::Refuse { code, channel_exists } => {
                // An unknown channel gets no audit chain of its own.
                let entry = AuditEntry {
                    channel: channel_exists.then(|| event.request.channel_id.clone()),
                    action: action::TOKEN_REFRESH_FAILED,
                    outcome: "rejected",
                    origin: event.origin.clone(),
                    details: json!({ "error_code": code }),
                };
                refusals.push((event, *code, entry));
            }
        }
    }
    store::jobs::add_waiters(&txn, &waiters).await?;
    let records: Vec<NewRecord<'_>> = refusals
        .iter()
        .map(|(event, _, entry)| NewRecord {
            tenant: &event.tenant,
            correlation_id: Some(&event.event_id),
            entry,
        })
        .collect();
    let appended = store::audit::append_many(&txn, &records).await?;
    for ((event, code, entry), appended) in refusals.into_iter().zip(&appended) {
        let mut answer = answer_to(event);
        answer.audited(entry, appended);
        answer.finish(&TokenRefreshFailed {
            channel_id: Some(event.request.channel_id.clone()),
            error_code: code,
            retryable: false,
            attempts: 0,
            next_attempt_at: None,
        });
        answers.push(answer);
    }
    let messages: Vec<_> = answers.into_iter().flat_map(Answer::into_messages).collect();
    store::outbox::insert(&txn, &messages).await?;
    txn.commit().await?;

    ctx.outbox_ready.notify_one();
    if !to_schedule.is_empty() {
        ctx.jobs_ready.notify_one();
    }
    for job in claimed_jobs {
        let sealed = refreshes
            .iter()
            .find(|(_, row, _)| row.id == job.channel_pk)
            .and_then(|(_, row, kind)| Some((*row, tokens.remove(&(row.id, kind.as_str().to_owned()))?)));
        match (sealed, slots.remove(&job.channel_pk)) {
            (Some((row, sealed)), Some(slot)) => {
                let claimed = Claimed::new(*job, row, sealed);
                let runner = ctx.clone();
                ctx.jobs.spawn(
                    slot,
                    async move { crate::jobs::run_claimed_refresh(&runner, claimed).await },
                );
            }
            // Unreachable (a job is claimed only with its slot and token): its lease lapses
            // and the scheduler runs it.
            _ => tracing::error!(job = %job.id, "a claimed refresh lost its slot or token"),
        }
    }
    for &i in &claimed {
        results[i] = Some(Ok(Disposition::Done));
    }
    Ok(results
        .into_iter()
        .map(|result| result.unwrap_or(Err(HandlerError::Busy)))
        .collect())
}

fn channel_for<'a>(
    channels: &'a HashMap<(String, String), entity::channels::Model>,
    event: &Expiring,
) -> Option<&'a entity::channels::Model> {
    channels.get(&(
        event.tenant.as_str().to_owned(),
        event.request.channel_id.as_str().to_owned(),
    ))
}

fn decide(
    ctx: &Context,
    channel: &entity::channels::Model,
    request: &TokenExpiring,
    now: chrono::DateTime<chrono::Utc>,
    tokens: &HashMap<(Uuid, String), crate::vault::Sealed>,
) -> Decision {
    let refusal = match channel.status.as_str() {
        "active" => None,
        "revoked" => Some(ErrorCode::ConnectionRevoked),
        "reauth_required" => Some(ErrorCode::ReauthRequired),
        _ => Some(ErrorCode::ConnectionNotActive),
    };
    if let Some(code) = refusal {
        return Decision::Refuse {
            code,
            channel_exists: true,
        };
    }
    let provider = configured(ctx, &channel.provider);
    // Instagram and Threads refuse to renew a token younger than a day: until then, the one
    // there is is the freshest there can be.
    let debounce = provider
        .map_or(std::time::Duration::ZERO, |p| p.min_renewal_age())
        .max(ctx.settings.refresh.debounce);
    let debounce = chrono::Duration::from_std(debounce).unwrap_or_default();
    let just_replaced = channel.tokens_updated_at.is_some_and(|at| now - at < debounce);
    let already_newer =
        matches!((request.expires_at, channel.expires_at), (Some(asked), Some(current)) if current > asked);
    let still_valid = channel.expires_at.is_none_or(|at| at > now);
    if channel.expires_at.is_none() || (still_valid && (just_replaced || already_newer)) {
        return Decision::Current {
            expires_at: channel.expires_at,
        };
    }
    let renews_with_access_token = provider.is_some_and(|provider| provider.renews_with_access_token());
    let has_refresh_token = tokens.contains_key(&(channel.id, SecretKind::RefreshToken.as_str().to_owned()));
    if !renews_with_access_token && !has_refresh_token {
        return Decision::Refuse {
            code: ErrorCode::ReauthRequired,
            channel_exists: true,
        };
    }
    Decision::Join { channel_pk: channel.id }
}

fn answer_to(event: &Expiring) -> Answer<'_> {
    Answer::new(
        &event.tenant,
        Some(&event.event_id),
        &event.origin,
        event.span,
        event.reply_to.as_deref(),
    )
}
