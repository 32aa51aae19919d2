//! The OpenBao / HashiCorp Vault Transit client (`provider: openbao`, or `vault`).
//!
//! | our call | Transit |
//! |---|---|
//! | AES key | `POST {mount}/keys/{name}` `type=aes256-gcm96` |
//! | encrypt / decrypt | `POST {mount}/encrypt/{name}`, `decrypt/{name}` with `associated_data` |
//! | P-256 sign | `POST {mount}/sign/{name}/sha2-256` `prehashed=true`, `marshaling_algorithm=asn1` |
//! | Ed25519 sign | `POST {mount}/sign/{name}` over the message |
//! | HMAC | `POST {mount}/hmac/{name}/sha2-256` (key `type=hmac`) |
//! | public key | `GET {mount}/keys/{name}`: PEM (P-256) or base64 (Ed25519) of version 1 |
//! | destroy | `POST {mount}/keys/{name}/config deletion_allowed=true`, then `DELETE` |
//!
//! Transit has no secp256k1 and no ML-DSA: those keys are kms-wrapped. Key names are the
//! `key_prefix` and the provider label with `/` turned into `.`, and 8 random hex digits so
//! that stores sharing a mount never collide. Transit names its errors only in text, so
//! `decrypt` tells a missing key ("encryption key not found") and a key of another type
//! ("not supported for key type") from a ciphertext that does not open (every other 400).

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hanzo_kms_core::config::{ConfigSecret, OpenBaoConfig, RemoteTuning};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result, SecretBytes};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::http::{Http, Reply, Verdict, error_text};
use crate::service::{KeyUse, RemoteKms};

/// The service's name in every error.
const SERVICE: &str = "OpenBao";
/// The provider's config name (`kms.lux.provider: openbao`, or `vault`).
pub const PROVIDER: &str = "openbao";
/// The default prefix of Transit key names.
pub const DEFAULT_KEY_PREFIX: &str = "hanzo-kms.";

/// Where the token came from, for error messages (never the token).
#[derive(Clone, Debug)]
enum TokenSource {
    Config,
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => f.write_str("kms.lux.openbao.token"),
            Self::Env(v) => write!(f, "${v}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A Transit client.
pub struct OpenBao {
    http: Http,
    address: String,
    mount: String,
    namespace: Option<String>,
    token: ConfigSecret,
    token_source: TokenSource,
    key_prefix: String,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("token_source", &self.token_source)
            .finish_non_exhaustive()
    }
}

impl OpenBao {
    /// A client from the config section, with the token read from where it says
    /// (`env` looks up environment variables: `BAO_ADDR`, `BAO_TOKEN`, ...).
    pub fn from_config(c: &OpenBaoConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let cfg = |m: String| {
            Error::new(
                ErrorKind::Config,
                format!("{SERVICE}: kms.lux.openbao: {m}"),
            )
        };
        let address = c
            .address
            .clone()
            .or_else(|| env("BAO_ADDR"))
            .or_else(|| env("VAULT_ADDR"))
            .ok_or_else(|| cfg("no address (set address, or $BAO_ADDR)".into()))?;
        let address = address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(cfg(format!(
                "address '{address}' is not an http:// or https:// URL"
            )));
        }
        let set = [
            c.token.is_some(),
            c.token_file.is_some(),
            c.token_env.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(cfg(
                "give only one of token, token_file and token_env".into()
            ));
        }
        let (token, token_source) = if let Some(t) = &c.token {
            (t.clone(), TokenSource::Config)
        } else if let Some(p) = &c.token_file {
            let text = Zeroizing::new(std::fs::read_to_string(p).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{SERVICE}: kms.lux.openbao.token_file: cannot read {}",
                        p.display()
                    ),
                )
                .with_source(e)
            })?);
            (
                ConfigSecret::new(text.trim().to_owned()),
                TokenSource::File(p.clone()),
            )
        } else {
            let names: Vec<String> = match &c.token_env {
                Some(v) => vec![v.clone()],
                None => vec!["BAO_TOKEN".into(), "VAULT_TOKEN".into()],
            };
            let found = names.iter().find_map(|n| env(n).map(|v| (n.clone(), v)));
            let (name, value) = found.ok_or_else(|| {
                cfg(format!(
                    "no token: set token_file or token_env, or ${}",
                    names.join(" or $")
                ))
            })?;
            (ConfigSecret::new(value), TokenSource::Env(name))
        };
        if token.expose().is_empty() {
            return Err(cfg(format!("the token from {token_source} is empty")));
        }
        let tuning = c.tuning();
        Ok(Self {
            http: Http::new(SERVICE, &tuning),
            address,
            mount: c
                .mount
                .clone()
                .unwrap_or_else(|| "transit".into())
                .trim_matches('/')
                .to_owned(),
            namespace: c.namespace.clone(),
            token,
            token_source,
            key_prefix: c
                .key_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into()),
        })
    }

    /// The address, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The resolved tuning of a config section.
    pub fn tuning(c: &OpenBaoConfig) -> RemoteTuning {
        c.tuning()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.address)
    }

    /// One call; `what` names it for errors.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, what: &str) -> Result<Reply> {
        let url = self.url(path);
        let bytes = Zeroizing::new(match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| Error::internal(e.to_string()))?,
            None => Vec::new(),
        });
        let describe = || format!("{what} at {}", self.address);
        let build = || -> Result<ureq::http::Request<Vec<u8>>> {
            let mut b = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("X-Vault-Token", self.token.expose())
                .header("Content-Type", "application/json");
            if let Some(ns) = &self.namespace {
                b = b.header("X-Vault-Namespace", ns);
            }
            b.body(bytes.to_vec()).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("{SERVICE}: bad request to {url}: {e}"),
                )
            })
        };
        // 429 (rate limit quota) and 5xx (sealed, standby, overloaded) are tried again.
        let judge = |r: &Reply| match r.status {
            429 => Verdict::Throttled,
            500 | 502 | 503 | 504 => Verdict::Retry,
            _ => Verdict::Done,
        };
        let reply = self.http.send(&describe, &build, &judge)?;
        if reply.status == 403 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{SERVICE}: {what} at {}: permission denied: the token from {} is wrong, expired \
                     or lacks a policy for {}",
                    self.address, self.token_source, path
                ),
            ));
        }
        Ok(reply)
    }

    fn fail(&self, what: &str, reply: &Reply) -> Error {
        Error::new(
            if reply.status == 400 || reply.status == 404 {
                ErrorKind::InvalidArgument
            } else {
                ErrorKind::Unavailable
            },
            format!(
                "{SERVICE}: {what} at {}: HTTP {}: {}",
                self.address,
                reply.status,
                error_text(reply)
            ),
        )
    }

    fn ok_json(&self, reply: Reply, what: &str) -> Result<Value> {
        if !(200..300).contains(&reply.status) {
            return Err(self.fail(what, &reply));
        }
        reply.json().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: {what}: the answer is not JSON"),
            )
        })
    }

    /// A Transit key name for `label`: `/` and other characters Transit refuses become `.`.
    fn key_name(&self, label: &str) -> String {
        format!("{}{label}", self.key_prefix)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '.'
                }
            })
            .collect()
    }

    fn make(&self, usage: KeyUse, name: &str) -> Result<()> {
        let body = match usage {
            KeyUse::Aes => json!({"type": "aes256-gcm96"}),
            KeyUse::Hmac => json!({"type": "hmac", "key_size": 32}),
            KeyUse::Sign(Algorithm::P256) => json!({"type": "ecdsa-p256"}),
            KeyUse::Sign(Algorithm::Ed25519) => json!({"type": "ed25519"}),
            KeyUse::Sign(other) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{SERVICE}: Transit has no {other} keys"),
                ));
            }
        };
        let what = format!("creating key {name}");
        let r = self.call(
            "POST",
            &format!("{}/keys/{name}", self.mount),
            Some(&body),
            &what,
        )?;
        if r.status == 404 || (r.status == 400 && error_text(&r).contains("no handler")) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{SERVICE}: no Transit engine is mounted at '{}' on {} (enable it: bao secrets enable -path={} transit)",
                    self.mount, self.address, self.mount
                ),
            ));
        }
        self.ok_json_or_empty(r, &what)
    }

    fn ok_json_or_empty(&self, r: Reply, what: &str) -> Result<()> {
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(self.fail(what, &r))
        }
    }

    /// `vault:vN:<base64>` → the bytes.
    fn vault_blob(&self, s: Option<&str>, what: &str) -> Result<Vec<u8>> {
        s.and_then(|s| s.strip_prefix("vault:v"))
            .and_then(|s| s.split_once(':'))
            .and_then(|(_, b)| B64.decode(b).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: {what}: unexpected answer"),
                )
            })
    }

    fn b64(v: &[u8]) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(v))
    }

    /// Transit creates a missing key on `encrypt` ("upsert"), so a key deleted outside
    /// hanzo-kms would silently come back empty. At `init` the mount is told not to
    /// (`config/keys disable_upsert=true`) where the token may; otherwise a warning says so.
    fn disable_upsert(&self) {
        let what = "setting disable_upsert on the mount";
        let done = self
            .call(
                "POST",
                &format!("{}/config/keys", self.mount),
                Some(&json!({"disable_upsert": true})),
                what,
            )
            .map(|r| (200..300).contains(&r.status));
        if !matches!(done, Ok(true)) {
            tracing::warn!(
                mount = %self.mount,
                "{SERVICE}: could not set disable_upsert on the Transit mount; a key deleted outside \
                 hanzo-kms would be recreated empty by the next encrypt"
            );
        }
    }

    /// Whether the key exists (for roots).
    fn exists(&self, name: &str) -> Result<bool> {
        let what = format!("reading key {name}");
        let r = self.call("GET", &format!("{}/keys/{name}", self.mount), None, &what)?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.fail(&what, &r)),
        }
    }

    fn missing_key(&self, id: &str, what: &str) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "{SERVICE}: {what}: key {id} does not exist in mount '{}' at {} (deleted outside hanzo-kms?)",
                self.mount, self.address
            ),
        )
    }

    fn wrong_type(&self, id: &str, what: &str, reply: &Reply) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "{SERVICE}: {what}: key {id} cannot do this: {}",
                error_text(reply)
            ),
        )
    }

    /// Classify a 400 that names the key (Transit errors are text only).
    fn key_error(&self, id: &str, what: &str, r: &Reply) -> Option<Error> {
        let t = error_text(r).to_ascii_lowercase();
        if gone(&t) {
            Some(self.missing_key(id, what))
        } else if t.contains("key type") || t.contains("cipher suite") {
            Some(self.wrong_type(id, what, r))
        } else {
            None
        }
    }
}

/// Whether Transit's (lower-cased) error text says the key does not exist.
fn gone(t: &str) -> bool {
    t.contains("key not found")
        || t.contains("no existing key")
        || t.contains("could not delete key; not found")
}

/// Random hex digits for key names.
fn suffix() -> Result<String> {
    let mut b = [0u8; 4];
    hanzo_kms_crypto::rng::fill(&mut b)?;
    Ok(hex::encode(b))
}

impl RemoteKms for OpenBao {
    fn service(&self) -> &'static str {
        PROVIDER
    }

    fn display_name(&self) -> &'static str {
        SERVICE
    }

    fn signs(&self, alg: Algorithm) -> bool {
        matches!(alg, Algorithm::P256 | Algorithm::Ed25519)
    }

    fn create_key(&self, usage: KeyUse, label: &str) -> Result<String> {
        let name = format!("{}.{}", self.key_name(label), suffix()?);
        self.make(usage, &name)?;
        Ok(name)
    }

    fn find_root(&self, label: &str) -> Result<Option<String>> {
        let name = self.key_name(label);
        Ok(self.exists(&name)?.then_some(name))
    }

    fn create_root(&self, usage: KeyUse, label: &str) -> Result<String> {
        let name = self.key_name(label);
        self.disable_upsert();
        // Creating an existing Transit key changes nothing, so racing processes agree.
        self.make(usage, &name)?;
        Ok(name)
    }

    fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let what = format!("encrypting with key {id}");
        let pt = Self::b64(plaintext);
        let body = json!({"plaintext": pt.as_str(), "associated_data": B64.encode(aad)});
        let r = self.call(
            "POST",
            &format!("{}/encrypt/{id}", self.mount),
            Some(&body),
            &what,
        )?;
        drop(body);
        if r.status == 400
            && let Some(e) = self.key_error(id, &what, &r)
        {
            return Err(e);
        }
        let v = self.ok_json(r, &what)?;
        v["data"]["ciphertext"]
            .as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: {what}: no ciphertext in the answer"),
                )
            })
    }

    fn decrypt(&self, id: &str, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let what = format!("decrypting with key {id}");
        let Ok(ct) = std::str::from_utf8(ciphertext) else {
            return Err(Error::authentication_failed());
        };
        if !ct.starts_with("vault:v") {
            return Err(Error::authentication_failed());
        }
        let body = json!({"ciphertext": ct, "associated_data": B64.encode(aad)});
        let r = self.call(
            "POST",
            &format!("{}/decrypt/{id}", self.mount),
            Some(&body),
            &what,
        )?;
        if r.status == 400 {
            return Err(self
                .key_error(id, &what, &r)
                .unwrap_or_else(Error::authentication_failed));
        }
        let mut v = self.ok_json(r, &what)?;
        let plain = v["data"]["plaintext"]
            .as_str()
            .and_then(|p| B64.decode(p).ok())
            .map(SecretBytes::new);
        hanzo_kms_core::secret::wipe_json(&mut v);
        plain.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: {what}: no plaintext in the answer"),
            )
        })
    }

    fn sign(&self, id: &str, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>> {
        let what = format!("signing with key {id}");
        let (path, body) = match alg {
            Algorithm::P256 => (
                format!("{}/sign/{id}/sha2-256", self.mount),
                json!({"input": B64.encode(input), "prehashed": true, "marshaling_algorithm": "asn1"}),
            ),
            Algorithm::Ed25519 => (
                format!("{}/sign/{id}", self.mount),
                json!({"input": B64.encode(input)}),
            ),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{SERVICE}: Transit cannot sign {other}"),
                ));
            }
        };
        let r = self.call("POST", &path, Some(&body), &what)?;
        if r.status == 400
            && let Some(e) = self.key_error(id, &what, &r)
        {
            return Err(e);
        }
        let v = self.ok_json(r, &what)?;
        self.vault_blob(v["data"]["signature"].as_str(), &what)
    }

    fn public_key(&self, id: &str, alg: Algorithm) -> Result<Vec<u8>> {
        let what = format!("reading the public key of {id}");
        let r = self.call("GET", &format!("{}/keys/{id}", self.mount), None, &what)?;
        if r.status == 404 {
            return Err(self.missing_key(id, &what));
        }
        let v = self.ok_json(r, &what)?;
        let text = v["data"]["keys"]["1"]["public_key"].as_str().unwrap_or("");
        let bad = || {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: {what}: unexpected public key"),
            )
        };
        match alg {
            Algorithm::P256 => {
                let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = B64.decode(body).map_err(|_| bad())?;
                hanzo_kms_crypto::ecdsa::spki_ec_point(&der, hanzo_kms_crypto::ecdsa::OID_P256)
                    .map(|p| p.to_vec())
                    .ok_or_else(bad)
            }
            Algorithm::Ed25519 => {
                let raw = B64.decode(text).map_err(|_| bad())?;
                (raw.len() == 32).then_some(raw).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    fn mac(&self, id: &str, data: &[u8]) -> Result<[u8; 32]> {
        let what = format!("computing an HMAC with key {id}");
        let body = json!({"input": B64.encode(data)});
        let r = self.call(
            "POST",
            &format!("{}/hmac/{id}/sha2-256", self.mount),
            Some(&body),
            &what,
        )?;
        if r.status == 400
            && let Some(e) = self.key_error(id, &what, &r)
        {
            return Err(e);
        }
        let v = self.ok_json(r, &what)?;
        let mac = self.vault_blob(v["data"]["hmac"].as_str(), &what)?;
        mac.try_into().map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: {what}: not 32 bytes"),
            )
        })
    }

    fn destroy(&self, id: &str) -> Result<()> {
        let what = format!("deleting key {id}");
        let r = self.call(
            "POST",
            &format!("{}/keys/{id}/config", self.mount),
            Some(&json!({"deletion_allowed": true})),
            &what,
        )?;
        if r.status == 404 || (r.status == 400 && gone(&error_text(&r).to_ascii_lowercase())) {
            return Ok(()); // already gone
        }
        self.ok_json_or_empty(r, &what)?;
        let r = self.call("DELETE", &format!("{}/keys/{id}", self.mount), None, &what)?;
        if r.status == 404 || (r.status == 400 && gone(&error_text(&r).to_ascii_lowercase())) {
            return Ok(());
        }
        self.ok_json_or_empty(r, &what)
    }

    fn health(&self, root_id: &str) -> Result<()> {
        if self.exists(root_id)? {
            Ok(())
        } else {
            Err(self.missing_key(root_id, "health check"))
        }
    }
}
