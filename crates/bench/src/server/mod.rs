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
//!
//! This module runs the figures and reports them; [`load`] generates each figure's load, and
//! [`http`] holds the HTTP/1.1 client and reads the servers' `/metrics` counters.

mod http;
mod load;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hanzo_kms_core::{Config, Error, ErrorKind, Result};
use hanzo_kms_server::{Options, Server};
use hanzo_kms_service::{Kms, RequestCtx, Role, Settings};
use serde_json::json;

use self::http::{Conn, commits};
use self::load::{Load, Outcome, PREFILL_BATCH, Workload, prefill, spawn_load};
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

/// After `--prefill`, the bench waits half the prefill's time, within these bounds (seconds),
/// before the first figure.
const PREFILL_SETTLE_SECS: (f64, f64) = (2.0, 60.0);

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
