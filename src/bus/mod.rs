//! Broker plumbing only: topology, the consumer loop that decides ack/dead-letter from the
//! handler's answer, the confirmed publisher, and the outbox relay. No business logic here.

pub mod consumer;
pub mod hub_client;
pub mod publisher;
pub mod relay;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

/// Connects with automatic recovery: lapin re-opens the connection and replays channels,
/// topology, QoS and consumers after a broker restart.
pub async fn connect(amqp_url: &SecretString, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover();
    Connection::connect(amqp_url.expose_secret(), properties).await
}

/// `host:port` of an AMQP or PostgreSQL URL, for error messages that must not show a password.
pub fn host_of(url: &SecretString) -> String {
    url::Url::parse(url.expose_secret())
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_else(|| "an unparseable address".to_owned())
}
