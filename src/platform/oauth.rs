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

use super::catalogue::{AccessTokenTrade, RevocationStyle, ScopeDiscovery, TokenResponseFormat, TradeCredentials};
use super::errors::retry_after_of;
use super::{ClientAuth, PlatformError, Provider, Renewal, token_response};
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

impl TokenGrant {
    /// The tokens to store, by kind: the access token, and the refresh token when one came.
    pub fn secrets(&self) -> Vec<(crate::vault::SecretKind, &str)> {
        let mut secrets = vec![(crate::vault::SecretKind::AccessToken, self.access_token.expose_secret())];
        if let Some(refresh) = &self.refresh_token {
            secrets.push((crate::vault::SecretKind::RefreshToken, refresh.expose_secret()));
        }
        secrets
    }
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
        let grant = observed(
            provider,
            "token_exchange",
            self.exchange_code_unobserved(provider, code, verifier, redirect_uri),
        )
        .await?;
        let grant = match &provider.definition.long_lived_exchange {
            Some(trade) => {
                let long_lived = observed(
                    provider,
                    "long_lived_exchange",
                    self.trade(provider, trade, &grant.access_token),
                )
                .await?;
                // The short-lived answer is the one that may list the grant (Instagram).
                TokenGrant {
                    scope: long_lived.scope.or(grant.scope),
                    ..long_lived
                }
            }
            None => grant,
        };
        self.with_discovered_scopes(provider, grant).await
    }

    /// Trades a refresh token for new tokens (RFC 6749 §6).
    pub async fn refresh(
        &self,
        provider: &Provider,
        refresh_token: &RefreshToken,
    ) -> Result<TokenGrant, PlatformError> {
        let grant = observed(
            provider,
            "token_refresh",
            self.refresh_unobserved(provider, refresh_token),
        )
        .await?;
        self.with_discovered_scopes(provider, grant).await
    }

    /// Renews by trading the current access token (Meta, Instagram, Threads).
    pub async fn renew_access_token(
        &self,
        provider: &Provider,
        access_token: &AccessToken,
    ) -> Result<TokenGrant, PlatformError> {
        let Renewal::AccessTokenGrant(trade) = &provider.definition.renewal else {
            return Err(PlatformError::new(
                ErrorCode::ProviderRejected,
                "the provider renews with refresh tokens",
            ));
        };
        let grant = observed(provider, "token_renewal", self.trade(provider, trade, access_token)).await?;
        self.with_discovered_scopes(provider, grant).await
    }

    /// Replaces the grant's scopes with what the platform says the user granted, where the
    /// token response does not say it (Meta's permissions edge, LinkedIn's introspection).
    /// The tokens are already issued by then: a failed discovery keeps them, with the scopes
    /// the token response gave (the next renewal asks again), rather than lose a grant.
    async fn with_discovered_scopes(
        &self,
        provider: &Provider,
        grant: TokenGrant,
    ) -> Result<TokenGrant, PlatformError> {
        let discovery = &provider.definition.granted_scopes;
        if *discovery == ScopeDiscovery::TokenResponse {
            return Ok(grant);
        }
        let discovered = observed(
            provider,
            "scope_discovery",
            self.discover_scopes(provider, discovery, &grant.access_token),
        )
        .await;
        match discovered {
            Ok(scope) => Ok(TokenGrant {
                scope: Some(scope),
                ..grant
            }),
            Err(error) => {
                tracing::warn!(provider = %provider.name(), code = %error.code, "granted-scope discovery failed; keeping the token response's scopes");
                Ok(grant)
            }
        }
    }

    async fn discover_scopes(
        &self,
        provider: &Provider,
        discovery: &ScopeDiscovery,
        access_token: &AccessToken,
    ) -> Result<ScopeSet, PlatformError> {
        type Parser = fn(&[u8]) -> Result<ScopeSet, PlatformError>;
        let (request, parse): (_, Parser) = match discovery {
            ScopeDiscovery::TokenResponse => return Ok(ScopeSet::default()),
            ScopeDiscovery::PermissionsEdge { url } => (
                self.http.get(url.clone()).bearer_auth(access_token.expose_secret()),
                token_response::parse_permissions,
            ),
            ScopeDiscovery::Introspection { url } => (
                self.authenticated_form(
                    url,
                    provider,
                    ClientAuth::Post,
                    vec![("token", access_token.expose_secret())],
                ),
                token_response::parse_introspection,
            ),
        };
        parse(&send_for_body(request).await?)
    }

    /// Revokes a token at the provider's RFC 7009 endpoint.
    pub async fn revoke(&self, provider: &Provider, token: Revocable<'_>) -> Result<(), PlatformError> {
        observed(provider, "revocation", self.revoke_unobserved(provider, token)).await
    }

    /// Revokes a grant at the platform with the tokens at hand: the refresh token is the grant,
    /// so its revocation is the answer; the access token is revoked whatever happened to it,
    /// and decides only when there is no refresh token, or when the platform revokes by access
    /// token only (Meta, TikTok).
    pub async fn revoke_grant(
        &self,
        provider: &Provider,
        refresh: Option<&RefreshToken>,
        access: Option<&AccessToken>,
    ) -> Result<(), PlatformError> {
        let refresh = refresh.filter(|_| !provider.definition.revocation.access_token_only);
        let refresh_revoked = match refresh {
            Some(refresh) => Some(self.revoke(provider, Revocable::Refresh(refresh)).await),
            None => None,
        };
        let access_revoked = match access {
            Some(access) => self.revoke(provider, Revocable::Access(access)).await,
            None if refresh_revoked.is_none() => Err(PlatformError::new(
                ErrorCode::ReauthRequired,
                "there is no token the platform can revoke",
            )),
            None => Ok(()),
        };
        refresh_revoked.unwrap_or(access_revoked)
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
        let url = request.url().0;
        if definition.client_id_parameter == "client_id" {
            return url;
        }
        // TikTok names the client id `client_key`: the same pairs, one renamed.
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let name = if name == "client_id" {
                    definition.client_id_parameter.clone()
                } else {
                    name.into_owned()
                };
                (name, value.into_owned())
            })
            .collect();
        let mut renamed = url;
        renamed.query_pairs_mut().clear().extend_pairs(pairs);
        renamed
    }

    /// Exchanges a code for tokens. The code and verifier are consumed: they are single use.
    async fn exchange_code_unobserved(
        &self,
        provider: &Provider,
        code: AuthCode,
        verifier: Option<PkceVerifier>,
        redirect_uri: &Url,
    ) -> Result<TokenGrant, PlatformError> {
        if provider.definition.token_response != TokenResponseFormat::Standard {
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri.as_str()),
            ];
            if let Some(verifier) = &verifier {
                form.push(("code_verifier", verifier.expose_secret()));
            }
            return self.token_endpoint_form(provider, form).await;
        }
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
        if provider.definition.token_response != TokenResponseFormat::Standard {
            let form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ];
            return self.token_endpoint_form(provider, form).await;
        }
        let client = token_client(provider);
        let token = oauth2::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let meta = Arc::new(Mutex::new(ResponseMeta::default()));
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&self.recording_client(meta.clone()))
            .await;
        into_grant(provider, result, &meta)
    }

    /// Trades a valid access token for another (Meta, Instagram, Threads): the long-lived
    /// exchange after a code, and renewal. Their answers are read as Graph answers.
    async fn trade(
        &self,
        provider: &Provider,
        trade: &AccessTokenTrade,
        access_token: &AccessToken,
    ) -> Result<TokenGrant, PlatformError> {
        let url = trade
            .url
            .clone()
            .unwrap_or_else(|| provider.definition.token_url.clone());
        let mut params = vec![
            ("grant_type", trade.grant_type.as_str()),
            (trade.token_parameter.as_str(), access_token.expose_secret()),
        ];
        let secret = provider.client_secret.as_ref().map(|s| s.expose_secret());
        match trade.client_credentials {
            TradeCredentials::None => {}
            TradeCredentials::Secret => params.extend(secret.map(|s| ("client_secret", s))),
            TradeCredentials::IdAndSecret => {
                params.push((
                    provider.definition.client_id_parameter.as_str(),
                    provider.client_id.as_str(),
                ));
                params.extend(secret.map(|s| ("client_secret", s)));
            }
        }
        let request = if trade.http_method.eq_ignore_ascii_case("POST") {
            self.http.post(url).form(&params)
        } else {
            self.http.get(url).query(&params)
        };
        let body = send_for_body(request).await?;
        token_response::parse(TokenResponseFormat::Graph, &body, &provider.scope_separators())
    }

    /// A token-endpoint call for platforms the `oauth2` crate cannot speak to (a renamed client
    /// id, an answer it cannot parse): the same form, authenticated as the provider says, read
    /// by the provider's own response type.
    async fn token_endpoint_form(
        &self,
        provider: &Provider,
        form: Vec<(&str, &str)>,
    ) -> Result<TokenGrant, PlatformError> {
        let definition = &provider.definition;
        let request = self.authenticated_form(&definition.token_url, provider, definition.client_auth, form);
        let body = send_for_body(request).await?;
        token_response::parse(definition.token_response, &body, &provider.scope_separators())
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
        let request = match definition.revocation.style {
            // Meta: deleting the permissions removes the app's whole grant.
            RevocationStyle::DeletePermissions => self.http.delete(url.clone()).bearer_auth(value),
            RevocationStyle::Rfc7009 => {
                let mut form = vec![("token", value)];
                if definition.revocation.token_type_hint {
                    form.push(("token_type_hint", hint));
                }
                self.authenticated_form(url, provider, definition.client_auth, form)
            }
        };
        // RFC 7009 §2.2: 200 means revoked, or already invalid. Meta answers `{"success": true}`.
        send_for_body(request).await.map(|_| ())
    }

    /// A form POST to one of the provider's endpoints, the client authenticated as `auth` says:
    /// HTTP Basic, or its id (under the provider's name for it) and secret in the form.
    fn authenticated_form<'a>(
        &self,
        url: &Url,
        provider: &'a Provider,
        auth: ClientAuth,
        mut form: Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.post(url.clone());
        let request = match auth {
            ClientAuth::Basic => {
                let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                let secret = provider.client_secret.as_ref().map(|s| encode(s.expose_secret()));
                // RFC 6749 §2.3.1: id and secret form-encoded before Basic encoding.
                request.basic_auth(encode(&provider.client_id), secret)
            }
            ClientAuth::Post => {
                form.push((
                    provider.definition.client_id_parameter.as_str(),
                    provider.client_id.as_str(),
                ));
                if let Some(secret) = &provider.client_secret {
                    form.push(("client_secret", secret.expose_secret()));
                }
                request
            }
        };
        request.form(&form)
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

/// Sends a request and returns the body of a successful answer; anything else is classified.
async fn send_for_body(request: reqwest::RequestBuilder) -> Result<Vec<u8>, PlatformError> {
    let response = request.send().await.map_err(|e| PlatformError::from_transport(&e))?;
    let status = response.status().as_u16();
    if let Some(error) = PlatformError::from_status(status, retry_after_of(&response)) {
        return Err(error);
    }
    let body = read_capped(response)
        .await
        .map_err(|_| PlatformError::unreadable_response())?;
    if !(200..300).contains(&status) {
        return Err(token_response::error_in_body(&body).unwrap_or_else(|| PlatformError::from_oauth_error("")));
    }
    Ok(body)
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
        // An error status whose body is not RFC 6749's (Pinterest's `{"code", "message"}`, an
        // HTML page): the status decides, and a refusal is not retried as if it were an outage.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => match meta.status {
            401 => PlatformError::from_oauth_error("invalid_client"),
            400..=499 => PlatformError::from_oauth_error(""),
            _ => PlatformError::unreadable_response(),
        },
        RequestTokenError::Request(_) => PlatformError::unreadable_response(),
    }
}
