//! The records salestrack keeps: clients, links, clicks, webhook events,
//! sale facts and conversions. Plain data, no storage or HTTP types.

use serde::{Deserialize, Serialize};

use crate::stripe::event::{DisputeFacts, PaymentFacts, RefundFacts};

/// Milliseconds since the Unix epoch. All stored times use it.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub domain: Option<String>,
    pub stripe_account: Option<String>,
    /// Restricted Stripe API key for reconciliation; never printed in full.
    #[serde(skip_serializing)]
    pub stripe_api_key: Option<String>,
    pub settings: AttributionSettings,
    pub created_at: Millis,
}

/// The API key is a secret: `Debug` shows only its last four characters.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("stripe_account", &self.stripe_account)
            .field(
                "stripe_api_key",
                &self.stripe_api_key.as_deref().map(mask_secret),
            )
            .field("settings", &self.settings)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl std::fmt::Debug for NewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewClient")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("stripe_account", &self.stripe_account)
            .field(
                "stripe_api_key",
                &self.stripe_api_key.as_deref().map(mask_secret),
            )
            .field("settings", &self.settings)
            .finish()
    }
}

/// Per-client knobs of layer 2.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttributionSettings {
    pub window_primary_days: i64,
    pub window_fallback_days: i64,
    pub any_time_fallback: bool,
}

impl Default for AttributionSettings {
    fn default() -> Self {
        Self {
            window_primary_days: 60,
            window_fallback_days: 90,
            any_time_fallback: true,
        }
    }
}

#[derive(Clone)]
pub struct NewClient {
    pub name: String,
    pub domain: Option<String>,
    pub stripe_account: Option<String>,
    pub stripe_api_key: Option<String>,
    pub settings: AttributionSettings,
}

/// A webhook signing secret of a client (`whsec_…`). Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The last four characters, the only part ever shown.
    pub fn masked(&self) -> String {
        mask_secret(&self.0)
    }
}

pub fn mask_secret(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret({})", self.masked())
    }
}

#[derive(Debug, Clone)]
pub struct ClientSecrets {
    pub client: Client,
    pub secrets: Vec<WebhookSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Link {
    pub id: String,
    pub client_id: String,
    pub slug: String,
    pub destination: String,
    pub label: Option<String>,
    pub promo_codes: Vec<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewLink {
    pub client_id: String,
    pub slug: String,
    pub destination: String,
    pub label: Option<String>,
    pub promo_codes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Click {
    pub id: String,
    pub link_id: String,
    pub client_id: String,
    pub at: Millis,
    pub visitor_id: Option<String>,
    pub referrer: Option<String>,
    pub landing_url: Option<String>,
    pub user_agent: Option<String>,
    pub ip_hash: Option<String>,
    pub bot: bool,
}

/// Where a webhook event came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// Delivered by Stripe to a webhook endpoint.
    Push,
    /// Fetched from Stripe's API by reconciliation.
    Fetch,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    Verified,
    Unverified,
}

/// Why a signature did not verify (SPEC 2.4).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnverifiedReason {
    NoHeader,
    Malformed,
    NoSecret,
    Mismatch,
    Stale,
}

impl UnverifiedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoHeader => "no_header",
            Self::Malformed => "malformed",
            Self::NoSecret => "no_secret",
            Self::Mismatch => "mismatch",
            Self::Stale => "stale",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no_header" => Self::NoHeader,
            "malformed" => Self::Malformed,
            "no_secret" => Self::NoSecret,
            "mismatch" => Self::Mismatch,
            "stale" => Self::Stale,
            _ => return None,
        })
    }
}

/// How layer 1 found the client (SPEC 2.5).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientMethod {
    WebhookSecret,
    StripeAccount,
    EmailDomain,
    FirstClientWithSecret,
    FirstClient,
    /// Fetched from Stripe's API with the client's own key.
    Api,
}

impl ClientMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebhookSecret => "webhook_secret",
            Self::StripeAccount => "stripe_account",
            Self::EmailDomain => "email_domain",
            Self::FirstClientWithSecret => "first_client_with_secret",
            Self::FirstClient => "first_client",
            Self::Api => "api",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "webhook_secret" => Self::WebhookSecret,
            "stripe_account" => Self::StripeAccount,
            "email_domain" => Self::EmailDomain,
            "first_client_with_secret" => Self::FirstClientWithSecret,
            "first_client" => Self::FirstClient,
            "api" => Self::Api,
            _ => return None,
        })
    }
}

/// What processing made of a stored event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Processing {
    Pending,
    Processed,
    /// An event type salestrack does not act on: kept, not used.
    Ignored,
    /// Not a Stripe event (no JSON object with `id` and `type`).
    Invalid,
    /// No client exists yet; processed once one does.
    NoClient,
    /// Processing failed; the sweep retries it.
    Failed,
}

impl Processing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Invalid => "invalid",
            Self::NoClient => "no_client",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "processed" => Self::Processed,
            "ignored" => Self::Ignored,
            "invalid" => Self::Invalid,
            "no_client" => Self::NoClient,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A webhook delivery as it is first committed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `account:event id`; `None` for a body that is not a Stripe event.
    pub dedup_key: Option<String>,
    pub stripe_event_id: Option<String>,
    pub event_type: Option<String>,
    pub account: Option<String>,
    pub livemode: Option<bool>,
    pub api_version: Option<String>,
    pub endpoint: String,
    pub endpoint_client_id: Option<String>,
    pub source: EventSource,
    pub received_at: Millis,
    /// Header names and values as JSON object text (secrets never included).
    pub headers: String,
    pub body: Vec<u8>,
    pub verification: Verification,
    pub verification_reason: Option<UnverifiedReason>,
    /// The client whose secret verified the event (layer 1, method 1).
    pub client_id: Option<String>,
    pub client_method: Option<ClientMethod>,
    pub processing: Processing,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub dedup_key: Option<String>,
    pub stripe_event_id: Option<String>,
    pub event_type: Option<String>,
    pub account: Option<String>,
    pub livemode: Option<bool>,
    pub api_version: Option<String>,
    pub endpoint: String,
    pub endpoint_client_id: Option<String>,
    pub source: EventSource,
    pub received_at: Millis,
    pub headers: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub verification: Verification,
    pub verification_reason: Option<UnverifiedReason>,
    pub client_id: Option<String>,
    pub client_method: Option<ClientMethod>,
    pub processing: Processing,
    pub processing_error: Option<String>,
    pub attempts: i64,
    pub deliveries: i64,
}

/// Outcome of committing a delivery.
#[derive(Debug, Clone)]
pub enum InsertEvent {
    Inserted(i64),
    /// The same Stripe event (same account and id) is already stored.
    Duplicate(Box<StoredEvent>),
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub processing: Option<Processing>,
    pub verification: Option<Verification>,
    pub client_id: Option<String>,
    /// Substring of the raw body (for diagnosis).
    pub body_contains: Option<String>,
    /// Only events stored before this one (a smaller id): the next, older,
    /// page of a list that is newest first.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// What one stored event says about a purchase, kept so that a conversion can
/// be derived again from all its facts whatever their arrival order.
// Facts are handled one purchase at a time, never in large arrays: boxing the
// payment variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FactBody {
    Payment(PaymentFacts),
    Refund(RefundFacts),
    Dispute(DisputeFacts),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaleFact {
    pub event_id: i64,
    pub client_id: String,
    pub purchase_key: String,
    pub verified: bool,
    pub livemode: bool,
    pub client_method: ClientMethod,
    pub body: FactBody,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConversionKind {
    New,
    Renewal,
    TrialStart,
}

impl ConversionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Renewal => "renewal",
            Self::TrialStart => "trial_start",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Self::New,
            "renewal" => Self::Renewal,
            "trial_start" => Self::TrialStart,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConversionStatus {
    Paid,
    PartiallyRefunded,
    Refunded,
    Disputed,
    DisputeWon,
    DisputeLost,
}

impl ConversionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
            Self::DisputeWon => "dispute_won",
            Self::DisputeLost => "dispute_lost",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "paid" => Self::Paid,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            "disputed" => Self::Disputed,
            "dispute_won" => Self::DisputeWon,
            "dispute_lost" => Self::DisputeLost,
            _ => return None,
        })
    }
}

/// Which fallback set a conversion's link (SPEC 1, 2.7).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Manual,
    ClickId,
    LinkSlug,
    PromotionCode,
    CustomerHistory,
    ClickWindowPrimary,
    ClickWindowFallback,
    ClickAnyTime,
    Autofix,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::ClickId => "click_id",
            Self::LinkSlug => "link_slug",
            Self::PromotionCode => "promotion_code",
            Self::CustomerHistory => "customer_history",
            Self::ClickWindowPrimary => "click_window_primary",
            Self::ClickWindowFallback => "click_window_fallback",
            Self::ClickAnyTime => "click_any_time",
            Self::Autofix => "autofix",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manual" => Self::Manual,
            "click_id" => Self::ClickId,
            "link_slug" => Self::LinkSlug,
            "promotion_code" => Self::PromotionCode,
            "customer_history" => Self::CustomerHistory,
            "click_window_primary" => Self::ClickWindowPrimary,
            "click_window_fallback" => Self::ClickWindowFallback,
            "click_any_time" => Self::ClickAnyTime,
            "autofix" => Self::Autofix,
            _ => return None,
        })
    }
    /// Strength of the evidence: a smaller rank is stronger. A manual choice
    /// outranks everything and is never replaced automatically.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

/// One step of the attribution trace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceStep {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Matched,
    NoMatch,
    Skipped,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::NoMatch => "no_match",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversion {
    pub id: String,
    pub client_id: String,
    pub purchase_key: String,
    pub link_id: Option<String>,
    pub click_id: Option<String>,
    pub customer: Option<String>,
    pub email: Option<String>,
    pub subscription: Option<String>,
    /// Minor units of `currency`.
    pub amount: i64,
    /// Lowercase ISO code, as Stripe writes it.
    pub currency: String,
    pub net_amount: i64,
    pub purchased_at: Millis,
    pub kind: ConversionKind,
    pub livemode: bool,
    pub verified: bool,
    pub status: ConversionStatus,
    pub method: Option<Method>,
    pub client_method: ClientMethod,
    pub trace: Vec<TraceStep>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Conversion {
    pub fn is_orphan(&self) -> bool {
        self.link_id.is_none()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ConversionFilter {
    pub client_id: Option<String>,
    pub link_id: Option<String>,
    pub orphans_only: bool,
    pub unverified_only: bool,
    pub customer: Option<String>,
    pub email: Option<String>,
    /// Stripe subscription id.
    pub subscription: Option<String>,
    pub purchase_key: Option<String>,
    pub status: Option<ConversionStatus>,
    pub kind: Option<ConversionKind>,
    pub livemode: Option<bool>,
    /// Purchased at or after (inclusive).
    pub from: Option<Millis>,
    /// Purchased before (exclusive).
    pub to: Option<Millis>,
    /// Only those listed after this one, `(purchased_at, id)`, in the
    /// newest-first order of lists: the next page, exact even when many
    /// sales share a purchase time.
    pub after: Option<(Millis, String)>,
    pub limit: i64,
}

/// One change of a conversion's attribution (SPEC 2.8 layer 5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub id: i64,
    pub conversion_id: String,
    pub at: Millis,
    pub actor: String,
    pub from_link_id: Option<String>,
    pub to_link_id: Option<String>,
    pub from_method: Option<Method>,
    pub to_method: Option<Method>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct NewHistoryEntry {
    pub conversion_id: String,
    pub actor: String,
    pub from_link_id: Option<String>,
    pub to_link_id: Option<String>,
    pub from_method: Option<Method>,
    pub to_method: Option<Method>,
    pub reason: String,
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_full_secret() {
        let client = Client {
            id: "cli_1".into(),
            name: "Shop".into(),
            domain: None,
            stripe_account: None,
            stripe_api_key: Some("rk_live_supersecretvalue1234".into()),
            settings: AttributionSettings::default(),
            created_at: 0,
        };
        let shown = format!("{client:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("1234"));
        let secret = WebhookSecret::new("whsec_abcdefghijkl9876");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(…9876)");
    }
}
