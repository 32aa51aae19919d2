//! What the store keeps per key version of the native YubiHSM 2 provider (the `KeyHandle`):
//!
//! ```text
//! resident = 0x41 ‖ u16be(object id) ‖ public key (65-byte SEC1 for ECDSA, 32 bytes Ed25519)
//! wrapped  = 0x42 ‖ sealed material (crate::seal: 0x15 ‖ … for Wrap Data)
//! ```
//!
//! Neither is secret: an object id names a key only the device can use, and sealed material
//! opens only through the device.

use hanzo_kms_core::{Error, ErrorKind, KeyHandle, KeyRef};

const RESIDENT: u8 = 0x41;
const WRAPPED: u8 = 0x42;

pub(crate) enum Handle<'a> {
    Resident { id: u16, public: &'a [u8] },
    Wrapped { sealed: &'a [u8] },
}

impl<'a> Handle<'a> {
    /// Parse `key`'s handle; one that is not ours is `Corrupt`, naming the key.
    pub(crate) fn parse(key: &KeyRef<'a>) -> Result<Self, Error> {
        let bad = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stored handle of {} version {} is not a YubiHSM 2 (native) key reference",
                    key.name, key.version
                ),
            )
        };
        match key.handle.as_bytes() {
            [RESIDENT, h, l, public @ ..] if matches!(public.len(), 32 | 65) => {
                Ok(Self::Resident {
                    id: u16::from_be_bytes([*h, *l]),
                    public,
                })
            }
            [WRAPPED, sealed @ ..] if !sealed.is_empty() => Ok(Self::Wrapped { sealed }),
            _ => Err(bad()),
        }
    }
}

/// The scheme that sealed an hsm-wrapped key's material, from its stored handle, for `keys
/// show`: `yubihsm-wrap-data`; `None` for a resident key or a handle that is not ours.
pub fn wrapping_of(handle: &KeyHandle) -> Option<&'static str> {
    match handle.as_bytes() {
        [WRAPPED, crate::seal::WRAP_DATA, _, _, rest @ ..] if !rest.is_empty() => {
            Some(crate::seal::WRAP_DATA_SCHEME)
        }
        _ => None,
    }
}

pub(crate) fn resident(id: u16, public: &[u8]) -> KeyHandle {
    KeyHandle::new([&[RESIDENT][..], &id.to_be_bytes(), public].concat())
}

pub(crate) fn wrapped(sealed: &[u8]) -> KeyHandle {
    KeyHandle::new([&[WRAPPED][..], sealed].concat())
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::{Algorithm, KeyName, Separator};

    use super::*;

    #[test]
    fn handles_round_trip_and_junk_is_corrupt() {
        let name = KeyName::parse("poai:acme:m", Separator::default()).unwrap();
        let check = |h: &KeyHandle| {
            let r = KeyRef {
                name: &name,
                version: 1,
                algorithm: Algorithm::Secp256k1,
                handle: h,
            };
            match Handle::parse(&r) {
                Ok(Handle::Resident { id, public }) => format!("r:{id}:{}", public.len()),
                Ok(Handle::Wrapped { sealed }) => format!("w:{}", sealed.len()),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corrupt);
                    assert!(e.to_string().contains("poai:acme:m"), "{e}");
                    "err".into()
                }
            }
        };
        assert_eq!(check(&resident(0x1234, &[4; 65])), "r:4660:65");
        assert_eq!(check(&resident(7, &[1; 32])), "r:7:32");
        assert_eq!(check(&resident(7, &[1; 33])), "err");
        assert_eq!(check(&wrapped(&[1; 40])), "w:40");
        assert_eq!(check(&wrapped(&[])), "err");
        assert_eq!(check(&KeyHandle::new(vec![0xee; 40])), "err");
        assert_eq!(check(&KeyHandle::new(vec![])), "err");
    }

    #[test]
    fn keys_show_reads_the_scheme_of_wrapped_handles_only() {
        assert_eq!(
            wrapping_of(&wrapped(&[0x15, 0x12, 0x34, 1, 2, 3])),
            Some("yubihsm-wrap-data")
        );
        assert_eq!(wrapping_of(&wrapped(&[0x15, 0x12, 0x34])), None);
        assert_eq!(wrapping_of(&wrapped(&[0xf5, 0x12, 0x34, 1])), None);
        assert_eq!(wrapping_of(&resident(0x1500, &[4; 65])), None);
    }
}
