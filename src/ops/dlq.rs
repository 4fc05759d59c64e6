//! `dlq list` and `dlq replay`: the dead-letter queue as an operator sees it. Listing shows each
//! message's error code and reason and who sent what (event id, type, tenant), never its `data`,
//! which could hold a code. Replaying re-publishes chosen messages where they first went.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use secrecy::SecretString;

use crate::bus::publisher::{PublishError, Publisher, header_text};
use crate::settings::BusSettings;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub tenant: Option<String>,
    pub routing_key: String,
    pub error_code: Option<String>,
    pub reason: Option<String>,
    pub bytes: usize,
}

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    EventIds(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("the broker failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("publishing failed: {0}")]
    Publish(#[from] PublishError),
}

struct Held {
    delivery: lapin::message::Delivery,
    summary: DeadLetter,
}

/// Takes every message now in the queue, unacknowledged, so that none is seen twice.
async fn hold_all(channel: &Channel, bus: &BusSettings) -> Result<Vec<Held>, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(bus.dead_letter_queue.as_str().into(), passive, FieldTable::default())
        .await?;
    let mut held = Vec::new();
    for _ in 0..queue.message_count() {
        let Some(message) = channel
            .basic_get(bus.dead_letter_queue.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let summary = summarize(&delivery);
        held.push(Held { delivery, summary });
    }
    Ok(held)
}

/// Returns a held message to the queue untouched.
async fn put_back(message: &Held) -> Result<(), lapin::Error> {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    message.delivery.nack(options).await.map(|_| ())
}

fn summarize(delivery: &lapin::message::Delivery) -> DeadLetter {
    let headers = delivery.properties.headers().as_ref();
    let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
    let attribute = |name: &str| {
        event
            .get(name)
            .and_then(|v| v.as_str())
            .map(|v| v.chars().take(128).collect())
    };
    DeadLetter {
        event_id: attribute("id"),
        event_type: attribute("type"),
        tenant: attribute("tenantid"),
        routing_key: header_text(headers, "x-original-routing-key")
            .unwrap_or(delivery.routing_key.as_str())
            .to_owned(),
        error_code: header_text(headers, "x-error-code").map(str::to_owned),
        reason: header_text(headers, "x-error-reason").map(str::to_owned),
        bytes: delivery.data.len(),
    }
}

pub async fn list(amqp_url: &SecretString, bus: &BusSettings) -> Result<Vec<DeadLetter>, DlqError> {
    let connection = crate::bus::connect(amqp_url, "praisma-dlq").await?;
    let channel = connection.create_channel().await?;
    let held = hold_all(&channel, bus).await?;
    let summaries = held.iter().map(|h| h.summary.clone()).collect();
    for message in held {
        put_back(&message).await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(summaries)
}

/// Re-publishes the selected dead letters to their original exchange and routing key, with
/// publisher confirms, and only then removes them from the dead-letter queue.
pub async fn replay(
    amqp_url: &SecretString,
    bus: &BusSettings,
    selection: &Selection,
) -> Result<Vec<DeadLetter>, DlqError> {
    let connection = crate::bus::connect(amqp_url, "praisma-dlq").await?;
    let channel = connection.create_channel().await?;
    let publisher = Publisher::open(&connection).await?;
    let held = hold_all(&channel, bus).await?;
    let mut replayed = Vec::new();
    for message in held {
        let chosen = match selection {
            Selection::All => true,
            Selection::EventIds(ids) => message.summary.event_id.as_ref().is_some_and(|id| ids.contains(id)),
        };
        if !chosen {
            put_back(&message).await?;
            continue;
        }
        let headers = message.delivery.properties.headers().as_ref();
        let exchange = header_text(headers, "x-original-exchange")
            .unwrap_or(bus.exchange.as_str())
            .to_owned();
        let mut kept = FieldTable::default();
        if let Some(headers) = headers {
            for (name, value) in headers.inner() {
                if !name.as_str().starts_with("x-") {
                    kept.insert(name.clone(), value.clone());
                }
            }
        }
        kept.insert(
            "x-replayed-from".into(),
            AMQPValue::LongString(bus.dead_letter_queue.as_str().into()),
        );
        let properties: BasicProperties = message.delivery.properties.clone().with_headers(kept);
        publisher
            .publish(
                &exchange,
                &message.summary.routing_key,
                &message.delivery.data,
                properties,
            )
            .await?;
        message.delivery.ack(BasicAckOptions::default()).await?;
        replayed.push(message.summary);
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(replayed)
}
