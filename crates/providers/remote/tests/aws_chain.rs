//! The AWS credential chain's STS and `credential_process` sources against the real LocalStack
//! (scripts/peers.sh starts it with `SERVICES=kms,sts` and exports HANZO_KMS_TEST_AWS_ENDPOINT;
//! without it each test prints "skipped: peer not running").
//!
//! LocalStack accepts any signature, so "these credentials signed the call" is checked through
//! the account: LocalStack files a KMS key under the account its caller's access key belongs to
//! (a 12-digit access key id is that account; one issued by its STS belongs to the assumed
//! role's account). Each test assumes a role in a fresh account, lets the provider make its
//! keys there, and then finds them by listing that account's keys, and only that account's.

use std::path::PathBuf;

use hanzo_kms_conformance::make;
use hanzo_kms_core::config::AwsKmsConfig;
use hanzo_kms_core::{Algorithm, ErrorKind, Provider};
use hanzo_kms_crypto::verify::verify;
use hanzo_kms_remote::{AwsKms, RemoteProvider};

mod common;
use common::assert_clear;

fn localstack() -> Option<String> {
    let e = std::env::var("HANZO_KMS_TEST_AWS_ENDPOINT").ok();
    if e.is_none() {
        eprintln!("skipped: peer not running (LocalStack; run scripts/peers.sh)");
    }
    e
}

/// A fresh 12-digit account id.
fn account(salt: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = (t ^ (u64::from(std::process::id()) << 20) ^ salt.wrapping_mul(0x9E37_79B9))
        % 900_000_000_000;
    format!("{}", 100_000_000_000 + n)
}

fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hanzo-kms-aws-chain-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An environment with `vars` and nothing else (no home, no keys).
fn env_of(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |n: &str| {
        vars.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| match n {
                "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent/credentials".into()),
                "AWS_CONFIG_FILE" => Some("/nonexistent/config".into()),
                "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
                _ => None,
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

fn sign_and_verify(p: &RemoteProvider<AwsKms>, name: &str) {
    for alg in [Algorithm::P256, Algorithm::Secp256k1] {
        let k = make(p, name, 1, alg);
        let msg = [9u8; 32];
        let sig = p.sign(&k.r(), &msg).unwrap();
        assert!(
            verify(alg, k.public.as_ref().unwrap(), &msg, &sig.0),
            "{alg}"
        );
    }
}

/// The number of KMS keys LocalStack holds for `account` (signed with the account id as the
/// access key id, which LocalStack reads as that account).
fn keys_of(endpoint: &str, account: &str) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{endpoint}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.ListKeys")
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00"),
        )
        .send(r#"{"Limit":1000}"#)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["Keys"].as_array().unwrap().len()
}

#[test]
fn web_identity_from_the_environment_signs_at_localstack_as_the_role() {
    let Some(endpoint) = localstack() else { return };
    let acct = account(1);
    let d = dir("web");
    let token = d.join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.web-identity-token-value.sig\n",
    )
    .unwrap();
    let env = env_of(vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        (
            "AWS_ROLE_ARN",
            format!("arn:aws:iam::{acct}:role/hanzo-kms-web"),
        ),
        ("AWS_ROLE_SESSION_NAME", "hanzo-kms-test".into()),
        ("AWS_ENDPOINT_URL_STS", endpoint.clone()),
    ]);
    let c = AwsKmsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.clone()),
        max_retries: Some(1),
        ..Default::default()
    };
    assert_eq!(keys_of(&endpoint, &acct), 0);
    let p = open(&c, &env, "web");
    sign_and_verify(&p, "poai:acme:web");
    // The root KEK, the root MAC key and two signing keys, all in the role's account.
    assert!(
        keys_of(&endpoint, &acct) >= 4,
        "the keys are not in account {acct}"
    );
    let debug = format!("{:?} {:?}", p, p.service());
    assert!(
        debug.contains("web identity") && debug.contains("hanzo-kms-web"),
        "{debug}"
    );
    assert!(!debug.contains("web-identity-token-value"), "{debug}");

    // The token file gone: a clear error naming it (the token is read at every fetch).
    std::fs::remove_file(&token).unwrap();
    let e = AwsKms::from_config(&c, &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_clear(
        &e,
        "AWS KMS",
        &[
            &token.display().to_string(),
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "cannot be read",
        ],
        &[],
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn profile_role_assumption_takes_region_and_endpoint_from_the_files_and_env() {
    let Some(endpoint) = localstack() else { return };
    let (acct, web_acct) = (account(2), account(3));
    let d = dir("role");
    let cfg = d.join("config");
    let creds = d.join("credentials");
    let token = d.join("token");
    std::fs::write(&token, "profile-web-identity-token").unwrap();
    std::fs::write(
        &creds,
        "[base]\naws_access_key_id = test\naws_secret_access_key = base-secret-value\n",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "# hanzo-kms test\n[default]\nregion = eu-west-1\n\n[profile app]\nregion = us-east-1\n\
             role_arn = arn:aws:iam::{acct}:role/hanzo-kms-app\nsource_profile = base\n\
             external_id = ext-1\nduration_seconds = 900\nrole_session_name = app-session\n\
             s3 =\n  max_concurrent_requests = 4\n\n\
             [profile web]\nregion = us-east-1\nrole_arn = arn:aws:iam::{web_acct}:role/w\n\
             web_identity_token_file = {}\n",
            token.display()
        ),
    )
    .unwrap();
    let vars = |profile: &str| {
        env_of(vec![
            ("AWS_CONFIG_FILE", cfg.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_PROFILE", profile.to_owned()),
            // KMS and STS both at LocalStack, through the SDKs' all-services override.
            ("AWS_ENDPOINT_URL", endpoint.clone()),
        ])
    };
    // No region and no endpoint in the section: the profile's region, $AWS_ENDPOINT_URL.
    let c = AwsKmsConfig {
        max_retries: Some(1),
        ..Default::default()
    };
    let client = AwsKms::from_config(&c, &vars("app")).unwrap();
    let shown = format!("{client:?}");
    assert!(
        shown.contains("region: \"us-east-1\"") && shown.contains(&endpoint),
        "{shown}"
    );
    assert!(
        shown.contains("role arn:aws:iam::") && shown.contains("profile 'base'"),
        "{shown}"
    );
    assert!(
        !shown.contains("base-secret-value") && !shown.contains("ext-1"),
        "{shown}"
    );
    let p = open(&c, &vars("app"), "role");
    sign_and_verify(&p, "poai:acme:role");
    assert!(
        keys_of(&endpoint, &acct) >= 4,
        "the keys are not in account {acct}"
    );

    // web_identity_token_file + role_arn in a profile.
    let p = open(&c, &vars("web"), "webprofile");
    sign_and_verify(&p, "poai:acme:webprofile");
    assert!(
        keys_of(&endpoint, &web_acct) >= 4,
        "the keys are not in account {web_acct}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn credential_process_credentials_sign_at_localstack_and_are_refreshed_before_expiry() {
    let Some(endpoint) = localstack() else { return };
    use std::os::unix::fs::PermissionsExt;
    let acct = account(4);
    let d = dir("process");
    let count = d.join("count");
    let script = d.join("get creds.sh"); // a space in the path: quoted in the profile
    // Each run appends to `count`, and hands out credentials that expire in 302 s (fetched
    // again 5 minutes before: after 2 s). The access key id is the account id.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{}'\n[ \"$1\" = --account ] || exit 9\n\
             exp=$(date -u -d '+302 seconds' +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"process-secret-value\", \"SessionToken\": \"process-session\", \"Expiration\": \"%s\"}}' \"$2\" \"$exp\"\n",
            count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = d.join("config");
    std::fs::write(
        &cfg,
        format!(
            "[default]\nregion = us-east-1\ncredential_process = \"{}\" --account {acct}\n",
            script.display()
        ),
    )
    .unwrap();
    let env = env_of(vec![("AWS_CONFIG_FILE", cfg.display().to_string())]);
    let c = AwsKmsConfig {
        endpoint: Some(endpoint.clone()),
        max_retries: Some(1),
        ..Default::default()
    };
    let p = open(&c, &env, "process");
    sign_and_verify(&p, "poai:acme:proc");
    let runs = || std::fs::read_to_string(&count).unwrap().lines().count();
    assert_eq!(runs(), 1);
    assert!(
        keys_of(&endpoint, &acct) >= 4,
        "the keys are not in account {acct}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    sign_and_verify(&p, "poai:acme:proc2");
    assert_eq!(runs(), 2, "run again before the Expiration");

    // A failing process: its stderr, not its stdout, in a config error at start.
    std::fs::write(
        &cfg,
        "[default]\nregion = us-east-1\ncredential_process = sh -c 'echo stdout-secret-value; echo please log in >&2; exit 4'\n",
    )
    .unwrap();
    let e = AwsKms::from_config(&c, &env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "credential_process of profile 'default'",
            "program sh",
            "status 4",
            "please log in",
        ],
        &["stdout-secret-value"],
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn profile_settings_that_cannot_work_are_config_errors_naming_the_profile() {
    // No peer needed: each fails before any call.
    let d = dir("bad");
    let cfg = d.join("config");
    let case = |text: &str, profile: &str| {
        std::fs::write(&cfg, text).unwrap();
        let env = env_of(vec![
            ("AWS_CONFIG_FILE", cfg.display().to_string()),
            ("AWS_PROFILE", profile.to_owned()),
            ("AWS_REGION", "us-east-1".into()),
        ]);
        AwsKms::from_config(
            &AwsKmsConfig {
                endpoint: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            },
            &env,
        )
        .unwrap_err()
    };
    let file = cfg.display().to_string();
    for (text, profile, parts) in [
        (
            "[profile a]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\n[sso-session corp]\nsso_start_url = https://x\n",
            "a",
            vec!["[sso-session corp]", "profile 'a'", "SSO", "no sso_region"],
        ),
        (
            "[profile a]\nsso_session = corp\n",
            "a",
            vec!["sso_session 'corp' has no [sso-session corp] section"],
        ),
        (
            "[profile a]\nsso_start_url = https://x\nsso_region = us-east-1\nsso_account_id = 1\n",
            "a",
            vec!["profile 'a'", "SSO", "no sso_role_name"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = b\n[profile b]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = a\n",
            "a",
            vec!["leads back", "a -> b -> a"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = nobody\n",
            "a",
            vec!["source_profile: there is no profile 'nobody'"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\ncredential_source = Ec2InstanceMetadata\n",
            "a",
            vec!["credential_source is not supported"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = a\nmfa_serial = arn:aws:iam::1:mfa/u\n",
            "a",
            vec!["mfa_serial is not supported"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\n",
            "a",
            vec!["needs source_profile"],
        ),
        (
            "[profile a]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = a\naws_access_key_id = k\naws_secret_access_key = bad-secret\nduration_seconds = 60\n",
            "a",
            vec!["duration_seconds \"60\""],
        ),
        (
            "[profile a]\naws_access_key_id = k\n",
            "a",
            vec!["no aws_secret_access_key"],
        ),
        (
            "[profile a]\ncredential_process = get 'creds\n",
            "a",
            vec!["credential_process", "not closed"],
        ),
        (
            "[profile a]\nregion = us-east-1\n",
            "a",
            vec!["has no credential settings", "AWS_PROFILE"],
        ),
        (
            "[profile a]\nregion = us-east-1\n",
            "zz",
            vec!["no profile 'zz'"],
        ),
        (
            "[profile a]\naws_secret_access_key bad-secret\n",
            "a",
            vec![&*format!("{file} line 2")],
        ),
    ] {
        let e = case(text, profile);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert_clear(&e, "AWS KMS", &parts, &["bad-secret"]);
    }
    // A broken config file stops nothing that does not need it: keys in the environment and an
    // explicit region are used; without the region, the file is needed, and its error shows.
    std::fs::write(&cfg, "[default]\nregion eu-west-1\n").unwrap();
    let with = |region: bool| {
        let mut v = vec![
            ("AWS_CONFIG_FILE", cfg.display().to_string()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "env-secret".into()),
        ];
        if region {
            v.push(("AWS_REGION", "us-east-1".into()));
        }
        AwsKms::from_config(
            &AwsKmsConfig {
                endpoint: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            },
            &env_of(v),
        )
    };
    assert!(with(true).is_ok());
    let e = with(false).unwrap_err();
    assert_clear(&e, "AWS KMS", &[&format!("{file} line 2")], &["env-secret"]);
    std::fs::remove_dir_all(&d).unwrap();
}
