//! The HTTP edge: routes, extractors and handlers. Handlers hold no SQL and
//! no business rules; they translate between HTTP and the domain.

pub mod health;
pub mod public;
pub mod webhook;

use std::sync::Arc;

use axum::Router;

use crate::domain::Tracker;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub tracker: Arc<Tracker>,
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(public::routes())
        .merge(webhook::routes())
        .merge(health::routes())
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
