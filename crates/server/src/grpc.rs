//! The gRPC API (`proto/hanzo/kms/v1/kms.proto`), over the same pipeline as REST.
//!
//! Each RPC authenticates the `authorization` metadata into a [`RequestCtx`], turns the message
//! into the service's types, and calls the same `Kms` method the REST handler and the CLI call.
//! Messages with EIP-712 or key-report content are converted through their JSON form, which the
//! generated messages share with the REST API (see `hanzo-kms-proto`), so both APIs accept and
//! return exactly the same fields.
//!
//! Errors are mapped to a gRPC code by [`crate::error::wire_status`], the one table REST uses too. An
//! INTERNAL or UNAVAILABLE message is generic; the detail goes to the log with the request id,
//! which every response and error carries in the `x-request-id` metadata entry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hanzo_kms_core::eip712::{B32, PoAIAttestation, from_json};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result};
use hanzo_kms_proto::v1 as pb;
use hanzo_kms_service::sign::{BatchItem, Paid, SignedAttestation, SignedSettlement};
use hanzo_kms_service::{RequestCtx, Role, now_secs};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use hanzo_kms_service::model::ModelKey;
use hanzo_kms_service::operation::Operation;

use crate::error::wire_status;
use crate::server::AppState;

/// The gRPC service: a handle on the server's shared state.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// The tonic service with message-size limits applied, behind [`Audited`]. Every RPC is cut
/// off after `request_timeout`, but `VerifyAudit`, which reads the whole log, after at least
/// `crate::middleware::AUDIT_VERIFY_TIMEOUT`, as on REST.
pub(crate) fn service(
    state: Arc<AppState>,
    max_message: usize,
    request_timeout: Duration,
) -> Audited {
    let inner = pb::kms_server::KmsServer::new(Service::new(state.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    Audited {
        inner,
        state,
        request_timeout,
    }
}

/// Set, in a request's extensions, once an RPC body runs: from then on the body (through
/// [`Service::reply`]) or the service audits the request.
#[derive(Clone, Default)]
struct Reached(Arc<AtomicBool>);

/// The `Kms` service behind a layer that audits what tonic refuses before any RPC body runs: a
/// message that does not decode, one over `server.max_body_bytes`, an unsupported compression.
///
/// Such a request never reaches [`Service::auth`], so without this layer it would get its
/// error with no audit record, where REST audits the same refusals (a body that is not the
/// route's JSON, an oversized body). Here the request's token is authenticated (a request
/// that does not authenticate gets the authentication error instead, as on REST), the refusal
/// is recorded as `denied` under the method's operation, and the error is reworded in this
/// API's terms: INVALID_ARGUMENT (tonic answers INTERNAL for a message that does not decode,
/// and OUT_OF_RANGE for an oversized one), with the request id. If the record cannot be
/// written, the answer is the audit failure. Unknown methods pass through: they are
/// UNIMPLEMENTED and, as REST's unknown routes, not audited.
#[derive(Clone)]
pub(crate) struct Audited {
    inner: pb::kms_server::KmsServer<Service>,
    state: Arc<AppState>,
    request_timeout: Duration,
}

impl tonic::server::NamedService for Audited {
    const NAME: &'static str =
        <pb::kms_server::KmsServer<Service> as tonic::server::NamedService>::NAME;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Audited {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tonic::codegen::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let reached = Reached::default();
        req.extensions_mut().insert(reached.clone());
        // The RPC's audit records, a refusal's and a timeout's all carry this id.
        let id = crate::middleware::RequestId(uuid::Uuid::new_v4());
        req.extensions_mut().insert(id);
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let operation = Operation::of_rpc(method).map(|o| o.name);
        let secret = SECRET_ANSWERS.contains(&method);
        // A handle on the header's bytes, not a copy of the token.
        let authorization = req.headers().get("authorization").cloned();
        let peer = peer(req.extensions());
        // The same, for the record of a timeout (the first go with the call).
        let (authorization2, peer2) = (authorization.clone(), peer.clone());
        let mut inner = self.inner.clone();
        let state = self.state.clone();
        // VerifyAudit reads the whole log: it gets as long as on REST.
        let limit = if method == "VerifyAudit" {
            self.request_timeout
                .max(crate::middleware::AUDIT_VERIFY_TIMEOUT)
        } else {
            self.request_timeout
        };
        let answer = async move {
            let resp = inner.call(req).await?;
            if reached.0.load(Ordering::Acquire) {
                if secret {
                    return Ok(resp.map(|body| tonic::body::Body::new(Wiped::new(body))));
                }
                return Ok(resp);
            }
            let (Some(operation), Some(refused)) =
                (operation, Status::from_header_map(resp.headers()))
            else {
                return Ok(resp);
            };
            if refused.code() == tonic::Code::Ok {
                return Ok(resp);
            }
            let bearer = crate::extract::bearer(authorization.as_ref());
            Ok(audit_unreached(&state, operation, bearer, peer, &refused, id).await)
        };
        let state = self.state.clone();
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(r) => r,
                Err(_) => {
                    state.timeouts.fetch_add(1, Ordering::Relaxed);
                    Ok(timed_out(&state, operation, authorization2.as_ref(), peer2, id).await)
                }
            }
        })
    }
}

/// The RPCs whose answer carries a secret: a plaintext, a data key or a token (their messages
/// are `hanzo_kms_proto::SECRET_MESSAGES`; a test checks the two lists against kms.proto).
const SECRET_ANSWERS: [&str; 6] = [
    "Decrypt",
    "GenerateDataKey",
    "UnwrapDataKey",
    "GenerateModelKey",
    "UnwrapModelKey",
    "CreateToken",
];

/// The body of an answer that carries a secret, so that no copy of it is left in freed memory.
///
/// tonic encodes the message into a buffer of its own and hands out frames cut from it; that
/// buffer is freed, unwiped, when tonic's body is dropped. So each frame is passed on as a copy
/// in memory that is wiped when hyper lets go of it, and tonic's frames are kept until tonic's
/// body is gone, then wiped in place (they are its buffer's last handles by then). What hyper's
/// HTTP/2 layer copies into its own write buffer (frames under a few hundred bytes), what TLS
/// copies into its records, and the kernel's socket buffers are out of this process's reach,
/// as on REST.
struct Wiped {
    inner: Option<tonic::body::Body>,
    /// tonic's frames, to wipe once `inner` is dropped.
    sent: Vec<Bytes>,
}

impl Wiped {
    fn new(inner: tonic::body::Body) -> Self {
        Self {
            inner: Some(inner),
            sent: Vec::new(),
        }
    }

    fn wipe(&mut self) {
        self.inner = None;
        if self.sent.is_empty() {
            return;
        }
        let frames = self.sent.len();
        let unwiped = self
            .sent
            .drain(..)
            .map(wipe)
            .filter(Option::is_none)
            .count();
        tracing::debug!(
            frames,
            unwiped,
            "wiped the encoded answer of a secret-bearing RPC"
        );
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl http_body::Body for Wiped {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Status>>> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match std::pin::Pin::new(inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        Poll::Ready(match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let copy = Bytes::from_owner(zeroize::Zeroizing::new(data.to_vec()));
                    this.sent.push(data);
                    Some(Ok(http_body::Frame::data(copy)))
                }
                Err(trailers) => Some(Ok(trailers)),
            },
            Some(Err(e)) => Some(Err(e)),
            None => {
                this.wipe();
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Wipe `frame`'s bytes if it is the last handle on them; returns them (zeroed) if it was.
fn wipe(frame: Bytes) -> Option<bytes::BytesMut> {
    let mut bytes = frame.try_into_mut().ok()?;
    zeroize::Zeroize::zeroize(&mut bytes[..]);
    Some(bytes)
}

/// [`Audited`]'s answer to a request tonic refused before its RPC body ran.
async fn audit_unreached(
    state: &AppState,
    operation: &'static str,
    bearer: &str,
    peer: Option<String>,
    refused: &Status,
    id: crate::middleware::RequestId,
) -> http::Response<tonic::body::Body> {
    let request_id = id.0.to_string();
    let ctx = match state
        .kms
        .authenticate_as(bearer, peer, request_id.clone())
        .await
    {
        Ok(ctx) => ctx,
        Err(e) => {
            state.count("grpc", 401);
            return status(&e, &request_id).into_http();
        }
    };
    let too_large = matches!(
        refused.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    );
    let error = match refused.code() {
        _ if too_large => {
            Error::invalid("the request message is larger than server.max_body_bytes")
        }
        tonic::Code::Unimplemented => Error::new(
            ErrorKind::Unsupported,
            format!("the request message: {}", refused.message()),
        ),
        _ => Error::invalid(format!(
            "the request message does not decode: {}",
            refused.message()
        )),
    };
    if let Err(audit) = state.kms.audit_refusal(&ctx, operation, None, &error).await {
        state.count("grpc", wire_status(audit.kind()).0.as_u16());
        return status(&audit, &request_id).into_http();
    }
    let mut st = status(&error, &request_id);
    if too_large {
        st.metadata_mut().insert(
            "x-error-code",
            MetadataValue::from_static("payload_too_large"),
        );
    }
    state.count(
        "grpc",
        if too_large {
            413
        } else {
            wire_status(error.kind()).0.as_u16()
        },
    );
    st.into_http()
}

/// [`Audited`]'s answer to a call cut off by the request timeout: CANCELLED, as tonic's own
/// timeout answers, counted as REST's 408, after the call's audit record
/// ([`hanzo_kms_service::Kms::audit_timeout`]). If that record cannot be written, the answer
/// is the audit failure; if the token no longer authenticates, the authentication error.
async fn timed_out(
    state: &AppState,
    operation: Option<&'static str>,
    authorization: Option<&http::HeaderValue>,
    peer: Option<String>,
    id: crate::middleware::RequestId,
) -> http::Response<tonic::body::Body> {
    let request_id = id.0.to_string();
    let audited = match operation {
        // Not a method of ours (reflection, an unknown method): nothing to record.
        None => Ok(()),
        Some(operation) => {
            crate::middleware::audit_cut_off(
                state,
                operation,
                None,
                authorization,
                peer,
                &request_id,
            )
            .await
        }
    };
    let e = match audited {
        Ok(()) => {
            state.count("grpc", 408);
            let mut st = Status::cancelled("the request took too long and was cancelled");
            if let Ok(v) = MetadataValue::try_from(request_id.as_str()) {
                st.metadata_mut().insert("x-request-id", v);
            }
            st.metadata_mut()
                .insert("x-error-code", MetadataValue::from_static("timeout"));
            return st.into_http();
        }
        Err(e) => e,
    };
    state.count("grpc", wire_status(e.kind()).0.as_u16());
    status(&e, &request_id).into_http()
}

/// The peer address tonic's transport put in a request's extensions, with or without TLS.
fn peer(ext: &http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.to_string())
}

/// An error as a gRPC status: the code from the one table, a generic message for server
/// errors, the request id and (for rate limits) `retry-after` in the metadata.
pub fn status(e: &Error, request_id: &str) -> Status {
    let (http, code) = wire_status(e.kind());
    let message = if http.is_server_error() {
        tracing::error!(request_id, code = e.kind().code(), error = %e, "gRPC request failed");
        if http == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            "service unavailable".to_owned()
        } else {
            "internal error".to_owned()
        }
    } else {
        e.message().to_owned()
    };
    let mut st = Status::new(code, message);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        st.metadata_mut().insert("x-request-id", v);
    }
    // The precise kind, as in a REST error body's `code` (gRPC codes are coarser).
    st.metadata_mut()
        .insert("x-error-code", MetadataValue::from_static(e.kind().code()));
    if let Some(wait) = e.retry_after() {
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        if let Ok(v) = MetadataValue::try_from(secs.to_string()) {
            st.metadata_mut().insert("retry-after", v);
        }
    }
    st
}

/// A service value as a wire message, through the JSON form they share.
pub(crate) fn to_pb<T: Serialize, P: DeserializeOwned>(v: &T) -> Result<P> {
    serde_json::to_value(v)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::internal(format!("encoding a response message: {e}")))
}

/// A wire message as a service value, with the same field-path errors as a REST body.
pub(crate) fn from_pb<P: Serialize, T: DeserializeOwned>(what: &str, p: &P) -> Result<T> {
    let mut v = serde_json::to_value(p)
        .map_err(|e| Error::internal(format!("reading a request message: {e}")))?;
    hanzo_kms_core::eip712::drop_nulls(&mut v);
    from_json(what, &v.to_string())
}

fn missing(field: &str) -> Fail {
    Fail::Local(Error::invalid(format!("request: {field}: missing")))
}

/// Why an RPC failed: in the service (which audited it), or in this layer's own checks of the
/// message (which [`Service::reply`] audits).
enum Fail {
    Service(Error),
    Local(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Service(e)
    }
}

/// This layer's own check: a failure is a [`Fail::Local`].
fn local<T>(r: Result<T>) -> std::result::Result<T, Fail> {
    r.map_err(Fail::Local)
}

fn now_u64() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

impl Service {
    /// Pipeline step 1 for a gRPC request: the bearer token in the metadata, the peer address.
    async fn auth<T>(&self, req: Request<T>) -> std::result::Result<(RequestCtx, T), Status> {
        if let Some(r) = req.extensions().get::<Reached>() {
            r.0.store(true, Ordering::Release);
        }
        let credential =
            crate::extract::credential(req.metadata().as_ref().get_all("authorization").iter());
        let peer = req.remote_addr().map(|a: SocketAddr| a.to_string());
        let request_id = req
            .extensions()
            .get::<crate::middleware::RequestId>()
            .map_or_else(crate::error::fresh_id, |id| id.0.to_string());
        let authed = match credential {
            crate::extract::Credential::Bearer(bearer) => {
                self.state
                    .kms
                    .authenticate_as(bearer, peer, request_id.clone())
                    .await
            }
            crate::extract::Credential::Several => Err(self
                .state
                .kms
                .refuse_credential(peer, request_id.clone(), "several authorization headers")
                .await),
        };
        match authed {
            Ok(ctx) => Ok((ctx, req.into_inner())),
            Err(e) => {
                self.state.count("grpc", 401);
                Err(status(&e, &request_id))
            }
        }
    }

    /// Answer: the message or the mapped status, with the request id, counted in `/metrics`.
    /// A refusal by this layer's own checks is audited here, under the operation of `rpc` (the
    /// method's name); the service audits everything else. If that record cannot be written,
    /// the answer is the audit failure.
    async fn reply<P>(
        &self,
        ctx: &RequestCtx,
        rpc: &'static str,
        r: std::result::Result<P, Fail>,
    ) -> std::result::Result<Response<P>, Status> {
        let operation = Operation::of_rpc(rpc).map_or(crate::UNKNOWN_OPERATION, |o| o.name);
        let r = match r {
            Ok(m) => Ok(m),
            Err(Fail::Service(e)) => Err(e),
            Err(Fail::Local(e)) => match self.kms().audit_refusal(ctx, operation, None, &e).await {
                Ok(()) => Err(e),
                Err(audit) => Err(audit),
            },
        };
        match r {
            Ok(m) => {
                self.state.count("grpc", 200);
                let mut resp = Response::new(m);
                if let Ok(v) = MetadataValue::try_from(ctx.request_id.as_str()) {
                    resp.metadata_mut().insert("x-request-id", v);
                }
                Ok(resp)
            }
            Err(e) => {
                self.state
                    .count("grpc", crate::error::wire_status(e.kind()).0.as_u16());
                Err(status(&e, &ctx.request_id))
            }
        }
    }

    fn kms(&self) -> &hanzo_kms_service::Kms {
        &self.state.kms
    }
}

type Rpc<P> = std::result::Result<Response<P>, Status>;

#[tonic::async_trait]
impl pb::kms_server::Kms for Service {
    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            let alg = match m.algorithm.as_str() {
                "" => None,
                a => Some(local(a.parse::<Algorithm>())?),
            };
            let info = self
                .kms()
                .create_key(&ctx, &name, alg, m.rotation_days)
                .await?;
            Ok(to_pb(&info)?)
        }
        .await;
        self.reply(&ctx, "CreateKey", r).await
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Rpc<pb::KeyList> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let keys = self.kms().list_keys(&ctx, &m.prefix).await?;
            Ok(pb::KeyList {
                keys: to_pb(&keys)?,
            })
        }
        .await;
        self.reply(&ctx, "ListKeys", r).await
    }

    async fn get_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().show_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "GetKey", r).await
    }

    async fn rotate_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().rotate_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "RotateKey", r).await
    }

    async fn get_public_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::PublicKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().public_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "GetPublicKey", r).await
    }

    async fn create_model_keyspace(
        &self,
        req: Request<pb::CreateModelKeyspaceRequest>,
    ) -> Rpc<pb::KeyList> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let keys = self
                .kms()
                .create_keyspace(&ctx, &m.customer, &m.model, m.signing_keys.unwrap_or(true))
                .await?;
            Ok(pb::KeyList {
                keys: to_pb(&keys)?,
            })
        }
        .await;
        self.reply(&ctx, "CreateModelKeyspace", r).await
    }

    async fn encrypt(&self, req: Request<pb::EncryptRequest>) -> Rpc<pb::EncryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let c = self
                .kms()
                .encrypt(&ctx, &name, &m.plaintext, &m.aad)
                .await?;
            Ok(pb::EncryptResponse {
                key: c.key,
                version: c.version,
                ciphertext: c.text,
            })
        }
        .await;
        self.reply(&ctx, "Encrypt", r).await
    }

    async fn decrypt(&self, req: Request<pb::DecryptRequest>) -> Rpc<pb::DecryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let p = self
                .kms()
                .decrypt(&ctx, &name, &m.ciphertext, &m.aad)
                .await?;
            Ok(pb::DecryptResponse {
                plaintext: p.expose().to_vec(),
            })
        }
        .await;
        self.reply(&ctx, "Decrypt", r).await
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Rpc<pb::GenerateDataKeyResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let (c, dek) = self.kms().generate_data_key(&ctx, &name, &m.aad).await?;
            Ok(pb::GenerateDataKeyResponse {
                key: c.key,
                version: c.version,
                plaintext: dek.expose().to_vec(),
                ciphertext: c.text,
            })
        }
        .await;
        self.reply(&ctx, "GenerateDataKey", r).await
    }

    async fn unwrap_data_key(&self, req: Request<pb::DecryptRequest>) -> Rpc<pb::DecryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let p = self
                .kms()
                .unwrap_data_key(&ctx, &name, &m.ciphertext, &m.aad)
                .await?;
            Ok(pb::DecryptResponse {
                plaintext: p.expose().to_vec(),
            })
        }
        .await;
        self.reply(&ctx, "UnwrapDataKey", r).await
    }

    async fn generate_model_key(
        &self,
        req: Request<pb::GenerateModelKeyRequest>,
    ) -> Rpc<pb::ModelKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_model_name(&m.key))?;
            let seg = (m.segment_size != 0).then_some(m.segment_size);
            let k = self.kms().model_key(&ctx, &name, &m.metadata, seg).await?;
            Ok(model_key_pb(k))
        }
        .await;
        self.reply(&ctx, "GenerateModelKey", r).await
    }

    async fn unwrap_model_key(&self, req: Request<pb::UnwrapModelKeyRequest>) -> Rpc<pb::ModelKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_model_name(&m.key))?;
            let k = self.kms().model_unwrap(&ctx, &name, &m.header).await?;
            Ok(model_key_pb(k))
        }
        .await;
        self.reply(&ctx, "UnwrapModelKey", r).await
    }

    async fn sign(&self, req: Request<pb::SignRequest>) -> Rpc<pb::Signature> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let mut sigs = self
                .kms()
                .sign_messages(&ctx, &name, &[m.message], m.prehashed)
                .await?;
            Ok(to_pb(&sigs.remove(0))?)
        }
        .await;
        self.reply(&ctx, "Sign", r).await
    }

    async fn sign_batch(&self, req: Request<pb::SignBatchRequest>) -> Rpc<pb::SignBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            if m.messages.is_empty() {
                return Err(Fail::Local(Error::invalid("request: messages: empty")));
            }
            let name = local(self.kms().parse_name(&m.key))?;
            let sigs = self
                .kms()
                .sign_messages(&ctx, &name, &m.messages, m.prehashed)
                .await?;
            Ok(pb::SignBatchResponse {
                signatures: to_pb(&sigs)?,
            })
        }
        .await;
        self.reply(&ctx, "SignBatch", r).await
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Rpc<pb::VerifyResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let mut v = self
                .kms()
                .verify_messages(&ctx, &name, &[(m.message, m.signature)], m.prehashed)
                .await?;
            Ok(to_pb(&v.remove(0))?)
        }
        .await;
        self.reply(&ctx, "Verify", r).await
    }

    async fn verify_batch(
        &self,
        req: Request<pb::VerifyBatchRequest>,
    ) -> Rpc<pb::VerifyBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            if m.items.is_empty() {
                return Err(Fail::Local(Error::invalid("request: items: empty")));
            }
            let name = local(self.kms().parse_name(&m.key))?;
            let items: Vec<(Vec<u8>, Vec<u8>)> = m
                .items
                .into_iter()
                .map(|i| (i.message, i.signature))
                .collect();
            let v = self
                .kms()
                .verify_messages(&ctx, &name, &items, m.prehashed)
                .await?;
            Ok(pb::VerifyBatchResponse {
                verdicts: to_pb(&v)?,
            })
        }
        .await;
        self.reply(&ctx, "VerifyBatch", r).await
    }

    async fn sign_poai(&self, req: Request<pb::SignPoaiRequest>) -> Rpc<pb::SignedAttestation> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let att = m.attestation.ok_or_else(|| missing("attestation"))?;
            let att = local(from_pb("attestation", &att))?;
            Ok(to_pb(
                &self.kms().sign_poai(&ctx, &name, att, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "SignPoai", r).await
    }

    async fn verify_poai(&self, req: Request<pb::SignedAttestation>) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let signed: SignedAttestation = local(from_pb("request", &m))?;
            Ok(to_pb(
                &self.kms().verify_poai(&ctx, &signed, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "VerifyPoai", r).await
    }

    async fn sign_poai_batch(
        &self,
        req: Request<pb::SignPoaiBatchRequest>,
    ) -> Rpc<pb::SignPoaiBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let atts = m
                .attestations
                .into_iter()
                .enumerate()
                .map(|(i, a)| attestation_from_pb(i, a))
                .collect::<Result<Vec<_>>>()
                .map_err(Fail::Local)?;
            let items = self
                .kms()
                .sign_poai_batch(&ctx, &name, atts, now_u64())
                .await?;
            Ok(pb::SignPoaiBatchResponse {
                items: items.into_iter().map(batch_item_to_pb).collect(),
            })
        }
        .await;
        self.reply(&ctx, "SignPoaiBatch", r).await
    }

    async fn verify_poai_batch_item(&self, req: Request<pb::BatchItem>) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let item: BatchItem = local(from_pb("request", &m))?;
            Ok(to_pb(
                &self.kms().verify_batch_item(&ctx, &item, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "VerifyPoaiBatchItem", r).await
    }

    async fn sign_hmm_settlement(
        &self,
        req: Request<pb::SignHmmSettlementRequest>,
    ) -> Rpc<pb::SignedSettlement> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let s = m.settlement.ok_or_else(|| missing("settlement"))?;
            let s = local(from_pb("settlement", &s))?;
            let att: Option<SignedAttestation> = match &m.attestation {
                Some(a) => Some(local(from_pb("attestation", a))?),
                None => None,
            };
            let item: Option<BatchItem> = match &m.attestation_item {
                Some(i) => Some(local(from_pb("attestation_item", i))?),
                None => None,
            };
            let paid = local(Paid::of(att.as_ref(), item.as_ref()))?;
            let signed = self.kms().sign_hmm(&ctx, &name, s, paid, now_u64()).await?;
            Ok(to_pb(&signed)?)
        }
        .await;
        self.reply(&ctx, "SignHmmSettlement", r).await
    }

    async fn verify_hmm_settlement(
        &self,
        req: Request<pb::VerifyHmmSettlementRequest>,
    ) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let signed = m.signed.ok_or_else(|| missing("signed"))?;
            let signed: SignedSettlement = local(from_pb("signed", &signed))?;
            let att: Option<SignedAttestation> = match &m.attestation {
                Some(a) => Some(local(from_pb("attestation", a))?),
                None => None,
            };
            let v = self
                .kms()
                .verify_hmm(&ctx, &signed, att.as_ref(), now_u64())
                .await?;
            Ok(to_pb(&v)?)
        }
        .await;
        self.reply(&ctx, "VerifyHmmSettlement", r).await
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Rpc<pb::AuditRecords> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let limit = if m.limit == 0 { 100 } else { m.limit.min(1000) };
            let records = self.kms().audit_records(&ctx, m.after, limit).await?;
            let json: Vec<_> = records.iter().map(|r| r.to_json()).collect();
            Ok(pb::AuditRecords {
                records: to_pb(&json)?,
            })
        }
        .await;
        self.reply(&ctx, "ListAudit", r).await
    }

    async fn verify_audit(&self, req: Request<pb::Empty>) -> Rpc<pb::AuditReport> {
        let (ctx, _) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> =
            async { Ok(to_pb(&self.kms().audit_verify(&ctx).await?.to_json())?) }.await;
        self.reply(&ctx, "VerifyAudit", r).await
    }

    async fn create_token(&self, req: Request<pb::CreateTokenRequest>) -> Rpc<pb::CreatedToken> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let roles = m
                .roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>>>()
                .map_err(Fail::Local)?;
            let (info, token) = self
                .kms()
                .create_token_for(
                    &ctx,
                    &m.tenant,
                    &roles,
                    &m.patterns,
                    &m.description,
                    m.ttl_secs,
                )
                .await?;
            Ok(pb::CreatedToken {
                info: Some(to_pb(&info)?),
                token: token.expose().to_owned(),
            })
        }
        .await;
        self.reply(&ctx, "CreateToken", r).await
    }

    async fn list_tokens(&self, req: Request<pb::Empty>) -> Rpc<pb::TokenList> {
        let (ctx, _) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            Ok(pb::TokenList {
                tokens: to_pb(&self.kms().list_tokens(&ctx).await?)?,
            })
        }
        .await;
        self.reply(&ctx, "ListTokens", r).await
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Rpc<pb::TokenInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> =
            async { Ok(to_pb(&self.kms().revoke_token(&ctx, &m.id).await?)?) }.await;
        self.reply(&ctx, "RevokeToken", r).await
    }
}

fn model_key_pb(k: ModelKey) -> pb::ModelKey {
    pb::ModelKey {
        header: k.header,
        data_key: k.dek.expose().to_vec(),
        key: k.key,
        version: k.version,
    }
}

// The batch path converts directly, without the JSON detour of `to_pb`/`from_pb`: it carries
// hundreds of items per call (the detour was ~15 % of its CPU). The field forms are the same.

pub(crate) fn attestation_from_pb(i: usize, a: pb::PoAiAttestation) -> Result<PoAIAttestation> {
    let b32 = |field: &str, s: &str| {
        B32::parse(s).map_err(|e| Error::invalid(format!("attestations[{i}].{field}: {e}")))
    };
    Ok(PoAIAttestation {
        input_hash: b32("input_hash", &a.input_hash)?,
        output_hash: b32("output_hash", &a.output_hash)?,
        nonce: a.nonce.as_deref().map(|n| b32("nonce", n)).transpose()?,
        model_id: a.model_id,
        timestamp: a.timestamp,
        compute_time_ms: a.compute_time_ms,
        node_id: a.node_id,
    })
}

pub(crate) fn attestation_to_pb(a: PoAIAttestation) -> pb::PoAiAttestation {
    pb::PoAiAttestation {
        input_hash: a.input_hash.to_hex(),
        output_hash: a.output_hash.to_hex(),
        nonce: a.nonce.map(|n| n.to_hex()),
        model_id: a.model_id,
        timestamp: a.timestamp,
        compute_time_ms: a.compute_time_ms,
        node_id: a.node_id,
    }
}

fn batch_item_to_pb(it: BatchItem) -> pb::BatchItem {
    pb::BatchItem {
        batch: Some(pb::PoAiBatch {
            root: it.batch.root.to_hex(),
            count: it.batch.count,
            timestamp: it.batch.timestamp,
        }),
        batch_digest: it.batch_digest.to_hex(),
        signature: it.signature.to_hex(),
        signer: it.signer,
        algorithm: it.algorithm,
        key: it.key,
        version: it.version,
        attestation: Some(attestation_to_pb(it.attestation)),
        digest: it.digest.to_hex(),
        index: it.index,
        proof: it
            .proof
            .into_iter()
            .map(|p| pb::ProofStep {
                hash: p.hash.to_hex(),
                left: p.left,
            })
            .collect(),
        pq: it.pq.map(|pq| pb::PqSignature {
            key: pq.key,
            version: pq.version,
            algorithm: pq.algorithm,
            signature: pq.signature.to_hex(),
            signer: pq.signer,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body as _, Frame};

    use super::*;

    /// A body of one data frame and trailers, as tonic's unary answer is.
    struct Answer(Vec<Frame<Bytes>>);

    impl http_body::Body for Answer {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
            Poll::Ready((!self.0.is_empty()).then(|| Ok(self.0.remove(0))))
        }
    }

    #[tokio::test]
    async fn a_secret_answer_is_passed_on_whole_and_only_a_last_handle_is_wiped() {
        // Cut from a buffer that is then dropped: the frame is its last handle.
        let mut buf = bytes::BytesMut::from(&b"\0\0\0\0\x07secret!"[..]);
        let frame = buf.split().freeze();
        drop(buf);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body = Wiped::new(tonic::body::Body::new(Answer(vec![
            Frame::data(frame.clone()),
            Frame::trailers(trailers),
        ])));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(Ok(first))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("no data frame");
        };
        assert_eq!(first.into_data().unwrap(), frame);
        let Poll::Ready(Some(Ok(second))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("no trailers");
        };
        assert_eq!(second.trailers_ref().unwrap()["grpc-status"], "0");
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(body.is_end_stream());

        // The wipe itself: a last handle is zeroed in place, a shared one is left alone.
        let wiped = wipe(frame).expect("the test's clone was the last handle");
        assert_eq!(&wiped[..], &[0u8; 12][..]);
        let shared = Bytes::from(b"secret".to_vec());
        let other = shared.clone();
        assert!(wipe(shared).is_none());
        assert_eq!(&other[..], b"secret");
    }

    /// `SECRET_ANSWERS` is every RPC that returns one of `SECRET_MESSAGES`, and only those.
    #[test]
    fn the_secret_answers_are_the_rpcs_that_return_a_secret_message() {
        let proto = include_str!("../../../proto/hanzo/kms/v1/kms.proto");
        let mut found: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter(|l| {
                let returns = l.split("returns (").nth(1).unwrap_or_default();
                let message = returns.split(')').next().unwrap_or_default();
                hanzo_kms_proto::SECRET_MESSAGES.contains(&message)
            })
            .map(|l| l.split('(').next().unwrap_or_default())
            .collect();
        found.sort_unstable();
        let mut listed = SECRET_ANSWERS.to_vec();
        listed.sort_unstable();
        assert_eq!(found, listed);
    }
}
