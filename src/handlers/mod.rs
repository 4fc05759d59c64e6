//! What each inbound event does. The bus hands over a delivery; [`process`] parses it, runs its
//! handler, and says whether the delivery is done or belongs in the dead-letter queue. Handlers
//! commit their effects together with their outcome and audit events (the outbox); they never
//! hold a transaction open across a call to a platform.

mod answer;
mod connect;
mod consent_url;
pub(crate) mod operation;
mod rejected;
mod revoke;
pub mod token_expiring;

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::Notify;

pub use answer::Answer;

use crate::contract::{Command, Envelope, RejectedEvent, TraceParent};
use crate::domain::ErrorCode;
use crate::platform::{Catalogue, OAuthClient};
use crate::settings::Settings;
use crate::store::inbox::{self, Claim};
use crate::store::outbox;
use crate::vault::Vault;

/// What handlers need, shared by every task of the worker.
#[derive(Clone)]
pub struct Context {
    pub db: DatabaseConnection,
    pub vault: Arc<Vault>,
    pub catalogue: Arc<Catalogue>,
    pub oauth: OAuthClient,
    pub settings: Arc<Settings>,
    /// Woken after every commit that wrote to the outbox.
    pub outbox_ready: Arc<Notify>,
    /// Woken after every commit that made a job due.
    pub jobs_ready: Arc<Notify>,
    /// Woken (all waiters) after a refresh stored new tokens or was discarded.
    pub tokens_changed: Arc<Notify>,
    /// Where jobs run: at most `PRAISMA_JOB_CONCURRENCY` at once, whether the scheduler claimed
    /// them or a handler started one itself, tracked so shutdown lets them finish.
    pub jobs: crate::jobs::Slots,
    /// Stores successful refreshes in batches (group commit).
    pub refreshes: Arc<crate::jobs::refresh_batch::RefreshBatcher>,
    /// Writes `TokenExpiring` events in batches (group commit).
    pub expiring: Arc<token_expiring::Batches>,
}

/// One delivery as the bus saw it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub body: &'a [u8],
    pub routing_key: &'a str,
    pub reply_to: Option<&'a str>,
}

/// What the bus should do with a delivery once [`process`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Effects and outcomes are committed: acknowledge.
    Done,
    /// Committed what could be (audit, rejection outcome); the message itself goes to the
    /// dead-letter queue with this code, then is acknowledged.
    DeadLetter { code: ErrorCode, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the database failed: {0}")]
    Database(#[from] DbErr),
    #[error("another worker is processing this event right now")]
    Busy,
}

/// The inbound event being answered, and the worker's span under the caller's trace.
pub struct Inbound<'a> {
    pub envelope: &'a Envelope,
    pub reply_to: Option<&'a str>,
    pub span: TraceParent,
}

impl Inbound<'_> {
    /// This event, as one a job answers when it finishes.
    pub fn as_waiter(&self) -> crate::store::jobs::Waiter<'_> {
        crate::store::jobs::Waiter {
            event_id: self.envelope.id.as_str(),
            origin: &self.envelope.source,
            reply_to: self.reply_to,
            traceparent: self.span.to_string(),
        }
    }
}

/// Runs one delivery whose envelope the bus has already parsed (parsing once lets the consumer
/// span take its parent from the event before anything runs inside it).
pub async fn process(
    ctx: &Context,
    delivery: Delivery<'_>,
    parsed: &Result<Envelope, Box<RejectedEvent>>,
) -> Result<Disposition, HandlerError> {
    let envelope = match parsed {
        Ok(envelope) => envelope,
        Err(rejected) => return rejected::handle(ctx, rejected, delivery).await,
    };
    let command = match Command::from_envelope(envelope) {
        Ok(command) => command,
        Err(rejected) => return rejected::handle(ctx, &rejected, delivery).await,
    };
    let span = crate::telemetry::current_traceparent()
        .filter(|span| {
            envelope
                .traceparent
                .is_none_or(|caller| caller.trace_id == span.trace_id)
        })
        .unwrap_or_else(|| TraceParent::child_of(envelope.traceparent.as_ref()));
    let inbound = Inbound {
        envelope,
        reply_to: delivery.reply_to,
        span,
    };
    match command {
        Command::ConsentUrlRequested(data) => consent_url::handle(ctx, &inbound, data).await,
        Command::ConnectRequested(data) => connect::handle(ctx, &inbound, data).await,
        Command::TokenExpiring(data) => token_expiring::handle(ctx, &inbound, data).await,
        Command::RevokeRequested(data) => revoke::handle(ctx, &inbound, data).await,
        Command::OperationRequested(data) => operation::handle(ctx, &inbound, data).await,
    }
}

/// A claimed event, with the transaction its first step runs in.
enum Begun {
    Run(DatabaseTransaction),
    AlreadyAnswered,
}

/// Claims the event in the inbox. A duplicate of an answered event has its recorded outcomes
/// queued again, with their original ids, and nothing else happens.
#[tracing::instrument(name = "db.transaction claim", skip_all, fields(db.system.name = "postgresql"))]
async fn begin(ctx: &Context, inbound: &Inbound<'_>) -> Result<Begun, HandlerError> {
    let envelope = inbound.envelope;
    let txn = ctx.db.begin().await?;
    let claim = inbox::claim(
        &txn,
        &envelope.tenant,
        envelope.id.as_str(),
        &envelope.event_type,
        ctx.settings.event_lease,
    )
    .await?;
    match claim {
        Claim::Done => {
            outbox::republish_outcomes(&txn, &envelope.tenant, envelope.id.as_str(), inbound.reply_to).await?;
            txn.commit().await?;
            ctx.outbox_ready.notify_one();
            Ok(Begun::AlreadyAnswered)
        }
        Claim::Busy => {
            txn.rollback().await?;
            Err(HandlerError::Busy)
        }
        Claim::Fresh | Claim::Resumed => Ok(Begun::Run(txn)),
    }
}

/// Writes the answer, marks the event answered, commits, and wakes the relay.
#[tracing::instrument(name = "db.transaction commit", skip_all, fields(db.system.name = "postgresql"))]
async fn complete(
    ctx: &Context,
    txn: DatabaseTransaction,
    inbound: &Inbound<'_>,
    answer: Answer<'_>,
) -> Result<Disposition, HandlerError> {
    answer.write(&txn).await?;
    inbox::complete(&txn, &inbound.envelope.tenant, inbound.envelope.id.as_str()).await?;
    txn.commit().await?;
    ctx.outbox_ready.notify_one();
    Ok(Disposition::Done)
}
