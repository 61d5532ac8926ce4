//! `/admin/conversions` (filters: orphan, unverified, status, client, link,
//! mode) and `/admin/conversions/{id}`: the attribution trace, the history
//! with undo, and a form to set the link by hand.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::events::{event_summary_rows, EventRow};
use super::format::{money, when, words, When};
use super::page::{older_page_query, render, see_other, FlashIn, Layout, PageError, PageResult};
use super::session::{AdminSession, CsrfForm};
use crate::domain::model::*;
use crate::domain::Tracker;
use crate::http::AppState;

const PAGE_SIZE: i64 = 100;

/// A conversion in a table.
pub struct ConversionRow {
    pub id: String,
    pub purchased: When,
    pub client: String,
    pub amount: String,
    pub net: String,
    pub refunded: bool,
    pub status: String,
    /// CSS class of the status badge.
    pub status_class: &'static str,
    pub kind: String,
    pub link: Option<String>,
    pub method: Option<&'static str>,
    pub verified: bool,
    pub live: bool,
    pub email: Option<String>,
}

pub fn status_class(s: ConversionStatus) -> &'static str {
    match s {
        ConversionStatus::Paid | ConversionStatus::DisputeWon => "ok",
        ConversionStatus::PartiallyRefunded | ConversionStatus::Disputed => "warn",
        ConversionStatus::Refunded | ConversionStatus::DisputeLost => "bad",
    }
}

/// Names of clients and slugs of links, for tables.
pub struct Names {
    pub clients: HashMap<String, String>,
    pub links: HashMap<String, String>,
}

impl Names {
    pub async fn load(tracker: &Tracker) -> Result<Self, PageError> {
        let store = tracker.store();
        Ok(Self {
            clients: store
                .list_clients()
                .await?
                .into_iter()
                .map(|c| (c.id, c.name))
                .collect(),
            links: store
                .list_links(None)
                .await?
                .into_iter()
                .map(|l| (l.id, l.slug))
                .collect(),
        })
    }

    pub fn client(&self, id: &str) -> String {
        self.clients
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    pub fn link(&self, id: &str) -> String {
        self.links
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

pub async fn conversion_rows(
    tracker: &Tracker,
    conversions: Vec<Conversion>,
    now: Millis,
) -> Result<Vec<ConversionRow>, PageError> {
    let names = Names::load(tracker).await?;
    Ok(conversions
        .into_iter()
        .map(|c| row(&names, c, now))
        .collect())
}

fn row(names: &Names, c: Conversion, now: Millis) -> ConversionRow {
    ConversionRow {
        purchased: when(c.purchased_at, now),
        client: names.client(&c.client_id),
        amount: money(c.amount, &c.currency),
        net: money(c.net_amount, &c.currency),
        refunded: c.net_amount != c.amount,
        status: words(c.status.as_str()),
        status_class: status_class(c.status),
        kind: words(c.kind.as_str()),
        link: c.link_id.as_deref().map(|l| names.link(l)),
        method: c.method.map(Method::as_str),
        verified: c.verified,
        live: c.livemode,
        email: c.email,
        id: c.id,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct FiltersIn {
    orphan: Option<String>,
    unverified: Option<String>,
    status: Option<String>,
    client: Option<String>,
    link: Option<String>,
    mode: Option<String>,
    /// The next page: after the conversion purchased at `before` (ms)
    /// whose id is `before_id` (alone, `before` lists those purchased
    /// earlier).
    before: Option<i64>,
    before_id: Option<String>,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "admin/conversions.html")]
struct ConversionsPage {
    layout: Layout,
    rows: Vec<ConversionRow>,
    orphan: bool,
    unverified: bool,
    statuses: Vec<Choice>,
    clients: Vec<Choice>,
    links: Vec<Choice>,
    modes: Vec<Choice>,
    /// The query of the next (older) page, when there may be one.
    older: Option<String>,
}

const STATUSES: [ConversionStatus; 6] = [
    ConversionStatus::Paid,
    ConversionStatus::PartiallyRefunded,
    ConversionStatus::Refunded,
    ConversionStatus::Disputed,
    ConversionStatus::DisputeWon,
    ConversionStatus::DisputeLost,
];

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub async fn list_conversions(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(f): Query<FiltersIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let store = tracker.store();
    let now = now_millis();
    let status = nonempty(&f.status).and_then(ConversionStatus::parse);
    let livemode = match nonempty(&f.mode) {
        Some("live") => Some(true),
        Some("test") => Some(false),
        _ => None,
    };
    let filter = ConversionFilter {
        client_id: nonempty(&f.client).map(str::to_string),
        link_id: nonempty(&f.link).map(str::to_string),
        orphans_only: f.orphan.is_some(),
        unverified_only: f.unverified.is_some(),
        status,
        livemode,
        to: f.before.filter(|_| nonempty(&f.before_id).is_none()),
        after: f
            .before
            .zip(nonempty(&f.before_id))
            .map(|(at, id)| (at, id.to_string())),
        limit: PAGE_SIZE,
        ..Default::default()
    };
    let conversions = store.list_conversions(&filter).await?;
    let older = (conversions.len() as i64 == PAGE_SIZE)
        .then(|| conversions.last())
        .flatten()
        .map(|last| {
            older_page_query(
                [
                    ("orphan", f.orphan.as_ref().map(|_| "1")),
                    ("unverified", f.unverified.as_ref().map(|_| "1")),
                    ("status", f.status.as_deref()),
                    ("client", f.client.as_deref()),
                    ("link", f.link.as_deref()),
                    ("mode", f.mode.as_deref()),
                ],
                &[
                    ("before", &last.purchased_at.to_string()),
                    ("before_id", &last.id),
                ],
            )
        });
    let names = Names::load(tracker).await?;
    let all_clients = store.list_clients().await?;
    let clients = all_clients
        .iter()
        .map(|c| Choice {
            selected: filter.client_id.as_deref() == Some(c.id.as_str()),
            value: c.id.clone(),
            label: c.name.clone(),
        })
        .collect();
    let links = store
        .list_links(filter.client_id.as_deref())
        .await?
        .into_iter()
        .map(|l| Choice {
            selected: filter.link_id.as_deref() == Some(l.id.as_str()),
            label: format!("{} ({})", l.slug, names.client(&l.client_id)),
            value: l.id,
        })
        .collect();
    let statuses = STATUSES
        .iter()
        .map(|s| Choice {
            value: s.as_str().into(),
            label: words(s.as_str()),
            selected: status == Some(*s),
        })
        .collect();
    let modes = [("live", "live only"), ("test", "test only")]
        .iter()
        .map(|(v, l)| Choice {
            value: (*v).into(),
            label: (*l).into(),
            selected: nonempty(&f.mode) == Some(*v),
        })
        .collect();
    Ok(render(&ConversionsPage {
        layout: Layout::new(admin.csrf(), "conversions", None),
        rows: conversions
            .into_iter()
            .map(|c| row(&names, c, now))
            .collect(),
        orphan: f.orphan.is_some(),
        unverified: f.unverified.is_some(),
        statuses,
        clients,
        links,
        modes,
        older,
    }))
}

pub struct TraceRow {
    pub step: String,
    pub outcome: &'static str,
    pub class: &'static str,
    pub detail: String,
    pub decided: bool,
}

pub fn trace_rows(c: &Conversion) -> Vec<TraceRow> {
    c.trace
        .iter()
        .map(|s| TraceRow {
            step: words(&s.step),
            outcome: match s.outcome {
                StepOutcome::Matched => "matched",
                StepOutcome::NoMatch => "no match",
                StepOutcome::Skipped => "skipped",
            },
            class: match s.outcome {
                StepOutcome::Matched => "ok",
                StepOutcome::NoMatch => "bad",
                StepOutcome::Skipped => "muted",
            },
            decided: s.outcome == StepOutcome::Matched,
            detail: s.detail.clone(),
        })
        .collect()
}

pub struct HistoryRow {
    pub id: i64,
    pub at: When,
    pub actor: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Undo is offered while the conversion does not already have `from`.
    pub undoable: bool,
}

#[derive(Template)]
#[template(path = "admin/conversion.html")]
struct ConversionPage {
    layout: Layout,
    c: ConversionRow,
    client_id: String,
    purchase_key: String,
    customer: Option<String>,
    subscription: Option<String>,
    client_method: &'static str,
    created: When,
    updated: When,
    trace: Vec<TraceRow>,
    history: Vec<HistoryRow>,
    events: Vec<EventRow>,
    next_steps: Vec<String>,
    links: Vec<Choice>,
}

pub async fn show_conversion(
    State(state): State<AppState>,
    admin: AdminSession,
    Path(id): Path<String>,
    Query(flash): Query<FlashIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let now = now_millis();
    let d = tracker.diagnose_conversion(&id).await?;
    let names = Names::load(tracker).await?;
    let link_name = |l: &Option<String>| {
        l.as_deref()
            .map_or("(no link)".to_string(), |l| names.link(l))
    };
    let history = d
        .history
        .iter()
        .rev()
        .map(|h| HistoryRow {
            id: h.id,
            at: when(h.at, now),
            actor: h.actor.clone(),
            from: format!(
                "{}{}",
                link_name(&h.from_link_id),
                h.from_method
                    .map(|m| format!(" ({})", m.as_str()))
                    .unwrap_or_default()
            ),
            to: format!(
                "{}{}",
                link_name(&h.to_link_id),
                h.to_method
                    .map(|m| format!(" ({})", m.as_str()))
                    .unwrap_or_default()
            ),
            reason: h.reason.clone(),
            undoable: h.from_link_id != d.conversion.link_id,
        })
        .collect();
    let links = tracker
        .store()
        .list_links(Some(&d.conversion.client_id))
        .await?
        .into_iter()
        .map(|l| Choice {
            selected: d.conversion.link_id.as_deref() == Some(l.id.as_str()),
            label: match &l.label {
                Some(label) => format!("{} — {label}", l.slug),
                None => l.slug.clone(),
            },
            value: l.id,
        })
        .collect();
    let c = d.conversion;
    Ok(render(&ConversionPage {
        layout: Layout::new(admin.csrf(), "conversions", flash.text()),
        client_id: c.client_id.clone(),
        purchase_key: c.purchase_key.clone(),
        customer: c.customer.clone(),
        subscription: c.subscription.clone(),
        client_method: super::format::client_method(c.client_method),
        created: when(c.created_at, now),
        updated: when(c.updated_at, now),
        trace: trace_rows(&c),
        history,
        events: event_summary_rows(&d.events, now),
        next_steps: d.next_steps,
        links,
        c: row(&names, c, now),
    }))
}

#[derive(Debug, Deserialize)]
pub struct SetLinkForm {
    link_id: String,
}

pub async fn set_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<SetLinkForm>,
) -> PageResult {
    let c = state
        .tracker
        .set_link_manually(&id, form.data.link_id.trim(), "admin")
        .await?;
    Ok(see_other(&format!(
        "/admin/conversions/{}?done=set_link",
        c.id
    )))
}

#[derive(Debug, Deserialize)]
pub struct UndoForm {
    entry_id: i64,
}

pub async fn undo_change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<UndoForm>,
) -> PageResult {
    let entry = state
        .tracker
        .store()
        .get_history_entry(form.data.entry_id)
        .await?;
    if entry.as_ref().map(|e| e.conversion_id.as_str()) != Some(id.as_str()) {
        return Err(PageError::NotFound(format!(
            "history entry {} of conversion {id}",
            form.data.entry_id
        )));
    }
    let c = state
        .tracker
        .undo_history(form.data.entry_id, "admin")
        .await?;
    Ok(see_other(&format!("/admin/conversions/{}?done=undo", c.id)))
}
