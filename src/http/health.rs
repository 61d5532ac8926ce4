//! `/healthz` (the process is up) and `/readyz` (the store answers and can
//! commit a write, within `READY_TIMEOUT`).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::storage::StoreError;

/// How long `/readyz` waits for the store: a write lock held elsewhere makes
/// a write wait (SQLite's busy timeout is longer), and a balancer's check
/// must get its answer before its own timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.tracker.store();
    let probe = async {
        store.ping().await?;
        store.ping_write().await
    };
    let ready = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no write committed within {READY_TIMEOUT:?} (locked or stalled)"
        ))),
    };
    match ready {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": e.to_string()})),
            )
        }
    }
}
