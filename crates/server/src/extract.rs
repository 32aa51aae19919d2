//! Request plumbing: the authenticated caller (pipeline step 1), path parameters, and request
//! bodies read with field-path errors and checked against the route's schema.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use base64::Engine;
use hanzo_kms_core::eip712::from_json;
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::RequestCtx;
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::*;
use crate::middleware::*;
use crate::server::*;

/// An authenticated request: pipeline step 1, as an extractor every API handler takes first. A
/// missing or malformed header is authenticated (and audited) like any bad token.
pub(crate) struct Authed(pub(crate) RequestCtx);

impl FromRequestParts<Shared> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> std::result::Result<Self, ApiError> {
        let credential = credential(parts.headers.get_all(header::AUTHORIZATION).iter());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(fresh_id, |id| id.0.to_string());
        let bearer = match credential {
            Credential::Bearer(b) => b,
            Credential::Several => {
                let e = state
                    .kms
                    .refuse_credential(peer, request_id.clone(), "several authorization headers")
                    .await;
                return Err(match e.kind() {
                    ErrorKind::Unauthenticated => ApiError::new(
                        Error::invalid("send one Authorization header, not several"),
                        &request_id,
                    ),
                    _ => ApiError::new(e, &request_id),
                });
            }
        };
        state
            .kms
            .authenticate_as(bearer, peer, request_id.clone())
            .await
            .map(Authed)
            .map_err(|e| ApiError::new(e, &request_id))
    }
}

/// A route's path parameter (`{name}`, `{id}`). Taken after [`Authed`] and never rejected by
/// itself: a parameter that is not UTF-8 once percent-decoded (`/v1/keys/data:acme:%FF`) is
/// refused by [`Param::get`] with the API's JSON error and audited, like any bad argument.
pub(crate) struct Param(pub(crate) std::result::Result<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Param(
            Path::<String>::from_request_parts(parts, state)
                .await
                .map(|Path(p)| p)
                .map_err(|r| r.body_text()),
        ))
    }
}

impl Param {
    pub(crate) fn get(self, ctx: &RequestCtx) -> std::result::Result<String, ApiError> {
        self.0.map_err(|detail| {
            ApiError::refused(Error::invalid(format!("the request path: {detail}")), ctx)
        })
    }
}

/// The body's bytes, or the refusal of a body that could not be read (too large, cut off).
fn body_bytes(
    ctx: &RequestCtx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<Bytes, ApiError> {
    body.map_err(|r| {
        let too_large = r.status() == StatusCode::PAYLOAD_TOO_LARGE;
        let e = ApiError::refused(
            Error::invalid(if too_large {
                "the request body is larger than server.max_body_bytes".to_owned()
            } else {
                format!("reading the request body: {r}")
            }),
            ctx,
        );
        if too_large {
            e.with_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            e
        }
    })
}

/// A REST request body, and the route whose schema (`crate::schema::request_body`) describes it.
pub(crate) trait RequestBody: for<'de> Deserialize<'de> {
    const ROUTE: &'static str;
}

/// `impl RequestBody` for each type, naming the route whose schema describes it.
macro_rules! request_bodies {
    ($($t:ty => $route:literal),* $(,)?) => {
        $(impl RequestBody for $t {
            const ROUTE: &'static str = $route;
        })*
        /// The routes of these request bodies, each with [`read_body`] for its type (for
        /// `crate::fuzzing`).
        pub(crate) const READERS: &[(&str, crate::extract::BodyReader)] = &[
            $(($route, |b| crate::extract::read_body::<$t>(b).map(drop)),)*
        ];
    };
}
pub(crate) use request_bodies;

/// [`read_body`] for one request type, its value dropped.
pub(crate) type BodyReader = fn(&[u8]) -> Result<()>;

/// The request schemas by route, and the shared ones they refer to; built once, on the first
/// body that needs them.
pub(crate) static REQUEST_SCHEMAS: std::sync::LazyLock<(BTreeMap<&'static str, Value>, Value)> =
    std::sync::LazyLock::new(|| {
        let bodies = crate::routes::routes()
            .filter_map(|(r, _)| {
                crate::schema::request_body(r.method, r.path).map(|(s, _)| (r.path, s))
            })
            .collect();
        (bodies, crate::schema::components())
    });

pub(crate) fn parse<T: RequestBody>(
    ctx: &RequestCtx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<T, ApiError> {
    // A body may hold a plaintext or a key: take hyper's buffer (no copy when it is the
    // request's alone, as a collected body is) into zeroizing memory, so it is wiped when the
    // request is parsed. A buffer hyper still shares is copied, and hyper's copy is its own.
    let bytes = Zeroizing::new(Vec::from(body_bytes(ctx, body)?));
    read_body(&bytes).map_err(|e| ApiError::refused(e, ctx))
}

/// Read a request body of type `T` from its bytes: what [`parse`] does once the body is read.
pub(crate) fn read_body<T: RequestBody>(bytes: &[u8]) -> Result<T> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| Error::invalid("the request body is not UTF-8"))?;
    // serde reads a struct from a JSON array too (its fields in order). This API's request
    // bodies are objects, and so is every object within them, so an array in an object's place
    // is refused rather than read by position: the whole body here, and a nested one against
    // the route's schema (checked only for a body with a '[' in it; an attestation to sign has
    // none).
    if !text.trim_start().starts_with('{') {
        return Err(Error::invalid("request: the body must be a JSON object"));
    }
    if text.contains('[')
        && let Ok(mut value) = serde_json::from_str::<Value>(text)
    {
        let (bodies, components) = &*REQUEST_SCHEMAS;
        let found = bodies
            .get(T::ROUTE)
            .and_then(|s| crate::schema::array_for_object(s, &value, components));
        // The value's strings are copies of the body's (a plaintext among them).
        hanzo_kms_core::secret::wipe_json(&mut value);
        if let Some(at) = found {
            return Err(Error::invalid(format!(
                "request: {at}: expected a JSON object, found an array"
            )));
        }
    }
    from_json("request", text)
}

pub(crate) fn b64(
    ctx: &RequestCtx,
    field: &str,
    s: &str,
) -> std::result::Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| {
            ApiError::refused(
                Error::invalid(format!("request: {field}: not valid base64")),
                ctx,
            )
        })
}

pub(crate) fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn ok(v: impl serde::Serialize) -> ApiResult {
    serde_json::to_vec(&v)
        .map(JsonBody)
        .map_err(|e| ApiError::new(Error::internal(format!("encoding JSON: {e}")), &fresh_id()))
}

/// The API layer's own check of a request (a key name, an algorithm): a refusal is audited
/// (see [`ApiError::refused`]).
pub(crate) fn check<T>(ctx: &RequestCtx, r: Result<T>) -> std::result::Result<T, ApiError> {
    r.map_err(|e| ApiError::refused(e, ctx))
}

/// Run a service call and attach the request id to its error.
pub(crate) fn on<T>(ctx: &RequestCtx, r: Result<T>) -> std::result::Result<T, ApiError> {
    r.map_err(|e| ApiError::new(e, &ctx.request_id))
}

pub(crate) type BodyResult = std::result::Result<Bytes, BytesRejection>;

/// What a request presents as its credential (REST and gRPC alike).
pub(crate) enum Credential<'a> {
    /// The bearer token of its one `Authorization` header, or "" (no header, another scheme,
    /// not text), which does not authenticate.
    Bearer(&'a str),
    /// More than one `Authorization` header: refused, whatever they hold, so that no layer can
    /// read one and another layer the other.
    Several,
}

/// The credential of a request's `Authorization` headers. The scheme is case-insensitive
/// (RFC 7235: `Bearer`, `bearer`).
pub(crate) fn credential<'a>(mut values: impl Iterator<Item = &'a HeaderValue>) -> Credential<'a> {
    let first = values.next();
    if values.next().is_some() {
        return Credential::Several;
    }
    Credential::Bearer(bearer(first))
}

/// The bearer token of an `Authorization` header's value, or "".
pub(crate) fn bearer(authorization: Option<&HeaderValue>) -> &str {
    let Some(v) = authorization.and_then(|v| v.to_str().ok()) else {
        return "";
    };
    let v = v.trim_start();
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    }
}
