//! RSA-OAEP encryption (SHA-256 with MGF1-SHA-256, or SHA-1 with MGF1-SHA-1 for devices that
//! decrypt no other, SoftHSM2 2.6 among them): the software half of the `rsa-oaep` wrapping
//! scheme, whose private key is inside a device (`C_Decrypt` there).
//!
//! Devices give the public key as `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`; [`public_key_der`]
//! turns them into the X.509 `SubjectPublicKeyInfo` that aws-lc reads.

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPublicEncryptingKey,
    PublicEncryptingKey,
};
use hanzo_kms_core::{Error, Result};

/// The smallest modulus accepted, in bits.
pub const MIN_BITS: usize = 2048;

/// `SubjectPublicKeyInfo { rsaEncryption, RSAPublicKey { n, e } }` in DER, from big-endian
/// unsigned integers (leading zeros allowed).
pub fn public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let rsa_public_key = der(0x30, &[der_uint(modulus), der_uint(exponent)].concat());
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0u8];
    bit_string.extend_from_slice(&rsa_public_key);
    der(0x30, &[&algorithm[..], &der(0x03, &bit_string)].concat())
}

/// The OAEP hash (and MGF1 hash, the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// An RSA public key for OAEP encryption.
pub struct OaepKey(OaepPublicEncryptingKey);

impl OaepKey {
    /// Read a `SubjectPublicKeyInfo`; keys under [`MIN_BITS`] are refused.
    pub fn from_der(spki: &[u8]) -> Result<Self> {
        let key = PublicEncryptingKey::from_der(spki)
            .map_err(|e| Error::invalid(format!("not an RSA public key: {e}")))?;
        if key.key_size_bits() < MIN_BITS {
            return Err(Error::invalid(format!(
                "an RSA key of {} bits is too small (at least {MIN_BITS})",
                key.key_size_bits()
            )));
        }
        OaepPublicEncryptingKey::new(key)
            .map(Self)
            .map_err(|_| Error::invalid("the RSA key cannot encrypt with OAEP"))
    }

    /// The ciphertext length (the modulus length in bytes).
    pub fn ciphertext_len(&self) -> usize {
        self.0.ciphertext_size()
    }

    /// RSAES-OAEP(`hash`, MGF1-`hash`, empty label) of `plaintext`.
    pub fn encrypt(&self, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.0.ciphertext_size()];
        let n = self
            .0
            .encrypt(hash.algorithm(), plaintext, &mut out, None)
            .map_err(|_| Error::internal("RSA-OAEP encryption failed"))?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

fn der_uint(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let mut v = be[start..].to_vec();
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = n.to_be_bytes();
        let skip = len.iter().position(|b| *b != 0).unwrap_or(len.len() - 1);
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(body);
    out
}
