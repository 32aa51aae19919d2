//! API tokens: bearer credentials scoped to one tenant, with roles and optional key-name patterns
//! (DESIGN.md §5). Pipeline step 1 for the server.
//!
//! ```text
//! token  = "hkms_" ‖ id ‖ "_" ‖ secret        id = 16 hex chars (public), secret = base64url(32 random bytes)
//! stored = id, tenant, roles, patterns, description, times, and
//!          mac = Provider::mac("hanzo-kms/token/v1" ‖ 0x00 ‖ id ‖ 0x00 ‖ secret)
//! ```
//!
//! The token itself is shown once, at creation, and never stored or logged. The MAC is
//! HMAC-SHA256 under a provider-held key (inside the HSM where it can do HMAC), so a copy of the
//! database does not let anyone mint or check tokens offline. Every failure to authenticate gives
//! the same answer, whatever the reason (malformed, unknown id, wrong secret, revoked).

use std::fmt;

use base64::Engine;
use hanzo_kms_core::name::check_component;
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_store::StoredToken;

/// Why a bearer could not be checked when the token store is down (not a refusal).
const STORE_UNAVAILABLE: &str = "store unavailable";
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::{Principal, Role};
use crate::operation as op;
use crate::pipeline::{Call, Done, Target};
use crate::{Kms, RequestCtx, now_secs};

const PREFIX: &str = "hkms_";
/// The tenant of the service's own keys (the audit key): no token may be scoped to it.
pub const SYSTEM_TENANT: &str = "system";

/// The tenant of a token that may act for every tenant.
pub const ALL_TENANTS: &str = "*";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A freshly created token. Shown once; `Debug` never prints it.
pub struct ApiToken(Zeroizing<String>);

impl ApiToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// A token as reported (never the secret).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub patterns: Vec<String>,
    pub description: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    /// When the token stops working (seconds since the epoch); absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The longest lifetime a token may be given: ten years.
pub const MAX_TOKEN_TTL_SECS: u64 = 10 * 366 * 86_400;

impl From<&StoredToken> for TokenInfo {
    fn from(t: &StoredToken) -> Self {
        Self {
            id: t.id.clone(),
            tenant: t.tenant.clone(),
            roles: t.roles.clone(),
            patterns: t.patterns.clone(),
            description: t.description.clone(),
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_at,
            expires_at: t.expires_at,
        }
    }
}

impl Role {
    /// Parse a role name (`admin`, `audit`, `decrypt`, `encrypt`, `manage`, `sign`, `verify`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "admin" => Self::Admin,
            "audit" => Self::Audit,
            "decrypt" => Self::Decrypt,
            "encrypt" => Self::Encrypt,
            "manage" => Self::Manage,
            "sign" => Self::Sign,
            "verify" => Self::Verify,
            other => {
                return Err(Error::invalid(format!(
                    "'{other}' is not a role (admin, audit, decrypt, encrypt, manage, sign, verify)"
                )));
            }
        })
    }
}

/// Split a bearer token `hkms_<id>_<secret>` into its id (16 hex digits) and its secret; `None`
/// if it does not have that form. Nothing here looks at the secret, which only the MAC checks.
pub fn parse_token(bearer: &str) -> Option<(&str, &str)> {
    let rest = bearer.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 2 * ID_BYTES || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((id, secret))
}

/// Who a request is before its token is checked.
fn anonymous(peer: Option<String>, request_id: String) -> RequestCtx {
    RequestCtx {
        request_id,
        principal: Principal {
            id: "anonymous".into(),
            tenant: Some("-".into()),
            roles: Vec::new(),
            patterns: Vec::new(),
        },
        peer,
    }
}

fn unauthenticated() -> Error {
    Error::new(
        ErrorKind::Unauthenticated,
        "missing, malformed, unknown or revoked API token",
    )
}

/// Patterns are checked on every request the token makes: a bounded number, of bounded length.
const MAX_PATTERNS: usize = 32;
/// The longest key name (three parts of at most 128 characters and two separators).
const MAX_PATTERN_LEN: usize = 3 * hanzo_kms_core::name::MAX_COMPONENT_LEN + 2;

impl Kms {
    /// Create a token for `tenant`. The caller needs the admin role; a tenant-scoped admin may
    /// create tokens only for its own tenant and only with roles it has itself.
    pub async fn create_token(
        &self,
        ctx: &RequestCtx,
        tenant: &str,
        roles: &[Role],
        patterns: &[String],
        description: &str,
    ) -> Result<(TokenInfo, ApiToken)> {
        self.create_token_for(ctx, tenant, roles, patterns, description, None)
            .await
    }

    /// [`Kms::create_token`] with a lifetime: the token is refused (and the refusal audited as
    /// `expired token`) from `ttl_secs` seconds after now. `None`: until revoked.
    pub async fn create_token_for(
        &self,
        ctx: &RequestCtx,
        tenant: &str,
        roles: &[Role],
        patterns: &[String],
        description: &str,
        ttl_secs: Option<u64>,
    ) -> Result<(TokenInfo, ApiToken)> {
        self.run(ctx, &op::TOKEN_CREATE, Target::None(None), |call| {
            Box::pin(async move {
                call.kms
                    .create_token_in(call, tenant, roles, patterns, description, ttl_secs)
                    .await
            })
        })
        .await
    }

    async fn create_token_in(
        &self,
        call: &mut Call<'_>,
        tenant: &str,
        roles: &[Role],
        patterns: &[String],
        description: &str,
        ttl_secs: Option<u64>,
    ) -> Result<Done<(TokenInfo, ApiToken)>> {
        let ctx = call.ctx;
        {
            if let Some(ttl) = ttl_secs
                && !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl)
            {
                return Err(Error::invalid(format!(
                    "a token's lifetime (ttl) is 1 second to 10 years ({MAX_TOKEN_TTL_SECS} s), not {ttl} s"
                )));
            }
            if tenant == ALL_TENANTS {
                // An all-tenant token (the server's first admin token) acts like the local
                // operator; only an all-tenant principal may mint one.
                if ctx.principal.tenant.is_some() {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!("{} may not create all-tenant tokens", ctx.principal.id),
                    ));
                }
            } else {
                check_component("tenant", tenant)?;
                if tenant == SYSTEM_TENANT {
                    // Its keys are the service's own (the audit key): only an all-tenant
                    // principal may touch them.
                    return Err(Error::invalid(format!(
                        "the tenant '{SYSTEM_TENANT}' is reserved for the service's own keys (api:system:audit signs the audit checkpoints)"
                    )));
                }
            }
            if ctx.principal.tenant.as_deref().is_some_and(|t| t != tenant) {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "{} may create tokens only for its own tenant",
                        ctx.principal.id
                    ),
                ));
            }
            if roles.is_empty() {
                return Err(Error::invalid("a token needs at least one role (--role)"));
            }
            if tenant != ALL_TENANTS && roles.contains(&Role::Audit) {
                // It could do nothing: the audit log and its chain span all tenants.
                return Err(Error::invalid(
                    "the audit role needs an all-tenant token (--tenant '*'): the audit log spans all tenants",
                ));
            }
            if let Some(r) = roles.iter().find(|r| !ctx.principal.has_role(**r)) {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{} cannot grant the {r} role it lacks", ctx.principal.id),
                ));
            }
            if patterns.len() > MAX_PATTERNS {
                return Err(Error::invalid(format!(
                    "a token has at most {MAX_PATTERNS} key patterns; this one has {}",
                    patterns.len()
                )));
            }
            for p in patterns {
                self.check_pattern(tenant, p)?;
            }
            // A pattern-limited creator hands on at most its own reach: the new token must be
            // limited too, and only to patterns the creator has itself.
            let own = &ctx.principal.patterns;
            if !own.is_empty() {
                if patterns.is_empty() {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "{} is limited to keys {}; its tokens must be limited too (--keys)",
                            ctx.principal.id,
                            own.join(" ")
                        ),
                    ));
                }
                if let Some(p) = patterns.iter().find(|p| !own.contains(p)) {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "{} cannot grant key pattern {p} beyond its own",
                            ctx.principal.id
                        ),
                    ));
                }
            }
            if description.len() > 200 || description.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "a token description is at most 200 printable characters",
                ));
            }
            let mut id = [0u8; ID_BYTES];
            let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
            hanzo_kms_crypto::rng::fill(&mut id)?;
            hanzo_kms_crypto::rng::fill(secret.as_mut())?;
            let id = hex::encode(id);
            let secret =
                Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*secret));
            let mut role_names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
            role_names.sort();
            role_names.dedup();
            let stored = StoredToken {
                mac: self.token_mac(&id, &secret)?.to_vec(),
                id: id.clone(),
                tenant: tenant.to_owned(),
                roles: role_names,
                patterns: patterns.to_vec(),
                description: description.to_owned(),
                created_at: now_secs(),
                created_by: ctx.principal.id.clone(),
                revoked_at: None,
                expires_at: ttl_secs.map(|t| now_secs().saturating_add(t as i64)),
            };
            let mut tx = self.store.begin_write().await?;
            tx.insert_token(&stored).await?;
            call.name_record(format!("token:{id}"));
            let receipt = call.commit(tx).await?;
            let token = ApiToken(Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str())));
            Ok(Done::Committed((TokenInfo::from(&stored), token), receipt))
        }
    }

    /// Tokens the caller may see: all, or its own tenant's.
    pub async fn list_tokens(&self, ctx: &RequestCtx) -> Result<Vec<TokenInfo>> {
        self.run(ctx, &op::TOKEN_LIST, Target::None(None), |call| {
            Box::pin(async move {
                let tokens = call
                    .kms
                    .store
                    .list_tokens(call.ctx.principal.tenant.as_deref())
                    .await?;
                Ok(Done::Ok(tokens.iter().map(TokenInfo::from).collect()))
            })
        })
        .await
    }

    /// Revoke a token. A foreign tenant's token answers like a missing one.
    pub async fn revoke_token(&self, ctx: &RequestCtx, id: &str) -> Result<TokenInfo> {
        let about = format!("token:{id}");
        self.run(ctx, &op::TOKEN_REVOKE, Target::None(Some(&about)), |call| {
            Box::pin(async move { call.kms.revoke_token_in(call, id).await })
        })
        .await
    }

    async fn revoke_token_in(&self, call: &mut Call<'_>, id: &str) -> Result<Done<TokenInfo>> {
        let ctx = call.ctx;
        {
            let missing = || Error::new(ErrorKind::NotFound, format!("token {id} not found"));
            let t = self.store.token(id).await?.ok_or_else(missing)?;
            if ctx
                .principal
                .tenant
                .as_deref()
                .is_some_and(|own| own != t.tenant)
            {
                return Err(missing());
            }
            let mut tx = self.store.begin_write().await?;
            let now = now_secs();
            if !tx.revoke_token(id, now).await? {
                return Err(Error::new(
                    ErrorKind::KeyState,
                    format!("token {id} is already revoked"),
                ));
            }
            let receipt = call.commit(tx).await?;
            let mut info = TokenInfo::from(&t);
            info.revoked_at = Some(now);
            Ok(Done::Committed(info, receipt))
        }
    }

    /// Pipeline step 1: turn a bearer token into a request context. Every refusal is the same
    /// `unauthenticated` error; the reason goes to the audit log only. A store that cannot be
    /// reached is `unavailable` instead: a valid token is not refused because of a database blip.
    pub async fn authenticate(&self, bearer: &str, peer: Option<String>) -> Result<RequestCtx> {
        self.authenticate_as(bearer, peer, uuid::Uuid::new_v4().to_string())
            .await
    }

    /// [`Kms::authenticate`] with the caller's request id, so that an error body and the
    /// audit record of a refused request carry the same id.
    pub async fn authenticate_as(
        &self,
        bearer: &str,
        peer: Option<String>,
        request_id: String,
    ) -> Result<RequestCtx> {
        let anonymous = anonymous(peer, request_id);
        let addr = anonymous
            .peer
            .as_deref()
            .map(|p| crate::guard::address_of(p).to_owned());
        if let Some(a) = addr.as_deref() {
            // An address over its budget of failures is refused before any lookup; its quick
            // refusals are recorded once a second, and the rest when its block ends.
            let check = self.guard.check(a);
            if let Some(n) = check.record {
                let reason = format!("too_many_failures: {n} refused");
                self.record_refusal(&anonymous, &reason).await?;
            }
            if let Some(e) = check.refused {
                return Err(e);
            }
        }
        let reason = match self.check_bearer(bearer).await {
            Ok(principal) => {
                return Ok(RequestCtx {
                    principal,
                    ..anonymous
                });
            }
            // Not a refusal: the token could not be looked up. The caller may retry; nothing is
            // audited because the store that holds the audit log is the one that is down.
            Err(STORE_UNAVAILABLE) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the store is unreachable, so the request could not be authenticated",
                ));
            }
            Err(reason) => reason,
        };
        if let Some(a) = addr.as_deref() {
            self.guard.failed(a);
        }
        self.record_refusal(&anonymous, reason).await?;
        Err(unauthenticated())
    }

    /// Refuse a request whose credential cannot be read at all (the server: two
    /// `Authorization` headers): recorded and counted like a bad token, with `reason`. Returns
    /// the error for the caller (the audit failure if the record cannot be written).
    pub async fn refuse_credential(
        &self,
        peer: Option<String>,
        request_id: String,
        reason: &'static str,
    ) -> Error {
        let anonymous = anonymous(peer, request_id);
        if let Some(a) = anonymous.peer.as_deref() {
            self.guard.failed(crate::guard::address_of(a));
        }
        match self.record_refusal(&anonymous, reason).await {
            Ok(()) => unauthenticated(),
            Err(e) => e,
        }
    }

    /// Record the quick refusals of blocked addresses that no later request has carried into
    /// the log (the server runs this with its scheduler).
    pub async fn record_unrecorded_refusals(&self) -> Result<()> {
        for (addr, n) in self.guard.unrecorded() {
            let anonymous = anonymous(Some(addr), uuid::Uuid::new_v4().to_string());
            self.record_refusal(&anonymous, &format!("too_many_failures: {n} refused"))
                .await?;
        }
        Ok(())
    }

    async fn record_refusal(&self, anonymous: &RequestCtx, reason: &str) -> Result<()> {
        self.audit_event_only(crate::audit_event(
            anonymous,
            "authenticate",
            None,
            None,
            "denied",
            Some(reason),
        ))
        .await
    }

    async fn check_bearer(&self, bearer: &str) -> std::result::Result<Principal, &'static str> {
        let (id, secret) = parse_token(bearer).ok_or("malformed token")?;
        let found = self.store.token(id).await.map_err(|_| STORE_UNAVAILABLE)?;
        // The MAC is computed whether or not the id exists, so timing does not tell them apart.
        let mac = self
            .token_mac(id, secret)
            .map_err(|_| "provider unavailable")?;
        let t = found.ok_or("unknown token id")?;
        if !crate::bootstrap::subtle_eq(&mac, &t.mac) {
            return Err("wrong token secret");
        }
        if t.revoked_at.is_some() {
            return Err("revoked token");
        }
        if t.expires_at.is_some_and(|at| now_secs() >= at) {
            return Err("expired token");
        }
        let roles = t
            .roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| "stored token has an unknown role")?;
        Ok(Principal {
            id: format!("token:{}", t.id),
            tenant: (t.tenant != ALL_TENANTS).then_some(t.tenant),
            roles,
            patterns: t.patterns,
        })
    }

    fn token_mac(&self, id: &str, secret: &str) -> Result<[u8; 32]> {
        let mut msg = Zeroizing::new(Vec::with_capacity(64 + secret.len()));
        msg.extend_from_slice(b"hanzo-kms/token/v1\0");
        msg.extend_from_slice(id.as_bytes());
        msg.push(0);
        msg.extend_from_slice(secret.as_bytes());
        self.device(|p| p.mac(&msg))
    }

    /// A token's key pattern: `purpose:tenant:name`, where purpose and name may contain `*` and
    /// the tenant must be the token's own, literally.
    fn check_pattern(&self, tenant: &str, pattern: &str) -> Result<()> {
        let sep = self.config.separator().as_char();
        let parts: Vec<&str> = pattern.split(sep).collect();
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(Error::invalid(format!(
                "a key pattern is at most {MAX_PATTERN_LEN} characters; this one has {}",
                pattern.len()
            )));
        }
        let bad = |why: &str| Error::invalid(format!("key pattern '{pattern}': {why}"));
        if parts.len() != 3 {
            return Err(bad(&format!(
                "expected purpose{sep}{tenant}{sep}name, with * allowed in purpose and name"
            )));
        }
        if parts[1] != tenant {
            return Err(bad(&format!("the tenant part must be '{tenant}'")));
        }
        for p in [parts[0], parts[2]] {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c == '*' || c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(bad("use letters, digits, '.', '_', '-' and '*'"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_splits_into_id_and_secret_and_nothing_else_parses() {
        let t = "hkms_0123456789abcdef_c2VjcmV0_with-dash";
        assert_eq!(
            parse_token(t),
            Some(("0123456789abcdef", "c2VjcmV0_with-dash"))
        );
        for bad in [
            "",
            "hkms_",
            "hkms_0123456789abcdef",
            "hkms_0123456789abcde_x",
            "hkms_0123456789abcdeg_x",
            "HKMS_0123456789abcdef_x",
            "hkms_0123456789abcdéf_x",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
