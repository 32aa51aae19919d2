//! Wire messages and service values, both ways, and errors as gRPC statuses.

use hanzo_kms_core::eip712::{B32, PoAIAttestation, from_json};
use hanzo_kms_core::{Error, Result};
use hanzo_kms_proto::v1 as pb;
use hanzo_kms_service::now_secs;
use hanzo_kms_service::sign::BatchItem;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;
use tonic::metadata::MetadataValue;

use hanzo_kms_service::model::ModelKey;

use crate::error::wire_status;

/// An error as a gRPC status: the code from the one table, a generic message for server
/// errors, the request id and (for rate limits) `retry-after` in the metadata.
pub fn status(e: &Error, request_id: &str) -> Status {
    let (http, code) = wire_status(e.kind());
    let message = if http.is_server_error() {
        crate::repeats::request_failed("grpc", request_id, e);
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

pub(super) fn missing(field: &str) -> Fail {
    Fail::Local(Error::invalid(format!("request: {field}: missing")))
}

/// Why an RPC failed: in the service (which audited it), or in this layer's own checks of the
/// message (which [`Service::reply`] audits).
pub(super) enum Fail {
    Service(Error),
    Local(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Service(e)
    }
}

/// This layer's own check: a failure is a [`Fail::Local`].
pub(super) fn local<T>(r: Result<T>) -> std::result::Result<T, Fail> {
    r.map_err(Fail::Local)
}

pub(super) fn now_u64() -> u64 {
    u64::try_from(now_secs()).unwrap_or(0)
}

pub(super) fn model_key_pb(k: ModelKey) -> pb::ModelKey {
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

pub(super) fn batch_item_to_pb(it: BatchItem) -> pb::BatchItem {
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
