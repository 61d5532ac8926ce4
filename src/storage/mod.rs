//! Storage behind one interface: the `Store` trait, its error type, and
//! `connect(url)` that picks the backend from the URL's scheme.
//!
//! No SQL type leaves this module. The domain sees only `Store`.

#[cfg(test)]
mod contract;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;

use crate::domain::model::*;
use crate::domain::report::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store cannot be reached or cannot commit (disk full, locked, down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The settings row `Store::ping_write` rewrites (its value: when, in epoch
/// milliseconds).
pub const READY_PROBE_KEY: &str = "ready_probe";

/// A lock held in the store; released when dropped.
///
/// Backends that serve a single process (SQLite) hand out a no-op guard: the
/// domain's in-process mutex already serialises that process. PostgreSQL
/// holds a session advisory lock on a connection kept out of the pool until
/// the guard is dropped, so that several instances on one database take
/// turns.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct StoreLock {
    // A mutex only to make the guard `Sync` whatever it holds; never locked.
    _held: Option<std::sync::Mutex<Box<dyn Send>>>,
}

impl StoreLock {
    /// A guard that holds nothing.
    pub fn noop() -> Self {
        Self { _held: None }
    }

    /// A guard that releases the lock when `held` is dropped.
    pub fn holding(held: impl Send + 'static) -> Self {
        Self {
            _held: Some(std::sync::Mutex::new(Box::new(held))),
        }
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLock")
            .field("held", &self._held.is_some())
            .finish()
    }
}

/// How a unit of work (`Store::unit`) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitEnd {
    /// Commit; durable writes made in the unit are synced before `unit`
    /// returns.
    Commit,
    /// Commit, and leave the sync of the unit's durable writes to the
    /// caller, who calls `Store::sync` before it reports any of them as
    /// stored: so that it can let go of its locks first and the next unit
    /// runs while the disk syncs (group ingest, `domain/ingest.rs`).
    CommitUnsynced,
    Rollback,
}

/// Everything salestrack keeps. Implemented by `SqliteStore` and `PgStore`;
/// the same contract tests (`contract.rs`) run on both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Liveness of the store itself (`/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Whether the store can commit a write now (`/readyz`): writes one
    /// settings row (`READY_PROBE_KEY`) the way a delivery is written, so a
    /// full disk, a read-only file or database, or a write lock held by
    /// someone else fails it (or keeps it waiting: callers bound the wait).
    async fn ping_write(&self) -> StoreResult<()>;

    // ---- cross-instance coordination --------------------------------------
    /// Serialises the processing of these clients' purchases across every
    /// instance that shares this store: waits until no other holder has any
    /// of them (they are taken together, in one fixed order). Callers take
    /// the in-process `purchase_lock` first and hold at most one of these
    /// guards at a time, so that waits cannot form a cycle.
    async fn lock_purchases(&self, _client_ids: &[&str]) -> StoreResult<StoreLock> {
        Ok(StoreLock::noop())
    }

    /// A whole-run lock for a background job (`"sweep"`): `None` when another
    /// instance is running it right now (never waits for one). Within one
    /// instance a second taker waits for the first run to end.
    async fn try_lock_job(&self, _job: &str) -> StoreResult<Option<StoreLock>> {
        Ok(Some(StoreLock::noop()))
    }

    /// Runs `work` as one unit of work. On SQLite every store call this task
    /// makes while `work` runs goes to one held connection inside one
    /// transaction (a savepoint when units nest), committed or rolled back
    /// as `work` says, so that a batch of events costs one commit instead of
    /// one per write. The default (PostgreSQL, where several instances
    /// share the database) runs `work` as it is: each call commits on its
    /// own, which the domain tolerates because everything written here can
    /// be derived again. Work inside a unit must not wait for another task
    /// that uses the store.
    async fn unit<'a>(&'a self, work: BoxFuture<'a, UnitEnd>) -> StoreResult<()> {
        work.await;
        Ok(())
    }

    /// Returns once every write committed so far is on disk (after a unit
    /// that ended `CommitUnsynced`). PostgreSQL syncs each commit itself.
    async fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    // ---- settings -------------------------------------------------------
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Sets `key` only if it has no value yet; returns the value that is stored.
    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String>;
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    // ---- clients ----------------------------------------------------------
    /// `Conflict` when the name is taken.
    async fn insert_client(&self, client: &Client) -> StoreResult<()>;
    /// All clients, oldest first.
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>>;
    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>>;
    async fn update_client_settings(
        &self,
        id: &str,
        settings: &AttributionSettings,
    ) -> StoreResult<()>;
    /// Adds an active secret; adding one that exists is a no-op.
    async fn add_webhook_secret(&self, client_id: &str, secret: &WebhookSecret) -> StoreResult<()>;
    /// Every client with its active secrets, clients oldest first. A store
    /// may answer from a cache that lags a change made by another process
    /// by a moment (SQLite: up to 100 ms); `forget_cached_clients` ends that.
    async fn list_client_secrets(&self) -> StoreResult<Arc<[ClientSecrets]>>;
    /// Makes the next `list_client_secrets` read the database.
    fn forget_cached_clients(&self) {}

    // ---- links ------------------------------------------------------------
    /// `Conflict` when the client already has this slug.
    async fn insert_link(&self, link: &Link) -> StoreResult<()>;
    async fn list_links(&self, client_id: Option<&str>) -> StoreResult<Vec<Link>>;
    async fn get_link(&self, id: &str) -> StoreResult<Option<Link>>;
    /// Links with this slug across all clients, oldest first.
    async fn find_links_by_slug(&self, slug: &str) -> StoreResult<Vec<Link>>;
    async fn find_link(&self, client_id: &str, slug: &str) -> StoreResult<Option<Link>>;
    /// The link of this client that owns a promotion code id or code.
    async fn find_link_by_promo_code(
        &self,
        client_id: &str,
        code: &str,
    ) -> StoreResult<Option<Link>>;

    // ---- clicks -----------------------------------------------------------
    /// Durable before it returns.
    async fn insert_click(&self, click: &Click) -> StoreResult<()>;
    async fn get_click(&self, client_id: &str, click_id: &str) -> StoreResult<Option<Click>>;
    /// The most recent non-bot click of the client with `from <= at <= to`
    /// (`from = None`: no lower bound). Must not slow down with history size.
    async fn latest_click(
        &self,
        client_id: &str,
        from: Option<Millis>,
        to: Millis,
    ) -> StoreResult<Option<Click>>;
    async fn recent_clicks_for_link(&self, link_id: &str, limit: i64) -> StoreResult<Vec<Click>>;
    async fn count_clicks(&self, client_id: Option<&str>) -> StoreResult<i64>;

    // ---- webhook events ---------------------------------------------------
    /// Commits a delivery durably. A second delivery of the same
    /// `dedup_key` is not inserted: the stored one is returned.
    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent>;
    /// `insert_event` for each of `events`, in order, answered in order: one
    /// refused leaves the others to be stored (`insert_each`; once the store
    /// is unavailable the rest get that error without a try). Inside a unit
    /// on SQLite: in the unit's transaction, in as few statements as it can,
    /// synced with the unit (see `UnitEnd`).
    async fn insert_events(&self, events: &[NewEvent]) -> Vec<StoreResult<InsertEvent>> {
        insert_each(self, events).await
    }
    async fn get_event(&self, id: i64) -> StoreResult<Option<StoredEvent>>;
    /// The event stored under `dedup_key`, if any.
    async fn find_event_by_dedup_key(&self, dedup_key: &str) -> StoreResult<Option<StoredEvent>>;
    /// Counts another delivery of a stored event.
    async fn record_delivery(&self, id: i64) -> StoreResult<()>;
    /// Marks a stored event verified by `client_id`, with the headers and
    /// body of the delivery that verified. Returns false if it already was
    /// verified (someone else won the upgrade).
    async fn mark_event_verified(
        &self,
        id: i64,
        client_id: &str,
        client_method: ClientMethod,
        headers: Option<&str>,
        body: Option<&[u8]>,
    ) -> StoreResult<bool>;
    /// Records the verification reason of a still-unverified event.
    async fn set_event_unverified_reason(
        &self,
        id: i64,
        reason: UnverifiedReason,
    ) -> StoreResult<()>;
    /// Records what processing made of an event (and bumps its attempts).
    async fn set_event_processing(
        &self,
        id: i64,
        client: Option<(&str, ClientMethod)>,
        processing: Processing,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// Newest first.
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>>;
    /// Events that need another processing run: failed (fewer than
    /// `max_attempts` tries) or waiting for a client. Oldest first.
    async fn events_to_retry(&self, max_attempts: i64, limit: i64)
        -> StoreResult<Vec<StoredEvent>>;

    // ---- sale facts and purchase keys -------------------------------------
    /// Inserts or replaces the fact of `fact.event_id`.
    async fn upsert_fact(&self, fact: &SaleFact) -> StoreResult<()>;
    async fn facts_for_purchase(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Vec<SaleFact>>;
    /// The purchase key an object id (`pi_…`, `ch_…`, `cs_…`) belongs to.
    async fn resolve_alias(&self, client_id: &str, alias: &str) -> StoreResult<Option<String>>;
    /// Records `alias → purchase_key` and moves everything kept under
    /// `alias` (facts, aliases pointing at it) to `purchase_key`.
    async fn set_alias(&self, client_id: &str, alias: &str, purchase_key: &str) -> StoreResult<()>;

    // ---- conversions --------------------------------------------------------
    async fn get_conversion(&self, id: &str) -> StoreResult<Option<Conversion>>;
    async fn get_conversion_by_key(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Option<Conversion>>;
    /// Inserts or updates by `id`. `Conflict` if another live conversion
    /// holds the same `(client_id, purchase_key)`.
    async fn save_conversion(&self, conversion: &Conversion) -> StoreResult<()>;
    /// Keeps `from` but folds it into `into`: it leaves every list and total.
    async fn merge_conversion(&self, from_id: &str, into_id: &str) -> StoreResult<()>;
    /// Re-keys a live conversion.
    async fn rekey_conversion(&self, id: &str, purchase_key: &str) -> StoreResult<()>;
    /// Newest purchase first.
    async fn list_conversions(&self, filter: &ConversionFilter) -> StoreResult<Vec<Conversion>>;
    /// The most recent other live conversion of the client for this customer
    /// (or, failing that, this email) that has a link and is verified (a forged
    /// sale never lends its link), purchased at or before `before`.
    async fn customer_history(
        &self,
        client_id: &str,
        customer: Option<&str>,
        email: Option<&str>,
        before: Millis,
        exclude_id: &str,
    ) -> StoreResult<Option<Conversion>>;
    /// Ids of live orphans, oldest purchase first.
    async fn orphan_ids(&self, client_id: Option<&str>, limit: i64) -> StoreResult<Vec<String>>;
    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()>;
    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>>;
    async fn get_history_entry(&self, id: i64) -> StoreResult<Option<HistoryEntry>>;

    // ---- reports ------------------------------------------------------------
    /// One row per client (oldest client first), as of `now`.
    async fn client_activity(&self, now: Millis) -> StoreResult<Vec<ClientActivity>>;
    /// Verified live conversions (not merged, not trial starts) per currency.
    async fn currency_totals(
        &self,
        client_id: Option<&str>,
        livemode: bool,
    ) -> StoreResult<Vec<CurrencyTotal>>;
    /// Clicks (non-bot) and verified conversions per UTC day since `from`, oldest first;
    /// days with neither are left out.
    async fn daily_counts(
        &self,
        client_id: Option<&str>,
        from: Millis,
    ) -> StoreResult<Vec<DailyCount>>;
    /// Figures for every link of the client, in link creation order;
    /// conversions and revenue of one mode (live or test).
    async fn link_stats(&self, client_id: &str, livemode: bool) -> StoreResult<Vec<LinkStats>>;

    // ---- admin sessions -----------------------------------------------------
    async fn insert_session(&self, session: &AdminSession) -> StoreResult<()>;
    /// A session that has not expired at `now`.
    async fn get_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<AdminSession>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
}

pub type DynStore = Arc<dyn Store>;

/// How the store connects. Applies to PostgreSQL; SQLite keeps its own
/// settings (a local file: 8 connections, 10 s busy timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOptions {
    /// Most connections one instance opens.
    pub pool_size: u32,
    /// The server cancels a statement that runs longer (lock waits included).
    pub statement_timeout: Duration,
    /// How long to wait for a connection (opening one included) before the
    /// store answers `Unavailable`.
    pub connect_timeout: Duration,
}

impl DbOptions {
    /// The smallest pool that cannot starve itself: a job lock and a purchase
    /// lock each keep a connection, and queries need a third.
    pub const MIN_POOL_SIZE: u32 = 3;
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// True for the URL schemes `connect` opens with `PgStore`.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store a database URL names, creating the SQLite file if needed,
/// and runs migrations. Default connection options.
/// `insert_event` for each of `events`, one after another (of two with one
/// key, the first is inserted). Once the store is unavailable the rest are
/// not tried: each try would wait for the store again.
pub(crate) async fn insert_each<S: Store + ?Sized>(
    store: &S,
    events: &[NewEvent],
) -> Vec<StoreResult<InsertEvent>> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let row = match out.last() {
            Some(Err(down @ StoreError::Unavailable(_))) => Err(down.clone()),
            _ => store.insert_event(e).await,
        };
        out.push(row);
    }
    out
}

pub async fn connect(url: &str) -> StoreResult<DynStore> {
    connect_with(url, &DbOptions::default()).await
}

/// `connect` with explicit pool size and timeouts.
pub async fn connect_with(url: &str, options: &DbOptions) -> StoreResult<DynStore> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if is_postgres_url(url) {
        let store = postgres::PgStore::open(url, options).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// A database URL with its password masked, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
