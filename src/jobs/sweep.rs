//! The sweep (layer 4): retries failed events and events that waited for a
//! client, then runs Auto-Fix over the orphans. Every few minutes in `serve`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::domain::autofix::{AutofixReport, RetryReport};
use crate::domain::{DomainResult, Tracker};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SweepOutcome {
    pub events: RetryReport,
    pub orphans: AutofixReport,
}

pub struct Sweep {
    tracker: Arc<Tracker>,
}

impl Sweep {
    pub fn new(tracker: Arc<Tracker>) -> Self {
        Self { tracker }
    }

    /// One pass: failed events first (their sales may fix orphans), then orphans.
    /// When another instance on the same database is sweeping, this one
    /// leaves the run to it and reports nothing done.
    pub async fn run_once(&self) -> DomainResult<SweepOutcome> {
        let Some(_running) = self.tracker.store().try_lock_job("sweep").await? else {
            tracing::info!("another instance is sweeping; this run is left to it");
            return Ok(SweepOutcome {
                events: RetryReport::default(),
                orphans: AutofixReport::default(),
            });
        };
        let events = self.tracker.retry_events().await?;
        let orphans = self.tracker.autofix(None).await?;
        Ok(SweepOutcome { events, orphans })
    }

    /// Runs `run_once` every `every` until `cancel` fires.
    pub async fn run(self, every: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {
                    match self.run_once().await {
                        Ok(o) => tracing::info!(
                            retried = o.events.retried,
                            fixed = o.orphans.fixed,
                            remaining = o.orphans.remaining,
                            "sweep done"
                        ),
                        Err(e) => tracing::warn!(error = %e, "sweep failed; next run will retry"),
                    }
                }
            }
        }
    }
}
