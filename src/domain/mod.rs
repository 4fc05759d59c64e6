//! Values that are valid by construction: parse at the edge, trust everywhere after.

mod error_code;
mod ids;
mod scopes;
pub mod secrets;

pub use error_code::ErrorCode;
pub use ids::{ChannelId, EventId, InvalidValue, ProviderName, TenantId};
pub use scopes::{Capability, Grant, Scope, ScopeSet};
