//! The provider catalogue: built-in definitions (`catalogue.toml`, compiled in), overridden or
//! extended by a user file (`PRAISMA_CATALOGUE_FILE`) in the same format, then completed with
//! client credentials and redirect URIs from settings. Events never supply any of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use crate::domain::secrets::ClientSecret;
use crate::domain::{Capability, ErrorCode, ProviderName, ScopeSet};
use crate::settings::Settings;

const BUILT_IN: &str = include_str!("catalogue.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret (RFC 6749 §2.3.1, the recommended form).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// One platform as the catalogue file describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDefinition {
    pub name: ProviderName,
    #[serde(default)]
    pub display_name: Option<String>,
    pub authorization_url: Url,
    pub token_url: Url,
    #[serde(default)]
    pub revocation_url: Option<Url>,
    pub api_base_url: Url,
    #[serde(default = "default_separator")]
    pub scope_separator: String,
    #[serde(default = "default_true")]
    pub pkce: bool,
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuth,
    /// The name the platform gives the client id in URLs and forms (TikTok: `client_key`).
    #[serde(default = "default_client_id_parameter")]
    pub client_id_parameter: String,
    /// How the token endpoint's answers are shaped; RFC 6749 §5.1 when absent.
    #[serde(default)]
    pub token_response: TokenResponseFormat,
    /// A short-lived token from the code exchange is traded at once for a long-lived one
    /// (Meta `fb_exchange_token`, Instagram `ig_exchange_token`, Threads `th_exchange_token`).
    #[serde(default)]
    pub long_lived_exchange: Option<AccessTokenTrade>,
    /// Where the scopes the user actually granted are learned.
    #[serde(default)]
    pub granted_scopes: ScopeDiscovery,
    /// How `revocation_url` is called.
    #[serde(default)]
    pub revocation: Revocation,
    #[serde(default)]
    pub redirect_uris: Vec<Url>,
    #[serde(default)]
    pub extra_authorization_params: BTreeMap<String, String>,
    /// How a token is renewed; the standard refresh-token grant when absent.
    #[serde(default)]
    pub renewal: Renewal,
    /// Capability → the scopes it needs: the single source for consent and for every check.
    pub capabilities: BTreeMap<Capability, Vec<String>>,
}

/// How a provider's tokens are kept alive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Renewal {
    /// RFC 6749 §6: trade the refresh token at the token endpoint.
    #[default]
    RefreshToken,
    /// Trade the current, still valid access token for a new one: Meta's `fb_exchange_token`,
    /// Instagram's `ig_refresh_token`, Threads' `th_refresh_token`.
    AccessTokenGrant(AccessTokenTrade),
}

/// One request that trades a valid access token for another (Meta's family of platforms).
/// Their answers are read as [`TokenResponseFormat::Graph`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessTokenTrade {
    /// Defaults to the token endpoint.
    #[serde(default)]
    pub url: Option<Url>,
    #[serde(default = "default_get")]
    pub http_method: String,
    pub grant_type: String,
    /// The parameter that carries the current access token.
    pub token_parameter: String,
    /// Which client credentials go along as parameters.
    #[serde(default)]
    pub client_credentials: TradeCredentials,
    /// The platform refuses to renew a token younger than this (Instagram and Threads: a day);
    /// a request to renew one sooner is answered with the current token.
    #[serde(default)]
    pub min_token_age_seconds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeCredentials {
    #[default]
    None,
    /// `client_secret` only (Instagram's and Threads' long-lived exchange).
    Secret,
    /// `client_id` and `client_secret` (Meta's `fb_exchange_token`).
    IdAndSecret,
}

/// The shape of a token endpoint's answer. Each non-standard shape has its own response type
/// (`platform/token_response.rs`); none is read by string surgery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenResponseFormat {
    /// RFC 6749 §5.1, through the `oauth2` crate.
    #[default]
    Standard,
    /// Graph API (Meta, Instagram, Threads): `token_type` may be missing, `expires_in` may be
    /// missing or a string; errors are `{"error": {"code": 190, ...}}`.
    Graph,
    /// Instagram Login's code exchange: `{"data": [{"access_token", "user_id", "permissions"}]}`
    /// (or the same fields unwrapped); the granted scopes are `permissions`.
    InstagramLogin,
    /// LinkedIn: no `token_type`, comma-separated `scope`, `refresh_token_expires_in`.
    Linkedin,
    /// TikTok: `open_id`, `refresh_expires_in`, comma-separated `scope`, and errors that may
    /// arrive with HTTP 200.
    Tiktok,
}

/// Where the scopes the user actually granted come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ScopeDiscovery {
    /// The token response's `scope` (RFC 6749 §5.1); the requested scopes when it has none.
    #[default]
    TokenResponse,
    /// Meta's permissions edge: `GET /me/permissions`, entries with `status: granted`.
    PermissionsEdge { url: Url },
    /// Token introspection (RFC 7662 shaped; LinkedIn's `introspectToken`), client credentials
    /// in the form.
    Introspection { url: Url },
}

/// How the revocation endpoint is called.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default)]
    pub style: RevocationStyle,
    /// Whether RFC 7009's `token_type_hint` is sent (TikTok's endpoint documents no such field).
    #[serde(default = "default_true")]
    pub token_type_hint: bool,
    /// Whether only the access token can be revoked (TikTok, Meta); otherwise the refresh token
    /// first, then the access token.
    #[serde(default)]
    pub access_token_only: bool,
}

impl Default for Revocation {
    fn default() -> Self {
        Self {
            style: RevocationStyle::default(),
            token_type_hint: true,
            access_token_only: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStyle {
    /// RFC 7009: a form POST of `token`, authenticated as at the token endpoint.
    #[default]
    Rfc7009,
    /// Meta: `DELETE /me/permissions` with the access token, which removes the whole grant.
    DeletePermissions,
}

fn default_get() -> String {
    "GET".to_owned()
}

impl ProviderDefinition {
    /// Tokens and codes cross these URLs: TLS everywhere but on this machine's loopback.
    fn check_transport(&self) -> Result<(), CatalogueError> {
        let renewal_url = match &self.renewal {
            Renewal::AccessTokenGrant(trade) => trade.url.as_ref(),
            Renewal::RefreshToken => None,
        };
        let discovery_url = match &self.granted_scopes {
            ScopeDiscovery::TokenResponse => None,
            ScopeDiscovery::PermissionsEdge { url } | ScopeDiscovery::Introspection { url } => Some(url),
        };
        let endpoints = [
            ("renewal.url", renewal_url),
            (
                "long_lived_exchange.url",
                self.long_lived_exchange.as_ref().and_then(|t| t.url.as_ref()),
            ),
            ("granted_scopes.url", discovery_url),
            ("authorization_url", Some(&self.authorization_url)),
            ("token_url", Some(&self.token_url)),
            ("revocation_url", self.revocation_url.as_ref()),
            ("api_base_url", Some(&self.api_base_url)),
        ];
        for (field, url) in endpoints {
            let Some(url) = url else { continue };
            let loopback = match url.host() {
                Some(url::Host::Domain(host)) => host == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(CatalogueError::Insecure {
                    provider: self.name.to_string(),
                    field,
                });
            }
        }
        Ok(())
    }
}

fn default_separator() -> String {
    " ".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_client_auth() -> ClientAuth {
    ClientAuth::Basic
}
fn default_client_id_parameter() -> String {
    "client_id".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    provider: Vec<ProviderDefinition>,
}

/// A provider ready to use: its definition plus this deployment's client credentials.
#[derive(Debug, Clone)]
pub struct Provider {
    pub definition: ProviderDefinition,
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
    capabilities: BTreeMap<Capability, ScopeSet>,
}

impl Provider {
    pub fn name(&self) -> &ProviderName {
        &self.definition.name
    }

    pub fn scopes_for(&self, capability: &Capability) -> Option<&ScopeSet> {
        self.capabilities.get(capability)
    }

    /// The union of the capabilities' scopes (least privilege), or the first unknown capability.
    pub fn scopes_for_all<'a>(
        &self,
        capabilities: impl IntoIterator<Item = &'a Capability>,
    ) -> Result<ScopeSet, &'a Capability> {
        let mut scopes = ScopeSet::default();
        for capability in capabilities {
            scopes = scopes.union(self.scopes_for(capability).ok_or(capability)?);
        }
        Ok(scopes)
    }

    /// The listed capabilities whose scopes `granted` covers.
    pub fn covered<'a>(
        &self,
        capabilities: impl IntoIterator<Item = &'a Capability>,
        granted: &ScopeSet,
    ) -> Vec<Capability> {
        capabilities
            .into_iter()
            .filter(|c| self.scopes_for(c).is_some_and(|needed| granted.is_superset(needed)))
            .cloned()
            .collect()
    }

    /// What a user's grant allows on this provider.
    pub fn grant(&self, granted: ScopeSet) -> CapabilityGrant<'_> {
        CapabilityGrant {
            provider: self,
            grant: crate::domain::Grant::new(granted),
        }
    }

    /// Redirect URIs must match one the deployment registered, exactly (RFC 9700 §4.1.3).
    pub fn allows_redirect(&self, uri: &Url) -> bool {
        self.definition.redirect_uris.iter().any(|allowed| allowed == uri)
    }

    /// Whether a grant can be kept alive without a refresh token.
    pub fn renews_with_access_token(&self) -> bool {
        matches!(self.definition.renewal, Renewal::AccessTokenGrant(_))
    }

    /// How young a token the platform refuses to renew.
    pub fn min_renewal_age(&self) -> std::time::Duration {
        match &self.definition.renewal {
            Renewal::AccessTokenGrant(trade) => std::time::Duration::from_secs(trade.min_token_age_seconds),
            Renewal::RefreshToken => std::time::Duration::ZERO,
        }
    }

    pub fn scope_separators(&self) -> Vec<char> {
        self.definition.scope_separator.chars().collect()
    }
}

/// A grant read through a provider's capability map: `allows` and `missing` are the only
/// questions an operation asks. An unknown capability is allowed nothing.
#[derive(Debug, Clone)]
pub struct CapabilityGrant<'a> {
    provider: &'a Provider,
    grant: crate::domain::Grant,
}

impl CapabilityGrant<'_> {
    pub fn allows(&self, capability: &Capability) -> bool {
        self.provider
            .scopes_for(capability)
            .is_some_and(|needed| self.grant.allows(needed))
    }

    /// The scopes the grant lacks for `capability`; `None` when the provider does not offer it.
    pub fn missing(&self, capability: &Capability) -> Option<ScopeSet> {
        self.provider
            .scopes_for(capability)
            .map(|needed| self.grant.missing(needed))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("the built-in provider catalogue is invalid: {0}")]
    BuiltIn(String),
    #[error("the catalogue file {path} cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("the catalogue file {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("provider {provider}: {field} must use https (plain http is allowed only on loopback)")]
    Insecure { provider: String, field: &'static str },
    #[error("provider {provider} maps capability {capability} to an invalid scope")]
    InvalidScope { provider: String, capability: String },
}

#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    providers: BTreeMap<ProviderName, Provider>,
    unconfigured: BTreeMap<ProviderName, ProviderDefinition>,
}

impl Catalogue {
    pub fn load(settings: &Settings) -> Result<Self, CatalogueError> {
        let mut definitions = parse(BUILT_IN).map_err(CatalogueError::BuiltIn)?;
        if let Some(path) = &settings.catalogue_file {
            definitions.extend(read_file(path)?);
        }
        Self::build(definitions.into_values().collect(), settings)
    }

    /// Adds or replaces definitions at run time (the demo's sandbox, tests' servers).
    pub fn build(definitions: Vec<ProviderDefinition>, settings: &Settings) -> Result<Self, CatalogueError> {
        let mut catalogue = Self::default();
        for mut definition in definitions {
            let name = definition.name.clone();
            definition.check_transport()?;
            if let Some(uris) = settings.redirect_uris.get(&name) {
                definition.redirect_uris.clone_from(uris);
            }
            let mut capabilities = BTreeMap::new();
            for (capability, scopes) in &definition.capabilities {
                let set: ScopeSet = scopes
                    .iter()
                    .map(|s| crate::domain::Scope::parse(s.as_str()))
                    .collect::<Result<_, _>>()
                    .map_err(|_| CatalogueError::InvalidScope {
                        provider: name.to_string(),
                        capability: capability.to_string(),
                    })?;
                capabilities.insert(capability.clone(), set);
            }
            match settings.clients.get(&name) {
                Some(credentials) => {
                    catalogue.providers.insert(
                        name,
                        Provider {
                            definition,
                            client_id: credentials.client_id.clone(),
                            client_secret: credentials.client_secret.clone(),
                            capabilities,
                        },
                    );
                }
                None => {
                    catalogue.unconfigured.insert(name, definition);
                }
            }
        }
        Ok(catalogue)
    }

    /// A provider this deployment can connect to, or why not.
    pub fn provider(&self, name: &ProviderName) -> Result<&Provider, (ErrorCode, &'static str)> {
        if let Some(provider) = self.providers.get(name) {
            return Ok(provider);
        }
        if self.unconfigured.contains_key(name) {
            return Err((
                ErrorCode::UnknownProvider,
                "the provider has no client credentials in this deployment",
            ));
        }
        Err((ErrorCode::UnknownProvider, "the provider is not in the catalogue"))
    }

    pub fn configured(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    /// Every definition, by name, and whether this deployment has credentials for it.
    pub fn definitions(&self) -> Vec<(&ProviderDefinition, bool)> {
        let mut all: Vec<_> = self
            .providers
            .values()
            .map(|p| (&p.definition, true))
            .chain(self.unconfigured.values().map(|d| (d, false)))
            .collect();
        all.sort_by(|a, b| a.0.name.as_str().cmp(b.0.name.as_str()));
        all
    }
}

fn parse(text: &str) -> Result<BTreeMap<ProviderName, ProviderDefinition>, String> {
    let file: CatalogueFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    Ok(file.provider.into_iter().map(|p| (p.name.clone(), p)).collect())
}

fn read_file(path: &Path) -> Result<BTreeMap<ProviderName, ProviderDefinition>, CatalogueError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CatalogueError::Unreadable {
        path: shown.clone(),
        reason: e.kind().to_string(),
    })?;
    parse(&text).map_err(|reason| CatalogueError::Invalid { path: shown, reason })
}

/// The built-in definitions, as compiled in.
pub fn built_in() -> Result<Vec<ProviderDefinition>, String> {
    parse_definitions(BUILT_IN)
}

/// Parses catalogue text in the file format, for definitions made at run time.
pub fn parse_definitions(text: &str) -> Result<Vec<ProviderDefinition>, String> {
    parse(text).map(|m| m.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let text = r#"
[[provider]]
name = "shady"
authorization_url = "http://auth.example/authorize"
token_url = "https://auth.example/token"
api_base_url = "https://api.example/"
[provider.capabilities]
"profile.read" = ["profile"]
"#;
        let definitions = parse_definitions(text).unwrap_or_default();
        let settings = Settings::from_vars(Default::default());
        let Ok(settings) = settings else {
            panic!("default settings parse")
        };
        let error = Catalogue::build(definitions, &settings).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("provider shady: authorization_url must use https (plain http is allowed only on loopback)")
        );
    }

    #[test]
    fn a_grant_allows_only_what_its_scopes_cover() {
        let Ok(settings) = Settings::from_vars(
            [("PRAISMA_PROVIDER_X_CLIENT_ID".to_owned(), "id".to_owned())]
                .into_iter()
                .collect(),
        ) else {
            panic!("settings parse")
        };
        let Ok(catalogue) = Catalogue::load(&settings) else {
            panic!("the built-in catalogue loads")
        };
        let Ok(x) = catalogue.provider(&ProviderName::parse("x").unwrap_or_else(|_| unreachable!())) else {
            panic!("x is configured")
        };
        let granted = ScopeSet::parse_delimited("tweet.read users.read offline.access", &[]);
        let grant = x.grant(granted);
        let (read, write, unknown) = (
            Capability::parse("posts.read").unwrap_or_else(|_| unreachable!()),
            Capability::parse("messages.write").unwrap_or_else(|_| unreachable!()),
            Capability::parse("ads.manage").unwrap_or_else(|_| unreachable!()),
        );
        assert!(grant.allows(&read));
        assert!(!grant.allows(&write));
        assert_eq!(
            grant.missing(&write).map(|m| m.join(" ")).as_deref(),
            Some("dm.read dm.write")
        );
        assert!(!grant.allows(&unknown));
        assert_eq!(grant.missing(&unknown), None);
    }

    #[test]
    fn built_in_catalogue_parses() {
        let parsed = parse(BUILT_IN);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
