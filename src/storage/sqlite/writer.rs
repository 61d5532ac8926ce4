//! Group commit for what must be on disk before it is acknowledged: webhook
//! deliveries and clicks.
//!
//! One task owns a connection with `synchronous=FULL`. It takes every write
//! that is waiting (up to `MAX_BATCH`), runs them in one transaction, commits
//! — the commit returns once the WAL is synced — and only then answers each
//! caller. Callers that arrive while a batch commits form the next batch, so
//! one fsync serves many requests; nobody is answered before the fsync that
//! covers their row.
//!
//! The task also holds the derived-write connection's lock while it commits,
//! so that the two connections never wait on each other inside SQLite (whose
//! busy handler sleeps for milliseconds).

use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
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
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await
            .map_err(map_err)?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, rx, gate));
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
    mut rx: mpsc::Receiver<Job>,
    gate: Arc<Mutex<SqliteConnection>>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let results = {
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
        for (job, result) in jobs.drain(..).zip(results) {
            let _ = job.reply.send(result);
        }
    }
    let _ = conn.close().await;
}

async fn write_batch(
    conn: &mut SqliteConnection,
    jobs: &[Job],
) -> StoreResult<Vec<StoreResult<Done>>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        // An error drops `tx`, which rolls the whole batch back.
        results.push(Ok(execute(&mut tx, &job.op).await?));
    }
    tx.commit().await.map_err(map_err)?;
    Ok(results)
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
