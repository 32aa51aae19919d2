//! Group commit for signing (pipeline steps 5 and 7).
//!
//! A signature may leave the process only after its nonce record and audit record are durable
//! (committed, fsynced). One transaction per request would cap signing at the disk's fsync rate.
//! Instead, requests hand their records to one committer task; it takes every request waiting at
//! that moment (up to [`MAX_BATCH`]), checks the replay rules for each in order, writes all their
//! records and audit events in one transaction with one fsync, and only then answers each request.
//! Nothing is weakened: every answer still follows its own durable commit. While one batch
//! commits, the next fills up, so the batch size adapts to the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hanzo_kms_core::eip712::B32;
use hanzo_kms_core::{Error, ErrorKind, Result};
use std::collections::HashMap;

use hanzo_kms_store::{AuditEvent, NonceRow, Store};
use tokio::sync::{mpsc, oneshot};

/// The most requests one transaction carries.
pub const MAX_BATCH: usize = 512;

/// One request's records.
pub(crate) struct Records {
    pub key: String,
    /// `(nonce, message digest)` for every message this signature covers.
    pub nonces: Vec<(B32, [u8; 32])>,
    /// `u32be(version) ‖ signature`, stored with a single message's nonce for exact retries.
    pub record: Vec<u8>,
    /// `(attestation digest, settlement digest)` for a settlement.
    pub consume: Option<([u8; 32], [u8; 32])>,
    pub event: AuditEvent,
}

struct Job {
    records: Records,
    reply: oneshot::Sender<Result<Outcome>>,
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
}

/// The handle requests use.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<CommitStats>,
}

impl GroupCommit {
    /// Start the committer on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let stats = Arc::new(CommitStats::default());
        tokio::spawn(run(store, rx, stats.clone()));
        Self { tx, stats }
    }

    pub async fn submit(&self, records: Records) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { records, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::new(
        ErrorKind::AuditFailure,
        "the commit task stopped, so the request was not carried out",
    )
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, stats: Arc<CommitStats>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
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
        let jobs = std::mem::take(&mut batch);
        match commit_batch(&store, &jobs).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                // An unreachable store stays `unavailable` (retryable); see `audit_failure`.
                let kind = match e.kind() {
                    ErrorKind::Unavailable => ErrorKind::Unavailable,
                    _ => ErrorKind::AuditFailure,
                };
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(Error::new(
                        kind,
                        format!("the audit log could not be written, so the request was not carried out: {msg}"),
                    )));
                }
            }
        }
    }
}

/// A nonce recorded earlier in the same batch: (message digest, the stored signature record).
type Pending<'a> = ([u8; 32], Option<&'a [u8]>);

/// One transaction for the whole batch. Returns one outcome per job; replay refusals are
/// per job (and audited as denied), store failures fail the batch.
async fn commit_batch(store: &Store, jobs: &[Job]) -> Result<Vec<Result<Outcome>>> {
    let mut tx = store.begin_write().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events = Vec::with_capacity(jobs.len());
    let now = crate::now_secs();
    // Nonces recorded by earlier jobs of this batch, written together at the end (multi-row).
    let mut pending: HashMap<(&str, [u8; 32]), Pending<'_>> = HashMap::new();
    let mut rows: Vec<NonceRow<'_>> = Vec::new();
    // Step 5's reads for the whole batch in one query (random nonces are almost never found).
    let pairs: Vec<(&str, &[u8])> = jobs
        .iter()
        .flat_map(|j| {
            j.records
                .nonces
                .iter()
                .map(|(n, _)| (j.records.key.as_str(), &n.0[..]))
        })
        .collect();
    let stored = if pairs.is_empty() {
        HashMap::new()
    } else {
        tx.nonce_records(&pairs).await?
    };
    'job: for Job { records: job, .. } in jobs {
        let mut ev = job.event.clone();
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
        // Step 5: the replay guard, in arrival order, seeing earlier jobs of this batch.
        let mut absent = Vec::with_capacity(job.nonces.len());
        for (nonce, msg) in &job.nonces {
            let seen = match pending.get(&(job.key.as_str(), nonce.0)) {
                Some((d, rec)) => Some((d.to_vec(), rec.map(<[u8]>::to_vec))),
                None => stored.get(&(job.key.clone(), nonce.0.to_vec())).cloned(),
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
                    ev.reason = Some("retry".into());
                    events.push(ev);
                    outcomes.push(Ok(Outcome::Retry(rec)));
                    continue 'job;
                }
                Some(_) => {}
                None => absent.push((nonce, msg)),
            }
        }
        if let Some((att, settlement)) = job.consume {
            if tx.attestation_consumed(&att).await? {
                outcomes.push(Err(Error::new(
                    ErrorKind::Replayed,
                    format!("attestation {} was already settled", B32(att).to_hex()),
                )));
                continue;
            }
            tx.consume_attestation(&att, &job.key, &settlement, now)
                .await?;
        }
        for (nonce, msg) in absent {
            let rec = (job.nonces.len() == 1).then_some(job.record.as_slice());
            pending.insert((job.key.as_str(), nonce.0), (*msg, rec));
            rows.push(NonceRow {
                key: &job.key,
                nonce: &nonce.0,
                digest: msg,
                signature: rec,
            });
        }
        events.push(ev);
        outcomes.push(Ok(Outcome::Recorded));
    }
    // Step 7: one commit, one fsync, for every job's nonce and audit records. A batch of only
    // refusals writes nothing (the callers audit their denials).
    if !events.is_empty() {
        tx.insert_nonces(&rows, now).await?;
        tx.commit(&events).await?;
    }
    Ok(outcomes)
}
