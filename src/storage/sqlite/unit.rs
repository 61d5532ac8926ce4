//! Units of work (`Store::unit`) on SQLite: while a unit runs, every call
//! its task makes on the store goes to the write connection the unit holds,
//! inside the unit's transaction. Reads see the unit's own writes; other
//! tasks see them once the unit commits. Nested units are savepoints.
//!
//! The unit is a tokio task-local, so it follows the task across threads
//! and awaits, and nothing else can reach its connection. If the task is
//! dropped halfway, the unit rolls back (`Drop`) before it lets go of the
//! connection.

use std::cell::Cell;

use rusqlite::Connection;
use tokio::sync::OwnedMutexGuard;

use super::rows::map_err;
use crate::storage::{StoreResult, UnitEnd};

tokio::task_local! {
    static UNIT: Unit;
}

pub(super) struct Unit {
    /// Which store the unit belongs to (its connections' address).
    store: usize,
    conn: OwnedMutexGuard<Connection>,
    /// Nesting depth, for savepoint names.
    depth: Cell<u32>,
    /// A write made inside the unit must be synced before it is answered
    /// (a durable write, a delivery): the commit then syncs the WAL.
    needs_sync: Cell<bool>,
    /// The transaction ended (committed or rolled back).
    finished: Cell<bool>,
}

impl Drop for Unit {
    fn drop(&mut self) {
        if !self.finished.get() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back an abandoned unit of work failed");
            }
        }
    }
}

/// Whether the current task runs a unit of `store`.
pub(super) fn active(store: usize) -> bool {
    UNIT.try_with(|u| u.store == store).unwrap_or(false)
}

/// Runs `f` on the current unit's connection. Callers check `active` first.
pub(super) fn with<T>(f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    UNIT.try_with(|u| f(&u.conn)).unwrap_or_else(|_| {
        Err(crate::storage::StoreError::Unavailable(
            "no unit of work".into(),
        ))
    })
}

/// Marks the current unit as holding a write that must be synced.
pub(super) fn needs_sync() {
    let _ = UNIT.try_with(|u| u.needs_sync.set(true));
}

/// Runs `work` in a new unit on `conn` (the store's write connection,
/// already locked); `wal` is the file to sync after a commit that needs it
/// (`None` for an in-memory database). The sync runs after the connection
/// is let go, so that other writes need not wait for the disk.
pub(super) async fn run<'a>(
    store: usize,
    conn: OwnedMutexGuard<Connection>,
    work: futures_util::future::BoxFuture<'a, UnitEnd>,
    wal: Option<std::sync::Arc<super::wal_sync::WalSync>>,
) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    let unit = Unit {
        store,
        conn,
        depth: Cell::new(0),
        needs_sync: Cell::new(false),
        finished: Cell::new(false),
    };
    let sync_owed = UNIT
        .scope(unit, async move {
            let end = work.await;
            UNIT.with(|u| {
                let sql = match end {
                    UnitEnd::Commit | UnitEnd::CommitUnsynced => "COMMIT",
                    UnitEnd::Rollback => "ROLLBACK",
                };
                let done = u.conn.execute_batch(sql).map_err(map_err);
                if done.is_err() {
                    // A failed COMMIT leaves the transaction open: end it.
                    let _ = u.conn.execute_batch("ROLLBACK");
                }
                u.finished.set(true);
                done.map(|()| end == UnitEnd::Commit && u.needs_sync.get())
            })
        })
        .await?;
    match (sync_owed, wal) {
        (true, Some(wal)) => wal.after_commit().await,
        _ => Ok(()),
    }
}

/// Runs `work` as a savepoint inside the current unit.
pub(super) async fn nested(work: futures_util::future::BoxFuture<'_, UnitEnd>) -> StoreResult<()> {
    let name = UNIT.with(|u| {
        let depth = u.depth.get() + 1;
        u.depth.set(depth);
        format!("unit{depth}")
    });
    // A batch opens one per event: the statement is prepared once.
    with(|c| {
        c.prepare_cached(&format!("SAVEPOINT {name}"))
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(map_err)
    })?;
    let end = work.await;
    UNIT.with(|u| u.depth.set(u.depth.get() - 1));
    with(|c| match end {
        UnitEnd::Commit | UnitEnd::CommitUnsynced => c
            .prepare_cached(&format!("RELEASE {name}"))
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(map_err),
        UnitEnd::Rollback => c
            .execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))
            .map_err(map_err),
    })
}
