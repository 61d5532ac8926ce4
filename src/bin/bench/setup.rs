//! Databases for the benchmark: a client with a webhook secret, links, and
//! clicks bulk-inserted in big transactions.

use std::path::Path;

use anyhow::Context;
use salestrack::domain::client::{ClientIn, LinkIn};
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::storage::sqlite::SqliteStore;

pub const SECRET: &str = "whsec_benchmark_secret_0123456789abcdef";
/// Clicks are spread over the year before the run.
const CLICK_SPAN_MS: i64 = 365 * 24 * 3600 * 1000;

pub struct Fixture {
    pub db_url: String,
    pub client_id: String,
    pub slugs: Vec<String>,
    /// Non-bot stored click ids, for `client_reference_id` hints.
    pub click_ids: Vec<String>,
}

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A fresh database at `path`: one client, `links` links, `clicks` clicks.
pub async fn prepare(path: &Path, links: usize, clicks: u64) -> anyhow::Result<Fixture> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let db_url = sqlite_url(path);
    let store = salestrack::storage::connect(&db_url).await?;
    let tracker = Tracker::new(store, DomainConfig::default()).await?;
    let client = tracker
        .add_client(ClientIn {
            name: "Bench Shop".into(),
            domain: Some("shop.example.com".into()),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .await?;
    let mut slugs = Vec::new();
    for i in 0..links {
        let slug = format!("creator{i}");
        tracker
            .add_link(LinkIn {
                client: client.id.clone(),
                slug: slug.clone(),
                destination: format!("https://shop.example.com/p/{i}?utm_source=bench"),
                label: Some(format!("Creator {i}")),
                promo_codes: vec![],
            })
            .await?;
        slugs.push(slug);
    }
    drop(tracker);
    insert_clicks(&db_url, &client.id, clicks).await?;
    let click_ids = (0..clicks.min(5000))
        .map(|k| clicks - 1 - k)
        .filter(|i| i % 20 != 0)
        .map(click_id)
        .collect();
    Ok(Fixture {
        db_url,
        client_id: client.id,
        slugs,
        click_ids,
    })
}

pub fn click_id(i: u64) -> String {
    format!("clk_b{i:010}")
}

/// Bulk-inserts `count` clicks (one in twenty a bot) over the client's
/// links, a million per transaction, the newest a minute before now.
pub async fn insert_clicks(db_url: &str, client_id: &str, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let store = SqliteStore::open(db_url).await?;
    let client_id = client_id.to_string();
    store.with_write_connection(|conn| -> anyhow::Result<()> {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS bench_links (k INTEGER PRIMARY KEY, id TEXT); \
             DELETE FROM bench_links;",
        )?;
        conn.execute(
            "INSERT INTO bench_links (k, id) \
             SELECT row_number() OVER (ORDER BY rowid) - 1, id FROM links WHERE client_id = ?",
            [&client_id],
        )?;
        let links: i64 = conn.query_row("SELECT COUNT(*) FROM bench_links", [], |r| r.get(0))?;
        anyhow::ensure!(links > 0, "the client has no links");
        let now = chrono::Utc::now().timestamp_millis();
        let first_at = now - 60_000 - CLICK_SPAN_MS;
        let step = (CLICK_SPAN_MS / count as i64).max(1);
        const CHUNK: u64 = 1_000_000;
        let mut from = 0u64;
        while from < count {
            let to = (from + CHUNK).min(count);
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?2) \
                 INSERT INTO clicks (id, link_id, client_id, at, visitor_id, referrer, landing_url, \
                                     user_agent, ip_hash, bot) \
                 SELECT printf('clk_b%010d', i), l.id, ?3, ?4 + i * ?5, \
                        printf('vis_b%d', i % 100000), 'https://social.example/post', NULL, \
                        'Mozilla/5.0 (X11; Linux x86_64) bench', printf('%032x', i), (i % 20 = 0) \
                 FROM s JOIN bench_links l ON l.k = s.i % ?6",
                rusqlite::params![from as i64, to as i64, client_id, first_at, step, links],
            )
            .context("bulk click insert")?;
            tx.commit()?;
            from = to;
        }
        // The load is finished when its pages are in the database file: a
        // measurement must not run beside the checkpoint of gigabytes of WAL.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }).await?;
    Ok(())
}
