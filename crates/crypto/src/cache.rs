//! A bounded cache of unwrapped key material in zeroizing memory, for keys kept wrapped under
//! a device's or a key service's KEK (hsm-wrapped and kms-wrapped keys): the first use asks
//! the device to unwrap; later uses within `ttl` of the last one run at software speed. The
//! same trade-off as the AWS Encryption SDK's caching materials manager: a key stays usable in
//! this process for at most `ttl` after the device stops answering or the key is revoked there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hanzo_kms_core::SecretBytes;

/// At most this many unwrapped keys are kept; the least recently used goes first.
pub const CACHE_MAX: usize = 1024;

/// Unwrapped key material kept for `ttl` after its last use, at most [`CACHE_MAX`] entries.
/// Entries are found by [`slot`]: a digest of the key's binding (name, version, algorithm)
/// and its wrapped handle, so a copied handle under another name is not served.
pub struct UnwrapCache {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], (SecretBytes, Instant)>>,
}

impl UnwrapCache {
    /// A cache keeping material for `ttl` after its last use; `Duration::ZERO` keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long material stays after its last use.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The material in `slot`, if it was used within `ttl` (which starts again now).
    pub fn get(&self, slot: &[u8; 32]) -> Option<SecretBytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get_mut(slot) {
            Some((m, used)) if now.duration_since(*used) < self.ttl => {
                *used = now;
                Some(SecretBytes::new(m.expose().to_vec()))
            }
            Some(_) => {
                map.remove(slot);
                None
            }
            None => None,
        }
    }

    /// Keep a copy of `material` in `slot`; expired entries are dropped, and the least recently
    /// used one when the cache is full.
    pub fn put(&self, slot: [u8; 32], material: &SecretBytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, used)| now.duration_since(*used) < self.ttl);
        if map.len() >= CACHE_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(slot, (SecretBytes::new(material.expose().to_vec()), now));
    }

    /// Forget everything (a key was destroyed, or the provider is going away).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Entries held (expired ones included until the next `put`).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache slot of a wrapped key: SHA-256 of `u64be(len aad) ‖ aad ‖ handle`, where `aad`
/// binds the key's name, version and algorithm.
pub fn slot(aad: &[u8], handle: &[u8]) -> [u8; 32] {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(&(aad.len() as u64).to_be_bytes());
    h.update(aad);
    h.update(handle);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_expires_evicts_and_can_be_off() {
        let c = UnwrapCache::new(Duration::from_millis(50));
        c.put([1; 32], &SecretBytes::new(vec![7; 32]));
        assert_eq!(c.get(&[1; 32]).unwrap().expose(), &[7; 32]);
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.get(&[1; 32]).is_none(), "expired");
        let off = UnwrapCache::new(Duration::ZERO);
        off.put([1; 32], &SecretBytes::new(vec![7; 32]));
        assert!(off.get(&[1; 32]).is_none());
        let big = UnwrapCache::new(Duration::from_secs(60));
        for i in 0..=CACHE_MAX {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            big.put(k, &SecretBytes::new(vec![1]));
        }
        assert_eq!(big.len(), CACHE_MAX);
        assert!(big.get(&[0; 32]).is_none(), "the oldest went first");
        big.clear();
        assert!(big.is_empty());
    }

    #[test]
    fn cache_slots_bind_name_and_handle() {
        assert_ne!(slot(b"a", b"h"), slot(b"b", b"h"));
        assert_ne!(slot(b"a", b"h"), slot(b"a", b"i"));
        assert_ne!(slot(b"ab", b"c"), slot(b"a", b"bc"));
    }
}
