//! The Hanzo KMS server: REST over the one request pipeline (DESIGN.md §5).
//!
//! Every handler does the same three things: authenticate the bearer token into a
//! [`RequestCtx`] (pipeline step 1), parse the body with field-path errors, and call the same
//! `Kms` method the CLI calls. Errors are mapped to HTTP status by [`ErrorKind`], in one `match`
//! ([`status_of`]), never by message text. A 5xx body is generic; the details go to the log with
//! the request id.
//!
//! ```text
//! error body = {"error": {"code": "<ErrorKind::code>", "message": "...", "request_id": "..."}}
//! ```

#![forbid(unsafe_code)]

pub mod grpc;
mod http;
mod operation;
mod ops;
mod schema;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation, from_json};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Health, Result};
use hanzo_kms_service::ratelimit::ConfiguredLimiter;
use hanzo_kms_service::sign::{BatchItem, SignedAttestation, SignedSettlement};
use hanzo_kms_service::{Kms, Principal, RequestCtx, Role, now_secs};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// The REST routes: method, path, summary. The router and `/v1/openapi.json` are both built
/// from this table, and a test checks every entry against the running server.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/keys", "Create a key"),
    ("GET", "/v1/keys", "List keys (?prefix=)"),
    ("GET", "/v1/keys/{name}", "Show a key"),
    ("POST", "/v1/keys/{name}/rotate", "Rotate a key"),
    (
        "POST",
        "/v1/keys/{name}/encrypt",
        "Encrypt small data (base64)",
    ),
    (
        "POST",
        "/v1/keys/{name}/decrypt",
        "Decrypt an hkms:v… ciphertext",
    ),
    (
        "POST",
        "/v1/keys/{name}/datakey",
        "Generate a data key: plaintext and wrapped",
    ),
    ("POST", "/v1/keys/{name}/unwrap", "Unwrap a data key"),
    (
        "POST",
        "/v1/keys/{name}/sign",
        "Sign messages with an api: key",
    ),
    (
        "POST",
        "/v1/keys/{name}/verify",
        "Verify signatures of an api: key",
    ),
    (
        "GET",
        "/v1/keys/{name}/public",
        "The primary version's public key",
    ),
    ("POST", "/v1/keyspaces", "CreateModelKeyspace"),
    (
        "POST",
        "/v1/models/{name}/datakey",
        "A new model-file header and its data key (the client encrypts the weights)",
    ),
    (
        "POST",
        "/v1/models/{name}/unwrap",
        "The data key of a model-file header (the client decrypts the weights)",
    ),
    ("POST", "/v1/poai/sign", "Sign a PoAI attestation (EIP-712)"),
    ("POST", "/v1/poai/verify", "Verify a signed attestation"),
    (
        "POST",
        "/v1/poai/sign-batch",
        "Sign attestations under one Merkle root",
    ),
    ("POST", "/v1/poai/verify-item", "Verify one batch item"),
    ("POST", "/v1/hmm/sign", "Sign an HMM settlement"),
    ("POST", "/v1/hmm/verify", "Verify a signed settlement"),
    (
        "GET",
        "/v1/audit",
        "Audit records after SEQ, oldest first (?after=SEQ&limit=N, N at most 1000). Each listing \
         is audited itself, so the log never runs dry: a page shorter than N is the end for now",
    ),
    ("GET", "/v1/audit/verify", "Verify the audit hash chain"),
    ("POST", "/v1/tokens", "Create an API token"),
    ("GET", "/v1/tokens", "List API tokens"),
    ("DELETE", "/v1/tokens/{id}", "Revoke an API token"),
    ("GET", "/healthz", "Liveness"),
    ("GET", "/readyz", "Readiness: store and provider"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/v1/openapi.json", "This API's OpenAPI document"),
];

/// Server settings (from the config's `server` section).
#[derive(Clone, Debug)]
pub struct Options {
    pub rest_addr: String,
    /// The gRPC listener; `None` serves REST only.
    pub grpc_addr: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// REST: how long a request's headers may take to arrive, and how long a keep-alive
    /// connection may sit idle (`server.header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// How often the rotation scheduler runs; `None` disables it.
    pub scheduler_every: Option<Duration>,
    /// TLS for both listeners (`server.tls`); `None` serves plain HTTP.
    pub tls: Option<hanzo_kms_core::config::TlsConfig>,
}

impl Options {
    pub fn from_config(c: &hanzo_kms_core::Config) -> Self {
        Self {
            rest_addr: c.server.rest_addr.clone(),
            grpc_addr: Some(c.server.grpc_addr.clone()).filter(|a| !a.is_empty()),
            max_body_bytes: usize::try_from(c.server.max_body_bytes).unwrap_or(usize::MAX),
            // At most a day, like the header timeout (the shutdown grace adds 1.9 s to it).
            request_timeout: Duration::from_secs(c.server.request_timeout_secs.clamp(1, 86_400)),
            // At most a day: HTTP/2's keep-alive timer adds it to an instant.
            header_read_timeout: Duration::from_secs(
                c.server.header_read_timeout_secs.clamp(1, 86_400),
            ),
            scheduler_every: Some(Duration::from_secs(60)),
            tls: c.server.tls.clone(),
        }
    }
}

pub(crate) struct AppState {
    kms: Kms,
    limiter: Option<Arc<ConfiguredLimiter>>,
    /// Requests by route, then status.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    timeouts: std::sync::atomic::AtomicU64,
}

type Shared = Arc<AppState>;

impl AppState {
    /// Count a request for `/metrics`.
    fn count(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        // The route's name is copied only the first time it is counted.
        match requests.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_insert(0) += 1,
            None => {
                requests.insert(route.to_owned(), BTreeMap::from([(status, 1)]));
            }
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    max_body_bytes: usize,
    request_timeout: Duration,
    /// How long a stopping server waits for requests in flight.
    grace: Duration,
    header_read_timeout: Duration,
    tls: Option<(tls::Pem, Arc<tokio_rustls::rustls::ServerConfig>)>,
    grpc_builder: tonic::transport::Server,
    app: Router,
    state: Shared,
    scheduler_every: Option<Duration>,
}

impl Server {
    /// Bind the REST listener. An address in use or invalid is a config error naming
    /// `server.rest_addr`.
    pub async fn bind(
        kms: Kms,
        limiter: Option<Arc<ConfiguredLimiter>>,
        opts: &Options,
    ) -> Result<Self> {
        // Read the TLS files first: a bad certificate stops the start before anything listens.
        let tls = opts.tls.as_ref().map(tls::load).transpose()?;
        // The request timeout is applied per RPC in `grpc::service` (VerifyAudit gets longer);
        // tonic still honours a client's own `grpc-timeout`.
        let mut grpc_builder = tonic::transport::Server::builder();
        if let Some((pem, _)) = &tls {
            let mut c = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&pem.cert, pem.key.as_slice()),
            );
            if let Some(ca) = &pem.client_ca {
                c = c.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            grpc_builder = grpc_builder
                .tls_config(c)
                .map_err(|e| Error::new(ErrorKind::Config, format!("server.tls: {e}")))?;
        }
        let listener = listen("server.rest_addr", &opts.rest_addr).await?;
        let grpc = match &opts.grpc_addr {
            Some(a) => Some(listen("server.grpc_addr", a).await?),
            None => None,
        };
        let state = Arc::new(AppState {
            kms,
            limiter,
            requests: Mutex::new(BTreeMap::new()),
            timeouts: Default::default(),
        });
        let app = router(state.clone(), opts.max_body_bytes, opts.request_timeout);
        Ok(Self {
            listener,
            grpc,
            max_body_bytes: opts.max_body_bytes,
            request_timeout: opts.request_timeout,
            // A request cut off at its timeout still writes that record (at most
            // TIMEOUT_AUDIT_LIMIT) and its answer.
            grace: opts.request_timeout + TIMEOUT_AUDIT_LIMIT + Duration::from_secs(1),
            header_read_timeout: opts.header_read_timeout,
            tls,
            grpc_builder,
            app,
            state,
            scheduler_every: opts.scheduler_every,
        })
    }

    /// The REST listener's address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, "reading the listen address").with_source(e))
    }

    /// Whether the listeners speak TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The gRPC listener's address, if gRPC is served.
    pub fn grpc_addr(&self) -> Result<Option<SocketAddr>> {
        self.grpc
            .as_ref()
            .map(|l| {
                l.local_addr().map_err(|e| {
                    Error::new(ErrorKind::Io, "reading the listen address").with_source(e)
                })
            })
            .transpose()
    }

    /// Serve REST and gRPC until `shutdown` completes, then finish the requests in flight on
    /// both before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let background = self
            .scheduler_every
            .map(|every| tokio::spawn(scheduler(self.state.clone(), every)));
        let health_checks = self.state.kms.failover().map(|_| {
            let every = self
                .state
                .kms
                .config()
                .kms
                .lux
                .failover
                .health_check_interval
                .0;
            tokio::spawn(failover_checks(self.state.clone(), every))
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let grpc_builder = self.grpc_builder;
        let grpc = self.grpc.map(|listener| {
            let svc = grpc::service(
                self.state.clone(),
                self.max_body_bytes,
                self.request_timeout,
            );
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hanzo_kms_proto::v1::FILE_DESCRIPTOR_SET)
                .build_v1();
            let mut grpc_builder = grpc_builder;
            let builder = grpc_builder.add_service(svc);
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                let router = match reflection {
                    Ok(r) => builder.add_service(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC reflection is unavailable");
                        builder
                    }
                };
                router
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        stop,
                    )
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, "serving gRPC").with_source(e))
            })
        });
        let app = self.app;
        let header_timeout = self.header_read_timeout;
        let grace_rx = stop_rx.clone();
        let serving = async move {
            match self.tls {
                Some((_, config)) => {
                    let listener = tls::TlsListener::new(self.listener, config)
                        .map_err(|e| Error::new(ErrorKind::Io, "starting TLS").with_source(e))?;
                    http::serve(listener, app, header_timeout, stopped(stop_rx)).await;
                }
                None => {
                    use axum::serve::ListenerExt;
                    let listener = self.listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    http::serve(listener, app, header_timeout, stopped(stop_rx)).await;
                }
            }
            match grpc {
                Some(t) => t
                    .await
                    .map_err(|e| Error::internal(format!("the gRPC server task failed: {e}")))
                    .and_then(|r| r),
                None => Ok(()),
            }
        };
        // Graceful, but bounded: after the signal, requests in flight get the request timeout
        // (plus 1.9 s: a timeout's audit record and answer) to finish; idle keep-alive
        // connections and clients that never close their HTTP/2 connection do not hold the
        // process up past that.
        let grace = self.grace;
        let deadline = async move {
            stopped(grace_rx).await;
            tokio::time::sleep(grace).await;
        };
        let r = tokio::select! {
            r = serving => r,
            () = deadline => {
                tracing::warn!(?grace, "shutdown: connections still open after the grace period were closed");
                Ok(())
            }
        };
        for b in [background, health_checks].into_iter().flatten() {
            b.abort();
        }
        self.state.kms.close().await;
        r
    }
}

async fn listen(setting: &str, addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{setting} {addr}: cannot listen"),
        )
        .with_source(e)
    })
}

/// Failover health checks (`kms.lux.failover.health_check_interval`); transitions are logged
/// and audited by the service, and counted in `/metrics`.
async fn failover_checks(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.kms.failover_check().await;
    }
}

/// The rotation scheduler (`rotate --due`, `destroy --due`) and limiter housekeeping. Safe on
/// every node: rotation and destruction are transactions that re-check the key's state.
async fn scheduler(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let ctx = system_ctx();
        let now = now_secs();
        for (what, r) in [
            ("rotate", state.kms.rotate_due(&ctx, now).await),
            ("destroy", state.kms.destroy_due(&ctx, now).await),
        ] {
            match r {
                Ok(done) => {
                    for d in done {
                        match d.result {
                            Ok(_) => tracing::info!(key = %d.key, "scheduler: {what} done"),
                            Err(e) => {
                                tracing::warn!(key = %d.key, error = %e, "scheduler: {what} failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler: {what} pass failed"),
            }
        }
        if let Some(l) = &state.limiter {
            l.forget_idle();
        }
    }
}

fn system_ctx() -> RequestCtx {
    RequestCtx {
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: Principal {
            id: "system:scheduler".into(),
            tenant: None,
            roles: vec![Role::Admin],
            patterns: Vec::new(),
        },
        peer: None,
    }
}

/// The router, with the body limit and [`around`] every request.
fn router(state: Shared, max_body: usize, timeout: Duration) -> Router {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{name}", get(show_key))
        .route("/v1/keys/{name}/rotate", post(rotate_key))
        .route("/v1/keys/{name}/encrypt", post(encrypt))
        .route("/v1/keys/{name}/decrypt", post(decrypt))
        .route("/v1/keys/{name}/datakey", post(datakey))
        .route("/v1/keys/{name}/unwrap", post(unwrap))
        .route("/v1/keys/{name}/sign", post(sign_raw))
        .route("/v1/keys/{name}/verify", post(verify_raw))
        .route("/v1/keys/{name}/public", get(public_key))
        .route("/v1/keyspaces", post(create_keyspace))
        .route("/v1/models/{name}/datakey", post(model_datakey))
        .route("/v1/models/{name}/unwrap", post(model_unwrap))
        .route("/v1/poai/sign", post(poai_sign))
        .route("/v1/poai/verify", post(poai_verify))
        .route("/v1/poai/sign-batch", post(poai_sign_batch))
        .route("/v1/poai/verify-item", post(poai_verify_item))
        .route("/v1/hmm/sign", post(hmm_sign))
        .route("/v1/hmm/verify", post(hmm_verify))
        .route("/v1/audit", get(audit_list))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Around {
                state: state.clone(),
                timeout,
            },
            around,
        ))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// An error on its way to the client.
pub struct ApiError {
    error: Error,
    request_id: String,
    status: Option<StatusCode>,
    /// Set when an authenticated request was refused by this layer's own checks, before any
    /// service operation could audit it; [`around`] records it.
    unaudited: Option<Box<RequestCtx>>,
}

impl ApiError {
    fn new(error: Error, request_id: &str) -> Self {
        Self {
            error,
            request_id: request_id.to_owned(),
            status: None,
            unaudited: None,
        }
    }

    /// A refusal of an authenticated request by the API layer itself (a body that is not the
    /// route's JSON, a field that is not base64): audited on its way out.
    fn refused(error: Error, ctx: &RequestCtx) -> Self {
        Self {
            unaudited: Some(Box::new(ctx.clone())),
            ..Self::new(error, &ctx.request_id)
        }
    }

    fn with_status(mut self, s: StatusCode) -> Self {
        self.status = Some(s);
        self
    }
}

/// The one mapping from error kind to HTTP status and gRPC code, for both APIs.
pub fn wire_status(kind: ErrorKind) -> (StatusCode, tonic::Code) {
    use tonic::Code;
    match kind {
        ErrorKind::AlreadyExists => (StatusCode::CONFLICT, Code::AlreadyExists),
        ErrorKind::KeyState => (StatusCode::CONFLICT, Code::FailedPrecondition),
        ErrorKind::Replayed => (StatusCode::CONFLICT, Code::Aborted),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidArgument => {
            (StatusCode::BAD_REQUEST, Code::InvalidArgument)
        }
        ErrorKind::Unsupported => (StatusCode::BAD_REQUEST, Code::Unimplemented),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, Code::NotFound),
        ErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, Code::PermissionDenied),
        ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, Code::ResourceExhausted),
        ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
        ErrorKind::AuditFailure | ErrorKind::NotInitialized | ErrorKind::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
    }
}

/// The HTTP status of an error kind (see [`wire_status`]).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    wire_status(kind).0
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| status_of(self.error.kind()));
        let message = if status.is_server_error() {
            tracing::error!(request_id = %self.request_id, code = self.error.kind().code(), error = %self.error, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "service unavailable".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            self.error.message().to_owned()
        };
        let code = match self.status {
            Some(StatusCode::PAYLOAD_TOO_LARGE) => "payload_too_large",
            Some(StatusCode::REQUEST_TIMEOUT) => "timeout",
            Some(StatusCode::METHOD_NOT_ALLOWED) => "method_not_allowed",
            _ => self.error.kind().code(),
        };
        let body =
            json!({"error": {"code": code, "message": message, "request_id": self.request_id}});
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(ctx) = self.unaudited {
            resp.extensions_mut().insert(Unaudited {
                ctx,
                error: Arc::new(self.error),
            });
        } else if let Some(wait) = self.error.retry_after() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

type ApiResult = std::result::Result<JsonBody, ApiError>;

/// A JSON answer, serialized once (`axum::Json` of a `serde_json::Value` built the value and
/// then serialized it: two passes and an allocation per field, on every signing request).
struct JsonBody(Vec<u8>);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The bearer token of a request's `authorization` header (REST and gRPC alike), or "", which
/// does not authenticate.
fn bearer(authorization: Option<&HeaderValue>) -> &str {
    authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// Middleware.

/// A refusal [`around`] still has to record (see [`ApiError::refused`]).
#[derive(Clone)]
struct Unaudited {
    ctx: Box<RequestCtx>,
    error: Arc<Error>,
}

/// A request's id, drawn by [`around`] before the handler runs, so that the handler's audit
/// records and a timeout's carry the same one.
#[derive(Clone, Copy)]
struct RequestId(uuid::Uuid);

/// `GET /v1/audit/verify` reads the whole log (40,000–140,000 records a second on SQLite), so it
/// gets at least this long rather than the request timeout. Past that, `hanzo-kms audit verify`
/// checks the store offline, with no time limit.
pub(crate) const AUDIT_VERIFY_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a timed-out request waits for its record to be confirmed. The answer is already
/// late. A record not confirmed in time was still handed to the store and may yet be written;
/// the client is told the audit could not be confirmed. A stopping server allows for this wait.
pub(crate) const TIMEOUT_AUDIT_LIMIT: Duration = Duration::from_millis(900);

/// What [`around`] needs besides the request.
#[derive(Clone)]
struct Around {
    state: Shared,
    timeout: Duration,
}

/// Around every request, outermost first: count it by route and status for `/metrics`, cancel
/// it after the request timeout (408) and audit that, and audit what the REST layer refused
/// itself. One middleware rather than three: each of axum's `from_fn` layers boxes the inner
/// service and its future on every request, and moves the nested futures, which were about 3 %
/// of a signing request's CPU (docs/benchmarks.md, session 18).
///
/// Every request is audited, allowed or denied (DESIGN.md §5). The service audits everything
/// that reaches an operation; this records the rest: authenticated requests the REST layer
/// refused itself, and requests cut off by the timeout. If the record cannot be written, the
/// client gets the audit failure instead of the refusal or the 408.
async fn around(State(a): State<Around>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let operation = route.as_ref().map_or(operation::UNKNOWN, |p| {
        operation::of_route(req.method().as_str(), p.as_str())
    });
    let limit = match &route {
        Some(p) if p.as_str() == "/v1/audit/verify" => a.timeout.max(AUDIT_VERIFY_TIMEOUT),
        _ => a.timeout,
    };
    let id = RequestId(uuid::Uuid::new_v4());
    req.extensions_mut().insert(id);
    let (mut parts, body) = req.into_parts();
    let key = axum::extract::RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "name")
                .map(|(_, v)| v.to_owned())
        });
    // For the record of a timeout: a handle on the header's bytes, not a copy of the token.
    let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let state = &a.state;
    let answer = async {
        let mut resp = next.run(Request::from_parts(parts, body)).await;
        let Some(u) = resp.extensions_mut().remove::<Unaudited>() else {
            return resp;
        };
        match state
            .kms
            .audit_refusal(&u.ctx, operation, key.clone(), &u.error)
            .await
        {
            Ok(()) => resp,
            Err(e) => ApiError::new(e, &u.ctx.request_id).into_response(),
        }
    };
    let resp = match tokio::time::timeout(limit, answer).await {
        Ok(r) => r,
        Err(_) => {
            state
                .timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            timed_out(state, operation, key, authorization.as_ref(), peer, id).await
        }
    };
    state.count(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        resp.status().as_u16(),
    );
    resp
}

/// The answer to a request cut off by the request timeout: 408, after its audit record
/// ([`Kms::audit_timeout`]). Routes without an operation (health, metrics, the OpenAPI
/// document, unknown routes) take no token and are not audited.
async fn timed_out(
    state: &AppState,
    operation: &'static str,
    key: Option<String>,
    authorization: Option<&HeaderValue>,
    peer: Option<SocketAddr>,
    id: RequestId,
) -> Response {
    let request_id = id.0.to_string();
    let cut_off = ApiError::new(
        Error::new(
            ErrorKind::Unavailable,
            "the request took too long and was cancelled",
        ),
        &request_id,
    )
    .with_status(StatusCode::REQUEST_TIMEOUT);
    if operation == operation::UNKNOWN {
        return cut_off.into_response();
    }
    match audit_cut_off(
        state,
        operation,
        key,
        authorization,
        peer.map(|p| p.to_string()),
        &request_id,
    )
    .await
    {
        Ok(()) => cut_off.into_response(),
        Err(e) => ApiError::new(e, &request_id).into_response(),
    }
}

/// The audit record of a request (REST or gRPC) cut off by the request timeout
/// ([`Kms::audit_timeout`]), waited for at most [`TIMEOUT_AUDIT_LIMIT`]. The token is
/// authenticated again (from the token cache): the handler's context went with it. Fails with
/// the authentication error for a token that no longer authenticates (that refusal is
/// recorded), or with the audit failure.
pub(crate) async fn audit_cut_off(
    state: &AppState,
    operation: &'static str,
    key: Option<String>,
    authorization: Option<&HeaderValue>,
    peer: Option<String>,
    request_id: &str,
) -> Result<()> {
    let audited = tokio::time::timeout(TIMEOUT_AUDIT_LIMIT, async {
        let ctx = state
            .kms
            .authenticate_as(bearer(authorization), peer, request_id.to_owned())
            .await?;
        state.kms.audit_timeout(&ctx, operation, key).await
    })
    .await;
    audited.unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::AuditFailure,
            "the record of a timed-out request was not confirmed in time",
        ))
    })
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Error::new(
            ErrorKind::NotFound,
            format!("no route for {method} {}", uri.path()),
        ),
        &fresh_id(),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Error::invalid(format!("{method} is not allowed on {}", uri.path())),
        &fresh_id(),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

// ---------------------------------------------------------------------------------------------
// Request plumbing.

/// An authenticated request: pipeline step 1, as an extractor every API handler takes first. A
/// missing or malformed header is authenticated (and audited) like any bad token.
struct Authed(RequestCtx);

impl FromRequestParts<Shared> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> std::result::Result<Self, ApiError> {
        let bearer = bearer(parts.headers.get(header::AUTHORIZATION));
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(fresh_id, |id| id.0.to_string());
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
struct Param(std::result::Result<String, String>);

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
    fn get(self, ctx: &RequestCtx) -> std::result::Result<String, ApiError> {
        self.0.map_err(|detail| {
            ApiError::refused(Error::invalid(format!("the request path: {detail}")), ctx)
        })
    }
}

fn body_text(
    ctx: &RequestCtx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<String, ApiError> {
    let bytes = body.map_err(|r| {
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
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::refused(Error::invalid("the request body is not UTF-8"), ctx))
}

/// A REST request body, and the route whose schema (`schema::request_body`) describes it.
trait RequestBody: for<'de> Deserialize<'de> {
    const ROUTE: &'static str;
}

macro_rules! request_bodies {
    ($($t:ty => $route:literal),* $(,)?) => {
        $(impl RequestBody for $t {
            const ROUTE: &'static str = $route;
        })*
    };
}

request_bodies! {
    CreateKey => "/v1/keys",
    RotateReq => "/v1/keys/{name}/rotate",
    EncryptReq => "/v1/keys/{name}/encrypt",
    DecryptReq => "/v1/keys/{name}/decrypt",
    DatakeyReq => "/v1/keys/{name}/datakey",
    SignReq => "/v1/keys/{name}/sign",
    VerifyReq => "/v1/keys/{name}/verify",
    KeyspaceReq => "/v1/keyspaces",
    ModelKeyReq => "/v1/models/{name}/datakey",
    ModelUnwrapReq => "/v1/models/{name}/unwrap",
    PoaiSignReq => "/v1/poai/sign",
    SignedAttestation => "/v1/poai/verify",
    PoaiBatchReq => "/v1/poai/sign-batch",
    BatchItem => "/v1/poai/verify-item",
    HmmSignReq => "/v1/hmm/sign",
    HmmVerifyReq => "/v1/hmm/verify",
    TokenReq => "/v1/tokens",
}

/// The request schemas by route, and the shared ones they refer to; built once, on the first
/// body that needs them.
static REQUEST_SCHEMAS: std::sync::LazyLock<(BTreeMap<&'static str, Value>, Value)> =
    std::sync::LazyLock::new(|| {
        let bodies = ROUTES
            .iter()
            .filter_map(|(m, p, _)| schema::request_body(m, p).map(|(s, _)| (*p, s)))
            .collect();
        (bodies, schema::components())
    });

fn parse<T: RequestBody>(
    ctx: &RequestCtx,
    body: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<T, ApiError> {
    let text = body_text(ctx, body)?;
    // serde reads a struct from a JSON array too (its fields in order). This API's request
    // bodies are objects, and so is every object within them, so an array in an object's place
    // is refused rather than read by position: the whole body here, and a nested one against
    // the route's schema (checked only for a body with a '[' in it; an attestation to sign has
    // none).
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::refused(
            Error::invalid("request: the body must be a JSON object"),
            ctx,
        ));
    }
    if text.contains('[')
        && let Ok(value) = serde_json::from_str::<Value>(&text)
    {
        let (bodies, components) = &*REQUEST_SCHEMAS;
        if let Some(at) = bodies
            .get(T::ROUTE)
            .and_then(|s| schema::array_for_object(s, &value, components))
        {
            return Err(ApiError::refused(
                Error::invalid(format!(
                    "request: {at}: expected a JSON object, found an array"
                )),
                ctx,
            ));
        }
    }
    from_json("request", &text).map_err(|e| ApiError::refused(e, ctx))
}

fn b64(ctx: &RequestCtx, field: &str, s: &str) -> std::result::Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| {
            ApiError::refused(
                Error::invalid(format!("request: {field}: not valid base64")),
                ctx,
            )
        })
}

fn enc(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ok(v: impl serde::Serialize) -> ApiResult {
    serde_json::to_vec(&v)
        .map(JsonBody)
        .map_err(|e| ApiError::new(Error::internal(format!("encoding JSON: {e}")), &fresh_id()))
}

/// The API layer's own check of a request (a key name, an algorithm): a refusal is audited
/// (see [`ApiError::refused`]).
fn check<T>(ctx: &RequestCtx, r: Result<T>) -> std::result::Result<T, ApiError> {
    r.map_err(|e| ApiError::refused(e, ctx))
}

/// Run a service call and attach the request id to its error.
fn on<T>(ctx: &RequestCtx, r: Result<T>) -> std::result::Result<T, ApiError> {
    r.map_err(|e| ApiError::new(e, &ctx.request_id))
}

type BodyResult = std::result::Result<Bytes, BytesRejection>;

// ---------------------------------------------------------------------------------------------
// Keys.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    rotation_days: Option<u32>,
}

async fn create_key(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
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
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list_keys(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::refused(Error::invalid(e.body_text()), &ctx))?;
    ok(on(&ctx, s.kms.list_keys(&ctx, &q.prefix).await)?)
}

async fn show_key(State(s): State<Shared>, Authed(ctx): Authed, name: Param) -> ApiResult {
    let name = name.get(&ctx)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    ok(on(&ctx, s.kms.show_key(&ctx, &name).await)?)
}

/// Rotation takes no options: its body is empty or `{}`, and anything else is refused rather
/// than ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateReq {}

async fn rotate_key(
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

/// Its plaintext (base64) is wiped when the request is done.
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct EncryptReq {
    plaintext: String,
    #[serde(default)]
    aad: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptReq {
    ciphertext: String,
    #[serde(default)]
    aad: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatakeyReq {
    #[serde(default)]
    aad: String,
}

async fn encrypt(
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
type SecretResult = std::result::Result<Response, ApiError>;

/// `{"plaintext": b64}`.
#[derive(Serialize)]
struct PlaintextOut<'a> {
    plaintext: &'a str,
}

/// A data key, in the clear and wrapped.
#[derive(Serialize)]
struct DataKeyOut<'a> {
    key: &'a str,
    version: u32,
    plaintext: &'a str,
    ciphertext: &'a str,
}

/// A model file's header and its data key.
#[derive(Serialize)]
struct ModelKeyOut<'a> {
    key: &'a str,
    version: u32,
    header: &'a str,
    data_key: &'a str,
}

/// Base64 of secret bytes, wiped when dropped.
fn enc_secret(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(enc(bytes))
}

/// A JSON answer holding secret material, without copies left behind in freed memory: `v` is
/// measured first, then written into one buffer of exactly that size, so the buffer never grows
/// (growing frees the old one unwiped), and the buffer is wiped when hyper has sent the body and
/// lets go of it (hyper queues the body's bytes for a vectored write; it does not copy them).
/// The secret's base64 is a [`Zeroizing`] string too. What TLS copies into its own records, and
/// the kernel's socket buffers, are outside this process's reach.
fn secret_json(v: &impl Serialize) -> SecretResult {
    let buf = hanzo_kms_core::secret::secret_json(v)
        .map_err(|e| ApiError::new(Error::internal(format!("encoding JSON: {e}")), &fresh_id()))?;
    let mut resp = Response::new(Body::from(Bytes::from_owner(buf)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn decrypt(
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

async fn datakey(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: DatakeyReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let aad = b64(&ctx, "aad", &req.aad)?;
    let (c, dek) = on(&ctx, ops::data_key(&s.kms, &ctx, &name, &aad).await)?;
    let plaintext = enc_secret(dek.expose());
    secret_json(&DataKeyOut {
        key: &c.key,
        version: c.version,
        plaintext: &plaintext,
        ciphertext: &c.text,
    })
}

async fn unwrap(
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
        ops::unwrap_data_key(&s.kms, &ctx, &name, &req.ciphertext, &aad).await,
    )?;
    let plaintext = enc_secret(p.expose());
    secret_json(&PlaintextOut {
        plaintext: &plaintext,
    })
}

/// `{"metadata": b64, "segment_size": n}` → a model-file header and its data key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelKeyReq {
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    segment_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelUnwrapReq {
    header: String,
}

fn model_key_json(m: &ops::ModelKey) -> SecretResult {
    let (header, data_key) = (enc(&m.header), enc_secret(m.dek.expose()));
    secret_json(&ModelKeyOut {
        key: &m.key,
        version: m.version,
        header: &header,
        data_key: &data_key,
    })
}

async fn model_datakey(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: ModelKeyReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let metadata = b64(&ctx, "metadata", &req.metadata)?;
    let m = on(
        &ctx,
        ops::model_key(&s.kms, &ctx, &name, &metadata, req.segment_size).await,
    )?;
    model_key_json(&m)
}

async fn model_unwrap(
    State(s): State<Shared>,
    Authed(ctx): Authed,
    name: Param,
    body: BodyResult,
) -> SecretResult {
    let name = name.get(&ctx)?;
    let req: ModelUnwrapReq = parse(&ctx, body)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    let header = b64(&ctx, "header", &req.header)?;
    let m = on(&ctx, ops::model_unwrap(&s.kms, &ctx, &name, &header).await)?;
    model_key_json(&m)
}

/// `{"message": b64}` or `{"messages": [b64…]}`, and `prehashed` for a secp256k1 digest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignReq {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    messages: Option<Vec<String>>,
    #[serde(default)]
    prehashed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyItem {
    message: String,
    signature: String,
}

/// `{"message": b64, "signature": "0x…"}` or `{"items": [{message, signature}…]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyReq {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    items: Option<Vec<VerifyItem>>,
    #[serde(default)]
    prehashed: bool,
}

/// A signature as text: `0x`-hex (what `sign` returns) or base64.
fn signature_bytes(
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

async fn sign_raw(
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

async fn verify_raw(
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

async fn public_key(State(s): State<Shared>, Authed(ctx): Authed, name: Param) -> ApiResult {
    let name = name.get(&ctx)?;
    let name = check(&ctx, s.kms.parse_name(&name))?;
    ok(on(&ctx, ops::public_key(&s.kms, &ctx, &name).await)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyspaceReq {
    customer: String,
    model: String,
    #[serde(default = "yes")]
    signing_keys: bool,
}

fn yes() -> bool {
    true
}

async fn create_keyspace(
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

// ---------------------------------------------------------------------------------------------
// Signing.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoaiSignReq {
    key: String,
    attestation: PoAIAttestation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoaiBatchReq {
    key: String,
    attestations: Vec<PoAIAttestation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HmmSignReq {
    key: String,
    settlement: HMMSettlement,
    #[serde(default)]
    attestation: Option<SignedAttestation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HmmVerifyReq {
    signed: SignedSettlement,
    #[serde(default)]
    attestation: Option<SignedAttestation>,
}

async fn poai_sign(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
    let req: PoaiSignReq = parse(&ctx, body)?;
    let key = check(&ctx, s.kms.parse_name(&req.key))?;
    ok(on(
        &ctx,
        s.kms
            .sign_poai(&ctx, &key, req.attestation, now_u64())
            .await,
    )?)
}

async fn poai_verify(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
    let signed: SignedAttestation = parse(&ctx, body)?;
    ok(on(&ctx, s.kms.verify_poai(&ctx, &signed, now_u64()).await)?)
}

async fn poai_sign_batch(
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

async fn poai_verify_item(
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

async fn hmm_sign(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
    let req: HmmSignReq = parse(&ctx, body)?;
    let key = check(&ctx, s.kms.parse_name(&req.key))?;
    ok(on(
        &ctx,
        s.kms
            .sign_hmm(
                &ctx,
                &key,
                req.settlement,
                req.attestation.as_ref(),
                now_u64(),
            )
            .await,
    )?)
}

async fn hmm_verify(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
    let req: HmmVerifyReq = parse(&ctx, body)?;
    ok(on(
        &ctx,
        s.kms
            .verify_hmm(&ctx, &req.signed, req.attestation.as_ref(), now_u64())
            .await,
    )?)
}

fn now_u64() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Audit and tokens.

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "hundred")]
    limit: u32,
}

fn hundred() -> u32 {
    100
}

async fn audit_list(
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

async fn audit_verify(State(s): State<Shared>, Authed(ctx): Authed) -> ApiResult {
    ok(on(&ctx, s.kms.audit_verify(&ctx).await)?.to_json())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenReq {
    tenant: String,
    roles: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    description: String,
}

async fn create_token(State(s): State<Shared>, Authed(ctx): Authed, body: BodyResult) -> ApiResult {
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
            .create_token(&ctx, &req.tenant, &roles, &req.patterns, &req.description)
            .await,
    )?;
    let mut v = serde_json::to_value(&info)
        .map_err(|e| ApiError::new(Error::internal(e.to_string()), &ctx.request_id))?;
    v["token"] = Value::String(token.expose().to_owned());
    ok(v)
}

async fn list_tokens(State(s): State<Shared>, Authed(ctx): Authed) -> ApiResult {
    ok(on(&ctx, s.kms.list_tokens(&ctx).await)?)
}

async fn revoke_token(State(s): State<Shared>, Authed(ctx): Authed, id: Param) -> ApiResult {
    let id = id.get(&ctx)?;
    ok(on(&ctx, s.kms.revoke_token(&ctx, &id).await)?)
}

// ---------------------------------------------------------------------------------------------
// Health, metrics, OpenAPI (no token needed).

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Shared>) -> Response {
    let store = s.kms.store_ready().await;
    let provider = s.kms.provider_health();
    let (status, body) = match (&store, &provider) {
        (Ok(()), Health::Ok) => (StatusCode::OK, json!({"ready": true})),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false,
                   "store": store.as_ref().map(|_| "ok").unwrap_or("down"),
                   "provider": if provider == Health::Ok { "ok" } else { "down" }}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    out.push_str("# HELP hanzo_kms_requests_total REST requests by route and status.\n");
    out.push_str("# TYPE hanzo_kms_requests_total counter\n");
    for (route, by_status) in s.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for (status, n) in by_status {
            out.push_str(&format!(
                "hanzo_kms_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
    }
    counter(
        &mut out,
        "hanzo_kms_rate_limited_total",
        "Requests refused by a rate limit.",
        s.limiter.as_ref().map_or(0, |l| l.rejected()),
    );
    counter(
        &mut out,
        "hanzo_kms_request_timeouts_total",
        "Requests cancelled by the request timeout.",
        s.timeouts.load(Relaxed),
    );
    if let Some(c) = s.kms.commit_stats() {
        counter(
            &mut out,
            "hanzo_kms_group_commit_requests_total",
            "Signing records committed by the group committer.",
            c.requests.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_group_commit_transactions_total",
            "Transactions of the group committer.",
            c.transactions.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_wal_limit_checkpoints_total",
            "Whole-WAL checkpoints the group committer ran because the SQLite WAL passed its limit (writes waited meanwhile).",
            c.wal_limit_checkpoints.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_group_commit_catch_ups_total",
            "Background checkpoint passes the group committer finished on its own connection between two batches, so that the SQLite WAL starts over.",
            c.catch_ups.load(Relaxed),
        );
        out.push_str("# HELP hanzo_kms_group_commit_seconds_total Time the group committer spent per phase: its transactions (commit), waiting for them to be durable (sync), answering (answer), checkpoints between batches (checkpoint). Their sum against wall time is how busy it is; near 1, it is the signing ceiling.\n");
        out.push_str("# TYPE hanzo_kms_group_commit_seconds_total counter\n");
        for (phase, ns) in [
            ("commit", &c.commit_nanos),
            ("sync", &c.sync_nanos),
            ("answer", &c.answer_nanos),
            ("checkpoint", &c.checkpoint_nanos),
        ] {
            out.push_str(&format!(
                "hanzo_kms_group_commit_seconds_total{{phase=\"{phase}\"}} {:.6}\n",
                ns.load(Relaxed) as f64 / 1e9
            ));
        }
        out.push_str("# HELP hanzo_kms_group_commit_request_wait_seconds_total Time the requests spent waiting on the group committer, summed over requests: for the batch in progress to end so that theirs could start (queue), and, once answered, to run again on the async runtime (wakeup). Divided by hanzo_kms_group_commit_requests_total, the average wait per request.\n");
        out.push_str("# TYPE hanzo_kms_group_commit_request_wait_seconds_total counter\n");
        for (wait, ns) in [("queue", &c.queue_nanos), ("wakeup", &c.wakeup_nanos)] {
            out.push_str(&format!(
                "hanzo_kms_group_commit_request_wait_seconds_total{{wait=\"{wait}\"}} {:.6}\n",
                ns.load(Relaxed) as f64 / 1e9
            ));
        }
    }
    if let Some(n) = s.kms.store_fsyncs() {
        counter(
            &mut out,
            "hanzo_kms_store_fsyncs_total",
            "Syncs of the SQLite write-ahead log to disk (one covers every commit before it).",
            n,
        );
    }
    if let Some(n) = s.kms.store_checkpoints() {
        counter(
            &mut out,
            "hanzo_kms_store_checkpoints_total",
            "Checkpoints that copied SQLite write-ahead log frames into the database; each synced the WAL, and the database too when it caught up with the WAL's end.",
            n,
        );
    }
    let up = if s.kms.provider_health() == Health::Ok {
        1
    } else {
        0
    };
    out.push_str("# HELP hanzo_kms_provider_up Whether the provider's health check passes.\n");
    out.push_str("# TYPE hanzo_kms_provider_up gauge\n");
    out.push_str(&format!("hanzo_kms_provider_up {up}\n"));
    if let Some(fo) = s.kms.failover() {
        let mode = fo.mode();
        out.push_str(
            "# HELP hanzo_kms_failover_mode Where device calls go: 1 for the current mode.\n",
        );
        out.push_str("# TYPE hanzo_kms_failover_mode gauge\n");
        for m in ["primary", "failed-over", "recovering"] {
            let v = u8::from(mode.as_str() == m);
            out.push_str(&format!("hanzo_kms_failover_mode{{mode=\"{m}\"}} {v}\n"));
        }
        counter(
            &mut out,
            "hanzo_kms_failovers_total",
            "Switches of all traffic to the backup device.",
            fo.failovers.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_failbacks_total",
            "Returns of traffic to the recovered primary.",
            fo.failbacks.load(Relaxed),
        );
        counter(
            &mut out,
            "hanzo_kms_failover_rerouted_total",
            "Device calls retried on the other device after it was unavailable.",
            fo.rerouted.load(Relaxed),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Body::from(out),
    )
        .into_response()
}

/// One unlabelled Prometheus counter: its HELP and TYPE lines and its value.
fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    ));
}

/// The OpenAPI document, built from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let public = matches!(
            *path,
            "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json"
        );
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "408": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
                "429": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"}
            }
        });
        if public {
            op["security"] = json!([]);
        }
        let answer = match schema::answer(method, path) {
            Some(schema) => json!({"description": "OK",
                "content": {"application/json": {"schema": schema}}}),
            None if matches!(*path, "/healthz" | "/metrics") => json!({"description": "OK",
                "content": {"text/plain": {"schema": {"type": "string"}}}}),
            None => json!({"description": "OK"}),
        };
        op["responses"]["200"] = answer.clone();
        if *path == "/readyz" {
            // Not ready: the same object, not an error.
            op["responses"]["503"] = answer;
        }
        if let Some((schema, example)) = schema::request_body(method, path) {
            // Every body is one JSON object (an array is refused); rotation's may be empty.
            op["requestBody"] = json!({
                "required": !path.ends_with("/rotate"),
                "content": {"application/json": {"schema": schema, "example": example}}
            });
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(method.to_ascii_lowercase(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Hanzo KMS", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schema::components(),
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message", "request_id"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}}
            }}}}}
        }
    })
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `body` as the request type of the POST route `path`.
    fn parses(path: &str, body: &str) -> std::result::Result<(), String> {
        // The type's route has the same schema as this one (decrypt and unwrap share one), and
        // the body is read as a handler reads it.
        fn p<T: RequestBody>(path: &str, body: &str) -> std::result::Result<(), String> {
            assert!(
                schema::request_body("POST", T::ROUTE).map(|s| s.0)
                    == schema::request_body("POST", path).map(|s| s.0),
                "{path}: its type names another schema"
            );
            parse::<T>(&RequestCtx::local(), Ok(Bytes::from(body.to_owned())))
                .map(drop)
                .map_err(|e| e.error.to_string())
        }
        match path {
            "/v1/keys" => p::<CreateKey>(path, body),
            "/v1/keys/{name}/rotate" => p::<RotateReq>(path, body),
            "/v1/keys/{name}/encrypt" => p::<EncryptReq>(path, body),
            "/v1/keys/{name}/decrypt" | "/v1/keys/{name}/unwrap" => p::<DecryptReq>(path, body),
            "/v1/keys/{name}/datakey" => p::<DatakeyReq>(path, body),
            "/v1/keys/{name}/sign" => p::<SignReq>(path, body),
            "/v1/keys/{name}/verify" => p::<VerifyReq>(path, body),
            "/v1/keyspaces" => p::<KeyspaceReq>(path, body),
            "/v1/models/{name}/datakey" => p::<ModelKeyReq>(path, body),
            "/v1/models/{name}/unwrap" => p::<ModelUnwrapReq>(path, body),
            "/v1/poai/sign" => p::<PoaiSignReq>(path, body),
            "/v1/poai/verify" => p::<SignedAttestation>(path, body),
            "/v1/poai/sign-batch" => p::<PoaiBatchReq>(path, body),
            "/v1/poai/verify-item" => p::<BatchItem>(path, body),
            "/v1/hmm/sign" => p::<HmmSignReq>(path, body),
            "/v1/hmm/verify" => p::<HmmVerifyReq>(path, body),
            "/v1/tokens" => p::<TokenReq>(path, body),
            other => panic!("no request type for {other}"),
        }
    }

    /// Check `v` against `schema` (the subset of JSON Schema these use), and collect the JSON
    /// pointer and the schema of every object in `v`. Every property of every object must be
    /// in `v`, so that a test can try each name.
    fn walk(
        schema: &Value,
        v: &Value,
        components: &Value,
        at: &str,
        objects: &mut Vec<(String, Value)>,
    ) {
        let s = schema::resolve(schema, components);
        match s["type"].as_str() {
            Some("object") => {
                let o = v
                    .as_object()
                    .unwrap_or_else(|| panic!("{at}: not an object"));
                let props = s["properties"].as_object().expect("properties");
                assert_eq!(s["additionalProperties"], false, "{at}");
                for k in o.keys() {
                    assert!(props.contains_key(k), "{at}/{k} is not in the schema");
                }
                for (k, p) in props {
                    let x = o
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}/{k} is missing from the example"));
                    walk(p, x, components, &format!("{at}/{k}"), objects);
                }
                for r in s["required"].as_array().expect("required") {
                    let r = r.as_str().unwrap_or_default();
                    assert!(
                        props.contains_key(r),
                        "{at}: required {r} is not a property"
                    );
                }
                objects.push((at.to_owned(), s.clone()));
            }
            Some("array") => {
                for (i, x) in v.as_array().expect("an array").iter().enumerate() {
                    walk(&s["items"], x, components, &format!("{at}/{i}"), objects);
                }
            }
            Some("string") => {
                let text = v.as_str().unwrap_or_else(|| panic!("{at}: not a string"));
                if let Some(values) = s["enum"].as_array() {
                    assert!(values.contains(v), "{at}: {text} is not one of {values:?}");
                }
            }
            Some("integer") => assert!(v.is_u64(), "{at}: not an integer"),
            Some("boolean") => assert!(v.is_boolean(), "{at}: not a boolean"),
            other => panic!("{at}: type {other:?}"),
        }
    }

    #[test]
    fn the_request_schemas_match_the_request_types() {
        let components = schema::components();
        let mut routes = 0;
        for (method, path, _) in ROUTES {
            let Some((schema, example)) = schema::request_body(method, path) else {
                assert_ne!(*method, "POST", "{path} has no request schema");
                continue;
            };
            routes += 1;
            parses(path, &example.to_string())
                .unwrap_or_else(|e| panic!("{path}: the example does not parse: {e}"));
            let mut objects = Vec::new();
            walk(&schema, &example, &components, "", &mut objects);
            assert!(!objects.is_empty(), "{path}");
            for (at, s) in objects {
                let required: Vec<&str> = s["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let edited = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
                    let mut body = example.clone();
                    if let Some(o) = body.pointer_mut(&at).and_then(Value::as_object_mut) {
                        edit(o);
                    }
                    parses(path, &body.to_string())
                };
                for k in s["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|p| p.0)
                {
                    let r = edited(&|o| {
                        o.remove(k);
                    });
                    assert_eq!(
                        r.is_ok(),
                        !required.contains(&k.as_str()),
                        "{path}: without {at}/{k}: {r:?}"
                    );
                }
                let r = edited(&|o| {
                    o.insert("unlisted".into(), json!(1));
                });
                assert!(r.is_err(), "{path}: {at}/unlisted was accepted");
                // The object as an array of its values (what serde would read by position).
                let mut body = example.clone();
                if let Some(o) = body.pointer_mut(&at) {
                    let values: Vec<Value> = o
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|p| p.1.clone())
                        .collect();
                    *o = Value::Array(values);
                }
                let r = parses(path, &body.to_string());
                assert!(
                    r.as_ref()
                        .is_err_and(|e| e.contains("array") || e.contains("must be a JSON object")),
                    "{path}: {at} as an array: {r:?}"
                );
            }
        }
        assert_eq!(routes, ROUTES.iter().filter(|r| r.0 == "POST").count());
    }

    #[test]
    fn timeouts_are_bounded_to_a_day() {
        let c = hanzo_kms_core::Config::from_yaml(
            "server:\n  request_timeout_secs: 18446744073709551615\n  header_read_timeout_secs: 18446744073709551615\n",
            "test",
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap();
        let o = Options::from_config(&c);
        let day = Duration::from_secs(86_400);
        assert_eq!((o.request_timeout, o.header_read_timeout), (day, day));
        // What the server adds to them does not overflow.
        let _ = o.request_timeout + Duration::from_secs(1);
        let _ = std::time::Instant::now() + o.header_read_timeout;
    }

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
