//! `/admin/login` and `/admin/logout`: the admin token or password opens a
//! session; failures are rate-limited per client address, the right token
//! is let in even then (`LoginLimiter` says why that is safe).

use std::time::Instant;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::page::{render, see_other, PageError};
use super::session::{
    cookie, form_body, form_field, session_cookie, set_cookie, AdminSession, CsrfForm,
    LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::domain::auth::PasswordCheck;
use crate::http::{AppState, ClientAddr};

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NextIn {
    next: Option<String>,
}

/// Only paths of the admin pages, on this origin, are followed after a
/// login; anything else means `/admin`. Refused: control characters (CR/LF
/// would split the `Location` header; browsers drop tabs and newlines from
/// URLs, which could turn `/\t/host` into `//host`), backslashes (browsers
/// read them as slashes), `//` anywhere (a scheme-relative URL to another
/// host), anything not starting with `/` (a scheme, another origin), `..`
/// segments (leaving `/admin`), and the login page itself. What is left must resolve on this origin to a path under
/// `/admin`.
fn safe_next(next: Option<&str>) -> String {
    const FALLBACK: &str = "/admin";
    let Some(n) = next else {
        return FALLBACK.into();
    };
    let plain = !n.is_empty()
        && n.len() <= 2048
        && n.starts_with('/')
        && !n
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        && !n.contains("//")
        && !n
            .split(['/', '?', '#'])
            .any(|seg| seg == ".." || seg == ".");
    let admin_path = n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?");
    if !plain || !admin_path || n.starts_with("/admin/login") {
        return FALLBACK.into();
    }
    // The same check as a browser would resolve it.
    let Ok(base) = url::Url::parse("http://salestrack.invalid/admin/login") else {
        return FALLBACK.into();
    };
    match base.join(n) {
        Ok(u)
            if u.origin() == base.origin()
                && (u.path() == "/admin" || u.path().starts_with("/admin/")) =>
        {
            n.to_string()
        }
        _ => FALLBACK.into(),
    }
}

fn new_token() -> String {
    let mut buf = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    next: String,
    error: Option<&'static str>,
) -> Response {
    let csrf = new_token();
    let page = LoginPage {
        csrf: csrf.clone(),
        next,
        error,
    };
    let mut response = render(&page);
    *response.status_mut() = status;
    with_cookies(
        response,
        &[set_cookie(state, LOGIN_COOKIE, &csrf, "/admin/login", 3600)],
    )
}

pub async fn show_login(
    State(state): State<AppState>,
    Query(q): Query<NextIn>,
    headers: HeaderMap,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = state.tracker.session(&value).await {
            return see_other(&next);
        }
    }
    login_page(&state, StatusCode::OK, next, None)
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match form_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let next = safe_next(form_field(&body, "next").as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let submitted = form_field(&body, "csrf").unwrap_or_default();
    let csrf_ok: bool =
        !expected.is_empty() && expected.as_bytes().ct_eq(submitted.as_bytes()).into();
    if !csrf_ok {
        return PageError::Forbidden(
            "The login form's security token is missing or out of date. Reload the login page and try again.",
        )
        .into_response();
    }
    let secret = form_field(&body, "secret").unwrap_or_default();
    // The token first: it is cheap and always works (see `LoginLimiter`).
    let limiter = &state.failed_logins;
    let now = Instant::now();
    let limited = limiter.is_blocked(ip, now);
    let token_ok = match state.tracker.check_admin_token(&secret).await {
        Ok(ok) => ok,
        Err(e) => return PageError::from(e).into_response(),
    };
    if !token_ok {
        if limited {
            limiter.record_failure(ip, now);
            tracing::warn!(?ip, "admin login rate-limited");
            return login_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                next,
                Some("Too many failed attempts from your address. Sign in with the admin token, or wait five minutes to use the password."),
            );
        }
        let check = state
            .tracker
            .check_admin_password(&secret, || limiter.take_password_check(now))
            .await;
        match check {
            Ok(PasswordCheck::Correct) => {}
            Ok(PasswordCheck::Wrong) => {
                limiter.record_failure(ip, now);
                tracing::warn!(?ip, "admin login failed");
                return login_page(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    next,
                    Some("That is not the admin token or password."),
                );
            }
            Ok(PasswordCheck::Busy) => {
                tracing::warn!(
                    ?ip,
                    "admin password not checked: too many password attempts"
                );
                return login_page(
                    &state,
                    StatusCode::TOO_MANY_REQUESTS,
                    next,
                    Some("Too many password attempts on this server just now. Sign in with the admin token, or try the password again in a minute."),
                );
            }
            Err(e) => return PageError::from(e).into_response(),
        }
    }
    limiter.clear(ip);
    let (value, _) = match state.tracker.open_session().await {
        Ok(s) => s,
        Err(e) => return PageError::from(e).into_response(),
    };
    tracing::info!(?ip, "admin signed in");
    with_cookies(
        see_other(&next),
        &[
            session_cookie(&state, &value),
            set_cookie(&state, LOGIN_COOKIE, "", "/admin/login", 0),
        ],
    )
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn logout(State(state): State<AppState>, form: CsrfForm<Empty>) -> Response {
    let AdminSession { cookie: value, .. } = form.admin;
    if let Err(e) = state.tracker.close_session(&value).await {
        return PageError::from(e).into_response();
    }
    with_cookies(
        see_other("/admin/login"),
        &[set_cookie(&state, SESSION_COOKIE, "", "/admin", 0)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_paths_on_this_origin_are_followed_after_login() {
        assert_eq!(safe_next(Some("/admin/clients?x=1")), "/admin/clients?x=1");
        assert_eq!(safe_next(Some("/admin")), "/admin");
        assert_eq!(safe_next(Some("/admin?done=saved")), "/admin?done=saved");
        for bad in [
            "https://evil.example/",
            "http://127.0.0.1/admin",
            "//evil.example/admin",
            "/admin//evil.example",
            "/\\evil.example",
            "/admin\\..\\..\\x",
            "/admin/\r\nSet-Cookie: x=1",
            "/admin/\nx",
            "/admin/\t/x",
            "/admin/../r/slug",
            "/admin/./x",
            "/admin/login?next=//evil.example",
            "/administrator",
            "javascript:alert(1)",
            "/admin/%2e%2e/r/slug",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/admin");
    }
}
