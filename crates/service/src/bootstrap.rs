//! Opening a data directory: the master key, the provider and the store.
//!
//! `init` creates the data directory (mode 0700), the master key file (mode 0600, unless the
//! master key comes from `HANZO_KMS_MASTER_KEY`) and the store, and records the provider's
//! fingerprint in it. `open` recomputes that fingerprint and refuses a master key that does not
//! match *before* anything in the store is changed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hanzo_kms_core::config::{ConfigSecret, ProviderKind};
use hanzo_kms_core::{Config, Error, ErrorKind, Provider, Result, SecretKey32};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_software::SoftwareProvider;
use hanzo_kms_store::Store;

/// The environment variable that carries the master key as 64 hex characters.
pub const MASTER_KEY_ENV: &str = "HANZO_KMS_MASTER_KEY";

/// Where the root of trust is: the software provider's master key (from the environment or a
/// file), or the root keys inside a PKCS#11 token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    Env,
    File(PathBuf),
    Token {
        provider: String,
        label: String,
    },
    /// A remote key service: its provider name (as the config writes it), its name for
    /// people ("Google Cloud KMS") and where it is (address, region).
    Service {
        provider: String,
        service: String,
        location: String,
    },
    /// A device reached through its own protocol (`yubihsm2-native`): the provider name, the
    /// device's name for people ("YubiHSM 2") and where it is (the connector's URL).
    Device {
        provider: String,
        device: String,
        location: String,
    },
}

impl std::fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => write!(f, "${MASTER_KEY_ENV}"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Token { provider, label } => write!(f, "{provider} token '{label}'"),
            Self::Service {
                service, location, ..
            } => write!(f, "{service} at {location}"),
            Self::Device {
                device, location, ..
            } => write!(f, "{device} at {location}"),
        }
    }
}

/// The configuration: the YAML file at `path` (the HIP-005 format), or the defaults without one,
/// with every `HANZO_KMS__SECTION__KEY=value` variable of this process's environment applied
/// over it ([`hanzo_kms_core::config::ENV_PREFIX`]), and checked. An unreadable file is a
/// `Config` error that names it. Used by the `hanzo-kms` and `hanzo-kms-bench` binaries.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(hanzo_kms_core::config::ENV_PREFIX))
        .collect();
    match path {
        Some(p) => {
            let text = fs::read_to_string(p).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("reading config file {}", p.display()),
                )
                .with_source(e)
            })?;
            Config::from_yaml(&text, &p.display().to_string(), env)
        }
        None => Config::from_yaml("", "defaults", env),
    }
}

/// Everything needed to open a data directory.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub config: Config,
    /// The value of `HANZO_KMS_MASTER_KEY`, if set. `Debug` prints `<redacted>`.
    pub master_key_env: Option<ConfigSecret>,
}

impl Settings {
    pub fn master_key_path(&self) -> PathBuf {
        self.config
            .kms
            .lux
            .software
            .as_ref()
            .and_then(|s| s.master_key_file.clone())
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// The store's URL, in zeroizing memory (it may hold a password).
    pub fn storage_url(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(match &self.config.storage.url {
            Some(u) => u.expose().to_owned(),
            None => Store::sqlite_url(&self.data_dir),
        })
    }

    fn uses_default_sqlite(&self) -> bool {
        self.config.storage.url.is_none()
    }

    fn check_provider_supported(&self) -> Result<()> {
        check_kind_supported(self.config.kms.lux.provider)
    }

    /// Open the configured YubiHSM 2 through its own protocol (with `create_roots`, its root
    /// objects are made if missing).
    fn native_provider(&self, create_roots: bool) -> Result<(Arc<dyn Provider>, MasterKeySource)> {
        let kind = ProviderKind::Yubihsm2Native;
        let settings = hanzo_kms_yubihsm::YubiHsmSettings::from_config(
            self.config.kms.lux.yubihsm2_native.as_ref(),
        )?;
        let hsm = hanzo_kms_yubihsm::YubiHsmProvider::open(&settings, create_roots)?;
        let source = MasterKeySource::Device {
            provider: kind.as_str().to_owned(),
            device: kind.display_name().to_owned(),
            location: hsm.connector_url().to_owned(),
        };
        Ok((Arc::new(hsm), source))
    }

    /// Open the configured remote key service provider, or a device reached through its own
    /// protocol (`yubihsm2-native`) (with `create_roots`, its root keys are made if missing);
    /// `None` when the provider is neither.
    fn remote_provider(
        &self,
        kind: ProviderKind,
        create_roots: bool,
    ) -> Result<Option<(Arc<dyn Provider>, MasterKeySource)>> {
        if kind.is_native() {
            check_kind_supported(kind)?;
            return self.native_provider(create_roots).map(Some);
        }
        if !kind.is_remote() {
            return Ok(None);
        }
        check_kind_supported(kind)?;
        let env = |n: &str| std::env::var(n).ok();
        let lux = &self.config.kms.lux;
        let (provider, location): (Arc<dyn Provider>, String) = match kind {
            ProviderKind::Openbao => {
                let c = lux.openbao.clone().unwrap_or_default();
                let client = hanzo_kms_remote::OpenBao::from_config(&c, &env)?;
                let location = client.address().to_owned();
                // The client puts `key_prefix` before every name, roots included.
                let p = open_remote(client, &c.tuning(), String::new(), create_roots)?;
                (p, location)
            }
            ProviderKind::AwsKms => {
                let c = lux.aws_kms.clone().unwrap_or_default();
                let client = hanzo_kms_remote::AwsKms::from_config(&c, &env)?;
                let location = client.endpoint().to_owned();
                let p = open_remote(client, &c.tuning(), String::new(), create_roots)?;
                (p, location)
            }
            ProviderKind::GoogleCloudKms => {
                let c = lux.google_cloud_kms.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        "Google Cloud KMS: kms.lux.provider is google-cloud-kms but there is no kms.lux.google-cloud-kms \
                         section (project_id, location, key_ring, credentials)",
                    )
                })?;
                let client = hanzo_kms_remote::GcpKms::from_config(&c)?;
                // The key ring must exist: Hanzo KMS never creates one.
                client.check_key_ring()?;
                let location = format!("{} at {}", client.key_ring(), client.endpoint());
                let root_prefix = c
                    .key_prefix
                    .clone()
                    .unwrap_or_else(|| hanzo_kms_remote::gcp::DEFAULT_KEY_PREFIX.into());
                let p = open_remote(client, &c.tuning(), root_prefix, create_roots)?;
                (p, location)
            }
            other => return Err(unsupported_kind(other)),
        };
        let source = MasterKeySource::Service {
            provider: kind.as_str().to_owned(),
            service: kind.display_name().to_owned(),
            location,
        };
        Ok(Some((provider, source)))
    }

    /// Open the configured PKCS#11 provider; `None` for the software provider.
    fn pkcs11_provider(&self, create_roots: bool) -> Result<Option<Arc<Pkcs11Provider>>> {
        let kind = self.config.kms.lux.provider;
        if !kind.is_pkcs11() {
            return Ok(None);
        }
        let settings = Pkcs11Settings::from_config(kind, self.config.kms.lux.pkcs11_section(kind))?;
        Ok(Some(Arc::new(Pkcs11Provider::open(
            &settings,
            create_roots,
        )?)))
    }

    fn master_key(&self) -> Result<(SecretKey32, MasterKeySource)> {
        if let Some(hex) = &self.master_key_env {
            let key = SecretKey32::from_hex(hex.expose()).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("{MASTER_KEY_ENV}: {}", e.message()),
                )
            })?;
            return Ok((key, MasterKeySource::Env));
        }
        let path = self.master_key_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => zeroize::Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::MasterKeyMismatch,
                    format!(
                        "the master key is missing: {} does not exist and {MASTER_KEY_ENV} is not set",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("reading the master key {}", path.display()),
                )
                .with_source(e));
            }
        };
        check_private_mode(&path)?;
        let key = SecretKey32::from_hex(&text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{}: {}", path.display(), e.message()),
            )
        })?;
        Ok((key, MasterKeySource::File(path)))
    }
}

impl MasterKeySource {
    fn token(hsm: &Pkcs11Provider) -> Self {
        Self::Token {
            provider: hsm.name().to_owned(),
            label: hsm.token_label().to_owned(),
        }
    }
}

/// Generate a master key and write it to `path` (mode 0600, as hex and a newline).
fn write_new_master_key(path: &Path) -> Result<SecretKey32> {
    let k = SoftwareProvider::generate_master_key()?;
    let mut text = k.to_hex();
    text.push('\n');
    write_private_file(path, text.as_bytes())?;
    Ok(k)
}

/// What `init` did.
#[derive(Clone, Debug)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub store: String,
    pub master_key: MasterKeySource,
    pub store_id: String,
}

/// Create a new data directory and store. Refuses to touch an existing store.
pub async fn init(settings: &Settings) -> Result<(InitReport, Store, Arc<dyn Provider>)> {
    settings.check_provider_supported()?;
    let dir = &settings.data_dir;
    create_private_dir(dir)?;
    let key_path = settings.master_key_path();
    let db_path = dir.join("kms.db");
    if settings.uses_default_sqlite() && db_path.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} is already initialised (found {})",
                dir.display(),
                db_path.display()
            ),
        ));
    }
    let device: Option<(Arc<dyn Provider>, MasterKeySource)> =
        match settings.pkcs11_provider(true)? {
            Some(hsm) => {
                let source = MasterKeySource::token(&hsm);
                Some((hsm, source))
            }
            None => settings.remote_provider(settings.config.kms.lux.provider, true)?,
        };
    if let Some((device, source)) = device {
        return match init_store(settings, device).await {
            Ok((store, provider, store_id)) => Ok((
                InitReport {
                    data_dir: dir.clone(),
                    store: store.location().to_owned(),
                    master_key: source,
                    store_id,
                },
                store,
                provider,
            )),
            Err(e) => {
                remove_default_sqlite(settings);
                Err(e)
            }
        };
    }
    let (master, source, wrote_key) = if settings.master_key_env.is_some() {
        let (k, s) = settings.master_key()?;
        (k, s, false)
    } else {
        if key_path.exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; refusing to overwrite a master key (move it away, or set {MASTER_KEY_ENV} to use it)",
                    key_path.display()
                ),
            ));
        }
        let k = write_new_master_key(&key_path)?;
        (k, MasterKeySource::File(key_path.clone()), true)
    };
    let result = match SoftwareProvider::new(&master) {
        Ok(p) => init_store(settings, Arc::new(p)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((store, provider, store_id)) => Ok((
            InitReport {
                data_dir: dir.clone(),
                store: store.location().to_owned(),
                master_key: source,
                store_id,
            },
            store,
            provider,
        )),
        Err(e) => {
            // Leave nothing half-made behind.
            if wrote_key {
                let _ = fs::remove_file(&key_path);
            }
            remove_default_sqlite(settings);
            Err(e)
        }
    }
}

fn remove_default_sqlite(settings: &Settings) {
    if settings.uses_default_sqlite() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(settings.data_dir.join(format!("kms.db{suffix}")));
        }
    }
}

async fn init_store(
    settings: &Settings,
    provider: Arc<dyn Provider>,
) -> Result<(Store, Arc<dyn Provider>, String)> {
    if settings.uses_default_sqlite() {
        // Create the database file owner-only before SQLite opens it; its -wal and -shm files
        // inherit the mode.
        create_private_file(&settings.data_dir.join("kms.db"))?;
    }
    let store = connect_store(settings, true).await?;
    if store.is_initialized().await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("the store at {} is already initialised", store.location()),
        ));
    }
    store.migrate().await?;
    let mut id = [0u8; 16];
    hanzo_kms_crypto::rng::fill(&mut id)?;
    let store_id = hex::encode(id);
    let fingerprint = provider.fingerprint(store_id.as_bytes())?;
    let mut tx = store.begin_write().await?;
    tx.set_meta("format", hanzo_kms_store::STORE_FORMAT).await?;
    tx.set_meta("store_id", &store_id).await?;
    tx.set_meta("provider", provider.name()).await?;
    tx.set_meta("provider_fingerprint", &hex::encode(fingerprint))
        .await?;
    tx.set_meta(
        "separator",
        &settings.config.separator().as_char().to_string(),
    )
    .await?;
    // The attestation ttl the replay records are written under (crate::replay).
    tx.set_meta(
        crate::replay::TTL_META,
        &settings
            .config
            .kms
            .hanzo
            .poai_signing
            .attestation_ttl
            .to_string(),
    )
    .await?;
    let event = crate::audit_event(
        &crate::RequestCtx::local(),
        "store.init",
        None,
        None,
        "ok",
        None,
    );
    tx.commit(&[event]).await?;
    Ok((store, provider, store_id))
}

/// Open an initialised data directory, checking the master key and the separator before
/// changing anything, then applying migrations.
pub async fn open(settings: &Settings) -> Result<Opened> {
    settings.check_provider_supported()?;
    if settings.uses_default_sqlite() && !settings.data_dir.join("kms.db").exists() {
        return Err(Error::new(
            ErrorKind::NotInitialized,
            format!(
                "{} is not a Hanzo KMS data directory (no kms.db); run `hanzo-kms init` first",
                settings.data_dir.display()
            ),
        ));
    }
    let store = connect_store(settings, false).await?;
    let not_ours = || {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "{} is not a Hanzo KMS store, or it is damaged",
                store.location()
            ),
        )
    };
    if !store.is_initialized().await? {
        if settings.uses_default_sqlite() {
            return Err(not_ours());
        }
        // An empty PostgreSQL database: the first node initialises it.
        return Err(Error::new(
            ErrorKind::NotInitialized,
            format!(
                "the database at {} is empty; run `hanzo-kms init` (or start `hanzo-kms serve`) on one node \
                 first, then give the other nodes the same master key",
                store.location()
            ),
        ));
    }
    if store.meta("format").await?.as_deref() != Some(hanzo_kms_store::STORE_FORMAT) {
        return Err(not_ours());
    }
    let store_id = store.meta("store_id").await?.ok_or_else(not_ours)?;
    let recorded = store
        .meta("provider_fingerprint")
        .await?
        .ok_or_else(not_ours)?;
    let sep = store.meta("separator").await?.ok_or_else(not_ours)?;
    let configured = settings.config.separator().as_char().to_string();
    if sep != configured {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "kms.hanzo.key_isolation.namespace_separator is '{configured}', but this store was created with '{sep}'; \
                 key names would change meaning, so the separator cannot change after init"
            ),
        ));
    }
    let configured_provider = settings.config.kms.lux.provider.as_str();
    let recorded_provider = store.meta("provider").await?.ok_or_else(not_ours)?;
    if recorded_provider != configured_provider {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "kms.lux.provider is '{configured_provider}', but the store at {} was created with \
                 '{recorded_provider}'; its keys live there, so the provider cannot change in place",
                store.location()
            ),
        ));
    }
    let kind = settings.config.kms.lux.provider;
    let (provider, source): (Arc<dyn Provider>, MasterKeySource) =
        match settings.pkcs11_provider(false)? {
            Some(hsm) => {
                let source = MasterKeySource::token(&hsm);
                (hsm, source)
            }
            None => match settings.remote_provider(kind, false)? {
                Some(remote) => remote,
                None => {
                    let (master, source) = settings.master_key()?;
                    (Arc::new(SoftwareProvider::new(&master)?), source)
                }
            },
        };
    let (provider, failover) = with_failover(settings, provider)?;
    let actual = provider.fingerprint(store_id.as_bytes())?;
    let matches = hex::decode(&recorded)
        .ok()
        .is_some_and(|r| subtle_eq(&r, &actual));
    if !matches {
        return Err(Error::new(
            ErrorKind::MasterKeyMismatch,
            format!(
                "the master key from {source} does not match the store at {}; nothing was changed",
                store.location()
            ),
        ));
    }
    store.migrate().await?;
    Ok(Opened {
        store,
        provider,
        store_id,
        failover,
    })
}

/// An opened data directory.
pub struct Opened {
    pub store: Store,
    /// The provider every operation uses (the failover provider when failover is on).
    pub provider: Arc<dyn Provider>,
    pub store_id: String,
    pub failover: Option<Arc<crate::failover::Failover>>,
}

/// The provider to use, and the failover provider when that is what it is.
type WithFailover = (Arc<dyn Provider>, Option<Arc<crate::failover::Failover>>);

/// With `kms.lux.failover.enabled`, put the primary and the backup device behind a failover
/// provider. Both must open at start.
fn with_failover(settings: &Settings, primary: Arc<dyn Provider>) -> Result<WithFailover> {
    let lux = &settings.config.kms.lux;
    let f = &lux.failover;
    if !f.enabled {
        return Ok((primary, None));
    }
    let kind = f.backup_provider.unwrap_or(lux.provider);
    let section = f.backup.as_ref().or(lux.pkcs11_section(kind)).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "kms.lux.failover is enabled but names no backup device: add kms.lux.failover.backup or a kms.lux.{kind} section"
            ),
        )
    })?;
    let backup = Pkcs11Provider::open(&Pkcs11Settings::from_config(kind, Some(section))?, false)
        .map_err(|e| {
            Error::new(
                e.kind(),
                format!("opening the failover backup device: {}", e.message()),
            )
        })?;
    let fo = Arc::new(crate::failover::Failover::new(primary, Arc::new(backup), f));
    Ok((fo.clone(), Some(fo)))
}

/// Open the provider `kind` from its section of the config, as the target of a migration:
/// a PKCS#11 token (its root keys made if missing), or the software provider with the master
/// key from `HANZO_KMS_MASTER_KEY` or the master key file, which is created (mode 0600) if
/// missing. Returns the provider and where its root of trust is.
pub fn open_provider(
    settings: &Settings,
    kind: ProviderKind,
) -> Result<(Arc<dyn Provider>, MasterKeySource)> {
    if kind.is_pkcs11() {
        let section = settings
            .config
            .kms
            .lux
            .pkcs11_section(kind)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("there is no kms.lux.{kind} section in the config to migrate to"),
                )
            })?;
        let hsm = Pkcs11Provider::open(&Pkcs11Settings::from_config(kind, Some(section))?, true)?;
        let source = MasterKeySource::token(&hsm);
        return Ok((Arc::new(hsm), source));
    }
    if let Some(remote) = settings.remote_provider(kind, true)? {
        return Ok(remote);
    }
    if kind != ProviderKind::Software {
        return Err(unsupported_kind(kind));
    }
    let path = settings.master_key_path();
    if settings.master_key_env.is_none() && !path.exists() {
        write_new_master_key(&path)?;
    }
    let (master, source) = settings.master_key()?;
    Ok((Arc::new(SoftwareProvider::new(&master)?), source))
}

/// Refuse a provider kind this build cannot open, naming those it can.
fn check_kind_supported(kind: ProviderKind) -> Result<()> {
    // Every provider kind is built in now (google-cloud-kms, aws-kms and openbao included);
    // the check stays as the one place a build without one would refuse it.
    let _ = kind;
    Ok(())
}

fn unsupported_kind(kind: ProviderKind) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "kms.lux.provider is '{kind}', which this build of hanzo-kms cannot use; available \
             providers: software, google-cloud-kms, openbao (vault), aws-kms, yubihsm2-native and the PKCS#11 ones \
             (softhsm2, thales-luna, aws-cloudhsm, fortanix, yubihsm2, zymbit, nitrokey)"
        ),
    )
}

/// Connect to the configured store. An unreachable PostgreSQL server is retried with back-off
/// (250 ms doubling to 5 s) for `storage.connect_timeout_secs`, each attempt logged, so nodes
/// may start before their database.
async fn connect_store(settings: &Settings, create: bool) -> Result<Store> {
    let url = settings.storage_url();
    let sep = settings.config.separator();
    let storage = &settings.config.storage;
    let started = std::time::Instant::now();
    let budget = std::time::Duration::from_secs(storage.connect_timeout_secs);
    let mut next = std::time::Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        match Store::connect_with(&url, sep, create, storage.max_connections).await {
            Err(e)
                if e.kind() == ErrorKind::Unavailable
                    && !settings.uses_default_sqlite()
                    && started.elapsed() < budget =>
            {
                let delay = next.min(budget.saturating_sub(started.elapsed()));
                tracing::warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "storage unreachable, retrying: {e}"
                );
                tokio::time::sleep(delay).await;
                next = (next * 2).min(std::time::Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) if e.kind() == ErrorKind::Unavailable && attempt > 1 => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{e} (gave up after {attempt} attempts in {} s; storage.connect_timeout_secs is {})",
                        started.elapsed().as_secs(),
                        storage.connect_timeout_secs
                    ),
                ));
            }
            other => return other,
        }
    }
}

/// Equality of two byte strings in time that depends only on their lengths (fingerprints, MACs).
pub(crate) fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("creating data directory {}", dir.display()),
        )
        .with_source(e)
    })
}

fn private_open_options() -> fs::OpenOptions {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

fn create_private_file(path: &Path) -> Result<()> {
    private_open_options().open(path).map(drop).map_err(|e| {
        Error::new(ErrorKind::Io, format!("creating {}", path.display())).with_source(e)
    })
}

/// Write a file readable only by its owner: write a temporary file, fsync, rename.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("{what} {}", path.display())).with_source(e)
    };
    let tmp = path.with_extension("tmp");
    let mut f = private_open_options()
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|_| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io("writing", e));
    }
    Ok(())
}

/// Refuse a master key file that others can read.
fn check_private_mode(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("reading {}", path.display())).with_source(e)
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the master key file {} is accessible by group or others (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A remote service's provider with its section's tuning; `root_prefix` goes before the root
/// keys' names (empty where the client prefixes every name itself).
fn open_remote<S: hanzo_kms_remote::RemoteKms + 'static>(
    client: S,
    tuning: &hanzo_kms_core::config::RemoteTuning,
    root_prefix: String,
    create_roots: bool,
) -> Result<Arc<dyn Provider>> {
    let settings = hanzo_kms_remote::RemoteSettings {
        root_prefix,
        signing_keys: tuning.signing_keys,
        wrapped_key_cache: tuning.wrapped_key_cache,
    };
    let p = hanzo_kms_remote::RemoteProvider::open(client, &settings, create_roots)?;
    Ok(Arc::new(p))
}
