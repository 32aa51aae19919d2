//! The audit operation of every API entry point, REST route and gRPC method alike.
//!
//! A request that reaches the service is audited by the service under its own operation name.
//! A request that the API layer refuses before that (a body that does not parse, a field that
//! is not base64, a protobuf message that does not decode, an oversized body) is audited by the
//! API layer, and it must use the same name, or a reader of the audit log would see one
//! operation under two names. This table is the one place where the API layer names them; the
//! tests check that it covers every route and every RPC.

/// One service operation: its audit name, the REST routes (method, route) and the gRPC methods
/// that reach it.
struct Operation {
    name: &'static str,
    rest: &'static [(&'static str, &'static str)],
    rpc: &'static [&'static str],
}

const fn op(
    name: &'static str,
    rest: &'static [(&'static str, &'static str)],
    rpc: &'static [&'static str],
) -> Operation {
    Operation { name, rest, rpc }
}

#[rustfmt::skip]
const OPERATIONS: &[Operation] = &[
    op("key.create", &[("POST", "/v1/keys")], &["CreateKey"]),
    op("key.list", &[("GET", "/v1/keys")], &["ListKeys"]),
    op("key.show", &[("GET", "/v1/keys/{name}"), ("GET", "/v1/keys/{name}/public")],
        &["GetKey", "GetPublicKey"]),
    op("key.rotate", &[("POST", "/v1/keys/{name}/rotate")], &["RotateKey"]),
    op("keyspace.create", &[("POST", "/v1/keyspaces")], &["CreateModelKeyspace"]),
    op("data.encrypt", &[("POST", "/v1/keys/{name}/encrypt"), ("POST", "/v1/keys/{name}/datakey")],
        &["Encrypt", "GenerateDataKey"]),
    op("data.decrypt", &[("POST", "/v1/keys/{name}/decrypt"), ("POST", "/v1/keys/{name}/unwrap")],
        &["Decrypt", "UnwrapDataKey"]),
    op("model.encrypt", &[("POST", "/v1/models/{name}/datakey")], &["GenerateModelKey"]),
    op("model.decrypt", &[("POST", "/v1/models/{name}/unwrap")], &["UnwrapModelKey"]),
    op("key.sign", &[("POST", "/v1/keys/{name}/sign")], &["Sign"]),
    op("key.sign_batch", &[], &["SignBatch"]),
    op("key.verify", &[("POST", "/v1/keys/{name}/verify")], &["Verify"]),
    op("key.verify_batch", &[], &["VerifyBatch"]),
    op("poai.sign", &[("POST", "/v1/poai/sign")], &["SignPoai"]),
    op("poai.verify", &[("POST", "/v1/poai/verify")], &["VerifyPoai"]),
    op("poai.sign_batch", &[("POST", "/v1/poai/sign-batch")], &["SignPoaiBatch"]),
    op("poai.verify_item", &[("POST", "/v1/poai/verify-item")], &["VerifyPoaiBatchItem"]),
    op("hmm.sign", &[("POST", "/v1/hmm/sign")], &["SignHmmSettlement"]),
    op("hmm.verify", &[("POST", "/v1/hmm/verify")], &["VerifyHmmSettlement"]),
    op("audit.list", &[("GET", "/v1/audit")], &["ListAudit"]),
    op("audit.verify", &[("GET", "/v1/audit/verify")], &["VerifyAudit"]),
    op("token.create", &[("POST", "/v1/tokens")], &["CreateToken"]),
    op("token.list", &[("GET", "/v1/tokens")], &["ListTokens"]),
    op("token.revoke", &[("DELETE", "/v1/tokens/{id}")], &["RevokeToken"]),
];

/// What a request to an entry point that is in no row is audited as.
pub(crate) const UNKNOWN: &str = "request";

/// The operation of a REST route (the route's pattern, as axum matched it).
pub(crate) fn of_route(method: &str, route: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|o| o.rest.iter().any(|&(m, r)| m == method && r == route))
        .map_or(UNKNOWN, |o| o.name)
}

/// The operation of a gRPC method of the `Kms` service (`"SignPoai"`), if it is one.
pub(crate) fn of_rpc(method: &str) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|o| o.rpc.contains(&method))
        .map(|o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_in_the_proto_has_an_operation() {
        let proto = include_str!("../../../proto/hanzo/kms/v1/kms.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        assert!(rpcs.len() > 20, "{rpcs:?}");
        for rpc in &rpcs {
            assert!(of_rpc(rpc).is_some(), "{rpc} has no audit operation");
        }
        // And no row names an RPC that does not exist.
        for o in OPERATIONS {
            for rpc in o.rpc {
                assert!(rpcs.contains(rpc), "{rpc} is not in kms.proto");
            }
        }
    }

    #[test]
    fn every_operation_is_one_the_service_knows() {
        // The service's list is what `rate_limits.per_operation` is checked against.
        for o in OPERATIONS {
            assert!(
                hanzo_kms_service::ratelimit::OPERATIONS.contains(&o.name),
                "{} is not in the service's OPERATIONS",
                o.name
            );
        }
    }

    #[test]
    fn every_api_route_has_an_operation() {
        let api: Vec<_> = crate::ROUTES
            .iter()
            .filter(|(_, path, _)| path.starts_with("/v1/") && *path != "/v1/openapi.json")
            .collect();
        assert!(api.len() > 20, "{api:?}");
        for (method, path, _) in &api {
            assert_ne!(of_route(method, path), UNKNOWN, "{method} {path}");
        }
        // And no row names a route that the API does not have.
        for o in OPERATIONS {
            for (m, r) in o.rest {
                assert!(
                    api.iter().any(|(am, ar, _)| am == m && ar == r),
                    "{m} {r} is not a route"
                );
            }
        }
    }

    #[test]
    fn the_two_apis_share_names() {
        assert_eq!(of_route("POST", "/v1/poai/sign"), "poai.sign");
        assert_eq!(of_rpc("SignPoai"), Some("poai.sign"));
        assert_eq!(of_rpc("UnwrapDataKey"), of_rpc("Decrypt"));
        assert_eq!(of_route("GET", "/v1/nope"), UNKNOWN);
        assert_eq!(of_rpc("Nope"), None);
    }
}
