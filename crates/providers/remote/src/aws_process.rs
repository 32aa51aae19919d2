//! `credential_process`: a profile names a command that prints credentials as JSON on stdout:
//!
//! ```text
//! {"Version": 1, "AccessKeyId": "…", "SecretAccessKey": "…", "SessionToken": "…", "Expiration": "RFC 3339"}
//! ```
//!
//! (`SessionToken` and `Expiration` optional; without `Expiration` the credentials do not expire.)
//!
//! **How the command is run.** The AWS CLI splits the value into words with shell-like quoting
//! and runs the program directly; the Rust and Java SDKs hand it to `sh -c`. We split it
//! ourselves, as the CLI does, and never start a shell: words are separated by unquoted spaces
//! or tabs; `'…'` is literal; inside `"…"` a backslash escapes only `"`, `\`, `$` and `` ` ``; a
//! backslash outside quotes escapes the next character. Nothing is expanded: no `$VAR`, `~`,
//! globs, pipes or redirections. A command that needs a shell says so itself:
//! `credential_process = sh -c 'exec get-creds --env "$STAGE"'`.
//!
//! The process gets no stdin and the environment of hanzo-kms; it must finish within
//! [`TIMEOUT`], or it is killed. A start failure, a non-zero exit, a timeout, JSON that is not
//! the shape above or a `Version` other than 1 is an error naming the profile and the program
//! (not its arguments, which may hold a secret), with up to [`STDERR_SHOWN`] characters of its
//! stderr; stdout, which holds the secret key, is never shown, and is held in zeroizing memory.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hanzo_kms_core::config::ConfigSecret;
use hanzo_kms_core::{Error, ErrorKind, Result};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::sigv4::Credentials;

/// How long the process may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How much of its stderr an error shows.
pub const STDERR_SHOWN: usize = 512;
/// The most stdout read (credentials are a few kilobytes at most).
const STDOUT_MAX: u64 = 64 << 10;

/// A `credential_process` command, split into words.
pub(crate) struct Process {
    argv: Zeroizing<Vec<String>>,
    /// "credential_process of profile 'p' of FILE (program P)", for messages.
    describe: String,
    timeout: Duration,
}

/// What the process printed, checked.
pub(crate) struct Printed {
    pub creds: Credentials,
    pub expiration: Option<String>,
}

impl Process {
    /// Split `command` (see the module doc); `profile` says where it came from.
    pub(crate) fn new(command: &str, profile: &str) -> Result<Self> {
        let argv = split(command).map_err(|why| {
            Error::new(
                ErrorKind::Config,
                format!("AWS KMS: credential_process of {profile}: {why}"),
            )
        })?;
        let describe = format!("credential_process of {profile} (program {})", argv[0]);
        Ok(Self {
            argv,
            describe,
            timeout: TIMEOUT,
        })
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// Run it and read its credentials.
    pub(crate) fn run(&self) -> Result<Printed> {
        let fail = |m: String| {
            Error::new(
                ErrorKind::Config,
                format!("AWS KMS: {}: {m}", self.describe),
            )
        };
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot be started ({e})")))?;
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("started without its output pipes".into()));
        };
        std::thread::spawn(move || {
            let mut buf = Zeroizing::new(Vec::new());
            let r = (&mut stdout).take(STDOUT_MAX).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stdout, &mut std::io::sink()); // let it finish writing
            let _ = out_tx.send(r.map(|_| buf));
        });
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr)
                .take(4 * STDERR_SHOWN as u64)
                .read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            let _ = err_tx.send(buf);
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "did not finish within {} s and was killed",
                        self.timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(fail(format!("cannot be waited for ({e})"))),
            }
        };
        // The pipes close when the process exits (unless it left a child holding them).
        let left = self.timeout.saturating_sub(start.elapsed()) + Duration::from_secs(1);
        let stderr = err_rx.recv_timeout(left).unwrap_or_default();
        let stderr = shown(&stderr);
        if !status.success() {
            let code = status.code().map_or_else(
                || "was killed by a signal".into(),
                |c| format!("exited with status {c}"),
            );
            return Err(fail(if stderr.is_empty() {
                code
            } else {
                format!("{code}; stderr: {stderr}")
            }));
        }
        let stdout = match out_rx.recv_timeout(left) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(fail(format!("its output cannot be read ({e})"))),
            Err(_) => return Err(fail("its output did not end".into())),
        };
        parse(&stdout).map_err(fail)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Json {
    version: Option<u64>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

impl Drop for Json {
    fn drop(&mut self) {
        self.secret_access_key.zeroize();
        self.session_token.zeroize();
    }
}

pub(crate) fn parse(stdout: &[u8]) -> std::result::Result<Printed, String> {
    let mut j: Json = serde_json::from_slice(stdout)
        .map_err(|_| "its output is not the credential_process JSON object".to_owned())?;
    match j.version {
        Some(1) => {}
        Some(v) => return Err(format!("its output has Version {v}; only 1 is understood")),
        None => return Err("its output has no Version (1)".into()),
    }
    let (Some(id), Some(secret)) = (j.access_key_id.take(), j.secret_access_key.take()) else {
        return Err("its output has no AccessKeyId and SecretAccessKey".into());
    };
    let secret = Zeroizing::new(secret);
    Ok(Printed {
        creds: Credentials {
            access_key_id: id,
            secret_access_key: ConfigSecret::new(secret.as_str()),
            session_token: j
                .session_token
                .take()
                .map(|t| ConfigSecret::new(Zeroizing::new(t).as_str())),
        },
        expiration: j.expiration.take(),
    })
}

/// At most [`STDERR_SHOWN`] characters of `b`, control characters replaced, on one line.
fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim()
        .chars()
        .take(STDERR_SHOWN)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Split `s` into words (see the module doc).
pub(crate) fn split(s: &str) -> std::result::Result<Zeroizing<Vec<String>>, &'static str> {
    let mut words = Zeroizing::new(Vec::new());
    let mut word = Zeroizing::new(String::new());
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut *word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a single quote is not closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a double quote is not closed"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a double quote is not closed"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("it ends with a lone backslash"),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(std::mem::take(&mut *word));
    }
    if words.is_empty() {
        return Err("the command is empty");
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_split_like_the_cli_without_a_shell() {
        let w = split(r#"/bin/get-creds --name 'a b' "c \"d\" \$HOME \n" e\ f $HOME ~"#).unwrap();
        assert_eq!(
            *w,
            [
                "/bin/get-creds",
                "--name",
                "a b",
                r#"c "d" $HOME \n"#,
                "e f",
                "$HOME",
                "~"
            ]
        );
        assert_eq!(*split("''").unwrap(), [""]);
        for bad in ["", "   ", "a 'b", "a \"b", "a\\"] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn output_shapes() {
        let ok = parse(br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"S","SessionToken":"T","Expiration":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(ok.creds.access_key_id, "AK");
        assert_eq!(ok.creds.session_token.unwrap().expose(), "T");
        assert_eq!(ok.expiration.as_deref(), Some("2030-01-01T00:00:00Z"));
        let no_token = parse(br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"S"}"#).unwrap();
        assert!(no_token.creds.session_token.is_none() && no_token.expiration.is_none());
        for (out, why) in [
            (
                &br#"{"Version":2,"AccessKeyId":"AK","SecretAccessKey":"SECRETX"}"#[..],
                "Version 2",
            ),
            (
                br#"{"AccessKeyId":"AK","SecretAccessKey":"SECRETX"}"#,
                "no Version",
            ),
            (br#"{"Version":1,"AccessKeyId":"AK"}"#, "no AccessKeyId"),
            (b"SECRETX not json", "not the credential_process JSON"),
        ] {
            let e = parse(out).err().unwrap();
            assert!(e.contains(why) && !e.contains("SECRETX"), "{e}");
        }
    }

    fn script(name: &str, body: &str) -> (std::path::PathBuf, Process) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hanzo-kms-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = Process::new(&format!("'{}' arg-secret-x", path.display()), "profile 't'").unwrap();
        (path, p)
    }

    #[test]
    fn failures_show_bounded_stderr_and_never_stdout_or_arguments() {
        let (_, p) = script(
            "fails",
            "echo '{\"Version\":1,\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"STDOUT-SECRET\"}'\n\
             printf 'token expired: run login%0600d' 0 >&2\nexit 3",
        );
        let m = p.run().err().unwrap().message().to_owned();
        assert!(
            m.contains("exited with status 3") && m.contains("token expired: run login"),
            "{m}"
        );
        assert!(
            !m.contains("STDOUT-SECRET") && !m.contains("arg-secret-x"),
            "{m}"
        );
        assert!(m.len() < 900, "stderr is bounded: {} bytes", m.len());

        let (_, mut p) = script("sleeps", "sleep 5");
        p.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let m = p.run().err().unwrap().message().to_owned();
        assert!(m.contains("did not finish within 0.3 s"), "{m}");
        assert!(t.elapsed() < Duration::from_secs(3));

        let (_, p) = script("garbage", "echo STDOUT-SECRET");
        let m = p.run().err().unwrap().message().to_owned();
        assert!(
            m.contains("not the credential_process JSON") && !m.contains("STDOUT-SECRET"),
            "{m}"
        );

        let p = Process::new("/nonexistent/get-creds", "profile 't'").unwrap();
        let m = p.run().err().unwrap().message().to_owned();
        assert!(
            m.contains("/nonexistent/get-creds") && m.contains("cannot be started"),
            "{m}"
        );
    }
}
