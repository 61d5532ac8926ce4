//! Aggregates for the dashboard and the status rules (SQLite dialect).
//! These scan whole tables: `mod.rs` runs them off the async workers.

use rusqlite::{params, Connection};

use super::rows::{get, query_all};
use crate::domain::model::Millis;
use crate::domain::report::*;
use crate::storage::StoreResult;

const DAY_MS: i64 = 24 * 3600 * 1000;

pub(super) fn client_activity(conn: &Connection, now: Millis) -> StoreResult<Vec<ClientActivity>> {
    let day = now - DAY_MS;
    let week = now - 7 * DAY_MS;
    query_all(conn, "SELECT c.id AS client_id,
               (SELECT COUNT(*) FROM webhook_secrets s WHERE s.client_id = c.id AND s.active = 1) AS secrets,
               (SELECT MAX(received_at) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.source = 'push') AS last_event_at,
               (SELECT MAX(received_at) FROM webhook_events e WHERE e.client_id = c.id AND e.verification = 'verified' AND e.source = 'push') AS last_verified_event_at,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.received_at >= ?1) AS events_24h,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.received_at >= ?2) AS events_7d,
               (SELECT COUNT(*) FROM conversions v WHERE v.client_id = c.id AND v.merged_into IS NULL AND v.verified = 1 AND v.created_at >= ?1) AS conversions_24h,
               (SELECT COUNT(*) FROM conversions v WHERE v.client_id = c.id AND v.merged_into IS NULL AND v.verified = 1 AND v.created_at >= ?2) AS conversions_7d,
               (SELECT COUNT(*) FROM conversions v WHERE v.client_id = c.id AND v.merged_into IS NULL AND v.verified = 1 AND v.link_id IS NULL) AS orphans,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.verification = 'unverified' AND e.processing <> 'invalid') AS unverified_events,
               (SELECT MIN(received_at) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.verification = 'unverified' AND e.processing <> 'invalid') AS first_unverified_at,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.processing = 'failed') AS failed_events,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.livemode = 1) AS live_events,
               (SELECT COUNT(*) FROM webhook_events e WHERE (e.client_id = c.id OR e.endpoint_client_id = c.id) AND e.livemode = 0) AS test_events,
               (SELECT COUNT(*) FROM clicks k WHERE k.client_id = c.id AND k.bot = 0 AND k.at >= ?2) AS clicks_7d
             FROM clients c ORDER BY c.created_at, c.rowid", params![day, week], |r| {
        Ok(ClientActivity {
            client_id: get(r, "client_id")?,
            secrets: get(r, "secrets")?,
            last_event_at: get(r, "last_event_at")?,
            last_verified_event_at: get(r, "last_verified_event_at")?,
            events_24h: get(r, "events_24h")?,
            events_7d: get(r, "events_7d")?,
            conversions_24h: get(r, "conversions_24h")?,
            conversions_7d: get(r, "conversions_7d")?,
            orphans: get(r, "orphans")?,
            unverified_events: get(r, "unverified_events")?,
            first_unverified_at: get(r, "first_unverified_at")?,
            failed_events: get(r, "failed_events")?,
            live_events: get(r, "live_events")?,
            test_events: get(r, "test_events")?,
            clicks_7d: get(r, "clicks_7d")?,
        })
    })
}

fn currency_total(r: &rusqlite::Row<'_>) -> StoreResult<CurrencyTotal> {
    Ok(CurrencyTotal {
        currency: get(r, "currency")?,
        conversions: get(r, "conversions")?,
        revenue: get(r, "revenue")?,
        net: get(r, "net")?,
    })
}

pub(super) fn currency_totals(
    conn: &Connection,
    client_id: Option<&str>,
    livemode: bool,
) -> StoreResult<Vec<CurrencyTotal>> {
    query_all(
        conn,
        "SELECT currency, COUNT(*) AS conversions, SUM(amount) AS revenue, SUM(net_amount) AS net
             FROM conversions
             WHERE merged_into IS NULL AND verified = 1 AND kind <> 'trial_start' AND livemode = ?1
               AND (?2 IS NULL OR client_id = ?2)
             GROUP BY currency ORDER BY currency",
        params![livemode, client_id],
        currency_total,
    )
}

pub(super) fn daily_counts(
    conn: &Connection,
    client_id: Option<&str>,
    from: Millis,
) -> StoreResult<Vec<DailyCount>> {
    query_all(conn, "SELECT day, SUM(clicks) AS clicks, SUM(conversions) AS conversions FROM (
                SELECT date(at / 1000, 'unixepoch') AS day, COUNT(*) AS clicks, 0 AS conversions
                  FROM clicks WHERE bot = 0 AND at >= ?1 AND (?2 IS NULL OR client_id = ?2)
                  GROUP BY day
                UNION ALL
                SELECT date(purchased_at / 1000, 'unixepoch') AS day, 0 AS clicks, COUNT(*) AS conversions
                  FROM conversions WHERE merged_into IS NULL AND verified = 1 AND purchased_at >= ?1
                    AND (?2 IS NULL OR client_id = ?2)
                  GROUP BY day
             ) GROUP BY day ORDER BY day", params![from, client_id], |r| {
        Ok(DailyCount {
            day: get(r, "day")?,
            clicks: get(r, "clicks")?,
            conversions: get(r, "conversions")?,
        })
    })
}

pub(super) fn link_stats(
    conn: &Connection,
    client_id: &str,
    livemode: bool,
) -> StoreResult<Vec<LinkStats>> {
    let links = query_all(conn, "SELECT l.id AS link_id,
               (SELECT COUNT(*) FROM clicks k WHERE k.link_id = l.id AND k.bot = 0) AS clicks,
               (SELECT COUNT(DISTINCT COALESCE(k.visitor_id, k.ip_hash, k.id)) FROM clicks k WHERE k.link_id = l.id AND k.bot = 0) AS unique_clicks,
               (SELECT COUNT(*) FROM clicks k WHERE k.link_id = l.id AND k.bot = 1) AS bot_clicks,
               (SELECT COUNT(*) FROM conversions v WHERE v.link_id = l.id AND v.merged_into IS NULL AND v.verified = 1 AND v.kind <> 'trial_start' AND v.livemode = ?2) AS conversions
             FROM links l WHERE l.client_id = ?1 ORDER BY l.created_at, l.rowid", params![client_id, livemode], |r| {
        Ok(LinkStats {
            link_id: get(r, "link_id")?,
            clicks: get(r, "clicks")?,
            unique_clicks: get(r, "unique_clicks")?,
            bot_clicks: get(r, "bot_clicks")?,
            conversions: get(r, "conversions")?,
            revenue: Vec::new(),
        })
    })?;
    let revenue = query_all(conn, "SELECT link_id, currency, COUNT(*) AS conversions, SUM(amount) AS revenue, SUM(net_amount) AS net
             FROM conversions WHERE client_id = ?1 AND link_id IS NOT NULL AND merged_into IS NULL
               AND verified = 1 AND kind <> 'trial_start' AND livemode = ?2
             GROUP BY link_id, currency ORDER BY currency", params![client_id, livemode], |r| {
        Ok((get::<String>(r, "link_id")?, currency_total(r)?))
    })?;
    Ok(links
        .into_iter()
        .map(|mut stats| {
            stats.revenue = revenue
                .iter()
                .filter(|(link, _)| *link == stats.link_id)
                .map(|(_, total)| total.clone())
                .collect();
            stats
        })
        .collect())
}
