//! Service-account authentication for Google Cloud KMS: the OAuth 2.0 JWT bearer grant
//! (RFC 7523) that Google documents for service accounts.
//!
//! ```text
//! assertion = b64url(header) "." b64url(claims) "." b64url(RS256(private_key, b64url(header) "." b64url(claims)))
//! header    = {"alg":"RS256","typ":"JWT","kid":private_key_id}
//! claims    = {"iss":client_email,"scope":SCOPE,"aud":token_uri,"iat":now,"exp":now+3600}
//! POST token_uri  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...
//!   -> {"access_token":..., "expires_in":..., "token_type":"Bearer"}
//! ```
//!
//! The access token is cached until [`REFRESH_MARGIN`] before it expires. The private key, the
//! assertion and the access token are secrets: zeroized on drop, never in `Debug` or errors.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hanzo_kms_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use super::SERVICE;

/// The OAuth scope Cloud KMS calls need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
/// The grant type of a JWT bearer assertion (RFC 7523 section 2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A cached token is replaced this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// An assertion's lifetime (Google accepts at most one hour).
const ASSERTION_LIFETIME: u64 = 3600;

/// A service-account key file (`"type": "service_account"`), parsed.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: String,
    token_uri: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Read a service-account JSON key file. Errors name the file and what is wrong with it,
    /// never its contents.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{SERVICE}: cannot read the service-account credentials file {}: {e}",
                    path.display()
                ),
            )
        })?);
        Self::from_json(&bytes, &path.display().to_string())
    }

    /// Parse a service-account key file's JSON; `origin` names it in errors.
    pub fn from_json(json: &[u8], origin: &str) -> Result<Self> {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{SERVICE}: credentials file {origin} is not a service-account key: {what}"
                ),
            )
        };
        // serde_json's own error would quote the offending input: report its position only.
        let file: KeyFile = serde_json::from_slice(json).map_err(|e| {
            bad(&format!(
                "invalid JSON at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        let private_key = Zeroizing::new(file.private_key.unwrap_or_default());
        if file.kind != "service_account" {
            return Err(bad(&format!(
                "\"type\" is {:?}, expected \"service_account\"",
                file.kind
            )));
        }
        let client_email = file
            .client_email
            .ok_or_else(|| bad("no \"client_email\""))?;
        let token_uri = file.token_uri.ok_or_else(|| bad("no \"token_uri\""))?;
        super::check_url(&token_uri, "token_uri").map_err(|e| bad(e.message()))?;
        let der = pem_pkcs8(&private_key)
            .ok_or_else(|| bad("\"private_key\" is not a PEM \"PRIVATE KEY\" (PKCS #8)"))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| bad("\"private_key\" is not an RSA key usable for RS256"))?;
        Ok(Self {
            client_email,
            private_key_id: file.private_key_id.unwrap_or_default(),
            token_uri,
            key,
        })
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT for the token request, issued at `iat` (seconds since the Unix epoch).
    pub fn assertion(&self, iat: u64) -> Result<Zeroizing<String>> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME,
        });
        let mut jwt = Zeroizing::new(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .map_err(|_| {
                Error::internal(format!(
                    "{SERVICE}: RS256 signing of the token request failed"
                ))
            })?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&sig));
        Ok(jwt)
    }

    /// The form body of the token request (`application/x-www-form-urlencoded`). The
    /// assertion's alphabet (base64url and '.') needs no escaping.
    pub fn token_request(&self) -> Result<Zeroizing<Vec<u8>>> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::internal("system clock before 1970"))?
            .as_secs();
        let jwt = self.assertion(iat)?;
        let mut body = Zeroizing::new(Vec::with_capacity(jwt.len() + 80));
        body.extend_from_slice(
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
        );
        body.extend_from_slice(jwt.as_bytes());
        Ok(body)
    }
}

/// The `PRIVATE KEY` block of a PEM text, decoded.
fn pem_pkcs8(pem: &str) -> Option<Zeroizing<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let b64: Zeroizing<String> = Zeroizing::new(
        pem[start..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD.decode(b64.as_bytes()).ok().map(Zeroizing::new)
}

/// An access token and when to replace it.
struct Cached {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

/// The access token cache: one token shared by every call until [`REFRESH_MARGIN`] (or half
/// its lifetime, if shorter) before it expires.
#[derive(Default)]
pub struct TokenCache {
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// The cached token, if it is still fresh.
    pub fn current(&self) -> Option<Zeroizing<String>> {
        let guard = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// Keep `token`, valid for `expires_in` seconds from now.
    pub fn store(&self, token: Zeroizing<String>, expires_in: u64) {
        let life = Duration::from_secs(expires_in);
        let margin = REFRESH_MARGIN.min(life / 2);
        let mut guard = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Cached {
            token,
            refresh_at: Instant::now() + life - margin,
        });
    }

    /// Forget the token (the service refused it).
    pub fn clear(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The token endpoint's answer.
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    fn key_file() -> (String, Vec<u8>) {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let b64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let json = serde_json::json!({
            "type": "service_account", "project_id": "p", "private_key_id": "kid1",
            "private_key": pem, "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:9/token"
        });
        (json.to_string(), pair.public_key().as_ref().to_vec())
    }

    #[test]
    fn assertion_is_an_rs256_jwt_with_the_documented_claims() {
        let (json, public) = key_file();
        let sa = ServiceAccount::from_json(json.as_bytes(), "test.json").unwrap();
        let jwt = sa.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid1"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "http://127.0.0.1:9/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        let mut tampered = signed.into_bytes();
        tampered[3] ^= 1;
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(&tampered, &sig)
                .is_err()
        );
    }

    #[test]
    fn bad_key_files_are_named_without_their_contents() {
        let (json, _) = key_file();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["type"] = "authorized_user".into();
        let e =
            ServiceAccount::from_json(v.to_string().as_bytes(), "/etc/kms/sa.json").unwrap_err();
        assert!(
            e.message().contains("Google Cloud KMS") && e.message().contains("/etc/kms/sa.json")
        );
        assert!(e.message().contains("service_account"));
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        let e = ServiceAccount::from_json(v.to_string().as_bytes(), "sa.json").unwrap_err();
        assert!(e.message().contains("not an RSA key"), "{}", e.message());
        assert!(!e.message().contains("AAAA"));
        let e = ServiceAccount::from_json(
            b"{\"type\": \"service_account\", \"private_key\": \"sekret",
            "sa.json",
        )
        .unwrap_err();
        assert!(!e.message().contains("sekret"), "{}", e.message());
    }

    #[test]
    fn token_cache_refreshes_before_expiry() {
        let cache = TokenCache::default();
        assert!(cache.current().is_none());
        cache.store(Zeroizing::new("t1".into()), 3600);
        assert_eq!(cache.current().unwrap().as_str(), "t1");
        // A token that lives 1 s is replaced after half of it.
        cache.store(Zeroizing::new("t2".into()), 1);
        assert!(cache.current().is_some());
        std::thread::sleep(Duration::from_millis(600));
        assert!(cache.current().is_none());
        cache.store(Zeroizing::new("t3".into()), 3600);
        cache.clear();
        assert!(cache.current().is_none());
    }
}
