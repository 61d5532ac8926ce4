//! Who may see the admin pages: the `AdminSession` extractor (redirects to
//! the login page), the `CsrfForm` extractor every POST goes through, the
//! login rate limiter and the cookies.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::page::{see_other, PageError};
use crate::domain::auth::{csrf_matches, SESSION_TTL_MS};
use crate::domain::report::AdminSession as StoredSession;
use crate::http::AppState;

pub const SESSION_COOKIE: &str = "st_session";
/// The double-submit token of the login form (there is no session yet).
pub const LOGIN_COOKIE: &str = "st_login";
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `Secure` is added when the public URL is https (a plain-http local
/// install would otherwise never keep the cookie).
pub fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age_s: i64) -> String {
    let secure = if state.tracker.config().public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

pub fn session_cookie(state: &AppState, value: &str) -> String {
    set_cookie(
        state,
        SESSION_COOKIE,
        value,
        "/admin",
        SESSION_TTL_MS / 1000,
    )
}

/// A signed-in admin. Without a live session the request is sent to
/// `/admin/login` (with the page it wanted, for a GET).
pub struct AdminSession {
    pub session: StoredSession,
    /// The cookie value (the store keeps only its hash).
    pub cookie: String,
}

impl AdminSession {
    pub fn csrf(&self) -> &str {
        &self.session.csrf_token
    }
}

fn to_login(parts: &Parts) -> Response {
    if parts.method == Method::GET {
        let wanted = parts.uri.path_and_query().map_or("/admin", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
        see_other(&format!("/admin/login?next={next}"))
    } else {
        see_other("/admin/login")
    }
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login(parts));
        };
        match state.tracker.session(&value).await {
            Ok(Some(session)) => Ok(Self {
                session,
                cookie: value,
            }),
            Ok(None) => Err(to_login(parts)),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// A POSTed form of a signed-in admin whose `csrf` field matches the
/// session's token (403 otherwise, before the form is even read as `T`).
pub struct CsrfForm<T> {
    pub admin: AdminSession,
    pub data: T,
}

/// Reads an urlencoded body (bounded).
pub async fn form_body(body: axum::body::Body) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PageError::BadRequest("the form is larger than 64 KiB".into()).into_response())
}

/// The value of `field` in an urlencoded body.
pub fn form_field(body: &[u8], field: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.into_owned())
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let admin = AdminSession::from_request_parts(&mut parts, state).await?;
        let bytes = form_body(body).await?;
        let token = form_field(&bytes, "csrf").unwrap_or_default();
        if !csrf_matches(&admin.session, &token) {
            return Err(PageError::Forbidden(
                "This form's security token is missing or out of date. Go back, reload the page and try again.",
            )
            .into_response());
        }
        let data = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError::BadRequest(format!("the form is incomplete: {e}")).into_response()
        })?;
        Ok(Self { admin, data })
    }
}

/// The peer's IP address, when the server was started with connect info.
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Failed logins and wrong API tokens per IP address, in memory: after
/// `MAX_FAILURES` within `WINDOW`, further attempts from that address (at
/// the login page and at the JSON API) get 429 until the oldest failure
/// ages out. A success clears the address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, Vec<Instant>>>,
}

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Beyond this many tracked addresses, stale ones are dropped.
const MAX_TRACKED: usize = 10_000;

impl LoginLimiter {
    pub fn is_blocked(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&ip) {
            Some(times) => {
                times.retain(|t| now.duration_since(*t) < WINDOW);
                times.len() >= MAX_FAILURES
            }
            None => false,
        }
    }

    pub fn record_failure(&self, ip: Option<IpAddr>, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < WINDOW));
        }
        let times = map.entry(ip).or_default();
        times.retain(|t| now.duration_since(*t) < WINDOW);
        times.push(now);
    }

    pub fn clear(&self, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_five_minutes_block_that_address_only() {
        let limiter = LoginLimiter::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limiter.record_failure(a, t0);
        }
        assert!(!limiter.is_blocked(a, t0));
        limiter.record_failure(a, t0);
        assert!(limiter.is_blocked(a, t0));
        assert!(!limiter.is_blocked(b, t0));
        assert!(!limiter.is_blocked(a, t0 + WINDOW));
    }

    #[test]
    fn a_success_clears_the_failures() {
        let limiter = LoginLimiter::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(a, t0);
        }
        limiter.clear(a);
        assert!(!limiter.is_blocked(a, t0));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; st_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
