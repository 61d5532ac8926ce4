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
    pub async fn run_once(&self) -> DomainResult<SweepOutcome> {
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
