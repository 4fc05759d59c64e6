use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value from outside was refused; names the field, never echoes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: &'static str,
}

fn check_identifier(field: &'static str, value: &str, max_len: usize) -> Result<(), InvalidValue> {
    if value.is_empty() {
        return Err(InvalidValue {
            field,
            reason: "is empty",
        });
    }
    if value.len() > max_len {
        return Err(InvalidValue {
            field,
            reason: "is too long",
        });
    }
    let mut chars = value.chars();
    let first_is_alphanumeric = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_allowed = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !first_is_alphanumeric || !rest_allowed {
        return Err(InvalidValue {
            field,
            reason: "must start with a letter or digit and hold only letters, digits, '_', '-', '.' or ':'",
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                check_identifier($field, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
                })
            }
        }
    };
}

identifier!(
    /// The hub's tenant. Every row and every query carries one.
    TenantId, "tenantid", 128
);
identifier!(
    /// The hub's name for a connected account (a Facebook Page, an X account, ...).
    ChannelId, "channel_id", 128
);
identifier!(
    /// The id of an inbound event: the idempotency key, unique per tenant.
    EventId, "id", 128
);

impl TenantId {
    /// The tenant that records rejected messages whose own tenant could not be read. Its
    /// leading '_' is refused by [`TenantId::parse`], so no real tenant can ever share it.
    pub fn unattributed() -> Self {
        Self("_unattributed".to_owned())
    }
}

/// A provider's name in the catalogue: lower-case letters, digits and '_'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let well_formed = !value.is_empty()
            && value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if well_formed {
            Ok(Self(value))
        } else {
            Err(InvalidValue {
                field: "provider",
                reason: "must be a lower-case name of letters, digits and '_'",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderName {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> String {
        value.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_what_could_smuggle_structure() {
        assert!(TenantId::parse("tenant_42").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("_unattributed").is_err());
        assert!(ChannelId::parse("page/1").is_err());
        assert!(ChannelId::parse("a".repeat(129)).is_err());
        assert!(ProviderName::parse("Generic").is_err());
        assert!(ProviderName::parse("x").is_ok());
    }
}
