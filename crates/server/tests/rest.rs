//! The REST API over real sockets: authentication on every route, tenant isolation, the error
//! contract, body limits, timeouts, rate limits, many connections, fail-closed audit, and a scan
//! of everything the server said for secrets.
//!
//! The client is a few lines of HTTP/1.1 over a TCP socket, so that what is tested is exactly
//! what goes over the wire.

use std::net::SocketAddr;
use std::time::Duration;

mod common;
use common::start;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let resp = parse_response(&raw);
    answer_is_documented(method, path, &resp);
    resp
}

/// The REST routes as (method, path, summary), from the server's route table.
static ROUTES: std::sync::LazyLock<Vec<(&str, &str, &str)>> = std::sync::LazyLock::new(|| {
    hanzo_kms_server::routes()
        .map(|(r, _)| (r.method, r.path, r.summary))
        .collect()
});

/// Every JSON answer any test here gets must match the schema the OpenAPI document gives for
/// its route and status.
fn answer_is_documented(method: &str, path: &str, resp: &Resp) {
    static DOC: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(hanzo_kms_server::openapi_document);
    let path = path.split('?').next().unwrap_or(path);
    let Some((_, route, _)) = ROUTES.iter().find(|(m, r, _)| {
        *m == method && {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (r.split('/').collect(), path.split('/').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || x.starts_with('{'))
        }
    }) else {
        return;
    };
    let Ok(body) = serde_json::from_str::<Value>(&resp.body) else {
        return;
    };
    let answer =
        &DOC["paths"][*route][method.to_ascii_lowercase()]["responses"][resp.status.to_string()];
    let answer = match answer["$ref"].as_str() {
        Some(r) => &DOC["components"]["responses"][r.rsplit('/').next().unwrap_or_default()],
        None => answer,
    };
    let schema = &answer["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {route} {}: no JSON schema documented for {}",
        resp.status,
        resp.body
    );
    if let Err(e) = conforms(schema, &body, &DOC["components"]["schemas"]) {
        panic!(
            "{method} {route} {}: {e}
{}",
            resp.status, resp.body
        );
    }
}

/// `v` against `schema`: the part of JSON Schema the OpenAPI document uses.
fn conforms(schema: &Value, v: &Value, components: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        return conforms(&components[name], v, components);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            conforms(s, v, components)?;
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| conforms(s, v, components).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{matching} of oneOf match {v}"));
        }
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(k) => vec![k.as_str()],
        Value::Array(ks) => ks.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !kinds.contains(&kind) {
        return Err(format!("{v} is {kind}, not {kinds:?}"));
    }
    if let (Some(values), false) = (schema["enum"].as_array(), v.is_null())
        && !values.contains(v)
    {
        return Err(format!("{v} is not one of {values:?}"));
    }
    if let (Some(pattern), Some(text)) = (schema["pattern"].as_str(), v.as_str()) {
        // The document's patterns are all hex or decimal: ^0x[0-9a-fA-F]{64}$ and the like.
        let ok = match pattern {
            "^0x[0-9a-fA-F]{64}$" => text.len() == 66 && text.starts_with("0x"),
            "^0x[0-9a-fA-F]{40}$" => text.len() == 42 && text.starts_with("0x"),
            "^0x([0-9a-fA-F]{2})*$" => text.starts_with("0x") && text.len() % 2 == 0,
            "^[0-9]{1,78}$" => !text.is_empty() && text.len() <= 78,
            other => return Err(format!("pattern {other} is not known to this check")),
        };
        let digits = text.strip_prefix("0x").unwrap_or(text);
        if !ok || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{text} does not match {pattern}"));
        }
    }
    match v {
        Value::Object(o) => {
            let props = schema["properties"].as_object();
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if !o.contains_key(r) {
                    return Err(format!("{r} is missing from {v}"));
                }
            }
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => conforms(s, x, components).map_err(|e| format!("{k}: {e}"))?,
                    None if schema["additionalProperties"] == false => {
                        return Err(format!("{k} is not documented"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                conforms(&schema["items"], x, components).map_err(|e| format!("[{i}]: {e}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Bodies here are small and sent with Content-Length (or chunked, which we undo simply).
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Resp {
        status,
        headers: head.to_owned(),
        body,
    }
}

/// A concrete path for a route pattern.
fn concrete(path: &str) -> String {
    path.replace("{name}", "model:acme:gpt4")
        .replace("{id}", "0000000000000000")
}

fn public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json"
    )
}

#[tokio::test]
async fn every_route_refuses_missing_bad_and_revoked_tokens_the_same_way() {
    let r = start("", |_| {}).await;
    let revoked = call(
        r.addr,
        "POST",
        "/v1/tokens",
        Some(&r.admin),
        r#"{"tenant":"acme","roles":["admin"]}"#,
    )
    .await
    .json();
    let revoked_token = revoked["token"].as_str().unwrap().to_owned();
    let id = revoked["id"].as_str().unwrap();
    assert_eq!(
        call(
            r.addr,
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&r.admin),
            ""
        )
        .await
        .status,
        200
    );
    for (method, path, _) in ROUTES.iter().filter(|(_, p, _)| !public(p)) {
        let path = concrete(path);
        let mut messages = Vec::new();
        for token in [None, Some("hkms_bad"), Some(revoked_token.as_str())] {
            let resp = call(r.addr, method, &path, token, "{}").await;
            assert_eq!(
                resp.status, 401,
                "{method} {path} with {token:?}: {}",
                resp.body
            );
            let v = resp.json();
            assert_eq!(v["error"]["code"], "unauthenticated");
            assert!(
                v["error"]["request_id"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            );
            messages.push(v["error"]["message"].clone());
        }
        assert!(
            messages.iter().all(|m| *m == messages[0]),
            "{method} {path}"
        );
    }
    // The 401's request id is the one in the audit record of the refusal.
    let resp = call(r.addr, "GET", "/v1/keys", Some("hkms_nope"), "").await;
    let id = resp.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let audit = call(
        r.addr,
        "GET",
        "/v1/audit?after=0&limit=1000",
        Some(&r.admin),
        "",
    )
    .await;
    assert!(
        audit.body.contains(&id),
        "request id {id} not in the audit log"
    );
    r.stop().await;
}

#[tokio::test]
async fn wrong_role_is_403_and_a_foreign_tenants_key_looks_missing() {
    let r = start("", |_| {}).await;
    let a = r.addr;
    for (c, m) in [("acme", "gpt4"), ("globex", "llama")] {
        let body = json!({"customer": c, "model": m}).to_string();
        assert_eq!(
            call(a, "POST", "/v1/keyspaces", Some(&r.admin), &body)
                .await
                .status,
            200
        );
    }
    let mk = |roles: &str| {
        let body = format!(r#"{{"tenant":"acme","roles":{roles}}}"#);
        let admin = r.admin.clone();
        async move {
            call(a, "POST", "/v1/tokens", Some(&admin), &body)
                .await
                .json()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let verify_only = mk(r#"["verify"]"#).await;
    let acme = mk(r#"["admin"]"#).await;
    // Wrong role: 403 with the error body.
    let resp = call(
        a,
        "POST",
        "/v1/keys",
        Some(&verify_only),
        r#"{"name":"data:acme:x"}"#,
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(resp.json()["error"]["code"], "permission_denied");
    // Foreign vs missing: same status, same body apart from the name and request id.
    let foreign = call(a, "GET", "/v1/keys/model:globex:llama", Some(&acme), "").await;
    let missing = call(a, "GET", "/v1/keys/model:acme:nope", Some(&acme), "").await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.status, missing.status);
    let (f, m) = (foreign.json(), missing.json());
    assert_eq!(f["error"]["code"], m["error"]["code"]);
    assert_eq!(
        f["error"]["message"]
            .as_str()
            .unwrap()
            .replace("globex:llama", "X"),
        m["error"]["message"]
            .as_str()
            .unwrap()
            .replace("acme:nope", "X")
    );
    // And the tenant's list shows only its keys.
    let listed = call(a, "GET", "/v1/keys", Some(&acme), "").await.json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["customer"] == "acme")
    );
    r.stop().await;
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_and_every_route_is_served() {
    let r = start("", |_| {}).await;
    let doc = call(r.addr, "GET", "/v1/openapi.json", None, "")
        .await
        .json();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let mut table: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    table.sort();
    assert_eq!(documented, table);
    for (method, path, _) in ROUTES.iter() {
        let resp = call(r.addr, method, &concrete(path), Some(&r.admin), "{}").await;
        assert!(
            !resp.body.contains("no route for") && resp.status != 405,
            "{method} {path}: {} {}",
            resp.status,
            resp.body
        );
        // The answer's status is one the document lists for the route.
        let op = &doc["paths"][*path][method.to_ascii_lowercase()];
        assert!(
            op["responses"].get(resp.status.to_string()).is_some(),
            "{method} {path}: {} is not documented",
            resp.status
        );
        assert_eq!(
            op["requestBody"].is_object(),
            *method == "POST",
            "{method} {path}"
        );
    }
    let resp = call(r.addr, "GET", "/v1/nothing", Some(&r.admin), "").await;
    assert_eq!(resp.status, 404);
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no route")
    );
    let resp = call(r.addr, "PUT", "/v1/keys", Some(&r.admin), "").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.json()["error"]["code"], "method_not_allowed");
    let allow = resp.headers.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("allow:")
            .map(|v| v.trim().to_owned())
    });
    let allow: Vec<String> = allow
        .unwrap_or_else(|| panic!("no Allow header: {}", resp.headers))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    assert!(
        allow.contains(&"get".into())
            && allow.contains(&"post".into())
            && !allow.contains(&"put".into()),
        "{allow:?}"
    );
    r.stop().await;
}

#[tokio::test]
async fn malformed_json_base64_and_oversized_bodies_get_clear_errors() {
    let r = start("", |o| o.max_body_bytes = 4096).await;
    let a = r.addr;
    let t = Some(r.admin.as_str());
    call(a, "POST", "/v1/keys", t, r#"{"name":"data:acme:x"}"#).await;
    for (body, needle) in [
        ("{not json", "request:"),
        (r#"{"plaintext": 5}"#, "plaintext"),
        (r#"{"plaintext":"aGk=","extra":1}"#, "extra"),
        (r#"{"plaintext":"%%%"}"#, "plaintext: not valid base64"),
    ] {
        let resp = call(a, "POST", "/v1/keys/data:acme:x/encrypt", t, body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let big = format!(r#"{{"plaintext":"{}"}}"#, "A".repeat(8192));
    let resp = call(a, "POST", "/v1/keys/data:acme:x/encrypt", t, &big).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert_eq!(resp.json()["error"]["code"], "payload_too_large");
    // A bad key name is a 400 naming it.
    let resp = call(a, "GET", "/v1/keys/not-a-name", t, "").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    let resp = call(a, "POST", "/v1/poai/sign", t, "[1,").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    let poai_request_id = resp.json()["error"]["request_id"].clone();

    // Every one of those refusals is in the audit log, under the route's operation and the
    // key its path names, as `denied` with the error's kind as the reason.
    let records = call(a, "GET", "/v1/audit?after=0", t, "").await.json();
    let denied: Vec<&Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "denied")
        .collect();
    let encrypts = denied
        .iter()
        .filter(|r| r["operation"] == "data.encrypt" && r["key"] == "data:acme:x")
        .count();
    assert_eq!(
        encrypts, 5,
        "4 malformed bodies and 1 oversized: {denied:#?}"
    );
    assert!(
        denied
            .iter()
            .all(|r| r["reason"] == "invalid_argument" && r["principal"].is_string()),
        "{denied:#?}"
    );
    assert!(
        denied
            .iter()
            .any(|r| r["operation"] == "key.show" && r["key"] == "not-a-name"),
        "{denied:#?}"
    );
    assert!(
        denied
            .iter()
            .any(|r| r["operation"] == "poai.sign" && r["request_id"] == poai_request_id),
        "{denied:#?}"
    );
    assert_eq!(
        call(a, "GET", "/v1/audit/verify", t, "").await.json()["valid"],
        true
    );
    r.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_by_the_request_timeout() {
    let r = start("", |o| o.request_timeout = Duration::from_millis(500)).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"na",
        r.admin
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server kept waiting for the slow body");
    let resp = parse_response(&raw);
    assert_eq!(resp.status, 408, "{}", resp.body);
    assert_eq!(resp.json()["error"]["code"], "timeout");
    // Audited: the request's operation and principal (the token), `error` with the reason `timeout`, under
    // the request id of the 408's body.
    let id = resp.json()["error"]["request_id"].clone();
    let records = call(r.addr, "GET", "/v1/audit?after=0", Some(&r.admin), "")
        .await
        .json();
    let cut: Vec<&Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|rec| rec["request_id"] == id)
        .collect();
    assert_eq!(cut.len(), 1, "{records:#}");
    assert_eq!(records[1]["operation"], "token.create", "{records:#}");
    assert_eq!(
        (
            &cut[0]["operation"],
            &cut[0]["outcome"],
            &cut[0]["reason"],
            &cut[0]["principal"]
        ),
        (
            &json!("key.create"),
            &json!("error"),
            &json!("timeout"),
            // The admin token, whose creation is the second record.
            &records[1]["key"]
        ),
        "{records:#}"
    );
    assert!(cut[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    // Counted as a timeout, and under its route and status; so are other requests, a route that
    // does not exist as "unmatched", each status of a route apart.
    call(r.addr, "GET", "/v1/keys", Some(&r.admin), "").await;
    call(r.addr, "GET", "/v1/keys", None, "").await;
    call(r.addr, "GET", "/v1/nowhere", None, "").await;
    let metrics = call(r.addr, "GET", "/metrics", None, "").await.body;
    for line in [
        "hanzo_kms_request_timeouts_total 1",
        r#"hanzo_kms_requests_total{route="/v1/keys",status="408"} 1"#,
        r#"hanzo_kms_requests_total{route="/v1/keys",status="200"} 1"#,
        r#"hanzo_kms_requests_total{route="/v1/keys",status="401"} 1"#,
        r#"hanzo_kms_requests_total{route="unmatched",status="404"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    r.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_are_counted() {
    let r = start(
        "rate_limits:\n  per_tenant: {per_second: 1, burst: 3}\n",
        |_| {},
    )
    .await;
    let a = r.addr;
    call(
        a,
        "POST",
        "/v1/keys",
        Some(&r.admin),
        r#"{"name":"data:acme:x"}"#,
    )
    .await;
    let token = call(
        a,
        "POST",
        "/v1/tokens",
        Some(&r.admin),
        r#"{"tenant":"acme","roles":["encrypt"]}"#,
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let resp = call(
            a,
            "POST",
            "/v1/keys/data:acme:x/encrypt",
            Some(&token),
            r#"{"plaintext":"aGk="}"#,
        )
        .await;
        statuses.push(resp.status);
        if resp.status == 429 {
            limited = Some(resp);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let limited = limited.expect("a 429 after the burst");
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert!(
        limited
            .headers
            .to_ascii_lowercase()
            .contains("retry-after: 1"),
        "{}",
        limited.headers
    );
    let metrics = call(a, "GET", "/metrics", None, "").await.body;
    let n: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hanzo_kms_rate_limited_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 1, "{metrics}");
    r.stop().await;
}

#[tokio::test]
async fn many_connections_at_once_are_all_served() {
    let r = start("", |_| {}).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let a = r.addr;
            tokio::spawn(async move { call(a, "GET", "/healthz", None, "").await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    r.stop().await;
}

#[tokio::test]
async fn when_the_audit_log_fails_the_request_fails_and_returns_nothing() {
    let r = start("", |_| {}).await;
    let a = r.addr;
    let t = Some(r.admin.as_str());
    call(a, "POST", "/v1/keys", t, r#"{"name":"data:acme:x"}"#).await;
    let ok = call(
        a,
        "POST",
        "/v1/keys/data:acme:x/encrypt",
        t,
        r#"{"plaintext":"c2VjcmV0"}"#,
    )
    .await;
    let ct = ok.json()["ciphertext"].as_str().unwrap().to_owned();
    // Make every audit insert fail, from outside the server.
    let url = format!("sqlite://{}", r.dir.path().join("kms.db").display());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let body = json!({ "ciphertext": ct }).to_string();
    let resp = call(a, "POST", "/v1/keys/data:acme:x/decrypt", t, &body).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    let v = resp.json();
    assert_eq!(v["error"]["code"], "audit_failure");
    assert_eq!(
        v["error"]["message"], "service unavailable",
        "a 5xx body is generic"
    );
    assert!(!resp.body.contains("plaintext") && !resp.body.contains("c2VjcmV0"));
    r.stop().await;
}

#[tokio::test]
async fn a_full_session_leaks_no_token_master_key_or_data_key() {
    let r = start("", |_| {}).await;
    let a = r.addr;
    let t = Some(r.admin.as_str());
    let said = std::cell::RefCell::new(String::new());
    let go = |resp: Resp| {
        said.borrow_mut().push_str(&resp.headers);
        said.borrow_mut().push_str(&resp.body);
        resp
    };
    go(call(
        a,
        "POST",
        "/v1/keyspaces",
        t,
        r#"{"customer":"acme","model":"gpt4"}"#,
    )
    .await);
    let tok = go(call(
        a,
        "POST",
        "/v1/tokens",
        t,
        r#"{"tenant":"acme","roles":["admin"]}"#,
    )
    .await)
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dk = go(call(
        a,
        "POST",
        "/v1/keys/model:acme:gpt4/datakey",
        Some(&tok),
        "{}",
    )
    .await)
    .json();
    let dek = dk["plaintext"].as_str().unwrap().to_owned();
    let unwrapped = go(call(
        a,
        "POST",
        "/v1/keys/model:acme:gpt4/unwrap",
        Some(&tok),
        &json!({"ciphertext": dk["ciphertext"]}).to_string(),
    )
    .await)
    .json();
    assert_eq!(unwrapped["plaintext"], dek.as_str());
    // From here on, nothing we say may contain a secret.
    said.borrow_mut().clear();
    let att = json!({"model_id":"acme:gpt4","input_hash":format!("0x{}", "11".repeat(32)),
        "output_hash":format!("0x{}", "22".repeat(32)),"timestamp":hanzo_kms_service::now_secs(),
        "compute_time_ms":5,"node_id":"n1"});
    let signed = go(call(
        a,
        "POST",
        "/v1/poai/sign",
        Some(&tok),
        &json!({"key":"poai:acme:gpt4","attestation":att}).to_string(),
    )
    .await)
    .json();
    assert_eq!(
        go(call(
            a,
            "POST",
            "/v1/poai/verify",
            Some(&tok),
            &signed.to_string()
        )
        .await)
        .json()["valid"],
        true
    );
    // The signature went through the group committer; a small WAL never made it wait.
    let metrics = go(call(a, "GET", "/metrics", None, "").await).body;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(counter("hanzo_kms_group_commit_requests_total") >= 1);
    assert_eq!(counter("hanzo_kms_wal_limit_checkpoints_total"), 0);
    // Reported beside the WAL syncs (it panics when missing).
    counter("hanzo_kms_store_checkpoints_total");
    // A labelled counter, in seconds.
    let labelled = |metric: &str, label: &str, value: &str| -> f64 {
        let name = format!("{metric}{{{label}=\"{value}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // The committer's time per phase: the signature's transaction took some.
    let seconds = |phase: &str| labelled("hanzo_kms_group_commit_seconds_total", "phase", phase);
    assert!(seconds("commit") > 0.0 && seconds("sync") > 0.0);
    assert!(seconds("answer") >= 0.0 && seconds("checkpoint") >= 0.0);
    // The signature's wait for its batch and for its answer to be picked up: the answer is
    // handed from the committer's thread to the runtime, which takes some time.
    let waited = |wait: &str| {
        labelled(
            "hanzo_kms_group_commit_request_wait_seconds_total",
            "wait",
            wait,
        )
    };
    assert!(waited("queue") >= 0.0 && waited("wakeup") > 0.0);
    // One signature leaves the WAL far below the size that starts a checkpoint.
    assert_eq!(counter("hanzo_kms_group_commit_catch_ups_total"), 0);
    go(call(
        a,
        "POST",
        "/v1/keys/model:acme:gpt4/decrypt",
        Some(&tok),
        r#"{"ciphertext":"hkms:v1:AAAA"}"#,
    )
    .await);
    go(call(a, "GET", "/v1/keys/model:globex:x", Some(&tok), "").await);
    go(call(a, "GET", "/v1/audit?after=0&limit=1000", t, "").await);
    go(call(a, "GET", "/v1/tokens", t, "").await);
    go(call(a, "GET", "/v1/audit/verify", t, "").await);
    let master = std::fs::read_to_string(r.dir.path().join("master.key")).unwrap();
    for (what, secret) in [
        ("admin token", &r.admin[22..]),
        ("tenant token", &tok[22..]),
        ("data key", dek.as_str()),
        ("master key", master.trim()),
    ] {
        let said = said.borrow();
        assert!(!said.contains(secret), "{what} leaked in:\n{said}");
    }
    let audit = call(a, "GET", "/v1/audit/verify", t, "").await.json();
    assert_eq!(audit["valid"], true);
    r.stop().await;
}

#[tokio::test]
async fn api_keys_sign_and_verify_messages_and_typed_keys_refuse_raw_signing() {
    use sha3::Digest;
    let r = start("", |_| {}).await;
    let a = r.addr;
    let t = Some(r.admin.as_str());
    for (name, alg) in [
        ("api:acme:eth", "secp256k1"),
        ("api:acme:ed", "ed25519"),
        ("api:acme:p", "p256"),
    ] {
        let body = json!({"name": name, "algorithm": alg}).to_string();
        assert_eq!(call(a, "POST", "/v1/keys", t, &body).await.status, 200);
    }
    let msg = b"transfer 5 to bob";
    let m64 = base64_of(msg);

    // secp256k1 signs keccak256(message); the signature recovers to the key's address.
    let s = call(
        a,
        "POST",
        "/v1/keys/api:acme:eth/sign",
        t,
        &json!({ "message": m64 }).to_string(),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let s = s.json();
    let sig = hex::decode(s["signature"].as_str().unwrap().trim_start_matches("0x")).unwrap();
    assert_eq!(sig.len(), 65);
    let digest: [u8; 32] = sha3::Keccak256::digest(msg).into();
    let rec = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &sig[..64],
        secp256k1::ecdsa::RecoveryId::try_from(i32::from(sig[64]) - 27).unwrap(),
    )
    .unwrap();
    let pk = rec
        .recover_ecdsa(secp256k1::Message::from_digest(digest))
        .unwrap();
    let addr = sha3::Keccak256::digest(&pk.serialize_uncompressed()[1..]);
    let public = call(a, "GET", "/v1/keys/api:acme:eth/public", t, "")
        .await
        .json();
    assert_eq!(
        public["address"].as_str().unwrap().to_ascii_lowercase(),
        format!("0x{}", hex::encode(&addr[12..]))
    );
    assert_eq!(s["signer"], public["address"]);

    // Verify: the right message is valid at version 1, another message is not.
    let v = call(
        a,
        "POST",
        "/v1/keys/api:acme:eth/verify",
        t,
        &json!({"message": m64, "signature": s["signature"]}).to_string(),
    )
    .await
    .json();
    assert_eq!(v, json!({"valid": true, "version": 1}));
    let v = call(
        a,
        "POST",
        "/v1/keys/api:acme:eth/verify",
        t,
        &json!({"message": base64_of(b"transfer 6 to bob"), "signature": s["signature"]})
            .to_string(),
    )
    .await
    .json();
    assert_eq!(v, json!({"valid": false, "version": null}));

    // Batches, on Ed25519 and P-256; a signature survives rotation.
    for key in ["api:acme:ed", "api:acme:p"] {
        let msgs = [base64_of(b"one"), base64_of(b"two")];
        let b = call(
            a,
            "POST",
            &format!("/v1/keys/{key}/sign"),
            t,
            &json!({ "messages": msgs }).to_string(),
        )
        .await
        .json();
        let sigs = b["signatures"].as_array().unwrap();
        assert_eq!(sigs.len(), 2);
        call(a, "POST", &format!("/v1/keys/{key}/rotate"), t, "").await;
        let items = json!([
            {"message": msgs[0], "signature": sigs[0]["signature"]},
            {"message": msgs[1], "signature": sigs[0]["signature"]},
            {"message": msgs[1], "signature": sigs[1]["signature"]},
        ]);
        let v = call(
            a,
            "POST",
            &format!("/v1/keys/{key}/verify"),
            t,
            &json!({ "items": items }).to_string(),
        )
        .await
        .json();
        assert_eq!(
            v["verdicts"],
            json!([{"valid": true, "version": 1}, {"valid": false, "version": null}, {"valid": true, "version": 1}]),
            "{key}"
        );
    }

    // Misuse is refused with a reason: prehashed on Ed25519, raw signing with a PoAI key.
    let e = call(
        a,
        "POST",
        "/v1/keys/api:acme:ed/sign",
        t,
        &json!({"message": base64_of(&[0; 32]), "prehashed": true}).to_string(),
    )
    .await;
    assert_eq!(e.status, 400);
    assert!(e.body.contains("secp256k1 and p256 keys"), "{}", e.body);
    call(
        a,
        "POST",
        "/v1/keyspaces",
        t,
        r#"{"customer":"acme","model":"m1"}"#,
    )
    .await;
    let e = call(
        a,
        "POST",
        "/v1/keys/poai:acme:m1/sign",
        t,
        &json!({ "message": m64 }).to_string(),
    )
    .await;
    assert_eq!(e.status, 400);
    assert!(e.body.contains("/v1/poai/sign"), "{}", e.body);
    r.stop().await;
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn undecodable_paths_json_arrays_and_far_audit_positions_get_clear_answers() {
    let r = start("", |_| {}).await;
    let a = r.addr;
    let t = Some(r.admin.as_str());
    call(a, "POST", "/v1/keys", t, r#"{"name":"data:acme:x"}"#).await;

    // A path parameter that is not UTF-8 once percent-decoded: the API's JSON error, audited.
    for (method, path, operation) in [
        ("GET", "/v1/keys/data:acme:%FF", "key.show"),
        ("POST", "/v1/keys/data:acme:%C3%28/encrypt", "data.encrypt"),
        ("DELETE", "/v1/tokens/%FF", "token.revoke"),
    ] {
        let resp = call(a, method, path, t, r#"{"plaintext":"aGk="}"#).await;
        assert_eq!(resp.status, 400, "{path}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["error"]["code"], "invalid_argument", "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("UTF-8"),
            "{path}: {v}"
        );
        let rec = audit_record_of(a, t, &v["error"]["request_id"])
            .await
            .unwrap_or_else(|| panic!("{path}: not audited"));
        assert_eq!(
            (&rec["operation"], &rec["outcome"], &rec["reason"]),
            (
                &json!(operation),
                &json!("denied"),
                &json!("invalid_argument")
            ),
            "{path}: {rec}"
        );
    }

    // serde would read a struct from an array by position; every body is an object.
    for (path, body) in [
        ("/v1/keys", r#"["data:acme:y"]"#),
        ("/v1/tokens", r#"["acme", ["admin"]]"#),
        ("/v1/keyspaces", r#"["acme", "m1"]"#),
        ("/v1/keys/data:acme:x/encrypt", r#"["aGk="]"#),
        ("/v1/keys/data:acme:x/datakey", r#"  [""]"#),
        ("/v1/poai/sign", "[]"),
    ] {
        let resp = call(a, "POST", path, t, body).await;
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{path}: {v}"
        );
    }
    // And an array in place of a nested object, named by its place in the body.
    let h32 = format!("0x{}", "11".repeat(32));
    for (path, body, place) in [
        (
            "/v1/poai/sign",
            format!(
                r#"{{"key":"poai:acme:gpt4","attestation":["acme:gpt4","{h32}","{h32}",1767225600,1500,"n"]}}"#
            ),
            "attestation",
        ),
        (
            "/v1/keys/api:acme:s/verify",
            r#"{"items":[["aGk=","0x00"]]}"#.to_owned(),
            "items[0]",
        ),
    ] {
        let resp = call(a, "POST", path, t, &body).await;
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert_eq!(
            v["error"]["message"],
            format!("request: {place}: expected a JSON object, found an array"),
            "{path}: {v}"
        );
    }
    assert_eq!(
        call(a, "GET", "/v1/keys/data:acme:y", t, "").await.status,
        404
    );
    assert_eq!(
        call(a, "GET", "/v1/keys?prefix=model:acme:m1", t, "")
            .await
            .json(),
        json!([])
    );
    // Rotation takes no options: an empty body or {} rotates, anything else is refused.
    let rotate = "/v1/keys/data:acme:x/rotate";
    for body in [r#"{"algorithm":"aes-256-gcm"}"#, "[]", "x"] {
        let resp = call(a, "POST", rotate, t, body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
    }
    for (body, version) in [("", 2), ("{}", 3), (" \n", 4)] {
        let resp = call(a, "POST", rotate, t, body).await;
        assert_eq!(resp.status, 200, "{body:?}: {}", resp.body);
        assert_eq!(resp.json()["primary_version"], version, "{body:?}");
    }

    // A single message or signature is named as given, not as the first of a list, and the
    // refusal is audited.
    for (route, body, needle) in [
        (
            "sign",
            r#"{"message":"%%%"}"#,
            "request: message: not valid base64",
        ),
        (
            "sign",
            r#"{"messages":["aGk=","%%%"]}"#,
            "request: messages[1]: not valid base64",
        ),
        (
            "verify",
            r#"{"message":"aGk=","signature":"0xZZ"}"#,
            "request: signature: not valid hex",
        ),
        (
            "verify",
            r#"{"items":[{"message":"%","signature":"0x00"}]}"#,
            "request: items[0].message: not valid base64",
        ),
        (
            "verify",
            r#"{"message":"aGk="}"#,
            "request: give either message and signature, or a non-empty items list",
        ),
    ] {
        let resp = call(a, "POST", &format!("/v1/keys/data:acme:x/{route}"), t, body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["error"]["message"], needle, "{body}");
        let rec = audit_record_of(a, t, &v["error"]["request_id"])
            .await
            .unwrap_or_else(|| panic!("{body}: not audited"));
        assert_eq!(rec["outcome"], "denied", "{body}: {rec}");
    }

    // A position past every record is past the end (a wrapping cast once read the log again
    // from its start).
    for after in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let resp = call(a, "GET", &format!("/v1/audit?after={after}"), t, "").await;
        assert_eq!(resp.status, 200, "{after}: {}", resp.body);
        assert_eq!(resp.json(), json!([]), "after={after}");
    }
    let resp = call(a, "GET", "/v1/audit?after=18446744073709551616", t, "").await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(
        call(a, "GET", "/v1/audit/verify", t, "").await.json()["valid"],
        true
    );
    r.stop().await;
}

/// The audit record of the request with this id, if there is one (among the first 1,000).
async fn audit_record_of(a: SocketAddr, t: Option<&str>, request_id: &Value) -> Option<Value> {
    let records = call(a, "GET", "/v1/audit?after=0&limit=1000", t, "")
        .await
        .json();
    records
        .as_array()?
        .iter()
        .find(|rec| &rec["request_id"] == request_id)
        .cloned()
}

/// Read from `s` until the peer closes, for at most `limit`; `None` if it was still open.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut raw))
        .await
        .ok()
        .map(|r| {
            r.unwrap_or(0);
            raw
        })
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let r = start("", |o| o.header_read_timeout = Duration::from_millis(300)).await;
    // Slowloris: the headers never finish.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let raw = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(
        raw.is_some(),
        "a connection with unfinished headers was kept open"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A keep-alive connection, answered and then idle, is closed as well.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was kept open");
    let resp = parse_response(&raw);
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok\n"));
    // Before the protocol is known (hyper's own timer does not run yet): a connection that sends
    // nothing, and one that sends part of HTTP/2's preface.
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let started = std::time::Instant::now();
        let raw = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(raw.is_some(), "{first:?}: the connection was kept open");
        assert!(started.elapsed() >= Duration::from_millis(250), "{first:?}");
    }
    // The whole preface and then silence: the server's HTTP/2 ping goes unanswered.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(raw.is_some(), "a silent HTTP/2 connection was kept open");
    // The server is still serving.
    assert_eq!(call(r.addr, "GET", "/healthz", None, "").await.status, 200);
    r.stop().await;
}

#[tokio::test]
async fn a_half_sent_request_does_not_hold_up_shutdown() {
    let r = start("", |o| {
        o.header_read_timeout = Duration::from_secs(5);
        o.request_timeout = Duration::from_secs(30);
    })
    .await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    r.stop().await;
    // At most the header timeout, not the 31.9 s grace for requests in flight.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    assert!(
        read_until_closed(&mut s, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
}

/// Every route answered successfully at least once; with `call`'s check, each answer is
/// validated against the response schema the OpenAPI document gives for its route.
#[tokio::test]
async fn every_route_answers_as_its_response_schema_says() {
    let r = start("", |_| {}).await;
    let (a, t) = (r.addr, Some(r.admin.as_str()));
    let ok = |resp: Resp, what: &str| {
        assert_eq!(resp.status, 200, "{what}: {}", resp.body);
        resp
    };
    let post = |path: &'static str, body: Value| async move {
        ok(call(a, "POST", path, t, &body.to_string()).await, path).json()
    };
    post(
        "/v1/keyspaces",
        json!({"customer": "acme", "model": "gpt4"}),
    )
    .await;
    post("/v1/keys", json!({"name": "data:acme:d"})).await;
    post(
        "/v1/keys",
        json!({"name": "api:acme:s", "algorithm": "secp256k1"}),
    )
    .await;
    for path in [
        "/v1/keys",
        "/v1/keys/data:acme:d",
        "/v1/keys/api:acme:s/public",
        "/v1/audit?after=0&limit=5",
        "/v1/audit/verify",
        "/v1/tokens",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
    ] {
        ok(call(a, "GET", path, t, "").await, path);
    }
    post("/v1/keys/data:acme:d/rotate", json!({})).await;
    let ct = post("/v1/keys/data:acme:d/encrypt", json!({"plaintext": "aGk="})).await;
    post(
        "/v1/keys/data:acme:d/decrypt",
        json!({"ciphertext": ct["ciphertext"]}),
    )
    .await;
    let dk = post("/v1/keys/data:acme:d/datakey", json!({})).await;
    post(
        "/v1/keys/data:acme:d/unwrap",
        json!({"ciphertext": dk["ciphertext"]}),
    )
    .await;
    let sig = post("/v1/keys/api:acme:s/sign", json!({"message": "aGk="})).await;
    post(
        "/v1/keys/api:acme:s/sign",
        json!({"messages": ["aGk=", "aGk="]}),
    )
    .await;
    post(
        "/v1/keys/api:acme:s/verify",
        json!({"message": "aGk=", "signature": sig["signature"]}),
    )
    .await;
    post(
        "/v1/keys/api:acme:s/verify",
        json!({"items": [{"message": "aGk=", "signature": sig["signature"]}]}),
    )
    .await;
    let mk = post("/v1/models/model:acme:gpt4/datakey", json!({})).await;
    post(
        "/v1/models/model:acme:gpt4/unwrap",
        json!({"header": mk["header"]}),
    )
    .await;
    // The model id (`acme:gpt4`, as the CLI and the file's model_id spell it) names the same key.
    let short = post(
        "/v1/models/acme:gpt4/unwrap",
        json!({"header": mk["header"]}),
    )
    .await;
    assert_eq!(short["data_key"], mk["data_key"]);
    assert_eq!(short["key"], "model:acme:gpt4");
    let att = |node: &str| {
        json!({"model_id": "acme:gpt4", "input_hash": format!("0x{}", "11".repeat(32)),
            "output_hash": format!("0x{}", "22".repeat(32)),
            "timestamp": hanzo_kms_service::now_secs(), "compute_time_ms": 5, "node_id": node})
    };
    let signed = post(
        "/v1/poai/sign",
        json!({"key": "poai:acme:gpt4", "attestation": att("n1")}),
    )
    .await;
    post("/v1/poai/verify", signed.clone()).await;
    let batch = post(
        "/v1/poai/sign-batch",
        json!({"key": "poai:acme:gpt4", "attestations": [att("n2"), att("n3")]}),
    )
    .await;
    let item = batch[1].clone();
    post("/v1/poai/verify-item", item).await;
    let settlement = json!({"job_id": "job-1",
        "provider": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "consumer": "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "amount": "1000",
        "attestation_digest": signed["digest"], "timestamp": hanzo_kms_service::now_secs()});
    let settled = post(
        "/v1/hmm/sign",
        json!({"key": "hmm:acme:gpt4", "settlement": settlement, "attestation": signed}),
    )
    .await;
    post(
        "/v1/hmm/verify",
        json!({"signed": settled, "attestation": signed}),
    )
    .await;
    let created = post("/v1/tokens", json!({"tenant": "acme", "roles": ["sign"]})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    ok(
        call(a, "DELETE", &format!("/v1/tokens/{id}"), t, "").await,
        "revoke",
    );
    r.stop().await;
}
