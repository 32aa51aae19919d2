//! Finding a key's token object by class and `CKA_ID`, through a cache of object handles that
//! is emptied whenever the session pool recovers (after a module re-initialisation a handle
//! number may name another object).

use std::collections::HashMap;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hanzo_kms_core::{Error, ErrorKind, KeyRef, Result};

use crate::handle::ID_LEN;
use crate::{Pkcs11Provider, pool};

impl Pkcs11Provider {
    /// Find a key's object, by class and CKA_ID, through the cache.
    pub(crate) fn object(
        &self,
        key: &KeyRef<'_>,
        class: ObjectClass,
        id: &[u8; ID_LEN],
    ) -> Result<ObjectHandle> {
        let cache_key = (class_tag(class), *id);
        let generation = {
            let c = self.cache();
            if let Some(h) = c.map.get(&cache_key) {
                return Ok(*h);
            }
            c.generation
        };
        let found = self
            .pool
            .run(|s| {
                let found =
                    s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
                if found.is_empty() && !logged_in(s)? {
                    // Private objects are invisible without a login, and C_FindObjects does not
                    // say so; ask the pool to log in again rather than report the key missing.
                    return Err(CkError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        cryptoki::context::Function::FindObjects,
                    ));
                }
                Ok(found)
            })
            .map_err(|e| {
                self.call_error(
                    e,
                    format!("looking up {} version {}", key.name, key.version),
                )
            })?;
        let Some(h) = found.first().copied() else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "key {} version {} is missing from token '{}' (CKA_ID {}); it was deleted outside \
                     hanzo-kms, or this store belongs to another token",
                    key.name,
                    key.version,
                    self.token_label,
                    hex::encode(id)
                ),
            ));
        };
        let mut c = self.cache();
        // Cache only if no recovery happened since the lookup began: a handle found in an older
        // generation may name another object now.
        if c.generation == generation {
            c.map.insert(cache_key, h);
        }
        Ok(h)
    }

    /// The object cache, emptied first if the pool recovered since it was filled.
    pub(crate) fn cache(&self) -> std::sync::MutexGuard<'_, ObjectCache> {
        let generation = self.pool.generation();
        let mut c = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if c.generation != generation {
            c.generation = generation;
            c.map.clear();
        }
        c
    }

    /// Run one operation on a key's object; if the cached handle went stale (the object was
    /// deleted or the pool recovered), look it up again once.
    pub(crate) fn with_object<T>(
        &self,
        key: &KeyRef<'_>,
        class: ObjectClass,
        id: &[u8; ID_LEN],
        what: &str,
        mut f: impl FnMut(&Session, ObjectHandle) -> std::result::Result<T, CkError>,
    ) -> std::result::Result<T, OpError> {
        for attempt in 0..2 {
            let h = self.object(key, class, id).map_err(OpError::Kms)?;
            match self.pool.run(|s| f(s, h)) {
                Err(pool::PoolError::Call(CkError::Pkcs11(
                    RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                    _,
                ))) if attempt == 0 => {
                    self.cache().map.clear();
                }
                Err(pool::PoolError::Call(e)) => return Err(OpError::Module(e)),
                Err(other) => {
                    return Err(OpError::Kms(self.call_error(
                        other,
                        format!("{what} with {} version {}", key.name, key.version),
                    )));
                }
                Ok(v) => return Ok(v),
            }
        }
        Err(OpError::Kms(
            self.object(key, class, id).err().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{what} with {}: the token keeps invalidating the key's handle",
                        key.name
                    ),
                )
            }),
        ))
    }
}

#[derive(Default)]
pub(crate) struct ObjectCache {
    pub(crate) generation: u64,
    pub(crate) map: HashMap<(u8, [u8; ID_LEN]), ObjectHandle>,
}

/// An operation on a key's object failed: either already a Hanzo error (lookup, pool) or the
/// module's own answer, kept so the caller can read its code (a bad tag, say).
pub(crate) enum OpError {
    Kms(Error),
    Module(CkError),
}

/// Wipe the key bytes (CKA_VALUE) a template carried into the module.
pub(crate) fn wipe_values(t: &mut [Attribute]) {
    for a in t {
        if let Attribute::Value(v) = a {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

pub(crate) fn logged_in(s: &Session) -> std::result::Result<bool, CkError> {
    use cryptoki::session::SessionState;
    Ok(matches!(
        s.get_session_info()?.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

pub(crate) fn class_tag(c: ObjectClass) -> u8 {
    if c == ObjectClass::SECRET_KEY {
        0
    } else if c == ObjectClass::PRIVATE_KEY {
        1
    } else {
        2
    }
}
