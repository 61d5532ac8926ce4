//! The optional periodic reconciliation (`serve --reconcile-interval`): the
//! same code as `salestrack reconcile`, over every client with an API key.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::reconcile::ClientReconcile;
use crate::domain::{DomainResult, Tracker};
use crate::stripe::api::StripeApi;

pub struct ReconcileJob {
    tracker: Arc<Tracker>,
    api: StripeApi,
    window: Duration,
}

impl ReconcileJob {
    /// Each run reads the events of the last `window`.
    pub fn new(tracker: Arc<Tracker>, api: StripeApi, window: Duration) -> Self {
        Self {
            tracker,
            api,
            window,
        }
    }

    /// One pass over every client that has a Stripe API key. When another
    /// instance on the same database is reconciling, this one leaves the run
    /// to it and reports nothing.
    pub async fn run_once(&self) -> DomainResult<Vec<ClientReconcile>> {
        let Some(_running) = self.tracker.store().try_lock_job("reconcile").await? else {
            tracing::info!("another instance is reconciling; this run is left to it");
            return Ok(Vec::new());
        };
        let window_s = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        let created_gte = chrono::Utc::now().timestamp().saturating_sub(window_s);
        self.tracker.reconcile(&self.api, None, created_gte).await
    }

    /// Runs `run_once` every `every` until `cancel` fires; the first run
    /// comes one interval after start.
    pub async fn run(self, every: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {
                    match self.run_once().await {
                        Ok(reports) => {
                            let new: usize = reports.iter().map(|r| r.new + r.verified_now).sum();
                            let failed = reports.iter().filter(|r| r.error.is_some()).count();
                            tracing::info!(clients = reports.len(), new, failed, "periodic reconciliation done");
                        }
                        Err(e) => tracing::warn!(error = %e, "periodic reconciliation failed; next run will retry"),
                    }
                }
            }
        }
    }
}
