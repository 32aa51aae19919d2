//! A short-lived read cache for keys and API tokens, the two rows every request reads.
//!
//! - Entries live [`TTL`] at most. A change committed through this process invalidates its
//!   entries at commit, so on one node a revoked token or a disabled key is refused at once;
//!   another node sharing the database (PostgreSQL) sees the change within [`TTL`].
//! - A generation counter closes the race between a reader and a writer: a reader that loaded
//!   a row before a commit invalidated it does not put the stale row back.
//! - Keys are cached only when they exist, so a key created on another node is visible at once;
//!   except where the caller asks for absence to be remembered too
//!   (`Store::load_key_or_known_absent`: a signing key's post-quantum partner, which most keys do
//!   not have and every signature looks up).
//!   Token lookups are cached either way (an unknown id too): a token's id is random and nobody
//!   presents it before it exists, and an unknown id answered from the database while a known
//!   one is answered from memory would tell, by the time of the 401, which ids exist.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a cached row may be served without reading the database again.
pub const TTL: Duration = Duration::from_secs(1);

/// Bound on entries per map; past it the map is cleared (simple and O(1) amortised).
const MAX_ENTRIES: usize = 100_000;

pub(crate) struct Cache<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
    generation: AtomicU64,
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Cache").field("entries", &n).finish()
    }
}

impl<T: Clone> Cache<T> {
    pub fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// A fresh entry, and the generation to pass to [`Cache::put`] after a database read.
    pub fn get(&self, k: &str) -> (Option<T>, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let hit = map
            .get(k)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone());
        (hit, generation)
    }

    /// Cache `v` unless an invalidation happened since `generation` was read.
    pub fn put(&self, k: &str, v: T, generation: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(k.to_owned(), (Instant::now(), v));
    }

    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = Cache::<u32>::new();
        let (none, g) = c.get("k");
        assert!(none.is_none());
        c.invalidate([&"k".to_owned()]);
        c.put("k", 1, g);
        assert_eq!(c.get("k").0, None);
        let (_, g) = c.get("k");
        c.put("k", 2, g);
        assert_eq!(c.get("k").0, Some(2));
        c.invalidate([&"k".to_owned()]);
        assert_eq!(c.get("k").0, None);
    }
}
