//! `mechanisms: {allow, deny}`: the subset of a token's mechanisms Hanzo KMS may use. Every
//! mechanism the provider uses is asked for through [`MechanismSet::permits`] first, so a
//! SoftHSM2 token restricted to a vendor's documented set behaves, for Hanzo KMS, as that
//! vendor's device would.

use cryptoki::mechanism::MechanismType as M;
use hanzo_kms_core::config::MechanismFilter;
use hanzo_kms_core::{Error, ErrorKind, Result};

/// The mechanisms that may be named in the config: every one Hanzo KMS uses, and those the
/// vendor profiles list. Others are written as numbers (`0x80000171`).
const NAMED: &[M] = &[
    M::AES_CBC,
    M::AES_CBC_PAD,
    M::AES_ECB,
    M::AES_GCM,
    M::AES_KEY_GEN,
    M::AES_KEY_WRAP,
    M::AES_KEY_WRAP_PAD,
    M::ECDH1_DERIVE,
    M::ECDSA,
    M::ECDSA_SHA256,
    M::ECC_EDWARDS_KEY_PAIR_GEN,
    M::ECC_KEY_PAIR_GEN,
    M::EDDSA,
    M::GENERIC_SECRET_KEY_GEN,
    M::RSA_PKCS,
    M::RSA_PKCS_KEY_PAIR_GEN,
    M::RSA_PKCS_OAEP,
    M::RSA_PKCS_PSS,
    M::SHA256,
    M::SHA256_HMAC,
    M::SHA256_RSA_PKCS,
];

/// The resolved filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MechanismSet {
    allow: Option<Vec<M>>,
    deny: Vec<M>,
}

impl MechanismSet {
    /// Everything the token has.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only `allow`.
    pub fn only(allow: &[M]) -> Self {
        Self {
            allow: Some(allow.to_vec()),
            deny: Vec::new(),
        }
    }

    /// Resolve the config's names; `path` is the config path for messages.
    pub fn from_config(filter: &MechanismFilter, path: &str) -> Result<Self> {
        let parse = |list: &[String], which: &str| -> Result<Vec<M>> {
            list.iter()
                .map(|n| {
                    parse_name(n).map_err(|e| {
                        Error::new(ErrorKind::Config, format!("{path}.mechanisms.{which}: {e}"))
                    })
                })
                .collect()
        };
        Ok(Self {
            allow: filter
                .allow
                .as_deref()
                .map(|a| parse(a, "allow"))
                .transpose()?,
            deny: parse(&filter.deny, "deny")?,
        })
    }

    /// Whether Hanzo KMS may use `m` (the token must also have it).
    pub fn permits(&self, m: M) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(&m)) && !self.deny.contains(&m)
    }
}

fn parse_name(name: &str) -> std::result::Result<M, String> {
    let t = name.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        let n = u64::from_str_radix(hex, 16).map_err(|_| format!("'{t}' is not a number"))?;
        return M::try_from(n)
            .or_else(|_| M::new_vendor_defined(n))
            .map_err(|_| format!("{t} is not a mechanism cryptoki knows"));
    }
    let upper = t.to_ascii_uppercase();
    let want = if upper.starts_with("CKM_") {
        upper
    } else {
        format!("CKM_{upper}")
    };
    NAMED
        .iter()
        .find(|m| m.to_string() == want)
        .copied()
        .ok_or_else(|| {
            format!(
                "'{t}' is not a mechanism name hanzo-kms knows (write it as a number, e.g. 0x1087); known: {}",
                NAMED.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_refusals() {
        assert_eq!(parse_name("CKM_AES_GCM"), Ok(M::AES_GCM));
        assert_eq!(parse_name("aes_gcm"), Ok(M::AES_GCM));
        assert_eq!(parse_name("0x1087"), Ok(M::AES_GCM));
        assert!(
            parse_name("0x80000171").is_ok(),
            "vendor-defined numbers are taken"
        );
        let e = parse_name("CKM_AES_GMC").unwrap_err();
        assert!(e.contains("CKM_AES_GCM"), "{e}");
        let set = MechanismSet::from_config(
            &MechanismFilter {
                allow: Some(vec!["CKM_ECDSA".into(), "CKM_AES_GCM".into()]),
                deny: vec!["CKM_AES_GCM".into()],
            },
            "kms.lux.x",
        )
        .unwrap();
        assert!(set.permits(M::ECDSA));
        assert!(!set.permits(M::AES_GCM), "deny wins");
        assert!(!set.permits(M::EDDSA), "not allowed");
        assert!(MechanismSet::all().permits(M::EDDSA));
        let e = MechanismSet::from_config(
            &MechanismFilter {
                allow: None,
                deny: vec!["nope".into()],
            },
            "kms.lux.x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("kms.lux.x.mechanisms.deny"), "{e}");
    }
}
