//! The benches' output: human text on stdout, or with `--json` one JSON object; errors as one
//! line on stderr (a JSON object with `--json`). The same shapes as the `hanzo-kms` command's
//! (crates/cli/src/output.rs), of which the benches use only these few.

use std::io::Write;

use hanzo_kms_core::Error;
use serde_json::{Value, json};

pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn line(&self, s: impl AsRef<str>) {
        let _ = writeln!(std::io::stdout().lock(), "{}", s.as_ref());
    }

    pub fn json(&self, v: &Value) {
        self.line(v.to_string());
    }

    /// One line on stderr (a JSON object with `--json`).
    pub fn error(&self, e: &Error) {
        let mut err = std::io::stderr().lock();
        if self.json {
            let _ = writeln!(
                err,
                "{}",
                json!({"error": {"code": e.kind().code(), "message": e.to_string()}})
            );
        } else {
            let _ = writeln!(err, "error: {e}");
        }
    }
}
