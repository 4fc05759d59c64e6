//! Running one platform API call for the hub: the host comes from the provider's definition,
//! never from the event; the path is checked before anything is sent; no redirects; capped
//! response; tokens and secrets in the response are redacted before it leaves the worker.

use serde_json::{Map, Value};
use url::Url;

use super::errors::retry_after_of;
use super::{PlatformError, Provider};
use crate::contract::inbound::OperationRequest;
use crate::domain::ErrorCode;
use crate::domain::secrets::AccessToken;

pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// What the platform answered.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    pub truncated: bool,
    pub retry_after: Option<std::time::Duration>,
    /// The platform refused the token itself: 401, or an error body that says so with another
    /// status (Graph answers an invalid token with 400 and code 190). Read before redaction.
    pub token_refused: bool,
}

/// A request that passed the checks, ready to send.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    pub method: reqwest::Method,
    pub url: Url,
    pub body: Option<Value>,
}

/// Checks the hub's request against the provider's API base URL.
pub fn check(provider: &Provider, request: &OperationRequest) -> Result<CheckedRequest, &'static str> {
    let method = request.method.to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err("the method is not one of GET, POST, PUT, PATCH, DELETE");
    }
    let path = checked_path(&request.path)?;
    let base = &provider.definition.api_base_url;
    let mut url = base.join(path).map_err(|_| "the path does not form a URL")?;
    // Belt and braces: whatever the join did, the call stays on the provider's API.
    let same_origin = url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin || !url.path().starts_with(base.path()) {
        return Err("the path leaves the provider's API");
    }
    if let Some(query) = &request.query {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            for value in query_values(value)? {
                pairs.append_pair(name, &value);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| "the method is invalid")?;
    Ok(CheckedRequest {
        method,
        url,
        body: request.body.clone(),
    })
}

/// A relative path only: no scheme, no host, no `//`, no `.` or `..` segments (raw or
/// percent-encoded), no backslash, no control characters, no query or fragment.
fn checked_path(path: &str) -> Result<&str, &'static str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() || path.len() > 2048 {
        return Err("the path is empty or too long");
    }
    if path.starts_with('/') || path.contains("//") {
        return Err("the path must be relative to the provider's API");
    }
    if path
        .chars()
        .any(|c| c.is_control() || matches!(c, '\\' | '?' | '#' | ' '))
    {
        return Err("the path holds a character that is not allowed");
    }
    if path.split('/').next().is_some_and(|first| first.contains(':')) {
        return Err("the path must not name a scheme");
    }
    let decoded: String = percent_decode(path);
    let traverses = decoded.split('/').any(|segment| segment == "." || segment == "..");
    if traverses || decoded.contains('\\') || decoded.chars().any(char::is_control) || decoded.contains("//") {
        return Err("the path must not leave the provider's API");
    }
    Ok(path)
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn query_values(value: &Value) -> Result<Vec<String>, &'static str> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|item| query_values(item).map(|mut v| v.remove(0)))
            .collect(),
        _ => Err("a query value must be a string, number, boolean or a list of them"),
    }
}

/// Sends the request with the token. `max_body` caps what is read of the answer.
pub async fn send(
    http: &reqwest::Client,
    request: &CheckedRequest,
    token: &AccessToken,
    max_body: usize,
) -> Result<ApiResponse, PlatformError> {
    let mut builder = http
        .request(request.method.clone(), request.url.clone())
        .bearer_auth(token.expose_secret())
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    let mut response = builder.send().await.map_err(|e| PlatformError::from_transport(&e))?;
    let status = response.status().as_u16();
    let retry_after = retry_after_of(&response);
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| PlatformError::from_transport(&e))? {
        let room = max_body.saturating_sub(bytes.len());
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = if truncated {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let token_refused = status == 401
        || ((400..500).contains(&status)
            && super::token_response::error_in_json(&body).is_some_and(|error| error.code == ErrorCode::InvalidGrant));
    Ok(ApiResponse {
        status,
        body: redact(body),
        truncated,
        retry_after,
        token_refused,
    })
}

/// Tokens never leave the worker, not even inside a platform's answer (Meta's page listings
/// carry page access tokens): any field whose name speaks of a token or a secret is replaced,
/// and so is a string `code` (an authorization code); a numeric `code` is an error code
/// (Graph's 190) and stays.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| {
                    let lower = name.to_ascii_lowercase();
                    let secret = lower.contains("token")
                        || lower.contains("secret")
                        || lower == "password"
                        || (lower == "code" && !value.is_number());
                    if secret {
                        (name, Value::String("[redacted]".into()))
                    } else {
                        (name, redact(value))
                    }
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "https://evil.example/x",
            "//evil.example/x",
            "../admin",
            "a/../../b",
            "a/%2e%2e/b",
            "a/%2E%2E/b",
            "a\\b",
            "a\r\nHost: evil",
            "a?b=c",
            "a#frag",
            "javascript:alert(1)",
            "a//b",
            "%2f%2fevil",
            "",
        ] {
            assert!(checked_path(path).is_err(), "{path:?} must be refused");
        }
        for path in ["me", "/me", "pages/123/feed", "v19.0/me", "a%20b"] {
            assert!(checked_path(path).is_ok(), "{path:?} must pass");
        }
    }

    #[test]
    fn secrets_in_answers_are_redacted() {
        let answer = serde_json::json!({ "data": [{ "id": "1", "access_token": "EAAB", "name": "Page" }], "paging": { "next": "x" } });
        let redacted = redact(answer);
        assert_eq!(redacted["data"][0]["access_token"], "[redacted]");
        assert_eq!(redacted["data"][0]["name"], "Page");
        let error =
            redact(serde_json::json!({ "error": { "code": 190, "type": "OAuthException" }, "code": "AQD-code" }));
        assert_eq!(error["error"]["code"], 190, "an error code is not a secret");
        assert_eq!(error["code"], "[redacted]", "an authorization code is");
    }
}
