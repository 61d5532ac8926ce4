//! `GET/POST /api/v1/links`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{ErrorOut, LinkIn, LinkList, LinkOut};
use super::extract::{AdminBearer, ApiJson, ApiQuery};
use crate::domain::client;
use crate::error::AppError;
use crate::http::AppState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Only this client's links (id or name).
    pub client: Option<String>,
}

/// List links.
#[utoipa::path(
    get,
    path = "/api/v1/links",
    tag = "links",
    security(("admin_token" = [])),
    params(LinkQuery),
    responses(
        (status = 200, description = "Links, in creation order", body = LinkList),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such client", body = ErrorOut),
    )
)]
pub async fn list_links(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LinkQuery>,
) -> Result<Json<LinkList>, AppError> {
    let tracker = &state.tracker;
    let client_id = match query.client.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(tracker.find_client(c).await?.id),
        None => None,
    };
    let public_url = &tracker.config().public_url;
    let data = tracker
        .store()
        .list_links(client_id.as_deref())
        .await?
        .iter()
        .map(|l| LinkOut::new(l, public_url))
        .collect();
    Ok(Json(LinkList { data }))
}

/// Add a link.
#[utoipa::path(
    post,
    path = "/api/v1/links",
    tag = "links",
    security(("admin_token" = [])),
    request_body = LinkIn,
    responses(
        (status = 201, description = "Added; share `url`", body = LinkOut),
        (status = 400, description = "Invalid slug, destination or promotion code", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 404, description = "No such client", body = ErrorOut),
        (status = 409, description = "The client already has this slug", body = ErrorOut),
    )
)]
pub async fn create_link(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<LinkIn>,
) -> Result<(StatusCode, Json<LinkOut>), AppError> {
    let link = state
        .tracker
        .add_link(client::LinkIn {
            client: input.client,
            slug: input.slug,
            destination: input.destination,
            label: input.label,
            promo_codes: input.promo_codes,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkOut::new(&link, &state.tracker.config().public_url)),
    ))
}
