//! The domain: the rules of attribution and the ingest pipeline.
//! Uses the `Store` trait only; no HTTP and no SQL types here.

pub mod attribution;
pub mod auth;
pub mod autofix;
pub mod bot;
pub mod click;
pub mod client;
pub mod conversion;
pub mod diagnose;
pub mod export;
pub mod flood;
pub mod ids;
pub mod ingest;
pub mod model;
pub mod money;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod text;
pub mod unverified_budget;
pub mod view;

use tokio::sync::Mutex;

use crate::storage::{DynStore, StoreError};

/// Errors of domain operations. Storage failures keep their kind.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

/// Settings of the domain that come from configuration.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Public base URL of this service, used in webhook URLs shown to users.
    pub public_url: String,
    /// Signature tolerance in seconds (Stripe's default: 300).
    pub signature_tolerance_s: i64,
    /// How many times the sweep retries a failed event.
    pub max_attempts: i64,
    /// Reverse proxies whose forwarding headers name the client (read by
    /// the HTTP edge, `http::client_addr`; empty: the TCP peer is the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How much of strangers' unverified bodies is stored whole
    /// (`unverified_budget.rs`).
    pub unverified_budget: unverified_budget::BudgetConfig,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            signature_tolerance_s: crate::stripe::signature::DEFAULT_TOLERANCE_S,
            max_attempts: 10,
            trusted_proxies: Vec::new(),
            unverified_budget: unverified_budget::BudgetConfig::default(),
        }
    }
}

/// The domain service: every use case of salestrack, over one store.
pub struct Tracker {
    pub(crate) store: DynStore,
    pub(crate) config: DomainConfig,
    /// Serialises the read-derive-write of purchases within this process,
    /// so that concurrent events of one sale cannot both create it.
    pub(crate) purchase_lock: Mutex<()>,
    /// Deliveries waiting to be processed together (`ingest.rs`).
    pub(crate) batch: ingest::Batch,
    pub(crate) ip_salt: String,
    /// Clicks per visitor address; a flood's clicks are flagged (`flood.rs`).
    pub(crate) click_flood: flood::ClickFlood,
    /// Bytes of unverified bodies each webhook URL may store whole.
    pub(crate) unverified_budget: unverified_budget::UnverifiedBudget,
    /// False only in the benchmark's baseline server (`src/bin/bench`):
    /// redirects are answered without storing the click.
    pub(crate) click_writes: bool,
}

impl Tracker {
    /// Builds the service; reads (or creates) the salt used to hash IPs.
    pub async fn new(store: DynStore, config: DomainConfig) -> DomainResult<Self> {
        let salt = store.init_setting("ip_salt", &ids::new_id("salt")).await?;
        Ok(Self {
            store,
            unverified_budget: unverified_budget::UnverifiedBudget::new(config.unverified_budget),
            config,
            purchase_lock: Mutex::new(()),
            batch: ingest::Batch::default(),
            ip_salt: salt,
            click_flood: flood::ClickFlood::default(),
            click_writes: true,
        })
    }

    /// For the benchmark's baseline only: answer redirects without storing
    /// the click, so that the cost of the durable write can be measured.
    #[doc(hidden)]
    pub fn skip_click_writes_for_benchmark(&mut self) {
        self.click_writes = false;
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn config(&self) -> &DomainConfig {
        &self.config
    }

    /// The per-client webhook URL to paste into Stripe.
    pub fn webhook_url(&self, client_id: &str) -> String {
        format!(
            "{}/webhooks/stripe/{client_id}",
            self.config.public_url.trim_end_matches('/')
        )
    }
}
