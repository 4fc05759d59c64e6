//! The webhook verifiers take what anyone on the internet can post to the hub.
#![no_main]

use libfuzzer_sys::fuzz_target;
use praisma_worker::domain::secrets::ClientSecret;
use praisma_worker::platform::webhooks;

fuzz_target!(|data: &[u8]| {
    let secret = ClientSecret::new("fuzz-app-secret".to_owned());
    let text = String::from_utf8_lossy(data);
    let _ = webhooks::verify_meta_signed_request(&text, &secret);
    let (header, body) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = webhooks::verify_tiktok_signature(header, body.as_bytes(), &secret, 1_764_800_000, 300);
});
