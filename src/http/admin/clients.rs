//! `/admin/clients` and `/admin/clients/{id}`: each client's Sales Tracking
//! Status, activity, webhook URL and setup checklist; its links with their
//! figures, masked secrets and settings; forms to add clients, links and
//! secrets and to change the settings.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::chart::{self, Chart};
use super::conversions::{conversion_rows, ConversionRow};
use super::format::{money, rate, when_opt, StatusView, When};
use super::overview::{ModeIn, CHART_DAYS};
use super::page::{render, see_other, FlashIn, Layout, PageError, PageResult};
use super::session::{AdminSession, CsrfForm};
use crate::domain::client::{ClientIn, LinkIn};
use crate::domain::model::*;
use crate::domain::report::ClientActivity;
use crate::domain::status;
use crate::domain::Tracker;
use crate::http::AppState;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A client with its status, as the overview and the client pages show it.
pub struct ClientSummary {
    pub id: String,
    pub name: String,
    pub domain: Option<String>,
    pub status: StatusView,
    pub activity: ClientActivity,
    pub last_event: Option<When>,
    pub webhook_url: String,
}

/// Every client (oldest first) with its status as of `now`.
pub async fn client_summaries(
    tracker: &Tracker,
    now: Millis,
) -> Result<Vec<ClientSummary>, PageError> {
    let clients = tracker.store().list_clients().await?;
    let mut activity: HashMap<String, ClientActivity> = tracker
        .store()
        .client_activity(now)
        .await?
        .into_iter()
        .map(|a| (a.client_id.clone(), a))
        .collect();
    Ok(clients
        .into_iter()
        .map(|c| {
            let a = activity.remove(&c.id).unwrap_or_else(|| ClientActivity {
                client_id: c.id.clone(),
                ..Default::default()
            });
            ClientSummary {
                status: status::assess(&a, now).into(),
                last_event: when_opt(a.last_event_at, now),
                webhook_url: tracker.webhook_url(&c.id),
                activity: a,
                id: c.id,
                name: c.name,
                domain: c.domain,
            }
        })
        .collect())
}

/// One step of the setup checklist of SPEC 3.
pub struct CheckItem {
    pub done: bool,
    pub optional: bool,
    pub text: String,
    pub hint: String,
}

async fn checklist(tracker: &Tracker, c: &ClientSummary) -> Result<Vec<CheckItem>, PageError> {
    let seen = |needle: &str| EventFilter {
        client_id: Some(c.id.clone()),
        body_contains: Some(needle.to_string()),
        limit: 1,
        ..Default::default()
    };
    let invoice_paid = !tracker
        .store()
        .list_events(&seen("\"invoice.paid\""))
        .await?
        .is_empty();
    let link_slug = !tracker
        .store()
        .list_events(&seen("\"link_slug\""))
        .await?
        .is_empty();
    Ok(vec![
        CheckItem {
            done: c.activity.last_event_at.is_some(),
            optional: false,
            text: "Configure the webhook in Stripe".into(),
            hint: format!(
                "Stripe Dashboard → Developers → Webhooks → Add endpoint, URL {}",
                c.webhook_url
            ),
        },
        CheckItem {
            // Not while every recent delivery fails verification.
            done: status::secret_works(&c.activity, now_millis()),
            optional: false,
            text: "Add its signing secret".into(),
            hint: "Copy the endpoint's whsec_… secret from Stripe and add it below".into(),
        },
        CheckItem {
            done: invoice_paid,
            optional: false,
            text: "Select invoice.paid".into(),
            hint: "Also checkout.session.completed, payment_intent.succeeded, charge.refunded and charge.dispute.*".into(),
        },
        CheckItem {
            done: link_slug,
            optional: true,
            text: "Pass link_slug in checkout metadata".into(),
            hint: "metadata[link_slug]=SLUG on the Checkout Session or subscription makes attribution exact".into(),
        },
    ])
}

pub struct ClientRow {
    pub summary: ClientSummary,
    pub checklist: Vec<CheckItem>,
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    layout: Layout,
    rows: Vec<ClientRow>,
}

pub async fn list_clients(
    State(state): State<AppState>,
    admin: AdminSession,
    Query(flash): Query<FlashIn>,
) -> PageResult {
    let now = now_millis();
    let mut rows = Vec::new();
    for summary in client_summaries(&state.tracker, now).await? {
        let checklist = checklist(&state.tracker, &summary).await?;
        rows.push(ClientRow { summary, checklist });
    }
    Ok(render(&ClientsPage {
        layout: Layout::new(admin.csrf(), "clients", flash.text()),
        rows,
    }))
}

fn optional(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[derive(Debug, Deserialize)]
pub struct ClientForm {
    name: String,
    domain: Option<String>,
    stripe_account: Option<String>,
    webhook_secret: Option<String>,
}

pub async fn create_client(
    State(state): State<AppState>,
    form: CsrfForm<ClientForm>,
) -> PageResult {
    let f = form.data;
    let client = state
        .tracker
        .add_client(ClientIn {
            name: f.name,
            domain: optional(f.domain),
            stripe_account: optional(f.stripe_account),
            webhook_secret: optional(f.webhook_secret),
            stripe_api_key: None,
        })
        .await?;
    Ok(see_other(&format!(
        "/admin/clients/{}?done=client",
        client.id
    )))
}

pub struct LinkRow {
    pub slug: String,
    pub label: Option<String>,
    pub destination: String,
    pub share_url: String,
    pub promo_codes: String,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub bot_clicks: i64,
    pub conversions: i64,
    pub revenue: Vec<String>,
    pub rate: String,
}

#[derive(Template)]
#[template(path = "admin/client.html")]
struct ClientPage {
    layout: Layout,
    client: ClientSummary,
    checklist: Vec<CheckItem>,
    stripe_account: Option<String>,
    has_api_key: bool,
    settings: AttributionSettings,
    secrets: Vec<String>,
    links: Vec<LinkRow>,
    live: bool,
    clicks_chart: Chart,
    conversions_chart: Chart,
    conversions: Vec<ConversionRow>,
}

pub async fn show_client(
    State(state): State<AppState>,
    admin: AdminSession,
    Path(id): Path<String>,
    Query(flash): Query<FlashIn>,
    Query(mode): Query<ModeIn>,
) -> PageResult {
    let tracker = &state.tracker;
    let store = tracker.store();
    let now = now_millis();
    let Some(client) = store.get_client(&id).await? else {
        return Err(PageError::NotFound(format!("client not found: {id}")));
    };
    let summary = client_summaries(tracker, now)
        .await?
        .into_iter()
        .find(|s| s.id == client.id)
        .ok_or_else(|| PageError::NotFound(format!("client not found: {id}")))?;
    let checklist = checklist(tracker, &summary).await?;
    let secrets = store
        .list_client_secrets()
        .await?
        .iter()
        .find(|c| c.client.id == client.id)
        .map(|c| c.secrets.iter().map(WebhookSecret::masked).collect())
        .unwrap_or_default();
    let live = mode.live();
    let stats: HashMap<String, _> = store
        .link_stats(&client.id, live)
        .await?
        .into_iter()
        .map(|s| (s.link_id.clone(), s))
        .collect();
    let base = tracker
        .config()
        .public_url
        .trim_end_matches('/')
        .to_string();
    let links = store
        .list_links(Some(&client.id))
        .await?
        .into_iter()
        .map(|l| {
            let s = stats.get(&l.id).cloned().unwrap_or_default();
            LinkRow {
                share_url: format!("{base}/r/{}", l.slug),
                promo_codes: l.promo_codes.join(", "),
                rate: rate(s.conversions, s.unique_clicks),
                revenue: s
                    .revenue
                    .iter()
                    .map(|r| money(r.revenue, &r.currency))
                    .collect(),
                clicks: s.clicks,
                unique_clicks: s.unique_clicks,
                bot_clicks: s.bot_clicks,
                conversions: s.conversions,
                slug: l.slug,
                label: l.label,
                destination: l.destination,
            }
        })
        .collect();
    let daily = store
        .daily_counts(Some(&client.id), now - CHART_DAYS * DAY_MS)
        .await?;
    let today = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .date_naive();
    let (clicks_chart, conversions_chart) = chart::daily(&daily, today, CHART_DAYS);
    let recent = store
        .list_conversions(&ConversionFilter {
            client_id: Some(client.id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await?;
    let conversions = conversion_rows(tracker, recent, now).await?;
    Ok(render(&ClientPage {
        layout: Layout::new(admin.csrf(), "clients", flash.text()),
        client: summary,
        checklist,
        stripe_account: client.stripe_account,
        has_api_key: client.stripe_api_key.is_some(),
        settings: client.settings,
        secrets,
        links,
        live,
        clicks_chart,
        conversions_chart,
        conversions,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    window_primary_days: String,
    window_fallback_days: String,
    /// A checkbox: present when ticked.
    any_time_fallback: Option<String>,
}

fn days(field: &str, raw: &str) -> Result<i64, PageError> {
    raw.trim()
        .parse()
        .map_err(|_| PageError::BadRequest(format!("{field} must be a whole number of days")))
}

pub async fn update_settings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<SettingsForm>,
) -> PageResult {
    let f = form.data;
    let settings = AttributionSettings {
        window_primary_days: days("the primary window", &f.window_primary_days)?,
        window_fallback_days: days("the fallback window", &f.window_fallback_days)?,
        any_time_fallback: f.any_time_fallback.is_some(),
    };
    let client = state.tracker.update_settings(&id, settings).await?;
    Ok(see_other(&format!(
        "/admin/clients/{}?done=settings",
        client.id
    )))
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    slug: String,
    destination: String,
    label: Option<String>,
    /// Comma- or space-separated.
    promo_codes: Option<String>,
}

pub async fn create_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<LinkForm>,
) -> PageResult {
    let f = form.data;
    let promo_codes = f
        .promo_codes
        .unwrap_or_default()
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let link = state
        .tracker
        .add_link(LinkIn {
            client: id,
            slug: f.slug,
            destination: f.destination,
            label: optional(f.label),
            promo_codes,
        })
        .await?;
    Ok(see_other(&format!(
        "/admin/clients/{}?done=link",
        link.client_id
    )))
}

#[derive(Debug, Deserialize)]
pub struct SecretForm {
    secret: String,
}

pub async fn create_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<SecretForm>,
) -> PageResult {
    let client = state.tracker.add_secret(&id, &form.data.secret).await?;
    Ok(see_other(&format!(
        "/admin/clients/{}?done=secret",
        client.id
    )))
}
