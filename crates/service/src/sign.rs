//! PoAI attestations, HMM settlements and PoAI batches: signing and verification through the
//! pipeline (DESIGN.md §4; docs/signing.md).
//!
//! Replay guard (pipeline step 5): inside the write transaction that carries the audit record, the
//! key's `(key, nonce)` row is read. A different message under a used nonce is refused as replayed;
//! the same message again returns the signature recorded the first time (so clients may retry, and
//! a randomised algorithm still answers with one signature). A new nonce is signed and recorded
//! with its signature; the signature leaves the process only after that transaction commits.
//! A settlement also consumes its attestation: the store's primary key lets that happen once.
//! A settlement must carry the attestation it pays for, signed by a key of its own tenant, so
//! that no tenant can consume (and so block) another's attestation.
//!
//! A PoAI key with an ML-DSA-65 partner (`poai:C:N-pq`, made in hybrid mode) signs every
//! attestation and batch with both; verification then requires both halves (verify.rs).

use hanzo_kms_core::eip712::{
    B32, Domain, HMMSettlement, HexBytes, PoAIAttestation, PoAIBatch, check_text, keccak256,
};
use hanzo_kms_core::merkle;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyName, Result, eth};
use hanzo_kms_store::StoredKey;
use serde::Serialize;

use crate::operation::{self as op, Operation};
use crate::pipeline::{Call, Done, Receipt, Target};
use crate::{Kms, RequestCtx};

/// How far in the future a timestamp may be.
pub const MAX_FUTURE_SECS: u64 = 60;

pub use hanzo_kms_core::signed::{
    BatchItem, PqSignature, ProofStep, SignedAttestation, SignedSettlement,
};

/// The ML-DSA-65 partner of a PoAI key in hybrid mode: `poai:C:N` → `poai:C:N-pq`.
pub fn pq_partner(key: &KeyName) -> Result<KeyName> {
    KeyName::new(
        key.purpose(),
        key.customer(),
        &format!("{}-pq", key.name()),
        key.separator(),
    )
}

/// A verification answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub valid: bool,
    /// `null` when valid; else one of bad_proof, bad_signature, digest_mismatch, expired,
    /// not_yet_valid, pq_missing, unknown_key.
    pub reason: Option<&'static str>,
}

impl Verdict {
    pub(crate) fn ok() -> Self {
        Self {
            valid: true,
            reason: None,
        }
    }
    pub(crate) fn no(reason: &'static str) -> Self {
        Self {
            valid: false,
            reason: Some(reason),
        }
    }

    /// How the pipeline records this verdict: `ok`, or `invalid` with the reason.
    pub(crate) fn done(self) -> Done<Verdict> {
        match self.reason {
            Some(reason) if !self.valid => Done::Invalid(self, reason),
            _ => Done::Ok(self),
        }
    }
}

/// What a settlement pays for: the attestation it consumes, signed alone or as a batch item.
/// Its digest must be the settlement's `attestation_digest`, and it must verify under a PoAI key
/// of the settling key's tenant (docs/signing.md, "Who may settle an attestation").
#[derive(Clone, Copy, Debug)]
pub enum Paid<'a> {
    Attestation(&'a SignedAttestation),
    Item(&'a BatchItem),
}

impl<'a> Paid<'a> {
    /// What a request names as paid for: one of a signed attestation and a batch item, or
    /// neither (which the settlement refuses); both is a bad request.
    pub fn of(
        attestation: Option<&'a SignedAttestation>,
        item: Option<&'a BatchItem>,
    ) -> Result<Option<Self>> {
        match (attestation, item) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "request: give either attestation or attestation_item, not both",
            )),
            (Some(a), None) => Ok(Some(Paid::Attestation(a))),
            (None, Some(i)) => Ok(Some(Paid::Item(i))),
            (None, None) => Ok(None),
        }
    }

    fn digest(&self) -> &B32 {
        match self {
            Paid::Attestation(a) => &a.digest,
            Paid::Item(i) => &i.digest,
        }
    }

    fn key(&self) -> &str {
        match self {
            Paid::Attestation(a) => &a.key,
            Paid::Item(i) => &i.key,
        }
    }
}

/// What a signature was made with.
struct Made {
    version: u32,
    algorithm: Algorithm,
    signature: Vec<u8>,
    signer: String,
}

/// Signer labels already worked out, by public key: every signature answers with its signer,
/// and working one out takes two keccak256 and a hex encoding (about 1 µs for secp256k1, a few
/// for ML-DSA-65).
#[derive(Default)]
pub(crate) struct Signers(
    std::sync::Mutex<std::collections::HashMap<Vec<u8>, (Algorithm, String)>>,
);

/// The most labels [`Signers`] keeps; past this it starts afresh (a public key never changes its
/// label, so forgetting one only costs working it out again).
const SIGNERS_KEPT: usize = 4096;

impl Signers {
    /// [`signer_of`], remembered.
    pub(crate) fn label(&self, alg: Algorithm, public_key: &[u8]) -> String {
        let Ok(mut known) = self.0.lock() else {
            return signer_of(alg, public_key);
        };
        match known.get(public_key) {
            Some((a, s)) if *a == alg => s.clone(),
            _ => {
                let s = signer_of(alg, public_key);
                if known.len() >= SIGNERS_KEPT {
                    known.clear();
                }
                known.insert(public_key.to_vec(), (alg, s.clone()));
                s
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |k| k.len())
    }
}

/// The signer label of a public key: the EIP-55 address for secp256k1, else
/// `0x` + keccak256(public key).
pub fn signer_of(alg: Algorithm, public_key: &[u8]) -> String {
    match alg {
        Algorithm::Secp256k1 => eth::address(public_key)
            .map(|a| eth::to_checksum(&a))
            .unwrap_or_default(),
        _ => format!("0x{}", hex::encode(keccak256(public_key))),
    }
}

fn random_nonce() -> Result<B32> {
    Ok(B32(hanzo_kms_crypto::rng::bytes32()?))
}

impl Kms {
    /// The EIP-712 domain from the config (its separator is computed once per `Domain`).
    pub fn domain(&self) -> Result<Domain> {
        if let Some(d) = self.domain.get() {
            return Ok(d.clone());
        }
        let e = &self.config().kms.hanzo.eip712;
        let verifying_contract = e
            .verifying_contract
            .as_deref()
            .map(hanzo_kms_core::eip712::Address::parse)
            .transpose()
            .map_err(|m| {
                Error::new(
                    ErrorKind::Config,
                    format!("kms.hanzo.eip712.verifying_contract: {m}"),
                )
            })?;
        Ok(self
            .domain
            .get_or_init(|| Domain::new(e.chain_id, verifying_contract))
            .clone())
    }

    fn check_window(&self, field: &str, ts: u64, now: u64) -> Result<()> {
        let ttl = self.config().kms.hanzo.poai_signing.attestation_ttl;
        if ts.saturating_add(ttl) < now {
            return Err(Error::invalid(format!(
                "{field}: {ts} is older than attestation_ttl ({ttl} s)"
            )));
        }
        if ts < self.replay_floor() {
            return Err(Error::invalid(format!(
                "{field}: {ts} is before {}, the oldest time this store accepts since attestation_ttl was raised (docs/signing.md)",
                self.replay_floor()
            )));
        }
        if ts > now.saturating_add(MAX_FUTURE_SECS) {
            return Err(Error::invalid(format!(
                "{field}: {ts} is more than {MAX_FUTURE_SECS} s in the future"
            )));
        }
        Ok(())
    }

    /// SignPoAI: fill the nonce, check the time window, sign the EIP-712 digest. A key with an
    /// ML-DSA-65 partner signs with both (hybrid), under the same nonce.
    pub async fn sign_poai(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        mut att: PoAIAttestation,
        now: u64,
    ) -> Result<SignedAttestation> {
        self.run(ctx, &op::POAI_SIGN, Target::Key(key), |call| {
            Box::pin(async move {
                check_text("model_id", &att.model_id)?;
                check_text("node_id", &att.node_id)?;
                call.kms.check_window("timestamp", att.timestamp, now)?;
                let nonce = match att.nonce {
                    Some(n) => n,
                    None => random_nonce()?,
                };
                att.nonce = Some(nonce);
                let digest = call.kms.domain()?.digest(&att.struct_hash()?);
                let nonces = vec![(nonce, digest)];
                let expires = call.kms.attestation_expiry(att.timestamp);
                // The partner first: if it refuses, nothing of the primary is recorded.
                let pq = call
                    .kms
                    .sign_with_partner(call.ctx, &op::POAI_SIGN, key, &nonces, expires, digest)
                    .await?;
                let (made, receipt) = call
                    .kms
                    .sign_object(call, nonces, expires, digest, None)
                    .await?;
                Ok(Done::Committed(
                    SignedAttestation {
                        attestation: att,
                        digest: B32(digest),
                        signature: HexBytes(made.signature),
                        signer: made.signer,
                        algorithm: made.algorithm.to_string(),
                        key: key.to_string(),
                        version: made.version,
                        pq,
                    },
                    receipt,
                ))
            })
        })
        .await
    }

    /// SignHMMSettlement for the attestation it pays for. That attestation (alone, or as a batch
    /// item) must verify, its digest must be the settlement's `attestation_digest`, and its key
    /// must belong to the settling key's tenant. The attestation is consumed: a second settlement
    /// for it is refused as replayed.
    pub async fn sign_hmm(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        mut s: HMMSettlement,
        paid: Option<Paid<'_>>,
        now: u64,
    ) -> Result<SignedSettlement> {
        self.run(ctx, &op::HMM_SIGN, Target::Key(key), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let paid = paid.ok_or_else(|| {
                    Error::invalid(
                        "attestation: a settlement needs the signed attestation (or batch item) it pays for",
                    )
                })?;
                if paid.digest() != &s.attestation_digest {
                    return Err(Error::invalid(
                        "attestation_digest: does not match the attestation's digest",
                    ));
                }
                let owner = kms
                    .parse_name(paid.key())
                    .map_err(|_| Error::invalid("attestation: its key is not a key name"))?;
                if owner.customer() != key.customer() {
                    return Err(Error::invalid(format!(
                        "attestation: signed by a key of tenant '{}'; {key} settles only tenant '{}''s attestations",
                        owner.customer(),
                        key.customer()
                    )));
                }
                let (verdict, attested) = match paid {
                    Paid::Attestation(a) => (
                        kms.attestation_verdict(call.ctx, a, now).await?,
                        a.attestation.timestamp,
                    ),
                    Paid::Item(i) => (
                        kms.item_verdict(call.ctx, i, now).await?,
                        i.attestation.timestamp,
                    ),
                };
                if !verdict.valid {
                    return Err(Error::invalid(format!(
                        "attestation: not valid ({})",
                        verdict.reason.unwrap_or("invalid")
                    )));
                }
                check_text("job_id", &s.job_id)?;
                if s.expiry == 0 {
                    s.expiry = s
                        .timestamp
                        .saturating_add(kms.config().kms.hanzo.hmm_settlement.settlement_expiry);
                }
                if s.expiry < now {
                    return Err(Error::invalid(format!("expiry: {} has passed", s.expiry)));
                }
                if s.timestamp > now.saturating_add(MAX_FUTURE_SECS) || s.expiry < s.timestamp {
                    return Err(Error::invalid("timestamp: in the future, or after expiry"));
                }
                let nonce = match s.nonce {
                    Some(n) => n,
                    None => random_nonce()?,
                };
                s.nonce = Some(nonce);
                let digest = kms.domain()?.digest(&s.struct_hash()?);
                // The settlement's nonce is needed until it expires; the attestation's consumption
                // until the attestation stops verifying.
                let consume = Some((s.attestation_digest.0, kms.attestation_expiry(attested)));
                let expires = i64::try_from(s.expiry).unwrap_or(i64::MAX);
                let (made, receipt) = kms
                    .sign_object(call, vec![(nonce, digest)], expires, digest, consume)
                    .await?;
                Ok(Done::Committed(
                    SignedSettlement {
                        settlement: s,
                        digest: B32(digest),
                        signature: HexBytes(made.signature),
                        signer: made.signer,
                        algorithm: made.algorithm.to_string(),
                        key: key.to_string(),
                        version: made.version,
                    },
                    receipt,
                ))
            })
        })
        .await
    }

    /// Sign many attestations with one signature over the Merkle root of their digests. Every
    /// item's nonce is recorded for the key, as if signed alone. A key with an ML-DSA-65 partner
    /// signs the batch with both.
    pub async fn sign_poai_batch(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        atts: Vec<PoAIAttestation>,
        now: u64,
    ) -> Result<Vec<BatchItem>> {
        self.run(ctx, &op::POAI_SIGN_BATCH, Target::Key(key), |call| {
            Box::pin(async move {
                let kms = call.kms;
                if atts.is_empty() {
                    return Err(Error::invalid("a batch needs at least one attestation"));
                }
                let domain = kms.domain()?;
                let mut items = Vec::with_capacity(atts.len());
                let mut nonces = Vec::with_capacity(atts.len());
                for (i, mut a) in atts.into_iter().enumerate() {
                    let ctxt = |e: Error| e.context(format!("item {i}"));
                    check_text("model_id", &a.model_id).map_err(ctxt)?;
                    check_text("node_id", &a.node_id).map_err(ctxt)?;
                    kms.check_window("timestamp", a.timestamp, now)
                        .map_err(ctxt)?;
                    let n = match a.nonce {
                        Some(n) => n,
                        None => random_nonce()?,
                    };
                    a.nonce = Some(n);
                    let d = domain.digest(&a.struct_hash()?);
                    if nonces.iter().any(|(m, _)| *m == n) {
                        return Err(Error::invalid(format!(
                            "item {i}: nonce {} appears twice in this batch",
                            n.to_hex()
                        )));
                    }
                    nonces.push((n, d));
                    items.push((a, d));
                }
                let digests: Vec<[u8; 32]> = items.iter().map(|(_, d)| *d).collect();
                let (root, proofs) = merkle::build(&digests);
                let batch = PoAIBatch {
                    root: B32(root),
                    count: items.len() as u64,
                    timestamp: now,
                };
                let batch_digest = domain.digest(&batch.struct_hash());
                // Every item's nonce is kept until the newest item expires.
                let newest = items.iter().map(|(a, _)| a.timestamp).max().unwrap_or(now);
                let expires = kms.attestation_expiry(newest);
                let pq = kms
                    .sign_with_partner(
                        call.ctx,
                        &op::POAI_SIGN_BATCH,
                        key,
                        &nonces,
                        expires,
                        batch_digest,
                    )
                    .await?;
                let (made, receipt) = kms
                    .sign_object(call, nonces, expires, batch_digest, None)
                    .await?;
                let items = items
                    .into_iter()
                    .zip(proofs)
                    .enumerate()
                    .map(|(i, ((a, d), p))| BatchItem {
                        batch: batch.clone(),
                        batch_digest: B32(batch_digest),
                        signature: HexBytes(made.signature.clone()),
                        signer: made.signer.clone(),
                        algorithm: made.algorithm.to_string(),
                        key: key.to_string(),
                        version: made.version,
                        attestation: a,
                        digest: B32(d),
                        index: i as u64,
                        proof: p
                            .into_iter()
                            .map(|s| ProofStep {
                                hash: B32(s.sibling),
                                left: s.sibling_is_left,
                            })
                            .collect(),
                        pq: pq.clone(),
                    })
                    .collect();
                Ok(Done::Committed(items, receipt))
            })
        })
        .await
    }

    /// The ML-DSA-65 partner's half of a hybrid signature over `digest`, recording `nonces` for
    /// the partner too (a request of its own, with its own record); `None` when the key has no
    /// partner the caller may use.
    async fn sign_with_partner(
        &self,
        ctx: &RequestCtx,
        operation: &'static Operation,
        key: &KeyName,
        nonces: &[(B32, [u8; 32])],
        expires: i64,
        digest: [u8; 32],
    ) -> Result<Option<PqSignature>> {
        let partner = pq_partner(key)?;
        if self.visible_partner(ctx, &partner).await?.is_none() {
            return Ok(None);
        }
        let nonces = nonces.to_vec();
        let made = self
            .run(ctx, operation, Target::Key(&partner), |call| {
                Box::pin(async move {
                    let (made, receipt) = call
                        .kms
                        .sign_object(call, nonces, expires, digest, None)
                        .await?;
                    Ok(Done::Committed(made, receipt))
                })
            })
            .await?;
        Ok(Some(PqSignature {
            key: partner.to_string(),
            version: made.version,
            algorithm: made.algorithm.to_string(),
            signature: HexBytes(made.signature),
            signer: made.signer,
        }))
    }

    /// Steps 5 and 6 for a signature over `digest` with the call's key (its primary version):
    /// sign, then hand the replay records and the request's record to the group committer. The
    /// signature leaves only once they are durable; an exact retry gets the first signature.
    async fn sign_object(
        &self,
        call: &mut Call<'_>,
        nonces: Vec<(B32, [u8; 32])>,
        expires: i64,
        digest: [u8; 32],
        consume: Option<([u8; 32], i64)>,
    ) -> Result<(Made, Receipt)> {
        let (version, kref) = call.version(None)?;
        let algorithm = kref.algorithm;
        if !matches!(algorithm, Algorithm::Secp256k1 | Algorithm::MlDsa65) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} is {algorithm}; signed objects use secp256k1 or ml-dsa-65",
                    kref.name
                ),
            ));
        }
        let signature = self.device(|p| p.sign(&kref, &digest))?.0;
        let key = kref.name.to_string();
        let mut record = version.to_be_bytes().to_vec();
        record.extend_from_slice(&signature);
        let (outcome, receipt) = call
            .submit(
                key,
                nonces,
                expires,
                record,
                consume.map(|(a, until)| (a, digest, until)),
            )
            .await?;
        let stored = call.key()?;
        let signer = |v: u32| {
            let pk = stored
                .version(v)
                .and_then(|x| x.info.public_key.as_deref())
                .unwrap_or_default();
            self.signers.label(algorithm, pk)
        };
        let made = match outcome {
            crate::commit::Outcome::Recorded => Made {
                version,
                algorithm,
                signature,
                signer: signer(version),
            },
            crate::commit::Outcome::Retry(rec) => {
                let v = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
                Made {
                    version: v,
                    algorithm,
                    signature: rec[4..].to_vec(),
                    signer: signer(v),
                }
            }
        };
        Ok((made, receipt))
    }
}

/// What a signed object says signed it: the fields beside the signature.
pub(crate) struct Claimed<'a> {
    pub signature: &'a [u8],
    pub signer: &'a str,
    pub algorithm: &'a str,
    pub version: u32,
}

/// Whether `claimed.signature` over `digest` verifies under the version of the key the object
/// names, with the key's algorithm, and `signer` names that version. A signature relabelled
/// with another version or algorithm does not verify: those labels are what a reader of the
/// object (and its audit record) takes them for.
pub(crate) fn signature_matches(key: &StoredKey, digest: &[u8; 32], claimed: Claimed<'_>) -> bool {
    let algorithm = key.meta.algorithm;
    algorithm.to_string() == claimed.algorithm
        && key.versions.iter().any(|v| {
            v.info.version == claimed.version
                && v.info.public_key.as_deref().is_some_and(|pk| {
                    hanzo_kms_crypto::verify::verify(algorithm, pk, digest, claimed.signature)
                        && signer_of(algorithm, pk).eq_ignore_ascii_case(claimed.signer)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_labels_are_remembered_by_key_and_algorithm() {
        // The generator point is the public key of secret 1, whose address is well known.
        let g = hex::decode(
            "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798\
             483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8",
        )
        .unwrap();
        let signers = Signers::default();
        let address = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";
        assert_eq!(signers.label(Algorithm::Secp256k1, &g), address);
        assert_eq!(signers.label(Algorithm::Secp256k1, &g), address);
        assert_eq!(signers.len(), 1);
        // The same bytes under another algorithm get that algorithm's label, not the one kept.
        let other = signers.label(Algorithm::MlDsa65, &g);
        assert_eq!(other, signer_of(Algorithm::MlDsa65, &g));
        assert_ne!(other, address);
        assert_eq!(signers.label(Algorithm::Secp256k1, &g), address);
        // Past the limit it starts afresh, and still answers right.
        for i in 0..SIGNERS_KEPT as u32 + 1 {
            let pk = i.to_be_bytes();
            assert_eq!(
                signers.label(Algorithm::MlDsa65, &pk),
                signer_of(Algorithm::MlDsa65, &pk)
            );
        }
        assert!(signers.len() <= SIGNERS_KEPT, "{}", signers.len());
        assert_eq!(signers.label(Algorithm::Secp256k1, &g), address);
    }
}
