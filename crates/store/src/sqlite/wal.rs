//! When a commit is on disk: [`WalSync`] counts commits and syncs the WAL, and [`Pending`] is a
//! commit's ticket (see the [module docs](super) for the protocol).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hanzo_kms_core::{Error, ErrorKind, Result};

use super::checkpoint::Checkpointer;

/// The WAL file of one SQLite database and how far it is known to be on disk.
#[derive(Debug)]
pub(crate) struct WalSync {
    pub(super) db: PathBuf,
    wal: PathBuf,
    pub(super) checkpointer: Arc<Checkpointer>,
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
    /// (see [`super::checkpoint::PassResult::copied_since`]).
    pub fn checkpoints(&self) -> u64 {
        self.checkpointer.passes.load(Ordering::Relaxed)
    }

    /// The WAL file's size in bytes when the last successful sync ended (0 before the first,
    /// or when the file did not exist).
    pub fn wal_len(&self) -> u64 {
        self.wal_len.load(Ordering::Relaxed)
    }

    /// The WAL was checkpointed whole and cut to nothing.
    pub(super) fn wal_cut(&self) {
        self.wal_len.store(0, Ordering::Relaxed);
    }

    pub(super) fn set_wal_len(&self, len: u64) {
        self.wal_len.store(len, Ordering::Relaxed);
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
}

/// `fdatasync` the file at `path`; returns its length (0 if it does not exist).
///
/// The length comes from `lseek(SEEK_END)` on the same handle, not from `stat`. Since Linux
/// 6.13, a `stat` that reports a file's times marks them as seen, and the next write then stamps
/// the file with a fine-grained time, which dirties its inode; on ext4 without a journal every
/// `fdatasync` then writes the inode block too, a second synchronous write before the flush.
/// Unobserved, the times move only with the coarse clock tick, and most syncs write just the
/// WAL's pages.
pub(super) fn sync_file(path: &std::path::Path) -> std::io::Result<u64> {
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

pub(super) fn sync_failed(wal: &std::path::Path, why: &str) -> Error {
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
