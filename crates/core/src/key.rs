//! The key model: keys, versions, states and origins.
//!
//! A key has one or more versions. New material is made by rotation, which adds a version and
//! makes it primary. Encryption and signing use the primary version; decryption and verification
//! accept any version that is still enabled. A key's state gates every version; a version's
//! state gates only itself.

use std::fmt;
use std::str::FromStr;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::name::KeyName;

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// The state of a key or of one version. Variants are in alphabetical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Material is gone. The name is never reused.
    Destroyed,
    /// Destruction is scheduled; the key cannot be used. `keys enable` cancels it.
    DestroyScheduled,
    /// Kept, but refused for every cryptographic operation.
    Disabled,
    /// Usable.
    Enabled,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Destroyed => "destroyed",
            Self::DestroyScheduled => "destroy-scheduled",
            Self::Disabled => "disabled",
            Self::Enabled => "enabled",
        }
    }
}

impl FromStr for KeyState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "destroyed" => Self::Destroyed,
            "destroy-scheduled" => Self::DestroyScheduled,
            "disabled" => Self::Disabled,
            "enabled" => Self::Enabled,
            _ => return Err(Error::invalid(format!("unknown key state '{s}'"))),
        })
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key's material was made and where it is used (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Generated inside the HSM and used there; never leaves it.
    HsmResident,
    /// Generated in software, stored wrapped under an HSM-resident KEK, unwrapped into zeroizing
    /// memory to use.
    HsmWrapped,
    /// Generated inside a remote key service (Google Cloud KMS, AWS KMS, OpenBao Transit) and
    /// used there; never leaves it.
    KmsResident,
    /// Generated in software, stored wrapped under a KEK inside a remote key service, unwrapped
    /// there into zeroizing memory to use (DESIGN.md §8).
    KmsWrapped,
    /// Generated in software and stored sealed under the software provider's master key.
    Software,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HsmResident => "hsm-resident",
            Self::HsmWrapped => "hsm-wrapped",
            Self::KmsResident => "kms-resident",
            Self::KmsWrapped => "kms-wrapped",
            Self::Software => "software",
        }
    }
}

impl FromStr for Origin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "hsm-resident" => Self::HsmResident,
            "hsm-wrapped" => Self::HsmWrapped,
            "kms-resident" => Self::KmsResident,
            "kms-wrapped" => Self::KmsWrapped,
            "software" => Self::Software,
            _ => return Err(Error::invalid(format!("unknown key origin '{s}'"))),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key metadata: everything about a key except its versions' material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub name: KeyName,
    pub algorithm: Algorithm,
    pub origin: Origin,
    /// The provider that holds the material (`software`, `softhsm2`, ...).
    pub provider: String,
    pub state: KeyState,
    pub primary_version: u32,
    /// Rotate automatically after this many seconds; `None` means never.
    pub rotation_period_secs: Option<i64>,
    pub created_at: UnixTime,
    pub rotated_at: UnixTime,
    /// When a scheduled destruction takes effect.
    pub destroy_at: Option<UnixTime>,
}

impl KeyMeta {
    /// Whether the key is past its rotation period at `now`.
    pub fn rotation_due(&self, now: UnixTime) -> bool {
        match self.rotation_period_secs {
            Some(p) if p > 0 => {
                self.state == KeyState::Enabled && now >= self.rotated_at.saturating_add(p)
            }
            _ => false,
        }
    }

    /// Refuse unless the key itself is enabled. The message names the key and its state.
    pub fn check_usable(&self) -> Result<()> {
        if self.state == KeyState::Enabled {
            return Ok(());
        }
        Err(Error::new(
            crate::ErrorKind::KeyState,
            format!("key {} is {}", self.name, self.state),
        ))
    }
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    pub version: u32,
    pub state: KeyState,
    pub created_at: UnixTime,
    /// The public key, for signing algorithms (encoding: see [`crate::provider::PublicKey`]).
    pub public_key: Option<Vec<u8>>,
}

impl KeyVersion {
    pub fn check_usable(&self, key: &KeyName) -> Result<()> {
        if self.state == KeyState::Enabled {
            return Ok(());
        }
        Err(Error::new(
            crate::ErrorKind::KeyState,
            format!("version {} of key {key} is {}", self.version, self.state),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Separator;

    fn meta(period: Option<i64>, state: KeyState) -> KeyMeta {
        KeyMeta {
            name: KeyName::parse("model:acme:gpt4", Separator::default()).unwrap(),
            algorithm: Algorithm::Aes256Gcm,
            origin: Origin::Software,
            provider: "software".into(),
            state,
            primary_version: 1,
            rotation_period_secs: period,
            created_at: 1_000,
            rotated_at: 1_000,
            destroy_at: None,
        }
    }

    #[test]
    fn rotation_due_respects_period_and_state() {
        let day = 86_400;
        let m = meta(Some(90 * day), KeyState::Enabled);
        assert!(!m.rotation_due(1_000 + 90 * day - 1));
        assert!(m.rotation_due(1_000 + 90 * day));
        assert!(!meta(None, KeyState::Enabled).rotation_due(i64::MAX));
        assert!(!meta(Some(day), KeyState::Disabled).rotation_due(1_000 + 2 * day));
    }

    #[test]
    fn unusable_states_name_the_key() {
        for s in [
            KeyState::Disabled,
            KeyState::DestroyScheduled,
            KeyState::Destroyed,
        ] {
            let e = meta(None, s).check_usable().unwrap_err();
            assert_eq!(e.to_string(), format!("key model:acme:gpt4 is {s}"));
            assert_eq!(e.kind(), crate::ErrorKind::KeyState);
        }
        for s in ["enabled", "disabled", "destroy-scheduled", "destroyed"] {
            assert_eq!(s.parse::<KeyState>().unwrap().as_str(), s);
        }
        for s in ["hsm-resident", "hsm-wrapped", "software"] {
            assert_eq!(s.parse::<Origin>().unwrap().as_str(), s);
        }
    }
}
