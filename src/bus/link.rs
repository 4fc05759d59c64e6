//! The worker's connection to the broker, made again here whenever it is lost.
//!
//! lapin's automatic recovery is not used: after a broker restart it could leave the connection
//! down for good (amqp-rs/lapin#450; our survival test saw `/readyz` report the broker down for
//! a full minute). A fresh connection has nothing to replay correctly: the topology is declared
//! again, the consumer starts over, and whatever the old connection left unacked the broker
//! redelivers, which the inbox answers once.
//!
//! One owner makes connections: the consumer's loop ([`super::consumer::Consumer::run`]), which is
//! the first to see a connection end. Everyone else takes the current [`Session`] and, when its
//! publishing fails, waits for the next one.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::{Channel, Connection};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::publisher::Publisher;
use super::topology;
use crate::settings::BusSettings;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting failed: {0}")]
    Connect(lapin::Error),
    #[error("declaring the topology failed: {0}")]
    Topology(lapin::Error),
}

/// One connection with the channels the worker uses on it. Deliveries, their acks and the
/// dead-letter copies made for them all belong to one session.
#[derive(Clone)]
pub struct Session {
    connection: Arc<Connection>,
    pub publisher: Publisher,
    pub consume_channel: Channel,
}

impl Session {
    /// Its connection and its publishing channel are both open.
    pub fn usable(&self) -> bool {
        self.connection.status().connected() && self.publisher.channel().status().connected()
    }
}

pub struct Link {
    amqp_url: SecretString,
    bus: BusSettings,
    current: watch::Sender<Option<Session>>,
}

impl Link {
    /// Connects and declares the topology once; a failure here is a start-up error.
    pub async fn open(amqp_url: SecretString, bus: BusSettings) -> Result<Self, LinkError> {
        let session = establish(&amqp_url, &bus).await?;
        Ok(Self {
            amqp_url,
            bus,
            current: watch::Sender::new(Some(session)),
        })
    }

    /// The session in use, if its connection is up.
    pub fn session(&self) -> Option<Session> {
        self.current.borrow().clone().filter(Session::usable)
    }

    pub fn is_connected(&self) -> bool {
        self.session().is_some()
    }

    /// Resolves when the session changes, for publishers waiting out a reconnect.
    pub fn changes(&self) -> watch::Receiver<Option<Session>> {
        self.current.subscribe()
    }

    /// Drops the current session and connects again, backing off while the broker is away, until
    /// it succeeds or `stop` is cancelled.
    pub async fn reconnect(&self, stop: &CancellationToken) -> Option<Session> {
        if let Some(old) = self.current.send_replace(None) {
            // Whatever is still open on it would only fail later; closing says so at once. A
            // half-open connection would wait for the broker's answer until the heartbeat
            // gives up, so the wait is bounded.
            let close = old.connection.close(320, "reconnecting".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
        }
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .with_jitter()
            .build();
        loop {
            match establish(&self.amqp_url, &self.bus).await {
                Ok(session) => {
                    tracing::info!("connected to the broker again");
                    self.current.send_replace(Some(session.clone()));
                    return Some(session);
                }
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "the broker is not back yet");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Closes the connection for good: at shutdown, or to simulate a crash.
    pub async fn close(&self, code: u16, reason: &str) {
        if let Some(session) = self.current.send_replace(None) {
            let _ = session.connection.close(code, reason.into()).await;
        }
    }
}

async fn establish(amqp_url: &SecretString, bus: &BusSettings) -> Result<Session, LinkError> {
    // Named after its queue, so an operator (or a test) tells the workers of one queue apart.
    let name = format!("praisma-integration-worker {}", bus.queue);
    let connection = super::connect(amqp_url, &name).await.map_err(LinkError::Connect)?;
    let consume_channel = connection.create_channel().await.map_err(LinkError::Topology)?;
    topology::declare(&consume_channel, bus)
        .await
        .map_err(LinkError::Topology)?;
    let publisher = Publisher::open(&connection).await.map_err(LinkError::Topology)?;
    Ok(Session {
        connection: Arc::new(connection),
        publisher,
        consume_channel,
    })
}
