//! Metrics for dashboards, in Prometheus text on `/metrics`. Counters and histograms are
//! recorded where things happen; gauges that describe the database (channels by status, tokens
//! about to expire, outbox backlog, jobs due) are read when Prometheus scrapes.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

pub const EVENTS_CONSUMED: &str = "praisma_events_consumed_total";
pub const EVENT_HANDLING_SECONDS: &str = "praisma_event_handling_seconds";
pub const DEAD_LETTERED: &str = "praisma_dead_lettered_total";
pub const PLATFORM_CALL_SECONDS: &str = "praisma_platform_call_seconds";
pub const REFRESHES: &str = "praisma_refreshes_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; every worker in the process shares it.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&seconds)
                .ok()
                .and_then(|builder| builder.install_recorder().ok())
        })
        .as_ref()
}

/// The inbound event type a routing key carries, as a bounded label.
pub fn event_label(routing_key: &str) -> &'static str {
    crate::contract::inbound::INBOUND
        .iter()
        .find(|(_, key)| *key == routing_key)
        .map(|(name, _)| *name)
        .unwrap_or("unknown")
}

pub fn event_settled(routing_key: &str, disposition: &'static str, started: Instant) {
    let event_type = event_label(routing_key);
    metrics::counter!(EVENTS_CONSUMED, "type" => event_type, "disposition" => disposition).increment(1);
    metrics::histogram!(EVENT_HANDLING_SECONDS, "type" => event_type).record(started.elapsed().as_secs_f64());
}

pub fn dead_lettered(error_code: &'static str) {
    metrics::counter!(DEAD_LETTERED, "error_code" => error_code).increment(1);
}

/// One call to a platform: which provider, which kind of call, and how it ended (an HTTP
/// status class or an error code; never a URL, a query or a body).
pub fn platform_call(provider: &str, call: &'static str, outcome: &str, started: Instant) {
    metrics::histogram!(
        PLATFORM_CALL_SECONDS,
        "provider" => provider.to_owned(),
        "call" => call,
        "outcome" => outcome.to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
}

pub fn refresh_settled(result: &'static str) {
    metrics::counter!(REFRESHES, "result" => result).increment(1);
}

/// The scrape: recorded metrics, then the gauges read from the database now.
pub async fn render(db: &DatabaseConnection) -> String {
    let mut text = install().map(PrometheusHandle::render).unwrap_or_default();
    match database_gauges(db).await {
        Ok(gauges) => text.push_str(&gauges),
        Err(error) => tracing::warn!(%error, "reading gauges from the database failed"),
    }
    text
}

async fn database_gauges(db: &DatabaseConnection) -> Result<String, DbErr> {
    let rows = |sql: &str| db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()));
    let mut out = String::new();
    out.push_str("# HELP praisma_channels Channels by status.\n# TYPE praisma_channels gauge\n");
    for row in rows("SELECT status, count(*) AS n FROM channels GROUP BY status ORDER BY status").await? {
        let (status, n): (String, i64) = (row.try_get("", "status")?, row.try_get("", "n")?);
        out.push_str(&format!("praisma_channels{{status=\"{status}\"}} {n}\n"));
    }
    let single =
        |name: &str, help: &str, value: f64| format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
    let scalar = |row: Option<&sea_orm::QueryResult>, column: &str| -> Result<f64, DbErr> {
        Ok(row
            .map(|r| r.try_get::<Option<f64>>("", column))
            .transpose()?
            .flatten()
            .unwrap_or(0.0))
    };
    let expiring = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::float8 AS n FROM channels WHERE status = 'active' AND expires_at < now() + interval '1 hour'",
        ))
        .await?;
    out.push_str(&single(
        "praisma_tokens_expiring_within_hour",
        "Active channels whose token expires within the hour.",
        scalar(expiring.as_ref(), "n")?,
    ));
    let outbox = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::float8 AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age
             FROM outbox WHERE published_at IS NULL",
        ))
        .await?;
    out.push_str(&single(
        "praisma_outbox_backlog",
        "Committed events not yet published.",
        scalar(outbox.as_ref(), "n")?,
    ));
    out.push_str(&single(
        "praisma_outbox_oldest_age_seconds",
        "Age of the oldest unpublished event.",
        scalar(outbox.as_ref(), "age")?,
    ));
    out.push_str("# HELP praisma_jobs_due Pending jobs whose time has come.\n# TYPE praisma_jobs_due gauge\n");
    out.push_str(
        "# HELP praisma_jobs_overdue Pending jobs due more than a minute ago.\n# TYPE praisma_jobs_overdue gauge\n",
    );
    let jobs = rows(
        "SELECT kind, count(*) FILTER (WHERE run_at <= now()) AS due,
                count(*) FILTER (WHERE run_at < now() - interval '1 minute') AS overdue
         FROM jobs WHERE status = 'pending' GROUP BY kind ORDER BY kind",
    )
    .await?;
    for row in jobs {
        let (kind, due, overdue): (String, i64, i64) = (
            row.try_get("", "kind")?,
            row.try_get("", "due")?,
            row.try_get("", "overdue")?,
        );
        out.push_str(&format!(
            "praisma_jobs_due{{kind=\"{kind}\"}} {due}\npraisma_jobs_overdue{{kind=\"{kind}\"}} {overdue}\n"
        ));
    }
    Ok(out)
}
