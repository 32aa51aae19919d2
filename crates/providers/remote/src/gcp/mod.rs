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

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hanzo_kms_core::config::{GcpProtectionLevel, GoogleCloudKmsConfig};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result, SecretBytes};
use serde::Deserialize;
use zeroize::Zeroizing;

use self::auth::{ServiceAccount, TokenCache, TokenResponse};
use self::crc32c::crc32c;
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

impl RemoteKms for GcpKms {
    fn service(&self) -> &'static str {
        PROVIDER
    }

    fn display_name(&self) -> &'static str {
        SERVICE
    }

    fn signs(&self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::P256 => true,
            Algorithm::Secp256k1 => self.protection == GcpProtectionLevel::Hsm,
            Algorithm::Aes256Gcm | Algorithm::Ed25519 | Algorithm::MlDsa65 => false,
        }
    }

    fn create_key(&self, usage: KeyUse, label: &str) -> Result<String> {
        // CryptoKeys are never deleted in Cloud KMS (only their versions), so an id is never
        // free again: add randomness to the label.
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| Error::internal("random generator failed"))?;
        let id = format!("{}-{}", key_id(label, 63 - 13), hex::encode(suffix));
        let key = self.create(usage, &id)?;
        Ok(self.remote_id(usage, &key))
    }

    fn find_root(&self, label: &str) -> Result<Option<String>> {
        let name = format!("{}/cryptoKeys/{}", self.key_ring, key_id(label, 63));
        match self.call::<CryptoKey>("GetCryptoKey", &name, Method::Get, &name, None) {
            Ok(key) => {
                let usage = match key.purpose.as_str() {
                    "ENCRYPT_DECRYPT" => KeyUse::Aes,
                    "MAC" => KeyUse::Hmac,
                    other => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{SERVICE}: root key {name} has purpose {other}, not ENCRYPT_DECRYPT or MAC"
                            ),
                        ));
                    }
                };
                Ok(Some(self.remote_id(usage, &key)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound && e.message().contains("CryptoKey") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn create_root(&self, usage: KeyUse, label: &str) -> Result<String> {
        match self.create(usage, &key_id(label, 63)) {
            Ok(key) => Ok(self.remote_id(usage, &key)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                self.find_root(label)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("{SERVICE}: root key {label} vanished"),
                    )
                })
            }
            Err(e) => Err(e),
        }
    }

    fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.check_size("Encrypt", id, plaintext.len(), aad.len())?;
        let b64 = Zeroizing::new(STANDARD.encode(plaintext));
        let body = Zeroizing::new(format!(
            r#"{{"plaintext":"{}","additionalAuthenticatedData":"{}","plaintextCrc32c":"{}","additionalAuthenticatedDataCrc32c":"{}"}}"#,
            b64.as_str(),
            STANDARD.encode(aad),
            crc32c(plaintext),
            crc32c(aad)
        ));
        let path = format!("{id}:encrypt");
        self.checked("Encrypt", id, || {
            let r: EncryptResponse =
                self.call("Encrypt", id, Method::Post, &path, Some(body.clone()))?;
            let Some(ct) = decode(&r.ciphertext) else {
                return Ok(Err("the ciphertext is not base64".into()));
            };
            if !r.verified_plaintext_crc32c || !r.verified_additional_authenticated_data_crc32c {
                return Ok(Err(
                    "the service did not confirm the request's CRC32C values".into(),
                ));
            }
            if !r.name.starts_with(&format!("{id}/cryptoKeyVersions/")) {
                return Ok(Err(format!("the answer names another key ({})", r.name)));
            }
            Ok(match_crc(&ct, r.ciphertext_crc32c, "ciphertextCrc32c").map(|()| ct))
        })
    }

    fn decrypt(&self, id: &str, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        if ciphertext.len() > MAX_PLAINTEXT + 1024 || aad.len() > MAX_PLAINTEXT {
            return Err(Error::authentication_failed());
        }
        let body = Zeroizing::new(format!(
            r#"{{"ciphertext":"{}","additionalAuthenticatedData":"{}","ciphertextCrc32c":"{}","additionalAuthenticatedDataCrc32c":"{}"}}"#,
            STANDARD.encode(ciphertext),
            STANDARD.encode(aad),
            crc32c(ciphertext),
            crc32c(aad)
        ));
        let path = format!("{id}:decrypt");
        self.checked("Decrypt", id, || {
            let r: DecryptResponse =
                match self.call("Decrypt", id, Method::Post, &path, Some(body.clone())) {
                    Ok(r) => r,
                    // A ciphertext from another key, with other AAD or altered: the service says
                    // only INVALID_ARGUMENT, and so do we (opaque, STYLE.md 7).
                    Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                        return Err(Error::authentication_failed());
                    }
                    Err(e) => return Err(e),
                };
            let Some(pt) = decode(&r.plaintext) else {
                return Ok(Err("the plaintext is not base64".into()));
            };
            let pt = SecretBytes::new(pt);
            Ok(match_crc(pt.expose(), r.plaintext_crc32c, "plaintextCrc32c").map(|()| pt))
        })
    }

    fn sign(&self, id: &str, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>> {
        if !id.contains("/cryptoKeyVersions/") {
            return Err(wrong_purpose("AsymmetricSign", id));
        }
        if !self.signs(alg) || input.len() != 32 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{SERVICE}: AsymmetricSign on {id}: {} over {} bytes is not supported",
                    alg.as_str(),
                    input.len()
                ),
            ));
        }
        let body = Zeroizing::new(format!(
            r#"{{"digest":{{"sha256":"{}"}},"digestCrc32c":"{}"}}"#,
            STANDARD.encode(input),
            crc32c(input)
        ));
        let path = format!("{id}:asymmetricSign");
        self.checked("AsymmetricSign", id, || {
            let r: SignResponse = self.call(
                "AsymmetricSign",
                id,
                Method::Post,
                &path,
                Some(body.clone()),
            )?;
            let Some(sig) = decode(&r.signature) else {
                return Ok(Err("the signature is not base64".into()));
            };
            if !r.verified_digest_crc32c {
                return Ok(Err("the service did not confirm the digest's CRC32C".into()));
            }
            if r.name != id {
                return Ok(Err(format!(
                    "the answer names another key version ({})",
                    r.name
                )));
            }
            Ok(match_crc(&sig, r.signature_crc32c, "signatureCrc32c").map(|()| sig))
        })
    }

    fn public_key(&self, id: &str, alg: Algorithm) -> Result<Vec<u8>> {
        let (want_alg, prefix): (&str, &[u8]) = match alg {
            Algorithm::P256 => ("EC_SIGN_P256_SHA256", &SPKI_P256),
            Algorithm::Secp256k1 => ("EC_SIGN_SECP256K1_SHA256", &SPKI_SECP256K1),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: GetPublicKey on {id}: {} keys are not held here",
                        other.as_str()
                    ),
                ));
            }
        };
        let path = format!("{id}/publicKey");
        self.checked("GetPublicKey", id, || {
            let r: PublicKeyResponse = self.call("GetPublicKey", id, Method::Get, &path, None)?;
            if let Err(e) = match_crc(r.pem.as_bytes(), r.pem_crc32c, "pemCrc32c") {
                return Ok(Err(e));
            }
            if r.algorithm != want_alg {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: key version {id} is {}, expected {want_alg}",
                        r.algorithm
                    ),
                ));
            }
            let Some(der) = spki_der(&r.pem) else {
                return Ok(Err("the PEM is not a PUBLIC KEY".into()));
            };
            match der.strip_prefix(prefix) {
                Some(point) if point.len() == 65 && point[0] == 4 => Ok(Ok(point.to_vec())),
                _ => Ok(Err(
                    "the public key is not an uncompressed point on the key's curve".into(),
                )),
            }
        })
    }

    fn mac(&self, id: &str, data: &[u8]) -> Result<[u8; 32]> {
        if !id.contains("/cryptoKeyVersions/") {
            return Err(wrong_purpose("MacSign", id));
        }
        if data.len() > MAX_PLAINTEXT {
            return Err(Error::invalid(format!(
                "{SERVICE}: MacSign on {id}: more than 64 KiB of data"
            )));
        }
        let body = Zeroizing::new(format!(
            r#"{{"data":"{}","dataCrc32c":"{}"}}"#,
            Zeroizing::new(STANDARD.encode(data)).as_str(),
            crc32c(data)
        ));
        let path = format!("{id}:macSign");
        self.checked("MacSign", id, || {
            let r: MacResponse =
                self.call("MacSign", id, Method::Post, &path, Some(body.clone()))?;
            let Some(mac) = decode(&r.mac) else {
                return Ok(Err("the MAC is not base64".into()));
            };
            let mac = Zeroizing::new(mac);
            if !r.verified_data_crc32c {
                return Ok(Err("the service did not confirm the data's CRC32C".into()));
            }
            if r.name != id {
                return Ok(Err(format!(
                    "the answer names another key version ({})",
                    r.name
                )));
            }
            if let Err(e) = match_crc(&mac, r.mac_crc32c, "macCrc32c") {
                return Ok(Err(e));
            }
            Ok(<[u8; 32]>::try_from(&mac[..]).map_err(|_| "the MAC is not 32 bytes".to_string()))
        })
    }

    fn destroy(&self, id: &str) -> Result<()> {
        // Our keys have exactly one version; an AES key's id is the CryptoKey.
        let version = if id.contains("/cryptoKeyVersions/") {
            id.to_string()
        } else {
            format!("{id}/cryptoKeyVersions/1")
        };
        let path = format!("{version}:destroy");
        match self.call::<CryptoKeyVersion>(
            "DestroyCryptoKeyVersion",
            &version,
            Method::Post,
            &path,
            None,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            // Already scheduled for destruction or destroyed.
            Err(e) if e.kind() == ErrorKind::KeyState && e.message().contains("DESTROY") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn health(&self, root_id: &str) -> Result<()> {
        let key = root_id
            .split("/cryptoKeyVersions/")
            .next()
            .unwrap_or(root_id);
        self.call::<CryptoKey>("GetCryptoKey", key, Method::Get, key, None)
            .map(|_| ())
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

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

/// A throttled or unavailable call is tried again; so is one whose request CRC32C the
/// service found wrong (damaged on the way; Google advises a limited number of retries).
fn judge(r: &Reply) -> Verdict {
    let checksum = r.status == 400 && ApiError::parse(r).message.contains("checksum");
    if r.status == 429 {
        Verdict::Throttled
    } else if matches!(r.status, 500 | 502 | 503 | 504) || checksum {
        Verdict::Retry
    } else {
        Verdict::Done
    }
}

#[derive(Clone, Default)]
struct ApiError {
    status: String,
    message: String,
}

impl ApiError {
    fn parse(reply: &Reply) -> Self {
        #[derive(Deserialize)]
        struct Outer {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(default)]
            message: String,
            #[serde(default)]
            status: String,
        }
        serde_json::from_slice::<Outer>(&reply.body)
            .map(|o| Self {
                status: o.error.status,
                message: o.error.message,
            })
            .unwrap_or_else(|_| Self {
                status: "UNKNOWN".into(),
                message: "no error body".into(),
            })
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
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

fn decode(b64: &str) -> Option<Vec<u8>> {
    STANDARD.decode(b64).ok()
}

fn match_crc(data: &[u8], got: Option<Crc>, field: &str) -> std::result::Result<(), String> {
    match got {
        Some(Crc(c)) if c == u64::from(crc32c(data)) => Ok(()),
        Some(_) => Err(format!("{field} does not match the data")),
        None => Err(format!("the answer has no {field}")),
    }
}

/// `SubjectPublicKeyInfo` DER prefixes of an uncompressed EC point (id-ecPublicKey + curve).
const SPKI_P256: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SPKI_SECP256K1: [u8; 23] = [
    0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
];

fn spki_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

// --- Wire types (proto3 JSON mapping: lowerCamelCase, bytes as base64, int64 as a string) ---

/// An `Int64Value` CRC32C: a JSON string (or number) holding an integer below 2^32.
#[derive(Clone, Copy)]
struct Crc(u64);

impl<'de> Deserialize<'de> for Crc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Crc(n)),
            Raw::S(s) => s.parse().map(Crc).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKey {
    name: String,
    #[serde(default)]
    purpose: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKeyVersion {
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptResponse {
    #[serde(default)]
    name: String,
    ciphertext: String,
    ciphertext_crc32c: Option<Crc>,
    #[serde(default)]
    verified_plaintext_crc32c: bool,
    #[serde(default)]
    verified_additional_authenticated_data_crc32c: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptResponse {
    #[serde(default)]
    plaintext: String,
    plaintext_crc32c: Option<Crc>,
}

impl Drop for DecryptResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.plaintext);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignResponse {
    signature: String,
    signature_crc32c: Option<Crc>,
    #[serde(default)]
    verified_digest_crc32c: bool,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyResponse {
    pem: String,
    #[serde(default)]
    algorithm: String,
    pem_crc32c: Option<Crc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MacResponse {
    mac: String,
    mac_crc32c: Option<Crc>,
    #[serde(default)]
    verified_data_crc32c: bool,
    #[serde(default)]
    name: String,
}

impl Drop for MacResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.mac);
    }
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

    #[test]
    fn crc_fields_accept_strings_and_numbers() {
        let c: Crc = serde_json::from_str("\"4294967295\"").unwrap();
        assert_eq!(c.0, 4_294_967_295);
        let c: Crc = serde_json::from_str("12").unwrap();
        assert_eq!(c.0, 12);
        assert!(match_crc(b"123456789", Some(Crc(0xE306_9283)), "f").is_ok());
        assert!(match_crc(b"123456789", Some(Crc(0xE306_9282)), "f").is_err());
        assert!(match_crc(b"123456789", None, "f").is_err());
    }
}
