//! Broker plumbing only: topology, the consumer loop that decides ack/dead-letter from the
//! handler's answer, the confirmed publisher, and the outbox relay. No business logic here.

pub mod consumer;
pub mod hub_client;
pub mod link;
pub mod publisher;
pub mod relay;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

/// Connects once, retrying a refused connection a few times. A connection that is lost later
/// stays lost: its owner connects again ([`link::Link`] for the worker).
pub async fn connect(amqp_url: &SecretString, name: &str) -> Result<Connection, lapin::Error> {
    let retries = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(1))
        .with_max_times(3)
        .with_jitter();
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_backoff(retries);
    Connection::connect(amqp_url.expose_secret(), properties).await
}

/// Whether anything listens at the URL's host and port: start-up says at once that a service
/// is down instead of spending the reconnect backoff on it.
pub async fn reachable(url: &SecretString) -> bool {
    let Some(address) = socket_address(url) else {
        return false;
    };
    let probe = tokio::net::TcpStream::connect(address);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(3), probe).await,
        Ok(Ok(_))
    )
}

/// `host:port` of an AMQP or PostgreSQL URL, for error messages that must not show a password.
pub fn host_of(url: &SecretString) -> String {
    socket_address(url).unwrap_or_else(|| "an unparseable address".to_owned())
}

fn socket_address(url: &SecretString) -> Option<String> {
    let url = url::Url::parse(url.expose_secret()).ok()?;
    let default_port = match url.scheme() {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    };
    Some(format!("{}:{}", url.host_str()?, url.port().or(default_port)?))
}
