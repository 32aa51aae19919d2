//! Golden tests of the CLI's human-facing text, in the manner of trycmd (as rage does): each
//! file under `tests/golden/` is a session of commands with the exact text they print, checked
//! as text. Written as a small harness of our own instead of the trycmd crate: the format needs
//! only what is below, and trycmd brings a dozen crates to every test build.
//!
//! A file is a sequence of blocks. `# …` lines are comments, `% file NAME TEXT` writes `TEXT`
//! (with `\n` for a newline) to `NAME` in the session's work directory, and
//!
//! ```text
//! $ hanzo-kms keys show data:acme:nope
//! error: key data:acme:nope not found
//! ? 1
//! ```
//!
//! runs the command (arguments split on spaces, `[TMP]` is the work directory; a final `< NAME`
//! feeds that file of the work directory as standard input, else it is empty) in the session's
//! data directory, then compares its standard output followed by its standard error, and its exit
//! code. Values that differ on every run are replaced before the comparison: the data and work
//! directories (`[DATA]`, `[TMP]`), Ethereum addresses (`[ADDRESS]`), 32-byte hex (`[HEX32]`),
//! data ciphertexts (`hkms:v1:[CIPHERTEXT]`), tokens (`[TOKEN]`), abbreviated public keys
//! (`[PUBLIC KEY]`), times (`[TIME]`), durations (`in [SECONDS] s`), bare SHA-256 hex (`[HASH]`)
//! and file sizes (`([N] bytes)`: a record holds the operator's user name).
//!
//! `GOLDEN=overwrite cargo test -p hanzo-kms-cli --test golden` rewrites the files from what the
//! binary prints now (comments and `%` lines are kept); review the diff before committing it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use regex::Regex;

/// What differs on every run, and what replaces it (compiled once for every command).
static REDACTIONS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"hkms_[A-Za-z0-9]+_[A-Za-z0-9_-]+", "[TOKEN]"),
        (r"hkms:v(\d+):[A-Za-z0-9_-]+", "hkms:v$1:[CIPHERTEXT]"),
        (r"0x[0-9a-fA-F]{64}", "[HEX32]"),
        (r"0x[0-9a-fA-F]{40}", "[ADDRESS]"),
        (r"[0-9a-f]{32}…[0-9a-f]{16}", "[PUBLIC KEY]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r" in \d+\.\d+ s\b", " in [SECONDS] s"),
        (r"\b[0-9a-f]{64}\b", "[HASH]"),
        (r"\(\d+ bytes\)", "([N] bytes)"),
    ]
    .into_iter()
    .map(|(p, with)| (Regex::new(p).unwrap(), with))
    .collect()
});

struct Session {
    data: PathBuf,
    tmp: PathBuf,
}

impl Session {
    fn normalise(&self, text: &str) -> String {
        let mut t = text
            .replace(&self.data.display().to_string(), "[DATA]")
            .replace(&self.tmp.display().to_string(), "[TMP]");
        for (pattern, with) in REDACTIONS.iter() {
            t = pattern.replace_all(&t, *with).into_owned();
        }
        t
    }

    fn run(&self, line: &str) -> (String, i32) {
        let (line, stdin) = match line.rsplit_once(" < ") {
            Some((command, file)) => (command, std::fs::read(self.tmp.join(file)).unwrap()),
            None => (line, Vec::new()),
        };
        let mut args = line.split(' ');
        assert_eq!(
            args.next(),
            Some("hanzo-kms"),
            "a command runs hanzo-kms: {line}"
        );
        let tmp = self.tmp.display().to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hanzo-kms"));
        // Nothing of the caller's environment that the CLI reads: its own variables, and the
        // terminal width clap wraps help at.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HANZO_KMS") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(args.map(|a| a.replace("[TMP]", &tmp)))
            .env("HANZO_KMS_DATA_DIR", &self.data)
            .env("COLUMNS", "100")
            .env("NO_COLOR", "1")
            .current_dir(&self.tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (self.normalise(&text), out.status.code().unwrap_or(-1))
    }
}

/// Runs one golden file; returns the file as the binary would have it, and the differences.
fn check(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let session = Session {
        data: dir.path().join("data"),
        tmp: dir.path().to_path_buf(),
    };
    let mut rewritten = String::new();
    let mut diffs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("% file ") {
            let (name, content) = rest.split_once(' ').unwrap_or((rest, ""));
            std::fs::write(session.tmp.join(name), content.replace("\\n", "\n")).unwrap();
            rewritten.push_str(line);
            rewritten.push('\n');
        } else if let Some(command) = line.strip_prefix("$ ") {
            let mut expected = String::new();
            let mut code = None;
            for l in lines.by_ref() {
                if let Some(c) = l.strip_prefix("? ") {
                    code = Some(c.trim().parse::<i32>().expect("an exit code after '?'"));
                    break;
                }
                expected.push_str(l);
                expected.push('\n');
            }
            let code = code.unwrap_or_else(|| {
                panic!("{}: `$ {command}` has no '? CODE' line", path.display())
            });
            let (actual, actual_code) = session.run(command);
            if actual != expected || actual_code != code {
                diffs.push(format!(
                    "$ {command}\n--- expected (exit {code})\n{expected}--- actual (exit {actual_code})\n{actual}"
                ));
            }
            rewritten.push_str(&format!("$ {command}\n{actual}? {actual_code}\n"));
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "{}: a line is a comment, `% file`, `$ command`, or blank: {line:?}",
                path.display()
            );
            rewritten.push_str(line);
            rewritten.push('\n');
        }
    }
    (rewritten, diffs)
}

#[test]
fn cli_text_matches_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "golden files missing in {}",
        dir.display()
    );
    let overwrite = std::env::var("GOLDEN").is_ok_and(|v| v == "overwrite");
    let mut failures = Vec::new();
    for f in &files {
        let (rewritten, diffs) = check(f);
        if overwrite {
            std::fs::write(f, rewritten).unwrap();
        } else if !diffs.is_empty() {
            failures.push(format!("{}:\n{}", f.display(), diffs.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "the CLI's text differs from the golden files (GOLDEN=overwrite rewrites them):\n\n{}",
        failures.join("\n\n")
    );
}
