//! The built-in sandbox platform: a small OAuth 2.0 authorization server (authorization code
//! with PKCE S256 required, refresh-token rotation, RFC 7009 revocation) and an API that checks
//! bearer tokens and scopes. The demo runs against it. The user's consent is automatic: the
//! authorization endpoint redirects straight back with a code, as if the user clicked "allow".
//!
//! It also speaks Meta's dialect, for the quirks a standard server cannot show: `/meta/token`
//! answers a code with a short-lived token and no refresh token, and `/meta/access_token`
//! trades a still-valid token for a long-lived one (`grant_type=fb_exchange_token`), with
//! Graph-style errors (`{"error": {"type": "OAuthException", "code": 190}}`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::platform::ProviderDefinition;

pub const PROVIDER_NAME: &str = "sandbox";
pub const META_PROVIDER_NAME: &str = "sandbox_meta";
pub const ACCESS_TOKEN_LIFETIME_SECS: u64 = 3600;
pub const LONG_LIVED_LIFETIME_SECS: u64 = 60 * 86_400;

#[derive(Debug, Clone)]
pub struct SandboxClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

struct IssuedCode {
    redirect_uri: String,
    challenge: String,
    scope: String,
}

#[derive(Default)]
struct Books {
    codes: HashMap<String, IssuedCode>,
    access_tokens: HashMap<String, String>,
    refresh_tokens: HashMap<String, String>,
    token_calls: u64,
    renewals: u64,
}

#[derive(Clone)]
struct Sandbox {
    client: SandboxClient,
    books: Arc<Mutex<Books>>,
}

/// A running sandbox; dropping it does not stop it, [`SandboxHandle::stop`] does.
pub struct SandboxHandle {
    pub address: SocketAddr,
    pub client: SandboxClient,
    stop: CancellationToken,
    books: Arc<Mutex<Books>>,
}

impl SandboxHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The catalogue entry that points the worker at this sandbox.
    pub fn definition(&self) -> Result<ProviderDefinition, String> {
        let base = self.base_url();
        let text = format!(
            r#"
[[provider]]
name = "{PROVIDER_NAME}"
display_name = "Sandbox"
authorization_url = "{base}/authorize"
token_url = "{base}/token"
revocation_url = "{base}/revoke"
api_base_url = "{base}/api/"
pkce = true
client_auth = "basic"
redirect_uris = ["{redirect}"]
[provider.capabilities]
"profile.read" = ["profile"]
"posts.read" = ["posts.read"]
"posts.publish" = ["posts.read", "posts.write"]
"insights.read" = ["insights.read"]
"#,
            redirect = self.client.redirect_uri
        );
        one_definition(&text)
    }

    /// The Meta-dialect entry: no refresh tokens, renewal by `fb_exchange_token`.
    pub fn meta_definition(&self) -> Result<ProviderDefinition, String> {
        let base = self.base_url();
        let text = format!(
            r#"
[[provider]]
name = "{META_PROVIDER_NAME}"
display_name = "Sandbox (Meta dialect)"
authorization_url = "{base}/authorize"
token_url = "{base}/meta/token"
api_base_url = "{base}/api/"
scope_separator = ","
pkce = true
client_auth = "post"
redirect_uris = ["{redirect}"]
[provider.renewal]
method = "access_token_grant"
url = "{base}/meta/access_token"
http_method = "GET"
grant_type = "fb_exchange_token"
token_parameter = "fb_exchange_token"
client_credentials = "id_and_secret"
[provider.capabilities]
"profile.read" = ["profile"]
"posts.publish" = ["posts.read", "posts.write"]
"#,
            redirect = self.client.redirect_uri
        );
        one_definition(&text)
    }

    /// Registers `count` grants as if users had consented (scope `profile`), for load tests:
    /// returns their (access, refresh) tokens.
    pub fn seed_grants(&self, count: usize) -> Vec<(String, String)> {
        let Ok(mut books) = self.books.lock() else {
            return Vec::new();
        };
        (0..count)
            .map(|_| {
                let (access, refresh) = (random_token("at"), random_token("rt"));
                books.access_tokens.insert(access.clone(), "profile".into());
                books.refresh_tokens.insert(refresh.clone(), "profile".into());
                (access, refresh)
            })
            .collect()
    }

    /// Access-token renewals served (`fb_exchange_token`).
    pub fn renewals(&self) -> u64 {
        self.books.lock().map(|b| b.renewals).unwrap_or(0)
    }

    pub fn token_calls(&self) -> u64 {
        self.books.lock().map(|b| b.token_calls).unwrap_or(0)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn one_definition(text: &str) -> Result<ProviderDefinition, String> {
    crate::platform::catalogue::parse_definitions(text)?
        .into_iter()
        .next()
        .ok_or_else(|| "no definition".into())
}

pub async fn start(client: SandboxClient) -> std::io::Result<SandboxHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let books = Arc::new(Mutex::new(Books::default()));
    let state = Sandbox {
        client: client.clone(),
        books: books.clone(),
    };
    let app = Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/meta/token", post(meta_token))
        .route("/meta/access_token", get(meta_exchange))
        .route("/api/me", get(me))
        .with_state(state);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });
    Ok(SandboxHandle {
        address,
        client,
        stop,
        books,
    })
}

fn random_token(prefix: &str) -> String {
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(crate::random::bytes::<24>()))
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    state: String,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
}

async fn authorize(State(sandbox): State<Sandbox>, Query(query): Query<AuthorizeQuery>) -> Response {
    if query.client_id != sandbox.client.client_id || query.redirect_uri != sandbox.client.redirect_uri {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let Some(challenge) = query
        .code_challenge
        .filter(|_| query.code_challenge_method.as_deref() == Some("S256"))
    else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let mut target = match url::Url::parse(&query.redirect_uri) {
        Ok(url) => url,
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    };
    if query.response_type != "code" {
        target
            .query_pairs_mut()
            .append_pair("error", "unsupported_response_type")
            .append_pair("state", &query.state);
        return Redirect::to(target.as_str()).into_response();
    }
    let code = random_token("code");
    if let Ok(mut books) = sandbox.books.lock() {
        books.codes.insert(
            code.clone(),
            IssuedCode {
                redirect_uri: query.redirect_uri,
                challenge,
                scope: query.scope,
            },
        );
    }
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &query.state);
    Redirect::to(target.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

fn client_authenticated(sandbox: &Sandbox, headers: &HeaderMap) -> bool {
    let expected = STANDARD.encode(format!("{}:{}", sandbox.client.client_id, sandbox.client.client_secret));
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|given| given == expected)
}

fn form_client_authenticated(sandbox: &Sandbox, client_id: Option<&str>, client_secret: Option<&str>) -> bool {
    client_id == Some(sandbox.client.client_id.as_str()) && client_secret == Some(sandbox.client.client_secret.as_str())
}

fn graph_error(message: &str) -> Response {
    let body = json!({ "error": { "message": message, "type": "OAuthException", "code": 190 } });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Redeems a code the Meta way: a short-lived token, no refresh token, no `scope`.
async fn meta_token(State(sandbox): State<Sandbox>, Form(form): Form<TokenForm>) -> Response {
    if !form_client_authenticated(&sandbox, form.client_id.as_deref(), form.client_secret.as_deref()) {
        return graph_error("Error validating client secret.");
    }
    let Ok(mut books) = sandbox.books.lock() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    books.token_calls += 1;
    let issued = form.code.as_ref().and_then(|c| books.codes.remove(c));
    let verified = issued.filter(|issued| {
        let verifier_matches = form
            .code_verifier
            .as_ref()
            .is_some_and(|verifier| URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == issued.challenge);
        verifier_matches && form.redirect_uri.as_deref() == Some(issued.redirect_uri.as_str())
    });
    let Some(issued) = verified else {
        return graph_error("Invalid verification code format.");
    };
    let access = random_token("EAA");
    books
        .access_tokens
        .insert(access.clone(), issued.scope.replace(',', " "));
    Json(json!({ "access_token": access, "token_type": "bearer", "expires_in": ACCESS_TOKEN_LIFETIME_SECS }))
        .into_response()
}

#[derive(Deserialize)]
struct ExchangeQuery {
    grant_type: String,
    client_id: String,
    client_secret: String,
    fb_exchange_token: String,
}

/// Trades a valid token for a long-lived one; the old one stays valid until it expires.
async fn meta_exchange(State(sandbox): State<Sandbox>, Query(query): Query<ExchangeQuery>) -> Response {
    if !form_client_authenticated(&sandbox, Some(&query.client_id), Some(&query.client_secret)) {
        return graph_error("Error validating client secret.");
    }
    if query.grant_type != "fb_exchange_token" {
        return graph_error("Unsupported grant type.");
    }
    let Ok(mut books) = sandbox.books.lock() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    books.token_calls += 1;
    let Some(scope) = books.access_tokens.get(&query.fb_exchange_token).cloned() else {
        return graph_error("Error validating access token: Session has expired.");
    };
    books.renewals += 1;
    let access = random_token("EAA");
    books.access_tokens.insert(access.clone(), scope);
    Json(json!({ "access_token": access, "token_type": "bearer", "expires_in": LONG_LIVED_LIFETIME_SECS }))
        .into_response()
}

async fn token(State(sandbox): State<Sandbox>, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    if !client_authenticated(&sandbox, &headers) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let Ok(mut books) = sandbox.books.lock() else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    books.token_calls += 1;
    let scope = match form.grant_type.as_str() {
        "authorization_code" => {
            let Some(issued) = form.code.as_ref().and_then(|c| books.codes.remove(c)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            let verifier_matches = form.code_verifier.as_ref().is_some_and(|verifier| {
                URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == issued.challenge
            });
            if !verifier_matches || form.redirect_uri.as_deref() != Some(issued.redirect_uri.as_str()) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            issued.scope
        }
        "refresh_token" => {
            // Rotation: the presented refresh token is spent whatever happens next.
            let Some(scope) = form.refresh_token.as_ref().and_then(|t| books.refresh_tokens.remove(t)) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            scope
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let access = random_token("at");
    let refresh = random_token("rt");
    books.access_tokens.insert(access.clone(), scope.clone());
    books.refresh_tokens.insert(refresh.clone(), scope.clone());
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
        "refresh_token": refresh,
        "scope": scope,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RevokeForm {
    token: String,
}

async fn revoke(State(sandbox): State<Sandbox>, headers: HeaderMap, Form(form): Form<RevokeForm>) -> Response {
    if !client_authenticated(&sandbox, &headers) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if let Ok(mut books) = sandbox.books.lock() {
        books.access_tokens.remove(&form.token);
        books.refresh_tokens.remove(&form.token);
    }
    StatusCode::OK.into_response()
}

async fn me(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let scope = bearer.and_then(|token| sandbox.books.lock().ok()?.access_tokens.get(token).cloned());
    match scope {
        Some(scope) if scope.split(' ').collect::<BTreeSet<_>>().contains("profile") => {
            Json(json!({ "id": "sandbox-user-1", "name": "Sandbox User" })).into_response()
        }
        Some(_) => (StatusCode::FORBIDDEN, Json(json!({ "error": "insufficient_scope" }))).into_response(),
        None => (StatusCode::UNAUTHORIZED, Json(json!({ "error": "invalid_token" }))).into_response(),
    }
}
