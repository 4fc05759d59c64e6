//! The operator commands, on a running world.

use base64::Engine;
use praisma_worker::domain::{ChannelId, TenantId};
use praisma_worker::ops::{audit_verify, channels_show, dlq, keys_rotate};
use praisma_worker::vault::{Binding, SecretKind, Vault, VaultError};
use secrecy::SecretString;
use serde_json::json;

use crate::common::{WAIT, World};

#[tokio::test]
async fn audit_verify_names_an_edited_record() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.connect_channel("page-2", &["profile.read"], &[]).await;
    let clean = audit_verify::verify(&world.db, |_| {}).await.unwrap();
    assert_eq!((clean.chains, clean.records, clean.broken.len()), (2, 4, 0));

    // Someone with database access rewrites history (the table refuses it until its trigger is off).
    world
        .query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only", vec![])
        .await;
    world
        .query(
            "UPDATE audit_log SET details = jsonb_set(details, '{granted_scopes}', '[\"everything\"]')
             WHERE channel_id = 'page-1' AND sequence = 2",
            vec![],
        )
        .await;
    world
        .query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only", vec![])
        .await;
    let edited = audit_verify::verify(&world.db, |_| {}).await.unwrap();
    assert_eq!(edited.broken.len(), 1);
    assert_eq!(edited.broken[0].channel, "page-1");
    assert_eq!(edited.broken[0].sequence, 2);
    assert_eq!(edited.broken[0].reason, "the record does not match its hash");

    // The binary says the same and exits 1.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_praisma-worker"))
        .args(["audit", "verify"])
        .envs(world.env())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("channel \"page-1\" at sequence 2: the record does not match its hash")
    );
    world.teardown().await;
}

#[tokio::test]
async fn keys_rotate_leaves_every_token_readable_and_none_under_the_old_key() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.connect_channel("page-2", &["profile.read"], &[]).await;
    world.request(&world.consent_request("page-3", &["profile.read"])).await; // an open consent: a sealed verifier
    let before = world.stored_token("page-1", "access").await.unwrap();

    let new_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let ring = Vault::from_spec(&SecretString::from(format!("k2:{new_key},{}", world.vault_spec()))).unwrap();
    let rotation = keys_rotate::rotate(&world.db, &ring, 1, |_| {}).await.unwrap();
    assert_eq!(
        rotation,
        keys_rotate::Rotation {
            rotated: 5,
            unreadable: 0,
            remaining: 0
        }
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM channel_tokens WHERE key_id <> 'k2'", vec![])
            .await,
        0
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM authorizations WHERE verifier_key_id <> 'k2'",
                vec![]
            )
            .await,
        0
    );

    let tenant = TenantId::parse(world.tenant.clone()).unwrap();
    let channel = ChannelId::parse("page-1").unwrap();
    let sealed = world.sealed_token("page-1", "access").await.unwrap();
    let binding = Binding {
        tenant: &tenant,
        channel: &channel,
        kind: SecretKind::AccessToken,
        context: "",
    };
    assert_eq!(
        ring.open(&binding, &sealed).unwrap().as_str(),
        before,
        "the same token, under the new key"
    );
    assert!(
        matches!(world.vault.open(&binding, &sealed), Err(VaultError::UnknownKey(_))),
        "the old key alone no longer opens it"
    );
    let again = keys_rotate::rotate(&world.db, &ring, 100, |_| {}).await.unwrap();
    assert_eq!(again.rotated, 0, "a second run has nothing left to do");
    world.teardown().await;
}

#[tokio::test]
async fn channels_show_tells_a_channels_story_without_a_secret() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let access = world.stored_token("page-1", "access").await.unwrap();
    let refresh = world.stored_token("page-1", "refresh").await.unwrap();
    let tenant = TenantId::parse(world.tenant.clone()).unwrap();
    let channel = ChannelId::parse("page-1").unwrap();
    let active = channels_show::show(&world.db, &tenant, &channel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active["status"], "active");
    assert_eq!(active["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(active["jobs"][0]["kind"], "refresh");
    let text = active.to_string();
    assert!(!text.contains(&access) && !text.contains(&refresh) && !text.contains("ciphertext"));

    world
        .request(&world.event("RevokeRequested", json!({ "channel_id": "page-1", "origin": "user" })))
        .await;
    let revoked = channels_show::show(&world.db, &tenant, &channel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["tokens"], json!([]));
    assert_eq!(
        revoked["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "cancelled")
            .count(),
        1
    );
    assert_eq!(revoked["audit"][0]["action"], "connection.platform_revocation");
    let other = TenantId::parse("tenant_other").unwrap();
    assert!(
        channels_show::show(&world.db, &other, &channel)
            .await
            .unwrap()
            .is_none()
    );
    world.teardown().await;
}

#[tokio::test]
async fn dead_letters_are_listed_without_their_data_and_replayed_where_they_went() {
    let world = World::spawn().await;
    // A good event that was dead-lettered during an outage...
    let consent = world.consent_request("page-1", &["profile.read"]);
    let mut headers = lapin::types::FieldTable::default();
    let text = |v: &str| lapin::types::AMQPValue::LongString(v.into());
    headers.insert("x-error-code".into(), text("provider_unavailable"));
    headers.insert(
        "x-original-routing-key".into(),
        text("integration.consent_url.requested"),
    );
    headers.insert("x-original-exchange".into(), text(&world.settings.bus.exchange));
    let connection = praisma_worker::bus::connect(&world.settings.amqp_url, "test")
        .await
        .unwrap();
    let publisher = praisma_worker::bus::publisher::Publisher::open(&connection)
        .await
        .unwrap();
    let properties = lapin::BasicProperties::default().with_headers(headers);
    let body = serde_json::to_vec(&consent).unwrap();
    publisher
        .publish(
            &world.settings.bus.dead_letter_exchange,
            "integration.consent_url.requested",
            &body,
            properties,
        )
        .await
        .unwrap();
    // ...and a malformed one.
    world
        .hub
        .publish_raw(
            "integration.connect.requested",
            b"{\"data\": {\"code\": \"SECRET-CODE\"}}",
            false,
            None,
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut letters = Vec::new();
    while letters.len() < 2 && tokio::time::Instant::now() < deadline {
        letters = dlq::list(&world.settings.amqp_url, &world.settings.bus).await.unwrap();
    }
    assert_eq!(letters.len(), 2);
    let listed = serde_json::to_string(&letters).unwrap();
    assert!(!listed.contains("SECRET-CODE"), "data is never shown");
    let good = letters
        .iter()
        .find(|l| l.event_type.as_deref() == Some("ConsentUrlRequested"))
        .unwrap();
    assert_eq!(good.error_code.as_deref(), Some("provider_unavailable"));
    assert_eq!(good.tenant.as_deref(), Some(world.tenant.as_str()));

    let id = consent["id"].as_str().unwrap().to_owned();
    let replayed = dlq::replay(
        &world.settings.amqp_url,
        &world.settings.bus,
        &dlq::Selection::EventIds(vec![id.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), 1);
    let answer = world
        .hub
        .outcome(&id, WAIT)
        .await
        .expect("the replayed event is handled");
    assert_eq!(answer.event_type(), "ConsentUrlIssued");
    let left = dlq::list(&world.settings.amqp_url, &world.settings.bus).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].error_code.as_deref(), Some("invalid_event"));
    let _ = connection.close(200, "done".into()).await;
    world.teardown().await;
}
