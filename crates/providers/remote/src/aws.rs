//! The AWS KMS client (`provider: aws-kms`): the JSON 1.1 protocol (`X-Amz-Target:
//! TrentService.<Operation>`) signed with our own SigV4 ([`crate::sigv4`]).
//!
//! | our call | AWS KMS |
//! |---|---|
//! | AES key | `CreateKey` `SYMMETRIC_DEFAULT`, `ENCRYPT_DECRYPT` |
//! | encrypt / decrypt | `Encrypt` / `Decrypt` with `EncryptionContext {"hanzo-kms-aad": "v1:" ‖ base64(aad)}` |
//! | secp256k1 / P-256 key | `CreateKey` `ECC_SECG_P256K1` / `ECC_NIST_P256`, `SIGN_VERIFY` |
//! | sign | `Sign` `MessageType=DIGEST`, `ECDSA_SHA_256` (DER answer) |
//! | public key | `GetPublicKey` (DER SubjectPublicKeyInfo) |
//! | HMAC | `CreateKey` `HMAC_256`, `GenerateMac` `HMAC_SHA_256` |
//! | root keys | aliases `alias/<key_prefix>root-kek`, `alias/<key_prefix>root-mac` (`DescribeKey`, `CreateAlias`) |
//! | destroy | `ScheduleKeyDeletion` (7 days, the shortest AWS allows; the key is unusable at once) |
//!
//! Ed25519 and ML-DSA-65 keys are kms-wrapped. The region is the section's `region`, else
//! `$AWS_REGION`, `$AWS_DEFAULT_REGION`, or the profile's `region` in the shared config file;
//! the endpoint the section's `endpoint`, else `$AWS_ENDPOINT_URL_KMS`, `$AWS_ENDPOINT_URL`, or
//! `https://kms.<region>.amazonaws.com`. Credentials come from the standard chain
//! ([`crate::aws_credentials`]): the environment; the profile in the shared credentials and
//! config files (static keys, role assumption, web identity, SSO, `credential_process`); web
//! identity from the environment; the ECS/EKS container endpoint; the EC2 instance metadata
//! service (IMDSv2). Temporary ones are refreshed before they expire.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hanzo_kms_core::config::AwsKmsConfig;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result, SecretBytes};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::aws_credentials::CredentialChain;
use crate::aws_profile::AwsFiles;
use crate::http::{Http, Reply, Verdict, error_text};
use crate::service::{KeyUse, RemoteKms};
use crate::sigv4;

/// The service's name in every error.
const SERVICE: &str = "AWS KMS";
/// The provider's config name (`kms.lux.provider: aws-kms`).
pub const PROVIDER: &str = "aws-kms";
/// The default prefix of the root keys' aliases.
pub const DEFAULT_KEY_PREFIX: &str = "hanzo-kms-";
/// The shortest waiting period AWS KMS allows before deleting a key.
const PENDING_DAYS: u32 = 7;

/// An AWS KMS client.
pub struct AwsKms {
    http: Http,
    endpoint: String,
    host: String,
    region: String,
    creds: CredentialChain,
    key_prefix: String,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.creds.source())
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// A client from the config section; `env` looks up environment variables.
    pub fn from_config(c: &AwsKmsConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let cfg = |m: String| {
            Error::new(
                ErrorKind::Config,
                format!("{SERVICE}: kms.lux.aws-kms: {m}"),
            )
        };
        // Read now, but a broken file is an error only where the files are needed: for the
        // region here, for credentials in the chain.
        let files = AwsFiles::load(c, env);
        let set = |n: &str| env(n).filter(|v| !v.is_empty());
        let region = c
            .region
            .clone()
            .or_else(|| set("AWS_REGION"))
            .or_else(|| set("AWS_DEFAULT_REGION"))
            .map(Ok)
            .or_else(|| files.check().map(|()| files.region()).transpose())
            .transpose()?
            .ok_or_else(|| {
                cfg(format!(
                    "no region (set region, or $AWS_REGION, or region in profile '{}' of {})",
                    files.profile,
                    files.describe()
                ))
            })?;
        let endpoint = c
            .endpoint
            .clone()
            .or_else(|| set("AWS_ENDPOINT_URL_KMS"))
            .or_else(|| set("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| {
                cfg(format!(
                    "endpoint '{endpoint}' is not http(s)://host[:port]"
                ))
            })?
            .to_owned();
        let creds = CredentialChain::resolve(c, &region, &files, env)?;
        Ok(Self {
            http: Http::new(SERVICE, &c.tuning()),
            endpoint,
            host,
            region,
            creds,
            key_prefix: c
                .key_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into()),
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The alias of root key `label`: `alias/<key_prefix><label>`.
    fn alias(&self, label: &str) -> String {
        format!("alias/{}{label}", self.key_prefix)
    }

    /// One call of `operation` with a JSON body; errors are classified by `__type`. Temporary
    /// credentials the service calls expired are fetched again and the call made once more.
    fn call(&self, operation: &str, body: &Value, about: &str) -> Result<Value> {
        match self.call_once(operation, body, about) {
            Err(e) if self.creds.refreshable() && e.message().contains("ExpiredTokenException") => {
                self.creds.invalidate();
                self.call_once(operation, body, about)
            }
            other => other,
        }
    }

    fn call_once(&self, operation: &str, body: &Value, about: &str) -> Result<Value> {
        let creds = self.creds.current()?;
        let bytes =
            Zeroizing::new(serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?);
        let target = format!("TrentService.{operation}");
        let url = format!("{}/", self.endpoint);
        let describe = || format!("{operation} ({about}) at {}", self.endpoint);
        let build = || -> Result<ureq::http::Request<Vec<u8>>> {
            let now = time::OffsetDateTime::now_utc();
            let amz_date = now
                .format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .map_err(|e| Error::internal(e.to_string()))?;
            let mut headers: Vec<(&str, &str)> = vec![
                ("content-type", "application/x-amz-json-1.1"),
                ("host", &self.host),
                ("x-amz-date", &amz_date),
                ("x-amz-target", &target),
            ];
            if let Some(t) = &creds.session_token {
                headers.push(("x-amz-security-token", t.expose()));
            }
            let auth = sigv4::authorization(
                &creds,
                &self.region,
                "kms",
                &amz_date,
                &sigv4::Request {
                    method: "POST",
                    path: "/",
                    query: "",
                    headers: &headers,
                    body: &bytes,
                },
            );
            let mut b = ureq::http::Request::builder().method("POST").uri(&url);
            for (n, v) in headers.iter().filter(|(n, _)| *n != "host") {
                b = b.header(*n, *v);
            }
            b.header("authorization", auth)
                .body(bytes.to_vec())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("{SERVICE}: bad request to {url}: {e}"),
                    )
                })
        };
        let judge = |r: &Reply| {
            let kind = error_type(r);
            if r.status == 429
                || matches!(
                    kind.as_str(),
                    "ThrottlingException" | "LimitExceededException"
                )
            {
                Verdict::Throttled
            } else if matches!(r.status, 500 | 502 | 503 | 504)
                || matches!(
                    kind.as_str(),
                    "KMSInternalException" | "DependencyTimeoutException"
                )
            {
                Verdict::Retry
            } else {
                Verdict::Done
            }
        };
        let reply = self.http.send(&describe, &build, &judge)?;
        if (200..300).contains(&reply.status) {
            return reply.json().ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: {}: the answer is not JSON", describe()),
                )
            });
        }
        Err(self.classify(&reply, &describe()))
    }

    fn classify(&self, r: &Reply, what: &str) -> Error {
        let kind = error_type(r);
        let text = error_text(r);
        let (ek, why) = match kind.as_str() {
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "AccessDeniedException"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken" => (
                ErrorKind::Config,
                format!("the credentials from {} were refused", self.creds.source()),
            ),
            "InvalidCiphertextException" | "IncorrectKeyException" => {
                return Error::authentication_failed();
            }
            "NotFoundException" => (
                ErrorKind::Unavailable,
                "the key does not exist (deleted outside hanzo-kms?)".into(),
            ),
            "DisabledException" | "KMSInvalidStateException" => (
                ErrorKind::Unavailable,
                "the key is disabled or pending deletion".into(),
            ),
            "InvalidKeyUsageException" | "UnsupportedOperationException" => {
                (ErrorKind::Unsupported, "the key cannot do this".into())
            }
            "ValidationException" | "InvalidAliasNameException" => {
                (ErrorKind::InvalidArgument, "the request was refused".into())
            }
            _ => (ErrorKind::Unavailable, format!("HTTP {}", r.status)),
        };
        Error::new(ek, format!("{SERVICE}: {what}: {why} ({kind}: {text})"))
    }

    fn describe_key(&self, key_id: &str) -> Result<Option<Value>> {
        match self.call("DescribeKey", &json!({"KeyId": key_id}), key_id) {
            Ok(v) => Ok(Some(v["KeyMetadata"].clone())),
            Err(e) if e.message().contains("NotFoundException") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn key_id(v: &Value, what: &str) -> Result<String> {
        v["KeyMetadata"]["KeyId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: {what}: no KeyId in the answer"),
                )
            })
    }

    fn blob(v: &Value, field: &str, what: &str) -> Result<Vec<u8>> {
        v[field]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: {what}: no {field} in the answer"),
                )
            })
    }
}

/// The `EncryptionContext` that binds `aad`: base64 of it, or its SHA-256 when long (the
/// context is limited in size; the local layer of `encrypt` binds the whole AAD anyway).
fn context(aad: &[u8]) -> Value {
    let value = if aad.len() <= 1024 {
        format!("v1:{}", B64.encode(aad))
    } else {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, aad);
        format!("v1-sha256:{}", hex::encode(d.as_ref()))
    };
    json!({"hanzo-kms-aad": value})
}

/// The error's `__type` without its namespace (`com.amazonaws.kms#NotFoundException`).
fn error_type(r: &Reply) -> String {
    r.json()
        .and_then(|v| v["__type"].as_str().map(str::to_owned))
        .map(|t| t.rsplit('#').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

impl RemoteKms for AwsKms {
    fn service(&self) -> &'static str {
        PROVIDER
    }

    fn display_name(&self) -> &'static str {
        SERVICE
    }

    fn signs(&self, alg: Algorithm) -> bool {
        matches!(alg, Algorithm::Secp256k1 | Algorithm::P256)
    }

    fn create_key(&self, usage: KeyUse, label: &str) -> Result<String> {
        let (spec, key_usage) = match usage {
            KeyUse::Aes => ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
            KeyUse::Hmac => ("HMAC_256", "GENERATE_VERIFY_MAC"),
            KeyUse::Sign(Algorithm::Secp256k1) => ("ECC_SECG_P256K1", "SIGN_VERIFY"),
            KeyUse::Sign(Algorithm::P256) => ("ECC_NIST_P256", "SIGN_VERIFY"),
            KeyUse::Sign(other) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{SERVICE}: creating {label}: hanzo-kms does not keep {other} keys here"
                    ),
                ));
            }
        };
        let what = format!("creating {label}");
        let v = self.call(
            "CreateKey",
            &json!({"KeySpec": spec, "KeyUsage": key_usage, "Description": format!("hanzo-kms {label}")}),
            &what,
        )?;
        Self::key_id(&v, &what)
    }

    fn find_root(&self, label: &str) -> Result<Option<String>> {
        let alias = self.alias(label);
        Ok(self
            .describe_key(&alias)?
            .and_then(|m| m["KeyId"].as_str().map(str::to_owned)))
    }

    fn create_root(&self, usage: KeyUse, label: &str) -> Result<String> {
        let id = self.create_key(usage, label)?;
        let alias = self.alias(label);
        match self.call(
            "CreateAlias",
            &json!({"AliasName": alias, "TargetKeyId": id}),
            &alias,
        ) {
            Ok(_) => Ok(id),
            Err(e) if e.message().contains("AlreadyExistsException") => {
                // Another process made it first: use theirs, drop ours.
                let _ = self.destroy(&id);
                self.find_root(label)?.ok_or(e)
            }
            Err(e) => {
                let _ = self.destroy(&id);
                Err(e)
            }
        }
    }

    fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let pt = Zeroizing::new(B64.encode(plaintext));
        let body =
            json!({"KeyId": id, "Plaintext": pt.as_str(), "EncryptionContext": context(aad)});
        let mut body = body;
        let r = self.call("Encrypt", &body, id);
        hanzo_kms_core::secret::wipe_json(&mut body);
        Self::blob(&r?, "CiphertextBlob", &format!("Encrypt ({id})"))
    }

    fn decrypt(&self, id: &str, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let body = json!({"KeyId": id, "CiphertextBlob": B64.encode(ciphertext), "EncryptionContext": context(aad)});
        let mut v = self.call("Decrypt", &body, id)?;
        let plain = v["Plaintext"]
            .as_str()
            .and_then(|p| B64.decode(p).ok())
            .map(SecretBytes::new);
        hanzo_kms_core::secret::wipe_json(&mut v);
        plain.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: Decrypt ({id}): no Plaintext in the answer"),
            )
        })
    }

    fn sign(&self, id: &str, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>> {
        if !self.signs(alg) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{SERVICE}: Sign ({id}): hanzo-kms does not sign {alg} here"),
            ));
        }
        let v = self.call(
            "Sign",
            &json!({"KeyId": id, "Message": B64.encode(input), "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}),
            id,
        )?;
        Self::blob(&v, "Signature", &format!("Sign ({id})"))
    }

    fn public_key(&self, id: &str, alg: Algorithm) -> Result<Vec<u8>> {
        let v = self.call("GetPublicKey", &json!({"KeyId": id}), id)?;
        let der = Self::blob(&v, "PublicKey", &format!("GetPublicKey ({id})"))?;
        let oid = match alg {
            Algorithm::Secp256k1 => hanzo_kms_crypto::ecdsa::OID_SECP256K1,
            _ => hanzo_kms_crypto::ecdsa::OID_P256,
        };
        hanzo_kms_crypto::ecdsa::spki_ec_point(&der, oid)
            .map(|p| p.to_vec())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: GetPublicKey ({id}): not a {alg} key"),
                )
            })
    }

    fn mac(&self, id: &str, data: &[u8]) -> Result<[u8; 32]> {
        let v = self.call(
            "GenerateMac",
            &json!({"KeyId": id, "Message": B64.encode(data), "MacAlgorithm": "HMAC_SHA_256"}),
            id,
        )?;
        Self::blob(&v, "Mac", &format!("GenerateMac ({id})"))?
            .try_into()
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{SERVICE}: GenerateMac ({id}): not 32 bytes"),
                )
            })
    }

    fn destroy(&self, id: &str) -> Result<()> {
        match self.call(
            "ScheduleKeyDeletion",
            &json!({"KeyId": id, "PendingWindowInDays": PENDING_DAYS}),
            id,
        ) {
            Ok(_) => Ok(()),
            // Already scheduled, or gone.
            Err(e)
                if e.message().contains("KMSInvalidStateException")
                    || e.message().contains("NotFoundException") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn health(&self, root_id: &str) -> Result<()> {
        let meta = self.describe_key(root_id)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("{SERVICE}: the root key {root_id} does not exist"),
            )
        })?;
        match meta["KeyState"].as_str() {
            Some("Enabled") => Ok(()),
            other => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{SERVICE}: the root key {root_id} is {}",
                    other.unwrap_or("in an unknown state")
                ),
            )),
        }
    }
}
