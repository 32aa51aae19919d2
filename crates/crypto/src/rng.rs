//! The system's cryptographically secure random generator (aws-lc-rs, seeded by the OS).

use hanzo_kms_core::{Error, Result, SecretKey32};
use zeroize::Zeroizing;

use crate::aead::NONCE;

/// Fill `out` from the system's CSPRNG.
pub fn fill(out: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(out).map_err(|_| Error::internal("the system random generator failed"))
}

/// A fresh random AES-GCM nonce.
pub fn nonce() -> Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    fill(&mut n)?;
    Ok(n)
}

/// A fresh random 256-bit key (a master key, a data key).
pub fn key32() -> Result<SecretKey32> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill(bytes.as_mut())?;
    Ok(SecretKey32::from_bytes(*bytes))
}

/// 32 random bytes that are not secret (nonces of signed objects).
pub fn bytes32() -> Result<[u8; 32]> {
    let mut n = [0u8; 32];
    fill(&mut n)?;
    Ok(n)
}
