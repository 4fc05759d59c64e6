//! The consumer: one `select!` loop that takes deliveries until shutdown, each handled in a
//! tracked task, and that connects again when the connection is lost ([`super::link`]). A
//! delivery is acknowledged only after its handler has committed; a rejected message is
//! acknowledged only after the dead-letter exchange confirmed its copy, on the same connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::link::{Link, Session};
use super::publisher::{Publisher, header_text};
use crate::contract::{Envelope, RejectedEvent, TraceParent};
use crate::handlers::{self, Context, Delivery, Disposition, HandlerError};

/// Test-only fault injection: simulate a crash after commit and before ack.
#[derive(Debug, Default)]
pub struct Faults {
    pub crash_before_ack: AtomicUsize,
}

pub struct Consumer {
    pub link: Arc<Link>,
    pub ctx: Context,
    pub faults: Arc<Faults>,
    /// Cancelled to simulate a crash: the worker drops its connection without acking.
    pub crash: CancellationToken,
    /// Up while deliveries are being taken, for `/readyz`.
    pub consuming: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a session's consuming ended.
enum Ended {
    Stopped,
    Lost,
}

/// A session that ends sooner than this after it began is not given a fresh one at once: a
/// broker that accepts connections but refuses the consumer would otherwise be hammered.
const SHORT_SESSION: Duration = Duration::from_secs(10);

impl Consumer {
    /// Consumes until `stop` is cancelled, connecting again whenever the connection is lost.
    pub async fn run(self, stop: CancellationToken, tracker: TaskTracker) {
        let mut current = self.link.session();
        let mut pauses = pauses();
        loop {
            let session = match current.take() {
                Some(session) => session,
                None => match self.link.reconnect(&stop).await {
                    Some(session) => session,
                    None => break,
                },
            };
            let began = Instant::now();
            match self.consume(&session, &stop, &tracker).await {
                Ok(Ended::Stopped) => break,
                Ok(Ended::Lost) => tracing::warn!("the broker connection was lost; connecting again"),
                Err(error) => tracing::warn!(%error, "consuming failed; connecting again"),
            }
            if began.elapsed() < SHORT_SESSION {
                let pause = pauses.next().unwrap_or(SHORT_SESSION);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => break,
                }
            } else {
                pauses = self::pauses();
            }
        }
    }

    /// Takes deliveries on one session until `stop` or until the session is lost.
    async fn consume(
        &self,
        session: &Session,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Ended, lapin::Error> {
        let bus = &self.ctx.settings.bus;
        let channel = &session.consume_channel;
        channel.basic_qos(bus.prefetch, BasicQosOptions::default()).await?;
        let tag = format!("praisma-worker-{}", uuid::Uuid::now_v7());
        let mut deliveries = channel
            .basic_consume(
                bus.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %bus.queue, prefetch = bus.prefetch, "consuming");
        self.consuming.store(true, Ordering::SeqCst);
        // A publishing channel can close while deliveries still flow; looking at the session
        // now and then finds that too, and a new session replaces both.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let ended = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break Ended::Stopped,
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let task = DeliveryTask {
                            ctx: self.ctx.clone(),
                            publisher: session.publisher.clone(),
                            faults: self.faults.clone(),
                            crash: self.crash.clone(),
                        };
                        tracker.spawn(task.run(delivery));
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the consumer was interrupted");
                        break Ended::Lost;
                    }
                    None => break Ended::Lost,
                },
                _ = check.tick() => if !session.usable() {
                    break Ended::Lost;
                },
            }
        };
        self.consuming.store(false, Ordering::SeqCst);
        if matches!(ended, Ended::Stopped) {
            // Stop new deliveries; in-flight ones finish in the tracker and are acked as usual.
            if let Err(error) = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
            {
                tracing::warn!(%error, "cancelling the consumer failed");
            }
        }
        Ok(ended)
    }
}

fn pauses() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(SHORT_SESSION)
        .without_max_times()
        .with_jitter()
        .build()
}

struct DeliveryTask {
    ctx: Context,
    publisher: Publisher,
    faults: Arc<Faults>,
    crash: CancellationToken,
}

impl DeliveryTask {
    /// Handles one delivery inside its consumer span, from handler to ack. The envelope is
    /// parsed once, here, so the span can take its parent from the event.
    async fn run(self, delivery: AmqpDelivery) {
        let header = header_text(delivery.properties.headers().as_ref(), "traceparent");
        let parsed = Envelope::parse(&delivery.data, self.ctx.settings.bus.max_event_bytes, header);
        let parent = match &parsed {
            Ok(envelope) => envelope.traceparent,
            Err(rejected) => rejected.traceparent,
        }
        .or_else(|| header.and_then(TraceParent::parse));
        let span = self.consumer_span(&delivery, parent.as_ref());
        self.settle(delivery, parsed).instrument(span).await;
    }

    /// One consumer span per message (OpenTelemetry messaging conventions), continuing the
    /// caller's trace; the handler's outcomes carry this span's context.
    fn consumer_span(&self, delivery: &AmqpDelivery, parent: Option<&TraceParent>) -> tracing::Span {
        let bus = &self.ctx.settings.bus;
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", bus.queue),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %bus.queue,
            messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
            messaging.message.id = delivery.properties.message_id().as_ref().map(|id| id.as_str()).unwrap_or_default(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let Some(parent) = parent {
            crate::telemetry::continue_trace(&span, parent);
        }
        crate::telemetry::record_ids(&span);
        span
    }

    async fn settle(self, delivery: AmqpDelivery, parsed: Result<Envelope, Box<RejectedEvent>>) {
        let started = Instant::now();
        let view = Delivery {
            body: &delivery.data,
            routing_key: delivery.routing_key.as_str(),
            reply_to: delivery.properties.reply_to().as_ref().map(|r| r.as_str()),
        };
        // Database outages are retried here, holding the delivery, before giving it back.
        let result = (|| handlers::process(&self.ctx, view, &parsed))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .when(|error| matches!(error, HandlerError::Database(_)))
            .await;

        if matches!(result, Ok(Disposition::Done)) && take_fault(&self.faults.crash_before_ack) {
            tracing::warn!("fault injection: crashing after commit, before ack");
            self.crash.cancel();
            return;
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let outcome = match result {
            Ok(Disposition::Done) => delivery.ack(BasicAckOptions::default()).await.map(|_| "done"),
            Ok(Disposition::DeadLetter { code, reason }) => {
                crate::metrics::dead_lettered(code.as_str());
                match self.dead_letter(&delivery, code.as_str(), &reason).await {
                    Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(|_| "dead_lettered"),
                    Err(error) => {
                        tracing::warn!(%error, "dead-lettering failed; the message goes back to the queue");
                        requeue(&delivery).await
                    }
                }
            }
            Err(HandlerError::Busy) => {
                // Another replica holds this event's lease; let it finish before looking again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                requeue(&delivery).await
            }
            Err(error) => {
                tracing::error!(%error, "handling failed after retries; the message goes back to the queue");
                requeue(&delivery).await
            }
        };
        if let Ok(disposition) = &outcome {
            crate::metrics::event_settled(delivery.routing_key.as_str(), disposition, started);
        }
        match outcome {
            Ok(disposition) => {
                tracing::info!(routing_key = %delivery.routing_key, disposition, elapsed_ms, "delivery settled")
            }
            Err(error) => tracing::warn!(%error, "settling the delivery failed; the broker will redeliver it"),
        }
    }

    /// Copies the message to the dead-letter exchange with why it was rejected.
    async fn dead_letter(
        &self,
        delivery: &AmqpDelivery,
        code: &str,
        reason: &str,
    ) -> Result<(), super::publisher::PublishError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |value: &str| AMQPValue::LongString(LongString::from(value));
        headers.insert("x-error-code".into(), text(code));
        headers.insert("x-error-reason".into(), text(reason));
        headers.insert("x-original-exchange".into(), text(delivery.exchange.as_str()));
        headers.insert("x-original-routing-key".into(), text(delivery.routing_key.as_str()));
        let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
        let bus = &self.ctx.settings.bus;
        self.publisher
            .publish(
                &bus.dead_letter_exchange,
                delivery.routing_key.as_str(),
                &delivery.data,
                properties,
            )
            .await
    }
}

async fn requeue(delivery: &AmqpDelivery) -> Result<&'static str, lapin::Error> {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    delivery.nack(options).await.map(|_| "requeued")
}

fn take_fault(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
