//! How a job answers: one audit record per outcome, and each outcome to every event waiting on
//! the job (or, when the worker's own schedule started it, once with no correlation).

use sea_orm::DatabaseTransaction;
use uuid::Uuid;

use crate::audit::AuditEntry;
use crate::contract::TraceParent;
use crate::domain::{ChannelId, TenantId};
use crate::handlers::{Answer, HandlerError};
use crate::store;

/// The job's answers: one audit record, and each outcome to every waiting event (or, when the
/// worker's own schedule started the job, once with no correlation).
pub struct Reports<'a> {
    audit: Answer<'a>,
    answers: Vec<Answer<'a>>,
    has_final: bool,
    tenant: &'a TenantId,
    job_id: Uuid,
    channel: &'a ChannelId,
}

impl<'a> Reports<'a> {
    pub fn new(
        tenant: &'a TenantId,
        channel: &'a ChannelId,
        job_id: Uuid,
        waiters: &'a [store::jobs::WaitingEvent],
    ) -> Self {
        let mut answers: Vec<Answer<'a>> = waiters
            .iter()
            .map(|waiter| Answer::for_waiter(tenant, waiter))
            .collect();
        if answers.is_empty() {
            answers.push(Answer::new(tenant, None, "worker", TraceParent::child_of(None), None));
        }
        Self {
            audit: Answer::new(tenant, None, "worker", TraceParent::child_of(None), None),
            answers,
            has_final: false,
            tenant,
            job_id,
            channel,
        }
    }

    pub async fn audit(
        &mut self,
        txn: &DatabaseTransaction,
        action: &'static str,
        outcome: &'static str,
        details: serde_json::Value,
    ) -> Result<(), HandlerError> {
        let entry = self.entry(action, outcome, details);
        Ok(self.audit.audit(txn, entry).await?)
    }

    /// The job's audit record of `action`, caused by the worker itself.
    pub fn entry(&self, action: &'static str, outcome: &'static str, details: serde_json::Value) -> AuditEntry {
        AuditEntry {
            channel: Some(self.channel.clone()),
            action,
            outcome,
            origin: "worker".into(),
            details,
        }
    }

    pub fn progress<T: crate::contract::outbound::OutboundEvent>(&mut self, data: &T) {
        self.answers.iter_mut().for_each(|a| a.progress(data));
    }

    pub fn finish<T: crate::contract::outbound::OutboundEvent>(&mut self, data: &T) {
        self.has_final = true;
        self.answers.iter_mut().for_each(|a| a.finish(data));
    }

    /// Publishes an audit record appended elsewhere (a batch appends many in one go).
    pub fn audited(&mut self, entry: AuditEntry, appended: &store::audit::Appended) {
        self.audit.audited(entry, appended);
    }

    /// Writes every answer in one statement and, after a final one, closes the waiters.
    pub async fn write(self, txn: &DatabaseTransaction) -> Result<(), HandlerError> {
        let (tenant, job_id, has_final) = (self.tenant, self.job_id, self.has_final);
        store::outbox::insert(txn, &self.into_messages()).await?;
        if has_final {
            store::jobs::mark_answered(txn, tenant, job_id).await?;
        }
        Ok(())
    }

    /// The messages of the audit record and every answer.
    pub fn into_messages(self) -> Vec<store::outbox::NewMessage> {
        let mut messages = self.audit.into_messages();
        messages.extend(self.answers.into_iter().flat_map(Answer::into_messages));
        messages
    }
}
