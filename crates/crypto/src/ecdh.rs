//! ECDH on P-256 in software: the ephemeral half of the `ecdh-p256` wrapping scheme, whose
//! static half is a key pair inside a device (`C_DeriveKey(CKM_ECDH1_DERIVE)` there).
//!
//! The shared secret is the x-coordinate of the product point (SEC 1 §3.3.1, what
//! `CKD_NULL` returns), 32 bytes. Public keys are SEC 1 uncompressed points (65 bytes).

use aws_lc_rs::agreement::{ECDH_P256, ParsedPublicKey, PrivateKey, UnparsedPublicKey, agree};
use hanzo_kms_core::{Error, Result, SecretBytes};

/// Length of an uncompressed P-256 point.
pub const POINT_LEN: usize = 65;

/// Whether `point` is an uncompressed P-256 point on the curve (not the identity).
pub fn is_valid_point(point: &[u8]) -> bool {
    point.len() == POINT_LEN
        && point[0] == 0x04
        && ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, point)).is_ok()
}

/// A fresh ephemeral key pair agreed with `peer`: (our public point, shared secret). The
/// ephemeral private key is dropped (and wiped by aws-lc) before this returns.
pub fn ephemeral(peer: &[u8]) -> Result<(Vec<u8>, SecretBytes)> {
    if !is_valid_point(peer) {
        return Err(Error::invalid(
            "the peer's P-256 public key is not a point on the curve",
        ));
    }
    let private = PrivateKey::generate(&ECDH_P256)
        .map_err(|_| Error::internal("generating a P-256 ephemeral key failed"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| Error::internal("computing a P-256 public key failed"))?
        .as_ref()
        .to_vec();
    let secret = agree_with(&private, peer)?;
    Ok((public, secret))
}

/// ECDH of a 32-byte big-endian private scalar with `peer` (tests and vectors).
pub fn agree_scalar(private: &[u8], peer: &[u8]) -> Result<SecretBytes> {
    let private = PrivateKey::from_private_key(&ECDH_P256, private)
        .map_err(|_| Error::invalid("not a P-256 private key"))?;
    agree_with(&private, peer)
}

/// The public point of a 32-byte private scalar.
pub fn public_of(private: &[u8]) -> Result<Vec<u8>> {
    let private = PrivateKey::from_private_key(&ECDH_P256, private)
        .map_err(|_| Error::invalid("not a P-256 private key"))?;
    Ok(private
        .compute_public_key()
        .map_err(|_| Error::internal("computing a P-256 public key failed"))?
        .as_ref()
        .to_vec())
}

fn agree_with(private: &PrivateKey, peer: &[u8]) -> Result<SecretBytes> {
    agree(
        private,
        UnparsedPublicKey::new(&ECDH_P256, peer),
        Error::invalid("the peer's P-256 public key is not a point on the curve"),
        |z| Ok(SecretBytes::new(z.to_vec())),
    )
}
