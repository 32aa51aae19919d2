//! Configuration: the HIP-005 YAML, loaded exactly as written, plus our own sections.
//!
//! Loading is three steps:
//! 1. parse the YAML into a generic tree;
//! 2. apply environment overrides (`HANZO_KMS__KMS__HANZO__POAI_SIGNING__ATTESTATION_TTL=7200`:
//!    the path after `HANZO_KMS__`, levels separated by `__`, case-insensitive);
//! 3. deserialize the tree into typed structs that deny unknown fields, tracking the path, so
//!    that every error names where it is (`kms.hanzo.model_encryption.algoritm: unknown field`).
//!
//! Secret values ([`ConfigSecret`], the password in `storage.url`) are redacted by `Serialize`
//! and `Debug`, so `hanzo-kms config check` can print the resolved config safely.

//!
//! Files: this one holds the whole file's shape, the sections other than the provider's, and
//! loading; `providers.rs` the `kms.lux` section (every provider's settings, failover);
//! `values.rs` the value types that parse and print themselves (durations, secrets, the storage
//! URL, algorithms, separators).

mod providers;
mod values;

pub use providers::*;
pub use values::*;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::error::{Error, ErrorKind, Result};
use crate::name::{Purpose, Separator};

/// The prefix of environment variables that override config paths.
pub const ENV_PREFIX: &str = "HANZO_KMS__";

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kms: KmsConfig,
    pub storage: StorageConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitsConfig,
    pub audit: AuditConfig,
}

/// `kms:` — the HIP-005 section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// HIP-005 writes `base: lux-kms`. It is the only base there is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    pub lux: LuxConfig,
    pub hanzo: HanzoConfig,
}

/// The only accepted `kms.base`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Base {
    #[serde(rename = "lux-kms")]
    LuxKms,
}

/// `kms.hanzo:` — the AI extensions of HIP-005.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HanzoConfig {
    pub model_encryption: ModelEncryptionConfig,
    pub poai_signing: PoaiSigningConfig,
    pub hmm_settlement: HmmSettlementConfig,
    pub key_isolation: KeyIsolationConfig,
    /// Our addition: the EIP-712 domain of signed objects (DESIGN.md §4).
    pub eip712: Eip712Config,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelEncryptionConfig {
    pub algorithm: Algorithm,
    pub key_rotation_days: u32,
    pub key_prefix: String,
}

impl Default for ModelEncryptionConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Aes256Gcm,
            key_rotation_days: 90,
            key_prefix: "model/".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoaiSigningConfig {
    pub algorithm: Algorithm,
    pub key_prefix: String,
    /// Seconds an attestation stays valid.
    pub attestation_ttl: u64,
    /// Hybrid signing: keyspaces also get an ML-DSA-65 partner key `poai:C:M-pq`, and a
    /// secp256k1 PoAI key with such a partner returns both signatures over the same digest.
    pub hybrid: bool,
}

impl Default for PoaiSigningConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Secp256k1,
            key_prefix: "poai/".into(),
            attestation_ttl: 3600,
            hybrid: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmmSettlementConfig {
    pub algorithm: Algorithm,
    pub key_prefix: String,
    /// Seconds a settlement stays valid by default.
    pub settlement_expiry: u64,
}

impl Default for HmmSettlementConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Secp256k1,
            key_prefix: "hmm/".into(),
            settlement_expiry: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyIsolationConfig {
    /// Keys are per model. Always true; `false` is refused (one key per model is the design).
    pub per_model: bool,
    /// Keys are per customer. Always true; `false` is refused.
    pub per_customer: bool,
    pub namespace_separator: Separator,
}

impl Default for KeyIsolationConfig {
    fn default() -> Self {
        Self {
            per_model: true,
            per_customer: true,
            namespace_separator: Separator::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Eip712Config {
    pub chain_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifying_contract: Option<String>,
}

impl Default for Eip712Config {
    fn default() -> Self {
        Self {
            chain_id: 96369,
            verifying_contract: None,
        }
    }
}

/// `storage:` — where keys, versions and audit records live.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://…`. Default: `sqlite://<data-dir>/kms.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<StorageUrl>,
    /// PostgreSQL only: how long to keep retrying an unreachable database when a node starts,
    /// with back-off from 250 ms to 5 s, before giving up. 0 tries once.
    pub connect_timeout_secs: u64,
    /// PostgreSQL only: connections per node. The server's `max_connections` must cover every
    /// node's pool plus maintenance (see docs/operations.md).
    pub max_connections: u32,
    /// SQLite only: `serve` logs a warning once when the free space on the store's filesystem
    /// falls below this many MiB (and a line when it is back above). 0 turns the warning off;
    /// `/metrics` shows the free space either way.
    pub free_space_warning_mib: u64,
    /// `serve`'s scheduler deletes replay records (nonce records, consumed attestations) whose
    /// message can no longer be accepted (docs/signing.md, "Replay records expire"). `false`
    /// keeps every record for good.
    pub prune_replay_records: bool,
    /// Seconds a replay record is kept past the moment its message expired: a margin for clock
    /// skew between nodes and clients, and for a small rise of `attestation_ttl`.
    pub replay_grace_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: None,
            connect_timeout_secs: 60,
            max_connections: 16,
            free_space_warning_mib: 1024,
            prune_replay_records: true,
            replay_grace_secs: 600,
        }
    }
}

/// `server:` — used by `hanzo-kms serve`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub rest_addr: String,
    pub grpc_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// A request that takes longer is cancelled.
    pub request_timeout_secs: u64,
    /// REST: a request's headers must arrive within this many seconds of the server starting to
    /// wait for them, or the connection is closed (slow clients). On a keep-alive connection
    /// the wait starts when the previous response is sent, so this is also the idle timeout.
    pub header_read_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            rest_addr: "127.0.0.1:8200".into(),
            grpc_addr: "127.0.0.1:8201".into(),
            tls: None,
            max_body_bytes: 1 << 20,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// `auth:` — how the server treats credentials.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed authentications one client address may make (per second, with a burst) before
    /// its further requests are refused at once, with 429 and no token lookup; their audit
    /// records are then one a second per address, with a count. On by default; an empty
    /// section (`{}`) turns it off.
    pub failures_per_peer: RateLimit,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            failures_per_peer: RateLimit {
                per_second: Some(10),
                burst: Some(100),
                per_day: None,
            },
        }
    }
}

/// One limit with several windows. Any window may be omitted.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
}

/// `rate_limits:` — per tenant, per key, and per tenant and operation.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_tenant: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_key: Option<RateLimit>,
    /// Keyed by operation name (`encrypt`, `decrypt`, `sign`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_operation: BTreeMap<String, RateLimit>,
}

/// `audit:` — the audit log is always on and always fail-closed; there is no switch to turn
/// that off. These settings shape its checkpoints and how long the store keeps it
/// (docs/operations.md, "Audit archives").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `serve`'s scheduler appends a checkpoint signed with the audit key (`api:system:audit`)
    /// this often, when records were written since the last one. 0 turns scheduled
    /// checkpoints off (`hanzo-kms audit checkpoint` still makes one).
    pub checkpoint_interval_secs: u64,
    /// ... and also as soon as this many records came since the last checkpoint (checked at
    /// each scheduler tick), so that `audit verify --since-checkpoint` stays short under load.
    /// 0: by time only.
    pub checkpoint_every_records: u64,
    /// Keep at least this many seconds of records in the store. With it set, the scheduler
    /// exports older records, up to a checkpoint, to `archive_dir`, then prunes them from the
    /// store. Unset: the store keeps every record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_secs: Option<u64>,
    /// Where the scheduler writes archives (`audit-<store id>-<first>-<last>.jsonl`). Needed
    /// with `retention_secs`. Ship them off the box: see docs/operations.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: 600,
            checkpoint_every_records: 1_000_000,
            retention_secs: None,
            archive_dir: None,
        }
    }
}

impl Config {
    /// Parse YAML text, apply `overrides` (pairs of environment variable name and value; only
    /// names starting with [`ENV_PREFIX`] are used), and check the result.
    ///
    /// `origin` names the source in error messages (usually the file path).
    pub fn from_yaml<I, K, V>(text: &str, origin: &str, overrides: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut tree: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                Error::new(ErrorKind::Config, format!("{origin}: invalid YAML: {e}"))
            })?
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        for (name, value) in overrides {
            let Some(path) = name.as_ref().strip_prefix(ENV_PREFIX) else {
                continue;
            };
            apply_override(&mut tree, path, value.as_ref())
                .map_err(|e| e.context(format!("environment variable {}", name.as_ref())))?;
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            // The path includes an unknown field's own name (`kms.hanzo.model_encryption.algoritm`).
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            Error::new(ErrorKind::Config, format!("{origin}: {path}: {inner}"))
        })?;
        config
            .check()
            .map_err(|e| Error::new(ErrorKind::Config, format!("{origin}: {}", e.message())))?;
        Ok(config)
    }

    /// Checks that span fields, each naming its path.
    fn check(&self) -> Result<()> {
        let h = &self.kms.hanzo;
        h.model_encryption
            .algorithm
            .check_purpose(Purpose::Model)
            .map_err(|e| e.context("kms.hanzo.model_encryption.algorithm"))?;
        h.poai_signing
            .algorithm
            .check_purpose(Purpose::Poai)
            .map_err(|e| e.context("kms.hanzo.poai_signing.algorithm"))?;
        h.hmm_settlement
            .algorithm
            .check_purpose(Purpose::Hmm)
            .map_err(|e| e.context("kms.hanzo.hmm_settlement.algorithm"))?;
        if h.model_encryption.key_rotation_days == 0 {
            return Err(Error::invalid(
                "kms.hanzo.model_encryption.key_rotation_days: must be at least 1",
            ));
        }
        if h.poai_signing.attestation_ttl == 0 {
            return Err(Error::invalid(
                "kms.hanzo.poai_signing.attestation_ttl: must be at least 1",
            ));
        }
        if h.hmm_settlement.settlement_expiry == 0 {
            return Err(Error::invalid(
                "kms.hanzo.hmm_settlement.settlement_expiry: must be at least 1",
            ));
        }
        if !h.key_isolation.per_model || !h.key_isolation.per_customer {
            return Err(Error::invalid(
                "kms.hanzo.key_isolation: per_model and per_customer must be true; Hanzo KMS always \
                 keeps one key per customer and model",
            ));
        }
        if self.audit.retention_secs.is_some() {
            if self.audit.archive_dir.is_none() {
                return Err(Error::invalid(
                    "audit.retention_secs needs audit.archive_dir: records leave the store only into an archive",
                ));
            }
            if self.audit.checkpoint_interval_secs == 0 {
                return Err(Error::invalid(
                    "audit.retention_secs needs audit.checkpoint_interval_secs above 0: an archive ends at a checkpoint",
                ));
            }
        }
        if let Some(url) = &self.storage.url {
            let u = url.expose();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
            {
                return Err(Error::invalid(format!(
                    "storage.url: '{}' is neither sqlite:PATH nor postgres://…",
                    url.redacted()
                )));
            }
        }
        let f = &self.kms.lux.failover;
        if f.enabled {
            let backup = f.backup_provider.unwrap_or(self.kms.lux.provider);
            if !self.kms.lux.provider.is_pkcs11() || !backup.is_pkcs11() {
                return Err(Error::invalid(
                    "kms.lux.failover needs PKCS#11 devices for both provider and backup_provider",
                ));
            }
            if f.failure_threshold == 0 {
                return Err(Error::invalid(
                    "kms.lux.failover.failure_threshold must be at least 1",
                ));
            }
            if f.health_check_interval.0 < std::time::Duration::from_millis(10) {
                return Err(Error::invalid(
                    "kms.lux.failover.health_check_interval must be at least 10ms",
                ));
            }
            if let Some(w) = f.weights
                && w.primary + w.backup == 0
            {
                return Err(Error::invalid(
                    "kms.lux.failover.weights: primary and backup cannot both be 0",
                ));
            }
        }
        if !(1..=1000).contains(&self.storage.max_connections) {
            return Err(Error::invalid(format!(
                "storage.max_connections is {}; it must be between 1 and 1000",
                self.storage.max_connections
            )));
        }
        Ok(())
    }

    /// The separator for key names.
    pub fn separator(&self) -> Separator {
        self.kms.hanzo.key_isolation.namespace_separator
    }

    /// The resolved config as YAML, with secrets redacted.
    pub fn to_redacted_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self)
            .map_err(|e| Error::internal(format!("rendering the config as YAML failed: {e}")))
    }

    /// The resolved config as JSON, with secrets redacted.
    pub fn to_redacted_json(&self) -> Value {
        // Serialization of these plain structs cannot fail: every map key is a string.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Keys that contain a hyphen; an environment variable spells them with `_`.
const HYPHENATED: [&str; 4] = ["google-cloud-kms", "thales-luna", "aws-cloudhsm", "aws-kms"];

fn apply_override(tree: &mut Value, path: &str, raw: &str) -> Result<()> {
    let segments: Vec<String> = path
        .split("__")
        .map(|s| {
            let lower = s.to_ascii_lowercase();
            HYPHENATED
                .iter()
                .find(|h| h.replace('-', "_") == lower)
                .map(|h| (*h).to_owned())
                .unwrap_or(lower)
        })
        .collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Error::new(ErrorKind::Config, "empty path segment"));
    }
    // A scalar in YAML syntax: numbers and booleans keep their type, anything else is a string.
    let value = match serde_saphyr::from_str::<Value>(raw) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(raw.to_owned()),
    };
    let mut node = tree;
    for (i, seg) in segments.iter().enumerate() {
        if !node.is_object() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{} is not a section", segments[..i].join(".")),
            ));
        }
        let obj = node
            .as_object_mut()
            .ok_or_else(|| Error::internal("not an object"))?;
        if i + 1 == segments.len() {
            obj.insert(seg.clone(), value);
            return Ok(());
        }
        node = obj
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration file of HIP-005 and DESIGN.md §1, verbatim.
    pub(crate) const SEED: &str = include_str!("../../tests/fixtures/hip005.yaml");

    fn load(text: &str) -> Result<Config> {
        Config::from_yaml(text, "test.yaml", std::iter::empty::<(&str, &str)>())
    }

    /// Issue 26 item 13: a cloned secret (the config is cloned into a provider's settings) is
    /// the same zeroizing allocation, not a second copy of the PIN or password.
    #[test]
    fn cloned_secrets_share_one_allocation() {
        let c = load("storage:\n  url: postgres://kms:pw-123@db/kms\nkms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      pin: \"4321\"\n").unwrap();
        let pin = c.kms.lux.softhsm2.as_ref().unwrap().pin.as_ref().unwrap();
        let copy = c.clone();
        let pin2 = copy
            .kms
            .lux
            .softhsm2
            .as_ref()
            .unwrap()
            .pin
            .as_ref()
            .unwrap();
        assert_eq!(pin.expose(), "4321");
        assert_eq!(pin.expose().as_ptr(), pin2.expose().as_ptr());
        let url = c.storage.url.as_ref().unwrap();
        let url2 = copy.storage.url.as_ref().unwrap();
        assert_eq!(url.expose().as_ptr(), url2.expose().as_ptr());
        assert!(!format!("{c:?}").contains("pw-123"));
        assert!(!format!("{c:?}").contains("4321"));
    }

    #[test]
    fn loads_the_hip005_seed_exactly_as_written() {
        let c = load(SEED).unwrap();
        assert_eq!(c.kms.base, Some(Base::LuxKms));
        assert_eq!(c.kms.lux.provider, ProviderKind::GoogleCloudKms);
        let g = c.kms.lux.google_cloud_kms.as_ref().unwrap();
        assert_eq!(g.project_id, "hanzo-ai-prod");
        assert_eq!(g.location, "global");
        assert_eq!(g.key_ring, "hanzo-kms-keyring");
        assert_eq!(
            g.credentials,
            PathBuf::from("/etc/kms/gcp-service-account.json")
        );
        let h = &c.kms.hanzo;
        assert_eq!(h.model_encryption.algorithm, Algorithm::Aes256Gcm);
        assert_eq!(h.model_encryption.key_rotation_days, 90);
        assert_eq!(h.model_encryption.key_prefix, "model/");
        assert_eq!(h.poai_signing.algorithm, Algorithm::Secp256k1);
        assert_eq!(h.poai_signing.key_prefix, "poai/");
        assert_eq!(h.poai_signing.attestation_ttl, 3600);
        assert_eq!(h.hmm_settlement.algorithm, Algorithm::Secp256k1);
        assert_eq!(h.hmm_settlement.key_prefix, "hmm/");
        assert_eq!(h.hmm_settlement.settlement_expiry, 86400);
        assert!(h.key_isolation.per_model && h.key_isolation.per_customer);
        assert_eq!(h.key_isolation.namespace_separator.as_char(), ':');
    }

    #[test]
    fn the_readme_example_loads() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("```yaml\nkms:\n  lux:\n    provider: software")
            .expect("README has the example");
        let body = &readme[start + "```yaml\n".len()..];
        let example = &body[..body.find("```").unwrap()];
        let c = load(example).unwrap();
        assert_eq!(c.kms.lux.provider, ProviderKind::Software);
        assert_eq!(
            c.rate_limits.per_tenant.as_ref().unwrap().per_day,
            Some(1_000_000)
        );
        assert_eq!(c.server.rest_addr, "127.0.0.1:8200");
    }

    #[test]
    fn yubihsm2_native_section_loads_with_lp325_keys_and_refuses_others() {
        let c = load(
            "kms:\n  lux:\n    provider: yubihsm2-native\n    yubihsm2-native:\n      connector_url: http://127.0.0.1:12345\n      auth_key_id: 2\n      password: ${YUBIHSM_PASSWORD}\n      domain: 3\n      signing_keys: hsm-wrapped\n      wrapped_key_cache: 0\n",
        )
        .unwrap();
        let kind = c.kms.lux.provider;
        assert_eq!(kind, ProviderKind::Yubihsm2Native);
        assert!(kind.is_native() && !kind.is_pkcs11() && !kind.is_remote());
        assert_eq!(kind.display_name(), "YubiHSM 2");
        assert!(c.kms.lux.pkcs11_section(kind).is_none());
        let y = c.kms.lux.yubihsm2_native.as_ref().unwrap();
        assert_eq!(y.auth_key_id, Some(2));
        assert_eq!(y.domain, Some(3));
        assert_eq!(y.signing_keys, SigningKeys::HsmWrapped);
        assert_eq!(y.password.as_ref().unwrap().expose(), "${YUBIHSM_PASSWORD}");
        let shown = c.to_redacted_yaml().unwrap();
        assert!(!shown.contains("YUBIHSM_PASSWORD"), "{shown}");
        // A PKCS#11 key in the native section is refused, naming it.
        let e = load("kms:\n  lux:\n    yubihsm2-native:\n      pkcs11_lib: /x.so\n").unwrap_err();
        assert!(
            e.to_string().contains("kms.lux.yubihsm2-native.pkcs11_lib"),
            "{e}"
        );
        // Failover stays PKCS#11-only.
        let e = load(
            "kms:\n  lux:\n    provider: yubihsm2-native\n    failover:\n      enabled: true\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("PKCS#11"), "{e}");
    }

    #[test]
    fn remote_sections_load_and_vault_is_openbao() {
        let c = load(
            "kms:\n  lux:\n    provider: vault\n    vault:\n      address: http://127.0.0.1:8200\n      token: s.secret\n      transit_mount: kms\n      wrapped_key_cache: 5s\n    aws-kms:\n      region: eu-west-1\n      endpoint: http://127.0.0.1:4566\n      max_retries: 0\n    google-cloud-kms:\n      project_id: p\n      location: global\n      key_ring: r\n      credentials: /x.json\n      endpoint: http://127.0.0.1:9\n",
        )
        .unwrap();
        assert_eq!(c.kms.lux.provider, ProviderKind::Openbao);
        assert!(c.kms.lux.provider.is_remote() && !c.kms.lux.provider.is_pkcs11());
        let b = c.kms.lux.openbao.as_ref().unwrap();
        assert_eq!(b.mount.as_deref(), Some("kms"));
        assert_eq!(
            b.tuning().wrapped_key_cache,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(b.tuning().timeout, RemoteTuning::DEFAULT_TIMEOUT);
        let a = c.kms.lux.aws_kms.as_ref().unwrap();
        assert_eq!(a.tuning().max_retries, 0);
        assert_eq!(
            c.kms
                .lux
                .google_cloud_kms
                .as_ref()
                .unwrap()
                .endpoint
                .as_deref(),
            Some("http://127.0.0.1:9")
        );
        let shown = c.to_redacted_yaml().unwrap();
        assert!(!shown.contains("s.secret"), "{shown}");
        let e = load("kms:\n  lux:\n    openbao:\n      adress: x\n").unwrap_err();
        assert!(e.to_string().contains("kms.lux.openbao.adress"), "{e}");
    }

    #[test]
    fn remote_sections_share_their_tuning_and_refuse_unknown_keys() {
        for section in ["openbao", "aws-kms", "google-cloud-kms"] {
            let text = format!(
                "kms:\n  lux:\n    {section}:\n      signing_keys: kms-wrapped\n      wrapped_key_cache: 0s\n      timeout: 2s\n      connect_timeout: 1s\n      max_retries: 7\n"
            );
            let c = load(&text).unwrap();
            let lux = &c.kms.lux;
            let t = match section {
                "openbao" => lux.openbao.as_ref().unwrap().tuning(),
                "aws-kms" => lux.aws_kms.as_ref().unwrap().tuning(),
                _ => lux.google_cloud_kms.as_ref().unwrap().tuning(),
            };
            assert_eq!(
                t,
                RemoteTuning {
                    wrapped_key_cache: std::time::Duration::ZERO,
                    timeout: std::time::Duration::from_secs(2),
                    connect_timeout: std::time::Duration::from_secs(1),
                    max_retries: 7,
                    signing_keys: RemoteSigningKeys::KmsWrapped,
                },
                "{section}"
            );
            // A misspelt shared key is still refused, naming its path.
            let e = load(&format!("kms:\n  lux:\n    {section}:\n      timout: 2s\n")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("kms.lux.{section}.timout")),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.kms.lux.provider, ProviderKind::Software);
        assert_eq!(c.kms.hanzo.model_encryption.key_rotation_days, 90);
        assert_eq!(c.kms.hanzo.eip712.chain_id, 96369);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = SEED.replace("algorithm: AES-256-GCM", "algoritm: AES-256-GCM");
        let e = load(&text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string()
                .contains("kms.hanzo.model_encryption.algoritm"),
            "{e}"
        );
        let e = load("storage:\n  uri: sqlite:x\n").unwrap_err();
        assert!(e.to_string().contains("storage.uri"), "{e}");
        let e = load("bogus: 1\n").unwrap_err();
        assert!(
            e.to_string().contains("test.yaml: bogus: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_their_path() {
        let text = SEED.replace("attestation_ttl: 3600", "attestation_ttl: one-hour");
        let e = load(&text).unwrap_err();
        assert!(
            e.to_string()
                .contains("kms.hanzo.poai_signing.attestation_ttl"),
            "{e}"
        );
        let e = load("kms:\n  hanzo:\n    poai_signing:\n      algorithm: RSA\n").unwrap_err();
        assert!(
            e.to_string().contains("kms.hanzo.poai_signing.algorithm"),
            "{e}"
        );
        assert!(e.to_string().contains("unknown algorithm 'RSA'"), "{e}");
        let e = load("kms:\n  hanzo:\n    model_encryption:\n      algorithm: ECDSA-secp256k1\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("kms.hanzo.model_encryption.algorithm: algorithm secp256k1 cannot be used for model keys"),
            "{e}"
        );
        let e = load("kms: [1, 2]\n").unwrap_err();
        assert!(e.to_string().contains("kms"), "{e}");
        let e = load("kms:\n  lux:\n    provider: hsm9000\n").unwrap_err();
        assert!(e.to_string().contains("kms.lux.provider"), "{e}");
        let e = load("kms: {hanzo: {key_isolation: {namespace_separator: '::'}}}").unwrap_err();
        assert!(e.to_string().contains("exactly one character"), "{e}");
        let e = load("key: [unclosed\n").unwrap_err();
        assert!(e.to_string().contains("invalid YAML"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = Config::from_yaml(
            SEED,
            "seed",
            [
                (
                    "HANZO_KMS__KMS__HANZO__POAI_SIGNING__ATTESTATION_TTL",
                    "7200",
                ),
                ("HANZO_KMS__KMS__LUX__PROVIDER", "software"),
                (
                    "HANZO_KMS__KMS__LUX__GOOGLE_CLOUD_KMS__LOCATION",
                    "europe-west4",
                ),
                ("HANZO_KMS__STORAGE__URL", "sqlite:/tmp/x.db"),
                ("UNRELATED", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.kms.hanzo.poai_signing.attestation_ttl, 7200);
        assert_eq!(c.kms.lux.provider, ProviderKind::Software);
        assert_eq!(c.kms.lux.google_cloud_kms.unwrap().location, "europe-west4");
        assert_eq!(c.storage.url.unwrap().expose(), "sqlite:/tmp/x.db");
        let e =
            Config::from_yaml(SEED, "seed", [("HANZO_KMS__KMS__HANZO__TYPO", "1")]).unwrap_err();
        assert!(e.to_string().contains("kms.hanzo.typo"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = load(
            "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      pin: \"123456-secret\"\n\
             storage:\n  url: postgres://kms:hunter2@db.internal:5432/kms\n",
        )
        .unwrap();
        let json = c.to_redacted_json().to_string();
        assert!(!json.contains("123456-secret"), "{json}");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(
            json.contains("postgres://kms:<redacted>@db.internal:5432/kms"),
            "{json}"
        );
        let yaml = c.to_redacted_yaml().unwrap();
        assert!(
            !yaml.contains("123456-secret") && !yaml.contains("hunter2"),
            "{yaml}"
        );
        assert!(yaml.contains("<redacted>"), "{yaml}");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("123456-secret") && !dbg.contains("hunter2"),
            "{dbg}"
        );
        assert_eq!(
            c.kms.lux.softhsm2.unwrap().pin.unwrap().expose(),
            "123456-secret"
        );
    }

    /// Found by the `config` fuzz target: a duration given in seconds whose milliseconds pass
    /// u64::MAX loaded, but `config show` rendered it as a number that did not load again.
    #[test]
    fn every_duration_that_loads_renders_as_one_that_loads() {
        for d in [
            "18446744073709551615",
            "18446744073709551615s",
            "18446744073709551615h",
            "30s",
        ] {
            let text = format!("kms:\n  lux:\n    softhsm2:\n      wrapped_key_cache: {d}\n");
            let c = load(&text).unwrap();
            let shown = c.to_redacted_yaml().unwrap();
            let again = load(&shown).unwrap_or_else(|e| panic!("{d}: {e}\n{shown}"));
            assert_eq!(again.to_redacted_yaml().unwrap(), shown);
            let ms = |c: &Config| {
                c.kms
                    .lux
                    .softhsm2
                    .as_ref()
                    .unwrap()
                    .wrapped_key_cache
                    .unwrap()
                    .0
            };
            assert_eq!(ms(&again), ms(&c));
        }
        let big =
            load("kms:\n  lux:\n    softhsm2:\n      wrapped_key_cache: 18446744073709551615\n")
                .unwrap();
        assert_eq!(
            big.kms.lux.softhsm2.unwrap().wrapped_key_cache.unwrap().0,
            std::time::Duration::from_millis(u64::MAX)
        );
    }
}
