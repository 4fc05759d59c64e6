//! What the people on call see: health, readiness and metrics.

use sea_orm::{ConnectionTrait, Database};

use crate::common::{ADMIN_DATABASE_URL, WAIT, World};

#[tokio::test]
async fn metrics_move_with_a_flow_and_describe_the_database() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let text = reqwest::get(format!("{}/metrics", world.http_base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| text.lines().any(|line| line.starts_with(needle));
    assert!(
        has("praisma_events_consumed_total{type=\"ConnectRequested\",disposition=\"done\"}"),
        "{text}"
    );
    assert!(has(
        "praisma_event_handling_seconds_count{type=\"ConsentUrlRequested\"}"
    ));
    assert!(has(
        "praisma_platform_call_seconds_count{provider=\"oidc_test\",call=\"token_exchange\",outcome=\"ok\"}"
    ));
    assert!(
        text.contains("praisma_channels{status=\"active\"} 1\n"),
        "gauges are read from this worker's database"
    );
    assert!(text.contains("praisma_jobs_due{kind=\"refresh\"} 0\n"));
    assert!(has("praisma_outbox_backlog "));
    assert!(has("praisma_tokens_expiring_within_hour "));
    world.teardown().await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let world = World::spawn().await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/healthz", world.http_base()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = http.get(format!("{}/readyz", world.http_base())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let checks: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        checks,
        serde_json::json!({ "database": true, "migrations": true, "broker": true, "consumer": true })
    );

    // The database goes away: connections refused, open ones cut.
    let admin = Database::connect(ADMIN_DATABASE_URL).await.unwrap();
    let name = world.db_name().to_owned();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let response = http.get(format!("{}/readyz", world.http_base())).send().await.unwrap();
        if response.status() == 503 {
            last = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
    }
    let checks = last.expect("/readyz turned unready");
    assert_eq!(checks["database"], false);
    assert_eq!(
        http.get(format!("{}/healthz", world.http_base()))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive all the same"
    );
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    world.teardown().await;
}

#[tokio::test]
async fn a_consumer_span_continues_the_callers_trace_and_the_outcome_carries_it() {
    use opentelemetry::trace::SpanKind;
    let world = World::spawn().await;
    let trace_id = "5a0f2c6e9b1d4e7f8a3b2c1d0e9f8a7b";
    let caller_span = "1a2b3c4d5e6f7a8b";
    let mut event = world.consent_request("page-1", &["profile.read"]);
    event["traceparent"] = serde_json::json!(format!("00-{trace_id}-{caller_span}-01"));
    let outcome = world.request(&event).await;
    let carried = outcome.event["traceparent"].as_str().unwrap().to_owned();
    assert!(carried.starts_with(&format!("00-{trace_id}-")), "{carried}");
    assert_eq!(
        outcome.headers.get("traceparent"),
        Some(&carried),
        "mirrored in the AMQP header"
    );
    let worker_span = carried.split('-').nth(2).unwrap().to_owned();

    let deadline = tokio::time::Instant::now() + WAIT;
    let consumer = loop {
        let spans = crate::common::logs::spans();
        if let Some(span) = spans
            .into_iter()
            .find(|s| s.span_context.span_id().to_string() == worker_span)
        {
            break span;
        }
        assert!(tokio::time::Instant::now() < deadline, "the consumer span was exported");
        // Spans are exported when they end, after the ack; poll the exporter for it.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(consumer.span_kind, SpanKind::Consumer);
    assert_eq!(consumer.span_context.trace_id().to_string(), trace_id);
    assert_eq!(
        consumer.parent_span_id.to_string(),
        caller_span,
        "the caller's span is the parent"
    );
    assert!(consumer.parent_span_is_remote);
    let attribute = |key: &str| {
        consumer
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("messaging.system").as_deref(), Some("rabbitmq"));
    assert_eq!(attribute("messaging.operation.type").as_deref(), Some("process"));
    assert_eq!(
        attribute("messaging.destination.name"),
        Some(world.settings.bus.queue.clone())
    );
    let children: Vec<String> = crate::common::logs::spans()
        .into_iter()
        .filter(|s| s.parent_span_id == consumer.span_context.span_id())
        .map(|s| s.name.to_string())
        .collect();
    assert!(
        children.iter().any(|name| name.starts_with("db.transaction")),
        "{children:?}"
    );
    world.teardown().await;
}

/// One OTLP/HTTP export: signal (`traces`, `metrics`), content type, body.
type Export = (String, String, Vec<u8>);

/// What a stand-in OTLP/HTTP collector received.
#[derive(Clone, Default)]
struct Collector {
    received: std::sync::Arc<std::sync::Mutex<Vec<Export>>>,
}

impl Collector {
    async fn start(&self) -> String {
        let record = self.received.clone();
        let collector = axum::Router::new().route(
            "/v1/{signal}",
            axum::routing::post(
                move |axum::extract::Path(signal): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let record = record.clone();
                    async move {
                        let content_type = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        record.lock().unwrap().push((signal, content_type, body.to_vec()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, collector).await });
        endpoint
    }

    fn exports(&self, signal: &str) -> Vec<(String, Vec<u8>)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == signal)
            .map(|(_, content_type, body)| (content_type.clone(), body.clone()))
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_worker_process_exports_spans_and_metrics_over_otlp_when_an_endpoint_is_set() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut world = World::spawn().await;
    world.join_first_worker().await;
    world
        .start_worker_process_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000".to_owned()),
        ])
        .await;
    let answer = world.request(&world.consent_request("page-1", &["profile.read"])).await;
    assert_eq!(answer.event_type(), "ConsentUrlIssued");
    world.stop_worker_processes().await; // SIGTERM flushes spans and metrics

    let spans = collector.exports("traces");
    assert!(!spans.is_empty(), "the collector received spans");
    assert!(
        spans
            .iter()
            .all(|(content_type, _)| content_type.starts_with("application/x-protobuf")),
        "{:?}",
        spans.iter().map(|(c, b)| (c, b.len())).collect::<Vec<_>>()
    );
    // Protobuf carries names as plain bytes: the counters moved by the flow and the database
    // gauges sampled for the exporter are both there.
    let metrics = collector.exports("metrics");
    assert!(!metrics.is_empty(), "the collector received metrics");
    let found = |name: &str| metrics.iter().any(|(_, body)| contains(body, name));
    for name in [
        "praisma_events_consumed_total",
        "praisma_event_handling_seconds",
        "ConsentUrlRequested",
        "praisma_outbox_backlog",
        "praisma-integration-worker",
    ] {
        assert!(found(name), "{name} is not in the exported metrics");
    }
    world.teardown().await;
}
