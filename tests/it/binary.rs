//! The `praisma-worker` binary as an operator runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use praisma_worker::bus::hub_client::HubClient;
use praisma_worker::bus::topology;
use praisma_worker::settings::BusSettings;
use praisma_worker::vault::Vault;
use sea_orm::{ConnectionTrait, Database};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::common::{ADMIN_DATABASE_URL, Peer, REDIRECT_URI, WAIT, peer};

const BINARY: &str = env!("CARGO_BIN_EXE_praisma-worker");

#[test]
fn contract_prints_the_asyncapi_document_of_every_event() {
    let output = Command::new(BINARY).arg("contract").output().unwrap();
    assert!(output.status.success());
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["channels"].as_object().unwrap().len(), 16);
    let schemas = Command::new(BINARY).args(["contract", "schemas"]).output().unwrap();
    let schemas: serde_json::Value = serde_json::from_slice(&schemas.stdout).unwrap();
    assert_eq!(
        schemas["ConnectionEstablished"]["properties"]["type"]["const"],
        "ConnectionEstablished"
    );
}

#[test]
fn a_bad_vault_key_stops_start_up_with_one_sentence_that_hides_the_key() {
    let output = Command::new(BINARY)
        .arg("worker")
        .env("PRAISMA_VAULT_KEYS", "k1:c2hvcnQta2V5LXZhbHVl")
        .env("PRAISMA_LOG_FORMAT", "pretty")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PRAISMA_VAULT_KEYS entry 1 does not decode to exactly 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("c2hvcnQta2V5LXZhbHVl"));

    let missing = Command::new(BINARY)
        .arg("worker")
        .env_remove("PRAISMA_VAULT_KEYS")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("PRAISMA_VAULT_KEYS is not set"));

    let bad_number = Command::new(BINARY)
        .arg("worker")
        .env("PRAISMA_PREFETCH", "many")
        .output()
        .unwrap();
    assert_eq!(bad_number.status.code(), Some(2));
}

#[test]
fn the_load_generator_runs_real_refreshes_through_a_worker_process() {
    let output = Command::new(BINARY)
        .args(["bench", "--channels", "20"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table.lines().last().unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[1], "Refresh");
    assert_eq!(cells[6], "20", "every event answered: {row}");
}

#[test]
fn the_demo_names_the_service_that_is_down() {
    let no_database = Command::new(BINARY)
        .arg("demo")
        .env("PRAISMA_DATABASE_URL", "postgres://postgres@127.0.0.1:1/praisma")
        .output()
        .unwrap();
    assert!(!no_database.status.success());
    let said = String::from_utf8_lossy(&no_database.stderr);
    assert!(
        said.contains("PostgreSQL is not reachable at 127.0.0.1:1") && said.contains("start it"),
        "{said}"
    );

    let no_broker = Command::new(BINARY)
        .arg("demo")
        .env("PRAISMA_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert!(!no_broker.status.success());
    let said = String::from_utf8_lossy(&no_broker.stderr);
    assert!(
        said.contains("RabbitMQ is not reachable at 127.0.0.1:1") && said.contains("rabbitmq-server"),
        "{said}"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let peer = Peer::start(3600);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test.{id}");
    let bus = BusSettings::namespaced(&prefix);
    let amqp = SecretString::from(praisma_worker::settings::DEFAULT_AMQP_URL);
    // Declared up front so the hub can listen before the worker process is up.
    let connection = praisma_worker::bus::connect(&amqp, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology::declare(&channel, &bus).await.unwrap();
    let hub = HubClient::connect(&amqp, &bus.exchange).await.unwrap();

    let catalogue = std::env::temp_dir().join(format!("catalogue-{id}.toml"));
    std::fs::write(&catalogue, peer.catalogue_entry()).unwrap();
    let database = format!("test_{id}");
    let mut child = tokio::process::Command::new(BINARY)
        .arg("worker")
        .env(
            "PRAISMA_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )
        .env("PRAISMA_EXCHANGE", &prefix)
        .env("PRAISMA_VAULT_KEYS", Vault::ephemeral_spec().expose_secret())
        .env("PRAISMA_CATALOGUE_FILE", &catalogue)
        .env("PRAISMA_PROVIDER_OIDC_TEST_CLIENT_ID", peer::CLIENT_ID)
        .env("PRAISMA_PROVIDER_OIDC_TEST_CLIENT_SECRET", &peer.client_secret)
        .env("PRAISMA_SHUTDOWN_GRACE_SECONDS", "10")
        .env("PRAISMA_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join(format!("worker-{id}.log"))).unwrap())
        .spawn()
        .unwrap();

    let consent = |channel: &str| {
        HubClient::event(
            "tenant_sig",
            "ConsentUrlRequested",
            json!({
                "channel_id": channel, "provider": "oidc_test", "capabilities": ["profile.read"], "redirect_uri": REDIRECT_URI,
            }),
        )
    };
    let first = consent("page-1");
    hub.publish(&first, false).await.unwrap();
    assert!(
        hub.outcome(first["id"].as_str().unwrap(), WAIT).await.is_some(),
        "the worker process is up"
    );

    // A burst, then SIGTERM straight away: what was taken is finished, nothing is lost.
    let burst: Vec<_> = (0..20).map(|n| consent(&format!("page-b{n}"))).collect();
    for event in &burst {
        hub.publish(event, false).await.unwrap();
    }
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Whatever the worker did not take is still queued; what it took was answered.
    let answered = burst
        .iter()
        .filter(|e| {
            hub.received()
                .iter()
                .any(|r| r.event["correlationid"] == e["id"] && r.event_type() == "ConsentUrlIssued")
        })
        .count();
    let queue = channel
        .queue_declare(
            bus.queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let admin = Database::connect(ADMIN_DATABASE_URL).await.unwrap();
    let worker_db = Database::connect(format!("postgres://postgres@127.0.0.1:5432/{database}"))
        .await
        .unwrap();
    let committed = worker_db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM inbox WHERE status = 'done'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    let unpublished = worker_db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM outbox_pending",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(unpublished, 0, "the outbox was flushed before exit");
    assert_eq!(
        committed as usize,
        1 + answered,
        "every committed event's outcome was published"
    );
    assert_eq!(
        answered + queue.message_count() as usize,
        burst.len(),
        "no event was lost"
    );

    let _ = worker_db.close().await;
    let _ = topology::delete(&channel, &bus).await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    let _ = std::fs::remove_file(catalogue);
}

#[test]
fn providers_lists_the_eight_platforms_and_shows_one_platforms_capabilities() {
    let output = Command::new(BINARY)
        .arg("providers")
        .env("PRAISMA_PROVIDER_X_CLIENT_ID", "x-client")
        .output()
        .unwrap();
    assert!(output.status.success());
    let listing = String::from_utf8(output.stdout).unwrap();
    for name in [
        "meta",
        "instagram",
        "threads",
        "x",
        "linkedin",
        "tiktok",
        "youtube",
        "pinterest",
    ] {
        assert!(
            listing.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name}: {listing}"
        );
    }
    let x_line = listing.lines().find(|l| l.starts_with("x ")).unwrap();
    assert!(x_line.contains(" yes "), "x is configured: {x_line}");
    let output = Command::new(BINARY).args(["providers", "meta"]).output().unwrap();
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(shown.contains("fb_exchange_token"), "{shown}");
    assert!(shown.contains("permissions edge"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("posts.publish") && l.contains("pages_manage_posts")),
        "{shown}"
    );
    let unknown = Command::new(BINARY).args(["providers", "myspace"]).output().unwrap();
    assert!(!unknown.status.success());
}

#[test]
fn webhooks_verify_meta_accepts_a_signed_request_and_refuses_a_forged_one() {
    use base64::Engine;
    use hmac::Mac;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = engine.encode(r#"{"algorithm":"HMAC-SHA256","issued_at":1764800000,"user_id":"10158"}"#);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"meta-app-secret").unwrap();
    mac.update(payload.as_bytes());
    let signed = format!("{}.{payload}", engine.encode(mac.finalize().into_bytes()));
    let verify = |secret: &str, body: &str| {
        let mut child = Command::new(BINARY)
            .args(["webhooks", "verify-meta"])
            .env("PRAISMA_PROVIDER_META_CLIENT_ID", "meta-app")
            .env("PRAISMA_PROVIDER_META_CLIENT_SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // As the hub receives it: a form post with `signed_request`.
    let accepted = verify("meta-app-secret", &format!("signed_request={signed}"));
    assert!(accepted.status.success());
    let claims: serde_json::Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(claims["user_id"], "10158");
    let forged = verify("another-secret", &signed);
    assert!(!forged.status.success());
    let message = String::from_utf8(forged.stderr).unwrap();
    assert!(message.contains("signature does not match"), "{message}");
    assert!(!message.contains("another-secret"));
}
