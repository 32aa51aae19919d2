//! Rendering results: short human text by default, one JSON object per result with `--json`.

use std::io::Write;
use std::process::ExitCode;

use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::archive::{ArchiveReport, Checkpoint, ExportSummary, PruneSummary};
use hanzo_kms_service::{DueOutcome, InitReport, KeyInfo, MasterKeySource};
use hanzo_kms_store::{AuditRecord, AuditReport};
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

    pub fn raw(&self, s: &str) {
        let _ = write!(std::io::stdout().lock(), "{s}");
    }

    pub fn bytes(&self, b: &[u8]) -> Result<()> {
        let mut o = std::io::stdout().lock();
        o.write_all(b)
            .and_then(|_| o.flush())
            .map_err(|e| Error::new(ErrorKind::Io, "writing stdout").with_source(e))
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

    pub fn init(&self, r: &InitReport) {
        let master = match &r.master_key {
            MasterKeySource::Env => json!({"source": "env"}),
            MasterKeySource::File(p) => json!({"source": "file", "path": p.display().to_string()}),
            MasterKeySource::Token { provider, label } => {
                json!({"source": "token", "provider": provider, "token_label": label})
            }
            MasterKeySource::Service {
                provider, location, ..
            } => {
                json!({"source": "service", "provider": provider, "location": location})
            }
            MasterKeySource::Device {
                provider, location, ..
            } => {
                json!({"source": "device", "provider": provider, "location": location})
            }
        };
        if self.json {
            self.json(&json!({"data_dir": r.data_dir.display().to_string(), "store": r.store, "store_id": r.store_id, "master_key": master}));
            return;
        }
        self.line(format!("initialised {}", r.data_dir.display()));
        self.line(format!("  store:      {}", r.store));
        match &r.master_key {
            MasterKeySource::Env => {
                self.line("  master key: from $HANZO_KMS_MASTER_KEY (no file written)")
            }
            MasterKeySource::File(p) => {
                self.line(format!("  master key: {} (mode 0600)", p.display()));
                self.line("  Back the master key up and keep it apart from the store: without it no key can be used.");
            }
            MasterKeySource::Token { provider, label } => {
                self.line(format!("  root keys:  in {provider} token '{label}' (hanzo-kms/root/*: its wrapping root and MAC key)"));
                self.line("  No master key file: the token's root keys unlock this store. Back the token up with the vendor's tools.");
            }
            MasterKeySource::Service {
                service, location, ..
            } => {
                self.line(format!("  root keys:  in {service} at {location} (root-kek wraps kms-wrapped keys, root-mac keys token MACs)"));
                self.line("  No master key file: the service's root keys unlock this store; deleting them there loses every kms-wrapped key.");
            }
            MasterKeySource::Device {
                device, location, ..
            } => {
                self.line(format!("  root keys:  in the {device} at {location} (hanzo-kms/root/wrap seals hsm-wrapped keys with Wrap Data, hanzo-kms/root/mac keys token MACs)"));
                self.line("  No master key file: the device's root objects unlock this store. Back the device up with Yubico's tools (export under a wrap key of your own).");
            }
        }
    }

    pub fn key_created(&self, k: &KeyInfo) {
        self.key_changed("created", k);
    }

    pub fn key_changed(&self, verb: &str, k: &KeyInfo) {
        if self.json {
            self.json(&to_json(k));
            return;
        }
        let mut s = format!(
            "{verb} {} ({}, version {}, {})",
            k.name, k.algorithm, k.primary_version, k.state
        );
        if let Some(a) = k.address() {
            s.push_str(&format!(", address {a}"));
        }
        if let Some(t) = k.destroy_at.filter(|_| k.state == "destroy-scheduled") {
            s.push_str(&format!(", at {}; `keys enable` cancels", rfc3339(t)));
        }
        self.line(s);
    }

    pub fn keyspace(&self, keys: &[KeyInfo]) {
        if self.json {
            self.json(&json!({"keys": keys.iter().map(to_json).collect::<Vec<_>>()}));
            return;
        }
        for k in keys {
            self.key_created(k);
        }
    }

    pub fn key_list(&self, keys: &[KeyInfo]) {
        if self.json {
            self.json(&json!({"keys": keys.iter().map(to_json).collect::<Vec<_>>()}));
            return;
        }
        if keys.is_empty() {
            self.line("no keys");
            return;
        }
        let w = keys.iter().map(|k| k.name.len()).max().unwrap_or(4).max(4);
        self.line(format!(
            "{:w$}  {:11}  {:17}  {:>7}  ORIGIN",
            "NAME", "ALGORITHM", "STATE", "VERSION"
        ));
        for k in keys {
            self.line(format!(
                "{:w$}  {:11}  {:17}  {:>7}  {}",
                k.name, k.algorithm, k.state, k.primary_version, k.origin
            ));
        }
    }

    pub fn key_show(&self, k: &KeyInfo) {
        if self.json {
            self.json(&to_json(k));
            return;
        }
        self.line(format!("name:             {}", k.name));
        self.line(format!("algorithm:        {}", k.algorithm));
        self.line(format!(
            "origin:           {} (provider {})",
            k.origin, k.provider
        ));
        self.line(format!("state:            {}", k.state));
        if let Some(t) = k.destroy_at {
            self.line(format!("destroy at:       {}", rfc3339(t)));
        }
        self.line(format!("primary version:  {}", k.primary_version));
        match k.rotation_period_days {
            Some(d) => self.line(format!(
                "rotation:         every {d} days; next due {}{}",
                rfc3339(k.rotated_at + d * 86_400),
                if k.rotation_due { " (overdue)" } else { "" }
            )),
            None => self.line("rotation:         manual"),
        }
        self.line(format!("created:          {}", rfc3339(k.created_at)));
        self.line(format!("last rotated:     {}", rfc3339(k.rotated_at)));
        if let Some(a) = k.address() {
            self.line(format!("address:          {a}"));
        }
        self.line("versions:");
        for v in &k.versions {
            let primary = if v.version == k.primary_version {
                " (primary)"
            } else {
                ""
            };
            self.line(format!(
                "  v{}{primary}  {}  created {}",
                v.version,
                v.state,
                rfc3339(v.created_at)
            ));
            if let Some(a) = &v.address {
                self.line(format!("      address:    {a}"));
            }
            if let Some(p) = &v.public_key {
                self.line(format!("      public key: {}", abbreviate(p)));
            }
            if let Some(w) = &v.wrapping {
                self.line(format!("      wrapping:   {w}"));
            }
        }
    }

    /// Report `--due` runs; exit 1 if any key failed.
    pub fn due(&self, verb: &str, outcomes: &[DueOutcome]) -> ExitCode {
        let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
        if self.json {
            let items: Vec<Value> = outcomes
                .iter()
                .map(|o| match &o.result {
                    Ok(k) => json!({"key": o.key, "ok": true, "version": k.primary_version}),
                    Err(e) => json!({"key": o.key, "ok": false, "error": {"code": e.kind().code(), "message": e.to_string()}}),
                })
                .collect();
            self.json(&json!({verb: items, "failed": failed}));
        } else if outcomes.is_empty() {
            self.line(format!("nothing due; no keys {verb}"));
        } else {
            for o in outcomes {
                match &o.result {
                    Ok(k) => self.line(format!("{verb} {} (version {})", o.key, k.primary_version)),
                    Err(e) => self.line(format!("failed {}: {e}", o.key)),
                }
            }
        }
        if failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    pub fn audit_list(&self, records: &[AuditRecord]) {
        if self.json {
            self.json(
                &json!({"records": records.iter().map(AuditRecord::to_json).collect::<Vec<_>>()}),
            );
            return;
        }
        for r in records {
            let e = &r.event;
            let key = match (&e.key_name, e.key_version) {
                (Some(k), Some(v)) => format!("{k}@v{v}"),
                (Some(k), None) => k.clone(),
                _ => "-".into(),
            };
            let reason = e
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            self.line(format!(
                "{:>6}  {}  {:18}  {:7}{reason}  {}  {}  tenant={}",
                r.seq,
                rfc3339(e.time_ms / 1000),
                e.operation,
                e.outcome,
                key,
                e.principal,
                e.tenant
            ));
        }
    }

    /// Exit 0 if the chain is intact, 1 if not.
    pub fn audit_verify(&self, r: &AuditReport) -> ExitCode {
        if self.json {
            self.json(&r.to_json());
        } else {
            self.audit_verify_text(r);
        }
        if r.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

impl Out {
    /// `audit verify --archive`: the store's report, then the archives'.
    pub fn audit_verify_with_archives(&self, r: &AuditReport, a: &ArchiveReport) -> ExitCode {
        if self.json {
            self.json(&json!({"store": r.to_json(), "archives": a.to_json()}));
        } else {
            self.audit_verify_text(r);
            self.archive_text(a);
        }
        if r.is_ok() && a.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    /// `audit verify-archive`.
    pub fn archive_report(&self, a: &ArchiveReport) -> ExitCode {
        if self.json {
            self.json(&a.to_json());
        } else {
            self.archive_text(a);
        }
        if a.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    fn archive_text(&self, a: &ArchiveReport) {
        for f in &a.archives {
            self.line(format!(
                "archive {}: records {}..{}, sha256 {}",
                f["file"].as_str().unwrap_or_default(),
                f["first"],
                f["last"],
                f["sha256"].as_str().unwrap_or_default()
            ));
        }
        if a.is_ok() {
            self.line(format!("archives intact: {} file(s)", a.archives.len()));
        }
        for p in &a.problems {
            self.line(format!("archive problem: {p}"));
        }
    }

    pub fn audit_checkpoint(&self, c: &Checkpoint) {
        if self.json {
            self.json(&json!({
                "seq": c.seq,
                "hash": hex::encode(c.hash),
                "time_ms": c.time_ms,
                "key": c.key,
                "version": c.version,
                "signature": hex::encode(&c.signature),
            }));
        } else {
            self.line(format!(
                "checkpoint: record {} hashes to {}, signed by {} v{}",
                c.seq,
                hex::encode(c.hash),
                c.key,
                c.version
            ));
        }
    }

    pub fn audit_export(&self, e: &ExportSummary) {
        if self.json {
            self.json(&e.to_json());
        } else {
            self.line(format!(
                "exported records {}..{} ({} bytes) to {}, sha256 {}; export record {}. \
                 Keep the file safe, then `hanzo-kms audit prune --archive {}` frees them",
                e.first,
                e.last,
                e.bytes,
                e.file.display(),
                hex::encode(e.sha256),
                e.export_record,
                e.file.display()
            ));
        }
    }

    pub fn audit_prune(&self, p: &PruneSummary) {
        if self.json {
            self.json(&p.to_json());
        } else if p.deleted == 0 && p.batches == 0 {
            self.line(format!(
                "records {}..{} were already pruned",
                p.first, p.last
            ));
        } else {
            self.line(format!(
                "pruned {} records of {}..{} in {} transaction(s)",
                p.deleted, p.first, p.last, p.batches
            ));
        }
    }
}

impl Out {
    fn audit_verify_text(&self, r: &AuditReport) {
        let from = if r.from > 1 {
            format!(" from record {}", r.from)
        } else {
            String::new()
        };
        match &r.problem {
            None => self.line(format!(
                "audit chain intact: {} records{from}, head {}",
                r.records,
                hex::encode(r.head)
            )),
            Some((seq, what)) => self.line(format!(
                "audit chain BROKEN at record {seq}: {what} ({} records verified before it)",
                r.records
            )),
        }
    }
}

fn to_json(k: &KeyInfo) -> Value {
    serde_json::to_value(k).unwrap_or(Value::Null)
}

fn abbreviate(hex: &str) -> String {
    if hex.len() <= 80 {
        hex.to_owned()
    } else {
        format!(
            "{}…{} ({} bytes)",
            &hex[..32],
            &hex[hex.len() - 16..],
            hex.len() / 2
        )
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-11-23T22:35:36Z`).
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An RFC 3339 UTC time (`2026-11-23T22:35:36Z`, or a date alone) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, t.strip_suffix('Z')?),
        None => (s, "00:00:00"),
    };
    let num = |p: &str, len: usize| -> Option<i64> {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())?
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let mut t = time.split(':');
    let (hh, mm, ss) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || day < 1
        || hh > 23
        || mm > 59
        || ss > 59
    {
        return None;
    }
    // Days-from-civil (H. Hinnant's algorithm), the inverse of `rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + hh * 3600 + mm * 60 + ss;
    // A day past the month's end (02-30) does not round-trip.
    (rfc3339(t).get(..10) == Some(date)).then_some(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_parses_what_it_prints() {
        for t in [0, 951_782_400, 1_795_473_336, 4_102_444_799] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        }
        assert_eq!(super::parse_rfc3339("2000-02-29"), Some(951_782_400));
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "2026-01-01T00:00:00",
            "x",
            "2026-01-01T24:00:00Z",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_473_336), "2026-11-23T22:35:36Z");
    }
}
