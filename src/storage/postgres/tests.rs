//! Tests of the PostgreSQL store: the shared contract (`storage/contract.rs`)
//! on a fresh database per test, plus what only PostgreSQL has (advisory
//! locks between instances, error codes, query plans), and the check that
//! both backends end with the same tables and columns.
//!
//! Without a reachable server they skip (see `scratch.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::scratch::ScratchDb;
use super::*;
use crate::storage::contract::{contract_tests, event, insert};
use crate::storage::sqlite::SqliteStore;
use crate::storage::DynStore;

async fn store_with(options: &DbOptions) -> Option<(ScratchDb, PgStore)> {
    let db = ScratchDb::create().await?;
    let store = PgStore::open(&db.url, options).await.expect("open");
    store.migrate().await.expect("migrate");
    Some((db, store))
}

async fn store() -> Option<(ScratchDb, PgStore)> {
    store_with(&DbOptions::default()).await
}

async fn fresh() -> Option<(ScratchDb, DynStore)> {
    let (db, store) = store().await?;
    Some((db, Arc::new(store)))
}

contract_tests!(fresh);

#[tokio::test]
async fn migrate_is_idempotent_and_connect_picks_postgres() {
    let Some((db, s)) = store().await else { return };
    s.set_setting("k", "v").await.unwrap();
    s.migrate().await.unwrap();
    let again = crate::storage::connect(&db.url).await.unwrap();
    assert_eq!(again.get_setting("k").await.unwrap().as_deref(), Some("v"));
    let url = db.url.replacen("postgres://", "postgresql://", 1);
    let again = crate::storage::connect(&url).await.unwrap();
    again.ping().await.unwrap();
}

#[tokio::test]
async fn unknown_enum_text_is_corrupt() {
    let Some((_db, s)) = store().await else {
        return;
    };
    let s = Arc::new(s);
    let dynamic: DynStore = s.clone();
    let id = insert(&dynamic, &event(Some("k"), "{}")).await;
    sqlx::query("UPDATE webhook_events SET processing = 'exploded' WHERE id = $1")
        .bind(id)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(s.get_event(id).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn latest_click_is_one_backward_index_scan() {
    let Some((_db, s)) = store().await else {
        return;
    };
    let mut conn = s.pool().acquire().await.unwrap();
    // On an empty table the planner would rather scan; the point is that
    // the index serves the ORDER BY ... LIMIT 1 without a sort.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for bounded in [false, true] {
        let sql = format!("EXPLAIN {}", catalog::latest_click_sql(bounded));
        let mut q = sqlx::query_scalar::<_, String>(&sql).bind("c1").bind(5_i64);
        if bounded {
            q = q.bind(1_i64);
        }
        let plan = q.fetch_all(&mut *conn).await.unwrap().join("\n");
        assert!(
            plan.contains("Index Scan Backward using clicks_client_bot_at"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }
    let _ = conn.close().await;
}

#[tokio::test]
async fn a_held_purchase_lock_makes_other_instances_wait() {
    let Some((db, a)) = store().await else { return };
    // A second instance: its own pool on the same database.
    let b = Arc::new(PgStore::open(&db.url, &DbOptions::default()).await.unwrap());
    let held = a.lock_purchases(&["cli_1"]).await.unwrap();
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.lock_purchases(&["cli_1"]).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second instance must wait");
    drop(held);
    let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("granted once released")
        .unwrap();
    drop(guard);
    // Another client's purchases are not held up by this one's.
    let held = a.lock_purchases(&["cli_1"]).await.unwrap();
    let other = tokio::time::timeout(Duration::from_secs(5), b.lock_purchases(&["cli_2"]))
        .await
        .expect("another client is not held up");
    drop((held, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_sets_of_clients_never_deadlock_across_instances() {
    let Some((db, a)) = store().await else { return };
    let a = Arc::new(a);
    let b = Arc::new(PgStore::open(&db.url, &DbOptions::default()).await.unwrap());
    // A holder of one client holds up a taker of a set that contains it.
    let held = a.lock_purchases(&["x"]).await.unwrap();
    let set = {
        let b = b.clone();
        tokio::spawn(async move { b.lock_purchases(&["y", "x"]).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!set.is_finished());
    drop(held);
    drop(
        tokio::time::timeout(Duration::from_secs(5), set)
            .await
            .unwrap()
            .unwrap(),
    );
    // Opposite orders from two instances, over and over: no deadlock error.
    let run = |s: Arc<PgStore>, names: [&'static str; 2]| {
        tokio::spawn(async move {
            for _ in 0..30 {
                let guard = s.lock_purchases(&names).await.unwrap();
                tokio::task::yield_now().await;
                drop(guard);
            }
        })
    };
    let (one, two) = (run(a.clone(), ["x", "y"]), run(b.clone(), ["y", "x"]));
    tokio::time::timeout(Duration::from_secs(30), async {
        one.await.unwrap();
        two.await.unwrap();
    })
    .await
    .expect("no deadlock");
}

#[tokio::test]
async fn a_job_lock_is_exclusive_across_instances_and_queues_within_one() {
    let Some((db, a)) = store().await else { return };
    let a = Arc::new(a);
    let b = PgStore::open(&db.url, &DbOptions::default()).await.unwrap();
    let held = a.try_lock_job("sweep").await.unwrap().expect("free");
    assert!(b.try_lock_job("sweep").await.unwrap().is_none());
    assert!(b.try_lock_job("other").await.unwrap().is_some());
    // The same instance waits for its own run to end, then runs.
    let next = {
        let a = a.clone();
        tokio::spawn(async move { a.try_lock_job("sweep").await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!next.is_finished());
    drop(held);
    let next = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("runs once the first run ended")
        .unwrap();
    assert!(
        next.is_some(),
        "its own released lock is not mistaken for another's"
    );
    drop(next);
    // Released on drop: the other instance gets it.
    let mut again = None;
    for _ in 0..100 {
        again = b.try_lock_job("sweep").await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "released on drop");
}

#[tokio::test]
async fn a_caller_cancelled_while_waiting_leaves_no_lock_behind() {
    let Some((db, a)) = store().await else { return };
    let b = PgStore::open(&db.url, &DbOptions::default()).await.unwrap();
    let held = a.lock_purchases(&["cli_1"]).await.unwrap();
    // b waits, then gives up (an HTTP request dropped mid-wait).
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), b.lock_purchases(&["cli_1"])).await;
    assert!(gave_up.is_err());
    drop(held);
    // The abandoned wait was granted and released again in the background:
    // a third party gets the lock, and every pooled session of b is free of it.
    let c = PgStore::open(&db.url, &DbOptions::default()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), c.lock_purchases(&["cli_1"]))
        .await
        .expect("not leaked");
    drop(got.unwrap());
    let leaked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(b.pool())
    .await
    .unwrap();
    assert!(leaked <= 1, "at most c's lock, being released: {leaked}");
}

#[tokio::test]
async fn errors_map_to_store_errors() {
    let Some((db, _s)) = store().await else {
        return;
    };
    // A statement over the timeout is cancelled by the server: unavailable.
    let quick = PgStore::open(
        &db.url,
        &DbOptions {
            statement_timeout: Duration::from_millis(100),
            ..DbOptions::default()
        },
    )
    .await
    .unwrap();
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(quick.pool())
        .await
        .map_err(map_err)
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    // Nobody listening: unavailable after the connect timeout, not a hang.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = std::time::Instant::now();
    let err = PgStore::open(
        &format!("postgres://postgres@127.0.0.1:{port}/none"),
        &DbOptions {
            connect_timeout: Duration::from_millis(500),
            ..DbOptions::default()
        },
    )
    .await
    .err()
    .expect("nothing listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let err = crate::storage::connect("mysql://u:secret@h/db")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    assert!(!err.to_string().contains("secret"));
}

/// Table → column names, as each backend's catalogue reports them.
type Schema = BTreeMap<String, Vec<String>>;

async fn sqlite_schema() -> Schema {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("schema.db").display());
    let s = SqliteStore::open(&url).await.unwrap();
    s.migrate().await.unwrap();
    let rows: Vec<(String, String)> = s
        .with_write_connection(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                 ORDER BY m.name, p.cid",
                )
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows
        })
        .await;
    let mut schema = Schema::new();
    for (table, column) in rows {
        schema.entry(table).or_default().push(column);
    }
    schema
}

#[tokio::test]
async fn both_backends_end_with_the_same_tables_and_columns() {
    let Some((_db, pg)) = store().await else {
        return;
    };
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    let mut postgres = Schema::new();
    for (table, column) in rows {
        // SQLite's implicit rowid, explicit in PostgreSQL where order needs it.
        if column != "rowid" {
            postgres.entry(table).or_default().push(column);
        }
    }
    let sqlite = sqlite_schema().await;
    assert!(sqlite.len() >= 12, "{sqlite:?}");
    let tables = |s: &Schema| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(tables(&postgres), tables(&sqlite), "same tables");
    for (table, columns) in &sqlite {
        let mut a = columns.clone();
        let mut b = postgres[table].clone();
        a.sort();
        b.sort();
        assert_eq!(b, a, "columns of {table}");
    }
    // Same migration names in both folders.
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("migrations/postgres"), names("migrations/sqlite"));
}

/// `sslmode=require` in the URL encrypts the connection (managed
/// PostgreSQL services ask for it); `sslmode=disable` does not. Skipped,
/// with a message, on a server that offers no TLS.
#[tokio::test]
async fn a_url_that_asks_for_tls_gets_an_encrypted_connection() {
    let Some(db) = ScratchDb::create().await else {
        return;
    };
    let encrypted = |store: &PgStore| {
        let pool = store.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .expect("pg_stat_ssl")
        }
    };
    let plain = PgStore::open(&with_sslmode(&db.url, "disable"), &DbOptions::default())
        .await
        .expect("open without TLS");
    assert!(!encrypted(&plain).await);
    let offered: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&plain.pool)
        .await
        .expect("SHOW ssl");
    if offered != "on" {
        eprintln!("skipped: the test server offers no TLS (ssl = {offered})");
        return;
    }
    let tls = PgStore::open(&with_sslmode(&db.url, "require"), &DbOptions::default())
        .await
        .expect("open with sslmode=require");
    assert!(
        encrypted(&tls).await,
        "sslmode=require gave a plain connection"
    );
}

fn with_sslmode(url: &str, mode: &str) -> String {
    let mut url = url::Url::parse(url).expect("URL");
    url.query_pairs_mut().append_pair("sslmode", mode);
    url.to_string()
}
