//! What every admin page shares: the layout data, rendering, redirects,
//! one-line confirmations after a form, and error pages.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::domain::DomainError;
use crate::storage::StoreError;

/// The parts of `base.html` every page fills.
pub struct Layout {
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// A one-line confirmation of the last action.
    pub flash: Option<String>,
}

impl Layout {
    pub fn new(csrf: &str, nav: &'static str, flash: Option<String>) -> Self {
        Self {
            csrf: csrf.to_string(),
            nav,
            flash,
        }
    }
}

/// Renders a template as an HTML response.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => PageError::Internal(format!("template: {e}")).into_response(),
    }
}

/// `303 See Other` to `location` (after a form: the browser GETs it).
/// The query string of a list's next (older) page: the filters that are
/// set, then the cursor's pairs.
pub fn older_page_query<'a>(
    filters: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
    cursor: &[(&'static str, &str)],
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    for (k, v) in cursor {
        q.append_pair(k, v);
    }
    q.finish()
}

pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The confirmation a redirect after a form asks for (`?done=…`). Only
/// known keys and numbers are read, so a crafted link cannot put words on
/// the page.
#[derive(Debug, Default, Deserialize)]
pub struct FlashIn {
    pub done: Option<String>,
    pub fixed: Option<u64>,
    pub remaining: Option<u64>,
}

impl FlashIn {
    pub fn text(&self) -> Option<String> {
        Some(match self.done.as_deref()? {
            "autofix" => format!(
                "Auto-Fix done: fixed {}, still orphan {}.",
                self.fixed.unwrap_or(0),
                self.remaining.unwrap_or(0)
            ),
            "client" => "Client added. Next: paste its webhook URL into Stripe.".into(),
            "link" => "Link added.".into(),
            "secret" => "Webhook secret added. Stored events that failed verification can be reprocessed now.".into(),
            "settings" => "Attribution settings saved.".into(),
            "set_link" => "Link set by hand.".into(),
            "undo" => "Change undone.".into(),
            "reprocessed" => "Event reprocessed.".into(),
            _ => return None,
        })
    }
}

/// A page that could not be shown, as an HTML error page.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    Forbidden(&'static str),
    NotFound(String),
    Conflict(String),
    Unavailable,
    Internal(String),
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl From<DomainError> for PageError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => Self::BadRequest(m),
            DomainError::NotFound { what, id } => Self::NotFound(format!("{what} not found: {id}")),
            DomainError::Conflict(m) => Self::Conflict(m),
            DomainError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("not found".into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                Self::Unavailable
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "That did not work", m.as_str()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", *m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.as_str()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Already done", m.as_str()),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                "The database cannot be reached right now. Retry in a moment.",
            ),
            Self::Internal(cause) => {
                tracing::error!(%cause, "admin page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something broke",
                    "An internal error occurred; it has been logged.",
                )
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message,
        };
        let html = page
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into());
        (status, Html(html)).into_response()
    }
}

pub type PageResult = Result<Response, PageError>;
