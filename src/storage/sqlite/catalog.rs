//! Settings, clients and their secrets, links, clicks and admin sessions
//! (SQLite). Each function runs on the connection it is given; `mod.rs`
//! decides which one and whether the write is synced.

use rusqlite::{params, Connection};

use super::rows::*;
use crate::domain::model::*;
use crate::domain::report::AdminSession;
use crate::storage::StoreResult;

// ---- settings ---------------------------------------------------------------

pub(super) fn get_setting(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    scalar(conn, "SELECT value FROM settings WHERE key = ?", [key])
}

pub(super) fn init_setting(conn: &Connection, key: &str, value: &str) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
        [key, value],
    )
}

pub(super) fn set_setting(conn: &Connection, key: &str, value: &str) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO settings (key, value) VALUES (?, ?) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
}

// ---- clients ----------------------------------------------------------------

pub(super) fn insert_client(conn: &Connection, client: &Client) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO clients (id, name, domain, stripe_account, stripe_api_key, \
         window_primary_days, window_fallback_days, any_time_fallback, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            client.id,
            client.name,
            client.domain,
            client.stripe_account,
            client.stripe_api_key,
            client.settings.window_primary_days,
            client.settings.window_fallback_days,
            client.settings.any_time_fallback,
            client.created_at,
        ],
    )
}

pub(super) fn list_clients(conn: &Connection) -> StoreResult<Vec<Client>> {
    let sql = format!("SELECT {CLIENT_COLS} FROM clients c ORDER BY c.created_at, c.rowid");
    query_all(conn, &sql, [], client_from_row)
}

/// The client whose `column` (a fixed name, never input) equals `value`.
pub(super) fn client_where(
    conn: &Connection,
    column: &'static str,
    value: &str,
) -> StoreResult<Option<Client>> {
    let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE {column} = ?");
    query_opt(conn, &sql, [value], client_from_row)
}

pub(super) fn update_client_settings(
    conn: &Connection,
    id: &str,
    settings: &AttributionSettings,
) -> StoreResult<usize> {
    execute(
        conn,
        "UPDATE clients SET window_primary_days = ?, window_fallback_days = ?, \
         any_time_fallback = ? WHERE id = ?",
        params![
            settings.window_primary_days,
            settings.window_fallback_days,
            settings.any_time_fallback,
            id
        ],
    )
}

pub(super) fn add_webhook_secret(
    conn: &Connection,
    client_id: &str,
    secret: &str,
    now: Millis,
) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO webhook_secrets (client_id, secret, active, created_at) \
         VALUES (?, ?, 1, ?) ON CONFLICT(client_id, secret) DO NOTHING",
        params![client_id, secret, now],
    )
}

/// Clients with their active secrets, from one statement (one snapshot).
/// A number that changes whenever a client or a webhook secret does
/// (triggers of migration 0004).
pub(super) fn client_catalog_version(conn: &Connection) -> StoreResult<i64> {
    scalar(
        conn,
        "SELECT version FROM client_catalog_version WHERE id = 1",
        [],
    )
    .map(|v| v.unwrap_or(0))
}

pub(super) fn list_client_secrets(conn: &Connection) -> StoreResult<Vec<ClientSecrets>> {
    let sql = format!(
        "SELECT {CLIENT_COLS}, s.secret AS secret FROM clients c \
         LEFT JOIN webhook_secrets s ON s.client_id = c.id AND s.active = 1 \
         ORDER BY c.created_at, c.rowid, s.created_at, s.id"
    );
    let rows = query_all(conn, &sql, [], |row| {
        Ok((client_from_row(row)?, get::<Option<String>>(row, "secret")?))
    })?;
    let mut out: Vec<ClientSecrets> = Vec::new();
    for (client, secret) in rows {
        if out.last().is_none_or(|c| c.client.id != client.id) {
            out.push(ClientSecrets {
                client,
                secrets: Vec::new(),
            });
        }
        if let (Some(secret), Some(last)) = (secret, out.last_mut()) {
            last.secrets.push(WebhookSecret::new(secret));
        }
    }
    Ok(out)
}

// ---- links ------------------------------------------------------------------

/// Inserts a link and its promotion codes; the caller runs it in one
/// transaction.
pub(super) fn insert_link(conn: &Connection, link: &Link) -> StoreResult<usize> {
    let n = execute(
        conn,
        "INSERT INTO links (id, client_id, slug, destination, label, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
        params![
            link.id,
            link.client_id,
            link.slug,
            link.destination,
            link.label,
            link.created_at
        ],
    )?;
    for code in &link.promo_codes {
        execute(
            conn,
            "INSERT INTO link_promo_codes (link_id, client_id, code) VALUES (?, ?, ?) \
             ON CONFLICT(link_id, code) DO NOTHING",
            params![link.id, link.client_id, code],
        )?;
    }
    Ok(n)
}

/// Links matching `where_sql` (over `links l`, `?` bound to `args` in
/// order), each with its promotion codes: one statement, one snapshot.
pub(super) fn load_links(
    conn: &Connection,
    where_sql: &str,
    args: &[&str],
) -> StoreResult<Vec<Link>> {
    let sql = format!(
        "SELECT {LINK_COLS}, (SELECT json_group_array(code) FROM \
           (SELECT pc.code AS code FROM link_promo_codes pc \
            WHERE pc.link_id = l.id ORDER BY pc.rowid)) AS promo_codes \
         FROM links l WHERE {where_sql} ORDER BY l.created_at, l.rowid"
    );
    query_all(
        conn,
        &sql,
        rusqlite::params_from_iter(args.iter()),
        link_from_row,
    )
}

pub(super) fn find_link_by_promo_code(
    conn: &Connection,
    client_id: &str,
    code: &str,
) -> StoreResult<Option<Link>> {
    Ok(load_links(
        conn,
        "l.id = (SELECT pc.link_id FROM link_promo_codes pc \
         WHERE pc.client_id = ? AND lower(pc.code) = lower(?) \
         ORDER BY pc.rowid LIMIT 1)",
        &[client_id, code],
    )?
    .into_iter()
    .next())
}

// ---- clicks -----------------------------------------------------------------

pub(super) const INSERT_CLICK: &str = "INSERT INTO clicks (id, link_id, client_id, at, \
     visitor_id, referrer, landing_url, user_agent, ip_hash, bot) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(super) fn insert_click(conn: &Connection, c: &Click) -> StoreResult<usize> {
    execute(
        conn,
        INSERT_CLICK,
        params![
            c.id,
            c.link_id,
            c.client_id,
            c.at,
            c.visitor_id,
            c.referrer,
            c.landing_url,
            c.user_agent,
            c.ip_hash,
            c.bot
        ],
    )
}

pub(super) fn get_click(
    conn: &Connection,
    client_id: &str,
    click_id: &str,
) -> StoreResult<Option<Click>> {
    let sql = format!("SELECT {CLICK_COLS} FROM clicks WHERE id = ? AND client_id = ?");
    query_opt(conn, &sql, [click_id, client_id], click_from_row)
}

/// The newest human click of the client in `[from, to]`: one seek of
/// `clicks_client_bot_at`, walked backwards from `to` and bounded by `from`.
pub(super) fn latest_click(
    conn: &Connection,
    client_id: &str,
    from: Option<Millis>,
    to: Millis,
) -> StoreResult<Option<Click>> {
    const SQL: &str = "FROM clicks INDEXED BY clicks_client_bot_at \
         WHERE client_id = ?1 AND bot = 0 AND at <= ?2";
    match from {
        Some(from) => {
            let sql = format!("SELECT {CLICK_COLS} {SQL} AND at >= ?3 ORDER BY at DESC LIMIT 1");
            query_opt(conn, &sql, params![client_id, to, from], click_from_row)
        }
        None => {
            let sql = format!("SELECT {CLICK_COLS} {SQL} ORDER BY at DESC LIMIT 1");
            query_opt(conn, &sql, params![client_id, to], click_from_row)
        }
    }
}

pub(super) fn recent_clicks_for_link(
    conn: &Connection,
    link_id: &str,
    limit: i64,
) -> StoreResult<Vec<Click>> {
    let sql = format!("SELECT {CLICK_COLS} FROM clicks WHERE link_id = ? ORDER BY at DESC LIMIT ?");
    query_all(
        conn,
        &sql,
        params![link_id, limit_or(limit, 100)],
        click_from_row,
    )
}

pub(super) fn count_clicks(conn: &Connection, client_id: Option<&str>) -> StoreResult<i64> {
    let n = match client_id {
        Some(c) => scalar(conn, "SELECT COUNT(*) FROM clicks WHERE client_id = ?", [c])?,
        None => scalar(conn, "SELECT COUNT(*) FROM clicks", [])?,
    };
    Ok(n.unwrap_or(0))
}

// ---- admin sessions ---------------------------------------------------------

pub(super) fn insert_session(conn: &Connection, s: &AdminSession) -> StoreResult<usize> {
    execute(
        conn,
        "INSERT INTO admin_sessions (id_hash, csrf_token, created_at, expires_at) \
         VALUES (?, ?, ?, ?)",
        params![s.id_hash, s.csrf_token, s.created_at, s.expires_at],
    )
}

pub(super) fn get_session(
    conn: &Connection,
    id_hash: &str,
    now: Millis,
) -> StoreResult<Option<AdminSession>> {
    query_opt(
        conn,
        "SELECT id_hash, csrf_token, created_at, expires_at FROM admin_sessions \
         WHERE id_hash = ? AND expires_at > ?",
        params![id_hash, now],
        |r| {
            Ok(AdminSession {
                id_hash: get(r, "id_hash")?,
                csrf_token: get(r, "csrf_token")?,
                created_at: get(r, "created_at")?,
                expires_at: get(r, "expires_at")?,
            })
        },
    )
}

pub(super) fn delete_session(conn: &Connection, id_hash: &str) -> StoreResult<usize> {
    execute(
        conn,
        "DELETE FROM admin_sessions WHERE id_hash = ?",
        [id_hash],
    )
}
