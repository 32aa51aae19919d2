//! SQLite: when a commit is on disk, and how the WAL is checkpointed.
//!
//! # Three connections
//!
//! - **The pool**: sqlx's connections ([`crate::Store`]), for every read and every
//!   [`crate::WriteTx`].
//! - **The committer's connection**: [`BatchWriter`], rusqlite on the group committer's own
//!   thread. It carries every group-committed batch (signatures, audit-only records). sqlx runs
//!   each SQLite connection on a worker thread and hands every statement over and back, two
//!   thread wake-ups per statement; on the hot path of every signing request those hand-offs
//!   cost more than the statements.
//! - **The checkpointer's connection**: rusqlite, opened on first use, for the background
//!   PASSIVE passes and for the whole-WAL checkpoint that erases deleted key material
//!   ([`WalSync::scrub`]). It is guarded by a mutex, so those never run at once.
//!
//! All three run [`PRAGMAS`] (the pool adds `secure_delete`: [`POOL_PRAGMAS`]) and share one
//! [`WalSync`].
//!
//! # Durability ([`wal`])
//!
//! The connections run `synchronous = NORMAL`: a COMMIT appends its WAL frames (a `pwrite` into
//! the page cache) and returns without waiting for the disk. The commit is then made durable by
//! an `fdatasync` of the WAL file, and nobody is told it happened before that.
//! [`crate::WriteTx::commit`] does both, so every caller keeps the guarantee of
//! `synchronous = FULL`. Every waiter shares one sync at a time: one `fdatasync` covers every
//! commit finished before it started, however many there are. The group committer runs the two
//! halves on its own thread ([`Pending::durable_blocking`]): it commits a batch, syncs, answers,
//! and takes what arrived meanwhile as the next batch, so there is one commit per sync.
//!
//! Why this is as durable as FULL: in WAL mode every commit of the database goes to the one WAL
//! file, in order. An fdatasync of that file that starts after a COMMIT returned covers that
//! commit's frames, the WAL header and the file's length. SQLite itself syncs the WAL before it
//! checkpoints into the database, syncs the database after a checkpoint, and syncs the WAL
//! header when it starts to reuse the file (all in NORMAL), so a checkpoint never loses what an
//! earlier sync made durable. A crash before the sync loses only commits that were never
//! acknowledged.
//!
//! A failed fdatasync is not retried: after one, Linux may have dropped the dirty pages, and a
//! later sync can succeed without them. The store then refuses every later commit until the
//! process restarts (and SQLite recovers the WAL from disk). That holds for the background
//! pass's sync of the database file too: SQLite would go on to start the WAL over, trusting
//! pages that may not be on disk.
//!
//! # Checkpoints ([`checkpoint`])
//!
//! Checkpoints are kept off the request path. Every connection runs with
//! `wal_autocheckpoint = 0`: SQLite's automatic checkpoint runs inside the COMMIT of whichever
//! connection crosses 1000 pages, so one batch in every few hundred would wait for a copy of the
//! WAL into the database and two fsyncs. Instead, after a sync, when the WAL file is larger than
//! [`checkpoint::CHECKPOINT_BYTES`] and the last pass started at least
//! [`checkpoint::CHECKPOINT_INTERVAL`] ago, a background thread runs a PASSIVE checkpoint on the
//! checkpointer's connection (PASSIVE waits for no reader or writer) and then syncs the database
//! file itself, so that the pages it copied are on disk before anyone waits for them. A
//! connection that closes last checkpoints and removes the WAL.
//!
//! A PASSIVE pass copies the frames that were in the WAL when it started; the committer goes on
//! appending meanwhile, so under load no background pass ever reaches the WAL's end, and SQLite
//! starts the WAL over from its beginning only when one has. The committer therefore finishes
//! each background pass on its own connection, between two batches
//! ([`BatchWriter::catch_up`]): nothing is appended during that pass, so it copies the few
//! frames committed since the background pass started and completes, and the committer's next
//! transaction starts the WAL over. The WAL stays at a few MiB, and each pass copies every page
//! once however often the batches rewrote it (the audit table's last leaf, the chain head). As a
//! backstop, past [`checkpoint::WAL_LIMIT_BYTES`] the committer checkpoints the whole WAL itself
//! before its next batch ([`BatchWriter::bound_wal`]).
//!
//! # Erasing
//!
//! The pool's connections, which are the ones that delete key material, run
//! `secure_delete = ON`: SQLite overwrites a deleted row with zeros, and a page it frees too
//! (FAST would leave freed pages as they were). A transaction that deletes
//! key material then moves the rest of that table into fresh pages, and its commit checkpoints
//! the whole WAL and cuts it to nothing ([`WalSync::scrub`]), so no older image of a page that
//! held the material survives in the WAL either.

pub(crate) mod checkpoint;
mod wal;
mod writer;

pub use wal::Pending;
pub(crate) use wal::WalSync;
pub use writer::BatchWriter;

/// The settings of every SQLite connection. NORMAL: a COMMIT does not wait for the disk; the
/// store syncs the WAL itself before a commit counts. No automatic checkpoints: the store runs
/// them. A WAL that was reset is cut back to 64 MiB.
///
/// The page cache stays at SQLite's default (2 MiB): every write transaction ends with a trim of
/// the page cache, a scan that grows with the cache, and a larger cache on the committer's
/// connection made signing slower (docs/benchmarks.md, "The store's history").
macro_rules! pragmas {
    () => {
        "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = 67108864;"
    };
}

/// The committer's and the checkpointer's settings.
pub(crate) const PRAGMAS: &str = pragmas!();

/// The pool's settings: [`PRAGMAS`] and `secure_delete = ON`, because the pool's connections are
/// the ones that delete and rewrite key material (module docs, "Erasing"). The committer only
/// inserts audit and replay-guard rows and updates the chain head, so its pages never held key
/// material, and a page it takes from the free list was zeroed when the pool freed it; without
/// the setting its commits are about 15 % cheaper (docs/benchmarks.md, "The store").
pub(crate) const POOL_PRAGMAS: &str = concat!(pragmas!(), " PRAGMA secure_delete = ON;");

/// Open a rusqlite connection to the database at `db` with [`PRAGMAS`]: the committer's or the
/// checkpointer's.
pub(crate) fn open(db: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(PRAGMAS)?;
    Ok(conn)
}
