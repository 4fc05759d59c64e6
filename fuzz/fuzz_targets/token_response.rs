//! Every platform response parser: the token answer in each format, Meta's permissions edge,
//! token introspection, and the error-body classifier. Any bytes: a grant or a classified
//! error, no panic; the body is capped before it gets here, so memory is bounded by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use praisma_worker::platform::catalogue::TokenResponseFormat;
use praisma_worker::platform::token_response;

const FORMATS: [TokenResponseFormat; 5] = [
    TokenResponseFormat::Standard,
    TokenResponseFormat::Graph,
    TokenResponseFormat::InstagramLogin,
    TokenResponseFormat::Linkedin,
    TokenResponseFormat::Tiktok,
];

fuzz_target!(|data: &[u8]| {
    for format in FORMATS {
        let _ = token_response::parse(format, data, &[',']);
    }
    let _ = token_response::parse_permissions(data);
    let _ = token_response::parse_introspection(data);
    let _ = token_response::error_in_body(data);
});
