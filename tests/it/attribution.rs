//! SPEC 2.7 (layer 2, the seven steps), 2.8 layers 3–4 and 2.6's "stronger
//! evidence" rule, over HTTP with signed events. Each test checks the
//! conversion's method and link and its stored attribution trace.

use reqwest::StatusCode;
use salestrack::domain::client::LinkIn;
use salestrack::domain::ids::new_id;
use salestrack::domain::model::*;
use salestrack::domain::view::ConversionOut;
use serde_json::{json, Value};

use crate::helpers::*;

const SECRET: &str = "whsec_attribution_tests_0001";
const OTHER_SECRET: &str = "whsec_attribution_other_0002";
const DAY: i64 = 24 * 3600;
const API: &str = "2025-03-31.basil";

const STEPS: [&str; 7] = [
    "click_id",
    "link_slug",
    "promotion_code",
    "customer_history",
    "click_window_primary",
    "click_window_fallback",
    "click_any_time",
];

// ---- helpers ---------------------------------------------------------------

fn payment_intent(id: &str, customer: &str, metadata: Value) -> Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 4900, "amount_received": 4900,
        "currency": "usd", "customer": customer, "receipt_email": format!("{customer}@example.com"),
        "metadata": metadata, "status": "succeeded", "livemode": false,
    })
}

/// A paid one-time checkout session; `extra` fields are merged in.
fn checkout(id: &str, pi: &str, customer: &str, extra: Value) -> Value {
    let mut object = json!({
        "id": id, "object": "checkout.session", "mode": "payment", "payment_status": "paid",
        "status": "complete", "amount_subtotal": 4900, "amount_total": 4900, "currency": "usd",
        "customer": customer, "customer_details": {"email": format!("{customer}@example.com")},
        "payment_intent": pi, "client_reference_id": null, "metadata": {}, "livemode": false,
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        object[k] = v.clone();
    }
    object
}

/// Signs and delivers one event to the client's URL; expects 200.
async fn send(
    app: &TestApp,
    client: &Client,
    secret: &str,
    event_type: &str,
    created: i64,
    object: Value,
) {
    let body = event(&new_id("evt"), event_type, API, created, object);
    let resp = app.deliver(client, secret, body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{event_type}: {text}");
}

/// Delivers a `payment_intent.succeeded` to the Shop client.
async fn sell(
    app: &TestApp,
    shop: &Client,
    pi: &str,
    customer: &str,
    created: i64,
    metadata: Value,
) -> ConversionOut {
    send(
        app,
        shop,
        SECRET,
        "payment_intent.succeeded",
        created,
        payment_intent(pi, customer, metadata),
    )
    .await;
    conversion(app, pi).await
}

async fn conversion(app: &TestApp, purchase_key: &str) -> ConversionOut {
    let all = app.conversions().await;
    let mut found: Vec<_> = all
        .iter()
        .filter(|c| c.purchase_key == purchase_key)
        .cloned()
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one conversion for {purchase_key}: {all:#?}"
    );
    found.remove(0)
}

async fn stored(app: &TestApp, id: &str) -> Conversion {
    app.tracker
        .store()
        .get_conversion(id)
        .await
        .expect("get conversion")
        .expect("conversion stored")
}

fn outcome(s: &str) -> StepOutcome {
    match s {
        "matched" => StepOutcome::Matched,
        "no_match" => StepOutcome::NoMatch,
        "skipped" => StepOutcome::Skipped,
        other => panic!("unknown outcome {other}"),
    }
}

fn steps_of(c: &Conversion) -> Vec<(String, StepOutcome)> {
    c.trace
        .iter()
        .map(|s| (s.step.clone(), s.outcome))
        .collect()
}

/// The trace of a decision by `method`: the steps before it found nothing,
/// it matched, the later ones were skipped.
fn decided_by(method: &str) -> Vec<(String, StepOutcome)> {
    let at = STEPS
        .iter()
        .position(|s| *s == method)
        .expect("a layer-2 step");
    STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let o = match i.cmp(&at) {
                std::cmp::Ordering::Less => StepOutcome::NoMatch,
                std::cmp::Ordering::Equal => StepOutcome::Matched,
                std::cmp::Ordering::Greater => StepOutcome::Skipped,
            };
            (s.to_string(), o)
        })
        .collect()
}

fn expected(steps: &[(&str, &str)]) -> Vec<(String, StepOutcome)> {
    steps
        .iter()
        .map(|(s, o)| (s.to_string(), outcome(o)))
        .collect()
}

/// Checks method and slug of the listed conversion and its stored trace.
async fn assert_decided(
    app: &TestApp,
    c: &ConversionOut,
    method: Method,
    slug: &str,
) -> Conversion {
    assert_eq!(c.method, Some(method), "method of {c:#?}");
    assert_eq!(c.link_slug.as_deref(), Some(slug), "link of {c:#?}");
    let s = stored(app, &c.id).await;
    assert_eq!(
        steps_of(&s),
        decided_by(method.as_str()),
        "trace: {:#?}",
        s.trace
    );
    s
}

fn step<'a>(c: &'a Conversion, name: &str) -> &'a TraceStep {
    c.trace
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no {name} step in {:#?}", c.trace))
}

async fn add_link_with_promo(app: &TestApp, client: &Client, slug: &str, codes: &[&str]) -> Link {
    app.tracker
        .add_link(LinkIn {
            client: client.id.clone(),
            slug: slug.into(),
            destination: format!("https://shop.example.com/{slug}"),
            label: None,
            promo_codes: codes.iter().map(|c| c.to_string()).collect(),
        })
        .await
        .expect("add link")
}

async fn shop(app: &TestApp) -> Client {
    app.add_client("Shop", Some(SECRET)).await
}

// ---- step 1: click id ------------------------------------------------------

#[tokio::test]
async fn a_click_id_passed_as_client_reference_id_of_a_paid_checkout_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let b = app.add_link(&shop, "b").await;
    let now = now_s();
    let named = app.add_click_at(&a, now - 3 * DAY, false).await;
    app.add_click_at(&b, now - 3600, false).await; // newer, but not named

    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_click_1",
            "pi_click_1",
            "cus_1",
            json!({"client_reference_id": named.id}),
        ),
    )
    .await;
    let c = conversion(&app, "pi_click_1").await;
    assert_decided(&app, &c, Method::ClickId, "a").await;
    assert_eq!(c.click_id.as_deref(), Some(named.id.as_str()));
    assert_eq!(c.amount, 4900);
}

#[tokio::test]
async fn a_click_id_in_metadata_salestrack_click_id_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let b = app.add_link(&shop, "b").await;
    let now = now_s();
    let named = app.add_click_at(&a, now - 10 * DAY, false).await;
    app.add_click_at(&b, now - 60, false).await;

    let c = sell(
        &app,
        &shop,
        "pi_meta_click",
        "cus_1",
        now,
        json!({"salestrack_click_id": named.id}),
    )
    .await;
    assert_decided(&app, &c, Method::ClickId, "a").await;
    assert_eq!(c.click_id.as_deref(), Some(named.id.as_str()));
}

#[tokio::test]
async fn a_bot_click_id_does_not_count() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let b = app.add_link(&shop, "b").await;
    let now = now_s();
    let human = app.add_click_at(&b, now - 5 * DAY, false).await;
    let bot = app.add_click_at(&a, now - 60, true).await;

    let c = sell(
        &app,
        &shop,
        "pi_bot_click",
        "cus_1",
        now,
        json!({"salestrack_click_id": bot.id}),
    )
    .await;
    let s = assert_decided(&app, &c, Method::ClickWindowPrimary, "b").await;
    assert_eq!(c.click_id.as_deref(), Some(human.id.as_str()));
    let click_step = step(&s, "click_id");
    assert!(click_step.detail.contains("bot"), "{click_step:?}");
}

#[tokio::test]
async fn a_click_id_of_another_client_does_not_count() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let other = app.add_client("Other", Some(OTHER_SECRET)).await;
    app.add_link(&shop, "mine").await;
    let theirs = app.add_link(&other, "theirs").await;
    let now = now_s();
    let foreign = app.add_click_at(&theirs, now - 60, false).await;

    let c = sell(
        &app,
        &shop,
        "pi_foreign_click",
        "cus_1",
        now,
        json!({"salestrack_click_id": foreign.id}),
    )
    .await;
    assert_eq!(c.client_id, shop.id);
    assert_eq!(
        c.link_slug, None,
        "another client's click never attributes: {c:#?}"
    );
    assert_eq!(c.method, None);
    assert_eq!(c.click_id, None);
    let s = stored(&app, &c.id).await;
    assert_eq!(step(&s, "click_id").outcome, StepOutcome::NoMatch);
    assert!(
        s.trace.iter().all(|t| t.outcome != StepOutcome::Matched),
        "{:#?}",
        s.trace
    );
}

// ---- step 2: link slug -------------------------------------------------------

#[tokio::test]
async fn metadata_link_slug_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "spring-sale").await;
    let other = app.add_link(&shop, "other").await;
    let now = now_s();
    app.add_click_at(&other, now - 60, false).await;

    let c = sell(
        &app,
        &shop,
        "pi_slug",
        "cus_1",
        now,
        json!({"link_slug": "spring-sale"}),
    )
    .await;
    assert_decided(&app, &c, Method::LinkSlug, "spring-sale").await;
    assert_eq!(c.click_id, None, "a slug names no click");
}

#[tokio::test]
async fn metadata_ref_decides_as_a_link_slug() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "flexus1").await;
    let other = app.add_link(&shop, "other").await;
    let now = now_s();
    app.add_click_at(&other, now - 60, false).await;

    let c = sell(
        &app,
        &shop,
        "pi_ref",
        "cus_1",
        now,
        json!({"ref": "flexus1"}),
    )
    .await;
    assert_decided(&app, &c, Method::LinkSlug, "flexus1").await;
}

#[tokio::test]
async fn a_link_slug_of_another_client_does_not_count() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let other = app.add_client("Other", Some(OTHER_SECRET)).await;
    app.add_link(&other, "theirs").await;

    let c = sell(
        &app,
        &shop,
        "pi_their_slug",
        "cus_1",
        now_s(),
        json!({"link_slug": "theirs"}),
    )
    .await;
    assert_eq!(c.link_slug, None);
    assert_eq!(c.method, None);
    let s = stored(&app, &c.id).await;
    assert_eq!(step(&s, "link_slug").outcome, StepOutcome::NoMatch);
    assert!(
        step(&s, "link_slug").detail.contains("theirs"),
        "{:?}",
        step(&s, "link_slug")
    );
}

// ---- step 3: promotion code ----------------------------------------------------

#[tokio::test]
async fn a_promotion_code_that_belongs_to_a_link_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    add_link_with_promo(&app, &shop, "creator", &["promo_ABC"]).await;
    let other = app.add_link(&shop, "other").await;
    let now = now_s();
    app.add_click_at(&other, now - 60, false).await;

    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_promo",
            "pi_promo",
            "cus_1",
            json!({"discounts": [{"coupon": null, "promotion_code": "promo_ABC"}]}),
        ),
    )
    .await;
    let c = conversion(&app, "pi_promo").await;
    assert_decided(&app, &c, Method::PromotionCode, "creator").await;
}

#[tokio::test]
async fn a_customer_facing_promotion_code_of_an_expanded_discount_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    add_link_with_promo(&app, &shop, "creator", &["FLEXUS10"]).await;

    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now_s(),
        checkout(
            "cs_promo_code",
            "pi_promo_code",
            "cus_1",
            json!({"discounts": [{"promotion_code": {"id": "promo_1Xyz", "object": "promotion_code", "code": "FLEXUS10"}}]}),
        ),
    )
    .await;
    let c = conversion(&app, "pi_promo_code").await;
    assert_decided(&app, &c, Method::PromotionCode, "creator").await;
}

#[tokio::test]
async fn a_promotion_code_of_no_link_is_traced_and_falls_through() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    add_link_with_promo(&app, &shop, "creator", &["promo_ABC"]).await;

    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now_s(),
        checkout(
            "cs_promo_x",
            "pi_promo_x",
            "cus_1",
            json!({"discounts": [{"promotion_code": "promo_ZZZ"}]}),
        ),
    )
    .await;
    let c = conversion(&app, "pi_promo_x").await;
    assert_eq!(c.link_slug, None);
    let s = stored(&app, &c.id).await;
    assert_eq!(step(&s, "promotion_code").outcome, StepOutcome::NoMatch);
    assert!(step(&s, "promotion_code").detail.contains("promo_ZZZ"));
}

// ---- step 4: customer history ------------------------------------------------

#[tokio::test]
async fn a_second_sale_of_the_same_customer_keeps_the_link_of_the_first() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "first-link").await;
    let b = app.add_link(&shop, "newer-click").await;
    let now = now_s();

    let first = sell(
        &app,
        &shop,
        "pi_hist_1",
        "cus_loyal",
        now - 10 * DAY,
        json!({"link_slug": "first-link"}),
    )
    .await;
    assert_eq!(first.method, Some(Method::LinkSlug));
    app.add_click_at(&b, now - 2 * DAY, false).await; // would win the window

    let second = sell(&app, &shop, "pi_hist_2", "cus_loyal", now - DAY, json!({})).await;
    let s = assert_decided(&app, &second, Method::CustomerHistory, "first-link").await;
    assert!(
        step(&s, "customer_history").detail.contains(&first.id),
        "{:?}",
        s.trace
    );

    // A different customer with no hints gets the window's click instead.
    let stranger = sell(&app, &shop, "pi_hist_3", "cus_new", now - DAY, json!({})).await;
    assert_decided(&app, &stranger, Method::ClickWindowPrimary, "newer-click").await;
}

#[tokio::test]
async fn customer_history_also_matches_by_email() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "first-link").await;
    let now = now_s();

    let mut first = payment_intent("pi_mail_1", "cus_old", json!({"link_slug": "first-link"}));
    first["receipt_email"] = json!("Jo@Example.com");
    send(
        &app,
        &shop,
        SECRET,
        "payment_intent.succeeded",
        now - 5 * DAY,
        first,
    )
    .await;

    let mut second = payment_intent("pi_mail_2", "cus_other", json!({}));
    second["receipt_email"] = json!("jo@example.com");
    send(&app, &shop, SECRET, "payment_intent.succeeded", now, second).await;
    let c = conversion(&app, "pi_mail_2").await;
    assert_decided(&app, &c, Method::CustomerHistory, "first-link").await;
}

// ---- steps 5–7: click windows ----------------------------------------------------

#[tokio::test]
async fn the_latest_human_click_of_the_client_within_60_days_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let other = app.add_client("Other", Some(OTHER_SECRET)).await;
    let older = app.add_link(&shop, "older").await;
    let latest = app.add_link(&shop, "latest").await;
    let botted = app.add_link(&shop, "botted").await;
    let theirs = app.add_link(&other, "theirs").await;
    let now = now_s();
    app.add_click_at(&older, now - 30 * DAY, false).await;
    let winner = app.add_click_at(&latest, now - 10 * DAY, false).await;
    app.add_click_at(&botted, now - DAY, true).await; // newer, but a bot
    app.add_click_at(&theirs, now - 3600, false).await; // newer, but another client's
    app.add_click_at(&older, now + 3600, false).await; // after the purchase

    let c = sell(&app, &shop, "pi_window", "cus_1", now, json!({})).await;
    assert_decided(&app, &c, Method::ClickWindowPrimary, "latest").await;
    assert_eq!(c.click_id.as_deref(), Some(winner.id.as_str()));
}

#[tokio::test]
async fn a_click_75_days_before_decides_by_the_fallback_window() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let now = now_s();
    app.add_click_at(&a, now - 75 * DAY, false).await;

    let c = sell(&app, &shop, "pi_fallback", "cus_1", now, json!({})).await;
    assert_decided(&app, &c, Method::ClickWindowFallback, "a").await;
}

#[tokio::test]
async fn a_click_200_days_before_decides_by_the_any_time_step() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let now = now_s();
    app.add_click_at(&a, now - 200 * DAY, false).await;

    let c = sell(&app, &shop, "pi_anytime", "cus_1", now, json!({})).await;
    assert_decided(&app, &c, Method::ClickAnyTime, "a").await;
}

#[tokio::test]
async fn with_the_any_time_step_off_a_click_200_days_before_leaves_an_orphan() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.tracker
        .update_settings(
            &shop.id,
            AttributionSettings {
                window_primary_days: 60,
                window_fallback_days: 90,
                any_time_fallback: false,
            },
        )
        .await
        .expect("settings");
    let a = app.add_link(&shop, "a").await;
    let now = now_s();
    app.add_click_at(&a, now - 200 * DAY, false).await;

    let c = sell(&app, &shop, "pi_anytime_off", "cus_1", now, json!({})).await;
    assert_eq!(c.link_slug, None, "{c:#?}");
    assert_eq!(c.method, None);
    let s = stored(&app, &c.id).await;
    assert_eq!(
        steps_of(&s),
        expected(&[
            ("click_id", "no_match"),
            ("link_slug", "no_match"),
            ("promotion_code", "no_match"),
            ("customer_history", "no_match"),
            ("click_window_primary", "no_match"),
            ("click_window_fallback", "no_match"),
            ("click_any_time", "skipped"),
            ("autofix", "no_match"),
        ]),
        "{:#?}",
        s.trace
    );
}

#[tokio::test]
async fn custom_windows_change_which_step_decides() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let now = now_s();
    app.add_click_at(&a, now - 10 * DAY, false).await;

    // Default windows: 10 days is inside the primary 60.
    let default = sell(&app, &shop, "pi_custom_0", "cus_0", now, json!({})).await;
    assert_decided(&app, &default, Method::ClickWindowPrimary, "a").await;

    app.tracker
        .update_settings(
            "Shop",
            AttributionSettings {
                window_primary_days: 7,
                window_fallback_days: 30,
                any_time_fallback: true,
            },
        )
        .await
        .expect("settings");
    let narrower = sell(&app, &shop, "pi_custom_1", "cus_1", now, json!({})).await;
    assert_decided(&app, &narrower, Method::ClickWindowFallback, "a").await;

    app.tracker
        .update_settings(
            "Shop",
            AttributionSettings {
                window_primary_days: 3,
                window_fallback_days: 5,
                any_time_fallback: true,
            },
        )
        .await
        .expect("settings");
    let narrowest = sell(&app, &shop, "pi_custom_2", "cus_2", now, json!({})).await;
    assert_decided(&app, &narrowest, Method::ClickAnyTime, "a").await;
}

// ---- layer 4: late clicks ----------------------------------------------------

#[tokio::test]
async fn a_click_10_minutes_after_the_purchase_fixes_the_orphan_at_once_by_autofix() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "late").await;
    let purchased = now_s() - 3600;
    let late = app.add_click_at(&a, purchased + 10 * 60, false).await;

    let c = sell(&app, &shop, "pi_late_10", "cus_1", purchased, json!({})).await;
    assert_eq!(c.method, Some(Method::Autofix), "{c:#?}");
    assert_eq!(c.link_slug.as_deref(), Some("late"));
    assert_eq!(c.click_id.as_deref(), Some(late.id.as_str()));
    let s = stored(&app, &c.id).await;
    let mut want: Vec<(&str, &str)> = STEPS.iter().map(|s| (*s, "no_match")).collect();
    want.push(("autofix", "matched"));
    assert_eq!(steps_of(&s), expected(&want), "{:#?}", s.trace);
}

#[tokio::test]
async fn a_click_20_minutes_after_the_purchase_does_not_fix_the_orphan() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "late").await;
    let purchased = now_s() - 3600;
    app.add_click_at(&a, purchased + 20 * 60, false).await;

    let c = sell(&app, &shop, "pi_late_20", "cus_1", purchased, json!({})).await;
    assert_eq!(c.method, None, "{c:#?}");
    assert_eq!(c.link_slug, None);
    let s = stored(&app, &c.id).await;
    let mut want: Vec<(&str, &str)> = STEPS.iter().map(|s| (*s, "no_match")).collect();
    want.push(("autofix", "no_match"));
    assert_eq!(steps_of(&s), expected(&want), "{:#?}", s.trace);
}

#[tokio::test]
async fn a_late_bot_click_does_not_fix_the_orphan() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "late").await;
    let purchased = now_s() - 3600;
    app.add_click_at(&a, purchased + 60, true).await;

    let c = sell(&app, &shop, "pi_late_bot", "cus_1", purchased, json!({})).await;
    assert_eq!(c.method, None);
    assert_eq!(c.link_slug, None);
}

// ---- stronger evidence, weaker evidence, manual choices --------------------------

#[tokio::test]
async fn a_later_event_with_stronger_evidence_moves_the_sale_and_records_it() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let clicked = app.add_link(&shop, "clicked").await;
    let named = app.add_link(&shop, "named").await;
    let now = now_s();
    app.add_click_at(&clicked, now - 2 * DAY, false).await;

    let first = sell(&app, &shop, "pi_stronger", "cus_1", now, json!({})).await;
    assert_decided(&app, &first, Method::ClickWindowPrimary, "clicked").await;

    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_stronger",
            "pi_stronger",
            "cus_1",
            json!({"metadata": {"link_slug": "named"}}),
        ),
    )
    .await;
    let all = app.conversions().await;
    assert_eq!(all.len(), 1, "still one sale: {all:#?}");
    let after = conversion(&app, "pi_stronger").await;
    assert_eq!(after.id, first.id, "the same conversion");
    assert_decided(&app, &after, Method::LinkSlug, "named").await;

    let history = app.tracker.store().list_history(&after.id).await.unwrap();
    let change = history
        .iter()
        .find(|h| h.to_method == Some(Method::LinkSlug))
        .unwrap_or_else(|| panic!("no history entry for the change: {history:#?}"));
    assert_eq!(change.from_link_id.as_deref(), Some(clicked.id.as_str()));
    assert_eq!(change.to_link_id.as_deref(), Some(named.id.as_str()));
    assert_eq!(change.from_method, Some(Method::ClickWindowPrimary));
    assert!(!change.actor.is_empty());
    assert!(!change.reason.is_empty());
}

#[tokio::test]
async fn a_later_event_with_weaker_evidence_never_replaces_a_stronger_method() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let named = app.add_link(&shop, "named").await;
    let promo = add_link_with_promo(&app, &shop, "promo", &["promo_WEAK"]).await;
    let now = now_s();

    let first = sell(
        &app,
        &shop,
        "pi_weaker",
        "cus_1",
        now,
        json!({"link_slug": "named"}),
    )
    .await;
    assert_decided(&app, &first, Method::LinkSlug, "named").await;
    let history_before = app.tracker.store().list_history(&first.id).await.unwrap();

    app.add_click_at(&promo, now - 60, false).await;
    // The checkout of the same payment carries a promotion code of another
    // link and a slug that names no link.
    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_weaker",
            "pi_weaker",
            "cus_1",
            json!({"metadata": {"link_slug": "no-such-link"}, "discounts": [{"promotion_code": "promo_WEAK"}]}),
        ),
    )
    .await;
    // And a refund, which recomputes the sale again.
    send(
        &app,
        &shop,
        SECRET,
        "charge.refunded",
        now + 60,
        json!({"id": "ch_weaker", "object": "charge", "amount": 4900, "amount_refunded": 900, "currency": "usd",
               "payment_intent": "pi_weaker", "refunded": false, "paid": true, "livemode": false}),
    )
    .await;

    let after = conversion(&app, "pi_weaker").await;
    assert_eq!(after.method, Some(Method::LinkSlug), "{after:#?}");
    assert_eq!(after.link_id.as_deref(), Some(named.id.as_str()));
    assert_eq!(after.net_amount, 4000, "the refund itself applied");
    let history_after = app.tracker.store().list_history(&first.id).await.unwrap();
    assert_eq!(
        history_after.len(),
        history_before.len(),
        "no change recorded: {history_after:#?}"
    );
}

#[tokio::test]
async fn an_equally_strong_later_click_does_not_move_an_attributed_sale() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "first").await;
    let b = app.add_link(&shop, "second").await;
    let now = now_s();
    app.add_click_at(&a, now - 5 * DAY, false).await;
    let first = sell(&app, &shop, "pi_same_rank", "cus_1", now, json!({})).await;
    assert_decided(&app, &first, Method::ClickWindowPrimary, "first").await;

    // A click recorded later, dated before the purchase, then a refund.
    app.add_click_at(&b, now - DAY, false).await;
    send(
        &app,
        &shop,
        SECRET,
        "charge.refunded",
        now + 60,
        json!({"id": "ch_same_rank", "object": "charge", "amount": 4900, "amount_refunded": 4900, "currency": "usd",
               "payment_intent": "pi_same_rank", "refunded": true, "paid": true, "livemode": false}),
    )
    .await;
    let after = conversion(&app, "pi_same_rank").await;
    assert_eq!(after.status, ConversionStatus::Refunded);
    assert_eq!(after.link_slug.as_deref(), Some("first"), "{after:#?}");
    assert_eq!(after.method, Some(Method::ClickWindowPrimary));
}

#[tokio::test]
async fn a_manual_choice_is_never_replaced_by_a_later_automatic_attribution() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let auto = app.add_link(&shop, "auto").await;
    let chosen = app.add_link(&shop, "chosen").await;
    let now = now_s();
    let click = app.add_click_at(&auto, now - DAY, false).await;

    let first = sell(&app, &shop, "pi_manual", "cus_1", now, json!({})).await;
    assert_decided(&app, &first, Method::ClickWindowPrimary, "auto").await;

    let manual = app
        .tracker
        .set_link_manually(&first.id, &chosen.id, "admin")
        .await
        .expect("set by hand");
    assert_eq!(manual.method, Some(Method::Manual));

    // The strongest automatic evidence there is: the click id, at checkout.
    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_manual",
            "pi_manual",
            "cus_1",
            json!({"client_reference_id": click.id}),
        ),
    )
    .await;
    let after = conversion(&app, "pi_manual").await;
    assert_eq!(after.method, Some(Method::Manual), "{after:#?}");
    assert_eq!(after.link_slug.as_deref(), Some("chosen"));

    // Auto-Fix and the sweep leave it alone too.
    app.tracker.autofix(None).await.expect("autofix");
    let after = conversion(&app, "pi_manual").await;
    assert_eq!(after.method, Some(Method::Manual));
    assert_eq!(after.link_slug.as_deref(), Some("chosen"));

    let history = app.tracker.store().list_history(&first.id).await.unwrap();
    let last = history.iter().max_by_key(|h| h.id).expect("history");
    assert_eq!(
        last.actor, "admin",
        "the manual entry is the last change: {history:#?}"
    );
    assert_eq!(last.to_method, Some(Method::Manual));
    assert_eq!(last.from_link_id.as_deref(), Some(auto.id.as_str()));
    assert_eq!(last.to_link_id.as_deref(), Some(chosen.id.as_str()));
}

#[tokio::test]
async fn a_manual_link_of_another_client_is_refused() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let other = app.add_client("Other", Some(OTHER_SECRET)).await;
    let theirs = app.add_link(&other, "theirs").await;
    let c = sell(&app, &shop, "pi_manual_x", "cus_1", now_s(), json!({})).await;
    assert!(app
        .tracker
        .set_link_manually(&c.id, &theirs.id, "admin")
        .await
        .is_err());
    let after = conversion(&app, "pi_manual_x").await;
    assert_eq!(after.link_slug, None);
    assert_eq!(after.method, None);
}

// ---- layer 3: always a conversion ------------------------------------------------

#[tokio::test]
async fn a_sale_with_no_link_at_all_still_makes_an_orphan_conversion() {
    let app = spawn_app!();
    let shop = shop(&app).await;

    let c = sell(&app, &shop, "pi_orphan", "cus_1", now_s(), json!({})).await;
    assert_eq!(c.client_id, shop.id);
    assert_eq!(c.link_slug, None);
    assert_eq!(c.link_id, None);
    assert_eq!(c.method, None);
    assert_eq!(c.amount, 4900);
    assert_eq!(c.net_amount, 4900);
    assert_eq!(c.currency, "usd");
    assert_eq!(c.status, ConversionStatus::Paid);
    assert!(c.verified);
    let s = stored(&app, &c.id).await;
    assert!(s.is_orphan());
    assert!(!s.trace.is_empty(), "an orphan explains itself");
    assert!(
        s.trace.iter().all(|t| t.outcome == StepOutcome::NoMatch),
        "{:#?}",
        s.trace
    );
    assert_eq!(
        s.trace
            .iter()
            .map(|t| t.step.as_str())
            .take(7)
            .collect::<Vec<_>>(),
        STEPS.to_vec()
    );
}

#[tokio::test]
async fn the_same_payment_described_by_three_events_is_one_conversion() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "s").await;
    let now = now_s();
    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_three",
            "pi_three",
            "cus_1",
            json!({"metadata": {"link_slug": "s"}}),
        ),
    )
    .await;
    send(
        &app,
        &shop,
        SECRET,
        "payment_intent.succeeded",
        now,
        payment_intent("pi_three", "cus_1", json!({})),
    )
    .await;
    send(
        &app,
        &shop,
        SECRET,
        "charge.succeeded",
        now,
        json!({"id": "ch_three", "object": "charge", "amount": 4900, "amount_captured": 4900, "currency": "usd",
               "payment_intent": "pi_three", "customer": "cus_1", "paid": true, "status": "succeeded",
               "metadata": {}, "livemode": false}),
    )
    .await;
    let all = app.conversions().await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].amount, 4900);
    assert_eq!(all[0].link_slug.as_deref(), Some("s"));
    assert_eq!(all[0].method, Some(Method::LinkSlug));
}

// ---- end to end: from the click to the sale ------------------------------------

#[tokio::test]
async fn a_stripe_payment_link_click_attributes_its_sale_by_click_id() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.tracker
        .add_link(LinkIn {
            client: shop.id.clone(),
            slug: "anna".into(),
            destination: "https://buy.stripe.com/test_anna".into(),
            label: None,
            promo_codes: vec![],
        })
        .await
        .unwrap();
    let other = app.add_link(&shop, "other").await;
    let resp = app
        .http
        .get(format!("{}/r/anna", app.base))
        .header(
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let reference = location
        .query_pairs()
        .find(|(k, _)| k == "client_reference_id")
        .map(|(_, v)| v.into_owned())
        .expect("client_reference_id on a payment link");
    // A newer click elsewhere must not matter.
    app.add_click_at(&other, now_s(), false).await;

    // Stripe's Payment Link passes it back on the session.
    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now_s() + 1,
        checkout(
            "cs_plink",
            "pi_plink",
            "cus_1",
            json!({"client_reference_id": reference}),
        ),
    )
    .await;
    let c = conversion(&app, "pi_plink").await;
    assert_decided(&app, &c, Method::ClickId, "anna").await;
    assert_eq!(c.click_id.as_deref(), Some(reference.as_str()));
}

#[tokio::test]
async fn a_beacon_click_id_passed_as_metadata_attributes_its_sale() {
    let app = spawn_app!();
    let shop = app
        .add_client_with(salestrack::domain::client::ClientIn {
            name: "Shop".into(),
            domain: Some("shop.com".into()),
            webhook_secret: Some(SECRET.into()),
            ..Default::default()
        })
        .await;
    app.add_link(&shop, "flexus1").await;
    let other = app.add_link(&shop, "other").await;
    let resp = app
        .http
        .post(format!("{}/api/v1/track/click", app.base))
        .header("origin", "https://shop.com")
        .header("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)")
        .json(&json!({"ref": "flexus1", "landing_url": "https://shop.com/?ref=flexus1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let click_id = resp.json::<Value>().await.unwrap()["click_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.add_click_at(&other, now_s(), false).await;

    let c = sell(
        &app,
        &shop,
        "pi_beacon",
        "cus_1",
        now_s() + 1,
        json!({"salestrack_click_id": click_id}),
    )
    .await;
    assert_decided(&app, &c, Method::ClickId, "flexus1").await;
}

#[tokio::test]
async fn a_subscription_checkout_with_a_click_id_attributes_its_first_invoice() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    let a = app.add_link(&shop, "a").await;
    let b = app.add_link(&shop, "b").await;
    let now = now_s();
    let named = app.add_click_at(&a, now - 5 * DAY, false).await;
    app.add_click_at(&b, now - DAY, false).await;

    // The invoice first (Stripe does not promise order): the window decides.
    send(
        &app,
        &shop,
        SECRET,
        "invoice.paid",
        now,
        json!({
            "id": "in_sub_1", "object": "invoice", "amount_due": 1900, "amount_paid": 1900, "currency": "usd",
            "billing_reason": "subscription_create", "customer": "cus_sub", "customer_email": "sub@example.com",
            "status": "paid", "created": now - 60, "status_transitions": {"paid_at": now}, "metadata": {},
            "lines": {"object": "list", "data": [], "has_more": false},
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1", "metadata": {}}},
            "livemode": false,
        }),
    )
    .await;
    let first = conversion(&app, "in_sub_1").await;
    assert_decided(&app, &first, Method::ClickWindowPrimary, "b").await;

    // Then the session that created the subscription, with the click id.
    send(
        &app,
        &shop,
        SECRET,
        "checkout.session.completed",
        now,
        checkout(
            "cs_sub_1",
            "pi_unused",
            "cus_sub",
            json!({"mode": "subscription", "payment_intent": null, "invoice": "in_sub_1",
                   "subscription": "sub_1", "amount_total": 1900, "client_reference_id": named.id}),
        ),
    )
    .await;
    let all = app.conversions().await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let after = conversion(&app, "in_sub_1").await;
    assert_decided(&app, &after, Method::ClickId, "a").await;
    assert_eq!(after.amount, 1900);
}

#[tokio::test]
async fn the_order_of_the_events_of_one_payment_does_not_change_its_attribution() {
    // The checkout session names a slug that is no link; its payment intent
    // names a real one. Whatever the order, the real link decides.
    for session_first in [true, false] {
        let app = spawn_app!();
        let shop = shop(&app).await;
        app.add_link(&shop, "real").await;
        let clicked = app.add_link(&shop, "clicked").await;
        let now = now_s();
        app.add_click_at(&clicked, now - DAY, false).await;
        let session = checkout(
            "cs_order",
            "pi_order",
            "cus_1",
            json!({"metadata": {"link_slug": "typo-link"}}),
        );
        let intent = payment_intent("pi_order", "cus_1", json!({"link_slug": "real"}));
        let events = if session_first {
            [
                ("checkout.session.completed", session),
                ("payment_intent.succeeded", intent),
            ]
        } else {
            [
                ("payment_intent.succeeded", intent),
                ("checkout.session.completed", session),
            ]
        };
        for (t, o) in events {
            send(&app, &shop, SECRET, t, now, o).await;
        }
        let c = conversion(&app, "pi_order").await;
        assert_eq!(
            (c.method, c.link_slug.as_deref()),
            (Some(Method::LinkSlug), Some("real")),
            "session first: {session_first}: {c:#?}"
        );
    }
}

#[tokio::test]
async fn a_forged_sale_never_lends_its_link_to_a_real_sale_of_the_same_customer() {
    let app = spawn_app!();
    let shop = shop(&app).await;
    app.add_link(&shop, "attacker").await;
    let now = now_s();

    // Signed with a secret the client does not have: stored, unverified.
    let body = event(
        &new_id("evt"),
        "payment_intent.succeeded",
        API,
        now - DAY,
        payment_intent(
            "pi_forged_hist",
            "cus_victim",
            json!({"link_slug": "attacker"}),
        ),
    );
    let resp = app.deliver(&shop, "whsec_forger_0000000000", body).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let forged = conversion(&app, "pi_forged_hist").await;
    assert!(!forged.verified);

    // The customer's real sale carries no hint at all.
    let real = sell(&app, &shop, "pi_real_hist", "cus_victim", now, json!({})).await;
    assert!(real.verified);
    assert_ne!(
        real.link_slug.as_deref(),
        Some("attacker"),
        "a forged sale steered a real one: {real:#?}"
    );
    assert_ne!(real.method, Some(Method::CustomerHistory));
}
