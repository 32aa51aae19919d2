//! Verification of signed attestations, batch items and settlements (docs/signing.md).
//!
//! A signed object names the key it claims. That key is found as the pipeline finds any claimed
//! key: a missing, foreign or wrong-purpose key is the verdict `unknown_key`, never an error, so
//! a verifier learns nothing about other tenants' keys; a disabled key (or version) is refused
//! with the key-state error (KeyPolicy::Verify). A PoAI key with an ML-DSA-65 partner needs both
//! halves of the hybrid signature: the secp256k1 half alone is `pq_missing`.
//!
//! An attestation or item checked as part of a settlement (hmm.sign, hmm.verify) is verified
//! inside that request: its verdict is part of the settlement's answer and record.

use hanzo_kms_core::merkle;
use hanzo_kms_core::{KeyName, Purpose, Result};
use hanzo_kms_store::StoredKey;

use crate::operation as op;
use crate::pipeline::{Target, check_verifiable, check_verifying_version};
use crate::sign::{
    BatchItem, Claimed, MAX_FUTURE_SECS, PqSignature, SignedAttestation, SignedSettlement, Verdict,
    pq_partner, signature_matches,
};
use crate::{Kms, RequestCtx};

impl Kms {
    /// VerifyPoAI.
    pub async fn verify_poai(
        &self,
        ctx: &RequestCtx,
        s: &SignedAttestation,
        now: u64,
    ) -> Result<Verdict> {
        self.run(ctx, &op::POAI_VERIFY, Target::Claimed(&s.key), |call| {
            Box::pin(async move {
                let key = call.key.as_ref();
                let v = call.kms.attestation_verdict_with(ctx, key, s, now).await?;
                Ok(v.done())
            })
        })
        .await
    }

    /// Verify a settlement: signature, expiry, and with `attestation`, that the attestation is
    /// the one its digest names and is valid itself.
    pub async fn verify_hmm(
        &self,
        ctx: &RequestCtx,
        s: &SignedSettlement,
        attestation: Option<&SignedAttestation>,
        now: u64,
    ) -> Result<Verdict> {
        self.run(ctx, &op::HMM_VERIFY, Target::Claimed(&s.key), |call| {
            Box::pin(async move {
                let Some(stored) = call.key.as_ref() else {
                    return Ok(Verdict::no("unknown_key").done());
                };
                let kms = call.kms;
                let digest = kms.domain()?.digest(&s.settlement.struct_hash()?);
                if digest != s.digest.0 {
                    return Ok(Verdict::no("digest_mismatch").done());
                }
                if !kms.verifies(
                    stored,
                    &digest,
                    Claimed {
                        signature: &s.signature.0,
                        signer: &s.signer,
                        algorithm: &s.algorithm,
                        version: s.version,
                    },
                )? {
                    return Ok(Verdict::no("bad_signature").done());
                }
                if s.settlement.expiry < now {
                    return Ok(Verdict::no("expired").done());
                }
                if s.settlement.timestamp > now.saturating_add(MAX_FUTURE_SECS) {
                    return Ok(Verdict::no("not_yet_valid").done());
                }
                let Some(a) = attestation else {
                    return Ok(Verdict::ok().done());
                };
                if a.digest != s.settlement.attestation_digest {
                    return Ok(Verdict::no("digest_mismatch").done());
                }
                Ok(kms.attestation_verdict(ctx, a, now).await?.done())
            })
        })
        .await
    }

    /// Verify one batch item with only itself: its proof up to the signed root, and the
    /// batch signature (both halves for a hybrid key).
    pub async fn verify_batch_item(
        &self,
        ctx: &RequestCtx,
        item: &BatchItem,
        now: u64,
    ) -> Result<Verdict> {
        self.run(
            ctx,
            &op::POAI_VERIFY_ITEM,
            Target::Claimed(&item.key),
            |call| {
                Box::pin(async move {
                    let key = call.key.as_ref();
                    let v = call.kms.item_verdict_with(ctx, key, item, now).await?;
                    Ok(v.done())
                })
            },
        )
        .await
    }

    /// The verdict on an attestation checked inside another request (a settlement): its key is
    /// found as a claimed key is, for the caller.
    pub(crate) async fn attestation_verdict(
        &self,
        ctx: &RequestCtx,
        s: &SignedAttestation,
        now: u64,
    ) -> Result<Verdict> {
        let key = self.claimed_key(ctx, &s.key, Purpose::Poai).await?;
        self.attestation_verdict_with(ctx, key.as_ref(), s, now)
            .await
    }

    /// The verdict on a batch item checked inside another request (a settlement).
    pub(crate) async fn item_verdict(
        &self,
        ctx: &RequestCtx,
        item: &BatchItem,
        now: u64,
    ) -> Result<Verdict> {
        let key = self.claimed_key(ctx, &item.key, Purpose::Poai).await?;
        self.item_verdict_with(ctx, key.as_ref(), item, now).await
    }

    async fn attestation_verdict_with(
        &self,
        ctx: &RequestCtx,
        key: Option<&StoredKey>,
        s: &SignedAttestation,
        now: u64,
    ) -> Result<Verdict> {
        let Some(stored) = key else {
            return Ok(Verdict::no("unknown_key"));
        };
        let digest = self.domain()?.digest(&s.attestation.struct_hash()?);
        if digest != s.digest.0 {
            return Ok(Verdict::no("digest_mismatch"));
        }
        let claimed = Claimed {
            signature: &s.signature.0,
            signer: &s.signer,
            algorithm: &s.algorithm,
            version: s.version,
        };
        if !self.verifies(stored, &digest, claimed)? {
            return Ok(Verdict::no("bad_signature"));
        }
        if let Some(v) = self
            .partner_verdict(ctx, &stored.meta.name, s.pq.as_ref(), &digest)
            .await?
        {
            return Ok(v);
        }
        Ok(self.window_verdict(s.attestation.timestamp, now))
    }

    async fn item_verdict_with(
        &self,
        ctx: &RequestCtx,
        key: Option<&StoredKey>,
        item: &BatchItem,
        now: u64,
    ) -> Result<Verdict> {
        let Some(stored) = key else {
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
        let claimed = Claimed {
            signature: &item.signature.0,
            signer: &item.signer,
            algorithm: &item.algorithm,
            version: item.version,
        };
        if !self.verifies(stored, &batch_digest, claimed)? {
            return Ok(Verdict::no("bad_signature"));
        }
        if let Some(v) = self
            .partner_verdict(ctx, &stored.meta.name, item.pq.as_ref(), &batch_digest)
            .await?
        {
            return Ok(v);
        }
        Ok(self.window_verdict(item.attestation.timestamp, now))
    }

    /// The post-quantum half of a hybrid signature over `digest`: required when the key has a
    /// partner the caller can see, and then it must be that partner's valid signature. `None`
    /// when that half is in order (or not needed).
    async fn partner_verdict(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        pq: Option<&PqSignature>,
        digest: &[u8; 32],
    ) -> Result<Option<Verdict>> {
        let partner = pq_partner(key)?;
        // Most keys have no partner: that answer is cached (`visible_partner`). A partner that
        // exists must be one that may verify now, as any claimed key.
        let partner_key = match self.visible_partner(ctx, &partner).await? {
            Some(k) if partner.purpose() == Purpose::Poai => {
                check_verifiable(&k)?;
                Some(k)
            }
            _ => None,
        };
        match (pq, partner_key) {
            (None, None) => Ok(None),
            // The key has a partner, and the object carries only the classical half: a
            // downgraded signature.
            (None, Some(_)) => Ok(Some(Verdict::no("pq_missing"))),
            (Some(pq), partner_key) => {
                let named = self.parse_name(&pq.key).ok();
                let Some(partner_key) = partner_key.filter(|_| named.as_ref() == Some(&partner))
                else {
                    return Ok(Some(Verdict::no("unknown_key")));
                };
                let claimed = Claimed {
                    signature: &pq.signature.0,
                    signer: &pq.signer,
                    algorithm: &pq.algorithm,
                    version: pq.version,
                };
                if self.verifies(&partner_key, digest, claimed)? {
                    Ok(None)
                } else {
                    Ok(Some(Verdict::no("bad_signature")))
                }
            }
        }
    }

    /// Whether the claimed signature verifies under the key ([`signature_matches`]); a
    /// signature that verifies under a disabled version is refused (KeyPolicy::Verify).
    fn verifies(&self, key: &StoredKey, digest: &[u8; 32], claimed: Claimed<'_>) -> Result<bool> {
        let version = claimed.version;
        let ok = signature_matches(key, digest, claimed);
        if ok {
            check_verifying_version(key, version)?;
        }
        Ok(ok)
    }

    fn window_verdict(&self, ts: u64, now: u64) -> Verdict {
        if self.attestation_too_old(ts, now) {
            Verdict::no("expired")
        } else if ts > now.saturating_add(MAX_FUTURE_SECS) {
            Verdict::no("not_yet_valid")
        } else {
            Verdict::ok()
        }
    }

    /// A key the caller may see, or `None` (missing and foreign look the same).
    pub(crate) async fn visible_key(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
    ) -> Result<Option<StoredKey>> {
        self.visible_key_cached(ctx, key, false).await
    }

    /// A signing key's post-quantum partner, if the caller may see it and it exists. Most keys
    /// have none, so its absence is cached for up to a second (`load_key_or_known_absent`); a
    /// partner made on this node is seen at once, on another node within that second.
    pub(crate) async fn visible_partner(
        &self,
        ctx: &RequestCtx,
        partner: &KeyName,
    ) -> Result<Option<StoredKey>> {
        self.visible_key_cached(ctx, partner, true).await
    }

    async fn visible_key_cached(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        remember_absent: bool,
    ) -> Result<Option<StoredKey>> {
        if !ctx.principal.owns(key) || !ctx.principal.may_see(key) {
            return Ok(None);
        }
        if remember_absent {
            self.store().load_key_or_known_absent(key).await
        } else {
            self.store().load_key(key).await
        }
    }
}
