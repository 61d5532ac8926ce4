//! Missed webhooks (SPEC 2.10): for each client with a Stripe API key, page
//! through Stripe's events over a whole window and feed every event not
//! stored yet through the ingest pipeline, marked as fetched.
//!
//! The whole window is read every time, not just what follows the newest
//! stored event: a gap can sit between events that did arrive. Storing is
//! idempotent (events are unique on `account:event id`, as for webhooks), so
//! running twice, or alongside webhooks, counts nothing twice.

use serde::Serialize;

use crate::stripe::api::{ApiError, ApiKey, StripeApi};

use super::ingest::FetchOutcome;
use super::model::*;
use super::{DomainError, DomainResult, Tracker};

/// What reconciling one client did (`reconcile --json` prints one per client).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClientReconcile {
    pub client_id: String,
    pub client_name: String,
    /// Events Stripe listed in the window.
    pub fetched: usize,
    /// Events not stored before: now stored and processed.
    pub new: usize,
    /// Events already stored and verified (by webhook or an earlier run).
    pub already_stored: usize,
    /// Stored events whose signature had failed, now verified by the API.
    pub verified_now: usize,
    /// Pages Stripe answered.
    pub pages: u32,
    /// Why this client's run stopped early; what was not fetched is fetched
    /// on the next run.
    pub error: Option<String>,
    /// Stripe refused the client's key (HTTP 401 or 403).
    pub key_refused: bool,
}

impl Tracker {
    /// Reconciles `client` (an id or name), or every client that has a
    /// Stripe API key, over the events created at or after `created_gte`
    /// (Unix seconds). One client's failure does not stop the others: it is
    /// reported in its row.
    pub async fn reconcile(
        &self,
        api: &StripeApi,
        client: Option<&str>,
        created_gte: i64,
    ) -> DomainResult<Vec<ClientReconcile>> {
        let clients = match client {
            Some(wanted) => {
                let found = self.find_client(wanted).await?;
                if found.stripe_api_key.is_none() {
                    return Err(DomainError::invalid(format!(
                        "client {} has no Stripe API key (give one with `client add --stripe-api-key-file`)",
                        found.name
                    )));
                }
                vec![found]
            }
            None => self
                .store
                .list_clients()
                .await?
                .into_iter()
                .filter(|c| c.stripe_api_key.is_some())
                .collect(),
        };
        let mut reports = Vec::with_capacity(clients.len());
        for client in &clients {
            reports.push(self.reconcile_client(api, client, created_gte).await);
        }
        Ok(reports)
    }

    /// One client: fetch every page of the window, then store and process
    /// what is missing, oldest first (the order Stripe would have sent it).
    pub async fn reconcile_client(
        &self,
        api: &StripeApi,
        client: &Client,
        created_gte: i64,
    ) -> ClientReconcile {
        let mut report = ClientReconcile {
            client_id: client.id.clone(),
            client_name: client.name.clone(),
            ..Default::default()
        };
        let Some(key) = client.stripe_api_key.as_deref().map(ApiKey::new) else {
            report.error = Some(format!("client {} has no Stripe API key", client.name));
            return report;
        };
        tracing::info!(client = %client.id, key = %key.masked(), created_gte, "reconciling");
        let fetch = api.list_events(&key, created_gte).await;
        report.fetched = fetch.events.len();
        report.pages = fetch.pages;
        for event in fetch.events.into_iter().rev() {
            match self.ingest_fetched(client, event.raw).await {
                Ok(FetchOutcome::New { .. }) => report.new += 1,
                Ok(FetchOutcome::AlreadyStored { .. }) => report.already_stored += 1,
                Ok(FetchOutcome::VerifiedNow { .. }) => report.verified_now += 1,
                Err(e) => {
                    // The store cannot commit: stop; the next run retries.
                    report.error = Some(format!("client {}: {e}", client.name));
                    break;
                }
            }
        }
        if let Some(e) = fetch.error {
            report.key_refused = matches!(e, ApiError::Refused { .. });
            let message = match e {
                ApiError::Refused { status } => format!(
                    "Stripe refused the API key of client {} (HTTP {status}): the key is wrong, \
                     revoked, or cannot read events",
                    client.name
                ),
                other => format!(
                    "client {}: {other} (what was not fetched is fetched on the next run)",
                    client.name
                ),
            };
            report.error.get_or_insert(message);
        }
        match &report.error {
            None => tracing::info!(
                client = %client.id,
                fetched = report.fetched,
                new = report.new,
                already_stored = report.already_stored,
                verified_now = report.verified_now,
                "reconciled"
            ),
            Some(error) => tracing::warn!(
                client = %client.id,
                fetched = report.fetched,
                new = report.new,
                %error,
                "reconciliation stopped early"
            ),
        }
        report
    }
}
