//! Key algorithms, and which purposes may use them.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::name::Purpose;

/// A key algorithm. Variants are in alphabetical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-256-GCM: a symmetric key that encrypts data and wraps data keys.
    Aes256Gcm,
    /// Ed25519 (RFC 8032) signatures over the message.
    Ed25519,
    /// ML-DSA-65 (FIPS 204) signatures over the message, empty context.
    MlDsa65,
    /// ECDSA over P-256 with SHA-256 of the message; signature is fixed-size r‖s.
    P256,
    /// ECDSA over secp256k1 of a 32-byte digest; signature is r‖s‖v, low-S, v ∈ {27, 28}.
    Secp256k1,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Self::Aes256Gcm,
        Self::Ed25519,
        Self::MlDsa65,
        Self::P256,
        Self::Secp256k1,
    ];

    /// The canonical name used in the CLI, the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes-256-gcm",
            Self::Ed25519 => "ed25519",
            Self::MlDsa65 => "ml-dsa-65",
            Self::P256 => "p256",
            Self::Secp256k1 => "secp256k1",
        }
    }

    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::Aes256Gcm)
    }

    pub fn is_signing(self) -> bool {
        !self.is_symmetric()
    }

    /// The algorithms a purpose may use. `model` and `data` keys encrypt; `poai` and `hmm` keys
    /// sign (secp256k1 for chains, ML-DSA-65 for post-quantum use); `api` keys may be anything.
    pub fn allowed_for(purpose: Purpose) -> &'static [Algorithm] {
        match purpose {
            Purpose::Api => &Self::ALL,
            Purpose::Data | Purpose::Model => &[Self::Aes256Gcm],
            Purpose::Hmm | Purpose::Poai => &[Self::MlDsa65, Self::Secp256k1],
        }
    }

    /// Refuse an algorithm that the purpose does not allow, saying which ones it does.
    pub fn check_purpose(self, purpose: Purpose) -> Result<()> {
        let allowed = Self::allowed_for(purpose);
        if allowed.contains(&self) {
            return Ok(());
        }
        let list: Vec<_> = allowed.iter().map(|a| a.as_str()).collect();
        Err(Error::invalid(format!(
            "algorithm {self} cannot be used for {purpose} keys; {purpose} keys use {}",
            list.join(" or ")
        )))
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Accepts the canonical names and the spellings of the HIP-005 config
    /// (`AES-256-GCM`, `ECDSA-secp256k1`, `ML-DSA-65`), case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let alg = match lower.as_str() {
            "aes-256-gcm" | "aes256-gcm" | "aes256gcm" => Self::Aes256Gcm,
            "ed25519" | "eddsa-ed25519" => Self::Ed25519,
            "ml-dsa-65" | "mldsa65" | "ml-dsa65" => Self::MlDsa65,
            "p256" | "p-256" | "ecdsa-p256" | "ecdsa-p-256" | "secp256r1" => Self::P256,
            "secp256k1" | "ecdsa-secp256k1" => Self::Secp256k1,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown algorithm '{}'; expected one of: aes-256-gcm, ed25519, ml-dsa-65, p256, secp256k1",
                    s.escape_default()
                )));
            }
        };
        Ok(alg)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_spellings() {
        assert_eq!(
            "AES-256-GCM".parse::<Algorithm>().unwrap(),
            Algorithm::Aes256Gcm
        );
        assert_eq!(
            "ECDSA-secp256k1".parse::<Algorithm>().unwrap(),
            Algorithm::Secp256k1
        );
        assert_eq!(
            "ML-DSA-65".parse::<Algorithm>().unwrap(),
            Algorithm::MlDsa65
        );
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
    }

    #[test]
    fn unknown_algorithm_lists_the_choices() {
        let e = "rsa-2048".parse::<Algorithm>().unwrap_err();
        assert!(
            e.to_string().contains("unknown algorithm 'rsa-2048'"),
            "{e}"
        );
        assert!(e.to_string().contains("secp256k1"), "{e}");
    }

    #[test]
    fn purposes_restrict_algorithms() {
        assert!(Algorithm::Aes256Gcm.check_purpose(Purpose::Model).is_ok());
        let e = Algorithm::Secp256k1
            .check_purpose(Purpose::Model)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "algorithm secp256k1 cannot be used for model keys; model keys use aes-256-gcm"
        );
        assert!(Algorithm::Aes256Gcm.check_purpose(Purpose::Poai).is_err());
        assert!(Algorithm::MlDsa65.check_purpose(Purpose::Poai).is_ok());
        for a in Algorithm::ALL {
            assert!(a.check_purpose(Purpose::Api).is_ok());
        }
    }
}
