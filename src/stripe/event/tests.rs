//! Tests of event parsing: every fixture, every API shape, bad input.

use super::*;
use serde_json::json;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/stripe/", $name, ".json"))
    };
}

fn facts_of(body: &str) -> Result<EventFacts, EventError> {
    let (env, event) = parse_envelope(body.as_bytes())?;
    extract(&env, &event)
}

fn facts_of_value(event: Value) -> Result<EventFacts, EventError> {
    facts_of(&event.to_string())
}

fn payment(body: &str) -> PaymentFacts {
    match facts_of(body) {
        Ok(EventFacts::Payment(p)) => p,
        other => panic!("expected a payment, got {other:?}"),
    }
}

fn envelope(body: &str) -> Envelope {
    parse_envelope(body.as_bytes()).unwrap().0
}

fn event_with(event_type: &str, object: Value) -> Value {
    json!({
        "id": "evt_test_1",
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": 1_786_000_000,
        "livemode": false,
        "type": event_type,
        "data": { "object": object },
    })
}

fn minimal_charge() -> Value {
    json!({
        "id": "ch_test_1",
        "object": "charge",
        "amount": 4900,
        "amount_captured": 4900,
        "currency": "usd",
        "payment_intent": "pi_test_1",
        "metadata": {},
    })
}

// --- Story A: a one-time purchase ------------------------------------

#[test]
fn checkout_session_completed_in_payment_mode_counts_a_sale() {
    let body = fixture!("checkout_session_completed_payment");
    let env = envelope(body);
    assert_eq!(
        env,
        Envelope {
            id: "evt_1G31GPFq4ZkT2mWbMZWakqyv".into(),
            event_type: "checkout.session.completed".into(),
            account: None,
            livemode: false,
            api_version: Some("2026-07-29.dahlia".into()),
            created: 1_786_350_095,
        }
    );
    let session_id = "cs_test_a10kSuP7I9pF7XTINJthj5zLZRe7Wg1uhgC430xXPairAopIANwjHcztUx";
    assert_eq!(
        payment(body),
        PaymentFacts {
            source: PaymentSource::CheckoutSession,
            object_id: session_id.into(),
            counts: true,
            invoice: None,
            payment_intent: Some("pi_3uTIcnFq4ZkT2mWbKZS1evdw".into()),
            charge: None,
            checkout_session: Some(session_id.into()),
            subscription: None,
            customer: Some("cus_nfyyizktUd4PRr".into()),
            email: Some("jenny.rosen@example.com".into()),
            amount: 4900,
            currency: "usd".into(),
            // The event's time, not the session's `created` (1786350000).
            purchased_at: 1_786_350_095,
            billing_reason: None,
            hints: Hints {
                client_reference_id: Some("spring-sale".into()),
                click_id: None,
                link_slug: Some("spring-sale".into()),
                promotion_codes: vec![],
            },
        }
    );
}

#[test]
fn payment_intent_succeeded_without_invoice_counts_a_sale() {
    assert_eq!(
        payment(fixture!("payment_intent_succeeded")),
        PaymentFacts {
            source: PaymentSource::PaymentIntent,
            object_id: "pi_3uTIcnFq4ZkT2mWbKZS1evdw".into(),
            counts: true,
            invoice: None,
            payment_intent: Some("pi_3uTIcnFq4ZkT2mWbKZS1evdw".into()),
            charge: Some("ch_3uTIcnFq4ZkT2mWbrBYwY2Cx".into()),
            checkout_session: None,
            subscription: None,
            customer: Some("cus_nfyyizktUd4PRr".into()),
            email: Some("jenny.rosen@example.com".into()),
            amount: 4900,
            currency: "usd".into(),
            purchased_at: 1_786_350_094,
            billing_reason: None,
            hints: Hints {
                link_slug: Some("spring-sale".into()),
                ..Hints::default()
            },
        }
    );
}

#[test]
fn charge_succeeded_without_invoice_counts_a_sale() {
    assert_eq!(
        payment(fixture!("charge_succeeded")),
        PaymentFacts {
            source: PaymentSource::Charge,
            object_id: "ch_3uTIcnFq4ZkT2mWbrBYwY2Cx".into(),
            counts: true,
            invoice: None,
            payment_intent: Some("pi_3uTIcnFq4ZkT2mWbKZS1evdw".into()),
            charge: Some("ch_3uTIcnFq4ZkT2mWbrBYwY2Cx".into()),
            checkout_session: None,
            subscription: None,
            customer: Some("cus_nfyyizktUd4PRr".into()),
            email: Some("jenny.rosen@example.com".into()),
            amount: 4900,
            currency: "usd".into(),
            purchased_at: 1_786_350_094,
            billing_reason: None,
            hints: Hints::default(),
        }
    );
}

#[test]
fn charge_refunded_reports_the_cumulative_amount() {
    let partial = facts_of(fixture!("charge_refunded_partial")).unwrap();
    assert_eq!(
        partial,
        EventFacts::Refund(RefundFacts {
            charge: "ch_3uTIcnFq4ZkT2mWbrBYwY2Cx".into(),
            payment_intent: Some("pi_3uTIcnFq4ZkT2mWbKZS1evdw".into()),
            invoice: None,
            amount_refunded: 1500,
            currency: "usd".into(),
            at: 1_786_609_201,
        })
    );
    let full = facts_of(fixture!("charge_refunded_full")).unwrap();
    assert_eq!(
        full,
        EventFacts::Refund(RefundFacts {
            charge: "ch_3uTIcnFq4ZkT2mWbrBYwY2Cx".into(),
            payment_intent: Some("pi_3uTIcnFq4ZkT2mWbKZS1evdw".into()),
            invoice: None,
            amount_refunded: 4900,
            currency: "usd".into(),
            at: 1_786_782_001,
        })
    );
}

#[test]
fn refund_created_is_ignored() {
    let body = fixture!("refund_created");
    assert_eq!(envelope(body).event_type, "refund.created");
    assert_eq!(facts_of(body), Ok(EventFacts::Ignored));
}

// --- Story B: a subscription (API 2025-03-31.basil) -------------------

#[test]
fn checkout_session_in_subscription_mode_only_carries_hints_for_its_invoice() {
    let p = payment(fixture!("checkout_session_completed_subscription"));
    let session_id = "cs_test_a1u1NVCiZ4dvJLz0xMsn8h08yTD1opsKpguI8XKNeIXHUxuec36SF41ptE";
    assert_eq!(
        p,
        PaymentFacts {
            source: PaymentSource::CheckoutSession,
            object_id: session_id.into(),
            counts: false,
            invoice: Some("in_1RRHItFq4ZkT2mWbQWXOzHp6".into()),
            payment_intent: None,
            charge: None,
            checkout_session: Some(session_id.into()),
            subscription: Some("sub_1BpztXFq4ZkT2mWbtObTHkjX".into()),
            customer: Some("cus_afr1lSG2oN4tSU".into()),
            email: Some("sam.lee@example.com".into()),
            amount: 1900,
            currency: "usd".into(),
            purchased_at: 1_746_435_664,
            billing_reason: None,
            hints: Hints {
                client_reference_id: Some("creator-podcast".into()),
                click_id: None,
                link_slug: Some("creator-podcast".into()),
                promotion_codes: vec![],
            },
        }
    );
}

#[test]
fn customer_subscription_created_is_ignored() {
    assert_eq!(
        facts_of(fixture!("customer_subscription_created")),
        Ok(EventFacts::Ignored)
    );
}

#[test]
fn basil_invoice_paid_reads_the_subscription_under_parent() {
    assert_eq!(
        payment(fixture!("invoice_paid_basil_subscription_create")),
        PaymentFacts {
            source: PaymentSource::Invoice,
            object_id: "in_1RRHItFq4ZkT2mWbQWXOzHp6".into(),
            counts: true,
            invoice: Some("in_1RRHItFq4ZkT2mWbQWXOzHp6".into()),
            payment_intent: None,
            charge: None,
            checkout_session: None,
            subscription: Some("sub_1BpztXFq4ZkT2mWbtObTHkjX".into()),
            customer: Some("cus_afr1lSG2oN4tSU".into()),
            email: Some("sam.lee@example.com".into()),
            amount: 1900,
            currency: "usd".into(),
            purchased_at: 1_746_435_663,
            billing_reason: Some("subscription_create".into()),
            hints: Hints {
                link_slug: Some("creator-podcast".into()),
                ..Hints::default()
            },
        }
    );
}

#[test]
fn basil_invoice_paid_for_a_cycle_is_a_renewal_of_the_same_subscription() {
    let p = payment(fixture!("invoice_paid_basil_subscription_cycle"));
    assert_eq!(p.object_id, "in_1vmS3dFq4ZkT2mWbwpcRpoix");
    assert_eq!(p.invoice.as_deref(), Some("in_1vmS3dFq4ZkT2mWbwpcRpoix"));
    assert_eq!(p.billing_reason.as_deref(), Some("subscription_cycle"));
    assert_eq!(
        p.subscription.as_deref(),
        Some("sub_1BpztXFq4ZkT2mWbtObTHkjX")
    );
    assert!(p.counts);
    assert_eq!((p.amount, p.currency.as_str()), (1900, "usd"));
    assert_eq!(p.purchased_at, 1_749_117_672);
    assert_eq!(p.hints.link_slug.as_deref(), Some("creator-podcast"));
}

#[test]
fn invoice_payment_paid_links_the_invoice_to_its_payment_intent() {
    assert_eq!(
        facts_of(fixture!("invoice_payment_paid_basil")),
        Ok(EventFacts::InvoicePaymentLink {
            invoice: "in_1RRHItFq4ZkT2mWbQWXOzHp6".into(),
            payment_intent: "pi_3H3mbEFq4ZkT2mWb9K3el8oY".into(),
        })
    );
}

#[test]
fn credit_note_created_is_ignored() {
    assert_eq!(
        facts_of(fixture!("credit_note_created")),
        Ok(EventFacts::Ignored)
    );
}

// --- Story D: a dispute ------------------------------------------------

#[test]
fn a_new_dispute_is_open_and_a_lost_one_is_lost() {
    let expected = |status, at| {
        EventFacts::Dispute(DisputeFacts {
            dispute: "du_3dG8X4Fq4ZkT2mWbqBFL6TLj".into(),
            charge: "ch_3dG8X4Fq4ZkT2mWb0iBYdT2V".into(),
            payment_intent: Some("pi_3dG8X4Fq4ZkT2mWbgkI4DKLL".into()),
            amount: 9900,
            currency: "usd".into(),
            status,
            at,
        })
    };
    assert_eq!(
        facts_of(fixture!("charge_dispute_created")),
        Ok(expected(DisputeStatus::Open, 1_787_644_801))
    );
    assert_eq!(
        facts_of(fixture!("charge_dispute_closed")),
        Ok(expected(DisputeStatus::Lost, 1_791_100_800))
    );
}

#[test]
fn dispute_status_maps_won_lost_and_everything_else_to_open() {
    for (event_type, status, expected) in [
        ("charge.dispute.closed", "won", DisputeStatus::Won),
        ("charge.dispute.closed", "lost", DisputeStatus::Lost),
        (
            "charge.dispute.closed",
            "warning_closed",
            DisputeStatus::Open,
        ),
        (
            "charge.dispute.updated",
            "under_review",
            DisputeStatus::Open,
        ),
        (
            "charge.dispute.funds_withdrawn",
            "needs_response",
            DisputeStatus::Open,
        ),
    ] {
        let event = event_with(
            event_type,
            json!({
                "id": "du_1", "object": "dispute", "amount": 100, "currency": "EUR",
                "charge": { "id": "ch_1", "object": "charge" },
                "payment_intent": null, "status": status,
            }),
        );
        match facts_of_value(event) {
            Ok(EventFacts::Dispute(d)) => {
                assert_eq!(d.status, expected, "{event_type} {status}");
                assert_eq!(d.charge, "ch_1");
                assert_eq!(d.currency, "eur");
                assert_eq!(d.payment_intent, None);
            }
            other => panic!("{event_type} {status}: {other:?}"),
        }
    }
}

// --- Before API 2025-03-31.basil ---------------------------------------

#[test]
fn pre_basil_invoice_paid_reads_top_level_subscription_payment_intent_and_charge() {
    let body = fixture!("invoice_paid_pre_basil_subscription_create");
    assert_eq!(envelope(body).api_version.as_deref(), Some("2024-06-20"));
    assert_eq!(
        payment(body),
        PaymentFacts {
            source: PaymentSource::Invoice,
            object_id: "in_1PreBasilInvoice000001".into(),
            counts: true,
            invoice: Some("in_1PreBasilInvoice000001".into()),
            payment_intent: Some("pi_1PreBasilPayIntent00001".into()),
            charge: Some("ch_1PreBasilCharge0000001".into()),
            checkout_session: None,
            subscription: Some("sub_1PreBasilSub000000001".into()),
            customer: Some("cus_PreBasilCust01".into()),
            email: Some("kim.park@example.com".into()),
            amount: 1710,
            currency: "usd".into(),
            purchased_at: 1_718_900_004,
            billing_reason: Some("subscription_create".into()),
            hints: Hints {
                client_reference_id: None,
                // From a line item's metadata.
                click_id: Some("clk_line_01".into()),
                // From `subscription_details.metadata`.
                link_slug: Some("summer-podcast".into()),
                // From the old single `discount`.
                promotion_codes: vec!["promo_1PreBasilPromo00001".into()],
            },
        }
    );
}

#[test]
fn pre_basil_payment_intent_naming_its_invoice_does_not_count() {
    let p = payment(fixture!("payment_intent_succeeded_pre_basil_invoice"));
    assert!(!p.counts);
    assert_eq!(p.invoice.as_deref(), Some("in_1PreBasilInvoice000001"));
    assert_eq!(
        p.payment_intent.as_deref(),
        Some("pi_1PreBasilPayIntent00001")
    );
    assert_eq!(p.charge.as_deref(), Some("ch_1PreBasilCharge0000001"));
    assert_eq!(p.email, None);
    assert_eq!(p.amount, 1710);
    assert_eq!(p.purchased_at, 1_718_900_004);
}

#[test]
fn pre_basil_charge_naming_its_invoice_does_not_count() {
    let mut charge = minimal_charge();
    charge["invoice"] = json!("in_old_1");
    charge["receipt_email"] = json!("a@example.com");
    charge["billing_details"] = json!({ "email": null });
    let p = payment(&event_with("charge.succeeded", charge).to_string());
    assert!(!p.counts);
    assert_eq!(p.invoice.as_deref(), Some("in_old_1"));
    assert_eq!(p.email.as_deref(), Some("a@example.com"));
}

#[test]
fn old_payment_intent_without_latest_charge_names_its_first_charge() {
    let event = event_with(
        "payment_intent.succeeded",
        json!({
            "id": "pi_2019", "object": "payment_intent", "amount": 500,
            "amount_received": 500, "currency": "usd",
            "charges": { "object": "list", "data": [{ "id": "ch_2019", "object": "charge" }] },
        }),
    );
    assert_eq!(
        payment(&event.to_string()).charge.as_deref(),
        Some("ch_2019")
    );
}

#[test]
fn pre_basil_refund_names_its_invoice() {
    let mut charge = minimal_charge();
    charge["invoice"] = json!({ "id": "in_old_2", "object": "invoice" });
    charge["amount_refunded"] = json!(4900);
    match facts_of_value(event_with("charge.refunded", charge)) {
        Ok(EventFacts::Refund(r)) => {
            assert_eq!(r.invoice.as_deref(), Some("in_old_2"));
            assert_eq!(r.amount_refunded, 4900);
        }
        other => panic!("{other:?}"),
    }
}

// --- Connect, live mode, other currencies ------------------------------

#[test]
fn a_connect_event_names_its_account() {
    let mut event: Value =
        serde_json::from_str(fixture!("checkout_session_completed_payment")).unwrap();
    event["account"] = json!("acct_1ConnectedShop0001");
    let (env, _) = parse_envelope(event.to_string().as_bytes()).unwrap();
    assert_eq!(env.account.as_deref(), Some("acct_1ConnectedShop0001"));
    assert!(payment(&event.to_string()).counts);
}

#[test]
fn a_livemode_jpy_invoice_keeps_its_zero_decimal_amount() {
    let event = json!({
        "id": "evt_live_jpy_1",
        "object": "event",
        "account": "acct_1JapanShop000001",
        "api_version": "2025-03-31.basil",
        "created": 1_750_000_100,
        "livemode": true,
        "type": "invoice.paid",
        "data": { "object": {
            "id": "in_live_jpy_1", "object": "invoice",
            "amount_paid": 4980, "currency": "JPY", "created": 1_750_000_000,
            "customer": { "id": "cus_jp_1", "object": "customer", "email": "taro@example.jp" },
            "customer_email": "taro@example.jp",
            "billing_reason": "manual",
            "livemode": true,
            "metadata": { "ref": "tokyo-launch" },
            "parent": null,
            "status_transitions": { "paid_at": null },
        }},
    });
    let (env, _) = parse_envelope(event.to_string().as_bytes()).unwrap();
    assert!(env.livemode);
    assert_eq!(env.account.as_deref(), Some("acct_1JapanShop000001"));
    let p = payment(&event.to_string());
    assert_eq!((p.amount, p.currency.as_str()), (4980, "jpy"));
    assert_eq!(p.customer.as_deref(), Some("cus_jp_1"));
    assert_eq!(p.subscription, None);
    // No `paid_at`: the invoice's own `created`.
    assert_eq!(p.purchased_at, 1_750_000_000);
    assert_eq!(p.hints.link_slug.as_deref(), Some("tokyo-launch"));
    assert!(p.counts);
}

// --- Rules of 2.6 on built payloads ------------------------------------

#[test]
fn an_unpaid_checkout_session_in_payment_mode_is_ignored_until_paid() {
    let mut session = json!({
        "id": "cs_async_1", "object": "checkout.session", "mode": "payment",
        "payment_status": "unpaid", "amount_total": 2500, "currency": "eur",
        "payment_intent": "pi_async_1", "customer_email": "b@example.com",
    });
    assert_eq!(
        facts_of_value(event_with("checkout.session.completed", session.clone())),
        Ok(EventFacts::Ignored)
    );
    session["payment_status"] = json!("paid");
    let p = match facts_of_value(event_with(
        "checkout.session.async_payment_succeeded",
        session,
    )) {
        Ok(EventFacts::Payment(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(p.counts);
    assert_eq!(p.email.as_deref(), Some("b@example.com"));
    assert_eq!(p.payment_intent.as_deref(), Some("pi_async_1"));
}

#[test]
fn a_setup_mode_session_is_ignored() {
    let session = json!({ "id": "cs_setup_1", "object": "checkout.session", "mode": "setup",
        "payment_status": "no_payment_required", "amount_total": null, "currency": null });
    assert_eq!(
        facts_of_value(event_with("checkout.session.completed", session)),
        Ok(EventFacts::Ignored)
    );
}

#[test]
fn checkout_promotion_codes_come_from_discounts_and_the_breakdown_deduplicated() {
    let session = json!({
        "id": "cs_promo_1", "object": "checkout.session", "mode": "payment",
        "payment_status": "paid", "amount_total": 900, "currency": "usd",
        "client_reference_id": "  ",
        "metadata": { "ref": "podcast-ep12", "salestrack_click_id": "clk_9" },
        "discounts": [
            { "coupon": null, "promotion_code": "promo_A" },
            { "coupon": "co_1", "promotion_code": null },
        ],
        "total_details": { "amount_discount": 100, "breakdown": { "discounts": [
            { "amount": 100, "discount": { "id": "di_1", "promotion_code":
                { "id": "promo_A", "object": "promotion_code", "code": "PODCAST10" } } },
            { "amount": 0, "discount": { "id": "di_2", "promotion_code":
                { "id": "promo_B", "code": "PODCAST10" } } },
        ], "taxes": [] } },
    });
    let p = match facts_of_value(event_with("checkout.session.completed", session)) {
        Ok(EventFacts::Payment(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        p.hints,
        Hints {
            client_reference_id: None,
            click_id: Some("clk_9".into()),
            link_slug: Some("podcast-ep12".into()),
            promotion_codes: vec!["promo_A".into(), "PODCAST10".into(), "promo_B".into()],
        }
    );
}

#[test]
fn invoice_hints_merge_in_order_and_the_first_non_empty_wins() {
    let invoice = json!({
        "id": "in_merge_1", "object": "invoice", "amount_paid": 1000, "currency": "usd",
        "created": 1, "subscription": { "id": "sub_expanded", "object": "subscription" },
        "metadata": { "link_slug": "", "ref": "from-invoice-ref" },
        "subscription_details": { "metadata": { "link_slug": "from-sub-details",
            "salestrack_click_id": "clk_sub" } },
        "parent": { "subscription_details": { "subscription": "sub_parent",
            "metadata": { "salestrack_click_id": "clk_parent" } } },
        "lines": { "data": [ { "metadata": { "link_slug": "from-line" } }, "il_unexpanded" ] },
        "discount": null,
        "discounts": [
            "di_unexpanded",
            { "id": "di_x", "promotion_code": { "id": "promo_X", "code": "XMAS" } },
        ],
        "total_discount_amounts": [
            { "amount": 5, "discount": "di_unexpanded" },
            { "amount": 5, "discount": { "id": "di_y", "promotion_code": "promo_Y" } },
            { "amount": 5, "discount": { "id": "di_x", "promotion_code": "promo_X" } },
        ],
    });
    let p = payment(&event_with("invoice.paid", invoice).to_string());
    // Top-level `subscription` (pre-basil) wins over `parent`, expanded or not.
    assert_eq!(p.subscription.as_deref(), Some("sub_expanded"));
    assert_eq!(
        p.hints,
        Hints {
            client_reference_id: None,
            click_id: Some("clk_sub".into()),
            link_slug: Some("from-invoice-ref".into()),
            promotion_codes: vec!["promo_X".into(), "XMAS".into(), "promo_Y".into()],
        }
    );
}

#[test]
fn a_zero_invoice_is_still_a_purchase_for_the_domain_to_classify() {
    let invoice = json!({ "id": "in_trial", "object": "invoice", "amount_paid": 0,
        "currency": "usd", "billing_reason": "subscription_create" });
    let p = payment(&event_with("invoice.paid", invoice).to_string());
    assert!(p.counts);
    assert_eq!(p.amount, 0);
    // No `status_transitions` nor `created`: the event's time.
    assert_eq!(p.purchased_at, 1_786_000_000);
}

#[test]
fn an_expanded_basil_invoice_payment_list_names_the_payment_intent() {
    let invoice = json!({ "id": "in_exp", "object": "invoice", "amount_paid": 700,
    "currency": "usd", "payments": { "object": "list", "data": [
        { "id": "inpay_0", "status": "canceled",
          "payment": { "type": "payment_intent", "payment_intent": "pi_old" } },
        { "id": "inpay_1", "status": "paid",
          "payment": { "type": "payment_intent", "payment_intent": { "id": "pi_new" } } },
    ]}});
    let p = payment(&event_with("invoice.paid", invoice).to_string());
    assert_eq!(p.payment_intent.as_deref(), Some("pi_new"));
}

#[test]
fn a_charge_with_nothing_captured_reports_its_amount() {
    let mut charge = minimal_charge();
    charge["amount_captured"] = json!(0);
    charge["billing_details"] = json!({ "email": "c@example.com" });
    charge["receipt_email"] = json!("other@example.com");
    let p = payment(&event_with("charge.succeeded", charge).to_string());
    assert_eq!(p.amount, 4900);
    assert_eq!(p.email.as_deref(), Some("c@example.com"));
}

#[test]
fn a_payment_intent_without_amount_received_reports_its_amount() {
    let pi = json!({ "id": "pi_x", "object": "payment_intent", "amount": 300,
        "currency": "gbp", "metadata": { "salestrack_click_id": " clk_1 " } });
    let p = payment(&event_with("payment_intent.succeeded", pi).to_string());
    assert_eq!((p.amount, p.currency.as_str()), (300, "gbp"));
    assert!(p.counts);
    assert_eq!(p.hints.click_id.as_deref(), Some("clk_1"));
}

#[test]
fn an_invoice_payment_not_made_by_a_payment_intent_is_ignored() {
    let object = json!({ "id": "inpay_1", "object": "invoice_payment",
        "invoice": "in_1", "payment": { "type": "out_of_band_payment" } });
    assert_eq!(
        facts_of_value(event_with("invoice_payment.paid", object)),
        Ok(EventFacts::Ignored)
    );
}

#[test]
fn envelope_defaults_livemode_and_tolerates_null_optionals() {
    let env = envelope(r#"{"id":"evt_1","type":"ping","account":null,"api_version":null}"#);
    assert_eq!(
        env,
        Envelope {
            id: "evt_1".into(),
            event_type: "ping".into(),
            account: None,
            livemode: false,
            api_version: None,
            created: 0,
        }
    );
    assert_eq!(
        facts_of(r#"{"id":"evt_1","type":"ping"}"#),
        Ok(EventFacts::Ignored)
    );
}

// --- Bad input: the right error, never a panic --------------------------

fn field_error(result: Result<EventFacts, EventError>) -> (&'static str, &'static str) {
    match result {
        Err(EventError::MissingField { field, .. }) => ("missing", field),
        Err(EventError::InvalidField { field, .. }) => ("invalid", field),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn bodies_that_are_not_json_are_not_json() {
    for body in [
        &b"\xff\xfe{\"id\":\"evt_1\",\"type\":\"invoice.paid\"}"[..],
        b"{\"id\":\"evt_\xc3\x28\",\"type\":\"invoice.paid\"}",
        b"{\"id\": \"evt_1\", \"type\": ",
        b"",
        b"not json",
        b"{\"id\":\"evt_1\",\"type\":\"x\"} trailing",
    ] {
        assert!(
            matches!(parse_envelope(body), Err(EventError::NotJson(_))),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn json_that_is_not_an_event_is_not_an_event() {
    for body in [
        r#"[{"id":"evt_1","type":"invoice.paid"}]"#,
        r#""evt_1""#,
        "null",
        "42",
        r#"{"id":"evt_1","object":"event","data":{}}"#,
        r#"{"type":"invoice.paid"}"#,
        r#"{"id":7,"type":"invoice.paid"}"#,
        r#"{"id":"evt_1","type":null}"#,
        r#"{"id":"","type":"invoice.paid"}"#,
    ] {
        assert!(
            matches!(
                parse_envelope(body.as_bytes()),
                Err(EventError::NotAnEvent(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn a_handled_type_without_an_object_lacks_data_object() {
    for event in [
        json!({ "id": "evt_1", "type": "invoice.paid", "created": 1 }),
        json!({ "id": "evt_1", "type": "charge.succeeded", "created": 1, "data": {} }),
        json!({ "id": "evt_1", "type": "charge.refunded", "created": 1,
                "data": { "object": "ch_1" } }),
        json!({ "id": "evt_1", "type": "checkout.session.completed", "created": 1,
                "data": { "object": null } }),
    ] {
        assert_eq!(
            field_error(facts_of_value(event)),
            ("missing", "data.object")
        );
    }
    // An unhandled type needs no object.
    assert_eq!(
        facts_of_value(json!({ "id": "evt_1", "type": "customer.created" })),
        Ok(EventFacts::Ignored)
    );
}

#[test]
fn a_negative_amount_is_invalid() {
    let mut charge = minimal_charge();
    charge["amount_captured"] = json!(-4900);
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", charge))),
        ("invalid", "amount_captured")
    );
    let invoice = json!({ "id": "in_1", "amount_paid": -1, "currency": "usd" });
    assert_eq!(
        field_error(facts_of_value(event_with("invoice.paid", invoice))),
        ("invalid", "amount_paid")
    );
}

#[test]
fn an_amount_given_as_a_string_or_a_fraction_is_invalid() {
    for amount in [
        json!("4900"),
        json!(49.5),
        json!(true),
        json!({ "value": 1 }),
    ] {
        let pi = json!({ "id": "pi_1", "amount_received": amount, "currency": "usd" });
        assert_eq!(
            field_error(facts_of_value(event_with("payment_intent.succeeded", pi))),
            ("invalid", "amount_received"),
            "{amount}"
        );
    }
}

#[test]
fn an_amount_above_ten_to_the_fifteen_is_invalid() {
    let ok = json!({ "id": "pi_1", "amount_received": MAX_AMOUNT, "currency": "usd" });
    assert_eq!(
        payment(&event_with("payment_intent.succeeded", ok).to_string()).amount,
        MAX_AMOUNT
    );
    for amount in [json!(MAX_AMOUNT + 1), json!(u64::MAX), json!(1e300)] {
        let pi = json!({ "id": "pi_1", "amount_received": amount, "currency": "usd" });
        assert_eq!(
            field_error(facts_of_value(event_with("payment_intent.succeeded", pi))),
            ("invalid", "amount_received"),
            "{amount}"
        );
    }
}

#[test]
fn a_currency_that_is_not_three_letters_is_invalid() {
    for currency in [
        json!("us$"),
        json!("usdd"),
        json!("us"),
        json!(""),
        json!("é€x"),
        json!(840),
    ] {
        let mut charge = minimal_charge();
        charge["currency"] = currency.clone();
        assert_eq!(
            field_error(facts_of_value(event_with("charge.succeeded", charge))),
            ("invalid", "currency"),
            "{currency}"
        );
    }
}

#[test]
fn missing_required_fields_are_named() {
    let mut no_id = minimal_charge();
    no_id.as_object_mut().unwrap().remove("id");
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", no_id))),
        ("missing", "id")
    );
    let mut no_currency = minimal_charge();
    no_currency["currency"] = Value::Null;
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", no_currency))),
        ("missing", "currency")
    );
    let mut no_amount = minimal_charge();
    no_amount.as_object_mut().unwrap().remove("amount");
    no_amount.as_object_mut().unwrap().remove("amount_captured");
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", no_amount))),
        ("missing", "amount")
    );
    let session = json!({ "id": "cs_1", "mode": "payment", "payment_status": "paid",
        "currency": "usd" });
    assert_eq!(
        field_error(facts_of_value(event_with(
            "checkout.session.completed",
            session
        ))),
        ("missing", "amount_total")
    );
    let invoice = json!({ "id": "in_1", "currency": "usd" });
    assert_eq!(
        field_error(facts_of_value(event_with("invoice.paid", invoice))),
        ("missing", "amount_paid")
    );
    let refund = json!({ "id": "ch_1", "currency": "usd" });
    assert_eq!(
        field_error(facts_of_value(event_with("charge.refunded", refund))),
        ("missing", "amount_refunded")
    );
    let dispute = json!({ "id": "du_1", "amount": 1, "currency": "usd", "status": "lost" });
    assert_eq!(
        field_error(facts_of_value(event_with("charge.dispute.closed", dispute))),
        ("missing", "charge")
    );
    let link = json!({ "id": "inpay_1", "payment": { "type": "payment_intent" },
        "invoice": "in_1" });
    assert_eq!(
        field_error(facts_of_value(event_with("invoice_payment.paid", link))),
        ("missing", "payment.payment_intent")
    );
    let mut no_created = event_with("charge.succeeded", minimal_charge());
    no_created.as_object_mut().unwrap().remove("created");
    assert_eq!(
        field_error(facts_of_value(no_created)),
        ("missing", "created")
    );
}

#[test]
fn a_reference_that_is_neither_an_id_nor_an_object_is_invalid() {
    let mut charge = minimal_charge();
    charge["customer"] = json!(12);
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", charge))),
        ("invalid", "customer")
    );
    let mut charge = minimal_charge();
    charge["payment_intent"] = json!({ "object": "payment_intent" });
    assert_eq!(
        field_error(facts_of_value(event_with("charge.succeeded", charge))),
        ("invalid", "payment_intent")
    );
}

#[test]
fn every_fixture_parses_without_error() {
    for body in [
        fixture!("charge_dispute_closed"),
        fixture!("charge_dispute_created"),
        fixture!("charge_refunded_full"),
        fixture!("charge_refunded_partial"),
        fixture!("charge_succeeded"),
        fixture!("checkout_session_completed_payment"),
        fixture!("checkout_session_completed_subscription"),
        fixture!("credit_note_created"),
        fixture!("customer_subscription_created"),
        fixture!("invoice_paid_basil_subscription_create"),
        fixture!("invoice_paid_basil_subscription_cycle"),
        fixture!("invoice_payment_paid_basil"),
        fixture!("payment_intent_succeeded"),
        fixture!("refund_created"),
        fixture!("invoice_paid_pre_basil_subscription_create"),
        fixture!("payment_intent_succeeded_pre_basil_invoice"),
    ] {
        let env = envelope(body);
        assert!(facts_of(body).is_ok(), "{}", env.id);
    }
}

// --- Text salestrack keeps -----------------------------------------------

#[test]
fn control_characters_in_stripe_text_are_dropped_from_the_facts() {
    let event = json!({
        "id": "evt_\u{0}nul",
        "object": "event",
        "account": "acct_\u{0}1",
        "api_version": "2026-07-29.dahlia",
        "created": 1_786_000_000,
        "livemode": false,
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": "cs_\u{0}1",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "amount_total": 4900,
            "currency": "usd",
            "client_reference_id": "clk_\u{0}1",
            "customer": "cus_\u{0}1",
            "customer_details": { "email": "jo\u{0}@shop.com" },
            "payment_intent": { "id": "pi_\u{1}1" },
            "metadata": { "link_slug": "spring\u{0}" },
            "discounts": [{ "promotion_code": { "id": "promo_\u{0}1", "code": "SAVE\u{7f}10" } }],
        }},
    });
    let text = event.to_string();
    assert!(text.contains("\\u0000"), "the body carries NUL escapes");
    let env = envelope(&text);
    assert_eq!(env.id, "evt_nul");
    assert_eq!(env.account.as_deref(), Some("acct_1"));
    let p = payment(&text);
    assert_eq!(p.object_id, "cs_1");
    assert_eq!(p.customer.as_deref(), Some("cus_1"));
    assert_eq!(p.email.as_deref(), Some("jo@shop.com"));
    assert_eq!(p.payment_intent.as_deref(), Some("pi_1"));
    assert_eq!(p.hints.client_reference_id.as_deref(), Some("clk_1"));
    assert_eq!(p.hints.link_slug.as_deref(), Some("spring"));
    assert_eq!(p.hints.promotion_codes, vec!["promo_1", "SAVE10"]);
    let stored = serde_json::to_string(&p).unwrap();
    assert!(
        !stored.contains("\\u00"),
        "facts keep no control character: {stored}"
    );
}
