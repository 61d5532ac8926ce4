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
                .into_iter()
                .find(|c| c.client.id == client.id)
                .map_or(0, |c| c.secrets.len());
            let mut next_steps = Vec::new();
            if secrets == 0 {
                next_steps.push(format!(
                    "Add the webhook signing secret of {}: salestrack client add-secret {} whsec_…",
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
