//! Read models shared by the CLI's `--json` output and the JSON API.

use std::collections::HashMap;

use serde::Serialize;

use super::model::*;
use super::money::format_minor;
use super::{DomainResult, Tracker};

/// A conversion as `conversions list --json` and `GET /api/v1/conversions`
/// print it (SPEC 4.1).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversionOut {
    pub id: String,
    pub client_id: String,
    pub link_id: Option<String>,
    /// `None` for an orphan.
    pub link_slug: Option<String>,
    pub click_id: Option<String>,
    pub amount: i64,
    pub net_amount: i64,
    pub currency: String,
    /// The amount in the currency's own decimals, for people.
    pub amount_display: String,
    pub status: ConversionStatus,
    pub kind: ConversionKind,
    pub method: Option<Method>,
    pub client_method: ClientMethod,
    pub verified: bool,
    pub livemode: bool,
    pub purchase_key: String,
    pub customer: Option<String>,
    pub purchased_at: String,
}

pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl Tracker {
    /// Conversions with their link slugs.
    pub async fn conversions_out(
        &self,
        filter: &ConversionFilter,
    ) -> DomainResult<Vec<ConversionOut>> {
        let conversions = self.store.list_conversions(filter).await?;
        let slugs: HashMap<String, String> = self
            .store
            .list_links(filter.client_id.as_deref())
            .await?
            .into_iter()
            .map(|l| (l.id, l.slug))
            .collect();
        Ok(conversions
            .into_iter()
            .map(|c| ConversionOut {
                link_slug: c.link_id.as_ref().and_then(|l| slugs.get(l).cloned()),
                amount_display: format_minor(c.amount, &c.currency),
                purchased_at: rfc3339(c.purchased_at),
                id: c.id,
                client_id: c.client_id,
                link_id: c.link_id,
                click_id: c.click_id,
                amount: c.amount,
                net_amount: c.net_amount,
                currency: c.currency,
                status: c.status,
                kind: c.kind,
                method: c.method,
                client_method: c.client_method,
                verified: c.verified,
                livemode: c.livemode,
                purchase_key: c.purchase_key,
                customer: c.customer,
            })
            .collect())
    }
}
