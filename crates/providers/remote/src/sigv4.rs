//! AWS Signature Version 4, for the AWS KMS client: a few dozen lines of our own instead of
//! the AWS SDK (docs/providers.md says why).
//!
//! ```text
//! canonical request = method \n path \n query \n (name:value\n)* \n signed names \n hex(SHA-256(body))
//! string to sign    = "AWS4-HMAC-SHA256" \n amz-date \n date/region/service/aws4_request \n hex(SHA-256(canonical request))
//! signing key       = HMAC(HMAC(HMAC(HMAC("AWS4" ‖ secret, date), region), service), "aws4_request")
//! signature         = hex(HMAC(signing key, string to sign))
//! ```
//!
//! Header names are lower-cased and sorted, values trimmed with inner runs of spaces folded.
//! Checked against the AWS SigV4 test suite (`get-vanilla`, `post-vanilla`,
//! `post-header-key-sort`) in the tests below.

use hanzo_kms_core::config::ConfigSecret;
use hanzo_kms_crypto::mac::hmac_sha256;
use zeroize::Zeroizing;

/// AWS credentials. `Debug` shows the access key id only.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: ConfigSecret,
    pub session_token: Option<ConfigSecret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What one signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    /// The URI path, already in canonical (escaped) form.
    pub path: &'a str,
    /// The canonical query string (empty for AWS KMS).
    pub query: &'a str,
    /// Every header to sign, names in any case; `host` and `x-amz-date` must be among them.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The `Authorization` header value for `req`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request<'_>,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), fold_spaces(v.trim())))
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n{}\n", req.method, req.path, req.query);
    for (n, v) in &headers {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(&hex::encode(sha256(req.body)));
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(sha256(canonical.as_bytes()))
    );
    let secret = Zeroizing::new(format!("AWS4{}", creds.secret_access_key.expose()));
    let k_date = Zeroizing::new(hmac_sha256(secret.as_bytes(), &[date.as_bytes()]));
    let k_region = Zeroizing::new(hmac_sha256(&*k_date, &[region.as_bytes()]));
    let k_service = Zeroizing::new(hmac_sha256(&*k_region, &[service.as_bytes()]));
    let k_signing = Zeroizing::new(hmac_sha256(&*k_service, &[b"aws4_request"]));
    let signature = hex::encode(hmac_sha256(&*k_signing, &[to_sign.as_bytes()]));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref());
    out
}

fn fold_spaces(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials, region, service and time of the AWS SigV4 test suite.
    fn suite() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: ConfigSecret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    fn sign(method: &str, headers: &[(&str, &str)]) -> String {
        authorization(
            &suite(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            &Request {
                method,
                path: "/",
                query: "",
                headers,
                body: b"",
            },
        )
    }

    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const DATE: (&str, &str) = ("X-Amz-Date", "20150830T123600Z");

    #[test]
    fn aws_test_suite_get_vanilla() {
        assert_eq!(
            sign("GET", &[HOST, DATE]),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_test_suite_post_vanilla() {
        assert!(
            sign("POST", &[HOST, DATE]).ends_with(
                "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ),
            "{}",
            sign("POST", &[HOST, DATE])
        );
    }

    #[test]
    fn aws_test_suite_post_header_key_sort() {
        // Headers given out of order and in mixed case: signed sorted and lower-cased.
        let got = sign("POST", &[("My-Header1", "value1"), DATE, HOST]);
        assert!(
            got.contains("SignedHeaders=host;my-header1;x-amz-date,"),
            "{got}"
        );
        assert!(
            got.ends_with(
                "Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
            ),
            "{got}"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", suite());
        assert!(
            shown.contains("AKIDEXAMPLE") && !shown.contains("EXAMPLEKEY"),
            "{shown}"
        );
    }
}
