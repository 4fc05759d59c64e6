//! Publishing with publisher confirms. A broker Nack is an error, never a success.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use lapin::{Confirmation, PublisherConfirm};

use crate::contract::envelope::CONTENT_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the channel is not in confirm mode")]
    NotConfirmed,
}

#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// A message sent but not yet confirmed.
pub struct Pending(PublisherConfirm);

impl Pending {
    pub async fn confirmed(self) -> Result<(), PublishError> {
        match self.0.await? {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => Err(PublishError::NotConfirmed),
        }
    }
}

impl Publisher {
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends without waiting, so a batch can share one round of confirms.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        Ok(Pending(confirm))
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.send(exchange, routing_key, body, properties)
            .await?
            .confirmed()
            .await
    }
}

/// Persistent CloudEvents properties, with the event's id, type and trace context mirrored into
/// AMQP so that consumers can route and trace without parsing the body.
pub fn event_properties(event: &serde_json::Value) -> BasicProperties {
    let attribute = |name: &str| event.get(name).and_then(|v| v.as_str());
    let mut headers = FieldTable::default();
    for name in ["traceparent", "tenantid"] {
        if let Some(value) = attribute(name) {
            headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
    }
    let mut properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = attribute("id") {
        properties = properties.with_message_id(id.into());
    }
    if let Some(event_type) = attribute("type") {
        properties = properties.with_type(event_type.into());
    }
    if let Some(correlation) = attribute("correlationid") {
        properties = properties.with_correlation_id(correlation.into());
    }
    properties
}

/// A header's value as text, for the few headers the worker reads.
pub fn header_text<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}
