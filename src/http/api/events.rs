//! `GET /api/v1/events` (summaries) and `GET /api/v1/events/{id}` (one
//! event with its kept headers and raw payload).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{ErrorOut, EventDetailOut, EventList, EventOut};
use super::extract::{AdminBearer, ApiPath, ApiQuery};
use crate::domain::model::{EventFilter, Processing, Verification};
use crate::error::AppError;
use crate::http::AppState;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 10_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this client (id or name).
    pub client: Option<String>,
    /// `verified` or `unverified`.
    pub verification: Option<String>,
    /// `pending`, `processed`, `ignored`, `invalid`, `no_client` or `failed`.
    pub processing: Option<String>,
    /// Only events stored before the one with this id: the last id of a
    /// page gives the next, older page.
    pub before: Option<i64>,
    /// At most this many, newest first (default 100, at most 10000).
    pub limit: Option<i64>,
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::client(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// List webhook events.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    security(("admin_token" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "Stored events, newest first (summaries, no payload)", body = EventList),
        (status = 400, description = "A filter has a bad value", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such client", body = ErrorOut),
    )
)]
pub async fn list_events(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventList>, AppError> {
    let tracker = &state.tracker;
    let client_id = match q.client.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(tracker.find_client(c).await?.id),
        None => None,
    };
    let verification = match q.verification.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some("verified") => Some(Verification::Verified),
        Some("unverified") => Some(Verification::Unverified),
        Some(_) => return Err(invalid("`verification` is verified or unverified")),
    };
    let processing = match q.processing.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(Processing::parse(p).ok_or_else(|| {
            invalid(
                "`processing` is one of pending, processed, ignored, invalid, no_client, failed",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("`limit` is between 1 and {MAX_LIMIT}")));
    }
    let data = tracker
        .store()
        .list_events(&EventFilter {
            processing,
            verification,
            client_id,
            body_contains: None,
            before_id: q.before,
            limit,
        })
        .await?
        .iter()
        .map(EventOut::from)
        .collect();
    Ok(Json(EventList { data }))
}

/// One webhook event with its headers and payload.
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    tag = "events",
    security(("admin_token" = [])),
    params(("id" = i64, Path, description = "The stored event's id")),
    responses(
        (status = 200, description = "The event, the headers kept and the raw payload", body = EventDetailOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such event", body = ErrorOut),
    )
)]
pub async fn get_event(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventDetailOut>, AppError> {
    let not_found = || {
        AppError::client(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "event not found: {}",
                id.chars().take(40).collect::<String>()
            ),
        )
    };
    let numeric: i64 = id.parse().map_err(|_| not_found())?;
    let event = state
        .tracker
        .store()
        .get_event(numeric)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(EventDetailOut::from(&event)))
}
