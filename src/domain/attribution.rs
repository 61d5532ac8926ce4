//! Layer 2 — which link drove a purchase (SPEC 2.7). The steps run in
//! order; each one's result goes into the trace, and the first match decides.

use crate::storage::{Store, StoreResult};
use crate::stripe::event::Hints;

use super::model::*;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Layer 4: a click beacon can arrive late, so the immediate fix also counts
/// clicks up to 15 minutes after the purchase.
pub const LATE_CLICK_GRACE_MS: i64 = 15 * 60 * 1000;

/// What attribution looks at.
#[derive(Debug, Clone)]
pub struct AttributionInput<'a> {
    pub client: &'a Client,
    /// The conversion being attributed (excluded from customer history).
    pub conversion_id: &'a str,
    pub hints: &'a Hints,
    /// Each payment event's own hints: their click ids and slugs are tried
    /// after the merged ones, so the result does not hang on arrival order.
    pub alternatives: &'a [Hints],
    pub customer: Option<&'a str>,
    pub email: Option<&'a str>,
    pub purchased_at: Millis,
}

/// The decision and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub link_id: Option<String>,
    pub click_id: Option<String>,
    pub method: Option<Method>,
    pub trace: Vec<TraceStep>,
}

struct Trace(Vec<TraceStep>);

impl Trace {
    fn push(&mut self, method: Method, outcome: StepOutcome, detail: impl Into<String>) {
        self.0.push(TraceStep {
            step: method.as_str().to_string(),
            outcome,
            detail: detail.into(),
        });
    }
}

fn matched(trace: Trace, method: Method, link_id: String, click_id: Option<String>) -> Attribution {
    let mut steps = trace.0;
    for later in ORDER.iter().skip_while(|m| **m != method).skip(1) {
        steps.push(TraceStep {
            step: later.as_str().to_string(),
            outcome: StepOutcome::Skipped,
            detail: format!("not needed: {} decided", method.as_str()),
        });
    }
    Attribution {
        link_id: Some(link_id),
        click_id,
        method: Some(method),
        trace: steps,
    }
}

const ORDER: [Method; 7] = [
    Method::ClickId,
    Method::LinkSlug,
    Method::PromotionCode,
    Method::CustomerHistory,
    Method::ClickWindowPrimary,
    Method::ClickWindowFallback,
    Method::ClickAnyTime,
];

/// Runs the seven steps of layer 2.
pub async fn attribute(
    store: &dyn Store,
    input: &AttributionInput<'_>,
) -> StoreResult<Attribution> {
    let client = input.client;
    let hints = input.hints;
    let mut trace = Trace(Vec::new());

    // 1. click id
    let mut click_candidates: Vec<&str> = Vec::new();
    for h in std::iter::once(hints).chain(input.alternatives) {
        for c in [h.click_id.as_deref(), h.client_reference_id.as_deref()]
            .into_iter()
            .flatten()
        {
            if !c.is_empty() && !click_candidates.contains(&c) {
                click_candidates.push(c);
            }
        }
    }
    if click_candidates.is_empty() {
        trace.push(
            Method::ClickId,
            StepOutcome::NoMatch,
            "no click id on the purchase",
        );
    } else {
        let mut notes = Vec::new();
        for candidate in &click_candidates {
            match store.get_click(&client.id, candidate).await? {
                Some(click) if !click.bot => {
                    trace.push(
                        Method::ClickId,
                        StepOutcome::Matched,
                        format!("click {} names link {}", click.id, click.link_id),
                    );
                    return Ok(matched(
                        trace,
                        Method::ClickId,
                        click.link_id,
                        Some(click.id),
                    ));
                }
                Some(click) => {
                    notes.push(format!("{} is a bot click (or one of a flood)", click.id))
                }
                None => notes.push(format!("{candidate:?} is not a click of this client")),
            }
        }
        trace.push(Method::ClickId, StepOutcome::NoMatch, notes.join("; "));
    }

    // 2. link slug (metadata link_slug / ref; client_reference_id may hold a slug too)
    let mut slug_candidates: Vec<&str> = Vec::new();
    for h in std::iter::once(hints).chain(input.alternatives) {
        for s in [h.link_slug.as_deref(), h.client_reference_id.as_deref()]
            .into_iter()
            .flatten()
        {
            if !s.is_empty() && !slug_candidates.contains(&s) {
                slug_candidates.push(s);
            }
        }
    }
    if slug_candidates.is_empty() {
        trace.push(
            Method::LinkSlug,
            StepOutcome::NoMatch,
            "no link_slug or ref in metadata",
        );
    } else {
        let mut notes = Vec::new();
        for slug in &slug_candidates {
            if let Some(link) = store.find_link(&client.id, slug).await? {
                trace.push(
                    Method::LinkSlug,
                    StepOutcome::Matched,
                    format!("slug {slug:?} is link {}", link.id),
                );
                return Ok(matched(trace, Method::LinkSlug, link.id, None));
            }
            notes.push(format!("{slug:?} is not a link of this client"));
        }
        trace.push(Method::LinkSlug, StepOutcome::NoMatch, notes.join("; "));
    }

    // 3. promotion code
    if hints.promotion_codes.is_empty() {
        trace.push(
            Method::PromotionCode,
            StepOutcome::NoMatch,
            "no promotion code on the purchase",
        );
    } else {
        for code in &hints.promotion_codes {
            if let Some(link) = store.find_link_by_promo_code(&client.id, code).await? {
                trace.push(
                    Method::PromotionCode,
                    StepOutcome::Matched,
                    format!("promotion code {code:?} belongs to link {}", link.slug),
                );
                return Ok(matched(trace, Method::PromotionCode, link.id, None));
            }
        }
        trace.push(
            Method::PromotionCode,
            StepOutcome::NoMatch,
            format!("codes {:?} belong to no link", hints.promotion_codes),
        );
    }

    // 4. customer history
    if input.customer.is_none() && input.email.is_none() {
        trace.push(
            Method::CustomerHistory,
            StepOutcome::NoMatch,
            "no customer id or email",
        );
    } else {
        match store
            .customer_history(
                &client.id,
                input.customer,
                input.email,
                input.purchased_at,
                input.conversion_id,
            )
            .await?
        {
            Some(earlier) => {
                let link = earlier.link_id.clone().unwrap_or_default();
                trace.push(
                    Method::CustomerHistory,
                    StepOutcome::Matched,
                    format!(
                        "earlier conversion {} of this customer has link {link}",
                        earlier.id
                    ),
                );
                return Ok(matched(
                    trace,
                    Method::CustomerHistory,
                    link,
                    earlier.click_id,
                ));
            }
            None => trace.push(
                Method::CustomerHistory,
                StepOutcome::NoMatch,
                "no earlier attributed conversion of this customer",
            ),
        }
    }

    // 5–7. click windows
    let settings = client.settings;
    let windows = [
        (
            Method::ClickWindowPrimary,
            Some(settings.window_primary_days),
        ),
        (
            Method::ClickWindowFallback,
            Some(settings.window_fallback_days),
        ),
        (Method::ClickAnyTime, None),
    ];
    // The three windows all end at the purchase, so one look decides them
    // all: the latest non-bot click before it (within the widest window the
    // client uses) lies in a window or it does not. One query, not three.
    let widest = (!settings.any_time_fallback).then(|| {
        let days = settings
            .window_primary_days
            .max(settings.window_fallback_days);
        input.purchased_at - days * DAY_MS
    });
    let latest = store
        .latest_click(&client.id, widest, input.purchased_at)
        .await?;
    for (method, days) in windows {
        if method == Method::ClickAnyTime && !settings.any_time_fallback {
            trace.push(method, StepOutcome::Skipped, "turned off for this client");
            continue;
        }
        if method == Method::ClickWindowFallback
            && settings.window_fallback_days <= settings.window_primary_days
        {
            trace.push(method, StepOutcome::Skipped, "same as the primary window");
            continue;
        }
        let from = days.map(|d| input.purchased_at - d * DAY_MS);
        match latest
            .as_ref()
            .filter(|c| from.is_none_or(|f| c.at >= f))
            .cloned()
        {
            Some(click) => {
                trace.push(
                    method,
                    StepOutcome::Matched,
                    format!("latest non-bot click {} before the purchase", click.id),
                );
                return Ok(matched(trace, method, click.link_id, Some(click.id)));
            }
            None => trace.push(
                method,
                StepOutcome::NoMatch,
                match days {
                    Some(d) => format!("no non-bot click in the {d} days before the purchase"),
                    None => "no non-bot click before the purchase".to_string(),
                },
            ),
        }
    }

    Ok(Attribution {
        link_id: None,
        click_id: None,
        method: None,
        trace: trace.0,
    })
}

/// Layer 4's broader search: a non-bot click of the client up to 15 minutes
/// after the purchase (the beacon can arrive late), within the fallback window
/// or, when the any-time fallback is on, at any earlier time.
pub async fn broader_search(
    store: &dyn Store,
    input: &AttributionInput<'_>,
) -> StoreResult<(Option<Click>, TraceStep)> {
    let settings = input.client.settings;
    let from = (!settings.any_time_fallback)
        .then(|| input.purchased_at - settings.window_fallback_days * DAY_MS);
    let to = input.purchased_at + LATE_CLICK_GRACE_MS;
    let found = store.latest_click(&input.client.id, from, to).await?;
    let step = match &found {
        Some(click) => TraceStep {
            step: Method::Autofix.as_str().to_string(),
            outcome: StepOutcome::Matched,
            detail: format!(
                "click {} arrived {} s after the purchase",
                click.id,
                (click.at - input.purchased_at).max(0) / 1000
            ),
        },
        None => TraceStep {
            step: Method::Autofix.as_str().to_string(),
            outcome: StepOutcome::NoMatch,
            detail: "no non-bot click up to 15 minutes after the purchase either".into(),
        },
    };
    Ok((found, step))
}
