//! Signed objects as the API returns them and verification reads them: signed attestations,
//! settlements and batch items (docs/signing.md). Formats only; signing and verification live in
//! the service, and the client reads these from either API.

use serde::{Deserialize, Serialize};

use serde::Deserializer;

use crate::eip712::{B32, HMMSettlement, HexBytes, PoAIAttestation, PoAIBatch, present};

/// A signed attestation's attestation: it has the nonce it was signed with.
fn nonced_attestation<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<PoAIAttestation, D::Error> {
    let a = PoAIAttestation::deserialize(d)?;
    if a.nonce.is_none() {
        return Err(serde::de::Error::missing_field("nonce"));
    }
    Ok(a)
}

/// A signed settlement's settlement: it has the nonce it was signed with.
fn nonced_settlement<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<HMMSettlement, D::Error> {
    let s = HMMSettlement::deserialize(d)?;
    if s.nonce.is_none() {
        return Err(serde::de::Error::missing_field("nonce"));
    }
    Ok(s)
}

/// A signed attestation, as `poai sign` prints it and `poai verify` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    #[serde(deserialize_with = "nonced_attestation")]
    pub attestation: PoAIAttestation,
    pub digest: B32,
    pub signature: HexBytes,
    pub signer: String,
    pub algorithm: String,
    pub key: String,
    pub version: u32,
    /// Hybrid signing: the ML-DSA-65 partner's signature over the same digest.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
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
    #[serde(deserialize_with = "nonced_settlement")]
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
    #[serde(deserialize_with = "nonced_attestation")]
    pub attestation: PoAIAttestation,
    pub digest: B32,
    pub index: u64,
    pub proof: Vec<ProofStep>,
    /// Hybrid signing: the ML-DSA-65 partner's signature over the same batch digest.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub pq: Option<PqSignature>,
}
