//! A `metrics` recorder that writes into OpenTelemetry instruments, so the one set of
//! `metrics::counter!`/`gauge!`/`histogram!` calls feeds both the Prometheus page and an OTLP
//! exporter (the fan-out is in [`super::install`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

pub struct OtelRecorder {
    meter: Meter,
    buckets: Vec<f64>,
    counters: Mutex<HashMap<Key, Arc<OtelCounter>>>,
    gauges: Mutex<HashMap<Key, Arc<OtelGauge>>>,
    histograms: Mutex<HashMap<Key, Arc<OtelHistogram>>>,
}

impl OtelRecorder {
    pub fn new(meter: Meter, buckets: &[f64]) -> Self {
        Self {
            meter,
            buckets: buckets.to_vec(),
            counters: Mutex::default(),
            gauges: Mutex::default(),
            histograms: Mutex::default(),
        }
    }
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .map(|label| KeyValue::new(label.key().to_owned(), label.value().to_owned()))
        .collect()
}

/// The handle registered for `key`, made once: the `metrics` macros register on every call.
fn cached<T>(cache: &Mutex<HashMap<Key, Arc<T>>>, key: &Key, make: impl FnOnce() -> T) -> Arc<T> {
    let mut cache = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.entry(key.clone()).or_insert_with(|| Arc::new(make())).clone()
}

struct OtelCounter {
    instrument: opentelemetry::metrics::Counter<u64>,
    attributes: Vec<KeyValue>,
}

impl CounterFn for OtelCounter {
    fn increment(&self, value: u64) {
        self.instrument.add(value, &self.attributes);
    }

    /// OpenTelemetry counters only add; nothing here sets a counter outright.
    fn absolute(&self, _value: u64) {}
}

struct OtelGauge {
    instrument: opentelemetry::metrics::Gauge<f64>,
    attributes: Vec<KeyValue>,
    /// OpenTelemetry gauges record values, not deltas; the current value lives here.
    value: Mutex<f64>,
}

impl OtelGauge {
    fn update(&self, change: impl FnOnce(f64) -> f64) {
        let mut value = self.value.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *value = change(*value);
        self.instrument.record(*value, &self.attributes);
    }
}

impl GaugeFn for OtelGauge {
    fn increment(&self, value: f64) {
        self.update(|current| current + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|current| current - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

struct OtelHistogram {
    instrument: opentelemetry::metrics::Histogram<f64>,
    attributes: Vec<KeyValue>,
}

impl HistogramFn for OtelHistogram {
    fn record(&self, value: f64) {
        self.instrument.record(value, &self.attributes);
    }
}

impl metrics::Recorder for OtelRecorder {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(cached(&self.counters, key, || OtelCounter {
            instrument: self.meter.u64_counter(key.name().to_owned()).build(),
            attributes: attributes(key),
        }))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cached(&self.gauges, key, || OtelGauge {
            instrument: self.meter.f64_gauge(key.name().to_owned()).build(),
            attributes: attributes(key),
            value: Mutex::new(0.0),
        }))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(cached(&self.histograms, key, || OtelHistogram {
            instrument: self
                .meter
                .f64_histogram(key.name().to_owned())
                .with_unit("s")
                .with_boundaries(self.buckets.clone())
                .build(),
            attributes: attributes(key),
        }))
    }
}
