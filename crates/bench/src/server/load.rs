//! The load of one figure of `hanzo-kms-bench server`: the workers, one connection each, that
//! send its requests closed loop or paced open loop ([`pacer`]); the requests themselves
//! ([`one`]: REST sign, encrypt and settle, gRPC sign and batch sign); `--prefill`; and the
//! load generator's own CPU time, read from the kernel for the threads of its runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use hanzo_kms_core::{Error, ErrorKind, Result};
use serde_json::json;

use super::http::Conn;

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
pub(super) enum Workload {
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

/// The load of one figure: which requests, to where, and when.
pub(super) struct Load {
    pub(super) work: Workload,
    pub(super) addrs: Vec<String>,
    pub(super) grpc: Option<String>,
    pub(super) token: String,
    pub(super) ordered: bool,
    /// Connections, one worker each.
    pub(super) concurrency: usize,
    /// Open loop at this many requests per second (paced by [`pacer`]), or closed loop.
    pub(super) pace: Option<f64>,
    /// Requests due (open loop) or completed (closed loop) before this are not counted.
    pub(super) t: Instant,
    pub(super) deadline: Instant,
    /// An open-loop backlog still unsent by then is counted as never sent.
    pub(super) give_up: Instant,
}

/// What the load of one figure measured.
pub(super) struct Outcome {
    pub(super) lat: Vec<Duration>,
    pub(super) late: Vec<Duration>,
    pub(super) items: u64,
    pub(super) completed: u64,
    pub(super) unsent: usize,
    /// Every request sent, the warm-up's and the backlog's too.
    pub(super) sent: u64,
    /// The load threads' CPU time from the first request to the last answer, where the
    /// kernel reports it.
    pub(super) cpu: Option<Duration>,
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
pub(super) fn spawn_load(load: Load) -> Result<tokio::sync::oneshot::Receiver<Result<Outcome>>> {
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
pub(super) const PREFILL_BATCH: u64 = 1024;

/// Sign `n` attestations through SignPoaiBatch on eight connections: `n` nonce records.
pub(super) async fn prefill(addr: &str, token: &str, n: u64, ordered: bool) -> Result<()> {
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
                    format!(
                        "/v1/hmm/sign answered {status}: {}",
                        answer_text(&c.last_body)
                    ),
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
                    format!("{path} answered {status}: {}", answer_text(&c.last_body)),
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

/// The start of an error answer's body, for the message that reports it (the server's error
/// bodies hold no secret).
fn answer_text(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
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

    /// The calling thread's id, as /proc names it.
    #[cfg(target_os = "linux")]
    fn own_tid() -> u64 {
        std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .expect("/proc/thread-self")
    }

    // Other tests of this binary may run load threads at the same time, so this one looks only
    // at its own two threads' entries.
    #[cfg(target_os = "linux")]
    #[test]
    fn generator_cpu_counts_the_load_threads_and_no_other() {
        let (tid, other, counted) = std::thread::Builder::new()
            .name(LOAD_THREAD.into())
            .spawn(|| {
                let tid = own_tid();
                let before = generator_cpu().expect("this thread is a load thread");
                // Another thread of the process burns 200 ms meanwhile; it must not count.
                let other = std::thread::Builder::new()
                    .name("other".into())
                    .spawn(|| {
                        burn(Duration::from_millis(200));
                        own_tid()
                    })
                    .unwrap()
                    .join()
                    .unwrap();
                burn(Duration::from_millis(50));
                let after = generator_cpu().unwrap();
                assert!(
                    !after.contains_key(&other),
                    "a thread of another name counted"
                );
                let own = |m: &std::collections::HashMap<u64, u64>| {
                    std::collections::HashMap::from([(tid, m[&tid])])
                };
                (tid, other, generator_cpu_since(&own(&before), &own(&after)))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(tid, other);
        assert!(
            Duration::from_millis(50) <= counted && counted < Duration::from_millis(200),
            "{counted:?}"
        );
        // A load thread that has ended is not counted any more.
        assert!(generator_cpu().is_none_or(|m| !m.contains_key(&tid)));
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
