//! `/admin/events` and `/admin/events/{id}`: stored webhook deliveries with
//! their raw payload, verification, how the client was found, the processing
//! result, and a button to process them again.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::conversions::{Choice, Names};
use super::format::{self, when, When};
use super::page::{older_page_query, render, see_other, FlashIn, Layout, PageError, PageResult};
use super::session::{AdminSession, CsrfForm};
use crate::domain::diagnose::EventSummary;
use crate::domain::model::*;
use crate::domain::Tracker;
use crate::http::AppState;

/// An event in a table.
pub struct EventRow {
    pub id: i64,
    pub received: When,
    pub event_type: String,
    pub client: Option<String>,
    pub verified: bool,
    pub reason: Option<&'static str>,
    pub processing: &'static str,
    pub processing_class: &'static str,
    pub error: Option<String>,
    pub live: Option<bool>,
}

fn processing_class(p: Processing) -> &'static str {
    match p {
        Processing::Processed => "ok",
        Processing::Ignored => "muted",
        Processing::Pending | Processing::NoClient => "warn",
        Processing::Invalid | Processing::Failed => "bad",
    }
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        s.push('…');
    }
    s
}

fn event_row(names: &Names, e: &StoredEvent, now: Millis) -> EventRow {
    EventRow {
        id: e.id,
        received: when(e.received_at, now),
        event_type: e
            .event_type
            .clone()
            .unwrap_or_else(|| "(not a Stripe event)".into()),
        client: e.client_id.as_deref().map(|c| names.client(c)),
        verified: e.verification == Verification::Verified,
        reason: e.verification_reason.map(format::unverified_reason),
        processing: e.processing.as_str(),
        processing_class: processing_class(e.processing),
        error: e.processing_error.as_deref().map(short),
        live: e.livemode,
    }
}

pub async fn event_rows(
    tracker: &Tracker,
    events: &[StoredEvent],
    now: Millis,
) -> Result<Vec<EventRow>, PageError> {
    let names = Names::load(tracker).await?;
    Ok(events.iter().map(|e| event_row(&names, e, now)).collect())
}

pub fn event_summary_rows(events: &[EventSummary], now: Millis) -> Vec<EventRow> {
    events
        .iter()
        .map(|e| EventRow {
            id: e.id,
            received: when(e.received_at, now),
            event_type: e
                .event_type
                .clone()
                .unwrap_or_else(|| "(not a Stripe event)".into()),
            client: None,
            verified: e.verification == Verification::Verified,
            reason: e.verification_reason.map(format::unverified_reason),
            processing: e.processing.as_str(),
            processing_class: processing_class(e.processing),
            error: e.processing_error.as_deref().map(short),
            live: None,
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct EventFiltersIn {
    verification: Option<String>,
    processing: Option<String>,
    client: Option<String>,
    /// Events stored before this one (its id): the next page.
    before: Option<i64>,
}

/// Events a page shows.
const PAGE_SIZE: i64 = 200;

#[derive(Template)]
#[template(path = "admin/events.html")]
struct EventsPage {
    layout: Layout,
    rows: Vec<EventRow>,
    verifications: Vec<Choice>,
    processings: Vec<Choice>,
    clients: Vec<Choice>,
    /// The query of the next (older) page, when there may be one.
    older: Option<String>,
}

const PROCESSINGS: [Processing; 6] = [
    Processing::Processed,
    Processing::Failed,
    Processing::NoClient,
    Processing::Pending,
    Processing::Ignored,
    Processing::Invalid,
];

pub async fn list_events(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(f): Query<EventFiltersIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let now = now_millis();
    let verification = match f.verification.as_deref() {
        Some("verified") => Some(Verification::Verified),
        Some("unverified") => Some(Verification::Unverified),
        _ => None,
    };
    let processing = f.processing.as_deref().and_then(Processing::parse);
    let client_id = f
        .client
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let events = tracker
        .store()
        .list_events(&EventFilter {
            verification,
            processing,
            client_id: client_id.clone(),
            before_id: f.before,
            limit: PAGE_SIZE,
            ..Default::default()
        })
        .await?;
    let older = (events.len() as i64 == PAGE_SIZE)
        .then(|| events.last().map(|e| e.id))
        .flatten()
        .map(|before| {
            older_page_query(
                [
                    ("verification", f.verification.as_deref()),
                    ("processing", f.processing.as_deref()),
                    ("client", f.client.as_deref()),
                ],
                &[("before", &before.to_string())],
            )
        });
    let rows = event_rows(tracker, &events, now).await?;
    let verifications = [
        ("verified", Verification::Verified),
        ("unverified", Verification::Unverified),
    ]
    .iter()
    .map(|(v, x)| Choice {
        value: (*v).into(),
        label: (*v).into(),
        selected: verification == Some(*x),
    })
    .collect();
    let processings = PROCESSINGS
        .iter()
        .map(|p| Choice {
            value: p.as_str().into(),
            label: format::words(p.as_str()),
            selected: processing == Some(*p),
        })
        .collect();
    let clients = tracker
        .store()
        .list_clients()
        .await?
        .into_iter()
        .map(|c| Choice {
            selected: client_id.as_deref() == Some(c.id.as_str()),
            value: c.id,
            label: c.name,
        })
        .collect();
    Ok(render(&EventsPage {
        layout: Layout::new(admin.csrf(), "events", None),
        rows,
        verifications,
        processings,
        clients,
        older,
    }))
}

#[derive(Template)]
#[template(path = "admin/event.html")]
struct EventPage {
    layout: Layout,
    e: EventRow,
    stripe_event_id: Option<String>,
    api_version: Option<String>,
    account: Option<String>,
    endpoint: String,
    source: &'static str,
    client_id: Option<String>,
    client_method: Option<&'static str>,
    processing_words: &'static str,
    full_error: Option<String>,
    attempts: i64,
    deliveries: i64,
    headers: String,
    payload: String,
    payload_bytes: usize,
}

/// JSON pretty-printed; anything else shown as (lossy) text.
fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub async fn show_event(
    State(state): State<AppState>,
    admin: AdminSession,
    Path(id): Path<i64>,
    Query(flash): Query<FlashIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let now = now_millis();
    let Some(e) = tracker.store().get_event(id).await? else {
        return Err(PageError::NotFound(format!("event not found: {id}")));
    };
    let names = Names::load(tracker).await?;
    Ok(render(&EventPage {
        layout: Layout::new(admin.csrf(), "events", flash.text()),
        stripe_event_id: e.stripe_event_id.clone(),
        api_version: e.api_version.clone(),
        account: e.account.clone(),
        endpoint: e.endpoint.clone(),
        source: match e.source {
            EventSource::Push => "pushed by Stripe to the webhook endpoint",
            EventSource::Fetch => "fetched from Stripe's API by reconciliation",
        },
        client_id: e.client_id.clone(),
        client_method: e.client_method.map(format::client_method),
        processing_words: format::processing(e.processing),
        full_error: e.processing_error.clone(),
        attempts: e.attempts,
        deliveries: e.deliveries,
        headers: pretty(e.headers.as_bytes()),
        payload: pretty(&e.body),
        payload_bytes: e.body.len(),
        e: event_row(&names, &e, now),
    }))
}

#[derive(Debug, Deserialize)]
pub struct ReprocessForm {}

/// Processes a stored event again; an unverified one is first verified
/// again with the current secrets (it stays held out if it still fails).
pub async fn reprocess_event(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    _form: CsrfForm<ReprocessForm>,
) -> PageResult {
    let tracker = &state.tracker;
    let Some(event) = tracker.store().get_event(id).await? else {
        return Err(PageError::NotFound(format!("event not found: {id}")));
    };
    let verified_now = event.verification == Verification::Unverified
        && event.processing != Processing::Invalid
        && tracker.reverify_event(&event).await?;
    if !verified_now {
        let event = tracker.store().get_event(id).await?.unwrap_or(event);
        tracker.reprocess_event(&event).await?;
    }
    tracing::info!(
        event_id = id,
        verified_now,
        "event reprocessed from the admin"
    );
    Ok(see_other(&format!("/admin/events/{id}?done=reprocessed")))
}
