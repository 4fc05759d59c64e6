//! `demo`: the worker, the built-in sandbox platform and a stand-in hub, on the local RabbitMQ
//! and PostgreSQL, walking consent → connect and printing what happens. It uses its own
//! exchange and queue names and removes them afterwards; its rows stay in the database, as a
//! real deployment's would.

use std::time::{Duration, Instant};

use base64::Engine;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::bus::hub_client::HubClient;
use crate::bus::topology;
use crate::platform::Catalogue;
use crate::sandbox::{self, SandboxClient};
use crate::settings::{BusSettings, ClientCredentials, Settings};
use crate::startup::Worker;
use crate::vault::Vault;

const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
    #[error("{0}")]
    Step(String),
}

fn step(message: impl Into<String>) -> DemoError {
    DemoError::Step(message.into())
}

struct Timeline(Instant);

impl Timeline {
    fn say(&self, arrow: &str, text: impl AsRef<str>) {
        println!("[{:>6} ms] {arrow} {}", self.0.elapsed().as_millis(), text.as_ref());
    }
}

pub async fn run(mut settings: Settings) -> Result<(), DemoError> {
    let timeline = Timeline(Instant::now());
    println!(
        "Praisma integration worker demo: consent → connect → refresh → operations → revoke, against the built-in sandbox platform\n"
    );
    if settings.vault_keys.is_none() {
        settings.vault_keys = Some(Vault::ephemeral_spec());
        timeline.say(
            "·",
            "PRAISMA_VAULT_KEYS is not set: using a throw-away key for this run",
        );
    }
    let suffix = crate::audit::hex(&crate::random::bytes::<4>());
    settings.bus = BusSettings::namespaced(&format!("praisma.demo.{suffix}"));
    settings.shutdown_grace = Duration::from_secs(5);
    settings.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // The demo asks for a refresh seconds after connecting; a production worker would answer
    // that from the fresh token without calling the platform.
    settings.refresh.debounce = Duration::ZERO;

    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<24>());
    let client = SandboxClient {
        client_id: "praisma-demo".into(),
        client_secret: secret.clone(),
        redirect_uri: "http://127.0.0.1:9/hub/oauth/callback".into(),
    };
    let sandbox = sandbox::start(client.clone())
        .await
        .map_err(|e| step(format!("the sandbox could not start: {e}")))?;
    let definition = sandbox.definition().map_err(step)?;
    let provider = definition.name.clone();
    settings.clients.insert(
        provider.clone(),
        ClientCredentials {
            client_id: client.client_id.clone(),
            client_secret: Some(crate::domain::secrets::ClientSecret::new(secret)),
        },
    );
    let catalogue = Catalogue::build(vec![definition], &settings).map_err(|e| step(e.to_string()))?;
    timeline.say("·", format!("sandbox platform listening on {}", sandbox.base_url()));

    let worker = Worker::build(settings.clone(), catalogue).await?;
    let db = worker.context().db.clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
    timeline.say(
        "·",
        format!("worker consuming from {} (database migrated)", settings.bus.queue),
    );

    let hub = HubClient::connect(&settings.amqp_url, &settings.bus.exchange)
        .await
        .map_err(|e| step(format!("the hub client could not connect: {e}")))?;
    let result = walk(&timeline, &hub, &db, &settings, &sandbox, provider.as_str(), &suffix).await;

    shutdown.cancel();
    let _ = running.await;
    if let Ok(connection) = crate::bus::connect(&settings.amqp_url, "praisma-demo-cleanup").await
        && let Ok(channel) = connection.create_channel().await
    {
        let _ = topology::delete(&channel, &settings.bus).await;
        let _ = connection.close(200, "demo done".into()).await;
    }
    sandbox.stop();
    match &result {
        Ok(()) => timeline.say("✓", "demo finished: worker drained and stopped, demo queues removed"),
        Err(error) => timeline.say("✗", format!("demo failed: {error}")),
    }
    result
}

async fn walk(
    timeline: &Timeline,
    hub: &HubClient,
    db: &sea_orm::DatabaseConnection,
    settings: &Settings,
    sandbox: &sandbox::SandboxHandle,
    provider: &str,
    suffix: &str,
) -> Result<(), DemoError> {
    let tenant = "tenant_demo";
    let channel = format!("page-{suffix}");
    let redirect_uri = sandbox.client.redirect_uri.clone();

    // 1. The hub's web layer asks for a consent URL.
    let request = HubClient::event(
        tenant,
        "ConsentUrlRequested",
        json!({
            "channel_id": channel, "provider": provider,
            "capabilities": ["profile.read", "posts.publish"], "redirect_uri": redirect_uri,
        }),
    );
    timeline.say(
        "→",
        format!("ConsentUrlRequested  channel {channel}, capabilities profile.read + posts.publish"),
    );
    hub.publish(&request, true).await.map_err(|e| step(e.to_string()))?;
    let issued = reply(hub, &request).await?;
    let data = &issued.event["data"];
    let url = data["authorization_url"].as_str().unwrap_or_default().to_owned();
    timeline.say(
        "←",
        format!(
            "{}  scopes {} (least privilege), state expires {}",
            issued.event_type(),
            data["requested_scopes"],
            data["expires_at"].as_str().unwrap_or("?")
        ),
    );
    timeline.say(" ", format!("   {}", shorten(&url, 110)));

    // 2. The user consents; the sandbox sends the browser back with a code.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| step(e.to_string()))?;
    let response = browser
        .get(&url)
        .send()
        .await
        .map_err(|e| step(format!("the sandbox did not answer: {e}")))?;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let callback = url::Url::parse(&location).map_err(|_| step("the sandbox did not redirect back"))?;
    let pairs: std::collections::BTreeMap<String, String> = callback.query_pairs().into_owned().collect();
    timeline.say(
        "·",
        "user consented; the platform redirected to the hub with a code (never printed)",
    );

    // 3. The web layer forwards the callback.
    let connect = HubClient::event(
        tenant,
        "ConnectRequested",
        json!({
            "state": pairs.get("state"), "code": pairs.get("code"),
        }),
    );
    timeline.say("→", "ConnectRequested  state + code");
    hub.publish(&connect, true).await.map_err(|e| step(e.to_string()))?;
    let established = reply(hub, &connect).await?;
    let data = &established.event["data"];
    timeline.say(
        "←",
        format!(
            "{}  granted {}, capabilities {}, expires {}",
            established.event_type(),
            data["granted_scopes"],
            data["capabilities"],
            data["expires_at"].as_str().unwrap_or("never")
        ),
    );

    // 4. The broker delivers the callback again: one effect, the same answer.
    hub.publish(&connect, true).await.map_err(|e| step(e.to_string()))?;
    let first_id = established.event["id"].clone();
    let same_answer = |all: &[crate::bus::hub_client::Received]| {
        all.iter().filter(|r| r.via_reply && r.event["id"] == first_id).count() >= 2
    };
    if !hub.wait_until(WAIT, same_answer).await {
        return Err(step("the duplicate ConnectRequested was not answered again"));
    }
    timeline.say(
        "↻",
        format!(
            "duplicate ConnectRequested answered again with the same outcome id; token endpoint calls: {}",
            sandbox.token_calls()
        ),
    );

    // 5. What the database holds: ciphertext only, and an unbroken audit chain.
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT t.kind, t.key_id, length(t.ciphertext) AS bytes FROM channel_tokens t
             JOIN channels c ON c.id = t.channel_pk WHERE c.tenant_id = $1 AND c.channel_id = $2 ORDER BY t.kind",
            [tenant.into(), channel.clone().into()],
        ))
        .await
        .map_err(|e| step(e.to_string()))?;
    for row in rows {
        let kind: String = row.try_get("", "kind").unwrap_or_default();
        let key: String = row.try_get("", "key_id").unwrap_or_default();
        let bytes: i32 = row.try_get("", "bytes").unwrap_or_default();
        timeline.say(
            "▣",
            format!("stored {kind} token: {bytes} bytes of AES-256-GCM-SIV ciphertext under key {key:?}"),
        );
    }
    let audit = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT sequence, action, outcome, encode(hash, 'hex') AS hash FROM audit_log
             WHERE tenant_id = $1 AND channel_id = $2 ORDER BY sequence",
            [tenant.into(), channel.clone().into()],
        ))
        .await
        .map_err(|e| step(e.to_string()))?;
    for row in audit {
        let sequence: i64 = row.try_get("", "sequence").unwrap_or_default();
        let action: String = row.try_get("", "action").unwrap_or_default();
        let outcome: String = row.try_get("", "outcome").unwrap_or_default();
        let hash: String = row.try_get("", "hash").unwrap_or_default();
        timeline.say(
            "▤",
            format!(
                "audit #{sequence} {action} ({outcome}) hash {}…",
                &hash[..hash.len().min(16)]
            ),
        );
    }

    // 6. A scheduler says the token is expiring: one refresh, rotated.
    let expiring = HubClient::event(tenant, "TokenExpiring", json!({ "channel_id": channel }));
    timeline.say("→", "TokenExpiring");
    let refreshed = ask(hub, &expiring).await?;
    let data = &refreshed.event["data"];
    timeline.say(
        "←",
        format!(
            "{}  rotated refresh token: {}, expires {}, token endpoint calls: {}",
            refreshed.event_type(),
            data["refresh_token_rotated"],
            data["expires_at"].as_str().unwrap_or("?"),
            sandbox.token_calls()
        ),
    );

    // 7. A hub service runs a platform call it never sees the token of...
    let read_me = HubClient::event(
        tenant,
        "OperationRequested",
        json!({
            "channel_id": channel, "capability": "profile.read", "request": { "method": "GET", "path": "me" },
        }),
    );
    timeline.say("→", "OperationRequested  profile.read: GET me");
    let done = ask(hub, &read_me).await?;
    timeline.say(
        "←",
        format!(
            "{}  status {}, body {}",
            done.event_type(),
            done.event["data"]["status"],
            done.event["data"]["body"]
        ),
    );
    // ...and one the user never granted is refused before the platform is called.
    let insights = HubClient::event(
        tenant,
        "OperationRequested",
        json!({
            "channel_id": channel, "capability": "insights.read", "request": { "method": "GET", "path": "insights" },
        }),
    );
    timeline.say("→", "OperationRequested  insights.read (not granted)");
    let refused = ask(hub, &insights).await?;
    timeline.say(
        "←",
        format!(
            "{}  {} missing {}",
            refused.event_type(),
            refused.event["data"]["error_code"],
            refused.event["data"]["missing_scopes"]
        ),
    );

    // 8. The user disconnects: disabled at once, the platform told, the tokens destroyed.
    let revoke = HubClient::event(
        tenant,
        "RevokeRequested",
        json!({ "channel_id": channel, "origin": "user" }),
    );
    timeline.say("→", "RevokeRequested  origin user");
    let revoked = ask(hub, &revoke).await?;
    let data = &revoked.event["data"];
    timeline.say(
        "←",
        format!(
            "{}  platform revocation {}, cancelled jobs {}",
            revoked.event_type(),
            data["platform_revocation"],
            data["cancelled_jobs"].as_array().map_or(0, Vec::len)
        ),
    );
    let tokens_left = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM channel_tokens t JOIN channels c ON c.id = t.channel_pk
             WHERE c.tenant_id = $1 AND c.channel_id = $2",
            [tenant.into(), channel.clone().into()],
        ))
        .await
        .map_err(|e| step(e.to_string()))?
        .and_then(|row| row.try_get::<i64>("", "n").ok())
        .unwrap_or(-1);
    timeline.say(
        "▣",
        format!("token ciphertexts left for the channel: {tokens_left}; its row, jobs and audit trail stay"),
    );
    let after = HubClient::event(
        tenant,
        "OperationRequested",
        json!({
            "channel_id": channel, "capability": "profile.read", "request": { "method": "GET", "path": "me" },
        }),
    );
    let refused = ask(hub, &after).await?;
    timeline.say(
        "←",
        format!(
            "{}  {} (nothing of the channel runs any more)",
            refused.event_type(),
            refused.event["data"]["error_code"]
        ),
    );

    // 9. Garbage on the bus: audited, dead-lettered, and the worker carries on.
    hub.publish_raw("integration.connect.requested", b"{not json", false, None)
        .await
        .map_err(|e| step(e.to_string()))?;
    let dead = wait_dead_letter(hub, &settings.bus.dead_letter_queue).await?;
    timeline.say(
        "✗",
        format!(
            "malformed message dead-lettered with x-error-code={}",
            dead.headers.get("x-error-code").map(String::as_str).unwrap_or("?")
        ),
    );
    Ok(())
}

async fn ask(hub: &HubClient, event: &Value) -> Result<crate::bus::hub_client::Received, DemoError> {
    hub.publish(event, true).await.map_err(|e| step(e.to_string()))?;
    reply(hub, event).await
}

async fn reply(hub: &HubClient, request: &Value) -> Result<crate::bus::hub_client::Received, DemoError> {
    let id = request["id"].as_str().unwrap_or_default();
    hub.reply(id, WAIT)
        .await
        .ok_or_else(|| step(format!("no answer to {} within {WAIT:?}", request["type"])))
}

async fn wait_dead_letter(hub: &HubClient, queue: &str) -> Result<crate::bus::hub_client::Received, DemoError> {
    let deadline = Instant::now() + WAIT;
    // The DLQ is read by polling (basic.get): the demo has no consumer on it.
    loop {
        let mut taken = hub.drain_queue(queue).await.map_err(|e| step(e.to_string()))?;
        if let Some(found) = taken.pop() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(step("the malformed message did not reach the dead-letter queue"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        text.to_owned()
    } else {
        format!("{}…", &text[..max])
    }
}
