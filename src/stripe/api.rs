//! A small client for the one Stripe API call salestrack makes:
//! `GET /v1/events`, paged, with a client's restricted key (SPEC 2.10).
//!
//! The key is sent as a bearer token and appears nowhere else: not in
//! errors, not in logs, not in `Debug`. Each event is kept as the exact
//! bytes Stripe sent for it, so the event log stores what Stripe said.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The event types reconciliation asks for: every type `event::extract` acts on.
pub const RECONCILED_TYPES: &[&str] = &[
    "invoice.paid",
    "invoice_payment.paid",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "payment_intent.succeeded",
    "charge.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
];

/// Stripe's largest page.
pub const PAGE_LIMIT: u32 = 100;

/// A guard against a server that never stops answering `has_more`.
const MAX_PAGES: u32 = 100_000;

/// A Stripe API key (`rk_…`, `sk_…`). Its `Debug` shows the last four
/// characters only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// `…abcd`: the only part of a key ever shown.
    pub fn masked(&self) -> String {
        let tail: Vec<char> = self.0.chars().rev().take(4).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }

    /// `text` with every occurrence of the key replaced by its masked form,
    /// for messages that echo what a server answered.
    fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, &self.masked())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403: the key is wrong, revoked, or lacks the events permission.
    #[error("Stripe refused the API key (HTTP {status})")]
    Refused { status: u16 },
    /// Another error status (after retries for 429 and 5xx).
    #[error("Stripe answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// Stripe could not be reached (after retries).
    #[error("could not reach Stripe: {0}")]
    Network(String),
    /// A 2xx answer that is not a list of events.
    #[error("Stripe's answer could not be read: {0}")]
    Malformed(String),
    #[error("invalid Stripe API base URL {0:?}")]
    BadBase(String),
}

/// How failed pages are retried: `attempts` tries in all, waiting
/// `first_backoff`, then twice as long each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// One event as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedEvent {
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The event's exact JSON bytes within the page.
    pub raw: Vec<u8>,
}

/// Everything a paged listing got: the events of every page that arrived
/// (newest first, as Stripe lists them), and the error that stopped it, if
/// any. Events fetched before an error are still worth processing: the next
/// run fetches the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsFetch {
    pub events: Vec<FetchedEvent>,
    pub pages: u32,
    pub error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ListOut {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct EventHead {
    id: String,
    #[serde(default)]
    created: i64,
}

#[derive(Deserialize)]
struct ErrorOut {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
}

/// The Stripe API at a base URL (`https://api.stripe.com`, or a local
/// server in tests).
#[derive(Debug, Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: url::Url,
    retry: RetryPolicy,
}

impl StripeApi {
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let parsed = url::Url::parse(base).map_err(|_| ApiError::BadBase(base.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(ApiError::BadBase(base.to_string()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("salestrack/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Ok(Self {
            http,
            base: parsed,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn events_url(&self, created_gte: i64, starting_after: Option<&str>) -> url::Url {
        let mut url = self.base.clone();
        let path = format!("{}/v1/events", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut q = url.query_pairs_mut();
            q.clear();
            q.append_pair("created[gte]", &created_gte.to_string());
            q.append_pair("limit", &PAGE_LIMIT.to_string());
            for t in RECONCILED_TYPES {
                q.append_pair("types[]", t);
            }
            if let Some(after) = starting_after {
                q.append_pair("starting_after", after);
            }
        }
        url
    }

    /// Every handled event created at or after `created_gte` (Unix
    /// seconds), following `has_more` to the end.
    pub async fn list_events(&self, key: &ApiKey, created_gte: i64) -> EventsFetch {
        let mut fetch = EventsFetch {
            events: Vec::new(),
            pages: 0,
            error: None,
        };
        let mut starting_after: Option<String> = None;
        loop {
            let url = self.events_url(created_gte, starting_after.as_deref());
            let page = match self.get_page(key, url).await {
                Ok(page) => page,
                Err(e) => {
                    fetch.error = Some(e);
                    return fetch;
                }
            };
            fetch.pages += 1;
            let last = page.events.last().map(|e| e.id.clone());
            fetch.events.extend(page.events);
            match (page.has_more, last) {
                (true, Some(last)) if fetch.pages < MAX_PAGES => starting_after = Some(last),
                (true, _) => {
                    fetch.error = Some(ApiError::Malformed(
                        "has_more without a way to the next page".into(),
                    ));
                    return fetch;
                }
                (false, _) => return fetch,
            }
        }
    }

    /// One page, retried on network errors, 429 and 5xx.
    async fn get_page(&self, key: &ApiKey, url: url::Url) -> Result<Page, ApiError> {
        let mut backoff = self.retry.first_backoff;
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.try_page(key, url.clone()).await {
                Err(e) if attempt < attempts && retryable(&e) => {
                    tracing::warn!(attempt, error = %e, "Stripe events page failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_page(&self, key: &ApiKey, url: url::Url) -> Result<Page, ApiError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(&key.0)
            .send()
            .await
            .map_err(|e| self.network_error(key, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.network_error(key, e))?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ApiError::Refused {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorOut>(&body)
                .ok()
                .and_then(|e| e.error.message)
                .unwrap_or_else(|| {
                    status
                        .canonical_reason()
                        .unwrap_or("unexpected status")
                        .to_string()
                });
            return Err(ApiError::Status {
                status: status.as_u16(),
                message: key.scrub(&message),
            });
        }
        parse_page(&body)
    }
}

impl StripeApi {
    /// The cause, without the long query string, but with the host.
    fn network_error(&self, key: &ApiKey, e: reqwest::Error) -> ApiError {
        let host = self.base.host_str().unwrap_or_default();
        ApiError::Network(key.scrub(&format!("{host}: {}", error_chain(&e.without_url()))))
    }
}

struct Page {
    events: Vec<FetchedEvent>,
    has_more: bool,
}

fn parse_page(body: &[u8]) -> Result<Page, ApiError> {
    let list: ListOut =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let events = list
        .data
        .into_iter()
        .map(|raw| {
            let head: EventHead = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::Malformed(format!("an event without an id: {e}")))?;
            Ok(FetchedEvent {
                id: head.id,
                created: head.created,
                raw: raw.get().as_bytes().to_vec(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Page {
        events,
        has_more: list.has_more,
    })
}

fn retryable(e: &ApiError) -> bool {
    match e {
        ApiError::Network(_) => true,
        ApiError::Status { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_shows_only_its_last_four_characters() {
        let key = ApiKey::new("rk_test_51AbCdEfGhIjKlMn");
        assert_eq!(format!("{key:?}"), "ApiKey(…KlMn)");
        assert_eq!(
            key.scrub("Invalid API Key provided: rk_test_51AbCdEfGhIjKlMn"),
            "Invalid API Key provided: …KlMn"
        );
    }

    #[test]
    fn the_events_url_asks_for_the_window_every_handled_type_and_the_next_page() {
        let api = StripeApi::new("http://127.0.0.1:9/prefix/").unwrap();
        let url = api.events_url(1_700_000_000, Some("evt_9"));
        assert_eq!(url.path(), "/prefix/v1/events");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("created[gte]".into(), "1700000000".into())));
        assert!(pairs.contains(&("limit".into(), "100".into())));
        assert!(pairs.contains(&("starting_after".into(), "evt_9".into())));
        let types: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == "types[]")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(types, RECONCILED_TYPES);
    }

    #[test]
    fn a_page_keeps_each_event_exactly_as_sent() {
        let body = br#"{"object":"list","data":[{"id":"evt_2", "created":20,"type":"x"},{"id":"evt_1","created":10}],"has_more":true,"url":"/v1/events"}"#;
        let page = parse_page(body).unwrap();
        assert!(page.has_more);
        assert_eq!(page.events[0].id, "evt_2");
        assert_eq!(page.events[0].created, 20);
        assert_eq!(
            page.events[0].raw,
            br#"{"id":"evt_2", "created":20,"type":"x"}"#
        );
        assert!(parse_page(b"{\"data\":[{\"created\":1}]}").is_err());
        assert!(parse_page(b"<html>").is_err());
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(retryable(&ApiError::Network("reset".into())));
        assert!(retryable(&ApiError::Status {
            status: 503,
            message: String::new()
        }));
        assert!(retryable(&ApiError::Status {
            status: 429,
            message: String::new()
        }));
        assert!(!retryable(&ApiError::Refused { status: 401 }));
        assert!(!retryable(&ApiError::Status {
            status: 400,
            message: String::new()
        }));
    }

    #[test]
    fn bases_must_be_http_urls() {
        assert!(StripeApi::new("https://api.stripe.com").is_ok());
        assert!(StripeApi::new("ftp://x").is_err());
        assert!(StripeApi::new("not a url").is_err());
    }
}
