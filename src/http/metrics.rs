//! `/metrics` in Prometheus text format, the request-latency middleware, and
//! the counters recorded at the HTTP edge (webhook deliveries, clicks).
//!
//! One process-wide recorder (installed on first use, so that tests may
//! build many apps in one process); there is no listener of its own: the
//! text is rendered from a `PrometheusHandle` by our own route. The domain
//! records conversions and processing failures through the `metrics` facade
//! (`salestrack_conversions_total`, `salestrack_event_processing_failures_total`),
//! which is a no-op where no recorder is installed (the CLI).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::ingest::IngestOutcome;
use crate::domain::model::now_millis;
use crate::error::AppError;

pub const WEBHOOK_EVENTS: &str = "salestrack_webhook_events_total";
pub const WEBHOOK_DUPLICATES: &str = "salestrack_webhook_duplicates_total";
pub const CLICKS: &str = "salestrack_clicks_total";
pub const ORPHANS: &str = "salestrack_orphans";
pub const REQUEST_DURATION: &str = "salestrack_http_request_duration_seconds";

/// Latency buckets in seconds: the click hot path lives in the first few.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Event types salestrack acts on: the only ones used as a label for events
/// whose signature did not verify (their body is anyone's text, and a label
/// taken from it would let a stranger create series at will).
const HANDLED_TYPES: &[&str] = &[
    "invoice.paid",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "payment_intent.succeeded",
    "charge.succeeded",
    "invoice_payment.paid",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
];

/// The process-wide handle; installs the recorder on first call. If another
/// recorder is already installed (an embedding program's), ours still renders,
/// though only what is recorded through it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_string()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
        } else {
            describe();
        }
        // Histogram samples wait in buffers until drained: drain them even
        // when nobody scrapes, so that memory stays flat.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        WEBHOOK_EVENTS,
        "Webhook deliveries by event type and verification result"
    );
    metrics::describe_counter!(
        WEBHOOK_DUPLICATES,
        "Webhook deliveries of an event already stored"
    );
    metrics::describe_counter!(
        CLICKS,
        "Clicks recorded, by source and whether a bot made them"
    );
    metrics::describe_counter!(
        "salestrack_conversions_total",
        "Conversions created, by the attribution method that found their link (none: orphan)"
    );
    metrics::describe_counter!(
        "salestrack_event_processing_failures_total",
        "Processing runs of stored events that failed (the sweep retries them)"
    );
    metrics::describe_gauge!(
        ORPHANS,
        "Verified live conversions without a link, at scrape time"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method, route and status"
    );
}

pub fn routes(token: Option<MetricsToken>) -> Router<AppState> {
    Router::new()
        .route("/metrics", get(render))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token))
}

/// `GET /metrics`: computes the gauges that are read from the store, then
/// renders everything.
async fn render(State(state): State<AppState>) -> Response {
    let handle = handle();
    match state.tracker.store().client_activity(now_millis()).await {
        Ok(rows) => {
            let orphans: i64 = rows.iter().map(|r| r.orphans).sum();
            metrics::gauge!(ORPHANS).set(orphans as f64);
        }
        Err(e) => return AppError::from(e).into_response(),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Middleware: one latency sample per request. Every label comes from a
/// closed set — the route pattern (never the raw path), a known method, a
/// known status — so that no request can add series of its own.
pub async fn track_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => status_label(response.status()),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones by name, any other `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a label: the codes salestrack answers with by number,
/// any other by class (`2xx` … `5xx`).
fn status_label(status: StatusCode) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (303, "303"),
        (304, "304"),
        (307, "307"),
        (308, "308"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    let code = status.as_u16();
    match KNOWN.iter().find(|(known, _)| *known == code) {
        Some((_, label)) => label,
        None => match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// The bearer token `/metrics` asks for when configured (`metrics_token`).
/// Its `Debug` is redacted.
#[derive(Clone)]
pub struct MetricsToken(Arc<str>);

impl MetricsToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::from(token))
    }

    /// Compares in constant time (for tokens of the same length).
    fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
}

/// Route middleware of `/metrics`: without a configured token, open;
/// with one, `Authorization: Bearer <token>` or 401.
async fn require_token(
    State(token): State<Option<MetricsToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if given.is_some_and(|given| token.matches(given)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": {"code": "unauthorized", "message": "/metrics needs its bearer token"}})),
    )
        .into_response()
}

/// A click was recorded (`source`: `redirect` or `beacon`).
pub fn record_click(source: &'static str, bot: bool) {
    metrics::counter!(CLICKS, "source" => source, "bot" => if bot { "true" } else { "false" })
        .increment(1);
}

/// A webhook delivery and what ingest made of it (`None`: not stored). The
/// type comes from ingest's own parse of the body; nothing is parsed here.
pub fn record_webhook(outcome: Option<&IngestOutcome>) {
    let (verification, trusted) = match outcome {
        Some(IngestOutcome::Accepted { duplicate, .. }) => {
            if *duplicate {
                metrics::counter!(WEBHOOK_DUPLICATES).increment(1);
            }
            ("verified", true)
        }
        Some(IngestOutcome::Unverified { .. }) => ("unverified", false),
        Some(IngestOutcome::InvalidPayload { .. }) => ("invalid_payload", false),
        Some(IngestOutcome::UnknownEndpoint { .. }) => ("unknown_endpoint", false),
        None => ("not_stored", false),
    };
    let event_type = type_label(outcome.and_then(IngestOutcome::event_type), trusted);
    metrics::counter!(WEBHOOK_EVENTS, "type" => event_type, "verification" => verification)
        .increment(1);
}

/// The event type to use as a label: a verified event's own type (Stripe
/// signed it), others' only when it is a type we handle.
fn type_label(event_type: Option<&str>, trusted: bool) -> String {
    let Some(t) = event_type else {
        return "none".into();
    };
    let plausible = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if HANDLED_TYPES.contains(&t) || (trusted && plausible) {
        t.to_string()
    } else {
        "other".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_types_are_labelled_only_when_handled() {
        assert_eq!(type_label(Some("invoice.paid"), false), "invoice.paid");
        assert_eq!(type_label(Some("customer.created"), false), "other");
        assert_eq!(
            type_label(Some("customer.created"), true),
            "customer.created"
        );
        assert_eq!(type_label(Some("<script>alert(1)</script>"), true), "other");
        assert_eq!(type_label(None, true), "none");
    }

    #[test]
    fn methods_and_statuses_outside_the_known_sets_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
        assert_eq!(status_label(StatusCode::NOT_FOUND), "404");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(
            status_label(StatusCode::from_u16(599).expect("valid")),
            "5xx"
        );
    }

    #[test]
    fn the_metrics_token_compares_whole_and_hides_in_debug() {
        let token = MetricsToken::new("s3cret-token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b"s3cret-token2"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
