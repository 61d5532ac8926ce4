//! Tests of the SQLite store: the shared contract (`storage/contract.rs`)
//! on a fresh file per test, plus what only SQLite has (PRAGMAs, query plans,
//! in-memory databases).
use std::sync::Arc;

use super::rows::CLICK_COLS;
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

fn plan(s: &SqliteStore, sql: &str) -> String {
    s.with_write_connection(|c| {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let details: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>("detail"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        details.join("\n")
    })
}

#[tokio::test]
async fn latest_click_is_one_index_seek() {
    let (_d, s) = store().await;
    // One index seek, no sort: cost does not grow with history.
    for lower in ["", " AND at >= 1"] {
        let plan = plan(
            &s,
            &format!(
                "SELECT {CLICK_COLS} FROM clicks INDEXED BY clicks_client_bot_at \
                 WHERE client_id = 'c1' AND bot = 0 AND at <= 5{lower} \
                 ORDER BY at DESC LIMIT 1"
            ),
        );
        assert!(plan.contains("USING INDEX clicks_client_bot_at"), "{plan}");
        assert!(
            plan.contains("at<?") || plan.contains("at>? AND at<?"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}

#[tokio::test]
async fn unknown_enum_text_is_corrupt() {
    let (_d, s) = store().await;
    let s = Arc::new(s);
    let dynamic: DynStore = s.clone();
    let id = insert(&dynamic, &event(Some("k"), "{}")).await;
    s.with_write_connection(|c| {
        c.execute(
            "UPDATE webhook_events SET processing = 'exploded' WHERE id = ?",
            [id],
        )
        .unwrap()
    });
    assert!(matches!(s.get_event(id).await, Err(StoreError::Corrupt(_))));
}

fn pragma(s: &SqliteStore, name: &str) -> String {
    s.with_write_connection(|c| {
        c.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .unwrap()
    })
}

#[tokio::test]
async fn reopen_keeps_data_and_migrate_is_idempotent() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    {
        let s = SqliteStore::open(&url).await.unwrap();
        s.migrate().await.unwrap();
        s.set_setting("k", "v").await.unwrap();
    }
    let s = SqliteStore::open(&url).await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(pragma(&s, "journal_mode"), "wal");
    assert_eq!(pragma(&s, "user_version"), "2", "both migrations recorded");
    // NORMAL: the writer syncs the WAL itself after each batch.
    assert_eq!(pragma(&s, "synchronous"), "1");
    assert_eq!(pragma(&s, "wal_autocheckpoint"), "0");
    assert_eq!(pragma(&s, "foreign_keys"), "1");
}

#[tokio::test]
async fn a_durable_write_survives_without_a_checkpoint() {
    // What the group commit acknowledged is in the WAL file, synced: a
    // second process opening the file sees it although nothing was
    // checkpointed into the database file.
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("d.db");
    let url = format!("sqlite://{}", path.display());
    let s = SqliteStore::open(&url).await.unwrap();
    s.migrate().await.unwrap();
    s.set_setting("durable", "yes").await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    let v: String = other
        .query_row(
            "SELECT value FROM settings WHERE key = 'durable'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "yes");
}

#[tokio::test]
async fn urls_name_a_file_or_memory() {
    assert!(matches!(parse_url("sqlite::memory:"), Ok(Target::Memory)));
    assert!(matches!(
        parse_url("sqlite://x.db?mode=memory&cache=shared"),
        Ok(Target::Memory)
    ));
    match parse_url("sqlite:///tmp/a.db?mode=rwc") {
        Ok(Target::File(p)) => assert_eq!(p, std::path::PathBuf::from("/tmp/a.db")),
        _ => panic!("a file URL"),
    }
    match parse_url("sqlite:rel.db") {
        Ok(Target::File(p)) => assert_eq!(p, std::path::PathBuf::from("rel.db")),
        _ => panic!("a relative file URL"),
    }
    assert!(matches!(
        parse_url("sqlite://"),
        Err(StoreError::UnsupportedUrl(_))
    ));
    assert!(matches!(
        parse_url("mysql://x"),
        Err(StoreError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn in_memory_url_works() {
    let s = SqliteStore::open("sqlite::memory:").await.unwrap();
    s.migrate().await.unwrap();
    s.set_setting("k", "v").await.unwrap();
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
}
