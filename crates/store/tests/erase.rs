//! Destroyed key material is gone from every file of the data directory when the destroying
//! commit returns: the database, its WAL, its shared-memory index, any journal.

mod support;

use std::collections::HashSet;
use std::path::Path;

use hanzo_kms_core::{
    Algorithm, KeyHandle, KeyMeta, KeyName, KeyState, KeyVersion, Origin, Purpose, Separator,
};
use hanzo_kms_store::{AuditEvent, Store};
use sha2::{Digest, Sha256};

/// A handle of `len` bytes that occurs nowhere else: SHA-256 of its seed, chained.
fn material(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

fn event(op: &str, key: &KeyName) -> AuditEvent {
    AuditEvent {
        time_ms: 1,
        request_id: "r".into(),
        principal: "local:test".into(),
        tenant: "*".into(),
        operation: op.into(),
        key_name: Some(key.to_string()),
        key_version: Some(1),
        outcome: "ok".into(),
        reason: None,
        peer: None,
        detail: None,
    }
}

async fn open(dir: &Path) -> Store {
    let s = Store::connect(&Store::sqlite_url(dir), Separator::default(), true)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    s
}

fn name(i: usize) -> KeyName {
    KeyName::new(
        Purpose::Data,
        &format!("tenant{}", i % 7),
        &format!("key{i}"),
        Separator::default(),
    )
    .unwrap()
}

async fn create(s: &Store, i: usize, handle: &[u8]) {
    let name = name(i);
    let mut tx = s.begin_write().await.unwrap();
    tx.insert_key(&KeyMeta {
        name: name.clone(),
        algorithm: Algorithm::Aes256Gcm,
        origin: Origin::Software,
        provider: "software".into(),
        state: KeyState::Enabled,
        primary_version: 1,
        rotation_period_secs: None,
        created_at: 1,
        rotated_at: 1,
        destroy_at: None,
    })
    .await
    .unwrap();
    let v = KeyVersion {
        version: 1,
        state: KeyState::Enabled,
        created_at: 1,
        public_key: None,
    };
    tx.insert_version(&name, &v, "software", &KeyHandle::new(handle.to_vec()))
        .await
        .unwrap();
    tx.commit(&[event("key.create", &name)]).await.unwrap();
}

/// Every 16-byte window of every file under `dir`.
fn windows(dir: &Path) -> HashSet<[u8; 16]> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for w in bytes.windows(16) {
                out.insert(<[u8; 16]>::try_from(w).unwrap());
            }
        }
    }
    out
}

/// The 16-byte pieces of `handle` found in the files under `dir`, by offset.
fn found(files: &HashSet<[u8; 16]>, handle: &[u8]) -> Vec<usize> {
    handle
        .chunks_exact(16)
        .enumerate()
        .filter(|(_, c)| files.contains(*c))
        .map(|(i, _)| i * 16)
        .collect()
}

/// Keys destroyed one or a few at a time, in an order that makes SQLite rebalance the material
/// table's pages (which leaves stale copies of rows in the pages' unused space): after each
/// commit, no piece of any destroyed handle is in any file, and every live key still loads
/// with its handle intact. Keys are also re-sealed in place (migration), which erases the old
/// handle in the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_material_is_in_no_file_of_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    const KEYS: usize = 90;
    let mut handles: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| material(&format!("key {i}"), 96 + (i % 5) * 16))
        .collect();
    for (i, h) in handles.iter().enumerate() {
        create(&s, i, h).await;
    }
    // Before anything is destroyed, the material is in the files (the check can see it).
    let files = windows(dir.path());
    assert!(
        handles.iter().all(|h| !found(&files, h).is_empty()),
        "the search finds live material"
    );

    let mut gone: Vec<Vec<u8>> = Vec::new();
    // A fixed order that is neither ascending nor descending.
    let order: Vec<usize> = (0..KEYS).map(|i| (i * 37 + 11) % KEYS).collect();
    let mut destroyed = HashSet::new();
    for (step, chunk) in order[..60].chunks(3).enumerate() {
        let mut tx = s.begin_write().await.unwrap();
        if step % 4 == 3 {
            // A migration re-seals a live key: its old handle must go too.
            let live = (0..KEYS)
                .find(|i| !destroyed.contains(i) && !chunk.contains(i))
                .unwrap();
            let new = material(&format!("key {live} resealed at {step}"), 112);
            tx.replace_material(&name(live), 1, "software", &KeyHandle::new(new.clone()))
                .await
                .unwrap();
            gone.push(std::mem::replace(&mut handles[live], new));
        }
        for &i in chunk {
            tx.delete_material(&name(i), 1).await.unwrap();
            tx.set_version_state(&name(i), 1, KeyState::Destroyed)
                .await
                .unwrap();
            gone.push(handles[i].clone());
            destroyed.insert(i);
        }
        tx.commit(&[event("key.destroy", &name(chunk[0]))])
            .await
            .unwrap();

        let files = windows(dir.path());
        for (n, h) in gone.iter().enumerate() {
            let at = found(&files, h);
            assert!(
                at.is_empty(),
                "step {step}: erased handle #{n} is still in the data directory (pieces at offsets {at:?})"
            );
        }
        for i in (0..KEYS).filter(|i| !destroyed.contains(i)) {
            let key = s.load_key(&name(i)).await.unwrap().unwrap();
            let h = key.versions[0]
                .handle
                .as_ref()
                .expect("live key has material");
            assert_eq!(
                h.as_bytes(),
                &handles[i][..],
                "live key {i} kept its material"
            );
        }
    }
    // The WAL was cut to nothing by the last destroy; nothing else lingers beside the database.
    let wal = dir.path().join("kms.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    assert!(!dir.path().join("kms.db-journal").exists());
    assert!(s.verify_audit().await.unwrap().is_ok());
}

/// A store written before `secure_delete` (schema version 3) keeps deleted rows in its free
/// pages; migrating it rewrites the file once, so they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_an_older_store_erases_what_it_deleted_before() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    s.close().await;
    let marker = material("deleted by an older version", 128);
    {
        // What an older hanzo-kms did: no secure_delete, and schema version 3.
        let c = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
        c.execute_batch(support::DOWNGRADE_TO_7).unwrap();
        c.execute_batch(
            "PRAGMA secure_delete = OFF; PRAGMA foreign_keys = OFF; DROP INDEX keys_customer_name; \
             CREATE INDEX keys_customer ON keys (customer); \
             ALTER TABLE api_tokens DROP COLUMN expires_at; \
             DROP INDEX used_nonces_by_expiry; DROP INDEX consumed_attestations_by_expiry; \
             ALTER TABLE used_nonces DROP COLUMN expires_at; \
             ALTER TABLE consumed_attestations DROP COLUMN expires_at; \
             DROP INDEX audit_log_checkpoints; DROP INDEX audit_log_exports; \
             ALTER TABLE audit_log DROP COLUMN detail; \
             DELETE FROM schema_version WHERE version >= 4;",
        )
        .unwrap();
        c.execute(
            "INSERT INTO key_material (key_name, version, provider, handle) VALUES ('data:a:b', 1, 'software', ?1)",
            [&marker],
        )
        .unwrap();
        c.execute("DELETE FROM key_material", []).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    assert!(
        !found(&windows(dir.path()), &marker).is_empty(),
        "an older version left the deleted row in the file"
    );
    let s = Store::connect(&Store::sqlite_url(dir.path()), Separator::default(), false)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    let at = found(&windows(dir.path()), &marker);
    assert!(at.is_empty(), "still there at {at:?}");
    // And the migration it needed was applied: the tenant index exists.
    assert!(s.list_keys_of(Some("a"), "").await.unwrap().is_empty());
    assert!(s.verify_audit().await.unwrap().is_ok());
}
