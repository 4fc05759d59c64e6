//! One type per secret. None of them implements `Serialize`, `Display` or a revealing `Debug`,
//! and each zeroizes its memory on drop. Single-use secrets (a code, a PKCE verifier) are not
//! `Clone`: handing one to the platform consumes it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(SecretString);

        impl $name {
            pub fn new(value: String) -> Self {
                Self(SecretString::from(value))
            }

            /// The only way to read the value; grep for it to audit every use.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        /// Read straight into the secret type, so the value never sits in a plain `String` field.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "minLength": 1, "maxLength": 4096 })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret!(
    /// A bearer token for a platform's API.
    AccessToken
);
secret!(
    /// A long-lived token that mints access tokens.
    RefreshToken
);
secret!(
    /// The authorization code from a platform's callback: single use.
    AuthCode
);
secret!(
    /// The PKCE code verifier kept server-side between consent and exchange: single use.
    PkceVerifier
);
secret!(
    /// An OAuth client's secret, from settings only.
    ClientSecret
);
secret!(
    /// The `state` value: a bearer capability for one consent, stored only as a hash.
    StateToken
);

impl Clone for ClientSecret {
    fn clone(&self) -> Self {
        Self::new(self.expose_secret().to_owned())
    }
}

impl Clone for RefreshToken {
    fn clone(&self) -> Self {
        Self::new(self.expose_secret().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = AccessToken::new("sekrit-value".into());
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        let code = AuthCode::new("code-123".into());
        assert!(!format!("{code:?}").contains("code-123"));
    }
}
