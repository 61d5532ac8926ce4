//! `/admin/diagnose-sale?linkSlug=…` (also `conversion=`, `email=`,
//! `invoice=`): everything about one link or sale, and what to do next.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::conversions::{conversion_rows, trace_rows, ConversionRow, TraceRow};
use super::events::{event_summary_rows, EventRow};
use super::format::{self, when, When};
use super::page::{render, Layout, PageError, PageResult};
use super::session::AdminSession;
use crate::domain::diagnose::{LinkDiagnosis, SaleDiagnosis};
use crate::domain::model::*;
use crate::domain::Tracker;
use crate::http::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct DiagnoseIn {
    #[serde(rename = "linkSlug", alias = "link_slug")]
    link_slug: Option<String>,
    conversion: Option<String>,
    email: Option<String>,
    invoice: Option<String>,
}

pub struct ClickRow {
    pub at: When,
    pub id: String,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub bot: bool,
}

pub struct TracedConversion {
    pub c: ConversionRow,
    pub trace: Vec<TraceRow>,
}

pub struct OrphanRow {
    pub c: ConversionRow,
    pub why: String,
    pub this_link: String,
}

pub struct LinkView {
    pub slug: String,
    pub label: Option<String>,
    pub destination: String,
    pub promo_codes: String,
    pub client_id: String,
    pub client_name: String,
    pub webhook_url: String,
    pub clicks: Vec<ClickRow>,
    pub bot_clicks: usize,
    pub conversions: Vec<TracedConversion>,
    pub orphans: Vec<OrphanRow>,
    pub events: Vec<EventRow>,
    pub next_steps: Vec<String>,
}

pub struct SaleView {
    pub c: ConversionRow,
    pub client_method: &'static str,
    pub trace: Vec<TraceRow>,
    pub history: usize,
    pub events: Vec<EventRow>,
    pub next_steps: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/diagnose.html")]
struct DiagnosePage {
    layout: Layout,
    link_slug: String,
    conversion: String,
    email: String,
    invoice: String,
    /// What was searched, in words; empty before a search.
    searched: String,
    links: Vec<LinkView>,
    sales: Vec<SaleView>,
    events: Vec<EventRow>,
    next_steps: Vec<String>,
    not_found: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(255).collect())
}

async fn link_view(
    tracker: &Tracker,
    d: LinkDiagnosis,
    now: Millis,
) -> Result<LinkView, PageError> {
    let clicks = d
        .recent_clicks
        .iter()
        .map(|k| ClickRow {
            at: when(k.at, now),
            id: k.id.clone(),
            referrer: k.referrer.clone(),
            user_agent: k.user_agent.clone(),
            bot: k.bot,
        })
        .collect();
    let traces: Vec<Vec<TraceRow>> = d.conversions.iter().map(trace_rows).collect();
    let conversions = conversion_rows(tracker, d.conversions, now)
        .await?
        .into_iter()
        .zip(traces)
        .map(|(c, trace)| TracedConversion { c, trace })
        .collect();
    let reasons: Vec<(String, String)> = d
        .orphans_nearby
        .iter()
        .map(|o| (o.why_not_matched.clone(), o.this_link.clone()))
        .collect();
    let orphans = conversion_rows(
        tracker,
        d.orphans_nearby.into_iter().map(|o| o.conversion).collect(),
        now,
    )
    .await?
    .into_iter()
    .zip(reasons)
    .map(|(c, (why, this_link))| OrphanRow { c, why, this_link })
    .collect();
    Ok(LinkView {
        slug: d.link.slug,
        label: d.link.label,
        destination: d.link.destination,
        promo_codes: d.link.promo_codes.join(", "),
        client_id: d.client.id,
        client_name: d.client.name,
        webhook_url: d.webhook_url,
        clicks,
        bot_clicks: d.bot_clicks,
        conversions,
        orphans,
        events: event_summary_rows(&d.events_mentioning, now),
        next_steps: d.next_steps,
    })
}

async fn sale_view(
    tracker: &Tracker,
    d: SaleDiagnosis,
    now: Millis,
) -> Result<SaleView, PageError> {
    let trace = trace_rows(&d.conversion);
    let client_method = format::client_method(d.conversion.client_method);
    let c = conversion_rows(tracker, vec![d.conversion], now)
        .await?
        .pop()
        .ok_or_else(|| PageError::Internal("conversion row".into()))?;
    Ok(SaleView {
        c,
        client_method,
        trace,
        history: d.history.len(),
        events: event_summary_rows(&d.events, now),
        next_steps: d.next_steps,
    })
}

pub async fn diagnose_sale(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(q): Query<DiagnoseIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let now = now_millis();
    let mut page = DiagnosePage {
        layout: Layout::new(admin.csrf(), "diagnose", None),
        link_slug: given(&q.link_slug).unwrap_or_default(),
        conversion: given(&q.conversion).unwrap_or_default(),
        email: given(&q.email).unwrap_or_default(),
        invoice: given(&q.invoice).unwrap_or_default(),
        searched: String::new(),
        links: vec![],
        sales: vec![],
        events: vec![],
        next_steps: vec![],
        not_found: None,
    };
    let result: Result<(), PageError> = async {
        if let Some(slug) = given(&q.link_slug) {
            page.searched = format!("link slug {slug:?}");
            for d in tracker.diagnose_link(&slug).await? {
                page.links.push(link_view(tracker, d, now).await?);
            }
        } else if let Some(id) = given(&q.conversion) {
            page.searched = format!("conversion {id}");
            let d = tracker.diagnose_conversion(&id).await?;
            page.next_steps = d.next_steps.clone();
            page.sales.push(sale_view(tracker, d, now).await?);
        } else if let Some(found) = match (given(&q.email), given(&q.invoice)) {
            (Some(email), _) => {
                page.searched = format!("sales of {email}");
                Some(tracker.diagnose_email(&email).await?)
            }
            (None, Some(invoice)) => {
                page.searched = format!("invoice {invoice}");
                Some(tracker.diagnose_invoice(&invoice).await?)
            }
            _ => None,
        } {
            page.events = event_summary_rows(&found.events_mentioning, now);
            page.next_steps = found.next_steps;
            for d in found.sales {
                page.sales.push(sale_view(tracker, d, now).await?);
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(render(&page)),
        Err(PageError::NotFound(what)) => {
            page.not_found = Some(format!("Nothing found: {what}."));
            Ok((StatusCode::NOT_FOUND, render(&page)).into_response())
        }
        Err(e) => Err(e),
    }
}
