//! Diagnosis of one link or one sale: everything needed to see why a sale
//! was or was not attributed, and what to do next.

use serde::Serialize;

use super::autofix::why_orphan;
use super::model::*;
use super::{DomainError, DomainResult, Tracker};

#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: i64,
    pub stripe_event_id: Option<String>,
    pub event_type: Option<String>,
    pub received_at: Millis,
    pub verification: Verification,
    pub verification_reason: Option<UnverifiedReason>,
    pub processing: Processing,
    pub processing_error: Option<String>,
}

impl From<&StoredEvent> for EventSummary {
    fn from(e: &StoredEvent) -> Self {
        Self {
            id: e.id,
            stripe_event_id: e.stripe_event_id.clone(),
            event_type: e.event_type.clone(),
            received_at: e.received_at,
            verification: e.verification,
            verification_reason: e.verification_reason,
            processing: e.processing,
            processing_error: e.processing_error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NearbyOrphan {
    pub conversion: Conversion,
    pub why_not_matched: String,
    /// How this link's own clicks relate to the sale.
    pub this_link: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkDiagnosis {
    pub link: Link,
    pub client: Client,
    pub webhook_url: String,
    pub recent_clicks: Vec<Click>,
    pub bot_clicks: usize,
    pub conversions: Vec<Conversion>,
    pub orphans_nearby: Vec<NearbyOrphan>,
    pub events_mentioning: Vec<EventSummary>,
    pub next_steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaleDiagnosis {
    pub conversion: Conversion,
    pub link: Option<Link>,
    pub history: Vec<HistoryEntry>,
    pub events: Vec<EventSummary>,
    pub next_steps: Vec<String>,
}

impl Tracker {
    /// Diagnoses every link with this slug (one per client that has it).
    pub async fn diagnose_link(&self, slug: &str) -> DomainResult<Vec<LinkDiagnosis>> {
        let links = self.store.find_links_by_slug(slug).await?;
        if links.is_empty() {
            return Err(DomainError::NotFound {
                what: "link",
                id: slug.chars().take(80).collect(),
            });
        }
        let mut out = Vec::new();
        for link in links {
            let client = self.find_client(&link.client_id).await?;
            let recent_clicks = self.store.recent_clicks_for_link(&link.id, 20).await?;
            let bot_clicks = recent_clicks.iter().filter(|c| c.bot).count();
            let conversions = self
                .store
                .list_conversions(&ConversionFilter {
                    client_id: Some(client.id.clone()),
                    link_id: Some(link.id.clone()),
                    limit: 50,
                    ..Default::default()
                })
                .await?;
            let orphans = self
                .store
                .list_conversions(&ConversionFilter {
                    client_id: Some(client.id.clone()),
                    orphans_only: true,
                    limit: 50,
                    ..Default::default()
                })
                .await?;
            let orphans_nearby: Vec<NearbyOrphan> = orphans
                .into_iter()
                .map(|c| NearbyOrphan {
                    why_not_matched: why_orphan(&c),
                    this_link: orphan_vs_link(&c, &link, &client.settings, &recent_clicks),
                    conversion: c,
                })
                .collect();
            let events = self
                .store
                .list_events(&EventFilter {
                    body_contains: Some(link.slug.clone()),
                    limit: 20,
                    ..Default::default()
                })
                .await?;
            let secrets = self
                .store
                .list_client_secrets()
                .await?
                .iter()
                .find(|c| c.client.id == client.id)
                .map_or(0, |c| c.secrets.len());
            let mut next_steps = Vec::new();
            if secrets == 0 {
                next_steps.push(format!(
                    "Add the webhook signing secret of {}: salestrack client add-secret {} < whsec.txt",
                    client.name, client.id
                ));
            }
            if recent_clicks.is_empty() {
                next_steps.push(format!(
                    "No clicks yet: share /r/{} or add the snippet (t.js) to {}",
                    link.slug,
                    client.domain.as_deref().unwrap_or("the client's site")
                ));
            }
            if events
                .iter()
                .any(|e| e.verification == Verification::Unverified)
            {
                next_steps.push(
                    "Some events mentioning this link failed signature verification: fix the secret, then run `salestrack events reprocess --unverified`".into(),
                );
            }
            if !orphans_nearby.is_empty() {
                next_steps.push(format!(
                    "{} orphan(s) for {}: run `salestrack autofix --client {}` or set their link by hand",
                    orphans_nearby.len(),
                    client.name,
                    client.id
                ));
            }
            if conversions.is_empty() && events.is_empty() {
                next_steps.push(format!(
                    "No sale mentions {:?}: pass metadata link_slug={} (or the click id as client_reference_id) at checkout",
                    link.slug, link.slug
                ));
            }
            if next_steps.is_empty() {
                next_steps.push("Nothing to do: this link's sales are tracked.".into());
            }
            out.push(LinkDiagnosis {
                webhook_url: self.webhook_url(&client.id),
                events_mentioning: events.iter().map(EventSummary::from).collect(),
                link,
                client,
                recent_clicks,
                bot_clicks,
                conversions,
                orphans_nearby,
                next_steps,
            });
        }
        Ok(out)
    }

    /// Diagnoses one conversion: its trace, history and events.
    pub async fn diagnose_conversion(&self, id: &str) -> DomainResult<SaleDiagnosis> {
        let conversion =
            self.store
                .get_conversion(id)
                .await?
                .ok_or_else(|| DomainError::NotFound {
                    what: "conversion",
                    id: id.to_string(),
                })?;
        let link = match &conversion.link_id {
            Some(l) => self.store.get_link(l).await?,
            None => None,
        };
        let history = self.store.list_history(&conversion.id).await?;
        let events = self
            .store
            .list_events(&EventFilter {
                body_contains: Some(conversion.purchase_key.clone()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        let mut next_steps = Vec::new();
        if !conversion.verified {
            next_steps.push("This sale is unverified and held out of totals: fix the client's webhook secret, then run `salestrack events reprocess --unverified`".into());
        }
        if conversion.link_id.is_none() {
            next_steps.push(format!(
                "Orphan ({}). Run `salestrack autofix`, or set its link by hand.",
                why_orphan(&conversion)
            ));
        }
        if next_steps.is_empty() {
            next_steps.push("Nothing to do: this sale is attributed.".into());
        }
        Ok(SaleDiagnosis {
            conversion,
            link,
            history,
            events: events.iter().map(EventSummary::from).collect(),
            next_steps,
        })
    }
}

// ---- sales found by email or invoice (the admin's diagnose-sale) ----------

/// The sales a search found, each diagnosed, and the stored events that
/// mention the search (so that a sale that made no conversion still shows).
#[derive(Debug, Clone, Serialize)]
pub struct SalesDiagnosis {
    pub query: String,
    pub sales: Vec<SaleDiagnosis>,
    pub events_mentioning: Vec<EventSummary>,
    pub next_steps: Vec<String>,
}

const DAY_MS: Millis = 24 * 3600 * 1000;

/// A span of time in words: `40 s`, `12 min`, `5 h`, `3 days`.
fn span(ms: Millis) -> String {
    let s = ms.abs() / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// How the clicks of `link` (the most recent ones) relate to an orphan sale.
pub fn orphan_vs_link(
    orphan: &Conversion,
    link: &Link,
    settings: &AttributionSettings,
    clicks: &[Click],
) -> String {
    let human: Vec<&Click> = clicks.iter().filter(|c| !c.bot).collect();
    let before = human
        .iter()
        .filter(|c| c.at <= orphan.purchased_at)
        .map(|c| c.at)
        .max();
    let after = human
        .iter()
        .filter(|c| c.at > orphan.purchased_at)
        .map(|c| c.at)
        .min();
    let window = settings.window_fallback_days * DAY_MS;
    match (before, after) {
        (Some(at), _) if settings.any_time_fallback || orphan.purchased_at - at <= window => format!(
            "a click on {} {} before the sale was recorded after the sale was attributed: Auto-Fix will attribute it",
            link.slug,
            span(orphan.purchased_at - at)
        ),
        (Some(at), _) => format!(
            "the last click on {} came {} before the sale, beyond the {}-day window (the any-time fallback is off)",
            link.slug,
            span(orphan.purchased_at - at),
            settings.window_fallback_days
        ),
        (None, Some(at)) if at - orphan.purchased_at <= crate::domain::attribution::LATE_CLICK_GRACE_MS => format!(
            "a click on {} came {} after the sale (a late beacon): Auto-Fix will attribute it",
            link.slug,
            span(at - orphan.purchased_at)
        ),
        (None, Some(at)) => format!(
            "the first click on {} came {} after the sale, too late to have driven it",
            link.slug,
            span(at - orphan.purchased_at)
        ),
        (None, None) => format!("no recorded non-bot click on {} near this sale", link.slug),
    }
}

impl Tracker {
    /// Every sale of a customer email (any client), diagnosed.
    pub async fn diagnose_email(&self, email: &str) -> DomainResult<SalesDiagnosis> {
        let email = email.trim();
        if email.is_empty() || email.len() > 320 {
            return Err(DomainError::invalid("give an email address"));
        }
        let filter = ConversionFilter {
            email: Some(email.to_string()),
            limit: 20,
            ..Default::default()
        };
        self.diagnose_sales(email, filter).await
    }

    /// The sale of a Stripe invoice (any client), diagnosed.
    pub async fn diagnose_invoice(&self, invoice: &str) -> DomainResult<SalesDiagnosis> {
        let invoice = invoice.trim();
        if invoice.is_empty() || invoice.len() > 255 {
            return Err(DomainError::invalid("give a Stripe invoice id (in_…)"));
        }
        let filter = ConversionFilter {
            purchase_key: Some(invoice.to_string()),
            limit: 20,
            ..Default::default()
        };
        self.diagnose_sales(invoice, filter).await
    }

    async fn diagnose_sales(
        &self,
        query: &str,
        filter: ConversionFilter,
    ) -> DomainResult<SalesDiagnosis> {
        let mut sales = Vec::new();
        for c in self.store.list_conversions(&filter).await? {
            sales.push(self.diagnose_conversion(&c.id).await?);
        }
        let events: Vec<EventSummary> = self
            .store
            .list_events(&EventFilter {
                body_contains: Some(query.to_string()),
                limit: 20,
                ..Default::default()
            })
            .await?
            .iter()
            .map(EventSummary::from)
            .collect();
        let mut next_steps = Vec::new();
        if sales.is_empty() && events.is_empty() {
            next_steps.push(format!(
                "No stored event mentions {query:?}: Stripe did not deliver it here. Check the endpoint URL and its selected events (invoice.paid) in Stripe, or run `salestrack reconcile`."
            ));
        } else if sales.is_empty() {
            next_steps.push(
                "Events mention it but made no conversion: open them to see their verification and processing results, then reprocess.".into(),
            );
        } else if sales
            .iter()
            .all(|s| s.conversion.link_id.is_some() && s.conversion.verified)
        {
            next_steps.push("Nothing to do: these sales are verified and attributed.".into());
        } else {
            next_steps.push("See each sale's next steps below.".into());
        }
        Ok(SalesDiagnosis {
            query: query.to_string(),
            sales,
            events_mentioning: events,
            next_steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan_at(at: Millis) -> Conversion {
        Conversion {
            id: "cv".into(),
            client_id: "c".into(),
            purchase_key: "pi".into(),
            link_id: None,
            click_id: None,
            customer: None,
            email: None,
            subscription: None,
            amount: 100,
            currency: "usd".into(),
            net_amount: 100,
            purchased_at: at,
            kind: ConversionKind::New,
            livemode: false,
            verified: true,
            status: ConversionStatus::Paid,
            method: None,
            client_method: ClientMethod::WebhookSecret,
            trace: vec![],
            created_at: at,
            updated_at: at,
        }
    }

    fn link() -> Link {
        Link {
            id: "l".into(),
            client_id: "c".into(),
            slug: "flexus1".into(),
            destination: "https://x.example".into(),
            label: None,
            promo_codes: vec![],
            created_at: 0,
        }
    }

    fn click(at: Millis, bot: bool) -> Click {
        Click {
            id: "k".into(),
            link_id: "l".into(),
            client_id: "c".into(),
            at,
            visitor_id: None,
            referrer: None,
            landing_url: None,
            user_agent: None,
            ip_hash: None,
            bot,
        }
    }

    const T: Millis = 1_000 * DAY_MS;

    #[test]
    fn an_orphan_with_no_click_on_the_link_says_so() {
        let s = AttributionSettings::default();
        let text = orphan_vs_link(&orphan_at(T), &link(), &s, &[click(T - 1000, true)]);
        assert_eq!(text, "no recorded non-bot click on flexus1 near this sale");
    }

    #[test]
    fn a_click_after_the_sale_is_late_or_too_late() {
        let s = AttributionSettings::default();
        let late = orphan_vs_link(&orphan_at(T), &link(), &s, &[click(T + 60_000, false)]);
        assert!(late.contains("after the sale (a late beacon)"), "{late}");
        let too_late = orphan_vs_link(&orphan_at(T), &link(), &s, &[click(T + 3 * DAY_MS, false)]);
        assert!(
            too_late.contains("3 days after the sale, too late"),
            "{too_late}"
        );
    }

    #[test]
    fn an_old_click_beyond_the_window_names_the_window() {
        let s = AttributionSettings {
            any_time_fallback: false,
            ..Default::default()
        };
        let text = orphan_vs_link(
            &orphan_at(T),
            &link(),
            &s,
            &[click(T - 120 * DAY_MS, false)],
        );
        assert!(text.contains("beyond the 90-day window"), "{text}");
    }
}
