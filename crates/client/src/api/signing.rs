//! PoAI attestations, batches, HMM settlements, and general signing with `api:` keys.

use hanzo_kms_core::Result;
use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation};
use hanzo_kms_proto::v1 as pb;
use serde_json::{Value, json};

use crate::call::{
    Json, Sign, SignHmmSettlement, SignPoai, SignPoaiBatch, Verify, VerifyHmmSettlement,
    VerifyPoai, VerifyPoaiBatchItem,
};
use crate::transport::{from_value, read, to_value};
use crate::{
    BatchItem, Client, Signature, SignedAttestation, SignedSettlement, Verdict, time_ordered_nonce,
};

/// What a settlement pays for, on the wire.
enum Paid<'a> {
    Attestation(&'a SignedAttestation),
    Item(&'a BatchItem),
}

impl Client {
    /// SignPoAI. The nonce is fixed here before the first attempt ([`time_ordered_nonce`] when
    /// the attestation has none), so a retried call returns the signature the server recorded.
    pub async fn sign_poai(
        &self,
        key: &str,
        mut attestation: PoAIAttestation,
    ) -> Result<SignedAttestation> {
        if attestation.nonce.is_none() {
            attestation.nonce = Some(time_ordered_nonce()?);
        }
        let body = json!({"key": key, "attestation": to_value(&attestation)?});
        let msg: pb::SignPoaiRequest = from_value("attestation", body.clone())?;
        let v = self.call_json(&SignPoai(Json { body, msg: &msg })).await?;
        read("signed attestation", v)
    }

    /// Sign many attestations under one Merkle root (one signature; each item has its proof).
    pub async fn sign_poai_batch(
        &self,
        key: &str,
        mut attestations: Vec<PoAIAttestation>,
    ) -> Result<Vec<BatchItem>> {
        for a in &mut attestations {
            if a.nonce.is_none() {
                a.nonce = Some(time_ordered_nonce()?);
            }
        }
        let body = json!({"key": key, "attestations": to_value(&attestations)?});
        let msg: pb::SignPoaiBatchRequest = from_value("attestations", body.clone())?;
        let v = self
            .call_json(&SignPoaiBatch(Json { body, msg: &msg }))
            .await?;
        let list = v.get("items").cloned().unwrap_or(v);
        read("batch items", list)
    }

    /// VerifyPoAI: signature (both halves of a hybrid one), digest, time window and signer.
    pub async fn verify_poai(&self, signed: &SignedAttestation) -> Result<Verdict> {
        let body = to_value(signed)?;
        let msg: pb::SignedAttestation = from_value("signed attestation", body.clone())?;
        read(
            "verdict",
            self.call_json(&VerifyPoai(Json { body, msg: &msg }))
                .await?,
        )
    }

    /// Verify one item of a PoAI batch with its inclusion proof.
    pub async fn verify_poai_batch_item(&self, item: &BatchItem) -> Result<Verdict> {
        let body = to_value(item)?;
        let msg: pb::BatchItem = from_value("batch item", body.clone())?;
        read(
            "verdict",
            self.call_json(&VerifyPoaiBatchItem(Json { body, msg: &msg }))
                .await?,
        )
    }

    /// SignHMMSettlement for the attestation it pays for: the server checks the attestation,
    /// that its digest is the settlement's and that its key is of the settling key's tenant,
    /// and consumes it (a second settlement for it is refused as replayed).
    pub async fn sign_hmm_settlement(
        &self,
        key: &str,
        settlement: HMMSettlement,
        attestation: &SignedAttestation,
    ) -> Result<SignedSettlement> {
        self.settle(key, settlement, Paid::Attestation(attestation))
            .await
    }

    /// [`Client::sign_hmm_settlement`] for an attestation signed in a batch.
    pub async fn sign_hmm_settlement_for_item(
        &self,
        key: &str,
        settlement: HMMSettlement,
        item: &BatchItem,
    ) -> Result<SignedSettlement> {
        self.settle(key, settlement, Paid::Item(item)).await
    }

    async fn settle(
        &self,
        key: &str,
        mut settlement: HMMSettlement,
        paid: Paid<'_>,
    ) -> Result<SignedSettlement> {
        if settlement.nonce.is_none() {
            settlement.nonce = Some(time_ordered_nonce()?);
        }
        let mut body = json!({"key": key, "settlement": to_value(&settlement)?});
        match paid {
            Paid::Attestation(a) => body["attestation"] = to_value(a)?,
            Paid::Item(i) => body["attestation_item"] = to_value(i)?,
        }
        let msg: pb::SignHmmSettlementRequest = from_value("settlement", body.clone())?;
        let v = self
            .call_json(&SignHmmSettlement(Json { body, msg: &msg }))
            .await?;
        read("signed settlement", v)
    }

    /// Verify a signed settlement (and, when given, the attestation it settles).
    pub async fn verify_hmm_settlement(
        &self,
        signed: &SignedSettlement,
        attestation: Option<&SignedAttestation>,
    ) -> Result<Verdict> {
        let mut body = json!({ "signed": to_value(signed)? });
        if let Some(a) = attestation {
            body["attestation"] = to_value(a)?;
        }
        let msg: pb::VerifyHmmSettlementRequest = from_value("signed settlement", body.clone())?;
        read(
            "verdict",
            self.call_json(&VerifyHmmSettlement(Json { body, msg: &msg }))
                .await?,
        )
    }

    /// Sign a message with an `api:` key. secp256k1 signs keccak256(message) and P-256
    /// SHA-256(message), unless `prehashed`: then the message is the caller's 32-byte digest
    /// (keccak256 or SHA-256 respectively). Ed25519 and ML-DSA-65 sign the message itself and
    /// refuse `prehashed`.
    pub async fn sign(&self, key: &str, message: &[u8], prehashed: bool) -> Result<Signature> {
        let v = self
            .call_json(&Sign {
                key,
                message,
                prehashed,
            })
            .await?;
        read("signature", v)
    }

    /// Verify a signature made by [`Client::sign`] under any version of the key.
    pub async fn verify(
        &self,
        key: &str,
        message: &[u8],
        signature: &[u8],
        prehashed: bool,
    ) -> Result<bool> {
        let v = self
            .call_json(&Verify {
                key,
                message,
                signature,
                prehashed,
            })
            .await?;
        Ok(v.get("valid").and_then(Value::as_bool).unwrap_or(false))
    }
}
