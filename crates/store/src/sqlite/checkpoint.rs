//! The checkpoint protocol, whole: the background PASSIVE pass, the committer's pass that
//! finishes it, the committer's whole-WAL checkpoint past the WAL's limit, and the whole-WAL
//! checkpoint that erases deleted key material (see the [module docs](super)).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_core::{Error, ErrorKind, Result};

use super::wal::{WalSync, sync_file};
use super::{BatchWriter, open};
use crate::error::sqlite_error;

/// The WAL size past which a background checkpoint starts (see also [`CHECKPOINT_INTERVAL`]).
/// This is the WAL *file's* size, and SQLite keeps that size when it restarts the WAL from its
/// beginning (up to `journal_size_limit`): once the file has grown past this, every sync may
/// start a pass, and [`CHECKPOINT_INTERVAL`] alone spaces them. Larger thresholds made the p99
/// of signing worse: a large pass ends in an fsync of many scattered pages that the WAL syncs
/// queue behind (docs/benchmarks.md, "The store's history").
pub(crate) const CHECKPOINT_BYTES: u64 = 1 << 20;

/// The shortest time between the starts of two background checkpoint passes.
///
/// Passes run back to back would each copy a batch or two, with fsyncs of their own and a sort
/// of the whole WAL's frame index each time. Spaced passes, each finished by the committer
/// ([`BatchWriter::catch_up`]), copy a page once per pass instead of once per batch, and keep
/// the WAL at a few MiB. Longer intervals signed faster, but from 60 ms on their larger passes
/// pushed the open-loop p99 of signing at 5,000/s past 5 ms; 30 ms is the longest that kept it
/// under (docs/benchmarks.md, "The store's history").
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(30);

/// The WAL size past which the group committer stops and checkpoints the whole WAL itself
/// (`TRUNCATE`) before its next batch ([`BatchWriter::bound_wal`]). The background checkpoint
/// copies scattered pages more slowly than sustained batch signing with random nonces writes
/// them (`hanzo-kms-bench server --prefill` with batches of 1,024 grew the WAL to several GB in a
/// minute), and the WAL can only start again from its beginning once a checkpoint has caught up
/// with it.
/// Past this size, writes wait for the disk instead of filling it.
pub(crate) const WAL_LIMIT_BYTES: u64 = 512 << 20;

/// How long an erasing checkpoint ([`WalSync::scrub`]) keeps trying while other checkpoints or
/// readers hold it up.
const SCRUB_PATIENCE: Duration = Duration::from_secs(30);

/// The background checkpointer's state.
#[derive(Debug, Default)]
pub(super) struct Checkpointer {
    running: AtomicBool,
    /// When the last background pass started.
    last_start: std::sync::Mutex<Option<Instant>>,
    /// A background pass copied frames since the writer last finished one.
    catch_up: AtomicBool,
    /// The background pass could not sync the database file (see the module docs).
    pub(super) failed: AtomicBool,
    /// Checkpoint passes that copied frames ([`PassResult::copied_since`]).
    pub(super) passes: AtomicU64,
    /// What the last pass, background or the writer's, reported.
    last: std::sync::Mutex<PassResult>,
    /// The checkpointer's connection, opened on first use (see the [module docs](super)).
    conn: std::sync::Mutex<Option<rusqlite::Connection>>,
}

impl Checkpointer {
    /// Take the next background pass if none runs and the last one started long enough ago.
    fn take_turn(&self) -> bool {
        if self.running.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut last) = self.last_start.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < CHECKPOINT_INTERVAL)
            || self.running.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Count a pass that reported `now`; returns whether it copied frames.
    fn record(&self, now: PassResult) -> bool {
        let copied = match self.last.lock() {
            Ok(mut last) => {
                let copied = now.copied_since(*last);
                *last = now;
                copied
            }
            Err(_) => false,
        };
        if copied {
            self.passes.fetch_add(1, Ordering::Relaxed);
        }
        copied
    }
}

/// What `PRAGMA wal_checkpoint` reported: frames in the WAL, and frames copied into the
/// database so far (SQLite's `nBackfill`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PassResult {
    pub log: i64,
    pub done: i64,
}

impl PassResult {
    /// Whether a pass that reported `self` copied frames, when the pass before it reported
    /// `prev`. Such a pass syncs the WAL before it copies; it also syncs the database if it finds
    /// it has copied the whole WAL (no commit came in meanwhile), and the next commit then starts
    /// the WAL over and syncs its new header (`walCheckpoint` and `sqlite3WalFrames` in SQLite).
    /// A pass with nothing new to copy syncs nothing. SQLite reports no restart count, so a
    /// restart is seen only as a shorter log: a pass after the WAL started over and grew past the
    /// previous pass's log counts only if it copied more than that pass had (checked against
    /// the kernel's syscall counts: within 5 %).
    pub fn copied_since(self, prev: PassResult) -> bool {
        if self.log < prev.log {
            // The log shrank: it started over since, and everything in it is new.
            self.done > 0
        } else {
            self.done > prev.done
        }
    }
}

impl WalSync {
    /// Count a whole-WAL checkpoint that completed, and remember that the WAL is empty.
    fn full_checkpoint_done(&self) {
        self.checkpointer.passes.fetch_add(1, Ordering::Relaxed);
        self.wal_cut();
    }

    /// Whether a background pass copied frames since the writer last finished one; clears it.
    fn take_catch_up(&self) -> bool {
        self.checkpointer.catch_up.swap(false, Ordering::AcqRel)
    }

    /// Hand over to the writer as a background pass does (tests only).
    #[cfg(test)]
    pub(crate) fn checkpointer_hand_over(&self) {
        self.checkpointer.catch_up.store(true, Ordering::Release);
    }

    /// Start a background checkpoint if the WAL (`len` bytes as the sync found it) is large,
    /// none is running and the last one started at least [`CHECKPOINT_INTERVAL`] ago.
    pub(super) fn maybe_checkpoint(&self, len: u64) {
        self.set_wal_len(len);
        if len <= CHECKPOINT_BYTES || !self.checkpointer.take_turn() {
            return;
        }
        let (db, cp) = (self.db.clone(), self.checkpointer.clone());
        tokio::task::spawn_blocking(move || {
            match background_pass(&db, &cp) {
                Ok(false) => {}
                // The pages it copied go to disk now, off the request path, so the writer's
                // pass that finishes this one (and syncs the database) waits only for its own.
                Ok(true) => match sync_file(&db) {
                    Ok(_) => cp.catch_up.store(true, Ordering::Release),
                    Err(e) => {
                        cp.failed.store(true, Ordering::Release);
                        tracing::error!(store = %db.display(), error = %e, "fdatasync of the store's database file after a checkpoint failed; every later write is refused until restart");
                    }
                },
                Err(e) => {
                    // Harmless for now: the WAL grows until a later checkpoint succeeds.
                    tracing::warn!(store = %db.display(), error = %e, "background checkpoint failed");
                    if let Ok(mut c) = cp.conn.lock() {
                        *c = None;
                    }
                }
            }
            cp.running.store(false, Ordering::Release);
        });
    }

    /// Erase what committed transactions deleted from the WAL: checkpoint all of it into the
    /// database and cut it to nothing (`PRAGMA wal_checkpoint(TRUNCATE)`, which syncs the
    /// database first), on the checkpointer's connection. Blocks; waits for a background pass
    /// that is running, and tries again while the committer's own checkpoint or a reader holds
    /// the WAL, for up to [`SCRUB_PATIENCE`].
    ///
    /// A deleted row's page was overwritten with zeros in the deleting transaction
    /// (`secure_delete`); before this, the WAL still holds the page as it was before, and past
    /// its end, after SQLite started it over, older frames too.
    pub(crate) fn scrub(&self) -> Result<()> {
        let doing = || {
            format!(
                "erasing deleted key material from {}-wal",
                self.db.display()
            )
        };
        let deadline = Instant::now() + SCRUB_PATIENCE;
        let mut conn = self
            .checkpointer
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => open(&self.db).map_err(|e| sqlite_error(e, &doing()))?,
            };
            // A connection that failed is dropped here and opened afresh next time.
            let completed = truncate(&c).map_err(|e| sqlite_error(e, &doing()))?;
            *conn = Some(c);
            if completed {
                self.full_checkpoint_done();
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{}: the WAL stayed busy for {} s",
                        doing(),
                        SCRUB_PATIENCE.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl BatchWriter {
    /// Keep the WAL bounded under sustained load: when it has grown past 512 MiB, checkpoint all
    /// of it on this connection and cut the file to nothing. The caller is the only regular
    /// writer, so nothing is appended meanwhile and the checkpoint catches up; the batches
    /// waiting behind it wait for the disk. Returns `None` when the WAL is within its
    /// limit, else whether the checkpoint completed (one blocked by a reader for the whole busy
    /// timeout is tried again after a later batch).
    pub fn bound_wal(&mut self) -> Result<Option<bool>> {
        // As the last sync found it: the committer calls this right after its own sync.
        let len = self.wal.wal_len();
        if len <= self.wal_limit {
            return Ok(None);
        }
        let started = Instant::now();
        let completed = truncate(&self.conn).map_err(|e| {
            sqlite_error(
                e,
                &format!("checkpointing the WAL (store {})", self.location),
            )
        })?;
        tracing::info!(
            store = %self.location,
            wal_bytes = len,
            completed,
            ms = started.elapsed().as_millis() as u64,
            "the WAL outgrew its limit; writes waited for a full checkpoint"
        );
        if completed {
            self.wal.full_checkpoint_done();
        }
        Ok(Some(completed))
    }

    /// Finish the background checkpoint pass that ended since the last call, if one did: a
    /// PASSIVE pass on this connection, between two batches, so nothing is appended meanwhile.
    /// It copies what was committed while the background pass ran (that pass copied the rest
    /// and synced the database), and completes; the next transaction then starts the WAL over
    /// from its beginning. Without it, under load, no pass reaches the WAL's end and the WAL
    /// only grows. Returns whether a pass ran.
    pub fn catch_up(&mut self) -> Result<bool> {
        if !self.wal.take_catch_up() {
            return Ok(false);
        }
        let now = passive_pass(&self.conn).map_err(|e| {
            sqlite_error(
                e,
                &format!("checkpointing the WAL (store {})", self.location),
            )
        })?;
        if let Some(now) = now {
            self.wal.checkpointer.record(now);
        }
        Ok(true)
    }
}

/// One PASSIVE pass on the checkpointer's connection; returns whether it copied frames.
fn background_pass(db: &std::path::Path, cp: &Checkpointer) -> rusqlite::Result<bool> {
    let mut conn = cp.conn.lock().unwrap_or_else(|e| e.into_inner());
    if conn.is_none() {
        *conn = Some(open(db)?);
    }
    let Some(c) = conn.as_ref() else {
        return Ok(false);
    };
    Ok(passive_pass(c)?.is_some_and(|now| cp.record(now)))
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`: what it reported, or `None` when it could not
/// run (another checkpoint held the lock).
pub(crate) fn passive_pass(conn: &rusqlite::Connection) -> rusqlite::Result<Option<PassResult>> {
    let (busy, now): (i64, PassResult) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get(0)?,
                PassResult {
                    log: r.get(1)?,
                    done: r.get(2)?,
                },
            ))
        })?;
    Ok((busy == 0).then_some(now))
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on `conn`: whether it completed. It waits (the busy
/// timeout) for the writer and for readers of older snapshots, but not for another checkpoint
/// in progress; a completed one reports 0 for both of its frame counts.
fn truncate(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint pass counts when SQLite's count of copied frames moved on, or when the WAL
    /// started over since the last pass and this one copied any of the new frames.
    #[test]
    fn a_pass_counts_when_it_copied_frames() {
        let r = |log, done| PassResult { log, done };
        assert!(r(10, 10).copied_since(r(0, 0)));
        assert!(r(25, 20).copied_since(r(10, 10)));
        assert!(!r(25, 20).copied_since(r(25, 20)), "nothing new");
        assert!(
            !r(30, 20).copied_since(r(25, 20)),
            "new frames, none copied"
        );
        assert!(r(8, 8).copied_since(r(40, 40)), "the WAL started over");
        assert!(
            !r(8, 0).copied_since(r(40, 40)),
            "started over, nothing copied"
        );
    }
}
