//! The host around the service (issue 14 §6): the SQLite file's mode,
//! `/readyz` when the store cannot write, the visitor cookie over https.

use std::time::{Duration, Instant};

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;

use crate::helpers::*;

/// The SQLite file of `db_url`; `None` on PostgreSQL.
fn sqlite_path(db_url: &str) -> Option<std::path::PathBuf> {
    db_url.strip_prefix("sqlite://").map(Into::into)
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_database_and_its_wal_and_shm_are_readable_by_their_owner_only() {
    let app = spawn_app!();
    let Some(path) = sqlite_path(&app.db_url) else {
        return; // PostgreSQL: no file of ours.
    };
    app.add_client("Shop", Some("whsec_host_tests_secret_01"))
        .await;
    for p in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_sqlite_database_open_to_others_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let (_db, url) = fresh_database!();
    let Some(path) = sqlite_path(&url) else {
        return;
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = salestrack::storage::connect(&url).await.expect("open");
    store.ping_write().await.expect("write");
    for p in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// Holds the store's write lock from another connection until dropped.
enum WriteLock {
    Sqlite(rusqlite::Connection),
    Pg(sqlx::PgConnection),
}

async fn lock_writes(db_url: &str) -> WriteLock {
    match sqlite_path(db_url) {
        Some(path) => {
            let conn = rusqlite::Connection::open(path).expect("second connection");
            conn.execute_batch("BEGIN EXCLUSIVE")
                .expect("exclusive lock");
            WriteLock::Sqlite(conn)
        }
        None => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(db_url)
                .await
                .expect("second connection");
            sqlx::raw_sql("BEGIN; LOCK TABLE settings IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("table lock");
            WriteLock::Pg(conn)
        }
    }
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.http
        .get(format!("{}/readyz", app.base))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("readyz")
        .status()
}

#[tokio::test]
async fn readyz_answers_503_while_the_store_cannot_write_and_200_after() {
    let app = spawn_app!();
    assert_eq!(readyz(&app).await, StatusCode::OK);

    let lock = lock_writes(&app.db_url).await;
    let asked = Instant::now();
    assert_eq!(readyz(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered in bounded time: {:?}",
        asked.elapsed()
    );
    // Reads still work meanwhile: only a write probe sees the lock.
    assert!(app.tracker.store().ping().await.is_ok());

    match lock {
        WriteLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").expect("release"),
        WriteLock::Pg(mut conn) => {
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut conn)
                .await
                .expect("release");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match readyz(&app).await {
            StatusCode::OK => break,
            other => assert!(Instant::now() < deadline, "still {other} after release"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn visitor_cookie(app: &TestApp) -> String {
    let shop = app.add_client("Shop", None).await;
    app.add_link(&shop, "spring").await;
    let resp = app
        .http
        .get(format!("{}/r/spring", app.base))
        .header(reqwest::header::USER_AGENT, "Mozilla/5.0 Firefox/128.0")
        .send()
        .await
        .expect("redirect");
    assert_eq!(resp.status(), StatusCode::FOUND);
    resp.headers()
        .get(SET_COOKIE)
        .expect("a visitor cookie")
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn the_visitor_cookie_is_secure_when_the_public_url_is_https() {
    let (db, url) = fresh_database!();
    let app = start_app_configured(
        db,
        url,
        |s| s,
        |c| c.public_url = "https://track.example.com".into(),
    )
    .await;
    let cookie = visitor_cookie(&app).await;
    assert!(cookie.starts_with("st_vid="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");

    let app = spawn_app!();
    let cookie = visitor_cookie(&app).await;
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
}
