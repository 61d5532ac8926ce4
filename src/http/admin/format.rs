//! How the admin pages write values for people: money in the currency's own
//! format, times relative to now with the exact time on hover, and the
//! snake_case names of the model in words.

use chrono::{DateTime, Utc};

use crate::domain::model::*;
use crate::domain::money;
use crate::domain::status::{StatusLevel, TrackingStatus};

/// `¥4,900`, `€25.00`, `$49.00`, `KWD 1.234`.
pub fn money(amount: i64, currency: &str) -> String {
    money::display(amount, currency)
}

/// A moment, shown relative to now; `exact` goes in the tooltip and `iso`
/// in `<time datetime>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    pub rel: String,
    pub exact: String,
    pub iso: String,
}

pub fn when(ms: Millis, now: Millis) -> When {
    let t: DateTime<Utc> = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    When {
        rel: relative(ms, now),
        exact: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

pub fn when_opt(ms: Option<Millis>, now: Millis) -> Option<When> {
    ms.map(|ms| when(ms, now))
}

/// `just now`, `5 min ago`, `3 h ago`, `12 days ago`, `3 months ago`,
/// `in 2 h` (for times ahead of the clock).
pub fn relative(ms: Millis, now: Millis) -> String {
    let delta = (now - ms) / 1000;
    let ahead = delta < 0;
    let s = delta.abs();
    let text = match s {
        0..=44 => return "just now".into(),
        45..=5399 => format!("{} min", ((s + 30) / 60).max(1)),
        5400..=129_599 => format!("{} h", (s + 1800) / 3600),
        129_600..=3_023_999 => format!("{} days", (s + 43_200) / 86_400),
        3_024_000..=47_303_999 => {
            let months = ((s + 1_314_000) / 2_628_000).max(1);
            format!("{months} month{}", if months == 1 { "" } else { "s" })
        }
        _ => {
            let years = (s + 15_768_000) / 31_536_000;
            format!("{years} year{}", if years == 1 { "" } else { "s" })
        }
    };
    if ahead {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A client's Sales Tracking Status as a page shows it.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub icon: &'static str,
    pub label: &'static str,
    /// CSS class: `ok`, `warn` or `bad`.
    pub class: &'static str,
    pub reasons: Vec<String>,
    pub notes: Vec<String>,
}

impl From<TrackingStatus> for StatusView {
    fn from(s: TrackingStatus) -> Self {
        Self {
            icon: s.level.icon(),
            label: s.level.label(),
            class: match s.level {
                StatusLevel::Working => "ok",
                StatusLevel::Issues => "warn",
                StatusLevel::NotWorking => "bad",
            },
            reasons: s.reasons,
            notes: s.notes,
        }
    }
}

/// Why a signature did not verify, in words.
pub fn unverified_reason(r: UnverifiedReason) -> &'static str {
    match r {
        UnverifiedReason::NoHeader => "the delivery has no Stripe-Signature header",
        UnverifiedReason::Malformed => "the Stripe-Signature header is malformed",
        UnverifiedReason::NoSecret => "no webhook secret is configured for the client it could belong to",
        UnverifiedReason::Mismatch => "the signature matches none of the active secrets (a wrong or rotated secret, or a forgery)",
        UnverifiedReason::Stale => "the signature's timestamp is outside the 5-minute tolerance (replayed or delayed)",
    }
}

/// How layer 1 found the client, in words.
pub fn client_method(m: ClientMethod) -> &'static str {
    match m {
        ClientMethod::WebhookSecret => "its signature verified with this client's secret",
        ClientMethod::StripeAccount => "its Stripe account id is this client's",
        ClientMethod::EmailDomain => "the customer's email domain is this client's domain",
        ClientMethod::FirstClientWithSecret => "fallback: the first client that has a secret",
        ClientMethod::FirstClient => "fallback: the first client",
        ClientMethod::Api => "fetched from Stripe's API with this client's key",
    }
}

pub fn processing(p: Processing) -> &'static str {
    match p {
        Processing::Pending => "waiting to be processed",
        Processing::Processed => "applied to its sale",
        Processing::Ignored => "ignored (a type salestrack does not act on)",
        Processing::Invalid => "invalid (not a Stripe event)",
        Processing::NoClient => "waiting for a client",
        Processing::Failed => "failed (the sweep retries it)",
    }
}

/// `partially_refunded` → `partially refunded`.
pub fn words(snake: &str) -> String {
    snake.replace('_', " ")
}

/// `12.5%`, or `—` with nothing to divide by.
pub fn rate(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "—".into();
    }
    let pct = part as f64 * 100.0 / whole as f64;
    if pct >= 10.0 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;
    const MIN: Millis = 60_000;

    #[test]
    fn money_is_written_in_the_currency_own_format() {
        assert_eq!(money(4900, "jpy"), "¥4,900");
        assert_eq!(money(2500, "eur"), "€25.00");
        assert_eq!(money(4900, "usd"), "$49.00");
        assert_eq!(money(1234, "kwd"), "KWD 1.234");
    }

    #[test]
    fn times_read_relative_to_now() {
        assert_eq!(relative(NOW - 10_000, NOW), "just now");
        assert_eq!(relative(NOW - 5 * MIN, NOW), "5 min ago");
        assert_eq!(relative(NOW - 180 * MIN, NOW), "3 h ago");
        assert_eq!(relative(NOW - 26 * 60 * MIN, NOW), "26 h ago");
        assert_eq!(relative(NOW - 40 * 60 * MIN, NOW), "2 days ago");
        assert_eq!(relative(NOW - 12 * 24 * 60 * MIN, NOW), "12 days ago");
        assert_eq!(relative(NOW - 90 * 24 * 60 * MIN, NOW), "3 months ago");
        assert_eq!(relative(NOW - 40 * 24 * 60 * MIN, NOW), "1 month ago");
        assert_eq!(relative(NOW - 400 * 24 * 60 * MIN, NOW), "13 months ago");
        assert_eq!(relative(NOW - 800 * 24 * 60 * MIN, NOW), "2 years ago");
        assert_eq!(relative(NOW + 120 * MIN, NOW), "in 2 h");
    }

    #[test]
    fn exact_times_are_utc() {
        let w = when(0, NOW);
        assert_eq!(w.exact, "1970-01-01 00:00:00 UTC");
        assert_eq!(w.iso, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rates_have_sensible_precision() {
        assert_eq!(rate(1, 0), "—");
        assert_eq!(rate(1, 3), "33%");
        assert_eq!(rate(1, 40), "2.5%");
    }
}
