use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// A feature the hub asks for (`posts.publish`, `messages.write`), mapped to a platform's scopes
/// by the provider catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct Capability(String);

impl Capability {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let segments_ok = value.split('.').all(|segment| {
            !segment.is_empty()
                && segment.starts_with(|c: char| c.is_ascii_lowercase())
                && segment
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        if value.len() <= 64 && value.contains('.') && segments_ok {
            Ok(Self(value))
        } else {
            Err(InvalidValue {
                field: "capability",
                reason: "must look like `area.action` in lower case",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Capability {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Capability> for String {
    fn from(value: Capability) -> String {
        value.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One OAuth scope token (RFC 6749 §3.3: printable ASCII without space, `"` or `\`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct Scope(String);

impl Scope {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let allowed = |c: char| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c);
        if !value.is_empty() && value.len() <= 256 && value.chars().all(allowed) {
            Ok(Self(value))
        } else {
            Err(InvalidValue {
                field: "scope",
                reason: "is not a valid OAuth scope token",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Scope> for String {
    fn from(value: Scope) -> String {
        value.0
    }
}

/// An ordered set of scopes, so that the same grant always prints, compares and hashes the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Reads a platform's scope string; `separators` are the characters that platform splits on.
    /// Tokens that are not valid scopes are dropped rather than trusted.
    pub fn parse_delimited(raw: &str, separators: &[char]) -> Self {
        Self(
            raw.split(|c: char| separators.contains(&c) || c.is_whitespace())
                .filter_map(|token| Scope::parse(token).ok())
                .collect(),
        )
    }

    pub fn join(&self, separator: &str) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(separator)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    pub fn is_superset(&self, other: &ScopeSet) -> bool {
        self.0.is_superset(&other.0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.0
                .iter()
                .map(|s| serde_json::Value::String(s.as_str().to_owned()))
                .collect(),
        )
    }

    /// Reads a set back from a JSON column; anything that is not a scope is dropped.
    pub fn from_json(value: &serde_json::Value) -> Self {
        Self(
            value
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|v| v.as_str())
                        .filter_map(|s| Scope::parse(s).ok())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// What a user consented to. `allows` and `missing` answer the only question operations ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    granted: ScopeSet,
}

impl Grant {
    pub fn new(granted: ScopeSet) -> Self {
        Self { granted }
    }

    pub fn scopes(&self) -> &ScopeSet {
        &self.granted
    }

    pub fn allows(&self, required: &ScopeSet) -> bool {
        self.granted.is_superset(required)
    }

    pub fn missing(&self, required: &ScopeSet) -> ScopeSet {
        required.difference(&self.granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(raw: &str) -> ScopeSet {
        ScopeSet::parse_delimited(raw, &[])
    }

    #[test]
    fn grant_reports_exactly_what_is_missing() {
        let grant = Grant::new(scopes("posts.read profile"));
        assert!(grant.allows(&scopes("profile")));
        assert!(!grant.allows(&scopes("profile posts.write")));
        assert_eq!(grant.missing(&scopes("profile posts.write")), scopes("posts.write"));
    }

    #[test]
    fn platform_scope_strings_split_on_their_separator() {
        assert_eq!(ScopeSet::parse_delimited("a,b c", &[',']).join(" "), "a b c");
        assert!(Scope::parse("has\"quote").is_err());
        assert!(Capability::parse("posts.publish").is_ok());
        assert!(Capability::parse("posts").is_err());
    }
}
