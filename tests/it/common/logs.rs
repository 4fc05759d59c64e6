//! Captures every log line the in-process workers write, so tests can search them for secrets.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use praisma_worker::settings::LogFormat;

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

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
    INSTALLED.get_or_init(|| {
        // SAFETY-free: set before any subscriber reads it, once per test binary.
        if std::env::var_os("RUST_LOG").is_none() {
            // Everything the worker says, at the most verbose level.
            praisma_worker::telemetry::init_with_filter(
                LogFormat::Json,
                || Capture,
                "trace,lapin=info,amq_protocol=info,sqlx=info,h2=info,hyper=info,hyper_util=info,reqwest=info",
            );
        } else {
            praisma_worker::telemetry::init(LogFormat::Json, || Capture);
        }
    });
}

pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
