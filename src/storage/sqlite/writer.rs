//! Group commit for what must be on disk before it is acknowledged: webhook
//! deliveries, clicks, and the few writes a human makes (clients, secrets,
//! links, settings, sessions, manual attributions).
//!
//! One thread owns the batches. It takes every write that is waiting (up to
//! `MAX_BATCH`), runs them in one transaction on the store's write
//! connection, commits, syncs the WAL file (`fdatasync`, what
//! `synchronous=FULL` does after a commit), and only then answers each
//! caller. Callers that arrive meanwhile form the next batch, so one fsync
//! serves many requests; nobody is answered before the fsync that covers
//! their row.
//!
//! The sync runs after the connection is released: SQLite would hold its
//! write lock through the fsync, and every other write (derived data) would
//! queue behind the disk. Durability is the same: the committed frames are in
//! the WAL file, and a checkpoint that copies them first syncs the WAL itself.
//!
//! All writes of the process go through that one connection (derived data
//! takes the same lock), so SQLite's own busy handler, which sleeps for
//! milliseconds, never runs. Checkpoints run on a connection of their own
//! (`checkpoint`), which takes the write lock only to copy its last few
//! frames.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::catalog;
use super::events::{insert_event, insert_many};
use super::rows::map_err;
use crate::domain::model::{Click, NewEvent};
use crate::storage::{StoreError, StoreResult};

/// Most writes in one transaction.
const MAX_BATCH: usize = 512;

/// A durable write of its own: runs on the write connection inside the
/// batch's transaction (under a savepoint) and returns the rows it changed.
pub(super) type Exec = Box<dyn Fn(&Connection) -> StoreResult<usize> + Send>;

pub(super) enum Op {
    Click(Box<Click>),
    Event(Box<NewEvent>),
    Exec(Exec),
}

#[derive(Debug)]
pub(super) enum Done {
    Click,
    /// The new row's id, or `None` when an event with its dedup key exists.
    Event(Option<i64>),
    /// Rows changed by an `Exec`.
    Rows(usize),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Done>>,
}

pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the batch thread on `conn` (the store's write connection) and
    /// the checkpoint thread on `checkpointer`.
    pub(super) fn start(
        conn: Arc<tokio::sync::Mutex<Connection>>,
        checkpointer: Connection,
        wal: PathBuf,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let weak = tx.downgrade();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let conn = conn.clone();
                move || checkpoint(checkpointer, conn, weak)
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the checkpointer: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, wal, rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the writer: {e}")))?;
        Ok(Self { tx })
    }

    /// Writes `op` and returns once its transaction is committed and synced.
    pub(super) async fn write(&self, op: Op) -> StoreResult<Done> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        done.await.map_err(|_| {
            StoreError::Unavailable("the SQLite writer stopped before committing".into())
        })?
    }
}

fn run(conn: Arc<tokio::sync::Mutex<Connection>>, wal: PathBuf, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut results = {
            let conn = conn.blocking_lock();
            match write_batch(&conn, &jobs) {
                Ok(results) => results,
                // Something in the batch failed and it was rolled back: give
                // each write its own transaction and its own answer.
                Err(_) => jobs.iter().map(|job| write_one(&conn, &job.op)).collect(),
            }
        };
        if let Err(e) = sync(&wal) {
            // Committed but maybe not on disk: nobody may count on it.
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(StoreError::Unavailable(format!("syncing the WAL: {e}")));
                }
            }
        }
        for (job, result) in jobs.drain(..).zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed pages from the WAL into the database file every
/// `CHECKPOINT_EVERY`, until the writer is gone, so that the WAL file is
/// written again from its start instead of growing.
///
/// SQLite starts the WAL over only when a write finds every frame copied.
/// Under steady writes a checkpoint that runs beside them never gets there
/// (new frames land while it copies), and the WAL grew by ~15 KB an event
/// for as long as the load lasted (1.9 GB within one run of the webhook
/// benchmark; every page written extended the file). So each round
/// copies in two steps: the bulk beside the writes, then, holding the
/// write connection's lock, the few frames committed meanwhile. The next
/// write then starts the WAL over. Both are `PASSIVE`: pages a reader still
/// uses wait for the next round, and a reader never waits.
fn checkpoint(
    conn: Connection,
    write: Arc<tokio::sync::Mutex<Connection>>,
    writer: mpsc::WeakSender<Job>,
) {
    let passive = || conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if writer.upgrade().is_none() {
            break;
        }
        let copied = passive().and_then(|()| {
            let _no_writes = write.blocking_lock();
            passive()
        });
        if let Err(e) = copied {
            tracing::warn!(error = %e, "WAL checkpoint failed; the next round retries");
        }
    }
}

/// `fdatasync` of the WAL file: what `synchronous=FULL` does at commit.
pub(super) fn sync(wal: &Path) -> std::io::Result<()> {
    std::fs::File::open(wal)?.sync_data()
}

fn write_batch(conn: &Connection, jobs: &[Job]) -> StoreResult<Vec<StoreResult<Done>>> {
    let mut tx =
        rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(map_err)?;
    // Clicks go in by many rows a statement; an error drops `tx`, which
    // rolls the whole batch back.
    let clicks: Vec<&Click> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Click(c) => Some(&**c),
            _ => None,
        })
        .collect();
    for rows in clicks.chunks(CLICKS_PER_STATEMENT) {
        insert_clicks(&tx, rows)?;
    }
    // Events go in many rows a statement (`events::insert_many`).
    let events: Vec<&NewEvent> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    let mut event_ids = insert_many(&tx, &events)?.into_iter();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(match &job.op {
            Op::Click(_) => Ok(Done::Click),
            Op::Event(_) => Ok(Done::Event(event_ids.next().flatten())),
            // A write of its own may fail alone (a name taken): its
            // savepoint is rolled back, the rest of the batch commits.
            Op::Exec(exec) => {
                let mut sp = tx.savepoint().map_err(map_err)?;
                match exec(&sp) {
                    Ok(rows) => sp.commit().map_err(map_err).map(|_| Done::Rows(rows)),
                    Err(e) => {
                        sp.rollback().map_err(map_err)?;
                        Err(e)
                    }
                }
            }
        });
    }
    tx.commit().map_err(map_err)?;
    Ok(results)
}

/// Rows of one multi-row click insert (10 parameters a row).
const CLICKS_PER_STATEMENT: usize = 128;

fn insert_clicks(conn: &Connection, clicks: &[&Click]) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO clicks (id, link_id, client_id, at, visitor_id, referrer, landing_url, \
         user_agent, ip_hash, bot) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; clicks.len()].join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    for (n, c) in clicks.iter().enumerate() {
        let first = 1 + 10 * n;
        let row: [&dyn rusqlite::ToSql; 10] = [
            &c.id,
            &c.link_id,
            &c.client_id,
            &c.at,
            &c.visitor_id,
            &c.referrer,
            &c.landing_url,
            &c.user_agent,
            &c.ip_hash,
            &c.bot,
        ];
        for (k, value) in row.iter().enumerate() {
            stmt.raw_bind_parameter(first + k, value).map_err(map_err)?;
        }
    }
    stmt.raw_execute().map_err(map_err)?;
    Ok(())
}

/// One write in a transaction of its own.
pub(super) fn write_one(conn: &Connection, op: &Op) -> StoreResult<Done> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let done = execute(&tx, op)?;
    tx.commit().map_err(map_err)?;
    Ok(done)
}

/// One write, in whatever transaction `conn` is in.
pub(super) fn execute(conn: &Connection, op: &Op) -> StoreResult<Done> {
    match op {
        Op::Click(click) => catalog::insert_click(conn, click).map(|_| Done::Click),
        Op::Event(event) => insert_event(conn, event).map(Done::Event),
        Op::Exec(exec) => exec(conn).map(Done::Rows),
    }
}
