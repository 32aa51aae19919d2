//! When a SQLite commit is on disk.
//!
//! The store's SQLite connections run `PRAGMA synchronous = NORMAL`: a COMMIT appends its WAL
//! frames (a `pwrite` into the page cache) and returns without waiting for the disk. The
//! commit is then made durable here, by an `fdatasync` of the WAL file, and nobody is told it
//! happened before that. [`crate::WriteTx::commit`] does both, so every caller keeps the
//! guarantee of `synchronous = FULL`. Every waiter shares one sync at a time: one `fdatasync`
//! covers every commit finished before it started, however many there are. The group committer
//! runs the two halves on its own thread ([`Pending::durable_blocking`]): it commits a batch,
//! syncs, answers, and takes what arrived meanwhile as the next batch.
//!
//! Why this is as durable as FULL: in WAL mode every commit of the database goes to the one WAL
//! file, in order. An fdatasync of that file that starts after a COMMIT returned covers that
//! commit's frames, the WAL header and the file's length. SQLite itself syncs the WAL before it
//! checkpoints into the database, syncs the database after a checkpoint, and syncs the WAL
//! header when it starts to reuse the file (all in NORMAL), so a checkpoint never loses what an
//! earlier sync made durable. A crash before the sync loses only commits that were never
//! acknowledged.
//!
//! Checkpoints are taken off the request path too. Every connection runs with
//! `wal_autocheckpoint = 0`: SQLite's automatic checkpoint runs inside the COMMIT of whichever
//! connection crosses 1000 pages, so one batch in every few hundred waited for a copy of the WAL
//! into the database and two fsyncs (measured: p99 of PoAI signing at a fifth of capacity went
//! from 4 ms to 28 ms). Instead, after a sync, when the WAL file is larger than
//! [`CHECKPOINT_BYTES`] and the last pass started at least [`CHECKPOINT_INTERVAL`] ago, a
//! background thread runs a PASSIVE checkpoint on a connection of its own (PASSIVE waits for no
//! reader or writer) and then syncs the database file itself, so that the pages it copied are on
//! disk before anyone waits for them. A connection that closes last still checkpoints and
//! removes the WAL, as before.
//!
//! A PASSIVE pass copies the frames that were in the WAL when it started; the writer goes on
//! appending meanwhile, so under load no background pass ever reaches the WAL's end, and SQLite
//! starts the WAL over from its beginning only when one has. The group committer therefore
//! finishes each background pass on its own connection, between two batches
//! ([`crate::BatchWriter::catch_up`]): nothing is appended during that pass, so it copies the
//! few frames committed since the background pass started and completes, and the committer's
//! next transaction starts the WAL over. The WAL stays at a few MiB, and each pass copies every
//! page once however often the batches rewrote it (the audit table's last leaf, the chain head).
//!
//! A failed fdatasync is not retried: after one, Linux may have dropped the dirty pages, and a
//! later sync can succeed without them. The store then refuses every later commit until the
//! process restarts (and SQLite recovers the WAL from disk). That holds for the background
//! pass's sync of the database file too: SQLite would go on to start the WAL over, trusting
//! pages that may not be on disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hanzo_kms_core::{Error, ErrorKind, Result};

/// The WAL size past which a background checkpoint starts (see also [`CHECKPOINT_INTERVAL`]).
/// This is the WAL *file's* size, and SQLite keeps that size when it restarts the WAL from its
/// beginning (up to `journal_size_limit`): once the file has grown past this, every sync may
/// start a pass, and [`CHECKPOINT_INTERVAL`] alone spaces them. Measured in sessions 5–7,
/// PoAI sign at a fifth of capacity, p99: 4.3 ms at 1 MiB, 5.8 ms at 4 MiB, 149 ms at 32 MiB (a
/// large pass ends in an fsync of many scattered pages that the WAL syncs queue behind).
pub(crate) const CHECKPOINT_BYTES: u64 = 1 << 20;

/// The shortest time between the starts of two background checkpoint passes.
///
/// Until session 11 passes ran back to back, one after every WAL sync that found none running:
/// about 1,300 passes a second under signing load, each copying one or two batches' frames,
/// each with one or two fsyncs of its own and a sort of the whole WAL's frame index, and the
/// WAL itself never started over (it sat at 64–400 MiB). The passes were 18 % of the runtime
/// threads' profile samples, and the committer's WAL sync took about 1.5× the disk's own
/// (docs/benchmarks.md, session 11). Spaced passes, each finished by the committer (see the
/// module docs), copy a page once per pass instead of once per batch, and keep the WAL at a few
/// MiB. Of 15, 30, 60, 120, 250 and 500 ms, longer intervals signed faster but their larger
/// passes pushed the open-loop p99 of signing at 5,000/s past 5 ms from 60 ms on; 30 ms is the
/// longest that kept it under. Spacing without the committer's catch-up (tried in sessions 6
/// and 8) let the WAL grow without bound, since no pass ever reached its end.
pub(crate) const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(30);

/// The WAL size past which the group committer stops and checkpoints the whole WAL itself
/// (`TRUNCATE`) before its next batch ([`crate::BatchWriter::bound_wal`]). The background
/// checkpoint copies scattered pages more slowly than sustained batch signing with random nonces
/// writes them, and the WAL can only start again from its beginning once a checkpoint has caught
/// up with it: measured, it grew to 6–8 GB during 60 s of `bench server --prefill` (SignPoaiBatch
/// of 1,024, about 33,000 nonce records per second). Past this size, writes wait for the disk
/// instead of filling it. Unbatched signing at capacity kept the WAL at 64–190 MB.
pub(crate) const WAL_LIMIT_BYTES: u64 = 512 << 20;

/// The background checkpointer's state.
#[derive(Debug, Default)]
struct Checkpointer {
    running: AtomicBool,
    /// When the last background pass started.
    last_start: std::sync::Mutex<Option<std::time::Instant>>,
    /// A background pass copied frames since the writer last finished one.
    catch_up: AtomicBool,
    /// The background pass could not sync the database file (see the module docs).
    failed: AtomicBool,
    /// Checkpoint passes that copied frames ([`PassResult::copied_since`]).
    passes: AtomicU64,
    /// What the last pass, background or the writer's, reported.
    last: std::sync::Mutex<PassResult>,
    /// The background pass's connection, opened on first use.
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
        let now = std::time::Instant::now();
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
    /// previous pass's log counts only if it copied more than that pass had (measured against
    /// the kernel's syscall counts, the total was within 5 %).
    pub fn copied_since(self, prev: PassResult) -> bool {
        if self.log < prev.log {
            // The log shrank: it started over since, and everything in it is new.
            self.done > 0
        } else {
            self.done > prev.done
        }
    }
}

/// The WAL file of one SQLite database and how far it is known to be on disk.
#[derive(Debug)]
pub(crate) struct WalSync {
    db: PathBuf,
    wal: PathBuf,
    checkpointer: Arc<Checkpointer>,
    /// Commits finished (their COMMIT returned), counted from 1.
    committed: AtomicU64,
    /// Every commit up to this number is on disk.
    synced: AtomicU64,
    /// Calls of fdatasync: the benchmark's "fsyncs per request".
    syncs: AtomicU64,
    /// The WAL file's size when the last sync ended (it decides on checkpoints).
    wal_len: AtomicU64,
    failed: AtomicBool,
    /// One sync at a time; a waiter that gets it after another sync finds itself covered.
    turn: tokio::sync::Mutex<()>,
}

impl WalSync {
    /// For the database file at `db` (its WAL is `db-wal`).
    pub fn new(db: &str) -> Self {
        Self {
            db: PathBuf::from(db),
            wal: PathBuf::from(format!("{db}-wal")),
            checkpointer: Arc::default(),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            wal_len: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Refuse to start a transaction after a failed sync.
    pub fn check(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(sync_failed(&self.wal, "an earlier sync failed"));
        }
        if self.checkpointer.failed.load(Ordering::Acquire) {
            return Err(sync_failed(
                &self.db,
                "an earlier sync of the database file after a checkpoint failed",
            ));
        }
        Ok(())
    }

    /// Count a commit that has just returned; the ticket waits for a sync that covers it.
    pub fn committed(self: &Arc<Self>) -> Pending {
        let n = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        Pending {
            wait: Some((self.clone(), n)),
        }
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Checkpoint passes that copied WAL frames into the database, the background ones and the
    /// writer's: each synced the WAL, and the database too when it caught up with the WAL's end
    /// (see [`PassResult::copied_since`]).
    pub fn checkpoints(&self) -> u64 {
        self.checkpointer.passes.load(Ordering::Relaxed)
    }

    /// Count a whole-WAL checkpoint that completed on another connection (the writer's).
    pub(crate) fn count_full_checkpoint(&self) {
        self.checkpointer.passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a background pass copied frames since the writer last finished one; clears it.
    pub(crate) fn take_catch_up(&self) -> bool {
        self.checkpointer.catch_up.swap(false, Ordering::AcqRel)
    }

    /// Hand over to the writer as a background pass does (tests only).
    #[cfg(test)]
    pub(crate) fn checkpointer_hand_over(&self) {
        self.checkpointer.catch_up.store(true, Ordering::Release);
    }

    /// Count a pass the writer ran on its own connection, which reported `now`.
    pub(crate) fn record_pass(&self, now: PassResult) -> bool {
        self.checkpointer.record(now)
    }

    /// The WAL file's size in bytes when the last successful sync ended (0 before the first,
    /// or when the file did not exist).
    pub fn wal_len(&self) -> u64 {
        self.wal_len.load(Ordering::Relaxed)
    }

    /// The WAL was checkpointed whole and cut to nothing.
    pub fn wal_cut(&self) {
        self.wal_len.store(0, Ordering::Relaxed);
    }

    async fn wait(&self, n: u64) -> Result<()> {
        if self.synced.load(Ordering::Acquire) >= n {
            return Ok(());
        }
        let _turn = self.turn.lock().await;
        self.check()?;
        if self.synced.load(Ordering::Acquire) >= n {
            return Ok(());
        }
        // Every commit counted so far has returned, so this sync covers all of them.
        let upto = self.committed.load(Ordering::Acquire);
        let wal = self.wal.clone();
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let done = tokio::task::spawn_blocking(move || sync_file(&wal))
            .await
            .map_err(|_| std::io::Error::other("the sync task stopped"))
            .and_then(|r| r);
        self.synced_upto(upto, done)
    }

    /// [`Self::wait`] on a thread outside the runtime (the group committer's), which syncs
    /// itself instead of handing the sync to the blocking pool.
    fn wait_blocking(&self, n: u64) -> Result<()> {
        if self.synced.load(Ordering::Acquire) >= n {
            return Ok(());
        }
        let _turn = self.turn.blocking_lock();
        self.check()?;
        if self.synced.load(Ordering::Acquire) >= n {
            return Ok(());
        }
        let upto = self.committed.load(Ordering::Acquire);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let done = sync_file(&self.wal);
        self.synced_upto(upto, done)
    }

    /// Record the outcome of a sync that covered every commit up to `upto`.
    fn synced_upto(&self, upto: u64, done: std::io::Result<u64>) -> Result<()> {
        match done {
            Ok(len) => {
                self.synced.fetch_max(upto, Ordering::AcqRel);
                self.maybe_checkpoint(len);
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                tracing::error!(wal = %self.wal.display(), error = %e, "fdatasync of the store's WAL failed; every later write is refused until restart");
                Err(sync_failed(&self.wal, &e.to_string()))
            }
        }
    }

    /// Start a background checkpoint if the WAL (`len` bytes as the sync found it) is large,
    /// none is running and the last one started at least [`CHECKPOINT_INTERVAL`] ago.
    fn maybe_checkpoint(&self, len: u64) {
        self.wal_len.store(len, Ordering::Relaxed);
        if len <= CHECKPOINT_BYTES || !self.checkpointer.take_turn() {
            return;
        }
        let (db, cp) = (self.db.clone(), self.checkpointer.clone());
        tokio::task::spawn_blocking(move || {
            match checkpoint(&db, &cp) {
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
}

/// One PASSIVE pass; returns whether it copied frames.
fn checkpoint(db: &std::path::Path, cp: &Checkpointer) -> rusqlite::Result<bool> {
    let mut conn = cp.conn.lock().map_err(|_| rusqlite::Error::InvalidQuery)?;
    if conn.is_none() {
        let c = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.execute_batch(crate::batch::SQLITE_PRAGMAS)?;
        *conn = Some(c);
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

/// `fdatasync` the file at `path`; returns its length (0 if it does not exist).
///
/// The length comes from `lseek(SEEK_END)` on the same handle, not from `stat`. Since Linux
/// 6.13, a `stat` that reports a file's times marks them as seen, and the next write then stamps
/// the file with a fine-grained time, which dirties its inode; on ext4 without a journal every
/// `fdatasync` then writes the inode block too, a second synchronous write before the flush.
/// The store used to `stat` the WAL after every sync, so every WAL sync paid for that write
/// (docs/benchmarks.md, session 12). Unobserved, the times move only with the coarse clock
/// tick, and most syncs write just the WAL's pages.
fn sync_file(path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Seek;
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.sync_data()?;
            f.seek(std::io::SeekFrom::End(0))
        }
        // No WAL: the last connection closed, which checkpoints the WAL into the database and
        // syncs it (SQLite does this in NORMAL too) before deleting the file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn sync_failed(wal: &std::path::Path, why: &str) -> Error {
    Error::new(
        ErrorKind::AuditFailure,
        format!(
            "the store's write-ahead log {} could not be synced to disk ({why}); restart the node",
            wal.display()
        ),
    )
}

/// A commit that is visible but may not be on disk yet. [`Pending::durable`] waits until it is.
#[must_use = "a commit is not durable until `durable()` returns"]
#[derive(Debug)]
pub struct Pending {
    /// `None` when the commit was durable when it returned (PostgreSQL).
    wait: Option<(Arc<WalSync>, u64)>,
}

impl Pending {
    /// A commit that was durable on return.
    pub(crate) fn done() -> Self {
        Self { wait: None }
    }

    /// Wait until the commit is on disk.
    pub async fn durable(self) -> Result<()> {
        match self.wait {
            None => Ok(()),
            Some((sync, n)) => sync.wait(n).await,
        }
    }

    /// Wait until the commit is on disk, on a thread that is not a runtime's (it blocks, and
    /// panics inside an async context).
    pub fn durable_blocking(self) -> Result<()> {
        match self.wait {
            None => Ok(()),
            Some((sync, n)) => sync.wait_blocking(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_sync_covers_every_commit_before_it_and_a_failure_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(format!("{}-wal", db.display()), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(&db.display().to_string()));
        let tickets: Vec<Pending> = (0..5).map(|_| sync.committed()).collect();
        for t in tickets {
            t.durable().await.unwrap();
        }
        assert_eq!(sync.syncs(), 1, "the first sync covered all five commits");
        sync.committed().durable().await.unwrap();
        assert_eq!(sync.syncs(), 2, "a later commit needs a sync of its own");
        // The sync reports the WAL's length (from lseek on the synced handle, not stat).
        assert_eq!(sync.wal_len(), b"frames".len() as u64);
        std::fs::write(format!("{}-wal", db.display()), vec![7u8; 5000]).unwrap();
        sync.committed().durable().await.unwrap();
        assert_eq!(sync.wal_len(), 5000);

        // A missing WAL is fine (checkpointed and removed on close).
        std::fs::remove_file(format!("{}-wal", db.display())).unwrap();
        sync.committed().durable().await.unwrap();
        assert_eq!(sync.wal_len(), 0);

        // A WAL that cannot be opened (here: its directory is a file, which fails even for
        // root) fails the commit, and every later one, without another attempt.
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let broken = Arc::new(WalSync::new(
            &dir.path().join("file").join("y.db").display().to_string(),
        ));
        let e = broken.committed().durable().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuditFailure);
        assert!(e.to_string().contains("restart"), "{e}");
        let e = broken.committed().durable().await.unwrap_err();
        assert!(e.to_string().contains("an earlier sync failed"), "{e}");
        assert_eq!(broken.syncs(), 1, "a failed sync is not retried");
        assert!(broken.check().is_err());
    }

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

    /// The group committer's blocking waits share the syncs and the failure with async waiters.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocking_wait_shares_syncs_and_failures_with_async_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(format!("{}-wal", db.display()), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(&db.display().to_string()));
        let (a, b, c) = (sync.committed(), sync.committed(), sync.committed());
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let _rt = runtime.enter();
            b.durable_blocking()
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(sync.syncs(), 1);
        a.durable().await.unwrap();
        c.durable().await.unwrap();
        assert_eq!(
            sync.syncs(),
            1,
            "the blocking sync covered the commits counted before it"
        );
        let d = sync.committed();
        std::thread::spawn(move || d.durable_blocking())
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(sync.syncs(), 2);

        std::fs::write(dir.path().join("file"), b"").unwrap();
        let broken = Arc::new(WalSync::new(
            &dir.path().join("file").join("y.db").display().to_string(),
        ));
        let (first, second) = (broken.committed(), broken.committed());
        let e = std::thread::spawn(move || first.durable_blocking())
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuditFailure);
        let e = second.durable().await.unwrap_err();
        assert!(e.to_string().contains("an earlier sync failed"), "{e}");
        assert_eq!(broken.syncs(), 1, "a failed sync is not retried");
    }
}
