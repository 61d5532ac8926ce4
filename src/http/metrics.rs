//! `/metrics` in Prometheus text format, the request-latency middleware, and
//! the counters recorded at the HTTP edge (webhook deliveries, clicks).
//!
//! One process-wide recorder (installed on first use, so that tests may
//! build many apps in one process); there is no listener of its own: the
//! text is rendered from a `PrometheusHandle` by our own route. The domain
//! records conversions and processing failures through the `metrics` facade
//! (`salestrack_conversions_total`, `salestrack_event_processing_failures_total`),
//! which is a no-op where no recorder is installed (the CLI).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
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

/// Middleware: one latency sample per request, labelled by the route
/// pattern (never the raw path, which would make a series per slug).
pub async fn track_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
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
}
