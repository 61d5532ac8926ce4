//! The harness of `tests/it` (`../it/helpers.rs`, re-exported whole), with
//! every database on PostgreSQL: a fresh one with a random name per test on
//! the server `SALESTRACK_TEST_PG_URL` names, dropped when the test ends.
//! When that server is not reachable the tests skip (`spawn_app!` returns
//! early) after saying so once, unless `SALESTRACK_REQUIRE_PG=1`.

#![allow(dead_code, unused_imports)]

#[path = "../it/helpers.rs"]
mod common;

pub use common::*;

use salestrack::storage::postgres::scratch::ScratchDb;
use salestrack::storage::DynStore;

/// The app on a fresh PostgreSQL database; `None` when it is not reachable.
pub async fn try_spawn_app_with(wrap: impl FnOnce(DynStore) -> DynStore) -> Option<TestApp> {
    let (db, url) = fresh_database().await?;
    Some(start_app(db, url, wrap).await)
}

/// For code that calls the function rather than `spawn_app!`: PostgreSQL is
/// required then.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|s| s).await
}

pub async fn spawn_app_with(wrap: impl FnOnce(DynStore) -> DynStore) -> TestApp {
    try_spawn_app_with(wrap)
        .await
        .expect("PostgreSQL is not reachable (see SALESTRACK_TEST_PG_URL)")
}

/// A fresh PostgreSQL database and its URL.
pub async fn fresh_database() -> Option<(DbGuard, String)> {
    let db = ScratchDb::create().await?;
    let url = db.url.clone();
    Some((Box::new(db), url))
}

/// `fresh_database` outside a runtime (tests of the binary).
pub fn fresh_database_blocking(_dir: &std::path::Path, _name: &str) -> Option<(DbGuard, String)> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fresh_database())
    })
    .join()
    .expect("creating a test database")
}
