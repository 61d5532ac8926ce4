//! The webhook event log, sale facts and purchase-key aliases.

use sqlx::postgres::{PgPool, Postgres};
use sqlx::QueryBuilder;

use super::rows::*;
use super::{limit_or, map_err, not_found_unless_one};
use crate::domain::model::*;
use crate::storage::{StoreError, StoreResult};

// ---- webhook events -----------------------------------------------------------

pub(super) async fn insert_event(pool: &PgPool, event: &NewEvent) -> StoreResult<InsertEvent> {
    // Autocommit: the id comes back only once the row is committed. Two
    // instances inserting the same key at once: the second waits for the
    // first's commit, then inserts nothing and reads the stored row.
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_events (dedup_key, stripe_event_id, event_type, account, \
         livemode, api_version, endpoint, endpoint_client_id, source, received_at, headers, \
         body, verification, verification_reason, client_id, client_method, processing) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
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
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    if let Some(id) = id {
        return Ok(InsertEvent::Inserted(id));
    }
    // Only a dedup_key conflict suppresses the insert; NULL never conflicts.
    let key = event.dedup_key.as_deref().ok_or_else(|| {
        StoreError::Unavailable("event insert returned no id without a dedup key".into())
    })?;
    let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE dedup_key = $1");
    let stored = sqlx::query(&sql)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(event_from_row)
        .transpose()?;
    match stored {
        Some(stored) => Ok(InsertEvent::Duplicate(Box::new(stored))),
        None => Err(StoreError::Unavailable(
            "duplicate event vanished before it could be read".into(),
        )),
    }
}

pub(super) async fn get_event(pool: &PgPool, id: i64) -> StoreResult<Option<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(event_from_row)
        .transpose()
}

pub(super) async fn event_by_dedup_key(
    pool: &PgPool,
    key: &str,
) -> StoreResult<Option<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE dedup_key = $1");
    sqlx::query(&sql)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(event_from_row)
        .transpose()
}

pub(super) async fn record_delivery(pool: &PgPool, id: i64) -> StoreResult<()> {
    let done = sqlx::query("UPDATE webhook_events SET deliveries = deliveries + 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(map_err)?;
    not_found_unless_one(done.rows_affected())
}

pub(super) async fn mark_event_verified(
    pool: &PgPool,
    id: i64,
    client_id: &str,
    client_method: ClientMethod,
    headers: Option<&str>,
    body: Option<&[u8]>,
) -> StoreResult<bool> {
    // The row lock of the UPDATE makes this a compare-and-set: of two
    // instances upgrading the same event, the second sees it verified.
    let done = sqlx::query(
        "UPDATE webhook_events SET verification = 'verified', verification_reason = NULL, \
         client_id = $1, client_method = $2, headers = COALESCE($3, headers), \
         body = COALESCE($4, body) WHERE id = $5 AND verification <> 'verified'",
    )
    .bind(client_id)
    .bind(client_method.as_str())
    .bind(headers)
    .bind(body)
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn set_event_unverified_reason(
    pool: &PgPool,
    id: i64,
    reason: UnverifiedReason,
) -> StoreResult<()> {
    // A concurrent upgrade to verified wins: then nothing changes.
    sqlx::query(
        "UPDATE webhook_events SET verification_reason = $1 \
         WHERE id = $2 AND verification <> 'verified'",
    )
    .bind(reason.as_str())
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn set_event_processing(
    pool: &PgPool,
    id: i64,
    client: Option<(&str, ClientMethod)>,
    processing: Processing,
    error: Option<&str>,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE webhook_events SET processing = $1, processing_error = $2, \
         client_id = COALESCE($3, client_id), client_method = COALESCE($4, client_method), \
         attempts = attempts + 1, processed_at = $5 WHERE id = $6",
    )
    .bind(processing.as_str())
    .bind(error)
    .bind(client.map(|(c, _)| c))
    .bind(client.map(|(_, m)| m.as_str()))
    .bind(now_millis())
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    not_found_unless_one(done.rows_affected())
}

pub(super) async fn list_events(
    pool: &PgPool,
    filter: &EventFilter,
) -> StoreResult<Vec<StoredEvent>> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {EVENT_COLS} FROM webhook_events WHERE TRUE"
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
        qb.push(" AND position(")
            .push_bind(s.as_bytes())
            .push(" IN body) > 0");
    }
    if let Some(id) = filter.before_id {
        qb.push(" AND id < ").push_bind(id);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit_or(filter.limit, 100));
    qb.build()
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(event_from_row)
        .collect()
}

pub(super) async fn events_to_retry(
    pool: &PgPool,
    max_attempts: i64,
    limit: i64,
) -> StoreResult<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLS} FROM webhook_events \
         WHERE (processing = 'failed' AND attempts < $1) \
            OR processing IN ('no_client', 'pending') \
         ORDER BY id LIMIT $2"
    );
    sqlx::query(&sql)
        .bind(max_attempts)
        .bind(limit_or(limit, 100))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(event_from_row)
        .collect()
}

// ---- sale facts and purchase keys -------------------------------------------

pub(super) async fn upsert_fact(pool: &PgPool, fact: &SaleFact) -> StoreResult<()> {
    let body = serde_json::to_string(&fact.body)
        .map_err(|e| StoreError::Corrupt(format!("sale fact body: {e}")))?;
    sqlx::query(
        "INSERT INTO sale_facts (event_id, client_id, purchase_key, verified, livemode, \
         client_method, body) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (event_id) DO UPDATE SET client_id = excluded.client_id, \
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
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn facts_for_purchase(
    pool: &PgPool,
    client_id: &str,
    purchase_key: &str,
) -> StoreResult<Vec<SaleFact>> {
    let sql = format!(
        "SELECT {FACT_COLS} FROM sale_facts WHERE client_id = $1 AND purchase_key = $2 \
         ORDER BY event_id"
    );
    sqlx::query(&sql)
        .bind(client_id)
        .bind(purchase_key)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(fact_from_row)
        .collect()
}

pub(super) async fn resolve_alias(
    pool: &PgPool,
    client_id: &str,
    alias: &str,
) -> StoreResult<Option<String>> {
    sqlx::query_scalar(
        "SELECT purchase_key FROM purchase_aliases WHERE client_id = $1 AND alias = $2",
    )
    .bind(client_id)
    .bind(alias)
    .fetch_optional(pool)
    .await
    .map_err(map_err)
}

pub(super) async fn set_alias(
    pool: &PgPool,
    client_id: &str,
    alias: &str,
    purchase_key: &str,
) -> StoreResult<()> {
    if alias == purchase_key {
        // A key is trivially its own; a self-alias would only hide an
        // existing mapping of it.
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(map_err)?;
    sqlx::query(
        "INSERT INTO purchase_aliases (client_id, alias, purchase_key) VALUES ($1, $2, $3) \
         ON CONFLICT (client_id, alias) DO UPDATE SET purchase_key = excluded.purchase_key",
    )
    .bind(client_id)
    .bind(alias)
    .bind(purchase_key)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "UPDATE purchase_aliases SET purchase_key = $1 WHERE client_id = $2 AND purchase_key = $3",
    )
    .bind(purchase_key)
    .bind(client_id)
    .bind(alias)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "UPDATE sale_facts SET purchase_key = $1 WHERE client_id = $2 AND purchase_key = $3",
    )
    .bind(purchase_key)
    .bind(client_id)
    .bind(alias)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)
}
