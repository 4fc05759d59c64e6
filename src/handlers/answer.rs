//! Collects what one event's transaction publishes: outcomes and audit records, all as
//! CloudEvents in the outbox, committed with the effects they describe.

use sea_orm::{ConnectionTrait, DbErr};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Inbound;
use crate::audit::{AuditEntry, hex};
use crate::contract::envelope::{CONTENT_TYPE, SPEC_VERSION, WORKER_SOURCE};
use crate::contract::outbound::{AuditRecorded, ConnectionFailed, OutboundEvent};
use crate::contract::{OutboundEnvelope, TraceParent};
use crate::domain::{ChannelId, TenantId};
use crate::platform::PlatformError;
use crate::store::{self, outbox::NewMessage};

pub struct Answer<'a> {
    tenant: &'a TenantId,
    correlation_id: Option<&'a str>,
    origin: &'a str,
    span: TraceParent,
    reply_to: Option<&'a str>,
    messages: Vec<NewMessage>,
}

impl<'a> Answer<'a> {
    pub fn to(inbound: &'a Inbound<'a>) -> Self {
        Self {
            tenant: &inbound.envelope.tenant,
            correlation_id: Some(inbound.envelope.id.as_str()),
            origin: &inbound.envelope.source,
            span: inbound.span,
            reply_to: inbound.reply_to,
            messages: Vec::new(),
        }
    }

    /// An answer not tied to a delivery being handled: a job answering the events that wait
    /// on it, a rejected message, or the worker's own schedule (no correlation).
    pub fn new(
        tenant: &'a TenantId,
        correlation_id: Option<&'a str>,
        origin: &'a str,
        span: TraceParent,
        reply_to: Option<&'a str>,
    ) -> Self {
        Self {
            tenant,
            correlation_id,
            origin,
            span,
            reply_to,
            messages: Vec::new(),
        }
    }

    /// The answer to an event that waited on a job, in the trace it came with.
    pub fn for_waiter(tenant: &'a TenantId, waiter: &'a crate::store::jobs::WaitingEvent) -> Self {
        let span = TraceParent::parse(&waiter.traceparent).unwrap_or_else(|| TraceParent::child_of(None));
        Self::new(
            tenant,
            Some(&waiter.event_id),
            &waiter.origin,
            span,
            waiter.reply_to.as_deref(),
        )
    }

    /// An intermediate outcome (a failed attempt that will be retried).
    pub fn progress<T: OutboundEvent>(&mut self, data: &T) {
        self.push(T::TYPE, T::ROUTING_KEY.to_owned(), data, None, false);
    }

    /// The one final outcome; it also goes to the caller's `reply_to` queue.
    pub fn finish<T: OutboundEvent>(&mut self, data: &T) {
        let reply_to = self.reply_to.map(str::to_owned);
        self.push(T::TYPE, T::ROUTING_KEY.to_owned(), data, reply_to, false);
    }

    /// Appends to the audit chain and publishes the record as `AuditRecorded`.
    pub async fn audit(&mut self, db: &impl ConnectionTrait, entry: AuditEntry) -> Result<(), DbErr> {
        let appended = store::audit::append(db, self.tenant, self.correlation_id, &entry).await?;
        self.audited(entry, &appended);
        Ok(())
    }

    /// Publishes a record already appended to its chain as `AuditRecorded`.
    pub fn audited(&mut self, entry: AuditEntry, appended: &store::audit::Appended) {
        let record = AuditRecorded {
            channel_id: entry.channel,
            action: entry.action.to_owned(),
            outcome: entry.outcome.to_owned(),
            origin: entry.origin,
            details: entry.details,
            sequence: appended.sequence,
            hash: hex(&appended.hash),
        };
        let routing_key = format!("{}{}", AuditRecorded::ROUTING_KEY_PREFIX, entry.action);
        self.push(AuditRecorded::TYPE, routing_key, &record, None, true);
    }

    /// Audits a failed authorization under `action` and answers `ConnectionFailed`.
    pub async fn refuse_connection(
        &mut self,
        db: &impl ConnectionTrait,
        channel: Option<ChannelId>,
        action: &'static str,
        error: &PlatformError,
        mut details: Value,
    ) -> Result<(), DbErr> {
        details["error_code"] = serde_json::json!(error.code);
        let entry = AuditEntry {
            channel: channel.clone(),
            action,
            outcome: "failure",
            origin: self.origin(),
            details,
        };
        self.audit(db, entry).await?;
        self.finish(&ConnectionFailed {
            channel_id: channel,
            error_code: error.code,
            message: error.message.to_owned(),
            retryable: error.is_transient(),
        });
        Ok(())
    }

    pub fn origin(&self) -> String {
        self.origin.to_owned()
    }

    /// Writes everything to the outbox in the caller's transaction.
    pub async fn write(self, db: &impl ConnectionTrait) -> Result<(), DbErr> {
        store::outbox::insert(db, &self.messages).await
    }

    /// The messages, for a caller that writes several answers in one statement.
    pub fn into_messages(self) -> Vec<NewMessage> {
        self.messages
    }

    fn push<T: Serialize>(
        &mut self,
        event_type: &'static str,
        routing_key: String,
        data: &T,
        reply_to: Option<String>,
        is_audit: bool,
    ) {
        let id = Uuid::now_v7();
        let envelope = OutboundEnvelope {
            specversion: SPEC_VERSION,
            id,
            source: WORKER_SOURCE,
            event_type,
            time: crate::clock::now(),
            tenantid: self.tenant.as_str(),
            correlationid: self.correlation_id,
            traceparent: self.span.to_string(),
            datacontenttype: "application/json",
            data,
        };
        debug_assert_eq!(CONTENT_TYPE, "application/cloudevents+json");
        let body = serde_json::to_value(&envelope).unwrap_or(Value::Null);
        self.messages.push(NewMessage {
            id,
            tenant: self.tenant.clone(),
            correlation_id: self.correlation_id.map(str::to_owned),
            routing_key,
            body,
            reply_to,
            is_audit,
        });
    }
}
