//! The webhook event log (SQLite): raw deliveries, their verification and
//! processing state.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

use super::rows::*;
use crate::domain::model::*;
use crate::storage::StoreResult;

pub(super) const INSERT_EVENT_COLS: &str = "INSERT INTO webhook_events (dedup_key, \
     stripe_event_id, event_type, account, livemode, api_version, endpoint, \
     endpoint_client_id, source, received_at, headers, body, verification, \
     verification_reason, client_id, client_method, processing)";

/// Parameters of one row of `INSERT_EVENT_COLS`, in order (17).
pub(super) fn event_params(e: &NewEvent) -> [Value; 17] {
    fn text(s: &Option<String>) -> Value {
        s.clone().map_or(Value::Null, Value::Text)
    }
    fn word(s: Option<&'static str>) -> Value {
        s.map_or(Value::Null, |s| Value::Text(s.to_string()))
    }
    [
        text(&e.dedup_key),
        text(&e.stripe_event_id),
        text(&e.event_type),
        text(&e.account),
        e.livemode.map_or(Value::Null, |b| Value::Integer(b.into())),
        text(&e.api_version),
        Value::Text(e.endpoint.clone()),
        text(&e.endpoint_client_id),
        word(Some(source_str(e.source))),
        Value::Integer(e.received_at),
        Value::Text(e.headers.clone()),
        Value::Blob(e.body.clone()),
        word(Some(verification_str(e.verification))),
        word(e.verification_reason.map(|r| r.as_str())),
        text(&e.client_id),
        word(e.client_method.map(|m| m.as_str())),
        word(Some(e.processing.as_str())),
    ]
}

/// Inserts one event; `None` when an event with its dedup key is stored.
pub(super) fn insert_event(conn: &Connection, e: &NewEvent) -> StoreResult<Option<i64>> {
    let sql = format!(
        "{INSERT_EVENT_COLS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(dedup_key) DO NOTHING RETURNING id"
    );
    scalar(conn, &sql, params_from_iter(event_params(e)))
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
