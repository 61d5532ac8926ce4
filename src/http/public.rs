//! Public click endpoints (SPEC 2.1): `/r/{slug}`, `/r/{client}/{slug}`,
//! `POST /api/v1/track/click` and the `/t.js` snippet.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, ClientAddr};
use crate::domain::click::Visit;
use crate::domain::DomainError;
use crate::error::AppError;

const VISITOR_COOKIE: &str = "st_vid";
/// 400 days, the longest lifetime browsers keep.
const VISITOR_MAX_AGE: u32 = 400 * 24 * 3600;
const SNIPPET: &str = include_str!("../../assets/t.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/r/{slug}", get(redirect_slug))
        .route("/r/{client}/{slug}", get(redirect_client_slug))
        .route(
            "/api/v1/track/click",
            post(track_click).options(track_click_preflight),
        )
        .route("/t.js", get(snippet))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn visitor_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == VISITOR_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The visitor cookie, `Secure` when the public URL is https (the browser
/// then never sends it over plain HTTP).
fn visitor_set_cookie(visitor_id: &str, public_url: &str) -> String {
    let secure = if public_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    format!("{VISITOR_COOKIE}={visitor_id}; Max-Age={VISITOR_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

async fn redirect_slug(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    redirect(state, ip, None, slug, headers).await
}

async fn redirect_client_slug(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Path((client, slug)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    redirect(state, ip, Some(client), slug, headers).await
}

async fn redirect(
    state: AppState,
    ip: Option<IpAddr>,
    client: Option<String>,
    slug: String,
    headers: HeaderMap,
) -> Response {
    let visit = Visit {
        visitor_id: visitor_cookie(&headers),
        referrer: header_text(&headers, header::REFERER),
        landing_url: None,
        user_agent: header_text(&headers, header::USER_AGENT),
        ip,
    };
    match state
        .tracker
        .record_redirect(client.as_deref(), &slug, visit)
        .await
    {
        Ok(r) => {
            super::metrics::record_click("redirect", r.click.bot);
            let cookie = visitor_set_cookie(&r.visitor_id, &state.tracker.config().public_url);
            let mut response = StatusCode::FOUND.into_response();
            let h = response.headers_mut();
            match HeaderValue::from_str(&r.location) {
                Ok(loc) => {
                    h.insert(header::LOCATION, loc);
                }
                Err(_) => return AppError::client(StatusCode::BAD_GATEWAY, "bad_destination", "the link's destination is not a valid URL").into_response(),
            }
            if let Ok(c) = HeaderValue::from_str(&cookie) {
                h.insert(header::SET_COOKIE, c);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(DomainError::NotFound { .. }) => (
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>Link not found</title><h1>Link not found</h1><p>This tracked link does not exist.</p>"),
        )
            .into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct TrackClickIn {
    #[serde(rename = "ref")]
    slug: String,
    landing_url: Option<String>,
    referrer: Option<String>,
    visitor_id: Option<String>,
}

fn cors(origin: &str, response: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

async fn track_click(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let origin = header_text(&headers, header::ORIGIN);
    let input: TrackClickIn = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            return AppError::client(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("expected {{\"ref\", \"landing_url\", \"referrer\", \"visitor_id\"}}: {e}"),
            )
            .into_response()
        }
    };
    let visit = Visit {
        visitor_id: input.visitor_id,
        referrer: input.referrer,
        landing_url: input.landing_url,
        user_agent: header_text(&headers, header::USER_AGENT),
        ip,
    };
    match state
        .tracker
        .record_beacon(&input.slug, origin.as_deref(), visit)
        .await
    {
        Ok((click, origin_ok)) => {
            super::metrics::record_click("beacon", click.bot);
            let mut response = Json(json!({"click_id": click.id})).into_response();
            if let (Some(origin), true) = (&origin, origin_ok) {
                cors(origin, &mut response);
            }
            response
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

async fn track_click_preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(origin) = header_text(&headers, header::ORIGIN) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    match state.tracker.origin_is_client_domain(&origin).await {
        Ok(true) => cors(&origin, &mut response),
        Ok(false) => {}
        Err(e) => return AppError::from(e).into_response(),
    }
    response
}

async fn snippet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SNIPPET,
    )
        .into_response()
}
