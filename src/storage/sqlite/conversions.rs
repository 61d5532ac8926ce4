//! Sale facts, purchase keys and their aliases, conversions and their
//! attribution history (SQLite).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

use super::rows::*;
use crate::domain::model::*;
use crate::storage::{StoreError, StoreResult};

// ---- sale facts and purchase keys -------------------------------------------

pub(super) fn upsert_fact(conn: &Connection, fact: &SaleFact) -> StoreResult<usize> {
    let body = to_json("sale fact body", &fact.body)?;
    execute(
        conn,
        "INSERT INTO sale_facts (event_id, client_id, purchase_key, verified, livemode, \
         client_method, body) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(event_id) DO UPDATE SET client_id = excluded.client_id, \
         purchase_key = excluded.purchase_key, verified = excluded.verified, \
         livemode = excluded.livemode, client_method = excluded.client_method, \
         body = excluded.body",
        params![
            fact.event_id,
            fact.client_id,
            fact.purchase_key,
            fact.verified,
            fact.livemode,
            fact.client_method.as_str(),
            body
        ],
    )
}

pub(super) fn facts_for_purchase(
    conn: &Connection,
    client_id: &str,
    purchase_key: &str,
) -> StoreResult<Vec<SaleFact>> {
    let sql = format!(
        "SELECT {FACT_COLS} FROM sale_facts WHERE client_id = ? AND purchase_key = ? \
         ORDER BY event_id"
    );
    query_all(conn, &sql, [client_id, purchase_key], fact_from_row)
}

pub(super) fn resolve_alias(
    conn: &Connection,
    client_id: &str,
    alias: &str,
) -> StoreResult<Option<String>> {
    scalar(
        conn,
        "SELECT purchase_key FROM purchase_aliases WHERE client_id = ? AND alias = ?",
        [client_id, alias],
    )
}

/// Points `alias` (and every alias that pointed at it) at `purchase_key`
/// and moves its facts there; the caller runs it in one transaction.
pub(super) fn set_alias(
    conn: &Connection,
    client_id: &str,
    alias: &str,
    purchase_key: &str,
) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO purchase_aliases (client_id, alias, purchase_key) VALUES (?, ?, ?) \
         ON CONFLICT(client_id, alias) DO UPDATE SET purchase_key = excluded.purchase_key",
        [client_id, alias, purchase_key],
    )?;
    execute(
        conn,
        "UPDATE purchase_aliases SET purchase_key = ? WHERE client_id = ? AND purchase_key = ?",
        [purchase_key, client_id, alias],
    )?;
    execute(
        conn,
        "UPDATE sale_facts SET purchase_key = ? WHERE client_id = ? AND purchase_key = ?",
        [purchase_key, client_id, alias],
    )
}

// ---- conversions ------------------------------------------------------------

pub(super) fn get_conversion(conn: &Connection, id: &str) -> StoreResult<Option<Conversion>> {
    let sql = format!("SELECT {CONVERSION_COLS} FROM conversions WHERE id = ?");
    query_opt(conn, &sql, [id], conversion_from_row)
}

pub(super) fn get_conversion_by_key(
    conn: &Connection,
    client_id: &str,
    purchase_key: &str,
) -> StoreResult<Option<Conversion>> {
    let sql = format!(
        "SELECT {CONVERSION_COLS} FROM conversions \
         WHERE client_id = ? AND purchase_key = ? AND merged_into IS NULL"
    );
    query_opt(conn, &sql, [client_id, purchase_key], conversion_from_row)
}

pub(super) fn save_conversion(conn: &Connection, c: &Conversion) -> StoreResult<usize> {
    let trace = to_json("conversion trace", &c.trace)?;
    execute(
        conn,
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
        params![
            c.id,
            c.client_id,
            c.purchase_key,
            c.link_id,
            c.click_id,
            c.customer,
            c.email,
            c.subscription,
            c.amount,
            c.currency,
            c.net_amount,
            c.purchased_at,
            c.kind.as_str(),
            c.livemode,
            c.verified,
            c.status.as_str(),
            c.method.map(|m| m.as_str()),
            c.client_method.as_str(),
            trace,
            c.created_at,
            c.updated_at
        ],
    )
}

pub(super) fn merge_conversion(
    conn: &Connection,
    from_id: &str,
    into_id: &str,
) -> StoreResult<usize> {
    if from_id == into_id {
        return Err(StoreError::Conflict(
            "a conversion cannot be merged into itself".into(),
        ));
    }
    execute(
        conn,
        "UPDATE conversions SET merged_into = ?, updated_at = ? WHERE id = ?",
        params![into_id, now_millis(), from_id],
    )
}

pub(super) fn rekey_conversion(
    conn: &Connection,
    id: &str,
    purchase_key: &str,
) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE conversions SET purchase_key = ?, updated_at = ? \
         WHERE id = ? AND merged_into IS NULL",
        params![purchase_key, now_millis(), id],
    )
}

pub(super) fn list_conversions(
    conn: &Connection,
    filter: &ConversionFilter,
) -> StoreResult<Vec<Conversion>> {
    let (sql, args) = conversions_query(filter);
    query_all(conn, &sql, params_from_iter(args), conversion_from_row)
}

/// The SQL and arguments of `list_conversions`.
pub(super) fn conversions_query(filter: &ConversionFilter) -> (String, Vec<Value>) {
    // Where only a few rows are wanted, the index that holds just those is
    // named: left to itself SQLite could pick one that walks all of a
    // customer's sales or all of a client's orphans (cost growing with
    // history; migration 0005).
    let orphans_of_customer = filter.orphans_only && filter.customer.is_some();
    let index = if orphans_of_customer {
        " INDEXED BY conversions_customer_orphans"
    } else if filter.subscription.is_some() {
        " INDEXED BY conversions_subscription"
    } else {
        ""
    };
    let mut sql =
        format!("SELECT {CONVERSION_COLS} FROM conversions{index} WHERE merged_into IS NULL");
    let mut args: Vec<Value> = Vec::new();
    let mut text = |sql: &mut String, clause: &str, v: &str| {
        sql.push_str(clause);
        args.push(Value::Text(v.to_string()));
    };
    if let Some(c) = &filter.client_id {
        text(&mut sql, " AND client_id = ?", c);
    }
    if let Some(l) = &filter.link_id {
        text(&mut sql, " AND link_id = ?", l);
    }
    if let Some(c) = &filter.customer {
        text(&mut sql, " AND customer = ?", c);
    }
    if let Some(s) = &filter.subscription {
        text(&mut sql, " AND subscription = ?", s);
    }
    if let Some(e) = &filter.email {
        text(&mut sql, " AND lower(email) = lower(?)", e);
    }
    if let Some(k) = &filter.purchase_key {
        text(&mut sql, " AND purchase_key = ?", k);
    }
    if let Some(st) = filter.status {
        text(&mut sql, " AND status = ?", st.as_str());
    }
    if let Some(k) = filter.kind {
        text(&mut sql, " AND kind = ?", k.as_str());
    }
    if filter.orphans_only {
        // With an email named, its index finds the few rows fast; left to
        // itself SQLite would walk every orphan of the client through
        // `conversions_link`. The unary `+` keeps `link_id` out of the
        // index choice. (A customer's orphans have their index, named above.)
        sql.push_str(if filter.email.is_some() && !orphans_of_customer {
            " AND +link_id IS NULL"
        } else {
            " AND link_id IS NULL"
        });
    }
    if filter.unverified_only {
        sql.push_str(" AND verified = 0");
    }
    if let Some(live) = filter.livemode {
        sql.push_str(" AND livemode = ?");
        args.push(Value::Integer(live.into()));
    }
    if let Some(from) = filter.from {
        sql.push_str(" AND purchased_at >= ?");
        args.push(Value::Integer(from));
    }
    if let Some(to) = filter.to {
        sql.push_str(" AND purchased_at < ?");
        args.push(Value::Integer(to));
    }
    if let Some((at, id)) = &filter.after {
        sql.push_str(" AND (purchased_at < ? OR (purchased_at = ? AND id < ?))");
        args.extend([
            Value::Integer(*at),
            Value::Integer(*at),
            Value::Text(id.clone()),
        ]);
    }
    sql.push_str(" ORDER BY purchased_at DESC, id DESC LIMIT ?");
    args.push(Value::Integer(limit_or_all(filter.limit)));
    (sql, args)
}

/// The newest attributed, verified conversion of the same customer (by
/// Stripe customer, then by email) purchased at or before `before`.
pub(super) fn customer_history(
    conn: &Connection,
    client_id: &str,
    customer: Option<&str>,
    email: Option<&str>,
    before: Millis,
    exclude_id: &str,
) -> StoreResult<Option<Conversion>> {
    let candidate = |condition: &str, value: &str| {
        let sql = format!(
            "SELECT {CONVERSION_COLS} FROM conversions \
             WHERE client_id = ? AND merged_into IS NULL AND id <> ? \
               AND link_id IS NOT NULL AND verified = 1 AND purchased_at <= ? AND {condition} \
             ORDER BY purchased_at DESC, id DESC LIMIT 1"
        );
        query_opt(
            conn,
            &sql,
            params![client_id, exclude_id, before, value],
            conversion_from_row,
        )
    };
    if let Some(customer) = customer {
        if let Some(found) = candidate("customer = ?", customer)? {
            return Ok(Some(found));
        }
    }
    match email {
        Some(email) => candidate("lower(email) = lower(?)", email),
        None => Ok(None),
    }
}

pub(super) fn orphan_ids(
    conn: &Connection,
    client_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<String>> {
    query_all(
        conn,
        "SELECT id FROM conversions WHERE merged_into IS NULL AND link_id IS NULL \
           AND (?1 IS NULL OR client_id = ?1) ORDER BY purchased_at, id LIMIT ?2",
        params![client_id, limit_or_all(limit)],
        |r| get(r, "id"),
    )
}

// ---- attribution history ----------------------------------------------------

pub(super) fn add_history(conn: &Connection, entry: &NewHistoryEntry) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO attribution_history (conversion_id, at, actor, from_link_id, \
         to_link_id, from_method, to_method, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            entry.conversion_id,
            now_millis(),
            entry.actor,
            entry.from_link_id,
            entry.to_link_id,
            entry.from_method.map(|m| m.as_str()),
            entry.to_method.map(|m| m.as_str()),
            entry.reason
        ],
    )
}

pub(super) fn list_history(
    conn: &Connection,
    conversion_id: &str,
) -> StoreResult<Vec<HistoryEntry>> {
    let sql = format!(
        "SELECT {HISTORY_COLS} FROM attribution_history WHERE conversion_id = ? ORDER BY id"
    );
    query_all(conn, &sql, [conversion_id], history_from_row)
}

pub(super) fn get_history_entry(conn: &Connection, id: i64) -> StoreResult<Option<HistoryEntry>> {
    let sql = format!("SELECT {HISTORY_COLS} FROM attribution_history WHERE id = ?");
    query_opt(conn, &sql, [id], history_from_row)
}
