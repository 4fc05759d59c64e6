//! Token encryption at rest: AES-256-GCM-SIV under a versioned key ring.
//!
//! Every ciphertext carries the id of the key that sealed it and is bound, as associated data,
//! to its tenant, its channel and what it is, so a ciphertext copied to another row, channel or
//! tenant fails to open instead of decrypting to somebody else's token.

use std::collections::BTreeMap;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::domain::{ChannelId, TenantId};

/// What a ciphertext is, as bound into its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    AccessToken,
    RefreshToken,
    PkceVerifier,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access",
            Self::RefreshToken => "refresh",
            Self::PkceVerifier => "pkce_verifier",
        }
    }
}

/// Where a ciphertext belongs. `context` narrows it further (a verifier names its state hash).
#[derive(Debug, Clone)]
pub struct Binding<'a> {
    pub tenant: &'a TenantId,
    pub channel: &'a ChannelId,
    pub kind: SecretKind,
    pub context: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        // '|' cannot occur in any of these parts, so the encoding is unambiguous.
        format!(
            "praisma.vault.v1|{}|{}|{}|{}|{}",
            self.tenant.as_str(),
            self.channel.as_str(),
            self.kind.as_str(),
            self.context,
            key_id
        )
        .into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("PRAISMA_VAULT_KEYS is not set; give it one or more `id:base64-of-32-bytes` keys, the active one first")]
    NoKeys,
    #[error("PRAISMA_VAULT_KEYS entry {position} is not `id:base64-of-32-bytes`")]
    MalformedKey { position: usize },
    #[error("PRAISMA_VAULT_KEYS entry {position} does not decode to exactly 32 bytes")]
    WrongKeyLength { position: usize },
    #[error("PRAISMA_VAULT_KEYS lists key id {0:?} twice")]
    DuplicateKeyId(String),
    #[error("a ciphertext names key {0:?}, which is not in the key ring")]
    UnknownKey(String),
    #[error("a ciphertext failed authentication: it was altered or belongs elsewhere")]
    Tampered,
}

pub struct Vault {
    active: String,
    ciphers: BTreeMap<String, Aes256GcmSiv>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("active", &self.active)
            .field("keys", &self.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    /// `spec` is `id:base64key[,id:base64key...]`; the first key seals, all of them open.
    pub fn from_spec(spec: &SecretString) -> Result<Self, VaultError> {
        let mut ciphers = BTreeMap::new();
        let mut active = None;
        for (index, entry) in spec
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = index + 1;
            let (id, encoded) = entry.split_once(':').ok_or(VaultError::MalformedKey { position })?;
            let id_ok = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !id_ok {
                return Err(VaultError::MalformedKey { position });
            }
            let key = Zeroizing::new(
                STANDARD
                    .decode(encoded)
                    .map_err(|_| VaultError::MalformedKey { position })?,
            );
            if key.len() != 32 {
                return Err(VaultError::WrongKeyLength { position });
            }
            let cipher = Aes256GcmSiv::new_from_slice(&key).map_err(|_| VaultError::WrongKeyLength { position })?;
            if ciphers.insert(id.to_owned(), cipher).is_some() {
                return Err(VaultError::DuplicateKeyId(id.to_owned()));
            }
            active.get_or_insert_with(|| id.to_owned());
        }
        let active = active.ok_or(VaultError::NoKeys)?;
        Ok(Self { active, ciphers })
    }

    /// A fresh random key ring of one key, for the demo and tests.
    pub fn ephemeral_spec() -> SecretString {
        let key = Zeroizing::new(crate::random::bytes::<32>());
        SecretString::from(format!("ephemeral:{}", STANDARD.encode(*key)))
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals each of a channel's tokens under its own binding.
    pub fn seal_all<'a>(
        &self,
        tenant: &TenantId,
        channel: &ChannelId,
        plaintexts: impl IntoIterator<Item = (SecretKind, &'a str)>,
    ) -> Vec<(SecretKind, Sealed)> {
        plaintexts
            .into_iter()
            .map(|(kind, plaintext)| {
                let binding = Binding {
                    tenant,
                    channel,
                    kind,
                    context: "",
                };
                (kind, self.seal(&binding, plaintext))
            })
            .collect()
    }

    pub fn seal(&self, binding: &Binding<'_>, plaintext: &str) -> Sealed {
        let nonce = crate::random::bytes::<12>();
        let cipher = &self.ciphers[&self.active];
        let aad = binding.associated_data(&self.active);
        // AES-GCM-SIV encryption fails only for inputs over 2^36 bytes; tokens are far smaller.
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        Sealed {
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(&self, binding: &Binding<'_>, sealed: &Sealed) -> Result<Zeroizing<String>, VaultError> {
        let cipher = self
            .ciphers
            .get(&sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 || sealed.ciphertext.is_empty() {
            return Err(VaultError::Tampered);
        }
        let aad = binding.associated_data(&sealed.key_id);
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| VaultError::Tampered)?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| VaultError::Tampered)?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TenantId, ChannelId, ChannelId) {
        let parse = |t: &str| TenantId::parse(t).map_err(|e| e.to_string());
        let (Ok(tenant), Ok(a), Ok(b)) = (parse("t1"), ChannelId::parse("page-a"), ChannelId::parse("page-b")) else {
            panic!("fixture ids are valid")
        };
        (tenant, a, b)
    }

    #[test]
    fn round_trip_and_binding() {
        let Ok(vault) = Vault::from_spec(&Vault::ephemeral_spec()) else {
            panic!("ephemeral spec is valid")
        };
        let (tenant, a, b) = ids();
        let bind = |channel| Binding {
            tenant: &tenant,
            channel,
            kind: SecretKind::AccessToken,
            context: "",
        };
        let sealed = vault.seal(&bind(&a), "token-value");
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"token-value"));
        assert_eq!(
            vault.open(&bind(&a), &sealed).map(|p| p.to_string()).ok().as_deref(),
            Some("token-value")
        );
        assert!(matches!(vault.open(&bind(&b), &sealed), Err(VaultError::Tampered)));
        let refresh = Binding {
            kind: SecretKind::RefreshToken,
            ..bind(&a)
        };
        assert!(matches!(vault.open(&refresh, &sealed), Err(VaultError::Tampered)));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(vault.open(&bind(&a), &flipped), Err(VaultError::Tampered)));
    }

    #[test]
    fn old_keys_open_and_the_first_key_seals() {
        let old = Vault::ephemeral_spec();
        let Ok(old_vault) = Vault::from_spec(&old) else {
            panic!()
        };
        let (tenant, a, _) = ids();
        let binding = Binding {
            tenant: &tenant,
            channel: &a,
            kind: SecretKind::RefreshToken,
            context: "",
        };
        let sealed = old_vault.seal(&binding, "r1");
        let new_key = STANDARD.encode([7u8; 32]);
        let ring = SecretString::from(format!("k2:{new_key},{}", old.expose_secret()));
        let Ok(ring) = Vault::from_spec(&ring) else { panic!() };
        assert_eq!(ring.active_key_id(), "k2");
        assert!(ring.open(&binding, &sealed).is_ok());
    }

    #[test]
    fn bad_specs_never_echo_the_key() {
        let short = SecretString::from(format!("k1:{}", STANDARD.encode([1u8; 16])));
        let message = Vault::from_spec(&short)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "PRAISMA_VAULT_KEYS entry 1 does not decode to exactly 32 bytes"
        );
        assert!(matches!(
            Vault::from_spec(&SecretString::from(String::new())),
            Err(VaultError::NoKeys)
        ));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn vault() -> Vault {
        let spec = SecretString::from(format!("k1:{}", STANDARD.encode([3u8; 32])));
        Vault::from_spec(&spec).unwrap_or_else(|_| unreachable!("a valid spec"))
    }

    fn id() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_.:-]{0,20}"
    }

    proptest! {
        #[test]
        fn what_is_sealed_opens_only_where_it_was_bound(
            plaintext in ".{0,512}",
            tenant in id(),
            channel in id(),
            other_channel in id(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let vault = vault();
            let (Ok(tenant), Ok(channel), Ok(other)) =
                (TenantId::parse(tenant), ChannelId::parse(channel), ChannelId::parse(other_channel)) else {
                return Ok(());
            };
            let binding = Binding { tenant: &tenant, channel: &channel, kind: SecretKind::RefreshToken, context: "" };
            let sealed = vault.seal(&binding, &plaintext);
            prop_assert_eq!(vault.open(&binding, &sealed).map(|p| p.to_string()).ok(), Some(plaintext.clone()));

            // Any changed byte of the ciphertext or the nonce fails.
            let mut altered = sealed.clone();
            let at = flip.index(altered.ciphertext.len());
            altered.ciphertext[at] ^= 1 << bit;
            prop_assert!(vault.open(&binding, &altered).is_err());
            let mut renonced = sealed.clone();
            renonced.nonce[flip.index(12)] ^= 1 << bit;
            prop_assert!(vault.open(&binding, &renonced).is_err());
            // Another key id, channel or kind fails.
            let rekeyed = Sealed { key_id: "k9".into(), ..sealed.clone() };
            prop_assert!(vault.open(&binding, &rekeyed).is_err());
            if other != channel {
                let elsewhere = Binding { channel: &other, ..binding.clone() };
                prop_assert!(vault.open(&elsewhere, &sealed).is_err());
            }
            let as_access = Binding { kind: SecretKind::AccessToken, ..binding };
            prop_assert!(vault.open(&as_access, &sealed).is_err());
        }
    }
}
