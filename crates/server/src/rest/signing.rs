//! REST handlers: general signing with `api:` keys, PoAI attestations and HMM settlements.

use axum::extract::State;
use hanzo_kms_core::Error;
use hanzo_kms_core::eip712::present;
use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation};
use hanzo_kms_service::sign::{BatchItem, Paid, SignedAttestation, SignedSettlement};
use hanzo_kms_service::{RequestCtx, now_secs};
use serde::Deserialize;
use serde_json::json;

use crate::error::*;
use crate::extract::*;
use crate::server::*;

/// `{"message": b64}` or `{"messages": [b64…]}`, and `prehashed` for a secp256k1 or p256 digest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignReq {
    #[serde(default, deserialize_with = "present")]
    message: Option<String>,
    #[serde(default, deserialize_with = "present")]
    messages: Option<Vec<String>>,
    #[serde(default)]
    prehashed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyItem {
    message: String,
    signature: String,
}

/// `{"message": b64, "signature": "0x…"}` or `{"items": [{message, signature}…]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyReq {
    #[serde(default, deserialize_with = "present")]
    message: Option<String>,
    #[serde(default, deserialize_with = "present")]
    signature: Option<String>,
    #[serde(default, deserialize_with = "present")]
    items: Option<Vec<VerifyItem>>,
    #[serde(default)]
    prehashed: bool,
}

/// A signature as text: `0x`-hex (what `sign` returns) or base64.
pub(crate) fn signature_bytes(
    ctx: &RequestCtx,
    field: &str,
    s: &str,
) -> std::result::Result<Vec<u8>, ApiError> {
    match s.strip_prefix("0x") {
        Some(h) => hex::decode(h).map_err(|_| {
            ApiError::refused(
                Error::invalid(format!("request: {field}: not valid hex")),
                ctx,
            )
        }),
        None => b64(ctx, field, s),
    }
}

pub(crate) async fn sign_raw(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> ApiResult {
    let name = name.get(&ctx)?;
    let req: SignReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let (single, texts) = match (req.message, req.messages) {
        (Some(m), None) => (true, vec![m]),
        (None, Some(ms)) if !ms.is_empty() => (false, ms),
        _ => {
            return Err(ApiError::refused(
                Error::invalid("request: give either message or a non-empty messages list"),
                &ctx,
            ));
        }
    };
    let messages = texts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = if single {
                "message".to_owned()
            } else {
                format!("messages[{i}]")
            };
            b64(&ctx, &field, m)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut sigs = on(
        &ctx,
        s.kms
            .sign_messages(&ctx, &name, &messages, req.prehashed)
            .await,
    )?;
    if single {
        ok(sigs.remove(0))
    } else {
        ok(json!({"signatures": sigs}))
    }
}

pub(crate) async fn verify_raw(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> ApiResult {
    let name = name.get(&ctx)?;
    let req: VerifyReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let (single, pairs) = match (req.message, req.signature, req.items) {
        (Some(m), Some(sig), None) => (
            true,
            vec![VerifyItem {
                message: m,
                signature: sig,
            }],
        ),
        (None, None, Some(items)) if !items.is_empty() => (false, items),
        _ => {
            return Err(ApiError::refused(
                Error::invalid(
                    "request: give either message and signature, or a non-empty items list",
                ),
                &ctx,
            ));
        }
    };
    let items = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = |f: &str| {
                if single {
                    f.to_owned()
                } else {
                    format!("items[{i}].{f}")
                }
            };
            Ok((
                b64(&ctx, &field("message"), &p.message)?,
                signature_bytes(&ctx, &field("signature"), &p.signature)?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, ApiError>>()?;
    let mut verdicts = on(
        &ctx,
        s.kms
            .verify_messages(&ctx, &name, &items, req.prehashed)
            .await,
    )?;
    if single {
        ok(verdicts.remove(0))
    } else {
        ok(json!({"verdicts": verdicts}))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoaiSignReq {
    key: String,
    attestation: PoAIAttestation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoaiBatchReq {
    key: String,
    attestations: Vec<PoAIAttestation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HmmSignReq {
    key: String,
    settlement: HMMSettlement,
    #[serde(default, deserialize_with = "present")]
    attestation: Option<SignedAttestation>,
    #[serde(default, deserialize_with = "present")]
    attestation_item: Option<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HmmVerifyReq {
    signed: SignedSettlement,
    #[serde(default, deserialize_with = "present")]
    attestation: Option<SignedAttestation>,
}

pub(crate) async fn poai_sign(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: PoaiSignReq = parse(&ctx, body)?;
    let key = check(&ctx, s.kms.parse_name(&req.key))?;
    ok(on(
        &ctx,
        s.kms
            .sign_poai(&ctx, &key, req.attestation, now_u64())
            .await,
    )?)
}

pub(crate) async fn poai_verify(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let signed: SignedAttestation = parse(&ctx, body)?;
    ok(on(&ctx, s.kms.verify_poai(&ctx, &signed, now_u64()).await)?)
}

pub(crate) async fn poai_sign_batch(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: PoaiBatchReq = parse(&ctx, body)?;
    let key = check(&ctx, s.kms.parse_name(&req.key))?;
    ok(on(
        &ctx,
        s.kms
            .sign_poai_batch(&ctx, &key, req.attestations, now_u64())
            .await,
    )?)
}

pub(crate) async fn poai_verify_item(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let item: BatchItem = parse(&ctx, body)?;
    ok(on(
        &ctx,
        s.kms.verify_batch_item(&ctx, &item, now_u64()).await,
    )?)
}

pub(crate) async fn hmm_sign(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: HmmSignReq = parse(&ctx, body)?;
    let key = check(&ctx, s.kms.parse_name(&req.key))?;
    let paid = check(
        &ctx,
        Paid::of(req.attestation.as_ref(), req.attestation_item.as_ref()),
    )?;
    ok(on(
        &ctx,
        s.kms
            .sign_hmm(&ctx, &key, req.settlement, paid, now_u64())
            .await,
    )?)
}

pub(crate) async fn hmm_verify(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    body: BodyResult,
) -> ApiResult {
    let req: HmmVerifyReq = parse(&ctx, body)?;
    ok(on(
        &ctx,
        s.kms
            .verify_hmm(&ctx, &req.signed, req.attestation.as_ref(), now_u64())
            .await,
    )?)
}

pub(crate) fn now_u64() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

request_bodies! {
    SignReq => "/v1/keys/{name}/sign",
    VerifyReq => "/v1/keys/{name}/verify",
    PoaiSignReq => "/v1/poai/sign",
    SignedAttestation => "/v1/poai/verify",
    PoaiBatchReq => "/v1/poai/sign-batch",
    BatchItem => "/v1/poai/verify-item",
    HmmSignReq => "/v1/hmm/sign",
    HmmVerifyReq => "/v1/hmm/verify",
}
