//! `POST /webhooks/stripe` and `POST /webhooks/stripe/{client_id}`.
//! The raw body is committed before any 2xx (see `domain::ingest`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::domain::ingest::{Delivery, Endpoint, IngestError, IngestOutcome};
use crate::domain::model::now_millis;

/// SPEC 2.3: bodies over 1 MiB are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Headers kept with a stored event: what helps diagnosis, never cookies or
/// credentials.
const KEPT_HEADERS: &[&str] = &[
    "stripe-signature",
    "content-type",
    "user-agent",
    "content-length",
    "x-forwarded-for",
    "x-request-id",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/stripe", post(receive_shared))
        .route("/webhooks/stripe/{client_id}", post(receive_for_client))
}

async fn receive_shared(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    receive(state, Endpoint::Shared, headers, body).await
}

async fn receive_for_client(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // No client id holds a control character: shown as U+FFFD, the URL
    // names no client on either backend (PostgreSQL could not store a NUL).
    let client_id = client_id
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    receive(state, Endpoint::Client(client_id), headers, body).await
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

async fn receive(state: AppState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let received_at = now_millis();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        tracing::warn!(size = declared, "webhook body over 1 MiB refused");
        return too_large();
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(size = declared, error = %e, "webhook body over 1 MiB (or unreadable) refused");
            return too_large();
        }
    };
    let signature = headers
        .get("stripe-signature")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let kept = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            headers.get(*name).map(|v| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
        })
        .collect();
    let delivery = Delivery {
        endpoint,
        signature,
        headers: kept,
        body: Vec::from(body),
        received_at,
    };
    // On a task of its own: if the caller goes away mid-way, the delivery
    // is still stored and processed, and so are the others of its batch
    // when this request leads one (dropping the batch would roll all of
    // them back and answer them 503).
    let tracker = state.tracker.clone();
    let outcome = match tokio::spawn(async move { tracker.ingest(delivery).await }).await {
        Ok(outcome) => outcome,
        // A panic stays a panic (the catch-panic layer answers 500); the
        // task is never aborted.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    super::metrics::record_webhook(outcome.as_ref().ok());
    match outcome {
        Ok(IngestOutcome::Accepted {
            event_id,
            duplicate,
            ..
        }) => (
            StatusCode::OK,
            Json(json!({"received": true, "event_id": event_id, "duplicate": duplicate})),
        )
            .into_response(),
        Ok(IngestOutcome::Unverified {
            event_id, reason, ..
        }) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": {
                    "code": "signature_unverified",
                    "reason": reason.as_str(),
                    "message": format!("signature verification failed: {}; the event is stored (id {event_id}) and held out of totals", reason.as_str()),
                },
                "event_id": event_id,
            })),
        )
            .into_response(),
        Ok(IngestOutcome::InvalidPayload { event_id, message }) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": {"code": "invalid_payload", "message": message},
                "event_id": event_id,
            })),
        )
            .into_response(),
        Ok(IngestOutcome::UnknownEndpoint { event_id, .. }) => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": {"code": "unknown_client", "message": "this webhook URL names no client; the event is stored"},
                "event_id": event_id,
            })),
        )
            .into_response(),
        Err(IngestError::NotStored(e)) => {
            tracing::error!(error = %e, "webhook not stored; answering 503 so Stripe retries");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event could not be stored; retry later",
            )
        }
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "webhook bodies are limited to 1 MiB",
    )
}
