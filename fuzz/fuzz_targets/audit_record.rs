//! Stored audit records: `audit_log` rows as the database returns them, turned into records by
//! the store's own code (`AuditColumns::into_record`, after the record before them: the previous
//! hash is not stored) and checked link by link as `verify_audit` does (`check_link`,
//! `chain_hash` over the canonical encoding).
//!
//! Input: rows of fields separated by 0x1F, rows separated by 0x1E (fields in `AuditColumns`
//! order; numbers in decimal; `-` for an absent optional; the hash as hex, or its raw bytes when
//! it is not hex). Invariants: nothing panics; a row becomes a record exactly when its hash is
//! 32 bytes, and the record carries that hash and the previous hash it was given; the chain check
//! accepts a record exactly when its seq and hash are right; the records re-chained by
//! `chain_from` pass it; the canonical encoding tells different events apart.
#![no_main]

use hanzo_kms_store::audit::{canonical, chain_from, chain_hash, check_link};
use hanzo_kms_store::AuditColumns;
use libfuzzer_sys::fuzz_target;

fn opt(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_owned())
}

fn row(fields: &[&str]) -> Option<AuditColumns> {
    let f = |i: usize| fields.get(i).copied().unwrap_or("");
    Some(AuditColumns {
        seq: f(0).parse().ok()?,
        time_ms: f(1).parse().unwrap_or(0),
        request_id: f(2).to_owned(),
        principal: f(3).to_owned(),
        tenant: f(4).to_owned(),
        operation: f(5).to_owned(),
        key_name: opt(f(6)),
        key_version: f(7).parse().ok(),
        outcome: f(8).to_owned(),
        reason: opt(f(9)),
        peer: opt(f(10)),
        detail: opt(f(11)),
        hash: hex::decode(f(12)).unwrap_or_else(|_| f(12).as_bytes().to_vec()),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut records = Vec::new();
    // Each row follows the one before it, as the store reads them.
    let mut prev = [0u8; 32];
    for r in text.split('\u{1e}') {
        let fields: Vec<&str> = r.split('\u{1f}').collect();
        let Some(columns) = row(&fields) else {
            continue;
        };
        let hash = columns.hash.clone();
        match columns.clone().into_record(prev) {
            Ok(rec) => {
                assert_eq!(hash.len(), 32);
                assert_eq!(rec.hash.as_slice(), hash.as_slice());
                assert_eq!(rec.prev_hash, prev);
                assert_eq!(rec.seq as i64, columns.seq);
                assert_eq!(
                    rec.event.key_version.map(i64::from),
                    columns.key_version.filter(|v| u32::try_from(*v).is_ok())
                );
                prev = rec.hash;
                records.push(rec);
            }
            Err(what) => {
                assert_ne!(hash.len(), 32);
                assert!(what.contains("malformed"), "{what}");
            }
        }
    }
    // The stored chain, checked as verify_audit does.
    let mut prev = [0u8; 32];
    for (i, r) in records.iter().enumerate() {
        let expected = i as u64 + 1;
        let ok = r.seq == expected && chain_hash(&prev, r.seq, &r.event) == r.hash;
        assert_eq!(check_link(expected, &prev, r).is_ok(), ok);
        if !ok {
            break;
        }
        prev = r.hash;
    }
    // The same events chained afresh always verify, and their encodings differ where they do.
    let events: Vec<_> = records.iter().map(|r| r.event.clone()).collect();
    let mut prev = [0u8; 32];
    for (i, r) in chain_from(0, [0; 32], &events).iter().enumerate() {
        check_link(i as u64 + 1, &prev, r).expect("a fresh chain verifies");
        prev = r.hash;
    }
    for pair in events.windows(2) {
        if pair[0] != pair[1] {
            assert_ne!(canonical(1, &pair[0]), canonical(1, &pair[1]));
        }
    }
});
