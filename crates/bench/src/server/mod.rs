//! `hanzo-kms-bench server`: the REST API under load on loopback.
//!
//! A small keep-alive HTTP/1.1 client of our own (one request in flight per connection) drives
//! `POST /v1/poai/sign` (fresh nonce each time: a durable nonce record per request) and
//! `POST /v1/keys/{name}/encrypt` of 1 KiB (a durable audit record per request), and
//! `POST /v1/hmm/sign` (a settlement of a batch item signed ahead: its verification, a nonce record and a
//! consumed-attestation row), all group committed. With several `--url`s (nodes of one
//! PostgreSQL store) the connections are spread over the nodes. It
//! reports requests per second, latency percentiles, and commits and fsyncs per request from the
//! server's own `/metrics` (on SQLite one fsync of the WAL covers every commit before it; the
//! checkpoints that copy the WAL into the database run beside them and are counted too, at one
//! or two fsyncs each; on PostgreSQL each commit is one WAL flush of the database server).
//! The load runs on an async runtime of the bench's own, and the CPU time its threads took is
//! reported per request beside each figure: the CPU that the generator, not the server, spent
//! on each request.
//!
//! Two references are measured in the same run, at its start and again at its end: raw
//! libsecp256k1 signing (the CPU; the rate targets are scaled by it, see [`DESIGN_RAW_SIGN_2`])
//! and the disk's own `fdatasync` latency after a 4 KiB append (every durable request waits for
//! at least one such sync, so the latency figures cannot be lower; the p99 target stays absolute).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hanzo_kms_core::{Config, Error, ErrorKind, Result};
use hanzo_kms_server::{Options, Server};
use hanzo_kms_service::{Kms, RequestCtx, Role, Settings};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::output::Out;
use crate::sign;

/// The server issue's targets were set for DESIGN.md §2's machine (2 vCPU Zen 4), where raw
/// libsecp256k1 signs 85,000/s on two threads. The bench measures the same reference on the
/// machine it runs on, in the same run, and scales each target by the ratio: a shared 2-vCPU
/// host that signs at two thirds of that speed is held to two thirds of each rate. The
/// reference is signing as DESIGN.md measured it, with a context randomized once
/// ([`crate::sign::raw_sign_rate`]); signing as the server does, with a fresh blinding
/// every 16 signatures, is reported beside it.
const DESIGN_RAW_SIGN_2: f64 = 85_000.0;
/// REST PoAI sign at concurrency 16 (req/s on the design machine).
const TARGET_REST_SIGN: f64 = 15_000.0;
/// gRPC batched PoAI sign (attestations/s on the design machine).
const TARGET_GRPC_BATCH: f64 = 40_000.0;
/// p99 under this many ms …
const TARGET_P99_MS: f64 = 5.0;
/// … at this offered rate (req/s on the design machine).
const TARGET_P99_RATE: f64 = 5_000.0;

/// Raw libsecp256k1 signatures per second on two threads by `sign_rate`, measured off the
/// async runtime.
async fn reference(secs: f64, sign_rate: fn(usize, f64) -> f64) -> Result<f64> {
    tokio::task::spawn_blocking(move || sign_rate(2, secs))
        .await
        .map_err(|_| Error::internal("the reference measurement panicked"))
}

/// Seconds (at most) each disk reference runs.
const DISK_REFERENCE_SECS: f64 = 1.0;

/// The disk's own latency for what every durable commit waits on: appends of 4 KiB (a WAL
/// frame's page) to a fresh file in `dir`, each followed by `fdatasync`, for up to `secs` and
/// between 100 and 5,000 times. Returns the latencies in ms, sorted. The file is a named
/// temporary file, removed when done, also on an error.
fn disk_sync_latencies(dir: &Path, secs: f64) -> Result<Vec<f64>> {
    let fail = |e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("measuring fdatasync in {} (--disk-dir)", dir.display()),
        )
        .with_source(e)
    };
    let probe = tempfile::Builder::new()
        .prefix(".hanzo-kms-bench-fsync-")
        .tempfile_in(dir)
        .map_err(fail)?;
    let mut f = probe.as_file();
    let page = [0x5au8; 4096];
    let (start, mut lat) = (Instant::now(), Vec::new());
    while lat.len() < 100 || (lat.len() < 5_000 && start.elapsed().as_secs_f64() < secs) {
        f.write_all(&page).map_err(fail)?;
        let t = Instant::now();
        f.sync_data().map_err(fail)?;
        lat.push(t.elapsed());
    }
    Ok(sorted_ms(&lat))
}

/// The `p` quantile of sorted figures (`None` for none).
fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
}

/// A latency for the text report; "–" when nothing was measured.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2} ms"))
}

/// Durations in ms, sorted.
fn sorted_ms(d: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// [`disk_sync_latencies`] off the async runtime: (p50, p99, syncs) in ms.
async fn disk_reference(dir: PathBuf) -> Result<(f64, f64, usize)> {
    let lat = tokio::task::spawn_blocking(move || disk_sync_latencies(&dir, DISK_REFERENCE_SECS))
        .await
        .map_err(|_| Error::internal("the disk reference panicked"))??;
    // At least 100 syncs were timed.
    let q = |p| quantile(&lat, p).unwrap_or_default();
    Ok((q(0.50), q(0.99), lat.len()))
}

/// Open-loop pacing. Request k (counted over all workers) is due at start + k / `rate` and
/// goes to worker k mod `workers`, so the workers' requests interleave evenly. A thread of its
/// own sleeps until each due time and hands it to that worker, until `deadline`; a worker still
/// busy with its previous request finds it waiting and sends at once. tokio's timer would not
/// do: it rounds every sleep up to a whole millisecond, and requests were measured going out
/// 1.1 ms after they were due at p50 (up to 2 ms), which the latency figures would have charged
/// to the server.
fn pacer(
    rate: f64,
    workers: usize,
    deadline: Instant,
) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<Instant>>> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let start = Instant::now();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for k in 0u64.. {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if due >= deadline {
                    break;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                // A worker that stopped (its request failed) ends the run.
                if txs[(k % txs.len() as u64) as usize].send(due).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::internal("could not start the bench's pacer thread").with_source(e))?;
    Ok(rxs)
}

/// What a load worker sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `POST /v1/poai/sign`, a fresh nonce each time.
    RestSign,
    /// `POST /v1/keys/data:bench:d/encrypt` of 1 KiB.
    RestEncrypt,
    /// `POST /v1/hmm/sign`: a settlement of an attestation signed ahead (as a batch item).
    RestSettle,
    /// gRPC `SignPoai`, one attestation a call: the REST figure's work over HTTP/2 and
    /// protobuf instead of HTTP/1.1 and JSON.
    GrpcSign,
    /// gRPC `SignPoaiBatch` of `batch` attestations (one signature over their Merkle root).
    GrpcBatch(usize),
}

/// Settings of one run.
pub struct LoadSettings<'a> {
    /// Running servers (nodes of one store); empty starts one in-process.
    pub urls: &'a [String],
    pub grpc_url: Option<&'a str>,
    pub token: Option<&'a str>,
    pub concurrency: usize,
    pub seconds: f64,
    pub batch: usize,
    /// Open-loop rate for the latency figures (0: skip them).
    pub rate: f64,
    /// Seconds each latency figure runs at its rate before it counts.
    pub warmup: f64,
    /// Attestations carry nonces that sort by time (else none: the server fills random ones).
    pub ordered_nonces: bool,
    /// Where to measure the disk reference (default: the in-process server's data directory,
    /// or the system's temporary directory).
    pub disk_dir: Option<&'a Path>,
    /// Nonce records to sign into the store before the figures.
    pub prefill: u64,
}

/// The load of one figure: which requests, to where, and when.
struct Load {
    work: Workload,
    addrs: Vec<String>,
    grpc: Option<String>,
    token: String,
    ordered: bool,
    /// Connections, one worker each.
    concurrency: usize,
    /// Open loop at this many requests per second (paced by [`pacer`]), or closed loop.
    pace: Option<f64>,
    /// Requests due (open loop) or completed (closed loop) before this are not counted.
    t: Instant,
    deadline: Instant,
    /// An open-loop backlog still unsent by then is counted as never sent.
    give_up: Instant,
}

/// What the load of one figure measured.
struct Outcome {
    lat: Vec<Duration>,
    late: Vec<Duration>,
    items: u64,
    completed: u64,
    unsent: usize,
    /// Every request sent, the warm-up's and the backlog's too.
    sent: u64,
    /// The load threads' CPU time from the first request to the last answer, where the
    /// kernel reports it.
    cpu: Option<Duration>,
}

/// Runs `load` on an async runtime of its own, whose threads are all named
/// [`LOAD_THREAD`], and returns its outcome when every worker is done.
///
/// Client and server share the machine's cores, and each microsecond the load generator spends
/// is one the server does not get. On a runtime of its own the generator's CPU time can be read
/// from the kernel, thread by thread; it is reported with each figure (µs per request), so that
/// a generator that became the bottleneck, or took a large share of the cores, would show.
/// The runtime keeps tokio's default of a worker per core. A single thread was tried in session
/// 13: the closed-loop figures did not move beyond this host's noise, and the open-loop ones got
/// worse, their requests going out up to 118 ms (p99) after they were due, because the one thread
/// waited for a core behind the server's (docs/benchmarks.md).
fn spawn_load(load: Load) -> Result<tokio::sync::oneshot::Receiver<Result<Outcome>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(LOAD_THREAD.into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .thread_name(LOAD_THREAD)
                .enable_all()
                .build()
                .map_err(|e| Error::internal("starting the bench's load runtime").with_source(e))
                .and_then(|rt| {
                    let outcome = rt.block_on(run_load(load));
                    // A blocking task still running (a name lookup that hangs) must not hang
                    // the bench.
                    rt.shutdown_timeout(Duration::from_secs(1));
                    outcome
                });
            let _ = tx.send(outcome);
        })
        .map_err(|e| Error::internal("could not start the bench's load thread").with_source(e))?;
    Ok(rx)
}

async fn run_load(load: Load) -> Result<Outcome> {
    let Load {
        work,
        concurrency,
        pace,
        addrs,
        grpc,
        token,
        ordered,
        t,
        deadline,
        give_up,
    } = load;
    // Every connection is open before the first request is due.
    let mut clients = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        clients.push(match work {
            Workload::GrpcSign | Workload::GrpcBatch(_) => {
                Client::Grpc(grpc_client(grpc.as_deref().unwrap_or_default()).await?)
            }
            _ => Client::Rest(Conn::open(&addrs[w % addrs.len()]).await?),
        });
    }
    let dues: Vec<Option<_>> = match pace {
        Some(r) => pacer(r, concurrency, deadline)?
            .into_iter()
            .map(Some)
            .collect(),
        None => std::iter::repeat_with(|| None).take(concurrency).collect(),
    };
    let cpu_before = generator_cpu();
    let token: Arc<str> = token.into();
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(dues)
        .enumerate()
        .map(|(w, (mut client, mut due_times))| {
            let token = token.clone();
            tokio::spawn(async move {
                let (mut lat, mut late) = (Vec::new(), Vec::new());
                let (mut items, mut completed) = (0u64, 0u64);
                let (mut i, mut unsent) = (0u64, 0usize);
                loop {
                    // Open loop: the pacer says when each request was due, and its latency
                    // counts from then (no coordinated omission). A server that cannot keep
                    // up leaves a backlog, which is still sent, for as long again as the
                    // figure itself; what is left then is counted as not sent. Closed loop:
                    // now, until the deadline.
                    let due = match due_times.as_mut() {
                        Some(rx) => match rx.recv().await {
                            Some(_) if Instant::now() > give_up => {
                                unsent = 1 + rx.len();
                                break;
                            }
                            Some(due) => due,
                            None => break,
                        },
                        None if Instant::now() < deadline => Instant::now(),
                        None => break,
                    };
                    let sent = Instant::now();
                    let n = one(&mut client, work, &token, (w, i), ordered).await?;
                    // Throughput counts what completed in the measured time, even a backlog
                    // left from the warm-up; latency only what was due in it.
                    if Instant::now() >= t {
                        items += n;
                        completed += 1;
                    }
                    if due >= t {
                        lat.push(due.elapsed());
                        late.push(sent.saturating_duration_since(due));
                    }
                    i += 1;
                }
                Ok::<_, Error>((lat, late, items, completed, unsent, i))
            })
        })
        .collect();
    let mut o = Outcome {
        lat: Vec::new(),
        late: Vec::new(),
        items: 0,
        completed: 0,
        unsent: 0,
        sent: 0,
        cpu: None,
    };
    for task in tasks {
        let (l, s, n, c, u, i) = task
            .await
            .map_err(|_| Error::internal("a load task panicked"))??;
        o.lat.extend(l);
        o.late.extend(s);
        o.items += n;
        o.completed += c;
        o.unsent += u;
        o.sent += i;
    }
    o.cpu = cpu_before
        .zip(generator_cpu())
        .map(|(b, a)| generator_cpu_since(&b, &a));
    Ok(o)
}

/// The name of every thread of the load generator's runtime.
const LOAD_THREAD: &str = "bench-load";

/// CPU time so far of each of this process's [`LOAD_THREAD`]s, by thread id, from the kernel's
/// scheduler statistics (`/proc/self/task/*/schedstat`, nanoseconds on a CPU), if it has them.
fn generator_cpu() -> Option<std::collections::HashMap<u64, u64>> {
    let mut by_thread = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
        if let (true, Some(tid), Some(ns)) = (comm.trim_end() == LOAD_THREAD, tid, ns) {
            by_thread.insert(tid, ns);
        }
    }
    (!by_thread.is_empty()).then_some(by_thread)
}

/// The load threads' CPU time between two [`generator_cpu`] readings (a thread started since
/// counts from zero; one that ended since is not counted).
fn generator_cpu_since(
    before: &std::collections::HashMap<u64, u64>,
    after: &std::collections::HashMap<u64, u64>,
) -> Duration {
    Duration::from_nanos(
        after
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum(),
    )
}

/// One worker's connection.
enum Client {
    Rest(Conn),
    Grpc(hanzo_kms_proto::v1::kms_client::KmsClient<tonic::transport::Channel>),
}

pub async fn run(s: LoadSettings<'_>, out: &Out) -> Result<ExitCode> {
    let concurrency = s.concurrency.max(1);
    let secs = s.seconds;
    let mut local = None;
    let (addrs, grpc, token) = match (s.urls, s.token) {
        (urls, None) if !urls.is_empty() => {
            return Err(Error::invalid(
                "--url needs a token: --token-file FILE, HANZO_KMS_TOKEN or --token",
            ));
        }
        (urls, Some(t)) if !urls.is_empty() => (
            urls.iter()
                .map(|u| addr_of(u))
                .collect::<Result<Vec<_>>>()?,
            s.grpc_url.map(addr_of).transpose()?,
            t.to_owned(),
        ),
        _ => {
            let (addr, grpc, token, dir, stop) = start_local().await?;
            local = Some((dir, stop));
            (vec![addr], Some(grpc), token)
        }
    };
    let addr = addrs[0].clone();
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    say(format!(
        "bench server: REST {}, gRPC {}, {concurrency} connections, {secs} s per figure (latency figures after {} s at their rate, not counted); PoAI nonces {}",
        addrs.join(" + "),
        grpc.as_deref().unwrap_or("(not given: --grpc-url)"),
        s.warmup.max(0.0),
        if s.ordered_nonces {
            "sorted by time (--ordered-nonces)"
        } else {
            "filled by the server (random)"
        }
    ));
    // Setup: a keyspace and a data key for tenant `bench` (ignore "already exists").
    let mut c = Conn::open(&addr).await?;
    c.call(
        "POST",
        "/v1/keyspaces",
        &token,
        r#"{"customer":"bench","model":"m"}"#,
    )
    .await?;
    c.call("POST", "/v1/keys", &token, r#"{"name":"data:bench:d"}"#)
        .await?;
    let prefilled = if s.prefill > 0 {
        let g = grpc.as_deref().ok_or_else(|| {
            Error::invalid("--prefill signs through gRPC: give the server's --grpc-url too")
        })?;
        let t = Instant::now();
        prefill(g, &token, s.prefill, s.ordered_nonces).await?;
        let took = t.elapsed().as_secs_f64();
        // The prefill leaves the server's background checkpoint a large backlog of scattered
        // pages (on SQLite the WAL grew to 6 GB during 60 s of it, and took about a third of
        // that time to be written out); measured without a long enough pause, the first figure
        // ran at a third of its rate while the ones a few seconds later did not.
        let settle = (took / 2.0).clamp(PREFILL_SETTLE_SECS.0, PREFILL_SETTLE_SECS.1);
        say(format!(
            "  prefilled the replay index with {} nonce records (SignPoaiBatch of {PREFILL_BATCH}) in {took:.1} s; waiting {settle:.1} s for the server to write them out",
            s.prefill
        ));
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        Some(json!({"nonces": s.prefill, "seconds": took, "settle_seconds": settle}))
    } else {
        None
    };
    // The same-run reference (see DESIGN_RAW_SIGN_2), again at the end.
    let ref_before = reference(secs.min(2.0), sign::raw_sign_rate).await?;
    let as_server = reference(secs.min(2.0), sign::server_sign_rate).await?;
    let speed = ref_before / DESIGN_RAW_SIGN_2;
    say(format!(
        "  reference: raw libsecp256k1 sign, 2 threads, context randomized once (as DESIGN.md measured): {ref_before:.0}/s = {speed:.2}× DESIGN.md's machine (85,000/s); targets below are scaled by {speed:.2}"
    ));
    say(format!(
        "  as the server signs (its context blinded afresh every {} signatures): {as_server:.0}/s ({:.2}× the reference)",
        hanzo_kms_crypto::secp::SIGNATURES_PER_SEED,
        as_server / ref_before
    ));
    let disk_dir = match (s.disk_dir, &local) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some((dir, _))) => dir.clone(),
        (None, None) => std::env::temp_dir(),
    };
    let disk_before = disk_reference(disk_dir.clone()).await?;
    say(format!(
        "  reference: this disk's fdatasync after a 4 KiB append, in {}: p50 {:.2} ms, p99 {:.2} ms ({} syncs). Every durable request waits for at least one; the p99 target is not scaled by it",
        disk_dir.display(),
        disk_before.0,
        disk_before.1,
        disk_before.2
    ));
    let scaled_rate = (TARGET_P99_RATE * speed).round().max(1.0);
    let mut figures: Vec<(String, Workload, Option<f64>)> = vec![
        ("poai_sign".into(), Workload::RestSign, None),
        ("encrypt_1kib".into(), Workload::RestEncrypt, None),
        ("hmm_settle".into(), Workload::RestSettle, None),
    ];
    if grpc.is_some() {
        figures.push(("grpc_poai_sign".into(), Workload::GrpcSign, None));
        figures.push((
            format!("grpc_poai_batch_{}", s.batch),
            Workload::GrpcBatch(s.batch.max(1)),
            None,
        ));
    }
    if s.rate > 0.0 && (scaled_rate - s.rate).abs() > 0.5 {
        figures.push((
            format!("poai_sign@{scaled_rate}/s"),
            Workload::RestSign,
            Some(scaled_rate),
        ));
        figures.push((
            format!("encrypt_1kib@{scaled_rate}/s"),
            Workload::RestEncrypt,
            Some(scaled_rate),
        ));
    }
    if s.rate > 0.0 {
        figures.push((
            format!("poai_sign@{}/s", s.rate),
            Workload::RestSign,
            Some(s.rate),
        ));
        figures.push((
            format!("encrypt_1kib@{}/s", s.rate),
            Workload::RestEncrypt,
            Some(s.rate),
        ));
    }
    let mut report = serde_json::Map::new();
    for (name, work, pace) in figures {
        // A latency figure first runs `warmup` seconds at its rate; requests due before `t`
        // are not counted.
        let warmup = match pace {
            Some(_) => Duration::from_secs_f64(s.warmup.max(0.0)),
            None => Duration::ZERO,
        };
        let mut before = if warmup.is_zero() {
            Some(commits(&addrs).await?)
        } else {
            None
        };
        let t = Instant::now() + warmup;
        let deadline = t + Duration::from_secs_f64(secs);
        let give_up = deadline + Duration::from_secs_f64(secs);
        let load = spawn_load(Load {
            work,
            concurrency,
            pace,
            addrs: addrs.clone(),
            grpc: grpc.clone(),
            token: token.clone(),
            ordered: s.ordered_nonces,
            t,
            deadline,
            give_up,
        })?;
        let before = match before.take() {
            Some(b) => b,
            None => {
                tokio::time::sleep_until(t.into()).await;
                commits(&addrs).await?
            }
        };
        let Outcome {
            lat,
            late,
            items,
            completed,
            unsent,
            sent,
            cpu,
        } = load
            .await
            .map_err(|_| Error::internal("the bench's load thread stopped"))??;
        let elapsed = t.elapsed().as_secs_f64();
        let after = commits(&addrs).await?;
        let (lat, late) = (sorted_ms(&lat), sorted_ms(&late));
        let pct = |p: f64| quantile(&lat, p);
        let rate = completed as f64 / elapsed;
        let item_rate = items as f64 / elapsed;
        // The group committer starts with the first signing request, so "before" may be absent.
        // SQLite: the WAL syncs that answers wait for, and the checkpoints that run beside them
        // on the same disk with syncs of their own.
        let (per_request, fsyncs_per_request, checkpoints) =
            match (before.unwrap_or_default(), after) {
                (b, Some(a)) if a.requests > b.requests => {
                    let n = (a.requests - b.requests) as f64;
                    let per = |x: Option<u64>, y: Option<u64>| {
                        x.zip(y.or(Some(0)))
                            .map(|(x, y)| x.saturating_sub(y) as f64 / n)
                    };
                    (
                        Some((a.transactions - b.transactions) as f64 / n),
                        per(a.fsyncs, b.fsyncs),
                        per(a.checkpoints, b.checkpoints),
                    )
                }
                _ => (None, None, None),
            };
        let commits_note = match (per_request, fsyncs_per_request, checkpoints) {
            (Some(c), Some(f), Some(k)) => format!(
                "{c:.3} commits, {f:.3} fsyncs + {k:.3} checkpoints (1–2 fsyncs each) per request"
            ),
            (Some(c), Some(f), None) => format!("{c:.3} commits, {f:.3} fsyncs per request"),
            (Some(c), None, _) => format!("{c:.3} commits (WAL flushes) per request"),
            _ => "commits per request not reported by this server".to_owned(),
        };
        // How busy the committer was, and its cycle: when it is busy nearly all the time, its
        // commit and sync per transaction are the ceiling of the durable operations.
        let committer = match (before.unwrap_or_default(), after) {
            (b, Some(a)) if a.transactions > b.transactions => {
                a.phases.zip(b.phases.or(Some([0.0; 4]))).map(|(x, y)| {
                    let d: Vec<f64> = x.iter().zip(y).map(|(x, y)| (x - y).max(0.0)).collect();
                    let per_tx = |s: f64| s * 1e6 / (a.transactions - b.transactions) as f64;
                    (
                        d.iter().sum::<f64>() / elapsed / addrs.len() as f64,
                        per_tx(d[0]),
                        per_tx(d[1]),
                        per_tx(d[3]),
                    )
                })
            }
            _ => None,
        };
        let commits_note = match committer {
            Some((busy, commit, sync, checkpoint)) => format!(
                "{commits_note}; committer busy {:.0} % ({commit:.0} µs commit + {sync:.0} µs sync + {checkpoint:.0} µs checkpoint per transaction)",
                busy * 100.0
            ),
            None => commits_note,
        };
        // A request's own waits on the committer: for the batch in progress to end, and for a
        // core once answered. With the cycle above they make up its time in the committer.
        let waits = match (before.unwrap_or_default(), after) {
            (b, Some(a)) if a.requests > b.requests => {
                a.waits.zip(b.waits.or(Some([0.0; 2]))).map(|(x, y)| {
                    let per =
                        |i: usize| (x[i] - y[i]).max(0.0) * 1e6 / (a.requests - b.requests) as f64;
                    (per(0), per(1))
                })
            }
            _ => None,
        };
        let commits_note = match waits {
            Some((queue, wakeup)) => format!(
                "{commits_note}; a request waited {queue:.0} µs for its batch and {wakeup:.0} µs to run again once answered"
            ),
            None => commits_note,
        };
        // The load generator's own CPU per request, taken from the server's two cores.
        let generator_us = cpu
            .filter(|_| sent > 0)
            .map(|c| c.as_secs_f64() * 1e6 / sent as f64);
        let commits_note = match generator_us {
            Some(us) => format!("{commits_note}; load generator {us:.1} µs CPU per request"),
            None => commits_note,
        };
        let items_note = match work {
            Workload::GrpcBatch(_) => format!("  = {item_rate:.0} attestations/s"),
            _ => String::new(),
        };
        // How late the requests went out (open loop only). Latency counts from when a request
        // was due, so this is part of it: at the median, the pacer's and the bench runtime's
        // wake-ups; in the tail, mostly a connection still waiting for its previous answer.
        let late_note = match pace {
            Some(_) => format!(
                "   (sent after due: p50 {}, p99 {}{})",
                ms(quantile(&late, 0.50)),
                ms(quantile(&late, 0.99)),
                match unsent {
                    0 => String::new(),
                    n => format!("; {n} due requests never sent: the server fell behind"),
                }
            ),
            None => String::new(),
        };
        // The issue's target for this figure, scaled to this machine.
        let target = match (work, pace) {
            (Workload::RestSign, None) => Some((
                TARGET_REST_SIGN * speed,
                rate >= TARGET_REST_SIGN * speed,
                format!("≥ {:.0} req/s", TARGET_REST_SIGN * speed),
            )),
            (Workload::GrpcBatch(_), None) => Some((
                TARGET_GRPC_BATCH * speed,
                item_rate >= TARGET_GRPC_BATCH * speed,
                format!("≥ {:.0} attestations/s", TARGET_GRPC_BATCH * speed),
            )),
            (Workload::RestSign | Workload::RestEncrypt, Some(p)) if p == scaled_rate => Some((
                TARGET_P99_MS,
                pct(0.99).is_some_and(|p99| p99 < TARGET_P99_MS) && rate >= 0.98 * p && unsent == 0,
                format!("p99 < {TARGET_P99_MS} ms, sustained"),
            )),
            _ => None,
        };
        let target_note = match &target {
            Some((_, met, what)) => format!(
                "   target (scaled) {what}: {}",
                if *met { "met" } else { "MISSED" }
            ),
            None => String::new(),
        };
        say(format!(
            "  {name:<22} {rate:>8.0} req/s{items_note}   p50 {}  p95 {}  p99 {}   {commits_note}{target_note}{late_note}",
            ms(pct(0.50)),
            ms(pct(0.95)),
            ms(pct(0.99))
        ));
        report.insert(
            name,
            json!({"requests_per_s": rate, "items_per_s": item_rate, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
                   "requests": lat.len(), "completed": completed, "commits_per_request": per_request, "fsyncs_per_request": fsyncs_per_request.or(per_request), "checkpoints_per_request": checkpoints, "committer_busy": committer.map(|c| c.0), "commit_us_per_transaction": committer.map(|c| c.1), "sync_us_per_transaction": committer.map(|c| c.2), "checkpoint_us_per_transaction": committer.map(|c| c.3), "queue_us_per_request": waits.map(|w| w.0), "wakeup_us_per_request": waits.map(|w| w.1), "offered_rate": pace,
                   "scaled_target": target.as_ref().map(|t| t.0), "target_met": target.as_ref().map(|t| t.1),
                   "sent_after_due_p50_ms": pace.map(|_| quantile(&late, 0.50)), "sent_after_due_p99_ms": pace.map(|_| quantile(&late, 0.99)),
                   "unsent": pace.map(|_| unsent), "generator_cpu_us_per_request": generator_us}),
        );
    }
    let ref_after = reference(secs.min(2.0), sign::raw_sign_rate).await?;
    say(format!(
        "  reference again: {ref_after:.0}/s ({:+.0} % against the start; a large drift means the machine's load changed during the run)",
        (ref_after / ref_before - 1.0) * 100.0
    ));
    let disk_after = disk_reference(disk_dir.clone()).await?;
    say(format!(
        "  disk reference again: fdatasync p50 {:.2} ms, p99 {:.2} ms ({} syncs)",
        disk_after.0, disk_after.1, disk_after.2
    ));
    if out.json {
        let disk = |d: (f64, f64, usize)| json!({"p50_ms": d.0, "p99_ms": d.1, "syncs": d.2});
        out.json(&json!({"concurrency": concurrency, "seconds": secs, "results": report, "prefill": prefilled,
                         "reference": {"raw_sign_2_threads_before": ref_before, "raw_sign_2_threads_after": ref_after,
                                       "server_sign_2_threads": as_server,
                                       "design_machine": DESIGN_RAW_SIGN_2, "speed": speed,
                                       "disk_fdatasync_4kib": {"dir": disk_dir, "before": disk(disk_before), "after": disk(disk_after)}}}));
    }
    if let Some((dir, stop)) = local {
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

async fn grpc_client(
    addr: &str,
) -> Result<hanzo_kms_proto::v1::kms_client::KmsClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::invalid(format!("--grpc-url: {e}")))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("connecting to {addr}")).with_source(e)
        })?;
    Ok(hanzo_kms_proto::v1::kms_client::KmsClient::new(ch))
}

fn attestation(
    w: usize,
    i: u64,
    now: i64,
    ordered: bool,
) -> Result<hanzo_kms_proto::v1::PoAiAttestation> {
    let nonce = if ordered {
        Some(hanzo_kms_client::time_ordered_nonce()?.to_hex())
    } else {
        None
    };
    Ok(hanzo_kms_proto::v1::PoAiAttestation {
        model_id: "bench:m".into(),
        input_hash: format!("0x{i:064x}"),
        output_hash: format!("0x{w:064x}"),
        timestamp: u64::try_from(now).unwrap_or(0),
        compute_time_ms: 1,
        node_id: format!("n{w}"),
        nonce,
    })
}

/// Attestations a settle worker signs ahead, in one batch.
const SETTLE_AHEAD: u64 = 64;

/// Attestations per SignPoaiBatch call of `--prefill`.
const PREFILL_BATCH: u64 = 1024;
/// After `--prefill`, the bench waits half the prefill's time, within these bounds (seconds),
/// before the first figure.
const PREFILL_SETTLE_SECS: (f64, f64) = (2.0, 60.0);

/// Sign `n` attestations through SignPoaiBatch on eight connections: `n` nonce records.
async fn prefill(addr: &str, token: &str, n: u64, ordered: bool) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut client = Client::Grpc(grpc_client(addr).await?);
        let (next, token) = (next.clone(), token.to_owned());
        tasks.spawn(async move {
            loop {
                let from = next.fetch_add(PREFILL_BATCH, Ordering::Relaxed);
                if from >= n {
                    return Ok::<_, Error>(());
                }
                let size = (n - from).min(PREFILL_BATCH) as usize;
                let work = Workload::GrpcBatch(size);
                one(
                    &mut client,
                    work,
                    &token,
                    (w, from / PREFILL_BATCH),
                    ordered,
                )
                .await
                .map_err(|e| Error::new(e.kind(), format!("--prefill: {}", e.message())))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|_| Error::internal("a --prefill task stopped"))??;
    }
    Ok(())
}

/// A gRPC request carrying `token` as its bearer token.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// One request of `work`; returns the items it covered.
async fn one(
    client: &mut Client,
    work: Workload,
    token: &str,
    (w, i): (usize, u64),
    ordered: bool,
) -> Result<u64> {
    let now = hanzo_kms_service::now_secs();
    match (client, work) {
        (Client::Rest(c), Workload::RestSettle) => {
            // Each settlement pays for an attestation of its own, which it consumes: the
            // worker signs them ahead, SETTLE_AHEAD at a time in one batch (one signature),
            // and settles one batch item per request.
            if c.paid.is_empty() {
                let atts = (0..SETTLE_AHEAD)
                    .map(|k| attestation(w, i * SETTLE_AHEAD + k, now, ordered))
                    .collect::<Result<Vec<_>>>()?;
                // The protobuf message writes an absent nonce as `null`, which the API refuses.
                let mut body = json!({"key": "poai:bench:m", "attestations": atts});
                hanzo_kms_core::eip712::drop_nulls(&mut body);
                let body = body.to_string();
                let status = c.call("POST", "/v1/poai/sign-batch", token, &body).await?;
                let items: Vec<serde_json::Value> =
                    serde_json::from_slice(&c.last_body).map_err(|_| {
                        Error::new(
                            ErrorKind::Unavailable,
                            format!("/v1/poai/sign-batch answered {status}"),
                        )
                    })?;
                c.paid = items.into_iter().rev().collect();
            }
            let item = c
                .paid
                .pop()
                .ok_or_else(|| Error::internal("no batch item to settle"))?;
            let digest = item["digest"].as_str().unwrap_or_default().to_owned();
            let body = format!(
                r#"{{"key":"hmm:bench:m","settlement":{{"job_id":"job-{w}-{i}","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"1000","attestation_digest":"{digest}","timestamp":{now}}},"attestation_item":{item}}}"#
            );
            let status = c.call("POST", "/v1/hmm/sign", token, &body).await?;
            if status != 200 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("/v1/hmm/sign answered {status}"),
                ));
            }
            Ok(1)
        }
        (Client::Rest(c), Workload::RestSign | Workload::RestEncrypt) => {
            let (path, body) = if work == Workload::RestSign {
                let a = attestation(w, i, now, ordered)?;
                let nonce = a
                    .nonce
                    .map(|n| format!(r#","nonce":"{n}""#))
                    .unwrap_or_default();
                (
                    "/v1/poai/sign".to_owned(),
                    format!(
                        r#"{{"key":"poai:bench:m","attestation":{{"model_id":"{}","input_hash":"{}","output_hash":"{}","timestamp":{},"compute_time_ms":1,"node_id":"{}"{nonce}}}}}"#,
                        a.model_id, a.input_hash, a.output_hash, a.timestamp, a.node_id
                    ),
                )
            } else {
                let kib = base64::engine::general_purpose::STANDARD.encode([0x42u8; 1024]);
                (
                    "/v1/keys/data:bench:d/encrypt".to_owned(),
                    format!(r#"{{"plaintext":"{kib}"}}"#),
                )
            };
            let status = c.call("POST", &path, token, &body).await?;
            if status != 200 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("{path} answered {status}"),
                ));
            }
            Ok(1)
        }
        (Client::Grpc(g), Workload::GrpcSign) => {
            let req = bearer(
                hanzo_kms_proto::v1::SignPoaiRequest {
                    key: "poai:bench:m".into(),
                    attestation: Some(attestation(w, i, now, ordered)?),
                },
                token,
            );
            g.sign_poai(req)
                .await
                .map_err(|s| Error::new(ErrorKind::Unavailable, format!("SignPoai: {s}")))?;
            Ok(1)
        }
        (Client::Grpc(g), Workload::GrpcBatch(n)) => {
            let atts = (0..n as u64)
                .map(|k| attestation(w, i * n as u64 + k, now, ordered))
                .collect::<Result<_>>()?;
            let req = bearer(
                hanzo_kms_proto::v1::SignPoaiBatchRequest {
                    key: "poai:bench:m".into(),
                    attestations: atts,
                },
                token,
            );
            let items = g
                .sign_poai_batch(req)
                .await
                .map_err(|s| Error::new(ErrorKind::Unavailable, format!("SignPoaiBatch: {s}")))?
                .into_inner()
                .items;
            Ok(items.len() as u64)
        }
        _ => Err(Error::internal("bench: workload and connection disagree")),
    }
}

/// The group committer's and the store's counters from a node's `/metrics`.
#[derive(Clone, Copy, Default)]
struct Counters {
    requests: u64,
    transactions: u64,
    /// WAL syncs (SQLite only).
    fsyncs: Option<u64>,
    /// Checkpoints that copied WAL frames (SQLite only).
    checkpoints: Option<u64>,
    /// The committer's seconds in its commit, sync, answer and checkpoint phases.
    phases: Option<[f64; 4]>,
    /// The requests' seconds waiting for a batch to start, and to run again once answered
    /// (summed over requests).
    waits: Option<[f64; 2]>,
}

/// [`Counters`] from every node's `/metrics`, summed, if the servers report them.
async fn commits(addrs: &[String]) -> Result<Option<Counters>> {
    let add = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
    };
    let mut sum: Option<Counters> = None;
    for a in addrs {
        if let Some(c) = commits_of(a).await? {
            let s = sum.unwrap_or_default();
            sum = Some(Counters {
                requests: s.requests + c.requests,
                transactions: s.transactions + c.transactions,
                fsyncs: add(s.fsyncs, c.fsyncs),
                checkpoints: add(s.checkpoints, c.checkpoints),
                phases: add_each(s.phases, c.phases),
                waits: add_each(s.waits, c.waits),
            });
        }
    }
    Ok(sum)
}

/// Two nodes' figures summed element by element; a node that does not report them adds nothing.
fn add_each<const N: usize>(x: Option<[f64; N]>, y: Option<[f64; N]>) -> Option<[f64; N]> {
    match (x, y) {
        (Some(x), Some(y)) => Some(std::array::from_fn(|i| x[i] + y[i])),
        (x, y) => x.or(y),
    }
}

async fn commits_of(addr: &str) -> Result<Option<Counters>> {
    let mut c = Conn::open(addr).await?;
    c.call("GET", "/metrics", "", "").await?;
    let text = String::from_utf8_lossy(&c.last_body).to_string();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let labelled = |metric: &str, label: &str, value: &str| {
        let name = format!("{metric}{{{label}=\"{value}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let phase = |p: &str| labelled("hanzo_kms_group_commit_seconds_total", "phase", p);
    let wait = |w: &str| {
        labelled(
            "hanzo_kms_group_commit_request_wait_seconds_total",
            "wait",
            w,
        )
    };
    Ok(get("hanzo_kms_group_commit_requests_total ")
        .zip(get("hanzo_kms_group_commit_transactions_total "))
        .map(|(requests, transactions)| Counters {
            requests,
            transactions,
            fsyncs: get("hanzo_kms_store_fsyncs_total "),
            checkpoints: get("hanzo_kms_store_checkpoints_total "),
            phases: ["commit", "sync", "answer"]
                .map(&phase)
                .into_iter()
                .collect::<Option<Vec<f64>>>()
                // A server before session 11 reports no checkpoint phase: 0 there.
                .map(|v| [v[0], v[1], v[2], phase("checkpoint").unwrap_or(0.0)]),
            // Reported since session 17.
            waits: wait("queue").zip(wait("wakeup")).map(|(q, w)| [q, w]),
        }))
}

fn addr_of(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::invalid(format!(
            "--url {url}: only http:// is supported by the bench client"
        ))
    })?;
    Ok(rest.trim_end_matches('/').to_owned())
}

async fn start_local() -> Result<(
    String,
    String,
    String,
    std::path::PathBuf,
    tokio::sync::oneshot::Sender<()>,
)> {
    let mut rnd = [0u8; 6];
    hanzo_kms_crypto::rng::fill(&mut rnd)?;
    let dir = std::env::temp_dir().join(format!("hanzo-kms-bench-server-{}", hex::encode(rnd)));
    let config = Config::from_yaml("", "defaults", std::iter::empty::<(&str, &str)>())?;
    let settings = Settings {
        data_dir: dir.clone(),
        config: config.clone(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    let (_, token) = kms
        .create_token(&RequestCtx::local(), "*", &[Role::Admin], &[], "bench")
        .await?;
    let mut opts = Options::from_config(&config);
    opts.rest_addr = "127.0.0.1:0".into();
    opts.grpc_addr = Some("127.0.0.1:0".into());
    opts.scheduler_every = None;
    let server = Server::bind(kms, None, &opts).await?;
    let addr = server.local_addr()?.to_string();
    let grpc = server
        .grpc_addr()?
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .run(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((addr, grpc, token.expose().to_owned(), dir, tx))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    r: BufReader<TcpStream>,
    host: String,
    last_body: Vec<u8>,
    /// Signed batch items that settlements will pay for (the settle figure).
    paid: Vec<serde_json::Value>,
    /// When the last answer was read: a connection idle for [`CONN_IDLE_LIMIT`] is opened
    /// afresh, before the server's idle timeout closes it under a request.
    last_used: Instant,
}

/// As the client crate's pool: below the server's idle timeout (`server.header_read_timeout_secs`,
/// 10 s by default), so that a slow open-loop figure does not send into a closed connection.
const CONN_IDLE_LIMIT: Duration = Duration::from_secs(5);

impl Conn {
    async fn open(addr: &str) -> Result<Self> {
        let s = TcpStream::connect(addr).await.map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("connecting to {addr}")).with_source(e)
        })?;
        let _ = s.set_nodelay(true);
        Ok(Self {
            r: BufReader::new(s),
            host: addr.to_owned(),
            last_body: Vec::new(),
            paid: Vec::new(),
            last_used: Instant::now(),
        })
    }

    /// Send one request and read the whole response; returns the status.
    async fn call(&mut self, method: &str, path: &str, token: &str, body: &str) -> Result<u16> {
        let io = |e: std::io::Error| {
            Error::new(ErrorKind::Unavailable, "talking to the server").with_source(e)
        };
        if self.last_used.elapsed() >= CONN_IDLE_LIMIT {
            *self = Self::open(&self.host).await?;
        }
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(io)?;
        let mut line = String::new();
        self.r.read_line(&mut line).await.map_err(io)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::Unavailable, format!("bad status line {line:?}"))
            })?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).await.map_err(io)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        self.last_body.resize(len, 0);
        self.r.read_exact(&mut self.last_body).await.map_err(io)?;
        self.last_used = Instant::now();
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's own CPU time, from the kernel's scheduler statistics.
    fn own_cpu() -> Duration {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
    }

    /// Spins until the calling thread has used `cpu` more CPU time.
    fn burn(cpu: Duration) {
        let until = own_cpu() + cpu;
        let mut x = 0u64;
        while own_cpu() < until {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn generator_cpu_counts_the_load_threads_and_no_other() {
        let counted = std::thread::Builder::new()
            .name(LOAD_THREAD.into())
            .spawn(|| {
                let before = generator_cpu().expect("this thread is a load thread");
                // Another thread of the process burns 200 ms meanwhile; it must not count.
                std::thread::Builder::new()
                    .name("other".into())
                    .spawn(|| burn(Duration::from_millis(200)))
                    .unwrap()
                    .join()
                    .unwrap();
                burn(Duration::from_millis(50));
                let after = generator_cpu().unwrap();
                generator_cpu_since(&before, &after)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            Duration::from_millis(50) <= counted && counted < Duration::from_millis(200),
            "{counted:?}"
        );
        // No load thread is left once it has ended.
        assert!(generator_cpu().is_none());
    }

    #[tokio::test]
    async fn an_idle_connection_is_opened_afresh_before_the_server_closes_it() {
        use tokio::io::AsyncWriteExt;
        // A server that answers one request per connection and then closes it, as the real one
        // closes a connection idle past its timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut r = BufReader::new(s);
                let mut line = String::new();
                // The request line and headers; the test's requests have no body.
                while r.read_line(&mut line).await.unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let body = "{}";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                r.get_mut().write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let mut c = Conn::open(&addr).await.unwrap();
        assert_eq!(c.call("GET", "/healthz", "", "").await.unwrap(), 200);
        assert_eq!(c.last_body, b"{}");
        // Idle past the limit: the next request goes out on a new connection and is answered.
        c.last_used = Instant::now()
            .checked_sub(CONN_IDLE_LIMIT)
            .expect("the clock is past the limit");
        assert_eq!(c.call("GET", "/healthz", "", "").await.unwrap(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(c.host, addr);
    }

    #[test]
    fn a_thread_started_since_counts_from_zero_and_one_ended_since_not_at_all() {
        let before = std::collections::HashMap::from([(1, 5_000), (2, 7_000)]);
        let after = std::collections::HashMap::from([(1, 8_000), (3, 1_000)]);
        assert_eq!(
            generator_cpu_since(&before, &after),
            Duration::from_nanos(3_000 + 1_000)
        );
    }
}
