#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Survival: the worker killed with SIGKILL at random moments, RabbitMQ restarted and
//! PostgreSQL restarted, each in the middle of a stream of refreshes and operations. A target of
//! its own whose tests run one at a time (`SERIAL`): a restart takes the machine's broker or
//! database away from everything running beside it. `cargo test` runs test targets one after
//! another, so the `it` target never overlaps with these.

#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use praisma_worker::bus::hub_client::{HubClient, Received};
use serde_json::{Value, json};

use crate::common::{Options, WAIT, World};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stream of refreshes and operations on a worker process that is killed
/// with SIGKILL at random moments, five times, and restarted. Every event is answered, each with
/// one outcome id; the only refresh-token replays are the window no client can close (the
/// platform rotated the token and the process died before the commit), which surface as
/// `reauth_required`, never as a silently dead channel.
#[tokio::test]
async fn kill_nine_at_random_moments_loses_nothing_and_replays_only_inside_the_window() {
    let _alone = SERIAL.lock().await;
    let mut world = World::spawn_with(Options {
        vars: vec![
            ("PRAISMA_JOB_LEASE_SECONDS", "2".into()),
            ("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into()),
        ],
        ..Options::default()
    })
    .await;
    let channels: Vec<String> = (0..6).map(|n| format!("page-{n}")).collect();
    for channel in &channels {
        world.connect_channel(channel, &["profile.read"], &[]).await;
    }
    world.join_first_worker().await;
    // Token calls that take a little while, so that some kills land during one.
    world
        .peer
        .inject(json!((0..500).map(|_| json!({ "delay_ms": 40 })).collect::<Vec<_>>()))
        .await;

    let mut events = Vec::new();
    let mut kills_during_token_calls = 0;
    for _ in 0..5 {
        world.start_worker_process().await;
        for channel in &channels {
            world.age_tokens(channel).await;
            let expiring = world.event("TokenExpiring", json!({ "channel_id": channel }));
            let read = json!({ "channel_id": channel, "capability": "profile.read", "request": { "method": "GET", "path": "me" } });
            let operation = world.event("OperationRequested", read);
            for event in [expiring, operation] {
                world.hub.publish(&event, false).await.unwrap();
                events.push(event);
            }
        }
        // A random moment in the middle of the work: this picks when to kill, it waits for nothing.
        let pause = 10 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let before = world.peer.stats().await;
        world.kill_worker_processes().await;
        let after = world.peer.stats().await;
        let in_flight = before["token_calls_in_flight"].as_u64().unwrap_or(0) > 0;
        let started_meanwhile = after["token_calls"] != before["token_calls"];
        if in_flight || started_meanwhile {
            kills_during_token_calls += 1;
        }
    }
    world.start_worker_process().await;

    let ids: BTreeSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let answered = |all: &[praisma_worker::bus::hub_client::Received]| {
        all.iter()
            .filter(|r| !r.via_reply && r.is_final_outcome())
            .filter_map(|r| r.event["correlationid"].as_str())
            .filter(|c| ids.contains(*c))
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert!(
        world
            .hub
            .wait_until(Duration::from_secs(90), |all| answered(all) == ids.len())
            .await,
        "every event is answered"
    );

    // Effects once: however often an outcome was published, it is always the same outcome.
    let mut outcome_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for received in world
        .hub
        .received()
        .iter()
        .filter(|r| !r.via_reply && r.is_final_outcome())
    {
        if let Some(correlation) = received.event["correlationid"].as_str().filter(|c| ids.contains(*c)) {
            let id = received.event["id"].as_str().unwrap_or_default().to_owned();
            outcome_ids.entry(correlation.to_owned()).or_default().insert(id);
        }
    }
    assert!(
        outcome_ids.values().all(|set| set.len() == 1),
        "one final outcome per event"
    );

    let replays = world.peer.replays().await;
    assert!(
        replays <= kills_during_token_calls,
        "{replays} replays, but only {kills_during_token_calls} kills landed during a token call"
    );
    for channel in &channels {
        let status: String = world
            .query(
                "SELECT status FROM channels WHERE channel_id = $1",
                vec![channel.as_str().into()],
            )
            .await[0]
            .try_get("", "status")
            .unwrap();
        if status == "active" {
            let access = world.stored_token(channel, "access").await.unwrap();
            assert!(world.peer.api_accepts(&access).await, "{channel} still works");
        } else {
            assert_eq!(status, "reauth_required", "{channel} was reported, not silently dead");
        }
    }
    eprintln!("kill -9 ×5: {kills_during_token_calls} during a token call, {replays} refresh-token replays");
    world.teardown().await;
}

/// What a restart test streams: per channel, a refresh and an operation.
fn stream(world: &World, channels: &[String]) -> Vec<Value> {
    let mut events = Vec::new();
    for channel in channels {
        events.push(world.event("TokenExpiring", json!({ "channel_id": channel })));
        let read = json!({ "channel_id": channel, "capability": "profile.read", "request": { "method": "GET", "path": "me" } });
        events.push(world.event("OperationRequested", read));
    }
    events
}

/// A durable queue of the test's own on the exchange, so that outcomes published around a
/// broker restart are kept for the test however its own connections fare.
async fn observe(world: &World) -> String {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let name = format!("{}.observer", world.settings.bus.exchange);
    let connection = praisma_worker::bus::connect(&world.settings.amqp_url, "test-observer")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.as_str().into(), durable, arguments)
        .await
        .unwrap();
    channel
        .queue_bind(
            name.as_str().into(),
            world.settings.bus.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "declared".into()).await;
    name
}

/// Collects final outcomes from the observer queue until every event has one, or the time is up.
async fn outcomes(world: &World, queue: &str, events: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let ids: BTreeSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let hub = HubClient::connect(&world.settings.amqp_url, &world.settings.bus.exchange)
        .await
        .unwrap();
    let mut answered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while answered.len() < ids.len() && tokio::time::Instant::now() < deadline {
        let taken: Vec<Received> = hub.drain_queue(queue).await.unwrap_or_default();
        for received in taken.iter().filter(|r| r.is_final_outcome()) {
            if let Some(correlation) = received.event["correlationid"].as_str().filter(|c| ids.contains(*c)) {
                let id = received.event["id"].as_str().unwrap_or_default().to_owned();
                answered.entry(correlation.to_owned()).or_default().insert(id);
            }
        }
        if taken.is_empty() {
            // The queue is read by polling with a deadline: this waits on a condition, not on time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    answered
}

async fn run(program: &str, args: &[&str]) {
    let status = tokio::process::Command::new(program).args(args).status().await.unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

async fn restart_rabbitmq() {
    run("rabbitmqctl", &["-q", "stop_app"]).await;
    run("rabbitmqctl", &["-q", "start_app"]).await;
    run("rabbitmq-diagnostics", &["-q", "check_port_connectivity"]).await;
}

async fn restart_postgresql() {
    let newest = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .unwrap();
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &newest, "main", "restart", "-m", "fast"],
    )
    .await;
}

/// Waits until the worker says it is ready again; otherwise, what `/readyz` said last.
async fn ready_again(world: &World) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let url = format!("{}/readyz", world.http_base());
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match reqwest::get(&url).await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last = response.text().await.unwrap_or_default(),
            Err(error) => last = error.to_string(),
        }
        // Readiness is polled with a deadline, as an orchestrator would.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Streams events, restarts a service in the middle, streams more, and checks that every event
/// was answered once, that no refresh token was replayed and that every channel still works.
async fn survives(restart: impl AsyncFnOnce()) {
    let world = World::spawn_with(Options {
        vars: vec![("PRAISMA_REFRESH_RETRY_MIN_MS", "50".into())],
        ..Options::default()
    })
    .await;
    let channels: Vec<String> = (0..6).map(|n| format!("page-{n}")).collect();
    for channel in &channels {
        world.connect_channel(channel, &["profile.read"], &[]).await;
    }
    let observer = observe(&world).await;
    // Token calls that take a while, so that the restart lands while they are out.
    world
        .peer
        .inject(json!((0..200).map(|_| json!({ "delay_ms": 400 })).collect::<Vec<_>>()))
        .await;
    for channel in &channels {
        world.age_tokens(channel).await;
    }
    let mut events = stream(&world, &channels);
    for event in &events {
        world.hub.publish(event, false).await.unwrap();
    }
    // Once the first refresh is at the platform, take the service away.
    let deadline = tokio::time::Instant::now() + WAIT;
    while world.peer.stats().await["token_calls_in_flight"].as_u64().unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh reached the platform"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    restart().await;
    let started = tokio::time::Instant::now();
    if let Err(last) = ready_again(&world).await {
        panic!("the worker is not ready again by itself: /readyz says {last}");
    }
    eprintln!("ready again {} ms after the restart", started.elapsed().as_millis());
    let hub = HubClient::connect(&world.settings.amqp_url, &world.settings.bus.exchange)
        .await
        .unwrap();
    for channel in &channels {
        world.age_tokens(channel).await;
    }
    let after = stream(&world, &channels);
    for event in &after {
        hub.publish(event, false).await.unwrap();
    }
    events.extend(after);

    let answered = outcomes(&world, &observer, &events).await;
    assert_eq!(answered.len(), events.len(), "every event is answered");
    assert!(
        answered.values().all(|ids| ids.len() == 1),
        "one final outcome per event"
    );
    assert_eq!(world.peer.replays().await, 0, "no refresh token was replayed");
    for channel in &channels {
        let access = world.stored_token(channel, "access").await.unwrap();
        assert!(world.peer.api_accepts(&access).await, "{channel} still works");
    }
    let refreshes = world
        .count(
            "SELECT count(*) FROM audit_log WHERE action = 'token.refreshed'",
            vec![],
        )
        .await;
    eprintln!(
        "{} events answered once, {refreshes} refreshes, 0 replays",
        events.len()
    );
    let _ = hub.delete_queue(&observer).await;
    world.teardown().await;
}

#[tokio::test]
async fn a_rabbitmq_restart_mid_stream_loses_nothing() {
    let _alone = SERIAL.lock().await;
    survives(restart_rabbitmq).await;
}

#[tokio::test]
async fn a_postgresql_restart_mid_stream_loses_nothing() {
    let _alone = SERIAL.lock().await;
    survives(restart_postgresql).await;
}
