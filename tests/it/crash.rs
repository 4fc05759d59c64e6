//! A crash after the commit and before the ack: the broker redelivers, and the redelivery has
//! no second effect and republishes the same outcome.

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
