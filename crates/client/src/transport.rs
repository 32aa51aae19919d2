//! The client's connection and plumbing: one [`Call`] on either transport, with deadlines,
//! retries, and errors read back by kind.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use hanzo_kms_core::eip712::from_json;
use hanzo_kms_core::{Error, ErrorKind, Result, SecretKey32};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::call::Call;
use crate::{Protocol, rest};

/// The transport a client speaks.
#[derive(Clone)]
pub(crate) enum Transport {
    Grpc(Channel),
    Rest(Box<rest::Rest>),
}

/// What one call returned, by transport.
pub(crate) enum Answer<P> {
    Grpc(P),
    Rest(Json),
}

/// A REST answer's JSON. Its strings are wiped when it is dropped: some answers carry a
/// plaintext, a data key or a token.
pub(crate) struct Json(pub(crate) Value);

impl Json {
    /// The JSON of an answer without secrets, to keep.
    pub(crate) fn take(mut self) -> Value {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for Json {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for Json {
    fn drop(&mut self) {
        hanzo_kms_core::secret::wipe_json(&mut self.0);
    }
}

/// Whether a call may be repeated after an `unavailable` failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    Once,
    Safe,
}

/// A connection to a Hanzo KMS server. Cheap to share by reference across tasks, and cheap to
/// clone: clones share the connection (HTTP/2 multiplexes their calls).
#[derive(Clone)]
pub struct Client {
    pub(crate) url: String,
    pub(crate) transport: Transport,
    pub(crate) token: Zeroizing<String>,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) threads: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("protocol", &self.protocol())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The API this client speaks.
    pub fn protocol(&self) -> Protocol {
        match self.transport {
            Transport::Grpc(_) => Protocol::Grpc,
            Transport::Rest(_) => Protocol::Rest,
        }
    }

    /// Send one request on the client's transport (see [`Call`]).
    pub(crate) async fn call<C: Call>(&self, c: &C) -> Result<Answer<C::Reply>> {
        let route = &C::ROUTE;
        match &self.transport {
            Transport::Grpc(channel) => {
                let m = self
                    .run(route.retry, || {
                        let mut grpc = tonic::client::Grpc::new(channel.clone());
                        let req = self.grpc_request(c.msg());
                        async move {
                            grpc.ready().await.map_err(|e| {
                                from_status(tonic::Status::unavailable(e.to_string()), &self.url)
                            })?;
                            let codec =
                                hanzo_kms_proto::codec::SizedCodec::<C::Msg, C::Reply>::default();
                            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                                route.grpc_path,
                            );
                            grpc.unary(req, path, codec)
                                .await
                                .map_err(|s| from_status(s, &self.url))
                        }
                    })
                    .await?;
                Ok(Answer::Grpc(m.into_inner()))
            }
            Transport::Rest(r) => {
                let r = r.as_ref();
                let mut path = route
                    .path
                    .replace("{name}", &path_seg(c.param()))
                    .replace("{id}", &path_seg(c.param()));
                let query = c.query();
                if !query.is_empty() {
                    path.push('?');
                    path.push_str(&query);
                }
                let mut body = c.body();
                let v = self
                    .run(route.retry, || {
                        r.call(route.method, &path, self.token.as_str(), body.as_ref())
                    })
                    .await;
                // An encrypt request carries a plaintext.
                if let Some(b) = body.as_mut() {
                    hanzo_kms_core::secret::wipe_json(b);
                }
                Ok(Answer::Rest(Json(v?)))
            }
        }
    }

    /// [`Client::call`] for answers without secrets, as JSON either way (gRPC messages share
    /// the REST API's JSON form).
    pub(crate) async fn call_json<C: Call>(&self, c: &C) -> Result<Value>
    where
        C::Reply: Serialize,
    {
        match self.call(c).await? {
            Answer::Grpc(m) => {
                let mut v = serde_json::to_value(m)
                    .map_err(|e| Error::internal(format!("reading a response: {e}")))?;
                hanzo_kms_core::eip712::drop_nulls(&mut v);
                Ok(v)
            }
            Answer::Rest(v) => Ok(v.take()),
        }
    }

    /// Run `attempt` with the deadline, retrying `unavailable` with back-off when `retry` says
    /// the call is safe to repeat.
    async fn run<T, F, Fut>(&self, retry: Retry, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut left = if retry == Retry::Safe {
            self.retries
        } else {
            0
        };
        loop {
            let r = match tokio::time::timeout(self.timeout, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("no answer from the server within {:?}", self.timeout),
                )),
            };
            match r {
                Err(e) if e.kind() == ErrorKind::Unavailable && left > 0 => {
                    left -= 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn grpc_request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = MetadataValue::try_from(format!("Bearer {}", self.token.as_str())) {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
}

/// A 32-byte key out of a message field, wiping the field.
pub(crate) fn take_key32(field: &mut Vec<u8>) -> Result<SecretKey32> {
    let bytes = Zeroizing::new(std::mem::take(field));
    key32(&bytes)
}

pub(crate) fn key32(b: &[u8]) -> Result<SecretKey32> {
    SecretKey32::from_slice(b).map_err(|_| Error::internal("the server's data key is not 32 bytes"))
}

/// A key name in a URL path: names are `[a-z0-9:_.-]`-ish; anything else is percent-encoded.
pub(crate) fn path_seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A gRPC status as our error: the exact kind from `x-error-code`, else from the gRPC code. A
/// status that did not come from the server (no request id: the connection or the TLS
/// handshake failed) is `unavailable`, naming the server and the cause.
pub(crate) fn from_status(s: tonic::Status, server: &str) -> Error {
    use tonic::Code;
    let request_id = s
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| format!(" (request {id})"))
        .unwrap_or_default();
    let from_server = !request_id.is_empty();
    let kind = s
        .metadata()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorKind::from_code)
        .unwrap_or(match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::FailedPrecondition => ErrorKind::KeyState,
            Code::Aborted => ErrorKind::Replayed,
            Code::ResourceExhausted => ErrorKind::RateLimited,
            Code::Unimplemented => ErrorKind::Unsupported,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
            Code::Unknown | Code::Internal if !from_server => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        });
    let message = if !from_server && kind == ErrorKind::Unavailable {
        let mut cause = s.message().to_owned();
        let mut src = std::error::Error::source(&s);
        while let Some(e) = src {
            cause.push_str(&format!(": {e}"));
            src = e.source();
        }
        // A plain HTTP server (the REST listener) answers a gRPC call with a JSON 404, which
        // tonic reads as a malformed frame or a missing gRPC status.
        let hint = if [
            "invalid compression flag",
            "404 Not Found",
            "invalid content-type",
        ]
        .iter()
        .any(|t| cause.contains(t))
        {
            "; it did not answer gRPC: is this the REST address? gRPC listens on \
             server.grpc_addr, 127.0.0.1:8201 by default; or speak REST to it"
        } else {
            ""
        };
        format!("cannot reach the server at {server} ({cause}{hint})")
    } else if s.message().is_empty() {
        format!("the server answered {:?}", s.code())
    } else {
        s.message().to_owned()
    };
    let retry_after = s
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match retry_after {
        Some(secs) if kind == ErrorKind::RateLimited => {
            Error::rate_limited(format!("{message}{request_id}"), Duration::from_secs(secs))
        }
        _ => Error::new(kind, format!("{message}{request_id}")),
    }
}

pub(crate) fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal(format!("encoding a request: {e}")))
}

pub(crate) fn from_value<T: DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::invalid(format!("{what}: {e}")))
}

/// A response as a typed value, with field-path errors.
pub(crate) fn read<T: DeserializeOwned>(what: &str, v: Value) -> Result<T> {
    let text = serde_json::to_string(&v)
        .map_err(|e| Error::internal(format!("reading a response: {e}")))?;
    from_json(what, &text)
}

pub(crate) fn text_field(v: &Value, field: &str) -> Result<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::internal(format!("the server's answer has no {field}")))
}

pub(crate) fn u32_field(v: &Value, field: &str) -> Result<u32> {
    v.get(field)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::internal(format!("the server's answer has no {field}")))
}

/// A base64 field of a REST answer.
pub(crate) fn b64_field(v: &Value, field: &str) -> Result<Zeroizing<Vec<u8>>> {
    let text = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::internal(format!("the server's answer has no {field}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| Error::internal(format!("the server's {field} is not base64")))
}
