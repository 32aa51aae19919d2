//! Group commit for signing (pipeline steps 5 and 7).
//!
//! A signature may leave the process only after its nonce record and audit record are durable
//! (committed, fsynced). One transaction per request would cap signing at the disk's fsync rate.
//! Instead, requests hand their records to one committer task; it takes every request waiting at
//! that moment (up to [`MAX_BATCH`]), checks the replay rules for each in order, writes all their
//! records and audit events in one transaction with one fsync, and only then answers each request.
//! Nothing is weakened: every answer still follows its own durable commit. While one batch
//! commits, the next fills up, so the batch size adapts to the load.
//!
//! On SQLite the committer is a thread with a connection of its own. It commits a batch with
//! `synchronous = NORMAL` and then syncs the WAL itself (`Pending::durable_blocking`) before it
//! answers; the requests that arrive during the commit and the sync are the next batch. So a
//! batch is everything that arrived during one commit-and-sync cycle, and there is one commit per
//! sync. Elsewhere (PostgreSQL) a commit is durable
//! when it returns.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hanzo_kms_core::eip712::B32;
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_store::{
    AuditEvent, BatchQuery, BatchReads, BatchWriter, BatchWrites, ConsumeRow, NonceRow, Pending,
    Store,
};
use tokio::sync::{mpsc, oneshot};

/// The most requests one transaction carries.
pub const MAX_BATCH: usize = 512;

/// One request's records.
pub(crate) struct Records {
    pub key: String,
    /// `(nonce, message digest)` for every message this signature covers.
    pub nonces: Vec<(B32, [u8; 32])>,
    /// When the nonce records may be pruned: the latest moment any of those messages can be
    /// accepted (crate::replay).
    pub expires_at: i64,
    /// `u32be(version) ‖ signature`, stored with a single message's nonce for exact retries.
    pub record: Vec<u8>,
    /// `(attestation digest, settlement digest, when the attestation stops verifying)` for a
    /// settlement.
    pub consume: Option<([u8; 32], [u8; 32], i64)>,
    pub event: AuditEvent,
}

struct Job {
    records: Records,
    /// When the request handed its records over: its wait for a batch counts from here.
    submitted: Instant,
    reply: oneshot::Sender<Reply>,
}

/// The committer's answer to one request.
struct Reply {
    outcome: Result<Outcome>,
    /// The records handed back: the submitter frees them, not the committer, whose thread every
    /// request waits on.
    records: Records,
    /// When the committer answered: the request's wake-up counts from here.
    answered: Instant,
}

/// What the committer decided for a job.
pub(crate) enum Outcome {
    /// The records were written: the new signature may be returned.
    Recorded,
    /// The same message was signed before under this nonce: return this earlier record instead.
    Retry(Vec<u8>),
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub requests: AtomicU64,
    pub transactions: AtomicU64,
    /// Whole-WAL checkpoints the committer ran because the SQLite WAL passed its limit; writes
    /// waited meanwhile.
    pub wal_limit_checkpoints: AtomicU64,
    /// Nanoseconds the committer spent in its transactions (reads, decisions, writes, COMMIT).
    pub commit_nanos: AtomicU64,
    /// Nanoseconds it spent waiting for its commits to be durable (on SQLite, the WAL syncs).
    pub sync_nanos: AtomicU64,
    /// Nanoseconds it spent answering.
    pub answer_nanos: AtomicU64,
    /// Nanoseconds it spent between batches on checkpoints: finishing the background pass
    /// (SQLite), and the whole-WAL checkpoint past the WAL's limit.
    pub checkpoint_nanos: AtomicU64,
    /// Background checkpoint passes the committer finished on its connection.
    pub catch_ups: AtomicU64,
    /// Nanoseconds, summed over requests, from handing the records over to the start of the
    /// batch that carried them: the wait for the committer's cycle in progress.
    pub queue_nanos: AtomicU64,
    /// Nanoseconds, summed over requests, from the committer's answer to the request running
    /// again: the hand-over back to the async runtime, including any wait for a free core.
    pub wakeup_nanos: AtomicU64,
}

impl CommitStats {
    /// Count one batch's phases, from the instants that end them.
    fn phases(&self, [started, committed, durable, answered, done]: [Instant; 5]) {
        let ns = |a: Instant, b: Instant| b.saturating_duration_since(a).as_nanos() as u64;
        self.commit_nanos
            .fetch_add(ns(started, committed), Ordering::Relaxed);
        self.sync_nanos
            .fetch_add(ns(committed, durable), Ordering::Relaxed);
        self.answer_nanos
            .fetch_add(ns(durable, answered), Ordering::Relaxed);
        self.checkpoint_nanos
            .fetch_add(ns(answered, done), Ordering::Relaxed);
    }
}

/// The handle requests use.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<CommitStats>,
}

impl GroupCommit {
    /// Start the committer. On SQLite it is a thread of its own with a dedicated connection
    /// (see [`BatchWriter`]); elsewhere, or if that connection cannot be opened, a task on the
    /// current tokio runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let stats = Arc::new(CommitStats::default());
        let runtime = tokio::runtime::Handle::current();
        let writer = store.batch_writer().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no dedicated SQLite writer; group commits go through the pool");
            None
        });
        match writer {
            Some(writer) => {
                let st = stats.clone();
                let spawned = std::thread::Builder::new()
                    .name("hanzo-kms-commit".into())
                    .spawn(move || run_blocking(writer, rx, st, runtime));
                if let Err(e) = spawned {
                    // Without the thread, the receiver is gone and every submit fails closed
                    // with `stopped()`.
                    tracing::error!(error = %e, "could not start the group-commit thread");
                }
            }
            None => {
                tokio::spawn(run(store, rx, stats.clone()));
            }
        }
        Self { tx, stats }
    }

    pub async fn submit(&self, records: Records) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                records,
                submitted: Instant::now(),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        let Reply {
            outcome,
            records,
            answered,
        } = answer.await.map_err(|_| stopped())?;
        self.stats.wakeup_nanos.fetch_add(
            answered.elapsed().as_nanos().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        drop(records); // here, on the request's task (see `Reply::records`)
        outcome
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::AuditFailure,
        "the commit task stopped, so the request was not carried out",
    )
}

/// Take the first waiting job and every job behind it, up to [`MAX_BATCH`], for a batch that
/// starts at `started`.
fn fill(
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    stats: &CommitStats,
    started: Instant,
) -> Vec<Job> {
    let mut batch = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
    stats
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    let queued: u128 = batch
        .iter()
        .map(|j| started.saturating_duration_since(j.submitted).as_nanos())
        .sum();
    stats
        .queue_nanos
        .fetch_add(queued.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    batch
}

/// Answer a batch whose commit is on disk, or fail every job of it.
fn settle(jobs: Vec<Job>, durable: Result<Vec<Result<Outcome>>>) {
    match durable {
        Ok(outcomes) => answer(jobs, outcomes),
        Err(e) => fail(jobs, &e),
    }
}

/// The committer as a task, through the store's pool (PostgreSQL, where a commit is durable
/// when it returns).
async fn run(store: Store, mut rx: mpsc::Receiver<Job>, stats: Arc<CommitStats>) {
    while let Some(first) = rx.recv().await {
        let started = Instant::now();
        let jobs = fill(first, &mut rx, &stats, started);
        let (q, now) = (query(&jobs), crate::now_secs());
        let committed = store
            .commit_batch(q.as_query(now), |reads| decide(&jobs, reads))
            .await;
        let commit_end = Instant::now();
        let durable = match committed {
            Ok((outcomes, Some(pending))) => pending.durable().await.map(|()| outcomes),
            Ok((outcomes, None)) => Ok(outcomes),
            Err(e) => Err(e),
        };
        let sync_end = Instant::now();
        settle(jobs, durable);
        let answered = Instant::now();
        stats.phases([started, commit_end, sync_end, answered, answered]);
    }
}

/// The committer as a thread with its own SQLite connection. It syncs the WAL itself after each
/// commit: the jobs that arrive meanwhile wait in the channel and make up the next batch.
fn run_blocking(
    mut writer: BatchWriter,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<CommitStats>,
    runtime: tokio::runtime::Handle,
) {
    // A sync may start a background checkpoint on the runtime's blocking pool.
    let _runtime = runtime.enter();
    while let Some(first) = rx.blocking_recv() {
        let started = Instant::now();
        let jobs = fill(first, &mut rx, &stats, started);
        let (q, now) = (query(&jobs), crate::now_secs());
        let committed = writer.commit_batch(q.as_query(now), |reads| decide(&jobs, reads));
        let commit_end = Instant::now();
        let durable = committed.and_then(|(outcomes, pending)| {
            pending
                .map_or(Ok(()), Pending::durable_blocking)
                .map(|()| outcomes)
        });
        let sync_end = Instant::now();
        settle(jobs, durable);
        let answered = Instant::now();
        // Before the next batch: the background checkpoint pass that ended is finished here, so
        // the WAL starts over; a WAL past its limit (a backstop) is checkpointed here, whole.
        // Neither loses anything on failure: the batches before are durable and answered.
        match writer.catch_up() {
            Ok(true) => {
                stats.catch_ups.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the committer could not finish a checkpoint; the WAL grows until a later pass does");
            }
        }
        match writer.bound_wal() {
            Ok(None) => {}
            Ok(Some(_)) => {
                stats.wal_limit_checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the WAL could not be checkpointed; it keeps growing until a later attempt succeeds");
            }
        }
        stats.phases([started, commit_end, sync_end, answered, Instant::now()]);
    }
}

/// What a batch asks the store.
struct Query<'a> {
    nonces: Vec<(&'a str, &'a [u8])>,
    attestations: Vec<&'a [u8]>,
}

impl Query<'_> {
    fn as_query(&self, now: i64) -> BatchQuery<'_> {
        BatchQuery {
            nonces: &self.nonces,
            attestations: &self.attestations,
            now,
        }
    }
}

fn query(jobs: &[Job]) -> Query<'_> {
    Query {
        nonces: jobs
            .iter()
            .flat_map(|j| {
                j.records
                    .nonces
                    .iter()
                    .map(|(n, _)| (j.records.key.as_str(), &n.0[..]))
            })
            .collect(),
        attestations: jobs
            .iter()
            .filter_map(|j| j.records.consume.as_ref().map(|(a, _, _)| &a[..]))
            .collect(),
    }
}

fn answer(jobs: Vec<Job>, outcomes: Vec<Result<Outcome>>) {
    let answered = Instant::now();
    for (Job { records, reply, .. }, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = reply.send(Reply {
            outcome,
            records,
            answered,
        });
    }
}

/// Every job of a batch that could not be committed gets the error, worded as an audit failure
/// once (by [`crate::audit_failure`], as the unbatched path words it): an error the store already
/// worded so, or an unreachable store (which stays `unavailable`, retryable), is passed on as it is.
fn fail(jobs: Vec<Job>, e: &Error) {
    let msg = e.to_string();
    let answered = Instant::now();
    for Job { records, reply, .. } in jobs {
        let _ = reply.send(Reply {
            outcome: Err(crate::audit_failure(Error::new(e.kind(), msg.clone()))),
            records,
            answered,
        });
    }
}

/// A nonce recorded earlier in the same batch: (message digest, the stored signature record).
type Earlier<'a> = ([u8; 32], Option<&'a [u8]>);

/// Steps 5 and 7 for a batch, without I/O: from what the store holds, decide each job in
/// arrival order (seeing the jobs before it in the batch), and what the transaction writes.
/// Returns one outcome per job. Replay refusals are per job (the callers audit their denials);
/// a batch of only refusals writes nothing.
fn decide<'a>(jobs: &'a [Job], stored: &BatchReads) -> (BatchWrites<'a>, Vec<Result<Outcome>>) {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut writes = BatchWrites::default();
    // Nonces and attestations taken by earlier jobs of this batch.
    let mut earlier: HashMap<(&str, [u8; 32]), Earlier<'_>> = HashMap::new();
    let mut consumed: HashSet<&[u8]> = HashSet::new();
    'job: for Job { records: job, .. } in jobs {
        let ev = &job.event;
        // A job naming one nonce twice would break the whole transaction at insert time (and with
        // it every other job of the batch): refuse that job alone.
        if job
            .nonces
            .iter()
            .enumerate()
            .any(|(i, (n, _))| job.nonces[..i].iter().any(|(m, _)| m == n))
        {
            outcomes.push(Err(Error::invalid(
                "the same nonce appears twice in one request",
            )));
            continue 'job;
        }
        // Step 5: the replay guard.
        let mut absent = Vec::with_capacity(job.nonces.len());
        for (nonce, msg) in &job.nonces {
            let seen = match earlier.get(&(job.key.as_str(), nonce.0)) {
                Some((d, rec)) => Some((d.to_vec(), rec.map(<[u8]>::to_vec))),
                // (The usual case, a batch of fresh nonces, builds no lookup key.)
                None if stored.nonces.is_empty() => None,
                None => stored
                    .nonces
                    .get(&(job.key.clone(), nonce.0.to_vec()))
                    .cloned(),
            };
            match seen {
                Some((d, _)) if d != msg.as_slice() => {
                    // Refused: nothing of this job is written; the caller audits the denial.
                    outcomes.push(Err(Error::new(
                        ErrorKind::Replayed,
                        format!(
                            "{} already signed a different message with nonce {}",
                            job.key,
                            nonce.to_hex()
                        ),
                    )));
                    continue 'job;
                }
                Some((_, Some(rec))) if job.nonces.len() == 1 && rec.len() > 4 => {
                    let mut ev = ev.clone();
                    ev.reason = Some("retry".into());
                    writes.events.push(Cow::Owned(ev));
                    outcomes.push(Ok(Outcome::Retry(rec)));
                    continue 'job;
                }
                Some(_) => {}
                None => absent.push((nonce, msg)),
            }
        }
        if let Some((att, settlement, att_expires)) = &job.consume {
            if consumed.contains(&att[..]) || stored.consumed.contains(&att[..]) {
                outcomes.push(Err(Error::new(
                    ErrorKind::Replayed,
                    format!("attestation {} was already settled", B32(*att).to_hex()),
                )));
                continue;
            }
            consumed.insert(&att[..]);
            writes.consumed.push(ConsumeRow {
                attestation: att,
                settlement_key: &job.key,
                settlement,
                expires_at: *att_expires,
            });
        }
        for (nonce, msg) in absent {
            let rec = (job.nonces.len() == 1).then_some(job.record.as_slice());
            earlier.insert((job.key.as_str(), nonce.0), (*msg, rec));
            writes.nonces.push(NonceRow {
                key: &job.key,
                nonce: &nonce.0,
                digest: msg,
                signature: rec,
                expires_at: job.expires_at,
            });
        }
        writes.events.push(Cow::Borrowed(ev));
        outcomes.push(Ok(Outcome::Recorded));
    }
    (writes, outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        let records = Records {
            key: "poai:acme:m".into(),
            nonces: Vec::new(),
            expires_at: 0,
            record: Vec::new(),
            consume: None,
            event: AuditEvent {
                time_ms: 0,
                request_id: "r".into(),
                principal: "p".into(),
                tenant: "acme".into(),
                operation: "poai.sign".into(),
                key_name: None,
                key_version: None,
                outcome: "ok".into(),
                reason: None,
                peer: None,
                detail: None,
            },
        };
        (
            Job {
                records,
                submitted: Instant::now(),
                reply,
            },
            rx,
        )
    }

    fn failed(e: &Error) -> Error {
        let (j, mut rx) = job();
        fail(vec![j], e);
        match rx.try_recv() {
            Ok(Reply {
                outcome: Err(e), ..
            }) => e,
            _ => panic!("no error was sent"),
        }
    }

    #[test]
    fn a_failed_batch_is_worded_as_an_audit_failure_once() {
        let e = failed(&Error::new(ErrorKind::Corrupt, "the chain head is missing"));
        assert_eq!(e.kind(), ErrorKind::AuditFailure);
        assert_eq!(
            e.message(),
            "the audit log could not be written, so the request was not carried out: \
             the chain head is missing"
        );
        // The store's own audit failure is not prefixed a second time.
        let worded = crate::audit_failure(Error::new(ErrorKind::Io, "disk full"));
        let e = failed(&worded);
        assert_eq!(e.kind(), ErrorKind::AuditFailure);
        assert_eq!(e.message(), worded.message());
        assert_eq!(e.message().matches("could not be written").count(), 1);
        // An unreachable store stays retryable.
        let e = failed(&Error::new(
            ErrorKind::Unavailable,
            "the store is unreachable",
        ));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), "the store is unreachable");
    }
}
