//! The token answers and error bodies of platforms that bend RFC 6749 §5.1, each read by its own
//! response type into the one [`TokenGrant`] the rest of the worker knows. Every function here
//! takes untrusted bytes: none panics, none allocates beyond the (already capped) body.

use std::time::Duration;

use serde::Deserialize;

use super::catalogue::TokenResponseFormat;
use super::{PlatformError, TokenGrant};
use crate::domain::secrets::{AccessToken, RefreshToken};
use crate::domain::{ErrorCode, ScopeSet};

/// Reads a token endpoint's answer in `format`. An error body wins whatever the status: TikTok
/// reports errors with HTTP 200.
pub fn parse(format: TokenResponseFormat, body: &[u8], separators: &[char]) -> Result<TokenGrant, PlatformError> {
    if let Some(error) = error_in_body(body) {
        return Err(error);
    }
    let unreadable = |_| PlatformError::unreadable_response();
    let lenient = || serde_json::from_slice::<LenientTokenResponse>(body).map_err(unreadable);
    let grant = match format {
        TokenResponseFormat::Standard | TokenResponseFormat::Graph | TokenResponseFormat::Tiktok => {
            lenient()?.into_grant(separators)
        }
        // LinkedIn asks with spaces and answers with commas.
        TokenResponseFormat::Linkedin => lenient()?.into_grant(&[',']),
        TokenResponseFormat::InstagramLogin => serde_json::from_slice::<InstagramLoginResponse>(body)
            .map_err(unreadable)?
            .into_grant()?,
    };
    if grant.access_token.expose_secret().is_empty() {
        return Err(PlatformError::unreadable_response());
    }
    Ok(grant)
}

/// `expires_in` as platforms send it: a number, a numeric string, or nothing.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
    /// A float, a negative number, anything else: unknown.
    Other(serde::de::IgnoredAny),
}

impl Seconds {
    fn duration(self) -> Option<Duration> {
        match self {
            Self::Number(n) => Some(Duration::from_secs(n)),
            Self::Text(text) => text.trim().parse().ok().map(Duration::from_secs),
            Self::Other(_) => None,
        }
    }
}

/// RFC 6749 §5.1 read leniently, which is what Graph, LinkedIn and TikTok answers need:
/// - Graph (Meta, Instagram, Threads): Threads' short-lived answer has no `token_type`; Meta's
///   long-lived one may omit `expires_in` or send it as a string;
/// - LinkedIn: no `token_type`; `scope` comma-separated; `refresh_token_expires_in` (the
///   refresh token's lifetime is not extended by refreshing: its end arrives as
///   `invalid_grant`);
/// - TikTok: `open_id`, `refresh_expires_in`, a comma-separated `scope` of what the user agreed
///   to, a refresh token that may change on every refresh.
///
/// Fields a platform adds beyond these are not needed and not kept.
#[derive(Deserialize)]
struct LenientTokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    scope: Option<String>,
}

impl LenientTokenResponse {
    fn into_grant(self, separators: &[char]) -> TokenGrant {
        TokenGrant {
            access_token: AccessToken::new(self.access_token),
            refresh_token: self.refresh_token.filter(|t| !t.is_empty()).map(RefreshToken::new),
            expires_in: self.expires_in.and_then(Seconds::duration),
            scope: self.scope.map(|raw| ScopeSet::parse_delimited(&raw, separators)),
        }
    }
}

/// Instagram Login's code exchange. Documented as `{"data": [{...}]}`; older answers carry the
/// fields at the top level. `permissions` is a comma-separated string or an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum InstagramLoginResponse {
    Wrapped { data: Vec<InstagramGrant> },
    Flat(InstagramGrant),
}

#[derive(Deserialize)]
struct InstagramGrant {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    permissions: Option<Permissions>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Permissions {
    Joined(String),
    Listed(Vec<String>),
}

impl InstagramLoginResponse {
    fn into_grant(self) -> Result<TokenGrant, PlatformError> {
        let grant = match self {
            Self::Wrapped { data } => data.into_iter().next().ok_or_else(PlatformError::unreadable_response)?,
            Self::Flat(grant) => grant,
        };
        let scope = grant.permissions.map(|permissions| match permissions {
            Permissions::Joined(joined) => ScopeSet::parse_delimited(&joined, &[',']),
            Permissions::Listed(listed) => ScopeSet::parse_delimited(&listed.join(" "), &[]),
        });
        Ok(TokenGrant {
            access_token: AccessToken::new(grant.access_token),
            refresh_token: None,
            expires_in: grant.expires_in.and_then(Seconds::duration),
            scope,
        })
    }
}

/// An error body, in any of the shapes platforms use:
/// - RFC 6749 §5.2 `{"error": "invalid_grant"}` (X, LinkedIn, Google, Pinterest, TikTok —
///   TikTok even with HTTP 200);
/// - Graph API `{"error": {"type": "OAuthException", "code": 190, "error_subcode": 463}}`;
/// - TikTok's API `{"error": {"code": "access_token_invalid", ...}}` (`"ok"` means no error).
pub fn error_in_body(body: &[u8]) -> Option<PlatformError> {
    error_in_json(&serde_json::from_slice(body).ok()?)
}

/// As [`error_in_body`], for an answer already parsed (an API call's).
pub fn error_in_json(value: &serde_json::Value) -> Option<PlatformError> {
    match value.get("error")? {
        serde_json::Value::String(code) => Some(PlatformError::from_oauth_error(code)),
        serde_json::Value::Object(error) => match error.get("code") {
            Some(serde_json::Value::Number(code)) => Some(graph_error(code.as_i64().unwrap_or_default())),
            Some(serde_json::Value::String(code)) if code == "ok" => None,
            Some(serde_json::Value::String(code)) => Some(tiktok_error(code)),
            _ => Some(PlatformError::from_oauth_error("")),
        },
        _ => None,
    }
}

/// Graph API error codes (developers.facebook.com/docs/graph-api/guides/error-handling).
fn graph_error(code: i64) -> PlatformError {
    match code {
        // 190: the token is invalid, expired, or the user removed the app; 102: session invalid.
        190 | 102 => PlatformError::from_oauth_error("invalid_grant"),
        // Application, user and page rate limits, and business-use-case limits.
        4 | 17 | 32 | 613 | 80_001..=80_014 => {
            PlatformError::new(ErrorCode::RateLimited, "the platform is rate limiting this client")
        }
        // "Unknown" and "service" errors: Meta says retry.
        1 | 2 => PlatformError::new(
            ErrorCode::ProviderUnavailable,
            "the platform is temporarily unavailable",
        ),
        // The user did not grant (or removed) the permission the call needs.
        10 | 200..=299 => PlatformError::new(
            ErrorCode::ScopeNotGranted,
            "the grant lacks a permission the call needs",
        ),
        _ => PlatformError::from_oauth_error(""),
    }
}

/// TikTok API error codes (developers.tiktok.com/doc/tiktok-api-v2-error-handling).
fn tiktok_error(code: &str) -> PlatformError {
    match code {
        "access_token_invalid" => PlatformError::from_oauth_error("invalid_grant"),
        "scope_not_authorized" | "scope_permission_missed" => PlatformError::new(
            ErrorCode::ScopeNotGranted,
            "the grant lacks a permission the call needs",
        ),
        "rate_limit_exceeded" => {
            PlatformError::new(ErrorCode::RateLimited, "the platform is rate limiting this client")
        }
        "internal_error" => PlatformError::new(
            ErrorCode::ProviderUnavailable,
            "the platform is temporarily unavailable",
        ),
        _ => PlatformError::from_oauth_error(""),
    }
}

/// Meta's permissions edge: `{"data": [{"permission": "pages_show_list", "status": "granted"}]}`.
pub fn parse_permissions(body: &[u8]) -> Result<ScopeSet, PlatformError> {
    #[derive(Deserialize)]
    struct Edge {
        data: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        permission: String,
        status: String,
    }
    if let Some(error) = error_in_body(body) {
        return Err(error);
    }
    let edge: Edge = serde_json::from_slice(body).map_err(|_| PlatformError::unreadable_response())?;
    let granted: Vec<String> = edge
        .data
        .into_iter()
        .filter(|entry| entry.status == "granted")
        .map(|entry| entry.permission)
        .collect();
    Ok(ScopeSet::parse_delimited(&granted.join(" "), &[]))
}

/// A token introspection answer (RFC 7662 §2.2, whose `scope` is space-separated; LinkedIn's
/// is comma-separated, so both separate). An inactive token means the grant is gone.
pub fn parse_introspection(body: &[u8]) -> Result<ScopeSet, PlatformError> {
    #[derive(Deserialize)]
    struct Introspection {
        active: bool,
        #[serde(default)]
        scope: Option<String>,
    }
    if let Some(error) = error_in_body(body) {
        return Err(error);
    }
    let answer: Introspection = serde_json::from_slice(body).map_err(|_| PlatformError::unreadable_response())?;
    if !answer.active {
        return Err(PlatformError::from_oauth_error("invalid_grant"));
    }
    Ok(ScopeSet::parse_delimited(
        answer.scope.as_deref().unwrap_or_default(),
        &[','],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [TokenResponseFormat; 5] = [
        TokenResponseFormat::Standard,
        TokenResponseFormat::Graph,
        TokenResponseFormat::InstagramLogin,
        TokenResponseFormat::Linkedin,
        TokenResponseFormat::Tiktok,
    ];

    proptest::proptest! {
        /// Whatever bytes arrive, every parser answers with a grant or a classified error.
        #[test]
        fn no_parser_panics_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for format in FORMATS {
                let _ = parse(format, &body, &[',']);
            }
            let _ = parse_permissions(&body);
            let _ = parse_introspection(&body);
        }

        /// Nor on JSON that is almost a token answer.
        #[test]
        fn no_parser_panics_on_near_miss_json(
            token in proptest::option::of("[ -~]{0,12}"),
            expires in proptest::option::of(proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(|n| serde_json::json!(n)),
                "[0-9a-z ]{0,6}".prop_map(|s| serde_json::json!(s)),
                proptest::num::f64::ANY.prop_map(|n| serde_json::json!(n)),
            ]),
            scope in proptest::option::of("[a-z_:., ]{0,24}"),
            wrapped in proptest::bool::ANY,
        ) {
            let mut grant = serde_json::json!({ "scope": scope, "permissions": scope });
            if let Some(token) = token { grant["access_token"] = serde_json::json!(token); }
            if let Some(expires) = expires { grant["expires_in"] = expires; }
            let body = if wrapped { serde_json::json!({ "data": [grant] }) } else { grant };
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            for format in FORMATS {
                let _ = parse(format, &bytes, &[',']);
            }
        }
    }

    use proptest::strategy::Strategy;

    #[test]
    fn tiktok_errors_with_http_200_are_errors() {
        let body =
            br#"{"error":"invalid_grant","error_description":"Refresh token is invalid or expired.","log_id":"x"}"#;
        let error = parse(TokenResponseFormat::Tiktok, body, &[',']).err().map(|e| e.code);
        assert_eq!(error, Some(ErrorCode::InvalidGrant));
    }

    #[test]
    fn graph_codes_are_classified() {
        let code = |body: &[u8]| error_in_body(body).map(|e| e.code);
        assert_eq!(
            code(br#"{"error":{"code":190,"error_subcode":463}}"#),
            Some(ErrorCode::InvalidGrant)
        );
        assert_eq!(code(br#"{"error":{"code":613}}"#), Some(ErrorCode::RateLimited));
        assert_eq!(code(br#"{"error":{"code":2}}"#), Some(ErrorCode::ProviderUnavailable));
        assert_eq!(code(br#"{"error":{"code":200}}"#), Some(ErrorCode::ScopeNotGranted));
        assert_eq!(code(br#"{"error":{"code":"ok","message":""},"data":{}}"#), None);
    }

    #[test]
    fn instagram_permissions_become_the_grant() {
        let body = br#"{"data":[{"access_token":"IGQ","user_id":"1","permissions":"instagram_business_basic,instagram_business_content_publish"}]}"#;
        let grant = parse(TokenResponseFormat::InstagramLogin, body, &[',']);
        let scope = grant.ok().and_then(|g| g.scope).map(|s| s.join(" "));
        assert_eq!(
            scope.as_deref(),
            Some("instagram_business_basic instagram_business_content_publish")
        );
    }
}
