//! Tests of the SQLite store: the shared contract (`storage/contract.rs`)
//! on a fresh file per test, plus what only SQLite has (PRAGMAs, query plans,
//! in-memory databases).
use std::sync::Arc;

use super::*;
use crate::storage::contract::{contract_tests, event, insert};
use crate::storage::DynStore;

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    (dir, store)
}

async fn fresh() -> Option<(tempfile::TempDir, DynStore)> {
    let (dir, store) = store().await;
    Some((dir, Arc::new(store)))
}

contract_tests!(fresh);

#[tokio::test]
async fn latest_click_is_one_index_seek() {
    let (_d, s) = store().await;
    // One index seek, no sort: cost does not grow with history.
    for lower in ["", " AND at >= 1"] {
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT {CLICK_COLS} FROM clicks \
             WHERE client_id = 'c1' AND bot = 0 AND at <= 5{lower} \
             ORDER BY at DESC LIMIT 1"
        );
        let plan: Vec<String> = sqlx::query(&sql)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("USING INDEX clicks_client_bot_at"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}

#[tokio::test]
async fn unknown_enum_text_is_corrupt() {
    let (_d, s) = store().await;
    let s = Arc::new(s);
    let dynamic: DynStore = s.clone();
    let id = insert(&dynamic, &event(Some("k"), "{}")).await;
    sqlx::query("UPDATE webhook_events SET processing = 'exploded' WHERE id = ?")
        .bind(id)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(s.get_event(id).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn reopen_keeps_data_and_migrate_is_idempotent() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    {
        let s = SqliteStore::open(&url).await.unwrap();
        s.migrate().await.unwrap();
        s.set_setting("k", "v").await.unwrap();
        s.pool().close().await;
    }
    let s = SqliteStore::open(&url).await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
}

#[tokio::test]
async fn in_memory_url_works() {
    let s = SqliteStore::open("sqlite::memory:").await.unwrap();
    s.migrate().await.unwrap();
    s.set_setting("k", "v").await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
}
