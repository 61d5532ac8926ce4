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

async fn plan(s: &SqliteStore, sql: &str) -> String {
    s.with_write_connection(|c| {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let details: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>("detail"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        details.join("\n")
    })
    .await
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
        )
        .await;
        assert!(plan.contains("USING INDEX clicks_client_bot_at"), "{plan}");
        assert!(
            plan.contains("at<?") || plan.contains("at>? AND at<?"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}

/// `conversions_query`'s SQL with its arguments written in, for a plan.
fn conversions_sql(filter: &ConversionFilter) -> String {
    let (sql, args) = conversions::conversions_query(filter);
    args.iter().fold(sql, |sql, a| {
        let literal = match a {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(t) => format!("'{t}'"),
            other => panic!("unexpected argument {other:?}"),
        };
        sql.replacen('?', &literal, 1)
    })
}

#[tokio::test]
async fn a_customers_orphans_are_found_by_customer_not_by_walking_all_orphans() {
    let (_d, s) = store().await;
    // A sale with a link fixes its customer's orphans from its time on: an
    // index of orphans alone reads only those, not the customer's history.
    let filter = ConversionFilter {
        client_id: Some("c1".into()),
        customer: Some("cus_1".into()),
        orphans_only: true,
        from: Some(1_700_000_000),
        ..Default::default()
    };
    let by_customer = plan(&s, &conversions_sql(&filter)).await;
    assert!(
        by_customer.contains(
            "USING INDEX conversions_customer_orphans (client_id=? AND customer=? AND purchased_at>?)"
        ),
        "{by_customer}"
    );

    // Without a customer, every orphan of the client is wanted: the link
    // index (link_id IS NULL) finds them.
    let all = ConversionFilter {
        customer: None,
        from: None,
        ..filter
    };
    let every = plan(&s, &conversions_sql(&all)).await;
    assert!(every.contains("USING INDEX conversions_link"), "{every}");
}

#[tokio::test]
async fn a_returning_customers_history_is_not_walked_whole() {
    let (_d, s) = store().await;
    // The sales of one subscription (trial handling): its own index, not
    // every sale of the customer.
    let siblings = ConversionFilter {
        client_id: Some("c1".into()),
        customer: Some("cus_1".into()),
        subscription: Some("sub_1".into()),
        kind: Some(ConversionKind::TrialStart),
        limit: 1,
        ..Default::default()
    };
    let by_subscription = plan(&s, &conversions_sql(&siblings)).await;
    assert!(
        by_subscription
            .contains("USING INDEX conversions_subscription (client_id=? AND subscription=?)"),
        "{by_subscription}"
    );
    // The customer's newest earlier sale: read newest first from `before`
    // down, by customer and by email.
    for condition in [
        "customer = 'cus_1'",
        "lower(email) = lower('a@example.com')",
    ] {
        let history = plan(
            &s,
            &format!(
                "SELECT id FROM conversions WHERE client_id = 'c1' AND merged_into IS NULL \
                 AND id <> 'conv_x' AND link_id IS NOT NULL AND verified = 1 \
                 AND purchased_at <= 5 AND {condition} \
                 ORDER BY purchased_at DESC, id DESC LIMIT 1"
            ),
        )
        .await;
        assert!(history.contains("AND purchased_at<?)"), "{history}");
        // No sort at all: sales bought in the same second are ordered by
        // the index too, so the first row that qualifies ends the search.
        assert!(!history.contains("TEMP B-TREE"), "{history}");
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
    })
    .await;
    assert!(matches!(s.get_event(id).await, Err(StoreError::Corrupt(_))));
}

async fn pragma(s: &SqliteStore, name: &str) -> String {
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
    .await
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
    assert_eq!(pragma(&s, "journal_mode").await, "wal");
    assert_eq!(pragma(&s, "page_size").await, "2048", "a new database");
    assert_eq!(
        pragma(&s, "user_version").await,
        "6",
        "every migration recorded"
    );
    let email_indexes: Vec<String> = s
        .with_write_connection(|c| {
            let mut stmt = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'conversions_email%' ORDER BY name")
                .unwrap();
            let names = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            names
        })
        .await;
    assert_eq!(email_indexes, ["conversions_email_lower"]);
    // NORMAL: the writer syncs the WAL itself after each batch.
    assert_eq!(pragma(&s, "synchronous").await, "1");
    assert_eq!(pragma(&s, "wal_autocheckpoint").await, "0");
    assert_eq!(pragma(&s, "journal_size_limit").await, "67108864");
    assert_eq!(pragma(&s, "foreign_keys").await, "1");
    assert_eq!(pragma(&s, "mmap_size").await, "1073741824");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_commits_or_rolls_back_as_a_whole() {
    use crate::storage::UnitEnd;
    let (_d, s) = store().await;
    // Inside a unit, reads see the unit's own writes; others see them after
    // the commit.
    s.unit(Box::pin(async {
        s.set_alias("c", "pi_1", "in_1").await.unwrap();
        assert_eq!(
            s.resolve_alias("c", "pi_1").await.unwrap().as_deref(),
            Some("in_1")
        );
        UnitEnd::Commit
    }))
    .await
    .unwrap();
    assert_eq!(
        s.resolve_alias("c", "pi_1").await.unwrap().as_deref(),
        Some("in_1")
    );
    // A rolled back unit leaves nothing, nested savepoints included.
    s.unit(Box::pin(async {
        s.set_alias("c", "pi_2", "in_2").await.unwrap();
        s.unit(Box::pin(async {
            s.set_alias("c", "pi_3", "in_3").await.unwrap();
            UnitEnd::Commit
        }))
        .await
        .unwrap();
        UnitEnd::Rollback
    }))
    .await
    .unwrap();
    assert_eq!(s.resolve_alias("c", "pi_2").await.unwrap(), None);
    assert_eq!(s.resolve_alias("c", "pi_3").await.unwrap(), None);
    // A nested rollback undoes only its own part.
    s.unit(Box::pin(async {
        s.set_alias("c", "pi_4", "in_4").await.unwrap();
        s.unit(Box::pin(async {
            s.set_alias("c", "pi_5", "in_5").await.unwrap();
            UnitEnd::Rollback
        }))
        .await
        .unwrap();
        UnitEnd::Commit
    }))
    .await
    .unwrap();
    assert_eq!(
        s.resolve_alias("c", "pi_4").await.unwrap().as_deref(),
        Some("in_4")
    );
    assert_eq!(s.resolve_alias("c", "pi_5").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_unit_rolls_back_and_frees_the_connection() {
    use crate::storage::UnitEnd;
    let (_d, s) = store().await;
    let s = Arc::new(s);
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let inner = s.clone();
    let task = tokio::spawn(async move {
        inner
            .unit(Box::pin(async {
                inner.set_alias("c", "pi_x", "in_x").await.unwrap();
                let _ = started_tx.send(());
                // Never ends on its own.
                std::future::pending::<()>().await;
                UnitEnd::Commit
            }))
            .await
    });
    started.await.unwrap();
    task.abort();
    let _ = task.await;
    assert_eq!(s.resolve_alias("c", "pi_x").await.unwrap(), None);
    // The write connection is free again: writes (durable and derived) go on
    // (were it still held, they would wait forever: the timeout fails them).
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        s.set_setting("after", "yes").await.unwrap();
        s.set_alias("c", "pi_y", "in_y").await.unwrap();
    })
    .await
    .expect("the abandoned unit freed the write connection");
    assert_eq!(
        s.resolve_alias("c", "pi_y").await.unwrap().as_deref(),
        Some("in_y")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_inside_a_unit_is_synced_with_its_commit() {
    use crate::storage::UnitEnd;
    let (_d, s) = store().await;
    // The group-commit thread cannot reach the connection a unit holds:
    // a durable write inside the unit runs in it instead of waiting (were it
    // handed to the writer, this would never finish: the timeout fails it).
    let unit = s.unit(Box::pin(async {
        s.set_setting("inside", "unit").await.unwrap();
        UnitEnd::Commit
    }));
    tokio::time::timeout(std::time::Duration::from_secs(10), unit)
        .await
        .expect("a durable write inside a unit must not wait for the writer")
        .unwrap();
    assert_eq!(
        s.get_setting("inside").await.unwrap().as_deref(),
        Some("unit")
    );
}

#[tokio::test]
async fn cached_clients_and_secrets_follow_changes_made_anywhere() {
    use crate::storage::contract::client;
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let serving = SqliteStore::open(&url).await.unwrap();
    serving.migrate().await.unwrap();
    // Another process on the same file (the CLI while `serve` runs): its
    // changes are seen once `CATALOG_RECHECK` has passed.
    let cli = SqliteStore::open(&url).await.unwrap();
    let recheck = || tokio::time::sleep(CATALOG_RECHECK);

    cli.insert_client(&client("c1", "one", 1)).await.unwrap();
    recheck().await;
    let seen = serving.list_client_secrets().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].secrets.is_empty());
    // Read again unchanged: still right (from the cache).
    assert_eq!(serving.list_client_secrets().await.unwrap().len(), 1);

    cli.add_webhook_secret("c1", &WebhookSecret::new("whsec_one"))
        .await
        .unwrap();
    recheck().await;
    let seen = serving.list_client_secrets().await.unwrap();
    assert_eq!(seen[0].secrets.len(), 1);
    assert_eq!(seen[0].secrets[0].expose(), "whsec_one");

    // A change made by hand in SQL, outside every store method.
    cli.with_write_connection(|c| {
        c.execute("UPDATE webhook_secrets SET active = 0", [])
            .unwrap();
        c.execute("UPDATE clients SET window_primary_days = 7", [])
            .unwrap();
    })
    .await;
    recheck().await;
    let seen = serving.list_client_secrets().await.unwrap();
    assert!(seen[0].secrets.is_empty(), "a deactivated secret is gone");
    assert_eq!(seen[0].client.settings.window_primary_days, 7);

    cli.insert_client(&client("c2", "two", 2)).await.unwrap();
    recheck().await;
    let ids: Vec<String> = serving
        .list_client_secrets()
        .await
        .unwrap()
        .iter()
        .map(|c| c.client.id.clone())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);

    // A change made through the serving store itself is seen at once.
    serving
        .add_webhook_secret("c2", &WebhookSecret::new("whsec_two"))
        .await
        .unwrap();
    let seen = serving.list_client_secrets().await.unwrap();
    assert_eq!(
        seen[1].secrets.len(),
        1,
        "the store's own write is seen at once"
    );
}

/// The WAL header's checkpoint sequence number: SQLite adds one each time
/// a writer starts the WAL over from its first frame.
fn wal_restarts(wal: &std::path::Path) -> u32 {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(wal)
        .and_then(|mut f| f.read_exact(&mut header))
        .expect("a WAL header");
    u32::from_be_bytes([header[12], header[13], header[14], header[15]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_while_writes_never_stop() {
    use crate::storage::UnitEnd;
    let (dir, s) = store().await;
    let wal = dir.path().join("test.db-wal");
    s.set_setting("first", "write").await.unwrap();
    let before = wal_restarts(&wal);
    // Units of work back to back, as group ingest runs under load: there
    // is never a moment with no write in flight. A checkpoint beside them
    // never catches up, and the WAL used to grow for as long as they went on.
    let body = "x".repeat(4000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 0;
    while wal_restarts(&wal) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL never started over under continuous writes ({} bytes)",
            std::fs::metadata(&wal).map_or(0, |m| m.len())
        );
        let events: Vec<_> = (0..20)
            .map(|i| event(Some(&format!("wal_{n}_{i}")), &body))
            .collect();
        n += 1;
        let unit = s.unit(Box::pin(async {
            for row in s.insert_events(&events).await {
                row.unwrap();
            }
            UnitEnd::CommitUnsynced
        }));
        unit.await.unwrap();
    }
    s.sync().await.unwrap();
    // Nothing committed before the restart was lost with the old frames.
    let stored: i64 = s
        .with_write_connection(|c| {
            c.query_row("SELECT COUNT(*) FROM webhook_events", [], |r| r.get(0))
                .unwrap()
        })
        .await;
    assert_eq!(stored, n * 20);
}

#[tokio::test]
async fn a_database_made_with_other_pages_keeps_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
    }
    let s = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    s.migrate().await.unwrap();
    s.set_setting("k", "v").await.unwrap();
    assert_eq!(pragma(&s, "page_size").await, "4096");
    assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
}
