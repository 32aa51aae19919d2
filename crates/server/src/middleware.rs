//! What runs around every REST request: counting, the request timeout and its audit record,
//! and the audit of refusals the REST layer makes itself; the answers to unknown routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::RequestCtx;

use crate::error::*;
use crate::extract::*;
use crate::server::*;

/// A refusal [`around`] still has to record (see [`ApiError::refused`]).
#[derive(Clone)]
pub(crate) struct Unaudited {
    pub(crate) ctx: Box<RequestCtx>,
    pub(crate) error: Arc<Error>,
}

/// A request's id, drawn by [`around`] before the handler runs, so that the handler's audit
/// records and a timeout's carry the same one.
#[derive(Clone, Copy)]
pub(crate) struct RequestId(pub(crate) uuid::Uuid);

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
pub(crate) struct Around {
    pub(crate) state: Shared,
    pub(crate) timeout: Duration,
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
pub(crate) async fn around(State(a): State<Around>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let operation = route.as_ref().map_or(crate::UNKNOWN_OPERATION, |p| {
        crate::routes::operation_of(req.method().as_str(), p.as_str())
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
pub(crate) async fn timed_out(
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
    if operation == crate::UNKNOWN_OPERATION {
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

pub(crate) async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Error::new(
            ErrorKind::NotFound,
            format!("no route for {method} {}", uri.path()),
        ),
        &fresh_id(),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        Error::invalid(format!("{method} is not allowed on {}", uri.path())),
        &fresh_id(),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}
