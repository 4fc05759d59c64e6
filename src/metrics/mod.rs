//! Metrics for dashboards. Counters, gauges and histograms are recorded once, through the
//! `metrics` facade, where things happen; a fan-out recorder hands each to the Prometheus page
//! (`/metrics`) and, when an OTLP endpoint is set, to an OpenTelemetry meter exported over OTLP.
//! Gauges that describe the database (channels by status, tokens about to expire, outbox
//! backlog, jobs due) are sampled at each scrape and, for OTLP, on the export interval.

mod otlp;

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

pub const EVENTS_CONSUMED: &str = "praisma_events_consumed_total";
pub const EVENT_HANDLING_SECONDS: &str = "praisma_event_handling_seconds";
pub const DEAD_LETTERED: &str = "praisma_dead_lettered_total";
pub const PLATFORM_CALL_SECONDS: &str = "praisma_platform_call_seconds";
pub const REFRESHES: &str = "praisma_refreshes_total";
pub const PRUNED: &str = "praisma_records_pruned_total";

/// Every histogram here measures seconds.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Installed {
    prometheus: PrometheusHandle,
    otlp: Option<SdkMeterProvider>,
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Whether the standard `OTEL_*` variables ask for metrics over OTLP.
fn otlp_requested() -> bool {
    let wanted = std::env::var("OTEL_METRICS_EXPORTER").map_or(true, |v| v.split(',').any(|e| e.trim() == "otlp"));
    wanted
        && ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
}

fn otlp_meter_provider() -> Option<SdkMeterProvider> {
    if !otlp_requested() {
        return None;
    }
    match opentelemetry_otlp::MetricExporter::builder().with_http().build() {
        Ok(exporter) => Some(
            SdkMeterProvider::builder()
                .with_resource(crate::telemetry::resource())
                .with_periodic_exporter(exporter)
                .build(),
        ),
        Err(error) => {
            tracing::warn!(%error, "the OTLP metric exporter could not be built; metrics stay on /metrics");
            None
        }
    }
}

/// Installs the process-wide recorder once; every worker in the process shares it.
pub fn install() -> Option<&'static PrometheusHandle> {
    INSTALLED
        .get_or_init(|| {
            let prometheus = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = prometheus.handle();
            let otlp = otlp_meter_provider();
            let mut fanout = FanoutBuilder::default().add_recorder(prometheus);
            if let Some(provider) = &otlp {
                let meter = provider.meter("praisma-worker");
                fanout = fanout.add_recorder(otlp::OtelRecorder::new(meter, &SECONDS_BUCKETS));
            }
            metrics::set_global_recorder(fanout.build()).ok()?;
            describe();
            Some(Installed {
                prometheus: handle,
                otlp,
            })
        })
        .as_ref()
        .map(|installed| &installed.prometheus)
}

/// How often the database gauges are sampled for OTLP; `None` when metrics stay on `/metrics`,
/// where every scrape samples them.
pub fn otlp_sampling_interval() -> Option<Duration> {
    INSTALLED.get()?.as_ref()?.otlp.as_ref()?;
    let millis = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    Some(Duration::from_millis(millis))
}

/// Exports what the OTLP meter holds; part of a clean stop.
pub fn shutdown() {
    if let Some(Some(Installed {
        otlp: Some(provider), ..
    })) = INSTALLED.get()
    {
        let _ = provider.shutdown();
    }
}

fn describe() {
    metrics::describe_counter!(EVENTS_CONSUMED, "Inbound events settled, by type and disposition.");
    metrics::describe_histogram!(
        EVENT_HANDLING_SECONDS,
        metrics::Unit::Seconds,
        "Time from delivery to settlement."
    );
    metrics::describe_counter!(DEAD_LETTERED, "Messages dead-lettered, by error code.");
    metrics::describe_histogram!(
        PLATFORM_CALL_SECONDS,
        metrics::Unit::Seconds,
        "Platform calls, by provider, call and outcome."
    );
    metrics::describe_counter!(REFRESHES, "Token refreshes, by result.");
    metrics::describe_counter!(PRUNED, "Rows removed by retention, by table.");
    metrics::describe_gauge!("praisma_channels", "Channels by status.");
    metrics::describe_gauge!(
        "praisma_tokens_expiring_within_hour",
        "Active channels whose token expires within the hour."
    );
    metrics::describe_gauge!("praisma_outbox_backlog", "Committed events not yet published.");
    metrics::describe_gauge!(
        "praisma_outbox_oldest_age_seconds",
        "Age of the oldest unpublished event."
    );
    metrics::describe_gauge!("praisma_jobs_due", "Pending jobs whose time has come.");
    metrics::describe_gauge!("praisma_jobs_overdue", "Pending jobs due more than a minute ago.");
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

pub fn pruned(table: &'static str, rows: u64) {
    metrics::counter!(PRUNED, "table" => table).increment(rows);
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

/// The scrape: the database gauges sampled now, then everything recorded.
pub async fn render(db: &DatabaseConnection) -> String {
    if let Err(error) = sample_database(db).await {
        tracing::warn!(%error, "reading gauges from the database failed");
    }
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Samples the database gauges every `interval` until `stop`, for the OTLP exporter.
pub async fn sample_until(db: DatabaseConnection, interval: Duration, stop: tokio_util::sync::CancellationToken) {
    crate::shutdown::every(interval, stop, || async {
        if let Err(error) = sample_database(&db).await {
            tracing::warn!(%error, "reading gauges from the database failed");
        }
    })
    .await;
}

/// Label sets set on the previous sample: one that disappears (no channel has that status any
/// more) is set to zero rather than left at its last value.
static SAMPLED: Mutex<BTreeSet<(&'static str, &'static str, String)>> = Mutex::new(BTreeSet::new());

/// Reads what the database says now and sets the gauges.
pub async fn sample_database(db: &DatabaseConnection) -> Result<(), DbErr> {
    let rows = |sql: &str| db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()));
    // (gauge, label name, label value, value)
    let mut samples: Vec<(&'static str, &'static str, String, f64)> = Vec::new();
    for row in rows("SELECT status, count(*)::float8 AS n FROM channels GROUP BY status").await? {
        samples.push((
            "praisma_channels",
            "status",
            row.try_get("", "status")?,
            row.try_get("", "n")?,
        ));
    }
    let scalar = |row: Option<&sea_orm::QueryResult>, column: &str| -> Result<f64, DbErr> {
        Ok(row
            .map(|r| r.try_get::<Option<f64>>("", column))
            .transpose()?
            .flatten()
            .unwrap_or(0.0))
    };
    let one = |sql: &str| db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()));
    let expiring = one(
        "SELECT count(*)::float8 AS n FROM channels WHERE status = 'active' AND expires_at < now() + interval '1 hour'",
    )
    .await?;
    let outbox = one(
        "SELECT count(*)::float8 AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(o.created_at)), 0)::float8 AS age
         FROM outbox_pending p JOIN outbox o ON o.id = p.outbox_id",
    )
    .await?;
    let jobs = rows(
        "SELECT kind, (count(*) FILTER (WHERE run_at <= now()))::float8 AS due,
                (count(*) FILTER (WHERE run_at < now() - interval '1 minute'))::float8 AS overdue
         FROM jobs WHERE status = 'pending' GROUP BY kind",
    )
    .await?;
    for row in jobs {
        let kind: String = row.try_get("", "kind")?;
        samples.push(("praisma_jobs_due", "kind", kind.clone(), row.try_get("", "due")?));
        samples.push(("praisma_jobs_overdue", "kind", kind, row.try_get("", "overdue")?));
    }
    metrics::gauge!("praisma_tokens_expiring_within_hour").set(scalar(expiring.as_ref(), "n")?);
    metrics::gauge!("praisma_outbox_backlog").set(scalar(outbox.as_ref(), "n")?);
    metrics::gauge!("praisma_outbox_oldest_age_seconds").set(scalar(outbox.as_ref(), "age")?);

    let mut previous = SAMPLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current: BTreeSet<_> = samples.iter().map(|(g, l, v, _)| (*g, *l, v.clone())).collect();
    for (gauge, label, value) in previous.difference(&current) {
        metrics::gauge!(*gauge, *label => value.clone()).set(0.0);
    }
    for (gauge, label, value, n) in samples {
        metrics::gauge!(gauge, label => value).set(n);
    }
    *previous = current;
    Ok(())
}
