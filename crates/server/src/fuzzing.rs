//! The server's parsers of outside input, for the fuzz targets in `fuzz/` (not an API: hidden
//! from the docs and free to change). Each item here is the function the server itself runs,
//! not a copy of it.

use hanzo_kms_core::Result;
use hanzo_kms_core::eip712::PoAIAttestation;
use hanzo_kms_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Every REST route that takes a JSON body, in the order of [`rest_body`]'s `route` index.
pub fn rest_routes() -> Vec<&'static str> {
    readers().map(|(route, _)| route).collect()
}

/// Read `body` as the request body of the `route`-th of [`rest_routes`] (modulo their number),
/// exactly as its handler does before it calls the service. Returns the route.
pub fn rest_body(route: usize, body: &[u8]) -> (&'static str, Result<()>) {
    let all: Vec<_> = readers().collect();
    let (path, read) = all[route % all.len()];
    (path, read(body))
}

fn readers() -> impl Iterator<Item = (&'static str, crate::extract::BodyReader)> {
    [
        crate::rest::admin::READERS,
        crate::rest::data::READERS,
        crate::rest::keys::READERS,
        crate::rest::signing::READERS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// A gRPC request message as a service value, through the JSON form they share
/// (`grpc::from_pb`, what the RPCs with EIP-712 content run).
pub fn grpc_from_pb<P: Serialize, T: DeserializeOwned>(what: &str, p: &P) -> Result<T> {
    crate::grpc::from_pb(what, p)
}

/// A service value as a wire message (`grpc::to_pb`, what the RPCs answer with).
pub fn grpc_to_pb<T: Serialize, P: DeserializeOwned>(v: &T) -> Result<P> {
    crate::grpc::to_pb(v)
}

/// The batch path's direct conversion of an attestation (`SignPoaiBatch`).
pub fn grpc_attestation_from_pb(i: usize, a: pb::PoAiAttestation) -> Result<PoAIAttestation> {
    crate::grpc::attestation_from_pb(i, a)
}

/// The inverse of [`grpc_attestation_from_pb`], which batch answers use.
pub fn grpc_attestation_to_pb(a: PoAIAttestation) -> pb::PoAiAttestation {
    crate::grpc::attestation_to_pb(a)
}

/// The bearer token of an `Authorization` header value (REST; gRPC's `authorization` entry
/// goes through the same function), or "".
pub fn bearer(authorization: &[u8]) -> Option<String> {
    let v = axum::http::HeaderValue::from_bytes(authorization).ok()?;
    Some(crate::extract::bearer(Some(&v)).to_owned())
}
