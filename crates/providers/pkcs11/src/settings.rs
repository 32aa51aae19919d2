//! Settings: a `kms.lux.<vendor>` config section resolved into what [`Pkcs11Provider::open`]
//! needs, with the PIN read from where the section says.
//!
//! LP-325's keys are accepted as it writes them: `pkcs11_lib` (the same as `module`), `slot`
//! beside `token_label` (the label decides), `pin: ${HSM_PIN}` (`${NAME}` in `pin` and
//! `password` is read from the environment), and for YubiHSM 2 `connector_url`, `auth_key_id`
//! and `password` (the PKCS#11 PIN is the key id as four hex digits followed by the password).
//!
//! [`Pkcs11Provider::open`]: crate::Pkcs11Provider::open

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hanzo_kms_core::config::{
    Pkcs11Config, Pkcs11Fallback, ProviderKind, SigningKeys, WrappingScheme, interpolate,
};
use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::mechanisms::MechanismSet;
use crate::profile::Profile;

/// How long an unwrapped hsm-wrapped key stays cached by default.
pub const DEFAULT_WRAPPED_KEY_CACHE: Duration = Duration::from_secs(60);

/// Default size of the session pool.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// Where the PIN came from, for messages (never the PIN itself).
#[derive(Clone, Debug)]
pub(crate) enum PinSource {
    Config,
    Env(String),
    File(PathBuf),
    Password,
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("the config's pin"),
            Self::Env(v) => write!(f, "${v}"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Password => f.write_str("auth_key_id and password"),
        }
    }
}

/// Everything [`Pkcs11Provider::open`](crate::Pkcs11Provider::open) needs, resolved from a config
/// section.
pub struct Pkcs11Settings {
    pub vendor: ProviderKind,
    pub module: PathBuf,
    pub token: TokenSelector,
    pub(crate) pin: AuthPin,
    pub(crate) pin_source: PinSource,
    pub user_type: UserType,
    pub max_sessions: usize,
    pub signing_keys: SigningKeys,
    pub fallback: Pkcs11Fallback,
    pub exportable: bool,
    /// The wrapping scheme the config asks for; `None`: the first the device can do.
    pub wrapping: Option<WrappingScheme>,
    /// The mechanisms Hanzo KMS may use.
    pub mechanisms: MechanismSet,
    /// How long unwrapped hsm-wrapped keys stay cached; zero: not at all.
    pub wrapped_key_cache: Duration,
    /// Thales Luna FIPS mode (HSM-made GCM IVs).
    pub fips_mode: bool,
}

impl fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("vendor", &self.vendor)
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &format_args!("<from {}>", self.pin_source))
            .field("max_sessions", &self.max_sessions)
            .field("wrapping", &self.wrapping)
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

/// Which token to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "token '{l}'"),
            Self::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

impl Pkcs11Settings {
    /// Resolve `kms.lux.<vendor>` (absent = all defaults). Reads the PIN from the environment
    /// variable or file the section names.
    pub fn from_config(vendor: ProviderKind, section: Option<&Pkcs11Config>) -> Result<Self> {
        let default = Pkcs11Config::default();
        let c = section.unwrap_or(&default);
        let path = format!("kms.lux.{vendor}");
        let profile = Profile::of(vendor).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{vendor} is not a PKCS#11 provider"),
            )
        })?;
        let module = c
            .module
            .clone()
            .unwrap_or_else(|| PathBuf::from(profile.default_module));
        let token = match (&c.token_label, c.slot) {
            // LP-325 writes both; the label is what survives a re-initialisation.
            (Some(l), _) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Slot(s),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: name the token with token_label (or slot)"),
                ));
            }
        };
        lp325_keys_fit(vendor, c, &path)?;
        let (pin, pin_source) = match (&c.pin, &c.pin_env, &c.pin_file) {
            _ if c.auth_key_id.is_some() || c.password.is_some() => yubihsm_pin(c, &path)?,
            (Some(p), None, None) => match interpolate(p.expose(), &format!("{path}.pin"))? {
                (v, Some(var)) if p.expose().trim() == format!("${{{var}}}") => {
                    (v, PinSource::Env(var))
                }
                (v, _) => (v, PinSource::Config),
            },
            (None, Some(var), None) => match std::env::var(var) {
                Ok(p) => (p, PinSource::Env(var.clone())),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("{path}.pin_env names ${var}, which is not set"),
                    ));
                }
            },
            (None, None, Some(file)) => {
                // The file's whole text is wiped after the PIN is taken from it.
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("{path}.pin_file: cannot read {}", file.display()),
                    )
                    .with_source(e)
                })?);
                let pin = text.trim_end_matches(['\r', '\n']).to_owned();
                (pin, PinSource::File(file.clone()))
            }
            (None, None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: no PIN; set pin_env (recommended), pin_file or pin"),
                ));
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: set only one of pin, pin_env and pin_file"),
                ));
            }
        };
        let user_type = match c.user_type.as_deref() {
            None | Some("user") => UserType::User,
            Some("so") => UserType::So,
            Some("crypto-user") => UserType::VendorExtension(0x8000_0001),
            Some(other) => {
                let n = other
                    .strip_prefix("0x")
                    .map(|h| u32::from_str_radix(h, 16))
                    .unwrap_or_else(|| other.parse());
                match n {
                    Ok(n) => UserType::VendorExtension(n),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{path}.user_type: '{other}' is not user, so, crypto-user or a number"
                            ),
                        ));
                    }
                }
            }
        };
        let max_sessions = match c.max_sessions {
            None => DEFAULT_MAX_SESSIONS,
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}.max_sessions must be at least 1"),
                ));
            }
            Some(n) => n as usize,
        };
        Ok(Self {
            vendor,
            module,
            token,
            pin: AuthPin::from(pin),
            pin_source,
            user_type,
            max_sessions,
            signing_keys: c.signing_keys,
            fallback: c.fallback,
            exportable: c.exportable,
            wrapping: c.wrapping,
            mechanisms: c
                .mechanisms
                .as_ref()
                .map(|m| MechanismSet::from_config(m, &path))
                .transpose()?
                .unwrap_or_default(),
            wrapped_key_cache: c
                .wrapped_key_cache
                .map_or(DEFAULT_WRAPPED_KEY_CACHE, |d| d.0),
            fips_mode: c.fips_mode,
        })
    }
}

/// YubiHSM 2's login as LP-325 writes it: `auth_key_id` and `password` make the PKCS#11 PIN.
fn yubihsm_pin(c: &Pkcs11Config, path: &str) -> Result<(String, PinSource)> {
    let (Some(id), Some(password)) = (c.auth_key_id, &c.password) else {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{path}: auth_key_id and password go together"),
        ));
    };
    if c.pin.is_some() || c.pin_env.is_some() || c.pin_file.is_some() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{path}: auth_key_id and password make the PIN; drop pin, pin_env and pin_file"
            ),
        ));
    }
    let (password, _) = interpolate(password.expose(), &format!("{path}.password"))?;
    let password = zeroize::Zeroizing::new(password);
    Ok((
        format!("{id:04x}{}", password.as_str()),
        PinSource::Password,
    ))
}

/// LP-325's vendor keys belong to their vendor: refuse them elsewhere rather than ignore them.
fn lp325_keys_fit(vendor: ProviderKind, c: &Pkcs11Config, path: &str) -> Result<()> {
    let wrong = |key: &str, owner: ProviderKind| {
        Err(Error::new(
            ErrorKind::Config,
            format!("{path}.{key} is a {owner} setting"),
        ))
    };
    if vendor != ProviderKind::Yubihsm2 {
        if c.connector_url.is_some() {
            return wrong("connector_url", ProviderKind::Yubihsm2);
        }
        if c.auth_key_id.is_some() {
            return wrong("auth_key_id", ProviderKind::Yubihsm2);
        }
    }
    if vendor != ProviderKind::AwsCloudhsm {
        if c.cluster_id.is_some() {
            return wrong("cluster_id", ProviderKind::AwsCloudhsm);
        }
        if c.region.is_some() {
            return wrong("region", ProviderKind::AwsCloudhsm);
        }
    }
    if c.fips_mode && vendor != ProviderKind::ThalesLuna {
        return wrong("fips_mode", ProviderKind::ThalesLuna);
    }
    if let Some(url) = &c.connector_url {
        // yubihsm_pkcs11 reads its connector from yubihsm_pkcs11.conf; say which one we expect.
        tracing::info!(connector = %url, "yubihsm2: the module's yubihsm_pkcs11.conf must name this connector");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::config::ConfigSecret;

    use super::*;

    fn section() -> Pkcs11Config {
        Pkcs11Config {
            token_label: Some("t".into()),
            ..Default::default()
        }
    }

    #[test]
    fn interpolation_reads_the_environment_and_says_what_is_missing() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            interpolate("a${PATH}b", "x.pin").unwrap(),
            (format!("a{path}b"), Some("PATH".into()))
        );
        assert_eq!(
            interpolate("pa$$word", "x.pin").unwrap(),
            ("pa$$word".into(), None)
        );
        let e = interpolate("${HANZO_KMS_TEST_SURELY_UNSET_VAR}", "x.pin").unwrap_err();
        assert!(
            e.to_string().contains("HANZO_KMS_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
        assert!(e.to_string().contains("x.pin"), "{e}");
        assert!(interpolate("${oops", "x.pin").is_err());
        assert!(interpolate("${}", "x.pin").is_err());
    }

    #[test]
    fn lp325_yubihsm_login_makes_the_pin_and_foreign_keys_are_refused() {
        let mut c = section();
        c.auth_key_id = Some(1);
        c.password = Some(ConfigSecret::new("s3cret-pw"));
        c.connector_url = Some("http://127.0.0.1:12345".into());
        let s = Pkcs11Settings::from_config(ProviderKind::Yubihsm2, Some(&c)).unwrap();
        assert!(matches!(s.pin_source, PinSource::Password));
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        let (pin, _) = yubihsm_pin(&c, "p").unwrap();
        assert_eq!(pin, "0001s3cret-pw");
        let e = Pkcs11Settings::from_config(ProviderKind::Nitrokey, Some(&c)).unwrap_err();
        assert!(
            e.to_string()
                .contains("connector_url is a yubihsm2 setting"),
            "{e}"
        );
        c.password = None;
        let e = Pkcs11Settings::from_config(ProviderKind::Yubihsm2, Some(&c)).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }

    #[test]
    fn lp325_label_and_slot_together_use_the_label() {
        let mut c = section();
        c.slot = Some(0);
        c.pin = Some(ConfigSecret::new("1234"));
        let s = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(&c)).unwrap();
        assert_eq!(s.token, TokenSelector::Label("t".into()));
    }
}
