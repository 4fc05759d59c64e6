//! Disconnecting: nothing of the channel runs again, the platform is told where it can be, the
//! tokens are destroyed, and the history stays.

use serde_json::{Value, json};

use crate::common::{Options, WAIT, World};

fn revoke(world: &World, channel: &str, origin: &str) -> Value {
    world.event(
        "RevokeRequested",
        json!({ "channel_id": channel, "origin": origin, "reason": "user clicked disconnect" }),
    )
}

async fn status(world: &World) -> String {
    world.query("SELECT status FROM channels", vec![]).await[0]
        .try_get("", "status")
        .unwrap()
}

#[tokio::test]
async fn revoking_a_connected_channel_tells_the_platform_and_destroys_the_tokens_but_keeps_history() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let refresh = world.stored_token("page-1", "refresh").await.unwrap();
    let access = world.stored_token("page-1", "access").await.unwrap();
    let scheduled = world
        .query("SELECT id FROM jobs WHERE status = 'pending'", vec![])
        .await;
    let refresh_job: uuid::Uuid = scheduled[0].try_get("", "id").unwrap();

    let revoked = world.request(&revoke(&world, "page-1", "user")).await;
    assert_eq!(revoked.event_type(), "ConnectionRevoked", "{:?}", revoked.event);
    assert_eq!(revoked.event["data"]["origin"], "user");
    assert_eq!(revoked.event["data"]["platform_revocation"], "confirmed");
    assert_eq!(
        revoked.event["data"]["cancelled_jobs"],
        json!([refresh_job.to_string()])
    );

    assert!(
        world.peer.revocations().await >= 1,
        "the platform received the revocation"
    );
    assert!(
        !world.peer.refresh_works(&refresh).await,
        "the stored refresh token no longer works there"
    );
    assert!(!world.peer.api_accepts(&access).await);
    assert_eq!(
        world.count("SELECT count(*) FROM channel_tokens", vec![]).await,
        0,
        "no ciphertext remains"
    );
    assert_eq!(status(&world).await, "revoked");
    let job = world
        .query(
            "SELECT status, cancel_reason FROM jobs WHERE id = $1",
            vec![refresh_job.into()],
        )
        .await;
    assert_eq!(job[0].try_get::<String>("", "status").unwrap(), "cancelled");
    assert_eq!(job[0].try_get::<String>("", "cancel_reason").unwrap(), "revoked");
    let actions: Vec<String> = world
        .query(
            "SELECT action FROM audit_log WHERE channel_id = 'page-1' ORDER BY sequence",
            vec![],
        )
        .await
        .iter()
        .map(|r| r.try_get("", "action").unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "authorization.started",
            "authorization.granted",
            "connection.revoked",
            "connection.platform_revocation"
        ]
    );

    // From now on nothing of the channel runs, and the platform sees no call.
    let calls = world.peer.token_calls().await;
    let refused = world
        .request(&world.event("TokenExpiring", json!({ "channel_id": "page-1" })))
        .await;
    assert_eq!(refused.event["data"]["error_code"], "connection_revoked");
    assert_eq!(world.peer.token_calls().await, calls);
    world.teardown().await;
}

#[tokio::test]
async fn a_refresh_in_flight_during_revocation_writes_nothing() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.age_tokens("page-1").await;
    world.peer.inject(json!([{ "delay_ms": 1500 }])).await;
    let expiring = world.event("TokenExpiring", json!({ "channel_id": "page-1" }));
    world.hub.publish(&expiring, false).await.unwrap();
    assert!(
        world
            .wait_count(
                "SELECT count(*) FROM jobs WHERE kind = 'refresh' AND status = 'running'",
                1
            )
            .await
    );

    let revoked = world.request(&revoke(&world, "page-1", "security")).await;
    assert_eq!(revoked.event_type(), "ConnectionRevoked");
    let late = world
        .hub
        .outcome(expiring["id"].as_str().unwrap(), WAIT)
        .await
        .expect("the refresh is answered");
    assert_eq!(late.event_type(), "TokenRefreshFailed");
    assert_eq!(late.event["data"]["error_code"], "connection_revoked");
    assert_eq!(
        world.count("SELECT count(*) FROM channel_tokens", vec![]).await,
        0,
        "nothing was written back"
    );
    assert_eq!(status(&world).await, "revoked");
    world.teardown().await;
}

#[tokio::test]
async fn a_transient_platform_failure_is_retried_until_confirmed() {
    let world = World::spawn_with(Options {
        vars: vec![("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into())],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world
        .peer
        .inject(json!([
            // Each attempt revokes the refresh token, then the access token.
            { "endpoint": "revocation", "status": 503 }, { "endpoint": "revocation" },
            { "endpoint": "revocation", "reset": true }, { "endpoint": "revocation" },
        ]))
        .await;
    let revoked = world.request(&revoke(&world, "page-1", "user")).await;
    assert_eq!(revoked.event["data"]["platform_revocation"], "confirmed");
    assert_eq!(
        world.count("SELECT count(*) FROM audit_log WHERE action = 'connection.platform_revocation' AND outcome = 'retrying'", vec![]).await,
        2
    );
    world.teardown().await;
}

#[tokio::test]
async fn a_platform_that_keeps_failing_is_reported_and_the_local_revocation_holds() {
    let world = World::spawn_with(Options {
        vars: vec![
            ("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into()),
            ("PRAISMA_REFRESH_MAX_ATTEMPTS", "2".into()),
        ],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world
        .peer
        .inject(json!([
            // Attempt 1: refresh token refused, access token passes; attempt 2: refused again.
            { "endpoint": "revocation", "status": 503 }, { "endpoint": "revocation" },
            { "endpoint": "revocation", "status": 503 },
        ]))
        .await;
    let revoked = world.request(&revoke(&world, "page-1", "admin")).await;
    assert_eq!(revoked.event["data"]["platform_revocation"], "failed");
    assert_eq!(status(&world).await, "revoked");
    assert_eq!(world.count("SELECT count(*) FROM channel_tokens", vec![]).await, 0);
    let refused = world
        .request(&world.event("TokenExpiring", json!({ "channel_id": "page-1" })))
        .await;
    assert_eq!(refused.event["data"]["error_code"], "connection_revoked");

    // A permanent refusal is not retried.
    world.connect_channel("page-2", &["profile.read"], &[]).await;
    world
        .peer
        .inject(json!([{ "endpoint": "revocation", "status": 400, "body": "{\"error\":\"unsupported_token_type\"}" }]))
        .await;
    let before = world.peer.revocations().await;
    let revoked = world.request(&revoke(&world, "page-2", "user")).await;
    assert_eq!(revoked.event["data"]["platform_revocation"], "failed");
    assert_eq!(
        world.peer.revocations().await,
        before + 2,
        "one try for the refresh token, one for the access token"
    );
    world.teardown().await;
}

#[tokio::test]
async fn a_revocation_from_the_platform_makes_no_call_to_it() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let revoked = world.request(&revoke(&world, "page-1", "platform")).await;
    assert_eq!(revoked.event["data"]["platform_revocation"], "skipped");
    assert_eq!(world.peer.revocations().await, 0);
    assert_eq!(world.count("SELECT count(*) FROM channel_tokens", vec![]).await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn revoking_twice_another_tenants_channel_and_reconnecting() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let first = world.request(&revoke(&world, "page-1", "user")).await;
    let second = world.request(&revoke(&world, "page-1", "admin")).await;
    assert_eq!(second.event_type(), "ConnectionRevoked");
    assert_eq!(second.event["data"]["origin"], first.event["data"]["origin"]);
    assert_eq!(
        second.event["data"]["platform_revocation"],
        first.event["data"]["platform_revocation"]
    );
    assert_eq!(
        world.peer.revocations().await,
        2,
        "the platform was told once (refresh and access token)"
    );

    let mut foreign = revoke(&world, "page-1", "user");
    foreign["tenantid"] = json!("tenant_other");
    let rejected = world.request(&foreign).await;
    assert_eq!(rejected.event_type(), "RevokeRejected");
    assert_eq!(rejected.event["data"]["error_code"], "not_found");

    let (established, _) = world.connect_channel("page-1", &["profile.read"], &[]).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    let channel = world.query("SELECT status, generation FROM channels", vec![]).await;
    assert_eq!(channel[0].try_get::<String>("", "status").unwrap(), "active");
    assert_eq!(channel[0].try_get::<i32>("", "generation").unwrap(), 2, "a fresh grant");
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'authorization.granted'",
                vec![]
            )
            .await,
        2
    );
    assert_eq!(
        world
            .count("SELECT count(*) FROM jobs WHERE status = 'cancelled'", vec![])
            .await,
        1,
        "the old grant's jobs stay on record"
    );
    let access = world.stored_token("page-1", "access").await.unwrap();
    assert!(world.peer.api_accepts(&access).await);
    world.teardown().await;
}
