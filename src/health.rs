//! The worker's small HTTP port, for orchestrators and Prometheus: `/healthz` (the process
//! answers), `/readyz` (database reachable and migrated, broker connected, consumer running)
//! and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What readiness looks at, shared with the parts that change it.
#[derive(Clone)]
pub struct Readiness {
    pub db: DatabaseConnection,
    pub link: Arc<crate::bus::link::Link>,
    pub consuming: Arc<AtomicBool>,
}

impl Readiness {
    async fn checks(&self) -> (bool, serde_json::Value) {
        let database = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.db.execute_unprepared("SELECT 1"),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        let migrated = database
            && migration::Migrator::get_pending_migrations(&self.db)
                .await
                .is_ok_and(|pending| pending.is_empty());
        let broker = self.link.is_connected();
        let consumer = self.consuming.load(Ordering::SeqCst);
        let ready = database && migrated && broker && consumer;
        (
            ready,
            json!({ "database": database, "migrations": migrated, "broker": broker, "consumer": consumer }),
        )
    }
}

async fn healthz() -> impl IntoResponse {
    "ok"
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, checks) = readiness.checks().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(checks))
}

async fn metrics(State(readiness): State<Readiness>) -> impl IntoResponse {
    let text = crate::metrics::render(&readiness.db).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Binds the port and serves until `stop`. Returns the bound address (the port may be 0).
pub async fn serve(address: SocketAddr, readiness: Readiness, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(bound)
}
