//! SQLite store: the `Store` trait on sqlx with runtime-checked queries.
//!
//! WAL journal, `synchronous=FULL` (a returned commit is on disk),
//! `busy_timeout`, foreign keys on. Webhook deliveries and clicks go through
//! a group commit (`writer.rs`); data derived from stored events (facts,
//! aliases, conversions, their history, processing results) is written on a
//! connection without an fsync of its own (see `SqliteStore::derived`).
//! Booleans are INTEGER 0/1, times integer epoch milliseconds, enums their
//! `as_str()` text, JSON values TEXT.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite};

use super::{redact_url, Store, StoreError, StoreResult};
use crate::domain::model::*;
use crate::domain::report::*;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Group commit of deliveries and clicks (`None` for an in-memory
    /// database, which lives in the pool's one connection).
    writer: Option<writer::Writer>,
    /// The connection for derived data, `synchronous=NORMAL`: its commits
    /// reach the disk with the next synced commit or checkpoint. What it
    /// writes can be derived again from the durably stored events, which
    /// stay `pending` until their processing result is written here (the
    /// sweep retries them). Its lock also keeps it from waiting on the
    /// writer inside SQLite.
    derived: Option<Arc<tokio::sync::Mutex<SqliteConnection>>>,
    /// Connections for reads, each behind a lock: taking a free one costs
    /// no round trip, where sqlx's pool spends one on each acquire and
    /// spawns a task on each release (measured: 2.5× the cost of a point
    /// query). Empty for an in-memory database.
    readers: Vec<tokio::sync::Mutex<SqliteConnection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Reader connections: enough for two cores and the requests they serve.
const READERS: usize = 4;

/// A connection held for one statement or transaction: a locked one of ours
/// (the derived connection, a reader) or, for an in-memory database, one
/// from the pool.
enum HeldConn<'a> {
    Derived(tokio::sync::MutexGuard<'a, SqliteConnection>),
    Pooled(sqlx::pool::PoolConnection<Sqlite>),
}

impl std::ops::Deref for HeldConn<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        match self {
            Self::Derived(c) => c,
            Self::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for HeldConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Self::Derived(c) => c,
            Self::Pooled(c) => c,
        }
    }
}

// SQLite primary result codes (the low byte of an extended code) that mean
// the stored data itself is bad. Everything else a database reports (BUSY,
// LOCKED, IOERR, FULL, CANTOPEN, ...) means the store cannot serve right now.
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_NOTADB: i64 = 26;

/// The one place a sqlx error becomes a `StoreError`.
fn map_err(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            return StoreError::Conflict(db.message().to_string());
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(format!("missing referenced row: {}", db.message()));
        }
        let primary = db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .map(|c| c & 0xff);
        return match primary {
            Some(SQLITE_CORRUPT | SQLITE_NOTADB) => StoreError::Corrupt(db.message().to_string()),
            // busy, locked, disk I/O, full, cannot open, and anything else
            _ => StoreError::Unavailable(db.message().to_string()),
        };
    }
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
        // pool timeout or closed, I/O, crashed worker, and anything else
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

fn get<'r, T>(row: &'r SqliteRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(col).map_err(map_err)
}

fn get_enum<T>(row: &SqliteRow, col: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let s: String = get(row, col)?;
    parse(&s).ok_or_else(|| corrupt(col, &s))
}

fn get_opt_enum<T>(
    row: &SqliteRow,
    col: &str,
    parse: fn(&str) -> Option<T>,
) -> StoreResult<Option<T>> {
    let s: Option<String> = get(row, col)?;
    s.map(|s| parse(&s).ok_or_else(|| corrupt(col, &s)))
        .transpose()
}

fn source_str(s: EventSource) -> &'static str {
    match s {
        EventSource::Push => "push",
        EventSource::Fetch => "fetch",
    }
}

fn parse_source(s: &str) -> Option<EventSource> {
    match s {
        "push" => Some(EventSource::Push),
        "fetch" => Some(EventSource::Fetch),
        _ => None,
    }
}

fn verification_str(v: Verification) -> &'static str {
    match v {
        Verification::Verified => "verified",
        Verification::Unverified => "unverified",
    }
}

fn parse_verification(s: &str) -> Option<Verification> {
    match s {
        "verified" => Some(Verification::Verified),
        "unverified" => Some(Verification::Unverified),
        _ => None,
    }
}

/// SQLite's `LIMIT -1` means no limit.
fn limit_or_all(limit: i64) -> i64 {
    if limit <= 0 {
        -1
    } else {
        limit
    }
}

fn limit_or(limit: i64, default: i64) -> i64 {
    if limit <= 0 {
        default
    } else {
        limit
    }
}

// ---- rows -------------------------------------------------------------------

const CLIENT_COLS: &str = "c.id, c.name, c.domain, c.stripe_account, c.stripe_api_key, \
     c.window_primary_days, c.window_fallback_days, c.any_time_fallback, c.created_at";

fn client_from_row(row: &SqliteRow) -> StoreResult<Client> {
    Ok(Client {
        id: get(row, "id")?,
        name: get(row, "name")?,
        domain: get(row, "domain")?,
        stripe_account: get(row, "stripe_account")?,
        stripe_api_key: get(row, "stripe_api_key")?,
        settings: AttributionSettings {
            window_primary_days: get(row, "window_primary_days")?,
            window_fallback_days: get(row, "window_fallback_days")?,
            any_time_fallback: get(row, "any_time_fallback")?,
        },
        created_at: get(row, "created_at")?,
    })
}

const LINK_COLS: &str = "l.id, l.client_id, l.slug, l.destination, l.label, l.created_at";

fn link_from_row(row: &SqliteRow) -> StoreResult<Link> {
    Ok(Link {
        id: get(row, "id")?,
        client_id: get(row, "client_id")?,
        slug: get(row, "slug")?,
        destination: get(row, "destination")?,
        label: get(row, "label")?,
        promo_codes: Vec::new(),
        created_at: get(row, "created_at")?,
    })
}

const CLICK_COLS: &str =
    "id, link_id, client_id, at, visitor_id, referrer, landing_url, user_agent, ip_hash, bot";

fn click_from_row(row: &SqliteRow) -> StoreResult<Click> {
    Ok(Click {
        id: get(row, "id")?,
        link_id: get(row, "link_id")?,
        client_id: get(row, "client_id")?,
        at: get(row, "at")?,
        visitor_id: get(row, "visitor_id")?,
        referrer: get(row, "referrer")?,
        landing_url: get(row, "landing_url")?,
        user_agent: get(row, "user_agent")?,
        ip_hash: get(row, "ip_hash")?,
        bot: get(row, "bot")?,
    })
}

const EVENT_COLS: &str = "id, dedup_key, stripe_event_id, event_type, account, livemode, \
     api_version, endpoint, endpoint_client_id, source, received_at, headers, body, \
     verification, verification_reason, client_id, client_method, processing, \
     processing_error, attempts, deliveries";

fn event_from_row(row: &SqliteRow) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        id: get(row, "id")?,
        dedup_key: get(row, "dedup_key")?,
        stripe_event_id: get(row, "stripe_event_id")?,
        event_type: get(row, "event_type")?,
        account: get(row, "account")?,
        livemode: get(row, "livemode")?,
        api_version: get(row, "api_version")?,
        endpoint: get(row, "endpoint")?,
        endpoint_client_id: get(row, "endpoint_client_id")?,
        source: get_enum(row, "source", parse_source)?,
        received_at: get(row, "received_at")?,
        headers: get(row, "headers")?,
        body: get(row, "body")?,
        verification: get_enum(row, "verification", parse_verification)?,
        verification_reason: get_opt_enum(row, "verification_reason", UnverifiedReason::parse)?,
        client_id: get(row, "client_id")?,
        client_method: get_opt_enum(row, "client_method", ClientMethod::parse)?,
        processing: get_enum(row, "processing", Processing::parse)?,
        processing_error: get(row, "processing_error")?,
        attempts: get(row, "attempts")?,
        deliveries: get(row, "deliveries")?,
    })
}

const FACT_COLS: &str =
    "event_id, client_id, purchase_key, verified, livemode, client_method, body";

fn fact_from_row(row: &SqliteRow) -> StoreResult<SaleFact> {
    let body: String = get(row, "body")?;
    Ok(SaleFact {
        event_id: get(row, "event_id")?,
        client_id: get(row, "client_id")?,
        purchase_key: get(row, "purchase_key")?,
        verified: get(row, "verified")?,
        livemode: get(row, "livemode")?,
        client_method: get_enum(row, "client_method", ClientMethod::parse)?,
        body: serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("sale fact body: {e}")))?,
    })
}

const CONVERSION_COLS: &str = "id, client_id, purchase_key, link_id, click_id, customer, email, \
     subscription, amount, currency, net_amount, purchased_at, kind, livemode, verified, \
     status, method, client_method, trace, created_at, updated_at";

fn conversion_from_row(row: &SqliteRow) -> StoreResult<Conversion> {
    let trace: String = get(row, "trace")?;
    Ok(Conversion {
        id: get(row, "id")?,
        client_id: get(row, "client_id")?,
        purchase_key: get(row, "purchase_key")?,
        link_id: get(row, "link_id")?,
        click_id: get(row, "click_id")?,
        customer: get(row, "customer")?,
        email: get(row, "email")?,
        subscription: get(row, "subscription")?,
        amount: get(row, "amount")?,
        currency: get(row, "currency")?,
        net_amount: get(row, "net_amount")?,
        purchased_at: get(row, "purchased_at")?,
        kind: get_enum(row, "kind", ConversionKind::parse)?,
        livemode: get(row, "livemode")?,
        verified: get(row, "verified")?,
        status: get_enum(row, "status", ConversionStatus::parse)?,
        method: get_opt_enum(row, "method", Method::parse)?,
        client_method: get_enum(row, "client_method", ClientMethod::parse)?,
        trace: serde_json::from_str(&trace)
            .map_err(|e| StoreError::Corrupt(format!("conversion trace: {e}")))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn history_from_row(row: &SqliteRow) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        id: get(row, "id")?,
        conversion_id: get(row, "conversion_id")?,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        from_link_id: get(row, "from_link_id")?,
        to_link_id: get(row, "to_link_id")?,
        from_method: get_opt_enum(row, "from_method", Method::parse)?,
        to_method: get_opt_enum(row, "to_method", Method::parse)?,
        reason: get(row, "reason")?,
    })
}

// ---- store ------------------------------------------------------------------

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite:` URL names.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::UnsupportedUrl(format!("{}: {e}", redact_url(url))))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // An in-memory database lives as long as a connection to it: keep
        // exactly one, forever.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            // A local file needs no liveness check before each use; sqlx's
            // default one costs a round trip to the connection's thread.
            SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
        };
        let pool = pool_options
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        if in_memory {
            return Ok(Self {
                pool,
                writer: None,
                derived: None,
                readers: Vec::new(),
                next_reader: Default::default(),
            });
        }
        // The two connections that write most leave checkpoints to the
        // writer's background task.
        let options = options.pragma("wal_autocheckpoint", "0");
        let derived = options
            .clone()
            .synchronous(SqliteSynchronous::Normal)
            .connect()
            .await
            .map_err(map_err)?;
        let derived = Arc::new(tokio::sync::Mutex::new(derived));
        let writer = writer::Writer::start(&options, derived.clone()).await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = options.clone().connect().await.map_err(map_err)?;
            readers.push(tokio::sync::Mutex::new(conn));
        }
        Ok(Self {
            pool,
            writer: Some(writer),
            derived: Some(derived),
            readers,
            next_reader: Default::default(),
        })
    }

    /// A connection to read on: a free reader if there is one, else the
    /// next in turn once it is free.
    async fn reader(&self) -> StoreResult<HeldConn<'_>> {
        let n = self.readers.len();
        if n == 0 {
            return Ok(HeldConn::Pooled(
                self.pool.acquire().await.map_err(map_err)?,
            ));
        }
        let first = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.readers[(first + i) % n].try_lock() {
                return Ok(HeldConn::Derived(conn));
            }
        }
        Ok(HeldConn::Derived(self.readers[first % n].lock().await))
    }

    /// Where derived data is written (see `SqliteStore::derived`).
    async fn derived_conn(&self) -> StoreResult<HeldConn<'_>> {
        match &self.derived {
            Some(conn) => Ok(HeldConn::Derived(conn.lock().await)),
            None => Ok(HeldConn::Pooled(
                self.pool.acquire().await.map_err(map_err)?,
            )),
        }
    }

    /// Applies the migrations in `migrations/sqlite`.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// The client whose `column` (a fixed name, never input) equals `value`.
    async fn client_where(&self, column: &'static str, value: &str) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE {column} = ?");
        sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Links matching `where_sql` (over `links l`, `?` bound to `args` in
    /// order), each with its promotion codes: one statement, so one snapshot
    /// and one round trip (the redirect's hot path).
    async fn load_links(&self, where_sql: &str, args: &[&str]) -> StoreResult<Vec<Link>> {
        let sql = format!(
            "SELECT {LINK_COLS}, (SELECT json_group_array(code) FROM \
               (SELECT pc.code AS code FROM link_promo_codes pc \
                WHERE pc.link_id = l.id ORDER BY pc.rowid)) AS promo_codes \
             FROM links l WHERE {where_sql} ORDER BY l.created_at, l.rowid"
        );
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        let rows = q
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let mut link = link_from_row(row)?;
                let codes: String = get(row, "promo_codes")?;
                link.promo_codes = serde_json::from_str(&codes)
                    .map_err(|e| StoreError::Corrupt(format!("link promotion codes: {e}")))?;
                Ok(link)
            })
            .collect()
    }

    /// The insert `insert_event` does, on the pool (in-memory databases).
    async fn insert_event_now(&self, event: &NewEvent) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "INSERT INTO webhook_events (dedup_key, stripe_event_id, event_type, account, \
             livemode, api_version, endpoint, endpoint_client_id, source, received_at, headers, \
             body, verification, verification_reason, client_id, client_method, processing) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)
    }

    async fn load_event_by_dedup_key(&self, key: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE dedup_key = ?");
        sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }

    /// One live conversion of the client matching an extra condition on one
    /// bound value, for `customer_history`.
    async fn history_candidate(
        &self,
        client_id: &str,
        exclude_id: &str,
        before: Millis,
        condition: &str,
        value: &str,
    ) -> StoreResult<Option<Conversion>> {
        let sql = format!(
            "SELECT {CONVERSION_COLS} FROM conversions \
             WHERE client_id = ? AND merged_into IS NULL AND id <> ? \
               AND link_id IS NOT NULL AND verified = 1 AND purchased_at <= ? AND {condition} \
             ORDER BY purchased_at DESC, id DESC LIMIT 1"
        );
        sqlx::query(&sql)
            .bind(client_id)
            .bind(exclude_id)
            .bind(before)
            .bind(value)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(conversion_from_row)
            .transpose()
    }
}

fn not_found_unless_one(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    // ---- settings -----------------------------------------------------------

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)
    }

    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *self.reader().await?)
            .await
            .map_err(map_err)
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    // ---- clients ------------------------------------------------------------

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO clients (id, name, domain, stripe_account, stripe_api_key, \
             window_primary_days, window_fallback_days, any_time_fallback, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.domain)
        .bind(&client.stripe_account)
        .bind(&client.stripe_api_key)
        .bind(client.settings.window_primary_days)
        .bind(client.settings.window_fallback_days)
        .bind(client.settings.any_time_fallback)
        .bind(client.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients c ORDER BY c.created_at, c.rowid");
        sqlx::query(&sql)
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(client_from_row)
            .collect()
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.client_where("c.id", id).await
    }

    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>> {
        self.client_where("c.name", name).await
    }

    async fn update_client_settings(
        &self,
        id: &str,
        settings: &AttributionSettings,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE clients SET window_primary_days = ?, window_fallback_days = ?, \
             any_time_fallback = ? WHERE id = ?",
        )
        .bind(settings.window_primary_days)
        .bind(settings.window_fallback_days)
        .bind(settings.any_time_fallback)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        not_found_unless_one(done.rows_affected())
    }

    async fn add_webhook_secret(&self, client_id: &str, secret: &WebhookSecret) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_secrets (client_id, secret, active, created_at) \
             VALUES (?, ?, 1, ?) ON CONFLICT(client_id, secret) DO NOTHING",
        )
        .bind(client_id)
        .bind(secret.expose())
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_client_secrets(&self) -> StoreResult<Vec<ClientSecrets>> {
        // One statement, so clients and secrets come from the same snapshot.
        let sql = format!(
            "SELECT {CLIENT_COLS}, s.secret AS secret FROM clients c \
             LEFT JOIN webhook_secrets s ON s.client_id = c.id AND s.active = 1 \
             ORDER BY c.created_at, c.rowid, s.created_at, s.id"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?;
        let mut out: Vec<ClientSecrets> = Vec::new();
        for row in &rows {
            let id: String = get(row, "id")?;
            if out.last().map(|c| c.client.id != id).unwrap_or(true) {
                out.push(ClientSecrets {
                    client: client_from_row(row)?,
                    secrets: Vec::new(),
                });
            }
            let secret: Option<String> = get(row, "secret")?;
            if let (Some(secret), Some(last)) = (secret, out.last_mut()) {
                last.secrets.push(WebhookSecret::new(secret));
            }
        }
        Ok(out)
    }

    // ---- links --------------------------------------------------------------

    #[tracing::instrument(skip_all)]
    async fn insert_link(&self, link: &Link) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO links (id, client_id, slug, destination, label, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&link.id)
        .bind(&link.client_id)
        .bind(&link.slug)
        .bind(&link.destination)
        .bind(&link.label)
        .bind(link.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        for code in &link.promo_codes {
            sqlx::query(
                "INSERT INTO link_promo_codes (link_id, client_id, code) VALUES (?, ?, ?) \
                 ON CONFLICT(link_id, code) DO NOTHING",
            )
            .bind(&link.id)
            .bind(&link.client_id)
            .bind(code)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_links(&self, client_id: Option<&str>) -> StoreResult<Vec<Link>> {
        match client_id {
            Some(c) => self.load_links("l.client_id = ?", &[c]).await,
            None => self.load_links("1 = 1", &[]).await,
        }
    }

    async fn get_link(&self, id: &str) -> StoreResult<Option<Link>> {
        Ok(self.load_links("l.id = ?", &[id]).await?.into_iter().next())
    }

    async fn find_links_by_slug(&self, slug: &str) -> StoreResult<Vec<Link>> {
        self.load_links("l.slug = ?", &[slug]).await
    }

    async fn find_link(&self, client_id: &str, slug: &str) -> StoreResult<Option<Link>> {
        Ok(self
            .load_links("l.client_id = ? AND l.slug = ?", &[client_id, slug])
            .await?
            .into_iter()
            .next())
    }

    async fn find_link_by_promo_code(
        &self,
        client_id: &str,
        code: &str,
    ) -> StoreResult<Option<Link>> {
        Ok(self
            .load_links(
                "l.id = (SELECT pc.link_id FROM link_promo_codes pc \
                 WHERE pc.client_id = ? AND lower(pc.code) = lower(?) \
                 ORDER BY pc.rowid LIMIT 1)",
                &[client_id, code],
            )
            .await?
            .into_iter()
            .next())
    }

    // ---- clicks -------------------------------------------------------------

    async fn insert_click(&self, click: &Click) -> StoreResult<()> {
        if let Some(writer) = &self.writer {
            writer
                .write(writer::Op::Click(Box::new(click.clone())))
                .await?;
            return Ok(());
        }
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
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_click(&self, client_id: &str, click_id: &str) -> StoreResult<Option<Click>> {
        let sql = format!("SELECT {CLICK_COLS} FROM clicks WHERE id = ? AND client_id = ?");
        sqlx::query(&sql)
            .bind(click_id)
            .bind(client_id)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(click_from_row)
            .transpose()
    }

    async fn latest_click(
        &self,
        client_id: &str,
        from: Option<Millis>,
        to: Millis,
    ) -> StoreResult<Option<Click>> {
        // Walks `clicks_client_bot_at` backwards from `to`: one index seek.
        let lower = if from.is_some() { " AND at >= ?" } else { "" };
        let sql = format!(
            "SELECT {CLICK_COLS} FROM clicks INDEXED BY clicks_client_bot_at \
             WHERE client_id = ? AND bot = 0 AND at <= ?{lower} ORDER BY at DESC LIMIT 1"
        );
        let mut q = sqlx::query(&sql).bind(client_id).bind(to);
        if let Some(from) = from {
            q = q.bind(from);
        }
        q.fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(click_from_row)
            .transpose()
    }

    async fn recent_clicks_for_link(&self, link_id: &str, limit: i64) -> StoreResult<Vec<Click>> {
        let sql =
            format!("SELECT {CLICK_COLS} FROM clicks WHERE link_id = ? ORDER BY at DESC LIMIT ?");
        sqlx::query(&sql)
            .bind(link_id)
            .bind(limit_or(limit, 100))
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(click_from_row)
            .collect()
    }

    async fn count_clicks(&self, client_id: Option<&str>) -> StoreResult<i64> {
        match client_id {
            Some(c) => sqlx::query_scalar("SELECT COUNT(*) FROM clicks WHERE client_id = ?")
                .bind(c)
                .fetch_one(&mut *self.reader().await?)
                .await
                .map_err(map_err),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM clicks")
                .fetch_one(&mut *self.reader().await?)
                .await
                .map_err(map_err),
        }
    }

    // ---- webhook events -----------------------------------------------------

    #[tracing::instrument(skip_all)]
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent> {
        let id = match &self.writer {
            Some(writer) => match writer
                .write(writer::Op::Event(Box::new(event.clone())))
                .await?
            {
                writer::Done::Event(id) => id,
                writer::Done::Click => None,
            },
            None => self.insert_event_now(event).await?,
        };
        if let Some(id) = id {
            return Ok(InsertEvent::Inserted(id));
        }
        // Only a dedup_key conflict suppresses the insert; NULL never conflicts.
        let key = event.dedup_key.as_deref().ok_or_else(|| {
            StoreError::Unavailable("event insert returned no id without a dedup key".into())
        })?;
        match self.load_event_by_dedup_key(key).await? {
            Some(stored) => Ok(InsertEvent::Duplicate(Box::new(stored))),
            None => Err(StoreError::Unavailable(
                "duplicate event vanished before it could be read".into(),
            )),
        }
    }

    async fn get_event(&self, id: i64) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE id = ?");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }
    async fn record_delivery(&self, id: i64) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE webhook_events SET deliveries = deliveries + 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *self.derived_conn().await?)
                .await
                .map_err(map_err)?;
        not_found_unless_one(done.rows_affected())
    }

    async fn mark_event_verified(
        &self,
        id: i64,
        client_id: &str,
        client_method: ClientMethod,
        headers: Option<&str>,
        body: Option<&[u8]>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_events SET verification = 'verified', verification_reason = NULL, \
             client_id = ?, client_method = ?, headers = COALESCE(?, headers), \
             body = COALESCE(?, body) WHERE id = ? AND verification <> 'verified'",
        )
        .bind(client_id)
        .bind(client_method.as_str())
        .bind(headers)
        .bind(body)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_event_unverified_reason(
        &self,
        id: i64,
        reason: UnverifiedReason,
    ) -> StoreResult<()> {
        // A concurrent upgrade to verified wins: then nothing changes.
        sqlx::query(
            "UPDATE webhook_events SET verification_reason = ? \
             WHERE id = ? AND verification <> 'verified'",
        )
        .bind(reason.as_str())
        .bind(id)
        .execute(&mut *self.derived_conn().await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn set_event_processing(
        &self,
        id: i64,
        client: Option<(&str, ClientMethod)>,
        processing: Processing,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE webhook_events SET processing = ?, processing_error = ?, \
             client_id = COALESCE(?, client_id), client_method = COALESCE(?, client_method), \
             attempts = attempts + 1, processed_at = ? WHERE id = ?",
        )
        .bind(processing.as_str())
        .bind(error)
        .bind(client.map(|(c, _)| c))
        .bind(client.map(|(_, m)| m.as_str()))
        .bind(now_millis())
        .bind(id)
        .execute(&mut *self.derived_conn().await?)
        .await
        .map_err(map_err)?;
        not_found_unless_one(done.rows_affected())
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {EVENT_COLS} FROM webhook_events WHERE 1 = 1"
        ));
        if let Some(p) = filter.processing {
            qb.push(" AND processing = ").push_bind(p.as_str());
        }
        if let Some(v) = filter.verification {
            qb.push(" AND verification = ")
                .push_bind(verification_str(v));
        }
        if let Some(c) = &filter.client_id {
            qb.push(" AND client_id = ").push_bind(c.as_str());
        }
        if let Some(s) = &filter.body_contains {
            qb.push(" AND instr(body, ")
                .push_bind(s.as_bytes())
                .push(") > 0");
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_or(filter.limit, 100));
        qb.build()
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn events_to_retry(
        &self,
        max_attempts: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLS} FROM webhook_events \
             WHERE (processing = 'failed' AND attempts < ?) \
                OR processing IN ('no_client', 'pending') \
             ORDER BY id LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(max_attempts)
            .bind(limit_or(limit, 100))
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(event_from_row)
            .collect()
    }

    // ---- sale facts and purchase keys ---------------------------------------

    async fn upsert_fact(&self, fact: &SaleFact) -> StoreResult<()> {
        let body = serde_json::to_string(&fact.body)
            .map_err(|e| StoreError::Corrupt(format!("sale fact body: {e}")))?;
        sqlx::query(
            "INSERT INTO sale_facts (event_id, client_id, purchase_key, verified, livemode, \
             client_method, body) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(event_id) DO UPDATE SET client_id = excluded.client_id, \
             purchase_key = excluded.purchase_key, verified = excluded.verified, \
             livemode = excluded.livemode, client_method = excluded.client_method, \
             body = excluded.body",
        )
        .bind(fact.event_id)
        .bind(&fact.client_id)
        .bind(&fact.purchase_key)
        .bind(fact.verified)
        .bind(fact.livemode)
        .bind(fact.client_method.as_str())
        .bind(body)
        .execute(&mut *self.derived_conn().await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn facts_for_purchase(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Vec<SaleFact>> {
        let sql = format!(
            "SELECT {FACT_COLS} FROM sale_facts WHERE client_id = ? AND purchase_key = ? \
             ORDER BY event_id"
        );
        sqlx::query(&sql)
            .bind(client_id)
            .bind(purchase_key)
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(fact_from_row)
            .collect()
    }

    async fn resolve_alias(&self, client_id: &str, alias: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT purchase_key FROM purchase_aliases WHERE client_id = ? AND alias = ?",
        )
        .bind(client_id)
        .bind(alias)
        .fetch_optional(&mut *self.reader().await?)
        .await
        .map_err(map_err)
    }

    #[tracing::instrument(skip_all)]
    async fn set_alias(&self, client_id: &str, alias: &str, purchase_key: &str) -> StoreResult<()> {
        if alias == purchase_key {
            // A key is trivially its own; a self-alias would only hide an
            // existing mapping of it.
            return Ok(());
        }
        let mut conn = self.derived_conn().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO purchase_aliases (client_id, alias, purchase_key) VALUES (?, ?, ?) \
             ON CONFLICT(client_id, alias) DO UPDATE SET purchase_key = excluded.purchase_key",
        )
        .bind(client_id)
        .bind(alias)
        .bind(purchase_key)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "UPDATE purchase_aliases SET purchase_key = ? WHERE client_id = ? AND purchase_key = ?",
        )
        .bind(purchase_key)
        .bind(client_id)
        .bind(alias)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "UPDATE sale_facts SET purchase_key = ? WHERE client_id = ? AND purchase_key = ?",
        )
        .bind(purchase_key)
        .bind(client_id)
        .bind(alias)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    // ---- conversions ----------------------------------------------------------

    async fn get_conversion(&self, id: &str) -> StoreResult<Option<Conversion>> {
        let sql = format!("SELECT {CONVERSION_COLS} FROM conversions WHERE id = ?");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(conversion_from_row)
            .transpose()
    }

    async fn get_conversion_by_key(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Option<Conversion>> {
        let sql = format!(
            "SELECT {CONVERSION_COLS} FROM conversions \
             WHERE client_id = ? AND purchase_key = ? AND merged_into IS NULL"
        );
        sqlx::query(&sql)
            .bind(client_id)
            .bind(purchase_key)
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(conversion_from_row)
            .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn save_conversion(&self, c: &Conversion) -> StoreResult<()> {
        let trace = serde_json::to_string(&c.trace)
            .map_err(|e| StoreError::Corrupt(format!("conversion trace: {e}")))?;
        let q = sqlx::query(
            "INSERT INTO conversions (id, client_id, purchase_key, link_id, click_id, customer, \
             email, subscription, amount, currency, net_amount, purchased_at, kind, livemode, \
             verified, status, method, client_method, trace, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET client_id = excluded.client_id, \
             purchase_key = excluded.purchase_key, link_id = excluded.link_id, \
             click_id = excluded.click_id, customer = excluded.customer, \
             email = excluded.email, subscription = excluded.subscription, \
             amount = excluded.amount, currency = excluded.currency, \
             net_amount = excluded.net_amount, purchased_at = excluded.purchased_at, \
             kind = excluded.kind, livemode = excluded.livemode, \
             verified = excluded.verified, status = excluded.status, \
             method = excluded.method, client_method = excluded.client_method, \
             trace = excluded.trace, created_at = excluded.created_at, \
             updated_at = excluded.updated_at",
        )
        .bind(&c.id)
        .bind(&c.client_id)
        .bind(&c.purchase_key)
        .bind(&c.link_id)
        .bind(&c.click_id)
        .bind(&c.customer)
        .bind(&c.email)
        .bind(&c.subscription)
        .bind(c.amount)
        .bind(&c.currency)
        .bind(c.net_amount)
        .bind(c.purchased_at)
        .bind(c.kind.as_str())
        .bind(c.livemode)
        .bind(c.verified)
        .bind(c.status.as_str())
        .bind(c.method.map(|m| m.as_str()))
        .bind(c.client_method.as_str())
        .bind(trace)
        .bind(c.created_at)
        .bind(c.updated_at);
        // A human decision cannot be derived again: commit it synced.
        if c.method == Some(Method::Manual) {
            q.execute(&self.pool).await.map_err(map_err)?;
        } else {
            q.execute(&mut *self.derived_conn().await?)
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn merge_conversion(&self, from_id: &str, into_id: &str) -> StoreResult<()> {
        if from_id == into_id {
            return Err(StoreError::Conflict(
                "a conversion cannot be merged into itself".into(),
            ));
        }
        let done =
            sqlx::query("UPDATE conversions SET merged_into = ?, updated_at = ? WHERE id = ?")
                .bind(into_id)
                .bind(now_millis())
                .bind(from_id)
                .execute(&mut *self.derived_conn().await?)
                .await
                .map_err(map_err)?;
        not_found_unless_one(done.rows_affected())
    }

    async fn rekey_conversion(&self, id: &str, purchase_key: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE conversions SET purchase_key = ?, updated_at = ? \
             WHERE id = ? AND merged_into IS NULL",
        )
        .bind(purchase_key)
        .bind(now_millis())
        .bind(id)
        .execute(&mut *self.derived_conn().await?)
        .await
        .map_err(map_err)?;
        not_found_unless_one(done.rows_affected())
    }

    async fn list_conversions(&self, filter: &ConversionFilter) -> StoreResult<Vec<Conversion>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {CONVERSION_COLS} FROM conversions WHERE merged_into IS NULL"
        ));
        if let Some(c) = &filter.client_id {
            qb.push(" AND client_id = ").push_bind(c.as_str());
        }
        if let Some(l) = &filter.link_id {
            qb.push(" AND link_id = ").push_bind(l.as_str());
        }
        if filter.orphans_only {
            qb.push(" AND link_id IS NULL");
        }
        if filter.unverified_only {
            qb.push(" AND verified = 0");
        }
        if let Some(c) = &filter.customer {
            qb.push(" AND customer = ").push_bind(c.as_str());
        }
        if let Some(e) = &filter.email {
            qb.push(" AND lower(email) = lower(")
                .push_bind(e.as_str())
                .push(")");
        }
        if let Some(k) = &filter.purchase_key {
            qb.push(" AND purchase_key = ").push_bind(k.as_str());
        }
        if let Some(st) = filter.status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        if let Some(live) = filter.livemode {
            qb.push(" AND livemode = ").push_bind(live as i64);
        }
        if let Some(from) = filter.from {
            qb.push(" AND purchased_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            qb.push(" AND purchased_at < ").push_bind(to);
        }
        qb.push(" ORDER BY purchased_at DESC, id DESC LIMIT ")
            .push_bind(limit_or_all(filter.limit));
        qb.build()
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)?
            .iter()
            .map(conversion_from_row)
            .collect()
    }

    async fn customer_history(
        &self,
        client_id: &str,
        customer: Option<&str>,
        email: Option<&str>,
        before: Millis,
        exclude_id: &str,
    ) -> StoreResult<Option<Conversion>> {
        if let Some(customer) = customer {
            let found = self
                .history_candidate(client_id, exclude_id, before, "customer = ?", customer)
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        if let Some(email) = email {
            return self
                .history_candidate(
                    client_id,
                    exclude_id,
                    before,
                    "lower(email) = lower(?)",
                    email,
                )
                .await;
        }
        Ok(None)
    }

    async fn orphan_ids(&self, client_id: Option<&str>, limit: i64) -> StoreResult<Vec<String>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id FROM conversions WHERE merged_into IS NULL AND link_id IS NULL",
        );
        if let Some(c) = client_id {
            qb.push(" AND client_id = ").push_bind(c);
        }
        qb.push(" ORDER BY purchased_at, id LIMIT ")
            .push_bind(limit_or_all(limit));
        qb.build_query_scalar()
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(map_err)
    }

    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()> {
        let q = sqlx::query(
            "INSERT INTO attribution_history (conversion_id, at, actor, from_link_id, \
             to_link_id, from_method, to_method, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&entry.conversion_id)
        .bind(now_millis())
        .bind(&entry.actor)
        .bind(&entry.from_link_id)
        .bind(&entry.to_link_id)
        .bind(entry.from_method.map(|m| m.as_str()))
        .bind(entry.to_method.map(|m| m.as_str()))
        .bind(&entry.reason);
        // A human decision cannot be derived again: commit it synced.
        if entry.to_method == Some(Method::Manual) {
            q.execute(&self.pool).await.map_err(map_err)?;
        } else {
            q.execute(&mut *self.derived_conn().await?)
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>> {
        sqlx::query(
            "SELECT id, conversion_id, at, actor, from_link_id, to_link_id, from_method, \
             to_method, reason FROM attribution_history WHERE conversion_id = ? ORDER BY id",
        )
        .bind(conversion_id)
        .fetch_all(&mut *self.reader().await?)
        .await
        .map_err(map_err)?
        .iter()
        .map(history_from_row)
        .collect()
    }

    async fn get_history_entry(&self, id: i64) -> StoreResult<Option<HistoryEntry>> {
        sqlx::query(
            "SELECT id, conversion_id, at, actor, from_link_id, to_link_id, from_method, to_method, reason \
             FROM attribution_history WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(history_from_row)
        .transpose()
    }

    async fn client_activity(&self, now: Millis) -> StoreResult<Vec<ClientActivity>> {
        self.report_client_activity(now).await
    }

    async fn currency_totals(
        &self,
        client_id: Option<&str>,
        livemode: bool,
    ) -> StoreResult<Vec<CurrencyTotal>> {
        self.report_currency_totals(client_id, livemode).await
    }

    async fn daily_counts(
        &self,
        client_id: Option<&str>,
        from: Millis,
    ) -> StoreResult<Vec<DailyCount>> {
        self.report_daily_counts(client_id, from).await
    }

    async fn link_stats(&self, client_id: &str, livemode: bool) -> StoreResult<Vec<LinkStats>> {
        self.report_link_stats(client_id, livemode).await
    }

    async fn insert_session(&self, session: &AdminSession) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&session.id_hash)
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<AdminSession>> {
        let row = sqlx::query(
            "SELECT id_hash, csrf_token, created_at, expires_at FROM admin_sessions \
             WHERE id_hash = ? AND expires_at > ?",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&mut *self.reader().await?)
        .await
        .map_err(map_err)?;
        row.map(|r| {
            Ok(AdminSession {
                id_hash: get(&r, "id_hash")?,
                csrf_token: get(&r, "csrf_token")?,
                created_at: get(&r, "created_at")?,
                expires_at: get(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

mod reports;
#[cfg(test)]
mod tests;
mod writer;
