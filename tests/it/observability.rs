//! What the people on call see: health, readiness and metrics.

use sea_orm::{ConnectionTrait, Database};

use crate::common::{ADMIN_DATABASE_URL, WAIT, World};

#[tokio::test]
async fn metrics_move_with_a_flow_and_describe_the_database() {
    let world = World::spawn().await;
    world.connect_channel("page-1", &["profile.read"], &[]).await;
    let text = reqwest::get(format!("{}/metrics", world.http_base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let has = |needle: &str| text.lines().any(|line| line.starts_with(needle));
    assert!(
        has("praisma_events_consumed_total{type=\"ConnectRequested\",disposition=\"done\"}"),
        "{text}"
    );
    assert!(has(
        "praisma_event_handling_seconds_count{type=\"ConsentUrlRequested\"}"
    ));
    assert!(has(
        "praisma_platform_call_seconds_count{provider=\"oidc_test\",call=\"token_exchange\",outcome=\"ok\"}"
    ));
    assert!(
        text.contains("praisma_channels{status=\"active\"} 1\n"),
        "gauges are read from this worker's database"
    );
    assert!(text.contains("praisma_jobs_due{kind=\"refresh\"} 0\n"));
    assert!(has("praisma_outbox_backlog "));
    assert!(has("praisma_tokens_expiring_within_hour "));
    world.teardown().await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let world = World::spawn().await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/healthz", world.http_base()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = http.get(format!("{}/readyz", world.http_base())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let checks: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        checks,
        serde_json::json!({ "database": true, "migrations": true, "broker": true, "consumer": true })
    );

    // The database goes away: connections refused, open ones cut.
    let admin = Database::connect(ADMIN_DATABASE_URL).await.unwrap();
    let name = world.db_name().to_owned();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let response = http.get(format!("{}/readyz", world.http_base())).send().await.unwrap();
        if response.status() == 503 {
            last = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
    }
    let checks = last.expect("/readyz turned unready");
    assert_eq!(checks["database"], false);
    assert_eq!(
        http.get(format!("{}/healthz", world.http_base()))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive all the same"
    );
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    world.teardown().await;
}
