//! What the JSON API takes (`…In`) and answers (`…Out`), with their OpenAPI
//! schemas. The domain's types stay free of `utoipa`: these mirror them, and
//! enums travel as their snake_case names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::autofix::AutofixReport;
use crate::domain::diagnose::{EventSummary, LinkDiagnosis, SaleDiagnosis};
use crate::domain::model::*;
use crate::domain::money::format_minor;
use crate::domain::status::TrackingStatus;
use crate::domain::view::{self, rfc3339};

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorOut {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthorized`, `invalid_request`,
    /// `not_found`, `conflict`, `unsupported_media_type`, `store_unavailable`, `internal`.
    #[schema(example = "invalid_request")]
    pub code: String,
    /// For people.
    pub message: String,
}

// ---- clients ------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIn {
    #[schema(example = "Acme Shop")]
    pub name: String,
    #[schema(example = "acme.com")]
    pub domain: Option<String>,
    #[schema(example = "acct_1Nv0FGQ9RKHgCVdK")]
    pub stripe_account: Option<String>,
    /// The endpoint's signing secret (`whsec_…`); more can be added later.
    pub webhook_secret: Option<String>,
    /// A restricted Stripe key for reconciliation; never shown again.
    pub stripe_api_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsOut {
    pub window_primary_days: i64,
    pub window_fallback_days: i64,
    pub any_time_fallback: bool,
}

/// The Sales Tracking Status of a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOut {
    /// `working`, `issues` or `not_working`.
    #[schema(example = "working")]
    pub level: String,
    #[schema(example = "✅")]
    pub icon: String,
    #[schema(example = "Working")]
    pub label: String,
    /// Why, in words; empty when working.
    pub reasons: Vec<String>,
    pub notes: Vec<String>,
}

impl From<&TrackingStatus> for StatusOut {
    fn from(s: &TrackingStatus) -> Self {
        let level = serde_json::to_value(s.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Self {
            level,
            icon: s.level.icon().into(),
            label: s.level.label().into(),
            reasons: s.reasons.clone(),
            notes: s.notes.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientOut {
    #[schema(example = "cli_01J9Z3")]
    pub id: String,
    pub name: String,
    pub domain: Option<String>,
    pub stripe_account: Option<String>,
    /// The URL to paste into Stripe's webhook settings.
    pub webhook_url: String,
    /// Active signing secrets, masked to their last four characters.
    #[schema(example = json!(["…a1b2"]))]
    pub secrets: Vec<String>,
    pub has_stripe_api_key: bool,
    pub settings: SettingsOut,
    /// Absent right after creation (the client has no activity yet).
    pub status: Option<StatusOut>,
    pub created_at: String,
}

impl ClientOut {
    pub fn new(
        client: &Client,
        webhook_url: String,
        secrets: &[WebhookSecret],
        status: Option<&TrackingStatus>,
    ) -> Self {
        Self {
            id: client.id.clone(),
            name: client.name.clone(),
            domain: client.domain.clone(),
            stripe_account: client.stripe_account.clone(),
            webhook_url,
            secrets: secrets.iter().map(WebhookSecret::masked).collect(),
            has_stripe_api_key: client.stripe_api_key.is_some(),
            settings: SettingsOut {
                window_primary_days: client.settings.window_primary_days,
                window_fallback_days: client.settings.window_fallback_days,
                any_time_fallback: client.settings.any_time_fallback,
            },
            status: status.map(StatusOut::from),
            created_at: rfc3339(client.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub data: Vec<ClientOut>,
}

/// A client as other records name it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientRefOut {
    pub id: String,
    pub name: String,
}

// ---- links --------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIn {
    /// The client's id or name.
    pub client: String,
    #[schema(example = "spring-sale")]
    pub slug: String,
    #[schema(example = "https://acme.com/pricing")]
    pub destination: String,
    pub label: Option<String>,
    /// Stripe promotion codes (or their ids) that credit this link.
    #[serde(default)]
    pub promo_codes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkOut {
    #[schema(example = "lnk_01J9Z3")]
    pub id: String,
    pub client_id: String,
    pub slug: String,
    pub destination: String,
    pub label: Option<String>,
    pub promo_codes: Vec<String>,
    /// The tracked URL to share.
    #[schema(example = "https://track.example.com/r/spring-sale")]
    pub url: String,
    pub created_at: String,
}

impl LinkOut {
    pub fn new(link: &Link, public_url: &str) -> Self {
        Self {
            url: format!("{}/r/{}", public_url.trim_end_matches('/'), link.slug),
            id: link.id.clone(),
            client_id: link.client_id.clone(),
            slug: link.slug.clone(),
            destination: link.destination.clone(),
            label: link.label.clone(),
            promo_codes: link.promo_codes.clone(),
            created_at: rfc3339(link.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub data: Vec<LinkOut>,
}

// ---- conversions ----------------------------------------------------------

/// A conversion with the fields of `salestrack conversions list --json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversionOut {
    pub id: String,
    pub client_id: String,
    pub link_id: Option<String>,
    /// `null` for an orphan.
    pub link_slug: Option<String>,
    pub click_id: Option<String>,
    /// Minor units of `currency`.
    #[schema(example = 4900)]
    pub amount: i64,
    /// After refunds and lost disputes, minor units.
    pub net_amount: i64,
    #[schema(example = "usd")]
    pub currency: String,
    #[schema(example = "$49.00")]
    pub amount_display: String,
    /// `paid`, `partially_refunded`, `refunded`, `disputed`, `dispute_won`, `dispute_lost`.
    pub status: String,
    /// `new`, `renewal` or `trial_start`.
    pub kind: String,
    /// The attribution method; `null` for an orphan.
    pub method: Option<String>,
    /// How the client was found: `webhook_secret`, `stripe_account`,
    /// `email_domain`, `first_client_with_secret`, `first_client` or `api`.
    pub client_method: String,
    /// Unverified conversions are never counted in totals.
    pub verified: bool,
    pub livemode: bool,
    pub purchase_key: String,
    pub customer: Option<String>,
    pub purchased_at: String,
}

impl From<view::ConversionOut> for ConversionOut {
    fn from(c: view::ConversionOut) -> Self {
        Self {
            id: c.id,
            client_id: c.client_id,
            link_id: c.link_id,
            link_slug: c.link_slug,
            click_id: c.click_id,
            amount: c.amount,
            net_amount: c.net_amount,
            currency: c.currency,
            amount_display: c.amount_display,
            status: c.status.as_str().into(),
            kind: c.kind.as_str().into(),
            method: c.method.map(|m| m.as_str().into()),
            client_method: c.client_method.as_str().into(),
            verified: c.verified,
            livemode: c.livemode,
            purchase_key: c.purchase_key,
            customer: c.customer,
            purchased_at: c.purchased_at,
        }
    }
}

impl ConversionOut {
    /// From the stored record and its link's slug (if it has a link).
    pub fn of(c: &Conversion, link_slug: Option<String>) -> Self {
        Self {
            id: c.id.clone(),
            client_id: c.client_id.clone(),
            link_id: c.link_id.clone(),
            link_slug: c.link_id.as_ref().and(link_slug),
            click_id: c.click_id.clone(),
            amount: c.amount,
            net_amount: c.net_amount,
            currency: c.currency.clone(),
            amount_display: format_minor(c.amount, &c.currency),
            status: c.status.as_str().into(),
            kind: c.kind.as_str().into(),
            method: c.method.map(|m| m.as_str().into()),
            client_method: c.client_method.as_str().into(),
            verified: c.verified,
            livemode: c.livemode,
            purchase_key: c.purchase_key.clone(),
            customer: c.customer.clone(),
            purchased_at: rfc3339(c.purchased_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversionList {
    pub data: Vec<ConversionOut>,
}

/// One step of the attribution trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceStepOut {
    #[schema(example = "link_slug")]
    pub step: String,
    /// `matched`, `no_match` or `skipped`.
    pub outcome: String,
    pub detail: String,
}

impl From<&TraceStep> for TraceStepOut {
    fn from(s: &TraceStep) -> Self {
        Self {
            step: s.step.clone(),
            outcome: match s.outcome {
                StepOutcome::Matched => "matched",
                StepOutcome::NoMatch => "no_match",
                StepOutcome::Skipped => "skipped",
            }
            .into(),
            detail: s.detail.clone(),
        }
    }
}

/// One change of a conversion's attribution.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryOut {
    pub id: i64,
    pub at: String,
    /// `ingest`, `autofix`, `sweep`, `admin`, …
    pub actor: String,
    pub from_link_id: Option<String>,
    pub to_link_id: Option<String>,
    pub from_method: Option<String>,
    pub to_method: Option<String>,
    pub reason: String,
}

impl From<&HistoryEntry> for HistoryOut {
    fn from(h: &HistoryEntry) -> Self {
        Self {
            id: h.id,
            at: rfc3339(h.at),
            actor: h.actor.clone(),
            from_link_id: h.from_link_id.clone(),
            to_link_id: h.to_link_id.clone(),
            from_method: h.from_method.map(|m| m.as_str().into()),
            to_method: h.to_method.map(|m| m.as_str().into()),
            reason: h.reason.clone(),
        }
    }
}

/// A conversion with everything that explains it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversionDetailOut {
    pub conversion: ConversionOut,
    pub link: Option<LinkOut>,
    /// The attribution trace: each fallback tried, in order.
    pub trace: Vec<TraceStepOut>,
    /// Every change of its link, oldest first.
    pub history: Vec<HistoryOut>,
    /// Stored webhook events that mention this purchase.
    pub events: Vec<EventSummaryOut>,
    pub next_steps: Vec<String>,
}

impl ConversionDetailOut {
    pub fn new(d: &SaleDiagnosis, public_url: &str) -> Self {
        Self {
            conversion: ConversionOut::of(&d.conversion, d.link.as_ref().map(|l| l.slug.clone())),
            link: d.link.as_ref().map(|l| LinkOut::new(l, public_url)),
            trace: d.conversion.trace.iter().map(TraceStepOut::from).collect(),
            history: d.history.iter().map(HistoryOut::from).collect(),
            events: d.events.iter().map(EventSummaryOut::from).collect(),
            next_steps: d.next_steps.clone(),
        }
    }
}

// ---- events -----------------------------------------------------------------

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A stored webhook event, in short.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummaryOut {
    pub id: i64,
    pub stripe_event_id: Option<String>,
    pub event_type: Option<String>,
    pub received_at: String,
    /// `verified` or `unverified`.
    pub verification: String,
    /// Why it did not verify: `no_header`, `malformed`, `no_secret`, `mismatch`, `stale`.
    pub verification_reason: Option<String>,
    /// `pending`, `processed`, `ignored`, `invalid`, `no_client` or `failed`.
    pub processing: String,
    pub processing_error: Option<String>,
}

impl From<&EventSummary> for EventSummaryOut {
    fn from(e: &EventSummary) -> Self {
        Self {
            id: e.id,
            stripe_event_id: e.stripe_event_id.clone(),
            event_type: e.event_type.clone(),
            received_at: rfc3339(e.received_at),
            verification: name_of(&e.verification),
            verification_reason: e.verification_reason.map(|r| r.as_str().into()),
            processing: e.processing.as_str().into(),
            processing_error: e.processing_error.clone(),
        }
    }
}

/// A stored webhook event: where it came from and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub id: i64,
    pub stripe_event_id: Option<String>,
    pub event_type: Option<String>,
    /// Connect: the connected account.
    pub account: Option<String>,
    pub livemode: Option<bool>,
    pub api_version: Option<String>,
    /// The path it was posted to.
    pub endpoint: String,
    /// `push` (a webhook) or `fetch` (reconciliation).
    pub source: String,
    pub received_at: String,
    /// `verified` or `unverified`.
    pub verification: String,
    pub verification_reason: Option<String>,
    pub client_id: Option<String>,
    /// How the client was found.
    pub client_method: Option<String>,
    pub processing: String,
    pub processing_error: Option<String>,
    pub attempts: i64,
    pub deliveries: i64,
}

impl From<&StoredEvent> for EventOut {
    fn from(e: &StoredEvent) -> Self {
        Self {
            id: e.id,
            stripe_event_id: e.stripe_event_id.clone(),
            event_type: e.event_type.clone(),
            account: e.account.clone(),
            livemode: e.livemode,
            api_version: e.api_version.clone(),
            endpoint: e.endpoint.clone(),
            source: name_of(&e.source),
            received_at: rfc3339(e.received_at),
            verification: name_of(&e.verification),
            verification_reason: e.verification_reason.map(|r| r.as_str().into()),
            client_id: e.client_id.clone(),
            client_method: e.client_method.map(|m| m.as_str().into()),
            processing: e.processing.as_str().into(),
            processing_error: e.processing_error.clone(),
            attempts: e.attempts,
            deliveries: e.deliveries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventOut>,
}

/// One event with the headers kept and the raw payload.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetailOut {
    pub event: EventOut,
    /// The headers kept with the delivery (never cookies or credentials).
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    /// The payload: parsed JSON when it is JSON, else the text.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<&StoredEvent> for EventDetailOut {
    fn from(e: &StoredEvent) -> Self {
        Self {
            event: EventOut::from(e),
            headers: serde_json::from_str(&e.headers).unwrap_or(serde_json::Value::Null),
            payload: serde_json::from_slice(&e.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&e.body).into_owned())
            }),
        }
    }
}

// ---- operations -------------------------------------------------------------

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutofixIn {
    /// Only this client's orphans (id or name); all clients when absent.
    pub client: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrphanReasonOut {
    pub conversion_id: String,
    pub why: String,
}

/// What one Auto-Fix run did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutofixOut {
    pub fixed: usize,
    pub remaining: usize,
    /// For each orphan still without a link: why.
    pub still_orphan: Vec<OrphanReasonOut>,
}

impl From<AutofixReport> for AutofixOut {
    fn from(r: AutofixReport) -> Self {
        Self {
            fixed: r.fixed,
            remaining: r.remaining,
            still_orphan: r
                .still_orphan
                .into_iter()
                .map(|o| OrphanReasonOut {
                    conversion_id: o.conversion_id,
                    why: o.why,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClickOut {
    pub id: String,
    pub link_id: String,
    pub at: String,
    pub visitor_id: Option<String>,
    pub referrer: Option<String>,
    pub landing_url: Option<String>,
    pub user_agent: Option<String>,
    pub bot: bool,
}

impl From<&Click> for ClickOut {
    fn from(c: &Click) -> Self {
        Self {
            id: c.id.clone(),
            link_id: c.link_id.clone(),
            at: rfc3339(c.at),
            visitor_id: c.visitor_id.clone(),
            referrer: c.referrer.clone(),
            landing_url: c.landing_url.clone(),
            user_agent: c.user_agent.clone(),
            bot: c.bot,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyOrphanOut {
    pub conversion: ConversionOut,
    pub why_not_matched: String,
}

/// Everything about one link (one per client that has the slug).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkDiagnosisOut {
    pub link: LinkOut,
    pub client: ClientRefOut,
    pub webhook_url: String,
    pub recent_clicks: Vec<ClickOut>,
    pub bot_clicks: usize,
    pub conversions: Vec<ConversionOut>,
    /// The client's orphans, each with why it was not matched.
    pub orphans_nearby: Vec<NearbyOrphanOut>,
    /// Stored events whose payload mentions the slug.
    pub events_mentioning: Vec<EventSummaryOut>,
    pub next_steps: Vec<String>,
}

impl LinkDiagnosisOut {
    pub fn new(d: &LinkDiagnosis, public_url: &str) -> Self {
        Self {
            link: LinkOut::new(&d.link, public_url),
            client: ClientRefOut {
                id: d.client.id.clone(),
                name: d.client.name.clone(),
            },
            webhook_url: d.webhook_url.clone(),
            recent_clicks: d.recent_clicks.iter().map(ClickOut::from).collect(),
            bot_clicks: d.bot_clicks,
            conversions: d
                .conversions
                .iter()
                .map(|c| ConversionOut::of(c, Some(d.link.slug.clone())))
                .collect(),
            orphans_nearby: d
                .orphans_nearby
                .iter()
                .map(|o| NearbyOrphanOut {
                    conversion: ConversionOut::of(&o.conversion, None),
                    why_not_matched: o.why_not_matched.clone(),
                })
                .collect(),
            events_mentioning: d
                .events_mentioning
                .iter()
                .map(EventSummaryOut::from)
                .collect(),
            next_steps: d.next_steps.clone(),
        }
    }
}

/// A diagnosis: of every link with a slug, or of one sale.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnoseOut {
    /// Filled for `?link_slug=`.
    pub links: Vec<LinkDiagnosisOut>,
    /// Filled for `?conversion=`.
    pub sale: Option<ConversionDetailOut>,
}
