//! Outbound events: the worker's answers and its audit trail.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::inbound::RevokeOrigin;
use crate::domain::{Capability, ChannelId, ErrorCode, ProviderName, ScopeSet};

/// An event the worker publishes: its CloudEvents `type` and its routing key.
pub trait OutboundEvent: Serialize + JsonSchema {
    const TYPE: &'static str;
    const ROUTING_KEY: &'static str;
}

macro_rules! outbound {
    ($name:ident, $key:literal) => {
        impl OutboundEvent for $name {
            const TYPE: &'static str = stringify!($name);
            const ROUTING_KEY: &'static str = $key;
        }
    };
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConsentUrlIssued {
    pub channel_id: ChannelId,
    pub authorization_url: String,
    /// The single-use value the platform echoes back; the worker keeps only its hash.
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub requested_scopes: ScopeSet,
}
outbound!(ConsentUrlIssued, "integration.consent_url.issued");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionEstablished {
    pub channel_id: ChannelId,
    pub provider: ProviderName,
    pub requested_scopes: ScopeSet,
    pub granted_scopes: ScopeSet,
    pub missing_scopes: ScopeSet,
    /// The requested capabilities that the granted scopes cover.
    pub capabilities: Vec<Capability>,
    pub expires_at: Option<DateTime<Utc>>,
}
outbound!(ConnectionEstablished, "integration.connection.established");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionFailed {
    /// Absent when the event did not name a channel that could be read.
    pub channel_id: Option<ChannelId>,
    pub error_code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}
outbound!(ConnectionFailed, "integration.connection.failed");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TokenRefreshed {
    pub channel_id: ChannelId,
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_token_rotated: bool,
    pub attempts: u32,
}
outbound!(TokenRefreshed, "integration.token.refreshed");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TokenRefreshFailed {
    pub channel_id: Option<ChannelId>,
    pub error_code: ErrorCode,
    pub retryable: bool,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}
outbound!(TokenRefreshFailed, "integration.token.refresh_failed");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionReauthRequired {
    pub channel_id: ChannelId,
    pub error_code: ErrorCode,
    pub cancelled_jobs: Vec<uuid::Uuid>,
}
outbound!(ConnectionReauthRequired, "integration.connection.reauth_required");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRevocation {
    Confirmed,
    Failed,
    Unsupported,
    Skipped,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionRevoked {
    pub channel_id: ChannelId,
    pub origin: RevokeOrigin,
    pub platform_revocation: PlatformRevocation,
    pub cancelled_jobs: Vec<uuid::Uuid>,
}
outbound!(ConnectionRevoked, "integration.connection.revoked");

/// A `RevokeRequested` the worker could not act on (an unknown or another tenant's channel).
/// Added to the contract: `ConnectionRevoked` has no way to say "no such channel".
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RevokeRejected {
    pub channel_id: ChannelId,
    pub error_code: ErrorCode,
}
outbound!(RevokeRejected, "integration.revoke.rejected");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OperationCompleted {
    pub channel_id: ChannelId,
    pub capability: Capability,
    /// The platform's HTTP status.
    pub status: u16,
    /// The platform's answer: JSON as returned, or text; fields naming a token or a secret are
    /// replaced by `"[redacted]"`.
    pub body: Value,
    /// The answer was longer than the cap and `body` holds only its start, as text.
    pub truncated: bool,
}
outbound!(OperationCompleted, "integration.operation.completed");

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OperationRejected {
    pub channel_id: Option<ChannelId>,
    pub capability: Option<Capability>,
    pub error_code: ErrorCode,
    pub missing_scopes: Option<ScopeSet>,
}
outbound!(OperationRejected, "integration.operation.rejected");

/// One audit record, as published. `hash` chains it to the channel's previous record.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AuditRecorded {
    pub channel_id: Option<ChannelId>,
    pub action: String,
    pub outcome: String,
    pub origin: String,
    /// Never a secret: built by the worker from known-safe fields.
    pub details: Value,
    pub sequence: i64,
    /// Hex SHA-256 over the previous hash and this record's canonical form.
    pub hash: String,
}

impl AuditRecorded {
    pub const TYPE: &'static str = "AuditRecorded";
    pub const ROUTING_KEY_PREFIX: &'static str = "audit.integration.";
}

impl PlatformRevocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Unsupported => "unsupported",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
    }
}
