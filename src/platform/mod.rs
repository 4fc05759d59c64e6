//! Everything that crosses to a platform: provider definitions, the OAuth calls, and the
//! classification of what comes back into stable error codes.

pub mod api;
pub mod catalogue;
pub mod errors;
pub mod oauth;
pub mod token_response;
pub mod webhooks;

pub use catalogue::{CapabilityGrant, Catalogue, ClientAuth, Provider, ProviderDefinition, Renewal};
pub use errors::PlatformError;
pub use oauth::{OAuthClient, Revocable, TokenGrant};
