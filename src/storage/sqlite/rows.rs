//! Rows ↔ domain types for SQLite, and the small query helpers every area
//! module uses. Booleans are INTEGER 0/1, times integer epoch milliseconds,
//! enums their `as_str()` text, JSON values TEXT, raw bodies BLOB.

use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};

use crate::domain::model::*;
use crate::storage::{StoreError, StoreResult};

// SQLite extended result codes for the constraint violations that are a
// conflict with stored data rather than a store that cannot serve.
const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// The one place a SQLite error becomes a `StoreError`.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(err, msg) => {
            let message = msg.unwrap_or_else(|| err.to_string());
            match (err.code, err.extended_code) {
                (_, SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    StoreError::Conflict(message)
                }
                (_, SQLITE_CONSTRAINT_FOREIGNKEY) => {
                    StoreError::Conflict(format!("missing referenced row: {message}"))
                }
                (ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase, _) => {
                    StoreError::Corrupt(message)
                }
                // busy, locked, disk I/O, full, cannot open, and anything else
                _ => StoreError::Unavailable(message),
            }
        }
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        e @ (rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::Utf8Error(_)) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

/// Column `col` of `row`.
pub(super) fn get<T: FromSql>(row: &Row<'_>, col: &str) -> StoreResult<T> {
    row.get(col).map_err(map_err)
}

fn get_enum<T>(row: &Row<'_>, col: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let s: String = get(row, col)?;
    parse(&s).ok_or_else(|| corrupt(col, &s))
}

fn get_opt_enum<T>(
    row: &Row<'_>,
    col: &str,
    parse: fn(&str) -> Option<T>,
) -> StoreResult<Option<T>> {
    let s: Option<String> = get(row, col)?;
    s.map(|s| parse(&s).ok_or_else(|| corrupt(col, &s)))
        .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, col: &str) -> StoreResult<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A value as JSON text, for a TEXT column.
pub(super) fn to_json<T: serde::Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

// ---- statements -------------------------------------------------------------

/// The first row `sql` returns, mapped; statements are prepared once per
/// connection and cached.
pub(super) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    match rows.next().map_err(map_err)? {
        Some(row) => map(row).map(Some),
        None => Ok(None),
    }
}

/// Every row `sql` returns, mapped.
pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let mut rows = stmt.query(params).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// The first column of the first row.
pub(super) fn scalar<T: FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<Option<T>> {
    query_opt(conn, sql, params, |r| r.get(0).map_err(map_err))
}

/// Runs `sql` and returns the rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .map_err(map_err)?
        .execute(params)
        .map_err(map_err)
}

pub(super) fn not_found_unless_one(rows: usize) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// SQLite's `LIMIT -1` means no limit.
pub(super) fn limit_or_all(limit: i64) -> i64 {
    if limit <= 0 {
        -1
    } else {
        limit
    }
}

pub(super) fn limit_or(limit: i64, default: i64) -> i64 {
    if limit <= 0 {
        default
    } else {
        limit
    }
}

// ---- enums as text ----------------------------------------------------------

pub(super) fn source_str(s: EventSource) -> &'static str {
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

pub(super) fn verification_str(v: Verification) -> &'static str {
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

// ---- rows -------------------------------------------------------------------

pub(super) const CLIENT_COLS: &str = "c.id, c.name, c.domain, c.stripe_account, \
     c.stripe_api_key, c.window_primary_days, c.window_fallback_days, c.any_time_fallback, \
     c.created_at";

pub(super) fn client_from_row(row: &Row<'_>) -> StoreResult<Client> {
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

pub(super) const LINK_COLS: &str = "l.id, l.client_id, l.slug, l.destination, l.label, \
     l.created_at";

/// A link row with its promotion codes as a JSON array in `promo_codes`.
pub(super) fn link_from_row(row: &Row<'_>) -> StoreResult<Link> {
    Ok(Link {
        id: get(row, "id")?,
        client_id: get(row, "client_id")?,
        slug: get(row, "slug")?,
        destination: get(row, "destination")?,
        label: get(row, "label")?,
        promo_codes: get_json(row, "promo_codes")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) const CLICK_COLS: &str =
    "id, link_id, client_id, at, visitor_id, referrer, landing_url, user_agent, ip_hash, bot";

pub(super) fn click_from_row(row: &Row<'_>) -> StoreResult<Click> {
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

pub(super) const EVENT_COLS: &str = "id, dedup_key, stripe_event_id, event_type, account, \
     livemode, api_version, endpoint, endpoint_client_id, source, received_at, headers, body, \
     verification, verification_reason, client_id, client_method, processing, \
     processing_error, attempts, deliveries";

pub(super) fn event_from_row(row: &Row<'_>) -> StoreResult<StoredEvent> {
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

pub(super) const FACT_COLS: &str =
    "event_id, client_id, purchase_key, verified, livemode, client_method, body";

pub(super) fn fact_from_row(row: &Row<'_>) -> StoreResult<SaleFact> {
    Ok(SaleFact {
        event_id: get(row, "event_id")?,
        client_id: get(row, "client_id")?,
        purchase_key: get(row, "purchase_key")?,
        verified: get(row, "verified")?,
        livemode: get(row, "livemode")?,
        client_method: get_enum(row, "client_method", ClientMethod::parse)?,
        body: get_json(row, "body")?,
    })
}

pub(super) const CONVERSION_COLS: &str = "id, client_id, purchase_key, link_id, click_id, \
     customer, email, subscription, amount, currency, net_amount, purchased_at, kind, livemode, \
     verified, status, method, client_method, trace, created_at, updated_at";

pub(super) fn conversion_from_row(row: &Row<'_>) -> StoreResult<Conversion> {
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
        trace: get_json(row, "trace")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(super) const HISTORY_COLS: &str = "id, conversion_id, at, actor, from_link_id, to_link_id, \
     from_method, to_method, reason";

pub(super) fn history_from_row(row: &Row<'_>) -> StoreResult<HistoryEntry> {
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
