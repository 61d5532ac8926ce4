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
//!
//! Within one instance, a lock name is also behind a local mutex that the
//! guard gives back only once the server released the lock: the next taker
//! in this process waits for that release instead of finding its own
//! instance's lock still held (a sweep right after a sweep must run).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::map_err;
use crate::storage::{StoreError, StoreLock, StoreResult};

/// This instance's side of the locks (one per `PgStore`).
#[derive(Default)]
pub(super) struct LocalLocks {
    /// All purchase locks: the domain holds one at a time per process.
    purchases: Arc<Mutex<()>>,
    jobs: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl LocalLocks {
    fn job(&self, job: &str) -> Arc<Mutex<()>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.entry(job.to_string()).or_default().clone()
    }
}

/// Keys are 64-bit hashes of a namespaced name: a collision only makes two
/// unrelated holders take turns.
const KEY_SQL: &str = "hashtextextended('salestrack/' || $1, 0)";

struct HeldLock {
    conn: Option<PoolConnection<Postgres>>,
    local: Option<OwnedMutexGuard<()>>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let local = self.local.take();
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
                    drop(conn);
                    drop(local);
                });
            }
            // No runtime left (shutdown): closing the session releases it.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// Waits for the locks of `names`, in the order of their keys (so that two
/// instances taking overlapping sets cannot wait on each other).
async fn lock_all(conn: &mut PoolConnection<Postgres>, names: &[String]) -> sqlx::Result<()> {
    if let [name] = names {
        sqlx::query(&format!("SELECT pg_advisory_lock({KEY_SQL})"))
            .bind(name)
            .execute(&mut **conn)
            .await?;
        return Ok(());
    }
    let keys: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT hashtextextended('salestrack/' || n, 0) AS k \
         FROM unnest($1::TEXT[]) AS n ORDER BY k",
    )
    .bind(names)
    .fetch_all(&mut **conn)
    .await?;
    for key in keys {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut **conn)
            .await?;
    }
    Ok(())
}

/// Takes the locks of `names` on a connection of their own: waits when
/// `wait`, else (one name) answers `None` at once if another instance holds
/// it. `local` is this instance's mutex for them.
async fn take(
    pool: &PgPool,
    local: Arc<Mutex<()>>,
    names: Vec<String>,
    wait: bool,
) -> StoreResult<Option<StoreLock>> {
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        let local = local.lock_owned().await;
        let mut conn = pool.acquire().await.map_err(map_err)?;
        let got = if wait {
            lock_all(&mut conn, &names).await.map(|_| true)
        } else {
            sqlx::query_scalar::<_, bool>(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
                .bind(names.first().map(String::as_str).unwrap_or_default())
                .fetch_one(&mut *conn)
                .await
        };
        match got {
            Ok(true) => Ok(Some(HeldLock {
                conn: Some(conn),
                local: Some(local),
            })),
            Ok(false) => Ok(None),
            Err(e) => {
                // Whether the server granted any before the error is
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

pub(super) async fn lock_purchases(
    pool: &PgPool,
    local: &LocalLocks,
    client_ids: &[&str],
) -> StoreResult<StoreLock> {
    if client_ids.is_empty() {
        return Ok(StoreLock::noop());
    }
    let names = client_ids
        .iter()
        .map(|c| format!("purchases/{c}"))
        .collect();
    take(pool, local.purchases.clone(), names, true)
        .await?
        .ok_or_else(|| StoreError::Unavailable("advisory lock not granted".into()))
}

/// Within this instance a second taker waits for the first run to end (and
/// then runs); across instances it gets `None` at once.
pub(super) async fn try_lock_job(
    pool: &PgPool,
    local: &LocalLocks,
    job: &str,
) -> StoreResult<Option<StoreLock>> {
    take(pool, local.job(job), vec![format!("job/{job}")], false).await
}
