//! General-purpose signing with `api:` keys (REST `/v1/keys/{name}/sign` and `/verify`, gRPC
//! `Sign`, `SignBatch`, `Verify`, `VerifyBatch`).
//!
//! Only `api:` keys sign arbitrary messages. PoAI and HMM keys sign nothing but their typed
//! EIP-712 objects: a raw digest signed with a PoAI key would be an attestation that skipped the
//! time window and the replay guard, so those keys refuse here and name the route to use.
//!
//! What is signed, per algorithm:
//!
//! | algorithm | signed value | signature |
//! |---|---|---|
//! | secp256k1 | keccak256(message), or the message itself when `prehashed` (32 bytes) | 65 bytes r‖s‖v, low-S, v ∈ {27, 28} |
//! | p256 | the message (ECDSA with SHA-256), or the caller's SHA-256 digest when `prehashed` (32 bytes) | 64 bytes r‖s |
//! | ed25519 | the message | 64 bytes |
//! | ml-dsa-65 | the message | 3309 bytes |
//!
//! `prehashed` signs a digest the caller made, as AWS KMS's MessageType DIGEST and Vault
//! Transit's `prehashed` do: for p256 a SHA-256 digest, for secp256k1 any 32-byte digest (keccak
//! for Ethereum). Ed25519 and ML-DSA-65 refuse it (they sign messages only; Ed25519ph is not
//! offered), so a caller cannot believe it signed a digest when the key hashed it again.

use hanzo_kms_core::eip712::keccak256;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyName, Result};
use serde::Serialize;

use crate::operation as op;
use crate::pipeline::{Done, Target, check_verifying_version};
use crate::sign::signer_of;
use crate::{Kms, RequestCtx};

/// The largest message `sign` accepts (the server's body limit usually bites first).
pub const MAX_MESSAGE: usize = 1 << 20;

/// A general-purpose signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RawSignature {
    pub key: String,
    pub version: u32,
    pub algorithm: String,
    /// Hex, `0x`-prefixed.
    pub signature: String,
    /// secp256k1: the Ethereum address; otherwise keccak-256 of the public key, in hex (the
    /// public key itself: `GET /v1/keys/{name}/public`).
    pub signer: String,
}

/// The answer of a general-purpose verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RawVerdict {
    pub valid: bool,
    /// The key version whose public key verified the signature (`null` when invalid).
    pub version: Option<u32>,
}

/// What the provider signs (and the verifier checks) for one message.
#[derive(Debug, PartialEq, Eq)]
enum ToSign {
    /// Handed to [`hanzo_kms_core::Provider::sign`] as it is.
    Value(Vec<u8>),
    /// A caller's SHA-256 digest for a P-256 key.
    P256Digest([u8; 32]),
}

/// What is signed for `message`.
fn to_sign(algorithm: Algorithm, message: &[u8], prehashed: bool) -> Result<ToSign> {
    to_value(algorithm, message, prehashed).and_then(|v| match (algorithm, prehashed) {
        (Algorithm::P256, true) => v
            .as_slice()
            .try_into()
            .map(ToSign::P256Digest)
            .map_err(|_| {
                Error::invalid(format!(
                    "message: a prehashed p256 message is a 32-byte SHA-256 digest, not {} bytes",
                    v.len()
                ))
            }),
        _ => Ok(ToSign::Value(v)),
    })
}

fn to_value(algorithm: Algorithm, message: &[u8], prehashed: bool) -> Result<Vec<u8>> {
    if message.len() > MAX_MESSAGE {
        return Err(Error::invalid(format!(
            "message: {} bytes is more than the {MAX_MESSAGE} bytes a signature may cover; \
             hash it and sign the digest",
            message.len()
        )));
    }
    match (algorithm, prehashed) {
        (Algorithm::Secp256k1, true) if message.len() == 32 => Ok(message.to_vec()),
        (Algorithm::Secp256k1, true) => Err(Error::invalid(format!(
            "message: a prehashed secp256k1 message is a 32-byte digest, not {} bytes",
            message.len()
        ))),
        (Algorithm::Secp256k1, false) => Ok(keccak256(message).to_vec()),
        (Algorithm::Aes256Gcm, _) => Err(Error::new(
            ErrorKind::Unsupported,
            "this key is aes-256-gcm: it encrypts and does not sign",
        )),
        (Algorithm::P256, true) => Ok(message.to_vec()),
        (_, true) => Err(Error::invalid(format!(
            "prehashed is for secp256k1 and p256 keys; {algorithm} signs the message itself"
        ))),
        (_, false) => Ok(message.to_vec()),
    }
}

impl Kms {
    /// Sign each of `messages` with the primary version of an `api:` key. One audit record
    /// covers the call; nothing is returned before it is durable.
    pub async fn sign_messages(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        messages: &[Vec<u8>],
        prehashed: bool,
    ) -> Result<Vec<RawSignature>> {
        let operation = if messages.len() == 1 {
            &op::KEY_SIGN
        } else {
            &op::KEY_SIGN_BATCH
        };
        self.run(ctx, operation, Target::Key(key), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let (version, kref) = call.version(None)?;
                let algorithm = kref.algorithm;
                let mut out = Vec::with_capacity(messages.len());
                let mut signatures = Vec::with_capacity(messages.len());
                for m in messages {
                    let signature = match to_sign(algorithm, m, prehashed)? {
                        ToSign::Value(value) => kms.device(|p| p.sign(&kref, &value))?,
                        ToSign::P256Digest(d) => kms.device(|p| p.sign_p256_digest(&kref, &d))?,
                    };
                    signatures.push(signature.0);
                }
                let public = call
                    .key()?
                    .version(version)
                    .and_then(|v| v.info.public_key.clone())
                    .unwrap_or_default();
                let signer = signer_of(algorithm, &public);
                for signature in signatures {
                    out.push(RawSignature {
                        key: key.to_string(),
                        version,
                        algorithm: algorithm.to_string(),
                        signature: format!("0x{}", hex::encode(&signature)),
                        signer: signer.clone(),
                    });
                }
                Ok(Done::Ok(out))
            })
        })
        .await
    }

    /// Verify `(message, signature)` pairs under any version of an `api:` key whose public key
    /// is stored. A signature that verifies only under a disabled version is refused with the
    /// key-state error (docs/signing.md, "Verification and key state").
    pub async fn verify_messages(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        items: &[(Vec<u8>, Vec<u8>)],
        prehashed: bool,
    ) -> Result<Vec<RawVerdict>> {
        let operation = if items.len() == 1 {
            &op::KEY_VERIFY
        } else {
            &op::KEY_VERIFY_BATCH
        };
        self.run(ctx, operation, Target::Key(key), |call| {
            Box::pin(async move {
                let stored = call.key()?;
                let algorithm = stored.meta.algorithm;
                let mut out = Vec::with_capacity(items.len());
                for (message, signature) in items {
                    let value = to_sign(algorithm, message, prehashed)?;
                    let version = stored.versions.iter().find_map(|v| {
                        let pk = v.info.public_key.as_deref()?;
                        let good = match &value {
                            ToSign::Value(value) => {
                                hanzo_kms_crypto::verify::verify(algorithm, pk, value, signature)
                            }
                            ToSign::P256Digest(d) => {
                                hanzo_kms_crypto::verify::verify_p256_digest(pk, d, signature)
                            }
                        };
                        good.then_some(v.info.version)
                    });
                    if let Some(v) = version {
                        check_verifying_version(stored, v)?;
                    }
                    out.push(RawVerdict {
                        valid: version.is_some(),
                        version,
                    });
                }
                Ok(Done::Ok(out))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secp256k1_hashes_unless_prehashed() {
        let m = b"hello";
        assert_eq!(
            to_sign(Algorithm::Secp256k1, m, false).unwrap(),
            ToSign::Value(keccak256(m).to_vec())
        );
        let d = [7u8; 32];
        assert_eq!(
            to_sign(Algorithm::Secp256k1, &d, true).unwrap(),
            ToSign::Value(d.to_vec())
        );
        assert!(to_sign(Algorithm::Secp256k1, m, true).is_err());
    }

    #[test]
    fn p256_signs_a_callers_digest_when_prehashed() {
        assert_eq!(
            to_sign(Algorithm::P256, &[9; 32], true).unwrap(),
            ToSign::P256Digest([9; 32])
        );
        assert_eq!(
            to_sign(Algorithm::P256, b"m", false).unwrap(),
            ToSign::Value(b"m".to_vec())
        );
        let e = to_sign(Algorithm::P256, &[0; 31], true).unwrap_err();
        assert!(
            e.message().contains("32-byte SHA-256 digest, not 31"),
            "{e}"
        );
    }

    #[test]
    fn prehashed_is_refused_where_it_would_be_hashed_again() {
        let e = to_sign(Algorithm::Ed25519, &[0; 32], true).unwrap_err();
        assert!(e.message().contains("secp256k1 and p256 keys"), "{e}");
        assert!(to_sign(Algorithm::MlDsa65, &[0; 32], true).is_err());
        assert_eq!(
            to_sign(Algorithm::Ed25519, b"m", false).unwrap(),
            ToSign::Value(b"m".to_vec())
        );
        assert!(to_sign(Algorithm::Aes256Gcm, b"m", false).is_err());
        assert!(to_sign(Algorithm::Ed25519, &vec![0; MAX_MESSAGE + 1], false).is_err());
    }
}
