//! The raw `C_Sign` loop that `hanzo-kms-bench sign --provider <pkcs11>` compares the provider
//! against: the device's own mechanism on a session of the calling thread, with no object
//! cache, normalisation or recovery. Benchmark support, kept out of the provider's API.
//!
//! It opens its own sessions on the provider's module (through the provider crate's module
//! registry: one `C_Initialize` per process) and relies on the provider's login, which PKCS#11
//! shares with every session of the application.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyRef, Provider, Result};
use hanzo_kms_pkcs11::Pkcs11Provider;
use sha2::{Digest, Sha256};

/// The first byte of a resident handle, and the length of the `CKA_ID` after it (the handle
/// codec in crates/providers/pkcs11/src/handle.rs).
const RESIDENT_V1: u8 = 0x11;
const ID_LEN: usize = 16;

/// `iterations` raw signatures with a key's token object.
pub trait RawSign {
    /// `iterations` calls of the device's own mechanism on `message` (SHA-256 of it for P-256),
    /// on one session of the calling thread. Only for hsm-resident signing keys.
    fn bench_raw_sign(&self, key: &KeyRef<'_>, message: &[u8], iterations: u64) -> Result<()>;
}

impl RawSign for Pkcs11Provider {
    fn bench_raw_sign(&self, key: &KeyRef<'_>, message: &[u8], iterations: u64) -> Result<()> {
        let b = key.handle.as_bytes();
        if b.first() != Some(&RESIDENT_V1) || b.len() < 1 + ID_LEN {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} is not hsm-resident", key.name),
            ));
        }
        let id = b[1..1 + ID_LEN].to_vec();
        let digest;
        let (mechanism, data): (Mechanism<'_>, &[u8]) = match key.algorithm {
            Algorithm::Secp256k1 => (Mechanism::Ecdsa, message),
            Algorithm::P256 => {
                digest = Sha256::digest(message);
                (Mechanism::Ecdsa, &digest[..])
            }
            Algorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            ),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{other} does not sign in the device"),
                ));
            }
        };
        let cache_key = (self.module().to_owned(), self.token_label().to_owned(), id);
        SESSIONS.with(|cell| {
            let mut sessions = cell.borrow_mut();
            if !sessions.contains_key(&cache_key) {
                let opened = open(self, &cache_key.2)?;
                sessions.insert(cache_key.clone(), opened);
            }
            let (session, object) = sessions
                .get(&cache_key)
                .ok_or_else(|| Error::internal("raw-sign session vanished"))?;
            for _ in 0..iterations {
                session
                    .sign(&mechanism, *object, data)
                    .map_err(|e| ck(e, self.name(), key))?;
            }
            Ok(())
        })
    }
}

type SessionKey = (PathBuf, String, Vec<u8>);

thread_local! {
    /// One session per thread and key, kept for the thread's life (as the benchmark's threads
    /// each hold one pooled session).
    static SESSIONS: RefCell<HashMap<SessionKey, (Session, ObjectHandle)>> =
        RefCell::new(HashMap::new());
}

/// A session on the provider's token and the private-key object with `CKA_ID` `id`.
fn open(p: &Pkcs11Provider, id: &[u8]) -> Result<(Session, ObjectHandle)> {
    let vendor = p.profile().vendor;
    let ctx = hanzo_kms_pkcs11::module::load(p.module(), vendor)?;
    let fail = |e: cryptoki::error::Error| {
        Error::new(
            ErrorKind::Unavailable,
            format!("raw sign on token '{}': {e}", p.token_label()),
        )
    };
    let slot = {
        let _scan = hanzo_kms_pkcs11::module::SLOT_SCAN
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ctx.get_slots_with_token()
            .map_err(fail)?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|t| t.label().trim_end() == p.token_label())
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("token '{}' is not present", p.token_label()),
                )
            })?
    };
    let session = ctx.open_ro_session(slot).map_err(fail)?;
    let object = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(fail)?
        .first()
        .copied()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no private key with CKA_ID {}", hex::encode(id)),
            )
        })?;
    Ok((session, object))
}

fn ck(e: cryptoki::error::Error, provider: &str, key: &KeyRef<'_>) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("raw sign with {} on {provider}: {e}", key.name),
    )
}
