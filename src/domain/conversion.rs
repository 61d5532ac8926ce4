//! Layer 3 — one purchase, one conversion. A conversion is derived again from
//! every fact stored for its purchase key, so the result does not depend on
//! the order in which Stripe delivered the events.

use crate::stripe::event::{DisputeStatus, Hints, PaymentFacts, PaymentSource};

use super::attribution::{attribute, broader_search, Attribution, AttributionInput};
use super::ids::new_id;
use super::model::*;
use super::{DomainResult, Tracker};

/// The money and facts of a purchase, before attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub amount: i64,
    pub currency: String,
    pub net_amount: i64,
    pub status: ConversionStatus,
    pub kind: ConversionKind,
    pub customer: Option<String>,
    pub email: Option<String>,
    pub subscription: Option<String>,
    pub purchased_at: Millis,
    pub livemode: bool,
    pub verified: bool,
    pub client_method: ClientMethod,
    pub hints: Hints,
    /// The hints of each payment event on its own (primary first), so that a
    /// click id or slug one event carries is not hidden by another event's.
    pub alternatives: Vec<Hints>,
}

/// An invoice purchase is keyed by its invoice id (Stripe ids start `in_`).
pub fn is_invoice_key(key: &str) -> bool {
    key.starts_with("in_")
}

fn source_rank(source: PaymentSource) -> u8 {
    match source {
        PaymentSource::Invoice => 0,
        PaymentSource::CheckoutSession => 1,
        PaymentSource::PaymentIntent => 2,
        PaymentSource::Charge => 3,
    }
}

/// Derives a purchase from its facts; `None` while no fact counts a sale
/// (hints, refunds or disputes that arrived first wait for it).
pub fn derive(key: &str, facts: &[SaleFact]) -> Option<Derived> {
    let invoice_key = is_invoice_key(key);
    let counts =
        |p: &PaymentFacts| p.counts && (!invoice_key || p.source == PaymentSource::Invoice);
    let counting: Vec<(&SaleFact, &PaymentFacts)> = facts
        .iter()
        .filter_map(|f| match &f.body {
            FactBody::Payment(p) if counts(p) => Some((f, p)),
            _ => None,
        })
        .collect();
    if counting.is_empty() {
        return None;
    }
    // Once any delivery of the sale is verified, unverified facts (which
    // anybody could have forged) no longer count.
    let verified = counting.iter().any(|(f, _)| f.verified);
    let usable = |f: &SaleFact| f.verified || !verified;
    let (primary_fact, primary) = counting
        .iter()
        .filter(|(f, _)| usable(f))
        .min_by_key(|(f, p)| (source_rank(p.source), f.event_id))
        .copied()?;

    let mut payments: Vec<(&SaleFact, &PaymentFacts)> = facts
        .iter()
        .filter(|f| usable(f))
        .filter_map(|f| match &f.body {
            FactBody::Payment(p) => Some((f, p)),
            _ => None,
        })
        .collect();
    payments.sort_by_key(|(f, p)| {
        (
            f.event_id != primary_fact.event_id,
            source_rank(p.source),
            f.event_id,
        )
    });

    let first =
        |get: &dyn Fn(&PaymentFacts) -> Option<String>| payments.iter().find_map(|(_, p)| get(p));
    let mut hints = Hints {
        client_reference_id: first(&|p| p.hints.client_reference_id.clone()),
        click_id: first(&|p| p.hints.click_id.clone()),
        link_slug: first(&|p| p.hints.link_slug.clone()),
        promotion_codes: Vec::new(),
    };
    for (_, p) in &payments {
        for code in &p.hints.promotion_codes {
            if !hints.promotion_codes.contains(code) {
                hints.promotion_codes.push(code.clone());
            }
        }
    }

    let amount = primary.amount;
    let currency = primary.currency.clone();
    let refunded = facts
        .iter()
        .filter(|f| usable(f))
        .filter_map(|f| match &f.body {
            FactBody::Refund(r) if r.currency == currency => Some(r.amount_refunded),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .clamp(0, amount.max(0));
    let dispute = facts
        .iter()
        .filter(|f| usable(f))
        .filter_map(|f| match &f.body {
            FactBody::Dispute(d) => Some((d.at, f.event_id, d.status)),
            _ => None,
        })
        .max_by_key(|(at, event_id, _)| (*at, *event_id));
    let status = match dispute {
        Some((_, _, DisputeStatus::Open)) => ConversionStatus::Disputed,
        Some((_, _, DisputeStatus::Won)) => ConversionStatus::DisputeWon,
        Some((_, _, DisputeStatus::Lost)) => ConversionStatus::DisputeLost,
        None if refunded > 0 && refunded >= amount => ConversionStatus::Refunded,
        None if refunded > 0 => ConversionStatus::PartiallyRefunded,
        None => ConversionStatus::Paid,
    };
    let kind = if primary.source == PaymentSource::Invoice {
        if amount == 0 {
            ConversionKind::TrialStart
        } else if primary.billing_reason.as_deref() == Some("subscription_cycle") {
            ConversionKind::Renewal
        } else {
            ConversionKind::New
        }
    } else {
        ConversionKind::New
    };
    Some(Derived {
        amount,
        currency,
        net_amount: amount - refunded,
        status,
        kind,
        customer: first(&|p| p.customer.clone()),
        email: first(&|p| p.email.clone()),
        subscription: first(&|p| p.subscription.clone()),
        purchased_at: primary.purchased_at.saturating_mul(1000),
        livemode: primary_fact.livemode,
        verified,
        client_method: primary_fact.client_method,
        hints,
        alternatives: payments.iter().map(|(_, p)| p.hints.clone()).collect(),
    })
}

impl Tracker {
    /// SPEC 2.9: after a trial, the first paid invoice (billed as a
    /// `subscription_cycle`) is the customer's first sale, not a renewal.
    async fn first_paid_after_trial(
        &self,
        client: &Client,
        id: &str,
        derived: &Derived,
    ) -> DomainResult<ConversionKind> {
        let (ConversionKind::Renewal, Some(subscription), Some(customer)) =
            (derived.kind, &derived.subscription, &derived.customer)
        else {
            return Ok(derived.kind);
        };
        let siblings = self
            .store
            .list_conversions(&ConversionFilter {
                client_id: Some(client.id.clone()),
                customer: Some(customer.clone()),
                subscription: Some(subscription.clone()),
                ..Default::default()
            })
            .await?;
        // A forged trial or invoice never changes what a verified sale is.
        let same_sub = || {
            siblings
                .iter()
                .filter(|c| c.id != id && (c.verified || !derived.verified))
        };
        let had_trial = same_sub().any(|c| c.kind == ConversionKind::TrialStart);
        let paid_before = same_sub().any(|c| {
            c.kind != ConversionKind::TrialStart
                && c.amount > 0
                && c.purchased_at < derived.purchased_at
        });
        Ok(if had_trial && !paid_before {
            ConversionKind::New
        } else {
            ConversionKind::Renewal
        })
    }

    /// SPEC 2.9 whatever the arrival order: once a subscription has a trial,
    /// a trial or paid invoice arriving late can change which of its other
    /// invoices is the first paid one (`new`) and which are renewals.
    async fn rekind_after_trial(&self, client: &Client, saved: &Conversion) -> DomainResult<()> {
        let (Some(subscription), Some(customer), true) =
            (&saved.subscription, &saved.customer, saved.verified)
        else {
            return Ok(());
        };
        let filter = ConversionFilter {
            client_id: Some(client.id.clone()),
            customer: Some(customer.clone()),
            subscription: Some(subscription.clone()),
            ..Default::default()
        };
        // Most subscriptions never had a trial: one query that finds no
        // row settles it.
        let trial = ConversionFilter {
            kind: Some(ConversionKind::TrialStart),
            limit: 1,
            ..filter.clone()
        };
        if saved.kind != ConversionKind::TrialStart
            && self.store.list_conversions(&trial).await?.is_empty()
        {
            return Ok(());
        }
        let same_sub = self.store.list_conversions(&filter).await?;
        for sibling in same_sub
            .into_iter()
            .filter(|c| c.id != saved.id && c.kind != ConversionKind::TrialStart)
        {
            let facts = self
                .store
                .facts_for_purchase(&client.id, &sibling.purchase_key)
                .await?;
            let Some(derived) = derive(&sibling.purchase_key, &facts) else {
                continue;
            };
            let kind = self
                .first_paid_after_trial(client, &sibling.id, &derived)
                .await?;
            if kind != sibling.kind {
                self.store
                    .save_conversion(&Conversion {
                        kind,
                        updated_at: now_millis(),
                        ..sibling
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// The link of a derived purchase: layer 2's seven steps, then layer 4's
    /// broader search when they find none. Reads only.
    async fn attribute_purchase(
        &self,
        client: &Client,
        conversion_id: &str,
        derived: &Derived,
    ) -> DomainResult<Attribution> {
        let input = AttributionInput {
            client,
            conversion_id,
            hints: &derived.hints,
            alternatives: &derived.alternatives,
            customer: derived.customer.as_deref(),
            email: derived.email.as_deref(),
            purchased_at: derived.purchased_at,
        };
        let mut found = attribute(self.store.as_ref(), &input).await?;
        if found.link_id.is_none() {
            let (click, step) = broader_search(self.store.as_ref(), &input).await?;
            found.trace.push(step);
            if let Some(click) = click {
                found.link_id = Some(click.link_id);
                found.click_id = Some(click.id);
                found.method = Some(Method::Autofix);
            }
        }
        Ok(found)
    }

    /// What `recompute` would find for purchase `key` right now, taking no
    /// lock and writing nothing; `None` when its facts make no conversion.
    /// Auto-Fix looks at many orphans this way, several at a time.
    pub(crate) async fn preview_attribution(
        &self,
        client: &Client,
        key: &str,
        conversion_id: &str,
    ) -> DomainResult<Option<Attribution>> {
        let facts = self.store.facts_for_purchase(&client.id, key).await?;
        match derive(key, &facts) {
            Some(derived) => Ok(Some(
                self.attribute_purchase(client, conversion_id, &derived)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// Derives the purchase `key` of `client` again from its facts, runs
    /// attribution and saves the conversion. Returns the live conversion.
    /// Callers hold `purchase_lock`.
    pub(crate) async fn recompute(
        &self,
        client: &Client,
        key: &str,
        actor: &str,
    ) -> DomainResult<Option<Conversion>> {
        let facts = self.store.facts_for_purchase(&client.id, key).await?;
        let existing = self.store.get_conversion_by_key(&client.id, key).await?;
        let Some(derived) = derive(key, &facts) else {
            return Ok(existing);
        };
        let now = now_millis();
        let id = existing
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_else(|| new_id("conv"));
        let found = self.attribute_purchase(client, &id, &derived).await?;

        let kind = self.first_paid_after_trial(client, &id, &derived).await?;
        let mut conversion = Conversion {
            id: id.clone(),
            client_id: client.id.clone(),
            purchase_key: key.to_string(),
            link_id: found.link_id.clone(),
            click_id: found.click_id.clone(),
            customer: derived.customer,
            email: derived.email,
            subscription: derived.subscription,
            amount: derived.amount,
            currency: derived.currency,
            net_amount: derived.net_amount,
            purchased_at: derived.purchased_at,
            kind,
            livemode: derived.livemode,
            verified: derived.verified,
            status: derived.status,
            method: found.method,
            client_method: derived.client_method,
            trace: found.trace,
            created_at: existing.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        let mut change = None;
        if let Some(old) = &existing {
            if keeps_old_attribution(old, &conversion) {
                conversion.link_id = old.link_id.clone();
                conversion.click_id = old.click_id.clone();
                conversion.method = old.method;
                conversion.trace = old.trace.clone();
            } else if old.link_id != conversion.link_id {
                change = Some((old.link_id.clone(), old.method));
            }
        } else if conversion.link_id.is_some() {
            change = Some((None, None));
        }
        self.store.save_conversion(&conversion).await?;
        if existing.is_none() {
            // A no-op without a recorder (the CLI); `/metrics` shows it when serving.
            metrics::counter!("salestrack_conversions_total",
                "method" => conversion.method.map_or("none", Method::as_str))
            .increment(1);
        }
        self.rekind_after_trial(client, &conversion).await?;
        if let Some((from_link, from_method)) = change {
            let reason = match (&from_link, conversion.method) {
                (None, Some(m)) => format!("attributed by {}", m.as_str()),
                (Some(_), Some(m)) => format!("stronger evidence: {}", m.as_str()),
                _ => "attribution changed".to_string(),
            };
            self.store
                .add_history(&NewHistoryEntry {
                    conversion_id: conversion.id.clone(),
                    actor: actor.to_string(),
                    from_link_id: from_link,
                    to_link_id: conversion.link_id.clone(),
                    from_method,
                    to_method: conversion.method,
                    reason,
                })
                .await?;
        }
        Ok(Some(conversion))
    }
}

/// A manual choice is never replaced automatically, and an automatic one is
/// only replaced by stronger evidence (a smaller method rank).
fn keeps_old_attribution(old: &Conversion, new: &Conversion) -> bool {
    match (old.method, new.method) {
        (Some(Method::Manual), _) => true,
        // What unverified facts decided (a forged click id, say) never
        // outlives the sale's verification.
        _ if new.verified && !old.verified => false,
        (Some(_), None) => true,
        (Some(old_m), Some(new_m)) => new_m.rank() >= old_m.rank() && old.link_id.is_some(),
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::event::{DisputeFacts, RefundFacts};

    fn payment(source: PaymentSource, id: &str, counts: bool, amount: i64) -> PaymentFacts {
        PaymentFacts {
            source,
            object_id: id.into(),
            counts,
            invoice: None,
            payment_intent: None,
            charge: None,
            checkout_session: None,
            subscription: None,
            customer: Some("cus_1".into()),
            email: None,
            amount,
            currency: "usd".into(),
            purchased_at: 1_700_000_000,
            billing_reason: None,
            hints: Hints::default(),
        }
    }

    fn fact(event_id: i64, verified: bool, body: FactBody) -> SaleFact {
        SaleFact {
            event_id,
            client_id: "cli".into(),
            purchase_key: "pi_1".into(),
            verified,
            livemode: false,
            client_method: ClientMethod::WebhookSecret,
            body,
        }
    }

    #[test]
    fn hints_alone_make_no_conversion() {
        let cs = payment(PaymentSource::CheckoutSession, "cs_1", false, 1900);
        assert!(derive("in_1", &[fact(1, true, FactBody::Payment(cs))]).is_none());
    }

    #[test]
    fn payment_intents_do_not_count_for_an_invoice() {
        let pi = payment(PaymentSource::PaymentIntent, "pi_1", true, 1900);
        assert!(derive("in_1", &[fact(1, true, FactBody::Payment(pi))]).is_none());
    }

    #[test]
    fn a_refund_that_came_first_is_applied_when_the_sale_arrives() {
        let refund = FactBody::Refund(RefundFacts {
            charge: "ch_1".into(),
            payment_intent: Some("pi_1".into()),
            invoice: None,
            amount_refunded: 1500,
            currency: "usd".into(),
            at: 1,
        });
        let full = FactBody::Refund(RefundFacts {
            charge: "ch_1".into(),
            payment_intent: Some("pi_1".into()),
            invoice: None,
            amount_refunded: 4900,
            currency: "usd".into(),
            at: 2,
        });
        let sale = FactBody::Payment(payment(PaymentSource::PaymentIntent, "pi_1", true, 4900));
        let partial = derive(
            "pi_1",
            &[fact(1, true, refund.clone()), fact(2, true, sale.clone())],
        )
        .unwrap();
        assert_eq!(partial.net_amount, 3400);
        assert_eq!(partial.status, ConversionStatus::PartiallyRefunded);
        let all = derive(
            "pi_1",
            &[
                fact(3, true, full),
                fact(1, true, refund),
                fact(2, true, sale),
            ],
        )
        .unwrap();
        assert_eq!(all.net_amount, 0);
        assert_eq!(all.status, ConversionStatus::Refunded);
    }

    #[test]
    fn the_latest_dispute_state_wins() {
        let dispute = |at, status| {
            FactBody::Dispute(DisputeFacts {
                dispute: "du_1".into(),
                charge: "ch_1".into(),
                payment_intent: Some("pi_1".into()),
                amount: 4900,
                currency: "usd".into(),
                status,
                at,
            })
        };
        let sale = FactBody::Payment(payment(PaymentSource::Charge, "ch_1", true, 4900));
        let d = derive(
            "pi_1",
            &[
                fact(5, true, dispute(20, DisputeStatus::Lost)),
                fact(4, true, dispute(10, DisputeStatus::Open)),
                fact(1, true, sale),
            ],
        )
        .unwrap();
        assert_eq!(d.status, ConversionStatus::DisputeLost);
    }

    #[test]
    fn a_verified_delivery_outweighs_forged_ones() {
        let mut forged = payment(PaymentSource::PaymentIntent, "pi_1", true, 999_999);
        forged.hints.link_slug = Some("attacker".into());
        let mut real = payment(PaymentSource::PaymentIntent, "pi_1", true, 4900);
        real.hints.link_slug = Some("spring-sale".into());
        let d = derive(
            "pi_1",
            &[
                fact(1, false, FactBody::Payment(forged.clone())),
                fact(2, true, FactBody::Payment(real)),
            ],
        )
        .unwrap();
        assert!(d.verified);
        assert_eq!(d.amount, 4900);
        assert_eq!(d.hints.link_slug.as_deref(), Some("spring-sale"));
        let only_forged = derive("pi_1", &[fact(1, false, FactBody::Payment(forged))]).unwrap();
        assert!(!only_forged.verified);
    }

    #[test]
    fn invoice_kinds_follow_amount_and_billing_reason() {
        let mut inv = payment(PaymentSource::Invoice, "in_1", true, 1900);
        inv.billing_reason = Some("subscription_cycle".into());
        assert_eq!(
            derive("in_1", &[fact(1, true, FactBody::Payment(inv.clone()))])
                .unwrap()
                .kind,
            ConversionKind::Renewal
        );
        inv.amount = 0;
        assert_eq!(
            derive("in_1", &[fact(1, true, FactBody::Payment(inv.clone()))])
                .unwrap()
                .kind,
            ConversionKind::TrialStart
        );
        inv.amount = 1900;
        inv.billing_reason = Some("subscription_create".into());
        assert_eq!(
            derive("in_1", &[fact(1, true, FactBody::Payment(inv))])
                .unwrap()
                .kind,
            ConversionKind::New
        );
    }

    #[test]
    fn hints_merge_from_every_event_of_the_purchase() {
        let inv = payment(PaymentSource::Invoice, "in_1", true, 1900);
        let mut cs = payment(PaymentSource::CheckoutSession, "cs_1", false, 1900);
        cs.hints.client_reference_id = Some("clk_1".into());
        cs.hints.promotion_codes = vec!["promo_1".into()];
        let d = derive(
            "in_1",
            &[
                fact(2, true, FactBody::Payment(cs)),
                fact(1, true, FactBody::Payment(inv)),
            ],
        )
        .unwrap();
        assert_eq!(d.hints.client_reference_id.as_deref(), Some("clk_1"));
        assert_eq!(d.hints.promotion_codes, vec!["promo_1".to_string()]);
    }
}
