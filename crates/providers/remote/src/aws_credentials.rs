//! AWS credentials from the standard chain, in the order the AWS SDKs (Rust, Java v2) document
//! for their default chain; the first source that has credentials is used:
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//! 2. the profile (`profile` of the config section, else `AWS_PROFILE`, else `default`) in the
//!    shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`)
//!    and config file (`AWS_CONFIG_FILE`, default `~/.aws/config`), read by
//!    `aws_profile`; within the profile, the first that applies:
//!    - `role_arn` + `web_identity_token_file` (+ `role_session_name`): STS
//!      `AssumeRoleWithWebIdentity`;
//!    - `role_arn` + `source_profile` (+ `external_id`, `role_session_name`,
//!      `duration_seconds`): STS `AssumeRole`, SigV4-signed with the source profile's
//!      credentials (resolved the same way; a source profile's own static keys end the chain;
//!      at most `MAX_ROLE_CHAIN` (8) links, no cycles). `credential_source` and `mfa_serial` are
//!      not supported;
//!    - static keys: `aws_access_key_id`, `aws_secret_access_key` (+ `aws_session_token`);
//!    - IAM Identity Center (SSO): `sso_session` (with `[sso-session NAME]`'s `sso_start_url`
//!      and `sso_region`) or legacy `sso_start_url` + `sso_region`, and `sso_account_id`,
//!      `sso_role_name`: the token `aws sso login` cached in
//!      `~/.aws/sso/cache/<hex SHA-1 of the session name or start URL>.json`, exchanged at the
//!      portal's `GetRoleCredentials` (`$AWS_ENDPOINT_URL_SSO`, `$AWS_ENDPOINT_URL`, else
//!      `https://portal.sso.<sso_region>.amazonaws.com`). An expired token is an error saying to
//!      log in again: it is not refreshed through SSO OIDC;
//!    - `credential_process`: a command printing credentials as JSON (`aws_process`:
//!      split into words without a shell, 30 s timeout).
//!
//!    A profile named explicitly must exist and have credentials; `default` may be absent;
//! 3. web identity from the environment: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (+ `AWS_ROLE_SESSION_NAME`), STS `AssumeRoleWithWebIdentity` (`aws_sts`); the
//!    token file is read again at each fetch (EKS rotates it);
//! 4. the ECS/EKS container credentials endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on
//!    `http://169.254.170.2`) or `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with the `Authorization`
//!    header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at each fetch: EKS Pod Identity
//!    rotates it) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 5. the EC2 instance metadata service, IMDSv2 only: `PUT /latest/api/token`, then
//!    `GET /latest/meta-data/iam/security-credentials/` (the role) and `…/<role>`, at
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` (default `http://169.254.169.254`) unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! STS is called in AWS KMS's region, at `$AWS_ENDPOINT_URL_STS`, `$AWS_ENDPOINT_URL`, or
//! `https://sts.<region>.amazonaws.com` (`AWS_STS_REGIONAL_ENDPOINTS=legacy`: the global
//! endpoint). A source that is configured but fails (web identity, a role, SSO, a process, the
//! container endpoint) is the error; the chain does not go on past it.
//!
//! Temporary credentials (every source but 1 and static keys; a `credential_process` answer
//! without `Expiration` does not expire) are fetched again [`REFRESH_BEFORE`] before their
//! expiry (or, for credentials that live shorter, halfway), and at once after the service
//! answers `ExpiredTokenException`. A failed refresh keeps the old credentials while they are
//! still valid. Secrets stay in zeroizing memory ([`ConfigSecret`], `Zeroizing`); `Debug` and
//! errors show where the credentials came from, never them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hanzo_kms_core::config::{AwsKmsConfig, ConfigSecret, RemoteSigningKeys, RemoteTuning};
use hanzo_kms_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aws_process::Process;
use crate::aws_profile::{AwsFiles, Profile};
use crate::aws_sts::{AssumeRole, Sts};
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

/// What resolving needs besides the files.
struct Ctx<'a> {
    region: &'a str,
    tuning: RemoteTuning,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// The sources, for the "no credentials" error.
const SUPPORTED: &str = "tried, in order: the environment; the profile in the shared credentials \
                         and config files (role_arn with web_identity_token_file or \
                         source_profile, static keys, IAM Identity Center (SSO), \
                         credential_process); web identity from the environment; the container \
                         credentials endpoint; the instance metadata service";
/// The most `source_profile` links followed.
const MAX_ROLE_CHAIN: usize = 8;

/// The `RoleSessionName` when none is configured: `hanzo-kms-<unix seconds>`.
fn session_name_default() -> String {
    format!("hanzo-kms-{}", OffsetDateTime::now_utc().unix_timestamp())
}

enum Source {
    /// `role_arn` + `source_profile`: STS `AssumeRole` signed with the source's credentials.
    AssumeRole {
        sts: Sts,
        role_arn: String,
        session_name: String,
        external_id: Option<ConfigSecret>,
        duration: Option<u32>,
        source: Box<CredentialChain>,
    },
    Container {
        http: Http,
        url: String,
        token: ContainerToken,
    },
    Imds {
        http: Http,
        endpoint: String,
    },
    /// `credential_process`.
    Process(Process),
    /// IAM Identity Center: the cached token, then the portal's `GetRoleCredentials`.
    Sso(Sso),
    Static,
    /// STS `AssumeRoleWithWebIdentity` with the token file's content, read at each fetch.
    WebIdentity {
        sts: Sts,
        role_arn: String,
        session_name: String,
        token_file: PathBuf,
        /// What named the file ("$AWS_WEB_IDENTITY_TOKEN_FILE", "web_identity_token_file of …").
        named_by: String,
    },
}

enum ContainerToken {
    None,
    Value(ConfigSecret),
    File(PathBuf),
}

impl CredentialChain {
    /// Walk the chain (see the module doc) and fetch the first credentials found. `region` is
    /// the one AWS KMS is called in (STS is called there too); `files` are the shared files.
    pub(crate) fn resolve(
        c: &AwsKmsConfig,
        region: &str,
        files: &AwsFiles,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let ctx = Ctx {
            region,
            tuning: c.tuning(),
            env,
        };
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
        // 2. The profile, in the shared credentials and config files.
        files.check()?;
        let name = files.profile.as_str();
        match Self::from_profile(files, name, &ctx, &mut Vec::new())? {
            Some(chain) => return Ok(chain),
            None if files.explicit => {
                let why = match files.get(name) {
                    Some(p) => format!("{} has no credential settings", p.location()),
                    None => format!("there is no profile '{name}' in {}", files.describe()),
                };
                return Err(config(format!(
                    "{why} (the profile is named by kms.lux.aws-kms.profile or $AWS_PROFILE)"
                )));
            }
            None => tried.push(match files.get(name) {
                Some(p) => format!("{} has no credential settings", p.location()),
                None => format!("there is no profile 'default' in {}", files.describe()),
            }),
        }
        // 3. Web identity from the environment.
        match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
            (Some(file), Some(role)) => {
                // Set: its failure is the error, as in the SDKs.
                return Self::web_identity(
                    &ctx,
                    role,
                    env("AWS_ROLE_SESSION_NAME"),
                    file.into(),
                    "$AWS_WEB_IDENTITY_TOKEN_FILE",
                );
            }
            (Some(_), None) => {
                return Err(config(
                    "$AWS_WEB_IDENTITY_TOKEN_FILE is set but $AWS_ROLE_ARN is not (web identity \
                     needs the role to assume)"
                        .into(),
                ));
            }
            (None, _) => tried.push("$AWS_WEB_IDENTITY_TOKEN_FILE is not set".into()),
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
        Err(config(format!(
            "no credentials ({SUPPORTED}): {}",
            tried.join("; ")
        )))
    }

    /// The credentials profile `name` defines, `None` if it defines none. `seen` holds the
    /// profiles whose `source_profile` led here (non-empty: `name` is a source profile).
    fn from_profile(
        files: &AwsFiles,
        name: &str,
        ctx: &Ctx<'_>,
        seen: &mut Vec<String>,
    ) -> Result<Option<Self>> {
        let Some(p) = files.get(name) else {
            return Ok(None);
        };
        let at = p.location();
        let statics = match (
            p.value("aws_access_key_id"),
            p.value("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.to_owned(),
                secret_access_key: ConfigSecret::new(secret),
                session_token: p.value("aws_session_token").map(ConfigSecret::new),
            }),
            (Some(_), None) => {
                return Err(config(format!(
                    "{at} has aws_access_key_id but no aws_secret_access_key"
                )));
            }
            (None, Some(_)) => {
                return Err(config(format!(
                    "{at} has aws_secret_access_key but no aws_access_key_id"
                )));
            }
            (None, None) => None,
        };
        // A source profile's own keys end the chain (the SDKs' rule), even beside a role_arn.
        if !seen.is_empty()
            && let Some(creds) = statics
        {
            return Ok(Some(Self::fixed(creds, at)));
        }
        if let Some(role) = p.value("role_arn") {
            let session = p.value("role_session_name").map(str::to_owned);
            if let Some(file) = p.value("web_identity_token_file") {
                return Self::web_identity(
                    ctx,
                    role.to_owned(),
                    session,
                    file.into(),
                    &format!("web_identity_token_file of {at}"),
                )
                .map(Some);
            }
            if p.value("mfa_serial").is_some() {
                return Err(config(format!(
                    "{at}: role assumption with mfa_serial is not supported (there is no terminal \
                     to ask for the code on; a credential_process can do it)"
                )));
            }
            let Some(src) = p.value("source_profile") else {
                if p.value("credential_source").is_some() {
                    return Err(config(format!(
                        "{at}: role_arn with credential_source is not supported (use \
                         source_profile, or web_identity_token_file)"
                    )));
                }
                return Err(config(format!(
                    "{at}: role_arn needs source_profile or web_identity_token_file"
                )));
            };
            let source = if src == name {
                let creds = statics.ok_or_else(|| {
                    config(format!(
                        "{at}: source_profile names the profile itself, which has no \
                         aws_access_key_id and aws_secret_access_key"
                    ))
                })?;
                Self::fixed(creds, at.clone())
            } else if seen.iter().any(|s| s == src) || seen.len() >= MAX_ROLE_CHAIN {
                return Err(config(format!(
                    "{at}: source_profile '{src}' leads back to a profile already in the \
                     chain ({} -> {name} -> {src}) or the chain is longer than {MAX_ROLE_CHAIN}",
                    seen.join(" -> ")
                )));
            } else {
                seen.push(name.to_owned());
                let source = Self::from_profile(files, src, ctx, seen)?;
                seen.pop();
                source.ok_or_else(|| {
                    config(match files.get(src) {
                        Some(s) => format!(
                            "{at}: its source_profile, {}, has no credential settings",
                            s.location()
                        ),
                        None => format!(
                            "{at}: its source_profile: there is no profile '{src}' in {}",
                            files.describe()
                        ),
                    })
                })?
            };
            let duration = match p.value("duration_seconds") {
                None => None,
                Some(d) => Some(
                    d.parse::<u32>()
                        .ok()
                        .filter(|d| (900..=43_200).contains(d))
                        .ok_or_else(|| {
                            config(format!(
                                "{at}: duration_seconds {d:?} is not a number of seconds \
                                 from 900 to 43200"
                            ))
                        })?,
                ),
            };
            let sts = Sts::new(ctx.region, &ctx.tuning, ctx.env)?;
            let describe = format!(
                "role {role} assumed at {} with the credentials of {}",
                sts.endpoint(),
                source.describe
            );
            let src = Source::AssumeRole {
                sts,
                role_arn: role.to_owned(),
                session_name: session.unwrap_or_else(session_name_default),
                external_id: p.value("external_id").map(ConfigSecret::new),
                duration,
                source: Box::new(source),
            };
            return Self::fetched(src, describe).map(Some);
        }
        if let Some(creds) = statics {
            return Ok(Some(Self::fixed(creds, at)));
        }
        if p.value("sso_session").is_some() || p.value("sso_start_url").is_some() {
            let source = sso(files, &p, ctx)?;
            let describe = format!(
                "IAM Identity Center (SSO) role {} in account {} for {at}, at {}",
                source.role_name, source.account_id, source.portal
            );
            return Self::fetched(Source::Sso(source), describe).map(Some);
        }
        if let Some(command) = p.value("credential_process") {
            let process = Process::new(command, &at)?;
            let describe = process.describe().to_owned();
            return Self::fetched(Source::Process(process), describe).map(Some);
        }
        Ok(None)
    }

    fn web_identity(
        ctx: &Ctx<'_>,
        role_arn: String,
        session_name: Option<String>,
        token_file: PathBuf,
        named_by: &str,
    ) -> Result<Self> {
        let sts = Sts::new(ctx.region, &ctx.tuning, ctx.env)?;
        let describe = format!(
            "web identity (role {role_arn}, token file {}) at {}",
            token_file.display(),
            sts.endpoint()
        );
        Self::fetched(
            Source::WebIdentity {
                sts,
                role_arn,
                session_name: session_name.unwrap_or_else(session_name_default),
                token_file,
                named_by: named_by.to_owned(),
            },
            describe,
        )
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
            Source::AssumeRole {
                sts,
                role_arn,
                session_name,
                external_id,
                duration,
                source,
            } => {
                let ask = AssumeRole {
                    role_arn,
                    session_name,
                    external_id: external_id.as_ref().map(|x| x.expose()),
                    duration_seconds: *duration,
                };
                let issued = match sts.assume_role(&ask, &*source.current()?) {
                    // The source's temporary credentials expired early: fetch them and try again.
                    Err(e) if source.refreshable() && e.message().contains("ExpiredToken") => {
                        source.invalidate();
                        sts.assume_role(&ask, &*source.current()?)?
                    }
                    other => other?,
                };
                temporary(
                    issued.creds,
                    Some(&issued.expiration),
                    &format!("AssumeRole (role {role_arn}) at {}", sts.endpoint()),
                )
            }
            Source::Sso(s) => s.fetch(),
            Source::Process(p) => {
                let printed = p.run()?;
                temporary(printed.creds, printed.expiration.as_deref(), p.describe())
            }
            Source::WebIdentity {
                sts,
                role_arn,
                session_name,
                token_file,
                named_by,
            } => {
                let token = std::fs::read(token_file).map(Zeroizing::new).map_err(|e| {
                    config(format!(
                        "the web identity token file {} ({named_by}) cannot be read",
                        token_file.display()
                    ))
                    .with_source(e)
                })?;
                let token = Zeroizing::new(String::from_utf8_lossy(&token).trim().to_owned());
                if token.is_empty() {
                    return Err(config(format!(
                        "the web identity token file {} ({named_by}) is empty",
                        token_file.display()
                    )));
                }
                let issued = sts.assume_role_with_web_identity(role_arn, session_name, &token)?;
                temporary(
                    issued.creds,
                    Some(&issued.expiration),
                    &format!(
                        "AssumeRoleWithWebIdentity (role {role_arn}) at {}",
                        sts.endpoint()
                    ),
                )
            }
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
    let creds = Credentials {
        access_key_id: std::mem::take(&mut t.access_key_id),
        secret_access_key: ConfigSecret::new(std::mem::take(&mut t.secret_access_key)),
        session_token: t.token.take().map(ConfigSecret::new),
    };
    temporary(creds, t.expiration.as_deref(), what)
}

/// Credentials that expire at `expiration` (RFC 3339; `None`: never), with the time to fetch
/// them again.
fn temporary(creds: Credentials, expiration: Option<&str>, what: &str) -> Result<Current> {
    let expires = match expiration {
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
    temporary_at(creds, expires, what)
}

/// Credentials that expire at `expires` (`None`: never), with the time to fetch them again.
fn temporary_at(
    creds: Credentials,
    expires: Option<OffsetDateTime>,
    what: &str,
) -> Result<Current> {
    let now = OffsetDateTime::now_utc();
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
        creds: Arc::new(creds),
        refresh_at,
        expires,
    })
}

/// An IAM Identity Center (SSO) profile: `sso_session` (with `[sso-session NAME]`'s
/// `sso_start_url` and `sso_region`) or the legacy `sso_start_url` + `sso_region` in the profile,
/// plus `sso_account_id` and `sso_role_name`.
struct Sso {
    http: Http,
    /// The portal's base URL: `$AWS_ENDPOINT_URL_SSO`, `$AWS_ENDPOINT_URL`, else
    /// `https://portal.sso.<sso_region>.amazonaws.com`.
    portal: String,
    account_id: String,
    role_name: String,
    /// `~/.aws/sso/cache/<hex SHA-1 of the session name, or of the start URL (legacy)>.json`,
    /// written by `aws sso login`; read at each fetch.
    cache_file: PathBuf,
    /// The command that refreshes the cached token.
    login: String,
}

fn sso(files: &AwsFiles, p: &Profile<'_>, ctx: &Ctx<'_>) -> Result<Sso> {
    let at = p.location();
    let need = |v: Option<&str>, key: &str, whose: &str| {
        v.map(str::to_owned).ok_or_else(|| {
            config(format!(
                "{whose} uses IAM Identity Center (SSO) but has no {key}"
            ))
        })
    };
    let (region, cache_key) = match p.value("sso_session") {
        Some(session) => {
            let whose = format!("[sso-session {session}] (sso_session of {at})");
            let get = |k| {
                files.sso_session(session, k).map_err(|()| {
                    config(format!(
                        "{at}: its sso_session '{session}' has no [sso-session {session}] section in {}",
                        files.describe()
                    ))
                })
            };
            need(get("sso_start_url")?, "sso_start_url", &whose)?;
            (
                need(get("sso_region")?, "sso_region", &whose)?,
                session.to_owned(),
            )
        }
        None => (
            need(p.value("sso_region"), "sso_region", &at)?,
            need(p.value("sso_start_url"), "sso_start_url", &at)?,
        ),
    };
    let account_id = need(p.value("sso_account_id"), "sso_account_id", &at)?;
    let role_name = need(p.value("sso_role_name"), "sso_role_name", &at)?;
    let home = files.home.as_ref().ok_or_else(|| {
        config(format!(
            "{at} uses IAM Identity Center (SSO), whose token cache is under $HOME/.aws/sso/cache, \
             and $HOME is not set"
        ))
    })?;
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        cache_key.as_bytes(),
    );
    let cache_file = home
        .join(".aws/sso/cache")
        .join(format!("{}.json", hex::encode(digest.as_ref())));
    let env = |n: &str| (ctx.env)(n).filter(|v| !v.is_empty());
    let portal = env("AWS_ENDPOINT_URL_SSO")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://portal.sso.{region}.amazonaws.com"))
        .trim_end_matches('/')
        .to_owned();
    Ok(Sso {
        http: Http::new(SERVICE, &ctx.tuning),
        portal,
        account_id,
        role_name,
        cache_file,
        login: format!("aws sso login --profile {}", p.name),
    })
}

/// The part of the SSO token cache used here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SsoToken {
    access_token: String,
    expires_at: String,
}

impl Drop for SsoToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

/// `GetRoleCredentials`' answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// Milliseconds since the epoch.
    expiration: i64,
}

impl Drop for RoleCredentials {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret_access_key);
        zeroize::Zeroize::zeroize(&mut self.session_token);
    }
}

impl Sso {
    fn fetch(&self) -> Result<Current> {
        let file = self.cache_file.display();
        let login = &self.login;
        let text = match std::fs::read(&self.cache_file) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(config(format!(
                    "no IAM Identity Center (SSO) token is cached at {file}; run `{login}`"
                )));
            }
            Err(e) => {
                return Err(
                    config(format!("the SSO token cache {file} cannot be read")).with_source(e)
                );
            }
        };
        let token: SsoToken = serde_json::from_slice(&text).map_err(|_| {
            config(format!(
                "the SSO token cache {file} has no accessToken and expiresAt; run `{login}`"
            ))
        })?;
        let expires = OffsetDateTime::parse(
            &token.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| {
            config(format!(
                "the SSO token cache {file}: expiresAt is not an RFC 3339 time"
            ))
        })?;
        if expires <= OffsetDateTime::now_utc() {
            return Err(config(format!(
                "the IAM Identity Center (SSO) token cached at {file} has expired; run `{login}` \
                 (refreshing it with its refresh token is not supported)"
            )));
        }
        let mut url = format!("{}/federation/credentials?account_id=", self.portal);
        crate::aws_sts::encode(&self.account_id, &mut url);
        url.push_str("&role_name=");
        crate::aws_sts::encode(&self.role_name, &mut url);
        let what = || {
            format!(
                "GetRoleCredentials (role {}, account {}) at {}",
                self.role_name, self.account_id, self.portal
            )
        };
        let reply = self.http.send(
            &what,
            &|| {
                ureq::http::Request::builder()
                    .method("GET")
                    .uri(&url)
                    .header("x-amz-sso_bearer_token", token.access_token.as_str())
                    .body(Vec::new())
                    .map_err(|e| config(format!("{url} is not valid ({e})")))
            },
            &judge,
        )?;
        if reply.status != 200 {
            let hint = if matches!(reply.status, 401 | 403) {
                format!(
                    " (the cached SSO token was refused, or the role is not assigned; run `{login}`)"
                )
            } else {
                String::new()
            };
            return Err(config(format!(
                "{}: HTTP {}{hint} ({})",
                what(),
                reply.status,
                crate::http::error_text(&reply)
            )));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            role_credentials: RoleCredentials,
        }
        let mut a: Answer = serde_json::from_slice(&reply.body).map_err(|_| {
            config(format!(
                "{}: the answer has no roleCredentials with accessKeyId, secretAccessKey, \
                 sessionToken and expiration",
                what()
            ))
        })?;
        let rc = &mut a.role_credentials;
        let expires =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(rc.expiration) * 1_000_000)
                .map_err(|_| config(format!("{}: the expiration is out of range", what())))?;
        temporary_at(
            Credentials {
                access_key_id: std::mem::take(&mut rc.access_key_id),
                secret_access_key: ConfigSecret::new(std::mem::take(&mut rc.secret_access_key)),
                session_token: Some(ConfigSecret::new(std::mem::take(&mut rc.session_token))),
            },
            Some(expires),
            &what(),
        )
    }
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

    fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<CredentialChain> {
        let c = AwsKmsConfig::default();
        let files = AwsFiles::load(&c, env);
        CredentialChain::resolve(&c, "us-east-1", &files, env)
    }

    #[test]
    fn nothing_in_the_chain_says_what_was_tried() {
        let e = resolve(&|n| match n {
            "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent/credentials".into()),
            "AWS_CONFIG_FILE" => Some("/nonexistent/config".into()),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        let m = e.message();
        for part in [
            "AWS KMS: no credentials",
            "$AWS_ACCESS_KEY_ID",
            "no profile 'default' in /nonexistent/credentials and /nonexistent/config",
            "credential_process",
            "$AWS_WEB_IDENTITY_TOKEN_FILE is not set",
            "IAM Identity Center (SSO)",
            "container",
            "instance metadata service is disabled",
        ] {
            assert!(m.contains(part), "{part:?} missing in {m}");
        }
        // A token file without the role is an error of its own.
        let e = resolve(&|n| match n {
            "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent/credentials".into()),
            "AWS_WEB_IDENTITY_TOKEN_FILE" => Some("/var/run/token".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.message().contains("$AWS_ROLE_ARN is not"), "{e}");
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
