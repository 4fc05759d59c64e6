//! Consent → connect against the real authorization server.

use praisma_worker::domain::{ChannelId, TenantId};
use praisma_worker::vault::{Binding, Sealed, SecretKind};
use serde_json::json;

use crate::common::{QUIET, REDIRECT_URI, WAIT, World};

#[tokio::test]
async fn a_user_connects_a_channel_and_the_worker_holds_working_encrypted_tokens() {
    let world = World::spawn().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut consent = world.consent_request("page-1", &["profile.read", "posts.publish"]);
    consent["traceparent"] = json!(traceparent);
    world.hub.publish(&consent, true).await.unwrap();
    let issued = world
        .hub
        .reply(consent["id"].as_str().unwrap(), WAIT)
        .await
        .expect("ConsentUrlIssued on reply_to");
    assert_eq!(issued.event_type(), "ConsentUrlIssued");
    let data = &issued.event["data"];
    assert_eq!(
        data["requested_scopes"],
        json!(["posts.read", "posts.write", "user.read"])
    );
    let url = url::Url::parse(data["authorization_url"].as_str().unwrap()).unwrap();
    let query: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query["scope"], "posts.read posts.write user.read",
        "exactly the capabilities' scopes"
    );
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["redirect_uri"], REDIRECT_URI);
    assert_eq!(query["state"], data["state"].as_str().unwrap());
    assert!(query["state"].len() >= 43, "a 256-bit state");
    // The worker's span continues the caller's trace.
    let outcome_trace = issued.event["traceparent"].as_str().unwrap();
    assert!(outcome_trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(!outcome_trace.contains("00f067aa0ba902b7"));

    let callback = world.user_consents(url.as_str(), &[], false).await;
    let connect = world.connect_request(&callback);
    world.hub.publish(&connect, true).await.unwrap();
    let established = world
        .hub
        .reply(connect["id"].as_str().unwrap(), WAIT)
        .await
        .expect("an answer on reply_to");
    assert_eq!(
        established.event_type(),
        "ConnectionEstablished",
        "{:?}",
        established.event
    );
    let data = &established.event["data"];
    assert_eq!(data["channel_id"], "page-1");
    assert_eq!(
        data["granted_scopes"],
        json!(["posts.read", "posts.write", "user.read"])
    );
    assert_eq!(data["missing_scopes"], json!([]));
    assert_eq!(data["capabilities"], json!(["profile.read", "posts.publish"]));
    assert!(data["expires_at"].is_string());
    // The same outcome, with the same id, on the exchange.
    let on_exchange = world.hub.outcome(connect["id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(on_exchange.event["id"], established.event["id"]);
    assert_eq!(on_exchange.routing_key, "integration.connection.established");

    // The stored access token is real: decrypted with the vault, the platform's API accepts it.
    let tenant = TenantId::parse(world.tenant.clone()).unwrap();
    let channel = ChannelId::parse("page-1").unwrap();
    let rows = world
        .query(
            "SELECT t.kind, t.key_id, t.nonce, t.ciphertext FROM channel_tokens t JOIN channels c ON c.id = t.channel_pk
             WHERE c.tenant_id = $1 AND c.channel_id = 'page-1' ORDER BY t.kind",
            vec![world.tenant.clone().into()],
        )
        .await;
    assert_eq!(rows.len(), 2, "an access and a refresh token");
    let sealed = |row: &sea_orm::QueryResult| Sealed {
        key_id: row.try_get("", "key_id").unwrap(),
        nonce: row.try_get("", "nonce").unwrap(),
        ciphertext: row.try_get("", "ciphertext").unwrap(),
    };
    let binding = Binding {
        tenant: &tenant,
        channel: &channel,
        kind: SecretKind::AccessToken,
        context: "",
    };
    let access = world
        .vault
        .open(&binding, &sealed(&rows[0]))
        .expect("the access token opens");
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", world.peer.issuer))
        .bearer_auth(access.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // The audit chain: started, then granted, each linked to its predecessor.
    let audit = world
        .query(
            "SELECT sequence, action, prev_hash, hash FROM audit_log WHERE tenant_id = $1 AND channel_id = 'page-1' ORDER BY sequence",
            vec![world.tenant.clone().into()],
        )
        .await;
    let actions: Vec<String> = audit.iter().map(|r| r.try_get("", "action").unwrap()).collect();
    assert_eq!(actions, ["authorization.started", "authorization.granted"]);
    let first_hash: Vec<u8> = audit[0].try_get("", "hash").unwrap();
    let second_prev: Vec<u8> = audit[1].try_get("", "prev_hash").unwrap();
    assert_eq!(first_hash, second_prev);
    let audited = world
        .hub
        .wait_for(WAIT, |r| r.routing_key == "audit.integration.authorization.granted")
        .await;
    assert_eq!(audited.unwrap().event["data"]["sequence"], 2);
    // The verifier is destroyed once the exchange no longer needs it.
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM authorizations WHERE verifier_ciphertext IS NOT NULL",
                vec![]
            )
            .await,
        0
    );
    world.teardown().await;
}

#[tokio::test]
async fn a_partial_grant_reports_the_missing_scopes_and_capabilities() {
    let world = World::spawn().await;
    let (established, _) = world
        .connect_channel("page-2", &["profile.read", "posts.publish"], &["posts.write"])
        .await;
    assert_eq!(
        established.event_type(),
        "ConnectionEstablished",
        "{:?}",
        established.event
    );
    let data = &established.event["data"];
    assert_eq!(data["granted_scopes"], json!(["posts.read", "user.read"]));
    assert_eq!(data["missing_scopes"], json!(["posts.write"]));
    assert_eq!(data["capabilities"], json!(["profile.read"]));
    let granted = world
        .query(
            "SELECT granted_scopes FROM channels WHERE tenant_id = $1",
            vec![world.tenant.clone().into()],
        )
        .await;
    assert_eq!(
        granted[0].try_get::<serde_json::Value>("", "granted_scopes").unwrap(),
        json!(["posts.read", "user.read"])
    );
    world.teardown().await;
}

#[tokio::test]
async fn a_user_who_refuses_gets_consent_denied() {
    let world = World::spawn().await;
    let issued = world.request(&world.consent_request("page-3", &["profile.read"])).await;
    let url = issued.event["data"]["authorization_url"].as_str().unwrap();
    let callback = world.user_consents(url, &[], true).await;
    assert_eq!(callback.get("error"), Some("access_denied"));
    let refused = world.event(
        "ConnectRequested",
        json!({ "state": callback.get("state"), "error": "access_denied", "error_description": callback.get("error_description") }),
    );
    let failed = world.request(&refused).await;
    assert_eq!(failed.event_type(), "ConnectionFailed");
    assert_eq!(failed.event["data"]["error_code"], "consent_denied");
    assert_eq!(failed.event["data"]["retryable"], false);
    assert_eq!(failed.event["data"]["channel_id"], "page-3");
    assert_eq!(world.peer.token_calls().await, 0);
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'authorization.denied'",
                vec![]
            )
            .await,
        1
    );
    assert_eq!(world.count("SELECT count(*) FROM channels", vec![]).await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn a_replayed_state_is_refused_without_calling_the_platform() {
    let world = World::spawn().await;
    let (established, callback) = world.connect_channel("page-4", &["profile.read"], &[]).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    // Same callback, new event id: an attacker replaying it, or a double-submitted form.
    let replay = world.request(&world.connect_request(&callback)).await;
    assert_eq!(replay.event_type(), "ConnectionFailed");
    assert_eq!(replay.event["data"]["error_code"], "state_reused");
    assert_eq!(
        world.peer.token_calls().await,
        1,
        "only the first callback reached the token endpoint"
    );
    world.teardown().await;
}

#[tokio::test]
async fn an_expired_state_is_refused_without_calling_the_platform() {
    let world = World::spawn().await;
    let callback = world.consent_callback("page-5", &["profile.read"], &[]).await;
    // The user took longer than the state's lifetime.
    world
        .query(
            "UPDATE authorizations SET expires_at = now() - interval '1 second'",
            vec![],
        )
        .await;
    let failed = world.request(&world.connect_request(&callback)).await;
    assert_eq!(failed.event["data"]["error_code"], "state_expired");
    assert_eq!(world.peer.token_calls().await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn another_tenants_state_is_unknown_and_leaks_nothing() {
    let world = World::spawn().await;
    let callback = world.consent_callback("page-6", &["profile.read"], &[]).await;
    let mut foreign = world.connect_request(&callback);
    foreign["tenantid"] = json!("tenant_other");
    let failed = world.request(&foreign).await;
    assert_eq!(failed.event["tenantid"], "tenant_other");
    assert_eq!(failed.event["data"]["error_code"], "state_unknown");
    assert_eq!(
        failed.event["data"]["channel_id"],
        serde_json::Value::Null,
        "nothing of the other tenant is revealed"
    );
    assert_eq!(world.peer.token_calls().await, 0);
    // The rightful tenant can still complete its consent.
    let established = world.request(&world.connect_request(&callback)).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    world.teardown().await;
}

#[tokio::test]
async fn consent_requests_outside_the_catalogue_are_refused_with_their_codes() {
    let world = World::spawn().await;
    let cases = [
        (
            json!({ "channel_id": "c", "provider": "oidc_test", "capabilities": ["profile.read"], "redirect_uri": "https://evil.example/cb" }),
            "redirect_uri_not_allowed",
        ),
        (
            json!({ "channel_id": "c", "provider": "myspace", "capabilities": ["profile.read"], "redirect_uri": REDIRECT_URI }),
            "unknown_provider",
        ),
        (
            json!({ "channel_id": "c", "provider": "x", "capabilities": ["profile.read"], "redirect_uri": REDIRECT_URI }),
            "unknown_provider",
        ),
        (
            json!({ "channel_id": "c", "provider": "oidc_test", "capabilities": ["ads.manage"], "redirect_uri": REDIRECT_URI }),
            "unknown_capability",
        ),
    ];
    for (data, code) in cases {
        let failed = world.request(&world.event("ConsentUrlRequested", data)).await;
        assert_eq!(failed.event_type(), "ConnectionFailed");
        assert_eq!(failed.event["data"]["error_code"], code);
    }
    assert_eq!(world.count("SELECT count(*) FROM authorizations", vec![]).await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn a_duplicate_event_has_one_effect_and_the_same_outcome_id() {
    let world = World::spawn().await;
    let callback = world.consent_callback("page-7", &["profile.read"], &[]).await;
    let connect = world.connect_request(&callback);
    let first = world.request(&connect).await;
    assert_eq!(first.event_type(), "ConnectionEstablished");
    world.hub.publish(&connect, false).await.unwrap();
    let id = first.event["id"].clone();
    let twice = world
        .hub
        .wait_until(WAIT, |all| {
            all.iter().filter(|r| !r.is_audit() && r.event["id"] == id).count() == 2
        })
        .await;
    assert!(twice, "the recorded outcome is published again");
    assert!(
        !world
            .hub
            .wait_until(QUIET, |all| all.iter().any(|r| r.event_type() == "ConnectionFailed"))
            .await,
        "the duplicate is not treated as a replayed state"
    );
    assert_eq!(world.peer.token_calls().await, 1);
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'authorization.granted'",
                vec![]
            )
            .await,
        1
    );
    assert_eq!(world.count("SELECT token_version FROM channels", vec![]).await, 1);
    world.teardown().await;
}
