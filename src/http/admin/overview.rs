//! `/admin`: every client's status, the orphans with Auto-Fix Now, recent
//! conversions and events, totals per currency, and charts.

use askama::Template;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::chart::{self, Chart};
use super::clients::{client_summaries, ClientSummary};
use super::conversions::{conversion_rows, ConversionRow};
use super::events::{event_rows, EventRow};
use super::format::money;
use super::page::{render, see_other, FlashIn, Layout, PageResult};
use super::session::{AdminSession, CsrfForm};
use crate::domain::model::*;
use crate::http::AppState;

/// Days the charts cover.
pub const CHART_DAYS: i64 = 30;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Default, Deserialize)]
pub struct ModeIn {
    pub mode: Option<String>,
}

impl ModeIn {
    /// Live unless `?mode=test`.
    pub fn live(&self) -> bool {
        self.mode.as_deref() != Some("test")
    }
}

pub struct TotalView {
    pub currency: String,
    pub conversions: i64,
    pub revenue: String,
    pub net: String,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    layout: Layout,
    clients: Vec<ClientSummary>,
    orphans: i64,
    live: bool,
    totals: Vec<TotalView>,
    clicks: i64,
    conversions: Vec<ConversionRow>,
    events: Vec<EventRow>,
    clicks_chart: Chart,
    conversions_chart: Chart,
    /// Verified sales of the other mode, when this one has none.
    other_mode_sales: i64,
}

pub async fn show_overview(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(flash): Query<FlashIn>,
    Query(mode): Query<ModeIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let store = tracker.store();
    let now = now_millis();
    let clients = client_summaries(tracker, now).await?;
    let orphans = clients.iter().map(|c| c.activity.orphans).sum();
    let live = mode.live();
    let totals: Vec<TotalView> = store
        .currency_totals(None, live)
        .await?
        .into_iter()
        .map(|t| TotalView {
            revenue: money(t.revenue, &t.currency),
            net: money(t.net, &t.currency),
            currency: t.currency.to_uppercase(),
            conversions: t.conversions,
        })
        .collect();
    let other_mode_sales = if totals.is_empty() {
        store
            .currency_totals(None, !live)
            .await?
            .iter()
            .map(|t| t.conversions)
            .sum()
    } else {
        0
    };
    let recent = store
        .list_conversions(&ConversionFilter {
            limit: 10,
            ..Default::default()
        })
        .await?;
    let conversions = conversion_rows(tracker, recent, now).await?;
    let events = store
        .list_events(&EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await?;
    let events = event_rows(tracker, &events, now).await?;
    let daily = store.daily_counts(None, now - CHART_DAYS * DAY_MS).await?;
    let today = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .date_naive();
    let (clicks_chart, conversions_chart) = chart::daily(&daily, today, CHART_DAYS);
    let page = OverviewPage {
        layout: Layout::new(admin.csrf(), "overview", flash.text()),
        clicks: store.count_clicks(None).await?,
        clients,
        orphans,
        live,
        totals,
        conversions,
        events,
        clicks_chart,
        conversions_chart,
        other_mode_sales,
    };
    Ok(render(&page))
}

#[derive(Debug, Deserialize)]
pub struct AutofixIn {
    /// Where to come back to (`/admin` or a client's page).
    #[serde(default)]
    back: Option<String>,
}

/// Auto-Fix Now: runs the fixer over every orphan and comes back with
/// "fixed N, still orphan M".
pub async fn run_autofix(State(state): State<AppState>, form: CsrfForm<AutofixIn>) -> PageResult {
    let report = state.tracker.autofix(None).await?;
    let back = match form
        .data
        .back
        .as_deref()
        .and_then(|b| b.strip_prefix("/admin/clients/"))
    {
        Some(id)
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            format!("/admin/clients/{id}")
        }
        _ => "/admin".to_string(),
    };
    Ok(see_other(&format!(
        "{back}?done=autofix&fixed={}&remaining={}",
        report.fixed, report.remaining
    )))
}
