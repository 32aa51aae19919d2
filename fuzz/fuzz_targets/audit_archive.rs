//! Audit archive files (docs/audit-archive.md): what `audit verify --archive`, `audit
//! verify-archive` and `audit prune --archive` read from files an operator hands them.
//!
//! Input: the file's bytes. Invariants: nothing panics; an archive that parses holds a
//! non-empty range that ends at its checkpoint, whose signature verifies under the key it
//! carries; and its SHA-256 is that of the bytes. Checking a set of two copies never panics.
#![no_main]

use std::path::Path;

use hanzo_kms_service::archive::{check_archives, parse_archive};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_archive(Path::new("fuzz.jsonl"), data) {
        assert!(a.first >= 1 && a.first <= a.last);
        assert_eq!(a.checkpoint.seq, a.last);
        assert!(a.checkpoint.verifies(&a.public_key));
        assert_eq!(a.sha256, <[u8; 32]>::from(Sha256::digest(data)));
    }
    // Files that do not exist are reported, not a panic.
    let r = check_archives(&[Path::new("/nonexistent/a").to_path_buf()], None);
    assert!(!r.is_ok());
});
