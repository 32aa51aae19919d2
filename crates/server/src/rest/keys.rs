//! REST handlers: keys and keyspaces.

use axum::extract::{Query, State};
use hanzo_kms_core::eip712::present;
use hanzo_kms_core::{Algorithm, Error};
use serde::Deserialize;

use crate::error::*;
use crate::extract::*;
use crate::server::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    name: String,
    #[serde(default, deserialize_with = "present")]
    algorithm: Option<String>,
    #[serde(default, deserialize_with = "present")]
    rotation_days: Option<u32>,
}

pub(crate) async fn create_key(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: CreateKey = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&req.name))?;
    let alg = match req.algorithm {
        Some(a) => Some(check(&ctx, a.parse::<Algorithm>())?),
        None => None,
    };
    ok(on(
        &ctx,
        s.kms.create_key(&ctx, &name, alg, req.rotation_days).await,
    )?)
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    prefix: String,
}

pub(crate) async fn list_keys(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::refused(Error::invalid(e.body_text()), &ctx))?;
    ok(on(&ctx, s.kms.list_keys(&ctx, &q.prefix).await)?)
}

pub(crate) async fn show_key(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
) -> ApiResult {
    let name = name.get(&ctx)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    ok(on(&ctx, s.kms.show_key(&ctx, &name).await)?)
}

/// Rotation takes no options: its body is empty or `{}`, and anything else is refused rather
/// than ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateReq {}

pub(crate) async fn rotate_key(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> ApiResult {
    let name = name.get(&ctx)?;
    if !matches!(&body, Ok(b) if b.iter().all(u8::is_ascii_whitespace)) {
        let RotateReq {} = parse(&ctx, body)?;
    }
    let name = check(&ctx, s.kms.parse_name(&name))?;
    ok(on(&ctx, s.kms.rotate_key(&ctx, &name).await)?)
}

pub(crate) async fn public_key(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
) -> ApiResult {
    let name = name.get(&ctx)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    ok(on(&ctx, s.kms.public_key(&ctx, &name).await)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyspaceReq {
    customer: String,
    model: String,
    #[serde(default = "yes")]
    signing_keys: bool,
}

pub(crate) fn yes() -> bool {
    true
}

pub(crate) async fn create_keyspace(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: KeyspaceReq = parse(&ctx, body)?;
    ok(on(
        &ctx,
        s.kms
            .create_keyspace(&ctx, &req.customer, &req.model, req.signing_keys)
            .await,
    )?)
}

request_bodies! {
    CreateKey => "/v1/keys",
    RotateReq => "/v1/keys/{name}/rotate",
    KeyspaceReq => "/v1/keyspaces",
}
