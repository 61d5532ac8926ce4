//! Syncs of the WAL after commits made without one (a batch of deliveries
//! that ends with `UnitEnd::CommitUnsynced`, a unit that owes a sync).
//!
//! One `fdatasync` of the WAL makes every commit before it durable, so
//! syncs are shared: one runs at a time, and a caller whose commit an
//! earlier sync started too soon to cover waits for it, then runs one that
//! covers every commit made meanwhile. Under load the disk is asked to
//! flush once per round instead of once per commit, and never more than
//! one sync runs on the file: a stall blocks one thread of the pool, not
//! one per batch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::{StoreError, StoreResult};

pub(super) struct WalSync {
    path: PathBuf,
    /// Commits that asked for a sync, counted when they ask (after the
    /// commit).
    asked: AtomicU64,
    /// The count of `asked` that the last successful sync covers; the lock
    /// lets one sync run at a time.
    covered: tokio::sync::Mutex<u64>,
    /// Syncs run, for the tests.
    #[cfg(test)]
    runs: AtomicU64,
}

impl WalSync {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            asked: AtomicU64::new(0),
            covered: tokio::sync::Mutex::new(0),
            #[cfg(test)]
            runs: AtomicU64::new(0),
        }
    }

    /// Returns once the WAL is synced past the caller's commit, which must
    /// have ended before this call.
    pub(super) async fn after_commit(&self) -> StoreResult<()> {
        let mine = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.covered.lock().await;
        if *covered >= mine {
            return Ok(());
        }
        // Every commit counted so far ended before this sync starts.
        let upto = self.asked.load(Ordering::SeqCst);
        #[cfg(test)]
        self.runs.fetch_add(1, Ordering::Relaxed);
        let path = self.path.clone();
        let unavailable = |e: String| StoreError::Unavailable(format!("syncing the WAL: {e}"));
        // An fsync takes from a fraction of a millisecond to a stall of
        // many: not on a runtime thread.
        tokio::task::spawn_blocking(move || super::writer::sync(&path))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .map_err(|e| unavailable(e.to_string()))?;
        *covered = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    #[tokio::test]
    async fn commits_that_ask_while_a_sync_runs_share_the_next_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db-wal");
        std::fs::write(&path, b"frames").expect("write");
        let sync = Arc::new(WalSync::new(path));
        sync.after_commit().await.expect("first sync");
        assert_eq!(*sync.covered.lock().await, 1);
        assert_eq!(sync.runs.load(Ordering::Relaxed), 1);
        // A sync is running (its lock is held) while three commits ask.
        let running = sync.covered.lock().await;
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.after_commit().await })
            })
            .collect();
        while sync.asked.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        drop(running);
        for w in waiting {
            w.await.expect("task").expect("synced");
        }
        assert_eq!(*sync.covered.lock().await, 4);
        assert_eq!(
            sync.runs.load(Ordering::Relaxed),
            2,
            "one sync for the three"
        );
    }

    #[tokio::test]
    async fn a_failed_sync_covers_nothing_and_the_next_caller_tries_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db-wal");
        let sync = WalSync::new(path.clone());
        let err = sync.after_commit().await.expect_err("no WAL file yet");
        assert!(matches!(err, StoreError::Unavailable(m) if m.contains("syncing the WAL")));
        assert_eq!(*sync.covered.lock().await, 0);
        std::fs::write(&path, b"frames").expect("write");
        sync.after_commit().await.expect("retried");
        assert_eq!(*sync.covered.lock().await, 2);
    }
}
