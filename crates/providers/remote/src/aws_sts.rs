//! The two AWS STS calls the credential chain makes, over the STS Query API (form-encoded
//! `POST /`, `Version=2011-06-15`, XML answers):
//!
//! - `AssumeRoleWithWebIdentity` (unsigned: the web identity token is the proof), for
//!   `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` and the profile keys
//!   `web_identity_token_file` + `role_arn`;
//! - `AssumeRole`, SigV4-signed (service `sts`) with the source profile's credentials, for
//!   `role_arn` + `source_profile`.
//!
//! The endpoint is `$AWS_ENDPOINT_URL_STS`, else `$AWS_ENDPOINT_URL`, else
//! `https://sts.<region>.amazonaws.com` (regional, the SDKs' default), or
//! `https://sts.amazonaws.com` (signed for `us-east-1`) when `AWS_STS_REGIONAL_ENDPOINTS=legacy`.
//!
//! The answers are a few hundred bytes of XML with a fixed shape, so they are read with a small
//! extractor of our own ([`element`]) rather than an XML crate: it takes the text of the first
//! `<Name>…</Name>` inside `<Credentials>` (or `<Error>`), refuses nested markup, and decodes the
//! five predefined entities and numeric character references.

use hanzo_kms_core::config::RemoteTuning;
use hanzo_kms_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

use crate::http::{Http, Reply, Verdict};
use crate::sigv4::{self, Credentials};

const SERVICE: &str = "AWS KMS";
const VERSION: &str = "2011-06-15";

/// Temporary credentials STS handed out.
pub(crate) struct Issued {
    pub creds: Credentials,
    /// `Expiration`, RFC 3339.
    pub expiration: String,
}

/// An STS endpoint.
pub(crate) struct Sts {
    http: Http,
    endpoint: String,
    host: String,
    /// The region requests are signed for.
    region: String,
}

/// What to ask `AssumeRole` for.
pub(crate) struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub external_id: Option<&'a str>,
    pub duration_seconds: Option<u32>,
}

impl Sts {
    /// The endpoint for `region` (see the module doc).
    pub(crate) fn new(
        region: &str,
        tuning: &RemoteTuning,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let env = |n: &str| env(n).filter(|v| !v.is_empty());
        let legacy = env("AWS_STS_REGIONAL_ENDPOINTS").is_some_and(|v| v == "legacy");
        let (endpoint, region) =
            match env("AWS_ENDPOINT_URL_STS").or_else(|| env("AWS_ENDPOINT_URL")) {
                Some(e) => (e, region.to_owned()),
                None if legacy => ("https://sts.amazonaws.com".into(), "us-east-1".into()),
                None => (
                    format!("https://sts.{region}.amazonaws.com"),
                    region.to_owned(),
                ),
            };
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{SERVICE}: the STS endpoint '{endpoint}' ($AWS_ENDPOINT_URL_STS or \
                         $AWS_ENDPOINT_URL) is not http(s)://host[:port]"
                    ),
                )
            })?
            .to_owned();
        Ok(Self {
            http: Http::new(SERVICE, tuning),
            endpoint,
            host,
            region,
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `AssumeRoleWithWebIdentity` with `token` (unsigned).
    pub(crate) fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        token: &str,
    ) -> Result<Issued> {
        let body = Zeroizing::new(form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", VERSION),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
        ]));
        let what = format!(
            "AssumeRoleWithWebIdentity (role {role_arn}) at {}",
            self.endpoint
        );
        self.post(&what, &body, None)
    }

    /// `AssumeRole`, signed with `source`.
    pub(crate) fn assume_role(&self, ask: &AssumeRole<'_>, source: &Credentials) -> Result<Issued> {
        let duration = ask.duration_seconds.map(|d| d.to_string());
        let mut params = vec![
            ("Action", "AssumeRole"),
            ("Version", VERSION),
            ("RoleArn", ask.role_arn),
            ("RoleSessionName", ask.session_name),
        ];
        if let Some(x) = ask.external_id {
            params.push(("ExternalId", x));
        }
        if let Some(d) = &duration {
            params.push(("DurationSeconds", d));
        }
        let body = Zeroizing::new(form(&params));
        let what = format!("AssumeRole (role {}) at {}", ask.role_arn, self.endpoint);
        self.post(&what, &body, Some(source))
    }

    fn post(&self, what: &str, body: &str, signer: Option<&Credentials>) -> Result<Issued> {
        let url = format!("{}/", self.endpoint);
        let build = || -> Result<ureq::http::Request<Vec<u8>>> {
            let amz_date = time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .map_err(|e| Error::internal(e.to_string()))?;
            let mut headers: Vec<(&str, &str)> = vec![
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("host", &self.host),
                ("x-amz-date", &amz_date),
            ];
            let mut b = ureq::http::Request::builder().method("POST").uri(&url);
            if let Some(creds) = signer {
                if let Some(t) = &creds.session_token {
                    headers.push(("x-amz-security-token", t.expose()));
                }
                let auth = sigv4::authorization(
                    creds,
                    &self.region,
                    "sts",
                    &amz_date,
                    &sigv4::Request {
                        method: "POST",
                        path: "/",
                        query: "",
                        headers: &headers,
                        body: body.as_bytes(),
                    },
                );
                b = b.header("authorization", auth);
            }
            for (n, v) in headers.iter().filter(|(n, _)| *n != "host") {
                b = b.header(*n, *v);
            }
            b.body(body.as_bytes().to_vec()).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("{SERVICE}: bad request to {url}: {e}"),
                )
            })
        };
        let judge = |r: &Reply| {
            let code = error_code(r);
            if r.status == 429 || matches!(code.as_deref(), Some("Throttling")) {
                Verdict::Throttled
            } else if matches!(r.status, 500 | 502 | 503 | 504)
                || matches!(code.as_deref(), Some("IDPCommunicationError"))
            {
                Verdict::Retry
            } else {
                Verdict::Done
            }
        };
        let reply = self.http.send(&|| what.to_owned(), &build, &judge)?;
        answer(what, &reply)
    }
}

/// The credentials in an STS answer, or its error as a `config` error.
pub(crate) fn answer(what: &str, reply: &Reply) -> Result<Issued> {
    if reply.status != 200 {
        let code = error_code(reply).unwrap_or_else(|| "no error code".into());
        let message = text(&reply.body)
            .and_then(|t| inside(t, "Error").and_then(|e| element(e, "Message")))
            .map(|m| m.chars().take(300).collect::<String>())
            .unwrap_or_default();
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{SERVICE}: {what}: HTTP {} ({code}{}{message})",
                reply.status,
                if message.is_empty() { "" } else { ": " }
            ),
        ));
    }
    let shape = || {
        Error::new(
            ErrorKind::Config,
            format!(
                "{SERVICE}: {what}: the answer has no Credentials with AccessKeyId, \
                 SecretAccessKey, SessionToken and Expiration"
            ),
        )
    };
    let body = text(&reply.body).ok_or_else(shape)?;
    let creds = inside(body, "Credentials").ok_or_else(shape)?;
    let get = |n: &str| element(creds, n).ok_or_else(shape);
    let (id, secret, token, expiration) = (
        get("AccessKeyId")?,
        Zeroizing::new(get("SecretAccessKey")?),
        Zeroizing::new(get("SessionToken")?),
        get("Expiration")?,
    );
    Ok(Issued {
        creds: Credentials {
            access_key_id: id,
            secret_access_key: hanzo_kms_core::config::ConfigSecret::new(secret.as_str()),
            session_token: Some(hanzo_kms_core::config::ConfigSecret::new(token.as_str())),
        },
        expiration,
    })
}

/// `application/x-www-form-urlencoded` with RFC 3986 unreserved characters kept, as SigV4
/// wants them.
fn form(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// Percent-encode all but RFC 3986's unreserved characters.
pub(crate) fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn text(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body).ok()
}

/// The `<Code>` of an STS `<ErrorResponse><Error>`.
fn error_code(r: &Reply) -> Option<String> {
    text(&r.body)
        .and_then(|t| inside(t, "Error"))
        .and_then(|e| element(e, "Code"))
        .filter(|c| c.len() <= 64 && c.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
}

/// The markup between `<name>` (or `<name attr…>`) and the next `</name>`.
fn inside<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&format!("<{name}"))?;
        let after = &xml[at + 1 + name.len()..];
        match after.chars().next()? {
            '>' => {
                let body = &after[1..];
                let end = body.find(&format!("</{name}>"))?;
                return Some(&body[..end]);
            }
            c if c.is_ascii_whitespace() => {
                let open = after.find('>')?;
                if after[..open].ends_with('/') {
                    return Some("");
                }
                let body = &after[open + 1..];
                let end = body.find(&format!("</{name}>"))?;
                return Some(&body[..end]);
            }
            _ => from = at + 1, // a longer name (<CredentialsX>)
        }
    }
}

/// The text of element `name` in `xml`: no nested markup; entities decoded.
fn element(xml: &str, name: &str) -> Option<String> {
    let raw = inside(xml, name)?;
    if raw.contains('<') {
        return None;
    }
    unescape(raw.trim())
}

/// XML's five predefined entities and `&#N;` / `&#xN;`; any other `&` is refused.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let end = tail.find(';')?;
        let entity = &tail[..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = entity.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer shape of the STS API reference's AssumeRoleWithWebIdentity example.
    const ANSWER: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>amzn1.account.AF6RHO7KZU5XRVQJGXK6HB56KR2A</SubjectFromWebIdentityToken>
    <Audience>client.5498841531868486423.1548@apps.example.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/FederatedWebIdentityRole/app1</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:app1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <SourceIdentity>SourceIdentityValue</SourceIdentity>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn credentials_are_read_from_the_documented_answer() {
        let c = inside(ANSWER, "Credentials").unwrap();
        assert_eq!(
            element(c, "AccessKeyId").as_deref(),
            Some("ASgeIAIOSFODNN7EXAMPLE")
        );
        assert_eq!(
            element(c, "SecretAccessKey").as_deref(),
            Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY")
        );
        assert_eq!(
            element(c, "Expiration").as_deref(),
            Some("2014-10-24T23:00:23Z")
        );
        assert!(element(ANSWER, "Nope").is_none());
    }

    #[test]
    fn entities_nesting_and_errors() {
        assert_eq!(
            element("<A>x&amp;y&lt;&#65;&#x42;&quot;</A>", "A").as_deref(),
            Some("x&y<AB\"")
        );
        assert_eq!(element("<A>&bogus;</A>", "A"), None);
        assert_eq!(element("<A><B>1</B></A>", "A"), None);
        assert_eq!(element("<AB>1</AB><A>2</A>", "A").as_deref(), Some("2"));
        let err = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found</Message></Error></ErrorResponse>"#;
        let r = Reply {
            status: 400,
            body: Zeroizing::new(err.as_bytes().to_vec()),
        };
        assert_eq!(error_code(&r).as_deref(), Some("InvalidIdentityToken"));
    }

    #[test]
    fn form_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            form(&[("RoleArn", "arn:aws:iam::1:role/a b"), ("X", "~-_.+=&")]),
            "RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b&X=~-_.%2B%3D%26"
        );
    }
}
