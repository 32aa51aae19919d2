//! The wrapping schemes side by side on SoftHSM2, in one run (docs/benchmarks.md, "PKCS#11
//! wrapping schemes"):
//!
//! 1. DEK unwrap per scheme (`Provider::unwrap_data_key` of a model key's wrapped DEK): with
//!    `aes-gcm` the device decrypts with the resident KEK; with `ecdh-p256` and `rsa-oaep` the
//!    KEK is sealed, so each unwrap is the device's ECDH derive or RSA decrypt of the KEK plus
//!    AES-GCM in software, measured without the unwrapped-key cache and with it.
//! 2. PoAI signing (secp256k1 over a 32-byte digest) with an hsm-wrapped key under each scheme,
//!    with the cache (the default 60 s) and without it. The goal: with the cache, every scheme
//!    at least 90 % of the `aes-gcm` scheme's rate.
//!
//! Rounds are interleaved and the best of each kept (load on a shared machine only slows a run
//! down). `cargo run -p hanzo-kms-pkcs11 --example bench_schemes [-- SECONDS]`; prints a table
//! and one JSON line.

use std::time::{Duration, Instant};

use hanzo_kms_core::config::{Duration as CfgDuration, ProviderKind, SigningKeys, WrappingScheme};
use hanzo_kms_core::{Algorithm, KeyName, KeyRef, KeySpec, Provider, Separator};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_testkit::softhsm::Token;

const ROUNDS: usize = 3;

struct Figure {
    rate: f64,
    p99_us: f64,
}

fn measure(secs: f64, mut op: impl FnMut()) -> Figure {
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        op();
        lat.push(t.elapsed());
    }
    let total = start.elapsed().as_secs_f64();
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    Figure {
        rate: lat.len() as f64 / total,
        p99_us: p99.as_secs_f64() * 1e6,
    }
}

fn best(figs: Vec<Figure>) -> Figure {
    let rate = figs.iter().map(|f| f.rate).fold(0.0, f64::max);
    let p99_us = figs.iter().map(|f| f.p99_us).fold(f64::INFINITY, f64::min);
    Figure { rate, p99_us }
}

fn provider(scheme: WrappingScheme, cache: bool) -> (Token, Pkcs11Provider) {
    let t = Token::create(&format!(
        "bench-{}-{}-{}",
        &scheme.as_str()[..3],
        u8::from(cache),
        std::process::id()
    ))
    .expect("SoftHSM2 is needed (apt-get install softhsm2)");
    let mut c = t.section();
    c.wrapping = Some(scheme);
    c.signing_keys = SigningKeys::HsmWrapped;
    c.wrapped_key_cache = Some(CfgDuration(if cache {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    }));
    c.max_sessions = Some(1);
    let s = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(&c)).expect("settings");
    let p = Pkcs11Provider::open(&s, true).expect("open");
    (t, p)
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1.0);
    let model = KeyName::parse("model:bench:m", Separator::default()).expect("name");
    let poai = KeyName::parse("poai:bench:m", Separator::default()).expect("name");
    let mut rows = Vec::new();
    let cases: Vec<(WrappingScheme, bool)> = [
        WrappingScheme::AesGcm,
        WrappingScheme::EcdhP256,
        WrappingScheme::RsaOaep,
    ]
    .into_iter()
    .flat_map(|s| [(s, true), (s, false)])
    .collect();
    let made: Vec<_> = cases
        .iter()
        .map(|(scheme, cache)| {
            let (t, p) = provider(*scheme, *cache);
            let k = p
                .generate(&KeySpec {
                    name: &model,
                    version: 1,
                    algorithm: Algorithm::Aes256Gcm,
                    label: "m",
                })
                .expect("model key");
            let s = p
                .generate(&KeySpec {
                    name: &poai,
                    version: 1,
                    algorithm: Algorithm::Secp256k1,
                    label: "p",
                })
                .expect("poai key");
            (t, p, k.handle, s.handle)
        })
        .collect();
    let mut unwrap: Vec<Vec<Figure>> = cases.iter().map(|_| Vec::new()).collect();
    let mut sign: Vec<Vec<Figure>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, (_, p, kh, sh)) in made.iter().enumerate() {
            let k = KeyRef {
                name: &model,
                version: 1,
                algorithm: Algorithm::Aes256Gcm,
                handle: kh,
            };
            let (_, wrapped) = p.generate_data_key(&k, b"aad").expect("dek");
            unwrap[i].push(measure(secs, || {
                p.unwrap_data_key(&k, &wrapped, b"aad").expect("unwrap");
            }));
            let s = KeyRef {
                name: &poai,
                version: 1,
                algorithm: Algorithm::Secp256k1,
                handle: sh,
            };
            sign[i].push(measure(secs, || {
                p.sign(&s, &[0x5a; 32]).expect("sign");
            }));
        }
    }
    let unwrap: Vec<Figure> = unwrap.into_iter().map(best).collect();
    let sign: Vec<Figure> = sign.into_iter().map(best).collect();
    let gcm_sign = sign[0].rate;
    println!(
        "scheme      cache   DEK unwrap/s   p99 µs   PoAI sign/s   p99 µs   sign vs aes-gcm (cached)"
    );
    for (i, (scheme, cache)) in cases.iter().enumerate() {
        println!(
            "{:<10}  {:<5}  {:>12.0}  {:>7.0}  {:>12.0}  {:>7.0}  {:>6.1} %",
            scheme.as_str(),
            if *cache { "60s" } else { "off" },
            unwrap[i].rate,
            unwrap[i].p99_us,
            sign[i].rate,
            sign[i].p99_us,
            100.0 * sign[i].rate / gcm_sign
        );
        rows.push(format!(
            "{{\"scheme\":\"{}\",\"cache\":{},\"dek_unwrap_per_s\":{:.0},\"dek_unwrap_p99_us\":{:.0},\"sign_per_s\":{:.0},\"sign_p99_us\":{:.0},\"sign_vs_gcm_cached\":{:.3}}}",
            scheme.as_str(),
            cache,
            unwrap[i].rate,
            unwrap[i].p99_us,
            sign[i].rate,
            sign[i].p99_us,
            sign[i].rate / gcm_sign
        ));
    }
    println!(
        "{{\"seconds_per_round\":{secs},\"rounds\":{ROUNDS},\"rows\":[{}]}}",
        rows.join(",")
    );
    for (t, p, _, _) in made {
        drop(p);
        let _ = std::process::Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &t.label])
            .output();
    }
}
