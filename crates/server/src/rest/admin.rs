//! REST handlers: the audit log and API tokens.

use axum::extract::{Query, State};
use hanzo_kms_core::{Error, Result};
use hanzo_kms_service::Role;
use serde::Deserialize;
use serde_json::Value;

use crate::error::*;
use crate::extract::*;
use crate::rest::data::{SecretResult, secret_json};
use crate::server::*;

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "hundred")]
    limit: u32,
}

pub(crate) fn hundred() -> u32 {
    100
}

pub(crate) async fn audit_list(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    q: std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::refused(Error::invalid(e.body_text()), &ctx))?;
    let records = on(
        &ctx,
        s.kms.audit_records(&ctx, q.after, q.limit.min(1000)).await,
    )?;
    ok(records.iter().map(|r| r.to_json()).collect::<Vec<_>>())
}

pub(crate) async fn audit_verify(State(s): State<Shared>, Authed(ctx): Authed) -> ApiResult {
    ok(on(&ctx, s.kms.audit_verify(&ctx).await)?.to_json())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenReq {
    tenant: String,
    roles: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    description: String,
    /// Seconds until the token stops working; absent: until revoked.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

pub(crate) async fn create_token(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> SecretResult {
    let req: TokenReq = parse(&ctx, body)?;
    let roles = check(
        &ctx,
        req.roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>>>(),
    )?;
    let (info, token) = on(
        &ctx,
        s.kms
            .create_token_for(
                &ctx,
                &req.tenant,
                &roles,
                &req.patterns,
                &req.description,
                req.ttl_secs,
            )
            .await,
    )?;
    // The answer carries the token's secret: written with `secret_json` (one buffer of its
    // exact size, wiped when hyper is done with it), and the JSON value wiped after.
    let mut v = serde_json::to_value(&info)
        .map_err(|e| ApiError::new(Error::internal(e.to_string()), &ctx.request_id))?;
    v["token"] = Value::String(token.expose().to_owned());
    let answer = secret_json(&v);
    hanzo_kms_core::secret::wipe_json(&mut v);
    answer
}

pub(crate) async fn list_tokens(State(s): State<Shared>, Authed(ctx): Authed) -> ApiResult {
    ok(on(&ctx, s.kms.list_tokens(&ctx).await)?)
}

pub(crate) async fn revoke_token(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    id: Param,
) -> ApiResult {
    let id = id.get(&ctx)?;
    ok(on(&ctx, s.kms.revoke_token(&ctx, &id).await)?)
}

request_bodies! {
    TokenReq => "/v1/tokens",
}
