//! Conversions (one live row per purchase key) and their attribution history.

use sqlx::postgres::{PgPool, Postgres};
use sqlx::QueryBuilder;

use super::rows::*;
use super::{limit_or_all, map_err, not_found_unless_one};
use crate::domain::model::*;
use crate::storage::{StoreError, StoreResult};

pub(super) async fn get_conversion(pool: &PgPool, id: &str) -> StoreResult<Option<Conversion>> {
    let sql = format!("SELECT {CONVERSION_COLS} FROM conversions WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(conversion_from_row)
        .transpose()
}

pub(super) async fn get_conversion_by_key(
    pool: &PgPool,
    client_id: &str,
    purchase_key: &str,
) -> StoreResult<Option<Conversion>> {
    let sql = format!(
        "SELECT {CONVERSION_COLS} FROM conversions \
         WHERE client_id = $1 AND purchase_key = $2 AND merged_into IS NULL"
    );
    sqlx::query(&sql)
        .bind(client_id)
        .bind(purchase_key)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(conversion_from_row)
        .transpose()
}

pub(super) async fn save_conversion(pool: &PgPool, c: &Conversion) -> StoreResult<()> {
    let trace = serde_json::to_string(&c.trace)
        .map_err(|e| StoreError::Corrupt(format!("conversion trace: {e}")))?;
    // `ON CONFLICT (id)` handles only the id: another live conversion with
    // the same purchase key still violates `conversions_live_purchase`,
    // which `map_err` turns into `Conflict`.
    sqlx::query(
        "INSERT INTO conversions (id, client_id, purchase_key, link_id, click_id, customer, \
         email, subscription, amount, currency, net_amount, purchased_at, kind, livemode, \
         verified, status, method, client_method, trace, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21) \
         ON CONFLICT (id) DO UPDATE SET client_id = excluded.client_id, \
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
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn merge_conversion(
    pool: &PgPool,
    from_id: &str,
    into_id: &str,
) -> StoreResult<()> {
    if from_id == into_id {
        return Err(StoreError::Conflict(
            "a conversion cannot be merged into itself".into(),
        ));
    }
    let done =
        sqlx::query("UPDATE conversions SET merged_into = $1, updated_at = $2 WHERE id = $3")
            .bind(into_id)
            .bind(now_millis())
            .bind(from_id)
            .execute(pool)
            .await
            .map_err(map_err)?;
    not_found_unless_one(done.rows_affected())
}

pub(super) async fn rekey_conversion(
    pool: &PgPool,
    id: &str,
    purchase_key: &str,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE conversions SET purchase_key = $1, updated_at = $2 \
         WHERE id = $3 AND merged_into IS NULL",
    )
    .bind(purchase_key)
    .bind(now_millis())
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    not_found_unless_one(done.rows_affected())
}

pub(super) async fn list_conversions(
    pool: &PgPool,
    filter: &ConversionFilter,
) -> StoreResult<Vec<Conversion>> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
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
        qb.push(" AND NOT verified");
    }
    if let Some(c) = &filter.customer {
        qb.push(" AND customer = ").push_bind(c.as_str());
    }
    if let Some(s) = &filter.subscription {
        qb.push(" AND subscription = ").push_bind(s.as_str());
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
    if let Some(k) = filter.kind {
        qb.push(" AND kind = ").push_bind(k.as_str());
    }
    if let Some(live) = filter.livemode {
        qb.push(" AND livemode = ").push_bind(live);
    }
    if let Some(from) = filter.from {
        qb.push(" AND purchased_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND purchased_at < ").push_bind(to);
    }
    if let Some((at, id)) = &filter.after {
        qb.push(" AND (purchased_at < ")
            .push_bind(*at)
            .push(" OR (purchased_at = ")
            .push_bind(*at)
            .push(" AND id < ")
            .push_bind(id.as_str())
            .push("))");
    }
    qb.push(" ORDER BY purchased_at DESC, id DESC LIMIT ")
        .push_bind(limit_or_all(filter.limit));
    qb.build()
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(conversion_from_row)
        .collect()
}

/// One live conversion of the client matching an extra condition on one
/// bound value (`$4`), for `customer_history`.
async fn history_candidate(
    pool: &PgPool,
    client_id: &str,
    exclude_id: &str,
    before: Millis,
    condition: &str,
    value: &str,
) -> StoreResult<Option<Conversion>> {
    let sql = format!(
        "SELECT {CONVERSION_COLS} FROM conversions \
         WHERE client_id = $1 AND merged_into IS NULL AND id <> $2 \
           AND link_id IS NOT NULL AND verified AND purchased_at <= $3 AND {condition} \
         ORDER BY purchased_at DESC, id DESC LIMIT 1"
    );
    sqlx::query(&sql)
        .bind(client_id)
        .bind(exclude_id)
        .bind(before)
        .bind(value)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(conversion_from_row)
        .transpose()
}

pub(super) async fn customer_history(
    pool: &PgPool,
    client_id: &str,
    customer: Option<&str>,
    email: Option<&str>,
    before: Millis,
    exclude_id: &str,
) -> StoreResult<Option<Conversion>> {
    if let Some(customer) = customer {
        let found = history_candidate(
            pool,
            client_id,
            exclude_id,
            before,
            "customer = $4",
            customer,
        )
        .await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    if let Some(email) = email {
        return history_candidate(
            pool,
            client_id,
            exclude_id,
            before,
            "lower(email) = lower($4)",
            email,
        )
        .await;
    }
    Ok(None)
}

pub(super) async fn orphan_ids(
    pool: &PgPool,
    client_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<String>> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id FROM conversions WHERE merged_into IS NULL AND link_id IS NULL",
    );
    if let Some(c) = client_id {
        qb.push(" AND client_id = ").push_bind(c);
    }
    qb.push(" ORDER BY purchased_at, id LIMIT ")
        .push_bind(limit_or_all(limit));
    qb.build_query_scalar()
        .fetch_all(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn add_history(pool: &PgPool, entry: &NewHistoryEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO attribution_history (conversion_id, at, actor, from_link_id, \
         to_link_id, from_method, to_method, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&entry.conversion_id)
    .bind(now_millis())
    .bind(&entry.actor)
    .bind(&entry.from_link_id)
    .bind(&entry.to_link_id)
    .bind(entry.from_method.map(|m| m.as_str()))
    .bind(entry.to_method.map(|m| m.as_str()))
    .bind(&entry.reason)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn list_history(
    pool: &PgPool,
    conversion_id: &str,
) -> StoreResult<Vec<HistoryEntry>> {
    let sql = format!(
        "SELECT {HISTORY_COLS} FROM attribution_history WHERE conversion_id = $1 ORDER BY id"
    );
    sqlx::query(&sql)
        .bind(conversion_id)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(history_from_row)
        .collect()
}

pub(super) async fn get_history_entry(pool: &PgPool, id: i64) -> StoreResult<Option<HistoryEntry>> {
    let sql = format!("SELECT {HISTORY_COLS} FROM attribution_history WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(history_from_row)
        .transpose()
}
