//! Store benchmarks, on SQLite in a temporary directory (docs/benchmarks.md, "The store").
//!
//! ```text
//! cargo run --release -p hanzo-kms-store --example store_bench [SECONDS] [commit]
//! ```
//!
//! - `commit_cycle`: the group committer's loop as the service runs it (commit a batch of signing
//!   records through `BatchWriter`, sync the WAL, finish checkpoints), batches of 64 nonce and
//!   audit records, for SECONDS (default 5): cycles per second and records per second. The
//!   reference, in the same run: `fdatasync` of a 4 KiB append in the same directory, per second.
//!   Also the time in `commit_batch` alone, without the sync. With `commit`, only this.
//! - `audit`: what those records take on disk per signing request, and `verify_audit`'s
//!   records per second against hashing alone.
//! - `list_keys_of`: one tenant's listing with a prefix that matches 0, 300 and 3,000 keys of
//!   another tenant, against the all-tenant listing of the same prefix: microseconds per call.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, Instant};

use hanzo_kms_core::{
    Algorithm, KeyHandle, KeyMeta, KeyName, KeyState, KeyVersion, Origin, Purpose, Separator,
};
use hanzo_kms_store::{AuditEvent, BatchQuery, BatchWrites, NonceRow, Store};

const BATCH: usize = 64;

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000,
        request_id: format!("req-{i:016x}"),
        principal: "token:0123456789abcdef".into(),
        tenant: "acme".into(),
        operation: "poai.sign".into(),
        key_name: Some("poai:acme:gpt4".into()),
        key_version: Some(1),
        outcome: "ok".into(),
        reason: None,
        peer: Some("127.0.0.1:50000".into()),
        detail: None,
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = runtime.block_on(async {
        let s = Store::connect(&Store::sqlite_url(dir.path()), Separator::default(), true)
            .await
            .expect("connect");
        s.migrate().await.expect("migrate");
        s
    });

    let disk_before = disk_reference(dir.path());
    let (cycles, elapsed, committing) =
        commit_cycles(&store, &runtime, Duration::from_secs(seconds));
    let disk_after = disk_reference(dir.path());
    let disk = (disk_before + disk_after) / 2.0;
    let per_s = cycles as f64 / elapsed.as_secs_f64();
    println!(
        "commit_cycle: {per_s:.0} cycles/s ({:.0} records/s), disk reference {disk:.0} fdatasync/s \
         ({disk_before:.0} before, {disk_after:.0} after); ratio {:.2}; the commit alone (no sync) \
         {:.0} µs per batch",
        per_s * BATCH as f64,
        per_s / disk,
        committing.as_secs_f64() * 1e6 / cycles as f64
    );

    if std::env::args().nth(2).as_deref() != Some("commit") {
        runtime.block_on(audit_size_and_verify(&store, dir.path()));
        runtime.block_on(listing(&store));
    }
}

/// What the records the commit cycles wrote take on disk, per signing request (an audit record
/// and a nonce record, with their indexes), and how fast `verify_audit` reads them back; the
/// reference, in the same run, is SHA-256 over the same canonical bytes alone (what verifying
/// costs without the database).
async fn audit_size_and_verify(store: &Store, dir: &std::path::Path) {
    let (records, _) = store.audit_head().await.expect("head");
    let c = rusqlite::Connection::open(dir.join("kms.db")).expect("open");
    let pragma = |p: &str| -> i64 {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
            .expect("pragma")
    };
    let used = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
    let started = Instant::now();
    let report = store.verify_audit().await.expect("verify");
    let verify = started.elapsed();
    assert!(report.is_ok(), "{report:?}");
    let events: Vec<AuditEvent> = (0..BATCH as u64).map(event).collect();
    let hashing = Instant::now();
    let mut prev = [0u8; 32];
    for i in 0..records {
        let e = &events[(i % BATCH as u64) as usize];
        prev = hanzo_kms_store::audit::chain_hash(&prev, i + 1, e);
    }
    let hashing = hashing.elapsed();
    let rate = records as f64 / verify.as_secs_f64();
    let hash_rate = records as f64 / hashing.as_secs_f64();
    println!(
        "audit: {records} signing requests take {:.0} bytes each on disk (audit + nonce rows, \
         indexes); verify_audit {rate:.0} records/s, hashing alone {hash_rate:.0} records/s \
         (ratio {:.2})",
        used as f64 / records as f64,
        rate / hash_rate
    );
}

/// Run the committer's loop for `run`; returns the cycles, the time they took, and the time spent
/// in `commit_batch` alone.
fn commit_cycles(
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    run: Duration,
) -> (u64, Duration, Duration) {
    let mut w = store.batch_writer().expect("writer").expect("SQLite");
    let handle = runtime.handle().clone();
    std::thread::spawn(move || {
        let _rt = handle.enter();
        let nonces: Vec<[u8; 32]> = (0..BATCH).map(|_| [0u8; 32]).collect();
        let mut nonces = nonces;
        let events: Vec<AuditEvent> = (0..BATCH as u64).map(event).collect();
        let started = Instant::now();
        let mut cycles = 0u64;
        let mut counter = 0u64;
        let mut committing = Duration::ZERO;
        while started.elapsed() < run {
            for n in nonces.iter_mut() {
                counter += 1;
                n[..8].copy_from_slice(&counter.to_be_bytes());
                n[8..16]
                    .copy_from_slice(&counter.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            }
            let pairs: Vec<(&str, &[u8])> =
                nonces.iter().map(|n| ("poai:acme:gpt4", &n[..])).collect();
            let q = BatchQuery {
                nonces: &pairs,
                attestations: &[],
                now: 1,
            };
            let commit_started = Instant::now();
            let (_, pending) = w
                .commit_batch(q, |reads| {
                    assert!(reads.nonces.is_empty());
                    let writes = BatchWrites {
                        nonces: nonces
                            .iter()
                            .map(|n| NonceRow {
                                key: "poai:acme:gpt4",
                                nonce: n,
                                digest: &n[..],
                                signature: Some(&n[..]),
                                expires_at: i64::MAX,
                            })
                            .collect(),
                        consumed: Vec::new(),
                        events: events.iter().map(Cow::Borrowed).collect(),
                    };
                    (writes, ())
                })
                .expect("commit");
            committing += commit_started.elapsed();
            pending
                .expect("written")
                .durable_blocking()
                .expect("durable");
            w.catch_up().expect("catch up");
            w.bound_wal().expect("bound");
            cycles += 1;
        }
        (cycles, started.elapsed(), committing)
    })
    .join()
    .expect("the committer thread")
}

/// `fdatasync`s per second of 4 KiB appends to a fresh file in `dir`, for one second.
fn disk_reference(dir: &std::path::Path) -> f64 {
    let path = dir.join("disk-reference");
    let mut f = std::fs::File::create(&path).expect("a reference file");
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        f.write_all(&block).expect("append");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    n as f64 / started.elapsed().as_secs_f64()
}

async fn create_keys(s: &Store, tenant: &str, prefix: &str, from: usize, to: usize) {
    let mut tx = s.begin_write().await.expect("begin");
    for i in from..to {
        let name = KeyName::new(
            Purpose::Data,
            tenant,
            &format!("{prefix}{i}"),
            Separator::default(),
        )
        .expect("a name");
        tx.insert_key(&KeyMeta {
            name: name.clone(),
            algorithm: Algorithm::Aes256Gcm,
            origin: Origin::Software,
            provider: "software".into(),
            state: KeyState::Enabled,
            primary_version: 1,
            rotation_period_secs: None,
            created_at: 1,
            rotated_at: 1,
            destroy_at: None,
        })
        .await
        .expect("insert");
        let v = KeyVersion {
            version: 1,
            state: KeyState::Enabled,
            created_at: 1,
            public_key: None,
        };
        tx.insert_version(&name, &v, "software", &KeyHandle::new(vec![1; 80]))
            .await
            .expect("version");
    }
    tx.commit(&[event(0)]).await.expect("commit");
}

/// Microseconds per call of `f`: the median of 5 rounds, each calling it for 0.3 s (at least
/// once).
async fn micros<F, Fut>(mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || started.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(f().await);
            calls += 1;
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

async fn listing(s: &Store) {
    create_keys(s, "beta", "own", 0, 5).await;
    let mut have = 0;
    for target in [0usize, 300, 3000] {
        create_keys(s, "acme", "k", have, target).await;
        have = target;
        let tenant = micros(|| async {
            s.list_keys_of(Some("beta"), "data:acme:k")
                .await
                .expect("list")
                .len()
        })
        .await;
        let all = micros(|| async {
            s.list_keys_of(None, "data:acme:k")
                .await
                .expect("list")
                .len()
        })
        .await;
        println!(
            "list_keys_of: {target:>4} keys of another tenant match the prefix: tenant listing {tenant:.0} µs, all-tenant listing {all:.0} µs"
        );
    }
}
