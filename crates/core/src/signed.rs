//! Signed objects as the API returns them and verification reads them: signed attestations,
//! settlements and batch items (docs/signing.md). Formats only; signing and verification live in
//! the service, and the client reads these from either API.

use serde::{Deserialize, Serialize};

use crate::eip712::{B32, HMMSettlement, HexBytes, PoAIAttestation, PoAIBatch};

/// A signed attestation, as `poai sign` prints it and `poai verify` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    pub attestation: PoAIAttestation,
    pub digest: B32,
    pub signature: HexBytes,
    pub signer: String,
    pub algorithm: String,
    pub key: String,
    pub version: u32,
    /// Hybrid signing: the ML-DSA-65 partner's signature over the same digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq: Option<PqSignature>,
}

/// The post-quantum half of a hybrid signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PqSignature {
    pub key: String,
    pub version: u32,
    pub algorithm: String,
    pub signature: HexBytes,
    pub signer: String,
}

/// A signed settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSettlement {
    pub settlement: HMMSettlement,
    pub digest: B32,
    pub signature: HexBytes,
    pub signer: String,
    pub algorithm: String,
    pub key: String,
    pub version: u32,
}

/// One step of an inclusion proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofStep {
    pub hash: B32,
    pub left: bool,
}

/// One attestation of a batch with its proof: what `poai verify-item` reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub batch: PoAIBatch,
    pub batch_digest: B32,
    pub signature: HexBytes,
    pub signer: String,
    pub algorithm: String,
    pub key: String,
    pub version: u32,
    pub attestation: PoAIAttestation,
    pub digest: B32,
    pub index: u64,
    pub proof: Vec<ProofStep>,
    /// Hybrid signing: the ML-DSA-65 partner's signature over the same batch digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq: Option<PqSignature>,
}
