//! `kms.lux`: which provider holds the keys, and each provider's settings.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::values::{ConfigSecret, Duration};

/// Provider names, as in LP-325, plus `software` (the embedded default).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    AwsCloudhsm,
    AwsKms,
    Fortanix,
    GoogleCloudKms,
    Nitrokey,
    /// OpenBao's (or HashiCorp Vault's) Transit engine; `vault` is accepted as the same.
    #[serde(alias = "vault")]
    Openbao,
    #[default]
    Software,
    Softhsm2,
    ThalesLuna,
    Yubihsm2,
    /// YubiHSM 2 through its own protocol (the `yubihsm` crate and yubihsm-connector), without
    /// yubihsm_pkcs11; `yubihsm2` is the same device through PKCS#11.
    Yubihsm2Native,
    Zymbit,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsCloudhsm => "aws-cloudhsm",
            Self::AwsKms => "aws-kms",
            Self::Fortanix => "fortanix",
            Self::GoogleCloudKms => "google-cloud-kms",
            Self::Nitrokey => "nitrokey",
            Self::Openbao => "openbao",
            Self::Software => "software",
            Self::Softhsm2 => "softhsm2",
            Self::ThalesLuna => "thales-luna",
            Self::Yubihsm2 => "yubihsm2",
            Self::Yubihsm2Native => "yubihsm2-native",
            Self::Zymbit => "zymbit",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kms.lux:` — which provider, and one optional section per provider.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LuxConfig {
    pub provider: ProviderKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwareConfig>,
    #[serde(rename = "google-cloud-kms", skip_serializing_if = "Option::is_none")]
    pub google_cloud_kms: Option<GoogleCloudKmsConfig>,
    #[serde(rename = "aws-kms", skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsConfig>,
    /// `openbao:` (or `vault:`): the Transit engine of OpenBao or HashiCorp Vault.
    #[serde(alias = "vault", skip_serializing_if = "Option::is_none")]
    pub openbao: Option<OpenBaoConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub softhsm2: Option<Pkcs11Config>,
    #[serde(rename = "thales-luna", skip_serializing_if = "Option::is_none")]
    pub thales_luna: Option<Pkcs11Config>,
    #[serde(rename = "aws-cloudhsm", skip_serializing_if = "Option::is_none")]
    pub aws_cloudhsm: Option<Pkcs11Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fortanix: Option<Pkcs11Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yubihsm2: Option<Pkcs11Config>,
    /// `yubihsm2-native:` — YubiHSM 2 through its own protocol (no PKCS#11 module).
    #[serde(rename = "yubihsm2-native", skip_serializing_if = "Option::is_none")]
    pub yubihsm2_native: Option<YubiHsmNativeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zymbit: Option<Pkcs11Config>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nitrokey: Option<Pkcs11Config>,
    /// LP-325's high availability: a backup device, health checks, failover and failback.
    pub failover: FailoverConfig,
}

/// `kms.lux.failover` (LP-325): route to a backup device after `failure_threshold` failed health
/// checks of the primary, and ramp traffic back when it recovers. The backup must hold the same
/// key material (a clone: an HSM HA group or a cloned partition); keys made later are
/// replicated to it by hanzo-kms (docs/operations.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    pub enabled: bool,
    /// The backup's provider kind (LP-325); default: the same as `provider`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_provider: Option<ProviderKind>,
    /// The backup device's settings (fields of a PKCS#11 section); default: the
    /// `kms.lux.<backup_provider>` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<Pkcs11Config>,
    /// `30s`, `500ms`, `2m`, or seconds as a number.
    pub health_check_interval: Duration,
    pub failure_threshold: u32,
    /// LP-325's primary/backup split while both are healthy, e.g. `{primary: 70, backup: 30}`;
    /// default: everything to the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<FailoverWeights>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            backup_provider: None,
            backup: None,
            health_check_interval: Duration(std::time::Duration::from_secs(30)),
            failure_threshold: 3,
            weights: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailoverWeights {
    pub primary: u32,
    pub backup: u32,
}

impl LuxConfig {
    /// The section for a PKCS#11 provider kind, or `None` if `kind` is not PKCS#11 or the
    /// section is absent (every field has a default, so an absent section is an empty one).
    pub fn pkcs11_section(&self, kind: ProviderKind) -> Option<&Pkcs11Config> {
        match kind {
            ProviderKind::AwsCloudhsm => self.aws_cloudhsm.as_ref(),
            ProviderKind::Fortanix => self.fortanix.as_ref(),
            ProviderKind::Nitrokey => self.nitrokey.as_ref(),
            ProviderKind::Softhsm2 => self.softhsm2.as_ref(),
            ProviderKind::ThalesLuna => self.thales_luna.as_ref(),
            ProviderKind::Yubihsm2 => self.yubihsm2.as_ref(),
            ProviderKind::Zymbit => self.zymbit.as_ref(),
            ProviderKind::AwsKms
            | ProviderKind::GoogleCloudKms
            | ProviderKind::Openbao
            | ProviderKind::Software
            | ProviderKind::Yubihsm2Native => None,
        }
    }
}

impl ProviderKind {
    /// Whether this provider speaks PKCS#11.
    pub fn is_pkcs11(self) -> bool {
        !self.is_remote() && !self.is_native() && self != Self::Software
    }

    /// Whether this provider speaks to its device through the device's own protocol rather
    /// than PKCS#11 (`yubihsm2-native`).
    pub fn is_native(self) -> bool {
        self == Self::Yubihsm2Native
    }

    /// The provider's name as a human writes it, for messages: "Google Cloud KMS", "AWS KMS",
    /// "OpenBao" for the remote services, the config name for the others.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::AwsKms => "AWS KMS",
            Self::GoogleCloudKms => "Google Cloud KMS",
            Self::Openbao => "OpenBao",
            Self::Yubihsm2Native => "YubiHSM 2",
            other => other.as_str(),
        }
    }

    /// Whether this provider is a remote key service reached over HTTP (Google Cloud KMS,
    /// AWS KMS, OpenBao/Vault Transit).
    pub fn is_remote(self) -> bool {
        matches!(self, Self::AwsKms | Self::GoogleCloudKms | Self::Openbao)
    }
}

/// `kms.lux.software:` — the embedded provider.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoftwareConfig {
    /// Where the master key is; default `<data-dir>/master.key`. `HANZO_KMS_MASTER_KEY` (hex)
    /// takes precedence over any file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
}

/// Declares a remote service's config section with the settings every remote section shares
/// appended (`signing_keys`, `wrapped_key_cache`, `timeout`, `connect_timeout`, `max_retries`)
/// and its `tuning()`: one definition of those fields for the three sections.
///
/// Not a `#[serde(flatten)]`ed struct: serde does not support `flatten` together with
/// `deny_unknown_fields` (on the outer or the inner struct), and a misspelt key in a key
/// service's section (`timout: 5s`) must stay an error naming it, not be ignored.
macro_rules! remote_section {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Where new signing keys live: `kms-resident` (default) or `kms-wrapped`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub signing_keys: Option<RemoteSigningKeys>,
            /// How long unwrapped kms-wrapped keys stay cached; default 60 s, `0` = never.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub wrapped_key_cache: Option<Duration>,
            /// The longest wait for each phase of one HTTP request (sending it, the answer's head,
            /// its body); default 10 s. The connection has `connect_timeout`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub timeout: Option<Duration>,
            /// Opening the connection; default 5 s.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub connect_timeout: Option<Duration>,
            /// Retries of a throttled or unavailable call; default 3.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub max_retries: Option<u32>,
        }

        impl $name {
            /// The shared settings with their defaults.
            pub fn tuning(&self) -> RemoteTuning {
                RemoteTuning::resolve(
                    self.wrapped_key_cache,
                    self.timeout,
                    self.connect_timeout,
                    self.max_retries,
                    self.signing_keys,
                )
            }
        }
    };
}

remote_section! {
/// `kms.lux.google-cloud-kms:` — as in HIP-005, plus an `endpoint` override (tests) and the
/// settings every remote service shares (see [`RemoteTuning`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleCloudKmsConfig {
    pub project_id: String,
    pub location: String,
    pub key_ring: String,
    pub credentials: PathBuf,
    /// The service's base URL; default Google's. Tests point it at a local server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where new Cloud KMS key versions live: `hsm` (default; the only level at which Cloud
    /// KMS signs secp256k1) or `software`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection_level: Option<GcpProtectionLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}
}

/// `kms.lux.google-cloud-kms.protection_level`: Cloud KMS's `ProtectionLevel` for new keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GcpProtectionLevel {
    /// Cloud HSM (FIPS 140-2 level 3); offers EC_SIGN_SECP256K1_SHA256.
    #[default]
    Hsm,
    /// Software keys; no secp256k1 (such keys are then kms-wrapped).
    Software,
}

remote_section! {
/// `kms.lux.aws-kms:` — AWS KMS. Credentials come from the standard AWS chain, never from this
/// file: the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
/// the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`,
/// profile `profile` or `AWS_PROFILE`), the ECS/EKS container credentials endpoint, then the
/// EC2 instance metadata service (IMDSv2); see docs/providers.md.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsKmsConfig {
    /// e.g. `us-east-1`; default `AWS_REGION` / `AWS_DEFAULT_REGION`, then the profile's `region`
    /// in the shared config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The service's base URL; default `AWS_ENDPOINT_URL_KMS`, then `AWS_ENDPOINT_URL`, then
    /// `https://kms.<region>.amazonaws.com`. Tests point it at LocalStack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The profile of the shared credentials and config files (`~/.aws/credentials`,
    /// `~/.aws/config`); default `AWS_PROFILE`, else `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Prefix of the aliases of the root keys (`alias/<prefix>root-kek`); default `hanzo-kms-`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}
}

remote_section! {
/// `kms.lux.openbao:` (or `vault:`) — the Transit secrets engine of OpenBao or HashiCorp
/// Vault. One of `token`, `token_file`, `token_env` (default: `$BAO_TOKEN`, then `$VAULT_TOKEN`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenBaoConfig {
    /// e.g. `https://bao.internal:8200`; default `$BAO_ADDR`, then `$VAULT_ADDR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<ConfigSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Where the Transit engine is mounted; default `transit`.
    #[serde(alias = "transit_mount", skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Prefix of Transit key names; default `hanzo-kms.`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}
}

/// Where a remote provider keeps new signing keys it can sign with natively.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteSigningKeys {
    /// In the service (`kms-resident`), where the service signs the algorithm (default).
    #[default]
    KmsResident,
    /// Generated in software and kept wrapped under a KEK in the service (`kms-wrapped`):
    /// software speed once unwrapped.
    KmsWrapped,
}

/// The settings every remote service section shares, resolved with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteTuning {
    /// How long an unwrapped kms-wrapped key stays in zeroizing memory after its last use
    /// (`wrapped_key_cache`; default 60 s, `0` = never cached).
    pub wrapped_key_cache: std::time::Duration,
    /// The longest wait for each phase of one HTTP request: sending it, the answer's head, its
    /// body (`timeout`; default 10 s).
    pub timeout: std::time::Duration,
    /// Opening the connection (`connect_timeout`; default 5 s).
    pub connect_timeout: std::time::Duration,
    /// Retries of a throttled or unavailable call, with exponential backoff (`max_retries`;
    /// default 3).
    pub max_retries: u32,
    pub signing_keys: RemoteSigningKeys,
}

impl RemoteTuning {
    pub const DEFAULT_WRAPPED_KEY_CACHE: std::time::Duration = std::time::Duration::from_secs(60);
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    pub const DEFAULT_MAX_RETRIES: u32 = 3;

    fn resolve(
        cache: Option<Duration>,
        timeout: Option<Duration>,
        connect: Option<Duration>,
        retries: Option<u32>,
        signing_keys: Option<RemoteSigningKeys>,
    ) -> Self {
        Self {
            wrapped_key_cache: cache.map_or(Self::DEFAULT_WRAPPED_KEY_CACHE, |d| d.0),
            timeout: timeout.map_or(Self::DEFAULT_TIMEOUT, |d| d.0),
            connect_timeout: connect.map_or(Self::DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            max_retries: retries.unwrap_or(Self::DEFAULT_MAX_RETRIES),
            signing_keys: signing_keys.unwrap_or_default(),
        }
    }
}

/// A PKCS#11 provider section (`softhsm2`, `thales-luna`, `yubihsm2`, ...).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pkcs11Config {
    /// The PKCS#11 module; LP-325 spells it `pkcs11_lib`, which is accepted as the same key.
    #[serde(alias = "pkcs11_lib", skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<ConfigSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// `user` (default) or `so`; a vendor's crypto-user type as a number (e.g. `0x80000001`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
    /// Where new signing keys live: `hsm-resident` (default: generated and used in the device) or
    /// `hsm-wrapped` (generated in software, stored wrapped under the device's KEK; software speed).
    pub signing_keys: SigningKeys,
    /// What to do with an algorithm the device lacks (ML-DSA-65 everywhere today): `wrap` (default)
    /// makes the key hsm-wrapped; `refuse` fails the request.
    pub fallback: Pkcs11Fallback,
    /// AES keys made from now on (generated or restored) may leave the token wrapped, for
    /// `backup create` and migration (CKA_EXTRACTABLE true; CKA_SENSITIVE stays true, so only
    /// wrapped). Default false: AES keys and hsm-resident signing keys never leave the device.
    pub exportable: bool,
    /// How the token seals what it keeps outside itself (hsm-wrapped keys, and model KEKs on a
    /// device without AES-GCM): default the first of `aes-gcm`, `ecdh-p256`, `rsa-oaep` that
    /// the profile and the token's mechanisms allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapping: Option<WrappingScheme>,
    /// Use only these mechanisms of the token (`CKM_*` names or numbers): to keep a device to a
    /// vetted set, or to make a SoftHSM2 token behave like another vendor's for tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanisms: Option<MechanismFilter>,
    /// How long an unwrapped hsm-wrapped key stays in (zeroizing) memory after its last use:
    /// `60s` by default, `0` to unwrap in the device for every use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped_key_cache: Option<Duration>,
    /// Thales Luna with the FIPS policy on: the HSM makes each AES-GCM IV and returns it after
    /// the ciphertext.
    pub fips_mode: bool,
    /// YubiHSM 2 (LP-325): the connector, e.g. `http://127.0.0.1:12345`. yubihsm_pkcs11 reads
    /// its connector from its own `yubihsm_pkcs11.conf`; this must name the same one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_url: Option<String>,
    /// YubiHSM 2 (LP-325): the authentication key's object id. With `password` it makes the
    /// PKCS#11 PIN, `<id as 4 hex digits><password>` (e.g. `0001password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_key_id: Option<u16>,
    /// YubiHSM 2 (LP-325): the authentication key's password; `${VAR}` reads the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<ConfigSecret>,
    /// AWS CloudHSM (LP-325): recorded for operators; the CloudHSM client's own configuration
    /// chooses the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// AWS CloudHSM (LP-325): as `cluster_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `kms.lux.yubihsm2-native:` — a YubiHSM 2 reached through yubihsm-connector with the device's
/// own protocol. LP-325's keys (`connector_url`, `auth_key_id`, `password`) as in the
/// `yubihsm2` (PKCS#11) section; see docs/providers.md, "Native YubiHSM 2".
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct YubiHsmNativeConfig {
    /// yubihsm-connector's address, `http://HOST:PORT`; default `http://127.0.0.1:12345`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_url: Option<String>,
    /// The authentication key's object id; default 1 (the device's factory key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_key_id: Option<u16>,
    /// The authentication key's password (required); `${VAR}` reads the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<ConfigSecret>,
    /// The domain (1-16) of every object Hanzo KMS makes; default 1. The authentication key
    /// must have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<u8>,
    /// Where new signing keys live: `hsm-resident` (default) or `hsm-wrapped`.
    pub signing_keys: SigningKeys,
    /// How long an unwrapped hsm-wrapped key stays in memory after its last use; default 60 s,
    /// `0` = never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped_key_cache: Option<Duration>,
    /// The longest wait for one answer from the connector; default 5 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `kms.lux.<pkcs11 provider>.wrapping`: how a token seals values kept outside it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum WrappingScheme {
    /// AES-256-GCM in the device under the root KEK.
    #[serde(rename = "aes-gcm")]
    AesGcm,
    /// ECDH with the device's static P-256 key, HKDF-SHA256, AES-256-GCM in software.
    #[serde(rename = "ecdh-p256")]
    EcdhP256,
    /// RSA-OAEP-SHA256 to the device's RSA key, AES-256-GCM in software.
    #[serde(rename = "rsa-oaep")]
    RsaOaep,
}

impl WrappingScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AesGcm => "aes-gcm",
            Self::EcdhP256 => "ecdh-p256",
            Self::RsaOaep => "rsa-oaep",
        }
    }
}

impl fmt::Display for WrappingScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kms.lux.<pkcs11 provider>.mechanisms`: `allow` (only these; default all) and `deny`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MechanismFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// `kms.lux.<pkcs11 provider>.signing_keys`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SigningKeys {
    #[default]
    HsmResident,
    HsmWrapped,
}

/// `kms.lux.<pkcs11 provider>.fallback`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pkcs11Fallback {
    Refuse,
    #[default]
    Wrap,
}
