//! REST handlers: data encryption, data keys and model-file keys. Their answers carry secret
//! material and are written so that no copy is left behind in freed memory.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hanzo_kms_core::Error;
use hanzo_kms_core::eip712::present;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::*;
use crate::extract::*;
use crate::server::*;

/// Its plaintext (base64) is wiped when the request is done.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncryptReq {
    plaintext: String,
    #[serde(default)]
    aad: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecryptReq {
    ciphertext: String,
    #[serde(default)]
    aad: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatakeyReq {
    #[serde(default)]
    aad: String,
}

pub(crate) async fn encrypt(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> ApiResult {
    let name = name.get(&ctx)?;
    let req: EncryptReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let plaintext = Zeroizing::new(b64(&ctx, "plaintext", &req.plaintext)?);
    let aad = b64(&ctx, "aad", &req.aad)?;
    let c = on(&ctx, s.kms.encrypt(&ctx, &name, &plaintext, &aad).await)?;
    ok(json!({"key": c.key, "version": c.version, "ciphertext": c.text}))
}

/// An answer that carries secret material: a plaintext or a data key.
pub(crate) type SecretResult = std::result::Result<Response, ApiError>;

/// `{"plaintext": b64}`.
#[derive(Serialize)]
pub(crate) struct PlaintextOut<'a> {
    plaintext: &'a str,
}

/// A data key, in the clear and wrapped.
#[derive(Serialize)]
pub(crate) struct DataKeyOut<'a> {
    key: &'a str,
    version: u32,
    plaintext: &'a str,
    ciphertext: &'a str,
}

/// A model file's header and its data key.
#[derive(Serialize)]
pub(crate) struct ModelKeyOut<'a> {
    key: &'a str,
    version: u32,
    header: &'a str,
    data_key: &'a str,
}

/// Base64 of secret bytes, wiped when dropped.
pub(crate) fn enc_secret(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(enc(bytes))
}

/// A JSON answer holding secret material, without copies left behind in freed memory: `v` is
/// measured first, then written into one buffer of exactly that size, so the buffer never grows
/// (growing frees the old one unwiped), and the buffer is wiped when hyper has sent the body and
/// lets go of it (hyper queues the body's bytes for a vectored write; it does not copy them).
/// The secret's base64 is a [`Zeroizing`] string too. What TLS copies into its own records, and
/// the kernel's socket buffers, are outside this process's reach.
pub(crate) fn secret_json(v: &impl Serialize) -> SecretResult {
    let buf = hanzo_kms_core::secret::secret_json(v)
        .map_err(|e| ApiError::new(Error::internal(format!("encoding JSON: {e}")), &fresh_id()))?;
    let mut resp = Response::new(Body::from(Bytes::from_owner(buf)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

pub(crate) async fn decrypt(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: DecryptReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let aad = b64(&ctx, "aad", &req.aad)?;
    let p = on(
        &ctx,
        s.kms.decrypt(&ctx, &name, &req.ciphertext, &aad).await,
    )?;
    let plaintext = enc_secret(p.expose());
    secret_json(&PlaintextOut {
        plaintext: &plaintext,
    })
}

pub(crate) async fn datakey(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: DatakeyReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let aad = b64(&ctx, "aad", &req.aad)?;
    let (c, dek) = on(&ctx, s.kms.generate_data_key(&ctx, &name, &aad).await)?;
    let plaintext = enc_secret(dek.expose());
    secret_json(&DataKeyOut {
        key: &c.key,
        version: c.version,
        plaintext: &plaintext,
        ciphertext: &c.text,
    })
}

pub(crate) async fn unwrap(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: DecryptReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let aad = b64(&ctx, "aad", &req.aad)?;
    let p = on(
        &ctx,
        s.kms
            .unwrap_data_key(&ctx, &name, &req.ciphertext, &aad)
            .await,
    )?;
    let plaintext = enc_secret(p.expose());
    secret_json(&PlaintextOut {
        plaintext: &plaintext,
    })
}

/// `{"metadata": b64, "segment_size": n}` → a model-file header and its data key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelKeyReq {
    #[serde(default)]
    metadata: String,
    #[serde(default, deserialize_with = "present")]
    segment_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelUnwrapReq {
    header: String,
}

pub(crate) fn model_key_json(m: &hanzo_kms_service::model::ModelKey) -> SecretResult {
    let (header, data_key) = (enc(&m.header), enc_secret(m.dek.expose()));
    secret_json(&ModelKeyOut {
        key: &m.key,
        version: m.version,
        header: &header,
        data_key: &data_key,
    })
}

pub(crate) async fn model_datakey(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: ModelKeyReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_model_name(&name))?;
    let metadata = b64(&ctx, "metadata", &req.metadata)?;
    let m = on(
        &ctx,
        s.kms
            .model_key(&ctx, &name, &metadata, req.segment_size)
            .await,
    )?;
    model_key_json(&m)
}

pub(crate) async fn model_unwrap(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: ModelUnwrapReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_model_name(&name))?;
    let header = b64(&ctx, "header", &req.header)?;
    let m = on(&ctx, s.kms.model_unwrap(&ctx, &name, &header).await)?;
    model_key_json(&m)
}

request_bodies! {
    EncryptReq => "/v1/keys/{name}/encrypt",
    DecryptReq => "/v1/keys/{name}/decrypt",
    DatakeyReq => "/v1/keys/{name}/datakey",
    ModelKeyReq => "/v1/models/{name}/datakey",
    ModelUnwrapReq => "/v1/models/{name}/unwrap",
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A secret answer is exactly the JSON serde writes, labelled as JSON (the buffer's exact
    /// size is `hanzo_kms_core::secret::secret_json`'s test).
    #[tokio::test]
    async fn secret_answers_are_the_json_serde_writes_labelled_as_json() {
        let plaintext = enc_secret(&[0xA5; 1000]);
        let out = DataKeyOut {
            key: "data:acme:x",
            version: 3,
            plaintext: &plaintext,
            ciphertext: "hkms:v3:abc\"def",
        };
        let expected = serde_json::to_vec(&out).unwrap();
        let Ok(resp) = secret_json(&out) else {
            panic!("encoding failed")
        };
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], &expected[..]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["ciphertext"], "hkms:v3:abc\"def");
    }
}
