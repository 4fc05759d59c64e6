//! Audit records and their per-channel hash chain.
//!
//! Each record's hash covers its predecessor's hash and its own canonical form, so editing,
//! deleting or reordering any record breaks every hash after it. Details are built by the
//! worker from known-safe values only; nothing from a platform or a secret goes in.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::{ChannelId, TenantId};

pub const GENESIS: [u8; 32] = [0; 32];

/// Actions, as the contract names them.
pub mod action {
    pub const AUTHORIZATION_STARTED: &str = "authorization.started";
    pub const AUTHORIZATION_GRANTED: &str = "authorization.granted";
    pub const AUTHORIZATION_DENIED: &str = "authorization.denied";
    pub const AUTHORIZATION_FAILED: &str = "authorization.failed";
    pub const EVENT_REJECTED: &str = "event.rejected";
    pub const TOKEN_REFRESHED: &str = "token.refreshed";
    pub const TOKEN_REFRESH_FAILED: &str = "token.refresh_failed";
    pub const TOKEN_REFRESH_DISCARDED: &str = "token.refresh_discarded";
    pub const CONNECTION_REAUTH_REQUIRED: &str = "connection.reauth_required";
    pub const CONNECTION_REVOKED: &str = "connection.revoked";
    pub const PLATFORM_REVOCATION: &str = "connection.platform_revocation";
    pub const OPERATION_COMPLETED: &str = "operation.completed";
    pub const OPERATION_REJECTED: &str = "operation.rejected";
    pub const OPERATION_SCHEDULED: &str = "operation.scheduled";
}

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub channel: Option<ChannelId>,
    pub action: &'static str,
    pub outcome: &'static str,
    /// Who caused it: the inbound event's `source`, or the worker itself.
    pub origin: String,
    pub details: Value,
}

/// The fields a hash covers, in a fixed order.
#[derive(Debug, Clone)]
pub struct ChainLink<'a> {
    pub tenant: &'a TenantId,
    pub channel_key: &'a str,
    pub sequence: i64,
    pub action: &'a str,
    pub outcome: &'a str,
    pub origin: &'a str,
    pub correlation_id: Option<&'a str>,
    pub details: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

impl ChainLink<'_> {
    pub fn hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        // serde_json sorts object keys, which makes this form canonical.
        let canonical = json!({
            "tenant": self.tenant.as_str(),
            "channel": self.channel_key,
            "sequence": self.sequence,
            "action": self.action,
            "outcome": self.outcome,
            "origin": self.origin,
            "correlation_id": self.correlation_id,
            "details": self.details,
            "recorded_at": self.recorded_at.trunc_subsecs(6).to_rfc3339(),
        });
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        hasher.update(canonical.to_string().as_bytes());
        hasher.finalize().into()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
