//! Provider failover and failback (LP-325; `kms.lux.failover`).
//!
//! [`Failover`] is a [`Provider`] over a primary and a backup device that hold the same key
//! material: the backup is a clone of the primary (an HSM HA group, a cloned partition), so a
//! handle made on one works on the other. Keys made later are replicated by hanzo-kms: a new
//! key is generated on the primary and, when its handle does not work on the backup as it is
//! (an object inside the primary), exported wrapped under a one-time key and imported into the
//! backup; the stored handle then names both objects (see [`composite`]).
//!
//! Routing: while the primary is healthy, calls go to it (or split by `weights`, e.g. 70/30).
//! A call that fails as `unavailable` (or finds its object missing on that device) is retried
//! once on the other device, so requests keep
//! succeeding between the primary's failure and the health check that notices it. After
//! `failure_threshold` failed checks in a row every call goes to the backup; when the primary
//! passes a check again, traffic ramps back over [`RAMP_STEPS`] checks (25 %, 50 %, 75 %, all).
//! Transitions are logged, counted in `/metrics` and written to the audit log by the server.
//! New keys are refused while the primary is out: they could not be put on both devices.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hanzo_kms_core::config::FailoverConfig;
use hanzo_kms_core::provider::{Capabilities, GeneratedKey, Health, KeyRef, KeySpec, PublicKey};
use hanzo_kms_core::{
    Error, ErrorKind, KeyHandle, Provider, Result, SecretBytes, SecretKey32, Signature,
};

/// Health checks over which traffic ramps back to a recovered primary.
pub const RAMP_STEPS: u32 = 4;

/// Where traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The primary (and the backup by weight).
    Primary,
    /// Everything to the backup.
    FailedOver,
    /// Ramping back: `step` of [`RAMP_STEPS`] parts to the primary.
    Recovering { step: u32 },
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::FailedOver => "failed-over",
            Self::Recovering { .. } => "recovering",
        }
    }
}

/// A change of [`Mode`], for the log, the metrics and the audit log.
#[derive(Clone, Debug)]
pub struct Transition {
    pub from: Mode,
    pub to: Mode,
    pub reason: String,
}

struct State {
    mode: Mode,
    failures: u32,
}

/// The failover provider (see the module docs).
pub struct Failover {
    primary: Arc<dyn Provider>,
    backup: Arc<dyn Provider>,
    threshold: u32,
    /// Percent of calls to the primary while both are healthy.
    primary_share: u64,
    state: Mutex<State>,
    calls: AtomicU64,
    /// Calls retried on the other device after an `unavailable` failure.
    pub rerouted: AtomicU64,
    /// Transitions so far, by kind: failovers, failbacks.
    pub failovers: AtomicU64,
    pub failbacks: AtomicU64,
}

/// Composite handles: `FO` ‖ 0x01 ‖ u32 BE length ‖ primary handle ‖ backup handle.
pub mod composite {
    const TAG: &[u8] = b"FO\x01";

    pub fn join(primary: &[u8], backup: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + 4 + primary.len() + backup.len());
        out.extend_from_slice(TAG);
        out.extend_from_slice(&(primary.len() as u32).to_be_bytes());
        out.extend_from_slice(primary);
        out.extend_from_slice(backup);
        out
    }

    /// `(primary, backup)` of a composite handle; `None` for a plain one (valid on both).
    pub fn split(h: &[u8]) -> Option<(&[u8], &[u8])> {
        let rest = h.strip_prefix(TAG)?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let rest = &rest[4..];
        (rest.len() >= len).then(|| rest.split_at(len))
    }
}

impl Failover {
    pub fn new(
        primary: Arc<dyn Provider>,
        backup: Arc<dyn Provider>,
        cfg: &FailoverConfig,
    ) -> Self {
        let primary_share = match cfg.weights {
            Some(w) => u64::from(w.primary) * 100 / u64::from((w.primary + w.backup).max(1)),
            None => 100,
        };
        Self {
            primary,
            backup,
            threshold: cfg.failure_threshold.max(1),
            primary_share,
            state: Mutex::new(State {
                mode: Mode::Primary,
                failures: 0,
            }),
            calls: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            failbacks: AtomicU64::new(0),
        }
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).mode
    }

    pub fn backup_health(&self) -> Health {
        self.backup.health()
    }

    /// One health check of the primary; returns the transition it caused, if any.
    pub fn check(&self) -> Option<Transition> {
        let health = self.primary.health();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let from = st.mode;
        let (to, reason) = match (from, &health) {
            (Mode::Primary, Health::Ok) => {
                st.failures = 0;
                return None;
            }
            (Mode::Primary, Health::Down(why)) => {
                st.failures += 1;
                if st.failures < self.threshold {
                    tracing::warn!(
                        failures = st.failures,
                        threshold = self.threshold,
                        "failover: primary health check failed: {why}"
                    );
                    return None;
                }
                (
                    Mode::FailedOver,
                    format!("{} failed health checks in a row: {why}", st.failures),
                )
            }
            (Mode::FailedOver, Health::Down(_)) => return None,
            (Mode::FailedOver, Health::Ok) => (
                Mode::Recovering { step: 1 },
                "the primary passes its health check again".to_owned(),
            ),
            (Mode::Recovering { step }, Health::Ok) if step + 1 >= RAMP_STEPS => (
                Mode::Primary,
                format!("the primary stayed healthy for {RAMP_STEPS} checks"),
            ),
            (Mode::Recovering { step }, Health::Ok) => {
                st.mode = Mode::Recovering { step: step + 1 };
                return None;
            }
            (Mode::Recovering { .. }, Health::Down(why)) => (
                Mode::FailedOver,
                format!("the primary failed again while recovering: {why}"),
            ),
        };
        st.mode = to;
        st.failures = 0;
        match to {
            Mode::FailedOver => self.failovers.fetch_add(1, Ordering::Relaxed),
            Mode::Primary => self.failbacks.fetch_add(1, Ordering::Relaxed),
            Mode::Recovering { .. } => 0,
        };
        Some(Transition { from, to, reason })
    }

    /// Which device takes this call first: `true` for the primary.
    fn pick(&self) -> bool {
        let share = match self.mode() {
            Mode::Primary => self.primary_share,
            Mode::FailedOver => 0,
            Mode::Recovering { step } => {
                self.primary_share * u64::from(step) / u64::from(RAMP_STEPS)
            }
        };
        // A deterministic spread: call n goes to the primary when n mod 100 < share.
        self.calls.fetch_add(1, Ordering::Relaxed) % 100 < share
    }

    /// Run `f` on the chosen device with that device's handle; on `unavailable`, once more on
    /// the other.
    fn route<T>(
        &self,
        key: &KeyRef<'_>,
        f: impl Fn(&dyn Provider, &KeyRef<'_>) -> Result<T>,
    ) -> Result<T> {
        self.either(|on_primary| {
            let h = match composite::split(key.handle.as_bytes()) {
                Some((p, b)) => KeyHandle::new(if on_primary { p } else { b }.to_vec()),
                None => key.handle.clone(),
            };
            f(self.device(on_primary), &KeyRef { handle: &h, ..*key })
        })
    }

    fn device(&self, primary: bool) -> &dyn Provider {
        if primary {
            self.primary.as_ref()
        } else {
            self.backup.as_ref()
        }
    }

    /// Run `f(on_primary)` for the chosen device, then once for the other if the first had
    /// device trouble.
    fn either<T>(&self, f: impl Fn(bool) -> Result<T>) -> Result<T> {
        let first = self.pick();
        match f(first) {
            Err(e) if device_trouble(&e) => {
                self.rerouted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "failover: retrying on the other device");
                f(!first)
            }
            other => other,
        }
    }
}

/// Failures that say the device (not the request) is at fault: it is unreachable, or it lost
/// the key's object or its root key. The other device may still answer.
fn device_trouble(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Corrupt)
}

impl Provider for Failover {
    fn name(&self) -> &str {
        self.primary.name()
    }

    fn capabilities(&self) -> &Capabilities {
        self.primary.capabilities()
    }

    /// Generate on the primary and make the key usable on the backup too (see the module docs).
    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        if self.mode() != Mode::Primary {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "new keys are paused while the primary device is {}: {} could not be put on both devices",
                    self.mode().as_str(),
                    spec.name
                ),
            ));
        }
        let g = self.primary.generate(spec)?;
        let r = KeyRef {
            name: spec.name,
            version: spec.version,
            algorithm: spec.algorithm,
            handle: &g.handle,
        };
        let release = |e: Error| {
            let _ = self.primary.destroy(&r);
            e
        };
        // A handle that already works on the backup: material wrapped under the clone's shared
        // KEK. Proven by signing on the backup and checking the signature under the primary's
        // public key (a resident handle carries its public key, so asking the backup for the
        // public key proves nothing). AES keys are always objects in the primary: replicate.
        let works = match &g.public_key {
            Some(pk) => {
                let probe = [0x5au8; 32];
                self.backup.sign(&r, &probe).is_ok_and(|sig| {
                    hanzo_kms_crypto::verify::verify(spec.algorithm, &pk.bytes, &probe, &sig.0)
                })
            }
            None => false,
        };
        if works {
            return Ok(g);
        }
        let mut kek = zeroize::Zeroizing::new([0u8; 32]);
        hanzo_kms_crypto::rng::fill(kek.as_mut())?;
        let kek = SecretKey32::from_bytes(*kek);
        let aad = hanzo_kms_crypto::seal::material_aad(spec.name, spec.version, spec.algorithm);
        let sealed = self.primary.export_wrapped(&r, &kek, &aad).map_err(|e| {
            release(Error::new(
                e.kind(),
                format!(
                    "failover is enabled, but {} cannot be replicated to the backup device ({}); \
                     set exportable: true (AES keys) or signing_keys: hsm-wrapped",
                    spec.name,
                    e.message()
                ),
            ))
        })?;
        let b = self
            .backup
            .import_wrapped(spec, &kek, &sealed, &aad)
            .map_err(release)?;
        Ok(GeneratedKey {
            handle: KeyHandle::new(composite::join(g.handle.as_bytes(), b.handle.as_bytes())),
            public_key: g.public_key,
            origin: g.origin,
        })
    }

    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey> {
        self.route(key, |p, k| p.public_key(k))
    }

    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.route(key, |p, k| p.encrypt(k, plaintext, aad))
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        self.route(key, |p, k| p.decrypt(k, ciphertext, aad))
    }

    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)> {
        self.route(key, |p, k| p.generate_data_key(k, aad))
    }

    fn wrap_data_key(&self, key: &KeyRef<'_>, dek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        self.route(key, |p, k| p.wrap_data_key(k, dek, aad))
    }

    fn unwrap_data_key(&self, key: &KeyRef<'_>, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey32> {
        self.route(key, |p, k| p.unwrap_data_key(k, wrapped, aad))
    }

    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature> {
        self.route(key, |p, k| p.sign(k, message))
    }

    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        self.route(key, |p, k| p.sign_p256_digest(k, digest))
    }

    /// Destroy on both devices (each its own object).
    fn destroy(&self, key: &KeyRef<'_>) -> Result<()> {
        let (p, b) = match composite::split(key.handle.as_bytes()) {
            Some((p, b)) => (KeyHandle::new(p.to_vec()), KeyHandle::new(b.to_vec())),
            None => (key.handle.clone(), key.handle.clone()),
        };
        let on_primary = self.primary.destroy(&KeyRef { handle: &p, ..*key });
        let on_backup = self.backup.destroy(&KeyRef { handle: &b, ..*key });
        on_primary.and(on_backup)
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        self.route(key, |p, k| p.export_wrapped(k, kek, aad))
    }

    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let p = self.primary.import_wrapped(spec, kek, wrapped, aad)?;
        let b = match self.backup.import_wrapped(spec, kek, wrapped, aad) {
            Ok(b) => b,
            Err(e) => {
                let r = KeyRef {
                    name: spec.name,
                    version: spec.version,
                    algorithm: spec.algorithm,
                    handle: &p.handle,
                };
                let _ = self.primary.destroy(&r);
                return Err(e);
            }
        };
        Ok(GeneratedKey {
            handle: KeyHandle::new(composite::join(p.handle.as_bytes(), b.handle.as_bytes())),
            public_key: p.public_key,
            origin: p.origin,
        })
    }

    /// Healthy while either device is: that is what the service can still do.
    fn health(&self) -> Health {
        match (self.primary.health(), self.backup.health()) {
            (Health::Down(a), Health::Down(b)) => {
                Health::Down(format!("primary: {a}; backup: {b}"))
            }
            _ => Health::Ok,
        }
    }

    fn mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        self.either(|on_primary| self.device(on_primary).mac(data))
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        self.either(|on_primary| self.device(on_primary).fingerprint(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_core::{Algorithm, KeyName, Separator};
    use hanzo_kms_software::SoftwareProvider;

    /// Weights 70/30 send 30 of 100 calls to the backup first. The two software providers have
    /// different master keys, so the primary's key does not open on the backup (corrupt): each
    /// of those calls is retried on the primary and still succeeds.
    #[test]
    fn weights_split_calls_and_device_trouble_is_retried_on_the_other() {
        let p = |b: u8| -> Arc<dyn Provider> {
            Arc::new(SoftwareProvider::new(&SecretKey32::from_bytes([b; 32])).unwrap())
        };
        let cfg = FailoverConfig {
            weights: Some(hanzo_kms_core::config::FailoverWeights {
                primary: 70,
                backup: 30,
            }),
            ..FailoverConfig::default()
        };
        let fo = Failover::new(p(1), p(2), &cfg);
        let name = KeyName::parse("api:acme:k", Separator::default()).unwrap();
        let spec = KeySpec {
            name: &name,
            version: 1,
            algorithm: Algorithm::Ed25519,
            label: "api/acme/k/v1",
        };
        let g = fo.primary.generate(&spec).unwrap();
        let r = KeyRef {
            name: &name,
            version: 1,
            algorithm: Algorithm::Ed25519,
            handle: &g.handle,
        };
        for _ in 0..100 {
            fo.sign(&r, b"message").unwrap();
        }
        assert_eq!(fo.rerouted.load(Ordering::Relaxed), 30);
        assert_eq!(fo.mode(), Mode::Primary);
        // Healthy primary: checks cause no transition.
        assert!(fo.check().is_none());
    }

    #[test]
    fn composite_handles_split_back_and_plain_ones_do_not() {
        let h = composite::join(b"primary-handle", b"backup");
        assert_eq!(
            composite::split(&h),
            Some((&b"primary-handle"[..], &b"backup"[..]))
        );
        assert_eq!(composite::split(b"\x01plain"), None);
        assert_eq!(composite::split(b"FO\x01\x00\x00\x01\x00short"), None);
    }
}
