//! PoAI attestations, HMM settlements and PoAI batches: signing and verification through the
//! pipeline (DESIGN.md §4; docs/signing.md).
//!
//! Replay guard (pipeline step 5): inside the write transaction that carries the audit record, the
//! key's `(key, nonce)` row is read. A different message under a used nonce is refused as replayed;
//! the same message again returns the signature recorded the first time (so clients may retry, and
//! a randomised algorithm still answers with one signature). A new nonce is signed and recorded
//! with its signature; the signature leaves the process only after that transaction commits.
//! A settlement also consumes its attestation: the store's primary key lets that happen once.

use hanzo_kms_core::eip712::{
    B32, Domain, HMMSettlement, HexBytes, PoAIAttestation, PoAIBatch, keccak256,
};
use hanzo_kms_core::merkle;
use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyName, KeyRef, Purpose, Result, eth};
use hanzo_kms_store::StoredKey;
use serde::Serialize;

use crate::{Kms, Op, RequestCtx, Role};

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
    /// not_yet_valid, replayed, unknown_key.
    pub reason: Option<&'static str>,
}

impl Verdict {
    fn ok() -> Self {
        Self {
            valid: true,
            reason: None,
        }
    }
    fn no(reason: &'static str) -> Self {
        Self {
            valid: false,
            reason: Some(reason),
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

fn require(key: &KeyName, purpose: Purpose) -> Result<()> {
    if key.purpose() == purpose {
        Ok(())
    } else {
        Err(Error::invalid(format!("{key} is not a {purpose} key")))
    }
}

fn random_nonce() -> Result<B32> {
    let mut n = [0u8; 32];
    hanzo_kms_crypto::rng::fill(&mut n)?;
    Ok(B32(n))
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
        if ts > now.saturating_add(MAX_FUTURE_SECS) {
            return Err(Error::invalid(format!(
                "{field}: {ts} is more than {MAX_FUTURE_SECS} s in the future"
            )));
        }
        Ok(())
    }

    /// SignPoAI: fill the nonce, check the time window, sign the EIP-712 digest.
    pub async fn sign_poai(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        mut att: PoAIAttestation,
        now: u64,
    ) -> Result<SignedAttestation> {
        let mut op = self.op(ctx, "poai.sign", Some(key));
        let r = async {
            require(key, Purpose::Poai)?;
            hanzo_kms_core::eip712::check_text("model_id", &att.model_id)?;
            hanzo_kms_core::eip712::check_text("node_id", &att.node_id)?;
            self.check_window("timestamp", att.timestamp, now)?;
            let nonce = match att.nonce {
                Some(n) => n,
                None => random_nonce()?,
            };
            att.nonce = Some(nonce);
            let digest = self.domain()?.digest(&att.struct_hash()?);
            let made = self
                .sign_digest(ctx, &mut op, key, &[(nonce, digest)], digest, None)
                .await?;
            // Hybrid: the ML-DSA-65 partner signs the same digest, recording the nonce for itself.
            let mut pq = None;
            if self.config().kms.hanzo.poai_signing.hybrid && made.algorithm == Algorithm::Secp256k1
            {
                let partner = pq_partner(key)?;
                if self.visible_key(ctx, &partner).await?.is_some() {
                    let mut pq_op = self.op(ctx, "poai.sign", Some(&partner));
                    let m = self
                        .sign_digest(ctx, &mut pq_op, &partner, &[(nonce, digest)], digest, None)
                        .await;
                    let m = self.close_op(&pq_op, m).await?;
                    pq = Some(PqSignature {
                        key: partner.to_string(),
                        version: m.version,
                        algorithm: m.algorithm.to_string(),
                        signature: HexBytes(m.signature),
                        signer: m.signer,
                    });
                }
            }
            Ok(SignedAttestation {
                attestation: att,
                digest: B32(digest),
                signature: HexBytes(made.signature),
                signer: made.signer,
                algorithm: made.algorithm.to_string(),
                key: key.to_string(),
                version: made.version,
                pq,
            })
        }
        .await;
        self.close_op(&op, r).await
    }

    /// SignHMMSettlement. With `attestation`, it must verify and its digest must be the
    /// settlement's `attestation_digest`. Either way the attestation digest is consumed: a second
    /// settlement for the same attestation is refused as replayed.
    pub async fn sign_hmm(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        mut s: HMMSettlement,
        attestation: Option<&SignedAttestation>,
        now: u64,
    ) -> Result<SignedSettlement> {
        if let Some(a) = attestation {
            let v = self.verify_poai(ctx, a, now).await?;
            if !v.valid {
                return Err(Error::invalid(format!(
                    "attestation: not valid ({})",
                    v.reason.unwrap_or("invalid")
                )));
            }
            if a.digest != s.attestation_digest {
                return Err(Error::invalid(
                    "attestation_digest: does not match the attestation's digest",
                ));
            }
        }
        let mut op = self.op(ctx, "hmm.sign", Some(key));
        let r = async {
            require(key, Purpose::Hmm)?;
            hanzo_kms_core::eip712::check_text("job_id", &s.job_id)?;
            if s.expiry == 0 {
                s.expiry = s
                    .timestamp
                    .saturating_add(self.config().kms.hanzo.hmm_settlement.settlement_expiry);
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
            let digest = self.domain()?.digest(&s.struct_hash()?);
            let made = self
                .sign_digest(
                    ctx,
                    &mut op,
                    key,
                    &[(nonce, digest)],
                    digest,
                    Some(s.attestation_digest.0),
                )
                .await?;
            Ok(SignedSettlement {
                settlement: s,
                digest: B32(digest),
                signature: HexBytes(made.signature),
                signer: made.signer,
                algorithm: made.algorithm.to_string(),
                key: key.to_string(),
                version: made.version,
            })
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Sign many attestations with one signature over the Merkle root of their digests. Every
    /// item's nonce is recorded for the key, as if signed alone.
    pub async fn sign_poai_batch(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        atts: Vec<PoAIAttestation>,
        now: u64,
    ) -> Result<Vec<BatchItem>> {
        let mut op = self.op(ctx, "poai.sign_batch", Some(key));
        let r = async {
            require(key, Purpose::Poai)?;
            if atts.is_empty() {
                return Err(Error::invalid("a batch needs at least one attestation"));
            }
            let domain = self.domain()?;
            let mut items = Vec::with_capacity(atts.len());
            let mut nonces = Vec::with_capacity(atts.len());
            for (i, mut a) in atts.into_iter().enumerate() {
                let ctxt = |e: Error| e.context(format!("item {i}"));
                hanzo_kms_core::eip712::check_text("model_id", &a.model_id).map_err(ctxt)?;
                hanzo_kms_core::eip712::check_text("node_id", &a.node_id).map_err(ctxt)?;
                self.check_window("timestamp", a.timestamp, now)
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
            let made = self
                .sign_digest(ctx, &mut op, key, &nonces, batch_digest, None)
                .await?;
            Ok(items
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
                })
                .collect())
        }
        .await;
        self.close_op(&op, r).await
    }

    /// VerifyPoAI.
    pub async fn verify_poai(
        &self,
        ctx: &RequestCtx,
        s: &SignedAttestation,
        now: u64,
    ) -> Result<Verdict> {
        let key = self.parse_name(&s.key).ok();
        let op = Op {
            ctx,
            operation: "poai.verify",
            key: Some(s.key.clone()),
            version: Some(s.version),
        };
        let r = async {
            let Some((key, stored)) = self.verifier_key(ctx, &op, key, Purpose::Poai).await? else {
                return Ok(Verdict::no("unknown_key"));
            };
            let digest = self.domain()?.digest(&s.attestation.struct_hash()?);
            if digest != s.digest.0 {
                return Ok(Verdict::no("digest_mismatch"));
            }
            if !signature_matches(
                &stored,
                &digest,
                Claimed {
                    signature: &s.signature.0,
                    signer: &s.signer,
                    algorithm: &s.algorithm,
                    version: s.version,
                },
            ) {
                return Ok(Verdict::no("bad_signature"));
            }
            if let Some(pq) = &s.pq {
                // Both halves of a hybrid signature must hold, and the partner must be this
                // key's partner.
                let partner = self
                    .parse_name(&pq.key)
                    .ok()
                    .filter(|p| pq_partner(&key).is_ok_and(|q| &q == p));
                let Some(partner) = partner else {
                    return Ok(Verdict::no("unknown_key"));
                };
                let Some(pq_key) = self.visible_key(ctx, &partner).await? else {
                    return Ok(Verdict::no("unknown_key"));
                };
                if !signature_matches(
                    &pq_key,
                    &digest,
                    Claimed {
                        signature: &pq.signature.0,
                        signer: &pq.signer,
                        algorithm: &pq.algorithm,
                        version: pq.version,
                    },
                ) {
                    return Ok(Verdict::no("bad_signature"));
                }
            }
            Ok(self.window_verdict(s.attestation.timestamp, now))
        }
        .await;
        self.close_verdict(&op, r).await
    }

    /// Verify a settlement: signature, expiry, and with `attestation`, that attestation's
    /// validity and digest.
    pub async fn verify_hmm(
        &self,
        ctx: &RequestCtx,
        s: &SignedSettlement,
        attestation: Option<&SignedAttestation>,
        now: u64,
    ) -> Result<Verdict> {
        let key = self.parse_name(&s.key).ok();
        let op = Op {
            ctx,
            operation: "hmm.verify",
            key: Some(s.key.clone()),
            version: Some(s.version),
        };
        let r = async {
            let Some((_, stored)) = self.verifier_key(ctx, &op, key, Purpose::Hmm).await? else {
                return Ok(Verdict::no("unknown_key"));
            };
            let digest = self.domain()?.digest(&s.settlement.struct_hash()?);
            if digest != s.digest.0 {
                return Ok(Verdict::no("digest_mismatch"));
            }
            if !signature_matches(
                &stored,
                &digest,
                Claimed {
                    signature: &s.signature.0,
                    signer: &s.signer,
                    algorithm: &s.algorithm,
                    version: s.version,
                },
            ) {
                return Ok(Verdict::no("bad_signature"));
            }
            if s.settlement.expiry < now {
                return Ok(Verdict::no("expired"));
            }
            if s.settlement.timestamp > now.saturating_add(MAX_FUTURE_SECS) {
                return Ok(Verdict::no("not_yet_valid"));
            }
            Ok(Verdict::ok())
        }
        .await;
        let v = self.close_verdict(&op, r).await?;
        match attestation {
            Some(a) if v.valid => {
                if a.digest != s.settlement.attestation_digest {
                    return Ok(Verdict::no("digest_mismatch"));
                }
                self.verify_poai(ctx, a, now).await
            }
            _ => Ok(v),
        }
    }

    /// Verify one batch item with only itself: its proof up to the signed root, and the
    /// batch signature.
    pub async fn verify_batch_item(
        &self,
        ctx: &RequestCtx,
        item: &BatchItem,
        now: u64,
    ) -> Result<Verdict> {
        let key = self.parse_name(&item.key).ok();
        let op = Op {
            ctx,
            operation: "poai.verify_item",
            key: Some(item.key.clone()),
            version: Some(item.version),
        };
        let r = async {
            let Some((_, stored)) = self.verifier_key(ctx, &op, key, Purpose::Poai).await? else {
                return Ok(Verdict::no("unknown_key"));
            };
            let domain = self.domain()?;
            let digest = domain.digest(&item.attestation.struct_hash()?);
            if digest != item.digest.0 {
                return Ok(Verdict::no("digest_mismatch"));
            }
            let steps: Vec<merkle::Step> = item
                .proof
                .iter()
                .map(|p| merkle::Step {
                    sibling: p.hash.0,
                    sibling_is_left: p.left,
                })
                .collect();
            if item.index >= item.batch.count
                || merkle::root_from_proof(&digest, &steps) != item.batch.root.0
            {
                return Ok(Verdict::no("bad_proof"));
            }
            let batch_digest = domain.digest(&item.batch.struct_hash());
            if batch_digest != item.batch_digest.0 {
                return Ok(Verdict::no("digest_mismatch"));
            }
            if !signature_matches(
                &stored,
                &batch_digest,
                Claimed {
                    signature: &item.signature.0,
                    signer: &item.signer,
                    algorithm: &item.algorithm,
                    version: item.version,
                },
            ) {
                return Ok(Verdict::no("bad_signature"));
            }
            Ok(self.window_verdict(item.attestation.timestamp, now))
        }
        .await;
        self.close_verdict(&op, r).await
    }

    /// The key a verification names, if it exists, has `purpose` and the caller may see it
    /// (missing, foreign and wrong-purpose keys are all `unknown_key`). A caller without the
    /// verify role is refused.
    async fn verifier_key(
        &self,
        ctx: &RequestCtx,
        op: &Op<'_>,
        key: Option<KeyName>,
        purpose: Purpose,
    ) -> Result<Option<(KeyName, StoredKey)>> {
        // Step 4: every verification counts against the caller's limits, whatever key it
        // names (an unknown key's "unknown_key" verdict costs the server as much as any).
        self.limiter.check(ctx, op.operation, key.as_ref())?;
        let Some(key) = key.filter(|k| k.purpose() == purpose) else {
            return Ok(None);
        };
        match ctx.principal.authorize(Role::Verify, Some(&key)) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(self
            .visible_key(ctx, &key)
            .await?
            .map(|stored| (key, stored)))
    }

    fn window_verdict(&self, ts: u64, now: u64) -> Verdict {
        let ttl = self.config().kms.hanzo.poai_signing.attestation_ttl;
        if ts.saturating_add(ttl) < now {
            Verdict::no("expired")
        } else if ts > now.saturating_add(MAX_FUTURE_SECS) {
            Verdict::no("not_yet_valid")
        } else {
            Verdict::ok()
        }
    }

    /// A key the caller may see, or `None` (missing and foreign look the same).
    async fn visible_key(&self, ctx: &RequestCtx, key: &KeyName) -> Result<Option<StoredKey>> {
        Ok(self
            .store()
            .load_key(key)
            .await?
            .filter(|_| ctx.principal.owns(key)))
    }

    /// Audit a verification with its verdict (the verdict is the reason of an invalid answer).
    async fn close_verdict(&self, op: &Op<'_>, r: Result<Verdict>) -> Result<Verdict> {
        match r {
            Ok(v) => {
                let tx = self
                    .store()
                    .begin_write()
                    .await
                    .map_err(crate::audit_failure)?;
                tx.commit(&[op.event(if v.valid { "ok" } else { "invalid" }, v.reason)])
                    .await
                    .map_err(crate::audit_failure)?;
                Ok(v)
            }
            Err(e) => self.close_op(op, Err(e)).await,
        }
    }

    /// Steps 2–7 for a signature over `digest`, recording `nonces` (each `(nonce, message
    /// digest)`) and, for a settlement, consuming `consume`, through the group committer.
    async fn sign_digest(
        &self,
        ctx: &RequestCtx,
        op: &mut Op<'_>,
        key: &KeyName,
        nonces: &[(B32, [u8; 32])],
        digest: [u8; 32],
        consume: Option<[u8; 32]>,
    ) -> Result<Made> {
        self.admit(ctx, op, Role::Sign, Some(key))?;
        let stored = self.load(ctx, key).await?;
        let (version, handle) = Self::usable_version(&stored, None)?;
        op.version = Some(version);
        let algorithm = stored.meta.algorithm;
        if !matches!(algorithm, Algorithm::Secp256k1 | Algorithm::MlDsa65) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{key} is {algorithm}; signed objects use secp256k1 or ml-dsa-65"),
            ));
        }
        // Step 6 runs before the records are written, but nothing leaves this function until
        // the group commit of its nonce and audit records is durable.
        let kref = KeyRef {
            name: key,
            version,
            algorithm,
            handle,
        };
        let signature = self.device(|p| p.sign(&kref, &digest))?.0;
        let mut record = version.to_be_bytes().to_vec();
        record.extend_from_slice(&signature);
        let records = crate::commit::Records {
            key: key.to_string(),
            nonces: nonces.to_vec(),
            record,
            consume: consume.map(|a| (a, digest)),
            event: op.event("ok", None),
        };
        let signer = |v: u32| {
            let pk = stored
                .version(v)
                .and_then(|x| x.info.public_key.as_deref())
                .unwrap_or_default();
            self.signers.label(algorithm, pk)
        };
        match self.committer().submit(records).await? {
            crate::commit::Outcome::Recorded => Ok(Made {
                version,
                algorithm,
                signature,
                signer: signer(version),
            }),
            crate::commit::Outcome::Retry(rec) => {
                let v = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
                Ok(Made {
                    version: v,
                    algorithm,
                    signature: rec[4..].to_vec(),
                    signer: signer(v),
                })
            }
        }
    }
}

/// What a signed object says signed it: the fields beside the signature.
struct Claimed<'a> {
    signature: &'a [u8],
    signer: &'a str,
    algorithm: &'a str,
    version: u32,
}

/// Whether `claimed.signature` over `digest` verifies under the version of the key the object
/// names, with the key's algorithm, and `signer` names that version. A signature relabelled
/// with another version or algorithm does not verify: those labels are what a reader of the
/// object (and its audit record) takes them for.
fn signature_matches(key: &StoredKey, digest: &[u8; 32], claimed: Claimed<'_>) -> bool {
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
