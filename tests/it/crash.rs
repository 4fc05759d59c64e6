//! A crash after the commit and before the ack: the broker redelivers, and the redelivery has
//! no second effect and republishes the same outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::common::{Options, WAIT, World};

#[tokio::test]
async fn a_crash_between_commit_and_ack_redelivers_with_one_effect_and_the_same_outcome() {
    let mut world = World::spawn().await;
    let callback = world.consent_callback("page-1", &["profile.read"], &[]).await;

    let faults = world.start_worker_with_faults().await;
    // Only the faulty worker may take the next delivery.
    world.join_first_worker().await;
    faults.crash_before_ack.store(1, std::sync::atomic::Ordering::SeqCst);
    let connect = world.connect_request(&callback);
    world.hub.publish(&connect, false).await.unwrap();
    world.wait_for_crash().await;

    // A fresh worker gets the redelivery.
    world.start_worker().await;
    let id = connect["id"].as_str().unwrap().to_owned();
    let outcome = world.hub.outcome(&id, WAIT).await.expect("the event is answered");
    assert_eq!(outcome.event_type(), "ConnectionEstablished");
    let all_same = world
        .hub
        .received()
        .iter()
        .filter(|r| !r.is_audit() && r.event["correlationid"] == id.as_str())
        .all(|r| r.event["id"] == outcome.event["id"]);
    assert!(all_same, "every copy of the outcome carries the same id");
    assert_eq!(world.peer.token_calls().await, 1, "the code was exchanged once");
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

/// Issue 8's crash test: a stream of refreshes and operations on a worker process that is killed
/// with SIGKILL at random moments, five times, and restarted. Every event is answered, each with
/// one outcome id; the only refresh-token replays are the window no client can close (the
/// platform rotated the token and the process died before the commit), which surface as
/// `reauth_required`, never as a silently dead channel.
#[tokio::test]
async fn kill_nine_at_random_moments_loses_nothing_and_replays_only_inside_the_window() {
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
