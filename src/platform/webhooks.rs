//! Verifiers for the deauthorization callbacks platforms send to the hub. The hub receives them
//! (they are HTTP posts to its public URLs), verifies them with these functions (or the
//! `webhooks` command), finds the channels of the platform user they name, and publishes one
//! `RevokeRequested` with `origin: platform` per channel: the worker then disables the channel
//! and destroys its tokens without calling the platform, whose grant is already gone.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::domain::secrets::ClientSecret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the signed request is malformed")]
    Malformed,
    #[error("the signed request uses an algorithm other than HMAC-SHA256")]
    UnsupportedAlgorithm,
    #[error("the signature does not match the app secret")]
    BadSignature,
    #[error("the signature is older than the tolerance")]
    Stale,
}

/// What a Meta `signed_request` (deauthorize or data-deletion callback, for Facebook,
/// Instagram and Threads apps alike) says once verified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct MetaSignedRequest {
    pub algorithm: String,
    /// The app-scoped id of the user who removed the app.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<i64>,
}

/// Verifies Meta's `signed_request`: `base64url(signature).base64url(payload)`, the signature
/// being HMAC-SHA256 of the encoded payload under the app secret, compared in constant time.
pub fn verify_meta_signed_request(
    signed_request: &str,
    app_secret: &ClientSecret,
) -> Result<MetaSignedRequest, WebhookError> {
    use base64::Engine;
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| WebhookError::Malformed)
    };
    let (signature, payload) = signed_request.trim().split_once('.').ok_or(WebhookError::Malformed)?;
    let signature = decode(signature)?;
    let claims: MetaSignedRequest = serde_json::from_slice(&decode(payload)?).map_err(|_| WebhookError::Malformed)?;
    if !claims.algorithm.eq_ignore_ascii_case("HMAC-SHA256") {
        return Err(WebhookError::UnsupportedAlgorithm);
    }
    let mut mac =
        HmacSha256::new_from_slice(app_secret.expose_secret().as_bytes()).map_err(|_| WebhookError::Malformed)?;
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).map_err(|_| WebhookError::BadSignature)?;
    Ok(claims)
}

/// Verifies TikTok's webhook signature header `TikTok-Signature: t=<unix>,s=<hex>`, where `s`
/// is HMAC-SHA256 of `"{t}.{body}"` under the client secret, and `t` is within `tolerance` of
/// `now` (replays of old posts are refused).
pub fn verify_tiktok_signature(
    header: &str,
    body: &[u8],
    client_secret: &ClientSecret,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("s", value)) => signature = decode_hex(value),
            _ => {}
        }
    }
    let (timestamp, signature) = timestamp.zip(signature).ok_or(WebhookError::Malformed)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(WebhookError::Stale);
    }
    let mut mac =
        HmacSha256::new_from_slice(client_secret.expose_secret().as_bytes()).map_err(|_| WebhookError::Malformed)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| WebhookError::BadSignature)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn sign(payload: &str, secret: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let encoded = engine.encode(payload);
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(encoded.as_bytes());
        format!("{}.{encoded}", engine.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_meta_signed_request_verifies_only_under_its_app_secret() {
        let secret = ClientSecret::new("app-secret".to_owned());
        let request = sign(
            r#"{"algorithm":"HMAC-SHA256","issued_at":1764800000,"user_id":"1234"}"#,
            "app-secret",
        );
        let claims = verify_meta_signed_request(&request, &secret);
        assert_eq!(claims.ok().and_then(|c| c.user_id).as_deref(), Some("1234"));
        let other = ClientSecret::new("another-secret".to_owned());
        assert_eq!(
            verify_meta_signed_request(&request, &other),
            Err(WebhookError::BadSignature)
        );
        let tampered = request.replacen('.', ".e", 1);
        assert!(verify_meta_signed_request(&tampered, &secret).is_err());
        let weak = sign(r#"{"algorithm":"none","user_id":"1234"}"#, "app-secret");
        assert_eq!(
            verify_meta_signed_request(&weak, &secret),
            Err(WebhookError::UnsupportedAlgorithm)
        );
        assert_eq!(
            verify_meta_signed_request("no-dot", &secret),
            Err(WebhookError::Malformed)
        );
    }

    #[test]
    fn a_tiktok_signature_verifies_and_old_ones_are_refused() {
        let secret = ClientSecret::new("client-secret".to_owned());
        let body = br#"{"event":"authorization.removed","user_openid":"open-1"}"#;
        let mut mac = HmacSha256::new_from_slice(b"client-secret").unwrap_or_else(|_| unreachable!());
        mac.update(b"1764800000.");
        mac.update(body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let header = format!("t=1764800000,s={hex}");
        assert_eq!(
            verify_tiktok_signature(&header, body, &secret, 1_764_800_010, 300),
            Ok(())
        );
        assert_eq!(
            verify_tiktok_signature(&header, b"{}", &secret, 1_764_800_010, 300),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_tiktok_signature(&header, body, &secret, 1_764_900_000, 300),
            Err(WebhookError::Stale)
        );
    }
}
