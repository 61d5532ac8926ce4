//! The HTTP edge: routes, extractors and handlers. Handlers hold no SQL and
//! no business rules; they translate between HTTP and the domain.

pub mod admin;
pub mod api;
pub mod client_addr;
pub mod deadline;
pub mod health;
pub mod metrics;
pub mod public;
pub mod server;
pub mod webhook;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

pub use client_addr::ClientAddr;

use crate::domain::Tracker;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub tracker: Arc<Tracker>,
    /// Failed admin logins and wrong API tokens, per address: both guess
    /// the same secret, so they count together.
    pub failed_logins: Arc<admin::LoginLimiter>,
}

impl AppState {
    pub fn new(tracker: Arc<Tracker>) -> Self {
        Self {
            tracker,
            failed_logins: Arc::new(admin::LoginLimiter::default()),
        }
    }
}

/// The whole router, with the default edge limits.
pub fn router(state: AppState) -> Router {
    router_with(state, &server::EdgeOptions::default())
}

/// The whole router; `options` gives the body deadline and `/metrics`'s token.
pub fn router_with(state: AppState, options: &server::EdgeOptions) -> Router {
    metrics::handle();
    Router::new()
        .merge(public::routes())
        .merge(webhook::routes())
        .merge(health::routes())
        .merge(admin::routes())
        .merge(api::routes())
        .merge(metrics::routes(options.metrics_token.clone()))
        .layer(middleware::from_fn_with_state(
            options.body_timeout,
            deadline::limit_body_time,
        ))
        .layer(middleware::from_fn(metrics::track_latency))
        .layer(middleware::from_fn(limit_header_size))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Headers beyond this many bytes in total are refused with 431: no client
/// of ours (Stripe, browsers, the snippet) sends anything near it.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn limit_header_size(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.as_bytes().len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        tracing::warn!(size, "request headers too large");
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Json(serde_json::json!({"error": {"code": "headers_too_large", "message": "request headers are limited to 32 KiB"}})),
        )
            .into_response();
    }
    next.run(request).await
}
