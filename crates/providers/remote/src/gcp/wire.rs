//! The wire side of the Google Cloud KMS client: the proto3 JSON shapes of the answers (with
//! their CRC32C fields), Google's error body, what is retried, and the PEM/SPKI parsing of
//! public keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::crc32c::crc32c;
use crate::http::{Reply, Verdict};

#[derive(Clone, Copy)]
pub(super) enum Method {
    Get,
    Post,
}

/// A throttled or unavailable call is tried again; so is one whose request CRC32C the
/// service found wrong (damaged on the way; Google advises a limited number of retries).
pub(super) fn judge(r: &Reply) -> Verdict {
    let checksum = r.status == 400 && ApiError::parse(r).message.contains("checksum");
    if r.status == 429 {
        Verdict::Throttled
    } else if matches!(r.status, 500 | 502 | 503 | 504) || checksum {
        Verdict::Retry
    } else {
        Verdict::Done
    }
}

#[derive(Clone, Default)]
pub(super) struct ApiError {
    pub(super) status: String,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn parse(reply: &Reply) -> Self {
        #[derive(Deserialize)]
        struct Outer {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(default)]
            message: String,
            #[serde(default)]
            status: String,
        }
        serde_json::from_slice::<Outer>(&reply.body)
            .map(|o| Self {
                status: o.error.status,
                message: o.error.message,
            })
            .unwrap_or_else(|_| Self {
                status: "UNKNOWN".into(),
                message: "no error body".into(),
            })
    }
}

#[derive(Deserialize)]
pub(super) struct OAuthError {
    pub(super) error: String,
    #[serde(default)]
    pub(super) error_description: Option<String>,
}

pub(super) fn decode(b64: &str) -> Option<Vec<u8>> {
    STANDARD.decode(b64).ok()
}

pub(super) fn match_crc(
    data: &[u8],
    got: Option<Crc>,
    field: &str,
) -> std::result::Result<(), String> {
    match got {
        Some(Crc(c)) if c == u64::from(crc32c(data)) => Ok(()),
        Some(_) => Err(format!("{field} does not match the data")),
        None => Err(format!("the answer has no {field}")),
    }
}

/// `SubjectPublicKeyInfo` DER prefixes of an uncompressed EC point (id-ecPublicKey + curve).
pub(super) const SPKI_P256: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
pub(super) const SPKI_SECP256K1: [u8; 23] = [
    0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
];

pub(super) fn spki_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

// --- Wire types (proto3 JSON mapping: lowerCamelCase, bytes as base64, int64 as a string) ---

/// An `Int64Value` CRC32C: a JSON string (or number) holding an integer below 2^32.
#[derive(Clone, Copy)]
pub(super) struct Crc(pub(super) u64);

impl<'de> Deserialize<'de> for Crc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Crc(n)),
            Raw::S(s) => s.parse().map(Crc).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CryptoKey {
    pub(super) name: String,
    #[serde(default)]
    pub(super) purpose: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CryptoKeyVersion {
    #[serde(default)]
    pub(super) state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EncryptResponse {
    #[serde(default)]
    pub(super) name: String,
    pub(super) ciphertext: String,
    pub(super) ciphertext_crc32c: Option<Crc>,
    #[serde(default)]
    pub(super) verified_plaintext_crc32c: bool,
    #[serde(default)]
    pub(super) verified_additional_authenticated_data_crc32c: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DecryptResponse {
    #[serde(default)]
    pub(super) plaintext: String,
    pub(super) plaintext_crc32c: Option<Crc>,
}

impl Drop for DecryptResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.plaintext);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SignResponse {
    pub(super) signature: String,
    pub(super) signature_crc32c: Option<Crc>,
    #[serde(default)]
    pub(super) verified_digest_crc32c: bool,
    #[serde(default)]
    pub(super) name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PublicKeyResponse {
    pub(super) pem: String,
    #[serde(default)]
    pub(super) algorithm: String,
    pub(super) pem_crc32c: Option<Crc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MacResponse {
    pub(super) mac: String,
    pub(super) mac_crc32c: Option<Crc>,
    #[serde(default)]
    pub(super) verified_data_crc32c: bool,
    #[serde(default)]
    pub(super) name: String,
}

impl Drop for MacResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_fields_accept_strings_and_numbers() {
        let c: Crc = serde_json::from_str("\"4294967295\"").unwrap();
        assert_eq!(c.0, 4_294_967_295);
        let c: Crc = serde_json::from_str("12").unwrap();
        assert_eq!(c.0, 12);
        assert!(match_crc(b"123456789", Some(Crc(0xE306_9283)), "f").is_ok());
        assert!(match_crc(b"123456789", Some(Crc(0xE306_9282)), "f").is_err());
        assert!(match_crc(b"123456789", None, "f").is_err());
    }
}
