//! The fixture stories (SPEC 2.6 purchase facts, 2.9 money after the sale):
//! one payment is one conversion, whatever order Stripe delivers its events in.

use std::sync::Arc;

use salestrack::domain::model::*;
use salestrack::domain::view::ConversionOut;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "whsec_test_stories_secret_0001";

// Story A
const A_CHECKOUT: &str = "checkout_session_completed_payment.json";
const A_PI: &str = "payment_intent_succeeded.json";
const A_CHARGE: &str = "charge_succeeded.json";
const A_PARTIAL: &str = "charge_refunded_partial.json";
const A_REFUND: &str = "refund_created.json";
const A_FULL: &str = "charge_refunded_full.json";
const A_PAYMENT_INTENT: &str = "pi_3uTIcnFq4ZkT2mWbKZS1evdw";

// Story B
const B_CHECKOUT: &str = "checkout_session_completed_subscription.json";
const B_SUB: &str = "customer_subscription_created.json";
const B_FIRST: &str = "invoice_paid_basil_subscription_create.json";
const B_INPAY: &str = "invoice_payment_paid_basil.json";
const B_CYCLE: &str = "invoice_paid_basil_subscription_cycle.json";
const B_CREDIT: &str = "credit_note_created.json";
const B_FIRST_INVOICE: &str = "in_1RRHItFq4ZkT2mWbQWXOzHp6";
const B_CYCLE_INVOICE: &str = "in_1vmS3dFq4ZkT2mWbwpcRpoix";
const B_FIRST_PI: &str = "pi_3H3mbEFq4ZkT2mWb9K3el8oY";
const B_CUSTOMER: &str = "cus_afr1lSG2oN4tSU";

// Story D
const D_CREATED: &str = "charge_dispute_created.json";
const D_CLOSED: &str = "charge_dispute_closed.json";
const D_CHARGE: &str = "ch_3dG8X4Fq4ZkT2mWb0iBYdT2V";
const D_PAYMENT_INTENT: &str = "pi_3dG8X4Fq4ZkT2mWbgkI4DKLL";

/// A fresh app with one client (with a secret) and one link (`None`: the
/// suite's database is not available, see `spawn_app!`).
async fn app_with_link(slug: &str) -> Option<(TestApp, Client)> {
    let app = spawn_app!();
    let client = app.add_client("storyshop", Some(SECRET)).await;
    app.add_link(&client, slug).await;
    Some((app, client))
}

/// Signs and delivers `body`; every verified delivery is answered 200.
async fn send(app: &TestApp, client: &Client, what: &str, body: Vec<u8>) {
    let resp = app.deliver(client, SECRET, body).await;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{what}: {text}");
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: JSON answer: {text}"));
    assert_eq!(json["received"], json!(true), "{what}: {text}");
}

/// Sends fixtures by name, in order, each signed over its exact bytes.
async fn send_fixtures(app: &TestApp, client: &Client, names: &[&str]) {
    for name in names {
        send(app, client, name, fixture(name)).await;
    }
}

fn by_key<'a>(conversions: &'a [ConversionOut], key: &str) -> &'a ConversionOut {
    conversions
        .iter()
        .find(|c| c.purchase_key == key)
        .unwrap_or_else(|| panic!("no conversion keyed {key}: {conversions:#?}"))
}

/// Every stored event of the app is verified and was processed (or ignored).
async fn assert_all_processed(app: &TestApp, expected_events: usize, order: &[&str]) {
    let events = app.events().await;
    assert_eq!(events.len(), expected_events, "{order:?}");
    for e in &events {
        assert_eq!(e.verification, Verification::Verified, "{order:?}: {e:#?}");
        assert!(
            matches!(e.processing, Processing::Processed | Processing::Ignored),
            "{order:?}: {e:#?}"
        );
    }
}

// ---- Story A: a one-time Checkout purchase, then two refunds ----------------

const STORY_A_ORDERS: &[[&str; 6]] = &[
    // The natural order.
    [A_CHECKOUT, A_PI, A_CHARGE, A_PARTIAL, A_REFUND, A_FULL],
    // Refunds first.
    [A_FULL, A_REFUND, A_PARTIAL, A_CHARGE, A_PI, A_CHECKOUT],
    [A_PARTIAL, A_REFUND, A_FULL, A_CHECKOUT, A_PI, A_CHARGE],
    // The charge before everything.
    [A_CHARGE, A_FULL, A_PARTIAL, A_CHECKOUT, A_REFUND, A_PI],
    [A_CHARGE, A_PI, A_PARTIAL, A_FULL, A_REFUND, A_CHECKOUT],
    // The payment intent first, the session in the middle.
    [A_PI, A_PARTIAL, A_CHECKOUT, A_FULL, A_CHARGE, A_REFUND],
    // The refund object first, the full refund before the partial one.
    [A_REFUND, A_FULL, A_PI, A_PARTIAL, A_CHARGE, A_CHECKOUT],
];

fn assert_story_a_settled(conversions: &[ConversionOut], client: &Client, order: &[&str]) {
    assert_eq!(conversions.len(), 1, "{order:?}: {conversions:#?}");
    let c = &conversions[0];
    assert_eq!(c.client_id, client.id, "{order:?}");
    assert_eq!(c.purchase_key, A_PAYMENT_INTENT, "{order:?}");
    assert_eq!(c.amount, 4900, "{order:?}");
    assert_eq!(c.currency, "usd", "{order:?}");
    assert_eq!(c.link_slug.as_deref(), Some("spring-sale"), "{order:?}");
    assert_eq!(c.method, Some(Method::LinkSlug), "{order:?}");
    assert_eq!(c.net_amount, 0, "{order:?}");
    assert_eq!(c.status, ConversionStatus::Refunded, "{order:?}");
    assert_eq!(c.kind, ConversionKind::New, "{order:?}");
    assert!(c.verified, "{order:?}");
    assert!(!c.livemode, "{order:?}");
    assert_eq!(
        c.customer.as_deref(),
        Some("cus_nfyyizktUd4PRr"),
        "{order:?}"
    );
}

#[tokio::test]
async fn story_a_makes_one_refunded_conversion_for_spring_sale_in_every_order() {
    for order in STORY_A_ORDERS {
        let Some((app, client)) = app_with_link("spring-sale").await else {
            return;
        };
        send_fixtures(&app, &client, order).await;
        assert_story_a_settled(&app.conversions().await, &client, order);
        assert_all_processed(&app, 6, order).await;
    }
}

#[tokio::test]
async fn story_a_after_only_the_partial_refund_is_partially_refunded_with_3400_left() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(&app, &client, &[A_CHECKOUT, A_PI, A_CHARGE]).await;
    let paid = app.conversions().await;
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].status, ConversionStatus::Paid);
    assert_eq!(paid[0].net_amount, 4900);

    send_fixtures(&app, &client, &[A_PARTIAL]).await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].id, paid[0].id);
    assert_eq!(conversions[0].amount, 4900);
    assert_eq!(conversions[0].net_amount, 3400);
    assert_eq!(conversions[0].status, ConversionStatus::PartiallyRefunded);
}

#[tokio::test]
async fn story_a_refund_created_never_subtracts_the_partial_refund_twice() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(&app, &client, &[A_CHECKOUT, A_PARTIAL, A_REFUND]).await;
    let after_refund = app.conversions().await;
    assert_eq!(after_refund.len(), 1);
    assert_eq!(after_refund[0].net_amount, 3400);
    assert_eq!(after_refund[0].status, ConversionStatus::PartiallyRefunded);

    // The refund object arriving first, and both redelivered, change nothing.
    let Some((app2, client2)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(
        &app2,
        &client2,
        &[A_REFUND, A_PARTIAL, A_PI, A_REFUND, A_PARTIAL],
    )
    .await;
    let conversions = app2.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].net_amount, 3400);
    assert_eq!(conversions[0].status, ConversionStatus::PartiallyRefunded);
    assert_eq!(
        app2.events().await.len(),
        3,
        "redeliveries are not stored twice"
    );
}

#[tokio::test]
async fn story_a_an_older_partial_refund_arriving_after_the_full_one_does_not_undo_it() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(&app, &client, &[A_PI, A_FULL]).await;
    assert_eq!(app.conversions().await[0].net_amount, 0);

    send_fixtures(&app, &client, &[A_PARTIAL]).await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].net_amount, 0);
    assert_eq!(conversions[0].status, ConversionStatus::Refunded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn story_a_delivered_all_at_once_still_makes_one_conversion() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    let app = Arc::new(app);
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    let mut tasks = Vec::new();
    for name in [A_CHECKOUT, A_PI, A_CHARGE, A_PARTIAL, A_REFUND, A_FULL] {
        let (app, client, barrier) = (app.clone(), client.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let body = fixture(name);
            barrier.wait().await;
            let status = app.deliver(&client, SECRET, body).await.status().as_u16();
            (name, status)
        }));
    }
    for task in tasks {
        let (name, status) = task.await.expect("task");
        assert_eq!(status, 200, "{name}");
    }

    let order = ["concurrent"];
    assert_story_a_settled(&app.conversions().await, &client, &order);
    assert_all_processed(&app, 6, &order).await;
}

// ---- Story B: a subscription through Checkout (API 2025-03-31.basil) ---------

const STORY_B_ORDERS: &[[&str; 6]] = &[
    // The natural order.
    [B_SUB, B_CHECKOUT, B_FIRST, B_INPAY, B_CYCLE, B_CREDIT],
    // The renewal before the first invoice and before the session.
    [B_CYCLE, B_FIRST, B_CHECKOUT, B_INPAY, B_SUB, B_CREDIT],
    [B_SUB, B_CYCLE, B_CREDIT, B_CHECKOUT, B_INPAY, B_FIRST],
    // Everything backwards.
    [B_CREDIT, B_CYCLE, B_INPAY, B_FIRST, B_CHECKOUT, B_SUB],
    // The invoice payment link first.
    [B_INPAY, B_CHECKOUT, B_CYCLE, B_CREDIT, B_SUB, B_FIRST],
    // The session before its invoice, the renewal last.
    [B_CHECKOUT, B_INPAY, B_FIRST, B_SUB, B_CREDIT, B_CYCLE],
];

fn assert_story_b_settled(conversions: &[ConversionOut], client: &Client, order: &[&str]) {
    assert_eq!(conversions.len(), 2, "{order:?}: {conversions:#?}");
    for c in conversions {
        assert_eq!(c.client_id, client.id, "{order:?}");
        assert_eq!(c.amount, 1900, "{order:?}");
        assert_eq!(
            c.net_amount, 1900,
            "{order:?}: a credit note moves no money"
        );
        assert_eq!(c.currency, "usd", "{order:?}");
        assert_eq!(
            c.link_slug.as_deref(),
            Some("creator-podcast"),
            "{order:?}: {c:#?}"
        );
        assert_eq!(c.status, ConversionStatus::Paid, "{order:?}");
        assert_eq!(c.customer.as_deref(), Some(B_CUSTOMER), "{order:?}");
        assert!(c.verified, "{order:?}");
    }
    assert_eq!(
        by_key(conversions, B_FIRST_INVOICE).kind,
        ConversionKind::New,
        "{order:?}"
    );
    assert_eq!(
        by_key(conversions, B_CYCLE_INVOICE).kind,
        ConversionKind::Renewal,
        "{order:?}"
    );
}

#[tokio::test]
async fn story_b_makes_a_new_sale_and_a_renewal_for_creator_podcast_in_every_order() {
    for order in STORY_B_ORDERS {
        let Some((app, client)) = app_with_link("creator-podcast").await else {
            return;
        };
        send_fixtures(&app, &client, order).await;
        assert_story_b_settled(&app.conversions().await, &client, order);
        assert_all_processed(&app, 6, order).await;
    }
}

#[tokio::test]
async fn story_b_checkout_session_alone_counts_no_sale() {
    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };
    send_fixtures(&app, &client, &[B_CHECKOUT, B_SUB, B_CREDIT]).await;
    assert!(app.conversions().await.is_empty());

    send_fixtures(&app, &client, &[B_FIRST]).await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].purchase_key, B_FIRST_INVOICE);
    assert_eq!(conversions[0].link_slug.as_deref(), Some("creator-podcast"));
}

/// A basil `payment_intent.succeeded` for the first invoice of story B: no
/// `invoice` field, so it cannot tell by itself that an invoice owns it.
fn basil_first_payment_intent() -> Vec<u8> {
    event(
        "evt_1BasilPiForFirstInvoice01",
        "payment_intent.succeeded",
        "2025-03-31.basil",
        1_746_435_663,
        json!({
            "id": B_FIRST_PI,
            "object": "payment_intent",
            "amount": 1900,
            "amount_received": 1900,
            "currency": "usd",
            "customer": B_CUSTOMER,
            "description": "Subscription creation",
            "latest_charge": "ch_3H3mbEFq4ZkT2mWb1x9sQxQq",
            "livemode": false,
            "metadata": {},
            "receipt_email": null,
            "status": "succeeded",
        }),
    )
}

async fn assert_one_sale_for_the_first_invoice(app: &TestApp, client: &Client, order: &str) {
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{order}: {conversions:#?}");
    let c = &conversions[0];
    assert_eq!(c.client_id, client.id);
    assert_eq!(c.purchase_key, B_FIRST_INVOICE, "{order}");
    assert_eq!(c.amount, 1900, "{order}");
    assert_eq!(c.kind, ConversionKind::New, "{order}");
    assert_eq!(c.link_slug.as_deref(), Some("creator-podcast"), "{order}");
    assert!(c.verified, "{order}");
}

#[tokio::test]
async fn a_basil_payment_intent_that_turns_out_to_pay_an_invoice_is_one_sale_keyed_by_the_invoice()
{
    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };
    send(&app, &client, "basil pi", basil_first_payment_intent()).await;
    let early = app.conversions().await;
    assert!(early.len() <= 1, "{early:#?}");

    send_fixtures(&app, &client, &[B_FIRST, B_INPAY]).await;

    assert_one_sale_for_the_first_invoice(&app, &client, "pi, invoice, invoice_payment").await;
}

#[tokio::test]
async fn a_basil_payment_intent_after_its_invoice_and_link_is_still_one_sale() {
    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };
    send_fixtures(&app, &client, &[B_INPAY, B_FIRST]).await;
    send(&app, &client, "basil pi", basil_first_payment_intent()).await;
    assert_one_sale_for_the_first_invoice(&app, &client, "invoice_payment, invoice, pi").await;

    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };
    send_fixtures(&app, &client, &[B_FIRST, B_INPAY]).await;
    send(&app, &client, "basil pi", basil_first_payment_intent()).await;
    assert_one_sale_for_the_first_invoice(&app, &client, "invoice, invoice_payment, pi").await;
}

#[tokio::test]
async fn a_basil_payment_intent_linked_before_its_invoice_arrives_is_one_sale() {
    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };
    send(&app, &client, "basil pi", basil_first_payment_intent()).await;
    send_fixtures(&app, &client, &[B_INPAY, B_FIRST, B_CHECKOUT]).await;
    assert_one_sale_for_the_first_invoice(&app, &client, "pi, invoice_payment, invoice, checkout")
        .await;
}

// ---- Before basil: invoices name their subscription and payment intent ------

const PRE_INVOICE: &str = "in_1PreBasilStoryInvoice01";
const PRE_PI: &str = "pi_1PreBasilStoryPayInt01";
const PRE_CHARGE: &str = "ch_1PreBasilStoryCharge01";
const PRE_CUSTOMER: &str = "cus_PreBasilStory01";

fn pre_basil_invoice_paid() -> Vec<u8> {
    event(
        "evt_1PreBasilStoryInvPaid01",
        "invoice.paid",
        "2024-06-20",
        1_718_900_005,
        json!({
            "id": PRE_INVOICE,
            "object": "invoice",
            "amount_due": 2900,
            "amount_paid": 2900,
            "amount_remaining": 0,
            "billing_reason": "subscription_create",
            "charge": PRE_CHARGE,
            "collection_method": "charge_automatically",
            "created": 1_718_900_000,
            "currency": "usd",
            "customer": PRE_CUSTOMER,
            "customer_email": "pat.doe@example.com",
            "discount": null,
            "discounts": [],
            "lines": {"object": "list", "data": [], "has_more": false},
            "livemode": false,
            "metadata": {},
            "paid": true,
            "payment_intent": PRE_PI,
            "status": "paid",
            "status_transitions": {"paid_at": 1_718_900_003},
            "subscription": "sub_1PreBasilStorySub0001",
            "subscription_details": {"metadata": {"link_slug": "legacy-plan"}},
            "total": 2900,
        }),
    )
}

fn pre_basil_payment_intent() -> Vec<u8> {
    event(
        "evt_1PreBasilStoryPiSucc01",
        "payment_intent.succeeded",
        "2024-06-20",
        1_718_900_004,
        json!({
            "id": PRE_PI,
            "object": "payment_intent",
            "amount": 2900,
            "amount_received": 2900,
            "currency": "usd",
            "customer": PRE_CUSTOMER,
            "invoice": PRE_INVOICE,
            "latest_charge": PRE_CHARGE,
            "livemode": false,
            "metadata": {},
            "status": "succeeded",
        }),
    )
}

fn pre_basil_charge() -> Vec<u8> {
    event(
        "evt_1PreBasilStoryChSucc01",
        "charge.succeeded",
        "2024-06-20",
        1_718_900_004,
        json!({
            "id": PRE_CHARGE,
            "object": "charge",
            "amount": 2900,
            "amount_captured": 2900,
            "amount_refunded": 0,
            "billing_details": {"email": "pat.doe@example.com"},
            "currency": "usd",
            "customer": PRE_CUSTOMER,
            "invoice": PRE_INVOICE,
            "livemode": false,
            "metadata": {},
            "paid": true,
            "payment_intent": PRE_PI,
            "status": "succeeded",
        }),
    )
}

#[tokio::test]
async fn a_pre_basil_invoice_and_its_payment_intent_make_one_sale_linked_through_subscription_details(
) {
    let orders: [&[&str]; 4] = [
        &["invoice", "pi"],
        &["pi", "invoice"],
        &["charge", "pi", "invoice"],
        &["pi", "charge", "invoice"],
    ];
    for order in orders {
        let Some((app, client)) = app_with_link("legacy-plan").await else {
            return;
        };
        for what in order {
            let body = match *what {
                "invoice" => pre_basil_invoice_paid(),
                "pi" => pre_basil_payment_intent(),
                _ => pre_basil_charge(),
            };
            send(&app, &client, what, body).await;
        }
        let conversions = app.conversions().await;
        assert_eq!(conversions.len(), 1, "{order:?}: {conversions:#?}");
        let c = &conversions[0];
        assert_eq!(c.purchase_key, PRE_INVOICE, "{order:?}");
        assert_eq!(c.amount, 2900, "{order:?}");
        assert_eq!(c.currency, "usd", "{order:?}");
        assert_eq!(c.kind, ConversionKind::New, "{order:?}");
        assert_eq!(c.link_slug.as_deref(), Some("legacy-plan"), "{order:?}");
        assert_eq!(c.method, Some(Method::LinkSlug), "{order:?}");
        assert_eq!(c.customer.as_deref(), Some(PRE_CUSTOMER), "{order:?}");
    }
}

#[tokio::test]
async fn a_pre_basil_payment_intent_naming_an_invoice_counts_nothing_by_itself() {
    let Some((app, client)) = app_with_link("legacy-plan").await else {
        return;
    };
    send(&app, &client, "pi", pre_basil_payment_intent()).await;
    send(&app, &client, "charge", pre_basil_charge()).await;
    assert!(
        app.conversions().await.is_empty(),
        "the invoice carries the sale"
    );
}

// ---- Story D: a dispute that arrives before its sale ----------------------

fn story_d_charge_succeeded() -> Vec<u8> {
    event(
        "evt_1StoryDChargeSucceeded1",
        "charge.succeeded",
        "2026-07-29.dahlia",
        1_787_000_000,
        json!({
            "id": D_CHARGE,
            "object": "charge",
            "amount": 9900,
            "amount_captured": 9900,
            "amount_refunded": 0,
            "billing_details": {"email": "casey@example.com"},
            "captured": true,
            "currency": "usd",
            "customer": "cus_StoryDCustomer1",
            "disputed": false,
            "invoice": null,
            "livemode": false,
            "metadata": {},
            "paid": true,
            "payment_intent": D_PAYMENT_INTENT,
            "refunded": false,
            "status": "succeeded",
        }),
    )
}

#[tokio::test]
async fn story_d_a_lost_dispute_that_arrived_before_the_sale_is_applied_when_it_arrives() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(&app, &client, &[D_CREATED, D_CLOSED]).await;
    assert!(
        app.conversions().await.is_empty(),
        "a dispute alone is no sale"
    );
    let events = app.events().await;
    assert_eq!(events.len(), 2);
    assert!(
        events.iter().all(|e| e.processing == Processing::Processed),
        "{events:#?}"
    );

    send(&app, &client, "charge", story_d_charge_succeeded()).await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    let c = &conversions[0];
    assert_eq!(c.purchase_key, D_PAYMENT_INTENT);
    assert_eq!(c.amount, 9900);
    assert_eq!(c.currency, "usd");
    assert_eq!(c.status, ConversionStatus::DisputeLost);
}

#[tokio::test]
async fn story_d_the_latest_dispute_state_wins_whatever_the_arrival_order() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send_fixtures(&app, &client, &[D_CLOSED]).await;
    send(&app, &client, "charge", story_d_charge_succeeded()).await;
    send_fixtures(&app, &client, &[D_CREATED]).await;
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].status, ConversionStatus::DisputeLost);

    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    send(&app, &client, "charge", story_d_charge_succeeded()).await;
    assert_eq!(app.conversions().await[0].status, ConversionStatus::Paid);
    send_fixtures(&app, &client, &[D_CREATED]).await;
    assert_eq!(
        app.conversions().await[0].status,
        ConversionStatus::Disputed
    );
    send_fixtures(&app, &client, &[D_CLOSED]).await;
    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    assert_eq!(conversions[0].status, ConversionStatus::DisputeLost);
}

// ---- Currencies, live mode, trials -----------------------------------------

#[tokio::test]
async fn a_zero_decimal_live_sale_keeps_its_amount_currency_and_livemode() {
    let Some((app, client)) = app_with_link("spring-sale").await else {
        return;
    };
    let mut body: Value = serde_json::from_slice(&event(
        "evt_1LiveJpySale000000001",
        "payment_intent.succeeded",
        "2026-07-29.dahlia",
        1_786_400_000,
        json!({
            "id": "pi_1LiveJpySale00000001",
            "object": "payment_intent",
            "amount": 4900,
            "amount_received": 4900,
            "currency": "jpy",
            "customer": "cus_LiveJpyCustomer1",
            "latest_charge": "ch_1LiveJpySale00000001",
            "livemode": true,
            "metadata": {"link_slug": "spring-sale"},
            "status": "succeeded",
        }),
    ))
    .unwrap();
    body["livemode"] = json!(true);
    send(
        &app,
        &client,
        "jpy",
        serde_json::to_vec_pretty(&body).unwrap(),
    )
    .await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1);
    let c = &conversions[0];
    assert_eq!(c.amount, 4900, "JPY has no minor unit: 4900 is ¥4,900");
    assert_eq!(c.net_amount, 4900);
    assert_eq!(c.currency, "jpy");
    assert!(c.livemode);
    assert_eq!(c.link_slug.as_deref(), Some("spring-sale"));
    let events = app.events().await;
    assert_eq!(events[0].livemode, Some(true));
}

/// A basil `invoice.paid` of the trial subscription.
fn trial_invoice(
    event_id: &str,
    invoice: &str,
    amount: i64,
    billing_reason: &str,
    at: i64,
) -> Vec<u8> {
    event(
        event_id,
        "invoice.paid",
        "2025-03-31.basil",
        at,
        json!({
            "id": invoice,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": amount,
            "amount_remaining": 0,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": at - 2,
            "currency": "usd",
            "customer": "cus_TrialCustomer001",
            "customer_email": "trial.user@example.com",
            "discounts": [],
            "lines": {"object": "list", "data": [], "has_more": false},
            "livemode": false,
            "metadata": {},
            "parent": {
                "quote_details": null,
                "subscription_details": {
                    "metadata": {"link_slug": "creator-podcast"},
                    "subscription": "sub_1TrialSubscription01",
                },
                "type": "subscription_details",
            },
            "status": "paid",
            "status_transitions": {"paid_at": at - 1},
            "total": amount,
        }),
    )
}

#[tokio::test]
async fn a_trials_zero_invoice_is_answered_200_and_recorded_as_a_trial_start_of_zero() {
    let Some((app, client)) = app_with_link("creator-podcast").await else {
        return;
    };

    send(
        &app,
        &client,
        "trial",
        trial_invoice(
            "evt_1TrialInvoicePaid0001",
            "in_1TrialInvoice000001",
            0,
            "subscription_create",
            1_750_000_000,
        ),
    )
    .await;

    let conversions = app.conversions().await;
    assert_eq!(conversions.len(), 1, "{conversions:#?}");
    let c = &conversions[0];
    assert_eq!(c.purchase_key, "in_1TrialInvoice000001");
    assert_eq!(c.kind, ConversionKind::TrialStart);
    assert_eq!(c.amount, 0);
    assert_eq!(c.net_amount, 0);
    assert_eq!(c.link_slug.as_deref(), Some("creator-podcast"));
    assert!(c.verified);
}

#[tokio::test]
async fn the_first_paid_invoice_after_a_trial_is_a_new_sale_not_a_renewal_in_every_order() {
    // The trial, fourteen days later the first charged cycle, a month later
    // a real renewal.
    let trial = || {
        trial_invoice(
            "evt_1TrialInvoicePaid0001",
            "in_1TrialInvoice000001",
            0,
            "subscription_create",
            1_750_000_000,
        )
    };
    let first = || {
        trial_invoice(
            "evt_1TrialFirstPaid000001",
            "in_1TrialFirstPaid00001",
            1900,
            "subscription_cycle",
            1_751_209_600,
        )
    };
    let renewal = || {
        trial_invoice(
            "evt_1TrialRenewal00000001",
            "in_1TrialRenewal000001",
            1900,
            "subscription_cycle",
            1_753_801_600,
        )
    };
    let orders: [[&str; 3]; 6] = [
        ["trial", "first", "renewal"],
        ["trial", "renewal", "first"],
        ["first", "trial", "renewal"],
        ["first", "renewal", "trial"],
        ["renewal", "trial", "first"],
        ["renewal", "first", "trial"],
    ];
    for order in orders {
        let Some((app, client)) = app_with_link("creator-podcast").await else {
            return;
        };
        for what in order {
            let body = match what {
                "trial" => trial(),
                "first" => first(),
                _ => renewal(),
            };
            send(&app, &client, what, body).await;
        }
        let conversions = app.conversions().await;
        assert_eq!(conversions.len(), 3, "{order:?}: {conversions:#?}");
        assert_eq!(
            by_key(&conversions, "in_1TrialInvoice000001").kind,
            ConversionKind::TrialStart,
            "{order:?}"
        );
        assert_eq!(
            by_key(&conversions, "in_1TrialFirstPaid00001").kind,
            ConversionKind::New,
            "{order:?}"
        );
        assert_eq!(
            by_key(&conversions, "in_1TrialRenewal000001").kind,
            ConversionKind::Renewal,
            "{order:?}"
        );
    }
}
