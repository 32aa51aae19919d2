//! `kms.lux.yubihsm2-native`, read and checked: where the connector is, how to log in, and how
//! keys are placed. The password is interpolated from the environment once, here, and kept in
//! zeroizing memory; it never appears in `Debug`, errors or logs.

use std::fmt;
use std::time::Duration;

use hanzo_kms_core::config::{SigningKeys, YubiHsmNativeConfig, interpolate};
use hanzo_kms_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// The config section's path, for messages.
pub(crate) const SECTION: &str = "kms.lux.yubihsm2-native";

/// yubihsm-connector's default address.
pub const DEFAULT_CONNECTOR_URL: &str = "http://127.0.0.1:12345";
/// How long an unwrapped hsm-wrapped key stays cached after its last use, by default.
pub const DEFAULT_WRAPPED_KEY_CACHE: Duration = Duration::from_secs(60);
/// The longest wait for one answer from the connector, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked `yubihsm2-native` section.
pub struct YubiHsmSettings {
    /// `http://HOST:PORT`, as written (for messages).
    pub connector_url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub auth_key_id: u16,
    password: Zeroizing<String>,
    /// The domain (1-16) of every object made.
    pub domain: u8,
    pub signing_keys: SigningKeys,
    pub wrapped_key_cache: Duration,
    pub timeout: Duration,
}

impl fmt::Debug for YubiHsmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YubiHsmSettings")
            .field("connector_url", &self.connector_url)
            .field("auth_key_id", &self.auth_key_id)
            .field("domain", &self.domain)
            .field("signing_keys", &self.signing_keys)
            .finish_non_exhaustive()
    }
}

impl YubiHsmSettings {
    /// Read the section (`None`: absent, which is refused because the password is required).
    /// Errors are `Config`, name "YubiHSM 2" and the key, and never contain the password.
    pub fn from_config(c: Option<&YubiHsmNativeConfig>) -> Result<Self> {
        let empty = YubiHsmNativeConfig::default();
        let c = c.unwrap_or(&empty);
        let bad = |msg: String| Error::new(ErrorKind::Config, format!("YubiHSM 2: {msg}"));
        let connector_url = c
            .connector_url
            .clone()
            .unwrap_or_else(|| DEFAULT_CONNECTOR_URL.to_owned());
        let (host, port) = parse_url(&connector_url).map_err(|why| {
            bad(format!(
                "{SECTION}.connector_url '{connector_url}' {why} (write http://HOST:PORT, e.g. {DEFAULT_CONNECTOR_URL})"
            ))
        })?;
        let password = match &c.password {
            Some(p) => {
                let (v, _) = interpolate(p.expose(), &format!("{SECTION}.password"))
                    .map_err(|e| bad(e.message().to_owned()))?;
                Zeroizing::new(v)
            }
            None => {
                return Err(bad(format!(
                    "{SECTION}.password is required (the password of authentication key {}; \
                     write password: ${{YUBIHSM_PASSWORD}} to read it from the environment)",
                    c.auth_key_id.unwrap_or(1)
                )));
            }
        };
        if password.is_empty() {
            return Err(bad(format!("{SECTION}.password is empty")));
        }
        let auth_key_id = c.auth_key_id.unwrap_or(1);
        if auth_key_id == 0 {
            return Err(bad(format!(
                "{SECTION}.auth_key_id is 0, which is not an object id (1-65534)"
            )));
        }
        let domain = c.domain.unwrap_or(1);
        if !(1..=16).contains(&domain) {
            return Err(bad(format!(
                "{SECTION}.domain is {domain}; a YubiHSM 2 has domains 1 to 16"
            )));
        }
        let timeout = c.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(bad(format!("{SECTION}.timeout must be more than 0")));
        }
        Ok(Self {
            connector_url,
            host,
            port,
            auth_key_id,
            password,
            domain,
            signing_keys: c.signing_keys,
            wrapped_key_cache: c
                .wrapped_key_cache
                .map_or(DEFAULT_WRAPPED_KEY_CACHE, |d| d.0),
            timeout,
        })
    }

    /// The password, for deriving the authentication key (PBKDF2, in the `yubihsm` crate).
    pub(crate) fn password(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// `http://HOST:PORT` (the port defaults to 12345, the connector's). yubihsm-connector speaks
/// plain HTTP; TLS is not offered by the `yubihsm` crate's connector.
fn parse_url(url: &str) -> std::result::Result<(String, u16), &'static str> {
    let rest = url.strip_prefix("http://").ok_or("is not an http:// URL")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err("has a path, query or user part");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| "has a port that is not a number")?;
            (h, port)
        }
        _ => (rest, 12345),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err("has no host or port");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::config::ConfigSecret;

    use super::*;

    fn section(url: Option<&str>, password: Option<&str>) -> YubiHsmNativeConfig {
        YubiHsmNativeConfig {
            connector_url: url.map(str::to_owned),
            password: password.map(ConfigSecret::new),
            ..Default::default()
        }
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_url("http://127.0.0.1:12345").unwrap(),
            ("127.0.0.1".into(), 12345)
        );
        assert_eq!(
            parse_url("http://hsm.internal/").unwrap(),
            ("hsm.internal".into(), 12345)
        );
        assert_eq!(parse_url("http://[::1]:7").unwrap(), ("::1".into(), 7));
        for bad in [
            "https://h:1",
            "h:1",
            "http://h:x",
            "http://h:1/api",
            "http://u@h:1",
            "http://:1",
            "http://h:0",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let e = YubiHsmSettings::from_config(Some(&section(Some("https://h:1"), Some("pw"))))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let m = e.to_string();
        assert!(
            m.contains("YubiHSM 2") && m.contains("connector_url") && m.contains("https://h:1"),
            "{m}"
        );
    }

    #[test]
    fn the_password_is_required_interpolated_and_never_shown() {
        let e = YubiHsmSettings::from_config(None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string()
                .contains("kms.lux.yubihsm2-native.password is required"),
            "{e}"
        );

        let e = YubiHsmSettings::from_config(Some(&section(
            None,
            Some("${HANZO_KMS_TEST_SURELY_UNSET_YUBI}"),
        )))
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("YubiHSM 2") && m.contains("HANZO_KMS_TEST_SURELY_UNSET_YUBI"),
            "{m}"
        );

        // PATH is always set: interpolation reads it.
        let path = std::env::var("PATH").unwrap();
        let s = YubiHsmSettings::from_config(Some(&section(None, Some("x${PATH}y")))).unwrap();
        assert_eq!(s.password(), format!("x{path}y").as_bytes());
        assert_eq!(s.connector_url, DEFAULT_CONNECTOR_URL);
        assert_eq!((s.auth_key_id, s.domain), (1, 1));

        let s = YubiHsmSettings::from_config(Some(&section(None, Some("s3cret-pw")))).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret-pw"), "{dbg}");
    }

    #[test]
    fn ids_domains_and_timeouts_are_checked() {
        let mut c = section(None, Some("pw"));
        c.auth_key_id = Some(0);
        assert!(
            YubiHsmSettings::from_config(Some(&c))
                .unwrap_err()
                .to_string()
                .contains("auth_key_id")
        );
        let mut c = section(None, Some("pw"));
        c.domain = Some(17);
        assert!(
            YubiHsmSettings::from_config(Some(&c))
                .unwrap_err()
                .to_string()
                .contains("domain is 17")
        );
        let mut c = section(None, Some(""));
        c.domain = Some(2);
        assert!(
            YubiHsmSettings::from_config(Some(&c))
                .unwrap_err()
                .to_string()
                .contains("password is empty")
        );
    }
}
