//! Figures measured in this process against the store: attribution cost
//! with a small and a large click history, and Auto-Fix over many orphans.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use salestrack::domain::attribution::{attribute, AttributionInput};
use salestrack::domain::ingest::{Delivery, Endpoint, IngestOutcome};
use salestrack::domain::model::Click;
use salestrack::domain::{DomainConfig, Tracker};
use salestrack::stripe::event::Hints;

use crate::events::{self, Mix, Signed};
use crate::http_figures::cleanup;
use crate::report::{Figure, Report};
use crate::setup::{self, Fixture, SECRET};
use crate::Sizes;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn tracker(db_url: &str) -> anyhow::Result<Arc<Tracker>> {
    let store = salestrack::storage::connect(db_url).await?;
    Ok(Arc::new(
        Tracker::new(store, DomainConfig::default()).await?,
    ))
}

fn delivery(client_id: &str, e: &Signed) -> Delivery {
    Delivery {
        endpoint: Endpoint::Client(client_id.to_string()),
        signature: Some(e.signature.clone()),
        headers: vec![("stripe-signature".into(), e.signature.clone())],
        body: e.body.to_vec(),
        received_at: chrono::Utc::now().timestamp_millis(),
    }
}

struct Cost {
    /// Median of one `attribute` call, microseconds.
    attribute_us: f64,
    /// Median of one whole ingest (verify, store, attribute, save), ms.
    ingest_ms: f64,
}

async fn attribution_cost(fx: &Fixture, samples: usize, tag: &str) -> anyhow::Result<Cost> {
    let tracker = tracker(&fx.db_url).await?;
    let store = tracker.store().clone();
    let client = store
        .get_client(&fx.client_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("client vanished"))?;
    let now = chrono::Utc::now().timestamp_millis();
    // Warm the caches, then time: a third by click id, a third by slug, a
    // third through customer history and the click windows.
    let mut times = Vec::with_capacity(samples);
    for round in 0..2 {
        times.clear();
        for i in 0..samples {
            let hints = match i % 3 {
                0 => Hints {
                    client_reference_id: Some(fx.click_ids[i % fx.click_ids.len()].clone()),
                    ..Default::default()
                },
                1 => Hints {
                    link_slug: Some(fx.slugs[i % fx.slugs.len()].clone()),
                    ..Default::default()
                },
                _ => Hints::default(),
            };
            let customer = format!("cus_attr_{round}_{i}");
            let email = format!("attr{round}.{i}@example.com");
            let input = AttributionInput {
                client: &client,
                conversion_id: "conv_bench",
                hints: &hints,
                alternatives: &[],
                customer: Some(&customer),
                email: Some(&email),
                purchased_at: now - (i as i64 % 1000) * 60_000,
            };
            let t = Instant::now();
            let found = attribute(store.as_ref(), &input).await?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            anyhow::ensure!(found.link_id.is_some(), "attribution found no link");
        }
    }
    let attribute_us = median(times.clone());

    let mix = Mix {
        slugs: fx.slugs.clone(),
        click_ids: fx.click_ids.clone(),
        ..Default::default()
    };
    let events = events::make(tag, samples, &mix, SECRET);
    let mut ingest = Vec::with_capacity(samples);
    for e in &events {
        let t = Instant::now();
        let outcome = tracker.ingest(delivery(&fx.client_id, e)).await?;
        ingest.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            matches!(outcome, IngestOutcome::Accepted { .. }),
            "not accepted: {outcome:?}"
        );
    }
    Ok(Cost {
        attribute_us,
        ingest_ms: median(ingest),
    })
}

pub async fn attribution(sizes: &Sizes, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let samples = if sizes.quick { 300 } else { 3000 };
    let mut costs = Vec::new();
    for clicks in [sizes.small_history, sizes.large_history] {
        let db = dir.join(format!("attribution-{clicks}.db"));
        let t = Instant::now();
        let fx = setup::prepare(&db, 20, clicks).await?;
        eprintln!(
            "   {clicks} clicks stored in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        costs.push((
            clicks,
            attribution_cost(&fx, samples, &format!("a{clicks}")).await?,
        ));
        cleanup(&db);
    }
    let (small_n, small) = &costs[0];
    let (large_n, large) = &costs[1];
    let r = large.attribute_us / small.attribute_us;
    report.add(Figure {
        name: format!(
            "attribution (the seven steps), {large_n} vs {small_n} stored clicks, median"
        ),
        value: format!("{:.0} µs", large.attribute_us),
        baseline: format!("{:.0} µs", small.attribute_us),
        ratio: format!("{r:.2}"),
        target: "≤ 1.5".into(),
        pass: Some(r <= 1.5),
    });
    let r2 = large.ingest_ms / small.ingest_ms;
    report.add(Figure {
        name: format!("one conversion end to end (ingest, one at a time), {large_n} vs {small_n} stored clicks, median"),
        value: format!("{:.2} ms", large.ingest_ms),
        baseline: format!("{:.2} ms", small.ingest_ms),
        ratio: format!("{r2:.2}"),
        target: "≤ 1.5".into(),
        pass: Some(r2 <= 1.5),
    });
    Ok(())
}

/// Orphans: purchases a minute apart, long ago, with no hint and no click.
/// Then one click lands just before the newest tenth: Auto-Fix links those
/// (the broader search) and explains why the others stay orphans.
pub async fn autofix(sizes: &Sizes, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let n = sizes.orphans;
    let db = dir.join("autofix.db");
    let fx = setup::prepare(&db, 20, 0).await?;
    let base = events::now_s() - 60 * n as i64 - 30 * 24 * 3600;
    let mix = Mix {
        no_hints: true,
        purchased_at: Some(Box::new(move |i| base + 60 * i as i64)),
        ..Default::default()
    };
    let tracker = tracker(&fx.db_url).await?;
    let t = Instant::now();
    // Made and ingested in slices, so that every signature is fresh.
    let slice = 20_000;
    let mut done = 0;
    while done < n {
        let count = slice.min(n - done);
        let events = Arc::new(events::make_range("o", done, count, &mix, SECRET));
        let workers = 16;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let events = events.clone();
            let tracker = tracker.clone();
            let client_id = fx.client_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = w;
                while k < events.len() {
                    tracker.ingest(delivery(&client_id, &events[k])).await?;
                    k += workers;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        done += count;
    }
    let orphans = tracker.store().orphan_ids(None, -1).await?.len();
    eprintln!(
        "   {orphans} orphans made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let link = tracker
        .store()
        .find_link(&fx.client_id, &fx.slugs[0])
        .await?
        .ok_or_else(|| anyhow::anyhow!("link vanished"))?;
    let click_at = (base + 60 * (n as i64 * 9 / 10)) * 1000;
    tracker
        .store()
        .insert_click(&Click {
            id: "clk_autofix_bench".into(),
            link_id: link.id.clone(),
            client_id: fx.client_id.clone(),
            at: click_at,
            visitor_id: None,
            referrer: None,
            landing_url: None,
            user_agent: Some("Mozilla/5.0".into()),
            ip_hash: None,
            bot: false,
        })
        .await?;
    let t = Instant::now();
    let first = tracker.autofix(None).await?;
    let first_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let second = tracker.autofix(None).await?;
    let second_s = t.elapsed().as_secs_f64();
    report.add(Figure {
        name: format!("Auto-Fix over {orphans} orphans (SQLite)"),
        value: format!(
            "{first_s:.2} s ({} fixed, {} still orphan with reasons)",
            first.fixed, first.remaining
        ),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "< 10 s".into(),
        pass: Some(first_s < 10.0),
    });
    report.add(Figure {
        name: format!("Auto-Fix again over the {} left", first.remaining),
        value: format!("{second_s:.2} s ({} fixed)", second.fixed),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "reported".into(),
        pass: None,
    });
    drop(tracker);
    cleanup(&db);
    Ok(())
}
