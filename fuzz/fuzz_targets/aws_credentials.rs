//! The AWS credential chain's parsers of outside input: the shared config and credentials files
//! (`aws_profile`), STS answers (`aws_sts`'s XML reader), a `credential_process`'s output and the
//! splitting of its command (`aws_process`).
//!
//! Invariants: nothing panics; a file error names the file and line and otherwise says only one
//! of the parser's fixed reasons (never the line's text, which may hold a secret); parsed keys
//! are lower-case, without spaces or `=`; STS values hold no markup; a process-output error is
//! one of the fixed reasons (never the output, which holds the secret); split words, re-quoted,
//! split again to themselves.
#![no_main]

use hanzo_kms_remote::fuzzing::{PATH, process_output, shared_file, split_command, sts_answer};
use libfuzzer_sys::fuzz_target;

const FILE_REASONS: &[&str] = &[
    "a section header has no closing ']'",
    "text follows a section header's ']'",
    "a section header has no name",
    "a section name has spaces inside it (expected [profile NAME])",
    "a setting comes before any [section] header",
    "an indented line does not follow a setting",
    "a sub-setting is not `key = value`",
    "expected `key = value` or a [section] header",
    "a setting's key is empty or has spaces",
];

const PROCESS_REASONS: &[&str] = &[
    "its output is not the credential_process JSON object",
    "its output has no Version (1)",
    "its output has no AccessKeyId and SecretAccessKey",
];

fn file(text: &str, config: bool) {
    match shared_file(text, config) {
        Ok(sections) => {
            for (kind, name, keys) in sections {
                assert!(["profile", "sso-session", "other"].contains(&kind.as_str()));
                assert!(!name.is_empty());
                for k in keys {
                    assert!(!k.is_empty() && k == k.to_ascii_lowercase(), "{k:?}");
                    assert!(
                        !k.contains(char::is_whitespace) && !k.contains('='),
                        "{k:?}"
                    );
                }
            }
        }
        Err(m) => {
            let prefix = format!("AWS KMS: the AWS shared config file {PATH} line ");
            let rest = m.strip_prefix(&prefix).unwrap_or_else(|| panic!("{m}"));
            let (line, reason) = rest.split_once(": ").unwrap_or_else(|| panic!("{m}"));
            let n: usize = line.parse().unwrap_or_else(|_| panic!("{m}"));
            assert!(n >= 1 && n <= text.lines().count(), "{m}");
            assert!(FILE_REASONS.contains(&reason), "{m}");
        }
    }
}

fn requote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 | 1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                file(text, selector % 4 == 0);
            }
        }
        2 => {
            let status = if selector & 0x80 == 0 { 200 } else { 400 };
            match sts_answer(status, rest) {
                Ok(values) => {
                    assert_eq!(status, 200);
                    for v in values {
                        assert!(!v.contains('<'), "{v:?}");
                    }
                }
                Err(m) => {
                    assert!(m.starts_with("AWS KMS: AssumeRole at fuzz: "), "{m}");
                    assert!(m.chars().count() < 700, "{m}");
                }
            }
        }
        _ => {
            match process_output(rest) {
                Ok(_) => {}
                Err(m) => {
                    let version = m
                        .strip_prefix("its output has Version ")
                        .and_then(|r| r.strip_suffix("; only 1 is understood"))
                        .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit()));
                    assert!(version || PROCESS_REASONS.contains(&m.as_str()), "{m}");
                }
            }
            if let Ok(command) = std::str::from_utf8(rest)
                && let Ok(words) = split_command(command)
            {
                assert!(!words.is_empty());
                assert_eq!(split_command(&requote(&words)).unwrap(), words);
            }
        }
    }
});
