//! Logs and traces. Logs are structured JSON by default (human-readable on request) and carry
//! identifiers, never bodies or secrets. Traces are OpenTelemetry spans, exported over OTLP
//! (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, the standard `OTEL_*` variables configuring the exporter; with neither, spans still get
//! ids, so outcomes carry a trace context that continues the caller's.

use std::sync::OnceLock;

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _};
use opentelemetry::{SpanId, TraceId};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::contract::TraceParent;
use crate::settings::LogFormat;

pub const DEFAULT_FILTER: &str = "info,lapin=warn,amq_protocol=warn,sqlx=warn,sea_orm=warn,sea_orm_migration=warn";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, filtered by `RUST_LOG` or [`DEFAULT_FILTER`]; a second call
/// keeps the first.
pub fn init<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    init_with(format, writer, &filter, None::<opentelemetry_otlp::SpanExporter>);
}

/// As [`init`], with an explicit filter and, for tests, a span exporter of their own.
pub fn init_with<W, E>(format: LogFormat, writer: W, filter: &str, exporter: Option<E>)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    E: SpanExporter + 'static,
{
    let mut builder = SdkTracerProvider::builder().with_resource(resource());
    if let Some(exporter) = exporter {
        builder = builder.with_simple_exporter(exporter);
    } else if ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(otlp) => builder = builder.with_batch_exporter(otlp),
            Err(error) => {
                eprintln!("praisma-worker: the OTLP trace exporter could not be built ({error}); traces stay local")
            }
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("praisma-worker");
    let _ = PROVIDER.set(provider);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Pretty => logs.compact().boxed(),
    };
    let traces = tracing_opentelemetry::layer().with_tracer(tracer);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
}

/// Who is reporting, for traces and metrics alike.
pub fn resource() -> Resource {
    Resource::builder()
        .with_service_name("praisma-integration-worker")
        .build()
}

/// Flushes spans not yet exported.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// Makes `span` a child of the caller's span named by `traceparent`.
pub fn continue_trace(span: &tracing::Span, traceparent: &TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(traceparent.trace_id),
        SpanId::from_bytes(traceparent.span_id),
        TraceFlags::new(traceparent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The current span as a `traceparent`, when tracing is on.
pub fn current_traceparent() -> Option<TraceParent> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// Writes the span's trace and span ids into its `trace_id` and `span_id` fields, so that every
/// log line inside it names them.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}
