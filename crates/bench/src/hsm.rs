//! `hanzo-kms-bench sign --provider softhsm2`: signing through the PKCS#11 provider against a raw
//! `C_Sign` loop on the same token, in one run.
//!
//! "Raw" is the device's own mechanism on one pooled session per thread, with nothing else
//! (`hanzo_kms_testkit::pkcs11::RawSign`). "Ours" is `Provider::sign`: session checkout, the
//! object-handle cache, `C_Sign`, and for secp256k1 the low-S normalisation and recovery of v.
//! Runs are interleaved and the best of each is kept, so drift in the machine's load hits all alike.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::eip712::Domain;
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyName, KeyRef, KeySpec, Provider, Result, Separator,
};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_testkit::pkcs11::RawSign;
use hanzo_kms_testkit::softhsm::Token;
use serde_json::json;

use crate::sign::batch_rate;

/// Interleaved rounds per figure; the best of each is kept (load on a shared machine only ever
/// slows a run down, so the best is the least disturbed).
const ROUNDS: usize = 5;
use crate::output::Out;

pub fn run(
    provider: &str,
    config: Option<&std::path::Path>,
    secs: f64,
    count: Option<u64>,
    out: &Out,
) -> Result<ExitCode> {
    let kind: ProviderKind = serde_json::from_value(json!(provider))
        .map_err(|_| Error::invalid(format!("--provider: '{provider}' is not a provider name")))?;
    if !kind.is_pkcs11() {
        return Err(Error::invalid(format!(
            "--provider {kind}: only PKCS#11 providers are measured this way (plain `hanzo-kms-bench sign` measures software)"
        )));
    }
    let cfg = hanzo_kms_service::load_config(config)?;
    let (section, throwaway) = match cfg.kms.lux.pkcs11_section(kind) {
        Some(s) => (s.clone(), None),
        None if kind == ProviderKind::Softhsm2 => {
            let t = Token::create(&format!("hanzo-kms-bench-{}", std::process::id()))?;
            (t.section(), Some(t))
        }
        None => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "hanzo-kms-bench sign --provider {kind} needs kms.lux.{kind} (module, token_label, pin_env) in --config"
                ),
            ));
        }
    };
    let settings = Pkcs11Settings::from_config(kind, Some(&section))?;
    let p = Pkcs11Provider::open(&settings, true)?;
    let result = match count {
        Some(n) => count_paths(&p, n, out),
        None => run_all(&p, secs, out),
    };
    if let Some(t) = throwaway {
        // Best effort: remove the throwaway token again.
        let _ = std::process::Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &t.label])
            .output();
    }
    result
}

fn run_all(p: &Pkcs11Provider, secs: f64, out: &Out) -> Result<ExitCode> {
    let n = p.max_sessions();
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    say(format!(
        "bench sign --provider {}: token '{}', best of {ROUNDS} interleaved rounds of {secs} s, 1 and {n} threads (max_sessions)",
        p.name(),
        p.token_label()
    ));
    let mut figures = serde_json::Map::new();
    let name = KeyName::parse("poai:bench:hsm", Separator::default())?;
    let mut secp_key = None;
    let mut made = Vec::new();
    for (i, alg) in [Algorithm::Secp256k1, Algorithm::P256]
        .into_iter()
        .enumerate()
    {
        let label = format!("hanzo-kms-bench/{alg}");
        let g = p.generate(&KeySpec {
            name: &name,
            version: i as u32 + 1,
            algorithm: alg,
            label: &label,
        })?;
        let kref = KeyRef {
            name: &name,
            version: i as u32 + 1,
            algorithm: alg,
            handle: &g.handle,
        };
        let msg = [0x5au8; 32];
        // Raw: each thread holds one session and loops C_Sign. Ours: Provider::sign.
        let raw = |t: usize| {
            measure(t, secs, || {
                p.bench_raw_sign(&kref, &msg, 16)?;
                Ok(16)
            })
        };
        let ours = |t: usize| {
            measure(t, secs, || {
                for _ in 0..16 {
                    p.sign(&kref, &msg)?;
                }
                Ok(16)
            })
        };
        p.sign(&kref, &msg)?; // fail early, with the real error, if signing does not work
        let (mut raw1, mut rawn, mut ours1, mut oursn) = (
            Best::default(),
            Best::default(),
            Best::default(),
            Best::default(),
        );
        for _ in 0..ROUNDS {
            raw1.add(raw(1)?);
            ours1.add(ours(1)?);
            rawn.add(raw(n)?);
            oursn.add(ours(n)?);
        }
        say(format!(
            "  {alg:<10} raw C_Sign        {:>8.0}/s (1 thread)   {:>8.0}/s ({n} threads)   CPU {:>6.1} µs/sign",
            raw1.rate, rawn.rate, raw1.cpu_us
        ));
        say(format!(
            "  {alg:<10} ours (provider)   {:>8.0}/s = {:>3.0}%      {:>8.0}/s = {:>3.0}%       CPU {:>6.1} µs/sign = {:.0}% efficiency",
            ours1.rate,
            100.0 * ours1.rate / raw1.rate,
            oursn.rate,
            100.0 * oursn.rate / rawn.rate,
            ours1.cpu_us,
            100.0 * raw1.cpu_us / ours1.cpu_us
        ));
        figures.insert(
            alg.as_str().to_owned(),
            json!({"raw_per_s": {"one": raw1.rate, "max_sessions": rawn.rate},
                   "ours_per_s": {"one": ours1.rate, "max_sessions": oursn.rate},
                   "ours_vs_raw": {"one": ours1.rate / raw1.rate, "max_sessions": oursn.rate / rawn.rate},
                   "cpu_us_per_sign_one_thread": {"raw": raw1.cpu_us, "ours": ours1.cpu_us},
                   "cpu_efficiency": raw1.cpu_us / ours1.cpu_us}),
        );
        if alg == Algorithm::Secp256k1 {
            secp_key = Some(g.handle.clone());
        }
        made.push((i as u32 + 1, alg, g.handle));
    }
    // Merkle-batched PoAI on the HSM secp256k1 key: hash 1024 attestations, build the tree with
    // proofs, one device signature over the PoAIBatch digest.
    let handle = secp_key.ok_or_else(|| Error::internal("no secp256k1 key"))?;
    let kref = KeyRef {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &handle,
    };
    let domain = Domain::new(96369, None);
    let batch = |size: usize| batch_rate(p, &kref, &domain, n, secs, size);
    let (b64, b1024) = (batch(64), batch(1024));
    say(format!(
        "  Merkle-batched PoAI on the HSM key: {b64:>9.0} attestations/s (batch 64), {b1024:>9.0}/s (batch 1024), {n} threads"
    ));
    let stats = p.pool_stats();
    say(format!(
        "  sessions: at most {} in use, {} waits",
        stats.high_water, stats.waits
    ));
    // Leave nothing behind in the token.
    for (version, algorithm, handle) in &made {
        let r = KeyRef {
            name: &name,
            version: *version,
            algorithm: *algorithm,
            handle,
        };
        let _ = p.destroy(&r);
    }
    if out.json {
        out.json(&json!({
            "provider": p.name(), "token": p.token_label(), "max_sessions": n,
            "sign": figures,
            "batch_attestations_per_s": {"64": b64, "1024": b1024},
        }));
    }
    Ok(ExitCode::SUCCESS)
}

/// The best of several rounds: the highest rate and the lowest CPU time per operation.
#[derive(Default)]
struct Best {
    rate: f64,
    cpu_us: f64,
}

impl Best {
    fn add(&mut self, (rate, cpu_us): (f64, f64)) {
        self.rate = self.rate.max(rate);
        if self.cpu_us == 0.0 || cpu_us < self.cpu_us {
            self.cpu_us = cpu_us;
        }
    }
}

/// Run `chunk` on `threads` threads for `secs`; returns (operations per second, CPU µs per
/// operation). CPU time is each worker's own on-CPU time from /proc/thread-self/schedstat, which
/// time spent waiting for a core (other tenants of a shared machine) does not inflate.
fn measure(
    threads: usize,
    secs: f64,
    chunk: impl Fn() -> Result<u64> + Sync,
) -> Result<(f64, f64)> {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let cpu_ns = AtomicU64::new(0);
    let start = Instant::now();
    let failed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, done, cpu_ns, chunk) = (&stop, &done, &cpu_ns, &chunk);
                s.spawn(move || -> Result<()> {
                    let c0 = thread_cpu_ns();
                    while !stop.load(Ordering::Relaxed) {
                        done.fetch_add(chunk()?, Ordering::Relaxed);
                    }
                    cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(c0), Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .find_map(|h| h.join().ok().and_then(|r| r.err()))
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let ops = done.load(Ordering::Relaxed).max(1) as f64;
    Ok((
        ops / start.elapsed().as_secs_f64(),
        cpu_ns.load(Ordering::Relaxed) as f64 / ops / 1000.0,
    ))
}

/// This thread's time on a CPU, in nanoseconds (0 where /proc does not say).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `--count N`: N raw `C_Sign`s, then N `Provider::sign`s, for secp256k1 and then P-256, each
/// path in its own never-inlined function (callgrind: compare `raw_hsm_path` with
/// `our_hsm_path`, inclusive). One thread; SoftHSM2 runs in process, so its work is counted too.
fn count_paths(p: &Pkcs11Provider, n: u64, out: &Out) -> Result<ExitCode> {
    let name = KeyName::parse("poai:bench:hsm", Separator::default())?;
    let mut report = serde_json::Map::new();
    for (i, alg) in [Algorithm::Secp256k1, Algorithm::P256]
        .into_iter()
        .enumerate()
    {
        let version = i as u32 + 1;
        let label = format!("hanzo-kms-bench/{alg}");
        let g = p.generate(&KeySpec {
            name: &name,
            version,
            algorithm: alg,
            label: &label,
        })?;
        let kref = KeyRef {
            name: &name,
            version,
            algorithm: alg,
            handle: &g.handle,
        };
        // Separate monomorphised functions per algorithm, so callgrind reports each on its own
        // (raw_hsm_path::<0> is secp256k1, ::<1> is P-256).
        let (raw_path, our_path): (PathFn, PathFn) = if i == 0 {
            (raw_hsm_path::<0>, our_hsm_path::<0>)
        } else {
            (raw_hsm_path::<1>, our_hsm_path::<1>)
        };
        let t = Instant::now();
        raw_path(p, &kref, n)?;
        let raw = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        our_path(p, &kref, n)?;
        let ours = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let _ = p.destroy(&kref);
        if !out.json {
            out.line(format!(
                "  {alg:<10} raw {raw:>7.1} µs/sign   ours {ours:>7.1} µs/sign"
            ));
        }
        report.insert(
            alg.as_str().to_owned(),
            json!({"raw_us": raw, "ours_us": ours}),
        );
    }
    if out.json {
        out.json(&json!({"count": n, "sign": report}));
    }
    Ok(ExitCode::SUCCESS)
}

type PathFn = fn(&Pkcs11Provider, &KeyRef<'_>, u64) -> Result<()>;

#[inline(never)]
fn raw_hsm_path<const ALG: u8>(p: &Pkcs11Provider, kref: &KeyRef<'_>, n: u64) -> Result<()> {
    std::hint::black_box(ALG); // keeps the two instances from being merged into one symbol
    p.bench_raw_sign(kref, &[0x5a; 32], n)
}

#[inline(never)]
fn our_hsm_path<const ALG: u8>(p: &Pkcs11Provider, kref: &KeyRef<'_>, n: u64) -> Result<()> {
    std::hint::black_box(ALG);
    for _ in 0..n {
        std::hint::black_box(p.sign(kref, &[0x5a; 32])?);
    }
    Ok(())
}
