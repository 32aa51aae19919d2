//! Audit archival (docs/operations.md, "Audit archives"): signed checkpoints, exports that verify
//! alone, prunes only of exported ranges, and verification that finds a changed or dropped
//! archive, a prune without an export and a forged checkpoint. On SQLite and PostgreSQL.

mod common;

use std::path::{Path, PathBuf};

use hanzo_kms_core::{Algorithm, Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::Kms;
use hanzo_kms_service::archive::{
    ArchiveReport, ExportBound, ExportTo, VerifyOptions, check_archives, read_archive,
};

use common::{ctx, init as fresh, settings};

/// `n` audited requests (key listings).
async fn activity(kms: &Kms, n: usize) {
    for _ in 0..n {
        kms.list_keys(&ctx(), "").await.unwrap();
    }
}

async fn oldest(kms: &Kms) -> u64 {
    kms.audit_records(&ctx(), 0, 1).await.unwrap()[0].seq
}

async fn verify(kms: &Kms) -> hanzo_kms_store::AuditReport {
    kms.audit_verify(&ctx()).await.unwrap()
}

async fn archives(kms: &Kms, files: &[&Path]) -> ArchiveReport {
    let files: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
    kms.audit_verify_archives(&ctx(), &files).await.unwrap()
}

fn problems(r: &ArchiveReport) -> String {
    r.problems.join("\n")
}

#[tokio::test]
async fn export_prune_and_verify_round_trip() {
    let (dir, kms) = fresh("").await;
    round_trip(&kms, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prune_and_verify_round_trip_on_postgresql() {
    let pg = hanzo_kms_testkit::Postgres::start();
    let url = pg.create_database("archive");
    let (dir, kms) = fresh(&format!("storage:\n  url: {url}\n")).await;
    round_trip(&kms, dir.path()).await;
}

async fn round_trip(kms: &Kms, dir: &Path) {
    activity(kms, 20).await;
    // No checkpoint yet: nothing can be exported.
    let a1 = dir.join("a1.jsonl");
    let e = kms
        .audit_export(&ctx(), ExportBound::Newest, &ExportTo::File(a1.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!a1.exists(), "a refused export leaves no file");

    let cp1 = kms.audit_checkpoint(&ctx()).await.unwrap();
    assert!(cp1.seq > 20);
    activity(kms, 5).await;
    // A bound before the checkpoint finds none.
    let e = kms
        .audit_export(
            &ctx(),
            ExportBound::Seq(cp1.seq),
            &ExportTo::File(a1.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e1 = kms
        .audit_export(
            &ctx(),
            ExportBound::Seq(cp1.seq + 1),
            &ExportTo::File(a1.clone()),
        )
        .await
        .unwrap();
    assert_eq!((e1.first, e1.last), (1, cp1.seq));
    // The file verifies alone and names what the export record says.
    let a = read_archive(&a1).unwrap();
    assert_eq!((a.first, a.last, a.sha256), (1, cp1.seq, e1.sha256));
    // The same export again finds its own file (a retry after a failed prune) and writes
    // nothing.
    let again = kms
        .audit_export(
            &ctx(),
            ExportBound::Seq(cp1.seq + 1),
            &ExportTo::File(a1.clone()),
        )
        .await
        .unwrap();
    assert_eq!(again, e1);
    // Any other file is never overwritten.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, "mine\n").unwrap();
    let e = kms
        .audit_export(&ctx(), ExportBound::Newest, &ExportTo::File(other.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "mine\n");
    // Exporting removes nothing.
    assert_eq!(oldest(kms).await, 1);
    assert!(verify(kms).await.is_ok());

    let p1 = kms.audit_prune(&ctx(), &a1).await.unwrap();
    assert_eq!((p1.deleted, p1.batches), (cp1.seq, 1));
    assert_eq!(oldest(kms).await, cp1.seq + 1);
    let r = verify(kms).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.from, cp1.seq + 1);
    let r = archives(kms, &[&a1]).await;
    assert!(r.is_ok(), "{}", problems(&r));
    // A second prune of the same archive deletes nothing.
    let again = kms.audit_prune(&ctx(), &a1).await.unwrap();
    assert_eq!(again.deleted, 0);

    // A second round: the next archive continues the first.
    activity(kms, 7).await;
    let cp2 = kms.audit_checkpoint(&ctx()).await.unwrap();
    let a2 = dir.join("a2.jsonl");
    let e2 = kms
        .audit_export(&ctx(), ExportBound::Newest, &ExportTo::File(a2.clone()))
        .await
        .unwrap();
    assert_eq!((e2.first, e2.last), (cp1.seq + 1, cp2.seq));
    kms.audit_prune(&ctx(), &a2).await.unwrap();
    assert_eq!(oldest(kms).await, cp2.seq + 1);
    let r = verify(kms).await;
    assert!(r.is_ok(), "{r:?}");
    let r = archives(kms, &[&a2, &a1]).await;
    assert!(r.is_ok(), "{}", problems(&r));
    // From the newest checkpoint only.
    let r = kms
        .audit_verify_with(
            &ctx(),
            VerifyOptions {
                since_checkpoint: true,
            },
        )
        .await
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    // The newest checkpoint is the one the export made over its own record.
    assert_eq!(r.from, e2.export_record + 1);

    // Dropping an archive shows, whichever one.
    let r = archives(kms, &[&a2]).await;
    assert!(
        problems(&r).contains(&format!("records 1..{}", cp1.seq)),
        "{}",
        problems(&r)
    );
    let r = archives(kms, &[&a1]).await;
    assert!(
        problems(&r).contains(&format!("records {}..{}", cp1.seq + 1, cp2.seq)),
        "{}",
        problems(&r)
    );
    // Alone (no store), the two still verify and link.
    assert!(check_archives(&[a1.clone(), a2.clone()], None).is_ok());
}

#[tokio::test]
async fn a_changed_or_shortened_archive_is_detected() {
    let (dir, kms) = fresh("").await;
    activity(&kms, 10).await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    let a1 = dir.path().join("a1.jsonl");
    kms.audit_export(&ctx(), ExportBound::Newest, &ExportTo::File(a1.clone()))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&a1).unwrap();

    // One record edited.
    let edited = dir.path().join("edited.jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    let changed = lines[3].replace("\"outcome\":\"ok\"", "\"outcome\":\"denied\"");
    assert_ne!(changed, lines[3]);
    lines[3] = &changed;
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();
    let e = read_archive(&edited).unwrap_err();
    assert!(e.contains("edited"), "{e}");
    // The store refuses to prune on it.
    let e = kms.audit_prune(&ctx(), &edited).await.unwrap_err();
    assert!(e.message().contains("edited"), "{e}");
    assert_eq!(oldest(&kms).await, 1);

    // One record removed.
    let short = dir.path().join("short.jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    std::fs::write(&short, lines.join("\n") + "\n").unwrap();
    let e = read_archive(&short).unwrap_err();
    assert!(e.contains("deleted or reordered"), "{e}");

    // The last records removed, with the header's range adjusted: the chain no longer ends
    // at the checkpoint that signed it.
    let cut = dir.path().join("cut.jsonl");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len();
    let last = read_archive(&a1).unwrap().last;
    lines[0] = lines[0].replace(
        &format!("\"last\":{last}"),
        &format!("\"last\":{}", last - 1),
    );
    lines.remove(n - 2);
    std::fs::write(&cut, lines.join("\n") + "\n").unwrap();
    let e = read_archive(&cut).unwrap_err();
    assert!(e.contains("do not end at its checkpoint"), "{e}");

    // A byte anywhere changes the file's hash: the export record no longer names it.
    let spaced = dir.path().join("spaced.jsonl");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replacen('{', "{ ", 1);
    std::fs::write(&spaced, lines.join("\n") + "\n").unwrap();
    read_archive(&spaced).unwrap();
    let r = archives(&kms, &[&spaced]).await;
    assert!(
        problems(&r).contains("no export record names"),
        "{}",
        problems(&r)
    );
    let e = kms.audit_prune(&ctx(), &spaced).await.unwrap_err();
    assert!(e.message().contains("no export record"), "{e}");
    assert_eq!(oldest(&kms).await, 1);
}

/// SQL on the SQLite store behind the service's back: what someone with the file can do.
fn sql(dir: &Path, statement: &str) {
    let c = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
    c.execute_batch(statement).unwrap();
}

#[tokio::test]
async fn records_deleted_without_an_export_are_detected() {
    let (dir, kms) = fresh("").await;
    activity(&kms, 10).await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    activity(&kms, 3).await;
    assert!(verify(&kms).await.is_ok());
    // The oldest records go, the chain's base left where it was: the walk from the base
    // finds them missing.
    let hash_8: String = rusqlite::Connection::open(dir.path().join("kms.db"))
        .unwrap()
        .query_row(
            "SELECT lower(hex(hash)) FROM audit_log WHERE seq = 8",
            [],
            |r| r.get(0),
        )
        .unwrap();
    sql(dir.path(), "DELETE FROM audit_log WHERE seq <= 8");
    let r = verify(&kms).await;
    let (at, what) = r.problem.unwrap();
    assert_eq!(at, 9);
    assert!(what.contains("expected record 1 but found 9"), "{what}");
    // The same, with the base moved the way a prune moves it, but with no export.
    sql(
        dir.path(),
        &format!("UPDATE audit_head SET base_seq = 8, base_hash = '{hash_8}'"),
    );
    let r = verify(&kms).await;
    let (at, what) = r.problem.unwrap();
    assert_eq!(at, 9);
    assert!(what.contains("no export record covers them"), "{what}");
}

/// The walk starts after the chain's base (where the prunes left it): records the store still
/// holds at or before it were put back, or the base was moved over them to keep them from
/// being checked. Either is reported, not skipped.
#[tokio::test]
async fn records_at_or_before_the_base_are_reported() {
    let (dir, kms) = fresh("").await;
    activity(&kms, 10).await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    assert!(verify(&kms).await.is_ok());
    let hash_5: String = rusqlite::Connection::open(dir.path().join("kms.db"))
        .unwrap()
        .query_row(
            "SELECT lower(hex(hash)) FROM audit_log WHERE seq = 5",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The base moved over records 1..5, which stay (and could now be edited unseen).
    sql(
        dir.path(),
        &format!("UPDATE audit_head SET base_seq = 5, base_hash = '{hash_5}'"),
    );
    let (at, what) = verify(&kms).await.problem.unwrap();
    assert_eq!(at, 1);
    assert!(what.contains("records up to 5 were pruned"), "{what}");
    // As after a real prune of 1..5, then record 3 put back.
    sql(
        dir.path(),
        "DELETE FROM audit_log WHERE seq IN (1, 2, 4, 5)",
    );
    let (at, what) = verify(&kms).await.problem.unwrap();
    assert_eq!(at, 3);
    assert!(what.contains("holds record 3"), "{what}");
}

#[tokio::test]
async fn an_audit_public_key_swapped_in_the_store_is_detected() {
    let (dir, kms) = fresh("").await;
    let s = settings(dir.path(), "");
    activity(&kms, 3).await;
    let cp = kms.audit_checkpoint(&ctx()).await.unwrap();
    assert!(verify(&kms).await.is_ok());
    // The audit key's public key replaced with another P-256 key's: as if the checkpoint had
    // been signed by someone else.
    let other = KeyName::parse("api:acme:other", Separator::default()).unwrap();
    kms.create_key(&ctx(), &other, Some(Algorithm::P256), None)
        .await
        .unwrap();
    let pk = kms.public_key(&ctx(), &other).await.unwrap().public_key;
    let pk = pk.trim_start_matches("0x");
    kms.close().await;
    sql(
        dir.path(),
        &format!(
            "UPDATE key_versions SET public_key = X'{pk}' WHERE key_name = '{}'",
            cp.key
        ),
    );
    let kms = Kms::open(&s).await.unwrap();
    let r = verify(&kms).await;
    let (_, what) = r.problem.unwrap();
    assert!(what.contains("not one its provider holds"), "{what}");
}

#[tokio::test]
async fn the_scheduler_checkpoints_archives_and_prunes_by_retention() {
    let archive_dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "audit:\n  checkpoint_interval_secs: 10\n  retention_secs: 0\n  archive_dir: {}\n",
        archive_dir.path().display()
    );
    let (_dir, kms) = fresh(&yaml).await;
    activity(&kms, 5).await;
    // The scheduler's clock a second ahead: the checkpoint it signs now is older than it.
    let t = hanzo_kms_service::now_ms() + 1000;
    let m = kms.audit_maintenance(t).await.unwrap();
    let cp = m.checkpoint.expect("a first checkpoint");
    let e = m.export.expect("an export");
    assert_eq!((e.first, e.last), (1, cp.seq));
    assert_eq!(m.pruned.unwrap().deleted, cp.seq);
    assert!(e.file.starts_with(archive_dir.path()));
    // At once again: no checkpoint due, nothing old enough past the last one.
    let m = kms.audit_maintenance(t).await.unwrap();
    assert!(m.checkpoint.is_none() && m.export.is_none());
    // An interval later: the records since (the export's and prune's own) get a checkpoint
    // and go too.
    activity(&kms, 2).await;
    let m = kms.audit_maintenance(t + 11_000).await.unwrap();
    let e2 = m.export.expect("a second export");
    assert_eq!(e2.first, cp.seq + 1);
    // Idle from here: archival's own records (checkpoint, export, prune) are not archived
    // again and again.
    let m = kms.audit_maintenance(t + 60_000).await.unwrap();
    assert!(m.checkpoint.is_none() && m.export.is_none(), "{m:?}");
    let r = verify(&kms).await;
    assert!(r.is_ok(), "{r:?}");
    let files: Vec<PathBuf> = std::fs::read_dir(archive_dir.path())
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let r = kms.audit_verify_archives(&ctx(), &files).await.unwrap();
    assert!(r.is_ok(), "{}", problems(&r));
}

#[tokio::test]
async fn retention_needs_an_archive_directory() {
    let e = Config::from_yaml(
        "audit:\n  retention_secs: 3600\n",
        "test",
        std::iter::empty::<(&str, &str)>(),
    )
    .unwrap_err();
    assert!(e.message().contains("audit.archive_dir"), "{e}");
}

#[tokio::test]
async fn a_checkpoint_comes_by_record_count_as_well_as_by_time() {
    let yaml = "audit:\n  checkpoint_interval_secs: 3600\n  checkpoint_every_records: 5\n";
    let (_dir, kms) = fresh(yaml).await;
    let t = hanzo_kms_service::now_ms();
    assert!(kms.audit_maintenance(t).await.unwrap().checkpoint.is_some());
    activity(&kms, 2).await;
    assert!(kms.audit_maintenance(t).await.unwrap().checkpoint.is_none());
    activity(&kms, 3).await;
    let c = kms.audit_maintenance(t).await.unwrap().checkpoint;
    assert!(c.is_some(), "5 records since the last checkpoint");
    // By time: an hour later, one more record is enough.
    activity(&kms, 1).await;
    assert!(kms.audit_maintenance(t).await.unwrap().checkpoint.is_none());
    assert!(
        kms.audit_maintenance(t + 3_700_000)
            .await
            .unwrap()
            .checkpoint
            .is_some()
    );
}

/// Someone who can write the store, but not sign: deletes the records up to a checkpoint (as a
/// prune would) and appends an export record, chained correctly, claiming they were archived.
/// Its signature is not the audit key's, so verification does not take its word.
#[tokio::test]
async fn a_forged_export_record_does_not_cover_a_prune() {
    let (dir, kms) = fresh("").await;
    let s = settings(dir.path(), "");
    activity(&kms, 5).await;
    let cp = kms.audit_checkpoint(&ctx()).await.unwrap();
    activity(&kms, 2).await;
    kms.close().await;
    let c = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
    c.execute("DELETE FROM audit_log WHERE seq <= ?1", [cp.seq as i64])
        .unwrap();
    // The chain's base moved the way a prune moves it.
    c.execute(
        "UPDATE audit_head SET base_seq = ?1, base_hash = ?2",
        rusqlite::params![cp.seq as i64, hex::encode(cp.hash)],
    )
    .unwrap();
    let (head, hash): (i64, String) = c
        .query_row("SELECT seq, hash FROM audit_head", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let prev = hanzo_kms_store::parse_hash(&hash).unwrap();
    let event = hanzo_kms_store::AuditEvent {
        time_ms: hanzo_kms_service::now_ms(),
        request_id: "forged".into(),
        principal: "local:operator".into(),
        tenant: "*".into(),
        operation: "audit.export".into(),
        key_name: Some(cp.key.clone()),
        key_version: Some(cp.version),
        outcome: "ok".into(),
        reason: None,
        peer: None,
        detail: Some(format!(
            r#"{{"first":1,"last":{},"sha256":"{}","file":"gone.jsonl","hash":"{}","signature":"{}"}}"#,
            cp.seq,
            "00".repeat(32),
            hex::encode(cp.hash),
            "11".repeat(64)
        )),
    };
    let seq = head as u64 + 1;
    let h = hanzo_kms_store::audit::chain_hash(&prev, seq, &event);
    c.execute(
        "INSERT INTO audit_log (seq, time_ms, request_id, principal, tenant, operation, key_name, \
         key_version, outcome, reason, peer, detail, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?10, ?11, ?7, NULL, NULL, ?8, ?9)",
        rusqlite::params![
            seq as i64,
            event.time_ms,
            event.request_id,
            event.principal,
            event.tenant,
            event.operation,
            event.outcome,
            event.detail,
            h.as_slice(),
            event.key_name,
            event.key_version
        ],
    )
    .unwrap();
    c.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2",
        rusqlite::params![seq as i64, hex::encode(h)],
    )
    .unwrap();
    drop(c);
    let kms = Kms::open(&s).await.unwrap();
    let r = verify(&kms).await;
    let (at, what) = r.problem.unwrap();
    assert_eq!(at, seq);
    assert!(what.contains("not signed by the audit key"), "{what}");
}

/// The audit key is the service's own: no token, and not the CLI's operator, may sign with it
/// or change it (else a checkpoint could be forged through the API).
#[tokio::test]
async fn the_audit_key_is_the_services_alone() {
    let (_dir, kms) = fresh("").await;
    let cp = kms.audit_checkpoint(&ctx()).await.unwrap();
    let key = KeyName::parse(&cp.key, Separator::default()).unwrap();
    let e = kms
        .sign_messages(&ctx(), &key, &[b"forged".to_vec()], false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = kms.rotate_key(&ctx(), &key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // Reading it is allowed: its public key is what archives verify under.
    let pk = kms.public_key(&ctx(), &key).await.unwrap();
    assert_eq!(pk.algorithm, "p256");
    let e = kms
        .create_token(&ctx(), "system", &[hanzo_kms_service::Role::Sign], &[], "")
        .await
        .unwrap_err();
    assert!(e.message().contains("reserved"), "{e}");
}

/// Someone who can write the store rewrites its records from `k` on, chained anew: one record
/// changed, every checkpoint record dropped (a checkpoint pins a hash they cannot match), the
/// export record kept as it was (its signature does not depend on its place). Verification of
/// the store alone then passes: nothing signed covers the rewritten part. With the archive of
/// those records given, the difference shows.
#[tokio::test]
async fn an_archive_catches_a_rewritten_store_that_it_overlaps() {
    let (dir, kms) = fresh("").await;
    let s = settings(dir.path(), "");
    activity(&kms, 6).await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    let a1 = dir.path().join("a1.jsonl");
    kms.audit_export(&ctx(), ExportBound::Newest, &ExportTo::File(a1.clone()))
        .await
        .unwrap();
    kms.close().await;
    rewrite_from(dir.path(), 3);
    let kms = Kms::open(&s).await.unwrap();
    let r = verify(&kms).await;
    assert!(r.is_ok(), "the store alone cannot tell: {r:?}");
    let r = archives(&kms, &[&a1]).await;
    assert!(
        problems(&r).contains("is not the one the archive's checkpoint signed"),
        "{}",
        problems(&r)
    );
}

/// Rewrite the SQLite store's audit log from record `k`: record `k`'s outcome changed, the
/// checkpoint records dropped, the rest renumbered and chained anew, the head moved.
fn rewrite_from(dir: &Path, k: i64) {
    let c = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
    let mut rows: Vec<hanzo_kms_store::AuditEvent> = Vec::new();
    {
        let mut q = c
            .prepare(
                "SELECT time_ms, request_id, principal, tenant, operation, key_name, key_version, \
                 outcome, reason, peer, detail FROM audit_log WHERE seq >= ?1 ORDER BY seq",
            )
            .unwrap();
        let mut it = q.query([k]).unwrap();
        while let Some(r) = it.next().unwrap() {
            rows.push(hanzo_kms_store::AuditEvent {
                time_ms: r.get(0).unwrap(),
                request_id: r.get(1).unwrap(),
                principal: r.get(2).unwrap(),
                tenant: r.get(3).unwrap(),
                operation: r.get(4).unwrap(),
                key_name: r.get(5).unwrap(),
                key_version: r.get::<_, Option<i64>>(6).unwrap().map(|v| v as u32),
                outcome: r.get(7).unwrap(),
                reason: r.get(8).unwrap(),
                peer: r.get(9).unwrap(),
                detail: r.get(10).unwrap(),
            });
        }
    }
    rows.retain(|e| e.operation != "audit.checkpoint");
    rows[0].outcome = "denied".into();
    let prev: Vec<u8> = c
        .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [k - 1], |r| {
            r.get(0)
        })
        .unwrap();
    let mut prev = <[u8; 32]>::try_from(prev.as_slice()).unwrap();
    c.execute("DELETE FROM audit_log WHERE seq >= ?1", [k])
        .unwrap();
    let mut seq = k as u64 - 1;
    for e in &rows {
        seq += 1;
        let h = hanzo_kms_store::audit::chain_hash(&prev, seq, e);
        c.execute(
            "INSERT INTO audit_log (seq, time_ms, request_id, principal, tenant, operation, \
             key_name, key_version, outcome, reason, peer, detail, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            rusqlite::params![
                seq as i64,
                e.time_ms,
                e.request_id,
                e.principal,
                e.tenant,
                e.operation,
                e.key_name,
                e.key_version.map(i64::from),
                e.outcome,
                e.reason,
                e.peer,
                e.detail,
                h.as_slice()
            ],
        )
        .unwrap();
        prev = h;
    }
    c.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2",
        rusqlite::params![seq as i64, hex::encode(prev)],
    )
    .unwrap();
}

/// An export whose prune never ran (a crash between the two): the next scheduler pass prunes
/// with that archive instead of writing a second one over the same records.
#[tokio::test]
async fn the_scheduler_finishes_an_unfinished_prune() {
    let archive_dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "audit:\n  checkpoint_interval_secs: 10\n  retention_secs: 0\n  archive_dir: {}\n",
        archive_dir.path().display()
    );
    let (_dir, kms) = fresh(&yaml).await;
    activity(&kms, 4).await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    let e = kms
        .audit_export(
            &ctx(),
            ExportBound::Newest,
            &ExportTo::Dir(archive_dir.path().to_path_buf()),
        )
        .await
        .unwrap();
    // A second export before the prune would overlap the first: refused.
    let refused = kms
        .audit_export(
            &ctx(),
            ExportBound::Newest,
            &ExportTo::File(archive_dir.path().join("again.jsonl")),
        )
        .await
        .unwrap_err();
    assert!(refused.message().contains("prune them first"), "{refused}");
    let m = kms
        .audit_maintenance(hanzo_kms_service::now_ms() + 1000)
        .await
        .unwrap();
    assert!(m.export.is_none(), "{m:?}");
    assert_eq!(m.pruned.unwrap().deleted, e.last);
    assert_eq!(oldest(&kms).await, e.last + 1);
    assert_eq!(std::fs::read_dir(archive_dir.path()).unwrap().count(), 1);
    assert!(verify(&kms).await.is_ok());
}

/// A version of the audit key added in the store with someone's own public key and no material:
/// its checkpoints would verify under a key the provider does not hold. Reported.
#[tokio::test]
async fn an_audit_key_version_without_material_is_detected() {
    let (dir, kms) = fresh("").await;
    let s = settings(dir.path(), "");
    let cp = kms.audit_checkpoint(&ctx()).await.unwrap();
    let other = KeyName::parse("api:acme:other", Separator::default()).unwrap();
    kms.create_key(&ctx(), &other, Some(Algorithm::P256), None)
        .await
        .unwrap();
    let pk = kms.public_key(&ctx(), &other).await.unwrap().public_key;
    kms.close().await;
    sql(
        dir.path(),
        &format!(
            "INSERT INTO key_versions (key_name, version, state, created_at, public_key) \
             VALUES ('{}', 2, 'enabled', 0, X'{}')",
            cp.key,
            pk.trim_start_matches("0x")
        ),
    );
    let kms = Kms::open(&s).await.unwrap();
    let (_, what) = verify(&kms).await.problem.unwrap();
    assert!(
        what.contains("version 2 is not one its provider holds"),
        "{what}"
    );
}

/// A backup never carries the audit key: whoever held the bundle's passphrase could sign
/// checkpoints with it.
#[tokio::test]
async fn a_backup_leaves_the_audit_key_out() {
    let (_dir, kms) = fresh("").await;
    kms.audit_checkpoint(&ctx()).await.unwrap();
    let data = KeyName::parse("data:acme:d", Separator::default()).unwrap();
    kms.create_key(&ctx(), &data, None, None).await.unwrap();
    let protection = hanzo_kms_service::backup::Protection::Passphrase(zeroize::Zeroizing::new(
        "a passphrase for the test".to_owned(),
    ));
    let (bundle, skipped) = kms.backup_create(&ctx(), &protection, false).await.unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(bundle.keys, 1, "the data key only");
}

/// Two nodes on one PostgreSQL export at the same moment: the export records are decided under
/// the chain's write lock, so one export stands and the other is dropped with its file; the
/// archives never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exporting_at_once_make_one_archive() {
    let pg = hanzo_kms_testkit::Postgres::start();
    let url = pg.create_database("race");
    let yaml = format!("storage:\n  url: {url}\n");
    let (dir, a) = fresh(&yaml).await;
    let b = Kms::open(&settings(dir.path(), &yaml)).await.unwrap();
    activity(&a, 5).await;
    a.audit_checkpoint(&ctx()).await.unwrap();
    let (fa, fb) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let (ca, cb) = (ctx(), ctx());
    let (ta, tb) = (ExportTo::File(fa.clone()), ExportTo::File(fb.clone()));
    let (ra, rb) = tokio::join!(
        a.audit_export(&ca, ExportBound::Newest, &ta),
        b.audit_export(&cb, ExportBound::Newest, &tb),
    );
    let (won, lost, file, other) = match (ra, rb) {
        (Ok(w), Err(l)) => (w, l, fa, fb),
        (Err(l), Ok(w)) => (w, l, fb, fa),
        (ra, rb) => panic!("exactly one export must stand: {ra:?} {rb:?}"),
    };
    assert!(
        matches!(
            lost.kind(),
            ErrorKind::AlreadyExists | ErrorKind::InvalidArgument
        ),
        "{lost}"
    );
    assert!(
        file.exists() && !other.exists(),
        "the dropped export leaves no file"
    );
    a.audit_prune(&ctx(), &won.file).await.unwrap();
    assert!(verify(&a).await.is_ok());
    let r = archives(&b, &[&file]).await;
    assert!(r.is_ok(), "{}", problems(&r));
}
