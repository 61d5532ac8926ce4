//! Who may see the admin pages: the `AdminSession` extractor (redirects to
//! the login page), the `CsrfForm` extractor every POST goes through, the
//! login rate limiter and the cookies.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request};
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

/// Failed logins and wrong API tokens per client address, in memory, and
/// the process-wide budget of password checks.
///
/// What it limits is the cost and the number of *wrong* guesses, never a
/// right one. After `MAX_FAILURES` within `WINDOW` an address is limited
/// until its oldest failure ages out; while limited, only the admin token is
/// looked at (a SHA-256 and a constant-time compare: cheap), a right one is
/// let in and a wrong one gets 429 and counts again. The token is 192
/// random bits (or at least 16 chosen characters), so the yes/no a limited
/// guesser still gets is no use to them. The password, which a human chose,
/// is not checked at all from a limited address, and anywhere at most
/// `PASSWORD_CHECKS_PER_MINUTE` times a minute (Argon2 costs tens of
/// milliseconds of CPU on the blocking pool): that bounds guessing from many
/// addresses too. An admin who shares a limited address with a guesser, or
/// arrives while the budget is spent, signs in with the token.
#[derive(Debug)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, VecDeque<Instant>>>,
    password_checks: Mutex<Bucket>,
}

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Argon2 verifications allowed per minute, all addresses together…
pub const PASSWORD_CHECKS_PER_MINUTE: u32 = 30;
/// …of which this many may come at once.
const PASSWORD_BURST: f64 = 10.0;
/// The most addresses tracked: beyond it the stale ones are dropped, then
/// the unlimited ones, then any (memory stays bounded whatever the number
/// of addresses; each keeps at most `MAX_FAILURES` instants).
const MAX_TRACKED: usize = 10_000;

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            password_checks: Mutex::new(Bucket {
                tokens: PASSWORD_BURST,
                at: None,
            }),
        }
    }
}

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
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            make_room(&mut map, now);
        }
        let times = map.entry(ip).or_default();
        times.retain(|t| now.duration_since(*t) < WINDOW);
        if times.len() >= MAX_FAILURES {
            times.pop_front();
        }
        times.push_back(now);
    }

    pub fn clear(&self, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }

    /// Takes one password check from the process-wide budget; `false` when
    /// it is spent (the password is then not checked).
    pub fn take_password_check(&self, now: Instant) -> bool {
        let mut bucket = self
            .password_checks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let per_second = f64::from(PASSWORD_CHECKS_PER_MINUTE) / 60.0;
        if let Some(at) = bucket.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * per_second;
            bucket.tokens = (bucket.tokens + refill).min(PASSWORD_BURST);
        }
        bucket.at = Some(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Drops stale addresses; if that is not enough, those not limited; if
/// still not, any, down to half the room (so that this runs rarely).
fn make_room(map: &mut HashMap<Option<IpAddr>, VecDeque<Instant>>, now: Instant) {
    let target = MAX_TRACKED * 3 / 4;
    map.retain(|_, times| {
        times.retain(|t| now.duration_since(*t) < WINDOW);
        !times.is_empty()
    });
    if map.len() > target {
        map.retain(|_, times| times.len() >= MAX_FAILURES);
    }
    if map.len() > target {
        let excess: Vec<_> = map
            .keys()
            .take(map.len() - MAX_TRACKED / 2)
            .copied()
            .collect();
        for key in excess {
            map.remove(&key);
        }
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
    fn failures_are_kept_per_address_up_to_the_limit_and_addresses_up_to_a_bound() {
        let limiter = LoginLimiter::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..5 * MAX_FAILURES {
            limiter.record_failure(a, t0);
        }
        assert!(limiter.is_blocked(a, t0));
        // Failures while limited count: the address stays limited.
        let later = t0 + WINDOW - Duration::from_secs(1);
        limiter.record_failure(a, later);
        assert!(limiter.is_blocked(a, later));
        assert!(!limiter.is_blocked(a, t0 + WINDOW + WINDOW));
        for n in 0..3 * MAX_TRACKED as u32 {
            let ip = Some(IpAddr::from(std::net::Ipv4Addr::from(n)));
            limiter.record_failure(ip, t0);
            assert!(limiter.tracked() <= MAX_TRACKED);
        }
    }

    #[test]
    fn password_checks_have_a_global_budget_that_refills() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let burst = (0..100).filter(|_| limiter.take_password_check(t0)).count();
        assert_eq!(burst as f64, PASSWORD_BURST);
        let minute = t0 + Duration::from_secs(60);
        let refilled = (0..100)
            .filter(|_| limiter.take_password_check(minute))
            .count();
        assert_eq!(refilled, PASSWORD_BURST as usize, "capped at the burst");
        let two_s = minute + Duration::from_secs(2);
        assert!(limiter.take_password_check(two_s));
        assert!(!limiter.take_password_check(two_s));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; st_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
