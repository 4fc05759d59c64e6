//! Messages the worker cannot act on are dead-lettered with an error code and audited, an
//! answerable one is answered, and the consumer carries on.

use serde_json::json;

use crate::common::{WAIT, World};

#[tokio::test]
async fn every_kind_of_bad_input_is_dead_lettered_audited_and_the_consumer_carries_on() {
    let world = World::spawn().await;
    let tenant = world.tenant.clone();
    let key = "integration.connect.requested";
    let envelope = |event_type: &str, data: serde_json::Value| json!({ "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "/t", "type": event_type, "tenantid": tenant, "data": data });
    let missing_tenant = json!({ "specversion": "1.0", "id": "e-1", "source": "/t", "type": "ConnectRequested", "data": { "state": "s" } });
    let unknown_type = envelope("FrobnicateRequested", json!({}));
    let missing_field = envelope("ConnectRequested", json!({ "code": "c" }));
    let mut oversized = envelope("ConnectRequested", json!({ "state": "x".repeat(300 * 1024) }));
    oversized["tenantid"] = json!(world.tenant);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", b"{\"specversion\": \"1.0\", ".to_vec()),
        ("missing tenantid", serde_json::to_vec(&missing_tenant).unwrap()),
        ("unknown type", serde_json::to_vec(&unknown_type).unwrap()),
        ("missing field", serde_json::to_vec(&missing_field).unwrap()),
        ("oversized body", serde_json::to_vec(&oversized).unwrap()),
        ("invalid UTF-8", vec![0xff, 0xfe, b'{', b'}']),
    ];
    for (_, body) in &cases {
        world.hub.publish_raw(key, body, false, None).await.unwrap();
    }

    let dead = world.wait_dead_letters(cases.len()).await;
    assert_eq!(
        dead.len(),
        cases.len(),
        "every bad message reaches the dead-letter queue"
    );
    for message in &dead {
        assert_eq!(
            message.headers.get("x-error-code").map(String::as_str),
            Some("invalid_event")
        );
        assert_eq!(
            message.headers.get("x-original-routing-key").map(String::as_str),
            Some(key)
        );
        assert!(
            cases.iter().any(|(_, body)| *body == message.raw),
            "the message is kept whole"
        );
    }
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|m| m.headers.get("x-error-reason").map(String::as_str))
        .collect();
    assert!(reasons.contains(&"the message is not valid JSON"));
    assert!(reasons.contains(&"the message is not UTF-8"));
    assert!(reasons.contains(&"tenantid is missing or not a valid tenant id"));
    assert!(reasons.contains(&"the event type is unknown"));
    assert!(reasons.contains(&"data is missing field `state`"));
    assert!(reasons.iter().any(|r| r.starts_with("the message is larger than")));

    // The one that names its tenant, id and a known type is answered too.
    let answered = world
        .hub
        .outcome(missing_field["id"].as_str().unwrap(), WAIT)
        .await
        .expect("an answer");
    assert_eq!(answered.event_type(), "ConnectionFailed");
    assert_eq!(answered.event["data"]["error_code"], "invalid_event");
    assert_eq!(
        world
            .count("SELECT count(*) FROM audit_log WHERE action = 'event.rejected'", vec![])
            .await,
        6
    );
    assert_eq!(
        world
            .count(
                "SELECT count(*) FROM audit_log WHERE action = 'event.rejected' AND tenant_id = '_unattributed'",
                vec![]
            )
            .await,
        4,
        "messages whose tenant cannot be read (unparseable or too large to parse) are audited apart from every tenant"
    );

    // And the worker is still there.
    let issued = world
        .request(&world.consent_request("page-after", &["profile.read"]))
        .await;
    assert_eq!(issued.event_type(), "ConsentUrlIssued");
    world.teardown().await;
}

#[tokio::test]
async fn a_value_in_the_wrong_field_type_is_never_echoed() {
    let world = World::spawn().await;
    let secret = "SECRET-CODE-4f1d2a";
    let event = world.event("ConnectRequested", json!({ "state": { "nested": secret }, "code": 42 }));
    let answered = world.request(&event).await;
    assert_eq!(answered.event["data"]["error_code"], "invalid_event");
    let dead = world.wait_dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert!(!String::from_utf8_lossy(&answered.raw).contains(secret));
    assert!(!dead[0].headers.values().any(|v| v.contains(secret)));
    assert!(!world.dump_tables().await.contains(secret));
    world.teardown().await;
}
