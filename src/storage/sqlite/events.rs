//! The webhook event log (SQLite): raw deliveries, their verification and
//! processing state.

use std::collections::{HashMap, HashSet};

use rusqlite::types::{ToSql, Value};
use rusqlite::{params, params_from_iter, Connection, Statement};

use super::rows::*;
use crate::domain::model::*;
use crate::storage::{StoreError, StoreResult};

pub(super) const INSERT_EVENT_COLS: &str = "INSERT INTO webhook_events (dedup_key, \
     stripe_event_id, event_type, account, livemode, api_version, endpoint, \
     endpoint_client_id, source, received_at, headers, body, verification, \
     verification_reason, client_id, client_method, processing)";

/// Binds `e` as the row of `INSERT_EVENT_COLS` whose first parameter is
/// `first` (1-based; 17 parameters), borrowing it (the raw body is not
/// copied).
pub(super) fn bind_event(stmt: &mut Statement<'_>, first: usize, e: &NewEvent) -> StoreResult<()> {
    let mut i = first;
    let mut bind = |value: &dyn ToSql| {
        let r = stmt.raw_bind_parameter(i, value);
        i += 1;
        r
    };
    bind(&e.dedup_key)
        .and_then(|()| bind(&e.stripe_event_id))
        .and_then(|()| bind(&e.event_type))
        .and_then(|()| bind(&e.account))
        .and_then(|()| bind(&e.livemode))
        .and_then(|()| bind(&e.api_version))
        .and_then(|()| bind(&e.endpoint))
        .and_then(|()| bind(&e.endpoint_client_id))
        .and_then(|()| bind(&source_str(e.source)))
        .and_then(|()| bind(&e.received_at))
        .and_then(|()| bind(&e.headers))
        .and_then(|()| bind(&e.body))
        .and_then(|()| bind(&verification_str(e.verification)))
        .and_then(|()| bind(&e.verification_reason.map(|r| r.as_str())))
        .and_then(|()| bind(&e.client_id))
        .and_then(|()| bind(&e.client_method.map(|m| m.as_str())))
        .and_then(|()| bind(&e.processing.as_str()))
        .map_err(map_err)
}

/// Inserts one event; `None` when an event with its dedup key is stored.
pub(super) fn insert_event(conn: &Connection, e: &NewEvent) -> StoreResult<Option<i64>> {
    let sql = format!(
        "{INSERT_EVENT_COLS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(dedup_key) DO NOTHING RETURNING id"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    bind_event(&mut stmt, 1, e)?;
    let mut rows = stmt.raw_query();
    match rows.next().map_err(map_err)? {
        Some(row) => row.get(0).map(Some).map_err(map_err),
        None => Ok(None),
    }
}

/// Rows of one multi-row event insert (17 parameters a row).
const EVENTS_PER_STATEMENT: usize = 64;

/// Inserts `events` (distinct dedup keys) and records the id of each one
/// inserted; a key already stored inserts nothing and gets no id.
fn insert_rows(
    conn: &Connection,
    events: &[&NewEvent],
    ids: &mut HashMap<String, i64>,
) -> StoreResult<()> {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "{INSERT_EVENT_COLS} VALUES {} ON CONFLICT(dedup_key) DO NOTHING RETURNING id, dedup_key",
        vec![row; events.len()].join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
    for (n, e) in events.iter().enumerate() {
        bind_event(&mut stmt, 1 + 17 * n, e)?;
    }
    let mut rows = stmt.raw_query();
    while let Some(r) = rows.next().map_err(map_err)? {
        ids.insert(r.get(1).map_err(map_err)?, r.get(0).map_err(map_err)?);
    }
    Ok(())
}

/// Inserts `events` in as few statements as it can, in whatever
/// transaction `conn` is in, and returns each one's new id in order, or
/// `None` when an event with its dedup key is stored already (earlier, or
/// earlier in `events`).
pub(super) fn insert_many(
    conn: &Connection,
    events: &[&NewEvent],
) -> StoreResult<Vec<Option<i64>>> {
    // Events with a dedup key seen first here go in many rows a statement,
    // their ids read back by key; the others (no key, or a key repeated
    // here: a duplicate) one by one after them.
    let mut seen = HashSet::new();
    let grouped: Vec<&NewEvent> = events
        .iter()
        .copied()
        .filter(|e| e.dedup_key.as_deref().is_some_and(|k| seen.insert(k)))
        .collect();
    let mut ids = HashMap::new();
    for rows in grouped.chunks(EVENTS_PER_STATEMENT) {
        insert_rows(conn, rows, &mut ids)?;
    }
    let mut in_group: HashSet<&str> = grouped
        .iter()
        .filter_map(|e| e.dedup_key.as_deref())
        .collect();
    events
        .iter()
        .map(|e| match e.dedup_key.as_deref() {
            // The first of its key: inserted above.
            Some(k) if in_group.remove(k) => Ok(ids.get(k).copied()),
            _ => insert_event(conn, e),
        })
        .collect()
}

/// What an insert of `e` came to: its new id, or (`id` is `None`) the
/// event stored before under its dedup key. Only a dedup key conflict
/// suppresses an insert; a NULL key never conflicts.
pub(super) fn landed(conn: &Connection, e: &NewEvent, id: Option<i64>) -> StoreResult<InsertEvent> {
    if let Some(id) = id {
        return Ok(InsertEvent::Inserted(id));
    }
    let key = e.dedup_key.as_deref().ok_or_else(|| {
        StoreError::Unavailable("event insert returned no id without a dedup key".into())
    })?;
    match event_by_dedup_key(conn, key)? {
        Some(stored) => Ok(InsertEvent::Duplicate(Box::new(stored))),
        None => Err(StoreError::Unavailable(
            "duplicate event vanished before it could be read".into(),
        )),
    }
}

pub(super) fn event_by_dedup_key(conn: &Connection, key: &str) -> StoreResult<Option<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE dedup_key = ?");
    query_opt(conn, &sql, [key], event_from_row)
}

pub(super) fn get_event(conn: &Connection, id: i64) -> StoreResult<Option<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE id = ?");
    query_opt(conn, &sql, [id], event_from_row)
}

pub(super) fn record_delivery(conn: &Connection, id: i64) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE webhook_events SET deliveries = deliveries + 1 WHERE id = ?",
        [id],
    )
}

pub(super) fn mark_event_verified(
    conn: &Connection,
    id: i64,
    client_id: &str,
    client_method: ClientMethod,
    headers: Option<&str>,
    body: Option<&[u8]>,
) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE webhook_events SET verification = 'verified', verification_reason = NULL, \
         client_id = ?, client_method = ?, headers = COALESCE(?, headers), \
         body = COALESCE(?, body) WHERE id = ? AND verification <> 'verified'",
        params![client_id, client_method.as_str(), headers, body, id],
    )
}

/// A concurrent upgrade to verified wins: then nothing changes.
pub(super) fn set_event_unverified_reason(
    conn: &Connection,
    id: i64,
    reason: UnverifiedReason,
) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE webhook_events SET verification_reason = ? \
         WHERE id = ? AND verification <> 'verified'",
        params![reason.as_str(), id],
    )
}

pub(super) fn set_event_processing(
    conn: &Connection,
    id: i64,
    client: Option<(&str, ClientMethod)>,
    processing: Processing,
    error: Option<&str>,
) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE webhook_events SET processing = ?, processing_error = ?, \
         client_id = COALESCE(?, client_id), client_method = COALESCE(?, client_method), \
         attempts = attempts + 1, processed_at = ? WHERE id = ?",
        params![
            processing.as_str(),
            error,
            client.map(|(c, _)| c),
            client.map(|(_, m)| m.as_str()),
            now_millis(),
            id
        ],
    )
}

pub(super) fn list_events(
    conn: &Connection,
    filter: &EventFilter,
) -> StoreResult<Vec<StoredEvent>> {
    let mut sql = format!("SELECT {EVENT_COLS} FROM webhook_events WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(p) = filter.processing {
        sql.push_str(" AND processing = ?");
        args.push(Value::Text(p.as_str().into()));
    }
    if let Some(v) = filter.verification {
        sql.push_str(" AND verification = ?");
        args.push(Value::Text(verification_str(v).into()));
    }
    if let Some(c) = &filter.client_id {
        sql.push_str(" AND client_id = ?");
        args.push(Value::Text(c.clone()));
    }
    if let Some(s) = &filter.body_contains {
        sql.push_str(" AND instr(body, ?) > 0");
        args.push(Value::Blob(s.as_bytes().to_vec()));
    }
    if let Some(id) = filter.before_id {
        sql.push_str(" AND id < ?");
        args.push(Value::Integer(id));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(limit_or(filter.limit, 100)));
    query_all(conn, &sql, params_from_iter(args), event_from_row)
}

/// Failed events under `max_attempts`, and those without a client or still
/// pending, oldest first.
pub(super) fn events_to_retry(
    conn: &Connection,
    max_attempts: i64,
    limit: i64,
) -> StoreResult<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLS} FROM webhook_events \
         WHERE (processing = 'failed' AND attempts < ?) \
            OR processing IN ('no_client', 'pending') \
         ORDER BY id LIMIT ?"
    );
    query_all(
        conn,
        &sql,
        params![max_attempts, limit_or(limit, 100)],
        event_from_row,
    )
}
