//! The Sales Tracking Status of a client (SPEC 3): ✅ Working, ⚠️ Issues or
//! ❌ Not Working, and the reasons in words. All the rules live here.

use serde::Serialize;

use super::model::Millis;
use super::report::ClientActivity;
use super::view::rfc3339;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// A client with no event for this long is flagged.
pub const QUIET_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum StatusLevel {
    Working,
    Issues,
    NotWorking,
}

impl StatusLevel {
    pub fn icon(self) -> &'static str {
        match self {
            Self::Working => "✅",
            Self::Issues => "⚠️",
            Self::NotWorking => "❌",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Self::Working => "Working",
            Self::Issues => "Issues",
            Self::NotWorking => "Not Working",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrackingStatus {
    pub level: StatusLevel,
    /// Why, in words; empty when working.
    pub reasons: Vec<String>,
    /// Worth knowing but not a problem (for example: test mode only).
    pub notes: Vec<String>,
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn day_of(ms: Millis) -> String {
    rfc3339(ms).chars().take(10).collect()
}

/// Verified deliveries from the client still arrive: one came after the
/// first that failed verification, or within the last day. Then failures
/// are a stranger's (anybody may POST to a webhook URL) or an old secret's,
/// not a broken endpoint, and one anonymous request cannot turn the status
/// to ❌.
pub fn verified_deliveries_keep_arriving(a: &ClientActivity, now: Millis) -> bool {
    a.last_verified_event_at
        .is_some_and(|v| now - v <= DAY_MS || a.first_unverified_at.is_some_and(|u| v > u))
}

/// Whether the client's secret is shown to work: it has one, and deliveries
/// that fail verification are not all that arrives.
pub fn secret_works(a: &ClientActivity, now: Millis) -> bool {
    a.secrets > 0 && (a.unverified_events == 0 || verified_deliveries_keep_arriving(a, now))
}

/// The rules, in order of severity:
/// - ❌ no webhook secret configured; no event ever received; or every event
///   since the first failed signature has failed too and none verified in
///   the last day (the secret is wrong).
/// - ⚠️ orphans; rejected deliveries while verified ones keep arriving; events failed
///   processing; no event for 7 days.
/// - ✅ otherwise.
pub fn assess(a: &ClientActivity, now: Millis) -> TrackingStatus {
    let mut not_working = Vec::new();
    let mut issues = Vec::new();
    let mut notes = Vec::new();

    if a.secrets == 0 {
        not_working.push("no webhook secret configured".to_string());
    }
    match a.last_event_at {
        None => not_working.push("no webhook events received yet".to_string()),
        Some(last) if now - last > QUIET_DAYS * DAY_MS => {
            issues.push(format!(
                "no webhook events for {} days",
                (now - last) / DAY_MS
            ));
        }
        Some(_) => {}
    }
    if a.unverified_events > 0 {
        let since = a.first_unverified_at.map(day_of).unwrap_or_default();
        if a.secrets == 0 || verified_deliveries_keep_arriving(a, now) {
            // A stranger's junk, or a retry signed with a rotated secret:
            // worth a look, but sales are tracked.
            issues.push(format!(
                "{} (forged, or signed with an old secret) since {since}",
                plural(
                    a.unverified_events,
                    "rejected delivery",
                    "rejected deliveries"
                )
            ));
        } else {
            not_working.push(format!(
                "{} failed signature verification since {since}, and none verified since",
                plural(a.unverified_events, "event", "events")
            ));
        }
    }
    if a.orphans > 0 {
        issues.push(plural(a.orphans, "orphan", "orphans"));
    }
    if a.failed_events > 0 {
        issues.push(format!(
            "{} failed processing",
            plural(a.failed_events, "event", "events")
        ));
    }
    if a.live_events == 0 && a.test_events > 0 {
        notes.push("events arrive only in test mode".to_string());
    } else if a.test_events == 0 && a.live_events > 0 {
        notes.push("live mode".to_string());
    }

    let level = if !not_working.is_empty() {
        StatusLevel::NotWorking
    } else if !issues.is_empty() {
        StatusLevel::Issues
    } else {
        StatusLevel::Working
    };
    not_working.extend(issues);
    TrackingStatus {
        level,
        reasons: not_working,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000 * DAY_MS;

    fn healthy() -> ClientActivity {
        ClientActivity {
            client_id: "c".into(),
            secrets: 1,
            last_event_at: Some(NOW - 3_600_000),
            last_verified_event_at: Some(NOW - 3_600_000),
            events_24h: 3,
            events_7d: 10,
            conversions_24h: 2,
            conversions_7d: 8,
            test_events: 10,
            ..Default::default()
        }
    }

    #[test]
    fn a_client_with_verified_recent_events_and_no_orphans_is_working() {
        let s = assess(&healthy(), NOW);
        assert_eq!(s.level, StatusLevel::Working);
        assert!(s.reasons.is_empty());
        assert_eq!(s.notes, vec!["events arrive only in test mode".to_string()]);
    }

    #[test]
    fn a_client_without_a_secret_is_not_working() {
        let s = assess(
            &ClientActivity {
                secrets: 0,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::NotWorking);
        assert_eq!(s.reasons, vec!["no webhook secret configured".to_string()]);
    }

    #[test]
    fn a_client_that_never_received_an_event_is_not_working() {
        let s = assess(
            &ClientActivity {
                last_event_at: None,
                last_verified_event_at: None,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::NotWorking);
        assert_eq!(
            s.reasons,
            vec!["no webhook events received yet".to_string()]
        );
    }

    #[test]
    fn orphans_are_an_issue_counted_in_words() {
        let s = assess(
            &ClientActivity {
                orphans: 12,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::Issues);
        assert_eq!(s.reasons, vec!["12 orphans".to_string()]);
        let one = assess(
            &ClientActivity {
                orphans: 1,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(one.reasons, vec!["1 orphan".to_string()]);
    }

    #[test]
    fn a_quiet_client_is_an_issue() {
        let s = assess(
            &ClientActivity {
                last_event_at: Some(NOW - 9 * DAY_MS),
                last_verified_event_at: Some(NOW - 9 * DAY_MS),
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::Issues);
        assert_eq!(s.reasons, vec!["no webhook events for 9 days".to_string()]);
    }

    #[test]
    fn failed_signatures_after_good_ones_stopped_are_not_working() {
        let s = assess(
            &ClientActivity {
                unverified_events: 3,
                first_unverified_at: Some(NOW - 2 * DAY_MS),
                last_verified_event_at: Some(NOW - 5 * DAY_MS),
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::NotWorking);
        assert!(s.reasons[0].starts_with("3 events failed signature verification since "));
        assert!(s.reasons[0].ends_with(", and none verified since"));
        assert!(!secret_works(
            &ClientActivity {
                unverified_events: 3,
                first_unverified_at: Some(NOW - 2 * DAY_MS),
                last_verified_event_at: Some(NOW - 5 * DAY_MS),
                ..healthy()
            },
            NOW
        ));
    }

    #[test]
    fn a_failed_signature_among_verified_events_is_an_issue() {
        let s = assess(
            &ClientActivity {
                unverified_events: 1,
                first_unverified_at: Some(NOW - 2 * DAY_MS),
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::Issues);
        assert!(s.reasons[0]
            .starts_with("1 rejected delivery (forged, or signed with an old secret) since "));
    }

    /// One anonymous POST, just now, to a client whose verified events keep
    /// arriving (the last an hour ago) must not turn it to ❌.
    #[test]
    fn a_strangers_delivery_after_the_last_verified_one_is_only_an_issue() {
        let a = ClientActivity {
            unverified_events: 1,
            first_unverified_at: Some(NOW - 60_000),
            last_verified_event_at: Some(NOW - 3_600_000),
            ..healthy()
        };
        let s = assess(&a, NOW);
        assert_eq!(s.level, StatusLevel::Issues, "{s:?}");
        assert!(secret_works(&a, NOW));
    }

    #[test]
    fn failed_processing_is_an_issue() {
        let s = assess(
            &ClientActivity {
                failed_events: 2,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::Issues);
        assert_eq!(s.reasons, vec!["2 events failed processing".to_string()]);
    }

    #[test]
    fn not_working_reasons_come_before_issues() {
        let s = assess(
            &ClientActivity {
                secrets: 0,
                orphans: 2,
                ..healthy()
            },
            NOW,
        );
        assert_eq!(s.level, StatusLevel::NotWorking);
        assert_eq!(
            s.reasons,
            vec![
                "no webhook secret configured".to_string(),
                "2 orphans".to_string()
            ]
        );
    }
}
