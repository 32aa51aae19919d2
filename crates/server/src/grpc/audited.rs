//! The layer in front of the gRPC service: it audits the requests tonic refuses before any RPC
//! body runs, and wipes the buffers of answers that carry a secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hanzo_kms_core::{Error, ErrorKind};
use hanzo_kms_proto::v1 as pb;
use tonic::Status;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;

use hanzo_kms_service::operation::Operation;

use crate::error::wire_status;
use crate::server::AppState;

use super::Service;
use super::convert::status;

/// Set, in a request's extensions, once an RPC body runs: from then on the body (through
/// [`Service::reply`]) or the service audits the request.
#[derive(Clone, Default)]
pub(super) struct Reached(pub(super) Arc<AtomicBool>);

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
    pub(super) inner: pb::kms_server::KmsServer<Service>,
    pub(super) state: Arc<AppState>,
    pub(super) request_timeout: Duration,
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
        let proto = include_str!("../../../../proto/hanzo/kms/v1/kms.proto");
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
