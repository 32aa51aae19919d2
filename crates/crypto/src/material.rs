//! Key material per algorithm, in process: generate it, derive its public key, sign with it.
//!
//! | algorithm | material | public key | signature |
//! |---|---|---|---|
//! | aes-256-gcm | 32 raw bytes | none | none |
//! | secp256k1 | 32 raw bytes (the scalar) | SEC1 uncompressed, 65 bytes | r‖s‖v, 65 bytes, low-S, v ∈ {27, 28}, over a 32-byte digest |
//! | p256 | PKCS#8 | SEC1 uncompressed, 65 bytes | r‖s, 64 bytes, ECDSA with SHA-256 of the message |
//! | ed25519 | PKCS#8 | 32 bytes | 64 bytes |
//! | ml-dsa-65 | PKCS#8 v1 holding the 32-byte seed | 1952 bytes | 3309 bytes, empty context |
//!
//! Providers that keep software-made keys (the software provider, hsm-wrapped and kms-wrapped
//! keys) store this material sealed or wrapped, and unseal it into zeroizing memory to use it.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ML_DSA_65_SIGNING,
    PqdsaKeyPair,
};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result, SecretBytes};
use zeroize::Zeroizing;

use crate::{rng, secp};

/// secp256k1 material: its 32 raw bytes.
fn secp256k1_bytes(material: &SecretBytes) -> Result<&[u8; 32]> {
    material
        .expose()
        .try_into()
        .map_err(|_| Error::new(ErrorKind::Corrupt, "secp256k1 material is not 32 bytes"))
}

fn secp256k1_secret(material: &SecretBytes) -> Result<secp256k1::SecretKey> {
    secp256k1::SecretKey::from_secret_bytes(*secp256k1_bytes(material)?).map_err(|_| {
        Error::new(
            ErrorKind::Corrupt,
            "secp256k1 material is not a valid scalar",
        )
    })
}

/// Generate material for `alg`; returns (material, public key).
pub fn generate(alg: Algorithm) -> Result<(SecretBytes, Option<Vec<u8>>)> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let failed = |what: &str| Error::internal(format!("generating a {what} key failed"));
    Ok(match alg {
        Algorithm::Aes256Gcm => {
            let mut k = vec![0u8; 32];
            rng::fill(&mut k)?;
            (SecretBytes::new(k), None)
        }
        Algorithm::Secp256k1 => loop {
            // Rejection sampling: a random 32-byte string is a valid scalar with probability
            // 1 - 2^-128, so this loop runs once in practice.
            let mut k = Zeroizing::new([0u8; 32]);
            rng::fill(k.as_mut())?;
            if let Ok(sk) = secp256k1::SecretKey::from_secret_bytes(*k) {
                let pk = secp256k1::PublicKey::from_secret_key(&sk);
                break (
                    SecretBytes::new(k.to_vec()),
                    Some(pk.serialize_uncompressed().to_vec()),
                );
            }
        },
        Algorithm::P256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| failed("P-256"))?;
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .map_err(|_| failed("P-256"))?;
            let pk = kp.public_key().as_ref().to_vec();
            (SecretBytes::new(doc.as_ref().to_vec()), Some(pk))
        }
        Algorithm::Ed25519 => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| failed("Ed25519"))?;
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| failed("Ed25519"))?;
            let pk = kp.public_key().as_ref().to_vec();
            (SecretBytes::new(doc.as_ref().to_vec()), Some(pk))
        }
        Algorithm::MlDsa65 => {
            let kp = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING).map_err(|_| failed("ML-DSA-65"))?;
            let doc = kp.to_pkcs8v1().map_err(|_| failed("ML-DSA-65"))?;
            let pk = kp.public_key().as_ref().to_vec();
            (SecretBytes::new(doc.as_ref().to_vec()), Some(pk))
        }
    })
}

/// Derive the public key from material.
pub fn public_key(alg: Algorithm, material: &SecretBytes) -> Result<Option<Vec<u8>>> {
    let corrupt = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("stored {alg} material does not parse"),
        )
    };
    Ok(match alg {
        Algorithm::Aes256Gcm => None,
        Algorithm::Secp256k1 => {
            let sk = secp256k1_secret(material)?;
            Some(
                secp256k1::PublicKey::from_secret_key(&sk)
                    .serialize_uncompressed()
                    .to_vec(),
            )
        }
        Algorithm::P256 => Some(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, material.expose())
                .map_err(|_| corrupt())?
                .public_key()
                .as_ref()
                .to_vec(),
        ),
        Algorithm::Ed25519 => Some(
            Ed25519KeyPair::from_pkcs8(material.expose())
                .map_err(|_| corrupt())?
                .public_key()
                .as_ref()
                .to_vec(),
        ),
        Algorithm::MlDsa65 => Some(
            PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, material.expose())
                .map_err(|_| corrupt())?
                .public_key()
                .as_ref()
                .to_vec(),
        ),
    })
}

/// Sign a caller's SHA-256 digest with unsealed P-256 material (ECDSA, r‖s): what AWS KMS's
/// MessageType DIGEST and Transit's `prehashed` do. Only P-256 signs a digest this way:
/// secp256k1's [`sign`] already takes one, and Ed25519 and ML-DSA-65 sign messages only.
pub fn sign_p256_digest(material: &SecretBytes, digest: &[u8; 32]) -> Result<Vec<u8>> {
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, material.expose())
        .map_err(|_| Error::new(ErrorKind::Corrupt, "stored p256 material does not parse"))?;
    let digest = aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
        .map_err(|_| Error::internal("a SHA-256 digest is 32 bytes"))?;
    Ok(kp
        .sign_digest(&digest)
        .map_err(|_| Error::internal("P-256 signing failed"))?
        .as_ref()
        .to_vec())
}

/// Sign with unsealed material. secp256k1 returns r‖s‖v (low-S, v ∈ {27, 28}).
pub fn sign(alg: Algorithm, material: &SecretBytes, message: &[u8]) -> Result<Vec<u8>> {
    let corrupt = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("stored {alg} material does not parse"),
        )
    };
    match alg {
        Algorithm::Aes256Gcm => Err(Error::new(
            ErrorKind::Unsupported,
            "aes-256-gcm keys encrypt; they do not sign",
        )),
        Algorithm::Secp256k1 => {
            let digest: [u8; 32] = message.try_into().map_err(|_| {
                Error::invalid(format!(
                    "secp256k1 signs a 32-byte digest, not {} bytes",
                    message.len()
                ))
            })?;
            let (rs, recid) = secp::sign_recoverable(digest, secp256k1_bytes(material)?)?;
            // libsecp256k1 always produces low-S signatures; the recovery id of a low-S
            // signature is 0 or 1 except with negligible probability (r ≥ n), refused here.
            let v = match recid {
                0 => 27,
                1 => 28,
                _ => return Err(Error::internal("secp256k1 recovery id out of range")),
            };
            let mut out = rs.to_vec();
            out.push(v);
            Ok(out)
        }
        Algorithm::P256 => {
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, material.expose())
                .map_err(|_| corrupt())?;
            let rng = aws_lc_rs::rand::SystemRandom::new();
            Ok(kp
                .sign(&rng, message)
                .map_err(|_| Error::internal("P-256 signing failed"))?
                .as_ref()
                .to_vec())
        }
        Algorithm::Ed25519 => {
            let kp = Ed25519KeyPair::from_pkcs8(material.expose()).map_err(|_| corrupt())?;
            Ok(kp.sign(message).as_ref().to_vec())
        }
        Algorithm::MlDsa65 => {
            let kp = PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, material.expose())
                .map_err(|_| corrupt())?;
            let mut sig = vec![0u8; ML_DSA_65_SIGNING.signature_len()];
            let n = kp
                .sign(message, &mut sig)
                .map_err(|_| Error::internal("ML-DSA-65 signing failed"))?;
            sig.truncate(n);
            Ok(sig)
        }
    }
}
