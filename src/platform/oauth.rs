//! The OAuth 2.0 calls, over the `oauth2` crate with a reqwest client that follows no redirects,
//! has connect and total timeouts, and reads at most [`MAX_TOKEN_RESPONSE_BYTES`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret as OAuthClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope as OAuthScope, TokenResponse, TokenUrl,
};
use url::Url;

use super::errors::retry_after_of;
use super::{ClientAuth, PlatformError, Provider, Renewal};
use crate::domain::secrets::{AccessToken, AuthCode, PkceVerifier, RefreshToken, StateToken};
use crate::domain::{ErrorCode, ScopeSet};

/// A token response is a few hundred bytes; anything near this is not one.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// A token to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Revocable<'a> {
    Refresh(&'a RefreshToken),
    Access(&'a AccessToken),
}

/// What a token endpoint granted.
#[derive(Debug)]
pub struct TokenGrant {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Option<Duration>,
    /// The `scope` the platform returned, if it returned one (RFC 6749 §5.1).
    pub scope: Option<ScopeSet>,
}

#[derive(Debug, Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
}

/// Status and `Retry-After` of the last response, which the oauth2 crate does not surface.
#[derive(Debug, Default, Clone, Copy)]
struct ResponseMeta {
    status: u16,
    retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    #[error("response too large")]
    TooLarge,
    #[error("response could not be assembled")]
    Assemble,
}

impl OAuthClient {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(concat!("praisma-integration-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    /// Exchanges a code for tokens. The code and verifier are consumed: they are single use.
    pub async fn exchange_code(
        &self,
        provider: &Provider,
        code: AuthCode,
        verifier: Option<PkceVerifier>,
        redirect_uri: &Url,
    ) -> Result<TokenGrant, PlatformError> {
        observed(
            provider,
            "token_exchange",
            self.exchange_code_unobserved(provider, code, verifier, redirect_uri),
        )
        .await
    }

    /// Trades a refresh token for new tokens (RFC 6749 §6).
    pub async fn refresh(
        &self,
        provider: &Provider,
        refresh_token: &RefreshToken,
    ) -> Result<TokenGrant, PlatformError> {
        observed(
            provider,
            "token_refresh",
            self.refresh_unobserved(provider, refresh_token),
        )
        .await
    }

    /// Renews by trading the current access token (Meta, Instagram, Threads).
    pub async fn renew_access_token(
        &self,
        provider: &Provider,
        access_token: &AccessToken,
    ) -> Result<TokenGrant, PlatformError> {
        observed(
            provider,
            "token_renewal",
            self.renew_access_token_unobserved(provider, access_token),
        )
        .await
    }

    /// Revokes a token at the provider's RFC 7009 endpoint.
    pub async fn revoke(&self, provider: &Provider, token: Revocable<'_>) -> Result<(), PlatformError> {
        observed(provider, "revocation", self.revoke_unobserved(provider, token)).await
    }

    /// The hardened HTTP client (no redirects, timeouts), for API calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A fresh PKCE S256 pair: the challenge goes in the URL, the verifier stays with us.
    pub fn new_pkce() -> (PkceCodeChallenge, PkceVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        (challenge, PkceVerifier::new(verifier.into_secret()))
    }

    /// The platform's authorization URL asking for exactly `scopes`.
    pub fn authorization_url(
        provider: &Provider,
        scopes: &ScopeSet,
        state: &StateToken,
        challenge: Option<PkceCodeChallenge>,
        redirect_uri: &Url,
    ) -> Url {
        let definition = &provider.definition;
        let client = BasicClient::new(ClientId::new(provider.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(definition.authorization_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let state_value = state.expose_secret().to_owned();
        let mut request = client.authorize_url(move || CsrfToken::new(state_value));
        // One pre-joined scope string, so platforms that separate with commas get commas.
        if !scopes.is_empty() {
            request = request.add_scope(OAuthScope::new(scopes.join(&definition.scope_separator)));
        }
        if let Some(challenge) = challenge {
            request = request.set_pkce_challenge(challenge);
        }
        for (name, value) in &definition.extra_authorization_params {
            request = request.add_extra_param(name.as_str(), value.as_str());
        }
        request.url().0
    }

    /// Exchanges a code for tokens. The code and verifier are consumed: they are single use.
    async fn exchange_code_unobserved(
        &self,
        provider: &Provider,
        code: AuthCode,
        verifier: Option<PkceVerifier>,
        redirect_uri: &Url,
    ) -> Result<TokenGrant, PlatformError> {
        let client = token_client(provider).set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let mut request = client.exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()));
        drop(code);
        if let Some(verifier) = verifier {
            request = request.set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()));
        }
        let meta = Arc::new(Mutex::new(ResponseMeta::default()));
        let result = request.request_async(&self.recording_client(meta.clone())).await;
        into_grant(provider, result, &meta)
    }

    /// Trades a refresh token for new tokens (RFC 6749 §6).
    async fn refresh_unobserved(
        &self,
        provider: &Provider,
        refresh_token: &RefreshToken,
    ) -> Result<TokenGrant, PlatformError> {
        let client = token_client(provider);
        let token = oauth2::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let meta = Arc::new(Mutex::new(ResponseMeta::default()));
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&self.recording_client(meta.clone()))
            .await;
        into_grant(provider, result, &meta)
    }

    /// Renews by trading the current access token (Meta, Instagram, Threads). Their answers
    /// carry no `token_type` and sometimes a string `expires_in`, so they are read by
    /// a lenient response type, not by the oauth2 crate's standard response.
    async fn renew_access_token_unobserved(
        &self,
        provider: &Provider,
        access_token: &AccessToken,
    ) -> Result<TokenGrant, PlatformError> {
        let Renewal::AccessTokenGrant {
            url,
            http_method,
            grant_type,
            token_parameter,
            client_credentials,
        } = &provider.definition.renewal
        else {
            return Err(PlatformError::new(
                ErrorCode::ProviderRejected,
                "the provider renews with refresh tokens",
            ));
        };
        let url = url.clone().unwrap_or_else(|| provider.definition.token_url.clone());
        let mut params = vec![
            ("grant_type", grant_type.as_str()),
            (token_parameter.as_str(), access_token.expose_secret()),
        ];
        if *client_credentials {
            params.push(("client_id", provider.client_id.as_str()));
            if let Some(secret) = &provider.client_secret {
                params.push(("client_secret", secret.expose_secret()));
            }
        }
        let request = if http_method.eq_ignore_ascii_case("POST") {
            self.http.post(url).form(&params)
        } else {
            self.http.get(url).query(&params)
        };
        let response = request.send().await.map_err(|e| PlatformError::from_transport(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after_of(&response);
        if let Some(error) = PlatformError::from_status(status, retry_after) {
            return Err(error);
        }
        let body = read_capped(response)
            .await
            .map_err(|_| PlatformError::unreadable_response())?;
        if !(200..300).contains(&status) {
            return Err(classify_error_body(&body));
        }
        let parsed: LenientTokenResponse =
            serde_json::from_slice(&body).map_err(|_| PlatformError::unreadable_response())?;
        Ok(parsed.into_grant(provider))
    }

    /// Revokes a token at the provider's RFC 7009 endpoint: one form POST, authenticated as the
    /// provider's token endpoint is. RFC 7009 §2.2: 200 means revoked, or already invalid.
    async fn revoke_unobserved(&self, provider: &Provider, token: Revocable<'_>) -> Result<(), PlatformError> {
        let definition = &provider.definition;
        let Some(url) = &definition.revocation_url else {
            return Err(PlatformError::new(
                ErrorCode::ProviderRejected,
                "the provider has no revocation endpoint",
            ));
        };
        let (value, hint) = match token {
            Revocable::Refresh(token) => (token.expose_secret(), "refresh_token"),
            Revocable::Access(token) => (token.expose_secret(), "access_token"),
        };
        let mut form = vec![("token", value), ("token_type_hint", hint)];
        let secret = provider.client_secret.as_ref().map(|s| s.expose_secret());
        let mut request = self.http.post(url.clone());
        match definition.client_auth {
            ClientAuth::Basic => {
                let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                request = request.basic_auth(encode(&provider.client_id), secret.map(encode));
            }
            ClientAuth::Post => {
                form.push(("client_id", provider.client_id.as_str()));
                if let Some(secret) = secret {
                    form.push(("client_secret", secret));
                }
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| PlatformError::from_transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after_of(&response);
        if let Some(error) = PlatformError::from_status(status.as_u16(), retry_after) {
            return Err(error);
        }
        let body = read_capped(response).await.unwrap_or_default();
        Err(classify_error_body(&body))
    }

    /// An oauth2 HTTP client that also records the response's status and `Retry-After`.
    fn recording_client(
        &self,
        meta: Arc<Mutex<ResponseMeta>>,
    ) -> impl Fn(
        oauth2::HttpRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send>> {
        let http = self.http.clone();
        move |request: oauth2::HttpRequest| {
            let http = http.clone();
            let meta = meta.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let response = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(HttpError::Transport)?;
                let status = response.status();
                let retry_after = retry_after_of(&response);
                if let Ok(mut meta) = meta.lock() {
                    *meta = ResponseMeta {
                        status: status.as_u16(),
                        retry_after,
                    };
                }
                let headers = response.headers().clone();
                let body = read_capped(response).await?;
                let mut builder = oauth2::http::Response::builder().status(status);
                if let Some(target) = builder.headers_mut() {
                    *target = headers;
                }
                builder.body(body).map_err(|_| HttpError::Assemble)
            })
        }
    }
}

/// A token response as platforms that bend RFC 6749 §5.1 send it: no `token_type`, an
/// `expires_in` that may be a string, scopes that may be comma-separated.
#[derive(serde::Deserialize)]
struct LenientTokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
}

impl LenientTokenResponse {
    fn into_grant(self, provider: &Provider) -> TokenGrant {
        let seconds = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        TokenGrant {
            access_token: AccessToken::new(self.access_token),
            refresh_token: self.refresh_token.map(RefreshToken::new),
            expires_in: seconds.map(Duration::from_secs),
            scope: self
                .scope
                .map(|raw| ScopeSet::parse_delimited(&raw, &provider.scope_separators())),
        }
    }
}

/// An error body: RFC 6749's `{"error": "invalid_grant"}`, or Graph API's
/// `{"error": {"type": "OAuthException", "code": 190}}` (190: the token is invalid or expired).
fn classify_error_body(body: &[u8]) -> PlatformError {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match &value["error"] {
        serde_json::Value::String(code) => PlatformError::from_oauth_error(code),
        serde_json::Value::Object(error) if error.get("code").and_then(|c| c.as_i64()) == Some(190) => {
            PlatformError::from_oauth_error("invalid_grant")
        }
        _ => PlatformError::from_oauth_error(""),
    }
}

/// Runs a platform call, recording its duration and how it ended.
async fn observed<T>(
    provider: &Provider,
    call: &'static str,
    work: impl Future<Output = Result<T, PlatformError>>,
) -> Result<T, PlatformError> {
    let started = Instant::now();
    let host = provider.definition.token_url.host_str().unwrap_or_default();
    let span = tracing::info_span!(
        "platform call",
        otel.name = %format!("{call} {}", provider.name()),
        otel.kind = "client",
        server.address = host,
        praisma.provider = %provider.name(),
        praisma.call = call,
        praisma.outcome = tracing::field::Empty,
    );
    let result = tracing::Instrument::instrument(work, span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.code.as_str(),
    };
    span.record("praisma.outcome", outcome);
    crate::metrics::platform_call(provider.name().as_str(), call, outcome, started);
    result
}

/// Reads a response body, refusing one larger than [`MAX_TOKEN_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(HttpError::Transport)? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

type TokenClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// An oauth2 client for the provider's token endpoint, authenticating as the provider says.
fn token_client(provider: &Provider) -> TokenClient {
    let definition = &provider.definition;
    let client = BasicClient::new(ClientId::new(provider.client_id.clone()))
        .set_token_uri(TokenUrl::from_url(definition.token_url.clone()))
        .set_auth_type(match definition.client_auth {
            ClientAuth::Basic => oauth2::AuthType::BasicAuth,
            ClientAuth::Post => oauth2::AuthType::RequestBody,
        });
    match &provider.client_secret {
        Some(secret) => client.set_client_secret(OAuthClientSecret::new(secret.expose_secret().to_owned())),
        None => client,
    }
}

fn into_grant(
    provider: &Provider,
    result: Result<oauth2::basic::BasicTokenResponse, RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>>,
    meta: &Mutex<ResponseMeta>,
) -> Result<TokenGrant, PlatformError> {
    let meta = meta.lock().map(|m| *m).unwrap_or_default();
    let response = result.map_err(|error| classify(error, meta))?;
    let separators = provider.scope_separators();
    Ok(TokenGrant {
        access_token: AccessToken::new(response.access_token().secret().to_owned()),
        refresh_token: response
            .refresh_token()
            .map(|t| RefreshToken::new(t.secret().to_owned())),
        expires_in: response.expires_in(),
        scope: response.scopes().map(|scopes| {
            let joined = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            ScopeSet::parse_delimited(&joined, &separators)
        }),
    })
}

fn classify<RE: oauth2::ErrorResponse + 'static>(
    error: RequestTokenError<HttpError, RE>,
    meta: ResponseMeta,
) -> PlatformError {
    if let Some(by_status) = PlatformError::from_status(meta.status, meta.retry_after) {
        return by_status;
    }
    match error {
        RequestTokenError::ServerResponse(response) => {
            let code = serde_json::to_value(&response)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            PlatformError::from_oauth_error(&code)
        }
        RequestTokenError::Request(HttpError::Transport(error)) => PlatformError::from_transport(&error),
        RequestTokenError::Request(_) | RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
            PlatformError::unreadable_response()
        }
    }
}
