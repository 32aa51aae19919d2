//! Latency of the remote providers on their local peers (scripts/peers.sh): DEK wrap and unwrap
//! through the provider against the same call made as a bare HTTP request in the same run, one
//! remote signature, and signing with a cached kms-wrapped key against software signing.
//!
//! `scripts/peers.sh start DIR && . DIR/env && cargo run --release -p hanzo-kms-remote --example remote_bench`

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hanzo_kms_core::config::{AwsKmsConfig, ConfigSecret, OpenBaoConfig, RemoteSigningKeys};
use hanzo_kms_core::{Algorithm, KeyName, KeyRef, KeySpec, Provider, Separator};
use hanzo_kms_remote::{AwsKms, OpenBao, RemoteKms, RemoteProvider, RemoteSettings};

const N: usize = 400;

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

fn report(what: &str, v: Vec<Duration>) -> (f64, f64) {
    let (p50, p99) = (pct(v.clone(), 0.5), pct(v, 0.99));
    println!("{what:<48} p50 {p50:>8.0} µs   p99 {p99:>8.0} µs");
    (p50, p99)
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..20 {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// A bare wrap call: key id, plaintext, AAD.
type RawWrap<'a> = &'a dyn Fn(&str, &[u8], &[u8]);

fn bench<S: RemoteKms>(p: &RemoteProvider<S>, raw_wrap: RawWrap<'_>) {
    let name = KeyName::parse("model:bench:m", Separator::default()).unwrap();
    let spec = |alg| KeySpec {
        name: &name,
        version: 1,
        algorithm: alg,
        label: "model/bench/m/v1",
    };
    let g = p.generate(&spec(Algorithm::Aes256Gcm)).unwrap();
    let k = KeyRef {
        name: &name,
        version: 1,
        algorithm: Algorithm::Aes256Gcm,
        handle: &g.handle,
    };
    let id = std::str::from_utf8(&g.handle.as_bytes()[3..])
        .unwrap()
        .to_owned();
    let aad = [7u8; 80];
    // Interleaved, so that load from elsewhere on the machine falls on both alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..(N + 20) {
        let t = Instant::now();
        p.generate_data_key(&k, &aad).unwrap();
        let x = t.elapsed();
        let t = Instant::now();
        raw_wrap(&id, &[1; 32], &aad);
        let y = t.elapsed();
        if i >= 20 {
            a.push(x);
            b.push(y);
        }
    }
    let (ours, _) = report(&format!("{} DEK wrap (provider)", p.name()), a);
    let (raw, _) = report(&format!("{} DEK wrap (bare HTTP call)", p.name()), b);
    println!("  overhead at p50: {:.1} %", (ours / raw - 1.0) * 100.0);
    let (_, w) = p.generate_data_key(&k, &aad).unwrap();
    report(
        &format!("{} DEK unwrap (provider)", p.name()),
        time(N, || {
            p.unwrap_data_key(&k, &w, &aad).unwrap();
        }),
    );
    let pn = KeyName::parse("poai:bench:m", Separator::default()).unwrap();
    let alg = if p.resident(Algorithm::Secp256k1) {
        Algorithm::Secp256k1
    } else {
        Algorithm::P256
    };
    let s = p
        .generate(&KeySpec {
            name: &pn,
            version: 1,
            algorithm: alg,
            label: "poai/bench/m/v1",
        })
        .unwrap();
    let sr = KeyRef {
        name: &pn,
        version: 1,
        algorithm: alg,
        handle: &s.handle,
    };
    let v = time(N / 2, || {
        p.sign(&sr, &[5u8; 32]).unwrap();
    });
    let (p50, _) = report(
        &format!(
            "{} sign {alg}, kms-resident (normalised+verified)",
            p.name()
        ),
        v,
    );
    println!(
        "  computed, not measured end to end: one such signature per Merkle batch of 1,024 bounds a thread at {:.0} attestations/s",
        1024.0 / (p50 / 1e6)
    );
}

/// `p` must make secp256k1 keys kms-wrapped (`signing_keys: kms-wrapped` where the service
/// signs secp256k1 itself).
fn wrapped_vs_software<S: RemoteKms>(p: &RemoteProvider<S>) {
    assert!(!p.resident(Algorithm::Secp256k1));
    let name = KeyName::parse("poai:bench:w", Separator::default()).unwrap();
    let g = p
        .generate(&KeySpec {
            name: &name,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            label: "poai/bench/w/v1",
        })
        .unwrap();
    let k = KeyRef {
        name: &name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &g.handle,
    };
    let n = 20_000;
    p.sign(&k, &[1; 32]).unwrap();
    let t = Instant::now();
    for i in 0..n {
        p.sign(&k, &[(i % 251) as u8; 32]).unwrap();
    }
    let cached = n as f64 / t.elapsed().as_secs_f64();
    let (material, _) = hanzo_kms_crypto::material::generate(Algorithm::Secp256k1).unwrap();
    let t = Instant::now();
    for i in 0..n {
        hanzo_kms_crypto::material::sign(Algorithm::Secp256k1, &material, &[(i % 251) as u8; 32])
            .unwrap();
    }
    let soft = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "{} kms-wrapped secp256k1 sign, cached: {cached:.0}/s; software: {soft:.0}/s ({:.0} %)",
        p.name(),
        cached / soft * 100.0
    );
}

fn main() {
    let settings = |keys| RemoteSettings {
        root_prefix: format!("bench{}.", std::process::id()),
        signing_keys: keys,
        wrapped_key_cache: Duration::from_secs(60),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    if let (Ok(addr), Ok(token)) = (
        std::env::var("HANZO_KMS_TEST_OPENBAO_ADDR"),
        std::env::var("HANZO_KMS_TEST_OPENBAO_TOKEN"),
    ) {
        let c = OpenBaoConfig {
            address: Some(addr.clone()),
            token: Some(ConfigSecret::new(token.clone())),
            ..Default::default()
        };
        let p = RemoteProvider::open(
            OpenBao::from_config(&c, &|_| None).unwrap(),
            &settings(RemoteSigningKeys::KmsResident),
            true,
        )
        .unwrap();
        let raw = |id: &str, pt: &[u8], aad: &[u8]| {
            let body = format!(
                r#"{{"plaintext":"{}","associated_data":"{}"}}"#,
                B64.encode(pt),
                B64.encode(aad)
            );
            let r = agent
                .post(format!("{addr}/v1/transit/encrypt/{id}"))
                .header("X-Vault-Token", &token)
                .send(body.as_bytes())
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.into_body().read_to_vec().unwrap();
        };
        bench(&p, &raw);
        wrapped_vs_software(&p);
    } else {
        println!("skipped: OpenBao peer not running");
    }
    if let Ok(endpoint) = std::env::var("HANZO_KMS_TEST_AWS_ENDPOINT") {
        let c = AwsKmsConfig {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.clone()),
            ..Default::default()
        };
        let env = |n: &str| match n {
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("test".to_owned()),
            _ => None,
        };
        let p = RemoteProvider::open(
            AwsKms::from_config(&c, &env).unwrap(),
            &settings(RemoteSigningKeys::KmsResident),
            true,
        )
        .unwrap();
        let creds = hanzo_kms_remote::sigv4::Credentials {
            access_key_id: "test".into(),
            secret_access_key: ConfigSecret::new("test"),
            session_token: None,
        };
        let host = endpoint.trim_start_matches("http://").to_owned();
        let raw = |id: &str, pt: &[u8], aad: &[u8]| {
            let body = format!(
                r#"{{"KeyId":"{id}","Plaintext":"{}","EncryptionContext":{{"hanzo-kms-aad":"v1:{}"}}}}"#,
                B64.encode(pt),
                B64.encode(aad)
            );
            let date = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .unwrap();
            let headers = [
                ("content-type", "application/x-amz-json-1.1"),
                ("host", host.as_str()),
                ("x-amz-date", date.as_str()),
                ("x-amz-target", "TrentService.Encrypt"),
            ];
            let auth = hanzo_kms_remote::sigv4::authorization(
                &creds,
                "us-east-1",
                "kms",
                &date,
                &hanzo_kms_remote::sigv4::Request {
                    method: "POST",
                    path: "/",
                    query: "",
                    headers: &headers,
                    body: body.as_bytes(),
                },
            );
            let r = agent
                .post(format!("{endpoint}/"))
                .header("content-type", headers[0].1)
                .header("x-amz-date", &date)
                .header("x-amz-target", headers[3].1)
                .header("authorization", auth)
                .send(body.as_bytes())
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.into_body().read_to_vec().unwrap();
        };
        bench(&p, &raw);
        let w = RemoteProvider::open(
            AwsKms::from_config(&c, &env).unwrap(),
            &settings(RemoteSigningKeys::KmsWrapped),
            true,
        )
        .unwrap();
        wrapped_vs_software(&w);
    } else {
        println!("skipped: LocalStack peer not running");
    }
}
