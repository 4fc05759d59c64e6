use serde::{Deserialize, Serialize};

/// The contract's stable error codes: snake_case, safe to show to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidEvent,
    NotFound,
    UnknownProvider,
    UnknownCapability,
    RedirectUriNotAllowed,
    StateUnknown,
    StateExpired,
    StateReused,
    ConsentDenied,
    InvalidGrant,
    InvalidClient,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    Timeout,
    ScopeNotGranted,
    InvalidRequest,
    ConnectionNotActive,
    ConnectionRevoked,
    ReauthRequired,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::NotFound => "not_found",
            Self::UnknownProvider => "unknown_provider",
            Self::UnknownCapability => "unknown_capability",
            Self::RedirectUriNotAllowed => "redirect_uri_not_allowed",
            Self::StateUnknown => "state_unknown",
            Self::StateExpired => "state_expired",
            Self::StateReused => "state_reused",
            Self::ConsentDenied => "consent_denied",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidClient => "invalid_client",
            Self::ProviderRejected => "provider_rejected",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::ScopeNotGranted => "scope_not_granted",
            Self::InvalidRequest => "invalid_request",
            Self::ConnectionNotActive => "connection_not_active",
            Self::ConnectionRevoked => "connection_revoked",
            Self::ReauthRequired => "reauth_required",
        }
    }

    /// Whether trying the same thing again later can succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::ProviderUnavailable | Self::RateLimited | Self::Timeout)
    }

    /// A failure of this deployment's settings (client credentials, catalogue), which says
    /// nothing about the user's grant: it must never cost a user their connection.
    pub fn is_deployment_fault(self) -> bool {
        matches!(self, Self::InvalidClient | Self::UnknownProvider)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
