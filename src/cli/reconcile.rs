//! `salestrack reconcile` and the periodic job `serve --reconcile-interval`
//! starts (SPEC 2.10).

use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use super::ReconcileArgs;
use crate::config::Config;
use crate::domain::Tracker;
use crate::jobs::reconcile::ReconcileJob;
use crate::stripe::api::StripeApi;

fn stripe_api(config: &Config) -> anyhow::Result<StripeApi> {
    StripeApi::new(&config.stripe_api_base).context("the Stripe API base URL")
}

/// Reconciles, prints one line (or JSON object) per client, and fails —
/// naming each client that failed — once every client has had its turn.
pub(super) async fn run(
    tracker: &Tracker,
    config: &Config,
    args: ReconcileArgs,
    json: bool,
) -> anyhow::Result<()> {
    let since = humantime::parse_duration(args.since.trim())
        .with_context(|| format!("--since {:?} (for example 72h, 7d)", args.since))?;
    let since_s = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    if since_s == 0 {
        bail!("--since must be longer than 0");
    }
    let created_gte = chrono::Utc::now().timestamp().saturating_sub(since_s);
    let api = stripe_api(config)?;
    let reports = tracker
        .reconcile(&api, args.client.as_deref(), created_gte)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if reports.is_empty() {
        println!(
            "no client has a Stripe API key: give one with `salestrack client add --stripe-api-key-file rk.txt`"
        );
    } else {
        for r in &reports {
            let mut line = format!(
                "{} ({}): {} events fetched, {} new, {} already stored",
                r.client_name, r.client_id, r.fetched, r.new, r.already_stored
            );
            if r.verified_now > 0 {
                line.push_str(&format!(
                    ", {} verified now (their signature had failed)",
                    r.verified_now
                ));
            }
            println!("{line}");
            if let Some(error) = &r.error {
                println!("  error: {error}");
            }
        }
    }
    let failures: Vec<&str> = reports.iter().filter_map(|r| r.error.as_deref()).collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Starts the periodic reconciliation when `reconcile_interval` is set.
pub(super) fn spawn_periodic(
    tracker: &Arc<Tracker>,
    config: &Config,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(every) = config.reconcile_every()? else {
        return Ok(());
    };
    let window = config.reconcile_window()?;
    let job = ReconcileJob::new(tracker.clone(), stripe_api(config)?, window);
    tracing::info!(
        every = %humantime::format_duration(every),
        window = %humantime::format_duration(window),
        "periodic reconciliation with Stripe on"
    );
    tokio::spawn(job.run(every, cancel.clone()));
    Ok(())
}
