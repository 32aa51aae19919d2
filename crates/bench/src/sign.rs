//! `hanzo-kms-bench sign`: PoAI signing throughput against raw libsecp256k1, in one run.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_core::eip712::{B32, Domain, PoAIAttestation, PoAIBatch};
use hanzo_kms_core::{
    Algorithm, Config, KeyName, KeyRef, KeySpec, Provider, Result, Separator, merkle,
};
use hanzo_kms_service::{Kms, RequestCtx, Settings};
use hanzo_kms_software::SoftwareProvider;
use serde_json::json;

use crate::output::Out;

/// Run `f(thread, i)` on `threads` threads for `secs`; operations per second.
pub(crate) fn rate(threads: usize, secs: f64, f: impl Fn(usize, u64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..threads {
            let (stop, done, f) = (&stop, &done, &f);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        f(w, i);
                        i += 1;
                    }
                }
                done.fetch_add(i, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

/// The digest the raw references sign on thread `w`, iteration `i`: a different one each time.
fn raw_digest(w: usize, i: u64) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&i.to_be_bytes());
    d[8] = w as u8;
    d
}

/// Raw libsecp256k1 signatures of a 32-byte digest per second on `threads` threads, as
/// DESIGN.md §2 measured them: the reference every signing figure is compared with, on the
/// machine it runs on. One context (`secp256k1` 0.31, with explicit contexts), randomized once
/// when made.
pub(crate) fn raw_sign_rate(threads: usize, secs: f64) -> f64 {
    let Ok((ctx, sk)) = raw_signer() else {
        return 0.0;
    };
    rate(threads, secs, |w, i| {
        let _ =
            ctx.sign_ecdsa_recoverable(secp256k1_ctx::Message::from_digest(raw_digest(w, i)), &sk);
    })
}

/// The raw references' signer: one context, randomized once, and a fixed, valid key (0x42…42
/// is below the curve order).
fn raw_signer() -> Result<(
    secp256k1_ctx::Secp256k1<secp256k1_ctx::SignOnly>,
    secp256k1_ctx::SecretKey,
)> {
    let sk = secp256k1_ctx::SecretKey::from_byte_array([0x42; 32])
        .map_err(|_| hanzo_kms_core::Error::internal("the bench's fixed key is not a scalar"))?;
    let mut seed = [0u8; 32];
    hanzo_kms_crypto::rng::fill(&mut seed)?;
    let mut ctx = secp256k1_ctx::Secp256k1::signing_only();
    ctx.seeded_randomize(&seed);
    Ok((ctx, sk))
}

/// Signatures per second as the server makes them: the software provider's libsecp256k1 call
/// (`hanzo_kms_crypto::secp`), whose per-thread context gets a fresh blinding every
/// [`hanzo_kms_crypto::secp::SIGNATURES_PER_SEED`] signatures, without unsealing or hashing.
pub(crate) fn server_sign_rate(threads: usize, secs: f64) -> f64 {
    rate(threads, secs, |w, i| {
        let _ = hanzo_kms_crypto::secp::sign_recoverable(raw_digest(w, i), &[0x42; 32]);
    })
}

pub(crate) fn attestation(w: usize, i: u64) -> PoAIAttestation {
    let mut nonce = [0u8; 32];
    nonce[..8].copy_from_slice(&(w as u64).to_be_bytes());
    nonce[8..16].copy_from_slice(&i.to_be_bytes());
    PoAIAttestation {
        model_id: "bench:model".into(),
        input_hash: B32([1; 32]),
        output_hash: B32([2; 32]),
        timestamp: 1_795_000_000,
        compute_time_ms: 12,
        node_id: "node-1".into(),
        nonce: Some(B32(nonce)),
    }
}

pub async fn run(
    secs: f64,
    threads: Option<usize>,
    concurrency: usize,
    out: &Out,
) -> Result<ExitCode> {
    let all = threads
        .filter(|t| *t > 0)
        .unwrap_or_else(hanzo_kms_weights::default_threads);
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    say(format!(
        "bench sign: {secs} s per figure, 1 and {all} threads"
    ));

    // Raw libsecp256k1 over a 32-byte digest.
    let raw = |t: usize| raw_sign_rate(t, secs);
    // Ours, in process: EIP-712 hashing + the software provider (unseal + libsecp256k1 + v).
    let mut master = [0u8; 32];
    hanzo_kms_crypto::rng::fill(&mut master)?;
    let provider = SoftwareProvider::new(&hanzo_kms_core::SecretKey32::from_bytes(master))?;
    let name = KeyName::parse("poai:bench:model", Separator::default())?;
    let g = provider.generate(&KeySpec {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        label: "bench",
    })?;
    let kref = KeyRef {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &g.handle,
    };
    let domain = Domain::new(96369, None);
    let ours = |t: usize| {
        rate(t, secs, |w, i| {
            let a = attestation(w, i);
            if let Ok(h) = a.struct_hash() {
                let _ = provider.sign(&kref, &domain.digest(&h));
            }
        })
    };
    // The provider alone (unseal + sign, no hashing), to split our overhead in two.
    let fixed = domain.digest(&attestation(0, 0).struct_hash()?);
    let provider_only = |t: usize| {
        rate(t, secs, |_, _| {
            let _ = provider.sign(&kref, &fixed);
        })
    };
    // Interleaved, best of three, so drift in the machine's load hits all alike.
    let (mut raw1, mut ours1, mut rawn, mut oursn, mut prov1, mut provn) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for _ in 0..3 {
        raw1 = raw1.max(raw(1));
        ours1 = ours1.max(ours(1));
        prov1 = prov1.max(provider_only(1));
        rawn = rawn.max(raw(all));
        oursn = oursn.max(ours(all));
        provn = provn.max(provider_only(all));
    }
    say(format!(
        "  raw libsecp256k1 sign            {raw1:>9.0}/s (1 thread)   {rawn:>9.0}/s ({all} threads)"
    ));
    say(format!(
        "  ours: EIP-712 hash + sign        {ours1:>9.0}/s = {:.0}%        {oursn:>9.0}/s = {:.0}%  (no store write)",
        100.0 * ours1 / raw1,
        100.0 * oursn / rawn
    ));
    say(format!(
        "  provider sign only (unseal+sign) {prov1:>9.0}/s = {:.0}%        {provn:>9.0}/s = {:.0}%  (no hashing)",
        100.0 * prov1 / raw1,
        100.0 * provn / rawn
    ));
    // Verification: recover + compare, as `poai verify` does.
    let digest = domain.digest(&attestation(0, 0).struct_hash()?);
    let sig = provider.sign(&kref, &digest)?.0;
    let pk = g
        .public_key
        .as_ref()
        .map(|p| p.bytes.clone())
        .unwrap_or_default();
    let verify = |t: usize| {
        rate(t, secs, |_, _| {
            let _ = hanzo_kms_crypto::verify::verify(Algorithm::Secp256k1, &pk, &digest, &sig);
        })
    };
    let (v1, vn) = (verify(1), verify(all));
    say(format!(
        "  verify (recover + compare)       {v1:>9.0}/s (1 thread)   {vn:>9.0}/s ({all} threads)"
    ));
    // Merkle batches: hash every attestation, build the tree, one signature.
    let batch_rate = |n: usize| batch_rate(&provider, &kref, &domain, all, secs, n);
    let (b64, b1024) = (batch_rate(64), batch_rate(1024));
    say(format!(
        "  Merkle batch of 64               {b64:>9.0} attestations/s (with proofs, {all} threads)"
    ));
    say(format!(
        "  Merkle batch of 1024             {b1024:>9.0} attestations/s"
    ));

    // Durable: through the pipeline, nonce + audit records committed (group commit) before
    // each signature is returned.
    let dir = std::env::temp_dir().join(format!(
        "hanzo-kms-bench-sign-{}",
        hex::encode(&master[..6])
    ));
    let result = durable(&dir, secs, concurrency).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (seq_rate, conc_rate, per_tx, batch_store) = result?;
    say(format!(
        "  durable sign_poai, 1 at a time   {seq_rate:>9.0}/s  (one commit + fsync each)"
    ));
    say(format!(
        "  durable sign_poai, {concurrency} concurrent {conc_rate:>9.0}/s  ({per_tx:.1} signatures per commit = {:.3} fsyncs per signature)",
        1.0 / per_tx
    ));
    say(format!(
        "  durable batch of 1024            {batch_store:>9.0} attestations/s (1024 nonce records per commit)"
    ));
    if out.json {
        out.json(&json!({
            "threads": all,
            "raw_sign_per_s": {"one": raw1, "all": rawn},
            "ours_sign_per_s": {"one": ours1, "all": oursn},
            "ours_vs_raw": {"one": ours1 / raw1, "all": oursn / rawn},
            "provider_only_per_s": {"one": prov1, "all": provn},
            "verify_per_s": {"one": v1, "all": vn},
            "batch_attestations_per_s": {"64": b64, "1024": b1024},
            "durable": {"sequential_per_s": seq_rate, "concurrent_per_s": conc_rate, "concurrency": concurrency,
                        "signatures_per_commit": per_tx, "batch_1024_attestations_per_s": batch_store},
        }));
    }
    Ok(ExitCode::SUCCESS)
}

/// Merkle-batched PoAI with `provider`: hash `size` attestations, build the tree and proofs,
/// sign the `PoAIBatch` digest once; attestations per second on `threads` threads.
pub(crate) fn batch_rate(
    provider: &dyn Provider,
    kref: &KeyRef<'_>,
    domain: &Domain,
    threads: usize,
    secs: f64,
    size: usize,
) -> f64 {
    rate(threads, secs, |w, i| {
        let digests: Vec<[u8; 32]> = (0..size as u64)
            .filter_map(|k| {
                attestation(w, i * size as u64 + k)
                    .struct_hash()
                    .ok()
                    .map(|h| domain.digest(&h))
            })
            .collect();
        let (root, _proofs) = merkle::build(&digests);
        let b = PoAIBatch {
            root: B32(root),
            count: size as u64,
            timestamp: 1,
        };
        let _ = provider.sign(kref, &domain.digest(&b.struct_hash()));
    }) * size as f64
}

/// `hanzo-kms-bench sign --count N`: exactly N raw libsecp256k1 signatures, then N of ours
/// (EIP-712 hash + provider sign), each path in its own never-inlined function so that
/// callgrind's inclusive instruction counts of `raw_sign_path` and `our_sign_path` compare them
/// exactly.
pub fn count(n: u64, out: &Out) -> Result<ExitCode> {
    let (ctx, sk) = raw_signer()?;
    let provider = SoftwareProvider::new(&SoftwareProvider::generate_master_key()?)?;
    let name = KeyName::parse("poai:bench:model", Separator::default())?;
    let g = provider.generate(&KeySpec {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        label: "bench",
    })?;
    let kref = KeyRef {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &g.handle,
    };
    let domain = Domain::new(96369, None);
    let atts: Vec<PoAIAttestation> = (0..n).map(|i| attestation(0, i)).collect();
    let t = Instant::now();
    raw_sign_path(&ctx, &sk, n);
    let raw = t.elapsed();
    let t = Instant::now();
    our_sign_path(&provider, &kref, &domain, &atts)?;
    let ours = t.elapsed();
    let msg = format!(
        "bench sign --count {n}: raw {:.1} µs/sign, ours {:.1} µs/sign; under callgrind compare the \
         inclusive Ir of raw_sign_path and our_sign_path",
        raw.as_secs_f64() * 1e6 / n as f64,
        ours.as_secs_f64() * 1e6 / n as f64
    );
    if out.json {
        out.json(
            &json!({"count": n, "raw_us": raw.as_secs_f64() * 1e6 / n as f64,
                          "ours_us": ours.as_secs_f64() * 1e6 / n as f64}),
        );
    } else {
        out.line(msg);
    }
    Ok(ExitCode::SUCCESS)
}

/// Raw signing as [`raw_sign_rate`] does it: one context, randomized once.
#[inline(never)]
fn raw_sign_path(
    ctx: &secp256k1_ctx::Secp256k1<secp256k1_ctx::SignOnly>,
    sk: &secp256k1_ctx::SecretKey,
    n: u64,
) {
    for i in 0..n {
        std::hint::black_box(
            ctx.sign_ecdsa_recoverable(secp256k1_ctx::Message::from_digest(raw_digest(0, i)), sk),
        );
    }
}

#[inline(never)]
fn our_sign_path(
    provider: &SoftwareProvider,
    kref: &KeyRef<'_>,
    domain: &Domain,
    atts: &[PoAIAttestation],
) -> Result<()> {
    for a in atts {
        let digest = domain.digest(&a.struct_hash()?);
        std::hint::black_box(provider.sign(kref, &digest)?);
    }
    Ok(())
}

async fn durable(
    dir: &std::path::Path,
    secs: f64,
    concurrency: usize,
) -> Result<(f64, f64, f64, f64)> {
    let settings = Settings {
        data_dir: dir.to_path_buf(),
        config: Config::from_yaml("", "defaults", std::iter::empty::<(&str, &str)>())?,
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    let kms = Arc::new(kms);
    let ctx = RequestCtx::local();
    let key = kms.parse_name("poai:bench:model")?;
    kms.create_key(&ctx, &key, None, None).await?;
    let now = hanzo_kms_service::now_secs() as u64;
    let fresh = move |w: u64, i: u64| {
        let mut a = attestation(w as usize, i);
        a.timestamp = now;
        a
    };
    // One at a time.
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        kms.sign_poai(&ctx, &key, fresh(1_000_000, n), now).await?;
        n += 1;
    }
    let seq = n as f64 / t.elapsed().as_secs_f64();
    // Concurrent.
    let before = kms.commit_stats().map(|s| {
        (
            s.requests.load(Ordering::Relaxed),
            s.transactions.load(Ordering::Relaxed),
        )
    });
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency as u64)
        .map(|w| {
            let (kms, key, ctx) = (kms.clone(), key.clone(), ctx.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    kms.sign_poai(&ctx, &key, fresh(w, i), now).await?;
                    i += 1;
                }
                Ok::<u64, hanzo_kms_core::Error>(i)
            })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task
            .await
            .map_err(|_| hanzo_kms_core::Error::internal("a benchmark task panicked"))??;
    }
    let conc = total as f64 / t.elapsed().as_secs_f64();
    let after = kms.commit_stats().map(|s| {
        (
            s.requests.load(Ordering::Relaxed),
            s.transactions.load(Ordering::Relaxed),
        )
    });
    let per_tx = match (before, after) {
        (Some((r0, t0)), Some((r1, t1))) if t1 > t0 => (r1 - r0) as f64 / (t1 - t0) as f64,
        _ => 1.0,
    };
    // A stored batch of 1024.
    let t = Instant::now();
    let mut batches = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        let atts: Vec<_> = (0..1024).map(|k| fresh(2_000_000 + batches, k)).collect();
        kms.sign_poai_batch(&ctx, &key, atts, now).await?;
        batches += 1;
    }
    let batch = (batches * 1024) as f64 / t.elapsed().as_secs_f64();
    kms.close().await;
    Ok((seq, conc, per_tx, batch))
}
