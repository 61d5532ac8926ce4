//! `salestrack demo`: a fresh database with a realistic story — two clients,
//! links, clicks spread over weeks, signed sales through every fallback, an
//! orphan and a failed signature — then served.

use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};

use super::DemoArgs;
use crate::app;
use crate::config::{Config, Overrides};
use crate::domain::client::{ClientIn, LinkIn};
use crate::domain::ids::new_id;
use crate::domain::ingest::{Delivery, Endpoint};
use crate::domain::model::*;
use crate::domain::Tracker;
use crate::stripe::signature::header_for;

const DAY: i64 = 24 * 3600;
const DEMO_DB: &str = "sqlite://salestrack-demo.db";

pub async fn run(
    database: Option<&str>,
    config_file: Option<&str>,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let url = database.unwrap_or(DEMO_DB).to_string();
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{path}{suffix}");
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing the old demo database {file}"))
                }
            }
        }
    }
    let config = Config::load(
        config_file,
        &Overrides {
            database_url: Some(url.clone()),
            listen: args.listen.clone(),
            ..Default::default()
        },
    )?;
    let tracker = app::build_tracker(&config).await?;
    populate(&tracker).await?;
    let count = tracker
        .store()
        .list_conversions(&ConversionFilter::default())
        .await?
        .len();
    println!(
        "demo database {} populated: 2 clients, {count} conversions",
        crate::storage::redact_url(&url)
    );
    println!("try: salestrack --database {url} conversions list");
    println!("     salestrack --database {url} diagnose --link-slug flexus1");
    if args.no_serve {
        return Ok(());
    }
    let token = std::env::var("SALESTRACK_ADMIN_TOKEN").ok();
    super::commands::admin_token(&tracker, token.as_deref()).await?;
    super::commands::serve(tracker, &config).await
}

struct Story {
    tracker: Arc<Tracker>,
    now: i64,
    seq: u32,
}

impl Story {
    async fn click(&self, link: &Link, days_ago: f64, bot: bool) -> anyhow::Result<Click> {
        let click = Click {
            id: new_id("clk"),
            link_id: link.id.clone(),
            client_id: link.client_id.clone(),
            at: (self.now as f64 * 1000.0 - days_ago * DAY as f64 * 1000.0) as i64,
            visitor_id: Some(new_id("vis")),
            referrer: Some("https://www.instagram.com/".into()),
            landing_url: None,
            user_agent: Some(if bot {
                "facebookexternalhit/1.1".into()
            } else {
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148".into()
            }),
            ip_hash: None,
            bot,
        };
        self.tracker.store().insert_click(&click).await?;
        Ok(click)
    }

    /// Sends one Stripe-shaped event, signed with `secret`, through the real pipeline.
    async fn send(
        &mut self,
        client: &Client,
        secret: &str,
        event_type: &str,
        created: i64,
        object: Value,
    ) -> anyhow::Result<()> {
        self.seq += 1;
        let event = json!({
            "id": format!("evt_demo{:04}{}", self.seq, &new_id("x")[2..12]),
            "object": "event",
            "api_version": "2026-07-29.dahlia",
            "created": created,
            "data": {"object": object},
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": event_type,
        });
        let body = serde_json::to_vec_pretty(&event)?;
        let signature = header_for(&body, secret, self.now);
        self.tracker
            .ingest(Delivery {
                endpoint: Endpoint::Client(client.id.clone()),
                signature: Some(signature),
                headers: vec![("content-type".into(), "application/json".into())],
                body,
                // One millisecond apart, in the order they were sent.
                received_at: self.now * 1000 + i64::from(self.seq),
            })
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn checkout(
    id: &str,
    pi: &str,
    amount: i64,
    currency: &str,
    customer: &str,
    email: &str,
    created: i64,
    extra: Value,
) -> Value {
    let mut object = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "payment_status": "paid", "status": "complete",
        "amount_subtotal": amount, "amount_total": amount, "currency": currency, "created": created - 120,
        "customer": customer, "customer_details": {"email": email}, "payment_intent": pi,
        "client_reference_id": null, "metadata": {}, "livemode": false,
    });
    if let (Some(o), Some(e)) = (object.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    object
}

fn payment_intent(
    id: &str,
    amount: i64,
    currency: &str,
    customer: &str,
    email: &str,
    metadata: Value,
) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": currency,
        "customer": customer, "receipt_email": email, "status": "succeeded", "metadata": metadata, "livemode": false,
    })
}

#[allow(clippy::too_many_arguments)]
fn invoice(
    id: &str,
    amount: i64,
    customer: &str,
    email: &str,
    subscription: &str,
    reason: &str,
    paid_at: i64,
    metadata: Value,
) -> Value {
    json!({
        "id": id, "object": "invoice", "amount_due": amount, "amount_paid": amount, "currency": "usd",
        "billing_reason": reason, "customer": customer, "customer_email": email, "status": "paid",
        "created": paid_at - 60, "status_transitions": {"paid_at": paid_at}, "metadata": {},
        "lines": {"object": "list", "data": [], "has_more": false},
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": subscription, "metadata": metadata}},
        "livemode": false,
    })
}

async fn populate(tracker: &Arc<Tracker>) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp();
    let mut story = Story {
        tracker: tracker.clone(),
        now,
        seq: 0,
    };
    let secret_a = "whsec_demo_lowbackability_7f3a91c2";
    let secret_b = "whsec_demo_flexusstudio_5e8d20b4";
    let a = tracker
        .add_client(ClientIn {
            name: "Low Back Ability".into(),
            domain: Some("lowbackability.com".into()),
            stripe_account: None,
            webhook_secret: Some(secret_a.into()),
            stripe_api_key: None,
        })
        .await?;
    let b = tracker
        .add_client(ClientIn {
            name: "Flexus Studio".into(),
            domain: Some("flexus.studio".into()),
            stripe_account: Some("acct_1DemoFlexusStudio".into()),
            webhook_secret: Some(secret_b.into()),
            stripe_api_key: None,
        })
        .await?;
    let link = |client: &Client, slug: &str, dest: &str, label: &str, promo: &[&str]| LinkIn {
        client: client.id.clone(),
        slug: slug.into(),
        destination: dest.into(),
        label: Some(label.into()),
        promo_codes: promo.iter().map(|p| p.to_string()).collect(),
    };
    let flexus1 = tracker
        .add_link(link(
            &a,
            "flexus1",
            "https://lowbackability.com/program",
            "Creator: Flexus (Instagram)",
            &["promo_FLEXUS10", "FLEXUS10"],
        ))
        .await?;
    let spring = tracker
        .add_link(link(
            &a,
            "spring-sale",
            "https://lowbackability.com/spring",
            "Newsletter: spring sale",
            &[],
        ))
        .await?;
    let podcast = tracker
        .add_link(link(
            &a,
            "creator-podcast",
            "https://lowbackability.com/pro",
            "Podcast sponsorship",
            &[],
        ))
        .await?;
    let yoga = tracker
        .add_link(link(
            &b,
            "yoga-week",
            "https://flexus.studio/week",
            "Campaign: yoga week",
            &[],
        ))
        .await?;
    let anna = tracker
        .add_link(link(
            &b,
            "coach-anna",
            "https://buy.stripe.com/test_demo_anna",
            "Coach Anna (Payment Link)",
            &[],
        ))
        .await?;

    // Clicks over eight weeks for client A, some from link-preview bots.
    let mut flexus_click = None;
    for day in (1..56).rev() {
        let d = day as f64;
        let c = story.click(&flexus1, d + 0.3, false).await?;
        if day == 3 {
            flexus_click = Some(c);
        }
        if day % 3 == 0 {
            story.click(&spring, d + 0.5, false).await?;
        }
        if day % 5 == 0 {
            story.click(&podcast, d + 0.7, false).await?;
            story.click(&flexus1, d + 0.71, true).await?;
        }
    }
    // Client B: sparse clicks far apart, to show the wider windows.
    story.click(&anna, 300.0, false).await?;
    story.click(&yoga, 150.0, false).await?;
    for day in [20.0, 12.0, 6.0, 2.0] {
        story.click(&yoga, day, false).await?;
    }

    let flexus_click = flexus_click.context("demo click")?;
    // 1. click id — checkout passes the click id as client_reference_id.
    story
        .send(
            &a,
            secret_a,
            "checkout.session.completed",
            now - 2 * DAY,
            checkout(
                "cs_test_demo_click",
                "pi_demo_click",
                4900,
                "usd",
                "cus_demo_jenny",
                "jenny@example.com",
                now - 2 * DAY,
                json!({"client_reference_id": flexus_click.id}),
            ),
        )
        .await?;
    // A failed signature (an old secret), held out of every total; the
    // sales after it verify, so the client shows ⚠️ rather than ❌.
    story
        .send(
            &a,
            "whsec_demo_rotated_out_0000",
            "payment_intent.succeeded",
            now - 3600,
            payment_intent(
                "pi_demo_forged",
                99900,
                "usd",
                "cus_demo_x",
                "x@lowbackability.com",
                json!({"link_slug": "flexus1"}),
            ),
        )
        .await?;
    // 2. link slug — metadata link_slug set at checkout; later partly refunded.
    story
        .send(
            &a,
            secret_a,
            "payment_intent.succeeded",
            now - 5 * DAY,
            payment_intent(
                "pi_demo_slug",
                2900,
                "usd",
                "cus_demo_omar",
                "omar@example.com",
                json!({"link_slug": "spring-sale"}),
            ),
        )
        .await?;
    story
        .send(&a, secret_a, "charge.refunded", now - DAY,
            json!({"id": "ch_demo_slug", "object": "charge", "amount": 2900, "amount_refunded": 900, "currency": "usd",
                   "payment_intent": "pi_demo_slug", "refunded": false, "paid": true, "livemode": false}))
        .await?;
    // 3. promotion code — the audience typed FLEXUS10 instead of clicking.
    story
        .send(
            &a,
            secret_a,
            "checkout.session.completed",
            now - 4 * DAY,
            checkout(
                "cs_test_demo_promo",
                "pi_demo_promo",
                4410,
                "usd",
                "cus_demo_lena",
                "lena@example.com",
                now - 4 * DAY,
                json!({"discounts": [{"coupon": null, "promotion_code": "promo_FLEXUS10"}]}),
            ),
        )
        .await?;
    // 4. customer history — a subscription whose renewal carries no metadata.
    story
        .send(
            &a,
            secret_a,
            "invoice.paid",
            now - 40 * DAY,
            invoice(
                "in_demo_sub_1",
                1900,
                "cus_demo_sam",
                "sam@example.com",
                "sub_demo_sam",
                "subscription_create",
                now - 40 * DAY,
                json!({"link_slug": "creator-podcast"}),
            ),
        )
        .await?;
    story
        .send(
            &a,
            secret_a,
            "invoice.paid",
            now - 10 * DAY,
            invoice(
                "in_demo_sub_2",
                1900,
                "cus_demo_sam",
                "sam@example.com",
                "sub_demo_sam",
                "subscription_cycle",
                now - 10 * DAY,
                json!({}),
            ),
        )
        .await?;
    // 5. primary window — no hints at all; the latest click of the last 60 days wins.
    story
        .send(
            &a,
            secret_a,
            "payment_intent.succeeded",
            now - DAY,
            payment_intent(
                "pi_demo_window",
                9900,
                "usd",
                "cus_demo_kai",
                "kai@example.com",
                json!({}),
            ),
        )
        .await?;
    // 6. fallback window — client B's latest earlier click is 75 days before the sale.
    story
        .send(
            &b,
            secret_b,
            "payment_intent.succeeded",
            now - 75 * DAY,
            payment_intent(
                "pi_demo_fallback",
                2500,
                "eur",
                "cus_demo_mia",
                "mia@example.de",
                json!({}),
            ),
        )
        .await?;
    // 7. any time — the only earlier click is 100 days before.
    story
        .send(
            &b,
            secret_b,
            "payment_intent.succeeded",
            now - 200 * DAY,
            payment_intent(
                "pi_demo_anytime",
                4900,
                "jpy",
                "cus_demo_yui",
                "yui@example.jp",
                json!({}),
            ),
        )
        .await?;
    // An orphan: a sale from before any click of client B.
    story
        .send(
            &b,
            secret_b,
            "payment_intent.succeeded",
            now - 400 * DAY,
            payment_intent(
                "pi_demo_orphan",
                12000,
                "jpy",
                "cus_demo_ren",
                "ren@example.jp",
                json!({}),
            ),
        )
        .await?;
    Ok(())
}
