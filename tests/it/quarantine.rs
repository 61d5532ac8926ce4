//! SPEC 2.3 step 5 and promise 2, tried as an attacker would: deliveries that
//! do not verify (unsigned, signed with another client's secret, or with a
//! secret the client has not added yet) of every event type salestrack reads,
//! against a verified one-time sale and a verified subscription. Afterwards
//! every verified conversion is exactly what it was and no total moved. Once
//! the quarantined events verify, they take effect exactly as if they had
//! arrived signed.

use serde_json::{json, Value};

use salestrack::domain::model::*;

use super::helpers::*;

const SHOP_SECRET: &str = "whsec_quarantine_shop_secret_00001";
const OTHER_SECRET: &str = "whsec_quarantine_other_secret_0002";
/// Signs deliveries the shop's endpoint sends before the shop adds it here.
const LATER_SECRET: &str = "whsec_quarantine_added_later_00003";
const SHOP_ACCOUNT: &str = "acct_1QuarantineShop01";

const DAY: i64 = 86_400;

/// The ids of one verified purchase that attacks aim at.
struct Target {
    tag: &'static str,
    payment_intent: &'static str,
    charge: &'static str,
    session: &'static str,
    customer: &'static str,
    subscription: Option<&'static str>,
    invoice: Option<&'static str>,
    amount: i64,
}

const ONE_TIME: Target = Target {
    tag: "once",
    payment_intent: "pi_3QuarOnceIntent0001",
    charge: "ch_3QuarOnceCharge0001",
    session: "cs_test_QuarOnceSession01",
    customer: "cus_QuarOnce01",
    subscription: None,
    invoice: None,
    amount: 5000,
};

const SUBSCRIPTION: Target = Target {
    tag: "sub",
    payment_intent: "pi_3QuarSubIntent00001",
    charge: "ch_3QuarSubCharge00001",
    session: "cs_test_QuarSubSession001",
    customer: "cus_QuarSub01",
    subscription: Some("sub_1QuarSubscription01"),
    invoice: Some("in_1QuarSubInvoice0001"),
    amount: 2000,
};

fn with_account(body: Vec<u8>, account: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&body).expect("event json");
    v["account"] = json!(account);
    serde_json::to_vec_pretty(&v).expect("json")
}

/// A pre-basil (2024-06-20) `invoice.paid`.
fn invoice_paid(
    id: &str,
    invoice: &str,
    amount: i64,
    billing_reason: &str,
    t: &Target,
    paid_at: i64,
    metadata: Value,
) -> Vec<u8> {
    event(
        id,
        "invoice.paid",
        "2024-06-20",
        paid_at,
        json!({
            "id": invoice, "object": "invoice",
            "amount_due": amount, "amount_paid": amount, "amount_remaining": 0,
            "billing_reason": billing_reason,
            "charge": t.charge, "payment_intent": t.payment_intent,
            "currency": "usd", "customer": t.customer,
            "customer_email": format!("{}@buyer.example", t.customer),
            "subscription": t.subscription,
            "subscription_details": {"metadata": metadata},
            "status": "paid",
            "status_transitions": {"paid_at": paid_at},
            "created": paid_at - 5,
        }),
    )
}

/// A basil (2025-03-31 on) `invoice.paid`: the subscription under
/// `parent.subscription_details`, the payment intent only in the expanded
/// `payments` list.
fn invoice_paid_basil(id: &str, invoice: &str, amount: i64, t: &Target, paid_at: i64) -> Vec<u8> {
    event(
        id,
        "invoice.paid",
        "2025-03-31.basil",
        paid_at,
        json!({
            "id": invoice, "object": "invoice",
            "amount_due": amount, "amount_paid": amount, "amount_remaining": 0,
            "billing_reason": "subscription_create",
            "currency": "usd", "customer": t.customer,
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": t.subscription.unwrap_or("sub_1QuarInvented000001"),
                "metadata": {}}},
            "payments": {"object": "list", "data": [{
                "object": "invoice_payment", "status": "paid",
                "payment": {"type": "payment_intent", "payment_intent": t.payment_intent}}]},
            "status": "paid",
            "status_transitions": {"paid_at": paid_at},
        }),
    )
}

fn invoice_payment_paid(id: &str, invoice: &str, t: &Target, at: i64) -> Vec<u8> {
    event(
        id,
        "invoice_payment.paid",
        "2025-03-31.basil",
        at,
        json!({
            "id": format!("inpay_{id}"), "object": "invoice_payment",
            "amount_paid": 1, "currency": "usd", "invoice": invoice, "is_default": true,
            "payment": {"type": "payment_intent", "payment_intent": t.payment_intent},
            "status": "paid",
        }),
    )
}

fn payment_intent(
    id: &str,
    t: &Target,
    amount: i64,
    invoice: Option<&str>,
    at: i64,
    metadata: Value,
) -> Vec<u8> {
    event(
        id,
        "payment_intent.succeeded",
        "2024-06-20",
        at,
        json!({
            "id": t.payment_intent, "object": "payment_intent",
            "amount": amount, "amount_received": amount, "currency": "usd",
            "customer": t.customer, "invoice": invoice, "latest_charge": t.charge,
            "metadata": metadata, "status": "succeeded",
        }),
    )
}

fn checkout(
    id: &str,
    t: &Target,
    mode: &str,
    amount: i64,
    invoice: Option<&str>,
    at: i64,
    metadata: Value,
) -> Vec<u8> {
    event(
        id,
        "checkout.session.completed",
        "2024-06-20",
        at,
        json!({
            "id": t.session, "object": "checkout.session", "mode": mode,
            "payment_status": "paid", "status": "complete",
            "amount_total": amount, "currency": "usd",
            "customer": t.customer,
            "customer_details": {"email": format!("{}@buyer.example", t.customer)},
            "invoice": invoice,
            "payment_intent": if mode == "payment" { json!(t.payment_intent) } else { Value::Null },
            "subscription": t.subscription,
            "metadata": metadata,
        }),
    )
}

fn charge_succeeded(
    id: &str,
    t: &Target,
    amount: i64,
    invoice: Option<&str>,
    at: i64,
    metadata: Value,
) -> Vec<u8> {
    event(
        id,
        "charge.succeeded",
        "2024-06-20",
        at,
        json!({
            "id": t.charge, "object": "charge", "amount": amount,
            "amount_captured": amount, "captured": true, "currency": "usd",
            "customer": t.customer, "invoice": invoice, "payment_intent": t.payment_intent,
            "metadata": metadata, "paid": true, "status": "succeeded",
        }),
    )
}

fn charge_refunded(id: &str, t: &Target, refunded: i64, at: i64) -> Vec<u8> {
    event(
        id,
        "charge.refunded",
        "2024-06-20",
        at,
        json!({
            "id": t.charge, "object": "charge", "amount": t.amount,
            "amount_captured": t.amount, "amount_refunded": refunded, "captured": true,
            "currency": "usd", "customer": t.customer, "invoice": t.invoice,
            "payment_intent": t.payment_intent, "refunded": refunded >= t.amount,
            "status": "succeeded",
        }),
    )
}

fn refund_created(id: &str, t: &Target, amount: i64, at: i64) -> Vec<u8> {
    event(
        id,
        "refund.created",
        "2025-03-31.basil",
        at,
        json!({
            "id": format!("re_{id}"), "object": "refund", "amount": amount,
            "charge": t.charge, "currency": "usd", "payment_intent": t.payment_intent,
            "status": "succeeded",
        }),
    )
}

fn dispute(id: &str, event_type: &str, t: &Target, status: &str, at: i64) -> Vec<u8> {
    event(
        id,
        event_type,
        "2024-06-20",
        at,
        json!({
            "id": format!("dp_1Quar{}", t.tag), "object": "dispute", "amount": t.amount,
            "charge": t.charge, "currency": "usd", "payment_intent": t.payment_intent,
            "reason": "fraudulent", "status": status,
        }),
    )
}

/// Every event type salestrack reads, aimed at `t` in the ways that changed
/// a verified sale before quarantine: invented invoices that would re-key it,
/// forged amounts, a stranger's click id, refunds, disputes, a forged trial.
fn attacks(t: &Target, variant: &str, evil_click: &str, at: i64) -> Vec<Vec<u8>> {
    let id = |n: u32| format!("evt_1Quar{}{variant}{n:02}", t.tag);
    let invented = |n: u32| format!("in_1Quar{}{variant}Invented{n:02}", t.tag);
    let stolen = json!({"salestrack_click_id": evil_click, "link_slug": "evil"});
    let mut all = vec![
        invoice_paid(&id(1), &invented(1), 1, "manual", t, at, json!({})),
        invoice_paid_basil(&id(2), &invented(2), 1, t, at),
        invoice_payment_paid(&id(3), &invented(3), t, at),
        payment_intent(&id(4), t, 1, Some(&invented(4)), at, json!({})),
        payment_intent(&id(5), t, 1, None, at, stolen.clone()),
        checkout(
            &id(6),
            t,
            "subscription",
            1,
            Some(&invented(6)),
            at,
            stolen.clone(),
        ),
        checkout(&id(7), t, "payment", 1, None, at, stolen.clone()),
        charge_succeeded(&id(8), t, 1, Some(&invented(8)), at, json!({})),
        charge_succeeded(&id(9), t, 1, None, at, stolen.clone()),
        charge_refunded(&id(10), t, t.amount, at),
        refund_created(&id(11), t, t.amount, at),
        dispute(&id(12), "charge.dispute.created", t, "needs_response", at),
        dispute(&id(13), "charge.dispute.closed", t, "lost", at + 1),
        // A forged trial before the first invoice would make it a renewal,
        // or a renewal the first sale.
        invoice_paid(
            &id(14),
            &invented(14),
            0,
            "subscription_create",
            t,
            at - 40 * DAY,
            json!({}),
        ),
    ];
    if let Some(invoice) = t.invoice {
        all.push(invoice_paid(
            &id(15),
            invoice,
            1,
            "subscription_create",
            t,
            at,
            stolen,
        ));
    }
    all
}

struct Shop {
    client: Client,
    other: Client,
    evil_click: String,
    /// When the verified sales were made (Unix seconds).
    sold_at: i64,
}

/// A shop with a creator's link and an attacker's link (with a click), a
/// second client, and the verified sales: a one-time checkout (with its
/// charge) and a subscription's first invoice and renewal.
async fn shop_with_verified_sales(app: &TestApp, sold_at: i64) -> Shop {
    let client = app
        .add_client_with(salestrack::domain::client::ClientIn {
            name: "quarantine-shop".into(),
            webhook_secret: Some(SHOP_SECRET.into()),
            stripe_account: Some(SHOP_ACCOUNT.into()),
            ..Default::default()
        })
        .await;
    let other = app.add_client("quarantine-other", Some(OTHER_SECRET)).await;
    app.add_link(&client, "creator").await;
    let evil = app.add_link(&client, "evil").await;
    let evil_click = app.add_click_at(&evil, sold_at - 3_600, false).await.id;
    let creator = json!({"link_slug": "creator"});
    let t = &ONE_TIME;
    let s = &SUBSCRIPTION;
    let verified = [
        checkout(
            "evt_1QuarBaseOnce01",
            t,
            "payment",
            t.amount,
            None,
            sold_at,
            creator.clone(),
        ),
        charge_succeeded("evt_1QuarBaseOnce02", t, t.amount, None, sold_at, json!({})),
        invoice_paid(
            "evt_1QuarBaseSub01",
            s.invoice.unwrap_or_default(),
            s.amount,
            "subscription_create",
            s,
            sold_at - 31 * DAY,
            creator.clone(),
        ),
        invoice_paid(
            "evt_1QuarBaseSub02",
            "in_1QuarSubRenewal0001",
            s.amount,
            "subscription_cycle",
            s,
            sold_at,
            json!({}),
        ),
    ];
    for body in verified {
        let resp = app.deliver(&client, SHOP_SECRET, body).await;
        assert_eq!(resp.status(), 200);
    }
    Shop {
        client,
        other,
        evil_click,
        sold_at,
    }
}

/// Everything a merchant's figures come from: the shop's conversions (merged
/// ones included, every field), their histories and the totals of both modes.
async fn figures(app: &TestApp, client: &Client) -> Value {
    let store = app.tracker.store();
    let conversions = store
        .list_conversions(&ConversionFilter {
            client_id: Some(client.id.clone()),
            ..Default::default()
        })
        .await
        .expect("conversions");
    let verified: Vec<&Conversion> = conversions.iter().filter(|c| c.verified).collect();
    let mut histories = Vec::new();
    for c in &verified {
        histories.push(store.list_history(&c.id).await.expect("history"));
    }
    let mut totals = Vec::new();
    for live in [false, true] {
        totals.push(
            store
                .currency_totals(Some(&client.id), live)
                .await
                .expect("totals"),
        );
    }
    json!({
        "verified": verified,
        "histories": histories,
        "totals": format!("{totals:?}"),
    })
}

async fn send(app: &TestApp, path: &str, body: Vec<u8>, secret: Option<&str>) {
    let signature = secret.map(|s| sign(&body, s));
    let resp = app.post_webhook(path, body, signature).await;
    assert_eq!(resp.status(), 400, "an unverified delivery is answered 400");
}

#[tokio::test]
async fn no_unverified_delivery_of_any_type_changes_a_verified_sale_or_a_total() {
    let app = spawn_app!();
    let shop = shop_with_verified_sales(&app, now_s() - 2 * DAY).await;
    let before = figures(&app, &shop.client).await;
    assert_eq!(
        before["verified"].as_array().map(Vec::len),
        Some(3),
        "three verified sales to defend: {before:#}"
    );
    let own_url = format!("/webhooks/stripe/{}", shop.client.id);
    for t in [&ONE_TIME, &SUBSCRIPTION] {
        let at = shop.sold_at + 60;
        for body in attacks(t, "Unsigned", &shop.evil_click, at) {
            send(&app, &own_url, body, None).await;
        }
        for body in attacks(t, "OtherSecret", &shop.evil_click, at) {
            send(&app, &own_url, body, Some(OTHER_SECRET)).await;
        }
        for body in attacks(t, "Later", &shop.evil_click, at) {
            send(&app, &own_url, body, Some(LATER_SECRET)).await;
        }
        for body in attacks(t, "Shared", &shop.evil_click, at) {
            let body = with_account(body, SHOP_ACCOUNT);
            send(&app, "/webhooks/stripe", body, Some(LATER_SECRET)).await;
        }
    }
    let after = figures(&app, &shop.client).await;
    assert_eq!(
        before, after,
        "verified sales changed by unverified deliveries"
    );

    // The quarantined sales are recorded, held out of totals.
    let unverified = app
        .tracker
        .store()
        .list_conversions(&ConversionFilter {
            client_id: Some(shop.client.id.clone()),
            unverified_only: true,
            ..Default::default()
        })
        .await
        .expect("unverified");
    assert!(
        !unverified.is_empty(),
        "forged sales are recorded, unverified"
    );

    // Genuine events, reprocessing and Auto-Fix leave the verified sales as
    // they are too (they once brought nothing back).
    app.tracker.autofix(None).await.expect("autofix");
    let events = app.events().await;
    for e in events
        .iter()
        .filter(|e| e.verification == Verification::Verified)
    {
        app.tracker.reprocess_event(e).await.expect("reprocess");
    }
    let again = figures(&app, &shop.client).await;
    assert_eq!(
        before["verified"].as_array().map(|a| a
            .iter()
            .map(|c| (
                c["id"].clone(),
                c["amount"].clone(),
                c["purchase_key"].clone(),
                c["link_id"].clone(),
                c["status"].clone()
            ))
            .collect::<Vec<_>>()),
        again["verified"].as_array().map(|a| a
            .iter()
            .map(|c| (
                c["id"].clone(),
                c["amount"].clone(),
                c["purchase_key"].clone(),
                c["link_id"].clone(),
                c["status"].clone()
            ))
            .collect::<Vec<_>>()),
    );
    assert_eq!(before["totals"], again["totals"]);
    let _ = shop.other;
}

/// The parts of a conversion that do not depend on when or in which
/// database it was made: ids of rows and links differ between two apps.
async fn comparable(app: &TestApp, client: &Client) -> Vec<Value> {
    let links = app
        .tracker
        .store()
        .list_links(Some(&client.id))
        .await
        .expect("links");
    let slug = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| links.iter().find(|l| &l.id == id))
            .map(|l| l.slug.clone())
    };
    let mut out: Vec<Value> = app
        .tracker
        .store()
        .list_conversions(&ConversionFilter {
            client_id: Some(client.id.clone()),
            ..Default::default()
        })
        .await
        .expect("conversions")
        .into_iter()
        .map(|c| {
            json!({
                "key": c.purchase_key, "link": slug(&c.link_id), "method": c.method,
                "amount": c.amount, "net": c.net_amount, "currency": c.currency,
                "status": c.status, "kind": c.kind, "verified": c.verified,
                "customer": c.customer, "subscription": c.subscription,
                "purchased_at": c.purchased_at,
            })
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

#[tokio::test]
async fn quarantined_events_once_verified_take_effect_as_if_they_had_arrived_signed() {
    // The shop's endpoint signs with a secret the shop has not added yet:
    // every attack event waits in quarantine; then the secret is added and
    // the stored events are verified again (`events reprocess --unverified`).
    let sold_at = now_s() - 2 * DAY;
    let late = spawn_app!();
    let shop = shop_with_verified_sales(&late, sold_at).await;
    let own_url = format!("/webhooks/stripe/{}", shop.client.id);
    let at = shop.sold_at + 60;
    let mut sequence = Vec::new();
    for t in [&ONE_TIME, &SUBSCRIPTION] {
        sequence.extend(attacks(t, "Late", &shop.evil_click, at));
    }
    for body in &sequence {
        send(&late, &own_url, body.clone(), Some(LATER_SECRET)).await;
    }
    late.tracker
        .add_secret(&shop.client.id, LATER_SECRET)
        .await
        .expect("add secret");
    let mut held: Vec<StoredEvent> = late
        .events()
        .await
        .into_iter()
        .filter(|e| e.verification == Verification::Unverified)
        .collect();
    held.sort_by_key(|e| e.id);
    assert_eq!(held.len(), sequence.len());
    for e in &held {
        assert!(late.tracker.reverify_event(e).await.expect("reverify"));
    }

    // The same events, signed from the start, in the same order.
    let signed = spawn_app!();
    let twin = shop_with_verified_sales(&signed, sold_at).await;
    signed
        .tracker
        .add_secret(&twin.client.id, LATER_SECRET)
        .await
        .expect("add secret");
    for t in [&ONE_TIME, &SUBSCRIPTION] {
        for body in attacks(t, "Late", &shop.evil_click, at) {
            // The click ids differ between the two databases: the twin's
            // events name its own click.
            let body = String::from_utf8(body)
                .expect("utf8")
                .replace(&shop.evil_click, &twin.evil_click)
                .into_bytes();
            let resp = signed.deliver(&twin.client, LATER_SECRET, body).await;
            assert_eq!(resp.status(), 200);
        }
    }
    let verified_late = comparable(&late, &shop.client).await;
    let signed_at_once = comparable(&signed, &twin.client).await;
    assert_eq!(verified_late, signed_at_once);
    assert!(
        verified_late.iter().all(|c| c["verified"] == json!(true)),
        "every conversion is verified now: {verified_late:#?}"
    );
}

/// Stripe scopes an event id to its account, else to the endpoint that
/// receives it: one client's delivery never stands in for another's.
#[tokio::test]
async fn one_clients_event_never_swallows_another_clients_genuine_event_with_the_same_id() {
    let app = spawn_app!();
    let shop = shop_with_verified_sales(&app, now_s() - 2 * DAY).await;
    let t = &ONE_TIME;
    let at = shop.sold_at + 600;
    let body = |pi: &'static str| {
        payment_intent(
            "evt_1QuarSameId000001",
            &Target {
                payment_intent: pi,
                ..ONE_TIME
            },
            4200,
            None,
            at,
            json!({}),
        )
    };
    // The other client, with its own secret, on the shared URL, naming the
    // shop's account: verified, and the other client's own.
    let first = with_account(body("pi_3QuarOtherClient001"), SHOP_ACCOUNT);
    let resp = app
        .post_webhook(
            "/webhooks/stripe",
            first.clone(),
            Some(sign(&first, OTHER_SECRET)),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Then the shop's genuine event with the same id and account.
    let genuine = with_account(body("pi_3QuarShopGenuine0001"), SHOP_ACCOUNT);
    let resp = app.deliver(&shop.client, SHOP_SECRET, genuine).await;
    assert_eq!(resp.status(), 200);
    let conversions = app.conversions().await;
    let shop_sale = conversions
        .iter()
        .find(|c| c.purchase_key == "pi_3QuarShopGenuine0001")
        .unwrap_or_else(|| panic!("the shop's sale was swallowed: {conversions:#?}"));
    assert_eq!(shop_sale.client_id, shop.client.id);
    assert!(shop_sale.verified);

    // An unsigned delivery to the shop's URL does not take the id from the
    // other client's genuine event either.
    let pi_body = |event: &str, pi: &'static str| {
        payment_intent(
            event,
            &Target {
                payment_intent: pi,
                ..ONE_TIME
            },
            1300,
            None,
            at,
            json!({}),
        )
    };
    send(
        &app,
        &format!("/webhooks/stripe/{}", shop.client.id),
        pi_body("evt_1QuarSameId000002", "pi_3QuarForgedFirst0001"),
        None,
    )
    .await;
    let resp = app
        .deliver(
            &shop.other,
            OTHER_SECRET,
            pi_body("evt_1QuarSameId000002", "pi_3QuarOtherGenuine001"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let conversions = app.conversions().await;
    let other_sale = conversions
        .iter()
        .find(|c| c.purchase_key == "pi_3QuarOtherGenuine001")
        .unwrap_or_else(|| panic!("the other client's sale was swallowed: {conversions:#?}"));
    assert_eq!(other_sale.client_id, shop.other.id);
    assert!(other_sale.verified);
    let _ = t;
}

/// Issue 14 §3: strangers cannot fill the disk through a webhook URL. Every
/// unverified delivery is recorded, but past the URL's budget (8 MiB at
/// once by default) its body is kept as its first 4 KiB with its length and
/// SHA-256; a later delivery of the event that verifies stores it whole.
#[tokio::test]
async fn unverified_bodies_past_the_budget_are_kept_truncated_and_a_verified_delivery_restores_them(
) {
    let app = spawn_app!();
    let shop = app.add_client("budget-shop", Some(SHOP_SECRET)).await;
    let url = format!("/webhooks/stripe/{}", shop.id);
    let padding = "p".repeat(900 * 1024);
    let body_of = |n: usize| {
        event(
            &format!("evt_1QuarBudget{n:04}"),
            "customer.created",
            "2024-06-20",
            now_s(),
            json!({"id": format!("cus_budget{n}"), "object": "customer", "description": padding}),
        )
    };
    let sent = 12;
    for n in 0..sent {
        send(&app, &url, body_of(n), None).await;
    }
    let mut events = app.events().await;
    events.sort_by_key(|e| e.id);
    assert_eq!(events.len(), sent, "every delivery is recorded");
    let whole = events.iter().filter(|e| e.body.len() > 900 * 1024).count();
    let cut: Vec<&StoredEvent> = events.iter().filter(|e| e.body.len() == 4096).collect();
    assert_eq!(whole + cut.len(), sent);
    assert!((8..=9).contains(&whole), "{whole} stored whole");
    let last = cut.last().expect("a truncated body");
    assert!(
        last.headers.contains("x-salestrack-truncated") && last.headers.contains("sha256 "),
        "{}",
        last.headers
    );

    // The event's genuine, signed delivery stores its body whole.
    let n = sent - 1;
    let resp = app.deliver(&shop, SHOP_SECRET, body_of(n)).await;
    assert_eq!(resp.status(), 200);
    let stored = app
        .tracker
        .store()
        .get_event(last.id)
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(stored.verification, Verification::Verified);
    assert!(stored.body.len() > 900 * 1024);
}
