//! What the store keeps per key version of a remote provider (the [`KeyHandle`] bytes):
//!
//! ```text
//! resident = 0x31 ‖ u16be(len) ‖ remote key id ‖ public key (empty for AES)
//! wrapped  = 0x32 ‖ u16be(len) ‖ remote KEK id ‖ the service's ciphertext of the material
//!            (encrypted with aad = material_aad(name, version, algorithm))
//! ```
//!
//! Neither is secret: a remote id names a key only the service can use, and wrapped material
//! opens only through the service.

use hanzo_kms_core::{Error, ErrorKind, KeyHandle, KeyRef};

const RESIDENT: u8 = 0x31;
const WRAPPED: u8 = 0x32;

/// A parsed handle.
pub(crate) enum Handle<'a> {
    /// A key inside the service (`kms-resident`), with its public key for signing keys.
    Resident { id: &'a str, public: &'a [u8] },
    /// Material wrapped under the service's KEK `kek` (`kms-wrapped`).
    Wrapped { kek: &'a str, wrapped: &'a [u8] },
}

impl<'a> Handle<'a> {
    /// Parse `key`'s handle; a handle that is not one of ours is `Corrupt`, naming the key.
    pub(crate) fn parse(key: &KeyRef<'a>, service: &str) -> Result<Self, Error> {
        let b = key.handle.as_bytes();
        let bad = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stored handle of {} version {} is not a {service} key reference",
                    key.name, key.version
                ),
            )
        };
        let [tag, h, l, rest @ ..] = b else {
            return Err(bad());
        };
        let len = usize::from(u16::from_be_bytes([*h, *l]));
        if len == 0 || rest.len() < len {
            return Err(bad());
        }
        let (id, tail) = rest.split_at(len);
        let id = std::str::from_utf8(id).map_err(|_| bad())?;
        match *tag {
            RESIDENT => Ok(Self::Resident { id, public: tail }),
            WRAPPED if !tail.is_empty() => Ok(Self::Wrapped {
                kek: id,
                wrapped: tail,
            }),
            _ => Err(bad()),
        }
    }
}

pub(crate) fn resident(id: &str, public: &[u8]) -> KeyHandle {
    encode(RESIDENT, id, public)
}

pub(crate) fn wrapped(kek: &str, wrapped: &[u8]) -> KeyHandle {
    encode(WRAPPED, kek, wrapped)
}

fn encode(tag: u8, id: &str, tail: &[u8]) -> KeyHandle {
    let mut out = Vec::with_capacity(3 + id.len() + tail.len());
    out.push(tag);
    // Remote ids are short (an ARN is under 2 KiB); longer ones are cut off by the u16,
    // so refuse them where they are made (see `RemoteProvider::generate`).
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(tail);
    KeyHandle::new(out)
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
            match Handle::parse(&r, "openbao") {
                Ok(Handle::Resident { id, public }) => format!("r:{id}:{}", public.len()),
                Ok(Handle::Wrapped { kek, wrapped }) => format!("w:{kek}:{}", wrapped.len()),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corrupt);
                    assert!(e.to_string().contains("poai:acme:m"), "{e}");
                    "err".into()
                }
            }
        };
        assert_eq!(check(&resident("k1", &[4; 65])), "r:k1:65");
        assert_eq!(check(&resident("k1", &[])), "r:k1:0");
        assert_eq!(check(&wrapped("kek", &[1; 40])), "w:kek:40");
        assert_eq!(check(&wrapped("kek", &[])), "err");
        assert_eq!(check(&KeyHandle::new(vec![0xee; 40])), "err");
        assert_eq!(check(&KeyHandle::new(vec![0x31, 0, 9, b'a'])), "err");
        assert_eq!(check(&KeyHandle::new(vec![0x31, 0, 1, 0xff])), "err");
    }
}
