//! Logging: structured JSON by default, human-readable on request. Lines carry identifiers
//! (tenant, channel, event id, routing key), never bodies or secrets.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::settings::LogFormat;

pub const DEFAULT_FILTER: &str = "info,lapin=warn,amq_protocol=warn,sqlx=warn,sea_orm=warn,sea_orm_migration=warn";

/// Installs the global subscriber, filtered by `RUST_LOG` or [`DEFAULT_FILTER`]; a second call
/// keeps the first.
pub fn init<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    init_with_filter(format, writer, &filter);
}

pub fn init_with_filter<W>(format: LogFormat, writer: W, filter: &str)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
