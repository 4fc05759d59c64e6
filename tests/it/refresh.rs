//! Keeping tokens alive: storms collapse into one refresh, the built-in schedule, backoff,
//! dead grants, and fencing of late results.

use std::collections::BTreeSet;

use praisma_worker::bus::hub_client::Received;
use serde_json::{Value, json};

use crate::common::{Options, WAIT, World};

fn expiring(world: &World, channel: &str) -> Value {
    world.event("TokenExpiring", json!({ "channel_id": channel }))
}

/// As if time had passed since the last refresh: asks for one and returns the answer.
async fn refresh_now(world: &World, channel: &str) -> Received {
    world.age_tokens(channel).await;
    world.request(&expiring(world, channel)).await
}

/// The grant is alive: one more refresh rotates the refresh token, and nothing was replayed.
async fn assert_grant_alive(world: &World, channel: &str) {
    let again = refresh_now(world, channel).await;
    assert_eq!(again.event_type(), "TokenRefreshed", "{:?}", again.event);
    assert_eq!(again.event["data"]["refresh_token_rotated"], true);
    assert_eq!(world.peer.replays().await, 0, "no refresh token was replayed");
}

fn finals_for<'a>(all: &'a [Received], ids: &BTreeSet<String>) -> Vec<&'a Received> {
    all.iter()
        .filter(|r| !r.via_reply && !r.is_audit())
        .filter(|r| r.event["correlationid"].as_str().is_some_and(|c| ids.contains(c)))
        .filter(|r| {
            matches!(r.event_type(), "TokenRefreshed" | "ConnectionReauthRequired")
                || r.event["data"]["retryable"] == false
        })
        .collect()
}

#[tokio::test]
async fn a_storm_of_token_expiring_on_two_worker_processes_makes_one_refresh_call() {
    let mut world = World::spawn().await;
    let (established, _) = world.connect_channel("page-1", &["profile.read"], &[]).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    // Two worker processes share the queue and the database; the in-process worker steps aside.
    world.start_worker_process().await;
    world.start_worker_process().await;
    world.join_first_worker().await;
    world.age_tokens("page-1").await;
    world.peer.inject(json!([{ "delay_ms": 300 }])).await;

    let storm: Vec<Value> = (0..50).map(|_| expiring(&world, "page-1")).collect();
    for event in &storm {
        world.hub.publish(event, false).await.unwrap();
    }
    let ids: BTreeSet<String> = storm.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let all_answered = world
        .hub
        .wait_until(WAIT, |all| finals_for(all, &ids).len() >= 50)
        .await;
    assert!(all_answered, "every TokenExpiring is answered");
    let received = world.hub.received();
    let finals = finals_for(&received, &ids);
    assert!(
        finals.iter().all(|r| r.event_type() == "TokenRefreshed"),
        "all refreshed"
    );
    assert_eq!(
        world.peer.refreshes().await,
        1,
        "exactly one refresh call reached the server"
    );
    assert_eq!(world.peer.replays().await, 0, "no refresh token was replayed");

    // The channel still works, and so does its grant.
    let access = world.stored_token("page-1", "access").await.unwrap();
    assert!(world.peer.api_accepts(&access).await);
    assert_grant_alive(&world, "page-1").await;
    assert_eq!(world.peer.refreshes().await, 2);
    world.teardown().await;
}

#[tokio::test]
async fn a_burst_of_mixed_token_expiring_gives_each_event_its_own_answer_once() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.connect_channel("page-2", &["profile.read"], &[]).await;
    world.age_tokens("page-1").await;
    world.peer.inject(json!([{ "delay_ms": 200 }])).await;
    // Published back to back, so the worker writes them in shared batches: a refresh to join
    // three times, a channel that is fresh, one that does not exist, and a redelivered copy.
    let burst: Vec<Value> = vec![
        expiring(&world, "page-1"),
        expiring(&world, "page-2"),
        expiring(&world, "page-1"),
        expiring(&world, "no-such-page"),
        expiring(&world, "page-1"),
    ];
    for event in burst.iter().chain([&burst[0]]) {
        world.hub.publish(event, false).await.unwrap();
    }
    let ids: BTreeSet<String> = burst.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert!(
        world
            .hub
            .wait_until(WAIT, |all| finals_for(all, &ids).len() >= ids.len())
            .await,
        "every event is answered"
    );
    let received = world.hub.received();
    let finals = finals_for(&received, &ids);
    let answer_to = |event: &Value| {
        let mine: Vec<&&Received> = finals
            .iter()
            .filter(|r| r.event["correlationid"] == event["id"])
            .collect();
        let outcome_ids: BTreeSet<&str> = mine.iter().filter_map(|r| r.event["id"].as_str()).collect();
        assert_eq!(
            outcome_ids.len(),
            1,
            "one outcome (perhaps delivered again) for {}",
            event["id"]
        );
        mine[0].event.clone()
    };
    for event in [&burst[0], &burst[2], &burst[4]] {
        let answer = answer_to(event);
        assert_eq!(answer["type"], "TokenRefreshed");
        assert_eq!(
            answer["data"]["refresh_token_rotated"], true,
            "they share the one refresh"
        );
    }
    let fresh = answer_to(&burst[1]);
    assert_eq!(fresh["type"], "TokenRefreshed");
    assert_eq!(
        fresh["data"]["attempts"], 0,
        "a fresh token is described without a call"
    );
    let unknown = answer_to(&burst[3]);
    assert_eq!(unknown["type"], "TokenRefreshFailed");
    assert_eq!(unknown["data"]["error_code"], "not_found");
    assert_eq!(world.peer.refreshes().await, 1, "one refresh call for page-1");
    assert_eq!(world.peer.replays().await, 0);
    let rejected = world
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'token.refresh_failed' AND outcome = 'rejected' AND channel_id = ''",
            vec![],
        )
        .await;
    assert_eq!(rejected, 1, "the unknown channel's refusal is audited once");
    world.teardown().await;
}

#[tokio::test]
async fn a_token_refreshed_moments_ago_is_described_without_a_call() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let answer = world.request(&expiring(&world, "page-1")).await;
    assert_eq!(answer.event_type(), "TokenRefreshed");
    assert_eq!(answer.event["data"]["attempts"], 0);
    assert!(answer.event["data"]["expires_at"].is_string());
    assert_eq!(world.peer.refreshes().await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn the_built_in_schedule_refreshes_a_short_lived_token_unasked() {
    let world = World::spawn_with(Options {
        access_ttl_secs: 4,
        ..Options::default()
    })
    .await;
    let (established, _) = world.connect_channel("page-1", &["profile.read"], &[]).await;
    let first_expiry = established.event["data"]["expires_at"].as_str().unwrap().to_owned();
    let refreshed = world
        .hub
        .wait_for(WAIT, |r| {
            r.event_type() == "TokenRefreshed" && r.event["correlationid"].is_null()
        })
        .await
        .expect("the worker refreshed on its own");
    assert!(refreshed.event["data"]["expires_at"].as_str().unwrap() > first_expiry.as_str());
    assert!(world.peer.refreshes().await >= 1);
    assert_eq!(world.peer.replays().await, 0);
    let access = world.stored_token("page-1", "access").await.unwrap();
    assert!(world.peer.api_accepts(&access).await);
    world.teardown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_and_reported() {
    let world = World::spawn_with(Options {
        vars: vec![
            ("PRAISMA_HTTP_TIMEOUT_MS", "1000".into()),
            ("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into()),
            ("PRAISMA_REFRESH_RETRY_MAX_MS", "400".into()),
        ],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.age_tokens("page-1").await;
    world
        .peer
        .inject(json!([
            { "status": 503, "retry_after": 1 },
            { "status": 429, "retry_after": 1, "body": "{\"error\":\"slow_down\"}" },
            { "reset": true },
            { "delay_ms": 1500, "status": 503 },
            { "status": 200, "content_type": "text/html", "body": "<html>oops</html>" },
        ]))
        .await;
    let event = expiring(&world, "page-1");
    let answer = world.request(&event).await;
    assert_eq!(answer.event_type(), "TokenRefreshed", "{:?}", answer.event);
    assert_eq!(answer.event["data"]["attempts"], 6);

    let id = event["id"].as_str().unwrap();
    let received = world.hub.received();
    let failures: Vec<&Received> = received
        .iter()
        .filter(|r| !r.via_reply && r.event_type() == "TokenRefreshFailed" && r.event["correlationid"] == id)
        .collect();
    let codes: Vec<&str> = failures
        .iter()
        .map(|r| r.event["data"]["error_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "provider_unavailable",
            "rate_limited",
            "provider_unavailable",
            "timeout",
            "provider_unavailable"
        ]
    );
    for (n, failure) in failures.iter().enumerate() {
        assert_eq!(failure.event["data"]["retryable"], true);
        assert_eq!(failure.event["data"]["attempts"], n + 1);
        assert!(failure.event["data"]["next_attempt_at"].is_string());
    }
    // Retry-After: 1 is honoured.
    let waited = |r: &Received| {
        let sent = chrono::DateTime::parse_from_rfc3339(r.event["time"].as_str().unwrap()).unwrap();
        let next = chrono::DateTime::parse_from_rfc3339(r.event["data"]["next_attempt_at"].as_str().unwrap()).unwrap();
        (next - sent).num_milliseconds()
    };
    assert!(
        waited(failures[0]) >= 950 && waited(failures[1]) >= 950,
        "Retry-After is honoured"
    );
    assert_eq!(world.peer.replays().await, 0);
    let access = world.stored_token("page-1", "access").await.unwrap();
    assert!(world.peer.api_accepts(&access).await);
    world.teardown().await;
}

#[tokio::test]
async fn a_dead_grant_halts_the_channel_and_stops_calling_the_platform() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    // A post scheduled for later: the dead grant must cancel it.
    let mut scheduled = world.event(
        "OperationRequested",
        json!({ "channel_id": "page-1", "capability": "profile.read", "request": { "method": "GET", "path": "me" } }),
    );
    scheduled["data"]["run_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    world.hub.publish(&scheduled, false).await.unwrap();
    assert!(
        world
            .wait_count(
                "SELECT count(*) FROM jobs WHERE kind = 'operation' AND status = 'pending'",
                1
            )
            .await
    );
    let operation_job: uuid::Uuid = world
        .query("SELECT id FROM jobs WHERE kind = 'operation'", vec![])
        .await[0]
        .try_get("", "id")
        .unwrap();
    // The user removed the app at the platform.
    let refresh = world.stored_token("page-1", "refresh").await.unwrap();
    world.peer.revoke(&refresh).await;
    let answer = refresh_now(&world, "page-1").await;
    assert_eq!(answer.event_type(), "ConnectionReauthRequired", "{:?}", answer.event);
    assert_eq!(answer.event["data"]["error_code"], "invalid_grant");
    assert_eq!(
        answer.event["data"]["cancelled_jobs"],
        json!([operation_job.to_string()])
    );
    let cancelled = world
        .hub
        .outcome(scheduled["id"].as_str().unwrap(), WAIT)
        .await
        .expect("the scheduled operation is answered");
    assert_eq!(cancelled.event["data"]["error_code"], "reauth_required");
    let status = world.query("SELECT status FROM channels", vec![]).await;
    assert_eq!(status[0].try_get::<String>("", "status").unwrap(), "reauth_required");
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')",
                vec![]
            )
            .await,
        0
    );

    let calls = world.peer.token_calls().await;
    let later = world.request(&expiring(&world, "page-1")).await;
    assert_eq!(later.event_type(), "TokenRefreshFailed");
    assert_eq!(later.event["data"]["error_code"], "reauth_required");
    assert_eq!(
        world.peer.token_calls().await,
        calls,
        "no further platform calls for the channel"
    );

    // A new consent brings it back.
    let (established, _) = world.connect_channel("page-1", &["profile.read"], &[]).await;
    assert_eq!(established.event_type(), "ConnectionEstablished");
    world.teardown().await;
}

#[tokio::test]
async fn a_refresh_that_returns_after_a_reconnect_writes_nothing() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.age_tokens("page-1").await;
    world.peer.inject(json!([{ "delay_ms": 1500 }])).await;
    let event = expiring(&world, "page-1");
    world.hub.publish(&event, false).await.unwrap();
    assert!(
        world
            .wait_count("SELECT count(*) FROM jobs WHERE status = 'running'", 1)
            .await
    );

    // While the refresh is out, the user connects the channel again.
    let (reconnected, _) = world
        .connect_channel("page-1", &["profile.read", "posts.read"], &[])
        .await;
    assert_eq!(reconnected.event_type(), "ConnectionEstablished");
    let access_after_reconnect = world.stored_token("page-1", "access").await.unwrap();

    let answer = world
        .hub
        .outcome(event["id"].as_str().unwrap(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(answer.event_type(), "TokenRefreshed");
    assert_eq!(
        answer.event["data"]["expires_at"], reconnected.event["data"]["expires_at"],
        "it describes the current token"
    );
    assert_eq!(
        world.stored_token("page-1", "access").await.unwrap(),
        access_after_reconnect,
        "the late result was discarded"
    );
    assert_eq!(world.count("SELECT token_version FROM channels", vec![]).await, 2);
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'token.refresh_discarded'",
                vec![]
            )
            .await,
        1
    );
    assert!(world.peer.api_accepts(&access_after_reconnect).await);
    world.teardown().await;
}

#[tokio::test]
async fn a_refresh_that_returns_after_the_channel_was_revoked_revives_nothing() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.age_tokens("page-1").await;
    let access_before = world.stored_token("page-1", "access").await.unwrap();
    world.peer.inject(json!([{ "delay_ms": 1000 }])).await;
    let event = expiring(&world, "page-1");
    world.hub.publish(&event, false).await.unwrap();
    assert!(
        world
            .wait_count("SELECT count(*) FROM jobs WHERE status = 'running'", 1)
            .await
    );
    world
        .query("UPDATE channels SET status = 'revoked', revoked_at = now()", vec![])
        .await;

    let answer = world
        .hub
        .outcome(event["id"].as_str().unwrap(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(answer.event_type(), "TokenRefreshFailed");
    assert_eq!(answer.event["data"]["error_code"], "connection_revoked");
    let status = world.query("SELECT status FROM channels", vec![]).await;
    assert_eq!(status[0].try_get::<String>("", "status").unwrap(), "revoked");
    assert_eq!(world.stored_token("page-1", "access").await.unwrap(), access_before);
    world.teardown().await;
}

#[tokio::test]
async fn a_response_without_a_refresh_token_keeps_the_stored_one() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let refresh_before = world.stored_token("page-1", "refresh").await.unwrap();
    world.peer.inject(json!([{ "strip_refresh_token": true }])).await;
    let answer = refresh_now(&world, "page-1").await;
    assert_eq!(answer.event_type(), "TokenRefreshed");
    assert_eq!(answer.event["data"]["refresh_token_rotated"], false);
    assert_eq!(world.stored_token("page-1", "refresh").await.unwrap(), refresh_before);

    // The kept refresh token still works.
    assert_grant_alive(&world, "page-1").await;
    world.teardown().await;
}

#[tokio::test]
async fn token_expiring_for_unknown_or_foreign_channels_calls_nobody() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let unknown = world.request(&expiring(&world, "page-404")).await;
    assert_eq!(unknown.event_type(), "TokenRefreshFailed");
    assert_eq!(unknown.event["data"]["error_code"], "not_found");
    let mut foreign = expiring(&world, "page-1");
    foreign["tenantid"] = json!("tenant_other");
    let foreign = world.request(&foreign).await;
    assert_eq!(foreign.event["data"]["error_code"], "not_found");
    assert_eq!(world.peer.refreshes().await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn a_platform_without_refresh_tokens_is_renewed_by_trading_the_access_token() {
    let world = World::spawn_with(Options {
        sandbox: true,
        ..Options::default()
    })
    .await;
    let callback = world
        .consent_callback_via("sandbox_meta", "page-1", &["profile.read"], &[])
        .await;
    let established = world.request(&world.connect_request(&callback)).await;
    assert_eq!(
        established.event_type(),
        "ConnectionEstablished",
        "{:?}",
        established.event
    );
    assert!(
        world.stored_token("page-1", "refresh").await.is_none(),
        "Meta issues no refresh token"
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM jobs WHERE kind = 'refresh' AND status = 'pending'",
                vec![]
            )
            .await,
        1,
        "the built-in schedule still keeps the token alive"
    );
    let before = world.stored_token("page-1", "access").await.unwrap();

    let answer = refresh_now(&world, "page-1").await;
    assert_eq!(answer.event_type(), "TokenRefreshed", "{:?}", answer.event);
    assert_eq!(answer.event["data"]["refresh_token_rotated"], false);
    let sandbox = world.sandbox.as_ref().unwrap();
    assert_eq!(sandbox.renewals(), 1, "one fb_exchange_token call");
    let after = world.stored_token("page-1", "access").await.unwrap();
    assert_ne!(before, after);
    let expires: chrono::DateTime<chrono::Utc> = answer.event["data"]["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires > chrono::Utc::now() + chrono::Duration::days(59),
        "a long-lived token"
    );
    let me = reqwest::Client::new()
        .get(format!("{}/api/me", sandbox.base_url()))
        .bearer_auth(&after)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    world.teardown().await;
}
