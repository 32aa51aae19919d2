//! AWS credentials from the standard chain, in the order the AWS SDKs document it:
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`),
//!    profile `profile` / `AWS_PROFILE` / `default`;
//! 3. web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`): **not supported yet**; when
//!    only those are set, the error says so;
//! 4. the ECS/EKS container credentials endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on
//!    `http://169.254.170.2`) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with the `Authorization`
//!    header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at each fetch: EKS Pod Identity
//!    rotates it) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 5. the EC2 instance metadata service, IMDSv2 only: `PUT /latest/api/token`, then
//!    `GET /latest/meta-data/iam/security-credentials/` (the role) and `…/<role>`, at
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` (default `http://169.254.169.254`) unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Temporary credentials (4, 5) carry a session token and an `Expiration`; they are fetched
//! again [`REFRESH_BEFORE`] before it (or, for credentials that live shorter, halfway), and at
//! once after the service answers `ExpiredTokenException`. A failed refresh keeps the old
//! credentials while they are still valid. Secrets stay in zeroizing memory
//! ([`ConfigSecret`]); `Debug` and errors show where the credentials came from, never them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hanzo_kms_core::config::{AwsKmsConfig, ConfigSecret, RemoteSigningKeys, RemoteTuning};
use hanzo_kms_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::http::{Http, Reply, Verdict};
use crate::sigv4::Credentials;

/// The service's name in errors.
const SERVICE: &str = "AWS KMS";
/// The ECS task metadata address that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to.
pub const ECS_ENDPOINT: &str = "http://169.254.170.2";
/// The instance metadata service's default address.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// How long before their `Expiration` temporary credentials are fetched again.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The lifetime asked for an IMDSv2 session token (6 hours, the most IMDS allows).
const IMDS_TOKEN_TTL: &str = "21600";

/// Credentials for the AWS KMS client, refreshed as they near their expiry.
pub(crate) struct CredentialChain {
    source: Source,
    /// Where they come from, for messages ("$AWS_ACCESS_KEY_ID", "the instance metadata
    /// service at … (role R)").
    describe: String,
    current: RwLock<Current>,
}

impl std::fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialChain")
            .field("source", &self.describe)
            .finish_non_exhaustive()
    }
}

struct Current {
    creds: Arc<Credentials>,
    /// When to fetch again (`None`: never, static credentials).
    refresh_at: Option<OffsetDateTime>,
    expires: Option<OffsetDateTime>,
}

enum Source {
    Static,
    Container {
        http: Http,
        url: String,
        token: ContainerToken,
    },
    Imds {
        http: Http,
        endpoint: String,
    },
}

enum ContainerToken {
    None,
    Value(ConfigSecret),
    File(PathBuf),
}

impl CredentialChain {
    /// Walk the chain (see the module doc) and fetch the first credentials found.
    pub(crate) fn resolve(c: &AwsKmsConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |n: &str| env(n).filter(|v| !v.is_empty());
        let mut tried: Vec<String> = Vec::new();
        // 1. Environment.
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Self::fixed(
                Credentials {
                    access_key_id: id,
                    secret_access_key: ConfigSecret::new(secret),
                    session_token: env("AWS_SESSION_TOKEN").map(ConfigSecret::new),
                },
                "$AWS_ACCESS_KEY_ID".into(),
            ));
        }
        tried.push("$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY are not set".into());
        // 2. Shared credentials file.
        let explicit_profile = c.profile.clone().or_else(|| env("AWS_PROFILE"));
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        if let Some(path) = path {
            let profile = explicit_profile.clone().unwrap_or_else(|| "default".into());
            match shared_file(&path, &profile)? {
                Some(creds) => {
                    let from = format!("profile '{profile}' of {}", path.display());
                    return Ok(Self::fixed(creds, from));
                }
                None if explicit_profile.is_some() => {
                    return Err(config(format!(
                        "profile '{profile}' (kms.lux.aws-kms.profile or $AWS_PROFILE) has no \
                         aws_access_key_id and aws_secret_access_key in {}",
                        path.display()
                    )));
                }
                None => tried.push(format!(
                    "{} cannot be read or has no profile 'default'",
                    path.display()
                )),
            }
        }
        // 3. Web identity: not supported yet.
        if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
            tried.push(
                "$AWS_WEB_IDENTITY_TOKEN_FILE is set, but web identity \
                 (AssumeRoleWithWebIdentity) is not supported yet"
                    .into(),
            );
        }
        // 4. Container endpoint.
        let container = match (
            env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(rel), _) => Some(format!("{ECS_ENDPOINT}{rel}")),
            (None, Some(full)) => {
                check_container_url(&full)?;
                Some(full)
            }
            (None, None) => None,
        };
        if let Some(url) = container {
            let token = match (
                env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            ) {
                (Some(file), _) => ContainerToken::File(file.into()),
                (None, Some(v)) => ContainerToken::Value(ConfigSecret::new(v)),
                (None, None) => ContainerToken::None,
            };
            let source = Source::Container {
                http: metadata_http(),
                url: url.clone(),
                token,
            };
            // The endpoint is set: its failure is the error (as in the SDKs), not a reason to
            // try the instance metadata service.
            return Self::fetched(source, format!("the container credentials endpoint {url}"));
        }
        tried.push("no container credentials endpoint is set".into());
        // 5. Instance metadata service.
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            tried.push("the instance metadata service is disabled".into());
        } else {
            let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| IMDS_ENDPOINT.into())
                .trim_end_matches('/')
                .to_owned();
            let source = Source::Imds {
                http: metadata_http(),
                endpoint: endpoint.clone(),
            };
            match Self::fetched(
                source,
                format!("the instance metadata service at {endpoint}"),
            ) {
                Ok(chain) => return Ok(chain),
                Err(e) => tried.push(e.message().to_owned()),
            }
        }
        Err(config(format!("no credentials: {}", tried.join("; "))))
    }

    /// Where the credentials come from, for messages.
    pub(crate) fn source(&self) -> &str {
        &self.describe
    }

    /// The credentials to sign with now, fetched again when they near their expiry.
    pub(crate) fn current(&self) -> Result<Arc<Credentials>> {
        let now = OffsetDateTime::now_utc();
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.refresh_at.is_none_or(|at| now < at) {
                return Ok(cur.creds.clone());
            }
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.refresh_at.is_none_or(|at| now < at) {
            return Ok(cur.creds.clone()); // another thread refreshed them
        }
        match self.source.fetch() {
            Ok(fresh) => {
                tracing::debug!(source = %self.describe, "AWS credentials refreshed");
                *cur = fresh;
                Ok(cur.creds.clone())
            }
            Err(e) if cur.expires.is_some_and(|x| now < x) => {
                tracing::warn!(source = %self.describe, "could not refresh AWS credentials, using the current ones until they expire: {e}");
                Ok(cur.creds.clone())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the credentials can be fetched again (temporary ones).
    pub(crate) fn refreshable(&self) -> bool {
        !matches!(self.source, Source::Static)
    }

    /// Fetch anew at the next [`CredentialChain::current`] (the service said they expired).
    pub(crate) fn invalidate(&self) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if self.refreshable() {
            cur.refresh_at = Some(OffsetDateTime::UNIX_EPOCH);
            cur.expires = None;
        }
    }

    fn fixed(creds: Credentials, describe: String) -> Self {
        Self {
            source: Source::Static,
            describe,
            current: RwLock::new(Current {
                creds: Arc::new(creds),
                refresh_at: None,
                expires: None,
            }),
        }
    }

    fn fetched(source: Source, describe: String) -> Result<Self> {
        let current = source.fetch()?;
        Ok(Self {
            source,
            describe,
            current: RwLock::new(current),
        })
    }
}

impl Source {
    fn fetch(&self) -> Result<Current> {
        match self {
            Source::Static => Err(Error::internal("static credentials are not fetched")),
            Source::Container { http, url, token } => {
                let auth = match token {
                    ContainerToken::None => None,
                    ContainerToken::Value(v) => Some(Zeroizing::new(v.expose().to_owned())),
                    ContainerToken::File(p) => {
                        let t = Zeroizing::new(std::fs::read_to_string(p).map_err(|e| {
                            config(format!(
                                "the container authorization token file {} \
                                 ($AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) cannot be read",
                                p.display()
                            ))
                            .with_source(e)
                        })?);
                        Some(Zeroizing::new(t.trim().to_owned()))
                    }
                };
                let what = || format!("fetching credentials from the container endpoint {url}");
                let reply = http.send(
                    &what,
                    &|| {
                        let mut b = ureq::http::Request::builder().method("GET").uri(url);
                        if let Some(a) = &auth {
                            b = b.header("Authorization", a.as_str());
                        }
                        b.body(Vec::new()).map_err(|e| {
                            config(format!(
                                "the container credentials URI {url} is not valid ({e})"
                            ))
                        })
                    },
                    &judge,
                )?;
                if reply.status != 200 {
                    return Err(config(format!(
                        "{}: HTTP {}{}",
                        what(),
                        reply.status,
                        if matches!(reply.status, 401 | 403) {
                            " (the authorization token was refused)"
                        } else {
                            ""
                        }
                    )));
                }
                parse(&reply, &what())
            }
            Source::Imds { http, endpoint } => {
                let what = |step: &str| {
                    format!(
                        "fetching credentials from the instance metadata service at {endpoint} ({step})"
                    )
                };
                let token_url = format!("{endpoint}/latest/api/token");
                let reply = http.send(
                    &|| what("PUT /latest/api/token"),
                    &|| {
                        ureq::http::Request::builder()
                            .method("PUT")
                            .uri(&token_url)
                            .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL)
                            .body(Vec::new())
                            .map_err(|e| config(format!("{token_url} is not valid ({e})")))
                    },
                    &judge,
                )?;
                if reply.status != 200 {
                    return Err(config(format!(
                        "{}: HTTP {} (IMDSv2 session tokens are refused; IMDSv1 is not used)",
                        what("PUT /latest/api/token"),
                        reply.status
                    )));
                }
                let token = Zeroizing::new(String::from_utf8_lossy(&reply.body).trim().to_owned());
                let get = |path: &str| -> Result<Reply> {
                    let url = format!("{endpoint}{path}");
                    http.send(
                        &|| what(&format!("GET {path}")),
                        &|| {
                            ureq::http::Request::builder()
                                .method("GET")
                                .uri(&url)
                                .header("x-aws-ec2-metadata-token", token.as_str())
                                .body(Vec::new())
                                .map_err(|e| config(format!("{url} is not valid ({e})")))
                        },
                        &judge,
                    )
                };
                const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
                let roles = get(ROLES)?;
                if roles.status == 404 {
                    return Err(config(format!(
                        "{}: the instance has no IAM role (instance profile)",
                        what(&format!("GET {ROLES}"))
                    )));
                }
                if roles.status != 200 {
                    return Err(config(format!(
                        "{}: HTTP {}",
                        what(&format!("GET {ROLES}")),
                        roles.status
                    )));
                }
                let role = String::from_utf8_lossy(&roles.body)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        config(format!(
                            "{}: the instance has no IAM role (instance profile)",
                            what(&format!("GET {ROLES}"))
                        ))
                    })?;
                if !role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                {
                    return Err(config(format!(
                        "{}: not a role name",
                        what(&format!("GET {ROLES}"))
                    )));
                }
                let path = format!("{ROLES}{role}");
                let reply = get(&path)?;
                if reply.status != 200 {
                    return Err(config(format!(
                        "{}: HTTP {}",
                        what(&format!("GET {path}")),
                        reply.status
                    )));
                }
                parse(&reply, &what(&format!("GET {path}")))
            }
        }
    }
}

/// Retry what the metadata endpoints fail transiently (throttled or 5xx).
fn judge(r: &Reply) -> Verdict {
    match r.status {
        429 => Verdict::Throttled,
        500 | 502 | 503 | 504 => Verdict::Retry,
        _ => Verdict::Done,
    }
}

/// Short timeouts, as the SDKs use for the metadata endpoints (1 s connect, 2 s per call, one
/// retry): a host without them must not wait long to learn so.
fn metadata_http() -> Http {
    Http::new(
        SERVICE,
        &RemoteTuning {
            wrapped_key_cache: Duration::ZERO,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_retries: 1,
            signing_keys: RemoteSigningKeys::default(),
        },
    )
}

/// The JSON both endpoints answer: `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`
/// (and IMDS's `Code`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Temporary {
    #[serde(default)]
    code: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret_access_key);
        if let Some(t) = &mut self.token {
            zeroize::Zeroize::zeroize(t);
        }
    }
}

fn parse(reply: &Reply, what: &str) -> Result<Current> {
    let mut t: Temporary = serde_json::from_slice(&reply.body).map_err(|_| {
        config(format!(
            "{what}: the answer has no AccessKeyId and SecretAccessKey"
        ))
    })?;
    if t.code.as_deref().is_some_and(|c| c != "Success") {
        return Err(config(format!(
            "{what}: the answer's Code is {}",
            t.code.as_deref().unwrap_or_default()
        )));
    }
    let now = OffsetDateTime::now_utc();
    let expires = match t.expiration.as_deref() {
        None => None,
        Some(x) => Some(
            OffsetDateTime::parse(x, &time::format_description::well_known::Rfc3339).map_err(
                |_| {
                    config(format!(
                        "{what}: the Expiration {x:?} is not an RFC 3339 time"
                    ))
                },
            )?,
        ),
    };
    if expires.is_some_and(|x| x <= now) {
        return Err(config(format!(
            "{what}: the credentials have already expired"
        )));
    }
    let refresh_at = expires.map(|x| {
        let early = x - REFRESH_BEFORE;
        if early > now {
            early
        } else {
            now + (x - now) / 2
        }
    });
    Ok(Current {
        creds: Arc::new(Credentials {
            access_key_id: std::mem::take(&mut t.access_key_id),
            secret_access_key: ConfigSecret::new(std::mem::take(&mut t.secret_access_key)),
            session_token: t.token.take().map(ConfigSecret::new),
        }),
        refresh_at,
        expires,
    })
}

/// The profile's keys in the shared credentials file, `None` if the file cannot be read or the
/// profile lacks them.
fn shared_file(path: &std::path::Path, profile: &str) -> Result<Option<Credentials>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let text = Zeroizing::new(text);
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(ConfigSecret::new(v)),
                "aws_session_token" => token = Some(ConfigSecret::new(v)),
                _ => {}
            }
        }
    }
    Ok(match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => None,
    })
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` must be https, or http to loopback or to the ECS/EKS
/// addresses (as the SDKs require).
fn check_container_url(url: &str) -> Result<()> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(""))
        .map(|h| {
            if h.starts_with('[') {
                h.split(']').next().unwrap_or("").trim_start_matches('[')
            } else {
                h.rsplit_once(':').map_or(h, |(h, _)| h)
            }
        });
    let allowed = host.is_some_and(|h| {
        h == "localhost"
            || h == "::1"
            || h.starts_with("127.")
            || h == "169.254.170.2"
            || h == "169.254.170.23"
            || h.eq_ignore_ascii_case("fd00:ec2::23")
    });
    if allowed {
        Ok(())
    } else {
        Err(config(format!(
            "$AWS_CONTAINER_CREDENTIALS_FULL_URI {url:?} must be https://, or http:// to a \
             loopback address or the ECS/EKS credentials address"
        )))
    }
}

fn config(m: String) -> Error {
    Error::new(ErrorKind::Config, format!("{SERVICE}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_full_uri_must_be_https_or_local() {
        assert!(check_container_url("https://creds.example.com/x").is_ok());
        assert!(check_container_url("http://127.0.0.1:8080/creds").is_ok());
        assert!(check_container_url("http://169.254.170.23/v1/credentials").is_ok());
        assert!(check_container_url("http://[fd00:ec2::23]/v1/credentials").is_ok());
        let e = check_container_url("http://creds.example.com/x").unwrap_err();
        assert!(e.message().contains("AWS KMS") && e.message().contains("FULL_URI"));
    }

    #[test]
    fn nothing_in_the_chain_says_what_was_tried() {
        let e = CredentialChain::resolve(&AwsKmsConfig::default(), &|n| match n {
            "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent/credentials".into()),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            "AWS_WEB_IDENTITY_TOKEN_FILE" => Some("/var/run/token".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let m = e.message();
        for part in [
            "AWS KMS: no credentials",
            "$AWS_ACCESS_KEY_ID",
            "/nonexistent/credentials",
            "web identity",
            "not supported yet",
            "container",
            "instance metadata service is disabled",
        ] {
            assert!(m.contains(part), "{part:?} missing in {m}");
        }
    }

    #[test]
    fn temporary_credentials_are_refreshed_before_they_expire() {
        let reply = |exp: OffsetDateTime| {
            Reply {
            status: 200,
            body: Zeroizing::new(
                format!(
                    r#"{{"AccessKeyId":"AKIA","SecretAccessKey":"s","Token":"t","Expiration":"{}"}}"#,
                    exp.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                )
                .into_bytes(),
            ),
        }
        };
        let now = OffsetDateTime::now_utc();
        let c = parse(&reply(now + time::Duration::hours(1)), "x").unwrap();
        let at = c.refresh_at.unwrap();
        assert!(at > now + time::Duration::minutes(54) && at < now + time::Duration::minutes(56));
        // Shorter-lived than the margin: halfway.
        let c = parse(&reply(now + time::Duration::minutes(4)), "x").unwrap();
        let at = c.refresh_at.unwrap();
        assert!(at > now + time::Duration::seconds(110) && at < now + time::Duration::seconds(130));
        assert_eq!(c.creds.session_token.as_ref().unwrap().expose(), "t");
        // Expired already: refused.
        let e = parse(&reply(now - time::Duration::minutes(1)), "x")
            .err()
            .unwrap();
        assert!(e.message().contains("expired"));
    }
}
