//! Retention: what has outlived its use is pruned by the worker itself; what is younger than the
//! window stays, and a redelivered recent event is still recognised.

use serde_json::json;

use crate::common::{Options, WAIT, World};

#[tokio::test]
async fn records_past_the_retention_window_are_pruned_and_younger_ones_kept() {
    let world = World::spawn_with(Options {
        vars: vec![
            ("PRAISMA_RETENTION_DAYS", "30".into()),
            ("PRAISMA_RETENTION_INTERVAL_SECONDS", "1".into()),
        ],
        ..Options::default()
    })
    .await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;

    world.age_tokens("page-1").await;
    let old = world.event("TokenExpiring", json!({ "channel_id": "page-1" }));
    assert_eq!(world.request(&old).await.event_type(), "TokenRefreshed");
    let old_id = old["id"].as_str().unwrap().to_owned();
    // As if that refresh had happened 31 days ago.
    for statement in [
        "UPDATE inbox SET received_at = now() - interval '31 days' WHERE event_id = $1",
        "UPDATE outbox SET created_at = now() - interval '31 days' WHERE correlation_id = $1",
    ] {
        world.query(statement, vec![old_id.as_str().into()]).await;
    }
    world
        .query(
            "UPDATE jobs SET finished_at = now() - interval '31 days' WHERE finished_at IS NOT NULL",
            vec![],
        )
        .await;
    let finished = "SELECT count(*) FROM jobs WHERE finished_at < now() - interval '30 days'";
    assert!(
        world.count(finished, vec![]).await >= 1,
        "the old refresh's job finished"
    );
    let audit_before = world.count("SELECT count(*) FROM audit_log", vec![]).await;

    world.age_tokens("page-1").await;
    let recent = world.event("TokenExpiring", json!({ "channel_id": "page-1" }));
    let recent_answer = world.request(&recent).await;
    assert_eq!(recent_answer.event_type(), "TokenRefreshed");
    let recent_id = recent["id"].as_str().unwrap().to_owned();

    let gone = format!(
        "SELECT ((SELECT count(*) FROM inbox WHERE event_id = '{old_id}')
               + (SELECT count(*) FROM outbox WHERE correlation_id = '{old_id}')
               + (SELECT count(*) FROM job_waiters WHERE event_id = '{old_id}')
               + (SELECT count(*) FROM jobs WHERE finished_at < now() - interval '30 days') = 0)::int::int8"
    );
    assert!(world.wait_count(&gone, 1).await, "the old event's records are pruned");

    let kept = |table: &str, column: &str| format!("SELECT count(*) FROM {table} WHERE {column} = '{recent_id}'");
    assert_eq!(
        world.count(&kept("inbox", "event_id"), vec![]).await,
        1,
        "the recent event is still recognised"
    );
    assert!(
        world.count(&kept("outbox", "correlation_id"), vec![]).await >= 1,
        "its answer is kept"
    );
    assert!(
        world.count("SELECT count(*) FROM audit_log", vec![]).await > audit_before,
        "the audit log is never pruned"
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM jobs WHERE kind = 'refresh' AND status = 'pending'",
                vec![]
            )
            .await,
        1,
        "the channel's next scheduled refresh is kept"
    );

    // The recent event, delivered again, gets the answer it got the first time.
    world.hub.publish(&recent, false).await.unwrap();
    let answers = |all: &[praisma_worker::bus::hub_client::Received]| {
        all.iter()
            .filter(|r| !r.via_reply && r.is_final_outcome())
            .filter(|r| r.event["correlationid"] == recent_id.as_str())
            .map(|r| r.event["id"].clone())
            .collect::<Vec<_>>()
    };
    assert!(
        world.hub.wait_until(WAIT, |all| answers(all).len() >= 2).await,
        "answered again"
    );
    let ids = answers(&world.hub.received());
    assert!(
        ids.iter().all(|id| *id == recent_answer.event["id"]),
        "the same answer: {ids:?}"
    );
    let access = world.stored_token("page-1", "access").await.unwrap();
    assert!(world.peer.api_accepts(&access).await, "the channel still works");
    world.teardown().await;
}
