//! Wiring: [`Worker::build`] connects the database (creating it and migrating if needed), the
//! broker, the vault and the catalogue; [`Worker::run_until_stopped`] runs the consumer and the
//! outbox relay until shutdown, then drains in-flight work within the grace period.

use std::sync::Arc;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus;
use crate::bus::consumer::{Consumer, Faults};
use crate::bus::link::{Link, LinkError};
use crate::bus::relay::Relay;
use crate::handlers::Context;
use crate::jobs::Scheduler;
use crate::platform::{Catalogue, OAuthClient};
use crate::settings::Settings;
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "PostgreSQL is not reachable at {address} ({reason}); start it (`pg_ctlcluster 15 main start`, or `docker compose up -d postgres`) or set PRAISMA_DATABASE_URL"
    )]
    DatabaseUnreachable { address: String, reason: String },
    #[error("database migrations failed: {0}")]
    Migration(DbErr),
    #[error(
        "RabbitMQ is not reachable at {address} ({reason}); start it (`rabbitmq-server -detached`, or `docker compose up -d rabbitmq`) or set PRAISMA_AMQP_URL"
    )]
    BrokerUnreachable { address: String, reason: String },
    #[error("declaring the RabbitMQ topology failed: {0}")]
    Topology(lapin::Error),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
    #[error("the health and metrics port {address} cannot be opened ({reason}); set PRAISMA_HTTP_ADDR")]
    HttpPort { address: String, reason: String },
}

pub struct Worker {
    ctx: Context,
    link: Arc<Link>,
    consuming: Arc<std::sync::atomic::AtomicBool>,
    http_address: std::net::SocketAddr,
    stop_http: CancellationToken,
    faults: Arc<Faults>,
}

impl Worker {
    pub async fn build(settings: Settings, catalogue: Catalogue) -> Result<Self, StartupError> {
        let vault_spec = settings.vault_keys.clone().ok_or(crate::vault::VaultError::NoKeys)?;
        let vault = Vault::from_spec(&vault_spec)?;
        let db = connect_database(&settings.database_url, settings.database_pool_size).await?;
        if !bus::reachable(&settings.amqp_url).await {
            let address = bus::host_of(&settings.amqp_url);
            return Err(StartupError::BrokerUnreachable {
                address,
                reason: "nothing answers there".into(),
            });
        }
        let link = Link::open(settings.amqp_url.clone(), settings.bus.clone())
            .await
            .map_err(|error| match error {
                LinkError::Connect(e) => StartupError::BrokerUnreachable {
                    address: bus::host_of(&settings.amqp_url),
                    reason: e.to_string(),
                },
                LinkError::Topology(e) => StartupError::Topology(e),
            })?;
        let link = Arc::new(link);
        let oauth = OAuthClient::new(settings.http_connect_timeout, settings.http_timeout)
            .map_err(|e| StartupError::HttpClient(e.to_string()))?;
        let settings_job_concurrency = settings.job_concurrency;
        let ctx = Context {
            db,
            vault: Arc::new(vault),
            catalogue: Arc::new(catalogue),
            oauth,
            settings: Arc::new(settings),
            outbox_ready: Arc::new(Notify::new()),
            jobs_ready: Arc::new(Notify::new()),
            tokens_changed: Arc::new(Notify::new()),
            jobs: crate::jobs::Slots::new(settings_job_concurrency),
            refreshes: Arc::default(),
            expiring: Arc::default(),
        };
        crate::metrics::install();
        let consuming = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readiness = crate::health::Readiness {
            db: ctx.db.clone(),
            link: link.clone(),
            consuming: consuming.clone(),
        };
        let stop_http = CancellationToken::new();
        let http_address = crate::health::serve(ctx.settings.http_addr, readiness, stop_http.clone())
            .await
            .map_err(|e| StartupError::HttpPort {
                address: ctx.settings.http_addr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ctx,
            link,
            consuming,
            http_address,
            stop_http,
            faults: Arc::default(),
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_address(&self) -> std::net::SocketAddr {
        self.http_address
    }

    /// Test-only fault injection.
    #[doc(hidden)]
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    /// Runs until `shutdown` is cancelled: stops consuming, lets in-flight events finish (each
    /// commits and acks), flushes the outbox, and closes the connection, all within the grace
    /// period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let grace = self.ctx.settings.shutdown_grace;
        let tracker = self.ctx.jobs.tracker().clone();
        let stop_relay = CancellationToken::new();
        let crash = CancellationToken::new();
        let relay = Relay {
            db: self.ctx.db.clone(),
            link: self.link.clone(),
            exchange: self.ctx.settings.bus.exchange.clone(),
            wake: self.ctx.outbox_ready.clone(),
            poll: self.ctx.settings.outbox_poll,
        };
        let relay_task = tokio::spawn(relay.run(stop_relay.clone()));
        let consumer = Consumer {
            link: self.link.clone(),
            ctx: self.ctx.clone(),
            faults: self.faults.clone(),
            crash: crash.clone(),
            consuming: self.consuming.clone(),
        };
        let stop_consuming = CancellationToken::new();
        let mut consumer_task = tokio::spawn(consumer.run(stop_consuming.clone(), tracker.clone()));
        let scheduler = Scheduler { ctx: self.ctx.clone() };
        let scheduler_task = tokio::spawn(scheduler.run(stop_consuming.clone()));
        tracker.spawn(crate::retention::run(
            self.ctx.db.clone(),
            self.ctx.settings.retention,
            self.ctx.settings.retention_interval,
            stop_consuming.clone(),
        ));
        if let Some(interval) = crate::metrics::otlp_sampling_interval() {
            let db = self.ctx.db.clone();
            tracker.spawn(crate::metrics::sample_until(db, interval, stop_consuming.clone()));
        }

        let consumer_ended = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = crash.cancelled() => {
                // A simulated crash: no draining, no acks; the broker redelivers what was unacked.
                consumer_task.abort();
                scheduler_task.abort();
                relay_task.abort();
                self.link.close(320, "simulated crash").await;
                self.stop_http.cancel();
                return Ok(());
            }
            _ = &mut consumer_task => true,
        };
        tracing::info!("shutting down: draining in-flight events");
        stop_consuming.cancel();
        let drained = tokio::time::timeout(grace, async {
            if !consumer_ended {
                let _ = (&mut consumer_task).await;
            }
            let _ = scheduler_task.await;
            tracker.close();
            tracker.wait().await;
            stop_relay.cancel();
            let _ = relay_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown grace period ran out; unfinished events will be redelivered"
            );
        }
        self.link.close(200, "worker shutting down").await;
        self.stop_http.cancel();
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Connects to PostgreSQL, creating the database when it does not exist yet, and applies
/// pending migrations.
pub async fn connect_database(url: &SecretString, pool_size: u32) -> Result<DatabaseConnection, StartupError> {
    ensure_database_exists(url).await?;
    let db = open(url, pool_size).await?;
    Migrator::up(&db, None).await.map_err(StartupError::Migration)?;
    Ok(db)
}

async fn open(url: &SecretString, pool_size: u32) -> Result<DatabaseConnection, StartupError> {
    let mut options = ConnectOptions::new(url.expose_secret().to_owned());
    options
        .max_connections(pool_size)
        .min_connections(1)
        .connect_timeout(std::time::Duration::from_secs(5))
        .acquire_timeout(std::time::Duration::from_secs(10))
        .sqlx_logging(false)
        // Each execution is planned for the tables as they are now. The worker's tables are
        // queues whose size swings (outbox_pending, jobs, job_waiters) or that grow from empty on
        // a new deployment, and a generic plan cached while a table was empty kept scanning it
        // whole after it grew: the 60 s load run decayed from ~990 to ~650 refreshes/s, until
        // autovacuum's first analyze would have replaced the plans. Planning a statement costs
        // tens of microseconds.
        .map_sqlx_postgres_opts(|pg| pg.options([("plan_cache_mode", "force_custom_plan")]));
    Database::connect(options)
        .await
        .map_err(|e| StartupError::DatabaseUnreachable {
            address: bus::host_of(url),
            reason: summarize(&e),
        })
}

async fn ensure_database_exists(url: &SecretString) -> Result<(), StartupError> {
    let Ok(mut parsed) = url::Url::parse(url.expose_secret()) else {
        return Err(StartupError::DatabaseUnreachable {
            address: bus::host_of(url),
            reason: "the URL does not parse".into(),
        });
    };
    let name = parsed.path().trim_start_matches('/').to_owned();
    if name.is_empty() || name == "postgres" || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    parsed.set_path("/postgres");
    let admin = open(&SecretString::from(parsed.to_string()), 1).await?;
    let backend = admin.get_database_backend();
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT 1 AS one FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await
        .map_err(StartupError::Migration)?
        .is_some();
    if !exists {
        let created = admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await;
        // Another process may have created it in the meantime; that is what we wanted.
        if let Err(error) = created
            && !error.to_string().contains("already exists")
        {
            return Err(StartupError::Migration(error));
        }
    }
    let _ = admin.close().await;
    Ok(())
}

/// The first line of a driver error, which names the cause without echoing the URL.
fn summarize(error: &DbErr) -> String {
    let text = error.to_string();
    let text = text.lines().next().unwrap_or_default();
    if text.len() > 200 {
        format!("{}…", &text[..200])
    } else {
        text.to_owned()
    }
}
