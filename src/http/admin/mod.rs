//! The admin pages (SPEC 3): server-rendered HTML behind a login, usable
//! without JavaScript. Every handler takes an `AdminSession` (no session:
//! redirect to `/admin/login`), every POST goes through `CsrfForm` (wrong or
//! missing token: 403), and every value is escaped by askama.

mod auth;
mod chart;
mod clients;
mod conversions;
mod diagnose;
mod events;
pub mod format;
mod overview;
mod page;
mod session;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::AppState;

pub use session::{AdminSession, CsrfForm, LoginLimiter, SESSION_COOKIE, WINDOW as FAILURE_WINDOW};

const CSS: &str = include_str!("../../../assets/admin.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview::show_overview))
        .route("/admin/autofix", post(overview::run_autofix))
        .route("/admin/login", get(auth::show_login).post(auth::login))
        .route("/admin/logout", post(auth::logout))
        .route(
            "/admin/clients",
            get(clients::list_clients).post(clients::create_client),
        )
        .route("/admin/clients/{id}", get(clients::show_client))
        .route(
            "/admin/clients/{id}/settings",
            post(clients::update_settings),
        )
        .route("/admin/clients/{id}/links", post(clients::create_link))
        .route("/admin/clients/{id}/secrets", post(clients::create_secret))
        .route("/admin/conversions", get(conversions::list_conversions))
        .route("/admin/conversions/{id}", get(conversions::show_conversion))
        .route("/admin/conversions/{id}/link", post(conversions::set_link))
        .route(
            "/admin/conversions/{id}/undo",
            post(conversions::undo_change),
        )
        .route("/admin/events", get(events::list_events))
        .route("/admin/events/{id}", get(events::show_event))
        .route(
            "/admin/events/{id}/reprocess",
            post(events::reprocess_event),
        )
        .route("/admin/diagnose-sale", get(diagnose::diagnose_sale))
        .layer(middleware::from_fn(harden))
        .route("/admin/admin.css", get(stylesheet))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// Headers every admin page carries: nothing cached, no framing, no script
/// (the pages need none), forms only to ourselves.
async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
