//! Figures over real HTTP: `/r/{slug}` with and without the durable click
//! write, webhook ingest against the Node.js baseline, resident memory.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

use crate::events::{self, Mix, Signed};
use crate::load::{self, LoadResult, MakeRequest, Plan};
use crate::report::{Figure, Report};
use crate::server::{self, Server};
use crate::setup::{self, SECRET};
use crate::Sizes;

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn ratio(value: f64, baseline: f64) -> String {
    format!("{:.2}", value / baseline)
}

fn summary(r: &LoadResult) -> String {
    format!(
        "{:.0}/s, p50 {:.2} ms, p99 {:.1} ms",
        r.per_second(),
        r.percentile_ms(50.0),
        r.percentile_ms(99.0)
    )
}

/// Samples the server's VmRSS while `run` goes on; returns the highest.
async fn with_peak_rss<F: std::future::Future<Output = LoadResult>>(
    server: &Server,
    run: F,
) -> (LoadResult, f64) {
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = server::rss_mib(pid) {
                    peak = peak.max(m);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let result = run.await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(f64::NAN);
    (result, peak)
}

/// CPU time used by the server and by this process (the load generator)
/// from `start` on, per request answered meanwhile.
struct CpuMark {
    pid: u32,
    server: Option<f64>,
    load: Option<f64>,
}

/// Microseconds of CPU per answered request.
struct CpuPerEvent {
    server: f64,
    load: f64,
}

impl CpuMark {
    fn start(server: &Server) -> Self {
        Self {
            pid: server.pid(),
            server: server::cpu_seconds(Some(server.pid())),
            load: server::cpu_seconds(None),
        }
    }

    fn per_event(&self, answered: u64) -> CpuPerEvent {
        let per = |before: Option<f64>, now: Option<f64>| match (before, now) {
            (Some(b), Some(n)) if answered > 0 => (n - b) * 1e6 / answered as f64,
            _ => f64::NAN,
        };
        CpuPerEvent {
            server: per(self.server, server::cpu_seconds(Some(self.pid))),
            load: per(self.load, server::cpu_seconds(None)),
        }
    }
}

impl std::fmt::Display for CpuPerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server {:.0} µs + load generator {:.0} µs",
            self.server, self.load
        )
    }
}

/// SPEC 5: webhooks fully processed per second.
const WEBHOOK_TARGET_PER_S: f64 = 10_000.0;

fn check_errors(report: &mut Report, what: &str, r: &LoadResult) {
    if r.errors > 0 || r.server_5xx > 0 {
        report.note(format!(
            "{what}: {} connection errors, {} 5xx",
            r.errors, r.server_5xx
        ));
    }
}

pub async fn redirect(sizes: &Sizes, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db = dir.join("redirect.db");
    let fx = setup::prepare(&db, 20, 10_000).await?;
    let plan = Plan {
        connections: 64,
        warmup: sizes.warmup,
        measure: sizes.measure,
    };
    let slugs = Arc::new(fx.slugs.clone());
    let make: MakeRequest = Arc::new(move |i| {
        Request::builder()
            .method(Method::GET)
            .uri(format!("/r/{}", slugs[i as usize % slugs.len()]))
            .header("user-agent", USER_AGENT)
            .header("referer", "https://social.example/post/1")
            .body(Full::new(Bytes::new()))
            .ok()
    });
    let log = dir.join("redirect-server.log");

    let baseline_server = server::start_salestrack(&fx.db_url, false, &log).await?;
    let baseline = load::run(baseline_server.addr, plan, make.clone()).await;
    baseline_server.stop();
    check_errors(report, "redirect without write", &baseline);

    let durable_server = server::start_salestrack(&fx.db_url, true, &log).await?;
    let (durable, peak) = with_peak_rss(
        &durable_server,
        load::run(durable_server.addr, plan, make.clone()),
    )
    .await;
    durable_server.stop();
    check_errors(report, "redirect with durable write", &durable);
    anyhow::ensure!(
        durable.redirect_3xx == durable.completed,
        "redirects answered other than 302: {} of {}",
        durable.completed - durable.redirect_3xx,
        durable.completed
    );

    let r = durable.per_second() / baseline.per_second();
    report.add(Figure {
        name: "`/r/{slug}` throughput, 64 connections, durable click write".into(),
        value: format!("{:.0} req/s", durable.per_second()),
        baseline: format!("{:.0} req/s (same server, no write)", baseline.per_second()),
        ratio: ratio(durable.per_second(), baseline.per_second()),
        target: "≥ 0.40".into(),
        pass: Some(r >= 0.40),
    });
    report.add(Figure {
        name: "`/r/{slug}` median latency, 64 connections".into(),
        value: format!("{:.2} ms", durable.percentile_ms(50.0)),
        baseline: format!("{:.2} ms", baseline.percentile_ms(50.0)),
        ratio: ratio(durable.percentile_ms(50.0), baseline.percentile_ms(50.0)),
        target: "< 3 ms".into(),
        pass: Some(durable.percentile_ms(50.0) < 3.0),
    });
    report.add(Figure {
        name: "`/r/{slug}` p99 latency, 64 connections".into(),
        value: format!("{:.1} ms", durable.percentile_ms(99.0)),
        baseline: format!("{:.1} ms", baseline.percentile_ms(99.0)),
        ratio: ratio(durable.percentile_ms(99.0), baseline.percentile_ms(99.0)),
        target: "reported".into(),
        pass: None,
    });
    report.add(Figure {
        name: "resident memory under redirect load (peak VmRSS)".into(),
        value: format!("{peak:.1} MiB"),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "reported".into(),
        pass: None,
    });
    let stored = count(&fx.db_url, "SELECT COUNT(*) FROM clicks").await? - 10_000;
    report.note(format!(
        "redirect: {} redirects answered 302 with the write on, {stored} clicks stored (every 302 had its click committed first)",
        durable.accepted_total
    ));
    cleanup(&db);
    Ok(())
}

async fn count(db_url: &str, sql: &str) -> anyhow::Result<i64> {
    let store = salestrack::storage::sqlite::SqliteStore::open(db_url).await?;
    Ok(store
        .with_write_connection(|c| c.query_row(sql, [], |r| r.get(0)))
        .await?)
}

pub fn cleanup(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

fn webhook_requests(path: String, events: Vec<Signed>) -> MakeRequest {
    let events = Arc::new(events);
    Arc::new(move |i| {
        let e = events.get(i as usize)?;
        Request::builder()
            .method(Method::POST)
            .uri(path.as_str())
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("stripe-signature", e.signature.as_str())
            .body(Full::new(e.body.clone()))
            .ok()
    })
}

/// Webhook ingest at 16 and 64 connections, salestrack then the Node.js
/// baseline; idle and loaded memory of the salestrack server.
pub async fn webhook(sizes: &Sizes, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db = dir.join("webhook.db");
    let fx = setup::prepare(&db, 20, 10_000).await?;
    let path = format!("/webhooks/stripe/{}", fx.client_id);
    let mix = Mix {
        slugs: fx.slugs.clone(),
        click_ids: fx.click_ids.clone(),
        ..Default::default()
    };
    let log = dir.join("webhook-server.log");
    let server = server::start_salestrack(&fx.db_url, true, &log).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.rss_mib();
    let mut ours = Vec::new();
    let mut peak = 0.0f64;
    for conns in [16usize, 64] {
        let events = events::make(&format!("s{conns}"), sizes.max_events, &mix, SECRET);
        let plan = Plan {
            connections: conns,
            warmup: sizes.warmup,
            measure: sizes.measure,
        };
        let cpu = CpuMark::start(&server);
        let (r, p) = with_peak_rss(
            &server,
            load::run(server.addr, plan, webhook_requests(path.clone(), events)),
        )
        .await;
        let cpu = cpu.per_event(r.accepted_total);
        peak = peak.max(p);
        check_errors(
            report,
            &format!("salestrack webhooks, {conns} connections"),
            &r,
        );
        anyhow::ensure!(
            r.ok_2xx == r.completed,
            "webhooks answered other than 2xx: {} of {}",
            r.completed - r.ok_2xx,
            r.completed
        );
        ours.push((conns, r, cpu));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_after = server.rss_mib();
    server.stop();
    let acked: u64 = ours.iter().map(|(_, r, _)| r.accepted_total).sum();
    let processed = count(
        &fx.db_url,
        "SELECT COUNT(*) FROM webhook_events WHERE processing = 'processed'",
    )
    .await?;
    let conversions = count(&fx.db_url, "SELECT COUNT(*) FROM conversions").await?;
    report.note(format!(
        "webhook: {acked} deliveries acknowledged, {processed} events stored and processed, {conversions} conversions"
    ));
    anyhow::ensure!(
        processed as u64 >= acked,
        "{acked} acknowledged but only {processed} processed"
    );

    let node = match server::node_baseline_dir() {
        Some(node_dir) => Some(node_baseline(sizes, dir, &node_dir, &path, &mix, report).await?),
        None => {
            report.note("Node.js baseline skipped: run bench/run.sh (it installs node_modules)");
            None
        }
    };
    for (conns, r, cpu) in &ours {
        let node_run = node
            .as_ref()
            .and_then(|n| n.iter().find(|(c, _, _)| c == conns));
        let base = node_run.map(|(_, b, _)| b);
        let node_rate = base.map(|b| b.per_second());
        report.add(Figure {
            name: format!("webhook events fully processed, {conns} connections (SQLite)"),
            value: summary(r),
            baseline: base.map_or("-".into(), |b| format!("Node.js: {}", summary(b))),
            ratio: node_rate.map_or("-".into(), |n| ratio(r.per_second(), n)),
            target: "≥ 10,000/s and ≥ 3× Node.js".into(),
            pass: Some(
                r.per_second() >= WEBHOOK_TARGET_PER_S
                    && node_rate.is_none_or(|n| r.per_second() >= 3.0 * n),
            ),
        });
        let node_cpu = node_run.map(|(_, _, c)| c);
        report.add(Figure {
            name: format!("CPU per acknowledged webhook, {conns} connections"),
            value: cpu.to_string(),
            baseline: node_cpu.map_or("-".into(), |c| format!("Node.js: {c}")),
            ratio: node_cpu.map_or("-".into(), |c| ratio(cpu.server, c.server)),
            target: "reported".into(),
            pass: None,
        });
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.note(format!(
        "webhook CPU budget: {cores} cores give {:.0} µs of CPU per event, server and load generator together, at {WEBHOOK_TARGET_PER_S:.0} events/s",
        cores as f64 * 1e6 / WEBHOOK_TARGET_PER_S
    ));
    report.add(Figure {
        name: "resident memory idle (VmRSS after start)".into(),
        value: format!("{idle:.1} MiB"),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "< 50 MiB".into(),
        pass: Some(idle < 50.0),
    });
    report.add(Figure {
        name: "resident memory under webhook load (peak) / idle after".into(),
        value: format!("{peak:.1} MiB / {idle_after:.1} MiB"),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "reported".into(),
        pass: None,
    });
    cleanup(&db);
    Ok(())
}

async fn node_baseline(
    sizes: &Sizes,
    dir: &Path,
    node_dir: &Path,
    path: &str,
    mix: &Mix,
    report: &mut Report,
) -> anyhow::Result<Vec<(usize, LoadResult, CpuPerEvent)>> {
    let db = dir.join("node-baseline.db");
    cleanup(&db);
    let log = dir.join("node-server.log");
    let server = server::start_node(node_dir, &db, SECRET, &log)
        .await
        .context("starting the Node.js baseline")?;
    let mut out = Vec::new();
    for conns in [16usize, 64] {
        let events = events::make(&format!("n{conns}"), sizes.max_events / 2, mix, SECRET);
        let plan = Plan {
            connections: conns,
            warmup: sizes.warmup,
            measure: sizes.measure,
        };
        let cpu = CpuMark::start(&server);
        let r = load::run(
            server.addr,
            plan,
            webhook_requests(path.to_string(), events),
        )
        .await;
        let cpu = cpu.per_event(r.accepted_total);
        check_errors(
            report,
            &format!("Node.js webhooks, {conns} connections"),
            &r,
        );
        anyhow::ensure!(
            r.ok_2xx == r.completed,
            "Node.js answered other than 2xx: {} of {}",
            r.completed - r.ok_2xx,
            r.completed
        );
        out.push((conns, r, cpu));
    }
    report.note(format!(
        "Node.js baseline: peak VmRSS {:.1} MiB",
        server.rss_mib()
    ));
    server.stop();
    cleanup(&db);
    Ok(out)
}
