//! Settings, clients and their secrets, links, clicks, admin sessions.

use sqlx::postgres::PgPool;

use super::rows::*;
use super::{limit_or, map_err, not_found_unless_one};
use crate::domain::model::*;
use crate::domain::report::AdminSession;
use crate::storage::StoreResult;

// ---- settings ---------------------------------------------------------------

pub(super) async fn get_setting(pool: &PgPool, key: &str) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn init_setting(pool: &PgPool, key: &str, value: &str) -> StoreResult<String> {
    // Two instances starting at once: one insert wins, both read its value.
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map_err(map_err)?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

pub(super) async fn set_setting(pool: &PgPool, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

// ---- clients ----------------------------------------------------------------

pub(super) async fn insert_client(pool: &PgPool, client: &Client) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO clients (id, name, domain, stripe_account, stripe_api_key, \
         window_primary_days, window_fallback_days, any_time_fallback, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn list_clients(pool: &PgPool) -> StoreResult<Vec<Client>> {
    let sql = format!("SELECT {CLIENT_COLS} FROM clients c ORDER BY c.created_at, c.rowid");
    sqlx::query(&sql)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(client_from_row)
        .collect()
}

pub(super) async fn get_client(pool: &PgPool, id: &str) -> StoreResult<Option<Client>> {
    let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE c.id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(client_from_row)
        .transpose()
}

pub(super) async fn find_client_by_name(pool: &PgPool, name: &str) -> StoreResult<Option<Client>> {
    let sql = format!("SELECT {CLIENT_COLS} FROM clients c WHERE c.name = $1");
    sqlx::query(&sql)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(client_from_row)
        .transpose()
}

pub(super) async fn update_client_settings(
    pool: &PgPool,
    id: &str,
    settings: &AttributionSettings,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE clients SET window_primary_days = $1, window_fallback_days = $2, \
         any_time_fallback = $3 WHERE id = $4",
    )
    .bind(settings.window_primary_days)
    .bind(settings.window_fallback_days)
    .bind(settings.any_time_fallback)
    .bind(id)
    .execute(pool)
    .await
    .map_err(map_err)?;
    not_found_unless_one(done.rows_affected())
}

pub(super) async fn add_webhook_secret(
    pool: &PgPool,
    client_id: &str,
    secret: &WebhookSecret,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_secrets (client_id, secret, active, created_at) \
         VALUES ($1, $2, TRUE, $3) ON CONFLICT (client_id, secret) DO NOTHING",
    )
    .bind(client_id)
    .bind(secret.expose())
    .bind(now_millis())
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn list_client_secrets(pool: &PgPool) -> StoreResult<Vec<ClientSecrets>> {
    // One statement, so clients and secrets come from the same snapshot.
    let sql = format!(
        "SELECT {CLIENT_COLS}, s.secret AS secret FROM clients c \
         LEFT JOIN webhook_secrets s ON s.client_id = c.id AND s.active \
         ORDER BY c.created_at, c.rowid, s.created_at, s.id"
    );
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(map_err)?;
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

// ---- links ------------------------------------------------------------------

pub(super) async fn insert_link(pool: &PgPool, link: &Link) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    sqlx::query(
        "INSERT INTO links (id, client_id, slug, destination, label, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
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
            "INSERT INTO link_promo_codes (link_id, client_id, code) VALUES ($1, $2, $3) \
             ON CONFLICT (link_id, code) DO NOTHING",
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

/// Links matching `where_sql` (over `links l`, `$1…` bound to `args` in
/// order), each with its promotion codes, oldest first.
pub(super) async fn load_links(
    pool: &PgPool,
    where_sql: &str,
    args: &[&str],
) -> StoreResult<Vec<Link>> {
    let sql =
        format!("SELECT {LINK_COLS} FROM links l WHERE {where_sql} ORDER BY l.created_at, l.rowid");
    let mut q = sqlx::query(&sql);
    for a in args {
        q = q.bind(*a);
    }
    q.fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(link_from_row)
        .collect()
}

// ---- clicks -----------------------------------------------------------------

pub(super) async fn insert_click(pool: &PgPool, click: &Click) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO clicks (id, link_id, client_id, at, visitor_id, referrer, \
         landing_url, user_agent, ip_hash, bot) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn get_click(
    pool: &PgPool,
    client_id: &str,
    click_id: &str,
) -> StoreResult<Option<Click>> {
    let sql = format!("SELECT {CLICK_COLS} FROM clicks WHERE id = $1 AND client_id = $2");
    sqlx::query(&sql)
        .bind(click_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(click_from_row)
        .transpose()
}

/// The SQL of `latest_click`: walks `clicks_client_bot_at` backwards from
/// `$2`, one index seek whatever the history size.
pub(super) fn latest_click_sql(bounded_below: bool) -> String {
    let lower = if bounded_below { " AND at >= $3" } else { "" };
    format!(
        "SELECT {CLICK_COLS} FROM clicks \
         WHERE client_id = $1 AND bot = FALSE AND at <= $2{lower} ORDER BY at DESC LIMIT 1"
    )
}

pub(super) async fn latest_click(
    pool: &PgPool,
    client_id: &str,
    from: Option<Millis>,
    to: Millis,
) -> StoreResult<Option<Click>> {
    let sql = latest_click_sql(from.is_some());
    let mut q = sqlx::query(&sql).bind(client_id).bind(to);
    if let Some(from) = from {
        q = q.bind(from);
    }
    q.fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(click_from_row)
        .transpose()
}

pub(super) async fn recent_clicks_for_link(
    pool: &PgPool,
    link_id: &str,
    limit: i64,
) -> StoreResult<Vec<Click>> {
    let sql =
        format!("SELECT {CLICK_COLS} FROM clicks WHERE link_id = $1 ORDER BY at DESC LIMIT $2");
    sqlx::query(&sql)
        .bind(link_id)
        .bind(limit_or(limit, 100))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(click_from_row)
        .collect()
}

pub(super) async fn count_clicks(pool: &PgPool, client_id: Option<&str>) -> StoreResult<i64> {
    match client_id {
        Some(c) => sqlx::query_scalar("SELECT COUNT(*) FROM clicks WHERE client_id = $1")
            .bind(c)
            .fetch_one(pool)
            .await
            .map_err(map_err),
        None => sqlx::query_scalar("SELECT COUNT(*) FROM clicks")
            .fetch_one(pool)
            .await
            .map_err(map_err),
    }
}

// ---- admin sessions ---------------------------------------------------------

pub(super) async fn insert_session(pool: &PgPool, session: &AdminSession) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO admin_sessions (id_hash, csrf_token, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&session.id_hash)
    .bind(&session.csrf_token)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn get_session(
    pool: &PgPool,
    id_hash: &str,
    now: Millis,
) -> StoreResult<Option<AdminSession>> {
    let row = sqlx::query(
        "SELECT id_hash, csrf_token, created_at, expires_at FROM admin_sessions \
         WHERE id_hash = $1 AND expires_at > $2",
    )
    .bind(id_hash)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    row.map(|r| {
        Ok(AdminSession {
            id_hash: get(&r, "id_hash")?,
            csrf_token: get(&r, "csrf_token")?,
            created_at: get(&r, "created_at")?,
            expires_at: get(&r, "expires_at")?,
        })
    })
    .transpose()
}

pub(super) async fn delete_session(pool: &PgPool, id_hash: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(())
}
