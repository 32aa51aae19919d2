//! Every operation of the service, described once.
//!
//! An [`Operation`] says what the pipeline (`Kms::run`, pipeline.rs) must do before and after the
//! operation's own work: who may call it, where its key comes from and what state that key must
//! be in, whether a replay guard applies, and how it is reached from outside (its REST routes and
//! gRPC methods). The service runs every operation through `Kms::run` with its
//! descriptor; the server builds its router, its OpenAPI paths and its gRPC audit names from
//! [`OPERATIONS`], and the rate limiter takes its `per_operation` names from it. Adding an
//! operation is one entry here and one service function (docs/ARCHITECTURE.md has the recipe).

use hanzo_kms_core::Purpose;

use crate::auth::Role;

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// The caller needs every one of these roles.
    All(&'static [Role]),
    /// The caller needs at least one of these roles.
    Any(&'static [Role]),
}

/// The tenants an operation's caller must be able to act for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant: the operation reads or changes what spans tenants (the audit log, the
    /// whole store). Only an all-tenant principal passes.
    AllTenants,
    /// The caller's own tenant: keys it names must be its tenant's (another tenant's key is
    /// answered exactly like a missing one).
    Tenant,
}

/// Where an operation's key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyArg {
    /// A signed object names the key it claims (verification). A missing, foreign or
    /// unparseable key is a verdict (`unknown_key`), not an error.
    Claimed,
    /// The request names one key (in the path, or the body).
    Named,
    /// The operation names no key (listings, tokens, the audit log).
    None,
    /// The request names several keys (a keyspace); each is authorised.
    Several,
}

/// The state a key must be in when the pipeline hands it to the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPolicy {
    /// The operation creates the key: it must not exist yet (checked by the operation, inside
    /// its own transaction, with the provider's work).
    Create,
    /// Administration: the operation reads the key inside its own transaction and decides what
    /// its state allows (rotate, enable, disable, destroy).
    Manage,
    /// No key, or the key is only described (show): any state.
    Read,
    /// Use: the key must be enabled, and so must the version the operation uses.
    Use,
    /// Verification: refused while the key is disabled or scheduled for destruction (as AWS KMS
    /// refuses a disabled key), and under a disabled version; an enabled or destroyed key
    /// verifies under any version whose public key is stored (docs/signing.md).
    Verify,
}

/// The replay guard an operation passes through (pipeline step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// `(key, nonce)` is recorded with the signature; a second message under a used nonce is
    /// refused, the same message again answers with the first signature.
    Nonce,
    /// [`Replay::Nonce`], and the settlement consumes its attestation once.
    NonceAndConsume,
    /// No replay guard.
    None,
}

/// A REST route: method, path (axum's pattern) and a one-line summary for the API document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
}

/// One operation of the service.
#[derive(Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its name in audit records and in `rate_limits.per_operation` (`poai.sign`).
    pub name: &'static str,
    pub roles: Roles,
    pub scope: Scope,
    pub key: KeyArg,
    /// The purpose its key must have (`None`: any). A named key of another purpose is refused
    /// as a bad argument; a claimed one is an unknown key.
    pub purpose: Option<Purpose>,
    pub policy: KeyPolicy,
    /// Whether a refusal for key state (and tampering) reaches the caller as the one opaque
    /// `authentication failed`; the audit record keeps the real reason. Model files do this, so
    /// that a file's reader learns nothing about the key's versions.
    pub opaque: bool,
    pub replay: Replay,
    /// How REST reaches it (none: local only).
    pub rest: &'static [Route],
    /// How gRPC reaches it: methods of `hanzo.kms.v1.Kms` (none: local only).
    pub rpc: &'static [&'static str],
}

impl Operation {
    /// The names a `rate_limits.per_operation` entry may give this operation: for
    /// `poai.sign_batch`, itself, `sign_batch` and `sign`, most specific first.
    pub fn limiter_names(&self) -> [&'static str; 3] {
        let after_dot = self.name.rsplit('.').next().unwrap_or(self.name);
        let verb = after_dot.split('_').next().unwrap_or(after_dot);
        [self.name, after_dot, verb]
    }

    /// The operation of a name, if there is one.
    pub fn named(name: &str) -> Option<&'static Operation> {
        OPERATIONS.iter().copied().find(|o| o.name == name)
    }

    /// The operation a REST route reaches, if any.
    pub fn of_route(method: &str, path: &str) -> Option<&'static Operation> {
        OPERATIONS
            .iter()
            .copied()
            .find(|o| o.rest.iter().any(|r| r.method == method && r.path == path))
    }

    /// The operation a gRPC method of `hanzo.kms.v1.Kms` reaches (`"SignPoai"`), if any.
    pub fn of_rpc(method: &str) -> Option<&'static Operation> {
        OPERATIONS.iter().copied().find(|o| o.rpc.contains(&method))
    }
}

const fn route(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        summary,
    }
}

macro_rules! purpose {
    () => {
        None
    };
    ($p:ident) => {
        Some(Purpose::$p)
    };
}

macro_rules! operations {
    ($($id:ident = $name:literal {
        roles: $roles:expr, scope: $scope:ident, key: $key:ident, $(purpose: $purpose:ident,)?
        policy: $policy:ident,
        opaque: $opaque:literal, replay: $replay:ident,
        rest: [$($rest:expr),* $(,)?], rpc: [$($rpc:literal),* $(,)?] $(,)?
    })*) => {
        $(
            #[doc = concat!("`", $name, "`")]
            pub const $id: Operation = Operation {
                name: $name,
                roles: $roles,
                scope: Scope::$scope,
                key: KeyArg::$key,
                purpose: purpose!($($purpose)?),
                policy: KeyPolicy::$policy,
                opaque: $opaque,
                replay: Replay::$replay,
                rest: &[$($rest),*],
                rpc: &[$($rpc),*],
            };
        )*
        /// Every operation, in the order of this file.
        pub const OPERATIONS: &[&Operation] = &[$(&$id),*];
    };
}

use Role::{Admin, Audit, Decrypt, Encrypt, Manage, Sign, Verify};

const ADMIN: Roles = Roles::Any(&[Admin]);
const MANAGE: Roles = Roles::Any(&[Manage]);

operations! {
    KEY_CREATE = "key.create" {
        roles: MANAGE, scope: Tenant, key: Named, policy: Create, opaque: false, replay: None,
        rest: [route("POST", "/v1/keys", "Create a key")], rpc: ["CreateKey"],
    }
    KEY_LIST = "key.list" {
        roles: Roles::Any(&[Verify, Encrypt, Manage]), scope: Tenant, key: None, policy: Read,
        opaque: false, replay: None,
        rest: [route("GET", "/v1/keys", "List keys (?prefix=)")], rpc: ["ListKeys"],
    }
    KEY_SHOW = "key.show" {
        roles: Roles::Any(&[Verify, Encrypt, Manage]), scope: Tenant, key: Named, policy: Read,
        opaque: false, replay: None,
        rest: [
            route("GET", "/v1/keys/{name}", "Show a key"),
            route("GET", "/v1/keys/{name}/public", "The primary version's public key"),
        ],
        rpc: ["GetKey", "GetPublicKey"],
    }
    KEY_ROTATE = "key.rotate" {
        roles: MANAGE, scope: Tenant, key: Named, policy: Manage, opaque: false, replay: None,
        rest: [route("POST", "/v1/keys/{name}/rotate", "Rotate a key")], rpc: ["RotateKey"],
    }
    KEY_ENABLE = "key.enable" {
        roles: MANAGE, scope: Tenant, key: Named, policy: Manage, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    KEY_DISABLE = "key.disable" {
        roles: MANAGE, scope: Tenant, key: Named, policy: Manage, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    KEY_DESTROY = "key.destroy" {
        roles: MANAGE, scope: Tenant, key: Named, policy: Manage, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    KEY_MIGRATE = "key.migrate" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    KEYSPACE_CREATE = "keyspace.create" {
        roles: MANAGE, scope: Tenant, key: Several, policy: Create, opaque: false, replay: None,
        rest: [route("POST", "/v1/keyspaces", "CreateModelKeyspace")],
        rpc: ["CreateModelKeyspace"],
    }
    DATA_ENCRYPT = "data.encrypt" {
        roles: Roles::Any(&[Encrypt]), scope: Tenant, key: Named, policy: Use, opaque: false,
        replay: None,
        rest: [
            route("POST", "/v1/keys/{name}/encrypt", "Encrypt small data (base64)"),
            route("POST", "/v1/keys/{name}/datakey", "Generate a data key: plaintext and wrapped"),
        ],
        rpc: ["Encrypt", "GenerateDataKey"],
    }
    DATA_DECRYPT = "data.decrypt" {
        roles: Roles::Any(&[Decrypt]), scope: Tenant, key: Named, policy: Use, opaque: false,
        replay: None,
        rest: [
            route("POST", "/v1/keys/{name}/decrypt", "Decrypt an hkms:v… ciphertext"),
            route("POST", "/v1/keys/{name}/unwrap", "Unwrap a data key"),
        ],
        rpc: ["Decrypt", "UnwrapDataKey"],
    }
    MODEL_ENCRYPT = "model.encrypt" {
        roles: Roles::Any(&[Encrypt]), scope: Tenant, key: Named, purpose: Model, policy: Use, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/models/{name}/datakey",
            "A new model-file header and its data key (the client encrypts the weights)")],
        rpc: ["GenerateModelKey"],
    }
    MODEL_DECRYPT = "model.decrypt" {
        roles: Roles::Any(&[Decrypt]), scope: Tenant, key: Named, purpose: Model, policy: Use, opaque: true,
        replay: None,
        rest: [route("POST", "/v1/models/{name}/unwrap",
            "The data key of a model-file header (the client decrypts the weights)")],
        rpc: ["UnwrapModelKey"],
    }
    MODEL_REWRAP = "model.rewrap" {
        roles: Roles::All(&[Decrypt, Encrypt]), scope: Tenant, key: Named, purpose: Model, policy: Use,
        opaque: true, replay: None,
        rest: [], rpc: [],
    }
    KEY_SIGN = "key.sign" {
        roles: Roles::Any(&[Sign]), scope: Tenant, key: Named, purpose: Api, policy: Use, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/keys/{name}/sign", "Sign messages or digests with an api: key")],
        rpc: ["Sign"],
    }
    KEY_SIGN_BATCH = "key.sign_batch" {
        roles: Roles::Any(&[Sign]), scope: Tenant, key: Named, purpose: Api, policy: Use, opaque: false,
        replay: None,
        rest: [], rpc: ["SignBatch"],
    }
    KEY_VERIFY = "key.verify" {
        roles: Roles::Any(&[Verify]), scope: Tenant, key: Named, purpose: Api, policy: Verify, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/keys/{name}/verify", "Verify signatures of an api: key")],
        rpc: ["Verify"],
    }
    KEY_VERIFY_BATCH = "key.verify_batch" {
        roles: Roles::Any(&[Verify]), scope: Tenant, key: Named, purpose: Api, policy: Verify, opaque: false,
        replay: None,
        rest: [], rpc: ["VerifyBatch"],
    }
    POAI_SIGN = "poai.sign" {
        roles: Roles::Any(&[Sign]), scope: Tenant, key: Named, purpose: Poai, policy: Use, opaque: false,
        replay: Nonce,
        rest: [route("POST", "/v1/poai/sign", "Sign a PoAI attestation (EIP-712)")],
        rpc: ["SignPoai"],
    }
    POAI_VERIFY = "poai.verify" {
        roles: Roles::Any(&[Verify]), scope: Tenant, key: Claimed, purpose: Poai, policy: Verify, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/poai/verify", "Verify a signed attestation")],
        rpc: ["VerifyPoai"],
    }
    POAI_SIGN_BATCH = "poai.sign_batch" {
        roles: Roles::Any(&[Sign]), scope: Tenant, key: Named, purpose: Poai, policy: Use, opaque: false,
        replay: Nonce,
        rest: [route("POST", "/v1/poai/sign-batch", "Sign attestations under one Merkle root")],
        rpc: ["SignPoaiBatch"],
    }
    POAI_VERIFY_ITEM = "poai.verify_item" {
        roles: Roles::Any(&[Verify]), scope: Tenant, key: Claimed, purpose: Poai, policy: Verify, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/poai/verify-item", "Verify one batch item")],
        rpc: ["VerifyPoaiBatchItem"],
    }
    HMM_SIGN = "hmm.sign" {
        roles: Roles::Any(&[Sign]), scope: Tenant, key: Named, purpose: Hmm, policy: Use, opaque: false,
        replay: NonceAndConsume,
        rest: [route("POST", "/v1/hmm/sign", "Sign an HMM settlement for an attestation")],
        rpc: ["SignHmmSettlement"],
    }
    HMM_VERIFY = "hmm.verify" {
        roles: Roles::Any(&[Verify]), scope: Tenant, key: Claimed, purpose: Hmm, policy: Verify, opaque: false,
        replay: None,
        rest: [route("POST", "/v1/hmm/verify", "Verify a signed settlement")],
        rpc: ["VerifyHmmSettlement"],
    }
    AUDIT_LIST = "audit.list" {
        roles: Roles::Any(&[Audit]), scope: AllTenants, key: None, policy: Read, opaque: false,
        replay: None,
        rest: [route("GET", "/v1/audit",
            "Audit records after SEQ, oldest first (?after=SEQ&limit=N, N at most 1000). Each \
             listing is audited itself, so the log never runs dry: a page shorter than N is the \
             end for now")],
        rpc: ["ListAudit"],
    }
    AUDIT_VERIFY = "audit.verify" {
        roles: Roles::Any(&[Audit]), scope: AllTenants, key: None, policy: Read, opaque: false,
        replay: None,
        rest: [route("GET", "/v1/audit/verify", "Verify the audit hash chain")],
        rpc: ["VerifyAudit"],
    }
    TOKEN_CREATE = "token.create" {
        roles: Roles::Any(&[Admin, Manage]), scope: Tenant, key: None, policy: Read,
        opaque: false, replay: None,
        rest: [route("POST", "/v1/tokens", "Create an API token")], rpc: ["CreateToken"],
    }
    TOKEN_LIST = "token.list" {
        roles: Roles::Any(&[Admin, Manage]), scope: Tenant, key: None, policy: Read,
        opaque: false, replay: None,
        rest: [route("GET", "/v1/tokens", "List API tokens")], rpc: ["ListTokens"],
    }
    TOKEN_REVOKE = "token.revoke" {
        roles: Roles::Any(&[Admin, Manage]), scope: Tenant, key: None, policy: Read,
        opaque: false, replay: None,
        rest: [route("DELETE", "/v1/tokens/{id}", "Revoke an API token")], rpc: ["RevokeToken"],
    }
    AUDIT_CHECKPOINT = "audit.checkpoint" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    AUDIT_EXPORT = "audit.export" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    AUDIT_PRUNE = "audit.prune" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    BACKUP_CREATE = "backup.create" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
    BACKUP_RESTORE = "backup.restore" {
        roles: ADMIN, scope: AllTenants, key: None, policy: Read, opaque: false, replay: None,
        rest: [], rpc: [],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_routes_and_methods_are_unique() {
        let mut names: Vec<_> = OPERATIONS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPERATIONS.len(), "an operation name repeats");
        let mut routes: Vec<_> = OPERATIONS
            .iter()
            .flat_map(|o| o.rest.iter().map(|r| (r.method, r.path)))
            .collect();
        let n = routes.len();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), n, "a REST route reaches two operations");
        let mut rpcs: Vec<_> = OPERATIONS.iter().flat_map(|o| o.rpc.iter()).collect();
        let n = rpcs.len();
        rpcs.sort_unstable();
        rpcs.dedup();
        assert_eq!(rpcs.len(), n, "a gRPC method reaches two operations");
    }

    #[test]
    fn lookups_agree_with_the_table() {
        assert_eq!(
            Operation::of_route("POST", "/v1/poai/sign"),
            Some(&POAI_SIGN)
        );
        assert_eq!(Operation::of_rpc("SignPoai"), Some(&POAI_SIGN));
        assert_eq!(Operation::of_rpc("UnwrapDataKey"), Some(&DATA_DECRYPT));
        assert_eq!(Operation::named("hmm.sign"), Some(&HMM_SIGN));
        assert_eq!(Operation::of_route("GET", "/v1/nope"), None);
        assert_eq!(
            POAI_SIGN_BATCH.limiter_names(),
            ["poai.sign_batch", "sign_batch", "sign"]
        );
    }

    #[test]
    fn every_verification_is_verify_policy_and_every_signer_of_objects_has_a_replay_guard() {
        for o in OPERATIONS {
            if o.key == KeyArg::Claimed {
                assert_eq!(o.policy, KeyPolicy::Verify, "{}", o.name);
            }
            if o.name.starts_with("poai.sign") || o.name == "hmm.sign" {
                assert_ne!(o.replay, Replay::None, "{}", o.name);
            }
        }
    }
}
