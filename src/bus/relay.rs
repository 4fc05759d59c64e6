//! The outbox relay: publishes committed outcome and audit events with confirms, then marks
//! them published. Rows are claimed with `SKIP LOCKED`, so replicas share the work; a crash
//! between publish and mark republishes with the same ids, which consumers deduplicate.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::publisher::{PublishError, event_properties};
use crate::store::outbox;

const BATCH: u64 = 256;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("the database failed: {0}")]
    Database(#[from] DbErr),
    #[error("publishing failed: {0}")]
    Publish(#[from] PublishError),
    #[error("the broker connection is down")]
    Disconnected,
}

pub struct Relay {
    pub db: DatabaseConnection,
    pub link: Arc<Link>,
    pub exchange: String,
    pub wake: Arc<Notify>,
    pub poll: Duration,
}

impl Relay {
    /// Publishes until `stop` is cancelled, then drains what is committed and returns.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        let mut sessions = self.link.changes();
        loop {
            // Read before draining: everything committed before `stop` was cancelled is then
            // seen by this drain, which is the last one.
            let stopping = stop.is_cancelled();
            match self.drain().await {
                Ok(()) => failures = 0,
                Err(error) if stopping => {
                    tracing::warn!(%error, "the final outbox flush failed; the next worker publishes what is left");
                    return;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "outbox relay failed; retrying");
                    // A new connection is worth trying at once.
                    sessions.mark_unchanged();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = sessions.changed() => {}
                        _ = stop.cancelled() => {}
                    }
                    continue;
                }
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    async fn drain(&self) -> Result<(), RelayError> {
        while self.publish_batch().await? == BATCH as usize {}
        Ok(())
    }

    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let publisher = self.link.session().ok_or(RelayError::Disconnected)?.publisher;
        let txn = self.db.begin().await?;
        // Marking rows published need not wait for the WAL flush: if a database crash loses the
        // mark, the rows are published again with the same ids, which consumers already expect
        // (delivery is at least once). The effects and outcomes were committed durably before.
        txn.execute_unprepared("SET LOCAL synchronous_commit = off").await?;
        let rows = outbox::claim_batch(&txn, BATCH).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let body = serde_json::to_vec(&row.body).unwrap_or_default();
            let properties = event_properties(&row.body);
            pending.push(
                publisher
                    .send(&self.exchange, &row.routing_key, &body, properties.clone())
                    .await?,
            );
            if let Some(reply_to) = &row.reply_to {
                pending.push(publisher.send("", reply_to, &body, properties).await?);
            }
        }
        for confirm in pending {
            confirm.confirmed().await?;
        }
        let seqs: Vec<_> = rows.iter().map(|r| r.seq).collect();
        outbox::mark_published(&txn, &seqs).await?;
        txn.commit().await?;
        tracing::debug!(published = rows.len(), "outbox batch published");
        Ok(rows.len())
    }
}
