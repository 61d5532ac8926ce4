//! Advisory locks: how instances sharing one database take turns.
//!
//! A session advisory lock lives as long as the connection that took it, so
//! the guard keeps that connection out of the pool until it is dropped; then
//! a task releases every advisory lock of the session and only afterwards
//! returns the connection. A connection whose release failed is closed (the
//! server drops the locks of a closed session), never pooled: a pooled
//! session still holding a lock would take it again re-entrantly and never
//! give it back.
//!
//! The lock is taken inside a spawned task that builds the guard, so that a
//! caller cancelled mid-wait (a dropped HTTP request) cannot leave a lock
//! behind: the task finishes, and dropping its unclaimed guard releases it.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};

use super::map_err;
use crate::storage::{StoreError, StoreLock, StoreResult};

/// Keys are 64-bit hashes of a namespaced name: a collision only makes two
/// unrelated holders take turns.
const KEY_SQL: &str = "hashtextextended('salestrack/' || $1, 0)";

struct HeldLock {
    conn: Option<PoolConnection<Postgres>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let released = sqlx::query("SELECT pg_advisory_unlock_all()")
                        .execute(&mut *conn)
                        .await;
                    if let Err(e) = released {
                        tracing::warn!(error = %e, "advisory unlock failed; closing the session");
                        conn.close_on_drop();
                    }
                });
            }
            // No runtime left (shutdown): closing the session releases it.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// Takes `name`'s lock on a connection of its own: waits when `wait`, else
/// answers `None` at once if someone else holds it.
async fn take(pool: &PgPool, name: String, wait: bool) -> StoreResult<Option<StoreLock>> {
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        let mut conn = pool.acquire().await.map_err(map_err)?;
        let got = if wait {
            sqlx::query(&format!("SELECT pg_advisory_lock({KEY_SQL})"))
                .bind(&name)
                .execute(&mut *conn)
                .await
                .map(|_| true)
        } else {
            sqlx::query_scalar::<_, bool>(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
                .bind(&name)
                .fetch_one(&mut *conn)
                .await
        };
        match got {
            Ok(true) => Ok(Some(HeldLock { conn: Some(conn) })),
            Ok(false) => Ok(None),
            Err(e) => {
                // Whether the server granted it before the error is
                // unknown: do not pool this session.
                conn.close_on_drop();
                Err(map_err(e))
            }
        }
    });
    match task.await {
        Ok(held) => Ok(held?.map(StoreLock::holding)),
        Err(e) => Err(StoreError::Unavailable(format!("lock task failed: {e}"))),
    }
}

pub(super) async fn lock_purchases(pool: &PgPool, client_id: &str) -> StoreResult<StoreLock> {
    take(pool, format!("purchases/{client_id}"), true)
        .await?
        .ok_or_else(|| StoreError::Unavailable("advisory lock not granted".into()))
}

pub(super) async fn try_lock_job(pool: &PgPool, job: &str) -> StoreResult<Option<StoreLock>> {
    take(pool, format!("job/{job}"), false).await
}
