//! The hub's side of the bus: publishes inbound events and collects what the worker answers.
//! The demo walks the flows with it and the tests assert on what it saw; it is also a small
//! reference for services that talk to the worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::publisher::{PublishError, Publisher};
use crate::contract::envelope::CONTENT_TYPE;
use crate::contract::inbound::INBOUND;

/// One message the hub received.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub event: Value,
    pub raw: Vec<u8>,
    /// Came through the caller's `reply_to` queue rather than the exchange.
    pub via_reply: bool,
    pub headers: BTreeMap<String, String>,
    /// When this client received it.
    pub received_at: std::time::Instant,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }

    pub fn is_audit(&self) -> bool {
        self.event_type() == "AuditRecorded"
    }

    /// Every outcome is final except a refresh attempt that will be retried.
    pub fn is_final_outcome(&self) -> bool {
        let retrying = self.event_type() == "TokenRefreshFailed" && self.event["data"]["retryable"] == true;
        !self.is_audit() && !retrying
    }
}

pub struct HubClient {
    _connection: Connection,
    publisher: Publisher,
    exchange: String,
    reply_queue: String,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    listeners: Vec<JoinHandle<()>>,
}

impl Drop for HubClient {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

impl HubClient {
    /// Connects and starts listening to every event on `exchange` and to a private reply queue.
    pub async fn connect(amqp_url: &SecretString, exchange: &str) -> Result<Self, lapin::Error> {
        Self::connect_to(amqp_url, exchange, &["#"]).await
    }

    /// Connects and listens only to the routing keys matching `patterns`, as a hub service that
    /// subscribes to the outcomes it needs would.
    pub async fn connect_to(amqp_url: &SecretString, exchange: &str, patterns: &[&str]) -> Result<Self, lapin::Error> {
        let connection = super::connect(amqp_url, "praisma-hub-client").await?;
        let publisher = Publisher::open(&connection).await?;
        let channel = connection.create_channel().await?;
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let watch = channel.queue_declare("".into(), private, FieldTable::default()).await?;
        for pattern in patterns {
            channel
                .queue_bind(
                    watch.name().clone(),
                    exchange.into(),
                    (*pattern).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let replies = channel.queue_declare("".into(), private, FieldTable::default()).await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let mut listeners = Vec::new();
        for (queue, via_reply) in [(watch.name().to_string(), false), (replies.name().to_string(), true)] {
            listeners.push(listen(&channel, &queue, via_reply, received.clone(), arrived.clone()).await?);
        }
        Ok(Self {
            _connection: connection,
            publisher,
            exchange: exchange.to_owned(),
            reply_queue: replies.name().to_string(),
            received,
            arrived,
            listeners,
        })
    }

    /// A CloudEvent with a fresh id.
    pub fn event(tenant: &str, event_type: &str, data: Value) -> Value {
        json!({
            "specversion": "1.0",
            "id": uuid::Uuid::now_v7().to_string(),
            "source": "/hub/web",
            "type": event_type,
            "time": chrono::Utc::now().to_rfc3339(),
            "tenantid": tenant,
            "data": data,
        })
    }

    /// Publishes an event on its type's routing key; `reply` asks for the final outcome on
    /// this client's reply queue too.
    pub async fn publish(&self, event: &Value, reply: bool) -> Result<(), PublishError> {
        self.send(event, reply).await?.confirmed().await
    }

    /// Publishes without waiting for the broker's confirm: the caller awaits it later, so many
    /// publishes can be in flight (the load generator).
    pub async fn send(&self, event: &Value, reply: bool) -> Result<super::publisher::Pending, PublishError> {
        let event_type = event["type"].as_str().unwrap_or_default();
        let routing_key = INBOUND
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, key)| *key)
            .unwrap_or("integration.unknown");
        let body = serde_json::to_vec(event).unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2);
        if reply {
            properties = properties.with_reply_to(self.reply_queue.as_str().into());
        }
        self.publisher
            .send(&self.exchange, routing_key, &body, properties)
            .await
    }

    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        reply: bool,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2);
        if reply {
            properties = properties.with_reply_to(self.reply_queue.as_str().into());
        }
        if let Some(traceparent) = traceparent {
            let mut headers = FieldTable::default();
            headers.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
            properties = properties.with_headers(headers);
        }
        self.publisher
            .publish(&self.exchange, routing_key, body, properties)
            .await
    }

    /// Waits until a received message matches, up to `timeout`.
    pub async fn wait_for(&self, timeout: Duration, matches: impl Fn(&Received) -> bool) -> Option<Received> {
        let mut found = None;
        self.wait_until(timeout, |all| {
            found = all.iter().find(|r| matches(r)).cloned();
            found.is_some()
        })
        .await;
        found
    }

    /// Waits until everything received so far satisfies `done`, up to `timeout`.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Received]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.received()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The worker's final answer to an event, from the exchange.
    pub async fn outcome(&self, correlation_id: &str, timeout: Duration) -> Option<Received> {
        self.wait_for(timeout, |r| {
            !r.via_reply && r.is_final_outcome() && r.event["correlationid"].as_str() == Some(correlation_id)
        })
        .await
    }

    /// The same answer, from the reply queue.
    pub async fn reply(&self, correlation_id: &str, timeout: Duration) -> Option<Received> {
        self.wait_for(timeout, |r| {
            r.via_reply && r.event["correlationid"].as_str() == Some(correlation_id)
        })
        .await
    }

    /// Looks at everything received so far without copying it.
    pub fn inspect<R>(&self, look: impl FnOnce(&[Received]) -> R) -> R {
        match self.received.lock() {
            Ok(all) => look(&all),
            Err(poisoned) => look(&poisoned.into_inner()),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Deletes a queue the caller declared for itself.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), lapin::Error> {
        let options = lapin::options::QueueDeleteOptions::default();
        self.publisher
            .channel()
            .queue_delete(queue.into(), options)
            .await
            .map(|_| ())
    }

    /// Takes every message now in `queue` (the dead-letter queue, typically).
    pub async fn drain_queue(&self, queue: &str) -> Result<Vec<Received>, lapin::Error> {
        let channel = self.publisher.channel();
        let mut taken = Vec::new();
        while let Some(message) = channel.basic_get(queue.into(), BasicGetOptions::default()).await? {
            let delivery = message.delivery;
            taken.push(to_received(
                &delivery.routing_key.to_string(),
                &delivery.data,
                delivery.properties.headers().as_ref(),
                false,
            ));
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Ok(taken)
    }
}

async fn listen(
    channel: &Channel,
    queue: &str,
    via_reply: bool,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
) -> Result<JoinHandle<()>, lapin::Error> {
    let options = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let message = to_received(
                delivery.routing_key.as_str(),
                &delivery.data,
                delivery.properties.headers().as_ref(),
                via_reply,
            );
            if let Ok(mut all) = received.lock() {
                all.push(message);
            }
            arrived.notify_waiters();
        }
    }))
}

fn to_received(routing_key: &str, data: &[u8], headers: Option<&FieldTable>, via_reply: bool) -> Received {
    let headers = headers
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(name, value)| match value {
                    AMQPValue::LongString(text) => {
                        Some((name.to_string(), String::from_utf8_lossy(text.as_bytes()).into_owned()))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Received {
        routing_key: routing_key.to_owned(),
        event: serde_json::from_slice(data).unwrap_or(Value::Null),
        raw: data.to_vec(),
        via_reply,
        headers,
        received_at: std::time::Instant::now(),
    }
}
