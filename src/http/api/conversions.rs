//! `GET /api/v1/conversions` (with the filters of the admin page) and
//! `GET /api/v1/conversions/{id}` (with its trace and history).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{ConversionDetailOut, ConversionList, ConversionOut, ErrorOut};
use super::extract::{AdminBearer, ApiPath, ApiQuery};
use crate::domain::export::parse_date_bound;
use crate::domain::model::{ConversionFilter, ConversionStatus};
use crate::domain::{DomainError, Tracker};
use crate::error::AppError;
use crate::http::AppState;

/// Without `limit`, this many conversions (newest first).
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 10_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConversionQuery {
    /// Only this client's (id or name).
    pub client: Option<String>,
    /// Only those credited to this link (id, or slug: the oldest link with it,
    /// or the client's when `client` is given).
    pub link: Option<String>,
    /// Only orphans (no link).
    #[serde(alias = "orphans")]
    pub orphan: Option<bool>,
    /// Only unverified ones (held out of totals).
    pub unverified: Option<bool>,
    /// `paid`, `partially_refunded`, `refunded`, `disputed`, `dispute_won` or `dispute_lost`.
    pub status: Option<String>,
    /// `live` or `test`; both when absent.
    pub mode: Option<String>,
    /// Purchased at or after: RFC 3339 or `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Purchased before (exclusive): RFC 3339, or `YYYY-MM-DD` (midnight UTC of that day).
    pub to: Option<String>,
    /// A conversion's id: only those listed after it, the next page (the
    /// last id of a page; exact when many sales share a purchase time).
    pub starting_after: Option<String>,
    /// At most this many, newest first (default 100, at most 10000).
    pub limit: Option<i64>,
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::client(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn link_id(tracker: &Tracker, client: Option<&str>, link: &str) -> Result<String, AppError> {
    if let Some(l) = tracker.store().get_link(link).await? {
        return Ok(l.id);
    }
    match tracker.find_link_for_slug(client, link).await {
        Ok(l) => Ok(l.id),
        Err(DomainError::NotFound { .. }) => Err(AppError::client(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "link not found: {}",
                link.chars().take(80).collect::<String>()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Turns the query into the store's filter, checking every value.
pub async fn filter_of(
    tracker: &Tracker,
    q: &ConversionQuery,
) -> Result<ConversionFilter, AppError> {
    let client_id = match nonempty(&q.client) {
        Some(c) => Some(tracker.find_client(c).await?.id),
        None => None,
    };
    let link_id = match nonempty(&q.link) {
        Some(l) => Some(link_id(tracker, client_id.as_deref(), l).await?),
        None => None,
    };
    let status = match nonempty(&q.status) {
        Some(s) => Some(ConversionStatus::parse(s).ok_or_else(|| {
            invalid("`status` is one of paid, partially_refunded, refunded, disputed, dispute_won, dispute_lost")
        })?),
        None => None,
    };
    let livemode = match nonempty(&q.mode) {
        None | Some("all") => None,
        Some("live") => Some(true),
        Some("test") => Some(false),
        Some(_) => return Err(invalid("`mode` is live, test or all")),
    };
    let from = nonempty(&q.from)
        .map(|f| parse_date_bound(f).map_err(AppError::from))
        .transpose()?;
    let to = nonempty(&q.to)
        .map(|t| parse_date_bound(t).map_err(AppError::from))
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("`limit` is between 1 and {MAX_LIMIT}")));
    }
    let after = match nonempty(&q.starting_after) {
        Some(id) => match tracker.store().get_conversion(id).await? {
            Some(c) => Some((c.purchased_at, c.id)),
            None => {
                return Err(AppError::client(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "conversion not found: {}",
                        id.chars().take(80).collect::<String>()
                    ),
                ))
            }
        },
        None => None,
    };
    Ok(ConversionFilter {
        client_id,
        link_id,
        orphans_only: q.orphan.unwrap_or(false),
        unverified_only: q.unverified.unwrap_or(false),
        status,
        livemode,
        from,
        to,
        after,
        limit,
        ..Default::default()
    })
}

/// List conversions.
#[utoipa::path(
    get,
    path = "/api/v1/conversions",
    tag = "conversions",
    security(("admin_token" = [])),
    params(ConversionQuery),
    responses(
        (status = 200, description = "Conversions, newest purchase first; unverified and test-mode ones included unless filtered", body = ConversionList),
        (status = 400, description = "A filter has a bad value", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such client or link", body = ErrorOut),
    )
)]
pub async fn list_conversions(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ConversionQuery>,
) -> Result<Json<ConversionList>, AppError> {
    let filter = filter_of(&state.tracker, &query).await?;
    let data = state
        .tracker
        .conversions_out(&filter)
        .await?
        .into_iter()
        .map(ConversionOut::from)
        .collect();
    Ok(Json(ConversionList { data }))
}

/// One conversion with its attribution trace, history and events.
#[utoipa::path(
    get,
    path = "/api/v1/conversions/{id}",
    tag = "conversions",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The conversion's id")),
    responses(
        (status = 200, description = "The conversion and what explains it", body = ConversionDetailOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such conversion", body = ErrorOut),
    )
)]
pub async fn get_conversion(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConversionDetailOut>, AppError> {
    let diagnosis = state.tracker.diagnose_conversion(&id).await?;
    Ok(Json(ConversionDetailOut::new(
        &diagnosis,
        &state.tracker.config().public_url,
    )))
}
