//! Replay records that expire (docs/signing.md, "Replay records expire").
//!
//! A nonce record, or a consumed attestation, guards a message only while that message can be
//! accepted: an attestation until `timestamp + attestation_ttl`, a settlement until its `expiry`.
//! Each record is written with that moment (`expires_at`), and the scheduler deletes records
//! `storage.replay_grace_secs` past it ([`Kms::prune_replay`]), a bounded batch per transaction.
//!
//! One change could make a pruned attestation acceptable again: a larger `attestation_ttl`
//! stretches the window of attestations already signed, including ones whose records are gone.
//! So the store keeps the ttl it last ran with (`replay.attestation_ttl`); a node that opens it
//! with a larger one sets a **floor** (`replay.floor`): an attestation older than `now − the old
//! ttl` at that moment is refused as expired, whatever the new ttl says ([`Kms::prepare_replay`]).
//! Nothing the old setting had already expired becomes valid again, and newer attestations get
//! the longer window.

use std::sync::atomic::Ordering;

use hanzo_kms_core::Result;
use hanzo_kms_store::Pruned;

use crate::{Kms, RequestCtx, audit_event};

/// The store's `meta` key for the attestation ttl its records were last written under.
pub(crate) const TTL_META: &str = "replay.attestation_ttl";
/// The store's `meta` key for the oldest attestation timestamp still accepted.
const FLOOR_META: &str = "replay.floor";
/// Rows of each kind one pruning transaction deletes at most: small enough that the group
/// committer, which waits for the write lock meanwhile, is held up for milliseconds.
pub const PRUNE_BATCH: i64 = 2_000;
/// Pruning transactions one pass runs at most (the next scheduler tick goes on).
const PRUNE_PASSES: usize = 500;

impl Kms {
    /// When a record guarding an attestation with this timestamp may go: when the attestation
    /// stops verifying.
    pub(crate) fn attestation_expiry(&self, timestamp: u64) -> i64 {
        let ttl = self.config().kms.hanzo.poai_signing.attestation_ttl;
        clamp(timestamp.saturating_add(ttl))
    }

    /// Whether an attestation with this timestamp is too old to accept at `now`: past its
    /// ttl, or older than the floor (see the module docs).
    pub(crate) fn attestation_too_old(&self, timestamp: u64, now: u64) -> bool {
        let ttl = self.config().kms.hanzo.poai_signing.attestation_ttl;
        timestamp.saturating_add(ttl) < now || timestamp < self.replay_floor()
    }

    /// The oldest attestation timestamp accepted whatever the ttl (0: none).
    pub fn replay_floor(&self) -> u64 {
        self.replay_floor.load(Ordering::Relaxed)
    }

    /// Read the floor, and when this node's `attestation_ttl` is larger than the one the
    /// store's records were last written under, raise the floor to `now − that ttl` and record
    /// the new ttl (one audited transaction). Called when the service opens a store, and by
    /// every pruning pass (so a node learns a floor another node set).
    pub async fn prepare_replay(&self, now: u64) -> Result<()> {
        let ttl = self.config().kms.hanzo.poai_signing.attestation_ttl;
        let stored_ttl = parse(self.store().meta(TTL_META).await?);
        let floor = parse(self.store().meta(FLOOR_META).await?).unwrap_or(0);
        if stored_ttl == Some(ttl) {
            self.replay_floor.fetch_max(floor, Ordering::Relaxed);
            return Ok(());
        }
        let mut tx = self.store().begin_write().await?;
        // Read again under the write lock: another node may have changed both meanwhile.
        let stored_ttl = parse(tx.meta(TTL_META).await?);
        let old_floor = parse(tx.meta(FLOOR_META).await?);
        let mut floor = old_floor.unwrap_or(0);
        let reason = match stored_ttl {
            Some(old) if old == ttl => None,
            Some(old) if old < ttl => {
                floor = floor.max(now.saturating_sub(old));
                Some(format!(
                    "attestation_ttl {old} -> {ttl} s: attestations before {floor} stay expired"
                ))
            }
            Some(old) => Some(format!("attestation_ttl {old} -> {ttl} s")),
            None => Some(format!("attestation_ttl {ttl} s")),
        };
        let Some(reason) = reason else {
            self.replay_floor.fetch_max(floor, Ordering::Relaxed);
            return Ok(());
        };
        tx.put_meta(TTL_META, &ttl.to_string()).await?;
        if old_floor != Some(floor) {
            tx.put_meta(FLOOR_META, &floor.to_string()).await?;
        }
        let event = audit_event(
            &system_ctx("system:replay"),
            "store.replay_window",
            None,
            None,
            "ok",
            Some(&reason),
        );
        tx.commit(&[event]).await?;
        self.replay_floor.fetch_max(floor, Ordering::Relaxed);
        Ok(())
    }

    /// How many nonce records and consumed attestations the store holds (counts every row).
    pub async fn replay_record_counts(&self) -> Result<(u64, u64)> {
        self.store().replay_record_counts().await
    }

    /// Delete the replay records whose messages expired more than `storage.replay_grace_secs`
    /// before `now`, [`PRUNE_BATCH`] rows of each kind per transaction, each with an audit
    /// record (`store.prune`) that counts them. Returns what was deleted. Does nothing when
    /// `storage.prune_replay_records` is off.
    pub async fn prune_replay(&self, now: u64) -> Result<Pruned> {
        self.prepare_replay(now).await?;
        let storage = &self.config().storage;
        let mut total = Pruned::default();
        if !storage.prune_replay_records {
            return Ok(total);
        }
        let before = clamp(now.saturating_sub(storage.replay_grace_secs));
        let ctx = system_ctx("system:scheduler");
        for _ in 0..PRUNE_PASSES {
            let mut tx = self.store().begin_write().await?;
            let p = tx.prune_replay(before, PRUNE_BATCH).await?;
            if p.is_empty() {
                // Nothing deleted: the transaction ends without a commit (or a record).
                break;
            }
            let reason = format!(
                "{} nonce records and {} consumed attestations that expired before {before}",
                p.nonces, p.consumed
            );
            tx.commit(&[audit_event(
                &ctx,
                "store.prune",
                None,
                None,
                "ok",
                Some(&reason),
            )])
            .await?;
            total.nonces += p.nonces;
            total.consumed += p.consumed;
            if p.nonces < PRUNE_BATCH as u64 && p.consumed < PRUNE_BATCH as u64 {
                break;
            }
            // Let waiting requests in between two batches.
            tokio::task::yield_now().await;
        }
        Ok(total)
    }
}

fn parse(v: Option<String>) -> Option<u64> {
    v.and_then(|s| s.parse().ok())
}

/// Seconds as the store's BIGINT (a timestamp past 2^63 is "never").
fn clamp(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn system_ctx(principal: &str) -> RequestCtx {
    RequestCtx {
        principal: crate::Principal {
            id: principal.into(),
            tenant: None,
            roles: Vec::new(),
            patterns: Vec::new(),
        },
        ..RequestCtx::local()
    }
}
