//! Schema 8 stores audit rows compactly (32-byte hashes, no stored previous hash, `seq` as the
//! rowid): a store an older version wrote, pruned or not, migrates with every record and the
//! chain's base intact, and verifies as before.

mod support;

use hanzo_kms_core::Separator;
use hanzo_kms_store::{AuditEvent, AuditRecord, Store};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + i as i64,
        request_id: format!("r{i}"),
        principal: "local:test".into(),
        tenant: "acme".into(),
        operation: "encrypt".into(),
        key_name: i.is_multiple_of(2).then(|| "data:acme:x".to_owned()),
        key_version: i.is_multiple_of(2).then_some(1),
        outcome: if i.is_multiple_of(5) { "denied" } else { "ok" }.into(),
        reason: i.is_multiple_of(5).then(|| "permission_denied".to_owned()),
        peer: Some("127.0.0.1".into()),
        detail: i.is_multiple_of(7).then(|| format!(r#"{{"n":{i}}}"#)),
    }
}

async fn open(dir: &std::path::Path) -> Store {
    let create = !dir.join("kms.db").exists();
    connect(&Store::sqlite_url(dir), create).await
}

async fn connect(url: &str, create: bool) -> Store {
    let s = Store::connect(url, Separator::default(), create)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    s
}

async fn all(s: &Store) -> Vec<AuditRecord> {
    s.audit_records(0, 1_000_000).await.unwrap()
}

/// A new store at `url` holding audit records 1..=`n`, closed again.
async fn with_records(url: &str, n: u64) {
    let s = connect(url, true).await;
    let events: Vec<AuditEvent> = (1..=n).map(event).collect();
    s.begin_write()
        .await
        .unwrap()
        .commit(&events)
        .await
        .unwrap();
    s.close().await;
}

/// Where the store is, and how to turn it back into the shape schema 7 had.
enum Backend<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a hanzo_kms_testkit::Postgres, &'a str),
}

/// PostgreSQL: schema 8 back to schema 7 (hex text hashes, the previous hash in each row).
const DOWNGRADE_PG_TO_7: &str = "
    ALTER TABLE audit_log DROP CONSTRAINT audit_log_hash_length;
    ALTER TABLE audit_log ALTER COLUMN hash TYPE TEXT USING encode(hash, 'hex');
    ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
    UPDATE audit_log a SET prev_hash = COALESCE(
        (SELECT p.hash FROM audit_log p WHERE p.seq = a.seq - 1),
        (SELECT base_hash FROM audit_head));
    ALTER TABLE audit_log ALTER COLUMN prev_hash SET NOT NULL;
    ALTER TABLE audit_head DROP COLUMN base_seq, DROP COLUMN base_hash;
    DELETE FROM schema_version WHERE version >= 8;
";

/// `pruned` records deleted from the start (a prune's transaction), then the store turned back
/// into schema 7 and opened again: the migration keeps what it held.
async fn migrated_with(backend: Backend<'_>, pruned: u64) {
    let url = match &backend {
        Backend::Sqlite(dir) => Store::sqlite_url(dir),
        Backend::Postgres(_, url) => url.to_string(),
    };
    let s = connect(&url, true).await;
    let events: Vec<AuditEvent> = (1..=40).map(event).collect();
    for chunk in events.chunks(7) {
        s.begin_write().await.unwrap().commit(chunk).await.unwrap();
    }
    if pruned > 0 {
        let mut tx = s.begin_write().await.unwrap();
        assert_eq!(tx.delete_audit(1, pruned).await.unwrap(), pruned);
        tx.commit(&[event(41)]).await.unwrap();
    }
    let before = all(&s).await;
    let base = s.audit_base().await.unwrap();
    let head = s.audit_head().await.unwrap();
    assert_eq!(base.0, pruned);
    assert_eq!(before[0].seq, pruned + 1);
    assert_eq!(before[0].prev_hash, base.1);
    s.close().await;

    let query = "SELECT prev_hash, hash FROM audit_log ORDER BY seq LIMIT 1";
    let (prev, hash) = match &backend {
        Backend::Sqlite(dir) => {
            let c = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
            c.execute_batch(support::DOWNGRADE_TO_7).unwrap();
            c.query_row(query, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
        }
        Backend::Postgres(pg, url) => {
            let db = url.rsplit('/').next().unwrap();
            pg.psql(db, DOWNGRADE_PG_TO_7);
            let row = pg.psql(db, query);
            let (p, h) = row.split_once('|').unwrap();
            (p.to_owned(), h.to_owned())
        }
    };
    assert_eq!(
        prev,
        hex::encode(base.1),
        "schema 7 stored the oldest record's previous hash"
    );
    assert_eq!(hash, hex::encode(before[0].hash));

    let s = connect(&url, false).await;
    assert_eq!(
        all(&s).await,
        before,
        "every record, previous hash and hash kept"
    );
    assert_eq!(s.audit_base().await.unwrap(), base);
    assert_eq!(s.audit_head().await.unwrap(), head);
    let report = s.verify_audit_from(base.0 + 1, base.1).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, before.len() as u64);
    if let Backend::Sqlite(dir) = &backend {
        // `seq` is the rowid now, and the hash is 32 bytes.
        let c = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
        let (rowid, seq, len): (i64, i64, i64) = c
            .query_row(
                "SELECT rowid, seq, length(hash) FROM audit_log ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((rowid, len), (seq, 32));
    }
    // And the chain goes on from where it was.
    s.begin_write()
        .await
        .unwrap()
        .commit(&[event(99)])
        .await
        .unwrap();
    assert!(
        s.verify_audit_from(base.0 + 1, base.1)
            .await
            .unwrap()
            .is_ok()
    );
    s.close().await;
}

#[tokio::test]
async fn a_schema_7_store_migrates_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    migrated_with(Backend::Sqlite(dir.path()), 0).await;
}

#[tokio::test]
async fn a_pruned_schema_7_store_migrates_with_its_base() {
    let dir = tempfile::tempdir().unwrap();
    migrated_with(Backend::Sqlite(dir.path()), 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_7_stores_migrate_on_postgresql() {
    let pg = hanzo_kms_testkit::Postgres::start();
    for (db, pruned) in [("fresh7", 0), ("pruned7", 12)] {
        let url = pg.create_database(db);
        migrated_with(Backend::Postgres(&pg, &url), pruned).await;
    }
    // A hash that is not hex stops the migration, naming its record.
    let url = pg.create_database("bad7");
    with_records(&url, 5).await;
    pg.psql("bad7", DOWNGRADE_PG_TO_7);
    pg.psql("bad7", "UPDATE audit_log SET hash = 'zz' WHERE seq = 4");
    let s = Store::connect(&url, Separator::default(), false)
        .await
        .unwrap();
    let e = s.migrate().await.unwrap_err();
    assert!(e.message().contains("audit record 4 has a hash"), "{e}");
    s.close().await;
    assert_eq!(
        pg.psql("bad7", "SELECT MAX(version) FROM schema_version"),
        "7"
    );
}

/// A record's hash is stored as 32 bytes: a row with another length is refused by the table,
/// not read as a record.
#[tokio::test]
async fn a_hash_of_another_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_records(&Store::sqlite_url(dir.path()), 1).await;
    let c = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
    for bad in ["x'00'", "'0123456789abcdef0123456789abcdef'"] {
        let e = c
            .execute(
                &format!("UPDATE audit_log SET hash = {bad} WHERE seq = 1"),
                [],
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("CHECK constraint failed"),
            "{bad}: {e}"
        );
    }
}

/// A schema-7 store whose audit log holds a hash that is not 64 hex digits (someone wrote it):
/// the migration names the record and changes nothing, instead of failing on a constraint.
#[tokio::test]
async fn a_malformed_hex_hash_stops_the_migration_with_its_record() {
    for (column, seq) in [("hash", 3), ("prev_hash", 1)] {
        let dir = tempfile::tempdir().unwrap();
        with_records(&Store::sqlite_url(dir.path()), 5).await;
        let c = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
        c.execute_batch(support::DOWNGRADE_TO_7).unwrap();
        c.execute(
            &format!("UPDATE audit_log SET {column} = 'not hex' WHERE seq = ?1"),
            [seq],
        )
        .unwrap();
        drop(c);
        let s = Store::connect(&Store::sqlite_url(dir.path()), Separator::default(), false)
            .await
            .unwrap();
        let e = s.migrate().await.unwrap_err();
        assert_eq!(e.kind(), hanzo_kms_core::ErrorKind::Corrupt, "{e}");
        assert!(
            e.message()
                .contains(&format!("audit record {seq} has a hash")),
            "{e}"
        );
        s.close().await;
        // Nothing was converted: still schema 7.
        let c = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
        let v: i64 = c
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7);
    }
}

/// The prune moves the base in its transaction: a prune that fails (its end not held) deletes
/// nothing and leaves the base where it was.
#[tokio::test]
async fn a_prune_moves_the_base_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let events: Vec<AuditEvent> = (1..=10).map(event).collect();
    let records = s
        .begin_write()
        .await
        .unwrap()
        .commit(&events)
        .await
        .unwrap();
    let mut tx = s.begin_write().await.unwrap();
    let e = tx.delete_audit(1, 50).await.unwrap_err();
    assert!(e.message().contains("record 50"), "{e}");
    drop(tx);
    assert_eq!(s.audit_base().await.unwrap(), (0, [0; 32]));
    assert_eq!(all(&s).await.len(), 10);
    // Not from the start of the log: refused.
    let mut tx = s.begin_write().await.unwrap();
    let e = tx.delete_audit(3, 4).await.unwrap_err();
    assert!(e.message().contains("pruned from its start"), "{e}");
    drop(tx);
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(tx.delete_audit(1, 4).await.unwrap(), 4);
    tx.commit(&[event(11)]).await.unwrap();
    assert_eq!(s.audit_base().await.unwrap(), (4, records[3].hash));
    // The same range again (a second node's prune): nothing deleted, the base stays.
    let mut tx = s.begin_write().await.unwrap();
    assert_eq!(tx.delete_audit(1, 4).await.unwrap(), 0);
    assert_eq!(tx.delete_audit(1, 3).await.unwrap(), 0);
    tx.commit(&[event(12)]).await.unwrap();
    assert_eq!(s.audit_base().await.unwrap(), (4, records[3].hash));
    assert_eq!(
        s.audit_bounds().await.unwrap(),
        (4, records[3].hash, Some(5))
    );
    for (seq, prev) in [(5, records[3].hash), (6, records[4].hash)] {
        let r = s.audit_record(seq).await.unwrap().unwrap();
        assert_eq!(r.prev_hash, prev, "record {seq}");
    }
    let listed = all(&s).await;
    assert_eq!(listed[0].seq, 5);
    assert_eq!(listed[0].prev_hash, records[3].hash);
}
