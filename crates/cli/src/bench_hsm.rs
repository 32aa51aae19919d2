//! `hanzo-kms bench sign --provider softhsm2`: signing through the PKCS#11 provider against a raw
//! `C_Sign` loop on the same token, in one run.
//!
//! "Raw" is the device's own mechanism on one pooled session per thread, with nothing else
//! (`Pkcs11Provider::bench_raw_sign`). "Ours" is `Provider::sign`: session checkout, the
//! object-handle cache, `C_Sign`, and for secp256k1 the low-S normalisation and recovery of v.
//! Runs are interleaved and the best of each is kept, so drift in the machine's load hits all alike.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::eip712::{B32, Domain, PoAIBatch};
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyName, KeyRef, KeySpec, Provider, Result, Separator, merkle,
};
use hanzo_kms_pkcs11::softhsm::Token;
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use serde_json::json;

use crate::bench_sign::{attestation, rate};
use crate::output::Out;

pub fn run(
    provider: &str,
    config: Option<&std::path::Path>,
    secs: f64,
    out: &Out,
) -> Result<ExitCode> {
    let kind: ProviderKind = serde_json::from_value(json!(provider))
        .map_err(|_| Error::invalid(format!("--provider: '{provider}' is not a provider name")))?;
    if !kind.is_pkcs11() {
        return Err(Error::invalid(format!(
            "--provider {kind}: only PKCS#11 providers are measured this way (plain `bench sign` measures software)"
        )));
    }
    let cfg = crate::load_config(config)?;
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
                    "bench sign --provider {kind} needs kms.lux.{kind} (module, token_label, pin_env) in --config"
                ),
            ));
        }
    };
    let settings = Pkcs11Settings::from_config(kind, Some(&section))?;
    let p = Pkcs11Provider::open(&settings, true)?;
    let result = measure(&p, secs, out);
    if let Some(t) = throwaway {
        // Best effort: remove the throwaway token again.
        let _ = std::process::Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &t.label])
            .output();
    }
    result
}

fn measure(p: &Pkcs11Provider, secs: f64, out: &Out) -> Result<ExitCode> {
    let n = p.max_sessions();
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    say(format!(
        "bench sign --provider {}: token '{}', {secs} s per figure, 1 and {n} threads (max_sessions)",
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
        // Raw: each thread holds one session and loops C_Sign.
        let raw = |t: usize| -> Result<f64> {
            let stop = AtomicBool::new(false);
            let done = AtomicU64::new(0);
            let start = Instant::now();
            let failed = std::thread::scope(|s| {
                let handles: Vec<_> = (0..t)
                    .map(|_| {
                        let (stop, done) = (&stop, &done);
                        s.spawn(move || -> Result<()> {
                            while !stop.load(Ordering::Relaxed) {
                                p.bench_raw_sign(&kref, &msg, 16)?;
                                done.fetch_add(16, Ordering::Relaxed);
                            }
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
            Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
        };
        let ours = |t: usize| {
            rate(t, secs, |_, _| {
                let _ = p.sign(&kref, &msg);
            })
        };
        p.sign(&kref, &msg)?; // fail early, with the real error, if signing does not work
        let (mut raw1, mut rawn, mut ours1, mut oursn) = (0f64, 0f64, 0f64, 0f64);
        for _ in 0..2 {
            raw1 = raw1.max(raw(1)?);
            ours1 = ours1.max(ours(1));
            rawn = rawn.max(raw(n)?);
            oursn = oursn.max(ours(n));
        }
        say(format!(
            "  {alg:<10} raw C_Sign        {raw1:>8.0}/s (1 thread)   {rawn:>8.0}/s ({n} threads)"
        ));
        say(format!(
            "  {alg:<10} ours (provider)   {ours1:>8.0}/s = {:.0}%      {oursn:>8.0}/s = {:.0}%",
            100.0 * ours1 / raw1,
            100.0 * oursn / rawn
        ));
        figures.insert(
            alg.as_str().to_owned(),
            json!({"raw_per_s": {"one": raw1, "max_sessions": rawn},
                   "ours_per_s": {"one": ours1, "max_sessions": oursn},
                   "ours_vs_raw": {"one": ours1 / raw1, "max_sessions": oursn / rawn}}),
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
    let batch = |size: usize| {
        rate(n, secs, |w, i| {
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
            let _ = p.sign(&kref, &domain.digest(&b.struct_hash()));
        }) * size as f64
    };
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
