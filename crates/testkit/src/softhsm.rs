//! Throwaway SoftHSM2 tokens, for tests and demos.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised. The workspace's
//! `.cargo/config.toml` points it at `target/softhsm2/softhsm2.conf`; [`ensure_conf`] writes that
//! file (with a token directory beside it) the first time. [`Token::create`] initialises a fresh
//! token on SoftHSM2's free slot, in process, with `C_InitToken` and `C_InitPIN`, so the token is
//! visible at once to this process and to any process started afterwards. It loads the module
//! through the PKCS#11 provider's process-wide registry (`hanzo_kms_pkcs11::module`), since
//! `C_Initialize` is per process, and takes its slot-scan lock, since SoftHSM2 must not rescan
//! its slots from two threads at once.
//!
//! Nothing is skipped silently: if SoftHSM2 is missing, these functions fail and say how to
//! install it.

use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::{Error, ErrorKind, Result};

/// Where Debian installs the module.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A token made for one test (or one `hanzo-kms-bench sign --provider softhsm2` run). Its PINs
/// guard only a throwaway token; `Debug` leaves them out all the same.
#[derive(Clone)]
pub struct Token {
    pub label: String,
    pub user_pin: String,
    pub so_pin: String,
    pub module: PathBuf,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

/// The module to use: `$HANZO_KMS_SOFTHSM2_MODULE`, or Debian's path.
pub fn module_path() -> PathBuf {
    std::env::var_os("HANZO_KMS_SOFTHSM2_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
}

/// Make sure `$SOFTHSM2_CONF` names a config file with a token directory; create both if needed.
pub fn ensure_conf() -> Result<PathBuf> {
    let Some(conf) = std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from) else {
        // SoftHSM2's own default (Debian: /etc/softhsm/softhsm2.conf) applies.
        let default = PathBuf::from("/etc/softhsm/softhsm2.conf");
        return if default.exists() {
            Ok(default)
        } else {
            Err(Error::new(
                ErrorKind::Config,
                "SOFTHSM2_CONF is not set and /etc/softhsm/softhsm2.conf does not exist; install \
                 softhsm2 (apt-get install softhsm2) or export SOFTHSM2_CONF",
            ))
        };
    };
    if conf.exists() {
        return Ok(conf);
    }
    let dir = conf.parent().unwrap_or(Path::new("."));
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| io(e, &tokens))?;
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        std::fs::canonicalize(&tokens)
            .map_err(|e| io(e, &tokens))?
            .display()
    );
    // Write-then-rename: parallel test processes may race here.
    let tmp = dir.join(format!(".softhsm2.conf.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, &conf).map_err(|e| io(e, &conf))?;
    Ok(conf)
}

impl Token {
    /// Initialise a new token labelled `label` (at most 32 bytes) with random PINs.
    pub fn create(label: &str) -> Result<Self> {
        // Threads of one process see the same free slot; take turns initialising it.
        let _turn = hanzo_kms_pkcs11::module::SLOT_SCAN
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ensure_conf()?;
        let module = module_path();
        let ctx = hanzo_kms_pkcs11::module::load(&module, ProviderKind::Softhsm2)?;
        let ck = |e: cryptoki::error::Error| {
            Error::new(ErrorKind::Unavailable, format!("SoftHSM2: {e}"))
        };
        let slot = ctx
            .get_all_slots()
            .map_err(ck)?
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|t| !t.token_initialized()))
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "SoftHSM2 offers no free slot"))?;
        let mut rnd = [0u8; 8];
        hanzo_kms_crypto::rng::fill(&mut rnd)?;
        let user_pin = format!("u-{}", hex::encode(&rnd[..4]));
        let so_pin = format!("s-{}", hex::encode(&rnd[4..]));
        let so = AuthPin::from(so_pin.clone());
        ctx.init_token(slot, &so, label).map_err(ck)?;
        let session = ctx.open_rw_session(slot).map_err(ck)?;
        session.login(UserType::So, Some(&so)).map_err(ck)?;
        session
            .init_pin(&AuthPin::from(user_pin.clone()))
            .map_err(ck)?;
        session.logout().map_err(ck)?;
        drop(session);
        Ok(Self {
            label: label.to_owned(),
            user_pin,
            so_pin,
            module,
        })
    }

    /// This token's directory inside SoftHSM2's token directory (found by its label).
    pub fn directory(&self) -> Result<PathBuf> {
        let conf = ensure_conf()?;
        let text = std::fs::read_to_string(&conf).map_err(|e| io(e, &conf))?;
        let tokendir = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("directories.tokendir"))
            .map(|v| PathBuf::from(v.trim_start_matches([' ', '=']).trim()))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("{}: no directories.tokendir", conf.display()),
                )
            })?;
        let want = padded_label(&self.label);
        for entry in std::fs::read_dir(&tokendir).map_err(|e| io(e, &tokendir))? {
            let dir = entry.map_err(|e| io(e, &tokendir))?.path();
            let object = std::fs::read(dir.join("token.object")).unwrap_or_default();
            if object.windows(want.len()).any(|w| w == want) {
                return Ok(dir);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no directory of token '{}' in {}",
                self.label,
                tokendir.display()
            ),
        ))
    }

    /// Clone this token as SoftHSM2 stores it (a copy of its directory with a new serial number
    /// and label): the same objects, root keys and PINs, as an HSM HA group's members or a cloned
    /// partition have. For failover tests; processes started afterwards see the clone.
    pub fn clone_as(&self, label: &str) -> Result<Self> {
        let from = self.directory()?;
        let parent = from.parent().unwrap_or(Path::new("."));
        let mut rnd = [0u8; 16];
        hanzo_kms_crypto::rng::fill(&mut rnd)?;
        let h = hex::encode(rnd);
        let name = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        let serial = format!("{}{}", &h[16..20], &h[20..]);
        let to = parent.join(&name);
        std::fs::create_dir(&to).map_err(|e| io(e, &to))?;
        let old_serial = from
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.replace('-', ""))
            .filter(|n| n.len() == 32)
            .map(|n| n[16..].to_owned())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: not a SoftHSM2 token directory", from.display()),
                )
            })?;
        for entry in std::fs::read_dir(&from).map_err(|e| io(e, &from))? {
            let src = entry.map_err(|e| io(e, &from))?.path();
            let dst = to.join(src.file_name().unwrap_or_default());
            let mut bytes = std::fs::read(&src).map_err(|e| io(e, &src))?;
            if src.file_name().is_some_and(|n| n == "token.object") {
                replace_all(&mut bytes, old_serial.as_bytes(), serial.as_bytes());
                replace_all(&mut bytes, &padded_label(&self.label), &padded_label(label));
            }
            std::fs::write(&dst, bytes).map_err(|e| io(e, &dst))?;
        }
        Ok(Self {
            label: label.to_owned(),
            ..self.clone()
        })
    }

    /// The YAML for `kms.lux.softhsm2` that uses this token with the PIN inline.
    pub fn config_yaml(&self, extra: &str) -> String {
        format!(
            "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      module: {}\n      token_label: {}\n      pin: \"{}\"\n{extra}",
            self.module.display(),
            self.label,
            self.user_pin
        )
    }

    /// The mechanisms `vendor` documents, as names for a config's `mechanisms.allow`; `None`
    /// for SoftHSM2 itself (everything).
    pub fn vendor_mechanisms(&self, vendor: ProviderKind) -> Option<Vec<String>> {
        hanzo_kms_pkcs11::Profile::of(vendor)
            .and_then(|p| p.documented)
            .map(|d| d.iter().map(ToString::to_string).collect())
    }

    /// A config section that uses this token as `vendor`'s device: SoftHSM2's module, limited
    /// to the mechanisms the vendor documents, so that Hanzo KMS can use only what that
    /// device would offer.
    pub fn vendor_section(&self, vendor: ProviderKind) -> hanzo_kms_core::config::Pkcs11Config {
        let mut c = self.section();
        c.mechanisms =
            self.vendor_mechanisms(vendor)
                .map(|allow| hanzo_kms_core::config::MechanismFilter {
                    allow: Some(allow),
                    deny: Vec::new(),
                });
        c
    }

    /// The same as a parsed config section.
    pub fn section(&self) -> hanzo_kms_core::config::Pkcs11Config {
        hanzo_kms_core::config::Pkcs11Config {
            module: Some(self.module.clone()),
            token_label: Some(self.label.clone()),
            pin: Some(hanzo_kms_core::config::ConfigSecret::new(
                self.user_pin.clone(),
            )),
            ..Default::default()
        }
    }
}

fn padded_label(label: &str) -> Vec<u8> {
    let mut v = label.as_bytes().to_vec();
    v.resize(32, b' ');
    v
}

fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    debug_assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

fn io(e: std::io::Error, path: &Path) -> Error {
    Error::new(ErrorKind::Io, format!("{}", path.display())).with_source(e)
}
