//! Regressions for the holes the black-box attack found (issue 26), over real sockets: REST
//! with a few lines of HTTP/1.1, gRPC with tonic.

use std::net::SocketAddr;

use hanzo_kms_proto::v1 as pb;
use pb::kms_client::KmsClient;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;

mod common;
use common::start;

struct Resp {
    status: u16,
    headers: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 request with exactly these header lines.
async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[String], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Chunked bodies are not used by this server for JSON answers of this size.
    Resp {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> Resp {
    raw(
        addr,
        method,
        path,
        &[format!("Authorization: Bearer {token}")],
        body,
    )
    .await
}

fn now() -> u64 {
    hanzo_kms_service::now_secs() as u64
}

fn attestation(node: &str) -> Value {
    json!({"model_id": "m", "input_hash": format!("0x{}", "11".repeat(32)),
        "output_hash": format!("0x{}", "22".repeat(32)), "timestamp": now(),
        "compute_time_ms": 5, "node_id": node})
}

fn settlement(digest: &str, job: &str) -> Value {
    json!({"job_id": job, "provider": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "consumer": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", "amount": "1000",
        "attestation_digest": digest, "timestamp": now()})
}

/// A tenant's token with `roles`, made with the admin token.
async fn token(addr: SocketAddr, admin: &str, tenant: &str, roles: &[&str]) -> String {
    let r = call(
        addr,
        "POST",
        "/v1/tokens",
        admin,
        &json!({"tenant": tenant, "roles": roles}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_owned()
}

async fn audit(addr: SocketAddr, admin: &str) -> Vec<Value> {
    let r = call(addr, "GET", "/v1/audit?after=0&limit=1000", admin, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn another_tenants_attestation_cannot_be_settled_over_rest_or_grpc() {
    let r = start("", |_| {}).await;
    for t in ["acme", "beta"] {
        let k = call(
            r.addr,
            "POST",
            "/v1/keyspaces",
            &r.admin,
            &json!({"customer": t, "model": "m"}).to_string(),
        )
        .await;
        assert_eq!(k.status, 200, "{}", k.body);
    }
    let acme = token(r.addr, &r.admin, "acme", &["sign", "verify"]).await;
    let beta = token(r.addr, &r.admin, "beta", &["sign", "verify"]).await;
    let signed = call(
        r.addr,
        "POST",
        "/v1/poai/sign",
        &acme,
        &json!({"key": "poai:acme:m", "attestation": attestation("n")}).to_string(),
    )
    .await
    .json();
    let digest = signed["digest"].as_str().unwrap().to_owned();
    // REST: beta names acme's digest alone, then carries acme's attestation: both refused.
    for body in [
        json!({"key": "hmm:beta:m", "settlement": settlement(&digest, "g1")}),
        json!({"key": "hmm:beta:m", "settlement": settlement(&digest, "g2"), "attestation": signed}),
    ] {
        let resp = call(r.addr, "POST", "/v1/hmm/sign", &beta, &body.to_string()).await;
        assert_eq!(resp.status, 400, "{}", resp.body);
    }
    // gRPC: the same grief.
    let mut c = KmsClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let with = |t: &str, m| {
        let mut req = tonic::Request::new(m);
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {t}")).unwrap(),
        );
        req
    };
    let pb_settlement: pb::HmmSettlement =
        serde_json::from_value(settlement(&digest, "g3")).unwrap();
    let pb_signed: pb::SignedAttestation = serde_json::from_value(signed.clone()).unwrap();
    let e = c
        .sign_hmm_settlement(with(
            &beta,
            pb::SignHmmSettlementRequest {
                key: "hmm:beta:m".into(),
                settlement: Some(pb_settlement.clone()),
                attestation: Some(pb_signed.clone()),
                attestation_item: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // Acme's own settlement still goes through: nothing was consumed.
    let ok = c
        .sign_hmm_settlement(with(
            &acme,
            pb::SignHmmSettlementRequest {
                key: "hmm:acme:m".into(),
                settlement: Some(pb_settlement),
                attestation: Some(pb_signed),
                attestation_item: None,
            },
        ))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    r.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused_on_both_apis() {
    let r = start("", |_| {}).await;
    let two = [
        format!("Authorization: Bearer {}", r.admin),
        "Authorization: Bearer hkms_0000000000000000_x".to_owned(),
    ];
    let resp = raw(r.addr, "GET", "/v1/keys", &two, "").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(
        resp.body.contains("one Authorization header"),
        "{}",
        resp.body
    );
    // Even two copies of the valid one.
    let same = [
        format!("Authorization: Bearer {}", r.admin),
        format!("Authorization: Bearer {}", r.admin),
    ];
    assert_eq!(raw(r.addr, "GET", "/v1/keys", &same, "").await.status, 400);
    let refused = audit(r.addr, &r.admin)
        .await
        .into_iter()
        .filter(|e| e["reason"] == "several authorization headers")
        .count();
    assert_eq!(refused, 2);
    // gRPC: two `authorization` entries.
    let mut c = KmsClient::connect(format!("http://{}", r.grpc))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::ListKeysRequest::default());
    for v in [format!("Bearer {}", r.admin), format!("Bearer {}", r.admin)] {
        req.metadata_mut()
            .append("authorization", MetadataValue::try_from(v).unwrap());
    }
    let e = c.list_keys(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    r.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_401s_name_it() {
    let r = start("", |_| {}).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = raw(
            r.addr,
            "GET",
            "/v1/keys",
            &[format!("Authorization: {scheme} {}", r.admin)],
            "",
        )
        .await;
        assert_eq!(resp.status, 200, "{scheme}: {}", resp.body);
    }
    for headers in [vec![], vec!["Authorization: Basic dXNlcjpwYXNz".to_owned()]] {
        let resp = raw(r.addr, "GET", "/v1/keys", &headers, "").await;
        assert_eq!(resp.status, 401);
        assert!(
            resp.headers
                .contains("www-authenticate: bearer realm=\"hanzo-kms\""),
            "{}",
            resp.headers
        );
    }
    r.stop().await;
}

#[tokio::test]
async fn null_is_refused_where_the_document_types_an_object_or_array() {
    let r = start("", |_| {}).await;
    call(
        r.addr,
        "POST",
        "/v1/keyspaces",
        &r.admin,
        r#"{"customer":"acme","model":"m"}"#,
    )
    .await;
    let signed = call(
        r.addr,
        "POST",
        "/v1/poai/sign",
        &r.admin,
        &json!({"key": "poai:acme:m", "attestation": attestation("n")}).to_string(),
    )
    .await
    .json();
    let digest = signed["digest"].as_str().unwrap().to_owned();
    let mut with_null_pq = signed.clone();
    with_null_pq["pq"] = Value::Null;
    let mut without_nonce = signed.clone();
    without_nonce["attestation"]
        .as_object_mut()
        .unwrap()
        .remove("nonce");
    for (path, body) in [
        (
            "/v1/hmm/sign",
            json!({"key": "hmm:acme:m", "settlement": settlement(&digest, "j"), "attestation": null}),
        ),
        ("/v1/hmm/verify", json!({"signed": {}, "attestation": null})),
        (
            "/v1/keys/api:acme:x/sign",
            json!({"messages": null, "message": "aGk="}),
        ),
        (
            "/v1/keys",
            json!({"name": "data:acme:n", "algorithm": null}),
        ),
        ("/v1/poai/verify", with_null_pq),
        // A signed attestation has the nonce it was signed with.
        ("/v1/poai/verify", without_nonce),
    ] {
        let resp = call(r.addr, "POST", path, &r.admin, &body.to_string()).await;
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.body);
    }
    r.stop().await;
}

#[tokio::test]
async fn the_document_declares_the_query_parameters_the_nonce_and_every_outcome() {
    let doc = hanzo_kms_server::openapi_document();
    let names = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names("/v1/keys"), ["prefix"]);
    assert_eq!(names("/v1/audit"), ["after", "limit"]);
    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| -> Vec<String> {
        schemas[name]["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert!(required("SignedPoAIAttestation").contains(&"nonce".to_owned()));
    assert_eq!(
        schemas["SignedAttestation"]["properties"]["attestation"]["$ref"],
        "#/components/schemas/SignedPoAIAttestation"
    );
    let outcomes = &schemas["AuditRecord"]["properties"]["outcome"]["enum"];
    for o in ["ok", "denied", "error", "invalid"] {
        assert!(
            outcomes.as_array().unwrap().contains(&json!(o)),
            "{outcomes}"
        );
    }
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_at_once_and_recorded_sparingly() {
    let r = start(
        "auth:\n  failures_per_peer: {per_second: 1, burst: 5}\n",
        |_| {},
    )
    .await;
    // The admin's requests come from the same address: spent before the budget runs out.
    let before = audit(r.addr, &r.admin).await.len();
    let bad = "hkms_00000000000000aa_notasecret";
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(call(r.addr, "GET", "/v1/keys", bad, "").await.status);
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 401),
        "the first five fail as bad tokens: {statuses:?}"
    );
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 40, "{statuses:?}");
    // A good token from the blocked address waits too.
    let resp = call(r.addr, "GET", "/v1/keys", &r.admin, "").await;
    assert_eq!(resp.status, 429, "{}", resp.body);
    assert!(resp.headers.contains("retry-after:"), "{}", resp.headers);
    // Records: one per failed lookup, then a handful for all the quick refusals.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let records = audit(r.addr, &r.admin).await;
    let new: Vec<&Value> = records[before..]
        .iter()
        .filter(|e| e["operation"] == "authenticate")
        .collect();
    assert!(
        new.len() >= 5 && new.len() <= 10,
        "{} authenticate records for 51 refusals: {new:?}",
        new.len()
    );
    let metrics = raw(r.addr, "GET", "/metrics", &[], "").await.body;
    let throttled_metric = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hanzo_kms_auth_throttled_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(throttled_metric >= 40, "{throttled_metric}");
    r.stop().await;
}

/// Issue 26, "digest signing for P-256": `prehashed` signs a caller's SHA-256 digest with a p256
/// key (as AWS KMS's MessageType DIGEST does). The signature is ECDSA-SHA256 over the message the
/// digest came from, checked here with aws-lc-rs directly; our verify route accepts it both ways;
/// a digest of the wrong length and an ed25519 key are refused.
#[tokio::test]
async fn a_p256_key_signs_a_callers_sha256_digest() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let r = start("", |_| {}).await;
    for (name, alg) in [("api:acme:p", "p256"), ("api:acme:e", "ed25519")] {
        let resp = call(
            r.addr,
            "POST",
            "/v1/keys",
            &r.admin,
            &json!({"name": name, "algorithm": alg}).to_string(),
        )
        .await;
        assert!(resp.status < 300, "{}", resp.body);
    }
    let message = b"a message signed the AWS KMS way";
    let digest = sha2::Sha256::digest(message);
    let resp = call(
        r.addr,
        "POST",
        "/v1/keys/api:acme:p/sign",
        &r.admin,
        &json!({"message": b64(&digest), "prehashed": true}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let v = resp.json();
    let v = if v.is_array() { v[0].clone() } else { v };
    let sig = hex::decode(v["signature"].as_str().unwrap().trim_start_matches("0x")).unwrap();
    let public = call(r.addr, "GET", "/v1/keys/api:acme:p/public", &r.admin, "").await;
    assert_eq!(public.status, 200, "{}", public.body);
    let public = public.json();
    let public = hex::decode(
        public["public_key"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    assert_eq!(sig.len(), 64, "{v}");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
        .verify(message, &sig)
        .expect("the digest signature is ECDSA-SHA256 over the message");
    for (body, valid) in [
        (
            json!({"message": b64(&digest), "signature": b64(&sig), "prehashed": true}),
            true,
        ),
        (
            json!({"message": b64(message), "signature": b64(&sig)}),
            true,
        ),
        (
            json!({"message": b64(&[0u8; 32]), "signature": b64(&sig), "prehashed": true}),
            false,
        ),
    ] {
        let resp = call(
            r.addr,
            "POST",
            "/v1/keys/api:acme:p/verify",
            &r.admin,
            &body.to_string(),
        )
        .await;
        assert_eq!(resp.status, 200, "{body}: {}", resp.body);
        let v = resp.json();
        let v = if v.is_array() { v[0].clone() } else { v };
        assert_eq!(v["valid"], valid, "{body}: {v}");
    }
    let resp = call(
        r.addr,
        "POST",
        "/v1/keys/api:acme:p/sign",
        &r.admin,
        &json!({"message": b64(&digest[..31]), "prehashed": true}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(
        resp.body.contains("32-byte SHA-256 digest"),
        "{}",
        resp.body
    );
    let resp = call(
        r.addr,
        "POST",
        "/v1/keys/api:acme:e/sign",
        &r.admin,
        &json!({"message": b64(&digest), "prehashed": true}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(
        resp.body.contains("signs the message itself"),
        "{}",
        resp.body
    );
    r.stop().await;
}
