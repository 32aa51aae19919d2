//! Errors on their way to a client: one mapping from error kind to HTTP status and gRPC code
//! ([`wire_status`]), shared by both APIs, and the REST error body.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hanzo_kms_core::{Error, ErrorKind};
use hanzo_kms_service::RequestCtx;
use serde_json::json;

use crate::middleware::*;

/// An error on its way to the client.
pub struct ApiError {
    pub(crate) error: Error,
    pub(crate) request_id: String,
    pub(crate) status: Option<StatusCode>,
    /// Set when an authenticated request was refused by this layer's own checks, before any
    /// service operation could audit it; [`around`] records it.
    pub(crate) unaudited: Option<Box<RequestCtx>>,
}

impl ApiError {
    pub(crate) fn new(error: Error, request_id: &str) -> Self {
        Self {
            error,
            request_id: request_id.to_owned(),
            status: None,
            unaudited: None,
        }
    }

    /// A refusal of an authenticated request by the API layer itself (a body that is not the
    /// route's JSON, a field that is not base64): audited on its way out.
    pub(crate) fn refused(error: Error, ctx: &RequestCtx) -> Self {
        Self {
            unaudited: Some(Box::new(ctx.clone())),
            ..Self::new(error, &ctx.request_id)
        }
    }

    pub(crate) fn with_status(mut self, s: StatusCode) -> Self {
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
            crate::repeats::request_failed("rest", &self.request_id, &self.error);
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
        } else if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme to use.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hanzo-kms\""),
            );
        } else if let Some(wait) = self.error.retry_after() {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub(crate) type ApiResult = std::result::Result<JsonBody, ApiError>;

/// A JSON answer, serialized once (`axum::Json` of a `serde_json::Value` built the value and
/// then serialized it: two passes and an allocation per field, on every signing request).
pub(crate) struct JsonBody(pub(crate) Vec<u8>);

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

pub(crate) fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
