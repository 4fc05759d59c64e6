//! Messages the worker cannot act on: audited as `event.rejected`, answered with the type's
//! failure outcome when the event says who to answer, then dead-lettered whole.

use sea_orm::TransactionTrait;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Answer, Context, Delivery, Disposition, HandlerError};
use crate::audit::{AuditEntry, action, hex};
use crate::contract::inbound::INBOUND;
use crate::contract::outbound::{ConnectionFailed, OperationRejected, TokenRefreshFailed};
use crate::contract::{RejectedEvent, TraceParent};
use crate::domain::TenantId;
use crate::store::inbox::{self, Claim};

pub async fn handle(
    ctx: &Context,
    rejected: &RejectedEvent,
    delivery: Delivery<'_>,
) -> Result<Disposition, HandlerError> {
    let tenant = rejected.tenant.clone().unwrap_or_else(TenantId::unattributed);
    let body_sha256 = hex(&Sha256::digest(delivery.body));
    let dead_letter = Disposition::DeadLetter {
        code: rejected.code,
        reason: rejected.reason.clone(),
    };
    let txn = ctx.db.begin().await?;

    // Exact redeliveries of one rejected message are audited once.
    let key = format!("rejected:{body_sha256}");
    let claim = inbox::claim(&txn, &tenant, &key, "rejected", ctx.settings.event_lease).await?;
    if claim == Claim::Done || claim == Claim::Busy {
        txn.rollback().await?;
        return Ok(dead_letter);
    }
    inbox::complete(&txn, &tenant, &key).await?;

    let event_id = rejected.event_id.as_ref().map(|id| id.as_str());
    let span = TraceParent::child_of(rejected.traceparent.as_ref());
    let answerable = rejected.tenant.is_some() && event_id.is_some();
    let reply_to = if answerable { delivery.reply_to } else { None };
    let mut answer = Answer::new(&tenant, event_id, "bus", span, reply_to);
    let known_type = rejected
        .event_type
        .as_deref()
        .filter(|t| INBOUND.iter().any(|(name, _)| name == t));
    let known_key = INBOUND
        .iter()
        .map(|(_, key)| *key)
        .find(|key| *key == delivery.routing_key);
    let details = json!({
        "error_code": rejected.code,
        "reason": rejected.reason,
        "event_type": known_type,
        "routing_key": known_key,
        "body_sha256": body_sha256,
    });
    let entry = AuditEntry {
        channel: None,
        action: action::EVENT_REJECTED,
        outcome: "rejected",
        origin: "bus".into(),
        details,
    };
    answer.audit(&txn, entry).await?;

    if answerable {
        let message = rejected.reason.clone();
        match known_type {
            Some("ConsentUrlRequested" | "ConnectRequested") => answer.finish(&ConnectionFailed {
                channel_id: None,
                error_code: rejected.code,
                message,
                retryable: false,
            }),
            Some("TokenExpiring") => answer.finish(&TokenRefreshFailed {
                channel_id: None,
                error_code: rejected.code,
                retryable: false,
                attempts: 0,
                next_attempt_at: None,
            }),
            Some("OperationRequested") => answer.finish(&OperationRejected {
                channel_id: None,
                capability: None,
                error_code: rejected.code,
                missing_scopes: None,
            }),
            _ => {}
        }
    }
    answer.write(&txn).await?;
    txn.commit().await?;
    ctx.outbox_ready.notify_one();
    Ok(dead_letter)
}
