//! SQLite store: the `Store` trait on sqlx with runtime-checked queries.
//!
//! WAL journal, `synchronous=FULL` (a returned commit is on disk),
//! `busy_timeout`, foreign keys on. Booleans are INTEGER 0/1, times integer
//! epoch milliseconds, enums their `as_str()` text, JSON values TEXT.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{redact_url, Store, StoreError, StoreResult};
use crate::domain::model::*;

pub struct SqliteStore {
    pool: SqlitePool,
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
            SqlitePoolOptions::new().max_connections(8)
        };
        let pool = pool_options.connect_with(options).await.map_err(map_err)?;
        Ok(Self { pool })
    }

    /// Applies the migrations in `migrations/sqlite`.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Links matching `where_sql` (over `links l`, `?` bound to `args` in
    /// order), each with its promotion codes, read from one snapshot.
    async fn load_links(&self, where_sql: &str, args: &[&str]) -> StoreResult<Vec<Link>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;

        let sql = format!(
            "SELECT {LINK_COLS} FROM links l WHERE {where_sql} ORDER BY l.created_at, l.rowid"
        );
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(map_err)?;
        let mut links = rows
            .iter()
            .map(link_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if links.is_empty() {
            tx.commit().await.map_err(map_err)?;
            return Ok(links);
        }

        let sql = format!(
            "SELECT p.link_id, p.code FROM link_promo_codes p JOIN links l ON l.id = p.link_id \
             WHERE {where_sql} ORDER BY p.rowid"
        );
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;

        let mut codes: HashMap<String, Vec<String>> = HashMap::new();
        for row in &rows {
            let link_id: String = get(row, "link_id")?;
            let code: String = get(row, "code")?;
            codes.entry(link_id).or_default().push(code);
        }
        for link in &mut links {
            if let Some(c) = codes.remove(&link.id) {
                link.promo_codes = c;
            }
        }
        Ok(links)
    }

    async fn load_event_by_dedup_key(&self, key: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE dedup_key = ?");
        sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
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
               AND link_id IS NOT NULL AND purchased_at <= ? AND {condition} \
             ORDER BY purchased_at DESC, id DESC LIMIT 1"
        );
        sqlx::query(&sql)
            .bind(client_id)
            .bind(exclude_id)
            .bind(before)
            .bind(value)
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
            .fetch_one(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(client_from_row)
            .collect()
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE c.id = ?");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE c.name = ?");
        sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(client_from_row)
            .transpose()
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
            .fetch_all(&self.pool)
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
            .fetch_optional(&self.pool)
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
        q.fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
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
                .fetch_one(&self.pool)
                .await
                .map_err(map_err),
            None => sqlx::query_scalar("SELECT COUNT(*) FROM clicks")
                .fetch_one(&self.pool)
                .await
                .map_err(map_err),
        }
    }

    // ---- webhook events -----------------------------------------------------

    #[tracing::instrument(skip_all)]
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent> {
        let id: Option<i64> = sqlx::query_scalar(
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
        .map_err(map_err)?;
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
            .fetch_optional(&self.pool)
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
                .execute(&self.pool)
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
        .execute(&self.pool)
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
        .execute(&self.pool)
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
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
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
        .execute(&self.pool)
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
            .fetch_all(&self.pool)
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
        .fetch_optional(&self.pool)
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
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
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
        sqlx::query(
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
        .bind(c.updated_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
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
                .execute(&self.pool)
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
        .execute(&self.pool)
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
        qb.push(" ORDER BY purchased_at DESC, id DESC LIMIT ")
            .push_bind(limit_or_all(filter.limit));
        qb.build()
            .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()> {
        sqlx::query(
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
        .bind(&entry.reason)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>> {
        sqlx::query(
            "SELECT id, conversion_id, at, actor, from_link_id, to_link_id, from_method, \
             to_method, reason FROM attribution_history WHERE conversion_id = ? ORDER BY id",
        )
        .bind(conversion_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(history_from_row)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::event::{Hints, PaymentFacts, PaymentSource};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    fn client(id: &str, name: &str, created_at: Millis) -> Client {
        Client {
            id: id.into(),
            name: name.into(),
            domain: Some(format!("{name}.example")),
            stripe_account: None,
            stripe_api_key: Some("rk_test_x".into()),
            settings: AttributionSettings::default(),
            created_at,
        }
    }

    fn link(id: &str, client_id: &str, slug: &str, codes: &[&str], created_at: Millis) -> Link {
        Link {
            id: id.into(),
            client_id: client_id.into(),
            slug: slug.into(),
            destination: "https://example.com/".into(),
            label: None,
            promo_codes: codes.iter().map(|c| c.to_string()).collect(),
            created_at,
        }
    }

    fn click(id: &str, client_id: &str, at: Millis, bot: bool) -> Click {
        Click {
            id: id.into(),
            link_id: "l1".into(),
            client_id: client_id.into(),
            at,
            visitor_id: None,
            referrer: None,
            landing_url: None,
            user_agent: Some("ua".into()),
            ip_hash: None,
            bot,
        }
    }

    fn event(dedup_key: Option<&str>, body: &str) -> NewEvent {
        NewEvent {
            dedup_key: dedup_key.map(Into::into),
            stripe_event_id: Some("evt_1".into()),
            event_type: Some("invoice.paid".into()),
            account: None,
            livemode: Some(false),
            api_version: None,
            endpoint: "/webhook".into(),
            endpoint_client_id: None,
            source: EventSource::Push,
            received_at: 1_000,
            headers: "{}".into(),
            body: body.as_bytes().to_vec(),
            verification: Verification::Unverified,
            verification_reason: Some(UnverifiedReason::NoSecret),
            client_id: None,
            client_method: None,
            processing: Processing::Pending,
        }
    }

    async fn insert(store: &SqliteStore, e: &NewEvent) -> i64 {
        match store.insert_event(e).await.unwrap() {
            InsertEvent::Inserted(id) => id,
            InsertEvent::Duplicate(d) => panic!("unexpected duplicate {}", d.id),
        }
    }

    fn fact(event_id: i64, client_id: &str, key: &str) -> SaleFact {
        SaleFact {
            event_id,
            client_id: client_id.into(),
            purchase_key: key.into(),
            verified: true,
            livemode: false,
            client_method: ClientMethod::WebhookSecret,
            body: FactBody::Payment(PaymentFacts {
                source: PaymentSource::Invoice,
                object_id: key.into(),
                counts: true,
                invoice: Some(key.into()),
                payment_intent: None,
                charge: None,
                checkout_session: None,
                subscription: None,
                customer: Some("cus_1".into()),
                email: None,
                amount: 1000,
                currency: "usd".into(),
                purchased_at: 1,
                billing_reason: None,
                hints: Hints::default(),
            }),
        }
    }

    fn conversion(id: &str, client_id: &str, key: &str, purchased_at: Millis) -> Conversion {
        Conversion {
            id: id.into(),
            client_id: client_id.into(),
            purchase_key: key.into(),
            link_id: Some("l1".into()),
            click_id: None,
            customer: None,
            email: None,
            subscription: None,
            amount: 1000,
            currency: "usd".into(),
            net_amount: 1000,
            purchased_at,
            kind: ConversionKind::New,
            livemode: false,
            verified: true,
            status: ConversionStatus::Paid,
            method: Some(Method::ClickId),
            client_method: ClientMethod::WebhookSecret,
            trace: vec![TraceStep {
                step: "click_id".into(),
                outcome: StepOutcome::Matched,
                detail: "c1".into(),
            }],
            created_at: purchased_at,
            updated_at: purchased_at,
        }
    }

    #[tokio::test]
    async fn settings_init_and_set() {
        let (_d, s) = store().await;
        s.ping().await.unwrap();
        assert_eq!(s.get_setting("k").await.unwrap(), None);
        assert_eq!(s.init_setting("k", "a").await.unwrap(), "a");
        assert_eq!(s.init_setting("k", "b").await.unwrap(), "a");
        s.set_setting("k", "c").await.unwrap();
        assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn clients_order_and_name_conflict() {
        let (_d, s) = store().await;
        s.insert_client(&client("c2", "beta", 10)).await.unwrap();
        s.insert_client(&client("c1", "alpha", 5)).await.unwrap();
        s.insert_client(&client("c3", "gamma", 10)).await.unwrap();
        let ids: Vec<_> = s
            .list_clients()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c1", "c2", "c3"]);

        let err = s
            .insert_client(&client("c4", "beta", 20))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

        assert_eq!(
            s.get_client("c1").await.unwrap(),
            Some(client("c1", "alpha", 5))
        );
        assert_eq!(
            s.find_client_by_name("gamma").await.unwrap().unwrap().id,
            "c3"
        );
        assert!(s.find_client_by_name("nope").await.unwrap().is_none());

        let settings = AttributionSettings {
            window_primary_days: 7,
            window_fallback_days: 14,
            any_time_fallback: false,
        };
        s.update_client_settings("c1", &settings).await.unwrap();
        assert_eq!(
            s.get_client("c1").await.unwrap().unwrap().settings,
            settings
        );
        assert!(matches!(
            s.update_client_settings("zz", &settings).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn webhook_secrets() {
        let (_d, s) = store().await;
        s.insert_client(&client("c1", "alpha", 1)).await.unwrap();
        s.insert_client(&client("c2", "beta", 2)).await.unwrap();
        s.add_webhook_secret("c2", &WebhookSecret::new("whsec_a"))
            .await
            .unwrap();
        s.add_webhook_secret("c2", &WebhookSecret::new("whsec_a"))
            .await
            .unwrap();
        s.add_webhook_secret("c2", &WebhookSecret::new("whsec_b"))
            .await
            .unwrap();
        let all = s.list_client_secrets().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].client.id, "c1");
        assert!(all[0].secrets.is_empty());
        assert_eq!(all[1].client.id, "c2");
        assert_eq!(
            all[1].secrets,
            [WebhookSecret::new("whsec_a"), WebhookSecret::new("whsec_b")]
        );
        // A secret of a client that does not exist is refused.
        assert!(s
            .add_webhook_secret("zz", &WebhookSecret::new("whsec_c"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn links_and_promo_codes() {
        let (_d, s) = store().await;
        s.insert_client(&client("c1", "alpha", 1)).await.unwrap();
        s.insert_client(&client("c2", "beta", 2)).await.unwrap();
        let l1 = link("l1", "c1", "spring", &["SPRING10", "promo_123"], 1);
        let l2 = link("l2", "c2", "spring", &[], 2);
        let l3 = link("l3", "c1", "summer", &["SUMMER"], 3);
        s.insert_link(&l1).await.unwrap();
        s.insert_link(&l2).await.unwrap();
        s.insert_link(&l3).await.unwrap();

        let err = s
            .insert_link(&link("l4", "c1", "spring", &["X"], 4))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        // The failed insert left no promotion code behind.
        assert!(s
            .find_link_by_promo_code("c1", "x")
            .await
            .unwrap()
            .is_none());

        assert_eq!(s.get_link("l1").await.unwrap(), Some(l1.clone()));
        assert_eq!(
            s.list_links(None).await.unwrap(),
            [l1.clone(), l2.clone(), l3.clone()]
        );
        assert_eq!(
            s.list_links(Some("c1")).await.unwrap(),
            [l1.clone(), l3.clone()]
        );
        assert_eq!(
            s.find_links_by_slug("spring").await.unwrap(),
            [l1.clone(), l2.clone()]
        );
        assert_eq!(s.find_link("c2", "spring").await.unwrap(), Some(l2.clone()));
        assert!(s.find_link("c2", "summer").await.unwrap().is_none());

        assert_eq!(
            s.find_link_by_promo_code("c1", "spring10").await.unwrap(),
            Some(l1.clone())
        );
        assert_eq!(
            s.find_link_by_promo_code("c1", "promo_123").await.unwrap(),
            Some(l1.clone())
        );
        assert_eq!(
            s.find_link_by_promo_code("c1", "Summer").await.unwrap(),
            Some(l3)
        );
        assert!(s
            .find_link_by_promo_code("c2", "SPRING10")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn clicks_latest_respects_bounds_and_bots() {
        let (_d, s) = store().await;
        s.insert_click(&click("k1", "c1", 100, false))
            .await
            .unwrap();
        s.insert_click(&click("k2", "c1", 200, false))
            .await
            .unwrap();
        s.insert_click(&click("k3", "c1", 250, true)).await.unwrap();
        s.insert_click(&click("k4", "c2", 260, false))
            .await
            .unwrap();
        s.insert_click(&click("k5", "c1", 300, false))
            .await
            .unwrap();

        let id = |c: Option<Click>| c.map(|c| c.id);
        assert_eq!(
            id(s.latest_click("c1", None, 1000).await.unwrap()).as_deref(),
            Some("k5")
        );
        assert_eq!(
            id(s.latest_click("c1", None, 299).await.unwrap()).as_deref(),
            Some("k2")
        );
        assert_eq!(
            id(s.latest_click("c1", None, 200).await.unwrap()).as_deref(),
            Some("k2")
        );
        assert_eq!(
            id(s.latest_click("c1", Some(201), 299).await.unwrap()),
            None
        );
        assert_eq!(
            id(s.latest_click("c1", Some(100), 199).await.unwrap()).as_deref(),
            Some("k1")
        );
        assert_eq!(id(s.latest_click("c1", None, 99).await.unwrap()), None);
        assert_eq!(id(s.latest_click("c3", None, 1000).await.unwrap()), None);

        assert_eq!(
            s.get_click("c1", "k3").await.unwrap(),
            Some(click("k3", "c1", 250, true))
        );
        assert!(s.get_click("c2", "k3").await.unwrap().is_none());
        assert_eq!(s.count_clicks(None).await.unwrap(), 5);
        assert_eq!(s.count_clicks(Some("c1")).await.unwrap(), 4);
        let recent: Vec<_> = s
            .recent_clicks_for_link("l1", 2)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(recent, ["k5", "k4"]);
        let err = s
            .insert_click(&click("k1", "c1", 1, false))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

        // One index seek, no sort: cost does not grow with history.
        for lower in ["", " AND at >= 1"] {
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT {CLICK_COLS} FROM clicks \
                 WHERE client_id = 'c1' AND bot = 0 AND at <= 5{lower} \
                 ORDER BY at DESC LIMIT 1"
            );
            let plan: Vec<String> = sqlx::query(&sql)
                .fetch_all(s.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("USING INDEX clicks_client_bot_at"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[tokio::test]
    async fn events_insert_dedup_and_null_keys() {
        let (_d, s) = store().await;
        let first = insert(&s, &event(Some("acct:evt_1"), "{\"a\":1}")).await;
        let mut again = event(Some("acct:evt_1"), "{\"other\":true}");
        again.received_at = 2_000;
        match s.insert_event(&again).await.unwrap() {
            InsertEvent::Duplicate(stored) => {
                assert_eq!(stored.id, first);
                assert_eq!(stored.body, b"{\"a\":1}");
                assert_eq!(stored.received_at, 1_000);
                assert_eq!(stored.deliveries, 1);
            }
            InsertEvent::Inserted(id) => panic!("inserted twice as {id}"),
        }
        let a = insert(&s, &event(None, "garbage")).await;
        let b = insert(&s, &event(None, "garbage")).await;
        assert_ne!(a, b);

        s.record_delivery(first).await.unwrap();
        let stored = s.get_event(first).await.unwrap().unwrap();
        assert_eq!(stored.deliveries, 2);
        assert_eq!(stored.dedup_key.as_deref(), Some("acct:evt_1"));
        assert_eq!(stored.source, EventSource::Push);
        assert_eq!(stored.verification, Verification::Unverified);
        assert_eq!(stored.verification_reason, Some(UnverifiedReason::NoSecret));
        assert_eq!(stored.livemode, Some(false));
        assert_eq!(stored.processing, Processing::Pending);
        assert!(s.get_event(9_999).await.unwrap().is_none());
        assert!(matches!(
            s.record_delivery(9_999).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn events_verify_process_list_retry() {
        let (_d, s) = store().await;
        let e1 = insert(&s, &event(Some("k1"), "{\"id\":\"evt_1\"}")).await;
        let e2 = insert(
            &s,
            &event(Some("k2"), "{\"id\":\"evt_2\",\"x\":\"needle\"}"),
        )
        .await;
        let e3 = insert(&s, &event(Some("k3"), "{\"id\":\"evt_3\"}")).await;

        s.set_event_unverified_reason(e1, UnverifiedReason::Mismatch)
            .await
            .unwrap();
        assert_eq!(
            s.get_event(e1).await.unwrap().unwrap().verification_reason,
            Some(UnverifiedReason::Mismatch)
        );
        assert!(s
            .mark_event_verified(
                e1,
                "c1",
                ClientMethod::WebhookSecret,
                Some("{\"h\":1}"),
                Some(b"{\"id\":\"evt_1\",\"v\":2}")
            )
            .await
            .unwrap());
        assert!(!s
            .mark_event_verified(e1, "c2", ClientMethod::WebhookSecret, None, None)
            .await
            .unwrap());
        let v = s.get_event(e1).await.unwrap().unwrap();
        assert_eq!(v.verification, Verification::Verified);
        assert_eq!(v.verification_reason, None);
        assert_eq!(v.client_id.as_deref(), Some("c1"));
        assert_eq!(v.client_method, Some(ClientMethod::WebhookSecret));
        assert_eq!(v.headers, "{\"h\":1}");
        assert_eq!(v.body, b"{\"id\":\"evt_1\",\"v\":2}");
        // Verified events keep no unverified reason.
        s.set_event_unverified_reason(e1, UnverifiedReason::Stale)
            .await
            .unwrap();
        assert_eq!(
            s.get_event(e1).await.unwrap().unwrap().verification_reason,
            None
        );

        // Verification without new headers/body keeps the stored ones.
        assert!(s
            .mark_event_verified(e3, "c1", ClientMethod::Api, None, None)
            .await
            .unwrap());
        assert_eq!(
            s.get_event(e3).await.unwrap().unwrap().body,
            b"{\"id\":\"evt_3\"}"
        );

        s.set_event_processing(e1, None, Processing::Processed, None)
            .await
            .unwrap();
        s.set_event_processing(
            e2,
            Some(("c2", ClientMethod::StripeAccount)),
            Processing::Failed,
            Some("boom"),
        )
        .await
        .unwrap();
        let p2 = s.get_event(e2).await.unwrap().unwrap();
        assert_eq!(p2.processing, Processing::Failed);
        assert_eq!(p2.processing_error.as_deref(), Some("boom"));
        assert_eq!(p2.client_id.as_deref(), Some("c2"));
        assert_eq!(p2.client_method, Some(ClientMethod::StripeAccount));
        assert_eq!(p2.attempts, 1);
        let p1 = s.get_event(e1).await.unwrap().unwrap();
        assert_eq!(p1.client_id.as_deref(), Some("c1"));
        assert_eq!(p1.attempts, 1);

        let ids = |v: Vec<StoredEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.list_events(&EventFilter::default()).await.unwrap()),
            [e3, e2, e1]
        );
        let f = EventFilter {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(ids(s.list_events(&f).await.unwrap()), [e3, e2]);
        let f = EventFilter {
            body_contains: Some("needle".into()),
            ..Default::default()
        };
        assert_eq!(ids(s.list_events(&f).await.unwrap()), [e2]);
        let f = EventFilter {
            verification: Some(Verification::Verified),
            client_id: Some("c1".into()),
            ..Default::default()
        };
        assert_eq!(ids(s.list_events(&f).await.unwrap()), [e3, e1]);
        let f = EventFilter {
            verification: Some(Verification::Verified),
            processing: Some(Processing::Processed),
            ..Default::default()
        };
        assert_eq!(ids(s.list_events(&f).await.unwrap()), [e1]);

        // e2 failed once, e3 still pending.
        assert_eq!(ids(s.events_to_retry(3, 10).await.unwrap()), [e2, e3]);
        assert_eq!(ids(s.events_to_retry(1, 10).await.unwrap()), [e3]);
        s.set_event_processing(e3, None, Processing::NoClient, None)
            .await
            .unwrap();
        assert_eq!(ids(s.events_to_retry(1, 10).await.unwrap()), [e3]);
        assert_eq!(ids(s.events_to_retry(3, 1).await.unwrap()), [e2]);
    }

    #[tokio::test]
    async fn unknown_enum_text_is_corrupt() {
        let (_d, s) = store().await;
        let id = insert(&s, &event(Some("k"), "{}")).await;
        sqlx::query("UPDATE webhook_events SET processing = 'exploded' WHERE id = ?")
            .bind(id)
            .execute(s.pool())
            .await
            .unwrap();
        assert!(matches!(s.get_event(id).await, Err(StoreError::Corrupt(_))));
    }

    #[tokio::test]
    async fn alias_moves_facts_and_chained_aliases() {
        let (_d, s) = store().await;
        let e1 = insert(&s, &event(Some("k1"), "{}")).await;
        let e2 = insert(&s, &event(Some("k2"), "{}")).await;
        let e3 = insert(&s, &event(Some("k3"), "{}")).await;
        s.upsert_fact(&fact(e1, "c1", "ch_1")).await.unwrap();
        s.upsert_fact(&fact(e2, "c1", "pi_1")).await.unwrap();
        s.upsert_fact(&fact(e3, "c2", "pi_1")).await.unwrap();
        // Upsert replaces.
        let mut f1 = fact(e1, "c1", "ch_1");
        f1.verified = false;
        s.upsert_fact(&f1).await.unwrap();
        assert_eq!(
            s.facts_for_purchase("c1", "ch_1").await.unwrap(),
            [f1.clone()]
        );

        s.set_alias("c1", "ch_1", "pi_1").await.unwrap();
        assert_eq!(
            s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
            Some("pi_1")
        );
        assert!(s.facts_for_purchase("c1", "ch_1").await.unwrap().is_empty());
        let ids: Vec<_> = s
            .facts_for_purchase("c1", "pi_1")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.event_id)
            .collect();
        assert_eq!(ids, [e1, e2]);

        // pi_1 turns out to belong to an invoice: everything follows.
        s.set_alias("c1", "pi_1", "in_1").await.unwrap();
        assert_eq!(
            s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
            Some("in_1")
        );
        assert_eq!(
            s.resolve_alias("c1", "pi_1").await.unwrap().as_deref(),
            Some("in_1")
        );
        let facts = s.facts_for_purchase("c1", "in_1").await.unwrap();
        assert_eq!(facts.len(), 2);
        assert!(facts.iter().all(|f| f.purchase_key == "in_1"));
        // Other clients are untouched.
        assert_eq!(s.facts_for_purchase("c2", "pi_1").await.unwrap().len(), 1);
        assert!(s.resolve_alias("c2", "pi_1").await.unwrap().is_none());

        // Re-pointing an alias replaces it; a self-alias changes nothing.
        s.set_alias("c1", "ch_1", "in_2").await.unwrap();
        assert_eq!(
            s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
            Some("in_2")
        );
        s.set_alias("c1", "ch_1", "ch_1").await.unwrap();
        assert_eq!(
            s.resolve_alias("c1", "ch_1").await.unwrap().as_deref(),
            Some("in_2")
        );
    }

    #[tokio::test]
    async fn conversions_save_update_merge_conflict() {
        let (_d, s) = store().await;
        let mut a = conversion("cv1", "c1", "in_1", 100);
        s.save_conversion(&a).await.unwrap();
        assert_eq!(s.get_conversion("cv1").await.unwrap(), Some(a.clone()));

        a.link_id = None;
        a.method = None;
        a.status = ConversionStatus::PartiallyRefunded;
        a.net_amount = 400;
        a.trace.push(TraceStep {
            step: "refund".into(),
            outcome: StepOutcome::Skipped,
            detail: String::new(),
        });
        a.updated_at = 200;
        s.save_conversion(&a).await.unwrap();
        assert_eq!(
            s.get_conversion_by_key("c1", "in_1").await.unwrap(),
            Some(a.clone())
        );
        assert!(s
            .get_conversion_by_key("c2", "in_1")
            .await
            .unwrap()
            .is_none());

        // A second live conversion with the same key is a conflict.
        let b = conversion("cv2", "c1", "in_1", 150);
        let err = s.save_conversion(&b).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        // Another client may use the same key.
        s.save_conversion(&conversion("cv3", "c2", "in_1", 150))
            .await
            .unwrap();

        // Re-keying.
        let c = conversion("cv4", "c1", "pi_9", 120);
        s.save_conversion(&c).await.unwrap();
        let err = s.rekey_conversion("cv4", "in_1").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        s.rekey_conversion("cv4", "in_9").await.unwrap();
        assert_eq!(
            s.get_conversion_by_key("c1", "in_9")
                .await
                .unwrap()
                .unwrap()
                .id,
            "cv4"
        );
        assert!(s
            .get_conversion_by_key("c1", "pi_9")
            .await
            .unwrap()
            .is_none());

        // Merge cv1 into cv4: cv1 leaves every list, stays readable by id.
        s.merge_conversion("cv1", "cv4").await.unwrap();
        assert!(s
            .get_conversion_by_key("c1", "in_1")
            .await
            .unwrap()
            .is_none());
        assert_eq!(s.get_conversion("cv1").await.unwrap().unwrap().id, "cv1");
        let listed: Vec<_> = s
            .list_conversions(&ConversionFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, ["cv3", "cv4"]);
        assert!(s.orphan_ids(None, 0).await.unwrap().is_empty());
        assert!(matches!(
            s.rekey_conversion("cv1", "in_x").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.merge_conversion("zz", "cv4").await,
            Err(StoreError::NotFound)
        ));

        // The key is free again for a live conversion.
        s.save_conversion(&b).await.unwrap();
        assert_eq!(
            s.get_conversion_by_key("c1", "in_1").await.unwrap(),
            Some(b.clone())
        );
    }

    #[tokio::test]
    async fn conversions_list_filters() {
        let (_d, s) = store().await;
        let mut a = conversion("a", "c1", "k1", 100);
        a.customer = Some("cus_1".into());
        a.email = Some("Ann@Example.com".into());
        let mut b = conversion("b", "c1", "k2", 300);
        b.link_id = None;
        b.verified = false;
        let mut c = conversion("c", "c1", "k3", 300);
        c.link_id = Some("l2".into());
        let d = conversion("d", "c2", "k1", 200);
        for x in [&a, &b, &c, &d] {
            s.save_conversion(x).await.unwrap();
        }
        let ids = |v: Vec<Conversion>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        let all = s
            .list_conversions(&ConversionFilter::default())
            .await
            .unwrap();
        assert_eq!(ids(all), ["c", "b", "d", "a"]);
        let f = |f: ConversionFilter| {
            let s = &s;
            async move { ids(s.list_conversions(&f).await.unwrap()) }
        };
        assert_eq!(
            f(ConversionFilter {
                client_id: Some("c1".into()),
                limit: 2,
                ..Default::default()
            })
            .await,
            ["c", "b"]
        );
        assert_eq!(
            f(ConversionFilter {
                link_id: Some("l1".into()),
                ..Default::default()
            })
            .await,
            ["d", "a"]
        );
        assert_eq!(
            f(ConversionFilter {
                orphans_only: true,
                ..Default::default()
            })
            .await,
            ["b"]
        );
        assert_eq!(
            f(ConversionFilter {
                unverified_only: true,
                client_id: Some("c2".into()),
                ..Default::default()
            })
            .await,
            Vec::<String>::new()
        );
        assert_eq!(
            f(ConversionFilter {
                customer: Some("cus_1".into()),
                ..Default::default()
            })
            .await,
            ["a"]
        );
        assert_eq!(
            f(ConversionFilter {
                email: Some("ann@example.COM".into()),
                ..Default::default()
            })
            .await,
            ["a"]
        );
        assert_eq!(
            f(ConversionFilter {
                purchase_key: Some("k1".into()),
                client_id: Some("c2".into()),
                ..Default::default()
            })
            .await,
            ["d"]
        );
    }

    #[tokio::test]
    async fn customer_history_by_customer_then_email() {
        let (_d, s) = store().await;
        let mk = |id: &str, at: Millis, customer: Option<&str>, email: Option<&str>| {
            let mut c = conversion(id, "c1", &format!("key_{id}"), at);
            c.customer = customer.map(Into::into);
            c.email = email.map(Into::into);
            c
        };
        let old_cus = mk("h1", 100, Some("cus_1"), None);
        let newer_cus = mk("h2", 200, Some("cus_1"), None);
        let by_mail = mk("h3", 300, Some("cus_other"), Some("Bob@Example.com"));
        let mut orphan = mk("h4", 150, Some("cus_1"), Some("bob@example.com"));
        orphan.link_id = None;
        let mut other_client = mk("h5", 160, Some("cus_1"), None);
        other_client.client_id = "c2".into();
        let current = mk("cur", 250, Some("cus_1"), Some("bob@example.com"));
        for c in [
            &old_cus,
            &newer_cus,
            &by_mail,
            &orphan,
            &other_client,
            &current,
        ] {
            s.save_conversion(c).await.unwrap();
        }
        let h = |customer: Option<&'static str>, email: Option<&'static str>, before: Millis| {
            let s = &s;
            async move {
                s.customer_history("c1", customer, email, before, "cur")
                    .await
                    .unwrap()
                    .map(|c| c.id)
            }
        };
        assert_eq!(h(Some("cus_1"), None, 1000).await.as_deref(), Some("h2"));
        assert_eq!(h(Some("cus_1"), None, 199).await.as_deref(), Some("h1"));
        assert_eq!(h(Some("cus_1"), None, 200).await.as_deref(), Some("h2"));
        assert_eq!(h(Some("cus_1"), None, 99).await, None);
        // Customer unknown: falls back to the email, case-insensitively.
        assert_eq!(
            h(Some("cus_new"), Some("BOB@example.com"), 1000)
                .await
                .as_deref(),
            Some("h3")
        );
        assert_eq!(
            h(None, Some("bob@example.com"), 1000).await.as_deref(),
            Some("h3")
        );
        assert_eq!(h(None, Some("bob@example.com"), 299).await, None);
        assert_eq!(h(None, None, 1000).await, None);
        // The excluded conversion itself never matches.
        assert_eq!(
            s.customer_history("c1", Some("cus_1"), None, 240, "h2")
                .await
                .unwrap()
                .map(|c| c.id)
                .as_deref(),
            Some("h1")
        );
        // Merged conversions are not history.
        s.merge_conversion("h2", "h1").await.unwrap();
        assert_eq!(h(Some("cus_1"), None, 1000).await.as_deref(), Some("h1"));
    }

    #[tokio::test]
    async fn orphans_oldest_first() {
        let (_d, s) = store().await;
        for (id, client, at, linked) in [
            ("o1", "c1", 300, false),
            ("o2", "c1", 100, false),
            ("o3", "c2", 200, false),
            ("x1", "c1", 50, true),
            ("o4", "c1", 400, false),
        ] {
            let mut c = conversion(id, client, &format!("k_{id}"), at);
            if !linked {
                c.link_id = None;
            }
            s.save_conversion(&c).await.unwrap();
        }
        s.merge_conversion("o4", "o1").await.unwrap();
        assert_eq!(s.orphan_ids(None, 0).await.unwrap(), ["o2", "o3", "o1"]);
        assert_eq!(s.orphan_ids(Some("c1"), 0).await.unwrap(), ["o2", "o1"]);
        assert_eq!(s.orphan_ids(None, 2).await.unwrap(), ["o2", "o3"]);
    }

    #[tokio::test]
    async fn history_add_and_list() {
        let (_d, s) = store().await;
        let entry = |conversion_id: &str, reason: &str| NewHistoryEntry {
            conversion_id: conversion_id.into(),
            actor: "system".into(),
            from_link_id: None,
            to_link_id: Some("l1".into()),
            from_method: None,
            to_method: Some(Method::ClickWindowPrimary),
            reason: reason.into(),
        };
        s.add_history(&entry("cv1", "first")).await.unwrap();
        s.add_history(&entry("cv2", "other")).await.unwrap();
        let mut manual = entry("cv1", "second");
        manual.actor = "admin".into();
        manual.from_link_id = Some("l1".into());
        manual.to_link_id = Some("l2".into());
        manual.from_method = Some(Method::ClickWindowPrimary);
        manual.to_method = Some(Method::Manual);
        s.add_history(&manual).await.unwrap();

        let h = s.list_history("cv1").await.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].reason, "first");
        assert_eq!(h[0].to_method, Some(Method::ClickWindowPrimary));
        assert_eq!(h[1].reason, "second");
        assert_eq!(h[1].actor, "admin");
        assert_eq!(h[1].from_link_id.as_deref(), Some("l1"));
        assert_eq!(h[1].from_method, Some(Method::ClickWindowPrimary));
        assert_eq!(h[1].to_method, Some(Method::Manual));
        assert!(h[0].id < h[1].id && h[1].at >= h[0].at && h[0].at > 0);
        assert!(s.list_history("nope").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_migrate_is_idempotent() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        {
            let s = SqliteStore::open(&url).await.unwrap();
            s.migrate().await.unwrap();
            s.set_setting("k", "v").await.unwrap();
            s.pool().close().await;
        }
        let s = SqliteStore::open(&url).await.unwrap();
        s.migrate().await.unwrap();
        assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[tokio::test]
    async fn in_memory_url_works() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        s.migrate().await.unwrap();
        s.set_setting("k", "v").await.unwrap();
        assert_eq!(s.get_setting("k").await.unwrap().as_deref(), Some("v"));
    }
}
