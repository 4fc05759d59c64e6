//! A crash after the commit and before the ack: the broker redelivers, and the redelivery has
//! no second effect and republishes the same outcome. A connection the broker closes is made
//! again by the worker itself.

use crate::common::{WAIT, World};

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

/// The broker's process ids of the connections that carry `connection_name`.
async fn broker_connections(connection_name: &str) -> Vec<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let quoted = format!("\"{connection_name}\"");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&quoted))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

/// The broker drops the worker's connection (an operator closing it, a load balancer, a node
/// failing over): the worker makes a new one by itself, and events keep being answered.
#[tokio::test]
async fn a_connection_the_broker_closes_is_made_again_and_events_are_still_answered() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let name = format!("praisma-integration-worker {}", world.settings.bus.queue);
    let before = broker_connections(&name).await;
    assert_eq!(before.len(), 1, "the worker has one connection: {before:?}");
    let closed = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", &before[0], "closed by the test"])
        .status()
        .await
        .expect("rabbitmqctl runs");
    assert!(closed.success());

    world.age_tokens("page-1").await;
    let answer = world
        .request(&world.event("TokenExpiring", serde_json::json!({ "channel_id": "page-1" })))
        .await;
    assert_eq!(answer.event_type(), "TokenRefreshed");
    let after = broker_connections(&name).await;
    assert_eq!(after.len(), 1, "one connection again: {after:?}");
    assert_ne!(after, before, "a new connection, not the closed one");
    world.teardown().await;
}
