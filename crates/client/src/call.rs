//! One mapping per operation: how each request travels on either transport.
//!
//! A [`Call`] is one request of one operation. Its [`Route`] says which operation it is (by the
//! name the server's operation table gives it), its gRPC method, its REST method and path, and
//! whether it is safe to repeat; its methods build the gRPC message and the REST body from the
//! same values. [`Client::call`](crate::Client) sends it on whichever transport the client
//! speaks, so the client's API methods never write either transport themselves. A test checks
//! every route against the server's table.

use hanzo_kms_proto::v1 as pb;
use serde_json::{Value, json};

use crate::transport::Retry;

/// How one operation travels.
#[derive(Debug)]
// `op` and `rpc` name the operation for the test that checks every route against the server's
// table; the transports use the paths.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Route {
    /// The operation's name in the server's table and audit records.
    pub op: &'static str,
    /// The gRPC method of `hanzo.kms.v1.Kms`.
    pub rpc: &'static str,
    /// `/hanzo.kms.v1.Kms/<rpc>`.
    pub grpc_path: &'static str,
    /// The REST method and path; `{name}` or `{id}` is the call's [`Call::param`].
    pub method: &'static str,
    pub path: &'static str,
    pub retry: Retry,
}

macro_rules! route {
    ($op:literal, $rpc:literal, $method:literal, $path:literal, $retry:ident) => {
        Route {
            op: $op,
            rpc: $rpc,
            grpc_path: concat!("/hanzo.kms.v1.Kms/", $rpc),
            method: $method,
            path: $path,
            retry: Retry::$retry,
        }
    };
}

/// One request, in both wire forms.
pub(crate) trait Call: Sync {
    /// The gRPC request message.
    type Msg: prost::Message + Send + Sync + 'static;
    /// The gRPC answer message.
    type Reply: prost::Message + Default + Send + Sync + 'static;
    const ROUTE: Route;
    /// The value of the REST path's parameter (`{name}`, `{id}`).
    fn param(&self) -> &str {
        ""
    }
    /// The REST query string, without `?`.
    fn query(&self) -> String {
        String::new()
    }
    /// The gRPC message (built afresh for each attempt).
    fn msg(&self) -> Self::Msg;
    /// The REST body.
    fn body(&self) -> Option<Value>;
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

// ---- keys -------------------------------------------------------------------------------------

pub(crate) struct CreateKey<'a> {
    pub name: &'a str,
    pub algorithm: Option<&'a str>,
    pub rotation_days: Option<u32>,
}

impl Call for CreateKey<'_> {
    type Msg = pb::CreateKeyRequest;
    type Reply = pb::KeyInfo;
    const ROUTE: Route = route!("key.create", "CreateKey", "POST", "/v1/keys", Once);
    fn msg(&self) -> Self::Msg {
        pb::CreateKeyRequest {
            name: self.name.to_owned(),
            algorithm: self.algorithm.unwrap_or("").to_owned(),
            rotation_days: self.rotation_days,
        }
    }
    fn body(&self) -> Option<Value> {
        let mut body = json!({ "name": self.name });
        if let Some(a) = self.algorithm.filter(|a| !a.is_empty()) {
            body["algorithm"] = json!(a);
        }
        if let Some(d) = self.rotation_days {
            body["rotation_days"] = json!(d);
        }
        Some(body)
    }
}

pub(crate) struct GetKey<'a>(pub &'a str);

impl Call for GetKey<'_> {
    type Msg = pb::KeyRequest;
    type Reply = pb::KeyInfo;
    const ROUTE: Route = route!("key.show", "GetKey", "GET", "/v1/keys/{name}", Safe);
    fn param(&self) -> &str {
        self.0
    }
    fn msg(&self) -> Self::Msg {
        pb::KeyRequest {
            name: self.0.to_owned(),
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct GetPublicKey<'a>(pub &'a str);

impl Call for GetPublicKey<'_> {
    type Msg = pb::KeyRequest;
    type Reply = pb::PublicKey;
    const ROUTE: Route = route!(
        "key.show",
        "GetPublicKey",
        "GET",
        "/v1/keys/{name}/public",
        Safe
    );
    fn param(&self) -> &str {
        self.0
    }
    fn msg(&self) -> Self::Msg {
        pb::KeyRequest {
            name: self.0.to_owned(),
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct ListKeys<'a>(pub &'a str);

impl Call for ListKeys<'_> {
    type Msg = pb::ListKeysRequest;
    type Reply = pb::KeyList;
    const ROUTE: Route = route!("key.list", "ListKeys", "GET", "/v1/keys", Safe);
    fn query(&self) -> String {
        format!("prefix={}", crate::transport::path_seg(self.0))
    }
    fn msg(&self) -> Self::Msg {
        pb::ListKeysRequest {
            prefix: self.0.to_owned(),
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct RotateKey<'a>(pub &'a str);

impl Call for RotateKey<'_> {
    type Msg = pb::KeyRequest;
    type Reply = pb::KeyInfo;
    // Not retried: a retry after a lost answer would rotate twice.
    const ROUTE: Route = route!(
        "key.rotate",
        "RotateKey",
        "POST",
        "/v1/keys/{name}/rotate",
        Once
    );
    fn param(&self) -> &str {
        self.0
    }
    fn msg(&self) -> Self::Msg {
        pb::KeyRequest {
            name: self.0.to_owned(),
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct CreateKeyspace<'a> {
    pub customer: &'a str,
    pub model: &'a str,
    pub signing_keys: bool,
}

impl Call for CreateKeyspace<'_> {
    type Msg = pb::CreateModelKeyspaceRequest;
    type Reply = pb::KeyList;
    const ROUTE: Route = route!(
        "keyspace.create",
        "CreateModelKeyspace",
        "POST",
        "/v1/keyspaces",
        Once
    );
    fn msg(&self) -> Self::Msg {
        pb::CreateModelKeyspaceRequest {
            customer: self.customer.to_owned(),
            model: self.model.to_owned(),
            signing_keys: Some(self.signing_keys),
        }
    }
    fn body(&self) -> Option<Value> {
        Some(
            json!({"customer": self.customer, "model": self.model, "signing_keys": self.signing_keys}),
        )
    }
}

// ---- data -------------------------------------------------------------------------------------

pub(crate) struct Encrypt<'a> {
    pub key: &'a str,
    pub plaintext: &'a [u8],
    pub aad: &'a [u8],
}

impl Call for Encrypt<'_> {
    type Msg = pb::EncryptRequest;
    type Reply = pb::EncryptResponse;
    const ROUTE: Route = route!(
        "data.encrypt",
        "Encrypt",
        "POST",
        "/v1/keys/{name}/encrypt",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::EncryptRequest {
            key: self.key.to_owned(),
            plaintext: self.plaintext.to_vec(),
            aad: self.aad.to_vec(),
        }
    }
    fn body(&self) -> Option<Value> {
        Some(json!({"plaintext": b64(self.plaintext), "aad": b64(self.aad)}))
    }
}

pub(crate) struct Decrypt<'a> {
    pub key: &'a str,
    pub ciphertext: &'a str,
    pub aad: &'a [u8],
}

impl Decrypt<'_> {
    fn decrypt_msg(&self) -> pb::DecryptRequest {
        pb::DecryptRequest {
            key: self.key.to_owned(),
            ciphertext: self.ciphertext.to_owned(),
            aad: self.aad.to_vec(),
        }
    }

    fn decrypt_body(&self) -> Option<Value> {
        Some(json!({"ciphertext": self.ciphertext, "aad": b64(self.aad)}))
    }
}

impl Call for Decrypt<'_> {
    type Msg = pb::DecryptRequest;
    type Reply = pb::DecryptResponse;
    const ROUTE: Route = route!(
        "data.decrypt",
        "Decrypt",
        "POST",
        "/v1/keys/{name}/decrypt",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        self.decrypt_msg()
    }
    fn body(&self) -> Option<Value> {
        self.decrypt_body()
    }
}

/// UnwrapDataKey: a decryption that insists on 32 bytes.
pub(crate) struct UnwrapDataKey<'a>(pub Decrypt<'a>);

impl Call for UnwrapDataKey<'_> {
    type Msg = pb::DecryptRequest;
    type Reply = pb::DecryptResponse;
    const ROUTE: Route = route!(
        "data.decrypt",
        "UnwrapDataKey",
        "POST",
        "/v1/keys/{name}/unwrap",
        Safe
    );
    fn param(&self) -> &str {
        self.0.key
    }
    fn msg(&self) -> Self::Msg {
        self.0.decrypt_msg()
    }
    fn body(&self) -> Option<Value> {
        self.0.decrypt_body()
    }
}

pub(crate) struct GenerateDataKey<'a> {
    pub key: &'a str,
    pub aad: &'a [u8],
}

impl Call for GenerateDataKey<'_> {
    type Msg = pb::GenerateDataKeyRequest;
    type Reply = pb::GenerateDataKeyResponse;
    const ROUTE: Route = route!(
        "data.encrypt",
        "GenerateDataKey",
        "POST",
        "/v1/keys/{name}/datakey",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::GenerateDataKeyRequest {
            key: self.key.to_owned(),
            aad: self.aad.to_vec(),
        }
    }
    fn body(&self) -> Option<Value> {
        Some(json!({ "aad": b64(self.aad) }))
    }
}

pub(crate) struct GenerateModelKey<'a> {
    pub key: &'a str,
    pub metadata: &'a [u8],
    /// 0: the server's default.
    pub segment_size: u32,
}

impl Call for GenerateModelKey<'_> {
    type Msg = pb::GenerateModelKeyRequest;
    type Reply = pb::ModelKey;
    const ROUTE: Route = route!(
        "model.encrypt",
        "GenerateModelKey",
        "POST",
        "/v1/models/{name}/datakey",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::GenerateModelKeyRequest {
            key: self.key.to_owned(),
            metadata: self.metadata.to_vec(),
            segment_size: self.segment_size,
        }
    }
    fn body(&self) -> Option<Value> {
        Some(if self.segment_size == 0 {
            json!({ "metadata": b64(self.metadata) })
        } else {
            json!({ "metadata": b64(self.metadata), "segment_size": self.segment_size })
        })
    }
}

pub(crate) struct UnwrapModelKey<'a> {
    pub key: &'a str,
    pub header: &'a [u8],
}

impl Call for UnwrapModelKey<'_> {
    type Msg = pb::UnwrapModelKeyRequest;
    type Reply = pb::ModelKey;
    const ROUTE: Route = route!(
        "model.decrypt",
        "UnwrapModelKey",
        "POST",
        "/v1/models/{name}/unwrap",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::UnwrapModelKeyRequest {
            key: self.key.to_owned(),
            header: self.header.to_vec(),
        }
    }
    fn body(&self) -> Option<Value> {
        Some(json!({ "header": b64(self.header) }))
    }
}

// ---- signing ----------------------------------------------------------------------------------

pub(crate) struct Sign<'a> {
    pub key: &'a str,
    pub message: &'a [u8],
    pub prehashed: bool,
}

impl Call for Sign<'_> {
    type Msg = pb::SignRequest;
    type Reply = pb::Signature;
    const ROUTE: Route = route!("key.sign", "Sign", "POST", "/v1/keys/{name}/sign", Safe);
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::SignRequest {
            key: self.key.to_owned(),
            message: self.message.to_vec(),
            prehashed: self.prehashed,
        }
    }
    fn body(&self) -> Option<Value> {
        Some(json!({"message": b64(self.message), "prehashed": self.prehashed}))
    }
}

pub(crate) struct Verify<'a> {
    pub key: &'a str,
    pub message: &'a [u8],
    pub signature: &'a [u8],
    pub prehashed: bool,
}

impl Call for Verify<'_> {
    type Msg = pb::VerifyRequest;
    type Reply = pb::VerifyResponse;
    const ROUTE: Route = route!(
        "key.verify",
        "Verify",
        "POST",
        "/v1/keys/{name}/verify",
        Safe
    );
    fn param(&self) -> &str {
        self.key
    }
    fn msg(&self) -> Self::Msg {
        pb::VerifyRequest {
            key: self.key.to_owned(),
            message: self.message.to_vec(),
            signature: self.signature.to_vec(),
            prehashed: self.prehashed,
        }
    }
    fn body(&self) -> Option<Value> {
        Some(json!({
            "message": b64(self.message),
            "signature": format!("0x{}", hex::encode(self.signature)),
            "prehashed": self.prehashed,
        }))
    }
}

/// A request whose gRPC message is its REST body read as that message (signed objects and
/// their requests have the same JSON form on both APIs).
pub(crate) struct Json<'a, M> {
    pub body: Value,
    pub msg: &'a M,
}

macro_rules! json_call {
    ($name:ident, $msg:ty, $reply:ty, $op:literal, $rpc:literal, $path:literal) => {
        /// A request whose REST body is its gRPC message's JSON form.
        pub(crate) struct $name<'a>(pub Json<'a, $msg>);

        impl Call for $name<'_> {
            type Msg = $msg;
            type Reply = $reply;
            const ROUTE: Route = route!($op, $rpc, "POST", $path, Safe);
            fn msg(&self) -> Self::Msg {
                self.0.msg.clone()
            }
            fn body(&self) -> Option<Value> {
                Some(self.0.body.clone())
            }
        }
    };
}

// Signing requests carry a nonce fixed before the first attempt, so a retry is answered with
// the signature recorded the first time: safe to repeat.
json_call!(
    SignPoai,
    pb::SignPoaiRequest,
    pb::SignedAttestation,
    "poai.sign",
    "SignPoai",
    "/v1/poai/sign"
);
json_call!(
    SignPoaiBatch,
    pb::SignPoaiBatchRequest,
    pb::SignPoaiBatchResponse,
    "poai.sign_batch",
    "SignPoaiBatch",
    "/v1/poai/sign-batch"
);
json_call!(
    VerifyPoai,
    pb::SignedAttestation,
    pb::Verdict,
    "poai.verify",
    "VerifyPoai",
    "/v1/poai/verify"
);
json_call!(
    VerifyPoaiBatchItem,
    pb::BatchItem,
    pb::Verdict,
    "poai.verify_item",
    "VerifyPoaiBatchItem",
    "/v1/poai/verify-item"
);
json_call!(
    SignHmmSettlement,
    pb::SignHmmSettlementRequest,
    pb::SignedSettlement,
    "hmm.sign",
    "SignHmmSettlement",
    "/v1/hmm/sign"
);
json_call!(
    VerifyHmmSettlement,
    pb::VerifyHmmSettlementRequest,
    pb::Verdict,
    "hmm.verify",
    "VerifyHmmSettlement",
    "/v1/hmm/verify"
);

// ---- tokens -----------------------------------------------------------------------------------

pub(crate) struct CreateToken<'a> {
    pub tenant: &'a str,
    pub roles: &'a [String],
    pub patterns: &'a [String],
    pub description: &'a str,
    pub ttl_secs: Option<u64>,
}

impl Call for CreateToken<'_> {
    type Msg = pb::CreateTokenRequest;
    type Reply = pb::CreatedToken;
    const ROUTE: Route = route!("token.create", "CreateToken", "POST", "/v1/tokens", Once);
    fn msg(&self) -> Self::Msg {
        pb::CreateTokenRequest {
            tenant: self.tenant.to_owned(),
            roles: self.roles.to_vec(),
            patterns: self.patterns.to_vec(),
            description: self.description.to_owned(),
            ttl_secs: self.ttl_secs,
        }
    }
    fn body(&self) -> Option<Value> {
        let mut body = json!({"tenant": self.tenant, "roles": self.roles,
            "patterns": self.patterns, "description": self.description});
        if let Some(ttl) = self.ttl_secs {
            body["ttl_secs"] = json!(ttl);
        }
        Some(body)
    }
}

pub(crate) struct ListTokens;

impl Call for ListTokens {
    type Msg = pb::Empty;
    type Reply = pb::TokenList;
    const ROUTE: Route = route!("token.list", "ListTokens", "GET", "/v1/tokens", Safe);
    fn msg(&self) -> Self::Msg {
        pb::Empty {}
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct RevokeToken<'a>(pub &'a str);

impl Call for RevokeToken<'_> {
    type Msg = pb::RevokeTokenRequest;
    type Reply = pb::TokenInfo;
    const ROUTE: Route = route!(
        "token.revoke",
        "RevokeToken",
        "DELETE",
        "/v1/tokens/{id}",
        Once
    );
    fn param(&self) -> &str {
        self.0
    }
    fn msg(&self) -> Self::Msg {
        pb::RevokeTokenRequest {
            id: self.0.to_owned(),
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

// ---- audit ------------------------------------------------------------------------------------

pub(crate) struct ListAudit {
    pub after: u64,
    pub limit: u32,
}

impl Call for ListAudit {
    type Msg = pb::ListAuditRequest;
    type Reply = pb::AuditRecords;
    const ROUTE: Route = route!("audit.list", "ListAudit", "GET", "/v1/audit", Safe);
    fn query(&self) -> String {
        format!("after={}&limit={}", self.after, self.limit)
    }
    fn msg(&self) -> Self::Msg {
        pb::ListAuditRequest {
            after: self.after,
            limit: self.limit,
        }
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

pub(crate) struct VerifyAudit;

impl Call for VerifyAudit {
    type Msg = pb::Empty;
    type Reply = pb::AuditReport;
    const ROUTE: Route = route!(
        "audit.verify",
        "VerifyAudit",
        "GET",
        "/v1/audit/verify",
        Safe
    );
    fn msg(&self) -> Self::Msg {
        pb::Empty {}
    }
    fn body(&self) -> Option<Value> {
        None
    }
}

/// Every route above, for the test against the server's table.
#[cfg(test)]
pub(crate) const ROUTES: &[Route] = &[
    CreateKey::ROUTE,
    GetKey::ROUTE,
    GetPublicKey::ROUTE,
    ListKeys::ROUTE,
    RotateKey::ROUTE,
    CreateKeyspace::ROUTE,
    Encrypt::ROUTE,
    Decrypt::ROUTE,
    UnwrapDataKey::ROUTE,
    GenerateDataKey::ROUTE,
    GenerateModelKey::ROUTE,
    UnwrapModelKey::ROUTE,
    Sign::ROUTE,
    Verify::ROUTE,
    SignPoai::ROUTE,
    SignPoaiBatch::ROUTE,
    VerifyPoai::ROUTE,
    VerifyPoaiBatchItem::ROUTE,
    SignHmmSettlement::ROUTE,
    VerifyHmmSettlement::ROUTE,
    CreateToken::ROUTE,
    ListTokens::ROUTE,
    RevokeToken::ROUTE,
    ListAudit::ROUTE,
    VerifyAudit::ROUTE,
];

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_service::operation::Operation;

    #[test]
    fn every_route_is_its_operations_in_the_servers_table() {
        for r in ROUTES {
            let op = Operation::named(r.op).unwrap_or_else(|| panic!("{} is no operation", r.op));
            assert!(
                op.rpc.contains(&r.rpc),
                "{}: {} is not its RPC",
                r.op,
                r.rpc
            );
            assert!(
                op.rest
                    .iter()
                    .any(|x| x.method == r.method && x.path == r.path),
                "{}: {} {} is not its route",
                r.op,
                r.method,
                r.path
            );
            assert_eq!(r.grpc_path, format!("/hanzo.kms.v1.Kms/{}", r.rpc));
        }
    }
}
