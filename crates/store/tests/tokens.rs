//! Token lookups: an id that has no token is answered from memory like one that has, so that
//! the time of a refusal does not tell which ids exist (issue 26 item 5).

use hanzo_kms_core::Separator;
use hanzo_kms_store::{AuditEvent, Store, StoredToken};

fn token(id: &str) -> StoredToken {
    StoredToken {
        id: id.into(),
        tenant: "acme".into(),
        roles: vec!["sign".into()],
        patterns: vec![],
        mac: vec![7; 32],
        description: String::new(),
        created_at: 1,
        created_by: "local:test".into(),
        revoked_at: None,
        expires_at: None,
    }
}

fn event() -> AuditEvent {
    AuditEvent {
        time_ms: 1,
        request_id: "r".into(),
        principal: "local:test".into(),
        tenant: "*".into(),
        operation: "token.create".into(),
        key_name: None,
        key_version: None,
        outcome: "ok".into(),
        reason: None,
        peer: None,
        detail: None,
    }
}

#[tokio::test]
async fn an_unknown_token_id_is_remembered_as_unknown_for_the_cache_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let url = Store::sqlite_url(dir.path());
    let a = Store::connect(&url, Separator::default(), true)
        .await
        .unwrap();
    a.migrate().await.unwrap();
    // Another store on the same file stands for another node.
    let b = Store::connect(&url, Separator::default(), false)
        .await
        .unwrap();
    let id = "00000000000000ab";
    assert!(a.token(id).await.unwrap().is_none());
    // The token appears through the other node; this one still answers from memory...
    let mut tx = b.begin_write().await.unwrap();
    tx.insert_token(&token(id)).await.unwrap();
    tx.commit(&[event()]).await.unwrap();
    assert!(
        a.token(id).await.unwrap().is_none(),
        "the unknown id was read from the database again"
    );
    // ...for at most the cache's lifetime.
    tokio::time::sleep(hanzo_kms_store::cache::TTL + std::time::Duration::from_millis(100)).await;
    assert_eq!(
        a.token(id).await.unwrap().map(|t| t.id),
        Some(id.to_owned())
    );
    // A token created through this node is visible at once (the commit drops the entry).
    let other = "00000000000000cd";
    assert!(a.token(other).await.unwrap().is_none());
    let mut tx = a.begin_write().await.unwrap();
    tx.insert_token(&token(other)).await.unwrap();
    tx.commit(&[event()]).await.unwrap();
    assert!(a.token(other).await.unwrap().is_some());
}
