//! Secret values. They derive nothing (STYLE.md 9): no `Clone`, no `PartialEq`, and a `Debug`
//! that prints no bytes. Their memory is zeroized on drop.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Length of an AES-256 key, a data key (DEK) and the master key.
pub const KEY_LEN: usize = 32;

/// Secret bytes of any length, e.g. a decrypted plaintext or an unsealed private key.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Borrow the secret. Callers must not copy it into non-zeroizing memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access, for in-place decryption.
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Shorten to `len` bytes. The cut-off bytes stay in the buffer's capacity and are zeroized
    /// with it on drop.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBytes")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// A 256-bit secret key: the master key, a data-encryption key (DEK), or an AES key.
pub struct SecretKey32([u8; KEY_LEN]);

impl SecretKey32 {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Copy from a slice, refusing any length but 32. The error never shows the bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::invalid(format!(
                "a 256-bit key must be {KEY_LEN} bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self(arr))
    }

    /// Parse 64 hex characters (surrounding whitespace allowed). The error never echoes the input.
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut out = [0u8; KEY_LEN];
        if text.len() != 2 * KEY_LEN || hex::decode_to_slice(text, &mut out).is_err() {
            out.zeroize();
            return Err(Error::invalid(format!(
                "expected {} hexadecimal characters ({KEY_LEN} bytes); got {} characters that do not form such a key",
                2 * KEY_LEN,
                text.len()
            )));
        }
        Ok(Self(out))
    }

    /// Hex encoding, for writing `master.key`. The result is zeroized on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Drop for SecretKey32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey32").finish_non_exhaustive()
    }
}

/// `v` as JSON in memory that is wiped when dropped, for a body that carries secret material.
/// `v` is measured first and then written into a buffer of exactly that size: a buffer that
/// grows frees its old allocation unwiped.
pub fn secret_json(v: &impl serde::Serialize) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    let mut size = Counter(0);
    serde_json::to_writer(&mut size, v)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(size.0));
    serde_json::to_writer(&mut *buf, v)?;
    Ok(buf)
}

/// [`secret_json`], pretty-printed (two-space indents) and ending in a newline: for a file a
/// person keeps, such as a backup share.
pub fn secret_json_pretty(v: &impl serde::Serialize) -> serde_json::Result<Zeroizing<Vec<u8>>> {
    let mut size = Counter(0);
    serde_json::to_writer_pretty(&mut size, v)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(size.0 + 1));
    serde_json::to_writer_pretty(&mut *buf, v)?;
    buf.push(b'\n');
    Ok(buf)
}

/// A writer that only counts.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wipe every string in `v` (object keys are field names and stay).
pub fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_bytes() {
        let k = SecretKey32::from_bytes([0xAB; 32]);
        let d = format!("{k:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        let s = SecretBytes::new(vec![0xCD; 5]);
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("cd"), "{d}");
        assert!(d.contains("len: 5"));
    }

    #[test]
    fn hex_errors_do_not_echo_input() {
        let secretish = "zz".repeat(32);
        let e = SecretKey32::from_hex(&secretish).unwrap_err();
        assert!(!e.to_string().contains("zz"), "{e}");
        assert!(SecretKey32::from_hex(&"0f".repeat(31)).is_err());
        let k = SecretKey32::from_hex(&format!(" {}\n", "0f".repeat(32))).unwrap();
        assert_eq!(k.expose(), &[0x0f; 32]);
        assert_eq!(k.to_hex().as_str(), "0f".repeat(32));
    }

    #[test]
    fn constant_time_eq() {
        let a = SecretKey32::from_bytes([1; 32]);
        assert!(a.ct_eq(&SecretKey32::from_bytes([1; 32])));
        assert!(!a.ct_eq(&SecretKey32::from_bytes([2; 32])));
    }

    #[test]
    fn secret_json_pretty_is_serde_json_pretty_in_a_buffer_of_its_exact_size() {
        let v = serde_json::json!({"share": "00ff", "index": 3, "nested": {"a": [1, 2]}});
        let buf = secret_json_pretty(&v).unwrap();
        let mut want = serde_json::to_vec_pretty(&v).unwrap();
        want.push(b'\n');
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(buf.capacity(), want.len());
    }

    #[test]
    fn secret_json_is_serde_json_in_a_buffer_of_its_exact_size_and_wipe_json_clears_strings() {
        let mut v = serde_json::json!({"plaintext": "c2VjcmV0", "n": 3, "list": ["a", {"k": "b"}]});
        let out = secret_json(&v).unwrap();
        assert_eq!(&out[..], serde_json::to_vec(&v).unwrap().as_slice());
        assert_eq!(out.capacity(), out.len());
        wipe_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"plaintext": "", "n": 3, "list": ["", {"k": ""}]})
        );
    }
}
