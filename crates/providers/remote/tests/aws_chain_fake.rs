//! AWS credentials from the standard chain's container endpoint and instance metadata service
//! (IMDSv2), served by FAKE endpoints on loopback (tests/common's `FakeHttp`; no real ECS task
//! or EC2 instance is at hand), then used to sign real requests to LocalStack (which accepts
//! any key; scripts/peers.sh exports HANZO_KMS_TEST_AWS_ENDPOINT). The tests that need
//! LocalStack print "skipped: peer not running" without it. Also on FAKE peers, because
//! LocalStack cannot do it: an AWS KMS that answers `ExpiredTokenException` once (LocalStack's
//! tokens do not expire), and an STS that records what it is sent (LocalStack ignores
//! signatures, and its tokens live an hour, too long to watch a refresh re-read the token
//! file); tests/aws_chain.rs runs the same STS flows at the real LocalStack. Every name here
//! says "fake".

use hanzo_kms_conformance::make;
use hanzo_kms_core::config::AwsKmsConfig;
use hanzo_kms_core::{Algorithm, ErrorKind, Provider};
use hanzo_kms_crypto::verify::verify;
use hanzo_kms_remote::{AwsKms, RemoteProvider};

mod common;
use common::{FakeHttp, assert_clear, json};

const SECRET: &str = "fake-secret-access-key-value";
const SESSION: &str = "fake-session-token-value";
const AUTH: &str = "fake-container-authorization-token";
const IMDS_TOKEN: &str = "fake-imds-session-token";

fn localstack() -> Option<String> {
    let e = std::env::var("HANZO_KMS_TEST_AWS_ENDPOINT").ok();
    if e.is_none() {
        eprintln!("skipped: peer not running (LocalStack; run scripts/peers.sh)");
    }
    e
}

fn section(endpoint: &str) -> AwsKmsConfig {
    AwsKmsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_owned()),
        max_retries: Some(1),
        ..Default::default()
    }
}

/// The credentials JSON both endpoints answer, expiring `secs` from now.
fn creds_json(n: usize, secs: i64) -> String {
    let exp = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let exp = exp
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    format!(
        r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ASIAFAKE{n}","SecretAccessKey":"{SECRET}{n}","Token":"{SESSION}{n}","Expiration":"{exp}","LastUpdated":"2026-01-01T00:00:00Z"}}"#
    )
}

/// An environment with nothing but `vars` (no keys, no credentials file).
fn env_of(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |n: &str| {
        vars.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                (n == "AWS_SHARED_CREDENTIALS_FILE").then(|| "/nonexistent/credentials".into())
            })
    }
}

fn open(
    c: &AwsKmsConfig,
    env: &dyn Fn(&str) -> Option<String>,
    test: &str,
) -> RemoteProvider<AwsKms> {
    let client = AwsKms::from_config(c, env).unwrap();
    common::open(
        client,
        &c.tuning(),
        &format!("t{}-{test}-", std::process::id()),
        true,
    )
    .unwrap()
}

/// A fake ECS/EKS container credentials endpoint: checks the Authorization header, hands out
/// credentials that expire `ttl` seconds after each request.
fn fake_container(ttl: i64) -> FakeHttp {
    FakeHttp::start(move |req, n| {
        if req.method != "GET" || req.path != "/v1/credentials" {
            return json("404 Not Found", "{}");
        }
        if req.header("authorization") != Some(AUTH) {
            return json("401 Unauthorized", r#"{"message":"bad token"}"#);
        }
        json("200 OK", creds_json(n, ttl))
    })
}

/// A fake IMDSv2: a session token from PUT, then the role and its credentials only with it.
fn fake_imds(role: Option<&'static str>) -> FakeHttp {
    FakeHttp::start(move |req, n| {
        let text = |s: &'static str, b: &str| (s, Vec::new(), b.to_owned());
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                    return text("400 Bad Request", "");
                }
                text("200 OK", IMDS_TOKEN)
            }
            ("GET", p) if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
                if req.header("x-aws-ec2-metadata-token") != Some(IMDS_TOKEN) {
                    return text("401 Unauthorized", "");
                }
                let rest = &p["/latest/meta-data/iam/security-credentials/".len()..];
                match (role, rest) {
                    (None, _) => text("404 Not Found", ""),
                    (Some(r), "") => text("200 OK", &format!("{r}\n")),
                    (Some(r), asked) if asked == r => json("200 OK", creds_json(n, 3600)),
                    _ => text("404 Not Found", ""),
                }
            }
            _ => text("404 Not Found", ""),
        }
    })
}

fn sign_and_verify(p: &RemoteProvider<AwsKms>, name: &str) {
    for alg in [Algorithm::P256, Algorithm::Secp256k1] {
        let k = make(p, name, 1, alg);
        let msg = [7u8; 32];
        let sig = p.sign(&k.r(), &msg).unwrap();
        assert!(
            verify(alg, k.public.as_ref().unwrap(), &msg, &sig.0),
            "{alg}"
        );
    }
}

#[test]
fn fake_container_endpoint_credentials_sign_at_localstack_and_are_refreshed() {
    let Some(endpoint) = localstack() else { return };
    // Credentials that expire in 302 s are fetched again 5 min before: after 2 s.
    let fake = fake_container(302);
    let dir = std::env::temp_dir().join(format!("hanzo-kms-aws-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{AUTH}\n")).unwrap();
    let env = env_of(vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", fake.url),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        // Lower in the chain than the container endpoint: never asked.
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://127.0.0.1:9".into(),
        ),
    ]);
    let p = open(&section(&endpoint), &env, "container");
    sign_and_verify(&p, "poai:acme:ecs");
    let asked = fake.requests();
    assert_eq!(asked.len(), 1, "fetched once at start: {asked:?}");
    assert_eq!(asked[0].header("authorization"), Some(AUTH));
    // Nothing secret in the client's Debug.
    let debug = format!("{:?} {:?}", p, p.service());
    assert!(debug.contains("container credentials endpoint"), "{debug}");
    for s in [SECRET, SESSION, AUTH] {
        assert!(!debug.contains(s), "{debug}");
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    sign_and_verify(&p, "poai:acme:ecs2");
    assert_eq!(fake.requests().len(), 2, "refreshed before the Expiration");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fake_imds_v2_credentials_sign_at_localstack() {
    let Some(endpoint) = localstack() else { return };
    let fake = fake_imds(Some("hanzo-kms-role"));
    let env = env_of(vec![(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        fake.url.clone(),
    )]);
    let p = open(&section(&endpoint), &env, "imds");
    sign_and_verify(&p, "poai:acme:ec2");
    let asked: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        asked,
        [
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/hanzo-kms-role",
        ]
    );
    // Credentials for an hour: not fetched again.
    sign_and_verify(&p, "poai:acme:ec2b");
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn fake_imds_without_a_role_is_a_config_error_naming_it() {
    let fake = fake_imds(None);
    let env = env_of(vec![(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        fake.url.clone(),
    )]);
    let e = AwsKms::from_config(&section("http://127.0.0.1:9"), &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "no credentials",
            "/nonexistent/credentials",
            "instance metadata service",
            &fake.url,
            "no IAM role",
        ],
        &[IMDS_TOKEN],
    );
}

#[test]
fn fake_container_endpoint_refusing_the_token_is_a_config_error_without_it() {
    let fake = fake_container(3600);
    let env = env_of(vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", fake.url),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "wrong-auth-token-value".into(),
        ),
    ]);
    let e = AwsKms::from_config(&section("http://127.0.0.1:9"), &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &["container", &fake.url, "HTTP 401", "refused"],
        &["wrong-auth-token-value"],
    );
    // A non-local plain-http FULL_URI is refused before any call.
    let env = env_of(vec![(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://creds.example.com/v1".into(),
    )]);
    let e = AwsKms::from_config(&section("http://127.0.0.1:9"), &env).unwrap_err();
    assert_clear(&e, "AWS KMS", &["AWS_CONTAINER_CREDENTIALS_FULL_URI"], &[]);
}

#[test]
fn fake_imds_credentials_and_session_token_are_the_ones_that_sign() {
    // A fake KMS endpoint records what it is sent: the access key id from IMDS in the SigV4
    // credential scope, the session token in x-amz-security-token.
    let imds = fake_imds(Some("hanzo-kms-role"));
    let kms = FakeHttp::start(|_, _| {
        json(
            "400 Bad Request",
            r#"{"__type":"NotFoundException","message":"Alias not found"}"#,
        )
    });
    let env = env_of(vec![(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        imds.url.clone(),
    )]);
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    use hanzo_kms_remote::RemoteKms;
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    let sent = kms.requests();
    let auth = sent[0].header("authorization").unwrap();
    // IMDS numbered its answer 2 (its third request).
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAFAKE2/")
            && auth.contains("x-amz-security-token"),
        "{auth}"
    );
    assert_eq!(
        sent[0].header("x-amz-security-token"),
        Some(&*format!("{SESSION}2"))
    );
    assert!(!auth.contains(SECRET));
}

#[test]
fn fake_kms_expired_token_once_fetches_credentials_again_and_the_retry_succeeds() {
    // The container endpoint hands out credentials valid for an hour, so only the service's
    // ExpiredTokenException can make the client fetch them again before then.
    let container = fake_container(3600);
    let kms = FakeHttp::start(|_, n| {
        if n == 0 {
            json(
                "400 Bad Request",
                r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#,
            )
        } else {
            json(
                "400 Bad Request",
                r#"{"__type":"NotFoundException","message":"Alias not found"}"#,
            )
        }
    });
    let env = env_of(vec![
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", container.url),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", AUTH.into()),
    ]);
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    assert_eq!(container.requests().len(), 1);
    use hanzo_kms_remote::RemoteKms;
    // The retried DescribeKey's answer (no such alias) is the call's answer.
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    assert_eq!(container.requests().len(), 2, "credentials fetched again");
    let sent = kms.requests();
    assert_eq!(sent.len(), 2, "the call was made once more");
    let key_of = |r: &common::FakeRequest| {
        let a = r.header("authorization").unwrap();
        a["AWS4-HMAC-SHA256 Credential=".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(key_of(&sent[0]), "ASIAFAKE0");
    assert_eq!(key_of(&sent[1]), "ASIAFAKE1");
    assert_eq!(
        sent[1].header("x-amz-security-token"),
        Some(&*format!("{SESSION}1"))
    );
    // A second ExpiredTokenException in a row is an error naming the source, not a loop.
    let kms = FakeHttp::start(|_, _| {
        json(
            "400 Bad Request",
            r#"{"__type":"ExpiredTokenException","message":"expired"}"#,
        )
    });
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    let e = client.find_root("root-kek").unwrap_err();
    assert_clear(
        &e,
        "AWS KMS",
        &["container credentials endpoint", "ExpiredTokenException"],
        &[SECRET, SESSION, AUTH],
    );
    assert_eq!(kms.requests().len(), 2);
}

/// A fake STS: answers AssumeRoleWithWebIdentity and AssumeRole with credentials numbered by
/// request and expiring `ttl` seconds later.
fn fake_sts(ttl: i64) -> FakeHttp {
    FakeHttp::start(move |req, n| {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let action = if body.contains("Action=AssumeRoleWithWebIdentity&") {
            "AssumeRoleWithWebIdentity"
        } else if body.contains("Action=AssumeRole&") {
            "AssumeRole"
        } else {
            return (
                "400 Bad Request",
                Vec::new(),
                "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>".into(),
            );
        };
        if body.contains("WebIdentityToken=rejected") {
            return (
                "400 Bad Request",
                Vec::new(),
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                 <Message>Token &apos;expired&apos; or invalid</Message></Error></ErrorResponse>"
                    .into(),
            );
        }
        let exp = (time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        (
            "200 OK",
            vec![("Content-Type".into(), "text/xml".into())],
            format!(
                "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
                 <Credentials><AccessKeyId>ASIASTSFAKE{n}</AccessKeyId>\
                 <SecretAccessKey>{SECRET}&amp;{n}</SecretAccessKey>\
                 <SessionToken>{SESSION}{n}</SessionToken><Expiration>{exp}</Expiration>\
                 </Credentials></{action}Result></{action}Response>"
            ),
        )
    })
}

#[test]
fn fake_sts_web_identity_token_file_is_read_again_at_each_refresh() {
    // Credentials for 302 s are fetched again after 2 s; the token file changed in between
    // (as EKS rotates it) and the new token is the one sent.
    let sts = fake_sts(302);
    let kms = FakeHttp::start(|_, _| {
        json(
            "400 Bad Request",
            r#"{"__type":"NotFoundException","message":"Alias not found"}"#,
        )
    });
    let dir = std::env::temp_dir().join(format!("hanzo-kms-sts-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "web-token-one\n").unwrap();
    let env = env_of(vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r".into()),
        ("AWS_ENDPOINT_URL_STS", sts.url.clone()),
    ]);
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    use hanzo_kms_remote::RemoteKms;
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    std::fs::write(&token, "web-token-two\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    let asked = sts.requests();
    assert_eq!(asked.len(), 2);
    let body = |i: usize| String::from_utf8_lossy(&asked[i].body).into_owned();
    assert!(
        body(0).contains("WebIdentityToken=web-token-one&")
            || body(0).ends_with("WebIdentityToken=web-token-one"),
        "{}",
        body(0)
    );
    assert!(
        body(1).contains("WebIdentityToken=web-token-two"),
        "{}",
        body(1)
    );
    assert!(body(0).contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr"));
    assert!(body(0).contains("RoleSessionName=hanzo-kms-"));
    assert!(
        asked[0].header("authorization").is_none(),
        "AssumeRoleWithWebIdentity is unsigned"
    );
    // KMS was signed with the second credentials, their session token, the decoded secret.
    let sent = kms.requests();
    let last = sent.last().unwrap();
    assert!(
        last.header("authorization")
            .unwrap()
            .contains("Credential=ASIASTSFAKE1/")
    );
    assert_eq!(
        last.header("x-amz-security-token"),
        Some(&*format!("{SESSION}1"))
    );

    // A token STS refuses: a config error with its code and message, not the token.
    std::fs::write(&token, "rejected").unwrap();
    let e = AwsKms::from_config(&section(&kms.url), &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "AssumeRoleWithWebIdentity",
            "arn:aws:iam::123456789012:role/r",
            "HTTP 400",
            "InvalidIdentityToken",
            "Token 'expired' or invalid",
        ],
        &["rejected"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fake_sts_assume_role_is_sigv4_signed_with_the_source_profile() {
    let sts = fake_sts(3600);
    let kms = FakeHttp::start(|_, _| {
        json(
            "400 Bad Request",
            r#"{"__type":"NotFoundException","message":"Alias not found"}"#,
        )
    });
    let dir = std::env::temp_dir().join(format!("hanzo-kms-sts-role-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config");
    std::fs::write(
        &cfg,
        "[profile src]\naws_access_key_id = AKIASOURCE\naws_secret_access_key = source-secret\n\
         aws_session_token = source-session\n\
         [profile app]\nrole_arn = arn:aws:iam::123456789012:role/app\nsource_profile = src\n\
         external_id = ext id\nduration_seconds = 1800\n",
    )
    .unwrap();
    let env = env_of(vec![
        ("AWS_CONFIG_FILE", cfg.display().to_string()),
        ("AWS_PROFILE", "app".into()),
        ("AWS_ENDPOINT_URL_STS", sts.url.clone()),
    ]);
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    use hanzo_kms_remote::RemoteKms;
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    let asked = sts.requests();
    assert_eq!(asked.len(), 1);
    let r = &asked[0];
    let body = String::from_utf8_lossy(&r.body).into_owned();
    for part in [
        "Action=AssumeRole&",
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fapp",
        "ExternalId=ext%20id",
        "DurationSeconds=1800",
    ] {
        assert!(body.contains(part), "{part} not in {body}");
    }
    // Recompute the signature from what arrived, with the source profile's keys.
    let date = r.header("x-amz-date").unwrap();
    let host = r.header("host").unwrap();
    let creds = hanzo_kms_remote::sigv4::Credentials {
        access_key_id: "AKIASOURCE".into(),
        secret_access_key: hanzo_kms_core::config::ConfigSecret::new("source-secret"),
        session_token: None,
    };
    let want = hanzo_kms_remote::sigv4::authorization(
        &creds,
        "us-east-1",
        "sts",
        date,
        &hanzo_kms_remote::sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[
                ("content-type", r.header("content-type").unwrap()),
                ("host", host),
                ("x-amz-date", date),
                (
                    "x-amz-security-token",
                    r.header("x-amz-security-token").unwrap(),
                ),
            ],
            body: &r.body,
        },
    );
    assert_eq!(r.header("authorization"), Some(&*want));
    assert_eq!(r.header("x-amz-security-token"), Some("source-session"));
    // KMS is then signed with the assumed role's credentials.
    let sent = kms.requests();
    assert!(
        sent[0]
            .header("authorization")
            .unwrap()
            .contains("Credential=ASIASTSFAKE0/")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fake_sso_portal_role_credentials_sign_and_errors_say_to_log_in() {
    // No IAM Identity Center emulator exists in reach (LocalStack's community edition has no
    // SSO portal): a FAKE portal checks the documented GetRoleCredentials request.
    const BEARER: &str = "fake-sso-access-token-value";
    let portal = FakeHttp::start(|req, n| {
        if req.method != "GET"
            || req.path != "/federation/credentials?account_id=123456789012&role_name=Kms%20Admin"
        {
            return json("404 Not Found", r#"{"message":"no such route"}"#);
        }
        if req.header("x-amz-sso_bearer_token") != Some(BEARER) {
            return json(
                "401 Unauthorized",
                r#"{"message":"Session token not found or invalid"}"#,
            );
        }
        let ms =
            (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp() * 1000;
        json(
            "200 OK",
            format!(
                r#"{{"roleCredentials":{{"accessKeyId":"ASIASSOFAKE{n}","secretAccessKey":"{SECRET}","sessionToken":"{SESSION}{n}","expiration":{ms}}}}}"#
            ),
        )
    });
    let kms = FakeHttp::start(|_, _| {
        json(
            "400 Bad Request",
            r#"{"__type":"NotFoundException","message":"Alias not found"}"#,
        )
    });
    let home = std::env::temp_dir().join(format!("hanzo-kms-sso-fake-{}", std::process::id()));
    let cache = home.join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let cfg = home.join(".aws/config");
    std::fs::write(
        &cfg,
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Kms Admin\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n",
    )
    .unwrap();
    // The CLI names the cache file by the SHA-1 of the session name: sha1("corp").
    let file = cache.join("ee0bfd2552fbd840c02cc48b6e823320543c450f.json");
    let write_token = |exp: time::OffsetDateTime, token: &str| {
        std::fs::write(
            &file,
            format!(
                r#"{{"startUrl":"https://corp.awsapps.com/start","region":"eu-west-1","accessToken":"{token}","expiresAt":"{}"}}"#,
                exp.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap()
            ),
        )
        .unwrap()
    };
    let env = {
        let (h, p) = (home.display().to_string(), portal.url.clone());
        move |n: &str| match n {
            "HOME" => Some(h.clone()),
            "AWS_PROFILE" => Some("dev".into()),
            "AWS_ENDPOINT_URL_SSO" => Some(p.clone()),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            _ => None,
        }
    };
    // Not logged in yet.
    let e = AwsKms::from_config(&section(&kms.url), &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "no IAM Identity Center (SSO) token is cached",
            &file.display().to_string(),
            "aws sso login --profile dev",
        ],
        &[],
    );
    // Logged in.
    write_token(
        time::OffsetDateTime::now_utc() + time::Duration::hours(8),
        BEARER,
    );
    let client = AwsKms::from_config(&section(&kms.url), &env).unwrap();
    use hanzo_kms_remote::RemoteKms;
    assert_eq!(client.find_root("root-kek").unwrap(), None);
    let sent = kms.requests();
    assert!(
        sent[0]
            .header("authorization")
            .unwrap()
            .contains("Credential=ASIASSOFAKE0/")
    );
    assert_eq!(
        sent[0].header("x-amz-security-token"),
        Some(&*format!("{SESSION}0"))
    );
    let shown = format!("{client:?}");
    assert!(
        shown.contains("SSO") && shown.contains("Kms Admin") && !shown.contains(BEARER),
        "{shown}"
    );
    // A token the portal refuses; an expired one.
    write_token(
        time::OffsetDateTime::now_utc() + time::Duration::hours(8),
        "fake-revoked-token",
    );
    let e = AwsKms::from_config(&section(&kms.url), &env).unwrap_err();
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "GetRoleCredentials",
            "HTTP 401",
            "aws sso login --profile dev",
        ],
        &["fake-revoked-token", BEARER],
    );
    write_token(
        time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        BEARER,
    );
    let e = AwsKms::from_config(&section(&kms.url), &env).unwrap_err();
    assert_clear(
        &e,
        "AWS KMS",
        &["has expired", "aws sso login --profile dev"],
        &[BEARER],
    );
    std::fs::remove_dir_all(&home).unwrap();
}
