//! Inbound events: routing key → type → typed data.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::{Envelope, RejectedEvent};
use crate::domain::secrets::{AuthCode, StateToken};
use crate::domain::{Capability, ChannelId, ErrorCode, ProviderName};

/// Every inbound event type with its routing key, in the order the contract lists them.
pub const INBOUND: [(&str, &str); 5] = [
    ("ConsentUrlRequested", "integration.consent_url.requested"),
    ("ConnectRequested", "integration.connect.requested"),
    ("TokenExpiring", "integration.token.expiring"),
    ("RevokeRequested", "integration.revoke.requested"),
    ("OperationRequested", "integration.operation.requested"),
];

/// Asks for the platform's authorization URL for a channel.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConsentUrlRequested {
    pub channel_id: ChannelId,
    pub provider: ProviderName,
    /// The features the hub needs; the worker requests exactly their scopes.
    pub capabilities: Vec<Capability>,
    /// Where the platform sends the user back; must be allowed for the provider.
    pub redirect_uri: Url,
}

/// The platform's callback, forwarded by the web layer.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConnectRequested {
    pub state: StateToken,
    /// Present when the user consented.
    #[serde(default)]
    pub code: Option<AuthCode>,
    /// Present when the user refused or the platform failed (`access_denied`, ...).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TokenExpiring {
    pub channel_id: ChannelId,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeOrigin {
    User,
    Platform,
    Admin,
    Security,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RevokeRequested {
    pub channel_id: ChannelId,
    pub origin: RevokeOrigin,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
pub struct OperationRequest {
    pub method: String,
    /// Relative to the provider's API base URL; never a full URL.
    pub path: String,
    #[serde(default)]
    pub query: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub body: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OperationRequested {
    pub channel_id: ChannelId,
    pub capability: Capability,
    pub request: OperationRequest,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// A 429, a 5xx or a transport failure may be retried later (with backoff, honouring
    /// `Retry-After`) instead of being reported at once. Only for calls that are safe to repeat.
    #[serde(default)]
    pub retryable: bool,
}

/// A parsed inbound event, ready for its handler.
#[derive(Debug)]
pub enum Command {
    ConsentUrlRequested(ConsentUrlRequested),
    ConnectRequested(ConnectRequested),
    TokenExpiring(TokenExpiring),
    RevokeRequested(RevokeRequested),
    OperationRequested(OperationRequested),
}

impl Command {
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, Box<RejectedEvent>> {
        let data = &envelope.data;
        match envelope.event_type.as_str() {
            "ConsentUrlRequested" => parse_data(envelope, data).map(Self::ConsentUrlRequested),
            "ConnectRequested" => parse_data(envelope, data).map(Self::ConnectRequested),
            "TokenExpiring" => parse_data(envelope, data).map(Self::TokenExpiring),
            "RevokeRequested" => parse_data(envelope, data).map(Self::RevokeRequested),
            "OperationRequested" => parse_data(envelope, data).map(Self::OperationRequested),
            _ => Err(envelope.rejected(ErrorCode::InvalidEvent, "the event type is unknown", false)),
        }
    }
}

fn parse_data<T: DeserializeOwned>(envelope: &Envelope, data: &Value) -> Result<T, Box<RejectedEvent>> {
    if !data.is_object() {
        return Err(envelope.rejected(ErrorCode::InvalidEvent, "data must be a JSON object", true));
    }
    T::deserialize(data)
        .map_err(|error| envelope.rejected(ErrorCode::InvalidEvent, safe_reason(&error.to_string()), true))
}

/// serde's messages quote the offending value for some errors; those could be a code or a
/// token sent in the wrong field, so only messages that quote nothing but a field name pass.
fn safe_reason(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or_default();
    if message.starts_with("missing field `") && message.matches('`').count() == 2 {
        return format!("data is {message}");
    }
    if !message.contains(['"', '`', '\'']) && message.len() < 200 {
        return format!("data is invalid: {message}");
    }
    "data has a field of the wrong type or value".to_owned()
}

impl RevokeOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Platform => "platform",
            Self::Admin => "admin",
            Self::Security => "security",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_never_quote_values() {
        assert_eq!(
            safe_reason("invalid type: string \"abc123\", expected u32 at line 1 column 4"),
            "data has a field of the wrong type or value"
        );
        assert_eq!(safe_reason("missing field `state`"), "data is missing field `state`");
        assert_eq!(
            safe_reason("channel_id is empty"),
            "data is invalid: channel_id is empty"
        );
    }
}
