//! Google Cloud KMS (`google-cloud-kms`): a hand-written client for the few calls of
//! `google.cloud.kms.v1.KeyManagementService` Hanzo KMS needs, over their documented REST
//! mapping (the `google.api.http` annotations of googleapis' `service.proto`):
//!
//! | our call | REST | notes |
//! |---|---|---|
//! | create_key / create_root | `POST /v1/{keyRing}/cryptoKeys?cryptoKeyId=ID` | purpose ENCRYPT_DECRYPT, ASYMMETRIC_SIGN or MAC |
//! | find_root, health | `GET /v1/{cryptoKey}` | |
//! | encrypt | `POST /v1/{cryptoKey}:encrypt` | `additionalAuthenticatedData` = our AAD |
//! | decrypt | `POST /v1/{cryptoKey}:decrypt` | |
//! | sign | `POST /v1/{cryptoKeyVersion}:asymmetricSign` | `digest.sha256`; DER signature |
//! | public_key | `GET /v1/{cryptoKeyVersion}/publicKey` | PEM SubjectPublicKeyInfo |
//! | mac | `POST /v1/{cryptoKeyVersion}:macSign` | HMAC_SHA256 |
//! | destroy | `POST /v1/{cryptoKeyVersion}:destroy` | Cloud KMS only schedules it |
//!
//! Every request that carries data carries its CRC32C, and every CRC32C and `verified*` flag
//! in an answer is checked; a mismatch is retried a few times (as Google advises), then it is
//! an error. Authentication is the service-account JWT bearer flow ([`auth`]).
//!
//! Remote ids are resource names: the CryptoKey for AES keys (Encrypt uses its primary
//! version, Decrypt finds the version from the ciphertext), the CryptoKeyVersion
//! (`.../cryptoKeyVersions/1`) for signing and MAC keys.

pub mod auth;
pub mod crc32c;
mod service;
mod wire;

use std::time::{Duration, Instant};

use hanzo_kms_core::config::{GcpProtectionLevel, GoogleCloudKmsConfig};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result};
use serde::Deserialize;
use zeroize::Zeroizing;

use self::auth::{ServiceAccount, TokenCache, TokenResponse};
use self::wire::{ApiError, CryptoKey, CryptoKeyVersion, Method, OAuthError, judge};
use crate::http::{Http, Reply, Verdict};
use crate::service::{KeyUse, RemoteKms};

/// The service's name in every error.
pub const SERVICE: &str = "Google Cloud KMS";
/// The provider's config name (HIP-005: `kms.lux.provider: google-cloud-kms`).
pub const PROVIDER: &str = "google-cloud-kms";
/// The public endpoint of the API.
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
/// Default prefix of the root keys' ids (`hanzo-kms-root-kek`, `hanzo-kms-root-mac`).
pub const DEFAULT_KEY_PREFIX: &str = "hanzo-kms-";
/// Encrypt's plaintext limit (and AAD's), any protection level.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// HSM keys: plaintext plus AAD at most this.
pub const MAX_HSM_PLAINTEXT_AND_AAD: usize = 8 * 1024;
/// How long a new asymmetric key version may stay PENDING_GENERATION.
const GENERATION_WAIT: Duration = Duration::from_secs(60);

/// The Google Cloud KMS client: one key ring, one service account.
pub struct GcpKms {
    endpoint: String,
    key_ring: String,
    protection: GcpProtectionLevel,
    account: ServiceAccount,
    tokens: TokenCache,
    http: Http,
    /// Tries of a call whose answer fails an integrity check (`max_retries` + 1).
    attempts: u32,
}

impl std::fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpKms")
            .field("endpoint", &self.endpoint)
            .field("key_ring", &self.key_ring)
            .field("protection", &self.protection)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl GcpKms {
    /// A client for `kms.lux.google-cloud-kms`. Reads the credentials file; makes no call.
    pub fn from_config(c: &GoogleCloudKmsConfig) -> Result<Self> {
        for (field, value) in [
            ("project_id", &c.project_id),
            ("location", &c.location),
            ("key_ring", &c.key_ring),
        ] {
            if value.is_empty()
                || !value
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{SERVICE}: kms.lux.google-cloud-kms.{field} {value:?} is not a valid resource id"
                    ),
                ));
            }
        }
        if c.credentials.as_os_str().is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{SERVICE}: kms.lux.google-cloud-kms.credentials is missing (a service-account JSON key file)"
                ),
            ));
        }
        let endpoint = c
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/');
        check_url(endpoint, "kms.lux.google-cloud-kms.endpoint")?;
        let account = ServiceAccount::from_file(&c.credentials)?;
        let tuning = c.tuning();
        Ok(Self {
            endpoint: endpoint.to_string(),
            key_ring: format!(
                "projects/{}/locations/{}/keyRings/{}",
                c.project_id, c.location, c.key_ring
            ),
            protection: c.protection_level.unwrap_or_default(),
            account,
            tokens: TokenCache::default(),
            http: Http::new(SERVICE, &tuning),
            attempts: tuning.max_retries + 1,
        })
    }

    /// The key ring's resource name.
    pub fn key_ring(&self) -> &str {
        &self.key_ring
    }

    /// The API's base URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Check that the key ring exists and the credentials are accepted.
    pub fn check_key_ring(&self) -> Result<()> {
        self.call::<serde_json::Value>(
            "GetKeyRing",
            &self.key_ring,
            Method::Get,
            &self.key_ring,
            None,
        )
        .map(|_| ())
    }

    fn create(&self, usage: KeyUse, id: &str) -> Result<CryptoKey> {
        let (purpose, algorithm) = match usage {
            KeyUse::Aes => ("ENCRYPT_DECRYPT", "GOOGLE_SYMMETRIC_ENCRYPTION"),
            KeyUse::Hmac => ("MAC", "HMAC_SHA256"),
            KeyUse::Sign(Algorithm::Secp256k1) if self.signs(Algorithm::Secp256k1) => {
                ("ASYMMETRIC_SIGN", "EC_SIGN_SECP256K1_SHA256")
            }
            KeyUse::Sign(Algorithm::P256) => ("ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            KeyUse::Sign(alg) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: cannot hold {} signing keys at protection level {}",
                        alg.as_str(),
                        level(self.protection)
                    ),
                ));
            }
        };
        let body = serde_json::json!({
            "purpose": purpose,
            "versionTemplate": {"algorithm": algorithm, "protectionLevel": level(self.protection)},
            "labels": {"created-by": "hanzo-kms"},
        })
        .to_string();
        let path = format!("{}/cryptoKeys?cryptoKeyId={id}", self.key_ring);
        let name = format!("{}/cryptoKeys/{id}", self.key_ring);
        let key: CryptoKey = self.call(
            "CreateCryptoKey",
            &name,
            Method::Post,
            &path,
            Some(Zeroizing::new(body)),
        )?;
        if key.name != name || key.purpose != purpose {
            return Err(self.answer_error(
                "CreateCryptoKey",
                &name,
                "the answer names another key or purpose",
            ));
        }
        if matches!(usage, KeyUse::Sign(_)) {
            self.await_enabled(&format!("{name}/cryptoKeyVersions/1"))?;
        }
        Ok(key)
    }

    /// Asymmetric versions are generated asynchronously (PENDING_GENERATION): wait until the
    /// version is ENABLED.
    fn await_enabled(&self, version: &str) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let v: CryptoKeyVersion =
                self.call("GetCryptoKeyVersion", version, Method::Get, version, None)?;
            match v.state.as_str() {
                "ENABLED" => return Ok(()),
                "PENDING_GENERATION" if start.elapsed() < GENERATION_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                state => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("{SERVICE}: key version {version} is {state}, not ENABLED"),
                    ));
                }
            }
        }
    }

    fn remote_id(&self, usage: KeyUse, key: &CryptoKey) -> String {
        match usage {
            KeyUse::Aes => key.name.clone(),
            KeyUse::Hmac | KeyUse::Sign(_) => format!("{}/cryptoKeyVersions/1", key.name),
        }
    }

    /// One REST call with the access token; throttled and unavailable calls are retried by
    /// [`Http`], a refused token is replaced once; `resource` names the key in errors.
    fn call<T: for<'de> Deserialize<'de>>(
        &self,
        op: &str,
        resource: &str,
        method: Method,
        path: &str,
        body: Option<Zeroizing<String>>,
    ) -> Result<T> {
        let url = format!("{}/v1/{path}", self.endpoint);
        let what = || format!("{op} on {resource} at {}", self.endpoint);
        let mut refreshed = false;
        loop {
            let token = self.token()?;
            let build = || -> Result<ureq::http::Request<Vec<u8>>> {
                let mut auth = Zeroizing::new(String::with_capacity(token.len() + 7));
                auth.push_str("Bearer ");
                auth.push_str(&token);
                let b = ureq::http::Request::builder()
                    .uri(&url)
                    .header("Authorization", auth.as_str());
                let r = match method {
                    Method::Get => b.method("GET").body(Vec::new()),
                    Method::Post => b
                        .method("POST")
                        .header("Content-Type", "application/json")
                        .body(
                            body.as_deref()
                                .map_or(b"{}".to_vec(), |s| s.as_bytes().to_vec()),
                        ),
                };
                r.map_err(|e| Error::internal(format!("{SERVICE}: bad request to {url}: {e}")))
            };
            let reply = self.http.send(&what, &build, &judge)?;
            if reply.status == 200 {
                return serde_json::from_slice(&reply.body).map_err(|e| {
                    self.answer_error(op, resource, &format!("unexpected answer ({e})"))
                });
            }
            if reply.status == 401 && !refreshed {
                // The token may have been revoked or have expired early: get a new one, once.
                self.tokens.clear();
                refreshed = true;
                continue;
            }
            return Err(self.error(op, resource, reply.status, &ApiError::parse(&reply)));
        }
    }

    /// The cached access token, or a new one from the token endpoint.
    fn token(&self) -> Result<Zeroizing<String>> {
        if let Some(t) = self.tokens.current() {
            return Ok(t);
        }
        let uri = self.account.token_uri();
        let who = self.account.client_email();
        let what = || format!("token request for {who} at {uri}");
        let build = || -> Result<ureq::http::Request<Vec<u8>>> {
            let form = self.account.token_request()?;
            ureq::http::Request::builder()
                .method("POST")
                .uri(uri)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.to_vec())
                .map_err(|e| Error::internal(format!("{SERVICE}: bad token request: {e}")))
        };
        let reply = self.http.send(&what, &build, &|r: &Reply| {
            if r.status == 429 {
                Verdict::Throttled
            } else if r.status >= 500 {
                Verdict::Retry
            } else {
                Verdict::Done
            }
        })?;
        if reply.status == 200 {
            let answer: TokenResponse = serde_json::from_slice(&reply.body).map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{SERVICE}: the token endpoint {uri} gave an answer without an access token"
                    ),
                )
            })?;
            if answer
                .token_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
            {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{SERVICE}: the token endpoint {uri} gave a token that is not a bearer token"
                    ),
                ));
            }
            let token = Zeroizing::new(answer.access_token.clone());
            self.tokens
                .store(token.clone(), answer.expires_in.unwrap_or(3600));
            return Ok(token);
        }
        // OAuth errors are {"error": code, "error_description": text}; neither holds a secret.
        let why = serde_json::from_slice::<OAuthError>(&reply.body)
            .map(|e| match e.error_description {
                Some(d) => format!("{}: {}", e.error, clip(&d)),
                None => e.error,
            })
            .unwrap_or_else(|_| "no OAuth error in the answer".into());
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "{SERVICE}: the token endpoint {uri} refused the service account {who} (HTTP {}, {why})",
                reply.status
            ),
        ))
    }

    fn error(&self, op: &str, resource: &str, code: u16, e: &ApiError) -> Error {
        let kind = match (code, e.status.as_str()) {
            (400, "FAILED_PRECONDITION") if e.message.contains("purpose") => ErrorKind::Unsupported,
            (400, "FAILED_PRECONDITION") => ErrorKind::KeyState,
            (400, _) => ErrorKind::InvalidArgument,
            (401, _) | (403, _) => ErrorKind::Config,
            (404, _) => ErrorKind::NotFound,
            (409, _) => ErrorKind::AlreadyExists,
            _ => ErrorKind::Unavailable,
        };
        let cause = match code {
            401 => "the service refused the access token of the service account".to_string(),
            _ => clip(&e.message),
        };
        Error::new(
            kind,
            format!(
                "{SERVICE}: {op} on {resource} failed: {cause} (HTTP {code} {})",
                e.status
            ),
        )
    }

    fn answer_error(&self, op: &str, resource: &str, what: &str) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!("{SERVICE}: {op} on {resource}: {what}"),
        )
    }

    /// Run `f` until its answer passes its integrity checks (at most `max_retries` + 1 times;
    /// Google advises a limited number of retries on a CRC32C mismatch).
    fn checked<T>(
        &self,
        op: &str,
        resource: &str,
        mut f: impl FnMut() -> Result<std::result::Result<T, String>>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f()? {
                Ok(v) => return Ok(v),
                Err(what) if attempt < self.attempts => {
                    tracing::warn!(
                        service = SERVICE,
                        op,
                        resource,
                        what,
                        "integrity check failed, retrying"
                    );
                    std::thread::sleep(Duration::from_millis(50) * attempt);
                }
                Err(what) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{SERVICE}: {op} on {resource} failed its integrity check {attempt} times: {what}"
                        ),
                    ));
                }
            }
        }
    }

    fn check_size(&self, op: &str, id: &str, plaintext: usize, aad: usize) -> Result<()> {
        let hsm = self.protection == GcpProtectionLevel::Hsm;
        if plaintext > MAX_PLAINTEXT
            || aad > MAX_PLAINTEXT
            || (hsm && plaintext + aad > MAX_HSM_PLAINTEXT_AND_AAD)
        {
            return Err(Error::invalid(format!(
                "{SERVICE}: {op} on {id}: {plaintext} bytes of plaintext and {aad} of AAD exceed the service's limit \
                 (64 KiB each; 8 KiB together for HSM keys)"
            )));
        }
        Ok(())
    }
}

/// The API's name of a protection level.
fn level(p: GcpProtectionLevel) -> &'static str {
    match p {
        GcpProtectionLevel::Hsm => "HSM",
        GcpProtectionLevel::Software => "SOFTWARE",
    }
}

/// A Cloud KMS CryptoKey id (`[a-zA-Z0-9_-]{1,max}`) made from our label: other characters
/// become `_` (`:` and `/` of key names, ` ` and `.`).
fn key_id(label: &str, max: usize) -> String {
    let mut id: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if id.is_empty() {
        id.push_str("key");
    }
    id
}

/// Accept `https://`, and `http://` for loopback hosts only (tests).
pub(crate) fn check_url(url: &str, what: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("{SERVICE}: {what} {url:?} {why}"),
        )
    };
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("must be an https:// URL"));
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        Ok(())
    } else {
        Err(bad(
            "must be https:// (plain http:// only to a loopback address)",
        ))
    }
}

/// An id that names a CryptoKey where a CryptoKeyVersion of a signing or MAC key belongs.
fn wrong_purpose(op: &str, id: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "{SERVICE}: {op} on {id} failed: the key is an ENCRYPT_DECRYPT key, not a signing or MAC key version"
        ),
    )
}

/// Server text in our errors: one line, at most 300 characters.
fn clip(s: &str) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_follow_cloud_kms_rules() {
        assert_eq!(key_id("model:acme:gpt4 v1", 63), "model_acme_gpt4_v1");
        assert_eq!(key_id("", 63), "key");
        assert_eq!(key_id(&"x".repeat(100), 50).len(), 50);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://cloudkms.googleapis.com", "endpoint").is_ok());
        assert!(check_url("http://127.0.0.1:8080", "endpoint").is_ok());
        assert!(check_url("http://localhost:1/token", "token_uri").is_ok());
        let e = check_url("http://kms.example.com", "endpoint").unwrap_err();
        assert!(e.message().contains("Google Cloud KMS") && e.message().contains("loopback"));
        assert!(check_url("ftp://x", "endpoint").is_err());
    }
}
