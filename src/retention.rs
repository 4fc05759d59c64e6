//! Retention: every replica, now and then, removes what has outlived its use: the idempotency
//! records of settled events (inbox) and the answers a redelivery would be given (outbox), jobs
//! finished with the events they answered, and expired consent states with their encrypted PKCE
//! verifiers. The audit log is append-only and kept: archiving it is the operator's policy.
//!
//! Replicas may prune at the same time; a row deleted by one is simply not there for the other.

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use tokio_util::sync::CancellationToken;

use crate::store::retention as prune;

/// Prunes every `interval` until `stop`; a zero `window` keeps everything.
pub async fn run(db: DatabaseConnection, window: Duration, interval: Duration, stop: CancellationToken) {
    if window.is_zero() {
        return;
    }
    crate::shutdown::every(interval, stop.clone(), || async {
        if let Err(error) = prune_older_than(&db, window, &stop).await {
            tracing::warn!(%error, "pruning old records failed; the next round tries again");
        }
    })
    .await;
}

/// One round: each table in batches until nothing older than `window` is left (or `stop`).
pub async fn prune_older_than(
    db: &DatabaseConnection,
    window: Duration,
    stop: &CancellationToken,
) -> Result<(), DbErr> {
    let Ok(window) = chrono::Duration::from_std(window) else {
        return Ok(());
    };
    let before = chrono::Utc::now() - window;
    drain("inbox", stop, || prune::inbox(db, before)).await?;
    drain("outbox", stop, || prune::outbox(db, before)).await?;
    drain("jobs", stop, || prune::jobs(db, before)).await?;
    drain("authorizations", stop, || prune::authorizations(db, before)).await
}

async fn drain<Batch, Pruned>(table: &'static str, stop: &CancellationToken, mut batch: Batch) -> Result<(), DbErr>
where
    Batch: FnMut() -> Pruned,
    Pruned: Future<Output = Result<u64, DbErr>>,
{
    let mut total = 0;
    loop {
        let rows = batch().await?;
        total += rows;
        crate::metrics::pruned(table, rows);
        if rows < prune::BATCH || stop.is_cancelled() {
            break;
        }
    }
    if total > 0 {
        tracing::info!(table, rows = total, "pruned records past the retention window");
    }
    Ok(())
}
