//! Config values that parse and print themselves: durations, secrets (redacted), the storage
//! URL (its password redacted), algorithms and separators.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::algorithm::Algorithm;
use crate::error::Error;
use crate::name::Separator;

/// A duration written `30s`, `500ms`, `2m`, `1h`, or as a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let bad = |t: &str| {
            serde::de::Error::custom(format!(
                "'{t}' is not a duration (write 30s, 500ms, 2m or 1h)"
            ))
        };
        match Raw::deserialize(d)? {
            // In milliseconds, saturating, like `30s`: what renders as `<ms>ms` must read back
            // (a count of seconds past u64::MAX milliseconds rendered as a number no one parses).
            Raw::Secs(n) => Ok(Self(std::time::Duration::from_millis(
                n.saturating_mul(1000),
            ))),
            Raw::Text(t) => {
                let t = t.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num.parse().map_err(|_| bad(t))?;
                let ms = match unit.trim() {
                    "ms" => n,
                    "s" | "" => n.saturating_mul(1000),
                    "m" => n.saturating_mul(60_000),
                    "h" => n.saturating_mul(3_600_000),
                    _ => return Err(bad(t)),
                };
                Ok(Self(std::time::Duration::from_millis(ms)))
            }
        }
    }
}

/// A secret config value (a PIN, a token). `Debug` and `Serialize` print `<redacted>`.
///
/// The value is held once, in zeroizing memory: a clone (the config is cloned into the
/// provider's settings) shares that one allocation, which is wiped when the last clone drops.
#[derive(Clone)]
pub struct ConfigSecret(std::sync::Arc<Zeroizing<String>>);

impl ConfigSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(std::sync::Arc::new(Zeroizing::new(value.into())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self::new(String::deserialize(d)?))
    }
}

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for ConfigSecret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A storage URL. A password in it is redacted by `Debug` and `Serialize`; like a
/// [`ConfigSecret`], the URL is held once in zeroizing memory and shared by clones.
#[derive(Clone)]
pub struct StorageUrl(std::sync::Arc<Zeroizing<String>>);

impl<'de> Deserialize<'de> for StorageUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self::new(String::deserialize(d)?))
    }
}

impl StorageUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(std::sync::Arc::new(Zeroizing::new(url.into())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        // A password may also travel as a query parameter (`?password=…`, `sslpassword=…`).
        let base = self.redacted_authority();
        let Some((head, query)) = base.split_once('?') else {
            return base;
        };
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                    format!("{k}=<redacted>")
                }
                _ => kv.to_owned(),
            })
            .collect();
        format!("{head}?{}", params.join("&"))
    }

    fn redacted_authority(&self) -> String {
        let s: &str = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.to_string();
        };
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => format!(
                "{}{}:<redacted>{}",
                &s[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            _ => s.to_string(),
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for StorageUrl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message()))
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Separator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Separator::new(c).map_err(|e| serde::de::Error::custom(e.message())),
            _ => Err(serde::de::Error::custom(format!(
                "the namespace separator must be exactly one character, not '{}'",
                s.escape_default()
            ))),
        }
    }
}

impl Serialize for Separator {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.as_char())
    }
}

/// Replace each `${NAME}` in `value` with the environment variable NAME: the value, and the
/// last variable read (for messages). A `$` not followed by `{` is kept as it is. Used for
/// `pin` and `password` in the PKCS#11 sections and `password` in `yubihsm2-native`.
pub fn interpolate(value: &str, path: &str) -> crate::error::Result<(String, Option<String>)> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last = None;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::Config,
                format!("{path}: an unterminated ${{ (write ${{NAME}})"),
            )
        })?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::new(
                crate::error::ErrorKind::Config,
                format!("{path}: '${{{name}}}' does not name an environment variable"),
            ));
        }
        let v = std::env::var(name).map_err(|_| {
            Error::new(
                crate::error::ErrorKind::Config,
                format!("{path} reads ${{{name}}}, which is not set"),
            )
        })?;
        out.push_str(&v);
        last = Some(name.to_owned());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, last))
}
