//! The REST transport: JSON over HTTP/1.1 with keep-alive (hyper's pooled client).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use hanzo_kms_core::{Error, ErrorKind, Result};

pub(crate) struct Rest {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Rest {
    pub(crate) fn new(base: &str) -> Result<Self> {
        if base.starts_with("https://") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this client speaks REST over http:// only; use gRPC (the default) for TLS",
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Self {
            base: base.to_owned(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// One request; a non-2xx answer becomes the error its body describes.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::internal(format!("bad HTTP method {method}")))?;
        let bytes = match body {
            Some(v) => serde_json::to_vec(v)
                .map_err(|e| Error::internal(format!("encoding a request: {e}")))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Error::invalid(format!("building the request for {path}: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot reach the server at {}", self.base),
            )
            .with_source(e)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "reading the server's answer").with_source(e)
            })?
            .to_bytes();
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            Error::new(
                kind_of_status(status),
                format!("the server answered {status} without a JSON body"),
            )
        })?;
        if status.is_success() {
            return Ok(json);
        }
        let err = &json["error"];
        let kind = err["code"]
            .as_str()
            .and_then(ErrorKind::from_code)
            .unwrap_or_else(|| kind_of_status(status));
        let message = err["message"].as_str().unwrap_or("request failed");
        let message = match err["request_id"].as_str() {
            Some(id) => format!("{message} (request {id})"),
            None => message.to_owned(),
        };
        Err(match retry_after {
            Some(s) if kind == ErrorKind::RateLimited => {
                Error::rate_limited(message, std::time::Duration::from_secs(s))
            }
            _ => Error::new(kind, message),
        })
    }
}

fn kind_of_status(s: StatusCode) -> ErrorKind {
    match s.as_u16() {
        400 | 413 => ErrorKind::InvalidArgument,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::KeyState,
        429 => ErrorKind::RateLimited,
        408 | 502..=504 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}
