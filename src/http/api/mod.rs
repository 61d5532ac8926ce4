//! The admin JSON API under `/api/v1` (SPEC 4.2): bearer auth, JSON in and
//! out, JSON errors, and its OpenAPI description generated from the
//! handlers' annotations (`/api/v1/openapi.json`).
//!
//! Each handler is extractor → domain → `Json<…Out>`. The public
//! `POST /api/v1/track/click` lives in `http::public` and takes no token.

pub mod clients;
pub mod conversions;
pub mod dto;
pub mod events;
pub mod extract;
pub mod links;
pub mod ops;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::AppError;

/// The name of the security scheme every admin route requires.
pub const SECURITY: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "salestrack admin API",
        description = "Clients, links, conversions, webhook events, Auto-Fix and diagnosis. \
Send the admin token as `Authorization: Bearer <token>`. Errors are \
`{\"error\": {\"code\", \"message\"}}` with the matching status code."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "clients", description = "Clients (the shops whose sales are tracked)"),
        (name = "links", description = "Tracked links"),
        (name = "conversions", description = "Sales and their attribution"),
        (name = "events", description = "Stored Stripe webhook events"),
        (name = "operations", description = "Auto-Fix and diagnosis")
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The router and its OpenAPI description, from the same list of handlers.
pub fn router_and_doc() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(clients::list_clients, clients::create_client))
        .routes(routes!(links::list_links, links::create_link))
        .routes(routes!(conversions::list_conversions))
        .routes(routes!(conversions::get_conversion))
        .routes(routes!(events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(ops::run_autofix))
        .routes(routes!(ops::diagnose))
        .split_for_parts()
}

pub fn routes() -> Router<AppState> {
    let (router, doc) = router_and_doc();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_else(|_| "{}".into()).into();
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/api/v1/{*rest}", any(unknown_route))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    AppError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this API route does not take that method; see /api/v1/openapi.json",
    )
    .into_response()
}

/// Unknown paths under `/api/v1` answer in JSON too.
async fn unknown_route() -> Response {
    AppError::client(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API route; see /api/v1/openapi.json",
    )
    .into_response()
}
