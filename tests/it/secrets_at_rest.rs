//! Tokens at rest: ciphertext bound to its place, and no secret anywhere it could be read.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use praisma_worker::domain::{ChannelId, TenantId};
use praisma_worker::vault::{Binding, Sealed, SecretKind, VaultError};
use sea_orm::QueryResult;
use sha2::{Digest, Sha256};

use crate::common::{World, logs};

fn sealed(row: &QueryResult) -> Sealed {
    Sealed {
        key_id: row.try_get("", "key_id").unwrap(),
        nonce: row.try_get("", "nonce").unwrap(),
        ciphertext: row.try_get("", "ciphertext").unwrap(),
    }
}

async fn stored_token(world: &World, channel: &str, kind: &str) -> Sealed {
    world.sealed_token(channel, kind).await.expect("a stored token")
}

#[tokio::test]
async fn tampered_or_swapped_ciphertext_fails_to_open() {
    let world = World::spawn().await;
    world.connect_channel("page-a", &["profile.read"], &[]).await;
    world.connect_channel("page-b", &["profile.read"], &[]).await;
    let tenant = TenantId::parse(world.tenant.clone()).unwrap();
    let (a, b) = (ChannelId::parse("page-a").unwrap(), ChannelId::parse("page-b").unwrap());
    let binding = |channel, kind| Binding {
        tenant: &tenant,
        channel,
        kind,
        context: "",
    };

    let a_access = stored_token(&world, "page-a", "access").await;
    let a_refresh = stored_token(&world, "page-a", "refresh").await;
    assert!(
        world
            .vault
            .open(&binding(&a, SecretKind::AccessToken), &a_access)
            .is_ok()
    );
    // Swapped between channels, between kinds, or into another tenant: refused.
    assert!(matches!(
        world.vault.open(&binding(&b, SecretKind::AccessToken), &a_access),
        Err(VaultError::Tampered)
    ));
    assert!(matches!(
        world.vault.open(&binding(&a, SecretKind::RefreshToken), &a_access),
        Err(VaultError::Tampered)
    ));
    let other_tenant = TenantId::parse("tenant_other").unwrap();
    let foreign = Binding {
        tenant: &other_tenant,
        channel: &a,
        kind: SecretKind::AccessToken,
        context: "",
    };
    assert!(matches!(
        world.vault.open(&foreign, &a_access),
        Err(VaultError::Tampered)
    ));
    assert!(
        world
            .vault
            .open(&binding(&a, SecretKind::RefreshToken), &a_refresh)
            .is_ok()
    );

    // Altered in the database: one flipped bit is enough.
    world
        .query(
            "UPDATE channel_tokens t SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)
             FROM channels c WHERE c.id = t.channel_pk AND c.channel_id = 'page-a' AND t.kind = 'access'",
            vec![],
        )
        .await;
    let altered = stored_token(&world, "page-a", "access").await;
    assert!(matches!(
        world.vault.open(&binding(&a, SecretKind::AccessToken), &altered),
        Err(VaultError::Tampered)
    ));
    // A ciphertext naming a key the ring does not hold is refused, not guessed at.
    let unknown_key = Sealed {
        key_id: "k-retired".into(),
        ..a_refresh
    };
    assert!(matches!(
        world.vault.open(&binding(&a, SecretKind::RefreshToken), &unknown_key),
        Err(VaultError::UnknownKey(_))
    ));
    world.teardown().await;
}

#[tokio::test]
async fn no_secret_appears_in_the_database_the_bus_or_the_logs() {
    let world = World::spawn().await;
    let tenant = TenantId::parse(world.tenant.clone()).unwrap();
    let channel = ChannelId::parse("page-leak").unwrap();

    let issued = world
        .request(&world.consent_request("page-leak", &["profile.read", "posts.publish"]))
        .await;
    // Read the PKCE verifier the way only the worker can, before the exchange destroys it.
    let state = issued.event["data"]["state"].as_str().unwrap().to_owned();
    let state_hash: [u8; 32] = Sha256::digest(state.as_bytes()).into();
    let row = world
        .query(
            "SELECT verifier_key_id AS key_id, verifier_nonce AS nonce, verifier_ciphertext AS ciphertext FROM authorizations WHERE tenant_id = $1",
            vec![world.tenant.clone().into()],
        )
        .await;
    let context: String = state_hash.iter().map(|b| format!("{b:02x}")).collect();
    let verifier_binding = Binding {
        tenant: &tenant,
        channel: &channel,
        kind: SecretKind::PkceVerifier,
        context: &context,
    };
    let verifier = world
        .vault
        .open(&verifier_binding, &sealed(&row[0]))
        .unwrap()
        .to_string();

    let callback = world
        .user_consents(issued.event["data"]["authorization_url"].as_str().unwrap(), &[], false)
        .await;
    let code = callback.get("code").unwrap().to_owned();
    let established = world.request(&world.connect_request(&callback)).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    // A replay of the code is refused, so the code also passes through the worker's error path.
    world.request(&world.connect_request(&callback)).await;

    let access_sealed = stored_token(&world, "page-leak", "access").await;
    let refresh_sealed = stored_token(&world, "page-leak", "refresh").await;
    let bind = |kind| Binding {
        tenant: &tenant,
        channel: &channel,
        kind,
        context: "",
    };
    let access = world
        .vault
        .open(&bind(SecretKind::AccessToken), &access_sealed)
        .unwrap()
        .to_string();
    let refresh = world
        .vault
        .open(&bind(SecretKind::RefreshToken), &refresh_sealed)
        .unwrap()
        .to_string();

    let secrets = [
        ("access token", access),
        ("refresh token", refresh),
        ("authorization code", code),
        ("PKCE verifier", verifier),
        ("client secret", world.peer.client_secret.clone()),
    ];
    let mut haystacks = vec![("database", world.dump_tables().await), ("logs", logs::captured())];
    let from_worker =
        |r: &&praisma_worker::bus::hub_client::Received| r.event["source"] == "/praisma/integration-worker";
    let published: String = world
        .hub
        .received()
        .iter()
        .filter(from_worker)
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned() + "\n")
        .collect();
    haystacks.push(("published messages", published));
    let dead: String = world
        .dead_letters()
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
        .collect();
    haystacks.push(("dead-letter queue", dead));
    assert!(!haystacks[1].1.is_empty(), "the worker's logs were captured");

    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what} looks real");
        let forms = [secret.clone(), STANDARD.encode(secret), URL_SAFE_NO_PAD.encode(secret)];
        for (place, text) in &haystacks {
            for form in &forms {
                assert!(!text.contains(form.as_str()), "the {what} appears in the {place}");
            }
        }
    }
    world.teardown().await;
}

/// Issue 8's leak scan: the main flows, then every place a secret could end up, searched for
/// every secret the authorization server ever issued and the client secret, raw and base64.
#[tokio::test]
async fn the_leak_scan_finds_no_secret_after_the_main_flows() {
    use serde_json::json;
    let world = World::spawn().await;
    let (established, callback) = world
        .connect_channel("page-1", &["profile.read", "posts.publish"], &["posts.write"])
        .await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    world.request(&world.connect_request(&callback)).await; // a replayed code
    world.age_tokens("page-1").await;
    let refreshed = world
        .request(&world.event("TokenExpiring", json!({ "channel_id": "page-1" })))
        .await;
    assert_eq!(refreshed.event_type(), "TokenRefreshed");
    let read =
        json!({ "channel_id": "page-1", "capability": "profile.read", "request": { "method": "GET", "path": "me" } });
    assert_eq!(
        world
            .request(&world.event("OperationRequested", read))
            .await
            .event_type(),
        "OperationCompleted"
    );
    let post = json!({ "channel_id": "page-1", "capability": "posts.publish", "request": { "method": "POST", "path": "posts" } });
    assert_eq!(
        world
            .request(&world.event("OperationRequested", post))
            .await
            .event_type(),
        "OperationRejected"
    );
    world
        .hub
        .publish_raw("integration.connect.requested", b"{\"oops\": true}", false, None)
        .await
        .unwrap();
    assert_eq!(world.wait_dead_letters(1).await.len(), 1);
    let revoked = world
        .request(&world.event("RevokeRequested", json!({ "channel_id": "page-1", "origin": "user" })))
        .await;
    assert_eq!(revoked.event["data"]["platform_revocation"], "confirmed");

    let mut secrets = world.peer.issued_secrets().await;
    assert!(
        secrets.len() >= 5,
        "codes, access and refresh tokens: {}",
        secrets.len()
    );
    secrets.push(world.peer.client_secret.clone());
    let dump = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--data-only", world.db_name()])
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let from_worker =
        |r: &&praisma_worker::bus::hub_client::Received| r.event["source"] == "/praisma/integration-worker";
    let haystacks = [
        ("pg_dump", String::from_utf8_lossy(&dump.stdout).into_owned()),
        ("logs", logs::captured()),
        (
            "published messages",
            world
                .hub
                .received()
                .iter()
                .filter(from_worker)
                .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
                .collect(),
        ),
        (
            "dead-letter queue",
            world
                .dead_letters()
                .await
                .iter()
                .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
                .collect(),
        ),
    ];
    for secret in &secrets {
        for form in [secret.clone(), STANDARD.encode(secret), URL_SAFE_NO_PAD.encode(secret)] {
            for (place, text) in &haystacks {
                assert!(
                    !text.contains(form.as_str()),
                    "a secret the server issued appears in the {place}"
                );
            }
        }
    }
    world.teardown().await;
}
