//! Classification at the boundary: whatever a platform answers becomes an [`ErrorCode`] that is
//! either transient (try again later) or permanent, with a message that never quotes the
//! platform's body.

use std::time::Duration;

use crate::domain::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    pub code: ErrorCode,
    pub message: &'static str,
    /// The platform's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

impl PlatformError {
    pub fn new(code: ErrorCode, message: &'static str) -> Self {
        Self {
            code,
            message,
            retry_after: None,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.code.is_transient()
    }

    /// An HTTP status that is an error whatever the body says.
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Option<Self> {
        let error = match status {
            429 => Self::new(ErrorCode::RateLimited, "the platform is rate limiting this client"),
            408 | 504 => Self::new(ErrorCode::Timeout, "the platform timed out"),
            500..=599 => Self::new(ErrorCode::ProviderUnavailable, "the platform is unavailable"),
            _ => return None,
        };
        Some(Self { retry_after, ..error })
    }

    /// An OAuth 2.0 error response (RFC 6749 §5.2) from the token endpoint.
    pub fn from_oauth_error(error: &str) -> Self {
        match error {
            "invalid_grant" => Self::new(
                ErrorCode::InvalidGrant,
                "the platform refused the grant: it is invalid, expired or revoked",
            ),
            "invalid_client" | "unauthorized_client" => Self::new(
                ErrorCode::InvalidClient,
                "the platform refused this worker's client credentials",
            ),
            "temporarily_unavailable" => Self::new(
                ErrorCode::ProviderUnavailable,
                "the platform is temporarily unavailable",
            ),
            "slow_down" => Self::new(ErrorCode::RateLimited, "the platform asked this client to slow down"),
            _ => Self::new(ErrorCode::ProviderRejected, "the platform rejected the request"),
        }
    }

    pub fn from_transport(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::new(ErrorCode::Timeout, "the platform did not answer in time")
        } else {
            Self::new(ErrorCode::ProviderUnavailable, "the platform could not be reached")
        }
    }

    pub fn unreadable_response() -> Self {
        Self::new(
            ErrorCode::ProviderUnavailable,
            "the platform's response could not be read",
        )
    }
}

/// A response's `Retry-After`, when it is a number of seconds.
pub fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `Retry-After` as delta-seconds; the HTTP-date form is rare on token endpoints and ignored.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| Duration::from_secs(secs.min(3_600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_stable() {
        assert!(PlatformError::from_oauth_error("invalid_grant").code == ErrorCode::InvalidGrant);
        assert!(!PlatformError::from_oauth_error("invalid_grant").is_transient());
        assert!(PlatformError::from_oauth_error("unauthorized_client").code == ErrorCode::InvalidClient);
        assert!(PlatformError::from_status(503, None).is_some_and(|e| e.is_transient()));
        assert!(PlatformError::from_status(429, None).is_some_and(|e| e.code == ErrorCode::RateLimited));
        assert!(PlatformError::from_status(400, None).is_none());
        assert_eq!(parse_retry_after(Some("7")), Some(Duration::from_secs(7)));
    }
}
