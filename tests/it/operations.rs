//! Platform operations: the grant is checked before every call, the platform sees only what
//! the grant covers, and its answer comes back without a token in it.

use serde_json::{Value, json};

use crate::common::{Options, QUIET, WAIT, World};

fn operation(world: &World, channel: &str, capability: &str, request: Value) -> Value {
    world.event(
        "OperationRequested",
        json!({ "channel_id": channel, "capability": capability, "request": request }),
    )
}

/// The simplest operation: read the connected user's profile.
fn read_me(world: &World, channel: &str) -> Value {
    operation(world, channel, "profile.read", json!({ "method": "GET", "path": "me" }))
}

#[tokio::test]
async fn a_granted_capability_runs_and_returns_the_platforms_answer() {
    let world = World::spawn().await;
    world
        .connect_channel("page-1", &["profile.read", "posts.publish"], &[])
        .await;
    let me = world.request(&read_me(&world, "page-1")).await;
    assert_eq!(me.event_type(), "OperationCompleted", "{:?}", me.event);
    assert_eq!(me.event["data"]["status"], 200, "{:?}", me.event["data"]["body"]);
    assert_eq!(me.event["data"]["body"]["id"], "user-1");
    assert_eq!(me.event["data"]["truncated"], false);

    let post = operation(
        &world,
        "page-1",
        "posts.publish",
        json!({ "method": "POST", "path": "/posts", "body": { "text": "hello" } }),
    );
    let posted = world.request(&post).await;
    assert_eq!(posted.event["data"]["status"], 201);
    assert_eq!(posted.event["data"]["body"]["text"], "hello");

    // A platform answer that carries tokens (Meta's page listing does) loses them on the way out.
    let pages = world
        .request(&operation(
            &world,
            "page-1",
            "profile.read",
            json!({ "method": "GET", "path": "pages" }),
        ))
        .await;
    assert_eq!(pages.event["data"]["body"]["data"][0]["access_token"], "[redacted]");
    assert_eq!(pages.event["data"]["body"]["data"][0]["name"], "A Page");
    assert!(!String::from_utf8_lossy(&pages.raw).contains("EAAPAGETOKENVALUE"));
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'operation.completed'",
                vec![]
            )
            .await,
        3
    );
    world.teardown().await;
}

#[tokio::test]
async fn an_ungranted_capability_is_refused_the_same_way_every_time_without_a_call() {
    let world = World::spawn().await;
    world
        .connect_channel("page-1", &["profile.read", "posts.publish"], &["posts.write"])
        .await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let event = operation(
            &world,
            "page-1",
            "posts.publish",
            json!({ "method": "POST", "path": "posts", "body": {} }),
        );
        answers.push(world.request(&event).await.event["data"].clone());
    }
    for data in &answers {
        assert_eq!(data["error_code"], "scope_not_granted");
        assert_eq!(data["missing_scopes"], json!(["posts.write"]));
        assert_eq!(data["capability"], "posts.publish");
    }
    assert_eq!(
        answers[0], answers[2],
        "the same request against the same grant gets the same answer"
    );
    assert_eq!(world.peer.api_calls().await, 0, "the platform API saw no call");
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'operation.rejected'",
                vec![]
            )
            .await,
        3
    );
    world.teardown().await;
}

#[tokio::test]
async fn foreign_revoked_and_unknown_are_refused_before_the_platform() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world.connect_channel("page-2", &["profile.read"], &[]).await;
    let me = json!({ "method": "GET", "path": "me" });

    let mut foreign = operation(&world, "page-1", "profile.read", me.clone());
    foreign["tenantid"] = json!("tenant_other");
    assert_eq!(world.request(&foreign).await.event["data"]["error_code"], "not_found");
    let unknown = world
        .request(&operation(&world, "page-1", "ads.manage", me.clone()))
        .await;
    assert_eq!(unknown.event["data"]["error_code"], "unknown_capability");
    world
        .request(&world.event(
            "RevokeRequested",
            json!({ "channel_id": "page-2", "origin": "platform" }),
        ))
        .await;
    let revoked = world.request(&operation(&world, "page-2", "profile.read", me)).await;
    assert_eq!(revoked.event["data"]["error_code"], "connection_revoked");
    assert_eq!(world.peer.api_calls().await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn hostile_paths_never_leave_the_providers_api() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let paths = [
        "https://evil.example/me",
        "//evil.example/me",
        "../token",
        "me/%2e%2e/%2e%2e/token",
        "me\r\nHost: evil.example",
        "me?x=1",
    ];
    for path in paths {
        let event = operation(
            &world,
            "page-1",
            "profile.read",
            json!({ "method": "GET", "path": path }),
        );
        let answer = world.request(&event).await;
        assert_eq!(answer.event["data"]["error_code"], "invalid_request", "{path:?}");
    }
    let method = operation(
        &world,
        "page-1",
        "profile.read",
        json!({ "method": "CONNECT", "path": "me" }),
    );
    assert_eq!(
        world.request(&method).await.event["data"]["error_code"],
        "invalid_request"
    );
    assert_eq!(world.peer.api_calls().await, 0);
    world.teardown().await;
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_the_call_retried() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world
        .peer
        .inject(json!([{ "endpoint": "api", "status": 401, "body": "{\"error\":\"invalid_token\"}" }]))
        .await;
    let answer = world.request(&read_me(&world, "page-1")).await;
    assert_eq!(answer.event_type(), "OperationCompleted");
    assert_eq!(answer.event["data"]["status"], 200);
    assert_eq!(
        world.peer.refreshes().await,
        1,
        "one refresh, through the single-flight job"
    );
    assert_eq!(world.peer.api_calls().await, 2);
    world.teardown().await;
}

#[tokio::test]
async fn a_response_over_the_cap_is_truncated_and_marked() {
    let world = World::spawn_with(Options {
        vars: vec![("PRAISMA_OPERATION_MAX_BODY_BYTES", "65536".into())],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let answer = world
        .request(&operation(
            &world,
            "page-1",
            "profile.read",
            json!({ "method": "GET", "path": "big" }),
        ))
        .await;
    assert_eq!(answer.event["data"]["status"], 200);
    assert_eq!(answer.event["data"]["truncated"], true);
    assert_eq!(answer.event["data"]["body"].as_str().unwrap().len(), 65536);
    world.teardown().await;
}

#[tokio::test]
async fn a_scheduled_operation_runs_when_due_or_is_cancelled_by_revocation() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let run_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let mut due = read_me(&world, "page-1");
    due["data"]["run_at"] = json!(run_at.to_rfc3339());
    let answer = world.request(&due).await;
    assert_eq!(answer.event_type(), "OperationCompleted");
    let answered_at = chrono::DateTime::parse_from_rfc3339(answer.event["time"].as_str().unwrap()).unwrap();
    assert!(answered_at >= run_at, "it ran when due, not before");
    assert_eq!(world.peer.api_calls().await, 1);

    let mut later = read_me(&world, "page-1");
    later["data"]["run_at"] = json!((chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339());
    world.hub.publish(&later, false).await.unwrap();
    assert!(
        world
            .wait_count(
                "SELECT count(*) FROM jobs WHERE kind = 'operation' AND status = 'pending'",
                1
            )
            .await
    );
    let job: uuid::Uuid = world
        .query(
            "SELECT id FROM jobs WHERE kind = 'operation' AND status = 'pending'",
            vec![],
        )
        .await[0]
        .try_get("", "id")
        .unwrap();
    let revoked = world
        .request(&world.event("RevokeRequested", json!({ "channel_id": "page-1", "origin": "user" })))
        .await;
    assert!(
        revoked.event["data"]["cancelled_jobs"]
            .as_array()
            .unwrap()
            .contains(&json!(job.to_string()))
    );
    let cancelled = world
        .hub
        .outcome(later["id"].as_str().unwrap(), WAIT)
        .await
        .expect("the scheduled operation is answered");
    assert_eq!(cancelled.event_type(), "OperationRejected");
    assert_eq!(cancelled.event["data"]["error_code"], "connection_revoked");
    assert_eq!(world.peer.api_calls().await, 1, "the cancelled operation never ran");
    world.teardown().await;
}

#[tokio::test]
async fn a_redelivered_operation_calls_the_platform_once() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["posts.publish"], &[]).await;
    let event = operation(
        &world,
        "page-1",
        "posts.publish",
        json!({ "method": "POST", "path": "posts", "body": { "text": "once" } }),
    );
    let first = world.request(&event).await;
    world.hub.publish(&event, false).await.unwrap();
    let id = first.event["id"].clone();
    assert!(
        world
            .hub
            .wait_until(WAIT, |all| all
                .iter()
                .filter(|r| r.event["id"] == id && !r.via_reply)
                .count()
                == 2)
            .await
    );
    assert!(
        !world
            .hub
            .wait_until(QUIET, |all| all
                .iter()
                .filter(|r| r.event_type() == "OperationCompleted")
                .count()
                > 2)
            .await
    );
    assert_eq!(world.peer.api_calls().await, 1);
    world.teardown().await;
}

#[tokio::test]
async fn a_throttled_call_is_reported_or_retried_when_the_request_allows_it() {
    let world = World::spawn_with(Options {
        vars: vec![("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into())],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    world
        .peer
        .inject(json!([{ "endpoint": "api", "status": 429, "retry_after": 1 }]))
        .await;
    let reported = world.request(&read_me(&world, "page-1")).await;
    assert_eq!(reported.event_type(), "OperationCompleted");
    assert_eq!(
        reported.event["data"]["status"], 429,
        "without `retryable` the platform's answer is reported"
    );

    world
        .peer
        .inject(json!([{ "endpoint": "api", "status": 503 }, { "endpoint": "api", "status": 429, "retry_after": 1 }]))
        .await;
    let mut retryable = read_me(&world, "page-1");
    retryable["data"]["retryable"] = json!(true);
    let sent = chrono::Utc::now();
    let answer = world.request(&retryable).await;
    assert_eq!(answer.event_type(), "OperationCompleted");
    assert_eq!(answer.event["data"]["status"], 200, "retried until it went through");
    let answered = chrono::DateTime::parse_from_rfc3339(answer.event["time"].as_str().unwrap()).unwrap();
    assert!(
        answered.with_timezone(&chrono::Utc) - sent >= chrono::Duration::milliseconds(950),
        "Retry-After was honoured"
    );
    assert_eq!(world.peer.api_calls().await, 4);
    world.teardown().await;
}
