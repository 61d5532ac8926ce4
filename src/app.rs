//! Wiring: open the store, build the domain, serve HTTP and the sweep until
//! a shutdown signal.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::{DomainConfig, Tracker};
use crate::http::server::EdgeOptions;
use crate::http::{router_with, AppState};
use crate::jobs::sweep::Sweep;
use crate::storage;

pub async fn build_tracker(config: &Config) -> anyhow::Result<Arc<Tracker>> {
    let store = storage::connect_with(&config.database_url, &config.db_options()?)
        .await
        .with_context(|| format!("opening {}", storage::redact_url(&config.database_url)))?;
    let domain = DomainConfig {
        public_url: config.public_url.clone(),
        signature_tolerance_s: config.signature_tolerance_s,
        max_attempts: config.max_attempts,
        trusted_proxies: config.trusted_proxies()?,
        unverified_budget: config.unverified_budget(),
    };
    Ok(Arc::new(Tracker::new(store, domain).await?))
}

/// Serves on `listener` until `cancel` fires; runs the sweep when configured.
pub async fn serve(
    tracker: Arc<Tracker>,
    listener: tokio::net::TcpListener,
    sweep_every: Option<std::time::Duration>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(
        tracker,
        listener,
        sweep_every,
        cancel,
        &EdgeOptions::default(),
    )
    .await
}

/// `serve` with the edge's limits (timeouts, connection cap, shutdown
/// deadline, `/metrics` token) from the configuration.
pub async fn serve_with(
    tracker: Arc<Tracker>,
    listener: tokio::net::TcpListener,
    sweep_every: Option<std::time::Duration>,
    cancel: CancellationToken,
    edge: &EdgeOptions,
) -> anyhow::Result<()> {
    if let Some(every) = sweep_every {
        let sweep = Sweep::new(tracker.clone());
        tokio::spawn(sweep.run(every, cancel.clone()));
    }
    let app = router_with(AppState::new(tracker), edge);
    crate::http::server::run(listener, app, edge, cancel)
        .await
        .context("serving HTTP")?;
    Ok(())
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}
