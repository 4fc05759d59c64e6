//! Exchanges, queues and bindings. Declared by every worker at start; declarations are
//! idempotent, so replicas and restarts agree.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::contract::inbound::INBOUND;
use crate::settings::BusSettings;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn quorum_queue(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    for (name, value) in extra {
        arguments.insert((*name).into(), value.clone());
    }
    arguments
}

pub async fn declare(channel: &Channel, bus: &BusSettings) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            bus.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            bus.dead_letter_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(bus.dead_letter_queue.as_str().into(), durable, quorum_queue(&[]))
        .await?;
    channel
        .queue_bind(
            bus.dead_letter_queue.as_str().into(),
            bus.dead_letter_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // The broker dead-letters a message redelivered more than `delivery_limit` times: a poison
    // message that crashes workers cannot loop forever.
    let worker_queue = quorum_queue(&[
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString(LongString::from(bus.dead_letter_exchange.as_str())),
        ),
        ("x-delivery-limit", AMQPValue::LongUInt(bus.delivery_limit)),
    ]);
    channel
        .queue_declare(bus.queue.as_str().into(), durable, worker_queue)
        .await?;
    for (_, routing_key) in INBOUND {
        channel
            .queue_bind(
                bus.queue.as_str().into(),
                bus.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Removes everything [`declare`] made; for tests and the demo, which use throw-away names.
pub async fn delete(channel: &Channel, bus: &BusSettings) -> Result<(), lapin::Error> {
    channel
        .queue_delete(bus.queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .queue_delete(bus.dead_letter_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(bus.exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(
            bus.dead_letter_exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    Ok(())
}
