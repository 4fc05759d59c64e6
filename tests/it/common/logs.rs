//! Captures every log line and span the in-process workers produce, so tests can search the
//! logs for secrets and follow traces.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use praisma_worker::settings::LogFormat;

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static SPANS: OnceLock<InMemorySpanExporter> = OnceLock::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn install() {
    SPANS.get_or_init(|| {
        // Everything the worker says, at the most verbose level, unless RUST_LOG says otherwise.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
            "trace,lapin=info,amq_protocol=info,sqlx=info,h2=info,hyper=info,hyper_util=info,reqwest=info".to_owned()
        });
        let spans = InMemorySpanExporter::default();
        praisma_worker::telemetry::init_with(LogFormat::Json, || Capture, &filter, Some(spans.clone()));
        spans
    });
}

pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Every span the in-process workers finished so far.
pub fn spans() -> Vec<SpanData> {
    SPANS
        .get()
        .and_then(|exporter| exporter.get_finished_spans().ok())
        .unwrap_or_default()
}
