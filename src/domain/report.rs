//! Aggregates the store computes for the dashboard and the status rules.

use serde::Serialize;

use super::model::Millis;

/// Activity of one client, for its Sales Tracking Status.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClientActivity {
    pub client_id: String,
    pub secrets: i64,
    /// Last webhook delivered by Stripe (events fetched by reconciliation do
    /// not count: they would hide a broken endpoint).
    pub last_event_at: Option<Millis>,
    pub last_verified_event_at: Option<Millis>,
    pub events_24h: i64,
    pub events_7d: i64,
    /// Verified conversions (all modes).
    pub conversions_24h: i64,
    pub conversions_7d: i64,
    /// Live orphans that are verified.
    pub orphans: i64,
    /// Events that failed signature verification and are still unverified.
    pub unverified_events: i64,
    pub first_unverified_at: Option<Millis>,
    /// Events whose processing failed.
    pub failed_events: i64,
    pub live_events: i64,
    pub test_events: i64,
    pub clicks_7d: i64,
}

/// Revenue in one currency (verified conversions only; trials excluded).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CurrencyTotal {
    pub currency: String,
    pub conversions: i64,
    pub revenue: i64,
    pub net: i64,
}

/// Clicks and conversions of one UTC day (`YYYY-MM-DD`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DailyCount {
    pub day: String,
    pub clicks: i64,
    pub conversions: i64,
}

/// Figures of one link (verified conversions; revenue per currency).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LinkStats {
    pub link_id: String,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub bot_clicks: i64,
    pub conversions: i64,
    pub revenue: Vec<CurrencyTotal>,
}

/// An admin session (the cookie holds the id; the store keeps its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub id_hash: String,
    pub csrf_token: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}
