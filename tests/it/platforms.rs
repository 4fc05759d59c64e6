//! One contract test per platform, against an emulation of its documented wire format
//! (`common/emulator.rs`): the built-in catalogue entry, pointed at the emulator, must make
//! exactly the requests the platform documents, read exactly the answers it documents, renew,
//! revoke and learn the granted scopes its way, and turn its error bodies into the right codes.
//! Sources for each shape are in the README's platform table.

use std::collections::BTreeMap;

use praisma_worker::bus::hub_client::Received;
use praisma_worker::platform::catalogue::built_in;
use serde_json::{Value, json};
use url::Url;

use crate::common::emulator::{Emulator, Seen, basic, params};
use crate::common::{Options, REDIRECT_URI, WAIT, World};

struct Platform {
    world: World,
    emulator: Emulator,
    name: &'static str,
}

const CLIENT_SECRET: &str = "shh-client-secret";

fn client_id(name: &str) -> String {
    format!("client-of-{name}")
}

impl Platform {
    /// A world whose catalogue holds the built-in entry for `name`, pointed at an emulator.
    async fn start(name: &'static str) -> Platform {
        let emulator = Emulator::start().await;
        let definition = built_in()
            .unwrap()
            .into_iter()
            .find(|d| d.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} is built in"));
        let upper = name.to_uppercase();
        let options = Options {
            providers: vec![emulator.relocate(definition, REDIRECT_URI)],
            vars: vec![
                (leak(format!("PRAISMA_PROVIDER_{upper}_CLIENT_ID")), client_id(name)),
                (
                    leak(format!("PRAISMA_PROVIDER_{upper}_CLIENT_SECRET")),
                    CLIENT_SECRET.to_owned(),
                ),
            ],
            ..Options::default()
        };
        let world = World::spawn_with(options).await;
        Platform { world, emulator, name }
    }

    /// The consent URL the worker issues for `capabilities`, as query pairs (plus `path`).
    async fn consent(&self, channel: &str, capabilities: &[&str]) -> BTreeMap<String, String> {
        let issued = self
            .world
            .request(&self.world.consent_request_via(self.name, channel, capabilities))
            .await;
        assert_eq!(issued.event_type(), "ConsentUrlIssued", "{:?}", issued.event);
        let url = Url::parse(issued.event["data"]["authorization_url"].as_str().unwrap()).unwrap();
        let mut pairs: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        pairs.insert("path".into(), url.path().trim_start_matches('/').to_owned());
        pairs
    }

    /// Consent, then the platform's redirect back with `code`, forwarded to the worker.
    async fn connect(&self, channel: &str, capabilities: &[&str], code: &str) -> (BTreeMap<String, String>, Received) {
        let consent = self.consent(channel, capabilities).await;
        let connect = self
            .world
            .event("ConnectRequested", json!({ "state": consent["state"], "code": code }));
        (consent, self.world.request(&connect).await)
    }

    async fn expiring(&self, channel: &str) -> Received {
        self.world.age_tokens(channel).await;
        self.world
            .request(&self.world.event("TokenExpiring", json!({ "channel_id": channel })))
            .await
    }

    /// `TokenExpiring` with the tokens' age left as the test set it.
    async fn expiring_as_is(&self, channel: &str) -> Received {
        self.world
            .request(&self.world.event("TokenExpiring", json!({ "channel_id": channel })))
            .await
    }

    /// Revokes `channel`, expecting `result` as the platform revocation and exactly `requests`.
    async fn revoke_expecting(&self, channel: &str, result: &str, requests: Vec<Seen>) {
        let revoked = self.revoke(channel).await;
        assert_eq!(data(&revoked)["platform_revocation"], result, "{:?}", revoked.event);
        self.assert_requests(requests);
    }

    /// The platform received exactly `expected` since the last look.
    fn assert_requests(&self, expected: Vec<Seen>) {
        assert_eq!(self.emulator.take_requests(), expected);
    }

    /// Scripts a 200 answer.
    fn ok(&self, method: &str, target: &str, body: Value) {
        self.emulator.reply(method, target, 200, body);
    }

    async fn revoke(&self, channel: &str) -> Received {
        self.world
            .request(&self.world.event(
                "RevokeRequested",
                json!({ "channel_id": channel, "origin": "user", "reason": "disconnect" }),
            ))
            .await
    }

    async fn stored(&self, channel: &str, kind: &str) -> Option<String> {
        self.world.stored_token(channel, kind).await
    }

    /// The platform's view of the connection: `<days>` old tokens.
    async fn age_tokens_days(&self, channel: &str, days: u32) {
        self.world
            .query(
                &format!(
                    "UPDATE channels SET tokens_updated_at = now() - interval '{days} days' WHERE channel_id = $1"
                ),
                vec![channel.into()],
            )
            .await;
    }
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn seen(method: &str, target: &str) -> Seen {
    Seen {
        method: method.into(),
        target: target.into(),
        query: BTreeMap::new(),
        form: BTreeMap::new(),
        authorization: None,
    }
}

fn query(mut request: Seen, pairs: &[(&str, &str)]) -> Seen {
    request.query = params(pairs);
    request
}

fn form(mut request: Seen, pairs: &[(&str, &str)]) -> Seen {
    request.form = params(pairs);
    request
}

fn authorized(mut request: Seen, authorization: Option<String>) -> Seen {
    request.authorization = authorization;
    request
}

fn data(received: &Received) -> &Value {
    &received.event["data"]
}

/// `capabilities`: those of the requested ones that the grant covers.
fn assert_established(received: &Received, granted: &[&str], missing: &[&str], capabilities: &[&str]) {
    assert_eq!(received.event_type(), "ConnectionEstablished", "{:?}", received.event);
    assert_eq!(data(received)["granted_scopes"], json!(granted), "{:?}", received.event);
    assert_eq!(data(received)["missing_scopes"], json!(missing), "{:?}", received.event);
    assert_eq!(
        data(received)["capabilities"],
        json!(capabilities),
        "{:?}",
        received.event
    );
}

fn assert_reauth(received: &Received, error_code: &str) {
    assert_eq!(
        received.event_type(),
        "ConnectionReauthRequired",
        "{:?}",
        received.event
    );
    assert_eq!(data(received)["error_code"], error_code);
}

/// The consent URL's parameters are exactly `expected`, plus a 256-bit state and, where the
/// platform takes PKCE, an S256 challenge.
fn consent_params(consent: &BTreeMap<String, String>, pkce: bool, expected: &[(&str, &str)]) {
    let mut consent = consent.clone();
    let state = consent.remove("state").expect("a state");
    assert!(state.len() >= 43, "the state carries 256 bits");
    let challenge = consent.remove("code_challenge");
    assert_eq!(challenge.is_some(), pkce, "PKCE challenge present: {challenge:?}");
    assert_eq!(consent, params(expected));
}

#[tokio::test]
async fn meta_pages_long_lived_exchange_permissions_edge_and_permission_deletion() {
    let p = Platform::start("meta").await;
    let graph = "graph.facebook.com/v24.0";
    let (id, secret) = (client_id("meta"), CLIENT_SECRET);
    p.ok(
        "POST",
        &format!("{graph}/oauth/access_token"),
        json!({ "access_token": "EAA-short", "token_type": "bearer", "expires_in": 5183 }),
    );
    p.ok(
        "GET",
        &format!("{graph}/oauth/access_token"),
        json!({ "access_token": "EAA-long-1", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    // The user declined one permission in the dialog.
    p.ok(
        "GET",
        &format!("{graph}/me/permissions"),
        json!({ "data": [
            { "permission": "pages_show_list", "status": "granted" },
            { "permission": "pages_read_engagement", "status": "granted" },
            { "permission": "pages_manage_posts", "status": "declined" },
            { "permission": "public_profile", "status": "granted" },
        ]}),
    );
    let (consent, established) = p.connect("page-1", &["posts.publish"], "meta-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "www.facebook.com/v24.0/dialog/oauth"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "pages_manage_posts,pages_read_engagement,pages_show_list"),
        ],
    );
    assert_established(
        &established,
        &["pages_read_engagement", "pages_show_list", "public_profile"],
        &["pages_manage_posts"],
        &[],
    );
    p.assert_requests(vec![
        form(
            seen("POST", &format!("{graph}/oauth/access_token")),
            &[
                ("client_id", &id),
                ("client_secret", secret),
                ("code", "meta-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        query(
            seen("GET", &format!("{graph}/oauth/access_token")),
            &[
                ("client_id", &id),
                ("client_secret", secret),
                ("fb_exchange_token", "EAA-short"),
                ("grant_type", "fb_exchange_token"),
            ],
        ),
        authorized(
            seen("GET", &format!("{graph}/me/permissions")),
            Some("Bearer EAA-long-1".into()),
        ),
    ]);
    assert_eq!(p.stored("page-1", "access").await.as_deref(), Some("EAA-long-1"));
    assert_eq!(p.stored("page-1", "refresh").await, None);

    // Renewal: the still-valid long-lived token is traded again; `expires_in` may be a string.
    p.ok(
        "GET",
        &format!("{graph}/oauth/access_token"),
        json!({ "access_token": "EAA-long-2", "token_type": "bearer", "expires_in": "5183944" }),
    );
    p.ok(
        "GET",
        &format!("{graph}/me/permissions"),
        json!({ "data": [
            { "permission": "pages_show_list", "status": "granted" },
        ]}),
    );
    let renewed = p.expiring("page-1").await;
    assert_eq!(renewed.event_type(), "TokenRefreshed", "{:?}", renewed.event);
    p.assert_requests(vec![
        query(
            seen("GET", &format!("{graph}/oauth/access_token")),
            &[
                ("client_id", &id),
                ("client_secret", secret),
                ("fb_exchange_token", "EAA-long-1"),
                ("grant_type", "fb_exchange_token"),
            ],
        ),
        authorized(
            seen("GET", &format!("{graph}/me/permissions")),
            Some("Bearer EAA-long-2".into()),
        ),
    ]);
    assert_eq!(p.stored("page-1", "access").await.as_deref(), Some("EAA-long-2"));
    // The permission removed since is gone from the grant.
    let scopes = p
        .world
        .query("SELECT granted_scopes::text AS s FROM channels", vec![])
        .await;
    assert_eq!(scopes[0].try_get::<String>("", "s").unwrap(), r#"["pages_show_list"]"#);

    // Revocation deletes the app's permissions with the access token.
    p.ok("DELETE", &format!("{graph}/me/permissions"), json!({ "success": true }));
    let revoked = p.revoke("page-1").await;
    assert_eq!(revoked.event_type(), "ConnectionRevoked", "{:?}", revoked.event);
    assert_eq!(data(&revoked)["platform_revocation"], "confirmed");
    p.assert_requests(vec![authorized(
        seen("DELETE", &format!("{graph}/me/permissions")),
        Some("Bearer EAA-long-2".into()),
    )]);

    // Graph error 190 (the user removed the app) on renewal: re-authorization.
    p.ok(
        "POST",
        &format!("{graph}/oauth/access_token"),
        json!({ "access_token": "EAA-short-b", "token_type": "bearer", "expires_in": 5183 }),
    );
    p.ok(
        "GET",
        &format!("{graph}/oauth/access_token"),
        json!({ "access_token": "EAA-long-b", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    p.ok(
        "GET",
        &format!("{graph}/me/permissions"),
        json!({ "data": [
            { "permission": "pages_show_list", "status": "granted" },
        ]}),
    );
    let (_, established) = p.connect("page-2", &["profile.read"], "meta-code-2").await;
    assert_established(&established, &["pages_show_list"], &[], &["profile.read"]);
    p.emulator.take_requests();
    // The user removed the app: Graph answers API calls with HTTP 400 and code 190, not 401. The
    // worker reads that as a refused token, renews once, learns the grant is gone, and stops.
    let removed = json!({ "error": {
        "message": "Error validating access token: The user has not authorized application.",
        "type": "OAuthException", "code": 190, "error_subcode": 458, "fbtrace_id": "A1b2" } });
    p.emulator.reply("GET", &format!("{graph}/me"), 400, removed.clone());
    p.emulator
        .reply("GET", &format!("{graph}/oauth/access_token"), 400, removed);
    let read = p.world.event(
        "OperationRequested",
        json!({ "channel_id": "page-2", "capability": "profile.read", "request": { "method": "GET", "path": "me" } }),
    );
    let rejected = p.world.request(&read).await;
    assert_eq!(rejected.event_type(), "OperationRejected", "{:?}", rejected.event);
    assert_eq!(data(&rejected)["error_code"], "reauth_required");
    let reauth = p
        .world
        .hub
        .wait_for(WAIT, |r| r.event_type() == "ConnectionReauthRequired")
        .await
        .expect("the channel is reported");
    assert_eq!(data(&reauth)["error_code"], "invalid_grant");
    let requests = p.emulator.take_requests();
    let targets: Vec<_> = requests.iter().map(|r| format!("{} {}", r.method, r.target)).collect();
    assert_eq!(
        targets,
        [format!("GET {graph}/me"), format!("GET {graph}/oauth/access_token")]
    );
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer EAA-long-b"));
    p.world.teardown().await;
}

#[tokio::test]
async fn instagram_login_wrapped_answer_long_lived_exchange_and_day_old_renewal() {
    let p = Platform::start("instagram").await;
    let id = client_id("instagram");
    p.ok(
        "POST",
        "api.instagram.com/oauth/access_token",
        json!({ "data": [{
        "access_token": "IG-short", "user_id": "17841400000",
        "permissions": "instagram_business_basic" }] }),
    );
    p.ok(
        "GET",
        "graph.instagram.com/access_token",
        json!({ "access_token": "IG-long-1", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    let (consent, established) = p.connect("ig-1", &["posts.publish"], "ig-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "www.instagram.com/oauth/authorize"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "instagram_business_basic,instagram_business_content_publish"),
        ],
    );
    // The user unticked publishing: `permissions` says so.
    assert_established(
        &established,
        &["instagram_business_basic"],
        &["instagram_business_content_publish"],
        &[],
    );
    p.assert_requests(vec![
        form(
            seen("POST", "api.instagram.com/oauth/access_token"),
            &[
                ("client_id", &id),
                ("client_secret", CLIENT_SECRET),
                ("code", "ig-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        query(
            seen("GET", "graph.instagram.com/access_token"),
            &[
                ("access_token", "IG-short"),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "ig_exchange_token"),
            ],
        ),
    ]);

    // Younger than a day: Instagram would refuse; the worker answers with the current token.
    let early = p.expiring_as_is("ig-1").await;
    assert_eq!(early.event_type(), "TokenRefreshed", "{:?}", early.event);
    assert_eq!(data(&early)["attempts"], 0);
    p.assert_requests(vec![]);

    p.age_tokens_days("ig-1", 2).await;
    p.ok(
        "GET",
        "graph.instagram.com/refresh_access_token",
        json!({ "access_token": "IG-long-2", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    let renewed = p.expiring_as_is("ig-1").await;
    assert_eq!(renewed.event_type(), "TokenRefreshed", "{:?}", renewed.event);
    p.assert_requests(vec![query(
        seen("GET", "graph.instagram.com/refresh_access_token"),
        &[("access_token", "IG-long-1"), ("grant_type", "ig_refresh_token")],
    )]);
    assert_eq!(p.stored("ig-1", "access").await.as_deref(), Some("IG-long-2"));
    // The renewal answer lists no scopes: the grant stays as it was.
    let scopes = p
        .world
        .query("SELECT granted_scopes::text AS s FROM channels", vec![])
        .await;
    assert_eq!(
        scopes[0].try_get::<String>("", "s").unwrap(),
        r#"["instagram_business_basic"]"#
    );

    // No revocation endpoint is documented: the tokens are destroyed here, nothing is sent.
    p.revoke_expecting("ig-1", "unsupported", vec![]).await;
    assert_eq!(p.stored("ig-1", "access").await, None);
    p.world.teardown().await;
}

#[tokio::test]
async fn threads_answer_without_token_type_long_lived_exchange_and_renewal_errors() {
    let p = Platform::start("threads").await;
    let id = client_id("threads");
    // Threads' short-lived answer: no token_type, no expires_in, no scopes.
    p.ok(
        "POST",
        "graph.threads.net/oauth/access_token",
        json!({ "access_token": "TH-short", "user_id": "1234" }),
    );
    p.ok(
        "GET",
        "graph.threads.net/access_token",
        json!({ "access_token": "TH-long-1", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    let (consent, established) = p.connect("th-1", &["posts.publish"], "th-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "threads.net/oauth/authorize"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "threads_basic,threads_content_publish"),
        ],
    );
    assert_established(
        &established,
        &["threads_basic", "threads_content_publish"],
        &[],
        &["posts.publish"],
    );
    let expires_at = data(&established)["expires_at"].as_str().unwrap().to_owned();
    assert!(
        expires_at
            > chrono::Utc::now()
                .checked_add_days(chrono::Days::new(59))
                .unwrap()
                .to_rfc3339()
    );
    p.assert_requests(vec![
        form(
            seen("POST", "graph.threads.net/oauth/access_token"),
            &[
                ("client_id", &id),
                ("client_secret", CLIENT_SECRET),
                ("code", "th-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        query(
            seen("GET", "graph.threads.net/access_token"),
            &[
                ("access_token", "TH-short"),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "th_exchange_token"),
            ],
        ),
    ]);
    p.age_tokens_days("th-1", 2).await;
    p.ok(
        "GET",
        "graph.threads.net/refresh_access_token",
        json!({ "access_token": "TH-long-2", "token_type": "bearer", "expires_in": 5_183_944 }),
    );
    assert_eq!(p.expiring_as_is("th-1").await.event_type(), "TokenRefreshed");
    p.assert_requests(vec![query(
        seen("GET", "graph.threads.net/refresh_access_token"),
        &[("access_token", "TH-long-1"), ("grant_type", "th_refresh_token")],
    )]);
    assert_eq!(p.stored("th-1", "access").await.as_deref(), Some("TH-long-2"));
    p.age_tokens_days("th-1", 2).await;
    p.emulator.reply(
        "GET",
        "graph.threads.net/refresh_access_token",
        400,
        json!({ "error": {
        "message": "Session has expired", "type": "OAuthException", "code": 190 } }),
    );
    assert_reauth(&p.expiring_as_is("th-1").await, "invalid_grant");
    let revoked = p.revoke("th-1").await;
    assert_eq!(
        data(&revoked)["platform_revocation"],
        "unsupported",
        "{:?}",
        revoked.event
    );
    p.world.teardown().await;
}

#[tokio::test]
async fn x_pkce_basic_auth_single_use_refresh_tokens_and_rfc7009_revocation() {
    let p = Platform::start("x").await;
    let id = client_id("x");
    let auth = basic(&id, CLIENT_SECRET);
    p.ok(
        "POST",
        "api.x.com/2/oauth2/token",
        json!({
        "token_type": "bearer", "expires_in": 7200, "access_token": "X-at-1",
        "scope": "tweet.read users.read offline.access", "refresh_token": "X-rt-1" }),
    );
    let (consent, established) = p.connect("x-1", &["posts.publish"], "x-code").await;
    assert_eq!(consent["code_challenge_method"], "S256");
    consent_params(
        &consent,
        true,
        &[
            ("path", "x.com/i/oauth2/authorize"),
            ("client_id", &id),
            ("code_challenge_method", "S256"),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "offline.access tweet.read tweet.write users.read"),
        ],
    );
    assert_established(
        &established,
        &["offline.access", "tweet.read", "users.read"],
        &["tweet.write"],
        &[],
    );
    let requests = p.emulator.take_requests();
    assert_eq!(requests.len(), 1);
    let mut exchange = requests[0].clone();
    let verifier = exchange.form.remove("code_verifier").expect("the PKCE verifier");
    assert!(verifier.len() >= 43);
    assert_eq!(
        exchange,
        authorized(
            form(
                seen("POST", "api.x.com/2/oauth2/token"),
                &[
                    ("code", "x-code"),
                    ("grant_type", "authorization_code"),
                    ("redirect_uri", REDIRECT_URI),
                ]
            ),
            auth.clone()
        )
    );

    // Refresh tokens are single use: each refresh stores the new one and never sends an old one.
    for (n, previous) in [(2, "X-rt-1"), (3, "X-rt-2")] {
        p.ok(
            "POST",
            "api.x.com/2/oauth2/token",
            json!({
            "token_type": "bearer", "expires_in": 7200, "access_token": format!("X-at-{n}"),
            "scope": "tweet.read users.read offline.access", "refresh_token": format!("X-rt-{n}") }),
        );
        let refreshed = p.expiring("x-1").await;
        assert_eq!(refreshed.event_type(), "TokenRefreshed", "{:?}", refreshed.event);
        assert_eq!(data(&refreshed)["refresh_token_rotated"], true);
        p.assert_requests(vec![authorized(
            form(
                seen("POST", "api.x.com/2/oauth2/token"),
                &[("grant_type", "refresh_token"), ("refresh_token", previous)],
            ),
            auth.clone(),
        )]);
    }
    assert_eq!(p.stored("x-1", "refresh").await.as_deref(), Some("X-rt-3"));

    p.ok("POST", "api.x.com/2/oauth2/revoke", json!({ "revoked": true }));
    p.ok("POST", "api.x.com/2/oauth2/revoke", json!({ "revoked": true }));
    p.revoke_expecting(
        "x-1",
        "confirmed",
        vec![
            authorized(
                form(
                    seen("POST", "api.x.com/2/oauth2/revoke"),
                    &[("token", "X-rt-3"), ("token_type_hint", "refresh_token")],
                ),
                auth.clone(),
            ),
            authorized(
                form(
                    seen("POST", "api.x.com/2/oauth2/revoke"),
                    &[("token", "X-at-3"), ("token_type_hint", "access_token")],
                ),
                auth.clone(),
            ),
        ],
    )
    .await;

    // A replayed (or otherwise dead) refresh token: invalid_grant ends the grant.
    p.ok(
        "POST",
        "api.x.com/2/oauth2/token",
        json!({
        "token_type": "bearer", "expires_in": 7200, "access_token": "X-at-b",
        "scope": "tweet.read users.read offline.access", "refresh_token": "X-rt-b" }),
    );
    p.connect("x-2", &["profile.read"], "x-code-2").await;
    // X answers a spent refresh token with `invalid_request`, not `invalid_grant`: still final.
    p.emulator.reply(
        "POST",
        "api.x.com/2/oauth2/token",
        400,
        json!({
        "error": "invalid_request", "error_description": "Value passed for the token was invalid." }),
    );
    assert_reauth(&p.expiring("x-2").await, "provider_rejected");
    p.world.teardown().await;
}

#[tokio::test]
async fn linkedin_comma_scopes_introspection_non_rotating_refresh_and_revocation() {
    let p = Platform::start("linkedin").await;
    let id = client_id("linkedin");
    let credentials = [("client_id", id.as_str()), ("client_secret", CLIENT_SECRET)];
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/accessToken",
        json!({
        "access_token": "AQV-1", "expires_in": 5_184_000, "refresh_token": "AQX-1",
        "refresh_token_expires_in": 31_536_000, "scope": "openid,profile,w_member_social" }),
    );
    // Introspection is the word on what the member granted.
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/introspectToken",
        json!({
        "active": true, "client_id": id, "authorized_at": 1_764_000_000, "created_at": 1_764_000_000,
        "status": "active", "expires_at": 1_769_184_000, "scope": "openid,profile", "auth_type": "3L" }),
    );
    let (consent, established) = p.connect("li-1", &["profile.read", "posts.publish"], "li-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "www.linkedin.com/oauth/v2/authorization"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "openid profile w_member_social"),
        ],
    );
    assert_established(
        &established,
        &["openid", "profile"],
        &["w_member_social"],
        &["profile.read"],
    );
    p.assert_requests(vec![
        form(
            seen("POST", "www.linkedin.com/oauth/v2/accessToken"),
            &[
                credentials[0],
                credentials[1],
                ("code", "li-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        form(
            seen("POST", "www.linkedin.com/oauth/v2/introspectToken"),
            &[credentials[0], credentials[1], ("token", "AQV-1")],
        ),
    ]);

    // The refresh token comes back unchanged (its lifetime is not extended).
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/accessToken",
        json!({
        "access_token": "AQV-2", "expires_in": 5_184_000, "refresh_token": "AQX-1",
        "refresh_token_expires_in": 30_000_000, "scope": "openid,profile" }),
    );
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/introspectToken",
        json!({
        "active": true, "status": "active", "scope": "openid,profile", "auth_type": "3L" }),
    );
    let refreshed = p.expiring("li-1").await;
    assert_eq!(refreshed.event_type(), "TokenRefreshed", "{:?}", refreshed.event);
    p.assert_requests(vec![
        form(
            seen("POST", "www.linkedin.com/oauth/v2/accessToken"),
            &[
                credentials[0],
                credentials[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", "AQX-1"),
            ],
        ),
        form(
            seen("POST", "www.linkedin.com/oauth/v2/introspectToken"),
            &[credentials[0], credentials[1], ("token", "AQV-2")],
        ),
    ]);
    assert_eq!(p.stored("li-1", "access").await.as_deref(), Some("AQV-2"));

    // Introspection down after a refresh: the new token is kept with the answer's scopes.
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/accessToken",
        json!({
            "access_token": "AQV-3", "expires_in": 5_184_000, "refresh_token": "AQX-1", "scope": "openid,profile" }),
    );
    p.emulator.reply(
        "POST",
        "www.linkedin.com/oauth/v2/introspectToken",
        503,
        json!({ "serviceErrorCode": 0, "message": "Service unavailable", "status": 503 }),
    );
    let kept = p.expiring("li-1").await;
    assert_eq!(kept.event_type(), "TokenRefreshed", "{:?}", kept.event);
    assert_eq!(p.stored("li-1", "access").await.as_deref(), Some("AQV-3"));
    p.emulator.take_requests();

    p.ok("POST", "www.linkedin.com/oauth/v2/revoke", json!({}));
    p.revoke_expecting(
        "li-1",
        "confirmed",
        vec![form(
            seen("POST", "www.linkedin.com/oauth/v2/revoke"),
            &[credentials[0], credentials[1], ("token", "AQV-3")],
        )],
    )
    .await;

    // The refresh token's year is over.
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/accessToken",
        json!({
        "access_token": "AQV-b", "expires_in": 5_184_000, "refresh_token": "AQX-b", "scope": "openid,profile" }),
    );
    p.ok(
        "POST",
        "www.linkedin.com/oauth/v2/introspectToken",
        json!({ "active": true, "scope": "openid,profile" }),
    );
    p.connect("li-2", &["profile.read"], "li-code-2").await;
    p.emulator.reply("POST", "www.linkedin.com/oauth/v2/accessToken", 400, json!({
        "error": "invalid_grant", "error_description": "The provided authorization grant or refresh token is invalid, expired or revoked." }));
    assert_reauth(&p.expiring("li-2").await, "invalid_grant");
    p.world.teardown().await;
}

#[tokio::test]
async fn tiktok_client_key_comma_scopes_rotating_refresh_errors_with_http_200_and_revocation() {
    let p = Platform::start("tiktok").await;
    let key = client_id("tiktok");
    let credentials = [("client_key", key.as_str()), ("client_secret", CLIENT_SECRET)];
    p.ok(
        "POST",
        "open.tiktokapis.com/v2/oauth/token/",
        json!({
        "access_token": "act.1", "expires_in": 86_400, "open_id": "open-1", "refresh_expires_in": 31_536_000,
        "refresh_token": "rft.1", "scope": "user.info.basic", "token_type": "Bearer" }),
    );
    let (consent, established) = p.connect("tt-1", &["posts.read"], "tt-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "www.tiktok.com/v2/auth/authorize/"),
            ("client_key", &key),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "user.info.basic,video.list"),
        ],
    );
    assert_established(&established, &["user.info.basic"], &["video.list"], &[]);
    p.assert_requests(vec![form(
        seen("POST", "open.tiktokapis.com/v2/oauth/token/"),
        &[
            credentials[0],
            credentials[1],
            ("code", "tt-code"),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ],
    )]);
    p.ok(
        "POST",
        "open.tiktokapis.com/v2/oauth/token/",
        json!({
        "access_token": "act.2", "expires_in": 86_400, "open_id": "open-1", "refresh_expires_in": 31_535_000,
        "refresh_token": "rft.2", "scope": "user.info.basic", "token_type": "Bearer" }),
    );
    let refreshed = p.expiring("tt-1").await;
    assert_eq!(data(&refreshed)["refresh_token_rotated"], true, "{:?}", refreshed.event);
    p.assert_requests(vec![form(
        seen("POST", "open.tiktokapis.com/v2/oauth/token/"),
        &[
            credentials[0],
            credentials[1],
            ("grant_type", "refresh_token"),
            ("refresh_token", "rft.1"),
        ],
    )]);
    assert_eq!(p.stored("tt-1", "refresh").await.as_deref(), Some("rft.2"));

    p.ok("POST", "open.tiktokapis.com/v2/oauth/revoke/", json!({}));
    p.revoke_expecting(
        "tt-1",
        "confirmed",
        vec![form(
            seen("POST", "open.tiktokapis.com/v2/oauth/revoke/"),
            &[credentials[0], credentials[1], ("token", "act.2")],
        )],
    )
    .await;

    // TikTok reports a dead refresh token with HTTP 200.
    p.ok(
        "POST",
        "open.tiktokapis.com/v2/oauth/token/",
        json!({
        "access_token": "act.b", "expires_in": 86_400, "open_id": "open-2", "refresh_token": "rft.b",
        "scope": "user.info.basic", "token_type": "Bearer" }),
    );
    p.connect("tt-2", &["profile.read"], "tt-code-2").await;
    p.ok("POST", "open.tiktokapis.com/v2/oauth/token/", json!({
        "error": "invalid_grant", "error_description": "Refresh token is invalid or expired.", "log_id": "2026120400" }));
    assert_reauth(&p.expiring("tt-2").await, "invalid_grant");
    p.world.teardown().await;
}

#[tokio::test]
async fn youtube_offline_access_granular_consent_and_refresh_answers_without_a_refresh_token() {
    let p = Platform::start("youtube").await;
    let id = client_id("youtube");
    let credentials = [("client_id", id.as_str()), ("client_secret", CLIENT_SECRET)];
    let readonly = "https://www.googleapis.com/auth/youtube.readonly";
    let upload = "https://www.googleapis.com/auth/youtube.upload";
    // The user unticked upload on Google's granular consent screen.
    p.ok(
        "POST",
        "oauth2.googleapis.com/token",
        json!({
        "access_token": "ya29.a", "expires_in": 3599, "refresh_token": "1//r-1",
        "scope": readonly, "token_type": "Bearer" }),
    );
    let (consent, established) = p.connect("yt-1", &["posts.read", "posts.publish"], "4/yt-code").await;
    consent_params(
        &consent,
        true,
        &[
            ("path", "accounts.google.com/o/oauth2/v2/auth"),
            ("access_type", "offline"),
            ("client_id", &id),
            ("code_challenge_method", "S256"),
            ("include_granted_scopes", "true"),
            ("prompt", "consent"),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", &format!("{readonly} {upload}")),
        ],
    );
    assert_established(&established, &[readonly], &[upload], &["posts.read"]);
    let mut exchange = p.emulator.take_requests().remove(0);
    assert!(exchange.form.remove("code_verifier").is_some());
    assert_eq!(
        exchange,
        form(
            seen("POST", "oauth2.googleapis.com/token"),
            &[
                credentials[0],
                credentials[1],
                ("code", "4/yt-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ]
        )
    );
    // Google's refresh answers usually carry no refresh token: the stored one stays.
    p.ok(
        "POST",
        "oauth2.googleapis.com/token",
        json!({
        "access_token": "ya29.b", "expires_in": 3599, "scope": readonly, "token_type": "Bearer" }),
    );
    let refreshed = p.expiring("yt-1").await;
    assert_eq!(
        data(&refreshed)["refresh_token_rotated"],
        false,
        "{:?}",
        refreshed.event
    );
    p.assert_requests(vec![form(
        seen("POST", "oauth2.googleapis.com/token"),
        &[
            credentials[0],
            credentials[1],
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//r-1"),
        ],
    )]);
    assert_eq!(p.stored("yt-1", "refresh").await.as_deref(), Some("1//r-1"));
    assert_eq!(p.stored("yt-1", "access").await.as_deref(), Some("ya29.b"));

    p.ok("POST", "oauth2.googleapis.com/revoke", json!({}));
    p.emulator.reply(
        "POST",
        "oauth2.googleapis.com/revoke",
        400,
        json!({ "error": "invalid_token" }),
    );
    let revoked = p.revoke("yt-1").await;
    // Revoking the refresh token revoked the grant; the access token went with it.
    assert_eq!(
        data(&revoked)["platform_revocation"],
        "confirmed",
        "{:?}",
        revoked.event
    );
    p.assert_requests(vec![
        form(
            seen("POST", "oauth2.googleapis.com/revoke"),
            &[
                credentials[0],
                credentials[1],
                ("token", "1//r-1"),
                ("token_type_hint", "refresh_token"),
            ],
        ),
        form(
            seen("POST", "oauth2.googleapis.com/revoke"),
            &[
                credentials[0],
                credentials[1],
                ("token", "ya29.b"),
                ("token_type_hint", "access_token"),
            ],
        ),
    ]);

    p.ok("POST", "oauth2.googleapis.com/token", json!({
        "access_token": "ya29.c", "expires_in": 3599, "refresh_token": "1//r-2", "scope": readonly, "token_type": "Bearer" }));
    p.connect("yt-2", &["posts.read"], "4/yt-code-2").await;
    p.emulator.reply(
        "POST",
        "oauth2.googleapis.com/token",
        400,
        json!({
        "error": "invalid_grant", "error_description": "Token has been expired or revoked." }),
    );
    assert_reauth(&p.expiring("yt-2").await, "invalid_grant");
    p.world.teardown().await;
}

#[tokio::test]
async fn pinterest_basic_auth_comma_scopes_continuous_refresh_and_no_revocation_endpoint() {
    let p = Platform::start("pinterest").await;
    let id = client_id("pinterest");
    let auth = basic(&id, CLIENT_SECRET);
    p.ok(
        "POST",
        "api.pinterest.com/v5/oauth/token",
        json!({
        "access_token": "pina_1", "refresh_token": "pinr_1", "response_type": "authorization_code",
        "token_type": "bearer", "expires_in": 2_592_000, "refresh_token_expires_in": 31_536_000,
        "scope": "boards:read,pins:read" }),
    );
    let (consent, established) = p.connect("pin-1", &["posts.publish"], "pin-code").await;
    consent_params(
        &consent,
        false,
        &[
            ("path", "www.pinterest.com/oauth/"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "boards:read,pins:read,pins:write"),
        ],
    );
    assert_established(&established, &["boards:read", "pins:read"], &["pins:write"], &[]);
    p.assert_requests(vec![authorized(
        form(
            seen("POST", "api.pinterest.com/v5/oauth/token"),
            &[
                ("code", "pin-code"),
                ("grant_type", "authorization_code"),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        auth.clone(),
    )]);
    p.ok(
        "POST",
        "api.pinterest.com/v5/oauth/token",
        json!({
        "access_token": "pina_2", "refresh_token": "pinr_2", "response_type": "refresh_token",
        "token_type": "bearer", "expires_in": 2_592_000, "refresh_token_expires_in": 31_536_000,
        "scope": "boards:read,pins:read" }),
    );
    let refreshed = p.expiring("pin-1").await;
    assert_eq!(data(&refreshed)["refresh_token_rotated"], true, "{:?}", refreshed.event);
    p.assert_requests(vec![authorized(
        form(
            seen("POST", "api.pinterest.com/v5/oauth/token"),
            &[("grant_type", "refresh_token"), ("refresh_token", "pinr_1")],
        ),
        auth.clone(),
    )]);
    p.revoke_expecting("pin-1", "unsupported", vec![]).await;

    p.ok(
        "POST",
        "api.pinterest.com/v5/oauth/token",
        json!({
        "access_token": "pina_b", "refresh_token": "pinr_b", "token_type": "bearer", "expires_in": 2_592_000,
        "scope": "boards:read,pins:read" }),
    );
    p.connect("pin-2", &["posts.read"], "pin-code-2").await;
    // Pinterest's own error shape with 401: this deployment's credentials were refused. The
    // refresh fails, but the user's connection is not touched.
    p.emulator.reply(
        "POST",
        "api.pinterest.com/v5/oauth/token",
        401,
        json!({ "code": 2, "message": "Authentication failed." }),
    );
    let refused = p.expiring("pin-2").await;
    assert_eq!(refused.event_type(), "TokenRefreshFailed", "{:?}", refused.event);
    assert_eq!(data(&refused)["error_code"], "invalid_client");
    assert_eq!(data(&refused)["retryable"], false);
    let status = p
        .world
        .query("SELECT status FROM channels WHERE channel_id = 'pin-2'", vec![])
        .await;
    assert_eq!(status[0].try_get::<String>("", "status").unwrap(), "active");
    assert_eq!(p.stored("pin-2", "refresh").await.as_deref(), Some("pinr_b"));
    p.emulator.reply(
        "POST",
        "api.pinterest.com/v5/oauth/token",
        400,
        json!({ "error": "invalid_grant" }),
    );
    assert_reauth(&p.expiring("pin-2").await, "invalid_grant");
    p.world.teardown().await;
}
