//! The gRPC API (`proto/hanzo/kms/v1/kms.proto`), over the same pipeline as REST.
//!
//! Each RPC authenticates the `authorization` metadata into a [`RequestCtx`], turns the message
//! into the service's types, and calls the same `Kms` method the REST handler and the CLI call.
//! Messages with EIP-712 or key-report content are converted through their JSON form, which the
//! generated messages share with the REST API (see `hanzo-kms-proto`), so both APIs accept and
//! return exactly the same fields.
//!
//! Errors are mapped to a gRPC code by [`crate::error::wire_status`], the one table REST uses too. An
//! INTERNAL or UNAVAILABLE message is generic; the detail goes to the log with the request id,
//! which every response and error carries in the `x-request-id` metadata entry.
//!
//! Files: this one holds the service and its RPCs; `audited.rs` the layer that audits what
//! tonic refuses before an RPC runs and wipes secret answers; `convert.rs` the conversions
//! between wire messages and service values, and the error mapping.

mod audited;
mod convert;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hanzo_kms_core::{Algorithm, Error, Result};
use hanzo_kms_proto::v1 as pb;
use hanzo_kms_service::sign::{BatchItem, Paid, SignedAttestation, SignedSettlement};
use hanzo_kms_service::{RequestCtx, Role};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use hanzo_kms_service::operation::Operation;

use crate::server::AppState;

pub(crate) use audited::Audited;
use audited::Reached;
pub use convert::status;
use convert::{Fail, batch_item_to_pb, local, missing, model_key_pb, now_u64};
pub(crate) use convert::{attestation_from_pb, attestation_to_pb, from_pb, to_pb};

/// The gRPC service: a handle on the server's shared state.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// The tonic service with message-size limits applied, behind [`Audited`]. Every RPC is cut
/// off after `request_timeout`, but `VerifyAudit`, which reads the whole log, after at least
/// `crate::middleware::AUDIT_VERIFY_TIMEOUT`, as on REST.
pub(crate) fn service(
    state: Arc<AppState>,
    max_message: usize,
    request_timeout: Duration,
) -> Audited {
    let inner = pb::kms_server::KmsServer::new(Service::new(state.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    Audited {
        inner,
        state,
        request_timeout,
    }
}

impl Service {
    /// Pipeline step 1 for a gRPC request: the bearer token in the metadata, the peer address.
    async fn auth<T>(&self, req: Request<T>) -> std::result::Result<(RequestCtx, T), Status> {
        if let Some(r) = req.extensions().get::<Reached>() {
            r.0.store(true, Ordering::Release);
        }
        let credential =
            crate::extract::credential(req.metadata().as_ref().get_all("authorization").iter());
        let peer = req.remote_addr().map(|a: SocketAddr| a.to_string());
        let request_id = req
            .extensions()
            .get::<crate::middleware::RequestId>()
            .map_or_else(crate::error::fresh_id, |id| id.0.to_string());
        let authed = match credential {
            crate::extract::Credential::Bearer(bearer) => {
                self.state
                    .kms
                    .authenticate_as(bearer, peer, request_id.clone())
                    .await
            }
            crate::extract::Credential::Several => Err(self
                .state
                .kms
                .refuse_credential(peer, request_id.clone(), "several authorization headers")
                .await),
        };
        match authed {
            Ok(ctx) => Ok((ctx, req.into_inner())),
            Err(e) => {
                self.state.count("grpc", 401);
                Err(status(&e, &request_id))
            }
        }
    }

    /// Answer: the message or the mapped status, with the request id, counted in `/metrics`.
    /// A refusal by this layer's own checks is audited here, under the operation of `rpc` (the
    /// method's name); the service audits everything else. If that record cannot be written,
    /// the answer is the audit failure.
    async fn reply<P>(
        &self,
        ctx: &RequestCtx,
        rpc: &'static str,
        r: std::result::Result<P, Fail>,
    ) -> std::result::Result<Response<P>, Status> {
        let operation = Operation::of_rpc(rpc).map_or(crate::UNKNOWN_OPERATION, |o| o.name);
        let r = match r {
            Ok(m) => Ok(m),
            Err(Fail::Service(e)) => Err(e),
            Err(Fail::Local(e)) => match self.kms().audit_refusal(ctx, operation, None, &e).await {
                Ok(()) => Err(e),
                Err(audit) => Err(audit),
            },
        };
        match r {
            Ok(m) => {
                self.state.count("grpc", 200);
                let mut resp = Response::new(m);
                if let Ok(v) = MetadataValue::try_from(ctx.request_id.as_str()) {
                    resp.metadata_mut().insert("x-request-id", v);
                }
                Ok(resp)
            }
            Err(e) => {
                self.state
                    .count("grpc", crate::error::wire_status(e.kind()).0.as_u16());
                Err(status(&e, &ctx.request_id))
            }
        }
    }

    fn kms(&self) -> &hanzo_kms_service::Kms {
        &self.state.kms
    }
}

type Rpc<P> = std::result::Result<Response<P>, Status>;

#[tonic::async_trait]
impl pb::kms_server::Kms for Service {
    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            let alg = match m.algorithm.as_str() {
                "" => None,
                a => Some(local(a.parse::<Algorithm>())?),
            };
            let info = self
                .kms()
                .create_key(&ctx, &name, alg, m.rotation_days)
                .await?;
            Ok(to_pb(&info)?)
        }
        .await;
        self.reply(&ctx, "CreateKey", r).await
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Rpc<pb::KeyList> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let keys = self.kms().list_keys(&ctx, &m.prefix).await?;
            Ok(pb::KeyList {
                keys: to_pb(&keys)?,
            })
        }
        .await;
        self.reply(&ctx, "ListKeys", r).await
    }

    async fn get_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().show_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "GetKey", r).await
    }

    async fn rotate_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::KeyInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().rotate_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "RotateKey", r).await
    }

    async fn get_public_key(&self, req: Request<pb::KeyRequest>) -> Rpc<pb::PublicKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.name))?;
            Ok(to_pb(&self.kms().public_key(&ctx, &name).await?)?)
        }
        .await;
        self.reply(&ctx, "GetPublicKey", r).await
    }

    async fn create_model_keyspace(
        &self,
        req: Request<pb::CreateModelKeyspaceRequest>,
    ) -> Rpc<pb::KeyList> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let keys = self
                .kms()
                .create_keyspace(&ctx, &m.customer, &m.model, m.signing_keys.unwrap_or(true))
                .await?;
            Ok(pb::KeyList {
                keys: to_pb(&keys)?,
            })
        }
        .await;
        self.reply(&ctx, "CreateModelKeyspace", r).await
    }

    async fn encrypt(&self, req: Request<pb::EncryptRequest>) -> Rpc<pb::EncryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let c = self
                .kms()
                .encrypt(&ctx, &name, &m.plaintext, &m.aad)
                .await?;
            Ok(pb::EncryptResponse {
                key: c.key,
                version: c.version,
                ciphertext: c.text,
            })
        }
        .await;
        self.reply(&ctx, "Encrypt", r).await
    }

    async fn decrypt(&self, req: Request<pb::DecryptRequest>) -> Rpc<pb::DecryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let p = self
                .kms()
                .decrypt(&ctx, &name, &m.ciphertext, &m.aad)
                .await?;
            Ok(pb::DecryptResponse {
                plaintext: p.expose().to_vec(),
            })
        }
        .await;
        self.reply(&ctx, "Decrypt", r).await
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Rpc<pb::GenerateDataKeyResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let (c, dek) = self.kms().generate_data_key(&ctx, &name, &m.aad).await?;
            Ok(pb::GenerateDataKeyResponse {
                key: c.key,
                version: c.version,
                plaintext: dek.expose().to_vec(),
                ciphertext: c.text,
            })
        }
        .await;
        self.reply(&ctx, "GenerateDataKey", r).await
    }

    async fn unwrap_data_key(&self, req: Request<pb::DecryptRequest>) -> Rpc<pb::DecryptResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let p = self
                .kms()
                .unwrap_data_key(&ctx, &name, &m.ciphertext, &m.aad)
                .await?;
            Ok(pb::DecryptResponse {
                plaintext: p.expose().to_vec(),
            })
        }
        .await;
        self.reply(&ctx, "UnwrapDataKey", r).await
    }

    async fn generate_model_key(
        &self,
        req: Request<pb::GenerateModelKeyRequest>,
    ) -> Rpc<pb::ModelKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_model_name(&m.key))?;
            let seg = (m.segment_size != 0).then_some(m.segment_size);
            let k = self.kms().model_key(&ctx, &name, &m.metadata, seg).await?;
            Ok(model_key_pb(k))
        }
        .await;
        self.reply(&ctx, "GenerateModelKey", r).await
    }

    async fn unwrap_model_key(&self, req: Request<pb::UnwrapModelKeyRequest>) -> Rpc<pb::ModelKey> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_model_name(&m.key))?;
            let k = self.kms().model_unwrap(&ctx, &name, &m.header).await?;
            Ok(model_key_pb(k))
        }
        .await;
        self.reply(&ctx, "UnwrapModelKey", r).await
    }

    async fn sign(&self, req: Request<pb::SignRequest>) -> Rpc<pb::Signature> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let mut sigs = self
                .kms()
                .sign_messages(&ctx, &name, &[m.message], m.prehashed)
                .await?;
            Ok(to_pb(&sigs.remove(0))?)
        }
        .await;
        self.reply(&ctx, "Sign", r).await
    }

    async fn sign_batch(&self, req: Request<pb::SignBatchRequest>) -> Rpc<pb::SignBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            if m.messages.is_empty() {
                return Err(Fail::Local(Error::invalid("request: messages: empty")));
            }
            let name = local(self.kms().parse_name(&m.key))?;
            let sigs = self
                .kms()
                .sign_messages(&ctx, &name, &m.messages, m.prehashed)
                .await?;
            Ok(pb::SignBatchResponse {
                signatures: to_pb(&sigs)?,
            })
        }
        .await;
        self.reply(&ctx, "SignBatch", r).await
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Rpc<pb::VerifyResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let mut v = self
                .kms()
                .verify_messages(&ctx, &name, &[(m.message, m.signature)], m.prehashed)
                .await?;
            Ok(to_pb(&v.remove(0))?)
        }
        .await;
        self.reply(&ctx, "Verify", r).await
    }

    async fn verify_batch(
        &self,
        req: Request<pb::VerifyBatchRequest>,
    ) -> Rpc<pb::VerifyBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            if m.items.is_empty() {
                return Err(Fail::Local(Error::invalid("request: items: empty")));
            }
            let name = local(self.kms().parse_name(&m.key))?;
            let items: Vec<(Vec<u8>, Vec<u8>)> = m
                .items
                .into_iter()
                .map(|i| (i.message, i.signature))
                .collect();
            let v = self
                .kms()
                .verify_messages(&ctx, &name, &items, m.prehashed)
                .await?;
            Ok(pb::VerifyBatchResponse {
                verdicts: to_pb(&v)?,
            })
        }
        .await;
        self.reply(&ctx, "VerifyBatch", r).await
    }

    async fn sign_poai(&self, req: Request<pb::SignPoaiRequest>) -> Rpc<pb::SignedAttestation> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let att = m.attestation.ok_or_else(|| missing("attestation"))?;
            let att = local(from_pb("attestation", &att))?;
            Ok(to_pb(
                &self.kms().sign_poai(&ctx, &name, att, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "SignPoai", r).await
    }

    async fn verify_poai(&self, req: Request<pb::SignedAttestation>) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let signed: SignedAttestation = local(from_pb("request", &m))?;
            Ok(to_pb(
                &self.kms().verify_poai(&ctx, &signed, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "VerifyPoai", r).await
    }

    async fn sign_poai_batch(
        &self,
        req: Request<pb::SignPoaiBatchRequest>,
    ) -> Rpc<pb::SignPoaiBatchResponse> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let atts = m
                .attestations
                .into_iter()
                .enumerate()
                .map(|(i, a)| attestation_from_pb(i, a))
                .collect::<Result<Vec<_>>>()
                .map_err(Fail::Local)?;
            let items = self
                .kms()
                .sign_poai_batch(&ctx, &name, atts, now_u64())
                .await?;
            Ok(pb::SignPoaiBatchResponse {
                items: items.into_iter().map(batch_item_to_pb).collect(),
            })
        }
        .await;
        self.reply(&ctx, "SignPoaiBatch", r).await
    }

    async fn verify_poai_batch_item(&self, req: Request<pb::BatchItem>) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let item: BatchItem = local(from_pb("request", &m))?;
            Ok(to_pb(
                &self.kms().verify_batch_item(&ctx, &item, now_u64()).await?,
            )?)
        }
        .await;
        self.reply(&ctx, "VerifyPoaiBatchItem", r).await
    }

    async fn sign_hmm_settlement(
        &self,
        req: Request<pb::SignHmmSettlementRequest>,
    ) -> Rpc<pb::SignedSettlement> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let name = local(self.kms().parse_name(&m.key))?;
            let s = m.settlement.ok_or_else(|| missing("settlement"))?;
            let s = local(from_pb("settlement", &s))?;
            let att: Option<SignedAttestation> = match &m.attestation {
                Some(a) => Some(local(from_pb("attestation", a))?),
                None => None,
            };
            let item: Option<BatchItem> = match &m.attestation_item {
                Some(i) => Some(local(from_pb("attestation_item", i))?),
                None => None,
            };
            let paid = local(Paid::of(att.as_ref(), item.as_ref()))?;
            let signed = self.kms().sign_hmm(&ctx, &name, s, paid, now_u64()).await?;
            Ok(to_pb(&signed)?)
        }
        .await;
        self.reply(&ctx, "SignHmmSettlement", r).await
    }

    async fn verify_hmm_settlement(
        &self,
        req: Request<pb::VerifyHmmSettlementRequest>,
    ) -> Rpc<pb::Verdict> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let signed = m.signed.ok_or_else(|| missing("signed"))?;
            let signed: SignedSettlement = local(from_pb("signed", &signed))?;
            let att: Option<SignedAttestation> = match &m.attestation {
                Some(a) => Some(local(from_pb("attestation", a))?),
                None => None,
            };
            let v = self
                .kms()
                .verify_hmm(&ctx, &signed, att.as_ref(), now_u64())
                .await?;
            Ok(to_pb(&v)?)
        }
        .await;
        self.reply(&ctx, "VerifyHmmSettlement", r).await
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Rpc<pb::AuditRecords> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let limit = if m.limit == 0 { 100 } else { m.limit.min(1000) };
            let records = self.kms().audit_records(&ctx, m.after, limit).await?;
            let json: Vec<_> = records.iter().map(|r| r.to_json()).collect();
            Ok(pb::AuditRecords {
                records: to_pb(&json)?,
            })
        }
        .await;
        self.reply(&ctx, "ListAudit", r).await
    }

    async fn verify_audit(&self, req: Request<pb::Empty>) -> Rpc<pb::AuditReport> {
        let (ctx, _) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> =
            async { Ok(to_pb(&self.kms().audit_verify(&ctx).await?.to_json())?) }.await;
        self.reply(&ctx, "VerifyAudit", r).await
    }

    async fn create_token(&self, req: Request<pb::CreateTokenRequest>) -> Rpc<pb::CreatedToken> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            let roles = m
                .roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>>>()
                .map_err(Fail::Local)?;
            let (info, token) = self
                .kms()
                .create_token_for(
                    &ctx,
                    &m.tenant,
                    &roles,
                    &m.patterns,
                    &m.description,
                    m.ttl_secs,
                )
                .await?;
            Ok(pb::CreatedToken {
                info: Some(to_pb(&info)?),
                token: token.expose().to_owned(),
            })
        }
        .await;
        self.reply(&ctx, "CreateToken", r).await
    }

    async fn list_tokens(&self, req: Request<pb::Empty>) -> Rpc<pb::TokenList> {
        let (ctx, _) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> = async {
            Ok(pb::TokenList {
                tokens: to_pb(&self.kms().list_tokens(&ctx).await?)?,
            })
        }
        .await;
        self.reply(&ctx, "ListTokens", r).await
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Rpc<pb::TokenInfo> {
        let (ctx, m) = self.auth(req).await?;
        let r: std::result::Result<_, Fail> =
            async { Ok(to_pb(&self.kms().revoke_token(&ctx, &m.id).await?)?) }.await;
        self.reply(&ctx, "RevokeToken", r).await
    }
}
