//! Group commit for what must be on disk before it is acknowledged: webhook
//! deliveries and clicks.
//!
//! One task owns a connection. It takes every write that is waiting (up to
//! `MAX_BATCH`), runs them in one transaction, commits, syncs the WAL file
//! (`fdatasync`, what `synchronous=FULL` does after a commit), and only then
//! answers each caller. Callers that arrive meanwhile form the next batch, so
//! one fsync serves many requests; nobody is answered before the fsync that
//! covers their row.
//!
//! The sync runs after SQLite's write lock is released: SQLite would hold it
//! through the fsync, and every other write (derived data) would queue behind
//! the disk. Durability is the same: the committed frames are in the WAL
//! file, and a checkpoint that copies them first syncs the WAL itself.
//!
//! The task holds the derived-write connection's lock while it writes, so
//! that the two connections never wait on each other inside SQLite (whose
//! busy handler sleeps for milliseconds).
//!
//! Neither of those connections checkpoints the WAL (SQLite would do it
//! inside a commit, two fsyncs and a copy of the pages while every writer
//! waits): `checkpoint` does it in the background on a connection of its
//! own, which needs no write lock.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{map_err, source_str, verification_str};
use crate::domain::model::{Click, NewEvent};
use crate::storage::{StoreError, StoreResult};

/// Most writes in one transaction.
const MAX_BATCH: usize = 512;

pub(super) enum Op {
    Click(Box<Click>),
    Event(Box<NewEvent>),
}

pub(super) enum Done {
    Click,
    /// The new row's id, or `None` when an event with its dedup key exists.
    Event(Option<i64>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Done>>,
}

pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the writer's own connection and starts its task on the current
    /// runtime. `gate` is held while a batch is written and committed.
    pub(super) async fn start(
        options: &SqliteConnectOptions,
        gate: Arc<Mutex<SqliteConnection>>,
    ) -> StoreResult<Self> {
        let conn = options
            .clone()
            .synchronous(SqliteSynchronous::Normal)
            .connect()
            .await
            .map_err(map_err)?;
        let mut wal = options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let checkpointer = options.clone().connect().await.map_err(map_err)?;
        tokio::spawn(checkpoint(checkpointer, tx.downgrade()));
        tokio::spawn(run(conn, PathBuf::from(wal), rx, gate));
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

async fn run(
    mut conn: SqliteConnection,
    wal: PathBuf,
    mut rx: mpsc::Receiver<Job>,
    gate: Arc<Mutex<SqliteConnection>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut results = {
            let _gate = gate.lock().await;
            match write_batch(&mut conn, &jobs).await {
                Ok(results) => results,
                // Something in the batch failed and it was rolled back: give
                // each write its own transaction and its own answer.
                Err(_) => {
                    let mut results = Vec::with_capacity(jobs.len());
                    for job in &jobs {
                        results.push(write_one(&mut conn, &job.op).await);
                    }
                    results
                }
            }
        };
        if let Err(e) = sync(&wal).await {
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
    let _ = conn.close().await;
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed pages from the WAL into the database file every
/// `CHECKPOINT_EVERY`, until the writer is gone. `PASSIVE` never blocks a
/// writer; pages still in use by a reader wait for the next round.
async fn checkpoint(mut conn: SqliteConnection, writer: mpsc::WeakSender<Job>) {
    let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if writer.upgrade().is_none() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; the next round retries");
        }
    }
    let _ = conn.close().await;
}

/// `fdatasync` of the WAL file: what `synchronous=FULL` does at commit.
async fn sync(wal: &std::path::Path) -> std::io::Result<()> {
    let wal = wal.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(wal)?.sync_data())
        .await
        .map_err(std::io::Error::other)?
}

async fn write_batch(
    conn: &mut SqliteConnection,
    jobs: &[Job],
) -> StoreResult<Vec<StoreResult<Done>>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    // Clicks go in by many rows a statement (one round trip to SQLite's
    // thread each); an error drops `tx`, which rolls the whole batch back.
    let clicks: Vec<&Click> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Click(c) => Some(&**c),
            Op::Event(_) => None,
        })
        .collect();
    for rows in clicks.chunks(CLICKS_PER_STATEMENT) {
        insert_clicks(&mut tx, rows).await?;
    }
    // Events with a dedup key seen first in this batch go in many rows a
    // statement too, their ids read back by key; the others (no key, or a
    // key repeated in the batch: a duplicate) one by one after them.
    let mut seen = HashSet::new();
    let grouped: Vec<&NewEvent> = jobs
        .iter()
        .filter_map(|j| match &j.op {
            Op::Event(e) => e.dedup_key.as_ref().map(|k| (k, &**e)),
            Op::Click(_) => None,
        })
        .filter(|(k, _)| seen.insert(k.as_str()))
        .map(|(_, e)| e)
        .collect();
    let mut ids = HashMap::new();
    for rows in grouped.chunks(EVENTS_PER_STATEMENT) {
        insert_events(&mut tx, rows, &mut ids).await?;
    }
    let mut in_group: HashSet<&str> = grouped
        .iter()
        .filter_map(|e| e.dedup_key.as_deref())
        .collect();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(Ok(match &job.op {
            Op::Click(_) => Done::Click,
            Op::Event(e) => match e.dedup_key.as_deref() {
                // The first of its key in the batch: inserted above.
                Some(k) if in_group.remove(k) => Done::Event(ids.get(k).copied()),
                _ => execute(&mut tx, &job.op).await?,
            },
        }));
    }
    tx.commit().await.map_err(map_err)?;
    Ok(results)
}

/// Rows of one multi-row event insert (17 parameters a row).
const EVENTS_PER_STATEMENT: usize = 64;

/// Inserts `events` (distinct dedup keys) and records the id of each one
/// inserted; a key already stored inserts nothing and gets no id.
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    ids: &mut HashMap<String, i64>,
) -> StoreResult<()> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO webhook_events (dedup_key, stripe_event_id, event_type, account, \
         livemode, api_version, endpoint, endpoint_client_id, source, received_at, headers, \
         body, verification, verification_reason, client_id, client_method, processing) ",
    );
    q.push_values(events, |mut row, e| {
        row.push_bind(&e.dedup_key)
            .push_bind(&e.stripe_event_id)
            .push_bind(&e.event_type)
            .push_bind(&e.account)
            .push_bind(e.livemode)
            .push_bind(&e.api_version)
            .push_bind(&e.endpoint)
            .push_bind(&e.endpoint_client_id)
            .push_bind(source_str(e.source))
            .push_bind(e.received_at)
            .push_bind(&e.headers)
            .push_bind(&e.body)
            .push_bind(verification_str(e.verification))
            .push_bind(e.verification_reason.map(|r| r.as_str()))
            .push_bind(&e.client_id)
            .push_bind(e.client_method.map(|m| m.as_str()))
            .push_bind(e.processing.as_str());
    });
    q.push(" ON CONFLICT(dedup_key) DO NOTHING RETURNING id, dedup_key");
    let rows: Vec<(i64, String)> = q
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    ids.extend(rows.into_iter().map(|(id, key)| (key, id)));
    Ok(())
}

/// Rows of one multi-row click insert (10 parameters a row, far below
/// SQLite's limit).
const CLICKS_PER_STATEMENT: usize = 128;

async fn insert_clicks(conn: &mut SqliteConnection, clicks: &[&Click]) -> StoreResult<()> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO clicks (id, link_id, client_id, at, visitor_id, referrer, landing_url, \
         user_agent, ip_hash, bot) ",
    );
    q.push_values(clicks, |mut row, c| {
        row.push_bind(&c.id)
            .push_bind(&c.link_id)
            .push_bind(&c.client_id)
            .push_bind(c.at)
            .push_bind(&c.visitor_id)
            .push_bind(&c.referrer)
            .push_bind(&c.landing_url)
            .push_bind(&c.user_agent)
            .push_bind(&c.ip_hash)
            .push_bind(c.bot);
    });
    q.build().execute(&mut *conn).await.map_err(map_err)?;
    Ok(())
}

async fn write_one(conn: &mut SqliteConnection, op: &Op) -> StoreResult<Done> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    let done = execute(&mut tx, op).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(done)
}

async fn execute(conn: &mut SqliteConnection, op: &Op) -> StoreResult<Done> {
    match op {
        Op::Click(click) => {
            sqlx::query(
                "INSERT INTO clicks (id, link_id, client_id, at, visitor_id, referrer, \
                 landing_url, user_agent, ip_hash, bot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&click.id)
            .bind(&click.link_id)
            .bind(&click.client_id)
            .bind(click.at)
            .bind(&click.visitor_id)
            .bind(&click.referrer)
            .bind(&click.landing_url)
            .bind(&click.user_agent)
            .bind(&click.ip_hash)
            .bind(click.bot)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(Done::Click)
        }
        Op::Event(event) => {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_events (dedup_key, stripe_event_id, event_type, account, \
                 livemode, api_version, endpoint, endpoint_client_id, source, received_at, \
                 headers, body, verification, verification_reason, client_id, client_method, \
                 processing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT(dedup_key) DO NOTHING RETURNING id",
            )
            .bind(&event.dedup_key)
            .bind(&event.stripe_event_id)
            .bind(&event.event_type)
            .bind(&event.account)
            .bind(event.livemode)
            .bind(&event.api_version)
            .bind(&event.endpoint)
            .bind(&event.endpoint_client_id)
            .bind(source_str(event.source))
            .bind(event.received_at)
            .bind(&event.headers)
            .bind(&event.body)
            .bind(verification_str(event.verification))
            .bind(event.verification_reason.map(|r| r.as_str()))
            .bind(&event.client_id)
            .bind(event.client_method.map(|m| m.as_str()))
            .bind(event.processing.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(Done::Event(id))
        }
    }
}
