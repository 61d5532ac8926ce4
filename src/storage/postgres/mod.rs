//! PostgreSQL store: the `Store` trait on sqlx with runtime-checked queries,
//! for several instances sharing one database.
//!
//! Same semantics as `SqliteStore` (the contract tests in `storage/contract.rs`
//! run on both); the SQL differs where the dialects do: BIGINT millis,
//! BOOLEAN flags, BYTEA bodies, `ON CONFLICT`, `to_char` day buckets, and
//! advisory locks that let instances take turns (`lock.rs`).
//!
//! Split by area: `catalog.rs` (settings, clients, links, clicks),
//! `events.rs` (webhook events, sale facts, aliases), `conversions.rs`
//! (conversions, history, admin sessions), `reports.rs`, `rows.rs` (row
//! decoding), `scratch.rs` (throw-away databases for tests).

mod catalog;
mod conversions;
mod events;
mod lock;
mod reports;
mod rows;
pub mod scratch;
#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{redact_url, DbOptions, Store, StoreError, StoreLock, StoreResult};
use crate::domain::model::*;
use crate::domain::report::*;

pub struct PgStore {
    pool: PgPool,
    locks: lock::LocalLocks,
}

/// The one place a sqlx error becomes a `StoreError`.
///
/// Unique and foreign-key violations are conflicts; data the server calls
/// corrupt, or rows we cannot decode, are `Corrupt`; everything else the
/// server or the network reports (connection lost or refused, shutting down,
/// statement timeout, pool exhausted, too many connections, ...) means the
/// store cannot serve right now: `Unavailable`, which the webhook answers
/// with 503 so that Stripe retries.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            return StoreError::Conflict(db.message().to_string());
        }
        if db.is_foreign_key_violation() {
            return StoreError::Conflict(format!("missing referenced row: {}", db.message()));
        }
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        return match code.as_str() {
            // data_corrupted, index_corrupted
            "XX001" | "XX002" => StoreError::Corrupt(db.message().to_string()),
            _ => StoreError::Unavailable(format!("{} ({code})", db.message())),
        };
    }
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
        // pool timed out or closed, I/O, TLS, protocol, and anything else
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(crate) fn not_found_unless_one(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// `LIMIT NULL` is no limit in PostgreSQL.
pub(crate) fn limit_or_all(limit: i64) -> Option<i64> {
    (limit > 0).then_some(limit)
}

pub(crate) fn limit_or(limit: i64, default: i64) -> i64 {
    if limit <= 0 {
        default
    } else {
        limit
    }
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names (it must exist).
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str, options: &DbOptions) -> StoreResult<Self> {
        // 0 turns the timeout off; a shorter one must not round down to it.
        let statement_timeout_ms = if options.statement_timeout.is_zero() {
            0
        } else {
            options.statement_timeout.as_millis().max(1)
        }
        .to_string();
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::UnsupportedUrl(format!("{}: {e}", redact_url(url))))?
            .application_name("salestrack")
            .options([("statement_timeout", statement_timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(DbOptions::MIN_POOL_SIZE))
            .min_connections(0)
            // Waiting for a connection includes opening one: while the
            // server is down, requests fail after this instead of hanging.
            .acquire_timeout(options.connect_timeout)
            // A connection that died with a server restart is found out
            // (and replaced) before it is handed to a query.
            .test_before_acquire(true)
            .connect_with(connect)
            .await
            .map_err(map_err)?;
        Ok(Self {
            pool,
            locks: lock::LocalLocks::default(),
        })
    }

    /// Applies the migrations in `migrations/postgres`. Safe to run from
    /// several instances at once: sqlx takes an advisory lock around it.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn ping_write(&self) -> StoreResult<()> {
        // One statement is one transaction: a read-only server (a standby,
        // `default_transaction_read_only`) or a full disk fails it.
        catalog::set_setting(
            &self.pool,
            super::READY_PROBE_KEY,
            &now_millis().to_string(),
        )
        .await
    }

    async fn lock_purchases(&self, client_ids: &[&str]) -> StoreResult<StoreLock> {
        lock::lock_purchases(&self.pool, &self.locks, client_ids).await
    }

    async fn try_lock_job(&self, job: &str) -> StoreResult<Option<StoreLock>> {
        lock::try_lock_job(&self.pool, &self.locks, job).await
    }

    // ---- settings -----------------------------------------------------------

    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        catalog::get_setting(&self.pool, key).await
    }

    async fn init_setting(&self, key: &str, value: &str) -> StoreResult<String> {
        catalog::init_setting(&self.pool, key, value).await
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        catalog::set_setting(&self.pool, key, value).await
    }

    // ---- clients ------------------------------------------------------------

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        catalog::insert_client(&self.pool, client).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        catalog::list_clients(&self.pool).await
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        catalog::get_client(&self.pool, id).await
    }

    async fn find_client_by_name(&self, name: &str) -> StoreResult<Option<Client>> {
        catalog::find_client_by_name(&self.pool, name).await
    }

    async fn update_client_settings(
        &self,
        id: &str,
        settings: &AttributionSettings,
    ) -> StoreResult<()> {
        catalog::update_client_settings(&self.pool, id, settings).await
    }

    async fn add_webhook_secret(&self, client_id: &str, secret: &WebhookSecret) -> StoreResult<()> {
        catalog::add_webhook_secret(&self.pool, client_id, secret).await
    }

    async fn list_client_secrets(&self) -> StoreResult<Arc<[ClientSecrets]>> {
        catalog::list_client_secrets(&self.pool)
            .await
            .map(Arc::from)
    }

    // ---- links --------------------------------------------------------------

    async fn insert_link(&self, link: &Link) -> StoreResult<()> {
        catalog::insert_link(&self.pool, link).await
    }

    async fn list_links(&self, client_id: Option<&str>) -> StoreResult<Vec<Link>> {
        match client_id {
            Some(c) => catalog::load_links(&self.pool, "l.client_id = $1", &[c]).await,
            None => catalog::load_links(&self.pool, "TRUE", &[]).await,
        }
    }

    async fn get_link(&self, id: &str) -> StoreResult<Option<Link>> {
        Ok(catalog::load_links(&self.pool, "l.id = $1", &[id])
            .await?
            .into_iter()
            .next())
    }

    async fn find_links_by_slug(&self, slug: &str) -> StoreResult<Vec<Link>> {
        catalog::load_links(&self.pool, "l.slug = $1", &[slug]).await
    }

    async fn find_link(&self, client_id: &str, slug: &str) -> StoreResult<Option<Link>> {
        Ok(catalog::load_links(
            &self.pool,
            "l.client_id = $1 AND l.slug = $2",
            &[client_id, slug],
        )
        .await?
        .into_iter()
        .next())
    }

    async fn find_link_by_promo_code(
        &self,
        client_id: &str,
        code: &str,
    ) -> StoreResult<Option<Link>> {
        Ok(catalog::load_links(
            &self.pool,
            "l.id = (SELECT pc.link_id FROM link_promo_codes pc \
             WHERE pc.client_id = $1 AND lower(pc.code) = lower($2) \
             ORDER BY pc.rowid LIMIT 1)",
            &[client_id, code],
        )
        .await?
        .into_iter()
        .next())
    }

    // ---- clicks -------------------------------------------------------------

    async fn insert_click(&self, click: &Click) -> StoreResult<()> {
        catalog::insert_click(&self.pool, click).await
    }

    async fn get_click(&self, client_id: &str, click_id: &str) -> StoreResult<Option<Click>> {
        catalog::get_click(&self.pool, client_id, click_id).await
    }

    async fn latest_click(
        &self,
        client_id: &str,
        from: Option<Millis>,
        to: Millis,
    ) -> StoreResult<Option<Click>> {
        catalog::latest_click(&self.pool, client_id, from, to).await
    }

    async fn recent_clicks_for_link(&self, link_id: &str, limit: i64) -> StoreResult<Vec<Click>> {
        catalog::recent_clicks_for_link(&self.pool, link_id, limit).await
    }

    async fn count_clicks(&self, client_id: Option<&str>) -> StoreResult<i64> {
        catalog::count_clicks(&self.pool, client_id).await
    }

    // ---- webhook events -----------------------------------------------------

    async fn insert_event(&self, event: &NewEvent) -> StoreResult<InsertEvent> {
        events::insert_event(&self.pool, event).await
    }

    async fn get_event(&self, id: i64) -> StoreResult<Option<StoredEvent>> {
        events::get_event(&self.pool, id).await
    }

    async fn find_event_by_dedup_key(&self, dedup_key: &str) -> StoreResult<Option<StoredEvent>> {
        events::event_by_dedup_key(&self.pool, dedup_key).await
    }

    async fn record_delivery(&self, id: i64) -> StoreResult<()> {
        events::record_delivery(&self.pool, id).await
    }

    async fn mark_event_verified(
        &self,
        id: i64,
        client_id: &str,
        client_method: ClientMethod,
        headers: Option<&str>,
        body: Option<&[u8]>,
    ) -> StoreResult<bool> {
        events::mark_event_verified(&self.pool, id, client_id, client_method, headers, body).await
    }

    async fn set_event_unverified_reason(
        &self,
        id: i64,
        reason: UnverifiedReason,
    ) -> StoreResult<()> {
        events::set_event_unverified_reason(&self.pool, id, reason).await
    }

    async fn set_event_processing(
        &self,
        id: i64,
        client: Option<(&str, ClientMethod)>,
        processing: Processing,
        error: Option<&str>,
    ) -> StoreResult<()> {
        events::set_event_processing(&self.pool, id, client, processing, error).await
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>> {
        events::list_events(&self.pool, filter).await
    }

    async fn events_to_retry(
        &self,
        max_attempts: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        events::events_to_retry(&self.pool, max_attempts, limit).await
    }

    // ---- sale facts and purchase keys ---------------------------------------

    async fn upsert_fact(&self, fact: &SaleFact) -> StoreResult<()> {
        events::upsert_fact(&self.pool, fact).await
    }

    async fn facts_for_purchase(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Vec<SaleFact>> {
        events::facts_for_purchase(&self.pool, client_id, purchase_key).await
    }

    async fn resolve_alias(&self, client_id: &str, alias: &str) -> StoreResult<Option<String>> {
        events::resolve_alias(&self.pool, client_id, alias).await
    }

    async fn set_alias(&self, client_id: &str, alias: &str, purchase_key: &str) -> StoreResult<()> {
        events::set_alias(&self.pool, client_id, alias, purchase_key).await
    }

    // ---- conversions ----------------------------------------------------------

    async fn get_conversion(&self, id: &str) -> StoreResult<Option<Conversion>> {
        conversions::get_conversion(&self.pool, id).await
    }

    async fn get_conversion_by_key(
        &self,
        client_id: &str,
        purchase_key: &str,
    ) -> StoreResult<Option<Conversion>> {
        conversions::get_conversion_by_key(&self.pool, client_id, purchase_key).await
    }

    async fn save_conversion(&self, conversion: &Conversion) -> StoreResult<()> {
        conversions::save_conversion(&self.pool, conversion).await
    }

    async fn merge_conversion(&self, from_id: &str, into_id: &str) -> StoreResult<()> {
        conversions::merge_conversion(&self.pool, from_id, into_id).await
    }

    async fn rekey_conversion(&self, id: &str, purchase_key: &str) -> StoreResult<()> {
        conversions::rekey_conversion(&self.pool, id, purchase_key).await
    }

    async fn list_conversions(&self, filter: &ConversionFilter) -> StoreResult<Vec<Conversion>> {
        conversions::list_conversions(&self.pool, filter).await
    }

    async fn customer_history(
        &self,
        client_id: &str,
        customer: Option<&str>,
        email: Option<&str>,
        before: Millis,
        exclude_id: &str,
    ) -> StoreResult<Option<Conversion>> {
        conversions::customer_history(&self.pool, client_id, customer, email, before, exclude_id)
            .await
    }

    async fn orphan_ids(&self, client_id: Option<&str>, limit: i64) -> StoreResult<Vec<String>> {
        conversions::orphan_ids(&self.pool, client_id, limit).await
    }

    async fn add_history(&self, entry: &NewHistoryEntry) -> StoreResult<()> {
        conversions::add_history(&self.pool, entry).await
    }

    async fn list_history(&self, conversion_id: &str) -> StoreResult<Vec<HistoryEntry>> {
        conversions::list_history(&self.pool, conversion_id).await
    }

    async fn get_history_entry(&self, id: i64) -> StoreResult<Option<HistoryEntry>> {
        conversions::get_history_entry(&self.pool, id).await
    }

    // ---- reports ------------------------------------------------------------

    async fn client_activity(&self, now: Millis) -> StoreResult<Vec<ClientActivity>> {
        reports::client_activity(&self.pool, now).await
    }

    async fn currency_totals(
        &self,
        client_id: Option<&str>,
        livemode: bool,
    ) -> StoreResult<Vec<CurrencyTotal>> {
        reports::currency_totals(&self.pool, client_id, livemode).await
    }

    async fn daily_counts(
        &self,
        client_id: Option<&str>,
        from: Millis,
    ) -> StoreResult<Vec<DailyCount>> {
        reports::daily_counts(&self.pool, client_id, from).await
    }

    async fn link_stats(&self, client_id: &str, livemode: bool) -> StoreResult<Vec<LinkStats>> {
        reports::link_stats(&self.pool, client_id, livemode).await
    }

    // ---- admin sessions -----------------------------------------------------

    async fn insert_session(&self, session: &AdminSession) -> StoreResult<()> {
        catalog::insert_session(&self.pool, session).await
    }

    async fn get_session(&self, id_hash: &str, now: Millis) -> StoreResult<Option<AdminSession>> {
        catalog::get_session(&self.pool, id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        catalog::delete_session(&self.pool, id_hash).await
    }
}
