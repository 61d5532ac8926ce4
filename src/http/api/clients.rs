//! `GET/POST /api/v1/clients`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::dto::{ClientIn, ClientList, ClientOut, ErrorOut};
use super::extract::{AdminBearer, ApiJson};
use crate::domain::client;
use crate::domain::model::now_millis;
use crate::domain::status::assess;
use crate::error::AppError;
use crate::http::AppState;

/// Every client (oldest first) with its secrets masked and its status.
async fn client_outs(state: &AppState) -> Result<Vec<ClientOut>, AppError> {
    let tracker = &state.tracker;
    let now = now_millis();
    let activity: HashMap<String, _> = tracker
        .store()
        .client_activity(now)
        .await?
        .into_iter()
        .map(|a| (a.client_id.clone(), a))
        .collect();
    Ok(tracker
        .store()
        .list_client_secrets()
        .await?
        .iter()
        .map(|c| {
            let status = activity.get(&c.client.id).map(|a| assess(a, now));
            ClientOut::new(
                &c.client,
                tracker.webhook_url(&c.client.id),
                &c.secrets,
                status.as_ref(),
            )
        })
        .collect())
}

/// List clients.
#[utoipa::path(
    get,
    path = "/api/v1/clients",
    tag = "clients",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every client, oldest first; secrets masked", body = ClientList),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
    )
)]
pub async fn list_clients(
    _auth: AdminBearer,
    State(state): State<AppState>,
) -> Result<Json<ClientList>, AppError> {
    Ok(Json(ClientList {
        data: client_outs(&state).await?,
    }))
}

/// Add a client.
#[utoipa::path(
    post,
    path = "/api/v1/clients",
    tag = "clients",
    security(("admin_token" = [])),
    request_body = ClientIn,
    responses(
        (status = 201, description = "Added; paste `webhook_url` into Stripe", body = ClientOut),
        (status = 400, description = "Invalid input", body = ErrorOut),
        (status = 401, description = "No or wrong admin token", body = ErrorOut),
        (status = 409, description = "A client with this name exists", body = ErrorOut),
    )
)]
pub async fn create_client(
    _auth: AdminBearer,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ClientIn>,
) -> Result<(StatusCode, Json<ClientOut>), AppError> {
    let created = state
        .tracker
        .add_client(client::ClientIn {
            name: input.name,
            domain: input.domain,
            stripe_account: input.stripe_account,
            webhook_secret: input.webhook_secret,
            stripe_api_key: input.stripe_api_key,
        })
        .await?;
    let out = client_outs(&state)
        .await?
        .into_iter()
        .find(|c| c.id == created.id)
        .unwrap_or_else(|| {
            ClientOut::new(&created, state.tracker.webhook_url(&created.id), &[], None)
        });
    Ok((StatusCode::CREATED, Json(out)))
}
