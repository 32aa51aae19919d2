//! Token strings: the bearer of an `Authorization` header (the server's `bearer`), an API token
//! `hkms_<id>_<secret>` (`parse_token`, before the MAC check), and a data ciphertext
//! `hkms:v<version>:<base64url>` (`parse_ciphertext`).
//!
//! Invariants: nothing panics; what parses re-encodes to the input (tokens, trimmed
//! ciphertexts) and parses again to the same value; a bearer is a trimmed part of the header.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hanzo_kms_server::fuzzing::bearer;
use hanzo_kms_service::data::parse_ciphertext;
use hanzo_kms_service::tokens::parse_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(b) = bearer(data) {
        if !b.is_empty() {
            let header = std::str::from_utf8(data).expect("a bearer comes from a text header");
            assert!(header.contains(b.as_str()));
            assert_eq!(b.trim(), b);
            if let Some((id, secret)) = parse_token(&b) {
                assert_eq!(format!("hkms_{id}_{secret}"), b);
            }
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((id, secret)) = parse_token(text) {
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(format!("hkms_{id}_{secret}"), text);
    }
    if let Ok((version, bytes)) = parse_ciphertext(text) {
        assert!(version >= 1);
        let again = format!("hkms:v{version}:{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(parse_ciphertext(&again).unwrap(), (version, bytes));
    }
});
